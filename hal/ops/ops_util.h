/*
 * hal/ops/ops_util.h - small plan-time helpers shared by the kernel files
 * added for the conformance work (loss.c, norm.c, layout.c, einsum.c,
 * quant.c, vision.c, signal.c). All static inline, all for infer() only:
 * nothing here runs on the request path.
 */
#ifndef AIDOS_HAL_OPS_UTIL_H
#define AIDOS_HAL_OPS_UTIL_H

#include <string.h>
#include "hal/hal.h"
#include "hal/ir.h"

/* Input i, or NULL when the node has fewer inputs or it is absent. */
static inline const hal_tensor *ou_in(const hal_step *s, int i)
{
	return i < s->n_in ? s->in[i] : NULL;
}

/* Output i when the node names it (ONNX marks an unused optional output with
 * an empty name), else NULL. */
static inline hal_tensor *ou_out(const hal_step *s, int i)
{
	return i < s->n_out && s->node->out[i][0] ? s->out[i] : NULL;
}

/* Sets o's dtype and shape after checking rank, signs and that the byte size
 * does not overflow; AIDOS_E_UNSUPPORTED / AIDOS_E_SHAPE / AIDOS_E_RANGE. */
static inline int ou_set(hal_step *s, hal_tensor *o, int dtype, int rank, const int64_t *dims)
{
	if (rank < 0 || rank > HAL_MAX_RANK)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "output rank %d exceeds %d", rank, HAL_MAX_RANK);
	if (!hal_dims_ok(rank, dims))
		return hal_err(s, AIDOS_E_SHAPE, "output shape out of range");
	hal_tensor_set_shape(o, dtype, rank, dims);
	return 0;
}

/* 0 when t is float32 (or, when f64_ok, float64); AIDOS_E_INVALID naming
 * `what` when absent, AIDOS_E_UNSUPPORTED for other dtypes. */
static inline int ou_need_float(hal_step *s, const hal_tensor *t, const char *what, int f64_ok)
{
	if (!t)
		return hal_err(s, AIDOS_E_INVALID, "input %s is missing", what);
	if (t->dtype == HAL_DT_F32 || (f64_ok && t->dtype == HAL_DT_F64))
		return 0;
	return hal_err(s, AIDOS_E_UNSUPPORTED, "%s has dtype %s (float32%s supported)", what,
		       hal_dtype_name(t->dtype), f64_ok ? " and float64" : " only");
}

/* 0 when t's value is known at plan time (weights, folded values); else
 * AIDOS_E_UNSUPPORTED through hal_need_value(), which also asks the session
 * to plan again with the graph inputs t derives from value-keyed (bounded by
 * the session's element limit). t must be one of s->in[]. */
static inline int ou_need_const(hal_step *s, const hal_tensor *t, const char *what)
{
	return hal_need_value(s, t, what);
}

/* A scalar (or one-element) plan-time constant as int64 into *v. */
static inline int ou_const_int(hal_step *s, const hal_tensor *t, const char *what, int64_t *v)
{
	int rc = ou_need_const(s, t, what);
	if (rc)
		return rc;
	if (hal_numel(t) != 1 || hal_dtype_size(t->dtype) == 0 || t->dtype == HAL_DT_STRING)
		return hal_err(s, AIDOS_E_INVALID, "%s must hold one number", what);
	*v = hal_get_i64(t, 0);
	return 0;
}

/* Product of dims[a..b). */
static inline int64_t ou_span(const int64_t *dims, int a, int b)
{
	int64_t n = 1;
	for (int i = a; i < b; i++)
		n *= dims[i];
	return n;
}

#endif
