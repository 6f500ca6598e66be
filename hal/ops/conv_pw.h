/*
 * hal/ops/conv_pw.h - 1x1 Conv over small and mid planes (7x7 to 64x64)
 * read in place, without packing or transposing X (see hal/ops/conv_pw.c), entered
 * from Conv's infer() (hal/ops/nn.c).
 */
#ifndef AIDOS_HAL_OPS_CONV_PW_H
#define AIDOS_HAL_OPS_CONV_PW_H

#include <stdint.h>
#include "hal/hal.h"
#include "hal/ir.h"

#define HAL_CONV_PW_MIN_PIXELS 16   /* fewer: one 16-pixel tile mostly idle */
/* more: hal_gemm's in-place 1x1 path (at 28x28 and 56x56 this path measured
 * 0.72-0.91x hal_gemm's time, MobileNetV2's layers alone) */
#define HAL_CONV_PW_MAX_PIXELS 4096
/* Planes of 2 to HAL_CONV_PW_T_BELOW - 1 pixels with at least as many
 * output channels run transposed: channels across the vector lanes. */
#define HAL_CONV_PW_T_BELOW 100

/* Takes over step s (a Conv: X [n, cin, h, w] variable, W [cout, cin, 1, 1]
 * constant, optional constant B; group 1, stride 1, no padding, its output
 * shape already set by infer(), epilogue epi or NULL) when h*w lies in
 * [HAL_CONV_PW_MIN_PIXELS, HAL_CONV_PW_MAX_PIXELS]: packs W, sets s->op,
 * s->params and s->scratch_bytes and returns 1. Returns 0, touching
 * nothing, when the step does not suit, or AIDOS_E_NOMEM. Called from
 * infer() only. */
int hal_conv_pw_plan(hal_step *s, int64_t n, int64_t cin, int64_t cout, int64_t hw,
		     const ir_epilogue *epi);

#endif
