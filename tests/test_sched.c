/*
 * tests/test_sched.c - the placement policy (sched/place.c): a node must be
 * ready and fit the agent's memory and device; a pin overrides load but
 * not fit; an excluded node is never chosen; among the rest the least loaded
 * wins (queue length, then agents, then free memory, then name); and when
 * nothing fits, the reason names the constraint that ruled every node out.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "sched/sched.h"

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
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
