/*
 * proto/rpc.h - thin helpers over the gRPC C core (Debian libgrpc-dev) for
 * unary calls carrying protobuf-c messages (proto/aidos.proto, generated at
 * build time into build/gen/proto/aidos.pb-c.h).
 *
 * Client: one channel per target; rpc_call() packs the request, performs one
 * unary call with a deadline on a private completion queue, and unpacks the
 * reply. Server: a table of methods; each call is unpacked, handed to its
 * handler on one of the server's threads, and answered with the handler's
 * reply or with a gRPC status carrying its error code and message.
 *
 *   static int resolve(void *ctx, const ProtobufCMessage *m, ProtobufCMessage **out,
 *                      char *err, size_t errlen)
 *   {
 *       const Aidos__ResolveRequest *req = (const Aidos__ResolveRequest *)m;
 *       Aidos__ResolveReply *r = malloc(sizeof *r);          // freed by the server
 *       if (!r) return AIDOS_E_NOMEM;
 *       aidos__resolve_reply__init(r);
 *       if (!lookup(ctx, req->agent)) {
 *           free(r);
 *           snprintf(err, errlen, "no agent '%s'", req->agent);
 *           return AIDOS_E_NOTFOUND;                          // -> NOT_FOUND
 *       }
 *       ...                                                   // heap-only fields
 *       *out = &r->base;
 *       return 0;
 *   }
 *   static const rpc_method methods[] = {
 *       { "/aidos.Coordinator/Resolve", &aidos__resolve_request__descriptor, resolve, NULL },
 *   };
 *   rpc_server *srv; int port; char err[256];
 *   rpc_server_start("127.0.0.1:0", methods, 1, ctx, 4, &srv, &port, err, sizeof err);
 *
 *   rpc_client *c; ProtobufCMessage *out;
 *   rpc_client_create("127.0.0.1:7000", &c);
 *   Aidos__ResolveRequest q = AIDOS__RESOLVE_REQUEST__INIT; q.agent = "det";
 *   int rc = rpc_call(c, "/aidos.Coordinator/Resolve", &q.base,
 *                     &aidos__resolve_reply__descriptor, &out, 2000, err, sizeof err);
 *   if (!rc) { use((Aidos__ResolveReply *)out); protobuf_c_message_free_unpacked(out, NULL); }
 *   rpc_client_destroy(c); rpc_server_stop(srv);
 *
 * Errors cross the wire as gRPC status codes plus the message; rpc_call maps
 * them back: NOT_FOUND -> AIDOS_E_NOTFOUND, INVALID_ARGUMENT ->
 * AIDOS_E_INVALID, UNIMPLEMENTED -> AIDOS_E_UNSUPPORTED, RESOURCE_EXHAUSTED ->
 * AIDOS_E_NOMEM, FAILED_PRECONDITION -> AIDOS_E_SHAPE, OUT_OF_RANGE ->
 * AIDOS_E_RANGE, DEADLINE_EXCEEDED -> -ETIMEDOUT, UNAVAILABLE ->
 * -ECONNREFUSED, anything else -> AIDOS_E_RUNTIME. Server handlers return
 * the same codes and the server maps them forward (rpc_code_to_status: also
 * AIDOS_E_TRUNCATED and -EINVAL -> INVALID_ARGUMENT, -ENOENT -> NOT_FOUND,
 * -ENOMEM -> RESOURCE_EXHAUSTED, -ETIMEDOUT -> DEADLINE_EXCEEDED,
 * -ECONNREFUSED/-EHOSTUNREACH/-ENETUNREACH/-ECONNRESET -> UNAVAILABLE,
 * AIDOS_E_DEADLINE -> DEADLINE_EXCEEDED, AIDOS_E_BUSY -> UNAVAILABLE,
 * AIDOS_E_QUOTA -> RESOURCE_EXHAUSTED, other codes -> UNKNOWN). A handler's
 * code the status alone does not give back also travels as trailing
 * metadata "aidos-code", so the client gets AIDOS_E_DEADLINE/BUSY/QUOTA
 * exactly; otherwise it gets the class.
 * Calls fail fast: a peer that is down answers UNAVAILABLE at once (no
 * waiting for it to come up within the deadline).
 *
 * Messages are limited to RPC_MAX_MESSAGE bytes each way.
 */
#ifndef AIDOS_PROTO_RPC_H
#define AIDOS_PROTO_RPC_H

#include <stddef.h>
#include <protobuf-c/protobuf-c.h>
#include "aidos/aidos.h"

#define RPC_MAX_MESSAGE (64 << 20)     /* bytes per request or reply */
#define RPC_DEFAULT_DEADLINE_MS 30000  /* rpc_call with deadline_ms <= 0 */
#define RPC_DEFAULT_THREADS 4          /* rpc_server_start with threads <= 0 */
#define RPC_MAX_THREADS 1024
#define RPC_STOP_GRACE_MS 5000         /* rpc_server_stop: wait for calls in flight */

/* Process-wide gRPC init/shutdown (refcounted, thread-safe). Every client and
 * server also holds its own reference, so these are optional; calling
 * rpc_init once at start keeps the library up between short-lived clients. */
void rpc_init(void);
void rpc_shutdown(void);

typedef struct rpc_client rpc_client;

/* Opens an insecure channel to target ("host:port", "unix:/path"). Does not
 * connect until the first call; after a failed connection it retries with a
 * backoff of 100 ms growing to 2 s. Errors: AIDOS_E_INVALID, AIDOS_E_NOMEM.
 * Thread-safe. */
int rpc_client_create(const char *target, rpc_client **out);
/* Closes the channel. No call on c may be in flight. NULL is a no-op. */
void rpc_client_destroy(rpc_client *c);

/* One unary call of method (full path: "/aidos.Coordinator/Place") with a
 * deadline in milliseconds (<= 0: RPC_DEFAULT_DEADLINE_MS). On success *resp
 * is the unpacked reply, owned by the caller (free with
 * protobuf_c_message_free_unpacked(*resp, NULL)). On failure *resp is NULL,
 * the mapped code is returned and err (may be NULL) holds "<STATUS>: <server
 * message>", e.g. "NOT_FOUND: no agent 'x'". Local failures: AIDOS_E_INVALID
 * (bad argument; a reply that is not a valid resp_desc, err names the type),
 * AIDOS_E_RANGE (request over RPC_MAX_MESSAGE), AIDOS_E_RUNTIME. The call
 * blocks at most about deadline_ms. Thread-safe: one client may be used from
 * several threads at once. */
int rpc_call(rpc_client *c, const char *method, const ProtobufCMessage *req,
	     const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
	     int deadline_ms, char *err, size_t errlen);

/* A handler gets the unpacked request (borrowed: valid during the call only;
 * copy what you keep) and either sets *resp and returns 0, or returns an
 * error code (AIDOS_E_* or -errno, mapped as above) with a one-line message
 * in err (errlen >= 256; empty: aidos_strerror(code) is sent). *resp is
 * owned by the server from then on: it is packed, sent and freed with the
 * method's free_resp, or when free_resp is NULL with
 * protobuf_c_message_free_unpacked(resp, NULL), which free()s every string,
 * bytes field, repeated array and submessage: then build the reply only from
 * malloc'ed memory (strdup; empty strings may stay protobuf_c_empty_string as
 * set by the __INIT macros). A reply set together with an error is freed and
 * not sent. Handlers run on server threads, several at once, and may block
 * (they may call other services); they share `ctx`, so they lock what they
 * share. */
typedef int (*rpc_handler)(void *ctx, const ProtobufCMessage *req, ProtobufCMessage **resp,
			   char *err, size_t errlen);

typedef struct rpc_method {
	const char *path;                           /* "/aidos.Node/Spawn" */
	const ProtobufCMessageDescriptor *req_desc;
	rpc_handler fn;
	void (*free_resp)(ProtobufCMessage *resp);  /* how to free what fn returned */
} rpc_method;

typedef struct rpc_server rpc_server;

/* Binds listen_addr ("0.0.0.0:7000", "127.0.0.1:0" for any free port,
 * "unix:/path") and starts `threads` serving threads (<= 0:
 * RPC_DEFAULT_THREADS): up to `threads` handlers run at once; more calls wait
 * in the server's queue. methods[] is copied (paths too); descriptors must be
 * static (the generated ones are). *bound_port (may be NULL) gets the port
 * actually bound (0 for unix sockets). A request that fails to unpack is
 * answered INVALID_ARGUMENT "malformed <Type> (N bytes)"; an unknown method
 * UNIMPLEMENTED; a handler returning 0 without a reply INTERNAL; the server
 * keeps serving. A port or unix socket already served is refused (no
 * SO_REUSEPORT sharing, no stealing of a live socket path). Errors:
 * -EADDRINUSE, -EADDRNOTAVAIL, -EACCES and friends, AIDOS_E_INVALID (bad
 * address or method table), AIDOS_E_NOMEM; err gets one line. */
int rpc_server_start(const char *listen_addr, const rpc_method *methods, int n_methods, void *ctx,
		     int threads, rpc_server **out, int *bound_port, char *err, size_t errlen);
/* Stops accepting, lets calls in flight finish for up to RPC_STOP_GRACE_MS,
 * then cancels the rest (their clients get an error), waits for every
 * handler to return (a handler is never interrupted), joins the threads and
 * frees s. Must not be called from a handler. NULL is a no-op. */
void rpc_server_stop(rpc_server *s);
/* The same with a grace period of grace_ms (<= 0: cancel calls at once). */
void rpc_server_stop_grace(rpc_server *s, int grace_ms);

/* The gRPC status name ("NOT_FOUND") of a grpc_status_code, and the
 * mappings described above, for code that talks to gRPC directly. */
const char *rpc_status_name(int status);
int rpc_status_to_code(int status);
int rpc_code_to_status(int code);

#endif
