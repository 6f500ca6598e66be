/*
 * hal/ops/elementwise.c - scalar reference kernels for the ONNX elementwise
 * operators: arithmetic and comparison with numpy broadcasting, activations,
 * logic, Where, Clip, Cast, Softmax/LogSoftmax.
 *
 * Every op but Softmax runs through one driver. infer() computes the output
 * shape (ONNX "multidirectional broadcasting", docs/Broadcasting.md of the
 * onnx repo) and a bc_plan: the output dims with runs of dims that broadcast
 * the same way merged, and each input's element stride per merged dim (0
 * where the input is broadcast). exec() splits the flat output range across
 * threads; each piece walks the plan row by row and calls a typed kernel on
 * the innermost run, where every input's stride is 0 or 1. Same-shape inputs
 * therefore cost one kernel call per thread, a scalar operand is a stride-0
 * input, and a trailing vector ([N,C] + [C]) is rows of length C. The typed
 * kernels branch on those strides once so the compiler can vectorise each
 * loop (gcc does so only with -O3 or -fvect-cost-model=dynamic; at plain -O2
 * a select such as Relu's stays a per-element branch).
 *
 * A kernel table has one entry per input dtype; a NULL entry means the op
 * does not take that type (infer() says so). Integer arithmetic wraps like
 * two's complement and never traps: x/0 and x%0 give 0, INT_MIN/-1 wraps.
 * Float->integer conversions saturate to int64 (NaN gives 0), then wrap to
 * the width, instead of invoking C's undefined behaviour; ONNX leaves those
 * cases undefined. float16 is computed in float and rounded back to nearest
 * even, as ONNX Runtime does (Softmax takes float and double only).
 */
#include <float.h>
#include <stdio.h>
#include <string.h>
#include <tgmath.h>
#include "hal/hal.h"
#include "hal/ops/vmath.h"
#include "hal/plan.h"

#define NDT (HAL_DT_BF16 + 1)   /* kernel tables are indexed by dtype */
#define GRAIN_CHEAP 32768      /* elements per thread chunk: memory-bound ops */
#define GRAIN_MATH 4096        /* exp, erf, pow, ... */

/* ---- broadcast plans ---- */

#define BC_MAX_IN 3

typedef struct bc_plan {
	int n_in;
	int rank;                                /* >= 1 after merging */
	int64_t numel;
	int64_t dims[HAL_MAX_RANK];              /* merged output dims */
	int64_t st[BC_MAX_IN][HAL_MAX_RANK];     /* element strides, 0 = broadcast */
} bc_plan;

/* Innermost-run kernel: n outputs at o; input k starts at in[k] and steps by
 * st[k] (0 or 1) elements. arg is the op's ew_args. */
typedef void (*ew_fn)(void *o, const void *const *in, const int64_t *st, int64_t n,
		      const void *arg);

/* Builds the plan of inputs t[0..n) broadcast to the output dims od[0..orank).
 * Callers have checked that the shapes broadcast to od. */
static void bc_build(bc_plan *p, int orank, const int64_t *od, int n, const hal_tensor *const *t)
{
	unsigned mask[HAL_MAX_RANK];   /* bit k: input k spans this dim */
	int64_t dims[HAL_MAX_RANK];
	int r = 0;

	for (int d = 0; d < orank; d++) {
		if (od[d] == 1)
			continue;
		unsigned m = 0;
		for (int k = 0; k < n; k++) {
			int id = d - (orank - t[k]->rank);
			if (id >= 0 && t[k]->dims[id] != 1)
				m |= 1u << k;
		}
		if (r > 0 && mask[r - 1] == m) {
			dims[r - 1] *= od[d];
		} else {
			mask[r] = m;
			dims[r++] = od[d];
		}
	}
	if (r == 0) {
		mask[0] = 0;
		dims[0] = 1;
		r = 1;
	}
	memset(p, 0, sizeof *p);
	p->n_in = n;
	p->rank = r;
	p->numel = 1;
	for (int d = 0; d < r; d++) {
		p->dims[d] = dims[d];
		p->numel *= dims[d];
	}
	for (int k = 0; k < n; k++) {
		int64_t run = 1;
		for (int d = r - 1; d >= 0; d--) {
			if (mask[d] >> k & 1) {
				p->st[k][d] = run;
				run *= dims[d];
			}
		}
	}
}

typedef struct ew_job {
	const bc_plan *bp;
	ew_fn fn;
	const void *arg;
	char *out;
	size_t osz;
	const char *in[BC_MAX_IN];
	size_t isz[BC_MAX_IN];
} ew_job;

/* Output elements [i0, i1) of one plan: row by row over the innermost dim. */
static void ew_range(void *vjob, int64_t i0, int64_t i1)
{
	const ew_job *j = vjob;
	const bc_plan *p = j->bp;
	const int r = p->rank, k = p->n_in;
	int64_t idx[HAL_MAX_RANK], off[BC_MAX_IN] = { 0, 0, 0 }, ist[BC_MAX_IN] = { 0, 0, 0 };
	const void *ptr[BC_MAX_IN] = { NULL, NULL, NULL };
	int64_t rem = i0;

	for (int d = r - 1; d >= 0; d--) {
		idx[d] = rem % p->dims[d];
		rem /= p->dims[d];
		for (int t = 0; t < k; t++)
			off[t] += idx[d] * p->st[t][d];
	}
	for (int t = 0; t < k; t++)
		ist[t] = p->st[t][r - 1];

	for (int64_t i = i0; i < i1;) {
		int64_t n = p->dims[r - 1] - idx[r - 1];
		if (n > i1 - i)
			n = i1 - i;
		for (int t = 0; t < k; t++)
			ptr[t] = j->in[t] + (size_t)off[t] * j->isz[t];
		j->fn(j->out + (size_t)i * j->osz, ptr, ist, n, j->arg);
		i += n;
		if (i >= i1)
			break;
		/* The row is done: back to its start, then carry into outer dims. */
		for (int t = 0; t < k; t++)
			off[t] -= idx[r - 1] * ist[t];
		idx[r - 1] = 0;
		for (int d = r - 2; d >= 0; d--) {
			idx[d]++;
			for (int t = 0; t < k; t++)
				off[t] += p->st[t][d];
			if (idx[d] < p->dims[d])
				break;
			for (int t = 0; t < k; t++)
				off[t] -= p->dims[d] * p->st[t][d];
			idx[d] = 0;
		}
	}
}

static void ew_run(hal_step *s, const bc_plan *p, ew_fn fn, const void *arg, hal_tensor *out,
		   const hal_tensor *const *in, int64_t grain)
{
	if (p->numel == 0)
		return;
	ew_job j = { .bp = p, .fn = fn, .arg = arg, .out = out->data,
		     .osz = hal_dtype_size(out->dtype) };
	for (int k = 0; k < p->n_in; k++) {
		j.in[k] = in[k]->data;
		j.isz[k] = hal_dtype_size(in[k]->dtype);
	}
	hal_parallel_for(s, p->numel, grain, ew_range, &j);
}

/* ---- op descriptors and parameters ---- */

/* Per-node values the kernels read (from attributes at plan time, Clip's
 * bounds from its inputs at run time). */
typedef struct ew_args {
	float alpha, beta, gamma;
	int flag[2];
	int xdt;                   /* Pow: exponent dtype */
	double scale;              /* Mean: 1/n */
	unsigned char lo[8], hi[8];  /* Clip bounds, in the element type */
	hal_vm_fn vm;              /* k_vm: the vectorised float32 function */
} ew_args;

typedef struct ew_params {
	ew_fn fn;                  /* the kernel for this node's dtypes */
	ew_fn fin;                 /* Mean: final scaling; else NULL */
	int64_t grain;
	ew_args args;
	int n_bc;
	bc_plan bc[];              /* one, or n_in - 1 for variadic ops */
} ew_params;

typedef struct ew_op ew_op;
struct ew_op {
	hal_op op;                 /* first: s->op points here */
	const ew_fn *tab;          /* kernels by input dtype */
	int out_dt;                /* 0: the input's dtype; else this one */
	int math;                  /* 1: transcendental (smaller grain) */
	int (*setup)(hal_step *s, ew_params *p);  /* attributes; may be NULL */
};

static const ew_op *ew_of(const hal_step *s)
{
	return (const ew_op *)s->op;
}

/* "[2,3,4]" into buf. */
static const char *shape_str(const hal_tensor *t, char *buf, size_t n)
{
	size_t k = 0;
	k += (size_t)snprintf(buf, n, "[");
	for (int i = 0; i < t->rank && i < HAL_MAX_RANK && k < n; i++)
		k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? "," : "", (long long)t->dims[i]);
	if (k < n)
		snprintf(buf + k, n - k, "]");
	return buf;
}

/* Validates input i as a present tensor with a sane shape. */
static int check_in(hal_step *s, int i)
{
	const hal_tensor *t = i < s->n_in ? s->in[i] : NULL;
	if (!t)
		return hal_err(s, AIDOS_E_INVALID, "input %d is missing", i);
	if (t->rank < 0 || t->rank > HAL_MAX_RANK)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "input %d has rank %d (at most %d)", i,
			       (int)t->rank, HAL_MAX_RANK);
	for (int d = 0; d < t->rank; d++)
		if (t->dims[d] < 0)
			return hal_err(s, AIDOS_E_SHAPE, "input %d has dim %d = %lld", i, d,
				       (long long)t->dims[d]);
	if (hal_dtype_size(t->dtype) == 0)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "input %d has type %s", i,
			       hal_dtype_name(t->dtype));
	return 0;
}

static int check_n_in(hal_step *s, int lo, int hi)
{
	if (s->n_in < lo || s->n_in > hi) {
		if (lo == hi)
			return hal_err(s, AIDOS_E_INVALID, "takes %d inputs, got %d", lo, s->n_in);
		return hal_err(s, AIDOS_E_INVALID, "takes %d to %d inputs, got %d", lo, hi, s->n_in);
	}
	if (s->n_out < 1 || !s->out[0])
		return hal_err(s, AIDOS_E_INVALID, "has no output");
	for (int i = 0; i < lo; i++) {
		int rc = check_in(s, i);
		if (rc)
			return rc;
	}
	return 0;
}

static ew_fn tab_fn(const ew_fn *tab, int dt)
{
	return dt > 0 && dt < NDT ? tab[dt] : NULL;
}

static int type_err(hal_step *s, int dt)
{
	return hal_err(s, AIDOS_E_UNSUPPORTED, "input type %s is not supported", hal_dtype_name(dt));
}

/* Broadcasts the shapes of t[0..n) into od; returns the rank or an error. */
static int bcast_all(hal_step *s, int n, const hal_tensor *const *t, int64_t *od)
{
	hal_tensor acc;
	memset(&acc, 0, sizeof acc);
	hal_tensor_like(&acc, t[0]);
	for (int k = 1; k < n; k++) {
		int64_t d[HAL_MAX_RANK];
		int r = hal_broadcast_shape(&acc, t[k], d);
		if (r < 0) {
			char b1[160], b2[160];
			return hal_err(s, AIDOS_E_SHAPE, "inputs of shape %s and %s do not broadcast",
				       shape_str(&acc, b1, sizeof b1), shape_str(t[k], b2, sizeof b2));
		}
		acc.rank = r;
		memcpy(acc.dims, d, (size_t)r * sizeof *d);
	}
	memcpy(od, acc.dims, (size_t)acc.rank * sizeof *od);
	return acc.rank;
}

static ew_params *params_alloc(hal_step *s, int n_bc)
{
	ew_params *p = hal_step_alloc(s, sizeof *p + (size_t)n_bc * sizeof(bc_plan));
	if (p)
		p->n_bc = n_bc;
	return p;
}

/* ---- type lists; X(a, suffix, C type, dtype) ---- */
#define FLT_TYPES(X, a) X(a, f32, float, HAL_DT_F32) X(a, f64, double, HAL_DT_F64)
#define SINT_TYPES(X, a) X(a, i8, int8_t, HAL_DT_I8) X(a, i16, int16_t, HAL_DT_I16) \
	X(a, i32, int32_t, HAL_DT_I32) X(a, i64, int64_t, HAL_DT_I64)
#define UINT_TYPES(X, a) X(a, u8, uint8_t, HAL_DT_U8) X(a, u16, uint16_t, HAL_DT_U16) \
	X(a, u32, uint32_t, HAL_DT_U32) X(a, u64, uint64_t, HAL_DT_U64)
#define BOOL_TYPES(X, a) X(a, b8, uint8_t, HAL_DT_BOOL)

#define TAB_ENT(a, sfx, T, DT) [DT] = k_##a##_##sfx,

/* ---- scalar helpers (wrapping, non-trapping integer math) ---- */

static inline int64_t sdiv64(int64_t x, int64_t y)
{
	if (y == 0)
		return 0;
	if (y == -1)
		return (int64_t)(0 - (uint64_t)x);
	return x / y;
}

static inline int64_t smod64(int64_t x, int64_t y, int fmod_sign)
{
	if (y == 0 || y == -1)
		return 0;
	int64_t r = x % y;
	if (!fmod_sign && r != 0 && ((r < 0) != (y < 0)))
		r += y;
	return r;
}

static inline double fmod_py(double x, double y)
{
	double r = fmod(x, y);
	if (r != 0 && ((r < 0) != (y < 0)))
		r += y;
	return r;
}

static inline int64_t ipow64(int64_t b, int64_t e)
{
	if (e < 0)
		return b == 1 ? 1 : b == -1 ? ((e & 1) ? -1 : 1) : 0;
	uint64_t r = 1, x = (uint64_t)b;
	while (e) {
		if (e & 1)
			r *= x;
		x *= x;
		e >>= 1;
	}
	return (int64_t)r;
}

/* C's float->integer conversion is undefined out of range: saturate. */
static inline int64_t f2i64(double v)
{
	if (v != v)
		return 0;
	if (v >= 9223372036854775807.0)
		return INT64_MAX;
	if (v <= -9223372036854775808.0)
		return INT64_MIN;
	return (int64_t)v;
}

static inline uint64_t f2u64(double v)
{
	if (v >= 18446744073709551615.0)
		return UINT64_MAX;
	if (v >= 0)
		return (uint64_t)v;
	return (uint64_t)f2i64(v);   /* like numpy on x86: -1.0 -> 0xff..ff */
}

/* IEEE half <-> float, round to nearest even. */
static inline float h2f(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff, bits;
	float f;
	if (e == 0) {
		f = (float)m * 5.9604644775390625e-8f;   /* m * 2^-24 */
		memcpy(&bits, &f, 4);
		bits |= sign;
	} else if (e == 31) {
		bits = sign | 0x7f800000u | (m << 13);
	} else {
		bits = sign | ((e + 112) << 23) | (m << 13);
	}
	memcpy(&f, &bits, 4);
	return f;
}

/* bfloat16 <-> float: widening is exact (the 16 bits are float32's top
 * half); narrowing rounds to nearest, ties to even, as the ONNX Cast spec
 * (opset 13+) and ONNX Runtime do; NaN stays a quiet NaN of the same sign. */
static inline float bf2f(uint16_t h)
{
	uint32_t bits = (uint32_t)h << 16;
	float f;
	memcpy(&f, &bits, 4);
	return f;
}

static inline uint16_t f2bf(float f)
{
	uint32_t bits;
	memcpy(&bits, &f, 4);
	if ((bits & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((bits >> 16) | 0x40);
	bits += 0x7fffu + ((bits >> 16) & 1);   /* carries into the exponent: inf on overflow */
	return (uint16_t)(bits >> 16);
}

static inline uint16_t f2h(float f)
{
	uint32_t bits;
	memcpy(&bits, &f, 4);
	uint16_t sign = (uint16_t)((bits >> 16) & 0x8000);
	uint32_t a = bits & 0x7fffffffu;
	if (a >= 0x7f800000u)   /* inf, nan (quiet) */
		return sign | 0x7c00 | (a > 0x7f800000u ? (uint16_t)(0x200 | ((a >> 13) & 0x3ff)) : 0);
	if (a >= 0x477ff000u)   /* rounds to >= 65520: inf */
		return sign | 0x7c00;
	if (a < 0x38800000u) {  /* below 2^-14: subnormal half */
		float v;
		memcpy(&v, &a, 4);
		return sign | (uint16_t)nearbyint(v * 16777216.0f);
	}
	return sign | (uint16_t)((a - (112u << 23) + 0xfffu + ((a >> 13) & 1)) >> 13);
}

static inline float sigmoid_f(float x)
{
	float e = exp(-fabs(x));
	return x >= 0 ? 1 / (1 + e) : e / (1 + e);
}

static inline double sigmoid_d(double x)
{
	double e = exp(-fabs(x));
	return x >= 0 ? 1 / (1 + e) : e / (1 + e);
}

#define SIGMOID(x) _Generic((x), float: sigmoid_f, default: sigmoid_d)(x)

static inline float softplus_f(float x)
{
	return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x));
}

static inline double softplus_d(double x)
{
	return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x));
}

#define SOFTPLUS(x) _Generic((x), float: softplus_f, default: softplus_d)(x)

/* ---- kernel templates ---- */

/* The loops below are compiled for the baseline and for AVX2 (x86-64-v3),
 * the ifunc resolver picking one at load: 8 floats per instruction instead
 * of 4 for the cheap ops, which run from L1 inside fused steps (hal/plan.c)
 * and were then bound by SSE throughput (PaddleOCR rec: a third of its time
 * in Add/Mul/Clip/Div). */
#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define EW_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define EW_CLONES
#endif

/* Unary: out = EXPR(x), T -> TO. p: the node's ew_args. */
#define UN_KERNEL(a, sfx, T, TO, EXPR) \
EW_CLONES static void k_##a##_##sfx(void *o_, const void *const *in, const int64_t *st, int64_t n, \
			  const void *arg) \
{ \
	TO *o = o_; \
	const T *xs = in[0]; \
	/* A local copy: o may alias *arg as far as the compiler knows, which \
	 * would reload p->alpha per element and keep the loop scalar. */ \
	const ew_args pa_ = *(const ew_args *)arg, *p = &pa_; \
	(void)p; (void)st; \
	for (int64_t i = 0; i < n; i++) { \
		T x = xs[i]; \
		o[i] = (TO)(EXPR); \
	} \
}

/* Binary: out = EXPR(x, y); each input's stride is 0 or 1. */
#define BIN_KERNEL(a, sfx, T, TO, EXPR) \
EW_CLONES static void k_##a##_##sfx(void *o_, const void *const *in, const int64_t *st, int64_t n, \
			  const void *arg) \
{ \
	TO *o = o_; \
	const T *xs = in[0], *ys = in[1]; \
	const ew_args pa_ = *(const ew_args *)arg, *p = &pa_;   /* see UN_KERNEL */ \
	(void)p; \
	if (st[0] && st[1]) { \
		for (int64_t i = 0; i < n; i++) { \
			T x = xs[i], y = ys[i]; \
			o[i] = (TO)(EXPR); \
		} \
	} else if (st[1]) { \
		const T x = xs[0]; \
		for (int64_t i = 0; i < n; i++) { \
			T y = ys[i]; \
			o[i] = (TO)(EXPR); \
		} \
	} else if (st[0]) { \
		const T y = ys[0]; \
		for (int64_t i = 0; i < n; i++) { \
			T x = xs[i]; \
			o[i] = (TO)(EXPR); \
		} \
	} else { \
		const T x = xs[0], y = ys[0]; \
		const TO r = (TO)(EXPR); \
		for (int64_t i = 0; i < n; i++) \
			o[i] = r; \
	} \
}

/* Expression macros: F_op for floats, S_op signed, U_op unsigned integers. */
#define KB_F(a, sfx, T, DT) BIN_KERNEL(a, sfx, T, T, F_##a(T, x, y))
#define KB_S(a, sfx, T, DT) BIN_KERNEL(a, sfx, T, T, S_##a(T, x, y))
#define KB_U(a, sfx, T, DT) BIN_KERNEL(a, sfx, T, T, U_##a(T, x, y))
#define KC(a, sfx, T, DT) BIN_KERNEL(a, sfx, T, uint8_t, C_##a(x, y))
#define KU_F(a, sfx, T, DT) UN_KERNEL(a, sfx, T, T, F_##a(T, x))
#define KU_S(a, sfx, T, DT) UN_KERNEL(a, sfx, T, T, S_##a(T, x))
#define KU_U(a, sfx, T, DT) UN_KERNEL(a, sfx, T, T, U_##a(T, x))
#define KU_FB(a, sfx, T, DT) UN_KERNEL(a, sfx, T, uint8_t, B_##a(x))

/* float16: computed in float and rounded back, as ONNX Runtime does. The
 * expression macros see float x, y. */
#define H_KERNEL(a, NIN, OT, STORE, EXPR) \
static void k_##a##_f16(void *o_, const void *const *in, const int64_t *st, int64_t n, \
			const void *arg) \
{ \
	OT *o = o_; \
	const uint16_t *xs = in[0], *ys = in[NIN - 1]; \
	const ew_args *p = arg; \
	(void)p; (void)ys; \
	for (int64_t i = 0; i < n; i++) { \
		float x = h2f(xs[i * st[0]]); \
		float y = NIN > 1 ? h2f(ys[i * st[NIN - 1]]) : 0; \
		(void)y; \
		o[i] = STORE(EXPR); \
	} \
}
#define H_TO_HALF(v) f2h((float)(v))
#define H_TO_BOOL(v) (uint8_t)(v)
#define H_ENT(a) [HAL_DT_F16] = k_##a##_f16,

/* Binary ops over every numeric type. */
#define BIN_NUM(a) FLT_TYPES(KB_F, a) SINT_TYPES(KB_S, a) UINT_TYPES(KB_U, a) \
	H_KERNEL(a, 2, uint16_t, H_TO_HALF, F_##a(float, x, y)) \
	static const ew_fn t_##a[NDT] = { FLT_TYPES(TAB_ENT, a) SINT_TYPES(TAB_ENT, a) \
					   UINT_TYPES(TAB_ENT, a) H_ENT(a) };
#define BIN_FS(a) FLT_TYPES(KB_F, a) SINT_TYPES(KB_S, a) \
	H_KERNEL(a, 2, uint16_t, H_TO_HALF, F_##a(float, x, y)) \
	static const ew_fn t_##a[NDT] = { FLT_TYPES(TAB_ENT, a) SINT_TYPES(TAB_ENT, a) H_ENT(a) };
/* Comparisons: numeric (and bool with CMP_ALL) -> bool. */
#define CMP_NUM(a) FLT_TYPES(KC, a) SINT_TYPES(KC, a) UINT_TYPES(KC, a) \
	H_KERNEL(a, 2, uint8_t, H_TO_BOOL, C_##a(x, y)) \
	static const ew_fn t_##a[NDT] = { FLT_TYPES(TAB_ENT, a) SINT_TYPES(TAB_ENT, a) \
					   UINT_TYPES(TAB_ENT, a) H_ENT(a) };
#define CMP_ALL(a) FLT_TYPES(KC, a) SINT_TYPES(KC, a) UINT_TYPES(KC, a) BOOL_TYPES(KC, a) \
	H_KERNEL(a, 2, uint8_t, H_TO_BOOL, C_##a(x, y)) \
	static const ew_fn t_##a[NDT] = { FLT_TYPES(TAB_ENT, a) SINT_TYPES(TAB_ENT, a) \
					   UINT_TYPES(TAB_ENT, a) BOOL_TYPES(TAB_ENT, a) H_ENT(a) };
/* Unary ops over floats only / floats and signed ints / all numeric. */
#define UN_F(a) FLT_TYPES(KU_F, a) \
	H_KERNEL(a, 1, uint16_t, H_TO_HALF, F_##a(float, x)) \
	static const ew_fn t_##a[NDT] = { FLT_TYPES(TAB_ENT, a) H_ENT(a) };
#define UN_FS(a) FLT_TYPES(KU_F, a) SINT_TYPES(KU_S, a) \
	H_KERNEL(a, 1, uint16_t, H_TO_HALF, F_##a(float, x)) \
	static const ew_fn t_##a[NDT] = { FLT_TYPES(TAB_ENT, a) SINT_TYPES(TAB_ENT, a) H_ENT(a) };
#define UN_NUM(a) FLT_TYPES(KU_F, a) SINT_TYPES(KU_S, a) UINT_TYPES(KU_U, a) \
	H_KERNEL(a, 1, uint16_t, H_TO_HALF, F_##a(float, x)) \
	static const ew_fn t_##a[NDT] = { FLT_TYPES(TAB_ENT, a) SINT_TYPES(TAB_ENT, a) \
					   UINT_TYPES(TAB_ENT, a) H_ENT(a) };
#define UN_FB(a) FLT_TYPES(KU_FB, a) \
	H_KERNEL(a, 1, uint8_t, H_TO_BOOL, B_##a(x)) \
	static const ew_fn t_##a[NDT] = { FLT_TYPES(TAB_ENT, a) H_ENT(a) };

/* ---- binary arithmetic ---- */
#define F_add(T, x, y) x + y
#define S_add(T, x, y) (uint64_t)(x) + (uint64_t)(y)
#define U_add S_add
BIN_NUM(add)
#define F_sub(T, x, y) x - y
#define S_sub(T, x, y) (uint64_t)(x) - (uint64_t)(y)
#define U_sub S_sub
BIN_NUM(sub)
#define F_mul(T, x, y) x * y
#define S_mul(T, x, y) (uint64_t)(x) * (uint64_t)(y)
#define U_mul S_mul
BIN_NUM(mul)
#define F_div(T, x, y) x / y
#define S_div(T, x, y) sdiv64(x, y)
#define U_div(T, x, y) (y ? x / y : 0)
BIN_NUM(div)
/* NaN-propagating like numpy.maximum/minimum. */
#define F_max(T, x, y) (x > y || x != x) ? x : y
#define S_max(T, x, y) x > y ? x : y
#define U_max S_max
BIN_NUM(max)
#define F_min(T, x, y) (x < y || x != x) ? x : y
#define S_min(T, x, y) x < y ? x : y
#define U_min S_min
BIN_NUM(min)
/* Mod, fmod=0: the sign of the divisor (Python %); fmod=1: C fmod. */
#define F_mod(T, x, y) fmod_py(x, y)
#define S_mod(T, x, y) smod64(x, y, 0)
#define U_mod(T, x, y) (y ? x % y : 0)
BIN_NUM(mod)
#define F_fmod(T, x, y) fmod(x, y)
#define S_fmod(T, x, y) smod64(x, y, 1)
#define U_fmod U_mod
BIN_NUM(fmod)
/* Pow with both operands of one type; squares are exact and common, cubes
 * (GPT-2's tanh GELU) within an ulp of pow(), which costs 50 ns each. */
#define F_pow(T, x, y) (y == 2 ? x * x : y == 3 ? x * x * x : pow(x, y))
#define S_pow(T, x, y) ipow64(x, y)
#define U_pow(T, x, y) (uint64_t)ipow64((int64_t)x, (int64_t)y)
BIN_NUM(pow)
/* PRelu: slope broadcast to x. */
#define F_prelu(T, x, y) x < 0 ? x * y : x
#define S_prelu(T, x, y) x < 0 ? (uint64_t)x * (uint64_t)y : (uint64_t)x
BIN_FS(prelu)

/* BitShift (unsigned only): shifting by the width or more gives 0, where C
 * would be undefined. */
#define U_shl(T, x, y) (y < 8 * sizeof(T) ? (uint64_t)x << y : 0)
#define U_shr(T, x, y) (y < 8 * sizeof(T) ? x >> y : 0)
UINT_TYPES(KB_U, shl) UINT_TYPES(KB_U, shr)
static const ew_fn t_shl[NDT] = { UINT_TYPES(TAB_ENT, shl) };
static const ew_fn t_shr[NDT] = { UINT_TYPES(TAB_ENT, shr) };

/* ---- comparisons -> bool ---- */
#define C_equal(x, y) x == y
CMP_ALL(equal)
#define C_greater(x, y) x > y
CMP_NUM(greater)
#define C_greater_eq(x, y) x >= y
CMP_NUM(greater_eq)
#define C_less(x, y) x < y
CMP_NUM(less)
#define C_less_eq(x, y) x <= y
CMP_NUM(less_eq)

/* ---- bool logic ---- */
BIN_KERNEL(and, b8, uint8_t, uint8_t, (x != 0) & (y != 0))
BIN_KERNEL(or, b8, uint8_t, uint8_t, (x != 0) | (y != 0))
BIN_KERNEL(xor, b8, uint8_t, uint8_t, (x != 0) ^ (y != 0))
UN_KERNEL(not, b8, uint8_t, uint8_t, x == 0)
static const ew_fn t_and[NDT] = { [HAL_DT_BOOL] = k_and_b8 };
static const ew_fn t_or[NDT] = { [HAL_DT_BOOL] = k_or_b8 };
static const ew_fn t_xor[NDT] = { [HAL_DT_BOOL] = k_xor_b8 };
static const ew_fn t_not[NDT] = { [HAL_DT_BOOL] = k_not_b8 };

/* ---- unary math (tgmath picks the float or double function) ---- */
#define F_sqrt(T, x) sqrt(x)
UN_F(sqrt)
#define F_exp(T, x) exp(x)
UN_F(exp)
#define F_log(T, x) log(x)
UN_F(log)
#define F_tanh(T, x) tanh(x)
UN_F(tanh)
#define F_sigmoid(T, x) SIGMOID(x)
UN_F(sigmoid)
#define F_erf(T, x) erf(x)
UN_F(erf)
#define F_floor(T, x) floor(x)
UN_F(floor)
#define F_ceil(T, x) ceil(x)
UN_F(ceil)
/* nearbyint in the default rounding mode: halves to even, as ONNX asks. */
#define F_round(T, x) nearbyint(x)
UN_F(round)
#define F_reciprocal(T, x) 1 / x
UN_F(reciprocal)
#define F_sin(T, x) sin(x)
UN_F(sin)
#define F_cos(T, x) cos(x)
UN_F(cos)
#define F_tan(T, x) tan(x)
UN_F(tan)
#define F_asin(T, x) asin(x)
UN_F(asin)
#define F_acos(T, x) acos(x)
UN_F(acos)
#define F_atan(T, x) atan(x)
UN_F(atan)
#define F_sinh(T, x) sinh(x)
UN_F(sinh)
#define F_cosh(T, x) cosh(x)
UN_F(cosh)
#define F_asinh(T, x) asinh(x)
UN_F(asinh)
#define F_acosh(T, x) acosh(x)
UN_F(acosh)
#define F_atanh(T, x) atanh(x)
UN_F(atanh)
#define F_softplus(T, x) SOFTPLUS(x)
UN_F(softplus)
#define F_softsign(T, x) x / (1 + fabs(x))
UN_F(softsign)
#define F_mish(T, x) x * tanh(SOFTPLUS(x))
UN_F(mish)
#define F_leakyrelu(T, x) x < 0 ? p->alpha * x : x
UN_F(leakyrelu)
#define F_hardsigmoid(T, x) fmax((T)0, fmin((T)1, p->alpha * x + p->beta))
UN_F(hardsigmoid)
#define F_hardswish(T, x) x * fmax((T)0, fmin((T)1, x / 6 + (T)0.5))
UN_F(hardswish)
#define F_elu(T, x) x < 0 ? p->alpha * (exp(x) - 1) : x
UN_F(elu)
#define F_selu(T, x) p->gamma * (x > 0 ? x : p->alpha * exp(x) - p->alpha)
UN_F(selu)
#define F_celu(T, x) fmax((T)0, x) + fmin((T)0, p->alpha * (exp(x / p->alpha) - 1))
UN_F(celu)
#define F_thresholdedrelu(T, x) x > p->alpha ? x : 0
UN_F(thresholdedrelu)
#define F_shrink(T, x) x < -p->alpha ? x + p->beta : x > p->alpha ? x - p->beta : 0
UN_F(shrink)
/* Gelu (opset 20): flag[0] = 1 for approximate="tanh". */
#define F_gelu(T, x) p->flag[0] \
	? (T)0.5 * x * (1 + tanh((T)0.7978845608028654 * (x + (T)0.044715 * x * x * x))) \
	: (T)0.5 * x * (1 + erf(x * (T)0.7071067811865476))
UN_F(gelu)
/* Mean: sum, then times 1/n. */
#define F_scale(T, x) x * (T)p->scale
UN_F(scale)

#define F_relu(T, x) x < 0 ? 0 : x
#define S_relu(T, x) x < 0 ? 0 : x
UN_FS(relu)
#define F_neg(T, x) -x
#define S_neg(T, x) 0 - (uint64_t)x
UN_FS(neg)
#define F_abs(T, x) fabs(x)
#define S_abs(T, x) x < 0 ? 0 - (uint64_t)x : (uint64_t)x
#define U_abs(T, x) x
UN_NUM(abs)
#define F_sign(T, x) x > 0 ? 1 : x < 0 ? -1 : x
#define S_sign(T, x) (x > 0) - (x < 0)
#define U_sign(T, x) x > 0
UN_NUM(sign)

#define B_isnan(x) x != x
UN_FB(isnan)
#define B_isinf(x) (isinf(x) && (x > 0 ? p->flag[0] : p->flag[1]))
UN_FB(isinf)

/* Clip: bounds in the element type, defaults filled in at run time. */
#define CLIP_KERNEL(a, sfx, T, DT) \
EW_CLONES static void k_clip_##sfx(void *o_, const void *const *in, const int64_t *st, int64_t n, \
			 const void *arg) \
{ \
	T *o = o_; \
	const T *xs = in[0]; \
	const ew_args *p = arg; \
	T lo, hi; \
	(void)st; \
	memcpy(&lo, p->lo, sizeof lo); \
	memcpy(&hi, p->hi, sizeof hi); \
	for (int64_t i = 0; i < n; i++) { \
		T v = xs[i] < lo ? lo : xs[i]; \
		o[i] = v > hi ? hi : v; \
	} \
}
FLT_TYPES(CLIP_KERNEL, 0) SINT_TYPES(CLIP_KERNEL, 0) UINT_TYPES(CLIP_KERNEL, 0)

static void k_clip_f16(void *o_, const void *const *in, const int64_t *st, int64_t n,
		       const void *arg)
{
	uint16_t *o = o_, lb, hb;
	const uint16_t *xs = in[0];
	const ew_args *p = arg;
	(void)st;
	memcpy(&lb, p->lo, sizeof lb);
	memcpy(&hb, p->hi, sizeof hb);
	const float lo = h2f(lb), hi = h2f(hb);
	for (int64_t i = 0; i < n; i++) {
		float v = h2f(xs[i]);
		v = v < lo ? lo : v;
		o[i] = f2h(v > hi ? hi : v);
	}
}
static const ew_fn t_clip[NDT] = { FLT_TYPES(TAB_ENT, clip) SINT_TYPES(TAB_ENT, clip)
				   UINT_TYPES(TAB_ENT, clip) H_ENT(clip) };

/* Copies with broadcasting (variadic ops of one input, Expand-like use). */
#define COPY_KERNEL(a, sfx, T, DT) \
static void k_copy_##sfx(void *o_, const void *const *in, const int64_t *st, int64_t n, \
			 const void *arg) \
{ \
	T *o = o_; \
	const T *xs = in[0]; \
	(void)arg; \
	if (st[0]) \
		memcpy(o, xs, (size_t)n * sizeof *o); \
	else \
		for (int64_t i = 0; i < n; i++) \
			o[i] = xs[0]; \
}
COPY_KERNEL(0, 1, uint8_t, 0)
COPY_KERNEL(0, 2, uint16_t, 0)
COPY_KERNEL(0, 4, uint32_t, 0)
COPY_KERNEL(0, 8, uint64_t, 0)

/* Where: by element size. */
#define WHERE_KERNEL(a, sfx, T, DT) \
static void k_where_##sfx(void *o_, const void *const *in, const int64_t *st, int64_t n, \
			  const void *arg) \
{ \
	T *o = o_; \
	const uint8_t *c = in[0]; \
	const T *xs = in[1], *ys = in[2]; \
	const int64_t sc = st[0], sx = st[1], sy = st[2]; \
	(void)arg; \
	for (int64_t i = 0; i < n; i++) \
		o[i] = c[i * sc] ? xs[i * sx] : ys[i * sy]; \
}
WHERE_KERNEL(0, 1, uint8_t, 0)
WHERE_KERNEL(0, 2, uint16_t, 0)
WHERE_KERNEL(0, 4, uint32_t, 0)
WHERE_KERNEL(0, 8, uint64_t, 0)

static ew_fn by_size(int dt, ew_fn f1, ew_fn f2, ew_fn f4, ew_fn f8)
{
	switch (hal_dtype_size(dt)) {
	case 1: return f1;
	case 2: return f2;
	case 4: return f4;
	case 8: return f8;
	default: return NULL;
	}
}

/* Pow with an exponent of another type: read it as double. */
static inline double ld_f64(const void *p, int64_t i, int dt)
{
	switch (dt) {
	case HAL_DT_F32: return ((const float *)p)[i];
	case HAL_DT_F64: return ((const double *)p)[i];
	case HAL_DT_I8: return ((const int8_t *)p)[i];
	case HAL_DT_I16: return ((const int16_t *)p)[i];
	case HAL_DT_I32: return ((const int32_t *)p)[i];
	case HAL_DT_I64: return (double)((const int64_t *)p)[i];
	case HAL_DT_U8: return ((const uint8_t *)p)[i];
	case HAL_DT_U16: return ((const uint16_t *)p)[i];
	case HAL_DT_U32: return ((const uint32_t *)p)[i];
	case HAL_DT_U64: return (double)((const uint64_t *)p)[i];
	case HAL_DT_F16: return h2f(((const uint16_t *)p)[i]);
	default: return 0;
	}
}

#define POWX_F(T, x, y) (T)pow(x, (T)y)
#define POWX_I(T, x, y) (y == floor(y) && y >= 0 && y < 9.2e18 ? ipow64(x, (int64_t)y) \
			 : f2i64(pow((double)x, y)))
#define POWX_KERNEL(a, sfx, T, DT) \
static void k_powx_##sfx(void *o_, const void *const *in, const int64_t *st, int64_t n, \
			 const void *arg) \
{ \
	T *o = o_; \
	const T *xs = in[0]; \
	const ew_args *p = arg; \
	for (int64_t i = 0; i < n; i++) { \
		T x = xs[i * st[0]]; \
		double y = ld_f64(in[1], i * st[1], p->xdt); \
		o[i] = (T)a(T, x, y); \
	} \
}
POWX_KERNEL(POWX_F, f32, float, 0)
POWX_KERNEL(POWX_F, f64, double, 0)
POWX_KERNEL(POWX_I, i32, int32_t, 0)
POWX_KERNEL(POWX_I, i64, int64_t, 0)
static const ew_fn t_powx[NDT] = {
	[HAL_DT_F32] = k_powx_f32, [HAL_DT_F64] = k_powx_f64,
	[HAL_DT_I32] = k_powx_i32, [HAL_DT_I64] = k_powx_i64,
};

/* ---- Cast: every pair of f16 bf16 f32 f64 i8..i64 u8..u64 bool ----
 * (Kind names are words: tgmath.h brings complex.h, whose I is a macro.)
 * LD_k loads a source element (half -> float); ST_k converts to the
 * destination: floats by C conversion, floats to integers through the
 * saturating helpers (then wrapped to the width), anything to bool as != 0. */
#define CAST_TYPES(X, a) \
	X(a, f32, float, HAL_DT_F32, flt) X(a, f64, double, HAL_DT_F64, flt) \
	X(a, f16, uint16_t, HAL_DT_F16, half) X(a, bf16, uint16_t, HAL_DT_BF16, bhalf) \
	X(a, i8, int8_t, HAL_DT_I8, sint) X(a, i16, int16_t, HAL_DT_I16, sint) \
	X(a, i32, int32_t, HAL_DT_I32, sint) X(a, i64, int64_t, HAL_DT_I64, sint) \
	X(a, u8, uint8_t, HAL_DT_U8, uint) X(a, u16, uint16_t, HAL_DT_U16, uint) \
	X(a, u32, uint32_t, HAL_DT_U32, uint) X(a, u64, uint64_t, HAL_DT_U64, uint) \
	X(a, b8, uint8_t, HAL_DT_BOOL, bool)
#define CAST_TYPES2(X, a) \
	X(a, f32, float, HAL_DT_F32, flt) X(a, f64, double, HAL_DT_F64, flt) \
	X(a, f16, uint16_t, HAL_DT_F16, half) X(a, bf16, uint16_t, HAL_DT_BF16, bhalf) \
	X(a, i8, int8_t, HAL_DT_I8, sint) X(a, i16, int16_t, HAL_DT_I16, sint) \
	X(a, i32, int32_t, HAL_DT_I32, sint) X(a, i64, int64_t, HAL_DT_I64, sint) \
	X(a, u8, uint8_t, HAL_DT_U8, uint) X(a, u16, uint16_t, HAL_DT_U16, uint) \
	X(a, u32, uint32_t, HAL_DT_U32, uint) X(a, u64, uint64_t, HAL_DT_U64, uint) \
	X(a, b8, uint8_t, HAL_DT_BOOL, bool)

#define LD_flt(x) (x)
#define LD_sint(x) (x)
#define LD_uint(x) (x)
#define LD_bool(x) (x)
#define LD_half(x) h2f(x)
#define LD_bhalf(x) bf2f(x)
#define ST_flt(DT, v) (DT)(v)
#define ST_half(DT, v) f2h((float)(v))
#define ST_bhalf(DT, v) f2bf((float)(v))
#define ST_bool(DT, v) (DT)((v) != 0)
#define ST_sint(DT, v) _Generic((v), float: (DT)f2i64(v), double: (DT)f2i64(v), default: (DT)(v))
#define ST_uint(DT, v) _Generic((v), float: (DT)f2u64(v), double: (DT)f2u64(v), default: (DT)(v))

/* a carries the source: (suffix, C type, load kind) */
#define CAST_SRC_SFX(s, ST, sk) s
#define CAST_FN(src, dsfx, DT, DDT, dk) CAST_FN_(src, dsfx, DT, dk)
#define CAST_FN_(src, dsfx, DT, dk) CAST_FN__(CAST_SRC_SFX src, dsfx, DT, dk, CAST_SRC_T src, \
					      CAST_SRC_K src)
#define CAST_SRC_T(s, ST, sk) ST
#define CAST_SRC_K(s, ST, sk) sk
#define CAST_FN__(ssfx, dsfx, DT, dk, ST, sk) CAST_FN___(ssfx, dsfx, DT, dk, ST, sk)
#define CAST_FN___(ssfx, dsfx, DT, dk, ST, sk) \
static void k_cast_##ssfx##_##dsfx(void *o_, const void *const *in, const int64_t *st, int64_t n, \
				   const void *arg) \
{ \
	DT *o = o_; \
	const ST *xs = in[0]; \
	(void)st; (void)arg; \
	for (int64_t i = 0; i < n; i++) \
		o[i] = ST_##dk(DT, LD_##sk(xs[i])); \
}
#define CAST_ROW(a, ssfx, ST, SDT, sk) CAST_TYPES2(CAST_FN, (ssfx, ST, sk))
CAST_TYPES(CAST_ROW, 0)

#define CAST_ENT(src, dsfx, DT, DDT, dk) CAST_ENT_(CAST_SRC_SFX src, dsfx, DDT)
#define CAST_ENT_(ssfx, dsfx, DDT) CAST_ENT__(ssfx, dsfx, DDT)
#define CAST_ENT__(ssfx, dsfx, DDT) [DDT] = k_cast_##ssfx##_##dsfx,
#define CAST_TAB_ROW(a, ssfx, ST, SDT, sk) [SDT] = { CAST_TYPES2(CAST_ENT, (ssfx, ST, sk)) },
static const ew_fn t_cast[NDT][NDT] = { CAST_TYPES(CAST_TAB_ROW, 0) };

/* ---- vectorised float32 math (hal/ops/vmath.h), off the reference path ---- */

static void k_vm(void *o, const void *const *in, const int64_t *st, int64_t n, const void *arg)
{
	(void)st;
	((const ew_args *)arg)->vm(o, in[0], n);
}

/* Switches a float32 Exp, Tanh, Erf, Sigmoid or Gelu to its vectorised
 * kernel (tests/test_vmath.c bounds the error against libm). */
static void use_vm(const ew_op *e, ew_params *p)
{
	int f = e->tab == t_exp ? HAL_VM_EXP : e->tab == t_tanh ? HAL_VM_TANH :
		e->tab == t_erf ? HAL_VM_ERF : e->tab == t_sigmoid ? HAL_VM_SIGMOID :
		e->tab == t_gelu ? (p->args.flag[0] ? HAL_VM_GELU_TANH : HAL_VM_GELU_ERF) : -1;
	if (f >= 0 && (p->args.vm = hal_vm_get(f)))
		p->fn = k_vm;
}

/* ---- generic infer/exec ---- */

/* Unary ops: one input, same shape; output dtype the input's or e->out_dt. */
static int ew_unary_infer(hal_step *s)
{
	const ew_op *e = ew_of(s);
	int rc = check_n_in(s, 1, 1);
	if (rc)
		return rc;
	const hal_tensor *x = s->in[0];
	ew_fn fn = tab_fn(e->tab, x->dtype);
	if (!fn)
		return type_err(s, x->dtype);
	ew_params *p = params_alloc(s, 1);
	if (!p)
		return AIDOS_E_NOMEM;
	p->fn = fn;
	p->grain = e->math ? GRAIN_MATH : GRAIN_CHEAP;
	if (e->setup && (rc = e->setup(s, p)))
		return rc;
	if (!hal_use_reference && x->dtype == HAL_DT_F32)
		use_vm(e, p);
	bc_build(&p->bc[0], x->rank, x->dims, 1, &x);
	hal_tensor_set_shape(s->out[0], e->out_dt ? e->out_dt : x->dtype, x->rank, x->dims);
	s->params = p;
	return 0;
}

/* Binary ops: same dtype, broadcasting. */
static int ew_binary_infer(hal_step *s)
{
	const ew_op *e = ew_of(s);
	int rc = check_n_in(s, 2, 2);
	if (rc)
		return rc;
	const hal_tensor *const *in = (const hal_tensor *const *)s->in;
	if (in[0]->dtype != in[1]->dtype)
		return hal_err(s, AIDOS_E_INVALID, "inputs have different types %s and %s",
			       hal_dtype_name(in[0]->dtype), hal_dtype_name(in[1]->dtype));
	ew_fn fn = tab_fn(e->tab, in[0]->dtype);
	if (!fn)
		return type_err(s, in[0]->dtype);
	int64_t od[HAL_MAX_RANK];
	int r = bcast_all(s, 2, in, od);
	if (r < 0)
		return r;
	ew_params *p = params_alloc(s, 1);
	if (!p)
		return AIDOS_E_NOMEM;
	p->fn = fn;
	p->grain = e->math ? GRAIN_MATH : GRAIN_CHEAP;
	if (e->setup && (rc = e->setup(s, p)))
		return rc;
	bc_build(&p->bc[0], r, od, 2, in);
	hal_tensor_set_shape(s->out[0], e->out_dt ? e->out_dt : in[0]->dtype, r, od);
	s->params = p;
	return 0;
}

/* Runs plan 0 over the node's first plan-many inputs. */
static int ew_exec(hal_step *s)
{
	const ew_params *p = s->params;
	ew_run(s, &p->bc[0], p->fn, &p->args, s->out[0], (const hal_tensor *const *)s->in, p->grain);
	return 0;
}

/* ---- per-op setup ---- */

static int setup_leakyrelu(hal_step *s, ew_params *p)
{
	p->args.alpha = hal_attr_float(s->node, "alpha", 0.01f);
	return 0;
}

static int setup_hardsigmoid(hal_step *s, ew_params *p)
{
	p->args.alpha = hal_attr_float(s->node, "alpha", 0.2f);
	p->args.beta = hal_attr_float(s->node, "beta", 0.5f);
	return 0;
}

static int setup_alpha1(hal_step *s, ew_params *p)
{
	p->args.alpha = hal_attr_float(s->node, "alpha", 1.0f);
	if (p->args.alpha == 0 && strcmp(s->op->name, "Celu") == 0)
		return hal_err(s, AIDOS_E_INVALID, "alpha must not be 0");
	return 0;
}

static int setup_selu(hal_step *s, ew_params *p)
{
	p->args.alpha = hal_attr_float(s->node, "alpha", 1.67326319217681884765625f);
	p->args.gamma = hal_attr_float(s->node, "gamma", 1.05070102214813232421875f);
	return 0;
}

static int setup_shrink(hal_step *s, ew_params *p)
{
	p->args.alpha = hal_attr_float(s->node, "lambd", 0.5f);
	p->args.beta = hal_attr_float(s->node, "bias", 0.0f);
	return 0;
}

static int setup_gelu(hal_step *s, ew_params *p)
{
	const char *a = hal_attr_str(s->node, "approximate", "none");
	if (strcmp(a, "tanh") == 0)
		p->args.flag[0] = 1;
	else if (strcmp(a, "none") != 0)
		return hal_err(s, AIDOS_E_INVALID, "approximate=\"%s\" (want none or tanh)", a);
	return 0;
}

static int setup_bitshift(hal_step *s, ew_params *p)
{
	const char *d = hal_attr_str(s->node, "direction", "");
	if (strcmp(d, "LEFT") == 0)
		p->fn = tab_fn(t_shl, s->in[0]->dtype);
	else if (strcmp(d, "RIGHT") == 0)
		p->fn = tab_fn(t_shr, s->in[0]->dtype);
	else
		return hal_err(s, AIDOS_E_INVALID, "direction=\"%s\" (want LEFT or RIGHT)", d);
	return 0;
}

static int setup_isinf(hal_step *s, ew_params *p)
{
	p->args.flag[0] = hal_attr_int(s->node, "detect_positive", 1) != 0;
	p->args.flag[1] = hal_attr_int(s->node, "detect_negative", 1) != 0;
	return 0;
}

static int setup_mod(hal_step *s, ew_params *p)
{
	int64_t f = hal_attr_int(s->node, "fmod", 0);
	if (f != 0 && f != 1)
		return hal_err(s, AIDOS_E_INVALID, "fmod=%lld (want 0 or 1)", (long long)f);
	if (f)
		p->fn = tab_fn(t_fmod, s->in[0]->dtype);
	return 0;
}

/* PRelu broadcasts slope to x only ("unidirectional", opset >= 7). Opset 6
 * and earlier had a per-channel slope: [C] against x [N, C, ...] (PyTorch
 * exported it so); that slope is viewed as [C, 1, ...]. */
static int prelu_infer(hal_step *s)
{
	int rc = check_n_in(s, 2, 2);
	if (rc)
		return rc;
	const hal_tensor *x = s->in[0];
	hal_tensor sl = *s->in[1];
	if (sl.dtype != x->dtype)
		return hal_err(s, AIDOS_E_INVALID, "slope is %s but x is %s",
			       hal_dtype_name(sl.dtype), hal_dtype_name(x->dtype));
	ew_fn fn = tab_fn(t_prelu, x->dtype);
	if (!fn)
		return type_err(s, x->dtype);
	if (s->opset < 7 && sl.rank == 1 && x->rank >= 2 && sl.dims[0] == x->dims[1]) {
		sl.rank = x->rank - 1;
		for (int d = 1; d < sl.rank; d++)
			sl.dims[d] = 1;
	}
	int ok = sl.rank <= x->rank;
	for (int d = 0; ok && d < sl.rank; d++) {
		int64_t dx = x->dims[x->rank - sl.rank + d];
		ok = sl.dims[d] == dx || sl.dims[d] == 1;
	}
	if (!ok) {
		char b1[160], b2[160];
		return hal_err(s, AIDOS_E_SHAPE, "slope of shape %s does not broadcast to x of shape %s",
			       shape_str(&sl, b1, sizeof b1), shape_str(x, b2, sizeof b2));
	}
	ew_params *p = params_alloc(s, 1);
	if (!p)
		return AIDOS_E_NOMEM;
	p->fn = fn;
	p->grain = GRAIN_CHEAP;
	const hal_tensor *pair[2] = { x, &sl };
	bc_build(&p->bc[0], x->rank, x->dims, 2, pair);
	hal_tensor_set_shape(s->out[0], x->dtype, x->rank, x->dims);
	s->params = p;
	return 0;
}

/* ---- Pow: base T, exponent of any numeric type ---- */
static int pow_infer(hal_step *s)
{
	int rc = check_n_in(s, 2, 2);
	if (rc)
		return rc;
	const hal_tensor *const *in = (const hal_tensor *const *)s->in;
	int bt = in[0]->dtype, et = in[1]->dtype;
	ew_fn fn = bt == et ? tab_fn(t_pow, bt) : tab_fn(t_powx, bt);
	if (!fn || (!tab_fn(t_add, et) && et != HAL_DT_F16))
		return hal_err(s, AIDOS_E_UNSUPPORTED, "Pow of %s by %s is not supported",
			       hal_dtype_name(bt), hal_dtype_name(et));
	int64_t od[HAL_MAX_RANK];
	int r = bcast_all(s, 2, in, od);
	if (r < 0)
		return r;
	ew_params *p = params_alloc(s, 1);
	if (!p)
		return AIDOS_E_NOMEM;
	p->fn = fn;
	p->grain = GRAIN_MATH;
	p->args.xdt = et;
	bc_build(&p->bc[0], r, od, 2, in);
	hal_tensor_set_shape(s->out[0], bt, r, od);
	s->params = p;
	return 0;
}

/* ---- variadic Max, Min, Sum, Mean ----
 * out = f(in0, in1), then out = f(out, in_k): plan 0 covers inputs 0 and 1,
 * plan k-1 covers (out, in_k). One input is a copy. */
static int variadic_infer(hal_step *s)
{
	const ew_op *e = ew_of(s);
	if (s->n_in < 1)
		return hal_err(s, AIDOS_E_INVALID, "needs at least one input");
	int rc = check_n_in(s, s->n_in, s->n_in);
	if (rc)
		return rc;
	const hal_tensor *const *in = (const hal_tensor *const *)s->in;
	for (int k = 1; k < s->n_in; k++)
		if (in[k]->dtype != in[0]->dtype)
			return hal_err(s, AIDOS_E_INVALID, "input %d is %s, input 0 is %s", k,
				       hal_dtype_name(in[k]->dtype), hal_dtype_name(in[0]->dtype));
	ew_fn fn = tab_fn(e->tab, in[0]->dtype);
	if (!fn)
		return type_err(s, in[0]->dtype);
	int64_t od[HAL_MAX_RANK];
	int r = bcast_all(s, s->n_in, in, od);
	if (r < 0)
		return r;
	int n = s->n_in;
	ew_params *p = params_alloc(s, n > 1 ? n - 1 : 1);
	if (!p)
		return AIDOS_E_NOMEM;
	p->fn = fn;
	p->grain = GRAIN_CHEAP;
	hal_tensor o;
	memset(&o, 0, sizeof o);
	hal_tensor_set_shape(&o, in[0]->dtype, r, od);
	if (n == 1) {
		p->fn = by_size(in[0]->dtype, k_copy_1, k_copy_2, k_copy_4, k_copy_8);
		bc_build(&p->bc[0], r, od, 1, in);
	} else {
		bc_build(&p->bc[0], r, od, 2, in);
		for (int k = 2; k < n; k++) {
			const hal_tensor *pair[2] = { &o, in[k] };
			bc_build(&p->bc[k - 1], r, od, 2, pair);
		}
	}
	if (strcmp(e->op.name, "Mean") == 0) {
		if (!tab_fn(t_scale, in[0]->dtype))
			return type_err(s, in[0]->dtype);
		if (n > 1)
			p->fin = tab_fn(t_scale, in[0]->dtype);
		p->args.scale = 1.0 / n;
	}
	hal_tensor_set_shape(s->out[0], in[0]->dtype, r, od);
	s->params = p;
	return 0;
}

static int variadic_exec(hal_step *s)
{
	const ew_params *p = s->params;
	hal_tensor *out = s->out[0];
	ew_run(s, &p->bc[0], p->fn, &p->args, out, (const hal_tensor *const *)s->in, p->grain);
	for (int k = 2; k < s->n_in; k++) {
		const hal_tensor *pair[2] = { out, s->in[k] };
		ew_run(s, &p->bc[k - 1], p->fn, &p->args, out, pair, p->grain);
	}
	if (p->fin) {
		const hal_tensor *one[1] = { out };
		bc_plan flat;
		bc_build(&flat, out->rank, out->dims, 1, one);
		ew_run(s, &flat, p->fin, &p->args, out, one, p->grain);
	}
	return 0;
}

/* ---- Where(cond, x, y) ---- */
static int where_infer(hal_step *s)
{
	int rc = check_n_in(s, 3, 3);
	if (rc)
		return rc;
	const hal_tensor *const *in = (const hal_tensor *const *)s->in;
	if (in[0]->dtype != HAL_DT_BOOL)
		return hal_err(s, AIDOS_E_INVALID, "condition is %s, not bool",
			       hal_dtype_name(in[0]->dtype));
	if (in[1]->dtype != in[2]->dtype)
		return hal_err(s, AIDOS_E_INVALID, "x is %s but y is %s",
			       hal_dtype_name(in[1]->dtype), hal_dtype_name(in[2]->dtype));
	ew_fn fn = by_size(in[1]->dtype, k_where_1, k_where_2, k_where_4, k_where_8);
	if (!fn)
		return type_err(s, in[1]->dtype);
	int64_t od[HAL_MAX_RANK];
	int r = bcast_all(s, 3, in, od);
	if (r < 0)
		return r;
	ew_params *p = params_alloc(s, 1);
	if (!p)
		return AIDOS_E_NOMEM;
	p->fn = fn;
	p->grain = GRAIN_CHEAP;
	bc_build(&p->bc[0], r, od, 3, in);
	hal_tensor_set_shape(s->out[0], in[1]->dtype, r, od);
	s->params = p;
	return 0;
}

/* ---- Clip ---- */

/* numeric_limits<T>::lowest() and max() as T's bytes. */
static void type_limits(int dt, unsigned char *lo, unsigned char *hi)
{
#define LIM(T, L, H) do { T l_ = L, h_ = H; memcpy(lo, &l_, sizeof l_); memcpy(hi, &h_, sizeof h_); } while (0)
	switch (dt) {
	case HAL_DT_F32: LIM(float, -INFINITY, INFINITY); break;
	case HAL_DT_F64: LIM(double, -INFINITY, INFINITY); break;
	case HAL_DT_F16: LIM(uint16_t, 0xfc00, 0x7c00); break;
	case HAL_DT_I8: LIM(int8_t, INT8_MIN, INT8_MAX); break;
	case HAL_DT_I16: LIM(int16_t, INT16_MIN, INT16_MAX); break;
	case HAL_DT_I32: LIM(int32_t, INT32_MIN, INT32_MAX); break;
	case HAL_DT_I64: LIM(int64_t, INT64_MIN, INT64_MAX); break;
	case HAL_DT_U8: LIM(uint8_t, 0, UINT8_MAX); break;
	case HAL_DT_U16: LIM(uint16_t, 0, UINT16_MAX); break;
	case HAL_DT_U32: LIM(uint32_t, 0, UINT32_MAX); break;
	case HAL_DT_U64: LIM(uint64_t, 0, UINT64_MAX); break;
	default: break;
	}
#undef LIM
}

/* opset < 11: float attributes min/max; from 11: optional scalar inputs. */
static int clip_infer(hal_step *s)
{
	int rc = check_n_in(s, 1, s->opset < 11 ? 1 : 3);
	if (rc)
		return rc;
	const hal_tensor *x = s->in[0];
	ew_fn fn = tab_fn(t_clip, x->dtype);
	if (!fn)
		return type_err(s, x->dtype);
	ew_params *p = params_alloc(s, 1);
	if (!p)
		return AIDOS_E_NOMEM;
	p->fn = fn;
	p->grain = GRAIN_CHEAP;
	type_limits(x->dtype, p->args.lo, p->args.hi);
	if (s->opset < 11) {
		float lo = hal_attr_float(s->node, "min", -FLT_MAX);
		float hi = hal_attr_float(s->node, "max", FLT_MAX);
		if (x->dtype == HAL_DT_F32) {
			memcpy(p->args.lo, &lo, sizeof lo);
			memcpy(p->args.hi, &hi, sizeof hi);
		} else if (x->dtype == HAL_DT_F64) {
			double dl = lo, dh = hi;
			memcpy(p->args.lo, &dl, sizeof dl);
			memcpy(p->args.hi, &dh, sizeof dh);
		} else {
			return type_err(s, x->dtype);
		}
	}
	for (int i = 1; i < s->n_in; i++) {
		const hal_tensor *b = s->in[i];
		if (!b)
			continue;
		if ((rc = check_in(s, i)))
			return rc;
		if (b->dtype != x->dtype)
			return hal_err(s, AIDOS_E_INVALID, "%s is %s but input is %s",
				       i == 1 ? "min" : "max", hal_dtype_name(b->dtype),
				       hal_dtype_name(x->dtype));
		if (hal_numel(b) != 1)
			return hal_err(s, AIDOS_E_SHAPE, "%s has %lld elements (want a scalar)",
				       i == 1 ? "min" : "max", (long long)hal_numel(b));
	}
	bc_build(&p->bc[0], x->rank, x->dims, 1, &x);
	hal_tensor_set_shape(s->out[0], x->dtype, x->rank, x->dims);
	s->params = p;
	return 0;
}

static int clip_exec(hal_step *s)
{
	const ew_params *p = s->params;
	ew_args a = p->args;
	size_t es = hal_dtype_size(s->in[0]->dtype);
	if (s->n_in > 1 && s->in[1])
		memcpy(a.lo, s->in[1]->data, es);
	if (s->n_in > 2 && s->in[2])
		memcpy(a.hi, s->in[2]->data, es);
	ew_run(s, &p->bc[0], p->fn, &a, s->out[0], (const hal_tensor *const *)s->in, p->grain);
	return 0;
}

/* ---- plan-time fusion (hal/plan.c) ---- */

int hal_ew_kernel(hal_step *s, hal_ew_fn *fn, const void **arg)
{
	int nin;
	if (s->op->infer == ew_unary_infer && s->op->exec == ew_exec)
		nin = 1;
	else if (s->op->infer == ew_binary_infer && s->op->exec == ew_exec)
		nin = 2;
	else if (s->op->infer == clip_infer && s->op->exec == clip_exec)
		nin = 1;
	else if (s->op->infer == pow_infer && s->op->exec == ew_exec)
		nin = 2;   /* float32 base and exponent (checked below): the t_pow kernel */
	else if (s->op->infer == variadic_infer && s->op->exec == variadic_exec && s->n_in == 2)
		nin = 2;   /* Max/Min/Sum of two: one binary kernel (Mean has fin) */
	else
		return -1;
	ew_params *p = s->params;
	const hal_tensor *o = s->out[0];
	if (!p || p->fin || s->n_out != 1 || o->dtype != HAL_DT_F32)
		return -1;
	for (int k = 0; k < nin; k++) {
		const hal_tensor *t = s->in[k];
		/* Broadcasting only expands: equal counts mean equal shapes. */
		if (!t || t->dtype != HAL_DT_F32 || (hal_numel(t) != 1 && hal_numel(t) != hal_numel(o)))
			return -1;
	}
	if (s->op->infer == clip_infer) {
		/* Bounds read per run by clip_exec: fusable when they are constants. */
		for (int i = 1; i < s->n_in && i < 3; i++)
			if (s->in[i] && (!s->in[i]->is_const || !s->in[i]->data))
				return -1;
		for (int i = 1; i < s->n_in && i < 3; i++)
			if (s->in[i])
				memcpy(i == 1 ? p->args.lo : p->args.hi, s->in[i]->data, sizeof(float));
	}
	*fn = p->fn;
	*arg = &p->args;
	return nin;
}

/* ---- Cast, CastLike ---- */
static int cast_common(hal_step *s, int to)
{
	const hal_tensor *x = s->in[0];
	ew_fn fn = x->dtype > 0 && x->dtype < NDT && to > 0 && to < NDT ? t_cast[x->dtype][to] : NULL;
	if (!fn)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "cast from %s to %s (%d) is not supported",
			       hal_dtype_name(x->dtype), hal_dtype_name(to), to);
	ew_params *p = params_alloc(s, 1);
	if (!p)
		return AIDOS_E_NOMEM;
	p->fn = fn;
	p->grain = GRAIN_CHEAP;
	if (x->dtype == to)
		p->fn = by_size(to, k_copy_1, k_copy_2, k_copy_4, k_copy_8);
	bc_build(&p->bc[0], x->rank, x->dims, 1, &x);
	hal_tensor_set_shape(s->out[0], to, x->rank, x->dims);
	s->params = p;
	return 0;
}

static int cast_infer(hal_step *s)
{
	int rc = check_n_in(s, 1, 1);
	if (rc)
		return rc;
	if (!hal_attr_has(s->node, "to"))
		return hal_err(s, AIDOS_E_INVALID, "attribute 'to' is missing");
	int64_t to = hal_attr_int(s->node, "to", 0);
	if (to <= 0 || to >= NDT)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "cast to type %lld is not supported",
			       (long long)to);
	return cast_common(s, (int)to);
}

static int castlike_infer(hal_step *s)
{
	int rc = check_n_in(s, 2, 2);
	if (rc)
		return rc;
	return cast_common(s, s->in[1]->dtype);
}

/* Cast to the same type copies; skip it when the planner aliased the buffers. */
static int cast_exec(hal_step *s)
{
	if (s->out[0]->data == s->in[0]->data)
		return 0;
	return ew_exec(s);
}

/* ---- Softmax, LogSoftmax ----
 * Viewed as [outer, n, inner], normalised over n: opset >= 13 along `axis`
 * (default -1); before 13 the input is coerced to 2-D at `axis` (default 1)
 * so n is the whole trailing block and inner = 1. Stable form: exp(x - max). */
typedef struct sm_params {
	int64_t outer, n, inner;
	int log;
} sm_params;

#define SM_BLK 256   /* columns per work item when inner > 1 */

typedef struct sm_job {
	const sm_params *p;
	const void *x;
	void *y;
} sm_job;

#define SM_KERNELS(a, sfx, T, DT) \
static void sm_rows_##sfx(void *vj, int64_t r0, int64_t r1) \
{ \
	const sm_job *j = vj; \
	const int64_t n = j->p->n; \
	for (int64_t r = r0; r < r1; r++) { \
		const T *x = (const T *)j->x + r * n;  /* [n] */ \
		T *y = (T *)j->y + r * n; \
		T m = x[0]; \
		for (int64_t i = 1; i < n; i++) \
			m = x[i] > m ? x[i] : m; \
		double sum = 0; \
		if (j->p->log) { \
			for (int64_t i = 0; i < n; i++) \
				sum += exp(x[i] - m); \
			T ls = (T)log(sum); \
			for (int64_t i = 0; i < n; i++) \
				y[i] = x[i] - m - ls; \
		} else { \
			for (int64_t i = 0; i < n; i++) { \
				y[i] = exp(x[i] - m); \
				sum += y[i]; \
			} \
			T inv = (T)(1 / sum); \
			for (int64_t i = 0; i < n; i++) \
				y[i] *= inv; \
		} \
	} \
} \
static void sm_cols_##sfx(void *vj, int64_t b0, int64_t b1) \
{ \
	const sm_job *j = vj; \
	const int64_t n = j->p->n, inner = j->p->inner; \
	const int64_t nb = (inner + SM_BLK - 1) / SM_BLK; \
	T m[SM_BLK]; \
	double sum[SM_BLK]; \
	for (int64_t b = b0; b < b1; b++) { \
		const int64_t o = b / nb, c0 = b % nb * SM_BLK; \
		const int64_t w = inner - c0 < SM_BLK ? inner - c0 : SM_BLK; \
		const T *x = (const T *)j->x + o * n * inner + c0;  /* [n, inner] */ \
		T *y = (T *)j->y + o * n * inner + c0; \
		for (int64_t c = 0; c < w; c++) { \
			m[c] = x[c]; \
			sum[c] = 0; \
		} \
		for (int64_t i = 1; i < n; i++) \
			for (int64_t c = 0; c < w; c++) \
				m[c] = x[i * inner + c] > m[c] ? x[i * inner + c] : m[c]; \
		for (int64_t i = 0; i < n; i++) \
			for (int64_t c = 0; c < w; c++) { \
				T e = exp(x[i * inner + c] - m[c]); \
				sum[c] += e; \
				if (!j->p->log) \
					y[i * inner + c] = e; \
			} \
		for (int64_t c = 0; c < w; c++) \
			sum[c] = j->p->log ? log(sum[c]) : 1 / sum[c]; \
		for (int64_t i = 0; i < n; i++) \
			for (int64_t c = 0; c < w; c++) { \
				if (j->p->log) \
					y[i * inner + c] = x[i * inner + c] - m[c] - (T)sum[c]; \
				else \
					y[i * inner + c] *= (T)sum[c]; \
			} \
	} \
}
FLT_TYPES(SM_KERNELS, 0)

/* Softmax rows of float32 through hal_vm_softmax_rows (vectorised exp). */
static void sm_rows_vm(void *vj, int64_t r0, int64_t r1)
{
	const sm_job *j = vj;
	const int64_t n = j->p->n;
	hal_vm_softmax_rows((float *)j->y + r0 * n, (const float *)j->x + r0 * n, r1 - r0, n);
}

static int softmax_infer(hal_step *s)
{
	int rc = check_n_in(s, 1, 1);
	if (rc)
		return rc;
	const hal_tensor *x = s->in[0];
	if (x->dtype != HAL_DT_F32 && x->dtype != HAL_DT_F64)
		return type_err(s, x->dtype);
	const int r = x->rank, legacy = s->opset < 13;
	int64_t axis = hal_attr_int(s->node, "axis", legacy ? 1 : -1);
	int a;
	if (legacy) {
		/* coerced to 2-D at axis: [0, r] are all meaningful */
		a = (int)(axis < 0 ? axis + r : axis);
		if (axis < -r || axis > r)
			a = -1;
	} else {
		a = hal_axis(axis, r);
	}
	if (a < 0)
		return hal_err(s, AIDOS_E_INVALID, "axis %lld is out of range for rank %d",
			       (long long)axis, r);
	sm_params *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	p->outer = p->n = p->inner = 1;
	for (int d = 0; d < r; d++) {
		if (d < a)
			p->outer *= x->dims[d];
		else if (d == a || legacy)
			p->n *= x->dims[d];
		else
			p->inner *= x->dims[d];
	}
	p->log = strcmp(s->op->name, "LogSoftmax") == 0;
	hal_tensor_set_shape(s->out[0], x->dtype, r, x->dims);
	s->params = p;
	return 0;
}

static int softmax_exec(hal_step *s)
{
	const sm_params *p = s->params;
	sm_job j = { p, s->in[0]->data, s->out[0]->data };
	const int f64 = s->in[0]->dtype == HAL_DT_F64;
	if (p->outer == 0 || p->n == 0 || p->inner == 0)
		return 0;
	if (p->inner == 1) {
		int64_t grain = GRAIN_MATH / p->n + 1;
		hal_parallel_for(s, p->outer, grain,
				 f64 ? sm_rows_f64 : p->log || hal_use_reference ? sm_rows_f32 : sm_rows_vm, &j);
	} else {
		int64_t nb = (p->inner + SM_BLK - 1) / SM_BLK;
		int64_t grain = GRAIN_MATH / (p->n * SM_BLK) + 1;
		hal_parallel_for(s, p->outer * nb, grain, f64 ? sm_cols_f64 : sm_cols_f32, &j);
	}
	return 0;
}

/* ---- the op table ---- */

#define UNARY(var, NAME, since, tab_, out, math_, setup_) \
	static const ew_op var = { { NAME, since, HAL_OP_PURE, ew_unary_infer, ew_exec }, \
				   tab_, out, math_, setup_ };
#define BINARY(var, NAME, since, tab_, out, setup_) \
	static const ew_op var = { { NAME, since, HAL_OP_PURE, ew_binary_infer, ew_exec }, \
				   tab_, out, 0, setup_ };
#define VARIADIC(var, NAME, since, tab_) \
	static const ew_op var = { { NAME, since, HAL_OP_PURE, variadic_infer, variadic_exec }, \
				   tab_, 0, 0, NULL };
#define CUSTOM(var, NAME, since, infer_, exec_) \
	static const ew_op var = { { NAME, since, HAL_OP_PURE, infer_, exec_ }, NULL, 0, 0, NULL };

BINARY(op_add, "Add", 7, t_add, 0, NULL)
BINARY(op_sub, "Sub", 7, t_sub, 0, NULL)
BINARY(op_mul, "Mul", 7, t_mul, 0, NULL)
BINARY(op_div, "Div", 7, t_div, 0, NULL)
BINARY(op_mod, "Mod", 10, t_mod, 0, setup_mod)
CUSTOM(op_prelu, "PRelu", 6, prelu_infer, ew_exec)
BINARY(op_bitshift, "BitShift", 11, t_shl, 0, setup_bitshift)
BINARY(op_equal, "Equal", 7, t_equal, HAL_DT_BOOL, NULL)
BINARY(op_greater, "Greater", 7, t_greater, HAL_DT_BOOL, NULL)
BINARY(op_greater_eq, "GreaterOrEqual", 12, t_greater_eq, HAL_DT_BOOL, NULL)
BINARY(op_less, "Less", 7, t_less, HAL_DT_BOOL, NULL)
BINARY(op_less_eq, "LessOrEqual", 12, t_less_eq, HAL_DT_BOOL, NULL)
BINARY(op_and, "And", 7, t_and, HAL_DT_BOOL, NULL)
BINARY(op_or, "Or", 7, t_or, HAL_DT_BOOL, NULL)
BINARY(op_xor, "Xor", 7, t_xor, HAL_DT_BOOL, NULL)
VARIADIC(op_max, "Max", 8, t_max)
VARIADIC(op_min, "Min", 8, t_min)
VARIADIC(op_sum, "Sum", 8, t_add)
VARIADIC(op_mean, "Mean", 8, t_add)
UNARY(op_not, "Not", 1, t_not, HAL_DT_BOOL, 0, NULL)
UNARY(op_sqrt, "Sqrt", 6, t_sqrt, 0, 1, NULL)
UNARY(op_relu, "Relu", 6, t_relu, 0, 0, NULL)
UNARY(op_leakyrelu, "LeakyRelu", 6, t_leakyrelu, 0, 0, setup_leakyrelu)
UNARY(op_sigmoid, "Sigmoid", 6, t_sigmoid, 0, 1, NULL)
UNARY(op_hardsigmoid, "HardSigmoid", 6, t_hardsigmoid, 0, 0, setup_hardsigmoid)
UNARY(op_hardswish, "HardSwish", 14, t_hardswish, 0, 0, NULL)
UNARY(op_tanh, "Tanh", 6, t_tanh, 0, 1, NULL)
UNARY(op_log, "Log", 6, t_log, 0, 1, NULL)
UNARY(op_exp, "Exp", 6, t_exp, 0, 1, NULL)
UNARY(op_neg, "Neg", 6, t_neg, 0, 0, NULL)
UNARY(op_abs, "Abs", 6, t_abs, 0, 0, NULL)
UNARY(op_erf, "Erf", 9, t_erf, 0, 1, NULL)
UNARY(op_floor, "Floor", 6, t_floor, 0, 0, NULL)
UNARY(op_ceil, "Ceil", 6, t_ceil, 0, 0, NULL)
UNARY(op_round, "Round", 11, t_round, 0, 0, NULL)
UNARY(op_reciprocal, "Reciprocal", 6, t_reciprocal, 0, 0, NULL)
UNARY(op_sign, "Sign", 9, t_sign, 0, 0, NULL)
UNARY(op_sin, "Sin", 7, t_sin, 0, 1, NULL)
UNARY(op_cos, "Cos", 7, t_cos, 0, 1, NULL)
UNARY(op_tan, "Tan", 7, t_tan, 0, 1, NULL)
UNARY(op_asin, "Asin", 7, t_asin, 0, 1, NULL)
UNARY(op_acos, "Acos", 7, t_acos, 0, 1, NULL)
UNARY(op_atan, "Atan", 7, t_atan, 0, 1, NULL)
UNARY(op_sinh, "Sinh", 9, t_sinh, 0, 1, NULL)
UNARY(op_cosh, "Cosh", 9, t_cosh, 0, 1, NULL)
UNARY(op_asinh, "Asinh", 9, t_asinh, 0, 1, NULL)
UNARY(op_acosh, "Acosh", 9, t_acosh, 0, 1, NULL)
UNARY(op_atanh, "Atanh", 9, t_atanh, 0, 1, NULL)
UNARY(op_softplus, "Softplus", 1, t_softplus, 0, 1, NULL)
UNARY(op_softsign, "Softsign", 1, t_softsign, 0, 0, NULL)
UNARY(op_mish, "Mish", 18, t_mish, 0, 1, NULL)
UNARY(op_elu, "Elu", 6, t_elu, 0, 1, setup_alpha1)
UNARY(op_selu, "Selu", 6, t_selu, 0, 1, setup_selu)
UNARY(op_celu, "Celu", 12, t_celu, 0, 1, setup_alpha1)
UNARY(op_thresholdedrelu, "ThresholdedRelu", 10, t_thresholdedrelu, 0, 0, setup_alpha1)
UNARY(op_shrink, "Shrink", 9, t_shrink, 0, 0, setup_shrink)
UNARY(op_gelu, "Gelu", 20, t_gelu, 0, 1, setup_gelu)
UNARY(op_isnan, "IsNaN", 9, t_isnan, HAL_DT_BOOL, 0, NULL)
UNARY(op_isinf, "IsInf", 10, t_isinf, HAL_DT_BOOL, 0, setup_isinf)
CUSTOM(op_pow, "Pow", 7, pow_infer, ew_exec)
CUSTOM(op_where, "Where", 9, where_infer, ew_exec)
CUSTOM(op_clip, "Clip", 6, clip_infer, clip_exec)
CUSTOM(op_cast, "Cast", 6, cast_infer, cast_exec)
CUSTOM(op_castlike, "CastLike", 15, castlike_infer, cast_exec)
CUSTOM(op_softmax, "Softmax", 1, softmax_infer, softmax_exec)
CUSTOM(op_logsoftmax, "LogSoftmax", 1, softmax_infer, softmax_exec)

const hal_op *const hal_ops_elementwise[] = {
	&op_add.op, &op_sub.op, &op_mul.op, &op_div.op, &op_mod.op, &op_pow.op, &op_prelu.op,
	&op_bitshift.op,
	&op_max.op, &op_min.op, &op_sum.op, &op_mean.op,
	&op_equal.op, &op_greater.op, &op_greater_eq.op, &op_less.op, &op_less_eq.op,
	&op_and.op, &op_or.op, &op_xor.op, &op_not.op,
	&op_sqrt.op, &op_relu.op, &op_leakyrelu.op, &op_sigmoid.op, &op_hardsigmoid.op,
	&op_hardswish.op, &op_tanh.op, &op_log.op, &op_exp.op, &op_neg.op, &op_abs.op,
	&op_erf.op, &op_floor.op, &op_ceil.op, &op_round.op, &op_reciprocal.op, &op_sign.op,
	&op_sin.op, &op_cos.op, &op_tan.op, &op_asin.op, &op_acos.op, &op_atan.op,
	&op_sinh.op, &op_cosh.op, &op_asinh.op, &op_acosh.op, &op_atanh.op,
	&op_softplus.op, &op_softsign.op, &op_mish.op, &op_elu.op, &op_selu.op, &op_celu.op,
	&op_thresholdedrelu.op, &op_shrink.op, &op_gelu.op, &op_isnan.op, &op_isinf.op,
	&op_where.op, &op_clip.op, &op_cast.op, &op_castlike.op,
	&op_softmax.op, &op_logsoftmax.op,
	NULL,
};
