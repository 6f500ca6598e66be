/*
 * tests/test_model.c - a model file is mapped once however often it is
 * loaded, weights point into that mapping (no copy) where they are aligned,
 * and the mapping goes away with the last model.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "aidos/aidos.h"
#include "hal/model.h"

static void model_path(char *buf, size_t n, const char *rel)
{
	const char *c = getenv("AIDOS_CACHE");
	if (c && *c)
		snprintf(buf, n, "%s/models/%s", c, rel);
	else
		snprintf(buf, n, "%s/.cache/aidos/models/%s", getenv("HOME") ? getenv("HOME") : ".", rel);
}

static void test_mapped_once(void **state)
{
	(void)state;
	char path[1024], err[512];
	model_path(path, sizeof path, "openwakeword/hey_rhasspy_v0.1.onnx");
	int before = hal_mapping_count();
	aidos_model *a, *b;
	if (aidos_model_load(path, &a, err, sizeof err))
		fail_msg("%s (run 'make models')", err);
	assert_int_equal(aidos_model_load(path, &b, err, sizeof err), 0);
	assert_int_equal(hal_mapping_count(), before + 1);   /* one mapping for both */
	/* Every initializer used in place is the same bytes in both models. */
	size_t mapped = 0, copied = 0;
	aidos_model_weight_bytes(a, &mapped, &copied);
	assert_true(mapped > 0);
	int same = 0;
	for (int i = 0; i < a->graph->n_init; i++)
		same += a->graph->init[i].data == b->graph->init[i].data;
	print_message("    %d of %d initializers shared byte for byte; %zu bytes in place, %zu copied\n", same,
		      a->graph->n_init, mapped, copied);
	assert_true(same > 0);
	aidos_model_free(a);
	assert_int_equal(hal_mapping_count(), before + 1);   /* b still holds it */
	aidos_model_free(b);
	assert_int_equal(hal_mapping_count(), before);
}

static void test_missing_file(void **state)
{
	(void)state;
	char err[512];
	aidos_model *m = (aidos_model *)1;
	int rc = aidos_model_load("/nonexistent/model.onnx", &m, err, sizeof err);
	assert_true(rc < 0);
	assert_null(m);
	assert_non_null(strstr(err, "/nonexistent/model.onnx"));
	rc = aidos_model_load("/tmp", &m, err, sizeof err);
	assert_true(rc < 0);
	assert_non_null(strstr(err, "not a regular file"));
}

/* The bump allocator's large chunks: whole 2 MiB pages, 2 MiB aligned (so
 * that the kernel can back them with huge pages), zeroed, their tail used
 * by the allocations after them, unmapped by ir_mem_free. */
static void test_mem_huge_chunk(void **state)
{
	(void)state;
	const size_t huge = (size_t)2 << 20;
	ir_mem m = { 0 };
	unsigned char *small = ir_mem_alloc(&m, 100);
	assert_non_null(small);
	assert_int_equal(m.head->map_len, 0);  /* small: the heap */
	size_t n = 5 * ((size_t)1 << 20) + 123;
	unsigned char *big = ir_mem_alloc(&m, n);
	assert_non_null(big);
	ir_mem_chunk *c = m.head;
	assert_int_equal((uintptr_t)c % huge, 0);
	assert_int_equal(c->map_len, 3 * huge);  /* 5 MiB + header: three pages */
	assert_true(big >= c->data && big + n <= (unsigned char *)c + c->map_len);
	for (size_t i = 0; i < n; i += 4096)
		assert_int_equal(big[i], 0);
	memset(big, 0xab, n);
	/* the rest of the last page serves the next allocation */
	unsigned char *next = ir_mem_alloc(&m, 1000);
	assert_ptr_equal(m.head, c);
	assert_true(next >= big + n && next + 1000 <= (unsigned char *)c + c->map_len);
	assert_int_equal(next[999], 0);
	assert_int_equal(small[0], 0);  /* the heap chunk is untouched */
	/* exactly 1 MiB takes the mapped path; just under it, the heap */
	unsigned char *edge = ir_mem_alloc(&m, ((size_t)1 << 20) - 64);
	assert_non_null(edge);
	assert_int_equal(m.head->map_len, 0);
	assert_non_null(ir_mem_alloc(&m, (size_t)1 << 20));
	assert_int_equal(m.head->map_len, huge);
	assert_true(m.total >= n + ((size_t)2 << 20));
	ir_mem_free(&m);
	assert_null(m.head);
	assert_int_equal(m.total, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mapped_once),
		cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_mem_huge_chunk),
	};
	return cmocka_run_group_tests_name("model files", tests, NULL, NULL);
}
