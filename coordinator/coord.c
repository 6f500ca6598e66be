/*
 * coordinator/coord.c - the coordinator's state and its Coordinator service
 * (coord.h tells the contract; docs/cluster.md the design).
 *
 * State. Nodes and agents are kept as protobuf-c messages (NodeInfo,
 * AgentInfo, AgentContext) unpacked with a pool-backed allocator, so a
 * reply or the persisted ClusterState is built by pointing at them and
 * packing. Every message stored or answered is a deep copy made by packing
 * and unpacking (pb_dup): ownership is never shared with a request.
 *
 * Locking. c->mu guards nodes, agents, their messages and the flags below.
 * A cagent is freed only by the thread that holds its busy mark (Kill, or a
 * Place that failed), so a pointer to a busy agent stays valid without the
 * lock. Node entries are never removed; their info message is replaced on
 * re-registration, so nothing borrowed from it is kept across an unlock.
 * c->save_mu orders writes of cluster.pb (see persist()).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "coordinator/coord.h"
#include "node/util.h"
#include "node/wire.h"
#include "pools/pools.h"
#include "proto/aidos.pb-c.h"
#include "sched/sched.h"

/* A node loaded from disk and not heard from within this many leases of the
 * coordinator's start is declared dead, so its agents do not wait forever
 * for a machine that is gone. Generous: nodes heartbeat every 250 ms. */
#define UNKNOWN_GRACE 10
#define PLACER_PERIOD_MS 1000
#define SPAWN_TRIES 3            /* nodes tried per placement */
#define MAX_NAME 64              /* names: < 64 bytes (coord_name_valid) */
#define MAX_PATH_LEN 4096
#define MAX_DEVICES 64
#define MAX_STATE_PAIRS 64
#define MAX_UCX_ADDR 65536
#define PRIORITY_MAX 1000

typedef struct cnode {
	Aidos__NodeInfo *info;   /* owned (pb_pool); state, last_heartbeat_ms kept here */
	uint64_t seen_mono;      /* monotonic ms of the last register/heartbeat; 0: none since start */
	uint64_t reserved;       /* bytes placed on it since its last reported mem_free */
	int known_false_logged;
	/* The scheduler's aggregates, updated incrementally (agent_account,
	 * heartbeats): never recomputed by scanning the agents. */
	uint32_t n_agents;       /* agents the directory puts here */
	int has_gpu;             /* from info->devices, cached by node_static() */
	uint32_t workers[SCHED_DEV_N];
	double util[SCHED_DEV_N][SCHED_PRIO_N]; /* sum of the agents' contrib */
	double lat_ratio;        /* measured / estimated response time, queueing included (last heartbeat), 0: no data */
	double exec_ratio;       /* measured / estimated execution time: the node's speed */
	int streak;              /* consecutive overloaded checks */
	/* The rebalancer's "needs room" check (coord_rebalance, c->mu held):
	 * its highest busy class, for `room_streak` checks in a row delayed by
	 * lower classes; the rest is scratch of one check. */
	int room_streak, room_cls;
	double room_hi_est, room_lo_est, room_lo_util;
	const char *room_for;    /* the agent of that class (name, valid during one check) */
} cnode;

typedef struct cagent {
	Aidos__AgentInfo *info;      /* owned (pb_pool) */
	Aidos__AgentContext *ckpt;   /* last checkpoint of a stateful agent, owned, or NULL */
	const char *busy;            /* operation in flight ("place", "migrate", ...), NULL: none */
	char exclude[MAX_NAME];      /* node to avoid when placing again (the one that died) */
	char last_fail[512];         /* last placement failure, logged once */
	cnode *at;                   /* the node whose aggregates count it, NULL: none */
	double contrib;              /* its share of at->util[dev][cls] */
	int dev;
	uint64_t prev_requests, prev_ms; /* last heartbeat's counter, for the rate */
	uint64_t considered_ms;      /* last move or rebalancer decision (wall ms): the cool-down */
} cagent;

/* An online latency estimate of one model on one kind of device, from every
 * node's reports: it follows a lower figure at once and rises slowly (2% of
 * the gap per report), so it tracks the unloaded latency, not the queue. */
typedef struct cmodel {
	char *path;
	int dev;
	double est_ms;
} cmodel;

#define EVENT_RING 256
typedef struct cevent {
	uint64_t ms, seq;
	char kind[16], agent[MAX_NAME], from[MAX_NAME], to[MAX_NAME], reason[256];
} cevent;

typedef struct cclient {
	char *addr;
	rpc_client *cli;
} cclient;

struct coord {
	coord_opts o;
	char *data_dir;
	pthread_mutex_t mu;
	pthread_cond_t placer_cv;    /* kicks and stop, for the placer */
	pthread_cond_t reaper_cv;    /* stop, for the reaper */
	cnode **nodes;               /* sorted by name */
	int n_nodes, cap_nodes;
	cagent **agents;             /* sorted by name */
	int n_agents, cap_agents;
	int placer_kick, stop, dirty;
	uint64_t start_mono;
	uint64_t gen;                /* snapshots taken (under mu) */
	pthread_t reaper, placer;
	int threads;
	int ran;                     /* started threads or served: saves on destroy */

	pthread_mutex_t save_mu;     /* one writer of cluster.pb at a time */
	uint64_t saved_gen;          /* newest snapshot written (under save_mu) */
	int save_failing;

	sched_node *view;            /* the policy's view, filled from the aggregates (under mu) */
	sched_score *scores;
	int cap_view;
	sched_params sp;
	sched_rebalance_params rp;
	cmodel *models;              /* sorted by (path, dev) */
	int n_models, cap_models;
	cevent events[EVENT_RING];   /* ring: the newest EVENT_RING scheduler events */
	uint64_t event_seq;
	uint64_t rebalance_last;

	rpc_server *srv;
	int rpc_ref;
	pthread_mutex_t cli_mu;
	cclient *clis;
	int n_clis;
};

/* ---- small helpers ---- */

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static double mono_msf(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

#define LOG_INFO COORD_LOG_INFO
#define LOG_WARN COORD_LOG_WARN
#define LOG_ERROR COORD_LOG_ERROR
#define log_at coord_log

/* One line to stderr, written with one call so threads never interleave. */
void coord_log(const coord *c, int level, const char *fmt, ...)
{
	static const char *lv[] = { "info", "warn", "error" };
	char msg[1024], line[2300], ts[64];
	struct timespec now;
	struct tm tm;
	va_list ap;

	if (level < COORD_LOG_INFO || level > COORD_LOG_ERROR)
		level = COORD_LOG_ERROR;
	if (c && c->o.quiet && level == LOG_INFO)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
		 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(now.tv_nsec / 1000000));
	if (c && c->o.json_log) {
		char esc[2100];
		size_t j = 0;
		for (const char *p = msg; *p && j + 8 < sizeof esc; p++) {
			unsigned char ch = (unsigned char)*p;
			if (ch == '"' || ch == '\\') {
				esc[j++] = '\\';
				esc[j++] = (char)ch;
			} else if (ch < 0x20) {
				j += (size_t)snprintf(esc + j, sizeof esc - j, "\\u%04x", ch);
			} else {
				esc[j++] = (char)ch;
			}
		}
		esc[j] = 0;
		snprintf(line, sizeof line, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"%s\"}\n", ts, lv[level], esc);
	} else {
		snprintf(line, sizeof line, "%s aidos-coord %s: %s\n", ts, lv[level], msg);
	}
	fputs(line, stderr);
}

int coord_name_valid(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n >= MAX_NAME || s[0] == '.' || s[0] == '-')
		return 0;
	for (size_t i = 0; i < n; i++) {
		char ch = s[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		      ch == '.' || ch == '_' || ch == '-'))
			return 0;
	}
	return 1;
}

const char *coord_node_state_name(int s)
{
	switch (s) {
	case AIDOS__NODE_STATE__NODE_UNKNOWN: return "UNKNOWN";
	case AIDOS__NODE_STATE__NODE_READY: return "READY";
	case AIDOS__NODE_STATE__NODE_DRAINING: return "DRAINING";
	case AIDOS__NODE_STATE__NODE_DEAD: return "DEAD";
	default: return "?";
	}
}

const char *coord_agent_state_name(int s)
{
	switch (s) {
	case AIDOS__AGENT_STATE__AGENT_UNKNOWN: return "UNKNOWN";
	case AIDOS__AGENT_STATE__AGENT_LOADING: return "LOADING";
	case AIDOS__AGENT_STATE__AGENT_IDLE: return "IDLE";
	case AIDOS__AGENT_STATE__AGENT_INFER: return "INFER";
	case AIDOS__AGENT_STATE__AGENT_MIGRATING: return "MIGRATING";
	case AIDOS__AGENT_STATE__AGENT_PENDING: return "PENDING";
	case AIDOS__AGENT_STATE__AGENT_DEAD: return "DEAD";
	default: return "?";
	}
}

/* ---- protobuf-c messages owned through the pool allocator ---- */

static void *pb_alloc(void *ud, size_t n)
{
	(void)ud;
	return pool_malloc(n ? n : 1);
}

static void pb_free_fn(void *ud, void *p)
{
	(void)ud;
	pool_free(p);
}

static ProtobufCAllocator pb_pool = { pb_alloc, pb_free_fn, NULL };

static void pb_free(void *m)
{
	if (m)
		protobuf_c_message_free_unpacked(m, &pb_pool);
}

/* A deep copy of m (pack + unpack), owned by the caller (pb_free), or NULL
 * when memory runs out. */
static void *pb_dup(const void *msg)
{
	const ProtobufCMessage *m = msg;
	size_t n = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = pool_malloc(n ? n : 1);
	ProtobufCMessage *r;
	if (!buf)
		return NULL;
	protobuf_c_message_pack(m, buf);
	r = protobuf_c_message_unpack(m->descriptor, &pb_pool, n, buf);
	pool_free(buf);
	return r;
}

/* Replaces the string field *f of a pb_pool message by a copy of v. The
 * empty string is protobuf-c's shared constant, which free_unpacked skips. */
static int set_str(char **f, const char *v)
{
	char *d = (char *)protobuf_c_empty_string;
	if (v && *v && !(d = pool_strndup(v, strlen(v))))
		return AIDOS_E_NOMEM;
	if (*f && *f != protobuf_c_empty_string)
		pool_free(*f);
	*f = d;
	return 0;
}

/* A string for a pb_pool message field, made before it is needed so the
 * state can be updated later without a failure path: "" is the shared
 * constant; NULL means out of memory. */
static char *str_new(const char *v)
{
	return v && *v ? pool_strndup(v, strlen(v)) : (char *)protobuf_c_empty_string;
}

static void str_free(char *s)
{
	if (s && s != protobuf_c_empty_string)
		pool_free(s);
}

/* Puts owned (from str_new) into the field, freeing what was there. */
static void str_put(char **f, char *owned)
{
	str_free(*f);
	*f = owned;
}

void coord_reply_free(ProtobufCMessage *resp)
{
	pb_free(resp);
}

/* ---- the registry (c->mu held) ---- */

static int find_node_idx(const coord *c, const char *name, int *at)
{
	int lo = 0, hi = c->n_nodes;
	while (lo < hi) {
		int mid = (lo + hi) / 2, r = strcmp(c->nodes[mid]->info->name, name);
		if (!r) {
			*at = mid;
			return 1;
		}
		if (r < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*at = lo;
	return 0;
}

static cnode *find_node(const coord *c, const char *name)
{
	int i;
	return name && *name && find_node_idx(c, name, &i) ? c->nodes[i] : NULL;
}

static int find_agent_idx(const coord *c, const char *name, int *at)
{
	int lo = 0, hi = c->n_agents;
	while (lo < hi) {
		int mid = (lo + hi) / 2, r = strcmp(c->agents[mid]->info->name, name);
		if (!r) {
			*at = mid;
			return 1;
		}
		if (r < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*at = lo;
	return 0;
}

static cagent *find_agent(const coord *c, const char *name)
{
	int i;
	return name && *name && find_agent_idx(c, name, &i) ? c->agents[i] : NULL;
}

static int grow(void ***arr, int *cap, int n)
{
	if (n < *cap)
		return 0;
	int ncap = *cap ? *cap * 2 : 16;
	void **p = pool_realloc(*arr, (size_t)ncap * sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	*arr = p;
	*cap = ncap;
	return 0;
}

static void node_static(cnode *n);
static int node_has_gpu(const Aidos__NodeInfo *n);

/* Inserts n (its info set) in name order. The name must be new. */
static int insert_node(coord *c, cnode *n)
{
	int at;
	node_static(n);
	if (grow((void ***)&c->nodes, &c->cap_nodes, c->n_nodes))
		return AIDOS_E_NOMEM;
	if (c->n_nodes + 1 > c->cap_view) {
		int cap = c->cap_nodes;
		sched_node *v = pool_realloc(c->view, (size_t)cap * sizeof *v);
		if (!v)
			return AIDOS_E_NOMEM;
		c->view = v;
		sched_score *sc = pool_realloc(c->scores, (size_t)cap * sizeof *sc);
		if (!sc)
			return AIDOS_E_NOMEM;
		c->scores = sc;
		c->cap_view = cap;
	}
	find_node_idx(c, n->info->name, &at);
	memmove(&c->nodes[at + 1], &c->nodes[at], (size_t)(c->n_nodes - at) * sizeof *c->nodes);
	c->nodes[at] = n;
	c->n_nodes++;
	return 0;
}

static int insert_agent(coord *c, cagent *a)
{
	int at;
	if (grow((void ***)&c->agents, &c->cap_agents, c->n_agents))
		return AIDOS_E_NOMEM;
	find_agent_idx(c, a->info->name, &at);
	memmove(&c->agents[at + 1], &c->agents[at], (size_t)(c->n_agents - at) * sizeof *c->agents);
	c->agents[at] = a;
	c->n_agents++;
	return 0;
}

static void agent_free(cagent *a)
{
	if (!a)
		return;
	pb_free(a->info);
	pb_free(a->ckpt);
	pool_free(a);
}

static void agent_account_at(coord *c, cagent *a, cnode *n);

static void remove_agent(coord *c, cagent *a)
{
	int at;
	agent_account_at(c, a, NULL);   /* out of its node's aggregates */
	if (find_agent_idx(c, a->info->name, &at) && c->agents[at] == a) {
		memmove(&c->agents[at], &c->agents[at + 1], (size_t)(c->n_agents - at - 1) * sizeof *c->agents);
		c->n_agents--;
	}
	agent_free(a);
}

static uint32_t agents_on(const coord *c, const char *node)
{
	const cnode *n = find_node(c, node);
	return n ? n->n_agents : 0;
}

static int agent_dev(const cagent *a)
{
	return !strcmp(a->info->device, "cuda") ? SCHED_DEV_GPU : SCHED_DEV_CPU;
}

static uint32_t node_workers(const Aidos__NodeInfo *n, int dev)
{
	uint32_t w = 0;
	for (size_t i = 0; i < n->n_devices; i++) {
		const Aidos__Device *d = n->devices[i];
		if (!d)
			continue;
		if (dev == SCHED_DEV_GPU && !strcmp(d->kind, "cuda"))
			w++;
		else if (dev == SCHED_DEV_CPU && !strcmp(d->kind, "cpu"))
			w += d->cores;
	}
	return w ? w : 1;
}

static int cmp_model(const cmodel *m, const char *path, int dev)
{
	int r = strcmp(m->path, path);
	return r ? r : m->dev - dev;
}

/* The estimate entry of (path, dev), created when create (c->mu held).
 * NULL when absent or out of memory. O(log models) to find. */
static cmodel *model_est(coord *c, const char *path, int dev, int create)
{
	int lo = 0, hi = c->n_models;
	while (lo < hi) {
		int mid = (lo + hi) / 2, r = cmp_model(&c->models[mid], path, dev);
		if (!r)
			return &c->models[mid];
		if (r < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (!create)
		return NULL;
	if (c->n_models == c->cap_models) {
		int cap = c->cap_models ? 2 * c->cap_models : 16;
		cmodel *m = pool_realloc(c->models, (size_t)cap * sizeof *m);
		if (!m)
			return NULL;
		c->models = m;
		c->cap_models = cap;
	}
	char *p = pool_strndup(path, strlen(path));
	if (!p)
		return NULL;
	memmove(&c->models[lo + 1], &c->models[lo], (size_t)(c->n_models - lo) * sizeof *c->models);
	c->models[lo] = (cmodel){ .path = p, .dev = dev, .est_ms = 0 };
	c->n_models++;
	return &c->models[lo];
}

/* Caches what the view needs from a node's device list (c->mu held):
 * after every change of n->info (register). */
static void node_static(cnode *n)
{
	n->has_gpu = node_has_gpu(n->info);
	for (int d = 0; d < SCHED_DEV_N; d++)
		n->workers[d] = node_workers(n->info, d);
}

/* The agent's share of its node's utilisation: measured rate x estimated
 * latency on its device / the device's workers. */
static double agent_contrib(const cnode *n, const cagent *a)
{
	double rate = a->info->rate > 0 ? a->info->rate : 0;
	double est = a->info->est_ms > 0 ? a->info->est_ms : a->info->latency_ms;
	return rate * est / 1000.0 / n->workers[agent_dev(a)];
}

/* Keeps the per-node aggregates in step with where the directory puts a
 * (c->mu held): call after every change of a->info->node, rate or
 * estimate. O(log nodes). */
static void agent_account_at(coord *c, cagent *a, cnode *n)
{
	int cls = sched_prio_class(a->info->priority);
	if (a->at) {
		a->at->n_agents--;
		a->at->util[a->dev][cls] -= a->contrib;
		if (a->at->util[a->dev][cls] < 1e-12)
			a->at->util[a->dev][cls] = 0;
	}
	a->at = n;
	a->contrib = 0;
	a->dev = agent_dev(a);
	if (n) {
		n->n_agents++;
		a->contrib = agent_contrib(n, a);
		n->util[a->dev][cls] += a->contrib;
	}
}

static void agent_account(coord *c, cagent *a)
{
	agent_account_at(c, a, a->info->node[0] ? find_node(c, a->info->node) : NULL);
}

/* Records a scheduler event (c->mu held) and logs it. */
static void add_event(coord *c, const char *kind, const char *agent, const char *from, const char *to,
		      const char *reason)
{
	cevent *e = &c->events[c->event_seq % EVENT_RING];
	e->seq = ++c->event_seq;
	e->ms = wall_ms();
	snprintf(e->kind, sizeof e->kind, "%s", kind);
	snprintf(e->agent, sizeof e->agent, "%s", agent ? agent : "");
	snprintf(e->from, sizeof e->from, "%s", from ? from : "");
	snprintf(e->to, sizeof e->to, "%s", to ? to : "");
	snprintf(e->reason, sizeof e->reason, "%s", reason ? reason : "");
}

static int node_has_gpu(const Aidos__NodeInfo *n)
{
	for (size_t i = 0; i < n->n_devices; i++)
		if (n->devices[i] && !strcmp(n->devices[i]->kind, "cuda"))
			return 1;
	return 0;
}

static int node_alive(const cnode *n)
{
	return n->info->state == AIDOS__NODE_STATE__NODE_READY ||
	       n->info->state == AIDOS__NODE_STATE__NODE_DRAINING;
}

/* The agent waits for a node: the placer will place it, avoiding `from`. */
static void make_pending(coord *c, cagent *a, const char *from)
{
	snprintf(a->exclude, sizeof a->exclude, "%s", from ? from : "");
	set_str(&a->info->node, "");
	agent_account(c, a);
	set_str(&a->info->context_node, "");
	a->info->state_now = AIDOS__AGENT_STATE__AGENT_PENDING;
	c->placer_kick = 1;
	pthread_cond_signal(&c->placer_cv);
}

/* Called when an operation releases an agent: if its node died meanwhile
 * (the reaper skips busy agents), it waits for the placer now. */
static void settle(coord *c, cagent *a)
{
	const char *node = a->info->node;
	if (!*node)
		return;
	cnode *n = find_node(c, node);
	if (!n || n->info->state == AIDOS__NODE_STATE__NODE_DEAD) {
		log_at(c, LOG_WARN, "agent %s: node %s is dead; placing it again", a->info->name, node);
		char from[MAX_NAME];
		snprintf(from, sizeof from, "%s", node);
		make_pending(c, a, from);
	}
}

/* ---- persistence ---- */

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Writes buf to DIR/cluster.pb atomically: temporary file, fsync, rename,
 * fsync of the directory (so the rename itself survives a crash). */
static int write_state_file(coord *c, const uint8_t *buf, size_t n, char *err, size_t errlen)
{
	char tmp[MAX_PATH_LEN + 32], dst[MAX_PATH_LEN + 32];
	int fd, rc;

	snprintf(tmp, sizeof tmp, "%s/cluster.pb.tmp", c->data_dir);
	snprintf(dst, sizeof dst, "%s/cluster.pb", c->data_dir);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return fail(err, errlen, -errno, "%s: %s", tmp, strerror(errno));
	rc = write_all(fd, buf, n);
	if (!rc && fsync(fd))
		rc = -errno;
	if (close(fd) && !rc)
		rc = -errno;
	if (!rc && rename(tmp, dst))
		rc = -errno;
	if (rc) {
		unlink(tmp);
		return fail(err, errlen, rc, "%s: %s", dst, strerror(-rc));
	}
	fd = open(c->data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
	return 0;
}

/* Snapshots the state under mu and writes it under save_mu. Snapshots are
 * numbered; a writer that finds a newer one already on disk skips its own,
 * so files only move forward even when two threads save at once, and no
 * state-lock holder ever waits for a disk. Call without c->mu. */
static int persist(coord *c)
{
	Aidos__ClusterState cs = AIDOS__CLUSTER_STATE__INIT;
	Aidos__NodeInfo **nodes;
	Aidos__AgentInfo **agents;
	Aidos__AgentContext **ctxs;
	uint8_t *buf = NULL;
	uint64_t gen;
	size_t n = 0;
	char err[512];
	int rc = 0;

	if (c->o.memory_only)
		return 0;
	pthread_mutex_lock(&c->mu);
	nodes = pool_malloc(((size_t)c->n_nodes + 1) * sizeof *nodes);
	agents = pool_malloc(((size_t)c->n_agents + 1) * sizeof *agents);
	ctxs = pool_malloc(((size_t)c->n_agents + 1) * sizeof *ctxs);
	if (nodes && agents && ctxs) {
		for (int i = 0; i < c->n_nodes; i++)
			nodes[i] = c->nodes[i]->info;
		for (int i = 0; i < c->n_agents; i++) {
			agents[i] = c->agents[i]->info;
			if (c->agents[i]->ckpt)
				ctxs[cs.n_contexts++] = c->agents[i]->ckpt;
		}
		cs.n_nodes = (size_t)c->n_nodes;
		cs.nodes = nodes;
		cs.n_agents = (size_t)c->n_agents;
		cs.agents = agents;
		cs.contexts = ctxs;
		cs.saved_ms = wall_ms();
		n = protobuf_c_message_get_packed_size(&cs.base);
		if ((buf = pool_malloc(n ? n : 1)))
			protobuf_c_message_pack(&cs.base, buf);
	}
	gen = ++c->gen;
	c->dirty = 0;
	pthread_mutex_unlock(&c->mu);
	pool_free(nodes);
	pool_free(agents);
	pool_free(ctxs);
	if (!buf)
		rc = fail(err, sizeof err, AIDOS_E_NOMEM, "out of memory");

	pthread_mutex_lock(&c->save_mu);
	if (!rc && gen > c->saved_gen) {
		rc = write_state_file(c, buf, n, err, sizeof err);
		if (!rc)
			c->saved_gen = gen;
	}
	if (rc && !c->save_failing)
		log_at(c, LOG_ERROR, "cannot save cluster state: %s (retrying)", err);
	else if (!rc && c->save_failing)
		log_at(c, LOG_INFO, "cluster state saved again");
	c->save_failing = rc != 0;
	pthread_mutex_unlock(&c->save_mu);
	pool_free(buf);
	if (rc) {
		pthread_mutex_lock(&c->mu);
		c->dirty = 1;   /* the reaper retries */
		pthread_mutex_unlock(&c->mu);
	}
	return rc;
}

int coord_save(coord *c)
{
	return persist(c);
}

/* Reads DIR/cluster.pb (absent: empty cluster). A file that does not parse
 * or names things invalidly stops the start: starting empty would forget
 * every agent. */
static int load_state(coord *c, char *err, size_t errlen)
{
	char path[MAX_PATH_LEN + 32];
	struct stat st;
	uint8_t *buf = NULL;
	Aidos__ClusterState *cs = NULL;
	int fd, rc = 0;

	snprintf(path, sizeof path, "%s/cluster.pb", c->data_dir);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return 0;
		return fail(err, errlen, -errno, "%s: %s", path, strerror(errno));
	}
	if (fstat(fd, &st)) {
		rc = fail(err, errlen, -errno, "%s: %s", path, strerror(errno));
		goto out;
	}
	if (st.st_size > (off_t)RPC_MAX_MESSAGE * 4) {
		rc = fail(err, errlen, AIDOS_E_RANGE, "%s: %lld bytes is too large for a cluster state", path,
			  (long long)st.st_size);
		goto out;
	}
	buf = pool_malloc((size_t)st.st_size + 1);
	if (!buf) {
		rc = fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
		goto out;
	}
	for (size_t got = 0; got < (size_t)st.st_size;) {
		ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			rc = fail(err, errlen, r < 0 ? -errno : AIDOS_E_TRUNCATED, "%s: read failed", path);
			goto out;
		}
		got += (size_t)r;
	}
	cs = aidos__cluster_state__unpack(&pb_pool, (size_t)st.st_size, buf);
	if (!cs) {
		rc = fail(err, errlen, AIDOS_E_INVALID,
			  "%s: not a valid ClusterState (%lld bytes); move it away to start with an empty cluster",
			  path, (long long)st.st_size);
		goto out;
	}
	for (size_t i = 0; i < cs->n_nodes; i++) {
		Aidos__NodeInfo *ni = cs->nodes[i];
		if (!coord_name_valid(ni->name) || find_node(c, ni->name)) {
			rc = fail(err, errlen, AIDOS_E_INVALID, "%s: node %zu: invalid or duplicate name '%.64s'",
				  path, i, ni->name);
			goto out;
		}
		cnode *n = pool_calloc(1, sizeof *n);
		if (!n || !(n->info = pb_dup(ni)) || insert_node(c, n)) {
			if (n)
				pb_free(n->info);
			pool_free(n);
			rc = fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
			goto out;
		}
		/* Not heard from since this start: UNKNOWN until it heartbeats.
		 * A dead node stays dead until it registers again, and a
		 * draining one stays draining (the operator's word). */
		if (n->info->state != AIDOS__NODE_STATE__NODE_DEAD &&
		    n->info->state != AIDOS__NODE_STATE__NODE_DRAINING)
			n->info->state = AIDOS__NODE_STATE__NODE_UNKNOWN;
	}
	for (size_t i = 0; i < cs->n_agents; i++) {
		Aidos__AgentInfo *ai = cs->agents[i];
		if (!coord_name_valid(ai->name) || find_agent(c, ai->name)) {
			rc = fail(err, errlen, AIDOS_E_INVALID, "%s: agent %zu: invalid or duplicate name '%.64s'",
				  path, i, ai->name);
			goto out;
		}
		cagent *a = pool_calloc(1, sizeof *a);
		if (!a || !(a->info = pb_dup(ai)) || insert_agent(c, a)) {
			agent_free(a);
			rc = fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
			goto out;
		}
		cnode *n = find_node(c, a->info->node);
		agent_account(c, a);
		if (!n || n->info->state == AIDOS__NODE_STATE__NODE_DEAD) {
			make_pending(c, a, a->info->node);
		} else if (a->info->state_now == AIDOS__AGENT_STATE__AGENT_LOADING ||
			   a->info->state_now == AIDOS__AGENT_STATE__AGENT_MIGRATING ||
			   a->info->state_now == AIDOS__AGENT_STATE__AGENT_PENDING) {
			a->info->state_now = AIDOS__AGENT_STATE__AGENT_UNKNOWN;
		}
	}
	for (size_t i = 0; i < cs->n_contexts; i++) {
		cagent *a = find_agent(c, cs->contexts[i]->agent);
		if (!a || !a->info->stateful || a->ckpt)
			continue;
		if (!(a->ckpt = pb_dup(cs->contexts[i]))) {
			rc = fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
			goto out;
		}
	}
	log_at(c, LOG_INFO, "loaded %s: %d nodes, %d agents, %zu checkpoints", path, c->n_nodes, c->n_agents,
	     cs->n_contexts);
out:
	pb_free(cs);
	pool_free(buf);
	close(fd);
	return rc;
}

/* ---- calls to nodes ---- */

static int get_client(coord *c, const char *addr, rpc_client **out, char *err, size_t errlen)
{
	int rc = 0;
	pthread_mutex_lock(&c->cli_mu);
	for (int i = 0; i < c->n_clis; i++) {
		if (!strcmp(c->clis[i].addr, addr)) {
			*out = c->clis[i].cli;
			pthread_mutex_unlock(&c->cli_mu);
			return 0;
		}
	}
	cclient *p = pool_realloc(c->clis, ((size_t)c->n_clis + 1) * sizeof *p);
	if (!p) {
		rc = fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
		goto out;
	}
	c->clis = p;
	p = &c->clis[c->n_clis];
	if (!(p->addr = pool_strndup(addr, strlen(addr)))) {
		rc = fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
		goto out;
	}
	if ((rc = rpc_client_create(addr, &p->cli))) {
		pool_free(p->addr);
		fail(err, errlen, rc, "cannot open a channel to %s: %s", addr, aidos_strerror(rc));
		goto out;
	}
	c->n_clis++;
	*out = p->cli;
out:
	pthread_mutex_unlock(&c->cli_mu);
	return rc;
}

/* One call to the node at addr, through the test hook or gRPC. On success
 * *resp is freed with protobuf_c_message_free_unpacked(*resp, NULL). */
static int node_call(coord *c, const char *addr, const char *method, const void *req,
		     const ProtobufCMessageDescriptor *rd, void **resp, int deadline_ms, char *err,
		     size_t errlen)
{
	ProtobufCMessage *r = NULL;
	int rc;
	if (!addr || !*addr)
		return fail(err, errlen, AIDOS_E_INVALID, "%s: the node has no rpc address", method);
	if (c->o.node_call) {
		rc = c->o.node_call(c->o.node_call_ctx, addr, method, req, rd, &r, deadline_ms, err, errlen);
	} else {
		rpc_client *cli = NULL;
		if ((rc = get_client(c, addr, &cli, err, errlen)))
			return rc;
		rc = rpc_call(cli, method, req, rd, &r, deadline_ms, err, errlen);
	}
	if (!rc && (!r || r->descriptor != rd)) {
		if (r)
			protobuf_c_message_free_unpacked(r, NULL);
		return fail(err, errlen, AIDOS_E_INVALID, "%s: reply of the wrong type", method);
	}
	*resp = r;
	return rc;
}

static void node_reply_free(void *r)
{
	if (r)
		protobuf_c_message_free_unpacked(r, NULL);
}

/* ---- placement ---- */

/* Records the state pairs the node found (--stateful without --state), so
 * listings and later placements name them. Skipped on allocation failure:
 * the node finds the same pairs again. (c->mu held) */
static void adopt_pairs(Aidos__AgentInfo *dst, const Aidos__AgentInfo *src)
{
	Aidos__AgentInfo tmp = AIDOS__AGENT_INFO__INIT, *cp;
	tmp.n_state = src->n_state;
	tmp.state = src->state;
	if (src->n_state > MAX_STATE_PAIRS || !(cp = pb_dup(&tmp)))
		return;
	/* swap the pairs' arrays: cp frees dst's (empty) ones */
	size_t n = dst->n_state;
	Aidos__StatePair **p = dst->state;
	dst->n_state = cp->n_state;
	dst->state = cp->state;
	cp->n_state = n;
	cp->state = p;
	pb_free(cp);
}

/* The policy's view of the cluster (c->mu held): c->view[i] for c->nodes[i],
 * filled from the aggregates the heartbeats and placements keep, so this is
 * one copy per node (no scan of the agents, no allocation). Names point
 * into the node infos: valid until c->mu is dropped. */
static void fill_view(coord *c)
{
	for (int i = 0; i < c->n_nodes; i++) {
		const cnode *n = c->nodes[i];
		sched_node *v = &c->view[i];
		v->name = n->info->name;
		v->ready = n->info->state == AIDOS__NODE_STATE__NODE_READY;
		v->has_gpu = n->has_gpu;
		v->gpu_mem_free = 0;
		v->link_gbps = 0;
		v->rtt_ms = 0;
		v->mem_free = n->info->mem_free > n->reserved ? n->info->mem_free - n->reserved : 0;
		v->mem_total = n->info->mem_total;
		v->queue_len = n->info->queue_len;
		v->n_agents = n->n_agents;
		for (int d = 0; d < SCHED_DEV_N; d++) {
			v->servers[d] = n->workers[d];
			/* measured slowdown over the models' unloaded estimates */
			v->speed[d] = n->exec_ratio > 1.0 ? (float)n->exec_ratio : 1.0f;
			for (int k = 0; k < SCHED_PRIO_N; k++)
				v->util[d][k] = (float)n->util[d][k];
		}
	}
}

/* What the policy knows of agent a (c->mu held); strings borrowed from a
 * and from pin/excl. */
static void fill_agent(coord *c, const cagent *a, sched_agent *sa, const char *pin, const char *excl)
{
	memset(sa, 0, sizeof *sa);
	sa->name = a->info->name;
	sa->mem_bytes = a->info->mem_bytes;
	sa->needs_gpu = !strcmp(a->info->device, "cuda");
	sa->gpu_ok = sa->needs_gpu;
	sa->priority = a->info->priority;
	sa->pinned = pin && pin[0] ? pin : NULL;
	sa->exclude = excl && excl[0] ? excl : NULL;
	double est = a->info->est_ms > 0 ? a->info->est_ms : a->info->latency_ms;
	if (est <= 0) {   /* new: what its model does elsewhere, else the prior from its size */
		cmodel *m = model_est(c, a->info->model_path, agent_dev(a), 0);
		est = m ? m->est_ms : 0;
	}
	sa->est_ms[agent_dev(a)] = est;
	sa->rate = a->info->rate;
	int at;
	if (a->at && find_node_idx(c, a->at->info->name, &at)) {
		sa->placed = 1;
		sa->cur_node = at;
	}
	if (a->ckpt && a->info->context_node[0] && find_node_idx(c, a->info->context_node, &at)) {
		uint64_t b = 0;
		for (size_t i = 0; i < a->ckpt->n_tensors; i++)
			if (a->ckpt->tensors[i])
				b += a->ckpt->tensors[i]->data.len;
		sa->ctx_node = at;
		sa->ctx_bytes = b;
	}
}

/* Scores of the best candidate for the reason line (c->mu held). */
static void fmt_score(char *b, size_t n, const sched_score *s)
{
	snprintf(b, n, "score %.2f = latency %.2f + queue %.2f + gpu %.1f + move %.2f + memory %.2f + spread %.1f ms",
		 s->total, s->latency, s->queue, s->gpu, s->move, s->memory, s->spread);
}

/* One placement decision for a (c->mu held): the k best nodes' names into
 * names[0..k), best first; returns how many, 0 with why. The same code
 * serves Place, Migrate without a target, the placer, the rebalancer,
 * Explain and coord_decide(). No allocation. */
static int decide(coord *c, const cagent *a, const char *pin, const char *excl, char (*names)[MAX_NAME],
		  sched_score *best_scores, int k, char *why, size_t whylen)
{
	sched_agent sa;
	int idx[SPAWN_TRIES];
	if (k > SPAWN_TRIES)
		k = SPAWN_TRIES;
	fill_view(c);
	fill_agent(c, a, &sa, pin, excl);
	int m = sched_rank(c->view, c->n_nodes, &sa, &c->sp, c->scores, idx, k, why, whylen);
	for (int j = 0; j < m; j++) {
		snprintf(names[j], MAX_NAME, "%s", c->view[idx[j]].name);
		if (best_scores)
			best_scores[j] = c->scores[idx[j]];
	}
	return m;
}

static int sched_code(const char *why)
{
	return strstr(why, "is not in the cluster") ? AIDOS_E_NOTFOUND : AIDOS_E_NOMEM;
}

/* Places agent a (busy, held by the caller; c->mu not held): chooses a node
 * with sched_place, asks it to Spawn (from a's checkpoint when stateful),
 * and tries up to SPAWN_TRIES nodes. On success a is on the node (persist
 * is the caller's) and reason says why. Errors: AIDOS_E_NOTFOUND (pinned to
 * an unknown node), AIDOS_E_NOMEM (nothing fits), the last node's error. */
static int place_agent(coord *c, cagent *a, char *reason, size_t rlen, char *err, size_t errlen)
{
	char names[SPAWN_TRIES][MAX_NAME];
	sched_score best[SPAWN_TRIES];
	char aname[MAX_NAME], pin[MAX_NAME], excl[MAX_NAME], last[512] = "", addr[512], why[256] = "";
	int m, rc = 0, tried = 0;

	pthread_mutex_lock(&c->mu);
	snprintf(aname, sizeof aname, "%s", a->info->name);
	snprintf(pin, sizeof pin, "%s", a->info->pinned_node);
	snprintf(excl, sizeof excl, "%s", a->exclude);
	m = decide(c, a, pin, excl, names, best, SPAWN_TRIES, why, sizeof why);
	pthread_mutex_unlock(&c->mu);

	for (int idx = 0;; idx++) {
		if (idx >= m) {
			if (!tried)
				rc = fail(err, errlen, sched_code(why), "cannot place agent '%s': %s", aname, why);
			else
				rc = fail(err, errlen, rc, "cannot place agent '%s': spawn failed on %d node%s (%s)",
					  aname, tried, tried > 1 ? "s" : "", last);
			goto out;
		}
		/* Build the request from the state as it is now. */
		Aidos__SpawnRequest req = AIDOS__SPAWN_REQUEST__INIT, *own = NULL;
		const char *target = names[idx];
		pthread_mutex_lock(&c->mu);
		cnode *node = find_node(c, target);
		if (node) {
			snprintf(addr, sizeof addr, "%s", node->info->rpc_addr);
			req.agent = a->info;
			if (a->info->stateful && a->ckpt)
				req.context = a->ckpt;
			own = pb_dup(&req);
		}
		pthread_mutex_unlock(&c->mu);
		if (!node)
			continue;
		if (!own) {
			rc = fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
			goto out;
		}
		own->agent->state_now = AIDOS__AGENT_STATE__AGENT_LOADING;
		char *nn = str_new(target), *cn = str_new(own->agent->stateful ? target : "");
		if (!nn || !cn || set_str(&own->agent->node, target) ||
		    (own->agent->stateful && set_str(&own->agent->context_node, target))) {
			str_free(nn);
			str_free(cn);
			pb_free(own);
			rc = fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
			goto out;
		}

		Aidos__SpawnReply *rep = NULL;
		double t0 = mono_msf();
		char cerr[400];
		rc = node_call(c, addr, "/aidos.Node/Spawn", own, &aidos__spawn_reply__descriptor, (void **)&rep,
			       c->o.spawn_deadline_ms, cerr, sizeof cerr);
		uint64_t ckpt_ver = own->context ? own->context->version : 0;
		pb_free(own);
		tried++;
		if (rc) {
			log_at(c, LOG_WARN, "spawn of agent %s on node %s failed after %.1f ms: %s", aname, target,
			     mono_msf() - t0, cerr);
			snprintf(last, sizeof last, "%s: %s", target, cerr);
			fail(err, errlen, rc, "cannot place agent '%s': spawn on node %s failed: %s", aname,
			     target, cerr);
			str_free(nn);
			str_free(cn);
			continue;
		}
		pthread_mutex_lock(&c->mu);
		str_put(&a->info->node, nn);
		str_put(&a->info->context_node, cn);
		a->info->context_version = ckpt_ver;
		a->info->state_now = AIDOS__AGENT_STATE__AGENT_IDLE;
		if (rep->agent) {
			if (rep->agent->state_now != AIDOS__AGENT_STATE__AGENT_UNKNOWN)
				a->info->state_now = rep->agent->state_now;
			if (rep->agent->mem_bytes)
				a->info->mem_bytes = rep->agent->mem_bytes;
			if (a->info->stateful && !a->info->n_state && rep->agent->n_state)
				adopt_pairs(a->info, rep->agent);
		}
		a->exclude[0] = 0;
		a->last_fail[0] = 0;
		if ((node = find_node(c, target)))
			node->reserved += a->info->mem_bytes;
		agent_account(c, a);
		char sc[200];
		fmt_score(sc, sizeof sc, &best[idx]);
		if (pin[0])
			snprintf(reason, rlen, "node %s: pinned by operator (%s)", target, sc);
		else
			snprintf(reason, rlen, "node %s: best of the policy (%s)%s", target, sc,
				 tried > 1 ? "; earlier nodes failed to spawn" : "");
		set_str(&a->info->reason, reason);
		add_event(c, "place", aname, "", target, reason);
		pthread_mutex_unlock(&c->mu);
		node_reply_free(rep);
		rc = 0;
		goto out;
	}
out:
	return rc;
}

/* ---- migration ---- */

typedef struct mig_result {
	double ms;
	uint64_t bytes;
	char from[MAX_NAME], to[MAX_NAME];
} mig_result;

/* Moves agent a (busy, held by the caller; c->mu not held) to node `to`, or
 * to the node sched_place picks (excluding its own) when to is NULL.
 * Stateless: Spawn on the target, flip the directory, Kill on the source.
 * Stateful: ExportContext(freeze) on the source, ImportContext on the
 * target (which pulls the region), flip, ReleaseContext on the source; on a
 * failure the source is unfrozen (ExportContext with freeze=false) and
 * keeps the agent. Errors: AIDOS_E_NOTFOUND, AIDOS_E_INVALID (target not
 * ready, same node), AIDOS_E_NOMEM (nothing fits), a node's error. */
static int migrate_agent(coord *c, cagent *a, const char *to, mig_result *res, char *err, size_t errlen)
{
	char src_addr[512], dst_addr[512], aname[MAX_NAME], cerr[400];
	Aidos__AgentInfo *info = NULL;
	Aidos__AgentState prev;
	char *nn = NULL, *cn = NULL, *pn = NULL;
	uint64_t version;
	int rc, stateful;
	double t0 = mono_msf();

	memset(res, 0, sizeof *res);
	pthread_mutex_lock(&c->mu);
	snprintf(aname, sizeof aname, "%s", a->info->name);
	snprintf(res->from, sizeof res->from, "%s", a->info->node);
	cnode *src = find_node(c, res->from);
	if (!src || !node_alive(src)) {
		rc = fail(err, errlen, AIDOS_E_INVALID, "agent '%s': its node '%s' is %s; nothing to migrate from",
			  aname, res->from, src ? coord_node_state_name(src->info->state) : "gone");
		goto unlock;
	}
	{
		char why[256] = "", names[1][MAX_NAME];
		int m = decide(c, a, to, res->from, names, NULL, 1, why, sizeof why);
		if (m)
			snprintf(res->to, sizeof res->to, "%s", names[0]);
		else {
			if (to && !strcmp(to, res->from))
				rc = fail(err, errlen, AIDOS_E_INVALID, "agent '%s' is already on node '%s'", aname, to);
			else
				rc = fail(err, errlen, sched_code(why), "cannot migrate agent '%s': %s", aname, why);
			goto unlock;
		}
	}
	cnode *dst = find_node(c, res->to);
	snprintf(src_addr, sizeof src_addr, "%s", src->info->rpc_addr);
	snprintf(dst_addr, sizeof dst_addr, "%s", dst->info->rpc_addr);
	stateful = a->info->stateful;
	/* Everything the flip needs is allocated now: once the target serves,
	 * recording it cannot fail. An explicit move carries a pin along. */
	info = pb_dup(a->info);
	nn = str_new(res->to);
	cn = str_new(stateful ? res->to : "");
	pn = str_new(a->info->pinned_node[0] ? res->to : "");
	if (!info || !nn || !cn || !pn || set_str(&info->node, res->to) ||
	    set_str(&info->context_node, stateful ? res->to : "") || set_str(&info->pinned_node, pn)) {
		pb_free(info);
		str_free(nn);
		str_free(cn);
		str_free(pn);
		rc = fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
		goto unlock;
	}
	prev = a->info->state_now;
	version = a->info->context_version;
	a->info->state_now = AIDOS__AGENT_STATE__AGENT_MIGRATING;
	pthread_mutex_unlock(&c->mu);

	info->state_now = AIDOS__AGENT_STATE__AGENT_LOADING;

	Aidos__AgentState new_state = AIDOS__AGENT_STATE__AGENT_IDLE;
	if (!stateful) {
		Aidos__SpawnRequest sreq = AIDOS__SPAWN_REQUEST__INIT;
		Aidos__SpawnReply *srep = NULL;
		sreq.agent = info;
		rc = node_call(c, dst_addr, "/aidos.Node/Spawn", &sreq, &aidos__spawn_reply__descriptor,
			       (void **)&srep, c->o.spawn_deadline_ms, cerr, sizeof cerr);
		if (rc) {
			fail(err, errlen, rc, "migrate '%s': spawn on node %s failed: %s", aname, res->to, cerr);
			goto failed;
		}
		if (srep->agent && srep->agent->state_now != AIDOS__AGENT_STATE__AGENT_UNKNOWN)
			new_state = srep->agent->state_now;
		node_reply_free(srep);
	} else {
		Aidos__ExportContextRequest ereq = AIDOS__EXPORT_CONTEXT_REQUEST__INIT;
		Aidos__ExportContextReply *erep = NULL;
		Aidos__ImportContextRequest ireq = AIDOS__IMPORT_CONTEXT_REQUEST__INIT;
		Aidos__ImportContextReply *irep = NULL;
		ereq.agent = aname;
		ereq.freeze = 1;
		rc = node_call(c, src_addr, "/aidos.Node/ExportContext", &ereq,
			       &aidos__export_context_reply__descriptor, (void **)&erep, c->o.call_deadline_ms, cerr,
			       sizeof cerr);
		if (rc) {
			fail(err, errlen, rc, "migrate '%s': export from node %s failed: %s", aname, res->from, cerr);
			/* It may have frozen before failing: unfreeze, best effort. */
			goto unfreeze;
		}
		res->bytes = erep->length;
		version = erep->version;
		ireq.agent = info;
		ireq.from = erep;
		rc = node_call(c, dst_addr, "/aidos.Node/ImportContext", &ireq,
			       &aidos__import_context_reply__descriptor, (void **)&irep, c->o.spawn_deadline_ms, cerr,
			       sizeof cerr);
		node_reply_free(erep);
		if (rc) {
			fail(err, errlen, rc, "migrate '%s': import on node %s failed: %s", aname, res->to, cerr);
			/* The target may hold a half-made agent: drop it. */
			Aidos__NodeKillRequest kreq = AIDOS__NODE_KILL_REQUEST__INIT;
			Aidos__NodeKillReply *krep = NULL;
			kreq.agent = aname;
			if (!node_call(c, dst_addr, "/aidos.Node/Kill", &kreq, &aidos__node_kill_reply__descriptor,
				       (void **)&krep, c->o.call_deadline_ms, cerr, sizeof cerr))
				node_reply_free(krep);
			goto unfreeze;
		}
		if (irep->agent && irep->agent->state_now != AIDOS__AGENT_STATE__AGENT_UNKNOWN)
			new_state = irep->agent->state_now;
		log_at(c, LOG_INFO, "agent %s: context pulled by %s in %.2f ms", aname, res->to, irep->pull_ms);
		node_reply_free(irep);
	}

	/* The target serves: flip the directory, then let the source go. */
	pthread_mutex_lock(&c->mu);
	str_put(&a->info->node, nn);
	str_put(&a->info->context_node, cn);
	str_put(&a->info->pinned_node, pn);
	a->info->context_version = version;
	a->info->state_now = new_state;
	if ((dst = find_node(c, res->to)))
		dst->reserved += a->info->mem_bytes;
	agent_account(c, a);
	/* Any move (an operator's migrate, a drain, the rebalancer's own)
	 * starts the agent's cool-down: the rebalancer does not undo an
	 * operator's placement seconds later. */
	a->considered_ms = wall_ms();
	pthread_mutex_unlock(&c->mu);
	pb_free(info);
	{
		const char *m = stateful ? "/aidos.Node/ReleaseContext" : "/aidos.Node/Kill";
		Aidos__ReleaseContextRequest rreq = AIDOS__RELEASE_CONTEXT_REQUEST__INIT;
		Aidos__NodeKillRequest kreq = AIDOS__NODE_KILL_REQUEST__INIT;
		const ProtobufCMessageDescriptor *d = stateful ? &aidos__release_context_reply__descriptor
							       : &aidos__node_kill_reply__descriptor;
		void *rep = NULL;
		rreq.agent = kreq.agent = aname;
		rc = node_call(c, src_addr, m, stateful ? (void *)&rreq : (void *)&kreq, d, &rep,
			       c->o.call_deadline_ms, cerr, sizeof cerr);
		if (rc)
			log_at(c, LOG_WARN, "agent %s moved to %s, but %s on %s failed: %s", aname, res->to, m,
			     res->from, cerr);
		node_reply_free(rep);
	}
	res->ms = mono_msf() - t0;
	log_at(c, LOG_INFO, "agent %s migrated %s -> %s in %.2f ms (%" PRIu64 " context bytes)", aname, res->from,
	     res->to, res->ms, res->bytes);
	return 0;

unfreeze: {
		Aidos__ExportContextRequest ureq = AIDOS__EXPORT_CONTEXT_REQUEST__INIT;
		Aidos__ExportContextReply *urep = NULL;
		char uerr[400];
		ureq.agent = aname;
		ureq.freeze = 0;
		if (node_call(c, src_addr, "/aidos.Node/ExportContext", &ureq,
			      &aidos__export_context_reply__descriptor, (void **)&urep, c->o.call_deadline_ms, uerr,
			      sizeof uerr))
			log_at(c, LOG_WARN, "agent %s: unfreeze on %s failed: %s", aname, res->from, uerr);
		node_reply_free(urep);
	}
failed:
	pb_free(info);
	str_free(nn);
	str_free(cn);
	str_free(pn);
	pthread_mutex_lock(&c->mu);
	a->info->state_now = prev;
	pthread_mutex_unlock(&c->mu);
	log_at(c, LOG_WARN, "%s (agent stays on %s)", err, res->from);
	return rc;
unlock:
	pthread_mutex_unlock(&c->mu);
	return rc;
}

/* ---- the Coordinator service ---- */

#define REQ(type, var, msg) const type *var = (const type *)(msg)

static int reply_dup(void *borrowed, ProtobufCMessage **resp, char *err, size_t errlen)
{
	if (!(*resp = pb_dup(borrowed)))
		return fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
	return 0;
}

static int busy_err(const cagent *a, char *err, size_t errlen)
{
	return fail(err, errlen, -EBUSY, "agent '%s' is busy: %s in progress; try again", a->info->name, a->busy);
}

static int check_node_info(const Aidos__NodeInfo *n, char *err, size_t errlen)
{
	if (!n)
		return fail(err, errlen, AIDOS_E_INVALID, "RegisterNode: missing node");
	if (!coord_name_valid(n->name))
		return fail(err, errlen, AIDOS_E_INVALID,
			    "RegisterNode: invalid node name '%.64s' (1-63 of [A-Za-z0-9._-])", n->name);
	if (!n->rpc_addr[0] || strlen(n->rpc_addr) >= 256)
		return fail(err, errlen, AIDOS_E_INVALID, "RegisterNode: node %s: missing or overlong rpc_addr",
			    n->name);
	if (n->ucx_address.len > MAX_UCX_ADDR || n->n_devices > MAX_DEVICES)
		return fail(err, errlen, AIDOS_E_INVALID, "RegisterNode: node %s: ucx_address or devices too large",
			    n->name);
	return 0;
}

static int h_register(void *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp, char *err, size_t errlen)
{
	coord *c = ctx;
	REQ(Aidos__RegisterNodeRequest, req, m);
	Aidos__RegisterNodeReply rep = AIDOS__REGISTER_NODE_REPLY__INIT;
	Aidos__AgentInfo **list = NULL;
	Aidos__NodeInfo *info;
	int rc;

	if ((rc = check_node_info(req->node, err, errlen)))
		return rc;
	if (!(info = pb_dup(req->node)))
		return fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
	info->state = AIDOS__NODE_STATE__NODE_READY;
	info->last_heartbeat_ms = wall_ms();
	info->lease_ms = c->o.lease_ms;
	info->heartbeat_ms = c->o.heartbeat_ms;

	pthread_mutex_lock(&c->mu);
	cnode *n = find_node(c, info->name);
	int again = n != NULL;
	if (n) {
		char heard[64] = "not heard since this coordinator started";
		if (n->seen_mono)
			snprintf(heard, sizeof heard, "last heard %" PRIu64 " ms ago", mono_ms() - n->seen_mono);
		log_at(c, LOG_INFO, "node %s registered again (was %s, %s) rpc=%s transport=%s (%s)", info->name,
		     coord_node_state_name(n->info->state), heard, info->rpc_addr, info->transport,
		     info->transport_reason);
		pb_free(n->info);
		n->info = info;
		node_static(n);
	} else {
		if (!(n = pool_calloc(1, sizeof *n))) {
			pthread_mutex_unlock(&c->mu);
			pb_free(info);
			return fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
		}
		n->info = info;
		node_static(n);
		if (insert_node(c, n)) {
			pthread_mutex_unlock(&c->mu);
			pb_free(info);
			pool_free(n);
			return fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
		}
		log_at(c, LOG_INFO, "node %s registered rpc=%s transport=%s (%s) mem_free=%" PRIu64 " boot_ms=%.1f",
		     info->name, info->rpc_addr, info->transport, info->transport_reason, info->mem_free,
		     info->boot_ms);
	}
	n->seen_mono = mono_ms();
	n->reserved = 0;
	n->known_false_logged = 0;
	/* A node that died and came back is a candidate again for the agents
	 * that were placed away from it (it may be the only node left). */
	for (int i = 0; i < c->n_agents; i++)
		if (!strcmp(c->agents[i]->exclude, info->name))
			c->agents[i]->exclude[0] = 0;
	list = pool_malloc(((size_t)c->n_agents + 1) * sizeof *list);
	if (list)
		for (int i = 0; i < c->n_agents; i++)
			if (!strcmp(c->agents[i]->info->node, info->name))
				list[rep.n_agents++] = c->agents[i]->info;
	if (again && list)
		log_at(c, LOG_INFO, "node %s: %zu agents listed for it to keep or restore; it drops any other", info->name,
		     rep.n_agents);
	rep.heartbeat_ms = c->o.heartbeat_ms;
	rep.lease_ms = c->o.lease_ms;
	rep.agents = list;
	rc = list ? reply_dup(&rep, resp, err, errlen) : fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
	c->placer_kick = 1;   /* pending agents may fit now */
	pthread_cond_signal(&c->placer_cv);
	pthread_mutex_unlock(&c->mu);
	pool_free(list);
	persist(c);
	return rc;
}

/* Takes a checkpoint from a heartbeat if it is valid and newer (c->mu
 * held). Returns 1 when stored. A bad one is logged and dropped: it must not
 * fail the heartbeat that carries the node's liveness. */
static int take_checkpoint(coord *c, const char *node, const Aidos__AgentContext *ctx)
{
	char why[200];
	size_t total = 0;
	cagent *a = find_agent(c, ctx->agent);
	if (!a || !a->info->stateful || strcmp(a->info->node, node) || a->busy)
		return 0;
	if (a->ckpt && ctx->version <= a->ckpt->version)
		return 0;
	for (size_t i = 0; i < ctx->n_tensors; i++) {
		aidos_tensor t;
		if (aidos_wire_tensor_from_pb(ctx->tensors[i], &t, why, sizeof why)) {
			log_at(c, LOG_WARN, "node %s: checkpoint of agent %s dropped: %s", node, ctx->agent, why);
			return 0;
		}
		total += ctx->tensors[i]->data.len;
	}
	if (total > AIDOS_WIRE_MAX_CHECKPOINT) {
		log_at(c, LOG_WARN, "node %s: checkpoint of agent %s dropped: %zu bytes exceeds %u", node, ctx->agent,
		     total, AIDOS_WIRE_MAX_CHECKPOINT);
		return 0;
	}
	if (aidos_wire_context_checksum(ctx) != ctx->checksum) {
		log_at(c, LOG_WARN, "node %s: checkpoint of agent %s (version %" PRIu64 ") dropped: checksum mismatch",
		     node, ctx->agent, ctx->version);
		return 0;
	}
	Aidos__AgentContext *cp = pb_dup(ctx);
	if (!cp)
		return 0;
	pb_free(a->ckpt);
	a->ckpt = cp;
	a->info->context_version = ctx->version;
	return 1;
}

/* Folds one report of agent a (on node n; c->mu held) into the view: its
 * request rate from the counter's delta, the model's unloaded estimate, the
 * node's measured/estimated latency (weighted by rate into *w, *sum) and
 * the node's aggregates. O(log models). */
static void observe(coord *c, cnode *n, cagent *a, uint64_t requests, uint64_t now, double *w, double *sum)
{
	if (a->prev_ms && now > a->prev_ms && requests >= a->prev_requests) {
		double r = (double)(requests - a->prev_requests) * 1000.0 / (double)(now - a->prev_ms);
		a->info->rate = a->info->rate > 0 ? 0.5 * a->info->rate + 0.5 * r : r;
	}
	a->prev_ms = now;
	a->prev_requests = requests;
	a->info->requests = requests;
	double lat = a->info->latency_ms;
	cmodel *m = lat > 0 ? model_est(c, a->info->model_path, agent_dev(a), 1) : NULL;
	if (m) {
		if (m->est_ms <= 0 || lat < m->est_ms)
			m->est_ms = lat;
		else
			m->est_ms += 0.02 * (lat - m->est_ms);
		a->info->est_ms = m->est_ms;
	}
	if (lat > 0 && a->info->est_ms > 0 && a->info->rate > 0) {
		*w += a->info->rate * a->info->est_ms;   /* unloaded work per second */
		*sum += a->info->rate * lat;             /* measured execution per second */
	}
	agent_account(c, a);   /* the new rate and estimate into n's util */
	(void)n;
}

/* A heartbeat from node n, declared DEAD, reports the agents it still runs
 * (c->mu held): it was stalled, not dead (SIGSTOP, a VM or host under load,
 * a late reaper). Each reported agent that still waits for a node (PENDING,
 * nobody placing it: nowhere else to go yet) and is the same agent (model,
 * statefulness) is given back to n, with the state and context version n
 * reports, so that the RegisterNode that follows lists it and n keeps it:
 * the live copy is newer than any checkpoint. An agent placed elsewhere
 * meanwhile stays there (the directory is the authority; n drops its copy
 * when it registers), one being placed right now is settled by the placer.
 * Checkpoints carried by the same beat are taken for the reclaimed agents.
 * Returns the number of agents given back; each is logged and an event. */
static int reclaim_reported(coord *c, cnode *n, const Aidos__HeartbeatRequest *req)
{
	const char *node = n->info->name;
	int kept = 0;

	for (size_t i = 0; i < req->n_agents; i++) {
		const Aidos__AgentInfo *ai = req->agents[i];
		cagent *a = ai ? find_agent(c, ai->name) : NULL;
		char why[300];
		if (!a)
			continue;   /* killed meanwhile: n drops it when it registers */
		if (a->info->node[0] || a->busy ||
		    a->info->state_now != AIDOS__AGENT_STATE__AGENT_PENDING) {
			if (strcmp(a->info->node, node))
				log_at(c, LOG_INFO, "agent %s: node %s still runs it (version %" PRIu64 "), but it %s%s: "
				     "that copy is dropped when %s registers again", a->info->name, node,
				     ai->context_version, a->busy ? "is being " : "runs on ",
				     a->busy ? a->busy : a->info->node[0] ? a->info->node : "(no node)", node);
			continue;
		}
		if (strcmp(ai->model_path ? ai->model_path : "", a->info->model_path) ||
		    ai->stateful != a->info->stateful) {
			log_at(c, LOG_WARN, "agent %s: node %s reports a different agent of that name (model %.200s%s): "
			     "not kept", a->info->name, node, ai->model_path ? ai->model_path : "",
			     ai->stateful ? ", stateful" : "");
			continue;
		}
		set_str(&a->info->node, node);
		set_str(&a->info->context_node, a->info->stateful ? node : "");
		a->info->state_now = ai->state_now != AIDOS__AGENT_STATE__AGENT_UNKNOWN &&
						     ai->state_now != AIDOS__AGENT_STATE__AGENT_PENDING
					     ? ai->state_now
					     : AIDOS__AGENT_STATE__AGENT_IDLE;
		if (a->info->stateful)
			a->info->context_version = ai->context_version;
		a->exclude[0] = 0;
		a->last_fail[0] = 0;
		agent_account(c, a);
		snprintf(why, sizeof why, "node %s came back (stalled past its lease, not dead) still running it%s", node,
			 a->info->stateful ? ": its live context is newer than any checkpoint" : "");
		if (a->info->stateful)
			log_at(c, LOG_INFO, "agent %s: alive on node %s at context version %" PRIu64 " (checkpoint %" PRIu64
			     "): kept there, not placed again", a->info->name, node, ai->context_version,
			     a->ckpt ? a->ckpt->version : 0);
		else
			log_at(c, LOG_INFO, "agent %s: alive on node %s: kept there, not placed again", a->info->name, node);
		set_str(&a->info->reason, why);
		add_event(c, "reclaim", a->info->name, "", node, why);
		kept++;
	}
	for (size_t i = 0; kept && i < req->n_checkpoints; i++)
		if (req->checkpoints[i] && take_checkpoint(c, node, req->checkpoints[i]))
			c->dirty = 1;
	return kept;
}

static int h_heartbeat(void *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp, char *err, size_t errlen)
{
	coord *c = ctx;
	REQ(Aidos__HeartbeatRequest, req, m);
	Aidos__HeartbeatReply rep = AIDOS__HEARTBEAT_REPLY__INIT;
	int changed = 0, ckpts = 0, rc;
	uint64_t now = wall_ms();
	double lat_w = 0, lat_sum = 0;

	if (!coord_name_valid(req->node))
		return fail(err, errlen, AIDOS_E_INVALID, "Heartbeat: invalid node name '%.64s'", req->node);
	pthread_mutex_lock(&c->mu);
	cnode *n = find_node(c, req->node);
	if (!n || n->info->state == AIDOS__NODE_STATE__NODE_DEAD) {
		/* Unknown, or declared dead (its agents live elsewhere now):
		 * it must register again and learn what it should host. */
		if (!n || !n->known_false_logged)
			log_at(c, LOG_INFO, "heartbeat from %s node %s (%zu agents running): asking it to register again",
			     n ? "dead" : "unknown", req->node, req->n_agents);
		if (n) {
			n->known_false_logged = 1;
			if (reclaim_reported(c, n, req))
				changed = 1;
		}
		rep.known = 0;
	} else {
		rep.known = 1;
		n->seen_mono = mono_ms();
		n->info->last_heartbeat_ms = wall_ms();
		n->info->mem_free = req->mem_free;
		n->info->queue_len = req->queue_len;
		if (req->transport && req->transport[0] && strcmp(req->transport, n->info->transport))
			set_str(&n->info->transport, req->transport);
		if (req->transport_reason && req->transport_reason[0] &&
		    strcmp(req->transport_reason, n->info->transport_reason))
			set_str(&n->info->transport_reason, req->transport_reason);
		n->reserved = 0;
		if (n->info->state == AIDOS__NODE_STATE__NODE_UNKNOWN) {
			n->info->state = AIDOS__NODE_STATE__NODE_READY;
			log_at(c, LOG_INFO, "node %s is back (heartbeat after coordinator restart)", req->node);
			changed = 1;
			c->placer_kick = 1;
			pthread_cond_signal(&c->placer_cv);
		}
		for (size_t i = 0; i < req->n_agents; i++) {
			const Aidos__AgentInfo *ai = req->agents[i];
			cagent *a = ai ? find_agent(c, ai->name) : NULL;
			if (!a || a->busy || strcmp(a->info->node, req->node))
				continue;
			if (ai->state_now != AIDOS__AGENT_STATE__AGENT_UNKNOWN &&
			    ai->state_now != AIDOS__AGENT_STATE__AGENT_PENDING)
				a->info->state_now = ai->state_now;
			a->info->latency_ms = ai->latency_ms;
			if (ai->mem_bytes)
				a->info->mem_bytes = ai->mem_bytes;
			if (!a->info->stateful || ai->context_version > a->info->context_version)
				a->info->context_version = ai->context_version;
			observe(c, n, a, ai->requests, now, &lat_w, &lat_sum);
		}
		/* Little's law: queue_len requests waiting add queue_len seconds of
		 * waiting per second to the requests' total response time. */
		n->exec_ratio = lat_w > 0 ? lat_sum / lat_w : 0;
		n->lat_ratio = lat_w > 0 ? (lat_sum + 1000.0 * req->queue_len) / lat_w : 0;
		n->info->lat_ratio = n->lat_ratio;
		for (size_t i = 0; i < req->n_checkpoints; i++)
			if (req->checkpoints[i])
				ckpts += take_checkpoint(c, req->node, req->checkpoints[i]);
		if (ckpts)
			c->dirty = 1;   /* written by the reaper within one period */
	}
	rc = reply_dup(&rep, resp, err, errlen);
	pthread_mutex_unlock(&c->mu);
	if (changed)
		persist(c);
	return rc;
}

static int check_agent_info(const Aidos__AgentInfo *a, char *err, size_t errlen)
{
	if (!a)
		return fail(err, errlen, AIDOS_E_INVALID, "Place: missing agent");
	if (!coord_name_valid(a->name))
		return fail(err, errlen, AIDOS_E_INVALID, "Place: invalid agent name '%.64s' (1-63 of [A-Za-z0-9._-])",
			    a->name);
	if (a->model_path[0] != '/' || strlen(a->model_path) >= MAX_PATH_LEN)
		return fail(err, errlen, AIDOS_E_INVALID, "Place: agent %s: model path '%.200s' is not absolute",
			    a->name, a->model_path);
	if (a->priority < 0 || a->priority > PRIORITY_MAX)
		return fail(err, errlen, AIDOS_E_RANGE, "Place: agent %s: priority %d outside 0..%d", a->name,
			    a->priority, PRIORITY_MAX);
	if (a->device[0] && strcmp(a->device, "cpu") && strcmp(a->device, "cuda"))
		return fail(err, errlen, AIDOS_E_INVALID, "Place: agent %s: unknown device '%.32s' (cpu or cuda)",
			    a->name, a->device);
	if (a->pinned_node[0] && !coord_name_valid(a->pinned_node))
		return fail(err, errlen, AIDOS_E_INVALID, "Place: agent %s: invalid node name '%.64s'", a->name,
			    a->pinned_node);
	if (a->n_state > MAX_STATE_PAIRS)
		return fail(err, errlen, AIDOS_E_INVALID, "Place: agent %s: %zu state pairs (max %d)", a->name,
			    a->n_state, MAX_STATE_PAIRS);
	for (size_t i = 0; i < a->n_state; i++)
		if (!a->state[i] || !a->state[i]->input[0] || !a->state[i]->output[0])
			return fail(err, errlen, AIDOS_E_INVALID, "Place: agent %s: state pair %zu lacks a name",
				    a->name, i);
	return 0;
}

static int h_place(void *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp, char *err, size_t errlen)
{
	coord *c = ctx;
	REQ(Aidos__PlaceRequest, req, m);
	Aidos__PlaceReply rep = AIDOS__PLACE_REPLY__INIT;
	char reason[512] = "";
	cagent *a;
	int rc;

	if ((rc = check_agent_info(req->agent, err, errlen)))
		return rc;
	if (!(a = pool_calloc(1, sizeof *a)) || !(a->info = pb_dup(req->agent))) {
		pool_free(a);
		return fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
	}
	Aidos__AgentInfo *ai = a->info;
	set_str(&ai->node, "");
	set_str(&ai->context_node, "");
	if (!ai->device[0] && set_str(&ai->device, "cpu")) {
		agent_free(a);
		return fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
	}
	if (ai->n_state)
		ai->stateful = 1;
	ai->state_now = AIDOS__AGENT_STATE__AGENT_LOADING;
	ai->context_version = 0;
	ai->latency_ms = 0;
	ai->requests = 0;
	ai->rate = 0;
	ai->est_ms = 0;
	ai->moves = 0;
	ai->moved_ms = 0;
	a->busy = "place";

	pthread_mutex_lock(&c->mu);
	cagent *old = find_agent(c, ai->name);
	if (old) {
		rc = fail(err, errlen, AIDOS_E_INVALID, "agent '%s' already exists (%s%s%s)", ai->name,
			  coord_agent_state_name(old->info->state_now), old->info->node[0] ? " on " : "",
			  old->info->node);
	} else if (insert_agent(c, a)) {
		rc = fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
	}
	pthread_mutex_unlock(&c->mu);
	if (rc) {
		agent_free(a);
		return rc;
	}

	rc = place_agent(c, a, reason, sizeof reason, err, errlen);
	pthread_mutex_lock(&c->mu);
	if (rc) {
		remove_agent(c, a);
		pthread_mutex_unlock(&c->mu);
		log_at(c, LOG_WARN, "%s", err);
		return rc;
	}
	a->busy = NULL;
	settle(c, a);
	pthread_mutex_unlock(&c->mu);
	persist(c);
	log_at(c, LOG_INFO, "agent %s placed: %s", req->agent->name, reason);

	pthread_mutex_lock(&c->mu);
	if ((a = find_agent(c, req->agent->name))) {
		rep.agent = a->info;
		rep.reason = reason;
		rc = reply_dup(&rep, resp, err, errlen);
	} else {
		rc = fail(err, errlen, AIDOS_E_NOTFOUND, "agent '%s' was killed while being placed",
			  req->agent->name);
	}
	pthread_mutex_unlock(&c->mu);
	return rc;
}

/* Looks up agent `name` and marks it busy with op (c->mu held). */
static int claim_agent(coord *c, const char *name, const char *op, cagent **out, char *err, size_t errlen)
{
	if (!coord_name_valid(name))
		return fail(err, errlen, AIDOS_E_INVALID, "invalid agent name '%.64s'", name);
	cagent *a = find_agent(c, name);
	if (!a)
		return fail(err, errlen, AIDOS_E_NOTFOUND, "agent '%s' not found", name);
	if (a->busy)
		return busy_err(a, err, errlen);
	a->busy = op;
	*out = a;
	return 0;
}

static int h_migrate(void *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp, char *err, size_t errlen)
{
	coord *c = ctx;
	REQ(Aidos__MigrateRequest, req, m);
	Aidos__MigrateReply rep = AIDOS__MIGRATE_REPLY__INIT;
	mig_result res;
	cagent *a = NULL;
	int rc;

	if (!coord_name_valid(req->to_node))
		return fail(err, errlen, AIDOS_E_INVALID, "Migrate: invalid node name '%.64s'", req->to_node);
	pthread_mutex_lock(&c->mu);
	rc = claim_agent(c, req->agent, "migrate", &a, err, errlen);
	if (!rc) {
		cnode *dst = find_node(c, req->to_node);
		if (!dst)
			rc = fail(err, errlen, AIDOS_E_NOTFOUND, "node '%s' not found", req->to_node);
		else if (!a->info->node[0])
			rc = fail(err, errlen, AIDOS_E_INVALID, "agent '%s' is %s (on no node): nothing to migrate",
				  req->agent, coord_agent_state_name(a->info->state_now));
		else if (!strcmp(a->info->node, req->to_node))
			rc = fail(err, errlen, AIDOS_E_INVALID, "agent '%s' is already on node '%s'", req->agent,
				  req->to_node);
		else if (dst->info->state != AIDOS__NODE_STATE__NODE_READY)
			rc = fail(err, errlen, AIDOS_E_INVALID, "node '%s' is %s: it takes no agents", req->to_node,
				  coord_node_state_name(dst->info->state));
		if (rc)
			a->busy = NULL;
	}
	pthread_mutex_unlock(&c->mu);
	if (rc)
		return rc;

	rc = migrate_agent(c, a, req->to_node, &res, err, errlen);
	pthread_mutex_lock(&c->mu);
	a->busy = NULL;
	settle(c, a);
	pthread_mutex_unlock(&c->mu);
	if (rc)
		return rc;
	persist(c);
	pthread_mutex_lock(&c->mu);
	rep.agent = a->info;
	rep.ms = res.ms;
	rep.context_bytes = res.bytes;
	rc = reply_dup(&rep, resp, err, errlen);
	pthread_mutex_unlock(&c->mu);
	return rc;
}

static int h_drain(void *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp, char *err, size_t errlen)
{
	coord *c = ctx;
	REQ(Aidos__DrainRequest, req, m);
	Aidos__DrainReply rep = AIDOS__DRAIN_REPLY__INIT;
	cagent **mine = NULL;
	char failed[1024] = "";
	size_t flen = 0;
	int n = 0, total = 0, rc = 0;

	if (!coord_name_valid(req->node))
		return fail(err, errlen, AIDOS_E_INVALID, "Drain: invalid node name '%.64s'", req->node);
	pthread_mutex_lock(&c->mu);
	cnode *node = find_node(c, req->node);
	if (!node) {
		pthread_mutex_unlock(&c->mu);
		return fail(err, errlen, AIDOS_E_NOTFOUND, "node '%s' not found", req->node);
	}
	if (node->info->state == AIDOS__NODE_STATE__NODE_DEAD) {
		pthread_mutex_unlock(&c->mu);
		return fail(err, errlen, AIDOS_E_INVALID, "node '%s' is DEAD: its agents are placed again already",
			    req->node);
	}
	node->info->state = AIDOS__NODE_STATE__NODE_DRAINING;
	mine = pool_malloc(((size_t)c->n_agents + 1) * sizeof *mine);
	for (int i = 0; mine && i < c->n_agents; i++) {
		cagent *a = c->agents[i];
		if (strcmp(a->info->node, req->node))
			continue;
		total++;
		if (a->busy) {
			flen += (size_t)snprintf(failed + flen, flen < sizeof failed ? sizeof failed - flen : 0,
						 "%s'%s': busy (%s)", flen ? "; " : "", a->info->name, a->busy);
			continue;
		}
		a->busy = "drain";
		mine[n++] = a;
	}
	pthread_mutex_unlock(&c->mu);
	if (!mine)
		return fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
	log_at(c, LOG_INFO, "draining node %s: %d agents to move", req->node, total);
	persist(c);

	Aidos__AgentInfo **moved = pool_calloc((size_t)n + 1, sizeof *moved);
	for (int i = 0; i < n; i++) {
		mig_result res;
		char merr[512];
		int r = migrate_agent(c, mine[i], NULL, &res, merr, sizeof merr);
		pthread_mutex_lock(&c->mu);
		mine[i]->busy = NULL;
		if (!r && moved && (moved[rep.n_moved] = pb_dup(mine[i]->info)))
			rep.n_moved++;
		settle(c, mine[i]);
		pthread_mutex_unlock(&c->mu);
		if (r) {
			rc = r;
			flen += (size_t)snprintf(failed + flen, flen < sizeof failed ? sizeof failed - flen : 0,
						 "%s%s", flen ? "; " : "", merr);
		}
	}
	persist(c);
	if (flen) {
		rc = fail(err, errlen, rc ? rc : -EBUSY, "drain %s: moved %zu of %d agents; %s", req->node,
			  rep.n_moved, total, failed);
	} else if (!moved) {
		rc = fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
	} else {
		rep.moved = moved;
		rc = reply_dup(&rep, resp, err, errlen);
		log_at(c, LOG_INFO, "node %s drained: %zu agents moved", req->node, rep.n_moved);
	}
	for (size_t i = 0; moved && i < rep.n_moved; i++)
		pb_free(moved[i]);
	pool_free(moved);
	pool_free(mine);
	return rc;
}

static int h_kill(void *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp, char *err, size_t errlen)
{
	coord *c = ctx;
	REQ(Aidos__KillRequest, req, m);
	Aidos__KillReply rep = AIDOS__KILL_REPLY__INIT;
	char node[MAX_NAME] = "", addr[512] = "", cerr[400];
	cagent *a = NULL;
	int rc, call = 0;

	pthread_mutex_lock(&c->mu);
	rc = claim_agent(c, req->agent, "kill", &a, err, errlen);
	if (!rc && a->info->node[0]) {
		cnode *n = find_node(c, a->info->node);
		snprintf(node, sizeof node, "%s", a->info->node);
		if (n && n->info->state != AIDOS__NODE_STATE__NODE_DEAD) {
			snprintf(addr, sizeof addr, "%s", n->info->rpc_addr);
			call = 1;
		}
	}
	pthread_mutex_unlock(&c->mu);
	if (rc)
		return rc;
	if (call) {
		Aidos__NodeKillRequest kreq = AIDOS__NODE_KILL_REQUEST__INIT;
		Aidos__NodeKillReply *krep = NULL;
		kreq.agent = req->agent;
		int r = node_call(c, addr, "/aidos.Node/Kill", &kreq, &aidos__node_kill_reply__descriptor,
				  (void **)&krep, c->o.call_deadline_ms, cerr, sizeof cerr);
		node_reply_free(krep);
		/* Gone from the directory either way: a node that missed the
		 * kill learns it when it registers again (the reply lists what
		 * it should host). */
		if (r && r != AIDOS_E_NOTFOUND)
			log_at(c, LOG_WARN, "agent %s: kill on node %s failed (%s); removed from the directory anyway",
			     req->agent, node, cerr);
	}
	pthread_mutex_lock(&c->mu);
	remove_agent(c, a);
	pthread_mutex_unlock(&c->mu);
	persist(c);
	log_at(c, LOG_INFO, "agent %s killed%s%s", req->agent, node[0] ? " on " : "", node);
	return reply_dup(&rep, resp, err, errlen);
}

static int by_node_name(const void *x, const void *y)
{
	return strcmp((*(Aidos__NodeInfo *const *)x)->name, (*(Aidos__NodeInfo *const *)y)->name);
}

static int h_list_nodes(void *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp, char *err, size_t errlen)
{
	coord *c = ctx;
	Aidos__ListNodesReply rep = AIDOS__LIST_NODES_REPLY__INIT;
	int rc;
	(void)m;
	pthread_mutex_lock(&c->mu);
	Aidos__NodeInfo **list = pool_malloc(((size_t)c->n_nodes + 1) * sizeof *list);
	if (list) {
		for (int i = 0; i < c->n_nodes; i++) {
			cnode *n = c->nodes[i];
			Aidos__NodeInfo *ni = n->info;
			int dev = node_has_gpu(ni) ? SCHED_DEV_GPU : SCHED_DEV_CPU;
			ni->n_agents = n->n_agents;
			ni->pred_util = 0;
			for (int d = 0; d < SCHED_DEV_N; d++)
				for (int k = 0; k < SCHED_PRIO_N; k++)
					ni->pred_util += d == dev ? n->util[d][k] : 0;
			ni->overload_streak = (uint32_t)n->streak;
			ni->speed = n->exec_ratio > 1.0 ? n->exec_ratio : 1.0;
			ni->workers = node_workers(ni, dev);
			list[i] = ni;
		}
		qsort(list, (size_t)c->n_nodes, sizeof *list, by_node_name);
		rep.n_nodes = (size_t)c->n_nodes;
		rep.nodes = list;
		rc = reply_dup(&rep, resp, err, errlen);
	} else {
		rc = fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
	}
	pthread_mutex_unlock(&c->mu);
	pool_free(list);
	return rc;
}

static int h_list_agents(void *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp, char *err, size_t errlen)
{
	coord *c = ctx;
	Aidos__ListAgentsReply rep = AIDOS__LIST_AGENTS_REPLY__INIT;
	int rc;
	(void)m;
	pthread_mutex_lock(&c->mu);
	Aidos__AgentInfo **list = pool_malloc(((size_t)c->n_agents + 1) * sizeof *list);
	if (list) {
		for (int i = 0; i < c->n_agents; i++)
			list[i] = c->agents[i]->info;
		rep.n_agents = (size_t)c->n_agents;
		rep.agents = list;
		rc = reply_dup(&rep, resp, err, errlen);
	} else {
		rc = fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
	}
	pthread_mutex_unlock(&c->mu);
	pool_free(list);
	return rc;
}

static int h_resolve(void *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp, char *err, size_t errlen)
{
	coord *c = ctx;
	REQ(Aidos__ResolveRequest, req, m);
	Aidos__ResolveReply rep = AIDOS__RESOLVE_REPLY__INIT;
	int rc;

	if (!coord_name_valid(req->agent))
		return fail(err, errlen, AIDOS_E_INVALID, "Resolve: invalid agent name '%.64s'", req->agent);
	pthread_mutex_lock(&c->mu);
	cagent *a = find_agent(c, req->agent);
	cnode *n = a ? find_node(c, a->info->node) : NULL;
	if (!a) {
		rc = fail(err, errlen, AIDOS_E_NOTFOUND, "agent '%s' not found", req->agent);
	} else if (!n) {
		/* NOTFOUND so clients resolve again shortly (docs/cluster.md). */
		rc = fail(err, errlen, AIDOS_E_NOTFOUND, "agent '%s' is %s: on no node yet (%s)", req->agent,
			  coord_agent_state_name(a->info->state_now),
			  a->last_fail[0] ? a->last_fail : "placement in progress");
	} else if (!node_alive(n) && n->info->state != AIDOS__NODE_STATE__NODE_UNKNOWN) {
		rc = fail(err, errlen, AIDOS_E_NOTFOUND, "agent '%s': its node %s is %s; it is being placed again",
			  req->agent, n->info->name, coord_node_state_name(n->info->state));
	} else {
		n->info->n_agents = agents_on(c, n->info->name);
		rep.agent = a->info;
		rep.node = n->info;
		rc = reply_dup(&rep, resp, err, errlen);
	}
	pthread_mutex_unlock(&c->mu);
	return rc;
}

static const char *dev_name(int dev)
{
	return dev == SCHED_DEV_GPU ? "cuda" : "cpu";
}

static int by_score(const void *x, const void *y)
{
	const Aidos__Candidate *a = *(Aidos__Candidate *const *)x, *b = *(Aidos__Candidate *const *)y;
	if (a->feasible != b->feasible)
		return a->feasible ? -1 : 1;
	if (a->total != b->total)
		return a->total < b->total ? -1 : 1;
	return strcmp(a->node, b->node);
}

/* Explain: every node's score terms for the agent as if it were placed now
 * (its own node included, its context where it lives), best first. */
static int h_explain(void *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp, char *err, size_t errlen)
{
	coord *c = ctx;
	REQ(Aidos__ExplainRequest, req, m);
	Aidos__ExplainReply rep = AIDOS__EXPLAIN_REPLY__INIT;
	Aidos__Candidate *cands = NULL, **list = NULL;
	char names[1][MAX_NAME], why[256] = "";
	int rc;

	if (!coord_name_valid(req->agent))
		return fail(err, errlen, AIDOS_E_INVALID, "Explain: invalid agent name '%.64s'", req->agent);
	pthread_mutex_lock(&c->mu);
	cagent *a = find_agent(c, req->agent);
	if (!a) {
		pthread_mutex_unlock(&c->mu);
		return fail(err, errlen, AIDOS_E_NOTFOUND, "agent '%s' not found", req->agent);
	}
	int n = c->n_nodes;
	cands = pool_calloc((size_t)n + 1, sizeof *cands);
	list = pool_calloc((size_t)n + 1, sizeof *list);
	if (!cands || !list) {
		rc = fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
		goto out;
	}
	int k = decide(c, a, a->info->pinned_node, NULL, names, NULL, 1, why, sizeof why);
	for (int i = 0; i < n; i++) {
		const sched_score *s = &c->scores[i];
		Aidos__Candidate *cd = &cands[i];
		aidos__candidate__init(cd);
		cd->node = (char *)c->view[i].name;
		cd->feasible = s->feasible;
		cd->why_not = (char *)(s->feasible ? "" : s->why ? s->why : "");
		cd->device = (char *)dev_name(s->dev);
		cd->total = s->total;
		cd->latency = s->latency;
		cd->queue = s->queue;
		cd->gpu = s->gpu;
		cd->move = s->move;
		cd->memory = s->memory;
		cd->spread = s->spread;
		list[i] = cd;
	}
	qsort(list, (size_t)n, sizeof *list, by_score);
	rep.agent = a->info;
	rep.n_candidates = (size_t)n;
	rep.candidates = list;
	rep.best = k ? names[0] : why;
	rc = reply_dup(&rep, resp, err, errlen);
out:
	pthread_mutex_unlock(&c->mu);
	pool_free(cands);
	pool_free(list);
	return rc;
}

static int h_events(void *ctx, const ProtobufCMessage *m, ProtobufCMessage **resp, char *err, size_t errlen)
{
	coord *c = ctx;
	REQ(Aidos__EventsRequest, req, m);
	Aidos__EventsReply rep = AIDOS__EVENTS_REPLY__INIT;
	Aidos__Event evs[EVENT_RING], *list[EVENT_RING];
	int rc;
	pthread_mutex_lock(&c->mu);
	uint64_t first = c->event_seq > EVENT_RING ? c->event_seq - EVENT_RING + 1 : 1;
	if (req->after_seq + 1 > first)
		first = req->after_seq + 1;
	for (uint64_t q = first; q <= c->event_seq; q++) {
		const cevent *e = &c->events[(q - 1) % EVENT_RING];
		Aidos__Event *o = &evs[rep.n_events];
		aidos__event__init(o);
		o->ms = e->ms;
		o->seq = e->seq;
		o->kind = (char *)e->kind;
		o->agent = (char *)e->agent;
		o->from_node = (char *)e->from;
		o->to_node = (char *)e->to;
		o->reason = (char *)e->reason;
		list[rep.n_events++] = o;
	}
	rep.events = list;
	rep.rebalance = c->o.rebalance != COORD_REBALANCE_OFF;
	rc = reply_dup(&rep, resp, err, errlen);
	pthread_mutex_unlock(&c->mu);
	return rc;
}

int coord_decide(coord *c, const char *agent, char *node, size_t len, char *err, size_t errlen)
{
	char names[1][MAX_NAME], why[256] = "";
	int rc = 0;
	pthread_mutex_lock(&c->mu);
	cagent *a = find_agent(c, agent);
	if (!a)
		rc = fail(err, errlen, AIDOS_E_NOTFOUND, "agent '%s' not found", agent);
	else if (!decide(c, a, a->info->pinned_node, NULL, names, NULL, 1, why, sizeof why))
		rc = fail(err, errlen, sched_code(why), "agent '%s': %s", agent, why);
	else
		snprintf(node, len, "%s", names[0]);
	pthread_mutex_unlock(&c->mu);
	return rc;
}

#define METHOD(name, req, fn) \
	{ "/aidos.Coordinator/" name, &aidos__##req##__descriptor, fn, coord_reply_free }

static const rpc_method methods[] = {
	METHOD("RegisterNode", register_node_request, h_register),
	METHOD("Heartbeat", heartbeat_request, h_heartbeat),
	METHOD("Place", place_request, h_place),
	METHOD("Migrate", migrate_request, h_migrate),
	METHOD("Drain", drain_request, h_drain),
	METHOD("Kill", kill_request, h_kill),
	METHOD("ListNodes", list_nodes_request, h_list_nodes),
	METHOD("ListAgents", list_agents_request, h_list_agents),
	METHOD("Resolve", resolve_request, h_resolve),
	METHOD("Explain", explain_request, h_explain),
	METHOD("Events", events_request, h_events),
};

const rpc_method *coord_rpc_methods(int *n)
{
	*n = (int)(sizeof methods / sizeof methods[0]);
	return methods;
}

int coord_call(coord *c, const char *method, const ProtobufCMessage *req, ProtobufCMessage **resp,
	       char *err, size_t errlen)
{
	*resp = NULL;
	for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
		if (strcmp(methods[i].path, method))
			continue;
		if (!req || req->descriptor != methods[i].req_desc)
			return fail(err, errlen, AIDOS_E_INVALID, "%s: request is not a %s", method,
				    methods[i].req_desc->name);
		return methods[i].fn(c, req, resp, err, errlen);
	}
	return fail(err, errlen, AIDOS_E_UNSUPPORTED, "unknown method '%s'", method ? method : "(null)");
}

/* ---- reaper and placer ---- */

int coord_reap(coord *c)
{
	uint64_t now = mono_ms();
	int dead = 0, dirty;

	pthread_mutex_lock(&c->mu);
	for (int i = 0; i < c->n_nodes; i++) {
		cnode *n = c->nodes[i];
		uint64_t silent, limit;
		if (n->info->state == AIDOS__NODE_STATE__NODE_DEAD)
			continue;
		if (n->seen_mono) {
			silent = now - n->seen_mono;
			limit = c->o.lease_ms;
		} else {   /* from disk, not heard from since this start */
			silent = now - c->start_mono;
			limit = c->o.lease_ms * UNKNOWN_GRACE;
		}
		if (silent <= limit)
			continue;
		int was_unknown = !n->seen_mono;
		n->info->state = AIDOS__NODE_STATE__NODE_DEAD;
		n->known_false_logged = 0;
		dead++;
		log_at(c, LOG_WARN, "node %s declared DEAD: silent for %" PRIu64 " ms (%s %" PRIu64 " ms)",
		     n->info->name, silent, was_unknown ? "not heard since restart; grace" : "lease", limit);
		for (int j = 0; j < c->n_agents; j++) {
			cagent *a = c->agents[j];
			if (strcmp(a->info->node, n->info->name) || a->busy)
				continue;   /* a busy one is settled by its operation */
			if (!a->info->stateful)
				log_at(c, LOG_INFO, "agent %s: placing again (stateless)", a->info->name);
			else if (a->ckpt)
				log_at(c, LOG_INFO, "agent %s: placing again from checkpoint version %" PRIu64,
				     a->info->name, a->ckpt->version);
			else
				log_at(c, LOG_WARN, "agent %s: placing again from zeros (no checkpoint received)",
				     a->info->name);
			make_pending(c, a, n->info->name);
		}
	}
	dirty = c->dirty;
	pthread_mutex_unlock(&c->mu);
	if (dead || dirty)
		persist(c);
	return dead;
}

static void deadline_in(struct timespec *ts, uint64_t ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += (time_t)(ms / 1000);
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/* The reaper woke late_ms after it should have (c->mu held): this process
 * did not run meanwhile (a stopped or starved coordinator, a VM paused by
 * its host), so the nodes' beats of that time wait unread in its sockets.
 * That time does not count against their leases: without this, the reaper
 * running first after such a stall declares every node dead at once. */
static void credit_stall(coord *c, uint64_t late_ms)
{
	uint64_t now = mono_ms();
	log_at(c, LOG_WARN, "reaper ran %" PRIu64 " ms late (this process did not run): that time does not count "
	     "against the nodes' leases", late_ms);
	for (int i = 0; i < c->n_nodes; i++) {
		cnode *n = c->nodes[i];
		if (n->seen_mono)
			n->seen_mono = n->seen_mono + late_ms < now ? n->seen_mono + late_ms : now;
	}
	c->start_mono = c->start_mono + late_ms < now ? c->start_mono + late_ms : now;
}

static void *reaper_main(void *arg)
{
	coord *c = arg;
	struct timespec ts;
	pthread_mutex_lock(&c->mu);
	while (!c->stop) {
		deadline_in(&ts, c->o.reaper_ms);
		uint64_t due = mono_ms() + c->o.reaper_ms;
		while (!c->stop && pthread_cond_timedwait(&c->reaper_cv, &c->mu, &ts) != ETIMEDOUT)
			;
		if (c->stop)
			break;
		uint64_t now = mono_ms();
		if (now > due && now - due > c->o.lease_ms / 4)
			credit_stall(c, now - due);
		pthread_mutex_unlock(&c->mu);
		coord_reap(c);
		pthread_mutex_lock(&c->mu);
	}
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

/* ---- the rebalancer ---- */

typedef struct move {
	cagent *a;
	char from[MAX_NAME], to[MAX_NAME], reason[256];
} move;

#define MOVES_PER_CHECK 8

int coord_rebalance(coord *c)
{
	move todo[MOVES_PER_CHECK];
	int nt = 0, moved = 0;
	uint64_t now = wall_ms();
	cagent **pick = NULL;

	pthread_mutex_lock(&c->mu);
	/* 1. each node's overload check (hysteresis: sustained for rp.sustain
	 * checks), and whether its highest busy class needs room: requests of
	 * the node's highest busy class that wait behind lower-class runs
	 * (the dispatcher never preempts). Its own latency figures do not
	 * show that wait (they time execution only) and the node-wide queue
	 * may stay under the overload thresholds, so the check predicts it
	 * from the lower classes' utilisation and estimates. */
	int any = 0;
	for (int i = 0; i < c->n_nodes; i++) {
		cnode *n = c->nodes[i];
		n->room_cls = -1;
		n->room_hi_est = n->room_lo_est = n->room_lo_util = 0;
		n->room_for = NULL;
	}
	for (int j = 0; j < c->n_agents; j++) {   /* each node's highest busy class, its fastest estimate */
		cagent *a = c->agents[j];
		cnode *n = a->at;
		int cls = sched_prio_class(a->info->priority);
		if (!n || a->dev != (n->has_gpu ? SCHED_DEV_GPU : SCHED_DEV_CPU) || !(a->info->rate > 0) ||
		    !(a->info->est_ms > 0) || cls < n->room_cls)
			continue;
		if (cls > n->room_cls || a->info->est_ms < n->room_hi_est) {
			n->room_cls = cls;
			n->room_hi_est = a->info->est_ms;
			n->room_for = a->info->name;
		}
	}
	for (int j = 0; j < c->n_agents; j++) {   /* the longest lower-class estimate there */
		cagent *a = c->agents[j];
		cnode *n = a->at;
		if (n && n->room_cls > 0 && a->dev == (n->has_gpu ? SCHED_DEV_GPU : SCHED_DEV_CPU) &&
		    sched_prio_class(a->info->priority) < n->room_cls && a->info->rate > 0 &&
		    a->info->est_ms > n->room_lo_est)
			n->room_lo_est = a->info->est_ms;
	}
	for (int i = 0; i < c->n_nodes; i++) {
		cnode *n = c->nodes[i];
		if (n->info->state != AIDOS__NODE_STATE__NODE_READY) {
			n->streak = 0;
			n->room_streak = 0;
			continue;
		}
		int rdev = n->has_gpu ? SCHED_DEV_GPU : SCHED_DEV_CPU;
		int rw = (int)n->workers[rdev];
		for (int k = 0; k < n->room_cls; k++)
			n->room_lo_util += n->util[rdev][k];
		/* two or more workers: the node keeps one for its top class */
		any |= sched_needs_room(&c->rp, n->room_hi_est, n->room_lo_est, n->room_lo_util, rw, rw >= 2,
					&n->room_streak);
		int dev = node_has_gpu(n->info) ? SCHED_DEV_GPU : SCHED_DEV_CPU;
		double util = 0, w = node_workers(n->info, dev);
		for (int k = 0; k < SCHED_PRIO_N; k++)
			util += n->util[dev][k];
		/* queue depth counts as utilisation: 2 requests waiting per worker = 1.0 */
		double qu = (double)n->info->queue_len / (2.0 * w);
		sched_overloaded(&c->rp, n->lat_ratio, 1.0, util > qu ? util : qu, &n->streak);
		n->info->overload_streak = (uint32_t)n->streak;
		any |= n->streak >= c->rp.sustain;
	}
	if (!any || !(pick = pool_calloc((size_t)c->n_nodes + 1, sizeof *pick)))
		goto unlock;
	/* 2. per overloaded node, its mover: the lowest class, then the
	 * heaviest, neither busy, pinned, nor within its cool-down (one pass) */
	for (int j = 0; j < c->n_agents; j++) {
		cagent *a = c->agents[j];
		int at;
		int over = a->at && a->at->streak >= c->rp.sustain;
		int room = a->at && a->at->room_streak >= c->rp.sustain &&
			   sched_prio_class(a->info->priority) < a->at->room_cls;
		if (!a->at || !(over || room) || a->busy || a->info->pinned_node[0] ||
		    (a->considered_ms && now - a->considered_ms < (uint64_t)(c->rp.cooldown_s * 1000)) ||
		    !find_node_idx(c, a->at->info->name, &at))
			continue;
		cagent *p = pick[at];
		int ca = sched_prio_class(a->info->priority), cp = p ? sched_prio_class(p->info->priority) : 0;
		if (!p || ca < cp || (ca == cp && a->contrib > p->contrib))
			pick[at] = a;
	}
	/* 3. where each would go, and whether that pays (minimum gain) */
	for (int i = 0; i < c->n_nodes && nt < MOVES_PER_CHECK; i++) {
		cagent *a = pick[i];
		cnode *n = c->nodes[i];
		if (!a)
			continue;
		char names[SPAWN_TRIES][MAX_NAME], why[256] = "";
		sched_score stay, go;
		sched_agent sa;
		int to = -1, m, cls = sched_prio_class(a->info->priority), dev = agent_dev(a);
		m = decide(c, a, NULL, n->info->name, names, NULL, SPAWN_TRIES, why, sizeof why);
		/* Rebalancing makes room for higher-priority agents and never takes
		 * it: a lower-class agent does not move onto a node where a higher
		 * class runs (else saturating low-priority load would follow them
		 * around, one cool-down at a time). */
		for (int j = 0; j < m && to < 0; j++) {
			int t, busy_hi = 0;
			if (!find_node_idx(c, names[j], &t))
				continue;
			for (int k = cls + 1; k < SCHED_PRIO_N; k++)
				busy_hi |= c->nodes[t]->util[dev][k] > 0;
			if (!busy_hi)
				to = t;
		}
		if (to < 0)
			continue;
		fill_agent(c, a, &sa, NULL, n->info->name);
		memset(&stay, 0, sizeof stay);
		memset(&go, 0, sizeof go);
		/* Making room for a higher class: the lower class yields, even
		 * where it runs no faster itself (only onto a node without a
		 * higher class, above); else the move must pay for the mover. */
		int room = n->room_streak >= c->rp.sustain && cls < n->room_cls && n->streak < c->rp.sustain;
		if (!sched_move_worth(c->view, c->n_nodes, &sa, to, &c->sp, &c->rp, &stay, &go) &&
		    !(room && go.feasible))
			continue;
		move *mv = &todo[nt++];
		mv->a = a;
		a->busy = "rebalance";
		a->considered_ms = now;   /* cool-down: not moved again before rp.cooldown_s */
		snprintf(mv->from, sizeof mv->from, "%s", n->info->name);
		snprintf(mv->to, sizeof mv->to, "%s", c->nodes[to]->info->name);
		if (room)
			snprintf(mv->reason, sizeof mv->reason,
				 "node %s overloaded for higher-priority agent %s for %d checks (lower classes' utilisation "
				 "%.2f on %u workers: its requests wait for their runs, tail x%.2f of its %.2f ms "
				 "estimate); priority %d makes room; predicted %.2f ms there vs %.2f ms on %s",
				 n->info->name, n->room_for ? n->room_for : "?", n->room_streak, n->room_lo_util,
				 n->workers[dev], (n->room_hi_est + n->room_lo_est) / n->room_hi_est, n->room_hi_est,
				 a->info->priority, stay.total, go.total, c->nodes[to]->info->name);
		else
			snprintf(mv->reason, sizeof mv->reason,
				 "node %s overloaded for %d checks (latency x%.2f of estimate, queue %u); priority %d; "
				 "predicted %.2f ms there vs %.2f ms on %s",
				 n->info->name, n->streak, n->lat_ratio, n->info->queue_len, a->info->priority,
				 stay.total, go.total, c->nodes[to]->info->name);
		add_event(c, "overload", a->info->name, mv->from, mv->to, mv->reason);
		n->streak = 0;
		n->room_streak = 0;
	}
unlock:
	pthread_mutex_unlock(&c->mu);
	pool_free(pick);
	/* 4. the moves, through the migration path (context included) */
	for (int i = 0; i < nt; i++) {
		mig_result res;
		char err[512];
		int rc = migrate_agent(c, todo[i].a, todo[i].to, &res, err, sizeof err);
		pthread_mutex_lock(&c->mu);
		cagent *a = todo[i].a;
		if (!rc) {
			moved++;
			a->info->moves++;
			a->info->moved_ms = wall_ms();
			set_str(&a->info->reason, todo[i].reason);
			add_event(c, "rebalance", a->info->name, todo[i].from, todo[i].to, todo[i].reason);
			log_at(c, LOG_INFO, "rebalance: agent %s moved %s -> %s in %.1f ms: %s", a->info->name,
			       todo[i].from, todo[i].to, res.ms, todo[i].reason);
		} else {
			add_event(c, "rebalance-failed", a->info->name, todo[i].from, todo[i].to, err);
			log_at(c, LOG_WARN, "rebalance: agent %s stays on %s: %s", a->info->name, todo[i].from, err);
		}
		a->busy = NULL;
		settle(c, a);
		pthread_mutex_unlock(&c->mu);
	}
	if (moved)
		persist(c);
	return moved;
}

/* Places every PENDING agent that nobody is working on. */
static void place_pending(coord *c)
{
	cagent **todo;
	int n = 0, placed = 0;

	pthread_mutex_lock(&c->mu);
	todo = pool_malloc(((size_t)c->n_agents + 1) * sizeof *todo);
	for (int i = 0; todo && i < c->n_agents; i++) {
		cagent *a = c->agents[i];
		if (a->busy || a->info->node[0] || a->info->state_now != AIDOS__AGENT_STATE__AGENT_PENDING)
			continue;
		a->busy = "re-place";
		todo[n++] = a;
	}
	pthread_mutex_unlock(&c->mu);
	for (int i = 0; i < n; i++) {
		cagent *a = todo[i];
		char reason[512], err[512];
		double t0 = mono_msf();
		int rc = place_agent(c, a, reason, sizeof reason, err, sizeof err);
		pthread_mutex_lock(&c->mu);
		if (!rc) {
			placed++;
			log_at(c, LOG_INFO, "agent %s placed again in %.1f ms: %s", a->info->name, mono_msf() - t0,
			     reason);
		} else if (strcmp(a->last_fail, err)) {
			log_at(c, LOG_WARN, "%s (stays PENDING; retrying every %d ms and when a node joins)", err,
			     PLACER_PERIOD_MS);
			snprintf(a->last_fail, sizeof a->last_fail, "%s", err);
		}
		a->busy = NULL;
		settle(c, a);
		pthread_mutex_unlock(&c->mu);
	}
	pool_free(todo);
	if (placed)
		persist(c);
}

static void *placer_main(void *arg)
{
	coord *c = arg;
	struct timespec ts;
	pthread_mutex_lock(&c->mu);
	while (!c->stop) {
		deadline_in(&ts, c->o.rebalance != COORD_REBALANCE_OFF && c->o.rebalance_ms < PLACER_PERIOD_MS
					 ? c->o.rebalance_ms : PLACER_PERIOD_MS);
		while (!c->stop && !c->placer_kick &&
		       pthread_cond_timedwait(&c->placer_cv, &c->mu, &ts) != ETIMEDOUT)
			;
		if (c->stop)
			break;
		c->placer_kick = 0;
		pthread_mutex_unlock(&c->mu);
		place_pending(c);
		if (c->o.rebalance != COORD_REBALANCE_OFF && mono_ms() - c->rebalance_last >= c->o.rebalance_ms) {
			c->rebalance_last = mono_ms();
			coord_rebalance(c);
		}
		pthread_mutex_lock(&c->mu);
	}
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

/* ---- lifecycle ---- */

int coord_create(const coord_opts *o, coord **out, char *err, size_t errlen)
{
	pthread_condattr_t ca;
	coord *c;
	int rc;

	*out = NULL;
	if (!o || !o->data_dir || !*o->data_dir)
		return fail(err, errlen, AIDOS_E_INVALID, "coordinator: --data-dir is required");
	if (strlen(o->data_dir) >= MAX_PATH_LEN)
		return fail(err, errlen, AIDOS_E_INVALID, "coordinator: data dir path too long");
	if (!(c = pool_calloc(1, sizeof *c)))
		return fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
	c->o = *o;
	if (!c->o.heartbeat_ms)
		c->o.heartbeat_ms = 250;
	if (!c->o.lease_ms)
		c->o.lease_ms = 1000;
	if (!c->o.reaper_ms)
		c->o.reaper_ms = 50;
	if (c->o.spawn_deadline_ms <= 0)
		c->o.spawn_deadline_ms = 5000;
	if (c->o.call_deadline_ms <= 0)
		c->o.call_deadline_ms = 2000;
	if (!c->o.rebalance_ms)
		c->o.rebalance_ms = 1000;
	sched_params_default(&c->sp);
	sched_rebalance_params_default(&c->rp);
	if (c->o.lease_ms <= c->o.heartbeat_ms) {
		fail(err, errlen, AIDOS_E_INVALID,
		     "coordinator: lease (%" PRIu64 " ms) must exceed the heartbeat period (%" PRIu64 " ms)",
		     c->o.lease_ms, c->o.heartbeat_ms);
		pool_free(c);
		return AIDOS_E_INVALID;
	}
	c->data_dir = pool_strndup(o->data_dir, strlen(o->data_dir));
	c->o.data_dir = c->data_dir;
	pthread_mutex_init(&c->mu, NULL);
	pthread_mutex_init(&c->save_mu, NULL);
	pthread_mutex_init(&c->cli_mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->placer_cv, &ca);
	pthread_cond_init(&c->reaper_cv, &ca);
	pthread_condattr_destroy(&ca);
	c->start_mono = mono_ms();
	if (!c->data_dir) {
		coord_destroy(c);
		return fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
	}
	if (mkdir(c->data_dir, 0755) && errno != EEXIST) {
		rc = -errno;
		fail(err, errlen, rc, "cannot create data dir %s: %s", c->data_dir, strerror(errno));
		coord_destroy(c);
		return rc;
	}
	if (!c->o.memory_only && (rc = load_state(c, err, errlen))) {
		coord_destroy(c);
		return rc;
	}
	if (!c->o.node_call) {
		rpc_init();
		c->rpc_ref++;
	}
	*out = c;
	return 0;
}

int coord_start(coord *c)
{
	int rc;
	if (c->threads)
		return 0;
	if ((rc = pthread_create(&c->reaper, NULL, reaper_main, c)))
		return -rc;
	if ((rc = pthread_create(&c->placer, NULL, placer_main, c))) {
		pthread_mutex_lock(&c->mu);
		c->stop = 1;
		pthread_cond_broadcast(&c->reaper_cv);
		pthread_mutex_unlock(&c->mu);
		pthread_join(c->reaper, NULL);
		c->stop = 0;
		return -rc;
	}
	c->threads = 1;
	c->ran = 1;
	return 0;
}

int coord_listen(coord *c, const char *addr, int threads, int *port, char *err, size_t errlen)
{
	int n, rc;
	const rpc_method *m = coord_rpc_methods(&n);
	if (c->srv)
		return fail(err, errlen, AIDOS_E_INVALID, "coordinator already listening");
	rpc_init();
	c->rpc_ref++;
	rc = rpc_server_start(addr, m, n, c, threads, &c->srv, port, err, errlen);
	if (rc)
		c->srv = NULL;
	else
		c->ran = 1;
	return rc;
}

void coord_destroy(coord *c)
{
	if (!c)
		return;
	if (c->srv)
		rpc_server_stop(c->srv);
	c->srv = NULL;
	if (c->threads) {
		pthread_mutex_lock(&c->mu);
		c->stop = 1;
		pthread_cond_broadcast(&c->reaper_cv);
		pthread_cond_broadcast(&c->placer_cv);
		pthread_mutex_unlock(&c->mu);
		pthread_join(c->reaper, NULL);
		pthread_join(c->placer, NULL);
		c->threads = 0;
	}
	/* A coordinator that ran saves a last time (fresh heartbeat times);
	 * one that failed to start must not overwrite what it could not read. */
	if (c->data_dir && (c->dirty || c->ran))
		persist(c);
	for (int i = 0; i < c->n_nodes; i++) {
		pb_free(c->nodes[i]->info);
		pool_free(c->nodes[i]);
	}
	for (int i = 0; i < c->n_agents; i++)
		agent_free(c->agents[i]);
	for (int i = 0; i < c->n_models; i++)
		pool_free(c->models[i].path);
	pool_free(c->models);
	pool_free(c->view);
	pool_free(c->scores);
	pool_free(c->nodes);
	pool_free(c->agents);
	for (int i = 0; i < c->n_clis; i++) {
		rpc_client_destroy(c->clis[i].cli);
		pool_free(c->clis[i].addr);
	}
	pool_free(c->clis);
	while (c->rpc_ref-- > 0)
		rpc_shutdown();
	pthread_mutex_destroy(&c->mu);
	pthread_mutex_destroy(&c->save_mu);
	pthread_mutex_destroy(&c->cli_mu);
	pthread_cond_destroy(&c->placer_cv);
	pthread_cond_destroy(&c->reaper_cv);
	pool_free(c->data_dir);
	pool_free(c);
}
