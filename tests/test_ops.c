/*
 * tests/test_ops.c - kernels and forms the ONNX 1.12 conformance data does
 * not cover, each against a scalar reference written here:
 *   - Gelu (opset 20, approximate "none" and "tanh"): 0.5 x (1 + erf(x/sqrt 2))
 *     and 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) in double;
 *   - Einsum in the forms transformer exports use (attention scores
 *     "bhqd,bhkd->bhqk", context "bhqk,bhkd->bhqd", batch matmul, broadcast
 *     ellipsis, transpose, diagonal, sums, implicit output) against
 *     explicit loops;
 *   - LayerNormalization with one value for Scale and B, with Mean and
 *     InvStdDev outputs, against a two-pass double computation;
 *   - Split by num_outputs (opset 18), MatMul with batch broadcasting and a
 *     1-D operand, Softmax over rows masked with -inf and float32's minimum;
 *   - bad attributes: AIDOS_E_INVALID with a message naming the node and
 *     the attribute (never a crash); a loss target out of range fails that
 *     request with AIDOS_E_RANGE and the next request runs;
 *   - NonZero of a graph input, planned value-keyed per distinct value,
 *     against a loop; over the session's 64-element bound a clear error;
 *   - Cast float32 <-> bfloat16: nearest-even rounding against a double
 *     reference, exact widening;
 *   - Loop (no scan outputs) ended by its body's condition or by M, both
 *     known only at run time, against a closed form;
 *   - a chain of elementwise ops the planner fuses into one blocked step
 *     (hal/plan.c): scalar operands, a value read twice inside the group and
 *     one read after it (stored), a Clip with run-time bounds that ends a
 *     group, sizes under, at and over the block with a tail, on 1 and 2
 *     threads, against a double loop;
 *   - decomposed LayerNorm (ReduceMean/Sub/Mul or Pow/ReduceMean/Add/Sqrt/
 *     Div, with and without gamma and beta) that the planner replaces with
 *     one LayerNormalization step (hal/fuse_xfmr.c), and the same graph with
 *     an intermediate also a graph output (not fused), against a double
 *     two-pass LayerNorm;
 *   - MaxPool whose windows tile the input (kernel = stride, 1 or 2 per
 *     axis: hal/ops/nn.c's vector path) with vector tails, odd sizes, NaN
 *     and -inf, on 1 and 2 threads, against a loop (exact).
 * Each case is a one-node model written here as ONNX protobuf bytes (a
 * minimal encoder below, field numbers from onnx.proto) and run through the
 * public API (aidos_model_load_buffer, aidos_session_run).
 * Tolerance: |got - want| <= 1e-5 + 1e-5 |want| (float32 results of float64
 * references; sums here are at most a few dozen terms).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tests/op_test.h"

/* ---- protobuf: tests/pb_write.h; sub-messages are appended with pbw_put
 * and reused (static buffers, emptied with .n = 0) ---- */

/* AttributeProto: name 1, f 2, i 3, s 4, type 20 (FLOAT 1, INT 2, STRING 3). */
static void attr_int(pbw *node, const char *name, int64_t v)
{
	static pbw a;
	a.n = 0;
	pbw_str(&a, 1, name);
	pbw_int(&a, 3, v);
	pbw_int(&a, 20, 2);
	pbw_put(node, 5, &a);
}

static void attr_float(pbw *node, const char *name, float v)
{
	static pbw a;
	a.n = 0;
	pbw_str(&a, 1, name);
	pbw_varint(&a, 2 << 3 | 5);
	pbw_raw(&a, &v, 4);
	pbw_int(&a, 20, 1);
	pbw_put(node, 5, &a);
}

static void attr_str(pbw *node, const char *name, const char *v)
{
	static pbw a;
	a.n = 0;
	pbw_str(&a, 1, name);
	pbw_str(&a, 4, v);
	pbw_int(&a, 20, 3);
	pbw_put(node, 5, &a);
}

/* ValueInfoProto {name 1, type 2 {tensor_type 1 {elem_type 1, shape 2 {dim 1 {dim_value 1}}}}} */
static void value_info(pbw *graph, int field, const char *name, int dtype, int rank,
		       const int64_t *dims)
{
	static pbw vi, ty, tt, sh, dm;
	sh.n = 0;
	for (int i = 0; i < rank; i++) {
		dm.n = 0;
		pbw_int(&dm, 1, dims[i]);
		pbw_put(&sh, 1, &dm);
	}
	tt.n = 0;
	pbw_int(&tt, 1, dtype);
	pbw_put(&tt, 2, &sh);
	ty.n = 0;
	pbw_put(&ty, 1, &tt);
	vi.n = 0;
	pbw_str(&vi, 1, name);
	pbw_put(&vi, 2, &ty);
	pbw_put(graph, field, &vi);
}

/* io literals below name only what they need; dtype defaults to float32 */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

typedef struct io {
	const char *name;
	int rank;
	int64_t dims[8];
	int dtype;           /* 0: float32 */
} io;

/* ModelProto {ir_version 1, graph 7, opset_import 8 {domain 1, version 2}}
 * with nodes[0..n) (NodeProto: input 1, output 2, name 3, op_type 4). Outputs
 * have no shape in the file (rank -1 there): the planner infers them. */
static void model_nodes(pbw *out, int opset, const pbw *nodes, int n, const io *in, int n_in,
			const char *const *outs, int n_out)
{
	static pbw g, op;
	g.n = 0;
	for (int i = 0; i < n; i++)
		pbw_put(&g, 1, &nodes[i]);
	pbw_str(&g, 2, "g");
	for (int i = 0; i < n_in; i++)
		value_info(&g, 11, in[i].name, in[i].dtype ? in[i].dtype : AIDOS_DT_FLOAT, in[i].rank,
			   in[i].dims);
	for (int i = 0; i < n_out; i++) {
		static pbw vi;
		vi.n = 0;
		pbw_str(&vi, 1, outs[i]);
		pbw_put(&g, 12, &vi);
	}
	out->n = 0;
	pbw_int(out, 1, 8);
	pbw_put(out, 7, &g);
	op.n = 0;
	pbw_str(&op, 1, "");
	pbw_int(&op, 2, opset);
	pbw_put(out, 8, &op);
}

/* One node. */
static void model(pbw *out, int opset, const pbw *node, const io *in, int n_in, const char *const *outs,
		  int n_out)
{
	model_nodes(out, opset, node, 1, in, n_in, outs, n_out);
}

static void node_begin(pbw *node, const char *op_type, const char *const *ins, int n_in,
		       const char *const *outs, int n_out)
{
	node->n = 0;
	for (int i = 0; i < n_in; i++)
		pbw_str(node, 1, ins[i]);
	for (int i = 0; i < n_out; i++)
		pbw_str(node, 2, outs[i]);
	pbw_str(node, 3, "n0");
	pbw_str(node, 4, op_type);
}

/* Loads bytes and runs them on inputs x[i] (float32, shapes from in[]);
 * returns the session (outputs readable) or NULL with err filled. */
static aidos_session *run_model(const pbw *bytes, aidos_model **m, const io *in, void *const *x,
				int n_in, int *rc, char *err, size_t errlen)
{
	*rc = aidos_model_load_buffer(bytes->b, bytes->n, NULL, m, err, errlen);
	if (*rc)
		return NULL;
	aidos_session *s = NULL;
	*rc = aidos_session_create(*m, NULL, &s, err, errlen);
	if (*rc) {
		aidos_model_free(*m);
		return NULL;
	}
	aidos_tensor t[8];
	for (int i = 0; i < n_in; i++) {
		memset(&t[i], 0, sizeof t[i]);
		t[i].name = in[i].name;
		t[i].dtype = in[i].dtype ? in[i].dtype : AIDOS_DT_FLOAT;
		t[i].rank = in[i].rank;
		memcpy(t[i].dims, in[i].dims, sizeof t[i].dims);
		t[i].data = x[i];
	}
	*rc = aidos_session_run(s, n_in, t);
	if (*rc) {
		snprintf(err, errlen, "%s", aidos_session_errmsg(s));
		aidos_session_destroy(s);
		aidos_model_free(*m);
		return NULL;
	}
	return s;
}

static void close_model(aidos_session *s, aidos_model *m)
{
	aidos_session_destroy(s);
	aidos_model_free(m);
}

static void check_close(const float *got, const double *want, int64_t n, const char *what)
{
	for (int64_t i = 0; i < n; i++)
		if (!(fabs(got[i] - want[i]) <= 1e-5 + 1e-5 * fabs(want[i])))
			fail_msg("%s: element %lld is %.9g, want %.9g", what, (long long)i, got[i], want[i]);
}

/* ---- Gelu ---- */

static void gelu_case(const char *approx)
{
	enum { N = 201 };
	float x[N];
	double want[N];
	const int tanh_form = approx && !strcmp(approx, "tanh");
	for (int i = 0; i < N; i++) {
		double v = -8.0 + 16.0 * i / (N - 1);
		x[i] = (float)v;
		v = x[i];
		if (tanh_form)
			want[i] = 0.5 * v * (1 + tanh(sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
		else
			want[i] = 0.5 * v * (1 + erf(v / sqrt(2.0)));
	}
	static pbw node, bytes;
	const char *ins[] = { "x" }, *outs[] = { "y" };
	node_begin(&node, "Gelu", ins, 1, outs, 1);
	if (approx)
		attr_str(&node, "approximate", approx);
	io in = { "x", 1, { N } };
	model(&bytes, 20, &node, &in, 1, outs, 1);
	aidos_model *m;
	char err[256];
	int rc;
	float *xp[] = { x };
	aidos_session *s = run_model(&bytes, &m, &in, (void *const *)xp, 1, &rc, err, sizeof err);
	if (!s)
		fail_msg("Gelu %s: %s", approx ? approx : "none", err);
	aidos_tensor y;
	assert_int_equal(aidos_session_output(s, 0, &y), 0);
	assert_int_equal(y.rank, 1);
	assert_int_equal(y.dims[0], N);
	check_close(y.data, want, N, tanh_form ? "Gelu tanh" : "Gelu");
	close_model(s, m);
}

static void test_gelu(void **st)
{
	(void)st;
	gelu_case("tanh");
	gelu_case(NULL);
	gelu_case("none");
}

/* ---- Einsum ---- */

/* Runs equation on a [ra] and (when rb >= 0) b [rb] and returns the session. */
static aidos_session *einsum_run(const char *eq, const io *in, int n_in, float *const *x, aidos_model **m)
{
	static pbw node, bytes;
	const char *ins[] = { "a", "b" }, *outs[] = { "y" };
	node_begin(&node, "Einsum", ins, n_in, outs, 1);
	attr_str(&node, "equation", eq);
	model(&bytes, 12, &node, in, n_in, outs, 1);
	char err[256];
	int rc;
	aidos_session *s = run_model(&bytes, m, in, (void *const *)x, n_in, &rc, err, sizeof err);
	if (!s)
		fail_msg("Einsum '%s': %s", eq, err);
	return s;
}

static void fill(float *x, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		x[i] = ot_frand(-1, 1);
}

static void expect_out(aidos_session *s, int rank, const int64_t *dims, const double *want,
		       const char *what)
{
	aidos_tensor y;
	assert_int_equal(aidos_session_output(s, 0, &y), 0);
	assert_int_equal(y.rank, rank);
	int64_t n = 1;
	for (int i = 0; i < rank; i++) {
		assert_int_equal(y.dims[i], dims[i]);
		n *= dims[i];
	}
	check_close(y.data, want, n, what);
}

static void test_einsum_attention(void **st)
{
	(void)st;
	enum { B = 2, H = 3, Q = 4, K = 5, D = 6 };
	static float q[B * H * Q * D], k[B * H * K * D], p[B * H * Q * K], v[B * H * K * D];
	static double want[B * H * Q * K * 8];
	fill(q, B * H * Q * D);
	fill(k, B * H * K * D);
	fill(p, B * H * Q * K);
	fill(v, B * H * K * D);
	aidos_model *m;

	/* scores: bhqd,bhkd->bhqk */
	io in1[] = { { "a", 4, { B, H, Q, D } }, { "b", 4, { B, H, K, D } } };
	float *x1[] = { q, k };
	aidos_session *s = einsum_run("bhqd,bhkd->bhqk", in1, 2, x1, &m);
	for (int b = 0; b < B; b++)
		for (int h = 0; h < H; h++)
			for (int i = 0; i < Q; i++)
				for (int j = 0; j < K; j++) {
					double acc = 0;
					for (int d = 0; d < D; d++)
						acc += (double)q[((b * H + h) * Q + i) * D + d] *
						       k[((b * H + h) * K + j) * D + d];
					want[((b * H + h) * Q + i) * K + j] = acc;
				}
	expect_out(s, 4, (int64_t[]){ B, H, Q, K }, want, "bhqd,bhkd->bhqk");
	close_model(s, m);

	/* context: bhqk,bhkd->bhqd */
	io in2[] = { { "a", 4, { B, H, Q, K } }, { "b", 4, { B, H, K, D } } };
	float *x2[] = { p, v };
	s = einsum_run("bhqk,bhkd->bhqd", in2, 2, x2, &m);
	for (int b = 0; b < B; b++)
		for (int h = 0; h < H; h++)
			for (int i = 0; i < Q; i++)
				for (int d = 0; d < D; d++) {
					double acc = 0;
					for (int j = 0; j < K; j++)
						acc += (double)p[((b * H + h) * Q + i) * K + j] *
						       v[((b * H + h) * K + j) * D + d];
					want[((b * H + h) * Q + i) * D + d] = acc;
				}
	expect_out(s, 4, (int64_t[]){ B, H, Q, D }, want, "bhqk,bhkd->bhqd");
	close_model(s, m);

	/* the same through a broadcast ellipsis: ...qk,...kd (implicit output
	 * would be ...dq: letters in ASCII order), explicit here */
	s = einsum_run("...qk,...kd->...qd", in2, 2, x2, &m);
	expect_out(s, 4, (int64_t[]){ B, H, Q, D }, want, "...qk,...kd->...qd");
	close_model(s, m);
}

static void test_einsum_forms(void **st)
{
	(void)st;
	enum { B = 3, I = 4, J = 5, KK = 2 };
	static float a[B * I * J], b[B * J * KK], sq[B * I * I], row[J];
	static double want[B * I * J * KK];
	fill(a, B * I * J);
	fill(b, B * J * KK);
	fill(sq, B * I * I);
	fill(row, J);
	aidos_model *m;

	/* batch matmul, spaces allowed */
	io in1[] = { { "a", 3, { B, I, J } }, { "b", 3, { B, J, KK } } };
	float *x1[] = { a, b };
	aidos_session *s = einsum_run("bij, bjk -> bik", in1, 2, x1, &m);
	for (int t = 0; t < B; t++)
		for (int i = 0; i < I; i++)
			for (int k = 0; k < KK; k++) {
				double acc = 0;
				for (int j = 0; j < J; j++)
					acc += (double)a[(t * I + i) * J + j] * b[(t * J + j) * KK + k];
				want[(t * I + i) * KK + k] = acc;
			}
	expect_out(s, 3, (int64_t[]){ B, I, KK }, want, "bij,bjk->bik");
	close_model(s, m);

	/* implicit output: "bij,bjk" is "ik", b used twice is summed (numpy) */
	s = einsum_run("bij,bjk", in1, 2, x1, &m);
	double ik[I * KK] = { 0 };
	for (int t = 0; t < B; t++)
		for (int i = 0; i < I * KK; i++)
			ik[i] += want[t * I * KK + i];
	expect_out(s, 2, (int64_t[]){ I, KK }, ik, "bij,bjk");
	close_model(s, m);

	/* transpose of the last two dims */
	io in2[] = { { "a", 3, { B, I, J } } };
	float *x2[] = { a };
	s = einsum_run("bij->bji", in2, 1, x2, &m);
	for (int t = 0; t < B; t++)
		for (int i = 0; i < I; i++)
			for (int j = 0; j < J; j++)
				want[(t * J + j) * I + i] = a[(t * I + i) * J + j];
	expect_out(s, 3, (int64_t[]){ B, J, I }, want, "bij->bji");
	close_model(s, m);

	/* sums: over j, and over everything */
	s = einsum_run("bij->bi", in2, 1, x2, &m);
	double all = 0;
	for (int t = 0; t < B; t++)
		for (int i = 0; i < I; i++) {
			double acc = 0;
			for (int j = 0; j < J; j++)
				acc += a[(t * I + i) * J + j];
			want[t * I + i] = acc;
			all += acc;
		}
	expect_out(s, 2, (int64_t[]){ B, I }, want, "bij->bi");
	close_model(s, m);
	s = einsum_run("bij->", in2, 1, x2, &m);
	expect_out(s, 0, NULL, &all, "bij->");
	close_model(s, m);

	/* batched diagonal */
	io in3[] = { { "a", 3, { B, I, I } } };
	float *x3[] = { sq };
	s = einsum_run("bii->bi", in3, 1, x3, &m);
	for (int t = 0; t < B; t++)
		for (int i = 0; i < I; i++)
			want[t * I + i] = sq[(t * I + i) * I + i];
	expect_out(s, 2, (int64_t[]){ B, I }, want, "bii->bi");
	close_model(s, m);

	/* a vector broadcast against a batch: bij,j->bi */
	io in4[] = { { "a", 3, { B, I, J } }, { "b", 1, { J } } };
	float *x4[] = { a, row };
	s = einsum_run("bij,j->bi", in4, 2, x4, &m);
	for (int t = 0; t < B; t++)
		for (int i = 0; i < I; i++) {
			double acc = 0;
			for (int j = 0; j < J; j++)
				acc += (double)a[(t * I + i) * J + j] * row[j];
			want[t * I + i] = acc;
		}
	expect_out(s, 2, (int64_t[]){ B, I }, want, "bij,j->bi");
	close_model(s, m);
}

/* ---- LayerNormalization with scalar Scale/B and its statistics ---- */

static void test_layernorm_stats(void **st)
{
	(void)st;
	enum { R = 6, C = 10 };
	static float x[R * C], sc[1] = { 1.5f }, bi[1] = { -0.25f };
	static double want[R * C], wm[R], wi[R];
	fill(x, R * C);
	for (int r = 0; r < R; r++) {
		double m = 0, v = 0;
		for (int c = 0; c < C; c++)
			m += x[r * C + c];
		m /= C;
		for (int c = 0; c < C; c++)
			v += (x[r * C + c] - m) * (x[r * C + c] - m);
		v /= C;
		wm[r] = m;
		wi[r] = 1 / sqrt(v + 1e-3);
		for (int c = 0; c < C; c++)
			want[r * C + c] = (x[r * C + c] - m) * wi[r] * sc[0] + bi[0];
	}
	static pbw node, bytes;
	const char *ins[] = { "x", "s", "b" }, *outs[] = { "y", "mean", "inv" };
	node_begin(&node, "LayerNormalization", ins, 3, outs, 3);
	attr_int(&node, "axis", -1);
	attr_float(&node, "epsilon", 1e-3f);
	io in[] = { { "x", 2, { R, C } }, { "s", 1, { 1 } }, { "b", 1, { 1 } } };
	model(&bytes, 17, &node, in, 3, outs, 3);
	aidos_model *m;
	char err[256];
	int rc;
	float *xp[] = { x, sc, bi };
	aidos_session *s = run_model(&bytes, &m, in, (void *const *)xp, 3, &rc, err, sizeof err);
	if (!s)
		fail_msg("LayerNormalization: %s", err);
	expect_out(s, 2, (int64_t[]){ R, C }, want, "LayerNormalization Y");
	aidos_tensor t;
	assert_int_equal(aidos_session_output(s, 1, &t), 0);
	assert_int_equal(t.rank, 2);
	assert_int_equal(t.dims[1], 1);
	check_close(t.data, wm, R, "Mean");
	assert_int_equal(aidos_session_output(s, 2, &t), 0);
	check_close(t.data, wi, R, "InvStdDev");
	close_model(s, m);
}

/* ---- forms the issue lists that ONNX 1.12's data predates or misses ---- */

/* Split at opset 18 by num_outputs: chunks of ceil(dim / n), the last smaller. */
static void test_split_num_outputs(void **st)
{
	(void)st;
	static float x[2 * 7];
	for (int i = 0; i < 14; i++)
		x[i] = (float)i;
	static pbw node, bytes;
	const char *ins[] = { "x" }, *outs[] = { "y0", "y1", "y2" };
	node_begin(&node, "Split", ins, 1, outs, 3);
	attr_int(&node, "axis", -1);
	attr_int(&node, "num_outputs", 3);
	io in = { "x", 2, { 2, 7 } };
	model(&bytes, 18, &node, &in, 1, outs, 3);
	aidos_model *m;
	char err[256];
	int rc;
	float *xp[] = { x };
	aidos_session *s = run_model(&bytes, &m, &in, (void *const *)xp, 1, &rc, err, sizeof err);
	if (!s)
		fail_msg("Split num_outputs: %s", err);
	const int width[3] = { 3, 3, 1 }, start[3] = { 0, 3, 6 };
	for (int k = 0; k < 3; k++) {
		aidos_tensor y;
		assert_int_equal(aidos_session_output(s, k, &y), 0);
		assert_int_equal(y.rank, 2);
		assert_int_equal(y.dims[0], 2);
		assert_int_equal(y.dims[1], width[k]);
		double want[6];
		for (int r = 0; r < 2; r++)
			for (int c = 0; c < width[k]; c++)
				want[r * width[k] + c] = x[r * 7 + start[k] + c];
		check_close(y.data, want, 2 * width[k], "Split output");
	}
	close_model(s, m);
}

/* MatMul with numpy batch broadcasting: [2,1,3,4] x [5,4,2] -> [2,5,3,2],
 * and a 1-D right operand: [2,3,4] x [4] -> [2,3]. */
static void test_matmul_broadcast(void **st)
{
	(void)st;
	static float a[2 * 3 * 4], b[5 * 4 * 2], v[4];
	static double want[2 * 5 * 3 * 2];
	fill(a, 24);
	fill(b, 40);
	fill(v, 4);
	static pbw node, bytes;
	const char *ins[] = { "a", "b" }, *outs[] = { "y" };
	node_begin(&node, "MatMul", ins, 2, outs, 1);
	io in[] = { { "a", 4, { 2, 1, 3, 4 } }, { "b", 3, { 5, 4, 2 } } };
	model(&bytes, 13, &node, in, 2, outs, 1);
	aidos_model *m;
	char err[256];
	int rc;
	float *xp[] = { a, b };
	aidos_session *s = run_model(&bytes, &m, in, (void *const *)xp, 2, &rc, err, sizeof err);
	if (!s)
		fail_msg("MatMul broadcast: %s", err);
	for (int i = 0; i < 2; i++)
		for (int j = 0; j < 5; j++)
			for (int r = 0; r < 3; r++)
				for (int c = 0; c < 2; c++) {
					double acc = 0;
					for (int k = 0; k < 4; k++)
						acc += (double)a[(i * 3 + r) * 4 + k] * b[(j * 4 + k) * 2 + c];
					want[((i * 5 + j) * 3 + r) * 2 + c] = acc;
				}
	expect_out(s, 4, (int64_t[]){ 2, 5, 3, 2 }, want, "MatMul [2,1,3,4]x[5,4,2]");
	close_model(s, m);

	io in2[] = { { "a", 3, { 2, 3, 4 } }, { "b", 1, { 4 } } };
	model(&bytes, 13, &node, in2, 2, outs, 1);
	float *xp2[] = { a, v };
	s = run_model(&bytes, &m, in2, (void *const *)xp2, 2, &rc, err, sizeof err);
	if (!s)
		fail_msg("MatMul 1-D: %s", err);
	for (int r = 0; r < 6; r++) {
		double acc = 0;
		for (int k = 0; k < 4; k++)
			acc += (double)a[r * 4 + k] * v[k];
		want[r] = acc;
	}
	expect_out(s, 2, (int64_t[]){ 2, 3 }, want, "MatMul [2,3,4]x[4]");
	close_model(s, m);
}

/* Softmax over attention scores with masked positions, as exporters write
 * them: -inf, and the float32 minimum PyTorch adds (finfo.min). */
static void test_softmax_masked(void **st)
{
	(void)st;
	enum { R = 4, C = 6 };
	static float x[R * C];
	static double want[R * C];
	fill(x, R * C);
	for (int r = 0; r < R; r++) {
		/* row r masks its last r + 1 positions */
		for (int c = C - 1 - r; c < C; c++)
			x[r * C + c] = (r & 1) ? -INFINITY : -3.4028234663852886e38f;
		double mx = -INFINITY, sum = 0;
		for (int c = 0; c < C - 1 - r; c++)
			mx = fmax(mx, x[r * C + c]);
		for (int c = 0; c < C - 1 - r; c++)
			sum += exp(x[r * C + c] - mx);
		for (int c = 0; c < C; c++)
			want[r * C + c] = c < C - 1 - r ? exp(x[r * C + c] - mx) / sum : 0.0;
	}
	static pbw node, bytes;
	const char *ins[] = { "x" }, *outs[] = { "y" };
	node_begin(&node, "Softmax", ins, 1, outs, 1);
	attr_int(&node, "axis", -1);
	io in = { "x", 2, { R, C } };
	model(&bytes, 13, &node, &in, 1, outs, 1);
	aidos_model *m;
	char err[256];
	int rc;
	float *xp[] = { x };
	aidos_session *s = run_model(&bytes, &m, &in, (void *const *)xp, 1, &rc, err, sizeof err);
	if (!s)
		fail_msg("Softmax: %s", err);
	expect_out(s, 2, (int64_t[]){ R, C }, want, "Softmax masked");
	close_model(s, m);
}

/* ---- bad attributes are errors that name the node and attribute ---- */

static void expect_invalid(const pbw *node, int opset, const io *in, int n_in, float *const *x,
			   const char *needle)
{
	static pbw bytes;
	const char *outs[] = { "y" };
	model(&bytes, opset, node, in, n_in, outs, 1);
	aidos_model *m;
	char err[256] = "";
	int rc;
	aidos_session *s = run_model(&bytes, &m, in, (void *const *)x, n_in, &rc, err, sizeof err);
	if (s)
		fail_msg("expected an error mentioning '%s'", needle);
	assert_int_equal(rc, AIDOS_E_INVALID);
	if (!strstr(err, "n0") || !strstr(err, needle))
		fail_msg("message '%s' does not name node n0 and '%s'", err, needle);
}

static void test_bad_attributes(void **st)
{
	(void)st;
	static float x[12], t[12];
	static pbw node;
	io in1[] = { { "a", 2, { 3, 4 } } };
	float *x1[] = { x };
	const char *ins[] = { "a", "b" }, *outs[] = { "y" };

	node_begin(&node, "Einsum", ins, 1, outs, 1);
	attr_str(&node, "equation", "ij,jk->ik");
	expect_invalid(&node, 12, in1, 1, x1, "equation");

	node_begin(&node, "LayerNormalization", (const char *[]){ "a", "a" }, 2, outs, 1);
	attr_int(&node, "axis", 5);
	expect_invalid(&node, 17, in1, 1, x1, "axis");

	node_begin(&node, "DepthToSpace", ins, 1, outs, 1);
	attr_int(&node, "blocksize", 0);
	io in4[] = { { "a", 4, { 1, 4, 1, 3 } } };
	expect_invalid(&node, 13, in4, 1, x1, "blocksize");

	node_begin(&node, "GridSample", ins, 2, outs, 1);
	attr_str(&node, "mode", "linear-ish");
	io in2[] = { { "a", 4, { 1, 1, 2, 3 } }, { "b", 4, { 1, 1, 2, 2 } } };
	float *x2[] = { x, t };
	expect_invalid(&node, 16, in2, 2, x2, "mode");

	node_begin(&node, "Dropout", ins, 1, outs, 1);
	attr_float(&node, "ratio", 1.5f);
	expect_invalid(&node, 11, in1, 1, x1, "ratio");

	static int64_t tg[3] = { 0, 1, 2 };
	io in3[] = { { "a", 2, { 3, 4 } }, { "b", 1, { 3 }, AIDOS_DT_INT64 } };
	float *x3[] = { x, (float *)tg };
	node_begin(&node, "NegativeLogLikelihoodLoss", ins, 2, outs, 1);
	attr_str(&node, "reduction", "average");
	expect_invalid(&node, 13, in3, 2, x3, "reduction");
}

/* A target outside [0, C) is an error at run time naming the position,
 * and the session serves the next, valid request. */
static void test_loss_target_range(void **st)
{
	(void)st;
	static float x[3 * 4];
	static int64_t tg[3] = { 0, 7, 2 };
	fill(x, 12);
	static pbw node, bytes;
	const char *ins[] = { "a", "b" }, *outs[] = { "y" };
	node_begin(&node, "NegativeLogLikelihoodLoss", ins, 2, outs, 1);
	attr_str(&node, "reduction", "sum");
	io in[] = { { "a", 2, { 3, 4 } }, { "b", 1, { 3 }, AIDOS_DT_INT64 } };
	model(&bytes, 13, &node, in, 2, outs, 1);
	aidos_model *m;
	aidos_session *s;
	char err[256];
	assert_int_equal(aidos_model_load_buffer(bytes.b, bytes.n, NULL, &m, err, sizeof err), 0);
	assert_int_equal(aidos_session_create(m, NULL, &s, err, sizeof err), 0);
	aidos_tensor t[2] = {
		{ .name = "a", .dtype = AIDOS_DT_FLOAT, .rank = 2, .dims = { 3, 4 }, .data = x },
		{ .name = "b", .dtype = AIDOS_DT_INT64, .rank = 1, .dims = { 3 }, .data = tg },
	};
	assert_int_equal(aidos_session_run(s, 2, t), AIDOS_E_RANGE);
	if (!strstr(aidos_session_errmsg(s), "target[1] = 7"))
		fail_msg("message '%s' does not name target[1]", aidos_session_errmsg(s));
	tg[1] = 3;
	assert_int_equal(aidos_session_run(s, 2, t), 0);
	aidos_tensor y;
	assert_int_equal(aidos_session_output(s, 0, &y), 0);
	double want = -((double)x[0] + x[4 + 3] + x[8 + 2]);
	check_close(y.data, &want, 1, "NLL sum");
	close_model(s, m);
}

/* NonZero of a graph input: the output shape depends on the value, so the
 * session plans it value-keyed (hal_need_value): each distinct value gets
 * its own plan with the right shape; over the session's 64-element bound
 * the run fails with AIDOS_E_UNSUPPORTED and a message saying so. */
static void nonzero_run(aidos_session *s, const float *x, int n, int expect_rc)
{
	aidos_tensor t = { .name = "x", .dtype = AIDOS_DT_FLOAT, .rank = 1, .dims = { n },
			   .data = (void *)x };
	int rc = aidos_session_run(s, 1, &t);
	if (rc != expect_rc)
		fail_msg("NonZero of %d elements: rc %d (%s), want %d", n, rc, aidos_session_errmsg(s),
			 expect_rc);
	if (rc) {
		if (!strstr(aidos_session_errmsg(s), "at most"))
			fail_msg("message '%s' does not state the bound", aidos_session_errmsg(s));
		return;
	}
	int64_t want[80];
	int k = 0;
	for (int i = 0; i < n; i++)
		if (x[i] != 0)
			want[k++] = i;
	aidos_tensor y;
	assert_int_equal(aidos_session_output(s, 0, &y), 0);
	assert_int_equal(y.dtype, AIDOS_DT_INT64);
	assert_int_equal(y.rank, 2);
	assert_int_equal(y.dims[0], 1);
	assert_int_equal(y.dims[1], k);
	assert_memory_equal(y.data, want, (size_t)k * sizeof *want);
}

static void test_nonzero_value_keyed(void **st)
{
	(void)st;
	static pbw node, bytes;
	const char *ins[] = { "x" }, *outs[] = { "y" };
	node_begin(&node, "NonZero", ins, 1, outs, 1);
	io in = { "x", 1, { -1 } };
	model(&bytes, 13, &node, &in, 1, outs, 1);
	aidos_model *m;
	aidos_session *s;
	char err[256];
	assert_int_equal(aidos_model_load_buffer(bytes.b, bytes.n, NULL, &m, err, sizeof err), 0);
	assert_int_equal(aidos_session_create(m, NULL, &s, err, sizeof err), 0);
	static const float a[6] = { 0, 1, 0, 2, 3, 0 }, b[6] = { 5, 0, 0, 0, 0, 0 };
	static float big[80];
	for (int i = 0; i < 80; i++)
		big[i] = (float)(i % 3);
	nonzero_run(s, a, 6, 0);
	nonzero_run(s, b, 6, 0);
	nonzero_run(s, a, 6, 0);
	nonzero_run(s, big, 64, 0);
	nonzero_run(s, big, 80, AIDOS_E_UNSUPPORTED);
	nonzero_run(s, b, 6, 0);
	close_model(s, m);
}

/* Cast float32 -> bfloat16 rounds to nearest, ties to even (reference: the
 * value scaled to 8 significant bits and rounded by nearbyint() in double,
 * the default rounding mode being nearest-even), keeps inf and NaN; Cast
 * bfloat16 -> float32 is exact. bfloat16 is ONNX type 16 (no AIDOS_DT_ name). */
#define DT_BF16 16
static double bf16_ref(float x)
{
	if (isnan(x) || isinf(x) || x == 0)
		return x;
	int e;
	frexp(x, &e);                      /* |x| = m 2^e, m in [0.5, 1) */
	double ulp = ldexp(1.0, (e < -125 ? -125 : e) - 8);   /* 8 significant bits; subnormal: 2^-133 */
	double r = nearbyint(x / ulp) * ulp;
	return fabs(r) >= 0x1p128 ? copysign(INFINITY, r) : r;   /* past bfloat16's max */
}

static void test_cast_bfloat16(void **st)
{
	(void)st;
	enum { N = 12 };
	static float x[N] = { 1.0f, 1.00390625f /* tie, to even: 1 */, 1.01171875f /* tie, up */,
			      0.47892547f, -3.14159265f, 3.4e38f /* rounds to inf */, 1e-39f,
			      -0.0f, 65504.0f, 0.1f, 0, 0 };
	x[10] = INFINITY;
	x[11] = NAN;
	static pbw node, bytes;
	const char *ins[] = { "x" }, *outs[] = { "y" };
	node_begin(&node, "Cast", ins, 1, outs, 1);
	attr_int(&node, "to", DT_BF16);
	io in = { "x", 1, { N } };
	model(&bytes, 13, &node, &in, 1, outs, 1);
	aidos_model *m;
	char err[256];
	int rc;
	float *xp[] = { x };
	aidos_session *s = run_model(&bytes, &m, &in, (void *const *)xp, 1, &rc, err, sizeof err);
	if (!s)
		fail_msg("Cast to bfloat16: %s", err);
	aidos_tensor y;
	assert_int_equal(aidos_session_output(s, 0, &y), 0);
	assert_int_equal(y.dtype, DT_BF16);
	assert_int_equal(y.dims[0], N);
	static uint16_t b[N];
	memcpy(b, y.data, sizeof b);
	for (int i = 0; i < N; i++) {
		uint32_t bits = (uint32_t)b[i] << 16;
		float got;
		memcpy(&got, &bits, 4);
		double want = bf16_ref(x[i]);
		if (isnan(want) ? !isnan(got) : (double)got != want || !signbit(got) != !signbit(want))
			fail_msg("bfloat16 of %.9g: got %.9g, want %.9g", x[i], got, want);
	}
	close_model(s, m);

	/* back: bfloat16 -> float32, exact widening of those bit patterns */
	node_begin(&node, "Cast", ins, 1, outs, 1);
	attr_int(&node, "to", AIDOS_DT_FLOAT);
	io inb = { "x", 1, { N }, DT_BF16 };
	model(&bytes, 13, &node, &inb, 1, outs, 1);
	uint16_t *bp[] = { b };
	s = run_model(&bytes, &m, &inb, (void *const *)bp, 1, &rc, err, sizeof err);
	if (!s)
		fail_msg("Cast from bfloat16: %s", err);
	assert_int_equal(aidos_session_output(s, 0, &y), 0);
	assert_int_equal(y.dtype, AIDOS_DT_FLOAT);
	for (int i = 0; i < N; i++) {
		uint32_t bits;
		memcpy(&bits, (const float *)y.data + i, 4);
		assert_int_equal(bits, (uint32_t)b[i] << 16);
	}
	close_model(s, m);
}

/* Loop without scan outputs, planned once and re-run per iteration: the body
 * doubles a carried float[2] and sets cond_out = (iteration_num < lim), lim
 * an outer-scope graph input; M is a graph input read at run time. It runs
 * n = min(M, max(lim, 0) + 1) iterations, so x = x0 * 2^n. */
static void test_loop_early_exit(void **st)
{
	(void)st;
	static pbw body, n1, n2, a, g, op, bytes;
	const char *bi[] = { "x", "x" }, *bo[] = { "y" }, *ci[] = { "i", "lim" }, *co[] = { "c" };
	node_begin(&n1, "Add", bi, 2, bo, 1);
	node_begin(&n2, "Less", ci, 2, co, 1);
	body.n = 0;
	pbw_put(&body, 1, &n1);
	pbw_put(&body, 1, &n2);
	pbw_str(&body, 2, "body");
	static const int64_t none[1];
	value_info(&body, 11, "i", AIDOS_DT_INT64, 0, none);
	value_info(&body, 11, "c_in", AIDOS_DT_BOOL, 0, none);
	value_info(&body, 11, "x", AIDOS_DT_FLOAT, 1, (const int64_t[]){ 2 });
	value_info(&body, 12, "c", AIDOS_DT_BOOL, 0, none);
	value_info(&body, 12, "y", AIDOS_DT_FLOAT, 1, (const int64_t[]){ 2 });
	static pbw node;
	const char *li[] = { "M", "", "x0" }, *lo[] = { "xf" };
	node_begin(&node, "Loop", li, 3, lo, 1);
	a.n = 0;
	pbw_str(&a, 1, "body");
	pbw_put(&a, 6, &body);
	pbw_int(&a, 20, 5);   /* GRAPH */
	pbw_put(&node, 5, &a);
	g.n = 0;
	pbw_put(&g, 1, &node);
	pbw_str(&g, 2, "g");
	value_info(&g, 11, "M", AIDOS_DT_INT64, 0, none);
	value_info(&g, 11, "lim", AIDOS_DT_INT64, 0, none);
	value_info(&g, 11, "x0", AIDOS_DT_FLOAT, 1, (const int64_t[]){ 2 });
	static pbw vi;
	vi.n = 0;
	pbw_str(&vi, 1, "xf");
	pbw_put(&g, 12, &vi);
	bytes.n = 0;
	pbw_int(&bytes, 1, 8);
	pbw_put(&bytes, 7, &g);
	op.n = 0;
	pbw_str(&op, 1, "");
	pbw_int(&op, 2, 13);
	pbw_put(&bytes, 8, &op);
	aidos_model *m;
	aidos_session *s;
	char err[256];
	if (aidos_model_load_buffer(bytes.b, bytes.n, NULL, &m, err, sizeof err))
		fail_msg("load: %s", err);
	assert_int_equal(aidos_session_create(m, NULL, &s, err, sizeof err), 0);
	static const int64_t cases[][2] = { { 10, 3 }, { 2, 5 }, { 0, 5 }, { 7, -4 }, { 64, 40 } };
	for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
		int64_t mv = cases[k][0], lim = cases[k][1];
		float x0[2] = { 1.5f, -0.25f };
		aidos_tensor t[3] = {
			{ .name = "M", .dtype = AIDOS_DT_INT64, .rank = 0, .data = &mv },
			{ .name = "lim", .dtype = AIDOS_DT_INT64, .rank = 0, .data = &lim },
			{ .name = "x0", .dtype = AIDOS_DT_FLOAT, .rank = 1, .dims = { 2 }, .data = x0 },
		};
		if (aidos_session_run(s, 3, t))
			fail_msg("Loop M=%lld lim=%lld: %s", (long long)mv, (long long)lim, aidos_session_errmsg(s));
		int64_t n = (lim < 0 ? 0 : lim) + 1;
		if (mv < n)
			n = mv;
		double want[2] = { ldexp(1.5, (int)n), ldexp(-0.25, (int)n) };
		aidos_tensor y;
		assert_int_equal(aidos_session_output(s, 0, &y), 0);
		assert_int_equal(y.rank, 1);
		assert_int_equal(y.dims[0], 2);
		check_close(y.data, want, 2, "Loop carried value");
	}
	close_model(s, m);
}

/* ---- elementwise fusion ---- */

static void fused_case(int64_t d0, int64_t d1, int threads)
{
	static pbw nodes[9], bytes;
	const struct { const char *op, *in[3], *out; int n_in; } g[9] = {
		{ "Add", { "x", "c" }, "a", 2 },
		{ "Clip", { "a", "lo", "hi" }, "b", 3 },   /* bounds are inputs: not fused */
		{ "Mul", { "x", "b" }, "d", 2 },
		{ "Div", { "d", "six" }, "e", 2 },         /* e is also a graph output */
		{ "Sigmoid", { "e" }, "f", 1 },
		{ "Mul", { "f", "e" }, "h", 2 },
		{ "Tanh", { "h" }, "t", 1 },
		{ "Sub", { "c", "t" }, "u", 2 },           /* scalar first */
		{ "Add", { "u", "x" }, "y", 2 },
	};
	for (int i = 0; i < 9; i++) {
		const char *o[1] = { g[i].out };
		node_begin(&nodes[i], g[i].op, g[i].in, g[i].n_in, o, 1);
	}
	const io in[5] = { { "x", 2, { d0, d1 } }, { "c", 1, { 1 } }, { "lo", 1, { 1 } },
			   { "hi", 1, { 1 } }, { "six", 1, { 1 } } };
	const char *outs[2] = { "y", "e" };
	model_nodes(&bytes, 13, nodes, 9, in, 5, outs, 2);
	const int64_t n = d0 * d1;
	float *x = malloc((size_t)n * sizeof *x), c = 3.0f, lo = 0.0f, hi = 6.0f, six = 6.0f;
	double *wy = malloc((size_t)n * sizeof *wy), *we = malloc((size_t)n * sizeof *we);
	assert_non_null(x);
	assert_non_null(wy);
	assert_non_null(we);
	for (int64_t i = 0; i < n; i++) {
		x[i] = ot_frand(-8, 8);
		double b = fmin(fmax((double)x[i] + c, lo), hi), e = x[i] * b / six;
		double h = e / (1 + exp(-e)) ;
		we[i] = e;
		wy[i] = (c - tanh(h)) + x[i];
	}
	aidos_model *m = NULL;
	aidos_session *s = NULL;
	ot_open(&bytes, threads, &m, &s, __func__);
	aidos_tensor t[5];
	void *xs[5] = { x, &c, &lo, &hi, &six };
	for (int i = 0; i < 5; i++) {
		memset(&t[i], 0, sizeof t[i]);
		t[i].name = in[i].name;
		t[i].dtype = AIDOS_DT_FLOAT;
		t[i].rank = in[i].rank;
		memcpy(t[i].dims, in[i].dims, sizeof t[i].dims);
		t[i].data = xs[i];
	}
	for (int rep = 0; rep < 2; rep++) {   /* the second run reuses the plan */
		assert_int_equal(aidos_session_run(s, 5, t), 0);
		aidos_tensor y, e;
		assert_int_equal(aidos_session_output(s, 0, &y), 0);
		assert_int_equal(aidos_session_output(s, 1, &e), 0);
		assert_int_equal(y.rank, 2);
		assert_int_equal(y.dims[1], d1);
		check_close(y.data, wy, n, "fused chain y");
		check_close(e.data, we, n, "fused chain e (stored from inside the group)");
	}
	close_model(s, m);
	free(x);
	free(wy);
	free(we);
}

static void test_fused_elementwise(void **st)
{
	(void)st;
	fused_case(1, 1, 1);
	fused_case(1, 255, 1);
	fused_case(2, 128, 1);
	fused_case(3, 259, 1);
	fused_case(37, 211, 2);   /* 7807 elements: several blocks per thread and a tail */
}

/* ---- decomposed LayerNorm ---- */

/* variant: 0 Mul(d, d) with gamma and beta, 1 Pow(d, 2) without them,
 * 2 as 0 with d also a graph output (so nothing may be fused away). */
static void ln_decomposed_case(int variant)
{
	enum { H = 37 };
	static pbw nodes[9], g, op, bytes;
	const int64_t axes[1] = { -1 };
	int nn = 0;
	const char *o[1];
#define NODE(OP, OUT, ...) do { const char *in_[] = { __VA_ARGS__ }; o[0] = OUT; \
		node_begin(&nodes[nn], OP, in_, (int)(sizeof in_ / sizeof in_[0]), o, 1); nn++; } while (0)
	NODE("ReduceMean", "m", "x");
	ot_attr_ints(&nodes[nn - 1], "axes", axes, 1);
	NODE("Sub", "d", "x", "m");
	if (variant == 1)
		NODE("Pow", "q", "d", "two");
	else
		NODE("Mul", "q", "d", "d");
	NODE("ReduceMean", "v", "q");
	ot_attr_ints(&nodes[nn - 1], "axes", axes, 1);
	NODE("Add", "e", "v", "eps");
	NODE("Sqrt", "r", "e");
	NODE("Div", variant == 1 ? "z" : "n", "d", "r");
	if (variant != 1) {
		NODE("Mul", "y", "gamma", "n");   /* constant first: either order matches */
		NODE("Add", "z", "y", "beta");
	}
#undef NODE
	float gamma[H], beta[H], two = 2.0f, eps = 1e-5f;
	for (int i = 0; i < H; i++) {
		gamma[i] = ot_frand(0.5f, 1.5f);
		beta[i] = ot_frand(-0.5f, 0.5f);
	}
	const int64_t hd[1] = { H };
	g.n = 0;
	for (int i = 0; i < nn; i++)
		pbw_put(&g, 1, &nodes[i]);
	pbw_str(&g, 2, "g");
	ot_init(&g, "gamma", 1, hd, gamma);
	ot_init(&g, "beta", 1, hd, beta);
	ot_init(&g, "two", 0, NULL, &two);
	ot_init(&g, "eps", 0, NULL, &eps);
	const int64_t xd[3] = { 3, 5, H };
	value_info(&g, 11, "x", AIDOS_DT_FLOAT, 3, xd);
	const char *outs[2] = { "z", "d" };
	for (int i = 0; i < (variant == 2 ? 2 : 1); i++) {
		static pbw vi;
		vi.n = 0;
		pbw_str(&vi, 1, outs[i]);
		pbw_put(&g, 12, &vi);
	}
	bytes.n = 0;
	pbw_int(&bytes, 1, 8);
	pbw_put(&bytes, 7, &g);
	op.n = 0;
	pbw_str(&op, 1, "");
	pbw_int(&op, 2, 13);
	pbw_put(&bytes, 8, &op);

	float x[15 * H];
	double want[15 * H], wd[15 * H];
	for (int i = 0; i < 15 * H; i++)
		x[i] = ot_frand(-3, 3) + (float)(i / H);   /* rows with different means */
	for (int r = 0; r < 15; r++) {
		double m = 0, var = 0;
		for (int i = 0; i < H; i++)
			m += x[r * H + i];
		m /= H;
		for (int i = 0; i < H; i++)
			var += (x[r * H + i] - m) * (x[r * H + i] - m);
		var /= H;
		for (int i = 0; i < H; i++) {
			double nv = (x[r * H + i] - m) / sqrt(var + eps);
			wd[r * H + i] = x[r * H + i] - m;
			want[r * H + i] = variant == 1 ? nv : nv * gamma[i] + beta[i];
		}
	}
	const io in[1] = { { "x", 3, { 3, 5, H } } };
	void *xs[1] = { x };
	aidos_model *m = NULL;
	int rc;
	char err[256];
	aidos_session *s = run_model(&bytes, &m, in, xs, 1, &rc, err, sizeof err);
	if (!s)
		fail_msg("decomposed LayerNorm %d: %s", variant, err);
	aidos_tensor z;
	assert_int_equal(aidos_session_output(s, 0, &z), 0);
	assert_int_equal(z.rank, 3);
	assert_int_equal(z.dims[2], H);
	check_close(z.data, want, 15 * H, "decomposed LayerNorm");
	if (variant == 2) {
		aidos_tensor d;
		assert_int_equal(aidos_session_output(s, 1, &d), 0);
		check_close(d.data, wd, 15 * H, "decomposed LayerNorm's x - mean (graph output)");
	}
	close_model(s, m);
}

static void test_layernorm_decomposed(void **st)
{
	(void)st;
	for (int v = 0; v < 3; v++)
		ln_decomposed_case(v);
}

/* ---- MaxPool whose windows tile the input (kernel = stride, 1 or 2) ---- */

/* X [2, c, h, w] -> MaxPool kernel kh x kw, strides = kernel, on threads,
 * against a loop with the kernel's rule: the window's first tap, then any
 * strictly greater one (a NaN in the first tap stays, a later one is
 * skipped). Sizes leave a vector tail, an odd last input row/column (no
 * partial window), and NaN/-inf among the values. */
static void maxpool_tiled_case(int64_t c, int64_t h, int64_t w, int64_t kh, int64_t kw, int threads)
{
	static pbw node, bytes;
	const char *ins[1] = { "x" }, *outs[1] = { "y" };
	node_begin(&node, "MaxPool", ins, 1, outs, 1);
	int64_t ks[2] = { kh, kw };
	ot_attr_ints(&node, "kernel_shape", ks, 2);
	ot_attr_ints(&node, "strides", ks, 2);
	const io in[1] = { { "x", 4, { 2, c, h, w } } };
	model(&bytes, 13, &node, in, 1, outs, 1);
	int64_t oh = h / kh, ow = w / kw, n = 2 * c * h * w, no = 2 * c * oh * ow;
	float *x = malloc((size_t)n * sizeof *x);
	double *want = malloc((size_t)no * sizeof *want);
	assert_non_null(x);
	assert_non_null(want);
	for (int64_t i = 0; i < n; i++)
		x[i] = i % 97 == 5 ? NAN : i % 89 == 7 ? -INFINITY : ot_frand(-4, 4);
	for (int64_t p = 0; p < 2 * c; p++)
		for (int64_t oy = 0; oy < oh; oy++)
			for (int64_t ox = 0; ox < ow; ox++) {
				const float *r = x + (p * h + oy * kh) * w + ox * kw;
				float m = r[0];
				for (int64_t ky = 0; ky < kh; ky++)
					for (int64_t kx = 0; kx < kw; kx++)
						m = r[ky * w + kx] > m ? r[ky * w + kx] : m;
				want[(p * oh + oy) * ow + ox] = m;
			}
	aidos_model *m = NULL;
	aidos_session *s = NULL;
	ot_open(&bytes, threads, &m, &s, __func__);
	aidos_tensor t = { .name = "x", .dtype = AIDOS_DT_FLOAT, .rank = 4, .dims = { 2, c, h, w },
			   .data = x };
	assert_int_equal(aidos_session_run(s, 1, &t), 0);
	aidos_tensor y;
	assert_int_equal(aidos_session_output(s, 0, &y), 0);
	assert_int_equal(y.dims[2], oh);
	assert_int_equal(y.dims[3], ow);
	const float *got = y.data;
	for (int64_t i = 0; i < no; i++)
		if (!(got[i] == want[i] || (isnan(got[i]) && isnan(want[i]))))
			fail_msg("MaxPool %lldx%lld on %lldx%lld, %d threads: y[%lld] = %g, want %g",
				 (long long)kh, (long long)kw, (long long)h, (long long)w, threads,
				 (long long)i, got[i], want[i]);
	close_model(s, m);
	free(x);
	free(want);
}

static void test_maxpool_tiled(void **st)
{
	(void)st;
	for (int threads = 1; threads <= 2; threads++) {
		maxpool_tiled_case(3, 72, 32, 2, 2, threads);  /* openWakeWord's shapes */
		maxpool_tiled_case(5, 32, 16, 1, 2, threads);
		maxpool_tiled_case(4, 6, 2, 2, 2, threads);
		maxpool_tiled_case(3, 9, 37, 2, 2, threads);   /* odd row and column, tail */
		maxpool_tiled_case(2, 7, 35, 2, 1, threads);
		maxpool_tiled_case(2, 5, 41, 1, 2, threads);
		maxpool_tiled_case(1, 3, 3, 1, 1, threads);
		/* narrow rows, planes read as one sequence of rows: 1x2 with an
		 * odd output count (tail), 2x2 with 4 outputs a row and an odd
		 * row count (the last row alone), and with an unused input row
		 * or column (planes not contiguous: the per-row path) */
		maxpool_tiled_case(96, 10, 4, 1, 2, threads);  /* openWakeWord's */
		maxpool_tiled_case(72, 28, 8, 2, 2, threads);  /* openWakeWord's */
		maxpool_tiled_case(5, 3, 6, 1, 2, threads);
		maxpool_tiled_case(7, 14, 8, 2, 2, threads);
		maxpool_tiled_case(3, 10, 8, 2, 2, threads);
		maxpool_tiled_case(3, 9, 8, 2, 2, threads);
		maxpool_tiled_case(3, 10, 9, 2, 2, threads);
		maxpool_tiled_case(96, 6, 2, 2, 2, threads);   /* openWakeWord's last */
		maxpool_tiled_case(5, 7, 2, 2, 2, threads);
	}
}

int main(void)
{
	ot_rng = 0x2545f4914f6cdd1dull;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_gelu),
		cmocka_unit_test(test_einsum_attention),
		cmocka_unit_test(test_einsum_forms),
		cmocka_unit_test(test_layernorm_stats),
		cmocka_unit_test(test_split_num_outputs),
		cmocka_unit_test(test_matmul_broadcast),
		cmocka_unit_test(test_softmax_masked),
		cmocka_unit_test(test_bad_attributes),
		cmocka_unit_test(test_loss_target_range),
		cmocka_unit_test(test_nonzero_value_keyed),
		cmocka_unit_test(test_cast_bfloat16),
		cmocka_unit_test(test_loop_early_exit),
		cmocka_unit_test(test_fused_elementwise),
		cmocka_unit_test(test_layernorm_decomposed),
		cmocka_unit_test(test_maxpool_tiled),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
