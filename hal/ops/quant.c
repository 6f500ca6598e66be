/*
 * hal/ops/quant.c - linear quantisation: QuantizeLinear, DequantizeLinear,
 * DynamicQuantizeLinear, MatMulInteger, QLinearMatMul, ConvInteger,
 * QLinearConv.
 *
 * Semantics: the ONNX operator docs (opsets 10-13).
 *   Quantize:   y = saturate(round_half_even(x / scale) + zero_point)
 *   Dequantize: y = (x - zero_point) * scale
 * with scale and zero_point one value, or (opset 13) one per index of
 * `axis`. 8-bit types are uint8 (the default when no zero point is given)
 * and int8. The integer products accumulate in int32 as the ops define;
 * the QLinear ops then requantise the int32 sum with a_scale * b_scale /
 * y_scale (per-tensor scales, and per output channel for QLinearConv's
 * weights). Convolutions: 2-D, NCHW, pads/strides/dilations/group, explicit
 * padding only (auto_pad SAME_* is refused). Scalar reference loops.
 */
#include <math.h>
#include <string.h>
#include "hal/ops/ops_util.h"

static int is_q8(int dt)
{
	return dt == HAL_DT_U8 || dt == HAL_DT_I8;
}

static int32_t q8_get(int dt, const void *p, int64_t i)
{
	return dt == HAL_DT_U8 ? ((const uint8_t *)p)[i] : ((const int8_t *)p)[i];
}

static void q8_put(int dt, void *p, int64_t i, double v)
{
	double lo = dt == HAL_DT_U8 ? 0 : -128, hi = dt == HAL_DT_U8 ? 255 : 127;
	v = v != v ? 0 : v < lo ? lo : v > hi ? hi : v;   /* NaN (x / 0 * 0) saturates to 0 */
	if (dt == HAL_DT_U8)
		((uint8_t *)p)[i] = (uint8_t)v;
	else
		((int8_t *)p)[i] = (int8_t)v;
}

/* ---- QuantizeLinear / DequantizeLinear ---- */

typedef struct ql_params {
	int64_t outer, n, inner;   /* x as [outer, n, inner]; scale indexed by n (n = 1: per tensor) */
	int zdt;                   /* zero point / quantised dtype */
} ql_params;

static int ql_infer_common(hal_step *s, int quant)
{
	const hal_tensor *x = ou_in(s, 0), *sc = ou_in(s, 1), *zp = ou_in(s, 2);
	if (!x || !sc)
		return hal_err(s, AIDOS_E_INVALID, "x and scale are required");
	int rc;
	if (quant && (rc = ou_need_float(s, x, "x", 0)))
		return rc;
	if (!quant && !is_q8(x->dtype) && x->dtype != HAL_DT_I32)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "x has dtype %s (uint8, int8, int32)",
			       hal_dtype_name(x->dtype));
	if ((rc = ou_need_float(s, sc, "scale", 0)))
		return rc;
	int zdt = quant ? (zp ? zp->dtype : HAL_DT_U8) : x->dtype;
	if (zp && zp->dtype != zdt)
		return hal_err(s, AIDOS_E_INVALID, "zero point has dtype %s, expected %s",
			       hal_dtype_name(zp->dtype), hal_dtype_name(zdt));
	if (quant && !is_q8(zdt))
		return hal_err(s, AIDOS_E_UNSUPPORTED, "zero point of dtype %s (uint8 or int8)",
			       hal_dtype_name(zdt));
	ql_params *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	int64_t ns = hal_numel(sc);
	if (zp && hal_numel(zp) != ns)
		return hal_err(s, AIDOS_E_SHAPE, "zero point and scale differ in size");
	if (sc->rank == 0 || (ns == 1 && sc->rank <= 1)) {
		p->outer = 1, p->n = 1, p->inner = hal_numel(x);
	} else {
		int64_t ax = hal_attr_int(s->node, "axis", 1);
		int a = hal_axis(ax, x->rank);
		if (a < 0 || sc->rank != 1 || sc->dims[0] != x->dims[a])
			return hal_err(s, AIDOS_E_SHAPE, "scale must be one value or one per index of axis %lld",
				       (long long)ax);
		p->outer = ou_span(x->dims, 0, a);
		p->n = x->dims[a];
		p->inner = ou_span(x->dims, a + 1, x->rank);
	}
	p->zdt = zdt;
	s->params = p;
	return ou_set(s, s->out[0], quant ? zdt : HAL_DT_F32, x->rank, x->dims);
}

static int quant_infer(hal_step *s) { return ql_infer_common(s, 1); }
static int dequant_infer(hal_step *s) { return ql_infer_common(s, 0); }

static int quant_exec(hal_step *s)
{
	const ql_params *p = s->params;
	const float *x = s->in[0]->data, *sc = s->in[1]->data;
	const hal_tensor *zp = ou_in(s, 2);
	void *y = s->out[0]->data;
	for (int64_t o = 0; o < p->outer; o++)
		for (int64_t c = 0; c < p->n; c++) {
			float scale = sc[c];
			int32_t z = zp ? q8_get(p->zdt, zp->data, c) : 0;
			for (int64_t k = 0; k < p->inner; k++) {
				int64_t i = (o * p->n + c) * p->inner + k;
				q8_put(p->zdt, y, i, rint((double)(x[i] / scale)) + z);
			}
		}
	return 0;
}

static int dequant_exec(hal_step *s)
{
	const ql_params *p = s->params;
	const hal_tensor *x = s->in[0], *zp = ou_in(s, 2);
	const float *sc = s->in[1]->data;
	float *y = s->out[0]->data;
	for (int64_t o = 0; o < p->outer; o++)
		for (int64_t c = 0; c < p->n; c++) {
			int64_t z = zp ? hal_get_i64(zp, c) : 0;
			for (int64_t k = 0; k < p->inner; k++) {
				int64_t i = (o * p->n + c) * p->inner + k;
				y[i] = (float)(hal_get_i64(x, i) - z) * sc[c];
			}
		}
	return 0;
}

/* ---- DynamicQuantizeLinear ---- */

static int dql_infer(hal_step *s)
{
	const hal_tensor *x = ou_in(s, 0);
	int rc = ou_need_float(s, x, "x", 0);
	if (rc || (rc = ou_set(s, s->out[0], HAL_DT_U8, x->rank, x->dims)))
		return rc;
	if (s->n_out > 1 && (rc = ou_set(s, s->out[1], HAL_DT_F32, 0, NULL)))
		return rc;
	if (s->n_out > 2 && (rc = ou_set(s, s->out[2], HAL_DT_U8, 0, NULL)))
		return rc;
	return 0;
}

/* scale = (max(x, 0) - min(x, 0)) / 255, zero point = saturate(round(-min / scale)). */
static int dql_exec(hal_step *s)
{
	const float *x = s->in[0]->data;
	uint8_t *y = s->out[0]->data;
	const int64_t n = hal_numel(s->in[0]);
	float lo = 0, hi = 0;
	for (int64_t i = 0; i < n; i++) {
		lo = x[i] < lo ? x[i] : lo;
		hi = x[i] > hi ? x[i] : hi;
	}
	float scale = (hi - lo) / 255.0f;
	double zf = scale != 0 ? rint((double)(0.0f - lo / scale)) : 0;
	uint8_t z = (uint8_t)(zf < 0 ? 0 : zf > 255 ? 255 : zf);
	for (int64_t i = 0; i < n; i++)
		q8_put(HAL_DT_U8, y, i, scale != 0 ? rint((double)(x[i] / scale)) + z : z);
	if (s->n_out > 1 && s->out[1]->data)
		*(float *)s->out[1]->data = scale;
	if (s->n_out > 2 && s->out[2]->data)
		*(uint8_t *)s->out[2]->data = z;
	return 0;
}

/* ---- MatMulInteger / QLinearMatMul ---- */

typedef struct qmm_params {
	int64_t batch, m, k, n;
	int a_bat, b_bat;            /* whether A / B have the batch dims (else shared) */
	int ia, ib;                  /* input index of A and B */
	int iaz, ibz;                /* input index of their zero points, -1 none */
	int azp_rows, bzp_cols;      /* zero point per row of A / per column of B */
	int qlinear;
} qmm_params;

static int qmm_infer_common(hal_step *s, int qlinear)
{
	qmm_params *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	p->qlinear = qlinear;
	p->ia = 0, p->ib = qlinear ? 3 : 1;
	p->iaz = qlinear ? 2 : 2, p->ibz = qlinear ? 5 : 3;
	const hal_tensor *a = ou_in(s, p->ia), *b = ou_in(s, p->ib);
	if (!a || !b || !is_q8(a->dtype) || !is_q8(b->dtype))
		return hal_err(s, AIDOS_E_UNSUPPORTED, "A and B must be uint8 or int8");
	if (a->rank < 2 || b->rank < 2)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "A and B must have rank >= 2");
	p->m = a->dims[a->rank - 2], p->k = a->dims[a->rank - 1], p->n = b->dims[b->rank - 1];
	if (b->dims[b->rank - 2] != p->k)
		return hal_err(s, AIDOS_E_SHAPE, "inner dims %lld and %lld differ", (long long)p->k,
			       (long long)b->dims[b->rank - 2]);
	const hal_tensor *big = a->rank >= b->rank ? a : b;
	p->batch = ou_span(big->dims, 0, big->rank - 2);
	p->a_bat = a->rank > 2, p->b_bat = b->rank > 2;
	if (p->a_bat && p->b_bat) {
		if (a->rank != b->rank)
			return hal_err(s, AIDOS_E_UNSUPPORTED, "batch dims must match");
		for (int i = 0; i < a->rank - 2; i++)
			if (a->dims[i] != b->dims[i])
				return hal_err(s, AIDOS_E_UNSUPPORTED, "batch dims must match");
	}
	const hal_tensor *az = ou_in(s, p->iaz), *bz = ou_in(s, p->ibz);
	if (az && (az->dtype != a->dtype || (hal_numel(az) != 1 && hal_numel(az) != p->m)))
		return hal_err(s, AIDOS_E_INVALID, "a_zero_point must be A's dtype, one value or one per row");
	if (bz && (bz->dtype != b->dtype || (hal_numel(bz) != 1 && hal_numel(bz) != p->n)))
		return hal_err(s, AIDOS_E_INVALID, "b_zero_point must be B's dtype, one value or one per column");
	if (!az)
		p->iaz = -1;
	else
		p->azp_rows = hal_numel(az) != 1;
	if (!bz)
		p->ibz = -1;
	else
		p->bzp_cols = hal_numel(bz) != 1;
	int dt = HAL_DT_I32;
	if (qlinear) {
		const int sidx[3] = { 1, 4, 6 };
		for (int i = 0; i < 3; i++) {
			const hal_tensor *t = ou_in(s, sidx[i]);
			int rc = ou_need_float(s, t, "scale", 0);
			if (rc)
				return rc;
			if (hal_numel(t) != 1)
				return hal_err(s, AIDOS_E_UNSUPPORTED, "per-axis scales in QLinearMatMul");
		}
		const hal_tensor *yz = ou_in(s, 7);
		if (!yz || !is_q8(yz->dtype) || hal_numel(yz) != 1)
			return hal_err(s, AIDOS_E_INVALID, "y_zero_point must be one uint8/int8 value");
		dt = yz->dtype;
		if (p->azp_rows || p->bzp_cols)
			return hal_err(s, AIDOS_E_UNSUPPORTED, "per-axis zero points in QLinearMatMul");
	}
	int64_t od[HAL_MAX_RANK];
	memcpy(od, big->dims, sizeof od);
	od[big->rank - 2] = p->m, od[big->rank - 1] = p->n;
	s->params = p;
	return ou_set(s, s->out[0], dt, big->rank, od);
}

static int mmi_infer(hal_step *s) { return qmm_infer_common(s, 0); }
static int qlmm_infer(hal_step *s) { return qmm_infer_common(s, 1); }

static int qmm_exec(hal_step *s)
{
	const qmm_params *p = s->params;
	const hal_tensor *a = s->in[p->ia], *b = s->in[p->ib];
	const hal_tensor *az = p->iaz >= 0 ? s->in[p->iaz] : NULL, *bz = p->ibz >= 0 ? s->in[p->ibz] : NULL;
	double rq = 0;
	int32_t yzp = 0;
	if (p->qlinear) {
		rq = (double)*(const float *)s->in[1]->data * *(const float *)s->in[4]->data /
		     *(const float *)s->in[6]->data;
		yzp = q8_get(s->in[7]->dtype, s->in[7]->data, 0);
	}
	hal_tensor *y = s->out[0];
	for (int64_t t = 0; t < p->batch; t++)
		for (int64_t i = 0; i < p->m; i++)
			for (int64_t j = 0; j < p->n; j++) {
				int32_t za = az ? q8_get(az->dtype, az->data, p->azp_rows ? i : 0) : 0;
				int32_t zb = bz ? q8_get(bz->dtype, bz->data, p->bzp_cols ? j : 0) : 0;
				int64_t acc = 0;
				int64_t ao = (p->a_bat ? t : 0) * p->m * p->k + i * p->k;
				int64_t bo = (p->b_bat ? t : 0) * p->k * p->n + j;
				for (int64_t q = 0; q < p->k; q++)
					acc += (int64_t)(q8_get(a->dtype, a->data, ao + q) - za) *
					       (q8_get(b->dtype, b->data, bo + q * p->n) - zb);
				int64_t o = (t * p->m + i) * p->n + j;
				if (p->qlinear)
					q8_put(y->dtype, y->data, o, rint(acc * rq) + yzp);
				else
					((int32_t *)y->data)[o] = (int32_t)(uint32_t)acc;
			}
	return 0;
}

/* ---- ConvInteger / QLinearConv (2-D) ---- */

typedef struct qconv_params {
	int64_t n, c, h, w, m, kh, kw, oh, ow, group;
	int64_t pt, pl, sh, sw, dh, dw;
	int ix, iw, ixz, iwz, ib;      /* input indices; -1 absent */
	int qlinear, wz_per_m;
} qconv_params;

static int qconv_infer_common(hal_step *s, int qlinear)
{
	qconv_params *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	p->qlinear = qlinear;
	p->ix = 0, p->iw = qlinear ? 3 : 1, p->ixz = qlinear ? 2 : 2, p->iwz = qlinear ? 5 : 3;
	p->ib = qlinear && ou_in(s, 8) ? 8 : -1;
	const hal_tensor *x = ou_in(s, p->ix), *w = ou_in(s, p->iw);
	if (!x || !w || !is_q8(x->dtype) || !is_q8(w->dtype))
		return hal_err(s, AIDOS_E_UNSUPPORTED, "x and w must be uint8 or int8");
	if (x->rank != 4 || w->rank != 4)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "only 2-D convolution (rank 4) is supported");
	const char *ap = hal_attr_str(s->node, "auto_pad", "NOTSET");
	if (strcmp(ap, "NOTSET") && strcmp(ap, "VALID"))
		return hal_err(s, AIDOS_E_UNSUPPORTED, "auto_pad %s", ap);
	p->n = x->dims[0], p->c = x->dims[1], p->h = x->dims[2], p->w = x->dims[3];
	p->m = w->dims[0], p->kh = w->dims[2], p->kw = w->dims[3];
	p->group = hal_attr_int(s->node, "group", 1);
	if (p->group < 1 || p->c % p->group || p->m % p->group || w->dims[1] != p->c / p->group)
		return hal_err(s, AIDOS_E_SHAPE, "group %lld does not fit %lld input and %lld output channels",
			       (long long)p->group, (long long)p->c, (long long)p->m);
	const int64_t *v;
	int nv;
	int64_t pads[4] = { 0 }, st[2] = { 1, 1 }, dl[2] = { 1, 1 };
	if ((nv = hal_attr_ints(s->node, "pads", &v)) == 4)
		memcpy(pads, v, sizeof pads);
	else if (nv)
		return hal_err(s, AIDOS_E_INVALID, "pads has %d values (4 expected)", nv);
	if ((nv = hal_attr_ints(s->node, "strides", &v)) == 2)
		memcpy(st, v, sizeof st);
	else if (nv)
		return hal_err(s, AIDOS_E_INVALID, "strides has %d values (2 expected)", nv);
	if ((nv = hal_attr_ints(s->node, "dilations", &v)) == 2)
		memcpy(dl, v, sizeof dl);
	else if (nv)
		return hal_err(s, AIDOS_E_INVALID, "dilations has %d values (2 expected)", nv);
	for (int i = 0; i < 4; i++)
		if (pads[i] < 0 || pads[i] > 65536 || (i < 2 && (st[i] < 1 || st[i] > 65536 || dl[i] < 1 || dl[i] > 65536)))
			return hal_err(s, AIDOS_E_INVALID, "pads/strides/dilations out of range");
	p->pt = pads[0], p->pl = pads[1], p->sh = st[0], p->sw = st[1], p->dh = dl[0], p->dw = dl[1];
	int64_t eh = (p->kh - 1) * p->dh + 1, ew = (p->kw - 1) * p->dw + 1;
	p->oh = (p->h + pads[0] + pads[2] - eh) / p->sh + 1;
	p->ow = (p->w + pads[1] + pads[3] - ew) / p->sw + 1;
	if (p->h + pads[0] + pads[2] < eh || p->w + pads[1] + pads[3] < ew)
		return hal_err(s, AIDOS_E_SHAPE, "kernel larger than the padded input");
	const hal_tensor *xz = ou_in(s, p->ixz), *wz = ou_in(s, p->iwz);
	if (xz && (xz->dtype != x->dtype || hal_numel(xz) != 1))
		return hal_err(s, AIDOS_E_UNSUPPORTED, "x_zero_point must be one value of x's dtype");
	if (wz && (wz->dtype != w->dtype || (hal_numel(wz) != 1 && hal_numel(wz) != p->m)))
		return hal_err(s, AIDOS_E_INVALID, "w_zero_point must be one value or one per output channel");
	if (!xz)
		p->ixz = -1;
	if (!wz)
		p->iwz = -1;
	else
		p->wz_per_m = hal_numel(wz) != 1;
	int dt = HAL_DT_I32;
	if (qlinear) {
		const hal_tensor *xs = ou_in(s, 1), *ws = ou_in(s, 4), *ys = ou_in(s, 6), *yz = ou_in(s, 7);
		int rc;
		if ((rc = ou_need_float(s, xs, "x_scale", 0)) || (rc = ou_need_float(s, ws, "w_scale", 0)) ||
		    (rc = ou_need_float(s, ys, "y_scale", 0)))
			return rc;
		if (hal_numel(xs) != 1 || hal_numel(ys) != 1 || (hal_numel(ws) != 1 && hal_numel(ws) != p->m))
			return hal_err(s, AIDOS_E_INVALID, "scales: x and y one value, w one or one per channel");
		if (!yz || !is_q8(yz->dtype) || hal_numel(yz) != 1)
			return hal_err(s, AIDOS_E_INVALID, "y_zero_point must be one uint8/int8 value");
		const hal_tensor *b = p->ib >= 0 ? s->in[p->ib] : NULL;
		if (b && (b->dtype != HAL_DT_I32 || hal_numel(b) != p->m))
			return hal_err(s, AIDOS_E_INVALID, "B must be int32 with one value per output channel");
		dt = yz->dtype;
	}
	int64_t od[4] = { p->n, p->m, p->oh, p->ow };
	s->params = p;
	return ou_set(s, s->out[0], dt, 4, od);
}

static int convint_infer(hal_step *s) { return qconv_infer_common(s, 0); }
static int qlconv_infer(hal_step *s) { return qconv_infer_common(s, 1); }

static int qconv_exec(hal_step *s)
{
	const qconv_params *p = s->params;
	const hal_tensor *x = s->in[p->ix], *w = s->in[p->iw];
	const hal_tensor *xz = p->ixz >= 0 ? s->in[p->ixz] : NULL, *wz = p->iwz >= 0 ? s->in[p->iwz] : NULL;
	const int32_t zx = xz ? q8_get(xz->dtype, xz->data, 0) : 0;
	hal_tensor *y = s->out[0];
	const int64_t cg = p->c / p->group, mg = p->m / p->group;
	for (int64_t n = 0; n < p->n; n++)
		for (int64_t m = 0; m < p->m; m++) {
			const int64_t g = m / mg;
			const int32_t zw = wz ? q8_get(wz->dtype, wz->data, p->wz_per_m ? m : 0) : 0;
			double rq = 0;
			int32_t yzp = 0, bias = 0;
			if (p->qlinear) {
				const hal_tensor *ws = s->in[4];
				rq = (double)*(const float *)s->in[1]->data *
				     ((const float *)ws->data)[hal_numel(ws) == 1 ? 0 : m] /
				     *(const float *)s->in[6]->data;
				yzp = q8_get(s->in[7]->dtype, s->in[7]->data, 0);
				bias = p->ib >= 0 ? ((const int32_t *)s->in[p->ib]->data)[m] : 0;
			}
			for (int64_t oy = 0; oy < p->oh; oy++)
				for (int64_t ox = 0; ox < p->ow; ox++) {
					int64_t acc = bias;
					for (int64_t c = 0; c < cg; c++)
						for (int64_t ky = 0; ky < p->kh; ky++) {
							int64_t iy = oy * p->sh - p->pt + ky * p->dh;
							if (iy < 0 || iy >= p->h)
								continue;
							for (int64_t kx = 0; kx < p->kw; kx++) {
								int64_t ix = ox * p->sw - p->pl + kx * p->dw;
								if (ix < 0 || ix >= p->w)
									continue;
								int64_t xi = ((n * p->c + g * cg + c) * p->h + iy) * p->w + ix;
								int64_t wi = ((m * cg + c) * p->kh + ky) * p->kw + kx;
								acc += (int64_t)(q8_get(x->dtype, x->data, xi) - zx) *
								       (q8_get(w->dtype, w->data, wi) - zw);
							}
						}
					int64_t o = ((n * p->m + m) * p->oh + oy) * p->ow + ox;
					if (p->qlinear)
						q8_put(y->dtype, y->data, o, rint(acc * rq) + yzp);
					else
						((int32_t *)y->data)[o] = (int32_t)(uint32_t)acc;
				}
		}
	return 0;
}

static const hal_op op_quant = { "QuantizeLinear", 10, HAL_OP_PURE, quant_infer, quant_exec };
static const hal_op op_dequant = { "DequantizeLinear", 10, HAL_OP_PURE, dequant_infer, dequant_exec };
static const hal_op op_dql = { "DynamicQuantizeLinear", 11, HAL_OP_PURE, dql_infer, dql_exec };
static const hal_op op_mmi = { "MatMulInteger", 10, HAL_OP_PURE, mmi_infer, qmm_exec };
static const hal_op op_qlmm = { "QLinearMatMul", 10, HAL_OP_PURE, qlmm_infer, qmm_exec };
static const hal_op op_convint = { "ConvInteger", 10, HAL_OP_PURE, convint_infer, qconv_exec };
static const hal_op op_qlconv = { "QLinearConv", 10, HAL_OP_PURE, qlconv_infer, qconv_exec };

const hal_op *const hal_ops_quant[] = {
	&op_quant, &op_dequant, &op_dql, &op_mmi, &op_qlmm, &op_convint, &op_qlconv, NULL,
};
