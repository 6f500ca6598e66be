/*
 * node/node.c - the node daemon: boot, the aidos.Node service, running
 * requests, registration with the coordinator and the heartbeat (node.h
 * tells the contracts, docs/cluster.md the design).
 *
 * Boot: options -> machine probe (cores, memory, cpu features) ->
 * transport (UCX worker) -> RPC server -> data plane -> RegisterNode ->
 * restore the agents the coordinator lists -> heartbeat thread. The data
 * plane starts before registration so the address published in NodeInfo
 * answers from the moment the coordinator knows it (NOTFOUND until agents
 * arrive).
 *
 * Requests: both the data plane and Node.Infer call serve(): validate the
 * tensors against the agent's model, take the agent's mutex, feed the state
 * from the context region, run, check the state outputs against the
 * state's shape, hand the reply to the caller's emit (which packs it while
 * the outputs are still valid), and only then fold the state outputs into
 * the region (version += 1): a request whose reply could not be made leaves
 * the state as it was, so the client can send the same chunk again.
 *
 * Checkpoints: each heartbeat carries the contexts of stateful agents whose
 * version changed (and every CKPT_RESEND beats all of them again, since the
 * coordinator drops one that arrives while it migrates the agent); the same
 * snapshot goes to DATA_DIR/agents/<name>.ctx, so a node restarted with its
 * agents listed by the coordinator resumes them from the last checkpoint.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "node/node.h"
#include "node/store.h"
#include "node/wire.h"
#include "pools/pools.h"
#include "proto/rpc.h"
#include "node/util.h"

#define REGISTER_DEADLINE_MS 3000
#define REGISTER_RETRY_MS 500
#define PULL_TIMEOUT_MS 4000      /* the coordinator gives ImportContext 5 s in all */
#define CKPT_RESEND 20            /* beats between full checkpoint resends */
#define PEER_IDLE_MS 60000
#define MAX_ADDR 256
#define MAX_UCX_ADDR 65536
#define MAX_RKEY 65536

struct node {
	node_opts o;
	char name[NODE_NAME_MAX];
	char *coord_addr, *data_dir, *listen, *ckpt_dir;
	char rpc_addr[MAX_ADDR];
	char transport[160], reason[1200];
	char tmode[400];       /* "--transport tcp (UCX over TCP)": the reason's prefix */
	char cpu_name[256];
	uint32_t cores;
	uint64_t mem_total;

	xport *x;                  /* NULL: no data plane (transport auto, UCX unusable) */
	node_disp *disp;           /* run queues and workers: every request goes through it */
	int standalone;            /* no coordinator */
	char *socket;              /* opts.socket (owned) */
	double ready_ms;           /* boot time when node_start returned */
	int quiet_spawn;           /* 1: no log line per spawn (a mass spawn logs a summary) */
	int want_rpc;              /* the Node service runs (always with a coordinator) */
	pthread_t loader;          /* loads lazy agents after boot */
	int loader_started;
	node_models models;
	node_table table;
	node_peers *peers;
	node_dp *dp;
	rpc_server *srv;
	rpc_client *coord;
	int rpc_ref;

	uint64_t hb_ms, lease_ms;
	double boot_ms;            /* at registration */
	int grpc_inflight;         /* atomic: Node.Infer calls running */

	pthread_mutex_t mu;        /* stop, hb thread */
	pthread_cond_t cv;
	int stop;
	pthread_t hb;
	int hb_started;
	pthread_t sweeper;         /* closes idle client endpoints (not on hb: a slow close must not delay beats) */
	int sweeper_started;
	/* Registration against the coordinator's Spawns: register_once holds it
	 * for writing from its agent snapshot to the end of its drops and
	 * restores, Spawn for reading, so a Spawn that the coordinator sends
	 * after building the register reply (its placer, kicked by the
	 * registration) lands after the drops, never before them (it would be
	 * answered "already here" and then dropped: the directory would name
	 * this node for an agent it no longer has). */
	pthread_rwlock_t reg_lock;
};

/* ---- small helpers ---- */

static double mono_msf(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

void node_log(const node *n, int level, const char *fmt, ...)
{
	static const char *lv[] = { "info", "warn", "error" };
	char msg[1500], line[1800];
	struct timespec now;
	struct tm tm;
	va_list ap;

	if (level < NODE_LOG_INFO || level > NODE_LOG_ERROR)
		level = NODE_LOG_ERROR;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	/* one write per line: threads never interleave */
	snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ aidos-node[%s] %s: %s\n",
		 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		 (int)(now.tv_nsec / 1000000), n ? n->name : "-", lv[level], msg);
	fputs(line, stderr);
}

#define LOGI(n, ...) node_log(n, NODE_LOG_INFO, __VA_ARGS__)
#define LOGW(n, ...) node_log(n, NODE_LOG_WARN, __VA_ARGS__)
#define LOGE(n, ...) node_log(n, NODE_LOG_ERROR, __VA_ARGS__)

/* Sleeps ms unless stopped; returns 1 when stopped. */
static int nap(node *n, uint64_t ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += (time_t)(ms / 1000);
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&n->mu);
	while (!n->stop && pthread_cond_timedwait(&n->cv, &n->mu, &ts) != ETIMEDOUT)
		;
	int s = n->stop;
	pthread_mutex_unlock(&n->mu);
	return s;
}

/* A malloc'ed deep copy of a message built from borrowed parts, as the RPC
 * server frees replies (protobuf_c_message_free_unpacked with NULL). */
static ProtobufCMessage *dup_msg(const void *msg)
{
	const ProtobufCMessage *m = msg;
	size_t len = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = pool_malloc(len ? len : 1);
	ProtobufCMessage *r;
	if (!buf)
		return NULL;
	protobuf_c_message_pack(m, buf);
	r = protobuf_c_message_unpack(m->descriptor, NULL, len, buf);
	pool_free(buf);
	return r;
}

static int reply(const void *msg, ProtobufCMessage **resp, char *err, size_t errlen)
{
	if (!(*resp = dup_msg(msg)))
		return fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
	return 0;
}

static uint64_t meminfo(const char *key)
{
	FILE *f = fopen("/proc/meminfo", "re");
	char line[256];
	size_t kl = strlen(key);
	uint64_t v = 0;
	if (!f)
		return 0;
	while (fgets(line, sizeof line, f))
		if (!strncmp(line, key, kl) && line[kl] == ':') {
			v = strtoull(line + kl + 1, NULL, 10) * 1024u;
			break;
		}
	fclose(f);
	return v;
}

/* Requests waiting or running: the dispatcher's queues (every path goes
 * through them) plus the data plane's own backlog. */
static uint32_t node_queue_len(node *n)
{
	node_disp_counts dc;
	node_disp_counts_get(n->disp, &dc);
	return dc.queued + dc.running + node_dp_queue_len(n->dp);
}

/* ---- agents as the protocol shows them ---- */

/* Borrowed view of an agent's AgentInfo; valid while a lives and ai_pairs
 * storage does. */
typedef struct agent_view {
	Aidos__AgentInfo ai;
	Aidos__StatePair sp[NODE_MAX_STATE];
	Aidos__StatePair *spp[NODE_MAX_STATE];
} agent_view;

static void agent_view_fill(node *n, node_agent *a, agent_view *v)
{
	int loaded = __atomic_load_n(&a->loaded, __ATOMIC_ACQUIRE);   /* its state pairs and model are set */
	aidos__agent_info__init(&v->ai);
	v->ai.name = a->name;
	v->ai.model_path = a->model_path;
	v->ai.node = n->name;
	v->ai.priority = a->priority;
	v->ai.stateful = loaded ? a->stateful : a->want_stateful;
	for (int i = 0; loaded && i < a->n_state; i++) {
		aidos__state_pair__init(&v->sp[i]);
		v->sp[i].input = a->state[i].input;
		v->sp[i].output = a->state[i].output;
		v->spp[i] = &v->sp[i];
	}
	v->ai.n_state = loaded ? (size_t)a->n_state : 0;
	v->ai.state = v->spp;
	v->ai.device = a->device;
	v->ai.context_node = a->stateful ? n->name : (char *)"";
	pthread_mutex_lock(&a->smu);
	v->ai.state_now = (Aidos__AgentState)a->state_now;
	v->ai.context_version = a->version;
	v->ai.latency_ms = a->latency_ms;
	v->ai.requests = a->requests;
	mpool_usage pu;
	mpool_usage_get(a->pool, &pu);
	/* weights (shared, counted per agent as the placement needs them) +
	 * what its pool holds: context region and arenas */
	v->ai.mem_bytes = (loaded ? node_model_bytes(a->model) : 0) + pu.used;
	pthread_mutex_unlock(&a->smu);
}

/* Where an agent's local checkpoint lives. */
static void ckpt_path(const node *n, const char *agent, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s.ctx", n->ckpt_dir, agent);
}

static int write_file(const char *path, const uint8_t *p, size_t len)
{
	char tmp[PATH_MAX + 8];
	int fd, rc = 0;
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0)
		return -errno;
	while (len) {
		ssize_t w = write(fd, p, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			rc = -errno;
			break;
		}
		p += w;
		len -= (size_t)w;
	}
	if (close(fd) && !rc)
		rc = -errno;
	if (!rc && rename(tmp, path))
		rc = -errno;
	if (rc)
		unlink(tmp);
	return rc;
}

/* Reads the local checkpoint of agent a into its region, if there is a
 * valid one. Returns 1 when restored. */
static int ckpt_load_local(node *n, node_agent *a)
{
	char path[PATH_MAX], why[300];
	struct stat st;
	uint8_t *buf = NULL;
	int fd, ok = 0;
	ckpt_path(n, a->name, path, sizeof path);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return 0;
	if (fstat(fd, &st) || st.st_size <= 0 || (uint64_t)st.st_size > 2 * (uint64_t)a->ctx_len + 65536 ||
	    !(buf = pool_malloc((size_t)st.st_size))) {
		close(fd);
		LOGW(n, "agent %s: local checkpoint %s unusable (size); starting from zeros", a->name, path);
		return 0;
	}
	ssize_t r = pread(fd, buf, (size_t)st.st_size, 0);
	close(fd);
	Aidos__AgentContext *c = r == st.st_size ? aidos__agent_context__unpack(NULL, (size_t)r, buf) : NULL;
	if (!c) {
		LOGW(n, "agent %s: local checkpoint %s does not parse; starting from zeros", a->name, path);
	} else if (strcmp(c->agent, a->name)) {
		LOGW(n, "agent %s: local checkpoint %s is of agent '%.64s'; starting from zeros", a->name, path,
		     c->agent);
	} else if (node_ckpt_unpack(a->state, a->n_state, c, a->ctx, a->ctx_len, why, sizeof why)) {
		LOGW(n, "agent %s: local checkpoint rejected: %s; starting from zeros", a->name, why);
	} else {
		a->version = c->version;
		a->ckpt_sent = 0;   /* the coordinator may not have this one: send it */
		ok = 1;
	}
	if (c)
		aidos__agent_context__free_unpacked(c, NULL);
	pool_free(buf);
	return ok;
}

/* Spawns an agent from a spec (+ optional checkpoint) and inserts it.
 * *out (may be NULL) gets a reference. */
static int spawn_sp(node *n, const node_agent_spec *sp, const Aidos__AgentContext *ctx, int local_ckpt,
		    node_agent **out, char *err, size_t errlen)
{
	node_agent *a;
	double t0 = mono_msf();
	int rc;
	const char *name = sp->name;

	if (out)
		*out = NULL;
	if ((rc = node_agent_create(&n->models, n->x, sp, &a, err, errlen)))
		return rc;
	const char *from = "zeros";
	if (ctx && (ctx->n_tensors || ctx->version)) {
		char why[400];
		if (!a->stateful) {
			node_agent_unref(a);
			return fail(err, errlen, AIDOS_E_INVALID, "agent %s is stateless: a context makes no sense", name);
		}
		if ((rc = node_ckpt_unpack(a->state, a->n_state, ctx, a->ctx, a->ctx_len, why, sizeof why))) {
			node_agent_unref(a);
			return fail(err, errlen, rc, "agent %s: checkpoint refused: %s", name, why);
		}
		a->version = ctx->version;
		a->ckpt_sent = ctx->version;
		from = "the coordinator's checkpoint";
	} else if (a->stateful && local_ckpt && ckpt_load_local(n, a)) {
		from = "the local checkpoint";
	}
	if ((rc = node_table_add(&n->table, a))) {
		node_agent_unref(a);
		if (rc == -EEXIST)
			return fail(err, errlen, AIDOS_E_INVALID, "agent '%s' already exists on node %s", name, n->name);
		return fail(err, errlen, rc, "agent '%s': out of memory", name);
	}
	if (a->stateful && !strcmp(from, "zeros")) {
		char path[PATH_MAX];
		ckpt_path(n, a->name, path, sizeof path);
		unlink(path);   /* a stale one of an earlier agent of this name */
	}
	char pairs[512] = "";
	size_t k = 0;
	for (int i = 0; i < a->n_state && k < sizeof pairs; i++)
		k += (size_t)snprintf(pairs + k, sizeof pairs - k, "%s%s<-%s", i ? " " : "", a->state[i].input,
				      a->state[i].output);
	if (n->quiet_spawn)
		;   /* a mass spawn (tests, benchmarks) logs its own summary */
	else if (a->stateful)
		LOGI(n, "agent %s spawned in %.1f ms: %s, priority %d, state %s (%zu bytes, version %" PRIu64 " from %s)",
		     a->name, mono_msf() - t0, a->model_path, a->priority, pairs, a->ctx_len, a->version, from);
	else
		LOGI(n, "agent %s spawned in %.1f ms: %s, priority %d, stateless (model shared by %d agents)", a->name,
		     mono_msf() - t0, a->model_path, a->priority, node_model_refs(&n->models, a->model));
	if (out)
		*out = a;
	else
		node_agent_unref(a);
	return 0;
}

/* Spawns an agent from an AgentInfo (the coordinator's). */
static int spawn(node *n, const Aidos__AgentInfo *ai, const Aidos__AgentContext *ctx, int local_ckpt,
		 node_agent **out, char *err, size_t errlen)
{
	const char *ex_in[NODE_MAX_STATE], *ex_out[NODE_MAX_STATE];
	if (out)
		*out = NULL;
	if (ai->n_state > NODE_MAX_STATE)
		return fail(err, errlen, AIDOS_E_INVALID, "agent %.64s: %zu state pairs (max %d)", ai->name, ai->n_state,
			    NODE_MAX_STATE);
	for (size_t i = 0; i < ai->n_state; i++) {
		if (!ai->state[i])
			return fail(err, errlen, AIDOS_E_INVALID, "agent %.64s: empty state pair %zu", ai->name, i);
		ex_in[i] = ai->state[i]->input;
		ex_out[i] = ai->state[i]->output;
	}
	node_agent_spec sp = { .name = ai->name, .model_path = ai->model_path, .device = ai->device,
			       .priority = ai->priority, .stateful = ai->stateful || ai->n_state,
			       .ex_in = ex_in, .ex_out = ex_out, .n_ex = (int)ai->n_state };
	return spawn_sp(n, &sp, ctx, local_ckpt, out, err, errlen);
}

/* Removes agent name; waits for its request in flight. why: for the log. */
static int drop_agent(node *n, const char *name, const char *why, char *err, size_t errlen)
{
	node_agent *a = node_table_remove(&n->table, name);
	char path[PATH_MAX];
	if (!a)
		return fail(err, errlen, AIDOS_E_NOTFOUND, "no agent '%.64s' on node %s", name, n->name);
	pthread_mutex_lock(&a->mu);
	pthread_mutex_lock(&a->smu);
	a->state_now = AIDOS__AGENT_STATE__AGENT_DEAD;
	pthread_mutex_unlock(&a->smu);
	if (a->ctx_mem) {
		xport_mem_release(a->x, a->ctx_mem);
		a->ctx_mem = NULL;
	}
	pthread_mutex_unlock(&a->mu);
	if (a->stateful || a->want_stateful) {
		ckpt_path(n, a->name, path, sizeof path);
		unlink(path);
	}
	node_store_del(n->ckpt_dir, a->name);
	if (!n->quiet_spawn)
		LOGI(n, "agent %s %s (%" PRIu64 " requests served)", a->name, why, a->requests);
	node_agent_unref(a);
	return 0;
}

/* ---- running requests ---- */

static int dims_fit(const aidos_tensor *given, const aidos_tensor *model)
{
	if (model->rank < 0)
		return 1;
	if (given->rank != model->rank)
		return 0;
	for (int d = 0; d < given->rank; d++)
		if (model->dims[d] >= 0 && model->dims[d] != given->dims[d])
			return 0;
	return 1;
}

static void shape_str(char *b, size_t len, const aidos_tensor *t)
{
	size_t k = (size_t)snprintf(b, len, "[");
	for (int i = 0; i < t->rank && k < len; i++)
		k += (t->dims[i] < 0) ? (size_t)snprintf(b + k, len - k, "%s?", i ? "," : "")
				      : (size_t)snprintf(b + k, len - k, "%s%lld", i ? "," : "", (long long)t->dims[i]);
	if (k < len)
		snprintf(b + k, len - k, "]");
}

static const char *dt_name(int32_t dt)
{
	switch (dt) {
	case AIDOS_DT_FLOAT: return "float32";
	case AIDOS_DT_UINT8: return "uint8";
	case AIDOS_DT_INT8: return "int8";
	case AIDOS_DT_INT32: return "int32";
	case AIDOS_DT_INT64: return "int64";
	case AIDOS_DT_BOOL: return "bool";
	case AIDOS_DT_DOUBLE: return "float64";
	default: return "unsupported";
	}
}

/* Checks the request's tensors against agent a's model and fills in[]
 * (the request's tensors; the state is fed by the worker). Returns the
 * count or an error. */
static int bind_inputs(node_agent *a, const Aidos__InferRequest *req, aidos_tensor *in, char *err, size_t errlen)
{
	aidos_model *m = node_model_handle(a->model);
	int nin = aidos_model_n_inputs(m), k = 0;
	char why[300], s1[128], s2[128];

	if (req->n_inputs > NODE_MAX_INPUTS)
		return fail(err, errlen, AIDOS_E_INVALID, "agent %s: %zu input tensors (max %d)", a->name,
			    req->n_inputs, NODE_MAX_INPUTS);
	for (size_t i = 0; i < req->n_inputs; i++) {
		const Aidos__Tensor *pb = req->inputs[i];
		aidos_tensor mi;
		int j, rc;
		if ((rc = aidos_wire_tensor_from_pb(pb, &in[k], why, sizeof why)))
			return fail(err, errlen, AIDOS_E_INVALID, "agent %s: %s", a->name, why);
		if (!pb->name[0])
			return fail(err, errlen, AIDOS_E_INVALID, "agent %s: input tensor #%zu has no name", a->name, i);
		for (j = 0; j < k; j++)
			if (!strcmp(in[j].name, pb->name))
				return fail(err, errlen, AIDOS_E_INVALID, "agent %s: tensor '%.128s' given twice", a->name,
					    pb->name);
		for (j = 0; j < a->n_state; j++)
			if (!strcmp(a->state[j].input, pb->name))
				return fail(err, errlen, AIDOS_E_INVALID,
					    "agent %s: tensor '%.128s' is the agent's state (fed by the node from its "
					    "context); do not send it", a->name, pb->name);
		for (j = 0; j < nin; j++) {
			aidos_model_input(m, j, &mi);
			if (!strcmp(mi.name, pb->name))
				break;
		}
		if (j == nin) {
			char names[400];
			size_t q = 0;
			names[0] = 0;
			for (int t = 0; t < nin && q < sizeof names; t++) {
				aidos_model_input(m, t, &mi);
				q += (size_t)snprintf(names + q, sizeof names - q, "%s%s", t ? ", " : "", mi.name);
			}
			return fail(err, errlen, AIDOS_E_INVALID, "agent %s: the model has no input '%.128s' (inputs: %s)",
				    a->name, pb->name, names);
		}
		if (mi.dtype && mi.dtype != pb->dtype)
			return fail(err, errlen, AIDOS_E_INVALID, "agent %s: tensor '%.128s' is %s, the model takes %s",
				    a->name, pb->name, dt_name(pb->dtype), dt_name(mi.dtype));
		if (!dims_fit(&in[k], &mi)) {
			shape_str(s1, sizeof s1, &in[k]);
			shape_str(s2, sizeof s2, &mi);
			return fail(err, errlen, AIDOS_E_INVALID, "agent %s: tensor '%.128s' has shape %s, the model takes %s",
				    a->name, pb->name, s1, s2);
		}
		k++;
	}
	/* Every model input that is not state must have come. */
	for (int j = 0; j < nin; j++) {
		aidos_tensor mi;
		int have = 0;
		aidos_model_input(m, j, &mi);
		for (int t = 0; t < k && !have; t++)
			have = !strcmp(in[t].name, mi.name);
		for (int t = 0; t < a->n_state && !have; t++)
			have = !strcmp(a->state[t].input, mi.name);
		if (!have)
			return fail(err, errlen, AIDOS_E_INVALID, "agent %s: input '%s' (%s) is missing", a->name, mi.name,
				    dt_name(mi.dtype));
	}
	return k;   /* the dispatcher's worker appends the state */
}

/* Finishes a lazy agent: model, session, state, then its local checkpoint.
 * The caller holds a->mu. */
static int agent_finish_load(node *n, node_agent *a, char *err, size_t errlen)
{
	if (__atomic_load_n(&a->loaded, __ATOMIC_ACQUIRE))
		return 0;
	int failed_before = a->load_rc != 0;
	double t0 = mono_msf();
	int rc = node_agent_load(a, err, errlen);
	if (rc) {
		if (!failed_before)
			LOGE(n, "agent %s cannot load: %s", a->name, err);
		return rc;
	}
	const char *from = "";
	if (a->stateful)
		from = ckpt_load_local(n, a) ? ", state from the local checkpoint" : ", state from zeros";
	node_agent_set_idle(a);   /* only now: the state is the restored one */
	LOGI(n, "agent %s loaded in %.1f ms (model shared by %d agents%s)", a->name, mono_msf() - t0,
	     node_model_refs(&n->models, a->model), from);
	return 0;
}

/* The dispatcher's loader hook (node_disp_set_loader). */
static int disp_load(void *ctx, node_agent *a, char *err, size_t errlen)
{
	return agent_finish_load(ctx, a, err, errlen);
}

/* After the ready line: loads the agents the boot left lazy, in name
 * order, so their first requests find them ready. A request that comes
 * first loads its agent itself (under the same mutex). */
static void *loader_main(void *arg)
{
	node *n = arg;
	node_agent **list;
	int cnt;
	if (node_table_list(&n->table, &list, &cnt))
		return NULL;
	double t0 = mono_msf();
	int k = 0;
	for (int i = 0; i < cnt; i++) {
		node_agent *a = list[i];
		if (!__atomic_load_n(&n->stop, __ATOMIC_ACQUIRE) && !__atomic_load_n(&a->loaded, __ATOMIC_ACQUIRE)) {
			char e[600];
			pthread_mutex_lock(&a->mu);
			k += !agent_finish_load(n, a, e, sizeof e);
			pthread_mutex_unlock(&a->mu);
		}
		node_agent_unref(a);
	}
	pool_free(list);
	if (k)
		LOGI(n, "%d agents loaded after boot in %.1f ms", k, mono_msf() - t0);
	return NULL;
}

/* A request of the data plane or Node.Infer on its way through the
 * dispatcher: done() turns the outputs into the reply and emits it on the
 * worker, while the outputs are valid. */
typedef struct serve_call {
	node_emit_fn emit;
	void *arg;
	int rc;
	char *err;
	size_t errlen;
} serve_call;

static void serve_done(node_job *j, int rc, const char *msg)
{
	serve_call *c = j->user;
	Aidos__Tensor opb[NODE_MAX_INPUTS], *opp[NODE_MAX_INPUTS];
	Aidos__InferReply rep = AIDOS__INFER_REPLY__INIT;
	char why[300];

	c->rc = rc;
	if (rc) {
		fail(c->err, c->errlen, rc, "%s", msg);
		return;
	}
	for (int i = 0; i < j->nout; i++) {
		aidos__tensor__init(&opb[i]);
		if (aidos_wire_tensor_to_pb(&j->out[i], &opb[i], why, sizeof why)) {
			c->rc = fail(c->err, c->errlen, AIDOS_E_RUNTIME, "agent %s: output cannot be sent: %s",
				     j->agent->name, why);
			node_job_reply_failed(j);
			return;
		}
		opp[i] = &opb[i];
	}
	rep.n_outputs = (size_t)j->nout;
	rep.outputs = opp;
	rep.exec_ms = j->exec_ms;
	if ((rc = c->emit(c->arg, &rep))) {
		c->rc = fail(c->err, c->errlen, rc, "agent %s: the reply cannot be made: %s", j->agent->name,
			     aidos_strerror(rc));
		node_job_reply_failed(j);
	}
}

/* The data plane's and Node.Infer's request runner (node_serve_fn): checks
 * the request, runs it through the dispatcher at the agent's priority and
 * deadline, and waits. */
static int serve(void *ctx, const Aidos__InferRequest *req, node_emit_fn emit, void *arg, char *err,
		 size_t errlen)
{
	node *n = ctx;
	aidos_tensor in[NODE_MAX_INPUTS], outs[NODE_MAX_INPUTS];
	node_agent *a;
	int rc, k;

	if (!node_name_valid(req->agent))
		return fail(err, errlen, AIDOS_E_INVALID, "invalid agent name '%.64s'", req->agent);
	if (!(a = node_table_get(&n->table, req->agent)))
		return fail(err, errlen, AIDOS_E_NOTFOUND, "no agent '%s' on node %s", req->agent, n->name);
	if (!__atomic_load_n(&a->loaded, __ATOMIC_ACQUIRE)) {   /* bind_inputs needs its model */
		pthread_mutex_lock(&a->mu);
		rc = agent_finish_load(n, a, err, errlen);
		pthread_mutex_unlock(&a->mu);
		if (rc) {
			node_agent_unref(a);
			return rc;
		}
	}
	if ((k = bind_inputs(a, req, in, err, errlen)) < 0) {
		node_agent_unref(a);
		return k;
	}
	serve_call c = { .emit = emit, .arg = arg, .err = err, .errlen = errlen };
	node_job j = { .agent = a, .in = in, .nin = k, .out = outs, .nout = NODE_MAX_INPUTS,
		       .priority = NODE_PRIO_AGENT, .done = serve_done, .user = &c };
	rc = node_disp_run(n->disp, &j, err, errlen);
	if (!rc)
		rc = c.rc;
	node_agent_unref(a);
	return rc;
}

/* ---- the Node service ---- */

#define REQ(type, var, msg) const type *var = (const type *)(msg)

static int check_agent_info(const Aidos__AgentInfo *ai, const char *what, char *err, size_t errlen)
{
	if (!ai)
		return fail(err, errlen, AIDOS_E_INVALID, "%s: missing agent", what);
	if (!node_name_valid(ai->name))
		return fail(err, errlen, AIDOS_E_INVALID, "%s: invalid agent name '%.64s' (1-63 of [A-Za-z0-9._-])", what,
			    ai->name);
	if (ai->model_path[0] != '/' || strlen(ai->model_path) >= PATH_MAX)
		return fail(err, errlen, AIDOS_E_INVALID, "%s: agent %s: model path '%.200s' is not absolute", what,
			    ai->name, ai->model_path);
	return 0;
}

static int h_spawn(void *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp, char *err, size_t errlen)
{
	node *n = ctx;
	REQ(Aidos__SpawnRequest, req, m);
	Aidos__SpawnReply rep = AIDOS__SPAWN_REPLY__INIT;
	agent_view v;
	node_agent *a;
	int rc;

	if ((rc = check_agent_info(req->agent, "Spawn", err, errlen)))
		return rc;
	pthread_rwlock_rdlock(&n->reg_lock);
	if ((a = node_table_get(&n->table, req->agent->name))) {
		/* The same agent again (a retried Spawn): answer what runs. */
		if (strcmp(a->model_path, req->agent->model_path)) {
			rc = fail(err, errlen, AIDOS_E_INVALID, "agent '%s' already runs on node %s with model %s",
				  a->name, n->name, a->model_path);
			node_agent_unref(a);
			pthread_rwlock_unlock(&n->reg_lock);
			return rc;
		}
	} else if ((rc = spawn(n, req->agent, req->context, 0, &a, err, errlen))) {
		pthread_rwlock_unlock(&n->reg_lock);
		LOGW(n, "Spawn refused: %s", err);
		return rc;
	}
	pthread_rwlock_unlock(&n->reg_lock);
	agent_view_fill(n, a, &v);
	rep.agent = &v.ai;
	rc = reply(&rep, resp, err, errlen);
	node_agent_unref(a);
	return rc;
}

static int h_kill(void *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp, char *err, size_t errlen)
{
	node *n = ctx;
	REQ(Aidos__NodeKillRequest, req, m);
	Aidos__NodeKillReply rep = AIDOS__NODE_KILL_REPLY__INIT;
	int rc;
	if (!node_name_valid(req->agent))
		return fail(err, errlen, AIDOS_E_INVALID, "Kill: invalid agent name '%.64s'", req->agent);
	if ((rc = drop_agent(n, req->agent, "killed", err, errlen)))
		return rc;
	return reply(&rep, resp, err, errlen);
}

static int h_release(void *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp, char *err, size_t errlen)
{
	node *n = ctx;
	REQ(Aidos__ReleaseContextRequest, req, m);
	Aidos__ReleaseContextReply rep = AIDOS__RELEASE_CONTEXT_REPLY__INIT;
	int rc;
	if (!node_name_valid(req->agent))
		return fail(err, errlen, AIDOS_E_INVALID, "ReleaseContext: invalid agent name '%.64s'", req->agent);
	if ((rc = drop_agent(n, req->agent, "released (its context moved to another node)", err, errlen)))
		return rc;
	return reply(&rep, resp, err, errlen);
}

static int h_export(void *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp, char *err, size_t errlen)
{
	node *n = ctx;
	REQ(Aidos__ExportContextRequest, req, m);
	Aidos__ExportContextReply rep = AIDOS__EXPORT_CONTEXT_REPLY__INIT;
	Aidos__Tensor lay[NODE_MAX_STATE], *layp[NODE_MAX_STATE];
	node_agent *a;
	const void *addr, *rkey;
	size_t alen, rlen;
	int rc;

	if (!node_name_valid(req->agent))
		return fail(err, errlen, AIDOS_E_INVALID, "ExportContext: invalid agent name '%.64s'", req->agent);
	if (!(a = node_table_get(&n->table, req->agent)))
		return fail(err, errlen, AIDOS_E_NOTFOUND, "no agent '%s' on node %s", req->agent, n->name);
	if (!a->stateful) {
		rc = fail(err, errlen, AIDOS_E_INVALID, "agent '%s' is stateless: it has no context to export", a->name);
		goto out_unref;
	}
	if (!n->x) {
		rc = fail(err, errlen, AIDOS_E_UNSUPPORTED, "node %s runs without a transport: cannot export", n->name);
		goto out_unref;
	}
	/* Waits for the request in flight: the exported bytes are final. */
	pthread_mutex_lock(&a->mu);
	pthread_mutex_lock(&a->smu);
	if (a->state_now == AIDOS__AGENT_STATE__AGENT_DEAD) {
		pthread_mutex_unlock(&a->smu);
		rc = fail(err, errlen, AIDOS_E_NOTFOUND, "no agent '%s' on node %s (just removed)", a->name, n->name);
		goto out_unlock;
	}
	int was = a->frozen;
	a->frozen = req->freeze;
	a->state_now = req->freeze ? AIDOS__AGENT_STATE__AGENT_MIGRATING : AIDOS__AGENT_STATE__AGENT_IDLE;
	uint64_t version = a->version;
	pthread_mutex_unlock(&a->smu);
	if (!a->ctx_mem && (rc = xport_mem_register(n->x, a->ctx, a->ctx_len, &a->ctx_mem))) {
		a->ctx_mem = NULL;
		pthread_mutex_lock(&a->smu);
		a->frozen = was;
		a->state_now = was ? AIDOS__AGENT_STATE__AGENT_MIGRATING : AIDOS__AGENT_STATE__AGENT_IDLE;
		pthread_mutex_unlock(&a->smu);
		fail(err, errlen, rc, "agent %s: cannot register its %zu-byte context: %s", a->name, a->ctx_len,
		     aidos_strerror(rc));
		goto out_unlock;
	}
	xport_address(n->x, &addr, &alen);
	xport_mem_rkey(a->ctx_mem, &rkey, &rlen);
	for (int i = 0; i < a->n_state; i++) {
		aidos__tensor__init(&lay[i]);
		lay[i].name = a->state[i].input;
		lay[i].dtype = a->state[i].dtype;
		lay[i].n_dims = (size_t)a->state[i].rank;
		lay[i].dims = a->state[i].dims;
		layp[i] = &lay[i];
	}
	rep.ucx_address.data = (uint8_t *)addr;
	rep.ucx_address.len = alen;
	rep.remote_addr = (uint64_t)(uintptr_t)a->ctx;
	rep.length = a->ctx_len;
	rep.rkey.data = (uint8_t *)rkey;
	rep.rkey.len = rlen;
	rep.checksum = node_ctx_checksum(a->ctx, a->ctx_len);
	rep.version = version;
	rep.n_layout = (size_t)a->n_state;
	rep.layout = layp;
	rc = reply(&rep, resp, err, errlen);
	if (!rc)
		LOGI(n, "agent %s: context %s (%zu bytes, version %" PRIu64 ", checksum %016" PRIx64 ")", a->name,
		     req->freeze ? "exported, agent frozen" : was ? "exported, agent unfrozen" : "exported", a->ctx_len,
		     version, rep.checksum);
out_unlock:
	pthread_mutex_unlock(&a->mu);
out_unref:
	node_agent_unref(a);
	return rc;
}

static int h_import(void *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp, char *err, size_t errlen)
{
	node *n = ctx;
	REQ(Aidos__ImportContextRequest, req, m);
	Aidos__ImportContextReply rep = AIDOS__IMPORT_CONTEXT_REPLY__INIT;
	const Aidos__ExportContextReply *f = req->from;
	const char *ex_in[NODE_MAX_STATE], *ex_out[NODE_MAX_STATE];
	node_agent *a;
	node_peer *pe = NULL;
	xport_ep *ep = NULL;
	agent_view v;
	char why[400];
	int rc;

	if ((rc = check_agent_info(req->agent, "ImportContext", err, errlen)))
		return rc;
	const Aidos__AgentInfo *ai = req->agent;
	if (!f)
		return fail(err, errlen, AIDOS_E_INVALID, "ImportContext: agent %s: missing source ('from')", ai->name);
	if (!f->ucx_address.len || f->ucx_address.len > MAX_UCX_ADDR || !f->rkey.len || f->rkey.len > MAX_RKEY ||
	    !f->length || f->length > NODE_MAX_CONTEXT || f->n_layout > NODE_MAX_STATE || ai->n_state > NODE_MAX_STATE)
		return fail(err, errlen, AIDOS_E_INVALID,
			    "ImportContext: agent %s: malformed source (address %zu bytes, rkey %zu bytes, length %" PRIu64
			    ", %zu layout tensors)", ai->name, f->ucx_address.len, f->rkey.len, f->length, f->n_layout);
	if (!n->x)
		return fail(err, errlen, AIDOS_E_UNSUPPORTED, "node %s runs without a transport: cannot import", n->name);
	if ((a = node_table_get(&n->table, ai->name))) {
		node_agent_unref(a);
		return fail(err, errlen, AIDOS_E_INVALID, "agent '%s' already exists on node %s", ai->name, n->name);
	}
	for (size_t i = 0; i < ai->n_state; i++) {
		if (!ai->state[i])
			return fail(err, errlen, AIDOS_E_INVALID, "agent %s: empty state pair %zu", ai->name, i);
		ex_in[i] = ai->state[i]->input;
		ex_out[i] = ai->state[i]->output;
	}
	node_agent_spec sp = { .name = ai->name, .model_path = ai->model_path, .device = ai->device,
			       .priority = ai->priority, .stateful = 1, .ex_in = ex_in, .ex_out = ex_out,
			       .n_ex = (int)ai->n_state };
	double t0 = mono_msf();
	if ((rc = node_agent_create(&n->models, n->x, &sp, &a, err, errlen)))
		return rc;
	double load_ms = mono_msf() - t0;
	if ((rc = node_layout_check(a->state, a->n_state, a->ctx_len, f->layout, f->n_layout, f->length, why,
				    sizeof why))) {
		fail(err, errlen, rc, "agent %s: the source's context does not fit this model: %s", ai->name, why);
		goto fail;
	}
	if ((rc = node_peer_get(n->peers, f->ucx_address.data, f->ucx_address.len, &pe, &ep))) {
		fail(err, errlen, rc, "agent %s: cannot connect to the source's worker: %s", ai->name, aidos_strerror(rc));
		goto fail;
	}
	t0 = mono_msf();
	rc = xport_get(n->x, ep, a->ctx, a->ctx_len, f->remote_addr, f->rkey.data, f->rkey.len, PULL_TIMEOUT_MS);
	double pull_ms = mono_msf() - t0;
	node_peer_put(n->peers, pe, rc != 0);
	if (rc) {
		fail(err, errlen, rc, "agent %s: pulling %zu bytes of context failed: %s", ai->name, a->ctx_len,
		     aidos_strerror(rc));
		goto fail;
	}
	uint64_t h = node_ctx_checksum(a->ctx, a->ctx_len);
	if (h != f->checksum) {
		rc = fail(err, errlen, AIDOS_E_INVALID,
			  "agent %s: the pulled context fails its checksum (%016" PRIx64 ", the source said %016" PRIx64
			  "); not resumed", ai->name, h, f->checksum);
		goto fail;
	}
	a->version = f->version;
	if ((rc = node_table_add(&n->table, a))) {
		fail(err, errlen, rc == -EEXIST ? AIDOS_E_INVALID : rc, "agent '%s' already exists on node %s", ai->name,
		     n->name);
		rc = rc == -EEXIST ? AIDOS_E_INVALID : rc;
		goto fail;
	}
	LOGI(n, "agent %s imported: model loaded in %.1f ms, %zu bytes of context (version %" PRIu64
	     ") pulled in %.3f ms, checksum ok", a->name, load_ms, a->ctx_len, a->version, pull_ms);
	agent_view_fill(n, a, &v);
	rep.agent = &v.ai;
	rep.pull_ms = pull_ms;
	rc = reply(&rep, resp, err, errlen);
	node_agent_unref(a);
	return rc;
fail:
	LOGW(n, "ImportContext refused: %s", err);
	node_agent_unref(a);
	return rc;
}

typedef struct grpc_emit {
	ProtobufCMessage *out;
} grpc_emit;

static int emit_dup(void *arg, const Aidos__InferReply *rep)
{
	grpc_emit *g = arg;
	if (protobuf_c_message_get_packed_size(&rep->base) > RPC_MAX_MESSAGE)
		return AIDOS_E_RANGE;
	return (g->out = dup_msg(rep)) ? 0 : AIDOS_E_NOMEM;
}

static int h_infer(void *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp, char *err, size_t errlen)
{
	node *n = ctx;
	grpc_emit g = { NULL };
	__atomic_add_fetch(&n->grpc_inflight, 1, __ATOMIC_RELAXED);
	int rc = serve(n, (const Aidos__InferRequest *)m, emit_dup, &g, err, errlen);
	__atomic_sub_fetch(&n->grpc_inflight, 1, __ATOMIC_RELAXED);
	if (rc) {
		if (g.out)
			protobuf_c_message_free_unpacked(g.out, NULL);
		return rc;
	}
	*resp = g.out;
	return 0;
}

/* NodeInfo with borrowed parts (d and dp are the caller's storage). */
static void node_info_fill(node *n, Aidos__NodeInfo *ni, Aidos__Device *d, Aidos__Device **dp)
{
	const void *addr = NULL;
	size_t alen = 0;
	aidos__node_info__init(ni);
	aidos__device__init(d);
	ni->name = n->name;
	ni->rpc_addr = n->rpc_addr;
	ni->transport = n->transport;
	ni->transport_reason = n->reason;
	if (n->x)
		xport_address(n->x, &addr, &alen);
	ni->ucx_address.data = (uint8_t *)addr;
	ni->ucx_address.len = alen;
	d->kind = "cpu";
	d->name = n->cpu_name;
	d->mem_bytes = n->mem_total;
	d->cores = n->cores;
	*dp = d;
	ni->n_devices = 1;
	ni->devices = dp;
	ni->mem_total = n->mem_total;
	ni->mem_free = meminfo("MemAvailable");
	ni->queue_len = node_queue_len(n);
	ni->state = AIDOS__NODE_STATE__NODE_READY;
	ni->n_agents = (uint32_t)node_table_count(&n->table);
	ni->boot_ms = n->boot_ms;
	ni->lease_ms = n->lease_ms;
	ni->heartbeat_ms = n->hb_ms;
}

/* AgentInfo views of every agent; *views and *ptrs: pool memory. */
static int agents_views(node *n, agent_view **views, Aidos__AgentInfo ***ptrs, node_agent ***list, int *cnt)
{
	int rc = node_table_list(&n->table, list, cnt);
	if (rc)
		return rc;
	*views = pool_calloc((size_t)*cnt + 1, sizeof **views);
	*ptrs = pool_calloc((size_t)*cnt + 1, sizeof **ptrs);
	if (!*views || !*ptrs) {
		pool_free(*views);
		pool_free(*ptrs);
		for (int i = 0; i < *cnt; i++)
			node_agent_unref((*list)[i]);
		pool_free(*list);
		return AIDOS_E_NOMEM;
	}
	for (int i = 0; i < *cnt; i++) {
		agent_view_fill(n, (*list)[i], &(*views)[i]);
		(*ptrs)[i] = &(*views)[i].ai;
	}
	return 0;
}

static void agents_views_free(agent_view *views, Aidos__AgentInfo **ptrs, node_agent **list, int cnt)
{
	for (int i = 0; i < cnt; i++)
		node_agent_unref(list[i]);
	pool_free(list);
	pool_free(views);
	pool_free(ptrs);
}

static int h_status(void *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp, char *err, size_t errlen)
{
	node *n = ctx;
	Aidos__StatusReply rep = AIDOS__STATUS_REPLY__INIT;
	Aidos__NodeInfo ni;
	Aidos__Device d, *dp;
	agent_view *views;
	Aidos__AgentInfo **ptrs;
	node_agent **list;
	int cnt, rc;
	(void)m;
	node_info_fill(n, &ni, &d, &dp);
	if ((rc = agents_views(n, &views, &ptrs, &list, &cnt)))
		return fail(err, errlen, rc, "out of memory");
	rep.node = &ni;
	rep.n_agents = (size_t)cnt;
	rep.agents = ptrs;
	rc = reply(&rep, resp, err, errlen);
	agents_views_free(views, ptrs, list, cnt);
	return rc;
}

#define METHOD(name, req, fn) { "/aidos.Node/" name, &aidos__##req##__descriptor, fn, NULL }

static const rpc_method methods[] = {
	METHOD("Spawn", spawn_request, h_spawn),
	METHOD("Kill", node_kill_request, h_kill),
	METHOD("ExportContext", export_context_request, h_export),
	METHOD("ImportContext", import_context_request, h_import),
	METHOD("ReleaseContext", release_context_request, h_release),
	METHOD("Infer", infer_request, h_infer),
	METHOD("Status", status_request, h_status),
};

int node_call(node *n, const char *method, const ProtobufCMessage *req, ProtobufCMessage **resp, char *err,
	      size_t errlen)
{
	*resp = NULL;
	for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
		if (strcmp(methods[i].path, method))
			continue;
		if (!req || req->descriptor != methods[i].req_desc)
			return fail(err, errlen, AIDOS_E_INVALID, "%s: request is not a %s", method,
				    methods[i].req_desc->name);
		err[0] = 0;
		int rc = methods[i].fn(n, req, resp, err, errlen);
		if (rc && *resp) {
			protobuf_c_message_free_unpacked(*resp, NULL);
			*resp = NULL;
		}
		return rc;
	}
	return fail(err, errlen, AIDOS_E_UNSUPPORTED, "unknown method '%s'", method ? method : "(null)");
}

/* ---- the coordinator link ---- */

/* Registers once; on success restores the agents the reply lists and drops
 * those it does not (they were placed elsewhere while this node was
 * counted dead). */
static int register_once(node *n, char *err, size_t errlen)
{
	Aidos__RegisterNodeRequest req = AIDOS__REGISTER_NODE_REQUEST__INIT;
	Aidos__RegisterNodeReply *rep = NULL;
	Aidos__NodeInfo ni;
	Aidos__Device d, *dp;
	node_agent **before = NULL;
	int nbefore = 0, rc;

	if (!n->boot_ms)
		n->boot_ms = mono_msf() - n->o.t0_ms;
	node_info_fill(n, &ni, &d, &dp);
	req.node = &ni;
	pthread_rwlock_wrlock(&n->reg_lock);
	if (node_table_list(&n->table, &before, &nbefore))
		nbefore = 0;
	rc = rpc_call(n->coord, "/aidos.Coordinator/RegisterNode", &req.base, &aidos__register_node_reply__descriptor,
		      (ProtobufCMessage **)&rep, REGISTER_DEADLINE_MS, err, errlen);
	if (rc)
		goto out;
	if (!n->o.heartbeat_ms)
		n->hb_ms = rep->heartbeat_ms ? rep->heartbeat_ms : 250;
	n->lease_ms = rep->lease_ms;
	if (n->lease_ms && n->hb_ms >= n->lease_ms)
		LOGW(n, "heartbeat every %" PRIu64 " ms is not shorter than the coordinator's lease of %" PRIu64
		     " ms: this node will be declared dead between beats", n->hb_ms, n->lease_ms);
	LOGI(n, "registered with coordinator %s: heartbeat %" PRIu64 " ms, lease %" PRIu64 " ms, %zu agents to host",
	     n->coord_addr, n->hb_ms, n->lease_ms, rep->n_agents);
	int dropped = 0;
	for (int i = 0; i < nbefore; i++) {
		int listed = 0;
		for (size_t j = 0; j < rep->n_agents && !listed; j++)
			listed = rep->agents[j] && !strcmp(rep->agents[j]->name, before[i]->name) &&
				 !strcmp(rep->agents[j]->model_path, before[i]->model_path);
		if (!listed) {
			char e[300];
			drop_agent(n, before[i]->name, "dropped: the coordinator placed it elsewhere", e, sizeof e);
			dropped++;
		}
	}
	if (nbefore)
		LOGI(n, "registered again with %d agents running: %d kept (the coordinator lists them), %d dropped",
		     nbefore, nbefore - dropped, dropped);
	for (size_t j = 0; j < rep->n_agents; j++) {
		const Aidos__AgentInfo *ai = rep->agents[j];
		node_agent *a;
		char e[600];
		if (!ai || check_agent_info(ai, "restore", e, sizeof e)) {
			LOGW(n, "restore: skipping a malformed agent entry");
			continue;
		}
		if ((a = node_table_get(&n->table, ai->name))) {
			node_agent_unref(a);   /* still here */
			continue;
		}
		if (spawn(n, ai, NULL, 1, NULL, e, sizeof e))
			LOGE(n, "restore of agent %s failed: %s", ai->name, e);
	}
out:
	pthread_rwlock_unlock(&n->reg_lock);
	for (int i = 0; i < nbefore; i++)
		node_agent_unref(before[i]);
	pool_free(before);
	if (rep)
		protobuf_c_message_free_unpacked(&rep->base, NULL);
	return rc;
}

/* Snapshots of the checkpoints to send with this beat. */
typedef struct beat_ckpts {
	node_ckpt *c;
	node_agent **who;
	uint64_t *ver;
	int n;
} beat_ckpts;

static void heartbeat_once(node *n, unsigned beat, int *failing)
{
	Aidos__HeartbeatRequest req = AIDOS__HEARTBEAT_REQUEST__INIT;
	Aidos__HeartbeatReply *rep = NULL;
	agent_view *views;
	Aidos__AgentInfo **ptrs;
	node_agent **list;
	Aidos__AgentContext **cps = NULL;
	beat_ckpts bc = { 0 };
	char err[512];
	int cnt, rc;

	if (agents_views(n, &views, &ptrs, &list, &cnt))
		return;
	bc.c = pool_calloc((size_t)cnt + 1, sizeof *bc.c);
	bc.who = pool_calloc((size_t)cnt + 1, sizeof *bc.who);
	bc.ver = pool_calloc((size_t)cnt + 1, sizeof *bc.ver);
	cps = pool_calloc((size_t)cnt + 1, sizeof *cps);
	for (int i = 0; bc.c && bc.who && bc.ver && cps && i < cnt; i++) {
		node_agent *a = list[i];
		if (!a->stateful || a->ctx_len > AIDOS_WIRE_MAX_CHECKPOINT)
			continue;
		pthread_mutex_lock(&a->smu);
		int due = a->version != a->ckpt_sent || (a->version && beat % CKPT_RESEND == 0);
		if (due && !node_ckpt_pack(a->name, a->state, a->n_state, a->ctx, a->ctx_len, a->version, &bc.c[bc.n])) {
			bc.who[bc.n] = a;
			bc.ver[bc.n] = a->version;
			cps[bc.n] = &bc.c[bc.n].msg;
			bc.n++;
		}
		pthread_mutex_unlock(&a->smu);
	}
	req.node = n->name;
	req.mem_free = meminfo("MemAvailable");
	req.queue_len = node_queue_len(n);
	req.n_agents = (size_t)cnt;
	req.agents = ptrs;
	req.n_checkpoints = (size_t)bc.n;
	req.checkpoints = cps;
	/* The lanes UCX really uses are known only after the first transfer:
	 * report the transport as it is now, not as it was at registration. */
	char reason[sizeof n->reason];
	if (n->x) {
		const char *tname, *why;
		xport_describe(n->x, &tname, &why);
		snprintf(reason, sizeof reason, "%s: %s", n->tmode, why);
		req.transport = (char *)tname;
		req.transport_reason = reason;
	}
	/* Two periods, or half the lease when that is longer: a coordinator
	 * slow to answer (a loaded host, a VM) still counts a beat it reads
	 * late, and a beat given up on too early is a missed one. */
	uint64_t dl = n->hb_ms * 2 > n->lease_ms / 2 ? n->hb_ms * 2 : n->lease_ms / 2;
	int deadline = (int)(dl < 300 ? 300 : dl > 10000 ? 10000 : dl);
	rc = rpc_call(n->coord, "/aidos.Coordinator/Heartbeat", &req.base, &aidos__heartbeat_reply__descriptor,
		      (ProtobufCMessage **)&rep, deadline, err, sizeof err);

	/* Local copies whether or not the coordinator heard: a restart of
	 * this node resumes from them. */
	for (int i = 0; i < bc.n; i++) {
		node_agent *a = bc.who[i];
		size_t len = protobuf_c_message_get_packed_size(&bc.c[i].msg.base);
		uint8_t *buf = pool_malloc(len ? len : 1);
		char path[PATH_MAX];
		if (bc.ver[i] != a->ckpt_sent && buf) {
			protobuf_c_message_pack(&bc.c[i].msg.base, buf);
			ckpt_path(n, a->name, path, sizeof path);
			pthread_mutex_lock(&a->smu);
			int alive = a->state_now != AIDOS__AGENT_STATE__AGENT_DEAD;
			pthread_mutex_unlock(&a->smu);
			int w = alive ? write_file(path, buf, len) : 0;
			if (w)
				LOGW(n, "agent %s: cannot write local checkpoint %s: %s", a->name, path, strerror(-w));
		}
		pool_free(buf);
		if (!rc)
			a->ckpt_sent = bc.ver[i];
		node_ckpt_fini(&bc.c[i]);
	}
	if (rc) {
		if (!*failing)
			LOGW(n, "heartbeat to %s failed: %s (retrying every %" PRIu64 " ms)", n->coord_addr, err, n->hb_ms);
		*failing = 1;
	} else {
		if (*failing)
			LOGI(n, "heartbeat to %s answered again", n->coord_addr);
		*failing = 0;
		if (!rep->known) {
			LOGW(n, "the coordinator does not know this node (restarted without it, or declared it dead): "
				"registering again");
			if (register_once(n, err, sizeof err))
				LOGW(n, "registering again failed: %s", err);
		}
	}
	if (rep)
		protobuf_c_message_free_unpacked(&rep->base, NULL);
	pool_free(bc.c);
	pool_free(bc.who);
	pool_free(bc.ver);
	pool_free(cps);
	agents_views_free(views, ptrs, list, cnt);
}

static void *hb_main(void *arg)
{
	node *n = arg;
	unsigned beat = 0;
	int failing = 0;
	while (!nap(n, n->hb_ms)) {
		double t = mono_msf();
		heartbeat_once(n, ++beat, &failing);
		t = mono_msf() - t;
		if (n->lease_ms && t > (double)n->lease_ms / 2)
			LOGW(n, "a heartbeat took %.0f ms (lease %" PRIu64 " ms): the coordinator or this host is slow",
			     t, n->lease_ms);
	}
	return NULL;
}

/* Every 10 s closes client endpoints idle for PEER_IDLE_MS. Its own thread:
 * closing an endpoint can wait on its transport (a verbs disconnect under
 * load), and heartbeats carry this node's liveness. */
static void *sweeper_main(void *arg)
{
	node *n = arg;
	while (!nap(n, 10000)) {
		int k = node_peers_sweep(n->peers, PEER_IDLE_MS);
		if (k)
			LOGI(n, "closed %d idle client endpoints", k);
	}
	return NULL;
}

/* ---- lifecycle ---- */

static void probe_cpu(node *n)
{
	FILE *f = fopen("/proc/cpuinfo", "re");
	char line[512], model[200] = "cpu";
	if (f) {
		while (fgets(line, sizeof line, f))
			if (!strncmp(line, "model name", 10)) {
				char *p = strchr(line, ':');
				if (p) {
					p++;
					while (*p == ' ')
						p++;
					p[strcspn(p, "\n")] = 0;
					snprintf(model, sizeof model, "%s", p);
				}
				break;
			}
		fclose(f);
	}
	const char *isa = "scalar";
#if defined(__x86_64__)
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512f"))
		isa = "avx512";
	else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
		isa = "avx2";
	else if (__builtin_cpu_supports("sse4.2"))
		isa = "sse4.2";
#endif
	snprintf(n->cpu_name, sizeof n->cpu_name, "%s (%s)", model, isa);
	/* The cores this node may run on (taskset, cpuset, systemd
	 * CPUAffinity), not the machine's: they size the dispatcher's workers
	 * and the coordinator's view of this node's capacity. */
	cpu_set_t cs;
	long c = sched_getaffinity(0, sizeof cs, &cs) ? sysconf(_SC_NPROCESSORS_ONLN) : CPU_COUNT(&cs);
	n->cores = c > 0 ? (uint32_t)c : 1;
	n->mem_total = meminfo("MemTotal");
}

/* Splits "host:port" ("[v6]:port" too) into host and port. */
static int split_hostport(const char *s, char *host, size_t hlen, char *port, size_t plen)
{
	const char *c;
	if (!s || !*s)
		return -1;
	if (s[0] == '[') {
		const char *e = strchr(s, ']');
		if (!e || e[1] != ':')
			return -1;
		snprintf(host, hlen, "%.*s", (int)(e - s - 1), s + 1);
		c = e + 1;
	} else {
		c = strrchr(s, ':');
		if (!c || c == s)
			return -1;
		snprintf(host, hlen, "%.*s", (int)(c - s), s);
	}
	snprintf(port, plen, "%s", c + 1);
	return port[0] ? 0 : -1;
}

/* The local address this host uses to reach the coordinator (a UDP
 * "connect" sends nothing; it only asks the kernel for a route). */
static int local_addr_towards(const char *hostport, char *out, size_t len)
{
	char host[256], port[32];
	struct addrinfo hints = { .ai_socktype = SOCK_DGRAM }, *res = NULL;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	int fd, rc = -1;
	if (split_hostport(hostport, host, sizeof host, port, sizeof port) || getaddrinfo(host, port, &hints, &res))
		return -1;
	if ((fd = socket(res->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0)) >= 0) {
		if (!connect(fd, res->ai_addr, res->ai_addrlen) && !getsockname(fd, (struct sockaddr *)&ss, &sl)) {
			if (ss.ss_family == AF_INET)
				rc = inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, out, (socklen_t)len) ? 0 : -1;
			else if (ss.ss_family == AF_INET6 && len > 2) {
				char a[INET6_ADDRSTRLEN];
				if (inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, a, sizeof a)) {
					snprintf(out, len, "[%s]", a);
					rc = 0;
				}
			}
		}
		close(fd);
	}
	freeaddrinfo(res);
	return rc;
}

static char *dupstr(const char *s)
{
	return s ? pool_strndup(s, strlen(s)) : NULL;
}

int node_create(const node_opts *o, node **out, char *err, size_t errlen)
{
	node *n;
	char host[256], port[32];
	int rc;

	*out = NULL;
	if (!o || !o->name || !o->data_dir)
		return fail(err, errlen, AIDOS_E_INVALID, "--name and --data-dir are required");
	if (!node_name_valid(o->name))
		return fail(err, errlen, AIDOS_E_INVALID, "invalid node name '%.64s' (1-63 of [A-Za-z0-9._-])", o->name);
	if (o->coord && split_hostport(o->coord, host, sizeof host, port, sizeof port))
		return fail(err, errlen, AIDOS_E_INVALID, "--coord '%s': want HOST:PORT", o->coord);
	if (o->listen && split_hostport(o->listen, host, sizeof host, port, sizeof port))
		return fail(err, errlen, AIDOS_E_INVALID, "--listen '%s': want HOST:PORT", o->listen);
	if (o->advertise && split_hostport(o->advertise, host, sizeof host, port, sizeof port))
		return fail(err, errlen, AIDOS_E_INVALID, "--advertise '%s': want HOST:PORT", o->advertise);
	/* Standalone, the data plane (for remote clients) is off unless asked
	 * for: local clients use the socket, and UCX's start is most of a
	 * boot. */
	const char *tr = o->transport ? o->transport : o->coord ? "auto" : "none";
	if (strcmp(tr, "auto") && strcmp(tr, "verbs") && strcmp(tr, "ucx") && strcmp(tr, "tcp") && strcmp(tr, "none"))
		return fail(err, errlen, AIDOS_E_INVALID, "--transport '%s': want auto, verbs, ucx, tcp or none", tr);
	if (strlen(o->data_dir) > PATH_MAX - 200)
		return fail(err, errlen, AIDOS_E_INVALID, "--data-dir: path too long");

	if (!(n = pool_calloc(1, sizeof *n)))
		return fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
	n->o = *o;
	snprintf(n->name, sizeof n->name, "%s", o->name);
	n->standalone = !o->coord;
	n->want_rpc = o->coord || o->listen;
	n->coord_addr = dupstr(o->coord ? o->coord : "");
	n->socket = dupstr(o->socket);
	n->data_dir = dupstr(o->data_dir);
	n->listen = dupstr(o->listen ? o->listen : "0.0.0.0:0");
	n->ckpt_dir = pool_malloc(strlen(o->data_dir) + 16);
	n->o.coord = o->coord ? n->coord_addr : NULL;
	n->o.socket = n->socket;
	n->o.data_dir = n->data_dir;
	n->o.listen = n->listen;
	n->o.advertise = NULL;
	n->o.transport = NULL;
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);   /* nap() waits on the monotonic clock */
	pthread_mutex_init(&n->mu, NULL);
	pthread_rwlock_init(&n->reg_lock, NULL);
	pthread_cond_init(&n->cv, &ca);
	pthread_condattr_destroy(&ca);
	node_models_init(&n->models);
	node_table_init(&n->table);
	n->hb_ms = o->heartbeat_ms ? o->heartbeat_ms : 250;
	if (o->advertise)
		snprintf(n->rpc_addr, sizeof n->rpc_addr, "%s", o->advertise);
	if (!n->coord_addr || !n->data_dir || !n->listen || !n->ckpt_dir || (o->socket && !n->socket)) {
		node_destroy(n);
		return fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
	}
	sprintf(n->ckpt_dir, "%s/agents", n->data_dir);
	if ((mkdir(n->data_dir, 0755) && errno != EEXIST) || (mkdir(n->ckpt_dir, 0755) && errno != EEXIST)) {
		rc = -errno;
		fail(err, errlen, rc, "cannot create %s: %s", n->ckpt_dir, strerror(errno));
		node_destroy(n);
		return rc;
	}

	double t = mono_msf();
	probe_cpu(n);
	LOGI(n, "probe: %s, %u cores, %.1f GiB memory (%.2f ms)", n->cpu_name, n->cores,
	     (double)n->mem_total / (double)(1ull << 30), mono_msf() - t);

	/* The transport: reported, never silent. */
	t = mono_msf();
	xport_opts xo = { 0 };
	char xerr[512] = "";
	rc = strcmp(tr, "none") ? xport_open_auto(tr, &xo, &n->x, n->tmode, sizeof n->tmode, xerr, sizeof xerr) : 0;
	if (!strcmp(tr, "none")) {
		n->x = NULL;
		snprintf(n->transport, sizeof n->transport, "none");
		snprintf(n->reason, sizeof n->reason, "--transport none%s: no data plane; local clients use the socket",
			 o->transport ? "" : " (standalone default)");
	} else if (rc) {
		n->x = NULL;
		if (strcmp(tr, "auto")) {
			fail(err, errlen, rc, "--transport %s cannot start: %s", tr, xerr);
			node_destroy(n);
			return rc;
		}
		snprintf(n->transport, sizeof n->transport, "none");
		snprintf(n->reason, sizeof n->reason,
			 "--transport auto: UCX cannot start (%s); data plane off, requests only through Node.Infer",
			 xerr);
	} else {
		const char *name, *why;
		xport_describe(n->x, &name, &why);
		snprintf(n->transport, sizeof n->transport, "%s", name);
		snprintf(n->reason, sizeof n->reason, "%s: %s", n->tmode, why);
		if ((rc = node_peers_create(n->x, &n->peers))) {
			fail(err, errlen, rc, "out of memory");
			node_destroy(n);
			return rc;
		}
	}
	LOGI(n, "transport=%s (%s) in %.1f ms", n->transport, n->reason, mono_msf() - t);
	*out = n;
	return 0;
}

/* Records agent a in the node's store (DATA_DIR/agents/NAME.agent).
 * Logged on failure: the agent runs whether or not the disk took it. */
static void store_put(node *n, node_agent *a)
{
	const char *in[NODE_MAX_STATE], *out[NODE_MAX_STATE];
	char e[400];
	for (int k = 0; k < a->n_state; k++) {
		in[k] = a->state[k].input;
		out[k] = a->state[k].output;
	}
	node_spawn_spec sp = { .name = a->name, .model_path = a->model_path, .device = a->device,
			       .priority = a->priority, .quota = a->quota, .deadline_ms = a->deadline_ms,
			       .stateful = a->stateful, .ex_in = in, .ex_out = out, .n_ex = a->n_state,
			       .batch_max = a->batch_max };
	if (node_store_put(n->ckpt_dir, &sp, e, sizeof e))
		LOGW(n, "agent store: %s", e);
}

/* Writes the local checkpoint of every stateful agent (standalone
 * shutdown: no heartbeat carries them anywhere). */
static void ckpt_save_all(node *n)
{
	node_agent **list;
	int cnt;
	if (node_table_list(&n->table, &list, &cnt))
		return;
	for (int i = 0; i < cnt; i++) {
		node_agent *a = list[i];
		node_ckpt c;
		if (__atomic_load_n(&a->loaded, __ATOMIC_ACQUIRE) && a->stateful && a->version &&
		    !node_ckpt_pack(a->name, a->state, a->n_state, a->ctx, a->ctx_len, a->version, &c)) {
			size_t len = protobuf_c_message_get_packed_size(&c.msg.base);
			uint8_t *buf = pool_malloc(len ? len : 1);
			char path[PATH_MAX];
			if (buf) {
				protobuf_c_message_pack(&c.msg.base, buf);
				ckpt_path(n, a->name, path, sizeof path);
				int w = write_file(path, buf, len);
				if (w)
					LOGW(n, "agent %s: cannot write local checkpoint %s: %s", a->name, path, strerror(-w));
			}
			pool_free(buf);
			node_ckpt_fini(&c);
		}
		node_agent_unref(a);
	}
	pool_free(list);
}

/* store restore: one agent line */
typedef struct restore_ctx {
	node *n;
	int ok, failed;
} restore_ctx;

static void spec_to_agent_spec(const node_spawn_spec *s, node_agent_spec *sp)
{
	*sp = (node_agent_spec){ .name = s->name, .model_path = s->model_path, .device = s->device,
				 .priority = s->priority, .stateful = s->stateful || s->n_ex, .ex_in = s->ex_in,
				 .ex_out = s->ex_out, .n_ex = s->n_ex, .quota = s->quota,
				 .deadline_ms = s->deadline_ms, .batch_max = s->batch_max };
}

static int restore_one(void *ctx, const node_spawn_spec *s, const char *where)
{
	restore_ctx *r = ctx;
	node_agent_spec sp;
	node_agent *a = NULL;
	char e[600] = "";
	int rc;
	if (!s) {
		LOGE(r->n, "restore: %s is unreadable or malformed; skipped", where);
		r->failed++;
		return 0;
	}
	if ((a = node_table_get(&r->n->table, s->name))) {
		node_agent_unref(a);
		return 0;
	}
	spec_to_agent_spec(s, &sp);
	/* Lazy: the model is decoded after the ready line (loader_main) or by
	 * the agent's first request, so boot does not wait for every model. */
	if ((rc = node_agent_create_lazy(&r->n->models, r->n->x, &sp, &a, e, sizeof e)) ||
	    (rc = node_table_add(&r->n->table, a))) {
		if (a && rc)
			node_agent_unref(a);
		LOGE(r->n, "restore of agent %s (%s) failed: %s", s->name, where,
		     rc == -EEXIST ? "an agent of that name exists" : e);
		r->failed++;
	} else {
		node_agent_unref(a);
		r->ok++;
	}
	return 0;
}

int node_start(node *n, char *err, size_t errlen)
{
	char host[256], port[32], ip[260];
	double t;
	int rc, bound = 0;

	/* Workers first: restored agents can be asked at once. */
	t = mono_msf();
	int rw = n->o.run_workers > 0 ? n->o.run_workers : (int)n->cores;
	if ((rc = node_disp_create(rw, n->o.pin, n->o.rt_prio, n, &n->disp, err, errlen)))
		return rc;
	node_disp_set_loader(n->disp, disp_load, n);
	LOGI(n, "dispatcher: %d workers%s%s, queue %d per device (%.1f ms)", rw, n->o.pin ? " pinned to cores" : "",
	     rw >= 2 ? (n->o.rt_prio > 0 ? ", the last kept for the top priority class (SCHED_FIFO)"
					 : ", the last kept for the top priority class") : "",
	     NODE_QUEUE_MAX, mono_msf() - t);

	/* Agents: standalone, the node's own store; then the config's. With a
	 * coordinator, the agents it lists (at registration, below). */
	t = mono_msf();
	restore_ctx r = { .n = n };
	n->quiet_spawn = 1;
	char why[400] = "";
	if (n->standalone && (rc = node_store_load(n->ckpt_dir, restore_one, &r, why, sizeof why))) {
		n->quiet_spawn = 0;
		return fail(err, errlen, rc, "agent store %s: %s", n->ckpt_dir, strerror(-rc));
	}
	int stored = r.ok;
	/* With a coordinator it places the agents (and registration drops
	 * any it does not list): the config's agent lines are for a
	 * standalone node. */
	if (!n->standalone && n->o.n_boot_agents)
		LOGW(n, "%d agent lines of the config ignored: the coordinator %s places agents (aidosctl place)",
		     n->o.n_boot_agents, n->coord_addr);
	for (int i = 0; n->standalone && i < n->o.n_boot_agents; i++)
		restore_one(&r, &n->o.boot_agents[i], "the config");
	n->quiet_spawn = 0;
	if (r.ok || r.failed)
		LOGI(n, "%d agents restored from the store, %d from the config, %d failed, %d models (%.1f ms)", stored,
		     r.ok - stored, r.failed, node_models_count(&n->models, NULL), mono_msf() - t);

	if (n->want_rpc) {
		rpc_init();
		n->rpc_ref++;
	}
	if (!n->standalone && (rc = rpc_client_create(n->coord_addr, &n->coord)))
		return fail(err, errlen, rc, "cannot open a channel to the coordinator %s: %s", n->coord_addr,
			    aidos_strerror(rc));

	/* The Node service: always with a coordinator; standalone only when
	 * asked for (--listen). */
	if (n->rpc_ref) {
		t = mono_msf();
		int n_methods = (int)(sizeof methods / sizeof methods[0]);
		if ((rc = rpc_server_start(n->listen, methods, n_methods, n, n->o.rpc_threads > 0 ? n->o.rpc_threads : 8,
					   &n->srv, &bound, err, errlen))) {
			n->srv = NULL;
			return rc;
		}
		if (!n->rpc_addr[0]) {
			split_hostport(n->listen, host, sizeof host, port, sizeof port);
			if (!strcmp(host, "0.0.0.0") || !strcmp(host, "::") || !strcmp(host, "[::]") || !host[0]) {
				if (n->standalone || local_addr_towards(n->coord_addr, ip, sizeof ip))
					snprintf(ip, sizeof ip, "127.0.0.1");
			} else {
				snprintf(ip, sizeof ip, "%s", host);
			}
			snprintf(n->rpc_addr, sizeof n->rpc_addr, "%.200s:%d", ip, bound);
		}
		LOGI(n, "Node service on %s (advertised as %s) in %.1f ms", n->listen, n->rpc_addr, mono_msf() - t);
	} else {
		snprintf(n->rpc_addr, sizeof n->rpc_addr, "none");
	}

	if (n->x) {
		int w = n->o.workers > 0 ? n->o.workers : (n->cores < 4 ? (int)n->cores : 4);
		if ((rc = node_dp_start(n->x, n->peers, w, serve, n, n, &n->dp, err, errlen)))
			return rc;
		LOGI(n, "data plane: %d workers, requests up to %u bytes", w, AIDOS_WIRE_MAX_MSG);
	}

	if (n->standalone) {
		n->boot_ms = mono_msf() - n->o.t0_ms;
		n->ready_ms = n->boot_ms;
		if (r.ok && !n->o.no_preload && !pthread_create(&n->loader, NULL, loader_main, n))
			n->loader_started = 1;
		return 0;
	}

	t = mono_msf();
	for (unsigned tries = 1;; tries++) {
		char e[512];
		if (!(rc = register_once(n, e, sizeof e)))
			break;
		if (tries == 1 || tries % 20 == 0)
			LOGW(n, "cannot register with coordinator %s (try %u): %s; retrying every %d ms", n->coord_addr,
			     tries, e, REGISTER_RETRY_MS);
		if (nap(n, REGISTER_RETRY_MS))
			return fail(err, errlen, -ECANCELED, "stopped before the coordinator answered");
	}
	LOGI(n, "registration and restore took %.1f ms", mono_msf() - t);

	if ((rc = pthread_create(&n->hb, NULL, hb_main, n)))
		return fail(err, errlen, -rc, "cannot start the heartbeat thread: %s", strerror(rc));
	n->hb_started = 1;
	if (n->peers) {
		if ((rc = pthread_create(&n->sweeper, NULL, sweeper_main, n)))
			return fail(err, errlen, -rc, "cannot start the endpoint sweeper thread: %s", strerror(rc));
		n->sweeper_started = 1;
	}
	n->ready_ms = mono_msf() - n->o.t0_ms;
	return 0;
}

void node_stop(node *n)
{
	pthread_mutex_lock(&n->mu);
	__atomic_store_n(&n->stop, 1, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&n->cv);
	pthread_mutex_unlock(&n->mu);
}

void node_destroy(node *n)
{
	if (!n)
		return;
	node_stop(n);
	if (n->hb_started)
		pthread_join(n->hb, NULL);
	if (n->sweeper_started)
		pthread_join(n->sweeper, NULL);
	if (n->loader_started)
		pthread_join(n->loader, NULL);
	node_dp_stop(n->dp);
	n->dp = NULL;
	/* Handlers are short (the longest, ImportContext, pulls for at most
	 * PULL_TIMEOUT_MS): 2 s of grace, then calls still in flight fail. */
	rpc_server_stop_grace(n->srv, 2000);
	n->srv = NULL;
	/* Every submitter is gone but the socket server's (stopped by its
	 * owner before this): the workers finish what runs, the rest fails. */
	node_disp_destroy(n->disp);
	n->disp = NULL;
	if (n->standalone)
		ckpt_save_all(n);   /* no coordinator keeps them: resume from disk */
	node_table_fini(&n->table);   /* agents (and their registrations) go */
	node_peers_destroy(n->peers);
	node_models_fini(&n->models);
	xport_destroy(n->x);
	rpc_client_destroy(n->coord);
	while (n->rpc_ref-- > 0)
		rpc_shutdown();
	pthread_mutex_destroy(&n->mu);
	pthread_rwlock_destroy(&n->reg_lock);
	pthread_cond_destroy(&n->cv);
	pool_free(n->coord_addr);
	pool_free(n->data_dir);
	pool_free(n->listen);
	pool_free(n->ckpt_dir);
	pool_free(n->socket);
	pool_free(n);
}

const char *node_rpc_addr(const node *n)
{
	return n->rpc_addr;
}

void node_transport(const node *n, const char **name, const char **reason)
{
	if (name)
		*name = n->transport;
	if (reason)
		*reason = n->reason;
}

double node_boot_ms(const node *n)
{
	return n->ready_ms;
}

const char *node_name(const node *n)
{
	return n->name;
}

const char *node_socket(const node *n)
{
	return n->socket;
}

/* ---- requests ---- */

int node_submit(node *n, node_job *j, char *err, size_t errlen)
{
	if (!n->disp)
		return fail(err, errlen, AIDOS_E_BUSY, "the node is not started or is stopping");
	return node_disp_submit(n->disp, j, err, errlen);
}

int node_submit_here(node *n, node_job *j, char *err, size_t errlen)
{
	if (!n->disp)
		return fail(err, errlen, AIDOS_E_BUSY, "the node is not started or is stopping");
	return node_disp_submit_here(n->disp, j, err, errlen);
}

int node_run(node *n, node_job *j, char *err, size_t errlen)
{
	if (!n->disp)
		return fail(err, errlen, AIDOS_E_BUSY, "the node is not started or is stopping");
	return node_disp_run(n->disp, j, err, errlen);
}

/* ---- the node-local API ---- */

int node_agent_spawn_local(node *n, const node_spawn_spec *s, char *err, size_t errlen)
{
	node_agent_spec sp;
	if (!s || !s->name || !s->model_path)
		return fail(err, errlen, AIDOS_E_INVALID, "spawn: name and model are required");
	if (s->n_ex < 0 || s->n_ex > NODE_MAX_STATE || (s->n_ex && (!s->ex_in || !s->ex_out)))
		return fail(err, errlen, AIDOS_E_INVALID, "agent %.64s: %d state pairs (0..%d)", s->name, s->n_ex,
			    NODE_MAX_STATE);
	spec_to_agent_spec(s, &sp);
	node_agent *a;
	int rc = spawn_sp(n, &sp, NULL, 0, &a, err, errlen);
	if (!rc) {
		store_put(n, a);
		node_agent_unref(a);
	}
	return rc;
}

int node_agent_kill_local(node *n, const char *name, char *err, size_t errlen)
{
	if (!node_name_valid(name))
		return fail(err, errlen, AIDOS_E_INVALID, "invalid agent name '%.64s'", name ? name : "");
	return drop_agent(n, name, "killed", err, errlen);
}

int node_agent_suspend_local(node *n, const char *name, int suspend, char *err, size_t errlen)
{
	node_agent *a = node_table_get(&n->table, name);
	if (!a)
		return fail(err, errlen, AIDOS_E_NOTFOUND, "no agent '%.64s' on node %s", name ? name : "", n->name);
	__atomic_store_n(&a->suspended, suspend ? 1 : 0, __ATOMIC_RELAXED);
	pthread_mutex_lock(&a->smu);
	if (a->state_now == NODE_AGENT_IDLE || a->state_now == NODE_AGENT_SUSPENDED)
		a->state_now = suspend ? NODE_AGENT_SUSPENDED : NODE_AGENT_IDLE;
	pthread_mutex_unlock(&a->smu);
	LOGI(n, "agent %s %s", a->name, suspend ? "suspended" : "resumed");
	node_agent_unref(a);
	return 0;
}

node_agent *node_agent_find(node *n, const char *name)
{
	return node_table_get(&n->table, name);
}

int node_agent_ready(node *n, node_agent *a, char *err, size_t errlen)
{
	if (__atomic_load_n(&a->loaded, __ATOMIC_ACQUIRE))
		return 0;
	pthread_mutex_lock(&a->mu);
	int rc = agent_finish_load(n, a, err, errlen);
	pthread_mutex_unlock(&a->mu);
	return rc;
}

static void agent_stat_fill(node_agent *a, node_agent_stat *o)
{
	memset(o, 0, sizeof *o);
	snprintf(o->name, sizeof o->name, "%s", a->name);
	snprintf(o->model, sizeof o->model, "%s", a->model_path);
	snprintf(o->device, sizeof o->device, "%s", a->device);
	o->priority = a->priority;
	o->deadline_ms = a->deadline_ms;
	o->stateful = a->stateful;
	o->rejected = __atomic_load_n(&a->rejected, __ATOMIC_RELAXED);
	o->est_ns = __atomic_load_n(&a->est_ns[a->dev], __ATOMIC_RELAXED);
	int loaded = __atomic_load_n(&a->loaded, __ATOMIC_ACQUIRE);
	o->stateful = loaded ? a->stateful : a->want_stateful;
	o->weights_bytes = loaded ? node_model_bytes(a->model) : 0;
	o->context_bytes = loaded ? a->ctx_len : 0;
	pthread_mutex_lock(&a->smu);
	o->state = a->state_now;
	o->requests = a->requests;
	o->errors = a->errors;
	o->quota_errors = a->quota_errors;
	o->fused = a->fused;
	o->batch_max = a->batch_max;
	o->latency_ms = a->latency_ms;
	pthread_mutex_unlock(&a->smu);
	mpool_usage_get(a->pool, &o->pool);
}

int node_agents_list(node *n, node_agent_stat **out, int *cnt)
{
	node_agent **list;
	int k;
	*out = NULL;
	*cnt = 0;
	if (node_table_list(&n->table, &list, &k))
		return AIDOS_E_NOMEM;
	node_agent_stat *st = pool_calloc((size_t)k + 1, sizeof *st);
	for (int i = 0; i < k; i++) {
		if (st)
			agent_stat_fill(list[i], &st[i]);
		node_agent_unref(list[i]);
	}
	pool_free(list);
	if (!st)
		return AIDOS_E_NOMEM;
	*out = st;
	*cnt = k;
	return 0;
}

int node_agent_info(node *n, const char *name, node_agent_stat *out)
{
	node_agent *a = node_table_get(&n->table, name);
	if (!a)
		return AIDOS_E_NOTFOUND;
	agent_stat_fill(a, out);
	node_agent_unref(a);
	return 0;
}

void node_stats(node *n, node_stat *s)
{
	node_agent **list;
	int k;
	pool_stats ps;
	memset(s, 0, sizeof *s);
	snprintf(s->name, sizeof s->name, "%s", n->name);
	s->boot_ms = n->ready_ms;
	s->standalone = n->standalone;
	s->models = node_models_count(&n->models, &s->weights_bytes);
	s->pool_pages = pool_pages_probe(0);
	s->numa_nodes = pool_numa_nodes();
	if (!node_table_list(&n->table, &list, &k)) {
		s->agents = k;
		for (int i = 0; i < k; i++) {
			mpool_usage u;
			mpool_usage_get(list[i]->pool, &u);
			s->pool_quota += u.quota;
			s->pool_reserved += u.reserved;
			s->pool_used += u.used;
			s->pool_peak += u.peak;
			node_agent_unref(list[i]);
		}
		pool_free(list);
	}
	pool_get_stats(&ps);
	s->heap_live = ps.bytes_live;
	s->heap_peak = ps.bytes_peak;
	node_disp_counts_get(n->disp, &s->disp);
}
