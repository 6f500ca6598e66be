/*
 * sched/sched.h - scheduling policy: pure functions, no I/O, testable in
 * simulation. The coordinator calls sched_place() with its view of the
 * cluster; nodes will call the dispatcher policy (a later issue).
 */
#ifndef AIDOS_SCHED_H
#define AIDOS_SCHED_H

#include <stddef.h>
#include <stdint.h>

/* What the policy knows of one node. */
typedef struct sched_node {
	const char *name;
	int ready;             /* accepting agents (not dead, not draining) */
	int has_gpu;
	uint64_t mem_free;     /* bytes */
	uint32_t queue_len;    /* requests waiting */
	uint32_t n_agents;
} sched_node;

/* What an agent needs. */
typedef struct sched_agent {
	const char *name;
	uint64_t mem_bytes;    /* estimate: weights + arena + state */
	int needs_gpu;
	int priority;
	const char *pinned;    /* operator pin: only this node, NULL for any */
	const char *exclude;   /* never this node (migration source, dead node), NULL */
} sched_agent;

/* Chooses a node for agent a among nodes[0..n): it must be ready, fit the
 * memory and the device (a pin overrides load but not fit); among those the
 * least loaded (queue length, then agent count, then most free memory, then
 * name for determinism). Returns the index, or -1 with why (one line: which
 * constraint ruled out every node) filled. */
int sched_place(const sched_node *nodes, int n, const sched_agent *a, char *why, size_t whylen);

#endif
