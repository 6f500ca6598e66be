/*
 * sched/place.c - global placement: hard constraints, then the AI-aware
 * score of sched/sched.h (predicted latency per device and priority class,
 * measured backlog, GPU first, context locality, pool pressure, spread).
 *
 * The queueing factor 1/(1-U) is the M/M/1 mean response time over service
 * time; with non-preemptive priority dispatch a class waits mostly for work
 * of its own and higher classes (Kleinrock, Queueing Systems vol. 2, 3.7),
 * hence U counts only those classes. It is a ranking signal, not a promise.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "sched/sched.h"

#define GIB (1024.0 * 1024.0 * 1024.0)
#define EPS 1e-9

void sched_params_default(sched_params *p)
{
	p->w_gpu_ms = 50.0;
	p->w_mem_ms = 2.0;
	p->w_spread_ms = 20.0;
	p->amortize_requests = 100.0;
	/* Weights streamed once per request dominate small-batch inference:
	 * ~20 GB/s effective on a CPU socket, ~1 TB/s on a GPU, plus a floor. */
	p->prior_cpu_ms_per_gib = 50.0;
	p->prior_gpu_ms_per_gib = 1.0;
}

void sched_rebalance_params_default(sched_rebalance_params *r)
{
	r->over_ratio = 2.0;
	r->sustain = 3;
	r->min_gain = 0.3;
	r->cooldown_s = 60.0;
	r->util_high = 0.9;
	r->room_gain = 0.0;
	r->room_ratio = 1.5;
	r->room_wait_p = 0.05;
}

int sched_prio_class(int priority)
{
	if (priority >= SCHED_PRIO_HIGH_MIN)
		return SCHED_PRIO_HIGH;
	return priority > 0 ? SCHED_PRIO_NORMAL : SCHED_PRIO_LOW;
}

double sched_est_ms(const sched_agent *a, const sched_params *p, int dev)
{
	if (a->est_ms[dev] > 0)
		return a->est_ms[dev];
	double gib = (double)a->mem_bytes / GIB;
	return dev == SCHED_DEV_GPU ? 0.5 + gib * p->prior_gpu_ms_per_gib : 1.0 + gib * p->prior_cpu_ms_per_gib;
}

static double fnz(float v, double dflt)
{
	return v > 0 ? (double)v : dflt;
}

int sched_score_node(const sched_node *nodes, int i, const sched_agent *a, const sched_params *p,
		     sched_score *s)
{
	const sched_node *nd = &nodes[i];
	int here = a->placed && a->cur_node == i;
	*s = (sched_score){ .idx = i };
	if (a->pinned && strcmp(a->pinned, nd->name)) {
		s->why = "not the pinned node";
		return 0;
	}
	if (a->exclude && !strcmp(a->exclude, nd->name)) {
		s->why = "excluded";
		return 0;
	}
	if (!nd->ready) {
		s->why = "not ready";
		return 0;
	}
	if (a->needs_gpu && !nd->has_gpu) {
		s->why = "no GPU";
		return 0;
	}
	if (!here && nd->mem_free < a->mem_bytes) {
		s->why = "not enough free memory";
		return 0;
	}
	/* The device: its GPU when the agent can use one and the model fits
	 * in GPU memory there (GPU first), else its CPU. */
	int dev = SCHED_DEV_CPU;
	if (nd->has_gpu && (a->gpu_ok || a->needs_gpu)) {
		uint64_t gfree = nd->gpu_mem_free ? nd->gpu_mem_free : nd->mem_free;
		if (here || gfree >= a->mem_bytes)
			dev = SCHED_DEV_GPU;
		else if (a->needs_gpu) {
			s->why = "not enough free GPU memory";
			return 0;
		}
	}
	s->dev = dev;
	int cls = sched_prio_class(a->priority);
	double servers = nd->servers[dev] ? (double)nd->servers[dev] : 1.0;
	double svc = sched_est_ms(a, p, dev) * fnz(nd->speed[dev], 1.0);
	double u_ge = 0, u_all = 0;
	for (int c = 0; c < SCHED_PRIO_N; c++) {
		u_all += nd->util[dev][c];
		if (c >= cls)
			u_ge += nd->util[dev][c];
	}
	double own = (a->rate > 0 ? a->rate : SCHED_RATE_PRIOR) * svc / 1000.0 / servers;
	double u = u_ge + (here ? 0 : own);
	if (u > SCHED_U_CAP)
		u = SCHED_U_CAP;
	if (u < 0)
		u = 0;
	s->latency = svc / (1.0 - u);
	double share = u_all > EPS ? u_ge / u_all : 1.0;
	s->queue = (double)nd->queue_len * svc / servers * share;
	s->gpu = (a->gpu_ok && dev == SCHED_DEV_CPU) ? p->w_gpu_ms : 0;
	if (a->ctx_bytes && a->ctx_node >= 0 && a->ctx_node != i) {   /* ctx_node < n: the caller's */
		const sched_node *src = &nodes[a->ctx_node];
		double bw = fmin(fnz(nd->link_gbps, 10.0), fnz(src->link_gbps, 10.0)) * 1e9 / 8.0;
		double ms = (double)a->ctx_bytes / bw * 1000.0 + (fnz(nd->rtt_ms, 0.1) + fnz(src->rtt_ms, 0.1)) / 2;
		s->move = ms / (p->amortize_requests > 0 ? p->amortize_requests : 1.0);
	}
	if (nd->mem_total) {
		double used = (double)(nd->mem_total - (nd->mem_free < nd->mem_total ? nd->mem_free : nd->mem_total));
		if (!here)
			used += (double)a->mem_bytes;
		double f = used / (double)nd->mem_total;
		s->memory = p->w_mem_ms * f * f;
	}
	for (int r = 0; r < a->n_replicas; r++)
		if (a->replica_nodes[r] == i)
			s->spread += p->w_spread_ms;
	s->total = s->latency + s->queue + s->gpu + s->move + s->memory + s->spread;
	s->feasible = 1;
	return 1;
}

/* x better than y (both feasible): lower total, then the old lexicographic
 * load order, so the choice never depends on the order of the nodes. */
static int better(const sched_node *nodes, const sched_score *x, const sched_score *y)
{
	if (fabs(x->total - y->total) > EPS * (1.0 + fabs(x->total)))
		return x->total < y->total;
	const sched_node *a = &nodes[x->idx], *b = &nodes[y->idx];
	if (a->queue_len != b->queue_len)
		return a->queue_len < b->queue_len;
	if (a->n_agents != b->n_agents)
		return a->n_agents < b->n_agents;
	if (a->mem_free != b->mem_free)
		return a->mem_free > b->mem_free;
	return strcmp(a->name, b->name) < 0;
}

static void explain_none(const sched_node *nodes, int n, const sched_agent *a, char *why, size_t whylen)
{
	int n_pin = 0, n_ready = 0, n_dev = 0;
	for (int i = 0; i < n; i++) {
		const sched_node *s = &nodes[i];
		if (a->pinned && strcmp(a->pinned, s->name))
			continue;
		n_pin++;
		if ((a->exclude && !strcmp(a->exclude, s->name)) || !s->ready)
			continue;
		n_ready++;
		if (a->needs_gpu && !s->has_gpu)
			continue;
		n_dev++;
	}
	if (a->pinned && !n_pin)
		snprintf(why, whylen, "pinned node '%s' is not in the cluster", a->pinned);
	else if (a->pinned && !n_ready)
		snprintf(why, whylen, "pinned node '%s' is not ready", a->pinned);
	else if (!n_ready)
		snprintf(why, whylen, "no ready node");
	else if (!n_dev)
		snprintf(why, whylen, "no ready node has a GPU");
	else
		snprintf(why, whylen, "no ready node has %llu bytes free", (unsigned long long)a->mem_bytes);
}

int sched_rank(const sched_node *nodes, int n, const sched_agent *a, const sched_params *p,
	       sched_score *scores, int *best, int k, char *why, size_t whylen)
{
	sched_params dp;
	sched_score top[8], s;
	int m = 0;
	if (!p) {
		sched_params_default(&dp);
		p = &dp;
	}
	if (k > (int)(sizeof top / sizeof top[0]))
		k = (int)(sizeof top / sizeof top[0]);
	for (int i = 0; i < n; i++) {
		sched_score *o = scores ? &scores[i] : &s;
		if (!sched_score_node(nodes, i, a, p, o) || k <= 0)
			continue;
		/* keep the k best, sorted: insertion into a tiny array */
		int j = m < k ? m++ : k;
		if (j == k && !better(nodes, o, &top[k - 1]))
			continue;
		if (j == k)
			j = k - 1;
		while (j > 0 && better(nodes, o, &top[j - 1])) {
			top[j] = top[j - 1];
			j--;
		}
		top[j] = *o;
	}
	for (int j = 0; j < m; j++)
		best[j] = top[j].idx;
	if (!m && why && whylen)
		explain_none(nodes, n, a, why, whylen);
	return m;
}

int sched_place(const sched_node *nodes, int n, const sched_agent *a, char *why, size_t whylen)
{
	int best;
	return sched_rank(nodes, n, a, NULL, NULL, &best, 1, why, whylen) ? best : -1;
}

int sched_place_least_loaded(const sched_node *nodes, int n, const sched_agent *a)
{
	int best = -1;
	for (int i = 0; i < n; i++) {
		const sched_node *s = &nodes[i];
		if ((a->pinned && strcmp(a->pinned, s->name)) || (a->exclude && !strcmp(a->exclude, s->name)) ||
		    !s->ready || (a->needs_gpu && !s->has_gpu) || s->mem_free < a->mem_bytes)
			continue;
		if (best < 0) {
			best = i;
			continue;
		}
		const sched_node *b = &nodes[best];
		int lt = s->queue_len != b->queue_len ? s->queue_len < b->queue_len
			 : s->n_agents != b->n_agents ? s->n_agents < b->n_agents
			 : s->mem_free != b->mem_free ? s->mem_free > b->mem_free
						      : strcmp(s->name, b->name) < 0;
		if (lt)
			best = i;
	}
	return best;
}

int sched_move_worth(const sched_node *nodes, int n, const sched_agent *a, int to, const sched_params *p,
		     const sched_rebalance_params *r, sched_score *stay, sched_score *go)
{
	sched_params dp;
	sched_score s1, s2;
	if (!p) {
		sched_params_default(&dp);
		p = &dp;
	}
	if (!a->placed || a->cur_node < 0 || a->cur_node >= n || to < 0 || to >= n || to == a->cur_node)
		return 0;
	sched_agent b = *a;
	b.exclude = NULL;
	b.pinned = NULL;
	if (!sched_score_node(nodes, a->cur_node, &b, p, &s1))
		s1.total = 1e300;   /* its node no longer takes it: any feasible move is a gain */
	b.exclude = a->exclude;
	int ok = sched_score_node(nodes, to, &b, p, &s2);
	if (stay)
		*stay = s1;
	if (go)
		*go = s2;
	double gain = r->min_gain;
	const sched_node *src = &nodes[a->cur_node];
	for (int k = sched_prio_class(a->priority) + 1; k < SCHED_PRIO_N; k++)
		if (src->util[s1.dev][k] > 0)
			gain = r->room_gain;   /* it makes room for a higher class */
	return ok && s2.total <= (1.0 - gain) * s1.total;
}

int sched_overloaded(const sched_rebalance_params *r, double measured_ms, double est_ms, double util, int *streak)
{
	int over = (est_ms > 0 && measured_ms > r->over_ratio * est_ms) || util > r->util_high;
	*streak = over ? *streak + 1 : 0;
	return *streak >= r->sustain;
}

int sched_needs_room(const sched_rebalance_params *r, double hi_est_ms, double low_est_ms, double low_util,
		     int workers, int reserved, int *streak)
{
	double pw = 0;
	if (!reserved && low_util > 0 && hi_est_ms > 0 && low_est_ms > 0)
		pw = pow(low_util < 1.0 ? low_util : 1.0, workers > 1 ? workers : 1);
	int need = pw > 0 && pw >= r->room_wait_p && hi_est_ms + low_est_ms > r->room_ratio * hi_est_ms;
	*streak = need ? *streak + 1 : 0;
	return *streak >= r->sustain;
}
