/*
 * node/ipc.h - the node's local client server: a unix stream socket for
 * control (SO_PEERCRED-checked) and, per client, a memfd with a submission
 * ring, a completion ring and a tensor heap (node/ipc_abi.h) served by a
 * poller thread with no system call and no copy of inputs in steady state.
 * docs/architecture.md, "Local clients", is the design.
 *
 *   ipc_node *in;
 *   ipc_node_create(n, &in, err, sizeof err);   // n: a started node (node/node.h)
 *   ipc_ops ops;
 *   ipc_node_ops(in, &ops);
 *   ipc_opts o = { .path = "/run/aidos/node.sock" };
 *   ipc_server *s;
 *   if (ipc_server_create(&o, &ops, &s, err, sizeof err) ||
 *       ipc_server_start(s, err, sizeof err)) ...
 *   ...
 *   ipc_server_destroy(s);     // stops, drops every client, unlinks the socket
 *   ipc_node_destroy(in);
 *
 * The server knows nothing of agents: every call into the node goes
 * through ipc_ops. node/ipc_node.c implements them with the node-local
 * API and the dispatcher (node_submit; exec waits for the job's done(),
 * and the poller stays the completion ring's only producer).
 *
 * Threads: one control thread (accept, control messages, client EOF) and
 * one poller thread per client (takes descriptors, hands them to ops->exec,
 * which returns when the dispatcher has run them, pushes completions). A client is dropped when its socket
 * reaches EOF or errors (the process died or closed it): its poller
 * finishes the request it is running, stops, the memfd is unmapped, the
 * handles are closed. Nothing a client writes into its memfd can affect
 * another client or the node beyond that client's own requests.
 */
#ifndef AIDOS_IPC_H
#define AIDOS_IPC_H

#include <stddef.h>
#include <stdint.h>
#include "aidos/aidos.h"
#include "node/ipc_abi.h"

#define IPC_MAX_HANDLES 256           /* agents one client may open */
#define IPC_DEFAULT_HEAP (64ull << 20) /* sparse: pages cost only when touched */
#define IPC_MAX_HEAP (16ull << 30)
#define IPC_DEFAULT_ENTRIES 64
#define IPC_MAX_ENTRIES 4096
#define IPC_WAKE_SPIN_US 250           /* extra spin after waking the other side */
#define IPC_TOP_SPIN_US 1000           /* a poller's idle spin after a top-class request */
/* A spinning side whose peer has not taken what it posted (request or
 * completion) within this stops spinning and sleeps: the peer is not
 * running, maybe waiting for this core. Above a futex wake-up (~50 us). */
#define IPC_PICKUP_NS 100000ull

/* What a request hands to ops->exec: the inputs (data in the client's heap,
 * names owned by the server, valid during the call) and the output area. */
typedef struct ipc_exec {
	aidos_tensor in[AIDOS_RING_MAX_TENSORS];
	int nin;
	uint8_t *heap;                /* the client's heap (shared memory) */
	uint64_t heap_bytes;
	uint64_t out_off, out_len;    /* checked: inside the heap, aligned */
	uint64_t deadline_ns;         /* 0: none */
	/* set by exec (through ipc_out_write) */
	uint32_t nout;
	uint64_t out_need;            /* -ENOBUFS: bytes the outputs need */
	uint64_t exec_ns;
	int top_class;                /* the request was of the node's top priority class */
} ipc_exec;

/* Writes outputs[0..n) into x's output area: n aidos_ring_out records at
 * out_off, then each tensor's bytes at the next multiple of AIDOS_RING_ALIGN
 * from the heap start. Sets x->nout. Errors: -ENOBUFS (the area is too
 * small: x->out_need gets the bytes needed, nothing written),
 * AIDOS_E_UNSUPPORTED (dtype without a size), AIDOS_E_RANGE (n over
 * AIDOS_RING_MAX_OUT). No allocation, no system call. */
int ipc_out_write(ipc_exec *x, const aidos_tensor *outputs, int n, char *err, size_t errlen);

/* The node behind the server. Every function returns 0 or a negative code
 * with one line in err; all are called from the control thread except exec
 * (a client's poller thread: several at once, for different clients) and
 * close (either). */
typedef struct ipc_ops {
	void *ctx;
	int (*spawn)(void *ctx, const aidos_ipc_spawn *sp, char *err, size_t errlen);
	int (*kill)(void *ctx, const char *name, char *err, size_t errlen);
	/* Records of agents [start, start + cap) in name order into out; *n
	 * gets how many were written, *total all agents. */
	int (*list)(void *ctx, uint32_t start, aidos_ipc_agent *out, int cap, int *n, uint32_t *total, char *err,
		    size_t errlen);
	void (*stats)(void *ctx, aidos_ipc_stats *st);
	/* A reference on agent `name` in *agent and its inputs (those the
	 * client sends) then outputs in io[0..*nin + *nout) (cap entries). */
	int (*open)(void *ctx, const char *name, void **agent, aidos_ipc_io *io, int cap, int *nin, int *nout,
		    char *err, size_t errlen);
	void (*close)(void *ctx, void *agent);
	/* Runs one request on an opened agent; writes outputs with
	 * ipc_out_write. Must not allocate or make a system call in steady
	 * state. */
	int (*exec)(void *ctx, void *agent, ipc_exec *x, char *err, size_t errlen);
} ipc_ops;

/* ---- pure checks (exposed for tests and tests/fuzz_ipc.c) ---- */

/* An opened agent as a client's poller sees it. */
typedef struct ipc_handle {
	void *agent;
	int nin, nout;
	aidos_ipc_io *io;          /* [nin + nout]: inputs then outputs (owned) */
} ipc_handle;

/* Checks a control message header received from a client: magic, version,
 * known type, len <= AIDOS_IPC_MAX_PAYLOAD, status 0. Errors: AIDOS_E_INVALID. */
int ipc_msg_check(const aidos_ipc_msg *m, char *err, size_t errlen);

/* Checks a request's payload for its type: exact sizes of fixed structs,
 * names NUL-terminated inside their field and valid (1..63 of
 * [A-Za-z0-9._-]), the model path NUL-terminated and non-empty, heap and
 * ring sizes in range (powers of two). Errors: AIDOS_E_INVALID. */
int ipc_payload_check(const aidos_ipc_msg *m, const void *payload, char *err, size_t errlen);

/* Checks a descriptor (a private copy: the client may be changing the
 * ring) against the heap and the client's handles h[0..nh), and fills x's
 * inputs (data pointing into heap) and output area. Each field is checked:
 * op, flags, agent handle, nin, every input's index (in range, not twice),
 * dtype (known, the model's), rank (0..8, the model's), dims (>= 0, the
 * model's fixed ones, product without overflow), len (exactly the dense
 * size), off (aligned to AIDOS_RING_ALIGN, inside the heap, not
 * overlapping the output area), the output area (aligned, inside the heap,
 * room for the records). *agent gets the handle's agent. Errors:
 * AIDOS_E_INVALID (a field), AIDOS_E_NOTFOUND (unknown handle),
 * AIDOS_E_RANGE (offsets or lengths outside the heap). err names the field.
 * No allocation, no system call. */
int ipc_sqe_check(const aidos_sqe *s, uint8_t *heap, uint64_t heap_bytes, const ipc_handle *h, uint32_t nh,
		  ipc_exec *x, void **agent, char *err, size_t errlen);

/* ---- the server ---- */

typedef struct ipc_opts {
	const char *path;        /* socket path (NULL: aidos_client_default_socket) */
	long gid;                /* with gid_set: a group also allowed to connect (same
	                            uid and root always are); without: env
	                            AIDOS_SOCKET_GROUP (name or number), else none */
	int gid_set;
	uint64_t heap_bytes;     /* per client default; 0: IPC_DEFAULT_HEAP */
	uint32_t sq_entries, cq_entries; /* defaults; 0: IPC_DEFAULT_ENTRIES */
	uint32_t spin_us;        /* poller spin before sleeping; 0: env
	                            AIDOS_IPC_SPIN_US, else 50 (benchmarks);
	                            AIDOS_IPC_CPU=N pins every poller to core N */
	int max_clients;         /* 0: 256 */
} ipc_opts;

typedef struct ipc_server ipc_server;

/* Checks options and copies them; ops is copied. Errors: AIDOS_E_INVALID,
 * AIDOS_E_NOMEM. */
int ipc_server_create(const ipc_opts *o, const ipc_ops *ops, ipc_server **out, char *err, size_t errlen);
/* Creates the socket's directory (0700 when it creates it), removes a stale
 * socket (one nobody answers on), binds, listens and starts the control
 * thread. Errors: -EADDRINUSE (a live server answers there), -errno
 * (socket, bind, listen, threads), AIDOS_E_INVALID (path too long). */
int ipc_server_start(ipc_server *s, char *err, size_t errlen);
/* Stops the control thread and every client's poller (each finishes the
 * request it runs), unmaps every memfd, closes handles, unlinks the socket,
 * frees. NULL is a no-op. */
void ipc_server_destroy(ipc_server *s);
const char *ipc_server_path(const ipc_server *s);
/* Clients connected now. */
int ipc_server_clients(ipc_server *s);

/* ---- the node behind it (node/ipc_node.c) ---- */

typedef struct ipc_node ipc_node;
struct node;

/* Serves the agents of node n (started, outliving the ipc_node) through
 * the node-local API: spawn/kill/list/stats are node_agent_spawn_local
 * etc., requests go through node_submit (the dispatcher: priority,
 * deadline, quota, store). Env AIDOS_IPC_WAIT_SPIN_US: how long a poller
 * spins for a queued request before sleeping (default 50). Errors:
 * AIDOS_E_INVALID (no node), AIDOS_E_NOMEM. */
int ipc_node_create(struct node *n, ipc_node **out, char *err, size_t errlen);
/* NULL is a no-op. Destroy the server using it first. */
void ipc_node_destroy(ipc_node *in);
/* Fills ops with in's functions (ops->ctx = in). */
void ipc_node_ops(ipc_node *in, ipc_ops *ops);

/* ---- client test hooks (node/client.c; tests only) ---- */

typedef struct aidos_client aidos_client;
/* Submits the raw descriptor s (user_data is set here) and waits for its
 * completion into e. Returns 0 when a completion came (its res says how it
 * went), -EPIPE when the node went away. */
int ipc_client_raw(aidos_client *c, aidos_sqe *s, aidos_cqe *e);
/* Moves the submission tail `by` entries ahead without writing them (a
 * corrupt client) and waits for the node's error completion (user_data 0). */
int ipc_client_jump(aidos_client *c, uint32_t by, aidos_cqe *e);
/* Requests of c whose completion was waited for asleep from the start:
 * their agent's round trips here average more than 8 client spins. */
uint64_t ipc_client_far_waits(const aidos_client *c);

#endif
