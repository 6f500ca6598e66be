/*
 * hal/ir.c - attribute access for kernels. Lookups are linear over a node's
 * few attributes and happen at plan time only.
 */
#include <string.h>
#include "hal/ir.h"

const ir_attr *ir_node_attr(const ir_node *n, const char *name)
{
	for (int i = 0; i < n->n_attr; i++)
		if (strcmp(n->attr[i].name, name) == 0)
			return &n->attr[i];
	return NULL;
}

int hal_attr_has(const struct ir_node *n, const char *name)
{
	return ir_node_attr(n, name) != NULL;
}

int64_t hal_attr_int(const struct ir_node *n, const char *name, int64_t def)
{
	const ir_attr *a = ir_node_attr(n, name);
	if (!a)
		return def;
	if (a->type == IR_ATTR_INT)
		return a->i;
	if (a->type == IR_ATTR_FLOAT)
		return (int64_t)a->f;
	return def;
}

float hal_attr_float(const struct ir_node *n, const char *name, float def)
{
	const ir_attr *a = ir_node_attr(n, name);
	if (!a)
		return def;
	if (a->type == IR_ATTR_FLOAT)
		return a->f;
	if (a->type == IR_ATTR_INT)
		return (float)a->i;
	return def;
}

const char *hal_attr_str(const struct ir_node *n, const char *name, const char *def)
{
	const ir_attr *a = ir_node_attr(n, name);
	return a && a->type == IR_ATTR_STRING ? a->s : def;
}

int hal_attr_ints(const struct ir_node *n, const char *name, const int64_t **v)
{
	const ir_attr *a = ir_node_attr(n, name);
	*v = NULL;
	if (!a || a->type != IR_ATTR_INTS)
		return 0;
	*v = a->ints;
	return a->n;
}

int hal_attr_floats(const struct ir_node *n, const char *name, const float **v)
{
	const ir_attr *a = ir_node_attr(n, name);
	*v = NULL;
	if (!a || a->type != IR_ATTR_FLOATS)
		return 0;
	*v = a->floats;
	return a->n;
}

int hal_attr_strings_n(const struct ir_node *n, const char *name)
{
	const ir_attr *a = ir_node_attr(n, name);
	return a && a->type == IR_ATTR_STRINGS ? a->n : 0;
}

const char *hal_attr_strings_at(const struct ir_node *n, const char *name, int i)
{
	const ir_attr *a = ir_node_attr(n, name);
	if (!a || a->type != IR_ATTR_STRINGS || i < 0 || i >= a->n)
		return NULL;
	return a->strings[i];
}

const struct ir_graph *hal_attr_graph(const struct ir_node *n, const char *name)
{
	const ir_attr *a = ir_node_attr(n, name);
	return a && a->type == IR_ATTR_GRAPH ? a->g : NULL;
}
