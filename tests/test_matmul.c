/*
 * tests/test_matmul.c - MatMul and Gemm with constant weights (the
 * projections of a transformer) against the scalar reference kernels.
 *
 * Each case is a small model written here as ONNX protobuf bytes:
 * x -> MatMul(x, W) or Gemm(x, W, C) [-> Add of a constant bias row, in
 * either operand order], with W and C initializers. It runs through the
 * public API as loaded (fast paths: the transposed small-M product of
 * hal/ops/nn.c, B pre-packed, the bias folded into the product) and with
 * hal_use_reference set before loading (scalar reference kernels, nothing
 * fused), on every GEMM micro-kernel this CPU has (their NR decides which
 * M take the transposed path) and on 1 and 2 threads. Sizes are odd on
 * purpose: M around MR/NR (2..40, batched MatMul folding into M), N and K
 * not multiples of any block. Tolerance |fast - ref| <= 1e-4 (1 + |ref|):
 * sums of at most 300 products of magnitude ~1 in a different order.
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

#include "hal/hal.h"
#include "tests/op_test.h"

enum { OP_MATMUL, OP_GEMM };
enum { BIAS_NONE, BIAS_ADD_AFTER, BIAS_ADD_BEFORE };   /* Add(y, b) / Add(b, y) */

struct mcase {
	const char *name;
	int op;
	int64_t batch, m, n, k;   /* x: [batch, m, k] for MatMul when batch > 0, else [m, k] */
	int ta, tb;               /* Gemm */
	float alpha, beta;        /* Gemm */
	int gemm_c;               /* Gemm: 0 no C, 1 C [n], 2 C [1, n], 3 C [m, n], 4 C scalar [1] */
	int bias;                 /* an Add of a constant [n] after the product */
	int gelu;                 /* then GELU: 1 as Div(sqrt 2) Erf Add(1) Mul(x) Mul(0.5);
	                           * 2 its tanh form as GPT-2 exporters write it */
};

static const struct mcase cases[] = {
	{ "matmul 2x37x19", OP_MATMUL, 0, 2, 37, 19, 0, 0, 1, 1, 0, BIAS_NONE, 0 },
	{ "matmul 5x100x33", OP_MATMUL, 0, 5, 100, 33, 0, 0, 1, 1, 0, BIAS_ADD_AFTER, 0 },
	{ "matmul 15x129x300", OP_MATMUL, 0, 15, 129, 300, 0, 0, 1, 1, 0, BIAS_ADD_BEFORE, 0 },
	{ "matmul 32x520x64", OP_MATMUL, 0, 32, 520, 64, 0, 0, 1, 1, 0, BIAS_NONE, 0 },
	{ "matmul 33x257x17", OP_MATMUL, 0, 33, 257, 17, 0, 0, 1, 1, 0, BIAS_ADD_AFTER, 0 },
	{ "matmul 7x300x31 batch 2", OP_MATMUL, 2, 7, 300, 31, 0, 0, 1, 1, 0, BIAS_ADD_AFTER, 0 },
	{ "matmul 8x70x40 batch 1", OP_MATMUL, 1, 8, 70, 40, 0, 0, 1, 1, 0, BIAS_NONE, 0 },
	{ "matmul 64x96x48", OP_MATMUL, 0, 64, 96, 48, 0, 0, 1, 1, 0, BIAS_ADD_BEFORE, 0 },
	{ "matmul 1x300x29", OP_MATMUL, 0, 1, 300, 29, 0, 0, 1, 1, 0, BIAS_ADD_AFTER, 0 },
	{ "gemm 15x200x23 C[n]", OP_GEMM, 0, 15, 200, 23, 0, 0, 1, 1, 1, BIAS_NONE, 0 },
	{ "gemm 16x90x57 transB alpha beta C[1,n]", OP_GEMM, 0, 16, 90, 57, 0, 1, 0.5f, 2, 2, BIAS_NONE, 0 },
	{ "gemm 6x64x16 transA", OP_GEMM, 0, 6, 64, 16, 1, 0, 1, 1, 0, BIAS_NONE, 0 },
	{ "gemm 32x100x16 transA", OP_GEMM, 0, 32, 100, 16, 1, 0, 1, 1, 0, BIAS_NONE, 0 },
	{ "matmul 40x300x24", OP_MATMUL, 0, 40, 300, 24, 0, 0, 1, 1, 0, BIAS_ADD_AFTER, 0 },
	{ "gemm 31x130x45 transA transB C[n]", OP_GEMM, 0, 31, 130, 45, 1, 1, 1.5f, 0.25f, 1, BIAS_NONE, 0 },
	{ "gemm 32x180x20 C[m,n]", OP_GEMM, 0, 32, 80, 20, 0, 0, 1, 1, 3, BIAS_NONE, 0 },
	{ "gemm 30x177x30 C scalar", OP_GEMM, 0, 30, 77, 30, 0, 1, 1, 3, 4, BIAS_NONE, 0 },
	{ "gemm 3x50x8 beta 0", OP_GEMM, 0, 3, 50, 8, 0, 0, 1, 0, 1, BIAS_ADD_AFTER, 0 },
	{ "matmul 5x90x33 gelu", OP_MATMUL, 0, 5, 90, 33, 0, 0, 1, 1, 0, BIAS_ADD_BEFORE, 1 },
	{ "matmul 32x300x40 gelu", OP_MATMUL, 0, 32, 300, 40, 0, 0, 1, 1, 0, BIAS_ADD_BEFORE, 1 },
	{ "matmul 16x70x24 batch 4 gelu", OP_MATMUL, 4, 16, 70, 24, 0, 0, 1, 1, 0, BIAS_ADD_AFTER, 1 },
	{ "matmul 1x64x16 gelu", OP_MATMUL, 0, 1, 64, 16, 0, 0, 1, 1, 0, BIAS_ADD_AFTER, 1 },
	{ "matmul 7x50x9 gelu, no bias", OP_MATMUL, 0, 7, 50, 9, 0, 0, 1, 1, 0, BIAS_NONE, 1 },
	{ "matmul 32x200x24 gelu tanh", OP_MATMUL, 0, 32, 200, 24, 0, 0, 1, 1, 0, BIAS_ADD_AFTER, 2 },
	{ "matmul 9x33x17 gelu tanh", OP_MATMUL, 0, 9, 33, 17, 0, 0, 1, 1, 0, BIAS_ADD_BEFORE, 2 },
	/* transposed, Y^T far larger than hal_gemm's own scratch (short K) */
	{ "matmul 32x3000x5", OP_MATMUL, 0, 32, 3000, 5, 0, 0, 1, 1, 0, BIAS_ADD_AFTER, 0 },
	{ "matmul 16x2100x3 batch 2", OP_MATMUL, 2, 16, 2100, 3, 0, 0, 1, 1, 0, BIAS_NONE, 0 },
	/* transposed in chunks of Y^T's rows (4096 and 4352 here), the last one partial */
	{ "matmul 32x9000x7 gelu", OP_MATMUL, 0, 32, 9000, 7, 0, 0, 1, 1, 0, BIAS_ADD_AFTER, 1 },
	{ "gemm 30x5000x9 transB C[n]", OP_GEMM, 0, 30, 5000, 9, 0, 1, 1, 0.5f, 1, BIAS_NONE, 0 },
};

static float *rand_init(pbw *g, const char *name, int rank, const int64_t *dims)
{
	int64_t n = 1;
	for (int i = 0; i < rank; i++)
		n *= dims[i];
	float *v = malloc((size_t)n * sizeof *v);
	assert_non_null(v);
	for (int64_t i = 0; i < n; i++)
		v[i] = ot_frand(-1, 1);
	ot_init(g, name, rank, dims, v);
	return v;
}

/* x's shape for case t. */
static int x_shape(const struct mcase *t, int64_t *d)
{
	if (t->op == OP_GEMM) {
		d[0] = t->ta ? t->k : t->m;
		d[1] = t->ta ? t->m : t->k;
		return 2;
	}
	if (t->batch) {
		d[0] = t->batch;
		d[1] = t->m;
		d[2] = t->k;
		return 3;
	}
	d[0] = t->m;
	d[1] = t->k;
	return 2;
}

static void build(const struct mcase *t, pbw *out)
{
	pbw g = { 0 }, n = { 0 };
	int64_t wd[2] = { t->tb ? t->n : t->k, t->tb ? t->k : t->n };
	free(rand_init(&g, "w", 2, wd));
	pbw_str(&n, 1, "x");
	pbw_str(&n, 1, "w");
	if (t->op == OP_GEMM) {
		if (t->gemm_c) {
			int64_t cd[2];
			int cr;
			switch (t->gemm_c) {
			case 1: cd[0] = t->n; cr = 1; break;
			case 2: cd[0] = 1; cd[1] = t->n; cr = 2; break;
			case 3: cd[0] = t->m; cd[1] = t->n; cr = 2; break;
			default: cd[0] = 1; cr = 1; break;
			}
			free(rand_init(&g, "c", cr, cd));
			pbw_str(&n, 1, "c");
		}
		if (t->ta)
			ot_attr_int(&n, "transA", 1);
		if (t->tb)
			ot_attr_int(&n, "transB", 1);
		if (t->alpha != 1)
			ot_attr_float(&n, "alpha", t->alpha);
		if (t->beta != 1)
			ot_attr_float(&n, "beta", t->beta);
	}
	pbw_str(&n, 2, t->bias ? "p" : t->gelu ? "z" : "y");
	pbw_str(&n, 4, t->op == OP_GEMM ? "Gemm" : "MatMul");
	pbw_take(&g, 1, &n);
	if (t->bias) {
		int64_t bd = t->n;
		free(rand_init(&g, "b", 1, &bd));
		pbw a = { 0 };
		pbw_str(&a, 1, t->bias == BIAS_ADD_AFTER ? "p" : "b");
		pbw_str(&a, 1, t->bias == BIAS_ADD_AFTER ? "b" : "p");
		pbw_str(&a, 2, t->gelu ? "z" : "y");
		pbw_str(&a, 4, "Add");
		pbw_take(&g, 1, &a);
	}
	if (t->gelu == 2) {
		static const char *const ops[8][4] = {
			{ "Pow", "z", "three", "g0" }, { "Mul", "g0", "c1", "g1" }, { "Add", "z", "g1", "g2" },
			{ "Mul", "g2", "c2", "g3" }, { "Tanh", "g3", NULL, "g4" }, { "Mul", "z", "half", "g5" },
			{ "Add", "g4", "one", "g6" }, { "Mul", "g5", "g6", "y" },
		};
		const float cv[5] = { 3.0f, 0.044715f, 0.7978845608f, 0.5f, 1.0f };
		const char *cn[5] = { "three", "c1", "c2", "half", "one" };
		for (int k = 0; k < 5; k++)
			ot_init(&g, cn[k], 0, NULL, &cv[k]);
		for (int k = 0; k < 8; k++) {
			pbw a = { 0 };
			pbw_str(&a, 1, ops[k][1]);
			if (ops[k][2])
				pbw_str(&a, 1, ops[k][2]);
			pbw_str(&a, 2, ops[k][3]);
			pbw_str(&a, 4, ops[k][0]);
			pbw_take(&g, 1, &a);
		}
	} else if (t->gelu) {
		static const char *const ops[5][4] = {
			{ "Div", "z", "r2", "g0" }, { "Erf", "g0", NULL, "g1" }, { "Add", "g1", "one", "g2" },
			{ "Mul", "z", "g2", "g3" }, { "Mul", "g3", "half", "y" },
		};
		float r2 = 1.41421356f, one = 1.0f, half = 0.5f;
		ot_init(&g, "r2", 0, NULL, &r2);
		ot_init(&g, "one", 0, NULL, &one);
		ot_init(&g, "half", 0, NULL, &half);
		for (int k = 0; k < 5; k++) {
			pbw a = { 0 };
			pbw_str(&a, 1, ops[k][1]);
			if (ops[k][2])
				pbw_str(&a, 1, ops[k][2]);
			pbw_str(&a, 2, ops[k][3]);
			pbw_str(&a, 4, ops[k][0]);
			pbw_take(&g, 1, &a);
		}
	}
	int64_t xd[3];
	int xr = x_shape(t, xd);
	ot_value_info(&g, 11, "x", xr, xd);
	ot_model(out, &g, 14, "y");
}

static void fast_vs_reference(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const struct mcase *t = &cases[i];
		pbw bytes;
		build(t, &bytes);
		int64_t xd[3], nx = 1;
		int xr = x_shape(t, xd);
		for (int k = 0; k < xr; k++)
			nx *= xd[k];
		float *x = ot_rand_new((size_t)nx, -1, 1);
		aidos_tensor in = { .name = "x", .dtype = AIDOS_DT_FLOAT, .data = x };
		in.rank = x_shape(t, in.dims);
		/* the bias Add, and a GELU after it, fold into a MatMul of
		 * M >= 2; a GELU alone is one fused elementwise step */
		int fold = t->op == OP_MATMUL && t->m * (t->batch ? t->batch : 1) >= 2;
		int want = 1 + (fold && t->bias ? 0 : !!t->bias + !!t->gelu);
		if (t->gelu == 2)   /* one Gelu step after the MatMul and bias */
			want = 1 + (fold ? 0 : !!t->bias) + 1;
		if (t->m * (t->batch ? t->batch : 1) == 1 && t->bias && t->gelu)
			want--;   /* at M = 1 the bias Add is elementwise too */
		ot_check_vs_ref(&bytes, 1, &in, 1, 1e-4, want, t->name);
		free(x);
		free(bytes.b);
	}
}

/* MatMul of two graph inputs (attention's Q K^T and P V), batched with
 * broadcasting: the per-batch split of small products, the batch folded
 * into M, M = 1. */
struct bcase {
	int ra, rb;
	int64_t da[4], db[4];
};

static const struct bcase bcases[] = {
	{ 4, 4, { 2, 3, 5, 7 }, { 2, 3, 7, 6 } },
	{ 3, 3, { 4, 64, 64 }, { 4, 64, 64 } },
	{ 4, 4, { 3, 1, 9, 17 }, { 1, 4, 17, 10 } },
	{ 3, 2, { 2, 5, 33 }, { 33, 20 } },
	{ 3, 3, { 6, 1, 8 }, { 6, 8, 3 } },
	{ 4, 4, { 1, 3, 13, 40 }, { 1, 3, 40, 13 } },
	{ 3, 3, { 2, 150, 140 }, { 2, 140, 130 } },   /* over MM_SMALL: the GEMM splits */
};

static void build2(const struct bcase *t, pbw *out)
{
	pbw g = { 0 }, n = { 0 };
	pbw_str(&n, 1, "x");
	pbw_str(&n, 1, "w");
	pbw_str(&n, 2, "y");
	pbw_str(&n, 4, "MatMul");
	pbw_take(&g, 1, &n);
	ot_value_info(&g, 11, "x", t->ra, t->da);
	ot_value_info(&g, 11, "w", t->rb, t->db);
	ot_model(out, &g, 14, "y");
}

static void batched_vs_reference(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof bcases / sizeof bcases[0]; i++) {
		const struct bcase *t = &bcases[i];
		pbw bytes;
		build2(t, &bytes);
		float *v[2];
		for (int k = 0; k < 2; k++) {
			int64_t n = 1;
			for (int d = 0; d < (k ? t->rb : t->ra); d++)
				n *= k ? t->db[d] : t->da[d];
			v[k] = ot_rand_new((size_t)n, -1, 1);
		}
		aidos_tensor in[2] = {
			{ .name = "x", .dtype = AIDOS_DT_FLOAT, .rank = t->ra, .data = v[0] },
			{ .name = "w", .dtype = AIDOS_DT_FLOAT, .rank = t->rb, .data = v[1] },
		};
		memcpy(in[0].dims, t->da, sizeof t->da);
		memcpy(in[1].dims, t->db, sizeof t->db);
		char what[32];
		snprintf(what, sizeof what, "batched case %zu", i);
		ot_check_vs_ref(&bytes, 2, in, 0, 1e-4, -1, what);
		free(v[0]);
		free(v[1]);
		free(bytes.b);
	}
}

/* Scaled dot-product attention as exporters write it (q, k, v [B,S,H,D]
 * inputs -> Transposes -> MatMul -> Div or Mul -> Add mask -> Softmax ->
 * MatMul -> Transpose), fused into one FusedAttention step (hal/ops/
 * attention.c), against the unfused graph on the reference kernels. */
struct acase {
	int64_t b, s, t, h, d;
	int div;      /* scale by Div (else Mul) */
	int mask;     /* 0 none, 1 input [B,1,1,T], 2 constant causal [1,1,S,T], 3 input [B,H,S,T] */
};

static const struct acase acases[] = {
	{ 1, 64, 64, 4, 64, 1, 1 },
	{ 1, 13, 13, 3, 8, 0, 2 },
	{ 2, 7, 11, 1, 5, 1, 1 },
	{ 1, 32, 32, 4, 16, 0, 0 },
	{ 2, 9, 9, 2, 12, 1, 3 },
	{ 1, 1, 5, 3, 4, 0, 1 },
	{ 3, 5, 9, 7, 6, 1, 3 },   /* 21 heads: more than the 16 scratch areas */
};

static void node1(pbw *g, const char *op, const char *a, const char *b, const char *out, const int64_t *perm)
{
	pbw n = { 0 };
	pbw_str(&n, 1, a);
	if (b)
		pbw_str(&n, 1, b);
	pbw_str(&n, 2, out);
	pbw_str(&n, 4, op);
	if (perm)
		ot_attr_ints(&n, "perm", perm, 4);
	pbw_take(g, 1, &n);
}

static void build_attn(const struct acase *t, pbw *out)
{
	static const int64_t p0213[4] = { 0, 2, 1, 3 }, p0231[4] = { 0, 2, 3, 1 };
	pbw g = { 0 };
	node1(&g, "Transpose", "q", NULL, "tq", p0213);
	node1(&g, "Transpose", "k", NULL, "tk", p0231);
	node1(&g, "Transpose", "v", NULL, "tv", p0213);
	node1(&g, "MatMul", "tq", "tk", "s0", NULL);
	float sc = t->div ? sqrtf((float)t->d) : 1.0f / sqrtf((float)t->d);
	ot_init(&g, "c", 0, NULL, &sc);
	node1(&g, t->div ? "Div" : "Mul", "s0", "c", "s1", NULL);
	const char *pre = "s1";
	if (t->mask == 2) {
		int64_t md[4] = { 1, 1, t->s, t->t };
		float *cm = malloc((size_t)(t->s * t->t) * sizeof *cm);
		assert_non_null(cm);
		for (int64_t i = 0; i < t->s; i++)
			for (int64_t j = 0; j < t->t; j++)
				cm[i * t->t + j] = j <= i ? 0.0f : -3.4028e38f;
		ot_init(&g, "m", 4, md, cm);
		free(cm);
	}
	if (t->mask) {
		node1(&g, "Add", "m", "s1", "s2", NULL);
		pre = "s2";
	}
	node1(&g, "Softmax", pre, NULL, "p", NULL);
	node1(&g, "MatMul", "p", "tv", "o", NULL);
	node1(&g, "Transpose", "o", NULL, "y", p0213);
	int64_t qd[4] = { t->b, t->s, t->h, t->d }, kd[4] = { t->b, t->t, t->h, t->d };
	ot_value_info(&g, 11, "q", 4, qd);
	ot_value_info(&g, 11, "k", 4, kd);
	ot_value_info(&g, 11, "v", 4, kd);
	if (t->mask == 1) {
		int64_t md[4] = { t->b, 1, 1, t->t };
		ot_value_info(&g, 11, "m", 4, md);
	} else if (t->mask == 3) {
		int64_t md[4] = { t->b, t->h, t->s, t->t };
		ot_value_info(&g, 11, "m", 4, md);
	}
	ot_model(out, &g, 14, "y");
}

/* The inputs of case t from v[0..4): q, k, v and the mask; returns how
 * many the graph takes. */
static int attn_inputs(const struct acase *t, float *const *v, aidos_tensor *in)
{
	aidos_tensor tmp[4] = {
		{ .name = "q", .dtype = AIDOS_DT_FLOAT, .rank = 4, .dims = { t->b, t->s, t->h, t->d }, .data = v[0] },
		{ .name = "k", .dtype = AIDOS_DT_FLOAT, .rank = 4, .dims = { t->b, t->t, t->h, t->d }, .data = v[1] },
		{ .name = "v", .dtype = AIDOS_DT_FLOAT, .rank = 4, .dims = { t->b, t->t, t->h, t->d }, .data = v[2] },
		{ .name = "m", .dtype = AIDOS_DT_FLOAT, .rank = 4, .dims = { t->b, 1, 1, t->t }, .data = v[3] },
	};
	if (t->mask == 3) {
		tmp[3].dims[1] = t->h;
		tmp[3].dims[2] = t->s;
	}
	memcpy(in, tmp, sizeof tmp);
	return t->mask == 1 || t->mask == 3 ? 4 : 3;
}

static void attention_vs_reference(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof acases / sizeof acases[0]; i++) {
		const struct acase *t = &acases[i];
		pbw bytes;
		build_attn(t, &bytes);
		int64_t nq = t->b * t->s * t->h * t->d, nk = t->b * t->t * t->h * t->d;
		int64_t nm = t->mask == 3 ? t->b * t->h * t->s * t->t : t->b * t->t;
		int64_t cnt[3] = { nq, nk, nk };
		float *v[4];
		for (int k = 0; k < 3; k++)
			v[k] = ot_rand_new((size_t)cnt[k], -2, 2);
		/* the mask: 30% masked out, the rest small negative */
		v[3] = malloc((size_t)nm * sizeof *v[3]);
		assert_non_null(v[3]);
		for (int64_t e = 0; e < nm; e++)
			v[3][e] = ot_frand(0, 1) < 0.3f ? -10000.0f : ot_frand(-1, 0);
		aidos_tensor in[4];
		int n_in = attn_inputs(t, v, in);
		char what[32];
		snprintf(what, sizeof what, "attention case %zu", i);
		/* one step: fused */
		ot_check_vs_ref(&bytes, n_in, in, 0, 1e-4, 1, what);
		for (int k = 0; k < 4; k++)
			free(v[k]);
		free(bytes.b);
	}
}

int main(void)
{
	ot_rng = 0x2545f4914f6cdd1dull;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(fast_vs_reference),
		cmocka_unit_test(batched_vs_reference),
		cmocka_unit_test(attention_vs_reference),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
