/*
 * hal/plan.h - plans: a graph specialised to input shapes, ready to run.
 *
 * hal_plan_build() walks the graph once in topological order. For each node
 * it resolves the inputs, asks the kernel to infer output shapes, and folds
 * the node when its value is known at plan time (every input constant, or
 * the kernel computed it). What is left becomes a flat array of steps. Then
 * every activation gets an offset in one arena from its lifetime [defining
 * step, last reading step] (greedy best-fit by size, largest first), so a
 * request touches only memory reserved here.
 *
 * Subgraphs (If branches) are child plans with their own arenas; a name a
 * child does not define resolves in its parent, and the parent keeps that
 * value alive until the step that owns the child.
 */
#ifndef AIDOS_HAL_PLAN_H
#define AIDOS_HAL_PLAN_H

#include "hal/hal.h"
#include "hal/ir.h"
#include "hal/model.h"
#include "pools/pools.h"

enum hal_value_kind {
	HAL_VAL_INPUT = 1,   /* bound by the caller per run (or by the If/Loop owner) */
	HAL_VAL_CONST = 2,   /* initializer, Constant, or folded */
	HAL_VAL_ACT = 3,     /* computed per run, lives in the arena */
	HAL_VAL_FUSED = 4,   /* computed per run inside a fused step, never stored */
};

typedef struct hal_value {
	const char *name;
	hal_tensor t;
	int kind;
	int def;             /* run step that writes it (-1: before the first) */
	int last;            /* last run step that reads it */
	int alias;           /* index of the value whose bytes it shares, -1 */
	size_t offset;       /* in the arena (ACT roots) */
	/* Provenance for value-keyed inputs (top-level plans only): bit i set
	 * when the value depends on the VALUE of graph input i; from_in when it
	 * would fold to a constant if those inputs were constants (it is an
	 * input, or a pure op's output whose inputs are constants or from_in). */
	uint64_t src;
	uint8_t from_in;
} hal_value;

typedef struct hal_threadpool hal_threadpool;

typedef struct hal_plan {
	struct hal_plan *parent;
	struct hal_plan *children;  /* control-flow sub-plans, freed with us */
	struct hal_plan *next_child;
	int parent_step;           /* run index of the parent's step that owns us */
	const ir_graph *g;
	const struct aidos_model *model;
	int opset;
	hal_threadpool *tp;
	size_t mem_limit;          /* bytes one tensor, a folded value or the arena may take */

	hal_value *val;            /* capacity fixed at build: pointers stay valid */
	int n_val, cap_val;
	int *hash;                 /* open addressing over val, -1 empty */
	int hash_cap;

	hal_step *step;            /* steps that run per request, in order */
	int n_step, cap_step;
	int n_folded;

	int n_out;
	hal_tensor **out;          /* graph outputs */
	int n_in;
	hal_value **in;            /* graph inputs (not initializers) */

	ir_mem mem;                /* params, folded values, pointer arrays */
	pool_arena arena;
	size_t naive_bytes;
	/* Per-step profile (AIDOS_PROFILE set when the plan was built): run
	 * count and nanoseconds per step, printed by hal_plan_free(). NULL
	 * otherwise, and the run loop then reads no clock. */
	uint64_t *prof_ns;
	uint64_t prof_runs;
	/* Top-level plan: the graph inputs whose values a kernel needed at plan
	 * time (hal_need_value) and could have had by folding them; a failed
	 * build with need_in set can be retried with those inputs value-keyed. */
	uint64_t need_in;
	char err[512];
} hal_plan;

/* The value of plan p whose tensor is t (every step's in/out slot of p
 * points at one), or NULL when t is NULL or belongs to another plan (an
 * enclosing one, or model-owned bytes). */
static inline hal_value *hal_plan_value(hal_plan *p, const hal_tensor *t)
{
	hal_value *v = t ? (hal_value *)(void *)((char *)t - offsetof(hal_value, t)) : NULL;
	return v && v >= p->val && v < p->val + p->n_val ? v : NULL;
}

/* Input shapes for the top graph, by name. value, when not NULL, makes the
 * input "value-keyed": the plan copies its hal_nbytes() bytes and treats it
 * as a constant (folded like an initializer, not bound per run); the plan is
 * then valid only for requests carrying these same values. */
typedef struct hal_input_shape {
	const char *name;
	int dtype;
	int rank;
	const int64_t *dims;
	const void *value;
} hal_input_shape;

/* Most graph inputs a top-level plan tracks for value keying (bits of
 * hal_value.src); the session takes at most this many inputs anyway. */
#define HAL_PLAN_MAX_KEYED_INPUTS 64

/* Builds a plan for graph g. For a subgraph, parent is the enclosing plan
 * (which then owns the child and frees it) and parent_step the run index of
 * the owning step; inputs are the subgraph's formal inputs (may be 0). On
 * error returns a code with the message in err; a top-level *out is still
 * set and must be freed, and its need_in names the inputs (bit i: in[i])
 * that planning would need as values (0: none would help). */
int hal_plan_build(const struct aidos_model *m, const ir_graph *g, hal_plan *parent, int parent_step,
		   int opset, hal_threadpool *tp, size_t mem_limit, int n_in, const hal_input_shape *in,
		   hal_plan **out, char *err, size_t errlen);
void hal_plan_free(hal_plan *p);

/* Runs every step. Inputs must already be bound (their t.data set). On error
 * the message is in p->err. No allocation. */
int hal_plan_run(hal_plan *p);

/* Elementwise kernels as plan-time fusion sees them (hal/ops/elementwise.c):
 * o[i] = f(in[0][i * st[0]], in[1][i * st[1]]) for i < n, st[k] 0 or 1. */
typedef void (*hal_ew_fn)(void *o, const void *const *in, const int64_t *st, int64_t n,
			  const void *arg);
/* When step s (planned, not run) is a float32 unary or binary elementwise op
 * (or Clip with constant bounds) whose inputs each have the output's shape or
 * one element, sets its kernel and argument (valid while the plan lives) and
 * returns its input count (1 or 2); else -1. The kernel then computes any
 * sub-range of the output from the same sub-range of the inputs. */
int hal_ew_kernel(hal_step *s, hal_ew_fn *fn, const void **arg);

/* Plan-time fusion. A pass runs after every node is planned and before the
 * arena is placed; it replaces a step with one that does the work of it and
 * of later steps, sets those later steps' op to NULL, and marks values no
 * longer stored HAL_VAL_FUSED. hal_plan_drop_merged then removes the NULL
 * steps and renumbers def/last (a merged step's reads and writes now happen
 * at the kept step before it). Both return 0 or AIDOS_E_NOMEM. */
int hal_fuse_xfmr(hal_plan *p);        /* hal/fuse_xfmr.c: LayerNorm patterns */
/* hal/fuse_conv.c: a 1x1 expand Conv (or a 3x3 stride-2 stem) then the 3x3
 * depthwise Conv that is its only reader as one step that keeps the expanded tensor in a ring of
 * rows (hal/ops/conv_fused.h). */
int hal_fuse_conv_plan(hal_plan *p);
int hal_plan_drop_merged(hal_plan *p);

/* Thread pool (hal/threadpool.c): threads - 1 workers; 1 means inline.
 * Returns 0, AIDOS_E_RANGE (threads > 256), AIDOS_E_NOMEM or -errno from
 * pthread_create. Workers are pinned as hal_threadpool_create_pinned(threads,
 * -1, out) does. Thread-safe (several pools may be created at once). */
int hal_threadpool_create(int threads, hal_threadpool **out);
/* As hal_threadpool_create, with the workers' placement: pin 1 pins each
 * worker to one CPU of the calling thread's affinity mask (not the caller's
 * current CPU while the mask has one per worker besides it; CPUs taken from
 * a process-wide rotation so several pools spread out; a 1-CPU mask pins
 * nothing), 0 leaves them to the kernel, -1 pins unless the environment has
 * AIDOS_POOL_PIN=0. Affinity is set once, at thread creation. */
int hal_threadpool_create_pinned(int threads, int pin, hal_threadpool **out);
/* The CPU thread i (1 .. size-1: the workers; 0 is the caller) is pinned to
 * now (a worker moves off the caller's CPU: hal_threadpool_moves), or -1
 * (not pinned, out of range, or tp NULL). */
int hal_threadpool_worker_cpu(const hal_threadpool *tp, int i);
void hal_threadpool_destroy(hal_threadpool *tp);
int hal_threadpool_size(const hal_threadpool *tp);
/* Brackets a request: workers spin through its gaps instead of sleeping;
 * the idle spin counts from its end. */
void hal_threadpool_begin(hal_threadpool *tp);
void hal_threadpool_end(hal_threadpool *tp);
/* Spin limits before a waiting thread sleeps: idle_ns after the last
 * request ends (default 50 us), active_ns from the start of a wait inside a
 * request (default 2 ms). For tests and tuning; not on any request path. */
void hal_threadpool_set_spin(hal_threadpool *tp, uint64_t idle_ns, uint64_t active_ns);
/* How many times a worker or the caller went to sleep (futex wait) so far. */
uint64_t hal_threadpool_sleeps(const hal_threadpool *tp);
/* How many times a spinning waiter yielded its CPU because another thread
 * of the pool was last seen on it. */
uint64_t hal_threadpool_yields(const hal_threadpool *tp);
/* How many times a pinned worker that found the caller on its CPU re-pinned
 * itself to a CPU no thread of the pool was on. */
uint64_t hal_threadpool_moves(const hal_threadpool *tp);
void hal_threadpool_run(hal_threadpool *tp, int64_t n, int64_t grain, hal_range_fn fn, void *arg);

#endif
