/*
 * tests/test_threadpool.c - hal/threadpool.c: every item of every job runs
 * exactly once, ranges are disjoint and cover [0, n), whatever the thread
 * count, grain and job size, including jobs published back to back (a late
 * worker must never claim a chunk of a job it did not read) and more
 * threads than this machine has cores (workers often descheduled).
 */
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(pool_covers_every_item),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
