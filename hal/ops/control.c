/*
 * hal/ops/control.c - control flow: If, Scan and Loop.
 *
 * Each branch is planned as a child plan (hal/plan.h) when the If is
 * planned. A condition known at plan time (the usual case once shape
 * arithmetic is folded) plans only the chosen branch, and when that branch
 * folds completely the If disappears from the plan. A data-dependent
 * condition plans both branches; they must then agree on output shapes. A
 * branch that cannot be planned for these shapes (Silero VAD's 8 kHz branch
 * fed 16 kHz chunks, say) is not an error until a request selects it.
 */
#include <stdio.h>
#include <string.h>
#include "hal/plan.h"
#include "hal/ops/ops_util.h"

typedef struct if_params {
	char err[2][384];   /* why branch 0 (then) / 1 (else) could not be planned */
} if_params;

static const char *const branch_name[2] = { "then_branch", "else_branch" };

static int plan_branch(hal_step *s, int b, if_params *pp)
{
	const ir_graph *g = hal_attr_graph(s->node, branch_name[b]);
	if (!g)
		return hal_err(s, AIDOS_E_INVALID, "missing %s", branch_name[b]);
	if (g->n_output != s->n_out)
		return hal_err(s, AIDOS_E_INVALID, "%s has %d outputs, the node %d", branch_name[b], g->n_output,
			       s->n_out);
	hal_plan *p = s->plan, *c = NULL;
	int idx = (int)(s - p->step);
	int rc = hal_plan_build(p->model, g, p, idx, p->opset, p->tp, p->mem_limit, 0, NULL, &c, pp->err[b],
				sizeof pp->err[b]);
	if (rc) {
		if (rc == AIDOS_E_NOMEM)
			return hal_err(s, rc, "%s: %s", branch_name[b], pp->err[b]);
		return rc;
	}
	s->sub[b] = c;
	return 0;
}

static int if_infer(hal_step *s)
{
	if (s->n_in != 1 || !s->in[0])
		return hal_err(s, AIDOS_E_INVALID, "If takes one condition input");
	if (hal_numel(s->in[0]) != 1)
		return hal_err(s, AIDOS_E_SHAPE, "condition has %lld elements, not 1", (long long)hal_numel(s->in[0]));
	if_params *pp = hal_step_alloc(s, sizeof *pp);
	if (!pp)
		return AIDOS_E_NOMEM;
	s->params = pp;
	if (s->in[0]->is_const) {
		int b = hal_get_i64(s->in[0], 0) ? 0 : 1;
		int rc = plan_branch(s, b, pp);
		if (rc)
			return rc == AIDOS_E_NOMEM ? rc : hal_err(s, rc, "%s: %s", branch_name[b], pp->err[b]);
		hal_plan *c = s->sub[b];
		int all_const = c->n_step == 0;
		for (int k = 0; k < s->n_out; k++) {
			hal_tensor_like(s->out[k], c->out[k]);
			all_const &= c->out[k]->is_const;
		}
		if (all_const)
			for (int k = 0; k < s->n_out; k++) {
				s->out[k]->data = c->out[k]->data;
				s->out[k]->is_const = 1;
			}
		return 0;
	}
	int rc0 = plan_branch(s, 0, pp), rc1 = plan_branch(s, 1, pp);
	if (rc0 == AIDOS_E_NOMEM || rc1 == AIDOS_E_NOMEM)
		return AIDOS_E_NOMEM;
	if (rc0 && rc1)
		return hal_err(s, rc0, "neither branch can be planned: then_branch: %s; else_branch: %s", pp->err[0],
			       pp->err[1]);
	hal_plan *a = s->sub[0], *b = s->sub[1];
	for (int k = 0; k < s->n_out; k++) {
		const hal_tensor *ta = a ? a->out[k] : b->out[k];
		if (a && b) {
			const hal_tensor *tb = b->out[k];
			if (ta->dtype != tb->dtype || ta->rank != tb->rank ||
			    memcmp(ta->dims, tb->dims, sizeof(int64_t) * (size_t)ta->rank))
				return hal_err(s, AIDOS_E_UNSUPPORTED,
					       "output %d: the branches give different types or shapes and the condition is only known at run time",
					       k);
		}
		hal_tensor_like(s->out[k], ta);
	}
	return 0;
}

static int if_exec(hal_step *s)
{
	int b = hal_get_i64(s->in[0], 0) ? 0 : 1;
	hal_plan *c = s->sub[b];
	if_params *pp = s->params;
	if (!c)
		return hal_err(s, AIDOS_E_SHAPE, "the condition selects %s, which cannot run for these shapes: %s",
			       branch_name[b], pp->err[b]);
	c->err[0] = 0;
	int rc = hal_plan_run(c);
	if (rc)
		return hal_err(s, rc, "%s: %s", branch_name[b], c->err);
	for (int k = 0; k < s->n_out; k++)
		if (s->out[k]->data != c->out[k]->data)
			memcpy(s->out[k]->data, c->out[k]->data, hal_nbytes(s->out[k]));
	return 0;
}

/* ---- Scan (opsets 8 and 9+) ----
 * The body is planned once as a child plan whose inputs are N state
 * values and M scan slices, and run once per step: step t binds the
 * current states and slice t of every scan input, then copies the body's
 * new states into the other of two state buffers (the body may return an
 * input unchanged, so states are never written in place) and its scan
 * outputs into slice t of the node's scan outputs. Opset 8 adds a batch
 * dim in front of everything and an optional sequence_lens input; aidos
 * takes the full length for every batch entry and refuses sequence_lens.
 * Supported: scan axes 0 (after the batch dim), forward or reverse inputs
 * and outputs (scan_input_directions / scan_output_directions); other
 * scan_input_axes / scan_output_axes are refused. */

#define SCAN_MAX 32

typedef struct scan_params {
	int n_state, n_scan, n_sout;   /* N, M, K */
	int first;                     /* index of the first state input (1 at opset 8) */
	int64_t batch, steps;
	uint8_t in_rev[SCAN_MAX], out_rev[SCAN_MAX];
	size_t state_bytes[SCAN_MAX];  /* one state of one batch entry */
	size_t slice_in[SCAN_MAX];     /* one step of scan input j */
	size_t slice_out[SCAN_MAX];    /* one step of scan output k */
	size_t state_off[2][SCAN_MAX]; /* in scratch: two buffers per state */
	int child_in[2 * SCAN_MAX];    /* body input i -> child plan input index */
} scan_params;

static int scan_dirs(hal_step *s, const char *name, int n, uint8_t *rev)
{
	const int64_t *v;
	int c = hal_attr_ints(s->node, name, &v);
	if (c && c != n)
		return hal_err(s, AIDOS_E_INVALID, "%s has %d values for %d tensors", name, c, n);
	for (int i = 0; i < c; i++) {
		if (v[i] != 0 && v[i] != 1)
			return hal_err(s, AIDOS_E_INVALID, "%s[%d] = %lld (0 or 1)", name, i, (long long)v[i]);
		rev[i] = (uint8_t)v[i];
	}
	return 0;
}

static int scan_infer(hal_step *s)
{
	const ir_graph *g = hal_attr_graph(s->node, "body");
	if (!g)
		return hal_err(s, AIDOS_E_INVALID, "attribute body is missing");
	scan_params *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	const int v8 = s->opset < 9;
	int64_t m = hal_attr_int(s->node, "num_scan_inputs", 0);
	p->first = v8;
	if (v8 && s->n_in > 0 && s->in[0])
		return hal_err(s, AIDOS_E_UNSUPPORTED, "sequence_lens (every batch entry runs the full length)");
	int n_in = s->n_in - p->first;
	if (m < 1 || m > n_in || m > SCAN_MAX || n_in - m > SCAN_MAX)
		return hal_err(s, AIDOS_E_INVALID, "attribute num_scan_inputs %lld for %d inputs", (long long)m, n_in);
	p->n_scan = (int)m;
	p->n_state = n_in - p->n_scan;
	p->n_sout = s->n_out - p->n_state;
	if (p->n_sout < 0 || p->n_sout > SCAN_MAX || g->n_input != n_in || g->n_output != s->n_out)
		return hal_err(s, AIDOS_E_INVALID, "body has %d inputs and %d outputs for %d and %d", g->n_input,
			       g->n_output, n_in, s->n_out);
	const int64_t *ax;
	int nax = hal_attr_ints(s->node, "scan_input_axes", &ax);
	for (int i = 0; i < nax; i++)
		if (ax[i] != 0)
			return hal_err(s, AIDOS_E_UNSUPPORTED, "scan_input_axes other than 0");
	nax = hal_attr_ints(s->node, "scan_output_axes", &ax);
	for (int i = 0; i < nax; i++)
		if (ax[i] != 0)
			return hal_err(s, AIDOS_E_UNSUPPORTED, "scan_output_axes other than 0");
	int rc;
	if ((rc = scan_dirs(s, v8 ? "directions" : "scan_input_directions", p->n_scan, p->in_rev)) ||
	    (rc = scan_dirs(s, "scan_output_directions", p->n_sout, p->out_rev)))
		return rc;
	/* body input shapes: states as given (less the batch dim), slices less the scan dim */
	hal_input_shape in[2 * SCAN_MAX];
	int64_t dims[2 * SCAN_MAX][HAL_MAX_RANK];
	const int lead = v8 ? 1 : 0;
	p->batch = 1;
	p->steps = -1;
	for (int i = 0; i < n_in; i++) {
		const hal_tensor *t = s->in[p->first + i];
		const int scan = i >= p->n_state;
		if (!t || hal_dtype_size(t->dtype) == 0)
			return hal_err(s, AIDOS_E_INVALID, "input %d is missing or has no fixed-size dtype", p->first + i);
		int drop = lead + scan;
		if (t->rank < drop)
			return hal_err(s, AIDOS_E_SHAPE, "input %d has rank %d", p->first + i, t->rank);
		if (v8) {
			if (i == 0)
				p->batch = t->dims[0];
			else if (t->dims[0] != p->batch)
				return hal_err(s, AIDOS_E_SHAPE, "batch dims differ");
		}
		if (scan) {
			if (p->steps < 0)
				p->steps = t->dims[lead];
			else if (t->dims[lead] != p->steps)
				return hal_err(s, AIDOS_E_SHAPE, "scan inputs have %lld and %lld steps",
					       (long long)p->steps, (long long)t->dims[lead]);
		}
		memcpy(dims[i], t->dims + drop, (size_t)(t->rank - drop) * sizeof(int64_t));
		in[i].name = g->input[i].name;
		in[i].dtype = t->dtype;
		in[i].rank = t->rank - drop;
		in[i].dims = dims[i];
		size_t b = hal_dtype_size(t->dtype) * (size_t)ou_span(dims[i], 0, t->rank - drop);
		if (scan)
			p->slice_in[i - p->n_state] = b;
		else
			p->state_bytes[i] = b;
	}
	hal_plan *parent = s->plan, *c = NULL;
	char err[384];
	rc = hal_plan_build(parent->model, g, parent, (int)(s - parent->step), parent->opset, parent->tp,
			    parent->mem_limit, n_in, in, &c, err, sizeof err);
	if (rc)
		return hal_err(s, rc, "body: %s", err);
	s->sub[0] = c;
	for (int i = 0; i < n_in; i++) {
		p->child_in[i] = -1;
		for (int k = 0; k < c->n_in; k++)
			if (!strcmp(c->in[k]->name, in[i].name))
				p->child_in[i] = k;
	}
	size_t off = 0;
	for (int i = 0; i < p->n_state; i++) {
		const hal_tensor *o = c->out[i];
		if (o->dtype != in[i].dtype || o->rank != in[i].rank ||
		    memcmp(o->dims, in[i].dims, (size_t)o->rank * sizeof(int64_t)))
			return hal_err(s, AIDOS_E_UNSUPPORTED, "body state %d changes type or shape", i);
		for (int b = 0; b < 2; b++) {
			p->state_off[b][i] = off;
			off += (p->state_bytes[i] + 63) & ~(size_t)63;
		}
		int64_t od[HAL_MAX_RANK];
		od[0] = p->batch;
		memcpy(od + lead, in[i].dims, (size_t)in[i].rank * sizeof(int64_t));
		if ((rc = ou_set(s, s->out[i], o->dtype, in[i].rank + lead, od)))
			return rc;
	}
	s->scratch_bytes = off;
	for (int k = 0; k < p->n_sout; k++) {
		const hal_tensor *o = c->out[p->n_state + k];
		if (o->rank + 1 + lead > HAL_MAX_RANK)
			return hal_err(s, AIDOS_E_UNSUPPORTED, "scan output %d has rank %d", k, o->rank);
		int64_t od[HAL_MAX_RANK];
		od[0] = p->batch;
		od[lead] = p->steps;
		memcpy(od + lead + 1, o->dims, (size_t)o->rank * sizeof(int64_t));
		p->slice_out[k] = hal_nbytes(o);
		if ((rc = ou_set(s, s->out[p->n_state + k], o->dtype, o->rank + 1 + lead, od)))
			return rc;
	}
	s->params = p;
	return 0;
}

static int scan_exec(hal_step *s)
{
	const scan_params *p = s->params;
	hal_plan *c = s->sub[0];
	char *st = s->scratch;
	for (int64_t b = 0; b < p->batch; b++) {
		int cur = 0;
		for (int i = 0; i < p->n_state; i++)
			if (p->state_bytes[i])
				memcpy(st + p->state_off[0][i], (const char *)s->in[p->first + i]->data + b * p->state_bytes[i],
				       p->state_bytes[i]);
		for (int64_t t = 0; t < p->steps; t++) {
			for (int i = 0; i < p->n_state; i++)
				if (p->child_in[i] >= 0)
					c->in[p->child_in[i]]->t.data = st + p->state_off[cur][i];
			for (int j = 0; j < p->n_scan; j++) {
				int i = p->n_state + j;
				int64_t tt = p->in_rev[j] ? p->steps - 1 - t : t;
				if (p->child_in[i] >= 0)
					c->in[p->child_in[i]]->t.data =
						(char *)s->in[p->first + i]->data + (b * p->steps + tt) * p->slice_in[j];
			}
			c->err[0] = 0;
			int rc = hal_plan_run(c);
			if (rc)
				return hal_err(s, rc, "body, step %lld: %s", (long long)t, c->err);
			for (int i = 0; i < p->n_state; i++)
				if (p->state_bytes[i])
					memcpy(st + p->state_off[!cur][i], c->out[i]->data, p->state_bytes[i]);
			for (int k = 0; k < p->n_sout; k++) {
				int64_t tt = p->out_rev[k] ? p->steps - 1 - t : t;
				if (p->slice_out[k])
					memcpy((char *)s->out[p->n_state + k]->data + (b * p->steps + tt) * p->slice_out[k],
					       c->out[p->n_state + k]->data, p->slice_out[k]);
			}
			cur = !cur;
		}
		for (int i = 0; i < p->n_state; i++)
			if (p->state_bytes[i])
				memcpy((char *)s->out[i]->data + b * p->state_bytes[i], st + p->state_off[cur][i],
				       p->state_bytes[i]);
	}
	return 0;
}

/* ---- Loop (opsets 1-16, dense tensors only) ----
 * Inputs M (trip count), cond, and N loop-carried values; the body takes
 * (iteration_num, cond_in, N carried) and gives (cond_out, N carried, K scan
 * outputs); the node gives the final N carried values and the K scan
 * outputs stacked along a new first axis.
 * The carried values must keep their type and shape across iterations
 * (as Scan's states; two state buffers, never written in place). The body
 * is planned once and re-run per iteration; when it cannot be planned with
 * iteration_num unknown (its shapes depend on the iteration: a Slice by
 * the iteration number, say) and the trip count is known, it is planned
 * once per iteration with iteration_num a constant, for at most LOOP_UNROLL
 * iterations. Scan outputs fix their length at plan time, so they need M
 * and the initial cond as values (hal_need_value) and a body whose
 * cond_out is its cond_in (directly or through Identity): the loop then
 * runs exactly M iterations, or none. Without scan outputs the loop stops
 * at run time on M or on cond_out, whichever comes first. */

#define LOOP_MAX 32
#define LOOP_UNROLL 64

typedef struct loop_params {
	int n_carried, n_sout;          /* N, K */
	int n_plans;                    /* 1, or one per iteration */
	int64_t trips;                  /* with scan outputs: iterations planned */
	hal_plan **plans;               /* [n_plans] */
	int *child_in;                  /* [n_plans][2 + N]: body input -> plan input, -1 folded */
	size_t state_bytes[LOOP_MAX];
	size_t slice_out[LOOP_MAX];
	size_t state_off[2][LOOP_MAX];  /* in scratch: two buffers per carried value */
	size_t it_off, cond_off;        /* in scratch: iteration_num (int64), cond_in (bool) */
} loop_params;

/* Whether the body's cond_out is its cond_in, directly or through Identity. */
static int loop_cond_passes(const ir_graph *g)
{
	const char *want = g->input[1].name, *name = g->output[0].name;
	for (int hops = 0; hops <= g->n_node; hops++) {
		if (!strcmp(name, want))
			return 1;
		const ir_node *n = NULL;
		for (int i = 0; i < g->n_node && !n; i++)
			if (g->node[i].n_out > 0 && !strcmp(g->node[i].out[0], name))
				n = &g->node[i];
		if (!n || strcmp(n->op_type, "Identity") || n->n_in < 1)
			return 0;
		name = n->in[0];
	}
	return 0;
}

/* Plans the body for these carried shapes; iteration_num is a constant
 * when it_val is not NULL. Fills plan k of p. */
static int loop_plan(hal_step *s, const ir_graph *g, loop_params *p, int k, const int64_t *it_val,
		     char *err, size_t errlen)
{
	hal_input_shape in[2 + LOOP_MAX];
	const int n = 2 + p->n_carried;
	in[0] = (hal_input_shape){ g->input[0].name, HAL_DT_I64, 0, NULL, it_val };
	in[1] = (hal_input_shape){ g->input[1].name, HAL_DT_BOOL, 0, NULL, NULL };
	for (int i = 0; i < p->n_carried; i++) {
		const hal_tensor *t = s->in[2 + i];
		in[2 + i] = (hal_input_shape){ g->input[2 + i].name, t->dtype, t->rank, t->dims, NULL };
	}
	hal_plan *parent = s->plan, *c = NULL;
	int rc = hal_plan_build(parent->model, g, parent, (int)(s - parent->step), parent->opset, parent->tp,
				parent->mem_limit, n, in, &c, err, errlen);
	if (rc)
		return rc;
	p->plans[k] = c;
	for (int i = 0; i < n; i++) {
		p->child_in[k * n + i] = -1;
		for (int j = 0; j < c->n_in; j++)
			if (!strcmp(c->in[j]->name, in[i].name))
				p->child_in[k * n + i] = j;
	}
	const hal_tensor *co = c->out[0];
	if (co->dtype != HAL_DT_BOOL || hal_numel(co) != 1) {
		snprintf(err, errlen, "cond_out is %s with %lld elements, not one bool", hal_dtype_name(co->dtype),
			 (long long)hal_numel(co));
		return AIDOS_E_INVALID;
	}
	for (int i = 0; i < p->n_carried; i++) {
		const hal_tensor *o = c->out[1 + i], *t = s->in[2 + i];
		if (o->dtype != t->dtype || o->rank != t->rank ||
		    memcmp(o->dims, t->dims, (size_t)o->rank * sizeof(int64_t))) {
			snprintf(err, errlen, "loop-carried value %d changes type or shape", i);
			return AIDOS_E_UNSUPPORTED;
		}
	}
	for (int j = 0; j < p->n_sout; j++) {
		const hal_tensor *o = c->out[1 + p->n_carried + j], *o0 = p->plans[0]->out[1 + p->n_carried + j];
		if (o->dtype != o0->dtype || o->rank != o0->rank ||
		    memcmp(o->dims, o0->dims, (size_t)o->rank * sizeof(int64_t))) {
			snprintf(err, errlen, "scan output %d changes type or shape across iterations", j);
			return AIDOS_E_UNSUPPORTED;
		}
	}
	return 0;
}

static int loop_infer(hal_step *s)
{
	const ir_graph *g = hal_attr_graph(s->node, "body");
	if (!g)
		return hal_err(s, AIDOS_E_INVALID, "attribute body is missing");
	if (s->n_in < 2)
		return hal_err(s, AIDOS_E_INVALID, "Loop takes M, cond and the loop-carried values");
	loop_params *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	p->n_carried = s->n_in - 2;
	p->n_sout = s->n_out - p->n_carried;
	if (p->n_carried > LOOP_MAX || p->n_sout < 0 || p->n_sout > LOOP_MAX)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "%d loop-carried values and %d scan outputs (at most %d each)",
			       p->n_carried, s->n_out - p->n_carried, LOOP_MAX);
	if (g->n_input != 2 + p->n_carried || g->n_output != 1 + s->n_out)
		return hal_err(s, AIDOS_E_INVALID, "body has %d inputs and %d outputs for %d and %d", g->n_input,
			       g->n_output, 2 + p->n_carried, 1 + s->n_out);
	for (int i = 0; i < p->n_carried; i++)
		if (!s->in[2 + i] || hal_dtype_size(s->in[2 + i]->dtype) == 0)
			return hal_err(s, AIDOS_E_UNSUPPORTED, "loop-carried value %d is missing or not a numeric tensor", i);
	const hal_tensor *m = s->in[0], *cond = s->in[1];
	int rc;
	if (m && hal_numel(m) != 1)
		return hal_err(s, AIDOS_E_SHAPE, "M has %lld elements, not 1", (long long)hal_numel(m));
	if (cond && hal_numel(cond) != 1)
		return hal_err(s, AIDOS_E_SHAPE, "cond has %lld elements, not 1", (long long)hal_numel(cond));
	int64_t trips = -1;   /* plan-time trip count, -1 unknown */
	if (p->n_sout > 0) {
		if (!m)
			return hal_err(s, AIDOS_E_UNSUPPORTED, "scan outputs of a loop without a trip count M");
		if (!loop_cond_passes(g))
			return hal_err(s, AIDOS_E_UNSUPPORTED,
				       "scan outputs of a loop whose body can end it early (their length is only known at run time)");
		if ((rc = hal_need_value(s, m, "M")) || (cond && (rc = hal_need_value(s, cond, "cond"))))
			return rc;
	}
	if (m && m->data) {
		trips = hal_get_i64(m, 0);
		if (trips < 0)
			trips = 0;
		if (cond && cond->data && !hal_get_i64(cond, 0))
			trips = 0;
	}
	p->trips = trips;
	p->plans = hal_step_alloc(s, LOOP_UNROLL * sizeof *p->plans);
	p->child_in = hal_step_alloc(s, LOOP_UNROLL * (size_t)(2 + p->n_carried) * sizeof *p->child_in);
	if (!p->plans || !p->child_in)
		return AIDOS_E_NOMEM;
	char err[384];
	p->n_plans = 1;
	rc = loop_plan(s, g, p, 0, NULL, err, sizeof err);
	if (rc == AIDOS_E_UNSUPPORTED && trips >= 1 && trips <= LOOP_UNROLL) {
		/* one plan per iteration, iteration_num folded in */
		char err1[256];
		for (int64_t t = 0; t < trips && rc != AIDOS_E_NOMEM; t++) {
			rc = loop_plan(s, g, p, (int)t, &t, err1, sizeof err1);
			if (rc) {
				snprintf(err, sizeof err, "iteration %lld: %s", (long long)t, err1);
				break;
			}
		}
		p->n_plans = (int)trips;
	} else if (rc == AIDOS_E_UNSUPPORTED && trips > LOOP_UNROLL) {
		return hal_err(s, rc, "body: %s (planned per iteration only up to %d iterations, M is %lld)", err,
			       LOOP_UNROLL, (long long)trips);
	}
	if (rc)
		return rc == AIDOS_E_NOMEM ? rc : hal_err(s, rc, "body: %s", err);
	size_t off = 0;
	for (int i = 0; i < p->n_carried; i++) {
		const hal_tensor *t = s->in[2 + i];
		p->state_bytes[i] = hal_nbytes(t);
		for (int b = 0; b < 2; b++) {
			p->state_off[b][i] = off;
			off += (p->state_bytes[i] + 63) & ~(size_t)63;
		}
		if ((rc = ou_set(s, s->out[i], t->dtype, t->rank, t->dims)))
			return rc;
	}
	p->it_off = off;
	p->cond_off = off + 8;
	s->scratch_bytes = off + 64;
	for (int j = 0; j < p->n_sout; j++) {
		const hal_tensor *o = p->plans[0]->out[1 + p->n_carried + j];
		if (o->rank + 1 > HAL_MAX_RANK)
			return hal_err(s, AIDOS_E_UNSUPPORTED, "scan output %d has rank %d", j, o->rank);
		int64_t od[HAL_MAX_RANK];
		od[0] = trips;
		memcpy(od + 1, o->dims, (size_t)o->rank * sizeof(int64_t));
		p->slice_out[j] = hal_nbytes(o);
		if ((rc = ou_set(s, s->out[p->n_carried + j], o->dtype, o->rank + 1, od)))
			return rc;
	}
	s->params = p;
	return 0;
}

static int loop_exec(hal_step *s)
{
	const loop_params *p = s->params;
	char *st = s->scratch;
	const int n = 2 + p->n_carried;
	int64_t max = p->trips >= 0 ? p->trips : s->in[0] ? hal_get_i64(s->in[0], 0) : INT64_MAX;
	int cond = s->in[1] ? hal_get_i64(s->in[1], 0) != 0 : 1;
	if (p->n_plans > 1 && max > p->n_plans)
		max = p->n_plans;
	for (int i = 0; i < p->n_carried; i++)
		if (p->state_bytes[i])
			memcpy(st + p->state_off[0][i], s->in[2 + i]->data, p->state_bytes[i]);
	int cur = 0;
	int64_t t = 0;
	for (; t < max && cond; t++) {
		int k = p->n_plans > 1 ? (int)t : 0;
		hal_plan *c = p->plans[k];
		const int *ci = p->child_in + (size_t)k * n;
		memcpy(st + p->it_off, &t, 8);
		st[p->cond_off] = 1;
		if (ci[0] >= 0)
			c->in[ci[0]]->t.data = st + p->it_off;
		if (ci[1] >= 0)
			c->in[ci[1]]->t.data = st + p->cond_off;
		for (int i = 0; i < p->n_carried; i++)
			if (ci[2 + i] >= 0)
				c->in[ci[2 + i]]->t.data = st + p->state_off[cur][i];
		c->err[0] = 0;
		int rc = hal_plan_run(c);
		if (rc)
			return hal_err(s, rc, "body, iteration %lld: %s", (long long)t, c->err);
		cond = *(const uint8_t *)c->out[0]->data != 0;
		for (int i = 0; i < p->n_carried; i++)
			if (p->state_bytes[i])
				memcpy(st + p->state_off[!cur][i], c->out[1 + i]->data, p->state_bytes[i]);
		for (int j = 0; j < p->n_sout; j++)
			if (p->slice_out[j])
				memcpy((char *)s->out[p->n_carried + j]->data + t * p->slice_out[j],
				       c->out[1 + p->n_carried + j]->data, p->slice_out[j]);
		cur = !cur;
	}
	if (p->n_sout > 0 && t != p->trips)
		return hal_err(s, AIDOS_E_RUNTIME, "ran %lld of %lld planned iterations", (long long)t,
			       (long long)p->trips);
	for (int i = 0; i < p->n_carried; i++)
		if (p->state_bytes[i])
			memcpy(s->out[i]->data, st + p->state_off[cur][i], p->state_bytes[i]);
	return 0;
}

static const hal_op op_if = { "If", 1, 0, if_infer, if_exec };
static const hal_op op_scan = { "Scan", 8, 0, scan_infer, scan_exec };
static const hal_op op_loop = { "Loop", 1, 0, loop_infer, loop_exec };

const hal_op *const hal_ops_control[] = { &op_if, &op_scan, &op_loop, NULL };
