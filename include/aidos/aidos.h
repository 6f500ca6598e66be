/*
 * aidos.h - the public API of aidos, the distributed agent OS for AI.
 *
 * This header covers what a node runs for each agent: load an ONNX model
 * (memory-mapped, weights used in place), plan it for a set of input shapes,
 * and run it with no allocation per request.
 *
 *   aidos_model *m;
 *   char err[256];
 *   if (aidos_model_load("det.onnx", &m, err, sizeof err)) { puts(err); ... }
 *   aidos_session *s;
 *   aidos_session_create(m, NULL, &s, err, sizeof err);
 *   aidos_tensor in = { .name = "x", .dtype = AIDOS_DT_FLOAT, .rank = 4,
 *                       .dims = {1, 3, 640, 640}, .data = pixels };
 *   if (aidos_session_run(s, 1, &in)) puts(aidos_session_errmsg(s));
 *   aidos_tensor out;
 *   aidos_session_output(s, 0, &out);   // borrowed until the next run
 *   aidos_session_destroy(s);
 *   aidos_model_free(m);
 *
 * Conventions: every fallible call returns 0 or a negative code (-errno for
 * OS failures, AIDOS_E_* for aidos's own); aidos_strerror() names it.
 */
#ifndef AIDOS_AIDOS_H
#define AIDOS_AIDOS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AIDOS_VERSION "0.1.0"

/* Error codes (negative, append-only; below -1000 to stay clear of errno). */
enum aidos_error {
	AIDOS_OK = 0,
	AIDOS_E_INVALID = -1001,     /* malformed input: file, tensor, argument */
	AIDOS_E_UNSUPPORTED = -1002, /* valid ONNX that aidos does not implement */
	AIDOS_E_NOMEM = -1003,       /* allocation failed or quota exceeded */
	AIDOS_E_SHAPE = -1004,       /* shapes that do not fit the model */
	AIDOS_E_NOTFOUND = -1005,    /* no such input, output, file or name */
	AIDOS_E_TRUNCATED = -1006,   /* data ends before its declared length */
	AIDOS_E_RANGE = -1007,       /* a value outside its allowed range */
	AIDOS_E_RUNTIME = -1008,     /* the model failed while running */
	AIDOS_E_DEADLINE = -1009,    /* the request cannot finish before its deadline */
	AIDOS_E_BUSY = -1010,        /* the queue is full: try again later */
	AIDOS_E_QUOTA = -1011,       /* the agent's memory quota would be exceeded */
};

/* A static, human-readable name for code (0, AIDOS_E_* or -errno). */
const char *aidos_strerror(int code);

/* Element types: values of ONNX TensorProto.DataType. */
enum aidos_dtype {
	AIDOS_DT_FLOAT = 1,
	AIDOS_DT_UINT8 = 2,
	AIDOS_DT_INT8 = 3,
	AIDOS_DT_INT32 = 6,
	AIDOS_DT_INT64 = 7,
	AIDOS_DT_BOOL = 9,
	AIDOS_DT_DOUBLE = 11,
};

#define AIDOS_MAX_RANK 8

/* A tensor handed to or returned by aidos. data is borrowed: aidos never
 * frees what it did not allocate. A dimension of -1 in model metadata means
 * "symbolic" (batch, sequence): set by the caller at run time. */
typedef struct aidos_tensor {
	const char *name;
	int32_t dtype;
	int32_t rank;
	int64_t dims[AIDOS_MAX_RANK];
	void *data;
} aidos_tensor;

/* ---- models ---- */
typedef struct aidos_model aidos_model;

/* Maps the ONNX file at path read-only and decodes it; weights point into the
 * mapping (a file mapped by several models is mapped once and refcounted).
 * Errors: -errno (open/mmap), AIDOS_E_INVALID / AIDOS_E_TRUNCATED (malformed
 * file: err names the field), AIDOS_E_UNSUPPORTED, AIDOS_E_NOMEM.
 * err (may be NULL) receives one line. Thread-safe. */
int aidos_model_load(const char *path, aidos_model **out, char *err, size_t errlen);
/* Same, from bytes the caller keeps alive and unchanged until aidos_model_free
 * (external data files are resolved against base_dir, may be NULL). */
int aidos_model_load_buffer(const void *buf, size_t len, const char *base_dir,
			    aidos_model **out, char *err, size_t errlen);
void aidos_model_free(aidos_model *m);

/* Model metadata. Indices run over the graph inputs that are not initializers,
 * and the graph outputs. Returned names are owned by the model. */
int aidos_model_n_inputs(const aidos_model *m);
int aidos_model_n_outputs(const aidos_model *m);
int aidos_model_input(const aidos_model *m, int i, aidos_tensor *info);
int aidos_model_output(const aidos_model *m, int i, aidos_tensor *info);
int64_t aidos_model_ir_version(const aidos_model *m);
int aidos_model_opset(const aidos_model *m);  /* default-domain opset */
/* Bytes of weights used in place from the file mapping, and bytes that had to
 * be copied (unaligned raw data, varint-encoded integers). */
void aidos_model_weight_bytes(const aidos_model *m, size_t *mapped, size_t *copied);

/* ---- sessions: a model planned for input shapes, ready to run ---- */
typedef struct aidos_session aidos_session;

#define AIDOS_MAX_KEYED_ELEMS 64

typedef struct aidos_session_opts {
	int threads;             /* 0: 1 thread; n: n threads (own pool) */
	size_t max_tensor_bytes; /* 0: half the machine's memory. Planning fails with
	                            AIDOS_E_NOMEM (naming the tensor) rather than
	                            reserve more for one tensor or for the arena;
	                            all cached plans together (arenas, folded
	                            values, packed weights) are kept under it
	                            too: the least recently used go */
	int max_plans;           /* 0: 8; at most 1024. Plans cached per session,
	                            one per input shape (and values of
	                            value-keyed inputs) */
} aidos_session_opts;

/* Creates a session (and its thread pool). Planning happens on the first run
 * of each input shape; the session keeps up to max_plans plans (least
 * recently used evicted), so a run with a known shape is planned already.
 * A small graph input whose VALUE a kernel needs to plan (Reshape's shape,
 * Slice's starts, Reduce's axes fed as inputs) becomes value-keyed: each
 * plan folds its values in and serves only requests with the same values;
 * such an input may hold at most AIDOS_MAX_KEYED_ELEMS elements.
 * Errors: AIDOS_E_NOMEM, AIDOS_E_INVALID (max_plans out of range), -errno. */
int aidos_session_create(aidos_model *m, const aidos_session_opts *opts,
			 aidos_session **out, char *err, size_t errlen);
void aidos_session_destroy(aidos_session *s);

/* Plans for these inputs without running (optional; run plans too), and
 * caches the plan; a key already cached costs a lookup. Inputs are matched
 * by name and need their data (a value-keyed input's values are part of the
 * key). Errors as aidos_session_run. */
int aidos_session_plan(aidos_session *s, int n, const aidos_tensor *inputs);

/* Runs the model. Every model input must be given exactly once, by name, with
 * the model's dtype. Input data is read in place (not copied) during the call.
 * Errors: AIDOS_E_NOTFOUND (unknown/missing input), AIDOS_E_INVALID (dtype),
 * AIDOS_E_SHAPE, AIDOS_E_UNSUPPORTED, AIDOS_E_RUNTIME, AIDOS_E_NOMEM;
 * aidos_session_errmsg() then names the input, node or tensor at fault.
 * Not thread-safe for one session; use one session per thread. */
int aidos_session_run(aidos_session *s, int n, const aidos_tensor *inputs);

/* Output i of the last successful run; data borrowed until the next run,
 * plan (which may evict that run's plan from the cache) or destroy. */
int aidos_session_output(const aidos_session *s, int i, aidos_tensor *out);
/* The last error message of this session (never NULL). */
const char *aidos_session_errmsg(const aidos_session *s);

/* Plan statistics of the current plan (the last run's): arena bytes, steps,
 * folded nodes; and of the session's plan cache. */
typedef struct aidos_plan_stats {
	size_t arena_bytes;     /* all activations of one request */
	size_t naive_bytes;     /* sum of activation sizes without reuse */
	int steps;              /* kernels run per request */
	int folded;             /* nodes computed at plan time */
	double plan_ms;
	int cached_plans;       /* plans the session holds now */
	int value_keyed;        /* inputs value-keyed in the current plan */
	size_t cached_arena_bytes; /* arenas of all cached plans */
	size_t cached_bytes;    /* all they hold: arenas, folded values, packed weights */
	uint64_t plans_built;   /* plans made since the session was created */
} aidos_plan_stats;
int aidos_session_stats(const aidos_session *s, aidos_plan_stats *st);

#ifdef __cplusplus
}
#endif
#endif
