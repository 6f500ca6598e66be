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

static const ir_tensor *graph_const(const ir_graph *g, const char *name, ir_tensor *tmp, int depth)
{
	if (!name[0] || depth > 8)
		return NULL;
	for (int i = 0; i < g->n_init; i++)
		if (strcmp(g->init[i].name, name) == 0)
			return &g->init[i];
	for (int i = 0; i < g->n_node; i++) {
		const ir_node *n = &g->node[i];
		if (n->n_out != 1 || strcmp(n->out[0], name) != 0)
			continue;
		/* an Identity of a constant (PyTorch's exporter feeds Conv
		 * biases through them) is that constant */
		if (strcmp(n->op_type, "Identity") == 0 && !n->domain[0] && n->n_in == 1)
			return graph_const(g, n->in[0], tmp, depth + 1);
		if (strcmp(n->op_type, "Constant") != 0 || n->domain[0] || n->n_attr != 1)
			return NULL;
		const ir_attr *a = &n->attr[0];
		if (strcmp(a->name, "value") == 0 && a->type == IR_ATTR_TENSOR)
			return a->t;
		memset(tmp, 0, sizeof *tmp);
		tmp->name = name;
		tmp->dtype = 1;  /* TensorProto.FLOAT */
		if (strcmp(a->name, "value_float") == 0 && a->type == IR_ATTR_FLOAT) {
			tmp->data = &a->f;
			tmp->nbytes = sizeof(float);
			return tmp;
		}
		if (strcmp(a->name, "value_floats") == 0 && a->type == IR_ATTR_FLOATS) {
			tmp->rank = 1;
			tmp->dims[0] = a->n;
			tmp->data = a->floats;
			tmp->nbytes = (size_t)a->n * sizeof(float);
			return tmp;
		}
		return NULL;
	}
	return NULL;
}

const ir_tensor *ir_graph_const(const ir_graph *g, const char *name, ir_tensor *tmp)
{
	return graph_const(g, name, tmp, 0);
}

/* Whether any node of g or of its subgraphs reads name. */
static int graph_reads(const ir_graph *g, const char *name)
{
	for (int i = 0; i < g->n_node; i++) {
		const ir_node *n = &g->node[i];
		for (int k = 0; k < n->n_in; k++)
			if (strcmp(n->in[k], name) == 0)
				return 1;
		for (int k = 0; k < n->n_attr; k++) {
			const ir_attr *a = &n->attr[k];
			if (a->type == IR_ATTR_GRAPH && a->g && graph_reads(a->g, name))
				return 1;
			if (a->type == IR_ATTR_GRAPHS)
				for (int j = 0; j < a->n; j++)
					if (a->graphs[j] && graph_reads(a->graphs[j], name))
						return 1;
		}
	}
	return 0;
}

int ir_consumers(const ir_graph *g, const char *name, int *idx, int max)
{
	int count = 0;
	for (int i = 0; i < g->n_output; i++)
		if (strcmp(g->output[i].name, name) == 0)
			return -1;
	for (int i = 0; i < g->n_node; i++) {
		const ir_node *n = &g->node[i];
		int reads = 0;
		for (int k = 0; k < n->n_in; k++)
			reads |= strcmp(n->in[k], name) == 0;
		for (int k = 0; k < n->n_attr; k++) {
			const ir_attr *a = &n->attr[k];
			if ((a->type == IR_ATTR_GRAPH && a->g && graph_reads(a->g, name)) ||
			    a->type == IR_ATTR_GRAPHS)
				return -1;
		}
		if (!reads)
			continue;
		if (count < max)
			idx[count] = i;
		count++;
	}
	return count;
}

void ir_graph_remove_nodes(ir_graph *g, const uint8_t *drop)
{
	int k = 0;
	for (int i = 0; i < g->n_node; i++)
		if (!drop[i])
			g->node[k++] = g->node[i];
	g->n_node = k;
}
