/*
 * hal/fuse_conv.c - load-time rewrite of Conv chains (see hal/ir.h).
 *
 * Exported CNNs (PaddleOCR, MobileNet) follow nearly every Conv with a
 * per-channel affine map (BatchNormalization, or a Mul and an Add by
 * constants) and an activation, often HardSwish spelled as four nodes
 * (Add 3, Clip 0..6, Mul, Div 6), sometimes with a scalar Mul/Add after it
 * (PP-LCNetV3's learnable affine blocks). Run as separate steps, each of
 * these reads and writes the whole activation tensor: in PaddleOCR det they
 * cost about a third of the run time. This pass
 *   1. folds the affine maps into the Conv's weights and bias:
 *      y' = s*y + t with y = W*x + b gives W' = s*W, b' = s*b + t per output
 *      channel (BatchNormalization: s = gamma/sqrt(var+eps),
 *      t = beta - mean*s, Ioffe & Szegedy 2015);
 *   2. records the activation and a scalar affine map after it in the Conv
 *      node's epilogue (ir_node.epi), which the Conv kernel applies to each
 *      output row while it is still in cache;
 *   3. removes the absorbed nodes; the Conv takes over the last one's output
 *      name.
 * A node is absorbed only when the Conv chain is its input's one reader, so
 * no value another node (or a graph output, or a subgraph) reads disappears.
 * Results differ from the unfused graph by rounding only (the folded product
 * is one multiply-add chain shorter).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "hal/ir.h"
#include "hal/model.h"
#include "hal/ops/conv_fused.h"
#include "hal/plan.h"

#define ONNX_FLOAT 1

struct chain {
	const ir_graph *g;
	int64_t cout;      /* output channels */
	int rank;          /* the Conv output's rank (W's) */
	float *s, *t;      /* [cout]: the affine map folded so far */
	uint8_t *drop;     /* nodes absorbed */
};

/* A float constant that broadcasts against the Conv output [N, C, ...] as
 * one value per channel: rank <= the output's, every dimension 1 but the
 * channel one, which is 1 or C. Returns its values (numel 1 or C) and sets
 * *per_ch, or NULL. */
static const float *chan_const(const struct chain *c, const char *name, int *per_ch, ir_tensor *tmp)
{
	const ir_tensor *t = ir_graph_const(c->g, name, tmp);
	if (!t || t->dtype != ONNX_FLOAT || t->rank > c->rank || !t->data)
		return NULL;
	int64_t numel = 1;
	for (int i = 0; i < t->rank; i++) {
		int axis = c->rank - t->rank + i;
		if (t->dims[i] != 1 && !(axis == 1 && t->dims[i] == c->cout))
			return NULL;
		numel *= t->dims[i];
	}
	if (t->nbytes < (size_t)numel * sizeof(float))
		return NULL;
	*per_ch = numel != 1;
	return t->data;
}

/* A float constant holding one value (any rank); NAN-free. */
static int scalar_const(const ir_graph *g, const char *name, float *v)
{
	ir_tensor tmp;
	const ir_tensor *t = ir_graph_const(g, name, &tmp);
	if (!t || t->dtype != ONNX_FLOAT || !t->data || t->nbytes != sizeof(float))
		return 0;
	memcpy(v, t->data, sizeof *v);
	return !isnan(*v);
}

static int is_op(const ir_node *n, const char *op)
{
	return !n->domain[0] && strcmp(n->op_type, op) == 0;
}

/* The one node reading name, when it reads it and nothing else does. */
static const ir_node *sole(const ir_graph *g, const char *name, int *idx)
{
	int n = ir_consumers(g, name, idx, 1);
	return n == 1 ? &g->node[*idx] : NULL;
}

/* For a binary node with one input cur: the other input's name, and
 * whether cur comes first. NULL when cur is not exactly one of them. */
static const char *other_input(const ir_node *n, const char *cur, int *cur_first)
{
	if (n->n_in != 2 || n->n_out != 1)
		return NULL;
	int a = strcmp(n->in[0], cur) == 0, b = strcmp(n->in[1], cur) == 0;
	if (a == b)
		return NULL;
	*cur_first = a;
	return a ? n->in[1] : n->in[0];
}

/* Folds node n (reading cur) into the affine map when it is one; 1 if it
 * did. y' = s*y + t becomes y'' = op(y', k). */
static int fold_affine(struct chain *c, const ir_node *n, const char *cur, int opset)
{
	ir_tensor tmp;
	int per, first;
	if (is_op(n, "BatchNormalization")) {
		if (n->n_in != 5 || strcmp(n->in[0], cur) != 0 || n->n_out < 1 ||
		    hal_attr_int(n, "training_mode", 0) != 0)
			return 0;
		for (int k = 1; k < n->n_out; k++)
			if (n->out[k][0])
				return 0;  /* running statistics asked for */
		const float *p[4];
		for (int k = 0; k < 4; k++) {
			ir_tensor tk;
			const ir_tensor *t = ir_graph_const(c->g, n->in[1 + k], &tk);
			if (!t || t->dtype != ONNX_FLOAT || !t->data || t->rank != 1 ||
			    t->dims[0] != c->cout || t->nbytes < (size_t)c->cout * sizeof(float))
				return 0;
			p[k] = t->data;
		}
		/* opset < 7 BatchNormalization has spatial/is_test attributes;
		 * spatial=0 means per-element statistics, not per-channel. */
		if (opset < 9 && hal_attr_int(n, "spatial", 1) != 1)
			return 0;
		float eps = hal_attr_float(n, "epsilon", 1e-5f);
		for (int64_t o = 0; o < c->cout; o++) {
			float k = p[0][o] / sqrtf(p[3][o] + eps);
			c->s[o] *= k;
			c->t[o] = (c->t[o] - p[2][o]) * k + p[1][o];
		}
		return 1;
	}
	int mul = is_op(n, "Mul"), add = is_op(n, "Add"), sub = is_op(n, "Sub"), div = is_op(n, "Div");
	if (!mul && !add && !sub && !div)
		return 0;
	const char *o = other_input(n, cur, &first);
	const float *k = o ? chan_const(c, o, &per, &tmp) : NULL;
	if (!k || ((sub || div) && !first))
		return 0;
	for (int64_t i = 0; i < c->cout; i++)
		if (div && k[per ? i : 0] == 0.0f)
			return 0;
	for (int64_t i = 0; i < c->cout; i++) {
		float v = k[per ? i : 0];
		if (mul) {
			c->s[i] *= v;
			c->t[i] *= v;
		} else if (div) {
			c->s[i] /= v;
			c->t[i] /= v;
		} else {
			c->t[i] += sub ? -v : v;
		}
	}
	return 1;
}

/* Clip's bounds: inputs 1 and 2 from opset 11, attributes before. */
static int clip_bounds(const ir_graph *g, const ir_node *n, int opset, float *lo, float *hi)
{
	*lo = -INFINITY;
	*hi = INFINITY;
	if (opset < 11) {
		*lo = hal_attr_float(n, "min", -INFINITY);
		*hi = hal_attr_float(n, "max", INFINITY);
		return 1;
	}
	if (n->n_in > 1 && n->in[1][0] && !scalar_const(g, n->in[1], lo))
		return 0;
	if (n->n_in > 2 && n->in[2][0] && !scalar_const(g, n->in[2], hi))
		return 0;
	return 1;
}

/* A Max(cur, k) or Max(k, cur) with k one float that does not raise the
 * rank (so the output keeps cur's shape): folded into a LeakyRelu's lower
 * bound e->b (openWakeWord follows each LeakyRelu with one). 1 if it did. */
static int fold_max(struct chain *c, const ir_node *n, const char *cur, ir_epilogue *e)
{
	int first;
	float k;
	ir_tensor tmp;
	const char *o = other_input(n, cur, &first);
	if (!is_op(n, "Max") || !o || !scalar_const(c->g, o, &k))
		return 0;
	const ir_tensor *t = ir_graph_const(c->g, o, &tmp);
	if (!t || t->rank > c->rank)
		return 0;
	e->b = k > e->b ? k : e->b;
	return 1;
}

/* Recognises an activation reading cur; fills e and drop, sets *out to the
 * name of its result. 0 when there is none. */
static int match_act(struct chain *c, const char *cur, int opset, ir_epilogue *e, const char **out)
{
	const ir_graph *g = c->g;
	int idx[3];
	int n = ir_consumers(g, cur, idx, 3);
	if (n == 1) {
		const ir_node *a = &g->node[idx[0]];
		if (a->n_in < 1 || strcmp(a->in[0], cur) != 0 || a->n_out != 1)
			return 0;
		for (int k = 1; k < a->n_in; k++)
			if (strcmp(a->in[k], cur) == 0)
				return 0;
		if (is_op(a, "Relu") && a->n_in == 1) {
			e->act = IR_ACT_RELU;
		} else if (is_op(a, "Clip")) {
			e->act = IR_ACT_CLIP;
			if (!clip_bounds(g, a, opset, &e->a, &e->b))
				return 0;
		} else if (is_op(a, "Sigmoid") && a->n_in == 1) {
			e->act = IR_ACT_SIGMOID;
		} else if (is_op(a, "HardSigmoid") && a->n_in == 1) {
			e->act = IR_ACT_HARDSIGMOID;
			e->a = hal_attr_float(a, "alpha", 0.2f);
			e->b = hal_attr_float(a, "beta", 0.5f);
		} else if (is_op(a, "HardSwish") && a->n_in == 1) {
			e->act = IR_ACT_HARDSWISH;
			e->a = 1.0f / 6.0f;
			e->b = 0.5f;
		} else if (is_op(a, "LeakyRelu") && a->n_in == 1) {
			e->act = IR_ACT_LEAKYRELU;
			e->a = hal_attr_float(a, "alpha", 0.01f);
			e->b = -INFINITY;
		} else {
			return 0;
		}
		c->drop[idx[0]] = 1;
		*out = a->out[0];
		const ir_node *m;
		int mi;
		while (e->act == IR_ACT_LEAKYRELU && (m = sole(g, *out, &mi)) &&
		       fold_max(c, m, *out, e)) {
			c->drop[mi] = 1;
			*out = m->out[0];
		}
		return 1;
	}
	if (n != 2)
		return 0;
	/* x * HardSigmoid(x), or x * Clip(x + 3, 0, 6) / 6 (either order of
	 * the Mul's inputs; / 6 also as * (1/6)). */
	for (int w = 0; w < 2; w++) {
		const ir_node *h = &g->node[idx[w]], *m = &g->node[idx[1 - w]];
		int first, hi_idx, ci, mi, di;
		float k, lo, hi;
		if (!is_op(m, "Mul") || !other_input(m, cur, &first))
			continue;
		if (is_op(h, "HardSigmoid") && h->n_in == 1 && h->n_out == 1) {
			if (!sole(g, h->out[0], &hi_idx) || hi_idx != idx[1 - w] ||
			    strcmp(other_input(m, cur, &first), h->out[0]) != 0)
				continue;
			e->act = IR_ACT_HARDSWISH;
			e->a = hal_attr_float(h, "alpha", 0.2f);
			e->b = hal_attr_float(h, "beta", 0.5f);
			c->drop[idx[0]] = c->drop[idx[1]] = 1;
			*out = m->out[0];
			return 1;
		}
		const char *three = other_input(h, cur, &first);
		if (!is_op(h, "Add") || !three || !scalar_const(g, three, &k) || k != 3.0f)
			continue;
		const ir_node *cl = sole(g, h->out[0], &ci);
		if (!cl || !is_op(cl, "Clip") || cl->n_out != 1 || strcmp(cl->in[0], h->out[0]) != 0 ||
		    !clip_bounds(g, cl, opset, &lo, &hi) || lo != 0.0f || hi != 6.0f)
			continue;
		if (!sole(g, cl->out[0], &mi) || mi != idx[1 - w] ||
		    strcmp(other_input(m, cur, &first), cl->out[0]) != 0)
			continue;
		const ir_node *d = sole(g, m->out[0], &di);
		const char *six = d ? other_input(d, m->out[0], &first) : NULL;
		if (!six || !first || !scalar_const(g, six, &k) ||
		    !((is_op(d, "Div") && k == 6.0f) ||
		      (is_op(d, "Mul") && fabsf(k - 1.0f / 6.0f) < 1e-7f)))
			continue;
		e->act = IR_ACT_HARDSWISH;
		e->a = 1.0f / 6.0f;
		e->b = 0.5f;
		c->drop[idx[0]] = c->drop[idx[1]] = c->drop[ci] = c->drop[di] = 1;
		*out = d->out[0];
		return 1;
	}
	return 0;
}

/* A scalar Mul/Add/Sub/Div after the activation: folded into post_s/b. */
static int fold_post(struct chain *c, const ir_node *n, const char *cur, ir_epilogue *e)
{
	int first;
	float k;
	const char *o = other_input(n, cur, &first);
	if (!o || !scalar_const(c->g, o, &k))
		return 0;
	if (is_op(n, "Mul")) {
		e->post_s *= k;
		e->post_b *= k;
	} else if (is_op(n, "Add")) {
		e->post_b += k;
	} else if (is_op(n, "Sub") && first) {
		e->post_b -= k;
	} else if (is_op(n, "Div") && first && k != 0.0f) {
		e->post_s /= k;
		e->post_b /= k;
	} else {
		return 0;
	}
	return 1;
}

/* A new float initializer [n] (rank 1) or shaped like like, named
 * "<base>/<suffix>", appended to g's initializers (room reserved). */
static float *new_init(aidos_model *m, ir_graph *g, const char *base, const char *suffix,
		       const ir_tensor *like, int64_t n, const char **name)
{
	size_t len = strlen(base) + strlen(suffix) + 16;
	char *nm = ir_mem_alloc(&m->mem, len);
	float *data = ir_mem_alloc(&m->mem, (size_t)n * sizeof(float));
	if (!nm || !data)
		return NULL;
	snprintf(nm, len, "%s/aidos.fuse.%s", base, suffix);
	ir_tensor *t = &g->init[g->n_init++];
	memset(t, 0, sizeof *t);
	t->name = nm;
	t->dtype = ONNX_FLOAT;
	if (like) {
		t->rank = like->rank;
		memcpy(t->dims, like->dims, sizeof t->dims);
	} else {
		t->rank = 1;
		t->dims[0] = n;
	}
	t->data = data;
	t->nbytes = (size_t)n * sizeof(float);
	*name = nm;
	return data;
}

/* Fuses what follows conv node i; 0, or AIDOS_E_NOMEM. */
static int fuse_one(aidos_model *m, ir_graph *g, int i, struct chain *c, int opset)
{
	ir_node *conv = &g->node[i];
	ir_tensor tw, tb;
	if (conv->n_out != 1 || conv->n_in < 2 || !conv->out[0][0])
		return 0;
	const ir_tensor *w = ir_graph_const(g, conv->in[1], &tw);
	if (!w || w->dtype != ONNX_FLOAT || w->rank < 3 || !w->data || w->dims[0] <= 0)
		return 0;
	int64_t cout = w->dims[0], wn = 1;
	for (int k = 0; k < w->rank; k++) {
		/* the file is not validated yet: no overflow on hostile dims */
		if (w->dims[k] <= 0 || wn > (int64_t)(w->nbytes / sizeof(float)) / w->dims[k])
			return 0;
		wn *= w->dims[k];
	}
	const ir_tensor *b = NULL;
	if (conv->n_in > 2 && conv->in[2][0]) {
		b = ir_graph_const(g, conv->in[2], &tb);
		if (!b || b->dtype != ONNX_FLOAT || b->rank != 1 || b->dims[0] != cout || !b->data ||
		    b->nbytes < (size_t)cout * sizeof(float))
			return 0;
	}
	c->cout = cout;
	c->rank = w->rank;
	c->s = ir_mem_alloc(&m->mem, (size_t)cout * sizeof(float));
	c->t = ir_mem_alloc(&m->mem, (size_t)cout * sizeof(float));
	if (!c->s || !c->t)
		return AIDOS_E_NOMEM;
	for (int64_t o = 0; o < cout; o++)
		c->s[o] = 1.0f;
	memset(c->drop, 0, (size_t)g->n_node);
	const char *cur = conv->out[0];
	int folded = 0, idx;
	const ir_node *n;
	while ((n = sole(g, cur, &idx)) && fold_affine(c, n, cur, opset)) {
		c->drop[idx] = 1;
		cur = n->out[0];
		folded = 1;
	}
	ir_epilogue e = { .act = IR_ACT_NONE, .post_s = 1.0f, .post_b = 0.0f };
	int act = match_act(c, cur, opset, &e, &cur);
	if (act)
		while ((n = sole(g, cur, &idx)) && fold_post(c, n, cur, &e)) {
			c->drop[idx] = 1;
			cur = n->out[0];
		}
	if (!folded && !act)
		return 0;
	if (folded) {
		const char *wname, *bname;
		float *w2 = new_init(m, g, conv->out[0], "W", w, wn, &wname);
		float *b2 = w2 ? new_init(m, g, conv->out[0], "B", NULL, cout, &bname) : NULL;
		const char **in = ir_mem_alloc(&m->mem, (size_t)(conv->n_in < 3 ? 3 : conv->n_in) *
							sizeof *in);
		if (!w2 || !b2 || !in)
			return AIDOS_E_NOMEM;
		const float *w0 = w->data, *b0 = b ? b->data : NULL;
		int64_t per = wn / cout;
		for (int64_t o = 0; o < cout; o++) {
			for (int64_t k = 0; k < per; k++)
				w2[o * per + k] = w0[o * per + k] * c->s[o];
			b2[o] = (b0 ? b0[o] : 0.0f) * c->s[o] + c->t[o];
		}
		for (int k = 0; k < conv->n_in; k++)
			in[k] = conv->in[k];
		in[1] = wname;
		in[2] = bname;
		conv->in = in;
		if (conv->n_in < 3)
			conv->n_in = 3;
	}
	if (act) {
		ir_epilogue *ep = ir_mem_alloc(&m->mem, sizeof *ep);
		if (!ep)
			return AIDOS_E_NOMEM;
		*ep = e;
		conv->epi = ep;
	}
	conv->out[0] = cur;
	ir_graph_remove_nodes(g, c->drop);
	return 0;
}

int hal_fuse_conv(aidos_model *m)
{
	ir_graph *g = m->graph;
	if (hal_use_reference || !g || g->n_node == 0)
		return 0;
	int nconv = 0;
	for (int i = 0; i < g->n_node; i++)
		nconv += is_op(&g->node[i], "Conv");
	if (!nconv)
		return 0;
	/* Room for two new initializers per Conv: IR pointers to the old
	 * array's entries are not kept past loading. */
	ir_tensor *init = ir_mem_alloc(&m->mem, (size_t)(g->n_init + 2 * nconv) * sizeof *init);
	uint8_t *drop = ir_mem_alloc(&m->mem, (size_t)g->n_node);
	if (!init || !drop)
		return AIDOS_E_NOMEM;
	if (g->n_init)
		memcpy(init, g->init, (size_t)g->n_init * sizeof *init);
	g->init = init;
	struct chain c = { .g = g, .drop = drop };
	for (int i = 0; i < g->n_node; i++) {
		if (!is_op(&g->node[i], "Conv") || g->node[i].epi)
			continue;
		/* Nodes removed are after i (they read its output), so i
		 * still names the next node to look at. */
		int rc = fuse_one(m, g, i, &c, m->opset_default);
		if (rc)
			return rc;
	}
	return 0;
}

/* ---- plan time: expand 1x1 -> depthwise 3x3 as one step ---- */

/* Whether node n's INTS attribute name is absent or has n_want values,
 * each want. */
static int ints_all(const ir_node *n, const char *name, int n_want, int64_t want)
{
	const int64_t *v;
	int k = hal_attr_ints(n, name, &v);
	if (k == 0)
		return !hal_attr_has(n, name);
	if (k != n_want)
		return 0;
	for (int i = 0; i < k; i++)
		if (v[i] != want)
			return 0;
	return 1;
}

static int plan_conv(const hal_step *s)
{
	return s->op && !strcmp(s->op->name, "Conv") && s->node && s->n_in >= 2 && s->n_out == 1 &&
	       s->in[0] && s->in[1] && s->out[0];
}

/* Steps i (1x1 expand, or a 3x3 stride-2 pad-1 stem) and i+1 (its only
 * reader, a 3x3 depthwise) as one
 * hal/ops/conv_fused.c step when the pair fits it; 1 if it replaced them. */
static int match_expand_dw(hal_plan *p, int i, int *rc)
{
	hal_step *e = &p->step[i], *d = &p->step[i + 1];
	if (!plan_conv(e) || !plan_conv(d) || d->in[0] != e->out[0])
		return 0;
	hal_value *mid = hal_plan_value(p, e->out[0]);
	if (!mid || mid->kind != HAL_VAL_ACT || mid->last != i + 1 || mid->alias >= 0)
		return 0;
	for (int k = 1; k < d->n_in; k++)
		if (d->in[k] == e->out[0])
			return 0;
	const ir_node *en = e->node, *dn = d->node;
	const char *ap_e = hal_attr_str(en, "auto_pad", "NOTSET");
	const char *ap_d = hal_attr_str(dn, "auto_pad", "NOTSET");
	if ((strcmp(ap_e, "NOTSET") && strcmp(ap_e, "VALID")) || strcmp(ap_d, "NOTSET"))
		return 0;
	/* the expand: 1x1, or a 3x3 stem with stride 2 and pad 1 */
	const hal_tensor *ew = e->in[1];
	int stem = ew->rank == 4 && ew->dims[2] == 3 && ew->dims[3] == 3;
	if (hal_attr_int(en, "group", 1) != 1 || !ints_all(en, "dilations", 2, 1) ||
	    !ints_all(en, "strides", 2, stem ? 2 : 1) ||
	    (stem ? strcmp(ap_e, "NOTSET") || !hal_attr_has(en, "pads") ||
		    !hal_attr_has(en, "strides") || !ints_all(en, "pads", 4, 1)
		  : !ints_all(en, "pads", 4, 0)))
		return 0;
	const hal_tensor *ex = e->in[0], *ey = e->out[0];
	if (stem && (ex->rank != 4 || ey->rank != 4 || ey->dims[2] != (ex->dims[2] - 1) / 2 + 1 ||
		     ey->dims[3] != (ex->dims[3] - 1) / 2 + 1))
		return 0;
	const int64_t *st;
	int64_t ce = e->in[1]->rank == 4 ? e->in[1]->dims[0] : -1;
	if (hal_attr_int(dn, "group", 1) != ce || hal_attr_ints(dn, "strides", &st) != 2 ||
	    st[0] != st[1] || !ints_all(dn, "dilations", 2, 1) || !hal_attr_has(dn, "pads") ||
	    !ints_all(dn, "pads", 4, 1))
		return 0;
	hal_conv_fused_desc fd = {
		.x = e->in[0], .we = e->in[1], .be = e->n_in > 2 ? e->in[2] : NULL, .epe = en->epi,
		.wd = d->in[1], .bd = d->n_in > 2 ? d->in[2] : NULL, .epd = dn->epi,
		.y = d->out[0], .stride = st[0], .stem = stem,
	};
	if (e->n_in > 3 || d->n_in > 3 || !hal_conv_fused_fits(&fd))
		return 0;
	hal_step n = { .plan = p, .opset = d->opset };
	ir_node *nd = hal_step_alloc(&n, sizeof *nd);
	if (!nd) {
		*rc = AIDOS_E_NOMEM;
		return 0;
	}
	*nd = *dn;
	nd->op_type = "FusedConvDw";
	n.node = nd;
	if ((*rc = hal_conv_fused_make(&n, &fd, p->tp ? hal_threadpool_size(p->tp) : 1)))
		return 0;
	mid->kind = HAL_VAL_FUSED;
	mid->t.data = NULL;
	p->step[i] = n;
	p->step[i + 1].op = NULL;
	return 1;
}

int hal_fuse_conv_plan(hal_plan *p)
{
	int rc = 0;
	if (hal_use_reference)
		return 0;
	for (int i = 0; i + 1 < p->n_step && !rc; i++)
		if (p->step[i].op && match_expand_dw(p, i, &rc))
			i++;
	return rc;
}
