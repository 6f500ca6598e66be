/*
 * hal/ops/conv_small.h - 2-D Conv over small output planes (see
 * hal/ops/conv_small.c), entered from Conv's infer() (hal/ops/nn.c).
 */
#ifndef AIDOS_HAL_OPS_CONV_SMALL_H
#define AIDOS_HAL_OPS_CONV_SMALL_H

#include <stdint.h>
#include "hal/hal.h"
#include "hal/ir.h"

/* The geometry of a 2-D, ungrouped Conv whose output shape Conv's infer()
 * has already set: X [n, cin, h, w], W [cout, cin, kh, kw], Y [n, cout,
 * oh, ow]; strides sh, sw; dilations dh, dw; top and left pads pt, pl (the
 * bottom and right ones follow from oh, ow). */
typedef struct hal_conv2d_geom {
	int64_t n, cin, cout, h, w, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl;
	const ir_epilogue *epi; /* fused activation, or NULL */
} hal_conv2d_geom;

/* Takes over step s (a Conv: X, constant W, optional constant B) when its
 * geometry suits this path: sets s->op, s->params and s->scratch_bytes and
 * returns 1. Returns 0, touching nothing, when it does not suit (the caller
 * plans its own path), or AIDOS_E_NOMEM. Called from infer() only. */
int hal_conv_small_plan(hal_step *s, const hal_conv2d_geom *g);

#endif
