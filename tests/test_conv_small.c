/*
 * tests/test_conv_small.c - Conv's small-plane path (hal/ops/conv_small.c:
 * output pixels x output channels register tiles) against a scalar double
 * loop written here, the definition of ONNX Conv:
 *   y[n,o,oy,ox] = b[o] + sum_{c,ky,kx} x[n,c,oy*sh-pt+ky*dh,ox*sw-pl+kx*dw] w[o,c,ky,kx]
 * (taps outside X read 0), then, where the case asks, LeakyRelu(alpha) and
 * Max with a scalar (fused into the Conv's epilogue, hal/fuse_conv.c).
 * Shapes: openWakeWord's (1x3 pad 1, 3x1 unpadded, planes down to 3x1 and
 * 1x1 output) and odd ones: batch 2, strides, dilations, asymmetric pads,
 * pixel counts that leave a partial 4-pixel tile, output channels that
 * leave a partial 24-channel panel, no bias, a 1-D Conv; each on 1 and 2
 * threads (cases over the path's threshold split across both), with the
 * AVX2 tile and the baseline one (hal_gemm_use_isa). Every case has output
 * channels filling the 24-lane panels to >= 5/6 and constant weights, so
 * the path takes it.
 * Tolerance: |got - want| <= 1e-4 (1 + |want|): float sums of at most
 * 288 products of magnitude <= 2.
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

#include "aidos/aidos.h"
#include "hal/gemm.h"
#include "tests/pb_write.h"

struct ccase {
	const char *name;
	int64_t n, c, h, w, m, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr;
	int bias;
	float alpha;         /* > 0: LeakyRelu(alpha), then Max(., lo) */
	float lo;
};

static const struct ccase cases[] = {
	/* name            n   c   h   w   m  kh kw sh sw dh dw pt pl pb pr bias alpha lo */
	{ "oww 1x3",       1, 24, 14,  4, 48, 1, 3, 1, 1, 1, 1, 0, 1, 0, 1, 1, 0.2f, -0.5f },
	{ "oww 3x1",       1, 96, 10,  2, 96, 3, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0.2f, -1e30f },
	{ "oww last",      1, 96,  3,  1, 96, 3, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0.2f, -0.1f },
	{ "oww 2 threads", 1, 24, 36, 16, 48, 3, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0.2f, -0.3f },
	{ "oww first",     1,  1, 19, 11, 24, 3, 3, 1, 1, 1, 1, 0, 1, 0, 1, 1, 0.2f, -0.5f },
	{ "odd s2 dil",    2,  5,  7,  9, 20, 3, 3, 2, 1, 1, 2, 1, 0, 2, 1, 0, 0, 0 },
	{ "2x3 m40",       1,  7, 11, 13, 40, 2, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0 },
	{ "1-D k5",        1, 16,  1, 37, 24, 1, 5, 1, 1, 1, 1, 0, 2, 0, 2, 1, 0.1f, -1e30f },
	{ "tail 5 px",     1, 33,  5,  2, 72, 1, 2, 1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0 },
};

/* ---- the model: x -> Conv [-> LeakyRelu -> Max] ---- */

static const char *init(pbw *g, const char *name, int rank, const int64_t *dims, const float *v)
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
	return name;
}

static void attr_ints(pbw *node, const char *name, const int64_t *v, int n)
{
	pbw a = { 0 };
	pbw_str(&a, 1, name);
	for (int i = 0; i < n; i++)
		pbw_int(&a, 8, v[i]);
	pbw_int(&a, 20, 7);
	pbw_take(node, 5, &a);
}

static void attr_float(pbw *node, const char *name, float v)
{
	pbw a = { 0 };
	pbw_str(&a, 1, name);
	pbw_varint(&a, 2 << 3 | 5);
	pbw_raw(&a, &v, 4);
	pbw_int(&a, 20, 1);
	pbw_take(node, 5, &a);
}

static void value_info(pbw *g, int field, const char *name, int rank, const int64_t *dims)
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

/* 1-D when t->h == 1 and kh == 1 and the case is named so: X [n, c, w]. */
static int one_d(const struct ccase *t)
{
	return strncmp(t->name, "1-D", 3) == 0;
}

static void build(const struct ccase *t, const float *w, const float *b, pbw *out)
{
	pbw g = { 0 }, n = { 0 };
	int d1 = one_d(t), r = d1 ? 3 : 4;
	int64_t wd[4] = { t->m, t->c, t->kh, t->kw }, bd = t->m;
	if (d1)
		wd[2] = t->kw;
	init(&g, "W", r, wd, w);
	if (t->bias)
		init(&g, "B", 1, &bd, b);
	pbw_str(&n, 1, "x");
	pbw_str(&n, 1, "W");
	if (t->bias)
		pbw_str(&n, 1, "B");
	pbw_str(&n, 2, t->alpha > 0 ? "c" : "y");
	pbw_str(&n, 4, "Conv");
	int64_t ks[2] = { t->kh, t->kw }, st[2] = { t->sh, t->sw }, dl[2] = { t->dh, t->dw };
	int64_t pads[4] = { t->pt, t->pl, t->pb, t->pr };
	if (d1) {
		int64_t p1[2] = { t->pl, t->pr };
		attr_ints(&n, "kernel_shape", ks + 1, 1);
		attr_ints(&n, "strides", st + 1, 1);
		attr_ints(&n, "dilations", dl + 1, 1);
		attr_ints(&n, "pads", p1, 2);
	} else {
		attr_ints(&n, "kernel_shape", ks, 2);
		attr_ints(&n, "strides", st, 2);
		attr_ints(&n, "dilations", dl, 2);
		attr_ints(&n, "pads", pads, 4);
	}
	pbw_take(&g, 1, &n);
	if (t->alpha > 0) {
		pbw_str(&n, 1, "c");
		pbw_str(&n, 2, "l");
		pbw_str(&n, 4, "LeakyRelu");
		attr_float(&n, "alpha", t->alpha);
		pbw_take(&g, 1, &n);
		init(&g, "lo", 0, NULL, &t->lo);
		pbw_str(&n, 1, "l");
		pbw_str(&n, 1, "lo");
		pbw_str(&n, 2, "y");
		pbw_str(&n, 4, "Max");
		pbw_take(&g, 1, &n);
	}
	pbw_str(&g, 2, "g");
	int64_t xd[4] = { t->n, t->c, t->h, t->w };
	if (d1)
		xd[2] = t->w;
	value_info(&g, 11, "x", r, xd);
	value_info(&g, 12, "y", -1, NULL);
	pbw op = { 0 };
	memset(out, 0, sizeof *out);
	pbw_int(out, 1, 8);
	pbw_take(out, 7, &g);
	pbw_str(&op, 1, "");
	pbw_int(&op, 2, 13);
	pbw_take(out, 8, &op);
}

static uint64_t rng = 0x853c49e6748fea9bull;

static float frand(float lo, float hi)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return lo + (hi - lo) * (float)((rng >> 11) * (1.0 / 9007199254740992.0));
}

static int64_t out_len(int64_t in, int64_t k, int64_t s, int64_t d, int64_t p0, int64_t p1)
{
	return (in + p0 + p1 - (k - 1) * d - 1) / s + 1;
}

static void conv_small_vs_loop(void **state)
{
	(void)state;
	const char *def_isa = hal_gemm_isa();
	static const char *const isas[] = { "avx2", "generic" };
	for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
		const struct ccase *t = &cases[ci];
		int64_t oh = out_len(t->h, t->kh, t->sh, t->dh, t->pt, t->pb);
		int64_t ow = out_len(t->w, t->kw, t->sw, t->dw, t->pl, t->pr);
		size_t nx = (size_t)(t->n * t->c * t->h * t->w), nw = (size_t)(t->m * t->c * t->kh * t->kw);
		size_t ny = (size_t)(t->n * t->m * oh * ow);
		float *x = malloc(nx * sizeof *x), *w = malloc(nw * sizeof *w);
		float *b = malloc((size_t)t->m * sizeof *b);
		double *want = malloc(ny * sizeof *want);
		assert_true(x && w && b && want);
		for (size_t i = 0; i < nx; i++)
			x[i] = frand(-2, 2);
		for (size_t i = 0; i < nw; i++)
			w[i] = frand(-1, 1);
		for (int64_t i = 0; i < t->m; i++)
			b[i] = frand(-1, 1);
		for (int64_t n = 0; n < t->n; n++)
		for (int64_t o = 0; o < t->m; o++)
		for (int64_t oy = 0; oy < oh; oy++)
		for (int64_t ox = 0; ox < ow; ox++) {
			double acc = t->bias ? b[o] : 0;
			for (int64_t c = 0; c < t->c; c++)
			for (int64_t ky = 0; ky < t->kh; ky++)
			for (int64_t kx = 0; kx < t->kw; kx++) {
				int64_t iy = oy * t->sh - t->pt + ky * t->dh;
				int64_t ix = ox * t->sw - t->pl + kx * t->dw;
				if (iy < 0 || iy >= t->h || ix < 0 || ix >= t->w)
					continue;
				acc += (double)x[((n * t->c + c) * t->h + iy) * t->w + ix] *
				       w[((o * t->c + c) * t->kh + ky) * t->kw + kx];
			}
			if (t->alpha > 0)
				acc = fmax(acc < 0 ? t->alpha * acc : acc, t->lo);
			want[((n * t->m + o) * oh + oy) * ow + ox] = acc;
		}
		pbw bytes;
		build(t, w, b, &bytes);
		for (size_t is = 0; is < sizeof isas / sizeof isas[0]; is++) {
			if (hal_gemm_use_isa(isas[is]))
				continue;
			for (int threads = 1; threads <= 2; threads++) {
				char err[256] = "";
				aidos_model *m;
				aidos_session *s;
				if (aidos_model_load_buffer(bytes.b, bytes.n, NULL, &m, err, sizeof err))
					fail_msg("%s: load: %s", t->name, err);
				aidos_session_opts so = { 0 };
				so.threads = threads;
				if (aidos_session_create(m, &so, &s, err, sizeof err))
					fail_msg("%s: session: %s", t->name, err);
				aidos_tensor in = { .name = "x", .dtype = AIDOS_DT_FLOAT,
						    .rank = one_d(t) ? 3 : 4, .data = x };
				int64_t xd[4] = { t->n, t->c, one_d(t) ? t->w : t->h, t->w };
				memcpy(in.dims, xd, sizeof xd);
				if (aidos_session_run(s, 1, &in))
					fail_msg("%s: run: %s", t->name, aidos_session_errmsg(s));
				aidos_tensor y;
				assert_int_equal(aidos_session_output(s, 0, &y), 0);
				int64_t got_n = 1;
				for (int i = 0; i < y.rank; i++)
					got_n *= y.dims[i];
				assert_int_equal(got_n, (int64_t)ny);
				aidos_plan_stats st;
				assert_int_equal(aidos_session_stats(s, &st), 0);
				if (st.steps != 1)  /* the activation is in the Conv */
					fail_msg("%s: %d steps, want 1", t->name, st.steps);
				const float *gy = y.data;
				for (size_t i = 0; i < ny; i++)
					if (!(fabs(gy[i] - want[i]) <= 1e-4 * (1 + fabs(want[i]))))
						fail_msg("%s (%s, %d threads): y[%zu] = %.9g, want %.9g",
							 t->name, isas[is], threads, i, gy[i], want[i]);
				aidos_session_destroy(s);
				aidos_model_free(m);
			}
		}
		hal_gemm_use_isa(def_isa);
		free(bytes.b);
		free(x);
		free(w);
		free(b);
		free(want);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(conv_small_vs_loop),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
