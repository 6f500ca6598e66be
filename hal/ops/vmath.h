/*
 * hal/ops/vmath.h - vectorised float32 exp, tanh, erf, sigmoid and GELU.
 *
 * The scalar kernels of hal/ops/ call libm per element (exact to an ulp, but
 * 10-25 ns each: Erf and Tanh were a fifth of a BERT-style encoder's time).
 * These are branch-free approximations gcc vectorises, compiled once per ISA
 * (AVX2+FMA, baseline) in hal/ops/vmath.c and picked with cpuid at plan time.
 * Accuracy (tests/test_vmath.c checks it against libm in double on a dense
 * sweep plus the special values): exp, sigmoid a few ulp relative; tanh, erf,
 * gelu within 3e-7 absolute and 1e-6 relative away from zero. NaN in, NaN
 * out; +-inf give the limits.
 *
 * Used only when hal_use_reference is 0: the libm loops stay the reference.
 */
#ifndef AIDOS_HAL_OPS_VMATH_H
#define AIDOS_HAL_OPS_VMATH_H

#include <stdint.h>

/* One kernel over n contiguous floats: o[i] = f(x[i]); o may equal x. */
typedef void (*hal_vm_fn)(float *o, const float *x, int64_t n);

enum hal_vm_func {
	HAL_VM_EXP = 0,
	HAL_VM_TANH = 1,
	HAL_VM_ERF = 2,
	HAL_VM_SIGMOID = 3,
	HAL_VM_GELU_ERF = 4,    /* 0.5 x (1 + erf(x / sqrt 2)) */
	HAL_VM_GELU_TANH = 5,   /* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
	/* 0.5 x (1 + erf(x / sqrt 2)) with erf as a rational function (half
	 * the operations of HAL_VM_GELU_ERF and no exp: 1.8 -> 0.56 ns per
	 * element on AVX2): error within 2.5e-7 |x| (measured 2.2e-7 |x|),
	 * absolute, not relative, so below x = -5.5 it gives -0 where the
	 * exact value is about -1e-7. For a MatMul's fused epilogue; the Gelu
	 * and Erf ops keep the relative-error kernels. */
	HAL_VM_GELU_ERF_FAST = 6,
	HAL_VM_N = 7,
};

/* The kernel of func for this CPU (AVX2+FMA when it has them), or for the
 * named ISA ("avx2", "generic": tests); NULL when the CPU lacks that ISA or
 * func is out of range. Thread-safe, no allocation. */
hal_vm_fn hal_vm_get(int func);
hal_vm_fn hal_vm_get_isa(int func, const char *isa);

/* Softmax over each of rows contiguous rows of n floats (n >= 1), max-
 * subtracted: y = exp(x - max) / sum. y may equal x. The ISA of hal_vm_get. */
void hal_vm_softmax_rows(float *y, const float *x, int64_t rows, int64_t n);

#endif
