/*
 * tests/test_conv.c - the Conv fast paths of MobileNet-style nets (the
 * transposed 1x1 over few pixels, the in-place 1x1 over small planes, the
 * direct small-Cin conv) against the
 * scalar reference conv run through the same op (hal_use_reference
 * toggled), with each fused activation, on 1 and 2 threads and every
 * micro-kernel this CPU can run. Sizes are odd on purpose: channel counts
 * not multiples of 8 or of the micro-kernel's MR/NR, odd H and W, stride 1
 * and 2, asymmetric padding, groups, batch 2.
 *
 * Tolerance (as tests/test_gemm.c, Higham 3.1): a float dot product of
 * length K is within (K + 4) * u of the exact value relative to
 * sum |w*x| + |b|; fast and reference may differ by twice that. The
 * magnitude sum is the reference conv run on |x|, |w|, |b|. Activations
 * are at most 1.5-Lipschitz (HardSwish with a = 1/6, b = 1/2), so the
 * bound is scaled by 1.5 (and by the epilogue's post scale), plus a few
 * ulp of y for the epilogue's own roundings.
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

struct ccase {
	const char *name;
	int64_t n, c, h, w, m, group, kh, kw, sh, sw;
	int64_t pads[4];               /* ONNX order: top, left, bottom, right */
	int bias;
};

/* A case to run: the plan, the case, its epilogue (or NULL). */
struct conv_run {
	hal_plan *p;
	const struct ccase *t;
	const ir_epilogue *epi;
};

/* Runs Conv (2-D) on in[0..nin) with the case's attributes and epilogue
 * (none where mag is set); returns the output (malloc'd), its shape in *y.
 * An ot_step_fn. */
static float *run_conv(void *ctx, hal_tensor *const *in, int nin, int mag, hal_tensor *y)
{
	const struct conv_run *r = ctx;
	hal_plan *p = r->p;
	const struct ccase *t = r->t;
	const ir_epilogue *epi = mag ? NULL : r->epi;
	int64_t ks[2] = { t->kh, t->kw }, st[2] = { t->sh, t->sw }, dl[2] = { 1, 1 };
	ir_attr at[5] = {
		ot_ints_attr("kernel_shape", ks, 2), ot_ints_attr("strides", st, 2),
		ot_ints_attr("dilations", dl, 2), ot_ints_attr("pads", t->pads, 4),
		{ .name = "group", .type = IR_ATTR_INT, .i = t->group },
	};
	ir_node node = { .name = t->name, .op_type = "Conv", .domain = "", .n_in = nin,
			 .n_out = 1, .n_attr = 5, .attr = at, .epi = epi };
	return ot_step_run(p, &node, in, nin, y);
}

static void tensor_init(hal_tensor *t, int rank, const int64_t *d, void *data)
{
	memset(t, 0, sizeof *t);
	t->dtype = HAL_DT_F32;
	t->rank = rank;
	memcpy(t->dims, d, (size_t)rank * sizeof *d);
	t->data = data;
	t->is_const = 1;
}

static const ir_epilogue epis[] = {
	{ IR_ACT_RELU, 0, 0, 1, 0 },
	{ IR_ACT_CLIP, 0, 6, 1, 0 },
	{ IR_ACT_HARDSWISH, 1.0f / 6, 0.5f, 1, 0 },
	{ IR_ACT_NONE, 0, 0, 0.5f, -0.25f },
};

/* Fast path vs reference for one case and one epilogue. */
static void check_case(hal_plan *p, const struct ccase *t, const ir_epilogue *epi)
{
	int64_t xd[4] = { t->n, t->c, t->h, t->w };
	int64_t wd[4] = { t->m, t->c / t->group, t->kh, t->kw }, bd[1] = { t->m };
	size_t nx = (size_t)(t->n * t->c * t->h * t->w), nw = (size_t)(wd[0] * wd[1] * wd[2] * wd[3]);
	float *x = ot_rand_buf(nx), *w = ot_rand_buf(nw), *b = ot_rand_buf((size_t)t->m);
	hal_tensor tx, tw, tb, ty[3];
	tensor_init(&tx, 4, xd, x);
	tx.is_const = 0;
	tensor_init(&tw, 4, wd, w);
	tensor_init(&tb, 1, bd, b);
	hal_tensor *in[3] = { &tx, &tw, &tb };
	struct conv_run r = { p, t, epi };
	float *yo[3];
	ot_fast_ref_mag(run_conv, &r, in, t->bias ? 3 : 2, yo, ty);  /* magnitudes: no activation */
	const float *yf = yo[0], *yr = yo[1], *ym = yo[2];

	assert_int_equal(ty[0].rank, 4);
	assert_memory_equal(ty[0].dims, ty[1].dims, 4 * sizeof ty[0].dims[0]);
	int64_t K = (t->c / t->group) * t->kh * t->kw, ny = hal_numel(&ty[0]);
	double lip = epi ? 1.5 * fabs(epi->post_s) : 1.0;
	for (int64_t i = 0; i < ny; i++) {
		/* + a few ulp of y: the epilogue's affine map rounds once more */
		double tol = lip * 2.0 * (double)(K + 4) * U_F32 * ym[i] + 4.0 * U_F32 * fabs(yr[i]) +
			     1e-30;
		if (!(fabs((double)yf[i] - yr[i]) <= tol))
			fail_msg("%s [%s, epilogue %d]: y[%lld] fast %.9g ref %.9g (tol %.3g, ym %.9g)",
				 t->name, hal_gemm_isa(), epi ? (int)(epi - epis) : -1, (long long)i, yf[i], yr[i], tol, ym[i]);
	}
	free(x);
	free(w);
	free(b);
	for (int i = 0; i < 3; i++)
		free(yo[i]);
}


static void run_cases(const struct ccase *cases, size_t n)
{
	for (int threads = 1; threads <= 2; threads++) {
		hal_plan *p = ot_plan_new(threads);
		for (ot_isa_iter it = { 0 }; ot_isa_next(&it);) {
			for (size_t i = 0; i < n; i++) {
				check_case(p, &cases[i], NULL);
				for (size_t e = 0; e < sizeof epis / sizeof epis[0]; e++)
					check_case(p, &cases[i], &epis[e]);
			}
		}
		ot_plan_del(p);
	}
}

/* 1x1 convs over few pixels (computed as Y^T = X^T W^T: hal/ops/conv_pw.c's
 * transposed tiles, or hal_gemm's when grouped or over one pixel) and
 * their neighbours on the untransposed path. */
static void conv_1x1_few_pixels(void **state)
{
	(void)state;
	static const struct ccase cases[] = {
		/* name              n  c    h  w   m    grp kh kw sh sw pads bias */
		{ "7x7 160->330",    1, 160, 7, 7, 330, 1, 1, 1, 1, 1, { 0 }, 1 },
		{ "7x7 odd",         1, 37, 7, 7, 99, 1, 1, 1, 1, 1, { 0 }, 1 },
		{ "5x9 K>KC",        2, 300, 5, 9, 61, 1, 1, 1, 1, 1, { 0 }, 0 },
		{ "3x3 grouped",     1, 12, 3, 3, 30, 3, 1, 1, 1, 1, { 0 }, 1 },
		{ "1x1 SE fc",       1, 72, 1, 1, 18, 1, 1, 1, 1, 1, { 0 }, 1 },
		{ "1x1 SE fc b2",    2, 18, 1, 1, 72, 2, 1, 1, 1, 1, { 0 }, 0 },
		{ "9x11 wide",       1, 23, 9, 11, 107, 1, 1, 1, 1, 1, { 0 }, 1 },
		{ "few out ch",      1, 40, 7, 7, 13, 1, 1, 1, 1, 1, { 0 }, 1 },
		{ "14x14 untransp",  1, 24, 14, 14, 40, 1, 1, 1, 1, 1, { 0 }, 1 },
		/* untransposed, X packed as B (<= 256 pixels) and just past it */
		{ "14x14 K>KC",      1, 300, 14, 14, 64, 1, 1, 1, 1, 1, { 0 }, 1 },
		{ "13x15 odd b2",    2, 97, 13, 15, 35, 1, 1, 1, 1, 1, { 0 }, 0 },
		{ "16x16 grouped",   1, 70, 16, 16, 22, 2, 1, 1, 1, 1, { 0 }, 1 },
		{ "17x17 in place",  1, 45, 17, 17, 16, 1, 1, 1, 1, 1, { 0 }, 1 },
	};
	run_cases(cases, sizeof cases / sizeof cases[0]);
}

/* 1x1 convs through hal/ops/conv_pw.c: transposed under 100 pixels (at
 * least as many channels: 16 channels x 6, 5 or 4 pixels, P = 6a + 5b + 4c
 * or a last tile that repeats pixels, cout % 16 left over, K cut into blocks of
 * at most 256: 960 in 4, 513 in 3, 257 in 2);
 * over 16..4096 pixels read in place (16-pixel tiles with a zero-padded
 * copy of the last P % 16 columns, 6- and 4-channel panels for every
 * cout % 6, K cut into blocks of at most 256: 2 and 3 blocks; over 256
 * pixels with X of 1 MiB or more, X prefetched some tiles ahead, none
 * past the last whole tile; on 2
 * threads split by pixel tiles, or by channels where cout >= P <= 256),
 * batch 2; and the sizes just outside it. */
static void conv_pw_small_planes(void **state)
{
	(void)state;
	static const struct ccase cases[] = {
		/* name              n  c    h   w   m   grp kh kw sh sw pads bias */
		{ "4x4 one tile",    1, 19, 4, 4, 23, 1, 1, 1, 1, 1, { 0 }, 1 },
		{ "7x7 tail 1",      1, 40, 7, 7, 14, 1, 1, 1, 1, 1, { 0 }, 1 },
		{ "7x7 K 2 blocks",  2, 257, 7, 7, 31, 1, 1, 1, 1, 1, { 0 }, 0 },
		{ "13x13 tail 9",    1, 37, 13, 13, 50, 1, 1, 1, 1, 1, { 0 }, 1 },
		{ "14x14 K 3 blocks", 1, 600, 14, 14, 20, 1, 1, 1, 1, 1, { 0 }, 1 },
		{ "14x14 96->100",   1, 96, 14, 14, 100, 1, 1, 1, 1, 1, { 0 }, 1 },
		{ "12x12 cout>P",    1, 64, 12, 12, 151, 1, 1, 1, 1, 1, { 0 }, 1 },
		{ "16x16 b2",        2, 33, 16, 16, 7, 1, 1, 1, 1, 1, { 0 }, 0 },
		{ "1 row 1x17",      1, 8, 1, 17, 5, 1, 1, 1, 1, 1, { 0 }, 1 },
		/* transposed (P < 100, cout >= P): 6-, 5- and 4-pixel tiles */
		{ "t 2x3 one 6",     1, 10, 2, 3, 20, 1, 1, 1, 1, 1, { 0 }, 1 },
		{ "t 1x7 padded",    1, 33, 1, 7, 17, 1, 1, 1, 1, 1, { 0 }, 0 },
		{ "t 3x3 5+4 b2",    2, 15, 3, 3, 9, 1, 1, 1, 1, 1, { 0 }, 1 },
		{ "t 1x11 6+5",      1, 20, 1, 11, 40, 1, 1, 1, 1, 1, { 0 }, 1 },
		{ "t 7x7 K 960",     1, 960, 7, 7, 50, 1, 1, 1, 1, 1, { 0 }, 1 },
		{ "t 7x7 K 513",     1, 513, 7, 7, 35, 1, 1, 1, 1, 1, { 0 }, 1 },
		{ "t 6x6 K 257 b2",  2, 257, 6, 6, 40, 1, 1, 1, 1, 1, { 0 }, 0 },
		{ "t 8x8 9*6+2*5",   1, 17, 8, 8, 64, 1, 1, 1, 1, 1, { 0 }, 1 },
		{ "t 2x4 4+4",       1, 21, 2, 4, 19, 1, 1, 1, 1, 1, { 0 }, 0 },
		/* 6-pixel tiles: 54 = 9*6, 91 = 11*6 + 5*5, 2 K blocks */
		{ "t 6x9 K 300",     1, 300, 6, 9, 59, 1, 1, 1, 1, 1, { 0 }, 1 },
		{ "t 7x13 K 301 b2", 2, 301, 7, 13, 93, 1, 1, 1, 1, 1, { 0 }, 0 },
		/* untransposed */
		{ "two 4-row panels", 1, 29, 9, 9, 8, 1, 1, 1, 1, 1, { 0 }, 1 },
		{ "6+4 rows",        1, 30, 11, 5, 9, 1, 1, 1, 1, 1, { 0 }, 0 },
		{ "28x28 K 2 blocks", 1, 300, 28, 28, 9, 1, 1, 1, 1, 1, { 0 }, 1 },
		{ "56x56",           1, 24, 56, 56, 8, 1, 1, 1, 1, 1, { 0 }, 1 },
		/* over 256 pixels, tail 3, 2 K blocks, X under 1 MiB: no prefetch */
		{ "17x19 K 270 b2",  2, 270, 17, 19, 25, 1, 1, 1, 1, 1, { 0 }, 1 },
		/* X of 1.06 MiB: prefetched 2 tiles ahead; tail 1, 2 K blocks */
		{ "37x29 K 260",     1, 260, 37, 29, 25, 1, 1, 1, 1, 1, { 0 }, 1 },
		{ "64x64 largest",   1, 5, 64, 64, 13, 1, 1, 1, 1, 1, { 0 }, 1 },
		{ "65x64 above",     1, 5, 65, 64, 13, 1, 1, 1, 1, 1, { 0 }, 1 },
		{ "3x5 below",       1, 20, 3, 5, 9, 1, 1, 1, 1, 1, { 0 }, 1 },
	};
	run_cases(cases, sizeof cases / sizeof cases[0]);
}

/* Short reductions through the direct kernel (K <= 64: stems; 1x1 with
 * K <= 32 over many pixels: chunks of 240 pixels in bands of 480, the
 * next chunk's X and Y lines prefetched, none past a band's end), and
 * ones just past them through the GEMM. */
static void conv_direct_small_k(void **state)
{
	(void)state;
	static const struct ccase cases[] = {
		/* name              n  c  h   w   m   grp kh kw sh sw pads          bias */
		{ "stem 3x3 s2",     1, 3, 32, 97, 32, 1, 3, 3, 2, 2, { 1, 1, 1, 1 }, 1 },
		{ "stem odd",        2, 3, 29, 101, 13, 1, 3, 3, 2, 2, { 1, 0, 1, 2 }, 1 },
		{ "s1 5x5 K 50",     1, 2, 11, 53, 7, 1, 5, 5, 1, 1, { 2, 2, 2, 2 }, 0 },
		{ "narrow rows gemm", 1, 3, 9, 7, 5, 1, 3, 3, 1, 1, { 1, 1, 1, 1 }, 1 },
		{ "grouped",         1, 6, 13, 51, 10, 2, 3, 3, 2, 1, { 0, 1, 2, 1 }, 1 },
		{ "K 64",            1, 4, 10, 99, 9, 1, 4, 4, 2, 2, { 1, 1, 2, 2 }, 1 },
		{ "1x1 K 16",        2, 16, 91, 93, 30, 1, 1, 1, 1, 1, { 0 }, 1 },
		{ "1x1 K 32",        1, 32, 90, 97, 9, 1, 1, 1, 1, 1, { 0 }, 1 },
		/* MobileNetV2's 32->16 at 112x112, odd: 15 channels, 10961 pixels */
		{ "1x1 K 32 m 15",   1, 32, 113, 97, 15, 1, 1, 1, 1, 1, { 0 }, 1 },
		{ "1x1 K 3 grouped", 1, 6, 96, 91, 10, 2, 1, 1, 1, 1, { 0 }, 0 },
		{ "1x1 K 16 few px", 1, 16, 23, 27, 30, 1, 1, 1, 1, 1, { 0 }, 1 },
		{ "1x1 K 33 gemm",   1, 33, 12, 10, 7, 1, 1, 1, 1, 1, { 0 }, 1 },
		{ "K 65 gemm",       1, 5, 12, 26, 6, 1, 13, 1, 1, 1, { 6, 0, 6, 0 }, 1 },
	};
	run_cases(cases, sizeof cases / sizeof cases[0]);
}

int main(void)
{
	printf("    gemm micro-kernel: %s (NR %d)\n", hal_gemm_isa(), hal_gemm_nr());
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(conv_1x1_few_pixels),
		cmocka_unit_test(conv_pw_small_planes),
		cmocka_unit_test(conv_direct_small_k),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
