/*
 * hal/plan.c - shape inference, constant folding, liveness-based arena
 * placement, and the flat executor loop. See hal/plan.h.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "hal/plan.h"
#include "hal/ops/arity.h"

/* Where empty constant tensors point, so "constant" always means data != NULL. */
static _Alignas(64) unsigned char empty_data[64];

/* ---- small helpers ---- */

static uint32_t hash_str(const char *s)
{
	uint32_t h = 2166136261u;
	while (*s)
		h = (h ^ (uint8_t)*s++) * 16777619u;
	return h;
}

static hal_value *find_local(hal_plan *p, const char *name)
{
	uint32_t mask = (uint32_t)p->hash_cap - 1;
	for (uint32_t i = hash_str(name) & mask;; i = (i + 1) & mask) {
		int k = p->hash[i];
		if (k < 0)
			return NULL;
		if (!strcmp(p->val[k].name, name))
			return &p->val[k];
	}
}

static void hash_put(hal_plan *p, int k)
{
	uint32_t mask = (uint32_t)p->hash_cap - 1;
	uint32_t i = hash_str(p->val[k].name) & mask;
	while (p->hash[i] >= 0)
		i = (i + 1) & mask;
	p->hash[i] = k;
}

/* Finds a name in this plan or an enclosing one; the value stays alive until
 * step `use` of the plan that holds it (for an enclosing plan: until the step
 * that owns the child). */
static hal_value *resolve(hal_plan *p, const char *name, int use)
{
	for (; p; use = p->parent_step, p = p->parent) {
		hal_value *v = find_local(p, name);
		if (v) {
			if (v->last < use)
				v->last = use;
			return v;
		}
	}
	return NULL;
}

static hal_value *new_value(hal_plan *p, const char *name, int kind)
{
	if (p->n_val >= p->cap_val)
		return NULL;
	int k = p->n_val++;
	hal_value *v = &p->val[k];
	memset(v, 0, sizeof *v);
	v->name = name;
	v->kind = kind;
	v->def = -1;
	v->last = -1;
	v->alias = -1;
	if (name[0])
		hash_put(p, k);
	return v;
}

static void *plan_alloc(hal_plan *p, size_t n)
{
	unsigned char *q = ir_mem_alloc(&p->mem, n + 48);
	return q ? (void *)pool_align_up((uintptr_t)q, 64) : NULL;
}

void *hal_step_alloc(hal_step *s, size_t n)
{
	return plan_alloc(s->plan, n);
}

int hal_need_value(hal_step *s, const hal_tensor *t, const char *what)
{
	if (t->data)
		return 0;
	/* Every input slot points at a hal_value's t (add_node), in this plan
	 * or an enclosing one; anything else is not ours to trace. */
	int mine = 0;
	for (int k = 0; k < s->n_in && !mine; k++)
		mine = s->in[k] == t;
	if (mine) {
		const hal_value *v = (const hal_value *)((const char *)t - offsetof(hal_value, t));
		hal_plan *root = s->plan;
		while (root && root->parent)
			root = root->parent;
		if (root && v->from_in)
			root->need_in |= v->src;
	}
	return hal_err(s, AIDOS_E_UNSUPPORTED, "%s of %s must be known at plan time", what, s->op->name);
}

int hal_err(hal_step *s, int code, const char *fmt, ...)
{
	hal_plan *p = s->plan;
	if (p && !p->err[0]) {
		const ir_node *n = s->node;
		int k = n ? snprintf(p->err, sizeof p->err, "node '%s' (%s): ", n->name, n->op_type) : 0;
		if (k < 0 || (size_t)k >= sizeof p->err)
			k = 0;
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(p->err + k, sizeof p->err - (size_t)k, fmt, ap);
		va_end(ap);
	}
	return code;
}

__attribute__((format(printf, 3, 4)))
static int perr(hal_plan *p, int code, const char *fmt, ...)
{
	if (!p->err[0]) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(p->err, sizeof p->err, fmt, ap);
		va_end(ap);
	}
	return code;
}

void hal_parallel_for(hal_step *s, int64_t n, int64_t grain, hal_range_fn fn, void *arg)
{
	if (n <= 0)
		return;
	hal_threadpool *tp = s && s->plan ? s->plan->tp : NULL;
	if (!tp || n <= grain) {
		fn(arg, 0, n);
		return;
	}
	hal_threadpool_run(tp, n, grain, fn, arg);
}

/* ---- dead-node pruning: a string set over names ---- */

typedef struct nameset {
	const char **slot;
	uint32_t cap;
} nameset;

static int set_has(const nameset *s, const char *name)
{
	for (uint32_t i = hash_str(name) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
		if (!s->slot[i])
			return 0;
		if (!strcmp(s->slot[i], name))
			return 1;
	}
}

static void set_add(nameset *s, const char *name)
{
	uint32_t i;
	for (i = hash_str(name) & (s->cap - 1); s->slot[i]; i = (i + 1) & (s->cap - 1))
		if (!strcmp(s->slot[i], name))
			return;
	s->slot[i] = name;
}

static int count_names(const ir_graph *g)
{
	int n = g->n_output;
	for (int i = 0; i < g->n_node; i++) {
		n += g->node[i].n_in;
		for (int k = 0; k < g->node[i].n_attr; k++) {
			const ir_attr *a = &g->node[i].attr[k];
			if (a->type == IR_ATTR_GRAPH && a->g)
				n += count_names(a->g);
			else if (a->type == IR_ATTR_GRAPHS)
				for (int j = 0; j < a->n; j++)
					n += count_names(a->graphs[j]);
		}
	}
	return n;
}

/* Every name a subgraph reads (over-approximates its free variables). */
static void add_sub_names(nameset *s, const ir_graph *g)
{
	for (int i = 0; i < g->n_node; i++) {
		const ir_node *n = &g->node[i];
		for (int k = 0; k < n->n_in; k++)
			if (n->in[k][0])
				set_add(s, n->in[k]);
		for (int k = 0; k < n->n_attr; k++) {
			const ir_attr *a = &n->attr[k];
			if (a->type == IR_ATTR_GRAPH && a->g)
				add_sub_names(s, a->g);
			else if (a->type == IR_ATTR_GRAPHS)
				for (int j = 0; j < a->n; j++)
					add_sub_names(s, a->graphs[j]);
		}
	}
}

/* needed[i] = node i contributes to a graph output. */
static int prune(hal_plan *p, const ir_graph *g, uint8_t *needed)
{
	int total = count_names(g) + 16;
	uint32_t cap = 16;
	while (cap < (uint32_t)total * 2)
		cap <<= 1;
	nameset s = { pool_calloc(cap, sizeof(char *)), cap };
	if (!s.slot)
		return AIDOS_E_NOMEM;
	for (int i = 0; i < g->n_output; i++)
		set_add(&s, g->output[i].name);
	for (int i = g->n_node - 1; i >= 0; i--) {
		const ir_node *n = &g->node[i];
		int need = 0;
		for (int k = 0; k < n->n_out && !need; k++)
			need = n->out[k][0] && set_has(&s, n->out[k]);
		needed[i] = (uint8_t)need;
		if (!need)
			continue;
		for (int k = 0; k < n->n_in; k++)
			if (n->in[k][0])
				set_add(&s, n->in[k]);
		for (int k = 0; k < n->n_attr; k++) {
			const ir_attr *a = &n->attr[k];
			if (a->type == IR_ATTR_GRAPH && a->g)
				add_sub_names(&s, a->g);
			else if (a->type == IR_ATTR_GRAPHS)
				for (int j = 0; j < a->n; j++)
					add_sub_names(&s, a->graphs[j]);
		}
	}
	pool_free(s.slot);
	(void)p;
	return 0;
}

/* ---- arena placement ---- */

typedef struct item {
	size_t size, offset;
	int start, end;
	hal_value *v;        /* NULL: a step's scratch */
	hal_step *s;
} item;

static int cmp_item(const void *a, const void *b)
{
	const item *x = a, *y = b;
	if (x->size != y->size)
		return x->size < y->size ? 1 : -1;
	return x->start - y->start;
}

static int cmp_off(const void *a, const void *b)
{
	const item *x = *(item *const *)a, *y = *(item *const *)b;
	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int place(hal_plan *p)
{
	/* Aliases keep their root alive as long as they are read. Values are
	 * defined in order, so walking backwards settles chains. */
	for (int k = p->n_val - 1; k >= 0; k--) {
		hal_value *v = &p->val[k];
		if (v->kind == HAL_VAL_ACT && v->alias >= 0) {
			hal_value *r = &p->val[v->alias];
			if (r->last < v->last)
				r->last = v->last;
		}
	}
	int n = 0;
	for (int k = 0; k < p->n_val; k++)
		n += p->val[k].kind == HAL_VAL_ACT && p->val[k].alias < 0;
	for (int i = 0; i < p->n_step; i++)
		n += p->step[i].scratch_bytes > 0;
	item *it = pool_calloc((size_t)n + 1, sizeof *it);
	item **live = pool_calloc((size_t)n + 1, sizeof *live);
	if (!it || !live) {
		pool_free(it);
		pool_free(live);
		return AIDOS_E_NOMEM;
	}
	int m = 0;
	for (int k = 0; k < p->n_val; k++) {
		hal_value *v = &p->val[k];
		if (v->kind != HAL_VAL_ACT || v->alias >= 0)
			continue;
		size_t b = pool_align_up(hal_nbytes(&v->t), POOL_ALIGN);
		it[m++] = (item){ .size = b, .start = v->def, .end = v->last < v->def ? v->def : v->last, .v = v };
		p->naive_bytes += b;
	}
	for (int i = 0; i < p->n_step; i++)
		if (p->step[i].scratch_bytes) {
			size_t b = pool_align_up(p->step[i].scratch_bytes, POOL_ALIGN);
			it[m++] = (item){ .size = b, .start = i, .end = i, .s = &p->step[i] };
			p->naive_bytes += b;
		}
	qsort(it, (size_t)m, sizeof *it, cmp_item);
	size_t total = 0;
	for (int i = 0; i < m; i++) {
		int nl = 0;
		for (int j = 0; j < i; j++)
			if (it[j].start <= it[i].end && it[i].start <= it[j].end)
				live[nl++] = &it[j];
		qsort(live, (size_t)nl, sizeof *live, cmp_off);
		size_t off = 0;
		for (int j = 0; j < nl; j++) {
			if (live[j]->offset >= off + it[i].size)
				break;
			if (live[j]->offset + live[j]->size > off)
				off = live[j]->offset + live[j]->size;
		}
		it[i].offset = off;
		if (off + it[i].size > total)
			total = off + it[i].size;
	}
	int rc = total > p->mem_limit ? AIDOS_E_NOMEM : pool_arena_reserve(&p->arena, total);
	if (rc)
		perr(p, rc, "the activations need an arena of %zu bytes (limit %zu)", total, p->mem_limit);
	if (!rc) {
		unsigned char *base = p->arena.base;
		for (int i = 0; i < m; i++) {
			if (it[i].v) {
				it[i].v->offset = it[i].offset;
				it[i].v->t.data = base + it[i].offset;
			} else {
				it[i].s->scratch = base + it[i].offset;
			}
		}
		for (int k = 0; k < p->n_val; k++) {
			hal_value *v = &p->val[k];
			if (v->kind == HAL_VAL_ACT && v->alias >= 0) {
				hal_value *r = v;
				while (r->alias >= 0)
					r = &p->val[r->alias];
				v->t.data = r->t.data;
			}
		}
	}
	pool_free(it);
	pool_free(live);
	return rc;
}

/* ---- building ---- */

static size_t default_limit(void)
{
	long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
	if (pages <= 0 || psz <= 0)
		return (size_t)1 << 32;
	return (size_t)pages * (size_t)psz / 2;
}

static int check_shape(hal_plan *p, hal_step *s, const hal_tensor *t, int k)
{
	const ir_node *n = s->node;
	if (hal_dtype_size(t->dtype) == 0)
		return perr(p, AIDOS_E_UNSUPPORTED, "node '%s' (%s): output %d has type %s, which aidos cannot hold",
			    n->name, n->op_type, k, hal_dtype_name(t->dtype));
	if (t->rank < 0 || t->rank > HAL_MAX_RANK)
		return perr(p, AIDOS_E_UNSUPPORTED, "node '%s' (%s): output %d has rank %d", n->name, n->op_type, k,
			    t->rank);
	for (int i = 0; i < t->rank; i++)
		if (t->dims[i] < 0)
			return perr(p, AIDOS_E_SHAPE, "node '%s' (%s): output %d has negative dimension %lld",
				    n->name, n->op_type, k, (long long)t->dims[i]);
	if (!hal_dims_ok(t->rank, t->dims))
		return perr(p, AIDOS_E_SHAPE, "node '%s' (%s): output %d is too large", n->name, n->op_type, k);
	int64_t e = hal_numel(t);
	if ((size_t)e * hal_dtype_size(t->dtype) > p->mem_limit)
		return perr(p, AIDOS_E_NOMEM, "node '%s' (%s): output %d needs %zu bytes, over the limit of %zu",
			    n->name, n->op_type, k, (size_t)e * hal_dtype_size(t->dtype), p->mem_limit);
	return 0;
}

static int add_node(hal_plan *p, const ir_node *n)
{
	if (n->domain[0])
		return perr(p, AIDOS_E_UNSUPPORTED, "node '%s': operator %s.%s is not supported", n->name,
			    n->domain, n->op_type);
	const hal_op *op = hal_op_find(n->op_type);
	if (!op)
		return perr(p, AIDOS_E_UNSUPPORTED, "node '%s': operator %s is not supported", n->name, n->op_type);
	/* Input and output counts against the operator's schema, so no kernel
	 * reads an input the node does not have. Versions newer than the
	 * schemas aidos was generated from may add optional inputs: only the
	 * minimum is checked for them. */
	int first;
	const hal_arity *ar = hal_arity_find(n->op_type, p->opset, &first);
	if (!ar && first)
		return perr(p, AIDOS_E_INVALID, "node '%s': %s does not exist at opset %d (it came in opset %d)", n->name,
			    n->op_type, p->opset, first);
	if (ar) {
		int newer = p->opset > hal_arity_max_opset;
		if (n->n_in < ar->min_in || (!newer && ar->max_in >= 0 && n->n_in > ar->max_in))
			return perr(p, AIDOS_E_INVALID, "node '%s' (%s): %d inputs, %s-%d takes %d to %d", n->name,
				    n->op_type, n->n_in, n->op_type, ar->since, ar->min_in, ar->max_in);
		for (int k = 0; k < n->n_in && k < 32; k++)
			if (((ar->required >> k) & 1) && !n->in[k][0])
				return perr(p, AIDOS_E_INVALID, "node '%s' (%s): required input %d is empty", n->name,
					    n->op_type, k);
		if (n->n_out < ar->min_out || (!newer && ar->max_out >= 0 && n->n_out > ar->max_out))
			return perr(p, AIDOS_E_INVALID, "node '%s' (%s): %d outputs, %s-%d gives %d to %d", n->name,
				    n->op_type, n->n_out, n->op_type, ar->since, ar->min_out, ar->max_out);
	}
	int idx = p->n_step;
	hal_step *s = &p->step[idx];
	memset(s, 0, sizeof *s);
	s->op = op;
	s->node = n;
	s->opset = p->opset;
	s->plan = p;
	s->n_in = n->n_in;
	s->n_out = n->n_out;
	/* Zeroed slots past the node's count read as absent optional inputs. */
	s->in = ir_mem_alloc(&p->mem, (size_t)(n->n_in > 16 ? n->n_in + 1 : 17) * sizeof(hal_tensor *));
	s->out = ir_mem_alloc(&p->mem, (size_t)(n->n_out > 16 ? n->n_out + 1 : 17) * sizeof(hal_tensor *));
	if (!s->in || !s->out)
		return AIDOS_E_NOMEM;
	int all_const = 1, from_in = 1;
	uint64_t src = 0;
	hal_value *in0 = NULL;
	for (int k = 0; k < n->n_in; k++) {
		if (!n->in[k][0])
			continue;
		hal_value *v = resolve(p, n->in[k], idx);
		if (!v)
			return perr(p, AIDOS_E_INVALID, "node '%s' (%s): input '%s' is not produced by any earlier node, input or initializer",
				    n->name, n->op_type, n->in[k]);
		if (!v->t.dtype)
			return perr(p, AIDOS_E_UNSUPPORTED, "node '%s' (%s): input '%s' has a type aidos cannot hold",
				    n->name, n->op_type, n->in[k]);
		s->in[k] = &v->t;
		if (k == 0)
			in0 = v;
		all_const &= v->t.is_const;
		from_in &= v->t.is_const || v->from_in;
		src |= v->src;
	}
	hal_value *outv[64];
	if (n->n_out > 64)
		return perr(p, AIDOS_E_UNSUPPORTED, "node '%s': %d outputs", n->name, n->n_out);
	for (int k = 0; k < n->n_out; k++) {
		if (n->out[k][0] && find_local(p, n->out[k]))
			return perr(p, AIDOS_E_INVALID, "node '%s' (%s): output '%s' is defined twice", n->name,
				    n->op_type, n->out[k]);
		hal_value *v = new_value(p, n->out[k], HAL_VAL_ACT);
		if (!v)
			return perr(p, AIDOS_E_NOMEM, "value table full");
		v->def = idx;
		outv[k] = v;
		s->out[k] = &v->t;
	}
	int rc = op->infer(s);
	if (rc) {
		if (!p->err[0])
			perr(p, rc, "node '%s' (%s): %s", n->name, n->op_type, aidos_strerror(rc));
		return rc;
	}
	if (s->scratch_bytes > p->mem_limit)
		return perr(p, AIDOS_E_NOMEM, "node '%s' (%s): scratch of %zu bytes, over the limit of %zu", n->name,
			    n->op_type, s->scratch_bytes, p->mem_limit);
	int inferred_const = n->n_out > 0;
	for (int k = 0; k < n->n_out; k++) {
		if ((rc = check_shape(p, s, s->out[k], k)))
			return rc;
		inferred_const &= s->out[k]->is_const && (s->out[k]->data || hal_numel(s->out[k]) == 0);
	}
	if (inferred_const) {
		for (int k = 0; k < n->n_out; k++) {
			outv[k]->kind = HAL_VAL_CONST;
			if (!s->out[k]->data)
				s->out[k]->data = empty_data;
		}
		p->n_folded++;
		return 0;
	}
	if ((op->flags & HAL_OP_PURE) && all_const) {
		for (int k = 0; k < n->n_out; k++) {
			size_t b = hal_nbytes(s->out[k]);
			s->out[k]->data = b ? plan_alloc(p, b) : empty_data;
			if (!s->out[k]->data)
				return AIDOS_E_NOMEM;
		}
		if (s->scratch_bytes && !(s->scratch = plan_alloc(p, s->scratch_bytes)))
			return AIDOS_E_NOMEM;
		if ((rc = op->exec(s))) {
			if (!p->err[0])
				perr(p, rc, "node '%s' (%s): %s", n->name, n->op_type, aidos_strerror(rc));
			return rc;
		}
		for (int k = 0; k < n->n_out; k++) {
			outv[k]->kind = HAL_VAL_CONST;
			s->out[k]->is_const = 1;
		}
		p->n_folded++;
		return 0;
	}
	for (int k = 0; k < n->n_out; k++) {
		s->out[k]->is_const = 0, s->out[k]->data = NULL;
		/* Would fold if the inputs in src were constants. */
		if ((op->flags & HAL_OP_PURE) && from_in && src) {
			outv[k]->from_in = 1;
			outv[k]->src = src;
		}
	}
	if ((op->flags & HAL_OP_ALIAS0) && in0 && n->n_out >= 1 && in0->kind == HAL_VAL_ACT &&
	    find_local(p, in0->name) == in0 && hal_nbytes(s->out[0]) == hal_nbytes(&in0->t))
		outv[0]->alias = (int)(in0 - p->val);
	p->n_step++;
	return 0;
}

/* ---- elementwise fusion ----
 * A run of consecutive float32 elementwise steps over tensors of the same
 * element count (hardswish as Add/Clip/Mul/Div, GELU as Div/Erf/Add/Mul/Mul,
 * bias adds and scales) becomes one step that sweeps the output in blocks of
 * FUSE_BLK elements, running each op's own kernel on the block: what the
 * group consumes internally stays in L1-sized registers on the worker's
 * stack, and only values read after the group (or graph outputs) are stored.
 * One pass over memory instead of one per op; the kernels are the same, so
 * results are bit-identical to the unfused plan. Runs before placement, so
 * the arena never holds the values that are no longer stored. */

#define FUSE_MAX 16
#define FUSE_BLK 256

typedef struct fuse_op {
	hal_ew_fn fn;
	const void *arg;
	int nsrc;
	int src[2];          /* >= 0: an earlier op of the group; < 0: -(k + 1), step input k */
	int out;             /* index in the step's outputs when stored, else -1 */
} fuse_op;

typedef struct fuse_params {
	int n_op;
	int64_t n;           /* elements of every op's output */
	fuse_op op[FUSE_MAX];
} fuse_params;

typedef struct fuse_job {
	const hal_step *s;
	const fuse_params *fp;
} fuse_job;

static void fused_range(void *vj, int64_t b0, int64_t b1)
{
	const fuse_job *j = vj;
	const fuse_params *fp = j->fp;
	const hal_step *s = j->s;
	_Alignas(64) float reg[FUSE_MAX][FUSE_BLK];
	float *dst[FUSE_MAX];
	for (int64_t b = b0; b < b1; b++) {
		const int64_t off = b * FUSE_BLK, n = fp->n - off < FUSE_BLK ? fp->n - off : FUSE_BLK;
		for (int k = 0; k < fp->n_op; k++) {
			const fuse_op *o = &fp->op[k];
			const void *in[2];
			int64_t st[2];
			for (int i = 0; i < o->nsrc; i++) {
				if (o->src[i] >= 0) {
					in[i] = dst[o->src[i]];
					st[i] = 1;
				} else {
					const hal_tensor *t = s->in[-o->src[i] - 1];
					st[i] = hal_numel(t) != 1;
					in[i] = (const float *)t->data + (st[i] ? off : 0);
				}
			}
			dst[k] = o->out >= 0 ? (float *)s->out[o->out]->data + off : reg[k];
			o->fn(dst[k], in, st, n, o->arg);
		}
	}
}

static int fused_exec(hal_step *s)
{
	const fuse_params *fp = s->params;
	fuse_job j = { s, fp };
	hal_parallel_for(s, (fp->n + FUSE_BLK - 1) / FUSE_BLK, 16, fused_range, &j);
	return 0;
}

static const hal_op op_fused = { "FusedElementwise", 1, 0, NULL, fused_exec };

/* Makes one step of group g[0..n) (copies of the original steps, n >= 2)
 * into *d, which takes the place of the group's first step. last_old: the
 * index of the group's last step (a value read past it is stored). */
static int fuse_group(hal_plan *p, hal_step *d, const hal_step *g, int n, int last_old)
{
	fuse_params *fp = plan_alloc(p, sizeof *fp);
	ir_node *nd = plan_alloc(p, sizeof *nd);
	const hal_tensor **ins = ir_mem_alloc(&p->mem, 17 * 2 * sizeof *ins);
	hal_tensor **outs = ir_mem_alloc(&p->mem, 17 * sizeof *outs);
	if (!fp || !nd || !ins || !outs)
		return AIDOS_E_NOMEM;
	memset(fp, 0, sizeof *fp);
	memset(ins, 0, 17 * 2 * sizeof *ins);
	memset(outs, 0, 17 * sizeof *outs);
	int n_in = 0, n_out = 0;
	fp->n_op = n;
	fp->n = hal_numel(g[0].out[0]);
	for (int k = 0; k < n; k++) {
		fuse_op *o = &fp->op[k];
		hal_step tmp = g[k];
		o->nsrc = hal_ew_kernel(&tmp, &o->fn, &o->arg);
		for (int i = 0; i < o->nsrc; i++) {
			const hal_tensor *t = g[k].in[i];
			int src = -1;
			for (int e = 0; e < k && src < 0; e++)
				if (g[e].out[0] == t)
					src = e;
			if (src < 0) {
				int e = 0;
				while (e < n_in && ins[e] != t)
					e++;
				if (e == n_in)
					ins[n_in++] = t;
				src = -(e + 1);
			}
			o->src[i] = src;
		}
		hal_value *v = hal_plan_value(p, g[k].out[0]);
		o->out = -1;
		if (!v || v->last > last_old) {
			o->out = n_out;
			outs[n_out++] = g[k].out[0];
		} else {
			v->kind = HAL_VAL_FUSED;
			v->t.data = NULL;
		}
	}
	*nd = *g[n - 1].node;
	nd->op_type = op_fused.name;
	memset(d, 0, sizeof *d);
	d->op = &op_fused;
	d->node = nd;
	d->opset = g[n - 1].opset;
	d->plan = p;
	d->n_in = n_in;
	d->n_out = n_out;
	d->in = (hal_tensor **)ins;
	d->out = outs;
	d->params = fp;
	return 0;
}

static int fuse_elementwise(hal_plan *p)
{
	if (hal_use_reference || p->n_step < 2)
		return 0;
	for (int i = 0; i < p->n_step;) {
		int j = i;
		int64_t n = -1;
		while (j < p->n_step && j - i < FUSE_MAX) {
			hal_ew_fn fn;
			const void *arg;
			hal_step *s = &p->step[j];
			if (hal_ew_kernel(s, &fn, &arg) < 0 || hal_numel(s->out[0]) == 0 ||
			    (n >= 0 && hal_numel(s->out[0]) != n))
				break;
			n = hal_numel(s->out[0]);
			j++;
		}
		if (j - i < 2) {
			i++;
			continue;
		}
		hal_step g[FUSE_MAX];
		memcpy(g, &p->step[i], (size_t)(j - i) * sizeof *g);
		int rc = fuse_group(p, &p->step[i], g, j - i, j - 1);
		if (rc)
			return rc;
		for (int k = i + 1; k < j; k++)
			p->step[k].op = NULL;   /* merged into step i */
		i = j;
	}
	return 0;
}

int hal_plan_drop_merged(hal_plan *p)
{
	const int n_old = p->n_step;
	int *map = pool_calloc((size_t)n_old + 1, sizeof *map);
	if (!map)
		return AIDOS_E_NOMEM;
	int w = 0;
	for (int i = 0; i < n_old; i++) {
		if (!p->step[i].op) {
			map[i] = w - 1;   /* merged into the kept step before it */
			continue;
		}
		if (w != i)
			p->step[w] = p->step[i];
		map[i] = w++;
	}
	map[n_old] = w;
	if (w != n_old) {
		p->n_step = w;
		for (int k = 0; k < p->n_val; k++) {
			hal_value *v = &p->val[k];
			if (v->def >= 0 && v->def <= n_old)
				v->def = map[v->def];
			if (v->last >= 0)
				v->last = v->last <= n_old ? map[v->last] : v->last - n_old + w;
		}
		for (hal_plan *c = p->children; c; c = c->next_child)
			if (c->parent_step >= 0 && c->parent_step <= n_old)
				c->parent_step = map[c->parent_step];
	}
	pool_free(map);
	return 0;
}

static int build(hal_plan *p, int n_in, const hal_input_shape *in)
{
	const ir_graph *g = p->g;
	int rc;
	int cap = g->n_input + g->n_init + 8;
	for (int i = 0; i < g->n_node; i++)
		cap += g->node[i].n_out;
	p->cap_val = cap;
	p->hash_cap = 16;
	while (p->hash_cap < cap * 2)
		p->hash_cap <<= 1;
	p->val = ir_mem_alloc(&p->mem, (size_t)cap * sizeof *p->val);
	p->hash = ir_mem_alloc(&p->mem, (size_t)p->hash_cap * sizeof *p->hash);
	p->step = ir_mem_alloc(&p->mem, (size_t)(g->n_node + 1) * sizeof *p->step);
	p->out = ir_mem_alloc(&p->mem, (size_t)(g->n_output + 1) * sizeof *p->out);
	p->in = ir_mem_alloc(&p->mem, (size_t)(g->n_input + 1) * sizeof *p->in);
	uint8_t *needed = pool_calloc((size_t)g->n_node + 1, 1);
	if (!p->val || !p->hash || !p->step || !p->out || !p->in || !needed) {
		pool_free(needed);
		return perr(p, AIDOS_E_NOMEM, "out of memory planning graph '%s'", g->name);
	}
	memset(p->hash, 0xff, (size_t)p->hash_cap * sizeof *p->hash);
	p->cap_step = g->n_node;

	for (int i = 0; i < g->n_init; i++) {
		const ir_tensor *it = &g->init[i];
		if (find_local(p, it->name))
			continue; /* duplicate initializer names: the first wins */
		hal_value *v = new_value(p, it->name, HAL_VAL_CONST);
		hal_tensor_set_shape(&v->t, hal_dtype_size(it->dtype) ? it->dtype : 0, it->rank, it->dims);
		v->t.data = it->data ? (void *)it->data : empty_data;
		v->t.is_const = 1;
	}
	/* Formal inputs: shapes given by the caller (top graph) or the owner. */
	for (int i = 0; i < n_in; i++) {
		hal_value *v = find_local(p, in[i].name);
		if (v && v->kind == HAL_VAL_CONST)
			continue; /* an initializer doubling as input: the initializer is the default */
		if (v) {
			pool_free(needed);
			return perr(p, AIDOS_E_INVALID, "input '%s' given twice", in[i].name);
		}
		v = new_value(p, in[i].name, HAL_VAL_INPUT);
		if (!v) {
			pool_free(needed);
			return perr(p, AIDOS_E_NOMEM, "value table full");
		}
		hal_tensor_set_shape(&v->t, in[i].dtype, in[i].rank, in[i].dims);
		if (in[i].value) {
			/* Value-keyed: a constant of this plan, like an initializer. */
			size_t b = hal_nbytes(&v->t);
			v->kind = HAL_VAL_CONST;
			v->t.is_const = 1;
			v->t.data = b ? plan_alloc(p, b) : empty_data;
			if (!v->t.data) {
				pool_free(needed);
				return perr(p, AIDOS_E_NOMEM, "out of memory");
			}
			if (b)
				memcpy(v->t.data, in[i].value, b);
			continue;
		}
		if (!p->parent && i < HAL_PLAN_MAX_KEYED_INPUTS) {
			v->from_in = 1;
			v->src = UINT64_C(1) << i;
		}
		p->in[p->n_in++] = v;
	}
	if ((rc = prune(p, g, needed))) {
		pool_free(needed);
		return perr(p, rc, "out of memory");
	}
	for (int i = 0; i < g->n_node && !rc; i++)
		if (needed[i])
			rc = add_node(p, &g->node[i]);
	pool_free(needed);
	if (rc)
		return rc;
	for (int i = 0; i < g->n_output; i++) {
		hal_value *v = resolve(p, g->output[i].name, p->n_step);
		if (!v)
			return perr(p, AIDOS_E_INVALID, "graph output '%s' is not produced by any node", g->output[i].name);
		p->out[p->n_out++] = &v->t;
	}
	/* Fusion passes (off the reference path): Conv pairs, transformer
	 * patterns, then
	 * elementwise runs; each merges steps into a kept one and marks the
	 * rest (op NULL) for hal_plan_drop_merged. */
	if (!hal_use_reference && ((rc = hal_fuse_conv_plan(p)) || (rc = hal_plan_drop_merged(p)) ||
				   (rc = hal_fuse_xfmr(p)) || (rc = hal_plan_drop_merged(p)) ||
				   (rc = fuse_elementwise(p)) || (rc = hal_plan_drop_merged(p))))
		return perr(p, rc, "out of memory fusing steps");
	if ((rc = place(p)))
		return perr(p, rc, "cannot reserve the activation arena");  /* keeps place()'s message */
	return 0;
}

int hal_plan_build(const struct aidos_model *m, const ir_graph *g, hal_plan *parent, int parent_step,
		   int opset, hal_threadpool *tp, size_t mem_limit, int n_in, const hal_input_shape *in,
		   hal_plan **out, char *err, size_t errlen)
{
	*out = NULL;
	hal_plan *p = pool_calloc(1, sizeof *p);
	if (!p) {
		if (err && errlen)
			snprintf(err, errlen, "out of memory");
		return AIDOS_E_NOMEM;
	}
	p->parent = parent;
	p->parent_step = parent_step;
	if (parent) {
		/* The parent frees its children, whatever becomes of the step. */
		p->next_child = parent->children;
		parent->children = p;
	}
	p->g = g;
	p->model = m;
	p->opset = opset;
	p->tp = tp;
	p->mem_limit = mem_limit ? mem_limit : default_limit();
	int rc = build(p, n_in, in);
	if (!rc && p->n_step && getenv("AIDOS_PROFILE"))
		p->prof_ns = pool_calloc((size_t)p->n_step, sizeof *p->prof_ns);  /* NULL: no profile */
	if (rc && err && errlen)
		snprintf(err, errlen, "%s", p->err[0] ? p->err : aidos_strerror(rc));
	*out = p;
	return rc;
}

static int prof_cmp(const void *a, const void *b)
{
	const uint64_t *x = a, *y = b;  /* {ns, step} pairs, most time first */
	return x[0] < y[0] ? 1 : x[0] > y[0] ? -1 : 0;
}

/* Prints the per-op-type and the top per-step times of a profiled plan to
 * stderr (AIDOS_PROFILE): a developer's tool, off the request path. */
static void prof_print(const hal_plan *p)
{
	if (!p->prof_runs)
		return;
	uint64_t total = 0;
	for (int i = 0; i < p->n_step; i++)
		total += p->prof_ns[i];
	fprintf(stderr, "profile: %d steps, %llu runs, %.3f ms per run\n", p->n_step,
		(unsigned long long)p->prof_runs, total / 1e6 / p->prof_runs);
	/* By op type: a quadratic scan, fine for a few thousand steps. */
	uint64_t (*by)[2] = pool_calloc((size_t)p->n_step, sizeof *by);
	if (!by)
		return;
	for (int i = 0; i < p->n_step; i++) {
		int first = 1;
		for (int j = 0; j < i && first; j++)
			first = strcmp(p->step[j].node->op_type, p->step[i].node->op_type) != 0;
		if (!first)
			continue;
		uint64_t ns = 0, n = 0;
		for (int j = i; j < p->n_step; j++)
			if (!strcmp(p->step[j].node->op_type, p->step[i].node->op_type))
				ns += p->prof_ns[j], n++;
		by[i][0] = ns;
		by[i][1] = (uint64_t)i | n << 32;
	}
	qsort(by, (size_t)p->n_step, sizeof *by, prof_cmp);
	for (int i = 0; i < p->n_step && by[i][0]; i++) {
		const hal_step *s = &p->step[by[i][1] & 0xffffffffu];
		fprintf(stderr, "  %-22s x%-4llu %9.4f ms %5.1f%%\n", s->node->op_type,
			(unsigned long long)(by[i][1] >> 32), by[i][0] / 1e6 / p->prof_runs,
			100.0 * by[i][0] / (total ? total : 1));
	}
	for (int i = 0; i < p->n_step; i++)
		by[i][0] = p->prof_ns[i], by[i][1] = (uint64_t)i;
	qsort(by, (size_t)p->n_step, sizeof *by, prof_cmp);
	/* AIDOS_PROFILE=N lists the N slowest steps (12 for 1 or any non-number). */
	long top = strtol(getenv("AIDOS_PROFILE") ? getenv("AIDOS_PROFILE") : "", NULL, 10);
	if (top <= 1)
		top = 12;
	for (int i = 0; i < p->n_step && i < top; i++) {
		const hal_step *s = &p->step[by[i][1]];
		fprintf(stderr, "  step %4llu %-14s %9.4f ms  %s\n", (unsigned long long)by[i][1],
			s->node->op_type, by[i][0] / 1e6 / p->prof_runs, s->node->name ? s->node->name : "");
	}
	pool_free(by);
}

static uint64_t prof_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void hal_plan_free(hal_plan *p)
{
	if (!p)
		return;
	if (p->prof_ns) {
		prof_print(p);
		pool_free(p->prof_ns);
	}
	while (p->children) {
		hal_plan *c = p->children;
		p->children = c->next_child;
		hal_plan_free(c);
	}
	pool_arena_release(&p->arena);
	ir_mem_free(&p->mem);
	pool_free(p);
}

int hal_plan_run(hal_plan *p)
{
	uint64_t t0 = 0;
	if (p->prof_ns) {
		p->prof_runs++;
		t0 = prof_now();
	}
	for (int i = 0; i < p->n_step; i++) {
		hal_step *s = &p->step[i];
		int rc = s->op->exec(s);
		if (p->prof_ns) {
			uint64_t t1 = prof_now();
			p->prof_ns[i] += t1 - t0;
			t0 = t1;
		}
		if (rc) {
			if (!p->err[0])
				perr(p, rc, "node '%s' (%s): %s", s->node->name, s->node->op_type, aidos_strerror(rc));
			return rc;
		}
	}
	return 0;
}
