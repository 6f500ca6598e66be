/*
 * sched/dispatch.h - the node's dispatch policy as pure functions: which
 * queued request runs next on a device, whether a new one is admitted, which
 * queued requests run together, and the latency estimate they all use. No
 * clock, no lock, no allocation: node/worker.c owns the queues, threads and
 * time; tests/test_dispatch.c drives these in simulation.
 *
 * Order (disp_before), for the requests queued on one device:
 *   1. higher priority first (strict: a priority class never waits behind
 *      a lower one, whatever their estimates);
 *   2. within a priority, earliest deadline first (EDF, Liu & Layland
 *      1973); a request without a deadline counts as an infinite one;
 *   3. then the brief's score, priority x 1/latency_est: within a class
 *      the request expected to finish soonest (shortest job first, which
 *      minimises the mean wait); an unknown estimate (0) goes first, so
 *      it gets measured;
 *   4. then arrival order.
 * Step 3 can starve a slow agent behind a stream of fast ones of the same
 * priority without deadlines; a deadline bounds it.
 *
 * Reserve (disp_may_start): with two or more workers, one stays free for
 * the top priority class, since a run is never preempted: a high-priority
 * request then waits for no low-priority run.
 *
 * Admission (disp_admit): a request with a deadline is refused at once with
 * AIDOS_E_DEADLINE when now + (the estimated work that would run before it
 * + the work running now) / workers + its own estimate > its deadline; a
 * full queue refuses with AIDOS_E_BUSY. Never a silent drop.
 *
 * Batching (disp_group): the chosen request and the same agent's requests
 * right behind it in dispatch order (up to a maximum) run as one group:
 * one pick, the plan and weights hot in cache, and the order kept; node/worker.c fuses a
 * batchable agent's group along dimension 0 (docs/architecture.md says when).
 *
 *   disp_queue q;  disp_req *slots[64];
 *   disp_queue_init(&q, slots, 64);
 *   if ((rc = disp_admit(&q, r, now, running, workers, err, sizeof err)) == 0)
 *       disp_insert(&q, r);
 *   int i = disp_pick(&q, busy_fn, ctx);  ... disp_take(&q, i) ...
 */
#ifndef AIDOS_SCHED_DISPATCH_H
#define AIDOS_SCHED_DISPATCH_H

#include <stddef.h>
#include <stdint.h>

/* One queued request as the policy sees it (embedded in the node's job). */
typedef struct disp_req {
	uint64_t deadline_ns;   /* absolute (CLOCK_MONOTONIC), 0: none */
	uint64_t est_ns;        /* latency estimate of this agent on this device, 0: unknown */
	uint64_t seq;           /* arrival order, set by disp_insert */
	int priority;           /* higher runs first */
	uint32_t agent;         /* who: one request of an agent runs at a time */
} disp_req;

/* A device's run queue: `n` requests sorted by disp_before in q[0..n). */
typedef struct disp_queue {
	disp_req **q;
	int n, cap;
	uint64_t next_seq;
	uint64_t work_ns;       /* sum of est_ns of the queued requests */
} disp_queue;

/* q over caller storage slots[cap]. */
void disp_queue_init(disp_queue *q, disp_req **slots, int cap);

/* 1 if a runs before b (the order above). */
int disp_before(const disp_req *a, const disp_req *b);

/* The brief's score: priority x 1/latency_est (est 0: taken as 1 ns). */
double disp_score(int priority, uint64_t est_ns);

/* Admits r (not inserted): 0, AIDOS_E_BUSY (queue full) or
 * AIDOS_E_DEADLINE, with one line in err naming the figures. running_ns:
 * the estimated work still running on the device's workers; workers >= 1. */
int disp_admit(const disp_queue *q, const disp_req *r, uint64_t now_ns, uint64_t running_ns, int workers,
	       char *err, size_t errlen);

/* Inserts r in order (sets r->seq). Errors: AIDOS_E_BUSY (full). */
int disp_insert(disp_queue *q, disp_req *r);

/* Index of the first request whose agent is not busy (busy(r, ctx) != 0),
 * or -1. busy may be NULL (nothing busy). */
int disp_pick(const disp_queue *q, int (*busy)(const disp_req *r, void *ctx), void *ctx);

/* Removes and returns q->q[i]. */
disp_req *disp_take(disp_queue *q, int i);

/* Takes the group that starts at index i: q->q[i] and the requests of the
 * same agent that follow it in dispatch order before any runnable request
 * of another agent (busy() as for disp_pick), up to max in all, into
 * out[]. So a group never runs a request ahead of one that the order puts
 * first. Returns the count (>= 1). */
int disp_group(disp_queue *q, int i, disp_req **out, int max, int (*busy)(const disp_req *r, void *ctx),
	       void *ctx);

/* Removes r wherever it is; returns 1 if it was queued. */
int disp_remove(disp_queue *q, const disp_req *r);

/* Whether a request of `priority` may start on a device whose workers run
 * `running` requests: the last `reserve` idle workers are kept for the
 * top priority class (`top`, the highest priority submitted there), so a
 * top-class request never waits for lower-priority work to finish (runs
 * are never preempted). Lower classes share workers - reserve. */
int disp_may_start(int priority, int top, uint32_t running, int workers, int reserve);

/* The online latency estimate: an exponentially weighted moving average
 * with weight 1/8 on the new sample (the first sample sets it). */
uint64_t disp_est_update(uint64_t est_ns, uint64_t sample_ns);

#endif
