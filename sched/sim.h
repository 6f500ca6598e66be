/*
 * sched/sim.h - a discrete-event model of a cluster that drives the real
 * placement policy (sched/sched.h) and three baselines, for `make sim`
 * (bench/sim.c) and tests/test_sched.c (quick mode).
 *
 *   sched_sim_cfg cfg;  sched_sim_cfg_default(&cfg, 0);   // 1 for --quick
 *   sched_sim_result r;  char err[256];
 *   if (sched_sim_run(&cfg, SCHED_SIM_AIDOS, &r, err, sizeof err)) ...
 *
 * The model (docs/scheduling.md says it in prose): nodes with 8 GPUs of one
 * of three generations (speed 1.0, 1.35, 1.8) and CPU workers; models with
 * lognormal GPU latency and memory, drawn Zipf-popular; agents with Pareto
 * request rates, on/off bursts, three priority classes with SLOs, arriving
 * as a Poisson process; each node dispatches by priority (non-preemptive,
 * FIFO within a class) on its GPUs or CPUs; nodes fail (Poisson) and come
 * back; agents of a failed node are placed again by the same policy.
 * Deterministic for a seed (decision latency aside: it is wall-clock).
 */
#ifndef AIDOS_SCHED_SIM_H
#define AIDOS_SCHED_SIM_H

#include <stddef.h>
#include <stdint.h>

enum {
	SCHED_SIM_RANDOM = 0,
	SCHED_SIM_ROUND_ROBIN = 1,
	SCHED_SIM_LEAST_LOADED = 2,
	SCHED_SIM_AIDOS = 3,
	SCHED_SIM_N = 4
};

typedef struct sched_sim_cfg {
	int nodes;              /* 1000 */
	int gpus_per_node;      /* 8 */
	int cpus_per_node;      /* CPU inference workers, 16 */
	int agents;             /* 100000 */
	int models;             /* distinct models, 300 */
	double gpu_mem_gib;     /* per GPU, 80 */
	double duration_s;      /* simulated time, 240 */
	double arrive_s;        /* agents arrive within [0, arrive_s), 40 */
	double load;            /* offered GPU work / GPU capacity (speed-weighted), 0.6 */
	double fail_per_node_hour; /* node failure rate, 0.05 */
	double down_s;          /* a failed node comes back after, 60 */
	double rebalance_s;     /* period of the rebalancer's checks (aidos), 5 */
	int rebalance;          /* 1: the aidos policy rebalances */
	uint64_t seed;
} sched_sim_cfg;

typedef struct sched_sim_result {
	double p50_ms, p99_ms;       /* request latency after arrive_s, served requests */
	double slo_attainment;       /* requests within their agent's SLO / requests (drops miss) */
	double gpu_util;             /* busy GPU time / GPU time of live nodes, after arrive_s */
	double migrations_per_agent_hour; /* agent moves (rebalance + failure) per agent-hour */
	double decision_p50_us, decision_p99_us; /* wall clock of each policy call */
	double hi_p99_ms, hi_slo;    /* the high-priority class alone */
	double cpu_fallback;         /* share of agents placed on a CPU */
	uint64_t requests, dropped, migrations, failures, decisions, events;
	double wall_s;
} sched_sim_result;

/* Defaults: the full model (1,000 nodes x 8 GPUs, 100,000 agents), or with
 * quick a scaled-down one (100 nodes, 10,000 agents, 60 s) for tests. */
void sched_sim_cfg_default(sched_sim_cfg *cfg, int quick);

/* "random", "round_robin", "least_loaded", "aidos"; NULL out of range. */
const char *sched_sim_policy_name(int policy);

/* Runs one simulation of policy. Errors: AIDOS_E_INVALID (bad cfg),
 * AIDOS_E_NOMEM. err gets one line. Not thread-safe with itself only in
 * the sense that each call owns its state; calls may run in parallel. */
int sched_sim_run(const sched_sim_cfg *cfg, int policy, sched_sim_result *out, char *err, size_t errlen);

#endif
