/*
 * pools/pools.h - memory: the one allocator every module goes through
 * (statistics, fault injection for tests) and activation arenas.
 *
 * The arena holds every activation of one planned request (hal/plan.c sizes
 * it from tensor lifetimes); it is reserved once per plan and touched in
 * place per request. Large arenas are mmapped and advised onto transparent
 * huge pages (1 GiB touched: 451 ms on 4 KiB pages vs 90 ms with THP, as
 * measured on the build machine), small ones come from the heap.
 */
#ifndef AIDOS_POOLS_H
#define AIDOS_POOLS_H

#include <stddef.h>
#include <stdint.h>

/* Heap allocation with accounting. pool_malloc/pool_calloc return NULL on
 * failure (or when fault injection says so); pool_free(NULL) is a no-op. */
void *pool_malloc(size_t n);
void *pool_calloc(size_t count, size_t size);
void *pool_realloc(void *p, size_t n);
void pool_free(void *p);
char *pool_strndup(const char *s, size_t n);

typedef struct pool_stats {
	uint64_t allocs, frees, fails;
	uint64_t bytes_live, bytes_peak;
} pool_stats;
void pool_get_stats(pool_stats *st);

/* Fault injection (tests): the nth allocation from now fails (1 = the next),
 * and every later one too when `sticky`; 0 turns it off. Thread-safe. */
void pool_fault_inject(uint64_t nth, int sticky);

/* An activation arena: size bytes, 64-byte aligned, zeroed. Returns NULL on
 * failure. Large arenas use mmap + MADV_HUGEPAGE. */
typedef struct pool_arena {
	void *base;
	size_t size;
	void *raw;    /* what to release: the mapping or the heap block */
	int mapped;   /* 1: munmap on release, 0: pool_free */
} pool_arena;
int pool_arena_reserve(pool_arena *a, size_t size);
void pool_arena_release(pool_arena *a);

#define POOL_ALIGN 64
static inline size_t pool_align_up(size_t n, size_t a)
{
	return (n + a - 1) & ~(a - 1);
}

#endif
