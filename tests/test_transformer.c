/*
 * tests/test_transformer.c - dynamic shapes: the plan cache, value-keyed
 * inputs, and transformer models against ONNX Runtime.
 *
 * Models come from $AIDOS_CACHE/transformers/ (AIDOS_CACHE defaults to
 * ~/.cache/aidos), written by `make models`: tools/gen_transformers.py
 * builds them with python3-onnx (random weights, fixed seeds) and
 * tools/ort_run.js stores ONNX Runtime's outputs for every (batch, seq) case
 * of cases.txt. Each model runs all its cases, in order, through ONE session,
 * so later cases of a shape seen before hit the plan cache, and each output
 * must match ORT's within max|a - b| <= 1e-4 * max(1, max|ref|).
 *
 * The *_ln variants use the LayerNormalization operator: they are skipped
 * ("no kernel") while aidos has none; the *_dec variants spell it out with
 * ReduceMean/Sub/Pow/Sqrt/Div. bert_tiny (PyTorch's own TorchScript export,
 * from the shared development corpus) is copied in when the corpus exists
 * and skipped otherwise.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aidos/aidos.h"
#include "aidos/npy.h"
#include "pools/pools.h"

static char dir[1200];

static void set_dir(void)
{
	const char *c = getenv("AIDOS_CACHE");
	if (c && *c)
		snprintf(dir, sizeof dir, "%s/transformers", c);
	else
		snprintf(dir, sizeof dir, "%s/.cache/aidos/transformers", getenv("HOME") ? getenv("HOME") : ".");
}

static aidos_model *load(const char *name)
{
	char path[1400], err[512];
	aidos_model *m = NULL;
	snprintf(path, sizeof path, "%s/%s.onnx", dir, name);
	int rc = aidos_model_load(path, &m, err, sizeof err);
	if (rc)
		fail_msg("%s: %s (run 'make models')", path, err);
	return m;
}

static aidos_tensor tensor(const char *name, int dtype, int rank, const int64_t *dims, void *data)
{
	aidos_tensor t;
	memset(&t, 0, sizeof t);
	t.name = name;
	t.dtype = dtype;
	t.rank = rank;
	for (int i = 0; i < rank; i++)
		t.dims[i] = dims[i];
	t.data = data;
	return t;
}

/* ---- value-keyed inputs ---- */

/* Reshape(x, shape) with shape a graph input: each shape value gets its own
 * plan, a repeated value reuses it. */
static void t_value_keyed_reshape(void **st)
{
	(void)st;
	aidos_model *m = load("dyn_reshape");
	aidos_session *s;
	char err[256];
	assert_int_equal(aidos_session_create(m, NULL, &s, err, sizeof err), 0);
	float x[6] = { 0, 1, 2, 3, 4, 5 };
	int64_t n6 = 6, n2 = 2, n3 = 3;
	int64_t shapes[3][3] = { { 2, 3 }, { 3, -1 }, { 1, 6, 1 } };
	const int ranks[3] = { 2, 2, 3 };
	const int64_t want[3][3] = { { 2, 3 }, { 3, 2 }, { 1, 6, 1 } };
	for (int k = 0; k < 5; k++) {
		int j = k % 3;
		int64_t *len = ranks[j] == 2 ? &n2 : &n3;
		aidos_tensor in[2] = { tensor("x", AIDOS_DT_FLOAT, 1, &n6, x),
				       tensor("shape", AIDOS_DT_INT64, 1, len, shapes[j]) };
		int rc = aidos_session_run(s, 2, in);
		if (rc)
			fail_msg("run %d: %s", k, aidos_session_errmsg(s));
		aidos_tensor out;
		assert_int_equal(aidos_session_output(s, 0, &out), 0);
		assert_int_equal(out.rank, ranks[j]);
		for (int d = 0; d < ranks[j]; d++)
			assert_int_equal(out.dims[d], want[j][d]);
		assert_memory_equal(out.data, x, sizeof x);
		aidos_plan_stats ps;
		assert_int_equal(aidos_session_stats(s, &ps), 0);
		assert_int_equal(ps.value_keyed, 1);
		assert_int_equal((int)ps.plans_built, k < 3 ? k + 1 : 3);
	}
	/* An empty shape (reshape to a scalar) is a key too; it has no data. */
	int64_t n0 = 0, n1 = 1;
	aidos_tensor in[2] = { tensor("x", AIDOS_DT_FLOAT, 1, &n1, x), tensor("shape", AIDOS_DT_INT64, 1, &n0, NULL) };
	if (aidos_session_run(s, 2, in))
		fail_msg("scalar: %s", aidos_session_errmsg(s));
	aidos_tensor out;
	assert_int_equal(aidos_session_output(s, 0, &out), 0);
	assert_int_equal(out.rank, 0);
	assert_float_equal(*(const float *)out.data, 0.0f, 0);
	aidos_session_destroy(s);
	aidos_model_free(m);
}

/* x * Cast(m) + ReduceSum(x, axes): axes is needed as a value (keyed), the
 * int64 mask m only feeds arithmetic and stays a plain run-time tensor: new
 * mask values reuse the plan. */
static void t_value_keyed_only_needed(void **st)
{
	(void)st;
	aidos_model *m = load("dyn_mask");
	aidos_session *s;
	char err[256];
	assert_int_equal(aidos_session_create(m, NULL, &s, err, sizeof err), 0);
	float x[6] = { 1, 2, 3, 4, 5, 6 };
	int64_t mask[6], d23[2] = { 2, 3 }, one = 1;
	for (int k = 0; k < 6; k++) {
		int64_t axes = k & 1;  /* alternates 0 and 1 */
		for (int i = 0; i < 6; i++)
			mask[i] = (i + k) % 3 != 0;
		aidos_tensor in[3] = { tensor("x", AIDOS_DT_FLOAT, 2, d23, x),
				       tensor("m", AIDOS_DT_INT64, 2, d23, mask),
				       tensor("axes", AIDOS_DT_INT64, 1, &one, &axes) };
		if (aidos_session_run(s, 3, in))
			fail_msg("run %d: %s", k, aidos_session_errmsg(s));
		aidos_tensor out;
		assert_int_equal(aidos_session_output(s, 0, &out), 0);
		const float *y = out.data;
		for (int i = 0; i < 2; i++)
			for (int j = 0; j < 3; j++) {
				float r = axes == 0 ? x[j] + x[3 + j] : x[3 * i] + x[3 * i + 1] + x[3 * i + 2];
				float want = x[3 * i + j] * (float)mask[3 * i + j] + r;
				assert_float_equal(y[3 * i + j], want, 1e-6);
			}
		aidos_plan_stats ps;
		assert_int_equal(aidos_session_stats(s, &ps), 0);
		assert_int_equal(ps.value_keyed, 1);  /* axes, not m */
		assert_int_equal((int)ps.plans_built, k < 2 ? k + 1 : 2);
	}
	aidos_session_destroy(s);
	aidos_model_free(m);
}

/* Reshape(x, Unsqueeze(ReduceMax(t))): t would have to be value-keyed; with
 * 4 elements it is, with 65 it is refused and the message says why. */
static void t_value_keyed_bound(void **st)
{
	(void)st;
	aidos_model *m = load("dyn_big");
	aidos_session *s;
	char err[256];
	assert_int_equal(aidos_session_create(m, NULL, &s, err, sizeof err), 0);
	float x[6] = { 0, 1, 2, 3, 4, 5 };
	int64_t t[65], n6 = 6, n4 = 4, n65 = 65;
	for (int i = 0; i < 65; i++)
		t[i] = i % 6 + 1;  /* max 6 */
	aidos_tensor in[2] = { tensor("x", AIDOS_DT_FLOAT, 1, &n6, x), tensor("t", AIDOS_DT_INT64, 1, &n4, t) };
	t[2] = 6;
	if (aidos_session_run(s, 2, in))
		fail_msg("%s", aidos_session_errmsg(s));
	aidos_tensor out;
	assert_int_equal(aidos_session_output(s, 0, &out), 0);
	assert_int_equal(out.rank, 1);
	assert_int_equal(out.dims[0], 6);
	in[1] = tensor("t", AIDOS_DT_INT64, 1, &n65, t);
	int rc = aidos_session_run(s, 2, in);
	assert_int_equal(rc, AIDOS_E_UNSUPPORTED);
	const char *msg = aidos_session_errmsg(s);
	print_message("    refused: %s\n", msg);
	assert_non_null(strstr(msg, "input 't'"));
	assert_non_null(strstr(msg, "65 elements"));
	aidos_session_destroy(s);
	/* A fresh session finds out while planning: the kernel's reason too. */
	assert_int_equal(aidos_session_create(m, NULL, &s, err, sizeof err), 0);
	assert_int_equal(aidos_session_run(s, 2, in), AIDOS_E_UNSUPPORTED);
	msg = aidos_session_errmsg(s);
	print_message("    refused: %s\n", msg);
	assert_non_null(strstr(msg, "input 't'"));
	assert_non_null(strstr(msg, "Reshape"));
	aidos_session_destroy(s);
	aidos_model_free(m);
}

/* ---- allocation failures ---- */

/* create, then runs that plan, hit the cache, value-key and evict. Returns
 * the first failing run's code (0: all ran). */
static int alloc_seq(aidos_model *m, aidos_session **sp)
{
	aidos_session_opts o = { .max_plans = 2 };
	char err[256];
	float x[6] = { 0, 1, 2, 3, 4, 5 };
	int64_t n6 = 6, n2 = 2;
	int64_t shapes[4][2] = { { 2, 3 }, { 3, 2 }, { 2, 3 }, { 6, 1 } };
	int rc = aidos_session_create(m, &o, sp, err, sizeof err);
	if (rc)
		return rc;
	for (int k = 0; k < 4; k++) {
		aidos_tensor in[2] = { tensor("x", AIDOS_DT_FLOAT, 1, &n6, x),
				       tensor("shape", AIDOS_DT_INT64, 1, &n2, shapes[k]) };
		if ((rc = aidos_session_run(*sp, 2, in))) {
			assert_true(aidos_session_errmsg(*sp)[0] != 0);
			return rc;
		}
	}
	return 0;
}

/* Every allocation of that sequence fails once in turn: each failure is a
 * clean AIDOS_E_NOMEM (no crash; no leak under ASan), and the session works
 * afterwards. */
static void t_alloc_failures(void **st)
{
	(void)st;
	aidos_model *m = load("dyn_reshape");
	pool_stats s0, s1;
	aidos_session *s = NULL;
	pool_get_stats(&s0);
	assert_int_equal(alloc_seq(m, &s), 0);
	pool_get_stats(&s1);
	aidos_session_destroy(s);
	int total = (int)(s1.allocs - s0.allocs);
	print_message("    %d allocations in the sequence: each fails once in turn\n", total);
	assert_true(total > 10);
	for (int nth = 1; nth <= total; nth++) {
		s = NULL;
		pool_fault_inject((uint64_t)nth, 0);
		int rc = alloc_seq(m, &s);
		pool_fault_inject(0, 0);
		if (rc != AIDOS_E_NOMEM)
			fail_msg("allocation %d failing gave %d (%s)", nth, rc, s ? aidos_session_errmsg(s) : "create");
		if (s) {
			float x[6] = { 0, 1, 2, 3, 4, 5 };
			int64_t n6 = 6, n2 = 2, shp[2] = { 3, 2 };
			aidos_tensor in[2] = { tensor("x", AIDOS_DT_FLOAT, 1, &n6, x),
					       tensor("shape", AIDOS_DT_INT64, 1, &n2, shp) };
			if (aidos_session_run(s, 2, in))
				fail_msg("after allocation %d failed: %s", nth, aidos_session_errmsg(s));
			aidos_tensor out;
			assert_int_equal(aidos_session_output(s, 0, &out), 0);
			assert_int_equal(out.dims[0], 3);
			aidos_session_destroy(s);
		}
	}
	aidos_model_free(m);
}

/* ---- transformers against ONNX Runtime ---- */

#define MAX_IO 4

typedef struct tcase {
	char name[64];
} tcase;

/* Reads the cases of model from cases.txt; returns the count. */
static int read_cases(const char *model, tcase *c, int max)
{
	char path[1400], line[256], mname[64], cname[64];
	snprintf(path, sizeof path, "%s/cases.txt", dir);
	FILE *f = fopen(path, "r");
	if (!f)
		fail_msg("%s missing (run 'make models')", path);
	int n = 0;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "%63s %63s", mname, cname) == 2 && !strcmp(mname, model) && n < max)
			snprintf(c[n++].name, sizeof c->name, "%s", cname);
	fclose(f);
	return n;
}

/* max |a - b| <= 1e-4 * max(1, max |ref|), identical dtype and shape. */
static void compare(const aidos_tensor *got, const aidos_tensor *ref, const char *what)
{
	if (got->dtype != ref->dtype || got->rank != ref->rank ||
	    memcmp(got->dims, ref->dims, (size_t)got->rank * sizeof got->dims[0]))
		fail_msg("%s: dtype/shape differ from ONNX Runtime's", what);
	assert_int_equal(got->dtype, AIDOS_DT_FLOAT);
	int64_t n = 1;
	for (int d = 0; d < ref->rank; d++)
		n *= ref->dims[d];
	const float *a = got->data, *b = ref->data;
	double err = 0, mag = 1;
	for (int64_t i = 0; i < n; i++) {
		double e = fabs((double)a[i] - (double)b[i]);
		if (!(e <= err))
			err = isnan(e) ? INFINITY : e;
		if (fabs((double)b[i]) > mag)
			mag = fabs((double)b[i]);
	}
	if (!(err <= 1e-4 * mag))
		fail_msg("%s: max |aidos - ort| = %g over %g allowed", what, err, 1e-4 * mag);
}

/* Runs every case of model through one session. Returns 1 when skipped. */
static int run_model_mem(const char *model, int threads, int max_plans, int needs_ln, size_t mem, size_t *peak)
{
	char path[4096], err[512];
	snprintf(path, sizeof path, "%s/%s.onnx", dir, model);
	if (access(path, F_OK) != 0) {
		if (!strcmp(model, "bert_tiny")) {
			print_message("    skipped: %s absent (the shared corpus was not there at 'make models')\n", path);
			skip();
			return 1;
		}
		fail_msg("%s missing (run 'make models')", path);
	}
	aidos_model *m = load(model);
	aidos_session_opts o = { .threads = threads, .max_plans = max_plans, .max_tensor_bytes = mem };
	aidos_session *s;
	assert_int_equal(aidos_session_create(m, &o, &s, err, sizeof err), 0);
	tcase c[32];
	int nc = read_cases(model, c, 32);
	assert_true(nc > 0);
	int n_in = aidos_model_n_inputs(m), n_out = aidos_model_n_outputs(m);
	assert_true(n_in <= MAX_IO && n_out <= MAX_IO);
	int distinct = 0;
	int64_t seen[32][2];
	for (int k = 0; k < nc; k++) {
		aidos_tensor in[MAX_IO], ref[MAX_IO];
		void *own_in[MAX_IO] = { 0 }, *own_ref[MAX_IO] = { 0 };
		for (int i = 0; i < n_in; i++) {
			aidos_tensor info;
			assert_int_equal(aidos_model_input(m, i, &info), 0);
			snprintf(path, sizeof path, "%s/cases/%s/%s/in/%s.npy", dir, model, c[k].name, info.name);
			if (aidos_npy_load(path, &in[i], &own_in[i], err, sizeof err))
				fail_msg("%s: %s (run 'make models')", path, err);
			in[i].name = info.name;
		}
		int is_new = 1;
		for (int j = 0; j < distinct; j++)
			is_new &= !(seen[j][0] == in[0].dims[0] && seen[j][1] == in[0].dims[1]);
		if (is_new) {
			seen[distinct][0] = in[0].dims[0];
			seen[distinct++][1] = in[0].dims[1];
		}
		int rc = aidos_session_run(s, n_in, in);
		if (rc && needs_ln && rc == AIDOS_E_UNSUPPORTED && strstr(aidos_session_errmsg(s), "LayerNormalization")) {
			print_message("    skipped: no kernel: %s\n", aidos_session_errmsg(s));
			for (int i = 0; i < n_in; i++)
				free(own_in[i]);
			aidos_session_destroy(s);
			aidos_model_free(m);
			skip();
			return 1;
		}
		if (rc)
			fail_msg("%s case %s: %s", model, c[k].name, aidos_session_errmsg(s));
		for (int i = 0; i < n_out; i++) {
			aidos_tensor got, info;
			assert_int_equal(aidos_model_output(m, i, &info), 0);
			assert_int_equal(aidos_session_output(s, i, &got), 0);
			snprintf(path, sizeof path, "%s/cases/%s/%s/out/%s.npy", dir, model, c[k].name, info.name);
			if (aidos_npy_load(path, &ref[i], &own_ref[i], err, sizeof err))
				fail_msg("%s: %s (run 'make models')", path, err);
			char what[512];
			snprintf(what, sizeof what, "%.64s case %.64s output %.300s", model, c[k].name, info.name);
			compare(&got, &ref[i], what);
		}
		aidos_plan_stats ps;
		assert_int_equal(aidos_session_stats(s, &ps), 0);
		/* The attention mask feeds arithmetic only: never value-keyed. */
		assert_int_equal(ps.value_keyed, 0);
		assert_true(ps.cached_plans <= (max_plans ? max_plans : 8));
		if (mem)
			assert_true(ps.cached_bytes <= mem);
		if (peak && ps.cached_bytes > *peak)
			*peak = ps.cached_bytes;
		for (int i = 0; i < n_in; i++)
			free(own_in[i]);
		for (int i = 0; i < n_out; i++)
			free(own_ref[i]);
	}
	aidos_plan_stats ps;
	assert_int_equal(aidos_session_stats(s, &ps), 0);
	print_message("    %s, %d thread(s), max_plans %d: %d cases, %d shapes, %d plans built, %d cached (%zu arena bytes, %zu in all)\n",
		      model, threads, max_plans ? max_plans : 8, nc, distinct, (int)ps.plans_built, ps.cached_plans,
		      ps.cached_arena_bytes, ps.cached_bytes);
	assert_true(ps.cached_bytes >= ps.cached_arena_bytes);
	if (mem)
		;                                                 /* evictions depend on the sizes */
	else if (!max_plans || max_plans >= distinct)
		assert_int_equal((int)ps.plans_built, distinct);  /* one plan per shape, repeats cached */
	else
		assert_true((int)ps.plans_built > distinct);      /* evicted, planned again */
	aidos_session_destroy(s);
	aidos_model_free(m);
	return 0;
}

static int run_model(const char *model, int threads, int max_plans, int needs_ln)
{
	return run_model_mem(model, threads, max_plans, needs_ln, 0, NULL);
}

/* The memory bound: with max_tensor_bytes at 1.5 times the largest single
 * plan, the cached plans never hold more, and every answer is still right. */
static void t_gpt2_dec_membound(void **st)
{
	(void)st;
	size_t one = 0;
	run_model_mem("gpt2_dec", 1, 1, 0, 0, &one);
	assert_true(one > 0);
	run_model_mem("gpt2_dec", 1, 0, 0, one + one / 2, NULL);
}

static void t_bert_dec(void **st) { (void)st; run_model("bert_dec", 1, 0, 0); }
static void t_bert_dec_t2(void **st) { (void)st; run_model("bert_dec", 2, 0, 0); }
static void t_bert_dec_lru2(void **st) { (void)st; run_model("bert_dec", 1, 2, 0); }
static void t_gpt2_dec(void **st) { (void)st; run_model("gpt2_dec", 1, 0, 0); }
static void t_gpt2_dec_lru2(void **st) { (void)st; run_model("gpt2_dec", 1, 2, 0); }
static void t_bert_ln(void **st) { (void)st; run_model("bert_ln", 1, 0, 1); }
static void t_gpt2_ln(void **st) { (void)st; run_model("gpt2_ln", 1, 0, 1); }
static void t_bert_tiny(void **st) { (void)st; run_model("bert_tiny", 1, 0, 1); }

int main(void)
{
	set_dir();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_value_keyed_reshape),
		cmocka_unit_test(t_value_keyed_only_needed),
		cmocka_unit_test(t_value_keyed_bound),
		cmocka_unit_test(t_alloc_failures),
		cmocka_unit_test(t_bert_dec),
		cmocka_unit_test(t_bert_dec_t2),
		cmocka_unit_test(t_bert_dec_lru2),
		cmocka_unit_test(t_gpt2_dec),
		cmocka_unit_test(t_gpt2_dec_lru2),
		cmocka_unit_test(t_gpt2_dec_membound),
		cmocka_unit_test(t_bert_ln),
		cmocka_unit_test(t_gpt2_ln),
		cmocka_unit_test(t_bert_tiny),
	};
	return cmocka_run_group_tests_name("transformers and dynamic shapes", tests, NULL, NULL);
}
