/*
 * pools/arena.c - activation arenas. On a thread with a current agent pool
 * the arena is a block of that pool (charged to the agent's quota); else
 * above 2 MiB an anonymous mapping advised onto transparent huge pages, and
 * below a heap block.
 */
#include <string.h>
#include <sys/mman.h>
#include "pools/pools.h"
#include "aidos/aidos.h"

#define HUGE_MIN (2u << 20)

int pool_arena_reserve(pool_arena *a, size_t size)
{
	memset(a, 0, sizeof *a);
	size = pool_align_up(size ? size : POOL_ALIGN, POOL_ALIGN);
	mpool *mp = mpool_current();
	if (mp) {   /* an agent's arena: a block of its pool, under its quota */
		void *b;
		int rc = mpool_alloc(mp, size, &b);
		if (rc)
			return rc;
		a->base = a->raw = b;
		a->size = size;
		a->owner = mp;
		return 0;
	}
	if (size >= HUGE_MIN) {
		size_t len = pool_align_up(size, HUGE_MIN);
		void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			return AIDOS_E_NOMEM;
		madvise(p, len, MADV_HUGEPAGE);  /* advice only: failure is harmless */
		a->base = a->raw = p;
		a->size = len;
		a->mapped = 1;
		return 0;
	}
	/* pool_malloc aligns to 16; over-allocate for 64. */
	unsigned char *p = pool_calloc(1, size + POOL_ALIGN);
	if (!p)
		return AIDOS_E_NOMEM;
	a->raw = p;
	a->base = (void *)pool_align_up((uintptr_t)p, POOL_ALIGN);
	a->size = size;
	a->mapped = 0;
	return 0;
}

void pool_arena_release(pool_arena *a)
{
	if (!a->base)
		return;
	if (a->owner)
		mpool_free(a->owner, a->raw);
	else if (a->mapped)
		munmap(a->raw, a->size);
	else
		pool_free(a->raw);
	memset(a, 0, sizeof *a);
}
