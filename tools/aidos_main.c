/*
 * tools/aidos_main.c - `aidos`, the user CLI: run a model on .npy tensors,
 * describe a model.
 *
 *   aidos run MODEL.onnx --input NAME=FILE.npy ... [--output-dir DIR]
 *             [--threads N] [--repeat N] [--warmup N] [--reference] [--json]
 *   aidos info MODEL.onnx [--json]
 * and, talking to the local node through its socket (include/aidos/client.h):
 *   aidos spawn --name N [--priority P] [--quota BYTES] [--deadline-ms D] MODEL.onnx
 *   aidos infer N --input K=F.npy ... [--output-dir DIR] [--json]
 *   aidos ps [--json] | kill N | stats [--json] | ping [--count N] [--json]
 *   (each takes --socket PATH; default $AIDOS_SOCKET, then the node's default)
 *
 * Every error exits non-zero with one line naming the file, node or tensor.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include "aidos/aidos.h"
#include "aidos/client.h"
#include "aidos/npy.h"
#include "hal/gemm.h"
#include "hal/hal.h"
#include "hal/model.h"
#include "tools/cli.h"

#define MAX_IN 64

static void usage(FILE *f)
{
	fprintf(f,
		"usage: aidos <command> [options]\n"
		"\n"
		"commands:\n"
		"  run MODEL.onnx --input NAME=FILE.npy ...   run a model on .npy tensors\n"
		"      --output-dir DIR   write each output to DIR/<output name, '/' -> '_'>.npy (default .)\n"
		"      --threads N        threads for the executor (default 1)\n"
		"      --repeat N         run N timed iterations after warm-up and report latency\n"
		"      --warmup N         warm-up iterations before timing (default 3 with --repeat)\n"
		"      --reference        use the scalar reference kernels only\n"
		"      --json             print one JSON object instead of text\n"
		"  info MODEL.onnx [--json]                   IR/opset versions, inputs, outputs, operators, weights\n"
		"  version                                    print the version\n"
		"\n"
		"node commands (a running aidos-node, through its local socket; 'aidos CMD --help'):\n"
		"  spawn --name N [--priority P] [--quota BYTES] [--deadline-ms D] MODEL.onnx\n"
		"                                             start an agent on the node\n"
		"  infer N --input K=F.npy ... [--output-dir DIR] [--json]\n"
		"                                             run agent N; outputs to DIR/<output name>.npy\n"
		"  ps [--json]                                list the node's agents\n"
		"  kill N                                     remove agent N\n"
		"  stats [--json]                             node counters\n"
		"  ping [--count N] [--json]                  null requests through the shared-memory rings\n"
		"  every node command takes --socket PATH (default: $AIDOS_SOCKET, else\n"
		"  $XDG_RUNTIME_DIR/aidos/node.sock, else /run/aidos/node.sock as root)\n"
		"\n"
		"Exit status: 0 on success, 1 on a model or data error, 2 on a usage error.\n");
}

static int die_usage(const char *fmt, const char *arg)
{
	fprintf(stderr, "aidos: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n(see 'aidos --help')\n");
	return 2;
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || *end || end == s || v < lo || v > hi)
		return -1;
	*out = (int)v;
	return 0;
}

static void print_dims(FILE *f, int rank, const int64_t *dims, const char *const *params)
{
	fputc('[', f);
	for (int i = 0; i < rank; i++) {
		if (i)
			fputs(f == stdout ? ", " : ",", f);
		if (dims[i] >= 0)
			fprintf(f, "%lld", (long long)dims[i]);
		else if (params && params[i])
			fprintf(f, "\"%s\"", params[i]);
		else
			fputs("\"?\"", f);
	}
	fputc(']', f);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct(const double *v, int n, double p)
{
	double r = p * (n - 1);
	int i = (int)r;
	if (i + 1 >= n)
		return v[n - 1];
	return v[i] + (r - i) * (v[i + 1] - v[i]);
}

/* Output file name: the output's name with '/' replaced by '_'. */
static void out_path(char *buf, size_t n, const char *dir, const char *name)
{
	size_t k = (size_t)snprintf(buf, n, "%s/", dir);
	for (const char *p = name; *p && k + 5 < n; p++)
		buf[k++] = *p == '/' ? '_' : *p;
	snprintf(buf + k, n - k, ".npy");
}

/* One --input argument, NAME=FILE.npy (split in place at '='), appended to
 * in_name/in_file. Returns 0, or 2 after a usage message. */
static int parse_input(char *arg, const char **in_name, const char **in_file, int *n_in)
{
	char *eq = strchr(arg, '=');
	if (!eq || eq == arg || !eq[1])
		return die_usage("--input '%s': expected NAME=FILE.npy", arg);
	if (*n_in >= MAX_IN)
		return die_usage("more than %s inputs", "64");
	*eq = 0;
	in_name[*n_in] = arg;
	in_file[(*n_in)++] = eq + 1;
	return 0;
}

static int cmd_run(int argc, char **argv)
{
	const char *model = NULL, *outdir = ".";
	const char *in_name[MAX_IN], *in_file[MAX_IN];
	int n_in = 0, threads = 1, repeat = 0, warmup = -1, json = 0;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(a, "--input") || !strcmp(a, "-i")) {
			if (++i >= argc)
				return die_usage("%s needs NAME=FILE.npy", a);
			int bad = parse_input(argv[i], in_name, in_file, &n_in);
			if (bad)
				return bad;
		} else if (!strcmp(a, "--output-dir") || !strcmp(a, "-o")) {
			if (++i >= argc)
				return die_usage("%s needs a directory", a);
			outdir = argv[i];
		} else if (!strcmp(a, "--threads")) {
			if (++i >= argc || parse_int(argv[i], 1, 256, &threads))
				return die_usage("--threads takes a number from 1 to 256%s", "");
		} else if (!strcmp(a, "--repeat")) {
			if (++i >= argc || parse_int(argv[i], 1, 1000000, &repeat))
				return die_usage("--repeat takes a number from 1 to 1000000%s", "");
		} else if (!strcmp(a, "--warmup")) {
			if (++i >= argc || parse_int(argv[i], 0, 100000, &warmup))
				return die_usage("--warmup takes a number from 0 to 100000%s", "");
		} else if (!strcmp(a, "--reference")) {
			hal_use_reference = 1;
		} else if (!strcmp(a, "--json")) {
			json = 1;
		} else if (a[0] == '-') {
			return die_usage("run: unknown option '%s'", a);
		} else if (!model) {
			model = a;
		} else {
			return die_usage("run: unexpected argument '%s'", a);
		}
	}
	if (!model)
		return die_usage("run: no model given%s", "");
	if (warmup < 0)
		warmup = repeat ? 3 : 0;

	int rc = 1;
	char err[1024];
	aidos_model *m = NULL;
	aidos_session *s = NULL;
	aidos_tensor in[MAX_IN];
	void *owned[MAX_IN] = {0};
	double *lat = NULL;

	double t0 = now_ms();
	int e = aidos_model_load(model, &m, err, sizeof err);
	double load_ms = now_ms() - t0;
	if (e) {
		fprintf(stderr, "aidos: %s\n", err);
		goto out;
	}
	for (int i = 0; i < n_in; i++) {
		if ((e = aidos_npy_load(in_file[i], &in[i], &owned[i], err, sizeof err))) {
			fprintf(stderr, "aidos: input '%s': %s\n", in_name[i], err);
			goto out;
		}
		in[i].name = in_name[i];
	}
	aidos_session_opts o = { .threads = threads };
	if ((e = aidos_session_create(m, &o, &s, err, sizeof err))) {
		fprintf(stderr, "aidos: %s\n", err);
		goto out;
	}
	/* Planning is part of loading a model for a shape: report it apart. */
	double tp0 = now_ms();
	if ((e = aidos_session_plan(s, n_in, in))) {
		fprintf(stderr, "aidos: %s: %s\n", model, aidos_session_errmsg(s));
		goto out;
	}
	double plan_ms = now_ms() - tp0;
	int iters = repeat ? repeat : 1;
	lat = calloc((size_t)iters, sizeof *lat);
	if (!lat) {
		fprintf(stderr, "aidos: out of memory\n");
		goto out;
	}
	for (int i = 0; i < warmup; i++)
		if ((e = aidos_session_run(s, n_in, in)))
			break;
	for (int i = 0; !e && i < iters; i++) {
		double a = now_ms();
		e = aidos_session_run(s, n_in, in);
		lat[i] = now_ms() - a;
	}
	if (e) {
		fprintf(stderr, "aidos: %s: %s\n", model, aidos_session_errmsg(s));
		goto out;
	}
	struct stat st;
	if (stat(outdir, &st) < 0 && mkdir(outdir, 0755) < 0) {
		fprintf(stderr, "aidos: output directory %s: %s\n", outdir, strerror(errno));
		goto out;
	}
	int n_out = aidos_model_n_outputs(m);
	for (int k = 0; k < n_out; k++) {
		aidos_tensor t;
		aidos_session_output(s, k, &t);
		char path[PATH_MAX];
		out_path(path, sizeof path, outdir, t.name);
		if ((e = aidos_npy_save(path, &t))) {
			fprintf(stderr, "aidos: output '%s': cannot write %s: %s\n", t.name, path, aidos_strerror(e));
			goto out;
		}
		if (!json) {
			printf("%s: %s ", t.name, hal_dtype_name(t.dtype));
			print_dims(stdout, t.rank, t.dims, NULL);
			printf(" -> %s\n", path);
		}
	}
	qsort(lat, (size_t)iters, sizeof *lat, cmp_double);
	aidos_plan_stats ps;
	aidos_session_stats(s, &ps);
	if (json) {
		printf("{\"outputs\": {");
		for (int k = 0; k < n_out; k++) {
			aidos_tensor t;
			aidos_session_output(s, k, &t);
			printf("%s", k ? ", " : "");
			cli_json_str(stdout, t.name);
			printf(": {\"shape\": ");
			print_dims(stdout, t.rank, t.dims, NULL);
			printf(", \"dtype\": \"%s\"}", hal_dtype_name(t.dtype));
		}
		printf("}, \"load_ms\": %.3f, \"plan_ms\": %.3f, \"latency_ms\": {\"median\": %.4f, \"p10\": %.4f, \"p90\": %.4f}, "
		       "\"runs\": %d, \"threads\": %d, \"arena_bytes\": %zu, \"steps\": %d, \"folded\": %d}\n",
		       load_ms, plan_ms, pct(lat, iters, 0.5), pct(lat, iters, 0.1), pct(lat, iters, 0.9), iters, threads,
		       ps.arena_bytes, ps.steps, ps.folded);
	} else {
		printf("load %.2f ms, plan %.2f ms (%d steps, %d folded, arena %.1f KiB)\n", load_ms, plan_ms, ps.steps,
		       ps.folded, ps.arena_bytes / 1024.0);
		if (repeat)
			printf("latency over %d runs (%d threads): median %.3f ms, p10 %.3f ms, p90 %.3f ms\n", iters,
			       threads, pct(lat, iters, 0.5), pct(lat, iters, 0.1), pct(lat, iters, 0.9));
		else
			printf("latency %.3f ms (first run, %d threads)\n", lat[0], threads);
	}
	rc = 0;
out:
	free(lat);
	for (int i = 0; i < n_in; i++)
		free(owned[i]);
	aidos_session_destroy(s);
	aidos_model_free(m);
	return rc;
}

/* ---- info ---- */

typedef struct hist {
	const char *op[512];
	int count[512];
	int n;
} hist;

static void count_ops(const ir_graph *g, hist *h, int *nodes)
{
	for (int i = 0; i < g->n_node; i++) {
		const ir_node *nd = &g->node[i];
		(*nodes)++;
		int k;
		for (k = 0; k < h->n; k++)
			if (!strcmp(h->op[k], nd->op_type))
				break;
		if (k == h->n && h->n < 512) {
			h->op[k] = nd->op_type;
			h->count[k] = 0;
			h->n++;
		}
		if (k < h->n)
			h->count[k]++;
		for (int a = 0; a < nd->n_attr; a++) {
			if (nd->attr[a].type == IR_ATTR_GRAPH && nd->attr[a].g)
				count_ops(nd->attr[a].g, h, nodes);
			for (int j = 0; nd->attr[a].type == IR_ATTR_GRAPHS && j < nd->attr[a].n; j++)
				count_ops(nd->attr[a].graphs[j], h, nodes);
		}
	}
}

static void print_value(FILE *f, const ir_value *v, int json)
{
	if (json) {
		fputs("{\"name\": ", f);
		cli_json_str(f, v->name);
		fprintf(f, ", \"dtype\": \"%s\", \"shape\": ", hal_dtype_name(v->dtype));
		if (v->rank < 0)
			fputs("null", f);
		else
			print_dims(f, v->rank, v->dims, v->dim_param);
		fputc('}', f);
	} else {
		fprintf(f, "  %-32s %-8s ", v->name, hal_dtype_name(v->dtype));
		if (v->rank < 0)
			fputs("(shape unknown)", f);
		else
			print_dims(f, v->rank, v->dims, v->dim_param);
		fputc('\n', f);
	}
}

static int cmd_info(int argc, char **argv)
{
	const char *model = NULL;
	int json = 0;
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--json"))
			json = 1;
		else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			usage(stdout);
			return 0;
		} else if (argv[i][0] == '-')
			return die_usage("info: unknown option '%s'", argv[i]);
		else if (!model)
			model = argv[i];
		else
			return die_usage("info: unexpected argument '%s'", argv[i]);
	}
	if (!model)
		return die_usage("info: no model given%s", "");
	char err[1024];
	aidos_model *m;
	double t0 = now_ms();
	if (aidos_model_load(model, &m, err, sizeof err)) {
		fprintf(stderr, "aidos: %s\n", err);
		return 1;
	}
	double load_ms = now_ms() - t0;
	hist h;
	h.n = 0;
	int nodes = 0;
	count_ops(m->graph, &h, &nodes);
	size_t mapped, copied;
	aidos_model_weight_bytes(m, &mapped, &copied);
	const ir_graph *g = m->graph;
	if (json) {
		printf("{\"model\": ");
		cli_json_str(stdout, model);
		printf(", \"ir_version\": %lld, \"opsets\": {", (long long)m->ir_version);
		for (int i = 0; i < m->n_opset; i++) {
			printf("%s", i ? ", " : "");
			cli_json_str(stdout, m->opset[i].domain[0] ? m->opset[i].domain : "ai.onnx");
			printf(": %lld", (long long)m->opset[i].version);
		}
		printf("}, \"inputs\": [");
		for (int i = 0; i < m->n_in; i++) {
			printf("%s", i ? ", " : "");
			print_value(stdout, m->in[i], 1);
		}
		printf("], \"outputs\": [");
		for (int i = 0; i < g->n_output; i++) {
			printf("%s", i ? ", " : "");
			print_value(stdout, &g->output[i], 1);
		}
		printf("], \"nodes\": %d, \"operators\": {", nodes);
		for (int k = 0; k < h.n; k++) {
			printf("%s", k ? ", " : "");
			cli_json_str(stdout, h.op[k]);
			printf(": %d", h.count[k]);
		}
		printf("}, \"unsupported\": [");
		int first = 1;
		for (int k = 0; k < h.n; k++)
			if (!hal_op_find(h.op[k])) {
				printf("%s", first ? "" : ", ");
				cli_json_str(stdout, h.op[k]);
				first = 0;
			}
		printf("], \"weight_bytes\": %zu, \"weight_bytes_mapped\": %zu, \"weight_bytes_copied\": %zu, "
		       "\"load_ms\": %.3f}\n", mapped + copied, mapped, copied, load_ms);
	} else {
		printf("%s\n", model);
		printf("IR version %lld; opsets:", (long long)m->ir_version);
		for (int i = 0; i < m->n_opset; i++)
			printf(" %s %lld%s", m->opset[i].domain[0] ? m->opset[i].domain : "ai.onnx",
			       (long long)m->opset[i].version, i + 1 < m->n_opset ? "," : "");
		printf("\ninputs:\n");
		for (int i = 0; i < m->n_in; i++)
			print_value(stdout, m->in[i], 0);
		printf("outputs:\n");
		for (int i = 0; i < g->n_output; i++)
			print_value(stdout, &g->output[i], 0);
		printf("operators (%d nodes, subgraphs included):\n", nodes);
		for (int k = 0; k < h.n; k++)
			printf("  %-28s %5d%s\n", h.op[k], h.count[k], hal_op_find(h.op[k]) ? "" : "  (not supported)");
		printf("weights: %zu bytes (%zu used in place from the file mapping, %zu copied)\n", mapped + copied,
		       mapped, copied);
		printf("load: %.3f ms\n", load_ms);
	}
	aidos_model_free(m);
	return 0;
}

/* ---- node commands: a running aidos-node through its local socket ---- */

/* Parses the options every node command shares; returns 1 when argv[*i]
 * was one (consumed), 0 when not, -1 on a usage error. */
static int common_opt(int argc, char **argv, int *i, const char **sock)
{
	if (!strcmp(argv[*i], "--socket")) {
		if (++*i >= argc)
			return -1;
		*sock = argv[*i];
		return 1;
	}
	return 0;
}

/* Connects to the node at sock (NULL: the default); prints why not. */
static aidos_client *node_connect(const char *sock)
{
	aidos_client *c;
	char err[1024];
	if (aidos_client_connect(sock, NULL, &c, err, sizeof err)) {
		fprintf(stderr, "aidos: %s\n", err);
		return NULL;
	}
	return c;
}

/* A non-negative decimal. Returns 0 or -1. */
static int parse_u64v(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-')
		return -1;
	*out = v;
	return 0;
}

/* Bytes with an optional binary suffix K, M or G (as the node's config
 * file takes them): "67108864", "64M". Refuses overflow. */
static int parse_bytes(const char *s, uint64_t *out)
{
	char num[32];
	size_t n = strlen(s);
	unsigned shift = 0;
	if (n && strchr("KkMmGg", s[n - 1])) {
		char c = (char)(s[n - 1] | 0x20);
		shift = c == 'k' ? 10 : c == 'm' ? 20 : 30;
		n--;
	}
	if (!n || n >= sizeof num)
		return -1;
	memcpy(num, s, n);
	num[n] = 0;
	uint64_t v;
	if (parse_u64v(num, &v) || (shift && v > (UINT64_MAX >> shift)))
		return -1;
	*out = v << shift;
	return 0;
}

/* `aidos spawn`: exit 0 spawned, 1 refused or no node, 2 usage. Likewise below. */
static int cmd_spawn(int argc, char **argv)
{
	const char *sock = NULL, *name = NULL, *model = NULL;
	aidos_client_spawn_opts o = { 0 };
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		int k = common_opt(argc, argv, &i, &sock);
		if (k < 0)
			return die_usage("%s needs a value", a);
		if (k)
			continue;
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			printf("usage: aidos spawn --name N [--priority P] [--quota BYTES] [--deadline-ms D] [--socket PATH] MODEL.onnx\n"
			       "Starts agent N running MODEL.onnx on the local node. --priority -1000..1000 (default 0),\n"
			       "--quota: the agent's memory quota in bytes, K/M/G suffix allowed (0: none), --deadline-ms: its default request\n"
			       "deadline. Exit status: 0 spawned, 1 refused (the node says why), 2 usage.\n");
			return 0;
		} else if (!strcmp(a, "--name")) {
			if (++i >= argc)
				return die_usage("%s needs a name", a);
			name = argv[i];
		} else if (!strcmp(a, "--priority")) {
			if (++i >= argc || parse_int(argv[i], -1000, 1000, &o.priority))
				return die_usage("--priority takes -1000..1000%s", "");
		} else if (!strcmp(a, "--quota")) {
			if (++i >= argc || parse_bytes(argv[i], &o.quota_bytes))
				return die_usage("--quota takes bytes, with an optional K, M or G suffix (64M)%s", "");
		} else if (!strcmp(a, "--deadline-ms")) {
			if (++i >= argc || parse_u64v(argv[i], &o.deadline_ms) || o.deadline_ms > 86400000)
				return die_usage("--deadline-ms takes 0..86400000%s", "");
		} else if (a[0] == '-') {
			return die_usage("spawn: unknown option '%s'", a);
		} else if (!model) {
			model = a;
		} else {
			return die_usage("spawn: unexpected argument '%s'", a);
		}
	}
	if (!name)
		return die_usage("spawn: --name N is required%s", "");
	if (!model)
		return die_usage("spawn: no model given%s", "");
	aidos_client *c = node_connect(sock);
	if (!c)
		return 1;
	char err[1024];
	o.name = name;
	o.model = model;
	int rc = aidos_client_spawn(c, &o, err, sizeof err);
	aidos_client_close(c);
	if (rc) {
		fprintf(stderr, "aidos: spawn %s: %s\n", name, err);
		return 1;
	}
	printf("spawned %s (%s)\n", name, model);
	return 0;
}

/* `aidos kill N`. */
static int cmd_kill(int argc, char **argv)
{
	const char *sock = NULL, *name = NULL;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		int k = common_opt(argc, argv, &i, &sock);
		if (k < 0)
			return die_usage("%s needs a value", a);
		if (k)
			continue;
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			printf("usage: aidos kill N [--socket PATH]\nRemoves agent N from the local node (its request in flight finishes).\n");
			return 0;
		} else if (a[0] == '-') {
			return die_usage("kill: unknown option '%s'", a);
		} else if (!name) {
			name = a;
		} else {
			return die_usage("kill: unexpected argument '%s'", a);
		}
	}
	if (!name)
		return die_usage("kill: no agent name given%s", "");
	aidos_client *c = node_connect(sock);
	if (!c)
		return 1;
	char err[1024];
	int rc = aidos_client_kill(c, name, err, sizeof err);
	aidos_client_close(c);
	if (rc) {
		fprintf(stderr, "aidos: kill %s: %s\n", name, err);
		return 1;
	}
	printf("killed %s\n", name);
	return 0;
}

/* Options of a command that takes only --json, --help and the common
 * ones (--socket): returns -1 to go on, else the exit status to return
 * (0 after printing help, 2 after a usage error). */
static int json_cmd_opts(int argc, char **argv, const char *cmd, const char *help, const char **sock, int *json)
{
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		int k = common_opt(argc, argv, &i, sock);
		if (k < 0)
			return die_usage("%s needs a value", a);
		if (k)
			continue;
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			fputs(help, stdout);
			return 0;
		} else if (!strcmp(a, "--json")) {
			*json = 1;
		} else {
			fprintf(stderr, "aidos: %s: unexpected argument '%s'\n(see 'aidos --help')\n", cmd, a);
			return 2;
		}
	}
	return -1;
}

/* `aidos ps [--json]`. */
static int cmd_ps(int argc, char **argv)
{
	const char *sock = NULL;
	int json = 0, rc_opts = json_cmd_opts(argc, argv, "ps",
					      "usage: aidos ps [--json] [--socket PATH]\nLists the local node's agents: "
					      "state, priority, requests, errors, mean model time, memory, quota, model.\n",
					      &sock, &json);
	if (rc_opts >= 0)
		return rc_opts;
	aidos_client *c = node_connect(sock);
	if (!c)
		return 1;
	char err[1024];
	aidos_agent_info *l;
	int n;
	int rc = aidos_client_list(c, &l, &n, err, sizeof err);
	aidos_client_close(c);
	if (rc) {
		fprintf(stderr, "aidos: ps: %s\n", err);
		return 1;
	}
	if (json) {
		printf("[");
		for (int i = 0; i < n; i++) {
			printf("%s{\"name\": ", i ? ", " : "");
			cli_json_str(stdout, l[i].name);
			printf(", \"state\": ");
			cli_json_str(stdout, l[i].state);
			printf(", \"priority\": %d, \"requests\": %llu, \"errors\": %llu, \"latency_ns\": %llu, "
			       "\"mem_bytes\": %llu, \"quota_bytes\": %llu, \"deadline_ms\": %llu, \"model\": ",
			       l[i].priority, (unsigned long long)l[i].requests, (unsigned long long)l[i].errors,
			       (unsigned long long)l[i].latency_ns, (unsigned long long)l[i].mem_bytes,
			       (unsigned long long)l[i].quota_bytes, (unsigned long long)l[i].deadline_ms);
			cli_json_str(stdout, l[i].model);
			printf("}");
		}
		printf("]\n");
	} else {
		printf("%-20s %-9s %5s %10s %7s %10s %12s %12s  %s\n", "NAME", "STATE", "PRIO", "REQUESTS", "ERRORS",
		       "MODEL_US", "MEM", "QUOTA", "MODEL");
		for (int i = 0; i < n; i++)
			printf("%-20s %-9s %5d %10llu %7llu %10.1f %12llu %12s  %s\n", l[i].name, l[i].state, l[i].priority,
			       (unsigned long long)l[i].requests, (unsigned long long)l[i].errors,
			       (double)l[i].latency_ns / 1e3, (unsigned long long)l[i].mem_bytes,
			       l[i].quota_bytes ? (snprintf(err, sizeof err, "%llu", (unsigned long long)l[i].quota_bytes), err)
						: "-",
			       l[i].model);
	}
	aidos_client_list_free(l);
	return 0;
}

/* `aidos stats [--json]`. */
static int cmd_stats(int argc, char **argv)
{
	const char *sock = NULL;
	int json = 0, rc_opts = json_cmd_opts(argc, argv, "stats",
					      "usage: aidos stats [--json] [--socket PATH]\nThe local node's counters: "
					      "agents, clients, requests and errors through the rings, shared memory, "
					      "node heap, uptime.\n",
					      &sock, &json);
	if (rc_opts >= 0)
		return rc_opts;
	aidos_client *c = node_connect(sock);
	if (!c)
		return 1;
	char err[1024];
	aidos_node_stats st;
	int rc = aidos_client_stats(c, &st, err, sizeof err);
	aidos_client_close(c);
	if (rc) {
		fprintf(stderr, "aidos: stats: %s\n", err);
		return 1;
	}
	if (json)
		printf("{\"agents\": %llu, \"clients\": %llu, \"requests\": %llu, \"errors\": %llu, \"uptime_ms\": %llu, "
		       "\"heap_bytes\": %llu, \"pool_bytes\": %llu}\n",
		       (unsigned long long)st.agents, (unsigned long long)st.clients, (unsigned long long)st.requests,
		       (unsigned long long)st.errors, (unsigned long long)st.uptime_ms, (unsigned long long)st.heap_bytes,
		       (unsigned long long)st.pool_bytes);
	else
		printf("agents %llu\nclients %llu (this one included)\nrequests %llu\nerrors %llu\nuptime_ms %llu\n"
		       "shared_memory_bytes %llu\nnode_heap_bytes %llu\n",
		       (unsigned long long)st.agents, (unsigned long long)st.clients, (unsigned long long)st.requests,
		       (unsigned long long)st.errors, (unsigned long long)st.uptime_ms, (unsigned long long)st.heap_bytes,
		       (unsigned long long)st.pool_bytes);
	return 0;
}

/* `aidos ping [--count N] [--json]`: 100 warm-up pings, then N measured. */
static int cmd_ping(int argc, char **argv)
{
	const char *sock = NULL;
	int json = 0, count = 1000;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		int k = common_opt(argc, argv, &i, &sock);
		if (k < 0)
			return die_usage("%s needs a value", a);
		if (k)
			continue;
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			printf("usage: aidos ping [--count N] [--json] [--socket PATH]\n"
			       "Sends N (default 1000) null requests through the shared-memory rings, one at a time,\n"
			       "after 100 unmeasured ones, and reports the round trip: median, p99, min, max in ns.\n"
			       "JSON: {\"count\": N, \"rtt_ns\": {\"median\": x, \"p99\": x, \"min\": x, \"max\": x}}\n");
			return 0;
		} else if (!strcmp(a, "--json")) {
			json = 1;
		} else if (!strcmp(a, "--count")) {
			if (++i >= argc || parse_int(argv[i], 1, 100000000, &count))
				return die_usage("--count takes 1..100000000%s", "");
		} else {
			return die_usage("ping: unexpected argument '%s'", a);
		}
	}
	aidos_client *c = node_connect(sock);
	if (!c)
		return 1;
	double *v = malloc((size_t)count * sizeof *v);
	int rc = v ? 0 : AIDOS_E_NOMEM;
	for (int i = 0; i < 100 && !rc; i++)
		rc = aidos_client_ping(c, NULL);
	for (int i = 0; i < count && !rc; i++) {
		uint64_t ns;
		rc = aidos_client_ping(c, &ns);
		v[i] = (double)ns;
	}
	aidos_client_close(c);
	if (rc) {
		fprintf(stderr, "aidos: ping: %s\n", aidos_strerror(rc));
		free(v);
		return 1;
	}
	qsort(v, (size_t)count, sizeof *v, cmp_double);
	double med = pct(v, count, 0.5), p99 = pct(v, count, 0.99);
	if (json)
		printf("{\"count\": %d, \"rtt_ns\": {\"median\": %.0f, \"p99\": %.0f, \"min\": %.0f, \"max\": %.0f}}\n", count,
		       med, p99, v[0], v[count - 1]);
	else
		printf("ping: %d round trips through the rings: median %.0f ns, p99 %.0f ns, min %.0f ns, max %.0f ns\n",
		       count, med, p99, v[0], v[count - 1]);
	free(v);
	return 0;
}

/* `aidos infer N --input K=F.npy ...`: inputs loaded into the shared heap,
 * outputs written as DIR/<name, '/' -> '_'>.npy. */
static int cmd_infer(int argc, char **argv)
{
	const char *sock = NULL, *agent = NULL, *outdir = ".";
	const char *in_name[MAX_IN], *in_file[MAX_IN];
	int n_in = 0, json = 0;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		int k = common_opt(argc, argv, &i, &sock);
		if (k < 0)
			return die_usage("%s needs a value", a);
		if (k)
			continue;
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			printf("usage: aidos infer N --input K=F.npy ... [--output-dir DIR] [--json] [--socket PATH]\n"
			       "Runs agent N of the local node on the .npy inputs (loaded into the shared heap) and writes\n"
			       "each output to DIR/<output name, '/' -> '_'>.npy (default DIR: .). --json prints the\n"
			       "outputs' names, dtypes, shapes and files.\n");
			return 0;
		} else if (!strcmp(a, "--input") || !strcmp(a, "-i")) {
			if (++i >= argc)
				return die_usage("%s needs NAME=FILE.npy", a);
			int bad = parse_input(argv[i], in_name, in_file, &n_in);
			if (bad)
				return bad;
		} else if (!strcmp(a, "--output-dir") || !strcmp(a, "-o")) {
			if (++i >= argc)
				return die_usage("%s needs a directory", a);
			outdir = argv[i];
		} else if (!strcmp(a, "--json")) {
			json = 1;
		} else if (a[0] == '-') {
			return die_usage("infer: unknown option '%s'", a);
		} else if (!agent) {
			agent = a;
		} else {
			return die_usage("infer: unexpected argument '%s'", a);
		}
	}
	if (!agent)
		return die_usage("infer: no agent name given%s", "");
	aidos_client *c = node_connect(sock);
	if (!c)
		return 1;
	int rc = 1, e;
	char err[1024];
	aidos_tensor in[MAX_IN], out[MAX_IN];
	int nout = 0, loaded = 0;
	for (; loaded < n_in; loaded++) {
		void *owned;
		aidos_tensor t;
		if ((e = aidos_npy_load(in_file[loaded], &t, &owned, err, sizeof err))) {
			fprintf(stderr, "aidos: input '%s': %s\n", in_name[loaded], err);
			goto out;
		}
		in[loaded] = t;
		in[loaded].name = in_name[loaded];
		e = aidos_client_tensor_alloc(c, &in[loaded]);
		if (e) {
			aidos_npy_free(owned);
			fprintf(stderr, "aidos: input '%s' does not fit the node's shared heap: %s\n", in_name[loaded],
				aidos_strerror(e));
			goto out;
		}
		size_t bytes = hal_dtype_size(t.dtype);
		for (int d = 0; d < t.rank; d++)
			bytes *= (size_t)t.dims[d];
		memcpy(in[loaded].data, t.data, bytes);   /* the file is read once, then in place */
		aidos_npy_free(owned);
	}
	if ((e = aidos_client_infer(c, agent, n_in, in, &nout, out, MAX_IN, err, sizeof err))) {
		fprintf(stderr, "aidos: infer %s: %s\n", agent, err);
		goto out;
	}
	if (json)
		printf("{\"agent\": ");
	if (json) {
		cli_json_str(stdout, agent);
		printf(", \"outputs\": [");
	}
	for (int i = 0; i < nout; i++) {
		char path[PATH_MAX];
		out_path(path, sizeof path, outdir, out[i].name);
		if ((e = aidos_npy_save(path, &out[i]))) {
			fprintf(stderr, "aidos: output '%s': cannot write %s: %s\n", out[i].name, path, aidos_strerror(e));
			goto out;
		}
		if (json) {
			printf("%s{\"name\": ", i ? ", " : "");
			cli_json_str(stdout, out[i].name);
			printf(", \"dtype\": \"%s\", \"shape\": ", aidos_npy_descr(out[i].dtype));
			print_dims(stdout, out[i].rank, out[i].dims, NULL);
			printf(", \"file\": ");
			cli_json_str(stdout, path);
			printf("}");
		} else {
			printf("%s -> %s\n", out[i].name, path);
		}
	}
	if (json)
		printf("]}\n");
	rc = 0;
out:
	for (int i = 0; i < loaded; i++)
		aidos_client_tensor_free(c, &in[i]);
	aidos_client_close(c);
	return rc;
}

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
} node_cmds[] = {
	{ "spawn", cmd_spawn }, { "infer", cmd_infer }, { "ps", cmd_ps },
	{ "kill", cmd_kill },   { "stats", cmd_stats }, { "ping", cmd_ping },
};

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	const char *cmd = argv[1];
	if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
		printf("aidos %s (cpu kernels: %s)\n", AIDOS_VERSION, hal_gemm_isa());
		return 0;
	}
	if (!strcmp(cmd, "run"))
		return cmd_run(argc - 2, argv + 2);
	if (!strcmp(cmd, "info"))
		return cmd_info(argc - 2, argv + 2);
	for (size_t i = 0; i < sizeof node_cmds / sizeof node_cmds[0]; i++)
		if (!strcmp(cmd, node_cmds[i].name))
			return node_cmds[i].fn(argc - 2, argv + 2);
	fprintf(stderr, "aidos: unknown command '%s' (see 'aidos --help')\n", cmd);
	return 2;
}
