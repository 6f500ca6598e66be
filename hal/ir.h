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

typedef struct ir_node {
	const char *name;     /* may be "" */
	const char *op_type;
	const char *domain;   /* "" for ai.onnx */
	int n_in, n_out, n_attr;
	const char **in;      /* "" marks an absent optional input */
	const char **out;
	ir_attr *attr;
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

#endif
