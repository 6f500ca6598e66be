/*
 * hal/ops/conv_direct.h - a direct (no GEMM) kernel for 2-D convs with a
 * short reduction, K = cin_g*kh*kw <= HAL_CONV_DIRECT_MAX_K: the stem of
 * MobileNet-style nets (3x3, stride 2, 3 input channels: K = 27).
 *
 * Through hal_gemm such a conv is store bound: every 6x16 tile is written
 * after 27 multiply-adds into a padded column buffer [cout, OH, wq], which
 * is then re-read and cropped into Y, three passes over the largest tensor
 * of the net. This kernel keeps 4 output channels x 24 output pixels of one
 * output row in registers, reads the input taps from the same zero-padded
 * polyphase planes as the GEMM path (hal/ops/nn.c CONV_PHASE: tap k of
 * pixel (oy, ox) at xph[koff[k] + oy*wq + ox], unit stride along ox), and
 * stores each finished row segment into Y once, with bias and epilogue.
 *
 * Used by hal/ops/nn.c only; the scalar reference conv stays the reference.
 */
#ifndef AIDOS_HAL_OPS_CONV_DIRECT_H
#define AIDOS_HAL_OPS_CONV_DIRECT_H

#include <stddef.h>
#include <stdint.h>
#include "hal/ir.h"

#define HAL_CONV_DIRECT_MAX_K 64  /* longer reductions go to hal_gemm */
#define HAL_CONV_DIRECT_OCB 4     /* output channels per register block */
#define HAL_CONV_DIRECT_PX 24     /* output pixels per register block */
/* Floats the kernel may read past the last plane element it needs (garbage
 * lanes of a row's last pixel block): the caller's xph must hold them. */
#define HAL_CONV_DIRECT_SLACK HAL_CONV_DIRECT_PX

typedef struct hal_conv_direct {
	const float *xph;       /* polyphase planes, borrowed */
	const int64_t *koff;    /* [K]: tap k's offset in xph */
	const float *wp;        /* hal_conv_direct_pack_w's output */
	const float *bias;      /* [cout] or NULL */
	const ir_epilogue *epi; /* or NULL */
	float *y;               /* [cout, OH, OW] */
	int64_t K, cout, OH, OW, wq;
} hal_conv_direct;

/* Floats of the packed weights of a [cout, K] matrix. */
size_t hal_conv_direct_w_floats(int64_t cout, int64_t K);

/* Packs w [cout, K] (row-major) into dst (hal_conv_direct_w_floats):
 * block b holds channels 4b..4b+3 as dst[(b*K + k)*4 + o], zero past cout. */
void hal_conv_direct_pack_w(float *dst, const float *w, int64_t cout, int64_t K);

/* Computes output rows [oy0, oy1) of every channel of d->y. Thread-safe on
 * disjoint row ranges; no allocation. */
void hal_conv_direct_rows(const hal_conv_direct *d, int64_t oy0, int64_t oy1);

/* A 1x1 conv (stride 1, no padding) read in place: xph is X [K, HW] with
 * koff[k] = k*HW, OW = HW, OH = 1. Computes pixels [p0, p1) of every
 * channel, in chunks whose taps stay in L1; never reads past X. Thread-safe
 * on disjoint pixel ranges; no allocation. */
void hal_conv_direct_1x1(const hal_conv_direct *d, int64_t p0, int64_t p1);

#endif
