/*
 * tests/test_pools.c - agent pools (pools/pool.c): the quota bounds the
 * bytes handed out and a breach fails only that allocation (counted, the
 * pool goes on); blocks are aligned, zeroed and inside the one registrable
 * region; accounting (used, peak, reserved, page kind) is exact; arenas
 * reserved on a thread with a current pool come from it; two pools are
 * independent (one agent's breach leaves the other's allocations alone);
 * a pool's whole region registers with the transport (UCX) in one call.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "aidos/aidos.h"
#include "pools/pools.h"
#include "transport/transport.h"

#define MiB (1ul << 20)

static mpool *mk(size_t quota)
{
	mpool_opts o = { .quota = quota, .numa_cpu = -1 };
	mpool *p = NULL;
	char err[200];
	assert_int_equal(mpool_create(&o, &p, err, sizeof err), 0);
	return p;
}

static int all_zero(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return 0;
	return 1;
}

static void test_quota(void **st)
{
	mpool *p = mk(1 * MiB);
	mpool_usage u;
	void *a, *b, *c;
	assert_int_equal(mpool_alloc(p, 512 * 1024, &a), 0);
	assert_int_equal(mpool_alloc(p, 400 * 1024, &b), 0);
	/* 912 KiB used: 200 KiB more is past the 1 MiB quota. */
	assert_int_equal(mpool_alloc(p, 200 * 1024, &c), AIDOS_E_QUOTA);
	assert_null(c);
	mpool_usage_get(p, &u);
	assert_int_equal(u.quota, 1 * MiB);
	assert_int_equal(u.used, 912 * 1024);
	assert_int_equal(u.breaches, 1);
	assert_int_equal(u.last_need, 200 * 1024);
	assert_int_equal(u.blocks, 2);
	/* The breach failed that allocation only: the rest still works. */
	assert_int_equal(mpool_alloc(p, 100 * 1024, &c), 0);
	mpool_free(p, a);
	mpool_usage_get(p, &u);
	assert_int_equal(u.used, 500 * 1024);
	assert_int_equal(u.peak, 1012 * 1024);
	/* The gap a left is reused. */
	assert_int_equal(mpool_alloc(p, 512 * 1024, &a), 0);
	mpool_free(p, a);
	mpool_free(p, b);
	mpool_free(p, c);
	mpool_usage_get(p, &u);
	assert_int_equal(u.used, 0);
	assert_int_equal(u.blocks, 0);
	/* Larger than the whole quota. */
	assert_int_equal(mpool_alloc(p, 2 * MiB, &a), AIDOS_E_QUOTA);
	mpool_destroy(p);
}

static void test_blocks(void **st)
{
	mpool *p = mk(64 * MiB);
	void *base, *a, *b, *big;
	size_t len;
	mpool_region(p, &base, &len);
	assert_non_null(base);
	assert_true(len >= 64 * MiB);
	assert_int_equal(len % (2 * MiB), 0);
	assert_int_equal(mpool_alloc(p, 100, &a), 0);
	assert_int_equal(mpool_alloc(p, 3 * MiB, &big), 0);
	assert_int_equal(mpool_alloc(p, 1, &b), 0);
	assert_int_equal((uintptr_t)a % POOL_ALIGN, 0);
	assert_int_equal((uintptr_t)b % POOL_ALIGN, 0);
	assert_int_equal((uintptr_t)big % (2 * MiB), 0);   /* huge-page aligned */
	for (void *q = a; q; q = q == a ? big : q == big ? b : NULL) {
		assert_true((unsigned char *)q >= (unsigned char *)base);
		assert_true((unsigned char *)q < (unsigned char *)base + len);
	}
	assert_true(all_zero(big, 3 * MiB));
	/* Dirty, free, take again: zeroed. */
	memset(a, 0xab, 100);
	memset(big, 0xcd, 3 * MiB);
	mpool_free(p, a);
	mpool_free(p, big);
	assert_int_equal(mpool_alloc(p, 100, &a), 0);
	assert_int_equal(mpool_alloc(p, 3 * MiB, &big), 0);
	assert_true(all_zero(a, 100));
	assert_true(all_zero(big, 3 * MiB));
	/* Pointers that are not blocks are ignored. */
	mpool_free(p, (unsigned char *)a + 64);
	mpool_free(p, &len);
	mpool_usage u;
	mpool_usage_get(p, &u);
	assert_int_equal(u.blocks, 3);
	assert_true(u.pages == POOL_PAGES_4K || u.pages == POOL_PAGES_THP || u.pages == POOL_PAGES_HUGETLB);
	if (pool_pages_probe(0) == POOL_PAGES_THP)   /* THP on offer: the pool says it took it */
		assert_true(u.pages != POOL_PAGES_4K);
	print_message("    pool pages: %s, NUMA nodes %d, bound to %d\n", pool_pages_name(u.pages),
		      pool_numa_nodes(), u.numa_node);
	mpool_destroy(p);   /* with blocks still out: released with it */
}

static void test_no_huge(void **st)
{
	mpool_opts o = { .quota = 4 * MiB, .numa_cpu = 0, .no_huge = 1 };
	mpool *p;
	char err[200];
	assert_int_equal(mpool_create(&o, &p, err, sizeof err), 0);
	mpool_usage u;
	mpool_usage_get(p, &u);
	assert_int_equal(u.pages, POOL_PAGES_4K);
	assert_string_equal(pool_pages_name(u.pages), "4k");
	mpool_destroy(p);
	o.quota = (size_t)1 << 50;
	assert_int_equal(mpool_create(&o, &p, err, sizeof err), AIDOS_E_INVALID);
}

static void test_arena_current(void **st)
{
	mpool *p = mk(8 * MiB), *q = mk(8 * MiB);
	pool_arena a, b, c;
	mpool_usage u;
	assert_null(mpool_current());
	assert_null(mpool_set_current(p));
	assert_int_equal(pool_arena_reserve(&a, 5 * MiB), 0);
	assert_ptr_equal(a.owner, p);
	/* 5 of 8 MiB used: a second 5 MiB arena breaches p's quota ... */
	assert_int_equal(pool_arena_reserve(&b, 5 * MiB), AIDOS_E_QUOTA);
	/* ... and only p's: q gives it. */
	assert_ptr_equal(mpool_set_current(q), p);
	assert_int_equal(pool_arena_reserve(&b, 5 * MiB), 0);
	assert_ptr_equal(b.owner, q);
	mpool_set_current(NULL);
	assert_int_equal(pool_arena_reserve(&c, 100), 0);   /* no pool: the heap */
	assert_null(c.owner);
	mpool_usage_get(p, &u);
	assert_int_equal(u.used, 5 * MiB);
	assert_int_equal(u.breaches, 1);
	pool_arena_release(&a);
	pool_arena_release(&b);
	pool_arena_release(&c);
	mpool_usage_get(p, &u);
	assert_int_equal(u.used, 0);
	mpool_usage_get(q, &u);
	assert_int_equal(u.used, 0);
	assert_int_equal(u.breaches, 0);
	mpool_destroy(p);
	mpool_destroy(q);
}

/* A pool is registrable with the transport in one call (its whole
 * region), and a remote key comes out of it. */
static void test_register(void **st)
{
	xport_opts xo = { .tls = "tcp" };
	xport *x;
	char err[300];
	if (xport_create(&xo, &x, err, sizeof err)) {
		print_message("    skipped: UCX cannot start here (%s)\n", err);
		skip();
	}
	mpool *p = mk(4 * MiB);
	void *base, *blk;
	size_t len;
	assert_int_equal(mpool_alloc(p, 1 * MiB, &blk), 0);
	mpool_region(p, &base, &len);
	xport_mem *m;
	assert_int_equal(xport_mem_register(x, base, len, &m), 0);
	const void *rk;
	size_t rl;
	assert_int_equal(xport_mem_rkey(m, &rk, &rl), 0);
	assert_true(rl > 0);
	xport_mem_release(x, m);
	mpool_destroy(p);
	xport_destroy(x);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_quota),
		cmocka_unit_test(test_blocks),
		cmocka_unit_test(test_no_huge),
		cmocka_unit_test(test_arena_current),
		cmocka_unit_test(test_register),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
