/*
 * node/dataplane.c - the node's UCX data plane: one receiver thread takes
 * TransportRequest tag messages (node/wire.h), a few workers run them and
 * send each TransportReply to its requester over an endpoint cached per
 * requester address (docs/cluster.md, "Data plane").
 *
 * Why a receiver plus workers: the receiver keeps the UCX worker progressing
 * at all times (software RMA over TCP needs the target side to progress, so
 * an ExportContext'ed region can be pulled while a model runs), and a slow
 * model does not hold up requests to other agents. Requests to one agent
 * run one at a time (its mutex); up to `workers` agents run in parallel.
 *
 * Cost: the receiver's buffer is AIDOS_WIRE_MAX_MSG bytes of address space,
 * touched only as far as messages reach; a request is unpacked once (its
 * tensors are read in place by the executor), its reply packed once into
 * the worker's buffer, which grows to the largest reply and stays.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "node/node.h"
#include "node/wire.h"
#include "pools/pools.h"

#define RECV_POLL_MS 100        /* the receiver checks for stop this often */
#define SEND_TIMEOUT_MS 5000    /* a reply the client does not take in 5 s is dropped */
#define QUEUE_MAX 1024          /* requests waiting: beyond, answered "busy" at once */
#define MAX_WORKERS 64
#define MAX_REQ_ADDR 65536      /* a requester's worker address */

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- endpoints cached per requester address ---- */

struct node_peer {
	node_peer *next;
	uint8_t *addr;
	size_t len;
	xport_ep *ep;
	int refs;        /* holders (under peers->mu) */
	int stale;       /* failed: disconnect when the last holder lets go */
	uint64_t used_ms;
};

struct node_peers {
	xport *x;
	pthread_mutex_t mu;
	node_peer *list;
	int n;
};

int node_peers_create(xport *x, node_peers **out)
{
	node_peers *p = pool_calloc(1, sizeof *p);
	*out = NULL;
	if (!p)
		return AIDOS_E_NOMEM;
	p->x = x;
	pthread_mutex_init(&p->mu, NULL);
	*out = p;
	return 0;
}

static void peer_free(node_peers *p, node_peer *e)
{
	if (e->ep)
		xport_disconnect(p->x, e->ep);
	pool_free(e->addr);
	pool_free(e);
}

void node_peers_destroy(node_peers *p)
{
	if (!p)
		return;
	while (p->list) {
		node_peer *e = p->list;
		p->list = e->next;
		peer_free(p, e);
	}
	pthread_mutex_destroy(&p->mu);
	pool_free(p);
}

/* Unlinks e (p->mu held). */
static void peer_unlink(node_peers *p, node_peer *e)
{
	node_peer **pp;
	for (pp = &p->list; *pp && *pp != e; pp = &(*pp)->next)
		;
	if (*pp) {
		*pp = e->next;
		p->n--;
	}
}

int node_peer_get(node_peers *p, const void *addr, size_t len, node_peer **out, xport_ep **ep)
{
	node_peer *e, *drop = NULL;
	int rc;

	*out = NULL;
	*ep = NULL;
	if (!addr || !len || len > MAX_REQ_ADDR)
		return AIDOS_E_INVALID;
	pthread_mutex_lock(&p->mu);
	for (e = p->list; e; e = e->next) {
		if (e->stale || e->len != len || memcmp(e->addr, addr, len))
			continue;
		if (xport_ep_status(e->ep)) {
			/* Failed: nobody gets it again; the last holder drops it. */
			e->stale = 1;
			if (!e->refs) {
				peer_unlink(p, e);
				drop = e;
			}
			break;
		}
		e->refs++;
		e->used_ms = mono_ms();
		*out = e;
		*ep = e->ep;
		pthread_mutex_unlock(&p->mu);
		return 0;
	}
	pthread_mutex_unlock(&p->mu);
	if (drop)
		peer_free(p, drop);

	if (!(e = pool_calloc(1, sizeof *e)) || !(e->addr = pool_malloc(len))) {
		pool_free(e);
		return AIDOS_E_NOMEM;
	}
	memcpy(e->addr, addr, len);
	e->len = len;
	/* Connecting outside the lock; xport_connect caches per address too,
	 * so two threads racing here share one UCX endpoint. Our cache adds
	 * holders and idle eviction, which the transport's does not. */
	if ((rc = xport_connect(p->x, addr, len, &e->ep))) {
		pool_free(e->addr);
		pool_free(e);
		return rc;
	}
	pthread_mutex_lock(&p->mu);
	for (node_peer *o = p->list; o; o = o->next)
		if (!o->stale && o->ep == e->ep) {
			/* Lost the race: use the entry already there. */
			o->refs++;
			o->used_ms = mono_ms();
			pthread_mutex_unlock(&p->mu);
			pool_free(e->addr);
			pool_free(e);
			*out = o;
			*ep = o->ep;
			return 0;
		}
	e->refs = 1;
	e->used_ms = mono_ms();
	e->next = p->list;
	p->list = e;
	p->n++;
	pthread_mutex_unlock(&p->mu);
	*out = e;
	*ep = e->ep;
	return 0;
}

void node_peer_put(node_peers *p, node_peer *e, int failed)
{
	int drop = 0;
	if (!e)
		return;
	pthread_mutex_lock(&p->mu);
	e->refs--;
	e->used_ms = mono_ms();
	if (failed || xport_ep_status(e->ep))
		e->stale = 1;
	if (e->stale && !e->refs) {
		peer_unlink(p, e);
		drop = 1;
	}
	pthread_mutex_unlock(&p->mu);
	if (drop)
		peer_free(p, e);
}

int node_peers_sweep(node_peers *p, uint64_t idle_ms)
{
	node_peer *drop = NULL, **pp;
	uint64_t now = mono_ms();
	int n = 0;

	pthread_mutex_lock(&p->mu);
	/* Unheld endpoints that failed (their client went away) or sat idle. */
	for (pp = &p->list; *pp;) {
		node_peer *e = *pp;
		if (!e->refs && (e->stale || xport_ep_status(e->ep) || now - e->used_ms >= idle_ms)) {
			*pp = e->next;
			p->n--;
			e->next = drop;
			drop = e;
			n++;
		} else {
			pp = &e->next;
		}
	}
	/* Still too many: the idlest unheld ones go. */
	while (p->n > NODE_PEERS_MAX) {
		node_peer *victim = NULL;
		for (node_peer *e = p->list; e; e = e->next)
			if (!e->refs && (!victim || e->used_ms < victim->used_ms))
				victim = e;
		if (!victim)
			break;
		peer_unlink(p, victim);
		victim->next = drop;
		drop = victim;
		n++;
	}
	pthread_mutex_unlock(&p->mu);
	while (drop) {
		node_peer *e = drop;
		drop = e->next;
		peer_free(p, e);
	}
	return n;
}

int node_peers_count(node_peers *p)
{
	pthread_mutex_lock(&p->mu);
	int n = p->n;
	pthread_mutex_unlock(&p->mu);
	return n;
}

/* ---- receiver and workers ---- */

typedef struct job {
	struct job *next;
	Aidos__TransportRequest *req;   /* unpacked (malloc) */
	uint64_t client_id;
} job;

typedef struct worker {
	node_dp *dp;
	pthread_t t;
	uint8_t *buf;                   /* packed replies; grows, never shrinks */
	size_t cap;
	int status;                     /* emit's outcome */
	size_t len;
	uint64_t request_id;
} worker;

struct node_dp {
	xport *x;
	node_peers *peers;
	node_serve_fn fn;
	void *ctx;
	const node *logn;
	pthread_t rx;
	int rx_started;
	worker *w;
	int n_w;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	job *head, *tail;
	uint32_t queued, running;       /* under mu */
	int stop;                       /* atomic */
	uint64_t served, dropped;       /* atomic */
	uint8_t *rbuf;                  /* [AIDOS_WIRE_MAX_MSG] */
};

/* Packs rep (status 0) or an error reply into w->buf. */
static int pack_reply(worker *w, uint64_t request_id, const Aidos__InferReply *rep, int status,
		      const char *error)
{
	Aidos__TransportReply tr = AIDOS__TRANSPORT_REPLY__INIT;
	tr.request_id = request_id;
	tr.reply = (Aidos__InferReply *)rep;
	tr.status = status;
	tr.error = (char *)(error ? error : "");
	size_t n = protobuf_c_message_get_packed_size(&tr.base);
	if (n > AIDOS_WIRE_MAX_MSG)
		return AIDOS_E_RANGE;
	if (n > w->cap) {
		size_t ncap = n < 4096 ? 4096 : n;
		uint8_t *b = pool_realloc(w->buf, ncap);
		if (!b)
			return AIDOS_E_NOMEM;
		w->buf = b;
		w->cap = ncap;
	}
	w->len = protobuf_c_message_pack(&tr.base, w->buf);
	return 0;
}

static int emit(void *arg, const Aidos__InferReply *rep)
{
	worker *w = arg;
	w->status = pack_reply(w, w->request_id, rep, 0, NULL);
	return w->status;
}

static void send_reply(node_dp *dp, worker *w, const Aidos__TransportRequest *req, uint64_t cid)
{
	node_peer *pe = NULL;
	xport_ep *ep = NULL;
	int rc;
	if ((rc = node_peer_get(dp->peers, req->from->ucx_address.data, req->from->ucx_address.len, &pe, &ep))) {
		node_log(dp->logn, NODE_LOG_WARN, "data plane: cannot reach client %012" PRIx64 " to reply: %s", cid,
			 aidos_strerror(rc));
		return;
	}
	rc = xport_tag_send(dp->x, ep, aidos_wire_reply_tag(cid), w->buf, w->len, SEND_TIMEOUT_MS);
	if (rc)
		node_log(dp->logn, NODE_LOG_WARN, "data plane: reply to client %012" PRIx64 " (%zu bytes) failed: %s",
			 cid, w->len, aidos_strerror(rc));
	node_peer_put(dp->peers, pe, rc != 0);
}

static void run_job(node_dp *dp, worker *w, job *j)
{
	const Aidos__TransportRequest *req = j->req;
	char err[512] = "";
	int rc;

	w->request_id = req->req ? req->req->request_id : 0;
	w->status = -1;
	if (!req->req) {
		rc = AIDOS_E_INVALID;
		snprintf(err, sizeof err, "TransportRequest without an InferRequest");
	} else {
		rc = dp->fn(dp->ctx, req->req, emit, w, err, sizeof err);
		if (!rc && w->status) {
			rc = w->status;
			if (rc == AIDOS_E_RANGE)
				snprintf(err, sizeof err, "the reply exceeds the %u-byte message limit",
					 AIDOS_WIRE_MAX_MSG);
			else
				snprintf(err, sizeof err, "cannot pack the reply: %s", aidos_strerror(rc));
		}
	}
	if (rc) {
		if (!err[0])
			snprintf(err, sizeof err, "%s", aidos_strerror(rc));
		if (pack_reply(w, w->request_id, NULL, rc, err))
			return;
	}
	send_reply(dp, w, req, j->client_id);
	__atomic_add_fetch(&dp->served, 1, __ATOMIC_RELAXED);
}

static void *worker_main(void *arg)
{
	worker *w = arg;
	node_dp *dp = w->dp;
	for (;;) {
		pthread_mutex_lock(&dp->mu);
		while (!dp->head && !__atomic_load_n(&dp->stop, __ATOMIC_ACQUIRE))
			pthread_cond_wait(&dp->cv, &dp->mu);
		job *j = dp->head;
		if (!j) {   /* stop, and the queue is drained */
			pthread_mutex_unlock(&dp->mu);
			break;
		}
		dp->head = j->next;
		if (!dp->head)
			dp->tail = NULL;
		dp->queued--;
		dp->running++;
		pthread_mutex_unlock(&dp->mu);

		run_job(dp, w, j);
		aidos__transport_request__free_unpacked(j->req, NULL);
		pool_free(j);

		pthread_mutex_lock(&dp->mu);
		dp->running--;
		pthread_mutex_unlock(&dp->mu);
	}
	return NULL;
}

/* Answers at once (queue full): from the receiver, with a private buffer. */
static void reply_busy(node_dp *dp, const Aidos__TransportRequest *req, uint64_t cid)
{
	worker w = { .dp = dp };
	char err[128];
	snprintf(err, sizeof err, "node busy: %d requests queued; try again", QUEUE_MAX);
	if (!pack_reply(&w, req->req ? req->req->request_id : 0, NULL, -EBUSY, err))
		send_reply(dp, &w, req, cid);
	pool_free(w.buf);
}

static void *rx_main(void *arg)
{
	node_dp *dp = arg;
	unsigned long long bad_logged = 0;
	while (!__atomic_load_n(&dp->stop, __ATOMIC_ACQUIRE)) {
		size_t len = 0;
		uint64_t tag = 0;
		int rc = xport_tag_recv(dp->x, AIDOS_TAG_REQ, AIDOS_TAG_KIND_MASK, dp->rbuf, AIDOS_WIRE_MAX_MSG, &len,
					&tag, RECV_POLL_MS);
		if (rc == -ETIMEDOUT)
			continue;
		uint64_t cid = tag & AIDOS_TAG_CLIENT_MASK;
		if (rc) {
			__atomic_add_fetch(&dp->dropped, 1, __ATOMIC_RELAXED);
			if (rc == AIDOS_E_RANGE)
				node_log(dp->logn, NODE_LOG_WARN,
					 "data plane: dropped a %zu-byte request from client %012" PRIx64
					 " (limit %u bytes)", len, cid, AIDOS_WIRE_MAX_MSG);
			else if (bad_logged++ < 100)
				node_log(dp->logn, NODE_LOG_WARN, "data plane: receive failed: %s", aidos_strerror(rc));
			continue;
		}
		Aidos__TransportRequest *req = aidos__transport_request__unpack(NULL, len, dp->rbuf);
		const char *why = NULL;
		if (!req)
			why = "not a TransportRequest";
		else if (!req->from || !req->from->ucx_address.len)
			why = "no address to reply to";
		else if (req->from->ucx_address.len > MAX_REQ_ADDR)
			why = "reply address too long";
		else if ((req->from->client_id & AIDOS_TAG_CLIENT_MASK) != cid)
			why = "client id differs from its tag";
		if (why) {
			__atomic_add_fetch(&dp->dropped, 1, __ATOMIC_RELAXED);
			node_log(dp->logn, NODE_LOG_WARN,
				 "data plane: dropped a malformed request (%zu bytes, client %012" PRIx64 "): %s", len,
				 cid, why);
			if (req)
				aidos__transport_request__free_unpacked(req, NULL);
			continue;
		}
		job *j = pool_calloc(1, sizeof *j);
		pthread_mutex_lock(&dp->mu);
		int full = !j || dp->queued >= QUEUE_MAX;
		if (!full) {
			j->req = req;
			j->client_id = cid;
			if (dp->tail)
				dp->tail->next = j;
			else
				dp->head = j;
			dp->tail = j;
			dp->queued++;
			pthread_cond_signal(&dp->cv);
		}
		pthread_mutex_unlock(&dp->mu);
		if (full) {
			pool_free(j);
			reply_busy(dp, req, cid);
			aidos__transport_request__free_unpacked(req, NULL);
		}
	}
	return NULL;
}

int node_dp_start(xport *x, node_peers *peers, int workers, node_serve_fn fn, void *ctx, const node *logn,
		  node_dp **out, char *err, size_t errlen)
{
	node_dp *dp;
	int rc;

	*out = NULL;
	if (workers < 1)
		workers = 1;
	if (workers > MAX_WORKERS)
		workers = MAX_WORKERS;
	if (!(dp = pool_calloc(1, sizeof *dp)) || !(dp->w = pool_calloc((size_t)workers, sizeof *dp->w)) ||
	    !(dp->rbuf = pool_malloc(AIDOS_WIRE_MAX_MSG))) {
		if (dp) {
			pool_free(dp->w);
			pool_free(dp);
		}
		snprintf(err, errlen, "data plane: out of memory");
		return AIDOS_E_NOMEM;
	}
	dp->x = x;
	dp->peers = peers;
	dp->fn = fn;
	dp->ctx = ctx;
	dp->logn = logn;
	pthread_mutex_init(&dp->mu, NULL);
	pthread_cond_init(&dp->cv, NULL);
	for (int i = 0; i < workers; i++) {
		dp->w[i].dp = dp;
		if ((rc = pthread_create(&dp->w[i].t, NULL, worker_main, &dp->w[i]))) {
			snprintf(err, errlen, "data plane: cannot start a worker: %s", strerror(rc));
			node_dp_stop(dp);
			return -rc;
		}
		dp->n_w++;
	}
	if ((rc = pthread_create(&dp->rx, NULL, rx_main, dp))) {
		snprintf(err, errlen, "data plane: cannot start the receiver: %s", strerror(rc));
		node_dp_stop(dp);
		return -rc;
	}
	dp->rx_started = 1;
	*out = dp;
	return 0;
}

void node_dp_stop(node_dp *dp)
{
	if (!dp)
		return;
	/* release: the receiver and the workers see stop after everything
	 * queued before it */
	__atomic_store_n(&dp->stop, 1, __ATOMIC_RELEASE);
	if (dp->rx_started)
		pthread_join(dp->rx, NULL);
	pthread_mutex_lock(&dp->mu);
	pthread_cond_broadcast(&dp->cv);
	pthread_mutex_unlock(&dp->mu);
	for (int i = 0; i < dp->n_w; i++)
		pthread_join(dp->w[i].t, NULL);
	for (int i = 0; i < dp->n_w; i++)
		pool_free(dp->w[i].buf);
	while (dp->head) {   /* none left after the joins; kept for safety */
		job *j = dp->head;
		dp->head = j->next;
		aidos__transport_request__free_unpacked(j->req, NULL);
		pool_free(j);
	}
	pthread_mutex_destroy(&dp->mu);
	pthread_cond_destroy(&dp->cv);
	pool_free(dp->rbuf);
	pool_free(dp->w);
	pool_free(dp);
}

uint32_t node_dp_queue_len(node_dp *dp)
{
	if (!dp)
		return 0;
	pthread_mutex_lock(&dp->mu);
	uint32_t n = dp->queued + dp->running;
	pthread_mutex_unlock(&dp->mu);
	return n;
}

void node_dp_counts(node_dp *dp, uint64_t *served, uint64_t *dropped)
{
	*served = dp ? __atomic_load_n(&dp->served, __ATOMIC_RELAXED) : 0;
	*dropped = dp ? __atomic_load_n(&dp->dropped, __ATOMIC_RELAXED) : 0;
}
