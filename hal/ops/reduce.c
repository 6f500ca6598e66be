/*
 * hal/ops/reduce.c - scalar reference kernels for the ONNX reductions
 * (ReduceSum, ReduceMean, ReduceMax, ReduceMin, ReduceProd, ReduceL1,
 * ReduceL2, ReduceSumSquare, ReduceLogSum, ReduceLogSumExp) and ArgMax/ArgMin.
 *
 * Axes: the "axes" attribute before opset 18 (ReduceSum: before 13), the
 * optional second input from then on. The output shape depends on them, so
 * that input must have a value at plan time. No axes reduces everything,
 * unless noop_with_empty_axes=1, which makes the op an identity.
 *
 * infer() merges adjacent input dims that are both reduced or both kept
 * (size-1 dims dropped), so every reduction is one of two shapes:
 *   inner dim reduced:  each output element is a reduction over a contiguous
 *                       run (repeated over the outer reduced dims), kept in a
 *                       register;
 *   inner dim kept:     a block of contiguous outputs accumulates whole input
 *                       rows, one per reduced index; the accumulators live in
 *                       s->scratch (8 bytes per output element).
 * Either way the input is read in memory order. Floats accumulate in double,
 * integers in 64 bits with wrap-around.
 */
#include <math.h>
#include <string.h>
#include "hal/hal.h"

enum red_kind {
	R_SUM, R_MEAN, R_MAX, R_MIN, R_PROD, R_L1, R_L2, R_SUMSQ, R_LOGSUM, R_LSE,
};

#define RED_BLK 1024    /* outputs per work item when the inner dim is kept */
#define RED_GRAIN 32768 /* input elements per thread chunk */

typedef struct red_params {
	int kind;
	int noop;                      /* identity (empty axes, noop_with_empty_axes) */
	int inner_red;                 /* innermost merged dim is reduced */
	int64_t inner;                 /* its size */
	int64_t out_numel, count;      /* outputs, inputs per output */
	int64_t items;                 /* work items */
	int64_t nblk;                  /* inner kept: column blocks per row */
	int nk, nr;                    /* outer kept / outer reduced merged dims */
	int64_t kdims[HAL_MAX_RANK], kst[HAL_MAX_RANK];
	int64_t rdims[HAL_MAX_RANK], rst[HAL_MAX_RANK];
	int n_axes;                    /* axes as given, to check a non-constant input */
	int64_t axes[HAL_MAX_RANK];
} red_params;

typedef struct red_job {
	const red_params *p;
	const void *x;
	void *y;
	void *acc;   /* scratch: one 8-byte accumulator (and max) per output */
} red_job;

/* Input offset of kept index `it` (row-major over kdims). */
static int64_t kept_offset(const red_params *p, int64_t it)
{
	int64_t off = 0;
	for (int d = p->nk - 1; d >= 0; d--) {
		off += it % p->kdims[d] * p->kst[d];
		it /= p->kdims[d];
	}
	return off;
}

/* Advances the odometer over the outer reduced dims; 0 when it wraps. */
static int red_next(const red_params *p, int64_t *idx, int64_t *roff)
{
	for (int d = p->nr - 1; d >= 0; d--) {
		idx[d]++;
		*roff += p->rst[d];
		if (idx[d] < p->rdims[d])
			return 1;
		*roff -= p->rdims[d] * p->rst[d];
		idx[d] = 0;
	}
	return 0;
}

/* Per accumulator class: add/multiply (integers wrap), |v|, NaN test,
 * the type's lowest and highest values. */
#define ADD_flt(A, a, v) ((a) + (A)(v))
#define ADD_sint(A, a, v) (A)((uint64_t)(a) + (uint64_t)(v))
#define ADD_uint ADD_sint
#define MUL_flt(A, a, v) ((a) * (A)(v))
#define MUL_sint(A, a, v) (A)((uint64_t)(a) * (uint64_t)(v))
#define MUL_uint MUL_sint
#define ABS_flt(v) fabs(v)
#define ABS_sint(v) ((v) < 0 ? 0 - (uint64_t)(v) : (uint64_t)(v))
#define ABS_uint(v) (v)
#define NAN_flt(v) ((v) != (v))
#define NAN_sint(v) 0
#define NAN_uint(v) 0

/* X(suffix, T, dtype, accumulator, class, lowest, highest) */
#define RED_TYPES(X) \
	X(f32, float, HAL_DT_F32, double, flt, -INFINITY, INFINITY) \
	X(f64, double, HAL_DT_F64, double, flt, -INFINITY, INFINITY) \
	X(i8, int8_t, HAL_DT_I8, int64_t, sint, INT8_MIN, INT8_MAX) \
	X(i32, int32_t, HAL_DT_I32, int64_t, sint, INT32_MIN, INT32_MAX) \
	X(i64, int64_t, HAL_DT_I64, int64_t, sint, INT64_MIN, INT64_MAX) \
	X(u8, uint8_t, HAL_DT_U8, uint64_t, uint, 0, UINT8_MAX) \
	X(u32, uint32_t, HAL_DT_U32, uint64_t, uint, 0, UINT32_MAX) \
	X(u64, uint64_t, HAL_DT_U64, uint64_t, uint, 0, UINT64_MAX)

/*
 * red_row_*: folds x[0..n) into a (one accumulator); m is the maximum for
 * LogSumExp. red_col_*: a[k] folded with x[k] for k < n (one accumulator per
 * column). red_fin_*: the final value from an accumulator.
 */
#define RED_FNS(sfx, T, DT, A, C, LO, HI) \
static A red_init_##sfx(int kind) \
{ \
	switch (kind) { \
	case R_MAX: return (A)(LO); \
	case R_MIN: return (A)(HI); \
	case R_PROD: return (A)1; \
	default: return (A)0; \
	} \
} \
static A red_row_##sfx(int kind, const T *x, int64_t n, A a, double m) \
{ \
	switch (kind) { \
	case R_SUM: case R_MEAN: case R_LOGSUM: { \
		/* four partial sums: no loop-carried add latency */ \
		A s0 = 0, s1 = 0, s2 = 0, s3 = 0; \
		int64_t i = 0; \
		for (; i + 4 <= n; i += 4) { \
			s0 = ADD_##C(A, s0, x[i]); \
			s1 = ADD_##C(A, s1, x[i + 1]); \
			s2 = ADD_##C(A, s2, x[i + 2]); \
			s3 = ADD_##C(A, s3, x[i + 3]); \
		} \
		for (; i < n; i++) \
			s0 = ADD_##C(A, s0, x[i]); \
		return ADD_##C(A, a, ADD_##C(A, ADD_##C(A, s0, s1), ADD_##C(A, s2, s3))); \
	} \
	case R_SUMSQ: case R_L2: { \
		A s0 = 0, s1 = 0; \
		int64_t i = 0; \
		for (; i + 2 <= n; i += 2) { \
			s0 = ADD_##C(A, s0, MUL_##C(A, (A)x[i], x[i])); \
			s1 = ADD_##C(A, s1, MUL_##C(A, (A)x[i + 1], x[i + 1])); \
		} \
		for (; i < n; i++) \
			s0 = ADD_##C(A, s0, MUL_##C(A, (A)x[i], x[i])); \
		return ADD_##C(A, a, ADD_##C(A, s0, s1)); \
	} \
	case R_L1: \
		for (int64_t i = 0; i < n; i++) \
			a = ADD_##C(A, a, ABS_##C(x[i])); \
		return a; \
	case R_PROD: \
		for (int64_t i = 0; i < n; i++) \
			a = MUL_##C(A, a, x[i]); \
		return a; \
	case R_MAX: \
		for (int64_t i = 0; i < n; i++) \
			a = ((A)x[i] > a || NAN_##C(x[i])) ? (A)x[i] : a; \
		return a; \
	case R_MIN: \
		for (int64_t i = 0; i < n; i++) \
			a = ((A)x[i] < a || NAN_##C(x[i])) ? (A)x[i] : a; \
		return a; \
	case R_LSE: \
		for (int64_t i = 0; i < n; i++) \
			a = (A)(a + exp((double)x[i] - m)); \
		return a; \
	} \
	return a; \
} \
static void red_col_##sfx(int kind, const T *x, int64_t n, A *a, const A *m) \
{ \
	switch (kind) { \
	case R_SUM: case R_MEAN: case R_LOGSUM: \
		for (int64_t k = 0; k < n; k++) \
			a[k] = ADD_##C(A, a[k], x[k]); \
		break; \
	case R_SUMSQ: case R_L2: \
		for (int64_t k = 0; k < n; k++) \
			a[k] = ADD_##C(A, a[k], MUL_##C(A, (A)x[k], x[k])); \
		break; \
	case R_L1: \
		for (int64_t k = 0; k < n; k++) \
			a[k] = ADD_##C(A, a[k], ABS_##C(x[k])); \
		break; \
	case R_PROD: \
		for (int64_t k = 0; k < n; k++) \
			a[k] = MUL_##C(A, a[k], x[k]); \
		break; \
	case R_MAX: \
		for (int64_t k = 0; k < n; k++) \
			a[k] = ((A)x[k] > a[k] || NAN_##C(x[k])) ? (A)x[k] : a[k]; \
		break; \
	case R_MIN: \
		for (int64_t k = 0; k < n; k++) \
			a[k] = ((A)x[k] < a[k] || NAN_##C(x[k])) ? (A)x[k] : a[k]; \
		break; \
	case R_LSE: \
		for (int64_t k = 0; k < n; k++) \
			a[k] = (A)(a[k] + exp((double)x[k] - (double)m[k])); \
		break; \
	} \
} \
static T red_fin_##sfx(int kind, A a, int64_t count, A m) \
{ \
	switch (kind) { \
	case R_MEAN: return count ? (T)(a / (A)count) : (T)0; \
	case R_L2: return (T)sqrt((double)a); \
	case R_LOGSUM: return (T)log((double)a); \
	case R_LSE: return (T)(log((double)a) + (double)m); \
	default: return (T)a; \
	} \
} \
/* Work items [i0, i1): inner reduced, one output each. */ \
static void red_rows_##sfx(void *vj, int64_t i0, int64_t i1) \
{ \
	const red_job *j = vj; \
	const red_params *p = j->p; \
	const T *x = j->x; \
	T *y = j->y; \
	for (int64_t o = i0; o < i1; o++) { \
		const T *xb = x + kept_offset(p, o); \
		A a = red_init_##sfx(p->kind), m = 0; \
		int64_t idx[HAL_MAX_RANK] = { 0 }, roff = 0; \
		if (p->count == 0) { \
			y[o] = red_fin_##sfx(p->kind, a, 0, m); \
			continue; \
		} \
		if (p->kind == R_LSE) { \
			m = red_init_##sfx(R_MAX); \
			do \
				m = red_row_##sfx(R_MAX, xb + roff, p->inner, m, 0); \
			while (red_next(p, idx, &roff)); \
			if (isinf((double)m)) \
				m = 0;   /* all -inf (or +inf): no shift */ \
		} \
		do \
			a = red_row_##sfx(p->kind, xb + roff, p->inner, a, (double)m); \
		while (red_next(p, idx, &roff)); \
		y[o] = red_fin_##sfx(p->kind, a, p->count, m); \
	} \
} \
/* Work items [i0, i1): inner kept, a block of up to RED_BLK outputs each. */ \
static void red_cols_##sfx(void *vj, int64_t i0, int64_t i1) \
{ \
	const red_job *j = vj; \
	const red_params *p = j->p; \
	const T *x = j->x; \
	T *y = j->y; \
	for (int64_t it = i0; it < i1; it++) { \
		const int64_t row = it / p->nblk, c0 = it % p->nblk * RED_BLK; \
		const int64_t w = p->inner - c0 < RED_BLK ? p->inner - c0 : RED_BLK; \
		const T *xb = x + kept_offset(p, row) + c0; \
		const int64_t ob = row * p->inner + c0; \
		A *a = (A *)j->acc + ob;                  /* [w] */ \
		A *m = p->kind == R_LSE ? (A *)j->acc + p->out_numel + ob : NULL;  /* [w] */ \
		int64_t idx[HAL_MAX_RANK] = { 0 }, roff = 0; \
		for (int64_t k = 0; k < w; k++) \
			a[k] = red_init_##sfx(p->kind); \
		if (p->kind == R_LSE) { \
			for (int64_t k = 0; k < w; k++) \
				m[k] = red_init_##sfx(R_MAX); \
			if (p->count) \
				do \
					red_col_##sfx(R_MAX, xb + roff, w, m, NULL); \
				while (red_next(p, idx, &roff)); \
			for (int64_t k = 0; k < w; k++) \
				if (isinf((double)m[k])) \
					m[k] = 0; \
		} \
		if (p->count) \
			do \
				red_col_##sfx(p->kind, xb + roff, w, a, m); \
			while (red_next(p, idx, &roff)); \
		for (int64_t k = 0; k < w; k++) \
			y[ob + k] = red_fin_##sfx(p->kind, a[k], p->count, \
						  p->kind == R_LSE ? m[k] : 0); \
	} \
}
RED_TYPES(RED_FNS)

typedef struct red_fns {
	hal_range_fn rows, cols;
} red_fns;

#define RED_ENT(sfx, T, DT, A, C, LO, HI) [DT] = { red_rows_##sfx, red_cols_##sfx },
static const red_fns red_tab[HAL_DT_U64 + 1] = { RED_TYPES(RED_ENT) };

typedef struct red_op {
	hal_op op;     /* first: s->op points here */
	int kind;
	int axes_input_since;  /* opset from which axes is an input */
} red_op;

/* Reads the axes (attribute or input 1) into ax[0..*n), normalised and
 * checked; *given says whether any were given. */
static int red_axes(hal_step *s, const red_op *ro, int rank, int *ax, int *n, red_params *p)
{
	*n = 0;
	if (s->opset >= ro->axes_input_since) {
		if (hal_attr_has(s->node, "axes"))
			return hal_err(s, AIDOS_E_INVALID,
				       "axes is an input from opset %d, not an attribute",
				       ro->axes_input_since);
		const hal_tensor *t = s->n_in > 1 ? s->in[1] : NULL;
		if (!t)
			return 0;
		if (t->dtype != HAL_DT_I64 && t->dtype != HAL_DT_I32)
			return hal_err(s, AIDOS_E_INVALID, "axes is %s, not int64",
				       hal_dtype_name(t->dtype));
		if (t->rank > 1)
			return hal_err(s, AIDOS_E_INVALID, "axes has rank %d, not 1", (int)t->rank);
		int64_t cnt = hal_numel(t);
		if (cnt == 0)
			return 0;
		if (!t->data)
			return hal_need_value(s, t, "axes");
		if (cnt > rank)
			return hal_err(s, AIDOS_E_INVALID, "%lld axes for rank %d", (long long)cnt, rank);
		for (int64_t i = 0; i < cnt; i++)
			p->axes[i] = hal_get_i64(t, i);
		*n = (int)cnt;
	} else {
		if (s->n_in > 1)
			return hal_err(s, AIDOS_E_INVALID, "takes 1 input before opset %d, got %d",
				       ro->axes_input_since, s->n_in);
		const int64_t *v;
		int cnt = hal_attr_ints(s->node, "axes", &v);
		if (cnt > rank)
			return hal_err(s, AIDOS_E_INVALID, "%d axes for rank %d", cnt, rank);
		for (int i = 0; i < cnt; i++)
			p->axes[i] = v[i];
		*n = cnt;
	}
	p->n_axes = *n;
	for (int i = 0; i < *n; i++) {
		ax[i] = hal_axis(p->axes[i], rank);
		if (ax[i] < 0)
			return hal_err(s, AIDOS_E_INVALID, "axis %lld is out of range for rank %d",
				       (long long)p->axes[i], rank);
		for (int k = 0; k < i; k++)
			if (ax[k] == ax[i])
				return hal_err(s, AIDOS_E_INVALID, "axis %lld is repeated",
					       (long long)p->axes[i]);
	}
	return 0;
}

static int check_x(hal_step *s, int max_in)
{
	if (s->n_in < 1 || s->n_in > max_in || !s->in[0])
		return hal_err(s, AIDOS_E_INVALID, "takes 1%s inputs, got %d",
			       max_in > 1 ? " or 2" : "", s->n_in);
	if (s->n_out < 1 || !s->out[0])
		return hal_err(s, AIDOS_E_INVALID, "has no output");
	const hal_tensor *x = s->in[0];
	if (x->rank < 0 || x->rank > HAL_MAX_RANK)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "input has rank %d (at most %d)",
			       (int)x->rank, HAL_MAX_RANK);
	for (int d = 0; d < x->rank; d++)
		if (x->dims[d] < 0)
			return hal_err(s, AIDOS_E_SHAPE, "input dim %d is %lld", d,
				       (long long)x->dims[d]);
	if (x->dtype <= 0 || x->dtype > HAL_DT_U64 || !red_tab[x->dtype].rows)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "input type %s is not supported",
			       hal_dtype_name(x->dtype));
	return 0;
}

static int red_infer(hal_step *s)
{
	const red_op *ro = (const red_op *)s->op;
	int rc = check_x(s, s->opset >= ro->axes_input_since ? 2 : 1);
	if (rc)
		return rc;
	const hal_tensor *x = s->in[0];
	const int rank = x->rank;
	red_params *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	p->kind = ro->kind;
	if (p->kind == R_LSE && x->dtype != HAL_DT_F32 && x->dtype != HAL_DT_F64)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "input type %s is not supported",
			       hal_dtype_name(x->dtype));

	int ax[HAL_MAX_RANK], n_ax;
	if ((rc = red_axes(s, ro, rank, ax, &n_ax, p)))
		return rc;
	int64_t keepdims = hal_attr_int(s->node, "keepdims", 1);
	uint8_t red[HAL_MAX_RANK] = { 0 };
	if (n_ax == 0) {
		if (hal_attr_int(s->node, "noop_with_empty_axes", 0)) {
			p->noop = 1;
			hal_tensor_set_shape(s->out[0], x->dtype, rank, x->dims);
			s->params = p;
			return 0;
		}
		memset(red, 1, sizeof red);
	}
	for (int i = 0; i < n_ax; i++)
		red[ax[i]] = 1;

	/* Output shape. */
	int64_t od[HAL_MAX_RANK];
	int orank = 0;
	for (int d = 0; d < rank; d++) {
		if (!red[d])
			od[orank++] = x->dims[d];
		else if (keepdims)
			od[orank++] = 1;
	}

	/* Merge: drop size-1 dims, join neighbours of the same kind. */
	int64_t md[HAL_MAX_RANK];
	uint8_t mr[HAL_MAX_RANK];
	int r = 0;
	p->count = 1;
	p->out_numel = 1;
	for (int d = 0; d < rank; d++) {
		if (red[d])
			p->count *= x->dims[d];
		else
			p->out_numel *= x->dims[d];
		if (x->dims[d] == 1)
			continue;
		if (r > 0 && mr[r - 1] == red[d]) {
			md[r - 1] *= x->dims[d];
		} else {
			md[r] = x->dims[d];
			mr[r++] = red[d];
		}
	}
	if (r == 0) {
		md[0] = 1;
		mr[0] = 1;
		r = 1;
	}
	int64_t st[HAL_MAX_RANK], run = 1;
	for (int d = r - 1; d >= 0; d--) {
		st[d] = run;
		run *= md[d];
	}
	p->inner_red = mr[r - 1];
	p->inner = md[r - 1];
	for (int d = 0; d < r - 1; d++) {
		if (mr[d]) {
			p->rdims[p->nr] = md[d];
			p->rst[p->nr++] = st[d];
		} else {
			p->kdims[p->nk] = md[d];
			p->kst[p->nk++] = st[d];
		}
	}
	if (p->inner_red) {
		p->items = p->out_numel;
	} else {
		p->nblk = (p->inner + RED_BLK - 1) / RED_BLK;
		p->items = p->inner ? p->out_numel / p->inner * p->nblk : 0;
		s->scratch_bytes = (size_t)p->out_numel * 8 * (p->kind == R_LSE ? 2 : 1);
	}
	hal_tensor_set_shape(s->out[0], x->dtype, orank, od);
	s->params = p;
	return 0;
}

/* The axes input must not change after planning (the output shape depends
 * on it): checked when it is not a constant. */
static int red_check_axes(hal_step *s, const red_params *p)
{
	const hal_tensor *t = s->n_in > 1 ? s->in[1] : NULL;
	if (!t || t->is_const || !t->data)
		return 0;
	int64_t n = hal_numel(t);
	int same = n == p->n_axes;
	for (int64_t i = 0; same && i < n; i++)
		same = hal_get_i64(t, i) == p->axes[i];
	return same ? 0 : hal_err(s, AIDOS_E_UNSUPPORTED, "axes changed after planning");
}

static int red_exec(hal_step *s)
{
	const red_params *p = s->params;
	const hal_tensor *x = s->in[0];
	int rc = red_check_axes(s, p);
	if (rc)
		return rc;
	if (p->noop) {
		if (s->out[0]->data != x->data)
			memcpy(s->out[0]->data, x->data, hal_nbytes(x));
		return 0;
	}
	if (p->items == 0)
		return 0;
	red_job j = { p, x->data, s->out[0]->data, s->scratch };
	int64_t per = p->count * (p->inner_red ? 1 : (p->inner < RED_BLK ? p->inner : RED_BLK));
	int64_t grain = per > 0 ? RED_GRAIN / per + 1 : RED_GRAIN;
	const red_fns *f = &red_tab[x->dtype];
	hal_parallel_for(s, p->items, grain, p->inner_red ? f->rows : f->cols, &j);
	return 0;
}

/* ---- ArgMax, ArgMin ----
 * Viewed as [outer, n, inner]; int64 indices along n. select_last_index picks
 * the last of equal extremes. Work items are blocks of up to ARG_BLK columns
 * of one outer index, so the input is read in memory order. */
#define ARG_BLK 256

typedef struct arg_params {
	int64_t outer, n, inner, nblk;
	int is_min, last;
} arg_params;

typedef struct arg_job {
	const arg_params *p;
	const void *x;
	int64_t *y;
} arg_job;

#define ARG_FNS(sfx, T, DT, A, C, LO, HI) \
static void arg_blocks_##sfx(void *vj, int64_t b0, int64_t b1) \
{ \
	const arg_job *j = vj; \
	const arg_params *p = j->p; \
	const int64_t n = p->n, inner = p->inner; \
	T best[ARG_BLK]; \
	for (int64_t b = b0; b < b1; b++) { \
		const int64_t o = b / p->nblk, c0 = b % p->nblk * ARG_BLK; \
		const int64_t w = inner - c0 < ARG_BLK ? inner - c0 : ARG_BLK; \
		const T *x = (const T *)j->x + o * n * inner + c0;  /* [n, inner] */ \
		int64_t *y = j->y + o * inner + c0;                 /* [inner] */ \
		for (int64_t c = 0; c < w; c++) { \
			best[c] = x[c]; \
			y[c] = 0; \
		} \
		for (int64_t i = 1; i < n; i++) { \
			const T *xi = x + i * inner; \
			for (int64_t c = 0; c < w; c++) { \
				T v = xi[c]; \
				int take = p->is_min ? (v < best[c] || (p->last && v == best[c])) \
						     : (v > best[c] || (p->last && v == best[c])); \
				if (take) { \
					best[c] = v; \
					y[c] = i; \
				} \
			} \
		} \
	} \
}
RED_TYPES(ARG_FNS)

#define ARG_ENT(sfx, T, DT, A, C, LO, HI) [DT] = arg_blocks_##sfx,
static const hal_range_fn arg_tab[HAL_DT_U64 + 1] = { RED_TYPES(ARG_ENT) };

static int arg_infer(hal_step *s)
{
	int rc = check_x(s, 1);
	if (rc)
		return rc;
	const hal_tensor *x = s->in[0];
	const int rank = x->rank;
	int64_t axis = hal_attr_int(s->node, "axis", 0);
	int a = hal_axis(axis, rank);
	if (a < 0)
		return hal_err(s, AIDOS_E_INVALID, "axis %lld is out of range for rank %d",
			       (long long)axis, rank);
	if (x->dims[a] == 0)
		return hal_err(s, AIDOS_E_SHAPE, "%s of an empty axis", s->op->name);
	arg_params *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	p->outer = p->inner = 1;
	p->n = x->dims[a];
	int64_t od[HAL_MAX_RANK];
	int orank = 0, keep = hal_attr_int(s->node, "keepdims", 1) != 0;
	for (int d = 0; d < rank; d++) {
		if (d < a)
			p->outer *= x->dims[d];
		else if (d > a)
			p->inner *= x->dims[d];
		if (d != a)
			od[orank++] = x->dims[d];
		else if (keep)
			od[orank++] = 1;
	}
	p->nblk = (p->inner + ARG_BLK - 1) / ARG_BLK;
	p->is_min = strcmp(s->op->name, "ArgMin") == 0;
	p->last = hal_attr_int(s->node, "select_last_index", 0) != 0;
	hal_tensor_set_shape(s->out[0], HAL_DT_I64, orank, od);
	s->params = p;
	return 0;
}

static int arg_exec(hal_step *s)
{
	const arg_params *p = s->params;
	int64_t items = p->outer * p->nblk;
	if (items == 0)
		return 0;
	arg_job j = { p, s->in[0]->data, s->out[0]->data };
	int64_t per = p->n * (p->inner < ARG_BLK ? p->inner : ARG_BLK);
	hal_parallel_for(s, items, RED_GRAIN / per + 1, arg_tab[s->in[0]->dtype], &j);
	return 0;
}

#define REDUCE(var, NAME, kind_, since_input) \
	static const red_op var = { { NAME, 1, HAL_OP_PURE, red_infer, red_exec }, kind_, since_input };

REDUCE(op_sum, "ReduceSum", R_SUM, 13)
REDUCE(op_mean, "ReduceMean", R_MEAN, 18)
REDUCE(op_max, "ReduceMax", R_MAX, 18)
REDUCE(op_min, "ReduceMin", R_MIN, 18)
REDUCE(op_prod, "ReduceProd", R_PROD, 18)
REDUCE(op_l1, "ReduceL1", R_L1, 18)
REDUCE(op_l2, "ReduceL2", R_L2, 18)
REDUCE(op_sumsq, "ReduceSumSquare", R_SUMSQ, 18)
REDUCE(op_logsum, "ReduceLogSum", R_LOGSUM, 18)
REDUCE(op_lse, "ReduceLogSumExp", R_LSE, 18)

static const hal_op op_argmax = { "ArgMax", 1, HAL_OP_PURE, arg_infer, arg_exec };
static const hal_op op_argmin = { "ArgMin", 1, HAL_OP_PURE, arg_infer, arg_exec };

const hal_op *const hal_ops_reduce[] = {
	&op_sum.op, &op_mean.op, &op_max.op, &op_min.op, &op_prod.op, &op_l1.op, &op_l2.op,
	&op_sumsq.op, &op_logsum.op, &op_lse.op, &op_argmax, &op_argmin,
	NULL,
};
