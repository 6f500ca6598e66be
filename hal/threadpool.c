/*
 * hal/threadpool.c - the executor's own thread pool.
 *
 * A job is published by bumping `gen`; workers spin on it for a bounded time
 * (read from the vDSO clock, no system call) and then sleep on a futex: 50 us
 * when idle, so an idle session costs no CPU, and up to 2 ms while a request
 * runs (hal_threadpool_begin/end), so the single-threaded steps between
 * parallel kernels never put a worker to sleep and no kernel pays a wake-up
 * (about 50 us on this machine) or a system call.
 * Work is split statically: worker k runs chunk k of `chunks`, the caller
 * runs chunk 0. Completion: `pending` counts every worker down to zero; the
 * last one wakes the caller if it went to sleep.
 */
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "hal/plan.h"

#define SPIN_NS 50000          /* idle: spin this long, then sleep */
#define SPIN_ACTIVE_NS 2000000 /* inside a request: gaps between parallel kernels
                                  (single-threaded steps) stay under this, so
                                  workers never sleep mid-request */

struct hal_threadpool {
	int n;                       /* threads including the caller */
	pthread_t *th;
	_Atomic uint32_t gen;        /* job generation: futex word for workers */
	_Atomic uint32_t pending;    /* chunks not yet done: futex word for the caller */
	_Atomic int stop;
	_Atomic int sleepers;        /* workers (or the caller) inside futex wait */
	_Atomic int active;          /* a request is running: spin longer */
	struct hal_worker { struct hal_threadpool *tp; int idx; } *wk;
	/* The job, written before gen is released. */
	hal_range_fn fn;
	void *arg;
	int64_t n_items;
	int chunks;
};

static long futex(_Atomic uint32_t *w, int op, uint32_t v)
{
	return syscall(SYS_futex, (uint32_t *)w, op, v, NULL, NULL, 0);
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

/* Waits until *w != old: spin SPIN_NS, then sleep. A sleeper announces
 * itself in `sleepers` (seq_cst) and re-checks the word, so a waker that
 * bumps the word and then reads sleepers == 0 can skip the system call. */
static void wait_change(hal_threadpool *tp, _Atomic uint32_t *w, uint32_t old)
{
	uint64_t t0 = 0;
	for (unsigned i = 0;; i++) {
		if (atomic_load_explicit(w, memory_order_acquire) != old)
			return;
		cpu_relax();
		if ((i & 255) == 255) {
			uint64_t t = now_ns();
			uint64_t limit = atomic_load_explicit(&tp->active, memory_order_relaxed) ? SPIN_ACTIVE_NS : SPIN_NS;
			if (!t0)
				t0 = t;
			else if (t - t0 > limit)
				break;
		}
	}
	atomic_fetch_add(&tp->sleepers, 1);
	while (atomic_load(w) == old)
		futex(w, FUTEX_WAIT_PRIVATE, old);
	atomic_fetch_sub(&tp->sleepers, 1);
}

static void wake(hal_threadpool *tp, _Atomic uint32_t *w)
{
	if (atomic_load(&tp->sleepers) > 0)
		futex(w, FUTEX_WAKE_PRIVATE, INT32_MAX);
}

static void run_chunk(hal_threadpool *tp, int k)
{
	int64_t a = tp->n_items * k / tp->chunks, b = tp->n_items * (k + 1) / tp->chunks;
	if (a < b)
		tp->fn(tp->arg, a, b);
}

static void *worker(void *arg)
{
	struct hal_worker *w = arg;
	hal_threadpool *tp = w->tp;
	int me = w->idx;
	uint32_t seen = 0;
	for (;;) {
		wait_change(tp, &tp->gen, seen);
		/* acquire on gen (in wait_change) makes the job fields visible */
		seen = atomic_load_explicit(&tp->gen, memory_order_acquire);
		if (atomic_load_explicit(&tp->stop, memory_order_acquire))
			return NULL;
		/* Every worker checks in for every job, even with no chunk of its
		 * own, so the caller never rewrites the job while one still reads it. */
		if (me < tp->chunks)
			run_chunk(tp, me);
		/* seq_cst: our writes to the outputs happen before the caller sees 0 */
		if (atomic_fetch_sub(&tp->pending, 1) == 1)
			wake(tp, &tp->pending);
	}
}

int hal_threadpool_create(int threads, hal_threadpool **out)
{
	*out = NULL;
	if (threads < 1)
		threads = 1;
	if (threads > 256)
		return AIDOS_E_RANGE;
	hal_threadpool *tp = pool_calloc(1, sizeof *tp);
	if (!tp)
		return AIDOS_E_NOMEM;
	tp->n = threads;
	if (threads > 1) {
		tp->th = pool_calloc((size_t)threads, sizeof *tp->th);
		tp->wk = pool_calloc((size_t)threads, sizeof *tp->wk);
		if (!tp->th || !tp->wk) {
			pool_free(tp->th);
			pool_free(tp->wk);
			pool_free(tp);
			return AIDOS_E_NOMEM;
		}
		for (int i = 0; i < threads - 1; i++) {
			tp->wk[i] = (struct hal_worker){ tp, i + 1 };
			int rc = pthread_create(&tp->th[i], NULL, worker, &tp->wk[i]);
			if (rc) {
				tp->n = i + 1;
				hal_threadpool_destroy(tp);
				return -rc;
			}
		}
	}
	*out = tp;
	return 0;
}

void hal_threadpool_destroy(hal_threadpool *tp)
{
	if (!tp)
		return;
	if (tp->th) {
		atomic_store_explicit(&tp->stop, 1, memory_order_release);
		atomic_fetch_add_explicit(&tp->gen, 1, memory_order_release);
		futex(&tp->gen, FUTEX_WAKE_PRIVATE, INT32_MAX);
		for (int i = 0; i < tp->n - 1; i++)
			pthread_join(tp->th[i], NULL);
		pool_free(tp->th);
		pool_free(tp->wk);
	}
	pool_free(tp);
}

void hal_threadpool_begin(hal_threadpool *tp)
{
	if (tp)
		atomic_store_explicit(&tp->active, 1, memory_order_relaxed);
}

void hal_threadpool_end(hal_threadpool *tp)
{
	if (tp)
		atomic_store_explicit(&tp->active, 0, memory_order_relaxed);
}

int hal_threadpool_size(const hal_threadpool *tp)
{
	return tp ? tp->n : 1;
}

void hal_threadpool_run(hal_threadpool *tp, int64_t n, int64_t grain, hal_range_fn fn, void *arg)
{
	int64_t want = grain > 0 ? (n + grain - 1) / grain : n;
	int chunks = want < tp->n ? (int)want : tp->n;
	if (chunks <= 1) {
		fn(arg, 0, n);
		return;
	}
	tp->fn = fn;
	tp->arg = arg;
	tp->n_items = n;
	tp->chunks = chunks;
	atomic_store_explicit(&tp->pending, (uint32_t)(tp->n - 1), memory_order_relaxed);
	/* release: the job fields above are visible to a worker that sees gen */
	atomic_fetch_add(&tp->gen, 1);
	wake(tp, &tp->gen);
	run_chunk(tp, 0);
	uint32_t left;
	while ((left = atomic_load_explicit(&tp->pending, memory_order_acquire)) != 0)
		wait_change(tp, &tp->pending, left);
}
