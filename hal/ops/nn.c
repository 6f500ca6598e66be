/*
 * hal/ops/nn.c - convolution, pooling, normalisation and matrix products:
 * Conv, ConvTranspose, BatchNormalization, Gemm, MatMul, MaxPool,
 * AveragePool, GlobalAveragePool, GlobalMaxPool (LSTM: hal/ops/rnn.c).
 *
 * Every op has a scalar reference (direct loops, 1-D to 3-D, used when
 * hal_use_reference is set and for shapes the fast paths do not cover) and,
 * where it matters, a fast path:
 *   Conv 1-D/2-D: depthwise-style convs (one input channel per group) as a
 *     direct row loop over a padded copy of the plane; 1x1/stride 1/no
 *     padding straight to hal_gemm with the input planes as B; every other
 *     conv as one GEMM that reads B in place from a zero-padded, polyphase
 *     copy of the input (below), so no im2col matrix is ever written.
 *     Ungrouped 1x1 convs over 2..4096 pixels: hal/ops/conv_pw.c (X read
 *     in place, or transposed under 100 pixels). Other 1x1 convs over few
 *     pixels (a squeeze-excitation's 1x1 plane, grouped 7x7): transposed,
 *     Y^T = X^T W^T, so the micro-kernel's wide side runs over output
 *     channels.
 *   A Conv whose node carries an epilogue (ir_node.epi: the activation and
 *     scalar affine map hal/fuse_conv.c folded into it at load) applies it
 *     on every path: in the GEMM micro-kernel's store, per depthwise row,
 *     per cropped row, after the reference loop.
 *   ConvTranspose 1-D/2-D: hal_gemm into a column buffer, then col2im.
 *   Gemm, MatMul: hal_gemm.
 * Constant weights (W of Conv/ConvTranspose, B of Gemm/MatMul) are packed
 * once in infer() into s->params; activations are packed per run into
 * s->scratch. Spatial ops see their dims left-padded to 3-D (size 1, kernel
 * 1, stride 1, no padding), so one set of loops serves 1-D, 2-D and 3-D.
 * Semantics: the ONNX operator docs (onnx/docs/Operators.md), shapes as in
 * ONNX Runtime (pooling ceil_mode drops a last window that would start in
 * the end padding).
 */
#if defined(__GNUC__) && !defined(__clang__)
/* ISO C mode makes GCC default to -ffp-contract=off; the depthwise and
 * epilogue loops' `a += w * x` must become one FMA (clang contracts by
 * default). Reference loops contract too: that only removes roundings. */
#pragma GCC optimize("fp-contract=fast")
#endif

#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <string.h>
#include "hal/ops/vmath.h"
#include "hal/gemm.h"
#include "hal/ops/conv_dw.h"
#include "hal/ops/conv_pw.h"
#include "hal/ops/conv_small.h"
#include "hal/hal.h"
#include "hal/ops/conv_direct.h"

#define SP 3                  /* spatial dims the kernels handle */
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define ALIGN64(n) (((n) + 63) & ~(size_t)63)

/* ---- shared helpers ---- */

static const hal_tensor *in_opt(const hal_step *s, int i)
{
	return i < s->n_in ? s->in[i] : NULL;
}

static hal_tensor *out_opt(const hal_step *s, int i)
{
	return i < s->n_out ? s->out[i] : NULL;
}

static int need_f32(hal_step *s, const hal_tensor *t, const char *what)
{
	if (!t)
		return hal_err(s, AIDOS_E_INVALID, "missing input %s", what);
	if (t->dtype != HAL_DT_F32)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "%s: dtype %s, only float32 is supported",
			       what, hal_dtype_name(t->dtype));
	return 0;
}

/* Reads INTS attribute `name` into v[0..n): absent means `def` for each. */
static int attr_ints_n(hal_step *s, const char *name, int n, int64_t def, int64_t *v)
{
	const int64_t *p;
	int c = hal_attr_ints(s->node, name, &p);
	for (int i = 0; i < n; i++)
		v[i] = def;
	if (c == 0)
		return 0;
	if (c != n)
		return hal_err(s, AIDOS_E_INVALID, "%s has %d values, expected %d", name, c, n);
	for (int i = 0; i < n; i++)
		v[i] = p[i];
	return 0;
}

static float *align_floats(void *p, size_t off_bytes)
{
	return (float *)((char *)p + ALIGN64(off_bytes));
}

enum { AP_NOTSET, AP_SAME_UPPER, AP_SAME_LOWER, AP_VALID };

static int auto_pad(hal_step *s, int *mode)
{
	const char *a = hal_attr_str(s->node, "auto_pad", "NOTSET");
	if (!a[0] || !strcmp(a, "NOTSET"))
		*mode = AP_NOTSET;
	else if (!strcmp(a, "SAME_UPPER"))
		*mode = AP_SAME_UPPER;
	else if (!strcmp(a, "SAME_LOWER"))
		*mode = AP_SAME_LOWER;
	else if (!strcmp(a, "VALID"))
		*mode = AP_VALID;
	else
		return hal_err(s, AIDOS_E_INVALID, "auto_pad '%s' unknown", a);
	return 0;
}

/* A sliding window over 3-D (left-padded) spatial dims. */
struct win {
	int nsp;              /* real spatial rank, 1..3 */
	int64_t in[SP], out[SP], k[SP], st[SP], dl[SP], pb[SP], pe[SP];
};

static int64_t win_in(const struct win *w)
{
	return w->in[0] * w->in[1] * w->in[2];
}

static int64_t win_out(const struct win *w)
{
	return w->out[0] * w->out[1] * w->out[2];
}

static int64_t win_k(const struct win *w)
{
	return w->k[0] * w->k[1] * w->k[2];
}

/* Sets nsp, in[] from x's dims [N, C, spatial...] and the trivial defaults. */
static int win_init(hal_step *s, struct win *w, const hal_tensor *x)
{
	if (x->rank < 3 || x->rank > 2 + SP)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "input rank %d: 1-D to 3-D spatial supported",
			       (int)x->rank);
	w->nsp = (int)x->rank - 2;
	for (int i = 0; i < SP; i++) {
		w->in[i] = w->out[i] = w->k[i] = w->st[i] = w->dl[i] = 1;
		w->pb[i] = w->pe[i] = 0;
	}
	for (int i = 0; i < w->nsp; i++)
		w->in[SP - w->nsp + i] = x->dims[2 + i];
	return 0;
}

/* Reads strides, dilations, pads (k[] already set) into the last nsp slots. */
static int win_attrs(hal_step *s, struct win *w, int has_dilations)
{
	int n = w->nsp, o = SP - n, rc;
	int64_t st[SP], dl[SP], pads[2 * SP];
	if ((rc = attr_ints_n(s, "strides", n, 1, st)) ||
	    (rc = attr_ints_n(s, "dilations", n, 1, dl)) ||
	    (rc = attr_ints_n(s, "pads", 2 * n, 0, pads)))
		return rc;
	for (int i = 0; i < n; i++) {
		if (st[i] < 1 || dl[i] < 1 || (!has_dilations && dl[i] != 1))
			return hal_err(s, AIDOS_E_INVALID, "strides/dilations must be >= 1");
		if (pads[i] < 0 || pads[n + i] < 0)
			return hal_err(s, AIDOS_E_INVALID, "negative pads");
		w->st[o + i] = st[i];
		w->dl[o + i] = dl[i];
		w->pb[o + i] = pads[i];
		w->pe[o + i] = pads[n + i];
	}
	return 0;
}

/* Output dims of a Conv or pooling window (auto_pad may rewrite pads). */
static int win_output(hal_step *s, struct win *w, int ap, int ceil_mode)
{
	for (int i = SP - w->nsp; i < SP; i++) {
		int64_t dk = (w->k[i] - 1) * w->dl[i] + 1, in = w->in[i], o;
		if (ap == AP_SAME_UPPER || ap == AP_SAME_LOWER) {
			o = (in + w->st[i] - 1) / w->st[i];
			int64_t tot = MAX(0, (o - 1) * w->st[i] + dk - in);
			w->pb[i] = ap == AP_SAME_UPPER ? tot / 2 : tot - tot / 2;
			w->pe[i] = tot - w->pb[i];
		} else {
			if (ap == AP_VALID)
				w->pb[i] = w->pe[i] = 0;
			int64_t span = in + w->pb[i] + w->pe[i] - dk;
			if (span < 0)
				return hal_err(s, AIDOS_E_SHAPE,
					       "window %lld larger than padded input %lld",
					       (long long)dk, (long long)(in + w->pb[i] + w->pe[i]));
			o = (ceil_mode ? span + w->st[i] - 1 : span) / w->st[i] + 1;
			if (ceil_mode && (o - 1) * w->st[i] >= in + w->pb[i])
				o--;
		}
		w->out[i] = o;
	}
	return 0;
}

/* Output shape [N, C, out...]. */
static void win_set_out(hal_tensor *y, int dtype, int64_t n, int64_t c, const struct win *w)
{
	int64_t d[2 + SP] = { n, c };
	for (int i = 0; i < w->nsp; i++)
		d[2 + i] = w->out[SP - w->nsp + i];
	hal_tensor_set_shape(y, dtype, 2 + w->nsp, d);
}

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

/* Hot loops are written with 8-wide vectors and built twice: x86-64-v3
 * (AVX2 with FMA: a plain "avx2" clone may not use FMA instructions, so
 * every `a += w * x` was a multiply and an add) and the baseline, chosen at
 * load time (GCC's -O2 would not vectorise them). */
#if defined(__x86_64__) && !defined(__clang__) && __GNUC__ >= 12
#define NN_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#elif defined(__x86_64__) && defined(__clang__)
#define NN_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define NN_CLONES
#endif

/* y[i] += x[i], i < n. */
NN_CLONES
static void add_to(float *restrict y, const float *restrict x, int64_t n)
{
	int64_t i = 0;
	for (; i + 8 <= n; i += 8) {
		v8f a, b;
		memcpy(&a, x + i, sizeof a);
		memcpy(&b, y + i, sizeof b);
		b += a;
		memcpy(y + i, &b, sizeof b);
	}
	for (; i < n; i++)
		y[i] += x[i];
}

/* y[i] = x[i] * a + b, i < n. */
NN_CLONES
static void scale_shift(float *restrict y, const float *restrict x, float a, float b, int64_t n)
{
	int64_t i = 0;
	for (; i + 8 <= n; i += 8) {
		v8f v;
		memcpy(&v, x + i, sizeof v);
		v = v * a + b;
		memcpy(y + i, &v, sizeof v);
	}
	for (; i < n; i++)
		y[i] = x[i] * a + b;
}

static void fill(float *y, float v, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		y[i] = v;
}

/* ================= Conv ================= */

enum { CONV_REF, CONV_DW, CONV_1X1, CONV_PHASE, CONV_1X1T, CONV_DIRECT, CONV_DIRECT1 };

struct conv {
	struct win w;
	int64_t n, cin, cout, group, cin_g, cout_g;
	int path;
	const ir_epilogue *epi; /* fused activation (hal/fuse_conv.c), or NULL */
	const float *wp;      /* packed weights, group g at wp + g*wp_stride; or NULL */
	size_t wp_stride;
	/* CONV_DW: a zero-padded copy of one input plane per worker, split
	 * into sh*sw polyphase planes [sh][sw][dw_hq][dw_wq] (padded pixel
	 * (r, c) at plane (r%sh, c%sw), (r/sh, c/sw)) so every tap reads
	 * unit-stride. Narrow outputs (dw_flat) are computed as one run of
	 * OH*dw_wq columns (wq-OW garbage ones per row) into a per-worker
	 * buffer of dw_flat_floats, then cropped: one long vector loop
	 * instead of OH short ones. */
	int64_t dw_hq, dw_wq;
	int dw_slots, dw_flat;
	size_t dw_slot_floats, dw_plane_floats;
	/* CONV_PHASE: the group's input is copied once, zero-padded and split
	 * into sh*sw polyphase planes [cin_g][sh][sw][hq][wq] (padded pixel
	 * (r, c) lands in plane (r%sh, c%sw) at (r/sh, c/sw)). Tap (ci, ky, kx)
	 * of output pixel (oy, ox) is then the plane element at
	 * koff[k] + oy*wq + ox: a GEMM over the columns j = oy*wq + ox that
	 * reads B in place (hal_gemm's b_koff). It computes wq-OW garbage
	 * columns per row into cpad [cout_g, OH, wq], cropped into Y block by
	 * block as the GEMM finishes them (hal_gemm's done callback). */
	int64_t hq, wq;
	const int64_t *koff;  /* [cin_g*kh*kw] */
	size_t xph_floats, cpad_floats;
	/* CONV_1X1T: a 1x1 conv over few pixels (the 7x7 and 14x14 ends of
	 * MobileNet-style nets) computed transposed, Y_g^T [HW, cout_g] =
	 * X_g^T [HW, cin_g] * W_g^T, so that the GEMM's N (the micro-kernel's
	 * wide side) is cout_g rather than HW = 49, which a 16-wide tile
	 * covers with 64 columns. wtp: W_g^T packed as B (group g at
	 * wtp + g*wtp_stride); the product lands in yt [HW, cout_g] and each
	 * finished block is transposed into Y with bias and epilogue while it
	 * is in cache (hal_gemm's done callback). */
	const float *wtp;
	size_t wtp_stride, yt_floats;
};

#define DW_MAX_TAPS 64
#define DW_FLAT_BELOW 64  /* output widths computed as one flat run */
/* 1x1 convs with fewer output pixels than this run transposed (CONV_1X1T)
 * when they have at least as many output channels per group (ungrouped
 * ones over 2 or more pixels: hal/ops/conv_pw.c's own transposed tiles,
 * HAL_CONV_PW_T_BELOW). */
#define CONV_1X1T_BELOW 100
/* 1x1 convs over many pixels with a reduction this short run the direct
 * kernel (hal/ops/conv_direct.c): they are bound by writing Y, which it
 * does in long runs per channel instead of 16-float pieces of up to 96
 * rows at once (MobileNetV2's 16->96 at 112x112: 0.96 -> 0.75 ms). At
 * 56x56 the two tie, at 28x28 the GEMM wins. */
#define CONV_DIRECT1_MAX_K 32
/* Grouped 1x1 convs (ungrouped ones over 16..4096 pixels go to
 * hal/ops/conv_pw.c) over at most this many pixels (one GEMM N block)
 * pack X as B instead of reading it in place: at 14x14 the in-place rows (a koff load
 * and a 16-float piece of a different 784-byte row per k, the 4-column
 * tail copied per K block) ran 3-11% slower than packed panels
 * (MobileNetV2's 96x196x576: 0.292 -> 0.260 ms); at 28x28 and above
 * packing costs more than it saves. */
#define CONV_1X1_PACK_MAX 256
#define DIRECT1_MIN_PIXELS 8192
#define DIRECT1_BAND 480  /* pixels a task of the direct 1x1 takes */

static int conv_infer(hal_step *s)
{
	const hal_tensor *x = in_opt(s, 0), *w = in_opt(s, 1), *b = in_opt(s, 2);
	int rc, ap;
	if ((rc = need_f32(s, x, "X")) || (rc = need_f32(s, w, "W")) ||
	    (b && (rc = need_f32(s, b, "B"))))
		return rc;
	struct conv *c = hal_step_alloc(s, sizeof *c);
	if (!c)
		return AIDOS_E_NOMEM;
	if ((rc = win_init(s, &c->w, x)))
		return rc;
	int nsp = c->w.nsp, o = SP - nsp;
	if (w->rank != x->rank)
		return hal_err(s, AIDOS_E_SHAPE, "W has rank %d, X %d", (int)w->rank, (int)x->rank);
	c->n = x->dims[0];
	c->cin = x->dims[1];
	c->cout = w->dims[0];
	c->group = hal_attr_int(s->node, "group", 1);
	if (c->group < 1 || c->cin % c->group || c->cout % c->group)
		return hal_err(s, AIDOS_E_SHAPE, "group %lld does not divide C=%lld and M=%lld",
			       (long long)c->group, (long long)c->cin, (long long)c->cout);
	c->cin_g = c->cin / c->group;
	c->cout_g = c->cout / c->group;
	c->epi = s->node->epi;
	if (w->dims[1] != c->cin_g)
		return hal_err(s, AIDOS_E_SHAPE, "W has %lld input channels per group, X gives %lld",
			       (long long)w->dims[1], (long long)c->cin_g);
	int64_t ks[SP];
	if ((rc = attr_ints_n(s, "kernel_shape", nsp, -1, ks)))
		return rc;
	for (int i = 0; i < nsp; i++) {
		if (ks[i] >= 0 && ks[i] != w->dims[2 + i])
			return hal_err(s, AIDOS_E_SHAPE, "kernel_shape disagrees with W");
		c->w.k[o + i] = w->dims[2 + i];
	}
	if (b && (b->rank != 1 || b->dims[0] != c->cout))
		return hal_err(s, AIDOS_E_SHAPE, "B must be [%lld]", (long long)c->cout);
	if ((rc = win_attrs(s, &c->w, 1)) || (rc = auto_pad(s, &ap)) ||
	    (rc = win_output(s, &c->w, ap, 0)))
		return rc;
	win_set_out(s->out[0], HAL_DT_F32, c->n, c->cout, &c->w);

	const struct win *W = &c->w;
	int64_t ohw = win_out(W), K = c->cin_g * win_k(W);
	c->path = CONV_REF;
	if (!hal_use_reference && W->k[0] == 1 && W->in[0] == 1 && W->out[0] == 1 && ohw > 0) {
		int one = W->k[1] == 1 && W->k[2] == 1 && W->st[1] == 1 && W->st[2] == 1 &&
			  W->pb[1] + W->pe[1] + W->pb[2] + W->pe[2] == 0;
		c->path = c->cin_g == 1 && win_k(W) <= DW_MAX_TAPS ? CONV_DW
			  : one ? CONV_1X1 : CONV_PHASE;
		if (c->path == CONV_1X1 && ohw < CONV_1X1T_BELOW && c->cout_g >= ohw &&
		    w->is_const && w->data)
			c->path = CONV_1X1T;
		if (c->path == CONV_1X1 && K <= CONV_DIRECT1_MAX_K && ohw >= DIRECT1_MIN_PIXELS &&
		    w->is_const && w->data)
			c->path = CONV_DIRECT1;
		/* a short reduction (a stem conv): no GEMM, no cropped copy. Its
		 * 24-pixel blocks stay within rows, so narrow outputs (which the
		 * GEMM runs as one flat run of columns) stay on the GEMM. */
		if (c->path == CONV_PHASE && K <= HAL_CONV_DIRECT_MAX_K &&
		    W->out[2] >= 2 * HAL_CONV_DIRECT_PX && w->is_const && w->data)
			c->path = CONV_DIRECT;
	}
	if (c->path == CONV_DW && c->cout_g == 1 &&
	    (rc = hal_conv_dw_plan(s, &(hal_conv2d_geom){ c->n, c->cin, c->cout, W->in[1], W->in[2],
				   W->out[1], W->out[2], W->k[1], W->k[2], W->st[1], W->st[2],
				   W->dl[1], W->dl[2], W->pb[1], W->pb[2], c->epi })))
		return rc < 0 ? rc : 0;  /* hal/ops/conv_dw.c took the step */
	if ((c->path == CONV_1X1 || (c->path == CONV_1X1T && ohw > 1)) && c->group == 1 &&
	    (rc = hal_conv_pw_plan(s, c->n, c->cin, c->cout, ohw, c->epi)))
		return rc < 0 ? rc : 0;  /* hal/ops/conv_pw.c took the step */
	if ((c->path == CONV_PHASE || c->path == CONV_DW) && c->group == 1 &&
	    (rc = hal_conv_small_plan(s, &(hal_conv2d_geom){ c->n, c->cin, c->cout, W->in[1], W->in[2],
				      W->out[1], W->out[2], W->k[1], W->k[2], W->st[1], W->st[2],
				      W->dl[1], W->dl[2], W->pb[1], W->pb[2], c->epi })))
		return rc < 0 ? rc : 0;  /* hal/ops/conv_small.c took the step */
	if (c->path == CONV_1X1T) {
		/* W_g [cout_g, cin_g] row-major is W_g^T [cin_g, cout_g] transposed */
		size_t gb = hal_gemm_packed_b_bytes(K, c->cout_g);
		float *wtp = hal_step_alloc(s, gb * (size_t)c->group);
		if (!wtp)
			return AIDOS_E_NOMEM;
		for (int64_t g = 0; g < c->group; g++)
			hal_gemm_pack_b(wtp + (size_t)g * (gb / sizeof *wtp),
					(const float *)w->data + g * c->cout_g * K, K, 1, K, c->cout_g);
		c->wtp = wtp;
		c->wtp_stride = gb / sizeof *wtp;
		c->yt_floats = ALIGN64((size_t)(ohw * c->cout_g) * sizeof(float)) / sizeof(float);
		s->scratch_bytes = c->yt_floats * sizeof(float) +
				   hal_gemm_scratch_bytes(ohw, c->cout_g, K, 0, 1);
	}
	if (c->path == CONV_PHASE || c->path == CONV_DIRECT) {
		int64_t sh = W->st[1], sw = W->st[2];
		int64_t hp = MAX(W->in[1] + W->pb[1] + W->pe[1], (W->out[1] - 1) * sh +
				 (W->k[1] - 1) * W->dl[1] + 1);
		int64_t wp = MAX(W->in[2] + W->pb[2] + W->pe[2], (W->out[2] - 1) * sw +
				 (W->k[2] - 1) * W->dl[2] + 1);
		int64_t hq = (hp + sh - 1) / sh, wq = (wp + sw - 1) / sw;
		int64_t *koff = hal_step_alloc(s, (size_t)MAX(K, 1) * sizeof *koff);
		if (!koff)
			return AIDOS_E_NOMEM;
		for (int64_t ci = 0, k = 0; ci < c->cin_g; ci++)
			for (int64_t ky = 0; ky < W->k[1]; ky++)
				for (int64_t kx = 0; kx < W->k[2]; kx++) {
					int64_t r = ky * W->dl[1], q = kx * W->dl[2];
					koff[k++] = (((ci * sh + r % sh) * sw + q % sw) * hq + r / sh) * wq +
						    q / sw;
				}
		c->koff = koff;
		c->hq = hq;
		c->wq = wq;
		/* Garbage columns of the last output row read at most
		 * (kw-1)*dw/sw floats past the last plane: zeroed slack. */
		c->xph_floats = ALIGN64((size_t)(c->cin_g * sh * sw * hq * wq +
						 (W->k[2] - 1) * W->dl[2] + 1 +
						 HAL_CONV_DIRECT_SLACK) * sizeof(float)) /
				sizeof(float);
		c->cpad_floats = ALIGN64((size_t)(c->cout_g * W->out[1] * wq) * sizeof(float)) /
				 sizeof(float);
	}
	if (c->path == CONV_DW) {
		int64_t sh = W->st[1], sw = W->st[2];
		int64_t hp = MAX(W->in[1] + W->pb[1] + W->pe[1], (W->out[1] - 1) * sh +
				 (W->k[1] - 1) * W->dl[1] + 1);
		int64_t wp = MAX(W->in[2] + W->pb[2] + W->pe[2], (W->out[2] - 1) * sw +
				 (W->k[2] - 1) * W->dl[2] + 1);
		c->dw_hq = (hp + sh - 1) / sh;
		c->dw_wq = (wp + sw - 1) / sw;
		c->dw_slots = (int)MIN(c->n * c->cout, HAL_GEMM_SLOTS);
		c->dw_flat = W->out[2] < DW_FLAT_BELOW;
		/* flat: garbage columns of the last row read up to
		 * (kw-1)*dw/sw floats past the last plane (zero slack) */
		c->dw_plane_floats = ALIGN64((size_t)(sh * sw * c->dw_hq * c->dw_wq +
						      (W->k[2] - 1) * W->dl[2] + 1) * sizeof(float)) /
				     sizeof(float);
		c->dw_slot_floats = c->dw_plane_floats +
				    (c->dw_flat ? ALIGN64((size_t)(W->out[1] * c->dw_wq) * sizeof(float)) /
							  sizeof(float)
						: 0);
		s->scratch_bytes = (size_t)c->dw_slots * c->dw_slot_floats * sizeof(float);
	}
	if (c->path == CONV_DIRECT1) {
		int64_t *koff = hal_step_alloc(s, (size_t)K * sizeof *koff);
		if (!koff)
			return AIDOS_E_NOMEM;
		for (int64_t k = 0; k < K; k++)
			koff[k] = k * ohw;
		c->koff = koff;
	}
	if (c->path == CONV_DIRECT || c->path == CONV_DIRECT1) {
		size_t gf = hal_conv_direct_w_floats(c->cout_g, K);
		float *wp = hal_step_alloc(s, gf * (size_t)c->group * sizeof *wp);
		if (!wp)
			return AIDOS_E_NOMEM;
		for (int64_t g = 0; g < c->group; g++)
			hal_conv_direct_pack_w(wp + (size_t)g * gf,
					       (const float *)w->data + g * c->cout_g * K, c->cout_g, K);
		c->wp = wp;
		c->wp_stride = gf;
		s->scratch_bytes = c->path == CONV_DIRECT ? c->xph_floats * sizeof(float) : 0;
	}
	if (c->path == CONV_1X1 || c->path == CONV_PHASE) {
		if (w->is_const && w->data && K > 0) {
			size_t gb = hal_gemm_packed_a_bytes(c->cout_g, K);
			float *wp = hal_step_alloc(s, gb * (size_t)c->group);
			if (!wp)
				return AIDOS_E_NOMEM;
			for (int64_t g = 0; g < c->group; g++)
				hal_gemm_pack_a(wp + (size_t)g * (gb / sizeof *wp),
						(const float *)w->data + g * c->cout_g * K, K, 0,
						c->cout_g, K);
			c->wp = wp;
			c->wp_stride = gb / sizeof *wp;
		}
		if (c->path == CONV_PHASE)
			s->scratch_bytes = (c->xph_floats + c->cpad_floats) * sizeof(float) +
					   hal_gemm_scratch_bytes(c->cout_g, W->out[1] * c->wq, K,
								  c->wp != NULL, 2);
		else if (ohw <= CONV_1X1_PACK_MAX) {
			/* 1x1 over few pixels: B (X_g) packed per task, koff unset */
			s->scratch_bytes = hal_gemm_scratch_bytes(c->cout_g, ohw, K, c->wp != NULL, 0);
		} else {
			/* 1x1: B's rows are the input planes, read in place */
			int64_t *koff = hal_step_alloc(s, (size_t)MAX(K, 1) * sizeof *koff);
			if (!koff)
				return AIDOS_E_NOMEM;
			for (int64_t k = 0; k < K; k++)
				koff[k] = k * ohw;
			c->koff = koff;
			s->scratch_bytes = hal_gemm_scratch_bytes(c->cout_g, ohw, K, c->wp != NULL, 2);
		}
	}
	s->params = c;
	return 0;
}

struct conv_job {
	const struct conv *c;
	const float *x, *w, *b;
	float *y;
};

/* Reference: y[n,oc,o] = b[oc] + sum_{ci in group, k} x[n,ci,o*s-pb+k*d] * w[oc,ci,k]. */
static void conv_ref_range(void *arg, int64_t t0, int64_t t1)
{
	const struct conv_job *j = arg;
	const struct conv *c = j->c;
	const struct win *W = &c->w;
	int64_t ihw = win_in(W), ohw = win_out(W), kk = win_k(W);
	for (int64_t t = t0; t < t1; t++) {
		int64_t n = t / c->cout, oc = t % c->cout, g = oc / c->cout_g;
		const float *x = j->x + (n * c->cin + g * c->cin_g) * ihw;
		const float *wk = j->w + oc * c->cin_g * kk;
		float *y = j->y + t * ohw;
		for (int64_t od = 0; od < W->out[0]; od++)
		for (int64_t oh = 0; oh < W->out[1]; oh++)
		for (int64_t ow = 0; ow < W->out[2]; ow++) {
			float acc = j->b ? j->b[oc] : 0.0f;
			for (int64_t ci = 0; ci < c->cin_g; ci++)
			for (int64_t kd = 0; kd < W->k[0]; kd++) {
				int64_t id = od * W->st[0] - W->pb[0] + kd * W->dl[0];
				if (id < 0 || id >= W->in[0])
					continue;
				for (int64_t kh = 0; kh < W->k[1]; kh++) {
					int64_t ih = oh * W->st[1] - W->pb[1] + kh * W->dl[1];
					if (ih < 0 || ih >= W->in[1])
						continue;
					for (int64_t kw = 0; kw < W->k[2]; kw++) {
						int64_t iw = ow * W->st[2] - W->pb[2] + kw * W->dl[2];
						if (iw < 0 || iw >= W->in[2])
							continue;
						acc += x[ci * ihw + (id * W->in[1] + ih) * W->in[2] + iw] *
						       wk[((ci * W->k[0] + kd) * W->k[1] + kh) * W->k[2] + kw];
					}
				}
			}
			y[(od * W->out[1] + oh) * W->out[2] + ow] = acc;
		}
		if (c->epi)
			hal_epilogue_apply(c->epi, y, ohw);
	}
}

/* First and one-past-last output index o with 0 <= o*st + off < in. */
static void valid_range(int64_t off, int64_t st, int64_t in, int64_t nout, int64_t *lo, int64_t *hi)
{
	int64_t l = off >= 0 ? 0 : (-off + st - 1) / st;
	int64_t h = in - 1 - off >= 0 ? (in - 1 - off) / st + 1 : 0;
	*lo = MIN(l, nout);
	*hi = MAX(*lo, MIN(h, nout));
}

/* A macro, not a function: returning a vector from baseline-ISA code
 * would change the ABI (-Wpsabi). x must be a plain variable. */
#define SPLAT8(x) ((v8f){ x, x, x, x, x, x, x, x })

/* y[i] = bias + sum_t wt[t] * rows[t][i], i < n: one output row of a
 * depthwise conv. Each accumulator is a chain of nt dependent FMAs (4
 * cycles each), so 64 outputs (eight accumulators) at a time keep both FMA
 * pipes busy; 32 and 8 for the rest. */
#define DW_ACC(k) a##k += w * x##k;
#define DW_LOAD(k) memcpy(&x##k, r + 8 * (k), sizeof x##k);
#define DW_STORE(k) memcpy(y + i + 8 * (k), &a##k, sizeof a##k);
NN_CLONES
static void dw_row(float *restrict y, const float *const *rows, const float *wt, int nt,
		   float bias, int64_t n)
{
	int64_t i = 0;
	for (; i + 64 <= n; i += 64) {
		v8f a0 = SPLAT8(bias), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
		for (int t = 0; t < nt; t++) {
			const float *r = rows[t] + i;
			float wv = wt[t];
			v8f w = SPLAT8(wv), x0, x1, x2, x3, x4, x5, x6, x7;
			DW_LOAD(0) DW_LOAD(1) DW_LOAD(2) DW_LOAD(3)
			DW_LOAD(4) DW_LOAD(5) DW_LOAD(6) DW_LOAD(7)
			DW_ACC(0) DW_ACC(1) DW_ACC(2) DW_ACC(3)
			DW_ACC(4) DW_ACC(5) DW_ACC(6) DW_ACC(7)
		}
		DW_STORE(0) DW_STORE(1) DW_STORE(2) DW_STORE(3)
		DW_STORE(4) DW_STORE(5) DW_STORE(6) DW_STORE(7)
	}
	for (; i + 32 <= n; i += 32) {
		v8f a0 = SPLAT8(bias), a1 = a0, a2 = a0, a3 = a0;
		for (int t = 0; t < nt; t++) {
			const float *r = rows[t] + i;
			float wv = wt[t];
			v8f w = SPLAT8(wv), x0, x1, x2, x3;
			DW_LOAD(0) DW_LOAD(1) DW_LOAD(2) DW_LOAD(3)
			DW_ACC(0) DW_ACC(1) DW_ACC(2) DW_ACC(3)
		}
		DW_STORE(0) DW_STORE(1) DW_STORE(2) DW_STORE(3)
	}
	for (; i + 8 <= n; i += 8) {
		v8f a = SPLAT8(bias), x;
		for (int t = 0; t < nt; t++) {
			float wv = wt[t];
			memcpy(&x, rows[t] + i, sizeof x);
			a += SPLAT8(wv) * x;
		}
		memcpy(y + i, &a, sizeof a);
	}
	for (; i < n; i++) {
		float a = bias;
		for (int t = 0; t < nt; t++)
			a += wt[t] * rows[t][i];
		y[i] = a;
	}
}

struct dw_job {
	const struct conv *c;
	const float *x, *w, *b;
	float *y, *buf;
	atomic_llong next;    /* next plane; relaxed: the fork/join orders the data */
};

/* Splits a row x [n] into its even and odd columns: d0[m] = x[2m] for
 * 2m < n, d1[m] = x[2m+1] for 2m+1 < n (8 pairs a vector, the rest one by
 * one). */
NN_CLONES
static void deinterleave2(float *restrict d0, float *restrict d1, const float *restrict x,
			  int64_t n)
{
	const v8i ev = { 0, 2, 4, 6, 8, 10, 12, 14 }, od = { 1, 3, 5, 7, 9, 11, 13, 15 };
	int64_t m = 0;
	for (; 2 * m + 16 <= n; m += 8) {
		v8f a, b;
		memcpy(&a, x + 2 * m, sizeof a);
		memcpy(&b, x + 2 * m + 8, sizeof b);
		v8f e = __builtin_shuffle(a, b, ev), o = __builtin_shuffle(a, b, od);
		memcpy(d0 + m, &e, sizeof e);
		memcpy(d1 + m, &o, sizeof o);
	}
	for (; 2 * m + 1 < n; m++) {
		d0[m] = x[2 * m];
		d1[m] = x[2 * m + 1];
	}
	if (2 * m < n)
		d0[m] = x[2 * m];
}

/* Depthwise-style conv (one input channel per group) of plane t = (n, oc),
 * 2-D. P: this worker's buffer, zero outside the polyphase interiors. */
static void dw_plane(const struct dw_job *j, int64_t t, float *P)
{
	const struct conv *c = j->c;
	const struct win *W = &c->w;
	int64_t H = W->in[1], Wd = W->in[2], OH = W->out[1], OW = W->out[2];
	int64_t KH = W->k[1], KW = W->k[2], sh = W->st[1], sw = W->st[2];
	int64_t hq = c->dw_hq, wq = c->dw_wq, pt = W->pb[1], pl = W->pb[2];
	int64_t n = t / c->cout, oc = t % c->cout, g = oc / c->cout_g;
	const float *x = j->x + (n * c->cin + g) * H * Wd;
	const float *wk = j->w + oc * KH * KW;
	float *y = j->y + t * OH * OW;
	/* padded row r = iy + pt is row r/sh of row phase r%sh: both
	 * stepped, not divided (an idiv per row was 3% of MobileNetV2) */
	int64_t qy = pt % sh, py = pt / sh;
	for (int64_t iy = 0; iy < H; iy++, qy = qy + 1 == sh ? 0 : qy + 1, py += qy == 0) {
		float *prow = P + qy * sw * hq * wq + py * wq;  /* phase (qy, 0) */
		const float *xr = x + iy * Wd;
		if (sw == 1) {
			memcpy(prow + pl, xr, (size_t)Wd * sizeof *P);
			continue;
		}
		/* padded column ix+pl goes to phase (ix+pl) % sw, index (ix+pl) / sw:
		 * phase q takes ix = ix0, ix0+sw, ... */
		if (sw == 2) {  /* one pass: even and odd padded columns */
			float *d0 = prow + (pl & 1) * hq * wq + pl / 2;
			float *d1 = prow + (~pl & 1) * hq * wq + (pl + 1) / 2;
			deinterleave2(d0, d1, xr, Wd);
			continue;
		}
		for (int64_t q = 0; q < sw; q++) {
			int64_t ix0 = ((q - pl) % sw + sw) % sw;
			float *d = prow + q * hq * wq + (ix0 + pl) / sw;
			for (int64_t ix = ix0, m = 0; ix < Wd; ix += sw, m++)
				d[m] = xr[ix];
		}
	}
	const float *rows[DW_MAX_TAPS];
	float wt[DW_MAX_TAPS];
	int nt = 0;
	/* tap (ky, kx) of output (oy, ox) reads padded (oy*sh + ry, ox*sw + cx)
	 * = plane (ry%sh, cx%sw) at (oy + ry/sh, ox + cx/sw) */
	for (int64_t ky = 0; ky < KH; ky++)
		for (int64_t kx = 0; kx < KW; kx++, nt++) {
			int64_t ry = ky * W->dl[1], cx = kx * W->dl[2];
			rows[nt] = P + ((ry % sh) * sw + cx % sw) * hq * wq + (ry / sh) * wq + cx / sw;
			wt[nt] = wk[ky * KW + kx];
		}
	float bias = j->b ? j->b[oc] : 0.0f;
	if (c->dw_flat) {
		float *f = P + c->dw_plane_floats;  /* [OH, wq] */
		dw_row(f, rows, wt, nt, bias, OH * wq);
		if (c->epi)
			hal_epilogue_apply(c->epi, f, OH * wq);
		for (int64_t oy = 0; oy < OH; oy++)
			memcpy(y + oy * OW, f + oy * wq, (size_t)OW * sizeof *y);
		return;
	}
	const float *rr[DW_MAX_TAPS];
	for (int64_t oy = 0; oy < OH; oy++) {
		for (int k = 0; k < nt; k++)
			rr[k] = rows[k] + oy * wq;
		dw_row(y + oy * OW, rr, wt, nt, bias, OW);
		if (c->epi)
			hal_epilogue_apply(c->epi, y + oy * OW, OW);
	}
}

static void dw_worker(void *arg, int64_t s0, int64_t s1)
{
	struct dw_job *j = arg;
	const struct conv *c = j->c;
	float *P = j->buf + (size_t)s0 * c->dw_slot_floats;
	int64_t t, planes = c->n * c->cout;
	int zeroed = 0;
	(void)s1;
	while ((t = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) < planes) {
		if (!zeroed) {  /* the padding: same cells for every plane */
			memset(P, 0, c->dw_slot_floats * sizeof *P);
			zeroed = 1;
		}
		dw_plane(j, t, P);
	}
}

struct phase_job {
	const struct conv *c;
	const float *x;       /* [cin_g, H, W] */
	float *xph;           /* [cin_g, sh, sw, hq, wq] */
	const float *cpad;    /* [cout_g, OH, wq] */
	float *y;             /* [cout_g, OH, OW] */
};

/* Builds the polyphase planes of input channels [c0, c1). */
static void phase_planes(void *arg, int64_t c0, int64_t c1)
{
	const struct phase_job *j = arg;
	const struct conv *c = j->c;
	const struct win *W = &c->w;
	int64_t H = W->in[1], Wd = W->in[2], sh = W->st[1], sw = W->st[2];
	int64_t hq = c->hq, wq = c->wq, pt = W->pb[1], pl = W->pb[2];
	for (int64_t ci = c0; ci < c1; ci++) {
		const float *x = j->x + ci * H * Wd;
		if (sw == 2) {  /* both column phases of a row in one vector pass */
			for (int64_t qy = 0; qy < sh; qy++) {
				float *p0 = j->xph + (ci * sh + qy) * 2 * hq * wq, *p1 = p0 + hq * wq;
				for (int64_t ry = 0; ry < hq; ry++, p0 += wq, p1 += wq) {
					int64_t iy = ry * sh + qy - pt;
					memset(p0, 0, (size_t)wq * sizeof *p0);
					memset(p1, 0, (size_t)wq * sizeof *p1);
					if (iy < 0 || iy >= H)
						continue;
					/* input column ix is padded column ix+pl: phase
					 * (ix+pl)%2, index (ix+pl)/2 */
					const float *xr = x + iy * Wd;
					float *d0 = (pl & 1 ? p1 : p0) + pl / 2;
					float *d1 = (pl & 1 ? p0 : p1) + (pl + 1) / 2;
					deinterleave2(d0, d1, xr, Wd);
				}
			}
			continue;
		}
		for (int64_t qy = 0; qy < sh; qy++)
			for (int64_t qx = 0; qx < sw; qx++) {
				float *d = j->xph + ((ci * sh + qy) * sw + qx) * hq * wq;
				/* columns m with pl <= m*sw + qx < pl + W hold input */
				int64_t lo = MIN(MAX(pl - qx + sw - 1, 0) / sw, wq);
				int64_t hi = MAX(MIN(MAX(pl + Wd - qx + sw - 1, 0) / sw, wq), lo);
				for (int64_t ry = 0; ry < hq; ry++, d += wq) {
					int64_t iy = ry * sh + qy - pt;
					if (iy < 0 || iy >= H) {
						memset(d, 0, (size_t)wq * sizeof *d);
						continue;
					}
					const float *xr = x + iy * Wd + lo * sw + qx - pl;
					memset(d, 0, (size_t)lo * sizeof *d);
					if (sw == 1) {
						memcpy(d + lo, xr, (size_t)(hi - lo) * sizeof *d);
					} else {
						for (int64_t m = 0; m < hi - lo; m++)
							d[lo + m] = xr[m * sw];
					}
					memset(d + hi, 0, (size_t)(wq - hi) * sizeof *d);
				}
			}
	}
}

/* hal_gemm's done callback: copies the finished block (output channels
 * [i0, i0+mc), padded columns [j0, j0+nc) = rows oy at oy*wq + ox) into Y,
 * dropping the wq-OW garbage columns per row, while it is in cache. */
static void crop_block(const void *arg, int64_t i0, int64_t mc, int64_t j0, int64_t nc)
{
	const struct phase_job *j = arg;
	const struct win *W = &j->c->w;
	int64_t OH = W->out[1], OW = W->out[2], wq = j->c->wq;
	for (int64_t oy = j0 / wq; oy < OH && oy * wq < j0 + nc; oy++) {
		int64_t lo = MAX(j0, oy * wq) - oy * wq, hi = MIN(MIN(j0 + nc - oy * wq, wq), OW);
		if (hi <= lo)
			continue;
		for (int64_t oc = i0; oc < i0 + mc; oc++) {
			float *y = j->y + (oc * OH + oy) * OW + lo;
			memcpy(y, j->cpad + (oc * OH + oy) * wq + lo, (size_t)(hi - lo) * sizeof *y);
			if (j->c->epi)
				hal_epilogue_apply(j->c->epi, y, hi - lo);
		}
	}
}

static void conv_phase(hal_step *s, const struct conv *c, const float *x, const float *w,
		       const float *b, float *y)
{
	const struct win *W = &c->w;
	int64_t ihw = win_in(W), ohw = win_out(W), K = c->cin_g * win_k(W);
	int64_t planes = c->cin_g * W->st[1] * W->st[2] * c->hq * c->wq;
	float *xph = s->scratch, *cpad = xph + c->xph_floats;
	memset(xph + planes, 0, (c->xph_floats - (size_t)planes) * sizeof *xph);
	for (int64_t n = 0; n < c->n; n++)
		for (int64_t g = 0; g < c->group; g++) {
			struct phase_job j = { c, x + (n * c->cin + g * c->cin_g) * ihw, xph, cpad,
					       y + (n * c->cout + g * c->cout_g) * ohw };
			hal_parallel_for(s, c->cin_g, 4, phase_planes, &j);
			hal_gemm_args a = {
				.M = c->cout_g, .N = W->out[1] * c->wq, .K = K,
				.a = w + g * c->cout_g * K, .lda = K,
				.a_packed = c->wp ? c->wp + g * c->wp_stride : NULL,
				.b = xph, .b_koff = c->koff,
				.c = cpad, .ldc = W->out[1] * c->wq, .alpha = 1.0f, .beta = 0.0f,
				.bias = b ? b + g * c->cout_g : NULL,
				.done = crop_block, .done_ctx = &j,
			};
			hal_gemm(s, &a, cpad + c->cpad_floats);
		}
}

static void direct_rows(void *arg, int64_t r0, int64_t r1)
{
	hal_conv_direct_rows(arg, r0, r1);
}

/* Short reduction: the polyphase planes as CONV_PHASE, then the direct
 * kernel (hal/ops/conv_direct.c) over bands of output rows. */
static void conv_direct(hal_step *s, const struct conv *c, const float *x, const float *b,
			float *y)
{
	const struct win *W = &c->w;
	int64_t ihw = win_in(W), ohw = win_out(W), K = c->cin_g * win_k(W);
	int64_t planes = c->cin_g * W->st[1] * W->st[2] * c->hq * c->wq;
	float *xph = s->scratch;
	memset(xph + planes, 0, (c->xph_floats - (size_t)planes) * sizeof *xph);
	for (int64_t n = 0; n < c->n; n++)
		for (int64_t g = 0; g < c->group; g++) {
			struct phase_job j = { c, x + (n * c->cin + g * c->cin_g) * ihw, xph, NULL,
					       NULL };
			hal_parallel_for(s, c->cin_g, 4, phase_planes, &j);
			hal_conv_direct d = {
				.xph = xph, .koff = c->koff, .wp = c->wp + g * c->wp_stride,
				.bias = b ? b + g * c->cout_g : NULL, .epi = c->epi,
				.y = y + (n * c->cout + g * c->cout_g) * ohw,
				.K = K, .cout = c->cout_g, .OH = W->out[1], .OW = W->out[2],
				.wq = c->wq,
			};
			/* rows of at least ~16K multiply-adds a task */
			int64_t grain = 1 + 16384 / MAX(1, K * c->cout_g * W->out[2]);
			hal_parallel_for(s, W->out[1], grain, direct_rows, &d);
		}
}

static void direct_1x1(void *arg, int64_t b0, int64_t b1)
{
	const hal_conv_direct *d = arg;
	hal_conv_direct_1x1(d, b0 * DIRECT1_BAND, MIN(b1 * DIRECT1_BAND, d->OW));
}

/* 1x1 with a short reduction: the direct kernel over bands of pixels. */
static void conv_direct1(hal_step *s, const struct conv *c, const float *x, const float *b,
			 float *y)
{
	int64_t hw = win_in(&c->w);
	for (int64_t n = 0; n < c->n; n++)
		for (int64_t g = 0; g < c->group; g++) {
			hal_conv_direct d = {
				.xph = x + (n * c->cin + g * c->cin_g) * hw, .koff = c->koff,
				.wp = c->wp + g * c->wp_stride,
				.bias = b ? b + g * c->cout_g : NULL, .epi = c->epi,
				.y = y + (n * c->cout + g * c->cout_g) * hw,
				.K = c->cin_g, .cout = c->cout_g, .OH = 1, .OW = hw, .wq = hw,
			};
			hal_parallel_for(s, (hw + DIRECT1_BAND - 1) / DIRECT1_BAND, 1, direct_1x1, &d);
		}
}

/* 1x1, stride 1, no padding: Y_g [cout_g, HW] = W_g [cout_g, cin_g] X_g. */
static void conv_1x1(hal_step *s, const struct conv *c, const float *x, const float *w,
		     const float *b, float *y)
{
	int64_t hw = win_in(&c->w), K = c->cin_g;
	for (int64_t n = 0; n < c->n; n++)
		for (int64_t g = 0; g < c->group; g++) {
			hal_gemm_args a = {
				.M = c->cout_g, .N = hw, .K = K,
				.a = w + g * c->cout_g * K, .lda = K,
				.a_packed = c->wp ? c->wp + g * c->wp_stride : NULL,
				.b = x + (n * c->cin + g * c->cin_g) * hw, .ldb = hw,
				.b_koff = c->koff,
				.c = y + (n * c->cout + g * c->cout_g) * hw, .ldc = hw,
				.alpha = 1.0f, .beta = 0.0f,
				.bias = b ? b + g * c->cout_g : NULL, .epi = c->epi,
			};
			hal_gemm(s, &a, s->scratch);
		}
}

struct t1x1_job {
	const struct conv *c;
	const float *yt;      /* [hw, cout_g] */
	const float *b;       /* [cout_g] or NULL */
	float *y;             /* [cout_g, hw] */
};

/* hal_gemm's done callback for CONV_1X1T: pixels [i0, i0+mc) x output
 * channels [j0, j0+nc) of yt, complete, go to Y's rows j0.. with the bias
 * and the epilogue. Eight channels at a time: each yt row gives one
 * 32-byte piece to eight Y rows filled in order (a channel at a time read
 * a column of yt, one cache line per element at a cout_g*4-byte stride:
 * 1.8% of MobileNetV2's time). */
static void t1x1_block(const void *arg, int64_t i0, int64_t mc, int64_t j0, int64_t nc)
{
	const struct t1x1_job *j = arg;
	int64_t hw = win_in(&j->c->w), ld = j->c->cout_g;
	for (int64_t o0 = j0; o0 < j0 + nc; o0 += 8) {
		int nb = (int)MIN(8, j0 + nc - o0);
		float bias[8] = { 0 }, *y = j->y + o0 * hw + i0;
		const float *t = j->yt + i0 * ld + o0;
		if (j->b)
			memcpy(bias, j->b + o0, (size_t)nb * sizeof *bias);
		if (nb == 8)
			for (int64_t i = 0; i < mc; i++, t += ld)
				for (int q = 0; q < 8; q++)
					y[q * hw + i] = t[q] + bias[q];
		else
			for (int64_t i = 0; i < mc; i++, t += ld)
				for (int q = 0; q < nb; q++)
					y[q * hw + i] = t[q] + bias[q];
		if (j->c->epi)
			for (int q = 0; q < nb; q++)
				hal_epilogue_apply(j->c->epi, y + q * hw, mc);
	}
}

/* 1x1 over few pixels: Y_g^T [hw, cout_g] = X_g^T [hw, cin_g] W_g^T. */
static void conv_1x1t(hal_step *s, const struct conv *c, const float *x, const float *b,
		      float *y)
{
	int64_t hw = win_in(&c->w), K = c->cin_g;
	float *yt = s->scratch;
	for (int64_t n = 0; n < c->n; n++)
		for (int64_t g = 0; g < c->group; g++) {
			struct t1x1_job j = { c, yt, b ? b + g * c->cout_g : NULL,
					      y + (n * c->cout + g * c->cout_g) * hw };
			hal_gemm_args a = {
				.M = hw, .N = c->cout_g, .K = K,
				.a = x + (n * c->cin + g * c->cin_g) * hw, .lda = hw, .trans_a = 1,
				.b_packed = c->wtp + g * c->wtp_stride,
				.c = yt, .ldc = c->cout_g, .alpha = 1.0f, .beta = 0.0f,
				.done = t1x1_block, .done_ctx = &j,
			};
			if (hw == 1) {
				/* one pixel (a squeeze-excitation's FC): Y^T is Y, and
				 * hal_gemm's M = 1 path streams W^T once */
				a.c = j.y;
				a.done = NULL;
				hal_gemm(s, &a, yt + c->yt_floats);
				for (int64_t oc = 0; oc < c->cout_g; oc++)
					j.y[oc] += j.b ? j.b[oc] : 0.0f;
				if (c->epi)
					hal_epilogue_apply(c->epi, j.y, c->cout_g);
				continue;
			}
			hal_gemm(s, &a, yt + c->yt_floats);
		}
}

static int conv_exec(hal_step *s)
{
	const struct conv *c = s->params;
	const hal_tensor *b = in_opt(s, 2);
	struct conv_job j = { c, s->in[0]->data, s->in[1]->data, b ? b->data : NULL,
			      s->out[0]->data };
	int64_t planes = c->n * c->cout;
	if (planes == 0 || win_out(&c->w) == 0)
		return 0;
	switch (c->path) {
	case CONV_DW: {
		struct dw_job d = { .c = c, .x = j.x, .w = j.w, .b = j.b, .y = j.y,
				    .buf = s->scratch };
		atomic_init(&d.next, 0);
		hal_parallel_for(s, c->dw_slots, 1, dw_worker, &d);
		break;
	}
	case CONV_1X1:
		conv_1x1(s, c, j.x, j.w, j.b, j.y);
		break;
	case CONV_PHASE:
		conv_phase(s, c, j.x, j.w, j.b, j.y);
		break;
	case CONV_1X1T:
		conv_1x1t(s, c, j.x, j.b, j.y);
		break;
	case CONV_DIRECT:
		conv_direct(s, c, j.x, j.b, j.y);
		break;
	case CONV_DIRECT1:
		conv_direct1(s, c, j.x, j.b, j.y);
		break;
	default:
		hal_parallel_for(s, planes, 1, conv_ref_range, &j);
	}
	return 0;
}

/* ================= ConvTranspose ================= */

struct convt {
	struct win w;         /* in: X spatial, out: Y spatial, pb/pe: pads */
	int64_t n, cin, cout, group, cin_g, cout_g;
	int fast;
	const float *wp;      /* packed W_g^T per group, or NULL */
	size_t wp_stride;
	size_t col_bytes;     /* column buffer at the start of scratch */
};

static int convt_infer(hal_step *s)
{
	const hal_tensor *x = in_opt(s, 0), *w = in_opt(s, 1), *b = in_opt(s, 2);
	int rc, ap;
	if ((rc = need_f32(s, x, "X")) || (rc = need_f32(s, w, "W")) ||
	    (b && (rc = need_f32(s, b, "B"))))
		return rc;
	struct convt *c = hal_step_alloc(s, sizeof *c);
	if (!c)
		return AIDOS_E_NOMEM;
	if ((rc = win_init(s, &c->w, x)))
		return rc;
	int nsp = c->w.nsp, o = SP - nsp;
	if (w->rank != x->rank)
		return hal_err(s, AIDOS_E_SHAPE, "W has rank %d, X %d", (int)w->rank, (int)x->rank);
	c->n = x->dims[0];
	c->cin = x->dims[1];
	c->group = hal_attr_int(s->node, "group", 1);
	if (c->group < 1 || c->cin % c->group || w->dims[0] != c->cin)
		return hal_err(s, AIDOS_E_SHAPE, "W [%lld, ...] does not fit C=%lld, group %lld",
			       (long long)w->dims[0], (long long)c->cin, (long long)c->group);
	c->cin_g = c->cin / c->group;
	c->cout_g = w->dims[1];
	c->cout = c->cout_g * c->group;
	if (b && (b->rank != 1 || b->dims[0] != c->cout))
		return hal_err(s, AIDOS_E_SHAPE, "B must be [%lld]", (long long)c->cout);
	int64_t ks[SP], op[SP], oshape[2 + SP];
	if ((rc = attr_ints_n(s, "kernel_shape", nsp, -1, ks)) ||
	    (rc = attr_ints_n(s, "output_padding", nsp, 0, op)) ||
	    (rc = win_attrs(s, &c->w, 1)) || (rc = auto_pad(s, &ap)))
		return rc;
	const int64_t *osp;
	int nos = hal_attr_ints(s->node, "output_shape", &osp);
	if (nos && nos != nsp && nos != nsp + 2)
		return hal_err(s, AIDOS_E_INVALID, "output_shape has %d values", nos);
	for (int i = 0; i < nsp; i++) {
		if (ks[i] >= 0 && ks[i] != w->dims[2 + i])
			return hal_err(s, AIDOS_E_SHAPE, "kernel_shape disagrees with W");
		c->w.k[o + i] = w->dims[2 + i];
		oshape[i] = nos ? osp[nos - nsp + i] : -1;
	}
	for (int i = 0; i < nsp; i++) {
		int64_t *pb = &c->w.pb[o + i], *pe = &c->w.pe[o + i];
		int64_t st = c->w.st[o + i], in = c->w.in[o + i];
		int64_t full = st * (in - 1) + op[i] + (c->w.k[o + i] - 1) * c->w.dl[o + i] + 1;
		int64_t out = oshape[i];
		if (out < 0 && (ap == AP_SAME_UPPER || ap == AP_SAME_LOWER))
			out = in * st;
		if (ap == AP_VALID)
			*pb = *pe = 0;
		if (out >= 0) {
			/* ONNX: total padding split, the odd one at the end for
			 * SAME_UPPER, at the start otherwise. An output larger
			 * than the full result is padded at the end (ORT). */
			int64_t tot = MAX(0, full - out);
			*pb = ap == AP_SAME_UPPER ? tot / 2 : tot - tot / 2;
			*pe = tot - *pb;
		} else {
			out = full - *pb - *pe;
		}
		if (out < 0)
			return hal_err(s, AIDOS_E_SHAPE, "negative output size");
		c->w.out[o + i] = out;
	}
	win_set_out(s->out[0], HAL_DT_F32, c->n, c->cout, &c->w);

	const struct win *W = &c->w;
	int64_t ihw = win_in(W), rows = c->cout_g * win_k(W);
	c->fast = !hal_use_reference && W->k[0] == 1 && W->in[0] == 1 && W->out[0] == 1 &&
		  ihw > 0 && rows > 0 &&
		  c->cin_g > 0;
	if (c->fast) {
		if (w->is_const && w->data) {
			size_t gb = hal_gemm_packed_a_bytes(rows, c->cin_g);
			float *wp = hal_step_alloc(s, gb * (size_t)c->group);
			if (!wp)
				return AIDOS_E_NOMEM;
			for (int64_t g = 0; g < c->group; g++)
				hal_gemm_pack_a(wp + (size_t)g * (gb / sizeof *wp),
						(const float *)w->data + g * c->cin_g * rows, rows, 1,
						rows, c->cin_g);
			c->wp = wp;
			c->wp_stride = gb / sizeof *wp;
		}
		c->col_bytes = ALIGN64((size_t)(rows * ihw) * sizeof(float));
		s->scratch_bytes = c->col_bytes +
				   hal_gemm_scratch_bytes(rows, ihw, c->cin_g, c->wp != NULL, 0);
	}
	s->params = c;
	return 0;
}

struct convt_job {
	const struct convt *c;
	const float *x, *w, *b, *col;
	float *y;
	int64_t n, g;
};

/* Reference scatter: y[n,oc,i*s-pb+k*d] += x[n,ci,i] * w[ci,oc_g,k]. */
static void convt_ref_range(void *arg, int64_t t0, int64_t t1)
{
	const struct convt_job *j = arg;
	const struct convt *c = j->c;
	const struct win *W = &c->w;
	int64_t ihw = win_in(W), ohw = win_out(W), kk = win_k(W);
	for (int64_t t = t0; t < t1; t++) {
		int64_t n = t / c->cout, oc = t % c->cout, g = oc / c->cout_g, ocg = oc % c->cout_g;
		float *y = j->y + t * ohw;
		fill(y, j->b ? j->b[oc] : 0.0f, ohw);
		for (int64_t ci = g * c->cin_g; ci < (g + 1) * c->cin_g; ci++) {
			const float *x = j->x + (n * c->cin + ci) * ihw;
			const float *wk = j->w + (ci * c->cout_g + ocg) * kk;
			for (int64_t id = 0; id < W->in[0]; id++)
			for (int64_t ih = 0; ih < W->in[1]; ih++)
			for (int64_t iw = 0; iw < W->in[2]; iw++) {
				float xv = x[(id * W->in[1] + ih) * W->in[2] + iw];
				for (int64_t kd = 0; kd < W->k[0]; kd++) {
					int64_t od = id * W->st[0] - W->pb[0] + kd * W->dl[0];
					if (od < 0 || od >= W->out[0])
						continue;
					for (int64_t kh = 0; kh < W->k[1]; kh++) {
						int64_t oh = ih * W->st[1] - W->pb[1] + kh * W->dl[1];
						if (oh < 0 || oh >= W->out[1])
							continue;
						for (int64_t kw = 0; kw < W->k[2]; kw++) {
							int64_t ow = iw * W->st[2] - W->pb[2] + kw * W->dl[2];
							if (ow < 0 || ow >= W->out[2])
								continue;
							y[(od * W->out[1] + oh) * W->out[2] + ow] +=
								xv * wk[(kd * W->k[1] + kh) * W->k[2] + kw];
						}
					}
				}
			}
		}
	}
}

/* col2im for output channels [t0, t1) of group j->g, image j->n: col row
 * (ocg, ky, kx), column (iy, ix) adds into y[oy = iy*sh-ph+ky*dh, ox]. */
/* One col2im row of one tap: yr[ix*sw + off] += cr[ix] for valid ix. */
static void col2im_tap(float *yr, const float *cr, int64_t off, int64_t sw, int64_t OW,
		       int64_t Wd)
{
	int64_t lo, hi;
	valid_range(off, sw, OW, Wd, &lo, &hi);  /* ix with 0 <= ix*sw + off < OW */
	if (sw == 1) {
		if (lo < hi)
			add_to(yr + lo + off, cr + lo, hi - lo);
		return;
	}
	for (int64_t ix = lo; ix < hi; ix++)
		yr[ix * sw + off] += cr[ix];
}

/* y[2i] += a[i], y[2i+1] += b[i], i < n: two neighbouring taps of a
 * stride-2 ConvTranspose (the common k2s2 upsampling) in one pass. */
NN_CLONES
static void add_interleave2(float *restrict y, const float *restrict a, const float *restrict b,
			    int64_t n)
{
	int64_t i = 0;
	for (; i + 8 <= n; i += 8) {
		v8f va, vb, y0, y1;
		memcpy(&va, a + i, sizeof va);
		memcpy(&vb, b + i, sizeof vb);
		memcpy(&y0, y + 2 * i, sizeof y0);
		memcpy(&y1, y + 2 * i + 8, sizeof y1);
		y0 += __builtin_shufflevector(va, vb, 0, 8, 1, 9, 2, 10, 3, 11);
		y1 += __builtin_shufflevector(va, vb, 4, 12, 5, 13, 6, 14, 7, 15);
		memcpy(y + 2 * i, &y0, sizeof y0);
		memcpy(y + 2 * i + 8, &y1, sizeof y1);
	}
	for (; i < n; i++) {
		y[2 * i] += a[i];
		y[2 * i + 1] += b[i];
	}
}

/* col2im for output channels [t0, t1) of group j->g, image j->n: col row
 * (ocg, ky, kx), column (iy, ix) adds into y[iy*sh-ph+ky*dh, ix*sw-pw+kx*dw]. */
static void convt_col2im_range(void *arg, int64_t t0, int64_t t1)
{
	const struct convt_job *j = arg;
	const struct convt *c = j->c;
	const struct win *W = &c->w;
	int64_t H = W->in[1], Wd = W->in[2], OH = W->out[1], OW = W->out[2];
	int64_t KH = W->k[1], KW = W->k[2], sw = W->st[2], dw = W->dl[2], hw = H * Wd;
	for (int64_t ocg = t0; ocg < t1; ocg++) {
		int64_t oc = j->g * c->cout_g + ocg;
		float *y = j->y + (j->n * c->cout + oc) * OH * OW;
		fill(y, j->b ? j->b[oc] : 0.0f, OH * OW);
		for (int64_t ky = 0; ky < KH; ky++) {
			const float *col = j->col + (ocg * KH + ky) * KW * hw;
			for (int64_t iy = 0; iy < H; iy++) {
				int64_t oy = iy * W->st[1] - W->pb[1] + ky * W->dl[1];
				if (oy < 0 || oy >= OH)
					continue;
				float *yr = y + oy * OW;
				int64_t kx = 0;
				if (sw == 2 && dw == 1) {
					for (; kx + 1 < KW; kx += 2) {
						/* taps kx, kx+1 hit columns 2*ix+off, 2*ix+off+1 */
						const float *c0 = col + kx * hw + iy * Wd, *c1 = c0 + hw;
						int64_t off = kx - W->pb[2], lo0, hi0, lo1, hi1;
						valid_range(off, 2, OW, Wd, &lo0, &hi0);
						valid_range(off + 1, 2, OW, Wd, &lo1, &hi1);
						int64_t lo = MAX(lo0, lo1), hi = MAX(lo, MIN(hi0, hi1));
						for (int64_t ix = lo0; ix < hi0; ix++)
							if (ix < lo || ix >= hi)
								yr[2 * ix + off] += c0[ix];
						for (int64_t ix = lo1; ix < hi1; ix++)
							if (ix < lo || ix >= hi)
								yr[2 * ix + off + 1] += c1[ix];
						if (lo < hi)
							add_interleave2(yr + 2 * lo + off, c0 + lo, c1 + lo,
									hi - lo);
					}
				}
				for (; kx < KW; kx++)
					col2im_tap(yr, col + kx * hw + iy * Wd, kx * dw - W->pb[2], sw, OW,
						   Wd);
			}
		}
	}
}

static int convt_exec(hal_step *s)
{
	const struct convt *c = s->params;
	const hal_tensor *bt = in_opt(s, 2);
	struct convt_job j = { c, s->in[0]->data, s->in[1]->data, bt ? bt->data : NULL, NULL,
			       s->out[0]->data, 0, 0 };
	const struct win *W = &c->w;
	if (c->n * c->cout == 0 || win_out(W) == 0)
		return 0;
	if (!c->fast) {
		hal_parallel_for(s, c->n * c->cout, 1, convt_ref_range, &j);
		return 0;
	}
	int64_t ihw = win_in(W), rows = c->cout_g * win_k(W);
	float *col = s->scratch;
	j.col = col;
	for (j.n = 0; j.n < c->n; j.n++)
		for (j.g = 0; j.g < c->group; j.g++) {
			hal_gemm_args a = {
				.M = rows, .N = ihw, .K = c->cin_g,
				.a = j.w + j.g * c->cin_g * rows, .lda = rows, .trans_a = 1,
				.a_packed = c->wp ? c->wp + j.g * c->wp_stride : NULL,
				.b = j.x + (j.n * c->cin + j.g * c->cin_g) * ihw, .ldb = ihw,
				.c = col, .ldc = ihw, .alpha = 1.0f, .beta = 0.0f,
			};
			hal_gemm(s, &a, align_floats(s->scratch, c->col_bytes));
			hal_parallel_for(s, c->cout_g, 1, convt_col2im_range, &j);
		}
	return 0;
}

/* ================= BatchNormalization ================= */

struct bn {
	int64_t n, c, hw;
	float eps, momentum;
	int training;
};

static int bn_infer(hal_step *s)
{
	const hal_tensor *x = in_opt(s, 0);
	int rc;
	if ((rc = need_f32(s, x, "X")))
		return rc;
	for (int i = 1; i < 5; i++)
		if ((rc = need_f32(s, in_opt(s, i), "scale/B/mean/var")))
			return rc;
	if (x->rank < 2)
		return hal_err(s, AIDOS_E_SHAPE, "X must have rank >= 2");
	struct bn *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	p->n = x->dims[0];
	p->c = x->dims[1];
	p->hw = 1;
	for (int i = 2; i < x->rank; i++)
		p->hw *= x->dims[i];
	for (int i = 1; i < 5; i++)
		if (hal_numel(s->in[i]) != p->c || s->in[i]->rank != 1)
			return hal_err(s, AIDOS_E_UNSUPPORTED,
				       "scale, B, mean, var must be [C=%lld] (spatial=0 unsupported)",
				       (long long)p->c);
	if (s->opset < 7 && !hal_attr_int(s->node, "spatial", 1))
		return hal_err(s, AIDOS_E_UNSUPPORTED, "spatial=0 unsupported");
	p->eps = hal_attr_float(s->node, "epsilon", 1e-5f);
	p->momentum = hal_attr_float(s->node, "momentum", 0.9f);
	p->training = (int)hal_attr_int(s->node, "training_mode", 0);
	int extra = 0;
	for (int i = 1; i < s->n_out; i++)
		extra |= s->out[i] != NULL;
	if (extra && !(s->opset >= 14 && p->training))
		return hal_err(s, AIDOS_E_UNSUPPORTED, "training outputs before opset 14");
	if (p->training && s->opset < 14)
		p->training = 0;
	hal_tensor_like(s->out[0], x);
	for (int i = 1; i < 3; i++)
		if (out_opt(s, i))
			hal_tensor_like(s->out[i], s->in[3]);
	if (p->training)
		s->scratch_bytes = 2 * (size_t)p->c * sizeof(float);
	s->params = p;
	return 0;
}

struct bn_job {
	const struct bn *p;
	const float *x, *scale, *bias, *mean, *var;
	float *y;
};

static void bn_range(void *arg, int64_t t0, int64_t t1)
{
	const struct bn_job *j = arg;
	const struct bn *p = j->p;
	for (int64_t t = t0; t < t1; t++) {
		int64_t c = t % p->c;
		float a = j->scale[c] / sqrtf(j->var[c] + p->eps);
		float b = j->bias[c] - j->mean[c] * a;
		if (hal_use_reference) {
			for (int64_t i = 0; i < p->hw; i++)
				j->y[t * p->hw + i] = (j->x[t * p->hw + i] - j->mean[c]) /
						      sqrtf(j->var[c] + p->eps) * j->scale[c] +
						      j->bias[c];
		} else {
			scale_shift(j->y + t * p->hw, j->x + t * p->hw, a, b, p->hw);
		}
	}
}

static int bn_exec(hal_step *s)
{
	const struct bn *p = s->params;
	struct bn_job j = { p, s->in[0]->data, s->in[1]->data, s->in[2]->data, s->in[3]->data,
			    s->in[4]->data, s->out[0]->data };
	if (p->training) {
		/* Batch statistics (population variance), then the running
		 * averages: mean*momentum + batch_mean*(1-momentum). */
		float *bm = s->scratch, *bv = bm + p->c;
		double cnt = (double)(p->n * p->hw);
		for (int64_t c = 0; c < p->c; c++) {
			double sum = 0, sq = 0;
			for (int64_t n = 0; n < p->n; n++)
				for (int64_t i = 0; i < p->hw; i++)
					sum += j.x[(n * p->c + c) * p->hw + i];
			double m = cnt > 0 ? sum / cnt : 0;
			for (int64_t n = 0; n < p->n; n++)
				for (int64_t i = 0; i < p->hw; i++) {
					double d = j.x[(n * p->c + c) * p->hw + i] - m;
					sq += d * d;
				}
			bm[c] = (float)m;
			bv[c] = (float)(cnt > 0 ? sq / cnt : 0);
		}
		for (int i = 1; i < 3; i++) {
			hal_tensor *o = out_opt(s, i);
			if (!o)
				continue;
			const float *run = i == 1 ? j.mean : j.var, *cur = i == 1 ? bm : bv;
			for (int64_t c = 0; c < p->c; c++)
				((float *)o->data)[c] = run[c] * p->momentum + cur[c] * (1 - p->momentum);
		}
		j.mean = bm;
		j.var = bv;
	}
	hal_parallel_for(s, p->n * p->c, 4, bn_range, &j);
	return 0;
}

/* ================= small-M products with constant weights =================
 *
 * Y[M,N] = alpha * X[M,K] W[K,N] (+ bias[N]) with M small (a decoder's tokens
 * at batch 1: GPT-2's 32) and W a constant. The micro-kernel covers MR rows
 * of A at a time (6 on AVX2), so M = 32 computes 36 rows, and X is packed
 * again for every N block (the LM head's 32). The transposed product
 * Y^T = W^T X^T instead has W^T as A, packed once at plan time, X^T (K x M,
 * M at most two B panels) as B, packed once per run, and the bias per row of
 * Y^T, which hal_gemm adds itself; the done callback transposes each
 * finished block of Y^T into Y while it is in cache. Measured on the AVX2
 * machine (CPU time, one thread): 32x8192x256 53 -> 68 GFLOP/s, 32x768x256
 * 76 -> 85, 64x1024x256 85 -> 85 (so only M <= 2 NR takes this path). */

struct xw {
	const float *ap;      /* W^T packed as GEMM A, by chunks of `rows` rows */
	size_t ap_stride;     /* floats from one chunk's packed A to the next */
	int64_t rows;         /* rows of W^T (columns of Y) per hal_gemm */
	const float *bias;    /* [N], or NULL */
	hal_vm_fn act;        /* applied to Y after the bias, or NULL */
};

/* Bytes of Y^T that one hal_gemm of xw_run computes at most: Y^T is kept
 * by chunks of rows so that the scratch does not grow with N (GPT-2's LM
 * head, 32 x 8192: 1 MiB of Y^T in one piece, two chunks here). */
#define XW_CHUNK_BYTES ((size_t)512 << 10)

/* Whether an M x N x K product with constant weights goes transposed: M
 * fills its B panels (NR columns each) to within an eighth, since X^T's
 * padding is computed too (40x6625x120, PaddleOCR rec's head, pads 40 to 48
 * and loses: 47 -> 41 GFLOP/s). */
static int xw_wanted(int64_t M, int64_t N, int64_t K)
{
	int64_t nr = hal_gemm_nr(), pad = (M + nr - 1) / nr * nr - M;
	return !hal_use_reference && M > 1 && M <= 2 * nr && 8 * pad <= M && N >= 4 * M && K > 0;
}

static size_t xw_al(size_t n)
{
	return (n + 63) & ~(size_t)63;
}

/* Rows of Y^T per chunk for an M x N product: a multiple of 64 (whole
 * micro-panels of every ISA) whose M columns fit XW_CHUNK_BYTES, or N. */
static int64_t xw_rows(int64_t M, int64_t N)
{
	int64_t r = (int64_t)(XW_CHUNK_BYTES / ((size_t)M * sizeof(float))) / 64 * 64;
	r = r < 64 ? 64 : r;
	return r < N ? r : N;
}

/* Scratch of xw_run: X^T packed, one chunk of Y^T, then hal_gemm's own. */
static size_t xw_scratch_bytes(int64_t M, int64_t N, int64_t K)
{
	int64_t r = xw_rows(M, N);
	return xw_al(hal_gemm_packed_b_bytes(K, M)) + xw_al((size_t)(M * r) * sizeof(float)) +
	       hal_gemm_scratch_bytes(r, M, K, 1, 1);
}

/* Sets w->ap, ap_stride and rows: W^T (W[k][n] at w[k*ldw+n], or w[n*ldw+k]
 * when trans_w) packed chunk by chunk into step memory for an M x N x K
 * xw_run. 0, or AIDOS_E_NOMEM. */
static int xw_pack(hal_step *s, struct xw *xw, const float *w, int64_t ldw, int trans_w,
		   int64_t M, int64_t K, int64_t N)
{
	int64_t r = xw_rows(M, N), nch = (N + r - 1) / r;
	size_t st = xw_al(hal_gemm_packed_a_bytes(r, K)) / sizeof(float);
	float *ap = hal_step_alloc(s, st * (size_t)nch * sizeof *ap);
	if (!ap)
		return AIDOS_E_NOMEM;
	for (int64_t c = 0; c < nch; c++) {
		int64_t n0 = c * r, rows = N - n0 < r ? N - n0 : r;
		hal_gemm_pack_a(ap + (size_t)c * st, trans_w ? w + n0 * ldw : w + n0, ldw, !trans_w,
				rows, K);
	}
	xw->ap = ap;
	xw->ap_stride = st;
	xw->rows = r;
	return 0;
}

struct xw_done_ctx {
	const float *ct;   /* the chunk of Y^T [rows, M]: columns n0.. of Y */
	float *y;          /* Y [M, N], from column n0 */
	int64_t M, N;
	hal_vm_fn act;
};

/* y[r*ldy + c] = x[c*ldx + r] for r, c < 8: three rounds of two-source
 * shuffles (unpack within 128-bit lanes, pairs of pairs, lane halves), each
 * one AVX instruction in the x86-64-v3 build. */
static inline __attribute__((always_inline)) void tr8x8(float *restrict y, int64_t ldy,
							 const float *restrict x, int64_t ldx)
{
	const v8i lo = { 0, 8, 1, 9, 4, 12, 5, 13 }, hi = { 2, 10, 3, 11, 6, 14, 7, 15 };
	const v8i pl = { 0, 1, 8, 9, 4, 5, 12, 13 }, ph = { 2, 3, 10, 11, 6, 7, 14, 15 };
	const v8i ql = { 0, 1, 2, 3, 8, 9, 10, 11 }, qh = { 4, 5, 6, 7, 12, 13, 14, 15 };
	v8f r[8], t[8], u[8];
	for (int i = 0; i < 8; i++)
		memcpy(&r[i], x + i * ldx, sizeof r[i]);
	for (int i = 0; i < 8; i += 2) {
		t[i] = __builtin_shuffle(r[i], r[i + 1], lo);
		t[i + 1] = __builtin_shuffle(r[i], r[i + 1], hi);
	}
	for (int i = 0; i < 8; i += 4) {   /* u[i+c]: columns c and c+4 of rows i..i+3 */
		u[i + 0] = __builtin_shuffle(t[i], t[i + 2], pl);
		u[i + 1] = __builtin_shuffle(t[i], t[i + 2], ph);
		u[i + 2] = __builtin_shuffle(t[i + 1], t[i + 3], pl);
		u[i + 3] = __builtin_shuffle(t[i + 1], t[i + 3], ph);
	}
	for (int c = 0; c < 4; c++) {
		v8f a = __builtin_shuffle(u[c], u[4 + c], ql), b = __builtin_shuffle(u[c], u[4 + c], qh);
		memcpy(y + c * ldy, &a, sizeof a);
		memcpy(y + (c + 4) * ldy, &b, sizeof b);
	}
}

/* Copies the finished block of Y^T (rows i0.. of the chunk, columns j0..
 * of M) into Y while it is in cache: 8 x 8 tiles transposed in registers,
 * the edges element by element; then Y's activation over the block. */
NN_CLONES
static void xw_done(const void *ctx, int64_t i0, int64_t mc, int64_t j0, int64_t nc)
{
	const struct xw_done_ctx *d = ctx;
	int64_t i1 = i0 + mc, j1 = j0 + nc, ie = i0 + mc / 8 * 8, je = j0 + nc / 8 * 8;
	for (int64_t j = j0; j < je; j += 8)
		for (int64_t i = i0; i < ie; i += 8)
			tr8x8(d->y + j * d->N + i, d->N, d->ct + i * d->M + j, d->M);
	for (int64_t j = j0; j < j1; j++) {
		float *yr = d->y + j * d->N;
		const float *cc = d->ct + j;
		for (int64_t i = j < je ? ie : i0; i < i1; i++)
			yr[i] = cc[i * d->M];
	}
	if (d->act)
		for (int64_t j = j0; j < j1; j++)
			d->act(d->y + j * d->N + i0, d->y + j * d->N + i0, mc);
}

/* y[M,N] = alpha * X W + bias with X element (m,k) at x[m*ldx+k] (x[k*ldx+m]
 * when trans_x) and W^T packed by xw_pack. scratch: xw_scratch_bytes. */
static void xw_run(hal_step *s, const struct xw *w, const float *x, int64_t ldx, int trans_x,
		   int64_t M, int64_t N, int64_t K, float alpha, float *y, void *scratch)
{
	float *xp = scratch;   /* X^T as packed B [K, M] */
	float *ct = (float *)((char *)scratch + xw_al(hal_gemm_packed_b_bytes(K, M)));  /* [rows, M] */
	void *gs = (char *)ct + xw_al((size_t)(M * w->rows) * sizeof(float));
	hal_gemm_pack_b(xp, x, ldx, !trans_x, K, M);
	for (int64_t n0 = 0, c = 0; n0 < N; n0 += w->rows, c++) {
		struct xw_done_ctx d = { ct, y + n0, M, N, w->act };
		hal_gemm_args g = {
			.M = MIN(w->rows, N - n0), .N = M, .K = K,
			.a_packed = w->ap + (size_t)c * w->ap_stride, .b_packed = xp,
			.c = ct, .ldc = M, .alpha = alpha, .beta = 0.0f,
			.bias = w->bias ? w->bias + n0 : NULL, .done = xw_done, .done_ctx = &d,
		};
		hal_gemm(s, &g, gs);
	}
}

/* ================= Gemm ================= */

struct gemm_op {
	int64_t M, N, K;
	int ta, tb;
	float alpha, beta;
	int64_t cm, cn;       /* C as [cm, cn], each 1 or M/N; cm = 0: no C */
	const float *bp;      /* packed B, or NULL */
	int use_xw;           /* small M, constant B: the transposed product */
	struct xw xw;
};

static int gemm_infer(hal_step *s)
{
	const hal_tensor *a = in_opt(s, 0), *b = in_opt(s, 1), *c = in_opt(s, 2);
	int rc;
	if ((rc = need_f32(s, a, "A")) || (rc = need_f32(s, b, "B")) ||
	    (c && (rc = need_f32(s, c, "C"))))
		return rc;
	if (a->rank != 2 || b->rank != 2)
		return hal_err(s, AIDOS_E_SHAPE, "A and B must be 2-D");
	struct gemm_op *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	p->ta = hal_attr_int(s->node, "transA", 0) != 0;
	p->tb = hal_attr_int(s->node, "transB", 0) != 0;
	p->alpha = hal_attr_float(s->node, "alpha", 1.0f);
	p->beta = hal_attr_float(s->node, "beta", 1.0f);
	p->M = a->dims[p->ta];
	p->K = a->dims[!p->ta];
	p->N = b->dims[!p->tb];
	if (b->dims[p->tb] != p->K)
		return hal_err(s, AIDOS_E_SHAPE, "A gives K=%lld, B %lld", (long long)p->K,
			       (long long)b->dims[p->tb]);
	if (c) {
		if (c->rank > 2)
			return hal_err(s, AIDOS_E_SHAPE, "C has rank %d", (int)c->rank);
		p->cm = c->rank == 2 ? c->dims[0] : 1;
		p->cn = c->rank >= 1 ? c->dims[c->rank - 1] : 1;
		if ((p->cm != 1 && p->cm != p->M) || (p->cn != 1 && p->cn != p->N))
			return hal_err(s, AIDOS_E_SHAPE, "C does not broadcast to [%lld, %lld]",
				       (long long)p->M, (long long)p->N);
	}
	int64_t d[2] = { p->M, p->N };
	hal_tensor_set_shape(s->out[0], HAL_DT_F32, 2, d);
	int xw = b->is_const && b->data && xw_wanted(p->M, p->N, p->K);
	const float *bias = NULL;
	if (xw && c && p->beta != 0.0f) {
		/* Only a constant row of N (a bias per output column) becomes
		 * the transposed product's per-row bias, scaled by beta here. */
		if (c->is_const && c->data && p->cm == 1 && p->cn == p->N) {
			float *bb = hal_step_alloc(s, (size_t)p->N * sizeof *bb);
			if (!bb)
				return AIDOS_E_NOMEM;
			for (int64_t j = 0; j < p->N; j++)
				bb[j] = p->beta * ((const float *)c->data)[j];
			bias = bb;
		} else {
			xw = 0;
		}
	}
	if (xw) {
		if ((rc = xw_pack(s, &p->xw, b->data, b->dims[1], p->tb, p->M, p->K, p->N)))
			return rc;
		p->xw.bias = bias;
		p->use_xw = 1;
		s->scratch_bytes = xw_scratch_bytes(p->M, p->N, p->K);
	} else if (!hal_use_reference) {
		if (b->is_const && b->data && p->K > 0 && p->N > 0) {
			float *bp = hal_step_alloc(s, hal_gemm_packed_b_bytes(p->K, p->N));
			if (!bp)
				return AIDOS_E_NOMEM;
			hal_gemm_pack_b(bp, b->data, b->dims[1], p->tb, p->K, p->N);
			p->bp = bp;
		}
		s->scratch_bytes = hal_gemm_scratch_bytes(p->M, p->N, p->K, 0, p->bp != NULL);
	}
	s->params = p;
	return 0;
}

static int gemm_exec(hal_step *s)
{
	const struct gemm_op *p = s->params;
	const float *a = s->in[0]->data, *b = s->in[1]->data;
	const hal_tensor *ct = in_opt(s, 2);
	const float *c = ct && p->cm ? ct->data : NULL;
	float *y = s->out[0]->data;
	int64_t lda = s->in[0]->dims[1], ldb = s->in[1]->dims[1];
	if (hal_use_reference) {
		for (int64_t i = 0; i < p->M; i++)
			for (int64_t j = 0; j < p->N; j++) {
				float acc = 0;
				for (int64_t k = 0; k < p->K; k++)
					acc += a[p->ta ? k * lda + i : i * lda + k] *
					       b[p->tb ? j * ldb + k : k * ldb + j];
				float cv = c ? c[(p->cm == 1 ? 0 : i) * p->cn + (p->cn == 1 ? 0 : j)] : 0;
				y[i * p->N + j] = p->alpha * acc + p->beta * cv;
			}
		return 0;
	}
	if (p->use_xw) {
		xw_run(s, &p->xw, a, lda, p->ta, p->M, p->N, p->K, p->alpha, y, s->scratch);
		return 0;
	}
	if (c && p->beta != 0.0f)
		for (int64_t i = 0; i < p->M; i++)
			for (int64_t j = 0; j < p->N; j++)
				y[i * p->N + j] =
					p->beta * c[(p->cm == 1 ? 0 : i) * p->cn + (p->cn == 1 ? 0 : j)];
	hal_gemm_args g = {
		.M = p->M, .N = p->N, .K = p->K,
		.a = a, .lda = lda, .trans_a = p->ta,
		.b = b, .ldb = ldb, .trans_b = p->tb, .b_packed = p->bp,
		.c = y, .ldc = p->N, .alpha = p->alpha, .beta = c && p->beta != 0.0f ? 1.0f : 0.0f,
	};
	hal_gemm(s, &g, s->scratch);
	return 0;
}

/* ================= MatMul ================= */

struct matmul {
	int64_t M, N, K;
	int brank;                            /* broadcast batch rank */
	int64_t bd[HAL_MAX_RANK];             /* output batch dims */
	int64_t sa[HAL_MAX_RANK], sb[HAL_MAX_RANK];  /* matrix strides per batch dim, 0 = bcast */
	int64_t nbatch;
	int fold;                             /* A's batch folds into M (B not batched) */
	const float *bp;                      /* packed B matrices, or NULL */
	int64_t nb_b;                         /* B matrices packed */
	size_t bp_stride;                     /* floats between them */
	int use_xw;                           /* small M, constant B: transposed */
	struct xw xw;
	size_t per_batch;                     /* > 0: scratch bytes of each batch's own GEMM */
	const float *bias;                    /* [N] added to every row, or NULL */
	hal_vm_fn act;                        /* then applied to every row, or NULL */
};

/* A batch of products each too small to split (attention's per-head
 * Q K^T and P V: 64 x 64 x 64 in the BERT bench, 32 x 32 x 64 in GPT-2's)
 * is split by batch instead: one fork/join for the step rather than one per
 * head, each head's GEMM on one thread with its own scratch. Bounds: a
 * product of at most MM_SMALL multiply-adds, all heads' scratch at most
 * MM_BATCH_SCRATCH bytes. */
#define MM_SMALL (128 * 128 * 128)
#define MM_BATCH_SCRATCH ((size_t)4 << 20)

static int matmul_infer(hal_step *s)
{
	const hal_tensor *a = in_opt(s, 0), *b = in_opt(s, 1);
	int rc;
	if ((rc = need_f32(s, a, "A")) || (rc = need_f32(s, b, "B")))
		return rc;
	if (a->rank < 1 || b->rank < 1)
		return hal_err(s, AIDOS_E_SHAPE, "MatMul of a scalar");
	struct matmul *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	/* numpy: a 1-D A is [1,K] (M dropped), a 1-D B is [K,1] (N dropped). */
	int ar = a->rank, br = b->rank;
	p->M = ar == 1 ? 1 : a->dims[ar - 2];
	p->K = a->dims[ar - 1];
	p->N = br == 1 ? 1 : b->dims[br - 1];
	int64_t kb = br == 1 ? b->dims[0] : b->dims[br - 2];
	if (kb != p->K)
		return hal_err(s, AIDOS_E_SHAPE, "A gives K=%lld, B %lld", (long long)p->K,
			       (long long)kb);
	int abr = ar > 2 ? ar - 2 : 0, bbr = br > 2 ? br - 2 : 0;
	p->brank = MAX(abr, bbr);
	int64_t st_a = p->M * p->K, st_b = p->K * p->N;
	p->nbatch = 1;
	for (int i = p->brank - 1; i >= 0; i--) {
		int ia = i - (p->brank - abr), ib = i - (p->brank - bbr);
		int64_t da = ia >= 0 ? a->dims[ia] : 1, db = ib >= 0 ? b->dims[ib] : 1;
		if (da != db && da != 1 && db != 1)
			return hal_err(s, AIDOS_E_SHAPE, "batch dims %lld and %lld do not broadcast",
				       (long long)da, (long long)db);
		p->bd[i] = da == 1 ? db : da;
		p->sa[i] = da == 1 ? 0 : st_a;
		p->sb[i] = db == 1 ? 0 : st_b;
		st_a *= da;
		st_b *= db;
		p->nbatch *= p->bd[i];
	}
	int64_t od[HAL_MAX_RANK];
	int orank = 0;
	for (int i = 0; i < p->brank; i++)
		od[orank++] = p->bd[i];
	if (ar > 1)
		od[orank++] = p->M;
	if (br > 1)
		od[orank++] = p->N;
	hal_tensor_set_shape(s->out[0], HAL_DT_F32, orank, od);
	int64_t nb_b = hal_numel(b) / MAX(1, p->K * p->N);
	/* A third input is never in a model (the arity table refuses it): it
	 * is the bias row of a following Add that hal_fuse_xfmr folded in,
	 * applied where the product path allows it (below) and refused
	 * otherwise, which makes the fusion back off. */
	const hal_tensor *bias = s->n_in > 2 ? s->in[2] : NULL;
	if (bias && (hal_use_reference || !bias->is_const || !bias->data || bias->dtype != HAL_DT_F32 ||
		     hal_numel(bias) != p->N || bias->dims[bias->rank - 1] != p->N))
		return hal_err(s, AIDOS_E_UNSUPPORTED, "bias must be a float32 constant row of N");
	/* B shared by every batch: fold A's batch dims into M (A is contiguous). */
	p->fold = nb_b == 1 && hal_numel(a) == p->nbatch * p->M * p->K;
	if (!hal_use_reference) {
		int64_t M = p->fold ? p->nbatch * p->M : p->M;
		if (bias && (!p->fold || M < 2))
			return hal_err(s, AIDOS_E_UNSUPPORTED, "bias on a batched or M = 1 MatMul");
		p->bias = bias ? bias->data : NULL;
		/* A GELU hal_fuse_xfmr folded in after the bias (the attribute
		 * counts only on its three-input MatMul, never on a model's). */
		if (bias && hal_attr_int(s->node, "aidos_gelu", 0))
			p->act = hal_vm_get(HAL_VM_GELU_ERF_FAST);
		if (b->is_const && b->data && nb_b == 1 && p->fold && xw_wanted(M, p->N, p->K)) {
			if ((rc = xw_pack(s, &p->xw, b->data, p->N, 0, M, p->K, p->N)))
				return rc;
			p->xw.bias = p->bias;
			p->xw.act = p->act;
			p->use_xw = 1;
			s->scratch_bytes = xw_scratch_bytes(M, p->N, p->K);
		} else if (b->is_const && b->data && p->K > 0 && p->N > 0 && nb_b > 0) {
			size_t bb = hal_gemm_packed_b_bytes(p->K, p->N);
			float *bp = hal_step_alloc(s, bb * (size_t)nb_b);
			if (!bp)
				return AIDOS_E_NOMEM;
			for (int64_t i = 0; i < nb_b; i++)
				hal_gemm_pack_b(bp + (size_t)i * (bb / sizeof *bp),
						(const float *)b->data + i * p->K * p->N, p->N, 0,
						p->K, p->N);
			p->bp = bp;
			p->nb_b = nb_b;
			p->bp_stride = bb / sizeof *bp;
		}
		if (!p->use_xw)   /* xw_run's own scratch is set above */
			s->scratch_bytes = hal_gemm_scratch_bytes(M, p->N, p->K, 0, p->bp != NULL);
		size_t pb = xw_al(hal_gemm_scratch_bytes(p->M, p->N, p->K, 0, p->bp != NULL));
		if (!p->use_xw && !p->fold && p->nbatch >= 2 && p->M * p->N * p->K <= MM_SMALL &&
		    pb * (size_t)p->nbatch <= MM_BATCH_SCRATCH) {
			p->per_batch = pb;
			s->scratch_bytes = pb * (size_t)p->nbatch;
		}
	}
	s->params = p;
	return 0;
}

/* Batch t's operands: A at *oa, B at *ob (element offsets). */
static void mm_batch_offsets(const struct matmul *p, int64_t t, int64_t *oa, int64_t *ob)
{
	int64_t r = t;
	*oa = *ob = 0;
	for (int i = p->brank - 1; i >= 0; i--) {
		int64_t k = r % p->bd[i];
		r /= p->bd[i];
		*oa += k * p->sa[i];
		*ob += k * p->sb[i];
	}
}

struct mm_job {
	const struct matmul *p;
	const float *a, *b;
	float *y;
	char *scratch;
};

struct bias_ctx {
	const float *bias;   /* [N] */
	float *c;            /* [M, ldc] */
	int64_t ldc;
	hal_vm_fn act;       /* or NULL */
};

/* Adds the bias row to a finished block of C while it is in cache. */
NN_CLONES
static void bias_done(const void *ctx, int64_t i0, int64_t mc, int64_t j0, int64_t nc)
{
	const struct bias_ctx *d = ctx;
	const float *restrict b = d->bias + j0;
	for (int64_t i = i0; i < i0 + mc; i++) {
		float *restrict c = d->c + i * d->ldc + j0;
		for (int64_t j = 0; j < nc; j++)
			c[j] += b[j];
		if (d->act)
			d->act(c, c, nc);
	}
}

/* Batches [t0, t1) of a per-batch split, each on this thread. */
static void mm_batch_range(void *arg, int64_t t0, int64_t t1)
{
	const struct mm_job *j = arg;
	const struct matmul *p = j->p;
	for (int64_t t = t0; t < t1; t++) {
		int64_t oa, ob;
		mm_batch_offsets(p, t, &oa, &ob);
		hal_gemm_args g = {
			.M = p->M, .N = p->N, .K = p->K, .a = j->a + oa, .lda = p->K,
			.b = j->b + ob, .ldb = p->N,
			.b_packed = p->bp ? p->bp + ob / MAX(1, p->K * p->N) * p->bp_stride : NULL,
			.c = j->y + t * p->M * p->N, .ldc = p->N, .alpha = 1.0f, .beta = 0.0f,
		};
		hal_gemm(NULL, &g, j->scratch + (size_t)t * p->per_batch);
	}
}

static int matmul_exec(hal_step *s)
{
	const struct matmul *p = s->params;
	const float *a = s->in[0]->data, *b = s->in[1]->data;
	float *y = s->out[0]->data;
	if (!hal_use_reference && p->use_xw) {
		xw_run(s, &p->xw, a, p->K, 0, p->nbatch * p->M, p->N, p->K, 1.0f, y, s->scratch);
		return 0;
	}
	if (!hal_use_reference && p->fold) {
		struct bias_ctx bc = { p->bias, y, p->N, p->act };
		hal_gemm_args g = {
			.M = p->nbatch * p->M, .N = p->N, .K = p->K, .a = a, .lda = p->K,
			.b = b, .ldb = p->N, .b_packed = p->bp, .c = y, .ldc = p->N,
			.alpha = 1.0f, .beta = 0.0f,
			.done = p->bias ? bias_done : NULL, .done_ctx = &bc,
		};
		hal_gemm(s, &g, s->scratch);
		return 0;
	}
	if (!hal_use_reference && p->per_batch) {
		struct mm_job j = { p, a, b, y, s->scratch };
		hal_parallel_for(s, p->nbatch, 1, mm_batch_range, &j);
		return 0;
	}
	for (int64_t t = 0; t < p->nbatch; t++) {
		int64_t oa, ob;
		mm_batch_offsets(p, t, &oa, &ob);
		const float *at = a + oa, *bt = b + ob;
		float *yt = y + t * p->M * p->N;
		if (hal_use_reference) {
			for (int64_t i = 0; i < p->M; i++)
				for (int64_t j = 0; j < p->N; j++) {
					float acc = 0;
					for (int64_t k = 0; k < p->K; k++)
						acc += at[i * p->K + k] * bt[k * p->N + j];
					yt[i * p->N + j] = acc;
				}
			continue;
		}
		hal_gemm_args g = {
			.M = p->M, .N = p->N, .K = p->K, .a = at, .lda = p->K,
			.b = bt, .ldb = p->N,
			.b_packed = p->bp ? p->bp + ob / MAX(1, p->K * p->N) * p->bp_stride : NULL,
			.c = yt, .ldc = p->N, .alpha = 1.0f, .beta = 0.0f,
		};
		hal_gemm(s, &g, s->scratch);
	}
	return 0;
}

/* ================= pooling ================= */

enum { POOL_MAX, POOL_AVG };

struct pool {
	struct win w;
	int64_t planes;       /* N*C */
	int kind, include_pad, storage_order, global;
};

static int pool_infer_common(hal_step *s, int kind, int global)
{
	const hal_tensor *x = in_opt(s, 0);
	int rc, ap = AP_NOTSET;
	if (!x)
		return hal_err(s, AIDOS_E_INVALID, "missing input X");
	int dt = x->dtype;
	if (dt != HAL_DT_F32 && !(kind == POOL_MAX && (dt == HAL_DT_F64 || dt == HAL_DT_U8 ||
						       dt == HAL_DT_I8)))
		return hal_err(s, AIDOS_E_UNSUPPORTED, "dtype %s unsupported", hal_dtype_name(dt));
	struct pool *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	if ((rc = win_init(s, &p->w, x)))
		return rc;
	p->kind = kind;
	p->global = global;
	p->planes = x->dims[0] * x->dims[1];
	int nsp = p->w.nsp, o = SP - nsp;
	if (global) {
		for (int i = o; i < SP; i++)
			p->w.k[i] = p->w.in[i];
	} else {
		int64_t ks[SP];
		const int64_t *kv;
		if (hal_attr_ints(s->node, "kernel_shape", &kv) != nsp)
			return hal_err(s, AIDOS_E_INVALID, "kernel_shape must have %d values", nsp);
		if ((rc = attr_ints_n(s, "kernel_shape", nsp, 1, ks)))
			return rc;
		for (int i = 0; i < nsp; i++) {
			if (ks[i] < 1)
				return hal_err(s, AIDOS_E_INVALID, "kernel_shape must be >= 1");
			p->w.k[o + i] = ks[i];
		}
		if ((rc = win_attrs(s, &p->w, 1)) || (rc = auto_pad(s, &ap)))
			return rc;
		/* A window that lies wholly in the padding has no input tap; ONNX
		 * Runtime refuses such pads too, and without the bound a hostile
		 * file makes one output cost kernel_shape's volume of empty taps. */
		for (int i = o; i < SP; i++)
			if (p->w.pb[i] >= p->w.k[i] || p->w.pe[i] >= p->w.k[i])
				return hal_err(s, AIDOS_E_INVALID, "pads must be smaller than kernel_shape");
		p->include_pad = (int)hal_attr_int(s->node, "count_include_pad", 0);
		p->storage_order = (int)hal_attr_int(s->node, "storage_order", 0);
	}
	if ((rc = win_output(s, &p->w, ap, global ? 0 : (int)hal_attr_int(s->node, "ceil_mode", 0))))
		return rc;
	win_set_out(s->out[0], dt, x->dims[0], x->dims[1], &p->w);
	hal_tensor *ind = out_opt(s, 1);
	if (ind) {
		if (kind != POOL_MAX || global)
			return hal_err(s, AIDOS_E_INVALID, "unexpected second output");
		win_set_out(ind, HAL_DT_I64, x->dims[0], x->dims[1], &p->w);
	}
	s->params = p;
	return 0;
}

struct pool_job {
	const struct pool *p;
	const void *x;
	void *y;
	int64_t *ind;
};

/* Visits the taps of window (od, oh, ow) that fall inside the input; the
 * macro body sees the input offset `ii` and spatial coordinates id, ih, iw. */
#define POOL_TAPS(W, od, oh, ow, BODY)                                                \
	for (int64_t kd_ = 0; kd_ < (W)->k[0]; kd_++) {                               \
		int64_t id = (od) * (W)->st[0] - (W)->pb[0] + kd_ * (W)->dl[0];       \
		if (id < 0 || id >= (W)->in[0])                                       \
			continue;                                                     \
		for (int64_t kh_ = 0; kh_ < (W)->k[1]; kh_++) {                       \
			int64_t ih = (oh) * (W)->st[1] - (W)->pb[1] + kh_ * (W)->dl[1]; \
			if (ih < 0 || ih >= (W)->in[1])                               \
				continue;                                             \
			for (int64_t kw_ = 0; kw_ < (W)->k[2]; kw_++) {               \
				int64_t iw = (ow) * (W)->st[2] - (W)->pb[2] + kw_ * (W)->dl[2]; \
				if (iw < 0 || iw >= (W)->in[2])                       \
					continue;                                     \
				int64_t ii = (id * (W)->in[1] + ih) * (W)->in[2] + iw; \
				BODY                                                  \
			}                                                             \
		}                                                                     \
	}

/* Taps of one window axis inside [lo, hi). */
static int64_t taps_in(int64_t o, int64_t st, int64_t pb, int64_t k, int64_t dl, int64_t lo,
		       int64_t hi)
{
	int64_t n = 0;
	for (int64_t i = 0; i < k; i++) {
		int64_t x = o * st - pb + i * dl;
		n += x >= lo && x < hi;
	}
	return n;
}

/* MaxPool for one element type. Indices count from the start of the whole
 * input tensor: the (n, c) plane's offset plus the position in the plane,
 * row-major (storage_order 0) or column-major (storage_order 1). */
#define DEF_MAXPOOL(T, NAME, LOWEST)                                                      \
	static void NAME(void *arg, int64_t t0, int64_t t1)                               \
	{                                                                                 \
		const struct pool_job *j = arg;                                           \
		const struct win *W = &j->p->w;                                           \
		int64_t ihw = win_in(W), ohw = win_out(W);                                \
		for (int64_t t = t0; t < t1; t++) {                                       \
			const T *x = (const T *)j->x + t * ihw;                           \
			T *y = (T *)j->y + t * ohw;                                       \
			for (int64_t od = 0; od < W->out[0]; od++)                        \
			for (int64_t oh = 0; oh < W->out[1]; oh++)                        \
			for (int64_t ow = 0; ow < W->out[2]; ow++) {                      \
				T m = LOWEST;                                             \
				int64_t at = -1, ad = 0, ah = 0, aw = 0;                  \
				POOL_TAPS(W, od, oh, ow, if (at < 0 || x[ii] > m) {       \
					m = x[ii];                                        \
					at = ii;                                          \
					ad = id;                                          \
					ah = ih;                                          \
					aw = iw;                                          \
				})                                                        \
				int64_t o = (od * W->out[1] + oh) * W->out[2] + ow;       \
				y[o] = m;                                                 \
				if (j->ind) {                                             \
					if (j->p->storage_order)                          \
						at = (aw * W->in[1] + ah) * W->in[0] + ad; \
					j->ind[t * ohw + o] = at < 0 ? 0 : t * ihw + at;  \
				}                                                         \
			}                                                                 \
		}                                                                         \
	}

DEF_MAXPOOL(float, maxpool_f32, -INFINITY)
DEF_MAXPOOL(double, maxpool_f64, -INFINITY)
DEF_MAXPOOL(uint8_t, maxpool_u8, 0)
DEF_MAXPOOL(int8_t, maxpool_i8, INT8_MIN)

/* 2-D float MaxPool without Indices: maxpool_f32 without the index
 * bookkeeping, and with no bounds checks for windows inside the input.
 * Same result: the first valid tap, then any strictly greater one (NaN in
 * a later tap is skipped, as there). */
static void maxpool2d_f32(void *arg, int64_t t0, int64_t t1)
{
	const struct pool_job *j = arg;
	const struct win *W = &j->p->w;
	int64_t H = W->in[1], Wd = W->in[2], OH = W->out[1], OW = W->out[2];
	int64_t KH = W->k[1], KW = W->k[2], sh = W->st[1], sw = W->st[2];
	int64_t dh = W->dl[1], dw = W->dl[2], pt = W->pb[1], pl = W->pb[2];
	int64_t r0, r1, q0, q1, c0, c1, e0, e1;
	/* outputs whose first and last taps are both inside */
	valid_range(-pt, sh, H, OH, &r0, &r1);
	valid_range(-pt + (KH - 1) * dh, sh, H, OH, &q0, &q1);
	valid_range(-pl, sw, Wd, OW, &c0, &c1);
	valid_range(-pl + (KW - 1) * dw, sw, Wd, OW, &e0, &e1);
	r0 = MAX(r0, q0), r1 = MAX(r0, MIN(r1, q1));
	c0 = MAX(c0, e0), c1 = MAX(c0, MIN(c1, e1));
	for (int64_t t = t0; t < t1; t++) {
		const float *x = (const float *)j->x + t * H * Wd;
		float *y = (float *)j->y + t * OH * OW;
		for (int64_t oh = 0; oh < OH; oh++) {
			int64_t ih0 = oh * sh - pt;
			for (int64_t ow = 0; ow < OW; ow++) {
				int64_t iw0 = ow * sw - pl;
				float m;
				if (oh >= r0 && oh < r1 && ow >= c0 && ow < c1) {
					const float *w = x + ih0 * Wd + iw0;
					m = w[0];
					for (int64_t ky = 0; ky < KH; ky++)
						for (int64_t kx = 0; kx < KW; kx++) {
							float v = w[ky * dh * Wd + kx * dw];
							m = v > m ? v : m;
						}
				} else {
					int first = 1;
					m = -INFINITY;
					for (int64_t ky = 0; ky < KH; ky++) {
						int64_t ih = ih0 + ky * dh;
						if (ih < 0 || ih >= H)
							continue;
						for (int64_t kx = 0; kx < KW; kx++) {
							int64_t iw = iw0 + kx * dw;
							if (iw < 0 || iw >= Wd)
								continue;
							float v = x[ih * Wd + iw];
							if (first || v > m)
								m = v;
							first = 0;
						}
					}
				}
				y[oh * OW + ow] = m;
			}
		}
	}
}

/* m = v > m ? v : m per lane: maxpool2d_f32's rule (a NaN in a later tap
 * is skipped, one in the first tap kept). */
#define GT_SEL(m, v) ((m) = (v8f)(((v8i)(m) & ~((v) > (m))) | ((v8i)(v) & ((v) > (m)))))

/* The max of four taps visited in this order, GT_SEL's rule in scalar (a
 * NaN in a later tap skipped, one in the first kept). */
static inline float gt_max4(float a, float b, float c, float d)
{
	float m = a;
	m = b > m ? b : m;
	m = c > m ? c : m;
	return d > m ? d : m;
}

/* m = the max of each pair of p[0..16) (even tap first, odd second:
 * GT_SEL's order), eight results; ev and od are the even and odd lane
 * selectors in scope. A macro, as the kernels are target clones. */
#define PAIR_MAX8(p, m)                                                       \
	do {                                                                  \
		v8f a_, b_, v_;                                               \
		memcpy(&a_, (p), sizeof a_);                                  \
		memcpy(&b_, (p) + 8, sizeof b_);                              \
		(m) = __builtin_shuffle(a_, b_, ev);                          \
		v_ = __builtin_shuffle(a_, b_, od);                           \
		GT_SEL(m, v_);                                                \
	} while (0)

/* 2-D float MaxPool whose windows tile the input: kernel = stride, both 1
 * or 2 per axis, no padding, no dilation (openWakeWord's 2x2 and 1x2
 * pools). Eight outputs per step: the row pairs' even and odd columns are
 * split by shuffles and the taps visited in maxpool2d_f32's order (row
 * major), so results match it bit for bit, NaN included. */
NN_CLONES
static void maxpool_tile_f32(void *arg, int64_t t0, int64_t t1)
{
	const struct pool_job *j = arg;
	const struct win *W = &j->p->w;
	int64_t H = W->in[1], Wd = W->in[2], OH = W->out[1], OW = W->out[2];
	int kh = (int)W->k[1], kw = (int)W->k[2];
	const v8i ev = { 0, 2, 4, 6, 8, 10, 12, 14 }, od = { 1, 3, 5, 7, 9, 11, 13, 15 };
	/* Rows narrower than a vector (openWakeWord's 1x2 pool on 10x4 and 2x2
	 * on 28x8: 2 and 4 outputs a row) left every output to the scalar
	 * tail, 6 ns each. When the windows cover the planes exactly, planes
	 * [t0, t1) are one sequence of output rows, each reading the next kh
	 * input rows: with kh = 1 that is one long row; with kh = 2 and 4
	 * outputs a row, a vector holds two output rows (row pairs A B and
	 * C D, 8 floats each: lanes 0-3 from A B, 4-7 from C D); with kh = 2
	 * and one output a row, a window is 4 consecutive floats. */
	int whole = H == kh * OH && Wd == kw * OW;
	if (whole && kh == 1 && kw == 2 && OW < 8) {
		const float *x = (const float *)j->x + t0 * H * Wd;
		float *y = (float *)j->y + t0 * OH * OW;
		int64_t n = (t1 - t0) * OH * OW, i = 0;
		for (; i + 8 <= n; i += 8) {
			v8f m;
			PAIR_MAX8(x + 2 * i, m);
			memcpy(y + i, &m, sizeof m);
		}
		for (; i < n; i++)
			y[i] = x[2 * i + 1] > x[2 * i] ? x[2 * i + 1] : x[2 * i];
		return;
	}
	if (whole && kh == 2 && kw == 2 && OW == 1) {
		/* a window is 4 consecutive floats, in maxpool2d_f32's order */
		const float *x = (const float *)j->x + t0 * H * Wd;
		float *y = (float *)j->y + t0 * OH;
		for (int64_t i = 0; i < (t1 - t0) * OH; i++, x += 4)
			y[i] = gt_max4(x[0], x[1], x[2], x[3]);
		return;
	}
	if (whole && kh == 2 && kw == 2 && OW == 4) {
		const float *x = (const float *)j->x + t0 * H * Wd;   /* row pairs of 16 floats */
		float *y = (float *)j->y + t0 * OH * OW;
		int64_t rows = (t1 - t0) * OH, r = 0;
		for (; r + 2 <= rows; r += 2, x += 32, y += 8) {
			v8f a, b, c, d, m, v;
			memcpy(&a, x, sizeof a);
			memcpy(&b, x + 8, sizeof b);
			memcpy(&c, x + 16, sizeof c);
			memcpy(&d, x + 24, sizeof d);
			m = __builtin_shuffle(a, c, ev);   /* taps in maxpool2d_f32's order */
			v = __builtin_shuffle(a, c, od);
			GT_SEL(m, v);
			v = __builtin_shuffle(b, d, ev);
			GT_SEL(m, v);
			v = __builtin_shuffle(b, d, od);
			GT_SEL(m, v);
			memcpy(y, &m, sizeof m);
		}
		if (r < rows)
			for (int64_t ox = 0; ox < 4; ox++) {
				const float *w = x + 2 * ox;
				y[ox] = gt_max4(w[0], w[1], w[8], w[9]);
			}
		return;
	}
	for (int64_t t = t0; t < t1; t++) {
		const float *x = (const float *)j->x + t * H * Wd;
		float *y = (float *)j->y + t * OH * OW;
		for (int64_t oy = 0; oy < OH; oy++, y += OW) {
			const float *r0 = x + oy * kh * Wd, *r1 = r0 + (kh - 1) * Wd;
			int64_t ox = 0;
			if (kw == 2) {
				for (; ox + 8 <= OW; ox += 8) {
					v8f a, b, m, v;
					PAIR_MAX8(r0 + 2 * ox, m);
					if (kh == 2) {
						memcpy(&a, r1 + 2 * ox, sizeof a);
						memcpy(&b, r1 + 2 * ox + 8, sizeof b);
						v = __builtin_shuffle(a, b, ev);
						GT_SEL(m, v);
						v = __builtin_shuffle(a, b, od);
						GT_SEL(m, v);
					}
					memcpy(y + ox, &m, sizeof m);
				}
			} else {
				for (; ox + 8 <= OW; ox += 8) {
					v8f m, v;
					memcpy(&m, r0 + ox, sizeof m);
					if (kh == 2) {
						memcpy(&v, r1 + ox, sizeof v);
						GT_SEL(m, v);
					}
					memcpy(y + ox, &m, sizeof m);
				}
			}
			for (; ox < OW; ox++) {
				float m = r0[ox * kw];
				for (int ky = 0; ky < kh; ky++)
					for (int kx = ky ? 0 : 1; kx < kw; kx++) {
						float v = r0[ky * Wd + ox * kw + kx];
						m = v > m ? v : m;
					}
				y[ox] = m;
			}
		}
	}
}

static void avgpool_range(void *arg, int64_t t0, int64_t t1)
{
	const struct pool_job *j = arg;
	const struct pool *p = j->p;
	const struct win *W = &p->w;
	int64_t ihw = win_in(W), ohw = win_out(W);
	for (int64_t t = t0; t < t1; t++) {
		const float *x = (const float *)j->x + t * ihw;
		float *y = (float *)j->y + t * ohw;
		for (int64_t od = 0; od < W->out[0]; od++)
		for (int64_t oh = 0; oh < W->out[1]; oh++)
		for (int64_t ow = 0; ow < W->out[2]; ow++) {
			double sum = 0;
			int64_t cnt = 0;
			POOL_TAPS(W, od, oh, ow, sum += x[ii]; cnt++;)
			if (p->include_pad) {
				/* taps inside the padded input (not past the end
				 * padding that ceil_mode may add) */
				cnt = 1;
				int64_t o3[SP] = { od, oh, ow };
				for (int i = 0; i < SP; i++)
					cnt *= taps_in(o3[i], W->st[i], W->pb[i], W->k[i], W->dl[i],
						       -W->pb[i], W->in[i] + W->pe[i]);
			}
			y[(od * W->out[1] + oh) * W->out[2] + ow] = cnt ? (float)(sum / cnt) : 0.0f;
		}
	}
}

/* sum x[0..n) in double, by chunks of up to 256 summed in float across
 * 8 lanes (at most 32 additions per lane): vector speed, near-double
 * accuracy. */
NN_CLONES
static double plane_sum(const float *x, int64_t n)
{
	double sum = 0;
	int64_t i = 0;
	while (i + 8 <= n) {
		int64_t end = i + MIN(256, (n - i) / 8 * 8);
		v8f a0 = { 0 }, a1 = a0;
		for (; i + 16 <= end; i += 16) {
			v8f x0, x1;
			memcpy(&x0, x + i, sizeof x0);
			memcpy(&x1, x + i + 8, sizeof x1);
			a0 += x0;
			a1 += x1;
		}
		if (i < end) {
			v8f x0;
			memcpy(&x0, x + i, sizeof x0);
			a0 += x0;
			i += 8;
		}
		a0 += a1;
		for (int l = 0; l < 8; l++)
			sum += a0[l];
	}
	for (; i < n; i++)
		sum += x[i];
	return sum;
}

static void gpool_range(void *arg, int64_t t0, int64_t t1)
{
	const struct pool_job *j = arg;
	const struct pool *p = j->p;
	int64_t n = win_in(&p->w);
	for (int64_t t = t0; t < t1; t++) {
		const float *x = (const float *)j->x + t * n;
		if (p->kind == POOL_AVG) {
			((float *)j->y)[t] = n ? (float)(plane_sum(x, n) / (double)n) : 0.0f;
		} else {
			float m = -INFINITY;
			for (int64_t i = 0; i < n; i++)
				m = x[i] > m || i == 0 ? x[i] : m;
			((float *)j->y)[t] = m;
		}
	}
}

/* The windows of W tile its 2-D input (maxpool_tile_f32's case): kernel =
 * stride in {1, 2} per axis, no padding, dilation 1, no partial window
 * (ceil_mode's extra one). */
static int pool_tiles(const struct win *W)
{
	for (int i = 1; i < SP; i++)
		if (W->k[i] < 1 || W->k[i] > 2 || W->st[i] != W->k[i] || W->dl[i] != 1 ||
		    W->pb[i] || W->pe[i] || W->out[i] * W->k[i] > W->in[i])
			return 0;
	return 1;
}

static int pool_exec(hal_step *s)
{
	const struct pool *p = s->params;
	hal_tensor *ind = out_opt(s, 1);
	struct pool_job j = { p, s->in[0]->data, s->out[0]->data, ind ? ind->data : NULL };
	int64_t grain = MAX(1, 16384 / MAX(1, win_out(&p->w) * win_k(&p->w)));
	hal_range_fn fn = avgpool_range;
	if (p->global) {
		fn = gpool_range;
	} else if (p->kind == POOL_MAX) {
		switch (s->in[0]->dtype) {
		case HAL_DT_F64: fn = maxpool_f64; break;
		case HAL_DT_U8: fn = maxpool_u8; break;
		case HAL_DT_I8: fn = maxpool_i8; break;
		default:
			fn = !hal_use_reference && !j.ind && p->w.k[0] == 1 && p->w.in[0] == 1 && p->w.out[0] == 1
				     ? maxpool2d_f32 : maxpool_f32;
			if (fn == maxpool2d_f32 && pool_tiles(&p->w))
				fn = maxpool_tile_f32;
		}
	}
	if (win_out(&p->w) > 0)
		hal_parallel_for(s, p->planes, grain, fn, &j);
	return 0;
}

static int maxpool_infer(hal_step *s) { return pool_infer_common(s, POOL_MAX, 0); }
static int avgpool_infer(hal_step *s) { return pool_infer_common(s, POOL_AVG, 0); }
static int gmaxpool_infer(hal_step *s) { return pool_infer_common(s, POOL_MAX, 1); }
static int gavgpool_infer(hal_step *s) { return pool_infer_common(s, POOL_AVG, 1); }

/* ================= registry ================= */

static const hal_op op_conv = { "Conv", 1, HAL_OP_PURE, conv_infer, conv_exec };
static const hal_op op_convt = { "ConvTranspose", 1, HAL_OP_PURE, convt_infer, convt_exec };
static const hal_op op_bn = { "BatchNormalization", 1, HAL_OP_PURE, bn_infer, bn_exec };
static const hal_op op_gemm = { "Gemm", 1, HAL_OP_PURE, gemm_infer, gemm_exec };
static const hal_op op_matmul = { "MatMul", 1, HAL_OP_PURE, matmul_infer, matmul_exec };
static const hal_op op_maxpool = { "MaxPool", 1, HAL_OP_PURE, maxpool_infer, pool_exec };
static const hal_op op_avgpool = { "AveragePool", 1, HAL_OP_PURE, avgpool_infer, pool_exec };
static const hal_op op_gmaxpool = { "GlobalMaxPool", 1, HAL_OP_PURE, gmaxpool_infer, pool_exec };
static const hal_op op_gavgpool = { "GlobalAveragePool", 1, HAL_OP_PURE, gavgpool_infer,
				    pool_exec };
extern const hal_op hal_op_lstm, hal_op_gru, hal_op_rnn;

const hal_op *const hal_ops_nn[] = {
	&op_conv, &op_convt, &op_bn, &op_gemm, &op_matmul, &op_maxpool, &op_avgpool,
	&op_gmaxpool, &op_gavgpool, &hal_op_lstm, &hal_op_gru, &hal_op_rnn, NULL,
};
