/*
 * bench/ipc_prio.c - high-priority latency through the REAL local-client
 * path (unix socket, shared-memory rings, poller, dispatcher), unloaded
 * and while other clients flood low-priority agents. A measurement, not a
 * test: prints one JSON object.
 *
 *   ipc_prio MODELS_DIR [--n N] [--rounds R] [--loaders L] [--workers W] [--lo-batch B]
 *
 * The node (node/node.h, standalone, no gRPC) and its socket server
 * (node/ipc.c + node/ipc_node.c, as aidos-node runs them) live in this
 * process; every request goes through aidos_client (include/aidos/client.h)
 * on its own connection. Agents: "hi" = hey_jarvis (priority 10), lo0..lo3
 * = the openWakeWord embedding model on B x 76 x 32 x 1 (priority 1).
 * Load: L client threads (default 4), each its own connection, sending
 * low-priority requests back to back. Latency: the high-priority client's
 * aidos_client_infer, 200 us apart. The two phases interleave: R rounds
 * (default 10) of N/R unloaded requests (loaders paused, none of their
 * requests in flight), then N/R loaded ones, so a burst from another
 * process on the shared machine lands in either phase alike instead of
 * deciding the ratio; each phase's percentiles are over all its N
 * requests. "machine_load": /proc/loadavg's
 * 1-minute figure at the start (other processes inflate both p99s; the
 * node's lower classes run SCHED_IDLE, so they also slow the load down:
 * read lo_per_s_during). AIDOS_IDLE_CLASS=0 measures without SCHED_IDLE.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "aidos/client.h"
#include "node/ipc.h"
#include "node/node.h"

#define MAX_LOADERS 16

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

static char sock[300];
static int batch = 4;
/* Loaders hold off while paused (the unloaded phase), asleep on pause_cv. */
static pthread_mutex_t pause_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pause_cv = PTHREAD_COND_INITIALIZER;
static int paused;

typedef struct loader {
	int k;
	int stop;               /* atomic */
	int ready;              /* atomic: its first request came back */
	int idle;               /* atomic: paused with no request in flight */
	uint64_t done, errors;
	pthread_t th;
} loader;

/* One flooding client: back-to-back requests on lo(2k % 4), lo(2k+1 % 4). */
static void *loader_main(void *arg)
{
	loader *l = arg;
	aidos_client *c;
	char err[512], name[2][16];
	if (aidos_client_connect(sock, NULL, &c, err, sizeof err)) {
		fprintf(stderr, "ipc_prio: loader: %s\n", err);
		__atomic_store_n(&l->ready, 1, __ATOMIC_RELEASE);
		return NULL;
	}
	snprintf(name[0], sizeof name[0], "lo%d", (2 * l->k) % 4);
	snprintf(name[1], sizeof name[1], "lo%d", (2 * l->k + 1) % 4);
	aidos_tensor x = { .name = "input_1", .dtype = AIDOS_DT_FLOAT, .rank = 4, .dims = { batch, 76, 32, 1 } };
	if (aidos_client_tensor_alloc(c, &x)) {
		fprintf(stderr, "ipc_prio: loader: heap full\n");
		aidos_client_close(c);
		__atomic_store_n(&l->ready, 1, __ATOMIC_RELEASE);
		return NULL;
	}
	float *f = x.data;
	for (int i = 0; i < batch * 76 * 32; i++)
		f[i] = (float)(i % 7) / 7.0f;
	aidos_tensor out[2];
	int nout;
	for (uint64_t i = 0; !__atomic_load_n(&l->stop, __ATOMIC_ACQUIRE); i++) {
		if (__atomic_load_n(&l->ready, __ATOMIC_ACQUIRE)) {
			pthread_mutex_lock(&pause_mu);
			while (paused && !__atomic_load_n(&l->stop, __ATOMIC_ACQUIRE)) {
				__atomic_store_n(&l->idle, 1, __ATOMIC_RELEASE);
				pthread_cond_wait(&pause_cv, &pause_mu);
			}
			__atomic_store_n(&l->idle, 0, __ATOMIC_RELEASE);
			pthread_mutex_unlock(&pause_mu);
			if (__atomic_load_n(&l->stop, __ATOMIC_ACQUIRE))
				break;
		}
		int rc = aidos_client_infer(c, name[i & 1], 1, &x, &nout, out, 2, err, sizeof err);
		if (rc && rc != AIDOS_E_BUSY && !l->errors++)
			fprintf(stderr, "ipc_prio: low-priority request: %s\n", err);
		l->done += !rc;
		__atomic_store_n(&l->ready, 1, __ATOMIC_RELEASE);
	}
	aidos_client_tensor_free(c, &x);
	aidos_client_close(c);
	return NULL;
}

/* count high-priority requests 200 us apart; their latencies (ns) go to
 * lat[0..count). Returns the number that failed. */
static int measure(aidos_client *c, aidos_tensor *x, int count, uint64_t *lat)
{
	aidos_tensor out[2];
	char err[512];
	int nout, bad = 0;
	for (int i = 0; i < count; i++) {
		uint64_t t0 = now_ns();
		int rc = aidos_client_infer(c, "hi", 1, x, &nout, out, 2, err, sizeof err);
		lat[i] = now_ns() - t0;
		if (rc && !bad++)
			fprintf(stderr, "ipc_prio: high-priority request: %s\n", err);
		usleep(200);
	}
	return bad;
}

/* p50, p99 and mean (us) of lat[0..count), which it sorts. */
static void pct(uint64_t *lat, int count, double *p50, double *p99, double *mean)
{
	double sum = 0;
	for (int i = 0; i < count; i++)
		sum += (double)lat[i];
	qsort(lat, (size_t)count, sizeof *lat, cmp_u64);
	*p50 = (double)lat[count / 2] / 1e3;
	*p99 = (double)lat[(size_t)count * 99 / 100] / 1e3;
	*mean = sum / count / 1e3;
}

/* Pauses (1) or resumes (0) the loaders; pausing waits until none has a
 * request in flight. */
static void set_paused(loader *L, int nload, int on)
{
	pthread_mutex_lock(&pause_mu);
	paused = on;
	pthread_cond_broadcast(&pause_cv);
	pthread_mutex_unlock(&pause_mu);
	for (int k = 0; on && k < nload; k++)
		while (!__atomic_load_n(&L[k].idle, __ATOMIC_ACQUIRE))
			usleep(200);
}

int main(int argc, char **argv)
{
	int count = 2000, workers = 2, nload = 4, rounds = 10;
	char dir[] = "/tmp/aidos-bench-ipcprio-XXXXXX", err[600], jarvis[600], emb[600], ddir[400];
	if (argc < 2) {
		fprintf(stderr, "usage: ipc_prio MODELS_DIR [--n N] [--rounds R] [--loaders L] [--workers W] [--lo-batch B]\n");
		return 2;
	}
	for (int i = 2; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--n"))
			count = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--rounds"))
			rounds = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--workers"))
			workers = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--loaders"))
			nload = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--lo-batch"))
			batch = atoi(argv[i + 1]);
	}
	if (count < 100 || rounds < 1 || count / rounds < 10 || workers < 1 || batch < 1 || batch > 64 || nload < 1 || nload > MAX_LOADERS) {
		fprintf(stderr, "ipc_prio: bad arguments\n");
		return 2;
	}
	snprintf(jarvis, sizeof jarvis, "%s/openwakeword/hey_jarvis_v0.1.onnx", argv[1]);
	snprintf(emb, sizeof emb, "%s/openwakeword/embedding_model.onnx", argv[1]);
	if (access(jarvis, R_OK) || access(emb, R_OK)) {
		printf("{\"bench\":\"ipc_prio\",\"skipped\":\"models missing under %s\"}\n", argv[1]);
		return 0;
	}
	double mload = -1;
	FILE *lf = fopen("/proc/loadavg", "r");
	if (lf) {
		if (fscanf(lf, "%lf", &mload) != 1)
			mload = -1;
		fclose(lf);
	}
	if (!mkdtemp(dir))
		return 1;
	snprintf(ddir, sizeof ddir, "%s/data", dir);
	snprintf(sock, sizeof sock, "%s/node.sock", dir);

	node_opts o = { .name = "bench", .data_dir = ddir, .no_grpc = 1, .run_workers = workers };
	node *n;
	ipc_node *in;
	ipc_server *srv;
	ipc_ops ops;
	ipc_opts io = { .path = sock };
	if (node_create(&o, &n, err, sizeof err) || node_start(n, err, sizeof err) ||
	    ipc_node_create(n, &in, err, sizeof err) || (ipc_node_ops(in, &ops), 0) ||
	    ipc_server_create(&io, &ops, &srv, err, sizeof err) || ipc_server_start(srv, err, sizeof err)) {
		fprintf(stderr, "ipc_prio: %s\n", err);
		return 1;
	}
	aidos_client *c;
	if (aidos_client_connect(sock, NULL, &c, err, sizeof err)) {
		fprintf(stderr, "ipc_prio: %s\n", err);
		return 1;
	}
	aidos_client_spawn_opts hs = { .name = "hi", .model = jarvis, .priority = 10 };
	if (aidos_client_spawn(c, &hs, err, sizeof err)) {
		fprintf(stderr, "ipc_prio: %s\n", err);
		return 1;
	}
	for (int i = 0; i < 4; i++) {
		char name[16];
		snprintf(name, sizeof name, "lo%d", i);
		aidos_client_spawn_opts ls = { .name = name, .model = emb, .priority = 1 };
		if (aidos_client_spawn(c, &ls, err, sizeof err)) {
			fprintf(stderr, "ipc_prio: %s\n", err);
			return 1;
		}
	}
	aidos_tensor x = { .name = "x.1", .dtype = AIDOS_DT_FLOAT, .rank = 3, .dims = { 1, 16, 96 } };
	if (aidos_client_tensor_alloc(c, &x))
		return 1;
	float *f = x.data;
	for (int i = 0; i < 16 * 96; i++)
		f[i] = (float)(i % 13) / 13.0f;

	double u50, u99, umean, l50, l99, lmean;
	int per = count / rounds;
	count = per * rounds;
	uint64_t *ulat = malloc((size_t)count * sizeof *ulat), *llat = malloc((size_t)count * sizeof *llat);
	if (!ulat || !llat)
		return 1;
	int bad = measure(c, &x, per, ulat);   /* warm-up */

	static loader L[MAX_LOADERS];
	for (int k = 0; k < nload; k++) {
		L[k].k = k;
		pthread_create(&L[k].th, NULL, loader_main, &L[k]);
	}
	for (int k = 0; k < nload; k++)
		while (!__atomic_load_n(&L[k].ready, __ATOMIC_ACQUIRE))
			usleep(1000);
	uint64_t done = 0, loaded_ns = 0;
	node_stat s1;
	for (int r = 0; r < rounds; r++) {
		set_paused(L, nload, 1);
		bad += measure(c, &x, per, ulat + (size_t)r * per);
		set_paused(L, nload, 0);
		usleep(50000);   /* the load settles */
		uint64_t d0 = 0, d1 = 0;
		for (int k = 0; k < nload; k++)
			d0 += __atomic_load_n(&L[k].done, __ATOMIC_RELAXED);
		uint64_t t0 = now_ns();
		bad += measure(c, &x, per, llat + (size_t)r * per);
		loaded_ns += now_ns() - t0;
		node_stats(n, &s1);
		for (int k = 0; k < nload; k++)
			d1 += __atomic_load_n(&L[k].done, __ATOMIC_RELAXED);
		done += d1 - d0;
	}
	double secs = (double)loaded_ns / 1e9;
	pct(ulat, count, &u50, &u99, &umean);
	pct(llat, count, &l50, &l99, &lmean);
	free(ulat);
	free(llat);
	for (int k = 0; k < nload; k++)
		__atomic_store_n(&L[k].stop, 1, __ATOMIC_RELEASE);
	set_paused(L, 0, 0);   /* wakes the paused ones to see stop */
	for (int k = 0; k < nload; k++)
		pthread_join(L[k].th, NULL);
	printf("{\"bench\":\"ipc_prio\",\"path\":\"socket+rings\",\"workers\":%d,\"loaders\":%d,\"rounds\":%d,\"requests\":%d,"
	       "\"lo_batch\":%d,\"hp_unloaded_us\":{\"p50\":%.1f,\"p99\":%.1f,\"mean\":%.1f},"
	       "\"hp_loaded_us\":{\"p50\":%.1f,\"p99\":%.1f,\"mean\":%.1f},\"p99_ratio\":%.2f,"
	       "\"lo_per_s_during\":%.1f,\"lo_queued_end\":%u,\"errors\":%d,\"machine_load\":%.2f}\n",
	       workers, nload, rounds, count, batch, u50, u99, umean, l50, l99, lmean, l99 / u99, (double)done / secs,
	       s1.disp.queued, bad, mload);
	aidos_client_tensor_free(c, &x);
	aidos_client_close(c);
	ipc_server_destroy(srv);
	ipc_node_destroy(in);
	node_destroy(n);
	snprintf(err, sizeof err, "rm -rf '%s'", dir);
	if (system(err))
		return 1;
	return 0;
}
