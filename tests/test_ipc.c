/*
 * tests/test_ipc.c - the local client API against an in-process server
 * (node/ipc.c + node/ipc_node.c) on a socket in a temporary directory:
 * ping; spawn/list/stats/kill; 8 clients on 4 agents at once, every output
 * compared byte for byte with an in-process aidos_session_run of the same
 * model and inputs; every descriptor field malformed in turn (each fails
 * alone, the next request works); a submission tail that jumps; garbage on
 * the control socket; a client killed (SIGKILL) in the middle of its
 * requests; a uid the node refuses and a group it lets in; no allocation
 * per request in steady state on either side; a client waiting asleep for
 * a long request is woken by its completion; lower-class runs at
 * SCHED_IDLE, the top class at SCHED_OTHER; a top-class request runs on
 * its poller's thread even with lower classes queued.
 *
 * Children are this binary re-executed (`test_ipc --child MODE SOCK`), so
 * no test forks a process that has threads running.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <ftw.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "aidos/aidos.h"
#include "aidos/client.h"
#include "node/ipc.h"
#include "node/ipc_abi.h"
#include "node/node.h"
#include "pools/pools.h"

#define NAG 4       /* agents */
#define NSET 3      /* input sets per agent */
#define NCLI 8      /* concurrent clients */
#define ITERS 12    /* requests per client */

static char cache_dir[512], sock_path[256], tmp_dir[128];
static ipc_node *in_node;
static ipc_server *srv;
static node *nd;            /* the node behind the socket: standalone, no gRPC */

static const struct {
	const char *name, *file, *input;
	int rank;
	int64_t dims[4];
} AG[NAG] = {
	{ "jarvis", "openwakeword/hey_jarvis_v0.1.onnx", "x.1", 3, { 1, 16, 96 } },
	{ "alexa", "openwakeword/alexa_v0.1.onnx", "onnx::Flatten_0", 3, { 1, 16, 96 } },
	{ "mel", "openwakeword/melspectrogram.onnx", "input", 2, { 1, 1280 } },
	{ "embed", "openwakeword/embedding_model.onnx", "input_1", 4, { 1, 76, 32, 1 } },
};

typedef struct ref {
	float *in;              /* input set */
	size_t in_n;
	int nout;
	void *out[4];
	size_t out_bytes[4];
	aidos_tensor out_t[4];
	char out_name[4][128];
} ref;
static ref R[NAG][NSET];

static void model_path(int i, char *buf, size_t len)
{
	snprintf(buf, len, "%s/models/%s", cache_dir, AG[i].file);
}

static size_t count(int i)
{
	size_t n = 1;
	for (int d = 0; d < AG[i].rank; d++)
		n *= (size_t)AG[i].dims[d];
	return n;
}

static int have_models(void)
{
	char p[700];
	for (int i = 0; i < NAG; i++) {
		model_path(i, p, sizeof p);
		if (access(p, R_OK))
			return 0;
	}
	return 1;
}

/* References: each input set run in process by a session of its own. */
static void make_refs(void)
{
	static int made;
	char p[700], err[256];
	if (made++)
		return;
	for (int i = 0; i < NAG; i++) {
		aidos_model *m;
		aidos_session *s;
		model_path(i, p, sizeof p);
		assert_int_equal(aidos_model_load(p, &m, err, sizeof err), 0);
		assert_int_equal(aidos_session_create(m, NULL, &s, err, sizeof err), 0);
		for (int k = 0; k < NSET; k++) {
			ref *r = &R[i][k];
			r->in_n = count(i);
			r->in = malloc(r->in_n * sizeof(float));
			uint32_t x = 12345u + 7919u * (uint32_t)(i * NSET + k);
			for (size_t j = 0; j < r->in_n; j++) {
				x = x * 1664525u + 1013904223u;
				r->in[j] = (float)((x >> 8) & 0xffff) / 65536.0f * (i == 2 ? 2000.0f : 2.0f) -
					   (i == 2 ? 1000.0f : 1.0f);
			}
			aidos_tensor t = { .name = AG[i].input, .dtype = AIDOS_DT_FLOAT, .rank = AG[i].rank, .data = r->in };
			memcpy(t.dims, AG[i].dims, sizeof AG[i].dims);
			assert_int_equal(aidos_session_run(s, 1, &t), 0);
			r->nout = aidos_model_n_outputs(m);
			for (int o = 0; o < r->nout; o++) {
				aidos_tensor ot;
				aidos_session_output(s, o, &ot);
				size_t b = 4;
				for (int d = 0; d < ot.rank; d++)
					b *= (size_t)ot.dims[d];
				r->out[o] = malloc(b ? b : 1);
				memcpy(r->out[o], ot.data, b);
				r->out_bytes[o] = b;
				r->out_t[o] = ot;
				snprintf(r->out_name[o], sizeof r->out_name[o], "%s", ot.name);
				r->out_t[o].name = r->out_name[o];
				r->out_t[o].data = r->out[o];
			}
		}
		aidos_session_destroy(s);
		aidos_model_free(m);
	}
}

/* nftw callback: removes one entry of the temporary tree. */
static int rm_one(const char *p, const struct stat *sb, int type, struct FTW *f)
{
	remove(p);
	return 0;
}

static int setup(void **state)
{
	char err[512];
	snprintf(tmp_dir, sizeof tmp_dir, "/tmp/aidos-ipc-test-XXXXXX");
	if (!mkdtemp(tmp_dir))
		return -1;
	snprintf(sock_path, sizeof sock_path, "%s/node.sock", tmp_dir);
	ipc_ops ops;
	char ddir[200];
	snprintf(ddir, sizeof ddir, "%s/data", tmp_dir);
	node_opts no = { .name = "ipctest", .data_dir = ddir, .no_grpc = 1, .run_workers = 2 };
	if (node_create(&no, &nd, err, sizeof err) || node_start(nd, err, sizeof err)) {
		fprintf(stderr, "node: %s\n", err);
		return -1;
	}
	if (ipc_node_create(nd, &in_node, err, sizeof err))
		return -1;
	ipc_node_ops(in_node, &ops);
	ipc_opts o = { .path = sock_path, .heap_bytes = 8 << 20 };
	if (ipc_server_create(&o, &ops, &srv, err, sizeof err) || ipc_server_start(srv, err, sizeof err)) {
		fprintf(stderr, "server: %s\n", err);
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	ipc_server_destroy(srv);
	ipc_node_destroy(in_node);
	node_destroy(nd);
	nftw(tmp_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	for (int i = 0; i < NAG; i++)
		for (int k = 0; k < NSET; k++) {
			free(R[i][k].in);
			for (int o = 0; o < R[i][k].nout; o++)
				free(R[i][k].out[o]);
		}
	return 0;
}

static aidos_client *conn(void)
{
	aidos_client *c;
	char err[512];
	int rc = aidos_client_connect(sock_path, NULL, &c, err, sizeof err);
	if (rc)
		fprintf(stderr, "connect: %s\n", err);
	assert_int_equal(rc, 0);
	return c;
}

static void spawn_all(aidos_client *c)
{
	char p[700], err[512];
	for (int i = 0; i < NAG; i++) {
		model_path(i, p, sizeof p);
		aidos_client_spawn_opts so = { .name = AG[i].name, .model = p, .priority = i };
		int rc = aidos_client_spawn(c, &so, err, sizeof err);
		if (rc && rc != -EEXIST)
			fprintf(stderr, "spawn: %s\n", err);
		assert_true(rc == 0 || rc == -EEXIST);
	}
}

/* ---- tests ---- */

/* Steady state: no allocation on either side (client library and node run
 * in this process, so pools/alloc.c's counters see both). */
static void test_no_alloc(void **state)
{
	if (!have_models())
		skip();
	make_refs();
	aidos_client *c = conn();
	spawn_all(c);
	char err[512];
	aidos_tensor x = { .name = "x.1", .dtype = AIDOS_DT_FLOAT, .rank = 3, .dims = { 1, 16, 96 } };
	assert_int_equal(aidos_client_tensor_alloc(c, &x), 0);
	memcpy(x.data, R[0][2].in, R[0][2].in_n * 4);
	aidos_tensor out[4];
	int nout;
	for (int i = 0; i < 5; i++)   /* open the agent, size the output area, plan */
		assert_int_equal(aidos_client_infer(c, "jarvis", 1, &x, &nout, out, 4, err, sizeof err), 0);
	pool_stats a, b;
	pool_get_stats(&a);
	for (int i = 0; i < 200; i++) {
		assert_int_equal(aidos_client_infer(c, "jarvis", 1, &x, &nout, out, 4, err, sizeof err), 0);
		assert_int_equal(aidos_client_ping(c, NULL), 0);
	}
	pool_get_stats(&b);
	assert_int_equal(b.allocs, a.allocs);
	assert_memory_equal(out[0].data, R[0][2].out[0], R[0][2].out_bytes[0]);
	aidos_client_tensor_free(c, &x);
	aidos_client_close(c);
}

static void test_ping(void **state)
{
	aidos_client *c = conn();
	for (int i = 0; i < 2000; i++) {
		uint64_t rtt;
		assert_int_equal(aidos_client_ping(c, &rtt), 0);
	}
	aidos_client_close(c);
}

static void test_connect_errors(void **state)
{
	aidos_client *c;
	char err[512], p[300];
	snprintf(p, sizeof p, "%s/nobody.sock", tmp_dir);
	assert_int_equal(aidos_client_connect(p, NULL, &c, err, sizeof err), -ENOENT);
	assert_non_null(strstr(err, p));
	/* A second server on a live socket is refused. */
	ipc_ops ops;
	ipc_server *s2;
	ipc_node_ops(in_node, &ops);
	ipc_opts o = { .path = sock_path };
	assert_int_equal(ipc_server_create(&o, &ops, &s2, err, sizeof err), 0);
	assert_int_equal(ipc_server_start(s2, err, sizeof err), -EADDRINUSE);
	ipc_server_destroy(s2);
	/* the first one still serves */
	c = conn();
	assert_int_equal(aidos_client_ping(c, NULL), 0);
	aidos_client_close(c);
}

static void test_spawn_list_kill(void **state)
{
	if (!have_models())
		skip();
	aidos_client *c = conn();
	char p[700], err[512];
	model_path(0, p, sizeof p);
	aidos_client_spawn_opts so = { .name = "tmp1", .model = p, .priority = 7, .quota_bytes = 1 << 30,
				       .deadline_ms = 5 };
	assert_int_equal(aidos_client_spawn(c, &so, err, sizeof err), 0);
	assert_int_equal(aidos_client_spawn(c, &so, err, sizeof err), -EEXIST);
	so.name = "bad name!";
	assert_int_equal(aidos_client_spawn(c, &so, err, sizeof err), AIDOS_E_INVALID);
	so.name = "tmp2";
	so.model = "/nonexistent/model.onnx";
	assert_int_not_equal(aidos_client_spawn(c, &so, err, sizeof err), 0);
	aidos_agent_info *l;
	int n, found = 0;
	assert_int_equal(aidos_client_list(c, &l, &n, err, sizeof err), 0);
	for (int i = 0; i < n; i++)
		if (!strcmp(l[i].name, "tmp1")) {
			found = 1;
			assert_int_equal(l[i].priority, 7);
			assert_int_equal(l[i].quota_bytes, 1 << 30);
			assert_int_equal(l[i].deadline_ms, 5);
			assert_string_equal(l[i].state, "idle");
		}
	aidos_client_list_free(l);
	assert_true(found);
	aidos_node_stats st;
	assert_int_equal(aidos_client_stats(c, &st, err, sizeof err), 0);
	assert_true(st.agents >= 1);
	assert_true(st.clients >= 1);
	/* infer, kill, infer again: not found */
	aidos_tensor x = { .name = "x.1", .dtype = AIDOS_DT_FLOAT, .rank = 3, .dims = { 1, 16, 96 } };
	assert_int_equal(aidos_client_tensor_alloc(c, &x), 0);
	aidos_tensor out[4];
	int nout;
	assert_int_equal(aidos_client_infer(c, "tmp1", 1, &x, &nout, out, 4, err, sizeof err), 0);
	assert_int_equal(nout, 1);
	assert_int_equal(aidos_client_kill(c, "tmp1", err, sizeof err), 0);
	assert_int_equal(aidos_client_kill(c, "tmp1", err, sizeof err), AIDOS_E_NOTFOUND);
	assert_int_equal(aidos_client_infer(c, "tmp1", 1, &x, &nout, out, 4, err, sizeof err), AIDOS_E_NOTFOUND);
	/* spawned again under the same name: the client's stale handle is
	 * replaced on the fly */
	so.name = "tmp1";
	so.model = p;
	assert_int_equal(aidos_client_spawn(c, &so, err, sizeof err), 0);
	assert_int_equal(aidos_client_infer(c, "tmp1", 1, &x, &nout, out, 4, err, sizeof err), 0);
	aidos_client *c2 = conn();   /* another client sees it too */
	assert_int_equal(aidos_client_kill(c2, "tmp1", err, sizeof err), 0);
	assert_int_equal(aidos_client_infer(c, "tmp1", 1, &x, &nout, out, 4, err, sizeof err), AIDOS_E_NOTFOUND);
	aidos_client_close(c2);
	/* quota: a plan bigger than the quota fails that agent's requests only */
	so = (aidos_client_spawn_opts){ .name = "tiny", .model = p, .quota_bytes = 64 };
	assert_int_equal(aidos_client_spawn(c, &so, err, sizeof err), 0);
	assert_int_equal(aidos_client_infer(c, "tiny", 1, &x, &nout, out, 4, err, sizeof err), AIDOS_E_QUOTA);
	assert_non_null(strstr(err, "quota"));
	/* ... and only its: another agent of the same model still answers */
	so = (aidos_client_spawn_opts){ .name = "roomy", .model = p };
	assert_int_equal(aidos_client_spawn(c, &so, err, sizeof err), 0);
	assert_int_equal(aidos_client_infer(c, "roomy", 1, &x, &nout, out, 4, err, sizeof err), 0);
	/* ps: the pool's bytes in use and the state */
	assert_int_equal(aidos_client_list(c, &l, &n, err, sizeof err), 0);
	found = 0;
	for (int i = 0; i < n; i++)
		if (!strcmp(l[i].name, "roomy")) {
			found = 1;
			assert_true(l[i].mem_bytes > 0);
			assert_true(l[i].quota_bytes >= l[i].mem_bytes);
			assert_string_equal(l[i].state, "idle");
			assert_int_equal(l[i].requests, 1);
		} else if (!strcmp(l[i].name, "tiny")) {
			assert_int_equal(l[i].errors, 1);
		}
	aidos_client_list_free(l);
	assert_true(found);
	assert_int_equal(aidos_client_kill(c, "roomy", err, sizeof err), 0);
	assert_int_equal(aidos_client_ping(c, NULL), 0);
	assert_int_equal(aidos_client_kill(c, "tiny", err, sizeof err), 0);
	aidos_client_tensor_free(c, &x);
	aidos_client_close(c);
}

/* A deadline the agent cannot meet is refused (AIDOS_E_DEADLINE, with its
 * message) by the dispatcher's admission, through the socket; the other
 * agents keep answering. embed on 32 rows takes milliseconds; its default
 * deadline is 1 ms: once the dispatcher has its estimate, refused. */
static void test_deadline_refused(void **state)
{
	if (!have_models())
		skip();
	aidos_client *c = conn();
	spawn_all(c);
	char p[700], err[512];
	model_path(3, p, sizeof p);
	aidos_client_spawn_opts so = { .name = "dl", .model = p, .deadline_ms = 1 };
	assert_int_equal(aidos_client_spawn(c, &so, err, sizeof err), 0);
	aidos_tensor x = { .name = "input_1", .dtype = AIDOS_DT_FLOAT, .rank = 4, .dims = { 32, 76, 32, 1 } };
	assert_int_equal(aidos_client_tensor_alloc(c, &x), 0);
	memset(x.data, 0, 32 * 76 * 32 * sizeof(float));
	aidos_tensor out[4];
	int nout;
	/* the first is admitted (no estimate yet) and runs (or expires queued) */
	int rc = aidos_client_infer(c, "dl", 1, &x, &nout, out, 4, err, sizeof err);
	assert_true(rc == 0 || rc == AIDOS_E_DEADLINE);
	aidos_agent_info *l;
	int n;
	uint64_t lat = 0;
	assert_int_equal(aidos_client_list(c, &l, &n, err, sizeof err), 0);
	for (int i = 0; i < n; i++)
		if (!strcmp(l[i].name, "dl"))
			lat = l[i].latency_ns;
	aidos_client_list_free(l);
	if (rc == 0 && lat < 1500000) {
		fprintf(stderr, "embed x32 ran in %.3f ms: too fast to test a 1 ms deadline here\n", lat / 1e6);
	} else {
		rc = aidos_client_infer(c, "dl", 1, &x, &nout, out, 4, err, sizeof err);
		assert_int_equal(rc, AIDOS_E_DEADLINE);
		assert_non_null(strstr(err, "deadline"));
	}
	aidos_client_tensor_free(c, &x);
	/* another agent is unaffected */
	aidos_tensor y = { .name = "x.1", .dtype = AIDOS_DT_FLOAT, .rank = 3, .dims = { 1, 16, 96 } };
	assert_int_equal(aidos_client_tensor_alloc(c, &y), 0);
	memset(y.data, 0, 16 * 96 * sizeof(float));
	assert_int_equal(aidos_client_infer(c, "jarvis", 1, &y, &nout, out, 4, err, sizeof err), 0);
	aidos_client_tensor_free(c, &y);
	assert_int_equal(aidos_client_kill(c, "dl", err, sizeof err), 0);
	aidos_client_close(c);
}

typedef struct worker {
	int id;
	int done, bad;
	char err[512];
} worker;

static void *worker_main(void *arg)
{
	worker *w = arg;
	aidos_client *c;
	if (aidos_client_connect(sock_path, NULL, &c, w->err, sizeof w->err)) {
		w->bad = 1;
		return NULL;
	}
	aidos_tensor x[NAG];
	for (int i = 0; i < NAG; i++) {   /* one heap tensor per agent, written in place */
		x[i] = (aidos_tensor){ .name = AG[i].input, .dtype = AIDOS_DT_FLOAT, .rank = AG[i].rank };
		memcpy(x[i].dims, AG[i].dims, sizeof AG[i].dims);
		if (aidos_client_tensor_alloc(c, &x[i])) {
			snprintf(w->err, sizeof w->err, "tensor_alloc failed");
			w->bad = 1;
			goto out;
		}
	}
	for (int it = 0; it < ITERS; it++) {
		int i = (w->id + it) % NAG, k = (w->id * 7 + it) % NSET;
		const ref *r = &R[i][k];
		memcpy(x[i].data, r->in, r->in_n * sizeof(float));
		aidos_tensor out[4];
		int nout;
		if (aidos_client_infer(c, AG[i].name, 1, &x[i], &nout, out, 4, w->err, sizeof w->err)) {
			w->bad = 1;
			goto out;
		}
		if (nout != r->nout) {
			snprintf(w->err, sizeof w->err, "%s: %d outputs, want %d", AG[i].name, nout, r->nout);
			w->bad = 1;
			goto out;
		}
		for (int o = 0; o < nout; o++) {
			size_t b = 4;
			for (int d = 0; d < out[o].rank; d++)
				b *= (size_t)out[o].dims[d];
			if (b != r->out_bytes[o] || memcmp(out[o].data, r->out[o], b) ||
			    strcmp(out[o].name, r->out_t[o].name)) {
				snprintf(w->err, sizeof w->err, "%s set %d output %d differs from aidos_session_run",
					 AG[i].name, k, o);
				w->bad = 1;
				goto out;
			}
		}
		w->done++;
	}
out:
	aidos_client_close(c);
	return NULL;
}

static void test_concurrent(void **state)
{
	if (!have_models())
		skip();
	make_refs();
	aidos_client *c = conn();
	spawn_all(c);
	pthread_t th[NCLI];
	worker w[NCLI];
	for (int i = 0; i < NCLI; i++) {
		w[i] = (worker){ .id = i };
		assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
	}
	for (int i = 0; i < NCLI; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < NCLI; i++) {
		if (w[i].bad)
			fprintf(stderr, "client %d: %s\n", i, w[i].err);
		assert_false(w[i].bad);
		assert_int_equal(w[i].done, ITERS);
	}
	aidos_client_close(c);
}

/* A client whose agent takes many spins' worth per request waits for it
 * asleep from the start, and the node's completion wakes it: every output
 * still equals the in-process run. spin_us 1: the embedding model's
 * milliseconds are "far" after its first request. */
static void test_far_sleep(void **state)
{
	if (!have_models())
		skip();
	make_refs();
	aidos_client *c0 = conn();
	spawn_all(c0);
	aidos_client *c;
	char err[512];
	aidos_client_opts o = { .spin_us = 1 };
	assert_int_equal(aidos_client_connect(sock_path, &o, &c, err, sizeof err), 0);
	const int e = 3;   /* "embed" */
	aidos_tensor x = { .name = AG[e].input, .dtype = AIDOS_DT_FLOAT, .rank = AG[e].rank };
	memcpy(x.dims, AG[e].dims, sizeof AG[e].dims);
	assert_int_equal(aidos_client_tensor_alloc(c, &x), 0);
	for (int it = 0; it < 10; it++) {
		const ref *r = &R[e][it % NSET];
		memcpy(x.data, r->in, r->in_n * sizeof(float));
		aidos_tensor out[4];
		int nout;
		assert_int_equal(aidos_client_infer(c, AG[e].name, 1, &x, &nout, out, 4, err, sizeof err), 0);
		assert_int_equal(nout, r->nout);
		assert_memory_equal(out[0].data, r->out[0], r->out_bytes[0]);
		assert_int_equal(aidos_client_ping(c, NULL), 0);   /* a ping is never waited for asleep */
	}
	/* The first request had no estimate; the 9 after it slept at once
	 * (a run of ~1 ms against 8 us: only a 125x faster run could miss). */
	assert_true(ipc_client_far_waits(c) >= 9);
	assert_true(ipc_client_far_waits(c) <= 9);
	aidos_client_tensor_free(c, &x);
	aidos_client_close(c);
	aidos_client_close(c0);
}

/* The scheduling class a request ran with, seen from its done(). */
typedef struct class_probe {
	int policy;
} class_probe;

static void class_done(node_job *j, int rc, const char *msg)
{
	((class_probe *)j->user)->policy = sched_getscheduler(0);
}

/* A thread that runs a request below the node's top class is SCHED_IDLE
 * while it does (ordinary threads preempt it at once), and SCHED_OTHER
 * again for the top class. Run last: it makes priority 1000 the node's
 * top class. */
static void test_lower_class_idle(void **state)
{
	if (!have_models())
		skip();
	make_refs();
	aidos_client *c = conn();
	spawn_all(c);
	node_agent *a = node_agent_find(nd, "jarvis");
	assert_non_null(a);
	const char *ic = getenv("AIDOS_IDLE_CLASS");
	struct rlimit rl;   /* the node's condition (node/worker.c, run_class) */
	int idle = !(ic && !strcmp(ic, "0")) &&
		   (geteuid() == 0 || (!getrlimit(RLIMIT_NICE, &rl) &&
				       (rl.rlim_cur == RLIM_INFINITY ||
					(long)rl.rlim_cur >= 20 - getpriority(PRIO_PROCESS, 0))));
	static const int prio[] = { 1000, 1, 1000, 1, 1, 1000 };
	for (size_t i = 0; i < sizeof prio / sizeof prio[0]; i++) {
		aidos_tensor x = { .name = AG[0].input, .dtype = AIDOS_DT_FLOAT, .rank = AG[0].rank, .data = R[0][0].in };
		memcpy(x.dims, AG[0].dims, sizeof AG[0].dims);
		aidos_tensor out[4];
		class_probe p = { -1 };
		node_job j = { .agent = a, .in = &x, .nin = 1, .out = out, .nout = 4, .priority = prio[i],
			       .done = class_done, .user = &p };
		char err[512];
		assert_int_equal(node_run(nd, &j, err, sizeof err), 0);
		assert_int_equal(p.policy, prio[i] < 1000 && idle ? SCHED_IDLE : SCHED_OTHER);
	}
	node_agent_unref(a);
	aidos_client_close(c);
}

/* A lower-class job whose done() holds its worker until the test lets
 * it go (a long run, deterministically). */
typedef struct held {
	int entered, release, done;   /* atomics */
} held;

static void held_done(node_job *j, int rc, const char *msg)
{
	held *h = j->user;
	__atomic_store_n(&h->entered, 1, __ATOMIC_RELEASE);
	while (!__atomic_load_n(&h->release, __ATOMIC_ACQUIRE))
		usleep(1000);
	__atomic_store_n(&h->done, 1, __ATOMIC_RELEASE);
}

static void count_done(node_job *j, int rc, const char *msg)
{
	__atomic_store_n(&((held *)j->user)->done, 1, __ATOMIC_RELEASE);
}

/* A top-class request is run on its submitter's thread (node_submit_here
 * returns 1: no hand-off, no wake-up) even while lower-class requests are
 * queued: they are not ahead of it. Here the non-reserved worker is held
 * by one lower-class run and a second waits in the queue. */
static void test_top_runs_here_over_queue(void **state)
{
	if (!have_models())
		skip();
	make_refs();
	aidos_client *c = conn();
	spawn_all(c);
	node_agent *ag[3] = { node_agent_find(nd, "embed"), node_agent_find(nd, "mel"), node_agent_find(nd, "jarvis") };
	const int idx[3] = { 3, 2, 0 };
	aidos_tensor x[3], out[3][4];
	for (int i = 0; i < 3; i++) {
		assert_non_null(ag[i]);
		x[i] = (aidos_tensor){ .name = AG[idx[i]].input, .dtype = AIDOS_DT_FLOAT, .rank = AG[idx[i]].rank,
				       .data = R[idx[i]][0].in };
		memcpy(x[i].dims, AG[idx[i]].dims, sizeof AG[idx[i]].dims);
	}
	char err[512];
	held h0 = { 0 }, h1 = { 0 }, h2 = { 0 };
	node_job j0 = { .agent = ag[0], .in = &x[0], .nin = 1, .out = out[0], .nout = 4, .priority = 1000,
			.done = count_done, .user = &h2 };
	assert_int_equal(node_run(nd, &j0, err, sizeof err), 0);   /* 1000 is the top class */
	node_job lo0 = { .agent = ag[0], .in = &x[0], .nin = 1, .out = out[0], .nout = 4, .priority = 1,
			 .done = held_done, .user = &h0 };
	node_job lo1 = { .agent = ag[1], .in = &x[1], .nin = 1, .out = out[1], .nout = 4, .priority = 1,
			 .done = count_done, .user = &h1 };
	assert_int_equal(node_submit(nd, &lo0, err, sizeof err), 0);
	while (!__atomic_load_n(&h0.entered, __ATOMIC_ACQUIRE))   /* the only non-reserved worker is held */
		usleep(1000);
	assert_int_equal(node_submit(nd, &lo1, err, sizeof err), 0);   /* queued: no place for it */
	node_stat st;
	node_stats(nd, &st);
	assert_int_equal(st.disp.queued, 1);
	held hh = { 0 };
	node_job hi = { .agent = ag[2], .in = &x[2], .nin = 1, .out = out[2], .nout = 4, .priority = 1000,
			.done = count_done, .user = &hh };
	assert_int_equal(node_submit_here(nd, &hi, err, sizeof err), 1);
	assert_true(__atomic_load_n(&hh.done, __ATOMIC_ACQUIRE));
	assert_int_equal(hi.top_class, 1);   /* what the socket's poller reads */
	assert_int_equal(lo1.top_class, 0);
	/* ... and leaves the reserved worker asleep: only a lower class is
	 * queued, nothing it may take (it used to be signalled after every
	 * such run: a system call and its idle spin on a busy core). */
	node_stats(nd, &st);
	uint64_t kicks = st.disp.top_kicks;
	for (int i = 0; i < 20; i++) {
		hh.done = 0;
		assert_int_equal(node_submit_here(nd, &hi, err, sizeof err), 1);
	}
	node_stats(nd, &st);
	assert_int_equal(st.disp.top_kicks, kicks);
	assert_int_equal(st.disp.queued, 1);
	__atomic_store_n(&h0.release, 1, __ATOMIC_RELEASE);
	while (!__atomic_load_n(&h0.done, __ATOMIC_ACQUIRE) || !__atomic_load_n(&h1.done, __ATOMIC_ACQUIRE))
		usleep(1000);
	for (int i = 0; i < 3; i++)
		node_agent_unref(ag[i]);
	aidos_client_close(c);
}

/* A valid descriptor for agent handle h ("jarvis", opened first) with its
 * input at in_off and outputs at out_off. */
static aidos_sqe good_sqe(uint32_t h, uint64_t in_off, uint64_t out_off)
{
	aidos_sqe s;
	memset(&s, 0, sizeof s);
	s.op = AIDOS_RING_OP_INFER;
	s.agent = h;
	s.nin = 1;
	s.out_off = out_off;
	s.out_len = 4096;
	s.in[0] = (aidos_ring_tensor){ .off = in_off, .len = 16 * 96 * 4, .dtype = AIDOS_DT_FLOAT, .rank = 3,
				       .dims = { 1, 16, 96 }, .index = 0 };
	return s;
}

static void test_malformed(void **state)
{
	if (!have_models())
		skip();
	make_refs();
	aidos_client *c = conn(), *other = conn();
	char err[512];
	spawn_all(c);
	/* Open jarvis (handle 0 of this client) with a normal request. */
	aidos_tensor x = { .name = "x.1", .dtype = AIDOS_DT_FLOAT, .rank = 3, .dims = { 1, 16, 96 } };
	assert_int_equal(aidos_client_tensor_alloc(c, &x), 0);
	memcpy(x.data, R[0][0].in, R[0][0].in_n * 4);
	aidos_tensor out[4];
	int nout;
	assert_int_equal(aidos_client_infer(c, "jarvis", 1, &x, &nout, out, 4, err, sizeof err), 0);
	size_t rlen;
	uint8_t *region = aidos_client_region(c, &rlen);
	const aidos_ring_hdr *h = (const aidos_ring_hdr *)region;
	uint8_t *heap = region + h->heap_off;
	uint64_t hb = h->heap_bytes, in_off = (uint64_t)((uint8_t *)x.data - heap);
	aidos_tensor ob = { .dtype = AIDOS_DT_UINT8, .rank = 1, .dims = { 8192 } };
	assert_int_equal(aidos_client_tensor_alloc(c, &ob), 0);
	uint64_t out_off = (uint64_t)((uint8_t *)ob.data - heap);

	aidos_cqe e;
	aidos_sqe s;
	int ncase = 0;
#define EXPECT_BAD(mutate, want_code, what)                                                               \
	do {                                                                                                \
		s = good_sqe(0, in_off, out_off);                                                           \
		mutate;                                                                                     \
		assert_int_equal(ipc_client_raw(c, &s, &e), 0);                                             \
		if (e.res != (want_code))                                                                   \
			fprintf(stderr, "case %s: res %d (%s), want %d\n", what, e.res, e.msg, want_code);  \
		assert_int_equal(e.res, (want_code));                                                       \
		assert_true(e.msg[0] != 0);                                                                 \
		s = good_sqe(0, in_off, out_off);                                                           \
		assert_int_equal(ipc_client_raw(c, &s, &e), 0);                                             \
		assert_int_equal(e.res, 0);                                                                 \
		assert_int_equal(aidos_client_ping(other, NULL), 0);                                        \
		ncase++;                                                                                    \
	} while (0)
	EXPECT_BAD(s.op = 7, AIDOS_E_INVALID, "op");
	EXPECT_BAD(s.flags = 1, AIDOS_E_INVALID, "flags");
	EXPECT_BAD(s.agent = 200, AIDOS_E_NOTFOUND, "agent handle");
	EXPECT_BAD(s.agent = 0xffffffffu, AIDOS_E_NOTFOUND, "agent handle max");
	EXPECT_BAD(s.nin = 17, AIDOS_E_INVALID, "nin");
	EXPECT_BAD(s.in[0].index = 1, AIDOS_E_INVALID, "input index");
	EXPECT_BAD((s.nin = 2, s.in[1] = s.in[0]), AIDOS_E_INVALID, "index twice");
	EXPECT_BAD(s.in[0].dtype = 99, AIDOS_E_INVALID, "unknown dtype");
	EXPECT_BAD((s.in[0].dtype = AIDOS_DT_INT32), AIDOS_E_INVALID, "wrong dtype");
	EXPECT_BAD(s.in[0].rank = 9, AIDOS_E_INVALID, "rank 9");
	EXPECT_BAD(s.in[0].rank = -1, AIDOS_E_INVALID, "rank -1");
	EXPECT_BAD((s.in[0].rank = 2, s.in[0].len = 16 * 4), AIDOS_E_INVALID, "rank mismatch");
	EXPECT_BAD(s.in[0].dims[1] = -16, AIDOS_E_INVALID, "negative dim");
	EXPECT_BAD((s.in[0].dims[1] = 17, s.in[0].len = 17 * 96 * 4), AIDOS_E_INVALID, "dim mismatch");
	EXPECT_BAD((s.in[0].dims[0] = INT64_MAX), AIDOS_E_INVALID, "dims overflow");
	EXPECT_BAD((s.in[0].dims[0] = (int64_t)1 << 40, s.in[0].dims[1] = (int64_t)1 << 40), AIDOS_E_INVALID,
		   "dims product overflow");
	EXPECT_BAD(s.in[0].len -= 4, AIDOS_E_INVALID, "len short");
	EXPECT_BAD(s.in[0].len = UINT64_MAX, AIDOS_E_INVALID, "len huge");
	EXPECT_BAD(s.in[0].off += 4, AIDOS_E_INVALID, "off misaligned");
	EXPECT_BAD(s.in[0].off = hb, AIDOS_E_RANGE, "off at heap end");
	EXPECT_BAD(s.in[0].off = hb - 64, AIDOS_E_RANGE, "off+len past heap");
	EXPECT_BAD(s.in[0].off = UINT64_MAX - 63, AIDOS_E_RANGE, "off wraps");
	EXPECT_BAD(s.in[0]._pad = 1, AIDOS_E_INVALID, "tensor padding");
	EXPECT_BAD(s.out_off += 8, AIDOS_E_INVALID, "out_off misaligned");
	EXPECT_BAD(s.out_off = hb, AIDOS_E_RANGE, "out_off at heap end");
	EXPECT_BAD(s.out_len = UINT64_MAX, AIDOS_E_RANGE, "out_len wraps");
	EXPECT_BAD(s.out_len = 8, AIDOS_E_RANGE, "out_len below the records");
	EXPECT_BAD(s.out_len = 100, -ENOBUFS, "out_len below the outputs");
	EXPECT_BAD(s.out_off = in_off, AIDOS_E_INVALID, "output area overlaps the input");
	EXPECT_BAD(s.deadline_ns = 1, -ETIME, "deadline passed");
	EXPECT_BAD(s.nin = 0, AIDOS_E_INVALID, "missing input");
	/* dims whose product overflows, on an agent with symbolic dims (mel) */
	aidos_tensor mx = { .name = "input", .dtype = AIDOS_DT_FLOAT, .rank = 2, .dims = { 1, 1280 } };
	assert_int_equal(aidos_client_tensor_alloc(c, &mx), 0);
	assert_int_equal(aidos_client_infer(c, "mel", 1, &mx, &nout, out, 4, err, sizeof err), 0);
	s = good_sqe(1, (uint64_t)((uint8_t *)mx.data - heap), out_off);
	s.in[0].rank = 2;
	s.in[0].dims[0] = (int64_t)1 << 40;
	s.in[0].dims[1] = (int64_t)1 << 40;
	s.in[0].dims[2] = 0;
	assert_int_equal(ipc_client_raw(c, &s, &e), 0);
	assert_int_equal(e.res, AIDOS_E_RANGE);
	s.in[0].dims[0] = 1;
	s.in[0].dims[1] = 1280;
	s.in[0].len = 1280 * 4;
	assert_int_equal(ipc_client_raw(c, &s, &e), 0);
	assert_int_equal(e.res, 0);
	/* -ENOBUFS says how much is needed */
	s = good_sqe(0, in_off, out_off);
	s.out_len = 100;
	assert_int_equal(ipc_client_raw(c, &s, &e), 0);
	assert_true(e.out_len > 100 && e.out_len <= 4096);
	/* A tail that jumps past the ring: one error completion, then on. */
	assert_int_equal(ipc_client_jump(c, 100000, &e), 0);
	assert_int_equal(e.res, AIDOS_E_INVALID);
	assert_non_null(strstr(e.msg, "jumped"));
	s = good_sqe(0, in_off, out_off);
	assert_int_equal(ipc_client_raw(c, &s, &e), 0);
	assert_int_equal(e.res, 0);
	/* and the library's own path still works, output equal to the reference */
	assert_int_equal(aidos_client_infer(c, "jarvis", 1, &x, &nout, out, 4, err, sizeof err), 0);
	assert_memory_equal(out[0].data, R[0][0].out[0], R[0][0].out_bytes[0]);
	fprintf(stderr, "    %d malformed descriptors rejected one by one\n", ncase);
	aidos_client_close(other);
	aidos_client_close(c);
}

/* Raw control-socket connection. */
static int raw_conn(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	strcpy(sa.sun_path, sock_path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	return fd;
}

/* Sends bytes, then reads until EOF or a reply; returns the reply status
 * or 1 for EOF without reply. */
static int raw_send(int fd, const void *p, size_t n, int read_reply)
{
	if (n)
		assert_int_equal(send(fd, p, n, MSG_NOSIGNAL), (ssize_t)n);
	if (!read_reply)
		return 0;
	aidos_ipc_msg r;
	ssize_t got = recv(fd, &r, sizeof r, MSG_WAITALL);
	if (got != (ssize_t)sizeof r)
		return 1;
	char buf[1024];
	size_t left = r.len;
	while (left) {
		ssize_t k = recv(fd, buf, left < sizeof buf ? left : sizeof buf, 0);
		if (k <= 0)
			break;
		left -= (size_t)k;
	}
	return r.status;
}

static void test_control_garbage(void **state)
{
	aidos_client *c = conn();
	char err[256];
	aidos_ipc_msg m = { .magic = AIDOS_IPC_MAGIC, .type = AIDOS_IPC_STATS, .version = AIDOS_RING_VERSION };
	aidos_ipc_msg q;
	int fd;
	/* each of these gets an error reply (or the connection closed) */
	q = m; q.magic = 1;
	fd = raw_conn(); assert_int_not_equal(raw_send(fd, &q, sizeof q, 1), 0); close(fd);
	q = m; q.version = 9;
	fd = raw_conn(); assert_int_not_equal(raw_send(fd, &q, sizeof q, 1), 0); close(fd);
	q = m; q.type = 77;
	fd = raw_conn(); assert_int_not_equal(raw_send(fd, &q, sizeof q, 1), 0); close(fd);
	q = m; q.len = AIDOS_IPC_MAX_PAYLOAD + 1;
	fd = raw_conn(); assert_int_not_equal(raw_send(fd, &q, sizeof q, 1), 0); close(fd);
	q = m; q.status = -5;
	fd = raw_conn(); assert_int_not_equal(raw_send(fd, &q, sizeof q, 1), 0); close(fd);
	/* payload of the wrong size for its type: an error, the connection lives */
	{
		uint8_t b[sizeof m + 3] = { 0 };
		q = m; q.len = 3;
		memcpy(b, &q, sizeof q);
		fd = raw_conn();
		assert_int_equal(raw_send(fd, b, sizeof b, 1), AIDOS_E_INVALID);
		q = m;
		assert_int_equal(raw_send(fd, &q, sizeof q, 1), 0);   /* STATS works after it */
		close(fd);
	}
	/* names without NUL, invalid characters; spawn without a path */
	{
		uint8_t b[sizeof m + sizeof(aidos_ipc_spawn)];
		q = m; q.type = AIDOS_IPC_OPEN; q.len = AIDOS_IPC_NAME;
		memcpy(b, &q, sizeof q);
		memset(b + sizeof q, 'a', AIDOS_IPC_NAME);
		fd = raw_conn();
		assert_int_equal(raw_send(fd, b, sizeof q + AIDOS_IPC_NAME, 1), AIDOS_E_INVALID);
		memset(b + sizeof q, 0, AIDOS_IPC_NAME);
		memcpy(b + sizeof q, "a/b", 3);
		q.type = AIDOS_IPC_KILL;
		memcpy(b, &q, sizeof q);
		assert_int_equal(raw_send(fd, b, sizeof q + AIDOS_IPC_NAME, 1), AIDOS_E_INVALID);
		aidos_ipc_spawn sp;
		memset(&sp, 0, sizeof sp);
		strcpy(sp.name, "x");
		q.type = AIDOS_IPC_SPAWN; q.len = sizeof sp;
		memcpy(b, &q, sizeof q);
		memcpy(b + sizeof q, &sp, sizeof sp);
		assert_int_equal(raw_send(fd, b, sizeof b, 1), AIDOS_E_INVALID);
		memset(sp.model, 'm', sizeof sp.model);
		memcpy(b + sizeof q, &sp, sizeof sp);
		assert_int_equal(raw_send(fd, b, sizeof b, 1), AIDOS_E_INVALID);
		/* OPEN before HELLO */
		q.type = AIDOS_IPC_OPEN; q.len = AIDOS_IPC_NAME;
		memcpy(b, &q, sizeof q);
		memset(b + sizeof q, 0, AIDOS_IPC_NAME);
		strcpy((char *)b + sizeof q, "jarvis");
		assert_int_equal(raw_send(fd, b, sizeof q + AIDOS_IPC_NAME, 1), AIDOS_E_INVALID);
		/* HELLO with a heap that is not a multiple of 4096 */
		aidos_ipc_hello hq = { .heap_bytes = 5000 };
		q.type = AIDOS_IPC_HELLO; q.len = sizeof hq;
		memcpy(b, &q, sizeof q);
		memcpy(b + sizeof q, &hq, sizeof hq);
		assert_int_equal(raw_send(fd, b, sizeof q + sizeof hq, 1), AIDOS_E_INVALID);
		hq = (aidos_ipc_hello){ .sq_entries = 3 };
		memcpy(b + sizeof q, &hq, sizeof hq);
		assert_int_equal(raw_send(fd, b, sizeof q + sizeof hq, 1), AIDOS_E_INVALID);
		close(fd);
	}
	/* half a header, then EOF; and random bytes */
	fd = raw_conn(); raw_send(fd, &m, 10, 0); close(fd);
	uint32_t x = 99;
	for (int k = 0; k < 300; k++) {
		uint8_t b[256];
		size_t n = 1 + (x % sizeof b);
		for (size_t i = 0; i < n; i++) {
			x = x * 1664525u + 1013904223u;
			b[i] = (uint8_t)(x >> 24);
		}
		if (k % 3 == 0) {   /* a valid header start with random rest */
			memcpy(b, &m, n < 8 ? n : 8);
		}
		fd = raw_conn();
		raw_send(fd, b, n, 0);
		close(fd);
	}
	/* the pure checks agree */
	q = m;
	assert_int_equal(ipc_msg_check(&q, err, sizeof err), 0);
	q.type = 0;
	assert_int_equal(ipc_msg_check(&q, err, sizeof err), AIDOS_E_INVALID);
	/* the node still serves */
	assert_int_equal(aidos_client_ping(c, NULL), 0);
	aidos_node_stats st;
	assert_int_equal(aidos_client_stats(c, &st, err, sizeof err), 0);
	aidos_client_close(c);
}

static pid_t spawn_child(const char *mode, int *rfd)
{
	int p[2];
	assert_int_equal(pipe(p), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char fdn[16];
		close(p[0]);
		snprintf(fdn, sizeof fdn, "%d", p[1]);
		execl("/proc/self/exe", "test_ipc", "--child", mode, sock_path, fdn, (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	*rfd = p[0];
	return pid;
}

static void test_client_killed(void **state)
{
	if (!have_models())
		skip();
	aidos_client *c = conn();
	spawn_all(c);
	int base = ipc_server_clients(srv);
	int rfd;
	pid_t pid = spawn_child("loop", &rfd);
	char b;
	/* The child says it has served requests and goes on submitting. */
	assert_int_equal(read(rfd, &b, 1), 1);
	assert_int_equal(b, 'r');
	kill(pid, SIGKILL);
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFSIGNALED(st));
	close(rfd);
	/* The node notices (socket EOF) and drops it; no timing asserted:
	 * wait as long as it takes (the test's timeout bounds it). */
	while (ipc_server_clients(srv) > base) {
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	/* Everyone else keeps going. */
	char err[512];
	aidos_tensor x = { .name = "x.1", .dtype = AIDOS_DT_FLOAT, .rank = 3, .dims = { 1, 16, 96 } };
	assert_int_equal(aidos_client_tensor_alloc(c, &x), 0);
	memcpy(x.data, R[0][1].in, R[0][1].in_n * 4);
	aidos_tensor out[4];
	int nout;
	assert_int_equal(aidos_client_infer(c, "jarvis", 1, &x, &nout, out, 4, err, sizeof err), 0);
	assert_memory_equal(out[0].data, R[0][1].out[0], R[0][1].out_bytes[0]);
	assert_int_equal(aidos_client_ping(c, NULL), 0);
	aidos_client_close(c);
}

static void test_peercred(void **state)
{
	if (geteuid() != 0)
		skip();   /* needs a second uid */
	/* Let the filesystem allow everyone, so only SO_PEERCRED decides. */
	chmod(tmp_dir, 0711);
	chmod(sock_path, 0666);
	int rfd, st;
	char b = 0;
	pid_t pid = spawn_child("nobody", &rfd);
	assert_int_equal(read(rfd, &b, 1), 1);
	waitpid(pid, &st, 0);
	close(rfd);
	assert_int_equal(b, 'd');   /* denied by the node, saying which uid */
	/* A server that allows a group lets that group's members in. */
	char err[512], p2[200], saved[256];
	snprintf(p2, sizeof p2, "%s/group.sock", tmp_dir);
	ipc_ops ops;
	ipc_server *s2;
	ipc_node_ops(in_node, &ops);
	ipc_opts o = { .path = p2, .gid = 4242, .gid_set = 1 };
	assert_int_equal(ipc_server_create(&o, &ops, &s2, err, sizeof err), 0);
	assert_int_equal(ipc_server_start(s2, err, sizeof err), 0);
	snprintf(saved, sizeof saved, "%s", sock_path);
	snprintf(sock_path, sizeof sock_path, "%s", p2);
	pid = spawn_child("group", &rfd);
	snprintf(sock_path, sizeof sock_path, "%s", saved);
	b = 0;
	assert_int_equal(read(rfd, &b, 1), 1);
	waitpid(pid, &st, 0);
	close(rfd);
	ipc_server_destroy(s2);
	chmod(tmp_dir, 0700);
	assert_int_equal(b, 'a');   /* allowed */
}

/* Child modes (re-executed binary): "loop" connects and runs requests
 * forever, saying 'r' on the pipe after the first; "nobody" drops to uid
 * 65534 and says 'd' when the node refuses it with -EACCES. */
static int child_main(const char *mode, const char *sock, int wfd)
{
	char err[512];
	aidos_client *c;
	if (!strcmp(mode, "nobody") || !strcmp(mode, "group")) {
		gid_t g = !strcmp(mode, "group") ? 4242 : 65534;
		if (setgroups(0, NULL) || setgid(g) || setuid(65534))
			return 2;
		int rc = aidos_client_connect(sock, NULL, &c, err, sizeof err);
		char b = 'x';
		if (rc == -EACCES && strstr(err, "uid 65534 may not use this node"))
			b = 'd';
		else if (!rc && !aidos_client_ping(c, NULL))
			b = 'a';
		if (!rc)
			aidos_client_close(c);
		if (write(wfd, &b, 1) != 1)
			return 3;
		return 0;
	}
	if (aidos_client_connect(sock, NULL, &c, err, sizeof err))
		return 2;
	aidos_tensor x = { .name = "input_1", .dtype = AIDOS_DT_FLOAT, .rank = 4, .dims = { 1, 76, 32, 1 } };
	if (aidos_client_tensor_alloc(c, &x))
		return 3;
	for (long i = 0;; i++) {
		aidos_tensor out[4];
		int nout;
		if (aidos_client_infer(c, "embed", 1, &x, &nout, out, 4, err, sizeof err))
			return 4;
		if (i == 0 && write(wfd, "r", 1) != 1)
			return 5;
	}
}

int main(int argc, char **argv)
{
	if (argc == 5 && !strcmp(argv[1], "--child"))
		return child_main(argv[2], argv[3], atoi(argv[4]));
	const char *env = getenv("AIDOS_CACHE"), *home = getenv("HOME");
	if (env && *env)
		snprintf(cache_dir, sizeof cache_dir, "%s", env);
	else
		snprintf(cache_dir, sizeof cache_dir, "%s/.cache/aidos", home && *home ? home : ".");
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ping),
		cmocka_unit_test(test_connect_errors),
		cmocka_unit_test(test_spawn_list_kill),
		cmocka_unit_test(test_concurrent),
		cmocka_unit_test(test_deadline_refused),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_no_alloc),
		cmocka_unit_test(test_control_garbage),
		cmocka_unit_test(test_client_killed),
		cmocka_unit_test(test_peercred),
		cmocka_unit_test(test_far_sleep),
		cmocka_unit_test(test_lower_class_idle),
		cmocka_unit_test(test_top_runs_here_over_queue),
	};
	return cmocka_run_group_tests_name("ipc", tests, setup, teardown);
}
