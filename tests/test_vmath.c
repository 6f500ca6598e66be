/*
 * tests/test_vmath.c - the vectorised float32 functions of hal/ops/vmath.h
 * against libm in double precision, on every ISA this CPU runs.
 *
 * Inputs: a dense sweep of [-20, 20] (200,003 points, so every lane
 * position and loop tail is hit), the regions where each approximation
 * switches formula (0.5, 0.625, 4 and around them), the extremes of exp's
 * range, and odd lengths 0..67 (vector tails). Bounds (stated per function
 * in vmath.h): |got - want| <= abs_tol + rel_tol * |want|. Special values:
 * NaN -> NaN, +-inf -> the limits, +-0 -> +-0 for the odd functions.
 */
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "hal/ops/vmath.h"

static const char *const isas[] = { "generic", "avx2" };

static double ref_sigmoid(double x) { return 1 / (1 + exp(-x)); }
/* 1 + erf(y) = erfc(-y): no cancellation for negative x */
static double ref_gelu_erf(double x) { return 0.5 * x * erfc(-x / sqrt(2.0)); }
static double ref_gelu_tanh(double x)
{
	return 0.5 * x * (1 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
}

struct fn_case {
	int func;
	double (*ref)(double);
	double abs_tol, rel_tol;
};

static const struct fn_case cases[] = {
	{ HAL_VM_EXP, exp, 1.2e-38, 4e-7 },   /* flushed under FLT_MIN */
	{ HAL_VM_TANH, tanh, 2e-7, 4e-7 },
	{ HAL_VM_ERF, erf, 3e-7, 4e-7 },
	{ HAL_VM_SIGMOID, ref_sigmoid, 1e-38, 4e-7 },
	{ HAL_VM_GELU_ERF, ref_gelu_erf, 1e-6, 1e-6 },
	{ HAL_VM_GELU_TANH, ref_gelu_tanh, 1e-6, 1e-6 },
	/* absolute, 2.5e-7 |x| (vmath.h): up to 1.2e-6 near x = -5.5, where
	 * the exact value is -1e-7 */
	{ HAL_VM_GELU_ERF_FAST, ref_gelu_erf, 1.2e-6, 1e-6 },
};

static void check_range(hal_vm_fn fn, const struct fn_case *c, const float *x, int64_t n, const char *isa)
{
	float *y = malloc((size_t)(n + 1) * sizeof *y);
	assert_non_null(y);
	y[n] = 12345.0f;   /* canary: nothing past n is written */
	fn(y, x, n);
	assert_true(y[n] == 12345.0f);
	for (int64_t i = 0; i < n; i++) {
		double want = c->ref(x[i]);
		if (want > FLT_MAX) {
			if (!(y[i] > FLT_MAX / 2))
				fail_msg("%s func %d x=%.9g: got %.9g, want overflow", isa, c->func, x[i], y[i]);
			continue;
		}
		double err = fabs((double)y[i] - want);
		if (!(err <= c->abs_tol + c->rel_tol * fabs(want)))
			fail_msg("%s func %d x=%.9g: got %.9g, want %.9g (err %.3g)", isa, c->func, x[i],
				 y[i], want, err);
	}
	free(y);
}

static void vm_accuracy(void **state)
{
	(void)state;
	const int64_t n = 200003;
	float *x = malloc((size_t)n * sizeof *x);
	assert_non_null(x);
	for (int64_t i = 0; i < n; i++)
		x[i] = (float)(-20.0 + 40.0 * (double)i / (double)(n - 1));
	/* switch points and extremes */
	static const float edge[] = { 0.49999997f, 0.5f, 0.50000006f, 0.62499994f, 0.625f, 0.62500006f,
				      3.9999998f, 4.0f, 4.0000005f, 1e-6f, 1e-30f, 87.3f, 87.34f,
				      88.72f, 88.7228f, 88.75f, 100.0f, -87.3f, -87.34f, -88.0f,
				      -103.0f, -1e4f, 1e4f, -3.4e38f };
	int64_t ne = (int64_t)(sizeof edge / sizeof edge[0]);
	float e2[2 * sizeof edge / sizeof edge[0]];
	for (int64_t i = 0; i < ne; i++) {
		e2[2 * i] = edge[i];
		e2[2 * i + 1] = -edge[i];
	}
	int ran = 0;
	for (size_t k = 0; k < sizeof isas / sizeof isas[0]; k++)
		for (size_t f = 0; f < sizeof cases / sizeof cases[0]; f++) {
			hal_vm_fn fn = hal_vm_get_isa(cases[f].func, isas[k]);
			if (!fn)
				continue;   /* this CPU lacks the ISA */
			ran++;
			check_range(fn, &cases[f], x, n, isas[k]);
			check_range(fn, &cases[f], e2, 2 * ne, isas[k]);
			for (int64_t len = 0; len < 68; len++)   /* tails */
				check_range(fn, &cases[f], x + 1000 + len, len, isas[k]);
		}
	assert_true(ran >= 7);
	assert_non_null(hal_vm_get(HAL_VM_EXP));
	assert_null(hal_vm_get(HAL_VM_N));
	free(x);
}

static void vm_special_values(void **state)
{
	(void)state;
	const float in[] = { NAN, INFINITY, -INFINITY, 0.0f, -0.0f };
	for (size_t k = 0; k < sizeof isas / sizeof isas[0]; k++)
		for (int f = 0; f < HAL_VM_N; f++) {
			hal_vm_fn fn = hal_vm_get_isa(f, isas[k]);
			if (!fn)
				continue;
			float y[5];
			fn(y, in, 5);
			assert_true(isnan(y[0]));
			switch (f) {
			case HAL_VM_EXP:
				assert_true(y[1] == INFINITY && y[2] == 0 && y[3] == 1 && y[4] == 1);
				break;
			case HAL_VM_SIGMOID:
				assert_true(y[1] == 1 && y[2] == 0 && y[3] == 0.5f && y[4] == 0.5f);
				break;
			case HAL_VM_TANH:
			case HAL_VM_ERF:
				assert_true(y[1] == 1 && y[2] == -1);
				assert_true(y[3] == 0 && !signbit(y[3]) && y[4] == 0 && signbit(y[4]));
				break;
			default:   /* GELU: inf -> inf, -inf -> NaN as 0.5 x (1 + erf) gives */
				assert_true(y[1] == INFINITY && y[3] == 0 && y[4] == 0);
			}
		}
}

/* Softmax rows against a double reference, with row lengths around the
 * 8-lane blocking and masked (-3.4e38) entries as attention masks give. */
static void vm_softmax(void **state)
{
	(void)state;
	static const int64_t lens[] = { 1, 2, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000 };
	/* amplitude 12, then 150: a max off by more than 88 (any element
	 * but the largest taken) overflows exp */
	for (size_t li = 0; li < 2 * sizeof lens / sizeof lens[0]; li++) {
		const int64_t n = lens[li % (sizeof lens / sizeof lens[0])], rows = 3;
		const double amp = li < sizeof lens / sizeof lens[0] ? 12.0 : 150.0;
		float *x = malloc((size_t)(rows * n) * sizeof *x), *y = malloc((size_t)(rows * n) * sizeof *y);
		assert_non_null(x);
		assert_non_null(y);
		for (int64_t i = 0; i < rows * n; i++)
			x[i] = (float)(sin((double)i * 1.7) * amp);
		if (n > 2)
			x[n + 1] = -FLT_MAX;   /* a masked entry in row 1 */
		hal_vm_softmax_rows(y, x, rows, n);
		for (int64_t r = 0; r < rows; r++) {
			const float *xr = x + r * n;
			double m = xr[0], sum = 0;
			for (int64_t i = 1; i < n; i++)
				m = xr[i] > m ? xr[i] : m;
			for (int64_t i = 0; i < n; i++)
				sum += exp((double)xr[i] - m);
			for (int64_t i = 0; i < n; i++) {
				double want = exp((double)xr[i] - m) / sum;
				double got = y[r * n + i];
				/* x - m rounds in float (as in any float softmax): half an
				 * ulp of |x - m| is that much relative error in exp. */
				double tol = want * (8e-7 + fabs((double)xr[i] - m) * 6e-8) + 1e-30;
				if (!(fabs(got - want) <= tol))
					fail_msg("softmax n=%lld row %lld i %lld: got %.9g want %.9g",
						 (long long)n, (long long)r, (long long)i, got, want);
			}
		}
		hal_vm_softmax_rows(x, x, rows, n);   /* in place */
		assert_memory_equal(x, y, (size_t)(rows * n) * sizeof *x);
		free(x);
		free(y);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(vm_accuracy),
		cmocka_unit_test(vm_special_values),
		cmocka_unit_test(vm_softmax),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
