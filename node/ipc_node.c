/*
 * node/ipc_node.c - every call the local client server (node/ipc.c) makes
 * into the node, through the node-local API (node/node.h) and the
 * dispatcher (node/dispatch.h): agents spawned over the socket get their
 * pool and quota, deadline, priority and a store record, and are those
 * the coordinator's heartbeat reports, like any other.
 *
 * A request. The client's poller (node/ipc.c) checks the descriptor, then
 * calls in_exec, which fills a node_job on the poller's own stack (one
 * poller per client runs one request at a time: the job is that client's
 * slot, no allocation) and submits it with node_submit_here, with the
 * agent's priority and the descriptor's deadline (0: the agent's). A
 * refusal (AIDOS_E_BUSY, AIDOS_E_DEADLINE, AIDOS_E_NOTFOUND) comes back at
 * once. When a worker would start it at once, the poller runs it itself in
 * that worker's place (no hand-off: the round trip costs what the rings
 * cost); otherwise it is queued, a dispatcher worker runs the model, and
 * either way on_done() is called, which writes the
 * outputs into the client's heap (ipc_out_write: they are borrowed from
 * the agent's arena only until done() returns), records rc and message
 * (AIDOS_E_QUOTA when the agent's pool refused), and releases the poller.
 *
 * Completions. The completion ring keeps ONE producer, the client's poller:
 * done() never touches the ring; the poller pushes the CQE when in_exec
 * returns. Hand-off protocol on the word `st` (private futex):
 *   0 pending -> 1 done (done(), atomic exchange, release)
 *   0 pending -> 2 sleeping (poller, CAS, after spinning wait_ns)
 *   done() seeing 2 wakes the futex; the poller sleeps only while st == 2.
 * After the exchange done() touches nothing of the poller's (its frame may
 * be gone: a wake of a stale address is harmless, waiters loop).
 * Steady state: no allocation; no system call for a request run on the
 * poller's thread (the common case on an idle node) nor for a null request
 * (ping, answered in node/ipc.c); a queued one costs a futex wait/wake when
 * it outlasts the poller's spin (AIDOS_IPC_WAIT_SPIN_US, default 50 us:
 * pollers of queued requests must not take the cores the workers need),
 * and one whose own run is estimated at over 8 such spins sleeps at once.
 */
#include <errno.h>
#include <inttypes.h>
#include <linux/futex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "node/dispatch.h"
#include "node/ipc.h"
#include "node/node.h"
#include "pools/pools.h"
#include "node/util.h"

#define WAIT_SPIN_US_DEFAULT 50

struct ipc_node {
	node *n;
	uint64_t wait_ns;      /* the poller's spin for its request before sleeping */
};

/* ipc_ops.spawn: node_agent_spawn_local with the client's options.
 * Errors: -EEXIST (the name is taken), those of node_agent_spawn_local. */
static int in_spawn(void *ctx, const aidos_ipc_spawn *sp, char *err, size_t errlen)
{
	ipc_node *in = ctx;
	node_agent *old = node_agent_find(in->n, sp->name);
	if (old) {
		node_agent_unref(old);
		return fail(err, errlen, -EEXIST, "agent '%s' already exists", sp->name);
	}
	node_spawn_spec s = { .name = sp->name, .model_path = sp->model, .device = "cpu", .priority = sp->priority,
			      .quota = sp->quota_bytes, .deadline_ms = (uint32_t)sp->deadline_ms };
	return node_agent_spawn_local(in->n, &s, err, errlen);
}

/* ipc_ops.kill: node_agent_kill_local (handles still open see it gone).
 * Errors: AIDOS_E_NOTFOUND. */
static int in_kill(void *ctx, const char *name, char *err, size_t errlen)
{
	ipc_node *in = ctx;
	return node_agent_kill_local(in->n, name, err, errlen);
}

/* The `aidos ps` name of an agent state. */
static const char *state_name(int s)
{
	switch (s) {
	case NODE_AGENT_LOADING: return "loading";
	case NODE_AGENT_IDLE: return "idle";
	case NODE_AGENT_INFER: return "infer";
	case NODE_AGENT_SYNC: return "sync";
	case NODE_AGENT_SUSPENDED: return "suspended";
	case NODE_AGENT_DEAD: return "dead";
	default: return "unknown";
	}
}

/* ipc_ops.list: records of agents [start, start + cap) in name order, from
 * node_agents_list: mem_bytes is the pool's bytes in use, quota_bytes its
 * quota. Errors: AIDOS_E_NOMEM. */
static int in_list(void *ctx, uint32_t start, aidos_ipc_agent *out, int cap, int *n, uint32_t *total, char *err,
		   size_t errlen)
{
	ipc_node *in = ctx;
	node_agent_stat *l;
	int cnt;
	*n = 0;
	if (node_agents_list(in->n, &l, &cnt))
		return fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
	*total = (uint32_t)cnt;
	for (int i = (int)start; i < cnt && *n < cap; i++) {
		const node_agent_stat *a = &l[i];
		aidos_ipc_agent *r = &out[(*n)++];
		memset(r, 0, sizeof *r);
		snprintf(r->name, sizeof r->name, "%s", a->name);
		snprintf(r->model, sizeof r->model, "%s", a->model);
		snprintf(r->state, sizeof r->state, "%s", state_name(a->state));
		r->priority = a->priority;
		r->quota_bytes = a->pool.quota;
		r->deadline_ms = a->deadline_ms;
		r->requests = a->requests;
		r->errors = a->errors;
		r->mem_bytes = a->pool.used;
		r->latency_ns = (uint64_t)(a->latency_ms * 1e6);
	}
	pool_free(l);
	return 0;
}

/* ipc_ops.stats: agents and node heap in use (node_stats). */
static void in_stats(void *ctx, aidos_ipc_stats *st)
{
	ipc_node *in = ctx;
	node_stat ns;
	node_stats(in->n, &ns);
	st->agents = (uint64_t)ns.agents;
	st->pool_bytes = ns.heap_live;
}

/* Fills o from t. */
static void io_fill(aidos_ipc_io *o, const aidos_tensor *t)
{
	memset(o, 0, sizeof *o);
	snprintf(o->name, sizeof o->name, "%s", t->name);
	o->dtype = t->dtype;
	o->rank = t->rank > AIDOS_MAX_RANK ? -1 : t->rank;
	memcpy(o->dims, t->dims, sizeof o->dims);
}

/* ipc_ops.open: references the agent (loading it when lazy) and describes
 * its inputs (state inputs excluded: the node feeds them) and outputs. */
static int in_open(void *ctx, const char *name, void **agent, aidos_ipc_io *io, int cap, int *nin, int *nout,
		   char *err, size_t errlen)
{
	ipc_node *in = ctx;
	node_agent *a = node_agent_find(in->n, name);
	int rc;
	if (!a)
		return fail(err, errlen, AIDOS_E_NOTFOUND, "no agent '%s'", name);
	if ((rc = node_agent_ready(in->n, a, err, errlen))) {
		node_agent_unref(a);
		return rc;
	}
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
		io_fill(&io[k++], &t);
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
		io_fill(&io[k++], &t);
	}
	*nout = mo;
	*agent = a;
	return 0;
}

/* ipc_ops.close: drops open's reference. */
static void in_close(void *ctx, void *agent)
{
	node_agent_unref(agent);
}

/* One request in flight: the poller's, on its stack. */
typedef struct wait_slot {
	node_job j;
	aidos_tensor out[AIDOS_RING_MAX_OUT];
	ipc_exec *x;
	char *err;
	size_t errlen;
	int rc;
	uint32_t st;           /* 0 pending, 1 done, 2 the poller sleeps */
} wait_slot;

/* node_job.done, on a dispatcher worker: writes the outputs into the
 * client's heap (or keeps a stateful agent's state when they do not fit),
 * then releases the poller. Never blocks, no allocation. */
static void on_done(node_job *j, int rc, const char *msg)
{
	wait_slot *w = j->user;
	if (!rc) {
		rc = ipc_out_write(w->x, j->out, j->nout, w->err, w->errlen);
		if (rc)
			node_job_reply_failed(j);
	} else {
		rc = rc == AIDOS_E_SHAPE ? AIDOS_E_INVALID : rc;
		snprintf(w->err, w->errlen, "%s", msg && *msg ? msg : aidos_strerror(rc));
	}
	w->x->exec_ns = (uint64_t)(j->exec_ms * 1e6);
	w->rc = rc;
	/* release: the outputs, rc and message before the poller sees 1 */
	if (__atomic_exchange_n(&w->st, 1, __ATOMIC_ACQ_REL) == 2)
		syscall(SYS_futex, &w->st, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* ipc_ops.exec: submits the request to the dispatcher and waits for its
 * done(): spins wait_ns, then sleeps on the slot's futex. Errors: those of
 * node_submit (refused now), then of the run (done()'s rc). */
static int in_exec(void *ctx, void *agent, ipc_exec *x, char *err, size_t errlen)
{
	ipc_node *in = ctx;
	wait_slot w;
	w.j = (node_job){ .agent = agent, .in = x->in, .nin = x->nin, .out = w.out, .nout = AIDOS_RING_MAX_OUT,
			  .deadline_ns = x->deadline_ns, .priority = NODE_PRIO_AGENT, .done = on_done, .user = &w };
	w.x = x;
	w.err = err;
	w.errlen = errlen;
	w.rc = 0;
	w.st = 0;
	w.j.top_class = 0;
	int rc = node_submit_here(in->n, &w.j, err, errlen);
	x->top_class = rc >= 0 && w.j.top_class;
	if (rc == 1)           /* ran on this thread: done() has returned */
		return w.rc;
	if (rc)
		return rc;
	/* Queued: it waits at least for its own run. When that run alone is
	 * far longer than the spin, sleep at once (est_ns was set by the
	 * submit; workers only read it). */
	uint64_t t0 = 0;
	unsigned k = 0;
	int far = w.j.dr.est_ns > 8 * in->wait_ns;
	while (!far && !__atomic_load_n(&w.st, __ATOMIC_ACQUIRE)) {
		cpu_relax();
		if ((++k & 63) == 0) {
			uint64_t now = mono_ns();
			if (!t0)
				t0 = now;
			else if (now - t0 >= in->wait_ns)
				break;
		}
	}
	uint32_t zero = 0;
	if (__atomic_compare_exchange_n(&w.st, &zero, 2, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		while (__atomic_load_n(&w.st, __ATOMIC_ACQUIRE) == 2)
			syscall(SYS_futex, &w.st, FUTEX_WAIT_PRIVATE, 2, NULL, NULL, 0);
	return w.rc;
}

int ipc_node_create(struct node *n, ipc_node **out, char *err, size_t errlen)
{
	if (!n)
		return fail(err, errlen, AIDOS_E_INVALID, "ipc_node_create: no node");
	ipc_node *in = pool_calloc(1, sizeof *in);
	if (!in)
		return fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
	in->n = n;
	long us = WAIT_SPIN_US_DEFAULT;
	const char *e = getenv("AIDOS_IPC_WAIT_SPIN_US");
	if (e && *e) {
		char *end;
		long v = strtol(e, &end, 10);
		if (!*end && v >= 0 && v <= 1000000)
			us = v;
	}
	in->wait_ns = (uint64_t)us * 1000;
	*out = in;
	return 0;
}

void ipc_node_destroy(ipc_node *in)
{
	pool_free(in);
}

void ipc_node_ops(ipc_node *in, ipc_ops *ops)
{
	*ops = (ipc_ops){ .ctx = in, .spawn = in_spawn, .kill = in_kill, .list = in_list, .stats = in_stats,
			  .open = in_open, .close = in_close, .exec = in_exec };
}
