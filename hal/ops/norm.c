/*
 * hal/ops/norm.c - normalisations: LayerNormalization (opset 17),
 * InstanceNormalization, MeanVarianceNormalization, LRN, and Hardmax (the
 * one-hot of the first maximum along an axis, Softmax's hard sibling).
 *
 * Semantics: the ONNX operator docs. LayerNormalization normalises X over
 * dims [axis, rank) with the population variance, y = (x - mean) *
 * rsqrt(var + epsilon) * Scale + B, and may also output Mean and InvStdDev
 * (shape X's dims with [axis, rank) set to 1). Scale and B are broadcast to
 * the normalised dims (either their full shape, as PyTorch exports, or one
 * value). InstanceNormalization does the same per (n, c) plane with
 * per-channel scale and bias; MeanVarianceNormalization is (x - mean) /
 * (std + 1e-9) over `axes` (default [0, 2, 3]) as ONNX's reference computes
 * it; LRN sums squares over a window of channels (size, alpha, beta, bias).
 * Row statistics accumulate in double. float32 only.
 */
#include <math.h>
#include <string.h>
#include "hal/ops/ops_util.h"

#define GRAIN 4096   /* elements per parallel chunk */

typedef struct row_norm {
	int64_t rows, len;    /* X viewed as [rows, len] */
	float eps;
	int scale_mode;       /* 0: per element of a row, 1: one value, 2: per row % chan */
	int64_t chan;         /* InstanceNorm: rows are (n, c) with c = row % chan */
	int has_b;
} row_norm;

typedef struct rn_job {
	const row_norm *p;
	const float *x, *scale, *b;
	float *y, *mean, *inv;
} rn_job;

/* Normalises rows [r0, r1). */
static void rn_range(void *arg, int64_t r0, int64_t r1)
{
	const rn_job *j = arg;
	const row_norm *p = j->p;
	for (int64_t r = r0; r < r1; r++) {
		const float *x = j->x + r * p->len;
		float *y = j->y + r * p->len;
		double sum = 0, sq = 0;
		for (int64_t i = 0; i < p->len; i++)
			sum += x[i];
		double m = p->len ? sum / (double)p->len : 0;
		for (int64_t i = 0; i < p->len; i++)
			sq += (x[i] - m) * (x[i] - m);
		double var = p->len ? sq / (double)p->len : 0;
		float inv = (float)(1.0 / sqrt(var + p->eps)), mf = (float)m;
		if (j->mean)
			j->mean[r] = mf;
		if (j->inv)
			j->inv[r] = inv;
		if (p->scale_mode == 0) {
			for (int64_t i = 0; i < p->len; i++)
				y[i] = (x[i] - mf) * inv * j->scale[i] + (p->has_b ? j->b[i] : 0.0f);
		} else {
			int64_t k = p->scale_mode == 2 ? r % p->chan : 0;
			float a = inv * j->scale[k], c = p->has_b ? j->b[k] : 0.0f;
			for (int64_t i = 0; i < p->len; i++)
				y[i] = (x[i] - mf) * a + c;
		}
	}
}

/* rn_range off the reference path: the sums in float over 8 independent
 * lanes (vectorised; gcc keeps a double running sum scalar, 5 ns an element
 * for BERT's 256-wide rows), mean first and then the squared deviations, as
 * the reference does. Rows of a few thousand elements lose at most a few
 * float ulps of the statistics (tests/test_ops.c compares both). Built for
 * x86-64-v3 too, picked at load by the ifunc resolver. */
#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
static void rn_range_fast(void *arg, int64_t r0, int64_t r1)
{
	const rn_job *j = arg;
	const row_norm *p = j->p;
	const int64_t len = p->len, len8 = len & ~(int64_t)7;
	for (int64_t r = r0; r < r1; r++) {
		const float *x = j->x + r * len;
		float *y = j->y + r * len;
		float acc[8] = { 0 }, sum = 0, sq = 0;
		for (int64_t i = 0; i < len8; i += 8)
			for (int l = 0; l < 8; l++)
				acc[l] += x[i + l];
		for (int64_t i = len8; i < len; i++)
			sum += x[i];
		for (int l = 0; l < 8; l++)
			sum += acc[l];
		const float mf = len ? sum / (float)len : 0;
		for (int l = 0; l < 8; l++)
			acc[l] = 0;
		for (int64_t i = 0; i < len8; i += 8)
			for (int l = 0; l < 8; l++)
				acc[l] += (x[i + l] - mf) * (x[i + l] - mf);
		for (int64_t i = len8; i < len; i++)
			sq += (x[i] - mf) * (x[i] - mf);
		for (int l = 0; l < 8; l++)
			sq += acc[l];
		const float var = len ? sq / (float)len : 0;
		const float inv = 1.0f / sqrtf(var + p->eps);
		if (j->mean)
			j->mean[r] = mf;
		if (j->inv)
			j->inv[r] = inv;
		if (p->scale_mode == 0 && p->has_b) {
			for (int64_t i = 0; i < len; i++)
				y[i] = (x[i] - mf) * inv * j->scale[i] + j->b[i];
		} else if (p->scale_mode == 0) {
			for (int64_t i = 0; i < len; i++)
				y[i] = (x[i] - mf) * inv * j->scale[i];
		} else {
			int64_t k = p->scale_mode == 2 ? r % p->chan : 0;
			float a = inv * j->scale[k], c = p->has_b ? j->b[k] : 0.0f;
			for (int64_t i = 0; i < len; i++)
				y[i] = (x[i] - mf) * a + c;
		}
	}
}

static int64_t rn_grain(const row_norm *p)
{
	return GRAIN / (p->len + 1) + 1;
}

/* 0 when t (Scale or B of LayerNormalization) broadcasts to X's dims
 * [axis, rank) as a full-size tensor (*one = 0) or a single value (*one = 1). */
static int ln_param_shape(hal_step *s, const hal_tensor *t, const hal_tensor *x, int axis,
			  const char *what, int *one)
{
	*one = hal_numel(t) == 1;
	if (*one)
		return 0;
	int ok = t->rank <= x->rank;
	for (int i = 0; ok && i < t->rank; i++) {
		int xd = x->rank - t->rank + i;
		if (xd < axis)
			ok = t->dims[i] == 1;
		else
			ok = t->dims[i] == x->dims[xd];
	}
	if (!ok || hal_numel(t) != ou_span(x->dims, axis, x->rank))
		return hal_err(s, AIDOS_E_UNSUPPORTED,
			       "%s must have X's dims from axis %d on, or one value", what, axis);
	return 0;
}

static int ln_infer(hal_step *s)
{
	const hal_tensor *x = ou_in(s, 0), *sc = ou_in(s, 1), *b = ou_in(s, 2);
	int rc = ou_need_float(s, x, "X", 0);
	if (rc || (rc = ou_need_float(s, sc, "Scale", 0)) || (b && (rc = ou_need_float(s, b, "B", 0))))
		return rc;
	int64_t ax = hal_attr_int(s->node, "axis", -1);
	int a = hal_axis(ax, x->rank);
	if (a < 0)
		return hal_err(s, AIDOS_E_INVALID, "attribute axis %lld is out of range for rank %d",
			       (long long)ax, x->rank);
	int one_s, one_b = 0;
	if ((rc = ln_param_shape(s, sc, x, a, "Scale", &one_s)) ||
	    (b && (rc = ln_param_shape(s, b, x, a, "B", &one_b))))
		return rc;
	if (b && one_s != one_b)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "Scale and B must both be full-size or both one value");
	int64_t st = hal_attr_int(s->node, "stash_type", 1);
	if (st != 1)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "attribute stash_type %lld (only 1, float32)",
			       (long long)st);
	row_norm *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	p->rows = ou_span(x->dims, 0, a);
	p->len = ou_span(x->dims, a, x->rank);
	p->eps = hal_attr_float(s->node, "epsilon", 1e-5f);
	p->scale_mode = one_s;
	p->has_b = b != NULL;
	s->params = p;
	if ((rc = ou_set(s, s->out[0], x->dtype, x->rank, x->dims)))
		return rc;
	int64_t md[HAL_MAX_RANK];
	for (int i = 0; i < x->rank; i++)
		md[i] = i < a ? x->dims[i] : 1;
	for (int k = 1; k < s->n_out && k < 3; k++)
		if ((rc = ou_set(s, s->out[k], HAL_DT_F32, x->rank, md)))
			return rc;
	return 0;
}

static int ln_exec(hal_step *s)
{
	const row_norm *p = s->params;
	const hal_tensor *b = ou_in(s, 2);
	hal_tensor *m = ou_out(s, 1), *iv = ou_out(s, 2);
	rn_job j = { p, s->in[0]->data, s->in[1]->data, b ? b->data : NULL, s->out[0]->data,
		     m ? m->data : NULL, iv ? iv->data : NULL };
	hal_parallel_for(s, p->rows, rn_grain(p), hal_use_reference ? rn_range : rn_range_fast, &j);
	return 0;
}

static int in_infer(hal_step *s)
{
	const hal_tensor *x = ou_in(s, 0), *sc = ou_in(s, 1), *b = ou_in(s, 2);
	int rc = ou_need_float(s, x, "input", 0);
	if (rc || (rc = ou_need_float(s, sc, "scale", 0)) || (rc = ou_need_float(s, b, "B", 0)))
		return rc;
	if (x->rank < 2)
		return hal_err(s, AIDOS_E_SHAPE, "input has rank %d (at least 2)", x->rank);
	if (hal_numel(sc) != x->dims[1] || hal_numel(b) != x->dims[1] || sc->rank != 1 || b->rank != 1)
		return hal_err(s, AIDOS_E_SHAPE, "scale and B must be [%lld]", (long long)x->dims[1]);
	row_norm *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	p->rows = x->dims[0] * x->dims[1];
	p->len = ou_span(x->dims, 2, x->rank);
	p->eps = hal_attr_float(s->node, "epsilon", 1e-5f);
	p->scale_mode = 2;
	p->chan = x->dims[1] ? x->dims[1] : 1;
	p->has_b = 1;
	s->params = p;
	return ou_set(s, s->out[0], x->dtype, x->rank, x->dims);
}

static int in_exec(hal_step *s)
{
	const row_norm *p = s->params;
	rn_job j = { p, s->in[0]->data, s->in[1]->data, s->in[2]->data, s->out[0]->data, NULL, NULL };
	hal_parallel_for(s, p->rows, rn_grain(p), hal_use_reference ? rn_range : rn_range_fast, &j);
	return 0;
}

/* ---- MeanVarianceNormalization ---- */

typedef struct mvn_params {
	int rank;
	int64_t dims[HAL_MAX_RANK];
	uint8_t red[HAL_MAX_RANK];   /* 1: reduced axis */
	int64_t groups;              /* product of the kept dims */
} mvn_params;

/* Index of element i's group: its coordinates on the kept axes. */
static int64_t mvn_group(const mvn_params *p, int64_t i)
{
	int64_t g = 0, mul = 1;
	for (int d = p->rank - 1; d >= 0; d--) {
		int64_t c = i % p->dims[d];
		i /= p->dims[d];
		if (!p->red[d]) {
			g += c * mul;
			mul *= p->dims[d];
		}
	}
	return g;
}

static int mvn_infer(hal_step *s)
{
	const hal_tensor *x = ou_in(s, 0);
	int rc = ou_need_float(s, x, "X", 0);
	if (rc)
		return rc;
	mvn_params *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	const int64_t *ax, defs[3] = { 0, 2, 3 };
	int n = hal_attr_ints(s->node, "axes", &ax);
	if (!hal_attr_has(s->node, "axes")) {
		ax = defs;
		n = 3;
	}
	p->rank = x->rank;
	memcpy(p->dims, x->dims, sizeof p->dims);
	for (int i = 0; i < n; i++) {
		int a = hal_axis(ax[i], x->rank);
		if (a < 0)
			return hal_err(s, AIDOS_E_INVALID, "axes[%d] = %lld is out of range for rank %d", i,
				       (long long)ax[i], x->rank);
		p->red[a] = 1;
	}
	p->groups = 1;
	for (int d = 0; d < x->rank; d++)
		if (!p->red[d])
			p->groups *= x->dims[d];
	s->params = p;
	s->scratch_bytes = (size_t)p->groups * 3 * sizeof(double);
	return ou_set(s, s->out[0], x->dtype, x->rank, x->dims);
}

static int mvn_exec(hal_step *s)
{
	if (hal_numel(s->out[0]) == 0)
		return 0;   /* empty output: nothing to write, data may be NULL */
	const mvn_params *p = s->params;
	const float *x = s->in[0]->data;
	float *y = s->out[0]->data;
	int64_t n = hal_numel(s->in[0]);
	double *sum = s->scratch, *sq = sum + p->groups, *cnt = sq + p->groups;
	memset(sum, 0, (size_t)p->groups * 3 * sizeof(double));
	for (int64_t i = 0; i < n; i++) {
		int64_t g = mvn_group(p, i);
		sum[g] += x[i];
		sq[g] += (double)x[i] * x[i];
		cnt[g] += 1;
	}
	for (int64_t g = 0; g < p->groups; g++) {
		double m = sum[g] / cnt[g], v = sq[g] / cnt[g] - m * m;
		sum[g] = m;
		sq[g] = sqrt(v > 0 ? v : 0) + 1e-9;
	}
	for (int64_t i = 0; i < n; i++) {
		int64_t g = mvn_group(p, i);
		y[i] = (float)((x[i] - sum[g]) / sq[g]);
	}
	return 0;
}

/* ---- LRN ---- */

typedef struct lrn_params {
	int64_t n, c, sp;     /* [n, c, spatial] */
	int64_t lo, hi;       /* window: channels [c - lo, c + hi] */
	float alpha, beta, bias, size;
} lrn_params;

static int lrn_infer(hal_step *s)
{
	const hal_tensor *x = ou_in(s, 0);
	int rc = ou_need_float(s, x, "X", 0);
	if (rc)
		return rc;
	if (x->rank < 2)
		return hal_err(s, AIDOS_E_SHAPE, "X has rank %d (at least 2)", x->rank);
	int64_t size = hal_attr_int(s->node, "size", 0);
	if (size < 1 || size > (INT64_C(1) << 32))
		return hal_err(s, AIDOS_E_INVALID, "attribute size %lld must be positive", (long long)size);
	lrn_params *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	p->n = x->dims[0];
	p->c = x->dims[1];
	p->sp = ou_span(x->dims, 2, x->rank);
	p->lo = (size - 1) / 2;
	p->hi = size - 1 - p->lo;
	p->alpha = hal_attr_float(s->node, "alpha", 1e-4f);
	p->beta = hal_attr_float(s->node, "beta", 0.75f);
	p->bias = hal_attr_float(s->node, "bias", 1.0f);
	p->size = (float)size;
	s->params = p;
	return ou_set(s, s->out[0], x->dtype, x->rank, x->dims);
}

static int lrn_exec(hal_step *s)
{
	const lrn_params *p = s->params;
	const float *x = s->in[0]->data;
	float *y = s->out[0]->data;
	for (int64_t n = 0; n < p->n; n++)
		for (int64_t c = 0; c < p->c; c++)
			for (int64_t k = 0; k < p->sp; k++) {
				double sq = 0;
				int64_t c0 = c - p->lo < 0 ? 0 : c - p->lo;
				int64_t c1 = c + p->hi >= p->c ? p->c - 1 : c + p->hi;
				for (int64_t q = c0; q <= c1; q++) {
					double v = x[(n * p->c + q) * p->sp + k];
					sq += v * v;
				}
				int64_t i = (n * p->c + c) * p->sp + k;
				y[i] = (float)(x[i] / pow(p->bias + p->alpha / p->size * sq, p->beta));
			}
	return 0;
}

/* ---- Hardmax ---- */

typedef struct hm_params {
	int64_t outer, n, inner;
} hm_params;

static int hardmax_infer(hal_step *s)
{
	const hal_tensor *x = ou_in(s, 0);
	int rc = ou_need_float(s, x, "input", 1);
	if (rc)
		return rc;
	const int legacy = s->opset < 13, r = x->rank;
	int64_t axis = hal_attr_int(s->node, "axis", legacy ? 1 : -1);
	int a = legacy ? (int)(axis < 0 ? axis + r : axis) : hal_axis(axis, r);
	if ((legacy && (axis < -r || axis > r)) || a < 0)
		return hal_err(s, AIDOS_E_INVALID, "attribute axis %lld is out of range for rank %d",
			       (long long)axis, r);
	hm_params *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	/* before opset 13 the input is coerced to 2-D [outer, rest] at axis */
	p->outer = ou_span(x->dims, 0, a);
	p->n = legacy ? ou_span(x->dims, a, r) : (a < r ? x->dims[a] : 1);
	p->inner = legacy ? 1 : ou_span(x->dims, a + 1, r);
	s->params = p;
	return ou_set(s, s->out[0], x->dtype, r, x->dims);
}

#define HARDMAX(T, sfx) \
static void hardmax_##sfx(const hm_params *p, const T *x, T *y) \
{ \
	for (int64_t o = 0; o < p->outer; o++) \
		for (int64_t k = 0; k < p->inner; k++) { \
			const T *xs = x + o * p->n * p->inner + k; \
			T *ys = y + o * p->n * p->inner + k; \
			int64_t best = 0; \
			for (int64_t i = 0; i < p->n; i++) { \
				if (xs[i * p->inner] > xs[best * p->inner]) \
					best = i; \
				ys[i * p->inner] = 0; \
			} \
			if (p->n) \
				ys[best * p->inner] = 1; \
		} \
}
HARDMAX(float, f32)
HARDMAX(double, f64)

static int hardmax_exec(hal_step *s)
{
	if (s->in[0]->dtype == HAL_DT_F64)
		hardmax_f64(s->params, s->in[0]->data, s->out[0]->data);
	else
		hardmax_f32(s->params, s->in[0]->data, s->out[0]->data);
	return 0;
}

static const hal_op op_ln = { "LayerNormalization", 17, HAL_OP_PURE, ln_infer, ln_exec };
static const hal_op op_in = { "InstanceNormalization", 1, HAL_OP_PURE, in_infer, in_exec };
static const hal_op op_mvn = { "MeanVarianceNormalization", 9, HAL_OP_PURE, mvn_infer, mvn_exec };
static const hal_op op_lrn = { "LRN", 1, HAL_OP_PURE, lrn_infer, lrn_exec };
static const hal_op op_hardmax = { "Hardmax", 1, HAL_OP_PURE, hardmax_infer, hardmax_exec };

const hal_op *const hal_ops_norm[] = { &op_ln, &op_in, &op_mvn, &op_lrn, &op_hardmax, NULL };
