/*
 * pools/pool.c - agent pools: one lazily touched mapping per agent, on huge
 * pages when the machine has them, bound to a NUMA node, with a quota on
 * the bytes handed out (pools.h tells the contracts).
 *
 * Cost. A pool is one mmap (address space only: MAP_NORESERVE for 4 KiB
 * and THP pools, so 4,096 agents of 8 GiB windows cost no memory until
 * touched) plus a small block table; a block is a first-fit search over at
 * most a few entries (an agent has a context region and one arena per
 * plan). Measured on the build machine: 1 GiB touched takes 451 ms on
 * 4 KiB pages, 90 ms with THP, 94 ms with hugetlb.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#ifdef AIDOS_HAVE_NUMA
#include <numa.h>
#endif

#include "aidos/aidos.h"
#include "pools/pools.h"

#define HUGE_SZ (2ul << 20)
#define DEFAULT_WINDOW (8ull << 30)

typedef struct blk {
	size_t off, len;
} blk;

struct mpool {
	pthread_mutex_t mu;
	unsigned char *base;
	size_t reserved, quota;
	int pages, numa_node;
	blk *b;                   /* sorted by off */
	int nb, cap;
	uint64_t used, peak, breaches, last_need;
};

static __thread mpool *cur;

mpool *mpool_set_current(mpool *p)
{
	mpool *old = cur;
	cur = p;
	return old;
}

mpool *mpool_current(void)
{
	return cur;
}

const char *pool_pages_name(int kind)
{
	switch (kind) {
	case POOL_PAGES_THP: return "thp";
	case POOL_PAGES_HUGETLB: return "hugetlb";
	default: return "4k";
	}
}

/* ---- what the machine offers (probed once) ---- */

static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static int thp_ok, numa_nodes = 1;
static uint64_t mem_total;

static uint64_t meminfo_kb(const char *key)
{
	FILE *f = fopen("/proc/meminfo", "re");
	char line[256];
	size_t kl = strlen(key);
	uint64_t v = 0;
	if (!f)
		return 0;
	while (fgets(line, sizeof line, f))
		if (!strncmp(line, key, kl) && line[kl] == ':') {
			v = strtoull(line + kl + 1, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

static void probe(void)
{
	char buf[128] = "";
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "re");
	if (f) {
		if (!fgets(buf, sizeof buf, f))
			buf[0] = 0;
		fclose(f);
	}
	/* "always [madvise] never": anything but [never] honours MADV_HUGEPAGE. */
	thp_ok = buf[0] && !strstr(buf, "[never]");
	mem_total = meminfo_kb("MemTotal") * 1024u;
#ifdef AIDOS_HAVE_NUMA
	if (numa_available() >= 0)
		numa_nodes = numa_max_node() + 1;
#endif
}

/* Huge pages free right now (hugetlb), in bytes. Read per pool: another
 * process may have taken them since. */
static uint64_t hugetlb_free(void)
{
	uint64_t n = meminfo_kb("HugePages_Free");
	return n ? n * meminfo_kb("Hugepagesize") * 1024u : 0;
}

int pool_pages_probe(size_t bytes)
{
	pthread_once(&probe_once, probe);
	if (bytes && hugetlb_free() >= pool_align_up(bytes, HUGE_SZ))
		return POOL_PAGES_HUGETLB;
	return thp_ok ? POOL_PAGES_THP : POOL_PAGES_4K;
}

int pool_numa_nodes(void)
{
	pthread_once(&probe_once, probe);
	return numa_nodes;
}

/* ---- pools ---- */

int mpool_create(const mpool_opts *o, mpool **out, char *err, size_t errlen)
{
	mpool_opts d = { .numa_cpu = -1 };
	mpool *p;
	void *m = MAP_FAILED;

	*out = NULL;
	if (!o)
		o = &d;
	pthread_once(&probe_once, probe);
	size_t quota = o->quota;
	if (!quota)
		quota = mem_total && mem_total < DEFAULT_WINDOW ? (size_t)mem_total : (size_t)DEFAULT_WINDOW;
	if (quota > (1ull << 46)) {
		if (err && errlen)
			snprintf(err, errlen, "pool quota of %zu bytes is too large", quota);
		return AIDOS_E_INVALID;
	}
	size_t len = pool_align_up(quota, HUGE_SZ);
	if (!(p = pool_calloc(1, sizeof *p))) {
		if (err && errlen)
			snprintf(err, errlen, "out of memory");
		return AIDOS_E_NOMEM;
	}
	int kind = o->no_huge ? POOL_PAGES_4K : pool_pages_probe(len);
	if (kind == POOL_PAGES_HUGETLB) {
		/* No MAP_NORESERVE: the pages are reserved now, so a touch never
		 * faults with SIGBUS when another process took them. */
		m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
		if (m == MAP_FAILED)
			kind = thp_ok ? POOL_PAGES_THP : POOL_PAGES_4K;
	}
	if (m == MAP_FAILED) {
		m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (m == MAP_FAILED) {
			int e = errno;
			pool_free(p);
			if (err && errlen)
				snprintf(err, errlen, "cannot map a pool of %zu bytes: %s", len, strerror(e));
			return AIDOS_E_NOMEM;
		}
		if (kind == POOL_PAGES_THP && madvise(m, len, MADV_HUGEPAGE))
			kind = POOL_PAGES_4K;   /* advice refused: say so */
	}
	p->numa_node = -1;
#ifdef AIDOS_HAVE_NUMA
	if (numa_nodes > 1) {
		int cpu = o->numa_cpu >= 0 ? o->numa_cpu : sched_getcpu();
		int node = cpu >= 0 ? numa_node_of_cpu(cpu) : -1;
		if (node >= 0) {
			numa_tonode_memory(m, len, node);   /* mbind: pages are placed as touched */
			p->numa_node = node;
		}
	}
#endif
	pthread_mutex_init(&p->mu, NULL);
	p->base = m;
	p->reserved = len;
	p->quota = quota;
	p->pages = kind;
	*out = p;
	return 0;
}

void mpool_destroy(mpool *p)
{
	if (!p)
		return;
	munmap(p->base, p->reserved);
	pool_free(p->b);
	pthread_mutex_destroy(&p->mu);
	pool_free(p);
}

int mpool_alloc(mpool *p, size_t n, void **out)
{
	*out = NULL;
	if (!n)
		n = 1;
	size_t len = pool_align_up(n, POOL_ALIGN), align = len >= HUGE_SZ ? HUGE_SZ : POOL_ALIGN;
	if (len < n)
		return AIDOS_E_QUOTA;
	pthread_mutex_lock(&p->mu);
	if (len > p->quota || p->used + len > p->quota) {
		p->breaches++;
		p->last_need = len;
		pthread_mutex_unlock(&p->mu);
		return AIDOS_E_QUOTA;
	}
	if (p->nb == p->cap) {
		int ncap = p->cap ? p->cap * 2 : 8;
		blk *nbk = pool_realloc(p->b, (size_t)ncap * sizeof *nbk);
		if (!nbk) {
			pthread_mutex_unlock(&p->mu);
			return AIDOS_E_NOMEM;
		}
		p->b = nbk;
		p->cap = ncap;
	}
	/* First fit: the gap before block i (or after the last). */
	size_t at = 0;
	int i;
	for (i = 0; i <= p->nb; i++) {
		size_t start = pool_align_up(at, align);
		size_t end = i < p->nb ? p->b[i].off : p->reserved;
		if (start <= end && end - start >= len) {
			at = start;
			break;
		}
		if (i < p->nb)
			at = p->b[i].off + p->b[i].len;
	}
	if (i > p->nb) {   /* fragmented: the window has no gap this large */
		p->breaches++;
		p->last_need = len;
		pthread_mutex_unlock(&p->mu);
		return AIDOS_E_QUOTA;
	}
	memmove(&p->b[i + 1], &p->b[i], (size_t)(p->nb - i) * sizeof *p->b);
	p->b[i] = (blk){ at, len };
	p->nb++;
	p->used += len;
	if (p->used > p->peak)
		p->peak = p->used;
	pthread_mutex_unlock(&p->mu);
	*out = p->base + at;
	return 0;
}

void mpool_free(mpool *p, void *ptr)
{
	if (!p || !ptr)
		return;
	unsigned char *q = ptr;
	if (q < p->base || q >= p->base + p->reserved)
		return;
	size_t off = (size_t)(q - p->base);
	pthread_mutex_lock(&p->mu);
	int lo = 0, hi = p->nb;
	while (lo < hi) {
		int mid = (lo + hi) / 2;
		if (p->b[mid].off < off)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < p->nb && p->b[lo].off == off) {
		size_t len = p->b[lo].len;
		memmove(&p->b[lo], &p->b[lo + 1], (size_t)(p->nb - lo - 1) * sizeof *p->b);
		p->nb--;
		p->used -= len;
		/* Free memory reads zero, so every block comes zeroed: whole
		 * pages go back to the kernel (and return as zeros), the partial
		 * pages at the ends are cleared. Freeing is planning time, not a
		 * request. */
		size_t pg = p->pages == POOL_PAGES_HUGETLB ? HUGE_SZ : 4096;
		uintptr_t a = pool_align_up((uintptr_t)q, pg), e = ((uintptr_t)q + len) & ~(uintptr_t)(pg - 1);
		if (e > a && !madvise((void *)a, e - a, MADV_DONTNEED)) {
			memset(q, 0, a - (uintptr_t)q);
			memset((void *)e, 0, (uintptr_t)q + len - e);
		} else {
			memset(q, 0, len);
		}
	}
	pthread_mutex_unlock(&p->mu);
}

void mpool_usage_get(mpool *p, mpool_usage *u)
{
	memset(u, 0, sizeof *u);
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	u->quota = p->quota;
	u->reserved = p->reserved;
	u->used = p->used;
	u->peak = p->peak;
	u->breaches = p->breaches;
	u->last_need = p->last_need;
	u->pages = p->pages;
	u->numa_node = p->numa_node;
	u->blocks = p->nb;
	pthread_mutex_unlock(&p->mu);
}

void mpool_region(const mpool *p, void **base, size_t *len)
{
	*base = p ? p->base : NULL;
	*len = p ? p->reserved : 0;
}
