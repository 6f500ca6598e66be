/*
 * bench/verbs_put.c - latency and bandwidth of aidos's one-sided transport
 * calls (xport_put / xport_get) between two processes, on any backend
 * (transport/verbs.c by default, or UCX), measured the way perftest measures
 * so that the numbers sit next to ib_write_lat / ib_write_bw on the same link
 * (tools/test-rxe.sh runs both inside its Soft-RoCE VM).
 *
 *   verbs_put server IP:PORT [--backend verbs|ucx|tcp] [--max BYTES]
 *   verbs_put client IP:PORT [--backend B] [--lat-sizes 2,64,4096]
 *             [--bw-sizes 65536,1048576] [--lat-iters N] [--bw-bytes N] [--spin-us N]
 *             [--ops all|put] [--bw-window W]
 *
 * --ops put measures only what perftest's ib_write_lat / ib_write_bw do
 * (put_lat ping-pong and put_bw), for tools/rxe/inside.sh's interleaved
 * rounds; an empty --lat-sizes or --bw-sizes ("") skips that part.
 *
 * Completions are busy-polled (xport_opts.spin_us = -1) unless --spin-us N
 * (0: the transport's default, 50 us, then sleep), as perftest busy-polls.
 *
 * The RDMA device, port, GID and IP of each side come from AIDOS_RDMA_* (see
 * transport/transport.h). Both sides register one region of --max bytes and
 * swap transport address, rkey and base over a TCP socket on IP:PORT; the
 * server connects back to the client.
 *
 * put_lat: ping-pong as ib_write_lat does it: the client puts `size` bytes
 *   whose last byte is the iteration number into the server's region and
 *   spins on its own region's last byte; the server spins on its region,
 *   then puts the same bytes back. Reported: round trip / 2.
 *   (verbs only: with UCX a put towards a peer that spins on memory without
 *   calling UCX does not complete.)
 * put_rtt / get_lat: one blocking xport_put / xport_get of `size` bytes: a
 *   full round trip (data + acknowledgement / request + data), as
 *   ib_read_lat reports reads.
 * put_bw / get_bw: back-to-back blocking calls of `size` bytes for about
 *   --bw-bytes in total, after a warm-up; MB/s = 1e6 bytes per second.
 *   With --bw-window W (W > 1), put_bw is ib_write_bw's loop instead: W
 *   puts of `size` bytes posted (xport_put_post: one RDMA WRITE each, as
 *   perftest posts them), then each completion waited for is replaced by
 *   the next post until --bw-bytes / size puts are done; no warm-up; time
 *   from the first post to the last completion (perftest's tposted[0] to
 *   tcompleted[n-1]). W is perftest's tx depth: give ib_write_bw -t W and
 *   -n the same count for a like-for-like pair (tools/rxe/inside.sh).
 *   A checksum of the server's region after the last put proves the bytes
 *   arrived.
 * Timing is perftest's: the CPU's time-stamp counter (rdtsc), converted
 * with the first "cpu MHz" of /proc/cpuinfo (calibrated against
 * CLOCK_MONOTONIC where there is none, or off x86), no clock system call
 * inside a measured loop (under a VM whose clocksource the vDSO cannot
 * read, clock_gettime is one). put_lat's per-iteration times are the
 * differences of consecutive stamps taken before each put, as perftest's
 * tposted[]; stderr says which clock was used.
 * Output, stdout: one JSON object per line:
 *   {"backend":"verbs","transport":"verbs:rc/rxe0","op":"put_lat","size":2,
 *    "iters":1000,"us":23.1} and {"op":"put_bw",...,"MBps":41.2}.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

#include "transport/transport.h"

enum { CMD_PINGPONG = 1, CMD_SUM = 2, CMD_DONE = 3 };

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double tsc_hz;   /* ticks of ticks() per second */

/* perftest's get_cycles(): the TSC on x86, else the monotonic clock (ns). */
static inline uint64_t ticks(void)
{
#if defined(__x86_64__) || defined(__i386__)
	return __rdtsc();
#else
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
#endif
}

/* Seconds of ticks, a run's measurements read nothing else. */
static inline double tsec(uint64_t t) { return (double)t / tsc_hz; }

/* As perftest: the first "cpu MHz" of /proc/cpuinfo; else 100 ms of
 * CLOCK_MONOTONIC. Says which on stderr. */
static void clock_setup(void)
{
#if defined(__x86_64__) || defined(__i386__)
	FILE *f = fopen("/proc/cpuinfo", "r");
	char line[256];
	double mhz = 0;
	while (f && !mhz && fgets(line, sizeof line, f))
		if (!strncmp(line, "cpu MHz", 7) && strchr(line, ':'))
			mhz = atof(strchr(line, ':') + 1);
	if (f)
		fclose(f);
	if (mhz > 0) {
		tsc_hz = mhz * 1e6;
		fprintf(stderr, "verbs_put: timing with the TSC at %.3f MHz (/proc/cpuinfo, as perftest)\n", mhz);
		return;
	}
	double t0 = now_s();
	uint64_t c0 = ticks();
	while (now_s() - t0 < 0.1)
		;
	tsc_hz = (double)(ticks() - c0) / (now_s() - t0);
	fprintf(stderr, "verbs_put: timing with the TSC, calibrated at %.3f MHz\n", tsc_hz / 1e6);
#else
	tsc_hz = 1e9;
	fprintf(stderr, "verbs_put: timing with CLOCK_MONOTONIC\n");
#endif
}

static void die(const char *what, int rc)
{
	fprintf(stderr, "verbs_put: %s: %d (%s)\n", what, rc, aidos_strerror(rc));
	exit(1);
}

static int xfer(int fd, void *p, size_t n, int wr)
{
	char *b = p;

	while (n) {
		ssize_t k = wr ? write(fd, b, n) : read(fd, b, n);
		if (k < 0 && errno == EINTR)
			continue;
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

struct side {
	xport *x;
	xport_mem *m;
	unsigned char *buf;
	size_t max;
	/* the peer's */
	unsigned char addr[512], rk[512];
	uint64_t alen, rklen, base;
	xport_ep *ep;
};

static int put_only;      /* --ops put: put_lat and put_bw only */
static long bw_window = 1; /* --bw-window: posted puts in flight for put_bw (1: blocking calls) */
static int spin_us = -1;   /* busy-poll completions, as perftest does (--spin-us) */

static void side_open(struct side *s, const char *backend, size_t max)
{
	xport_opts o = { .spin_us = spin_us };
	char err[512];
	int rc;

	s->max = max;
	if (!(s->buf = aligned_alloc(4096, max)))
		die("alloc", AIDOS_E_NOMEM);
	memset(s->buf, 0, max);
	if ((rc = xport_open(backend, &o, &s->x, err, sizeof err))) {
		fprintf(stderr, "verbs_put: %s\n", err);
		die("xport_open", rc);
	}
	if ((rc = xport_mem_register(s->x, s->buf, max, &s->m)))
		die("xport_mem_register", rc);
}

/* Sends our address, rkey and base; reads the peer's. */
static void swap(struct side *s, int fd)
{
	const void *addr, *rk;
	size_t alen, rklen;

	xport_address(s->x, &addr, &alen);
	xport_mem_rkey(s->m, &rk, &rklen);
	uint64_t hdr[3] = { alen, rklen, (uint64_t)(uintptr_t)s->buf };
	if (xfer(fd, hdr, sizeof hdr, 1) || xfer(fd, (void *)addr, alen, 1) || xfer(fd, (void *)rk, rklen, 1))
		die("send address", -EIO);
	if (xfer(fd, hdr, sizeof hdr, 0) || hdr[0] > sizeof s->addr || hdr[1] > sizeof s->rk)
		die("read address", -EIO);
	s->alen = hdr[0], s->rklen = hdr[1], s->base = hdr[2];
	if (xfer(fd, s->addr, s->alen, 0) || xfer(fd, s->rk, s->rklen, 0))
		die("read address", -EIO);
}

/* Spins until the last byte of [off, off + size) of our region is v. With UCX the
 * spinner must also drive its worker (software RMA over TCP, and UCX's
 * rc transports move data only inside UCX calls); raw verbs needs nothing. */
static void spin_for(const struct side *s, size_t off, size_t size, unsigned char v)
{
	const volatile unsigned char *p = s->buf + off + size - 1;
	int pump = strcmp(xport_backend(s->x), "verbs") != 0;
	uint64_t junk;

	while (*p != v)
		if (pump)
			xport_tag_recv(s->x, 0, ~0ull, &junk, sizeof junk, NULL, NULL, 0);
}

static int server(const struct sockaddr_in *sa, const char *backend, size_t max)
{
	struct side s = { 0 };
	int one = 1, ls, fd, rc;

	side_open(&s, backend, max);
	ls = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (ls < 0 || bind(ls, (const struct sockaddr *)sa, sizeof *sa) || listen(ls, 1))
		die("listen", -errno);
	if ((fd = accept(ls, NULL, NULL)) < 0)
		die("accept", -errno);
	swap(&s, fd);
	if ((rc = xport_connect(s.x, s.addr, s.alen, &s.ep)))
		die("xport_connect (back to the client)", rc);
	int pump = strcmp(xport_backend(s.x), "verbs") != 0;
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		uint64_t cmd[4];
		/* between commands keep UCX progressing (its software RMA over TCP
		 * needs the target); verbs needs nothing: block on the socket, as
		 * perftest's server does, and leave the CPUs to the link */
		if (pump && poll(&p, 1, 0) == 0) {
			xport_tag_recv(s.x, 0, ~0ull, cmd, sizeof cmd, NULL, NULL, 1);
			continue;
		}
		if (xfer(fd, cmd, sizeof cmd, 0))
			die("read command", -EIO);
		if (getenv("VP_DEBUG"))
			fprintf(stderr, "server: command %llu %llu %llu\n", (unsigned long long)cmd[0],
				(unsigned long long)cmd[1], (unsigned long long)cmd[2]);
		if (cmd[0] == CMD_DONE)
			break;
		if (cmd[0] == CMD_SUM) {
			uint64_t h = xport_fnv1a(XPORT_FNV_INIT, s.buf, cmd[1] <= max ? cmd[1] : max);
			if (xfer(fd, &h, sizeof h, 1))
				die("send sum", -EIO);
			continue;
		}
		if (cmd[0] == CMD_PINGPONG) {
			size_t size = cmd[1];
			for (uint64_t i = 0; i < cmd[2]; i++) {
				spin_for(&s, 0, size, (unsigned char)(i + 1));
				/* back into the client's receive half (cmd[3]) */
				if ((rc = xport_put(s.x, s.ep, s.buf, size, s.base + cmd[3], s.rk, s.rklen, 10000)))
					die("xport_put (pong)", rc);
			}
			uint64_t ok = 1;
			if (xfer(fd, &ok, sizeof ok, 1))
				die("ack", -EIO);
		}
	}
	close(fd);
	close(ls);
	xport_disconnect(s.x, s.ep);
	xport_mem_release(s.x, s.m);
	xport_destroy(s.x);
	free(s.buf);
	return 0;
}

static int rma(struct side *s, int write, size_t size)
{
	return write ? xport_put(s->x, s->ep, s->buf, size, s->base, s->rk, s->rklen, 30000)
		     : xport_get(s->x, s->ep, s->buf, size, s->base, s->rk, s->rklen, 30000);
}

static int parse_sizes(const char *p, size_t *sz, int cap)
{
	int n = 0;

	while (*p && n < cap) {
		char *e;
		sz[n] = strtoul(p, &e, 10);
		if (e == p)
			break;   /* not a number: stop (no endless loop on junk) */
		n++;
		p = e;
		if (*p == ',')
			p++;
	}
	return n;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Latency line: "us" the median of the per-iteration times (perftest's
 * t_typical), "us_avg" the mean, "us_min" the fastest (t_min); t[] in
 * seconds, sorted here. */
static void emit_lat(const char *backend, const char *tname, const char *op, size_t size, double *t, long n,
		     double scale)
{
	double sum = 0;

	for (long i = 0; i < n; i++)
		sum += t[i];
	qsort(t, (size_t)n, sizeof *t, cmp_d);
	printf("{\"backend\":\"%s\",\"transport\":\"%s\",\"op\":\"%s\",\"size\":%zu,\"iters\":%ld,\"us\":%.2f,"
	       "\"us_avg\":%.2f,\"us_min\":%.2f}\n", backend, tname, op, size, n, t[n / 2] * scale * 1e6,
	       sum / (double)n * scale * 1e6, t[0] * scale * 1e6);
	fflush(stdout);
}

static void emit(const char *backend, const char *tname, const char *op, size_t size, long iters, long window,
		 double secs)
{
	printf("{\"backend\":\"%s\",\"transport\":\"%s\",\"op\":\"%s\",\"size\":%zu,\"iters\":%ld,\"window\":%ld,"
	       "\"MBps\":%.2f}\n", backend, tname, op, size, iters, window, (double)size * (double)iters / secs / 1e6);
	fflush(stdout);
}

/* ib_write_bw's loop: `it` puts of size bytes from the start of our region,
 * win of them posted at a time; returns seconds from the first post to the
 * last completion. */
static double put_window(struct side *s, size_t size, long it, long win)
{
	xport_op *ops = calloc((size_t)win, sizeof *ops);
	int rc;

	if (!ops)
		die("alloc", AIDOS_E_NOMEM);
	uint64_t t0 = ticks();
	for (long k = 0; k < it + win; k++) {
		xport_op *o = &ops[k % win];
		if (k >= win && (rc = xport_op_wait(s->x, o, 30000)))
			die("xport_op_wait", rc);
		if (k < it && (rc = xport_put_post(s->x, s->ep, s->buf, size, s->base, s->rk, s->rklen, 30000, o)))
			die("xport_put_post", rc);
	}
	double t = tsec(ticks() - t0);
	free(ops);
	return t;
}

static int client(const struct sockaddr_in *sa, const char *backend, const char *lat_sizes, const char *bw_sizes,
		  long lat_iters, double bw_bytes)
{
	struct side s = { 0 };
	size_t lat[32], bw[32], max = 0;
	int nl = parse_sizes(lat_sizes, lat, 32), nb = parse_sizes(bw_sizes, bw, 32), fd = -1, rc;
	const char *tname, *why;

	for (int i = 0; i < nl; i++)
		max = 2 * lat[i] > max ? 2 * lat[i] : max;   /* ping-pong: send low half, receive high half */
	for (int i = 0; i < nb; i++)
		max = bw[i] > max ? bw[i] : max;
	for (double t0 = now_s(); now_s() - t0 < 20; usleep(50000)) {
		fd = socket(AF_INET, SOCK_STREAM, 0);
		if (!connect(fd, (const struct sockaddr *)sa, sizeof *sa))
			break;
		close(fd);
		fd = -1;
	}
	if (fd < 0)
		die("connect to server", -ECONNREFUSED);
	double *lt = malloc((size_t)lat_iters * sizeof *lt);
	if (!lt)
		die("alloc", AIDOS_E_NOMEM);
	side_open(&s, backend, max);
	swap(&s, fd);
	if ((rc = xport_connect(s.x, s.addr, s.alen, &s.ep)))
		die("xport_connect", rc);
	if (s.max > 0 && (rc = xport_put(s.x, s.ep, s.buf, 1, s.base, s.rk, s.rklen, 10000)))
		die("xport_put (first)", rc);
	xport_describe(s.x, &tname, &why);
	fprintf(stderr, "verbs_put: %s: %s\n", tname, why);

	/* ping-pong only where the target needs no progress calls: with UCX a
	 * put to a peer that spins on memory does not complete (software RMA
	 * over TCP; measured: -ETIMEDOUT), so UCX gets put_rtt only */
	for (int i = 0; i < nl && !strcmp(xport_backend(s.x), "verbs"); i++) {
		size_t size = lat[i] ? lat[i] : 1;
		/* we send from [0, size) and receive the pong into the upper half */
		size_t rx = s.max / 2;
		uint64_t cmd[4] = { CMD_PINGPONG, size, (uint64_t)lat_iters, rx }, ack;
		if (size > rx)
			die("latency size larger than half the region", AIDOS_E_RANGE);
		if (xfer(fd, cmd, sizeof cmd, 1))
			die("send command", -EIO);
		memset(s.buf, 0, size);
		memset(s.buf + rx, 0, size);
		uint64_t prev = ticks();
		for (long k = 0; k < lat_iters; k++) {
			s.buf[size - 1] = (unsigned char)(k + 1);
			if ((rc = xport_put(s.x, s.ep, s.buf, size, s.base, s.rk, s.rklen, 10000)))
				die("xport_put (ping)", rc);
			spin_for(&s, rx, size, (unsigned char)(k + 1));
			uint64_t t = ticks();   /* = the stamp before the next put */
			lt[k] = tsec(t - prev);
			prev = t;
		}
		if (xfer(fd, &ack, sizeof ack, 0))
			die("read ack", -EIO);
		emit_lat(backend, tname, "put_lat", size, lt, lat_iters, 0.5);
	}
	for (int w = 1; w >= 0 && !put_only; w--)
	for (int i = 0; i < nl; i++) {
		size_t size = lat[i] ? lat[i] : 1;
		long it = lat_iters;
		for (long k = 0; k < it / 10 + 1; k++)
			if ((rc = rma(&s, w, size)))
				die(w ? "xport_put" : "xport_get", rc);
		for (long k = 0; k < it; k++) {
			uint64_t t0 = ticks();
			if ((rc = rma(&s, w, size)))
				die(w ? "xport_put" : "xport_get", rc);
			lt[k] = tsec(ticks() - t0);
		}
		emit_lat(backend, tname, w ? "put_rtt" : "get_lat", size, lt, it, 1.0);
	}
	for (int w = 1; w >= (put_only ? 1 : 0); w--)
		for (int i = 0; i < nb; i++) {
			long it = (long)(bw_bytes / (double)bw[i]);
			it = it < 5 ? 5 : it > 100000 ? 100000 : it;
			for (size_t j = 0; j < bw[i]; j++)
				s.buf[j] = (unsigned char)(j * 131 + 7);
			if (w && bw_window > 1) {
				long win = bw_window < it ? bw_window : it;
				emit(backend, tname, "put_bw", bw[i], it, win, put_window(&s, bw[i], it, win));
				continue;
			}
			for (long k = 0; k < it / 10 + 1; k++)
				if ((rc = rma(&s, w, bw[i])))
					die(w ? "xport_put" : "xport_get", rc);
			uint64_t t0 = ticks();
			for (long k = 0; k < it; k++)
				if ((rc = rma(&s, w, bw[i])))
					die(w ? "xport_put" : "xport_get", rc);
			emit(backend, tname, w ? "put_bw" : "get_bw", bw[i], it, 1, tsec(ticks() - t0));
		}
	/* the bytes arrived: the server's checksum of its region equals ours */
	for (size_t j = 0; j < max; j++)
		s.buf[j] = (unsigned char)(j * 37 + 1);
	uint64_t cmd[4] = { CMD_SUM, max, 0, 0 }, h;
	if ((rc = xport_put(s.x, s.ep, s.buf, max, s.base, s.rk, s.rklen, 30000)))
		die("xport_put (checksum)", rc);
	if (xfer(fd, cmd, sizeof cmd, 1) || xfer(fd, &h, sizeof h, 0))
		die("checksum exchange", -EIO);
	if (h != xport_fnv1a(XPORT_FNV_INIT, s.buf, max)) {
		fprintf(stderr, "verbs_put: checksum mismatch at the server\n");
		return 1;
	}
	printf("{\"backend\":\"%s\",\"transport\":\"%s\",\"op\":\"checksum\",\"size\":%zu,\"ok\":true}\n", backend,
	       tname, max);
	cmd[0] = CMD_DONE;
	xfer(fd, cmd, sizeof cmd, 1);
	close(fd);
	xport_disconnect(s.x, s.ep);
	xport_mem_release(s.x, s.m);
	xport_destroy(s.x);
	free(s.buf);
	free(lt);
	return 0;
}

int main(int argc, char **argv)
{
	struct sockaddr_in sa;
	const char *backend = "verbs", *lat = "2,64,4096", *bw = "65536,1048576";
	size_t max = 4u << 20;
	long lat_iters = 1000;
	double bw_bytes = 64e6;

	if (argc < 3 || parse_ep(argv[2], &sa)) {
		fprintf(stderr, "usage: verbs_put server|client IP:PORT [--backend verbs|ucx|tcp] [--max BYTES]\n"
				"       [--lat-sizes L] [--bw-sizes L] [--lat-iters N] [--bw-bytes N] [--spin-us N]\n"
				"       [--ops all|put] [--bw-window W]\n");
		return 2;
	}
	for (int i = 3; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--backend"))
			backend = argv[i + 1];
		else if (!strcmp(argv[i], "--max"))
			max = strtoull(argv[i + 1], NULL, 10);
		else if (!strcmp(argv[i], "--lat-sizes"))
			lat = argv[i + 1];
		else if (!strcmp(argv[i], "--bw-sizes"))
			bw = argv[i + 1];
		else if (!strcmp(argv[i], "--lat-iters"))
			lat_iters = atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--bw-bytes"))
			bw_bytes = atof(argv[i + 1]);
		else if (!strcmp(argv[i], "--spin-us"))
			spin_us = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--bw-window"))
			bw_window = atol(argv[i + 1]) < 1 ? 1 : atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--ops"))
			put_only = !strcmp(argv[i + 1], "put");
		else {
			fprintf(stderr, "verbs_put: unknown option %s\n", argv[i]);
			return 2;
		}
	}
	if (!strcmp(argv[1], "server"))
		return server(&sa, backend, max);
	if (!strcmp(argv[1], "client")) {
		clock_setup();
		return client(&sa, backend, lat, bw, lat_iters < 1 ? 1 : lat_iters, bw_bytes);
	}
	fprintf(stderr, "verbs_put: server or client, not %s\n", argv[1]);
	return 2;
}
