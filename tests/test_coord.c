/*
 * tests/test_coord.c - the coordinator's logic in process (coordinator/
 * coord.c): registration and heartbeats, lease expiry, re-placement of a
 * dead node's agents (stateful ones from their last checkpoint), placement
 * failures, migration (stateless and stateful, and its failure path),
 * drain, kill, busy agents, persistence across a restart, malformed and
 * unknown requests, allocation failures, and one pass through gRPC.
 *
 * Nodes are fakes behind the coordinator's node-call hook (coord_opts.
 * node_call): each keeps the agents it was told to host and counts the
 * calls it got, and can be made unreachable, slow or failing.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "coordinator/coord.h"
#include "node/wire.h"
#include "pools/pools.h"
#include "proto/aidos.pb-c.h"
#include "proto/rpc.h"

#define GiB (1ull << 30)

/* ---- fake nodes ---- */

typedef struct fake_agent {
	char name[64];
	int frozen;
} fake_agent;

typedef struct fake_node {
	char name[32], addr[64];
	int down, fail_spawn, fail_import, spawn_delay_ms;
	fake_agent agents[32];
	int n;
	int n_spawn, n_kill, n_export, n_unfreeze, n_import, n_release;
	int last_spawn_ctx;              /* the last Spawn carried a context */
	uint64_t last_spawn_ctx_version;
} fake_node;

#define MAX_FAKES 4
static fake_node fakes[MAX_FAKES];
static pthread_mutex_t fmu = PTHREAD_MUTEX_INITIALIZER;
static char tmpdir[256];

static void *reply(void *borrowed)
{
	ProtobufCMessage *m = borrowed;
	size_t n = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = malloc(n + 1);
	protobuf_c_message_pack(m, buf);
	ProtobufCMessage *r = protobuf_c_message_unpack(m->descriptor, NULL, n, buf);
	free(buf);
	return r;
}

static fake_agent *fa_find(fake_node *f, const char *name)
{
	for (int i = 0; i < f->n; i++)
		if (!strcmp(f->agents[i].name, name))
			return &f->agents[i];
	return NULL;
}

static void fa_add(fake_node *f, const char *name)
{
	if (!fa_find(f, name) && f->n < 32) {
		snprintf(f->agents[f->n].name, sizeof f->agents[f->n].name, "%s", name);
		f->agents[f->n++].frozen = 0;
	}
}

static int fa_del(fake_node *f, const char *name)
{
	fake_agent *a = fa_find(f, name);
	if (!a)
		return 0;
	*a = f->agents[--f->n];
	return 1;
}

static int fake_call(void *ctx, const char *addr, const char *method, const ProtobufCMessage *req,
		     const ProtobufCMessageDescriptor *rd, ProtobufCMessage **resp, int deadline_ms, char *err,
		     size_t errlen)
{
	fake_node *f = NULL;
	int rc = 0, delay = 0;
	(void)ctx;
	assert_true(deadline_ms > 0);
	pthread_mutex_lock(&fmu);
	for (int i = 0; i < MAX_FAKES; i++)
		if (fakes[i].addr[0] && !strcmp(fakes[i].addr, addr))
			f = &fakes[i];
	if (!f || f->down) {
		pthread_mutex_unlock(&fmu);
		snprintf(err, errlen, "UNAVAILABLE: %s is down", addr);
		return -ECONNREFUSED;
	}
	if (!strcmp(method, "/aidos.Node/Spawn")) {
		const Aidos__SpawnRequest *q = (const void *)req;
		assert_ptr_equal(rd, &aidos__spawn_reply__descriptor);
		assert_string_equal(q->agent->node, f->name);
		f->n_spawn++;
		f->last_spawn_ctx = q->context != NULL;
		f->last_spawn_ctx_version = q->context ? q->context->version : 0;
		delay = f->spawn_delay_ms;
		if (f->fail_spawn) {
			rc = AIDOS_E_RUNTIME;
			snprintf(err, errlen, "UNKNOWN: model %s failed to load", q->agent->model_path);
		} else {
			Aidos__SpawnReply r = AIDOS__SPAWN_REPLY__INIT;
			Aidos__AgentInfo ai = *q->agent;
			Aidos__StatePair sp = AIDOS__STATE_PAIR__INIT, *sps[1] = { &sp };
			ai.state_now = AIDOS__AGENT_STATE__AGENT_IDLE;
			if (ai.stateful && !ai.n_state) {   /* the node found the pairs itself */
				sp.input = "h";
				sp.output = "hn";
				ai.n_state = 1;
				ai.state = sps;
			}
			r.agent = &ai;
			fa_add(f, q->agent->name);
			*resp = reply(&r);
		}
	} else if (!strcmp(method, "/aidos.Node/Kill")) {
		const Aidos__NodeKillRequest *q = (const void *)req;
		Aidos__NodeKillReply r = AIDOS__NODE_KILL_REPLY__INIT;
		f->n_kill++;
		if (fa_del(f, q->agent)) {
			*resp = reply(&r);
		} else {
			rc = AIDOS_E_NOTFOUND;
			snprintf(err, errlen, "NOT_FOUND: no agent '%s' here", q->agent);
		}
	} else if (!strcmp(method, "/aidos.Node/ExportContext")) {
		const Aidos__ExportContextRequest *q = (const void *)req;
		fake_agent *a = fa_find(f, q->agent);
		if (!a) {
			rc = AIDOS_E_NOTFOUND;
			snprintf(err, errlen, "NOT_FOUND: no agent '%s' here", q->agent);
		} else {
			Aidos__ExportContextReply r = AIDOS__EXPORT_CONTEXT_REPLY__INIT;
			uint8_t k[4] = { 1, 2, 3, 4 };
			a->frozen = q->freeze;
			if (q->freeze)
				f->n_export++;
			else
				f->n_unfreeze++;
			r.ucx_address.data = k;
			r.ucx_address.len = 4;
			r.rkey.data = k;
			r.rkey.len = 4;
			r.remote_addr = 0x1000;
			r.length = 4096;
			r.version = 42;
			*resp = reply(&r);
		}
	} else if (!strcmp(method, "/aidos.Node/ImportContext")) {
		const Aidos__ImportContextRequest *q = (const void *)req;
		assert_non_null(q->from);
		assert_int_equal(q->from->length, 4096);
		f->n_import++;
		if (f->fail_import) {
			rc = AIDOS_E_INVALID;
			snprintf(err, errlen, "INVALID_ARGUMENT: checksum mismatch pulling '%s'", q->agent->name);
		} else {
			Aidos__ImportContextReply r = AIDOS__IMPORT_CONTEXT_REPLY__INIT;
			r.agent = q->agent;
			r.pull_ms = 0.25;
			fa_add(f, q->agent->name);
			*resp = reply(&r);
		}
	} else if (!strcmp(method, "/aidos.Node/ReleaseContext")) {
		const Aidos__ReleaseContextRequest *q = (const void *)req;
		Aidos__ReleaseContextReply r = AIDOS__RELEASE_CONTEXT_REPLY__INIT;
		f->n_release++;
		fa_del(f, q->agent);
		*resp = reply(&r);
	} else {
		rc = AIDOS_E_UNSUPPORTED;
		snprintf(err, errlen, "UNIMPLEMENTED: %s", method);
	}
	pthread_mutex_unlock(&fmu);
	if (delay)
		usleep((useconds_t)delay * 1000);
	return rc;
}

static fake_node *fake(int i, const char *name)
{
	pthread_mutex_lock(&fmu);
	memset(&fakes[i], 0, sizeof fakes[i]);
	snprintf(fakes[i].name, sizeof fakes[i].name, "%s", name);
	snprintf(fakes[i].addr, sizeof fakes[i].addr, "fake:%s", name);
	pthread_mutex_unlock(&fmu);
	return &fakes[i];
}

static int fake_hosts(fake_node *f, const char *agent)
{
	pthread_mutex_lock(&fmu);
	int r = fa_find(f, agent) != NULL;
	pthread_mutex_unlock(&fmu);
	return r;
}

/* ---- fixtures and helpers ---- */

static int setup(void **state)
{
	const char *base = getenv("TMPDIR");
	snprintf(tmpdir, sizeof tmpdir, "%s/aidos-test-coord-XXXXXX", base && *base ? base : "/tmp");
	if (!mkdtemp(tmpdir))
		return -1;
	memset(fakes, 0, sizeof fakes);
	pool_fault_inject(0, 0);   /* in case a failed test left it on */
	return 0;
}

static int teardown(void **state)
{
	char cmd[320];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static coord *make(uint64_t lease_ms, uint64_t reaper_ms, int start)
{
	coord_opts o = { .data_dir = tmpdir, .heartbeat_ms = lease_ms / 4, .lease_ms = lease_ms,
			 .reaper_ms = reaper_ms, .spawn_deadline_ms = 2000, .call_deadline_ms = 1000,
			 .quiet = 1, .node_call = fake_call };
	coord *c = NULL;
	char err[256] = "";
	int rc = coord_create(&o, &c, err, sizeof err);
	if (rc)
		print_error("coord_create: %s\n", err);
	assert_int_equal(rc, 0);
	if (start)
		assert_int_equal(coord_start(c), 0);
	return c;
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int call(coord *c, const char *m, void *req, void *resp_out, char *err, size_t errlen)
{
	ProtobufCMessage *r = NULL;
	char path[128];
	snprintf(path, sizeof path, "/aidos.Coordinator/%s", m);
	int rc = coord_call(c, path, req, &r, err, errlen);
	if (resp_out)
		*(ProtobufCMessage **)resp_out = r;
	else
		coord_reply_free(r);
	return rc;
}

static void reg(coord *c, const char *name, uint64_t mem_free)
{
	Aidos__NodeInfo ni = AIDOS__NODE_INFO__INIT;
	Aidos__Device dev = AIDOS__DEVICE__INIT, *devs[1] = { &dev };
	Aidos__RegisterNodeRequest req = AIDOS__REGISTER_NODE_REQUEST__INIT;
	Aidos__RegisterNodeReply *r = NULL;
	char addr[64], err[256] = "";
	uint8_t ucx[8] = { 9, 9, 9 };
	snprintf(addr, sizeof addr, "fake:%s", name);
	ni.name = (char *)name;
	ni.rpc_addr = addr;
	ni.transport = "ucx:tcp";
	ni.transport_reason = "UCX_TLS=tcp set by --transport tcp";
	ni.ucx_address.data = ucx;
	ni.ucx_address.len = sizeof ucx;
	dev.kind = "cpu";
	dev.name = "test cpu";
	dev.cores = 4;
	ni.n_devices = 1;
	ni.devices = devs;
	ni.mem_total = 2 * mem_free;
	ni.mem_free = mem_free;
	req.node = &ni;
	int rc = call(c, "RegisterNode", &req, &r, err, sizeof err);
	if (rc)
		print_error("register %s: %s\n", name, err);
	assert_int_equal(rc, 0);
	assert_true(r->lease_ms > r->heartbeat_ms);
	coord_reply_free(&r->base);
}

static int heartbeat(coord *c, const char *node, uint64_t mem_free, const Aidos__AgentContext *ckpt)
{
	Aidos__HeartbeatRequest req = AIDOS__HEARTBEAT_REQUEST__INIT;
	Aidos__HeartbeatReply *r = NULL;
	Aidos__AgentContext *cks[1] = { (Aidos__AgentContext *)ckpt };
	char err[256] = "";
	req.node = (char *)node;
	req.mem_free = mem_free;
	if (ckpt) {
		req.n_checkpoints = 1;
		req.checkpoints = cks;
	}
	int rc = call(c, "Heartbeat", &req, &r, err, sizeof err);
	if (rc)
		print_error("heartbeat %s: %s\n", node, err);
	assert_int_equal(rc, 0);
	int known = r->known;
	coord_reply_free(&r->base);
	return known;
}

static int place(coord *c, const char *name, const char *pin, int stateful, uint64_t mem, Aidos__PlaceReply **out,
		 char *err, size_t errlen)
{
	Aidos__PlaceRequest req = AIDOS__PLACE_REQUEST__INIT;
	Aidos__AgentInfo ai = AIDOS__AGENT_INFO__INIT;
	Aidos__StatePair sp = AIDOS__STATE_PAIR__INIT, *sps[1] = { &sp };
	ai.name = (char *)name;
	ai.model_path = "/models/silero_vad.onnx";
	ai.priority = 1;
	ai.pinned_node = (char *)(pin ? pin : "");
	ai.mem_bytes = mem;
	if (stateful) {
		ai.stateful = 1;
		sp.input = "state";
		sp.output = "stateN";
		ai.n_state = 1;
		ai.state = sps;
	}
	req.agent = &ai;
	Aidos__PlaceReply *r = NULL;
	int rc = call(c, "Place", &req, &r, err, errlen);
	if (out)
		*out = r;
	else
		coord_reply_free(r ? &r->base : NULL);
	return rc;
}

static void place_ok(coord *c, const char *name, int stateful, const char *expect_node)
{
	Aidos__PlaceReply *r = NULL;
	char err[512] = "";
	int rc = place(c, name, NULL, stateful, 64 << 20, &r, err, sizeof err);
	if (rc)
		print_error("place %s: %s\n", name, err);
	assert_int_equal(rc, 0);
	assert_string_equal(r->agent->node, expect_node);
	assert_non_null(strstr(r->reason, expect_node));
	coord_reply_free(&r->base);
}

/* The agent as the coordinator lists it (caller frees the reply). */
static const Aidos__AgentInfo *agent_of(coord *c, const char *name, Aidos__ListAgentsReply **hold)
{
	Aidos__ListAgentsRequest req = AIDOS__LIST_AGENTS_REQUEST__INIT;
	char err[256];
	assert_int_equal(call(c, "ListAgents", &req, hold, err, sizeof err), 0);
	for (size_t i = 0; i < (*hold)->n_agents; i++)
		if (!strcmp((*hold)->agents[i]->name, name))
			return (*hold)->agents[i];
	return NULL;
}

static char agent_node_buf[64];
static const char *agent_node(coord *c, const char *name)
{
	Aidos__ListAgentsReply *r = NULL;
	const Aidos__AgentInfo *a = agent_of(c, name, &r);
	snprintf(agent_node_buf, sizeof agent_node_buf, "%s", a ? a->node : "(none)");
	coord_reply_free(&r->base);
	return agent_node_buf;
}

static int node_state(coord *c, const char *name)
{
	Aidos__ListNodesRequest req = AIDOS__LIST_NODES_REQUEST__INIT;
	Aidos__ListNodesReply *r = NULL;
	char err[256];
	int st = -1;
	assert_int_equal(call(c, "ListNodes", &req, &r, err, sizeof err), 0);
	for (size_t i = 0; i < r->n_nodes; i++)
		if (!strcmp(r->nodes[i]->name, name))
			st = r->nodes[i]->state;
	coord_reply_free(&r->base);
	return st;
}

/* A valid checkpoint of one float tensor [2, 2] (version v). */
typedef struct ckpt_buf {
	Aidos__AgentContext ctx;
	Aidos__Tensor t, *tp[1];
	int64_t dims[2];
	float data[4];
} ckpt_buf;

static void make_ckpt(ckpt_buf *b, const char *agent, uint64_t v)
{
	aidos__agent_context__init(&b->ctx);
	aidos__tensor__init(&b->t);
	b->dims[0] = b->dims[1] = 2;
	for (int i = 0; i < 4; i++)
		b->data[i] = (float)v + 0.5f * (float)i;
	b->t.name = "state";
	b->t.dtype = AIDOS_DT_FLOAT;
	b->t.n_dims = 2;
	b->t.dims = b->dims;
	b->t.data.data = (uint8_t *)b->data;
	b->t.data.len = sizeof b->data;
	b->tp[0] = &b->t;
	b->ctx.agent = (char *)agent;
	b->ctx.version = v;
	b->ctx.n_tensors = 1;
	b->ctx.tensors = b->tp;
	b->ctx.checksum = aidos_wire_context_checksum(&b->ctx);
}

/* ---- tests ---- */

static void test_register_heartbeat(void **state)
{
	coord *c = make(1000, 50, 0);
	fake(0, "n1");
	reg(c, "n1", 8 * GiB);
	assert_int_equal(node_state(c, "n1"), AIDOS__NODE_STATE__NODE_READY);
	assert_int_equal(heartbeat(c, "n1", 7 * GiB, NULL), 1);
	assert_int_equal(heartbeat(c, "ghost", GiB, NULL), 0);   /* unknown: register again */

	Aidos__ListNodesRequest req = AIDOS__LIST_NODES_REQUEST__INIT;
	Aidos__ListNodesReply *r = NULL;
	char err[256];
	assert_int_equal(call(c, "ListNodes", &req, &r, err, sizeof err), 0);
	assert_int_equal(r->n_nodes, 1);
	assert_string_equal(r->nodes[0]->transport, "ucx:tcp");
	assert_int_equal(r->nodes[0]->mem_free, 7 * GiB);
	assert_true(r->nodes[0]->last_heartbeat_ms > 0);
	assert_int_equal(r->nodes[0]->n_devices, 1);
	coord_reply_free(&r->base);

	/* registering again replaces what the coordinator knows */
	reg(c, "n1", 3 * GiB);
	assert_int_equal(node_state(c, "n1"), AIDOS__NODE_STATE__NODE_READY);
	coord_destroy(c);
}

static void test_lease_expiry(void **state)
{
	const uint64_t lease = 200, reaper = 10;
	coord *c = make(lease, reaper, 1);
	fake(0, "n1");
	fake(1, "n2");
	reg(c, "n1", GiB);
	reg(c, "n2", GiB);
	double t0 = now_ms(), dead_at = 0;
	reg(c, "n1", GiB);   /* again: its last word is now, after t0 */
	/* n2 keeps heartbeating, n1 falls silent */
	while (now_ms() - t0 < 2000) {
		heartbeat(c, "n2", GiB, NULL);
		if (node_state(c, "n1") == AIDOS__NODE_STATE__NODE_DEAD) {
			dead_at = now_ms() - t0;
			break;
		}
		usleep(5000);
	}
	print_message("    n1 declared dead %.0f ms after its last word (lease %llu ms, reaper %llu ms)\n", dead_at,
		      (unsigned long long)lease, (unsigned long long)reaper);
	assert_true(dead_at >= (double)lease - 1.0);   /* the coordinator counts whole ms */
	assert_true(dead_at <= (double)(lease + reaper) + 150.0);   /* + scheduling slack (sanitizers) */
	assert_int_equal(node_state(c, "n2"), AIDOS__NODE_STATE__NODE_READY);
	/* a dead node's heartbeat is answered known=false: it must register */
	assert_int_equal(heartbeat(c, "n1", GiB, NULL), 0);
	reg(c, "n1", GiB);
	assert_int_equal(node_state(c, "n1"), AIDOS__NODE_STATE__NODE_READY);
	coord_destroy(c);
}

typedef struct hb_thread {
	coord *c;
	const char *node;
	_Atomic int stop;
} hb_thread;

static void *hb_main(void *arg)
{
	hb_thread *h = arg;
	while (!h->stop) {
		heartbeat(h->c, h->node, 4 * GiB, NULL);
		usleep(20000);
	}
	return NULL;
}

static void test_replace_dead_agents(void **state)
{
	const uint64_t lease = 200;
	coord *c = make(lease, 10, 1);
	fake_node *n1 = fake(0, "n1"), *n2 = fake(1, "n2");
	ckpt_buf ck;
	reg(c, "n1", 4 * GiB);
	/* n1 stays alive while the agents are placed, however slow the
	 * machine (a 200 ms lease is short on a loaded 2-core box) */
	hb_thread h1 = { c, "n1", 0 };
	pthread_t th1;
	assert_int_equal(pthread_create(&th1, NULL, hb_main, &h1), 0);
	place_ok(c, "vad", 1, "n1");
	place_ok(c, "det", 0, "n1");
	h1.stop = 1;
	pthread_join(th1, NULL);
	reg(c, "n2", 4 * GiB);
	hb_thread h = { c, "n2", 0 };
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, hb_main, &h), 0);

	/* n1 reports a checkpoint of the stateful agent, then dies */
	make_ckpt(&ck, "vad", 7);
	assert_int_equal(heartbeat(c, "n1", 4 * GiB, &ck.ctx), 1);
	/* a corrupted checkpoint (bad checksum) is ignored, not stored */
	make_ckpt(&ck, "vad", 9);
	ck.ctx.checksum ^= 1;
	assert_int_equal(heartbeat(c, "n1", 4 * GiB, &ck.ctx), 1);
	pthread_mutex_lock(&fmu);
	n1->down = 1;
	pthread_mutex_unlock(&fmu);
	double t0 = now_ms(), both = 0;
	while (now_ms() - t0 < 3000) {
		if (!strcmp(agent_node(c, "vad"), "n2") && !strcmp(agent_node(c, "det"), "n2")) {
			both = now_ms() - t0;
			break;
		}
		usleep(5000);
	}
	print_message("    both agents answering on n2 %.0f ms after n1's last heartbeat\n", both);
	assert_true(both > 0);
	assert_true(both < (double)lease + 1000.0);
	assert_true(fake_hosts(n2, "vad") && fake_hosts(n2, "det"));
	pthread_mutex_lock(&fmu);
	assert_int_equal(n2->n_spawn, 2);
	pthread_mutex_unlock(&fmu);

	Aidos__ListAgentsReply *r = NULL;
	const Aidos__AgentInfo *a = agent_of(c, "vad", &r);
	assert_non_null(a);
	assert_int_equal(a->context_version, 7);   /* resumed from the checkpoint, not the bad one */
	assert_string_equal(a->context_node, "n2");
	coord_reply_free(&r->base);

	h.stop = 1;
	pthread_join(th, NULL);
	coord_destroy(c);
}

/* An agent placed away from a dead node that was the only one waits; when
 * that node registers again it is a candidate again and the agent returns. */
static void test_dead_node_returns(void **state)
{
	const uint64_t lease = 200;
	coord *c = make(lease, 10, 1);
	fake_node *n1 = fake(0, "n1");
	reg(c, "n1", 4 * GiB);
	place_ok(c, "det", 0, "n1");
	pthread_mutex_lock(&fmu);
	n1->down = 1;
	pthread_mutex_unlock(&fmu);
	double t0 = now_ms();
	while (now_ms() - t0 < 3000 && node_state(c, "n1") != AIDOS__NODE_STATE__NODE_DEAD)
		usleep(5000);
	assert_int_equal(node_state(c, "n1"), AIDOS__NODE_STATE__NODE_DEAD);
	assert_string_equal(agent_node(c, "det"), "");   /* pending: no other node */
	pthread_mutex_lock(&fmu);
	n1->down = 0;
	pthread_mutex_unlock(&fmu);
	reg(c, "n1", 4 * GiB);
	hb_thread h = { c, "n1", 0 };   /* keep it alive this time */
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, hb_main, &h), 0);
	t0 = now_ms();
	while (now_ms() - t0 < 3000 && strcmp(agent_node(c, "det"), "n1"))
		usleep(5000);
	assert_string_equal(agent_node(c, "det"), "n1");
	h.stop = 1;
	pthread_join(th, NULL);
	coord_destroy(c);
}

static void test_replace_checkpoint_sent(void **state)
{
	/* Re-placement of a stateful agent hands its checkpoint to Spawn. */
	coord *c = make(200, 10, 1);
	fake_node *n1 = fake(0, "n1"), *n2 = fake(1, "n2");
	ckpt_buf ck;
	reg(c, "n1", 4 * GiB);
	place_ok(c, "vad", 1, "n1");
	reg(c, "n2", 4 * GiB);
	make_ckpt(&ck, "vad", 12);
	heartbeat(c, "n1", 4 * GiB, &ck.ctx);
	hb_thread h = { c, "n2", 0 };
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, hb_main, &h), 0);
	double t0 = now_ms();
	while (strcmp(agent_node(c, "vad"), "n2") && now_ms() - t0 < 3000)
		usleep(5000);
	pthread_mutex_lock(&fmu);
	assert_int_equal(n2->last_spawn_ctx, 1);
	assert_int_equal(n2->last_spawn_ctx_version, 12);
	assert_int_equal(n1->n_spawn, 1);
	pthread_mutex_unlock(&fmu);
	h.stop = 1;
	pthread_join(th, NULL);
	coord_destroy(c);
}

static void test_pending_until_node_joins(void **state)
{
	/* With its only node dead, an agent waits PENDING and is placed as
	 * soon as a node registers. */
	coord *c = make(200, 10, 1);
	fake(0, "n1");
	fake(1, "n2");
	reg(c, "n1", 4 * GiB);
	place_ok(c, "det", 0, "n1");
	double t0 = now_ms();
	while (node_state(c, "n1") != AIDOS__NODE_STATE__NODE_DEAD && now_ms() - t0 < 2000)
		usleep(5000);
	usleep(50000);
	Aidos__ListAgentsReply *r = NULL;
	const Aidos__AgentInfo *a = agent_of(c, "det", &r);
	assert_int_equal(a->state_now, AIDOS__AGENT_STATE__AGENT_PENDING);
	assert_string_equal(a->node, "");
	coord_reply_free(&r->base);

	/* resolve says why, with NOTFOUND so clients retry */
	Aidos__ResolveRequest rq = AIDOS__RESOLVE_REQUEST__INIT;
	char err[256] = "";
	rq.agent = "det";
	assert_int_equal(call(c, "Resolve", &rq, NULL, err, sizeof err), AIDOS_E_NOTFOUND);
	assert_non_null(strstr(err, "PENDING"));

	reg(c, "n2", 4 * GiB);
	t0 = now_ms();
	while (strcmp(agent_node(c, "det"), "n2") && now_ms() - t0 < 2000)
		usleep(5000);
	assert_string_equal(agent_node(c, "det"), "n2");
	print_message("    placed %.0f ms after n2 registered\n", now_ms() - t0);
	coord_destroy(c);
}

static void test_place_failures(void **state)
{
	coord *c = make(1000, 50, 0);
	fake_node *n1 = fake(0, "n1");
	fake(1, "n2");
	char err[512] = "";
	Aidos__PlaceReply *r = NULL;

	/* no node at all */
	assert_int_equal(place(c, "a", NULL, 0, 1 << 20, NULL, err, sizeof err), AIDOS_E_NOMEM);
	assert_non_null(strstr(err, "'a'"));
	assert_non_null(strstr(err, "no ready node"));
	reg(c, "n1", GiB);
	reg(c, "n2", GiB);
	/* too big */
	assert_int_equal(place(c, "big", NULL, 0, 1ull << 40, NULL, err, sizeof err), AIDOS_E_NOMEM);
	assert_non_null(strstr(err, "bytes free"));
	/* pinned to an unknown node */
	assert_int_equal(place(c, "p", "nowhere", 0, 1 << 20, NULL, err, sizeof err), AIDOS_E_NOTFOUND);
	assert_non_null(strstr(err, "nowhere"));
	/* the chosen node fails to spawn: the next one is tried */
	pthread_mutex_lock(&fmu);
	n1->fail_spawn = 1;
	pthread_mutex_unlock(&fmu);
	assert_int_equal(place(c, "a", NULL, 0, 1 << 20, &r, err, sizeof err), 0);
	assert_string_equal(r->agent->node, "n2");
	assert_non_null(strstr(r->reason, "earlier nodes failed"));
	coord_reply_free(&r->base);
	/* every node fails: an error naming the last failure, and no agent left behind */
	pthread_mutex_lock(&fmu);
	fakes[1].fail_spawn = 1;
	pthread_mutex_unlock(&fmu);
	assert_int_equal(place(c, "b", NULL, 0, 1 << 20, NULL, err, sizeof err), AIDOS_E_RUNTIME);
	assert_non_null(strstr(err, "failed to load"));
	assert_string_equal(agent_node(c, "b"), "(none)");
	/* a duplicate name */
	assert_int_equal(place(c, "a", NULL, 0, 1 << 20, NULL, err, sizeof err), AIDOS_E_INVALID);
	assert_non_null(strstr(err, "already exists"));
	/* placement spreads: the second agent goes to the emptier node */
	pthread_mutex_lock(&fmu);
	n1->fail_spawn = fakes[1].fail_spawn = 0;
	pthread_mutex_unlock(&fmu);
	place_ok(c, "c", 0, "n1");
	place_ok(c, "d", 0, "n2");   /* 1 agent each: n2 has more memory left (a is smaller) */
	coord_destroy(c);
}

static void test_migrate(void **state)
{
	coord *c = make(1000, 50, 0);
	fake_node *n1 = fake(0, "n1"), *n2 = fake(1, "n2");
	Aidos__MigrateRequest req = AIDOS__MIGRATE_REQUEST__INIT;
	Aidos__MigrateReply *r = NULL;
	char err[512] = "";
	reg(c, "n1", 4 * GiB);
	place_ok(c, "vad", 1, "n1");
	place_ok(c, "det", 0, "n1");
	reg(c, "n2", 4 * GiB);

	/* stateful: export (freeze) -> import -> flip -> release */
	req.agent = "vad";
	req.to_node = "n2";
	assert_int_equal(call(c, "Migrate", &req, &r, err, sizeof err), 0);
	assert_string_equal(r->agent->node, "n2");
	assert_int_equal(r->context_bytes, 4096);
	assert_int_equal(r->agent->context_version, 42);
	assert_true(r->ms > 0);
	coord_reply_free(&r->base);
	pthread_mutex_lock(&fmu);
	assert_int_equal(n1->n_export, 1);
	assert_int_equal(n2->n_import, 1);
	assert_int_equal(n1->n_release, 1);
	pthread_mutex_unlock(&fmu);
	assert_false(fake_hosts(n1, "vad"));
	assert_true(fake_hosts(n2, "vad"));

	/* stateless: spawn on the target, kill on the source */
	req.agent = "det";
	assert_int_equal(call(c, "Migrate", &req, &r, err, sizeof err), 0);
	assert_int_equal(r->context_bytes, 0);
	coord_reply_free(&r->base);
	assert_false(fake_hosts(n1, "det"));
	assert_true(fake_hosts(n2, "det"));

	/* the import fails: the source unfreezes and keeps the agent */
	pthread_mutex_lock(&fmu);
	n1->fail_import = 1;
	pthread_mutex_unlock(&fmu);
	req.agent = "vad";
	req.to_node = "n1";
	assert_int_equal(call(c, "Migrate", &req, NULL, err, sizeof err), AIDOS_E_INVALID);
	assert_non_null(strstr(err, "import on node n1 failed"));
	assert_string_equal(agent_node(c, "vad"), "n2");
	pthread_mutex_lock(&fmu);
	assert_int_equal(n2->n_unfreeze, 1);
	assert_int_equal(n2->agents[0].frozen + n2->agents[1].frozen, 0);
	pthread_mutex_unlock(&fmu);
	assert_true(fake_hosts(n2, "vad"));

	/* the source is unreachable: nothing moves */
	pthread_mutex_lock(&fmu);
	n1->fail_import = 0;
	n2->down = 1;
	pthread_mutex_unlock(&fmu);
	assert_int_equal(call(c, "Migrate", &req, NULL, err, sizeof err), -ECONNREFUSED);
	assert_non_null(strstr(err, "export from node n2 failed"));
	assert_string_equal(agent_node(c, "vad"), "n2");

	/* bad requests */
	req.to_node = "n2";
	assert_int_equal(call(c, "Migrate", &req, NULL, err, sizeof err), AIDOS_E_INVALID);
	assert_non_null(strstr(err, "already on node 'n2'"));
	req.to_node = "n9";
	assert_int_equal(call(c, "Migrate", &req, NULL, err, sizeof err), AIDOS_E_NOTFOUND);
	assert_non_null(strstr(err, "'n9'"));
	req.agent = "nobody";
	req.to_node = "n1";
	assert_int_equal(call(c, "Migrate", &req, NULL, err, sizeof err), AIDOS_E_NOTFOUND);
	assert_non_null(strstr(err, "'nobody'"));
	coord_destroy(c);
}

typedef struct mig_thread {
	coord *c;
	int rc;
	char err[512];
} mig_thread;

static void *mig_main(void *arg)
{
	mig_thread *m = arg;
	Aidos__MigrateRequest req = AIDOS__MIGRATE_REQUEST__INIT;
	req.agent = "det";
	req.to_node = "n2";
	m->rc = call(m->c, "Migrate", &req, NULL, m->err, sizeof m->err);
	return NULL;
}

static void test_busy_agent(void **state)
{
	/* While a migration waits on a slow node, the state lock is free
	 * (listing answers at once) and a second operation on the same agent
	 * fails clearly instead of racing it. */
	coord *c = make(1000, 50, 0);
	fake(0, "n1");
	fake_node *n2 = fake(1, "n2");
	char err[512] = "";
	reg(c, "n1", 4 * GiB);
	place_ok(c, "det", 0, "n1");
	place_ok(c, "other", 0, "n1");
	reg(c, "n2", 4 * GiB);
	pthread_mutex_lock(&fmu);
	n2->spawn_delay_ms = 400;
	pthread_mutex_unlock(&fmu);
	mig_thread m = { c, 0, "" };
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, mig_main, &m), 0);
	usleep(100000);
	double t0 = now_ms();
	assert_string_equal(agent_node(c, "det"), "n1");   /* not flipped yet */
	assert_true(now_ms() - t0 < 100);
	Aidos__KillRequest kq = AIDOS__KILL_REQUEST__INIT;
	kq.agent = "det";
	assert_int_equal(call(c, "Kill", &kq, NULL, err, sizeof err), -EBUSY);
	assert_non_null(strstr(err, "busy"));
	assert_non_null(strstr(err, "migrate"));
	/* another agent is not blocked */
	kq.agent = "other";
	assert_int_equal(call(c, "Kill", &kq, NULL, err, sizeof err), 0);
	pthread_join(th, NULL);
	assert_int_equal(m.rc, 0);
	assert_string_equal(agent_node(c, "det"), "n2");
	coord_destroy(c);
}

static void test_drain_and_kill(void **state)
{
	coord *c = make(1000, 50, 0);
	fake_node *n1 = fake(0, "n1");
	fake(1, "n2");
	fake(2, "n3");
	Aidos__DrainRequest dq = AIDOS__DRAIN_REQUEST__INIT;
	Aidos__DrainReply *dr = NULL;
	Aidos__KillRequest kq = AIDOS__KILL_REQUEST__INIT;
	char err[512] = "";
	reg(c, "n1", 4 * GiB);
	place_ok(c, "a", 0, "n1");
	place_ok(c, "b", 1, "n1");
	reg(c, "n2", 4 * GiB);
	reg(c, "n3", 4 * GiB);
	dq.node = "n1";
	assert_int_equal(call(c, "Drain", &dq, &dr, err, sizeof err), 0);
	assert_int_equal(dr->n_moved, 2);
	for (size_t i = 0; i < dr->n_moved; i++)
		assert_string_not_equal(dr->moved[i]->node, "n1");
	coord_reply_free(&dr->base);
	assert_int_equal(n1->n, 0);
	assert_int_equal(node_state(c, "n1"), AIDOS__NODE_STATE__NODE_DRAINING);
	/* a draining node takes no new agent, though it is the emptiest */
	place_ok(c, "c", 0, "n2");
	assert_string_not_equal(agent_node(c, "c"), "n1");
	dq.node = "n7";
	assert_int_equal(call(c, "Drain", &dq, NULL, err, sizeof err), AIDOS_E_NOTFOUND);
	assert_non_null(strstr(err, "'n7'"));

	kq.agent = "a";
	const char *where = agent_node(c, "a");
	int idx = !strcmp(where, "n2") ? 1 : 2;
	assert_int_equal(call(c, "Kill", &kq, NULL, err, sizeof err), 0);
	assert_false(fake_hosts(&fakes[idx], "a"));
	assert_string_equal(agent_node(c, "a"), "(none)");
	assert_int_equal(call(c, "Kill", &kq, NULL, err, sizeof err), AIDOS_E_NOTFOUND);
	assert_non_null(strstr(err, "'a'"));
	/* killing on an unreachable node still removes it from the directory */
	pthread_mutex_lock(&fmu);
	fakes[1].down = fakes[2].down = 1;
	pthread_mutex_unlock(&fmu);
	kq.agent = "b";
	assert_int_equal(call(c, "Kill", &kq, NULL, err, sizeof err), 0);
	assert_string_equal(agent_node(c, "b"), "(none)");
	coord_destroy(c);
}

static void test_persistence(void **state)
{
	ckpt_buf ck;
	coord *c = make(1000, 50, 0);
	fake(0, "n1");
	fake(1, "n2");
	reg(c, "n1", 4 * GiB);
	place_ok(c, "vad", 1, "n1");
	reg(c, "n2", 4 * GiB);
	place_ok(c, "det", 0, "n2");
	make_ckpt(&ck, "vad", 5);
	heartbeat(c, "n1", 4 * GiB, &ck.ctx);
	coord_destroy(c);   /* writes the checkpoint it had not flushed */

	c = make(1000, 50, 0);
	Aidos__ListNodesRequest nq = AIDOS__LIST_NODES_REQUEST__INIT;
	Aidos__ListNodesReply *nr = NULL;
	char err[256];
	assert_int_equal(call(c, "ListNodes", &nq, &nr, err, sizeof err), 0);
	assert_int_equal(nr->n_nodes, 2);
	assert_string_equal(nr->nodes[0]->name, "n1");
	assert_string_equal(nr->nodes[1]->name, "n2");
	assert_string_equal(nr->nodes[1]->rpc_addr, "fake:n2");
	assert_int_equal(nr->nodes[0]->state, AIDOS__NODE_STATE__NODE_UNKNOWN);
	assert_int_equal(nr->nodes[1]->state, AIDOS__NODE_STATE__NODE_UNKNOWN);
	assert_int_equal(nr->nodes[0]->n_agents, 1);
	coord_reply_free(&nr->base);

	Aidos__ListAgentsReply *ar = NULL;
	const Aidos__AgentInfo *a = agent_of(c, "vad", &ar);
	assert_non_null(a);
	assert_string_equal(a->node, "n1");
	assert_string_equal(a->model_path, "/models/silero_vad.onnx");
	assert_true(a->stateful);
	assert_int_equal(a->n_state, 1);
	assert_string_equal(a->state[0]->output, "stateN");
	assert_int_equal(a->context_version, 5);
	coord_reply_free(&ar->base);
	assert_string_equal(agent_node(c, "det"), "n2");

	/* a known node's heartbeat brings it back; a stranger must register */
	assert_int_equal(heartbeat(c, "n1", 4 * GiB, NULL), 1);
	assert_int_equal(node_state(c, "n1"), AIDOS__NODE_STATE__NODE_READY);
	assert_int_equal(heartbeat(c, "n3", 4 * GiB, NULL), 0);
	/* and a re-registering node is told what it should host */
	Aidos__NodeInfo ni = AIDOS__NODE_INFO__INIT;
	Aidos__RegisterNodeRequest rq = AIDOS__REGISTER_NODE_REQUEST__INIT;
	Aidos__RegisterNodeReply *rr = NULL;
	ni.name = "n2";
	ni.rpc_addr = "fake:n2";
	rq.node = &ni;
	assert_int_equal(call(c, "RegisterNode", &rq, &rr, err, sizeof err), 0);
	assert_int_equal(rr->n_agents, 1);
	assert_string_equal(rr->agents[0]->name, "det");
	coord_reply_free(&rr->base);
	/* within the grace a silent node from disk stays UNKNOWN */
	assert_int_equal(coord_reap(c), 0);
	assert_int_equal(node_state(c, "n2"), AIDOS__NODE_STATE__NODE_READY);

	/* a drain survives a restart, and heartbeats do not undo it */
	Aidos__DrainRequest dq = AIDOS__DRAIN_REQUEST__INIT;
	dq.node = "n1";
	pthread_mutex_lock(&fmu);
	fakes[1].n = 0;
	pthread_mutex_unlock(&fmu);
	assert_int_equal(heartbeat(c, "n2", 4 * GiB, NULL), 1);   /* registered above with no memory */
	assert_int_equal(call(c, "Drain", &dq, NULL, err, sizeof err), 0);
	assert_string_equal(agent_node(c, "vad"), "n2");
	coord_destroy(c);
	c = make(1000, 50, 0);
	assert_int_equal(node_state(c, "n1"), AIDOS__NODE_STATE__NODE_DRAINING);
	assert_int_equal(heartbeat(c, "n1", 4 * GiB, NULL), 1);
	assert_int_equal(node_state(c, "n1"), AIDOS__NODE_STATE__NODE_DRAINING);
	coord_destroy(c);
}

static void test_stateful_pairs_learned(void **state)
{
	/* --stateful without --state: the node names the pairs in its Spawn
	 * reply and the directory keeps them. */
	coord *c = make(1000, 50, 0);
	Aidos__PlaceRequest req = AIDOS__PLACE_REQUEST__INIT;
	Aidos__AgentInfo ai = AIDOS__AGENT_INFO__INIT;
	Aidos__PlaceReply *r = NULL;
	char err[256];
	fake(0, "n1");
	reg(c, "n1", GiB);
	ai.name = "lstm";
	ai.model_path = "/m/legacy.onnx";
	ai.stateful = 1;
	req.agent = &ai;
	assert_int_equal(call(c, "Place", &req, &r, err, sizeof err), 0);
	assert_int_equal(r->agent->n_state, 1);
	assert_string_equal(r->agent->state[0]->input, "h");
	assert_string_equal(r->agent->state[0]->output, "hn");
	assert_string_equal(r->agent->device, "cpu");
	coord_reply_free(&r->base);
	coord_destroy(c);
}

static void test_unknown_grace(void **state)
{
	/* A node from disk that never comes back is declared dead after the
	 * grace (10 leases), and its agents are placed elsewhere. */
	coord *c = make(100, 10, 0);
	fake(0, "n1");
	fake_node *n2 = fake(1, "n2");
	reg(c, "n1", 4 * GiB);
	place_ok(c, "vad", 1, "n1");
	ckpt_buf ck;
	make_ckpt(&ck, "vad", 3);
	heartbeat(c, "n1", 4 * GiB, &ck.ctx);
	coord_destroy(c);

	c = make(100, 10, 1);
	hb_thread h = { c, "n2", 0 };
	pthread_t th;
	reg(c, "n2", 4 * GiB);
	assert_int_equal(pthread_create(&th, NULL, hb_main, &h), 0);
	double t0 = now_ms();
	/* bounded wait, generous: a loaded 2-core machine can stall threads */
	while (strcmp(agent_node(c, "vad"), "n2") && now_ms() - t0 < 10000)
		usleep(10000);
	assert_string_equal(agent_node(c, "vad"), "n2");
	assert_int_equal(node_state(c, "n1"), AIDOS__NODE_STATE__NODE_DEAD);
	pthread_mutex_lock(&fmu);
	assert_int_equal(n2->last_spawn_ctx_version, 3);   /* the checkpoint from disk */
	pthread_mutex_unlock(&fmu);
	h.stop = 1;
	pthread_join(th, NULL);
	coord_destroy(c);
}

static void test_corrupt_state_refused(void **state)
{
	char path[512], err[512] = "";
	coord_opts o = { .data_dir = tmpdir, .quiet = 1, .node_call = fake_call };
	coord *c = NULL;
	snprintf(path, sizeof path, "%s/cluster.pb", tmpdir);
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	fputs("\xff\xff\xff\xff not a protobuf", f);
	fclose(f);
	assert_int_equal(coord_create(&o, &c, err, sizeof err), AIDOS_E_INVALID);
	assert_null(c);
	assert_non_null(strstr(err, "cluster.pb"));
	/* the file is left alone for the operator */
	f = fopen(path, "rb");
	assert_non_null(f);
	fclose(f);
	/* options */
	o.data_dir = NULL;
	assert_int_equal(coord_create(&o, &c, err, sizeof err), AIDOS_E_INVALID);
	o.data_dir = tmpdir;
	o.heartbeat_ms = 500;
	o.lease_ms = 400;
	assert_int_equal(coord_create(&o, &c, err, sizeof err), AIDOS_E_INVALID);
	assert_non_null(strstr(err, "lease"));
}

static void test_malformed_requests(void **state)
{
	coord *c = make(1000, 50, 0);
	fake(0, "n1");
	reg(c, "n1", 4 * GiB);
	char err[512] = "";
	ProtobufCMessage *r = NULL;

	Aidos__ResolveRequest rq = AIDOS__RESOLVE_REQUEST__INIT;
	rq.agent = "ghost";
	assert_int_equal(call(c, "Resolve", &rq, NULL, err, sizeof err), AIDOS_E_NOTFOUND);
	assert_non_null(strstr(err, "agent 'ghost' not found"));
	rq.agent = "";
	assert_int_equal(call(c, "Resolve", &rq, NULL, err, sizeof err), AIDOS_E_INVALID);
	rq.agent = "../etc/passwd";
	assert_int_equal(call(c, "Resolve", &rq, NULL, err, sizeof err), AIDOS_E_INVALID);

	Aidos__KillRequest kq = AIDOS__KILL_REQUEST__INIT;
	kq.agent = "ghost";
	assert_int_equal(call(c, "Kill", &kq, NULL, err, sizeof err), AIDOS_E_NOTFOUND);
	assert_non_null(strstr(err, "'ghost'"));
	Aidos__DrainRequest dq = AIDOS__DRAIN_REQUEST__INIT;
	dq.node = "nX";
	assert_int_equal(call(c, "Drain", &dq, NULL, err, sizeof err), AIDOS_E_NOTFOUND);
	assert_non_null(strstr(err, "node 'nX' not found"));

	/* Place: missing agent, bad name, relative path, priority, device, pairs */
	Aidos__PlaceRequest pq = AIDOS__PLACE_REQUEST__INIT;
	assert_int_equal(call(c, "Place", &pq, NULL, err, sizeof err), AIDOS_E_INVALID);
	Aidos__AgentInfo ai = AIDOS__AGENT_INFO__INIT;
	pq.agent = &ai;
	ai.name = "has space";
	ai.model_path = "/m.onnx";
	assert_int_equal(call(c, "Place", &pq, NULL, err, sizeof err), AIDOS_E_INVALID);
	assert_non_null(strstr(err, "has space"));
	ai.name = "ok";
	ai.model_path = "relative.onnx";
	assert_int_equal(call(c, "Place", &pq, NULL, err, sizeof err), AIDOS_E_INVALID);
	assert_non_null(strstr(err, "not absolute"));
	ai.model_path = "/m.onnx";
	ai.priority = -5;
	assert_int_equal(call(c, "Place", &pq, NULL, err, sizeof err), AIDOS_E_RANGE);
	ai.priority = 0;
	ai.device = "tpu";
	assert_int_equal(call(c, "Place", &pq, NULL, err, sizeof err), AIDOS_E_INVALID);
	assert_non_null(strstr(err, "tpu"));
	ai.device = "";
	Aidos__StatePair sp = AIDOS__STATE_PAIR__INIT, *sps[1] = { &sp };
	ai.n_state = 1;
	ai.state = sps;
	sp.input = "h";
	assert_int_equal(call(c, "Place", &pq, NULL, err, sizeof err), AIDOS_E_INVALID);
	assert_non_null(strstr(err, "state pair"));

	/* Register and Heartbeat */
	Aidos__RegisterNodeRequest rg = AIDOS__REGISTER_NODE_REQUEST__INIT;
	assert_int_equal(call(c, "RegisterNode", &rg, NULL, err, sizeof err), AIDOS_E_INVALID);
	Aidos__NodeInfo ni = AIDOS__NODE_INFO__INIT;
	rg.node = &ni;
	ni.name = "n2";
	assert_int_equal(call(c, "RegisterNode", &rg, NULL, err, sizeof err), AIDOS_E_INVALID);
	assert_non_null(strstr(err, "rpc_addr"));
	Aidos__HeartbeatRequest hq = AIDOS__HEARTBEAT_REQUEST__INIT;
	assert_int_equal(call(c, "Heartbeat", &hq, NULL, err, sizeof err), AIDOS_E_INVALID);
	/* a heartbeat naming agents the node does not host changes nothing */
	Aidos__AgentInfo stray = AIDOS__AGENT_INFO__INIT, *strays[2] = { &stray, NULL };
	stray.name = "ghost";
	stray.requests = 99;
	hq.node = "n1";
	hq.n_agents = 1;
	hq.agents = strays;
	assert_int_equal(call(c, "Heartbeat", &hq, NULL, err, sizeof err), 0);
	/* a checkpoint with a lying tensor is dropped, the heartbeat still counts */
	ckpt_buf ck;
	make_ckpt(&ck, "ghost", 1);
	ck.t.data.len = 3;
	assert_int_equal(heartbeat(c, "n1", GiB, &ck.ctx), 1);

	/* coord_call itself: unknown method, wrong request type */
	assert_int_equal(coord_call(c, "/aidos.Coordinator/Nope", &hq.base, &r, err, sizeof err), AIDOS_E_UNSUPPORTED);
	assert_non_null(strstr(err, "Nope"));
	assert_int_equal(coord_call(c, "/aidos.Coordinator/Place", &hq.base, &r, err, sizeof err), AIDOS_E_INVALID);
	assert_null(r);
	coord_destroy(c);
}

/* Register, Place, ListAgents, Kill: the sequence the fault test breaks. */
static void alloc_seq(coord *c)
{
	char err[512];
	Aidos__NodeInfo ni = AIDOS__NODE_INFO__INIT;
	Aidos__RegisterNodeRequest rq = AIDOS__REGISTER_NODE_REQUEST__INIT;
	ni.name = "n1";
	ni.rpc_addr = "fake:n1";
	ni.mem_free = 4 * GiB;
	rq.node = &ni;
	call(c, "RegisterNode", &rq, NULL, err, sizeof err);
	place(c, "a", NULL, 1, 1 << 20, NULL, err, sizeof err);
	Aidos__ListAgentsRequest lq = AIDOS__LIST_AGENTS_REQUEST__INIT;
	call(c, "ListAgents", &lq, NULL, err, sizeof err);
	Aidos__KillRequest kq = AIDOS__KILL_REQUEST__INIT;
	kq.agent = "a";
	call(c, "Kill", &kq, NULL, err, sizeof err);
}

static void test_alloc_failures(void **state)
{
	/* Every allocation of the sequence fails in turn: each call fails
	 * cleanly or succeeds, the coordinator stays usable, nothing leaks
	 * (run under `make SAN=1`). */
	pool_stats st0, st1;
	char path[512];
	int total;
	snprintf(path, sizeof path, "%s/cluster.pb", tmpdir);
	fake(0, "n1");
	coord *c = make(1000, 50, 0);
	pool_get_stats(&st0);
	alloc_seq(c);
	pool_get_stats(&st1);
	coord_destroy(c);
	unlink(path);
	total = (int)(st1.allocs - st0.allocs);
	print_message("    %d allocations in the sequence: each fails once in turn\n", total);
	assert_true(total > 10);
	for (int nth = 1; nth <= total; nth++) {
		c = make(1000, 50, 0);
		pool_fault_inject((uint64_t)nth, 0);
		alloc_seq(c);
		pool_fault_inject(0, 0);
		/* afterwards everything works */
		reg(c, "n1", GiB);
		assert_int_equal(node_state(c, "n1"), AIDOS__NODE_STATE__NODE_READY);
		coord_destroy(c);
		unlink(path);
		pthread_mutex_lock(&fmu);
		fakes[0].n = 0;
		pthread_mutex_unlock(&fmu);
	}
}

static void test_over_grpc(void **state)
{
	/* The service through a real gRPC server: codes and messages cross. */
	coord *c = make(1000, 50, 0);
	char err[512] = "", target[64];
	int port = 0;
	int rc = coord_listen(c, "127.0.0.1:0", 2, &port, err, sizeof err);
	if (rc)
		print_error("listen: %s\n", err);
	assert_int_equal(rc, 0);
	assert_true(port > 0);
	fake(0, "n1");
	reg(c, "n1", GiB);
	rpc_client *cli;
	snprintf(target, sizeof target, "127.0.0.1:%d", port);
	assert_int_equal(rpc_client_create(target, &cli), 0);
	Aidos__ListNodesRequest nq = AIDOS__LIST_NODES_REQUEST__INIT;
	Aidos__ListNodesReply *nr = NULL;
	assert_int_equal(rpc_call(cli, "/aidos.Coordinator/ListNodes", &nq.base, &aidos__list_nodes_reply__descriptor,
				  (ProtobufCMessage **)&nr, 2000, err, sizeof err),
			 0);
	assert_int_equal(nr->n_nodes, 1);
	assert_string_equal(nr->nodes[0]->name, "n1");
	protobuf_c_message_free_unpacked(&nr->base, NULL);
	Aidos__ResolveRequest rq = AIDOS__RESOLVE_REQUEST__INIT;
	ProtobufCMessage *rr = NULL;
	rq.agent = "ghost";
	assert_int_equal(rpc_call(cli, "/aidos.Coordinator/Resolve", &rq.base, &aidos__resolve_reply__descriptor, &rr,
				  2000, err, sizeof err),
			 AIDOS_E_NOTFOUND);
	assert_non_null(strstr(err, "agent 'ghost' not found"));
	rpc_client_destroy(cli);
	coord_destroy(c);
}


/* ---- the scheduler view, explain, rebalancing ---- */

/* A heartbeat of node carrying its agents' latency and request counters. */
static void hb_agents(coord *c, const char *node, int n, const char *const *names, const double *lat,
		      const uint64_t *reqs, uint32_t queue)
{
	Aidos__HeartbeatRequest req = AIDOS__HEARTBEAT_REQUEST__INIT;
	Aidos__AgentInfo ai[8], *aps[8];
	Aidos__HeartbeatReply *r = NULL;
	char err[256] = "";
	for (int i = 0; i < n; i++) {
		aidos__agent_info__init(&ai[i]);
		ai[i].name = (char *)names[i];
		ai[i].state_now = AIDOS__AGENT_STATE__AGENT_INFER;
		ai[i].latency_ms = lat[i];
		ai[i].requests = reqs[i];
		aps[i] = &ai[i];
	}
	req.node = (char *)node;
	req.mem_free = 1ull << 32;
	req.queue_len = queue;
	req.n_agents = (size_t)n;
	req.agents = aps;
	assert_int_equal(call(c, "Heartbeat", &req, &r, err, sizeof err), 0);
	coord_reply_free(&r->base);
}

static void place_prio(coord *c, const char *name, int prio)
{
	Aidos__PlaceRequest req = AIDOS__PLACE_REQUEST__INIT;
	Aidos__AgentInfo ai = AIDOS__AGENT_INFO__INIT;
	char err[512] = "";
	ai.name = (char *)name;
	ai.model_path = "/models/squeezenet.onnx";
	ai.priority = prio;
	ai.mem_bytes = 64 << 20;
	req.agent = &ai;
	int rc = call(c, "Place", &req, NULL, err, sizeof err);
	if (rc)
		print_error("place %s: %s\n", name, err);
	assert_int_equal(rc, 0);
}

static void test_explain_and_events(void **state)
{
	coord *c = make(1000, 50, 0);
	fake(0, "n1");
	fake(1, "n2");
	reg(c, "n1", 1ull << 32);
	reg(c, "n2", 1ull << 32);
	place_prio(c, "a1", 5);
	Aidos__ExplainRequest req = AIDOS__EXPLAIN_REQUEST__INIT;
	Aidos__ExplainReply *r = NULL;
	char err[512] = "";
	req.agent = "a1";
	assert_int_equal(call(c, "Explain", &req, &r, err, sizeof err), 0);
	assert_int_equal(r->n_candidates, 2);
	assert_string_equal(r->agent->node, "n1");
	assert_non_null(strstr(r->agent->reason, "best of the policy"));
	for (size_t i = 0; i < r->n_candidates; i++) {
		const Aidos__Candidate *cd = r->candidates[i];
		assert_true(cd->feasible);
		double sum = cd->latency + cd->queue + cd->gpu + cd->move + cd->memory + cd->spread;
		assert_true(fabs(sum - cd->total) < 1e-9);
		assert_string_equal(cd->device, "cpu");
	}
	/* best first */
	assert_true(r->candidates[0]->total <= r->candidates[1]->total);
	coord_reply_free(&r->base);
	/* a pinned agent: the other node is ruled out, and says why */
	Aidos__PlaceReply *pr = NULL;
	assert_int_equal(place(c, "p1", "n2", 0, 1 << 20, &pr, err, sizeof err), 0);
	assert_non_null(strstr(pr->reason, "pinned by operator"));
	coord_reply_free(&pr->base);
	req.agent = "p1";
	assert_int_equal(call(c, "Explain", &req, &r, err, sizeof err), 0);
	assert_string_equal(r->best, "n2");
	assert_true(r->candidates[0]->feasible);
	assert_false(r->candidates[1]->feasible);
	assert_string_equal(r->candidates[1]->why_not, "not the pinned node");
	coord_reply_free(&r->base);
	req.agent = "nope";
	assert_int_equal(call(c, "Explain", &req, &r, err, sizeof err), AIDOS_E_NOTFOUND);
	coord_reply_free(r ? &r->base : NULL);
	/* events: the two placements, in order */
	Aidos__EventsRequest ereq = AIDOS__EVENTS_REQUEST__INIT;
	Aidos__EventsReply *er = NULL;
	assert_int_equal(call(c, "Events", &ereq, &er, err, sizeof err), 0);
	assert_int_equal(er->n_events, 2);
	assert_string_equal(er->events[0]->kind, "place");
	assert_string_equal(er->events[0]->agent, "a1");
	assert_string_equal(er->events[1]->agent, "p1");
	assert_true(er->rebalance);
	uint64_t last = er->events[1]->seq;
	coord_reply_free(&er->base);
	ereq.after_seq = last;
	assert_int_equal(call(c, "Events", &ereq, &er, err, sizeof err), 0);
	assert_int_equal(er->n_events, 0);
	coord_reply_free(&er->base);
	/* the decision hook agrees with explain */
	char node[64];
	assert_int_equal(coord_decide(c, "p1", node, sizeof node, err, sizeof err), 0);
	assert_string_equal(node, "n2");
	assert_int_equal(coord_decide(c, "nope", node, sizeof node, err, sizeof err), AIDOS_E_NOTFOUND);
	coord_destroy(c);
}

static void test_rebalance(void **state)
{
	coord *c = make(1000, 50, 0);
	const char *names[] = { "hi", "lo1", "lo2" };
	double fast[] = { 10, 10, 10 }, slow[] = { 40, 40, 40 };
	uint64_t reqs[] = { 0, 0, 0 };
	char err[512] = "";
	fake(0, "n1");
	fake(1, "n2");
	reg(c, "n1", 1ull << 32);
	/* everything on n1 first (the only node), then n2 joins */
	place_prio(c, "hi", 200);
	place_prio(c, "lo1", 0);
	place_prio(c, "lo2", 0);
	reg(c, "n2", 1ull << 32);
	hb_agents(c, "n1", 3, names, fast, reqs, 0);   /* the unloaded estimate: 10 ms */
	usleep(20000);
	/* the low-priority load arrives: latency x4, lo2 the heaviest */
	for (int k = 0; k < 2; k++) {
		reqs[0] += 2, reqs[1] += 10, reqs[2] += 40;
		hb_agents(c, "n1", 3, names, slow, reqs, 6);
		usleep(20000);
		assert_int_equal(coord_rebalance(c), 0);   /* not sustained yet */
	}
	reqs[0] += 2, reqs[1] += 10, reqs[2] += 40;
	hb_agents(c, "n1", 3, names, slow, reqs, 6);
	assert_int_equal(coord_rebalance(c), 1);   /* third overloaded check in a row */
	Aidos__ListAgentsReply *hold = NULL;
	const Aidos__AgentInfo *a = agent_of(c, "lo2", &hold);
	assert_string_equal(a->node, "n2");   /* the lowest class, heaviest, moved */
	assert_int_equal(a->moves, 1);
	assert_non_null(strstr(a->reason, "overloaded"));
	assert_true(a->rate > 0);
	coord_reply_free(&hold->base);
	a = agent_of(c, "hi", &hold);
	assert_string_equal(a->node, "n1");   /* the high-priority agent stays */
	coord_reply_free(&hold->base);
	assert_true(fake_hosts(&fakes[1], "lo2"));
	assert_false(fake_hosts(&fakes[0], "lo2"));
	Aidos__EventsRequest ereq = AIDOS__EVENTS_REQUEST__INIT;
	Aidos__EventsReply *er = NULL;
	assert_int_equal(call(c, "Events", &ereq, &er, err, sizeof err), 0);
	const Aidos__Event *e = er->events[er->n_events - 1];
	assert_string_equal(e->kind, "rebalance");
	assert_string_equal(e->agent, "lo2");
	assert_string_equal(e->from_node, "n1");
	assert_string_equal(e->to_node, "n2");
	coord_reply_free(&er->base);
	/* hysteresis: the streak starts again; healthy reports reset it */
	assert_int_equal(coord_rebalance(c), 0);
	assert_int_equal(coord_rebalance(c), 0);
	hb_agents(c, "n1", 2, names, fast, reqs, 0);
	for (int k = 0; k < 4; k++)
		assert_int_equal(coord_rebalance(c), 0);
	/* no flapping: n2 overloaded now, but lo2 stays there (its cool-down;
	 * and n1 runs a higher class, which a lower one never moves onto) */
	const char *n2names[] = { "lo2" };
	double n2slow[] = { 40 };
	uint64_t n2reqs[] = { 400 };
	for (int k = 0; k < 4; k++) {
		n2reqs[0] += 40;
		hb_agents(c, "n2", 1, n2names, n2slow, n2reqs, 8);
		usleep(20000);
		assert_int_equal(coord_rebalance(c), 0);
	}
	a = agent_of(c, "lo2", &hold);
	assert_string_equal(a->node, "n2");
	coord_reply_free(&hold->base);
	coord_destroy(c);
}

/* An operator's migration starts the agent's cool-down: the rebalancer does
 * not move it back seconds later, however loaded its new node looks (the
 * cluster test saw exactly that under ASan: migrate n2 -> n1, rebalanced
 * back 2.4 s later). */
static void test_rebalance_respects_migrate(void **state)
{
	coord *c = make(1000, 50, 0);
	const char *names[] = { "lo1" };
	double fast[] = { 10 }, slow[] = { 40 };
	uint64_t reqs[] = { 0 };
	char err[512] = "";
	fake(0, "n1");
	fake(1, "n2");
	reg(c, "n1", 1ull << 32);
	place_prio(c, "lo1", 0);
	reg(c, "n2", 1ull << 32);
	Aidos__MigrateRequest req = AIDOS__MIGRATE_REQUEST__INIT;
	Aidos__MigrateReply *r = NULL;
	req.agent = "lo1";
	req.to_node = "n2";
	assert_int_equal(call(c, "Migrate", &req, &r, err, sizeof err), 0);
	assert_string_equal(r->agent->node, "n2");
	coord_reply_free(&r->base);
	hb_agents(c, "n2", 1, names, fast, reqs, 0);
	usleep(20000);
	/* n2 overloaded for more checks than the rebalancer needs */
	for (int k = 0; k < 5; k++) {
		reqs[0] += 40;
		hb_agents(c, "n2", 1, names, slow, reqs, 8);
		usleep(20000);
		assert_int_equal(coord_rebalance(c), 0);
	}
	Aidos__ListAgentsReply *hold = NULL;
	const Aidos__AgentInfo *a = agent_of(c, "lo1", &hold);
	assert_string_equal(a->node, "n2");
	coord_reply_free(&hold->base);
	coord_destroy(c);
}

static void test_rebalance_off(void **state)
{
	coord_opts o = { .data_dir = tmpdir, .heartbeat_ms = 250, .lease_ms = 100000, .reaper_ms = 50,
			 .quiet = 1, .node_call = fake_call, .rebalance = COORD_REBALANCE_OFF, .rebalance_ms = 10 };
	coord *c = NULL;
	char err[256] = "";
	assert_int_equal(coord_create(&o, &c, err, sizeof err), 0);
	assert_int_equal(coord_start(c), 0);
	const char *names[] = { "hi", "lo1" };
	double fast[] = { 10, 10 }, slow[] = { 50, 50 };
	uint64_t reqs[] = { 0, 0 };
	fake(0, "n1");
	fake(1, "n2");
	reg(c, "n1", 1ull << 32);
	place_prio(c, "hi", 200);
	place_prio(c, "lo1", 0);
	reg(c, "n2", 1ull << 32);
	hb_agents(c, "n1", 2, names, fast, reqs, 0);
	for (int k = 0; k < 10; k++) {   /* overloaded for 10 x 3 periods of the rebalancer */
		usleep(30000);
		reqs[0] += 5, reqs[1] += 50;
		hb_agents(c, "n1", 2, names, slow, reqs, 8);
	}
	Aidos__ListAgentsReply *hold = NULL;
	const Aidos__AgentInfo *a = agent_of(c, "lo1", &hold);
	assert_string_equal(a->node, "n1");
	assert_int_equal(a->moves, 0);
	coord_reply_free(&hold->base);
	Aidos__EventsRequest ereq = AIDOS__EVENTS_REQUEST__INIT;
	Aidos__EventsReply *er = NULL;
	assert_int_equal(call(c, "Events", &ereq, &er, err, sizeof err), 0);
	assert_false(er->rebalance);
	coord_reply_free(&er->base);
	coord_destroy(c);
}

static void test_decide_at_scale(void **state)
{
	/* the real decision over a 1,000-node view (memory only): it picks
	 * the node with the least high-class work for a high-class agent */
	coord_opts o = { .data_dir = tmpdir, .memory_only = 1, .quiet = 1, .node_call = fake_call,
			 .rebalance = COORD_REBALANCE_OFF };
	coord *c = NULL;
	char err[256] = "", name[32], node[64];
	assert_int_equal(coord_create(&o, &c, err, sizeof err), 0);
	for (int i = 0; i < 1000; i++) {
		snprintf(name, sizeof name, "m%04d", i);
		if (i < MAX_FAKES)
			fake(i, name);
		reg(c, name, 1ull << 32);
	}
	/* placements spread: 20 agents on 20 distinct nodes */
	for (int i = 0; i < 20; i++) {
		snprintf(name, sizeof name, "s%02d", i);
		Aidos__PlaceRequest req = AIDOS__PLACE_REQUEST__INIT;
		Aidos__AgentInfo ai = AIDOS__AGENT_INFO__INIT;
		Aidos__PlaceReply *r = NULL;
		ai.name = name;
		ai.model_path = "/models/m.onnx";
		ai.pinned_node = "";
		snprintf(node, sizeof node, "m%04d", i % MAX_FAKES);
		ai.pinned_node = node;   /* fakes exist only for the first MAX_FAKES nodes */
		req.agent = &ai;
		assert_int_equal(call(c, "Place", &req, &r, err, sizeof err), 0);
		coord_reply_free(&r->base);
	}
	assert_int_equal(coord_decide(c, "s00", node, sizeof node, err, sizeof err), 0);
	assert_string_equal(node, "m0000");   /* pinned */
	coord_destroy(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_register_heartbeat, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lease_expiry, setup, teardown),
		cmocka_unit_test_setup_teardown(test_replace_dead_agents, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dead_node_returns, setup, teardown),
		cmocka_unit_test_setup_teardown(test_replace_checkpoint_sent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pending_until_node_joins, setup, teardown),
		cmocka_unit_test_setup_teardown(test_place_failures, setup, teardown),
		cmocka_unit_test_setup_teardown(test_migrate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_busy_agent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_drain_and_kill, setup, teardown),
		cmocka_unit_test_setup_teardown(test_persistence, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stateful_pairs_learned, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unknown_grace, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_state_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed_requests, setup, teardown),
		cmocka_unit_test_setup_teardown(test_alloc_failures, setup, teardown),
		cmocka_unit_test_setup_teardown(test_over_grpc, setup, teardown),
		cmocka_unit_test_setup_teardown(test_explain_and_events, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rebalance, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rebalance_respects_migrate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rebalance_off, setup, teardown),
		cmocka_unit_test_setup_teardown(test_decide_at_scale, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
