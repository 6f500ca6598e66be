/*
 * hal/session.c - the public model and session API over plans.
 *
 * A session owns a thread pool and a bounded cache of plans, one per input
 * key: the dtype and shape of every input, plus the VALUES of the inputs
 * that are value-keyed in that plan. A run whose key is cached binds the
 * caller's input pointers into that plan and executes it: the lookup is a
 * scan over at most max_plans slots comparing a few words, so no
 * allocation, no system call (beyond the thread pool's wake-ups when its
 * workers slept). A new key plans, evicting the least recently used plan
 * when the cache is full or the cached plans (arenas, folded values, packed
 * weights) would hold more than the memory limit.
 *
 * Value keying: when planning fails because a kernel needed the value of a
 * tensor that folds from graph inputs (hal_need_value sets plan->need_in),
 * those inputs are added to the session's value-keyed set and planning is
 * retried with their values folded in as constants. The set only grows, and
 * only with inputs a kernel actually asked for; an input of more than
 * AIDOS_MAX_KEYED_ELEMS elements is refused instead.
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

#define MAX_INPUTS 64
#define DEFAULT_MAX_PLANS 8
#define MAX_PLANS 1024          /* a request scans them all: keep it short */

/* One cached plan and the key it serves. */
typedef struct plan_slot {
	hal_plan *plan;           /* NULL: free slot */
	uint64_t vk;              /* model inputs value-keyed in this plan */
	uint64_t used;            /* LRU clock of its last run */
	double plan_ms;
	size_t arena;             /* bytes of its arena */
	size_t bytes;             /* arena + plan-owned memory, child plans too */
	int32_t dtype[MAX_INPUTS];
	int32_t rank[MAX_INPUTS];
	int64_t (*dims)[AIDOS_MAX_RANK]; /* [n_in][AIDOS_MAX_RANK] */
	unsigned char *vals;      /* the vk inputs' bytes, in input order */
	size_t n_vals;
} plan_slot;

struct aidos_session {
	aidos_model *m;
	hal_threadpool *tp;
	plan_slot *slot;          /* [max_plans] */
	int max_plans;
	plan_slot *cur;           /* the plan of the last run (outputs), or NULL */
	uint64_t clock;
	uint64_t vk;              /* inputs ever found to be needed as values */
	uint64_t built;
	size_t mem_limit;         /* 0: the planner's default */
	char err[768];
};

__attribute__((format(printf, 3, 4)))
static int serr(aidos_session *s, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s->err, sizeof s->err, fmt, ap);
	va_end(ap);
	return code;
}

static void slot_clear(plan_slot *sl)
{
	hal_plan_free(sl->plan);
	pool_free(sl->vals);
	sl->plan = NULL;
	sl->vals = NULL;
	sl->n_vals = 0;
	sl->vk = 0;
	sl->arena = 0;
	sl->bytes = 0;
}

/* What a plan holds: its arena and its own memory (steps, folded values,
 * packed weights), and the same for its control-flow sub-plans. */
static size_t plan_bytes(const hal_plan *p)
{
	size_t n = (p->arena.base ? p->arena.size : 0) + p->mem.total;
	for (const hal_plan *c = p->children; c; c = c->next_child)
		n += plan_bytes(c);
	return n;
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
	if (opts && (opts->max_plans < 0 || opts->max_plans > MAX_PLANS)) {
		if (err && errlen)
			snprintf(err, errlen, "max_plans is %d (0 to %d)", opts->max_plans, MAX_PLANS);
		return AIDOS_E_INVALID;
	}
	aidos_session *s = pool_calloc(1, sizeof *s);
	if (!s)
		return AIDOS_E_NOMEM;
	s->m = m;
	s->mem_limit = opts ? opts->max_tensor_bytes : 0;
	s->max_plans = opts && opts->max_plans > 0 ? opts->max_plans : DEFAULT_MAX_PLANS;
	s->slot = pool_calloc((size_t)s->max_plans, sizeof *s->slot);
	int n_in = m->n_in ? m->n_in : 1;
	for (int i = 0; s->slot && i < s->max_plans; i++)
		if (!(s->slot[i].dims = pool_calloc((size_t)n_in, sizeof *s->slot[i].dims)))
			break;
	if (!s->slot || !s->slot[s->max_plans - 1].dims) {
		for (int i = 0; s->slot && i < s->max_plans; i++)
			pool_free(s->slot[i].dims);
		pool_free(s->slot);
		pool_free(s);
		if (err && errlen)
			snprintf(err, errlen, "out of memory");
		return AIDOS_E_NOMEM;
	}
	int threads = opts && opts->threads > 0 ? opts->threads : 1;
	int rc = hal_threadpool_create(threads, &s->tp);
	if (rc) {
		if (err && errlen)
			snprintf(err, errlen, "cannot start %d threads: %s", threads, aidos_strerror(rc));
		for (int i = 0; i < s->max_plans; i++)
			pool_free(s->slot[i].dims);
		pool_free(s->slot);
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
	for (int i = 0; i < s->max_plans; i++) {
		slot_clear(&s->slot[i]);
		pool_free(s->slot[i].dims);
	}
	pool_free(s->slot);
	hal_threadpool_destroy(s->tp);
	pool_free(s);
}

const char *aidos_session_errmsg(const aidos_session *s)
{
	return s->err;
}

static size_t in_bytes(const aidos_tensor *t)
{
	hal_tensor h;
	hal_tensor_set_shape(&h, t->dtype, t->rank, t->dims);
	return hal_nbytes(&h);
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
		if (!in[k].data && in_bytes(&in[k]))
			return serr(s, AIDOS_E_INVALID, "input '%s' has no data", in[k].name);
	}
	for (int i = 0; i < m->n_in; i++)
		if (map[i] < 0)
			return serr(s, AIDOS_E_NOTFOUND, "input '%s' is missing", m->in[i]->name);
	return 0;
}

/* Whether slot sl serves these inputs: same dtypes and shapes, and the same
 * bytes in every input value-keyed there. The request path: no allocation. */
static int slot_matches(const aidos_session *s, const plan_slot *sl, const aidos_tensor *in, const int *map)
{
	const unsigned char *vals = sl->vals;
	for (int i = 0; i < s->m->n_in; i++) {
		const aidos_tensor *t = &in[map[i]];
		if (t->dtype != sl->dtype[i] || t->rank != sl->rank[i] ||
		    memcmp(t->dims, sl->dims[i], (size_t)t->rank * sizeof(int64_t)))
			return 0;
	}
	if (!sl->vk)
		return 1;
	for (int i = 0; i < s->m->n_in; i++) {
		if (!((sl->vk >> i) & 1))
			continue;
		const aidos_tensor *t = &in[map[i]];
		size_t b = in_bytes(t);
		if (b && memcmp(vals, t->data, b))
			return 0;
		vals += b;
	}
	return 1;
}

static plan_slot *find_slot(aidos_session *s, const aidos_tensor *in, const int *map)
{
	if (s->cur && slot_matches(s, s->cur, in, map))
		return s->cur;
	for (int i = 0; i < s->max_plans; i++)
		if (s->slot[i].plan && &s->slot[i] != s->cur && slot_matches(s, &s->slot[i], in, map))
			return &s->slot[i];
	return NULL;
}

static double ms_since(const struct timespec *t0)
{
	struct timespec t1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/* Builds a plan for these inputs with the inputs in vk value-keyed. On a
 * plan that failed only for want of input values, *need gets those inputs. */
static int build_plan(aidos_session *s, const aidos_tensor *in, const int *map, uint64_t vk, hal_plan **out,
		      uint64_t *need)
{
	aidos_model *m = s->m;
	static const int64_t no_bytes;  /* a keyed input with no elements may have no data */
	hal_input_shape shp[MAX_INPUTS];
	for (int i = 0; i < m->n_in; i++) {
		const aidos_tensor *t = &in[map[i]];
		const void *val = (vk >> i) & 1 ? (t->data ? t->data : &no_bytes) : NULL;
		shp[i] = (hal_input_shape){ m->in[i]->name, t->dtype, t->rank, t->dims, val };
	}
	hal_plan *p;
	*need = 0;
	int rc = hal_plan_build(m, m->graph, NULL, 0, m->opset_default, s->tp, s->mem_limit, m->n_in, shp, &p, s->err,
				sizeof s->err);
	if (rc) {
		*need = p ? p->need_in & ~vk : 0;
		hal_plan_free(p);
		return rc;
	}
	*out = p;
	return 0;
}

/* Plans for a key not in the cache and stores it in a slot (evicting the
 * least recently used ones as the count and memory bounds say). */
static int plan_new(aidos_session *s, const aidos_tensor *in, const int *map, plan_slot **out)
{
	aidos_model *m = s->m;
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	uint64_t vk = s->vk, need = 0;
	hal_plan *p = NULL;
	int rc;
	/* Each retry adds at least one input to vk, so this ends. */
	for (;;) {
		for (int i = 0; i < m->n_in; i++) {
			if (!((vk >> i) & 1))
				continue;
			const aidos_tensor *t = &in[map[i]];
			hal_tensor h;
			hal_tensor_set_shape(&h, t->dtype, t->rank, t->dims);
			if (hal_numel(&h) > AIDOS_MAX_KEYED_ELEMS) {
				char why[sizeof s->err];
				snprintf(why, sizeof why, "%s", need ? s->err : "needed by an earlier plan");
				return serr(s, AIDOS_E_UNSUPPORTED,
					    "input '%s' must be known at plan time (value-keyed) but has %lld elements, at most %d: %s",
					    m->in[i]->name, (long long)hal_numel(&h), AIDOS_MAX_KEYED_ELEMS, why);
			}
		}
		if (!(rc = build_plan(s, in, map, vk, &p, &need)) || !need)
			break;
		vk |= need;
	}
	if (rc)
		return rc;
	/* Inputs found to be needed as values stay keyed in later plans: a
	 * new shape of the same model needs them too. */
	s->vk |= vk;
	s->built++;
	size_t n_vals = 0;
	for (int i = 0; i < m->n_in; i++)
		if ((vk >> i) & 1)
			n_vals += in_bytes(&in[map[i]]);
	unsigned char *vals = n_vals ? pool_malloc(n_vals) : NULL;
	if (n_vals && !vals) {
		hal_plan_free(p);
		return serr(s, AIDOS_E_NOMEM, "out of memory");
	}
	for (size_t i = 0, o = 0; i < (size_t)m->n_in; i++)
		if ((vk >> i) & 1) {
			size_t b = in_bytes(&in[map[i]]);
			if (b)
				memcpy(vals + o, in[map[i]].data, b);
			o += b;
		}
	/* Eviction: a free slot, else the least recently used; then more of
	 * the least recently used while the plans together hold more than the
	 * memory limit. */
	size_t arena = p->arena.base ? p->arena.size : 0, bytes = plan_bytes(p);
	plan_slot *sl = NULL;
	for (int i = 0; i < s->max_plans; i++)
		if (!sl || !s->slot[i].plan || (sl->plan && s->slot[i].used < sl->used))
			sl = &s->slot[i];
	if (s->cur == sl)
		s->cur = NULL;
	slot_clear(sl);
	size_t limit = p->mem_limit;
	for (;;) {
		size_t total = bytes;
		plan_slot *lru = NULL;
		for (int i = 0; i < s->max_plans; i++) {
			plan_slot *o = &s->slot[i];
			if (!o->plan)
				continue;
			total += o->bytes;
			if (!lru || o->used < lru->used)
				lru = o;
		}
		if (total <= limit || !lru)
			break;
		if (s->cur == lru)
			s->cur = NULL;
		slot_clear(lru);
	}
	sl->plan = p;
	sl->vk = vk;
	sl->vals = vals;
	sl->n_vals = n_vals;
	sl->arena = arena;
	sl->bytes = bytes;
	sl->plan_ms = ms_since(&t0);
	for (int i = 0; i < m->n_in; i++) {
		const aidos_tensor *t = &in[map[i]];
		sl->dtype[i] = t->dtype;
		sl->rank[i] = t->rank;
		memset(sl->dims[i], 0, sizeof sl->dims[i]);
		memcpy(sl->dims[i], t->dims, (size_t)t->rank * sizeof(int64_t));
	}
	*out = sl;
	return 0;
}

/* The cached plan for these inputs, planned now if needed. */
static int get_slot(aidos_session *s, int n, const aidos_tensor *inputs, int *map, plan_slot **out)
{
	s->err[0] = 0;
	if (n < 0 || n > MAX_INPUTS)
		return serr(s, AIDOS_E_INVALID, "%d inputs", n);
	int rc = bind_check(s, n, inputs, map);
	if (rc)
		return rc;
	plan_slot *sl = find_slot(s, inputs, map);
	if (!sl && (rc = plan_new(s, inputs, map, &sl)))
		return rc;
	sl->used = ++s->clock;
	*out = sl;
	return 0;
}

int aidos_session_plan(aidos_session *s, int n, const aidos_tensor *inputs)
{
	int map[MAX_INPUTS];
	plan_slot *sl;
	return get_slot(s, n, inputs, map, &sl);
}

int aidos_session_run(aidos_session *s, int n, const aidos_tensor *inputs)
{
	int map[MAX_INPUTS];
	plan_slot *sl;
	int rc = get_slot(s, n, inputs, map, &sl);
	if (rc)
		return rc;
	s->cur = sl;
	hal_plan *p = sl->plan;
	/* Bind the caller's bytes in place: the plan's input values are read by
	 * pointer, so this is the whole cost of handing inputs over. Inputs
	 * value-keyed in this plan are constants of it and not in p->in. */
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
	if (rc) {
		s->cur = NULL;
		return serr(s, rc, "%s", p->err[0] ? p->err : aidos_strerror(rc));
	}
	return 0;
}

int aidos_session_output(const aidos_session *s, int i, aidos_tensor *out)
{
	if (!s->cur || i < 0 || i >= s->cur->plan->n_out)
		return AIDOS_E_NOTFOUND;
	const hal_tensor *t = s->cur->plan->out[i];
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
	for (int i = 0; i < s->max_plans; i++)
		if (s->slot[i].plan) {
			st->cached_plans++;
			st->cached_arena_bytes += s->slot[i].arena;
			st->cached_bytes += s->slot[i].bytes;
		}
	st->plans_built = s->built;
	/* The current plan: the last run's, else the most recently planned. */
	const plan_slot *sl = s->cur;
	if (!sl)
		for (int i = 0; i < s->max_plans; i++)
			if (s->slot[i].plan && (!sl || s->slot[i].used > sl->used))
				sl = &s->slot[i];
	if (!sl)
		return AIDOS_E_NOTFOUND;
	const hal_plan *p = sl->plan;
	st->arena_bytes = sl->arena;
	st->naive_bytes = p->naive_bytes;
	st->steps = p->n_step;
	st->folded = p->n_folded;
	st->plan_ms = sl->plan_ms;
	st->value_keyed = __builtin_popcountll(sl->vk);
	return 0;
}
