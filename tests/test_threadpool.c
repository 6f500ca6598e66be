/*
 * tests/test_threadpool.c - hal/threadpool.c: every item of every job runs
 * exactly once, ranges are disjoint and cover [0, n), whatever the thread
 * count, grain and job size, including jobs published back to back (a late
 * worker must never claim a chunk of a job it did not read) and more
 * threads than this machine has cores (workers often descheduled).
 * Placement: pinned workers run on distinct CPUs of the creator's mask (its
 * current CPU avoided), as their own affinity says from inside a job;
 * AIDOS_POOL_PIN=0 and pin 0 leave them the whole mask; consecutive pools
 * rotate over the mask; a 1-CPU mask pins nothing and still runs jobs.
 * Spinning: after a request ends, a worker keeps spinning for the idle
 * limit counted from that end (a request that follows soon finds it awake,
 * however long the last one's single-threaded tail was), and then sleeps.
 * A pinned worker that finds the caller on its CPU moves to another CPU of
 * the mask (the caller pinned onto the worker's CPU: the worker's CPU
 * changes, the pool counts the move, jobs complete); a waiter that cannot
 * move (unpinned threads confined to one CPU) yields it (jobs complete, the
 * pool counts the yields).
 */
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "hal/plan.h"

struct job {
	_Atomic uint32_t *hits;   /* [n] */
	int64_t n;
	_Atomic int64_t calls;
	_Atomic int bad;          /* a range out of [0, n): checked by the caller */
};

static void count_range(void *arg, int64_t i0, int64_t i1)
{
	struct job *j = arg;
	if (!(0 <= i0 && i0 < i1 && i1 <= j->n)) {   /* no cmocka asserts off the main thread */
		atomic_store(&j->bad, 1);
		return;
	}
	for (int64_t i = i0; i < i1; i++)
		atomic_fetch_add_explicit(&j->hits[i], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&j->calls, 1, memory_order_relaxed);
}

static void pool_covers_every_item(void **state)
{
	(void)state;
	static const int threads[] = { 1, 2, 3, 8 };
	static const int64_t sizes[] = { 1, 2, 3, 7, 8, 9, 31, 64, 1000, 4097 };
	static const int64_t grains[] = { 1, 3, 16, 5000 };
	_Atomic uint32_t *hits = calloc(4097, sizeof *hits);
	assert_non_null(hits);
	for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++) {
		hal_threadpool *tp = NULL;
		assert_int_equal(hal_threadpool_create(threads[t], &tp), 0);
		assert_int_equal(hal_threadpool_size(tp), threads[t]);
		hal_threadpool_begin(tp);
		for (int rep = 0; rep < 50; rep++)
			for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++)
				for (size_t gi = 0; gi < sizeof grains / sizeof grains[0]; gi++) {
					int64_t n = sizes[si];
					struct job j = { hits, n, 0, 0 };
					for (int64_t i = 0; i < n; i++)
						atomic_store(&hits[i], 0);
					hal_threadpool_run(tp, n, grains[gi], count_range, &j);
					for (int64_t i = 0; i < n; i++)
						if (atomic_load(&hits[i]) != 1)
							fail_msg("threads %d n %lld grain %lld: item %lld ran %u times",
								 threads[t], (long long)n, (long long)grains[gi],
								 (long long)i, (unsigned)atomic_load(&hits[i]));
					assert_int_equal(atomic_load(&j.bad), 0);
					int64_t most = (n + grains[gi] - 1) / grains[gi];
					assert_true(atomic_load(&j.calls) >= 1 && atomic_load(&j.calls) <= most);
				}
		hal_threadpool_end(tp);
		hal_threadpool_destroy(tp);
	}
	free(hits);
}

/* ---- spinning ---- */

/* Two chunks that each wait for the other: the caller and the worker both
 * run one, so the worker is awake and back in its wait afterwards. */
struct meet { _Atomic int entered, timed_out; };

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) != 0)
		;
}

static void meet_range(void *arg, int64_t i0, int64_t i1)
{
	struct meet *m = arg;
	(void)i0, (void)i1;
	atomic_fetch_add(&m->entered, 1);
	for (long i = 0; atomic_load(&m->entered) < 2; i++)
		if (i > 5000) {          /* 5 s: a starved worker; reported, not hung */
			atomic_store(&m->timed_out, 1);
			return;
		} else {
			sleep_ms(1);
		}
}

static void idle_spin_counts_from_request_end(void **state)
{
	(void)state;
	hal_threadpool *tp = NULL;
	assert_int_equal(hal_threadpool_create(2, &tp), 0);
	/* Limits far above any scheduling hiccup, so only the rule decides. */
	hal_threadpool_set_spin(tp, 300 * 1000000ull, 20000 * 1000000ull);
	hal_threadpool_begin(tp);
	struct meet m = { 0, 0 };
	hal_threadpool_run(tp, 2, 1, meet_range, &m);
	assert_int_equal(atomic_load(&m.timed_out), 0);
	uint64_t s0 = hal_threadpool_sleeps(tp);
	sleep_ms(400);             /* a single-threaded tail longer than the idle limit */
	hal_threadpool_end(tp);
	sleep_ms(30);              /* the next request comes 30 ms after: worker still spinning */
	assert_int_equal(hal_threadpool_sleeps(tp), s0);
	hal_threadpool_begin(tp);
	struct meet m2 = { 0, 0 };
	hal_threadpool_run(tp, 2, 1, meet_range, &m2);
	assert_int_equal(atomic_load(&m2.timed_out), 0);
	hal_threadpool_end(tp);
	/* idle past the limit: the spin is bounded, the worker sleeps (polled
	 * for up to 10 s: on a loaded machine a starved worker checks late) */
	for (int i = 0; i < 200 && hal_threadpool_sleeps(tp) == s0; i++)
		sleep_ms(50);
	assert_true(hal_threadpool_sleeps(tp) > s0);
	struct meet m3 = { 0, 0 };   /* and a sleeping worker is woken by the next job */
	hal_threadpool_run(tp, 2, 1, meet_range, &m3);
	assert_int_equal(atomic_load(&m3.timed_out), 0);
	hal_threadpool_destroy(tp);
}

/* count_range with a few microseconds of work per item, so that jobs
 * outlast scheduling slices and both threads get the shared CPU. */
static void slow_count_range(void *arg, int64_t i0, int64_t i1)
{
	for (int64_t i = i0; i < i1; i++) {
		volatile uint32_t x = 0;
		for (int k = 0; k < 4000; k++)
			x += (uint32_t)k;
		count_range(arg, i, i + 1);
	}
}

/* 300 jobs of 64 slow items, each item run exactly once. */
static void run_slow_jobs(hal_threadpool *tp)
{
	_Atomic uint32_t hits[64];
	hal_threadpool_begin(tp);
	for (int rep = 0; rep < 300; rep++) {
		struct job j = { hits, 64, 0, 0 };
		for (int i = 0; i < 64; i++)
			atomic_store(&hits[i], 0);
		hal_threadpool_run(tp, 64, 1, slow_count_range, &j);
		for (int i = 0; i < 64; i++)
			assert_int_equal(atomic_load(&hits[i]), 1);
		assert_int_equal(atomic_load(&j.bad), 0);
	}
	hal_threadpool_end(tp);
}

static void worker_moves_off_the_callers_cpu(void **state)
{
	(void)state;
	cpu_set_t old;
	assert_int_equal(pthread_getaffinity_np(pthread_self(), sizeof old, &old), 0);
	if (CPU_COUNT(&old) < 2)
		skip();                  /* a 1-CPU mask pins nothing */
	hal_threadpool *tp = NULL;
	assert_int_equal(hal_threadpool_create_pinned(2, 1, &tp), 0);
	int wc = hal_threadpool_worker_cpu(tp, 1);
	assert_true(wc >= 0);
	cpu_set_t one;
	CPU_ZERO(&one);
	CPU_SET(wc, &one);
	assert_int_equal(pthread_setaffinity_np(pthread_self(), sizeof one, &one), 0);
	run_slow_jobs(tp);
	uint64_t moves = hal_threadpool_moves(tp);
	int now = hal_threadpool_worker_cpu(tp, 1);
	assert_int_equal(pthread_setaffinity_np(pthread_self(), sizeof old, &old), 0);
	hal_threadpool_destroy(tp);
	assert_true(moves > 0);
	assert_true(now >= 0 && now != wc && CPU_ISSET(now, &old));
}

static void waiter_yields_a_shared_cpu(void **state)
{
	(void)state;
	cpu_set_t old;
	assert_int_equal(pthread_getaffinity_np(pthread_self(), sizeof old, &old), 0);
	/* an unpinned pool created on one CPU: its worker inherits that mask,
	 * so both threads share the CPU and nobody can move */
	cpu_set_t one;
	CPU_ZERO(&one);
	CPU_SET(sched_getcpu(), &one);
	assert_int_equal(pthread_setaffinity_np(pthread_self(), sizeof one, &one), 0);
	hal_threadpool *tp = NULL;
	assert_int_equal(hal_threadpool_create_pinned(2, 0, &tp), 0);
	run_slow_jobs(tp);
	uint64_t y = hal_threadpool_yields(tp), moves = hal_threadpool_moves(tp);
	hal_threadpool_destroy(tp);
	assert_int_equal(pthread_setaffinity_np(pthread_self(), sizeof old, &old), 0);
	assert_true(y > 0);
	assert_int_equal(moves, 0);
}

/* ---- placement ---- */

#define MAXT 64

/* A job of one chunk per thread in which every chunk waits until all
 * threads have entered one (so each thread runs exactly one: the caller
 * and every worker), recording each thread's own affinity mask. */
struct seen {
	int threads;
	_Atomic int entered, timed_out;
	pthread_t caller;
	cpu_set_t mask[MAXT];    /* [entered order] */
	int is_worker[MAXT];
};

static void record_affinity(void *arg, int64_t i0, int64_t i1)
{
	struct seen *s = arg;
	(void)i1;
	(void)i0;
	int k = atomic_fetch_add(&s->entered, 1);
	if (k < MAXT) {
		CPU_ZERO(&s->mask[k]);
		pthread_getaffinity_np(pthread_self(), sizeof s->mask[k], &s->mask[k]);
		s->is_worker[k] = !pthread_equal(pthread_self(), s->caller);
	}
	/* a liveness bound, not a timing check: a descheduled worker is
	 * waited for up to about 20 s (1e9 pauses) before the test gives up */
	for (long spin = 0; atomic_load(&s->entered) < s->threads; spin++)
		if (spin > 1000000000L) {
			atomic_store(&s->timed_out, 1);
			break;
		}
}

/* Runs the recording job on tp; fills s. */
static void run_seen(hal_threadpool *tp, struct seen *s)
{
	memset(s, 0, sizeof *s);
	s->threads = hal_threadpool_size(tp);
	s->caller = pthread_self();
	assert_true(s->threads <= MAXT);
	hal_threadpool_begin(tp);
	hal_threadpool_run(tp, s->threads, 1, record_affinity, s);
	hal_threadpool_end(tp);
	assert_int_equal(atomic_load(&s->timed_out), 0);
	assert_int_equal(atomic_load(&s->entered), s->threads);
}

static int only_cpu(const cpu_set_t *m)
{
	if (CPU_COUNT(m) != 1)
		return -1;
	for (int c = 0; c < CPU_SETSIZE; c++)
		if (CPU_ISSET(c, m))
			return c;
	return -1;
}

static void pinned_workers_distinct_cpus(void **state)
{
	(void)state;
	cpu_set_t all;
	assert_int_equal(sched_getaffinity(0, sizeof all, &all), 0);
	int ncpu = CPU_COUNT(&all);
	if (ncpu < 2)
		skip();
	int threads = ncpu < 8 ? ncpu : 8;   /* threads - 1 workers: one CPU each besides the caller's */
	for (int tries = 0;; tries++) {
		int before = sched_getcpu();
		hal_threadpool *tp = NULL;
		assert_int_equal(hal_threadpool_create_pinned(threads, 1, &tp), 0);
		int after = sched_getcpu();
		struct seen s;
		run_seen(tp, &s);
		cpu_set_t used;
		CPU_ZERO(&used);
		for (int k = 0; k < threads; k++) {
			if (!s.is_worker[k])
				continue;
			int c = only_cpu(&s.mask[k]);
			if (c < 0)
				fail_msg("a pinned worker's mask has %d CPUs", CPU_COUNT(&s.mask[k]));
			assert_true(CPU_ISSET(c, &all));
			assert_false(CPU_ISSET(c, &used));   /* distinct */
			CPU_SET(c, &used);
		}
		assert_int_equal(CPU_COUNT(&used), threads - 1);
		/* a worker that found the caller on its CPU may have moved since
		 * it recorded its mask (hal_threadpool_moves) */
		for (int i = 1; i < threads; i++)
			assert_true(CPU_ISSET(hal_threadpool_worker_cpu(tp, i), &used) ||
				    (hal_threadpool_moves(tp) > 0 && CPU_ISSET(hal_threadpool_worker_cpu(tp, i), &all)));
		assert_int_equal(hal_threadpool_worker_cpu(tp, 0), -1);
		assert_int_equal(hal_threadpool_worker_cpu(tp, threads), -1);
		hal_threadpool_destroy(tp);
		/* the caller's CPU is avoided (known only if it did not move
		 * during the creation) */
		if (before == after) {
			assert_false(CPU_ISSET(before, &used));
			break;
		}
		assert_true(tries < 100);
	}
}

static void pin_opt_out(void **state)
{
	(void)state;
	cpu_set_t all;
	assert_int_equal(sched_getaffinity(0, sizeof all, &all), 0);
	for (int how = 0; how < 3; how++) {
		hal_threadpool *tp = NULL;
		if (how == 0) {
			assert_int_equal(hal_threadpool_create_pinned(3, 0, &tp), 0);
		} else {
			setenv("AIDOS_POOL_PIN", how == 1 ? "0" : "off", 1);
			assert_int_equal(hal_threadpool_create(3, &tp), 0);
			unsetenv("AIDOS_POOL_PIN");
		}
		struct seen s;
		run_seen(tp, &s);
		for (int k = 0; k < 3; k++)
			assert_true(CPU_EQUAL(&s.mask[k], &all));   /* the whole mask, workers too */
		for (int i = 1; i < 3; i++)
			assert_int_equal(hal_threadpool_worker_cpu(tp, i), -1);
		hal_threadpool_destroy(tp);
	}
	/* and the default pins (where there is more than one CPU) */
	if (CPU_COUNT(&all) >= 2) {
		hal_threadpool *tp = NULL;
		assert_int_equal(hal_threadpool_create(2, &tp), 0);
		assert_true(hal_threadpool_worker_cpu(tp, 1) >= 0);
		hal_threadpool_destroy(tp);
	}
}

/* Restricts the calling thread to the first `want` CPUs of its mask;
 * returns how many it got, the old mask in *old. */
static int restrict_mask(int want, cpu_set_t *old)
{
	cpu_set_t m;
	assert_int_equal(sched_getaffinity(0, sizeof *old, old), 0);
	CPU_ZERO(&m);
	int n = 0;
	for (int c = 0; c < CPU_SETSIZE && n < want; c++)
		if (CPU_ISSET(c, old)) {
			CPU_SET(c, &m);
			n++;
		}
	assert_int_equal(sched_setaffinity(0, sizeof m, &m), 0);
	return n;
}

/* M pools of M+1 workers over an M-CPU mask (M+1 > M-1: the caller's CPU
 * is not avoided): continuing one rotation, each CPU gets M+1 workers in
 * all; every pool starting at the mask's first CPU would give it 2M. The
 * workers also stay inside the restricted mask. */
static void pools_rotate(void **state)
{
	(void)state;
	cpu_set_t old, mask;
	int m = restrict_mask(4, &old);
	if (m < 2) {
		assert_int_equal(sched_setaffinity(0, sizeof old, &old), 0);
		skip();
	}
	assert_int_equal(sched_getaffinity(0, sizeof mask, &mask), 0);
	hal_threadpool *tp[4] = { NULL };
	int count[CPU_SETSIZE] = { 0 };
	for (int p = 0; p < m; p++) {
		assert_int_equal(hal_threadpool_create_pinned(m + 2, 1, &tp[p]), 0);
		for (int i = 1; i < m + 2; i++) {
			int c = hal_threadpool_worker_cpu(tp[p], i);
			assert_true(c >= 0 && CPU_ISSET(c, &mask));
			count[c]++;
		}
	}
	for (int p = 0; p < m; p++)
		hal_threadpool_destroy(tp[p]);
	assert_int_equal(sched_setaffinity(0, sizeof old, &old), 0);
	for (int c = 0; c < CPU_SETSIZE; c++)
		if (CPU_ISSET(c, &mask))
			assert_int_equal(count[c], m + 1);
}

static void one_cpu_mask(void **state)
{
	(void)state;
	cpu_set_t old;
	assert_int_equal(restrict_mask(1, &old), 1);
	hal_threadpool *tp = NULL;
	assert_int_equal(hal_threadpool_create_pinned(3, 1, &tp), 0);
	for (int i = 1; i < 3; i++)
		assert_int_equal(hal_threadpool_worker_cpu(tp, i), -1);
	struct seen s;
	run_seen(tp, &s);   /* three threads take turns on one CPU */
	_Atomic uint32_t hits[100] = { 0 };
	struct job j = { hits, 100, 0, 0 };
	hal_threadpool_run(tp, 100, 1, count_range, &j);
	for (int i = 0; i < 100; i++)
		assert_int_equal(atomic_load(&hits[i]), 1);
	hal_threadpool_destroy(tp);
	assert_int_equal(sched_setaffinity(0, sizeof old, &old), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(pool_covers_every_item),
		cmocka_unit_test(idle_spin_counts_from_request_end),
		cmocka_unit_test(worker_moves_off_the_callers_cpu),
		cmocka_unit_test(waiter_yields_a_shared_cpu),
		cmocka_unit_test(pinned_workers_distinct_cpus),
		cmocka_unit_test(pin_opt_out),
		cmocka_unit_test(pools_rotate),
		cmocka_unit_test(one_cpu_mask),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
