/*
 * hal/fuse_xfmr.c - plan-time fusion of transformer patterns (see
 * hal_fuse_xfmr in hal/plan.h).
 *
 * LayerNorm as exporters decompose it (PyTorch before opset 17, TF, and
 * tools/gen_transformers.py's *_dec models):
 *
 *   m = ReduceMean(x) over the last axis, keepdims    d = Sub(x, m)
 *   q = Pow(d, 2) or Mul(d, d)                        v = ReduceMean(q) likewise
 *   e = Add(v, eps)                                   r = Sqrt(e)
 *   n = Div(d, r)                 [y = Mul(n, gamma)] [z = Add(y, beta)]
 *
 * nine steps, four full passes over x-sized tensors and two reductions,
 * become one LayerNormalization step (hal/ops/norm.c: two passes over a
 * row in L1). Matched on planned steps, so shapes and constants are known:
 * the steps must be consecutive and in this order (as exporters write
 * them), eps a float32 scalar constant, gamma and beta float32 constants of
 * the last dim's size (or absent), and no intermediate read elsewhere. The
 * rewrite is exact up to float rounding (the test compares it with the
 * unfused plan).
 */
#include <string.h>
#include "hal/ops/attention.h"
#include "hal/plan.h"

static int is_op(const hal_step *s, const char *name)
{
	return s->op && !strcmp(s->op->name, name) && s->n_out >= 1 && s->out[0];
}

/* ReduceMean of x over its last dim only, keepdims: judged by shapes. */
static int is_row_mean(const hal_step *s, const hal_tensor *x)
{
	if (!is_op(s, "ReduceMean") || s->in[0] != x || x->dtype != HAL_DT_F32 || x->rank < 1)
		return 0;
	const hal_tensor *o = s->out[0];
	if (o->rank != x->rank || o->dims[x->rank - 1] != 1 || x->dims[x->rank - 1] < 1)
		return 0;
	for (int i = 0; i < x->rank - 1; i++)
		if (o->dims[i] != x->dims[i])
			return 0;
	return 1;
}

/* The other input of binary step s when one input is a; NULL otherwise. */
static const hal_tensor *other(const hal_step *s, const hal_tensor *a)
{
	if (s->n_in != 2)
		return NULL;
	return s->in[0] == a ? s->in[1] : s->in[1] == a ? s->in[0] : NULL;
}

static int const_scalar(const hal_tensor *t, float *v)
{
	if (!t || !t->is_const || !t->data || t->dtype != HAL_DT_F32 || hal_numel(t) != 1)
		return 0;
	memcpy(v, t->data, sizeof *v);
	return 1;
}

/* A float32 constant of h elements, all but its last dim 1. */
static int const_row(const hal_tensor *t, int64_t h)
{
	if (!t || !t->is_const || !t->data || t->dtype != HAL_DT_F32 || t->rank < 1 ||
	    t->dims[t->rank - 1] != h)
		return 0;
	return hal_numel(t) == h;
}

/* Whether steps i..last-1 each write one value that no step after `last`
 * reads (the intermediates of a run that one step is to replace). */
static int run_private(hal_plan *p, int i, int last)
{
	for (int k = i; k < last; k++) {
		hal_value *iv = hal_plan_value(p, p->step[k].out[0]);
		if (!iv || iv->last > last || p->step[k].n_out != 1)
			return 0;
	}
	return 1;
}

/* Zeroed input and output arrays for a replacement step, from step s's
 * arena. Returns 0, or -1 with *rc = AIDOS_E_NOMEM. */
static int step_io(hal_step *s, hal_tensor ***in, hal_tensor ***out, int *rc)
{
	*in = hal_step_alloc(s, 17 * sizeof **in);
	*out = hal_step_alloc(s, 17 * sizeof **out);
	if (!*in || !*out) {
		*rc = AIDOS_E_NOMEM;
		return -1;
	}
	memset(*in, 0, 17 * sizeof **in);
	memset(*out, 0, 17 * sizeof **out);
	return 0;
}

/* A replacement step's node, from step s's arena: a copy of `like` as
 * op_type of the default domain with the one attribute a (copied); and its
 * zeroed input and output arrays. Returns 0, or -1 with
 * *rc = AIDOS_E_NOMEM. */
static int step_node(hal_step *s, const ir_node *like, const char *op_type, const ir_attr *a,
		     ir_node **nd, hal_tensor ***in, hal_tensor ***out, int *rc)
{
	*nd = hal_step_alloc(s, sizeof **nd);
	ir_attr *at = hal_step_alloc(s, sizeof *at);
	if (!*nd || !at) {
		*rc = AIDOS_E_NOMEM;
		return -1;
	}
	if (step_io(s, in, out, rc))
		return -1;
	*at = *a;
	**nd = *like;
	(*nd)->op_type = op_type;
	(*nd)->domain = "";
	(*nd)->n_attr = 1;
	(*nd)->attr = at;
	return 0;
}

/* Whether step n (out[0] = y) plans with y's shape unchanged (and without
 * scratch when no_scratch); if not, y and the plan's error are put back as
 * they were (the steps stay unfused). */
static int step_plans(hal_plan *p, hal_step *n, hal_tensor *y, int no_scratch)
{
	hal_tensor keep = *y;
	if (n->op->infer(n) || (no_scratch && n->scratch_bytes) || y->rank != keep.rank ||
	    memcmp(y->dims, keep.dims, sizeof keep.dims[0] * (size_t)keep.rank)) {
		*y = keep;
		p->err[0] = 0;
		return 0;
	}
	return 1;
}

/* Replaces steps i..last by n at i: their intermediates (outputs of
 * i..last-1) are fused away, steps i+1..last emptied. */
static void run_replace(hal_plan *p, int i, int last, const hal_step *n)
{
	hal_step *st = p->step;
	for (int k = i; k < last; k++) {
		hal_value *iv = hal_plan_value(p, st[k].out[0]);
		iv->kind = HAL_VAL_FUSED;
		iv->t.data = NULL;
	}
	st[i] = *n;
	for (int k = i + 1; k <= last; k++)
		st[k].op = NULL;
}

/* Tries the pattern at step i; on a match rewrites it and returns 1. */
static int match_ln(hal_plan *p, int i, int *rc)
{
	hal_step *st = p->step;
	if (i + 7 > p->n_step)
		return 0;
	hal_step *s = &st[i];
	const hal_tensor *x = s->in[0];
	if (!is_row_mean(s, x))
		return 0;
	const int64_t h = x->dims[x->rank - 1];
	const hal_tensor *m = s->out[0];
	/* d = x - m */
	if (!is_op(&st[i + 1], "Sub") || st[i + 1].in[0] != x || st[i + 1].in[1] != m)
		return 0;
	const hal_tensor *d = st[i + 1].out[0];
	/* q = d^2 */
	float two;
	if (!((is_op(&st[i + 2], "Pow") && st[i + 2].in[0] == d && const_scalar(st[i + 2].in[1], &two) &&
	       two == 2.0f) ||
	      (is_op(&st[i + 2], "Mul") && st[i + 2].in[0] == d && st[i + 2].in[1] == d)))
		return 0;
	const hal_tensor *q = st[i + 2].out[0];
	if (!is_row_mean(&st[i + 3], q))
		return 0;
	const hal_tensor *v = st[i + 3].out[0];
	float eps;
	if (!is_op(&st[i + 4], "Add") || !const_scalar(other(&st[i + 4], v), &eps) || !(eps >= 0))
		return 0;
	const hal_tensor *e = st[i + 4].out[0];
	if (!is_op(&st[i + 5], "Sqrt") || st[i + 5].in[0] != e)
		return 0;
	const hal_tensor *r = st[i + 5].out[0];
	if (!is_op(&st[i + 6], "Div") || st[i + 6].in[0] != d || st[i + 6].in[1] != r)
		return 0;
	int last = i + 6;
	const hal_tensor *gamma = NULL, *beta = NULL;
	hal_tensor *y = st[i + 6].out[0];
	if (last + 1 < p->n_step && is_op(&st[last + 1], "Mul") && const_row(other(&st[last + 1], y), h) &&
	    hal_numel(st[last + 1].out[0]) == hal_numel(x)) {
		gamma = other(&st[last + 1], y);
		y = st[++last].out[0];
		if (last + 1 < p->n_step && is_op(&st[last + 1], "Add") &&
		    const_row(other(&st[last + 1], y), h) && hal_numel(st[last + 1].out[0]) == hal_numel(x)) {
			beta = other(&st[last + 1], y);
			y = st[++last].out[0];
		}
	}
	/* Every intermediate is read only inside the pattern. */
	if (!run_private(p, i, last))
		return 0;
	if (y->dtype != HAL_DT_F32 || hal_numel(y) != hal_numel(x))
		return 0;
	const hal_op *ln = hal_op_find("LayerNormalization");
	if (!ln)
		return 0;
	/* Scale of ones when the pattern has no Mul. */
	hal_tensor *ones = NULL;
	if (!gamma) {
		ones = hal_step_alloc(s, sizeof *ones);
		float *one = hal_step_alloc(s, (size_t)h * sizeof *one);
		if (!ones || !one) {
			*rc = AIDOS_E_NOMEM;
			return 0;
		}
		for (int64_t k = 0; k < h; k++)
			one[k] = 1.0f;
		memset(ones, 0, sizeof *ones);
		hal_tensor_set_shape(ones, HAL_DT_F32, 1, &h);
		ones->data = one;
		ones->is_const = 1;
		gamma = ones;
	}
	ir_node *nd;
	hal_tensor **in, **out;
	if (step_node(s, st[last].node, "LayerNormalization",
		      &(ir_attr){ .name = "epsilon", .type = IR_ATTR_FLOAT, .f = eps }, &nd, &in, &out, rc))
		return 0;
	in[0] = (hal_tensor *)x;
	in[1] = (hal_tensor *)gamma;
	in[2] = (hal_tensor *)beta;
	out[0] = (hal_tensor *)y;
	hal_step n = {
		.op = ln, .node = nd, .opset = s->opset, .n_in = beta ? 3 : 2, .n_out = 1,
		.in = in, .out = out, .plan = p,
	};
	if (!step_plans(p, &n, y, 1))
		return 0;   /* not a LayerNorm after all: leave the steps as they are */
	run_replace(p, i, last, &n);
	return 1;
}

/* MatMul by a constant then Add of a constant row (a linear layer's bias,
 * either operand order, as every exporter writes nn.Linear at rank 3):
 * the bias becomes the MatMul's third input (hal/ops/nn.c applies it to
 * each block of the product while it is in cache, or as the transposed
 * product's native row bias), saving the Add's pass over the output. The
 * MatMul's output must be read by the Add only; the MatMul kernel refuses
 * the shapes it cannot apply a bias to, and the steps stay as they were. */
/* The exact GELU as BERT exporters spell it, after the bias Add at step j
 * (output z): Div(z, sqrt 2) Erf Add(1) Mul(z, .) Mul(0.5), consecutive,
 * intermediates read only inside. Returns its last step, or -1. */
static int gelu_after(hal_plan *p, int j, const hal_tensor *z)
{
	hal_step *st = p->step;
	float c;
	if (j + 5 >= p->n_step)
		return -1;
	if (!is_op(&st[j + 1], "Div") || st[j + 1].in[0] != z || !const_scalar(st[j + 1].in[1], &c) ||
	    !(c > 1.4142130f && c < 1.4142140f))
		return -1;
	const hal_tensor *d = st[j + 1].out[0];
	if (!is_op(&st[j + 2], "Erf") || st[j + 2].in[0] != d)
		return -1;
	const hal_tensor *e = st[j + 2].out[0];
	if (!is_op(&st[j + 3], "Add") || !const_scalar(other(&st[j + 3], e), &c) || c != 1.0f)
		return -1;
	const hal_tensor *a = st[j + 3].out[0];
	if (!is_op(&st[j + 4], "Mul") || other(&st[j + 4], a) != z || z == a)
		return -1;
	const hal_tensor *m = st[j + 4].out[0];
	if (!is_op(&st[j + 5], "Mul") || !const_scalar(other(&st[j + 5], m), &c) || c != 0.5f)
		return -1;
	if (!run_private(p, j, j + 5))
		return -1;
	for (int k = j; k < j + 5; k++)
		if (hal_numel(st[k + 1].out[0]) != hal_numel(z) || st[k + 1].out[0]->dtype != HAL_DT_F32)
			return -1;
	return j + 5;
}

static int match_bias(hal_plan *p, int i, int *rc)
{
	hal_step *st = p->step;
	hal_step *s = &st[i], *a = &st[i + 1];
	if (i + 1 >= p->n_step || !is_op(s, "MatMul") || s->n_in != 2 || !is_op(a, "Add"))
		return 0;
	hal_tensor *y = s->out[0], *z = a->out[0];
	const hal_tensor *b = other(a, y);
	if (!b || !s->in[1]->is_const || y->dtype != HAL_DT_F32 || y->rank < 1 ||
	    !const_row(b, y->dims[y->rank - 1]) || b->rank > y->rank || hal_numel(z) != hal_numel(y) ||
	    z->rank != y->rank)
		return 0;
	if (!run_private(p, i, i + 1))
		return 0;
	/* A GELU after the bias joins too: "aidos_gelu" on the MatMul's node
	 * (applied per block after the bias, hal/ops/nn.c). */
	int last = gelu_after(p, i + 1, z);
	hal_tensor *zf = last > 0 ? p->step[last].out[0] : z;
	hal_tensor **in, **out;
	if (step_io(s, &in, &out, rc))
		return 0;
	in[0] = s->in[0];
	in[1] = s->in[1];
	in[2] = (hal_tensor *)b;
	out[0] = zf;
	hal_step n = *s;
	n.n_in = 3;
	n.in = in;
	n.out = out;
	n.params = NULL;
	n.scratch_bytes = 0;
	if (last > 0) {
		ir_node *nd = hal_step_alloc(s, sizeof *nd);
		ir_attr *at = hal_step_alloc(s, (size_t)(s->node->n_attr + 1) * sizeof *at);
		if (!nd || !at) {
			*rc = AIDOS_E_NOMEM;
			return 0;
		}
		*nd = *s->node;
		if (s->node->n_attr)
			memcpy(at, s->node->attr, (size_t)s->node->n_attr * sizeof *at);
		memset(&at[nd->n_attr], 0, sizeof *at);
		at[nd->n_attr].name = "aidos_gelu";
		at[nd->n_attr].type = IR_ATTR_INT;
		at[nd->n_attr].i = 1;
		nd->n_attr++;
		nd->attr = at;
		n.node = nd;
	}
	if (!step_plans(p, &n, zf, 0))
		return 0;   /* the kernel cannot take this bias: leave the steps */
	run_replace(p, i, last > 0 ? last : i + 1, &n);
	return 1;
}

/* The Transpose step that writes t with permutation perm (4 dims) and
 * whose output is read by step `user` only; NULL otherwise. */
static hal_step *transpose_of(hal_plan *p, const hal_tensor *t, const int64_t *perm, int user)
{
	hal_value *v = hal_plan_value(p, t);
	if (!v || v->def < 0 || v->def >= p->n_step || v->last != user)
		return NULL;
	hal_step *s = &p->step[v->def];
	const int64_t *pm;
	if (!is_op(s, "Transpose") || s->out[0] != t || s->in[0]->rank != 4 || s->in[0]->dtype != HAL_DT_F32 ||
	    hal_attr_ints(s->node, "perm", &pm) != 4)
		return NULL;
	for (int i = 0; i < 4; i++)
		if (pm[i] != perm[i])
			return NULL;
	return s;
}

/* Scaled dot-product attention (see hal/ops/attention.h) from the
 * MatMul(Q, K^T) at step i: the Transposes of q, k, v (earlier steps, read
 * only here) and the consecutive [Div|Mul scalar] [Add mask] Softmax MatMul
 * Transpose become one FusedAttention step at i. q, k, v then stay alive
 * until it runs (their last reads move to it). */
static int match_attn(hal_plan *p, int i, int *rc)
{
	static const int64_t p0213[4] = { 0, 2, 1, 3 }, p0231[4] = { 0, 2, 3, 1 };
	hal_step *st = p->step;
	hal_step *s = &st[i];
	if (!is_op(s, "MatMul") || s->n_in != 2 || s->in[0]->rank != 4 || s->in[1]->rank != 4)
		return 0;
	int k = i + 1;
	float scale = 1.0f, c;
	const hal_tensor *cur = s->out[0], *mask = NULL;
	if (k < p->n_step && (is_op(&st[k], "Div") || is_op(&st[k], "Mul")) &&
	    const_scalar(other(&st[k], cur), &c) && (st[k].op->name[0] == 'M' || st[k].in[0] == cur) &&
	    c != 0.0f) {
		scale = st[k].op->name[0] == 'D' ? 1.0f / c : c;
		cur = st[k++].out[0];
	}
	if (k < p->n_step && is_op(&st[k], "Add") && other(&st[k], cur) && other(&st[k], cur) != cur &&
	    hal_numel(st[k].out[0]) == hal_numel(cur)) {
		mask = other(&st[k], cur);
		cur = st[k++].out[0];
	}
	if (k + 2 >= p->n_step || !is_op(&st[k], "Softmax") || st[k].in[0] != cur)
		return 0;
	int64_t ax = hal_attr_int(st[k].node, "axis", st[k].opset >= 13 ? -1 : 1);
	if (ax != -1 && ax != 3)
		return 0;
	cur = st[k++].out[0];
	hal_step *pv = &st[k], *to = &st[k + 1];
	if (!is_op(pv, "MatMul") || pv->in[0] != cur || !is_op(to, "Transpose") || to->in[0] != pv->out[0])
		return 0;
	const int64_t *pm;
	if (hal_attr_ints(to->node, "perm", &pm) != 4 || memcmp(pm, p0213, sizeof p0213))
		return 0;
	int last = k + 1;
	hal_step *tq = transpose_of(p, s->in[0], p0213, i), *tk = transpose_of(p, s->in[1], p0231, i);
	hal_step *tv = transpose_of(p, pv->in[1], p0213, k);
	if (!tq || !tk || !tv)
		return 0;
	/* Every intermediate of the run is read only inside it. */
	if (!run_private(p, i, last))
		return 0;
	ir_node *nd;
	hal_tensor **in, **out;
	if (step_node(s, to->node, hal_op_attention.name,
		      &(ir_attr){ .name = "scale", .type = IR_ATTR_FLOAT, .f = scale }, &nd, &in, &out, rc))
		return 0;
	in[0] = tq->in[0];
	in[1] = tk->in[0];
	in[2] = tv->in[0];
	in[3] = (hal_tensor *)mask;
	hal_tensor *y = to->out[0];
	out[0] = y;
	hal_step n = {
		.op = &hal_op_attention, .node = nd, .opset = s->opset, .n_in = mask ? 4 : 3,
		.n_out = 1, .in = in, .out = out, .plan = p,
	};
	if (!step_plans(p, &n, y, 0))
		return 0;   /* not attention as the kernel takes it: leave the steps */
	for (int j = 0; j < 3; j++) {
		hal_value *iv = hal_plan_value(p, in[j]);
		if (iv && iv->last < last)
			iv->last = last;
	}
	hal_step *tr[3] = { tq, tk, tv };
	for (int j = 0; j < 3; j++) {
		hal_value *iv = hal_plan_value(p, tr[j]->out[0]);
		iv->kind = HAL_VAL_FUSED;
		iv->t.data = NULL;
		tr[j]->op = NULL;
	}
	run_replace(p, i, last, &n);
	return 1;
}

/* Whether binary step s is Op(a, c) or Op(c, a) with c a float32 scalar
 * constant within 1e-6 relative of want. */
static int op_by_const(const hal_step *s, const char *op, const hal_tensor *a, float want)
{
	float c;
	return is_op(s, op) && const_scalar(other(s, a), &c) && other(s, a) != a &&
	       c >= want - 1e-6f * want && c <= want + 1e-6f * want;
}

/* GELU's tanh approximation as GPT-2 exporters spell it, at step i:
 *   Pow(x, 3) Mul(0.044715) Add(x, .) Mul(sqrt(2/pi)) Tanh
 *   Mul(x, 0.5) Add(., 1) Mul(., .)
 * eight consecutive steps, intermediates read only inside: one Gelu
 * (approximate = "tanh") step, hal/ops/vmath.h's vectorised kernel in one
 * pass instead of eight kernels per block. */
static int match_gelu_tanh(hal_plan *p, int i, int *rc)
{
	hal_step *st = p->step;
	if (i + 8 > p->n_step || !op_by_const(&st[i], "Pow", st[i].in[0], 3.0f) || st[i].in[1] == st[i].in[0])
		return 0;
	const hal_tensor *x = st[i].in[0];
	if (x->dtype != HAL_DT_F32 || !op_by_const(&st[i + 1], "Mul", st[i].out[0], 0.044715f) ||
	    !is_op(&st[i + 2], "Add") || other(&st[i + 2], st[i + 1].out[0]) != x ||
	    !op_by_const(&st[i + 3], "Mul", st[i + 2].out[0], 0.7978845608f) ||
	    !is_op(&st[i + 4], "Tanh") || st[i + 4].in[0] != st[i + 3].out[0] ||
	    !op_by_const(&st[i + 5], "Mul", x, 0.5f) ||
	    !op_by_const(&st[i + 6], "Add", st[i + 4].out[0], 1.0f) || !is_op(&st[i + 7], "Mul") ||
	    other(&st[i + 7], st[i + 5].out[0]) != st[i + 6].out[0])
		return 0;
	const int last = i + 7;
	hal_tensor *y = st[last].out[0];
	for (int k = i; k <= last; k++) {
		if (st[k].n_out != 1 || hal_numel(st[k].out[0]) != hal_numel(x))
			return 0;
		hal_value *iv = hal_plan_value(p, st[k].out[0]);
		if (k < last && (!iv || iv->last > last))
			return 0;
	}
	const hal_op *gelu = hal_op_find("Gelu");
	if (!gelu)
		return 0;
	hal_step *s = &st[i];
	ir_node *nd;
	hal_tensor **in, **out;
	if (step_node(s, st[last].node, "Gelu",
		      &(ir_attr){ .name = "approximate", .type = IR_ATTR_STRING, .s = "tanh", .slen = 4 },
		      &nd, &in, &out, rc))
		return 0;
	in[0] = (hal_tensor *)x;
	out[0] = y;
	hal_step n = {
		.op = gelu, .node = nd, .opset = s->opset > 20 ? s->opset : 20, .n_in = 1, .n_out = 1,
		.in = in, .out = out, .plan = p,
	};
	if (!step_plans(p, &n, y, 1))
		return 0;
	run_replace(p, i, last, &n);
	return 1;
}

int hal_fuse_xfmr(hal_plan *p)
{
	int rc = 0;
	for (int i = 0; i < p->n_step && !rc; i++)
		if (p->step[i].op && !match_ln(p, i, &rc) && !rc && !match_attn(p, i, &rc) && !rc &&
		    !match_gelu_tanh(p, i, &rc) && !rc)
			match_bias(p, i, &rc);
	return rc;
}
