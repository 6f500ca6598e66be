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
typedef struct mpool mpool;
typedef struct pool_arena {
	void *base;
	size_t size;
	void *raw;    /* what to release: the mapping or the heap block */
	int mapped;   /* 1: munmap on release, 0: pool_free */
	mpool *owner; /* non-NULL: a block of this agent pool (mpool_free on release) */
} pool_arena;
/* Reserves an arena. When the calling thread has a current agent pool
 * (mpool_set_current), the arena is a block of that pool, charged to its
 * quota: AIDOS_E_QUOTA when it does not fit. Else as described above.
 * Errors: AIDOS_E_NOMEM, AIDOS_E_QUOTA. */
int pool_arena_reserve(pool_arena *a, size_t size);
void pool_arena_release(pool_arena *a);

/* ---- agent pools (pools/pool.c) ----
 *
 * One pool per agent: a single contiguous mapping of `reserved` bytes
 * (address space only, touched lazily), so a transport registers all of an
 * agent's memory with one xport_mem_register(base, len). Placed on huge
 * pages when it can be: hugetlb when enough pages are reserved
 * (/proc/sys/vm/nr_hugepages, HugePages_Free) for the whole mapping, else
 * transparent huge pages by madvise, else 4 KiB pages; the kind is
 * reported. With more than one NUMA node the mapping is bound (libnuma) to
 * the node of the CPU given, or of the calling thread.
 *
 * Blocks are first-fit in the mapping, 64-byte aligned (2 MiB for blocks of
 * 2 MiB or more, so they can sit on huge pages). The quota bounds the bytes
 * in blocks: an allocation past it fails with AIDOS_E_QUOTA and counts a
 * breach; only that allocation fails. Freed blocks of 2 MiB or more give
 * their pages back (MADV_DONTNEED). Allocation happens at spawn and at
 * planning (input shapes change), never per request: the pool's mutex is
 * off the hot path.
 *
 *   mpool_opts o = { .quota = 64 << 20, .numa_cpu = -1 };
 *   mpool *p;
 *   if (mpool_create(&o, &p, err, sizeof err)) ...
 *   void *ctx;
 *   if (mpool_alloc(p, 4096, &ctx)) ...   // AIDOS_E_QUOTA past 64 MiB
 *   mpool *old = mpool_set_current(p);   // arenas planned now come from p
 *   ... aidos_session_run ...
 *   mpool_set_current(old);
 *   mpool_destroy(p);                     // every block must be freed first
 */
enum pool_pages {
	POOL_PAGES_4K = 0,      /* plain pages */
	POOL_PAGES_THP = 1,     /* madvise(MADV_HUGEPAGE) */
	POOL_PAGES_HUGETLB = 2, /* MAP_HUGETLB from the reserved huge pages */
};
const char *pool_pages_name(int kind);   /* "4k", "thp", "hugetlb" */

typedef struct mpool_opts {
	size_t quota;     /* bytes in blocks at most; 0: the default window (8 GiB or RAM) */
	int numa_cpu;     /* bind to this CPU's NUMA node; -1: the calling thread's CPU */
	int no_huge;      /* 1: plain 4 KiB pages (tests) */
} mpool_opts;

typedef struct mpool_usage {
	uint64_t quota;     /* bytes allowed in blocks */
	uint64_t reserved;  /* address space mapped (>= quota, rounded to 2 MiB) */
	uint64_t used;      /* bytes in blocks now */
	uint64_t peak;      /* highest `used` */
	uint64_t breaches;  /* allocations refused by the quota */
	uint64_t last_need; /* size of the last refused allocation */
	int pages;          /* enum pool_pages */
	int numa_node;      /* node the mapping is bound to; -1: not bound (one node) */
	int blocks;
} mpool_usage;

/* Maps the pool. Errors: AIDOS_E_INVALID (opts), AIDOS_E_NOMEM (mmap, with
 * err naming the size). Thread-safe. */
int mpool_create(const mpool_opts *o, mpool **out, char *err, size_t errlen);
/* Unmaps it; blocks still allocated are released with it. NULL: no-op. */
void mpool_destroy(mpool *p);
/* A block of n bytes, zeroed (freed blocks are cleared or their pages
 * handed back). Errors: AIDOS_E_QUOTA (quota or window full),
 * AIDOS_E_NOMEM (block table). Thread-safe. */
int mpool_alloc(mpool *p, size_t n, void **out);
/* Frees a block of this pool (NULL: no-op; a pointer not from it is ignored). */
void mpool_free(mpool *p, void *ptr);
void mpool_usage_get(mpool *p, mpool_usage *u);
/* The whole mapping, for xport_mem_register: valid until mpool_destroy. */
void mpool_region(const mpool *p, void **base, size_t *len);
/* Sets the calling thread's current pool (NULL: none) and returns the one
 * it had: pool_arena_reserve takes arenas from it. */
mpool *mpool_set_current(mpool *p);
mpool *mpool_current(void);
/* What the machine offers, probed once: the page kind a pool of `bytes`
 * would get and the number of NUMA nodes (1 without libnuma). */
int pool_pages_probe(size_t bytes);
int pool_numa_nodes(void);

#define POOL_ALIGN 64
static inline size_t pool_align_up(size_t n, size_t a)
{
	return (n + a - 1) & ~(a - 1);
}

#endif
