/*
 * tests/test_conv_fused.c - the fused expand -> depthwise step
 * (hal/ops/conv_fused.c, matched by hal_fuse_conv_plan in hal/fuse_conv.c)
 * against the unfused scalar reference kernels (ot_run_ref), and the
 * matcher on near-misses.
 *
 * Model: x [n, cin, h, w] -> Conv 1x1 (We, Be) (or a 3x3 stride-2 pad-1
 * stem: cin 1, 3 and 7) [-> act_e] -> Conv 3x3
 * depthwise, pad 1, stride s (Wd, Bd) [-> act_d] [-> Conv 1x1 project
 * (Wp) [-> Add x]] -> y. Activations Relu, Clip(0, 6), HardSwish (not
 * applied in registers) or none, each fused into its Conv's epilogue by
 * hal_fuse_conv. The threshold hal_conv_fused_min_bytes is 0 here, so
 * small odd shapes take the fused step too; the plan's step count says
 * whether it did.
 * Shapes: odd and even H/W, widths giving 2 and 3+ output rows per band
 * (the band is about 224 expanded pixels, at least 2 rows; 1-row bands in
 * walkers_meet), stride 1 and 2, channel
 * counts not multiples of 4 or 8, one-row planes, batch 2, more threads
 * than output rows, an expand chunk ending 2 pixels past a full one
 * (HardSwish applied over the finished rows); each on 1 and 2 threads,
 * AVX2 and baseline builds.
 * Near-misses (must stay two steps and still agree): the expanded tensor
 * read twice, a 5x5 depthwise, dilation 2, group 1 (a full 3x3 Conv),
 * stride 3, a 3x3 "expand" (stride 1), a stem of 8 input channels (72 taps)
 * or without padding, and a small plane under the default threshold.
 * Ring heights (ring_sizes), expand chunk lengths (expand_chunks) and the
 * stride-2 channel-blocked ring against the NCHW one (channel_blocks) are
 * swept through hooks.
 * Tolerance: 1e-4 (1 + |ref|): float sums of at most 80 products (the
 * expand's reduction is 70 long in expand_chunks).
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
#include "hal/ops/conv_fused.h"

enum { ACT_NONE, ACT_RELU, ACT_CLIP, ACT_HSWISH };

/* How the case departs from the fusable pattern. */
enum { MISS_NONE, MISS_TWICE, MISS_K5, MISS_DIL2, MISS_GROUP1, MISS_S3, MISS_E3X3, MISS_STEM_PAD0 };

struct fcase {
	const char *name;
	int64_t n, cin, ce, h, w, s;
	int act_e, act_d, bias, project, residual, miss;
	int stem;  /* the expand is a 3x3 stride-2 pad-1 Conv (h, w: X's) */
};

static const struct fcase cases[] = {
	/* name                 n cin  ce    h    w  s  act_e       act_d       bias proj res miss stem */
	{ "mbv2 112 s2 shape",  1, 16, 96,  40, 112, 2, ACT_CLIP,   ACT_CLIP,   1, 0, 0, MISS_NONE, 0 },
	{ "mbv2 56 s1 +res",    1, 24, 144, 20,  56, 1, ACT_CLIP,   ACT_CLIP,   1, 1, 1, MISS_NONE, 0 },
	{ "odd 17x23 s1",       1,  5, 13,  17,  23, 1, ACT_RELU,   ACT_CLIP,   1, 0, 0, MISS_NONE, 0 },
	{ "odd 19x31 s2",       1,  7, 12,  19,  31, 2, ACT_HSWISH, ACT_RELU,   1, 0, 0, MISS_NONE, 0 },
	{ "even 16x16 s2",      1,  8, 20,  16,  16, 2, ACT_CLIP,   ACT_HSWISH, 1, 1, 0, MISS_NONE, 0 },
	{ "band 2 rows w 230",  1,  3, 10,   5, 230, 1, ACT_CLIP,   ACT_CLIP,   1, 0, 0, MISS_NONE, 0 },
	{ "band 2 rows w 120",  1,  4, 9,    7, 120, 1, ACT_NONE,   ACT_CLIP,   0, 0, 0, MISS_NONE, 0 },
	{ "band 3 rows w 75",   1,  6, 11,  10,  75, 1, ACT_RELU,   ACT_NONE,   1, 0, 0, MISS_NONE, 0 },
	{ "s2 band 2 w 225",    1,  3, 6,    9, 225, 2, ACT_CLIP,   ACT_RELU,   1, 0, 0, MISS_NONE, 0 },
	{ "one row h 1",        1,  5, 7,    1,  9, 1, ACT_CLIP,   ACT_CLIP,   1, 0, 0, MISS_NONE, 0 },
	{ "h 2 s2 w 15",        1,  2, 5,    2,  15, 2, ACT_RELU,   ACT_CLIP,   1, 0, 0, MISS_NONE, 0 },
	{ "batch 2 no bias",    2,  4, 6,   11,  16, 1, ACT_NONE,   ACT_NONE,   0, 1, 1, MISS_NONE, 0 },
	{ "w 8 s1 ce 3",        1,  9, 3,    6,   8, 1, ACT_HSWISH, ACT_HSWISH, 1, 0, 0, MISS_NONE, 0 },
	{ "hswish 2-px chunk",  1,  3, 5,    6, 121, 1, ACT_HSWISH, ACT_CLIP,   1, 0, 0, MISS_NONE, 0 },
	{ "read twice",         1,  4, 8,   12,  16, 1, ACT_CLIP,   ACT_CLIP,   1, 0, 0, MISS_TWICE, 0 },
	{ "dw 5x5",             1,  4, 8,   12,  16, 1, ACT_CLIP,   ACT_CLIP,   1, 0, 0, MISS_K5, 0 },
	{ "dilation 2",         1,  4, 8,   12,  16, 1, ACT_CLIP,   ACT_CLIP,   1, 0, 0, MISS_DIL2, 0 },
	{ "group 1 3x3",        1,  4, 8,   12,  16, 1, ACT_CLIP,   ACT_CLIP,   1, 0, 0, MISS_GROUP1, 0 },
	{ "stride 3",           1,  4, 8,   30,  30, 3, ACT_CLIP,   ACT_CLIP,   1, 0, 0, MISS_S3, 0 },
	{ "expand 3x3",         1,  4, 8,   12,  16, 1, ACT_CLIP,   ACT_CLIP,   1, 0, 0, MISS_E3X3, 0 },
	{ "stem 3->32 40x64",   1,  3, 32,  40,  64, 1, ACT_CLIP,   ACT_CLIP,   1, 1, 0, MISS_NONE, 1 },
	{ "stem odd 17x33 s2",  1,  3, 9,   17,  33, 2, ACT_HSWISH, ACT_RELU,   1, 0, 0, MISS_NONE, 1 },
	{ "stem cin 7 (K 63)",  2,  7, 5,   16,  30, 1, ACT_RELU,   ACT_NONE,   0, 0, 0, MISS_NONE, 1 },
	{ "stem cin 1 w 449",   1,  1, 6,    7, 449, 1, ACT_CLIP,   ACT_CLIP,   1, 0, 0, MISS_NONE, 1 },
	{ "stem cin 8 (K 72)",  1,  8, 6,   15,  19, 1, ACT_CLIP,   ACT_CLIP,   1, 0, 0, MISS_S3,   1 },
	{ "stem pad 0",         1,  3, 6,   15,  35, 1, ACT_CLIP,   ACT_CLIP,   1, 0, 0, MISS_STEM_PAD0, 1 },
};

/* Appends node "op(in...) -> out" with the attributes conv writes. */
static void conv_node(pbw *g, const char *x, const char *w, const char *b, const char *y, int64_t k,
		      int64_t s, int64_t pad, int64_t dil, int64_t group)
{
	pbw n = { 0 };
	pbw_str(&n, 1, x);
	pbw_str(&n, 1, w);
	if (b)
		pbw_str(&n, 1, b);
	pbw_str(&n, 2, y);
	pbw_str(&n, 4, "Conv");
	int64_t ks[2] = { k, k }, st[2] = { s, s }, dl[2] = { dil, dil }, pads[4] = { pad, pad, pad, pad };
	ot_attr_ints(&n, "kernel_shape", ks, 2);
	ot_attr_ints(&n, "strides", st, 2);
	ot_attr_ints(&n, "dilations", dl, 2);
	ot_attr_ints(&n, "pads", pads, 4);
	ot_attr_int(&n, "group", group);
	pbw_take(g, 1, &n);
}

/* Appends the activation a from x to y (Clip reads initializers lo, hi). */
static void act_node(pbw *g, int a, const char *x, const char *y)
{
	static const char *const op[] = { "", "Relu", "Clip", "HardSwish" };
	pbw n = { 0 };
	pbw_str(&n, 1, x);
	if (a == ACT_CLIP) {
		pbw_str(&n, 1, "lo");
		pbw_str(&n, 1, "hi");
	}
	pbw_str(&n, 2, y);
	pbw_str(&n, 4, op[a]);
	pbw_take(g, 1, &n);
}

static void binary_node(pbw *g, const char *op, const char *a, const char *b, const char *y)
{
	pbw n = { 0 };
	pbw_str(&n, 1, a);
	pbw_str(&n, 1, b);
	pbw_str(&n, 2, y);
	pbw_str(&n, 4, op);
	pbw_take(g, 1, &n);
}

/* The case's model into *out; its step count when the pair is fused (or,
 * for a near-miss, the count it must keep) into *steps. */
static void build(const struct fcase *t, pbw *out, int *steps)
{
	pbw g = { 0 };
	int64_t ek = t->miss == MISS_E3X3 || t->stem ? 3 : 1, dk = t->miss == MISS_K5 ? 5 : 3;
	int64_t es = t->stem ? 2 : 1, ep = t->miss == MISS_STEM_PAD0 ? 0 : ek == 3 ? 1 : 0;
	int64_t dil = t->miss == MISS_DIL2 ? 2 : 1, pad = dk == 5 || dil == 2 ? 2 : 1;
	int64_t dgroup = t->miss == MISS_GROUP1 ? 1 : t->ce, dcin = dgroup == 1 ? t->ce : 1;
	int64_t wed[4] = { t->ce, t->cin, ek, ek }, wdd[4] = { t->ce, dcin, dk, dk }, bd = t->ce;
	int64_t wpd[4] = { t->cin, t->ce, 1, 1 };
	size_t ne = (size_t)(t->ce * t->cin * ek * ek), nd = (size_t)(t->ce * dcin * dk * dk);
	float *we = ot_rand_new(ne, -0.5f, 0.5f), *wd = ot_rand_new(nd, -0.5f, 0.5f);
	float *be = ot_rand_new((size_t)t->ce, -1, 1), *bdv = ot_rand_new((size_t)t->ce, -1, 1);
	float *wp = ot_rand_new((size_t)(t->cin * t->ce), -0.3f, 0.3f);
	ot_init(&g, "We", 4, wed, we);
	ot_init(&g, "Wd", 4, wdd, wd);
	ot_init(&g, "Wp", 4, wpd, wp);
	if (t->bias) {
		ot_init(&g, "Be", 1, &bd, be);
		ot_init(&g, "Bd", 1, &bd, bdv);
	}
	float lo = 0.0f, hi = 6.0f;
	ot_init(&g, "lo", 0, NULL, &lo);
	ot_init(&g, "hi", 0, NULL, &hi);
	free(we);
	free(wd);
	free(be);
	free(bdv);
	free(wp);

	conv_node(&g, "x", "We", t->bias ? "Be" : NULL, t->act_e ? "e0" : "e", ek, es, ep, 1, 1);
	if (t->act_e)
		act_node(&g, t->act_e, "e0", "e");
	const char *dout = t->project || t->miss == MISS_TWICE ? "d" : "y";
	conv_node(&g, "e", "Wd", t->bias ? "Bd" : NULL, t->act_d ? "d0" : dout, dk,
		  t->miss == MISS_S3 && !t->stem ? 3 : t->s, pad, dil, dgroup);
	if (t->act_d)
		act_node(&g, t->act_d, "d0", dout);
	*steps = 1;  /* the fused step */
	if (t->miss == MISS_TWICE) {
		binary_node(&g, "Add", "d", "e", "y");  /* e read a second time */
		*steps = 3;
	} else if (t->miss != MISS_NONE) {
		*steps = 2;
	}
	if (t->project) {
		conv_node(&g, "d", "Wp", NULL, t->residual ? "p" : "y", 1, 1, 0, 1, 1);
		(*steps)++;
		if (t->residual) {
			binary_node(&g, "Add", "p", "x", "y");
			(*steps)++;
		}
	}
	int64_t xd[4] = { t->n, t->cin, t->h, t->w };
	ot_value_info(&g, 11, "x", 4, xd);
	ot_model(out, &g, 14, "y");
}

/* A case built and its input drawn (in this order, so the draws stay the
 * same): the model's bytes and step count, x and the input tensor. */
struct fsetup {
	pbw bytes;
	int steps;
	float *x;
	aidos_tensor in;
};

static void fsetup_init(const struct fcase *t, struct fsetup *f)
{
	build(t, &f->bytes, &f->steps);
	f->x = ot_rand_new((size_t)(t->n * t->cin * t->h * t->w), -2, 2);
	f->in = (aidos_tensor){ .name = "x", .dtype = AIDOS_DT_FLOAT, .rank = 4,
				.dims = { t->n, t->cin, t->h, t->w }, .data = f->x };
}

static void fsetup_free(struct fsetup *f)
{
	free(f->x);
	free(f->bytes.b);
}

static void run_case(const struct fcase *t)
{
	struct fsetup f;
	fsetup_init(t, &f);
	ot_check_vs_ref(&f.bytes, 1, &f.in, 1, 1e-4, f.steps, t->name);
	fsetup_free(&f);
}

static void fused_vs_reference(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		if (cases[i].miss == MISS_NONE)
			run_case(&cases[i]);
}

static void near_misses_stay_unfused(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		if (cases[i].miss != MISS_NONE)
			run_case(&cases[i]);
}

/* Every width 1..17 at stride 1 and 1..35 at stride 2 (output widths 1
 * to 18), so the depthwise's first and last blocks, its single-block rows
 * (output width 8), its middle pairs and single middle blocks and the
 * expand's partial last vector meet every column offset; widths a multiple
 * of 8 among them. Output widths under 8 must stay two steps (and agree). */
static void width_sweep(void **state)
{
	(void)state;
	for (int64_t s = 1; s <= 2; s++)
		for (int64_t w = 1; w <= 17 * s + (s - 1); w++) {
			struct fcase t = { "width sweep", 1, 3, 5, 5, w, s, ACT_CLIP, ACT_RELU,
					   1, 0, 0, MISS_NONE, 0 };
			char what[64];
			struct fsetup f;
			snprintf(what, sizeof what, "width sweep s%lld w %lld", (long long)s,
				 (long long)w);
			fsetup_init(&t, &f);
			int64_t ow = (w - 1) / s + 1;
			ot_check_vs_ref(&f.bytes, 1, &f.in, 1, 1e-4, ow >= 8 ? f.steps : f.steps + 1, what);
			fsetup_free(&f);
		}
}

/* The walkers (hal/ops/conv_fused.c, fz_range): bands of 1 to 16 rows
 * (a band taller than the plane included), and on 2 threads the downward
 * walker stopped after each number of bands from none to all, so the
 * upward one meets it at every band (a hook: whichever thread runs it,
 * the downward walker takes at most that many); stride 1 and 2, a stem,
 * batch 2 (a walker crossing from one image to the next). 1 thread runs
 * one walker over every band. Bands of odd and even heights also take the
 * depthwise's two-rows-at-a-time path (stride 1 and 2) and its single last
 * row (a wrong weight planted in the pair's masked blocks fails here and in
 * the width sweep, at either stride). */
static void walkers_meet(void **state)
{
	(void)state;
	static const struct fcase shapes[] = {
		{ "meet s1",      1, 3, 6, 13, 11, 1, ACT_CLIP, ACT_RELU, 1, 0, 0, MISS_NONE, 0 },
		{ "meet s2",      1, 3, 6, 15, 19, 2, ACT_RELU, ACT_CLIP, 1, 0, 0, MISS_NONE, 0 },
		{ "meet batch 2", 2, 4, 5,  9, 16, 1, ACT_NONE, ACT_CLIP, 0, 0, 0, MISS_NONE, 0 },
		{ "meet stem s1", 1, 3, 7, 18, 22, 1, ACT_CLIP, ACT_CLIP, 1, 0, 0, MISS_NONE, 1 },
		{ "meet stem s2", 1, 3, 7, 33, 35, 2, ACT_CLIP, ACT_CLIP, 1, 0, 0, MISS_NONE, 1 },
	};
	static const int bands[] = { 1, 2, 3, 4, 7, 16 };
	for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
		const struct fcase *t = &shapes[i];
		int64_t eh = t->stem ? (t->h - 1) / 2 + 1 : t->h, oh = (eh - 1) / t->s + 1;
		struct fsetup f;
		fsetup_init(t, &f);
		int64_t nr;
		float *ref = ot_run_ref(&f.bytes, 1, &f.in, &nr, t->name);
		for (size_t b = 0; b < sizeof bands / sizeof bands[0]; b++) {
			int64_t nb = (oh + bands[b] - 1) / bands[b] * t->n;
			for (int64_t k = -1; k <= nb; k++) {
				char what[96];
				snprintf(what, sizeof what, "%s, bands of %d rows, down walker %lld bands",
					 t->name, bands[b], (long long)k);
				hal_conv_fused_band_rows = bands[b];
				hal_conv_fused_down_bands = k;
				hal_conv_fused_group = -1;  /* rows */
				ot_check_runs(&f.bytes, 1, &f.in, 1, NULL, ref, nr, 1e-4, f.steps, what);
			}
		}
		hal_conv_fused_band_rows = 0;
		hal_conv_fused_down_bands = -1;
		hal_conv_fused_group = 0;
		free(ref);
		fsetup_free(&f);
	}
}

/* The walkers splitting channels instead (fz_groups): claims of 4 to 24
 * channels, channel counts not a multiple of the claim (the last claim
 * short, or one claim for all), bands of 1, 3 and 16 rows, stride 1 and 2,
 * a stem, batch 2 (claims from both images); X's size left aside (the
 * hook forces the split). On 1 thread the step walks every channel. */
static void channel_groups(void **state)
{
	(void)state;
	static const struct fcase shapes[] = {
		{ "groups s1 ce 22",    1, 5, 22, 13, 11, 1, ACT_CLIP, ACT_RELU, 1, 0, 0, MISS_NONE, 0 },
		{ "groups s2 ce 13",    1, 3, 13, 15, 19, 2, ACT_RELU, ACT_CLIP, 1, 0, 0, MISS_NONE, 0 },
		{ "groups batch 2",     2, 4, 16,  9, 16, 1, ACT_NONE, ACT_HSWISH, 0, 0, 0, MISS_NONE, 0 },
		{ "groups stem ce 18",  1, 3, 18, 18, 22, 1, ACT_CLIP, ACT_CLIP, 1, 0, 0, MISS_NONE, 1 },
	};
	static const int groups[] = { 4, 8, 12, 24 }, bands[] = { 1, 3, 16 };
	for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
		const struct fcase *t = &shapes[i];
		struct fsetup f;
		fsetup_init(t, &f);
		int64_t nr;
		float *ref = ot_run_ref(&f.bytes, 1, &f.in, &nr, t->name);
		for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++)
			for (size_t b = 0; b < sizeof bands / sizeof bands[0]; b++) {
				char what[96];
				snprintf(what, sizeof what, "%s, claims of %d channels, bands of %d rows",
					 t->name, groups[g], bands[b]);
				hal_conv_fused_group = groups[g];
				hal_conv_fused_band_rows = bands[b];
				ot_check_runs(&f.bytes, 1, &f.in, 1, NULL, ref, nr, 1e-4, f.steps, what);
			}
		hal_conv_fused_group = 0;
		hal_conv_fused_band_rows = 0;
		free(ref);
		fsetup_free(&f);
	}
}

/* The ring's height (hook hal_conv_fused_ring_rows): the band's window,
 * one, two and window+1 rows more (a band's new rows then wrap at the
 * ring's end in every position, its run split into two expand calls), and
 * the window rounded up to a multiple of B*s; bands of 1 to 5 rows, the
 * walkers meeting at the first band, in the middle and not at all (2
 * threads), rows and channel claims, stride 1 and 2, a stem, batch 2,
 * widths not a multiple of 8 (an expand run of a partial last vector). */
static void ring_sizes(void **state)
{
	(void)state;
	static const struct fcase shapes[] = {
		{ "ring s1",       1, 3, 6, 21, 11, 1, ACT_CLIP, ACT_RELU, 1, 0, 0, MISS_NONE, 0 },
		{ "ring s2",       1, 3, 6, 23, 19, 2, ACT_RELU, ACT_CLIP, 1, 0, 0, MISS_NONE, 0 },
		{ "ring batch 2",  2, 4, 9, 13, 16, 1, ACT_HSWISH, ACT_CLIP, 1, 0, 0, MISS_NONE, 0 },
		{ "ring stem s1",  1, 3, 7, 26, 22, 1, ACT_CLIP, ACT_CLIP, 1, 0, 0, MISS_NONE, 1 },
		{ "ring stem s2",  1, 3, 7, 37, 35, 2, ACT_CLIP, ACT_HSWISH, 1, 0, 0, MISS_NONE, 1 },
	};
	static const int bands[] = { 1, 2, 3, 5 };
	for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
		const struct fcase *t = &shapes[i];
		int64_t eh = t->stem ? (t->h - 1) / 2 + 1 : t->h, oh = (eh - 1) / t->s + 1;
		struct fsetup f;
		fsetup_init(t, &f);
		int64_t nr;
		float *ref = ot_run_ref(&f.bytes, 1, &f.in, &nr, t->name);
		for (size_t b = 0; b < sizeof bands / sizeof bands[0]; b++) {
			int win = (bands[b] - 1) * (int)t->s + 3;
			const int rings[] = { 0, win + 1, win + 2, 2 * win + 1, -1 };
			int64_t nb = (oh + bands[b] - 1) / bands[b] * t->n;
			const int64_t downs[] = { -1, 1, nb / 2 };
			for (size_t r = 0; r < sizeof rings / sizeof rings[0]; r++)
				for (size_t d = 0; d < 4; d++) {
					char what[128];
					snprintf(what, sizeof what, "%s, bands of %d rows, ring %d rows, %s %lld",
						 t->name, bands[b], rings[r] ? rings[r] : win,
						 d < 3 ? "down walker bands" : "channel claims",
						 d < 3 ? (long long)downs[d] : 4LL);
					hal_conv_fused_band_rows = bands[b];
					hal_conv_fused_ring_rows = rings[r];
					hal_conv_fused_down_bands = d < 3 ? downs[d] : -1;
					hal_conv_fused_group = d < 3 ? -1 : 4;
					ot_check_runs(&f.bytes, 1, &f.in, 1, NULL, ref, nr, 1e-4, f.steps,
						      what);
				}
		}
		hal_conv_fused_band_rows = 0;
		hal_conv_fused_ring_rows = 0;
		hal_conv_fused_down_bands = -1;
		hal_conv_fused_group = 0;
		free(ref);
		fsetup_free(&f);
	}
}

/* Expand chunks (hook hal_conv_fused_chunk) of 8 to 240 pixels, not
 * multiples of the 24-pixel block or of the row: a chunk's last partial
 * vector recomputed inside it, a HardSwish (not in registers) applied
 * once per pixel over each finished chunk; reductions of 3 to 70 input
 * channels (the step's own chunk 48 to 240 among them: K 64 and 70 give
 * 48), a stem (K 27), stride 1 and 2, 1 and 2 threads. */
static void expand_chunks(void **state)
{
	(void)state;
	static const struct fcase shapes[] = {
		{ "chunks K 3",     1,  3, 6, 11, 37, 1, ACT_HSWISH, ACT_CLIP, 1, 0, 0, MISS_NONE, 0 },
		{ "chunks K 70 s2", 1, 70, 9, 13, 29, 2, ACT_HSWISH, ACT_RELU, 1, 0, 0, MISS_NONE, 0 },
		{ "chunks K 64",    1, 64, 7, 14, 14, 1, ACT_CLIP, ACT_HSWISH, 1, 0, 0, MISS_NONE, 0 },
		{ "chunks stem",    1,  3, 5, 23, 45, 1, ACT_HSWISH, ACT_CLIP, 1, 0, 0, MISS_NONE, 1 },
	};
	static const int chunks[] = { 0, 8, 9, 13, 24, 31, 48, 100, 240 };
	for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
		const struct fcase *t = &shapes[i];
		struct fsetup f;
		fsetup_init(t, &f);
		int64_t nr;
		float *ref = ot_run_ref(&f.bytes, 1, &f.in, &nr, t->name);
		for (size_t k = 0; k < sizeof chunks / sizeof chunks[0]; k++) {
			char what[96];
			snprintf(what, sizeof what, "%s, chunks of %d pixels", t->name, chunks[k]);
			hal_conv_fused_chunk = chunks[k];
			ot_check_runs(&f.bytes, 1, &f.in, 1, NULL, ref, nr, 1e-4, f.steps, what);
		}
		hal_conv_fused_chunk = 0;
		free(ref);
		fsetup_free(&f);
	}
}

/* The channel-blocked ring of stride-2 steps (8 channels a block; the
 * expand 3 blocks x 4 pixels a step, then 2 x 6 and 1 x 8 for the last
 * blocks, the last step of a row shifted to end at w; the depthwise 8
 * output pixels a step, transposed into NCHW): 1 to 5 blocks (every mix of
 * the three expand shapes), widths 15 to 40 (output widths 8 to 20: odd
 * widths read the right zero pixel, rows not a multiple of 4, 6 or 8),
 * odd and even heights, the expand's Clip, Relu or none (a HardSwish keeps
 * the NCHW ring), the depthwise's HardSwish (applied over the finished
 * rows), no bias, batch 2; bands of 1 to 3 rows, rows and channel claims
 * (claims of 4 rounded up to 8), the ring's window and +1 rows, 1 and 2
 * threads, both ISAs; and each case with the NCHW ring (hook at -1). */
static void channel_blocks(void **state)
{
	(void)state;
	static const struct fcase shapes[] = {
		{ "cb 1 block w 15",  1, 3,  8, 9,  15, 2, ACT_CLIP, ACT_CLIP,   1, 0, 0, MISS_NONE, 0 },
		{ "cb 2 blocks w 17", 1, 5, 16, 10, 17, 2, ACT_RELU, ACT_RELU,   1, 0, 0, MISS_NONE, 0 },
		{ "cb 3 blocks w 23", 1, 4, 24, 7,  23, 2, ACT_NONE, ACT_HSWISH, 1, 0, 0, MISS_NONE, 0 },
		{ "cb 4 blocks w 40", 1, 7, 32, 12, 40, 2, ACT_CLIP, ACT_NONE,   0, 0, 0, MISS_NONE, 0 },
		{ "cb 5 blocks w 33", 2, 6, 40, 11, 33, 2, ACT_CLIP, ACT_CLIP,   1, 1, 0, MISS_NONE, 0 },
		{ "cb hswish expand", 1, 3, 16, 9,  19, 2, ACT_HSWISH, ACT_CLIP, 1, 0, 0, MISS_NONE, 0 },
	};
	static const int bands[] = { 0, 1, 3 };
	for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
		const struct fcase *t = &shapes[i];
		struct fsetup f;
		fsetup_init(t, &f);
		int64_t nr;
		float *ref = ot_run_ref(&f.bytes, 1, &f.in, &nr, t->name);
		for (int cb = 0; cb >= -1; cb--)
			for (size_t b = 0; b < sizeof bands / sizeof bands[0]; b++)
				for (int g = -1; g <= 4; g += 5)
					for (int r = 0; r <= 1; r++) {
						char what[128];
						int win = ((bands[b] ? bands[b] : 2) - 1) * 2 + 3;
						snprintf(what, sizeof what,
							 "%s, %s ring, bands of %d rows, %s, ring +%d",
							 t->name, cb ? "NCHW" : "blocked", bands[b],
							 g < 0 ? "rows" : "claims of 4", r);
						hal_conv_fused_cb = cb;
						hal_conv_fused_band_rows = bands[b];
						hal_conv_fused_group = g;
						hal_conv_fused_ring_rows = r ? win + 1 : 0;
						ot_check_runs(&f.bytes, 1, &f.in, 1, NULL, ref, nr, 1e-4,
							      f.steps, what);
					}
		hal_conv_fused_cb = 0;
		hal_conv_fused_band_rows = 0;
		hal_conv_fused_group = 0;
		hal_conv_fused_ring_rows = 0;
		free(ref);
		fsetup_free(&f);
	}
}

/* Output widths under 8 at stride 2 fuse with the channel-blocked ring
 * only (one block of 8 pixels, ow of them stored, the rest reading past the
 * row): widths 8 to 16 (output widths 4 to 8), 1 and 3 blocks, bands of 1
 * and the step's choice, rows and claims; with the hook at -1 or a
 * HardSwish expand they stay two steps. */
static void narrow_blocks(void **state)
{
	(void)state;
	for (int64_t w = 8; w <= 16; w++)
		for (int k = 0; k < 3; k++) {
			struct fcase t = { "narrow", 1, 5, k == 1 ? 24 : 8, w + 1 - 2 * (w % 2), w, 2,
					   k == 2 ? ACT_HSWISH : ACT_CLIP, ACT_RELU, 1, 0, 0, MISS_NONE,
					   0 };
			struct fsetup f;
			fsetup_init(&t, &f);
			int64_t nr, ow = (w - 1) / 2 + 1;
			float *ref = ot_run_ref(&f.bytes, 1, &f.in, &nr, t.name);
			for (int cb = 0; cb >= -1; cb--)
				for (int b = 0; b <= 1; b++)
					for (int g = -1; g <= 8; g += 9) {
						char what[128];
						snprintf(what, sizeof what,
							 "narrow w %lld ce %lld %s, hook %d, bands %d, %s",
							 (long long)w, (long long)t.ce,
							 k == 2 ? "hswish" : "clip", cb, b,
							 g < 0 ? "rows" : "claims");
						hal_conv_fused_cb = cb;
						hal_conv_fused_band_rows = b;
						hal_conv_fused_group = g;
						int fused = ow >= 8 || (cb == 0 && k != 2);
						ot_check_runs(&f.bytes, 1, &f.in, 1, NULL, ref, nr, 1e-4,
							      fused ? f.steps : f.steps + 1, what);
					}
			hal_conv_fused_cb = 0;
			hal_conv_fused_band_rows = 0;
			hal_conv_fused_group = 0;
			free(ref);
			fsetup_free(&f);
		}
}

/* 3 to 5 threads (more walkers than the two of a pair: rows split into
 * segments, one pair of walkers each, the last walker alone when odd;
 * channel claims shared by all), rows and channels, stride 1 and 2, batch
 * 2, against the reference. */
static void more_threads(void **state)
{
	(void)state;
	static const struct fcase shapes[] = {
		{ "threads s1",      1, 5, 22, 23, 17, 1, ACT_CLIP, ACT_RELU, 1, 0, 0, MISS_NONE, 0 },
		{ "threads s2 b2",   2, 3, 13, 29, 19, 2, ACT_RELU, ACT_CLIP, 1, 0, 0, MISS_NONE, 0 },
	};
	for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
		const struct fcase *t = &shapes[i];
		struct fsetup f;
		fsetup_init(t, &f);
		int64_t nr;
		float *ref = ot_run_ref(&f.bytes, 1, &f.in, &nr, t->name);
		for (int g = -1; g <= 4; g += 5)
			for (int threads = 3; threads <= 5; threads++) {
				char what[96];
				int64_t n;
				int got_steps;
				snprintf(what, sizeof what, "%s, %d threads, %s", t->name, threads,
					 g < 0 ? "rows" : "channels");
				hal_conv_fused_group = g;
				hal_conv_fused_band_rows = 2;
				float *got = ot_run(&f.bytes, 1, &f.in, threads, &n, &got_steps, what);
				int64_t k = n == nr ? ot_far_f(got, ref, n, 1e-4f) : 0;
				if (n != nr || got_steps != f.steps || k >= 0)
					fail_msg("%s: %lld elements, %d steps, y[%lld] off", what,
						 (long long)n, got_steps, (long long)k);
				free(got);
			}
		hal_conv_fused_group = 0;
		hal_conv_fused_band_rows = 0;
		free(ref);
		fsetup_free(&f);
	}
}

/* Under the default threshold (64 KiB of expanded tensor) a small plane
 * (20 KiB) keeps its two steps; MobileNetV2's 56x56 24->144 pair (1.8 MB)
 * fuses. */
static void threshold(void **state)
{
	(void)state;
	size_t keep = hal_conv_fused_min_bytes;
	hal_conv_fused_min_bytes = 64 * 1024;
	struct fcase small = cases[2], big = cases[1];
	int steps;
	pbw bytes;
	build(&small, &bytes, &steps);
	size_t nx = (size_t)(small.n * small.cin * small.h * small.w);
	float *x = ot_rand_new(nx, -2, 2);
	aidos_tensor in = { .name = "x", .dtype = AIDOS_DT_FLOAT, .rank = 4,
			    .dims = { small.n, small.cin, small.h, small.w }, .data = x };
	ot_check_vs_ref(&bytes, 1, &in, 0, 1e-4, steps + 1, "small plane, default threshold");
	free(x);
	free(bytes.b);
	big.h = 56;
	build(&big, &bytes, &steps);
	nx = (size_t)(big.n * big.cin * big.h * big.w);
	x = ot_rand_new(nx, -2, 2);
	in.dims[1] = big.cin;
	in.dims[2] = big.h;
	in.dims[3] = big.w;
	in.data = x;
	ot_check_vs_ref(&bytes, 1, &in, 0, 1e-4, steps, "mbv2 56x56, default threshold");
	free(x);
	free(bytes.b);
	hal_conv_fused_min_bytes = keep;
}

int main(void)
{
	ot_rng = 0x2545f4914f6cdd1dull;
	hal_conv_fused_min_bytes = 0;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(fused_vs_reference),
		cmocka_unit_test(near_misses_stay_unfused),
		cmocka_unit_test(width_sweep),
		cmocka_unit_test(walkers_meet),
		cmocka_unit_test(channel_groups),
		cmocka_unit_test(ring_sizes),
		cmocka_unit_test(expand_chunks),
		cmocka_unit_test(channel_blocks),
		cmocka_unit_test(narrow_blocks),
		cmocka_unit_test(more_threads),
		cmocka_unit_test(threshold),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
