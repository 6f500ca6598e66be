/*
 * node/ipc_node.c - every call the local client server (node/ipc.c) makes
 * into the node, in one place: spawn, kill, list, stats, open/close an
 * agent, run one request. Written against today's node API
 * (node_agent_create, node_table_*, aidos_session_run under the agent's
 * mutex, as node.c's serve() does); when the dispatcher's node_submit
 * lands, in_exec becomes a submission and the rest stays. Note for that
 * switch: exec is synchronous today (the client's poller runs the model),
 * and the completion ring has one producer; completions arriving from
 * dispatcher workers must be pushed by one thread per client (or under a
 * per-client lock), and the inputs stay valid only while the client does
 * not reuse its heap tensors, i.e. until the completion.
 *
 * Spawn options the node's agents do not carry yet (quota, default
 * deadline) are kept here, by name. The quota is enforced per request:
 * a request whose plan needs more arena than the agent's quota fails with
 * AIDOS_E_NOMEM (that agent's request only).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "node/ipc.h"
#include "node/node.h"
#include "pools/pools.h"

typedef struct extra {
	char name[NODE_NAME_MAX];
	uint64_t quota, deadline_ms;
} extra;

struct ipc_node {
	node_models *ms;
	node_table *t;
	node_models own_ms;
	node_table own_t;
	int own;
	pthread_mutex_t mu;     /* ex */
	extra *ex;
	int nex, capex;
};

/* What a client's handle holds: a reference on the agent. */
typedef struct ref {
	node_agent *a;
	uint64_t quota;
} ref;

__attribute__((format(printf, 4, 5)))
/* Writes one line into err (when given) and returns code. */
static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
	if (err && errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return code;
}

/* CLOCK_MONOTONIC in ns (vDSO). */
static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The spawn options kept for agent name, or NULL. Under in->mu. */
static extra *find_extra(ipc_node *in, const char *name)
{
	for (int i = 0; i < in->nex; i++)
		if (!strcmp(in->ex[i].name, name))
			return &in->ex[i];
	return NULL;
}

/* ipc_ops.spawn: creates the agent and adds it to the table. Errors:
 * -EEXIST, those of node_agent_create, AIDOS_E_NOMEM. */
static int in_spawn(void *ctx, const aidos_ipc_spawn *sp, char *err, size_t errlen)
{
	ipc_node *in = ctx;
	node_agent *a;
	node_agent_spec spec = { .name = sp->name, .model_path = sp->model, .device = "cpu", .priority = sp->priority };
	node_agent *old = node_table_get(in->t, sp->name);
	if (old) {
		node_agent_unref(old);
		return fail(err, errlen, -EEXIST, "agent '%s' already exists", sp->name);
	}
	int rc = node_agent_create(in->ms, NULL, &spec, &a, err, errlen);
	if (rc)
		return rc;
	pthread_mutex_lock(&in->mu);
	extra *e = find_extra(in, sp->name);
	if (!e && in->nex == in->capex) {
		int cap = in->capex ? 2 * in->capex : 16;
		extra *ne = pool_realloc(in->ex, (size_t)cap * sizeof *ne);
		if (ne) {
			in->ex = ne;
			in->capex = cap;
		}
	}
	if (!e && in->nex < in->capex)
		e = &in->ex[in->nex++];
	if (e) {
		snprintf(e->name, sizeof e->name, "%s", sp->name);
		e->quota = sp->quota_bytes;
		e->deadline_ms = sp->deadline_ms;
	}
	pthread_mutex_unlock(&in->mu);
	if (!e) {
		node_agent_unref(a);
		return fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
	}
	if ((rc = node_table_add(in->t, a))) {
		node_agent_unref(a);
		return fail(err, errlen, rc, "agent '%s': %s", sp->name,
			    rc == -EEXIST ? "already exists" : aidos_strerror(rc));
	}
	node_agent_unref(a);   /* the table holds it */
	return 0;
}

/* ipc_ops.kill: removes the agent (waiting for its request in flight) and
 * marks it dead for handles still open. Errors: AIDOS_E_NOTFOUND. */
static int in_kill(void *ctx, const char *name, char *err, size_t errlen)
{
	ipc_node *in = ctx;
	node_agent *a = node_table_remove(in->t, name);
	if (!a)
		return fail(err, errlen, AIDOS_E_NOTFOUND, "no agent '%s'", name);
	/* Waits for the request in flight; handles still open see it dead. */
	pthread_mutex_lock(&a->mu);
	pthread_mutex_lock(&a->smu);
	a->state_now = AIDOS__AGENT_STATE__AGENT_DEAD;
	pthread_mutex_unlock(&a->smu);
	pthread_mutex_unlock(&a->mu);
	node_agent_unref(a);
	pthread_mutex_lock(&in->mu);
	extra *e = find_extra(in, name);
	if (e)
		*e = in->ex[--in->nex];
	pthread_mutex_unlock(&in->mu);
	return 0;
}

/* The `aidos ps` name of an agent state. */
static const char *state_name(int s)
{
	switch (s) {
	case AIDOS__AGENT_STATE__AGENT_LOADING: return "loading";
	case AIDOS__AGENT_STATE__AGENT_IDLE: return "idle";
	case AIDOS__AGENT_STATE__AGENT_INFER: return "infer";
	case AIDOS__AGENT_STATE__AGENT_MIGRATING: return "sync";
	case AIDOS__AGENT_STATE__AGENT_PENDING: return "suspended";
	case AIDOS__AGENT_STATE__AGENT_DEAD: return "dead";
	default: return "unknown";
	}
}

/* ipc_ops.list: records of agents [start, start + cap) in name order. */
static int in_list(void *ctx, uint32_t start, aidos_ipc_agent *out, int cap, int *n, uint32_t *total, char *err,
		   size_t errlen)
{
	ipc_node *in = ctx;
	node_agent **l;
	int cnt;
	*n = 0;
	if (node_table_list(in->t, &l, &cnt))
		return fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
	*total = (uint32_t)cnt;
	for (int i = 0; i < cnt; i++) {
		node_agent *a = l[i];
		if ((uint32_t)i >= start && *n < cap) {
			aidos_ipc_agent *r = &out[(*n)++];
			memset(r, 0, sizeof *r);
			snprintf(r->name, sizeof r->name, "%s", a->name);
			snprintf(r->model, sizeof r->model, "%s", a->model_path);
			r->priority = a->priority;
			pthread_mutex_lock(&a->smu);
			snprintf(r->state, sizeof r->state, "%s", state_name(a->state_now));
			r->requests = a->requests;
			r->errors = a->errors;
			r->mem_bytes = a->arena_bytes + a->ctx_len;
			r->latency_ns = (uint64_t)(a->latency_ms * 1e6);
			pthread_mutex_unlock(&a->smu);
			pthread_mutex_lock(&in->mu);
			extra *e = find_extra(in, a->name);
			if (e) {
				r->quota_bytes = e->quota;
				r->deadline_ms = e->deadline_ms;
			}
			pthread_mutex_unlock(&in->mu);
		}
		node_agent_unref(a);
	}
	pool_free(l);
	return 0;
}

/* ipc_ops.stats: agents and node heap in use. */
static void in_stats(void *ctx, aidos_ipc_stats *st)
{
	ipc_node *in = ctx;
	pool_stats ps;
	pool_get_stats(&ps);
	st->agents = (uint64_t)node_table_count(in->t);
	st->pool_bytes = ps.bytes_live;
}

/* ipc_ops.open: references the agent and describes its inputs (state
 * inputs excluded: the node feeds them) and outputs. */
static int in_open(void *ctx, const char *name, void **agent, aidos_ipc_io *io, int cap, int *nin, int *nout,
		   char *err, size_t errlen)
{
	ipc_node *in = ctx;
	node_agent *a = node_table_get(in->t, name);
	if (!a)
		return fail(err, errlen, AIDOS_E_NOTFOUND, "no agent '%s'", name);
	aidos_model *m = node_model_handle(a->model);
	int mi = aidos_model_n_inputs(m), mo = aidos_model_n_outputs(m), k = 0;
	for (int i = 0; i < mi; i++) {
		aidos_tensor t;
		aidos_model_input(m, i, &t);
		int st = 0;
		for (int j = 0; j < a->n_state && !st; j++)   /* the node feeds its state itself */
			st = !strcmp(a->state[j].input, t.name);
		if (st)
			continue;
		if (k >= AIDOS_RING_MAX_TENSORS || k >= cap) {
			node_agent_unref(a);
			return fail(err, errlen, AIDOS_E_UNSUPPORTED, "agent '%s' takes more than %d inputs", name,
				    AIDOS_RING_MAX_TENSORS);
		}
		aidos_ipc_io *o = &io[k++];
		memset(o, 0, sizeof *o);
		snprintf(o->name, sizeof o->name, "%s", t.name);
		o->dtype = t.dtype;
		o->rank = t.rank > AIDOS_MAX_RANK ? -1 : t.rank;
		memcpy(o->dims, t.dims, sizeof o->dims);
	}
	*nin = k;
	if (mo > AIDOS_RING_MAX_OUT || k + mo > cap) {
		node_agent_unref(a);
		return fail(err, errlen, AIDOS_E_UNSUPPORTED, "agent '%s' has more than %d outputs", name,
			    AIDOS_RING_MAX_OUT);
	}
	for (int i = 0; i < mo; i++) {
		aidos_tensor t;
		aidos_model_output(m, i, &t);
		aidos_ipc_io *o = &io[k++];
		memset(o, 0, sizeof *o);
		snprintf(o->name, sizeof o->name, "%s", t.name);
		o->dtype = t.dtype;
		o->rank = t.rank > AIDOS_MAX_RANK ? -1 : t.rank;
		memcpy(o->dims, t.dims, sizeof o->dims);
	}
	*nout = mo;
	ref *r = pool_calloc(1, sizeof *r);
	if (!r) {
		node_agent_unref(a);
		return fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
	}
	r->a = a;
	pthread_mutex_lock(&in->mu);
	extra *e = find_extra(in, name);
	r->quota = e ? e->quota : 0;
	pthread_mutex_unlock(&in->mu);
	*agent = r;
	return 0;
}

/* ipc_ops.close: drops open's reference. */
static void in_close(void *ctx, void *agent)
{
	ref *r = agent;
	node_agent_unref(r->a);
	pool_free(r);
}

/* One request, as serve() in node.c runs it, reading the inputs in place
 * from the client's heap and writing the outputs into it. */
static int in_exec(void *ctx, void *agent, ipc_exec *x, char *err, size_t errlen)
{
	ref *r = agent;
	node_agent *a = r->a;
	aidos_tensor in[AIDOS_RING_MAX_TENSORS + NODE_MAX_STATE];
	aidos_tensor outs[AIDOS_RING_MAX_OUT];
	int k = x->nin, rc, nout;

	memcpy(in, x->in, (size_t)k * sizeof in[0]);
	for (int j = 0; j < a->n_state; j++) {
		const node_state *s = &a->state[j];
		aidos_tensor *t = &in[k++];
		memset(t, 0, sizeof *t);
		t->name = s->input;
		t->dtype = s->dtype;
		t->rank = s->rank;
		memcpy(t->dims, s->dims, sizeof t->dims);
		t->data = a->ctx + s->offset;
	}
	pthread_mutex_lock(&a->mu);
	pthread_mutex_lock(&a->smu);
	int frozen = a->frozen, dead = a->state_now == AIDOS__AGENT_STATE__AGENT_DEAD;
	if (!frozen && !dead)
		a->state_now = AIDOS__AGENT_STATE__AGENT_INFER;
	pthread_mutex_unlock(&a->smu);
	if (frozen || dead) {
		pthread_mutex_unlock(&a->mu);
		return fail(err, errlen, AIDOS_E_NOTFOUND, "agent '%s' is %s", a->name,
			    frozen ? "migrating away" : "gone (killed)");
	}
	uint64_t t0 = mono_ns();
	rc = aidos_session_run(a->sess, k, in);
	x->exec_ns = mono_ns() - t0;
	if (rc) {
		rc = rc == AIDOS_E_NOTFOUND || rc == AIDOS_E_SHAPE ? AIDOS_E_INVALID : rc;
		fail(err, errlen, rc, "agent %s: %s", a->name, aidos_session_errmsg(a->sess));
		goto done;
	}
	aidos_plan_stats ps;
	size_t arena = aidos_session_stats(a->sess, &ps) ? 0 : ps.arena_bytes;
	if (r->quota && arena + a->ctx_len > r->quota) {
		rc = fail(err, errlen, AIDOS_E_NOMEM, "agent %s: needs %zu bytes, its quota is %" PRIu64, a->name,
			  arena + a->ctx_len, r->quota);
		goto done;
	}
	nout = aidos_model_n_outputs(node_model_handle(a->model));
	if (nout > AIDOS_RING_MAX_OUT) {
		rc = fail(err, errlen, AIDOS_E_UNSUPPORTED, "agent %s: %d outputs", a->name, nout);
		goto done;
	}
	for (int i = 0; i < nout; i++)
		aidos_session_output(a->sess, i, &outs[i]);
	for (int j = 0; j < a->n_state; j++) {   /* state outputs must fit the state */
		const node_state *s = &a->state[j];
		const aidos_tensor *o = &outs[s->out_idx];
		int same = o->dtype == s->dtype && o->rank == s->rank;
		for (int d = 0; same && d < s->rank; d++)
			same = o->dims[d] == s->dims[d];
		if (!same) {
			rc = fail(err, errlen, AIDOS_E_INVALID, "agent %s: state output '%s' does not fit its state",
				  a->name, s->output);
			goto done;
		}
	}
	if ((rc = ipc_out_write(x, outs, nout, err, errlen)))
		goto done;
	pthread_mutex_lock(&a->smu);
	for (int j = 0; j < a->n_state; j++)   /* memmove: an output may alias its input */
		memmove(a->ctx + a->state[j].offset, outs[a->state[j].out_idx].data, a->state[j].bytes);
	if (a->n_state)
		a->version++;
	a->requests++;
	double ms = (double)x->exec_ns / 1e6;
	a->latency_ms = a->requests == 1 ? ms : 0.9 * a->latency_ms + 0.1 * ms;
	a->arena_bytes = arena;
	a->state_now = AIDOS__AGENT_STATE__AGENT_IDLE;
	pthread_mutex_unlock(&a->smu);
	pthread_mutex_unlock(&a->mu);
	return 0;
done:
	pthread_mutex_lock(&a->smu);
	a->errors++;
	a->state_now = AIDOS__AGENT_STATE__AGENT_IDLE;
	pthread_mutex_unlock(&a->smu);
	pthread_mutex_unlock(&a->mu);
	return rc;
}

int ipc_node_create(struct node_models *ms, struct node_table *t, ipc_node **out, char *err, size_t errlen)
{
	ipc_node *in = pool_calloc(1, sizeof *in);
	if (!in)
		return fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
	pthread_mutex_init(&in->mu, NULL);
	if (!ms || !t) {
		node_models_init(&in->own_ms);
		node_table_init(&in->own_t);
		in->ms = &in->own_ms;
		in->t = &in->own_t;
		in->own = 1;
	} else {
		in->ms = ms;
		in->t = t;
	}
	*out = in;
	return 0;
}

void ipc_node_destroy(ipc_node *in)
{
	if (!in)
		return;
	if (in->own) {
		node_table_fini(&in->own_t);
		node_models_fini(&in->own_ms);
	}
	pthread_mutex_destroy(&in->mu);
	pool_free(in->ex);
	pool_free(in);
}

void ipc_node_ops(ipc_node *in, ipc_ops *ops)
{
	*ops = (ipc_ops){ .ctx = in, .spawn = in_spawn, .kill = in_kill, .list = in_list, .stats = in_stats,
			  .open = in_open, .close = in_close, .exec = in_exec };
}
