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

#include "tests/op_test.h"

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
	/* conv_dw.c's small-plane rows (3x3 s1 pad 1, w <= 8) */
	{ "small s1 w 8",     1,   7,   5,   8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, ACT_RELU },
	{ "small s1 w 1",     2,   5,   6,   1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 0, ACT_CLIP },
	{ "small s1 1x3",     1,   6,   1,   3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, ACT_NONE },
	{ "small s1 4x5",     3,   9,   4,   5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, ACT_HSWISH },
	/* and its stride-2 rows (3x3 s2 pad 1, w <= 16) */
	{ "small s2 16x16",   1,  10,  16,  16, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, ACT_CLIP },
	{ "small s2 5x9",     2,   6,   5,   9, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, ACT_RELU },
	{ "small s2 3x1",     1,   7,   3,   1, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 0, ACT_NONE },
	{ "small s2 pad 1 0", 1,   8,  10,  12, 3, 3, 2, 2, 1, 1, 1, 1, 0, 0, 1, ACT_HSWISH },
};

#define CLIP_LO 0.0f
#define CLIP_HI 1.5f

/* ---- the model: x -> Conv [-> activation] ---- */

static void build(const struct ccase *t, const float *w, const float *b, pbw *out)
{
	pbw g = { 0 }, n = { 0 };
	int64_t wd[4] = { t->c, 1, t->kh, t->kw }, bd = t->c;
	ot_init(&g, "W", 4, wd, w);
	if (t->bias)
		ot_init(&g, "B", 1, &bd, b);
	pbw_str(&n, 1, "x");
	pbw_str(&n, 1, "W");
	if (t->bias)
		pbw_str(&n, 1, "B");
	pbw_str(&n, 2, t->act != ACT_NONE ? "c" : "y");
	pbw_str(&n, 4, "Conv");
	int64_t ks[2] = { t->kh, t->kw }, st[2] = { t->sh, t->sw }, dl[2] = { t->dh, t->dw };
	int64_t pads[4] = { t->pt, t->pl, t->pb, t->pr }, grp = t->c;
	ot_attr_ints(&n, "kernel_shape", ks, 2);
	ot_attr_ints(&n, "strides", st, 2);
	ot_attr_ints(&n, "dilations", dl, 2);
	ot_attr_ints(&n, "pads", pads, 4);
	ot_attr_int(&n, "group", grp);
	pbw_take(&g, 1, &n);
	if (t->act == ACT_CLIP) {
		float lo = CLIP_LO, hi = CLIP_HI;
		ot_init(&g, "lo", 0, NULL, &lo);
		ot_init(&g, "hi", 0, NULL, &hi);
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
	int64_t xd[4] = { t->n, t->c, t->h, t->w };
	ot_value_info(&g, 11, "x", 4, xd);
	ot_model(out, &g, 14, "y");
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
	for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
		const struct ccase *t = &cases[ci];
		ot_conv_shape sh = { t->n, t->c, t->h, t->w, t->c, t->c, t->kh, t->kw, t->sh, t->sw,
				     t->dh, t->dw, t->pt, t->pl, t->pb, t->pr };
		ot_conv_data d;
		ot_conv_data_init(&d, &sh, t->bias);
		for (int64_t i = 0; i < d.ny; i++)
			d.want[i] = act(t->act, d.want[i]);
		pbw bytes;
		build(t, d.w, d.b, &bytes);
		aidos_tensor in = { .name = "x", .dtype = AIDOS_DT_FLOAT, .rank = 4,
				    .dims = { t->n, t->c, t->h, t->w }, .data = d.x };
		/* one step: the activation is in the Conv */
		ot_check_runs(&bytes, 1, &in, 1, d.want, NULL, d.ny, 1e-4, 1, t->name);
		free(bytes.b);
		ot_conv_data_fini(&d);
	}
}

int main(void)
{
	ot_rng = 0x853c49e6748fea9bull;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(conv_dw_vs_loop),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
