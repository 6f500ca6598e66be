/*
 * hal/ops/conv_dw.h - 2-D depthwise Conv (group = input channels = output
 * channels) read straight from the input planes, no padded or polyphase
 * copy (see hal/ops/conv_dw.c); entered from Conv's infer() (hal/ops/nn.c).
 */
#ifndef AIDOS_HAL_OPS_CONV_DW_H
#define AIDOS_HAL_OPS_CONV_DW_H

#include "hal/hal.h"
#include "hal/ops/conv_small.h"

/* Takes over step s (a Conv: X, W [c, 1, kh, kw], optional B [c]; g->cin =
 * g->cout = c, one channel per group) when its geometry suits this path
 * (column stride 1 or 2, kh*kw <= 64, kw <= 8): sets s->op, s->params and
 * returns 1. Returns 0, touching nothing, when it does not suit (the caller
 * plans its own path), or AIDOS_E_NOMEM. Called from infer() only. */
int hal_conv_dw_plan(hal_step *s, const hal_conv2d_geom *g);

#endif
