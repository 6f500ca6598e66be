/*
 * hal/ops/vmath.c - the kernels of hal/ops/vmath.h, once per ISA.
 *
 * Each function below is written as straight-line float code with selects
 * instead of branches (bits moved with memcpy, which gcc turns into lane
 * reinterpretations), so the loops over it vectorise; the loops are compiled
 * for AVX2+FMA and for the baseline, and hal_vm_get picks one by cpuid.
 * Approximations: exp after Cephes expf (Moshier: range reduction by
 * ln 2 in two parts, degree-6 polynomial); tanh: Cephes tanhf's odd
 * polynomial below 0.625, 1 - 2/(e^2|x| + 1) above; erf: its Taylor series
 * to x^13 below 0.5, above it 1 - erfc with erfc from the Chebyshev fit of
 * Numerical Recipes (2nd ed., 6.2: fractional error < 1.2e-7).
 */
#include <string.h>
#include "hal/ops/vmath.h"

#define VM_INLINE static inline __attribute__((always_inline))

VM_INLINE float vm_f(uint32_t u)
{
	float f;
	memcpy(&f, &u, sizeof f);
	return f;
}

VM_INLINE uint32_t vm_u(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof u);
	return u;
}

/* e^x. Below -87.33 (e^x under FLT_MIN) the result is 0: flushed rather
 * than denormal, whose arithmetic costs a microcode assist per lane (masked
 * attention scores are -3.4e38); above 88.8 inf. The scale 2^n is applied
 * in two halves so that n = 128 needs no exponent field out of range. NaN
 * propagates through the clamps. */
VM_INLINE float vm_exp(float x)
{
	const float xin = x;
	x = x < -87.33f ? -87.33f : x;
	x = x > 88.8f ? 88.8f : x;
	float t = x * 1.44269504088896341f + 12582912.0f;   /* 1.5 * 2^23: rounds to an integer */
	float n = t - 12582912.0f;
	int32_t ni = (int32_t)(vm_u(t) - 0x4B400000u);
	float r = x - n * 0.693359375f;
	r = r - n * -2.12194440e-4f;
	float p = 1.9875691500e-4f;
	p = p * r + 1.3981999507e-3f;
	p = p * r + 8.3334519073e-3f;
	p = p * r + 4.1665795894e-2f;
	p = p * r + 1.6666665459e-1f;
	p = p * r + 5.0000001201e-1f;
	float y = p * (r * r) + r + 1.0f;
	int32_t n1 = ni >> 1, n2 = ni - n1;
	y *= vm_f((uint32_t)(n1 + 127) << 23);
	y *= vm_f((uint32_t)(n2 + 127) << 23);
	return xin < -87.33f ? 0.0f : y;
}

VM_INLINE float vm_copysign(float mag, float sgn)
{
	return vm_f((vm_u(mag) & 0x7fffffffu) | (vm_u(sgn) & 0x80000000u));
}

VM_INLINE float vm_tanh(float x)
{
	float a = vm_f(vm_u(x) & 0x7fffffffu);
	float z = x * x;
	float p = -5.70498872745e-3f;
	p = p * z + 2.06390887954e-2f;
	p = p * z - 5.37397155531e-2f;
	p = p * z + 1.33314422036e-1f;
	p = p * z - 3.33332819422e-1f;
	float small = vm_copysign(p * z * x + x, x);   /* keeps -0 */
	float e = vm_exp(2.0f * a);
	float big = vm_copysign(1.0f - 2.0f / (e + 1.0f), x);
	return a < 0.625f ? small : big;
}

/* Numerical Recipes' erfc(a) = t exp(-a^2 + q(t)) for a >= 0, t = 1/(1 + a/2):
 * returns the degree-9 polynomial q(t) (Horner). */
VM_INLINE float vm_erfc_q(float t)
{
	float q = 0.17087277f;
	q = q * t - 0.82215223f;
	q = q * t + 1.48851587f;
	q = q * t - 1.13520398f;
	q = q * t + 0.27886807f;
	q = q * t - 0.18628806f;
	q = q * t + 0.09678418f;
	q = q * t + 0.37409196f;
	q = q * t + 1.00002368f;
	q = q * t - 1.26551223f;
	return q;
}

VM_INLINE float vm_erf(float x)
{
	float a = vm_f(vm_u(x) & 0x7fffffffu);
	float z = x * x;
	/* 2/sqrt(pi) * sum (-1)^k x^(2k+1) / (k! (2k+1)), k = 0..6 */
	float p = 1.0f / 9360.0f;
	p = p * z - 1.0f / 1320.0f;
	p = p * z + 1.0f / 216.0f;
	p = p * z - 1.0f / 42.0f;
	p = p * z + 1.0f / 10.0f;
	p = p * z - 1.0f / 3.0f;
	p = p * z + 1.0f;
	float small = vm_copysign(p * x * 1.12837916709551257f, x);   /* keeps -0 */
	/* erfc(4) = 1.5e-8 rounds 1 - erfc to 1 already; the clamp keeps inf
	 * out and exp's result far from denormals. */
	float ac = a > 4.0f ? 4.0f : a;
	float t = 1.0f / (1.0f + 0.5f * ac);
	float q = vm_erfc_q(t);
	float erfc = t * vm_exp(q - ac * ac);
	float big = vm_copysign(1.0f - erfc, x);
	big = a != a ? x : big;   /* NaN */
	return a < 0.5f ? small : big;
}

VM_INLINE float vm_sigmoid(float x)
{
	return 1.0f / (1.0f + vm_exp(-x));
}

/* 0.5 x (1 + erf(x / sqrt 2)) as x (1 - erfc(|x|/sqrt 2) / 2) for x >= 0 and
 * x erfc(|x|/sqrt 2) / 2 below: erfc's fit alone (one exp, no Taylor branch
 * and no select between the two), and no cancellation in 1 + erf for
 * negative x, so the error is relative everywhere. |x|/sqrt 2 is clamped at
 * 10, where exp flushes erfc to 0; +inf gives inf, -inf NaN. */
VM_INLINE float vm_gelu_erf(float x)
{
	float a = vm_f(vm_u(x) & 0x7fffffffu) * 0.70710678118654752f;
	float ac = a > 10.0f ? 10.0f : a;
	float t = 1.0f / (1.0f + 0.5f * ac);
	float q = vm_erfc_q(t);
	float h = 0.5f * t * vm_exp(q - ac * ac);   /* erfc(a) / 2 */
	return x * (x < 0.0f ? h : 1.0f - h);
}

/* 0.5 x (1 + erf(u)), u = x / sqrt 2, erf(|u|) = |u| P(u^2) / Q(u^2) for
 * |u| < 3.9 (degree 5 over degree 5, fitted to erf on [0, 4] by iteratively
 * reweighted least squares, numpy, for the smallest largest error: 3.3e-7
 * evaluated in float) and 1 from there (erf(3.9) = 1 - 3.5e-8), so that
 * 1 + erf(u) is exactly 0 far out on the negative side. One division, no
 * exp. NaN propagates; +inf gives inf, -inf NaN, as 0.5 x (1 + erf) does. */
VM_INLINE float vm_gelu_erf_fast(float x)
{
	float u = x * 0.70710678118654752f;
	float a = vm_f(vm_u(u) & 0x7fffffffu);
	float z = a * a;
	float p = 1.974951892608212e-06f;
	p = p * z + 2.8803861298194733e-04f;
	p = p * z + 4.003317349109544e-03f;
	p = p * z + 5.346647264060875e-02f;
	p = p * z + 1.962406946260207e-01f;
	p = p * z + 1.1283789765353875f;
	float q = 3.7481982374042155e-05f;
	q = q * z + 1.2162889641967132e-03f;
	q = q * z + 1.5443757739364131e-02f;
	q = q * z + 1.1647308470086241e-01f;
	q = q * z + 5.072449475002534e-01f;
	q = q * z + 1.0f;
	float e = a < 3.9f ? a * p / q : 1.0f;
	e = a != a ? a : e;   /* NaN */
	return 0.5f * x * (1.0f + vm_copysign(e, u));
}

/* 0.5 x (1 + tanh(y)) = x / (1 + e^(-2y)): one exp and one division, where
 * tanh computes both its polynomial and its exp form and selects; no
 * cancellation for negative x either (e^(-2y) large, not 1 + tanh near 0).
 * Far negative x: e^(-2y) overflows to inf and x / inf gives -0. */
VM_INLINE float vm_gelu_tanh(float x)
{
	float y2 = -1.59576912160573072f * (x + 0.044715f * x * x * x);   /* -2y */
	return x / (1.0f + vm_exp(y2));
}

/* Softmax rows: the max, then exp and sum in one pass writing y, then a
 * scale. The max and the sum are kept in 8 independent lanes (a single
 * running max was a compare-and-select chain, one element per its latency:
 * half of attention's softmax time); n is at most a few thousand here. A
 * NaN is skipped by the max unless it is x[0], as in one running max. */
#define VM_SOFTMAX(SFX, ATTR) \
ATTR static void softmax_##SFX(float *y, const float *x, int64_t rows, int64_t n) \
{ \
	for (int64_t r = 0; r < rows; r++, x += n, y += n) { \
		float mv[8]; \
		for (int l = 0; l < 8; l++) \
			mv[l] = x[0]; \
		int64_t i = 1; \
		for (; i + 8 <= n; i += 8) \
			for (int l = 0; l < 8; l++) \
				mv[l] = x[i + l] > mv[l] ? x[i + l] : mv[l]; \
		float m = mv[0]; \
		for (int l = 1; l < 8; l++) \
			m = mv[l] > m ? mv[l] : m; \
		for (; i < n; i++) \
			m = x[i] > m ? x[i] : m; \
		float acc[8] = { 0 }; \
		i = 0; \
		for (; i + 8 <= n; i += 8) \
			for (int l = 0; l < 8; l++) { \
				float e = vm_exp(x[i + l] - m); \
				y[i + l] = e; \
				acc[l] += e; \
			} \
		float sum = 0; \
		for (; i < n; i++) { \
			y[i] = vm_exp(x[i] - m); \
			sum += y[i]; \
		} \
		for (int l = 0; l < 8; l++) \
			sum += acc[l]; \
		float inv = 1.0f / sum; \
		for (i = 0; i < n; i++) \
			y[i] *= inv; \
	} \
}

#define VM_LOOP(NAME, FN, SFX, ATTR) \
ATTR static void NAME##_##SFX(float *o, const float *x, int64_t n) \
{ \
	for (int64_t i = 0; i < n; i++) \
		o[i] = FN(x[i]); \
}

#define VM_ISA(SFX, ATTR) \
	VM_LOOP(exp, vm_exp, SFX, ATTR) \
	VM_LOOP(tanh, vm_tanh, SFX, ATTR) \
	VM_LOOP(erf, vm_erf, SFX, ATTR) \
	VM_LOOP(sigmoid, vm_sigmoid, SFX, ATTR) \
	VM_LOOP(gelu_erf, vm_gelu_erf, SFX, ATTR) \
	VM_LOOP(gelu_tanh, vm_gelu_tanh, SFX, ATTR) \
	VM_LOOP(gelu_erf_fast, vm_gelu_erf_fast, SFX, ATTR) \
	VM_SOFTMAX(SFX, ATTR) \
	static const hal_vm_fn tab_##SFX[HAL_VM_N] = { \
		exp_##SFX, tanh_##SFX, erf_##SFX, sigmoid_##SFX, gelu_erf_##SFX, gelu_tanh_##SFX, \
		gelu_erf_fast_##SFX, \
	};

VM_ISA(generic, )
#if defined(__x86_64__) || defined(__i386__)
#define HAVE_AVX2 1
VM_ISA(avx2, __attribute__((target("avx2,fma"))))
#else
#define HAVE_AVX2 0
#endif

static int has_avx2(void)
{
#if HAVE_AVX2
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
	return 0;
#endif
}

hal_vm_fn hal_vm_get_isa(int func, const char *isa)
{
	if (func < 0 || func >= HAL_VM_N || !isa)
		return NULL;
	if (!strcmp(isa, "generic"))
		return tab_generic[func];
#if HAVE_AVX2
	if (!strcmp(isa, "avx2") && has_avx2())
		return tab_avx2[func];
#endif
	return NULL;
}

hal_vm_fn hal_vm_get(int func)
{
	hal_vm_fn f = hal_vm_get_isa(func, "avx2");
	return f ? f : hal_vm_get_isa(func, "generic");
}

void hal_vm_softmax_rows(float *y, const float *x, int64_t rows, int64_t n)
{
#if HAVE_AVX2
	static int avx2 = -1;   /* racy first use writes the same value: benign */
	if (avx2 < 0)
		__atomic_store_n(&avx2, has_avx2(), __ATOMIC_RELAXED);
	if (__atomic_load_n(&avx2, __ATOMIC_RELAXED)) {
		softmax_avx2(y, x, rows, n);
		return;
	}
#endif
	softmax_generic(y, x, rows, n);
}
