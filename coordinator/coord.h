/*
 * coordinator/coord.h - the cluster coordinator: node registry with leases,
 * agent directory, placement (sched_place), migration, drain, kill, resolve,
 * and the cluster state persisted across restarts (docs/cluster.md).
 *
 *   coord_opts o = { .data_dir = "/var/lib/aidos" };
 *   coord *c;
 *   char err[256];
 *   if (coord_create(&o, &c, err, sizeof err)) { fputs(err, stderr); ... }
 *   int port;
 *   if (coord_listen(c, "0.0.0.0:7700", 8, &port, err, sizeof err)) ...
 *   coord_start(c);            // reaper and placer threads
 *   ... wait for SIGTERM ...
 *   coord_destroy(c);          // stops serving, joins threads, saves
 *
 * Concurrency. One mutex guards the whole state (nodes, agents, checkpoints).
 * Handlers that call nodes (Place -> Spawn, Migrate -> Export/Import/Release,
 * Drain, Kill, re-placement) never hold it across a remote call: they mark
 * the agent busy, drop the lock, call, and take the lock again to publish the
 * outcome. A second operation on a busy agent fails at once with -EBUSY and
 * a message naming the operation in flight.
 *
 * Threads. The reaper wakes every reaper_ms: a READY or DRAINING node silent
 * for more than lease_ms is declared DEAD (logged with the measured silence)
 * and its agents become PENDING; a node loaded from disk and not heard from
 * within UNKNOWN_GRACE leases of the start gets the same treatment. The
 * placer places PENDING agents (stateless at once, stateful from the last
 * checkpoint when there is one) as soon as it is woken and again every
 * second, so an agent that fits nowhere now is placed when a node joins.
 *
 * Persistence. ClusterState goes to DIR/cluster.pb through a temporary file,
 * fsync and rename (and an fsync of the directory) after every change of the
 * registry or the directory, before the operation that made it is answered.
 * Load figures (free memory, queues, latencies) are not a reason to write;
 * new checkpoints are flushed by the reaper within one period.
 */
#ifndef AIDOS_COORD_H
#define AIDOS_COORD_H

#include <stddef.h>
#include <stdint.h>
#include <protobuf-c/protobuf-c.h>
#include "proto/rpc.h"

typedef struct coord coord;

/* How the coordinator calls a node: one unary call of method ("/aidos.Node/
 * Spawn") to the node's rpc_addr with a deadline, the contract of rpc_call()
 * (on success *resp is freed by the caller with
 * protobuf_c_message_free_unpacked(*resp, NULL); on failure a code and one
 * line in err). Must be thread-safe. Tests replace it with in-process fakes. */
typedef int (*coord_node_call_fn)(void *ctx, const char *rpc_addr, const char *method,
				  const ProtobufCMessage *req,
				  const ProtobufCMessageDescriptor *resp_desc,
				  ProtobufCMessage **resp, int deadline_ms, char *err, size_t errlen);

enum { COORD_REBALANCE_ON = 0, COORD_REBALANCE_OFF = 1 };

typedef struct coord_opts {
	const char *data_dir;      /* required; created if missing (one level) */
	uint64_t heartbeat_ms;     /* period asked of nodes; 0: 250 */
	uint64_t lease_ms;         /* silent longer => dead; 0: 1000 */
	uint64_t reaper_ms;        /* reaper period; 0: 50 */
	int spawn_deadline_ms;     /* Spawn and ImportContext; 0: 5000 */
	int call_deadline_ms;      /* every other call to a node; 0: 2000 */
	int json_log;              /* log lines as JSON objects */
	int quiet;                 /* log warnings and errors only */
	int rebalance;             /* COORD_REBALANCE_ON (0, default) or _OFF */
	uint64_t rebalance_ms;     /* rebalancer check period; 0: 1000 */
	int memory_only;           /* never write cluster.pb (simulations, benchmarks); not for production */
	coord_node_call_fn node_call;  /* NULL: gRPC through proto/rpc.h */
	void *node_call_ctx;
} coord_opts;

/* Loads DIR/cluster.pb if present (nodes start UNKNOWN) and prepares the
 * state; starts no thread. Errors: AIDOS_E_INVALID (bad options, or a
 * cluster.pb that does not parse or holds invalid/duplicate names: the
 * coordinator refuses to start rather than forget the cluster),
 * AIDOS_E_NOMEM, -errno (data dir, read). err gets one line. */
int coord_create(const coord_opts *o, coord **out, char *err, size_t errlen);

/* Starts the reaper and placer threads. Errors: -errno (pthread_create). */
int coord_start(coord *c);

/* Serves the Coordinator service on addr ("0.0.0.0:7700", "127.0.0.1:0")
 * with `threads` server threads; *port gets the bound port. Errors as
 * rpc_server_start. */
int coord_listen(coord *c, const char *addr, int threads, int *port, char *err, size_t errlen);

/* Stops the server (calls in flight finish), joins the threads, writes
 * changes not yet on disk (checkpoints) and frees everything. NULL is a
 * no-op. */
void coord_destroy(coord *c);

/* The Coordinator service's method table (ctx: the coord). */
const rpc_method *coord_rpc_methods(int *n);

/* Runs one method in process, as the server would: method is the full path
 * ("/aidos.Coordinator/Place"), req must be of the method's request type.
 * On success *resp is the reply, released with coord_reply_free().
 * Errors: those of the handler (see coord.c: AIDOS_E_INVALID,
 * AIDOS_E_NOTFOUND, AIDOS_E_NOMEM, -EBUSY, node errors), or
 * AIDOS_E_UNSUPPORTED for an unknown method. Thread-safe. */
int coord_call(coord *c, const char *method, const ProtobufCMessage *req, ProtobufCMessage **resp,
	       char *err, size_t errlen);
void coord_reply_free(ProtobufCMessage *resp);

/* Runs one reaper pass now (tests): returns the number of nodes declared
 * dead. Thread-safe. */
int coord_reap(coord *c);

/* The node the placement policy would choose for agent `name` now (its
 * own node included), into node: the decision Place, the placer and the
 * rebalancer make, without moving anything. For benchmarks of the decision
 * (bench/coord_place.c) and tests. Errors: AIDOS_E_NOTFOUND (no such agent;
 * pinned to an unknown node), AIDOS_E_NOMEM (nothing fits). Thread-safe. */
int coord_decide(coord *c, const char *name, char *node, size_t len, char *err, size_t errlen);

/* Runs one rebalancer check now (tests; the placer thread runs it every
 * rebalance_ms unless rebalancing is off): updates each node's overload
 * streak and moves agents off nodes overloaded long enough. Returns the
 * number of agents moved. Thread-safe; call without holding anything. */
int coord_rebalance(coord *c);

/* Writes the state now. 0 or -errno / AIDOS_E_NOMEM. Thread-safe. */
int coord_save(coord *c);

/* Logs one line to stderr: "<UTC timestamp> aidos-coord <level>: <msg>", or
 * a JSON object {"ts","level","msg"} with json_log. Info lines are dropped
 * when quiet. c may be NULL (plain format). Thread-safe. */
enum { COORD_LOG_INFO = 0, COORD_LOG_WARN = 1, COORD_LOG_ERROR = 2 };
__attribute__((format(printf, 3, 4)))
void coord_log(const coord *c, int level, const char *fmt, ...);

/* Names: 1..63 bytes of [A-Za-z0-9._-], not starting with '.' or '-'. */
int coord_name_valid(const char *s);

/* Static names of the states ("READY", "IDLE", ...). */
const char *coord_node_state_name(int state);
const char *coord_agent_state_name(int state);

#endif
