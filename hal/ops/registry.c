/*
 * hal/ops/registry.c - every kernel aidos has, by ONNX op type.
 * Each group file exports a NULL-terminated table; lookups are a linear scan
 * at plan time only (about a hundred names), never on the request path.
 */
#include <string.h>
#include "hal/hal.h"

extern const hal_op *const hal_ops_elementwise[];
extern const hal_op *const hal_ops_reduce[];
extern const hal_op *const hal_ops_nn[];
extern const hal_op *const hal_ops_shape[];
extern const hal_op *const hal_ops_control[];
extern const hal_op *const hal_ops_loss[];
extern const hal_op *const hal_ops_norm[];
extern const hal_op *const hal_ops_layout[];
extern const hal_op *const hal_ops_einsum[];
extern const hal_op *const hal_ops_quant[];
extern const hal_op *const hal_ops_vision[];
extern const hal_op *const hal_ops_signal[];
extern const hal_op *const hal_ops_text[];
extern const hal_op *const hal_ops_select[];

int hal_use_reference;

static const hal_op *const *const groups[] = {
	hal_ops_elementwise, hal_ops_reduce, hal_ops_nn, hal_ops_shape, hal_ops_control,
	hal_ops_loss, hal_ops_norm, hal_ops_layout, hal_ops_einsum,
	hal_ops_quant, hal_ops_vision, hal_ops_signal,
	hal_ops_text, hal_ops_select,
};

int hal_op_count(void)
{
	int n = 0;
	for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++)
		for (const hal_op *const *p = groups[g]; *p; p++)
			n++;
	return n;
}

const hal_op *hal_op_at(int i)
{
	for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++)
		for (const hal_op *const *p = groups[g]; *p; p++)
			if (i-- == 0)
				return *p;
	return NULL;
}

const hal_op *hal_op_find(const char *op_type)
{
	for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++)
		for (const hal_op *const *p = groups[g]; *p; p++)
			if (strcmp((*p)->name, op_type) == 0)
				return *p;
	return NULL;
}

#include "hal/ops/arity.h"

const hal_arity *hal_arity_find(const char *op, int opset, int *first)
{
	/* The table is sorted by name then version: binary search for the
	 * first row of op, then walk its versions. Plan time only. */
	int lo = 0, hi = hal_arity_count;
	while (lo < hi) {
		int mid = (lo + hi) / 2;
		if (strcmp(hal_arity_table[mid].op, op) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	const hal_arity *best = NULL;
	*first = 0;
	for (int i = lo; i < hal_arity_count && !strcmp(hal_arity_table[i].op, op); i++) {
		if (!*first)
			*first = hal_arity_table[i].since;
		if (hal_arity_table[i].since <= opset)
			best = &hal_arity_table[i];
	}
	return best;
}
