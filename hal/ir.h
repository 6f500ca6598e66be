/*
 * hal/ir.h - the graph IR decoded from an ONNX file (hal/onnx.c).
 *
 * Every structure lives in the model's bump allocator and is freed with the
 * model. Names are NUL-terminated copies; tensor data points into the file
 * mapping wherever the bytes are usable in place (raw_data or packed
 * float_data, suitably aligned), else into a copy owned by the model.
 */
#ifndef AIDOS_HAL_IR_H
#define AIDOS_HAL_IR_H

#include <stddef.h>
#include <stdint.h>
#include "hal/hal.h"

/* ONNX AttributeProto.AttributeType values. */
enum ir_attr_type {
	IR_ATTR_UNDEF = 0,
	IR_ATTR_FLOAT = 1,
	IR_ATTR_INT = 2,
	IR_ATTR_STRING = 3,
	IR_ATTR_TENSOR = 4,
	IR_ATTR_GRAPH = 5,
	IR_ATTR_FLOATS = 6,
	IR_ATTR_INTS = 7,
	IR_ATTR_STRINGS = 8,
	IR_ATTR_TENSORS = 9,
	IR_ATTR_GRAPHS = 10,
	IR_ATTR_SPARSE_TENSOR = 11,
	IR_ATTR_SPARSE_TENSORS = 12,
	IR_ATTR_TYPE_PROTO = 13,
	IR_ATTR_TYPE_PROTOS = 14,
};

typedef struct ir_tensor {
	const char *name;
	int32_t dtype;
	int32_t rank;
	int64_t dims[HAL_MAX_RANK];
	const void *data;   /* numel * dtype size bytes, aligned for the dtype */
	size_t nbytes;
} ir_tensor;

typedef struct ir_graph ir_graph;

typedef struct ir_attr {
	const char *name;
	int32_t type;       /* enum ir_attr_type */
	int32_t n;          /* element count of list types */
	float f;
	int64_t i;
	const char *s;      /* STRING: NUL-terminated (may hold NULs: slen) */
	size_t slen;
	ir_tensor *t;       /* TENSOR */
	ir_graph *g;        /* GRAPH */
	float *floats;      /* FLOATS */
	int64_t *ints;      /* INTS */
	const char **strings; /* STRINGS */
	ir_tensor *tensors; /* TENSORS */
	ir_graph **graphs;  /* GRAPHS */
} ir_attr;

/* Activations a fused Conv applies to its output (hal/fuse_conv.c). */
enum ir_act {
	IR_ACT_NONE = 0,
	IR_ACT_RELU = 1,      /* max(x, 0) */
	IR_ACT_CLIP = 2,      /* min(max(x, a), b) */
	IR_ACT_HARDSIGMOID = 3, /* max(0, min(1, a*x + b)) */
	IR_ACT_HARDSWISH = 4, /* x * max(0, min(1, a*x + b)) (ONNX: a = 1/6, b = 1/2) */
	IR_ACT_SIGMOID = 5,   /* 1 / (1 + exp(-x)) */
	IR_ACT_LEAKYRELU = 6, /* max(x < 0 ? a*x : x, b): LeakyRelu (alpha a), then a
			       * Max with the scalar b (b = -inf: none) */
};

/* What a load-time rewrite folded into a node's output, applied per element
 * after the node's own result y: post_s * act(y) + post_b. */
typedef struct ir_epilogue {
	int32_t act;          /* enum ir_act */
	float a, b;           /* the activation's parameters (see enum ir_act) */
	float post_s, post_b; /* a scalar affine applied after it (1, 0: none) */
} ir_epilogue;

/* Whether e (NULL: none) is exactly a clamp to [*lo, *hi] (a Relu: [0, inf],
 * or a Clip, with no affine after it), so a kernel can apply it in
 * registers as a max and a min. *lo and *hi are 0 when it is not. */
static inline int ir_epi_clamp(const ir_epilogue *e, float *lo, float *hi)
{
	int yes = e && e->post_s == 1.0f && e->post_b == 0.0f &&
		  (e->act == IR_ACT_RELU || e->act == IR_ACT_CLIP);
	*lo = yes ? (e->act == IR_ACT_RELU ? 0.0f : e->a) : 0.0f;
	*hi = yes ? (e->act == IR_ACT_RELU ? __builtin_inff() : e->b) : 0.0f;
	return yes;
}

typedef struct ir_node {
	const char *name;     /* may be "" */
	const char *op_type;
	const char *domain;   /* "" for ai.onnx */
	int n_in, n_out, n_attr;
	const char **in;      /* "" marks an absent optional input */
	const char **out;
	ir_attr *attr;
	const ir_epilogue *epi; /* set only by hal/fuse_conv.c (Conv); NULL: none */
} ir_node;

/* A graph input/output/value_info. dims[i] < 0: unknown; dim_param[i] names it. */
typedef struct ir_value {
	const char *name;
	int32_t dtype;        /* 0 when the file gives no type */
	int32_t rank;         /* -1 when the file gives no shape */
	int64_t dims[HAL_MAX_RANK];
	const char *dim_param[HAL_MAX_RANK];
} ir_value;

struct ir_graph {
	const char *name;
	int n_node, n_init, n_input, n_output, n_value_info;
	ir_node *node;
	ir_tensor *init;
	ir_value *input;      /* as in the file: may include initializer names */
	ir_value *output;
	ir_value *value_info;
	ir_graph *parent;     /* enclosing graph of a subgraph, NULL at top */
};

typedef struct ir_opset {
	const char *domain;
	int64_t version;
} ir_opset;

/* Limits a hostile file cannot push past (each checked with a clear error). */
#define IR_MAX_DEPTH 16          /* nested subgraphs */

/* Looks up a node's attribute by name; NULL if absent. */
const ir_attr *ir_node_attr(const ir_node *n, const char *name);

/* The constant tensor called name in g: an initializer, or the `value`
 * (`value_float`, `value_floats`: written into *tmp) of a Constant node. NULL
 * when name is not a constant of g. Borrowed, valid while the model is. */
const ir_tensor *ir_graph_const(const ir_graph *g, const char *name, ir_tensor *tmp);

/* Number of nodes of g that read value name (through one or several of
 * their inputs), their indices in idx[0 .. min(count, max)-1]; -1 when a
 * graph output or a subgraph (which may capture it) reads it. */
int ir_consumers(const ir_graph *g, const char *name, int *idx, int max);

/* Removes the nodes with drop[i] != 0 from g, keeping the others in order. */
void ir_graph_remove_nodes(ir_graph *g, const uint8_t *drop);

/* Load-time rewrite of g's Conv nodes (hal/fuse_conv.c): folds a following
 * BatchNormalization or per-channel Mul/Add/Div by constants into the
 * weights and bias, and a following activation (Relu, Clip, HardSigmoid,
 * HardSwish, Sigmoid, the Add-Clip-Mul-Div form of HardSwish) with a scalar
 * Mul/Add after it into the node's epilogue (ir_node.epi). New tensors come
 * from the model's allocator (m->mem). Skipped when hal_use_reference is set.
 * Returns 0 or AIDOS_E_NOMEM. Not thread-safe: call before the model is
 * shared. */
struct aidos_model;
int hal_fuse_conv(struct aidos_model *m);

#endif
