/*
 * node/dispatch.h - submitting requests to the node's dispatcher
 * (node/worker.c): per-device run queues ordered by sched/dispatch.h's
 * policy, worker threads pinned to cores that run agents' sessions.
 *
 * Every request path goes through node_submit: the shared-memory rings
 * (node/ipc*.c), the UCX data plane and Node.Infer (node.c serve()). A job
 * is the submitter's memory (embedded in its slot: no allocation per
 * request); the node owns it from a successful node_submit until done()
 * returns, and calls done() exactly once, on a worker thread, with:
 *   rc 0: j->out[0..j->nout) are the outputs, borrowed until done()
 *         returns (they live in the agent's arena; copy or pack them there);
 *   rc < 0: err is one line; j->nout is 0.
 * done() must not block on another request of the node. If it cannot use
 * the outputs it calls node_job_reply_failed(j): a stateful agent then
 * keeps its state as it was, so the client can send the same request
 * again. Once done() returns the node reads nothing more from the job: the
 * submitter may reuse it at once.
 *
 *   node_job j = { .agent = a, .in = ins, .nin = 2, .out = outs, .nout = 4,
 *                  .priority = NODE_PRIO_AGENT, .done = on_done, .user = slot };
 *   if ((rc = node_submit(n, &j, err, sizeof err)))   // refused now: BUSY, DEADLINE...
 *       reply_error(slot, rc, err);
 *
 * Cost per request in steady state: one spin lock taken twice (insert,
 * pick), a futex wake only when a worker sleeps; no allocation, no other
 * system call.
 */
#ifndef AIDOS_NODE_DISPATCH_H
#define AIDOS_NODE_DISPATCH_H

#include <limits.h>
#include <stdint.h>
#include "aidos/aidos.h"
#include "sched/dispatch.h"

typedef struct node node;
struct node_agent;

#define NODE_PRIO_AGENT INT_MIN    /* node_job.priority: the agent's own */
#define NODE_QUEUE_MAX 1024        /* requests waiting per device; beyond: AIDOS_E_BUSY */
#define NODE_GROUP_MAX 8           /* requests of one agent taken in one pick */

typedef struct node_job node_job;
struct node_job {
	struct node_agent *agent;  /* referenced by the submitter until done() returns */
	aidos_tensor *in;          /* [nin] the request's inputs (never the agent's state), read in place */
	int nin;
	aidos_tensor *out;         /* [nout] in: capacity; on done(rc 0): the outputs, nout their count */
	int nout;
	uint64_t deadline_ns;      /* CLOCK_MONOTONIC absolute; 0: the agent's deadline_ms, if any */
	int priority;              /* NODE_PRIO_AGENT: the agent's */
	void (*done)(node_job *j, int rc, const char *err);
	void *user;                /* the submitter's */

	double exec_ms;            /* run time (set before done) */
	uint64_t queued_ns;        /* time spent queued (set before done) */
	int top_class;             /* set by a successful submit: 1 when j is of its device's top class */

	/* the node's, not the submitter's */
	disp_req dr;
	uint64_t t_submit;
	uint32_t *waiter;          /* node_run's completion word */
};

/* Queues j on its agent's device. Returns 0 (done() will be called), or
 * refuses now, without calling done(): AIDOS_E_INVALID (no agent, bad
 * counts, an input named as the agent's state), AIDOS_E_NOTFOUND (the
 * agent is dead or frozen for migration), AIDOS_E_BUSY (queue full, agent
 * suspended, node stopping), AIDOS_E_DEADLINE (admission: the deadline
 * cannot be met); err gets one line. Thread-safe. */
int node_submit(node *n, node_job *j, char *err, size_t errlen);

/* node_submit for a submitter that waits for its own request (the
 * socket server's pollers): when a worker would start j at once (nothing
 * of j's priority or above queued, the agent idle, an idle worker's place free for j's class: a
 * non-reserved one, or the reserved one for the top class unless it runs
 * SCHED_FIFO by --rt-prio), j runs on the
 * calling thread in that worker's place (the workers leave it free
 * meanwhile, so no more requests run at once than there are workers) and
 * node_submit_here returns 1 after done() has returned: no hand-off, no
 * wake-up. Otherwise as node_submit: 0 (queued; done() comes on a worker)
 * or a refusal. Priority, deadline admission, quota and pool are the
 * same. Thread-safe; never call it from done(). */
int node_submit_here(node *n, node_job *j, char *err, size_t errlen);

/* node_submit, then waits for done() to have returned (spinning briefly,
 * then on a futex). Returns the submit's error, or the rc passed to done().
 * err gets done()'s message only when the caller's done copies it; the
 * submit's message otherwise. Thread-safe; never call it from done(). */
int node_run(node *n, node_job *j, char *err, size_t errlen);

/* From inside done(), on the worker: the reply could not be made, keep
 * the agent's state as it was. */
void node_job_reply_failed(node_job *j);

/* Dispatcher counters (node_stats). */
typedef struct node_disp_counts {
	uint64_t submitted, completed, failed;
	uint64_t rejected_deadline, rejected_busy, expired, quota_errors;
	uint32_t queued, running;
	int workers;
	uint64_t idle_sleeps;      /* times a worker went to sleep on the futex */
	uint64_t top_kicks;        /* times the reserved (top-class) worker was signalled */
} node_disp_counts;

#endif
