/*
 * hal/ops/arity.h - how many inputs and outputs each ONNX operator version
 * takes (generated from the ONNX schemas: tools/gen_arity.py).
 */
#ifndef AIDOS_HAL_OPS_ARITY_H
#define AIDOS_HAL_OPS_ARITY_H

#include <stdint.h>

typedef struct hal_arity {
	const char *op;
	int since;          /* opset version this row starts at */
	int min_in, max_in; /* max -1: unbounded (variadic) */
	uint32_t required;  /* bit i: input i is a required single input */
	int min_out, max_out;
} hal_arity;

extern const hal_arity hal_arity_table[];   /* sorted by op, then since */
extern const int hal_arity_count;
extern const int hal_arity_max_opset;       /* newest opset the table knows */

/* The row for op at opset, NULL when the schemas do not know the op or it
 * does not exist yet at that opset (*first then gets the opset that
 * introduced it, else 0). */
const hal_arity *hal_arity_find(const char *op, int opset, int *first);

#endif
