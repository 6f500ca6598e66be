/*
 * sched/dispatch.c - the dispatch policy (sched/dispatch.h tells the order,
 * admission and grouping rules). A run queue is a sorted array of request
 * pointers: insertion is a binary search and a memmove of at most `cap`
 * pointers (a few hundred ns for a thousand), picking is a scan from the
 * front that stops at the first request whose agent is free.
 */
#include <stdio.h>
#include <string.h>

#include "aidos/aidos.h"
#include "sched/dispatch.h"

void disp_queue_init(disp_queue *q, disp_req **slots, int cap)
{
	memset(q, 0, sizeof *q);
	q->q = slots;
	q->cap = cap;
}

double disp_score(int priority, uint64_t est_ns)
{
	return (double)priority / (double)(est_ns ? est_ns : 1);
}

int disp_before(const disp_req *a, const disp_req *b)
{
	if (a->priority != b->priority)
		return a->priority > b->priority;
	uint64_t da = a->deadline_ns ? a->deadline_ns : UINT64_MAX;
	uint64_t db = b->deadline_ns ? b->deadline_ns : UINT64_MAX;
	if (da != db)
		return da < db;
	/* Same class, same deadline: priority x 1/est, i.e. the shorter
	 * estimate (the priorities are equal here). */
	if (a->est_ns != b->est_ns)
		return a->est_ns < b->est_ns;
	return a->seq < b->seq;
}

int disp_admit(const disp_queue *q, const disp_req *r, uint64_t now_ns, uint64_t running_ns, int workers,
	       char *err, size_t errlen)
{
	if (q->n >= q->cap) {
		if (err && errlen)
			snprintf(err, errlen, "run queue full (%d requests waiting)", q->n);
		return AIDOS_E_BUSY;
	}
	if (!r->deadline_ns)
		return 0;
	/* The work that runs before r: every queued request ordered before it
	 * (a new request is last among equals, so compare with seq past all). */
	disp_req probe = *r;
	probe.seq = UINT64_MAX;
	uint64_t ahead = 0;
	for (int i = 0; i < q->n && disp_before(q->q[i], &probe); i++)
		ahead += q->q[i]->est_ns;
	uint64_t wait = (ahead + running_ns) / (uint64_t)(workers > 0 ? workers : 1);
	uint64_t finish = now_ns + wait + r->est_ns;
	if (finish > r->deadline_ns) {
		if (err && errlen) {
			if (r->deadline_ns <= now_ns)
				snprintf(err, errlen, "deadline already passed (%.3f ms ago)",
					 (double)(now_ns - r->deadline_ns) / 1e6);
			else
				snprintf(err, errlen,
					 "deadline in %.3f ms cannot be met: %.3f ms of work queued ahead, %.3f ms "
					 "estimated for this request",
					 (double)(r->deadline_ns - now_ns) / 1e6, (double)wait / 1e6,
					 (double)r->est_ns / 1e6);
		}
		return AIDOS_E_DEADLINE;
	}
	return 0;
}

int disp_insert(disp_queue *q, disp_req *r)
{
	if (q->n >= q->cap)
		return AIDOS_E_BUSY;
	r->seq = q->next_seq++;
	int lo = 0, hi = q->n;
	while (lo < hi) {   /* first position whose request r runs before */
		int mid = (lo + hi) / 2;
		if (disp_before(q->q[mid], r))
			lo = mid + 1;
		else
			hi = mid;
	}
	memmove(&q->q[lo + 1], &q->q[lo], (size_t)(q->n - lo) * sizeof *q->q);
	q->q[lo] = r;
	q->n++;
	q->work_ns += r->est_ns;
	return 0;
}

int disp_pick(const disp_queue *q, int (*busy)(const disp_req *r, void *ctx), void *ctx)
{
	for (int i = 0; i < q->n; i++)
		if (!busy || !busy(q->q[i], ctx))
			return i;
	return -1;
}

disp_req *disp_take(disp_queue *q, int i)
{
	disp_req *r = q->q[i];
	memmove(&q->q[i], &q->q[i + 1], (size_t)(q->n - i - 1) * sizeof *q->q);
	q->n--;
	q->work_ns -= r->est_ns;
	return r;
}

int disp_group(disp_queue *q, int i, disp_req **out, int max, int (*busy)(const disp_req *r, void *ctx), void *ctx)
{
	uint32_t agent = q->q[i]->agent;
	int k = 0;
	out[k++] = disp_take(q, i);
	/* Only what would run next anyway: the agent's requests up to the
	 * first runnable request of another agent (requests of busy agents
	 * could not run now, so they do not break the run). */
	for (int j = i; j < q->n && k < max;) {
		if (q->q[j]->agent == agent)
			out[k++] = disp_take(q, j);
		else if (busy && busy(q->q[j], ctx))
			j++;
		else
			break;
	}
	return k;
}

int disp_remove(disp_queue *q, const disp_req *r)
{
	for (int i = 0; i < q->n; i++)
		if (q->q[i] == r) {
			disp_take(q, i);
			return 1;
		}
	return 0;
}

uint64_t disp_est_update(uint64_t est_ns, uint64_t sample_ns)
{
	if (!est_ns)
		return sample_ns ? sample_ns : 1;
	/* est += (sample - est) / 8, in signed arithmetic */
	int64_t d = (int64_t)sample_ns - (int64_t)est_ns;
	int64_t v = (int64_t)est_ns + d / 8;
	return v > 0 ? (uint64_t)v : 1;
}

int disp_may_start(int priority, int top, uint32_t running, int workers, int reserve)
{
	if (priority >= top)
		return 1;
	return (int)running < workers - reserve;
}
