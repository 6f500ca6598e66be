/*
 * tests/test_dispatch.c - the node's dispatch policy (sched/dispatch.c) in
 * simulation: strict priority order under load, earliest deadline first
 * within a priority, the priority x 1/latency_est score and arrival order
 * as tie-breaks, admission that refuses a deadline it cannot meet or a full
 * queue (with the figures in the message), picking past busy agents,
 * grouping an agent's queued requests, the worker kept for the top
 * priority class, and the EWMA latency estimate.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "aidos/aidos.h"
#include "sched/dispatch.h"

#define MS 1000000ull

static disp_req R(int prio, uint64_t deadline, uint64_t est, uint32_t agent)
{
	disp_req r = { .priority = prio, .deadline_ns = deadline, .est_ns = est, .agent = agent };
	return r;
}

/* Pops everything in dispatch order into order[] (agent ids). */
static int drain(disp_queue *q, uint32_t *order)
{
	int k = 0;
	while (q->n)
		order[k++] = disp_take(q, disp_pick(q, NULL, NULL))->agent;
	return k;
}

static void test_priority_under_load(void **st)
{
	enum { N = 600 };
	disp_req *slots[N], reqs[N];
	disp_queue q;
	uint32_t order[N];
	disp_queue_init(&q, slots, N);
	srand(7);
	/* A saturating stream of low-priority requests with 1 in 20 high. */
	int nh = 0;
	for (int i = 0; i < N; i++) {
		int hi = i % 20 == 7;
		nh += hi;
		reqs[i] = R(hi ? 10 : 1, 0, (uint64_t)(1 + rand() % 5) * MS, hi ? 1000u + (uint32_t)i : (uint32_t)i);
		assert_int_equal(disp_insert(&q, &reqs[i]), 0);
	}
	assert_int_equal(drain(&q, order), N);
	for (int i = 0; i < N; i++)
		assert_true((i < nh) == (order[i] >= 1000));   /* every high one first */
	/* Highs among themselves: same priority, no deadline: shorter
	 * estimate first, then arrival. */
	for (int i = 1; i < nh; i++) {
		const disp_req *a = &reqs[order[i - 1] - 1000], *b = &reqs[order[i] - 1000];
		assert_true(a->est_ns < b->est_ns || (a->est_ns == b->est_ns && a->seq < b->seq));
	}
	assert_int_equal(q.work_ns, 0);
}

static void test_edf_within_priority(void **st)
{
	disp_req *slots[8];
	disp_queue q;
	uint32_t order[8];
	disp_req r[] = { R(5, 0, 1 * MS, 0), R(5, 30 * MS, 9 * MS, 1), R(5, 10 * MS, 9 * MS, 2),
			 R(5, 20 * MS, 1 * MS, 3), R(9, 0, 50 * MS, 4), R(1, 1 * MS, 1 * MS, 5) };
	disp_queue_init(&q, slots, 8);
	for (int i = 0; i < 6; i++)
		assert_int_equal(disp_insert(&q, &r[i]), 0);
	drain(&q, order);
	/* priority 9 first; then in class 5 deadlines 10, 20, 30, none; then
	 * priority 1 even with the earliest deadline. */
	uint32_t want[] = { 4, 2, 3, 1, 0, 5 };
	assert_memory_equal(order, want, sizeof want);
}

static void test_score_and_fifo(void **st)
{
	disp_req *slots[8];
	disp_queue q;
	uint32_t order[8];
	disp_req r[] = { R(3, 0, 5 * MS, 0), R(3, 0, 1 * MS, 1), R(3, 0, 5 * MS, 2), R(3, 0, 0, 3) };
	disp_queue_init(&q, slots, 8);
	for (int i = 0; i < 4; i++)
		disp_insert(&q, &r[i]);
	drain(&q, order);
	/* unknown estimate first (to measure it), then 1 ms, then the two 5 ms
	 * in arrival order */
	uint32_t want[] = { 3, 1, 0, 2 };
	assert_memory_equal(order, want, sizeof want);
	assert_true(disp_score(4, 1 * MS) > disp_score(4, 2 * MS));
	assert_true(disp_score(8, 2 * MS) == disp_score(4, 1 * MS));
	assert_true(disp_score(1, 0) > 0);
}

static void test_admission(void **st)
{
	disp_req *slots[4];
	disp_queue q;
	char err[200];
	uint64_t now = 1000 * MS;
	/* Queued: two priority-1 10 ms requests due at +20 ms, one priority-5
	 * 4 ms request due at +3 ms. */
	disp_req busy[] = { R(1, now + 20 * MS, 10 * MS, 0), R(1, now + 20 * MS, 10 * MS, 1),
			    R(5, now + 3 * MS, 4 * MS, 2) };
	disp_queue_init(&q, slots, 4);
	for (int i = 0; i < 3; i++)
		disp_insert(&q, &busy[i]);
	/* Priority 5, 2 ms, due later than the queued priority-5 one: ahead of
	 * it that 4 ms and 2 ms running, over 1 worker: done at +8 ms. */
	disp_req r = R(5, now + 8 * MS, 2 * MS, 9);
	assert_int_equal(disp_admit(&q, &r, now, 2 * MS, 1, err, sizeof err), 0);
	r.deadline_ns = now + 8 * MS - 1;
	assert_int_equal(disp_admit(&q, &r, now, 2 * MS, 1, err, sizeof err), AIDOS_E_DEADLINE);
	assert_non_null(strstr(err, "cannot be met"));
	/* Two workers halve the wait: (4 + 2) / 2 + 2 = 5 ms. */
	r.deadline_ns = now + 5 * MS;
	assert_int_equal(disp_admit(&q, &r, now, 2 * MS, 2, err, sizeof err), 0);
	/* Priority 1 waits behind everything: 24 + 2 running + 2 = 28 ms. */
	r = R(1, now + 27 * MS, 2 * MS, 9);
	assert_int_equal(disp_admit(&q, &r, now, 2 * MS, 1, err, sizeof err), AIDOS_E_DEADLINE);
	r.deadline_ns = now + 28 * MS;
	assert_int_equal(disp_admit(&q, &r, now, 2 * MS, 1, err, sizeof err), 0);
	/* A deadline in the past. */
	r.deadline_ns = now - MS;
	assert_int_equal(disp_admit(&q, &r, now, 0, 1, err, sizeof err), AIDOS_E_DEADLINE);
	assert_non_null(strstr(err, "already passed"));
	/* No deadline: admitted while there is room; a full queue refuses. */
	r.deadline_ns = 0;
	assert_int_equal(disp_admit(&q, &r, now, 0, 1, err, sizeof err), 0);
	assert_int_equal(disp_insert(&q, &r), 0);
	disp_req s = R(9, 0, 0, 10);
	assert_int_equal(disp_admit(&q, &s, now, 0, 1, err, sizeof err), AIDOS_E_BUSY);
	assert_non_null(strstr(err, "full"));
	assert_int_equal(disp_insert(&q, &s), AIDOS_E_BUSY);
	assert_int_equal(q.n, 4);
}

static int busy_agent(const disp_req *r, void *ctx)
{
	return r->agent == *(uint32_t *)ctx;
}

static void test_pick_and_group(void **st)
{
	disp_req *slots[16], *g[16];
	disp_queue q;
	/* agent 7 has requests at three priorities, interleaved with others */
	disp_req r[] = { R(9, 0, MS, 7), R(8, 0, MS, 1), R(5, 0, MS, 7), R(5, 0, 2 * MS, 2),
			 R(1, 0, MS, 7), R(1, 0, MS, 3) };
	disp_queue_init(&q, slots, 16);
	for (int i = 0; i < 6; i++)
		disp_insert(&q, &r[i]);
	uint32_t busy = 7;
	/* 7 is running: the first runnable is agent 1's. */
	int i = disp_pick(&q, busy_agent, &busy);
	assert_int_equal(q.q[i]->agent, 1);
	busy = 99;
	i = disp_pick(&q, busy_agent, &busy);
	assert_int_equal(i, 0);
	/* Agent 1's request (priority 8) sits between agent 7's 9 and 5: the
	 * group is the 9 alone, the order is kept. */
	int k = disp_group(&q, i, g, 16, busy_agent, &busy);
	assert_int_equal(k, 1);
	assert_ptr_equal(g[0], &r[0]);
	disp_insert(&q, &r[0]);
	/* With agent 1 busy (it could not run now) the group is 7's 9 and 5,
	 * then 2's (priority 5, 2 ms) stops it; capped by max too. */
	busy = 1;
	i = disp_pick(&q, busy_agent, &busy);
	assert_int_equal(i, 0);
	k = disp_group(&q, i, g, 16, busy_agent, &busy);
	assert_int_equal(k, 2);
	assert_ptr_equal(g[0], &r[0]);
	assert_ptr_equal(g[1], &r[2]);
	assert_int_equal(q.n, 4);
	k = disp_group(&q, disp_pick(&q, NULL, NULL), g, 16, NULL, NULL);   /* agent 1: alone */
	assert_int_equal(k, 1);
	assert_int_equal(g[0]->agent, 1);
	assert_int_equal(disp_remove(&q, &r[4]), 1);
	assert_int_equal(disp_remove(&q, &r[4]), 0);
	assert_int_equal(q.n, 2);
	assert_int_equal(q.work_ns, 3 * MS);
}

static void test_reserve(void **st)
{
	/* 2 workers, 1 kept for the top class (10) */
	assert_true(disp_may_start(1, 10, 0, 2, 1));    /* nothing runs: a low one may start */
	assert_false(disp_may_start(1, 10, 1, 2, 1));   /* one runs: the last worker is kept */
	assert_true(disp_may_start(10, 10, 1, 2, 1));   /* ... for the top class */
	assert_true(disp_may_start(12, 10, 1, 2, 1));
	assert_true(disp_may_start(1, 10, 0, 1, 0));    /* one worker: no reserve */
	assert_false(disp_may_start(1, 10, 3, 4, 1));
	assert_true(disp_may_start(1, 10, 2, 4, 1));
}

static void test_estimate(void **st)
{
	uint64_t e = disp_est_update(0, 800);
	assert_int_equal(e, 800);
	e = disp_est_update(e, 1600);
	assert_int_equal(e, 900);
	for (int i = 0; i < 200; i++)
		e = disp_est_update(e, 100);
	assert_true(e >= 100 && e < 110);   /* converges on a new level */
	assert_int_equal(disp_est_update(0, 0), 1);
	assert_true(disp_est_update(5, 0) >= 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_priority_under_load),
		cmocka_unit_test(test_edf_within_priority),
		cmocka_unit_test(test_score_and_fifo),
		cmocka_unit_test(test_admission),
		cmocka_unit_test(test_pick_and_group),
		cmocka_unit_test(test_reserve),
		cmocka_unit_test(test_estimate),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
