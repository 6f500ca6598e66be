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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mapped_once),
		cmocka_unit_test(test_missing_file),
	};
	return cmocka_run_group_tests_name("model files", tests, NULL, NULL);
}
