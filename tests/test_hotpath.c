/*
 * tests/test_hotpath.c - the request path allocates nothing in steady state.
 *
 * The test program interposes malloc, calloc, realloc, posix_memalign,
 * aligned_alloc and free (the executable's definitions win over libc's for
 * every library in the process, libaidos included) and counts calls while
 * `counting` is set. After planning and warm-up runs, further runs of real
 * models must make zero calls, on 1 and on 2 threads (the pool's workers
 * count too: the counter is global and atomic), also when requests alternate
 * between two cached plans: two input shapes, or two values of a value-keyed
 * input. Sanitizer builds replace the
 * allocator themselves, so there the test is skipped and says why.
 *
 * Models come from the golden cache and its transformers/ folder (make
 * models); a missing cache fails.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "aidos/aidos.h"
#include "aidos/npy.h"

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif

static _Atomic int counting __attribute__((unused));
static _Atomic long calls __attribute__((unused));

#ifndef SANITIZED
void *__libc_malloc(size_t);
void *__libc_calloc(size_t, size_t);
void *__libc_realloc(void *, size_t);
void *__libc_memalign(size_t, size_t);
void __libc_free(void *);

static inline void note(void)
{
	if (atomic_load_explicit(&counting, memory_order_relaxed))
		atomic_fetch_add_explicit(&calls, 1, memory_order_relaxed);
}

void *malloc(size_t n) { note(); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { note(); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { note(); return __libc_realloc(p, n); }
void free(void *p) { if (p) note(); __libc_free(p); }
void *aligned_alloc(size_t al, size_t n) { note(); return __libc_memalign(al, n); }
int posix_memalign(void **out, size_t al, size_t n)
{
	note();
	void *p = __libc_memalign(al, n);
	if (!p)
		return 12; /* ENOMEM */
	*out = p;
	return 0;
}
#endif

__attribute__((unused)) static const char *cache_dir(void)
{
	static char buf[1024];
	const char *c = getenv("AIDOS_CACHE");
	if (c && *c)
		return c;
	snprintf(buf, sizeof buf, "%s/.cache/aidos", getenv("HOME") ? getenv("HOME") : ".");
	return buf;
}

typedef struct run_case {
	const char *model;            /* under models/ */
	const char *in_name[3];
	const char *in_file[3];       /* under golden/ */
	int n_in;
	int threads;
	const char *carry_in, *carry_out; /* stateful: feed this output back */
} run_case;

static void steady_state(const run_case *rc)
{
#ifdef SANITIZED
	skip();
#else
	char path[2048], err[512];
	aidos_model *m;
	aidos_session *s;
	aidos_tensor in[3];
	void *owned[3] = {0};
	snprintf(path, sizeof path, "%s/models/%s", cache_dir(), rc->model);
	if (aidos_model_load(path, &m, err, sizeof err))
		fail_msg("%s (run 'make models')", err);
	for (int i = 0; i < rc->n_in; i++) {
		snprintf(path, sizeof path, "%s/golden/%s", cache_dir(), rc->in_file[i]);
		if (aidos_npy_load(path, &in[i], &owned[i], err, sizeof err))
			fail_msg("%s: %s (run 'make models')", path, err);
		in[i].name = rc->in_name[i];
	}
	aidos_session_opts o = { .threads = rc->threads };
	assert_int_equal(aidos_session_create(m, &o, &s, err, sizeof err), 0);
	/* Plan and warm up: first-touch of the arena, the pool's threads. */
	for (int k = 0; k < 3; k++)
		assert_int_equal(aidos_session_run(s, rc->n_in, in), 0);
	/* A stateful model feeds its state back from the last output: copy it
	 * into the input's own buffer so nothing is allocated for it. */
	int carry = -1, carry_out = -1;
	for (int i = 0; rc->carry_in && i < rc->n_in; i++)
		if (!strcmp(in[i].name, rc->carry_in))
			carry = i;
	for (int k = 0; rc->carry_out && k < aidos_model_n_outputs(m); k++) {
		aidos_tensor t;
		aidos_model_output(m, k, &t);
		if (!strcmp(t.name, rc->carry_out))
			carry_out = k;
	}
	/* The interposer itself must see calls, from this file and from the
	 * library (planning for a new shape allocates), or zero proves nothing. */
	atomic_store(&calls, 0);
	atomic_store(&counting, 1);
	void *volatile probe = malloc(16);  /* volatile: the pair may not be elided */
	free(probe);
	long here = atomic_load(&calls);
	aidos_session *s2;
	assert_int_equal(aidos_session_create(m, NULL, &s2, err, sizeof err), 0);
	assert_int_equal(aidos_session_plan(s2, rc->n_in, in), 0);
	aidos_session_destroy(s2);
	long lib = atomic_load(&calls) - here;
	atomic_store(&counting, 0);
	assert_int_equal(here, 2);
	assert_true(lib > 0);
	atomic_store(&calls, 0);
	atomic_store(&counting, 1);
	int bad = 0;
	for (int k = 0; k < 20; k++) {
		if (aidos_session_run(s, rc->n_in, in))
			bad++;
		if (carry >= 0 && carry_out >= 0) {
			aidos_tensor t;
			aidos_session_output(s, carry_out, &t);
			memcpy(in[carry].data, t.data, 4 * 2 * 128);
		}
	}
	atomic_store(&counting, 0);
	long n = atomic_load(&calls);
	print_message("    %s, %d thread(s): %ld allocator calls in 20 steady-state runs\n", rc->model, rc->threads, n);
	assert_int_equal(bad, 0);
	assert_int_equal(n, 0);
	aidos_session_destroy(s);
	aidos_model_free(m);
	for (int i = 0; i < rc->n_in; i++)
		free(owned[i]);
#endif
}

/* Two input keys through one session, alternating: both plans stay in the
 * session's plan cache, so after each key's first run (which plans it) no
 * request allocates, and no request plans again. A key is the input shapes
 * (ocr rec/cls: batch and width; BERT: batch and sequence), or the values of
 * a value-keyed input (a Reshape's shape fed as a graph input). Paths are
 * under the cache; files[k][i] is input i of key k. */
typedef struct alt_case {
	const char *model;
	int n_in;
	const char *name[2];
	const char *file[2][2];
	int threads;
	int value_keyed;          /* inputs the plans must have value-keyed */
} alt_case;

static void alternating(const alt_case *ac)
{
#ifdef SANITIZED
	(void)ac;
	skip();
#else
	char path[2048], err[512];
	aidos_model *m;
	aidos_session *s;
	aidos_tensor in[2][2];
	void *owned[2][2] = { { 0 } };
	snprintf(path, sizeof path, "%s/%s", cache_dir(), ac->model);
	if (aidos_model_load(path, &m, err, sizeof err))
		fail_msg("%s (run 'make models')", err);
	for (int k = 0; k < 2; k++)
		for (int i = 0; i < ac->n_in; i++) {
			snprintf(path, sizeof path, "%s/%s", cache_dir(), ac->file[k][i]);
			if (aidos_npy_load(path, &in[k][i], &owned[k][i], err, sizeof err))
				fail_msg("%s: %s (run 'make models')", path, err);
			in[k][i].name = ac->name[i];
		}
	aidos_session_opts o = { .threads = ac->threads };
	assert_int_equal(aidos_session_create(m, &o, &s, err, sizeof err), 0);
	for (int k = 0; k < 4; k++)
		if (aidos_session_run(s, ac->n_in, in[k & 1]))
			fail_msg("%s", aidos_session_errmsg(s));
	aidos_plan_stats st;
	assert_int_equal(aidos_session_stats(s, &st), 0);
	assert_int_equal(st.cached_plans, 2);
	assert_int_equal((int)st.plans_built, 2);
	assert_int_equal(st.value_keyed, ac->value_keyed);
	atomic_store(&calls, 0);
	atomic_store(&counting, 1);
	int bad = 0;
	for (int k = 0; k < 20; k++)
		if (aidos_session_run(s, ac->n_in, in[k & 1]))
			bad++;
	atomic_store(&counting, 0);
	long n = atomic_load(&calls);
	print_message("    %s, %d thread(s), 2 %s alternating: %ld allocator calls in 20 runs\n", ac->model, ac->threads,
		      ac->value_keyed ? "input values" : "shapes", n);
	assert_int_equal(bad, 0);
	assert_int_equal(n, 0);
	assert_int_equal(aidos_session_stats(s, &st), 0);
	assert_int_equal((int)st.plans_built, 2);
	aidos_session_destroy(s);
	aidos_model_free(m);
	for (int k = 0; k < 2; k++)
		for (int i = 0; i < ac->n_in; i++)
			free(owned[k][i]);
#endif
}

#define TF "transformers/cases/"
static const alt_case alt_cases[] = {
	{ "models/ocr-models/ch_PP-OCRv4_rec_infer.onnx", 1, { "x" },
	  { { "golden/ocr_rec_320/in/x.npy" }, { "golden/ocr_rec_b2_160/in/x.npy" } }, 1, 0 },
	{ "models/ocr-models/ch_ppocr_mobile_v2.0_cls_infer.onnx", 1, { "x" },
	  { { "golden/ocr_cls_192/in/x.npy" }, { "golden/ocr_cls_b3_192/in/x.npy" } }, 2, 0 },
	{ "transformers/bert_dec.onnx", 2, { "input_ids", "attention_mask" },
	  { { TF "bert_dec/00_b1_s8/in/input_ids.npy", TF "bert_dec/00_b1_s8/in/attention_mask.npy" },
	    { TF "bert_dec/02_b3_s16/in/input_ids.npy", TF "bert_dec/02_b3_s16/in/attention_mask.npy" } }, 1, 0 },
	{ "transformers/dyn_reshape.onnx", 2, { "x", "shape" },
	  { { TF "dyn_reshape/a/in/x.npy", TF "dyn_reshape/a/in/shape.npy" },
	    { TF "dyn_reshape/b/in/x.npy", TF "dyn_reshape/b/in/shape.npy" } }, 1, 1 },
};

#define ALT(i) static void alt##i(void **st) { (void)st; alternating(&alt_cases[i]); }
ALT(0) ALT(1) ALT(2) ALT(3)

static const run_case cases[] = {
	{ "ocr-models/ch_ppocr_mobile_v2.0_cls_infer.onnx", { "x" }, { "ocr_cls_192/in/x.npy" }, 1, 1, NULL, NULL },
	{ "ocr-models/ch_ppocr_mobile_v2.0_cls_infer.onnx", { "x" }, { "ocr_cls_192/in/x.npy" }, 1, 2, NULL, NULL },
	{ "ocr-models/ch_PP-OCRv4_det_infer.onnx", { "x" }, { "ocr_det_320/in/x.npy" }, 1, 2, NULL, NULL },
	{ "ocr-models/ch_PP-OCRv4_rec_infer.onnx", { "x" }, { "ocr_rec_320/in/x.npy" }, 1, 1, NULL, NULL },
	{ "vad-web/silero_vad_v5.onnx", { "input", "state", "sr" },
	  { "vad_v5_16k/in/00_input.npy", "vad_v5_16k/in/00_state.npy", "vad_v5_16k/in/00_sr.npy" }, 3, 1,
	  "state", "stateN" },
	{ "openwakeword/melspectrogram.onnx", { "input" }, { "mel_1280/in/input.npy" }, 1, 1, NULL, NULL },
	{ "openwakeword/hey_jarvis_v0.1.onnx", { "x.1" }, { "oww_hey_jarvis/in/x.1.npy" }, 1, 1, NULL, NULL },
};

#define CASE(i) static void t##i(void **st) { (void)st; steady_state(&cases[i]); }
CASE(0) CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6)

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t0), cmocka_unit_test(t1), cmocka_unit_test(t2), cmocka_unit_test(t3),
		cmocka_unit_test(t4), cmocka_unit_test(t5), cmocka_unit_test(t6),
		cmocka_unit_test(alt0), cmocka_unit_test(alt1), cmocka_unit_test(alt2),
		cmocka_unit_test(alt3),
	};
	return cmocka_run_group_tests_name("hotpath: no allocation per request", tests, NULL, NULL);
}
