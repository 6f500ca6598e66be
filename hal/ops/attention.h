/*
 * hal/ops/attention.h - scaled dot-product attention as one step, planned
 * by hal_fuse_xfmr (hal/fuse_xfmr.c) from the exporters' spelling:
 *
 *   Transpose(q, 0213) -> MatMul <- Transpose(k, 0231)
 *   [Div or Mul by a scalar] [Add mask] Softmax(last axis)
 *   MatMul <- Transpose(v, 0213), Transpose(0213)
 *
 * Inputs q [B,S,H,D], k and v [B,T,H,D] (the projections reshaped, heads
 * read in place: no transposed copies), optional mask broadcasting to
 * [B,H,S,T]; output [B,S,H,D]. Node attribute "scale" (float): the factor
 * applied to Q K^T. Never in a model file and never on the reference path:
 * the unfused graph is its reference (tests/test_matmul.c).
 */
#ifndef AIDOS_HAL_OPS_ATTENTION_H
#define AIDOS_HAL_OPS_ATTENTION_H

#include "hal/hal.h"

extern const hal_op hal_op_attention;

#endif
