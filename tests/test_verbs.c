/*
 * tests/test_verbs.c - transport/verbs.c: raw verbs between two xports in one
 * process (AIDOS_TEST_VERBS_DEV, default the first active device, and
 * AIDOS_TEST_VERBS_PEER_DEV, default the same), and the choice of backend.
 *
 * Where no RDMA device exists (this build machine), the verbs tests skip and
 * say so, and the fallback's logic runs instead: --transport verbs fails with
 * a clear error, auto picks UCX and says why. tools/test-rxe.sh runs this
 * binary inside its Soft-RoCE VM between rxe0 and rxe1, where everything runs:
 * tag messages (inline, one chunk, reassembled 3 MiB), RDMA WRITE/READ
 * (registered, staged and inline small puts), and the error paths: a corrupted or
 * foreign rkey (refused before the wire), a wrong rkey value (remote access
 * error from the peer's HCA), an access beyond the region (MR too small),
 * a peer process killed mid-transfer; after each the transport still works.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "transport/transport.h"

static char have_dev[256];
static int have_rdma;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int open_on(const char *dev, xport **x)
{
	xport_opts o = { .rdma_dev = dev };
	char err[512];
	int rc = xport_open("verbs", &o, x, err, sizeof err);

	if (rc)
		print_error("xport_open(verbs, %s): %d %s\n", dev ? dev : "auto", rc, err);
	return rc;
}

static const char *dev_a(void) { return getenv("AIDOS_TEST_VERBS_DEV"); }
static const char *dev_b(void)
{
	return getenv("AIDOS_TEST_VERBS_PEER_DEV") ? getenv("AIDOS_TEST_VERBS_PEER_DEV") : dev_a();
}

#define NEED_RDMA()                                                                                           \
	do {                                                                                                  \
		if (!have_rdma) {                                                                             \
			printf("    skip: no RDMA device with an active port (%s); tools/test-rxe.sh runs this "  \
			       "in a Soft-RoCE VM\n", have_dev);                                              \
			skip();                                                                               \
		}                                                                                             \
	} while (0)

struct pair {
	xport *a, *b;
	xport_ep *ab;   /* a -> b */
};

static void pair_open(struct pair *p)
{
	const void *addr;
	size_t alen;

	assert_int_equal(open_on(dev_a(), &p->a), 0);
	assert_int_equal(open_on(dev_b(), &p->b), 0);
	xport_address(p->b, &addr, &alen);
	assert_int_equal(xport_connect(p->a, addr, alen, &p->ab), 0);
}

static void pair_close(struct pair *p)
{
	xport_disconnect(p->a, p->ab);
	xport_destroy(p->a);
	xport_destroy(p->b);
}

/* ---- no device: the fallback says so (runs where there is no RDMA) ---- */

static void test_no_device(void **state)
{
	xport *x = NULL;
	char err[512] = "", why[512] = "";
	const char *name, *reason;

	if (have_rdma) {
		printf("    skip: an RDMA device exists (%s): the no-device path is not reachable\n", have_dev);
		skip();
	}
	assert_int_equal(xport_open("verbs", NULL, &x, err, sizeof err), AIDOS_E_UNSUPPORTED);
	assert_null(x);
	assert_non_null(strstr(err, "no RDMA device"));
	printf("    measured: --transport verbs without a device: %s\n", err);
	assert_int_equal(xport_open_auto("auto", NULL, &x, why, sizeof why, err, sizeof err), 0);
	assert_string_equal(xport_backend(x), "ucx");
	assert_non_null(strstr(why, "verbs not used"));
	xport_describe(x, &name, &reason);
	printf("    measured: auto picked %s: %s\n", name, why);
	xport_destroy(x);
	assert_int_equal(xport_open_auto("verbs", NULL, &x, why, sizeof why, err, sizeof err), AIDOS_E_UNSUPPORTED);
	assert_int_equal(xport_open("nonsense", NULL, &x, err, sizeof err), AIDOS_E_INVALID);
}

static void test_auto_prefers_verbs(void **state)
{
	xport *x = NULL;
	char err[512] = "", why[512] = "";
	const char *name, *reason;

	NEED_RDMA();
	assert_int_equal(xport_open_auto("auto", NULL, &x, why, sizeof why, err, sizeof err), 0);
	assert_string_equal(xport_backend(x), "verbs");
	xport_describe(x, &name, &reason);
	assert_non_null(strstr(name, "verbs:rc/"));
	assert_non_null(strstr(reason, "GID index"));
	assert_non_null(strstr(reason, "MTU"));
	printf("    measured: %s: %s: %s\n", why, name, reason);
	xport_destroy(x);
}

/* ---- data ---- */

static void test_tag_small(void **state)
{
	struct pair p = { 0 };
	char buf[64];
	size_t len;
	uint64_t tag;

	NEED_RDMA();
	pair_open(&p);
	for (int i = 0; i < 100; i++) {
		char msg[32];
		int n = snprintf(msg, sizeof msg, "hello %d", i);
		assert_int_equal(xport_tag_send(p.a, p.ab, 0x1000 + i, msg, (size_t)n, 5000), 0);
		assert_int_equal(xport_tag_recv(p.b, 0x1000 + i, ~0ull, buf, sizeof buf, &len, &tag, 5000), 0);
		assert_int_equal(len, n);
		assert_memory_equal(buf, msg, len);
		assert_int_equal(tag, 0x1000 + i);
	}
	/* empty message, and one larger than the receiver's buffer */
	assert_int_equal(xport_tag_send(p.a, p.ab, 7, NULL, 0, 5000), 0);
	assert_int_equal(xport_tag_recv(p.b, 7, ~0ull, buf, sizeof buf, &len, NULL, 5000), 0);
	assert_int_equal(len, 0);
	char big[200];
	memset(big, 'x', sizeof big);
	assert_int_equal(xport_tag_send(p.a, p.ab, 8, big, sizeof big, 5000), 0);
	assert_int_equal(xport_tag_recv(p.b, 8, ~0ull, buf, sizeof buf, &len, NULL, 5000), AIDOS_E_RANGE);
	assert_int_equal(len, sizeof big);
	/* nothing there: times out, closes nothing */
	assert_int_equal(xport_tag_recv(p.b, 9, ~0ull, buf, sizeof buf, &len, NULL, 50), -ETIMEDOUT);
	assert_int_equal(xport_ep_status(p.ab), 0);
	printf("    measured: lanes %s\n", xport_ep_describe(p.ab));
	pair_close(&p);
}

struct rx { xport *x; unsigned char *buf; size_t cap, len; int rc; };

static void *rx_main(void *arg)
{
	struct rx *r = arg;

	r->rc = xport_tag_recv(r->x, 42, ~0ull, r->buf, r->cap, &r->len, NULL, 30000);
	return NULL;
}

static void test_tag_large(void **state)
{
	struct pair p = { 0 };
	size_t n = (3u << 20) + 12345;
	unsigned char *src, *dst;
	struct rx r = { .cap = n };
	pthread_t th;

	NEED_RDMA();
	src = malloc(n);
	dst = malloc(n);
	r.buf = dst;
	assert_non_null(src);
	assert_non_null(dst);
	for (size_t i = 0; i < n; i++)
		src[i] = (unsigned char)(i * 7 + 3);
	pair_open(&p);
	r.x = p.b;
	/* more chunks than receive buffers: the receiver must run meanwhile */
	pthread_create(&th, NULL, rx_main, &r);
	double t0 = now_s();
	assert_int_equal(xport_tag_send(p.a, p.ab, 42, src, n, 30000), 0);
	pthread_join(th, NULL);
	double dt = now_s() - t0;
	assert_int_equal(r.rc, 0);
	assert_int_equal(r.len, n);
	assert_memory_equal(dst, src, n);
	printf("    measured: %zu-byte tag message in %.1f ms (%.1f MB/s)\n", n, dt * 1e3, (double)n / dt / 1e6);
	pair_close(&p);
	free(src);
	free(dst);
}

static void test_put_get(void **state)
{
	struct pair p = { 0 };
	size_t n = 6u << 20;   /* > the 4 MiB staging buffer */
	unsigned char *region, *loc, *back;
	xport_mem *m, *lm;
	const void *rk;
	size_t rkl;

	NEED_RDMA();
	region = aligned_alloc(4096, n);
	loc = aligned_alloc(4096, n);
	back = malloc(n);
	assert_non_null(region);
	assert_non_null(loc);
	assert_non_null(back);
	memset(region, 0, n);
	for (size_t i = 0; i < n; i++)
		loc[i] = (unsigned char)(i * 13 + 1);
	pair_open(&p);
	assert_int_equal(xport_mem_register(p.b, region, n, &m), 0);
	assert_int_equal(xport_mem_rkey(m, &rk, &rkl), 0);
	/* unregistered local memory: through the staging buffer */
	assert_int_equal(xport_put(p.a, p.ab, loc, n, (uintptr_t)region, rk, rkl, 30000), 0);
	assert_memory_equal(region, loc, n);
	memset(back, 0, n);
	assert_int_equal(xport_get(p.a, p.ab, back, n, (uintptr_t)region, rk, rkl, 30000), 0);
	assert_memory_equal(back, loc, n);
	/* registered local memory: zero copy, at an offset */
	assert_int_equal(xport_mem_register(p.a, loc, n, &lm), 0);
	memset(region, 0xee, n);
	assert_int_equal(xport_get(p.a, p.ab, loc + 100, 4096, (uintptr_t)region + 8192, rk, rkl, 5000), 0);
	for (int i = 0; i < 4096; i++)
		assert_int_equal(loc[100 + i], 0xee);
	assert_int_equal(xport_put(p.a, p.ab, loc, 1, (uintptr_t)region + n - 1, rk, rkl, 5000), 0);
	assert_int_equal(region[n - 1], loc[0]);
	xport_mem_release(p.a, lm);
	xport_mem_release(p.b, m);
	pair_close(&p);
	free(region);
	free(loc);
	free(back);
}

/* Small puts go as one inline WRITE from any memory (here the stack, never
 * registered): the bytes arrive, put returns only once they are there, and
 * the error paths are those of the other puts. */
static void test_inline_put(void **state)
{
	struct pair p = { 0 };
	unsigned char region[4096], small[200], key[64];
	xport_mem *m;
	const void *rk;
	size_t rkl;

	NEED_RDMA();
	pair_open(&p);
	memset(region, 0, sizeof region);
	assert_int_equal(xport_mem_register(p.b, region, sizeof region, &m), 0);
	assert_int_equal(xport_mem_rkey(m, &rk, &rkl), 0);
	for (int k = 1; k <= 50; k++) {   /* each put visible when it returns */
		small[0] = small[1] = (unsigned char)k;
		assert_int_equal(xport_put(p.a, p.ab, small, 2, (uintptr_t)region + 2 * k, rk, rkl, 5000), 0);
		assert_int_equal(region[2 * k], k);
		assert_int_equal(region[2 * k + 1], k);
	}
	for (size_t i = 0; i < sizeof small; i++)
		small[i] = (unsigned char)(i * 7 + 3);
	assert_int_equal(xport_put(p.a, p.ab, small, sizeof small, (uintptr_t)region + 1000, rk, rkl, 5000), 0);
	assert_memory_equal(region + 1000, small, sizeof small);
	/* MR too small: refused before the wire, endpoint unharmed */
	assert_int_equal(xport_put(p.a, p.ab, small, 64, (uintptr_t)region + sizeof region - 32, rk, rkl, 5000),
			 AIDOS_E_RANGE);
	assert_int_equal(xport_ep_status(p.ab), 0);
	/* a wrong rkey value: the peer refuses the inline WRITE too */
	assert_true(rkl <= sizeof key);
	memcpy(key, rk, rkl);
	key[8] ^= 0x5a;
	key[9] ^= 0x11;
	uint64_t h = xport_fnv1a(XPORT_FNV_INIT, key, 40);
	for (int i = 0; i < 8; i++)
		key[40 + i] = (unsigned char)(h >> (8 * i));
	int rc = xport_put(p.a, p.ab, small, 8, (uintptr_t)region, key, rkl, 5000);
	printf("    measured: inline put, wrong rkey: %d (%s)\n", rc, aidos_strerror(rc));
	assert_true(rc == -EACCES || rc == -ECONNRESET);
	assert_int_not_equal(xport_ep_status(p.ab), 0);
	assert_int_equal(xport_put(p.a, p.ab, small, 8, (uintptr_t)region, rk, rkl, 5000), xport_ep_status(p.ab));
	xport_mem_release(p.b, m);
	pair_close(&p);
}

/* Posted puts (ib_write_bw's window): 40 writes of 256 KiB from a
 * registered region in flight at once (more than the send queue holds, so
 * posting waits for completions), each waited for; the target holds every
 * byte. Unregistered memory goes through staging inside post; a bad key is
 * refused at post and its wait returns the same error. */
static void test_put_post_window(void **state)
{
	struct pair p = { 0 };
	enum { N = 40, SZ = 256 << 10 };
	unsigned char *region, *loc, *plain;
	xport_op ops[N];
	xport_mem *m, *lm;
	const void *rk;
	size_t rkl;

	NEED_RDMA();
	region = aligned_alloc(4096, (size_t)N * SZ);
	loc = aligned_alloc(4096, (size_t)N * SZ);
	plain = malloc(SZ);
	assert_non_null(region);
	assert_non_null(loc);
	assert_non_null(plain);
	memset(region, 0, (size_t)N * SZ);
	for (size_t i = 0; i < (size_t)N * SZ; i++)
		loc[i] = (unsigned char)(i * 29 + 5);
	pair_open(&p);
	assert_int_equal(xport_mem_register(p.b, region, (size_t)N * SZ, &m), 0);
	assert_int_equal(xport_mem_rkey(m, &rk, &rkl), 0);
	assert_int_equal(xport_mem_register(p.a, loc, (size_t)N * SZ, &lm), 0);
	double t0 = now_s();
	for (int k = 0; k < N; k++)
		assert_int_equal(xport_put_post(p.a, p.ab, loc + (size_t)k * SZ, SZ, (uintptr_t)region + (size_t)k * SZ,
						rk, rkl, 30000, &ops[k]), 0);
	for (int k = 0; k < N; k++)
		assert_int_equal(xport_op_wait(p.a, &ops[k], 30000), 0);
	printf("    measured: %d posted puts of %d KiB in %.1f ms\n", N, SZ >> 10, (now_s() - t0) * 1e3);
	assert_memory_equal(region, loc, (size_t)N * SZ);
	/* unregistered source: done inside post */
	for (int i = 0; i < SZ; i++)
		plain[i] = (unsigned char)(i * 3 + 1);
	assert_int_equal(xport_put_post(p.a, p.ab, plain, SZ, (uintptr_t)region, rk, rkl, 30000, &ops[0]), 0);
	assert_int_equal(xport_op_wait(p.a, &ops[0], 30000), 0);
	assert_memory_equal(region, plain, SZ);
	/* outside the region: refused at post, the wait says the same */
	assert_int_equal(xport_put_post(p.a, p.ab, loc, SZ, (uintptr_t)region + (size_t)N * SZ - 8, rk, rkl, 5000,
					&ops[1]), AIDOS_E_RANGE);
	assert_int_equal(xport_op_wait(p.a, &ops[1], 5000), AIDOS_E_RANGE);
	assert_int_equal(xport_ep_status(p.ab), 0);
	xport_mem_release(p.a, lm);
	xport_mem_release(p.b, m);
	pair_close(&p);
	free(region);
	free(loc);
	free(plain);
}

/* ---- errors ---- */

static void test_bad_keys(void **state)
{
	struct pair p = { 0 };
	unsigned char region[4096], buf[64], key[64];
	xport_mem *m;
	const void *rk;
	size_t rkl, len;

	NEED_RDMA();
	pair_open(&p);
	assert_int_equal(xport_mem_register(p.b, region, sizeof region, &m), 0);
	assert_int_equal(xport_mem_rkey(m, &rk, &rkl), 0);
	assert_true(rkl <= sizeof key);
	/* MR too small: refused before anything reaches the wire */
	assert_int_equal(xport_get(p.a, p.ab, buf, 64, (uintptr_t)region + sizeof region - 32, rk, rkl, 5000),
			 AIDOS_E_RANGE);
	assert_int_equal(xport_get(p.a, p.ab, buf, 8, (uintptr_t)region - 8, rk, rkl, 5000), AIDOS_E_RANGE);
	/* corrupted and truncated keys */
	memcpy(key, rk, rkl);
	key[20] ^= 1;
	assert_int_equal(xport_get(p.a, p.ab, buf, 8, (uintptr_t)region, key, rkl, 5000), AIDOS_E_INVALID);
	assert_int_equal(xport_get(p.a, p.ab, buf, 8, (uintptr_t)region, rk, rkl - 1, 5000), AIDOS_E_INVALID);
	assert_int_equal(xport_get(p.a, p.ab, buf, 8, (uintptr_t)region, NULL, 0, 5000), AIDOS_E_INVALID);
	assert_int_equal(xport_ep_status(p.ab), 0);
	/* a well-formed key with a wrong rkey value (the layout is in verbs.c:
	 * rkey at 8, checksum of bytes 0..39 at 40): the peer's HCA refuses */
	memcpy(key, rk, rkl);
	key[8] ^= 0x5a;
	key[9] ^= 0x11;
	uint64_t h = xport_fnv1a(XPORT_FNV_INIT, key, 40);
	for (int i = 0; i < 8; i++)
		key[40 + i] = (unsigned char)(h >> (8 * i));
	int rc = xport_get(p.a, p.ab, buf, 8, (uintptr_t)region, key, rkl, 5000);
	printf("    measured: wrong rkey: %d (%s), endpoint: %s\n", rc, aidos_strerror(rc), xport_ep_describe(p.ab));
	assert_true(rc == -EACCES || rc == -ECONNRESET);
	assert_int_not_equal(xport_ep_status(p.ab), 0);
	assert_non_null(strstr(xport_ep_describe(p.ab), "verbs failed"));
	/* later calls fail at once; a fresh connect works and b still serves */
	assert_int_equal(xport_get(p.a, p.ab, buf, 8, (uintptr_t)region, rk, rkl, 5000), xport_ep_status(p.ab));
	const void *addr;
	size_t alen;
	xport_ep *ep2;
	xport_address(p.b, &addr, &alen);
	assert_int_equal(xport_connect(p.a, addr, alen, &ep2), 0);
	assert_ptr_not_equal(ep2, p.ab);
	memset(region, 0x42, sizeof region);
	assert_int_equal(xport_get(p.a, ep2, buf, 8, (uintptr_t)region, rk, rkl, 5000), 0);
	assert_int_equal(buf[7], 0x42);
	assert_int_equal(xport_tag_send(p.a, ep2, 5, "ok", 2, 5000), 0);
	assert_int_equal(xport_tag_recv(p.b, 5, ~0ull, buf, sizeof buf, &len, NULL, 5000), 0);
	/* a released region: its key is refused by the HCA too */
	xport_mem_release(p.b, m);
	rc = xport_get(p.a, ep2, buf, 8, (uintptr_t)region, rk, rkl, 5000);
	printf("    measured: released region: %d (%s)\n", rc, aidos_strerror(rc));
	assert_true(rc == -EACCES || rc == -ECONNRESET);
	xport_disconnect(p.a, ep2);
	pair_close(&p);
}

/* The peer: a separate process (re-executed with --peer) that registers
 * `size` bytes, writes its address and rkey to fd 1, and waits to be killed. */
static int peer_main(const char *dev, size_t size)
{
	xport *x;
	xport_mem *m;
	const void *addr, *rk;
	size_t alen, rkl;
	unsigned char *buf = malloc(size);

	if (!buf || open_on(dev, &x) || xport_mem_register(x, buf, size, &m))
		return 1;
	memset(buf, 0x33, size);
	xport_address(x, &addr, &alen);
	xport_mem_rkey(m, &rk, &rkl);
	uint64_t hdr[3] = { alen, rkl, (uintptr_t)buf };
	if (write(1, hdr, sizeof hdr) != sizeof hdr || write(1, addr, alen) != (ssize_t)alen ||
	    write(1, rk, rkl) != (ssize_t)rkl)
		return 1;
	for (;;)
		pause();
}

static void test_peer_killed(void **state)
{
	xport *a, *b;
	xport_ep *ep;
	int pfd[2];
	size_t size = 96u << 20;

	NEED_RDMA();
	assert_int_equal(pipe(pfd), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(pfd[1], 1);
		char sz[32];
		snprintf(sz, sizeof sz, "%zu", size);
		execl("/proc/self/exe", "test_verbs", "--peer", dev_b() ? dev_b() : "", sz, (char *)NULL);
		_exit(127);
	}
	close(pfd[1]);
	uint64_t hdr[3];
	unsigned char addr[256], rk[256];
	assert_int_equal(read(pfd[0], hdr, sizeof hdr), sizeof hdr);
	assert_true(hdr[0] <= sizeof addr && hdr[1] <= sizeof rk);
	assert_int_equal(read(pfd[0], addr, hdr[0]), (ssize_t)hdr[0]);
	assert_int_equal(read(pfd[0], rk, hdr[1]), (ssize_t)hdr[1]);
	assert_int_equal(open_on(dev_a(), &a), 0);
	assert_int_equal(xport_connect(a, addr, hdr[0], &ep), 0);
	unsigned char *dst = malloc(size);
	xport_mem *lm;
	assert_int_equal(xport_mem_register(a, dst, size, &lm), 0);
	/* small read first: the peer is there */
	assert_int_equal(xport_get(a, ep, dst, 4096, hdr[2], rk, hdr[1], 5000), 0);
	assert_int_equal(dst[0], 0x33);
	/* kill it 200 ms into a read that lasts seconds on rxe under emulation */
	pid_t killer = fork();
	if (killer == 0) {
		usleep(200000);
		kill(pid, SIGKILL);
		_exit(0);
	}
	double t0 = now_s();
	int rc = xport_get(a, ep, dst, size, hdr[2], rk, hdr[1], 20000);
	double dt = now_s() - t0;
	waitpid(killer, NULL, 0);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	printf("    measured: peer killed mid-read of %zu MiB: %d (%s) after %.2f s; endpoint: %s\n", size >> 20, rc,
	       aidos_strerror(rc), dt, xport_ep_describe(ep));
	if (rc == 0)
		printf("    measured: the read finished before the kill (too fast to interrupt)\n");
	else
		assert_true(rc == -ECONNRESET || rc == -ETIMEDOUT || rc == -EACCES);
	/* the survivor still serves: a fresh pair of xports on the same process */
	const void *baddr;
	size_t blen;
	xport_ep *ep2;
	char buf[8];
	size_t len;
	assert_int_equal(open_on(dev_b(), &b), 0);
	xport_address(b, &baddr, &blen);
	assert_int_equal(xport_connect(a, baddr, blen, &ep2), 0);
	assert_int_equal(xport_tag_send(a, ep2, 1, "alive", 5, 5000), 0);
	assert_int_equal(xport_tag_recv(b, 1, ~0ull, buf, sizeof buf, &len, NULL, 5000), 0);
	assert_int_equal(len, 5);
	xport_disconnect(a, ep2);
	xport_disconnect(a, ep);
	xport_mem_release(a, lm);
	xport_destroy(b);
	xport_destroy(a);
	free(dst);
	close(pfd[0]);
}

static void test_connect_refused(void **state)
{
	xport *a, *b;
	xport_ep *ep = NULL;
	const void *addr;
	size_t alen;
	unsigned char copy[64];

	NEED_RDMA();
	assert_int_equal(open_on(dev_a(), &a), 0);
	assert_int_equal(open_on(dev_b(), &b), 0);
	xport_address(b, &addr, &alen);
	memcpy(copy, addr, alen);
	xport_destroy(b);   /* nobody listens there any more */
	int rc = xport_connect(a, copy, alen, &ep);
	printf("    measured: connect to a closed listener: %d (%s)\n", rc, aidos_strerror(rc));
	assert_true(rc < 0);
	assert_null(ep);
	copy[3] ^= 1;
	assert_int_equal(xport_connect(a, copy, alen, &ep), AIDOS_E_INVALID);
	xport_destroy(a);
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "--peer"))
		return peer_main(argv[2][0] ? argv[2] : NULL, strtoull(argv[3], NULL, 10));
	have_rdma = xport_verbs_probe(have_dev, sizeof have_dev);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_device),
		cmocka_unit_test(test_auto_prefers_verbs),
		cmocka_unit_test(test_tag_small),
		cmocka_unit_test(test_tag_large),
		cmocka_unit_test(test_put_get),
		cmocka_unit_test(test_inline_put),
		cmocka_unit_test(test_put_post_window),
		cmocka_unit_test(test_bad_keys),
		cmocka_unit_test(test_peer_killed),
		cmocka_unit_test(test_connect_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
