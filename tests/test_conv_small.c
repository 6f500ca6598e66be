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
 * leave a partial 24-channel panel, no bias, a 1-D Conv, the band mode's
 * 1-row kernels with horizontal pads only (odd row counts, 2-wide rows,
 * widths no multiple of 4, row stride 2); each on 1 and 2 threads (cases
 * over the path's threshold split across both, two-ended), with the AVX2
 * tile and the baseline one (and AVX-512 where the CPU has it;
 * hal_gemm_use_isa), and on 3 threads (the pool's chunks). Every case
 * has output channels filling the 24-lane panels to >= 5/6 and constant
 * weights, so the path takes it.
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

#include "tests/op_test.h"

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
	/* band mode (1-row kernel, left/right pads only: each task pads its
	 * own rows), split over 2 threads: odd row counts, 2-wide rows (a
	 * tile spans two rows), a width that is no multiple of 4 (units of
	 * lcm(33, 4) pixels), a row stride, batch 2, a partial panel */
	{ "band 1x3",      1, 24, 37, 32, 24, 1, 3, 1, 1, 1, 1, 0, 1, 0, 1, 1, 0.2f, -0.5f },
	{ "band 2 wide",   1, 96, 69,  2, 96, 1, 3, 1, 1, 1, 1, 0, 1, 0, 1, 1, 0.2f, -1e30f },
	{ "band s2 w33",   2, 24, 61, 33, 44, 1, 3, 2, 1, 1, 1, 0, 1, 0, 2, 0, 0, 0 },
	{ "band 1x5 w7",   1, 40, 45,  7, 48, 1, 5, 1, 1, 1, 1, 0, 2, 0, 1, 1, 0.1f, -1e30f },
};

/* ---- the model: x -> Conv [-> LeakyRelu -> Max] ---- */

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
	ot_init(&g, "W", r, wd, w);
	if (t->bias)
		ot_init(&g, "B", 1, &bd, b);
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
		ot_attr_ints(&n, "kernel_shape", ks + 1, 1);
		ot_attr_ints(&n, "strides", st + 1, 1);
		ot_attr_ints(&n, "dilations", dl + 1, 1);
		ot_attr_ints(&n, "pads", p1, 2);
	} else {
		ot_attr_ints(&n, "kernel_shape", ks, 2);
		ot_attr_ints(&n, "strides", st, 2);
		ot_attr_ints(&n, "dilations", dl, 2);
		ot_attr_ints(&n, "pads", pads, 4);
	}
	pbw_take(&g, 1, &n);
	if (t->alpha > 0) {
		pbw_str(&n, 1, "c");
		pbw_str(&n, 2, "l");
		pbw_str(&n, 4, "LeakyRelu");
		ot_attr_float(&n, "alpha", t->alpha);
		pbw_take(&g, 1, &n);
		ot_init(&g, "lo", 0, NULL, &t->lo);
		pbw_str(&n, 1, "l");
		pbw_str(&n, 1, "lo");
		pbw_str(&n, 2, "y");
		pbw_str(&n, 4, "Max");
		pbw_take(&g, 1, &n);
	}
	int64_t xd[4] = { t->n, t->c, t->h, t->w };
	if (d1)
		xd[2] = t->w;
	ot_value_info(&g, 11, "x", r, xd);
	ot_model(out, &g, 13, "y");
}

static void conv_small_vs_loop(void **state)
{
	(void)state;
	for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
		const struct ccase *t = &cases[ci];
		ot_conv_shape sh = { t->n, t->c, t->h, t->w, t->m, 1, t->kh, t->kw, t->sh, t->sw,
				     t->dh, t->dw, t->pt, t->pl, t->pb, t->pr };
		ot_conv_data d;
		ot_conv_data_init(&d, &sh, t->bias);   /* a 1-D case is h = kh = 1 */
		if (t->alpha > 0)
			for (int64_t i = 0; i < d.ny; i++)
				d.want[i] = fmax(d.want[i] < 0 ? t->alpha * d.want[i] : d.want[i], t->lo);
		pbw bytes;
		build(t, d.w, d.b, &bytes);
		aidos_tensor in = { .name = "x", .dtype = AIDOS_DT_FLOAT, .rank = one_d(t) ? 3 : 4,
				    .dims = { t->n, t->c, one_d(t) ? t->w : t->h, t->w }, .data = d.x };
		/* one step: the activation is in the Conv */
		ot_check_runs(&bytes, 1, &in, 1, d.want, NULL, d.ny, 1e-4, 1, t->name);
		/* a pool of 3: the pool's own chunks instead of the two-ended
		 * claims (cs_run) */
		int64_t got_n;
		int steps;
		float *got = ot_run(&bytes, 1, &in, 3, &got_n, &steps, t->name);
		int64_t k = got_n == d.ny ? ot_far(got, d.want, d.ny, 1e-4) : 0;
		if (k >= 0)
			fail_msg("%s (3 threads): y[%lld] = %.9g, want %.9g", t->name, (long long)k,
				 got_n == d.ny ? got[k] : 0.0, d.want[k]);
		free(got);
		free(bytes.b);
		ot_conv_data_fini(&d);
	}
}

int main(void)
{
	ot_rng = 0x853c49e6748fea9bull;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(conv_small_vs_loop),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
