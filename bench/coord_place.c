/*
 * bench/coord_place.c - placement decision latency on the REAL coordinator
 * (coordinator/coord.c, in process): fills its view with N nodes (8 GPUs,
 * 64 cores each, three speeds) and A agents through its own RegisterNode,
 * Place and Heartbeat handlers (nodes answered by an in-process fake that
 * spawns instantly; state kept in memory only), then times
 *   decide: coord_decide(), the decision Place/placer/rebalancer make;
 *   place:  a whole Place call (decision + bookkeeping + fake spawn).
 * Usage: coord_place [--nodes 1000] [--agents 100000] [--samples 2000]
 *                    [--json FILE]
 * Prints one line per figure and, with --json, {"nodes","agents",
 * "decide_p50_us","decide_p99_us","decide_cpu_p99_us","place_p50_us",
 * "place_p99_us"}. Wall-clock percentiles include preemption by whatever
 * else runs on the machine; the thread-CPU-time one does not.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "coordinator/coord.h"
#include "pools/pools.h"
#include "proto/aidos.pb-c.h"

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* The fake node: Spawn answers the agent back, IDLE; everything else OK. */
static int fake_call(void *ctx, const char *addr, const char *method, const ProtobufCMessage *req,
		     const ProtobufCMessageDescriptor *rd, ProtobufCMessage **resp, int deadline_ms, char *err,
		     size_t errlen)
{
	uint8_t *buf;
	size_t n;
	(void)ctx;
	(void)addr;
	(void)deadline_ms;
	if (!strcmp(method, "/aidos.Node/Spawn")) {
		const Aidos__SpawnRequest *q = (const void *)req;
		Aidos__SpawnReply r = AIDOS__SPAWN_REPLY__INIT;
		Aidos__AgentInfo ai = *q->agent;
		ai.state_now = AIDOS__AGENT_STATE__AGENT_IDLE;
		r.agent = &ai;
		n = protobuf_c_message_get_packed_size(&r.base);
		buf = malloc(n + 1);
		protobuf_c_message_pack(&r.base, buf);
	} else {
		n = 0;
		buf = malloc(1);
	}
	*resp = protobuf_c_message_unpack(rd, NULL, n, buf);
	free(buf);
	if (!*resp) {
		snprintf(err, errlen, "fake: cannot build reply");
		return -1;
	}
	return 0;
}

static double cpu_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double q)
{
	qsort(v, (size_t)n, sizeof *v, cmp_d);
	int i = (int)ceil(q * n) - 1;
	return v[i < 0 ? 0 : i];
}

int main(int argc, char **argv)
{
	int nodes = 1000, agents = 100000, samples = 2000;
	const char *json = NULL;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help")) {
			puts("usage: coord_place [--nodes N] [--agents N] [--samples N] [--json FILE]\n"
			     "Times the coordinator's placement decision with a synthetic view of N nodes and N agents.");
			return 0;
		}
		if (i + 1 >= argc) {
			fprintf(stderr, "coord_place: %s needs a value\n", argv[i]);
			return 2;
		}
		if (!strcmp(argv[i], "--nodes"))
			nodes = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--agents"))
			agents = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--samples"))
			samples = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--json"))
			json = argv[++i];
		else {
			fprintf(stderr, "coord_place: unknown option %s\n", argv[i]);
			return 2;
		}
	}
	coord_opts o = { .data_dir = "/nonexistent-memory-only", .memory_only = 1, .quiet = 1,
			 .rebalance = COORD_REBALANCE_OFF, .node_call = fake_call };
	coord *c;
	char err[512], name[64], addr[64], node[64];
	ProtobufCMessage *resp;
	if (coord_create(&o, &c, err, sizeof err)) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	double t0 = now_us();
	Aidos__Device cpu = AIDOS__DEVICE__INIT, gpu[8];
	cpu.kind = "cpu";
	cpu.name = "cpu";
	cpu.cores = 64;
	for (int i = 0; i < nodes; i++) {
		Aidos__RegisterNodeRequest rq = AIDOS__REGISTER_NODE_REQUEST__INIT;
		Aidos__NodeInfo ni = AIDOS__NODE_INFO__INIT;
		Aidos__Device *devs[9] = { &cpu };
		for (int g = 0; g < 8; g++) {
			aidos__device__init(&gpu[g]);
			gpu[g].kind = "cuda";
			gpu[g].name = "gpu";
			gpu[g].mem_bytes = 80ull << 30;
			devs[1 + g] = &gpu[g];
		}
		snprintf(name, sizeof name, "node%04d", i);
		snprintf(addr, sizeof addr, "10.0.%d.%d:7701", i / 250, i % 250);
		ni.name = name;
		ni.rpc_addr = addr;
		ni.devices = devs;
		ni.n_devices = 9;
		ni.mem_total = 2048ull << 30;
		ni.mem_free = 2048ull << 30;
		rq.node = &ni;
		if (coord_call(c, "/aidos.Coordinator/RegisterNode", &rq.base, &resp, err, sizeof err)) {
			fprintf(stderr, "register: %s\n", err);
			return 1;
		}
		coord_reply_free(resp);
	}
	double t1 = now_us();
	double *place = malloc(sizeof(double) * (size_t)(samples > 0 ? samples : 1));
	double *dec = malloc(sizeof(double) * (size_t)(samples > 0 ? samples : 1));
	double *cpt = malloc(sizeof(double) * (size_t)(samples > 0 ? samples : 1));
	int np = 0;
	for (int i = 0; i < agents; i++) {
		Aidos__PlaceRequest rq = AIDOS__PLACE_REQUEST__INIT;
		Aidos__AgentInfo ai = AIDOS__AGENT_INFO__INIT;
		snprintf(name, sizeof name, "agent%06d", i);
		char model[64];
		snprintf(model, sizeof model, "/models/m%03d.onnx", i % 300);
		ai.name = name;
		ai.model_path = model;
		ai.priority = i % 10 == 0 ? 200 : i % 3 ? 0 : 50;
		ai.device = "cuda";
		ai.mem_bytes = (uint64_t)(1 + i % 7) << 30;
		rq.agent = &ai;
		double s = now_us();
		if (coord_call(c, "/aidos.Coordinator/Place", &rq.base, &resp, err, sizeof err)) {
			fprintf(stderr, "place %s: %s\n", name, err);
			return 1;
		}
		double e = now_us() - s;
		if (i >= agents - samples && np < samples)
			place[np++] = e;
		coord_reply_free(resp);
	}
	double t2 = now_us();
	/* decisions for agents spread over the directory */
	for (int i = 0; i < samples; i++) {
		snprintf(name, sizeof name, "agent%06d", (int)(((uint64_t)i * 7919u) % (uint64_t)agents));
		double s = now_us(), sc = cpu_us();
		if (coord_decide(c, name, node, sizeof node, err, sizeof err)) {
			fprintf(stderr, "decide %s: %s\n", name, err);
			return 1;
		}
		cpt[i] = cpu_us() - sc;
		dec[i] = now_us() - s;
	}
	double d50 = pct(dec, samples, 0.5), d99 = pct(dec, samples, 0.99);
	double c50 = pct(cpt, samples, 0.5), c99 = pct(cpt, samples, 0.99);
	double p50 = pct(place, np, 0.5), p99 = pct(place, np, 0.99);
	printf("coord_place: %d nodes, %d agents (register %.1f s, place all %.1f s)\n", nodes, agents,
	       (t1 - t0) / 1e6, (t2 - t1) / 1e6);
	printf("decide (coord_decide, %d samples): p50 %.1f us  p99 %.1f us\n", samples, d50, d99);
	printf("decide CPU time (thread clock, without preemption): p50 %.1f us  p99 %.1f us\n", c50, c99);
	printf("place  (whole Place call, last %d): p50 %.1f us  p99 %.1f us\n", np, p50, p99);
	if (json) {
		FILE *f = fopen(json, "w");
		if (!f) {
			perror(json);
			return 1;
		}
		fprintf(f, "{\"nodes\": %d, \"agents\": %d, \"decide_p50_us\": %.2f, \"decide_p99_us\": %.2f, "
			   "\"decide_cpu_p99_us\": %.2f, \"place_p50_us\": %.2f, \"place_p99_us\": %.2f}\n",
			nodes, agents, d50, d99, c99, p50, p99);
		fclose(f);
	}
	free(place);
	free(dec);
	free(cpt);
	coord_destroy(c);
	return 0;
}
