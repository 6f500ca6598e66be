/*
 * hal/ops/select.c - selections whose output size depends on the data:
 * Unique (opset 11) and NonMaxSuppression (opsets 10-11).
 *
 * A plan fixes every tensor's shape before a request runs, so these ops
 * run only when their inputs are known at plan time (weights, folded
 * values, or graph inputs value-keyed through hal_need_value(), at most 64
 * elements each); otherwise infer() says "... must be known at plan time"
 * (AIDOS_E_UNSUPPORTED). infer() computes
 * the selection into s->params and sets the shapes; exec() copies it out.
 *
 * Unique: as numpy.unique with return_index/inverse/counts; slices along
 * `axis` (or single elements when there is none) compared element by
 * element; sorted=1 orders them ascending, sorted=0 by first occurrence.
 * NonMaxSuppression: per batch and class, boxes whose score passes
 * score_threshold (strictly greater, when given) are taken by descending
 * score (ties: lower index first) and kept unless their IoU with a box
 * already kept in that class exceeds iou_threshold, up to
 * max_output_boxes_per_class; boxes are [y1, x1, y2, x2] in any corner
 * order, or [x_c, y_c, w, h] with center_point_box = 1 (ONNX Runtime's
 * reading of the spec, which the ONNX test data follows).
 * Inputs are bounded (at most 65536 slices / boxes per class) so the
 * quadratic scans stay a plan-time cost.
 */
#include <math.h>
#include <string.h>
#include "hal/ops/ops_util.h"

#define SEL_MAX 65536

/* ---- Unique ---- */

typedef struct unique_params {
	int64_t outer, n, inner, u;   /* X as [outer, n, inner]; u unique slices */
	int64_t *first;               /* [u] index of each unique slice's first occurrence */
	int64_t *count;               /* [u] */
	int64_t *inverse;             /* [n] */
	size_t es;
} unique_params;

/* <0, 0, >0 comparing slices a and b of x. */
static int slice_cmp(const hal_tensor *x, const unique_params *p, int64_t a, int64_t b)
{
	const int isf = x->dtype == HAL_DT_F32 || x->dtype == HAL_DT_F64;
	for (int64_t o = 0; o < p->outer; o++)
		for (int64_t k = 0; k < p->inner; k++) {
			int64_t ia = (o * p->n + a) * p->inner + k, ib = (o * p->n + b) * p->inner + k;
			if (isf) {
				double va = hal_get_f64(x, ia), vb = hal_get_f64(x, ib);
				if (va != vb)
					return va < vb ? -1 : 1;
			} else {
				int64_t va = hal_get_i64(x, ia), vb = hal_get_i64(x, ib);
				if (va != vb)
					return va < vb ? -1 : 1;
			}
		}
	return 0;
}

static int unique_infer(hal_step *s)
{
	const hal_tensor *x = ou_in(s, 0);
	if (!x)
		return hal_err(s, AIDOS_E_INVALID, "input X is missing");
	if (hal_dtype_size(x->dtype) == 0 || x->dtype == HAL_DT_STRING || x->dtype == HAL_DT_F16)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "X has dtype %s", hal_dtype_name(x->dtype));
	int rc = ou_need_const(s, x, "X");
	if (rc)
		return rc;
	unique_params *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	int a = -1;
	if (hal_attr_has(s->node, "axis")) {
		int64_t ax = hal_attr_int(s->node, "axis", 0);
		if ((a = hal_axis(ax, x->rank)) < 0)
			return hal_err(s, AIDOS_E_INVALID, "attribute axis %lld is out of range for rank %d",
				       (long long)ax, x->rank);
		p->outer = ou_span(x->dims, 0, a), p->n = x->dims[a], p->inner = ou_span(x->dims, a + 1, x->rank);
	} else {
		p->outer = 1, p->n = hal_numel(x), p->inner = 1;
	}
	if (p->n > SEL_MAX)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "%lld slices (at most %d)", (long long)p->n, SEL_MAX);
	p->es = hal_dtype_size(x->dtype);
	size_t nb = (size_t)(p->n ? p->n : 1) * sizeof(int64_t);
	if (!(p->first = hal_step_alloc(s, nb)) || !(p->count = hal_step_alloc(s, nb)) ||
	    !(p->inverse = hal_step_alloc(s, nb)))
		return AIDOS_E_NOMEM;
	/* first occurrences, in order */
	for (int64_t j = 0; j < p->n; j++) {
		int64_t q = 0;
		while (q < p->u && slice_cmp(x, p, p->first[q], j) != 0)
			q++;
		if (q == p->u)
			p->first[p->u++] = j;
		p->count[q]++;
		p->inverse[j] = q;
	}
	if (hal_attr_int(s->node, "sorted", 1)) {
		/* insertion sort of the unique slices, carrying counts; then
		 * map inverse through the permutation */
		for (int64_t i = 1; i < p->u; i++) {
			int64_t f = p->first[i], c = p->count[i], j = i;
			while (j > 0 && slice_cmp(x, p, p->first[j - 1], f) > 0) {
				p->first[j] = p->first[j - 1];
				p->count[j] = p->count[j - 1];
				j--;
			}
			p->first[j] = f;
			p->count[j] = c;
		}
		for (int64_t j = 0; j < p->n; j++) {
			int64_t lo = 0, hi = p->u - 1;
			while (lo < hi) {   /* binary search of slice j among the sorted uniques */
				int64_t mid = (lo + hi) / 2;
				if (slice_cmp(x, p, p->first[mid], j) < 0)
					lo = mid + 1;
				else
					hi = mid;
			}
			p->inverse[j] = lo;
		}
	}
	s->params = p;
	int64_t yd[HAL_MAX_RANK];
	int yr = a < 0 ? 1 : x->rank;
	if (a < 0)
		yd[0] = p->u;
	else
		memcpy(yd, x->dims, sizeof yd), yd[a] = p->u;
	if ((rc = ou_set(s, s->out[0], x->dtype, yr, yd)))
		return rc;
	const int64_t sz[3] = { p->u, p->n, p->u };
	for (int k = 1; k < s->n_out && k < 4; k++)
		if ((rc = ou_set(s, s->out[k], HAL_DT_I64, 1, &sz[k - 1])))
			return rc;
	return 0;
}

static int unique_exec(hal_step *s)
{
	const unique_params *p = s->params;
	const char *x = s->in[0]->data;
	char *y = s->out[0]->data;
	const size_t row = (size_t)p->inner * p->es;
	if (row)
		for (int64_t o = 0; o < p->outer; o++)
			for (int64_t q = 0; q < p->u; q++)
				memcpy(y + (o * p->u + q) * row, x + (o * p->n + p->first[q]) * row, row);
	const int64_t *src[3] = { p->first, p->inverse, p->count };
	const int64_t len[3] = { p->u, p->n, p->u };
	for (int k = 1; k < s->n_out && k < 4; k++)
		if (len[k - 1])
			memcpy(s->out[k]->data, src[k - 1], (size_t)len[k - 1] * sizeof(int64_t));
	return 0;
}

/* ---- NonMaxSuppression ---- */

typedef struct nms_params {
	int64_t n_sel;
	int64_t *sel;   /* [n_sel, 3] */
} nms_params;

/* Box i of b as (ymin, xmin, ymax, xmax). */
static void nms_box(const hal_tensor *b, int64_t i, int center, double r[4])
{
	double v[4];
	for (int k = 0; k < 4; k++)
		v[k] = hal_get_f64(b, i * 4 + k);
	if (center) {
		r[0] = v[1] - v[3] / 2, r[1] = v[0] - v[2] / 2, r[2] = v[1] + v[3] / 2, r[3] = v[0] + v[2] / 2;
	} else {
		r[0] = fmin(v[0], v[2]), r[1] = fmin(v[1], v[3]), r[2] = fmax(v[0], v[2]), r[3] = fmax(v[1], v[3]);
	}
}

static int nms_suppress(const double a[4], const double b[4], double thr)
{
	double ih = fmin(a[2], b[2]) - fmax(a[0], b[0]), iw = fmin(a[3], b[3]) - fmax(a[1], b[1]);
	if (ih <= 0 || iw <= 0)
		return 0;
	double inter = ih * iw;
	double aa = (a[2] - a[0]) * (a[3] - a[1]), ab = (b[2] - b[0]) * (b[3] - b[1]);
	double uni = aa + ab - inter;
	if (aa <= 0 || ab <= 0 || uni <= 0)
		return 0;
	return inter / uni > thr;
}

static int nms_infer(hal_step *s)
{
	const hal_tensor *bx = ou_in(s, 0), *sc = ou_in(s, 1), *mo = ou_in(s, 2), *it = ou_in(s, 3),
			 *st = ou_in(s, 4);
	int rc = ou_need_float(s, bx, "boxes", 1);
	if (rc || (rc = ou_need_float(s, sc, "scores", 1)))
		return rc;
	if (bx->rank != 3 || bx->dims[2] != 4 || sc->rank != 3 || sc->dims[0] != bx->dims[0] ||
	    sc->dims[2] != bx->dims[1])
		return hal_err(s, AIDOS_E_SHAPE, "boxes must be [B, N, 4] and scores [B, C, N]");
	int64_t center = hal_attr_int(s->node, "center_point_box", 0);
	if (center != 0 && center != 1)
		return hal_err(s, AIDOS_E_INVALID, "attribute center_point_box %lld (0 or 1)", (long long)center);
	if ((rc = ou_need_const(s, bx, "boxes")) || (rc = ou_need_const(s, sc, "scores")))
		return rc;
	int64_t maxo = 0;
	double iou = 0, sthr = 0;
	int has_st = 0;
	if (mo && hal_numel(mo) > 0 && (rc = ou_const_int(s, mo, "max_output_boxes_per_class", &maxo)))
		return rc;
	if (it && hal_numel(it) > 0) {
		if ((rc = ou_need_const(s, it, "iou_threshold")))
			return rc;
		iou = hal_get_f64(it, 0);
	}
	if (st && hal_numel(st) > 0) {
		if ((rc = ou_need_const(s, st, "score_threshold")))
			return rc;
		sthr = hal_get_f64(st, 0);
		has_st = 1;
	}
	const int64_t B = bx->dims[0], N = bx->dims[1], C = sc->dims[1];
	if (N > SEL_MAX)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "%lld boxes (at most %d)", (long long)N, SEL_MAX);
	if (maxo < 0)
		maxo = 0;
	if (maxo > N)
		maxo = N;
	nms_params *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	int64_t cap = B * C * maxo;
	int64_t *order = hal_step_alloc(s, (size_t)(N ? N : 1) * sizeof(int64_t));
	p->sel = hal_step_alloc(s, (size_t)(cap ? cap : 1) * 3 * sizeof(int64_t));
	int64_t *kept = hal_step_alloc(s, (size_t)(maxo ? maxo : 1) * sizeof(int64_t));
	if (!order || !p->sel || !kept)
		return AIDOS_E_NOMEM;
	for (int64_t b = 0; b < B; b++)
		for (int64_t c = 0; c < C; c++) {
			const int64_t so = (b * C + c) * N;
			int64_t m = 0, nk = 0;
			for (int64_t i = 0; i < N; i++)
				if (!has_st || hal_get_f64(sc, so + i) > sthr)
					order[m++] = i;
			/* stable insertion sort by descending score */
			for (int64_t i = 1; i < m; i++) {
				int64_t v = order[i], j = i;
				double sv = hal_get_f64(sc, so + v);
				while (j > 0 && hal_get_f64(sc, so + order[j - 1]) < sv) {
					order[j] = order[j - 1];
					j--;
				}
				order[j] = v;
			}
			for (int64_t i = 0; i < m && nk < maxo; i++) {
				double a[4], o[4];
				nms_box(bx, b * N + order[i], (int)center, a);
				int drop = 0;
				for (int64_t k = 0; k < nk && !drop; k++) {
					nms_box(bx, b * N + kept[k], (int)center, o);
					drop = nms_suppress(a, o, iou);
				}
				if (drop)
					continue;
				kept[nk++] = order[i];
				int64_t *r = p->sel + p->n_sel++ * 3;
				r[0] = b, r[1] = c, r[2] = order[i];
			}
		}
	s->params = p;
	int64_t od[2] = { p->n_sel, 3 };
	return ou_set(s, s->out[0], HAL_DT_I64, 2, od);
}

static int nms_exec(hal_step *s)
{
	const nms_params *p = s->params;
	if (p->n_sel)
		memcpy(s->out[0]->data, p->sel, (size_t)p->n_sel * 3 * sizeof(int64_t));
	return 0;
}

static const hal_op op_unique = { "Unique", 11, HAL_OP_PURE, unique_infer, unique_exec };
static const hal_op op_nms = { "NonMaxSuppression", 10, HAL_OP_PURE, nms_infer, nms_exec };

const hal_op *const hal_ops_select[] = { &op_unique, &op_nms, NULL };
