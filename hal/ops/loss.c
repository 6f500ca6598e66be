/*
 * hal/ops/loss.c - the ops of exported training graphs that inference still
 * meets: NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss and Dropout.
 *
 * Semantics follow the ONNX operator docs (onnx/docs/Operators.md, opsets
 * 12-13 for the losses, 1-13 for Dropout):
 *   NLL: input [N, C, d1..dk] (log-probabilities), target [N, d1..dk] int,
 *   optional weight [C]. loss[n, d] = -input[n, t, d] * w[t] with t =
 *   target[n, d], and 0 (weight 0) where t == ignore_index. reduction "none"
 *   gives that tensor, "sum" its sum, "mean" its sum divided by the sum of
 *   the weights taken (the count of non-ignored entries without weight).
 *   SCE: log_prob = LogSoftmax(scores, axis 1), loss = NLL(log_prob, ...);
 *   the optional second output is log_prob.
 *   Dropout: inference (no training_mode, or false, or ratio 0) is the
 *   identity with an all-true mask. Training mode with a non-zero ratio
 *   needs a random source whose draws could never match another runtime's,
 *   so it is refused at run time with AIDOS_E_UNSUPPORTED.
 * Sums accumulate in double. Targets outside [0, C) that are not
 * ignore_index are an error (AIDOS_E_RANGE) naming the position.
 */
#include <math.h>
#include <string.h>
#include "hal/ops/ops_util.h"

enum { RED_NONE, RED_SUM, RED_MEAN };

typedef struct loss_params {
	int red;
	int has_ii;
	int64_t ii;         /* ignore_index */
	int64_t n, c, d;    /* input viewed as [n, c, d] */
} loss_params;

static int loss_infer(hal_step *s, int sce)
{
	const hal_tensor *x = ou_in(s, 0), *t = ou_in(s, 1), *w = ou_in(s, 2);
	int rc = ou_need_float(s, x, sce ? "scores" : "input", 0);
	if (rc)
		return rc;
	if (!t)
		return hal_err(s, AIDOS_E_INVALID, "input target is missing");
	if (t->dtype != HAL_DT_I64 && t->dtype != HAL_DT_I32)
		return hal_err(s, AIDOS_E_INVALID, "target must be int32 or int64, not %s",
			       hal_dtype_name(t->dtype));
	if (x->rank < 2 || t->rank != x->rank - 1)
		return hal_err(s, AIDOS_E_SHAPE, "input rank %d and target rank %d: need rank >= 2 and target rank one less",
			       x->rank, t->rank);
	if (t->dims[0] != x->dims[0])
		return hal_err(s, AIDOS_E_SHAPE, "target dim 0 is %lld, input's is %lld",
			       (long long)t->dims[0], (long long)x->dims[0]);
	for (int i = 2; i < x->rank; i++)
		if (t->dims[i - 1] != x->dims[i])
			return hal_err(s, AIDOS_E_SHAPE, "target dim %d is %lld, input dim %d is %lld",
				       i - 1, (long long)t->dims[i - 1], i, (long long)x->dims[i]);
	if (w) {
		if ((rc = ou_need_float(s, w, "weight", 0)))
			return rc;
		if (w->rank != 1 || w->dims[0] != x->dims[1])
			return hal_err(s, AIDOS_E_SHAPE, "weight must be [%lld]", (long long)x->dims[1]);
	}
	loss_params *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	const char *red = hal_attr_str(s->node, "reduction", "mean");
	if (!strcmp(red, "none"))
		p->red = RED_NONE;
	else if (!strcmp(red, "sum"))
		p->red = RED_SUM;
	else if (!strcmp(red, "mean"))
		p->red = RED_MEAN;
	else
		return hal_err(s, AIDOS_E_INVALID, "attribute reduction is '%s' (none, sum or mean)", red);
	p->has_ii = hal_attr_has(s->node, "ignore_index");
	p->ii = hal_attr_int(s->node, "ignore_index", 0);
	p->n = x->dims[0];
	p->c = x->dims[1];
	p->d = ou_span(x->dims, 2, x->rank);
	s->params = p;
	if (p->red == RED_NONE)
		rc = ou_set(s, s->out[0], x->dtype, t->rank, t->dims);
	else
		rc = ou_set(s, s->out[0], x->dtype, 0, NULL);
	if (rc)
		return rc;
	if (sce && s->n_out > 1 && (rc = ou_set(s, s->out[1], x->dtype, x->rank, x->dims)))
		return rc;
	if (sce && !ou_out(s, 1))
		s->scratch_bytes = (size_t)hal_numel(x) * sizeof(float);
	return 0;
}

static int nll_infer(hal_step *s) { return loss_infer(s, 0); }
static int sce_infer(hal_step *s) { return loss_infer(s, 1); }

/* The NLL of log-probabilities lp [n, c, d] into y (per element or reduced). */
static int nll_core(hal_step *s, const loss_params *p, const float *lp, const hal_tensor *t,
		    const float *w, float *y)
{
	double sum = 0, wsum = 0;
	const int64_t *t64 = t->dtype == HAL_DT_I64 ? t->data : NULL;
	const int32_t *t32 = t->dtype == HAL_DT_I32 ? t->data : NULL;
	for (int64_t i = 0; i < p->n; i++)
		for (int64_t k = 0; k < p->d; k++) {
			int64_t j = i * p->d + k;
			int64_t c = t64 ? t64[j] : t32[j];
			double l = 0, wt = 0;
			if (!(p->has_ii && c == p->ii)) {
				if (c < 0 || c >= p->c)
					return hal_err(s, AIDOS_E_RANGE, "target[%lld] = %lld is outside [0, %lld)",
						       (long long)j, (long long)c, (long long)p->c);
				wt = w ? w[c] : 1.0;
				l = -(double)lp[(i * p->c + c) * p->d + k] * wt;
			}
			if (p->red == RED_NONE)
				y[j] = (float)l;
			sum += l;
			wsum += wt;
		}
	if (p->red == RED_SUM)
		y[0] = (float)sum;
	else if (p->red == RED_MEAN)
		y[0] = (float)(sum / wsum);
	return 0;
}

static int nll_exec(hal_step *s)
{
	const hal_tensor *w = ou_in(s, 2);
	return nll_core(s, s->params, s->in[0]->data, s->in[1], w ? w->data : NULL, s->out[0]->data);
}

static int sce_exec(hal_step *s)
{
	const loss_params *p = s->params;
	const float *x = s->in[0]->data;  /* [n, c, d] */
	float *lp = ou_out(s, 1) ? s->out[1]->data : s->scratch; /* [n, c, d] */
	for (int64_t i = 0; i < p->n; i++)
		for (int64_t k = 0; k < p->d; k++) {
			const float *xs = x + i * p->c * p->d + k;
			float *ls = lp + i * p->c * p->d + k;
			float m = -INFINITY;
			for (int64_t c = 0; c < p->c; c++)
				m = fmaxf(m, xs[c * p->d]);
			double e = 0;
			for (int64_t c = 0; c < p->c; c++)
				e += exp((double)xs[c * p->d] - m);
			float lse = m + (float)log(e);
			for (int64_t c = 0; c < p->c; c++)
				ls[c * p->d] = xs[c * p->d] - lse;
		}
	const hal_tensor *w = ou_in(s, 2);
	return nll_core(s, p, lp, s->in[1], w ? w->data : NULL, s->out[0]->data);
}

/* ---- Dropout ---- */

typedef struct dropout_params {
	float ratio;        /* when known at plan time */
	int ratio_in;       /* ratio is input 1, read at run time */
	int train_in;       /* training_mode is input 2, read at run time */
} dropout_params;

static int dropout_infer(hal_step *s)
{
	const hal_tensor *x = ou_in(s, 0);
	if (!x)
		return hal_err(s, AIDOS_E_INVALID, "input data is missing");
	if (hal_dtype_size(x->dtype) == 0)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "data has dtype %s", hal_dtype_name(x->dtype));
	dropout_params *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	p->ratio = 0.5f;
	if (s->opset >= 12) {
		const hal_tensor *r = ou_in(s, 1), *t = ou_in(s, 2);
		if (r) {
			if (hal_numel(r) != 1 || (r->dtype != HAL_DT_F32 && r->dtype != HAL_DT_F64))
				return hal_err(s, AIDOS_E_INVALID, "ratio must be one float");
			p->ratio_in = 1;
		}
		if (t) {
			if (hal_numel(t) != 1 || t->dtype != HAL_DT_BOOL)
				return hal_err(s, AIDOS_E_INVALID, "training_mode must be one bool");
			p->train_in = 1;
		}
	} else {
		/* opsets 1-11: ratio attribute, inference only (is_test was
		 * dropped at 7; ONNX runtimes run these as the identity) */
		p->ratio = hal_attr_float(s->node, "ratio", 0.5f);
	}
	if (!(p->ratio >= 0 && p->ratio < 1))
		return hal_err(s, AIDOS_E_INVALID, "attribute ratio %g is outside [0, 1)", p->ratio);
	s->params = p;
	int rc = ou_set(s, s->out[0], x->dtype, x->rank, x->dims);
	if (!rc && s->n_out > 1)
		rc = ou_set(s, s->out[1], s->opset >= 10 ? HAL_DT_BOOL : x->dtype, x->rank, x->dims);
	return rc;
}

static int dropout_exec(hal_step *s)
{
	const dropout_params *p = s->params;
	if (p->train_in && hal_get_i64(s->in[2], 0)) {
		double r = p->ratio_in ? hal_get_f64(s->in[1], 0) : p->ratio;
		if (!(r >= 0 && r < 1))
			return hal_err(s, AIDOS_E_INVALID, "ratio %g is outside [0, 1)", r);
		if (r != 0)
			return hal_err(s, AIDOS_E_UNSUPPORTED,
				       "training_mode with ratio %g needs random draws aidos does not make", r);
	}
	const hal_tensor *x = s->in[0];
	if (hal_numel(x) == 0)
		return 0;   /* empty: nothing to write, data may be NULL */
	if (s->out[0]->data != x->data)
		memcpy(s->out[0]->data, x->data, hal_nbytes(x));
	if (s->n_out > 1 && s->out[1]->data) {
		hal_tensor *m = s->out[1];
		int64_t n = hal_numel(m);
		if (m->dtype == HAL_DT_BOOL)
			memset(m->data, 1, (size_t)n);
		else if (m->dtype == HAL_DT_F32)
			for (int64_t i = 0; i < n; i++)
				((float *)m->data)[i] = 1.0f;
		else if (m->dtype == HAL_DT_F64)
			for (int64_t i = 0; i < n; i++)
				((double *)m->data)[i] = 1.0;
		else
			return hal_err(s, AIDOS_E_UNSUPPORTED, "mask of dtype %s", hal_dtype_name(m->dtype));
	}
	return 0;
}

static const hal_op op_nll = { "NegativeLogLikelihoodLoss", 12, HAL_OP_PURE, nll_infer, nll_exec };
static const hal_op op_sce = { "SoftmaxCrossEntropyLoss", 12, HAL_OP_PURE, sce_infer, sce_exec };
static const hal_op op_dropout = { "Dropout", 1, HAL_OP_PURE, dropout_infer, dropout_exec };

const hal_op *const hal_ops_loss[] = { &op_nll, &op_sce, &op_dropout, NULL };
