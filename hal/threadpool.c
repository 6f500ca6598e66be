/*
 * hal/threadpool.c - the executor's own thread pool.
 *
 * A job is published by bumping `gen`; workers spin on it for a bounded time
 * (read from the vDSO clock, no system call) and then sleep on a futex: 50 us
 * when idle, so an idle session costs no CPU, and up to 2 ms while a request
 * runs (hal_threadpool_begin/end), so the single-threaded steps between
 * parallel kernels never put a worker to sleep and no kernel pays a wake-up
 * (about 50 us on this machine) or a system call. The idle spin counts from
 * the end of the last request (hal_threadpool_end), not from the worker's
 * last job: a request's single-threaded tail often outlasts 50 us, and a
 * worker that measured from its last job went to sleep in the few
 * microseconds between one request's end and the next one's begin, so back-
 * to-back requests paid a futex wake-up at their first parallel kernel
 * (embedding on 2 threads: 25-62 futex waits per 300 requests, 3-8 after).
 * Work is split into up to CHUNKS_PER_THREAD chunks per thread, claimed
 * through one atomic word by whoever comes first, the caller included: a
 * worker the kernel has not scheduled (a loaded machine: several processes
 * sharing the cores) holds up nothing it has not claimed. With the static
 * split used before, every parallel kernel waited for every worker to run
 * its fixed chunk, and on this machine shared by five users a 2-thread
 * PaddleOCR rec took 590 ms instead of 17. The claim word `ticket` holds the
 * job's generation, its chunk count and the next chunk, so a late worker can
 * never claim a chunk of a job other than the one it read, and it reads the
 * job's fields only after a successful claim (the job cannot be replaced
 * while one of its chunks is unfinished). Completion: `done` counts finished
 * chunks; the last one wakes the caller if it went to sleep.
 *
 * Placement: each worker is pinned at creation (pthread attribute, so no
 * system call in the worker and none per request) to one CPU of the
 * creating thread's affinity mask (sched_getaffinity: taskset, cgroup
 * cpusets), avoiding the creator's current CPU while the mask has a CPU per
 * worker besides it. Unpinned, a worker that slept through a pause (20 ms
 * between bench/gemm's samples, an idle agent) was woken by the kernel onto
 * the waker's CPU (wake-affine) and queued behind the caller spinning there:
 * bench/gemm on two threads ran 256^3 at 12-13 GFLOP/s, pinned 42-50. The
 * CPU is taken from a process-wide rotation, so the pools of one process
 * (aidos-node: one per session) spread over the mask instead of all landing
 * on its first CPUs.
 * AIDOS_POOL_PIN=0 in the environment, or hal_threadpool_create_pinned(.., 0,
 * ..), leaves placement to the kernel.
 * The caller is not pinned (it is the application's thread), so on a loaded
 * machine it can land on a worker's CPU, queued behind that worker's spin
 * for a whole time slice: MobileNetV2 on 2 threads beside two compilers ran
 * at a median of 28-35 ms. A spinner that finds another thread of the pool
 * on its own CPU therefore yields it (wait_change): 16-20 ms in the same
 * conditions. A pinned worker that finds the caller on its CPU first moves
 * itself to a CPU of the creator's mask where no thread of the pool was last
 * seen (one sched_setaffinity, at most once per MOVE_GAP_NS per worker): on
 * a quiet machine the caller, woken from a pause on the worker's CPU (where
 * another thread of the process had pushed it), stayed there through whole
 * requests while the other CPU idled, because yielding a CPU does not
 * migrate anyone. bench/gemm on 2 threads, 256^3, caller on the worker's
 * CPU: 58-60 GFLOP/s with yields, 99-115 with the caller elsewhere.
 * On a quiet machine the threads sit on distinct CPUs and no spinner ever
 * yields or moves (no system call).
 */
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "hal/plan.h"
#include "hal/spin.h"

#define SPIN_NS 50000          /* idle: spin this long, then sleep */
#define CHUNKS_PER_THREAD 4    /* load balance against the cost of a claim */
#define MOVE_GAP_NS 10000000   /* a worker moves off the caller's CPU at most this often */
#define SPIN_ACTIVE_NS 2000000 /* inside a request: gaps between parallel kernels
                                  (single-threaded steps) stay under this, so
                                  workers never sleep mid-request */

struct hal_threadpool {
	int n;                       /* threads including the caller */
	pthread_t *th;
	_Atomic uint32_t gen;        /* job generation: futex word for workers */
	_Atomic uint64_t ticket;     /* gen << 32 | chunks << 16 | next chunk to claim */
	_Atomic uint32_t done;       /* chunks finished: futex word for the caller */
	_Atomic int stop;
	_Atomic int sleepers;        /* workers (or the caller) inside futex wait */
	_Atomic int active;          /* a request is running: spin longer */
	_Atomic uint64_t idle_since; /* mono_ns() at the last hal_threadpool_end */
	_Atomic uint64_t spin_ns;    /* idle spin (SPIN_NS unless a test sets it) */
	_Atomic uint64_t spin_active_ns;
	_Atomic uint64_t sleeps;     /* futex waits so far (workers and caller) */
	_Atomic uint64_t yields;     /* sched_yield()s of a waiter sharing a CPU */
	_Atomic uint64_t moves;      /* workers re-pinned off the caller's CPU */
	cpu_set_t mask;              /* the creator's affinity mask (pinned pools) */
	_Atomic int *cur;            /* [n] each thread's CPU as last seen (0: the
	                                caller), -1 while asleep */
	struct hal_worker {
		struct hal_threadpool *tp;
		int idx;
		_Atomic int cpu;     /* -1: unpinned */
		uint64_t moved_ns;   /* mono_ns() of its last move (its own thread only) */
	} *wk;
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

/* Whether another thread of the pool was last seen on CPU c. */
static int cpu_shared(hal_threadpool *tp, int self, int c)
{
	for (int j = 0; j < tp->n; j++)
		if (j != self && atomic_load_explicit(&tp->cur[j], memory_order_relaxed) == c)
			return 1;
	return 0;
}

/* Worker `self`, pinned, found the caller on its CPU c: re-pins itself to a
 * CPU of the creator's mask on which no thread of the pool was last seen
 * and no other worker is pinned. Returns 1 when it moved. */
static int move_off(hal_threadpool *tp, int self, int c)
{
	struct hal_worker *w = &tp->wk[self - 1];
	if (atomic_load_explicit(&w->cpu, memory_order_relaxed) < 0 ||
	    atomic_load_explicit(&tp->cur[0], memory_order_relaxed) != c)
		return 0;
	uint64_t t = mono_ns();
	if (w->moved_ns && t - w->moved_ns < MOVE_GAP_NS)
		return 0;
	for (int d = 0; d < CPU_SETSIZE; d++) {
		if (d == c || !CPU_ISSET(d, &tp->mask) || cpu_shared(tp, self, d))
			continue;
		int taken = 0;
		for (int k = 0; k < tp->n - 1 && !taken; k++)
			taken = k != self - 1 && atomic_load_explicit(&tp->wk[k].cpu, memory_order_relaxed) == d;
		if (taken)
			continue;
		cpu_set_t one;
		CPU_ZERO(&one);
		CPU_SET(d, &one);
		w->moved_ns = t;
		if (sched_setaffinity(0, sizeof one, &one))
			return 0;
		atomic_store_explicit(&w->cpu, d, memory_order_relaxed);
		atomic_store_explicit(&tp->cur[self], d, memory_order_relaxed);
		atomic_fetch_add_explicit(&tp->moves, 1, memory_order_relaxed);
		return 1;
	}
	w->moved_ns = t;   /* nowhere to go: try again later, not every check */
	return 0;
}

/* Thread `self` (0: the caller) waits until *w != old: spin, then sleep.
 * Inside a request (active) the spin lasts spin_active_ns from the start of
 * this wait; outside, spin_ns from the later of the wait's start and the
 * last request's end. Every few microseconds the spinner publishes its CPU
 * (sched_getcpu: rseq, no system call) and, if another thread of the pool
 * was last seen on the same CPU, yields it: the thread it waits for may be
 * queued behind it (a loaded machine; the unpinned caller moved onto a
 * worker's CPU), and spinning there would hold it off for a whole time
 * slice. A sleeper announces itself in `sleepers` (seq_cst) and re-checks
 * the word, so a waker that bumps the word and then reads sleepers == 0 can
 * skip the system call. */
static void wait_change(hal_threadpool *tp, int self, _Atomic uint32_t *w, uint32_t old)
{
	uint64_t t0 = 0;
	for (unsigned i = 0;; i++) {
		if (atomic_load_explicit(w, memory_order_acquire) != old)
			return;
		cpu_relax();
		if ((i & 255) == 255) {
			int c = sched_getcpu();
			atomic_store_explicit(&tp->cur[self], c, memory_order_relaxed);
			if (c >= 0 && cpu_shared(tp, self, c) && !(self > 0 && move_off(tp, self, c))) {
				atomic_fetch_add_explicit(&tp->yields, 1, memory_order_relaxed);
				sched_yield();
			}
			uint64_t t = mono_ns();
			if (!t0) {
				t0 = t;
			} else if (atomic_load_explicit(&tp->active, memory_order_relaxed)) {
				if (t - t0 > atomic_load_explicit(&tp->spin_active_ns, memory_order_relaxed))
					break;
			} else {
				uint64_t from = atomic_load_explicit(&tp->idle_since, memory_order_relaxed);
				if (from < t0)
					from = t0;
				if (t > from && t - from > atomic_load_explicit(&tp->spin_ns, memory_order_relaxed))
					break;
			}
		}
	}
	atomic_store_explicit(&tp->cur[self], -1, memory_order_relaxed);
	atomic_fetch_add(&tp->sleepers, 1);
	atomic_fetch_add_explicit(&tp->sleeps, 1, memory_order_relaxed);
	while (atomic_load(w) == old)
		futex(w, FUTEX_WAIT_PRIVATE, old);
	atomic_fetch_sub(&tp->sleepers, 1);
	atomic_store_explicit(&tp->cur[self], sched_getcpu(), memory_order_relaxed);
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

/* Claims and runs chunks of the current job until none is left. */
static void run_claims(hal_threadpool *tp)
{
	uint64_t t = atomic_load_explicit(&tp->ticket, memory_order_acquire);
	for (;;) {
		uint32_t chunks = (uint32_t)(t >> 16) & 0xffff, next = (uint32_t)t & 0xffff;
		if (next >= chunks)
			return;
		/* acquire: a successful claim of job g sees g's fields (written
		 * before the release that published this ticket) */
		if (!atomic_compare_exchange_weak_explicit(&tp->ticket, &t, t + 1, memory_order_acquire,
							   memory_order_acquire))
			continue;
		run_chunk(tp, (int)next);
		/* the chunk's writes happen before the caller sees the count */
		uint32_t d = atomic_fetch_add(&tp->done, 1) + 1;   /* seq_cst: before wake()'s read of sleepers */
		if (d == chunks)
			wake(tp, &tp->done);
		t = atomic_load_explicit(&tp->ticket, memory_order_acquire);
	}
}

static void *worker(void *arg)
{
	struct hal_worker *w = arg;
	hal_threadpool *tp = w->tp;
	uint32_t seen = 0;
	for (;;) {
		wait_change(tp, w->idx, &tp->gen, seen);
		seen = atomic_load_explicit(&tp->gen, memory_order_acquire);
		if (atomic_load_explicit(&tp->stop, memory_order_acquire))
			return NULL;
		run_claims(tp);
	}
}

/* Process-wide rotation over the CPUs of the creators' masks: the next
 * pool's first worker starts where the last pool's workers stopped. */
static _Atomic unsigned pin_next;

/* Whether pools pin by default: AIDOS_POOL_PIN=0 (or "off", "no") opts out.
 * Read at each pool creation (not on any request path). */
static int pin_default(void)
{
	const char *e = getenv("AIDOS_POOL_PIN");
	return !e || !(strcmp(e, "0") == 0 || strcmp(e, "off") == 0 || strcmp(e, "no") == 0);
}

/* Chooses the CPU of each of the n workers of one pool into cpu[] (-1: not
 * pinned): from the calling thread's affinity mask (set; empty when it
 * could not be read), the caller's current CPU left out when the mask has
 * n CPUs besides it, consecutive CPUs of the process-wide rotation. A mask
 * of one CPU, or an empty one, pins nothing (the workers inherit the
 * caller's mask anyway). */
static void pick_cpus(int n, const cpu_set_t *set, int *cpu)
{
	int list[CPU_SETSIZE], m = 0;
	for (int i = 0; i < n; i++)
		cpu[i] = -1;
	if (CPU_COUNT(set) < 2)
		return;
	int self = sched_getcpu();
	int skip = CPU_COUNT(set) - 1 >= n && self >= 0 && CPU_ISSET(self, set);
	for (int c = 0; c < CPU_SETSIZE; c++)
		if (CPU_ISSET(c, set) && !(skip && c == self))
			list[m++] = c;
	unsigned start = atomic_fetch_add_explicit(&pin_next, (unsigned)n, memory_order_relaxed);
	for (int i = 0; i < n; i++)
		cpu[i] = list[(start + (unsigned)i) % (unsigned)m];
}

int hal_threadpool_create(int threads, hal_threadpool **out)
{
	return hal_threadpool_create_pinned(threads, -1, out);
}

int hal_threadpool_worker_cpu(const hal_threadpool *tp, int i)
{
	return tp && tp->wk && i >= 1 && i < tp->n ? atomic_load_explicit(&tp->wk[i - 1].cpu, memory_order_relaxed) : -1;
}

int hal_threadpool_create_pinned(int threads, int pin, hal_threadpool **out)
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
	tp->spin_ns = SPIN_NS;
	tp->spin_active_ns = SPIN_ACTIVE_NS;
	if (threads > 1) {
		tp->th = pool_calloc((size_t)threads, sizeof *tp->th);
		tp->wk = pool_calloc((size_t)threads, sizeof *tp->wk);
		tp->cur = pool_calloc((size_t)threads, sizeof *tp->cur);
		if (!tp->th || !tp->wk || !tp->cur) {
			pool_free(tp->th);
			pool_free(tp->wk);
			pool_free(tp->cur);
			pool_free(tp);
			return AIDOS_E_NOMEM;
		}
		for (int i = 0; i < threads; i++)
			atomic_init(&tp->cur[i], -1);
		int cpu[256];
		if (pin < 0)
			pin = pin_default();
		/* the creator's mask: where workers are pinned, and where a
		 * pinned one may move to (move_off) */
		if (sched_getaffinity(0, sizeof tp->mask, &tp->mask))
			CPU_ZERO(&tp->mask);
		if (pin)
			pick_cpus(threads - 1, &tp->mask, cpu);
		for (int i = 0; i < threads - 1; i++) {
			tp->wk[i] = (struct hal_worker){ tp, i + 1, pin ? cpu[i] : -1, 0 };
			pthread_attr_t at;
			int rc = pthread_attr_init(&at);
			if (!rc && tp->wk[i].cpu >= 0) {
				cpu_set_t one;
				CPU_ZERO(&one);
				CPU_SET(atomic_load(&tp->wk[i].cpu), &one);
				/* applied by the new thread before it runs worker() */
				rc = pthread_attr_setaffinity_np(&at, sizeof one, &one);
			}
			if (!rc)
				rc = pthread_create(&tp->th[i], &at, worker, &tp->wk[i]);
			pthread_attr_destroy(&at);
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
		pool_free(tp->cur);
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
	if (!tp)
		return;
	/* before active drops, so no worker sees idle with an old idle_since */
	atomic_store_explicit(&tp->idle_since, mono_ns(), memory_order_relaxed);
	atomic_store_explicit(&tp->active, 0, memory_order_release);
}

void hal_threadpool_set_spin(hal_threadpool *tp, uint64_t idle_ns, uint64_t active_ns)
{
	if (!tp)
		return;
	atomic_store_explicit(&tp->spin_ns, idle_ns, memory_order_relaxed);
	atomic_store_explicit(&tp->spin_active_ns, active_ns, memory_order_relaxed);
}

uint64_t hal_threadpool_sleeps(const hal_threadpool *tp)
{
	return tp ? atomic_load_explicit(&tp->sleeps, memory_order_relaxed) : 0;
}

uint64_t hal_threadpool_yields(const hal_threadpool *tp)
{
	return tp ? atomic_load_explicit(&tp->yields, memory_order_relaxed) : 0;
}

uint64_t hal_threadpool_moves(const hal_threadpool *tp)
{
	return tp ? atomic_load_explicit(&tp->moves, memory_order_relaxed) : 0;
}

int hal_threadpool_size(const hal_threadpool *tp)
{
	return tp ? tp->n : 1;
}

void hal_threadpool_run(hal_threadpool *tp, int64_t n, int64_t grain, hal_range_fn fn, void *arg)
{
	int64_t want = grain > 0 ? (n + grain - 1) / grain : n;
	int64_t most = (int64_t)tp->n * CHUNKS_PER_THREAD;
	int chunks = (int)(want < most ? want : most);
	if (chunks <= 1 || tp->n <= 1) {
		fn(arg, 0, n);
		return;
	}
	/* No chunk of the previous job is claimed or running (we waited for
	 * done == chunks), so nobody reads these fields now. */
	tp->fn = fn;
	tp->arg = arg;
	tp->n_items = n;
	/* where the caller is now, for a worker deciding whether to yield */
	atomic_store_explicit(&tp->cur[0], sched_getcpu(), memory_order_relaxed);
	tp->chunks = chunks;
	atomic_store_explicit(&tp->done, 0, memory_order_relaxed);
	uint32_t g = atomic_load_explicit(&tp->gen, memory_order_relaxed) + 1;
	/* release: the fields above are visible to whoever claims from this ticket */
	atomic_store_explicit(&tp->ticket, (uint64_t)g << 32 | (uint64_t)chunks << 16, memory_order_release);
	atomic_store(&tp->gen, g);   /* seq_cst: before wake()'s read of sleepers */
	wake(tp, &tp->gen);
	run_claims(tp);
	uint32_t d;
	while ((d = atomic_load_explicit(&tp->done, memory_order_acquire)) != (uint32_t)chunks)
		wait_change(tp, 0, &tp->done, d);
}
