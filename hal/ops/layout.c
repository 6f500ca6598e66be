/*
 * hal/ops/layout.c - ops that move or select elements: DepthToSpace,
 * SpaceToDepth, ReverseSequence, EyeLike, OneHot, Compress, NonZero,
 * MaxUnpool, and Det (a small linear-algebra op with no other home).
 *
 * Semantics: the ONNX operator docs. Ops whose output shape depends on an
 * input's values (OneHot's depth, Compress's condition, NonZero's input,
 * MaxUnpool's output_shape) ask for that value with hal_need_value(): a
 * graph input is then value-keyed by the session (at most 64 elements),
 * anything else reports "... must be known at plan time". Data moves as bytes, so any dtype aidos
 * holds works except where a value is computed (EyeLike's and OneHot's
 * numbers, Det's float arithmetic).
 */
#include <math.h>
#include <string.h>
#include "hal/ops/ops_util.h"

/* Writes the number v into element i of a buffer of dtype dt; 0, or -1 for a
 * dtype without numbers. */
static int put_num(int dt, void *p, int64_t i, double v)
{
	switch (dt) {
	case HAL_DT_F32: ((float *)p)[i] = (float)v; return 0;
	case HAL_DT_F64: ((double *)p)[i] = v; return 0;
	case HAL_DT_I64: ((int64_t *)p)[i] = (int64_t)v; return 0;
	case HAL_DT_I32: ((int32_t *)p)[i] = (int32_t)v; return 0;
	case HAL_DT_U32: ((uint32_t *)p)[i] = (uint32_t)v; return 0;
	case HAL_DT_I16: ((int16_t *)p)[i] = (int16_t)v; return 0;
	case HAL_DT_U16: ((uint16_t *)p)[i] = (uint16_t)v; return 0;
	case HAL_DT_I8: ((int8_t *)p)[i] = (int8_t)v; return 0;
	case HAL_DT_U8: ((uint8_t *)p)[i] = (uint8_t)v; return 0;
	case HAL_DT_BOOL: ((uint8_t *)p)[i] = v != 0; return 0;
	case HAL_DT_U64: ((uint64_t *)p)[i] = (uint64_t)v; return 0;
	default: return -1;
	}
}

static int elsize(hal_step *s, const hal_tensor *t, size_t *es)
{
	*es = hal_dtype_size(t->dtype);
	if (!*es || t->dtype == HAL_DT_STRING)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "dtype %s is not supported", hal_dtype_name(t->dtype));
	return 0;
}

/* ---- DepthToSpace / SpaceToDepth ---- */

typedef struct d2s_params {
	int64_t n, c, h, w, b;   /* of the input */
	int crd;
	size_t es;
} d2s_params;

static int d2s_infer_common(hal_step *s, int to_space)
{
	const hal_tensor *x = ou_in(s, 0);
	if (!x)
		return hal_err(s, AIDOS_E_INVALID, "input is missing");
	size_t es;
	int rc = elsize(s, x, &es);
	if (rc)
		return rc;
	if (x->rank != 4)
		return hal_err(s, AIDOS_E_SHAPE, "input has rank %d (4 expected)", x->rank);
	int64_t b = hal_attr_int(s->node, "blocksize", 0);
	if (b < 1 || b > 4096)
		return hal_err(s, AIDOS_E_INVALID, "attribute blocksize %lld must be in [1, 4096]", (long long)b);
	d2s_params *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	p->n = x->dims[0], p->c = x->dims[1], p->h = x->dims[2], p->w = x->dims[3], p->b = b, p->es = es;
	int64_t d[4] = { p->n, 0, 0, 0 };
	if (to_space) {
		const char *mode = hal_attr_str(s->node, "mode", "DCR");
		if (strcmp(mode, "DCR") && strcmp(mode, "CRD"))
			return hal_err(s, AIDOS_E_INVALID, "attribute mode '%s' (DCR or CRD)", mode);
		p->crd = !strcmp(mode, "CRD");
		if (p->c % (b * b))
			return hal_err(s, AIDOS_E_SHAPE, "channels %lld are not a multiple of blocksize^2 %lld",
				       (long long)p->c, (long long)(b * b));
		d[1] = p->c / (b * b), d[2] = p->h * b, d[3] = p->w * b;
	} else {
		if (p->h % b || p->w % b)
			return hal_err(s, AIDOS_E_SHAPE, "height %lld and width %lld must be multiples of blocksize %lld",
				       (long long)p->h, (long long)p->w, (long long)b);
		if (__builtin_mul_overflow(p->c, b * b, &d[1]))
			return hal_err(s, AIDOS_E_SHAPE, "channels %lld times blocksize^2 overflow", (long long)p->c);
		d[2] = p->h / b, d[3] = p->w / b;
	}
	s->params = p;
	return ou_set(s, s->out[0], x->dtype, 4, d);
}

static int d2s_infer(hal_step *s) { return d2s_infer_common(s, 1); }
static int s2d_infer(hal_step *s) { return d2s_infer_common(s, 0); }

static int d2s_exec(hal_step *s)
{
	const d2s_params *p = s->params;
	const char *x = s->in[0]->data;
	char *y = s->out[0]->data;
	const int64_t b = p->b, oc = p->c / (b * b), oh = p->h * b, ow = p->w * b;
	for (int64_t n = 0; n < p->n; n++)
		for (int64_t c = 0; c < oc; c++)
			for (int64_t h = 0; h < oh; h++)
				for (int64_t w = 0; w < ow; w++) {
					int64_t i = h % b, j = w % b;
					int64_t ic = p->crd ? c * b * b + i * b + j : (i * b + j) * oc + c;
					int64_t src = ((n * p->c + ic) * p->h + h / b) * p->w + w / b;
					int64_t dst = ((n * oc + c) * oh + h) * ow + w;
					memcpy(y + dst * p->es, x + src * p->es, p->es);
				}
	return 0;
}

static int s2d_exec(hal_step *s)
{
	const d2s_params *p = s->params;
	const char *x = s->in[0]->data;
	char *y = s->out[0]->data;
	const int64_t b = p->b, oc = p->c * b * b, oh = p->h / b, ow = p->w / b;
	for (int64_t n = 0; n < p->n; n++)
		for (int64_t c = 0; c < p->c; c++)
			for (int64_t h = 0; h < p->h; h++)
				for (int64_t w = 0; w < p->w; w++) {
					int64_t i = h % b, j = w % b;
					int64_t src = ((n * p->c + c) * p->h + h) * p->w + w;
					int64_t dst = ((n * oc + (i * b + j) * p->c + c) * oh + h / b) * ow + w / b;
					memcpy(y + dst * p->es, x + src * p->es, p->es);
				}
	return 0;
}

/* ---- ReverseSequence ---- */

typedef struct rs_params {
	int batch_axis;
	int64_t t, b, inner;
	size_t es;
} rs_params;

static int revseq_infer(hal_step *s)
{
	const hal_tensor *x = ou_in(s, 0), *l = ou_in(s, 1);
	if (!x || !l)
		return hal_err(s, AIDOS_E_INVALID, "input and sequence_lens are required");
	size_t es;
	int rc = elsize(s, x, &es);
	if (rc)
		return rc;
	int64_t ba = hal_attr_int(s->node, "batch_axis", 1), ta = hal_attr_int(s->node, "time_axis", 0);
	if (!((ba == 0 && ta == 1) || (ba == 1 && ta == 0)))
		return hal_err(s, AIDOS_E_INVALID, "batch_axis %lld and time_axis %lld must be 0 and 1",
			       (long long)ba, (long long)ta);
	if (x->rank < 2)
		return hal_err(s, AIDOS_E_SHAPE, "input has rank %d (at least 2)", x->rank);
	if (l->dtype != HAL_DT_I64 && l->dtype != HAL_DT_I32)
		return hal_err(s, AIDOS_E_INVALID, "sequence_lens must be int32 or int64");
	if (l->rank != 1 || l->dims[0] != x->dims[ba])
		return hal_err(s, AIDOS_E_SHAPE, "sequence_lens must be [%lld]", (long long)x->dims[ba]);
	rs_params *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	p->batch_axis = (int)ba;
	p->t = x->dims[ta];
	p->b = x->dims[ba];
	p->inner = ou_span(x->dims, 2, x->rank);
	p->es = es;
	s->params = p;
	return ou_set(s, s->out[0], x->dtype, x->rank, x->dims);
}

static int revseq_exec(hal_step *s)
{
	if (hal_numel(s->out[0]) == 0)
		return 0;   /* empty output: nothing to write, data may be NULL */
	const rs_params *p = s->params;
	const char *x = s->in[0]->data;
	char *y = s->out[0]->data;
	const size_t row = (size_t)p->inner * p->es;
	for (int64_t b = 0; b < p->b; b++) {
		int64_t len = hal_get_i64(s->in[1], b);
		if (len < 0 || len > p->t)
			return hal_err(s, AIDOS_E_RANGE, "sequence_lens[%lld] = %lld is outside [0, %lld]",
				       (long long)b, (long long)len, (long long)p->t);
		for (int64_t t = 0; t < p->t; t++) {
			int64_t st = t < len ? len - 1 - t : t;
			int64_t d = p->batch_axis ? t * p->b + b : b * p->t + t;
			int64_t o = p->batch_axis ? st * p->b + b : b * p->t + st;
			memcpy(y + d * row, x + o * row, row);
		}
	}
	return 0;
}

/* ---- EyeLike ---- */

static int eyelike_infer(hal_step *s)
{
	const hal_tensor *x = ou_in(s, 0);
	if (!x)
		return hal_err(s, AIDOS_E_INVALID, "input is missing");
	if (x->rank != 2)
		return hal_err(s, AIDOS_E_SHAPE, "input has rank %d (2 expected)", x->rank);
	int64_t dt = hal_attr_int(s->node, "dtype", x->dtype);
	double probe;
	if (dt <= 0 || dt > HAL_DT_U64 || put_num((int)dt, &probe, 0, 0))
		return hal_err(s, AIDOS_E_UNSUPPORTED, "attribute dtype %lld is not supported", (long long)dt);
	int64_t *k = hal_step_alloc(s, sizeof *k);
	if (!k)
		return AIDOS_E_NOMEM;
	*k = hal_attr_int(s->node, "k", 0);
	s->params = k;
	return ou_set(s, s->out[0], (int)dt, 2, x->dims);
}

static int eyelike_exec(hal_step *s)
{
	if (hal_numel(s->out[0]) == 0)
		return 0;   /* empty output: nothing to write, data may be NULL */
	const int64_t k = *(const int64_t *)s->params;
	hal_tensor *y = s->out[0];
	const int64_t r = y->dims[0], c = y->dims[1];
	memset(y->data, 0, hal_nbytes(y));
	for (int64_t i = 0; i < r; i++)
		if (i + k >= 0 && i + k < c)
			put_num(y->dtype, y->data, i * c + i + k, 1);
	return 0;
}

/* ---- OneHot ---- */

typedef struct onehot_params {
	int64_t outer, depth, inner;
	size_t es;
} onehot_params;

static int onehot_infer(hal_step *s)
{
	const hal_tensor *ix = ou_in(s, 0), *d = ou_in(s, 1), *v = ou_in(s, 2);
	if (!ix || !d || !v)
		return hal_err(s, AIDOS_E_INVALID, "indices, depth and values are required");
	if (hal_dtype_size(ix->dtype) == 0 || ix->dtype == HAL_DT_STRING || ix->dtype == HAL_DT_BOOL)
		return hal_err(s, AIDOS_E_INVALID, "indices must be numeric, not %s", hal_dtype_name(ix->dtype));
	size_t es;
	int rc = elsize(s, v, &es);
	if (rc)
		return rc;
	if (hal_numel(v) != 2 || v->rank != 1)
		return hal_err(s, AIDOS_E_SHAPE, "values must hold 2 elements [off, on]");
	int64_t depth = 0;
	if ((rc = ou_const_int(s, d, "depth", &depth)))
		return rc;
	if (d->dtype == HAL_DT_F32 || d->dtype == HAL_DT_F64)
		depth = (int64_t)hal_get_f64(d, 0);
	if (depth < 1 || depth > HAL_MAX_SPAN)
		return hal_err(s, AIDOS_E_INVALID, "depth %lld must be positive", (long long)depth);
	int r = ix->rank + 1;
	if (r > HAL_MAX_RANK)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "output rank %d exceeds %d", r, HAL_MAX_RANK);
	int64_t ax = hal_attr_int(s->node, "axis", -1);
	int a = hal_axis(ax, r);
	if (a < 0)
		return hal_err(s, AIDOS_E_INVALID, "attribute axis %lld is out of range for rank %d",
			       (long long)ax, r);
	onehot_params *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	int64_t od[HAL_MAX_RANK];
	for (int i = 0, j = 0; i < r; i++)
		od[i] = i == a ? depth : ix->dims[j++];
	p->outer = ou_span(ix->dims, 0, a);
	p->inner = ou_span(ix->dims, a, ix->rank);
	p->depth = depth;
	p->es = es;
	s->params = p;
	return ou_set(s, s->out[0], v->dtype, r, od);
}

static int onehot_exec(hal_step *s)
{
	const onehot_params *p = s->params;
	const hal_tensor *ix = s->in[0];
	const char *off = s->in[2]->data, *on = off + p->es;
	char *y = s->out[0]->data;
	for (int64_t o = 0; o < p->outer; o++)
		for (int64_t k = 0; k < p->inner; k++) {
			double iv = hal_get_f64(ix, o * p->inner + k);
			/* NaN and huge indices select nothing (and must not be cast) */
			int64_t hot = iv > -9e18 && iv < 9e18 ? (int64_t)iv : -p->depth - 1;
			if (hot < 0)
				hot += p->depth;
			for (int64_t d = 0; d < p->depth; d++)
				memcpy(y + ((o * p->depth + d) * p->inner + k) * p->es, d == hot ? on : off,
				       p->es);
		}
	return 0;
}

/* ---- Compress ---- */

typedef struct compress_params {
	int64_t outer, dim, inner, kept;
	size_t es;
	const uint8_t *cond;   /* [min(dim, len)] plan-time constant */
	int64_t clen;
} compress_params;

static int compress_infer(hal_step *s)
{
	const hal_tensor *x = ou_in(s, 0), *c = ou_in(s, 1);
	if (!x || !c)
		return hal_err(s, AIDOS_E_INVALID, "input and condition are required");
	size_t es;
	int rc = elsize(s, x, &es);
	if (rc || (rc = ou_need_const(s, c, "condition")))
		return rc;
	if (c->dtype != HAL_DT_BOOL || c->rank != 1)
		return hal_err(s, AIDOS_E_INVALID, "condition must be a 1-D bool tensor");
	compress_params *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	int64_t od[HAL_MAX_RANK];
	int r;
	if (hal_attr_has(s->node, "axis")) {
		int64_t ax = hal_attr_int(s->node, "axis", 0);
		int a = hal_axis(ax, x->rank);
		if (a < 0)
			return hal_err(s, AIDOS_E_INVALID, "attribute axis %lld is out of range for rank %d",
				       (long long)ax, x->rank);
		p->outer = ou_span(x->dims, 0, a);
		p->dim = x->dims[a];
		p->inner = ou_span(x->dims, a + 1, x->rank);
		r = x->rank;
		memcpy(od, x->dims, sizeof od);
		od[a] = 0;
	} else {
		p->outer = 1, p->dim = hal_numel(x), p->inner = 1;
		r = 1;
		od[0] = 0;
	}
	p->clen = c->dims[0] < p->dim ? c->dims[0] : p->dim;
	p->cond = c->data;
	for (int64_t i = 0; i < p->clen; i++)
		p->kept += p->cond[i] != 0;
	for (int i = 0; i < r; i++)
		if (od[i] == 0)
			od[i] = p->kept;
	p->es = es;
	s->params = p;
	return ou_set(s, s->out[0], x->dtype, r, od);
}

static int compress_exec(hal_step *s)
{
	if (hal_numel(s->out[0]) == 0)
		return 0;   /* empty output: nothing to write, data may be NULL */
	const compress_params *p = s->params;
	const char *x = s->in[0]->data;
	char *y = s->out[0]->data;
	const size_t row = (size_t)p->inner * p->es;
	for (int64_t o = 0; o < p->outer; o++)
		for (int64_t i = 0; i < p->clen; i++)
			if (p->cond[i]) {
				memcpy(y, x + (o * p->dim + i) * row, row);
				y += row;
			}
	return 0;
}

/* ---- NonZero ---- */

static int nonzero_infer(hal_step *s)
{
	const hal_tensor *x = ou_in(s, 0);
	if (!x)
		return hal_err(s, AIDOS_E_INVALID, "input is missing");
	size_t es;
	int rc = elsize(s, x, &es);
	if (rc || (rc = ou_need_const(s, x, "input")))
		return rc;
	int64_t n = hal_numel(x), nz = 0;
	for (int64_t i = 0; i < n; i++)
		nz += hal_get_f64(x, i) != 0;
	int64_t od[2] = { x->rank, nz };
	return ou_set(s, s->out[0], HAL_DT_I64, 2, od);
}

static int nonzero_exec(hal_step *s)
{
	const hal_tensor *x = s->in[0];
	int64_t *y = s->out[0]->data;  /* [rank, nz] */
	const int64_t n = hal_numel(x), nz = s->out[0]->dims[1];
	for (int64_t i = 0, j = 0; i < n; i++) {
		if (hal_get_f64(x, i) == 0)
			continue;
		int64_t rem = i;
		for (int d = x->rank - 1; d >= 0; d--) {
			y[d * nz + j] = rem % x->dims[d];
			rem /= x->dims[d];
		}
		j++;
	}
	return 0;
}

/* ---- MaxUnpool ---- */

/* The indices of MaxUnpool count elements of the shape MaxPool would have
 * unpooled to (the default output); an explicit output_shape places that
 * result in a larger frame, each element at its own coordinates. */
typedef struct unpool_params {
	int rank;
	int64_t def[HAL_MAX_RANK];   /* default output shape */
} unpool_params;

static int maxunpool_infer(hal_step *s)
{
	const hal_tensor *x = ou_in(s, 0), *ix = ou_in(s, 1), *os = ou_in(s, 2);
	int rc = ou_need_float(s, x, "X", 1);
	if (rc)
		return rc;
	if (!ix || ix->dtype != HAL_DT_I64 || ix->rank != x->rank)
		return hal_err(s, AIDOS_E_INVALID, "I must be int64 with X's shape");
	for (int i = 0; i < x->rank; i++)
		if (ix->dims[i] != x->dims[i])
			return hal_err(s, AIDOS_E_SHAPE, "I must have X's shape");
	const int sp = x->rank - 2;
	if (sp < 1)
		return hal_err(s, AIDOS_E_SHAPE, "X has rank %d (at least 3)", x->rank);
	unpool_params *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	const int64_t *k, *st, *pd;
	int nk = hal_attr_ints(s->node, "kernel_shape", &k);
	int ns = hal_attr_ints(s->node, "strides", &st);
	int np = hal_attr_ints(s->node, "pads", &pd);
	if (nk != sp || (ns && ns != sp) || (np && np != 2 * sp))
		return hal_err(s, AIDOS_E_INVALID, "kernel_shape/strides/pads do not match %d spatial dims", sp);
	p->rank = x->rank;
	p->def[0] = x->dims[0], p->def[1] = x->dims[1];
	for (int i = 0; i < sp; i++) {
		int64_t stv = ns ? st[i] : 1;
		if (k[i] < 1 || k[i] > 65536 || stv < 1 || stv > 65536 ||
		    (np && (pd[i] < 0 || pd[i + sp] < 0 || pd[i] > 65536 || pd[i + sp] > 65536)))
			return hal_err(s, AIDOS_E_INVALID, "kernel_shape/strides/pads out of range");
		p->def[2 + i] = (x->dims[2 + i] - 1) * stv + k[i] - (np ? pd[i] + pd[i + sp] : 0);
	}
	if (!hal_dims_ok(x->rank, p->def))
		return hal_err(s, AIDOS_E_SHAPE, "the unpooled shape is out of range");
	int64_t od[HAL_MAX_RANK];
	memcpy(od, p->def, sizeof od);
	if (os && hal_numel(os) > 0) {
		if ((rc = ou_need_const(s, os, "output_shape")))
			return rc;
		if (hal_numel(os) != x->rank)
			return hal_err(s, AIDOS_E_SHAPE, "output_shape has %lld values, X rank %d",
				       (long long)hal_numel(os), x->rank);
		for (int i = 0; i < x->rank; i++) {
			od[i] = hal_get_i64(os, i);
			if (od[i] < p->def[i] || (i < 2 && od[i] != p->def[i]))
				return hal_err(s, AIDOS_E_SHAPE, "output_shape[%d] = %lld is smaller than %lld", i,
					       (long long)od[i], (long long)p->def[i]);
		}
	}
	s->params = p;
	return ou_set(s, s->out[0], x->dtype, x->rank, od);
}

static int maxunpool_exec(hal_step *s)
{
	if (hal_numel(s->out[0]) == 0)
		return 0;   /* empty output: nothing to write, data may be NULL */
	const unpool_params *p = s->params;
	const hal_tensor *x = s->in[0];
	hal_tensor *y = s->out[0];
	const int64_t *ix = s->in[1]->data;
	const int64_t n = hal_numel(x), nd = ou_span(p->def, 0, p->rank);
	const size_t es = hal_dtype_size(x->dtype);
	memset(y->data, 0, hal_nbytes(y));
	for (int64_t i = 0; i < n; i++) {
		if (ix[i] < 0 || ix[i] >= nd)
			return hal_err(s, AIDOS_E_RANGE, "I[%lld] = %lld is outside the output", (long long)i,
				       (long long)ix[i]);
		int64_t rem = ix[i], o = 0, mul = 1;
		for (int d = p->rank - 1; d >= 0; d--) {
			o += rem % p->def[d] * mul;
			rem /= p->def[d];
			mul *= y->dims[d];
		}
		memcpy((char *)y->data + o * es, (const char *)x->data + i * es, es);
	}
	return 0;
}

/* ---- Det ---- */

static int det_infer(hal_step *s)
{
	const hal_tensor *x = ou_in(s, 0);
	int rc = ou_need_float(s, x, "X", 1);
	if (rc)
		return rc;
	if (x->rank < 2 || x->dims[x->rank - 1] != x->dims[x->rank - 2])
		return hal_err(s, AIDOS_E_SHAPE, "X must be [..., M, M]");
	int64_t m = x->dims[x->rank - 1];
	if (m > 4096)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "matrices of %lld rows (at most 4096)", (long long)m);
	s->scratch_bytes = (size_t)(m * m) * sizeof(double);
	return ou_set(s, s->out[0], x->dtype, x->rank - 2, x->dims);
}

/* Determinant by LU decomposition with partial pivoting, in double. */
static int det_exec(hal_step *s)
{
	const hal_tensor *x = s->in[0];
	hal_tensor *y = s->out[0];
	const int64_t m = x->dims[x->rank - 1], nb = hal_numel(y);
	double *a = s->scratch;  /* [m, m] */
	for (int64_t b = 0; b < nb; b++) {
		for (int64_t i = 0; i < m * m; i++)
			a[i] = hal_get_f64(x, b * m * m + i);
		double det = 1;
		for (int64_t c = 0; c < m && det != 0; c++) {
			int64_t piv = c;
			for (int64_t r = c + 1; r < m; r++)
				if (fabs(a[r * m + c]) > fabs(a[piv * m + c]))
					piv = r;
			if (a[piv * m + c] == 0) {
				det = 0;
				break;
			}
			if (piv != c) {
				for (int64_t k = 0; k < m; k++) {
					double t = a[c * m + k];
					a[c * m + k] = a[piv * m + k];
					a[piv * m + k] = t;
				}
				det = -det;
			}
			det *= a[c * m + c];
			for (int64_t r = c + 1; r < m; r++) {
				double f = a[r * m + c] / a[c * m + c];
				for (int64_t k = c; k < m; k++)
					a[r * m + k] -= f * a[c * m + k];
			}
		}
		put_num(y->dtype, y->data, b, det);
	}
	return 0;
}

static const hal_op op_d2s = { "DepthToSpace", 1, HAL_OP_PURE, d2s_infer, d2s_exec };
static const hal_op op_s2d = { "SpaceToDepth", 1, HAL_OP_PURE, s2d_infer, s2d_exec };
static const hal_op op_revseq = { "ReverseSequence", 10, HAL_OP_PURE, revseq_infer, revseq_exec };
static const hal_op op_eyelike = { "EyeLike", 9, HAL_OP_PURE, eyelike_infer, eyelike_exec };
static const hal_op op_onehot = { "OneHot", 9, HAL_OP_PURE, onehot_infer, onehot_exec };
static const hal_op op_compress = { "Compress", 9, HAL_OP_PURE, compress_infer, compress_exec };
static const hal_op op_nonzero = { "NonZero", 9, HAL_OP_PURE, nonzero_infer, nonzero_exec };
static const hal_op op_maxunpool = { "MaxUnpool", 9, HAL_OP_PURE, maxunpool_infer, maxunpool_exec };
static const hal_op op_det = { "Det", 11, HAL_OP_PURE, det_infer, det_exec };

const hal_op *const hal_ops_layout[] = {
	&op_d2s, &op_s2d, &op_revseq, &op_eyelike, &op_onehot, &op_compress, &op_nonzero,
	&op_maxunpool, &op_det, NULL,
};
