/*
 * tests/test_sched.c - the placement policy (sched/place.c): a node must be
 * ready and fit the agent's memory and device; a pin overrides load but
 * not fit; an excluded node is never chosen; among the rest the least loaded
 * wins (queue length, then agents, then free memory, then name); and when
 * nothing fits, the reason names the constraint that ruled every node out.
 * Then the AI-aware terms: each one, alone, changes the choice the way
 * sched/sched.h says (latency per device, GPU first, priority classes,
 * backlog, context locality, pool pressure, spread), scores are reported
 * for explain, the choice does not depend on node order, the rebalancing
 * hysteresis, and the simulator in quick mode (aidos beats least_loaded).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "sched/sched.h"
#include "sched/sim.h"
#include "aidos/aidos.h"
#include <stdio.h>
#include <time.h>

#define GiB (1ull << 30)

static sched_node N(const char *name, int ready, int gpu, uint64_t mem, uint32_t q, uint32_t agents)
{
	sched_node n = { .name = name, .ready = ready, .has_gpu = gpu, .mem_free = mem, .queue_len = q,
			 .n_agents = agents };
	return n;
}

static sched_agent A(uint64_t mem)
{
	sched_agent a = { .name = "a", .mem_bytes = mem };
	return a;
}

static void test_fits_memory(void **state)
{
	sched_node nodes[] = { N("n1", 1, 0, 1 * GiB, 0, 0), N("n2", 1, 0, 8 * GiB, 5, 9) };
	sched_agent a = A(2 * GiB);
	char why[256] = "";
	/* n1 is idler but too small: n2 despite its load. */
	assert_int_equal(sched_place(nodes, 2, &a, why, sizeof why), 1);
	a.mem_bytes = 8 * GiB;  /* exactly fits */
	assert_int_equal(sched_place(nodes, 2, &a, why, sizeof why), 1);
	a.mem_bytes = 8 * GiB + 1;
	assert_int_equal(sched_place(nodes, 2, &a, why, sizeof why), -1);
	assert_non_null(strstr(why, "bytes free"));
	assert_non_null(strstr(why, "8589934593"));
}

static void test_device(void **state)
{
	sched_node nodes[] = { N("cpu0", 1, 0, 64 * GiB, 0, 0), N("gpu0", 1, 1, 8 * GiB, 3, 3) };
	sched_agent a = A(GiB);
	char why[256] = "";
	a.needs_gpu = 1;
	assert_int_equal(sched_place(nodes, 2, &a, why, sizeof why), 1);
	a.needs_gpu = 0;   /* a CPU agent goes where load is least, GPU or not */
	assert_int_equal(sched_place(nodes, 2, &a, why, sizeof why), 0);
	nodes[1].has_gpu = 0;
	a.needs_gpu = 1;
	assert_int_equal(sched_place(nodes, 2, &a, why, sizeof why), -1);
	assert_string_equal(why, "no ready node has a GPU");
}

static void test_ready_only(void **state)
{
	sched_node nodes[] = { N("dead", 0, 0, 64 * GiB, 0, 0), N("live", 1, 0, 2 * GiB, 7, 7) };
	sched_agent a = A(GiB);
	char why[256] = "";
	assert_int_equal(sched_place(nodes, 2, &a, why, sizeof why), 1);
	nodes[1].ready = 0;
	assert_int_equal(sched_place(nodes, 2, &a, why, sizeof why), -1);
	assert_string_equal(why, "no ready node");
	assert_int_equal(sched_place(nodes, 0, &a, why, sizeof why), -1);
	assert_string_equal(why, "no ready node");
}

static void test_pin(void **state)
{
	sched_node nodes[] = { N("n1", 1, 0, 64 * GiB, 0, 0), N("n2", 1, 0, 4 * GiB, 9, 9) };
	sched_agent a = A(GiB);
	char why[256] = "";
	a.pinned = "n2";   /* overrides load */
	assert_int_equal(sched_place(nodes, 2, &a, why, sizeof why), 1);
	a.mem_bytes = 5 * GiB;   /* but not fit */
	assert_int_equal(sched_place(nodes, 2, &a, why, sizeof why), -1);
	assert_non_null(strstr(why, "bytes free"));
	a.mem_bytes = GiB;
	nodes[1].ready = 0;
	assert_int_equal(sched_place(nodes, 2, &a, why, sizeof why), -1);
	assert_string_equal(why, "pinned node 'n2' is not ready");
	a.pinned = "n9";
	assert_int_equal(sched_place(nodes, 2, &a, why, sizeof why), -1);
	assert_string_equal(why, "pinned node 'n9' is not in the cluster");
}

static void test_exclude(void **state)
{
	sched_node nodes[] = { N("n1", 1, 0, 64 * GiB, 0, 0), N("n2", 1, 0, 4 * GiB, 9, 9) };
	sched_agent a = A(GiB);
	char why[256] = "";
	a.exclude = "n1";   /* migration source or dead node: never there */
	assert_int_equal(sched_place(nodes, 2, &a, why, sizeof why), 1);
	a.exclude = "n2";
	assert_int_equal(sched_place(nodes, 2, &a, why, sizeof why), 0);
	/* the only node excluded: nothing ready remains */
	assert_int_equal(sched_place(nodes, 1, &(sched_agent){ .name = "a", .exclude = "n1" }, why, sizeof why), -1);
	assert_string_equal(why, "no ready node");
	/* pinned to the excluded node (migrating away from its pin) */
	a.exclude = "n2";
	a.pinned = "n2";
	assert_int_equal(sched_place(nodes, 2, &a, why, sizeof why), -1);
	assert_string_equal(why, "pinned node 'n2' is not ready");
}

static void test_least_loaded(void **state)
{
	char why[256] = "";
	sched_agent a = A(GiB);
	/* queue length first */
	sched_node q[] = { N("a", 1, 0, 2 * GiB, 3, 0), N("b", 1, 0, 2 * GiB, 1, 9), N("c", 1, 0, 9 * GiB, 2, 0) };
	assert_int_equal(sched_place(q, 3, &a, why, sizeof why), 1);
	/* then agents */
	sched_node g[] = { N("a", 1, 0, 2 * GiB, 1, 4), N("b", 1, 0, 2 * GiB, 1, 2), N("c", 1, 0, 9 * GiB, 1, 3) };
	assert_int_equal(sched_place(g, 3, &a, why, sizeof why), 1);
	/* then most free memory */
	sched_node m[] = { N("a", 1, 0, 2 * GiB, 1, 2), N("b", 1, 0, 3 * GiB, 1, 2), N("c", 1, 0, 9 * GiB, 1, 2) };
	assert_int_equal(sched_place(m, 3, &a, why, sizeof why), 2);
	/* then the name, whatever the order given */
	sched_node t[] = { N("zeta", 1, 0, 2 * GiB, 0, 0), N("alpha", 1, 0, 2 * GiB, 0, 0),
			   N("mid", 1, 0, 2 * GiB, 0, 0) };
	assert_int_equal(sched_place(t, 3, &a, why, sizeof why), 1);
	sched_node t2[] = { N("mid", 1, 0, 2 * GiB, 0, 0), N("zeta", 1, 0, 2 * GiB, 0, 0),
			    N("alpha", 1, 0, 2 * GiB, 0, 0) };
	assert_int_equal(sched_place(t2, 3, &a, why, sizeof why), 2);
}

static void test_reasons(void **state)
{
	char why[256];
	sched_agent a = A(GiB);
	sched_node n[] = { N("n1", 1, 0, 0, 0, 0) };
	/* why may be NULL */
	assert_int_equal(sched_place(n, 1, &a, NULL, 0), -1);
	/* ordering of reasons: readiness before device before memory */
	sched_node mix[] = { N("down", 0, 1, 64 * GiB, 0, 0), N("small", 1, 1, 0, 0, 0), N("cpu", 1, 0, 64 * GiB, 0, 0) };
	a.needs_gpu = 1;
	assert_int_equal(sched_place(mix, 3, &a, why, sizeof why), -1);
	assert_string_equal(why, "no ready node has 1073741824 bytes free");
	mix[1].has_gpu = 0;
	assert_int_equal(sched_place(mix, 3, &a, why, sizeof why), -1);
	assert_string_equal(why, "no ready node has a GPU");
	/* a short buffer is truncated, not overrun */
	char tiny[8];
	memset(tiny, 'x', sizeof tiny);
	assert_int_equal(sched_place(mix, 3, &a, tiny, sizeof tiny), -1);
	assert_int_equal(strlen(tiny), sizeof tiny - 1);
}


/* ---- the AI-aware terms ---- */

static sched_node G(const char *name, float speed_gpu)
{
	sched_node n = { .name = name, .ready = 1, .has_gpu = 1, .mem_free = 64 * GiB };
	n.servers[SCHED_DEV_CPU] = 8;
	n.servers[SCHED_DEV_GPU] = 1;
	n.speed[SCHED_DEV_GPU] = speed_gpu;
	return n;
}

static sched_agent AI(void)
{
	sched_agent a = { .name = "a", .mem_bytes = GiB, .gpu_ok = 1, .rate = 1 };
	a.est_ms[SCHED_DEV_CPU] = 100;
	a.est_ms[SCHED_DEV_GPU] = 10;
	return a;
}

static int pick(const sched_node *n, int k, const sched_agent *a)
{
	int best = -1;
	char why[256] = "";
	int m = sched_rank(n, k, a, NULL, NULL, &best, 1, why, sizeof why);
	return m ? best : -1;
}

static void test_latency_per_device(void **state)
{
	/* same load, one GPU 1.8x slower: the faster one */
	sched_node n[] = { G("slow", 1.8f), G("fast", 1.0f) };
	sched_agent a = AI();
	assert_int_equal(pick(n, 2, &a), 1);
	/* the estimate decides: an agent 10x slower on CPU prefers a busy GPU
	 * (U 0.5: 20 ms) to an idle CPU node (100 ms) */
	sched_node m[] = { G("gpu", 1.0f), N("cpu", 1, 0, 64 * GiB, 0, 0) };
	m[0].util[SCHED_DEV_GPU][SCHED_PRIO_LOW] = 0.5f;
	assert_int_equal(pick(m, 2, &a), 0);
	/* with no estimate, the prior from the model's size still says GPU */
	a.est_ms[0] = a.est_ms[1] = 0;
	assert_int_equal(pick(m, 2, &a), 0);
	sched_score sc[2];
	int best;
	assert_int_equal(sched_rank(m, 2, &a, NULL, sc, &best, 1, NULL, 0), 1);
	assert_int_equal(sc[0].dev, SCHED_DEV_GPU);
	assert_int_equal(sc[1].dev, SCHED_DEV_CPU);
}

static void test_gpu_first(void **state)
{
	/* g1 has a GPU but no GPU memory left: the agent would run on its CPU
	 * (gpu term) although g1 is idle; g2's GPU is busier but fits */
	sched_node n[] = { G("g1", 1.0f), G("g2", 1.0f) };
	n[0].gpu_mem_free = GiB / 2;
	n[1].util[SCHED_DEV_GPU][SCHED_PRIO_LOW] = 0.6f;
	sched_agent a = AI();
	a.est_ms[SCHED_DEV_CPU] = 12;   /* even a model nearly as fast on CPU */
	assert_int_equal(pick(n, 2, &a), 1);
	sched_score s;
	sched_params p;
	sched_params_default(&p);
	sched_score_node(n, 0, &a, &p, &s);
	assert_int_equal(s.dev, SCHED_DEV_CPU);
	assert_true(s.gpu == p.w_gpu_ms);
	/* without the penalty the idle CPU would win */
	p.w_gpu_ms = 0;
	int best;
	assert_int_equal(sched_rank(n, 2, &a, &p, NULL, &best, 1, NULL, 0), 1);
	assert_int_equal(best, 0);
	/* an agent that needs a GPU is infeasible there */
	a.needs_gpu = 1;
	assert_int_equal(sched_score_node(n, 0, &a, &p, &s), 0);
	assert_string_equal(s.why, "not enough free GPU memory");
}

static void test_priority_classes(void **state)
{
	/* busy: lots of low-class work; mixed: less work, but of high class */
	sched_node n[] = { G("busy", 1.0f), G("mixed", 1.0f) };
	n[0].util[SCHED_DEV_GPU][SCHED_PRIO_LOW] = 0.8f;
	n[1].util[SCHED_DEV_GPU][SCHED_PRIO_HIGH] = 0.5f;
	sched_agent a = AI();
	a.priority = 0;     /* low: waits behind everything: the less loaded node */
	assert_int_equal(pick(n, 2, &a), 1);
	a.priority = 500;   /* high: the dispatcher puts the low-class work behind it */
	assert_int_equal(pick(n, 2, &a), 0);
	assert_int_equal(sched_prio_class(0), SCHED_PRIO_LOW);
	assert_int_equal(sched_prio_class(99), SCHED_PRIO_NORMAL);
	assert_int_equal(sched_prio_class(100), SCHED_PRIO_HIGH);
}

static void test_backlog(void **state)
{
	sched_node n[] = { G("a", 1.0f), G("b", 1.0f) };
	n[0].queue_len = 10;
	sched_agent a = AI();
	assert_int_equal(pick(n, 2, &a), 1);
	n[1].queue_len = 11;
	assert_int_equal(pick(n, 2, &a), 0);
}

static void test_context_locality(void **state)
{
	/* the context lives on "home"; "other" is a little less loaded */
	sched_node n[] = { G("home", 1.0f), G("other", 1.0f) };
	n[0].util[SCHED_DEV_GPU][SCHED_PRIO_LOW] = 0.3f;
	n[0].link_gbps = n[1].link_gbps = 10;
	sched_agent a = AI();
	a.ctx_node = 0;
	a.ctx_bytes = 1024;   /* tiny context: load decides */
	assert_int_equal(pick(n, 2, &a), 1);
	a.ctx_bytes = 8 * GiB;   /* 8 GiB over 10 Gb/s = 6.9 s, /100 requests = 69 ms */
	assert_int_equal(pick(n, 2, &a), 0);
	sched_score s;
	sched_params p;
	sched_params_default(&p);
	sched_score_node(n, 1, &a, &p, &s);
	assert_true(s.move > 60 && s.move < 80);
	/* a faster link makes the move cheap again */
	n[0].link_gbps = n[1].link_gbps = 400;
	assert_int_equal(pick(n, 2, &a), 1);
}

static void test_memory_pressure(void **state)
{
	sched_node n[] = { G("full", 1.0f), G("roomy", 1.0f) };
	n[0].mem_total = n[1].mem_total = 100 * GiB;
	n[0].mem_free = 10 * GiB;
	n[1].mem_free = 60 * GiB;
	n[0].gpu_mem_free = n[1].gpu_mem_free = 80 * GiB;
	n[1].util[SCHED_DEV_GPU][SCHED_PRIO_LOW] = 0.05f;   /* slightly busier */
	sched_agent a = AI();
	assert_int_equal(pick(n, 2, &a), 1);
	sched_params p;
	sched_params_default(&p);
	p.w_mem_ms = 0;
	int best;
	sched_rank(n, 2, &a, &p, NULL, &best, 1, NULL, 0);
	assert_int_equal(best, 0);
}

static void test_spread(void **state)
{
	sched_node n[] = { G("r0", 1.0f), G("r1", 1.0f), G("r2", 1.0f) };
	n[1].util[SCHED_DEV_GPU][SCHED_PRIO_LOW] = 0.1f;
	n[2].util[SCHED_DEV_GPU][SCHED_PRIO_LOW] = 0.2f;
	sched_agent a = AI();
	int reps[] = { 0 };
	assert_int_equal(pick(n, 3, &a), 0);
	a.replica_nodes = reps;
	a.n_replicas = 1;   /* a replica on r0: the next best */
	assert_int_equal(pick(n, 3, &a), 1);
	int reps2[] = { 0, 1 };
	a.replica_nodes = reps2;
	a.n_replicas = 2;
	assert_int_equal(pick(n, 3, &a), 2);
}

static void test_pin_overrides_scores(void **state)
{
	sched_node n[] = { G("fast", 1.0f), G("slow", 1.8f) };
	n[1].util[SCHED_DEV_GPU][SCHED_PRIO_HIGH] = 0.9f;
	sched_agent a = AI();
	a.pinned = "slow";
	assert_int_equal(pick(n, 2, &a), 1);
	sched_score sc[2];
	int best;
	sched_rank(n, 2, &a, NULL, sc, &best, 1, NULL, 0);
	assert_false(sc[0].feasible);
	assert_string_equal(sc[0].why, "not the pinned node");
}

static void test_scores_and_rank(void **state)
{
	sched_node n[] = { G("a", 1.8f), G("b", 1.0f), G("c", 1.35f), N("d", 0, 1, 64 * GiB, 0, 0) };
	sched_agent a = AI();
	sched_score sc[4];
	int best[4];
	assert_int_equal(sched_rank(n, 4, &a, NULL, sc, best, 4, NULL, 0), 3);
	assert_int_equal(best[0], 1);
	assert_int_equal(best[1], 2);
	assert_int_equal(best[2], 0);
	for (int i = 0; i < 3; i++) {
		assert_true(sc[i].feasible);
		double sum = sc[i].latency + sc[i].queue + sc[i].gpu + sc[i].move + sc[i].memory + sc[i].spread;
		assert_true(sum == sc[i].total);
	}
	assert_false(sc[3].feasible);
	assert_string_equal(sc[3].why, "not ready");
	/* k larger than the internal bound is clamped, never overrun */
	int many[16];
	assert_int_equal(sched_rank(n, 4, &a, NULL, NULL, many, 16, NULL, 0), 3);
}

static void test_determinism(void **state)
{
	/* identical nodes in any order: the same name wins, every time */
	const char *names[] = { "n3", "n1", "n2", "n0" };
	sched_agent a = AI();
	for (int rot = 0; rot < 4; rot++) {
		sched_node n[4];
		for (int i = 0; i < 4; i++)
			n[i] = G(names[(i + rot) % 4], 1.0f);
		int b = pick(n, 4, &a);
		assert_string_equal(n[b].name, "n0");
		assert_int_equal(pick(n, 4, &a), b);
	}
}

static void test_rebalance_hysteresis(void **state)
{
	sched_rebalance_params r;
	sched_rebalance_params_default(&r);
	int streak = 0;
	/* sustained: only the third overloaded check in a row acts */
	assert_int_equal(sched_overloaded(&r, 50, 10, 0.5, &streak), 0);
	assert_int_equal(sched_overloaded(&r, 50, 10, 0.5, &streak), 0);
	assert_int_equal(sched_overloaded(&r, 12, 10, 0.5, &streak), 0);   /* a good check resets */
	assert_int_equal(streak, 0);
	assert_int_equal(sched_overloaded(&r, 50, 10, 0.5, &streak), 0);
	assert_int_equal(sched_overloaded(&r, 10, 10, 0.95, &streak), 0);  /* utilisation counts too */
	assert_int_equal(sched_overloaded(&r, 50, 10, 0.5, &streak), 1);
	/* minimum gain: a move must cut the predicted cost by 30% */
	sched_node n[] = { G("src", 1.0f), G("dst", 1.0f) };
	sched_agent a = AI();
	a.placed = 1;
	a.cur_node = 0;
	a.rate = 10;   /* 10 req/s x 10 ms = 0.1 of a GPU */
	n[0].util[SCHED_DEV_GPU][SCHED_PRIO_LOW] = 0.5f;   /* its own 0.1 included */
	n[1].util[SCHED_DEV_GPU][SCHED_PRIO_LOW] = 0.3f;
	sched_score stay, go;
	/* stay: 10/(1-0.5) = 20; go: 10/(1-0.4) = 16.7: not 30% better */
	assert_int_equal(sched_move_worth(n, 2, &a, 1, NULL, &r, &stay, &go), 0);
	assert_true(stay.total > go.total);
	n[0].util[SCHED_DEV_GPU][SCHED_PRIO_LOW] = 0.8f;   /* stay: 50 */
	assert_int_equal(sched_move_worth(n, 2, &a, 1, NULL, &r, &stay, &go), 1);
	/* moving to itself, or when not placed, is never worth it */
	assert_int_equal(sched_move_worth(n, 2, &a, 0, NULL, &r, NULL, NULL), 0);
	a.placed = 0;
	assert_int_equal(sched_move_worth(n, 2, &a, 1, NULL, &r, NULL, NULL), 0);
}

/* "needs room": a high-priority request that finds every worker busy with
 * lower classes waits for one of their runs (no preemption). */
static void test_needs_room(void **state)
{
	(void)state;
	sched_rebalance_params r;
	sched_rebalance_params_default(&r);
	int streak = 0;
	/* one worker, a lower class busy 60% of the time with runs as long
	 * as the high class's own: its tail is 2x its estimate; sustained
	 * for r.sustain checks before acting, a good check resets */
	assert_int_equal(sched_needs_room(&r, 1.7, 1.7, 0.6, 1, 0, &streak), 0);
	assert_int_equal(sched_needs_room(&r, 1.7, 1.7, 0.6, 1, 0, &streak), 0);
	assert_int_equal(sched_needs_room(&r, 1.7, 1.7, 0.01, 1, 0, &streak), 0);  /* rarely busy: 1% < 5% */
	assert_int_equal(streak, 0);
	assert_int_equal(sched_needs_room(&r, 1.7, 1.7, 0.6, 1, 0, &streak), 0);
	assert_int_equal(sched_needs_room(&r, 1.7, 1.7, 0.6, 1, 0, &streak), 0);
	assert_int_equal(sched_needs_room(&r, 1.7, 1.7, 0.6, 1, 0, &streak), 1);
	streak = 0;
	/* short lower-class runs: the wait stays within room_ratio */
	for (int i = 0; i < 5; i++)
		assert_int_equal(sched_needs_room(&r, 10, 4, 0.9, 1, 0, &streak), 0);
	/* a worker reserved for the class: it never waits for lower classes */
	for (int i = 0; i < 5; i++)
		assert_int_equal(sched_needs_room(&r, 1.7, 1.7, 0.99, 2, 1, &streak), 0);
	/* all of 4 workers busy with lower classes: 0.5^4 = 6% >= 5% */
	for (int i = 0; i < 3; i++)
		assert_int_equal(sched_needs_room(&r, 1.7, 1.7, 0.5, 4, 0, &streak), i == 2);
	streak = 0;
	assert_int_equal(sched_needs_room(&r, 1.7, 1.7, 0.4, 4, 0, &streak), 0);   /* 2.6% */
	assert_int_equal(streak, 0);
	/* no data (no estimate, no lower-class load): never */
	assert_int_equal(sched_needs_room(&r, 0, 1.7, 0.9, 1, 0, &streak), 0);
	assert_int_equal(sched_needs_room(&r, 1.7, 1.7, 0, 1, 0, &streak), 0);
	assert_int_equal(streak, 0);
}

static void test_decision_1000_nodes(void **state)
{
	/* Not a timed assertion: prints the decision latency at 1,000 nodes
	 * (the acceptance figure comes from `make sim` and bench/coord_place). */
	static sched_node n[1000];
	static char names[1000][16];
	for (int i = 0; i < 1000; i++) {
		snprintf(names[i], sizeof names[i], "n%03d", i);
		n[i] = G(names[i], i % 3 ? 1.35f : 1.0f);
		n[i].util[SCHED_DEV_GPU][i % 3] = (float)(i % 17) / 20.0f;
		n[i].queue_len = (uint32_t)(i % 5);
	}
	sched_agent a = AI();
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int best = -1;
	for (int r = 0; r < 100; r++)
		best = pick(n, 1000, &a);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_true(best >= 0);
	printf("    decision over 1000 nodes: %.1f us (mean of 100)\n",
	       ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) / 100 / 1000);
}

static void test_sim_quick(void **state)
{
	sched_sim_cfg cfg;
	sched_sim_result ll, ai, again;
	char err[256];
	sched_sim_cfg_default(&cfg, 1);
	assert_int_equal(sched_sim_run(&cfg, SCHED_SIM_LEAST_LOADED, &ll, err, sizeof err), 0);
	assert_int_equal(sched_sim_run(&cfg, SCHED_SIM_AIDOS, &ai, err, sizeof err), 0);
	printf("    quick sim: least_loaded p99 %.0f ms slo %.4f; aidos p99 %.0f ms slo %.4f, %.3f migrations/agent-h\n",
	       ll.p99_ms, ll.slo_attainment, ai.p99_ms, ai.slo_attainment, ai.migrations_per_agent_hour);
	assert_true(ai.requests > 100000);
	/* the acceptance: 20% better on p99 or on SLO attainment */
	assert_true(ai.p99_ms <= 0.8 * ll.p99_ms || ai.slo_attainment >= 1.2 * ll.slo_attainment);
	assert_true(ai.slo_attainment > ll.slo_attainment);
	assert_true(ai.migrations_per_agent_hour < 5.0);   /* bounded */
	/* deterministic for a seed (decision timing aside) */
	assert_int_equal(sched_sim_run(&cfg, SCHED_SIM_AIDOS, &again, err, sizeof err), 0);
	assert_true(again.p99_ms == ai.p99_ms && again.requests == ai.requests && again.migrations == ai.migrations);
	cfg.nodes = 0;
	assert_int_equal(sched_sim_run(&cfg, SCHED_SIM_AIDOS, &again, err, sizeof err), AIDOS_E_INVALID);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fits_memory),
		cmocka_unit_test(test_device),
		cmocka_unit_test(test_ready_only),
		cmocka_unit_test(test_pin),
		cmocka_unit_test(test_exclude),
		cmocka_unit_test(test_least_loaded),
		cmocka_unit_test(test_reasons),
		cmocka_unit_test(test_latency_per_device),
		cmocka_unit_test(test_gpu_first),
		cmocka_unit_test(test_priority_classes),
		cmocka_unit_test(test_backlog),
		cmocka_unit_test(test_context_locality),
		cmocka_unit_test(test_memory_pressure),
		cmocka_unit_test(test_spread),
		cmocka_unit_test(test_pin_overrides_scores),
		cmocka_unit_test(test_scores_and_rank),
		cmocka_unit_test(test_determinism),
		cmocka_unit_test(test_rebalance_hysteresis),
		cmocka_unit_test(test_needs_room),
		cmocka_unit_test(test_decision_1000_nodes),
		cmocka_unit_test(test_sim_quick),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
