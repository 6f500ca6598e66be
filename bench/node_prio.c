/*
 * bench/node_prio.c - high-priority latency through the node's dispatcher,
 * unloaded and under a saturating low-priority load, in one process
 * (node_submit / node_run; the ring-client variant belongs to the IPC
 * benchmarks). A measurement, not a test: prints one JSON object.
 *
 *   node_prio MODELS_DIR [--n N] [--workers W] [--lo-batch B] [--rt PRIO]
 *
 * Agents: "hi" = hey_jarvis (priority 10), lo0..lo3 = the openWakeWord
 * embedding model on B x 76 x 32 x 1 inputs (priority 1). Latency is the
 * caller's view: node_run() from submit to the return after done().
 * Load: 2 threads keep 8 low-priority requests each in flight. --rt PRIO:
 * the node's top-class worker and this client thread run SCHED_FIFO, so
 * other processes on a shared machine do not make the figure.
 */
#include <sched.h>
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "node/dispatch.h"
#include "node/node.h"
#include "pools/pools.h"

#define LOADERS 2
#define DEPTH 8

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

static double last_exec_ms;

static void nop_done(node_job *j, int rc, const char *err)
{
	if (rc)
		fprintf(stderr, "node_prio: request failed: %s\n", err);
	last_exec_ms = j->exec_ms;
}

typedef struct loader {
	node *n;
	node_agent *a[2];
	node_job j[DEPTH];
	aidos_tensor out[DEPTH][2];
	int done[DEPTH];        /* atomic */
	sem_t sem;
	int stop;               /* atomic */
	uint64_t completed;
	pthread_t th;
} loader;

static float hin[16 * 96];
static float *lin;
static aidos_tensor T_h = { .name = "x.1", .dtype = AIDOS_DT_FLOAT, .rank = 3, .dims = { 1, 16, 96 }, .data = hin };
static aidos_tensor T_l = { .name = "input_1", .dtype = AIDOS_DT_FLOAT, .rank = 4, .dims = { 4, 76, 32, 1 } };

static void lo_done(node_job *j, int rc, const char *err)
{
	loader *l = j->user;
	if (rc && rc != AIDOS_E_BUSY)
		fprintf(stderr, "node_prio: low-priority request failed: %s\n", err);
	__atomic_store_n(&l->done[j - l->j], 1, __ATOMIC_RELEASE);
	sem_post(&l->sem);
}

static void lo_submit(loader *l, int i)
{
	char err[300];
	node_job *j = &l->j[i];
	memset(j, 0, sizeof *j);
	j->agent = l->a[i & 1];
	j->in = &T_l;
	j->nin = 1;
	j->out = l->out[i];
	j->nout = 2;
	j->priority = NODE_PRIO_AGENT;
	j->done = lo_done;
	j->user = l;
	if (node_submit(l->n, j, err, sizeof err)) {
		__atomic_store_n(&l->done[i], 1, __ATOMIC_RELEASE);
		sem_post(&l->sem);
	}
}

static void *loader_main(void *arg)
{
	loader *l = arg;
	for (int i = 0; i < DEPTH; i++)
		lo_submit(l, i);
	while (!__atomic_load_n(&l->stop, __ATOMIC_ACQUIRE)) {
		while (sem_wait(&l->sem) && errno == EINTR)
			;
		for (int i = 0; i < DEPTH; i++)
			if (__atomic_exchange_n(&l->done[i], 0, __ATOMIC_ACQ_REL)) {
				l->completed++;
				if (!__atomic_load_n(&l->stop, __ATOMIC_ACQUIRE))
					lo_submit(l, i);
			}
	}
	return NULL;
}

/* n high-priority requests one after another: percentiles in us. */
static void measure(node *n, node_agent *hi, int count, double *p50, double *p99, double *mean, double *exec50)
{
	uint64_t *lat = malloc((size_t)count * sizeof *lat), *ex = malloc((size_t)count * sizeof *ex);
	aidos_tensor out[2];
	char err[300];
	double sum = 0;
	for (int i = 0; i < count; i++) {
		node_job j = { .agent = hi, .in = &T_h, .nin = 1, .out = out, .nout = 2, .priority = NODE_PRIO_AGENT,
			       .done = nop_done };
		uint64_t t0 = now_ns();
		if (node_run(n, &j, err, sizeof err))
			fprintf(stderr, "node_prio: %s\n", err);
		lat[i] = now_ns() - t0;
		ex[i] = (uint64_t)(last_exec_ms * 1e6);
		sum += (double)lat[i];
		usleep(200);   /* requests arrive apart, as a client's would */
	}
	qsort(lat, (size_t)count, sizeof *lat, cmp_u64);
	*p50 = (double)lat[count / 2] / 1e3;
	*p99 = (double)lat[(size_t)count * 99 / 100] / 1e3;
	*mean = sum / count / 1e3;
	qsort(ex, (size_t)count, sizeof *ex, cmp_u64);
	*exec50 = (double)ex[count / 2] / 1e3;
	free(lat);
	free(ex);
}

int main(int argc, char **argv)
{
	int count = 2000, workers = 2, batch = 4, rt = 0;
	char dir[] = "/tmp/aidos-bench-node-XXXXXX", err[600], jarvis[600], emb[600];
	if (argc < 2) {
		fprintf(stderr, "usage: node_prio MODELS_DIR [--n N] [--workers W] [--lo-batch B]\n");
		return 2;
	}
	for (int i = 2; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--n"))
			count = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--workers"))
			workers = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--lo-batch"))
			batch = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--rt"))
			rt = atoi(argv[i + 1]);
	}
	if (count < 100 || workers < 1 || batch < 1 || batch > 64) {
		fprintf(stderr, "node_prio: bad arguments\n");
		return 2;
	}
	snprintf(jarvis, sizeof jarvis, "%s/openwakeword/hey_jarvis_v0.1.onnx", argv[1]);
	snprintf(emb, sizeof emb, "%s/openwakeword/embedding_model.onnx", argv[1]);
	if (access(jarvis, R_OK) || access(emb, R_OK)) {
		printf("{\"bench\":\"node_prio\",\"skipped\":\"models missing under %s\"}\n", argv[1]);
		return 0;
	}
	if (!mkdtemp(dir))
		return 1;
	T_l.dims[0] = batch;
	lin = calloc((size_t)batch * 76 * 32, sizeof *lin);
	T_l.data = lin;
	for (int i = 0; i < 16 * 96; i++)
		hin[i] = (float)(i % 13) / 13.0f;
	for (int i = 0; i < batch * 76 * 32; i++)
		lin[i] = (float)(i % 7) / 7.0f;

	node_opts o = { .name = "bench", .data_dir = dir, .run_workers = workers, .pin = 1, .rt_prio = rt };
	if (rt > 0) {
		/* The high-priority client as the node's top lane: real-time too,
		 * so the figure is the dispatcher's, not the other processes'. */
		/* One below the worker: a worker that wakes on the client's core
		 * runs at once instead of waiting for the client's spin. */
		struct sched_param sp = { .sched_priority = rt > 1 ? rt - 1 : 1 };
		if (pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp))
			rt = -rt;   /* reported: refused */
	}
	node *n;
	if (node_create(&o, &n, err, sizeof err) || node_start(n, err, sizeof err)) {
		fprintf(stderr, "node_prio: %s\n", err);
		return 1;
	}
	node_spawn_spec hs = { .name = "hi", .model_path = jarvis, .priority = 10 };
	if (node_agent_spawn_local(n, &hs, err, sizeof err)) {
		fprintf(stderr, "node_prio: %s\n", err);
		return 1;
	}
	for (int i = 0; i < 4; i++) {
		char name[16];
		snprintf(name, sizeof name, "lo%d", i);
		node_spawn_spec ls = { .name = name, .model_path = emb, .priority = 1 };
		if (node_agent_spawn_local(n, &ls, err, sizeof err)) {
			fprintf(stderr, "node_prio: %s\n", err);
			return 1;
		}
	}
	node_agent *hi = node_agent_find(n, "hi");
	double u50, u99, umean, l50, l99, lmean, uex, lex;
	measure(n, hi, count / 10, &u50, &u99, &umean, &uex);   /* warm-up */
	measure(n, hi, count, &u50, &u99, &umean, &uex);

	/* Low-priority run time alone, for scale. */
	node_agent *lo0 = node_agent_find(n, "lo0");
	aidos_tensor out[2];
	uint64_t t0 = now_ns();
	for (int i = 0; i < 20; i++) {
		node_job j = { .agent = lo0, .in = &T_l, .nin = 1, .out = out, .nout = 2, .priority = NODE_PRIO_AGENT,
			       .done = nop_done };
		node_run(n, &j, err, sizeof err);
	}
	double lo_ms = (double)(now_ns() - t0) / 20 / 1e6;
	node_agent_unref(lo0);

	static loader L[LOADERS];
	for (int k = 0; k < LOADERS; k++) {
		char name[16];
		L[k].n = n;
		snprintf(name, sizeof name, "lo%d", 2 * k);
		L[k].a[0] = node_agent_find(n, name);
		snprintf(name, sizeof name, "lo%d", 2 * k + 1);
		L[k].a[1] = node_agent_find(n, name);
		sem_init(&L[k].sem, 0, 0);
		pthread_create(&L[k].th, NULL, loader_main, &L[k]);
	}
	usleep(200000);   /* the load settles */
	node_stat s0, s1;
	node_stats(n, &s0);
	uint64_t tl0 = now_ns();
	measure(n, hi, count, &l50, &l99, &lmean, &lex);
	double secs = (double)(now_ns() - tl0) / 1e9;
	node_stats(n, &s1);
	for (int k = 0; k < LOADERS; k++) {
		__atomic_store_n(&L[k].stop, 1, __ATOMIC_RELEASE);
		sem_post(&L[k].sem);
	}
	/* Drain: wait for every low request in flight before stopping. */
	for (int k = 0; k < LOADERS; k++)
		pthread_join(L[k].th, NULL);
	for (;;) {
		node_stat s;
		node_stats(n, &s);
		if (!s.disp.queued && !s.disp.running)
			break;
		usleep(1000);
	}
	uint64_t lo_done_n = s1.disp.completed - s0.disp.completed - (uint64_t)count;
	printf("{\"bench\":\"node_prio\",\"rt_prio\":%d,\"workers\":%d,\"requests\":%d,\"lo_batch\":%d,\"lo_run_ms\":%.3f,"
	       "\"hp_unloaded_us\":{\"p50\":%.1f,\"p99\":%.1f,\"mean\":%.1f,\"exec_p50\":%.1f},"
	       "\"hp_loaded_us\":{\"p50\":%.1f,\"p99\":%.1f,\"mean\":%.1f,\"exec_p50\":%.1f},\"p99_ratio\":%.2f,"
	       "\"lo_per_s_during\":%.1f,\"queued_during\":%u}\n",
	       rt, workers, count, batch, lo_ms, u50, u99, umean, uex, l50, l99, lmean, lex, l99 / u99, (double)lo_done_n / secs,
	       s1.disp.queued);
	for (int k = 0; k < LOADERS; k++) {
		node_agent_unref(L[k].a[0]);
		node_agent_unref(L[k].a[1]);
	}
	node_agent_unref(hi);
	node_destroy(n);
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	if (system(cmd))
		return 1;
	free(lin);
	return 0;
}
