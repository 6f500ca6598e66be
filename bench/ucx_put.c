/*
 * bench/ucx_put.c - put bandwidth of aidos's transport (transport/ucx.c)
 * between two processes; driven by bench/ucx_put.sh, which runs the two
 * sides in separate network (and IPC) namespaces joined by a veth pair and
 * runs `ucx_perftest -t ucp_put_bw` on the same pair for comparison.
 *
 *   ucx_put server IP:PORT [--tls T] [--dev D] [--spin-us N] [--max BYTES]
 *   ucx_put client IP:PORT [--tls T] [--dev D] [--spin-us N] --sizes 4096,... [--bytes N]
 *           [--min-iters N] [--max-iters N] [--out FILE]
 *
 * The server registers one region of --max bytes and sends its worker
 * address, rkey and base over a TCP socket on IP:PORT (the veth address), then
 * keeps its worker progressing (UCX's software RMA over TCP needs the
 * target) until the client's zero-length "done" tag message. The client
 * times, per size, iters blocking xport_put calls (each returns once the data
 * is visible at the target: put + flush, one round trip per call; perftest
 * keeps many puts in flight instead) after a warm-up of iters/10, and checks
 * the region's FNV-1a after a last put. Output (stdout, and --out): one
 * "describe" line, one "lanes" line, then "size iters seconds" lines.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "transport/transport.h"

#define TAG_DONE 0xb0b0000000000001ull
#define TAG_SUM  0xb0b0000000000002ull

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int die(const char *what, int rc)
{
	fprintf(stderr, "ucx_put: %s: %d (%s)\n", what, rc, rc < 0 && rc > -4096 ? strerror(-rc) : "aidos error");
	exit(1);
}

static int xfer(int fd, void *p, size_t n, int wr)
{
	char *b = p;

	while (n) {
		ssize_t k = wr ? write(fd, b, n) : read(fd, b, n);
		if (k <= 0)
			return -1;
		b += k;
		n -= (size_t)k;
	}
	return 0;
}

static int parse_ep(const char *s, struct sockaddr_in *sa)
{
	char host[64];
	const char *c = strrchr(s, ':');

	if (!c || (size_t)(c - s) >= sizeof host)
		return -1;
	memcpy(host, s, (size_t)(c - s));
	host[c - s] = 0;
	memset(sa, 0, sizeof *sa);
	sa->sin_family = AF_INET;
	sa->sin_port = htons((uint16_t)atoi(c + 1));
	return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

static int server(const struct sockaddr_in *sa, const xport_opts *o, size_t max)
{
	unsigned char *buf = aligned_alloc(4096, max);
	const void *addr, *rk;
	size_t alen, rklen, len;
	xport_mem *m;
	xport *x;
	char err[256];
	int one = 1, ls, fd, rc;

	if (!buf)
		die("alloc", -ENOMEM);
	memset(buf, 0, max);
	if ((rc = xport_create(o, &x, err, sizeof err))) {
		fprintf(stderr, "ucx_put: %s\n", err);
		die("xport_create", rc);
	}
	if ((rc = xport_mem_register(x, buf, max, &m)))
		die("xport_mem_register", rc);
	xport_address(x, &addr, &alen);
	xport_mem_rkey(m, &rk, &rklen);
	ls = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (ls < 0 || bind(ls, (const struct sockaddr *)sa, sizeof *sa) || listen(ls, 1))
		die("listen", -errno);
	if ((fd = accept(ls, NULL, NULL)) < 0)
		die("accept", -errno);
	uint64_t hdr[3] = { alen, rklen, (uint64_t)(uintptr_t)buf };
	if (xfer(fd, hdr, sizeof hdr, 1) || xfer(fd, (void *)addr, alen, 1) ||
	    xfer(fd, (void *)rk, rklen, 1))
		die("send address", -EIO);
	/* progress until "done"; answer the client's checksum request */
	for (;;) {
		uint64_t want[2], got;
		rc = xport_tag_recv(x, 0xb0b0000000000000ull, ~0xffull, want, sizeof want, &len, &got, 1000);
		if (rc == -ETIMEDOUT)
			continue;
		if (rc)
			die("recv", rc);
		if (got == TAG_DONE)
			break;
		if (got == TAG_SUM && len == sizeof want) {
			/* want[0]: bytes to sum; reply over the socket */
			uint64_t h = xport_fnv1a(XPORT_FNV_INIT, buf, want[0] <= max ? want[0] : max);
			if (xfer(fd, &h, sizeof h, 1))
				die("send sum", -EIO);
		}
	}
	close(fd);
	close(ls);
	xport_mem_release(x, m);
	xport_destroy(x);
	free(buf);
	return 0;
}

static int client(const struct sockaddr_in *sa, const xport_opts *o, const char *sizes,
		  double bytes, long min_it, long max_it, const char *out)
{
	const char *name, *reason;
	unsigned char *addr, *rk, *buf;
	uint64_t hdr[3], base;
	size_t max = 0;
	xport_ep *ep;
	xport *x;
	char err[256];
	FILE *f = out ? fopen(out, "w") : NULL;
	int fd = -1, rc;
	size_t sz[64];
	int n = 0;

	for (const char *p = sizes; *p && n < 64; ) {
		sz[n] = strtoul(p, (char **)&p, 10);
		if (sz[n] > max)
			max = sz[n];
		n++;
		if (*p == ',')
			p++;
	}
	/* the server may still be starting: retry for 10 s */
	for (double t0 = now_s(); now_s() - t0 < 10; usleep(50000)) {
		fd = socket(AF_INET, SOCK_STREAM, 0);
		if (!connect(fd, (const struct sockaddr *)sa, sizeof *sa))
			break;
		close(fd);
		fd = -1;
	}
	if (fd < 0)
		die("connect to server", -ECONNREFUSED);
	if (xfer(fd, hdr, sizeof hdr, 0) || hdr[0] > 65536 || hdr[1] > 65536)
		die("read address", -EIO);
	addr = malloc(hdr[0]);
	rk = malloc(hdr[1]);
	base = hdr[2];
	if (!addr || !rk || xfer(fd, addr, hdr[0], 0) || xfer(fd, rk, hdr[1], 0))
		die("read address", -EIO);
	if ((rc = xport_create(o, &x, err, sizeof err))) {
		fprintf(stderr, "ucx_put: %s\n", err);
		die("xport_create", rc);
	}
	if ((rc = xport_connect(x, addr, hdr[0], &ep)))
		die("xport_connect", rc);
	buf = aligned_alloc(4096, max);
	if (!buf)
		die("alloc", -ENOMEM);
	for (size_t i = 0; i < max; i++)
		buf[i] = (unsigned char)(i * 131 + 7);
	/* one put first: wireup done, lanes final */
	if ((rc = xport_put(x, ep, buf, sz[0], base, rk, hdr[1], 10000)))
		die("xport_put", rc);
	xport_describe(x, &name, &reason);
	printf("describe\t%s\t%s\n", name, reason);
	printf("lanes\t%s\n", xport_ep_describe(ep));
	if (f) {
		fprintf(f, "describe\t%s\t%s\n", name, reason);
		fprintf(f, "lanes\t%s\n", xport_ep_describe(ep));
	}
	for (int i = 0; i < n; i++) {
		long it = (long)(bytes / (double)sz[i]);
		it = it < min_it ? min_it : it > max_it ? max_it : it;
		for (long k = 0; k < it / 10 + 1; k++)
			if ((rc = xport_put(x, ep, buf, sz[i], base, rk, hdr[1], 10000)))
				die("xport_put", rc);
		double t0 = now_s();
		for (long k = 0; k < it; k++)
			if ((rc = xport_put(x, ep, buf, sz[i], base, rk, hdr[1], 10000)))
				die("xport_put", rc);
		double dt = now_s() - t0;
		printf("%zu\t%ld\t%.6f\n", sz[i], it, dt);
		if (f)
			fprintf(f, "%zu\t%ld\t%.6f\n", sz[i], it, dt);
		fflush(stdout);
	}
	/* the data arrived: the target's checksum of the region equals ours */
	uint64_t want[2] = { max, 0 }, h;
	if ((rc = xport_put(x, ep, buf, max, base, rk, hdr[1], 10000)) ||
	    (rc = xport_tag_send(x, ep, TAG_SUM, want, sizeof want, 10000)))
		die("checksum request", rc);
	if (xfer(fd, &h, sizeof h, 0))
		die("read checksum", -EIO);
	if (h != xport_fnv1a(XPORT_FNV_INIT, buf, max)) {
		fprintf(stderr, "ucx_put: checksum mismatch at the target\n");
		exit(1);
	}
	printf("checksum\tok\n");
	if (f)
		fprintf(f, "checksum\tok\n");
	xport_tag_send(x, ep, TAG_DONE, NULL, 0, 10000);
	close(fd);
	xport_destroy(x);
	if (f)
		fclose(f);
	free(buf);
	free(addr);
	free(rk);
	return 0;
}

int main(int argc, char **argv)
{
	xport_opts o = { 0 };
	const char *sizes = "4096,16384,65536,262144,1048576,4194304", *out = NULL;
	double bytes = 256.0 * 1048576;
	long min_it = 200, max_it = 20000;
	size_t max = 4u << 20;
	struct sockaddr_in sa;

	if (argc < 3 || parse_ep(argv[2], &sa)) {
		fprintf(stderr, "usage: ucx_put server|client IP:PORT [--tls T] [--dev D] [--spin-us N] [--max B] "
				"[--sizes S,..] [--bytes N] [--min-iters N] [--max-iters N] [--out F]\n");
		return 2;
	}
	for (int i = 3; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--tls")) o.tls = argv[i + 1];
		else if (!strcmp(argv[i], "--dev")) o.net_devices = argv[i + 1];
		else if (!strcmp(argv[i], "--spin-us")) o.spin_us = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--max")) max = strtoul(argv[i + 1], NULL, 10);
		else if (!strcmp(argv[i], "--sizes")) sizes = argv[i + 1];
		else if (!strcmp(argv[i], "--bytes")) bytes = atof(argv[i + 1]);
		else if (!strcmp(argv[i], "--min-iters")) min_it = atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--max-iters")) max_it = atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--out")) out = argv[i + 1];
		else { fprintf(stderr, "ucx_put: unknown option %s\n", argv[i]); return 2; }
	}
	if (!strcmp(argv[1], "server"))
		return server(&sa, &o, max);
	if (!strcmp(argv[1], "client"))
		return client(&sa, &o, sizes, bytes, min_it, max_it, out);
	fprintf(stderr, "ucx_put: server or client?\n");
	return 2;
}
