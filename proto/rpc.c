/*
 * proto/rpc.c - unary gRPC calls carrying protobuf-c messages, over the gRPC
 * C core (libgrpc 1.51, insecure credentials). See proto/rpc.h for the API.
 *
 * Client: one grpc_channel per rpc_client (channels are thread-safe, and the
 * core shares subchannels between channels to the same target). Each call
 * creates its own pluck completion queue and runs the whole unary exchange as
 * one batch (send initial metadata + message + close, receive initial
 * metadata + message + status), the way the C++ BlockingUnaryCall does. The
 * deadline is enforced by the core, so the pluck always returns.
 *
 * Server: every method is registered with GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_
 * BUFFER, plus one generic grpc_server_request_call for any other path.
 * Why registered rather than only the generic path:
 *  - the core publishes the call only once its request message has arrived,
 *    so a client that sends headers and stalls never ties up a serving thread;
 *  - one batch per call instead of two (no separate RECV_MESSAGE round trip);
 *  - method lookup is done by the core, not by string compares here.
 * The generic request exists only to answer UNIMPLEMENTED: without it a call
 * to an unknown path would wait in the core's queue until its deadline.
 *
 * Threading (the C++ sync server's pattern): one "next" queue receives every
 * new-call notification and all `threads` threads block on it. Each armed
 * request is a slot (call, metadata, payload, and a pluck queue bound to the
 * call). Exactly one slot per method (plus the generic one) is armed at any
 * time; each thread owns one spare slot. A thread that gets a call re-arms its
 * spare for that method *before* running the handler, so the next call of the
 * same method goes to another thread while this one may block for seconds.
 * Slots and their queues are made once at start: no allocation of ours on
 * the request path besides unpacking and packing the messages.
 *
 * Shutdown order (each step needs the previous one):
 *  1. grpc_server_shutdown_and_notify: no new calls; armed requests fail
 *     (success=0 events on the shared queue; threads drop those slots). The
 *     notification comes once every call has been released, i.e. after every
 *     handler in flight returned and its reply batch completed.
 *  2. If that takes longer than the grace period, grpc_server_cancel_all_calls:
 *     calls in flight fail, but their handlers still run to completion.
 *  3. Only then the shared queue is shut down. Before that point a thread that
 *     just took a call re-arms its spare, and the core posts that request's
 *     failure to the shared queue: shutting the queue down earlier would trip
 *     an assertion in the core. No thread holds a call after step 1, so none
 *     re-arms after it.
 *  4. Threads return on GRPC_QUEUE_SHUTDOWN; join; grpc_server_destroy; the
 *     queues are destroyed last.
 */
#include "proto/rpc.h"

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

#include "node/util.h"

#define RPC_ERR_MAX 512          /* status details a handler may write */

/* ---- small helpers ---- */

static const char *const status_names[] = {
	"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
	"ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
	"UNAUTHENTICATED",
};

const char *rpc_status_name(int status)
{
	if (status < 0 || status >= (int)(sizeof status_names / sizeof status_names[0]))
		return "STATUS_?";
	return status_names[status];
}

int rpc_status_to_code(int status)
{
	switch (status) {
	case GRPC_STATUS_OK: return 0;
	case GRPC_STATUS_NOT_FOUND: return AIDOS_E_NOTFOUND;
	case GRPC_STATUS_INVALID_ARGUMENT: return AIDOS_E_INVALID;
	case GRPC_STATUS_UNIMPLEMENTED: return AIDOS_E_UNSUPPORTED;
	case GRPC_STATUS_RESOURCE_EXHAUSTED: return AIDOS_E_NOMEM;
	case GRPC_STATUS_FAILED_PRECONDITION: return AIDOS_E_SHAPE;
	case GRPC_STATUS_OUT_OF_RANGE: return AIDOS_E_RANGE;
	case GRPC_STATUS_DEADLINE_EXCEEDED: return -ETIMEDOUT;
	case GRPC_STATUS_UNAVAILABLE: return -ECONNREFUSED;
	default: return AIDOS_E_RUNTIME;
	}
}

/* The exact code beside the status. A status names a class (UNAVAILABLE
 * is a refused connection and a node's full queue alike), so a handler's
 * error that the status alone would not give back (AIDOS_E_DEADLINE vs a
 * call timeout, AIDOS_E_BUSY, AIDOS_E_QUOTA vs out of memory) also travels
 * as trailing metadata RPC_CODE_KEY: its decimal value. The client takes
 * it only when it is an AIDOS_E_* code that maps to the status received;
 * otherwise (an older peer, a status made by the gRPC core) the status's
 * own mapping stands. */
#define RPC_CODE_KEY "aidos-code"

/* The code in trailing metadata md for status, or the status's mapping. */
static int code_from_trailer(const grpc_metadata_array *md, grpc_status_code status)
{
	int def = rpc_status_to_code(status);
	for (size_t i = 0; i < md->count; i++) {
		const grpc_metadata *e = &md->metadata[i];
		size_t kl = GRPC_SLICE_LENGTH(e->key), vl = GRPC_SLICE_LENGTH(e->value);
		char v[16];
		if (kl != sizeof RPC_CODE_KEY - 1 || memcmp(GRPC_SLICE_START_PTR(e->key), RPC_CODE_KEY, kl) ||
		    !vl || vl >= sizeof v)
			continue;
		memcpy(v, GRPC_SLICE_START_PTR(e->value), vl);
		v[vl] = '\0';
		char *end;
		long c = strtol(v, &end, 10);
		if (*end || c > AIDOS_E_INVALID || c < -1099 || rpc_code_to_status((int)c) != (int)status)
			return def;
		return (int)c;
	}
	return def;
}

int rpc_code_to_status(int code)
{
	switch (code) {
	case 0: return GRPC_STATUS_OK;
	case AIDOS_E_NOTFOUND: case -ENOENT: return GRPC_STATUS_NOT_FOUND;
	case AIDOS_E_INVALID: case AIDOS_E_TRUNCATED: case -EINVAL: return GRPC_STATUS_INVALID_ARGUMENT;
	case AIDOS_E_UNSUPPORTED: case -ENOSYS: case -EOPNOTSUPP: return GRPC_STATUS_UNIMPLEMENTED;
	case AIDOS_E_NOMEM: case -ENOMEM: return GRPC_STATUS_RESOURCE_EXHAUSTED;
	case AIDOS_E_SHAPE: return GRPC_STATUS_FAILED_PRECONDITION;
	case AIDOS_E_RANGE: case -ERANGE: return GRPC_STATUS_OUT_OF_RANGE;
	case -ETIMEDOUT: case AIDOS_E_DEADLINE: return GRPC_STATUS_DEADLINE_EXCEEDED;
	case AIDOS_E_QUOTA: return GRPC_STATUS_RESOURCE_EXHAUSTED;
	case -ECONNREFUSED: case -EHOSTUNREACH: case -ENETUNREACH: case -ECONNRESET: case AIDOS_E_BUSY:
		return GRPC_STATUS_UNAVAILABLE;
	default: return GRPC_STATUS_UNKNOWN;   /* -> AIDOS_E_RUNTIME at the client */
	}
}

static gpr_timespec deadline_in(int ms)
{
	return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

/* Packs m into a byte buffer owned by the caller (grpc_byte_buffer_destroy).
 * gpr_malloc aborts on exhaustion, so this cannot fail once the size is
 * checked against RPC_MAX_MESSAGE. */
static grpc_byte_buffer *pack_bb(const ProtobufCMessage *m, size_t n)
{
	grpc_slice sl = grpc_slice_malloc(n);
	grpc_byte_buffer *bb;

	if (n)
		protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(sl));
	bb = grpc_raw_byte_buffer_create(&sl, 1);
	grpc_slice_unref(sl);
	return bb;
}

/* Unpacks bb as d (decompressing if needed); NULL when malformed. *len gets
 * the message size. Free the result with protobuf_c_message_free_unpacked. */
static ProtobufCMessage *unpack_bb(const ProtobufCMessageDescriptor *d, grpc_byte_buffer *bb,
				   size_t *len)
{
	grpc_byte_buffer_reader r;
	ProtobufCMessage *m;
	grpc_slice sl;

	*len = 0;
	if (!grpc_byte_buffer_reader_init(&r, bb))
		return NULL;
	sl = grpc_byte_buffer_reader_readall(&r);
	grpc_byte_buffer_reader_destroy(&r);
	*len = GRPC_SLICE_LENGTH(sl);
	m = protobuf_c_message_unpack(d, NULL, *len, GRPC_SLICE_START_PTR(sl));
	grpc_slice_unref(sl);
	return m;
}

/* Channel arguments shared by clients and servers. */
static size_t fill_args(grpc_arg *a, int server)
{
	int i = 0;

	a[i].type = GRPC_ARG_INTEGER;
	a[i].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
	a[i++].value.integer = RPC_MAX_MESSAGE;
	if (server) {
		/* The default SO_REUSEPORT would let a second server bind the same
		 * port and silently share its calls: refuse instead. */
		a[i].type = GRPC_ARG_INTEGER;
		a[i].key = (char *)GRPC_ARG_ALLOW_REUSEPORT;
		a[i++].value.integer = 0;
	} else {
		/* A control plane on a LAN: after a peer restarts, reconnect within
		 * seconds instead of the default backoff of up to 120 s (during which
		 * calls fail fast with UNAVAILABLE). */
		a[i].type = GRPC_ARG_INTEGER;
		a[i].key = (char *)GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS;
		a[i++].value.integer = 100;
		a[i].type = GRPC_ARG_INTEGER;
		a[i].key = (char *)GRPC_ARG_MAX_RECONNECT_BACKOFF_MS;
		a[i++].value.integer = 2000;
	}
	return (size_t)i;
}

/* ---- library init ---- */

void rpc_init(void)
{
	grpc_init();
}

void rpc_shutdown(void)
{
	grpc_shutdown();
}

/* ---- client ---- */

struct rpc_client {
	grpc_channel *ch;
};

int rpc_client_create(const char *target, rpc_client **out)
{
	grpc_channel_credentials *creds;
	grpc_channel_args args;
	grpc_arg a[4];
	rpc_client *c;

	if (!out)
		return AIDOS_E_INVALID;
	*out = NULL;
	if (!target || !*target || strpbrk(target, " \t\r\n"))
		return AIDOS_E_INVALID;
	c = calloc(1, sizeof *c);
	if (!c)
		return AIDOS_E_NOMEM;
	grpc_init();   /* each object holds a library reference */
	args.num_args = fill_args(a, 0);
	args.args = a;
	creds = grpc_insecure_credentials_create();
	c->ch = grpc_channel_create(target, creds, &args);
	grpc_channel_credentials_release(creds);
	if (!c->ch) {
		free(c);
		grpc_shutdown();
		return AIDOS_E_INVALID;
	}
	*out = c;
	return 0;
}

void rpc_client_destroy(rpc_client *c)
{
	if (!c)
		return;
	grpc_channel_destroy(c->ch);
	free(c);
	grpc_shutdown();
}

int rpc_call(rpc_client *c, const char *method, const ProtobufCMessage *req,
	     const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
	     int deadline_ms, char *err, size_t errlen)
{
	grpc_metadata_array md_init, md_trail;
	grpc_byte_buffer *send, *recv = NULL;
	grpc_status_code status = GRPC_STATUS_UNKNOWN;
	grpc_slice details = grpc_empty_slice();
	grpc_completion_queue *cq;
	grpc_call_error ce;
	grpc_slice mslice;
	grpc_call *call;
	grpc_event ev;
	grpc_op ops[6];
	size_t n;
	int rc;

	if (resp)
		*resp = NULL;
	if (err && errlen)
		err[0] = '\0';
	if (!c || !method || method[0] != '/' || !req || !resp_desc || !resp)
		return fail(err, errlen, AIDOS_E_INVALID, "rpc_call: bad argument (method '%s')",
			    method ? method : "(null)");
	n = protobuf_c_message_get_packed_size(req);
	if (n > RPC_MAX_MESSAGE)
		return fail(err, errlen, AIDOS_E_RANGE, "%s: request %s of %zu bytes exceeds %d",
			    method, req->descriptor->name, n, RPC_MAX_MESSAGE);
	if (deadline_ms <= 0)
		deadline_ms = RPC_DEFAULT_DEADLINE_MS;

	send = pack_bb(req, n);
	cq = grpc_completion_queue_create_for_pluck(NULL);
	mslice = grpc_slice_from_copied_string(method);
	call = grpc_channel_create_call(c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, mslice, NULL,
					deadline_in(deadline_ms), NULL);
	grpc_slice_unref(mslice);
	grpc_metadata_array_init(&md_init);
	grpc_metadata_array_init(&md_trail);

	memset(ops, 0, sizeof ops);
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = send;
	ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[3].data.recv_initial_metadata.recv_initial_metadata = &md_init;
	ops[4].op = GRPC_OP_RECV_MESSAGE;
	ops[4].data.recv_message.recv_message = &recv;
	ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[5].data.recv_status_on_client.trailing_metadata = &md_trail;
	ops[5].data.recv_status_on_client.status = &status;
	ops[5].data.recv_status_on_client.status_details = &details;

	ce = call ? grpc_call_start_batch(call, ops, 6, call, NULL) : GRPC_CALL_ERROR;
	if (ce != GRPC_CALL_OK) {
		rc = fail(err, errlen, AIDOS_E_RUNTIME, "%s: cannot start call: %s", method,
			  grpc_call_error_to_string(ce));
		goto out;
	}
	/* No timeout here: the call's deadline makes the core finish the batch. */
	ev = grpc_completion_queue_pluck(cq, call, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	if (ev.type != GRPC_OP_COMPLETE || !ev.success) {
		rc = fail(err, errlen, AIDOS_E_RUNTIME, "%s: call failed in the gRPC core", method);
		goto out;
	}
	if (status != GRPC_STATUS_OK) {
		rc = fail(err, errlen, code_from_trailer(&md_trail, status), "%s: %.*s", rpc_status_name(status),
			  (int)GRPC_SLICE_LENGTH(details), (const char *)GRPC_SLICE_START_PTR(details));
		goto out;
	}
	if (!recv) {
		rc = fail(err, errlen, AIDOS_E_INVALID, "%s: no reply message (expected %s)", method,
			  resp_desc->name);
		goto out;
	}
	*resp = unpack_bb(resp_desc, recv, &n);
	rc = *resp ? 0 : fail(err, errlen, AIDOS_E_INVALID, "%s: malformed reply: not a valid %s (%zu bytes)",
			      method, resp_desc->name, n);
out:
	grpc_metadata_array_destroy(&md_init);
	grpc_metadata_array_destroy(&md_trail);
	grpc_slice_unref(details);
	if (recv)
		grpc_byte_buffer_destroy(recv);
	grpc_byte_buffer_destroy(send);
	if (call)
		grpc_call_unref(call);
	grpc_completion_queue_shutdown(cq);
	grpc_completion_queue_destroy(cq);
	return rc;
}

/* ---- server ---- */

/* One armed (or being served) request. */
struct slot {
	int method;                      /* index in s->methods; -1: the generic request */
	grpc_call *call;                 /* set when the request completes; we own a ref */
	gpr_timespec deadline;
	grpc_metadata_array md;
	grpc_byte_buffer *payload;       /* registered methods: the request; NULL: none sent */
	grpc_call_details details;       /* generic request: the path asked for */
	grpc_completion_queue *cq;       /* pluck: batches of `call` complete here */
};

struct worker {
	rpc_server *s;
	struct slot *spare;              /* owned by this thread between calls */
	pthread_t tid;
};

struct rpc_server {
	grpc_server *srv;
	grpc_completion_queue *cq;       /* next: new calls, shared by all threads */
	grpc_completion_queue *done_cq;  /* next: the shutdown notification */
	rpc_method *methods;             /* copies (paths strdup'ed) */
	void **reg;                      /* [n_methods] grpc_server_register_method handles */
	int n_methods;
	void *ctx;
	struct slot *slots;              /* [n_methods + 1 + threads] */
	int n_slots;
	struct worker *workers;
	int n_workers;                   /* threads actually started */
	atomic_int stopping;             /* set before grpc_server_shutdown_and_notify */
};

/* Arms sl for its method. On GRPC_CALL_OK an event with tag sl will come on
 * s->cq (success=0 once the server is shutting down). */
static grpc_call_error slot_arm(rpc_server *s, struct slot *sl)
{
	sl->call = NULL;
	sl->payload = NULL;
	grpc_metadata_array_init(&sl->md);
	if (sl->method < 0) {
		grpc_call_details_init(&sl->details);
		return grpc_server_request_call(s->srv, &sl->call, &sl->details, &sl->md, sl->cq,
						s->cq, sl);
	}
	return grpc_server_request_registered_call(s->srv, s->reg[sl->method], &sl->call,
						   &sl->deadline, &sl->md, &sl->payload, sl->cq,
						   s->cq, sl);
}

/* Releases what an armed or served slot holds. */
static void slot_clear(struct slot *sl)
{
	if (sl->call)
		grpc_call_unref(sl->call);
	sl->call = NULL;
	if (sl->payload)
		grpc_byte_buffer_destroy(sl->payload);
	sl->payload = NULL;
	grpc_metadata_array_destroy(&sl->md);
	if (sl->method < 0)
		grpc_call_details_destroy(&sl->details);
}

static void free_reply(const rpc_method *m, ProtobufCMessage *resp)
{
	if (m->free_resp)
		m->free_resp(resp);
	else
		protobuf_c_message_free_unpacked(resp, NULL);
}

/* Runs one call taken from slot sl to completion: unpack, handler, answer. */
static void serve(rpc_server *s, struct slot *sl)
{
	const rpc_method *m = sl->method >= 0 ? &s->methods[sl->method] : NULL;
	grpc_status_code code = GRPC_STATUS_OK;
	ProtobufCMessage *req = NULL, *resp = NULL;
	grpc_byte_buffer *out = NULL;
	grpc_slice details;
	char msg[RPC_ERR_MAX], cbuf[16];
	int cancelled = 0, nops = 0, hrc = 0;
	grpc_metadata trail;
	grpc_op ops[4];
	size_t n;

	msg[0] = '\0';
	if (!m) {
		code = GRPC_STATUS_UNIMPLEMENTED;
		snprintf(msg, sizeof msg, "unknown method %.*s",
			 (int)GRPC_SLICE_LENGTH(sl->details.method),
			 (const char *)GRPC_SLICE_START_PTR(sl->details.method));
	} else if (!sl->payload) {
		code = GRPC_STATUS_INVALID_ARGUMENT;
		snprintf(msg, sizeof msg, "malformed %s: no request message", m->req_desc->name);
	} else if (!(req = unpack_bb(m->req_desc, sl->payload, &n))) {
		code = GRPC_STATUS_INVALID_ARGUMENT;
		snprintf(msg, sizeof msg, "malformed %s (%zu bytes)", m->req_desc->name, n);
	} else {
		int rc = m->fn(s->ctx, req, &resp, msg, sizeof msg);

		msg[sizeof msg - 1] = '\0';
		if (rc) {
			hrc = rc;
			code = (grpc_status_code)rpc_code_to_status(rc);
			if (!msg[0])
				snprintf(msg, sizeof msg, "%s", aidos_strerror(rc));
			if (resp)
				free_reply(m, resp);
			resp = NULL;
		} else if (!resp) {
			code = GRPC_STATUS_INTERNAL;
			snprintf(msg, sizeof msg, "%s: the handler returned no reply", m->path);
		} else if ((n = protobuf_c_message_get_packed_size(resp)) > RPC_MAX_MESSAGE) {
			code = GRPC_STATUS_RESOURCE_EXHAUSTED;
			snprintf(msg, sizeof msg, "%s: reply of %zu bytes exceeds %d", m->path, n,
				 RPC_MAX_MESSAGE);
		} else {
			out = pack_bb(resp, n);
			msg[0] = '\0';
		}
	}
	if (req)
		protobuf_c_message_free_unpacked(req, NULL);
	if (resp)
		free_reply(m, resp);

	details = grpc_slice_from_copied_string(msg);
	memset(ops, 0, sizeof ops);
	ops[nops++].op = GRPC_OP_SEND_INITIAL_METADATA;
	if (out) {
		ops[nops].op = GRPC_OP_SEND_MESSAGE;
		ops[nops++].data.send_message.send_message = out;
	}
	ops[nops].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
	ops[nops].data.send_status_from_server.status = code;
	ops[nops].data.send_status_from_server.status_details = &details;
	if (hrc && rpc_status_to_code(code) != hrc) {   /* RPC_CODE_KEY: what the status loses */
		snprintf(cbuf, sizeof cbuf, "%d", hrc);
		memset(&trail, 0, sizeof trail);
		trail.key = grpc_slice_from_static_string(RPC_CODE_KEY);
		trail.value = grpc_slice_from_copied_string(cbuf);
		ops[nops].data.send_status_from_server.trailing_metadata_count = 1;
		ops[nops].data.send_status_from_server.trailing_metadata = &trail;
	}
	nops++;
	ops[nops].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
	ops[nops++].data.recv_close_on_server.cancelled = &cancelled;
	/* A call already cancelled (deadline, client gone, server stopping) still
	 * accepts the batch and completes it with success=0; nothing to do then. */
	if (grpc_call_start_batch(sl->call, ops, (size_t)nops, sl, NULL) == GRPC_CALL_OK)
		grpc_completion_queue_pluck(sl->cq, sl, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	else
		grpc_call_cancel(sl->call, NULL);
	grpc_slice_unref(details);
	if (hrc && rpc_status_to_code(code) != hrc)
		grpc_slice_unref(trail.value);
	if (out)
		grpc_byte_buffer_destroy(out);
}

static void *serve_thread(void *arg)
{
	struct worker *w = arg;
	rpc_server *s = w->s;

	for (;;) {
		grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
		struct slot *sl;

		if (ev.type == GRPC_QUEUE_SHUTDOWN)
			break;
		if (ev.type != GRPC_OP_COMPLETE)
			continue;
		sl = ev.tag;
		if (!ev.success) {
			/* A request failed: the server is shutting down. Should the core
			 * ever fail one otherwise, re-arm it so its method stays served. */
			slot_clear(sl);
			if (!atomic_load_explicit(&s->stopping, memory_order_acquire))
				slot_arm(s, sl);
			continue;
		}
		/* Re-arm the method first so that its next call goes to another
		 * thread while this one runs a handler that may block. */
		w->spare->method = sl->method;
		slot_arm(s, w->spare);
		serve(s, sl);
		slot_clear(sl);
		w->spare = sl;
	}
	return NULL;
}

/* Why grpc_server_add_http2_port failed (it only logs the reason): try the
 * same bind ourselves and report its errno. */
static int diagnose_bind(const char *addr, char *err, size_t errlen)
{
	struct addrinfo hints, *ai = NULL;
	char host[256], port[16];
	const char *h = addr, *colon;
	int fd, rc, one = 1;
	size_t hl;

	if (!strncmp(addr, "unix:", 5)) {
		struct sockaddr_un sun = { .sun_family = AF_UNIX };

		if (strlen(addr + 5) >= sizeof sun.sun_path)
			return fail(err, errlen, -ENAMETOOLONG, "cannot listen on %s: path too long", addr);
		strcpy(sun.sun_path, addr + 5);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return fail(err, errlen, -errno, "cannot listen on %s: %s", addr, strerror(errno));
		rc = bind(fd, (struct sockaddr *)&sun, sizeof sun) ? -errno : 0;
		close(fd);
		if (!rc)
			unlink(sun.sun_path);
		goto report;
	}
	if (!strncmp(h, "ipv4:", 5) || !strncmp(h, "ipv6:", 5))
		h += 5;
	if (*h == '[') {
		const char *rb = strchr(h, ']');

		if (!rb || rb[1] != ':')
			return fail(err, errlen, AIDOS_E_INVALID, "cannot listen on %s: bad address", addr);
		hl = (size_t)(rb - h - 1);
		h++;
		colon = rb + 1;
	} else {
		colon = strrchr(h, ':');
		if (!colon)
			return fail(err, errlen, AIDOS_E_INVALID, "cannot listen on %s: no port", addr);
		hl = (size_t)(colon - h);
	}
	if (hl >= sizeof host || strlen(colon + 1) >= sizeof port)
		return fail(err, errlen, AIDOS_E_INVALID, "cannot listen on %s: bad address", addr);
	memcpy(host, h, hl);
	host[hl] = '\0';
	strcpy(port, colon + 1);
	memset(&hints, 0, sizeof hints);
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	if (getaddrinfo(hl ? host : NULL, port, &hints, &ai) || !ai)
		return fail(err, errlen, AIDOS_E_INVALID, "cannot listen on %s: bad host or port", addr);
	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
	if (fd < 0) {
		rc = -errno;
	} else {
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);   /* as gRPC does */
		rc = bind(fd, ai->ai_addr, ai->ai_addrlen) ? -errno : 0;
		close(fd);
	}
	freeaddrinfo(ai);
report:
	if (rc)
		return fail(err, errlen, rc, "cannot listen on %s: %s", addr, strerror(-rc));
	return fail(err, errlen, AIDOS_E_RUNTIME, "cannot listen on %s (gRPC refused the address)", addr);
}

/* gRPC takes "127.0.0.1:99999" and binds some other port: check that a TCP
 * address ends in a port number gRPC will honour. */
static int port_ok(const char *addr)
{
	const char *c = strrchr(addr, ':');
	char *end;
	long p;

	if (!c || !c[1])
		return 0;
	p = strtol(c + 1, &end, 10);
	return *end == '\0' && p >= 0 && p <= 65535;
}

/* gRPC unlinks an existing unix socket file before binding, which would steal
 * the path from a live server: refuse when someone answers there. */
static int unix_in_use(const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd, busy;

	if (strlen(path) >= sizeof sun.sun_path)
		return 0;
	strcpy(sun.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return 0;
	busy = connect(fd, (struct sockaddr *)&sun, sizeof sun) == 0;
	close(fd);
	return busy;
}

/* Tears down whatever start built. Started servers go through the shutdown
 * sequence of the file comment; grace_ms < 0 means no grace: cancel at once. */
static void server_teardown(rpc_server *s, int started, int grace_ms)
{
	int i;

	if (started) {
		grpc_event ev;

		atomic_store_explicit(&s->stopping, 1, memory_order_release);
		grpc_server_shutdown_and_notify(s->srv, s->done_cq, s);
		ev = grpc_completion_queue_next(s->done_cq, deadline_in(grace_ms > 0 ? grace_ms : 0), NULL);
		if (ev.type == GRPC_QUEUE_TIMEOUT) {
			grpc_server_cancel_all_calls(s->srv);
			grpc_completion_queue_next(s->done_cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
		}
	}
	if (s->cq)
		grpc_completion_queue_shutdown(s->cq);
	for (i = 0; i < s->n_workers; i++)
		pthread_join(s->workers[i].tid, NULL);
	/* With no thread running (start failed early), drain here. */
	while (s->cq && grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type
		       != GRPC_QUEUE_SHUTDOWN)
		;
	if (s->srv)
		grpc_server_destroy(s->srv);
	if (s->done_cq) {
		grpc_completion_queue_shutdown(s->done_cq);
		while (grpc_completion_queue_next(s->done_cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type
		       != GRPC_QUEUE_SHUTDOWN)
			;
		grpc_completion_queue_destroy(s->done_cq);
	}
	if (s->cq)
		grpc_completion_queue_destroy(s->cq);
	for (i = 0; i < s->n_slots; i++)
		if (s->slots[i].cq) {
			grpc_completion_queue_shutdown(s->slots[i].cq);
			grpc_completion_queue_destroy(s->slots[i].cq);
		}
	for (i = 0; s->methods && i < s->n_methods; i++)
		free((char *)s->methods[i].path);
	free(s->methods);
	free(s->reg);
	free(s->slots);
	free(s->workers);
	free(s);
	grpc_shutdown();
}

int rpc_server_start(const char *listen_addr, const rpc_method *methods, int n_methods, void *ctx,
		     int threads, rpc_server **out, int *bound_port, char *err, size_t errlen)
{
	grpc_server_credentials *creds;
	grpc_channel_args args;
	grpc_arg a[4];
	rpc_server *s;
	int i, j, port, rc;

	if (err && errlen)
		err[0] = '\0';
	if (!out)
		return fail(err, errlen, AIDOS_E_INVALID, "rpc_server_start: out is NULL");
	*out = NULL;
	if (bound_port)
		*bound_port = 0;
	if (!listen_addr || !*listen_addr || n_methods < 0 || (n_methods && !methods))
		return fail(err, errlen, AIDOS_E_INVALID, "rpc_server_start: bad argument");
	if (threads <= 0)
		threads = RPC_DEFAULT_THREADS;
	if (threads > RPC_MAX_THREADS)
		return fail(err, errlen, AIDOS_E_INVALID, "rpc_server_start: %d threads (max %d)",
			    threads, RPC_MAX_THREADS);
	for (i = 0; i < n_methods; i++) {
		const rpc_method *m = &methods[i];

		if (!m->path || m->path[0] != '/' || !m->req_desc || !m->fn ||
		    m->req_desc->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC)
			return fail(err, errlen, AIDOS_E_INVALID, "method %d (%s): bad path, descriptor or handler",
				    i, m->path ? m->path : "(null)");
		for (j = 0; j < i; j++)
			if (!strcmp(methods[j].path, m->path))
				return fail(err, errlen, AIDOS_E_INVALID, "method %s given twice", m->path);
	}
	if (strncmp(listen_addr, "unix:", 5) && !port_ok(listen_addr))
		return fail(err, errlen, AIDOS_E_INVALID, "cannot listen on %s: bad or missing port",
			    listen_addr);
	if (!strncmp(listen_addr, "unix:", 5) && unix_in_use(listen_addr + 5))
		return fail(err, errlen, -EADDRINUSE, "cannot listen on %s: a server answers there",
			    listen_addr);

	s = calloc(1, sizeof *s);
	if (!s)
		return fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
	grpc_init();
	s->ctx = ctx;
	s->n_methods = n_methods;
	s->methods = calloc((size_t)n_methods + 1, sizeof *s->methods);
	s->reg = calloc((size_t)n_methods + 1, sizeof *s->reg);
	s->slots = calloc((size_t)(n_methods + 1 + threads), sizeof *s->slots);
	s->workers = calloc((size_t)threads, sizeof *s->workers);
	if (!s->methods || !s->reg || !s->slots || !s->workers) {
		s->n_methods = 0;
		server_teardown(s, 0, 0);
		return fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
	}
	for (i = 0; i < n_methods; i++) {
		s->methods[i] = methods[i];
		s->methods[i].path = strdup(methods[i].path);
		if (!s->methods[i].path) {
			server_teardown(s, 0, 0);
			return fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
		}
	}

	args.num_args = fill_args(a, 1);
	args.args = a;
	s->srv = grpc_server_create(&args, NULL);
	s->cq = grpc_completion_queue_create_for_next(NULL);
	s->done_cq = grpc_completion_queue_create_for_next(NULL);
	grpc_server_register_completion_queue(s->srv, s->cq, NULL);
	grpc_server_register_completion_queue(s->srv, s->done_cq, NULL);
	for (i = 0; i < n_methods; i++) {
		s->reg[i] = grpc_server_register_method(s->srv, s->methods[i].path, NULL,
							GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
		if (!s->reg[i]) {
			rc = fail(err, errlen, AIDOS_E_INVALID, "cannot register method %s", s->methods[i].path);
			server_teardown(s, 0, 0);
			return rc;
		}
	}
	creds = grpc_insecure_server_credentials_create();
	port = grpc_server_add_http2_port(s->srv, listen_addr, creds);
	grpc_server_credentials_release(creds);
	if (port <= 0) {
		rc = diagnose_bind(listen_addr, err, errlen);
		server_teardown(s, 0, 0);
		return rc;
	}
	grpc_server_start(s->srv);

	s->n_slots = n_methods + 1 + threads;
	for (i = 0; i < s->n_slots; i++) {
		s->slots[i].method = i < n_methods ? i : -1;
		s->slots[i].cq = grpc_completion_queue_create_for_pluck(NULL);
	}
	for (i = 0; i < threads; i++) {
		struct worker *w = &s->workers[i];

		w->s = s;
		w->spare = &s->slots[n_methods + 1 + i];
		rc = pthread_create(&w->tid, NULL, serve_thread, w);
		if (rc) {
			server_teardown(s, 1, 0);
			return fail(err, errlen, -rc, "cannot start serving thread: %s", strerror(rc));
		}
		s->n_workers++;
	}
	/* Arm after start (the core builds its request matchers in start); calls
	 * that arrived meanwhile wait in the core and are matched now. */
	for (i = 0; i <= n_methods; i++) {
		grpc_call_error ce = slot_arm(s, &s->slots[i]);

		if (ce != GRPC_CALL_OK) {
			grpc_metadata_array_destroy(&s->slots[i].md);
			if (s->slots[i].method < 0)
				grpc_call_details_destroy(&s->slots[i].details);
			rc = fail(err, errlen, AIDOS_E_RUNTIME, "cannot request calls: %s",
				  grpc_call_error_to_string(ce));
			server_teardown(s, 1, 0);
			return rc;
		}
	}
	if (bound_port)
		*bound_port = strncmp(listen_addr, "unix:", 5) ? port : 0;
	*out = s;
	return 0;
}

void rpc_server_stop_grace(rpc_server *s, int grace_ms)
{
	if (s)
		server_teardown(s, 1, grace_ms);
}

void rpc_server_stop(rpc_server *s)
{
	rpc_server_stop_grace(s, RPC_STOP_GRACE_MS);
}
