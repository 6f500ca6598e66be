/*
 * coordinator/aidosctl_main.c - `aidosctl`: the operator CLI of an aidos
 * cluster (docs/cluster.md).
 *
 *   aidosctl [--coord ADDR] nodes [--json]
 *   aidosctl [--coord ADDR] agents [--json]
 *   aidosctl [--coord ADDR] place NAME MODEL.onnx [--node N] [--priority P]
 *                                 [--device cpu|cuda] [--stateful] [--state IN=OUT]...
 *   aidosctl [--coord ADDR] migrate NAME --to N
 *   aidosctl [--coord ADDR] drain N
 *   aidosctl [--coord ADDR] kill NAME
 *   aidosctl [--coord ADDR] infer NAME --input K=F.npy ... --output-dir DIR [--json]
 *                                 [--timeout-ms N]
 *   aidosctl [--coord ADDR] top [--once] [--json] [--interval-ms N]
 *   aidosctl [--coord ADDR] explain NAME [--json]
 *
 * The coordinator comes from --coord or $AIDOS_COORD. Control calls are
 * gRPC (proto/rpc.h); `infer` moves tensors over the data plane: it
 * resolves the agent, opens its own UCX worker, connects to the node's
 * published address and sends one TransportRequest tag message (node/wire.h),
 * resolving again when the agent moved. Every error is one line on stderr
 * and a non-zero exit: 1 for a failure, 2 for a usage error.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "aidos/aidos.h"
#include "aidos/npy.h"
#include "coordinator/coord.h"
#include "node/wire.h"
#include "pools/pools.h"
#include "proto/aidos.pb-c.h"
#include "proto/rpc.h"
#include "transport/transport.h"
#include "tools/cli.h"
#include <ucs/config/global_opts.h>   /* ucs_global_opts_set_value: see cmd_infer */

#define MAX_INPUTS 64
#define MAX_PAIRS 64
#define INFER_RETRIES 3          /* resolve again this many times (moved, re-placed, redirected) */
#define DEADLINE_LIST 3000
#define DEADLINE_PLACE 20000     /* up to three spawns of 5 s each on the coordinator */
#define DEADLINE_MIGRATE 20000
#define DEADLINE_DRAIN 120000

static const char *coord_addr;

/* ---- output helpers ---- */

__attribute__((format(printf, 1, 2)))
static int die(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	for (char *p = msg; *p; p++)   /* one line, whatever the message holds */
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	fprintf(stderr, "aidosctl: %s\n", msg);
	return 1;
}

static int usage_err(const char *cmd, const char *fmt, const char *arg)
{
	char msg[512];
	snprintf(msg, sizeof msg, fmt, arg);
	fprintf(stderr, "aidosctl: %s%s%s (see 'aidosctl %s%s--help')\n", cmd ? cmd : "", cmd ? ": " : "", msg,
		cmd ? cmd : "", cmd ? " " : "");
	return 2;
}

static double mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static uint64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static void fmt_bytes(char *b, size_t n, uint64_t v)
{
	if (v >= (1ull << 30))
		snprintf(b, n, "%.1fG", (double)v / (double)(1ull << 30));
	else if (v >= (1ull << 20))
		snprintf(b, n, "%.1fM", (double)v / (double)(1ull << 20));
	else if (v >= 1024)
		snprintf(b, n, "%.1fK", (double)v / 1024.0);
	else
		snprintf(b, n, "%" PRIu64 "B", v);
}

static const char *dtype_name(int32_t dt)
{
	switch (dt) {
	case AIDOS_DT_FLOAT: return "float32";
	case AIDOS_DT_UINT8: return "uint8";
	case AIDOS_DT_INT8: return "int8";
	case AIDOS_DT_INT32: return "int32";
	case AIDOS_DT_INT64: return "int64";
	case AIDOS_DT_BOOL: return "bool";
	case AIDOS_DT_DOUBLE: return "float64";
	default: return "?";
	}
}

/* A text table: cells are collected, widths computed, then printed. */
#define TBL_COLS 16
typedef struct table {
	int ncol, nrow, cap;
	char **cells;
} table;

__attribute__((format(printf, 2, 3)))
static void cell(table *t, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n = t->nrow * TBL_COLS + t->ncol;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n >= t->cap) {
		int ncap = t->cap ? t->cap * 2 : TBL_COLS * 16;
		char **p = pool_realloc(t->cells, (size_t)ncap * sizeof *p);
		if (!p)
			return;
		memset(p + t->cap, 0, (size_t)(ncap - t->cap) * sizeof *p);
		t->cells = p;
		t->cap = ncap;
	}
	if (t->ncol < TBL_COLS) {
		t->cells[n] = pool_strndup(buf, strlen(buf));
		t->ncol++;
	}
}

static void row_end(table *t)
{
	t->nrow++;
	t->ncol = 0;
}

static void table_print(table *t, FILE *f)
{
	int w[TBL_COLS] = { 0 };
	for (int r = 0; r < t->nrow; r++)
		for (int k = 0; k < TBL_COLS; k++) {
			const char *s = t->cells[r * TBL_COLS + k];
			if (s && (int)strlen(s) > w[k])
				w[k] = (int)strlen(s);
		}
	for (int r = 0; r < t->nrow; r++) {
		int ncells = 0;
		for (int k = 0; k < TBL_COLS; k++)
			if (t->cells[r * TBL_COLS + k])
				ncells = k + 1;
		for (int k = 0; k < ncells; k++) {
			const char *s = t->cells[r * TBL_COLS + k];
			if (k == ncells - 1)
				fprintf(f, "%s", s ? s : "");
			else
				fprintf(f, "%-*s  ", w[k], s ? s : "");
		}
		fputc('\n', f);
	}
}

static void table_free(table *t)
{
	for (int i = 0; i < t->cap; i++)
		pool_free(t->cells[i]);
	pool_free(t->cells);
	memset(t, 0, sizeof *t);
}

/* ---- coordinator calls ---- */

static rpc_client *coord_cli;

static rpc_client *coord_client(void)
{
	if (!coord_cli && rpc_client_create(coord_addr, &coord_cli))
		coord_cli = NULL;
	return coord_cli;
}

/* One Coordinator call; on failure prints the error and returns non-zero. */
static int ccall(const char *method, const void *req, const ProtobufCMessageDescriptor *rd, void **resp,
		 int deadline_ms, char *err, size_t errlen)
{
	rpc_client *cli = coord_client();
	if (!cli) {
		snprintf(err, errlen, "cannot open a channel to the coordinator at '%s'", coord_addr);
		return AIDOS_E_INVALID;
	}
	int rc = rpc_call(cli, method, req, rd, (ProtobufCMessage **)resp, deadline_ms, err, errlen);
	if (rc == -ECONNREFUSED || rc == -ETIMEDOUT) {
		char tmp[600];
		snprintf(tmp, sizeof tmp, "via coordinator %s: %s", coord_addr, err);  /* the failure may be a node behind it */
		snprintf(err, errlen, "%s", tmp);
	}
	return rc;
}

static void pb_release(void *m)
{
	if (m)
		protobuf_c_message_free_unpacked(m, NULL);
}

/* ---- nodes / agents / top ---- */

static void fmt_age(char *b, size_t n, uint64_t last_ms, uint64_t now)
{
	if (!last_ms)
		snprintf(b, n, "never");
	else if (now <= last_ms)
		snprintf(b, n, "0.0s ago");
	else if (now - last_ms < 100000)
		snprintf(b, n, "%.1fs ago", (double)(now - last_ms) / 1000.0);
	else
		snprintf(b, n, "%" PRIu64 "s ago", (now - last_ms) / 1000);
}

static void fmt_devices(char *b, size_t n, const Aidos__NodeInfo *ni)
{
	size_t k = 0;
	b[0] = 0;
	for (size_t i = 0; i < ni->n_devices && k < n; i++) {
		const Aidos__Device *d = ni->devices[i];
		if (d->cores)
			k += (size_t)snprintf(b + k, n - k, "%s%s:%uc", i ? "," : "", d->kind, d->cores);
		else
			k += (size_t)snprintf(b + k, n - k, "%s%s:%s", i ? "," : "", d->kind, d->name);
	}
	if (!ni->n_devices)
		snprintf(b, n, "-");
}

static void print_nodes(FILE *f, const Aidos__ListNodesReply *r, int sched)
{
	table t = { 0 };
	uint64_t now = wall_ms();
	cell(&t, "NAME"), cell(&t, "STATE"), cell(&t, "RPC"), cell(&t, "DEVICES"), cell(&t, "MEM FREE/TOTAL");
	cell(&t, "QUEUE"), cell(&t, "AGENTS"), cell(&t, "HEARTBEAT");
	if (sched)
		cell(&t, "UTIL"), cell(&t, "LAT/EST"), cell(&t, "OVERLOAD");
	cell(&t, "TRANSPORT (REASON)");
	row_end(&t);
	for (size_t i = 0; i < r->n_nodes; i++) {
		const Aidos__NodeInfo *n = r->nodes[i];
		char dev[256], fr[32], tot[32], age[32];
		fmt_devices(dev, sizeof dev, n);
		fmt_bytes(fr, sizeof fr, n->mem_free);
		fmt_bytes(tot, sizeof tot, n->mem_total);
		fmt_age(age, sizeof age, n->last_heartbeat_ms, now);
		cell(&t, "%s", n->name), cell(&t, "%s", coord_node_state_name(n->state));
		cell(&t, "%s", n->rpc_addr), cell(&t, "%s", dev), cell(&t, "%s/%s", fr, tot);
		cell(&t, "%u", n->queue_len), cell(&t, "%u", n->n_agents), cell(&t, "%s", age);
		if (sched) {
			cell(&t, "%.2f", n->pred_util);
			if (n->lat_ratio > 0)
				cell(&t, "x%.2f", n->lat_ratio);
			else
				cell(&t, "-");
			cell(&t, "%u", n->overload_streak);
		}
		cell(&t, "%s (%s)", n->transport[0] ? n->transport : "none",
		     n->transport_reason[0] ? n->transport_reason : "no reason given");
		row_end(&t);
	}
	table_print(&t, f);
	table_free(&t);
}

static void print_agents(FILE *f, const Aidos__ListAgentsReply *r, int sched)
{
	table t = { 0 };
	cell(&t, "NAME"), cell(&t, "NODE"), cell(&t, "STATE"), cell(&t, "PRIO"), cell(&t, "DEVICE");
	cell(&t, "STATEFUL"), cell(&t, "CTX VER"), cell(&t, "MEM"), cell(&t, "REQUESTS"), cell(&t, "LATENCY");
	if (sched)
		cell(&t, "EST"), cell(&t, "RATE"), cell(&t, "MOVES");
	cell(&t, "PIN"), cell(&t, "MODEL");
	row_end(&t);
	for (size_t i = 0; i < r->n_agents; i++) {
		const Aidos__AgentInfo *a = r->agents[i];
		char mem[32];
		fmt_bytes(mem, sizeof mem, a->mem_bytes);
		cell(&t, "%s", a->name), cell(&t, "%s", a->node[0] ? a->node : "-");
		cell(&t, "%s", coord_agent_state_name(a->state_now)), cell(&t, "%d", a->priority);
		cell(&t, "%s", a->device[0] ? a->device : "cpu");
		if (a->stateful) {
			char pairs[256] = "";
			size_t k = 0;
			for (size_t j = 0; j < a->n_state && k < sizeof pairs; j++)
				k += (size_t)snprintf(pairs + k, sizeof pairs - k, "%s%s<-%s", j ? "," : "",
						      a->state[j]->input, a->state[j]->output);
			cell(&t, "yes%s%s", pairs[0] ? " " : "", pairs);
		} else {
			cell(&t, "no");
		}
		cell(&t, "%" PRIu64, a->context_version), cell(&t, "%s", mem);
		cell(&t, "%" PRIu64, a->requests), cell(&t, "%.2fms", a->latency_ms);
		if (sched)
			cell(&t, "%.2fms", a->est_ms), cell(&t, "%.1f/s", a->rate), cell(&t, "%u", a->moves);
		cell(&t, "%s", a->pinned_node[0] ? a->pinned_node : "-"), cell(&t, "%s", a->model_path);
		row_end(&t);
	}
	table_print(&t, f);
	table_free(&t);
}

static void json_node(FILE *f, const Aidos__NodeInfo *n, uint64_t now)
{
	fprintf(f, "{\"name\":");
	cli_json_str(f, n->name);
	fprintf(f, ",\"state\":\"%s\",\"rpc_addr\":", coord_node_state_name(n->state));
	cli_json_str(f, n->rpc_addr);
	fprintf(f, ",\"transport\":");
	cli_json_str(f, n->transport);
	fprintf(f, ",\"transport_reason\":");
	cli_json_str(f, n->transport_reason);
	fprintf(f, ",\"ucx_address_bytes\":%zu,\"devices\":[", n->ucx_address.len);
	for (size_t i = 0; i < n->n_devices; i++) {
		fprintf(f, "%s{\"kind\":", i ? "," : "");
		cli_json_str(f, n->devices[i]->kind);
		fprintf(f, ",\"name\":");
		cli_json_str(f, n->devices[i]->name);
		fprintf(f, ",\"mem_bytes\":%" PRIu64 ",\"cores\":%u}", n->devices[i]->mem_bytes, n->devices[i]->cores);
	}
	fprintf(f, "],\"mem_total\":%" PRIu64 ",\"mem_free\":%" PRIu64 ",\"queue_len\":%u,\"agents\":%u,"
		   "\"last_heartbeat_ms\":%" PRIu64 ",\"heartbeat_age_ms\":%" PRId64 ",\"boot_ms\":%.3f,"
		   "\"lease_ms\":%" PRIu64 ",\"heartbeat_ms\":%" PRIu64 ",\"pred_util\":%.4f,\"lat_ratio\":%.4f,"
		   "\"overload_streak\":%u,\"speed\":%.4f,\"workers\":%u}",
		n->mem_total, n->mem_free, n->queue_len, n->n_agents, n->last_heartbeat_ms,
		n->last_heartbeat_ms ? (int64_t)(now - n->last_heartbeat_ms) : -1, n->boot_ms, n->lease_ms,
		n->heartbeat_ms, n->pred_util, n->lat_ratio, n->overload_streak, n->speed, n->workers);
}

static void json_agent(FILE *f, const Aidos__AgentInfo *a)
{
	fprintf(f, "{\"name\":");
	cli_json_str(f, a->name);
	fprintf(f, ",\"node\":");
	cli_json_str(f, a->node);
	fprintf(f, ",\"state\":\"%s\",\"priority\":%d,\"device\":", coord_agent_state_name(a->state_now),
		a->priority);
	cli_json_str(f, a->device[0] ? a->device : "cpu");
	fprintf(f, ",\"stateful\":%s,\"state_pairs\":[", a->stateful ? "true" : "false");
	for (size_t j = 0; j < a->n_state; j++) {
		fprintf(f, "%s{\"input\":", j ? "," : "");
		cli_json_str(f, a->state[j]->input);
		fprintf(f, ",\"output\":");
		cli_json_str(f, a->state[j]->output);
		fputc('}', f);
	}
	fprintf(f, "],\"context_node\":");
	cli_json_str(f, a->context_node);
	fprintf(f, ",\"context_version\":%" PRIu64 ",\"mem_bytes\":%" PRIu64 ",\"requests\":%" PRIu64
		   ",\"latency_ms\":%.4f,\"pinned_node\":",
		a->context_version, a->mem_bytes, a->requests, a->latency_ms);
	cli_json_str(f, a->pinned_node);
	fprintf(f, ",\"model_path\":");
	cli_json_str(f, a->model_path);
	fprintf(f, ",\"rate\":%.4f,\"est_ms\":%.4f,\"moves\":%u,\"moved_ms\":%" PRIu64 ",\"reason\":", a->rate,
		a->est_ms, a->moves, a->moved_ms);
	cli_json_str(f, a->reason);
	fputc('}', f);
}

static void json_event(FILE *f, const Aidos__Event *e)
{
	fprintf(f, "{\"seq\":%" PRIu64 ",\"ms\":%" PRIu64 ",\"kind\":", e->seq, e->ms);
	cli_json_str(f, e->kind);
	fprintf(f, ",\"agent\":");
	cli_json_str(f, e->agent);
	fprintf(f, ",\"from\":");
	cli_json_str(f, e->from_node);
	fprintf(f, ",\"to\":");
	cli_json_str(f, e->to_node);
	fprintf(f, ",\"reason\":");
	cli_json_str(f, e->reason);
	fputc('}', f);
}

static void print_events(FILE *f, const Aidos__EventsReply *r, size_t last)
{
	fprintf(f, "scheduler events (rebalancing %s), newest last:\n", r->rebalance ? "on" : "off");
	if (!r->n_events)
		fprintf(f, "  (none)\n");
	for (size_t i = r->n_events > last ? r->n_events - last : 0; i < r->n_events; i++) {
		const Aidos__Event *e = r->events[i];
		time_t t = (time_t)(e->ms / 1000);
		struct tm tm;
		char ts[32];
		localtime_r(&t, &tm);
		strftime(ts, sizeof ts, "%H:%M:%S", &tm);
		fprintf(f, "  %s %-9s %s %s -> %s: %s\n", ts, e->kind, e->agent, e->from_node[0] ? e->from_node : "-",
			e->to_node[0] ? e->to_node : "-", e->reason);
	}
}

static int want_help(int argc, char **argv)
{
	for (int i = 0; i < argc; i++)
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
			return 1;
	return 0;
}

static int cmd_list(const char *cmd, int argc, char **argv)
{
	int json = 0, rc;
	char err[768];
	if (want_help(argc, argv)) {
		printf("usage: aidosctl %s [--json]\n\n", cmd);
		if (!strcmp(cmd, "nodes"))
			printf("Lists the cluster's nodes: name, state, rpc address, devices, free/total memory,\n"
			       "queue length, agents, age of the last heartbeat, and the transport carrying\n"
			       "tensors with the reason it was chosen. --json prints {\"nodes\": [...]}.\n");
		else
			printf("Lists the agents: name, node, state, priority, device, stateful pairs,\n"
			       "context version, memory, requests, latency, pin and model. --json prints\n"
			       "{\"agents\": [...]}.\n");
		return 0;
	}
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--json"))
			json = 1;
		else
			return usage_err(cmd, "unexpected argument '%s'", argv[i]);
	}
	if (!strcmp(cmd, "nodes")) {
		Aidos__ListNodesRequest req = AIDOS__LIST_NODES_REQUEST__INIT;
		Aidos__ListNodesReply *r = NULL;
		if ((rc = ccall("/aidos.Coordinator/ListNodes", &req, &aidos__list_nodes_reply__descriptor,
				(void **)&r, DEADLINE_LIST, err, sizeof err)))
			return die("nodes: %s", err);
		if (json) {
			uint64_t now = wall_ms();
			printf("{\"nodes\":[");
			for (size_t i = 0; i < r->n_nodes; i++) {
				if (i)
					putchar(',');
				json_node(stdout, r->nodes[i], now);
			}
			printf("]}\n");
		} else {
			print_nodes(stdout, r, 0);
		}
		pb_release(r);
	} else {
		Aidos__ListAgentsRequest req = AIDOS__LIST_AGENTS_REQUEST__INIT;
		Aidos__ListAgentsReply *r = NULL;
		if ((rc = ccall("/aidos.Coordinator/ListAgents", &req, &aidos__list_agents_reply__descriptor,
				(void **)&r, DEADLINE_LIST, err, sizeof err)))
			return die("agents: %s", err);
		if (json) {
			printf("{\"agents\":[");
			for (size_t i = 0; i < r->n_agents; i++) {
				if (i)
					putchar(',');
				json_agent(stdout, r->agents[i]);
			}
			printf("]}\n");
		} else {
			print_agents(stdout, r, 0);
		}
		pb_release(r);
	}
	return 0;
}

static volatile sig_atomic_t top_stop;
static void on_sigint(int sig)
{
	(void)sig;
	top_stop = 1;
}

static int parse_int(const char *s, long lo, long hi, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || *end || end == s || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

static int cmd_top(int argc, char **argv)
{
	int once = 0, json = 0;
	long interval = 1000;
	if (want_help(argc, argv)) {
		printf("usage: aidosctl top [--once] [--json] [--interval-ms N]\n\n"
		       "A live view of the scheduler's view of the cluster, refreshed every N ms\n"
		       "(default 1000) until Ctrl-C: nodes (queue, agents, predicted utilisation,\n"
		       "measured/estimated latency, overload streak of the rebalancer), agents\n"
		       "(latency, estimate, request rate, moves) and the latest scheduler events\n"
		       "(placements, overloads, rebalancing moves with their reasons). --once prints\n"
		       "one frame without screen control codes (for scripts) and exits. --json prints\n"
		       "one frame as {\"nodes\": [...], \"agents\": [...], \"events\": [...],\n"
		       "\"rebalance\": bool} and exits.\n");
		return 0;
	}
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--once")) {
			once = 1;
		} else if (!strcmp(argv[i], "--json")) {
			once = json = 1;
		} else if (!strcmp(argv[i], "--interval-ms")) {
			if (i + 1 >= argc)
				return usage_err("top", "%s needs a value", "--interval-ms");
			if (parse_int(argv[++i], 50, 3600000, &interval))
				return usage_err("top", "bad --interval-ms '%s' (50..3600000)", argv[i]);
		} else {
			return usage_err("top", "unexpected argument '%s'", argv[i]);
		}
	}
	if (!once) {
		struct sigaction sa = { 0 };
		sa.sa_handler = on_sigint;
		sigaction(SIGINT, &sa, NULL);
		sigaction(SIGTERM, &sa, NULL);
	}
	while (!top_stop) {
		Aidos__ListNodesRequest nreq = AIDOS__LIST_NODES_REQUEST__INIT;
		Aidos__ListAgentsRequest areq = AIDOS__LIST_AGENTS_REQUEST__INIT;
		Aidos__ListNodesReply *nr = NULL;
		Aidos__ListAgentsReply *ar = NULL;
		Aidos__EventsRequest ereq = AIDOS__EVENTS_REQUEST__INIT;
		Aidos__EventsReply *er = NULL;
		char err[768] = "", ts[32];
		char *frame = NULL;
		size_t flen = 0;
		time_t now = time(NULL);
		struct tm tm;
		FILE *f = open_memstream(&frame, &flen);
		if (!f)
			return die("top: out of memory");
		localtime_r(&now, &tm);
		strftime(ts, sizeof ts, "%H:%M:%S", &tm);
		int rc = ccall("/aidos.Coordinator/ListNodes", &nreq, &aidos__list_nodes_reply__descriptor,
			       (void **)&nr, DEADLINE_LIST, err, sizeof err);
		if (!rc)
			rc = ccall("/aidos.Coordinator/ListAgents", &areq, &aidos__list_agents_reply__descriptor,
				   (void **)&ar, DEADLINE_LIST, err, sizeof err);
		if (!rc)
			rc = ccall("/aidos.Coordinator/Events", &ereq, &aidos__events_reply__descriptor, (void **)&er,
				   DEADLINE_LIST, err, sizeof err);
		if (!rc && json) {
			uint64_t wnow = wall_ms();
			fprintf(f, "{\"nodes\":[");
			for (size_t i = 0; i < nr->n_nodes; i++) {
				if (i)
					fputc(',', f);
				json_node(f, nr->nodes[i], wnow);
			}
			fprintf(f, "],\"agents\":[");
			for (size_t i = 0; i < ar->n_agents; i++) {
				if (i)
					fputc(',', f);
				json_agent(f, ar->agents[i]);
			}
			fprintf(f, "],\"events\":[");
			for (size_t i = 0; i < er->n_events; i++) {
				if (i)
					fputc(',', f);
				json_event(f, er->events[i]);
			}
			fprintf(f, "],\"rebalance\":%s}\n", er->rebalance ? "true" : "false");
		} else if (rc) {
			fprintf(f, "aidos top - coordinator %s - %s\n\nerror: %s\n", coord_addr, ts, err);
		} else {
			int ready = 0, dead = 0, pending = 0;
			uint64_t reqs = 0;
			for (size_t i = 0; i < nr->n_nodes; i++) {
				ready += nr->nodes[i]->state == AIDOS__NODE_STATE__NODE_READY;
				dead += nr->nodes[i]->state == AIDOS__NODE_STATE__NODE_DEAD;
			}
			for (size_t i = 0; i < ar->n_agents; i++) {
				pending += ar->agents[i]->state_now == AIDOS__AGENT_STATE__AGENT_PENDING;
				reqs += ar->agents[i]->requests;
			}
			fprintf(f, "aidos top - coordinator %s - %s\n", coord_addr, ts);
			fprintf(f, "nodes: %zu (%d ready, %d dead)   agents: %zu (%d pending)   requests: %" PRIu64 "\n\n",
				nr->n_nodes, ready, dead, ar->n_agents, pending, reqs);
			print_nodes(f, nr, 1);
			fputc('\n', f);
			print_agents(f, ar, 1);
			fputc('\n', f);
			print_events(f, er, 10);
		}
		pb_release(nr);
		pb_release(ar);
		pb_release(er);
		fclose(f);
		if (once) {
			fwrite(frame, 1, flen, stdout);
			free(frame);
			return rc ? die("top: %s", err) : 0;
		}
		/* home, clear, frame: one write so the screen never shows half a frame */
		fputs("\033[H\033[2J", stdout);
		fwrite(frame, 1, flen, stdout);
		fflush(stdout);
		free(frame);
		for (long waited = 0; waited < interval && !top_stop; waited += 50)
			sleep_ms(interval - waited < 50 ? (int)(interval - waited) : 50);
	}
	return 0;
}

/* ---- explain ---- */

static int cmd_explain(int argc, char **argv)
{
	const char *name = NULL;
	int json = 0;
	char err[768];
	if (want_help(argc, argv)) {
		printf("usage: aidosctl explain NAME [--json]\n\n"
		       "Why agent NAME is where it is: its last placement or move reason, and the\n"
		       "placement policy's score for every node as if it were placed now (ms per\n"
		       "request, lower is better: latency on the device it would use there x queueing,\n"
		       "measured backlog, GPU-first penalty, context move, memory pressure, replica\n"
		       "spread; docs/scheduling.md), best first, with the constraint that rules out\n"
		       "each infeasible node. --json prints {\"agent\", \"best\", \"candidates\": [...]}.\n");
		return 0;
	}
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--json"))
			json = 1;
		else if (argv[i][0] == '-')
			return usage_err("explain", "unknown option '%s'", argv[i]);
		else if (!name)
			name = argv[i];
		else
			return usage_err("explain", "unexpected argument '%s'", argv[i]);
	}
	if (!name)
		return usage_err("explain", "%s", "agent name required");
	Aidos__ExplainRequest req = AIDOS__EXPLAIN_REQUEST__INIT;
	Aidos__ExplainReply *r = NULL;
	req.agent = (char *)name;
	if (ccall("/aidos.Coordinator/Explain", &req, &aidos__explain_reply__descriptor, (void **)&r, DEADLINE_LIST,
		  err, sizeof err))
		return die("explain: %s", err);
	if (json) {
		printf("{\"agent\":");
		json_agent(stdout, r->agent);
		printf(",\"best\":");
		cli_json_str(stdout, r->best);
		printf(",\"candidates\":[");
		for (size_t i = 0; i < r->n_candidates; i++) {
			const Aidos__Candidate *c = r->candidates[i];
			printf("%s{\"node\":", i ? "," : "");
			cli_json_str(stdout, c->node);
			printf(",\"feasible\":%s,\"why_not\":", c->feasible ? "true" : "false");
			cli_json_str(stdout, c->why_not);
			printf(",\"device\":");
			cli_json_str(stdout, c->device);
			printf(",\"total\":%.4f,\"latency\":%.4f,\"queue\":%.4f,\"gpu\":%.4f,\"move\":%.4f,"
			       "\"memory\":%.4f,\"spread\":%.4f}",
			       c->total, c->latency, c->queue, c->gpu, c->move, c->memory, c->spread);
		}
		printf("]}\n");
	} else {
		const Aidos__AgentInfo *a = r->agent;
		table t = { 0 };
		printf("agent %s on %s (priority %d, %s, est %.2f ms, %.1f req/s, %u moves)\n", a->name,
		       a->node[0] ? a->node : "-", a->priority, a->device[0] ? a->device : "cpu", a->est_ms, a->rate,
		       a->moves);
		printf("why there: %s\n", a->reason[0] ? a->reason : "(no reason recorded)");
		printf("the policy now prefers: %s\n\n", r->best);
		cell(&t, "NODE"), cell(&t, "SCORE ms"), cell(&t, "LATENCY"), cell(&t, "QUEUE"), cell(&t, "GPU");
		cell(&t, "MOVE"), cell(&t, "MEMORY"), cell(&t, "SPREAD"), cell(&t, "DEVICE"), cell(&t, "NOTE");
		row_end(&t);
		for (size_t i = 0; i < r->n_candidates; i++) {
			const Aidos__Candidate *c = r->candidates[i];
			cell(&t, "%s", c->node);
			if (c->feasible) {
				cell(&t, "%.3f", c->total), cell(&t, "%.3f", c->latency), cell(&t, "%.3f", c->queue);
				cell(&t, "%.1f", c->gpu), cell(&t, "%.3f", c->move), cell(&t, "%.3f", c->memory);
				cell(&t, "%.1f", c->spread), cell(&t, "%s", c->device);
				cell(&t, "%s", !strcmp(c->node, a->node) ? "current" : "");
			} else {
				for (int k = 0; k < 8; k++)
					cell(&t, "-");
				cell(&t, "ruled out: %s", c->why_not);
			}
			row_end(&t);
		}
		table_print(&t, stdout);
		table_free(&t);
	}
	pb_release(r);
	return 0;
}

/* ---- place / migrate / drain / kill ---- */

static int cmd_place(int argc, char **argv)
{
	Aidos__PlaceRequest req = AIDOS__PLACE_REQUEST__INIT;
	Aidos__AgentInfo ai = AIDOS__AGENT_INFO__INIT;
	Aidos__StatePair pairs[MAX_PAIRS], *pp[MAX_PAIRS];
	char *pair_buf[MAX_PAIRS];
	const char *name = NULL, *model = NULL, *node = NULL, *device = "cpu";
	char path[PATH_MAX], err[768];
	long prio = 1;
	int stateful = 0, np = 0, rc;
	struct stat st;

	if (want_help(argc, argv)) {
		printf("usage: aidosctl place NAME MODEL.onnx [--node N] [--priority P] [--device cpu|cuda]\n"
		       "                      [--stateful] [--state IN=OUT]...\n\n"
		       "Places agent NAME running MODEL.onnx on the least loaded node that fits it, or\n"
		       "on node N with --node (a pin: it stays there and is only placed there again).\n"
		       "The model path is made absolute; nodes must be able to read it. Memory is\n"
		       "estimated as file size * 2 + 64 MiB (weights, arena, state).\n"
		       "  --priority P     0..1000 (default 1)\n"
		       "  --stateful       carry state between requests: each input x is paired with an\n"
		       "                   output named xN, xn or x_out of the same type and shape\n"
		       "  --state IN=OUT   name a pair explicitly (repeatable; implies --stateful)\n");
		return 0;
	}
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--node") || !strcmp(a, "--priority") || !strcmp(a, "--state") ||
		    !strcmp(a, "--device")) {
			if (i + 1 >= argc)
				return usage_err("place", "%s needs a value", a);
			const char *v = argv[++i];
			if (!strcmp(a, "--node")) {
				node = v;
			} else if (!strcmp(a, "--device")) {
				if (strcmp(v, "cpu") && strcmp(v, "cuda"))
					return usage_err("place", "bad --device '%s' (cpu or cuda)", v);
				device = v;
			} else if (!strcmp(a, "--priority")) {
				if (parse_int(v, 0, 1000, &prio))
					return usage_err("place", "bad --priority '%s' (0..1000)", v);
			} else {
				const char *eq = strchr(v, '=');
				if (!eq || eq == v || !eq[1])
					return usage_err("place", "bad --state '%s' (want IN=OUT)", v);
				if (np == MAX_PAIRS)
					return usage_err("place", "too many --state pairs (max %s)", "64");
				pair_buf[np] = pool_strndup(v, strlen(v));
				if (!pair_buf[np])
					return die("out of memory");
				pair_buf[np][eq - v] = 0;
				aidos__state_pair__init(&pairs[np]);
				pairs[np].input = pair_buf[np];
				pairs[np].output = pair_buf[np] + (eq - v) + 1;
				pp[np] = &pairs[np];
				np++;
			}
		} else if (!strcmp(a, "--stateful")) {
			stateful = 1;
		} else if (a[0] == '-' && a[1]) {
			return usage_err("place", "unknown option '%s'", a);
		} else if (!name) {
			name = a;
		} else if (!model) {
			model = a;
		} else {
			return usage_err("place", "unexpected argument '%s'", a);
		}
	}
	if (!name || !model)
		return usage_err("place", "%s", "NAME and MODEL.onnx are required");
	if (!coord_name_valid(name))
		return die("place: invalid agent name '%s' (1-63 of [A-Za-z0-9._-], not starting with '.' or '-')", name);
	if (node && !coord_name_valid(node))
		return die("place: invalid node name '%s'", node);
	if (!realpath(model, path))
		return die("place: model %s: %s", model, strerror(errno));
	if (stat(path, &st) || !S_ISREG(st.st_mode))
		return die("place: model %s is not a regular file", path);
	if (access(path, R_OK))
		return die("place: model %s: %s", path, strerror(errno));

	ai.name = (char *)name;
	ai.model_path = path;
	ai.priority = (int32_t)prio;
	ai.stateful = stateful || np > 0;
	ai.n_state = (size_t)np;
	ai.state = pp;
	ai.pinned_node = (char *)(node ? node : "");
	ai.device = (char *)device;
	ai.mem_bytes = (uint64_t)st.st_size * 2 + (64ull << 20);
	req.agent = &ai;

	Aidos__PlaceReply *r = NULL;
	rc = ccall("/aidos.Coordinator/Place", &req, &aidos__place_reply__descriptor, (void **)&r, DEADLINE_PLACE,
		   err, sizeof err);
	for (int i = 0; i < np; i++)
		pool_free(pair_buf[i]);
	if (rc)
		return die("place %s: %s", name, err);
	char mem[32];
	fmt_bytes(mem, sizeof mem, r->agent->mem_bytes);
	printf("placed %s on %s (%s, mem %s, %s)\n", r->agent->name, r->agent->node,
	       coord_agent_state_name(r->agent->state_now), mem, r->agent->stateful ? "stateful" : "stateless");
	printf("reason: %s\n", r->reason);
	pb_release(r);
	return 0;
}

static int cmd_migrate(int argc, char **argv)
{
	const char *name = NULL, *to = NULL;
	char err[768], from[80] = "?";
	if (want_help(argc, argv)) {
		printf("usage: aidosctl migrate NAME --to N\n\n"
		       "Moves agent NAME to node N. A stateful agent's context is pulled by N from its\n"
		       "current node over the transport (one-sided get of the registered region); on\n"
		       "any failure it stays where it was. Prints the migration time and context bytes.\n");
		return 0;
	}
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--to")) {
			if (i + 1 >= argc)
				return usage_err("migrate", "%s needs a value", "--to");
			to = argv[++i];
		} else if (argv[i][0] == '-' && argv[i][1]) {
			return usage_err("migrate", "unknown option '%s'", argv[i]);
		} else if (!name) {
			name = argv[i];
		} else {
			return usage_err("migrate", "unexpected argument '%s'", argv[i]);
		}
	}
	if (!name || !to)
		return usage_err("migrate", "%s", "NAME and --to N are required");
	{
		Aidos__ResolveRequest rq = AIDOS__RESOLVE_REQUEST__INIT;
		Aidos__ResolveReply *rr = NULL;
		rq.agent = (char *)name;
		if (!ccall("/aidos.Coordinator/Resolve", &rq, &aidos__resolve_reply__descriptor, (void **)&rr,
			   DEADLINE_LIST, err, sizeof err)) {
			if (rr->agent)
				snprintf(from, sizeof from, "%s", rr->agent->node);
			pb_release(rr);
		}
	}
	Aidos__MigrateRequest req = AIDOS__MIGRATE_REQUEST__INIT;
	Aidos__MigrateReply *r = NULL;
	req.agent = (char *)name;
	req.to_node = (char *)to;
	double t0 = mono_ms();
	if (ccall("/aidos.Coordinator/Migrate", &req, &aidos__migrate_reply__descriptor, (void **)&r,
		  DEADLINE_MIGRATE, err, sizeof err))
		return die("migrate %s: %s", name, err);
	printf("migrated %s %s -> %s in %.2f ms (context %" PRIu64 " bytes, version %" PRIu64 "; %.2f ms seen by aidosctl)\n",
	       name, from, r->agent->node, r->ms, r->context_bytes, r->agent->context_version, mono_ms() - t0);
	pb_release(r);
	return 0;
}

static int cmd_drain(int argc, char **argv)
{
	char err[1024];
	if (want_help(argc, argv)) {
		printf("usage: aidosctl drain N\n\n"
		       "Marks node N DRAINING (no new agents) and migrates each of its agents to the\n"
		       "least loaded other node that fits. The node comes back READY when it registers\n"
		       "again (after a restart).\n");
		return 0;
	}
	if (argc != 1 || argv[0][0] == '-')
		return usage_err("drain", "%s", argc ? "expected exactly one node name" : "node name required");
	Aidos__DrainRequest req = AIDOS__DRAIN_REQUEST__INIT;
	Aidos__DrainReply *r = NULL;
	req.node = argv[0];
	if (ccall("/aidos.Coordinator/Drain", &req, &aidos__drain_reply__descriptor, (void **)&r, DEADLINE_DRAIN,
		  err, sizeof err))
		return die("drain %s: %s", argv[0], err);
	printf("drained %s: %zu agent%s moved\n", argv[0], r->n_moved, r->n_moved == 1 ? "" : "s");
	for (size_t i = 0; i < r->n_moved; i++)
		printf("  %s -> %s\n", r->moved[i]->name, r->moved[i]->node);
	pb_release(r);
	return 0;
}

static int cmd_kill(int argc, char **argv)
{
	char err[768];
	if (want_help(argc, argv)) {
		printf("usage: aidosctl kill NAME\n\n"
		       "Stops agent NAME on its node and removes it from the cluster.\n");
		return 0;
	}
	if (argc != 1 || argv[0][0] == '-')
		return usage_err("kill", "%s", argc ? "expected exactly one agent name" : "agent name required");
	Aidos__KillRequest req = AIDOS__KILL_REQUEST__INIT;
	Aidos__KillReply *r = NULL;
	req.agent = argv[0];
	if (ccall("/aidos.Coordinator/Kill", &req, &aidos__kill_reply__descriptor, (void **)&r, DEADLINE_LIST * 3,
		  err, sizeof err))
		return die("kill %s: %s", argv[0], err);
	pb_release(r);
	printf("killed %s\n", argv[0]);
	return 0;
}

/* ---- infer ---- */

typedef struct infer_in {
	char *key;                /* input name (owned) */
	const char *file;
	aidos_tensor t;
	void *owned;
	Aidos__Tensor pb;
} infer_in;

/* The output file name: '/' (and anything else a path cannot hold) -> '_'. */
static void out_path(char *b, size_t n, const char *dir, const char *name)
{
	char safe[256];
	size_t k = 0;
	for (const char *p = name; *p && k + 1 < sizeof safe; p++)
		safe[k++] = (*p == '/' || *p == '\\') ? '_' : *p;
	safe[k] = 0;
	if (!k || !strcmp(safe, ".") || !strcmp(safe, ".."))
		snprintf(safe, sizeof safe, "output");
	snprintf(b, n, "%s/%s.npy", dir, safe);
}

static void fmt_shape(char *b, size_t n, const aidos_tensor *t)
{
	size_t k = (size_t)snprintf(b, n, "[");
	for (int i = 0; i < t->rank && k < n; i++)
		k += (size_t)snprintf(b + k, n - k, "%s%" PRId64, i ? ", " : "", t->dims[i]);
	if (k < n)
		snprintf(b + k, n - k, "]");
}

/* Is this Resolve failure worth retrying (agent moving or being placed
 * again), rather than final (no such agent, bad name)? */
static int resolve_retryable(int rc, const char *err)
{
	if (rc == -ECONNREFUSED || rc == -ETIMEDOUT)
		return 1;
	return rc == AIDOS_E_NOTFOUND && !strstr(err, "' not found");
}

static int cmd_infer(int argc, char **argv)
{
	infer_in in[MAX_INPUTS];
	int nin = 0, json = 0, rc = 1;
	long timeout = 30000;
	const char *name = NULL, *outdir = NULL;
	char err[1024];
	xport *x = NULL;
	uint8_t *sendbuf = NULL, *recvbuf = NULL;
	Aidos__TransportReply *rep = NULL;
	Aidos__ResolveReply *rr = NULL;

	if (want_help(argc, argv)) {
		printf("usage: aidosctl infer NAME --input K=F.npy ... --output-dir DIR [--json] [--timeout-ms N]\n\n"
		       "Runs one request on agent NAME over the data plane: resolves the agent with the\n"
		       "coordinator, connects a UCX endpoint to its node's worker and sends one tag\n"
		       "message; the reply comes back the same way. If the agent moved or its node died,\n"
		       "it resolves again and retries (up to %d times, over ~1.75 node leases). Each\n"
		       "output is written to DIR/<output name, '/' -> '_'>.npy. Prints each output's\n"
		       "shape, the end-to-end latency (resolve + transport setup + request, which\n"
		       "includes the node's execution) and the transport used.\n"
		       "  --input K=F.npy  input K from numpy file F (repeatable; a stateful agent's\n"
		       "                   state inputs are fed by the node)\n"
		       "  --timeout-ms N   wait at most N ms for the reply (default 30000)\n"
		       "  --json           print {\"outputs\": {...}, \"node\": ..., \"transport\": ...,\n"
		       "                   \"latency_ms\": x}\n",
		       INFER_RETRIES);
		return 0;
	}
	memset(in, 0, sizeof in);
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--input") || !strcmp(a, "--output-dir") || !strcmp(a, "--timeout-ms")) {
			if (i + 1 >= argc) {
				rc = usage_err("infer", "%s needs a value", a);
				goto out;
			}
			const char *v = argv[++i];
			if (!strcmp(a, "--output-dir")) {
				outdir = v;
			} else if (!strcmp(a, "--timeout-ms")) {
				if (parse_int(v, 1, 3600000, &timeout)) {
					rc = usage_err("infer", "bad --timeout-ms '%s' (1..3600000)", v);
					goto out;
				}
			} else {
				const char *eq = strchr(v, '=');
				if (!eq || eq == v || !eq[1]) {
					rc = usage_err("infer", "bad --input '%s' (want NAME=FILE.npy)", v);
					goto out;
				}
				if (nin == MAX_INPUTS) {
					rc = usage_err("infer", "too many inputs (max %s)", "64");
					goto out;
				}
				in[nin].key = pool_strndup(v, (size_t)(eq - v));
				in[nin].file = eq + 1;
				if (!in[nin].key) {
					rc = die("out of memory");
					goto out;
				}
				nin++;
			}
		} else if (!strcmp(a, "--json")) {
			json = 1;
		} else if (a[0] == '-' && a[1]) {
			rc = usage_err("infer", "unknown option '%s'", a);
			goto out;
		} else if (!name) {
			name = a;
		} else {
			rc = usage_err("infer", "unexpected argument '%s'", a);
			goto out;
		}
	}
	if (!name || !outdir) {
		rc = usage_err("infer", "%s", "NAME and --output-dir DIR are required");
		goto out;
	}
	for (int i = 0; i < nin; i++)
		for (int j = 0; j < i; j++)
			if (!strcmp(in[i].key, in[j].key)) {
				rc = die("infer: input '%s' given twice", in[i].key);
				goto out;
			}
	for (int i = 0; i < nin; i++) {
		char e[512];
		if (aidos_npy_load(in[i].file, &in[i].t, &in[i].owned, e, sizeof e)) {
			rc = die("infer: input %s: %s", in[i].key, e);
			goto out;
		}
		in[i].t.name = in[i].key;
		aidos__tensor__init(&in[i].pb);
		if (aidos_wire_tensor_to_pb(&in[i].t, &in[i].pb, e, sizeof e)) {
			rc = die("infer: input %s (%s): %s", in[i].key, in[i].file, e);
			goto out;
		}
	}
	if (mkdir(outdir, 0755) && errno != EEXIST) {
		rc = die("infer: cannot create output dir %s: %s", outdir, strerror(errno));
		goto out;
	}

	uint64_t cid = aidos_wire_client_id();
	const void *myaddr = NULL;
	size_t myaddr_len = 0;
	const char *xname = "?", *lanes = "?";
	char node[80] = "?";
	double exec_ms = 0, t0 = 0, t_end = 0, t_send = 0;
	double resolve_ms = 0, setup_ms = 0;   /* of the successful attempt / all attempts */
	int attempt;
	Aidos__TransportReply *final = NULL;

	/* Retries wait lease/4, lease/2, lease (1.75 leases in all): a node
	 * that died is declared dead after one lease and its agents are
	 * placed again within milliseconds, so the last retry finds them. */
	uint64_t lease = 1000;
	for (attempt = 0; attempt <= INFER_RETRIES; attempt++) {
		if (attempt)
			sleep_ms((int)((lease << (attempt - 1)) / 4));
		if (!t0)
			t0 = mono_ms();
		pb_release(rr);
		rr = NULL;
		Aidos__ResolveRequest rq = AIDOS__RESOLVE_REQUEST__INIT;
		rq.agent = (char *)name;
		double tr = mono_ms();
		int r = ccall("/aidos.Coordinator/Resolve", &rq, &aidos__resolve_reply__descriptor, (void **)&rr,
			      DEADLINE_LIST, err, sizeof err);
		resolve_ms = mono_ms() - tr;
		if (r) {
			if (resolve_retryable(r, err) && attempt < INFER_RETRIES)
				continue;
			rc = die("infer %s: %s", name, err);
			goto out;
		}
		if (!rr->node || !rr->agent) {
			rc = die("infer %s: the coordinator's Resolve reply names no node", name);
			goto out;
		}
		snprintf(node, sizeof node, "%s", rr->node->name);
		if (rr->node->lease_ms >= 100 && rr->node->lease_ms <= 60000)
			lease = rr->node->lease_ms;
		if (!rr->node->ucx_address.len) {
			rc = die("infer %s: node %s publishes no transport address (transport: %s, %s)", name, node,
				 rr->node->transport[0] ? rr->node->transport : "none", rr->node->transport_reason);
			goto out;
		}
		double ts = mono_ms();
		if (!x) {
			/* Match a node that runs UCX over TCP (the local cluster
			 * forces it) unless the environment chooses. */
			xport_opts xo = { 0 };
			if (!getenv("UCX_TLS") && !strcmp(rr->node->transport, "ucx:tcp"))
				xo.tls = "tcp";
			/* UCX logs to stdout (UCX 1.13's default), which would
			 * corrupt --json, and a refused connect to a node that
			 * just died is expected and retried: keep UCX quiet
			 * unless UCX_LOG_LEVEL asks otherwise. The environment
			 * is read when libucs loads, so set the live option. */
			if (!getenv("UCX_LOG_LEVEL"))
				ucs_global_opts_set_value("LOG_LEVEL", "fatal");
			/* A node on raw verbs is reached over verbs (AIDOS_RDMA_DEV etc.). */
			const char *kind = !strncmp(rr->node->transport, "verbs:", 6) ? "verbs" : "ucx";
			if ((r = xport_open(kind, &xo, &x, err, sizeof err))) {
				rc = die("infer: cannot start the transport: %s", err);
				goto out;
			}
			xport_address(x, &myaddr, &myaddr_len);
			if (!(recvbuf = pool_malloc(AIDOS_WIRE_MAX_MSG))) {
				rc = die("infer: out of memory");
				goto out;
			}
		}
		xport_ep *ep = NULL;
		if ((r = xport_connect(x, rr->node->ucx_address.data, rr->node->ucx_address.len, &ep))) {
			if (attempt < INFER_RETRIES)
				continue;
			rc = die("infer %s: cannot connect to node %s: %s", name, node, aidos_strerror(r));
			goto out;
		}
		setup_ms += mono_ms() - ts;

		/* One TransportRequest: our address to reply to, the inputs. */
		Aidos__TransportHello hello = AIDOS__TRANSPORT_HELLO__INIT;
		Aidos__InferRequest ireq = AIDOS__INFER_REQUEST__INIT;
		Aidos__TransportRequest treq = AIDOS__TRANSPORT_REQUEST__INIT;
		Aidos__Tensor *pins[MAX_INPUTS];
		uint64_t rid = (cid << 8) | (uint64_t)attempt;
		for (int i = 0; i < nin; i++)
			pins[i] = &in[i].pb;
		hello.ucx_address.data = (uint8_t *)myaddr;
		hello.ucx_address.len = myaddr_len;
		hello.client_id = cid;
		ireq.agent = (char *)name;
		ireq.n_inputs = (size_t)nin;
		ireq.inputs = pins;
		ireq.request_id = rid;
		treq.from = &hello;
		treq.req = &ireq;
		size_t n = protobuf_c_message_get_packed_size(&treq.base);
		if (n > AIDOS_WIRE_MAX_MSG) {
			rc = die("infer %s: request of %zu bytes exceeds the %u-byte limit", name, n, AIDOS_WIRE_MAX_MSG);
			goto out;
		}
		pool_free(sendbuf);
		if (!(sendbuf = pool_malloc(n ? n : 1))) {
			rc = die("infer: out of memory");
			goto out;
		}
		protobuf_c_message_pack(&treq.base, sendbuf);
		double left = (double)timeout - (mono_ms() - t0);
		t_send = mono_ms();
		if ((r = xport_tag_send(x, ep, aidos_wire_req_tag(cid), sendbuf, n, left > 1 ? (int)left : 1))) {
			if (attempt < INFER_RETRIES && r != -ETIMEDOUT) {
				xport_disconnect(x, ep);
				continue;
			}
			rc = die("infer %s: sending to node %s failed: %s", name, node, aidos_strerror(r));
			goto out;
		}
		/* Wait for our reply; drop stale ones (an earlier attempt's). */
		for (;;) {
			size_t got = 0;
			uint64_t tag = 0;
			left = (double)timeout - (mono_ms() - t0);
			if (left < 1) {
				rc = die("infer %s: no reply from node %s within %ld ms", name, node, timeout);
				goto out;
			}
			r = xport_tag_recv(x, aidos_wire_reply_tag(cid), ~0ull, recvbuf, AIDOS_WIRE_MAX_MSG, &got, &tag,
					   (int)left);
			if (r == -ETIMEDOUT) {
				rc = die("infer %s: no reply from node %s within %ld ms", name, node, timeout);
				goto out;
			}
			if (r) {
				rc = die("infer %s: receiving the reply failed: %s (%zu bytes)", name, aidos_strerror(r), got);
				goto out;
			}
			rep = aidos__transport_reply__unpack(NULL, got, recvbuf);
			if (!rep) {
				rc = die("infer %s: node %s sent a malformed reply (%zu bytes)", name, node, got);
				goto out;
			}
			if (rep->request_id == rid)
				break;
			pb_release(rep);
			rep = NULL;
		}
		t_end = mono_ms();
		xname = "?";
		xport_describe(x, &xname, NULL);
		lanes = xport_ep_describe(ep);
		int moved = rep->status == AIDOS_E_NOTFOUND || (rep->reply && rep->reply->redirect_node[0]);
		if (moved && attempt < INFER_RETRIES) {
			pb_release(rep);
			rep = NULL;
			continue;
		}
		if (rep->status) {
			rc = die("infer %s: node %s: %s (%s)", name, node, rep->error[0] ? rep->error : "failed",
				 aidos_strerror(rep->status));
			goto out;
		}
		if (moved || !rep->reply) {
			rc = die("infer %s: node %s answered %s", name, node,
				 moved ? "that the agent moved, too many times" : "no result");
			goto out;
		}
		final = rep;
		break;
	}
	if (!final) {
		rc = die("infer %s: %s", name, err);
		goto out;
	}
	exec_ms = final->reply->exec_ms;

	/* Validate and write every output before printing anything. */
	char (*paths)[PATH_MAX] = pool_calloc(final->reply->n_outputs + 1, sizeof *paths);
	aidos_tensor *outs = pool_calloc(final->reply->n_outputs + 1, sizeof *outs);
	if (!paths || !outs) {
		pool_free(paths);
		pool_free(outs);
		rc = die("infer: out of memory");
		goto out;
	}
	for (size_t i = 0; i < final->reply->n_outputs; i++) {
		char e[512];
		int r;
		if ((r = aidos_wire_tensor_from_pb(final->reply->outputs[i], &outs[i], e, sizeof e))) {
			rc = die("infer %s: node %s sent a bad output: %s", name, node, e);
			goto out_free;
		}
		out_path(paths[i], sizeof paths[i], outdir, final->reply->outputs[i]->name);
		if ((r = aidos_npy_save(paths[i], &outs[i]))) {
			rc = die("infer %s: cannot write %s: %s", name, paths[i], aidos_strerror(r));
			goto out_free;
		}
	}
	double latency = t_end - t0;
	if (json) {
		printf("{\"outputs\":{");
		for (size_t i = 0; i < final->reply->n_outputs; i++) {
			if (i)
				putchar(',');
			cli_json_str(stdout, final->reply->outputs[i]->name);
			printf(":{\"dtype\":\"%s\",\"shape\":[", dtype_name(outs[i].dtype));
			for (int k = 0; k < outs[i].rank; k++)
				printf("%s%" PRId64, k ? "," : "", outs[i].dims[k]);
			printf("],\"file\":");
			cli_json_str(stdout, paths[i]);
			putchar('}');
		}
		printf("},\"node\":");
		cli_json_str(stdout, node);
		printf(",\"transport\":");
		cli_json_str(stdout, xname);
		printf(",\"lanes\":");
		cli_json_str(stdout, lanes);
		printf(",\"latency_ms\":%.3f,\"resolve_ms\":%.3f,\"setup_ms\":%.3f,\"request_ms\":%.3f,"
		       "\"exec_ms\":%.3f,\"attempts\":%d}\n",
		       latency, resolve_ms, setup_ms, t_end - t_send, exec_ms, attempt + 1);
	} else {
		for (size_t i = 0; i < final->reply->n_outputs; i++) {
			char shape[256];
			fmt_shape(shape, sizeof shape, &outs[i]);
			printf("output %s: %s %s -> %s\n", final->reply->outputs[i]->name, dtype_name(outs[i].dtype),
			       shape, paths[i]);
		}
		printf("agent %s on node %s: latency %.3f ms end to end (resolve %.3f, transport setup %.3f, "
		       "request %.3f incl. exec %.3f), transport %s (%s)%s\n",
		       name, node, latency, resolve_ms, setup_ms, t_end - t_send, exec_ms, xname, lanes,
		       attempt ? ", after resolving again" : "");
	}
	rc = 0;
out_free:
	pool_free(paths);
	pool_free(outs);
out:
	pb_release(rep);
	pb_release(rr);
	if (x)
		xport_destroy(x);
	pool_free(sendbuf);
	pool_free(recvbuf);
	for (int i = 0; i < nin; i++) {
		pool_free(in[i].key);
		aidos_npy_free(in[i].owned);
	}
	return rc;
}

/* ---- main ---- */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: aidosctl [--coord ADDR] <command> [options]\n"
		"\n"
		"The operator CLI of an aidos cluster. The coordinator is --coord ADDR (host:port)\n"
		"or $AIDOS_COORD.\n"
		"\n"
		"commands:\n"
		"  nodes [--json]                              nodes, state, transport, load, heartbeat age\n"
		"  agents [--json]                             agents, where they run, state, latency\n"
		"  place NAME MODEL.onnx [--node N] [--priority P] [--stateful] [--state IN=OUT]...\n"
		"                                              place an agent\n"
		"  migrate NAME --to N                         move an agent (and its context) to node N\n"
		"  drain N                                     move every agent off node N\n"
		"  kill NAME                                   stop an agent\n"
		"  infer NAME --input K=F.npy ... --output-dir DIR [--json] [--timeout-ms N]\n"
		"                                              run one request over the data plane\n"
		"  top [--once] [--json] [--interval-ms N]     live scheduler view: nodes, agents, events\n"
		"  explain NAME [--json]                       why an agent is where it is (scores)\n"
		"\n"
		"'aidosctl <command> --help' describes each. Errors are one line on stderr; exit\n"
		"status 0 on success, 1 on a failure, 2 on a usage error.\n");
}

int main(int argc, char **argv)
{
	char *args[256];
	int n = 0, rc;
	const char *cmd = NULL;

	signal(SIGPIPE, SIG_IGN);
	coord_addr = getenv("AIDOS_COORD");
	/* --coord may come anywhere; the first other word is the command. */
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--coord")) {
			if (i + 1 >= argc)
				return usage_err(NULL, "%s needs a value", "--coord");
			coord_addr = argv[++i];
		} else if (!strncmp(argv[i], "--coord=", 8)) {
			coord_addr = argv[i] + 8;
		} else if (!cmd && (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))) {
			usage(stdout);
			return 0;
		} else if (!cmd && !strcmp(argv[i], "--version")) {
			printf("aidosctl %s\n", AIDOS_VERSION);
			return 0;
		} else if (!cmd && argv[i][0] == '-') {
			return usage_err(NULL, "unknown option '%s'", argv[i]);
		} else if (!cmd) {
			cmd = argv[i];
		} else if (n < (int)(sizeof args / sizeof args[0])) {
			args[n++] = argv[i];
		} else {
			return usage_err(cmd, "%s", "too many arguments");
		}
	}
	if (!cmd) {
		usage(stderr);
		return 2;
	}
	static const char *const cmds[] = { "nodes", "agents", "place", "migrate", "drain", "kill", "infer", "top",
					    "explain" };
	int known = 0;
	for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
		known |= !strcmp(cmd, cmds[i]);
	if (!known)
		return usage_err(NULL, "unknown command '%s'", cmd);
	if (!want_help(n, args) && (!coord_addr || !*coord_addr)) {
		fprintf(stderr, "aidosctl: %s: no coordinator: pass --coord ADDR or set AIDOS_COORD\n", cmd);
		return 2;
	}
	if (!strcmp(cmd, "nodes") || !strcmp(cmd, "agents"))
		rc = cmd_list(cmd, n, args);
	else if (!strcmp(cmd, "place"))
		rc = cmd_place(n, args);
	else if (!strcmp(cmd, "migrate"))
		rc = cmd_migrate(n, args);
	else if (!strcmp(cmd, "drain"))
		rc = cmd_drain(n, args);
	else if (!strcmp(cmd, "kill"))
		rc = cmd_kill(n, args);
	else if (!strcmp(cmd, "infer"))
		rc = cmd_infer(n, args);
	else if (!strcmp(cmd, "explain"))
		rc = cmd_explain(n, args);
	else
		rc = cmd_top(n, args);
	if (coord_cli)
		rpc_client_destroy(coord_cli);
	fflush(stdout);
	return rc;
}
