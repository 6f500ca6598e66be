/*
 * hal/ops/control.c - control flow: If.
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

static const hal_op op_if = { "If", 1, 0, if_infer, if_exec };

const hal_op *const hal_ops_control[] = { &op_if, NULL };
