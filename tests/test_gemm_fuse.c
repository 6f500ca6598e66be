/*
 * tests/test_gemm_fuse.c - Conv chains fused at load (hal/fuse_conv.c) and
 * the fused epilogue (hal_epilogue_apply, the GEMM micro-kernels' store)
 * against the unfused graph run by the scalar reference kernels.
 *
 * Each case is a small model written here as ONNX protobuf bytes: x -> Conv
 * -> a chain of the forms exporters emit (BatchNormalization, Mul/Add/Div by
 * per-channel and scalar constants, Relu, Clip, Sigmoid, HardSigmoid,
 * HardSwish and its Add-Clip-Mul-Div spelling, x*HardSigmoid(x), LeakyRelu
 * and a Max with a scalar after it (openWakeWord), a scalar affine after
 * the activation), through the Conv paths (depthwise narrow and
 * wide, 1x1, polyphase 3x3 stride 2, small planes: hal/ops/conv_small.c,
 * whose tile applies LeakyRelu itself). It is run twice through the public
 * API: as loaded (fused, fast kernels) and with hal_use_reference set before
 * loading (no fusion, scalar reference kernels), the independent
 * reference. The fused plan must also have the expected number of steps
 * (the chain is gone), and chains that must not fuse (a value read twice,
 * a graph output in the middle) still give the right result.
 * Tolerance: |fused - ref| <= 1e-4 (1 + |ref|): the folded weights round
 * once more than the chain; sums are at most 16*9 terms of magnitude ~1.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "hal/hal.h"
#include "tests/op_test.h"

/* ---- the graph (ONNX pieces from tests/op_test.h) ---- */

/* The graph under construction. */
typedef struct gb {
	pbw g;
	int n_node, n_val;
	char names[64][24];
} gb;

static const char *fresh(gb *b)
{
	assert_true(b->n_val < 64);
	snprintf(b->names[b->n_val], sizeof b->names[0], "v%d", b->n_val);
	return b->names[b->n_val++];
}

/* TensorProto {dims 1, data_type 2, name 8, raw_data 9} as an initializer
 * (GraphProto field 5); returns its name. */
static const char *init(gb *b, int rank, const int64_t *dims, const float *v)
{
	const char *name = fresh(b);
	ot_init(&b->g, name, rank, dims, v);
	return name;
}

static const char *scalar(gb *b, float v)
{
	return init(b, 0, NULL, &v);
}

/* A Constant node holding value_float (how PaddleOCR's exporter spells its
 * scalars). */
static const char *const_node(gb *b, float v)
{
	pbw n = { 0 };
	const char *out = fresh(b);
	pbw_str(&n, 2, out);
	pbw_str(&n, 4, "Constant");
	ot_attr_float(&n, "value_float", v);
	pbw_take(&b->g, 1, &n);
	return out;
}

/* A node with inputs ins (NULL-terminated) and one output; attributes
 * given as name/value pairs by the caller through attr_* after it. */
static pbw *node_cur;

static const char *node(gb *b, const char *op, const char *const *ins, pbw *n)
{
	memset(n, 0, sizeof *n);
	for (int i = 0; ins[i]; i++)
		pbw_str(n, 1, ins[i]);
	const char *out = fresh(b);
	pbw_str(n, 2, out);
	pbw_str(n, 4, op);
	node_cur = n;
	b->n_node++;
	return out;
}

static void attr_int(const char *name, int64_t v)
{
	ot_attr_int(node_cur, name, v);
}

static void attr_ints(const char *name, const int64_t *v, int n)
{
	ot_attr_ints(node_cur, name, v, n);
}

static void attr_float(const char *name, float v)
{
	ot_attr_float(node_cur, name, v);
}

static void end_node(gb *b, pbw *n)
{
	pbw_take(&b->g, 1, n);
}

static const char *op1(gb *b, const char *op, const char *x)
{
	pbw n;
	const char *ins[] = { x, NULL };
	const char *y = node(b, op, ins, &n);
	end_node(b, &n);
	return y;
}

static const char *op2(gb *b, const char *op, const char *x, const char *k)
{
	pbw n;
	const char *ins[] = { x, k, NULL };
	const char *y = node(b, op, ins, &n);
	end_node(b, &n);
	return y;
}

/* ---- the cases ---- */

enum chain {
	CH_BN_RELU,          /* BatchNormalization, Relu */
	CH_LAB_HSWISH4,      /* Mul s, Add [C,1,1], Add 3/Clip 0 6/Mul/Div 6, Mul s, Add s (PP-LCNetV3) */
	CH_BN_CLIP,          /* BatchNormalization, Clip 0 6 (opset 13 inputs) */
	CH_X_HSIG,           /* Div [1,C,1,1], Sub s, x * HardSigmoid(x) */
	CH_SIGMOID,          /* Sigmoid */
	CH_HSIG_POST,        /* HardSigmoid, Div s */
	CH_HSWISH_OP,        /* HardSwish (opset 14) */
	CH_READ_TWICE,       /* Mul s, then Relu and Add both read it: no fusion past Mul */
	CH_OUTPUT_MID,       /* Mul s is also a graph output: nothing fused */
	CH_LEAKY_MAX,        /* LeakyRelu 0.2, Max(s, .) (a Constant node), Mul s */
	CH_LEAKY,            /* LeakyRelu (default alpha), Max(., s), Max(s, .) */
};

struct fcase {
	const char *name;
	int64_t c, h, w, m, group, k, stride, pad;
	int chain;
	int steps;           /* steps of the fused plan */
};

static const struct fcase cases[] = {
	/* name              c   h   w   m grp k  s  p  chain          steps */
	{ "dw narrow",      16, 13, 11, 16, 16, 3, 1, 1, CH_LAB_HSWISH4, 1 },
	{ "dw wide s2",      8, 9, 150,  8,  8, 3, 2, 1, CH_BN_CLIP,     1 },
	{ "dw wide",         4, 5, 70,   4,  4, 5, 1, 2, CH_X_HSIG,      1 },
	{ "1x1",            12, 7, 9,   20,  1, 1, 1, 0, CH_BN_RELU,     1 },
	{ "1x1 hswish4",    16, 6, 50,  13,  1, 1, 1, 0, CH_LAB_HSWISH4, 1 },
	{ "3x3 s2",          5, 17, 19, 14,  1, 3, 2, 1, CH_SIGMOID,     1 },
	{ "3x3 grouped",     8, 10, 10,  8,  2, 3, 1, 1, CH_HSIG_POST,   1 },
	{ "3x3 hardswish",   3, 12, 12,  7,  1, 3, 1, 1, CH_HSWISH_OP,   1 },
	/* Conv+Mul, then Relu and Add as one fused elementwise step (plan.c) */
	{ "read twice",      6, 8, 8,    6,  1, 1, 1, 0, CH_READ_TWICE,  2 },
	{ "output mid",      6, 8, 8,    6,  1, 1, 1, 0, CH_OUTPUT_MID,  2 },
	{ "3x3 leaky max",   7, 9, 5,   24,  1, 3, 1, 1, CH_LEAKY_MAX,   1 },  /* conv_small */
	{ "1x1 leaky",       9, 5, 7,   24,  1, 1, 1, 0, CH_LEAKY,       1 },
	{ "dw leaky max",   12, 6, 9,   12, 12, 3, 1, 1, CH_LEAKY_MAX,   1 },
	{ "3x3 s2 leaky",    6, 11, 13, 16,  1, 3, 2, 1, CH_LEAKY,       1 },
};

/* Per-channel constant of shape [m,1,1] (or [1,m,1,1] when wide). */
static const char *chan(gb *b, int64_t m, int wide, float lo, float hi)
{
	float v[64];
	for (int64_t i = 0; i < m; i++)
		v[i] = ot_frand(lo, hi);
	int64_t d3[3] = { m, 1, 1 }, d4[4] = { 1, m, 1, 1 };
	return wide ? init(b, 4, d4, v) : init(b, 3, d3, v);
}

/* Builds the model of case t into out; *mid receives a second output name
 * (CH_OUTPUT_MID) or NULL. */
static void build(const struct fcase *t, pbw *out, const char **y, const char **mid)
{
	gb b = { 0 };
	int64_t cg = t->c / t->group, wd[4] = { t->m, cg, t->k, t->k };
	float wv[4096], bv[64];
	assert_true(t->m * cg * t->k * t->k <= 4096 && t->m <= 64);
	for (int64_t i = 0; i < t->m * cg * t->k * t->k; i++)
		wv[i] = ot_frand(-1, 1);
	for (int64_t i = 0; i < t->m; i++)
		bv[i] = ot_frand(-0.5f, 0.5f);
	const char *w = init(&b, 4, wd, wv), *bias = init(&b, 1, &t->m, bv);
	pbw n;
	const char *ins[] = { "x", w, bias, NULL };
	const char *cur = node(&b, "Conv", ins, &n);
	int64_t ks[2] = { t->k, t->k }, st[2] = { t->stride, t->stride };
	int64_t pads[4] = { t->pad, t->pad, t->pad, t->pad };
	attr_ints("kernel_shape", ks, 2);
	attr_ints("strides", st, 2);
	attr_ints("pads", pads, 4);
	attr_int("group", t->group);
	end_node(&b, &n);
	*mid = NULL;
	switch (t->chain) {
	case CH_BN_RELU:
	case CH_BN_CLIP: {
		/* scale, bias, mean, var: [m] each */
		float v[4][64];
		for (int k = 0; k < 4; k++)
			for (int64_t i = 0; i < t->m; i++)
				v[k][i] = k == 3 ? ot_frand(0.2f, 3) : k == 0 ? ot_frand(0.5f, 2) : ot_frand(-1, 1);
		const char *bn[6] = { cur };
		for (int k = 0; k < 4; k++)
			bn[1 + k] = init(&b, 1, &t->m, v[k]);
		cur = node(&b, "BatchNormalization", bn, &n);
		attr_float("epsilon", 1e-3f);
		end_node(&b, &n);
		if (t->chain == CH_BN_RELU) {
			cur = op1(&b, "Relu", cur);
		} else {
			const char *cl[] = { cur, scalar(&b, 0), scalar(&b, 6), NULL };
			cur = node(&b, "Clip", cl, &n);
			end_node(&b, &n);
		}
		break;
	}
	case CH_LAB_HSWISH4: {
		cur = op2(&b, "Mul", const_node(&b, ot_frand(0.5f, 2)), cur);
		cur = op2(&b, "Add", cur, chan(&b, t->m, 0, -1, 1));
		const char *x = cur;
		const char *a3 = op2(&b, "Add", x, const_node(&b, 3.0f));
		const char *cl[] = { a3, scalar(&b, 0), scalar(&b, 6), NULL };
		const char *c = node(&b, "Clip", cl, &n);
		end_node(&b, &n);
		cur = op2(&b, "Mul", x, c);
		cur = op2(&b, "Div", cur, const_node(&b, 6.0f));
		cur = op2(&b, "Mul", scalar(&b, 0.7f), cur);
		cur = op2(&b, "Add", cur, scalar(&b, -0.2f));
		break;
	}
	case CH_X_HSIG: {
		cur = op2(&b, "Div", cur, chan(&b, t->m, 1, 0.5f, 2));
		cur = op2(&b, "Sub", cur, scalar(&b, 0.25f));
		const char *x = cur;
		const char *h = op1(&b, "HardSigmoid", x);
		cur = op2(&b, "Mul", h, x);
		break;
	}
	case CH_SIGMOID:
		cur = op1(&b, "Sigmoid", cur);
		break;
	case CH_HSIG_POST:
		cur = op1(&b, "HardSigmoid", cur);
		cur = op2(&b, "Div", cur, scalar(&b, 4.0f));
		break;
	case CH_HSWISH_OP:
		cur = op1(&b, "HardSwish", cur);
		break;
	case CH_READ_TWICE: {
		cur = op2(&b, "Mul", cur, scalar(&b, 1.5f));
		const char *r = op1(&b, "Relu", cur);
		cur = op2(&b, "Add", r, cur);
		break;
	}
	case CH_OUTPUT_MID:
		cur = op2(&b, "Mul", cur, scalar(&b, 1.5f));
		*mid = cur;
		cur = op1(&b, "Relu", cur);
		break;
	case CH_LEAKY_MAX:
		cur = node(&b, "LeakyRelu", (const char *[]){ cur, NULL }, &n);
		attr_float("alpha", 0.2f);
		end_node(&b, &n);
		cur = op2(&b, "Max", const_node(&b, -0.3f), cur);
		cur = op2(&b, "Mul", cur, scalar(&b, 1.5f));
		break;
	case CH_LEAKY:
		cur = op1(&b, "LeakyRelu", cur);
		cur = op2(&b, "Max", cur, scalar(&b, -0.02f));
		cur = op2(&b, "Max", scalar(&b, -0.01f), cur);
		break;
	}
	*y = cur;
	int64_t xd[4] = { 1, t->c, t->h, t->w };
	ot_value_info(&b.g, 11, "x", 4, xd);
	ot_value_info(&b.g, 12, cur, -1, NULL);
	if (*mid)
		ot_value_info(&b.g, 12, *mid, -1, NULL);
	ot_model(out, &b.g, 14, NULL);
}

static void fused_vs_reference(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const struct fcase *t = &cases[i];
		pbw bytes;
		const char *y, *mid;
		build(t, &bytes, &y, &mid);
		float *x = ot_rand_new((size_t)(t->c * t->h * t->w), -2, 2);
		aidos_tensor in = { .name = "x", .dtype = AIDOS_DT_FLOAT, .rank = 4,
				    .dims = { 1, t->c, t->h, t->w }, .data = x };
		/* every GEMM micro-kernel this CPU runs (its store applies the
		 * epilogue), on 1 and 2 threads; the chain gone from the plan */
		ot_check_vs_ref(&bytes, 1, &in, 1, 1e-4, t->steps, t->name);
		free(x);
		free(bytes.b);
	}
}

/* hal_epilogue_apply against the definitions of ir_epilogue, at lengths
 * around the vector width, on values around every kink. */
static void epilogue_apply(void **state)
{
	static const ir_epilogue eps[] = {
		{ IR_ACT_NONE, 0, 0, 2.0f, 1.0f },
		{ IR_ACT_RELU, 0, 0, 1.0f, 0.0f },
		{ IR_ACT_CLIP, -0.5f, 6.0f, 0.5f, -1.0f },
		{ IR_ACT_HARDSIGMOID, 0.2f, 0.5f, 1.0f, 0.0f },
		{ IR_ACT_HARDSWISH, 1.0f / 6, 0.5f, -1.5f, 0.25f },
		{ IR_ACT_SIGMOID, 0, 0, 1.0f, 0.0f },
		{ IR_ACT_LEAKYRELU, 0.2f, -INFINITY, 1.0f, 0.0f },
		{ IR_ACT_LEAKYRELU, 0.1f, -0.5f, 2.0f, 0.5f },
	};
	(void)state;
	float y[37], x[37];
	for (size_t e = 0; e < sizeof eps / sizeof eps[0]; e++)
		for (int n = 0; n <= 37; n++) {
			for (int i = 0; i < n; i++)
				x[i] = y[i] = ot_frand(-8, 8);
			hal_epilogue_apply(&eps[e], y, n);
			for (int i = 0; i < n; i++) {
				const ir_epilogue *p = &eps[e];
				double v = x[i], a;
				switch (p->act) {
				case IR_ACT_RELU: a = v > 0 ? v : 0; break;
				case IR_ACT_CLIP: a = fmin(fmax(v, p->a), p->b); break;
				case IR_ACT_HARDSIGMOID: a = fmax(0, fmin(1, p->a * v + p->b)); break;
				case IR_ACT_HARDSWISH: a = v * fmax(0, fmin(1, p->a * v + p->b)); break;
				case IR_ACT_SIGMOID: a = 1 / (1 + exp(-v)); break;
				case IR_ACT_LEAKYRELU: a = fmax(v < 0 ? p->a * v : v, p->b); break;
				default: a = v;
				}
				double want = p->post_s * a + p->post_b;
				if (!(fabs(y[i] - want) <= 1e-6 * (1 + fabs(want))))
					fail_msg("act %d n %d: y[%d] = %.9g, want %.9g", p->act, n, i, y[i],
						 want);
			}
		}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(epilogue_apply),
		cmocka_unit_test(fused_vs_reference),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
