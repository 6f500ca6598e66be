/*
 * sched/place.c - placement: fits memory and device, least loaded. The
 * AI-aware policy (latency estimates, context location, priorities) is its
 * own issue and replaces the score, not the contract.
 */
#include <stdio.h>
#include <string.h>
#include "sched/sched.h"

/* Lexicographic load: fewer queued requests, fewer agents, more free memory. */
static int less_loaded(const sched_node *x, const sched_node *y)
{
	if (x->queue_len != y->queue_len)
		return x->queue_len < y->queue_len;
	if (x->n_agents != y->n_agents)
		return x->n_agents < y->n_agents;
	if (x->mem_free != y->mem_free)
		return x->mem_free > y->mem_free;
	return strcmp(x->name, y->name) < 0;
}

int sched_place(const sched_node *nodes, int n, const sched_agent *a, char *why, size_t whylen)
{
	int best = -1, n_ready = 0, n_mem = 0, n_dev = 0, n_pin = 0;
	for (int i = 0; i < n; i++) {
		const sched_node *s = &nodes[i];
		if (a->pinned && strcmp(a->pinned, s->name))
			continue;
		n_pin++;
		if (a->exclude && !strcmp(a->exclude, s->name))
			continue;
		if (!s->ready)
			continue;
		n_ready++;
		if (a->needs_gpu && !s->has_gpu)
			continue;
		n_dev++;
		if (s->mem_free < a->mem_bytes)
			continue;
		n_mem++;
		if (best < 0 || less_loaded(s, &nodes[best]))
			best = i;
	}
	if (best < 0 && why && whylen) {
		if (a->pinned && !n_pin)
			snprintf(why, whylen, "pinned node '%s' is not in the cluster", a->pinned);
		else if (!n_ready)
			snprintf(why, whylen, "no ready node%s%s", a->pinned ? " (pinned to " : "",
				 a->pinned ? a->pinned : "");
		else if (!n_dev)
			snprintf(why, whylen, "no ready node has a GPU");
		else
			snprintf(why, whylen, "no ready node has %llu bytes free", (unsigned long long)a->mem_bytes);
		if (a->pinned && n_pin && !n_ready)
			snprintf(why, whylen, "pinned node '%s' is not ready", a->pinned);
	}
	return best;
}
