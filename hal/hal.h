/*
 * hal/hal.h - the hardware abstraction layer's private interface: tensors,
 * operator kernels and the contract between the planner and a kernel.
 *
 * Life of a model (DESIGN.md, "Model"):
 *   onnx file -> mmap -> wire decode (hal/onnx.c, weights point into the
 *   mapping) -> IR (hal/ir.h) -> plan for the given input shapes (hal/plan.c:
 *   shape inference and constant folding in one topological pass, then
 *   liveness-based placement of every activation in one arena) -> flat list
 *   of steps executed with no allocation (hal/exec.c).
 *
 * A kernel (struct hal_op) has two entry points:
 *   infer(): called once per plan. Reads input dtypes/shapes (and values
 *            when an input is a plan-time constant: a kernel that needs one
 *            asks with hal_need_value()), validates attributes,
 *            sets every output's dtype and shape, may keep parsed
 *            attributes in s->params (hal_step_alloc) and ask for scratch
 *            memory (s->scratch_bytes). Reports problems with hal_err().
 *   exec():  called per request. Inputs and outputs have data; it computes.
 *            It must not allocate, lock or make system calls; it may use
 *            s->scratch and hal_parallel_for().
 * When every input of a HAL_OP_PURE op is a constant, the planner runs exec()
 * at plan time and the outputs become constants (constant folding).
 * infer() may also produce an output's value itself: it sets out->data (from
 * hal_step_alloc, or pointing at model-owned bytes such as a Constant node's
 * tensor, never copied) and out->is_const = 1; Shape, Size and Constant do.
 * The scalar code in hal/ops/ is the reference every faster backend is
 * tested against.
 */
#ifndef AIDOS_HAL_H
#define AIDOS_HAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdatomic.h>
#include "aidos/aidos.h"

#define HAL_MAX_RANK 8

/* Element types: the values of ONNX TensorProto.DataType (append-only). */
enum hal_dtype {
	HAL_DT_UNDEF = 0,
	HAL_DT_F32 = 1,
	HAL_DT_U8 = 2,
	HAL_DT_I8 = 3,
	HAL_DT_U16 = 4,
	HAL_DT_I16 = 5,
	HAL_DT_I32 = 6,
	HAL_DT_I64 = 7,
	HAL_DT_STRING = 8,
	HAL_DT_BOOL = 9,
	HAL_DT_F16 = 10,
	HAL_DT_F64 = 11,
	HAL_DT_U32 = 12,
	HAL_DT_U64 = 13,
	HAL_DT_BF16 = 16,  /* bfloat16: the top half of a float32 */
};

/* Bytes per element, 0 for types aidos cannot hold in memory. */
size_t hal_dtype_size(int dtype);
/* "float32", "int64", ... ; "?" for unknown. */
const char *hal_dtype_name(int dtype);

/* A tensor as kernels see it. data is NULL during infer() unless the value is
 * a plan-time constant. Shape dims are >= 0; rank 0 is a scalar (1 element). */
typedef struct hal_tensor {
	int32_t dtype;
	int32_t rank;
	int64_t dims[HAL_MAX_RANK];
	void *data;
	uint8_t is_const;  /* data known at plan time (weights, folded values) */
	uint8_t pad_[7];
} hal_tensor;

int64_t hal_numel(const hal_tensor *t);

/* Every tensor aidos holds, loaded, planned or given, has dims >= 0 whose
 * non-zero ones multiply to at most HAL_MAX_SPAN: 2^40 elements (4 TiB of
 * floats) keeps byte counts below 2^43, and bounding the non-zero dims too
 * keeps the strides of an empty tensor such as [0, 2^62] in range. */
#define HAL_MAX_SPAN (INT64_C(1) << 40)
/* 1 when dims[0..rank) are all >= 0 and within HAL_MAX_SPAN as above. */
int hal_dims_ok(int rank, const int64_t *dims);
static inline size_t hal_nbytes(const hal_tensor *t)
{
	return (size_t)hal_numel(t) * hal_dtype_size(t->dtype);
}
/* Copies dtype and shape (not data) of src into dst. */
void hal_tensor_like(hal_tensor *dst, const hal_tensor *src);
/* Sets dst's shape from dims[0..rank). */
void hal_tensor_set_shape(hal_tensor *dst, int dtype, int rank, const int64_t *dims);

/* ---- IR access for kernels (node attributes); see hal/ir.h ---- */
struct ir_node;
struct ir_attr;
struct ir_graph;
struct hal_plan;
struct hal_step;

/* Attribute lookups; a missing attribute returns the default. */
int64_t hal_attr_int(const struct ir_node *n, const char *name, int64_t def);
float hal_attr_float(const struct ir_node *n, const char *name, float def);
/* String attribute as a NUL-terminated string, or def. */
const char *hal_attr_str(const struct ir_node *n, const char *name, const char *def);
/* Integer list: returns the count (0 if absent), *v points at the values
 * (owned by the model, valid while it lives). */
int hal_attr_ints(const struct ir_node *n, const char *name, const int64_t **v);
int hal_attr_floats(const struct ir_node *n, const char *name, const float **v);
/* Number of strings in a STRINGS attribute; hal_attr_strings_at returns one. */
int hal_attr_strings_n(const struct ir_node *n, const char *name);
const char *hal_attr_strings_at(const struct ir_node *n, const char *name, int i);
/* Graph attribute (If/Loop bodies) or NULL. */
const struct ir_graph *hal_attr_graph(const struct ir_node *n, const char *name);
/* Whether the attribute is present at all. */
int hal_attr_has(const struct ir_node *n, const char *name);

/* ---- kernels ---- */
enum hal_op_flags {
	HAL_OP_PURE = 1 << 0,        /* output depends only on inputs: foldable */
	HAL_OP_SHAPE_ONLY = 1 << 1,  /* output depends only on input shapes (Shape, Size): always folded */
	HAL_OP_ALIAS0 = 1 << 2,      /* output 0 may share input 0's bytes (Reshape, Squeeze, ...):
	                                exec() must then copy nothing when s->out[0]->data == s->in[0]->data */
};

typedef struct hal_step hal_step;

typedef struct hal_op {
	const char *name;    /* ONNX op_type, domain "" (ai.onnx) */
	int since_opset;     /* lowest opset this kernel understands */
	unsigned flags;
	int (*infer)(hal_step *s);
	int (*exec)(hal_step *s);
} hal_op;

/* One node of a plan. Kernels read and write only what is documented here. */
struct hal_step {
	const hal_op *op;
	const struct ir_node *node;
	int opset;                 /* opset of the default domain */
	int n_in, n_out;
	hal_tensor **in;           /* in[i] is NULL for an absent optional input */
	hal_tensor **out;
	void *params;              /* kernel-private, from hal_step_alloc() */
	size_t scratch_bytes;      /* set by infer(); exec() gets s->scratch, 64-byte aligned */
	void *scratch;
	struct hal_plan *plan;     /* owner: thread pool, sub-plans, error buffer */
	void *sub[2];              /* control flow: sub-plans (If: then, else) */
};

/* Allocates n zeroed bytes that live as long as the plan (infer() only). NULL
 * on failure (then return AIDOS_E_NOMEM). */
void *hal_step_alloc(hal_step *s, size_t n);

/* Records a message for the failing node and returns code (convenience:
 * `return hal_err(s, AIDOS_E_INVALID, "pads has %d values", n);`). The planner
 * prefixes the node's name and op type. */
int hal_err(hal_step *s, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Kernels whose output SHAPE depends on an input's VALUE (Reshape's shape,
 * Slice's starts, Reduce's axes, Range's limit, ...) call this from infer()
 * before reading t's data. Returns 0 when t's value is known at plan time
 * (t->data set). Otherwise it returns AIDOS_E_UNSUPPORTED with the message
 * "<what> of <op> must be known at plan time", and tells the planner that
 * this value was needed: when t derives, through pure foldable ops, from
 * small graph inputs, the session then plans again with those inputs
 * "value-keyed" (folded as constants, their values part of the plan's key;
 * hal/plan.h, docs/architecture.md "Planning"). t must be one of s->in[]. */
int hal_need_value(hal_step *s, const hal_tensor *t, const char *what);

/* Runs fn(arg, i0, i1) over [0, n) split across the plan's threads, in chunks
 * of at least `grain` items; returns when all are done. No allocation. */
typedef void (*hal_range_fn)(void *arg, int64_t i0, int64_t i1);
void hal_parallel_for(hal_step *s, int64_t n, int64_t grain, hal_range_fn fn, void *arg);

/* Two walkers over items [0, len) that meet wherever their speeds put
 * them: walker 0 takes 0, 1, 2, ..., walker 1 (up) len-1, len-2, ....
 * A claim is one relaxed fetch_add on *claimed (0 before the first), so
 * the claims never pass len and no item is taken twice; *mine counts the
 * caller's own claims (0 before its first). Returns the item, or -1 when
 * none is left. Each walker's items are consecutive, so what it computed
 * for one (rows in its own cache, a ring) serves the next; a walker the
 * host deschedules holds up only the item it runs. */
static inline int64_t hal_meet_next(_Atomic int64_t *claimed, int64_t len, int up, int64_t *mine)
{
	if (atomic_fetch_add_explicit(claimed, 1, memory_order_relaxed) >= len)
		return -1;
	int64_t i = up ? len - 1 - *mine : *mine;
	++*mine;
	return i;
}

/* Reads element i of a numeric tensor of any supported dtype as double / int64. */
double hal_get_f64(const hal_tensor *t, int64_t i);
int64_t hal_get_i64(const hal_tensor *t, int64_t i);

/* Normalises a possibly negative axis against rank; -1 if out of range. */
static inline int hal_axis(int64_t axis, int rank)
{
	if (axis < 0)
		axis += rank;
	return (axis < 0 || axis >= rank) ? -1 : (int)axis;
}

/* Multidirectional (numpy) broadcasting of a and b into out_dims; returns the
 * output rank or -1 when the shapes do not broadcast. */
int hal_broadcast_shape(const hal_tensor *a, const hal_tensor *b, int64_t *out_dims);

/* Tests and `aidos run --reference`: when non-zero, kernels that have a faster
 * path use their scalar reference code instead. Set before planning. */
extern int hal_use_reference;

/* The kernel registry (hal/ops/registry.c). Finds the kernel for op_type in
 * the default domain; NULL when aidos has none. */
const hal_op *hal_op_find(const char *op_type);
/* All kernels, for `aidos info` and conformance listings. */
int hal_op_count(void);
const hal_op *hal_op_at(int i);

#endif
