/*
 * node/agent.c - agents: shared models, state pairs, the context region and
 * its checkpoints, and the agent table (node.h tells the contracts).
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "node/node.h"
#include "node/wire.h"
#include "pools/pools.h"
#include "node/util.h"

int node_name_valid(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n >= NODE_NAME_MAX || s[0] == '.' || s[0] == '-')
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
		      c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

/* ---- state pairs ---- */

static const aidos_tensor *find_tensor(const aidos_tensor *ts, int n, const char *name, int *idx)
{
	for (int i = 0; i < n; i++)
		if (ts[i].name && !strcmp(ts[i].name, name)) {
			if (idx)
				*idx = i;
			return &ts[i];
		}
	return NULL;
}

/* Same rank where both are known, same size in every dimension both fix. */
static int shapes_compatible(const aidos_tensor *a, const aidos_tensor *b)
{
	if (a->rank < 0 || b->rank < 0)
		return 1;
	if (a->rank != b->rank)
		return 0;
	for (int d = 0; d < a->rank && d < AIDOS_MAX_RANK; d++)
		if (a->dims[d] >= 0 && b->dims[d] >= 0 && a->dims[d] != b->dims[d])
			return 0;
	return 1;
}

static void fmt_dims(char *b, size_t n, const aidos_tensor *t)
{
	size_t k = 0;
	if (t->rank < 0) {
		snprintf(b, n, "[?]");
		return;
	}
	k += (size_t)snprintf(b, n, "[");
	for (int i = 0; i < t->rank && i < AIDOS_MAX_RANK && k < n; i++) {
		if (t->dims[i] < 0)
			k += (size_t)snprintf(b + k, n - k, "%s?", i ? "," : "");
		else
			k += (size_t)snprintf(b + k, n - k, "%s%lld", i ? "," : "", (long long)t->dims[i]);
	}
	if (k < n)
		snprintf(b + k, n - k, "]");
}

/* Fills pair st from input `in` and output `out` (index oi). */
static int pair_fill(node_state *st, const aidos_tensor *in, const aidos_tensor *out, int oi, char *err,
		     size_t errlen)
{
	const aidos_tensor *shape = in->rank >= 0 ? in : out;
	if (shape->rank < 0 || shape->rank > AIDOS_MAX_RANK)
		return fail(err, errlen, AIDOS_E_INVALID, "state '%s' <- '%s': the model does not fix its rank",
			    in->name, out->name);
	if (!aidos_wire_dtype_size(in->dtype))
		return fail(err, errlen, AIDOS_E_UNSUPPORTED, "state '%s': dtype %d cannot be carried", in->name,
			    in->dtype);
	st->input = pool_strndup(in->name, strlen(in->name));
	st->output = pool_strndup(out->name, strlen(out->name));
	if (!st->input || !st->output)
		return fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
	st->out_idx = oi;
	st->dtype = in->dtype;
	st->rank = shape->rank;
	for (int d = 0; d < st->rank; d++) {
		int64_t v = in->rank >= 0 ? in->dims[d] : -1;
		if (v < 0 && out->rank == st->rank)
			v = out->dims[d];
		st->dims[d] = v < 0 ? 1 : v;   /* symbolic: batch 1 */
	}
	return 0;
}

void node_state_free(node_state *st, int n)
{
	if (!st)
		return;
	for (int i = 0; i < n; i++) {
		pool_free(st[i].input);
		pool_free(st[i].output);
	}
	pool_free(st);
}

int node_state_layout(node_state *st, int n, size_t *total)
{
	size_t off = 0;
	for (int i = 0; i < n; i++) {
		size_t es = aidos_wire_dtype_size(st[i].dtype), bytes = es;
		if (!es)
			return AIDOS_E_UNSUPPORTED;
		for (int d = 0; d < st[i].rank; d++)
			if (st[i].dims[d] < 0 || __builtin_mul_overflow(bytes, (size_t)st[i].dims[d], &bytes))
				return AIDOS_E_RANGE;
		off = pool_align_up(off, es);
		st[i].offset = off;
		st[i].bytes = bytes;
		if (__builtin_add_overflow(off, bytes, &off) || off > NODE_MAX_CONTEXT)
			return AIDOS_E_RANGE;
	}
	*total = off;
	return 0;
}

int node_state_match(const aidos_tensor *ins, int nin, const aidos_tensor *outs, int nout,
		     const char *const *ex_in, const char *const *ex_out, int n_ex, int rules,
		     node_state **out, int *n, size_t *total, char *err, size_t errlen)
{
	static const char *const suffix[] = { "N", "n", "_out" };
	node_state *st = NULL;
	int k = 0, rc = 0;
	char a[96], b[96];

	*out = NULL;
	*n = 0;
	*total = 0;
	if (n_ex < 0 || n_ex > NODE_MAX_STATE)
		return fail(err, errlen, AIDOS_E_INVALID, "%d state pairs (at most %d)", n_ex, NODE_MAX_STATE);
	if (!n_ex && !rules)
		return 0;
	if (!(st = pool_calloc((size_t)(n_ex ? n_ex : nin) + 1, sizeof *st)))
		return fail(err, errlen, AIDOS_E_NOMEM, "out of memory");

	if (n_ex) {
		for (int i = 0; i < n_ex; i++) {
			int oi = -1;
			const aidos_tensor *ti, *to;
			if (!ex_in[i] || !ex_out[i] || !ex_in[i][0] || !ex_out[i][0]) {
				rc = fail(err, errlen, AIDOS_E_INVALID, "state pair %d lacks a name", i);
				goto out;
			}
			if (!(ti = find_tensor(ins, nin, ex_in[i], NULL))) {
				rc = fail(err, errlen, AIDOS_E_NOTFOUND, "state pair %s=%s: the model has no input '%s'",
					  ex_in[i], ex_out[i], ex_in[i]);
				goto out;
			}
			if (!(to = find_tensor(outs, nout, ex_out[i], &oi))) {
				rc = fail(err, errlen, AIDOS_E_NOTFOUND, "state pair %s=%s: the model has no output '%s'",
					  ex_in[i], ex_out[i], ex_out[i]);
				goto out;
			}
			for (int j = 0; j < k; j++)
				if (!strcmp(st[j].input, ex_in[i]) || st[j].out_idx == oi) {
					rc = fail(err, errlen, AIDOS_E_INVALID, "state pair %s=%s: '%s' is in two pairs",
						  ex_in[i], ex_out[i],
						  !strcmp(st[j].input, ex_in[i]) ? ex_in[i] : ex_out[i]);
					goto out;
				}
			if (ti->dtype != to->dtype) {
				rc = fail(err, errlen, AIDOS_E_INVALID,
					  "state pair %s=%s: dtypes differ (input %d, output %d)", ex_in[i], ex_out[i],
					  ti->dtype, to->dtype);
				goto out;
			}
			if (!shapes_compatible(ti, to)) {
				fmt_dims(a, sizeof a, ti);
				fmt_dims(b, sizeof b, to);
				rc = fail(err, errlen, AIDOS_E_INVALID, "state pair %s=%s: shapes differ (%s vs %s)",
					  ex_in[i], ex_out[i], a, b);
				goto out;
			}
			if ((rc = pair_fill(&st[k], ti, to, oi, err, errlen)))
				goto out;
			k++;
		}
	} else {
		for (int i = 0; i < nin; i++) {
			char want[NODE_MAX_TENSOR_NAME + 8];
			if (!ins[i].name || strlen(ins[i].name) >= NODE_MAX_TENSOR_NAME)
				continue;
			for (size_t s = 0; s < sizeof suffix / sizeof suffix[0]; s++) {
				int oi = -1, used = 0;
				snprintf(want, sizeof want, "%s%s", ins[i].name, suffix[s]);
				const aidos_tensor *to = find_tensor(outs, nout, want, &oi);
				if (!to || to->dtype != ins[i].dtype || !shapes_compatible(&ins[i], to))
					continue;
				for (int j = 0; j < k; j++)
					used |= st[j].out_idx == oi;
				if (used)
					continue;
				if ((rc = pair_fill(&st[k], &ins[i], to, oi, err, errlen)))
					goto out;
				k++;
				break;
			}
		}
		if (!k) {
			size_t m = 0;
			char names[512] = "";
			for (int i = 0; i < nin && m < sizeof names; i++)
				m += (size_t)snprintf(names + m, sizeof names - m, "%s%s", i ? ", " : "",
						      ins[i].name ? ins[i].name : "?");
			rc = fail(err, errlen, AIDOS_E_INVALID,
				  "--stateful: no input x of this model has an output named xN, xn or x_out of the "
				  "same type and shape (inputs: %s); name the pairs with --state IN=OUT",
				  names);
			goto out;
		}
	}
	if ((rc = node_state_layout(st, k, total))) {
		fail(err, errlen, rc, "the state tensors are too large (over %llu bytes)",
		     (unsigned long long)NODE_MAX_CONTEXT);
		goto out;
	}
	if (!*total) {
		rc = fail(err, errlen, AIDOS_E_INVALID, "the state tensors hold no element");
		goto out;
	}
out:
	if (rc) {
		node_state_free(st, k);
		*total = 0;
		return rc;
	}
	*out = st;
	*n = k;
	return 0;
}

/* ---- the context region and its checkpoints ---- */

uint64_t node_ctx_checksum(const void *region, size_t len)
{
	return aidos_wire_fnv1a(AIDOS_WIRE_FNV_INIT, region, len);
}

void node_ckpt_fini(node_ckpt *c)
{
	if (!c)
		return;
	pool_free(c->tensors);
	pool_free(c->ptrs);
	pool_free(c->data);
	pool_free(c->agent);
	memset(c, 0, sizeof *c);
}

int node_ckpt_pack(const char *agent, const node_state *st, int n, const uint8_t *region, size_t len,
		   uint64_t version, node_ckpt *c)
{
	memset(c, 0, sizeof *c);
	aidos__agent_context__init(&c->msg);
	c->tensors = pool_calloc((size_t)n + 1, sizeof *c->tensors);
	c->ptrs = pool_calloc((size_t)n + 1, sizeof *c->ptrs);
	c->data = pool_malloc(len ? len : 1);
	c->agent = pool_strndup(agent, strlen(agent));
	if (!c->tensors || !c->ptrs || !c->data || !c->agent) {
		node_ckpt_fini(c);
		return AIDOS_E_NOMEM;
	}
	memcpy(c->data, region, len);
	for (int i = 0; i < n; i++) {
		Aidos__Tensor *t = &c->tensors[i];
		aidos__tensor__init(t);
		t->name = st[i].input;
		t->dtype = st[i].dtype;
		t->n_dims = (size_t)st[i].rank;
		t->dims = (int64_t *)st[i].dims;
		t->data.len = st[i].bytes;
		t->data.data = c->data + st[i].offset;
		c->ptrs[i] = t;
	}
	c->msg.agent = c->agent;
	c->msg.version = version;
	c->msg.n_tensors = (size_t)n;
	c->msg.tensors = c->ptrs;
	c->msg.checksum = aidos_wire_context_checksum(&c->msg);
	return 0;
}

/* Does the protobuf tensor t describe state s (name, dtype, dims)? */
static int state_is(const node_state *s, const Aidos__Tensor *t, char *err, size_t errlen)
{
	if (!t)
		return fail(err, errlen, AIDOS_E_INVALID, "state '%s': missing tensor", s->input);
	if (strcmp(t->name, s->input))
		return fail(err, errlen, AIDOS_E_INVALID, "state tensor '%.64s' where the agent has '%s'", t->name,
			    s->input);
	if (t->dtype != s->dtype)
		return fail(err, errlen, AIDOS_E_INVALID, "state tensor '%s': dtype %d, the agent's is %d", s->input,
			    t->dtype, s->dtype);
	int same = t->n_dims == (size_t)s->rank;
	for (int d = 0; same && d < s->rank; d++)
		same = t->dims[d] == s->dims[d];
	if (!same)
		return fail(err, errlen, AIDOS_E_INVALID, "state tensor '%s': its shape differs from the agent's",
			    s->input);
	return 0;
}

int node_ckpt_unpack(const node_state *st, int n, const Aidos__AgentContext *c, uint8_t *region,
		     size_t len, char *err, size_t errlen)
{
	int rc;
	if (!c)
		return fail(err, errlen, AIDOS_E_INVALID, "missing context");
	if (c->n_tensors != (size_t)n)
		return fail(err, errlen, AIDOS_E_INVALID, "context of %zu tensors, the agent has %d state pairs",
			    c->n_tensors, n);
	for (int i = 0; i < n; i++) {
		aidos_tensor t;
		char why[200];
		if ((rc = state_is(&st[i], c->tensors[i], err, errlen)))
			return rc;
		if (aidos_wire_tensor_from_pb(c->tensors[i], &t, why, sizeof why))
			return fail(err, errlen, AIDOS_E_INVALID, "context: %s", why);
		if (c->tensors[i]->data.len != st[i].bytes || st[i].offset + st[i].bytes > len)
			return fail(err, errlen, AIDOS_E_INVALID, "context tensor '%s': %zu bytes, the state takes %zu",
				    st[i].input, c->tensors[i]->data.len, st[i].bytes);
	}
	uint64_t h = aidos_wire_context_checksum(c);
	if (h != c->checksum)
		return fail(err, errlen, AIDOS_E_INVALID,
			    "context version %llu: checksum %016llx does not match its data (%016llx)",
			    (unsigned long long)c->version, (unsigned long long)c->checksum, (unsigned long long)h);
	memset(region, 0, len);
	for (int i = 0; i < n; i++)
		memcpy(region + st[i].offset, c->tensors[i]->data.data, st[i].bytes);
	return 0;
}

int node_layout_check(const node_state *st, int n, size_t total, Aidos__Tensor *const *layout,
		      size_t n_layout, uint64_t length, char *err, size_t errlen)
{
	int rc;
	if (n_layout != (size_t)n)
		return fail(err, errlen, AIDOS_E_INVALID, "exported layout has %zu state tensors, the agent %d",
			    n_layout, n);
	for (int i = 0; i < n; i++)
		if ((rc = state_is(&st[i], layout[i], err, errlen)))
			return rc;
	if (length != total)
		return fail(err, errlen, AIDOS_E_INVALID, "exported region of %llu bytes, the agent's state takes %zu",
			    (unsigned long long)length, total);
	return 0;
}

/* ---- models shared per node ---- */

struct node_model {
	node_model *next;
	char *path;        /* realpath */
	aidos_model *m;
	int refs;          /* under node_models.mu */
	size_t bytes;
};

void node_models_init(node_models *ms)
{
	pthread_mutex_init(&ms->mu, NULL);
	ms->list = NULL;
}

void node_models_fini(node_models *ms)
{
	while (ms->list) {
		node_model *m = ms->list;
		ms->list = m->next;
		aidos_model_free(m->m);
		free(m->path);
		pool_free(m);
	}
	pthread_mutex_destroy(&ms->mu);
}

int node_model_get(node_models *ms, const char *path, node_model **out, char *err, size_t errlen)
{
	char *rp = realpath(path, NULL);
	node_model *m;
	int rc;

	*out = NULL;
	if (!rp)
		return fail(err, errlen, -errno, "model %s: %s", path, strerror(errno));
	/* Loading under the lock: two agents of one new model wait for one
	 * load instead of decoding the file twice. */
	pthread_mutex_lock(&ms->mu);
	for (m = ms->list; m; m = m->next)
		if (!strcmp(m->path, rp)) {
			m->refs++;
			pthread_mutex_unlock(&ms->mu);
			free(rp);
			*out = m;
			return 0;
		}
	if (!(m = pool_calloc(1, sizeof *m))) {
		rc = fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
		goto fail;
	}
	char why[256] = "";
	if ((rc = aidos_model_load(rp, &m->m, why, sizeof why))) {
		fail(err, errlen, rc, "model %s: %s", path, why[0] ? why : aidos_strerror(rc));
		pool_free(m);
		goto fail;
	}
	size_t mapped = 0, copied = 0;
	aidos_model_weight_bytes(m->m, &mapped, &copied);
	m->bytes = mapped + copied;
	m->path = rp;
	m->refs = 1;
	m->next = ms->list;
	ms->list = m;
	pthread_mutex_unlock(&ms->mu);
	*out = m;
	return 0;
fail:
	pthread_mutex_unlock(&ms->mu);
	free(rp);
	return rc;
}

void node_model_put(node_models *ms, node_model *m)
{
	node_model **pp;
	if (!m)
		return;
	pthread_mutex_lock(&ms->mu);
	if (--m->refs > 0) {
		pthread_mutex_unlock(&ms->mu);
		return;
	}
	for (pp = &ms->list; *pp && *pp != m; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = m->next;
	pthread_mutex_unlock(&ms->mu);
	aidos_model_free(m->m);
	free(m->path);
	pool_free(m);
}

aidos_model *node_model_handle(const node_model *m)
{
	return m->m;
}

size_t node_model_bytes(const node_model *m)
{
	return m->bytes;
}

int node_models_count(node_models *ms, uint64_t *bytes)
{
	int k = 0;
	uint64_t b = 0;
	pthread_mutex_lock(&ms->mu);
	for (node_model *m = ms->list; m; m = m->next) {
		k++;
		b += m->bytes;
	}
	pthread_mutex_unlock(&ms->mu);
	if (bytes)
		*bytes = b;
	return k;
}

int node_model_refs(node_models *ms, const node_model *m)
{
	pthread_mutex_lock(&ms->mu);
	int r = m->refs;
	pthread_mutex_unlock(&ms->mu);
	return r;
}

/* ---- agents ---- */

const char *node_agent_state_name(int state_now)
{
	switch (state_now) {
	case NODE_AGENT_LOADING: return "loading";
	case NODE_AGENT_IDLE: return "idle";
	case NODE_AGENT_INFER: return "infer";
	case NODE_AGENT_SYNC: return "sync";
	case NODE_AGENT_SUSPENDED: return "suspended";
	case NODE_AGENT_DEAD: return "dead";
	default: return "unknown";
	}
}

static void agent_free(node_agent *a)
{
	if (a->ctx_mem && a->x)
		xport_mem_release(a->x, a->ctx_mem);
	aidos_session_destroy(a->sess);   /* its arena goes back to the pool */
	aidos_session_destroy(a->bsess);
	if (a->stage)
		mpool_free(a->pool, a->stage);
	if (a->model)
		node_model_put(a->models, a->model);
	node_state_free(a->state, a->n_state);
	pool_arena_release(&a->ctx_arena);
	mpool_destroy(a->pool);
	pool_free(a->model_path);
	pool_free(a->device);
	for (int i = 0; a->ex && i < 2 * a->n_ex; i++)
		pool_free(a->ex[i]);
	pool_free(a->ex);
	pthread_mutex_destroy(&a->mu);
	pthread_mutex_destroy(&a->smu);
	pool_free(a);
}

void node_agent_ref(node_agent *a)
{
	__atomic_add_fetch(&a->refs, 1, __ATOMIC_RELAXED);
}

void node_agent_unref(node_agent *a)
{
	/* acq_rel: the last holder sees every write the others made before
	 * dropping their references. */
	if (a && __atomic_sub_fetch(&a->refs, 1, __ATOMIC_ACQ_REL) == 0)
		agent_free(a);
}

int node_agent_create_lazy(node_models *ms, xport *x, const node_agent_spec *sp, node_agent **out, char *err,
			   size_t errlen)
{
	node_agent *a;
	int rc;
	struct stat st;

	*out = NULL;
	if (!node_name_valid(sp->name))
		return fail(err, errlen, AIDOS_E_INVALID, "invalid agent name '%.64s' (1-63 of [A-Za-z0-9._-])",
			    sp->name ? sp->name : "");
	if (!sp->model_path || sp->model_path[0] != '/' || strlen(sp->model_path) >= PATH_MAX)
		return fail(err, errlen, AIDOS_E_INVALID, "agent %s: model path '%.200s' is not absolute", sp->name,
			    sp->model_path ? sp->model_path : "");
	if (sp->device && sp->device[0] && strcmp(sp->device, "cpu")) {
		if (!strcmp(sp->device, "cuda"))
			return fail(err, errlen, AIDOS_E_UNSUPPORTED,
				    "agent %s: device cuda: this node runs agents on the cpu only", sp->name);
		return fail(err, errlen, AIDOS_E_INVALID, "agent %s: unknown device '%.32s'", sp->name, sp->device);
	}
	if (sp->n_ex < 0 || sp->n_ex > NODE_MAX_STATE)
		return fail(err, errlen, AIDOS_E_INVALID, "agent %s: %d state pairs (at most %d)", sp->name, sp->n_ex,
			    NODE_MAX_STATE);
	/* The file must be there now (a spawn that cannot load fails now,
	 * not at its first request); its decoding may wait. */
	if (stat(sp->model_path, &st))
		return fail(err, errlen, -errno, "model %s: %s", sp->model_path, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return fail(err, errlen, AIDOS_E_INVALID, "model %s: not a regular file", sp->model_path);
	if (!(a = pool_calloc(1, sizeof *a)))
		return fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
	pthread_mutex_init(&a->mu, NULL);
	pthread_mutex_init(&a->smu, NULL);
	a->refs = 1;
	a->x = x;
	a->models = ms;
	static uint32_t next_id;
	a->id = __atomic_add_fetch(&next_id, 1, __ATOMIC_RELAXED);
	a->quota = sp->quota;
	a->deadline_ms = sp->deadline_ms;
	a->batch_max = sp->batch_max > 1 ? (sp->batch_max > 8 ? 8 : sp->batch_max) : 1;
	snprintf(a->name, sizeof a->name, "%s", sp->name);
	a->priority = sp->priority;
	a->model_path = pool_strndup(sp->model_path, strlen(sp->model_path));
	a->device = pool_strndup("cpu", 3);
	a->want_stateful = sp->stateful || sp->n_ex;
	a->state_now = AIDOS__AGENT_STATE__AGENT_LOADING;
	if (!a->model_path || !a->device) {
		rc = fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
		goto fail;
	}
	/* Explicit state pairs are kept until the load uses them. */
	if (sp->n_ex) {
		a->ex = pool_calloc((size_t)sp->n_ex * 2, sizeof *a->ex);
		if (!a->ex) {
			rc = fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
			goto fail;
		}
		a->n_ex = sp->n_ex;
		for (int i = 0; i < sp->n_ex; i++) {
			const char *in = sp->ex_in[i] ? sp->ex_in[i] : "", *o = sp->ex_out[i] ? sp->ex_out[i] : "";
			a->ex[2 * i] = pool_strndup(in, strlen(in));
			a->ex[2 * i + 1] = pool_strndup(o, strlen(o));
			if (!a->ex[2 * i] || !a->ex[2 * i + 1]) {
				rc = fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
				goto fail;
			}
		}
	}
	mpool_opts po = { .quota = sp->quota, .numa_cpu = -1 };
	char why[400];
	if ((rc = mpool_create(&po, &a->pool, why, sizeof why))) {
		fail(err, errlen, rc, "agent %s: %s", sp->name, why);
		goto fail;
	}
	*out = a;
	return 0;
fail:
	agent_free(a);
	return rc;
}

int node_agent_load(node_agent *a, char *err, size_t errlen)
{
	aidos_tensor ins[NODE_MAX_INPUTS], outs[NODE_MAX_INPUTS];
	const char *ex_in[NODE_MAX_STATE], *ex_out[NODE_MAX_STATE];
	int rc, nin, nout;
	size_t total = 0;
	char why[400];

	if (__atomic_load_n(&a->loaded, __ATOMIC_ACQUIRE))
		return 0;
	if (a->load_rc)   /* failed before: the same answer, not a retry per request */
		return fail(err, errlen, a->load_rc, "agent %s: %s", a->name, a->load_err);
	for (int i = 0; i < a->n_ex; i++) {
		ex_in[i] = a->ex[2 * i];
		ex_out[i] = a->ex[2 * i + 1];
	}
	if ((rc = node_model_get(a->models, a->model_path, &a->model, why, sizeof why))) {
		fail(err, errlen, rc, "%s", why);
		goto fail;
	}
	aidos_model *m = node_model_handle(a->model);
	nin = aidos_model_n_inputs(m);
	nout = aidos_model_n_outputs(m);
	if (nin > NODE_MAX_INPUTS || nout > NODE_MAX_INPUTS) {
		rc = fail(err, errlen, AIDOS_E_UNSUPPORTED, "agent %s: the model has %d inputs and %d outputs (max %d)",
			  a->name, nin, nout, NODE_MAX_INPUTS);
		goto fail;
	}
	for (int i = 0; i < nin; i++)
		aidos_model_input(m, i, &ins[i]);
	for (int i = 0; i < nout; i++)
		aidos_model_output(m, i, &outs[i]);
	if ((rc = node_state_match(ins, nin, outs, nout, ex_in, ex_out, a->n_ex, a->want_stateful, &a->state,
				   &a->n_state, &total, why, sizeof why))) {
		fail(err, errlen, rc, "agent %s (%s): %s", a->name, a->model_path, why);
		goto fail;
	}
	if (a->n_state > 0) {
		/* One 64-byte aligned, zeroed block of its pool (zeros: the
		 * initial state). */
		mpool *old = mpool_set_current(a->pool);
		rc = pool_arena_reserve(&a->ctx_arena, total);
		mpool_set_current(old);
		if (rc) {
			fail(err, errlen, rc, "agent %s: %zu bytes of state %s", a->name, total,
			     rc == AIDOS_E_QUOTA ? "exceed its memory quota" : "cannot be allocated");
			goto fail;
		}
		a->ctx = a->ctx_arena.base;
		a->ctx_len = total;
	}
	if ((rc = aidos_session_create(m, NULL, &a->sess, why, sizeof why))) {
		fail(err, errlen, rc, "agent %s: %s", a->name, why);
		goto fail;
	}
	a->stateful = a->n_state > 0;
	/* Fusable: stateless, and every input has a symbolic first dimension. */
	a->batchable = a->batch_max > 1 && !a->stateful && nin > 0;
	for (int i = 0; a->batchable && i < nin; i++)
		a->batchable = ins[i].rank >= 1 && ins[i].dims[0] < 0;
	__atomic_store_n(&a->loaded, 1, __ATOMIC_RELEASE);   /* every field above before the flag */
	return 0;
fail:
	/* Undo what was made, remember why. */
	aidos_session_destroy(a->sess);
	a->sess = NULL;
	pool_arena_release(&a->ctx_arena);
	a->ctx = NULL;
	a->ctx_len = 0;
	node_state_free(a->state, a->n_state);
	a->state = NULL;
	a->n_state = 0;
	if (a->model)
		node_model_put(a->models, a->model);
	a->model = NULL;
	a->load_rc = rc;
	snprintf(a->load_err, sizeof a->load_err, "%s", err && errlen ? err : aidos_strerror(rc));
	return rc;
}

void node_agent_set_idle(node_agent *a)
{
	pthread_mutex_lock(&a->smu);
	if (a->state_now == AIDOS__AGENT_STATE__AGENT_LOADING)
		a->state_now = AIDOS__AGENT_STATE__AGENT_IDLE;
	pthread_mutex_unlock(&a->smu);
}

int node_agent_create(node_models *ms, xport *x, const node_agent_spec *sp, node_agent **out, char *err,
		      size_t errlen)
{
	node_agent *a;
	int rc = node_agent_create_lazy(ms, x, sp, &a, err, errlen);
	if (rc)
		return rc;
	if ((rc = node_agent_load(a, err, errlen))) {
		agent_free(a);
		*out = NULL;
		return rc;
	}
	node_agent_set_idle(a);
	*out = a;
	return 0;
}

/* ---- the agent table ---- */

void node_table_init(node_table *t)
{
	memset(t, 0, sizeof *t);
	pthread_mutex_init(&t->mu, NULL);
}

void node_table_fini(node_table *t)
{
	for (int i = 0; i < t->n; i++)
		node_agent_unref(t->a[i]);
	pool_free(t->a);
	pthread_mutex_destroy(&t->mu);
	memset(t, 0, sizeof *t);
}

static int table_find(const node_table *t, const char *name, int *at)
{
	int lo = 0, hi = t->n;
	while (lo < hi) {
		int mid = (lo + hi) / 2, r = strcmp(t->a[mid]->name, name);
		if (!r) {
			*at = mid;
			return 1;
		}
		if (r < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*at = lo;
	return 0;
}

int node_table_add(node_table *t, node_agent *a)
{
	int at;
	pthread_mutex_lock(&t->mu);
	if (table_find(t, a->name, &at)) {
		pthread_mutex_unlock(&t->mu);
		return -EEXIST;
	}
	if (t->n == t->cap) {
		int ncap = t->cap ? t->cap * 2 : 16;
		node_agent **p = pool_realloc(t->a, (size_t)ncap * sizeof *p);
		if (!p) {
			pthread_mutex_unlock(&t->mu);
			return AIDOS_E_NOMEM;
		}
		t->a = p;
		t->cap = ncap;
	}
	memmove(&t->a[at + 1], &t->a[at], (size_t)(t->n - at) * sizeof *t->a);
	t->a[at] = a;
	t->n++;
	node_agent_ref(a);
	pthread_mutex_unlock(&t->mu);
	return 0;
}

node_agent *node_table_get(node_table *t, const char *name)
{
	node_agent *a = NULL;
	int at;
	if (!name)
		return NULL;
	pthread_mutex_lock(&t->mu);
	if (table_find(t, name, &at)) {
		a = t->a[at];
		node_agent_ref(a);
	}
	pthread_mutex_unlock(&t->mu);
	return a;
}

node_agent *node_table_remove(node_table *t, const char *name)
{
	node_agent *a = NULL;
	int at;
	if (!name)
		return NULL;
	pthread_mutex_lock(&t->mu);
	if (table_find(t, name, &at)) {
		a = t->a[at];
		memmove(&t->a[at], &t->a[at + 1], (size_t)(t->n - at - 1) * sizeof *t->a);
		t->n--;
	}
	pthread_mutex_unlock(&t->mu);
	return a;
}

int node_table_list(node_table *t, node_agent ***out, int *n)
{
	pthread_mutex_lock(&t->mu);
	node_agent **l = pool_malloc(((size_t)t->n + 1) * sizeof *l);
	if (!l) {
		pthread_mutex_unlock(&t->mu);
		*out = NULL;
		*n = 0;
		return AIDOS_E_NOMEM;
	}
	for (int i = 0; i < t->n; i++) {
		l[i] = t->a[i];
		node_agent_ref(l[i]);
	}
	*n = t->n;
	pthread_mutex_unlock(&t->mu);
	*out = l;
	return 0;
}

int node_table_count(node_table *t)
{
	pthread_mutex_lock(&t->mu);
	int n = t->n;
	pthread_mutex_unlock(&t->mu);
	return n;
}
