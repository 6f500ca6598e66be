/*
 * bench/ipc.c - the local client path, measured (bench/ipc.sh runs it and
 * writes bench/results/ipc-latest.*). Not a test: it prints numbers.
 *
 *   build/bench/ipc [--pings N] [--runs N] [--clients-max N] [--only ping] MODEL.onnx
 *
 * A node (node/node.h, standalone, workers = cores) and its socket server
 * (node/ipc.c + node/ipc_node.c, as aidos-node runs them: requests go
 * through the dispatcher) are started in this process on a socket in a
 * temporary directory; clients connect to it like any other process would
 * (the rings are shared memory either way).
 *   ping:   N null requests, one at a time; the node's poller pinned to CPU
 *           0 (its threads inherit it), the client to CPU 1, both spinning
 *           (AIDOS_IPC_SPIN_US / AIDOS_CLIENT_SPIN_US set high here).
 *   model:  MODEL (one float input, fixed shape) run in process by
 *           aidos_session_run on CPU 1, then through the node with the
 *           input written in place in the heap; medians compared.
 *           AIDOS_BENCH_SOLO=1: node requests only (no in-process run between).
 *   clients: 1..clients-max clients at once, each on its own agent of
 *           MODEL, unpinned, default spin: total requests per second.
 * Output: one JSON object on stdout.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "aidos/aidos.h"
#include "aidos/client.h"
#include "node/ipc.h"
#include "node/node.h"

static char sock[256], dir[128];

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static uint64_t pctl(uint64_t *v, int n, double p)
{
	int i = (int)(p * (n - 1) + 0.5);
	return v[i < n ? i : n - 1];
}

static void pin(int cpu)
{
	cpu_set_t s;
	CPU_ZERO(&s);
	CPU_SET(cpu, &s);
	sched_setaffinity(0, sizeof s, &s);
}

static void unpin(void)
{
	cpu_set_t s;
	CPU_ZERO(&s);
	for (int i = 0; i < CPU_SETSIZE; i++)
		CPU_SET(i, &s);
	sched_setaffinity(0, sizeof s, &s);
}

static const char *model;
static aidos_tensor in_info;   /* the model's input */
static int runs = 2000;

typedef struct cl {
	int id, n;
	uint64_t done;
	int bad;
} cl;

static void *client_main(void *arg)
{
	cl *w = arg;
	aidos_client *c;
	char err[512], name[32];
	if (aidos_client_connect(sock, NULL, &c, err, sizeof err)) {
		w->bad = 1;
		return NULL;
	}
	snprintf(name, sizeof name, "a%d", w->id);
	aidos_tensor x = in_info;
	aidos_tensor out[8];
	int nout;
	if (aidos_client_tensor_alloc(c, &x)) {
		w->bad = 1;
		aidos_client_close(c);
		return NULL;
	}
	for (int i = 0; i < w->n; i++) {
		if (aidos_client_infer(c, name, 1, &x, &nout, out, 8, err, sizeof err)) {
			fprintf(stderr, "ipc bench: %s\n", err);
			w->bad = 1;
			break;
		}
		w->done++;
	}
	aidos_client_close(c);
	return NULL;
}

int main(int argc, char **argv)
{
	int pings = 100000, cmax = 8, only_ping = 0;
	char err[1024];
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--pings") && i + 1 < argc)
			pings = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
			runs = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--clients-max") && i + 1 < argc)
			cmax = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--only") && i + 1 < argc)
			only_ping = !strcmp(argv[++i], "ping");
		else
			model = argv[i];
	}
	if ((!model && !only_ping) || pings < 1 || runs < 1 || cmax < 1 || cmax > 64) {
		fprintf(stderr, "usage: ipc [--pings N] [--runs N] [--clients-max N] [--only ping] MODEL.onnx\n");
		return 2;
	}
	int ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
	snprintf(dir, sizeof dir, "/tmp/aidos-ipc-bench-XXXXXX");
	if (!mkdtemp(dir))
		return 1;
	snprintf(sock, sizeof sock, "%s/node.sock", dir);
	setenv("AIDOS_CLIENT_SPIN_US", "1000000", 0);   /* ping and model: both sides spin */

	/* The node (standalone, no gRPC): its dispatcher workers are
	 * started before any pinning; the socket server's threads (control,
	 * pollers) inherit CPU 0. */
	char ddir[300];
	snprintf(ddir, sizeof ddir, "%s/data", dir);
	node_opts no = { .name = "bench", .data_dir = ddir, .no_grpc = 1 };   /* workers: one per core */
	node *nd;
	if (node_create(&no, &nd, err, sizeof err) || node_start(nd, err, sizeof err)) {
		fprintf(stderr, "ipc bench: node: %s\n", err);
		return 1;
	}
	pin(0);
	ipc_node *in;
	ipc_ops ops;
	ipc_server *srv;
	ipc_opts o = { .path = sock, .spin_us = 1000000 };
	if (ipc_node_create(nd, &in, err, sizeof err))
		return 1;
	ipc_node_ops(in, &ops);
	if (ipc_server_create(&o, &ops, &srv, err, sizeof err) || ipc_server_start(srv, err, sizeof err)) {
		fprintf(stderr, "ipc bench: %s\n", err);
		return 1;
	}
	pin(ncpu > 1 ? 1 : 0);

	aidos_client *c;
	if (aidos_client_connect(sock, NULL, &c, err, sizeof err)) {
		fprintf(stderr, "ipc bench: %s\n", err);
		return 1;
	}
	uint64_t *v = malloc(sizeof *v * (size_t)(pings > runs ? pings : runs));
	for (int i = 0; i < 1000; i++)
		aidos_client_ping(c, NULL);
	for (int i = 0; i < pings; i++)
		if (aidos_client_ping(c, &v[i]))
			return 1;
	qsort(v, (size_t)pings, sizeof *v, cmp_u64);
	printf("{\"cpus\": %d, \"ping\": {\"count\": %d, \"rtt_ns\": {\"median\": %llu, \"p99\": %llu, \"min\": %llu}}",
	       ncpu, pings, (unsigned long long)pctl(v, pings, 0.5), (unsigned long long)pctl(v, pings, 0.99),
	       (unsigned long long)v[0]);
	fflush(stdout);
	if (only_ping) {
		printf("}\n");
		goto done;
	}

	/* model: in process, then through the node */
	aidos_model *m;
	aidos_session *s;
	if (aidos_model_load(model, &m, err, sizeof err) || aidos_session_create(m, NULL, &s, err, sizeof err)) {
		fprintf(stderr, "ipc bench: %s\n", err);
		return 1;
	}
	aidos_model_input(m, 0, &in_info);
	for (int d = 0; d < in_info.rank; d++)
		if (in_info.dims[d] < 0)
			in_info.dims[d] = 1;
	aidos_tensor x = in_info;
	size_t bytes = 4;
	for (int d = 0; d < x.rank; d++)
		bytes *= (size_t)x.dims[d];
	x.data = calloc(1, bytes);
	char name[32];
	for (int k = 0; k < cmax; k++) {
		snprintf(name, sizeof name, "a%d", k);
		aidos_client_spawn_opts so = { .name = name, .model = model };
		if (aidos_client_spawn(c, &so, err, sizeof err)) {
			fprintf(stderr, "ipc bench: %s\n", err);
			return 1;
		}
	}
	aidos_tensor hx = in_info, out[8];
	int nout;
	aidos_client_tensor_alloc(c, &hx);
	for (int i = 0; i < 100; i++) {
		aidos_session_run(s, 1, &x);
		aidos_client_infer(c, "a0", 1, &hx, &nout, out, 8, err, sizeof err);
	}
	/* Interleaved, so both see the same machine load. */
	uint64_t *wv = malloc(sizeof *wv * (size_t)runs), *ov = malloc(sizeof *ov * (size_t)runs);
	int solo = getenv("AIDOS_BENCH_SOLO") != NULL;   /* node requests only: the client's caches stay warm */
	for (int i = 0; i < runs; i++) {
		uint64_t t0 = now_ns();
		if (!solo)
			aidos_session_run(s, 1, &x);
		uint64_t t1 = now_ns();
		if (aidos_client_infer(c, "a0", 1, &hx, &nout, out, 8, err, sizeof err)) {
			fprintf(stderr, "ipc bench: %s\n", err);
			return 1;
		}
		v[i] = t1 - t0;
		wv[i] = now_ns() - t1;
		uint64_t ex = aidos_client_last_exec_ns(c);   /* the model's own time in the node */
		ov[i] = wv[i] > ex ? wv[i] - ex : 0;
	}
	qsort(v, (size_t)runs, sizeof *v, cmp_u64);
	qsort(wv, (size_t)runs, sizeof *wv, cmp_u64);
	qsort(ov, (size_t)runs, sizeof *ov, cmp_u64);
	uint64_t ovm = pctl(ov, runs, 0.5), ov99 = pctl(ov, runs, 0.99);
	uint64_t inproc = pctl(v, runs, 0.5), inproc99 = pctl(v, runs, 0.99);
	uint64_t thru = pctl(wv, runs, 0.5), thru99 = pctl(wv, runs, 0.99);
	free(wv);
	free(ov);
	aidos_session_destroy(s);
	free(x.data);
	printf(", \"model\": {\"path\": \"%s\", \"runs\": %d, \"in_process_ns\": {\"median\": %llu, \"p99\": %llu}, "
	       "\"through_node_ns\": {\"median\": %llu, \"p99\": %llu}, \"overhead_median_ns\": %lld, "
	       "\"round_trip_minus_model_ns\": {\"median\": %llu, \"p99\": %llu}}",
	       model, runs, (unsigned long long)inproc, (unsigned long long)inproc99, (unsigned long long)thru,
	       (unsigned long long)thru99, (long long)thru - (long long)inproc, (unsigned long long)ovm,
	       (unsigned long long)ov99);
	fflush(stdout);
	aidos_client_close(c);

	/* clients: a second node with the default spins, unpinned */
	unpin();
	ipc_server_destroy(srv);
	srv = NULL;
	ipc_opts o2 = { .path = sock };
	if (ipc_server_create(&o2, &ops, &srv, err, sizeof err) || ipc_server_start(srv, err, sizeof err)) {
		fprintf(stderr, "ipc bench: %s\n", err);
		return 1;
	}
	printf(", \"clients\": [");
	for (int n = 1; n <= cmax; n *= 2) {
		pthread_t th[64];
		cl w[64];
		setenv("AIDOS_CLIENT_SPIN_US", "50", 1);
		uint64_t t0 = now_ns();
		for (int k = 0; k < n; k++) {
			w[k] = (cl){ .id = k, .n = runs / 2 };
			pthread_create(&th[k], NULL, client_main, &w[k]);
		}
		uint64_t done = 0;
		int bad = 0;
		for (int k = 0; k < n; k++) {
			pthread_join(th[k], NULL);
			done += w[k].done;
			bad |= w[k].bad;
		}
		double secs = (double)(now_ns() - t0) / 1e9;
		printf("%s{\"clients\": %d, \"requests\": %llu, \"per_second\": %.0f%s}", n > 1 ? ", " : "", n,
		       (unsigned long long)done, (double)done / secs, bad ? ", \"errors\": true" : "");
		fflush(stdout);
	}
	printf("]}\n");
	aidos_model_free(m);
	c = NULL;
done:
	if (c)
		aidos_client_close(c);
	free(v);
	ipc_server_destroy(srv);
	ipc_node_destroy(in);
	node_destroy(nd);
	char cmd[400];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd))
		fprintf(stderr, "ipc bench: could not remove %s\n", dir);
	return 0;
}
