/*
 * aidos/client.h - the local client API of an aidos node: talk to
 * `aidos-node` on this machine through shared memory, with no system call
 * and no copy of the tensors on the hot path.
 *
 * A client connects to the node's unix socket (control: spawn, kill, list,
 * stats) and receives a shared memory region holding a submission ring, a
 * completion ring and a tensor heap. Tensors allocated with
 * aidos_client_tensor_alloc live in that heap: the caller writes inputs in
 * place, the node's agent reads them in place and writes its outputs into
 * the heap, where the caller reads them. In steady state a request is a
 * descriptor written into the ring and a completion read back: both sides
 * spin briefly and only sleep (futex) when idle.
 *
 *   aidos_client *c;
 *   char err[256];
 *   if (aidos_client_connect(NULL, NULL, &c, err, sizeof err)) {   // $AIDOS_SOCKET or the default
 *       fprintf(stderr, "%s\n", err); return 1;
 *   }
 *   aidos_client_spawn_opts so = { .name = "jarvis", .model = "hey_jarvis_v0.1.onnx" };
 *   if (aidos_client_spawn(c, &so, err, sizeof err)) ...          // -EEXIST: already there
 *   aidos_tensor x = { .name = "x.1", .dtype = AIDOS_DT_FLOAT, .rank = 3, .dims = {1, 16, 96} };
 *   aidos_client_tensor_alloc(c, &x);                              // x.data points into the heap
 *   fill((float *)x.data);                                         // write the input in place
 *   aidos_tensor out[4];
 *   int nout;
 *   if (aidos_client_infer(c, "jarvis", 1, &x, &nout, out, 4, err, sizeof err)) ...
 *   printf("%s = %f\n", out[0].name, ((float *)out[0].data)[0]);  // in the heap, borrowed
 *   aidos_client_tensor_free(c, &x);
 *   aidos_client_close(c);
 *
 * Conventions: every fallible call returns 0 or a negative code (-errno or
 * AIDOS_E_*, see aidos_strerror) and writes one line into err when err is
 * not NULL. A client is used by one thread at a time (use one client per
 * thread; the node serves each client with its own poller).
 */
#ifndef AIDOS_CLIENT_H
#define AIDOS_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include "aidos/aidos.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct aidos_client aidos_client;

typedef struct aidos_client_opts {
	uint64_t heap_bytes;   /* tensor heap; 0: the node's default (64 MiB, sparse) */
	uint32_t spin_us;      /* spin before sleeping on a completion; 0: 50
	                          (env AIDOS_CLIENT_SPIN_US overrides). A request
	                          to an agent whose round trips on this client
	                          average over 8 spins is waited for asleep from
	                          the start (the node wakes the client): spinning
	                          for it would only take a core from the node */
	uint32_t _rsv;
} aidos_client_opts;

/* The socket path a client uses when given none, written into buf: $AIDOS_SOCKET,
 * else $XDG_RUNTIME_DIR/aidos/node.sock, else /run/aidos/node.sock for root,
 * else /tmp/aidos-<uid>/node.sock. Returns buf. */
const char *aidos_client_default_socket(char *buf, size_t len);

/* Connects to the node at path (NULL: aidos_client_default_socket), gets its
 * shared region and maps it. Errors: -ENOENT / -ECONNREFUSED (no node
 * listening there: err names the socket), -EACCES (the node refuses this
 * uid), AIDOS_E_INVALID (the node speaks another ABI version), -errno.
 * Free with aidos_client_close. */
int aidos_client_connect(const char *path, const aidos_client_opts *o, aidos_client **out, char *err,
			 size_t errlen);
/* Closes the socket and unmaps the region (the node drops this client and
 * its in-flight request). Tensors and outputs of c become invalid. NULL is
 * a no-op. */
void aidos_client_close(aidos_client *c);

typedef struct aidos_client_spawn_opts {
	const char *name;      /* 1-63 of [A-Za-z0-9._-] */
	const char *model;     /* ONNX file path, as the node sees it (made absolute here) */
	int priority;          /* -1000..1000, default 0 */
	uint64_t quota_bytes;  /* memory quota of the agent; 0: none */
	uint64_t deadline_ms;  /* default request deadline; 0: none */
} aidos_client_spawn_opts;

/* Creates an agent on the node. Errors: -EEXIST (name taken),
 * AIDOS_E_INVALID (name, options), model load errors (-ENOENT,
 * AIDOS_E_INVALID, AIDOS_E_UNSUPPORTED), -EPIPE (node gone). */
int aidos_client_spawn(aidos_client *c, const aidos_client_spawn_opts *o, char *err, size_t errlen);
/* Removes an agent (a request running on it finishes). Errors:
 * AIDOS_E_NOTFOUND, -EPIPE. */
int aidos_client_kill(aidos_client *c, const char *name, char *err, size_t errlen);

typedef struct aidos_agent_info {
	char name[64];
	char model[256];
	char state[16];        /* "loading", "idle", "infer", "suspended", "dead", ... */
	int32_t priority;
	uint32_t _pad;
	uint64_t quota_bytes, deadline_ms;
	uint64_t requests, errors;
	uint64_t mem_bytes;    /* arena of its current plan + its context */
	uint64_t latency_ns;   /* moving average of its model run */
} aidos_agent_info;

/* Every agent of the node, by name: *out (free with aidos_client_list_free)
 * holds *n records. Errors: AIDOS_E_NOMEM, -EPIPE. */
int aidos_client_list(aidos_client *c, aidos_agent_info **out, int *n, char *err, size_t errlen);
void aidos_client_list_free(aidos_agent_info *l);

typedef struct aidos_node_stats {
	uint64_t agents, clients;
	uint64_t requests, errors;   /* through the rings since the node started */
	uint64_t uptime_ms;
	uint64_t heap_bytes;         /* shared memory mapped for clients */
	uint64_t pool_bytes;         /* node heap in use */
} aidos_node_stats;

/* Node counters. Errors: -EPIPE. */
int aidos_client_stats(aidos_client *c, aidos_node_stats *st, char *err, size_t errlen);

/* A null request through the rings; *rtt_ns (may be NULL) gets the round
 * trip. No system call while the node's poller spins. Errors: -EPIPE (node
 * gone). */
int aidos_client_ping(aidos_client *c, uint64_t *rtt_ns);

/* Allocates t's bytes in the shared heap for t->dtype, t->rank, t->dims
 * (t->name untouched) and sets t->data (64-byte aligned, zeroed on first
 * use of the pages). Errors: AIDOS_E_INVALID (dtype, rank, dims),
 * AIDOS_E_NOMEM (heap full). Free with aidos_client_tensor_free. */
int aidos_client_tensor_alloc(aidos_client *c, aidos_tensor *t);
void aidos_client_tensor_free(aidos_client *c, aidos_tensor *t);

/* Deadline for later requests of c: each must start within rel_ns of its
 * submission, else it fails with -ETIME (0: no deadline, the default). */
void aidos_client_set_deadline(aidos_client *c, uint64_t rel_ns);

/* Runs agent `agent` on in[0..nin) (matched by name; every input the model
 * takes from the caller). Inputs allocated with aidos_client_tensor_alloc
 * are read in place; others are copied into the heap first (one copy).
 * On success *nout outputs fill out[0..max_out): names are the model's,
 * data points into the heap (borrowed: valid until the next infer of the
 * same agent on c, or aidos_client_close). The output area is sized on the
 * first request and grown when the node says it is too small.
 * Errors: the node's (AIDOS_E_NOTFOUND: no such agent; AIDOS_E_INVALID:
 * input name, dtype or shape; AIDOS_E_NOMEM: quota; -ETIME: deadline;
 * AIDOS_E_RUNTIME), AIDOS_E_RANGE (more outputs than max_out), -EPIPE. */
int aidos_client_infer(aidos_client *c, const char *agent, int nin, const aidos_tensor *in, int *nout,
		       aidos_tensor *out, int max_out, char *err, size_t errlen);

/* The time the model of the last successful aidos_client_infer on c ran,
 * as the node measured it (ns): the rest of the round trip is the cost of
 * going through the node. */
uint64_t aidos_client_last_exec_ns(const aidos_client *c);

/* The shared region, for tools and tests: the ring header (node/ipc_abi.h)
 * and the heap. Borrowed until aidos_client_close. */
void *aidos_client_region(aidos_client *c, size_t *len);

#ifdef __cplusplus
}
#endif
#endif
