/*
 * hal/ops/conv_fused.c - 1x1 expand Conv then 3x3 depthwise Conv in one
 * step, the expanded tensor kept in a per-thread ring of rows (see
 * hal/ops/conv_fused.h).
 *
 * Why: in MobileNetV2 the expanded tensors of the 112x112 and 56x56
 * stages (16->96 at 112^2: 4.8 MB; 24->144 at 56^2: 1.8 MB) do not fit in
 * L2. Run as two steps, the expand writes E through to L3/DRAM and the
 * depthwise reads it back: in the network both layers ran 1.3-1.8x slower
 * than the same layers alone.
 *
 * How: output rows go in bands of B rows, walked by one thread from the
 * top and one from the bottom (fz_range); on several threads with a small
 * X, the threads instead claim groups of channels and walk every row of
 * theirs (fz_groups). Output row oy reads E rows oy*s-1 .. oy*s+1, so
 * band [o0, o0+B) needs E rows [o0*s-1, (o0+B-1)*s+1]: a window of
 * (B-1)*s+3 rows, of which the walker's previous band computed 3-s. The
 * ring holds R >= window rows of every channel, E row r at slot
 * (r - base) mod R (channel c's rows at ring + c*R*w, row stride w), so
 * each E row is computed once per walker (the two bands where the walkers
 * meet compute their at most 2 shared rows twice). New rows are computed
 * per run of
 * slots that does not wrap by a direct kernel (4 expanded channels x 24
 * pixels in registers, k over the input channels: the reduction is 16 to
 * 32 long, so hal_gemm's packing and 6x16 tiles cost more than they save;
 * in the network it measured 1.25 ms for the 112x112 expand against about
 * 0.7 ms for this kernel), reading X's rows in place, bias and a Relu/Clip
 * activation in registers (others over the finished rows). Rows outside
 * [0, h) (the depthwise's zero padding) are zero rows of the ring.
 * The depthwise then reads 3 ring rows per output row, 8 output pixels a
 * vector: stride 2 loads 16 floats and keeps the even lanes with an
 * in-lane shuffle (order 0 1 4 5 2 3 6 7, put back once per output block,
 * as hal/ops/conv_dw.c does). The column padding is a lane mask (AND)
 * on the first and last blocks, precomputed per tap; the loads themselves
 * may read one row's neighbour or the ring's slack, which the mask zeroes.
 * The last block of a row is shifted left to end at ow (ow >= 8), so
 * every store is a full vector.
 *
 * At stride 2 the ring is channel-blocked instead (FZ_CB): 8 channels
 * of a pixel a vector, so each tap of the depthwise is one unit-stride
 * load and the outputs go through an 8x8 transpose into Y's rows.
 *
 * The stem variant (the expand is a MobileNet stem, 3x3 stride 2 pad 1
 * over few channels) gathers each run of new E rows' taps into a column
 * buffer [cin*9][rows*w] after the ring and runs the same kernel over it:
 * MobileNetV2's stem + 112x112 depthwise, 0.96-1.06 ms as two steps, ran
 * in 0.76-0.79 ms (one thread, interleaved).
 *
 * Compiled for AVX2+FMA and the baseline, picked with the GEMM's kernel
 * (HAL_GEMM_PICK), so hal_gemm_use_isa("generic") tests both.
 */
#include <stdatomic.h>
#include <string.h>
#include "hal/gemm.h"
#include "hal/ops/conv_fused.h"
#include "hal/ops/vec.h"

#pragma GCC optimize("fp-contract=fast")

/* Measured (AIDOS_PROFILE, interleaved with the unfused binary, min of 4-5
 * runs of 100): the fused step beat the expand + depthwise pair on every
 * pair of MobileNetV2 (4.8 MB down to 14x14's 301 KiB: 0.25 -> 0.20 ms on
 * one thread), PaddleOCR det/rec and cls (its 72 KiB pair: 0.035 -> 0.018
 * ms), on 1 and 2 threads; smaller planes were not measured. */
size_t hal_conv_fused_min_bytes = 64 * 1024;

int hal_conv_fused_band_rows = 0;
int hal_conv_fused_ring_rows = 0;
int hal_conv_fused_chunk = 0;
int hal_conv_fused_cb = 0;

#define FZ_COLS 224      /* new E pixels (rows * w) a band aims at */
#define FZ_CHUNK 240     /* E pixels per expand chunk at most, and */
#define FZ_CHUNK_MIN 48  /* at least (unless the hook says otherwise) */
#define FZ_CHUNK_TAPS (12 * 1024)  /* bytes of taps (K x chunk floats) a
				    * chunk aims at: they stay in L1 across
				    * the channel blocks */
#define FZ_FRONT 16      /* ring slack before the first row (floats) */
#define FZ_BACK 32       /* and after the last one */
#define FZ_CB_BACK (17 * 8)  /* channel-blocked: the 8th output pixel of a
			      * row 8 wide reads 8 pixels past it */
#define FZ_SPLIT_X_BYTES (384 * 1024)  /* X up to this size: split channels
					* on several threads (fz_groups) */


#define EV ((v8i){ 0, 2, 8, 10, 4, 6, 12, 14 })
#define EV_UNDO ((v8i){ 0, 1, 4, 5, 2, 3, 6, 7 })

struct fz {
	int64_t n, cin, ce, h, w, oh, ow, s;
	int64_t band;           /* output rows per band (B) */
	int64_t group;          /* > 0: the walkers split channels, this many a
				 * claim (fz_groups); 0: they split rows */
	int64_t ring;           /* rows per channel in the ring (R) */
	int64_t nblk;           /* 8-pixel blocks per output row */
	int64_t chunk;          /* E pixels per expand chunk (FZ_EXPAND) */
	int slots;              /* walkers (fz_range): one ring each */
	size_t ring_floats, slot_bytes;
	const float *wp;        /* We packed for FZ_EXPAND: [ceil(ce/4)][cin][4]
				 * (NULL where cb: the FZ_CB kernels read wcb) */
	const float *be, *wd, *bd;
	const ir_epilogue *epe, *epd;
	/* [2][3]: lane masks of the first and the last block per tap kx, in
	 * the lane order of the accumulator (EV for stride 2); all ones when
	 * every lane is inside the row */
	const v8i *mask;
	int reg_epi;            /* depthwise epilogue in registers (Relu, Clip) */
	float lo, hi;
	int reg_exp;            /* the expand's likewise */
	float elo, ehi;
	void (*expand)(const struct fz *c, const float *x, int64_t xs, float *e, int64_t n,
		       int64_t ob0, int64_t ob1);
	/* stem: the expand is a 3x3 Conv, stride 2, pad 1 over X [cin, xh, xw]
	 * (ek = cin*9 taps), its taps gathered per run of rows into a column
	 * buffer (after the ring) first; else ek = cin, X read in place */
	int stem;
	int64_t ek, xh, xw;
	size_t cols_floats;
	void (*stem_cols)(const struct fz *c, const float *x, int64_t g0, int64_t g1, float *cols);
	void (*rows)(const struct fz *c, const float *ring, const int64_t *roff, int64_t nrow,
		     const float *wk, float bias, float *y);
	/* cb: the ring is channel-blocked (stride 2 only, fz_make): channel
	 * block b (8 channels) holds R rows of w+2 pixels of 8 floats, a zero
	 * pixel either side (the depthwise's column padding), E[8b+l] row r
	 * column x at ring + ((b*R + slot)*(w+2) + x+1)*8 + l; weights packed
	 * per block: expand [ce/8][ek][8], depthwise [ce/8][9][8] */
	int cb;
	const float *wcb, *wdcb, *becb, *bdcb;
	void (*cb_expand)(const struct fz *c, const float *x, int64_t xs, float *row, int64_t rs,
			  int64_t b0, int64_t b1);
	void (*cb_rows)(const struct fz *c, const float *ring, const int64_t *roff, int64_t nrow,
			int64_t b, float *y);
};

/* t[0..2] = the three horizontal taps of 8 output pixels at stride S, from
 * the input row p (p: the pixel left of the first one's centre): three
 * loads at stride 1; at stride 2 four loads and the even/odd split. */
#define FZ_LOAD3(S, p, t)                                                              \
	do {                                                                           \
		if ((S) == 1) {                                                        \
			memcpy(&(t)[0], (p), sizeof(t)[0]);                            \
			memcpy(&(t)[1], (p) + 1, sizeof(t)[1]);                        \
			memcpy(&(t)[2], (p) + 2, sizeof(t)[2]);                        \
		} else {                                                               \
			v8f l0, h0, l2, h2;                                            \
			memcpy(&l0, (p), sizeof l0);                                   \
			memcpy(&h0, (p) + 8, sizeof h0);                               \
			memcpy(&l2, (p) + 2, sizeof l2);                               \
			memcpy(&h2, (p) + 10, sizeof h2);                              \
			(t)[0] = __builtin_shuffle(l0, h0, EV);                        \
			(t)[1] = __builtin_shuffle(l0, h0, EV + 1);                    \
			(t)[2] = __builtin_shuffle(l2, h2, EV);                        \
		}                                                                      \
	} while (0)

/* Accumulates the 9 taps of the 8 output pixels from ox0 of the row whose
 * input rows are r[0..2] into a (lane order of the stride's loads), masked
 * with m[kx] where M is 1. */
#define FZ_TAPS(S, M, ox0, a, m)                                                       \
	do {                                                                           \
		for (int ky = 0; ky < 3; ky++) {                                       \
			v8f t_[3];                                                     \
			FZ_LOAD3(S, r[ky] + (ox0) * (S) - 1, t_);                      \
			for (int kx = 0; kx < 3; kx++) {                               \
				if (M)                                                 \
					t_[kx] = (v8f)((v8i)t_[kx] & (m)[kx]);         \
				a += W[ky * 3 + kx] * t_[kx];                          \
			}                                                              \
		}                                                                      \
	} while (0)

/* FZ_TAPS for two output rows at stride S, the second one row lower: input
 * rows r[0..S+2] (the second reads r[S..S+2]), each loaded and (stride 2)
 * deinterleaved row feeding both sums (stride 1: 12 loads for two output
 * vectors instead of 18; stride 2: 5 rows' loads and shuffles instead of
 * 6), in FZ_TAPS's order for each sum. */
#define FZ_TAPS2(S, M, ox0, a, a2, m)                                                  \
	do {                                                                           \
		for (int ky = 0; ky < (S) + 3; ky++) {                                 \
			v8f t_[3];                                                     \
			FZ_LOAD3(S, r[ky] + (ox0) * (S) - 1, t_);                      \
			for (int kx = 0; kx < 3; kx++) {                               \
				if (M)                                                 \
					t_[kx] = (v8f)((v8i)t_[kx] & (m)[kx]);         \
				FZ_INREG(t_[kx]);                                      \
				if (ky < 3)                                            \
					a += W[ky * 3 + kx] * t_[kx];                  \
				if (ky >= (S))                                         \
					a2 += W[(ky - (S)) * 3 + kx] * t_[kx];         \
			}                                                              \
		}                                                                      \
	} while (0)

/* t clamped to [LO, HI], NaN kept: compares and selects in the baseline;
 * vmaxps(LO, t) / vminps(HI, t) for AVX2 (they return t when either is
 * NaN, and t for -0 against LO = 0, as the selects do) */
#define FZ_CLIPV_GENERIC(t)                                                            \
	do {                                                                           \
		t = (v8f)(((v8i)t & ~(t < LO)) | ((v8i)LO & (t < LO)));                \
		t = (v8f)(((v8i)t & ~(t > HI)) | ((v8i)HI & (t > HI)));                \
	} while (0)
#define FZ_CLIPV_AVX2(t)                                                               \
	(t = __builtin_ia32_minps256(HI, __builtin_ia32_maxps256(LO, t)))
#define FZ_ST(o, v, t)                                                                 \
	do {                                                                           \
		if ((o) < no) {                                                        \
			FZ_CLAMP(t);                                                   \
			memcpy(e + (o) * ldo + p + 8 * (v), &t, sizeof t);             \
		}                                                                      \
	} while (0)
/* The expand k loops (here and FZ_CB_EXP) are unrolled 4 times: with a
 * busy SMT sibling on the host core, loop control costs FMA time (see
 * hal/gemm.c's micro-kernel). */
#define FZ_EXP_BLOCK3()                                                                \
	do {                                                                           \
		v8f a00 = FZ_SPLAT(b4[0]), a01 = a00, a02 = a00;                       \
		v8f a10 = FZ_SPLAT(b4[1]), a11 = a10, a12 = a10;                       \
		v8f a20 = FZ_SPLAT(b4[2]), a21 = a20, a22 = a20;                       \
		v8f a30 = FZ_SPLAT(b4[3]), a31 = a30, a32 = a30;                       \
		const float *wq = w, *xr = x + p;                                      \
		_Pragma("GCC unroll 4")                                                \
		for (int64_t k = 0; k < K; k++, wq += 4, xr += xs) {                   \
			v8f x0 = FZ_LD(xr), x1 = FZ_LD(xr + 8), x2 = FZ_LD(xr + 16);   \
			v8f v = FZ_SPLAT(wq[0]);                                       \
			a00 += v * x0; a01 += v * x1; a02 += v * x2;                   \
			v = FZ_SPLAT(wq[1]);                                           \
			a10 += v * x0; a11 += v * x1; a12 += v * x2;                   \
			v = FZ_SPLAT(wq[2]);                                           \
			a20 += v * x0; a21 += v * x1; a22 += v * x2;                   \
			v = FZ_SPLAT(wq[3]);                                           \
			a30 += v * x0; a31 += v * x1; a32 += v * x2;                   \
		}                                                                      \
		FZ_ST(0, 0, a00); FZ_ST(0, 1, a01); FZ_ST(0, 2, a02);                  \
		FZ_ST(1, 0, a10); FZ_ST(1, 1, a11); FZ_ST(1, 2, a12);                  \
		FZ_ST(2, 0, a20); FZ_ST(2, 1, a21); FZ_ST(2, 2, a22);                  \
		FZ_ST(3, 0, a30); FZ_ST(3, 1, a31); FZ_ST(3, 2, a32);                  \
	} while (0)
#define FZ_EXP_BLOCK1()                                                                \
	do {                                                                           \
		v8f a0 = FZ_SPLAT(b4[0]), a1 = FZ_SPLAT(b4[1]);                        \
		v8f a2 = FZ_SPLAT(b4[2]), a3 = FZ_SPLAT(b4[3]);                        \
		const float *wq = w, *xr = x + p;                                      \
		_Pragma("GCC unroll 4")                                                \
		for (int64_t k = 0; k < K; k++, wq += 4, xr += xs) {                   \
			v8f x0 = FZ_LD(xr);                                            \
			a0 += FZ_SPLAT(wq[0]) * x0;                                    \
			a1 += FZ_SPLAT(wq[1]) * x0;                                    \
			a2 += FZ_SPLAT(wq[2]) * x0;                                    \
			a3 += FZ_SPLAT(wq[3]) * x0;                                    \
		}                                                                      \
		FZ_ST(0, 0, a0); FZ_ST(1, 0, a1); FZ_ST(2, 0, a2); FZ_ST(3, 0, a3);    \
	} while (0)

/* Puts a's lanes in pixel order, applies a register epilogue, stores 8. */
#define FZ_STORE(S, a, q)                                                              \
	do {                                                                           \
		if ((S) == 2)                                                          \
			a = __builtin_shuffle(a, EV_UNDO);                             \
		if (reg)                                                               \
			FZ_CLIPV(a);                                                   \
		memcpy((q), &a, sizeof a);                                             \
	} while (0)

/* One channel's output rows at stride S: row i (0 <= i < nrow) reads ring
 * rows ring + roff[i*S + ky], ky = 0..2, and is stored at y + i*ow. The
 * first and last blocks are masked; the ones between go two at a time. */
#define FZ_ROWS(NAME, S, ATTR)                                                         \
	ATTR static void NAME(const struct fz *c, const float *ring, const int64_t *roff,     \
			      int64_t nrow, const float *wk, float bias, float *y)          \
	{                                                                              \
		const int64_t ow = c->ow, nblk = c->nblk;                              \
		const int reg = c->reg_epi;                                            \
		v8f W[9], B = { bias, bias, bias, bias, bias, bias, bias, bias };      \
		for (int k = 0; k < 9; k++)                                            \
			W[k] = (v8f){ wk[k], wk[k], wk[k], wk[k], wk[k], wk[k], wk[k], wk[k] }; \
		const v8f LO = { c->lo, c->lo, c->lo, c->lo, c->lo, c->lo, c->lo, c->lo };  \
		const v8f HI = { c->hi, c->hi, c->hi, c->hi, c->hi, c->hi, c->hi, c->hi };  \
		int64_t i = 0;                                                         \
		for (; i + 1 < nrow; i += 2, y += 2 * ow) {                            \
			const float *r[S + 3];                                         \
			for (int k = 0; k < S + 3; k++)                                \
				r[k] = ring + roff[i * S + k];                         \
			v8f a = B, a2 = B;                                             \
			FZ_TAPS2(S, 1, 0, a, a2, c->mask);                                \
			FZ_STORE(S, a, y);                                             \
			FZ_STORE(S, a2, y + ow);                                       \
			int64_t b = 1;                                                 \
			for (; b + 1 < nblk; b++) {                                    \
				a = B;                                                 \
				a2 = B;                                                \
				FZ_TAPS2(S, 0, b * 8, a, a2, c->mask);                    \
				FZ_STORE(S, a, y + b * 8);                             \
				FZ_STORE(S, a2, y + ow + b * 8);                       \
			}                                                              \
			if (nblk > 1) {                                                \
				a = B;                                                 \
				a2 = B;                                                \
				FZ_TAPS2(S, 1, ow - 8, a, a2, c->mask + 3);               \
				FZ_STORE(S, a, y + ow - 8);                            \
				FZ_STORE(S, a2, y + ow + ow - 8);                      \
			}                                                              \
			if (c->epd && !reg) {                                          \
				hal_epilogue_apply(c->epd, y, ow);                     \
				hal_epilogue_apply(c->epd, y + ow, ow);                \
			}                                                              \
		}                                                                      \
		for (; i < nrow; i++, y += ow) {                                       \
			const float *r[3] = { ring + roff[i * S], ring + roff[i * S + 1],     \
					      ring + roff[i * S + 2] };                      \
			v8f a = B, a2;                                                 \
			FZ_TAPS(S, 1, 0, a, c->mask);                                  \
			FZ_STORE(S, a, y);                                             \
			int64_t b = 1;                                                 \
			for (; b + 2 < nblk; b += 2) {                                 \
				a = B;                                                 \
				a2 = B;                                                \
				FZ_TAPS(S, 0, b * 8, a, c->mask);                      \
				FZ_TAPS(S, 0, b * 8 + 8, a2, c->mask);                 \
				FZ_STORE(S, a, y + b * 8);                             \
				FZ_STORE(S, a2, y + b * 8 + 8);                        \
			}                                                              \
			for (; b + 1 < nblk; b++) {                                    \
				a = B;                                                 \
				FZ_TAPS(S, 0, b * 8, a, c->mask);                      \
				FZ_STORE(S, a, y + b * 8);                             \
			}                                                              \
			if (nblk > 1) {                                                \
				a = B;                                                 \
				FZ_TAPS(S, 1, ow - 8, a, c->mask + 3);                 \
				FZ_STORE(S, a, y + ow - 8);                            \
			}                                                              \
			if (c->epd && !reg)                                            \
				hal_epilogue_apply(c->epd, y, ow);                     \
		}                                                                      \
	}

#define FZ_CLIPV FZ_CLIPV_GENERIC
#define FZ_INREG(t) ((void)0)
FZ_ROWS(fz_rows1_generic, 1, )
FZ_ROWS(fz_rows2_generic, 2, )
#undef FZ_CLIPV
#undef FZ_INREG
#if defined(__x86_64__) || defined(__i386__)
#define FZ_CLIPV FZ_CLIPV_AVX2
/* one load feeding two FMAs, not folded into each as a memory operand */
#define FZ_INREG(t) __asm__("" : "+x"(t))
FZ_ROWS(fz_rows1_avx2, 1, __attribute__((target("avx2,fma"))))
FZ_ROWS(fz_rows2_avx2, 2, __attribute__((target("avx2,fma"))))
#undef FZ_CLIPV
#undef FZ_INREG
#endif

/* The expand: 4 output channels x NPX pixels (NPX / 8 vectors) in
 * registers, k over the input channels: E[o][p] = be[o] + sum_k
 * we[o][k] x[k][p], channel block ob's weights at wp[(ob*K + k)*4 + o]. */
#define FZ_SPLAT(v) ((v8f){ v, v, v, v, v, v, v, v })
#define FZ_LD(q) ({ v8f l_; memcpy(&l_, (q), sizeof l_); l_; })
#define FZ_CLAMP(t)                                                                    \
	do {                                                                           \
		if (reg)                                                               \
			FZ_CLIPV(t);                                                   \
	} while (0)

/* E pixels [0, n) (n >= 8) of channel blocks [ob0, ob1) (4 channels
 * each, the last one possibly partial) of the rows at x (reduction index k
 * at x + k*xs) into e (channel ob0*4 + o at e + o*ldo), in chunks of
 * c->chunk pixels whose taps stay in L1 across the channel blocks; a last partial vector is computed
 * again over the 8 pixels ending at the chunk's end (never read past n).
 * Chunks are at least 8 pixels long, so that vector stays inside its chunk:
 * an epilogue applied over the finished chunk then never meets a pixel it
 * has already been applied to. */
#define FZ_EXPAND(NAME, ATTR)                                                          \
	ATTR static void NAME(const struct fz *c, const float *x, int64_t xs, float *e, int64_t n, \
			      int64_t ob0, int64_t ob1)                                     \
	{                                                                              \
		const int64_t K = c->ek, ldo = c->ring * c->w;                         \
		const int reg = c->reg_exp;                                            \
		const v8f LO = { c->elo, c->elo, c->elo, c->elo, c->elo, c->elo, c->elo, c->elo }; \
		const v8f HI = { c->ehi, c->ehi, c->ehi, c->ehi, c->ehi, c->ehi, c->ehi, c->ehi }; \
		for (int64_t c0 = 0, c1; c0 < n; c0 = c1) {                            \
			c1 = c0 + c->chunk;                                            \
			if (c1 > n - 8)  /* no chunk under 8 pixels: see above */      \
				c1 = n;                                                \
			for (int64_t ob = ob0; ob < ob1; ob++, e += 4 * ldo) {         \
				const float *w = c->wp + ob * K * 4;                   \
				int no = c->ce - ob * 4 < 4 ? (int)(c->ce - ob * 4) : 4; \
				float b4[4] = { 0, 0, 0, 0 };                          \
				for (int o = 0; o < no && c->be; o++)                  \
					b4[o] = c->be[ob * 4 + o];                     \
				int64_t p = c0;                                        \
				for (; p + 24 <= c1; p += 24)                          \
					FZ_EXP_BLOCK3();                               \
				for (; p + 8 <= c1; p += 8)                            \
					FZ_EXP_BLOCK1();                               \
				if (p < c1) {                                          \
					p = c1 - 8;                                    \
					FZ_EXP_BLOCK1();                               \
				}                                                      \
				if (c->epe && !reg)                                    \
					for (int o = 0; o < no; o++)                   \
						hal_epilogue_apply(c->epe, e + o * ldo + c0, c1 - c0); \
			}                                                              \
			e -= (ob1 - ob0) * 4 * ldo;                                    \
		}                                                                      \
	}

#define FZ_CLIPV FZ_CLIPV_GENERIC
FZ_EXPAND(fz_expand_generic, )
#undef FZ_CLIPV
#if defined(__x86_64__) || defined(__i386__)
#define FZ_CLIPV FZ_CLIPV_AVX2
FZ_EXPAND(fz_expand_avx2, __attribute__((target("avx2,fma"))))
#undef FZ_CLIPV
#endif


/* Channel-blocked (c->cb) kernels. E pixel x of channel block b of one row
 * at row + b*rs + (x+1)*8: the expand computes 3 blocks x 4 pixels (12
 * vectors) per step, then 2 x 6 and 1 x 8 for the last blocks, k over the
 * reduction, each step a weight vector per
 * block and a broadcast X value per pixel (the last step shifted left to
 * end at w, recomputing equal values); the depthwise reads each tap of 8
 * output pixels as one unit-stride vector (8 channels of one E pixel),
 * whatever the stride, and transposes the 8 pixel vectors into 8 NCHW
 * rows. MobileNetV2's stride-2 depthwise in NCHW needed 4 loads and 3
 * shuffles per input row and output vector, and a permute per output. */
#define FZ_CB_EXP(NB, NP)                                                              \
	do {                                                                           \
		v8f acc_[NB][NP];                                                      \
		_Pragma("GCC unroll 16") for (int b_ = 0; b_ < (NB); b_++) {           \
			v8f bv_;                                                       \
			memcpy(&bv_, c->becb + (b + b_) * 8, 32);                      \
			_Pragma("GCC unroll 16") for (int j_ = 0; j_ < (NP); j_++)     \
				acc_[b_][j_] = bv_;                                    \
		}                                                                      \
		const float *xr_ = x + p;                                              \
		const float *w0_ = c->wcb + b * K * 8;                                 \
		_Pragma("GCC unroll 4")                                                \
		for (int64_t k = 0; k < K; k++, xr_ += xs, w0_ += 8) {                 \
			v8f wv_[NB];                                                   \
			_Pragma("GCC unroll 16") for (int b_ = 0; b_ < (NB); b_++)     \
				memcpy(&wv_[b_], w0_ + b_ * K * 8, 32);                 \
			_Pragma("GCC unroll 16") for (int j_ = 0; j_ < (NP); j_++) {   \
				v8f xv_ = FZ_SPLAT(xr_[j_]);                           \
				_Pragma("GCC unroll 16") for (int b_ = 0; b_ < (NB); b_++) \
					acc_[b_][j_] += wv_[b_] * xv_;                 \
			}                                                              \
		}                                                                      \
		_Pragma("GCC unroll 16") for (int b_ = 0; b_ < (NB); b_++)             \
			_Pragma("GCC unroll 16") for (int j_ = 0; j_ < (NP); j_++) {   \
				v8f o_ = acc_[b_][j_];                                 \
				if (reg)                                               \
					FZ_CLIPV(o_);                                  \
				memcpy(row + (b + b_) * rs + (p + j_ + 1) * 8, &o_, 32); \
			}                                                              \
	} while (0)

/* Pixels [0, w) (w >= NP) of blocks [b, b + NB) by FZ_CB_EXP steps, the
 * last one shifted left to end at w. */
#define FZ_CB_ROW(NB, NP)                                                              \
	for (int64_t p = 0; p < w; p += (NP)) {                                        \
		if (p > w - (NP))                                                      \
			p = w - (NP);                                                  \
		FZ_CB_EXP(NB, NP);                                                     \
	}

#define FZ_CB(NEXP, NROWS, ATTR)                                                       \
	/* One E row (w pixels, w >= 6) of channel blocks [b0, b1) from X's    \
	 * row at x (reduction index k at x + k*xs) into row (block b at       \
	 * row + b*rs); the pad pixels are not touched. */                     \
	ATTR static void NEXP(const struct fz *c, const float *x, int64_t xs, float *row,        \
			      int64_t rs, int64_t b0, int64_t b1)                            \
	{                                                                              \
		const int64_t K = c->ek, w = c->w;                                     \
		const int reg = c->reg_exp;                                            \
		const v8f LO = FZ_SPLAT(c->elo), HI = FZ_SPLAT(c->ehi);                \
		int64_t b = b0;                                                        \
		for (; b + 3 <= b1; b += 3)                                            \
			FZ_CB_ROW(3, 4)                                                \
		for (; b + 2 <= b1; b += 2)                                            \
			FZ_CB_ROW(2, 6)                                                \
		for (; b < b1; b++)                                                    \
			FZ_CB_ROW(1, 8)                                                \
	}                                                                              \
	/* Output rows [0, nrow) of channel block b: output row i reads the    \
	 * block's ring rows ring + roff[i*s + ky] (ky = 0..2) and goes to     \
	 * y + (8b + l)*oh*ow + i*ow for channel 8b + l. Blocks of 8 output    \
	 * pixels, the last one shifted left to end at ow (or one block of 8  \
	 * when ow < 8, ow of them stored: the others read up to 8 pixels past  \
	 * the row, inside the ring or its FZ_CB_BACK slack). */                \
	ATTR static void NROWS(const struct fz *c, const float *ring, const int64_t *roff,       \
			       int64_t nrow, int64_t b, float *y)                            \
	{                                                                              \
		const int64_t ow = c->ow, s = c->s, ys = c->oh * ow;                   \
		const int reg = c->reg_epi;                                            \
		const v8f LO = FZ_SPLAT(c->lo), HI = FZ_SPLAT(c->hi);                  \
		const float *wd = c->wdcb + b * 72;                                    \
		v8f bias;                                                              \
		memcpy(&bias, c->bdcb + b * 8, 32);                                    \
		y += b * 8 * ys;                                                       \
		for (int64_t i = 0; i < nrow; i++, y += ow) {                          \
			for (int64_t ox = 0; ox < ow; ox += 8) {                       \
				if (ox > ow - 8 && ow >= 8)                            \
					ox = ow - 8;                                   \
				v8f a_[8];                                             \
				for (int j = 0; j < 8; j++)                            \
					a_[j] = bias;                                  \
				for (int ky = 0; ky < 3; ky++) {                       \
					/* tap kx of pixel ox+j: E column           \
					 * (ox+j)*s - 1 + kx, stored at +1 */        \
					const float *e = ring + roff[i * s + ky] + ox * s * 8; \
					for (int kx = 0; kx < 3; kx++, e += 8) {       \
						v8f wv;                                \
						memcpy(&wv, wd + (ky * 3 + kx) * 8, 32); \
						for (int j = 0; j < 8; j++) {          \
							v8f t;                         \
							memcpy(&t, e + j * s * 8, 32); \
							a_[j] += wv * t;               \
						}                                      \
					}                                              \
				}                                                      \
				if (reg)                                               \
					for (int j = 0; j < 8; j++)                    \
						FZ_CLIPV(a_[j]);                       \
				FZ_TR8(a_);                                            \
				if (ow >= 8)                                           \
					for (int l = 0; l < 8; l++)                    \
						memcpy(y + l * ys + ox, &a_[l], 32);   \
				else  /* ow < 8: the lanes past ow read slack */       \
					for (int l = 0; l < 8; l++)                    \
						memcpy(y + l * ys, &a_[l],             \
						       (size_t)ow * sizeof(float));    \
			}                                                              \
			if (c->epd && !reg)                                            \
				for (int l = 0; l < 8; l++)                            \
					hal_epilogue_apply(c->epd, y + l * ys, ow);    \
		}                                                                      \
	}

/* a[0..7] transposed in place: lane l of a[j] goes to lane j of a[l]. */
#define FZ_TR8(a)                                                                      \
	do {                                                                           \
		const v8i u0_ = { 0, 8, 1, 9, 4, 12, 5, 13 }, u1_ = { 2, 10, 3, 11, 6, 14, 7, 15 }; \
		const v8i s0_ = { 0, 1, 8, 9, 4, 5, 12, 13 }, s1_ = { 2, 3, 10, 11, 6, 7, 14, 15 }; \
		const v8i q0_ = { 0, 1, 2, 3, 8, 9, 10, 11 }, q1_ = { 4, 5, 6, 7, 12, 13, 14, 15 }; \
		v8f t_[8], r_[8];                                                      \
		for (int h_ = 0; h_ < 4; h_++) {                                       \
			t_[2 * h_] = __builtin_shuffle(a[2 * h_], a[2 * h_ + 1], u0_);   \
			t_[2 * h_ + 1] = __builtin_shuffle(a[2 * h_], a[2 * h_ + 1], u1_); \
		}                                                                      \
		for (int h_ = 0; h_ < 2; h_++)                                         \
			for (int g_ = 0; g_ < 2; g_++) {                               \
				r_[4 * h_ + 2 * g_] =                                  \
					__builtin_shuffle(t_[4 * h_ + g_], t_[4 * h_ + 2 + g_], s0_); \
				r_[4 * h_ + 2 * g_ + 1] =                              \
					__builtin_shuffle(t_[4 * h_ + g_], t_[4 * h_ + 2 + g_], s1_); \
			}                                                              \
		for (int m_ = 0; m_ < 4; m_++) {                                       \
			a[m_] = __builtin_shuffle(r_[m_], r_[4 + m_], q0_);            \
			a[4 + m_] = __builtin_shuffle(r_[m_], r_[4 + m_], q1_);        \
		}                                                                      \
	} while (0)

#define FZ_CLIPV FZ_CLIPV_GENERIC
FZ_CB(fz_cb_expand_generic, fz_cb_rows_generic, )
#undef FZ_CLIPV
#if defined(__x86_64__) || defined(__i386__)
#define FZ_CLIPV FZ_CLIPV_AVX2
FZ_CB(fz_cb_expand_avx2, fz_cb_rows_avx2, __attribute__((target("avx2,fma"))))
#undef FZ_CLIPV
#endif

struct fz_job {
	const struct fz *c;
	const float *x;   /* [n, cin, h, w] */
	float *y;         /* [n, ce, oh, ow] */
	unsigned char *scratch;
	/* bands claimed per walker pair (fz_range), a line each */
	struct { _Alignas(64) _Atomic int64_t n; } claimed[(HAL_GEMM_SLOTS + 1) / 2];
};

/* Ring slot of E row r. */
static inline int64_t slot_of(int64_t r, int64_t base, int64_t R)
{
	int64_t k = (r - base) % R;
	return k < 0 ? k + R : k;
}

/* Stem: the taps of E rows [g0, g1) as cols [cin*9][(g1-g0)*w], tap
 * (ci, ky, kx) of pixel (r, ox) = X[ci][2r-1+ky][2ox-1+kx], 0 outside X.
 * The columns whose 16 source floats lie inside the row go 8 at a time
 * (two loads, the even lanes kept by one shuffle); scalar, this gather
 * was most of the stem's non-kernel time (about 0.3 ms of MobileNetV2's
 * 10.5 on one thread). */
#define FZ_STEM_COLS(NAME, ATTR)                                                       \
	ATTR static void NAME(const struct fz *c, const float *x, int64_t g0, int64_t g1,   \
			      float *cols)                                                \
	{                                                                              \
		const int64_t w = c->w, n = (g1 - g0) * w, xw = c->xw;                 \
		for (int64_t ci = 0; ci < c->cin; ci++)                                \
			for (int64_t ky = 0; ky < 3; ky++)                             \
				for (int64_t kx = 0; kx < 3; kx++) {                   \
					float *col = cols + ((ci * 3 + ky) * 3 + kx) * n; \
					for (int64_t r = g0; r < g1; r++, col += w) {   \
						int64_t iy = 2 * r - 1 + ky;            \
						if (iy < 0 || iy >= c->xh) {            \
							memset(col, 0, (size_t)w * sizeof *col); \
							continue;                       \
						}                                       \
						const float *xr = x + (ci * c->xh + iy) * xw; \
						int64_t ox = 0;                         \
						for (; ox < w && 2 * ox + kx - 1 < 0; ox++) \
							col[ox] = 0.0f;                 \
						for (; ox + 8 <= w && 2 * ox + kx + 15 <= xw; ox += 8) { \
							v8f l_, h_;                     \
							memcpy(&l_, xr + 2 * ox + kx - 1, sizeof l_); \
							memcpy(&h_, xr + 2 * ox + kx + 7, sizeof h_); \
							l_ = __builtin_shuffle(l_, h_, FZ_EVEN); \
							memcpy(col + ox, &l_, sizeof l_); \
						}                                       \
						for (; ox < w && 2 * ox + kx - 1 < xw; ox++) \
							col[ox] = xr[2 * ox + kx - 1];  \
						for (; ox < w; ox++)                    \
							col[ox] = 0.0f;                 \
					}                                               \
				}                                                       \
	}

#define FZ_EVEN ((v8i){ 0, 2, 4, 6, 8, 10, 12, 14 })
FZ_STEM_COLS(stem_cols_generic, )
#if defined(__x86_64__) || defined(__i386__)
FZ_STEM_COLS(stem_cols_avx2, __attribute__((target("avx2,fma"))))
#endif

/* Computes E rows [r0, r1) of channels [c0, c1) (c0 a multiple of 4) of
 * image x into the ring (one FZ_EXPAND call per run of slots that does not
 * wrap; rows outside [0, h) zeroed). */
static void expand_rows(const struct fz *c, const float *x, float *ring, float *cols, int64_t base,
			int64_t c0, int64_t c1, int64_t r0, int64_t r1)
{
	const int64_t R = c->ring, w = c->w;
	if (c->cb) {  /* a row at a time: block b's slot sl at ring + (b*R + sl)*rs */
		const int64_t rs = (w + 2) * 8;
		for (int64_t r = r0; r < r1; r++) {
			float *row = ring + slot_of(r, base, R) * rs;
			for (int64_t b = c0 / 8; b < c1 / 8; b++) {
				float *q = row + b * R * rs;
				if (r < 0 || r >= c->h) {
					memset(q, 0, (size_t)rs * sizeof *q);
				} else {
					memset(q, 0, 8 * sizeof *q);
					memset(q + rs - 8, 0, 8 * sizeof *q);
				}
			}
			if (r >= 0 && r < c->h)
				c->cb_expand(c, x + r * w, c->h * w, row, R * rs, c0 / 8, c1 / 8);
		}
		return;
	}
	while (r0 < r1) {
		int64_t sl = slot_of(r0, base, R);
		int64_t e = r1 - r0 < R - sl ? r1 : r0 + (R - sl);
		int64_t g0 = r0 < 0 ? 0 : r0, g1 = e > c->h ? c->h : e;
		for (int64_t r = r0; r < e; r++)
			if (r < 0 || r >= c->h)
				for (int64_t ch = c0; ch < c1; ch++)
					memset(ring + ch * R * w + (sl + r - r0) * w, 0,
					       (size_t)w * sizeof *ring);
		float *e0 = ring + c0 * R * w + (sl + g0 - r0) * w;
		if (g0 < g1 && c->stem) {
			c->stem_cols(c, x, g0, g1, cols);
			c->expand(c, cols, (g1 - g0) * w, e0, (g1 - g0) * w, c0 / 4, (c1 + 3) / 4);
		} else if (g0 < g1) {
			c->expand(c, x + g0 * w, c->h * w, e0, (g1 - g0) * w, c0 / 4, (c1 + 3) / 4);
		}
		r0 = e;
	}
}

/* Output rows [o0, o1) of channels [c0, c1) of one image (X at x, Y at y) with
 * the ring at mem, E row r at slot slot_of(r, base, R). The ring holds E
 * rows [*have0, *have1) (none when equal): the rows of the band's window
 * [o0*s-1, (o1-1)*s+1] it lacks are computed (one run: the window of the
 * walker's previous band overlaps this one at one end), and the window is
 * left as the rows held. */
static void fz_band(const struct fz *c, const float *x, float *y, unsigned char *mem, int64_t base,
		    int64_t c0, int64_t c1, int64_t *have0, int64_t *have1, int64_t o0, int64_t o1)
{
	const int64_t s = c->s, R = c->ring, w = c->w;
	float *ring = (float *)(void *)mem + FZ_FRONT;
	float *cols = (float *)(void *)mem + c->ring_floats;  /* stem only */
	int64_t roff[64];  /* (B-1)*s+3 <= 64: fz_make keeps B small */
	int64_t lo = o0 * s - 1, hi = (o1 - 1) * s + 1, h0 = *have0, h1 = *have1;
	if (h0 >= h1 || h1 <= lo || h0 > hi) {
		expand_rows(c, x, ring, cols, base, c0, c1, lo, hi + 1);
	} else {
		if (lo < h0)
			expand_rows(c, x, ring, cols, base, c0, c1, lo, h0);
		if (h1 <= hi)
			expand_rows(c, x, ring, cols, base, c0, c1, h1, hi + 1);
	}
	*have0 = lo;
	*have1 = hi + 1;
	if (c->cb) {
		for (int64_t r = lo; r <= hi; r++)
			roff[r - lo] = slot_of(r, base, R) * (w + 2) * 8;
		for (int64_t b = c0 / 8; b < c1 / 8; b++)
			c->cb_rows(c, ring + b * R * (w + 2) * 8, roff, o1 - o0, b, y + o0 * c->ow);
		return;
	}
	for (int64_t r = lo; r <= hi; r++)
		roff[r - lo] = slot_of(r, base, R) * w;
	for (int64_t ch = c0; ch < c1; ch++)
		c->rows(c, ring + ch * R * w, roff, o1 - o0, c->wd + ch * 9, c->bd ? c->bd[ch] : 0.0f,
			y + (ch * c->oh + o0) * c->ow);
}

int64_t hal_conv_fused_down_bands = -1;
int hal_conv_fused_group = 0;

/* Worker chunks [k0, k1) when the step splits channels (c->group > 0):
 * each chunk is a walker claiming items, one group of c->group expanded
 * channels of one image, through one counter, and computing every output
 * row of its group, top down in bands, with the ring it owns. Expanded
 * channels are independent (E channel e reads all of X and We's row e;
 * the depthwise reads only E channel e), so nothing is computed twice: no
 * halo rows as between row bands, and the bands keep the one-thread
 * height (14x14 planes: one band of 14 rows, not bands of 3 and a halo of
 * 2). The price is reading X once per item, which fz_make allows only
 * where X stays in L2. */
static void fz_groups(struct fz_job *j, int64_t k0, int64_t k1)
{
	const struct fz *c = j->c;
	const int64_t B = c->band, G = c->group, ng = (c->ce + G - 1) / G;
	for (int64_t k = k0; k < k1; k++) {
		unsigned char *mem = j->scratch + (size_t)k * c->slot_bytes;
		for (;;) {
			int64_t g = atomic_fetch_add_explicit(&j->claimed[0].n, 1, memory_order_relaxed);
			if (g >= ng * c->n)
				break;
			int64_t im = g / ng, c0 = g % ng * G, c1 = c0 + G < c->ce ? c0 + G : c->ce;
			int64_t have0 = 0, have1 = 0;
			for (int64_t o0 = 0; o0 < c->oh; o0 += B)
				fz_band(c, j->x + im * c->cin * c->xh * c->xw,
					j->y + im * c->ce * c->oh * c->ow, mem, 2 - c->s, c0, c1, &have0,
					&have1, o0, o0 + B < c->oh ? o0 + B : c->oh);
		}
	}
}

/* Worker chunks [k0, k1): a chunk is one walker over the bands (c->band
 * output rows each, on a grid from row 0 of every image) of its pair's
 * segment of the batch's nb*n bands: chunk 2p walks pair p's segment
 * down from its first band, chunk 2p+1 up from its last, each claiming a
 * band through the pair's counter (one relaxed fetch_add: the total
 * claimed never passes the segment's length, so the two walkers' bands
 * never overlap; whichever is faster takes more, and they meet wherever
 * their speeds put them). A walker's bands are consecutive, so its ring
 * keeps the rows its next band shares with the last one: only the two
 * bands that meet compute the shared rows twice. The ring's base puts
 * down-walker band b's new rows at b*B*s + 2 - s, an up-walker's at
 * b*B*s - 1, from slot 0 (a ring of a multiple of B*s rows, the hook's
 * old choice, then never splits a full band's run at its end). */
static void fz_range(void *arg, int64_t k0, int64_t k1)
{
	struct fz_job *j = arg;
	const struct fz *c = j->c;
	const int64_t B = c->band, nb = (c->oh + B - 1) / B, nall = nb * c->n;
	const int pairs = (c->slots + 1) / 2;
	if (c->group) {
		fz_groups(j, k0, k1);
		return;
	}
	for (int64_t k = k0; k < k1; k++) {
		int p = (int)(k / 2), up = (int)(k % 2);
		int64_t g0 = nall * p / pairs, len = nall * (p + 1) / pairs - g0;
		int64_t base = up ? -1 : 2 - c->s, img = -1, have0 = 0, have1 = 0;
		unsigned char *mem = j->scratch + (size_t)k * c->slot_bytes;
		for (int64_t mine = 0;;) {
			if (!up && 2 * p + 1 < c->slots && hal_conv_fused_down_bands >= 0 &&
			    mine >= hal_conv_fused_down_bands)
				break;
			int64_t i = hal_meet_next(&j->claimed[p].n, len, up, &mine);
			if (i < 0)
				break;
			int64_t g = g0 + i, im = g / nb, o0 = g % nb * B;
			if (im != img) {  /* a new image: nothing of its E in the ring */
				img = im;
				have0 = have1 = 0;
			}
			fz_band(c, j->x + im * c->cin * c->xh * c->xw, j->y + im * c->ce * c->oh * c->ow,
				mem, base, 0, c->ce, &have0, &have1, o0, o0 + B < c->oh ? o0 + B : c->oh);
		}
	}
}

static int fz_exec(hal_step *s)
{
	const struct fz *c = s->params;
	struct fz_job j = { .c = c, .x = s->in[0]->data, .y = s->out[0]->data,
			    .scratch = s->scratch };
	if (c->n == 0 || c->oh == 0)
		return 0;
	for (int p = 0; p < (c->slots + 1) / 2; p++)
		atomic_init(&j.claimed[p].n, 0);
	hal_parallel_for(s, c->slots, 1, fz_range, &j);
	return 0;
}

static const hal_op op_conv_fused = { "FusedConvDw", 1, 0, NULL, fz_exec };

static int is_f32(const hal_tensor *t, int rank)
{
	return t && t->dtype == HAL_DT_F32 && t->rank == rank;
}

static int is_const_vec(const hal_tensor *t, int64_t n)
{
	return !t || (is_f32(t, 1) && t->dims[0] == n && t->is_const && t->data);
}

/* Whether the step keeps a channel-blocked ring (FZ_CB): stride 2, a 1x1
 * expand of whole blocks of 8 channels whose epilogue, if any, is a clamp
 * (others run over finished NCHW rows), unless the hook says no. */
static int fz_cb_ok(const hal_conv_fused_desc *d)
{
	float lo, hi;
	return hal_conv_fused_cb >= 0 && d->stride == 2 && !d->stem && d->we->dims[0] % 8 == 0 &&
	       (!d->epe || ir_epi_clamp(d->epe, &lo, &hi));
}

int hal_conv_fused_fits(const hal_conv_fused_desc *d)
{
	const hal_tensor *x = d->x, *y = d->y;
	if (!is_f32(x, 4) || !is_f32(y, 4) || !is_f32(d->we, 4) || !is_f32(d->wd, 4) ||
	    !d->we->is_const || !d->we->data || !d->wd->is_const || !d->wd->data)
		return 0;
	int64_t n = x->dims[0], cin = x->dims[1], h = x->dims[2], w = x->dims[3];
	int64_t ce = d->we->dims[0], s = d->stride, ek = d->stem ? 3 : 1;
	if (d->stem) {  /* E's plane: 3x3, stride 2, pad 1 over X's */
		h = (h - 1) / 2 + 1;
		w = (w - 1) / 2 + 1;
	}
	if ((s != 1 && s != 2) || cin < 1 || ce < 1 || h < 1 || w < 8 || (d->stem && cin * 9 > 64) ||
	    d->we->dims[1] != cin || d->we->dims[2] != ek || d->we->dims[3] != ek ||
	    d->wd->dims[0] != ce || d->wd->dims[1] != 1 || d->wd->dims[2] != 3 ||
	    d->wd->dims[3] != 3 || !is_const_vec(d->be, ce) || !is_const_vec(d->bd, ce))
		return 0;
	int64_t oh = (h - 1) / s + 1, ow = (w - 1) / s + 1;
	if (y->dims[0] != n || y->dims[1] != ce || y->dims[2] != oh || y->dims[3] != ow ||
	    (ow < 8 && !fz_cb_ok(d)))
		return 0;
	return (size_t)(ce * h * w) * sizeof(float) >= hal_conv_fused_min_bytes;
}

int hal_conv_fused_make(hal_step *s, const hal_conv_fused_desc *d, int threads)
{
	struct fz *c = hal_step_alloc(s, sizeof *c);
	hal_tensor **in = hal_step_alloc(s, 5 * sizeof *in);
	hal_tensor **out = hal_step_alloc(s, sizeof *out);
	v8i *mask = hal_step_alloc(s, 6 * sizeof *mask + 32);
	if (!c || !in || !out || !mask)
		return AIDOS_E_NOMEM;
	mask = (v8i *)(((uintptr_t)mask + 31) & ~(uintptr_t)31);
	c->n = d->x->dims[0];
	c->cin = d->x->dims[1];
	c->h = d->x->dims[2];
	c->w = d->x->dims[3];
	c->ce = d->we->dims[0];
	c->stem = d->stem;
	c->xh = c->h;
	c->xw = c->w;
	if (c->stem) {
		c->h = (c->xh - 1) / 2 + 1;
		c->w = (c->xw - 1) / 2 + 1;
	}
	c->ek = c->stem ? c->cin * 9 : c->cin;
	c->s = d->stride;
	c->oh = d->y->dims[2];
	c->ow = d->y->dims[3];
	c->nblk = (c->ow + 7) / 8;
	c->slots = threads < 1 ? 1 : threads > HAL_GEMM_SLOTS ? HAL_GEMM_SLOTS : threads;
	if (c->slots > c->oh * c->n)
		c->slots = (int)(c->oh * c->n);
	/* channels instead of rows on several threads: where X stays in L2
	 * (each claim reads all of it), not for a stem (each claim would
	 * gather its taps again), and with enough channels for about 4 claims
	 * a walker. MobileNetV2 on 2 threads, the pair alone (interleaved,
	 * p10): 56x56 (X 301 KiB) 0.32 -> 0.29 ms, 14x14 0.22 -> 0.13 ms;
	 * 112x112 (800 KiB) 0.48 -> 0.59 ms and the stem 0.29 -> 0.67 ms, so
	 * those split rows */
	/* cb: a channel-blocked ring for stride 2 (FZ_CB, fz_cb_ok; output
	 * widths under 8 too). In-process A/B against the
	 * NCHW ring (MobileNetV2's stride-2 pairs alone, 20-30 rounds, 1
	 * thread): 112x112 16->96 0.85x, 56x56 24->144 0.81x, 28x28 32->192
	 * 0.78x (the depthwise part about half); 2 threads 0.78-0.82x. At
	 * stride 1 it measured 0.96-1.04x, so those keep the NCHW ring */
	c->cb = fz_cb_ok(d);
	int64_t G = hal_conv_fused_group;
	if (G == 0 && !c->stem && c->ce >= 8 * c->slots &&
	    (size_t)(c->cin * c->xh * c->xw) * sizeof(float) <= FZ_SPLIT_X_BYTES)
		G = (c->ce + 4 * c->slots - 1) / (4 * c->slots);
	c->group = c->slots > 1 && G > 0 ? (G + 3) / 4 * 4 : 0;
	if (c->cb && c->group)
		c->group = (c->group + 7) / 8 * 8;
	/* B rows per band: about FZ_COLS new E pixels per band and at least 2
	 * rows, so the depthwise's two-row passes apply (MobileNetV2's
	 * 112x112 stride-2 pair had bands of 1 row: 0.88 -> 0.85 ms alone,
	 * p10 of 10 interleaved rounds); walkers splitting rows take at least
	 * 3 bands each of an image, so they can balance (28x28 planes: bands
	 * of 5 rows, not 8); the window (B-1)*s+3 rows at most 64 (fz_band's
	 * offsets) */
	int64_t B = (FZ_COLS + c->s * c->w - 1) / (c->s * c->w);
	if (B < 2)
		B = 2;
	if (c->slots > 1 && !c->group && B > (c->oh + 3 * c->slots - 1) / (3 * c->slots))
		B = (c->oh + 3 * c->slots - 1) / (3 * c->slots);
	if (hal_conv_fused_band_rows > 0)
		B = hal_conv_fused_band_rows;
	B = B < 1 ? 1 : B > 16 ? 16 : B;
	/* R: the window's rows (rows of a band's run that pass the ring's end
	 * go as two expand calls, expand_rows); the window rounded up to a
	 * multiple of B*s kept every full band's run whole but held up to
	 * twice the rows: 28x28x192 344 -> 215 KiB, 112x112x96 at stride 2
	 * 344 -> 215 KiB, in a 512 KiB L2 that X's rows and Y's stores share */
	int64_t win = (B - 1) * c->s + 3, step = B * c->s;
	c->band = B;
	/* chunk: pixels whose K taps take about FZ_CHUNK_TAPS, a multiple of
	 * the 24-pixel block, 48 to 240 (K 16: 192, 24: 120, 32: 96, 64
	 * and up: 48). MobileNetV2's pairs alone, one thread, in-process A/B
	 * against 240 for all (20-30 rounds): K 96 and 64 (14x14 planes)
	 * 0.98x and 0.97x, K 16 to 32 0.96x to 1.00x */
	c->chunk = FZ_CHUNK_TAPS / (int64_t)sizeof(float) / c->ek / 24 * 24;
	c->chunk = c->chunk < FZ_CHUNK_MIN ? FZ_CHUNK_MIN : c->chunk > FZ_CHUNK ? FZ_CHUNK : c->chunk;
	if (hal_conv_fused_chunk > 0)
		c->chunk = hal_conv_fused_chunk < 8 ? 8 : hal_conv_fused_chunk;
	c->ring = hal_conv_fused_ring_rows < 0 ? (win + step - 1) / step * step
		  : hal_conv_fused_ring_rows > win ? hal_conv_fused_ring_rows : win;
	c->ring_floats = ((size_t)(c->ce * c->ring * (c->w + 2 * c->cb)) + FZ_FRONT +
			  (c->cb ? FZ_CB_BACK : FZ_BACK) + 15) & ~(size_t)15;
	c->cols_floats = c->stem ? (size_t)(c->ek * c->ring * c->w) : 0;
	c->slot_bytes = ((c->ring_floats + c->cols_floats) * sizeof(float) + 63) & ~(size_t)63;
	const float *we = d->we->data;
	if (!c->cb) {  /* the NCHW expand's panels (FZ_EXPAND) */
		int64_t nob = (c->ce + 3) / 4;
		float *wp = hal_step_alloc(s, (size_t)(nob * 4 * c->ek) * sizeof *wp);
		if (!wp)
			return AIDOS_E_NOMEM;
		for (int64_t ob = 0; ob < nob; ob++)
			for (int64_t k = 0; k < c->ek; k++)
				for (int64_t o = 0; o < 4; o++)
					wp[(ob * c->ek + k) * 4 + o] =
						ob * 4 + o < c->ce ? we[(ob * 4 + o) * c->ek + k] : 0.0f;
		c->wp = wp;
	} else {  /* the channel-blocked kernels' (FZ_CB) */
		int64_t nb = c->ce / 8;
		float *wcb = hal_step_alloc(s, (size_t)(nb * 8 * (c->ek + 11)) * sizeof *wcb);
		if (!wcb)
			return AIDOS_E_NOMEM;
		const float *wd = d->wd->data, *be = d->be ? d->be->data : NULL;
		const float *bd = d->bd ? d->bd->data : NULL;
		float *wdcb = wcb + nb * 8 * c->ek, *becb = wdcb + nb * 72, *bdcb = becb + nb * 8;
		for (int64_t b = 0; b < nb; b++)
			for (int64_t l = 0; l < 8; l++) {
				int64_t ch = b * 8 + l;
				for (int64_t k = 0; k < c->ek; k++)
					wcb[(b * c->ek + k) * 8 + l] = we[ch * c->ek + k];
				for (int64_t t = 0; t < 9; t++)
					wdcb[(b * 9 + t) * 8 + l] = wd[ch * 9 + t];
				becb[b * 8 + l] = be ? be[ch] : 0.0f;
				bdcb[b * 8 + l] = bd ? bd[ch] : 0.0f;
			}
		c->wcb = wcb;
		c->wdcb = wdcb;
		c->becb = becb;
		c->bdcb = bdcb;
		c->cb_expand = HAL_GEMM_PICK(fz_cb_expand_generic, fz_cb_expand_avx2);
		c->cb_rows = HAL_GEMM_PICK(fz_cb_rows_generic, fz_cb_rows_avx2);
	}
	c->be = d->be ? d->be->data : NULL;
	c->wd = d->wd->data;
	c->bd = d->bd ? d->bd->data : NULL;
	c->epe = d->epe;
	c->epd = d->epd;
	/* lane i of the accumulator is output pixel ox0 + l, l = i (stride 1)
	 * or EV[i] / 2 (stride 2); tap kx reads column (ox0 + l)*s - 1 + kx */
	static const int ev[8] = { 0, 2, 8, 10, 4, 6, 12, 14 };
	for (int e = 0; e < 2; e++) {
		int64_t ox0 = e == 0 ? 0 : c->ow - 8;
		for (int kx = 0; kx < 3; kx++)
			for (int i = 0; i < 8; i++) {
				int64_t l = c->s == 1 ? i : ev[i] / 2;
				int64_t ix = (ox0 + l) * c->s - 1 + kx;
				mask[e * 3 + kx][i] = ix >= 0 && ix < c->w ? -1 : 0;
			}
	}
	c->mask = mask;
	c->reg_epi = ir_epi_clamp(d->epd, &c->lo, &c->hi);
	c->reg_exp = ir_epi_clamp(d->epe, &c->elo, &c->ehi);
	c->expand = HAL_GEMM_PICK(fz_expand_generic, fz_expand_avx2);
	c->stem_cols = HAL_GEMM_PICK(stem_cols_generic, stem_cols_avx2);
	c->rows = c->s == 1 ? HAL_GEMM_PICK(fz_rows1_generic, fz_rows1_avx2)
			   : HAL_GEMM_PICK(fz_rows2_generic, fz_rows2_avx2);
	in[0] = d->x;
	in[1] = (hal_tensor *)d->we;
	in[2] = (hal_tensor *)d->be;
	in[3] = (hal_tensor *)d->wd;
	in[4] = (hal_tensor *)d->bd;
	out[0] = d->y;
	s->op = &op_conv_fused;
	s->n_in = 5;
	s->n_out = 1;
	s->in = in;
	s->out = out;
	s->params = c;
	s->scratch_bytes = (size_t)c->slots * c->slot_bytes;
	return 0;
}
