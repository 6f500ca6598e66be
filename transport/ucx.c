/*
 * transport/ucx.c - transport.h over UCX 1.13 UCP (Debian's libucx).
 *
 * One context (TAG + RMA), one worker in UCS_THREAD_MODE_SINGLE, and one
 * pthread mutex (x->lock) around every UCP call. Why not
 * UCS_THREAD_MODE_MULTI: we keep our own state next to UCX's (endpoint cache,
 * unpacked-rkey cache, the published description) that UCX callbacks touch
 * during progress, so we need our lock anyway; MULTI would add UCX's own lock
 * (a spinlock unless UCX_USE_MT_MUTEX=y) under ours on every call, and a
 * spinlock is the wrong tool when several threads sit in blocking calls.
 * With our lock, waiting threads drop it between progress rounds and yield
 * when another thread queues for it (x->waiting), so a thread blocked in
 * recv never starves another thread's get; any waiter progresses the worker
 * for all of them. After spin_us (50 us) of idleness a waiter sleeps in poll()
 * on the worker's event fd (UCP_FEATURE_WAKEUP, ucp_worker_arm), and a
 * thread whose progress handled events wakes sleepers with
 * ucp_worker_signal, since the event that completed their request may have
 * been consumed by it. UCX's async thread (TCP accept, keepalive timers)
 * locks its own async context and defers to progress: nothing from us.
 *
 * Measured UCX 1.13 behaviour this file is built around (see
 * /work/shared/notes/ucx-and-softroce.md and tests/test_transport.c):
 *  - UCP_ERR_HANDLING_MODE_PEER excludes sysv/posix/cma: local peers use
 *    tcp/lo (ucp_ep_create with UCX_TLS=sm,self fails "unreachable").
 *  - ucp_ep_rkey_unpack has no length argument and trusts the buffer: an
 *    all-0xff key segfaults, a zero-length posix key aborts, a random one
 *    shmat()s a random segment. Over TCP, RMA is software RMA and the target
 *    writes/reads remote_addr without any check. Hence our own envelope
 *    (length, owner, region bounds, FNV-1a checksum) around every rkey, and
 *    around the worker address for the same reason.
 *  - Only expected tag receives can be cancelled (ucp_request_cancel); a
 *    send/get/put that times out is ended by force-closing its endpoint.
 *  - 1.13 has no ucp_ep_query for transports: the lanes are parsed from
 *    ucp_ep_print_info.
 */
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <ucp/api/ucp.h>

#include "transport/transport.h"
#include "transport/wire.h"

typedef struct ux ux;
typedef struct uep uep;
typedef struct umem umem;

static const xport_ops ucx_ops;
static void ucx_destroy(ux *x);

#define RKEY_SLOTS 16            /* unpacked rkeys cached per endpoint */
#define CLOSE_BUDGET_NS 1000000000ull  /* xport_destroy/disconnect: flush-close bound */

/* Envelopes: fixed little-endian headers, version field after the magic.
 * address: "AXWA" u16 ver u16 hdr_len u32 ucx_len u32 0 u64 fnv | ucx address
 * rkey:    "AXRK" u16 ver u16 hdr_len u32 ucx_len u32 0 u64 owner u64 base
 *          u64 len u64 fnv | ucx packed rkey
 * fnv is FNV-1a over the header before it, then the UCX bytes; owner is the
 * FNV-1a of the owner's UCX worker address (what uep.peer_id holds). */
#define ENV_VERSION 1
#define ADDR_HDR 24
#define RKEY_HDR 48
#define ENV_MAX_UCX (1u << 20)   /* sanity bound on embedded UCX blobs */

struct istr {                    /* interned, immutable description strings */
	struct istr *next;
	char s[];
};

struct rk_slot {
	unsigned char *key;      /* envelope bytes this rkey was unpacked from */
	size_t len;
	ucp_rkey_h h;
	unsigned busy;           /* operations in flight using h: not evictable */
};

struct uep {
	xport_ep base;           /* first: what callers hold */
	uep *next;               /* x->eps */
	ucp_ep_h ep;             /* NULL once closed */
	int status;              /* 0, or -ECONNRESET once failed/closed (atomic) */
	int cached;              /* found by xport_connect for its address */
	unsigned refs;           /* xport_connect calls not yet disconnected */
	int lanes_final;         /* lanes re-read after the first completed op */
	uint64_t peer_id;        /* FNV-1a of the peer's UCX worker address */
	unsigned char *addr;     /* the address envelope we connected to */
	size_t addr_len;
	const char *lanes;       /* interned "tcp/lo" (atomic) */
	struct rk_slot rk[RKEY_SLOTS];
	unsigned rk_next;
};

struct umem {
	xport_mem base;          /* first: what callers hold */
	umem *next;              /* x->mems */
	ucp_mem_h memh;
	unsigned char *rkey;     /* envelope */
	size_t rkey_len;
};

struct ux {
	xport base;              /* first: what callers hold */
	pthread_mutex_t lock;    /* every UCP call, eps, mems, strs, rk slots */
	unsigned waiting;        /* threads queued on lock (atomic, relaxed) */
	ucp_context_h ctx;
	ucp_worker_h worker;
	int efd;                 /* ucp_worker_get_efd, -1 if none */
	unsigned sleepers;       /* threads in poll() on efd (under lock) */
	uint64_t spin_ns;        /* idle spin before sleeping; NO_DEADLINE: never sleep */
	int peer_mode;           /* UCP_ERR_HANDLING_MODE_PEER */
	uint64_t self_id;
	unsigned char *addr;     /* address envelope */
	size_t addr_len;
	uep *eps;
	umem *mems;
	struct istr *strs;
	const char *name;        /* published with release stores, read with acquire */
	const char *reason;
	char src[160];           /* who chose the transports */
	char rsc[512];           /* UCX resources, "tcp/eth0, tcp/lo, ..." */
	int have_rdma, have_sm;
};

/* ---- small helpers ---- */

uint64_t xport_fnv1a(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

static void lk(ux *x)
{
	__atomic_add_fetch(&x->waiting, 1, __ATOMIC_RELAXED);
	pthread_mutex_lock(&x->lock);
	__atomic_sub_fetch(&x->waiting, 1, __ATOMIC_RELAXED);
}

static void ulk(ux *x) { pthread_mutex_unlock(&x->lock); }

/* Between two busy progress rounds: let a queued thread have the lock. */
static void relax(ux *x)
{
	ulk(x);
	if (__atomic_load_n(&x->waiting, __ATOMIC_RELAXED))
		sched_yield();
	lk(x);
}

/* A waiter spins for xport_opts.spin_us (default SPIN_NS_DEFAULT) of
 * idleness before sleeping on the worker's event fd: back-to-back operations
 * stay at busy-poll latency, while a long wait (a server waiting for
 * requests, a pump) sleeps in the kernel. */
#define SPIN_NS_DEFAULT 50000ull
#define SLEEP_CAP_MS 10  /* bound on one sleep: UCX timers, deadlines */

/* One pause between progress rounds that completed nothing (lock held on
 * entry and exit; dropped inside). Hands the lock over when another thread
 * queues for it; spins a little; then arms the worker and sleeps in poll()
 * on its event fd until UCX has events, the deadline, SLEEP_CAP_MS, or a
 * ucp_worker_signal from a thread whose progress may have completed our
 * request (see progress()). */
static void idle_step(ux *x, uint64_t idle_since, uint64_t deadline)
{
	struct pollfd pfd = { .fd = x->efd, .events = POLLIN };
	uint64_t now;
	int ms = SLEEP_CAP_MS;
	ucs_status_t st;

	if (__atomic_load_n(&x->waiting, __ATOMIC_RELAXED)) {
		ulk(x);
		sched_yield();
		lk(x);
		return;
	}
	if (x->spin_ns == NO_DEADLINE || now_ns() - idle_since < x->spin_ns) {
		ulk(x);
		lk(x);
		return;
	}
	if (x->efd < 0) {  /* no event fd: plain short sleeps */
		struct timespec ts = { 0, 50000 };
		ulk(x);
		nanosleep(&ts, NULL);
		lk(x);
		return;
	}
	st = ucp_worker_arm(x->worker);
	if (st == UCS_ERR_BUSY)  /* events pending: progress again */
		return;
	if (deadline != NO_DEADLINE) {
		now = now_ns();
		if (now >= deadline)
			return;
		if (deadline - now < (uint64_t)SLEEP_CAP_MS * 1000000u)
			ms = (int)((deadline - now + 999999) / 1000000);
	}
	x->sleepers++;
	ulk(x);
	poll(&pfd, 1, ms);
	lk(x);
	x->sleepers--;
}

/* One progress round (lock held): UCX callbacks run here, in this thread.
 * Returns how many events it handled. If it handled some, a thread asleep
 * in idle_step may be waiting for one of them: wake it (UCX consumed the
 * fd event it would have seen). */
static unsigned progress(ux *x)
{
	unsigned n = ucp_worker_progress(x->worker);

	if (n && x->sleepers)
		ucp_worker_signal(x->worker);
	return n;
}

/* UCX status -> our code. Peer-gone statuses become -ECONNRESET. */
static int ucs_err(ucs_status_t st)
{
	switch (st) {
	case UCS_OK: return 0;
	case UCS_ERR_NO_MEMORY: return AIDOS_E_NOMEM;
	case UCS_ERR_INVALID_PARAM: return AIDOS_E_INVALID;
	case UCS_ERR_MESSAGE_TRUNCATED: return AIDOS_E_RANGE;
	case UCS_ERR_INVALID_ADDR: return AIDOS_E_RANGE;
	case UCS_ERR_TIMED_OUT: return -ETIMEDOUT;
	case UCS_ERR_UNREACHABLE: return -EHOSTUNREACH;
	case UCS_ERR_REJECTED: return -ECONNREFUSED;
	case UCS_ERR_CONNECTION_RESET:
	case UCS_ERR_ENDPOINT_TIMEOUT:
	case UCS_ERR_CANCELED:
	case UCS_ERR_NOT_CONNECTED:
		return -ECONNRESET;
	case UCS_ERR_NO_DEVICE:
	case UCS_ERR_NO_ELEM:
	case UCS_ERR_UNSUPPORTED:
	case UCS_ERR_NO_RESOURCE:
		return AIDOS_E_UNSUPPORTED;
	default: return -EIO;
	}
}

/* Interns s (lock held): returns a string that lives until xport_destroy. */
static const char *intern(ux *x, const char *s)
{
	struct istr *i;
	size_t n = strlen(s);

	for (i = x->strs; i; i = i->next)
		if (!strcmp(i->s, s))
			return i->s;
	i = malloc(sizeof *i + n + 1);
	if (!i)
		return "(out of memory)";
	memcpy(i->s, s, n + 1);
	i->next = x->strs;
	x->strs = i;
	return i->s;
}

/* Appends item to the comma list l (cap n) unless already there. */
static void list_add(char *l, size_t n, const char *item)
{
	size_t k = strlen(item), used = strlen(l);

	for (const char *p = l; *p; ) {
		const char *e = strchr(p, ',');
		size_t len = e ? (size_t)(e - p) : strlen(p);
		if (len == k && !memcmp(p, item, k))
			return;
		p = e ? e + 1 : p + len;
	}
	if (used + k + 2 > n)
		return;
	if (used)
		l[used++] = ',';
	memcpy(l + used, item, k + 1);
}

static int is_rdma_tl(const char *tl)
{
	return !strncmp(tl, "rc", 2) || !strncmp(tl, "ud", 2) || !strncmp(tl, "dc", 2);
}

static int is_sm_tl(const char *tl)
{
	return !strcmp(tl, "sysv") || !strcmp(tl, "posix") || !strcmp(tl, "cma") ||
	       !strcmp(tl, "knem") || !strcmp(tl, "xpmem");
}

/* Runs a ucp_*_print_info into a string (caller frees), or NULL. */
static char *print_to_string(void (*fn)(void *, FILE *), void *arg)
{
	char *buf = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&buf, &n);

	if (!f)
		return NULL;
	fn(arg, f);
	fclose(f);
	return buf;
}

static void ctx_print(void *c, FILE *f) { ucp_context_print_info(c, f); }
static void ep_print(void *e, FILE *f) { ucp_ep_print_info(e, f); }

/* The context's resources, from lines "#  resource 1  :  md 1  dev 1  flags
 * -- tcp/eth0" (ucp_context_print_info, UCX 1.13). */
static void read_resources(ux *x)
{
	char *buf = print_to_string(ctx_print, x->ctx), *line, *next;

	x->rsc[0] = 0;
	for (line = buf; line; line = next) {
		char *s, tl[64];
		size_t k;

		next = strchr(line, '\n');
		if (next)
			*next++ = 0;
		if (!strstr(line, "resource") || !(s = strstr(line, "-- ")))
			continue;
		s += 3;
		for (k = 0; s[k] && !isspace((unsigned char)s[k]) && k + 1 < sizeof tl; k++)
			tl[k] = s[k];
		tl[k] = 0;
		if (!strncmp(tl, "self/", 5))
			continue;
		if (x->rsc[0] && strlen(x->rsc) + 2 < sizeof x->rsc)
			strcat(x->rsc, ", ");
		if (strlen(x->rsc) + k + 1 < sizeof x->rsc)
			strcat(x->rsc, tl);
		*strchrnul(tl, '/') = 0;
		x->have_rdma |= is_rdma_tl(tl);
		x->have_sm |= is_sm_tl(tl);
	}
	free(buf);
}

/* Transports ("tcp") and transport/device pairs ("tcp/lo") of ep's lanes,
 * from ucp_ep_print_info lines such as
 * "#   lane[0]:  2:tcp/lo.0 md[1]   -> md[1]/tcp/sysdev[255] am am_bw#0". */
static void read_lanes(ucp_ep_h ep, char *tls, size_t tlsn, char *lanes, size_t lanesn)
{
	char *buf = print_to_string(ep_print, ep), *line, *next;

	tls[0] = lanes[0] = 0;
	for (line = buf; line; line = next) {
		char *s, tok[96], *dot;
		size_t k;

		next = strchr(line, '\n');
		if (next)
			*next++ = 0;
		if (!(s = strstr(line, "lane[")) || !(s = strstr(s, "]:")))
			continue;
		for (s += 2; *s == ' '; s++)
			;
		while (isdigit((unsigned char)*s))
			s++;
		if (*s == ':')
			s++;
		for (k = 0; s[k] && !isspace((unsigned char)s[k]) && k + 1 < sizeof tok; k++)
			tok[k] = s[k];
		tok[k] = 0;
		if (!strchr(tok, '/'))
			continue;
		dot = strrchr(tok, '.');  /* "lo.0": path index */
		if (dot && dot[1] && strspn(dot + 1, "0123456789") == strlen(dot + 1))
			*dot = 0;
		list_add(lanes, lanesn, tok);
		*strchr(tok, '/') = 0;
		list_add(tls, tlsn, tok);
	}
	free(buf);
}

/* Publishes name/reason (lock held). tls/lanes NULL: not connected yet. */
static void publish(ux *x, const char *tls, const char *lanes)
{
	char name[160], reason[1024], cand[160] = "";
	size_t n;

	if (!tls) {
		/* candidates: the resources' transports, minus what peer mode rules out */
		const char *p = x->rsc;
		while (*p) {
			char tl[64];
			size_t k = strcspn(p, "/, ");
			if (k >= sizeof tl)
				k = sizeof tl - 1;
			memcpy(tl, p, k);
			tl[k] = 0;
			if (!(x->peer_mode && is_sm_tl(tl)))
				list_add(cand, sizeof cand, tl);
			p = strchr(p, ',');
			p = p ? p + 2 : "";
		}
		/* %.150s: cand may exceed the name, and the name is for display */
		snprintf(name, sizeof name, "ucx:%.150s", cand[0] ? cand : "none");
	} else {
		snprintf(name, sizeof name, "ucx:%s", tls);
	}
	n = (size_t)snprintf(reason, sizeof reason, "%s; %s%s", x->src,
			     lanes ? "lanes " : "not connected yet, candidates by UCX resources",
			     lanes ? lanes : "");
	if (n < sizeof reason)
		n += (size_t)snprintf(reason + n, sizeof reason - n, "; %s (UCX resources: %s)",
				      x->have_rdma ? "RDMA device present" : "no RDMA device",
				      x->rsc[0] ? x->rsc : "none");
	if (n < sizeof reason && x->peer_mode && x->have_sm &&
	    !(tls && (strstr(tls, "sysv") || strstr(tls, "posix") || strstr(tls, "cma"))))
		snprintf(reason + n, sizeof reason - n,
			 "; sysv/posix/cma unused: peer-failure detection (UCX 1.13)");
	/* release: the string bytes are written before the pointer is seen */
	__atomic_store_n(&x->name, intern(x, name), __ATOMIC_RELEASE);
	__atomic_store_n(&x->reason, intern(x, reason), __ATOMIC_RELEASE);
}

static void ep_describe_now(ux *x, uep *ep)
{
	char tls[128], lanes[256];

	if (!ep->ep)
		return;
	read_lanes(ep->ep, tls, sizeof tls, lanes, sizeof lanes);
	__atomic_store_n(&ep->lanes, intern(x, lanes[0] ? lanes : "unknown"), __ATOMIC_RELEASE);
	publish(x, tls[0] ? tls : "unknown", lanes[0] ? lanes : "unknown");
}

/* ---- requests ---- */

/* Drives the worker until req completes or deadline passes (then returns
 * UCS_INPROGRESS). Called and returns with x->lock held; drops it between
 * rounds. deadline == now: exactly one progress round. */
static ucs_status_t req_wait(ux *x, void *req, uint64_t deadline)
{
	uint64_t idle_since = now_ns();

	for (;;) {
		ucs_status_t st;
		unsigned n = progress(x);
		st = ucp_request_check_status(req);
		if (st != UCS_INPROGRESS)
			return st;
		if (deadline != NO_DEADLINE && now_ns() >= deadline)
			return UCS_INPROGRESS;
		if (n) {
			idle_since = now_ns();
			relax(x);
		} else {
			idle_step(x, idle_since, deadline);
		}
	}
}

/* Destroys ep's unpacked rkeys that no operation uses (lock held). */
static void rk_flush(uep *ep)
{
	for (int i = 0; i < RKEY_SLOTS; i++) {
		struct rk_slot *s = &ep->rk[i];
		if (s->h && !s->busy) {
			ucp_rkey_destroy(s->h);
			free(s->key);
			memset(s, 0, sizeof *s);
		}
	}
}

/* Closes ep's UCP endpoint (lock held). force: UCP_EP_CLOSE_FLAG_FORCE, which
 * completes every outstanding request on it with UCS_ERR_CANCELED (allowed
 * in peer mode only). A close still running at deadline is left to finish
 * on its own (ucp_request_free releases it on completion). */
static void ep_close(ux *x, uep *ep, int force, uint64_t deadline)
{
	ucp_request_param_t p = { .op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS };
	void *r;

	__atomic_store_n(&ep->status, -ECONNRESET, __ATOMIC_RELEASE);
	if (ep->ep) {
		p.flags = force && x->peer_mode ? UCP_EP_CLOSE_FLAG_FORCE : 0;
		r = ucp_ep_close_nbx(ep->ep, &p);
		ep->ep = NULL;
		if (UCS_PTR_IS_PTR(r)) {
			req_wait(x, r, deadline);
			ucp_request_free(r);
		}
	}
	/* after the close: requests that referenced these rkeys are complete */
	rk_flush(ep);
}

/* 0 if ep can take a new operation; else closes a failed UCP endpoint
 * (UCX requires the user to close it after its error callback) and returns
 * -ECONNRESET. Lock held. */
static int ep_usable(ux *x, uep *ep)
{
	if (!__atomic_load_n(&ep->status, __ATOMIC_ACQUIRE) && ep->ep)
		return 0;
	if (ep->ep)
		ep_close(x, ep, 1, now_ns() + CLOSE_BUDGET_NS);
	return -ECONNRESET;
}

/* The error an operation on ep finished with. */
static int ep_err(uep *ep, ucs_status_t st)
{
	if (__atomic_load_n(&ep->status, __ATOMIC_ACQUIRE))
		return -ECONNRESET;
	return ucs_err(st);
}

/* Finishes an operation a ucp_*_nbx call on ep started (lock held). On
 * timeout the request cannot be cancelled (UCX 1.13 cancels only expected
 * receives) and the caller's buffer must be free when we return: in peer
 * mode the endpoint is force-closed, which completes the request. */
static int op_finish(ux *x, uep *ep, ucs_status_ptr_t sp, uint64_t deadline)
{
	ucs_status_t st;

	if (sp == NULL)
		return 0;
	if (UCS_PTR_IS_ERR(sp))
		return ep_err(ep, UCS_PTR_STATUS(sp));
	st = req_wait(x, sp, deadline);
	if (st == UCS_INPROGRESS) {
		if (x->peer_mode && ep->ep)
			ep_close(x, ep, 1, NO_DEADLINE);
		req_wait(x, sp, NO_DEADLINE);
		ucp_request_free(sp);
		return -ETIMEDOUT;
	}
	ucp_request_free(sp);
	if (st == UCS_OK && !ep->lanes_final) {
		ep->lanes_final = 1;  /* wireup is done: the lanes are the real ones */
		ep_describe_now(x, ep);
	}
	return st == UCS_OK ? 0 : ep_err(ep, st);
}

/* ---- context, worker ---- */

static int ucx_create(const xport_opts *o, ux **out, char *err, size_t errlen)
{
	ucp_params_t params = {
		.field_mask = UCP_PARAM_FIELD_FEATURES,
		/* WAKEUP: an event fd to sleep on; measured not to change the
		 * lanes UCX 1.13 picks (tcp; sysv/posix/cma without peer mode) */
		.features = UCP_FEATURE_TAG | UCP_FEATURE_RMA | UCP_FEATURE_WAKEUP,
	};
	ucp_worker_params_t wp = {
		.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE,
		.thread_mode = UCS_THREAD_MODE_SINGLE,
	};
	const char *env = getenv("UCX_TLS");
	ucp_config_t *cfg;
	ucp_address_t *ua;
	size_t ualen;
	ucs_status_t st;
	ux *x;
	int rc;

	*out = NULL;
	x = calloc(1, sizeof *x);
	if (!x) {
		seterr(err, errlen, "out of memory");
		return AIDOS_E_NOMEM;
	}
	x->base.ops = &ucx_ops;
	pthread_mutex_init(&x->lock, NULL);
	x->efd = -1;
	x->spin_ns = !o || !o->spin_us ? SPIN_NS_DEFAULT
		   : o->spin_us < 0 ? NO_DEADLINE : (uint64_t)o->spin_us * 1000u;
	x->peer_mode = !(o && (o->flags & XPORT_OPT_NO_PEER_FAILURE));

	st = ucp_config_read(NULL, NULL, &cfg);
	if (st != UCS_OK) {
		seterr(err, errlen, "ucp_config_read: %s", ucs_status_string(st));
		rc = ucs_err(st);
		goto fail;
	}
	/* On this context's config, not setenv: other contexts in the process
	 * (and children) keep their own choice. */
	if (o && o->tls && (st = ucp_config_modify(cfg, "TLS", o->tls)) != UCS_OK) {
		seterr(err, errlen, "UCX_TLS=%s: %s", o->tls, ucs_status_string(st));
		ucp_config_release(cfg);
		rc = AIDOS_E_INVALID;
		goto fail;
	}
	if (o && o->net_devices &&
	    (st = ucp_config_modify(cfg, "NET_DEVICES", o->net_devices)) != UCS_OK) {
		seterr(err, errlen, "UCX_NET_DEVICES=%s: %s", o->net_devices, ucs_status_string(st));
		ucp_config_release(cfg);
		rc = AIDOS_E_INVALID;
		goto fail;
	}
	st = ucp_init(&params, cfg, &x->ctx);
	ucp_config_release(cfg);
	if (st != UCS_OK) {
		seterr(err, errlen, "ucp_init: %s (UCX_TLS=%s)", ucs_status_string(st),
		       o && o->tls ? o->tls : env ? env : "all");
		rc = ucs_err(st);
		if (rc == -EIO || rc == AIDOS_E_INVALID)
			rc = AIDOS_E_UNSUPPORTED;
		x->ctx = NULL;
		goto fail;
	}
	st = ucp_worker_create(x->ctx, &wp, &x->worker);
	if (st != UCS_OK) {
		seterr(err, errlen, "ucp_worker_create: %s", ucs_status_string(st));
		rc = ucs_err(st);
		x->worker = NULL;
		goto fail;
	}
	if (ucp_worker_get_efd(x->worker, &x->efd) != UCS_OK)
		x->efd = -1;
	st = ucp_worker_get_address(x->worker, &ua, &ualen);
	if (st != UCS_OK) {
		seterr(err, errlen, "ucp_worker_get_address: %s", ucs_status_string(st));
		rc = ucs_err(st);
		goto fail;
	}
	if (ualen > ENV_MAX_UCX) {
		ucp_worker_release_address(x->worker, ua);
		seterr(err, errlen, "worker address of %zu bytes", ualen);
		rc = AIDOS_E_UNSUPPORTED;
		goto fail;
	}
	x->addr_len = ADDR_HDR + ualen;
	x->addr = calloc(1, x->addr_len);
	if (!x->addr) {
		ucp_worker_release_address(x->worker, ua);
		seterr(err, errlen, "out of memory");
		rc = AIDOS_E_NOMEM;
		goto fail;
	}
	memcpy(x->addr, "AXWA", 4);
	wr16(x->addr + 4, ENV_VERSION);
	wr16(x->addr + 6, ADDR_HDR);
	wr32(x->addr + 8, (uint32_t)ualen);
	memcpy(x->addr + ADDR_HDR, ua, ualen);
	wr64(x->addr + 16, xport_fnv1a(xport_fnv1a(XPORT_FNV_INIT, x->addr, 16),
				       x->addr + ADDR_HDR, ualen));
	x->self_id = xport_fnv1a(XPORT_FNV_INIT, ua, ualen);
	ucp_worker_release_address(x->worker, ua);

	if (o && o->tls)
		snprintf(x->src, sizeof x->src, "UCX_TLS=%s set by xport_opts.tls", o->tls);
	else if (env)
		snprintf(x->src, sizeof x->src, "UCX_TLS=%s from the environment", env);
	else
		snprintf(x->src, sizeof x->src, "UCX's choice (UCX_TLS unset)");
	if (o && o->net_devices) {
		size_t n = strlen(x->src);
		snprintf(x->src + n, sizeof x->src - n, ", UCX_NET_DEVICES=%s", o->net_devices);
	}
	read_resources(x);
	publish(x, NULL, NULL);
	*out = x;
	return 0;
fail:
	ucx_destroy(x);
	return rc;
}

static void ucx_destroy(ux *x)
{
	uint64_t deadline;

	if (!x)
		return;
	deadline = now_ns() + CLOSE_BUDGET_NS;
	if (x->worker) {
		lk(x);
		while (x->eps) {
			uep *ep = x->eps;
			x->eps = ep->next;
			ep_close(x, ep, __atomic_load_n(&ep->status, __ATOMIC_ACQUIRE) != 0, deadline);
			free(ep->addr);
			free(ep);
		}
		while (x->mems) {
			umem *m = x->mems;
			x->mems = m->next;
			ucp_mem_unmap(x->ctx, m->memh);
			free(m->rkey);
			free(m);
		}
		ulk(x);
		ucp_worker_destroy(x->worker);
	}
	if (x->ctx)
		ucp_cleanup(x->ctx);
	while (x->strs) {
		struct istr *i = x->strs;
		x->strs = i->next;
		free(i);
	}
	free(x->addr);
	pthread_mutex_destroy(&x->lock);
	free(x);
}

static void ucx_describe(const ux *x, const char **name, const char **reason)
{
	/* acquire: pairs with publish()'s release stores */
	if (name)
		*name = __atomic_load_n(&x->name, __ATOMIC_ACQUIRE);
	if (reason)
		*reason = __atomic_load_n(&x->reason, __ATOMIC_ACQUIRE);
}

static int ucx_address(const ux *x, const void **addr, size_t *len)
{
	*addr = x->addr;
	*len = x->addr_len;
	return 0;
}

/* ---- endpoints ---- */

/* Checks an address envelope; *ucx, *ucx_len: the UCX address inside. */
static int addr_parse(const void *addr, size_t len, const unsigned char **ucx, size_t *ucx_len)
{
	const unsigned char *p = addr;
	size_t n;

	if (!p || len < ADDR_HDR || memcmp(p, "AXWA", 4) || rd16(p + 4) != ENV_VERSION ||
	    rd16(p + 6) != ADDR_HDR || rd32(p + 12) != 0)
		return AIDOS_E_INVALID;
	n = rd32(p + 8);
	if (n == 0 || n > ENV_MAX_UCX || len != ADDR_HDR + n)
		return AIDOS_E_INVALID;
	if (rd64(p + 16) != xport_fnv1a(xport_fnv1a(XPORT_FNV_INIT, p, 16), p + ADDR_HDR, n))
		return AIDOS_E_INVALID;
	*ucx = p + ADDR_HDR;
	*ucx_len = n;
	return 0;
}

static void ep_err_cb(void *arg, ucp_ep_h h, ucs_status_t st)
{
	ux *x = arg;

	/* Runs inside a UCP call, so under x->lock (or in xport_destroy, when
	 * x->eps is already empty). arg is x, not the endpoint, and the endpoint
	 * is looked up by handle: a callback for an endpoint already closed and
	 * freed finds nothing. The UCP endpoint itself is closed later, by
	 * ep_usable (closing from inside the callback is not something UCX 1.13
	 * promises to support). */
	(void)st;
	for (uep *ep = x->eps; ep; ep = ep->next)
		if (ep->ep == h)
			__atomic_store_n(&ep->status, -ECONNRESET, __ATOMIC_RELEASE);
}

static int ucx_connect(ux *x, const void *addr, size_t len, uep **out)
{
	ucp_ep_params_t ep_params = {
		.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
			      UCP_EP_PARAM_FIELD_ERR_HANDLER,
	};
	const unsigned char *ucx;
	size_t ucx_len;
	ucs_status_t st;
	uep *ep;
	int rc;

	*out = NULL;
	if ((rc = addr_parse(addr, len, &ucx, &ucx_len)))
		return rc;
	lk(x);
	for (ep = x->eps; ep; ep = ep->next) {
		if (!ep->cached || ep->addr_len != len || memcmp(ep->addr, addr, len))
			continue;
		if (!__atomic_load_n(&ep->status, __ATOMIC_ACQUIRE)) {
			ep->refs++;
			*out = ep;
			ulk(x);
			return 0;
		}
		ep->cached = 0;  /* failed: a fresh endpoint takes its place */
		break;
	}
	ep = calloc(1, sizeof *ep);
	if (!ep || !(ep->addr = malloc(len))) {
		free(ep);
		ulk(x);
		return AIDOS_E_NOMEM;
	}
	ep->base.ops = &ucx_ops;
	memcpy(ep->addr, addr, len);
	ep->addr_len = len;
	ep->peer_id = xport_fnv1a(XPORT_FNV_INIT, ucx, ucx_len);
	ep_params.address = (const ucp_address_t *)ucx;
	ep_params.err_mode = x->peer_mode ? UCP_ERR_HANDLING_MODE_PEER : UCP_ERR_HANDLING_MODE_NONE;
	ep_params.err_handler.cb = ep_err_cb;
	ep_params.err_handler.arg = x;
	st = ucp_ep_create(x->worker, &ep_params, &ep->ep);
	if (st != UCS_OK) {
		ulk(x);
		free(ep->addr);
		free(ep);
		rc = ucs_err(st);
		return rc == -ECONNRESET || rc == -EIO ? -EHOSTUNREACH : rc;
	}
	/* (an error callback from inside ucp_ep_create would find no entry: UCX
	 * reports such failures through the status instead) */
	ep->cached = 1;
	ep->refs = 1;
	ep->next = x->eps;
	x->eps = ep;
	ep_describe_now(x, ep);
	*out = ep;
	ulk(x);
	return 0;
}

static void ucx_disconnect(ux *x, uep *ep)
{
	uep **pp;

	if (!ep)
		return;
	lk(x);
	if (ep->refs > 1) {  /* another xport_connect still holds it */
		ep->refs--;
		ulk(x);
		return;
	}
	for (pp = &x->eps; *pp && *pp != ep; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = ep->next;
	ep_close(x, ep, __atomic_load_n(&ep->status, __ATOMIC_ACQUIRE) != 0,
		 now_ns() + CLOSE_BUDGET_NS);
	ulk(x);
	free(ep->addr);
	free(ep);
}

static int ucx_ep_status(const uep *ep)
{
	return __atomic_load_n(&ep->status, __ATOMIC_ACQUIRE);
}

static const char *ucx_ep_describe(const uep *ep)
{
	const char *s = __atomic_load_n(&ep->lanes, __ATOMIC_ACQUIRE);

	return s ? s : "unknown";
}

/* ---- memory ---- */

static int ucx_mem_register(ux *x, void *p, size_t len, umem **out)
{
	ucp_mem_map_params_t mp = {
		.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH,
		.address = p,
		.length = len,
	};
	void *rk = NULL;
	size_t rklen = 0;
	ucs_status_t st;
	umem *m;
	unsigned char *e;

	*out = NULL;
	if (!p || !len)
		return AIDOS_E_INVALID;
	m = calloc(1, sizeof *m);
	if (!m)
		return AIDOS_E_NOMEM;
	m->base.ops = &ucx_ops;
	lk(x);
	st = ucp_mem_map(x->ctx, &mp, &m->memh);
	if (st == UCS_OK && (st = ucp_rkey_pack(x->ctx, m->memh, &rk, &rklen)) != UCS_OK)
		ucp_mem_unmap(x->ctx, m->memh);
	if (st != UCS_OK) {
		ulk(x);
		free(m);
		return ucs_err(st);
	}
	m->rkey_len = RKEY_HDR + rklen;
	m->rkey = e = calloc(1, m->rkey_len);
	if (!e || rklen > ENV_MAX_UCX) {
		ucp_rkey_buffer_release(rk);
		ucp_mem_unmap(x->ctx, m->memh);
		ulk(x);
		free(e);
		free(m);
		return AIDOS_E_NOMEM;
	}
	memcpy(e, "AXRK", 4);
	wr16(e + 4, ENV_VERSION);
	wr16(e + 6, RKEY_HDR);
	wr32(e + 8, (uint32_t)rklen);
	wr64(e + 16, x->self_id);
	wr64(e + 24, (uint64_t)(uintptr_t)p);
	wr64(e + 32, (uint64_t)len);
	memcpy(e + RKEY_HDR, rk, rklen);
	wr64(e + 40, xport_fnv1a(xport_fnv1a(XPORT_FNV_INIT, e, 40), e + RKEY_HDR, rklen));
	ucp_rkey_buffer_release(rk);
	m->next = x->mems;
	x->mems = m;
	ulk(x);
	*out = m;
	return 0;
}

static int ucx_mem_rkey(const umem *m, const void **rkey, size_t *len)
{
	*rkey = m->rkey;
	*len = m->rkey_len;
	return 0;
}

static void ucx_mem_release(ux *x, umem *m)
{
	umem **pp;

	if (!m)
		return;
	lk(x);
	for (pp = &x->mems; *pp && *pp != m; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = m->next;
	ucp_mem_unmap(x->ctx, m->memh);
	ulk(x);
	free(m->rkey);
	free(m);
}

/* ---- remote keys ---- */

struct rkey_view {
	const unsigned char *ucx;
	size_t ucx_len;
	uint64_t owner, base, len;
};

/* UCX 1.13's packed rkey: u64 md_map, u8 mem_type, then per set bit of
 * md_map a u8 size and that many bytes, then optionally a u8 sys_dev and
 * 3-byte distances. Walked so that ucp_ep_rkey_unpack, which takes no length,
 * never reads past the buffer. */
static int ucx_rkey_well_formed(const unsigned char *p, size_t n)
{
	uint64_t md_map;
	size_t off = 9;

	if (n < 9)
		return 0;
	memcpy(&md_map, p, 8);  /* host order, as UCX writes it */
	if (p[8] >= UCS_MEMORY_TYPE_LAST)
		return 0;
	for (; md_map; md_map &= md_map - 1) {
		if (off >= n)
			return 0;
		off += 1 + (size_t)p[off];
		if (off > n)
			return 0;
	}
	return off == n || (n - off - 1) % 3 == 0;
}

static int rkey_parse(const void *rkey, size_t len, struct rkey_view *v)
{
	const unsigned char *p = rkey;
	size_t n;

	if (!p || len < RKEY_HDR || memcmp(p, "AXRK", 4) || rd16(p + 4) != ENV_VERSION ||
	    rd16(p + 6) != RKEY_HDR || rd32(p + 12) != 0)
		return AIDOS_E_INVALID;
	n = rd32(p + 8);
	if (n > ENV_MAX_UCX || len != RKEY_HDR + n)
		return AIDOS_E_INVALID;
	if (rd64(p + 40) != xport_fnv1a(xport_fnv1a(XPORT_FNV_INIT, p, 40), p + RKEY_HDR, n))
		return AIDOS_E_INVALID;
	if (!ucx_rkey_well_formed(p + RKEY_HDR, n))
		return AIDOS_E_INVALID;
	v->ucx = p + RKEY_HDR;
	v->ucx_len = n;
	v->owner = rd64(p + 16);
	v->base = rd64(p + 24);
	v->len = rd64(p + 32);
	if (v->len == 0 || v->base + v->len < v->base)
		return AIDOS_E_INVALID;
	return 0;
}

/* Checks rkey for an access of n bytes at raddr on ep, and finds or unpacks
 * its UCP rkey (lock held). On success *slot is the busy cache slot, or NULL
 * with *tmp an uncached rkey the caller destroys (every slot was busy). */
static int rkey_acquire(ux *x, uep *ep, const void *rkey, size_t len, uint64_t raddr,
			size_t n, struct rk_slot **slot, ucp_rkey_h *tmp)
{
	struct rkey_view v;
	struct rk_slot *s = NULL;
	ucp_rkey_h h;
	int rc;

	*slot = NULL;
	*tmp = NULL;
	if ((rc = rkey_parse(rkey, len, &v)))
		return rc;
	if (v.owner != ep->peer_id)
		return AIDOS_E_INVALID;  /* another peer's key: would hit the wrong process */
	if (raddr < v.base || n > v.len || raddr - v.base > v.len - n)
		return AIDOS_E_RANGE;
	for (int i = 0; i < RKEY_SLOTS; i++) {
		if (ep->rk[i].h && ep->rk[i].len == len && !memcmp(ep->rk[i].key, rkey, len)) {
			ep->rk[i].busy++;
			*slot = &ep->rk[i];
			return 0;
		}
	}
	if (ucp_ep_rkey_unpack(ep->ep, v.ucx, &h) != UCS_OK)
		return AIDOS_E_INVALID;
	for (int i = 0; i < RKEY_SLOTS && !s; i++) {  /* round robin over idle slots */
		struct rk_slot *c = &ep->rk[(ep->rk_next + (unsigned)i) % RKEY_SLOTS];
		if (!c->busy)
			s = c;
	}
	if (!s) {
		*tmp = h;
		return 0;
	}
	ep->rk_next = (unsigned)(s - ep->rk + 1) % RKEY_SLOTS;
	if (s->h) {
		ucp_rkey_destroy(s->h);
		free(s->key);
	}
	s->key = malloc(len);
	if (!s->key) {
		memset(s, 0, sizeof *s);
		*tmp = h;
		return 0;
	}
	memcpy(s->key, rkey, len);
	s->len = len;
	s->h = h;
	s->busy = 1;
	*slot = s;
	return 0;
}

static void rkey_release(uep *ep, struct rk_slot *slot, ucp_rkey_h tmp)
{
	if (slot) {
		slot->busy--;
		if (!ep->ep && !slot->busy) /* closed meanwhile: ep_close left it */
			rk_flush(ep);
	}
	if (tmp)
		ucp_rkey_destroy(tmp);
}

static int rma(ux *x, uep *ep, int put, void *local, size_t len, uint64_t raddr,
	       const void *rkey, size_t rkey_len, int timeout_ms)
{
	uint64_t deadline = deadline_of(timeout_ms);
	ucp_request_param_t p = { 0 };
	struct rk_slot *slot;
	ucs_status_ptr_t sp, fp = NULL;
	ucp_rkey_h tmp;
	int rc, rc2;

	if (!ep || (!local && len))
		return AIDOS_E_INVALID;
	lk(x);
	if ((rc = ep_usable(x, ep)) ||
	    (rc = rkey_acquire(x, ep, rkey, rkey_len, raddr, len, &slot, &tmp))) {
		ulk(x);
		return rc;
	}
	if (len == 0) {
		rkey_release(ep, slot, tmp);
		ulk(x);
		return 0;
	}
	if (put) {
		sp = ucp_put_nbx(ep->ep, local, len, raddr, slot ? slot->h : tmp, &p);
		/* put completion is local; the flush makes the data visible at the
		 * target, so a message sent after xport_put returns finds it there */
		if (!UCS_PTR_IS_ERR(sp))
			fp = ucp_ep_flush_nbx(ep->ep, &p);
	} else {
		sp = ucp_get_nbx(ep->ep, local, len, raddr, slot ? slot->h : tmp, &p);
	}
	rc = op_finish(x, ep, sp, deadline);
	rc2 = op_finish(x, ep, fp, deadline);
	if (!rc)
		rc = rc2;
	rkey_release(ep, slot, tmp);
	ulk(x);
	return rc;
}

static int ucx_get(ux *x, uep *ep, void *local, size_t len, uint64_t remote_addr,
	      const void *rkey, size_t rkey_len, int timeout_ms)
{
	return rma(x, ep, 0, local, len, remote_addr, rkey, rkey_len, timeout_ms);
}

static int ucx_put(ux *x, uep *ep, const void *local, size_t len, uint64_t remote_addr,
	      const void *rkey, size_t rkey_len, int timeout_ms)
{
	return rma(x, ep, 1, (void *)local, len, remote_addr, rkey, rkey_len, timeout_ms);
}

/* ---- tag messages ---- */

static int ucx_tag_send(ux *x, uep *ep, uint64_t tag, const void *buf, size_t len, int timeout_ms)
{
	uint64_t deadline = deadline_of(timeout_ms);
	ucp_request_param_t p = { 0 };
	int rc;

	if (!ep || (!buf && len))
		return AIDOS_E_INVALID;
	lk(x);
	if (!(rc = ep_usable(x, ep)))
		rc = op_finish(x, ep, ucp_tag_send_nbx(ep->ep, buf, len, tag, &p), deadline);
	ulk(x);
	return rc;
}

static int ucx_tag_recv(ux *x, uint64_t want, uint64_t mask, void *buf, size_t cap, size_t *len,
		   uint64_t *got_tag, int timeout_ms)
{
	uint64_t deadline = deadline_of(timeout_ms);
	ucp_request_param_t p = { 0 };
	ucp_tag_recv_info_t info;
	ucp_tag_message_h msg;
	ucs_status_ptr_t sp;
	ucs_status_t st = UCS_OK;
	uint64_t idle_since = now_ns();
	unsigned n;
	int over;

	if (!buf && cap)
		return AIDOS_E_INVALID;
	lk(x);
	for (;;) {
		n = progress(x);
		/* remove=1: the message is ours; no other thread's probe sees it */
		msg = ucp_tag_probe_nb(x->worker, want, mask, 1, &info);
		if (msg)
			break;
		if (deadline != NO_DEADLINE && now_ns() >= deadline) {
			ulk(x);
			return -ETIMEDOUT;
		}
		if (n) {
			idle_since = now_ns();
			relax(x);
		} else {
			idle_step(x, idle_since, deadline);
		}
	}
	if (len)
		*len = info.length;
	if (got_tag)
		*got_tag = info.sender_tag;
	/* An oversized message is received into the first cap bytes: UCX drops
	 * the rest (eager) or truncates the rendezvous, completing with
	 * UCS_ERR_MESSAGE_TRUNCATED, and the queue moves on. */
	over = info.length > cap;
	sp = ucp_tag_msg_recv_nbx(x->worker, buf, over ? cap : info.length, msg, &p);
	if (UCS_PTR_IS_ERR(sp)) {
		st = UCS_PTR_STATUS(sp);
	} else if (sp) {
		/* matched: not cancellable any more; its data is in flight or the
		 * sender fails (peer mode), either of which completes it */
		st = req_wait(x, sp, NO_DEADLINE);
		ucp_request_free(sp);
	}
	ulk(x);
	if (over)
		return AIDOS_E_RANGE;
	return st == UCS_OK ? 0 : ucs_err(st);
}

/* ---- the vtable: casts from the public handles (each backend object
 * starts with its public base) ---- */

static int o_create(const xport_opts *o, xport **out, char *err, size_t errlen)
{
	ux *x;
	int rc = ucx_create(o, &x, err, errlen);

	*out = rc ? NULL : &x->base;
	return rc;
}
static void o_destroy(xport *x) { ucx_destroy((ux *)x); }
static void o_describe(const xport *x, const char **n, const char **r) { ucx_describe((const ux *)x, n, r); }
static int o_address(const xport *x, const void **a, size_t *l) { return ucx_address((const ux *)x, a, l); }
static int o_connect(xport *x, const void *a, size_t l, xport_ep **out)
{
	uep *ep;
	int rc = ucx_connect((ux *)x, a, l, &ep);

	*out = rc ? NULL : &ep->base;
	return rc;
}
static void o_disconnect(xport *x, xport_ep *ep) { ucx_disconnect((ux *)x, (uep *)ep); }
static int o_ep_status(const xport_ep *ep) { return ucx_ep_status((const uep *)ep); }
static const char *o_ep_describe(const xport_ep *ep) { return ucx_ep_describe((const uep *)ep); }
static int o_mem_register(xport *x, void *p, size_t len, xport_mem **out)
{
	umem *m;
	int rc = ucx_mem_register((ux *)x, p, len, &m);

	*out = rc ? NULL : &m->base;
	return rc;
}
static int o_mem_rkey(const xport_mem *m, const void **k, size_t *l) { return ucx_mem_rkey((const umem *)m, k, l); }
static void o_mem_release(xport *x, xport_mem *m) { ucx_mem_release((ux *)x, (umem *)m); }
static int o_get(xport *x, xport_ep *ep, void *local, size_t len, uint64_t ra, const void *rk, size_t rkl, int t)
{
	return ucx_get((ux *)x, (uep *)ep, local, len, ra, rk, rkl, t);
}
static int o_put(xport *x, xport_ep *ep, const void *local, size_t len, uint64_t ra, const void *rk, size_t rkl,
		 int t)
{
	return ucx_put((ux *)x, (uep *)ep, local, len, ra, rk, rkl, t);
}
static int o_tag_send(xport *x, xport_ep *ep, uint64_t tag, const void *buf, size_t len, int t)
{
	return ucx_tag_send((ux *)x, (uep *)ep, tag, buf, len, t);
}
static int o_tag_recv(xport *x, uint64_t want, uint64_t mask, void *buf, size_t cap, size_t *len, uint64_t *got,
		      int t)
{
	return ucx_tag_recv((ux *)x, want, mask, buf, cap, len, got, t);
}

/* Posted puts: UCX pipelines a put itself; the whole put runs here and
 * op_wait returns its result (transport.h). */
static int o_put_post(xport *x, xport_ep *ep, const void *local, size_t len, uint64_t ra, const void *rk,
		      size_t rkl, int t, xport_op *op)
{
	op->rc = ucx_put((ux *)x, (uep *)ep, local, len, ra, rk, rkl, t);
	op->done = 1;
	return 0;
}
static int o_op_wait(xport *x, xport_op *op, int t)
{
	(void)x;
	(void)t;
	return op->rc;
}

static const xport_ops ucx_ops = {
	.version = XPORT_OPS_VERSION,
	.name = "ucx",
	.create = o_create,
	.destroy = o_destroy,
	.describe = o_describe,
	.address = o_address,
	.connect = o_connect,
	.disconnect = o_disconnect,
	.ep_status = o_ep_status,
	.ep_describe = o_ep_describe,
	.mem_register = o_mem_register,
	.mem_rkey = o_mem_rkey,
	.mem_release = o_mem_release,
	.get = o_get,
	.put = o_put,
	.tag_send = o_tag_send,
	.tag_recv = o_tag_recv,
	.put_post = o_put_post,
	.op_wait = o_op_wait,
};

const xport_ops *const xport_ucx = &ucx_ops;
