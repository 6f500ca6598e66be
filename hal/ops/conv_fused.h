/*
 * hal/ops/conv_fused.h - an inverted-residual "expand then depthwise" pair
 * of Convs as one step that never stores the expanded tensor (see
 * hal/ops/conv_fused.c); built by the plan-time matcher in
 * hal/fuse_conv.c (hal_fuse_conv_plan, hal/plan.h).
 *
 *   E = act_e(We * X + be)        1x1, stride 1, no padding: [n, ce, h, w]
 *   Y = act_d(dw3x3_s(E) + bd)    depthwise 3x3, pad 1, stride s in {1, 2}
 *
 * E's rows are computed a band at a time into a small ring (every
 * expanded channel x a few rows x w, in L2) and consumed there by the
 * depthwise taps, so only X and Y touch memory. The expand may also be a
 * stem (3x3, stride 2, pad 1, cin*9 <= 64 taps), then 3x3 stem -> depthwise.
 */
#ifndef AIDOS_HAL_OPS_CONV_FUSED_H
#define AIDOS_HAL_OPS_CONV_FUSED_H

#include <stddef.h>
#include <stdint.h>
#include "hal/hal.h"
#include "hal/ir.h"

/* What the matcher found. Tensors are borrowed from the plan (valid while
 * it lives); the weights must be plan-time constants. */
typedef struct hal_conv_fused_desc {
	hal_tensor *x;           /* [n, cin, h, w] float32 */
	const hal_tensor *we;    /* [ce, cin, 1, 1] */
	const hal_tensor *be;    /* [ce] or NULL */
	const ir_epilogue *epe;  /* the expand's activation, or NULL */
	const hal_tensor *wd;    /* [ce, 1, 3, 3] */
	const hal_tensor *bd;    /* [ce] or NULL */
	const ir_epilogue *epd;  /* the depthwise's activation, or NULL */
	hal_tensor *y;           /* [n, ce, oh, ow] */
	int64_t stride;          /* 1 or 2, both axes */
	int stem;                /* the expand is instead a 3x3 Conv, stride 2,
				  * pad 1 (we [ce, cin, 3, 3], cin*9 <= 64): a
				  * MobileNet stem; E is then [n, ce, h', w'] with
				  * h' = (h-1)/2 + 1 */
} hal_conv_fused_desc;

/* Expanded tensors ([ce, h, w] of one image) of fewer bytes than this stay
 * on the two separate steps (64 KiB: the smallest pair measured to gain;
 * see hal/ops/conv_fused.c). Tests set it to 0 to run the fused step on
 * small shapes. */
extern size_t hal_conv_fused_min_bytes;

/* Test hooks, read at plan time / run time: output rows per band (0: the
 * step's own choice, else 1 to 16), and the most bands the downward
 * walker of a pair claims when the step has two or more walkers (< 0: no
 * limit; the upward walker then takes the rest, so a test puts the
 * meeting point where it wants). */
extern int hal_conv_fused_band_rows;
extern int64_t hal_conv_fused_down_bands;
/* Test hook, read at plan time: on two or more threads, how the walkers
 * split the work: 0 the step's choice (channels where X is small, else
 * rows), < 0 always rows, > 0 channels, this many (rounded up to a
 * multiple of 4) per claim. */
extern int hal_conv_fused_group;
/* Test hook, read at plan time: rows per channel in a walker's ring: 0
 * the band's window ((B-1)*s+3 rows), > 0 this many (at least the
 * window), < 0 the window rounded up to a multiple of B*s (each full
 * band's new rows never wrap; the choice before the 512 KiB L2 was
 * measured, kept for A/B and for tests). */
extern int hal_conv_fused_ring_rows;
/* Test hook, read at plan time: E pixels per expand chunk (0: the step's
 * choice, 48 to 240 by the expand's reduction length; else this many, at
 * least 8). */
extern int hal_conv_fused_chunk;
/* Test hook, read at plan time: -1 keeps stride-2 steps on the NCHW ring
 * (0: channel-blocked where it applies, see conv_fused.c). */
extern int hal_conv_fused_cb;

/* Whether the fused step computes this pair: the geometry above (output
 * widths of at least 8, or under 8 where the stride-2 channel-blocked ring
 * applies: MobileNetV2's 14x14 -> 7x7 pair) and an expanded tensor of
 * hal_conv_fused_min_bytes or more. Plan time only. */
int hal_conv_fused_fits(const hal_conv_fused_desc *d);

/* Fills *s (zeroed by the caller, s->plan, s->node and s->opset set) as
 * the fused step: op, inputs, output, params (the expand's weights packed
 * for hal_gemm), scratch. threads: the plan's thread count (one walker and
 * ring per thread; the walkers claim bands of output rows from both ends
 * of the plane, see hal/ops/conv_fused.c). Returns 0 or AIDOS_E_NOMEM. Plan time only. */
int hal_conv_fused_make(hal_step *s, const hal_conv_fused_desc *d, int threads);

#endif
