/*
 * node/worker.c - the dispatcher: per-device run queues (sched/dispatch.h
 * orders them), worker threads pinned to cores, the run of one request on
 * an agent (its session, its pool, its state), and the idle policy
 * (node/dispatch.h is the submitters' contract).
 *
 * Locking. A run queue has a lock held for a few hundred nanoseconds (an
 * insert or a pick: a binary search and a memmove of pointers). It is an
 * adaptive mutex (spins briefly, then sleeps on a futex), not a spin lock:
 * lower classes run SCHED_IDLE, and one preempted while holding a spin lock
 * would keep the top class spinning until the idle thread next gets a
 * slice (a priority inversion of up to a scheduler tick); a waiter that
 * sleeps frees its core for the holder instead. Uncontended, lock and
 * unlock are one atomic each, no system call. The
 * agent flag `running` (one request of an agent at a time: its session is
 * single-threaded) and its latency estimate live under it. A worker runs a
 * request holding the agent's `mu`, which ExportContext also takes, so an
 * export waits for the request in flight.
 *
 * Idle. A worker with nothing runnable spins for SPIN_NS (timed with the
 * vDSO clock, no system call) watching the queue's wake sequence, then
 * sleeps on a futex on that word. A submitter (or a worker that frees an
 * agent with requests still queued) bumps the sequence and makes the wake
 * system call only when a worker sleeps. The sleeper counts itself before
 * it reads the sequence and the waker bumps the sequence before it reads
 * the count (all sequentially consistent), so a wake-up is never lost: the
 * sleeper either sees the new sequence (futex_wait returns at once) or the
 * waker sees the sleeper. An idle node's workers sleep with no timeout.
 */
#include <errno.h>
#include <inttypes.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "node/dispatch.h"
#include "node/node.h"
#include "node/wire.h"
#include "pools/pools.h"
#include "node/util.h"

#define SPIN_NS 50000ull          /* idle spin before the futex sleep: 50 us */
#define WAIT_SPIN_NS 20000ull     /* node_run's spin before its futex sleep */
#define MAX_WORKERS 64

typedef struct devq {
	pthread_mutex_t lk;        /* adaptive: see Locking above */
	disp_queue q;
	disp_req *slots[NODE_QUEUE_MAX];
	uint64_t running_ns;       /* estimated work of the groups running */
	uint32_t running;          /* requests running */
	int top;                   /* highest priority submitted here (the reserved class) */
	int reserve;               /* workers kept for the top class: 1 when there are 2 or more */
	int hi_idle;               /* the reserved worker has nothing to run (under lk) */
	/* Runs on a submitter's own thread (node_disp_submit_here), under lk:
	 * each takes an idle worker's place, so the node never runs more
	 * requests at once than it has workers. */
	int nr_busy;               /* non-reserved workers running a group */
	int inl;                   /* of their places, taken by submitters' threads */
	int hi_claimed;            /* the reserved worker's place, taken by one */
	int stop;

	uint32_t wake_seq;         /* futex word of the other workers: bumped by submits and frees */
	int sleepers;              /* of them, asleep (or about to be) on wake_seq */
	uint32_t hi_seq;           /* the reserved worker's futex word: top-class submits */
	int hi_sleepers;

	int nworkers;
	pthread_t th[MAX_WORKERS];
	int started;
	struct node_disp *d;
	int index;

	/* counters: atomic */
	uint64_t submitted, completed, failed, rej_deadline, rej_busy, expired, quota_errors, sleeps, top_kicks;
} devq;

struct node_disp {
	devq dev[NODE_MAX_DEVICES];
	int pin;
	int rt_prio;               /* > 0: the reserved worker runs SCHED_FIFO at this priority */
	int idle_ok;               /* lower-class runs may go SCHED_IDLE (run_class) */
	int (*load)(void *ctx, node_agent *a, char *err, size_t errlen);  /* a lazy agent's first run */
	void *load_ctx;
	int cpus[CPU_SETSIZE];
	int ncpu;
	const node *logn;
};

static void futex_wait(uint32_t *w, uint32_t val)
{
	syscall(SYS_futex, w, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake(uint32_t *w, int n)
{
	syscall(SYS_futex, w, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

/* Bumps a sequence; wakes one of its sleepers (all: every one) if there
 * is one. hi: the reserved worker's word, else the others'. */
static void kick(devq *dq, int hi, int all)
{
	uint32_t *w = hi ? &dq->hi_seq : &dq->wake_seq;
	int *sl = hi ? &dq->hi_sleepers : &dq->sleepers;
	if (hi)
		__atomic_add_fetch(&dq->top_kicks, 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(w, 1, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(sl, __ATOMIC_SEQ_CST))
		futex_wake(w, all ? INT32_MAX : 1);
}

static node_job *job_of(const disp_req *r)
{
	return (node_job *)((char *)r - offsetof(node_job, dr));
}

/* sched's busy(): an agent runs one request at a time (under dq->lk). */
static int agent_busy(const disp_req *r, void *ctx)
{
	(void)ctx;
	return job_of(r)->agent->running;
}

/* Set by node_job_reply_failed() from inside done() on this worker: the
 * job itself may be reused as soon as done() returns, so the flag lives
 * here. */
static __thread int tl_reply_failed;

void node_job_reply_failed(node_job *j)
{
	(void)j;
	tl_reply_failed = 1;
}

/* Calls done() and then releases node_run's waiter (the job may be gone
 * as soon as the word is set, or as soon as done() returns for a job
 * without a waiter). Returns 1 when done() said its reply failed. */
static int finish(node_job *j, int rc, const char *err)
{
	uint32_t *w = j->waiter;
	if (rc)
		j->nout = 0;
	tl_reply_failed = 0;
	j->done(j, rc, rc ? err : NULL);
	int failed = tl_reply_failed;
	if (w) {
		__atomic_store_n(w, 1, __ATOMIC_RELEASE);   /* the job's results before the flag */
		futex_wake(w, 1);
	}
	return failed;
}

/* Runs below the top class yield the cores to it. A run is never
 * preempted by the dispatcher, but the kernel shares a core between the
 * threads that want it: a lower-class run (on a worker, or on a socket
 * poller in a worker's place) next to the top class's poller and client
 * turns the top class's tail into a kernel time slice (through the socket
 * on 2 cores: p99 11x unloaded). So a thread that runs, or waits for, a
 * lower-class request is SCHED_IDLE (the kernel preempts it at once for
 * any ordinary thread that wakes), and one that runs or waits for the top
 * class is SCHED_OTHER again. One system call per change of class on a
 * thread, none in steady state. Only where the process may return from
 * SCHED_IDLE (root, CAP_SYS_NICE or RLIMIT_NICE: d->idle_ok), else a
 * thread could be stuck idle-class serving the top class later; a thread
 * the operator made real-time is left alone. Cost: lower classes run only
 * on cores nothing else wants (other processes included). */
static __thread int run_low;    /* this thread is SCHED_IDLE */
static __thread int run_fixed;  /* not SCHED_OTHER/IDLE, or a change failed: leave it */

static void run_class(devq *dq, const node_job *j)
{
	int low = j->dr.priority < __atomic_load_n(&dq->top, __ATOMIC_RELAXED);
	if (low == run_low || run_fixed || !dq->d->idle_ok)
		return;
	int policy;
	struct sched_param sp;
	if (pthread_getschedparam(pthread_self(), &policy, &sp) || (policy != SCHED_OTHER && policy != SCHED_IDLE)) {
		run_fixed = 1;
		return;
	}
	sp.sched_priority = 0;
	if (pthread_setschedparam(pthread_self(), low ? SCHED_IDLE : SCHED_OTHER, &sp)) {
		run_fixed = 1;
		return;
	}
	run_low = low;
}

/* Runs one request of agent a (its group's worker holds a->running). */
static void run_one(devq *dq, node_job *j)
{
	node_agent *a = j->agent;
	aidos_tensor in[NODE_MAX_INPUTS + NODE_MAX_STATE];
	char err[600];
	int rc = 0, k, nout;
	run_class(dq, j);
	uint64_t t0 = mono_ns();

	j->queued_ns = t0 - j->t_submit;
	j->exec_ms = 0;
	if (j->dr.deadline_ns && t0 > j->dr.deadline_ns) {
		/* Admitted on an estimate that proved short: refused explicitly. */
		snprintf(err, sizeof err, "agent %s: deadline passed while queued (%.3f ms late, queued %.3f ms)",
			 a->name, (double)(t0 - j->dr.deadline_ns) / 1e6, (double)j->queued_ns / 1e6);
		__atomic_add_fetch(&dq->expired, 1, __ATOMIC_RELAXED);
		__atomic_add_fetch(&dq->failed, 1, __ATOMIC_RELAXED);
		__atomic_add_fetch(&a->rejected, 1, __ATOMIC_RELAXED);
		finish(j, AIDOS_E_DEADLINE, err);
		return;
	}

	pthread_mutex_lock(&a->mu);
	pthread_mutex_lock(&a->smu);
	int frozen = a->frozen, dead = a->state_now == NODE_AGENT_DEAD;
	if (!frozen && !dead)
		a->state_now = NODE_AGENT_INFER;
	pthread_mutex_unlock(&a->smu);
	if (frozen || dead) {
		pthread_mutex_unlock(&a->mu);
		snprintf(err, sizeof err,
			 frozen ? "agent '%s' is migrating away from this node; resolve it again"
				: "no agent '%s' on this node (just removed)",
			 a->name);
		__atomic_add_fetch(&dq->failed, 1, __ATOMIC_RELAXED);
		finish(j, AIDOS_E_NOTFOUND, err);
		return;
	}

	/* A lazy agent loads on its first request (or earlier, by the node's
	 * loader thread): under mu, as the load requires. */
	if (!__atomic_load_n(&a->loaded, __ATOMIC_ACQUIRE)) {
		rc = dq->d->load ? dq->d->load(dq->d->load_ctx, a, err, sizeof err) : AIDOS_E_NOTFOUND;
		for (int i = 0; !rc && i < j->nin; i++)
			for (int s = 0; s < a->n_state; s++)
				if (j->in[i].name && !strcmp(j->in[i].name, a->state[s].input)) {
					snprintf(err, sizeof err, "agent %s: tensor '%.128s' is the agent's state; do not send it",
						 a->name, j->in[i].name);
					rc = AIDOS_E_INVALID;
				}
		if (rc) {
			pthread_mutex_lock(&a->smu);
			a->errors++;
			if (a->state_now == NODE_AGENT_INFER)
				a->state_now = NODE_AGENT_LOADING;
			pthread_mutex_unlock(&a->smu);
			pthread_mutex_unlock(&a->mu);
			__atomic_add_fetch(&dq->failed, 1, __ATOMIC_RELAXED);
			finish(j, rc, err);
			return;
		}
	}

	/* The request's tensors, then the state from the context region. */
	for (k = 0; k < j->nin; k++)
		in[k] = j->in[k];
	for (int s = 0; s < a->n_state; s++) {
		const node_state *st = &a->state[s];
		aidos_tensor *t = &in[k++];
		memset(t, 0, sizeof *t);
		t->name = st->input;
		t->dtype = st->dtype;
		t->rank = st->rank;
		memcpy(t->dims, st->dims, sizeof t->dims);
		t->data = a->ctx + st->offset;
	}

	/* Arenas planned during this run come from the agent's pool. */
	mpool *old = mpool_set_current(a->pool);
	uint64_t t1 = mono_ns();
	rc = aidos_session_run(a->sess, k, in);
	uint64_t t2 = mono_ns();
	mpool_set_current(old);
	j->exec_ms = (double)(t2 - t1) / 1e6;

	if (rc == AIDOS_E_QUOTA) {
		mpool_usage u;
		mpool_usage_get(a->pool, &u);
		snprintf(err, sizeof err,
			 "agent %s: memory quota exceeded: the plan needs a %" PRIu64 "-byte arena, the quota is %" PRIu64
			 " bytes with %" PRIu64 " in use",
			 a->name, u.last_need, u.quota, u.used);
		__atomic_add_fetch(&dq->quota_errors, 1, __ATOMIC_RELAXED);
	} else if (rc) {
		/* An input the session cannot take is the caller's error, never
		 * "not found" (which clients read as "the agent moved"). */
		snprintf(err, sizeof err, "agent %s: %s", a->name, aidos_session_errmsg(a->sess));
		if (rc == AIDOS_E_NOTFOUND || rc == AIDOS_E_SHAPE)
			rc = AIDOS_E_INVALID;
	} else {
		nout = aidos_model_n_outputs(node_model_handle(a->model));
		if (nout > j->nout) {
			snprintf(err, sizeof err, "agent %s: %d outputs, the request has room for %d", a->name, nout,
				 j->nout);
			rc = AIDOS_E_RANGE;
		}
		for (int i = 0; !rc && i < nout; i++)
			aidos_session_output(a->sess, i, &j->out[i]);
		/* State outputs must fit the state, else the state is left alone. */
		for (int s = 0; !rc && s < a->n_state; s++) {
			const node_state *st = &a->state[s];
			const aidos_tensor *o = &j->out[st->out_idx];
			int same = o->dtype == st->dtype && o->rank == st->rank;
			for (int d = 0; same && d < st->rank; d++)
				same = o->dims[d] == st->dims[d];
			if (!same) {
				snprintf(err, sizeof err,
					 "agent %s: state output '%s' came out in another type or shape than the state "
					 "'%s' (state unchanged)",
					 a->name, st->output, st->input);
				rc = AIDOS_E_INVALID;
			}
		}
		if (!rc)
			j->nout = nout;
	}

	/* After done() the job is the submitter's again (or, with a waiter,
	 * once the word is set): read nothing from it below. */
	uint32_t *w = j->waiter;
	double exec_ms = j->exec_ms;
	j->waiter = NULL;            /* finish() below must not release it yet */
	int fold = !finish(j, rc, err) && !rc;

	aidos_plan_stats ps;
	size_t arena = aidos_session_stats(a->sess, &ps) ? 0 : ps.arena_bytes;
	pthread_mutex_lock(&a->smu);
	if (fold) {
		for (int s = 0; s < a->n_state; s++) {   /* memmove: an output may alias its input */
			aidos_tensor o;
			aidos_session_output(a->sess, a->state[s].out_idx, &o);
			memmove(a->ctx + a->state[s].offset, o.data, a->state[s].bytes);
		}
		if (a->n_state)
			a->version++;
		a->requests++;
		double ms = exec_ms;
		a->latency_ms = a->requests == 1 ? ms : 0.9 * a->latency_ms + 0.1 * ms;
	} else {
		a->errors++;
		if (rc == AIDOS_E_QUOTA)
			a->quota_errors++;
	}
	a->arena_bytes = arena;
	a->state_now = NODE_AGENT_IDLE;
	pthread_mutex_unlock(&a->smu);
	pthread_mutex_unlock(&a->mu);

	/* The estimate learns from successful runs only (a failed plan says
	 * nothing about the model's latency). */
	if (!rc) {
		pthread_mutex_lock(&dq->lk);
		a->est_ns[dq->index] = disp_est_update(a->est_ns[dq->index], t2 - t1);
		pthread_mutex_unlock(&dq->lk);
	}
	__atomic_add_fetch(rc ? &dq->failed : &dq->completed, 1, __ATOMIC_RELAXED);
	if (w) {
		__atomic_store_n(w, 1, __ATOMIC_RELEASE);
		futex_wake(w, 1);
	}
}

static void pin_self(struct node_disp *d, int i)
{
	if (!d->pin || d->ncpu <= 0)
		return;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(d->cpus[i % d->ncpu], &set);
	pthread_setaffinity_np(pthread_self(), sizeof set, &set);   /* advice: failure is harmless */
}

/* Bytes of a tensor (0: unknown dtype or overflow). */
static size_t tensor_bytes(const aidos_tensor *t)
{
	size_t n = aidos_wire_dtype_size(t->dtype);
	for (int d = 0; n && d < t->rank; d++)
		if (t->dims[d] < 0 || __builtin_mul_overflow(n, (size_t)t->dims[d], &n))
			return 0;
	return n;
}

/* Fuses the first requests of a group of one agent into one run along
 * dimension 0: their inputs are copied one after another into the agent's
 * staging block (its pool), its fused session runs [B, ...], and each
 * request gets views of its row of every output (no copy). Only when the
 * agent is batchable (stateless, symbolic dim 0 on every input) and the
 * requests agree on names, types and the other dimensions, each with dim
 * 0 = 1. Returns how many requests it served (0: none, the caller runs
 * them one by one, which also reports any error in its own words). */
static int run_fused(devq *dq, node_job **jobs, int k)
{
	node_agent *a = jobs[0]->agent;
	node_job *j0 = jobs[0];
	int B = k < a->batch_max ? k : a->batch_max, nin = j0->nin;
	size_t per[NODE_MAX_INPUTS], total = 0;
	uint64_t t0 = mono_ns();

	if (nin < 1 || nin > NODE_MAX_INPUTS)
		return 0;
	for (int i = 0; i < nin; i++) {
		const aidos_tensor *t = &j0->in[i];
		if (t->rank < 1 || t->dims[0] != 1 || !t->data || !t->name || !(per[i] = tensor_bytes(t)))
			return 0;
		total += pool_align_up(per[i] * (size_t)a->batch_max, POOL_ALIGN);
	}
	for (int b = 1; b < B; b++) {   /* the longest compatible prefix */
		const node_job *j = jobs[b];
		int ok = j->nin == nin && !(j->dr.deadline_ns && t0 > j->dr.deadline_ns);
		for (int i = 0; ok && i < nin; i++) {
			const aidos_tensor *x = &j->in[i], *y = &j0->in[i];
			ok = x->name && !strcmp(x->name, y->name) && x->dtype == y->dtype && x->rank == y->rank && x->data &&
			     !memcmp(x->dims, y->dims, (size_t)x->rank * sizeof x->dims[0]);
		}
		if (!ok) {
			B = b;
			break;
		}
	}
	if (B < 2 || (j0->dr.deadline_ns && t0 > j0->dr.deadline_ns))
		return 0;

	pthread_mutex_lock(&a->mu);
	pthread_mutex_lock(&a->smu);
	int usable = __atomic_load_n(&a->loaded, __ATOMIC_ACQUIRE) && a->batchable && !a->frozen &&
		     a->state_now != NODE_AGENT_DEAD;
	if (usable)
		a->state_now = NODE_AGENT_INFER;
	pthread_mutex_unlock(&a->smu);
	if (!usable)
		goto no;
	/* Staging and the fused session: made once, at the first fused run
	 * (planning time, not per request); a quota that cannot hold them
	 * simply means no fusion. */
	if (a->stage_len < total) {
		if (a->stage)
			mpool_free(a->pool, a->stage);
		a->stage = NULL;
		a->stage_len = 0;
		if (mpool_alloc(a->pool, total, &a->stage))
			goto idle;
		a->stage_len = total;
	}
	char why[300];
	if (!a->bsess && aidos_session_create(node_model_handle(a->model), NULL, &a->bsess, why, sizeof why))
		goto idle;
	aidos_tensor in[NODE_MAX_INPUTS];
	unsigned char *st = a->stage;
	for (int i = 0; i < nin; i++) {
		in[i] = j0->in[i];
		in[i].dims[0] = B;
		in[i].data = st;
		for (int b = 0; b < B; b++)
			memcpy(st + (size_t)b * per[i], jobs[b]->in[i].data, per[i]);
		st += pool_align_up(per[i] * (size_t)a->batch_max, POOL_ALIGN);
	}
	mpool *old = mpool_set_current(a->pool);
	uint64_t t1 = mono_ns();
	int rc = aidos_session_run(a->bsess, nin, in);
	uint64_t t2 = mono_ns();
	mpool_set_current(old);
	int nout = aidos_model_n_outputs(node_model_handle(a->model));
	aidos_tensor o[NODE_MAX_INPUTS];
	size_t orow[NODE_MAX_INPUTS];
	for (int i = 0; !rc && i < nout; i++) {
		aidos_session_output(a->bsess, i, &o[i]);
		size_t bytes = tensor_bytes(&o[i]);
		/* Every output must carry the batch in dim 0, or the rows cannot
		 * be handed out: run them one by one instead. */
		if (nout > NODE_MAX_INPUTS || o[i].rank < 1 || o[i].dims[0] != B || !bytes)
			rc = AIDOS_E_SHAPE;
		else
			orow[i] = bytes / (size_t)B;
	}
	for (int b = 0; !rc && b < B; b++)
		if (jobs[b]->nout < nout)
			rc = AIDOS_E_RANGE;
	if (rc)
		goto idle;
	double each_ms = (double)(t2 - t1) / 1e6 / B;
	/* Counted before the replies go: whoever hears a reply sees it. */
	pthread_mutex_lock(&a->smu);
	a->requests += (uint64_t)B;
	a->fused += (uint64_t)B;
	a->latency_ms = a->requests == (uint64_t)B ? each_ms : 0.9 * a->latency_ms + 0.1 * each_ms;
	pthread_mutex_unlock(&a->smu);
	for (int b = 0; b < B; b++) {
		node_job *j = jobs[b];
		for (int i = 0; i < nout; i++) {
			j->out[i] = o[i];
			j->out[i].dims[0] = 1;
			j->out[i].data = (unsigned char *)o[i].data + (size_t)b * orow[i];
		}
		j->nout = nout;
		j->exec_ms = each_ms;
		j->queued_ns = t1 - j->t_submit;
		finish(j, 0, NULL);   /* the job is the submitter's again after this */
	}
	pthread_mutex_lock(&a->smu);
	a->state_now = NODE_AGENT_IDLE;
	pthread_mutex_unlock(&a->smu);
	pthread_mutex_unlock(&a->mu);
	pthread_mutex_lock(&dq->lk);
	a->est_ns[dq->index] = disp_est_update(a->est_ns[dq->index], (t2 - t1) / (uint64_t)B);
	pthread_mutex_unlock(&dq->lk);
	__atomic_add_fetch(&dq->completed, (uint64_t)B, __ATOMIC_RELAXED);
	return B;
idle:
	pthread_mutex_lock(&a->smu);
	if (a->state_now == NODE_AGENT_INFER)
		a->state_now = NODE_AGENT_IDLE;
	pthread_mutex_unlock(&a->smu);
no:
	pthread_mutex_unlock(&a->mu);
	return 0;
}

/* Under dq->lk, after a run: should another (non-reserved) worker be
 * woken? The finisher loops and takes the first runnable request it may
 * take; wake another for a second one, or, when the finisher is the
 * reserved worker, for any runnable request below the top class. */
static int wake_other(devq *dq, int reserved)
{
	uint32_t first = 0;
	int have = 0;
	for (int i = 0; i < dq->q.n; i++) {
		const disp_req *r = dq->q.q[i];
		if (agent_busy(r, NULL) || (have && r->agent == first))
			continue;
		if (reserved && r->priority < dq->top)
			return 1;
		if (have)
			return 1;
		have = 1;
		first = r->agent;
	}
	return 0;
}

typedef struct wstart {
	devq *dq;
	int i;
} wstart;

static void *worker_main(void *arg)
{
	devq *dq = ((wstart *)arg)->dq;
	int wi = ((wstart *)arg)->i;
	disp_req *g[NODE_GROUP_MAX];
	pool_free(arg);
	pin_self(dq->d, wi);
	/* The last worker is the reserved one when there is a reserve: it
	 * takes top-class requests only, so they never wait for a lower run,
	 * and it stays on its core (the others run the rest). */
	int reserved = dq->reserve && wi >= dq->nworkers - dq->reserve;
	if (reserved && dq->d->rt_prio > 0) {
		/* A real-time class for the top-class lane: other processes on
		 * the machine then cannot delay it either. It spins at most
		 * SPIN_NS before sleeping, and the kernel's RT throttling
		 * (sched_rt_runtime_us) bounds it anyway. */
		struct sched_param sp = { .sched_priority = dq->d->rt_prio };
		int e = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp);
		if (e)
			node_log(dq->d->logn, NODE_LOG_WARN, "reserved worker: SCHED_FIFO %d refused: %s (runs as a normal thread)",
				 dq->d->rt_prio, strerror(e));
	}
	uint32_t *wseq = reserved ? &dq->hi_seq : &dq->wake_seq;
	int *wsleep = reserved ? &dq->hi_sleepers : &dq->sleepers;

	for (;;) {
		uint32_t seq = __atomic_load_n(wseq, __ATOMIC_SEQ_CST);
		int k = 0, stop;
		uint64_t work = 0;
		pthread_mutex_lock(&dq->lk);
		int i = dq->q.n ? disp_pick(&dq->q, agent_busy, NULL) : -1;
		/* The queue is in priority order: if the first runnable request
		 * is below the top class, so is every later one. */
		if (i >= 0 && reserved && (dq->q.q[i]->priority < dq->top || dq->hi_claimed))
			i = -1;
		/* a place a submitter's thread runs in is not this worker's */
		if (i >= 0 && !reserved && dq->nr_busy + dq->inl >= dq->nworkers - dq->reserve)
			i = -1;
		if (reserved)
			dq->hi_idle = i < 0 && !dq->hi_claimed;
		if (i >= 0 && !reserved)
			dq->nr_busy++;
		if (i >= 0) {
			k = disp_group(&dq->q, i, g, NODE_GROUP_MAX, agent_busy, NULL);
			job_of(g[0])->agent->running = 1;
			/* The worker's own reference: a submitter may drop its
			 * reference (and a Kill the table's) as soon as done() or
			 * node_run returns, while this worker still closes the run. */
			node_agent_ref(job_of(g[0])->agent);
			for (int t = 0; t < k; t++)
				work += g[t]->est_ns;
			dq->running_ns += work;
			dq->running += (uint32_t)k;
		}
		stop = dq->stop;
		pthread_mutex_unlock(&dq->lk);

		if (k) {
			node_agent *a = job_of(g[0])->agent;
			int t = 0;
			if (k >= 2 && a->batch_max > 1) {
				node_job *jobs[NODE_GROUP_MAX];
				for (int q = 0; q < k; q++)
					jobs[q] = job_of(g[q]);
				t = run_fused(dq, jobs, k);
			}
			for (; t < k; t++)
				run_one(dq, job_of(g[t]));
			pthread_mutex_lock(&dq->lk);
			a->running = 0;
			dq->running_ns -= work;
			dq->running -= (uint32_t)k;
			if (!reserved)
				dq->nr_busy--;
			int more = wake_other(dq, reserved);
			pthread_mutex_unlock(&dq->lk);
			if (more)
				kick(dq, 0, 0);
			node_agent_unref(a);   /* the last one (a killed agent) frees it here */
			continue;
		}
		if (stop)
			break;

		/* Nothing runnable: spin a little, then sleep until the sequence
		 * moves (a submit, or an agent freed with requests queued). */
		uint64_t t0 = mono_ns();
		while (__atomic_load_n(wseq, __ATOMIC_ACQUIRE) == seq && mono_ns() - t0 < SPIN_NS)
			cpu_relax();
		if (__atomic_load_n(wseq, __ATOMIC_SEQ_CST) != seq)
			continue;
		__atomic_add_fetch(wsleep, 1, __ATOMIC_SEQ_CST);
		if (__atomic_load_n(wseq, __ATOMIC_SEQ_CST) == seq) {
			__atomic_add_fetch(&dq->sleeps, 1, __ATOMIC_RELAXED);
			futex_wait(wseq, seq);
		}
		__atomic_sub_fetch(wsleep, 1, __ATOMIC_SEQ_CST);
	}
	return NULL;
}

int node_disp_create(int workers, int pin, int rt_prio, const node *logn, node_disp **out, char *err, size_t errlen)
{
	node_disp *d;
	*out = NULL;
	if (workers < 1 || workers > MAX_WORKERS) {
		snprintf(err, errlen, "%d workers (1..%d)", workers, MAX_WORKERS);
		return AIDOS_E_INVALID;
	}
	if (!(d = pool_calloc(1, sizeof *d))) {
		snprintf(err, errlen, "out of memory");
		return AIDOS_E_NOMEM;
	}
	d->pin = pin;
	d->rt_prio = rt_prio;
	/* SCHED_IDLE -> SCHED_OTHER needs root, CAP_SYS_NICE (not checked:
	 * rare without root) or an RLIMIT_NICE reaching our nice value.
	 * AIDOS_IDLE_CLASS=0 turns it off (measurements, or a node whose lower
	 * classes must keep up with other processes). */
	struct rlimit rl;
	int nice_now = getpriority(PRIO_PROCESS, 0);
	const char *ic = getenv("AIDOS_IDLE_CLASS");
	d->idle_ok = !(ic && !strcmp(ic, "0")) &&
		     (geteuid() == 0 ||
		      (!getrlimit(RLIMIT_NICE, &rl) && (rl.rlim_cur == RLIM_INFINITY || (long)rl.rlim_cur >= 20 - nice_now)));
	d->logn = logn;
	cpu_set_t set;
	if (!sched_getaffinity(0, sizeof set, &set))
		for (int c = 0; c < CPU_SETSIZE; c++)
			if (CPU_ISSET(c, &set))
				d->cpus[d->ncpu++] = c;
	for (int v = 0; v < NODE_MAX_DEVICES; v++) {
		devq *dq = &d->dev[v];
		pthread_mutexattr_t ma;
		pthread_mutexattr_init(&ma);
		pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
		pthread_mutex_init(&dq->lk, &ma);
		pthread_mutexattr_destroy(&ma);
		disp_queue_init(&dq->q, dq->slots, NODE_QUEUE_MAX);
		dq->d = d;
		dq->index = v;
	}
	/* Only the cpu queue has workers: no other device runs agents yet. */
	devq *dq = &d->dev[0];
	dq->nworkers = workers;
	dq->reserve = workers >= 2 ? 1 : 0;
	dq->hi_idle = 1;
	dq->top = INT_MIN;
	for (int i = 0; i < workers; i++) {
		wstart *ws = pool_malloc(sizeof *ws);
		if (ws)
			*ws = (wstart){ dq, i };
		int rc = ws ? pthread_create(&dq->th[i], NULL, worker_main, ws) : ENOMEM;
		if (rc) {
			pool_free(ws);
			snprintf(err, errlen, "cannot start worker %d: %s", i, strerror(rc));
			dq->nworkers = i;
			node_disp_destroy(d);
			return -rc;
		}
		dq->started = i + 1;
	}
	*out = d;
	return 0;
}

/* Fails every queued job explicitly (the node is stopping). */
static void drain_stopped(devq *dq)
{
	for (;;) {
		pthread_mutex_lock(&dq->lk);
		disp_req *r = dq->q.n ? disp_take(&dq->q, 0) : NULL;
		pthread_mutex_unlock(&dq->lk);
		if (!r)
			break;
		node_job *j = job_of(r);
		char err[200];
		snprintf(err, sizeof err, "agent %s: the node is stopping", j->agent->name);
		__atomic_add_fetch(&dq->failed, 1, __ATOMIC_RELAXED);
		finish(j, AIDOS_E_BUSY, err);
	}
}

void node_disp_destroy(node_disp *d)
{
	if (!d)
		return;
	for (int v = 0; v < NODE_MAX_DEVICES; v++) {
		devq *dq = &d->dev[v];
		pthread_mutex_lock(&dq->lk);
		dq->stop = 1;
		pthread_mutex_unlock(&dq->lk);
		kick(dq, 0, 1);
		kick(dq, 1, 1);
		for (int i = 0; i < dq->started; i++)
			pthread_join(dq->th[i], NULL);
		drain_stopped(dq);
		pthread_mutex_destroy(&dq->lk);
	}
	pool_free(d);
}

static int submit(node_disp *d, node_job *j, int here, char *err, size_t errlen);

int node_disp_submit(node_disp *d, node_job *j, char *err, size_t errlen)
{
	return submit(d, j, 0, err, errlen);
}

int node_disp_submit_here(node_disp *d, node_job *j, char *err, size_t errlen)
{
	return submit(d, j, 1, err, errlen);
}

/* Runs j on the calling thread in the place `slot` (1: a non-reserved
 * worker's, 2: the reserved worker's) claimed under dq->lk, as a worker
 * would; then gives the place back and wakes the workers for what queued
 * meanwhile (they may have skipped it while the place was taken). */
static void run_here(devq *dq, node_job *j, int slot)
{
	node_agent *a = j->agent;
	uint64_t work = j->dr.est_ns;
	node_agent_ref(a);   /* as a worker holds it: done() may drop the submitter's */
	j->waiter = NULL;
	run_one(dq, j);      /* done() has returned: j is the submitter's again */
	pthread_mutex_lock(&dq->lk);
	a->running = 0;
	dq->running_ns -= work;
	dq->running -= 1;
	if (slot == 1) {
		dq->inl--;
	} else {
		dq->hi_claimed = 0;
		dq->hi_idle = 1;
	}
	/* The reserved worker only for top-class work: a lower class queued
	 * behind a top-class poller's run would otherwise wake it (a system
	 * call, then its 50 us idle spin on a core the top class's client and
	 * poller need) after every top-class request. */
	int more = dq->q.n > 0;
	int more_top = more && dq->reserve && dq->q.q[0]->priority >= dq->top;
	pthread_mutex_unlock(&dq->lk);
	if (more)
		kick(dq, 0, 0);
	if (more_top)
		kick(dq, 1, 0);
	node_agent_unref(a);
}

/* node_disp_submit; with here, runs j on the calling thread instead of
 * queueing it when a worker would start it at once: nothing of its class
 * or above queued, the agent idle, an idle worker's place free for its
 * class (a non-reserved one, or for the top class the reserved one).
 * Returns 1 then (done() was called), 0 when queued. */
static int submit(node_disp *d, node_job *j, int here, char *err, size_t errlen)
{
	node_agent *a = j ? j->agent : NULL;
	char why[300];
	int rc;

	if (!a || !j->done || j->nin < 0 || j->nin > NODE_MAX_INPUTS || (j->nin && !j->in) || j->nout < 0 ||
	    (j->nout && !j->out)) {
		snprintf(err, errlen, "malformed job (agent, done, inputs or outputs missing)");
		return AIDOS_E_INVALID;
	}
	for (int i = 0; i < j->nin; i++)
		for (int s = 0; s < a->n_state; s++)
			if (j->in[i].name && !strcmp(j->in[i].name, a->state[s].input)) {
				snprintf(err, errlen,
					 "agent %s: tensor '%.128s' is the agent's state (fed by the node from its "
					 "context); do not send it",
					 a->name, j->in[i].name);
				return AIDOS_E_INVALID;
			}
	int st = __atomic_load_n(&a->state_now, __ATOMIC_RELAXED);
	if (st == NODE_AGENT_DEAD) {
		snprintf(err, errlen, "no agent '%s' on this node (just removed)", a->name);
		return AIDOS_E_NOTFOUND;
	}
	if (__atomic_load_n(&a->frozen, __ATOMIC_RELAXED)) {
		snprintf(err, errlen, "agent '%s' is migrating away from this node; resolve it again", a->name);
		return AIDOS_E_NOTFOUND;
	}
	devq *dq = &d->dev[a->dev >= 0 && a->dev < NODE_MAX_DEVICES ? a->dev : 0];
	if (__atomic_load_n(&a->suspended, __ATOMIC_RELAXED)) {
		snprintf(err, errlen, "agent %s is suspended", a->name);
		__atomic_add_fetch(&dq->rej_busy, 1, __ATOMIC_RELAXED);
		return AIDOS_E_BUSY;
	}
	uint64_t now = mono_ns();
	j->dr.priority = j->priority == NODE_PRIO_AGENT ? a->priority : j->priority;
	if (here)       /* the submitter runs it or waits for it: it takes j's class */
		run_class(dq, j);
	j->dr.deadline_ns = j->deadline_ns ? j->deadline_ns : a->deadline_ms ? now + a->deadline_ms * 1000000ull : 0;
	j->dr.agent = a->id;
	j->t_submit = now;

	pthread_mutex_lock(&dq->lk);
	if (dq->stop || !dq->nworkers) {
		pthread_mutex_unlock(&dq->lk);
		snprintf(err, errlen, "agent %s: %s", a->name, dq->stop ? "the node is stopping" : "no worker for its device");
		return AIDOS_E_BUSY;
	}
	j->dr.est_ns = a->est_ns[dq->index];
	if (j->dr.priority > dq->top)
		dq->top = j->dr.priority;
	j->top_class = j->dr.priority >= dq->top;
	rc = disp_admit(&dq->q, &j->dr, now, dq->running_ns, dq->nworkers, why, sizeof why);
	/* Run here when a worker would start j at once: its agent idle and
	 * nothing queued that a worker would take first (the queue is in
	 * priority order: its head below j's class means j is picked first;
	 * so a top-class request is not handed off, one wake-up per side
	 * more, just because lower classes are queued). */
	int slot = 0;
	if (!rc && here && !a->running && (!dq->q.n || dq->q.q[0]->priority < j->dr.priority)) {
		if (dq->nr_busy + dq->inl < dq->nworkers - dq->reserve) {
			slot = 1;
			dq->inl++;
		} else if (dq->reserve && d->rt_prio <= 0 && j->dr.priority >= dq->top && dq->hi_idle &&
			   !dq->hi_claimed) {
			/* (with --rt-prio the reserved worker runs SCHED_FIFO: the
			 * top class stays on it, not on an ordinary thread) */
			slot = 2;
			dq->hi_claimed = 1;
			dq->hi_idle = 0;
		}
		if (slot) {
			a->running = 1;
			dq->running_ns += j->dr.est_ns;
			dq->running += 1;
		}
	}
	if (!rc && !slot)
		rc = disp_insert(&dq->q, &j->dr);
	/* Wake a worker only if one could start it now (a request of a busy
	 * agent is taken by the worker that frees it): a top-class request
	 * goes to the reserved worker when it is idle, the rest to the
	 * others. */
	int startable = !rc && !a->running;
	int to_hi = startable && dq->reserve && j->dr.priority >= dq->top && dq->hi_idle;
	pthread_mutex_unlock(&dq->lk);
	if (rc) {
		__atomic_add_fetch(rc == AIDOS_E_DEADLINE ? &dq->rej_deadline : &dq->rej_busy, 1, __ATOMIC_RELAXED);
		__atomic_add_fetch(&a->rejected, 1, __ATOMIC_RELAXED);
		snprintf(err, errlen, "agent %s: %s", a->name, why);
		return rc;
	}
	__atomic_add_fetch(&dq->submitted, 1, __ATOMIC_RELAXED);
	if (slot) {
		run_here(dq, j, slot);
		return 1;
	}
	if (startable)
		kick(dq, to_hi, 0);
	return 0;
}

int node_disp_run(node_disp *d, node_job *j, char *err, size_t errlen)
{
	uint32_t flag = 0;
	j->waiter = &flag;
	int rc = node_disp_submit(d, j, err, errlen);
	if (rc) {
		j->waiter = NULL;
		return rc;
	}
	uint64_t t0 = mono_ns();
	while (!__atomic_load_n(&flag, __ATOMIC_ACQUIRE) && mono_ns() - t0 < WAIT_SPIN_NS)
		cpu_relax();
	while (!__atomic_load_n(&flag, __ATOMIC_ACQUIRE))
		futex_wait(&flag, 0);
	return 0;
}

void node_disp_set_loader(node_disp *d, int (*fn)(void *ctx, node_agent *a, char *err, size_t errlen), void *ctx)
{
	d->load = fn;
	d->load_ctx = ctx;
}

void node_disp_counts_get(node_disp *d, node_disp_counts *c)
{
	memset(c, 0, sizeof *c);
	if (!d)
		return;
	for (int v = 0; v < NODE_MAX_DEVICES; v++) {
		devq *dq = &d->dev[v];
		c->submitted += __atomic_load_n(&dq->submitted, __ATOMIC_RELAXED);
		c->completed += __atomic_load_n(&dq->completed, __ATOMIC_RELAXED);
		c->failed += __atomic_load_n(&dq->failed, __ATOMIC_RELAXED);
		c->rejected_deadline += __atomic_load_n(&dq->rej_deadline, __ATOMIC_RELAXED);
		c->rejected_busy += __atomic_load_n(&dq->rej_busy, __ATOMIC_RELAXED);
		c->expired += __atomic_load_n(&dq->expired, __ATOMIC_RELAXED);
		c->quota_errors += __atomic_load_n(&dq->quota_errors, __ATOMIC_RELAXED);
		c->idle_sleeps += __atomic_load_n(&dq->sleeps, __ATOMIC_RELAXED);
		c->top_kicks += __atomic_load_n(&dq->top_kicks, __ATOMIC_RELAXED);
		pthread_mutex_lock(&dq->lk);
		c->queued += (uint32_t)dq->q.n;
		c->running += dq->running;
		pthread_mutex_unlock(&dq->lk);
		c->workers += dq->nworkers;
	}
}
