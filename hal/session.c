/*
 * hal/session.c - the public model and session API over plans.
 *
 * A session owns a thread pool and the plan for the input shapes it last
 * saw. A run with the same shapes binds the caller's input pointers into the
 * plan and executes it: no allocation, no system call (beyond the thread
 * pool's wake-ups when its workers slept). New shapes re-plan.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "hal/plan.h"

const char *aidos_strerror(int code)
{
	switch (code) {
	case 0: return "success";
	case AIDOS_E_INVALID: return "invalid input";
	case AIDOS_E_UNSUPPORTED: return "not supported";
	case AIDOS_E_NOMEM: return "out of memory";
	case AIDOS_E_SHAPE: return "shape mismatch";
	case AIDOS_E_NOTFOUND: return "not found";
	case AIDOS_E_TRUNCATED: return "truncated data";
	case AIDOS_E_RANGE: return "value out of range";
	case AIDOS_E_RUNTIME: return "runtime failure";
	case AIDOS_E_DEADLINE: return "deadline cannot be met";
	case AIDOS_E_BUSY: return "queue full";
	case AIDOS_E_QUOTA: return "memory quota exceeded";
	default:
		return code < 0 && code > -4096 ? strerror(-code) : "unknown error";
	}
}

/* ---- model metadata ---- */

static void value_info(const ir_value *v, aidos_tensor *t)
{
	memset(t, 0, sizeof *t);
	t->name = v->name;
	t->dtype = v->dtype;
	t->rank = v->rank;
	for (int i = 0; i < v->rank && i < AIDOS_MAX_RANK; i++)
		t->dims[i] = v->dims[i];
}

int aidos_model_n_inputs(const aidos_model *m) { return m->n_in; }
int aidos_model_n_outputs(const aidos_model *m) { return m->graph->n_output; }
int64_t aidos_model_ir_version(const aidos_model *m) { return m->ir_version; }
int aidos_model_opset(const aidos_model *m) { return m->opset_default; }

int aidos_model_input(const aidos_model *m, int i, aidos_tensor *info)
{
	if (i < 0 || i >= m->n_in)
		return AIDOS_E_NOTFOUND;
	value_info(m->in[i], info);
	return 0;
}

int aidos_model_output(const aidos_model *m, int i, aidos_tensor *info)
{
	if (i < 0 || i >= m->graph->n_output)
		return AIDOS_E_NOTFOUND;
	value_info(&m->graph->output[i], info);
	return 0;
}

void aidos_model_weight_bytes(const aidos_model *m, size_t *mapped, size_t *copied)
{
	if (mapped)
		*mapped = m->bytes_mapped;
	if (copied)
		*copied = m->bytes_copied;
}

/* ---- sessions ---- */

struct aidos_session {
	aidos_model *m;
	hal_threadpool *tp;
	hal_plan *plan;
	/* Shapes the plan was made for, in model input order. */
	int32_t dtype[64];
	int32_t rank[64];
	int64_t dims[64][AIDOS_MAX_RANK];
	int map[64];          /* model input i -> index in the caller's array */
	double plan_ms;
	size_t mem_limit;     /* 0: the planner's default */
	char err[768];
};

#define MAX_INPUTS 64

__attribute__((format(printf, 3, 4)))
static int serr(aidos_session *s, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s->err, sizeof s->err, fmt, ap);
	va_end(ap);
	return code;
}

int aidos_session_create(aidos_model *m, const aidos_session_opts *opts, aidos_session **out,
			 char *err, size_t errlen)
{
	*out = NULL;
	if (m->n_in > MAX_INPUTS) {
		if (err && errlen)
			snprintf(err, errlen, "model has %d inputs (aidos takes up to %d)", m->n_in, MAX_INPUTS);
		return AIDOS_E_UNSUPPORTED;
	}
	aidos_session *s = pool_calloc(1, sizeof *s);
	if (!s)
		return AIDOS_E_NOMEM;
	s->m = m;
	s->mem_limit = opts ? opts->max_tensor_bytes : 0;
	int threads = opts && opts->threads > 0 ? opts->threads : 1;
	int rc = hal_threadpool_create(threads, &s->tp);
	if (rc) {
		if (err && errlen)
			snprintf(err, errlen, "cannot start %d threads: %s", threads, aidos_strerror(rc));
		pool_free(s);
		return rc;
	}
	*out = s;
	return 0;
}

void aidos_session_destroy(aidos_session *s)
{
	if (!s)
		return;
	hal_plan_free(s->plan);
	hal_threadpool_destroy(s->tp);
	pool_free(s);
}

const char *aidos_session_errmsg(const aidos_session *s)
{
	return s->err;
}

/* Matches the caller's tensors to model inputs by name; checks dtypes and
 * the declared fixed dimensions. */
static int bind_check(aidos_session *s, int n, const aidos_tensor *in, int *map)
{
	aidos_model *m = s->m;
	for (int i = 0; i < m->n_in; i++)
		map[i] = -1;
	for (int k = 0; k < n; k++) {
		if (!in[k].name)
			return serr(s, AIDOS_E_INVALID, "input #%d has no name", k);
		int i;
		for (i = 0; i < m->n_in; i++)
			if (!strcmp(m->in[i]->name, in[k].name))
				break;
		if (i == m->n_in)
			return serr(s, AIDOS_E_NOTFOUND, "input '%s': the model has no input of that name", in[k].name);
		if (map[i] >= 0)
			return serr(s, AIDOS_E_INVALID, "input '%s' given twice", in[k].name);
		map[i] = k;
		const ir_value *v = m->in[i];
		if (v->dtype && in[k].dtype != v->dtype)
			return serr(s, AIDOS_E_INVALID, "input '%s': %s given, the model takes %s", in[k].name,
				    hal_dtype_name(in[k].dtype), hal_dtype_name(v->dtype));
		if (!hal_dtype_size(in[k].dtype))
			return serr(s, AIDOS_E_UNSUPPORTED, "input '%s': type %d", in[k].name, in[k].dtype);
		if (in[k].rank < 0 || in[k].rank > AIDOS_MAX_RANK)
			return serr(s, AIDOS_E_SHAPE, "input '%s': rank %d", in[k].name, in[k].rank);
		if (v->rank >= 0 && in[k].rank != v->rank)
			return serr(s, AIDOS_E_SHAPE, "input '%s': rank %d given, the model takes rank %d", in[k].name,
				    in[k].rank, v->rank);
		for (int d = 0; d < in[k].rank; d++) {
			if (in[k].dims[d] < 0)
				return serr(s, AIDOS_E_SHAPE, "input '%s': dimension %d is negative", in[k].name, d);
			if (v->rank >= 0 && v->dims[d] >= 0 && v->dims[d] != in[k].dims[d])
				return serr(s, AIDOS_E_SHAPE, "input '%s': dimension %d is %lld, the model fixes it at %lld",
					    in[k].name, d, (long long)in[k].dims[d], (long long)v->dims[d]);
		}
		if (!hal_dims_ok(in[k].rank, in[k].dims))
			return serr(s, AIDOS_E_SHAPE, "input '%s' is too large (over 2^40 elements)", in[k].name);
		if (!in[k].data && in[k].dims[0] != 0) {
			hal_tensor t;
			hal_tensor_set_shape(&t, in[k].dtype, in[k].rank, in[k].dims);
			if (hal_numel(&t))
				return serr(s, AIDOS_E_INVALID, "input '%s' has no data", in[k].name);
		}
	}
	for (int i = 0; i < m->n_in; i++)
		if (map[i] < 0)
			return serr(s, AIDOS_E_NOTFOUND, "input '%s' is missing", m->in[i]->name);
	return 0;
}

static int same_shapes(const aidos_session *s, const aidos_tensor *in, const int *map)
{
	if (!s->plan)
		return 0;
	for (int i = 0; i < s->m->n_in; i++) {
		const aidos_tensor *t = &in[map[i]];
		if (t->dtype != s->dtype[i] || t->rank != s->rank[i] ||
		    memcmp(t->dims, s->dims[i], (size_t)t->rank * sizeof(int64_t)))
			return 0;
	}
	return 1;
}

static double ms_since(const struct timespec *t0)
{
	struct timespec t1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

static int plan_for(aidos_session *s, const aidos_tensor *in, const int *map)
{
	aidos_model *m = s->m;
	hal_input_shape shp[MAX_INPUTS];
	for (int i = 0; i < m->n_in; i++) {
		const aidos_tensor *t = &in[map[i]];
		shp[i] = (hal_input_shape){ m->in[i]->name, t->dtype, t->rank, t->dims };
	}
	hal_plan_free(s->plan);
	s->plan = NULL;
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	hal_plan *p;
	int rc = hal_plan_build(m, m->graph, NULL, 0, m->opset_default, s->tp, s->mem_limit, m->n_in, shp, &p, s->err,
				sizeof s->err);
	if (rc) {
		hal_plan_free(p);
		return rc;
	}
	s->plan_ms = ms_since(&t0);
	s->plan = p;
	for (int i = 0; i < m->n_in; i++) {
		const aidos_tensor *t = &in[map[i]];
		s->dtype[i] = t->dtype;
		s->rank[i] = t->rank;
		memset(s->dims[i], 0, sizeof s->dims[i]);
		memcpy(s->dims[i], t->dims, (size_t)t->rank * sizeof(int64_t));
	}
	return 0;
}

int aidos_session_plan(aidos_session *s, int n, const aidos_tensor *inputs)
{
	int map[MAX_INPUTS];
	s->err[0] = 0;
	if (n < 0 || n > MAX_INPUTS)
		return serr(s, AIDOS_E_INVALID, "%d inputs", n);
	int rc = bind_check(s, n, inputs, map);
	if (rc)
		return rc;
	if (same_shapes(s, inputs, map))
		return 0;
	return plan_for(s, inputs, map);
}

int aidos_session_run(aidos_session *s, int n, const aidos_tensor *inputs)
{
	int map[MAX_INPUTS];
	s->err[0] = 0;
	if (n < 0 || n > MAX_INPUTS)
		return serr(s, AIDOS_E_INVALID, "%d inputs", n);
	int rc = bind_check(s, n, inputs, map);
	if (rc)
		return rc;
	if (!same_shapes(s, inputs, map) && (rc = plan_for(s, inputs, map)))
		return rc;
	hal_plan *p = s->plan;
	/* Bind the caller's bytes in place: the plan's input values are read by
	 * pointer, so this is the whole cost of handing inputs over. */
	for (int i = 0; i < p->n_in; i++) {
		const char *name = p->in[i]->name;
		for (int k = 0; k < n; k++)
			if (!strcmp(inputs[k].name, name)) {
				p->in[i]->t.data = inputs[k].data;
				break;
			}
	}
	p->err[0] = 0;
	hal_threadpool_begin(s->tp);
	rc = hal_plan_run(p);
	hal_threadpool_end(s->tp);
	if (rc)
		return serr(s, rc, "%s", p->err[0] ? p->err : aidos_strerror(rc));
	return 0;
}

int aidos_session_output(const aidos_session *s, int i, aidos_tensor *out)
{
	if (!s->plan || i < 0 || i >= s->plan->n_out)
		return AIDOS_E_NOTFOUND;
	const hal_tensor *t = s->plan->out[i];
	memset(out, 0, sizeof *out);
	out->name = s->m->graph->output[i].name;
	out->dtype = t->dtype;
	out->rank = t->rank;
	memcpy(out->dims, t->dims, sizeof out->dims);
	out->data = t->data;
	return 0;
}

int aidos_session_stats(const aidos_session *s, aidos_plan_stats *st)
{
	memset(st, 0, sizeof *st);
	if (!s->plan)
		return AIDOS_E_NOTFOUND;
	st->arena_bytes = s->plan->arena.base ? s->plan->arena.size : 0;
	st->naive_bytes = s->plan->naive_bytes;
	st->steps = s->plan->n_step;
	st->folded = s->plan->n_folded;
	st->plan_ms = s->plan_ms;
	return 0;
}
