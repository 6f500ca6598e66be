/*
 * transport/transport.h - moving bytes between machines and processes.
 *
 * One interface; the backend today is UCX (UCP: worker, endpoints, tag
 * messages, memory mapped with ucp_mem_map and one-sided get/put with packed
 * remote keys). UCX picks RDMA (rc/ud verbs) where a NIC exists and TCP or
 * shared memory where not; which one carries traffic is reported by
 * xport_describe(), never silently.
 *
 *   xport *a;
 *   char err[256];
 *   xport_opts o = { .tls = "tcp" };            // or {0}: UCX's choice
 *   if (xport_create(&o, &a, err, sizeof err)) { puts(err); ... }
 *   const void *addr; size_t alen;
 *   xport_address(a, &addr, &alen);             // publish to the peer
 *   ...                                         // peer: xport_connect(b, addr, alen, &ep)
 *   xport_mem *m;                               // peer side: expose a region
 *   xport_mem_register(b, buf, len, &m);
 *   xport_mem_rkey(m, &rkey, &rlen);            // send rkey bytes + (uintptr_t)buf
 *   xport_get(a, ep, local, len, remote_addr, rkey, rlen, 1000);
 *
 * Threading: an xport is safe to use from several threads. UCX runs in
 * UCS_THREAD_MODE_SINGLE and one internal mutex serialises every UCP call and
 * our own state (endpoint and rkey caches); blocking calls drop it between
 * progress rounds, so one thread waiting for a message never starves another
 * thread's get. Any thread that waits drives the worker for everybody.
 * An idle waiter busy-polls for opts.spin_us (50 us), then sleeps in poll()
 * on the worker's event fd (UCP_FEATURE_WAKEUP) until UCX has an event: a
 * long wait costs no CPU, but the first message after a quiet spell pays a
 * kernel wake-up (tens of us on a loaded host; spin_us < 0 never sleeps).
 * Endpoint handles must not be disconnected while another thread uses them.
 *
 * Progress: UCX moves data only while some thread is inside an xport call
 * on that xport. Over TCP one-sided get/put are software RMA served by the
 * target's worker, and connection setup needs both sides: a process that
 * exposes memory must keep a thread in xport_tag_recv (a "pump", as in
 * tests/test_transport.c and bench/ucx_put.c), and two xports driven by one
 * thread cannot talk to each other.
 *
 * Timeouts are in milliseconds; 0 means "poll once", negative means "wait
 * forever". A tag send, get or put that times out cannot be cancelled in
 * UCX 1.13, and the caller's buffer must be free when we return: the
 * endpoint is force-closed (every request on it fails), the call returns
 * -ETIMEDOUT and later calls on that endpoint return -ECONNRESET; connect
 * again to the same address for a fresh endpoint. So give send/get/put a
 * real budget (0 would close the endpoint unless one round completes it);
 * recv's timeout only bounds the wait for a message and closes nothing.
 *
 * Peer failure: endpoints use UCP_ERR_HANDLING_MODE_PEER, so an operation on
 * a peer that died returns -ECONNRESET instead of hanging or aborting. In UCX
 * 1.13 that mode rules out the shared-memory transports (sysv, posix, cma):
 * two processes on one host then talk over TCP (lo). XPORT_OPT_NO_PEER_FAILURE
 * lifts it where speed between trusted local processes matters more.
 *
 * Picking TCP: opts.tls = "tcp" (sets UCX_TLS on this context's config, not
 * in the environment), plus opts.net_devices = "veth0" to pin the interface.
 */
#ifndef AIDOS_TRANSPORT_H
#define AIDOS_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>
#include "aidos/aidos.h"

typedef struct xport xport;
typedef struct xport_ep xport_ep;
typedef struct xport_mem xport_mem;

/* xport_opts.flags */
enum xport_opt_flag {
	/* UCP_ERR_HANDLING_MODE_NONE: lets UCX use sysv/posix/cma between local
	 * processes, but a dead peer may then hang or abort an operation, and
	 * a send/get/put past its timeout waits for completion (UCX allows the
	 * forced close that ends it only in peer mode). */
	XPORT_OPT_NO_PEER_FAILURE = 1u << 0,
};

typedef struct xport_opts {
	const char *tls;        /* UCX_TLS override ("tcp", "rc_v", "sm,self", NULL: UCX's choice / env) */
	const char *net_devices;/* UCX_NET_DEVICES override (e.g. the namespace's veth), NULL: all */
	unsigned flags;         /* XPORT_OPT_*; 0 by default */
	int spin_us;            /* idle busy-poll before a waiter sleeps on the worker's
				 * event fd; 0: 50 us, < 0: never sleep (a dedicated core) */
	/* verbs backend only (transport/verbs.c); each also settable by the
	 * environment variable named, the option winning. 0 / NULL: automatic. */
	const char *rdma_dev;   /* AIDOS_RDMA_DEV: "rxe0"; auto: first device with an active port */
	int rdma_port;          /* AIDOS_RDMA_PORT: 1..; auto: the first active port */
	int rdma_gid;           /* AIDOS_RDMA_GID: GID index + 1 (so 0 stays "auto"); auto:
				 * the RoCE v2 IPv4 GID, else v2, else v1, else index 0 */
	int rdma_mtu;           /* AIDOS_RDMA_MTU: 256..4096; auto: the port's active MTU */
	const char *rdma_ip;    /* AIDOS_RDMA_IP: address the connection manager listens on and
				 * publishes; auto: the IPv4 address inside the chosen GID */
} xport_opts;

/* Creates the UCP context (TAG + RMA) and one worker; o may be NULL.
 * Errors: AIDOS_E_UNSUPPORTED (no usable transport, e.g. tls names one this
 * host lacks), AIDOS_E_INVALID (bad tls / net_devices value), AIDOS_E_NOMEM;
 * err (may be NULL) names the UCX failure. */
int xport_create(const xport_opts *o, xport **out, char *err, size_t errlen);
/* Closes every endpoint (flushing, bounded to ~1 s in all), releases every
 * region still registered, destroys the worker and context. NULL is a no-op. */
void xport_destroy(xport *x);

/* What carries traffic and why. name is "ucx:" plus the UCX transports of the
 * most recently connected endpoint's lanes ("ucx:tcp", "ucx:sysv,posix,cma",
 * "ucx:rc_verbs,ud_verbs"); before any endpoint exists it names the candidate
 * transports. reason says who chose (xport_opts.tls, UCX_TLS in the
 * environment, or UCX), which devices the lanes use, whether an RDMA device
 * exists and what peer-failure mode excluded. Strings owned by x, immutable,
 * valid until xport_destroy (a later connect may publish new ones).
 * Thread-safe. */
void xport_describe(const xport *x, const char **name, const char **reason);

/* The worker's address, to publish (owned by x, valid until destroy). It is
 * UCX's packed worker address in a small checksummed envelope, so that a
 * corrupted or truncated copy is refused by xport_connect. */
int xport_address(const xport *x, const void **addr, size_t *len);

/* Endpoint to a remote worker address (cached per address: connecting twice
 * returns the same endpoint, unless that one failed: then a fresh endpoint
 * replaces it in the cache and the old handle keeps failing until it is
 * disconnected). Errors: AIDOS_E_INVALID (malformed address),
 * -ECONNREFUSED / -EHOSTUNREACH, AIDOS_E_NOMEM. A peer that is not there
 * shows up as -ECONNRESET on the first operation (UCX connects lazily).
 * Each successful xport_connect takes a reference that one xport_disconnect
 * drops; the endpoint is closed (flushed, bounded to ~1 s) with the last
 * one, or by xport_destroy. Thread-safe. */
int xport_connect(xport *x, const void *addr, size_t len, xport_ep **out);
void xport_disconnect(xport *x, xport_ep *ep);

/* 0 while ep is usable, else the error its operations return (-ECONNRESET).
 * Thread-safe. */
int xport_ep_status(const xport_ep *ep);
/* The lanes of ep as "tcp/lo" or "sysv/memory,cma/memory" (owned by x). */
const char *xport_ep_describe(const xport_ep *ep);

/* Registers [p, p+len) for remote access (ucp_mem_map of caller memory, which
 * stays the caller's) and packs its remote key (*rkey owned by m, valid until
 * release). The key carries the region's base and length, the owner's worker
 * identity and a checksum: get/put refuse a corrupted, truncated or foreign
 * key and check the access range before anything reaches the wire (with
 * software RMA over TCP, UCX itself checks nothing at the target).
 * Errors: AIDOS_E_INVALID (len 0), AIDOS_E_NOMEM, -EIO. Release a region only
 * after its peers stopped using the key. */
int xport_mem_register(xport *x, void *p, size_t len, xport_mem **out);
int xport_mem_rkey(const xport_mem *m, const void **rkey, size_t *len);
void xport_mem_release(xport *x, xport_mem *m);

/* One-sided: read len bytes at remote_addr (in a region the peer registered)
 * into local / write local there. Blocks until complete or timeout (put:
 * until the data is visible at the target, ucp_ep_flush). Errors:
 * AIDOS_E_INVALID (malformed rkey, or a key from another peer), -ETIMEDOUT,
 * -ECONNRESET (peer gone), AIDOS_E_RANGE (access outside the region). */
int xport_get(xport *x, xport_ep *ep, void *local, size_t len, uint64_t remote_addr,
	      const void *rkey, size_t rkey_len, int timeout_ms);
int xport_put(xport *x, xport_ep *ep, const void *local, size_t len, uint64_t remote_addr,
	      const void *rkey, size_t rkey_len, int timeout_ms);

/* Posted puts: a window of writes in flight, as ib_write_bw keeps its
 * tx-depth of RDMA WRITEs posted. xport_put_post starts the put of
 * [local, local+len) to remote_addr and returns; xport_op_wait waits until
 * that put is complete at the target (what xport_put returns, the same
 * errors). op is caller storage that must stay valid, and local unchanged,
 * until xport_op_wait returned for it; every posted op is waited for before
 * ep is disconnected. Raw verbs posts one RDMA WRITE work request per put
 * (one message of len bytes, as perftest sends it), zero-copy: local must
 * lie in a region registered with xport_mem_register (or be at most the
 * QP's inline size); other memory, and the UCX backend, do the whole put
 * inside xport_put_post and xport_op_wait returns its result. post errors:
 * those of xport_put; timeout_ms bounds waiting for a free send slot (post)
 * or the completion (wait). Thread-safety: as xport_put; one op is waited
 * for by one thread. */
typedef struct xport_op {
	int32_t rc;              /* a put done inside post: its result */
	uint32_t done;           /* 1: rc is final (no work request pending) */
	uint64_t priv[6];        /* the backend's */
} xport_op;
int xport_put_post(xport *x, xport_ep *ep, const void *local, size_t len, uint64_t remote_addr,
		   const void *rkey, size_t rkey_len, int timeout_ms, xport_op *op);
int xport_op_wait(xport *x, xport_op *op, int timeout_ms);

/* Tag messages. send blocks until the buffer may be reused (small messages:
 * copied out; large ones: until the receiver took them). recv waits for a
 * message whose tag matches (tag & mask) == (want & mask), of at most cap
 * bytes; it probes first, so the size is known before receiving. A larger
 * one is received, dropped and reported with AIDOS_E_RANGE (*len = its real
 * size, *got_tag its tag, buf contents unspecified) so it cannot wedge the
 * queue. *got_tag is the sender's full tag; len and got_tag may be NULL.
 * The timeout covers waiting for a message to arrive; once one is matched,
 * recv waits for its data (or the sender's failure). Errors: -ETIMEDOUT,
 * AIDOS_E_RANGE, -ECONNRESET (the sender died mid-message). */
int xport_tag_send(xport *x, xport_ep *ep, uint64_t tag, const void *buf, size_t len, int timeout_ms);
int xport_tag_recv(xport *x, uint64_t want, uint64_t mask, void *buf, size_t cap, size_t *len,
		   uint64_t *got_tag, int timeout_ms);

/* ---- Backends and their choice ----
 *
 * xport_create() is the UCX backend. Raw verbs (transport/verbs.c: librdmacm
 * RC queue pairs, SEND/RECV for tag messages, one-sided RDMA READ/WRITE for
 * get/put) sits behind the same calls; xport_open() picks a backend by name and
 * xport_open_auto() picks the best one this host has, saying why:
 *
 *   char why[512], err[256];
 *   xport *x;
 *   if (xport_open_auto("auto", NULL, &x, why, sizeof why, err, sizeof err)) ...
 *   // why: "--transport auto (RDMA device rxe0 active: raw verbs)" or
 *   //      "--transport auto (verbs not used: no RDMA devices; UCX's choice)"
 *
 * Every call above dispatches through the handle's xport_ops; each backend's
 * objects start with the public struct, so the dispatch is one indirect call.
 * Backends implement every entry (no NULLs); the table only grows. */
#define XPORT_OPS_VERSION 2
typedef struct xport_ops {
	unsigned version;       /* XPORT_OPS_VERSION */
	const char *name;       /* "ucx", "verbs" */
	int (*create)(const xport_opts *o, xport **out, char *err, size_t errlen);
	void (*destroy)(xport *x);
	void (*describe)(const xport *x, const char **name, const char **reason);
	int (*address)(const xport *x, const void **addr, size_t *len);
	int (*connect)(xport *x, const void *addr, size_t len, xport_ep **out);
	void (*disconnect)(xport *x, xport_ep *ep);
	int (*ep_status)(const xport_ep *ep);
	const char *(*ep_describe)(const xport_ep *ep);
	int (*mem_register)(xport *x, void *p, size_t len, xport_mem **out);
	int (*mem_rkey)(const xport_mem *m, const void **rkey, size_t *len);
	void (*mem_release)(xport *x, xport_mem *m);
	int (*get)(xport *x, xport_ep *ep, void *local, size_t len, uint64_t remote_addr, const void *rkey,
		   size_t rkey_len, int timeout_ms);
	int (*put)(xport *x, xport_ep *ep, const void *local, size_t len, uint64_t remote_addr, const void *rkey,
		   size_t rkey_len, int timeout_ms);
	int (*tag_send)(xport *x, xport_ep *ep, uint64_t tag, const void *buf, size_t len, int timeout_ms);
	int (*tag_recv)(xport *x, uint64_t want, uint64_t mask, void *buf, size_t cap, size_t *len,
			uint64_t *got_tag, int timeout_ms);
	/* version 2 */
	int (*put_post)(xport *x, xport_ep *ep, const void *local, size_t len, uint64_t remote_addr,
			const void *rkey, size_t rkey_len, int timeout_ms, xport_op *op);
	int (*op_wait)(xport *x, xport_op *op, int timeout_ms);
} xport_ops;

/* The public heads every backend object starts with (backends only). */
struct xport { const xport_ops *ops; };
struct xport_ep { const xport_ops *ops; };
struct xport_mem { const xport_ops *ops; };

extern const xport_ops *const xport_ucx;    /* transport/ucx.c */
extern const xport_ops *const xport_verbs;  /* transport/verbs.c */

/* The handle's backend ("ucx" or "verbs"). */
const char *xport_backend(const xport *x);

/* Opens the backend named by kind: "ucx" (UCX's choice of transports),
 * "tcp" (UCX over TCP: o->tls forced to "tcp"), "verbs" (raw verbs over
 * librdmacm; fails unless an RDMA device with an active port exists).
 * Errors: AIDOS_E_INVALID (unknown kind), AIDOS_E_UNSUPPORTED (no such
 * device / transport here), AIDOS_E_NOMEM, -errno; err says which. */
int xport_open(const char *kind, const xport_opts *o, xport **out, char *err, size_t errlen);

/* Opens want ("auto", "verbs", "ucx", "tcp"; NULL: "auto") and writes into
 * why (never left empty) which backend it chose and why, as a prefix for
 * xport_describe's reason: "--transport auto (RDMA device rxe0 active: raw
 * verbs)", "--transport auto (verbs not used: no RDMA devices; UCX's
 * choice)". auto tries verbs when an RDMA device with an active port exists,
 * else (or when verbs fails, its error quoted in why) UCX; UCX then names its
 * own transports (TCP included) through xport_describe: nothing falls back
 * silently. A named backend that cannot start is an error, never a fallback.
 * Errors: those of xport_open; err (may be NULL) says why nothing opened. */
int xport_open_auto(const char *want, const xport_opts *o, xport **out, char *why, size_t whylen, char *err,
		    size_t errlen);

/* 1 if some RDMA device has a port in state ACTIVE, and its name in dev
 * (may be NULL); 0 otherwise with the reason in dev ("no RDMA devices",
 * "rxe0: port 1 DOWN"). No side effects; safe anywhere. */
int xport_verbs_probe(char *dev, size_t devlen);

/* FNV-1a 64 over bytes, continuing from h (start with XPORT_FNV_INIT). */
#define XPORT_FNV_INIT 0xcbf29ce484222325ull
uint64_t xport_fnv1a(uint64_t h, const void *p, size_t n);

#endif
