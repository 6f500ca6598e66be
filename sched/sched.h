/*
 * sched/sched.h - scheduling policy: pure functions, no I/O, no allocation,
 * testable in simulation. The coordinator calls sched_rank() with its view of
 * the cluster; the simulator (sched/sim.h, `make sim`) calls the very same
 * function. The node-local dispatcher lives in sched/dispatch.h.
 *
 * The placement score of a candidate node is a predicted cost in
 * milliseconds per request of the agent, lower is better; each term is kept
 * apart in a sched_score so `aidosctl explain` can show why:
 *
 *   latency  est_ms[dev] * node speed / (1 - U)        (service + queueing)
 *            dev: the node's GPU when the agent can use one and it fits, else
 *            its CPU; U: utilisation of that device by agents of the same or
 *            a higher priority class (the node dispatches by priority, so
 *            lower classes do not delay this agent), plus the agent's own
 *            expected load; capped at SCHED_U_CAP.
 *   queue    queue_len * est_ms / servers, scaled by the share of the node's
 *            load that is of the agent's class or higher (measured backlog)
 *   gpu      w_gpu_ms when the agent could use a GPU but would run on a CPU
 *            (GPU first)
 *   move     (context bytes / link bandwidth + rtt) / amortize_requests when
 *            the agent's context lives on another node (context locality)
 *   memory   w_mem_ms * (used after placing / pool size)^2 (pool pressure)
 *   spread   w_spread_ms per replica of the same group already on the node
 *
 * Hard constraints, checked before any score: ready, not excluded, the pin
 * (an operator pin overrides every score but not fit), the device when the
 * agent needs a GPU, and free pool memory (pool free, already net of the
 * node's quotas). Ties break on queue length, agents, free memory, name, so
 * the choice is deterministic whatever the order of the nodes.
 *
 *   sched_params p;  sched_params_default(&p);
 *   int best[3];  char why[256];
 *   int k = sched_rank(nodes, n, &agent, &p, NULL, best, 3, why, sizeof why);
 *   if (k == 0) puts(why);          // which constraint ruled out every node
 *
 * Cost: one pass over the nodes, O(n * (1 + replicas)) flops, no allocation:
 * about 10 us for 1,000 nodes. Per-node figures (util, queue) are aggregates
 * the caller keeps up to date incrementally.
 */
#ifndef AIDOS_SCHED_H
#define AIDOS_SCHED_H

#include <stddef.h>
#include <stdint.h>

enum { SCHED_DEV_CPU = 0, SCHED_DEV_GPU = 1, SCHED_DEV_N = 2 };
/* Priority classes: 0 low (priority 0), 1 normal (1..99), 2 high (>= 100). */
enum { SCHED_PRIO_LOW = 0, SCHED_PRIO_NORMAL = 1, SCHED_PRIO_HIGH = 2, SCHED_PRIO_N = 3 };
#define SCHED_PRIO_HIGH_MIN 100
#define SCHED_U_CAP 0.95    /* utilisation at which the queueing factor saturates (x20) */

/* What the policy knows of one node. Zero means unknown for every optional
 * figure (marked opt): the term it feeds is then left out. */
typedef struct sched_node {
	const char *name;
	int ready;             /* accepting agents (not dead, not draining) */
	int has_gpu;
	uint64_t mem_free;     /* bytes of pool free for new agents (net of quotas) */
	uint32_t queue_len;    /* requests waiting (last report) */
	uint32_t n_agents;
	/* opt: the AI-aware view */
	uint64_t mem_total;    /* pool size: memory pressure term */
	uint64_t gpu_mem_free; /* bytes of GPU memory free (0 with has_gpu: as mem_free) */
	uint32_t servers[SCHED_DEV_N];  /* CPU workers, GPUs (0: 1) */
	float speed[SCHED_DEV_N];       /* measured / estimated latency on this node (0: 1) */
	float util[SCHED_DEV_N][SCHED_PRIO_N]; /* predicted utilisation per device and class */
	float link_gbps;       /* measured bandwidth of the node's link (0: 10) */
	float rtt_ms;          /* measured round trip to the node (0: 0.1) */
} sched_node;

/* What an agent needs. */
typedef struct sched_agent {
	const char *name;
	uint64_t mem_bytes;    /* estimate: weights + arena + state */
	int needs_gpu;         /* must run on a GPU (device "cuda") */
	int priority;          /* 0..1000; class by sched_prio_class() */
	const char *pinned;    /* operator pin: only this node, NULL for any */
	const char *exclude;   /* never this node (migration source, dead node), NULL */
	/* opt: the AI-aware view */
	int gpu_ok;            /* the model can run on a GPU: GPU first */
	double est_ms[SCHED_DEV_N]; /* per-request latency of its model per device (0: prior) */
	double rate;           /* expected requests per second (0: SCHED_RATE_PRIOR) */
	int placed;            /* runs on nodes[cur_node] now (its load is in that node's util) */
	int cur_node;
	int ctx_node;          /* index of the node holding its context, when ctx_bytes > 0 */
	uint64_t ctx_bytes;    /* size of that context (0: none to move) */
	const int *replica_nodes; /* indices of nodes holding replicas of its group */
	int n_replicas;
} sched_agent;

#define SCHED_RATE_PRIOR 1.0

/* Weights and priors (sched_params_default). */
typedef struct sched_params {
	double w_gpu_ms;           /* GPU-first penalty for a CPU placement of a GPU-capable agent */
	double w_mem_ms;           /* pool pressure weight */
	double w_spread_ms;        /* per replica of the same group on the node */
	double amortize_requests;  /* a context move is paid once over this many requests */
	double prior_cpu_ms_per_gib; /* latency prior from model size when no estimate */
	double prior_gpu_ms_per_gib;
} sched_params;

/* One candidate's score and its terms (ms per request). idx: the node's
 * index; total < 0 never: an infeasible node has feasible = 0 and `why`. */
typedef struct sched_score {
	int idx;
	int feasible;
	int dev;               /* SCHED_DEV_* it would run on */
	double total;
	double latency, queue, gpu, move, memory, spread;
	const char *why;       /* static, for an infeasible node: "not ready", ... */
} sched_score;

/* Fills p with the defaults. */
void sched_params_default(sched_params *p);

/* Priority class of a priority (0..1000). */
int sched_prio_class(int priority);

/* The agent's per-request latency on device dev of a node of speed 1: its
 * estimate, else the prior from its size. */
double sched_est_ms(const sched_agent *a, const sched_params *p, int dev);

/* Scores node i for agent a into *s (pure; no allocation). Returns 1 when
 * the node is feasible, 0 when not (s->why says which constraint). A pinned
 * agent is infeasible on every other node. */
int sched_score_node(const sched_node *nodes, int i, const sched_agent *a, const sched_params *p,
		     sched_score *s);

/* Ranks nodes[0..n) for agent a: fills best[0..k) with the indices of the
 * k best feasible nodes, best first, and returns how many (0..k). scores, if
 * not NULL, gets n entries (scores[i] for node i, feasible or not) for
 * `explain`. When none is feasible, why (if not NULL) gets one line naming
 * the constraint that ruled out every node. p NULL: defaults. Pure,
 * deterministic (ties: queue length, agents, free memory, name),
 * thread-safe, no allocation. */
int sched_rank(const sched_node *nodes, int n, const sched_agent *a, const sched_params *p,
	       sched_score *scores, int *best, int k, char *why, size_t whylen);

/* sched_rank with k = 1 and default parameters: the index, or -1 with why. */
int sched_place(const sched_node *nodes, int n, const sched_agent *a, char *why, size_t whylen);

/* The least-loaded baseline (the policy before issue 6; the simulator's
 * least_loaded): same hard constraints, then lexicographic queue length,
 * agents, free memory, name. Returns the index or -1. */
int sched_place_least_loaded(const sched_node *nodes, int n, const sched_agent *a);

/* Rebalancing, hysteresis included (the coordinator's and the simulator's).
 * A node is overloaded when its measured queue wait or latency exceeds its
 * estimate by `over_ratio` for `sustain` consecutive checks; then its
 * lowest-priority movable agent moves if the best other node beats staying
 * by at least min_gain (relative) and the agent's cool-down has passed. */
typedef struct sched_rebalance_params {
	double over_ratio;     /* measured / estimated latency that counts as overloaded (2.0) */
	int sustain;           /* consecutive overloaded checks before acting (3) */
	double min_gain;       /* the move must cut the agent's predicted cost by this fraction (0.3) */
	double cooldown_s;     /* an agent moved is not moved again within this (60) */
	double util_high;      /* predicted utilisation that counts as overloaded too (0.9) */
	double room_gain;      /* min_gain instead when the move makes room for a higher class (0) */
	double room_ratio;     /* a class's tail latency / its estimate that counts as needing room (1.5) */
	double room_wait_p;    /* chance of waiting behind lower classes that counts (0.05) */
} sched_rebalance_params;

void sched_rebalance_params_default(sched_rebalance_params *r);

/* One overload check of a node: measured_ms is its mean request latency (or
 * queue wait + service) over the last window, est_ms what its estimates
 * predict, util its measured device utilisation. Advances *streak (the
 * consecutive overloaded checks; reset when not) and returns 1 when the
 * node has been overloaded for r->sustain checks in a row. Pure. */
int sched_overloaded(const sched_rebalance_params *r, double measured_ms, double est_ms, double util, int *streak);

/* One "needs room" check of a node for its highest busy priority class:
 * a request of that class (estimate hi_est_ms) that finds all `workers`
 * of its device busy with lower classes (their utilisation low_util,
 * longest estimate low_est_ms) waits for one of their requests to finish,
 * since a node's dispatcher never preempts. That happens with chance
 * low_util^workers (0 when `reserved`: the node keeps a worker for this
 * class). The class needs room when that chance is at least
 * r->room_wait_p and such a wait puts its tail latency (hi_est_ms +
 * low_est_ms) above r->room_ratio x its estimate. Advances *streak like
 * sched_overloaded (hysteresis: r->sustain checks in a row) and returns 1
 * when the class has needed room that long. Pure. */
int sched_needs_room(const sched_rebalance_params *r, double hi_est_ms, double low_est_ms, double low_util,
		     int workers, int reserved, int *streak);

/* Whether moving agent a (placed) from its node (a->cur_node) to `to` is worth it:
 * 1 when the predicted cost there (its own load taken off the source) is at
 * most (1 - min_gain) of staying, or (1 - room_gain) when a higher priority
 * class runs on its node (moving makes room for it). Scores of both go to *stay and *go (may be
 * NULL). Pure. */
int sched_move_worth(const sched_node *nodes, int n, const sched_agent *a, int to, const sched_params *p,
		     const sched_rebalance_params *r, sched_score *stay, sched_score *go);

#endif
