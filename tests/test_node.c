/*
 * tests/test_node.c - the node (node/): the agent table, the state pairing
 * rules, context layout, checkpoint pack/unpack and checksums, the wire
 * codec's validation of malformed tensors; then, with the real Silero VAD
 * v5 model and its golden data (`make models`; skipped, saying why, when
 * absent), a whole cluster in this process: a coordinator and two nodes on
 * 127.0.0.1, requests over the UCX data plane (UCX_TLS=tcp) and over
 * Node.Infer, malformed and oversized requests (the node keeps serving),
 * migration with the context pulled by one xport_get, an ImportContext
 * whose checksum or length is wrong (refused, not resumed), and Kill.
 * And the node kernel standalone (hey_jarvis, the openWakeWord embedding
 * model, Silero VAD): local spawn/list/info/suspend/kill with shared
 * weights, outputs through the dispatcher equal to a direct run, no
 * allocation per request, strict priority and EDF order under load,
 * admission (deadline, full queue) and deadlines that pass in the queue,
 * a quota breach that fails only that agent, 4,096 agents of one model,
 * and a restart that restores agents and state from the node's own store.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "aidos/npy.h"
#include "coordinator/coord.h"
#include "node/node.h"
#include "node/wire.h"
#include <grpc/status.h>
#include "proto/rpc.h"
#include "pools/pools.h"

/* ---- the agent table ---- */

static node_agent *dummy(const char *name)
{
	node_agent *a = pool_calloc(1, sizeof *a);
	assert_non_null(a);
	snprintf(a->name, sizeof a->name, "%s", name);
	pthread_mutex_init(&a->mu, NULL);
	pthread_mutex_init(&a->smu, NULL);
	a->refs = 1;
	return a;
}

static void test_table(void **st)
{
	(void)st;
	node_table t;
	node_table_init(&t);
	const char *names[] = { "vad", "det", "cls", "rec", "a.b-c_9" };
	for (int i = 0; i < 5; i++) {
		node_agent *a = dummy(names[i]);
		assert_int_equal(node_table_add(&t, a), 0);
		node_agent_unref(a);   /* the table holds it now */
	}
	node_agent *dup = dummy("det");
	assert_int_equal(node_table_add(&t, dup), -EEXIST);
	node_agent_unref(dup);
	assert_int_equal(node_table_count(&t), 5);
	assert_null(node_table_get(&t, "nope"));
	assert_null(node_table_get(&t, NULL));

	node_agent **l;
	int n;
	assert_int_equal(node_table_list(&t, &l, &n), 0);
	assert_int_equal(n, 5);
	for (int i = 1; i < n; i++)
		assert_true(strcmp(l[i - 1]->name, l[i]->name) < 0);   /* sorted */
	for (int i = 0; i < n; i++)
		node_agent_unref(l[i]);
	pool_free(l);

	/* Removed while a request holds it: freed by the last unref only. */
	node_agent *held = node_table_get(&t, "rec");
	assert_non_null(held);
	assert_int_equal(held->refs, 2);
	node_agent *gone = node_table_remove(&t, "rec");
	assert_ptr_equal(gone, held);
	assert_null(node_table_get(&t, "rec"));
	assert_null(node_table_remove(&t, "rec"));
	node_agent_unref(gone);
	assert_int_equal(held->refs, 1);
	assert_string_equal(held->name, "rec");   /* still valid */
	pool_stats s0, s1;
	pool_get_stats(&s0);
	node_agent_unref(held);
	pool_get_stats(&s1);
	assert_true(s1.frees > s0.frees);
	assert_int_equal(node_table_count(&t), 4);
	node_table_fini(&t);
}

static void test_names(void **st)
{
	(void)st;
	assert_true(node_name_valid("vad"));
	assert_true(node_name_valid("a.b-c_9"));
	assert_false(node_name_valid(""));
	assert_false(node_name_valid(NULL));
	assert_false(node_name_valid("-x"));
	assert_false(node_name_valid(".x"));
	assert_false(node_name_valid("a/b"));
	assert_false(node_name_valid("a b"));
	char l[80];
	memset(l, 'a', 64);
	l[64] = 0;
	assert_false(node_name_valid(l));
	l[63] = 0;
	assert_true(node_name_valid(l));
}

/* ---- state pairs ---- */

static aidos_tensor T(const char *name, int32_t dt, int rank, int64_t d0, int64_t d1, int64_t d2)
{
	aidos_tensor t = { .name = name, .dtype = dt, .rank = rank, .dims = { d0, d1, d2 } };
	return t;
}

static void test_pairs_rules(void **st)
{
	(void)st;
	node_state *s;
	int n;
	size_t total;
	char err[512];

	/* Silero VAD v5: state [2,?,128] <- stateN [?,?,?]. */
	aidos_tensor ins[] = { T("input", AIDOS_DT_FLOAT, 2, -1, -1, 0), T("state", AIDOS_DT_FLOAT, 3, 2, -1, 128),
			       T("sr", AIDOS_DT_INT64, 0, 0, 0, 0) };
	aidos_tensor outs[] = { T("output", AIDOS_DT_FLOAT, 2, -1, 1, 0), T("stateN", AIDOS_DT_FLOAT, 3, -1, -1, -1) };
	assert_int_equal(node_state_match(ins, 3, outs, 2, NULL, NULL, 0, 1, &s, &n, &total, err, sizeof err), 0);
	assert_int_equal(n, 1);
	assert_string_equal(s[0].input, "state");
	assert_string_equal(s[0].output, "stateN");
	assert_int_equal(s[0].out_idx, 1);
	assert_int_equal(s[0].rank, 3);
	assert_int_equal(s[0].dims[0], 2);
	assert_int_equal(s[0].dims[1], 1);   /* symbolic batch -> 1 */
	assert_int_equal(s[0].dims[2], 128);
	assert_int_equal(total, 1024);
	node_state_free(s, n);

	/* No rules, no pairs: stateless. */
	assert_int_equal(node_state_match(ins, 3, outs, 2, NULL, NULL, 0, 0, &s, &n, &total, err, sizeof err), 0);
	assert_null(s);
	assert_int_equal(n, 0);

	/* Legacy: h <- hn, c <- cn, one region, in input order. */
	aidos_tensor lin[] = { T("input", AIDOS_DT_FLOAT, 2, -1, -1, 0), T("sr", AIDOS_DT_INT64, 0, 0, 0, 0),
			       T("h", AIDOS_DT_FLOAT, 3, 2, -1, 64), T("c", AIDOS_DT_FLOAT, 3, 2, -1, 64) };
	aidos_tensor lout[] = { T("output", AIDOS_DT_FLOAT, 2, -1, 1, 0), T("hn", AIDOS_DT_FLOAT, 3, 2, -1, 64),
				T("cn", AIDOS_DT_FLOAT, 3, 2, -1, 64) };
	assert_int_equal(node_state_match(lin, 4, lout, 3, NULL, NULL, 0, 1, &s, &n, &total, err, sizeof err), 0);
	assert_int_equal(n, 2);
	assert_string_equal(s[0].input, "h");
	assert_string_equal(s[0].output, "hn");
	assert_string_equal(s[1].input, "c");
	assert_string_equal(s[1].output, "cn");
	assert_int_equal(s[0].offset, 0);
	assert_int_equal(s[1].offset, 512);
	assert_int_equal(total, 1024);
	node_state_free(s, n);

	/* x_out, and a suffix whose shape does not fit is skipped. */
	aidos_tensor xin[] = { T("mem", AIDOS_DT_FLOAT, 2, 1, 16, 0) };
	aidos_tensor xout[] = { T("memN", AIDOS_DT_FLOAT, 2, 1, 8, 0), T("mem_out", AIDOS_DT_FLOAT, 2, 1, 16, 0) };
	assert_int_equal(node_state_match(xin, 1, xout, 2, NULL, NULL, 0, 1, &s, &n, &total, err, sizeof err), 0);
	assert_int_equal(n, 1);
	assert_string_equal(s[0].output, "mem_out");
	assert_int_equal(s[0].out_idx, 1);
	node_state_free(s, n);

	/* A dtype that differs does not pair; --stateful with no pair fails. */
	aidos_tensor din[] = { T("k", AIDOS_DT_INT64, 1, 4, 0, 0) };
	aidos_tensor dout[] = { T("kn", AIDOS_DT_FLOAT, 1, 4, 0, 0) };
	assert_int_equal(node_state_match(din, 1, dout, 1, NULL, NULL, 0, 1, &s, &n, &total, err, sizeof err),
			 AIDOS_E_INVALID);
	assert_non_null(strstr(err, "--state IN=OUT"));
	assert_null(s);
}

static void test_pairs_explicit(void **st)
{
	(void)st;
	node_state *s;
	int n;
	size_t total;
	char err[512];
	aidos_tensor ins[] = { T("flag", AIDOS_DT_BOOL, 1, 3, 0, 0), T("a", AIDOS_DT_FLOAT, 2, 2, 2, 0),
			       T("b", AIDOS_DT_INT64, 1, 3, 0, 0) };
	aidos_tensor outs[] = { T("flag2", AIDOS_DT_BOOL, 1, 3, 0, 0), T("a2", AIDOS_DT_FLOAT, 2, 2, -1, 0),
				T("b2", AIDOS_DT_INT64, 1, 3, 0, 0), T("f", AIDOS_DT_FLOAT, 1, 5, 0, 0) };
	const char *in1[] = { "flag", "a", "b" }, *out1[] = { "flag2", "a2", "b2" };
	assert_int_equal(node_state_match(ins, 3, outs, 4, in1, out1, 3, 0, &s, &n, &total, err, sizeof err), 0);
	assert_int_equal(n, 3);
	/* bool 3 bytes at 0, float aligned to 4, int64 aligned to 8 */
	assert_int_equal(s[0].offset, 0);
	assert_int_equal(s[0].bytes, 3);
	assert_int_equal(s[1].offset, 4);
	assert_int_equal(s[1].bytes, 16);
	assert_int_equal(s[2].offset, 24);
	assert_int_equal(total, 48);
	node_state_free(s, n);

	const char *bad_in[] = { "zz" }, *bad_out[] = { "a2" };
	assert_int_equal(node_state_match(ins, 3, outs, 4, bad_in, bad_out, 1, 0, &s, &n, &total, err, sizeof err),
			 AIDOS_E_NOTFOUND);
	assert_non_null(strstr(err, "no input 'zz'"));
	const char *i2[] = { "a" }, *o2[] = { "nope" };
	assert_int_equal(node_state_match(ins, 3, outs, 4, i2, o2, 1, 0, &s, &n, &total, err, sizeof err),
			 AIDOS_E_NOTFOUND);
	assert_non_null(strstr(err, "no output 'nope'"));
	const char *i3[] = { "b" }, *o3[] = { "f" };   /* int64 vs float */
	assert_int_equal(node_state_match(ins, 3, outs, 4, i3, o3, 1, 0, &s, &n, &total, err, sizeof err),
			 AIDOS_E_INVALID);
	assert_non_null(strstr(err, "dtypes differ"));
	const char *i4[] = { "a" }, *o4[] = { "f" };   /* [2,2] vs [5] */
	assert_int_equal(node_state_match(ins, 3, outs, 4, i4, o4, 1, 0, &s, &n, &total, err, sizeof err),
			 AIDOS_E_INVALID);
	assert_non_null(strstr(err, "shapes differ"));
	const char *i5[] = { "a", "a" }, *o5[] = { "a2", "a2" };
	assert_int_equal(node_state_match(ins, 3, outs, 4, i5, o5, 2, 0, &s, &n, &total, err, sizeof err),
			 AIDOS_E_INVALID);
	assert_non_null(strstr(err, "two pairs"));
	const char *i6[] = { "" }, *o6[] = { "a2" };
	assert_int_equal(node_state_match(ins, 3, outs, 4, i6, o6, 1, 0, &s, &n, &total, err, sizeof err),
			 AIDOS_E_INVALID);
	assert_int_equal(node_state_match(ins, 3, outs, 4, i6, o6, NODE_MAX_STATE + 1, 0, &s, &n, &total, err,
					  sizeof err), AIDOS_E_INVALID);
	/* A state too large for one region. */
	aidos_tensor big[] = { T("s", AIDOS_DT_FLOAT, 3, 1 << 20, 1 << 20, 4) };
	aidos_tensor bigo[] = { T("sN", AIDOS_DT_FLOAT, 3, 1 << 20, 1 << 20, 4) };
	assert_int_equal(node_state_match(big, 1, bigo, 1, NULL, NULL, 0, 1, &s, &n, &total, err, sizeof err),
			 AIDOS_E_RANGE);
	assert_null(s);
}

/* ---- checkpoints ---- */

static node_state *two_states(int *n, size_t *total)
{
	aidos_tensor ins[] = { T("h", AIDOS_DT_FLOAT, 3, 2, 1, 4), T("c", AIDOS_DT_FLOAT, 3, 2, 1, 4) };
	aidos_tensor outs[] = { T("hn", AIDOS_DT_FLOAT, 3, 2, 1, 4), T("cn", AIDOS_DT_FLOAT, 3, 2, 1, 4) };
	node_state *s;
	char err[256];
	assert_int_equal(node_state_match(ins, 2, outs, 2, NULL, NULL, 0, 1, &s, n, total, err, sizeof err), 0);
	return s;
}

static void test_ckpt_roundtrip(void **st)
{
	(void)st;
	int n;
	size_t total;
	node_state *s = two_states(&n, &total);
	assert_int_equal(total, 64);
	float region[16], back[16];
	for (int i = 0; i < 16; i++)
		region[i] = (float)i * 0.5f - 3.0f;
	node_ckpt c;
	assert_int_equal(node_ckpt_pack("vad", s, n, (uint8_t *)region, total, 42, &c), 0);
	assert_string_equal(c.msg.agent, "vad");
	assert_int_equal(c.msg.version, 42);
	assert_int_equal(c.msg.n_tensors, 2);
	assert_string_equal(c.msg.tensors[1]->name, "c");
	/* no padding between float states: the region's checksum is the
	 * checkpoint's */
	assert_true(c.msg.checksum == node_ctx_checksum(region, total));
	assert_true(c.msg.checksum == aidos_wire_context_checksum(&c.msg));
	/* the pack copied: changing the region does not change it */
	region[0] = 99.0f;
	assert_true(c.msg.checksum == aidos_wire_context_checksum(&c.msg));

	/* through the wire and back */
	size_t len = protobuf_c_message_get_packed_size(&c.msg.base);
	uint8_t *buf = malloc(len);
	protobuf_c_message_pack(&c.msg.base, buf);
	Aidos__AgentContext *u = aidos__agent_context__unpack(NULL, len, buf);
	assert_non_null(u);
	char err[256];
	memset(back, 0xff, sizeof back);
	assert_int_equal(node_ckpt_unpack(s, n, u, (uint8_t *)back, total, err, sizeof err), 0);
	assert_true(back[0] == -3.0f);
	assert_true(back[15] == 4.5f);

	/* a flipped byte: checksum refused, region untouched */
	float keep[16];
	memcpy(keep, back, sizeof keep);
	u->tensors[1]->data.data[3] ^= 0x40;
	assert_int_equal(node_ckpt_unpack(s, n, u, (uint8_t *)back, total, err, sizeof err), AIDOS_E_INVALID);
	assert_non_null(strstr(err, "checksum"));
	assert_memory_equal(keep, back, sizeof keep);
	u->tensors[1]->data.data[3] ^= 0x40;

	/* wrong name, dtype, dims, length, count */
	char *nm = u->tensors[0]->name;
	u->tensors[0]->name = "x";
	assert_int_equal(node_ckpt_unpack(s, n, u, (uint8_t *)back, total, err, sizeof err), AIDOS_E_INVALID);
	assert_non_null(strstr(err, "'x'"));
	u->tensors[0]->name = nm;
	u->tensors[0]->dtype = AIDOS_DT_INT32;
	assert_int_equal(node_ckpt_unpack(s, n, u, (uint8_t *)back, total, err, sizeof err), AIDOS_E_INVALID);
	u->tensors[0]->dtype = AIDOS_DT_FLOAT;
	u->tensors[0]->dims[2] = 5;
	assert_int_equal(node_ckpt_unpack(s, n, u, (uint8_t *)back, total, err, sizeof err), AIDOS_E_INVALID);
	assert_non_null(strstr(err, "shape"));
	u->tensors[0]->dims[2] = 4;
	u->tensors[0]->data.len -= 4;
	assert_int_equal(node_ckpt_unpack(s, n, u, (uint8_t *)back, total, err, sizeof err), AIDOS_E_INVALID);
	assert_non_null(strstr(err, "'h'"));
	u->tensors[0]->data.len += 4;
	u->n_tensors = 1;
	assert_int_equal(node_ckpt_unpack(s, n, u, (uint8_t *)back, total, err, sizeof err), AIDOS_E_INVALID);
	u->n_tensors = 2;
	assert_int_equal(node_ckpt_unpack(s, n, NULL, (uint8_t *)back, total, err, sizeof err), AIDOS_E_INVALID);
	assert_int_equal(node_ckpt_unpack(s, n, u, (uint8_t *)back, total, err, sizeof err), 0);

	/* the layout an exporter publishes */
	Aidos__Tensor *lay[2] = { u->tensors[0], u->tensors[1] };
	assert_int_equal(node_layout_check(s, n, total, lay, 2, total, err, sizeof err), 0);
	assert_int_equal(node_layout_check(s, n, total, lay, 2, total + 1, err, sizeof err), AIDOS_E_INVALID);
	assert_int_equal(node_layout_check(s, n, total, lay, 1, total, err, sizeof err), AIDOS_E_INVALID);
	Aidos__Tensor *swapped[2] = { u->tensors[1], u->tensors[0] };
	assert_int_equal(node_layout_check(s, n, total, swapped, 2, total, err, sizeof err), AIDOS_E_INVALID);

	aidos__agent_context__free_unpacked(u, NULL);
	free(buf);
	node_ckpt_fini(&c);
	node_state_free(s, n);
}

/* ---- the wire codec refuses malformed tensors ---- */

static void test_wire_malformed(void **st)
{
	(void)st;
	char err[256];
	aidos_tensor t;
	int64_t dims[9] = { 2, 3 };
	float data[6] = { 0 };
	Aidos__Tensor pb = AIDOS__TENSOR__INIT;
	pb.name = "x";
	pb.dtype = AIDOS_DT_FLOAT;
	pb.n_dims = 2;
	pb.dims = dims;
	pb.data.len = sizeof data;
	pb.data.data = (uint8_t *)data;
	assert_int_equal(aidos_wire_tensor_from_pb(&pb, &t, err, sizeof err), 0);
	assert_int_equal(t.rank, 2);
	assert_ptr_equal(t.data, data);

	pb.dtype = 10;   /* float16: not carried */
	assert_int_equal(aidos_wire_tensor_from_pb(&pb, &t, err, sizeof err), AIDOS_E_UNSUPPORTED);
	assert_non_null(strstr(err, "'x'"));
	pb.dtype = AIDOS_DT_FLOAT;
	pb.data.len = sizeof data - 4;
	assert_int_equal(aidos_wire_tensor_from_pb(&pb, &t, err, sizeof err), AIDOS_E_INVALID);
	assert_non_null(strstr(err, "'x'"));
	pb.data.len = sizeof data + 4;
	assert_int_equal(aidos_wire_tensor_from_pb(&pb, &t, err, sizeof err), AIDOS_E_INVALID);
	pb.data.len = sizeof data;
	dims[1] = -3;
	assert_int_equal(aidos_wire_tensor_from_pb(&pb, &t, err, sizeof err), AIDOS_E_INVALID);
	assert_non_null(strstr(err, "negative"));
	dims[1] = 3;
	pb.n_dims = 9;
	assert_int_equal(aidos_wire_tensor_from_pb(&pb, &t, err, sizeof err), AIDOS_E_INVALID);
	assert_non_null(strstr(err, "rank"));
	pb.n_dims = 2;
	dims[0] = INT64_MAX / 2;
	dims[1] = INT64_MAX / 2;
	assert_int_equal(aidos_wire_tensor_from_pb(&pb, &t, err, sizeof err), AIDOS_E_RANGE);
	dims[0] = 2;
	dims[1] = 3;
	pb.data.data = NULL;
	assert_int_equal(aidos_wire_tensor_from_pb(&pb, &t, err, sizeof err), AIDOS_E_INVALID);
	assert_int_equal(aidos_wire_tensor_from_pb(NULL, &t, err, sizeof err), AIDOS_E_INVALID);
	/* scalar: rank 0, one element */
	int64_t sr = 16000;
	Aidos__Tensor sc = AIDOS__TENSOR__INIT;
	sc.name = "sr";
	sc.dtype = AIDOS_DT_INT64;
	sc.data.len = 8;
	sc.data.data = (uint8_t *)&sr;
	assert_int_equal(aidos_wire_tensor_from_pb(&sc, &t, err, sizeof err), 0);
	assert_int_equal(t.rank, 0);

	aidos_tensor o = { .name = "y", .dtype = AIDOS_DT_FLOAT, .rank = -1 };
	Aidos__Tensor op = AIDOS__TENSOR__INIT;
	assert_int_equal(aidos_wire_tensor_to_pb(&o, &op, err, sizeof err), AIDOS_E_INVALID);
	o.rank = 1;
	o.dims[0] = 4;
	assert_int_equal(aidos_wire_tensor_to_pb(&o, &op, err, sizeof err), AIDOS_E_INVALID);   /* no data */
	assert_non_null(strstr(err, "'y'"));

	/* tags */
	assert_true((aidos_wire_req_tag(5) & AIDOS_TAG_KIND_MASK) == AIDOS_TAG_REQ);
	assert_true((aidos_wire_reply_tag(5) & AIDOS_TAG_KIND_MASK) == AIDOS_TAG_REPLY);
	assert_true((aidos_wire_reply_tag(~0ull) & AIDOS_TAG_CLIENT_MASK) == AIDOS_TAG_CLIENT_MASK);
	assert_true(aidos_wire_client_id() != 0);
}

/* ---- a cluster in this process ---- */

static char cache_dir[512], model_path[700], golden_dir[700], tmp_dir[64];

typedef struct cluster {
	coord *c;
	int cport;
	node *n[2];
	xport *x;          /* the client's */
	uint64_t cid;
	uint8_t *rbuf;
	uint64_t rid;
} cluster;

static cluster K;

static int have_model(void)
{
	struct stat s1, s2;
	return !stat(model_path, &s1) && !stat(golden_dir, &s2);
}

/* Started by the first cluster test (one cmocka group, so tests/run.sh
 * counts every test), stopped by the group's teardown. */
static void cluster_up(void)
{
	char err[512], addr[64], dir[128];
	if (K.c)
		return;
	snprintf(tmp_dir, sizeof tmp_dir, "/tmp/aidos-test-node-XXXXXX");
	assert_non_null(mkdtemp(tmp_dir));
	snprintf(dir, sizeof dir, "%s/coord", tmp_dir);
	coord_opts co = { .data_dir = dir, .quiet = 1 };
	assert_int_equal(coord_create(&co, &K.c, err, sizeof err), 0);
	assert_int_equal(coord_listen(K.c, "127.0.0.1:0", 4, &K.cport, err, sizeof err), 0);
	assert_int_equal(coord_start(K.c), 0);
	snprintf(addr, sizeof addr, "127.0.0.1:%d", K.cport);
	for (int i = 0; i < 2; i++) {
		char name[16], ndir[128];
		snprintf(name, sizeof name, "t%d", i + 1);
		snprintf(ndir, sizeof ndir, "%s/%s", tmp_dir, name);
		node_opts o = { .coord = addr, .name = name, .data_dir = ndir, .listen = "127.0.0.1:0",
				.transport = "tcp", .workers = 2, .rpc_threads = 4 };
		if (node_create(&o, &K.n[i], err, sizeof err))
			fail_msg("node_create: %s", err);
		if (node_start(K.n[i], err, sizeof err))
			fail_msg("node_start: %s", err);
	}
	xport_opts xo = { .tls = "tcp" };
	assert_int_equal(xport_create(&xo, &K.x, err, sizeof err), 0);
	K.cid = aidos_wire_client_id();
	K.rbuf = malloc(AIDOS_WIRE_MAX_MSG);
	assert_non_null(K.rbuf);
}

static int cluster_down(void **st)
{
	(void)st;
	if (!K.c)
		return 0;
	xport_destroy(K.x);
	for (int i = 0; i < 2; i++)
		node_destroy(K.n[i]);
	coord_destroy(K.c);
	free(K.rbuf);
	if (tmp_dir[0]) {
		char cmd[128];
		snprintf(cmd, sizeof cmd, "rm -rf %s", tmp_dir);
		if (system(cmd))
			print_message("    could not remove %s\n", tmp_dir);
	}
	memset(&K, 0, sizeof K);
	return 0;
}

#define SKIP_WITHOUT_MODEL()                                                                          \
	do {                                                                                          \
		if (!have_model()) {                                                                  \
			print_message("    skipped: %s or its golden data is missing (make models)\n", \
				      model_path);                                                    \
			skip();                                                                       \
		}                                                                                     \
		cluster_up();                                                                         \
	} while (0)

static int ccall(const char *method, const void *req, void **resp, char *err, size_t errlen)
{
	return coord_call(K.c, method, req, (ProtobufCMessage **)resp, err, errlen);
}

static node *node_named(const char *name)
{
	return !strcmp(name, "t1") ? K.n[0] : !strcmp(name, "t2") ? K.n[1] : NULL;
}

/* Loads golden chunk i of the VAD case: input and sr (tensors own data). */
typedef struct chunk {
	aidos_tensor in, sr, out, state;
	void *o[4];
} chunk;

static void chunk_load(int i, chunk *c)
{
	char p[900], err[256];
	memset(c, 0, sizeof *c);
	const char *f[4] = { "in/%02d_input.npy", "in/%02d_sr.npy", "out/%02d_output.npy", "out/%02d_stateN.npy" };
	aidos_tensor *t[4] = { &c->in, &c->sr, &c->out, &c->state };
	for (int k = 0; k < 4; k++) {
		char rel[64];
		snprintf(rel, sizeof rel, f[k], i);
		snprintf(p, sizeof p, "%s/%s", golden_dir, rel);
		if (aidos_npy_load(p, t[k], &c->o[k], err, sizeof err))
			fail_msg("%s", err);
	}
	c->in.name = "input";
	c->sr.name = "sr";
}

static void chunk_free(chunk *c)
{
	for (int k = 0; k < 4; k++)
		aidos_npy_free(c->o[k]);
}

static double maxdiff(const Aidos__Tensor *pb, const aidos_tensor *ref)
{
	aidos_tensor t;
	char err[256];
	assert_int_equal(aidos_wire_tensor_from_pb(pb, &t, err, sizeof err), 0);
	assert_int_equal(t.dtype, AIDOS_DT_FLOAT);
	size_t n = pb->data.len / 4;
	double m = 0;
	for (size_t i = 0; i < n; i++) {
		double d = fabs((double)((float *)t.data)[i] - (double)((float *)ref->data)[i]);
		m = d > m ? d : m;
	}
	return m;
}

/* One request over the data plane to the node the coordinator names; *rep
 * is the TransportReply (free with aidos__transport_reply__free_unpacked). */
static void dp_call(const char *agent, Aidos__Tensor **ins, size_t nin, const char *node_name,
		    Aidos__TransportReply **rep)
{
	Aidos__ResolveRequest rq = AIDOS__RESOLVE_REQUEST__INIT;
	Aidos__ResolveReply *rr = NULL;
	char err[512];
	rq.agent = (char *)agent;
	const void *addr;
	size_t alen;
	xport_ep *ep;
	Aidos__StatusRequest sq = AIDOS__STATUS_REQUEST__INIT;
	Aidos__StatusReply *sr = NULL;
	if (node_name) {
		assert_int_equal(node_call(node_named(node_name), "/aidos.Node/Status", &sq.base,
					   (ProtobufCMessage **)&sr, err, sizeof err), 0);
		assert_int_equal(xport_connect(K.x, sr->node->ucx_address.data, sr->node->ucx_address.len, &ep), 0);
	} else {
		assert_int_equal(ccall("/aidos.Coordinator/Resolve", &rq, (void **)&rr, err, sizeof err), 0);
		assert_int_equal(xport_connect(K.x, rr->node->ucx_address.data, rr->node->ucx_address.len, &ep), 0);
	}
	xport_address(K.x, &addr, &alen);
	Aidos__TransportHello h = AIDOS__TRANSPORT_HELLO__INIT;
	Aidos__InferRequest ir = AIDOS__INFER_REQUEST__INIT;
	Aidos__TransportRequest tr = AIDOS__TRANSPORT_REQUEST__INIT;
	h.ucx_address.data = (uint8_t *)addr;
	h.ucx_address.len = alen;
	h.client_id = K.cid;
	ir.agent = (char *)agent;
	ir.n_inputs = nin;
	ir.inputs = ins;
	ir.request_id = ++K.rid;
	tr.from = &h;
	tr.req = &ir;
	size_t n = protobuf_c_message_get_packed_size(&tr.base);
	uint8_t *buf = malloc(n);
	protobuf_c_message_pack(&tr.base, buf);
	assert_int_equal(xport_tag_send(K.x, ep, aidos_wire_req_tag(K.cid), buf, n, 5000), 0);
	free(buf);
	size_t got;
	uint64_t tag;
	assert_int_equal(xport_tag_recv(K.x, aidos_wire_reply_tag(K.cid), ~0ull, K.rbuf, AIDOS_WIRE_MAX_MSG, &got, &tag,
					 10000), 0);
	*rep = aidos__transport_reply__unpack(NULL, got, K.rbuf);
	assert_non_null(*rep);
	assert_true((*rep)->request_id == K.rid);
	if (rr)
		coord_reply_free(&rr->base);
	if (sr)
		aidos__status_reply__free_unpacked(sr, NULL);
}

static void pbt(Aidos__Tensor *pb, aidos_tensor *t)
{
	char err[256];
	aidos__tensor__init(pb);
	assert_int_equal(aidos_wire_tensor_to_pb(t, pb, err, sizeof err), 0);
}

/* Runs chunk i on vad over the data plane and checks it against ONNX
 * Runtime's output and state. Returns the node that answered. */
static void vad_chunk(int i, char *node_out, size_t nlen)
{
	chunk c;
	Aidos__Tensor a, b, *ins[2] = { &a, &b };
	Aidos__TransportReply *rep;
	Aidos__ResolveRequest rq = AIDOS__RESOLVE_REQUEST__INIT;
	Aidos__ResolveReply *rr = NULL;
	char err[256];
	chunk_load(i, &c);
	pbt(&a, &c.in);
	pbt(&b, &c.sr);
	dp_call("vad", ins, 2, NULL, &rep);
	if (rep->status)
		fail_msg("chunk %d: %d %s", i, rep->status, rep->error);
	assert_non_null(rep->reply);
	assert_int_equal(rep->reply->n_outputs, 2);
	assert_string_equal(rep->reply->outputs[0]->name, "output");
	assert_string_equal(rep->reply->outputs[1]->name, "stateN");
	double d0 = maxdiff(rep->reply->outputs[0], &c.out), d1 = maxdiff(rep->reply->outputs[1], &c.state);
	if (d0 > 1e-4 || d1 > 1e-4)
		fail_msg("chunk %d: output differs from ONNX Runtime's by %g, state by %g", i, d0, d1);
	aidos__transport_reply__free_unpacked(rep, NULL);
	rq.agent = "vad";
	assert_int_equal(ccall("/aidos.Coordinator/Resolve", &rq, (void **)&rr, err, sizeof err), 0);
	snprintf(node_out, nlen, "%s", rr->node->name);
	coord_reply_free(&rr->base);
	chunk_free(&c);
}

static void test_cluster_place_infer(void **st)
{
	(void)st;
	SKIP_WITHOUT_MODEL();
	char err[512], on[16];
	Aidos__AgentInfo ai = AIDOS__AGENT_INFO__INIT;
	Aidos__PlaceRequest pr = AIDOS__PLACE_REQUEST__INIT;
	Aidos__PlaceReply *prep = NULL;
	ai.name = "vad";
	ai.model_path = model_path;
	ai.stateful = 1;
	ai.priority = 1;
	pr.agent = &ai;
	if (ccall("/aidos.Coordinator/Place", &pr, (void **)&prep, err, sizeof err))
		fail_msg("place: %s", err);
	coord_reply_free(&prep->base);
	for (int i = 0; i < 3; i++)
		vad_chunk(i, on, sizeof on);

	/* The node reports the pairs it found. */
	Aidos__StatusRequest sq = AIDOS__STATUS_REQUEST__INIT;
	Aidos__StatusReply *sr;
	assert_int_equal(node_call(node_named(on), "/aidos.Node/Status", &sq.base, (ProtobufCMessage **)&sr, err,
				   sizeof err), 0);
	assert_int_equal(sr->n_agents, 1);
	assert_int_equal(sr->agents[0]->n_state, 1);
	assert_string_equal(sr->agents[0]->state[0]->input, "state");
	assert_string_equal(sr->agents[0]->state[0]->output, "stateN");
	assert_int_equal(sr->agents[0]->context_version, 3);
	assert_int_equal(sr->agents[0]->requests, 3);
	assert_true(sr->node->ucx_address.len > 0);
	assert_string_equal(sr->node->transport, "ucx:tcp");
	aidos__status_reply__free_unpacked(sr, NULL);

	/* Spawning it again with the same model is idempotent. */
	Aidos__SpawnRequest sp = AIDOS__SPAWN_REQUEST__INIT;
	Aidos__SpawnReply *spr;
	sp.agent = &ai;
	assert_int_equal(node_call(node_named(on), "/aidos.Node/Spawn", &sp.base, (ProtobufCMessage **)&spr, err,
				   sizeof err), 0);
	assert_int_equal(spr->agent->context_version, 3);
	aidos__spawn_reply__free_unpacked(spr, NULL);
}

/* Every bad request gets a clear error; the node keeps serving. */
static void test_cluster_bad_requests(void **st)
{
	(void)st;
	SKIP_WITHOUT_MODEL();
	chunk c;
	Aidos__Tensor a, b, x, *ins[3] = { &a, &b, &x };
	Aidos__TransportReply *rep;
	char on[16];
	chunk_load(3, &c);
	pbt(&a, &c.in);
	pbt(&b, &c.sr);

	dp_call("nobody", ins, 2, "t1", &rep);
	assert_int_equal(rep->status, AIDOS_E_NOTFOUND);
	assert_non_null(strstr(rep->error, "'nobody'"));
	aidos__transport_reply__free_unpacked(rep, NULL);

	/* wrong dtype */
	b.dtype = AIDOS_DT_INT32;
	b.data.len = 4;
	dp_call("vad", ins, 2, NULL, &rep);
	assert_int_equal(rep->status, AIDOS_E_INVALID);
	assert_non_null(strstr(rep->error, "'sr'"));
	aidos__transport_reply__free_unpacked(rep, NULL);
	pbt(&b, &c.sr);

	/* data length that does not match the shape */
	a.data.len -= 4;
	dp_call("vad", ins, 2, NULL, &rep);
	assert_int_equal(rep->status, AIDOS_E_INVALID);
	assert_non_null(strstr(rep->error, "'input'"));
	aidos__transport_reply__free_unpacked(rep, NULL);
	a.data.len += 4;

	/* wrong rank */
	int64_t d3[3] = { 1, 1, c.in.dims[1] };
	a.n_dims = 3;
	a.dims = d3;
	dp_call("vad", ins, 2, NULL, &rep);
	assert_int_equal(rep->status, AIDOS_E_INVALID);
	assert_non_null(strstr(rep->error, "'input'"));
	aidos__transport_reply__free_unpacked(rep, NULL);
	pbt(&a, &c.in);

	/* missing input, unknown input, the state itself */
	dp_call("vad", ins, 1, NULL, &rep);
	assert_int_equal(rep->status, AIDOS_E_INVALID);
	assert_non_null(strstr(rep->error, "'sr'"));
	aidos__transport_reply__free_unpacked(rep, NULL);
	float z[256] = { 0 };
	aidos_tensor xs = { .name = "bogus", .dtype = AIDOS_DT_FLOAT, .rank = 1, .dims = { 4 }, .data = z };
	pbt(&x, &xs);
	dp_call("vad", ins, 3, NULL, &rep);
	assert_int_equal(rep->status, AIDOS_E_INVALID);
	assert_non_null(strstr(rep->error, "'bogus'"));
	aidos__transport_reply__free_unpacked(rep, NULL);
	aidos_tensor ss = { .name = "state", .dtype = AIDOS_DT_FLOAT, .rank = 3, .dims = { 2, 1, 128 }, .data = z };
	pbt(&x, &ss);
	dp_call("vad", ins, 3, NULL, &rep);
	assert_int_equal(rep->status, AIDOS_E_INVALID);
	assert_non_null(strstr(rep->error, "state"));
	aidos__transport_reply__free_unpacked(rep, NULL);

	/* a malformed message and an oversized one: dropped, logged */
	Aidos__ResolveRequest rq = AIDOS__RESOLVE_REQUEST__INIT;
	Aidos__ResolveReply *rr;
	char err[256];
	xport_ep *ep;
	rq.agent = "vad";
	assert_int_equal(ccall("/aidos.Coordinator/Resolve", &rq, (void **)&rr, err, sizeof err), 0);
	assert_int_equal(xport_connect(K.x, rr->node->ucx_address.data, rr->node->ucx_address.len, &ep), 0);
	coord_reply_free(&rr->base);
	uint8_t junk[64];
	memset(junk, 0xee, sizeof junk);
	assert_int_equal(xport_tag_send(K.x, ep, aidos_wire_req_tag(K.cid), junk, sizeof junk, 5000), 0);
	size_t big = AIDOS_WIRE_MAX_MSG + 16;
	uint8_t *huge = calloc(1, big);
	assert_non_null(huge);
	assert_int_equal(xport_tag_send(K.x, ep, aidos_wire_req_tag(K.cid), huge, big, 20000), 0);
	free(huge);

	/* ...and the next good request is answered, state intact (chunk 3). */
	vad_chunk(3, on, sizeof on);
	chunk_free(&c);
}

/* Node.Infer over gRPC serves the same requests. */
static void test_cluster_grpc_infer(void **st)
{
	(void)st;
	SKIP_WITHOUT_MODEL();
	chunk c;
	Aidos__Tensor a, b, *ins[2] = { &a, &b };
	Aidos__InferRequest ir = AIDOS__INFER_REQUEST__INIT;
	Aidos__InferReply *rep;
	Aidos__ResolveRequest rq = AIDOS__RESOLVE_REQUEST__INIT;
	Aidos__ResolveReply *rr;
	char err[512];
	rq.agent = "vad";
	assert_int_equal(ccall("/aidos.Coordinator/Resolve", &rq, (void **)&rr, err, sizeof err), 0);
	node *n = node_named(rr->node->name);
	coord_reply_free(&rr->base);
	chunk_load(4, &c);
	pbt(&a, &c.in);
	pbt(&b, &c.sr);
	ir.agent = "vad";
	ir.n_inputs = 2;
	ir.inputs = ins;
	assert_int_equal(node_call(n, "/aidos.Node/Infer", &ir.base, (ProtobufCMessage **)&rep, err, sizeof err), 0);
	assert_true(maxdiff(rep->outputs[0], &c.out) < 1e-4);
	assert_true(maxdiff(rep->outputs[1], &c.state) < 1e-4);
	aidos__infer_reply__free_unpacked(rep, NULL);
	ir.agent = "ghost";
	assert_int_equal(node_call(n, "/aidos.Node/Infer", &ir.base, (ProtobufCMessage **)&rep, err, sizeof err),
			 AIDOS_E_NOTFOUND);
	assert_non_null(strstr(err, "'ghost'"));
	ir.agent = "../etc";
	assert_int_equal(node_call(n, "/aidos.Node/Infer", &ir.base, (ProtobufCMessage **)&rep, err, sizeof err),
			 AIDOS_E_INVALID);
	chunk_free(&c);
}

/* An import whose pulled bytes fail the checksum or whose length is wrong
 * is refused and the agent is not resumed; then a real migration. */
static void test_cluster_migrate(void **st)
{
	(void)st;
	SKIP_WITHOUT_MODEL();
	char err[512], on[16], other[16];
	Aidos__ResolveRequest rq = AIDOS__RESOLVE_REQUEST__INIT;
	Aidos__ResolveReply *rr;
	rq.agent = "vad";
	assert_int_equal(ccall("/aidos.Coordinator/Resolve", &rq, (void **)&rr, err, sizeof err), 0);
	snprintf(on, sizeof on, "%s", rr->node->name);
	snprintf(other, sizeof other, "%s", strcmp(on, "t1") ? "t1" : "t2");
	Aidos__AgentInfo *ai = rr->agent;

	Aidos__ExportContextRequest eq = AIDOS__EXPORT_CONTEXT_REQUEST__INIT;
	Aidos__ExportContextReply *er;
	eq.agent = "vad";
	eq.freeze = 0;
	assert_int_equal(node_call(node_named(on), "/aidos.Node/ExportContext", &eq.base, (ProtobufCMessage **)&er,
				   err, sizeof err), 0);
	assert_int_equal(er->length, 1024);
	assert_int_equal(er->version, 5);
	assert_int_equal(er->n_layout, 1);

	Aidos__ImportContextRequest iq = AIDOS__IMPORT_CONTEXT_REQUEST__INIT;
	Aidos__ImportContextReply *ir;
	iq.agent = ai;
	iq.from = er;
	er->checksum ^= 1;
	assert_int_equal(node_call(node_named(other), "/aidos.Node/ImportContext", &iq.base,
				   (ProtobufCMessage **)&ir, err, sizeof err), AIDOS_E_INVALID);
	assert_non_null(strstr(err, "checksum"));
	er->checksum ^= 1;
	er->length = 1020;
	assert_int_equal(node_call(node_named(other), "/aidos.Node/ImportContext", &iq.base,
				   (ProtobufCMessage **)&ir, err, sizeof err), AIDOS_E_INVALID);
	er->length = 1024;
	er->rkey.data[er->rkey.len / 2] ^= 0x5a;   /* a corrupted remote key */
	assert_int_not_equal(node_call(node_named(other), "/aidos.Node/ImportContext", &iq.base,
				       (ProtobufCMessage **)&ir, err, sizeof err), 0);
	er->rkey.data[er->rkey.len / 2] ^= 0x5a;
	/* not resumed there */
	Aidos__NodeKillRequest kq = AIDOS__NODE_KILL_REQUEST__INIT;
	Aidos__NodeKillReply *kr;
	kq.agent = "vad";
	assert_int_equal(node_call(node_named(other), "/aidos.Node/Kill", &kq.base, (ProtobufCMessage **)&kr, err,
				   sizeof err), AIDOS_E_NOTFOUND);
	aidos__export_context_reply__free_unpacked(er, NULL);
	coord_reply_free(&rr->base);

	/* The real thing, through the coordinator. */
	Aidos__MigrateRequest mq = AIDOS__MIGRATE_REQUEST__INIT;
	Aidos__MigrateReply *mr;
	mq.agent = "vad";
	mq.to_node = other;
	if (ccall("/aidos.Coordinator/Migrate", &mq, (void **)&mr, err, sizeof err))
		fail_msg("migrate: %s", err);
	assert_int_equal(mr->context_bytes, 1024);
	assert_string_equal(mr->agent->node, other);
	coord_reply_free(&mr->base);
	/* the source dropped it */
	assert_int_equal(node_call(node_named(on), "/aidos.Node/Kill", &kq.base, (ProtobufCMessage **)&kr, err,
				   sizeof err), AIDOS_E_NOTFOUND);
	/* the state came along: chunks 5 and 6 match ONNX Runtime */
	char now[16];
	vad_chunk(5, now, sizeof now);
	assert_string_equal(now, other);
	vad_chunk(6, now, sizeof now);
}

static void test_cluster_kill(void **st)
{
	(void)st;
	SKIP_WITHOUT_MODEL();
	char err[512];
	Aidos__KillRequest kq = AIDOS__KILL_REQUEST__INIT;
	Aidos__KillReply *kr;
	kq.agent = "vad";
	assert_int_equal(ccall("/aidos.Coordinator/Kill", &kq, (void **)&kr, err, sizeof err), 0);
	coord_reply_free(&kr->base);
	for (int i = 0; i < 2; i++) {
		Aidos__StatusRequest sq = AIDOS__STATUS_REQUEST__INIT;
		Aidos__StatusReply *sr;
		assert_int_equal(node_call(K.n[i], "/aidos.Node/Status", &sq.base, (ProtobufCMessage **)&sr, err,
					   sizeof err), 0);
		assert_int_equal(sr->n_agents, 0);
		aidos__status_reply__free_unpacked(sr, NULL);
	}
	/* unknown methods and requests of the wrong type */
	Aidos__StatusRequest sq = AIDOS__STATUS_REQUEST__INIT;
	ProtobufCMessage *r;
	assert_int_equal(node_call(K.n[0], "/aidos.Node/Nope", &sq.base, &r, err, sizeof err), AIDOS_E_UNSUPPORTED);
	assert_int_equal(node_call(K.n[0], "/aidos.Node/Kill", &sq.base, &r, err, sizeof err), AIDOS_E_INVALID);
}


/* ---- the node kernel, standalone in this process ---- */

#include <semaphore.h>
#include "node/dispatch.h"
#include "node/store.h"

static char jarvis[700], emb[700];

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int have_kernel_models(void)
{
	struct stat s1, s2, s3;
	return !stat(jarvis, &s1) && !stat(emb, &s2) && !stat(model_path, &s3);
}

#define SKIP_WITHOUT_KERNEL_MODELS()                                                          \
	do {                                                                                  \
		if (!have_kernel_models()) {                                                  \
			print_message("    skipped: %s or %s is missing (make models)\n", jarvis, emb); \
			skip();                                                               \
		}                                                                             \
	} while (0)

/* A standalone node on dir (created), `workers` dispatcher workers. */
static node *standalone(const char *dir, int workers)
{
	char err[512];
	node *n;
	node_opts o = { .name = "solo", .data_dir = dir, .run_workers = workers, .pin = 0 };
	if (node_create(&o, &n, err, sizeof err))
		fail_msg("node_create: %s", err);
	if (node_start(n, err, sizeof err))
		fail_msg("node_start: %s", err);
	return n;
}

static void mkdir_tmp(char *dir, size_t len)
{
	snprintf(dir, len, "/tmp/aidos-test-kern-XXXXXX");
	assert_non_null(mkdtemp(dir));
}

static void rm_tmp(const char *dir)
{
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	if (system(cmd))
		print_message("    could not remove %s\n", dir);
}

static void spawn_ok(node *n, const char *name, const char *model, int prio, uint64_t quota)
{
	char err[600];
	node_spawn_spec sp = { .name = name, .model_path = model, .priority = prio, .quota = quota };
	if (node_agent_spawn_local(n, &sp, err, sizeof err))
		fail_msg("spawn %s: %s", name, err);
}

/* Jobs recorded in completion order; job 0 can hold the worker (gate). */
#define NJ 1100
typedef struct rec {
	node_job j[NJ];
	aidos_tensor out[NJ][2];
	int rc[NJ];
	char err[NJ][160];
	int order[NJ];
	int n;               /* atomic */
	sem_t gate, finished;
	int gated;           /* job index that waits on the gate, -1 none */
	float outv[NJ];
} rec;

static void rec_done(node_job *j, int rc, const char *err)
{
	rec *r = j->user;
	int i = (int)(j - r->j);
	if (i == r->gated)
		while (sem_wait(&r->gate) && errno == EINTR)
			;
	r->rc[i] = rc;
	snprintf(r->err[i], sizeof r->err[i], "%s", err ? err : "");
	if (!rc && j->nout >= 1 && j->out[0].dtype == AIDOS_DT_FLOAT)
		r->outv[i] = ((const float *)j->out[0].data)[0];
	r->order[__atomic_fetch_add(&r->n, 1, __ATOMIC_ACQ_REL)] = i;
	sem_post(&r->finished);
}

static void rec_init(rec *r)
{
	memset(r, 0, sizeof *r);
	sem_init(&r->gate, 0, 0);
	sem_init(&r->finished, 0, 0);
	r->gated = -1;
}

static void rec_wait(rec *r, int count)
{
	for (int k = 0; k < count; k++) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 120;
		int w;
		while ((w = sem_timedwait(&r->finished, &ts)) && errno == EINTR)
			;
		assert_int_equal(w, 0);
	}
}

static float jin[16 * 96], ein[8 * 76 * 32];

static void job_set(rec *r, int i, node_agent *a, aidos_tensor *in, int prio, uint64_t deadline)
{
	node_job *j = &r->j[i];
	memset(j, 0, sizeof *j);
	j->agent = a;
	j->in = in;
	j->nin = 1;
	j->out = r->out[i];
	j->nout = 2;
	j->priority = prio;
	j->deadline_ns = deadline;
	j->done = rec_done;
	j->user = r;
}

static aidos_tensor T_j = { .name = "x.1", .dtype = AIDOS_DT_FLOAT, .rank = 3, .dims = { 1, 16, 96 }, .data = jin };
static aidos_tensor T_e = { .name = "input_1", .dtype = AIDOS_DT_FLOAT, .rank = 4, .dims = { 8, 76, 32, 1 }, .data = ein };

/* Waits until the gated request, the only one submitted, has left the
 * queue: the single worker picked it and holds in its done(). (A worker
 * still closing the previous request may count as running a moment
 * longer, so "running" alone is not the sign.) */
static void wait_running(node *n, uint32_t k)
{
	for (int t = 0; t < 60000; t++) {
		node_stat st;
		node_stats(n, &st);
		if (st.disp.queued == 0 && st.disp.running >= k)
			return;
		usleep(1000);
	}
	fail_msg("the dispatcher never started the gated request");
}

static void test_kern_agents(void **st)
{
	SKIP_WITHOUT_KERNEL_MODELS();
	char dir[64], err[600];
	mkdir_tmp(dir, sizeof dir);
	node *n = standalone(dir, 1);
	spawn_ok(n, "j1", jarvis, 5, 0);
	spawn_ok(n, "j2", jarvis, 1, 32 << 20);
	node_spawn_spec sp = { .name = "v1", .model_path = model_path, .stateful = 1, .deadline_ms = 250 };
	assert_int_equal(node_agent_spawn_local(n, &sp, err, sizeof err), 0);
	/* A name twice, a relative path, an unknown device: refused. */
	assert_int_equal(node_agent_spawn_local(n, &sp, err, sizeof err), AIDOS_E_INVALID);
	node_spawn_spec bad = { .name = "x", .model_path = "rel.onnx" };
	assert_int_equal(node_agent_spawn_local(n, &bad, err, sizeof err), AIDOS_E_INVALID);
	bad = (node_spawn_spec){ .name = "x", .model_path = jarvis, .device = "tpu" };
	assert_int_equal(node_agent_spawn_local(n, &bad, err, sizeof err), AIDOS_E_INVALID);

	node_agent_stat *l;
	int cnt;
	assert_int_equal(node_agents_list(n, &l, &cnt), 0);
	assert_int_equal(cnt, 3);
	assert_string_equal(l[0].name, "j1");
	assert_string_equal(l[2].name, "v1");
	assert_string_equal(node_agent_state_name(l[0].state), "idle");
	assert_int_equal(l[1].pool.quota, 32 << 20);
	assert_int_equal(l[2].deadline_ms, 250);
	assert_true(l[2].stateful);
	assert_true(l[2].pool.used >= l[2].context_bytes);   /* the context region is in its pool */
	pool_free(l);
	/* j1 and j2 share one model: one mapping */
	node_stat ns;
	node_stats(n, &ns);
	assert_int_equal(ns.agents, 3);
	assert_int_equal(ns.models, 2);
	node_agent *a = node_agent_find(n, "j1");
	assert_non_null(a);
	node_agent *b = node_agent_find(n, "j2");
	assert_ptr_equal(a->model, b->model);
	assert_ptr_equal(node_model_handle(a->model), node_model_handle(b->model));

	/* Outputs through the dispatcher equal a direct session run. */
	for (int i = 0; i < 16 * 96; i++)
		jin[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
	static rec r;
	rec_init(&r);
	job_set(&r, 0, a, &T_j, NODE_PRIO_AGENT, 0);
	assert_int_equal(node_run(n, &r.j[0], err, sizeof err), 0);
	assert_int_equal(r.rc[0], 0);
	assert_int_equal(r.j[0].nout, 1);
	aidos_session *s;
	assert_int_equal(aidos_session_create(node_model_handle(a->model), NULL, &s, err, sizeof err), 0);
	assert_int_equal(aidos_session_run(s, 1, &T_j), 0);
	aidos_tensor o;
	aidos_session_output(s, 0, &o);
	assert_memory_equal(&r.outv[0], o.data, sizeof(float));
	aidos_session_destroy(s);
	/* node_submit_here: an idle node runs it on this thread (1, done()
	 * called before it returns), with the same outputs. */
	float ref0 = r.outv[0];   /* node_run's, equal to the session's */
	r.rc[0] = -1;
	r.outv[0] = -1;
	for (;;) {   /* the worker may still be closing node_run's request */
		node_stat ws;
		node_stats(n, &ws);
		if (!ws.disp.running && !ws.disp.queued)
			break;
		usleep(1000);
	}
	job_set(&r, 0, a, &T_j, NODE_PRIO_AGENT, 0);
	assert_int_equal(node_submit_here(n, &r.j[0], err, sizeof err), 1);
	assert_int_equal(r.rc[0], 0);
	assert_memory_equal(&r.outv[0], &ref0, sizeof(float));
	/* Steady state: no allocation per request through the dispatcher. */
	pool_stats p0, p1;
	pool_get_stats(&p0);
	for (int i = 0; i < 200; i++) {
		job_set(&r, 0, a, &T_j, NODE_PRIO_AGENT, 0);
		assert_int_equal(node_run(n, &r.j[0], err, sizeof err), 0);
	}
	pool_get_stats(&p1);
	assert_int_equal(p1.allocs, p0.allocs);

	/* Suspend: refused while suspended, served again after. */
	assert_int_equal(node_agent_suspend_local(n, "j2", 1, err, sizeof err), 0);
	node_agent_stat as;
	assert_int_equal(node_agent_info(n, "j2", &as), 0);
	assert_string_equal(node_agent_state_name(as.state), "suspended");
	job_set(&r, 1, b, &T_j, NODE_PRIO_AGENT, 0);
	assert_int_equal(node_run(n, &r.j[1], err, sizeof err), AIDOS_E_BUSY);
	assert_non_null(strstr(err, "suspended"));
	assert_int_equal(node_agent_suspend_local(n, "j2", 0, err, sizeof err), 0);
	assert_int_equal(node_run(n, &r.j[1], err, sizeof err), 0);
	assert_int_equal(r.rc[1], 0);
	/* A state tensor sent by the client is refused. */
	aidos_tensor vst = { .name = "state", .dtype = AIDOS_DT_FLOAT, .rank = 3, .dims = { 2, 1, 128 }, .data = ein };
	node_agent *v = node_agent_find(n, "v1");
	job_set(&r, 2, v, &vst, NODE_PRIO_AGENT, 0);
	assert_int_equal(node_submit(n, &r.j[2], err, sizeof err), AIDOS_E_INVALID);

	/* Kill: gone from the table, from the store; requests to a held
	 * reference fail with NOTFOUND. */
	assert_int_equal(node_agent_kill_local(n, "j1", err, sizeof err), 0);
	assert_int_equal(node_agent_kill_local(n, "j1", err, sizeof err), AIDOS_E_NOTFOUND);
	assert_int_equal(node_agent_info(n, "j1", &as), AIDOS_E_NOTFOUND);
	job_set(&r, 3, a, &T_j, NODE_PRIO_AGENT, 0);
	assert_int_equal(node_run(n, &r.j[3], err, sizeof err), AIDOS_E_NOTFOUND);
	node_agent_unref(a);
	node_agent_unref(b);
	node_agent_unref(v);
	char path[128];
	snprintf(path, sizeof path, "%s/agents/j1.agent", dir);
	assert_int_not_equal(access(path, F_OK), 0);
	snprintf(path, sizeof path, "%s/agents/j2.agent", dir);
	assert_int_equal(access(path, F_OK), 0);
	node_destroy(n);
	rm_tmp(dir);
}

/* Over gRPC (Node.Infer on a standalone node's own server) a client gets
 * the exact code: UNAVAILABLE with its "aidos-code" trailer is
 * AIDOS_E_BUSY (a suspended agent), not a refused connection;
 * RESOURCE_EXHAUSTED with it is AIDOS_E_QUOTA, not out of memory. */
static void test_kern_grpc_codes(void **st)
{
	SKIP_WITHOUT_KERNEL_MODELS();
	char dir[64], err[600];
	mkdir_tmp(dir, sizeof dir);
	node *n;
	node_opts o = { .name = "solo", .data_dir = dir, .run_workers = 1, .listen = "127.0.0.1:0" };
	assert_int_equal(node_create(&o, &n, err, sizeof err), 0);
	assert_int_equal(node_start(n, err, sizeof err), 0);
	spawn_ok(n, "j", jarvis, 0, 0);
	spawn_ok(n, "small", jarvis, 0, 64 << 10);
	for (int i = 0; i < 16 * 96; i++)
		jin[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
	rpc_client *rc;
	Aidos__Tensor pt, *pts[1] = { &pt };
	Aidos__InferRequest ir = AIDOS__INFER_REQUEST__INIT;
	ProtobufCMessage *rep = NULL;
	pbt(&pt, &T_j);
	ir.n_inputs = 1;
	ir.inputs = pts;
	assert_int_equal(rpc_client_create(node_rpc_addr(n), &rc), 0);
	ir.agent = "j";
	assert_int_equal(rpc_call(rc, "/aidos.Node/Infer", &ir.base, &aidos__infer_reply__descriptor, &rep, 5000, err,
				  sizeof err),
			 0);
	protobuf_c_message_free_unpacked(rep, NULL);
	assert_int_equal(node_agent_suspend_local(n, "j", 1, err, sizeof err), 0);
	assert_int_equal(rpc_call(rc, "/aidos.Node/Infer", &ir.base, &aidos__infer_reply__descriptor, &rep, 5000, err,
				  sizeof err),
			 AIDOS_E_BUSY);
	assert_non_null(strstr(err, "UNAVAILABLE"));
	assert_non_null(strstr(err, "suspended"));
	ir.agent = "small";
	assert_int_equal(rpc_call(rc, "/aidos.Node/Infer", &ir.base, &aidos__infer_reply__descriptor, &rep, 5000, err,
				  sizeof err),
			 AIDOS_E_QUOTA);
	assert_non_null(strstr(err, "RESOURCE_EXHAUSTED"));
	assert_non_null(strstr(err, "quota"));
	/* the status mappings both ways */
	assert_int_equal(rpc_code_to_status(AIDOS_E_DEADLINE), GRPC_STATUS_DEADLINE_EXCEEDED);
	assert_int_equal(rpc_code_to_status(AIDOS_E_BUSY), GRPC_STATUS_UNAVAILABLE);
	assert_int_equal(rpc_code_to_status(AIDOS_E_QUOTA), GRPC_STATUS_RESOURCE_EXHAUSTED);
	rpc_client_destroy(rc);
	node_destroy(n);
	rm_tmp(dir);
}

static void test_kern_priority_deadline(void **st)
{
	SKIP_WITHOUT_KERNEL_MODELS();
	char dir[64], err[600];
	mkdir_tmp(dir, sizeof dir);
	node *n = standalone(dir, 1);   /* one worker: a strict order to check */
	spawn_ok(n, "lo", emb, 1, 0);
	spawn_ok(n, "lo2", emb, 1, 0);
	spawn_ok(n, "hi", jarvis, 10, 0);
	node_agent *lo = node_agent_find(n, "lo"), *lo2 = node_agent_find(n, "lo2"), *hi = node_agent_find(n, "hi");
	static rec r;
	rec_init(&r);
	/* Warm up: estimates known. */
	job_set(&r, 0, lo, &T_e, NODE_PRIO_AGENT, 0);
	assert_int_equal(node_run(n, &r.j[0], err, sizeof err), 0);
	job_set(&r, 0, hi, &T_j, NODE_PRIO_AGENT, 0);
	assert_int_equal(node_run(n, &r.j[0], err, sizeof err), 0);
	assert_int_equal(r.rc[0], 0);

	/* Job 0 (lo) holds the only worker; then a mix is queued. */
	rec_init(&r);
	r.gated = 0;
	job_set(&r, 0, lo, &T_e, NODE_PRIO_AGENT, 0);
	assert_int_equal(node_submit(n, &r.j[0], err, sizeof err), 0);
	wait_running(n, 1);
	uint64_t now = mono_ns(), S = 1000000000ull;
	/* L H L L H L L H L, the highs with deadlines 30 s, 10 s, 20 s away */
	const char *pat = "LHLLHLLHL";
	uint64_t dl[] = { 30 * S, 10 * S, 20 * S };
	int h = 0;
	for (int i = 1; i <= 9; i++) {
		if (pat[i - 1] == 'H')
			job_set(&r, i, hi, &T_j, NODE_PRIO_AGENT, now + dl[h++]);
		else
			job_set(&r, i, lo2, &T_e, NODE_PRIO_AGENT, 0);
		assert_int_equal(node_submit(n, &r.j[i], err, sizeof err), 0);
	}
	/* Admission: a deadline 1 us away cannot be met behind a running
	 * request whose estimate is known: refused now, explicitly. */
	job_set(&r, 10, hi, &T_j, NODE_PRIO_AGENT, mono_ns() + 1000);
	assert_int_equal(node_submit(n, &r.j[10], err, sizeof err), AIDOS_E_DEADLINE);
	assert_non_null(strstr(err, "deadline"));
	/* Fill the queue: the request past NODE_QUEUE_MAX gets BUSY. */
	int k = 11, busy = 0;
	for (; k < NJ && !busy; k++) {
		job_set(&r, k, hi, &T_j, 0, 0);
		int rc = node_submit(n, &r.j[k], err, sizeof err);
		if (rc) {
			assert_int_equal(rc, AIDOS_E_BUSY);
			assert_non_null(strstr(err, "full"));
			busy = 1;
		}
	}
	assert_true(busy);
	int queued = 9 + (k - 1 - 11);
	assert_int_equal(queued, NODE_QUEUE_MAX);
	sem_post(&r.gate);
	rec_wait(&r, 1 + queued);
	/* Order: the held one, the highs (priority 10) by deadline (10 s: job
	 * 5, 20 s: job 8, 30 s: job 2), the lows (priority 1) in arrival
	 * order, then the priority-0 fill. */
	int want[] = { 0, 5, 8, 2, 1, 3, 4, 6, 7, 9 };
	for (int i = 0; i < 10; i++)
		assert_int_equal(r.order[i], want[i]);
	for (int i = 10; i < 1 + queued; i++)
		assert_true(r.order[i] >= 11);
	for (int i = 0; i < 1 + queued; i++)
		assert_int_equal(r.rc[r.order[i]], 0);

	/* A request admitted on its estimate whose deadline passes while it
	 * waits is answered with DEADLINE, not run and not dropped. */
	rec_init(&r);
	r.gated = 0;
	job_set(&r, 0, lo, &T_e, NODE_PRIO_AGENT, 0);
	assert_int_equal(node_submit(n, &r.j[0], err, sizeof err), 0);
	wait_running(n, 1);
	node_agent_stat as;
	node_agent_info(n, "lo", &as);
	job_set(&r, 1, hi, &T_j, NODE_PRIO_AGENT, mono_ns() + 2 * as.est_ns + 200000000ull);
	int rc = node_submit(n, &r.j[1], err, sizeof err);
	assert_true(rc == 0 || rc == AIDOS_E_DEADLINE);   /* refused at once only on a stalled machine */
	usleep(300000 + (useconds_t)(2 * as.est_ns / 1000));
	sem_post(&r.gate);
	rec_wait(&r, rc ? 1 : 2);
	if (!rc) {
		assert_int_equal(r.rc[1], AIDOS_E_DEADLINE);
		assert_non_null(strstr(r.err[1], "passed while queued"));
	}
	node_stat ns;
	node_stats(n, &ns);
	assert_true(ns.disp.rejected_deadline >= 1);
	assert_true(ns.disp.rejected_busy >= 1);
	assert_int_equal(ns.disp.queued, 0);
	node_agent_unref(lo);
	node_agent_unref(lo2);
	node_agent_unref(hi);
	node_destroy(n);
	rm_tmp(dir);
}

/* Queued requests of a batchable agent run as one along dim 0, and each
 * gets its own row, equal to a run of its own. */
static void test_kern_fused(void **st)
{
	SKIP_WITHOUT_KERNEL_MODELS();
	enum { B = 8, ROW = 76 * 32 };
	char dir[64], err[600];
	mkdir_tmp(dir, sizeof dir);
	node *n = standalone(dir, 1);
	spawn_ok(n, "blk", jarvis, 1, 0);
	node_spawn_spec sp = { .name = "eb", .model_path = emb, .priority = 1, .batch_max = B };
	assert_int_equal(node_agent_spawn_local(n, &sp, err, sizeof err), 0);
	node_agent *blk = node_agent_find(n, "blk"), *eb = node_agent_find(n, "eb");
	static float rows[B][ROW];
	static aidos_tensor tin[B];
	static float got[B][128];
	static rec r;
	for (int b = 0; b < B; b++) {
		for (int i = 0; i < ROW; i++)
			rows[b][i] = (float)((i * (b + 3)) % 17) / 17.0f - 0.4f;
		tin[b] = (aidos_tensor){ .name = "input_1", .dtype = AIDOS_DT_FLOAT, .rank = 4, .dims = { 1, 76, 32, 1 },
					 .data = rows[b] };
	}
	rec_init(&r);
	r.gated = 0;
	job_set(&r, 0, blk, &T_j, NODE_PRIO_AGENT, 0);
	assert_int_equal(node_submit(n, &r.j[0], err, sizeof err), 0);
	wait_running(n, 1);
	for (int b = 0; b < B; b++) {
		job_set(&r, 1 + b, eb, &tin[b], NODE_PRIO_AGENT, 0);
		assert_int_equal(node_submit(n, &r.j[1 + b], err, sizeof err), 0);
	}
	sem_post(&r.gate);
	rec_wait(&r, 1 + B);
	node_agent_stat as;
	assert_int_equal(node_agent_info(n, "eb", &as), 0);
	assert_int_equal(as.fused, B);
	assert_int_equal(as.requests, B);
	/* Each row against a run of its own. rec_done kept the first value;
	 * compare the whole row through a direct session. */
	aidos_session *s;
	assert_int_equal(aidos_session_create(node_model_handle(eb->model), NULL, &s, err, sizeof err), 0);
	for (int b = 0; b < B; b++) {
		assert_int_equal(r.rc[1 + b], 0);
		assert_int_equal(aidos_session_run(s, 1, &tin[b]), 0);
		aidos_tensor o;
		aidos_session_output(s, 0, &o);
		float want = ((const float *)o.data)[0];
		assert_true(fabsf(r.outv[1 + b] - want) <= 1e-4f * (1.0f + fabsf(want)));
		got[b][0] = r.outv[1 + b];
	}
	aidos_session_destroy(s);
	/* Rows differ (the inputs did): not one answer copied B times. */
	assert_true(got[0][0] != got[1][0] || got[1][0] != got[2][0]);
	/* Without queued company a request runs alone. */
	job_set(&r, 20, eb, &tin[3], NODE_PRIO_AGENT, 0);
	assert_int_equal(node_run(n, &r.j[20], err, sizeof err), 0);
	assert_int_equal(r.rc[20], 0);
	assert_int_equal(node_agent_info(n, "eb", &as), 0);
	assert_int_equal(as.fused, B);
	assert_int_equal(as.requests, B + 1);
	node_agent_unref(blk);
	node_agent_unref(eb);
	node_destroy(n);
	rm_tmp(dir);
}

static void test_kern_quota(void **st)
{
	SKIP_WITHOUT_KERNEL_MODELS();
	char dir[64], err[600];
	mkdir_tmp(dir, sizeof dir);
	node *n = standalone(dir, 2);
	spawn_ok(n, "small", emb, 1, 64 << 10);   /* 64 KiB: the arena does not fit */
	spawn_ok(n, "big", emb, 1, 0);
	node_agent *sm = node_agent_find(n, "small"), *bg = node_agent_find(n, "big");
	static rec r;
	rec_init(&r);
	for (int round = 0; round < 2; round++) {
		job_set(&r, 0, sm, &T_e, NODE_PRIO_AGENT, 0);
		assert_int_equal(node_run(n, &r.j[0], err, sizeof err), 0);
		assert_int_equal(r.rc[0], AIDOS_E_QUOTA);
		assert_non_null(strstr(r.err[0], "quota"));
		/* The other agent of the same model is untouched. */
		job_set(&r, 1, bg, &T_e, NODE_PRIO_AGENT, 0);
		assert_int_equal(node_run(n, &r.j[1], err, sizeof err), 0);
		assert_int_equal(r.rc[1], 0);
	}
	node_agent_stat a1, a2;
	assert_int_equal(node_agent_info(n, "small", &a1), 0);
	assert_int_equal(node_agent_info(n, "big", &a2), 0);
	assert_int_equal(a1.quota_errors, 2);
	assert_true(a1.pool.breaches >= 2);
	assert_int_equal(a1.pool.used, 0);
	assert_int_equal(a2.quota_errors, 0);
	assert_int_equal(a2.requests, 2);
	assert_true(a2.pool.used > (64u << 10));   /* its arena, in its pool */
	assert_true(a2.pool.peak >= a2.pool.used);
	/* A stateful agent whose context region exceeds its quota: the spawn
	 * fails, with QUOTA. */
	node_spawn_spec sp = { .name = "v", .model_path = model_path, .stateful = 1, .quota = 512 };
	assert_int_equal(node_agent_spawn_local(n, &sp, err, sizeof err), AIDOS_E_QUOTA);
	assert_non_null(strstr(err, "quota"));
	print_message("    quota: small agent refused (%s), big agent arena %llu bytes in pool (%s pages)\n",
		      r.err[0], (unsigned long long)a2.pool.used, pool_pages_name(a2.pool.pages));
	node_agent_unref(sm);
	node_agent_unref(bg);
	node_destroy(n);
	rm_tmp(dir);
}

static void test_kern_4096_agents(void **st)
{
	SKIP_WITHOUT_KERNEL_MODELS();
	enum { N = 4096 };
	char dir[64], err[600], name[32];
	mkdir_tmp(dir, sizeof dir);
	node *n = standalone(dir, 2);
	pool_stats p0, p1;
	spawn_ok(n, "first", jarvis, 1, 0);   /* the model's one load, not counted per agent */
	pool_get_stats(&p0);
	uint64_t t0 = mono_ns();
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof name, "a%04d", i);
		node_spawn_spec sp = { .name = name, .model_path = jarvis, .priority = i % 4, .quota = 8 << 20 };
		if (node_agent_spawn_local(n, &sp, err, sizeof err))
			fail_msg("spawn %s: %s", name, err);
	}
	uint64_t t1 = mono_ns();
	pool_get_stats(&p1);
	node_stat ns;
	node_stats(n, &ns);
	assert_int_equal(ns.agents, N + 1);
	assert_int_equal(ns.models, 1);   /* one mapping, shared by all */
	/* Every agent answers; spot-check some, concurrently queued. */
	static rec r;
	rec_init(&r);
	for (int i = 0; i < 64; i++) {
		snprintf(name, sizeof name, "a%04d", i * 64 + 63);
		node_agent *a = node_agent_find(n, name);
		assert_non_null(a);
		job_set(&r, i, a, &T_j, NODE_PRIO_AGENT, 0);
		assert_int_equal(node_submit(n, &r.j[i], err, sizeof err), 0);
		node_agent_unref(a);   /* the table holds it until the job is done */
	}
	rec_wait(&r, 64);
	for (int i = 0; i < 64; i++) {
		assert_int_equal(r.rc[i], 0);
		assert_memory_equal(&r.outv[i], &r.outv[0], sizeof(float));
	}
	pool_stats p2;
	pool_get_stats(&p2);
	node_stats(n, &ns);
	double heap = (double)(p1.bytes_live - p0.bytes_live) / N;
	print_message("    %d agents of one model: spawn %.1f us each, %.0f bytes of heap each, pools %llu MiB "
		      "reserved (address space), %llu KiB used after 64 ran\n",
		      N, (double)(t1 - t0) / 1e3 / N, heap, (unsigned long long)(ns.pool_reserved >> 20),
		      (unsigned long long)(ns.pool_used >> 10));
	/* Kill them all (the store loses each record). */
	t0 = mono_ns();
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof name, "a%04d", i);
		assert_int_equal(node_agent_kill_local(n, name, err, sizeof err), 0);
	}
	node_stats(n, &ns);
	assert_int_equal(ns.agents, 1);
	node_destroy(n);
	rm_tmp(dir);
}

static void test_kern_restart(void **st)
{
	SKIP_WITHOUT_KERNEL_MODELS();
	char dir[64], err[600];
	mkdir_tmp(dir, sizeof dir);
	node *n = standalone(dir, 1);
	spawn_ok(n, "j", jarvis, 7, 16 << 20);
	node_spawn_spec sp = { .name = "v", .model_path = model_path, .stateful = 1, .deadline_ms = 500 };
	assert_int_equal(node_agent_spawn_local(n, &sp, err, sizeof err), 0);
	/* Three VAD chunks move its state to version 3. */
	static float vchunk[512];
	static int64_t sr = 16000;
	for (int i = 0; i < 512; i++)
		vchunk[i] = 0.3f * sinf((float)i * 0.05f);
	aidos_tensor vin[2] = {
		{ .name = "input", .dtype = AIDOS_DT_FLOAT, .rank = 2, .dims = { 1, 512 }, .data = vchunk },
		{ .name = "sr", .dtype = AIDOS_DT_INT64, .rank = 0, .data = &sr },
	};
	static rec r;
	rec_init(&r);
	node_agent *v = node_agent_find(n, "v");
	for (int i = 0; i < 3; i++) {
		job_set(&r, i, v, vin, NODE_PRIO_AGENT, 0);
		r.j[i].nin = 2;
		assert_int_equal(node_run(n, &r.j[i], err, sizeof err), 0);
		assert_int_equal(r.rc[i], 0);
	}
	static uint8_t ctx[1024];
	assert_int_equal(v->ctx_len, sizeof ctx);
	memcpy(ctx, v->ctx, sizeof ctx);
	assert_int_equal(v->version, 3);
	node_agent_unref(v);
	node_destroy(n);   /* what SIGTERM does: checkpoints saved, store kept */

	n = standalone(dir, 1);
	node_agent_stat a;
	assert_int_equal(node_agent_info(n, "j", &a), 0);
	/* Restored lazily: loading until the node's loader (or a first
	 * request) decodes its model, then idle. */
	assert_true(!strcmp(node_agent_state_name(a.state), "loading") || !strcmp(node_agent_state_name(a.state), "idle"));
	for (int t = 0; t < 60000; t++) {
		node_agent_stat b1, b2;
		node_agent_info(n, "j", &b1);
		node_agent_info(n, "v", &b2);
		if (b1.state == NODE_AGENT_IDLE && b2.state == NODE_AGENT_IDLE)
			break;
		usleep(1000);
	}
	assert_int_equal(node_agent_info(n, "j", &a), 0);
	assert_string_equal(node_agent_state_name(a.state), "idle");
	assert_int_equal(a.priority, 7);
	assert_int_equal(a.pool.quota, 16 << 20);
	assert_int_equal(node_agent_info(n, "v", &a), 0);
	assert_int_equal(a.deadline_ms, 500);
	v = node_agent_find(n, "v");
	assert_int_equal(v->version, 3);
	assert_memory_equal(v->ctx, ctx, sizeof ctx);
	/* The next chunk continues from there. */
	job_set(&r, 4, v, vin, NODE_PRIO_AGENT, 0);
	r.j[4].nin = 2;
	assert_int_equal(node_run(n, &r.j[4], err, sizeof err), 0);
	assert_int_equal(r.rc[4], 0);
	assert_int_equal(v->version, 4);
	node_agent_unref(v);
	/* A malformed store record is skipped, the others come back. */
	char path[128];
	snprintf(path, sizeof path, "%s/agents/bad.agent", dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs("agent bad model=%ZZ\n", f);
	fclose(f);
	node_destroy(n);
	/* Without the loader thread: j stays "loading" until its first
	 * request, which loads it on the worker and is served. */
	node_opts o = { .name = "solo", .data_dir = dir, .run_workers = 1, .no_preload = 1 };
	assert_int_equal(node_create(&o, &n, err, sizeof err), 0);
	assert_int_equal(node_start(n, err, sizeof err), 0);
	assert_int_equal(node_agent_info(n, "j", &a), 0);
	assert_string_equal(node_agent_state_name(a.state), "loading");
	assert_int_equal(a.weights_bytes, 0);
	assert_int_equal(node_agent_info(n, "bad", &a), AIDOS_E_NOTFOUND);
	node_agent *jj = node_agent_find(n, "j");
	job_set(&r, 5, jj, &T_j, NODE_PRIO_AGENT, 0);
	assert_int_equal(node_run(n, &r.j[5], err, sizeof err), 0);
	assert_int_equal(r.rc[5], 0);
	assert_int_equal(node_agent_info(n, "j", &a), 0);
	assert_string_equal(node_agent_state_name(a.state), "idle");
	assert_true(a.weights_bytes > 0);
	node_agent_unref(jj);
	node_destroy(n);
	rm_tmp(dir);
}

static void test_kern_lines(void **st)
{
	node_spec_buf b;
	char err[300], line[1024];
	const char *in[] = { "h", "c x" }, *out[] = { "hn", "c:n" };
	node_spawn_spec s = { .name = "a.1", .model_path = "/m dir/x=y.onnx", .priority = -3, .quota = 3 << 20,
			      .deadline_ms = 40, .stateful = 1, .ex_in = in, .ex_out = out, .n_ex = 2, .batch_max = 4 };
	int k = node_spec_format(&s, line, sizeof line);
	assert_true(k > 0);
	assert_int_equal(node_spec_parse(line, &b, err, sizeof err), 0);
	assert_string_equal(b.s.name, "a.1");
	assert_string_equal(b.s.model_path, "/m dir/x=y.onnx");
	assert_int_equal(b.s.priority, -3);
	assert_int_equal(b.s.quota, 3 << 20);
	assert_int_equal(b.s.deadline_ms, 40);
	assert_int_equal(b.s.n_ex, 2);
	assert_string_equal(b.s.ex_in[1], "c x");
	assert_string_equal(b.s.ex_out[1], "c:n");
	assert_int_equal(b.s.batch_max, 4);
	node_spec_buf_fini(&b);
	assert_int_equal(node_spec_parse("agent x model=/a quota=2G", &b, err, sizeof err), 0);
	assert_int_equal(b.s.quota, 2ull << 30);
	node_spec_buf_fini(&b);
	const char *bad[] = { "agent", "agent -x model=/a", "agent x", "agent x model=/a quota=12Q",
			      "agent x model=/a prio=1", "agent x model=/a state=a", "agent x model=%4", "agent x novalue" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_int_equal(node_spec_parse(bad[i], &b, err, sizeof err), AIDOS_E_INVALID);
	uint64_t v;
	assert_int_equal(node_parse_size("64MiB", &v), 0);
	assert_int_equal(v, 64 << 20);
	assert_int_equal(node_parse_size("-1", &v), AIDOS_E_INVALID);
	assert_int_equal(node_parse_size("99999999999999999G", &v), AIDOS_E_INVALID);
	/* A config file. */
	char path[] = "/tmp/aidos-test-cfg-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	const char *txt = "# node\nname = n7\n  data_dir=/tmp/x  \nsocket = /run/a.sock\nworkers = 3\n"
			  "agent a model=/m.onnx priority=2\nagent b model=/n.onnx deadline_ms=5\n";
	assert_int_equal(write(fd, txt, strlen(txt)), (ssize_t)strlen(txt));
	close(fd);
	node_config c;
	assert_int_equal(node_config_load(path, &c, err, sizeof err), 0);
	assert_string_equal(c.name, "n7");
	assert_string_equal(c.data_dir, "/tmp/x");
	assert_string_equal(c.socket, "/run/a.sock");
	assert_int_equal(c.workers, 3);
	assert_int_equal(c.n_agents, 2);
	assert_string_equal(c.agents[1].s.name, "b");
	assert_int_equal(c.agents[1].s.deadline_ms, 5);
	node_config_fini(&c);
	fd = open(path, O_WRONLY | O_TRUNC);
	assert_int_equal(write(fd, "name = n\nbogus = 1\n", 19), 19);
	close(fd);
	assert_int_equal(node_config_load(path, &c, err, sizeof err), AIDOS_E_INVALID);
	assert_non_null(strstr(err, ":2: unknown key"));
	unlink(path);
}

int main(void)
{
	const char *env = getenv("AIDOS_CACHE"), *home = getenv("HOME");
	if (env && *env)
		snprintf(cache_dir, sizeof cache_dir, "%s", env);
	else
		snprintf(cache_dir, sizeof cache_dir, "%s/.cache/aidos", home && *home ? home : ".");
	snprintf(model_path, sizeof model_path, "%s/models/vad-web/silero_vad_v5.onnx", cache_dir);
	snprintf(golden_dir, sizeof golden_dir, "%s/golden/vad_v5_16k", cache_dir);
	snprintf(jarvis, sizeof jarvis, "%s/models/openwakeword/hey_jarvis_v0.1.onnx", cache_dir);
	snprintf(emb, sizeof emb, "%s/models/openwakeword/embedding_model.onnx", cache_dir);

	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_pairs_rules),
		cmocka_unit_test(test_pairs_explicit),
		cmocka_unit_test(test_ckpt_roundtrip),
		cmocka_unit_test(test_wire_malformed),
		/* The standalone kernel tests first: the cluster below keeps
		 * heartbeating in the background once up, and the hot-path check
		 * counts every allocation in the process. */
		cmocka_unit_test(test_kern_lines),
		cmocka_unit_test(test_kern_agents),
		cmocka_unit_test(test_kern_grpc_codes),
		cmocka_unit_test(test_kern_priority_deadline),
		cmocka_unit_test(test_kern_fused),
		cmocka_unit_test(test_kern_quota),
		cmocka_unit_test(test_kern_4096_agents),
		cmocka_unit_test(test_kern_restart),
		cmocka_unit_test(test_cluster_place_infer),
		cmocka_unit_test(test_cluster_bad_requests),
		cmocka_unit_test(test_cluster_grpc_infer),
		cmocka_unit_test(test_cluster_migrate),
		cmocka_unit_test(test_cluster_kill),
	};
	return cmocka_run_group_tests_name("node", tests, NULL, cluster_down);
}
