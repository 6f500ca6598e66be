/*
 * hal/ops/conv_dw.c - 2-D depthwise Conv (one input and one output channel
 * per group: MobileNet's 3x3 layers) computed straight from X's planes.
 *
 * Conv's generic depthwise path (hal/ops/nn.c, CONV_DW) copies each input
 * plane into a zero-padded buffer split into polyphase planes, then runs
 * one vector loop per output row. On MobileNetV2 that copy is 4x the
 * output for stride 2, and on 7x7 planes the per-plane setup and scalar
 * tails (a 7-wide row) cost more than the 441 multiply-adds: 2-3x ONNX
 * Runtime's time on those layers.
 *
 * Here an output row is cut into blocks of 8 pixels (one vector); an
 * "item" is one block of one row, and a register tile is DW_T consecutive
 * items of a plane (across rows when rows are short: a 7x7 plane is one
 * tile), each with its own accumulator, so DW_T independent FMA chains
 * run per tap. Tap (ky, kx) of item (oy, ox0) reads input row
 * iy = oy*sh - pt + ky*dh at columns ix0 + l*sw (lane l), ix0 = ox0*sw - pl
 * + kx*dw: one unaligned load for stride 1, two and an even-lane shuffle
 * for stride 2. Rows outside X read a zero row; blocks whose taps would
 * read outside [0, w) (the left and right borders) use masked loads, the
 * masks precomputed per (block, kx) at plan time, so padding costs no
 * copy. Bias starts the accumulators; Relu/Clip epilogues are applied in
 * registers, others over the finished plane (in L1).
 *
 * Tasks are runs of whole planes, sized so that a 7x7 layer is not one
 * atomic grab per plane. Compiled for AVX2+FMA (masked loads) and for the
 * baseline (scalar masked loads), chosen at plan time with the GEMM's
 * kernel so hal_gemm_use_isa("generic") tests the baseline one too.
 */
#include <stdatomic.h>
#include <string.h>
#include "hal/gemm.h"
#include "hal/ops/conv_dw.h"
#include "hal/ops/vec.h"
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

/* ISO C mode makes GCC default to -ffp-contract=off; `a += w * x` must be
 * one FMA, as in the reference's order (bias, then taps in (ky, kx) order). */
#pragma GCC optimize("fp-contract=fast")

#define DW_T 8          /* items (8-pixel blocks) per register tile */
#define DW_MAX_KW 8
#define DW_MAX_TAPS 64
#define DW_TASK_PX 2048 /* output pixels per task, at least one plane */
#define DW_S1_NN_FROM 14 /* stride-1 output widths left to hal/ops/nn.c */
#define DW_S2_NN_FROM 28 /* stride-2 ones */
#define DW_PAD_ABOVE 3  /* padded copy when over 1/3 of the items are masked */


struct dwc {
	hal_conv2d_geom g;
	int64_t nblk, items;  /* blocks per output row; items per plane */
	int64_t nplain;       /* items [0, nplain) are plain: every tap inside X,
			       * all 8 lanes stored; whole tiles of them take
			       * unmasked loads */
	int64_t ncolm;        /* items [nplain, ncolm): every tap row inside X,
			       * some column outside: masked loads, rows stepped */
	int64_t per;          /* planes per task */
	int padded;           /* planes copied into a zero-padded [hp, wp] first */
	int64_t hp, wp, rs;   /* (padded) its size; X's row stride per ky */
	size_t pfloats;       /* a worker's padded plane (with slack), floats */
	int slots;            /* workers (scratch buffers) */
	const int32_t *ioy, *ib; /* [items]: row and block of item i, the plain
				  * ones first, each group in row-major order */
	const int64_t *xoff;  /* [items]: X offset of item i's tap (0, 0) (plain) */
	const int64_t *yoff;  /* [items]: Y offset of item i's first pixel */
	const v8i *lmask;     /* [nblk][kw][2]: lane valid for the load of tap kx */
	const int64_t *ox0;   /* [nblk]: first output column of block b: 8b, the
			       * last one shifted left to end at ow (overlapping
			       * its neighbour) when ow >= 8, so every block
			       * stores 8 lanes */
	int32_t smask[8];     /* ow < 8: lanes < ow, for the stores that would
			       * pass the plane's end (the others spill into the
			       * next rows, stored after them) */
	const float *zero;    /* [w + 16] zeros: the rows outside X */
	int reg_epi;          /* epilogue applied in registers (Relu, Clip) */
	float lo, hi;         /* its bounds */
	void (*plane)(const struct dwc *c, const float *x, const float *wk, float bias, float *y);
};

/* Loads of 8 output lanes for one tap: plain (LD1/LD2) or masked
 * (LM1/LM2, MLOAD given per ISA). Stride 2 keeps the even lanes of 16 in
 * the order one in-lane shuffle (vshufps) gives, outputs 0 1 4 5 2 3 6 7
 * (a lane-crossing one costs 2-3 times more on AMD); the accumulator is
 * put back in order (EV_UNDO, one vpermpd) before it is stored. */
#define EV ((v8i){ 0, 2, 8, 10, 4, 6, 12, 14 })
#define EV_UNDO ((v8i){ 0, 1, 4, 5, 2, 3, 6, 7 })
#define LD1(p) ({ v8f v_; memcpy(&v_, (p), sizeof v_); v_; })
#define LD2(p) ({ v8f l_ = LD1(p), h_ = LD1((p) + 8); __builtin_shuffle(l_, h_, EV); })
#define LM1(p, m) MLOAD((p), (m)[0])
#define LM2(p, m) ({ v8f l_ = MLOAD((p), (m)[0]), h_ = MLOAD((p) + 8, (m)[1]); \
		     __builtin_shuffle(l_, h_, EV); })

#define REP8(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7)

/* The taps of row ky for every item of a tile: tap kx's weight broadcast
 * once, LOAD(r) accumulates item r's 8 lanes at column offset o. */
#define DW_TAPS(LOAD)                                                            \
	do {                                                                     \
		const float *wr = wk + ky * KW;                                  \
		for (int64_t kx = 0; kx < KW; kx++) {                            \
			float wv = wr[kx];                                       \
			v8f w = (v8f){ wv, wv, wv, wv, wv, wv, wv, wv };         \
			int64_t o = kx * dw;                                     \
			REP8(LOAD)                                               \
		}                                                                \
	} while (0)

/* A tile of items it..it+DW_T-1 whose taps' rows are all inside X (ITEM
 * sets up item r: DW_PITEM plain, none partial, no checks; DW_CITEM loads
 * masked to [0, w)): pointers stepped by a row per ky. */
#define DW_TILE_ROWS(ITEM, LOAD)                                                 \
	do {                                                                     \
		REP8(ITEM)                                                       \
		for (int64_t ky = 0; ky < KH; ky++) {                            \
			DW_TAPS(LOAD);                                           \
			REP8(DW_PADV)                                            \
		}                                                                \
		REP8(DW_STORE)                                                   \
	} while (0)
#define DW_PITEM(r)                                                              \
	int64_t i##r = it + r < items ? it + r : items - 1;                      \
	const float *p##r = x + c->xoff[i##r];                                   \
	v8f a##r = B;
#define DW_CITEM(r)                                                              \
	DW_PITEM(r)                                                              \
	const v8i *m##r = c->lmask + c->ib[i##r] * KW * 2;
#define DW_PADV(r) p##r += rs;
#define DW_EPI(r)                                                                \
	if (c->reg_epi) {                                                        \
		a##r = (v8f)(((v8i)a##r & ~(a##r < LO)) | ((v8i)LO & (a##r < LO))); \
		a##r = (v8f)(((v8i)a##r & ~(a##r > HI)) | ((v8i)HI & (a##r > HI))); \
	}

/* A tile of any items it..it+DW_T-1 (clamped to the last item; those past
 * it are not stored): rows outside X read the zero row, loads masked to
 * [0, w), partial blocks stored lane by lane. */
#define DW_TILE_MASKED(LOAD)                                                     \
	do {                                                                     \
		REP8(DW_ITEM)                                                    \
		for (int64_t ky = 0; ky < KH; ky++) {                            \
			REP8(DW_ROW)                                             \
			DW_TAPS(LOAD);                                           \
		}                                                                \
		REP8(DW_STORE)                                                   \
	} while (0)

/* item r: its row oy_r, block b_r, accumulator a_r */
#define DW_ITEM(r)                                                               \
	int64_t i##r = it + r < items ? it + r : items - 1;                      \
	int64_t oy##r = c->ioy[i##r], b##r = c->ib[i##r];                        \
	int64_t cb##r = c->ox0[b##r] * sw - pl;                                  \
	const v8i *m##r = c->lmask + b##r * KW * 2;                              \
	v8f a##r = B;
#define DW_ROW(r)                                                                \
	int64_t iy##r = oy##r * sh - pt + ky * dh;                               \
	const float *p##r = (iy##r >= 0 && iy##r < H ? x + iy##r * Wd : c->zero) + cb##r;
#define DW_P1(r) a##r += w * LD1(p##r + o);
#define DW_P2(r) a##r += w * LD2(p##r + o);
#define DW_M1(r) a##r += w * LM1(p##r + o, m##r + kx * 2);
#define DW_M2(r) a##r += w * LM2(p##r + o, m##r + kx * 2);
#define DW_STORE(r)                                                              \
	if (it + r < items) {                                                    \
		if (sw == 2)                                                     \
			a##r = __builtin_shuffle(a##r, EV_UNDO);                 \
		DW_EPI(r)                                                        \
		float *q_ = y + c->yoff[i##r];                                   \
		if (OW >= 8 || c->yoff[i##r] + 8 <= OHW)                         \
			memcpy(q_, &a##r, sizeof a##r);                          \
		else                                                             \
			MSTORE(q_, SM, a##r);                                    \
	}

/* The bias and the clamp bounds as vectors: B, LO, HI (from `bias` and
 * the struct dwc *c in scope). */
#define DW_BIAS_CLAMP_VECS                                                             \
	const v8f B = { bias, bias, bias, bias, bias, bias, bias, bias };              \
	const v8f LO = { c->lo, c->lo, c->lo, c->lo, c->lo, c->lo, c->lo, c->lo };     \
	const v8f HI = { c->hi, c->hi, c->hi, c->hi, c->hi, c->hi, c->hi, c->hi };

/* A row kernel's constants: the nine taps K[] broadcast from wk, then
 * DW_BIAS_CLAMP_VECS and a zero vector Z. */
#define DW_ROW_VECS                                                                    \
	v8f K[9];                                                                      \
	for (int k = 0; k < 9; k++)                                                    \
		K[k] = (v8f){ wk[k], wk[k], wk[k], wk[k], wk[k], wk[k], wk[k], wk[k] }; \
	DW_BIAS_CLAMP_VECS                                                             \
	const v8f Z = { 0 };

/* One output plane y [oh, ow] of channel plane x [h, w], taps wk [kh, kw]. */
#define DW_PLANE(NAME, ATTR)                                                     \
	ATTR static void NAME(const struct dwc *c, const float *x, const float *wk, \
			      float bias, float *y)                              \
	{                                                                        \
		const hal_conv2d_geom *g = &c->g;                                \
		const int64_t H = g->h, Wd = g->w, OW = g->ow, OHW = g->oh * OW; \
		const int64_t KH = g->kh, KW = g->kw;                            \
		const int64_t sh = g->sh, sw = g->sw, dh = g->dh, dw = g->dw;    \
		const int64_t pt = g->pt, pl = g->pl, items = c->items;          \
		const int64_t rs = c->rs;                                        \
		v8i SM;                                                          \
		memcpy(&SM, c->smask, sizeof SM);                                \
		DW_BIAS_CLAMP_VECS                                               \
		for (int64_t it = 0; it < items; it += DW_T) {                   \
			int edge = it + DW_T > c->nplain && !c->padded;          \
			int colm = edge && it + DW_T <= c->ncolm;                \
			if (sw == 1 && !edge)                                    \
				DW_TILE_ROWS(DW_PITEM, DW_P1);                   \
			else if (sw == 1 && colm)                                \
				DW_TILE_ROWS(DW_CITEM, DW_M1);                   \
			else if (sw == 1)                                        \
				DW_TILE_MASKED(DW_M1);                           \
			else if (!edge)                                          \
				DW_TILE_ROWS(DW_PITEM, DW_P2);                   \
			else if (colm)                                           \
				DW_TILE_ROWS(DW_CITEM, DW_M2);                   \
			else                                                     \
				DW_TILE_MASKED(DW_M2);                           \
		}                                                                \
		if (g->epi && !c->reg_epi)                                       \
			hal_epilogue_apply(g->epi, y, g->oh * OW);               \
	}

/* A row kernel's 3x3 sum: bias B plus the taps K[0..8] times the nine input
 * vectors (three per input row: left, centre, right), in that order. */
#define DW_SUM9(t0, t1, t2, t3, t4, t5, t6, t7, t8)                               \
	({ v8f s_ = B;                                                           \
	   s_ += K[0] * (t0); s_ += K[1] * (t1); s_ += K[2] * (t2);              \
	   s_ += K[3] * (t3); s_ += K[4] * (t4); s_ += K[5] * (t5);              \
	   s_ += K[6] * (t6); s_ += K[7] * (t7); s_ += K[8] * (t8);              \
	   s_; })

/* A row kernel's output vector a: the Relu/Clip clamp in registers (as
 * DW_EPI), then a full store, or a masked one (M) at the plane's end. */
#define DW_ROW_OUT(a, dst, full)                                                 \
	do {                                                                     \
		if (c->reg_epi) {                                                \
			a = (v8f)(((v8i)a & ~(a < LO)) | ((v8i)LO & (a < LO)));  \
			a = (v8f)(((v8i)a & ~(a > HI)) | ((v8i)HI & (a > HI)));  \
		}                                                                \
		if (full)                                                        \
			memcpy((dst), &a, sizeof a);                             \
		else                                                             \
			MSTORE((dst), M, a);                                     \
	} while (0)

/* A small plane, 3x3 stride 1 pad 1, ow = w <= 8 (MobileNetV2's 7x7
 * layers): each input row is one masked load (lanes >= w zero) and two
 * lane shifts of it (column ix-1 and ix+1, the padding lanes zeroed), kept
 * in registers across the three output rows that read it; output row oy is
 * the 9 taps over rows oy-1..oy+1 (zero outside X), stored as 8 lanes
 * (the lanes past w are rewritten by the next row) unless that passes the
 * plane's end (masked). The general tiles above, over a padded copy, took
 * 0.13 ms for 960 such planes, 4x ORT's time. */
#define DW_SMALL(NAME, ATTR)                                                     \
	ATTR static void NAME(const struct dwc *c, const float *x, const float *wk, \
			      float bias, float *y)                              \
	{                                                                        \
		const int64_t H = c->g.h, W = c->g.w, HW = H * W;                \
		v8i M;                                                           \
		memcpy(&M, c->smask, sizeof M);                                  \
		const v8i ML = { 0, -1, -1, -1, -1, -1, -1, -1 };                \
		const v8i MR = { -1, -1, -1, -1, -1, -1, -1, 0 };                \
		const v8i IL = { 0, 0, 1, 2, 3, 4, 5, 6 }, IR = { 1, 2, 3, 4, 5, 6, 7, 7 }; \
		DW_ROW_VECS                                                      \
		v8f l0 = Z, c0 = Z, r0 = Z, c1 = MLOAD(x, M);                    \
		v8f l1 = (v8f)((v8i)__builtin_shuffle(c1, IL) & ML);             \
		v8f r1 = (v8f)((v8i)__builtin_shuffle(c1, IR) & MR);             \
		for (int64_t oy = 0; oy < H; oy++) {                             \
			v8f l2 = Z, c2 = Z, r2 = Z;                              \
			if (oy + 1 < H) {                                        \
				c2 = MLOAD(x + (oy + 1) * W, M);                 \
				l2 = (v8f)((v8i)__builtin_shuffle(c2, IL) & ML); \
				r2 = (v8f)((v8i)__builtin_shuffle(c2, IR) & MR); \
			}                                                        \
			v8f a = DW_SUM9(l0, c0, r0, l1, c1, r1, l2, c2, r2);     \
			DW_ROW_OUT(a, y + oy * W, oy * W + 8 <= HW);             \
			l0 = l1; c0 = c1; r0 = r1;                               \
			l1 = l2; c1 = c2; r1 = r2;                               \
		}                                                                \
		if (c->g.epi && !c->reg_epi)                                     \
			hal_epilogue_apply(c->g.epi, y, HW);                     \
	}

/* The same for stride 2 (3x3, pad 1 on the top and left, w <= 16 so
 * ow <= 8: MobileNetV2's 14x14 -> 7x7): each input row is two masked
 * loads split into its even and odd columns (kx = 1 and 2) and the odd
 * ones shifted a lane (kx = 0); output row oy reads rows 2oy-1..2oy+1, the
 * last kept as the next row's first. */
#define DW_SMALL2(NAME, ATTR)                                                    \
	ATTR static void NAME(const struct dwc *c, const float *x, const float *wk, \
			      float bias, float *y)                              \
	{                                                                        \
		const int64_t H = c->g.h, W = c->g.w, OH = c->g.oh, OW = c->g.ow; \
		const int64_t OHW = OH * OW;                                     \
		const v8i LANE = { 0, 1, 2, 3, 4, 5, 6, 7 };                     \
		const v8i WV = { (int32_t)W, (int32_t)W, (int32_t)W, (int32_t)W, \
				 (int32_t)W, (int32_t)W, (int32_t)W, (int32_t)W };   \
		const v8i M0 = LANE < WV, M1 = LANE + 8 < WV;                    \
		v8i M;                                                           \
		memcpy(&M, c->smask, sizeof M);                                  \
		const v8i ML = { 0, -1, -1, -1, -1, -1, -1, -1 };                \
		const v8i IL = { 0, 0, 1, 2, 3, 4, 5, 6 };                       \
		const v8i IE = { 0, 2, 4, 6, 8, 10, 12, 14 }, IO = IE + 1;       \
		DW_ROW_VECS                                                      \
		v8f l0 = Z, e0 = Z, o0 = Z;                                      \
		for (int64_t oy = 0; oy < OH; oy++) {                            \
			v8f l1 = Z, e1 = Z, o1 = Z, l2 = Z, e2 = Z, o2 = Z;      \
			if (2 * oy < H) {                                        \
				const float *p = x + 2 * oy * W;                 \
				v8f a = MLOAD(p, M0), b = MLOAD(p + 8, M1);      \
				e1 = __builtin_shuffle(a, b, IE);                \
				o1 = __builtin_shuffle(a, b, IO);                \
				l1 = (v8f)((v8i)__builtin_shuffle(o1, IL) & ML); \
			}                                                        \
			if (2 * oy + 1 < H) {                                    \
				const float *p = x + (2 * oy + 1) * W;           \
				v8f a = MLOAD(p, M0), b = MLOAD(p + 8, M1);      \
				e2 = __builtin_shuffle(a, b, IE);                \
				o2 = __builtin_shuffle(a, b, IO);                \
				l2 = (v8f)((v8i)__builtin_shuffle(o2, IL) & ML); \
			}                                                        \
			v8f a = DW_SUM9(l0, e0, o0, l1, e1, o1, l2, e2, o2);     \
			DW_ROW_OUT(a, y + oy * OW, oy * OW + 8 <= OHW);          \
			l0 = l2; e0 = e2; o0 = o2;                               \
		}                                                                \
		if (c->g.epi && !c->reg_epi)                                     \
			hal_epilogue_apply(c->g.epi, y, OHW);                    \
	}

/* baseline: masked loads lane by lane (only valid lanes touched);
 * macros, not functions: passing a vector to baseline-ISA code would change
 * the ABI (-Wpsabi) */
#define MLOAD_GENERIC(p, m) ({ const float *p_ = (p); v8i m_ = (m); v8f v_ = { 0 }; \
			       for (int j_ = 0; j_ < 8; j_++)                     \
				       if (m_[j_])                                 \
					       v_[j_] = p_[j_];                    \
			       v_; })
#define MSTORE_GENERIC(p, m, v) do { float *p_ = (p); v8i m_ = (m); v8f v_ = (v); \
				     for (int j_ = 0; j_ < 8; j_++)               \
					     if (m_[j_])                           \
						     p_[j_] = v_[j_];              \
				} while (0)

#define MLOAD(p, m) MLOAD_GENERIC(p, m)
#define MSTORE(p, m, v) MSTORE_GENERIC(p, m, v)
DW_PLANE(dw_plane_generic, )
DW_SMALL(dw_small_generic, )
DW_SMALL2(dw_small2_generic, )
#undef MLOAD
#undef MSTORE

#if defined(__x86_64__) || defined(__i386__)
/* vmaskmovps: masked-off lanes read 0 and never fault */
#define MLOAD(p, m) ((v8f)_mm256_maskload_ps((p), (__m256i)(m)))
#define MSTORE(p, m, v) _mm256_maskstore_ps((p), (__m256i)(m), (__m256)(v))
DW_PLANE(dw_plane_avx2, __attribute__((target("avx2,fma"))))
DW_SMALL(dw_small_avx2, __attribute__((target("avx2,fma"))))
DW_SMALL2(dw_small2_avx2, __attribute__((target("avx2,fma"))))
#undef MLOAD
#undef MSTORE
#endif

struct dw_job {
	const struct dwc *c;
	const float *x, *w, *b;
	float *y, *buf;
	atomic_llong next;    /* next task; relaxed: the fork/join orders the data */
};

/* Worker slots [s0, s1) (one each): takes tasks (runs of c->per planes)
 * from j->next until none is left. Padded: copies each plane into its
 * buffer, zeroed once (the padding is the same cells for every plane). */
static void dw_range(void *arg, int64_t s0, int64_t s1)
{
	struct dw_job *j = arg;
	const struct dwc *c = j->c;
	const hal_conv2d_geom *g = &c->g;
	int64_t planes = g->n * g->cout, hw = g->h * g->w, ohw = g->oh * g->ow, t;
	int64_t ntask = (planes + c->per - 1) / c->per;
	int64_t rows = g->h < c->hp - g->pt ? g->h : c->hp - g->pt;
	int64_t cols = g->w < c->wp - g->pl ? g->w : c->wp - g->pl;
	float *P = c->padded ? j->buf + (size_t)s0 * c->pfloats : NULL;
	int zeroed = 0;
	(void)s1;
	while ((t = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) < ntask) {
		int64_t p1 = (t + 1) * c->per < planes ? (t + 1) * c->per : planes;
		for (int64_t p = t * c->per; p < p1; p++) {
			int64_t ch = p % g->cout;
			const float *x = j->x + p * hw;
			if (P) {
				if (!zeroed) {
					memset(P, 0, c->pfloats * sizeof *P);
					zeroed = 1;
				}
				for (int64_t r = 0; r < rows && cols > 0; r++)
					memcpy(P + (g->pt + r) * c->wp + g->pl, x + r * g->w,
					       (size_t)cols * sizeof *P);
				x = P;
			}
			c->plane(c, x, j->w + ch * g->kh * g->kw, j->b ? j->b[ch] : 0.0f,
				 j->y + p * ohw);
		}
	}
}

static int dw_exec(hal_step *s)
{
	const struct dwc *c = s->params;
	const hal_conv2d_geom *g = &c->g;
	const hal_tensor *b = s->n_in > 2 ? s->in[2] : NULL;
	struct dw_job j = { .c = c, .x = s->in[0]->data, .w = s->in[1]->data,
			    .b = b ? b->data : NULL, .y = s->out[0]->data, .buf = s->scratch };
	if (g->n * g->cout == 0 || g->oh * g->ow == 0)
		return 0;
	atomic_init(&j.next, 0);
	hal_parallel_for(s, c->slots, 1, dw_range, &j);
	return 0;
}

static const hal_op op_conv_dw = { "Conv", 1, HAL_OP_PURE, NULL, dw_exec };

int hal_conv_dw_plan(hal_step *s, const hal_conv2d_geom *g)
{
	if (g->cin != g->cout || g->cout < 1 || g->oh > INT32_MAX || g->ow > INT32_MAX || (g->sw != 1 && g->sw != 2) || g->kw < 1 ||
	    g->kw > DW_MAX_KW || g->kh < 1 || g->kh * g->kw > DW_MAX_TAPS || g->oh < 1 ||
	    g->ow < 1 || g->h < 1 || g->w < 1)
		return 0;
	/* Wide planes stay with hal/ops/nn.c's CONV_DW (one padded or
	 * polyphase copy, then 64 outputs of a row per register tile): in
	 * MobileNetV2 it measured faster than these tiles on stride 1 from
	 * 14 output columns (1.0-1.5x on 112 to 28) and on stride 2 from 28
	 * (its 112->56 layer: 0.47-0.52 ms against 0.62-0.64; 56->28: 0.20
	 * against 0.22). */
	if (g->ow >= (g->sw == 1 ? DW_S1_NN_FROM : DW_S2_NN_FROM))
		return 0;
	int64_t nblk = (g->ow + 7) / 8, items = g->oh * nblk;
	struct dwc *c = hal_step_alloc(s, sizeof *c);
	v8i *lmask = hal_step_alloc(s, (size_t)(nblk * g->kw * 2) * sizeof *lmask + 32);
	int64_t *ox0 = hal_step_alloc(s, (size_t)nblk * sizeof *ox0);
	uint8_t *colin = hal_step_alloc(s, (size_t)nblk);
	int32_t *ioy = hal_step_alloc(s, (size_t)items * sizeof *ioy);
	int32_t *ib = hal_step_alloc(s, (size_t)items * sizeof *ib);
	int64_t *xoff = hal_step_alloc(s, (size_t)items * sizeof *xoff);
	int64_t *yoff = hal_step_alloc(s, (size_t)items * sizeof *yoff);
	/* hal_step_alloc gives zeroed bytes */
	float *zero = hal_step_alloc(s, (size_t)(g->w + 16) * sizeof *zero);
	if (!c || !lmask || !ox0 || !colin || !ioy || !ib || !xoff || !yoff || !zero)
		return AIDOS_E_NOMEM;
	lmask = (v8i *)(((uintptr_t)lmask + 31) & ~(uintptr_t)31);
	c->g = *g;
	c->nblk = nblk;
	c->items = items;
	c->per = DW_TASK_PX / (g->oh * g->ow);
	c->per = c->per < 1 ? 1 : c->per;
	/* both threads busy: at least 8 tasks when there are that many planes */
	int64_t planes = g->n * g->cout;
	if (planes / c->per < 8)
		c->per = planes / 8 > 0 ? planes / 8 : 1;
	for (int64_t bl = 0; bl < nblk; bl++) {
		int in = 1;
		ox0[bl] = g->ow >= 8 && bl * 8 + 8 > g->ow ? g->ow - 8 : bl * 8;
		for (int64_t kx = 0; kx < g->kw; kx++)
			for (int h = 0; h < 2; h++)
				for (int l = 0; l < 8; l++) {
					/* lane l of half h reads column ix0 + 8h + l */
					int64_t ix = ox0[bl] * g->sw - g->pl + kx * g->dw + 8 * h + l;
					int ok = ix >= 0 && ix < g->w;
					lmask[(bl * g->kw + kx) * 2 + h][l] = ok ? -1 : 0;
					in &= ok || (g->sw == 1 && h == 1);
				}
		colin[bl] = (uint8_t)(in && g->ow >= 8);
	}
	int64_t k = 0;
	for (int pass = 0; pass < 3; pass++) {
		if (pass == 1)
			c->nplain = k;
		if (pass == 2)
			c->ncolm = k;
		for (int64_t oy = 0; oy < g->oh; oy++) {
			int64_t iy = oy * g->sh - g->pt;
			int rowin = iy >= 0 && iy + (g->kh - 1) * g->dh < g->h;
			for (int64_t bl = 0; bl < nblk; bl++)
				if ((rowin ? colin[bl] ? 0 : 1 : 2) == pass) {
					ioy[k] = (int32_t)oy;
					ib[k] = (int32_t)bl;
					xoff[k] = iy * g->w + ox0[bl] * g->sw - g->pl;
					yoff[k++] = oy * g->ow + ox0[bl];
				}
		}
	}
	/* Many masked items (narrow planes: 7 to 56 wide): copy each plane
	 * into a zero-padded one and run them all plain over it instead. */
	c->rs = g->dh * g->w;
	c->padded = (items - c->nplain) * DW_PAD_ABOVE > items;
	if (c->padded) {
		c->hp = (g->oh - 1) * g->sh + (g->kh - 1) * g->dh + 1;
		c->wp = (g->ow - 1) * g->sw + (g->kw - 1) * g->dw + 1;
		c->rs = g->dh * c->wp;
		/* lanes past ow (ow < 8) and stride 2's 16th lane read past a
		 * row, the last row's past the plane: slack */
		c->pfloats = ((size_t)(c->hp * c->wp + (g->kw - 1) * g->dw + 16 * g->sw) + 15) &
			     ~(size_t)15;
		c->nplain = c->ncolm = items;
		for (int64_t i = 0, oy = 0; oy < g->oh; oy++)
			for (int64_t bl = 0; bl < nblk; bl++, i++) {
				ioy[i] = (int32_t)oy;
				ib[i] = (int32_t)bl;
				xoff[i] = oy * g->sh * c->wp + ox0[bl] * g->sw;
				yoff[i] = oy * g->ow + ox0[bl];
			}
	}
	int64_t ntask = (planes + c->per - 1) / c->per;
	c->slots = (int)(ntask < HAL_GEMM_SLOTS ? ntask : HAL_GEMM_SLOTS);
	c->ioy = ioy;
	c->ib = ib;
	c->xoff = xoff;
	c->yoff = yoff;
	c->lmask = lmask;
	c->ox0 = ox0;
	for (int l = 0; l < 8; l++)
		c->smask[l] = l < g->ow ? -1 : 0;
	c->zero = zero;
	c->reg_epi = ir_epi_clamp(g->epi, &c->lo, &c->hi);
	c->plane = HAL_GEMM_PICK(dw_plane_generic, dw_plane_avx2);
	if (g->kh == 3 && g->kw == 3 && g->sh == 1 && g->sw == 1 && g->dh == 1 && g->dw == 1 &&
	    g->pt == 1 && g->pl == 1 && g->oh == g->h && g->ow == g->w && g->w <= 8) {
		c->padded = 0;
		c->plane = HAL_GEMM_PICK(dw_small_generic, dw_small_avx2);
	}
	if (g->kh == 3 && g->kw == 3 && g->sh == 2 && g->sw == 2 && g->dh == 1 && g->dw == 1 &&
	    g->pt == 1 && g->pl == 1 && g->w <= 16 && g->ow == (g->w - 1) / 2 + 1) {
		c->padded = 0;
		c->plane = HAL_GEMM_PICK(dw_small2_generic, dw_small2_avx2);
	}
	s->params = c;
	s->scratch_bytes = c->padded ? (size_t)c->slots * c->pfloats * sizeof(float) : 0;
	s->op = &op_conv_dw;
	return 1;
}
