/*
 * pools/alloc.c - the accounting allocator. A 16-byte header in front of
 * every block keeps its size so frees can be accounted without a table.
 * Counters are relaxed atomics: they are statistics, not synchronisation.
 */
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include "pools/pools.h"

#define HDR 16

static _Atomic uint64_t n_alloc, n_free, n_fail, live, peak;
static _Atomic uint64_t fault_at;      /* allocation number that fails, 0 = off */
static _Atomic int fault_sticky;

void pool_fault_inject(uint64_t nth, int sticky)
{
	atomic_store(&fault_sticky, sticky);
	atomic_store(&fault_at, nth ? atomic_load(&n_alloc) + nth : 0);
}

static int should_fail(void)
{
	uint64_t at = atomic_load_explicit(&fault_at, memory_order_relaxed);
	if (!at)
		return 0;
	uint64_t k = atomic_fetch_add_explicit(&n_alloc, 1, memory_order_relaxed) + 1;
	if (k == at || (k > at && atomic_load(&fault_sticky))) {
		atomic_fetch_sub_explicit(&n_alloc, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&n_fail, 1, memory_order_relaxed);
		return 1;
	}
	atomic_fetch_sub_explicit(&n_alloc, 1, memory_order_relaxed);
	return 0;
}

static void account(size_t n)
{
	atomic_fetch_add_explicit(&n_alloc, 1, memory_order_relaxed);
	uint64_t l = atomic_fetch_add_explicit(&live, n, memory_order_relaxed) + n;
	uint64_t p = atomic_load_explicit(&peak, memory_order_relaxed);
	while (l > p && !atomic_compare_exchange_weak(&peak, &p, l))
		;
}

void *pool_malloc(size_t n)
{
	if (n > SIZE_MAX - HDR || should_fail())
		return NULL;
	unsigned char *p = malloc(n + HDR);
	if (!p) {
		atomic_fetch_add_explicit(&n_fail, 1, memory_order_relaxed);
		return NULL;
	}
	memcpy(p, &n, sizeof n);
	account(n);
	return p + HDR;
}

void *pool_calloc(size_t count, size_t size)
{
	if (size && count > SIZE_MAX / size)
		return NULL;
	void *p = pool_malloc(count * size);
	if (p)
		memset(p, 0, count * size);
	return p;
}

void pool_free(void *p)
{
	if (!p)
		return;
	unsigned char *h = (unsigned char *)p - HDR;
	size_t n;
	memcpy(&n, h, sizeof n);
	atomic_fetch_add_explicit(&n_free, 1, memory_order_relaxed);
	atomic_fetch_sub_explicit(&live, n, memory_order_relaxed);
	free(h);
}

void *pool_realloc(void *p, size_t n)
{
	if (!p)
		return pool_malloc(n);
	size_t old;
	memcpy(&old, (unsigned char *)p - HDR, sizeof old);
	void *q = pool_malloc(n);
	if (!q)
		return NULL;
	memcpy(q, p, old < n ? old : n);
	pool_free(p);
	return q;
}

char *pool_strndup(const char *s, size_t n)
{
	char *d = pool_malloc(n + 1);
	if (d) {
		memcpy(d, s, n);
		d[n] = 0;
	}
	return d;
}

void pool_get_stats(pool_stats *st)
{
	st->allocs = atomic_load(&n_alloc);
	st->frees = atomic_load(&n_free);
	st->fails = atomic_load(&n_fail);
	st->bytes_live = atomic_load(&live);
	st->bytes_peak = atomic_load(&peak);
}
