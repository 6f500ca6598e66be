/*
 * bench/cpu_aidos.c - the aidos side of `make bench-cpu` (bench/cpu.sh): a
 * long-lived process that loads models through the public API and times
 * runs on command, so that bench/cpu.sh can interleave it with the ONNX
 * Runtime driver (bench/cpu_ort.js), which speaks the same protocol.
 *
 * Commands, one a line on stdin; one answer line each on stdout:
 *   load THREADS MODEL NAME=FILE.npy ...  -> "ok STEPS" | "err MESSAGE"
 *       loads MODEL, creates a session on THREADS threads, reads the inputs
 *       and runs once (plans); replaces the model loaded before
 *   run K         -> "lat NS NS ... cpu NS" (K wall-clock latencies of
 *                    aidos_session_run, CLOCK_MONOTONIC, in ns, then the
 *                    CPU time all of the process's threads used over the K
 *                    runs: on a shared machine, what the runs cost without
 *                    the time other processes held the CPUs)
 *   out DIR       -> "ok N": writes the N outputs of the last run as
 *                    DIR/<output name>.npy
 *   quit          (or end of input)
 * Latencies come from the caller's clock around the whole public call: what
 * an application pays, input checks and plan lookup included.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "aidos/aidos.h"
#include "aidos/npy.h"

#define MAX_INPUTS 16
#define MAX_RUNS 100000

typedef struct bench {
	aidos_model *m;
	aidos_session *s;
	int n_in;
	aidos_tensor in[MAX_INPUTS];
	void *owned[MAX_INPUTS];
	char names[MAX_INPUTS][128];
} bench;

static uint64_t clock_ns(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t now_ns(void)
{
	return clock_ns(CLOCK_MONOTONIC);
}

/* Frees what b holds (session, model, inputs); b is empty afterwards. */
static void bench_clear(bench *b)
{
	if (b->s)
		aidos_session_destroy(b->s);
	if (b->m)
		aidos_model_free(b->m);
	for (int i = 0; i < b->n_in; i++)
		aidos_npy_free(b->owned[i]);
	memset(b, 0, sizeof *b);
}

/* "load THREADS MODEL NAME=FILE ...": 0, or -1 with err filled. */
static int bench_load(bench *b, char *args, char *err, size_t errlen)
{
	bench_clear(b);
	char *save = NULL;
	char *th = strtok_r(args, " \t\n", &save);
	char *path = strtok_r(NULL, " \t\n", &save);
	if (!th || !path) {
		snprintf(err, errlen, "usage: load THREADS MODEL NAME=FILE.npy ...");
		return -1;
	}
	int rc = aidos_model_load(path, &b->m, err, errlen);
	if (rc)
		return -1;
	for (char *kv; (kv = strtok_r(NULL, " \t\n", &save));) {
		char *eq = strchr(kv, '=');
		if (!eq || b->n_in == MAX_INPUTS || (size_t)(eq - kv) >= sizeof b->names[0]) {
			snprintf(err, errlen, "bad input '%s' (NAME=FILE.npy, at most %d)", kv, MAX_INPUTS);
			return -1;
		}
		int i = b->n_in;
		memcpy(b->names[i], kv, (size_t)(eq - kv));
		b->names[i][eq - kv] = 0;
		if (aidos_npy_load(eq + 1, &b->in[i], &b->owned[i], err, errlen))
			return -1;
		b->in[i].name = b->names[i];
		b->n_in++;
	}
	aidos_session_opts o = { .threads = atoi(th) };
	if (aidos_session_create(b->m, &o, &b->s, err, errlen))
		return -1;
	if (aidos_session_run(b->s, b->n_in, b->in)) {
		snprintf(err, errlen, "%s", aidos_session_errmsg(b->s));
		return -1;
	}
	return 0;
}

/* "out DIR": writes every output of the last run; the count, or -1. */
static int bench_out(bench *b, const char *dir, char *err, size_t errlen)
{
	int n = aidos_model_n_outputs(b->m);
	for (int i = 0; i < n; i++) {
		aidos_tensor t;
		char path[4096];
		int rc = aidos_session_output(b->s, i, &t);
		if (!rc) {
			int len = snprintf(path, sizeof path, "%s/%s.npy", dir, t.name);
			rc = len < 0 || (size_t)len >= sizeof path ? -ENAMETOOLONG : aidos_npy_save(path, &t);
		}
		if (rc) {
			snprintf(err, errlen, "output %d: %s", i, aidos_strerror(rc));
			return -1;
		}
	}
	return n;
}

int main(void)
{
	static bench b;
	static uint64_t lat[MAX_RUNS];
	char line[16384], err[512];
	setvbuf(stdout, NULL, _IOLBF, 0);
	while (fgets(line, sizeof line, stdin)) {
		line[strcspn(line, "\n")] = 0;
		err[0] = 0;
		if (!strncmp(line, "load ", 5)) {
			if (bench_load(&b, line + 5, err, sizeof err)) {
				printf("err %s\n", err[0] ? err : "load failed");
				bench_clear(&b);
				continue;
			}
			aidos_plan_stats st;
			aidos_session_stats(b.s, &st);
			printf("ok %d\n", st.steps);
		} else if (!strncmp(line, "run ", 4)) {
			long k = strtol(line + 4, NULL, 10);
			if (!b.s || k < 1 || k > MAX_RUNS) {
				printf("err no model loaded, or K outside 1..%d\n", MAX_RUNS);
				continue;
			}
			int rc = 0;
			uint64_t cpu0 = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
			for (long i = 0; i < k && !rc; i++) {
				uint64_t t0 = now_ns();
				rc = aidos_session_run(b.s, b.n_in, b.in);
				lat[i] = now_ns() - t0;
			}
			uint64_t cpu = clock_ns(CLOCK_PROCESS_CPUTIME_ID) - cpu0;
			if (rc) {
				printf("err %s\n", aidos_session_errmsg(b.s));
				continue;
			}
			fputs("lat", stdout);
			for (long i = 0; i < k; i++)
				printf(" %llu", (unsigned long long)lat[i]);
			printf(" cpu %llu\n", (unsigned long long)cpu);
		} else if (!strncmp(line, "out ", 4)) {
			int n = b.s ? bench_out(&b, line + 4, err, sizeof err) : -1;
			if (n < 0)
				printf("err %s\n", err[0] ? err : "no model loaded");
			else
				printf("ok %d\n", n);
		} else if (!strcmp(line, "quit")) {
			break;
		} else if (line[0]) {
			printf("err unknown command '%s'\n", line);
		}
	}
	bench_clear(&b);
	return 0;
}
