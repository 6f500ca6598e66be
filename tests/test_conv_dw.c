/*
 * tests/test_conv_dw.c - depthwise Conv (group = channels, one filter per
 * channel; hal/ops/conv_dw.c, and the generic CONV_DW path of hal/ops/nn.c
 * for what that one does not take) against a scalar double loop written
 * here, the definition of ONNX Conv with group = C:
 *   y[n,c,oy,ox] = b[c] + sum_{ky,kx} x[n,c,oy*sh-pt+ky*dh,ox*sw-pl+kx*dw] w[c,0,ky,kx]
 * (taps outside X read 0), then the case's activation (Relu, Clip(lo, hi),
 * HardSwish: fused into the Conv's epilogue by hal/fuse_conv.c, the test
 * checks the plan has one step).
 * Shapes: MobileNetV2's (3x3, pad 1, stride 1 and 2, 112x112 down to 7x7)
 * and odd ones: channels not a multiple of 8, odd and even H/W, widths
 * that leave a partial 8-pixel block or are under 8, pads 0/1/2 and
 * asymmetric, dilation 2, 5x5 and 1x7 kernels, batch 2, stride 3 and
 * wide planes (nn.c's path), stride-2 planes read in place (unmasked,
 * border-column and border-row tiles) and through the padded copy, no
 * bias; each on 1 and 2 threads, with the AVX2 kernel and
 * the baseline one (hal_gemm_use_isa).
 * Tolerance: |got - want| <= 1e-4 (1 + |want|): float sums of at most 25
 * products of magnitude <= 2.
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

enum { ACT_NONE, ACT_RELU, ACT_CLIP, ACT_HSWISH };

struct ccase {
	const char *name;
	int64_t n, c, h, w, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr;
	int bias, act;
};

static const struct ccase cases[] = {
	/* name               n    c    h    w kh kw sh sw dh dw pt pl pb pr bias act */
	{ "mbv2 112 s1",      1,  32, 112, 112, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, ACT_CLIP },
	{ "mbv2 112 s2",      1,  96, 112, 112, 3, 3, 2, 2, 1, 1, 0, 0, 1, 1, 1, ACT_CLIP },
	{ "mbv2 56 s1",       1,  24,  56,  56, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, ACT_CLIP },
	{ "mbv2 14 s2",       1, 576,  14,  14, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, ACT_CLIP },
	{ "mbv2 7 s1",        1, 960,   7,   7, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, ACT_CLIP },
	{ "odd 13x27 relu",   1,  13,  13,  27, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, ACT_RELU },
	{ "odd s2 hswish",    2,   5,  17,  33, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, ACT_HSWISH },
	{ "even s2 pad0",     1,  11,  20,  40, 3, 3, 2, 2, 1, 1, 0, 0, 0, 0, 0, ACT_NONE },
	{ "asym pads",        1,   9,  15,  21, 3, 3, 1, 2, 1, 1, 0, 2, 2, 1, 1, ACT_RELU },
	{ "dilation 2",       1,  10,  19,  23, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2, 1, ACT_CLIP },
	{ "5x5 pad 2",        2,   7,  16,  16, 5, 5, 1, 1, 1, 1, 2, 2, 2, 2, 1, ACT_HSWISH },
	{ "5x5 s2 narrow",    1,  12,   9,   6, 5, 5, 2, 2, 1, 1, 2, 2, 2, 2, 1, ACT_NONE },
	{ "1x7 wide pad",     1,   3,   4,  70, 1, 7, 1, 1, 1, 1, 0, 3, 0, 3, 0, ACT_NONE },
	{ "3x1 w 1",          1,  17,   9,   1, 3, 1, 2, 1, 1, 1, 1, 0, 1, 0, 1, ACT_RELU },
	{ "s1 unpadded 13",   1,  19,  15,  15, 3, 3, 1, 1, 1, 1, 0, 0, 0, 0, 1, ACT_RELU },
	{ "s1 7 wide 2 pad",  2,  21,  11,   7, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, ACT_HSWISH },
	{ "s2 direct 26",     1,  16,  20,  54, 3, 3, 2, 2, 1, 1, 0, 0, 1, 1, 1, ACT_CLIP },
	{ "s2 direct border", 2,   9,  33,  55, 3, 3, 2, 2, 1, 1, 0, 0, 1, 1, 1, ACT_RELU },
	{ "tiny 2x2",         1,   4,   2,   2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, ACT_CLIP },
	{ "stride 3 (nn.c)",  1,   6,  14,  14, 3, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, ACT_CLIP },
	{ "batch 2 3x3 s1",   2,  40,  10,  10, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, ACT_NONE },
};

#define CLIP_LO 0.0f
#define CLIP_HI 1.5f

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

static void build(const struct ccase *t, const float *w, const float *b, pbw *out)
{
	pbw g = { 0 }, n = { 0 };
	int64_t wd[4] = { t->c, 1, t->kh, t->kw }, bd = t->c;
	init(&g, "W", 4, wd, w);
	if (t->bias)
		init(&g, "B", 1, &bd, b);
	pbw_str(&n, 1, "x");
	pbw_str(&n, 1, "W");
	if (t->bias)
		pbw_str(&n, 1, "B");
	pbw_str(&n, 2, t->act != ACT_NONE ? "c" : "y");
	pbw_str(&n, 4, "Conv");
	int64_t ks[2] = { t->kh, t->kw }, st[2] = { t->sh, t->sw }, dl[2] = { t->dh, t->dw };
	int64_t pads[4] = { t->pt, t->pl, t->pb, t->pr }, grp = t->c;
	attr_ints(&n, "kernel_shape", ks, 2);
	attr_ints(&n, "strides", st, 2);
	attr_ints(&n, "dilations", dl, 2);
	attr_ints(&n, "pads", pads, 4);
	pbw a = { 0 };
	pbw_str(&a, 1, "group");
	pbw_int(&a, 3, grp);
	pbw_int(&a, 20, 2);
	pbw_take(&n, 5, &a);
	pbw_take(&g, 1, &n);
	if (t->act == ACT_CLIP) {
		float lo = CLIP_LO, hi = CLIP_HI;
		init(&g, "lo", 0, NULL, &lo);
		init(&g, "hi", 0, NULL, &hi);
	}
	if (t->act != ACT_NONE) {
		static const char *const op[] = { "", "Relu", "Clip", "HardSwish" };
		pbw_str(&n, 1, "c");
		if (t->act == ACT_CLIP) {
			pbw_str(&n, 1, "lo");
			pbw_str(&n, 1, "hi");
		}
		pbw_str(&n, 2, "y");
		pbw_str(&n, 4, op[t->act]);
		pbw_take(&g, 1, &n);
	}
	pbw_str(&g, 2, "g");
	int64_t xd[4] = { t->n, t->c, t->h, t->w };
	value_info(&g, 11, "x", 4, xd);
	value_info(&g, 12, "y", -1, NULL);
	pbw op = { 0 };
	memset(out, 0, sizeof *out);
	pbw_int(out, 1, 8);
	pbw_take(out, 7, &g);
	pbw_str(&op, 1, "");
	pbw_int(&op, 2, 14);
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

static double act(int a, double v)
{
	switch (a) {
	case ACT_RELU: return v < 0 ? 0 : v;
	case ACT_CLIP: return v < CLIP_LO ? CLIP_LO : v > CLIP_HI ? CLIP_HI : v;
	case ACT_HSWISH: return v * fmin(fmax(v / 6 + 0.5, 0), 1);
	default: return v;
	}
}

static void conv_dw_vs_loop(void **state)
{
	(void)state;
	const char *def_isa = hal_gemm_isa();
	static const char *const isas[] = { "avx512", "avx2", "generic" };
	for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
		const struct ccase *t = &cases[ci];
		int64_t oh = out_len(t->h, t->kh, t->sh, t->dh, t->pt, t->pb);
		int64_t ow = out_len(t->w, t->kw, t->sw, t->dw, t->pl, t->pr);
		size_t nx = (size_t)(t->n * t->c * t->h * t->w), nw = (size_t)(t->c * t->kh * t->kw);
		size_t ny = (size_t)(t->n * t->c * oh * ow);
		float *x = malloc(nx * sizeof *x), *w = malloc(nw * sizeof *w);
		float *b = malloc((size_t)t->c * sizeof *b);
		double *want = malloc(ny * sizeof *want);
		assert_true(x && w && b && want);
		for (size_t i = 0; i < nx; i++)
			x[i] = frand(-2, 2);
		for (size_t i = 0; i < nw; i++)
			w[i] = frand(-1, 1);
		for (int64_t i = 0; i < t->c; i++)
			b[i] = frand(-1, 1);
		for (int64_t n = 0; n < t->n; n++)
		for (int64_t c = 0; c < t->c; c++)
		for (int64_t oy = 0; oy < oh; oy++)
		for (int64_t ox = 0; ox < ow; ox++) {
			double acc = t->bias ? b[c] : 0;
			for (int64_t ky = 0; ky < t->kh; ky++)
			for (int64_t kx = 0; kx < t->kw; kx++) {
				int64_t iy = oy * t->sh - t->pt + ky * t->dh;
				int64_t ix = ox * t->sw - t->pl + kx * t->dw;
				if (iy < 0 || iy >= t->h || ix < 0 || ix >= t->w)
					continue;
				acc += (double)x[((n * t->c + c) * t->h + iy) * t->w + ix] *
				       w[(c * t->kh + ky) * t->kw + kx];
			}
			want[((n * t->c + c) * oh + oy) * ow + ox] = act(t->act, acc);
		}
		pbw bytes;
		build(t, w, b, &bytes);
		for (size_t is = 0; is < sizeof isas / sizeof isas[0]; is++) {
			if (hal_gemm_use_isa(isas[is]))
				continue;  /* not on this CPU */
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
				aidos_tensor in = { .name = "x", .dtype = AIDOS_DT_FLOAT, .rank = 4,
						    .data = x };
				int64_t xd[4] = { t->n, t->c, t->h, t->w };
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
		cmocka_unit_test(conv_dw_vs_loop),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
