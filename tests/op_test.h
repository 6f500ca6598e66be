/*
 * tests/op_test.h - what the op tests (test_conv*, test_gemm*, test_matmul,
 * test_ops) share: a seeded random fill, the ONNX pieces of a one-node
 * model (initializers, attributes, value infos, the ModelProto around a
 * graph; on tests/pb_write.h), a model run through the public API on N
 * threads, a walk over every GEMM micro-kernel this CPU runs
 * (hal_gemm_use_isa), the relative-tolerance comparison against a
 * reference, and a plan shell for hand-made hal steps.
 *
 * Include after <cmocka.h>: failures (allocation, load, run) fail the
 * running test. Everything here is static inline, test-only.
 *
 *   pbw g = { 0 }, bytes;
 *   ot_init(&g, "W", 4, wd, w);  ...nodes...;  ot_model(&bytes, &g, 14, "y");
 *   for (ot_isa_iter it = { 0 }; ot_isa_next(&it);)
 *           got = ot_run(&bytes, 1, &in, threads, &n, &steps, name);
 */
#ifndef AIDOS_TESTS_OP_TEST_H
#define AIDOS_TESTS_OP_TEST_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "aidos/aidos.h"
#include "hal/gemm.h"
#include "hal/hal.h"
#include "hal/ir.h"
#include "hal/model.h"
#include "hal/plan.h"
#include "tests/pb_write.h"

/* ---- seeded random numbers ---- */

/* The xorshift64 state every ot_frand draws from; a test that wants its
 * own sequence sets it once before its first draw (main). */
static uint64_t ot_rng = 0x9e3779b97f4a7c15ull;

/* A float uniform in [lo, hi) from ot_rng (53 bits of it). */
static inline float ot_frand(float lo, float hi)
{
	ot_rng ^= ot_rng << 13;
	ot_rng ^= ot_rng >> 7;
	ot_rng ^= ot_rng << 17;
	return lo + (hi - lo) * (float)((ot_rng >> 11) * (1.0 / 9007199254740992.0));
}

/* Fills v[0..n) with ot_frand(lo, hi), in index order. */
static inline void ot_fill(float *v, size_t n, float lo, float hi)
{
	for (size_t i = 0; i < n; i++)
		v[i] = ot_frand(lo, hi);
}

/* malloc'd n floats (at least one) filled by ot_fill(lo, hi); the caller
 * frees. */
static inline float *ot_rand_new(size_t n, float lo, float hi)
{
	float *v = malloc((n ? n : 1) * sizeof *v);
	assert_non_null(v);
	ot_fill(v, n, lo, hi);
	return v;
}

/* A float in [-1, 1) from the top 24 bits of ot_rng (multiples of 2^-23),
 * as the hand-made-step tests (test_conv, test_gemm) draw them. */
static inline float ot_frand24(void)
{
	ot_rng ^= ot_rng << 13;
	ot_rng ^= ot_rng >> 7;
	ot_rng ^= ot_rng << 17;
	return (float)((double)(ot_rng >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f;
}

/* malloc'd n floats (at least one) from ot_frand24; the caller frees. */
static inline float *ot_rand_buf(size_t n)
{
	float *p = malloc((n ? n : 1) * sizeof *p);
	assert_non_null(p);
	for (size_t i = 0; i < n; i++)
		p[i] = ot_frand24();
	return p;
}

/* ---- ONNX protobuf pieces (field numbers from onnx.proto) ---- */

/* Appends a float32 TensorProto {dims 1, data_type 2, name 8, raw_data 9}
 * named name, of shape dims[0..rank) and values v, to graph g as an
 * initializer (GraphProto field 5). name and v are copied. */
static inline void ot_init(pbw *g, const char *name, int rank, const int64_t *dims, const float *v)
{
	pbw t = { 0 };
	int64_t n = 1;
	for (int i = 0; i < rank; i++) {
		pbw_int(&t, 1, dims[i]);
		n *= dims[i];
	}
	pbw_int(&t, 2, 1);
	pbw_str(&t, 8, name);
	pbw_bytes(&t, 9, v, (size_t)n * sizeof *v);
	pbw_take(g, 5, &t);
}

/* Appends AttributeProto name = ints v[0..n) (type INTS) to node. */
static inline void ot_attr_ints(pbw *node, const char *name, const int64_t *v, int n)
{
	pbw a = { 0 };
	pbw_str(&a, 1, name);
	for (int i = 0; i < n; i++)
		pbw_int(&a, 8, v[i]);
	pbw_int(&a, 20, 7);
	pbw_take(node, 5, &a);
}

/* Appends AttributeProto name = v (type INT) to node. */
static inline void ot_attr_int(pbw *node, const char *name, int64_t v)
{
	pbw a = { 0 };
	pbw_str(&a, 1, name);
	pbw_int(&a, 3, v);
	pbw_int(&a, 20, 2);
	pbw_take(node, 5, &a);
}

/* Appends AttributeProto name = v (type FLOAT, field 2 as a fixed32) to
 * node. */
static inline void ot_attr_float(pbw *node, const char *name, float v)
{
	pbw a = { 0 };
	pbw_str(&a, 1, name);
	pbw_varint(&a, 2 << 3 | 5);
	pbw_raw(&a, &v, 4);
	pbw_int(&a, 20, 1);
	pbw_take(node, 5, &a);
}

/* Appends ValueInfoProto {name 1, type 2 {tensor_type 1 {elem_type 1
 * (float), shape 2 {dim 1 {dim_value 1}}}}} to g's field (11 input, 12
 * output); rank < 0 writes the name alone (shape left to inference). */
static inline void ot_value_info(pbw *g, int field, const char *name, int rank, const int64_t *dims)
{
	pbw vi = { 0 }, ty = { 0 }, tt = { 0 }, sh = { 0 };
	for (int i = 0; i < rank; i++) {
		pbw dm = { 0 };
		pbw_int(&dm, 1, dims[i]);
		pbw_take(&sh, 1, &dm);
	}
	pbw_int(&tt, 1, 1);
	pbw_take(&tt, 2, &sh);
	pbw_take(&ty, 1, &tt);
	pbw_str(&vi, 1, name);
	if (rank >= 0)
		pbw_take(&vi, 2, &ty);
	pbw_take(g, field, &vi);
	free(ty.b);
}

/* Names graph g "g", declares output y (name only: the shape is left to
 * inference; none where y is NULL), then writes into *out (overwritten,
 * the caller frees out->b) a ModelProto {ir_version 8, graph g,
 * opset_import {domain "", version opset}}; g is freed and emptied. */
static inline void ot_model(pbw *out, pbw *g, int opset, const char *y)
{
	pbw op = { 0 };
	pbw_str(g, 2, "g");
	if (y)
		ot_value_info(g, 12, y, -1, NULL);
	memset(out, 0, sizeof *out);
	pbw_int(out, 1, 8);
	pbw_take(out, 7, g);
	pbw_str(&op, 1, "");
	pbw_int(&op, 2, opset);
	pbw_take(out, 8, &op);
}

/* ---- running a model ---- */

/* Loads the model in bytes into *m and creates a session on it with
 * threads threads into *s; the caller frees both (aidos_session_destroy,
 * then aidos_model_free). A failed load or session fails the test with
 * what and the library's message. */
static inline void ot_open(const pbw *bytes, int threads, aidos_model **m, aidos_session **s,
			   const char *what)
{
	char err[256] = "";
	if (aidos_model_load_buffer(bytes->b, bytes->n, NULL, m, err, sizeof err))
		fail_msg("%s: load: %s", what, err);
	aidos_session_opts o = { 0 };
	o.threads = threads;
	if (aidos_session_create(*m, &o, s, err, sizeof err))
		fail_msg("%s: session: %s", what, err);
}

/* Loads the model in bytes, runs it once on threads threads with inputs
 * in[0..n_in) and returns a malloc'd copy of output 0 (the caller frees),
 * its element count in *n and, where steps is not NULL, the plan's step
 * count in *steps. A failed load, session or run fails the test with
 * what (the case's name) and the library's message. */
static inline float *ot_run(const pbw *bytes, int n_in, const aidos_tensor *in, int threads,
			    int64_t *n, int *steps, const char *what)
{
	aidos_model *m;
	aidos_session *s;
	ot_open(bytes, threads, &m, &s, what);
	if (aidos_session_run(s, n_in, in))
		fail_msg("%s: run: %s", what, aidos_session_errmsg(s));
	aidos_tensor y;
	assert_int_equal(aidos_session_output(s, 0, &y), 0);
	*n = 1;
	for (int i = 0; i < y.rank; i++)
		*n *= y.dims[i];
	float *out = malloc((size_t)(*n ? *n : 1) * sizeof *out);
	assert_non_null(out);
	memcpy(out, y.data, (size_t)*n * sizeof *out);
	if (steps) {
		aidos_plan_stats st;
		assert_int_equal(aidos_session_stats(s, &st), 0);
		*steps = st.steps;
	}
	aidos_session_destroy(s);
	aidos_model_free(m);
	return out;
}

/* ot_run on one thread with the scalar reference kernels and nothing
 * fused (hal_use_reference set while loading and running, then cleared):
 * the independent reference of a fast run. */
static inline float *ot_run_ref(const pbw *bytes, int n_in, const aidos_tensor *in, int64_t *n,
				const char *what)
{
	hal_use_reference = 1;
	float *ref = ot_run(bytes, n_in, in, 1, n, NULL, what);
	hal_use_reference = 0;
	return ref;
}

/* ---- every micro-kernel ---- */

/* A walk over the GEMM ISAs; { 0 } starts one. */
typedef struct ot_isa_iter {
	size_t i;
	const char *def;   /* hal_gemm_isa() when the walk began */
} ot_isa_iter;

/* Selects the next ISA of avx512, avx2, generic this CPU runs and returns
 * its name; after the last, restores the ISA the walk began with and
 * returns NULL. A test that fails mid-walk leaves its ISA selected. */
static inline const char *ot_isa_next(ot_isa_iter *it)
{
	static const char *const isas[] = { "avx512", "avx2", "generic" };
	if (!it->def)
		it->def = hal_gemm_isa();
	while (it->i < sizeof isas / sizeof isas[0]) {
		const char *s = isas[it->i++];
		if (hal_gemm_use_isa(s) == 0)
			return s;
	}
	hal_gemm_use_isa(it->def);
	return NULL;
}

/* ---- comparing with a reference ---- */

/* The first k in [0, n) with !(|got[k] - want[k]| <= tol (1 + |want[k]|)),
 * computed in double (NaN fails), or -1 where every element is within. */
static inline int64_t ot_far(const float *got, const double *want, int64_t n, double tol)
{
	for (int64_t k = 0; k < n; k++)
		if (!(fabs(got[k] - want[k]) <= tol * (1 + fabs(want[k]))))
			return k;
	return -1;
}

/* The same against a float reference, computed in float. */
static inline int64_t ot_far_f(const float *got, const float *ref, int64_t n, float tol)
{
	for (int64_t k = 0; k < n; k++)
		if (!(fabsf(got[k] - ref[k]) <= tol * (1 + fabsf(ref[k]))))
			return k;
	return -1;
}

/* Runs bytes with inputs in[0..n_in) on 1 and 2 threads, on every ISA of
 * ot_isa_next where all_isas is set (else on the selected one), and checks
 * each run: n elements in output 0, want_steps plan steps (unless < 0),
 * every element within tol (1 + |ref|) of want (double, where not NULL)
 * or else of ref (float, compared in float). Fails the test naming what,
 * the ISA, the threads and the first element off. */
static inline void ot_check_runs(const pbw *bytes, int n_in, const aidos_tensor *in, int all_isas,
				 const double *want, const float *ref, int64_t n, double tol,
				 int want_steps, const char *what)
{
	ot_isa_iter it = { 0 };
	const char *isa = all_isas ? ot_isa_next(&it) : hal_gemm_isa();
	for (; isa; isa = all_isas ? ot_isa_next(&it) : NULL)
		for (int threads = 1; threads <= 2; threads++) {
			int64_t got_n;
			int steps;
			float *got = ot_run(bytes, n_in, in, threads, &got_n, &steps, what);
			if (got_n != n)
				fail_msg("%s: %lld elements, want %lld", what, (long long)got_n,
					 (long long)n);
			if (want_steps >= 0 && steps != want_steps)
				fail_msg("%s: %d steps, want %d", what, steps, want_steps);
			int64_t k = want ? ot_far(got, want, n, tol) : ot_far_f(got, ref, n, (float)tol);
			if (k >= 0)
				fail_msg("%s (%s, %d threads): y[%lld] = %.9g, want %.9g", what, isa,
					 threads, (long long)k, got[k], want ? want[k] : ref[k]);
			free(got);
		}
}

/* ot_check_runs against ot_run_ref: the fast plan (fused; on every ISA
 * where all_isas is set) against the scalar reference kernels on the same
 * inputs, elementwise within tol in float, with want_steps plan steps
 * (unless < 0). */
static inline void ot_check_vs_ref(const pbw *bytes, int n_in, const aidos_tensor *in, int all_isas,
				   double tol, int want_steps, const char *what)
{
	int64_t nr;
	float *ref = ot_run_ref(bytes, n_in, in, &nr, what);
	ot_check_runs(bytes, n_in, in, all_isas, NULL, ref, nr, tol, want_steps, what);
	free(ref);
}

/* ---- the definition of ONNX Conv ---- */

/* A 2-D Conv: X [n, c, h, w], W [m, c / group, kh, kw], strides, dilations,
 * pads top, left, bottom, right. */
typedef struct ot_conv_shape {
	int64_t n, c, h, w, m, group, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr;
} ot_conv_shape;

/* Output length of one spatial axis (ONNX Conv, explicit pads). */
static inline int64_t ot_conv_out_len(int64_t in, int64_t k, int64_t s, int64_t d, int64_t p0,
				      int64_t p1)
{
	return (in + p0 + p1 - (k - 1) * d - 1) / s + 1;
}

/* y [n, m, oh, ow] = b[o] (0 where b is NULL) + sum over the group's
 * channels c and taps ky, kx of x[n, c, oy*sh-pt+ky*dh, ox*sw-pl+kx*dw]
 * w[o, c, ky, kx], in double; taps outside X read 0. */
static inline void ot_conv_ref(const ot_conv_shape *t, const float *x, const float *w,
			       const float *b, double *y)
{
	int64_t oh = ot_conv_out_len(t->h, t->kh, t->sh, t->dh, t->pt, t->pb);
	int64_t ow = ot_conv_out_len(t->w, t->kw, t->sw, t->dw, t->pl, t->pr);
	int64_t cg = t->c / t->group, mg = t->m / t->group;
	for (int64_t n = 0; n < t->n; n++)
	for (int64_t o = 0; o < t->m; o++)
	for (int64_t oy = 0; oy < oh; oy++)
	for (int64_t ox = 0; ox < ow; ox++) {
		double acc = b ? b[o] : 0;
		for (int64_t c = 0; c < cg; c++)
		for (int64_t ky = 0; ky < t->kh; ky++)
		for (int64_t kx = 0; kx < t->kw; kx++) {
			int64_t iy = oy * t->sh - t->pt + ky * t->dh;
			int64_t ix = ox * t->sw - t->pl + kx * t->dw;
			if (iy < 0 || iy >= t->h || ix < 0 || ix >= t->w)
				continue;
			int64_t ci = o / mg * cg + c;
			acc += (double)x[((n * t->c + ci) * t->h + iy) * t->w + ix] *
			       w[((o * cg + c) * t->kh + ky) * t->kw + kx];
		}
		y[((n * t->m + o) * oh + oy) * ow + ox] = acc;
	}
}

/* One Conv case's data: x [n, c, h, w], w [m, c / group, kh, kw], b [m]
 * and the reference output want [n, m, oh, ow] of ny elements. */
typedef struct ot_conv_data {
	float *x, *w, *b;
	double *want;
	int64_t ny;
} ot_conv_data;

/* Draws d->x in [-2, 2), then d->w and d->b in [-1, 1) (malloc'd, in that
 * order), and computes d->want (malloc'd) by ot_conv_ref with b where bias
 * is set, else without. Freed by ot_conv_data_fini. */
static inline void ot_conv_data_init(ot_conv_data *d, const ot_conv_shape *t, int bias)
{
	int64_t oh = ot_conv_out_len(t->h, t->kh, t->sh, t->dh, t->pt, t->pb);
	int64_t ow = ot_conv_out_len(t->w, t->kw, t->sw, t->dw, t->pl, t->pr);
	d->ny = t->n * t->m * oh * ow;
	d->x = ot_rand_new((size_t)(t->n * t->c * t->h * t->w), -2, 2);
	d->w = ot_rand_new((size_t)(t->m * (t->c / t->group) * t->kh * t->kw), -1, 1);
	d->b = ot_rand_new((size_t)t->m, -1, 1);
	d->want = malloc((size_t)(d->ny ? d->ny : 1) * sizeof *d->want);
	assert_non_null(d->want);
	ot_conv_ref(t, d->x, d->w, bias ? d->b : NULL, d->want);
}

/* Frees what ot_conv_data_init allocated. */
static inline void ot_conv_data_fini(ot_conv_data *d)
{
	free(d->x);
	free(d->w);
	free(d->b);
	free(d->want);
	memset(d, 0, sizeof *d);
}

/* ---- hand-made hal steps ---- */

/* An INTS attribute borrowing v[0..n). */
static inline ir_attr ot_ints_attr(const char *name, const int64_t *v, int n)
{
	ir_attr a = { .name = name, .type = IR_ATTR_INTS, .n = n, .ints = (int64_t *)v };
	return a;
}

/* 64-byte aligned scratch of at least n bytes (free()); fails the test
 * when out of memory. */
static inline void *ot_scratch_alloc(size_t n)
{
	void *p = aligned_alloc(64, (n + 64) / 64 * 64);
	assert_non_null(p);
	return p;
}

/* A plan shell for hand-made steps: hal_step_alloc's arena, an error
 * buffer and (threads > 1) a thread pool for hal_parallel_for. Freed by
 * ot_plan_del. */
static inline hal_plan *ot_plan_new(int threads)
{
	hal_plan *p = calloc(1, sizeof *p);
	assert_non_null(p);
	if (threads > 1)
		assert_int_equal(hal_threadpool_create(threads, &p->tp), 0);
	return p;
}

/* Runs node (its op_type, attributes and epilogue) as one step of plan p
 * on in[0..nin): infer sets *y's shape (y is overwritten), exec writes its
 * data into a malloc'd buffer returned to the caller (y->data points
 * there), with scratch as the op asks. A failed infer or exec fails the
 * test naming node->name and p's message. */
static inline float *ot_step_run(hal_plan *p, const ir_node *node, hal_tensor *const *in, int nin,
				 hal_tensor *y)
{
	hal_tensor *outs[1] = { y };
	hal_step s = { .op = hal_op_find(node->op_type), .node = node, .opset = 17, .n_in = nin,
		       .n_out = 1, .in = (hal_tensor **)in, .out = outs, .plan = p };
	assert_non_null(s.op);
	memset(y, 0, sizeof *y);
	int rc = s.op->infer(&s);
	if (rc)
		fail_msg("%s: infer failed (%d): %s", node->name, rc, p->err);
	float *out = malloc(hal_nbytes(y) + sizeof(float));
	assert_non_null(out);
	y->data = out;
	s.scratch = s.scratch_bytes ? ot_scratch_alloc(s.scratch_bytes) : NULL;
	if ((rc = s.op->exec(&s)))
		fail_msg("%s: exec failed (%d): %s", node->name, rc, p->err);
	free(s.scratch);
	return out;
}

/* Runs one hand-made step with ctx's case on in[0..nin); returns its output
 * (malloc'd) and the output's shape in *y. mag is set on the magnitude run
 * of ot_fast_ref_mag (where a caller drops its epilogue). */
typedef float *(*ot_step_fn)(void *ctx, hal_tensor *const *in, int nin, int mag, hal_tensor *y);

/* The three runs of a test that bounds |fast - reference| by magnitudes
 * (Higham 3.1: relative to sum |w x| + |b|): run on the fast kernels into
 * out[0], on the scalar reference kernels into out[1], then on the
 * reference kernels with each in[i]'s data replaced by its absolute
 * values into out[2] (mag set). Outputs are malloc'd (the caller frees
 * them), their shapes in y[0..3); in[]'s data pointers are restored and
 * hal_use_reference is left 0. At most 8 inputs. */
static inline void ot_fast_ref_mag(ot_step_fn run, void *ctx, hal_tensor *const *in, int nin,
				   float **out, hal_tensor *y)
{
	void *keep[8];
	assert_true(nin <= 8);
	hal_use_reference = 0;
	out[0] = run(ctx, in, nin, 0, &y[0]);
	hal_use_reference = 1;
	out[1] = run(ctx, in, nin, 0, &y[1]);
	for (int i = 0; i < nin; i++) {
		size_t n = (size_t)hal_numel(in[i]);
		const float *v = in[i]->data;
		float *a = malloc((n ? n : 1) * sizeof *a);
		assert_non_null(a);
		for (size_t k = 0; k < n; k++)
			a[k] = fabsf(v[k]);
		keep[i] = in[i]->data;
		in[i]->data = a;
	}
	out[2] = run(ctx, in, nin, 1, &y[2]);
	hal_use_reference = 0;
	for (int i = 0; i < nin; i++) {
		free(in[i]->data);
		in[i]->data = keep[i];
	}
}

/* Frees a plan from ot_plan_new: its pool, its arena, itself. */
static inline void ot_plan_del(hal_plan *p)
{
	if (p->tp)
		hal_threadpool_destroy(p->tp);
	ir_mem_free(&p->mem);
	free(p);
}

#endif
