/*
 * tests/test_gemm.c - the packed SGEMM (hal/gemm.c) against a naive
 * double-precision triple loop, and the Conv / ConvTranspose fast paths
 * against their scalar references run through the same op (hal_use_reference
 * toggled), on every micro-kernel this CPU can run.
 *
 * Tolerance (Higham, "Accuracy and Stability of Numerical Algorithms", 3.1):
 * a float dot product of length K, summed in any order with or without FMA,
 * is within gamma_K = K*u/(1-K*u) (u = 2^-24) of the exact value relative to
 * sum |a_k*b_k|. So for C = alpha*A*B + beta*C + bias we allow
 *     |got - exact| <= (K + 4) * u * (|alpha| * sum_k |a_ik*b_kj| + |beta*c| + |bias|)
 * (+2 ulp for the scaling/add steps), computed per element; exact is the
 * double-precision result. Fast vs reference conv: both are within that
 * bound of the exact value, so they may differ by twice it; the magnitude
 * sum is the reference conv run on |x|, |w|, |b|.
 */
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "hal/gemm.h"
#include "hal/hal.h"
#include "hal/ir.h"
#include "hal/model.h"
#include "hal/plan.h"
#include "tests/op_test.h"

#define U_F32 (FLT_EPSILON / 2)



/* ---------------- GEMM ---------------- */

enum { A_RAW, A_PACKED };
enum { B_RAW, B_PACKED, B_KOFF, B_CALLBACK };

struct gcase {
	int64_t M, N, K;
	int ta, tb;
	float alpha, beta;
	int bias;
	int amode, bmode;
	int epi_done;    /* a Clip epilogue and a done callback (checked) */
};

/* The done callback's record: how often each element of C was handed
 * over, and its value then (it must already be final). */
struct done_rec {
	const float *c;
	int64_t ldc;
	int *count;      /* [M, ldc] */
	float *snap;     /* [M, ldc] */
};

static void done_cb(const void *ctx, int64_t i0, int64_t mc, int64_t j0, int64_t nc)
{
	const struct done_rec *d = ctx;
	for (int64_t i = i0; i < i0 + mc; i++)
		for (int64_t j = j0; j < j0 + nc; j++) {
			d->count[i * d->ldc + j]++;   /* blocks are disjoint: no race */
			d->snap[i * d->ldc + j] = d->c[i * d->ldc + j];
		}
}

/* The epilogue epi_done cases apply: 2 * clip(x, -0.5, 0.75) - 0.125. */
static const ir_epilogue test_epi = { IR_ACT_CLIP, -0.5f, 0.75f, 2.0f, -0.125f };

struct cb_ctx {
	const float *b;   /* element (k, j) at b[k*ldb + j] */
	int64_t ldb;
};

/* hal_gemm_pack_fn over a plain row-major B, to test the callback route. */
static void cb_pack(const void *ctx, float *dst, int64_t k0, int64_t kc, int64_t j0, int64_t nc,
		    int nr)
{
	const struct cb_ctx *c = ctx;
	for (int64_t p = 0; p < nc; p += nr)
		for (int64_t k = 0; k < kc; k++)
			for (int64_t j = 0; j < nr; j++)
				dst[(p / nr) * kc * nr + k * nr + j] =
					p + j < nc ? c->b[(k0 + k) * c->ldb + j0 + p + j] : 0.0f;
}

/* Runs one case through hal_gemm on step st and checks every element; out
 * (may be NULL) receives C for bitwise comparisons between runs. */
static void run_gcase(const struct gcase *t, hal_step *st, float *out)
{
	int64_t M = t->M, N = t->N, K = t->K;
	int64_t lda = t->ta ? M : K, ldb = t->tb ? K : N, ldc = N + 3;
	float *a = ot_rand_buf((size_t)(M * K)), *b = ot_rand_buf((size_t)(K * N));
	float *c = ot_rand_buf((size_t)(M * ldc)), *c0 = malloc((size_t)(M * ldc) * sizeof *c0);
	float *bias = t->bias ? ot_rand_buf((size_t)M) : NULL;
	assert_non_null(c0);
	if (t->beta == 0.0f)  /* C must not be read: NaN would show */
		for (int64_t i = 0; i < M * ldc; i++)
			c[i] = NAN;
	memcpy(c0, c, (size_t)(M * ldc) * sizeof *c);

	hal_gemm_args g = {
		.M = M, .N = N, .K = K, .a = a, .lda = lda, .trans_a = t->ta,
		.b = b, .ldb = ldb, .trans_b = t->tb, .c = c, .ldc = ldc,
		.alpha = t->alpha, .beta = t->beta, .bias = bias,
	};
	float *pa = NULL, *pb = NULL, *bk = NULL;
	int64_t *koff = NULL;
	struct cb_ctx cb = { b, ldb };
	if (t->amode == A_PACKED) {
		pa = ot_scratch_alloc(hal_gemm_packed_a_bytes(M, K));
		hal_gemm_pack_a(pa, a, lda, t->ta, M, K);
		g.a_packed = pa;
	}
	if (t->bmode == B_PACKED) {
		pb = ot_scratch_alloc(hal_gemm_packed_b_bytes(K, N));
		hal_gemm_pack_b(pb, b, ldb, t->tb, K, N);
		g.b_packed = pb;
	} else if (t->bmode == B_KOFF) {
		/* rows of B scattered in a buffer of exactly the bytes read:
		 * row k at koff[k] (reverse order, odd gaps) */
		koff = malloc((size_t)(K ? K : 1) * sizeof *koff);
		bk = malloc((size_t)(K * (N + 5) + 1) * sizeof *bk);
		assert_true(koff && bk);
		for (int64_t k = 0; k < K; k++) {
			koff[k] = (K - 1 - k) * (N + 5) + (k % 3);
			for (int64_t j = 0; j < N; j++)
				bk[koff[k] + j] = t->tb ? b[j * ldb + k] : b[k * ldb + j];
		}
		g.b = bk;
		g.b_koff = koff;
	} else if (t->bmode == B_CALLBACK) {
		assert_false(t->tb);
		g.b_pack = cb_pack;
		g.b_ctx = &cb;
	}
	struct done_rec dr = { c, ldc, NULL, NULL };
	if (t->epi_done) {
		dr.count = calloc((size_t)(M * ldc), sizeof *dr.count);
		dr.snap = calloc((size_t)(M * ldc), sizeof *dr.snap);
		assert_true(dr.count && dr.snap);
		g.epi = &test_epi;
		g.done = done_cb;
		g.done_ctx = &dr;
	}
	int bm = t->bmode == B_PACKED ? 1 : t->bmode == B_KOFF ? 2 : 0;
	void *scr = ot_scratch_alloc(hal_gemm_scratch_bytes(M, N, K, pa != NULL, bm));
	hal_gemm(st, &g, scr);

	for (int64_t i = 0; i < M; i++)
		for (int64_t j = 0; j < N; j++) {
			double acc = 0, mag = 0;
			for (int64_t k = 0; k < K; k++) {
				double x = t->ta ? a[k * lda + i] : a[i * lda + k];
				double y = t->tb ? b[j * ldb + k] : b[k * ldb + j];
				acc += x * y;
				mag += fabs(x * y);
			}
			double want = t->alpha * acc, cm = 0;
			mag *= fabs(t->alpha);
			if (t->beta != 0.0f) {
				want += (double)t->beta * c0[i * ldc + j];
				cm = fabs((double)t->beta * c0[i * ldc + j]);
			}
			if (bias) {
				want += bias[i];
				cm += fabs(bias[i]);
			}
			double tol = (double)(K + 4) * U_F32 * (mag + cm) + 1e-30;
			double got = c[i * ldc + j];
			if (t->epi_done) {
				/* clip is 1-Lipschitz: the tolerance scales by post_s */
				double v = want < test_epi.a ? test_epi.a : want;
				want = test_epi.post_s * (v > test_epi.b ? test_epi.b : v) +
				       test_epi.post_b;
				tol = tol * test_epi.post_s + 4 * U_F32;
				if (dr.count[i * ldc + j] != 1)
					fail_msg("M=%lld N=%lld K=%lld: C[%lld,%lld] handed to done %d times",
						 (long long)M, (long long)N, (long long)K, (long long)i,
						 (long long)j, dr.count[i * ldc + j]);
				assert_memory_equal(&dr.snap[i * ldc + j], &c[i * ldc + j], sizeof *c);
			}
			if (!(fabs(got - want) <= tol))
				fail_msg("%s M=%lld N=%lld K=%lld ta=%d tb=%d a%d b%d: C[%lld,%lld] = %.9g, "
					 "want %.9g (tol %.3g)", hal_gemm_isa(), (long long)M,
					 (long long)N, (long long)K, t->ta, t->tb, t->amode, t->bmode,
					 (long long)i, (long long)j, got, want, tol);
		}
	/* the padding columns of C are never written */
	for (int64_t i = 0; i < M; i++)
		for (int64_t j = N; j < ldc; j++)
			assert_memory_equal(&c[i * ldc + j], &c0[i * ldc + j], sizeof *c);
	if (out)
		memcpy(out, c, (size_t)(M * ldc) * sizeof *c);
	free(a);
	free(b);
	free(c);
	free(c0);
	free(bias);
	free(pa);
	free(pb);
	free(bk);
	free(koff);
	free(scr);
	free(dr.count);
	free(dr.snap);
}

/* Every size combination of the edge set, all four transposes. */
static void gemm_edge_sizes(void **state)
{
	static const int64_t sz[] = { 1, 3, 17, 63, 64, 65, 255 };
	const int n = (int)(sizeof sz / sizeof sz[0]);
	(void)state;
	for (ot_isa_iter it = { 0 }; ot_isa_next(&it);) {
		int idx = 0;
		for (int i = 0; i < n; i++)
			for (int j = 0; j < n; j++)
				for (int k = 0; k < n; k++, idx++) {
					struct gcase t = { sz[i], sz[j], sz[k], idx & 1, (idx >> 1) & 1,
							   1.0f, 0.0f, 0, A_RAW, B_RAW, 0 };
					run_gcase(&t, NULL, NULL);
				}
	}
}

/* Sizes across the K, N and M blocks (HAL_GEMM_KC/NC/MC), all transposes,
 * with alpha, beta and bias. */
static void gemm_blocks_alpha_beta(void **state)
{
	static const int64_t shapes[][3] = {
		{ 250, 300, 513 }, { 500, 40, 300 }, { 7, 600, 257 }, { 241, 257, 256 },
		{ 1, 1000, 700 }, { 600, 1, 33 }, { 31, 33, 1 },
	};
	static const float ab[][2] = { { 1, 0 }, { 0.5f, 1 }, { -2, 0.25f }, { 1, -1 } };
	(void)state;
	for (ot_isa_iter it = { 0 }; ot_isa_next(&it);) {
		for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
			for (int tr = 0; tr < 4; tr++) {
				const float *x = ab[(i + (size_t)tr) % 4];
				struct gcase t = { shapes[i][0], shapes[i][1], shapes[i][2], tr & 1,
						   tr >> 1, x[0], x[1], (tr + (int)i) & 1, A_RAW, B_RAW, 0 };
				run_gcase(&t, NULL, NULL);
			}
	}
}

/* Pre-packed A and B, B read in place (b_koff), B from a pack callback. */
static void gemm_operand_modes(void **state)
{
	static const int64_t shapes[][3] = {
		{ 1, 1, 1 }, { 3, 17, 5 }, { 65, 63, 64 }, { 24, 700, 300 }, { 255, 65, 257 },
		{ 100, 33, 600 },
	};
	(void)state;
	for (ot_isa_iter it = { 0 }; ot_isa_next(&it);) {
		for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
			for (int am = A_RAW; am <= A_PACKED; am++)
				for (int bm = B_RAW; bm <= B_CALLBACK; bm++) {
					struct gcase t = { shapes[i][0], shapes[i][1], shapes[i][2],
							   (int)i & 1, bm == B_CALLBACK ? 0 : (int)(i >> 1) & 1,
							   0.75f, bm == B_KOFF ? 0.5f : 0.0f, bm & 1, am, bm, 0 };
					run_gcase(&t, NULL, NULL);
				}
	}
}

/* M tails: every row count of a last row panel (1..MR-1 valid rows, which
 * AVX2 runs with 1-, 2- or 4-row kernels over the 6-row packed layout),
 * with and without a K block boundary, a partial last column panel, every
 * operand mode, bias, beta and the epilogue with the done callback. */
static void gemm_row_tails(void **state)
{
	static const int64_t ms[] = { 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 13, 14, 16, 49 };
	/* (N, K): K = 384 is the longest single K block, 385 splits */
	static const int64_t nk[][2] = { { 37, 20 }, { 16, 384 }, { 53, 385 } };
	(void)state;
	for (ot_isa_iter it = { 0 }; ot_isa_next(&it);) {
		for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++)
			for (size_t j = 0; j < sizeof nk / sizeof nk[0]; j++)
				for (int bm = B_RAW; bm <= B_CALLBACK; bm++) {
					int v = (int)(i + j) + bm;
					struct gcase t = { ms[i], nk[j][0], nk[j][1], v & 1,
							   bm == B_CALLBACK ? 0 : (v >> 1) & 1,
							   v & 1 ? -0.75f : 1.0f, (v >> 1) & 1 ? 0.5f : 0.0f,
							   (v >> 2) & 1, v & 1 ? A_PACKED : A_RAW, bm,
							   (int)i & 1 };
					run_gcase(&t, NULL, NULL);
				}
	}
}

/* M = 1 over a pre-packed B (the GEMV path), every micro-kernel's panel
 * width, alpha, beta, bias, A transposed or not, 1 and 3 threads. */
static void gemm_row_vector(void **state)
{
	/* (N, K); 2100 columns: more panels than one task's group of 64 */
	static const int64_t shapes[][2] = { { 1, 1 }, { 17, 5 }, { 37, 513 }, { 1000, 300 },
					     { 2100, 37 } };
	static const float ab[][2] = { { 1, 0 }, { 0.5f, 1 }, { -2, 0.25f } };
	(void)state;
	hal_plan *p = ot_plan_new(3);
	hal_step st = { .plan = p };
	for (ot_isa_iter it = { 0 }; ot_isa_next(&it);) {
		for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
			for (int v = 0; v < 6; v++) {
				const float *x = ab[v % 3];
				struct gcase t = { 1, shapes[i][0], shapes[i][1], v & 1, (v >> 1) & 1,
						   x[0], x[1], v & 1, A_RAW, B_PACKED, 0 };
				run_gcase(&t, v < 3 ? NULL : &st, NULL);
			}
	}
	ot_plan_del(p);
}

/* K = 0: C = beta*C + bias, nothing read from A or B. */
static void gemm_k_zero(void **state)
{
	(void)state;
	struct gcase t = { 5, 7, 0, 0, 0, 1.0f, 0.5f, 1, A_RAW, B_RAW, 0 };
	run_gcase(&t, NULL, NULL);
	t.beta = 0.0f;
	run_gcase(&t, NULL, NULL);
}

/* Runs case t on one thread, then from the same random state on st's pool
 * (run_gcase checks each against the scalar reference), and checks the
 * two results bitwise equal. */
static void one_vs_many(const struct gcase *t, hal_step *st)
{
	size_t n = (size_t)(t->M * (t->N + 3));
	float *one = malloc(n * sizeof *one), *many = malloc(n * sizeof *many);
	assert_true(one && many);
	uint64_t seed = ot_rng;
	run_gcase(t, NULL, one);
	ot_rng = seed;
	run_gcase(t, st, many);
	assert_memory_equal(one, many, n * sizeof *one);
	free(one);
	free(many);
}

/* The task grid depends on the thread count, but K blocks do not, so every
 * element is summed in the same order: 1 and 3 threads give
 * bitwise-identical results. */
static void gemm_threads(void **state)
{
	static const int64_t shapes[][3] = { { 300, 900, 260 }, { 24, 25600, 96 }, { 5, 40, 3000 } };
	(void)state;
	hal_plan *p = ot_plan_new(3);
	hal_step st = { .plan = p };
	for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
		for (int bm = B_RAW; bm <= B_KOFF; bm++) {
			struct gcase t = { shapes[i][0], shapes[i][1], shapes[i][2], 0, 1, 1.0f, 0.0f, 1,
					   A_PACKED, bm, 0 };
			one_vs_many(&t, &st);
		}
	ot_plan_del(p);
}

/* The task grid of several workers (hal_gemm.h: N blocks narrowed, then M
 * split into partitions, then MC halved) on every ISA, pools of 2 and 3
 * threads: shapes spanning several KC, NC and MC blocks, an N too narrow
 * to split (M partitions re-pack B), a tall thin one (MC halved), every
 * operand mode, alpha, beta, bias, the epilogue and the done callback;
 * each checked against the scalar reference and bitwise against one
 * thread. */
static void gemm_grid_threads(void **state)
{
	static const int64_t shapes[][3] = {
		{ 250, 530, 300 }, { 730, 49, 300 }, { 700, 20, 90 }, { 256, 256, 100 },
		{ 97, 1000, 40 }, { 13, 70, 9 },
	};
	(void)state;
	for (int th = 2; th <= 3; th++) {
		hal_plan *p = ot_plan_new(th);
		hal_step st = { .plan = p };
		for (ot_isa_iter it = { 0 }; ot_isa_next(&it);) {
			for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
				for (int bm = B_RAW; bm <= B_CALLBACK; bm++) {
					int v = (int)i + bm + th;
					struct gcase t = { shapes[i][0], shapes[i][1], shapes[i][2],
							   v & 1, bm == B_CALLBACK ? 0 : (v >> 1) & 1,
							   v & 1 ? 0.75f : 1.0f, bm == B_KOFF ? 0.5f : 0.0f,
							   v & 1, (v >> 2) & 1 ? A_PACKED : A_RAW, bm, v & 1 };
					one_vs_many(&t, &st);
				}
		}
		ot_plan_del(p);
	}
}

/* ---------------- Conv / ConvTranspose through the op ---------------- */

struct conv_case {
	const char *name;
	int nsp;                       /* 1 or 2 spatial dims */
	int64_t n, c, h, w, m, group, kh, kw, sh, sw, dh, dw;
	int64_t pads[4];               /* ONNX order: begins then ends */
	int bias, wconst;
	const char *auto_pad;          /* NULL: NOTSET */
	int64_t outpad[2];             /* ConvTranspose only */
};

/* A case to run: the plan, the op, the case. */
struct conv_op_run {
	hal_plan *p;
	const char *op_type;   /* Conv or ConvTranspose */
	const struct conv_case *t;
};

/* Runs the op on inputs in[0..nin) with the case's attributes (the same on
 * the magnitude run: no epilogue here); returns the output (malloc'd) and
 * its shape in *y. An ot_step_fn. */
static float *run_conv_op(void *ctx, hal_tensor *const *in, int nin, int mag, hal_tensor *y)
{
	const struct conv_op_run *cr = ctx;
	hal_plan *p = cr->p;
	const char *op_type = cr->op_type;
	const struct conv_case *t = cr->t;
	int n = t->nsp;
	int64_t ks[2] = { t->kh, t->kw }, st[2] = { t->sh, t->sw }, dl[2] = { t->dh, t->dw };
	int64_t pads[4] = { t->pads[0], t->pads[1], t->pads[2], t->pads[3] };
	if (n == 1) {  /* 1-D: the W entries */
		ks[0] = t->kw;
		st[0] = t->sw;
		dl[0] = t->dw;
		pads[0] = t->pads[1];
		pads[1] = t->pads[3];
	}
	ir_attr at[8];
	int na = 0;
	at[na++] = ot_ints_attr("kernel_shape", ks, n);
	at[na++] = ot_ints_attr("strides", st, n);
	at[na++] = ot_ints_attr("dilations", dl, n);
	at[na++] = (ir_attr){ .name = "group", .type = IR_ATTR_INT, .i = t->group };
	if (t->auto_pad)
		at[na++] = (ir_attr){ .name = "auto_pad", .type = IR_ATTR_STRING, .s = t->auto_pad,
				      .slen = strlen(t->auto_pad) };
	else
		at[na++] = ot_ints_attr("pads", pads, 2 * n);
	if (t->outpad[0] || t->outpad[1])
		at[na++] = ot_ints_attr("output_padding", n == 1 ? &t->outpad[1] : t->outpad, n);
	ir_node node = { .name = t->name, .op_type = op_type, .domain = "", .n_in = nin,
			 .n_out = 1, .n_attr = na, .attr = at };
	return ot_step_run(p, &node, in, nin, y);
}

static void tensor_init(hal_tensor *t, int rank, const int64_t *d, void *data, int is_const)
{
	memset(t, 0, sizeof *t);
	t->dtype = HAL_DT_F32;
	t->rank = rank;
	memcpy(t->dims, d, (size_t)rank * sizeof *d);
	t->data = data;
	t->is_const = (uint8_t)is_const;
}

/* Fast path vs reference for one case, ConvTranspose when transpose. */
static void check_conv_case(hal_plan *p, const struct conv_case *t, int transpose)
{
	const char *op = transpose ? "ConvTranspose" : "Conv";
	int r = t->nsp + 2;
	int64_t xd[4] = { t->n, t->c, t->h, t->w }, wd[4], bd[1] = { t->m };
	if (transpose) {  /* W [C, M/group, k...] */
		wd[0] = t->c;
		wd[1] = t->m / t->group;
	} else {          /* W [M, C/group, k...] */
		wd[0] = t->m;
		wd[1] = t->c / t->group;
	}
	wd[2] = t->kh;
	wd[3] = t->kw;
	if (t->nsp == 1) {
		xd[2] = t->w;
		wd[2] = t->kw;
	}
	size_t nx = 1, nw = 1;
	for (int i = 0; i < r; i++) {
		nx *= (size_t)xd[i];
		nw *= (size_t)wd[i];
	}
	float *x = ot_rand_buf(nx), *w = ot_rand_buf(nw), *b = ot_rand_buf((size_t)t->m);
	hal_tensor tx, tw, tb, ty[3];
	tensor_init(&tx, r, xd, x, 0);
	tensor_init(&tw, r, wd, w, t->wconst);
	tensor_init(&tb, 1, bd, b, t->wconst);
	hal_tensor *in[3] = { &tx, &tw, &tb };
	struct conv_op_run cr = { p, op, t };
	float *yo[3];
	ot_fast_ref_mag(run_conv_op, &cr, in, t->bias ? 3 : 2, yo, ty);
	const float *yf = yo[0], *yr = yo[1], *ym = yo[2];

	assert_int_equal(ty[0].rank, ty[1].rank);
	assert_memory_equal(ty[0].dims, ty[1].dims, (size_t)ty[0].rank * sizeof ty[0].dims[0]);
	int64_t K = (transpose ? t->c / t->group : t->c / t->group) * t->kh * t->kw;
	if (t->nsp == 1)
		K = (t->c / t->group) * t->kw;
	int64_t ny = hal_numel(&ty[0]);
	for (int64_t i = 0; i < ny; i++) {
		double tol = 2.0 * (double)(K + 4) * U_F32 * ym[i] + 1e-30;
		if (!(fabs((double)yf[i] - yr[i]) <= tol))
			fail_msg("%s %s [%s]: y[%lld] fast %.9g ref %.9g (tol %.3g)", op, t->name,
				 hal_gemm_isa(), (long long)i, yf[i], yr[i], tol);
	}
	free(x);
	free(w);
	free(b);
	for (int i = 0; i < 3; i++)
		free(yo[i]);
}

static const struct conv_case conv_cases[] = {
	/* name            nsp n  c   h   w   m  grp kh kw sh sw dh dw pads        bias const */
	{ "3x3 pad1",        2, 1, 8, 12, 11, 5, 1, 3, 3, 1, 1, 1, 1, { 1, 1, 1, 1 }, 1, 1, NULL, { 0 } },
	{ "3x3 raw W",       2, 2, 5, 9, 10, 7, 1, 3, 3, 1, 1, 1, 1, { 1, 1, 1, 1 }, 0, 0, NULL, { 0 } },
	{ "1x1",             2, 2, 16, 7, 9, 24, 1, 1, 1, 1, 1, 1, 1, { 0 }, 1, 1, NULL, { 0 } },
	{ "1x1 stride2",     2, 1, 6, 9, 8, 4, 1, 1, 1, 2, 2, 1, 1, { 0 }, 1, 1, NULL, { 0 } },
	{ "5x5 s2 d2 pad",   2, 1, 3, 23, 19, 6, 1, 5, 5, 2, 2, 2, 2, { 2, 1, 3, 4 }, 1, 1, NULL, { 0 } },
	{ "3x3 s2 first",    2, 1, 3, 33, 31, 16, 1, 3, 3, 2, 2, 1, 1, { 1, 1, 1, 1 }, 1, 1, NULL, { 0 } },
	{ "asym stride",     2, 1, 4, 17, 15, 5, 1, 3, 2, 3, 1, 1, 2, { 0, 2, 1, 0 }, 1, 1, NULL, { 0 } },
	{ "grouped",         2, 2, 16, 10, 9, 8, 4, 3, 3, 1, 1, 1, 1, { 1, 1, 1, 1 }, 1, 1, NULL, { 0 } },
	{ "grouped s2",      2, 1, 12, 11, 13, 6, 3, 3, 3, 2, 2, 1, 1, { 1, 1, 1, 1 }, 0, 0, NULL, { 0 } },
	{ "depthwise 3x3",   2, 2, 32, 21, 37, 32, 32, 3, 3, 1, 1, 1, 1, { 1, 1, 1, 1 }, 1, 1, NULL, { 0 } },
	{ "depthwise s2",    2, 1, 24, 20, 41, 24, 24, 3, 3, 2, 2, 1, 1, { 1, 1, 1, 1 }, 1, 1, NULL, { 0 } },
	{ "depthwise 5x5",   2, 1, 16, 40, 40, 16, 16, 5, 5, 1, 1, 1, 1, { 2, 2, 2, 2 }, 1, 1, NULL, { 0 } },
	{ "dw s2 5x5",       2, 1, 8, 41, 40, 8, 8, 5, 5, 2, 2, 1, 1, { 2, 2, 2, 2 }, 0, 1, NULL, { 0 } },
	{ "dw dilated s3",   2, 1, 6, 30, 29, 6, 6, 3, 3, 3, 3, 2, 3, { 2, 3, 1, 0 }, 1, 0, NULL, { 0 } },
	{ "dw multiplier",   2, 1, 8, 9, 10, 16, 8, 3, 3, 1, 2, 1, 1, { 1, 0, 1, 2 }, 1, 1, NULL, { 0 } },
	{ "same_upper",      2, 1, 4, 10, 11, 3, 1, 4, 3, 2, 3, 1, 1, { 0 }, 1, 1, "SAME_UPPER", { 0 } },
	{ "same_lower",      2, 1, 4, 10, 11, 3, 1, 4, 4, 3, 2, 1, 1, { 0 }, 0, 1, "SAME_LOWER", { 0 } },
	{ "valid",           2, 1, 4, 10, 11, 3, 1, 3, 3, 2, 2, 1, 1, { 0 }, 1, 1, "VALID", { 0 } },
	{ "big pads",        2, 1, 2, 4, 5, 3, 1, 3, 3, 1, 1, 1, 1, { 4, 3, 5, 2 }, 1, 1, NULL, { 0 } },
	{ "1-D",             1, 2, 6, 1, 50, 4, 1, 1, 5, 1, 3, 1, 1, { 0, 2, 0, 1 }, 1, 1, NULL, { 0 } },
	{ "1-D dilated",     1, 1, 4, 1, 40, 8, 2, 1, 3, 1, 1, 1, 4, { 0, 4, 0, 4 }, 1, 0, NULL, { 0 } },
	{ "1-D depthwise",   1, 1, 8, 1, 33, 8, 8, 1, 7, 1, 2, 1, 1, { 0, 3, 0, 3 }, 1, 1, NULL, { 0 } },
	{ "dw wide rows",    2, 1, 3, 6, 70, 3, 3, 3, 3, 1, 1, 1, 1, { 1, 1, 1, 1 }, 1, 1, NULL, { 0 } },
	{ "dw wide s2 5x5",  2, 1, 2, 9, 151, 4, 2, 5, 5, 2, 2, 1, 1, { 2, 1, 2, 3 }, 1, 0, NULL, { 0 } },
	{ "wide K",          2, 1, 96, 12, 14, 24, 1, 3, 3, 1, 1, 1, 1, { 1, 1, 1, 1 }, 1, 1, NULL, { 0 } },
};

static const struct conv_case convt_cases[] = {
	{ "k2 s2",           2, 1, 8, 9, 10, 6, 1, 2, 2, 2, 2, 1, 1, { 0 }, 1, 1, NULL, { 0 } },
	{ "k3 s2 pad outpad", 2, 2, 4, 7, 6, 6, 2, 3, 3, 2, 2, 1, 1, { 1, 1, 1, 0 }, 1, 0, NULL, { 1, 1 } },
	{ "k3 s1 dilated",   2, 1, 3, 5, 8, 2, 1, 3, 3, 1, 1, 2, 2, { 1, 0, 0, 1 }, 0, 1, NULL, { 0 } },
	{ "k4 s3",           2, 1, 5, 6, 5, 4, 1, 4, 4, 3, 3, 1, 1, { 0 }, 1, 1, NULL, { 0 } },
	{ "1-D",             1, 1, 4, 1, 20, 3, 1, 1, 5, 1, 2, 1, 1, { 0, 2, 0, 1 }, 1, 1, NULL, { 0 } },
	{ "same_upper",      2, 1, 3, 5, 6, 2, 1, 3, 3, 2, 2, 1, 1, { 0 }, 1, 1, "SAME_UPPER", { 0 } },
};

static void conv_cases_run(const struct conv_case *cases, size_t n, int transpose)
{
	for (int threads = 1; threads <= 2; threads++) {
		hal_plan *p = ot_plan_new(threads);
		for (ot_isa_iter it = { 0 }; ot_isa_next(&it);) {
			for (size_t i = 0; i < n; i++)
				check_conv_case(p, &cases[i], transpose);
		}
		ot_plan_del(p);
	}
}

/* Conv fast paths (depthwise rows, 1x1 GEMM, polyphase GEMM) vs reference. */
static void conv_fast_vs_reference(void **state)
{
	(void)state;
	conv_cases_run(conv_cases, sizeof conv_cases / sizeof conv_cases[0], 0);
}

/* ConvTranspose GEMM + col2im vs the reference scatter. */
static void convtranspose_fast_vs_reference(void **state)
{
	(void)state;
	conv_cases_run(convt_cases, sizeof convt_cases / sizeof convt_cases[0], 1);
}

int main(void)
{
	printf("    gemm micro-kernel: %s (NR %d)\n", hal_gemm_isa(), hal_gemm_nr());
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(gemm_edge_sizes),
		cmocka_unit_test(gemm_blocks_alpha_beta),
		cmocka_unit_test(gemm_operand_modes),
		cmocka_unit_test(gemm_k_zero),
		cmocka_unit_test(gemm_row_tails),
		cmocka_unit_test(gemm_row_vector),
		cmocka_unit_test(gemm_threads),
		cmocka_unit_test(gemm_grid_threads),
		cmocka_unit_test(conv_fast_vs_reference),
		cmocka_unit_test(convtranspose_fast_vs_reference),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
