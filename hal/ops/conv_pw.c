/*
 * hal/ops/conv_pw.c - 1x1 Conv over small and mid planes (the 56x56 to 7x7
 * stages of MobileNet-style nets: 16 to 4096 pixels, 24 to 1280 channels),
 * read in place.
 *
 * Through hal_gemm such a conv packed X (a K x 196 copy per run) or, under
 * 100 pixels, ran transposed (X^T packed, then Y^T transposed back into Y):
 * 48-83 GFLOP/s where square GEMM reaches ~100. Here nothing is packed per
 * run but the last partial pixel tile:
 *   Y [cout, P] = W [cout, K] X [K, P] + bias, P = h*w, K = cin,
 * with a register tile of PW_MR output channels (one broadcast weight each,
 * W packed at plan time as panels [kc][PW_MR] and, for cout % 6 of 1 to 4,
 * one or two last panels [kc][4], zero past cout, K block by K block) by PW_NR
 * consecutive pixels (two 8-lane vectors loaded straight from X's row k:
 * NCHW already has pixels contiguous, so Y's tile rows are stored with
 * plain vector stores, no transpose). A plane's last P % PW_NR pixels come
 * from a [K][PW_NR] zero-padded copy made once per image (196 = 12*16 + 4,
 * 49 = 3*16 + 1), so no load ever runs past X.
 *
 * K is cut into blocks of at most PW_KC so that a tile's X block
 * [kc][PW_NR] (16 KiB) stays in L1 while every panel of the task sweeps it;
 * blocks after the first add into Y (a tile's rows reloaded: 12 vector
 * loads per 12*kc FMAs). Bias starts the first block; a ReLU or Clip
 * epilogue (and its scalar affine) is applied in registers on the last, any
 * other through hal_epilogue_apply on the stored rows.
 *
 * Under HAL_CONV_PW_T_BELOW pixels with at least as many output channels
 * (the 7x7 stage) the tile is transposed instead (PT_TILE below): channels
 * across the lanes, pixels broadcast from X^T packed per run, the tile
 * transposed into Y as it is stored, K cut into blocks of at most PT_KC
 * (a panel's W block stays in L1); it replaced hal_gemm's Y^T = X^T W^T
 * (its 1-row remainder kernel, the Y^T buffer and its transposing pass:
 * 15% of the time), 0.90-0.95x its time on MobileNetV2's 7x7 1x1s.
 *
 * Threads: where W is the larger operand, tasks are contiguous runs of
 * panels (output channels), so each thread reads only its own slice of W
 * and writes only its own rows of Y, every thread reading all of X; where
 * X is (more pixels than output channels, or over 256 pixels), runs of
 * pixel tiles, every thread reading all of W.
 */
#include <string.h>
#include "hal/gemm.h"
#include "hal/ops/conv_pw.h"
#include "hal/ops/vec.h"

/* ISO C mode makes GCC default to -ffp-contract=off; the tile's
 * `acc += w * x` must be one FMA (clang contracts by default). */
#pragma GCC optimize("fp-contract=fast")

#define PW_MR 6     /* output channels per tile: 12 accumulators + 2 X + 1 W of 16 ymm */
#define PW_NR 16    /* pixels per tile: two 8-lane vectors */
#define PW_KC 256   /* K block: X block [PW_KC][PW_NR] = 16 KiB of L1 */
#define PW_PAR_FLOPS 1000000 /* below: one thread (a fork/join costs more) */
/* larger planes, or more pixels than output channels (X larger than W):
 * threads split pixels, not channels */
#define PW_SPLIT_PIXELS 256
/* Over PW_SPLIT_PIXELS pixels with X of PW_PF_MIN_BYTES or more, X's
 * rows (K of them, P floats apart: 96 and 144 streams at 56x56, X 1.2-1.8
 * MiB from L3) are more streams than the hardware prefetcher follows: each
 * tile prefetches the X block of the tile this many ahead (4 ahead:
 * 1.02-1.07x; 1 ahead: as 2). The bound is measured, not the L2's size
 * (512 KiB a core on this Zen 3; 1 MiB is two cores' sum): PaddleOCR cls
 * (8-104 x 192-2304, 73-100 KiB) took 1.02-1.10x the time with the
 * prefetch, and MobileNetV2's 28x28 192 -> 32, whose X (602 KiB) exceeds
 * L2, 1.03-1.07x on 1 thread and on 2 with a 512 KiB bound (A/B in one
 * process, alternating runs, 3 runs); its 144 -> 32 (451 KiB)
 * 0.96-1.05x. */
#define PW_PF_TILES 2
#define PW_PF_MIN_BYTES (1 << 20)


/* What a tile does besides its products. */
typedef struct pw_tile_args {
	const float *bias;      /* [PW_MR]: start from it (first K block); NULL: add to y */
	const ir_epilogue *epi; /* ReLU/Clip applied in registers (last K block), or NULL */
	int rows, cols;         /* y's rows (<= PW_MR) and columns (<= PW_NR) to write */
	const float *pf;        /* prefetch npf lines pf, pf + pf_ld, ... towards L2 */
	int64_t npf, pf_ld;
} pw_tile_args;

/* One MR x NR tile over kc (MR = PW_MR, or 4 for the last panels: a
 * cout of 32 = 4*6 + 2*4 computes no padding row, where 6-row panels
 * computed 36; NR = PW_NR, or 8 for a last tile of at most 8 pixels: the
 * 4 of 196 = 12*16 + 4): y[i*ldy + j] (=|+=) sum_k w[k*MR + i] *
 * x[k*ldx + j], for i < rows, j < cols <= NR; x must hold NR readable
 * floats per row. The tile also prefetches a->npf lines (a->pf, then
 * a->pf_ld floats apart) towards L2, one every kc/npf steps of its k loop.
 * Compiled for AVX2+FMA and for the baseline, chosen at plan time
 * with the GEMM's kernel (hal_gemm_use_isa("generic") tests the baseline). */
typedef void (*pw_tile_fn)(int64_t kc, const float *x, int64_t ldx, const float *w, float *y,
			   int64_t ldy, const pw_tile_args *a);

/* The tiles' epilogue constants: clamp bounds (Clip: a, b; none: -inf,
 * inf; Relu: 0, inf; also for no epilogue at all) and the affine after
 * it (post_s, post_b; 1, 0 without an epilogue). */
static inline void pw_epi_consts(const ir_epilogue *e, float *lo, float *hi, float *ps, float *pb)
{
	*lo = e && e->act == IR_ACT_CLIP ? e->a : 0.0f;
	*hi = e && e->act == IR_ACT_CLIP ? e->b : __builtin_inff();
	if (e && e->act == IR_ACT_NONE)
		*lo = -__builtin_inff();
	*ps = e ? e->post_s : 1.0f;
	*pb = e ? e->post_b : 0.0f;
}

/* v = max(v, LO), then min(v, HI), then v*PS + PB (NaN stays NaN) */
#define PW_ACT(v) do {                                                          \
		PW_CLIPV(v);                                                     \
		(v) = (v) * PS + PB;                                             \
	} while (0)
/* the clamp: compares and selects in the baseline; vmaxps(LO, v) and
 * vminps(HI, v) for AVX2 (both return v when either operand is NaN, and v
 * for -0 against LO = 0, as the selects do) */
#define PW_CLIPV_GENERIC(v) do {                                                \
		(v) = (v8f)(((v8i)(v) & ~((v) < LO)) | ((v8i)LO & ((v) < LO)));  \
		(v) = (v8f)(((v8i)(v) & ~((v) > HI)) | ((v8i)HI & ((v) > HI)));  \
	} while (0)
#define PW_CLIPV_AVX2(v) ((v) = __builtin_ia32_minps256(HI, __builtin_ia32_maxps256(LO, (v))))
#define PW_INIT(i)                                                              \
	if ((i) >= MR_) {                                                       \
		c##i##0 = z;                                                    \
		c##i##1 = z;                                                    \
	} else if (a->bias) {                                                          \
		c##i##0 = z + a->bias[i];                                       \
		c##i##1 = c##i##0;                                              \
	} else if ((i) < a->rows && a->cols == PW_NR) {                         \
		memcpy(&c##i##0, y + (i) * ldy, sizeof z);                      \
		memcpy(&c##i##1, y + (i) * ldy + 8, sizeof z);                  \
	} else if ((i) < a->rows) {                                             \
		memcpy(t, y + (i) * ldy, (size_t)a->cols * sizeof *t);          \
		memcpy(&c##i##0, t, sizeof z);                                  \
		memcpy(&c##i##1, t + 8, sizeof z);                              \
	} else {                                                                \
		c##i##0 = z;                                                    \
		c##i##1 = z;                                                    \
	}
#define PW_FMA(i) if ((i) < MR_) {                                              \
		b = w[i] - z;                                                   \
		c##i##0 += b * x0;                                              \
		if (NR_ > 8)                                                    \
			c##i##1 += b * x1;                                      \
	}
#define PW_STORE(i)                                                             \
	if ((i) < MR_ && (i) < a->rows) {                                                    \
		if (a->epi) {                                                   \
			PW_ACT(c##i##0);                                        \
			PW_ACT(c##i##1);                                        \
		}                                                               \
		if (a->cols == PW_NR) {                                         \
			memcpy(y + (i) * ldy, &c##i##0, sizeof z);              \
			memcpy(y + (i) * ldy + 8, &c##i##1, sizeof z);          \
		} else {                                                        \
			memcpy(t, &c##i##0, sizeof z);                          \
			memcpy(t + 8, &c##i##1, sizeof z);                      \
			memcpy(y + (i) * ldy, t, (size_t)a->cols * sizeof *t);  \
		}                                                               \
	}

/* The k loops of both tiles are unrolled 4 times, for the reason the GEMM
 * micro-kernel's are (hal/gemm.c): with a busy SMT sibling on the host
 * core, loop control costs FMA time. */
#define PW_TILE(NAME, ATTR, MRP, NRP)                                                \
	ATTR static void NAME(int64_t kc, const float *restrict x, int64_t ldx,       \
			      const float *restrict w, float *restrict y, int64_t ldy, \
			      const pw_tile_args *a)                                   \
	{                                                                            \
		enum { MR_ = MRP, NR_ = NRP };  /* rows, columns computed */          \
		const v8f z = { 0 };                                                 \
		float t[PW_NR] __attribute__((aligned(32))) = { 0 };                 \
		v8f c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;      \
		PW_INIT(0) PW_INIT(1) PW_INIT(2) PW_INIT(3) PW_INIT(4) PW_INIT(5)    \
		const float *pf = a->pf;                                             \
		int64_t npf = a->npf, gap = npf > 0 ? (kc + npf - 1) / npf : kc;     \
		for (int64_t k = 0; k < kc;) {                                       \
			int64_t ke = kc - k > gap ? k + gap : kc;                    \
			if (npf > 0) {                                               \
				__builtin_prefetch(pf, 0, 2);                        \
				pf += a->pf_ld;                                      \
				npf--;                                               \
			}                                                            \
			_Pragma("GCC unroll 4")                                      \
			for (; k < ke; k++, x += ldx, w += MR_) {                    \
				v8f x0, x1, b;                                       \
				memcpy(&x0, x, sizeof x0);                           \
				if (NR_ > 8)                                         \
					memcpy(&x1, x + 8, sizeof x1);               \
				else                                                 \
					x1 = z;                                      \
				/* w[i] - 0 is w[i] (-0 included): a broadcast load */ \
				PW_FMA(0) PW_FMA(1) PW_FMA(2) PW_FMA(3) PW_FMA(4)    \
				PW_FMA(5)                                            \
			}                                                            \
		}                                                                    \
		for (; npf > 0; npf--, pf += a->pf_ld)                               \
			__builtin_prefetch(pf, 0, 2);                                \
		float lo, hi, ps, pb;                                                \
		pw_epi_consts(a->epi, &lo, &hi, &ps, &pb);                           \
		const v8f LO = z + lo, HI = z + hi, PS = z + ps, PB = z + pb;        \
		PW_STORE(0) PW_STORE(1) PW_STORE(2) PW_STORE(3) PW_STORE(4) PW_STORE(5) \
	}

#define PW_CLIPV PW_CLIPV_GENERIC
PW_TILE(pw_tile_generic, , 6, 16)
PW_TILE(pw_tile4_generic, , 4, 16)
PW_TILE(pw_tile_n8_generic, , 6, 8)
PW_TILE(pw_tile4_n8_generic, , 4, 8)
#undef PW_CLIPV
#if defined(__x86_64__) || defined(__i386__)
#define PW_CLIPV PW_CLIPV_AVX2
PW_TILE(pw_tile_avx2, __attribute__((target("avx2,fma"))), 6, 16)
PW_TILE(pw_tile4_avx2, __attribute__((target("avx2,fma"))), 4, 16)
PW_TILE(pw_tile_n8_avx2, __attribute__((target("avx2,fma"))), 6, 8)
PW_TILE(pw_tile4_n8_avx2, __attribute__((target("avx2,fma"))), 4, 8)
#undef PW_CLIPV
#endif

/* The transposed tile, for planes of fewer than HAL_CONV_PW_T_BELOW pixels
 * with at least as many output channels (7x7: 49 = 3*16 + 1 would leave a
 * 16-pixel tile 1/16 full): PT_NR = 16 output channels (two vectors of a
 * weight panel [K][PT_NR]) by MR = 6, 5 or 4 pixels (one broadcast each
 * from X^T, packed per run as [K][MR] per tile): 12, 10 or 8 accumulator
 * chains, and P = 6a + 5b + 4c tiles with no unused pixel for any P >= 8
 * (49 = 4*6 + 5*5; 6-pixel tiles alone left a 1-pixel one). The 6-pixel
 * tile (8 loads a 12 FMAs, against 7 a 10) took MobileNetV2's 7x7
 * expansions (160 -> 960, 320 -> 1280) to 0.93-0.98x the time of
 * 49 = 9*5 + 4, its 960 -> 320 0.98-0.99x, 960 -> 160 0.98-1.00x (A/B
 * in one process, alternating runs, 1 and 2 threads):
 *   t[i*PT_NR + o] = act(s[i*PT_NR + o] + sum_k xp[k*MR + i] * w[k*PT_NR + o])
 * where s is bias[o] (bias not NULL) or t's own rows, the sums of the K
 * blocks before (bias NULL); act is the epilogue, none where epi is NULL.
 * Pixel-major t is then scattered to Y's rows by the caller. The tile also
 * prefetches npf lines of 64 bytes from pf towards L2 (another panel's
 * weights), one every K/npf steps of its k loop. */
#define PT_NR 16
#define PT_KC 256   /* K block: a panel's W block [PT_KC][PT_NR] = 16 KiB of L1 */
#define PT_MAX_PX 6  /* pixels per tile at most */
typedef void (*pt_tile_fn)(int64_t K, const float *xp, const float *w, const float *bias,
			   const ir_epilogue *epi, float *t, const char *pf, int64_t npf);
#define PT_FMA(i) if ((i) < MR_) { a = xp[i] - z; c##i##0 += a * w0; c##i##1 += a * w1; }
#define PT_LD(i) if ((i) < MR_) {                                               \
		memcpy(&c##i##0, t + (i) * PT_NR, sizeof b0);                   \
		memcpy(&c##i##1, t + (i) * PT_NR + 8, sizeof b0);               \
	}
#define PT_ST(i) if ((i) < MR_) {                                               \
		if (epi) {                                                      \
			PW_ACT(c##i##0);                                        \
			PW_ACT(c##i##1);                                        \
		}                                                               \
		memcpy(t + (i) * PT_NR, &c##i##0, sizeof b0);                   \
		memcpy(t + (i) * PT_NR + 8, &c##i##1, sizeof b0);               \
	}
#define PT_TILE(NAME, ATTR, MRP)                                                     \
	ATTR static void NAME(int64_t K, const float *restrict xp,                      \
			      const float *restrict w, const float *restrict bias,     \
			      const ir_epilogue *epi, float *restrict t,               \
			      const char *pf, int64_t npf)                             \
	{                                                                            \
		enum { MR_ = MRP };                                                  \
		const v8f z = { 0 };                                                 \
		v8f b0, b1;                                                          \
		memcpy(&b0, bias ? bias : t, sizeof b0);                             \
		memcpy(&b1, bias ? bias + 8 : t + 8, sizeof b1);                     \
		v8f c00 = b0, c01 = b1, c10 = b0, c11 = b1, c20 = b0, c21 = b1;      \
		v8f c30 = b0, c31 = b1, c40 = b0, c41 = b1, c50 = b0, c51 = b1;      \
		if (!bias) {                                                         \
			PT_LD(1) PT_LD(2) PT_LD(3) PT_LD(4) PT_LD(5)                 \
		}                                                                    \
		/* one prefetch every gap k steps */                                 \
		int64_t gap = npf > 0 ? (K + npf - 1) / npf : K;                     \
		for (int64_t k = 0; k < K;) {                                        \
			int64_t ke = K - k > gap ? k + gap : K;                      \
			if (npf > 0) {                                               \
				__builtin_prefetch(pf, 0, 2);                        \
				pf += 64;                                            \
				npf--;                                               \
			}                                                            \
			_Pragma("GCC unroll 4")                                      \
			for (; k < ke; k++, xp += MR_, w += PT_NR) {                 \
				v8f w0, w1, a;                                       \
				memcpy(&w0, w, sizeof w0);                           \
				memcpy(&w1, w + 8, sizeof w1);                       \
				/* x - 0 is x (-0 included): a broadcast load */     \
				PT_FMA(0) PT_FMA(1) PT_FMA(2) PT_FMA(3) PT_FMA(4)    \
				PT_FMA(5)                                            \
			}                                                            \
		}                                                                    \
		for (; npf > 0; npf--, pf += 64)                                     \
			__builtin_prefetch(pf, 0, 2);                                \
		float lo, hi, ps, pb;                                                \
		pw_epi_consts(epi, &lo, &hi, &ps, &pb);                              \
		const v8f LO = z + lo, HI = z + hi, PS = z + ps, PB = z + pb;        \
		PT_ST(0) PT_ST(1) PT_ST(2) PT_ST(3) PT_ST(4) PT_ST(5)                \
	}

#define PW_CLIPV PW_CLIPV_GENERIC
PT_TILE(pt_tile6_generic, , 6)
PT_TILE(pt_tile5_generic, , 5)
PT_TILE(pt_tile4_generic, , 4)
#undef PW_CLIPV
#if defined(__x86_64__) || defined(__i386__)
#define PW_CLIPV PW_CLIPV_AVX2
PT_TILE(pt_tile6_avx2, __attribute__((target("avx2,fma"))), 6)
PT_TILE(pt_tile5_avx2, __attribute__((target("avx2,fma"))), 5)
PT_TILE(pt_tile4_avx2, __attribute__((target("avx2,fma"))), 4)
#undef PW_CLIPV
#endif

struct pw {
	int64_t n, cin, cout, P, K, npan, nkb;
	int64_t n6;             /* panels 0..n6-1 are PW_MR rows wide, the rest 4 */
	const float *wpk;       /* untransposed: K block [k0, k0 + kc) of panel p as
				 * [kc][its width] at k0 * rows + (p's first
				 * channel) * kc, so that a block of all panels is
				 * one run; transposed: panel p as [K][PT_NR] at its
				 * first channel * K; zero past cout */
	int64_t rows;           /* panel rows: cout rounded up to the panels */
	const float *bias;      /* [cout rounded up to the panels], zero past cout
				 * (and when no B) */
	const ir_epilogue *epi; /* or NULL */
	int epi_reg;            /* epi is NONE/RELU/CLIP: applied in the tile */
	int split_px;           /* threads split pixel tiles, not panels */
	int pf;                 /* prefetch X PW_PF_TILES tiles ahead */
	pw_tile_fn tile[2][2];  /* [4-row panel][at most 8 columns] */
	size_t xt_floats;       /* tail copy [K][PW_NR] at the start of scratch */
	/* transposed: panels of PT_NR channels, n6t tiles of 6 pixels, n5 of 5, then n4
	 * of 4 (tile pixels past P repeat the last one); X^T in scratch */
	int trans;
	int64_t n6t, n5, n4;    /* tiles of 6, then 5, then 4 pixels */
	int64_t tnkb;           /* K blocks of at most PT_KC */
	pt_tile_fn ttile[3];    /* [6 - pixels]: 6, 5, 4 */
};

/* Transposed tile q: its first pixel, and its pixel count in *m. */
static inline int64_t pt_tile_at(const struct pw *c, int64_t q, int *m)
{
	if (q < c->n6t) {
		*m = 6;
		return 6 * q;
	}
	q -= c->n6t;
	*m = q < c->n5 ? 5 : 4;
	return 6 * c->n6t + (q < c->n5 ? 5 * q : 5 * c->n5 + 4 * (q - c->n5));
}

struct pw_job {
	const struct pw *c;
	const float *x;         /* [K, P] */
	const float *xt;        /* [K, PW_NR]: X's last P % PW_NR columns, zero-padded */
	float *y;               /* [cout, P] */
};

/* Panels [p0, p1) x pixel tiles [q0, q1): every K block, every pixel
 * tile, every panel (the tile's X block stays in L1 while the panels'
 * weights stream from L2, one contiguous run per K block: panel-major W,
 * a 4.6 KiB run per panel and block, took 1.04-1.09x the time at 14x14
 * 384 and 576 deep; panel-outer order measured the same at 14x14, 3-10%
 * slower at 28x28 and 56x56 in the network). Over PW_SPLIT_PIXELS with X
 * of PW_PF_MIN_BYTES or more, X's prefetch (PW_PF_TILES): MobileNetV2's
 * 56x56 projections (96 and 144 -> 24) 0.70-1.04x the time on 1 thread
 * (most runs 0.85-0.98x), 0.79-1.04x on 2 (A/B in one process,
 * alternating runs; the gain varies with the host's load); at 14x14 it
 * measured 1.00-1.04x; Y's lines prefetched for writing: 0.96-1.05x.
 * Each tile spreads its slice of those prefetches through its k loop
 * (as pt_range's W prefetches): issued back to back before the tile they
 * stalled it (perf: 38% of pw_block's samples on them); spread, the 56x56
 * projections took 0.92-1.01x the time on 1 thread (median 0.965x),
 * 0.88-1.10x on 2 (median 0.97x; A/B in one process, alternating runs,
 * 4 runs each). */
static void pw_block(const struct pw_job *j, int64_t p0, int64_t p1, int64_t q0, int64_t q1)
{
	const struct pw *c = j->c;
	int64_t P = c->P, K = c->K;
	for (int64_t kb = 0; kb < c->nkb; kb++) {
		int64_t k0 = K * kb / c->nkb, kc = K * (kb + 1) / c->nkb - k0;
		int last = kb == c->nkb - 1;
		for (int64_t q = q0 * PW_NR; q < P && q < q1 * PW_NR; q += PW_NR) {
			int cols = (int)(P - q < PW_NR ? P - q : PW_NR);
			const float *x = cols == PW_NR ? j->x + k0 * P + q : j->xt + k0 * PW_NR;
			int64_t ldx = cols == PW_NR ? P : PW_NR;
			/* tile q + PW_PF_TILES's X block (kc lines) towards L2,
			 * a slice per panel, spread through the tile's k loop */
			const float *xn = c->pf && q + (PW_PF_TILES + 1) * PW_NR <= P
						  ? j->x + k0 * P + q + PW_PF_TILES * PW_NR : NULL;
			int64_t l = xn ? 0 : kc, step = (kc + p1 - p0 - 1) / (p1 - p0);
			for (int64_t p = p0; p < p1; p++) {
				int64_t npf = kc - l < step ? kc - l : step;
				const float *pf = xn ? xn + l * P : NULL;
				l += npf;
				int mr = p < c->n6 ? PW_MR : 4;
				int64_t o0 = p < c->n6 ? p * PW_MR : c->n6 * PW_MR + (p - c->n6) * 4;
				int64_t r = c->cout - o0;
				pw_tile_args a = { kb == 0 ? c->bias + o0 : NULL,
						   last && c->epi_reg ? c->epi : NULL,
						   (int)(r < mr ? r : mr), cols, pf, npf, P };
				float *y = j->y + o0 * P + q;
				c->tile[mr == 4][cols <= 8](kc, x, ldx, c->wpk + k0 * c->rows + o0 * kc, y, P,
							    &a);
				if (last && c->epi && !c->epi_reg)
					for (int i = 0; i < a.rows; i++)
						hal_epilogue_apply(c->epi, y + i * P, cols);
			}
		}
	}
}

/* Tasks over panels [p0, p1), every pixel tile: planes of at most
 * PW_SPLIT_PIXELS with at least as many output channels as pixels, where W
 * is the larger operand (each thread reads only its slice of W). */
static void pw_range(void *arg, int64_t p0, int64_t p1)
{
	const struct pw_job *j = arg;
	pw_block(j, p0, p1, 0, (j->c->P + PW_NR - 1) / PW_NR);
}

/* Tasks over pixel tiles [q0, q1), every panel: larger planes, where a
 * projection's few panels (56x56 144->24: 4) made as few tasks, each
 * streaming all of X (1.8 MiB) again; and planes with more pixels than
 * output channels, where X is the larger operand (14x14 384->64: X 294
 * KiB, W 96 KiB; split by channels each thread read all of X: 0.86-0.95x
 * the time of MobileNetV2's 14x14 projections on 2 threads, A/B in one
 * process, alternating runs). */
static void pw_range_px(void *arg, int64_t q0, int64_t q1)
{
	const struct pw_job *j = arg;
	pw_block(j, 0, j->c->npan, q0, q1);
}


/* Scatters a tile t [m pixels][PT_NR] (pixel-major) to Y's rows:
 * y[o*P + i] = t[i*PT_NR + o] for o < no, i < mr. A full tile goes as
 * 4x4 blocks transposed in registers (unpack, then move halves: SSE
 * shuffles on every x86-64), one 16-byte store per channel, plus the
 * fifth pixel's column, or for 6 pixels a second set over pixels 2..5
 * (2 and 3 stored twice, the same values); a scalar loop scattering one float at a time cost
 * 7% of a 7x7 1x1's time. */
static void pt_store(float *y, int64_t P, const float *t, int m, int64_t mr, int64_t no)
{
	if (mr != m || no != PT_NR) {
		for (int64_t o = 0; o < no; o++, y += P)
			for (int64_t i = 0; i < mr; i++)
				y[i] = t[i * PT_NR + o];
		return;
	}
	for (int o = 0; o < PT_NR; o += 4)
		vec_tr4_store(y + o * P, P, t + o, PT_NR);
	if (m == 6) /* pixels 2..5: 2 and 3 again, with the same values */
		for (int o = 0; o < PT_NR; o += 4)
			vec_tr4_store(y + o * P + 2, P, t + 2 * PT_NR + o, PT_NR);
	else if (m == 5)
		for (int o = 0; o < PT_NR; o++)
			y[o * P + 4] = t[4 * PT_NR + o];
}

/* Transposed: panels [p0, p1), each through every K block of at most
 * PT_KC and, within a block, every pixel tile: a panel's weights [K][PT_NR]
 * come from memory once, and each block of them ([PT_KC][PT_NR], 16 KiB)
 * then stays in L1 while the tiles sweep it (the tiles' sums wait in acc
 * between blocks); X^T (K*P floats) stays in L2. Unblocked, a 960-deep
 * panel (61 KiB) streamed from L2 for every tile: in MobileNetV2 the
 * blocks took its 7x7 projections (576 and 960 -> 160, 960 -> 320) to
 * 0.85-0.89x their median time on 1 thread, 0.88-0.92x on 2 (A/B in one
 * process, alternating runs); alone, with W warm, they tie. Tiles outside
 * panels read all of W once per tile: measured alone (W warm in L2) that
 * tied, but in the network, where each conv's W (0.6-1.6 MiB at 7x7)
 * arrives from L3 or memory, it cost ~10 times W's traffic. The next
 * panel's W is prefetched (prefetcht1, K/(tiles*blocks) lines per tile)
 * while a panel's tiles compute, so only a task's first panel waits on
 * memory; each tile spreads its lines through its k loop, one every
 * kc/lines steps: issued back to back before the tile (27 at 960 deep),
 * the misses filled the load queue and stalled it (perf: 62% of
 * pt_range's samples on the prefetches); spread, MobileNetV2's 7x7 1x1s
 * took 0.93x their summed step time on 1 thread, 0.95x on 2 (A/B in
 * one process, alternating runs, 2 runs each). */
static void pt_range(void *arg, int64_t p0, int64_t p1)
{
	const struct pw_job *j = arg;
	const struct pw *c = j->c;
	int64_t P = c->P, K = c->K, nq = c->n6t + c->n5 + c->n4, nkb = c->tnkb;
	/* acc: tile q's sums [m][PT_NR] at acc + i0*PT_NR (its first pixel
	 * i0), across K blocks */
	float acc[(HAL_CONV_PW_T_BELOW + PT_MAX_PX) * PT_NR] __attribute__((aligned(32)));
	int64_t step = (K + nq * nkb - 1) / (nq * nkb); /* W lines per tile call */
	for (int64_t p = p0; p < p1; p++) {
		int64_t o0 = p * PT_NR, no = c->cout - o0 < PT_NR ? c->cout - o0 : PT_NR;
		const char *nw = p + 1 < p1 ? (const char *)(c->wpk + (o0 + PT_NR) * K) : NULL;
		int64_t l = 0;
		for (int64_t kb = 0; kb < nkb; kb++) {
			int64_t k0 = K * kb / nkb, kc = K * (kb + 1) / nkb - k0;
			int last = kb == nkb - 1;
			for (int64_t q = 0; q < nq; q++) {
				/* the next panel's weights (K lines of 64 bytes) towards
				 * L2, a slice per tile, spread through its k loop */
				int64_t npf = nw ? (K - l < step ? K - l : step) : 0;
				const char *pf = nw ? nw + l * 64 : NULL;
				l += npf;
				int m;
				int64_t i0 = pt_tile_at(c, q, &m);
				int64_t mr = P - i0 < m ? P - i0 : m;
				float *t = acc + i0 * PT_NR;
				c->ttile[6 - m](kc, j->xt + i0 * K + k0 * m,
								  c->wpk + o0 * K + k0 * PT_NR,
								  kb == 0 ? c->bias + o0 : NULL,
								  last && c->epi_reg ? c->epi : NULL, t, pf, npf);
				if (!last)
					continue;
				if (c->epi && !c->epi_reg)
					hal_epilogue_apply(c->epi, t, m * PT_NR);
				pt_store(j->y + o0 * P + i0, P, t, m, mr, no);
			}
		}
	}
}

/* X [K, P] -> X^T tiles [q0, q1): tile q (first pixel i0, m pixels) at
 * xt + i0*K as [K][m], pixels past P repeating the last one. A
 * hal_range_fn over a struct pw_job. */
static void pt_pack(void *arg, int64_t q0, int64_t q1)
{
	const struct pw_job *j = arg;
	const struct pw *c = j->c;
	const float *x = j->x;
	float *xt = (float *)j->xt;
	int64_t P = c->P, K = c->K;
	for (int64_t q = q0; q < q1; q++) {
		int m;
		int64_t i0 = pt_tile_at(c, q, &m);
		float *d = xt + i0 * K;
		const float *sx = x + i0;
		if (i0 + m <= P)
			for (int64_t k = 0; k < K; k++, d += m, sx += P)
				memcpy(d, sx, (size_t)m * sizeof *d);
		else
			for (int64_t k = 0; k < K; k++, d += m)
				for (int64_t i = 0; i < m; i++)
					d[i] = x[k * P + (i0 + i < P ? i0 + i : P - 1)];
	}
}

static int pw_exec(hal_step *s)
{
	const struct pw *c = s->params;
	const float *x = s->in[0]->data;
	float *y = s->out[0]->data, *xt = s->scratch;
	int64_t P = c->P, K = c->K, q = P - P % PW_NR;
	int par = 2 * K * c->cout * P >= PW_PAR_FLOPS;
	for (int64_t n = 0; n < c->n; n++) {
		const float *xn = x + n * K * P;
		if (c->trans) {
			/* the packing in parallel too: on two threads a serial
			 * one would be ~10% of a 960->160 conv at 7x7 */
			struct pw_job j = { c, xn, xt, y + n * c->cout * P };
			if (par) {
				hal_parallel_for(s, c->n6t + c->n5 + c->n4, 2, pt_pack, &j);
				hal_parallel_for(s, c->npan, 1, pt_range, &j);
			} else {
				pt_pack(&j, 0, c->n6t + c->n5 + c->n4);
				pt_range(&j, 0, c->npan);
			}
			continue;
		}
		if (q < P) {
			memset(xt, 0, c->xt_floats * sizeof *xt);
			for (int64_t k = 0; k < K; k++)
				memcpy(xt + k * PW_NR, xn + k * P + q, (size_t)(P - q) * sizeof *xt);
		}
		struct pw_job j = { c, xn, xt, y + n * c->cout * P };
		if (!par)
			pw_range(&j, 0, c->npan);
		else if (c->split_px)
			hal_parallel_for(s, (P + PW_NR - 1) / PW_NR, 1, pw_range_px, &j);
		else
			hal_parallel_for(s, c->npan, 1, pw_range, &j);
	}
	return 0;
}

static const hal_op op_conv_pw = { "Conv", 1, HAL_OP_PURE, NULL, pw_exec };

int hal_conv_pw_plan(hal_step *s, int64_t n, int64_t cin, int64_t cout, int64_t hw,
		     const ir_epilogue *epi)
{
	const hal_tensor *x = s->in[0], *w = s->in[1];
	const hal_tensor *b = s->n_in > 2 ? s->in[2] : NULL;
	int trans = hw >= 2 && hw < HAL_CONV_PW_T_BELOW && cout >= hw;
	if (x->is_const || !w->is_const || !w->data || (b && (!b->is_const || !b->data)) ||
	    cin < 1 || cout < 1 || hw > HAL_CONV_PW_MAX_PIXELS ||
	    (!trans && hw < HAL_CONV_PW_MIN_PIXELS))
		return 0;
	/* 6-row panels, and one or two 4-row ones where that computes fewer
	 * padding rows (cout % 6 of 1 to 4) */
	int64_t rem = cout % PW_MR, n4 = rem == 3 || rem == 4 ? 1 : (rem == 1 || rem == 2) && cout >= 8 ? 2 : 0;
	int64_t n6 = (cout - 4 * n4 + PW_MR - 1) / PW_MR, npan = n6 + n4, K = cin;
	if (trans) {  /* panels of PT_NR channels: the packing below, with n6 = 0, n4 = 0 */
		n4 = 0;
		n6 = 0;
		npan = (cout + PT_NR - 1) / PT_NR;
	}
	int64_t rows = trans ? npan * PT_NR : n6 * PW_MR + n4 * 4;
	struct pw *c = hal_step_alloc(s, sizeof *c);
	float *wpk = hal_step_alloc(s, (size_t)(rows * K) * sizeof *wpk + 64);
	float *bias = hal_step_alloc(s, (size_t)rows * sizeof *bias + 64);
	if (!c || !wpk || !bias)
		return AIDOS_E_NOMEM;
	/* hal_step_alloc gives zeroed bytes: pad rows stay 0 */
	wpk = (float *)(((uintptr_t)wpk + 63) & ~(uintptr_t)63);
	bias = (float *)(((uintptr_t)bias + 63) & ~(uintptr_t)63);
	const float *wd = w->data; /* [cout][K] */
	/* untransposed: K block kb (k0, kc) of every panel at k0 * rows, the
	 * panel at o0 as [kc][mr] at k0 * rows + o0 * kc; transposed: one
	 * block (its K blocks index within the panel) */
	int64_t nkb = trans ? 1 : (K + PW_KC - 1) / PW_KC;
	for (int64_t kb = 0; kb < nkb; kb++) {
		int64_t k0 = K * kb / nkb, kc = K * (kb + 1) / nkb - k0;
		float *wb = wpk + k0 * rows;
		for (int64_t o = 0; o < cout; o++) {
			int64_t o0 = o < n6 * PW_MR ? o - o % PW_MR : n6 * PW_MR + (o - n6 * PW_MR) / 4 * 4;
			int64_t mr = o < n6 * PW_MR ? PW_MR : 4;
			if (trans) {
				o0 = o - o % PT_NR;
				mr = PT_NR;
			}
			for (int64_t k = 0; k < kc; k++)
				wb[o0 * kc + k * mr + (o - o0)] = wd[o * K + k0 + k];
		}
	}
	if (b)
		memcpy(bias, b->data, (size_t)cout * sizeof *bias);
	c->n = n;
	c->cin = cin;
	c->cout = cout;
	c->P = hw;
	c->K = K;
	c->npan = npan;
	c->n6 = n6;
	c->nkb = nkb;
	c->rows = rows;
	c->wpk = wpk;
	c->bias = bias;
	c->epi = epi;
	c->epi_reg = epi && (epi->act == IR_ACT_NONE || epi->act == IR_ACT_RELU ||
			     epi->act == IR_ACT_CLIP);
	c->tile[0][0] = HAL_GEMM_PICK(pw_tile_generic, pw_tile_avx2);
	c->tile[1][0] = HAL_GEMM_PICK(pw_tile4_generic, pw_tile4_avx2);
	c->tile[0][1] = HAL_GEMM_PICK(pw_tile_n8_generic, pw_tile_n8_avx2);
	c->tile[1][1] = HAL_GEMM_PICK(pw_tile4_n8_generic, pw_tile4_n8_avx2);
	c->ttile[0] = HAL_GEMM_PICK(pt_tile6_generic, pt_tile6_avx2);
	c->ttile[1] = HAL_GEMM_PICK(pt_tile5_generic, pt_tile5_avx2);
	c->ttile[2] = HAL_GEMM_PICK(pt_tile4_generic, pt_tile4_avx2);
	c->trans = trans;
	c->split_px = hw > PW_SPLIT_PIXELS || hw > cout;
	c->pf = hw > PW_SPLIT_PIXELS && (uint64_t)(cin * hw) * sizeof(float) >= PW_PF_MIN_BYTES;
	c->tnkb = (K + PT_KC - 1) / PT_KC;
	c->xt_floats = hw % PW_NR ? (size_t)(K * PW_NR) : 0;
	if (trans) {
		/* P = 6a + 5b + 4c with the fewest 4-pixel tiles (8 chains),
		 * then the most 6-pixel ones (any P >= 8, and 4, 5, 6: 49 =
		 * 4*6 + 5*5, not 6*6 + 5 + 2*4, 0.99-1.00x the time); else
		 * (P = 2, 3, 7) 5-pixel tiles, the last one partly repeated */
		c->n6t = 0;
		c->n5 = (hw + 4) / 5;
		c->n4 = 0;
		for (int64_t d4 = 0; d4 <= hw / 4; d4++) {
			int64_t r = hw - 4 * d4, a6 = r / 6;
			while (a6 >= 0 && (r - 6 * a6) % 5)
				a6--;
			if (a6 >= 0) {
				c->n6t = a6;
				c->n5 = (r - 6 * a6) / 5;
				c->n4 = d4;
				break;
			}
		}
		c->xt_floats = (size_t)((6 * c->n6t + 5 * c->n5 + 4 * c->n4) * K);
	}
	s->params = c;
	s->scratch_bytes = c->xt_floats * sizeof(float);
	s->op = &op_conv_pw;
	return 1;
}
