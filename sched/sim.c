/*
 * sched/sim.c - discrete-event cluster model driving sched/place.c (see
 * sched/sim.h for the contract, docs/scheduling.md for the method).
 *
 * Events live in one binary min-heap of (time, kind, id); requests in an
 * index pool with a free list; each node keeps per-device, per-class FIFO
 * queues (its dispatcher: highest class first, non-preemptive). The policy
 * view (sched_node[]) is kept up to date incrementally as requests queue
 * and agents come and go, exactly as the coordinator keeps its own, so a
 * decision is one sched_rank() call over the nodes; its wall-clock time is
 * what decision_p99_us reports.
 *
 * What each policy may see (honesty): random and round_robin see fit only;
 * least_loaded sees queue length, agent count and free memory; aidos sees
 * those plus per-model latency estimates per device (true mean x 15%
 * noise), each node's measured device speed, predicted utilisation from
 * request rates it has measured (a new agent gets the population's mean
 * rate), priority classes and context sizes. Nobody sees the future.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "aidos/aidos.h"
#include "pools/pools.h"
#include "sched/sched.h"
#include "sched/sim.h"

#define GIB (1024.0 * 1024.0 * 1024.0)
#define NGEN 3
static const double gen_speed[NGEN] = { 1.0, 1.35, 1.8 };
static const char *const policy_names[SCHED_SIM_N] = { "random", "round_robin", "least_loaded", "aidos" };

enum { EV_AGENT = 0, EV_REQ = 1, EV_DONE = 2, EV_READY = 3, EV_FAIL = 4, EV_UP = 5, EV_TICK = 6 };

typedef struct ev {
	double t;
	int32_t kind, id;
} ev;

typedef struct model {
	double gpu_ms, cpu_mult;
	uint64_t mem;
} model;

typedef struct agent {
	int model, cls, prio;
	int node, dev;          /* -1: not placed */
	int prev, next;         /* list of agents on node */
	double rate, slo_ms, avail_at, moved_at, burst_until;
	double est_ms[SCHED_DEV_N];
	double est_rate;        /* what the coordinator knows */
	float contrib;          /* its share in util[dev][cls] of its node */
	int burst, measured;
	uint64_t mem, ctx;
	uint32_t win_reqs;
} agent;

typedef struct req {
	int agent, next;
	int node, dev;
	uint32_t epoch;
	double t_arr;
} req;

typedef struct node {
	int gen, up, streak;
	uint32_t epoch;
	int busy[SCHED_DEV_N];
	int qh[SCHED_DEV_N][SCHED_PRIO_N], qt[SCHED_DEV_N][SCHED_PRIO_N];
	int head;               /* first agent */
	double win_busy, win_lat, win_est;
	uint32_t win_n;
	char name[16];
} node;

#define HBUCKETS 1400
#define HBASE 0.001   /* ms (latency) or us (decisions) */
#define HSTEP 1.02

typedef struct hist {
	uint64_t b[HBUCKETS];
	uint64_t n;
} hist;

typedef struct sim {
	const sched_sim_cfg *cfg;
	int policy;
	uint64_t rng;
	ev *heap;
	int nheap, capheap;
	req *reqs;
	int nreq, capreq, freereq;
	model *models;
	agent *agents;
	node *nodes;
	sched_node *view;
	sched_params sp;
	sched_rebalance_params rp;
	double mean_rate;
	int rr_next;
	double now, live_gpu_ms, last_live_t;
	int live_nodes;
	double busy_gpu_ms;
	hist lat, lat_hi, dec;
	uint64_t requests, ok, dropped, hi_req, hi_ok, migrations, failures, cpu_placed, placed, events;
} sim;

/* ---- random numbers: xorshift64*, Box-Muller ---- */

static uint64_t rnd64(sim *s)
{
	s->rng ^= s->rng >> 12;
	s->rng ^= s->rng << 25;
	s->rng ^= s->rng >> 27;
	return s->rng * 2685821657736338717ull;
}

static double unif(sim *s)
{
	return ((double)(rnd64(s) >> 11) + 0.5) / 9007199254740992.0;
}

static double expo(sim *s, double mean)
{
	return -log(unif(s)) * mean;
}

static double lognorm(sim *s, double median, double sigma)
{
	double z = sqrt(-2.0 * log(unif(s))) * cos(2.0 * M_PI * unif(s));
	return median * exp(sigma * z);
}

/* ---- histogram (log buckets, 2% wide) ---- */

static void hist_add(hist *h, double v)
{
	int i = v <= HBASE ? 0 : (int)(log(v / HBASE) / log(HSTEP)) + 1;
	if (i >= HBUCKETS)
		i = HBUCKETS - 1;
	h->b[i]++;
	h->n++;
}

static double hist_q(const hist *h, double q)
{
	if (!h->n)
		return 0;
	uint64_t want = (uint64_t)ceil(q * (double)h->n), acc = 0;
	for (int i = 0; i < HBUCKETS; i++) {
		acc += h->b[i];
		if (acc >= want && acc)
			return i == 0 ? HBASE : HBASE * pow(HSTEP, (double)i - 0.5);
	}
	return HBASE * pow(HSTEP, HBUCKETS);
}

/* ---- event heap ---- */

static int push(sim *s, double t, int kind, int id)
{
	if (s->nheap == s->capheap) {
		int cap = s->capheap ? 2 * s->capheap : 1024;
		ev *h = pool_realloc(s->heap, (size_t)cap * sizeof *h);
		if (!h)
			return AIDOS_E_NOMEM;
		s->heap = h;
		s->capheap = cap;
	}
	int i = s->nheap++;
	while (i > 0) {
		int p = (i - 1) / 2;
		if (s->heap[p].t <= t)
			break;
		s->heap[i] = s->heap[p];
		i = p;
	}
	s->heap[i] = (ev){ t, kind, id };
	return 0;
}

static ev pop(sim *s)
{
	ev top = s->heap[0], last = s->heap[--s->nheap];
	int i = 0, n = s->nheap;
	for (;;) {
		int l = 2 * i + 1, m = l;
		if (l >= n)
			break;
		if (l + 1 < n && s->heap[l + 1].t < s->heap[l].t)
			m = l + 1;
		if (s->heap[m].t >= last.t)
			break;
		s->heap[i] = s->heap[m];
		i = m;
	}
	if (n)
		s->heap[i] = last;
	return top;
}

/* ---- requests ---- */

static int req_new(sim *s)
{
	if (s->freereq < 0) {
		if (s->nreq == s->capreq) {
			int cap = s->capreq ? 2 * s->capreq : 65536;
			req *r = pool_realloc(s->reqs, (size_t)cap * sizeof *r);
			if (!r)
				return -1;
			s->reqs = r;
			s->capreq = cap;
		}
		return s->nreq++;
	}
	int i = s->freereq;
	s->freereq = s->reqs[i].next;
	return i;
}

static void req_free(sim *s, int i)
{
	s->reqs[i].next = s->freereq;
	s->freereq = i;
}

/* ---- the view ---- */

static double agent_svc_est(const sim *s, const agent *a, int n, int dev)
{
	return a->est_ms[dev] * (dev == SCHED_DEV_GPU ? gen_speed[s->nodes[n].gen] : 1.0);
}

static void view_add(sim *s, int ai, int n, int dev)
{
	agent *a = &s->agents[ai];
	node *nd = &s->nodes[n];
	sched_node *v = &s->view[n];
	a->node = n;
	a->dev = dev;
	a->prev = -1;
	a->next = nd->head;
	if (nd->head >= 0)
		s->agents[nd->head].prev = ai;
	nd->head = ai;
	v->n_agents++;
	v->mem_free -= a->mem;
	if (dev == SCHED_DEV_GPU)
		v->gpu_mem_free -= a->mem;
	a->contrib = (float)(a->est_rate * agent_svc_est(s, a, n, dev) / 1000.0 / v->servers[dev]);
	v->util[dev][a->cls] += a->contrib;
	s->placed++;
	if (dev == SCHED_DEV_CPU)
		s->cpu_placed++;
}

static void view_remove(sim *s, int ai)
{
	agent *a = &s->agents[ai];
	node *nd = &s->nodes[a->node];
	sched_node *v = &s->view[a->node];
	if (a->prev >= 0)
		s->agents[a->prev].next = a->next;
	else
		nd->head = a->next;
	if (a->next >= 0)
		s->agents[a->next].prev = a->prev;
	v->n_agents--;
	v->mem_free += a->mem;
	if (a->dev == SCHED_DEV_GPU)
		v->gpu_mem_free += a->mem;
	v->util[a->dev][a->cls] -= a->contrib;
	if (v->util[a->dev][a->cls] < 0)
		v->util[a->dev][a->cls] = 0;
	a->node = -1;
}

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void fill_agent(const sim *s, int ai, sched_agent *sa)
{
	const agent *a = &s->agents[ai];
	memset(sa, 0, sizeof *sa);
	sa->name = "agent";
	sa->mem_bytes = a->mem;
	sa->priority = a->prio;
	sa->gpu_ok = 1;
	sa->est_ms[0] = a->est_ms[0];
	sa->est_ms[1] = a->est_ms[1];
	sa->rate = a->est_rate;
	sa->ctx_bytes = 0;
}

/* The device a baseline uses on node n: the GPU when the agent fits there. */
static int base_dev(const sim *s, int n, const agent *a)
{
	return s->view[n].gpu_mem_free >= a->mem ? SCHED_DEV_GPU : SCHED_DEV_CPU;
}

static int fits(const sim *s, int n, const agent *a, int excl)
{
	return n != excl && s->view[n].ready && s->view[n].mem_free >= a->mem;
}

/* One placement decision (timed). excl: a node to avoid or -1. Returns the
 * node and sets *dev, or -1. */
static int decide(sim *s, int ai, int excl, int *dev)
{
	agent *a = &s->agents[ai];
	int N = s->cfg->nodes, n = -1;
	double t0 = now_ns();
	switch (s->policy) {
	case SCHED_SIM_RANDOM:
		for (int tries = 0; tries < 64 && n < 0; tries++) {
			int c = (int)(rnd64(s) % (uint64_t)N);
			if (fits(s, c, a, excl))
				n = c;
		}
		for (int c = 0; n < 0 && c < N; c++)
			if (fits(s, c, a, excl))
				n = c;
		break;
	case SCHED_SIM_ROUND_ROBIN:
		for (int k = 0; k < N && n < 0; k++) {
			int c = (s->rr_next + k) % N;
			if (fits(s, c, a, excl)) {
				n = c;
				s->rr_next = c + 1;
			}
		}
		break;
	case SCHED_SIM_LEAST_LOADED: {
		sched_agent sa;
		fill_agent(s, ai, &sa);
		sa.exclude = excl >= 0 ? s->nodes[excl].name : NULL;
		n = sched_place_least_loaded(s->view, N, &sa);
		break;
	}
	default: {
		sched_agent sa;
		sched_score sc;
		int best;
		fill_agent(s, ai, &sa);
		sa.exclude = excl >= 0 ? s->nodes[excl].name : NULL;
		if (sched_rank(s->view, N, &sa, &s->sp, NULL, &best, 1, NULL, 0) == 1) {
			n = best;
			sched_score_node(s->view, n, &sa, &s->sp, &sc);
			*dev = sc.dev;
		}
		break;
	}
	}
	hist_add(&s->dec, (now_ns() - t0) / 1000.0);
	if (n >= 0 && s->policy != SCHED_SIM_AIDOS)
		*dev = base_dev(s, n, a);
	return n;
}

/* ---- the node: dispatch ---- */

static double svc_time(sim *s, const agent *a, int n, int dev)
{
	const model *m = &s->models[a->model];
	double base = dev == SCHED_DEV_GPU ? m->gpu_ms * gen_speed[s->nodes[n].gen] : m->gpu_ms * m->cpu_mult;
	return base * lognorm(s, 1.0, 0.3) / exp(0.045);   /* mean-preserving jitter */
}

static int start(sim *s, int n, int ri)
{
	req *r = &s->reqs[ri];
	agent *a = &s->agents[r->agent];
	double d = svc_time(s, a, n, r->dev);
	s->nodes[n].busy[r->dev]++;
	if (r->dev == SCHED_DEV_GPU && s->now >= s->cfg->arrive_s)
		s->busy_gpu_ms += d;
	if (r->dev == SCHED_DEV_GPU)
		s->nodes[n].win_busy += d;
	s->nodes[n].win_est += agent_svc_est(s, a, n, r->dev);
	return push(s, s->now + d / 1000.0, EV_DONE, ri);
}

static int enqueue(sim *s, int ri)
{
	req *r = &s->reqs[ri];
	agent *a = &s->agents[r->agent];
	int n = a->node;
	if (n < 0 || !s->nodes[n].up) {
		if (r->t_arr >= s->cfg->arrive_s) {
			s->dropped++;
			s->requests++;
			if (a->cls == SCHED_PRIO_HIGH)
				s->hi_req++;
		}
		req_free(s, ri);
		return 0;
	}
	node *nd = &s->nodes[n];
	r->node = n;
	r->dev = a->dev;
	r->epoch = nd->epoch;
	r->next = -1;
	int servers = (int)s->view[n].servers[r->dev];
	if (nd->busy[r->dev] < servers)
		return start(s, n, ri);
	int c = a->cls;
	if (nd->qt[r->dev][c] >= 0)
		s->reqs[nd->qt[r->dev][c]].next = ri;
	else
		nd->qh[r->dev][c] = ri;
	nd->qt[r->dev][c] = ri;
	s->view[n].queue_len++;
	return 0;
}

static void record(sim *s, const agent *a, double lat_ms)
{
	s->requests++;
	hist_add(&s->lat, lat_ms);
	int ok = lat_ms <= a->slo_ms;
	s->ok += (uint64_t)ok;
	if (a->cls == SCHED_PRIO_HIGH) {
		s->hi_req++;
		s->hi_ok += (uint64_t)ok;
		hist_add(&s->lat_hi, lat_ms);
	}
}

/* ---- events ---- */

static int place_agent(sim *s, int ai, int excl, double delay)
{
	int dev = SCHED_DEV_GPU;
	int n = decide(s, ai, excl, &dev);
	if (n < 0)
		return 0;
	view_add(s, ai, n, dev);
	s->agents[ai].avail_at = s->now + delay;
	return 1;
}

static int on_agent(sim *s, int ai)
{
	agent *a = &s->agents[ai];
	place_agent(s, ai, -1, 0.5 + (double)a->mem / (10.0 * GIB));
	a->burst_until = s->now + expo(s, 20.0);
	return push(s, s->now + expo(s, 1.0 / a->rate), EV_REQ, ai);
}

static int on_req(sim *s, int ai)
{
	agent *a = &s->agents[ai];
	int rc;
	if (s->now >= a->burst_until) {
		a->burst = !a->burst;
		a->burst_until = s->now + expo(s, a->burst ? 5.0 : 20.0);
	}
	double rate = a->rate * (a->burst ? 4.0 : 1.0) / 1.6;
	if (s->now + 0 < s->cfg->duration_s && (rc = push(s, s->now + expo(s, 1.0 / rate), EV_REQ, ai)))
		return rc;
	a->win_reqs++;
	int ri = req_new(s);
	if (ri < 0)
		return AIDOS_E_NOMEM;
	s->reqs[ri].agent = ai;
	s->reqs[ri].t_arr = s->now;
	if (a->node >= 0 && s->now < a->avail_at)
		return push(s, a->avail_at, EV_READY, ri);
	return enqueue(s, ri);
}

static int on_done(sim *s, int ri, int n)
{
	req *r = &s->reqs[ri];
	node *nd = &s->nodes[n];
	int dev = r->dev;
	if (r->epoch != nd->epoch) {   /* its node failed meanwhile: counted then */
		req_free(s, ri);
		return 0;
	}
	const agent *a = &s->agents[r->agent];
	double lat = (s->now - r->t_arr) * 1000.0;
	if (r->t_arr >= s->cfg->arrive_s)
		record(s, a, lat);
	nd->win_lat += lat;
	nd->win_n++;
	req_free(s, ri);
	nd->busy[dev]--;
	for (int c = SCHED_PRIO_N - 1; c >= 0; c--) {
		int h = nd->qh[dev][c];
		if (h < 0)
			continue;
		nd->qh[dev][c] = s->reqs[h].next;
		if (nd->qh[dev][c] < 0)
			nd->qt[dev][c] = -1;
		s->view[n].queue_len--;
		return start(s, n, h);
	}
	return 0;
}

static void live_account(sim *s)
{
	double t0 = s->last_live_t > s->cfg->arrive_s ? s->last_live_t : s->cfg->arrive_s;
	if (s->now > t0)
		s->live_gpu_ms += (s->now - t0) * 1000.0 * s->live_nodes * s->cfg->gpus_per_node;
	s->last_live_t = s->now;
}

static int on_fail(sim *s)
{
	int N = s->cfg->nodes, n = -1;
	for (int tries = 0; tries < 64 && n < 0; tries++) {
		int c = (int)(rnd64(s) % (uint64_t)N);
		if (s->nodes[c].up)
			n = c;
	}
	double next = expo(s, 3600.0 / (s->cfg->fail_per_node_hour * N));
	if (s->now + next < s->cfg->duration_s && push(s, s->now + next, EV_FAIL, 0))
		return AIDOS_E_NOMEM;
	if (n < 0)
		return 0;
	node *nd = &s->nodes[n];
	live_account(s);
	s->live_nodes--;
	s->failures++;
	nd->up = 0;
	nd->epoch++;
	nd->streak = 0;
	s->view[n].ready = 0;
	for (int d = 0; d < SCHED_DEV_N; d++) {
		nd->busy[d] = 0;
		for (int c = 0; c < SCHED_PRIO_N; c++) {
			for (int ri = nd->qh[d][c]; ri >= 0;) {
				int nx = s->reqs[ri].next;
				const agent *a = &s->agents[s->reqs[ri].agent];
				if (s->reqs[ri].t_arr >= s->cfg->arrive_s) {
					s->dropped++;
					s->requests++;
					if (a->cls == SCHED_PRIO_HIGH)
						s->hi_req++;
				}
				req_free(s, ri);
				ri = nx;
			}
			nd->qh[d][c] = nd->qt[d][c] = -1;
		}
	}
	s->view[n].queue_len = 0;
	/* its agents: placed again by the same policy, from their checkpoints */
	while (nd->head >= 0) {
		int ai = nd->head;
		view_remove(s, ai);
		s->migrations++;
		place_agent(s, ai, n, 2.0 + (double)s->agents[ai].mem / (10.0 * GIB));
	}
	return push(s, s->now + s->cfg->down_s, EV_UP, n);
}

static void on_up(sim *s, int n)
{
	live_account(s);
	s->live_nodes++;
	s->nodes[n].up = 1;
	s->view[n].ready = 1;
}

/* The rebalancer (aidos only): measured rates replace the priors in the
 * view; a node overloaded for `sustain` checks moves its lowest-class,
 * heaviest agents (not within their cool-down) where sched_move_worth says
 * the move pays, context and model reload included. */
static void on_tick(sim *s)
{
	double win = s->cfg->rebalance_s;
	for (int ai = 0; ai < s->cfg->agents; ai++) {
		agent *a = &s->agents[ai];
		if (a->node < 0)
			continue;
		/* the rate the coordinator measures: requests counted per window */
		double r = a->win_reqs / win;
		a->est_rate = a->measured ? 0.5 * a->est_rate + 0.5 * r : r;
		a->measured = 1;
		a->win_reqs = 0;
		sched_node *v = &s->view[a->node];
		float c = (float)(a->est_rate * agent_svc_est(s, a, a->node, a->dev) / 1000.0 / v->servers[a->dev]);
		v->util[a->dev][a->cls] += c - a->contrib;
		if (v->util[a->dev][a->cls] < 0)
			v->util[a->dev][a->cls] = 0;
		a->contrib = c;
	}
	for (int n = 0; n < s->cfg->nodes; n++) {
		node *nd = &s->nodes[n];
		double util = nd->win_busy / (win * 1000.0 * s->cfg->gpus_per_node);
		double meas = nd->win_n ? nd->win_lat / nd->win_n : 0, est = nd->win_n ? nd->win_est / nd->win_n : 0;
		nd->win_busy = nd->win_lat = nd->win_est = 0;
		nd->win_n = 0;
		if (!nd->up || !sched_overloaded(&s->rp, meas, est, util, &nd->streak))
			continue;
		nd->streak = 0;
		for (int moves = 0; moves < 2; moves++) {
			int pick = -1;
			for (int ai = nd->head; ai >= 0; ai = s->agents[ai].next) {
				const agent *a = &s->agents[ai];
				if (s->now - a->moved_at < s->rp.cooldown_s || s->now < a->avail_at)
					continue;
				if (pick < 0 || a->cls < s->agents[pick].cls ||
				    (a->cls == s->agents[pick].cls && a->contrib > s->agents[pick].contrib))
					pick = ai;
			}
			if (pick < 0)
				break;
			agent *a = &s->agents[pick];
			sched_agent sa;
			fill_agent(s, pick, &sa);
			sa.placed = 1;
			sa.cur_node = n;
			sa.ctx_node = n;
			sa.ctx_bytes = a->ctx;
			sa.exclude = nd->name;
			int best, dev;
			double t0 = now_ns();
			int k = sched_rank(s->view, s->cfg->nodes, &sa, &s->sp, NULL, &best, 1, NULL, 0);
			hist_add(&s->dec, (now_ns() - t0) / 1000.0);
			sched_score go;
			if (!k || !sched_move_worth(s->view, s->cfg->nodes, &sa, best, &s->sp, &s->rp, NULL, &go))
				break;   /* its best move does not pay: the next check sees again */
			a->moved_at = s->now;   /* cool-down: not moved again before rp.cooldown_s */
			dev = go.dev;
			view_remove(s, pick);
			view_add(s, pick, best, dev);
			s->placed--;   /* a move, not a new placement */
			if (dev == SCHED_DEV_CPU)
				s->cpu_placed--;
			s->migrations++;
			/* context over a 100 Gb/s link plus the model's load */
			a->avail_at = s->now + 0.05 + (double)a->ctx / 12.5e9 + (double)a->mem / (10.0 * GIB);
		}
	}
	if (s->now + win < s->cfg->duration_s)
		push(s, s->now + win, EV_TICK, 0);
}

/* ---- setup ---- */

void sched_sim_cfg_default(sched_sim_cfg *cfg, int quick)
{
	memset(cfg, 0, sizeof *cfg);
	cfg->nodes = quick ? 100 : 1000;
	cfg->gpus_per_node = 8;
	cfg->cpus_per_node = 16;
	cfg->agents = quick ? 10000 : 100000;
	cfg->models = 300;
	cfg->gpu_mem_gib = 80;
	cfg->duration_s = quick ? 60 : 150;
	cfg->arrive_s = quick ? 15 : 30;
	cfg->load = 0.6;
	cfg->fail_per_node_hour = quick ? 0.3 : 0.1;
	cfg->down_s = 60;
	cfg->rebalance_s = 5;
	cfg->rebalance = 1;
	cfg->seed = 42;
}

const char *sched_sim_policy_name(int policy)
{
	return policy >= 0 && policy < SCHED_SIM_N ? policy_names[policy] : NULL;
}

static int setup(sim *s)
{
	const sched_sim_cfg *cfg = s->cfg;
	int N = cfg->nodes, A = cfg->agents, M = cfg->models;
	s->models = pool_calloc((size_t)M, sizeof *s->models);
	s->agents = pool_calloc((size_t)A, sizeof *s->agents);
	s->nodes = pool_calloc((size_t)N, sizeof *s->nodes);
	s->view = pool_calloc((size_t)N, sizeof *s->view);
	if (!s->models || !s->agents || !s->nodes || !s->view)
		return AIDOS_E_NOMEM;
	double cap = 0;
	for (int n = 0; n < N; n++) {
		node *nd = &s->nodes[n];
		sched_node *v = &s->view[n];
		nd->gen = n % NGEN;
		nd->up = 1;
		nd->head = -1;
		for (int d = 0; d < SCHED_DEV_N; d++)
			for (int c = 0; c < SCHED_PRIO_N; c++)
				nd->qh[d][c] = nd->qt[d][c] = -1;
		snprintf(nd->name, sizeof nd->name, "n%04d", n);
		v->name = nd->name;
		v->ready = 1;
		v->has_gpu = 1;
		v->gpu_mem_free = (uint64_t)(cfg->gpu_mem_gib * cfg->gpus_per_node * GIB);
		v->mem_total = v->gpu_mem_free;
		v->mem_free = v->gpu_mem_free + (uint64_t)(512 * GIB);   /* GPU memory + host pool */
		v->mem_total = v->mem_free;
		v->servers[SCHED_DEV_CPU] = (uint32_t)cfg->cpus_per_node;
		v->servers[SCHED_DEV_GPU] = (uint32_t)cfg->gpus_per_node;
		v->speed[SCHED_DEV_CPU] = 1.0f;
		v->speed[SCHED_DEV_GPU] = (float)gen_speed[nd->gen];
		v->link_gbps = 100.0f;
		v->rtt_ms = 0.02f;
		cap += cfg->gpus_per_node * 1000.0 / gen_speed[nd->gen];
	}
	s->live_nodes = N;
	/* Models: GPU latency lognormal (median 25 ms, heavy tail), CPU 4-30x
	 * slower, memory lognormal (median 3 GiB). Popularity Zipf(1). */
	double *cdf = pool_calloc((size_t)M, sizeof *cdf), z = 0;
	if (!cdf)
		return AIDOS_E_NOMEM;
	for (int m = 0; m < M; m++) {
		s->models[m].gpu_ms = fmin(lognorm(s, 25.0, 0.8), 400.0);
		s->models[m].cpu_mult = fmin(fmax(lognorm(s, 8.0, 0.6), 3.0), 40.0);
		s->models[m].mem = (uint64_t)(fmin(lognorm(s, 3.0, 0.9), 60.0) * GIB);
		z += 1.0 / (m + 1);
		cdf[m] = z;
	}
	double work = 0;
	for (int i = 0; i < A; i++) {
		agent *a = &s->agents[i];
		double u = unif(s) * z;
		int lo = 0, hi = M - 1;
		while (lo < hi) {
			int mid = (lo + hi) / 2;
			if (cdf[mid] < u)
				lo = mid + 1;
			else
				hi = mid;
		}
		a->model = lo;
		const model *m = &s->models[lo];
		double p = unif(s);
		a->cls = p < 0.1 ? SCHED_PRIO_HIGH : p < 0.4 ? SCHED_PRIO_NORMAL : SCHED_PRIO_LOW;
		a->prio = a->cls == SCHED_PRIO_HIGH ? 200 : a->cls == SCHED_PRIO_NORMAL ? 50 : 0;
		a->slo_ms = a->cls == SCHED_PRIO_HIGH ? 3.0 * m->gpu_ms + 10
			    : a->cls == SCHED_PRIO_NORMAL ? 6.0 * m->gpu_ms + 20 : 15.0 * m->gpu_ms + 50;
		a->rate = fmin(pow(unif(s), -1.0 / 1.5), 50.0);   /* Pareto(1.5), scaled below */
		a->ctx = (uint64_t)(fmin(lognorm(s, 0.125, 1.0), 8.0) * GIB);
		a->mem = m->mem + a->ctx;
		a->est_ms[SCHED_DEV_GPU] = m->gpu_ms * lognorm(s, 1.0, 0.15);
		a->est_ms[SCHED_DEV_CPU] = m->gpu_ms * m->cpu_mult * lognorm(s, 1.0, 0.15);
		a->node = -1;
		a->moved_at = -1e9;
		work += a->rate * m->gpu_ms;
	}
	pool_free(cdf);
	double scale = cfg->load * cap / work, sum = 0;
	for (int i = 0; i < A; i++) {
		agent *a = &s->agents[i];
		a->rate *= scale;
		/* no single agent offers more than 2 GPUs of work */
		a->rate = fmin(a->rate, 2000.0 / s->models[a->model].gpu_ms);
		sum += a->rate;
	}
	s->mean_rate = sum / A;
	for (int i = 0; i < A; i++)
		s->agents[i].est_rate = s->mean_rate;   /* prior until measured */
	/* Agents arrive as a Poisson process over [0, arrive_s). */
	double t = 0;
	for (int i = 0; i < A; i++) {
		t += expo(s, cfg->arrive_s / A);
		if (push(s, fmin(t, cfg->arrive_s), EV_AGENT, i))
			return AIDOS_E_NOMEM;
	}
	if (cfg->fail_per_node_hour > 0 && push(s, expo(s, 3600.0 / (cfg->fail_per_node_hour * N)), EV_FAIL, 0))
		return AIDOS_E_NOMEM;
	if (s->policy == SCHED_SIM_AIDOS && cfg->rebalance && push(s, cfg->rebalance_s, EV_TICK, 0))
		return AIDOS_E_NOMEM;
	return 0;
}

int sched_sim_run(const sched_sim_cfg *cfg, int policy, sched_sim_result *out, char *err, size_t errlen)
{
	sim *s;
	int rc;
	double w0 = now_ns();
	memset(out, 0, sizeof *out);
	if (!cfg || cfg->nodes < 1 || cfg->agents < 1 || cfg->models < 1 || cfg->gpus_per_node < 1 ||
	    cfg->cpus_per_node < 1 || cfg->duration_s <= cfg->arrive_s || cfg->arrive_s <= 0 || cfg->load <= 0 ||
	    cfg->rebalance_s <= 0 || policy < 0 || policy >= SCHED_SIM_N) {
		snprintf(err, errlen, "sim: invalid configuration or policy %d", policy);
		return AIDOS_E_INVALID;
	}
	if (!(s = pool_calloc(1, sizeof *s))) {
		snprintf(err, errlen, "sim: out of memory");
		return AIDOS_E_NOMEM;
	}
	s->cfg = cfg;
	s->policy = policy;
	s->rng = cfg->seed * 0x9E3779B97F4A7C15ull + 1;
	s->freereq = -1;
	sched_params_default(&s->sp);
	sched_rebalance_params_default(&s->rp);
	rc = setup(s);
	while (!rc && s->nheap) {
		ev e = pop(s);
		if (e.t > cfg->duration_s + 60.0)
			break;   /* queues that never drain: stop counting */
		s->now = e.t;
		s->events++;
		switch (e.kind) {
		case EV_AGENT:
			rc = on_agent(s, e.id);
			break;
		case EV_REQ:
			if (e.t < cfg->duration_s)
				rc = on_req(s, e.id);
			break;
		case EV_READY:
			rc = enqueue(s, e.id);
			break;
		case EV_DONE:
			rc = on_done(s, e.id, s->reqs[e.id].node);
			break;
		case EV_FAIL:
			rc = on_fail(s);
			break;
		case EV_UP:
			on_up(s, e.id);
			break;
		case EV_TICK:
			on_tick(s);
			break;
		}
	}
	if (rc) {
		snprintf(err, errlen, "sim: out of memory");
	} else {
		s->now = cfg->duration_s;
		live_account(s);
		double agent_h = (double)cfg->agents * (cfg->duration_s - cfg->arrive_s / 2) / 3600.0;
		out->p50_ms = hist_q(&s->lat, 0.50);
		out->p99_ms = hist_q(&s->lat, 0.99);
		out->hi_p99_ms = hist_q(&s->lat_hi, 0.99);
		out->slo_attainment = s->requests ? (double)s->ok / (double)s->requests : 0;
		out->hi_slo = s->hi_req ? (double)s->hi_ok / (double)s->hi_req : 0;
		out->gpu_util = s->live_gpu_ms > 0 ? s->busy_gpu_ms / s->live_gpu_ms : 0;
		out->migrations_per_agent_hour = (double)s->migrations / agent_h;
		out->decision_p50_us = hist_q(&s->dec, 0.50);
		out->decision_p99_us = hist_q(&s->dec, 0.99);
		out->cpu_fallback = s->placed ? (double)s->cpu_placed / (double)s->placed : 0;
		out->requests = s->requests;
		out->dropped = s->dropped;
		out->migrations = s->migrations;
		out->failures = s->failures;
		out->decisions = s->dec.n;
		out->events = s->events;
		out->wall_s = (now_ns() - w0) / 1e9;
	}
	pool_free(s->heap);
	pool_free(s->reqs);
	pool_free(s->models);
	pool_free(s->agents);
	pool_free(s->nodes);
	pool_free(s->view);
	pool_free(s);
	return rc;
}
