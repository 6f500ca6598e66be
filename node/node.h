/*
 * node/node.h - the node daemon's interface: boot, the agent table, agents
 * (model + session + priority + state), the aidos.Node service, the UCX data
 * plane and the coordinator link (docs/cluster.md is the design).
 *
 *   node_opts o = { .coord = "198.18.77.1:7700", .name = "n1", .data_dir = "/var/lib/aidos" };
 *                   // .coord = NULL: standalone
 *   node *n;
 *   char err[256];
 *   if (node_create(&o, &n, err, sizeof err)) { fputs(err, stderr); ... }
 *   if (node_start(n, err, sizeof err)) ...   // RPC server, data plane, register, restore, heartbeat
 *   printf("ready rpc=%s transport=%s\n", node_rpc_addr(n), node_transport(n));
 *   ... wait for SIGTERM ...
 *   node_destroy(n);                          // stops everything, frees everything
 *
 * An agent is a model (mapped and decoded once per node, shared by every
 * agent of the same file), its own session (plan + arena), a priority, and
 * for a stateful agent its state pairs (input <- output) whose tensors live
 * in ONE allocation, the context region, so a migration registers it with a
 * single xport_mem_register and the target pulls it with a single xport_get.
 *
 * Concurrency. The agent table has one mutex, held only to look up, insert
 * or remove (never across a model run or a remote call); a looked-up agent
 * is referenced and freed by whoever drops the last reference, so Kill
 * never frees an agent under a running request. Each agent has `mu` (one
 * request at a time, ExportContext waits for the request in flight) and
 * `smu`, a short lock over its statistics, version and context bytes that
 * the heartbeat and Status take without ever waiting for a model run.
 *
 * Requests: every path (local socket, UCX data plane, Node.Infer) is a
 * node_job given to the dispatcher (node/dispatch.h, node/worker.c): run
 * queues per device ordered by sched/dispatch.h, workers pinned to cores.
 * Memory: each agent has its own pool (pools/pools.h, mpool) holding its
 * context region and arenas under its quota. Standalone (no coordinator)
 * the node keeps its own store of agents (node/store.h).
 *
 * The pure parts (state pairing rules, context layout, checkpoint
 * pack/unpack, the table) are exposed here for tests/test_node.c.
 */
#ifndef AIDOS_NODE_H
#define AIDOS_NODE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include "aidos/aidos.h"
#include "proto/aidos.pb-c.h"
#include "transport/transport.h"
#include "proto/rpc.h"
#include "pools/pools.h"
#include "node/dispatch.h"

#define NODE_NAME_MAX 64                 /* names: 1..63 of [A-Za-z0-9._-] */
#define NODE_MAX_STATE 64                /* state pairs per agent */
#define NODE_MAX_INPUTS 64               /* tensors per request */
#define NODE_MAX_CONTEXT (1ull << 30)    /* bytes of one context region */
#define NODE_MAX_TENSOR_NAME 256

/* ---- state pairs and the context region ---- */

/* One state pair: model input `input` is fed from the region at `offset`
 * and refreshed from model output `output` (index out_idx) after each
 * request. dtype and dims are the state's concrete shape. */
typedef struct node_state {
	char *input, *output;      /* owned */
	int out_idx;               /* model output index of `output` */
	int32_t dtype;
	int32_t rank;
	int64_t dims[AIDOS_MAX_RANK];
	size_t offset, bytes;      /* place in the context region */
} node_state;

/* Finds the state pairs of a model whose inputs are ins[0..nin) and outputs
 * outs[0..nout) (dims < 0: symbolic). With explicit pairs (n_ex > 0, names
 * ex_in[i] <- ex_out[i]) exactly those, checked; else, when `rules` is set,
 * each input x is paired with the first output named xN, xn or x_out of the
 * same dtype and a compatible shape (Silero VAD state <- stateN, legacy
 * h <- hn, c <- cn). A symbolic dimension of a state takes the output's
 * fixed one, else 1 (batch 1). Offsets are set (node_state_layout) and
 * *total gets the region's size. On success *out (pool memory, free with
 * node_state_free) holds *n pairs in input order; with neither explicit
 * pairs nor rules it is NULL and *n 0. Errors: AIDOS_E_NOTFOUND (a named
 * input or output that the model lacks), AIDOS_E_INVALID (dtype or shape
 * mismatch, an input or output used twice, --stateful on a model with no
 * pair, a state of unknown rank), AIDOS_E_RANGE (region too large),
 * AIDOS_E_NOMEM. err gets one line. */
int node_state_match(const aidos_tensor *ins, int nin, const aidos_tensor *outs, int nout,
		     const char *const *ex_in, const char *const *ex_out, int n_ex, int rules,
		     node_state **out, int *n, size_t *total, char *err, size_t errlen);
void node_state_free(node_state *st, int n);

/* Lays the states out in one region, in order, each at an offset aligned to
 * its element size (no padding between float states: the region's FNV-1a
 * then equals the checkpoint's checksum). Sets offset/bytes; *total gets the
 * size. Errors: AIDOS_E_RANGE (over NODE_MAX_CONTEXT or overflow),
 * AIDOS_E_UNSUPPORTED (dtype). */
int node_state_layout(node_state *st, int n, size_t *total);

/* FNV-1a 64 over the whole region (ExportContextReply.checksum). */
uint64_t node_ctx_checksum(const void *region, size_t len);

/* A checkpoint (AgentContext) built from a region: a copy of the bytes and
 * tensors pointing into it; everything inside is owned by the struct. */
typedef struct node_ckpt {
	Aidos__AgentContext msg;
	Aidos__Tensor *tensors;    /* [n] */
	Aidos__Tensor **ptrs;      /* [n] */
	uint8_t *data;             /* copy of the region */
	char *agent;
} node_ckpt;

/* Fills c from the region (copied: the caller may change it right after)
 * with version and the checksum over the tensors' data in order. Errors:
 * AIDOS_E_NOMEM. Release with node_ckpt_fini. */
int node_ckpt_pack(const char *agent, const node_state *st, int n, const uint8_t *region, size_t len,
		   uint64_t version, node_ckpt *c);
void node_ckpt_fini(node_ckpt *c);

/* Checks a checkpoint against the states (one tensor per pair, in order,
 * same name as the state input, dtype and dims; data of the right length;
 * the checksum) and copies it into region (len bytes). Errors:
 * AIDOS_E_INVALID (err names the tensor or the checksum). The region is
 * untouched on error. */
int node_ckpt_unpack(const node_state *st, int n, const Aidos__AgentContext *c, uint8_t *region,
		     size_t len, char *err, size_t errlen);

/* Checks that a layout (ExportContextReply.layout: names, dtypes, dims, no
 * data) and length describe exactly these states. Errors: AIDOS_E_INVALID. */
int node_layout_check(const node_state *st, int n, size_t total, Aidos__Tensor *const *layout,
		      size_t n_layout, uint64_t length, char *err, size_t errlen);

/* ---- models shared per node ---- */

typedef struct node_model node_model;
typedef struct node_models {
	pthread_mutex_t mu;
	node_model *list;
} node_models;

void node_models_init(node_models *ms);
void node_models_fini(node_models *ms);
/* The model at path (loaded on first use, then shared and refcounted). The
 * path is resolved with realpath so two spellings share one model.
 * Errors: those of aidos_model_load. Thread-safe. */
int node_model_get(node_models *ms, const char *path, node_model **out, char *err, size_t errlen);
void node_model_put(node_models *ms, node_model *m);
aidos_model *node_model_handle(const node_model *m);
size_t node_model_bytes(const node_model *m);   /* weights mapped + copied */
int node_model_refs(node_models *ms, const node_model *m);
/* Models loaded and the bytes of their weights (each model once). */
int node_models_count(node_models *ms, uint64_t *bytes);

/* ---- agents ---- */

/* Agent states as the node keeps them (node_agent.state_now holds the
 * protocol's Aidos__AgentState values; "sync" is MIGRATING: its context is
 * being exported or imported). */
#define NODE_AGENT_LOADING AIDOS__AGENT_STATE__AGENT_LOADING
#define NODE_AGENT_IDLE AIDOS__AGENT_STATE__AGENT_IDLE
#define NODE_AGENT_INFER AIDOS__AGENT_STATE__AGENT_INFER
#define NODE_AGENT_SYNC AIDOS__AGENT_STATE__AGENT_MIGRATING
#define NODE_AGENT_SUSPENDED AIDOS__AGENT_STATE__AGENT_SUSPENDED
#define NODE_AGENT_DEAD AIDOS__AGENT_STATE__AGENT_DEAD
/* "loading", "idle", "infer", "sync", "suspended", "dead" (else "unknown"). */
const char *node_agent_state_name(int state_now);

#define NODE_MAX_DEVICES 2         /* run queues: 0 = cpu (1 = cuda, reserved) */

typedef struct node_agent {
	char name[NODE_NAME_MAX];
	char *model_path;          /* as given (owned) */
	char *device;              /* "cpu" */
	int priority;
	int stateful;
	node_model *model;         /* shared */
	aidos_session *sess;
	xport *x;                  /* for ctx_mem; may be NULL */
	node_models *models;

	uint32_t id;               /* unique per process: the dispatcher's agent key */
	int dev;                   /* run queue index (0: cpu) */
	uint64_t quota;            /* bytes of its pool (0: the default window) */
	uint32_t deadline_ms;      /* default deadline of its requests (0: none) */
	mpool *pool;               /* its memory: context region and arenas */
	uint64_t est_ns[NODE_MAX_DEVICES]; /* online latency estimate (EWMA), under the run queue's lock */
	int running;               /* a worker runs it now: under the run queue's lock */
	uint64_t rejected;         /* admission refusals (deadline, busy): atomic */
	uint64_t quota_errors;     /* requests failed by its quota: under smu */
	int suspended;             /* atomic: requests refused until resumed */

	/* Lazy agents (a standalone boot): the model is decoded, the state
	 * paired and the session made by node_agent_load, under mu. */
	int loaded;                /* atomic: model, session, state and ctx are set */
	int want_stateful;
	char **ex;                 /* [2 * n_ex] explicit pairs in, out (owned) until loaded */
	int n_ex;
	int load_rc;               /* under mu: a load that failed (answered again, not retried) */
	char load_err[300];

	/* Fusion along dimension 0 (node/worker.c run_fused), under mu. */
	int batch_max;             /* > 1: up to this many queued requests run as one */
	int batchable;             /* set at load: stateless, every input's dim 0 symbolic */
	aidos_session *bsess;      /* the fused plan's own session (the single one keeps its plan) */
	void *stage;               /* concatenated inputs, a block of its pool */
	size_t stage_len;
	uint64_t fused;            /* requests served in fused runs */

	pthread_mutex_t mu;        /* one request at a time; ExportContext */
	int frozen;                /* under mu and smu: requests are redirected */

	node_state *state;         /* [n_state], immutable after create */
	int n_state;
	uint8_t *ctx;              /* the context region [ctx_len], 64-byte aligned */
	size_t ctx_len;
	pool_arena ctx_arena;      /* what holds ctx */
	xport_mem *ctx_mem;        /* registered region (under mu), NULL: not exported */

	pthread_mutex_t smu;       /* short: the fields below and writes of ctx */
	uint64_t version;          /* requests folded into ctx */
	uint64_t requests, errors;
	double latency_ms;         /* moving average of exec time */
	size_t arena_bytes;
	int state_now;             /* Aidos__AgentState */
	uint64_t ckpt_sent;        /* heartbeat thread only: version last sent */
	unsigned ckpt_age;         /* heartbeat thread only */

	int refs;                  /* atomic */
} node_agent;

/* What node_agent_create needs; pairs from ex_in/ex_out (explicit) or the
 * naming rules when stateful. */
typedef struct node_agent_spec {
	const char *name, *model_path, *device;
	int priority, stateful;
	const char *const *ex_in, *const *ex_out;
	int n_ex;
	uint64_t quota;            /* pool quota in bytes, 0: the default window */
	uint32_t deadline_ms;      /* default request deadline, 0: none */
	int batch_max;             /* > 1: fuse up to this many queued requests along dim 0 */
} node_agent_spec;

/* Loads (or shares) the model, creates the agent's pool (quota), the
 * session, finds the state pairs and allocates the zeroed context region
 * from the pool. refs = 1. Errors: AIDOS_E_INVALID (name, path, device,
 * pairs), AIDOS_E_UNSUPPORTED (device), model errors, AIDOS_E_QUOTA (the
 * context region does not fit the quota), AIDOS_E_NOMEM. */
int node_agent_create(node_models *ms, xport *x, const node_agent_spec *sp, node_agent **out, char *err,
		      size_t errlen);
/* The cheap half of node_agent_create: checks the spec (and that the model
 * file exists), copies it, makes the pool; state LOADING, loaded 0. The
 * rest is node_agent_load. refs = 1. Errors as node_agent_create. */
int node_agent_create_lazy(node_models *ms, xport *x, const node_agent_spec *sp, node_agent **out, char *err,
			   size_t errlen);
/* Loads a lazy agent (model shared or decoded, state pairs, context region,
 * session). The caller holds a->mu and, once it has restored what it
 * restores (a checkpoint), calls node_agent_set_idle. A load that failed
 * fails again with the same message. 0 when already loaded. */
int node_agent_load(node_agent *a, char *err, size_t errlen);
/* LOADING -> IDLE (other states are left alone). */
void node_agent_set_idle(node_agent *a);
void node_agent_ref(node_agent *a);
/* Drops a reference; the last one frees the agent (releasing its region's
 * registration and its model reference). */
void node_agent_unref(node_agent *a);

/* ---- the agent table ---- */

typedef struct node_table {
	pthread_mutex_t mu;
	node_agent **a;            /* sorted by name */
	int n, cap;
} node_table;

void node_table_init(node_table *t);
/* Drops the table's reference of every agent. */
void node_table_fini(node_table *t);
/* Inserts a (the table takes a reference). Errors: -EEXIST, AIDOS_E_NOMEM. */
int node_table_add(node_table *t, node_agent *a);
/* The agent named name, referenced (node_agent_unref it), or NULL. */
node_agent *node_table_get(node_table *t, const char *name);
/* Removes name and returns the table's reference (the caller unrefs), or
 * NULL when absent. */
node_agent *node_table_remove(node_table *t, const char *name);
/* Referenced snapshot of every agent: *out (pool memory) holds *n agents;
 * unref each and pool_free the array. Errors: AIDOS_E_NOMEM. */
int node_table_list(node_table *t, node_agent ***out, int *n);
int node_table_count(node_table *t);

/* 1 if s is a valid agent or node name. */
int node_name_valid(const char *s);

/* ---- the dispatcher (node/worker.c; submitters use node/dispatch.h) ---- */

typedef struct node_disp node_disp;
/* Starts `workers` threads for the cpu run queue, pinned to the allowed
 * CPUs in turn when pin; with 2 or more, the last one is reserved for the
 * top priority class, SCHED_FIFO at rt_prio when rt_prio > 0. Errors:
 * AIDOS_E_INVALID, AIDOS_E_NOMEM, -errno. */
int node_disp_create(int workers, int pin, int rt_prio, const node *logn, node_disp **out, char *err,
		     size_t errlen);
/* Stops the workers after the requests running; queued ones get done()
 * with AIDOS_E_BUSY ("the node is stopping"). NULL: no-op. */
void node_disp_destroy(node_disp *d);
int node_disp_submit(node_disp *d, node_job *j, char *err, size_t errlen);
int node_disp_submit_here(node_disp *d, node_job *j, char *err, size_t errlen);
int node_disp_run(node_disp *d, node_job *j, char *err, size_t errlen);
void node_disp_counts_get(node_disp *d, node_disp_counts *c);
/* How a worker loads a lazy agent on its first request (called with a->mu
 * held). Set before the first submit. */
void node_disp_set_loader(node_disp *d, int (*fn)(void *ctx, node_agent *a, char *err, size_t errlen), void *ctx);

/* ---- the node ---- */

typedef struct node node;

typedef struct node_opts {
	const char *coord;         /* coordinator host:port; NULL: standalone */
	const char *name;          /* node name (required) */
	const char *data_dir;      /* required; created if missing */
	const char *socket;        /* local clients' unix socket path (node/ipc*.c); NULL: none */
	int pin;                   /* 1: pin dispatcher workers to cores */
	int rt_prio;               /* > 0: the top-class worker runs SCHED_FIFO at this priority */
	int no_preload;            /* 1: lazy agents load on their first request only (tests) */
	int no_grpc;               /* standalone: 1 = no Node service (gRPC) at all */
	const char *listen;        /* RPC listen address; NULL: 0.0.0.0:0 */
	const char *advertise;     /* address others use; NULL: derived */
	const char *transport;     /* "auto" (default), "ucx", "tcp" */
	uint64_t heartbeat_ms;     /* 0: what the coordinator asks */
	int workers;               /* data-plane workers; 0: min(4, cores) */
	int run_workers;           /* dispatcher workers (cpu queue); 0: cores */
	const struct node_spawn_spec *boot_agents;  /* spawned at boot (config file); borrowed until node_start returns */
	int n_boot_agents;
	int rpc_threads;           /* 0: 8 */
	double t0_ms;              /* process start (CLOCK_MONOTONIC ms) for boot_ms */
} node_opts;

/* Checks options, probes the machine, starts the transport. Starts no
 * thread that serves. Errors: AIDOS_E_INVALID (options), AIDOS_E_UNSUPPORTED
 * (transport), -errno. */
int node_create(const node_opts *o, node **out, char *err, size_t errlen);
/* Boots the rest (DESIGN.md): dispatcher workers, the local store's
 * agents (standalone), RPC server, data plane, registration with the
 * coordinator when there is one (retried until it answers or node_stop is
 * called) and restore of the agents it lists, heartbeat. Errors: those of
 * rpc_server_start, -ECANCELED (stopped). */
int node_start(node *n, char *err, size_t errlen);
/* Boot time so far, ms from o.t0_ms (set when node_start returns). */
double node_boot_ms(const node *n);
const char *node_name(const node *n);
const char *node_socket(const node *n);   /* opts.socket, or NULL */
/* Asks node_start's registration loop to give up (async-signal-safe). */
void node_stop(node *n);
void node_destroy(node *n);

const char *node_rpc_addr(const node *n);
void node_transport(const node *n, const char **name, const char **reason);

/* ---- the node-local API (the socket server, node/ipc*.c, and tests) ---- */

/* What an agent is spawned with. */
typedef struct node_spawn_spec {
	const char *name;          /* 1-63 of [A-Za-z0-9._-] */
	const char *model_path;    /* absolute path of the .onnx file */
	const char *device;        /* NULL or "cpu" */
	int priority;              /* higher runs first */
	uint64_t quota;            /* bytes of its pool; 0: the default window */
	uint32_t deadline_ms;      /* default deadline (SLO) of its requests; 0: none */
	int stateful;              /* pair state by the naming rules */
	const char *const *ex_in, *const *ex_out;  /* explicit state pairs */
	int n_ex;
	int batch_max;             /* > 1: fuse up to this many (<= 8) queued requests along dim
	                              0 when the model takes a symbolic batch dimension on every
	                              input and the agent is stateless; the model must treat the
	                              rows independently */
} node_spawn_spec;

/* Spawns an agent on this node and records it in the node's store
 * (DATA_DIR/agents/NAME.agent), so a restarted standalone node restores it. The
 * model is mapped once per node and shared. Errors: AIDOS_E_INVALID (spec,
 * an agent of that name exists), AIDOS_E_QUOTA, model errors; err gets
 * one line. Thread-safe. */
int node_agent_spawn_local(node *n, const node_spawn_spec *s, char *err, size_t errlen);
/* Kills agent `name` (waits for its request running; queued ones fail
 * with AIDOS_E_NOTFOUND) and drops it from the store. Errors:
 * AIDOS_E_NOTFOUND. Thread-safe. */
int node_agent_kill_local(node *n, const char *name, char *err, size_t errlen);
/* Suspends (requests refused with AIDOS_E_BUSY) or resumes an agent.
 * Errors: AIDOS_E_NOTFOUND. */
int node_agent_suspend_local(node *n, const char *name, int suspend, char *err, size_t errlen);
/* The agent named name, referenced (node_agent_unref it), or NULL: what a
 * submitter puts in node_job.agent. */
node_agent *node_agent_find(node *n, const char *name);
/* Loads a lazy agent now (model, state, its local checkpoint) as its
 * first request would: what a client opening it needs to see its inputs.
 * 0 when loaded already. Errors: the load's (the same again for a load
 * that failed). Thread-safe; takes a->mu. */
int node_agent_ready(node *n, node_agent *a, char *err, size_t errlen);

/* One agent as `aidos ps` shows it. */
typedef struct node_agent_stat {
	char name[NODE_NAME_MAX];
	char model[256];           /* path, truncated */
	char device[8];
	int state;                 /* NODE_AGENT_* */
	int priority;
	uint32_t deadline_ms;
	int stateful;
	uint64_t requests, errors, rejected, quota_errors;
	uint64_t fused;            /* of requests, served in fused (batched) runs */
	int batch_max;
	double latency_ms;         /* moving average of run time */
	uint64_t est_ns;           /* the dispatcher's estimate on its device */
	uint64_t weights_bytes;    /* its model's (shared) */
	uint64_t context_bytes;
	mpool_usage pool;          /* quota, reserved, used, peak, page kind */
} node_agent_stat;

/* Every agent: *out (pool memory, pool_free it) holds *n entries sorted by
 * name. Errors: AIDOS_E_NOMEM. Thread-safe. */
int node_agents_list(node *n, node_agent_stat **out, int *cnt);
/* One agent. Errors: AIDOS_E_NOTFOUND. */
int node_agent_info(node *n, const char *name, node_agent_stat *out);

/* The node as `aidos stats` shows it. */
typedef struct node_stat {
	char name[NODE_NAME_MAX];
	double boot_ms;
	int standalone;
	int agents, models;
	uint64_t weights_bytes;    /* of the models loaded (each once) */
	uint64_t pool_quota, pool_reserved, pool_used, pool_peak;  /* sums over agents */
	int pool_pages;            /* page kind a pool gets here (enum pool_pages) */
	int numa_nodes;
	uint64_t heap_live, heap_peak;  /* pools/alloc.c */
	node_disp_counts disp;
} node_stat;

/* Fills s. Thread-safe. */
void node_stats(node *n, node_stat *s);

/* Requests from any submitter: node/dispatch.h (node_submit, node_run). */

/* Runs one method of the Node service in process, as the server would
 * ("/aidos.Node/Spawn"; req of the method's request type). On success
 * *resp is the reply (protobuf_c_message_free_unpacked(*resp, NULL)).
 * Errors: the handler's, AIDOS_E_UNSUPPORTED (unknown method). */
int node_call(node *n, const char *method, const ProtobufCMessage *req, ProtobufCMessage **resp, char *err,
	      size_t errlen);

/* ---- endpoints, cached per remote worker address (node/dataplane.c) ---- */

typedef struct node_peers node_peers;
typedef struct node_peer node_peer;

int node_peers_create(xport *x, node_peers **out);
/* Disconnects every endpoint. No peer may be held. NULL is a no-op. */
void node_peers_destroy(node_peers *p);
/* The endpoint to the worker at addr, connected on first use and cached;
 * held until node_peer_put (an endpoint is never disconnected while held).
 * A cached endpoint that failed is replaced by a fresh one. Errors: those
 * of xport_connect, AIDOS_E_NOMEM. Thread-safe. */
int node_peer_get(node_peers *p, const void *addr, size_t len, node_peer **e, xport_ep **ep);
/* Releases a held peer; failed != 0: its endpoint is dropped (a later get
 * connects again). */
void node_peer_put(node_peers *p, node_peer *e, int failed);
/* Disconnects unheld endpoints that failed (the client went away) or sat
 * idle for idle_ms or more, then the idlest unheld ones beyond
 * NODE_PEERS_MAX. Returns how many. */
int node_peers_sweep(node_peers *p, uint64_t idle_ms);
int node_peers_count(node_peers *p);
#define NODE_PEERS_MAX 256

/* ---- the data plane (node/dataplane.c) ---- */

/* serve() runs one request. It returns 0 after calling emit() exactly once
 * with the reply (borrowed: valid during emit only, which may pack it), or
 * an AIDOS_E_* code with one line in err (AIDOS_E_NOTFOUND: the agent is
 * not here, or frozen: the client resolves again). */
typedef int (*node_emit_fn)(void *arg, const Aidos__InferReply *rep);
typedef int (*node_serve_fn)(void *ctx, const Aidos__InferRequest *req, node_emit_fn emit, void *arg,
			     char *err, size_t errlen);

typedef struct node_dp node_dp;

/* Starts the receiver (xport_tag_recv of AIDOS_TAG_REQ messages, at most
 * AIDOS_WIRE_MAX_MSG bytes) and `workers` threads that run requests and
 * send each TransportReply to its requester (endpoint from peers). A
 * malformed or oversized message is logged and dropped (no address to
 * answer), the receiver goes on. logn: for node_log (may be NULL).
 * Errors: AIDOS_E_NOMEM, -errno (threads). */
int node_dp_start(xport *x, node_peers *peers, int workers, node_serve_fn fn, void *ctx, const node *logn,
		  node_dp **out, char *err, size_t errlen);
/* Stops receiving, lets the workers finish the queued requests, joins. */
void node_dp_stop(node_dp *dp);
/* Requests queued or running. */
uint32_t node_dp_queue_len(node_dp *dp);
/* Counters: requests served, malformed/oversized messages dropped. */
void node_dp_counts(node_dp *dp, uint64_t *served, uint64_t *dropped);

/* One line to stderr: "<UTC time> aidos-node[<name>] <level>: <msg>". */
enum { NODE_LOG_INFO = 0, NODE_LOG_WARN = 1, NODE_LOG_ERROR = 2 };
__attribute__((format(printf, 3, 4)))
void node_log(const node *n, int level, const char *fmt, ...);

#endif
