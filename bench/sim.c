/*
 * bench/sim.c - `make sim`: runs the cluster model of sched/sim.h for the
 * four policies and writes bench/results/sim-latest.json (and, with --tsv,
 * a table gnuplot reads). Usage:
 *   build/bench/sim [--quick] [--out FILE.json] [--tsv FILE] [--seed N]
 *                   [--nodes N] [--agents N] [--duration S] [--load X]
 *                   [--rebalance on|off] [--policy NAME]
 * Prints one line per policy and the JSON path.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched/sim.h"

static void usage(FILE *f)
{
	fputs("usage: sim [--quick] [--out FILE.json] [--tsv FILE] [--seed N] [--nodes N] [--agents N]\n"
	      "           [--duration S] [--load X] [--rebalance on|off] [--policy NAME]\n"
	      "Simulates a cluster (default 1,000 nodes x 8 GPUs, 100,000 agents) under the policies\n"
	      "random, round_robin, least_loaded and aidos (the real sched/place.c), and writes\n"
	      "{\"policies\": {name: {p50_ms, p99_ms, slo_attainment, gpu_util, migrations_per_agent_hour}},\n"
	      " \"decision_p99_us\", \"nodes\", \"agents\"} to FILE.json (default bench/results/sim-latest.json).\n",
	      f);
}

int main(int argc, char **argv)
{
	sched_sim_cfg cfg;
	const char *out = "bench/results/sim-latest.json", *tsv = NULL, *only = NULL;
	int quick = 0;
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--quick"))
			quick = 1;
	sched_sim_cfg_default(&cfg, quick);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--quick"))
			continue;
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		}
		if (!v) {
			fprintf(stderr, "sim: %s needs a value (--help)\n", a);
			return 2;
		}
		i++;
		if (!strcmp(a, "--out"))
			out = v;
		else if (!strcmp(a, "--tsv"))
			tsv = v;
		else if (!strcmp(a, "--seed"))
			cfg.seed = strtoull(v, NULL, 0);
		else if (!strcmp(a, "--nodes"))
			cfg.nodes = atoi(v);
		else if (!strcmp(a, "--agents"))
			cfg.agents = atoi(v);
		else if (!strcmp(a, "--duration"))
			cfg.duration_s = atof(v);
		else if (!strcmp(a, "--load"))
			cfg.load = atof(v);
		else if (!strcmp(a, "--rebalance"))
			cfg.rebalance = !strcmp(v, "on");
		else if (!strcmp(a, "--policy"))
			only = v;
		else {
			fprintf(stderr, "sim: unknown option %s (--help)\n", a);
			return 2;
		}
	}
	sched_sim_result r[SCHED_SIM_N];
	int ran[SCHED_SIM_N] = { 0 };
	double dec_p99 = 0;
	printf("nodes=%d gpus/node=%d agents=%d duration=%.0fs load=%.2f seed=%llu\n", cfg.nodes, cfg.gpus_per_node,
	       cfg.agents, cfg.duration_s, cfg.load, (unsigned long long)cfg.seed);
	printf("%-13s %9s %9s %7s %7s %8s %9s %9s %8s %8s %10s %6s %6s\n", "policy", "p50_ms", "p99_ms", "slo", "gpu",
	       "mig/a-h", "dec_p50us", "dec_p99us", "hi_p99", "hi_slo", "requests", "wall_s", "cpu_pl");
	for (int p = 0; p < SCHED_SIM_N; p++) {
		char err[256];
		if (only && strcmp(only, sched_sim_policy_name(p)))
			continue;
		if (sched_sim_run(&cfg, p, &r[p], err, sizeof err)) {
			fprintf(stderr, "%s\n", err);
			return 1;
		}
		ran[p] = 1;
		if (p == SCHED_SIM_AIDOS)
			dec_p99 = r[p].decision_p99_us;
		printf("%-13s %9.2f %9.2f %7.4f %7.4f %8.3f %9.2f %9.2f %8.2f %8.4f %10llu %6.1f %6.3f\n",
		       sched_sim_policy_name(p), r[p].p50_ms, r[p].p99_ms, r[p].slo_attainment, r[p].gpu_util,
		       r[p].migrations_per_agent_hour, r[p].decision_p50_us, r[p].decision_p99_us, r[p].hi_p99_ms,
		       r[p].hi_slo, (unsigned long long)r[p].requests, r[p].wall_s, r[p].cpu_fallback);
		fflush(stdout);
	}
	FILE *f = fopen(out, "w");
	if (!f) {
		perror(out);
		return 1;
	}
	fprintf(f, "{\"policies\": {");
	int first = 1;
	for (int p = 0; p < SCHED_SIM_N; p++) {
		if (!ran[p])
			continue;
		fprintf(f, "%s\"%s\": {\"p50_ms\": %.3f, \"p99_ms\": %.3f, \"slo_attainment\": %.5f, \"gpu_util\": %.5f, "
			   "\"migrations_per_agent_hour\": %.5f}",
			first ? "" : ", ", sched_sim_policy_name(p), r[p].p50_ms, r[p].p99_ms, r[p].slo_attainment,
			r[p].gpu_util, r[p].migrations_per_agent_hour);
		first = 0;
	}
	fprintf(f, "}, \"decision_p99_us\": %.3f, \"nodes\": %d, \"agents\": %d}\n", dec_p99, cfg.nodes, cfg.agents);
	if (fclose(f)) {
		perror(out);
		return 1;
	}
	if (tsv && (f = fopen(tsv, "w"))) {
		fprintf(f, "policy\tp50_ms\tp99_ms\tslo\tgpu_util\tmig\tdec_p50_us\tdec_p99_us\thi_p99_ms\thi_slo\n");
		for (int p = 0; p < SCHED_SIM_N; p++)
			if (ran[p])
				fprintf(f, "%s\t%.3f\t%.3f\t%.5f\t%.5f\t%.5f\t%.3f\t%.3f\t%.3f\t%.5f\n", sched_sim_policy_name(p),
					r[p].p50_ms, r[p].p99_ms, r[p].slo_attainment, r[p].gpu_util,
					r[p].migrations_per_agent_hour, r[p].decision_p50_us, r[p].decision_p99_us,
					r[p].hi_p99_ms, r[p].hi_slo);
		fclose(f);
	}
	printf("wrote %s\n", out);
	return 0;
}
