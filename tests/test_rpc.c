/*
 * tests/test_rpc.c - unary gRPC calls with protobuf-c messages (proto/rpc.c).
 *
 * A loopback server with a few aidos.proto methods: echo (Resolve), a handler
 * that fails with NOT_FOUND (Kill), a slow one (Migrate sleeps to_node ms),
 * an empty one (ListNodes) for the round-trip latency, and bad handlers.
 * Checked: replies and error mapping, deadlines, a server that is not
 * running, garbage request bytes sent with the C core directly (answered
 * INVALID_ARGUMENT, the server keeps serving), replies of the wrong type,
 * 4 client threads at once, a blocked handler not stalling others, stop with
 * a call in flight, unix sockets and address conflicts. Run it under
 * `make SAN=1` too (ASan+UBSan+LSan must stay quiet).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

#include "proto/aidos.pb-c.h"
#include "proto/rpc.h"

#define M_RESOLVE "/aidos.Coordinator/Resolve"
#define M_KILL "/aidos.Coordinator/Kill"
#define M_MIGRATE "/aidos.Coordinator/Migrate"
#define M_LIST "/aidos.Coordinator/ListNodes"
#define M_HEARTBEAT "/aidos.Coordinator/Heartbeat"
#define M_DRAIN "/aidos.Coordinator/Drain"
#define M_STATUS "/aidos.Node/Status"

struct ctx {
	atomic_int calls;
	atomic_int slow_done;
};

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* ---- handlers ---- */

/* Resolve: echoes the agent's name, with a node, all heap (default free). */
static int h_resolve(void *vctx, const ProtobufCMessage *m, ProtobufCMessage **out, char *err,
		     size_t errlen)
{
	const Aidos__ResolveRequest *req = (const Aidos__ResolveRequest *)m;
	struct ctx *c = vctx;
	Aidos__ResolveReply *r = malloc(sizeof *r);
	Aidos__AgentInfo *a = malloc(sizeof *a);
	Aidos__NodeInfo *n = malloc(sizeof *n);

	atomic_fetch_add(&c->calls, 1);
	if (!r || !a || !n) {
		free(r), free(a), free(n);
		return AIDOS_E_NOMEM;
	}
	aidos__resolve_reply__init(r);
	aidos__agent_info__init(a);
	aidos__node_info__init(n);
	a->name = strdup(req->agent);
	a->priority = 7;
	n->name = strdup("n1");
	r->agent = a;
	r->node = n;
	*out = &r->base;
	return 0;
}

/* Kill: the agent is never there. */
static int h_kill(void *vctx, const ProtobufCMessage *m, ProtobufCMessage **out, char *err,
		  size_t errlen)
{
	const Aidos__KillRequest *req = (const Aidos__KillRequest *)m;

	snprintf(err, errlen, "no agent '%s'", req->agent);
	return AIDOS_E_NOTFOUND;
}

/* Migrate: sleeps atoi(to_node) ms, like a coordinator waiting on nodes. */
static int h_migrate(void *vctx, const ProtobufCMessage *m, ProtobufCMessage **out, char *err,
		     size_t errlen)
{
	const Aidos__MigrateRequest *req = (const Aidos__MigrateRequest *)m;
	struct ctx *c = vctx;
	Aidos__MigrateReply *r;

	sleep_ms(atoi(req->to_node));
	atomic_fetch_add(&c->slow_done, 1);
	r = malloc(sizeof *r);
	if (!r)
		return AIDOS_E_NOMEM;
	aidos__migrate_reply__init(r);
	r->ms = atof(req->to_node);
	*out = &r->base;
	return 0;
}

/* ListNodes: an empty reply from static storage, freed by a no-op. */
static Aidos__ListNodesReply list_reply = AIDOS__LIST_NODES_REPLY__INIT;

static int h_list(void *vctx, const ProtobufCMessage *m, ProtobufCMessage **out, char *err,
		  size_t errlen)
{
	*out = &list_reply.base;
	return 0;
}

static void free_nothing(ProtobufCMessage *m)
{
	(void)m;
}

/* Heartbeat: replies with a message of another type, a ResolveRequest whose
 * field 1 (a string) holds bytes that are not a valid AgentInfo: called as if
 * it answered a ResolveReply (field 1: AgentInfo), the reply is malformed. */
static int h_wrong_type(void *vctx, const ProtobufCMessage *m, ProtobufCMessage **out, char *err,
			size_t errlen)
{
	Aidos__ResolveRequest *r = malloc(sizeof *r);

	if (!r)
		return AIDOS_E_NOMEM;
	aidos__resolve_request__init(r);
	r->agent = strdup("\x0f");   /* wire type 7 */
	*out = &r->base;
	return 0;
}

/* Drain: returns 0 without a reply (a handler bug: INTERNAL). */
static int h_no_reply(void *vctx, const ProtobufCMessage *m, ProtobufCMessage **out, char *err,
		      size_t errlen)
{
	return 0;
}

/* Node/Status: an error with a reply set and no message (reply freed, not
 * sent; the message is the code's name). */
static int h_err_and_reply(void *vctx, const ProtobufCMessage *m, ProtobufCMessage **out, char *err,
			   size_t errlen)
{
	Aidos__StatusReply *r = malloc(sizeof *r);

	if (r) {
		aidos__status_reply__init(r);
		*out = &r->base;
	}
	return AIDOS_E_SHAPE;
}

static const rpc_method methods[] = {
	{ M_RESOLVE, &aidos__resolve_request__descriptor, h_resolve, NULL },
	{ M_KILL, &aidos__kill_request__descriptor, h_kill, NULL },
	{ M_MIGRATE, &aidos__migrate_request__descriptor, h_migrate, NULL },
	{ M_LIST, &aidos__list_nodes_request__descriptor, h_list, free_nothing },
	{ M_HEARTBEAT, &aidos__heartbeat_request__descriptor, h_wrong_type, NULL },
	{ M_DRAIN, &aidos__drain_request__descriptor, h_no_reply, NULL },
	{ M_STATUS, &aidos__status_request__descriptor, h_err_and_reply, NULL },
};
#define N_METHODS ((int)(sizeof methods / sizeof methods[0]))

/* ---- fixture: one server with 4 threads and one client ---- */

static struct ctx ctx;
static rpc_server *srv;
static rpc_client *cli;
static int port;
static char target[64];

static int setup(void **state)
{
	char err[256];

	rpc_init();
	if (rpc_server_start("127.0.0.1:0", methods, N_METHODS, &ctx, 4, &srv, &port, err, sizeof err)) {
		fprintf(stderr, "server: %s\n", err);
		return -1;
	}
	snprintf(target, sizeof target, "127.0.0.1:%d", port);
	return rpc_client_create(target, &cli);
}

static int teardown(void **state)
{
	rpc_client_destroy(cli);
	rpc_server_stop(srv);
	rpc_shutdown();
	return 0;
}

static int call_resolve(rpc_client *c, const char *agent, int deadline_ms, char *err, size_t errlen)
{
	Aidos__ResolveRequest q = AIDOS__RESOLVE_REQUEST__INIT;
	ProtobufCMessage *out = NULL;
	Aidos__ResolveReply *r;
	int rc;

	q.agent = (char *)agent;
	rc = rpc_call(c, M_RESOLVE, &q.base, &aidos__resolve_reply__descriptor, &out, deadline_ms, err,
		      errlen);
	if (rc) {
		assert_null(out);
		return rc;
	}
	r = (Aidos__ResolveReply *)out;
	assert_non_null(r->agent);
	assert_string_equal(r->agent->name, agent);
	assert_int_equal(r->agent->priority, 7);
	assert_non_null(r->node);
	assert_string_equal(r->node->name, "n1");
	protobuf_c_message_free_unpacked(out, NULL);
	return 0;
}

static int call_slow(rpc_client *c, int sleep, int deadline_ms, char *err, size_t errlen)
{
	Aidos__MigrateRequest q = AIDOS__MIGRATE_REQUEST__INIT;
	ProtobufCMessage *out = NULL;
	char ms[16];
	int rc;

	snprintf(ms, sizeof ms, "%d", sleep);
	q.agent = "slow";
	q.to_node = ms;
	rc = rpc_call(c, M_MIGRATE, &q.base, &aidos__migrate_reply__descriptor, &out, deadline_ms, err,
		      errlen);
	if (!rc) {
		assert_true(((Aidos__MigrateReply *)out)->ms == sleep);
		protobuf_c_message_free_unpacked(out, NULL);
	}
	return rc;
}

/* ---- tests ---- */

static void test_echo(void **state)
{
	char err[256];

	assert_int_equal(call_resolve(cli, "det", 2000, err, sizeof err), 0);
	assert_int_equal(call_resolve(cli, "", 2000, err, sizeof err), 0);
	assert_int_equal(call_resolve(cli, "an agent with a rather long name", 0, err, sizeof err), 0);
}

static void test_empty_static_reply(void **state)
{
	Aidos__ListNodesRequest q = AIDOS__LIST_NODES_REQUEST__INIT;
	ProtobufCMessage *out = NULL;
	char err[256];

	assert_int_equal(rpc_call(cli, M_LIST, &q.base, &aidos__list_nodes_reply__descriptor, &out, 2000,
				  err, sizeof err), 0);
	assert_non_null(out);
	assert_int_equal(((Aidos__ListNodesReply *)out)->n_nodes, 0);
	protobuf_c_message_free_unpacked(out, NULL);
}

static void test_handler_error(void **state)
{
	Aidos__KillRequest q = AIDOS__KILL_REQUEST__INIT;
	Aidos__StatusRequest sq = AIDOS__STATUS_REQUEST__INIT;
	ProtobufCMessage *out = (ProtobufCMessage *)&q;   /* must be reset to NULL */
	char err[256];

	q.agent = "ghost";
	assert_int_equal(rpc_call(cli, M_KILL, &q.base, &aidos__kill_reply__descriptor, &out, 2000, err,
				  sizeof err), AIDOS_E_NOTFOUND);
	assert_null(out);
	assert_string_equal(err, "NOT_FOUND: no agent 'ghost'");

	/* error + reply: reply dropped, code's name as message */
	assert_int_equal(rpc_call(cli, M_STATUS, &sq.base, &aidos__status_reply__descriptor, &out, 2000,
				  err, sizeof err), AIDOS_E_SHAPE);
	assert_non_null(strstr(err, "FAILED_PRECONDITION: "));
	assert_true(strlen(err) > strlen("FAILED_PRECONDITION: "));
	/* err may be NULL */
	assert_int_equal(rpc_call(cli, M_KILL, &q.base, &aidos__kill_reply__descriptor, &out, 2000, NULL, 0),
			 AIDOS_E_NOTFOUND);
}

static void test_bad_handlers_and_replies(void **state)
{
	Aidos__HeartbeatRequest hq = AIDOS__HEARTBEAT_REQUEST__INIT;
	Aidos__DrainRequest dq = AIDOS__DRAIN_REQUEST__INIT;
	ProtobufCMessage *out = NULL;
	char err[256];

	hq.node = "n1";
	assert_int_equal(rpc_call(cli, M_HEARTBEAT, &hq.base, &aidos__resolve_reply__descriptor, &out,
				  2000, err, sizeof err), AIDOS_E_INVALID);
	assert_null(out);
	assert_non_null(strstr(err, "malformed reply: not a valid aidos.ResolveReply"));

	assert_int_equal(rpc_call(cli, M_DRAIN, &dq.base, &aidos__drain_reply__descriptor, &out, 2000, err,
				  sizeof err), AIDOS_E_RUNTIME);
	assert_non_null(strstr(err, "INTERNAL: "));
	assert_non_null(strstr(err, "no reply"));
}

static void test_unknown_method_and_bad_args(void **state)
{
	Aidos__KillRequest q = AIDOS__KILL_REQUEST__INIT;
	ProtobufCMessage *out = NULL;
	char err[256];

	assert_int_equal(rpc_call(cli, "/aidos.Coordinator/NoSuch", &q.base, &aidos__kill_reply__descriptor,
				  &out, 2000, err, sizeof err), AIDOS_E_UNSUPPORTED);
	assert_string_equal(err, "UNIMPLEMENTED: unknown method /aidos.Coordinator/NoSuch");
	assert_int_equal(rpc_call(cli, "NoSlash", &q.base, &aidos__kill_reply__descriptor, &out, 2000,
				  err, sizeof err), AIDOS_E_INVALID);
	assert_int_equal(rpc_call(NULL, M_KILL, &q.base, &aidos__kill_reply__descriptor, &out, 2000,
				  err, sizeof err), AIDOS_E_INVALID);
	assert_int_equal(rpc_call(cli, M_KILL, NULL, &aidos__kill_reply__descriptor, &out, 2000,
				  err, sizeof err), AIDOS_E_INVALID);
	{
		rpc_client *c = (rpc_client *)&q;

		assert_int_equal(rpc_client_create("", &c), AIDOS_E_INVALID);
		assert_null(c);
		assert_int_equal(rpc_client_create(NULL, &c), AIDOS_E_INVALID);
	}
	/* the server is still fine */
	assert_int_equal(call_resolve(cli, "after", 2000, err, sizeof err), 0);
}

static void test_deadline(void **state)
{
	char err[256];
	double t0 = now_ms(), dt;

	assert_int_equal(call_slow(cli, 600, 100, err, sizeof err), -ETIMEDOUT);
	dt = now_ms() - t0;
	assert_non_null(strstr(err, "DEADLINE_EXCEEDED"));
	assert_true(dt >= 90 && dt < 500);
	/* a slow call within its deadline succeeds */
	assert_int_equal(call_slow(cli, 50, 3000, err, sizeof err), 0);
}

static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof a;
	int fd = socket(AF_INET, SOCK_STREAM, 0), p;

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
	p = ntohs(a.sin_port);
	close(fd);   /* nothing listens there now */
	return p;
}

static void test_not_running(void **state)
{
	rpc_client *c;
	char t[64], err[256];
	double t0, dt;

	snprintf(t, sizeof t, "127.0.0.1:%d", free_port());
	assert_int_equal(rpc_client_create(t, &c), 0);
	t0 = now_ms();
	assert_int_equal(call_resolve(c, "x", 3000, err, sizeof err), -ECONNREFUSED);
	dt = now_ms() - t0;
	assert_non_null(strstr(err, "UNAVAILABLE: "));
	assert_true(dt < 3000);
	print_message("not running: %s (%.1f ms)\n", err, dt);
	rpc_client_destroy(c);
}

/* A call made with the C core directly, so the request bytes can be anything.
 * send_msg = 0 sends no message at all. Returns the status; details in det. */
static grpc_status_code raw_call(const char *method, const void *bytes, size_t len, int send_msg,
				 char *det, size_t detlen)
{
	grpc_channel_credentials *creds = grpc_insecure_credentials_create();
	grpc_channel *ch = grpc_channel_create(target, creds, NULL);
	grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
	grpc_slice m = grpc_slice_from_copied_string(method), d = grpc_empty_slice();
	grpc_slice payload = grpc_slice_from_copied_buffer(bytes, len);
	grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&payload, 1), *recv = NULL;
	gpr_timespec dl = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(3000, GPR_TIMESPAN));
	grpc_call *call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, m, NULL, dl, NULL);
	grpc_status_code st = GRPC_STATUS_OK;
	grpc_metadata_array mi, mt;
	grpc_op ops[6], *op = ops;
	grpc_event ev;

	grpc_channel_credentials_release(creds);
	grpc_metadata_array_init(&mi);
	grpc_metadata_array_init(&mt);
	memset(ops, 0, sizeof ops);
	(op++)->op = GRPC_OP_SEND_INITIAL_METADATA;
	if (send_msg) {
		op->op = GRPC_OP_SEND_MESSAGE;
		(op++)->data.send_message.send_message = bb;
	}
	(op++)->op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	op->op = GRPC_OP_RECV_INITIAL_METADATA;
	(op++)->data.recv_initial_metadata.recv_initial_metadata = &mi;
	op->op = GRPC_OP_RECV_MESSAGE;
	(op++)->data.recv_message.recv_message = &recv;
	op->op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	op->data.recv_status_on_client.trailing_metadata = &mt;
	op->data.recv_status_on_client.status = &st;
	(op++)->data.recv_status_on_client.status_details = &d;
	assert_int_equal(grpc_call_start_batch(call, ops, (size_t)(op - ops), call, NULL), GRPC_CALL_OK);
	ev = grpc_completion_queue_pluck(cq, call, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	assert_int_equal(ev.type, GRPC_OP_COMPLETE);
	assert_true(st == GRPC_STATUS_OK || !recv);
	if (recv)
		grpc_byte_buffer_destroy(recv);
	snprintf(det, detlen, "%.*s", (int)GRPC_SLICE_LENGTH(d), (const char *)GRPC_SLICE_START_PTR(d));
	grpc_metadata_array_destroy(&mi);
	grpc_metadata_array_destroy(&mt);
	grpc_slice_unref(d);
	grpc_slice_unref(m);
	grpc_slice_unref(payload);
	grpc_byte_buffer_destroy(bb);
	grpc_call_unref(call);
	grpc_completion_queue_shutdown(cq);
	grpc_completion_queue_destroy(cq);
	grpc_channel_destroy(ch);
	return st;
}

static void test_garbage_request(void **state)
{
	static const struct { const char *b; size_t n; } bad[] = {
		{ "\x0a\xff\xff\xff\xff\x0f", 6 },   /* string longer than the message */
		{ "\x0a\x05" "ab", 4 },              /* truncated string */
		{ "\x08\x80", 2 },                   /* truncated varint */
		{ "\x0f", 1 },                       /* wire type 7 */
		{ "\x0a\x02" "ab\x0b", 5 },          /* start-group, never ended */
		{ "\x00\x00", 2 },                   /* field number 0 */
	};
	char det[256], err[256];
	size_t i;
	unsigned seed = 12345;

	for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		assert_int_equal(raw_call(M_RESOLVE, bad[i].b, bad[i].n, 1, det, sizeof det),
				 GRPC_STATUS_INVALID_ARGUMENT);
		assert_non_null(strstr(det, "malformed aidos.ResolveRequest"));
		assert_int_equal(call_resolve(cli, "still here", 2000, err, sizeof err), 0);
	}
	assert_int_equal(raw_call(M_RESOLVE, "", 0, 0, det, sizeof det), GRPC_STATUS_INVALID_ARGUMENT);
	assert_non_null(strstr(det, "no request message"));
	/* Random bytes at the fast methods: OK or INVALID_ARGUMENT, never a crash. */
	for (i = 0; i < 300; i++) {
		static const int pick[] = { 0, 1, 3, 4, 5, 6 };   /* not the slow one */
		unsigned char buf[64];
		size_t n = (size_t)(rand_r(&seed) % (int)sizeof buf), k;
		grpc_status_code st;

		for (k = 0; k < n; k++)
			buf[k] = (unsigned char)rand_r(&seed);
		st = raw_call(methods[pick[i % 6]].path, buf, n, 1, det, sizeof det);
		assert_true(st != GRPC_STATUS_UNAVAILABLE && st != GRPC_STATUS_CANCELLED);
	}
	assert_int_equal(call_resolve(cli, "after garbage", 2000, err, sizeof err), 0);
}

#define N_THREADS 4
#define N_CALLS 250

static void *client_thread(void *arg)
{
	int id = (int)(intptr_t)arg, i, bad = 0;
	char name[32], err[256];

	for (i = 0; i < N_CALLS; i++) {
		snprintf(name, sizeof name, "t%d-%d", id, i);
		bad += call_resolve(cli, name, 5000, err, sizeof err) != 0;
	}
	return (void *)(intptr_t)bad;
}

static void test_concurrent(void **state)
{
	pthread_t t[N_THREADS];
	int i, before = atomic_load(&ctx.calls);
	void *bad;

	for (i = 0; i < N_THREADS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, client_thread, (void *)(intptr_t)i), 0);
	for (i = 0; i < N_THREADS; i++) {
		assert_int_equal(pthread_join(t[i], &bad), 0);
		assert_int_equal((intptr_t)bad, 0);
	}
	assert_int_equal(atomic_load(&ctx.calls) - before, N_THREADS * N_CALLS);
}

static void *slow_thread(void *arg)
{
	int *ms = arg;
	char err[256];

	return (void *)(intptr_t)call_slow(cli, ms[0], ms[1], err, sizeof err);
}

/* Three handlers blocked for a second do not stop other calls (4 threads). */
static void test_blocked_handlers_do_not_stall(void **state)
{
	static int ms[2] = { 1000, 5000 };
	pthread_t t[3];
	char err[256];
	double t0;
	void *rc;
	int i;

	for (i = 0; i < 3; i++)
		assert_int_equal(pthread_create(&t[i], NULL, slow_thread, ms), 0);
	sleep_ms(100);
	t0 = now_ms();
	for (i = 0; i < 20; i++)
		assert_int_equal(call_resolve(cli, "quick", 2000, err, sizeof err), 0);
	assert_true(now_ms() - t0 < 500);
	for (i = 0; i < 3; i++) {
		assert_int_equal(pthread_join(t[i], &rc), 0);
		assert_int_equal((intptr_t)rc, 0);
	}
}

struct stop_arg {
	rpc_client *c;
	int sleep, rc;
	char err[256];
};

static void *stop_client(void *arg)
{
	struct stop_arg *a = arg;

	a->rc = call_slow(a->c, a->sleep, 5000, a->err, sizeof a->err);
	return NULL;
}

static void stop_with_call_in_flight(int sleep, int grace_ms, int want_ok)
{
	struct ctx c2 = { 0 };
	struct stop_arg a = { .sleep = sleep };
	rpc_server *s;
	pthread_t t;
	char t2[64], err[256];
	int p;
	double t0, dt;

	assert_int_equal(rpc_server_start("127.0.0.1:0", methods, N_METHODS, &c2, 2, &s, &p, err,
					  sizeof err), 0);
	snprintf(t2, sizeof t2, "127.0.0.1:%d", p);
	assert_int_equal(rpc_client_create(t2, &a.c), 0);
	assert_int_equal(pthread_create(&t, NULL, stop_client, &a), 0);
	sleep_ms(100);   /* the call is in its handler */
	t0 = now_ms();
	rpc_server_stop_grace(s, grace_ms);
	dt = now_ms() - t0;
	assert_int_equal(pthread_join(t, NULL), 0);
	/* stop returns only once the handler returned */
	assert_int_equal(atomic_load(&c2.slow_done), 1);
	assert_true(dt >= sleep - 100 - 20);
	if (want_ok) {
		assert_int_equal(a.rc, 0);
	} else {
		assert_true(a.rc < 0);
		print_message("cancelled by stop: %s\n", a.err);
	}
	/* the server is gone: fail fast */
	assert_true(call_slow(a.c, 1, 1000, err, sizeof err) < 0);
	rpc_client_destroy(a.c);
}

static void test_stop_in_flight(void **state)
{
	stop_with_call_in_flight(400, 5000, 1);   /* finished within the grace period */
	stop_with_call_in_flight(600, 50, 0);     /* cancelled after 50 ms */
}

static void test_addresses(void **state)
{
	char path[128], addr[160], err[256];
	rpc_server *s, *s2;
	rpc_client *c;
	int p, p2;

	/* unix socket */
	snprintf(path, sizeof path, "%s/aidos-test-rpc-%d.sock", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
		 (int)getpid());
	snprintf(addr, sizeof addr, "unix:%s", path);
	unlink(path);
	assert_int_equal(rpc_server_start(addr, methods, N_METHODS, &ctx, 2, &s, &p, err, sizeof err), 0);
	assert_int_equal(p, 0);
	assert_int_equal(rpc_client_create(addr, &c), 0);
	assert_int_equal(call_resolve(c, "via unix", 2000, err, sizeof err), 0);
	rpc_client_destroy(c);
	/* a live socket path is not stolen */
	assert_int_equal(rpc_server_start(addr, methods, N_METHODS, &ctx, 2, &s2, &p2, err, sizeof err),
			 -EADDRINUSE);
	assert_null(s2);
	rpc_server_stop(s);
	unlink(path);

	/* 0.0.0.0:PORT, and the same port again */
	assert_int_equal(rpc_server_start("0.0.0.0:0", methods, N_METHODS, &ctx, 1, &s, &p, err, sizeof err), 0);
	assert_true(p > 0);
	snprintf(addr, sizeof addr, "127.0.0.1:%d", p);
	assert_int_equal(rpc_client_create(addr, &c), 0);
	assert_int_equal(call_resolve(c, "via any", 2000, err, sizeof err), 0);
	rpc_client_destroy(c);
	snprintf(addr, sizeof addr, "0.0.0.0:%d", p);
	assert_int_equal(rpc_server_start(addr, methods, N_METHODS, &ctx, 1, &s2, &p2, err, sizeof err),
			 -EADDRINUSE);
	print_message("port in use: %s\n", err);
	snprintf(addr, sizeof addr, "127.0.0.1:%d", p);
	assert_int_equal(rpc_server_start(addr, methods, N_METHODS, &ctx, 1, &s2, &p2, err, sizeof err),
			 -EADDRINUSE);
	rpc_server_stop(s);

	/* bad addresses and method tables */
	assert_int_equal(rpc_server_start("127.0.0.1:99999", methods, N_METHODS, &ctx, 1, &s, &p, err,
					  sizeof err), AIDOS_E_INVALID);
	assert_int_equal(rpc_server_start("127.0.0.1", methods, N_METHODS, &ctx, 1, &s, &p, err,
					  sizeof err), AIDOS_E_INVALID);
	assert_int_equal(rpc_server_start("[::1]:x", methods, N_METHODS, &ctx, 1, &s, &p, err,
					  sizeof err), AIDOS_E_INVALID);
	assert_int_equal(rpc_server_start("", methods, N_METHODS, &ctx, 1, &s, &p, err, sizeof err),
			 AIDOS_E_INVALID);
	{
		rpc_method twice[2] = { methods[0], methods[0] };

		assert_int_equal(rpc_server_start("127.0.0.1:0", twice, 2, &ctx, 1, &s, &p, err, sizeof err),
				 AIDOS_E_INVALID);
		twice[1].path = "no-slash";
		assert_int_equal(rpc_server_start("127.0.0.1:0", twice, 2, &ctx, 1, &s, &p, err, sizeof err),
				 AIDOS_E_INVALID);
	}
	/* no methods at all: everything UNIMPLEMENTED */
	assert_int_equal(rpc_server_start("127.0.0.1:0", NULL, 0, NULL, 0, &s, &p, err, sizeof err), 0);
	snprintf(addr, sizeof addr, "127.0.0.1:%d", p);
	assert_int_equal(rpc_client_create(addr, &c), 0);
	assert_int_equal(call_resolve(c, "x", 2000, err, sizeof err), AIDOS_E_UNSUPPORTED);
	rpc_client_destroy(c);
	rpc_server_stop(s);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Not a timed test: prints the median round trip of an empty call. */
static void test_latency(void **state)
{
	Aidos__ListNodesRequest q = AIDOS__LIST_NODES_REQUEST__INIT;
	static double t[1000];
	ProtobufCMessage *out;
	char err[256];
	int i;

	for (i = -100; i < 1000; i++) {
		double t0 = now_ms();

		assert_int_equal(rpc_call(cli, M_LIST, &q.base, &aidos__list_nodes_reply__descriptor, &out,
					  2000, err, sizeof err), 0);
		if (i >= 0)
			t[i] = now_ms() - t0;
		protobuf_c_message_free_unpacked(out, NULL);
	}
	qsort(t, 1000, sizeof t[0], cmp_double);
	print_message("rpc loopback empty unary call: median %.1f us, p90 %.1f us, p99 %.1f us (n=1000)\n",
		      t[500] * 1e3, t[900] * 1e3, t[990] * 1e3);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_echo),
		cmocka_unit_test(test_empty_static_reply),
		cmocka_unit_test(test_handler_error),
		cmocka_unit_test(test_bad_handlers_and_replies),
		cmocka_unit_test(test_unknown_method_and_bad_args),
		cmocka_unit_test(test_deadline),
		cmocka_unit_test(test_not_running),
		cmocka_unit_test(test_garbage_request),
		cmocka_unit_test(test_concurrent),
		cmocka_unit_test(test_blocked_handlers_do_not_stall),
		cmocka_unit_test(test_stop_in_flight),
		cmocka_unit_test(test_addresses),
		cmocka_unit_test(test_latency),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
