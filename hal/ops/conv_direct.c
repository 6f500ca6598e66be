/*
 * hal/ops/conv_direct.c - direct conv over polyphase planes for short
 * reductions (see conv_direct.h).
 *
 * Register block: 4 output channels x 3 vectors of 8 pixels = 12
 * accumulators; per tap 3 unit-stride loads and 4 broadcasts feed 12 FMAs
 * (AVX2 has 16 vector registers: 12 + 3 + 1). Each accumulator is a chain
 * of K dependent FMAs, 12 chains hide the FMA latency.
 */
#if defined(__GNUC__) && !defined(__clang__)
/* `a += w * x` must become one FMA (GCC's ISO C mode does not contract). */
#pragma GCC optimize("fp-contract=fast")
#endif

#include <string.h>
#include "hal/gemm.h"
#include "hal/ops/conv_direct.h"
#include "hal/ops/vec.h"

#define OCB HAL_CONV_DIRECT_OCB
#define PX HAL_CONV_DIRECT_PX
#define MIN(a, b) ((a) < (b) ? (a) : (b))


/* Built for x86-64-v3 (AVX2+FMA) and the baseline, picked at load time. */
#if defined(__x86_64__) && !defined(__clang__) && __GNUC__ >= 12
#define CD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#elif defined(__x86_64__) && defined(__clang__)
#define CD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CD_CLONES
#endif

#define SPLAT8(x) ((v8f){ x, x, x, x, x, x, x, x })

size_t hal_conv_direct_w_floats(int64_t cout, int64_t K)
{
	return (size_t)((cout + OCB - 1) / OCB * OCB * K);
}

void hal_conv_direct_pack_w(float *dst, const float *w, int64_t cout, int64_t K)
{
	for (int64_t b = 0; b < (cout + OCB - 1) / OCB; b++)
		for (int64_t k = 0; k < K; k++)
			for (int64_t o = 0; o < OCB; o++) {
				int64_t oc = b * OCB + o;
				dst[(b * K + k) * OCB + o] = oc < cout ? w[oc * K + k] : 0.0f;
			}
}

/* out[o][i] = b4[o] + sum_k w[k*4 + o] * xb[koff[k] + i], o < 4, i < 24. */
CD_CLONES
static void block(float out[OCB][PX], const float *xb, const int64_t *koff, const float *w,
		  int64_t K, const float *b4)
{
	float b0 = b4[0], b1 = b4[1], b2 = b4[2], b3 = b4[3];
	v8f a00 = SPLAT8(b0), a01 = a00, a02 = a00, a10 = SPLAT8(b1), a11 = a10, a12 = a10;
	v8f a20 = SPLAT8(b2), a21 = a20, a22 = a20, a30 = SPLAT8(b3), a31 = a30, a32 = a30;
	for (int64_t k = 0; k < K; k++, w += OCB) {
		const float *r = xb + koff[k];
		v8f x0, x1, x2;
		memcpy(&x0, r, sizeof x0);
		memcpy(&x1, r + 8, sizeof x1);
		memcpy(&x2, r + 16, sizeof x2);
		float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3];
		v8f v = SPLAT8(w0);
		a00 += v * x0; a01 += v * x1; a02 += v * x2;
		v = SPLAT8(w1);
		a10 += v * x0; a11 += v * x1; a12 += v * x2;
		v = SPLAT8(w2);
		a20 += v * x0; a21 += v * x1; a22 += v * x2;
		v = SPLAT8(w3);
		a30 += v * x0; a31 += v * x1; a32 += v * x2;
	}
	memcpy(out[0], &a00, 32); memcpy(out[0] + 8, &a01, 32); memcpy(out[0] + 16, &a02, 32);
	memcpy(out[1], &a10, 32); memcpy(out[1] + 8, &a11, 32); memcpy(out[1] + 16, &a12, 32);
	memcpy(out[2], &a20, 32); memcpy(out[2] + 8, &a21, 32); memcpy(out[2] + 16, &a22, 32);
	memcpy(out[3], &a30, 32); memcpy(out[3] + 8, &a31, 32); memcpy(out[3] + 16, &a32, 32);
}

/* The bias of output-channel block b (zeros past cout or without a bias)
 * into b4; returns how many of its OCB channels exist. */
static inline __attribute__((always_inline)) int64_t block_bias(const hal_conv_direct *d,
								 int64_t b, float b4[OCB])
{
	int64_t no = MIN(OCB, d->cout - b * OCB);
	for (int64_t o = 0; o < OCB; o++)
		b4[o] = 0.0f;
	for (int64_t o = 0; o < no && d->bias; o++)
		b4[o] = d->bias[b * OCB + o];
	return no;
}

/* The first n (<= PX) pixels of out's first no channels to y, channel o at
 * y + o * stride. */
static inline __attribute__((always_inline)) void block_store(float *y, int64_t stride,
							      float out[OCB][PX], int64_t no,
							      int64_t n)
{
	if (n == PX)  /* fixed size: vector moves, not a libc call */
		for (int64_t o = 0; o < no; o++)
			memcpy(y + o * stride, out[o], PX * sizeof *y);
	else
		for (int64_t o = 0; o < no; o++)
			memcpy(y + o * stride, out[o], (size_t)n * sizeof *y);
}

void hal_conv_direct_rows(const hal_conv_direct *d, int64_t oy0, int64_t oy1)
{
	int64_t nb = (d->cout + OCB - 1) / OCB, OH = d->OH, OW = d->OW;
	float out[OCB][PX] __attribute__((aligned(32)));
	for (int64_t oy = oy0; oy < oy1; oy++)
		for (int64_t b = 0; b < nb; b++) {
			const float *w = d->wp + b * d->K * OCB;
			float b4[OCB];
			int64_t no = block_bias(d, b, b4);
			float *y = d->y + (b * OCB * OH + oy) * OW;  /* channel b*4, row oy */
			for (int64_t ox = 0; ox < OW; ox += PX) {
				/* lanes past OW compute garbage from the row's padding,
				 * the next row or the slack; they are not stored */
				block(out, d->xph + oy * d->wq + ox, d->koff, w, d->K, b4);
				block_store(y + ox, OH * OW, out, no, MIN(PX, OW - ox));
			}
			if (d->epi)
				for (int64_t o = 0; o < no; o++)
					hal_epilogue_apply(d->epi, y + o * OH * OW, OW);
		}
}

/* Pixels of the 1x1 path's chunk: the taps of a chunk (K x 240 floats)
 * stay in L1 across all output-channel blocks. */
#define CHUNK (10 * PX)
#define CHUNK_LINES (CHUNK * (int64_t)sizeof(float) / 64)  /* 15 per row */

/* The 1x1 path over pixels [p0, p1): chunk by chunk, every output-channel
 * block. Its planes are large (112x112: X 1.6 MiB, Y 0.8 MiB), so X
 * arrives from L3 and Y's lines are not in cache; the K + cout rows of a
 * chunk are as many separate streams (rows 49 KiB apart), more than the
 * hardware prefetcher follows. So while a chunk computes, the next one's
 * lines (X's K rows to read, Y's cout rows to write) are prefetched into
 * L2, a slice before each register block: MobileNetV2's 32->16 at
 * 112x112 took 0.64-0.74x the time on 1 thread, 0.82-0.94x on 2 (A/B in
 * one process, alternating runs; X's lines alone 0.76-0.95x; into L1
 * instead of L2, 1.02-1.04x). The last chunk of a range prefetches
 * nothing. */
void hal_conv_direct_1x1(const hal_conv_direct *d, int64_t p0, int64_t p1)
{
	int64_t nb = (d->cout + OCB - 1) / OCB, HW = d->OW;
	float out[OCB][PX] __attribute__((aligned(32)));
	float tail[HAL_CONV_DIRECT_MAX_K * PX];  /* a last partial block's taps */
	int64_t tkoff[HAL_CONV_DIRECT_MAX_K];
	/* lines to prefetch per chunk: X's, then Y's; per register block */
	const int64_t nx = d->K * CHUNK_LINES, nl = nx + d->cout * CHUNK_LINES;
	const int64_t step = (nl + nb * (CHUNK / PX) - 1) / (nb * (CHUNK / PX));
	for (int64_t c0 = p0; c0 < p1; c0 += CHUNK) {
		int64_t c1 = MIN(c0 + CHUNK, p1);
		/* prefetch only a next chunk that is whole: its lines lie in X and Y */
		int64_t l = c1 + CHUNK <= p1 ? 0 : nl;
		for (int64_t b = 0; b < nb; b++) {
			const float *w = d->wp + b * d->K * OCB;
			float b4[OCB];
			int64_t no = block_bias(d, b, b4);
			float *y = d->y + b * OCB * HW;  /* channel b*4 */
			for (int64_t p = c0; p < c1; p += PX) {
				for (int64_t e = l + step; l < nl && l < e; l++)
					if (l < nx)
						__builtin_prefetch(d->xph + d->koff[l / CHUNK_LINES] + c1 +
								   l % CHUNK_LINES * 16, 0, 2);
					else
						__builtin_prefetch(d->y + (l - nx) / CHUNK_LINES * HW + c1 +
								   (l - nx) % CHUNK_LINES * 16, 1, 2);
				int64_t n = MIN(PX, c1 - p);
				if (p + PX <= HW) {
					block(out, d->xph + p, d->koff, w, d->K, b4);
				} else {
					/* the input ends inside this block: read a copy */
					for (int64_t k = 0; k < d->K; k++) {
						memcpy(tail + k * PX, d->xph + d->koff[k] + p,
						       (size_t)n * sizeof *tail);
						memset(tail + k * PX + n, 0, (size_t)(PX - n) * sizeof *tail);
						tkoff[k] = k * PX;
					}
					block(out, tail, tkoff, w, d->K, b4);
				}
				block_store(y + p, HW, out, no, n);
			}
			if (d->epi)
				for (int64_t o = 0; o < no; o++)
					hal_epilogue_apply(d->epi, y + o * HW + c0, c1 - c0);
		}
	}
}
