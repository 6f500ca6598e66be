/*
 * hal/ops/vec.h - GCC vector types shared by the hand-tiled Conv kernels
 * (conv_direct, conv_dw, conv_fused, conv_pw, conv_small), and the 4x4
 * register transpose two of them store their pixel-major tiles with.
 *
 * The kernels are compiled once per ISA (gcc target attributes); these are
 * plain vector types, so each build lowers them to its own instructions.
 */
#ifndef AIDOS_HAL_OPS_VEC_H
#define AIDOS_HAL_OPS_VEC_H

#include <stdint.h>
#include <string.h>

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));

/* Transposes a block of 4 pixels x 4 channels into NCHW rows:
 * y[c*ys + i] = t[i*ts + c] for i, c < 4 (unpack, then move halves: SSE
 * shuffles on every x86-64), one 16-byte store per channel. t and y need
 * no alignment. */
static inline void vec_tr4_store(float *y, int64_t ys, const float *t, int64_t ts)
{
	const v4i lo = { 0, 4, 1, 5 }, hi = { 2, 6, 3, 7 }, l2 = { 0, 1, 4, 5 }, h2 = { 2, 3, 6, 7 };
	v4f a0, a1, a2, a3;
	memcpy(&a0, t, sizeof a0);
	memcpy(&a1, t + ts, sizeof a1);
	memcpy(&a2, t + 2 * ts, sizeof a2);
	memcpy(&a3, t + 3 * ts, sizeof a3);
	v4f t0 = __builtin_shuffle(a0, a1, lo), t1 = __builtin_shuffle(a2, a3, lo);
	v4f t2 = __builtin_shuffle(a0, a1, hi), t3 = __builtin_shuffle(a2, a3, hi);
	v4f b0 = __builtin_shuffle(t0, t1, l2), b1 = __builtin_shuffle(t0, t1, h2);
	v4f b2 = __builtin_shuffle(t2, t3, l2), b3 = __builtin_shuffle(t2, t3, h2);
	memcpy(y, &b0, sizeof b0);
	memcpy(y + ys, &b1, sizeof b1);
	memcpy(y + 2 * ys, &b2, sizeof b2);
	memcpy(y + 3 * ys, &b3, sizeof b3);
}

#endif
