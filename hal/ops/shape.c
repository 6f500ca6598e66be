/*
 * hal/ops/shape.c - data-movement kernels: ops that reshape, reorder, slice,
 * gather, scatter, pad or resize tensors, and the ops that make values out of
 * shapes or attributes (Shape, Size, Constant, ConstantOfShape, Range).
 *
 * Semantics follow the ONNX operator specification, opsets 1-18
 * (https://github.com/onnx/onnx/blob/main/docs/Changelog.md); where the spec
 * leaves a choice (Resize opset 10 rounding) we match ONNX Runtime, the
 * reference the model zoo is validated against.
 *
 * Elements are moved by size (memcpy of 1, 2, 4, 8 bytes), so every dtype
 * aidos can hold works; kernels that compute (CumSum, TopK, Range, Resize
 * linear/cubic, ScatterND/ScatterElements reductions) list their dtypes.
 *
 * Ops whose output SHAPE depends on an input VALUE (Reshape's shape, Slice's
 * starts, ...) require that input to be a plan-time constant: aidos plans
 * every arena before the first request, so a data-dependent shape has no
 * place to live. infer() says so through hal_need_value(), which lets the
 * session plan again with the graph inputs behind that value folded in.
 *
 * Most movement ops reduce to one "strided view": the output, walked in
 * row-major order, reads the source at off + sum(idx[d] * str[d]). Transpose,
 * Slice, Expand and Tile all build one in infer() (no work per request) and
 * share one executor with a tiled path for transposed matrices.
 */
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include "hal/hal.h"
#include "hal/ir.h"
#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* ------------------------------------------------------------------------ */
/* helpers                                                                   */
/* ------------------------------------------------------------------------ */

static const hal_tensor *in_opt(const hal_step *s, int i)
{
	return i < s->n_in ? s->in[i] : NULL;
}

/* An optional input that is absent or empty (ONNX marks "not given" both ways,
 * e.g. Resize's roi/scales as empty constants). */
static const hal_tensor *in_given(const hal_step *s, int i)
{
	const hal_tensor *t = in_opt(s, i);
	return t && hal_numel(t) > 0 ? t : NULL;
}

typedef struct dimbuf {
	char s[HAL_MAX_RANK * 22 + 4];
} dimbuf;

/* "[2,3,4]" for error messages. */
static const char *dims_str(dimbuf *b, int rank, const int64_t *d)
{
	size_t n = 0;
	b->s[n++] = '[';
	for (int i = 0; i < rank && i < HAL_MAX_RANK; i++)
		n += (size_t)snprintf(b->s + n, sizeof b->s - n, "%s%lld", i ? "," : "",
				      (long long)d[i]);
	snprintf(b->s + n, sizeof b->s - n, "]");
	return b->s;
}

/* Element size of t; strings and unknown dtypes cannot be moved. */
static int elsize(hal_step *s, const hal_tensor *t, size_t *es)
{
	*es = hal_dtype_size(t->dtype);
	if (*es == 0)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "dtype %s is not supported",
			       hal_dtype_name(t->dtype));
	return 0;
}

/* Sets o's dtype and shape after checking the rank, that no dim is negative
 * and that the byte size fits in int64 (a hostile shape must not wrap). */
static int set_out(hal_step *s, hal_tensor *o, int dtype, int rank, const int64_t *dims)
{
	if (rank < 0 || rank > HAL_MAX_RANK)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "output rank %d exceeds %d", rank,
			       HAL_MAX_RANK);
	int64_t n = (int64_t)(hal_dtype_size(dtype) ? hal_dtype_size(dtype) : 1);
	bool zero = false, ovf = false;
	for (int i = 0; i < rank; i++) {
		if (dims[i] < 0)
			return hal_err(s, AIDOS_E_SHAPE, "output dim %d is negative (%lld)", i,
				       (long long)dims[i]);
		if (dims[i] == 0)
			zero = true;
		else if (__builtin_mul_overflow(n, dims[i], &n))
			ovf = true;
	}
	if (ovf && !zero) {
		dimbuf b;
		return hal_err(s, AIDOS_E_RANGE, "output shape %s is too large",
			       dims_str(&b, rank, dims));
	}
	hal_tensor_set_shape(o, dtype, rank, dims);
	return 0;
}

static int need_const(hal_step *s, const hal_tensor *t, const char *what)
{
	return hal_need_value(s, t, what);
}

/* Reads the integers of t (rank <= 1, a plan-time constant, at most max
 * values) into v; returns the count or a negative error. */
static int const_ints(hal_step *s, const hal_tensor *t, const char *what, int64_t *v, int max)
{
	int rc = need_const(s, t, what);
	if (rc)
		return rc;
	if (t->dtype != HAL_DT_I64 && t->dtype != HAL_DT_I32)
		return hal_err(s, AIDOS_E_INVALID, "%s must be int32 or int64, not %s", what,
			       hal_dtype_name(t->dtype));
	if (t->rank > 1)
		return hal_err(s, AIDOS_E_INVALID, "%s must have rank 0 or 1, not %d", what,
			       t->rank);
	int64_t n = hal_numel(t);
	if (n > max)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "%s has %lld values, at most %d supported",
			       what, (long long)n, max);
	for (int64_t i = 0; i < n; i++)
		v[i] = hal_get_i64(t, i);
	return (int)n;
}

/* The same for floating-point values (Resize scales and roi). */
static int const_f64s(hal_step *s, const hal_tensor *t, const char *what, double *v, int max)
{
	int rc = need_const(s, t, what);
	if (rc)
		return rc;
	if (t->dtype != HAL_DT_F32 && t->dtype != HAL_DT_F64 && t->dtype != HAL_DT_F16)
		return hal_err(s, AIDOS_E_INVALID, "%s must be floating point, not %s", what,
			       hal_dtype_name(t->dtype));
	if (t->rank > 1)
		return hal_err(s, AIDOS_E_INVALID, "%s must have rank 1, not %d", what, t->rank);
	int64_t n = hal_numel(t);
	if (n > max)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "%s has %lld values, at most %d supported",
			       what, (long long)n, max);
	for (int64_t i = 0; i < n; i++)
		v[i] = hal_get_f64(t, i);
	return (int)n;
}

/* Axes from the attribute (opset < since_input) or from input idx; *n = -1 when
 * neither is given. Values are not normalised. */
static int get_axes(hal_step *s, int since_input, int idx, int64_t *axes, int *n)
{
	*n = -1;
	if (s->opset >= since_input) {
		const hal_tensor *t = in_opt(s, idx);
		if (!t)
			return 0;
		int rc = const_ints(s, t, "axes", axes, HAL_MAX_RANK);
		if (rc < 0)
			return rc;
		*n = rc;
		return 0;
	}
	const int64_t *v;
	int c = hal_attr_ints(s->node, "axes", &v);
	if (!hal_attr_has(s->node, "axes"))
		return 0;
	if (c > HAL_MAX_RANK)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "axes has %d values, at most %d supported",
			       c, HAL_MAX_RANK);
	if (c)
		memcpy(axes, v, (size_t)c * sizeof *axes);
	*n = c;
	return 0;
}

static void row_strides(int rank, const int64_t *dims, int64_t *str)
{
	int64_t acc = 1;
	for (int i = rank - 1; i >= 0; i--) {
		str[i] = acc;
		acc *= dims[i];
	}
}

static inline void copy_el(char *dst, const char *src, size_t es)
{
	switch (es) {
	case 1: *dst = *src; break;
	case 2: memcpy(dst, src, 2); break;
	case 4: memcpy(dst, src, 4); break;
	case 8: memcpy(dst, src, 8); break;
	default: memcpy(dst, src, es); break;
	}
}

/* Fills n elements of es bytes at dst with the value at v. */
static void fill_el(char *dst, const void *v, int64_t n, size_t es)
{
	if (n <= 0)
		return;
	const unsigned char *b = v;
	bool same = true;
	for (size_t i = 1; i < es; i++)
		same &= b[i] == b[0];
	if (same) {
		memset(dst, b[0], (size_t)n * es);
		return;
	}
	for (int64_t i = 0; i < n; i++)
		copy_el(dst + (size_t)i * es, v, es);
}

static inline int64_t idx_at(const void *p, int is64, int64_t i)
{
	return is64 ? ((const int64_t *)p)[i] : ((const int32_t *)p)[i];
}

static uint16_t f32_to_f16(float f)
{
	uint32_t x;
	memcpy(&x, &f, 4);
	uint32_t sign = (x >> 16) & 0x8000u, exp = (x >> 23) & 0xffu, man = x & 0x7fffffu;
	if (exp == 0xff)
		return (uint16_t)(sign | 0x7c00u | (man ? 0x200u : 0));
	int e = (int)exp - 127 + 15;
	if (e >= 31)
		return (uint16_t)(sign | 0x7c00u);
	if (e <= 0) {  /* subnormal half: round to nearest even */
		if (e < -10)
			return (uint16_t)sign;
		man |= 0x800000u;
		unsigned shift = (unsigned)(14 - e);
		uint32_t h = man >> shift, rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
		if (rem > half || (rem == half && (h & 1)))
			h++;
		return (uint16_t)(sign | h);
	}
	uint32_t h = ((uint32_t)e << 10) | (man >> 13), rem = man & 0x1fffu;
	if (rem > 0x1000u || (rem == 0x1000u && (h & 1)))
		h++;  /* a carry into the exponent is the correct rounding, inf included */
	return (uint16_t)(sign | h);
}

static float f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 31u, m = h & 1023u, x;
	float f;
	if (e == 0)
		f = ldexpf((float)m, -24);
	else if (e == 31)
		f = m ? NAN : INFINITY;
	else
		f = ldexpf((float)(m | 1024u), (int)e - 25);
	memcpy(&x, &f, 4);
	x |= sign;
	memcpy(&f, &x, 4);
	return f;
}

static double clampd(double v, double lo, double hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

/* Stores v into one element of dtype at p; integers are rounded to nearest
 * when round is set, else truncated like a C cast, and saturated. */
static void put_f64(void *p, int dtype, double v, bool round)
{
	if (dtype != HAL_DT_F32 && dtype != HAL_DT_F64 && dtype != HAL_DT_F16) {
		if (v != v)
			v = 0;
		v = round ? nearbyint(v) : trunc(v);
	}
	switch (dtype) {
	case HAL_DT_F32: { float x = (float)v; memcpy(p, &x, 4); break; }
	case HAL_DT_F64: memcpy(p, &v, 8); break;
	case HAL_DT_F16: { uint16_t x = f32_to_f16((float)v); memcpy(p, &x, 2); break; }
	case HAL_DT_I8: { int8_t x = (int8_t)clampd(v, INT8_MIN, INT8_MAX); memcpy(p, &x, 1); break; }
	case HAL_DT_U8: { uint8_t x = (uint8_t)clampd(v, 0, UINT8_MAX); memcpy(p, &x, 1); break; }
	case HAL_DT_I16: { int16_t x = (int16_t)clampd(v, INT16_MIN, INT16_MAX); memcpy(p, &x, 2); break; }
	case HAL_DT_U16: { uint16_t x = (uint16_t)clampd(v, 0, UINT16_MAX); memcpy(p, &x, 2); break; }
	case HAL_DT_I32: { int32_t x = (int32_t)clampd(v, INT32_MIN, INT32_MAX); memcpy(p, &x, 4); break; }
	case HAL_DT_U32: { uint32_t x = (uint32_t)clampd(v, 0, UINT32_MAX); memcpy(p, &x, 4); break; }
	case HAL_DT_I64: {
		int64_t x = v >= 9223372036854775807.0 ? INT64_MAX
			  : v <= -9223372036854775808.0 ? INT64_MIN : (int64_t)v;
		memcpy(p, &x, 8);
		break;
	}
	case HAL_DT_U64: {
		uint64_t x = v >= 18446744073709551615.0 ? UINT64_MAX : v <= 0 ? 0 : (uint64_t)v;
		memcpy(p, &x, 8);
		break;
	}
	case HAL_DT_BOOL: { uint8_t x = v != 0; memcpy(p, &x, 1); break; }
	default: break;
	}
}

static inline bool is_float_dt(int dt)
{
	return dt == HAL_DT_F32 || dt == HAL_DT_F64 || dt == HAL_DT_F16;
}

/* Grain (items per chunk) so one chunk moves about 64 KiB. */
static int64_t grain_for(size_t item_bytes)
{
	if (item_bytes == 0)
		return 1 << 16;
	int64_t g = (int64_t)((64u << 10) / item_bytes);
	return g > 0 ? g : 1;
}

/* ------------------------------------------------------------------------ */
/* the strided view executor                                                 */
/* ------------------------------------------------------------------------ */

#define SR_MAX (2 * HAL_MAX_RANK)  /* Tile doubles the rank: [rep, dim] pairs */
#define SR_TILE 32                 /* transpose block: 32x32 x 8 bytes = 8 KiB */

typedef struct strided {
	size_t es;
	int rank;                  /* >= 1 after sr_simplify */
	int tiled;                 /* last two dims read a transposed matrix */
	int64_t numel;
	int64_t off;               /* source element of output element 0 */
	int64_t dims[SR_MAX];      /* output iteration space, row-major */
	int64_t str[SR_MAX];       /* source stride per dim in elements; 0 broadcasts */
} strided;

/* Drops unit dims and merges dims that are contiguous in the source, so a
 * Transpose that only moves blocks becomes a few large memcpys. */
static void sr_simplify(strided *p)
{
	int r = 0;
	p->numel = 1;
	for (int i = 0; i < p->rank; i++) {
		/* Shapes are not yet checked here (the planner rejects oversized
		 * outputs after infer): saturate instead of overflowing. */
		int64_t span, merged;
		if (__builtin_mul_overflow(p->numel, p->dims[i], &p->numel))
			p->numel = INT64_MAX;
		if (p->dims[i] == 1)
			continue;
		if (r > 0 && !__builtin_mul_overflow(p->str[i], p->dims[i], &span) && p->str[r - 1] == span &&
		    !__builtin_mul_overflow(p->dims[r - 1], p->dims[i], &merged)) {
			p->dims[r - 1] = merged;
			p->str[r - 1] = p->str[i];
			continue;
		}
		p->dims[r] = p->dims[i];
		p->str[r] = p->str[i];
		r++;
	}
	if (r == 0) {
		p->dims[0] = 1;
		p->str[0] = 1;
		r = 1;
	}
	p->rank = r;
	/* out[.., p, q] = src[.., p + q * P]: a batched matrix transpose; the
	 * naive row walk strides through memory, a blocked walk does not. */
	p->tiled = !hal_use_reference && r >= 2 && p->str[r - 2] == 1 &&
		   p->str[r - 1] == p->dims[r - 2] && p->dims[r - 1] >= 4 && p->dims[r - 2] >= 4;
}

typedef struct sr_job {
	const strided *p;
	const char *src;
	char *dst;
} sr_job;

static void copy_row(char *dst, const char *src, int64_t n, int64_t str, size_t es)
{
	if (str == 1) {
		memcpy(dst, src, (size_t)n * es);
		return;
	}
	int64_t sb = str * (int64_t)es;
	switch (es) {
	case 1: for (int64_t i = 0; i < n; i++) dst[i] = src[i * sb]; break;
	case 2: for (int64_t i = 0; i < n; i++) memcpy(dst + i * 2, src + i * sb, 2); break;
	case 4: for (int64_t i = 0; i < n; i++) memcpy(dst + i * 4, src + i * sb, 4); break;
	case 8: for (int64_t i = 0; i < n; i++) memcpy(dst + i * 8, src + i * sb, 8); break;
	default: for (int64_t i = 0; i < n; i++) memcpy(dst + i * (int64_t)es, src + i * sb, es);
	}
}

/* Output rows [r0, r1): a row is the innermost dim. */
static void sr_rows(void *arg, int64_t r0, int64_t r1)
{
	const sr_job *j = arg;
	const strided *p = j->p;
	size_t es = p->es;
	int last = p->rank - 1;
	int64_t inner = p->dims[last], idx[SR_MAX], off = p->off, r = r0;
	for (int d = last - 1; d >= 0; d--) {
		idx[d] = r % p->dims[d];
		r /= p->dims[d];
		off += idx[d] * p->str[d];
	}
	for (r = r0; r < r1; r++) {
		copy_row(j->dst + (size_t)(r * inner) * es, j->src + off * (int64_t)es, inner,
			 p->str[last], es);
		for (int d = last - 1; d >= 0; d--) {
			off += p->str[d];
			if (++idx[d] < p->dims[d])
				break;
			off -= idx[d] * p->str[d];
			idx[d] = 0;
		}
	}
}

#define SR_TILE_LOOP(T)                                                              \
	do {                                                                         \
		const T *sp = (const T *)(const void *)src;                          \
		T *dp = (T *)(void *)dst;                                            \
		for (int64_t q0 = 0; q0 < Q; q0 += SR_TILE) {                        \
			int64_t q1 = q0 + SR_TILE < Q ? q0 + SR_TILE : Q;            \
			for (int64_t pp = p0; pp < p1; pp++)                         \
				for (int64_t q = q0; q < q1; q++)                    \
					dp[pp * Q + q] = sp[pp + q * P];             \
		}                                                                    \
	} while (0)

#ifdef __SSE2__
/* 4-byte elements: 4x4 blocks transposed in registers (SSE2 is baseline on
 * x86-64); about 2.5x the scalar tile loop on an NCHW -> NHWC copy. */
static void tile4_sse(const uint32_t *sp, uint32_t *dp, int64_t P, int64_t Q, int64_t p0, int64_t p1)
{
	for (int64_t q0 = 0; q0 < Q; q0 += SR_TILE) {
		int64_t q1 = q0 + SR_TILE < Q ? q0 + SR_TILE : Q;
		int64_t pp = p0;
		for (; pp + 4 <= p1; pp += 4) {
			int64_t q = q0;
			for (; q + 4 <= q1; q += 4) {
				__m128 r0 = _mm_loadu_ps((const float *)(const void *)(sp + pp + (q + 0) * P));
				__m128 r1 = _mm_loadu_ps((const float *)(const void *)(sp + pp + (q + 1) * P));
				__m128 r2 = _mm_loadu_ps((const float *)(const void *)(sp + pp + (q + 2) * P));
				__m128 r3 = _mm_loadu_ps((const float *)(const void *)(sp + pp + (q + 3) * P));
				_MM_TRANSPOSE4_PS(r0, r1, r2, r3);
				_mm_storeu_ps((float *)(void *)(dp + (pp + 0) * Q + q), r0);
				_mm_storeu_ps((float *)(void *)(dp + (pp + 1) * Q + q), r1);
				_mm_storeu_ps((float *)(void *)(dp + (pp + 2) * Q + q), r2);
				_mm_storeu_ps((float *)(void *)(dp + (pp + 3) * Q + q), r3);
			}
			for (; q < q1; q++)
				for (int64_t k = 0; k < 4; k++)
					dp[(pp + k) * Q + q] = sp[pp + k + q * P];
		}
		for (; pp < p1; pp++)
			for (int64_t q = q0; q < q1; q++)
				dp[pp * Q + q] = sp[pp + q * P];
	}
}
#endif

/* Units [u0, u1): a unit is SR_TILE output rows of one matrix. */
static void sr_tiles(void *arg, int64_t u0, int64_t u1)
{
	const sr_job *j = arg;
	const strided *p = j->p;
	int r = p->rank;
	int64_t P = p->dims[r - 2], Q = p->dims[r - 1];
	int64_t nbp = (P + SR_TILE - 1) / SR_TILE;
	for (int64_t u = u0; u < u1; u++) {
		int64_t m = u / nbp, p0 = (u % nbp) * SR_TILE;
		int64_t p1 = p0 + SR_TILE < P ? p0 + SR_TILE : P;
		int64_t off = p->off, mm = m;
		for (int d = r - 3; d >= 0; d--) {
			off += (mm % p->dims[d]) * p->str[d];
			mm /= p->dims[d];
		}
		const char *src = j->src + off * (int64_t)p->es;
		char *dst = j->dst + (size_t)(m * P * Q) * p->es;
		switch (p->es) {
		case 1: SR_TILE_LOOP(uint8_t); break;
		case 2: SR_TILE_LOOP(uint16_t); break;
		case 4:
#ifdef __SSE2__
			tile4_sse((const uint32_t *)(const void *)src, (uint32_t *)(void *)dst, P, Q, p0, p1);
#else
			SR_TILE_LOOP(uint32_t);
#endif
			break;
		case 8: SR_TILE_LOOP(uint64_t); break;
		default:
			for (int64_t pp = p0; pp < p1; pp++)
				for (int64_t q = 0; q < Q; q++)
					memcpy(dst + (size_t)(pp * Q + q) * p->es,
					       src + (size_t)(pp + q * P) * p->es, p->es);
		}
	}
}

static void sr_run(hal_step *s, const strided *p, const void *src, void *dst)
{
	if (p->numel == 0)
		return;
	sr_job j = { p, src, dst };
	if (p->tiled) {
		int r = p->rank;
		int64_t P = p->dims[r - 2], Q = p->dims[r - 1];
		int64_t units = p->numel / (P * Q) * ((P + SR_TILE - 1) / SR_TILE);
		hal_parallel_for(s, units, grain_for((size_t)(SR_TILE * Q) * p->es), sr_tiles, &j);
		return;
	}
	int64_t inner = p->dims[p->rank - 1];
	hal_parallel_for(s, p->numel / inner, grain_for((size_t)inner * p->es), sr_rows, &j);
}

static int strided_exec(hal_step *s)
{
	sr_run(s, s->params, s->in[0]->data, s->out[0]->data);
	return 0;
}

/* Allocates the view for s with the source's element size. */
static strided *sr_new(hal_step *s, const hal_tensor *src)
{
	strided *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return NULL;
	p->es = hal_dtype_size(src->dtype);
	s->params = p;
	return p;
}

/* ------------------------------------------------------------------------ */
/* Identity, Reshape, Flatten, Squeeze, Unsqueeze: same bytes, new shape     */
/* ------------------------------------------------------------------------ */

static int alias_exec(hal_step *s)
{
	size_t n = hal_nbytes(s->out[0]);
	if (s->out[0]->data != s->in[0]->data && n)
		memcpy(s->out[0]->data, s->in[0]->data, n);
	return 0;
}

static int identity_infer(hal_step *s)
{
	size_t es;
	int rc = elsize(s, s->in[0], &es);
	if (rc)
		return rc;
	hal_tensor_like(s->out[0], s->in[0]);
	return 0;
}

static int reshape_infer(hal_step *s)
{
	const hal_tensor *x = s->in[0];
	int64_t d[HAL_MAX_RANK];
	int n;
	size_t es;
	int rc = elsize(s, x, &es);
	if (rc)
		return rc;
	if (in_opt(s, 1)) {
		n = const_ints(s, s->in[1], "shape", d, HAL_MAX_RANK);
		if (n < 0)
			return n;
	} else {  /* Reshape-1: shape attribute */
		const int64_t *v;
		n = hal_attr_ints(s->node, "shape", &v);
		if (n > HAL_MAX_RANK)
			return hal_err(s, AIDOS_E_UNSUPPORTED, "shape has %d values, at most %d",
				       n, HAL_MAX_RANK);
		if (n)
			memcpy(d, v, (size_t)n * sizeof *d);
	}
	bool allowzero = hal_attr_int(s->node, "allowzero", 0) != 0;
	int neg = -1;
	int64_t known = 1;
	dimbuf b1, b2;
	for (int i = 0; i < n; i++) {
		if (d[i] == 0 && !allowzero) {
			if (i >= x->rank)
				return hal_err(s, AIDOS_E_SHAPE,
					       "shape[%d] is 0 (copy) but the input %s has rank %d", i,
					       dims_str(&b1, x->rank, x->dims), x->rank);
			d[i] = x->dims[i];
		} else if (d[i] == -1) {
			if (neg >= 0)
				return hal_err(s, AIDOS_E_INVALID, "shape has more than one -1");
			neg = i;
			continue;
		} else if (d[i] < -1) {
			return hal_err(s, AIDOS_E_INVALID, "shape[%d] is %lld", i, (long long)d[i]);
		}
		if (__builtin_mul_overflow(known, d[i], &known))
			return hal_err(s, AIDOS_E_RANGE, "shape %s is too large",
				       dims_str(&b1, n, d));
	}
	int64_t total = hal_numel(x);
	if (neg >= 0) {
		if (known == 0 || total % known)
			return hal_err(s, AIDOS_E_SHAPE, "cannot reshape %s to %s",
				       dims_str(&b1, x->rank, x->dims), dims_str(&b2, n, d));
		d[neg] = total / known;
	} else if (known != total) {
		return hal_err(s, AIDOS_E_SHAPE, "cannot reshape %s (%lld elements) to %s",
			       dims_str(&b1, x->rank, x->dims), (long long)total,
			       dims_str(&b2, n, d));
	}
	return set_out(s, s->out[0], x->dtype, n, d);
}

static int flatten_infer(hal_step *s)
{
	const hal_tensor *x = s->in[0];
	size_t es;
	int rc = elsize(s, x, &es);
	if (rc)
		return rc;
	int64_t axis = hal_attr_int(s->node, "axis", 1);
	if (axis < 0)
		axis += x->rank;
	if (axis < 0 || axis > x->rank)
		return hal_err(s, AIDOS_E_INVALID, "axis %lld out of range for rank %d",
			       (long long)hal_attr_int(s->node, "axis", 1), x->rank);
	int64_t d[2] = { 1, 1 };
	for (int i = 0; i < x->rank; i++)
		d[i >= axis] *= x->dims[i];
	return set_out(s, s->out[0], x->dtype, 2, d);
}

static int squeeze_infer(hal_step *s)
{
	const hal_tensor *x = s->in[0];
	int64_t axes[HAL_MAX_RANK], d[HAL_MAX_RANK];
	int n, r = 0;
	bool drop[HAL_MAX_RANK] = { false };
	size_t es;
	int rc = elsize(s, x, &es);
	if (!rc)
		rc = get_axes(s, 13, 1, axes, &n);
	if (rc)
		return rc;
	if (n <= 0) {  /* no (or empty) axes: every unit dim, as ORT does */
		for (int i = 0; i < x->rank; i++)
			drop[i] = x->dims[i] == 1;
	}
	for (int i = 0; i < n; i++) {
		int a = hal_axis(axes[i], x->rank);
		if (a < 0)
			return hal_err(s, AIDOS_E_INVALID, "axis %lld out of range for rank %d",
				       (long long)axes[i], x->rank);
		if (x->dims[a] != 1)
			return hal_err(s, AIDOS_E_SHAPE, "cannot squeeze axis %d of size %lld", a,
				       (long long)x->dims[a]);
		drop[a] = true;
	}
	for (int i = 0; i < x->rank; i++)
		if (!drop[i])
			d[r++] = x->dims[i];
	return set_out(s, s->out[0], x->dtype, r, d);
}

static int unsqueeze_infer(hal_step *s)
{
	const hal_tensor *x = s->in[0];
	int64_t axes[HAL_MAX_RANK], d[HAL_MAX_RANK];
	int n;
	bool ins[HAL_MAX_RANK] = { false };
	size_t es;
	int rc = elsize(s, x, &es);
	if (!rc)
		rc = get_axes(s, 13, 1, axes, &n);
	if (rc)
		return rc;
	if (n < 0)
		return hal_err(s, AIDOS_E_INVALID, "Unsqueeze needs axes");
	int r = x->rank + n;
	if (r > HAL_MAX_RANK)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "output rank %d exceeds %d", r, HAL_MAX_RANK);
	for (int i = 0; i < n; i++) {
		int a = hal_axis(axes[i], r);
		if (a < 0)
			return hal_err(s, AIDOS_E_INVALID, "axis %lld out of range for rank %d",
				       (long long)axes[i], r);
		if (ins[a])
			return hal_err(s, AIDOS_E_INVALID, "axis %d repeated", a);
		ins[a] = true;
	}
	for (int i = 0, j = 0; i < r; i++)
		d[i] = ins[i] ? 1 : x->dims[j++];
	return set_out(s, s->out[0], x->dtype, r, d);
}

/* ------------------------------------------------------------------------ */
/* Transpose, Slice, Expand, Tile: strided views                             */
/* ------------------------------------------------------------------------ */

static int transpose_infer(hal_step *s)
{
	const hal_tensor *x = s->in[0];
	int r = x->rank;
	int64_t perm[HAL_MAX_RANK], istr[HAL_MAX_RANK], d[HAL_MAX_RANK];
	bool seen[HAL_MAX_RANK] = { false };
	size_t es;
	int rc = elsize(s, x, &es);
	if (rc)
		return rc;
	const int64_t *pv;
	int np = hal_attr_ints(s->node, "perm", &pv);
	if (hal_attr_has(s->node, "perm")) {
		if (np != r)
			return hal_err(s, AIDOS_E_INVALID, "perm has %d values for rank %d", np, r);
		for (int i = 0; i < r; i++) {
			int a = hal_axis(pv[i], r);
			if (a < 0 || pv[i] < 0 || seen[a])
				return hal_err(s, AIDOS_E_INVALID, "perm is not a permutation of 0..%d",
					       r - 1);
			seen[a] = true;
			perm[i] = a;
		}
	} else {
		for (int i = 0; i < r; i++)
			perm[i] = r - 1 - i;
	}
	strided *p = sr_new(s, x);
	if (!p)
		return AIDOS_E_NOMEM;
	row_strides(r, x->dims, istr);
	for (int i = 0; i < r; i++) {
		d[i] = x->dims[perm[i]];
		p->dims[i] = d[i];
		p->str[i] = istr[perm[i]];
	}
	p->rank = r;
	sr_simplify(p);
	return set_out(s, s->out[0], x->dtype, r, d);
}

static int slice_infer(hal_step *s)
{
	const hal_tensor *x = s->in[0];
	int r = x->rank;
	int64_t starts[HAL_MAX_RANK], ends[HAL_MAX_RANK], axes[HAL_MAX_RANK], steps[HAL_MAX_RANK];
	int64_t istr[HAL_MAX_RANK], d[HAL_MAX_RANK];
	int n, ne, na = -1, ns = -1;
	size_t es;
	int rc = elsize(s, x, &es);
	if (rc)
		return rc;
	if (s->opset >= 10) {
		if (!in_opt(s, 1) || !in_opt(s, 2))
			return hal_err(s, AIDOS_E_INVALID, "Slice needs starts and ends");
		n = const_ints(s, s->in[1], "starts", starts, HAL_MAX_RANK);
		if (n < 0)
			return n;
		ne = const_ints(s, s->in[2], "ends", ends, HAL_MAX_RANK);
		if (ne < 0)
			return ne;
		if (in_opt(s, 3) && (na = const_ints(s, s->in[3], "axes", axes, HAL_MAX_RANK)) < 0)
			return na;
		if (in_opt(s, 4) && (ns = const_ints(s, s->in[4], "steps", steps, HAL_MAX_RANK)) < 0)
			return ns;
	} else {
		const int64_t *v;
		n = hal_attr_ints(s->node, "starts", &v);
		if (n > HAL_MAX_RANK)
			return hal_err(s, AIDOS_E_INVALID, "starts has %d values", n);
		if (n)
			memcpy(starts, v, (size_t)n * sizeof *v);
		ne = hal_attr_ints(s->node, "ends", &v);
		if (ne > HAL_MAX_RANK)
			return hal_err(s, AIDOS_E_INVALID, "ends has %d values", ne);
		if (ne)
			memcpy(ends, v, (size_t)ne * sizeof *v);
		if (hal_attr_has(s->node, "axes")) {
			na = hal_attr_ints(s->node, "axes", &v);
			if (na > HAL_MAX_RANK)
				return hal_err(s, AIDOS_E_INVALID, "axes has %d values", na);
			if (na)
				memcpy(axes, v, (size_t)na * sizeof *v);
		}
	}
	if (ne != n || (na >= 0 && na != n) || (ns >= 0 && ns != n))
		return hal_err(s, AIDOS_E_INVALID, "starts, ends, axes and steps differ in length");
	if (n > r)
		return hal_err(s, AIDOS_E_INVALID, "%d slice axes for rank %d", n, r);
	strided *p = sr_new(s, x);
	if (!p)
		return AIDOS_E_NOMEM;
	row_strides(r, x->dims, istr);
	for (int i = 0; i < r; i++) {
		d[i] = x->dims[i];
		p->dims[i] = d[i];
		p->str[i] = istr[i];
	}
	bool seen[HAL_MAX_RANK] = { false };
	for (int i = 0; i < n; i++) {
		int a = na >= 0 ? hal_axis(axes[i], r) : i;
		if (a < 0)
			return hal_err(s, AIDOS_E_INVALID, "axis %lld out of range for rank %d",
				       (long long)axes[i], r);
		if (seen[a])
			return hal_err(s, AIDOS_E_INVALID, "axis %d repeated", a);
		seen[a] = true;
		int64_t step = ns >= 0 ? steps[i] : 1, dim = x->dims[a];
		int64_t st = starts[i], en = ends[i], cnt;
		if (step == 0)
			return hal_err(s, AIDOS_E_INVALID, "step of axis %d is 0", a);
		/* a step past the whole axis takes one element: clamp it so the
		 * stride below cannot overflow */
		int64_t big = dim > 0 ? dim : 1;
		step = step > big ? big : step < -big ? -big : step;
		/* Clamping per the spec: [0, dim] for positive steps, [-1, dim-1] for
		 * negative ones; INT64_MIN/MAX mean "to the end". */
		if (st < 0)
			st += dim;
		if (en < 0)
			en += dim;
		if (step > 0) {
			st = st < 0 ? 0 : st > dim ? dim : st;
			en = en < 0 ? 0 : en > dim ? dim : en;
			cnt = en > st ? (en - st - 1) / step + 1 : 0;
		} else {
			st = st < 0 ? 0 : st > dim - 1 ? dim - 1 : st;
			en = en < -1 ? -1 : en > dim - 1 ? dim - 1 : en;
			cnt = dim > 0 && st > en ? (st - en - 1) / -step + 1 : 0;
		}
		d[a] = cnt;
		p->dims[a] = cnt;
		p->str[a] = istr[a] * step;
		if (cnt > 0)
			p->off += st * istr[a];
	}
	p->rank = r;
	sr_simplify(p);
	return set_out(s, s->out[0], x->dtype, r, d);
}

static int expand_infer(hal_step *s)
{
	const hal_tensor *x = s->in[0];
	int64_t shp[HAL_MAX_RANK], d[HAL_MAX_RANK], istr[HAL_MAX_RANK];
	size_t es;
	int rc = elsize(s, x, &es);
	if (rc)
		return rc;
	int n = const_ints(s, s->in[1], "shape", shp, HAL_MAX_RANK);
	if (n < 0)
		return n;
	int r = n > x->rank ? n : x->rank;
	strided *p = sr_new(s, x);
	if (!p)
		return AIDOS_E_NOMEM;
	row_strides(x->rank, x->dims, istr);
	dimbuf b1, b2;
	for (int i = 0; i < r; i++) {
		int xi = i - (r - x->rank), si = i - (r - n);
		int64_t a = xi >= 0 ? x->dims[xi] : 1, b = si >= 0 ? shp[si] : 1;
		if (b < 0)
			return hal_err(s, AIDOS_E_INVALID, "shape[%d] is %lld", si, (long long)b);
		if (a != b && a != 1 && b != 1)
			return hal_err(s, AIDOS_E_SHAPE, "cannot expand %s to %s",
				       dims_str(&b1, x->rank, x->dims), dims_str(&b2, n, shp));
		d[i] = a == 1 ? b : a;
		p->dims[i] = d[i];
		p->str[i] = (xi >= 0 && a != 1) ? istr[xi] : 0;
	}
	p->rank = r;
	sr_simplify(p);
	return set_out(s, s->out[0], x->dtype, r, d);
}

static int tile_infer(hal_step *s)
{
	const hal_tensor *x = s->in[0];
	int r = x->rank;
	int64_t rep[HAL_MAX_RANK], d[HAL_MAX_RANK], istr[HAL_MAX_RANK];
	size_t es;
	int rc = elsize(s, x, &es);
	if (rc)
		return rc;
	int n = const_ints(s, s->in[1], "repeats", rep, HAL_MAX_RANK);
	if (n < 0)
		return n;
	if (n != r)
		return hal_err(s, AIDOS_E_INVALID, "repeats has %d values for rank %d", n, r);
	strided *p = sr_new(s, x);
	if (!p)
		return AIDOS_E_NOMEM;
	row_strides(r, x->dims, istr);
	for (int i = 0; i < r; i++) {
		if (rep[i] < 0)
			return hal_err(s, AIDOS_E_INVALID, "repeats[%d] is %lld", i, (long long)rep[i]);
		if (__builtin_mul_overflow(x->dims[i], rep[i], &d[i]))
			return hal_err(s, AIDOS_E_RANGE, "tiled dim %d overflows", i);
		/* out index r * dim + i reads in index i: a [rep, dim] pair. */
		p->dims[2 * i] = rep[i];
		p->str[2 * i] = 0;
		p->dims[2 * i + 1] = x->dims[i];
		p->str[2 * i + 1] = istr[i];
	}
	p->rank = 2 * r;
	sr_simplify(p);
	return set_out(s, s->out[0], x->dtype, r, d);
}

/* ------------------------------------------------------------------------ */
/* Concat, Split                                                             */
/* ------------------------------------------------------------------------ */

typedef struct cat_p {
	int64_t outer;   /* product of dims before axis */
	size_t inner;    /* bytes of one index along axis */
	size_t row;      /* bytes of one outer row of the concatenated tensor */
} cat_p;

typedef struct cat_job {
	hal_step *s;
	const cat_p *p;
	bool split;
} cat_job;

static void cat_rows(void *arg, int64_t o0, int64_t o1)
{
	const cat_job *j = arg;
	hal_step *s = j->s;
	const cat_p *p = j->p;
	int nparts = j->split ? s->n_out : s->n_in;
	for (int64_t o = o0; o < o1; o++) {
		size_t at = (size_t)o * p->row;
		for (int k = 0; k < nparts; k++) {
			hal_tensor *t = j->split ? s->out[k] : s->in[k];
			/* this part's bytes per outer row (outer > 0 here) */
			size_t b = (size_t)(hal_numel(t) / p->outer) * hal_dtype_size(t->dtype);
			if (!b)
				continue;
			if (j->split)
				memcpy((char *)t->data + (size_t)o * b,
				       (const char *)s->in[0]->data + at, b);
			else
				memcpy((char *)s->out[0]->data + at,
				       (const char *)t->data + (size_t)o * b, b);
			at += b;
		}
	}
}

static int cat_exec(hal_step *s)
{
	cat_p *p = s->params;
	if (p->outer == 0 || p->row == 0)
		return 0;
	cat_job j = { s, p, false };
	hal_parallel_for(s, p->outer, grain_for(p->row), cat_rows, &j);
	return 0;
}

static int split_exec(hal_step *s)
{
	cat_p *p = s->params;
	if (p->outer == 0 || p->row == 0)
		return 0;
	cat_job j = { s, p, true };
	hal_parallel_for(s, p->outer, grain_for(p->row), cat_rows, &j);
	return 0;
}

static int concat_infer(hal_step *s)
{
	const hal_tensor *x = s->in[0];
	if (s->n_in < 1 || !x)
		return hal_err(s, AIDOS_E_INVALID, "Concat needs inputs");
	size_t es;
	int rc = elsize(s, x, &es);
	if (rc)
		return rc;
	int64_t ax = hal_attr_int(s->node, "axis", 1);
	if (!hal_attr_has(s->node, "axis") && s->opset >= 4)
		return hal_err(s, AIDOS_E_INVALID, "Concat needs axis");
	int r = x->rank, a = hal_axis(ax, r);
	if (a < 0)
		return hal_err(s, AIDOS_E_INVALID, "axis %lld out of range for rank %d",
			       (long long)ax, r);
	int64_t d[HAL_MAX_RANK];
	memcpy(d, x->dims, sizeof d);
	d[a] = 0;
	dimbuf b1, b2;
	for (int k = 0; k < s->n_in; k++) {
		const hal_tensor *t = s->in[k];
		if (!t)
			return hal_err(s, AIDOS_E_INVALID, "input %d is missing", k);
		if (t->dtype != x->dtype)
			return hal_err(s, AIDOS_E_INVALID, "input %d is %s, input 0 is %s", k,
				       hal_dtype_name(t->dtype), hal_dtype_name(x->dtype));
		bool ok = t->rank == r;
		for (int i = 0; ok && i < r; i++)
			ok = i == a || t->dims[i] == x->dims[i];
		if (!ok)
			return hal_err(s, AIDOS_E_SHAPE, "input %d %s does not match input 0 %s on axis %d",
				       k, dims_str(&b1, t->rank, t->dims),
				       dims_str(&b2, r, x->dims), a);
		if (__builtin_add_overflow(d[a], t->dims[a], &d[a]))
			return hal_err(s, AIDOS_E_RANGE, "concatenated axis overflows");
	}
	rc = set_out(s, s->out[0], x->dtype, r, d);
	if (rc)
		return rc;
	cat_p *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	p->outer = 1;
	for (int i = 0; i < a; i++)
		p->outer *= d[i];
	p->inner = es;
	for (int i = a + 1; i < r; i++)
		p->inner *= (size_t)d[i];
	p->row = p->inner * (size_t)d[a];
	s->params = p;
	return 0;
}

static int split_infer(hal_step *s)
{
	const hal_tensor *x = s->in[0];
	size_t es;
	int rc = elsize(s, x, &es);
	if (rc)
		return rc;
	int64_t ax = hal_attr_int(s->node, "axis", 0);
	int r = x->rank, a = hal_axis(ax, r), n = s->n_out;
	if (a < 0)
		return hal_err(s, AIDOS_E_INVALID, "axis %lld out of range for rank %d",
			       (long long)ax, r);
	int64_t dim = x->dims[a];
	int64_t *sz = hal_step_alloc(s, (size_t)n * sizeof *sz);
	if (!sz)
		return AIDOS_E_NOMEM;
	int ns = -1;
	const hal_tensor *st = (s->opset >= 13 || s->opset == 1) ? in_given(s, 1) : NULL;
	if (st) {
		int64_t tmp[64];
		if (n > 64)
			return hal_err(s, AIDOS_E_UNSUPPORTED, "more than 64 outputs");
		ns = const_ints(s, st, "split", tmp, 64);
		if (ns < 0)
			return ns;
		memcpy(sz, tmp, (size_t)ns * sizeof *sz);
	} else if (hal_attr_has(s->node, "split")) {
		const int64_t *v;
		ns = hal_attr_ints(s->node, "split", &v);
		if (ns == n)
			memcpy(sz, v, (size_t)n * sizeof *sz);
	}
	if (ns >= 0) {
		if (ns != n)
			return hal_err(s, AIDOS_E_INVALID, "split has %d values for %d outputs", ns, n);
		int64_t sum = 0;
		for (int k = 0; k < n; k++) {
			if (sz[k] < 0)
				return hal_err(s, AIDOS_E_INVALID, "split[%d] is %lld", k,
					       (long long)sz[k]);
			sum += sz[k];
		}
		if (sum != dim)
			return hal_err(s, AIDOS_E_SHAPE, "split sums to %lld, axis %d has %lld",
				       (long long)sum, a, (long long)dim);
	} else if (s->opset >= 18 && hal_attr_has(s->node, "num_outputs")) {
		int64_t no = hal_attr_int(s->node, "num_outputs", 0);
		if (no != n || n <= 0)
			return hal_err(s, AIDOS_E_INVALID, "num_outputs %lld for %d outputs",
				       (long long)no, n);
		/* Spec: chunks of ceil(dim / n), the last one smaller. */
		int64_t c = (dim + n - 1) / n, left = dim;
		for (int k = 0; k < n; k++) {
			sz[k] = left < c ? left : c;
			left -= sz[k];
		}
	} else {
		if (n <= 0 || dim % n)
			return hal_err(s, AIDOS_E_SHAPE, "axis %d of size %lld does not split in %d",
				       a, (long long)dim, n);
		for (int k = 0; k < n; k++)
			sz[k] = dim / n;
	}
	int64_t d[HAL_MAX_RANK];
	memcpy(d, x->dims, sizeof d);
	for (int k = 0; k < n; k++) {
		if (!s->out[k])
			return hal_err(s, AIDOS_E_UNSUPPORTED, "output %d of Split is absent", k);
		d[a] = sz[k];
		if ((rc = set_out(s, s->out[k], x->dtype, r, d)))
			return rc;
	}
	cat_p *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	p->outer = 1;
	for (int i = 0; i < a; i++)
		p->outer *= x->dims[i];
	p->inner = es;
	for (int i = a + 1; i < r; i++)
		p->inner *= (size_t)x->dims[i];
	p->row = p->inner * (size_t)dim;
	s->params = p;
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Shape, Size, Constant, ConstantOfShape, Range                             */
/* ------------------------------------------------------------------------ */

typedef struct shape_p {
	int64_t start, n;
} shape_p;

static int shape_exec(hal_step *s)
{
	const shape_p *p = s->params;
	int64_t *o = s->out[0]->data;
	for (int64_t i = 0; i < p->n; i++)
		o[i] = s->in[0]->dims[p->start + i];
	return 0;
}

/* Shape's output is known whenever the input's shape is: produce it here so
 * the planner can fold everything downstream (Gather, Concat, Reshape...). */
static int shape_infer(hal_step *s)
{
	const hal_tensor *x = s->in[0];
	int64_t r = x->rank, st = 0, en = r;
	if (s->opset >= 15) {
		st = hal_attr_int(s->node, "start", 0);
		en = hal_attr_int(s->node, "end", r);
	}
	if (st < 0)
		st += r;
	if (en < 0)
		en += r;
	st = st < 0 ? 0 : st > r ? r : st;
	en = en < 0 ? 0 : en > r ? r : en;
	shape_p *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	p->start = st;
	p->n = en > st ? en - st : 0;
	s->params = p;
	int rc = set_out(s, s->out[0], HAL_DT_I64, 1, &p->n);
	if (rc)
		return rc;
	s->out[0]->data = hal_step_alloc(s, (size_t)(p->n ? p->n : 1) * sizeof(int64_t));
	if (!s->out[0]->data)
		return AIDOS_E_NOMEM;
	s->out[0]->is_const = 1;
	return shape_exec(s);
}

static int size_exec(hal_step *s)
{
	*(int64_t *)s->out[0]->data = hal_numel(s->in[0]);
	return 0;
}

static int size_infer(hal_step *s)
{
	int64_t none[1] = { 0 };
	int rc = set_out(s, s->out[0], HAL_DT_I64, 0, none);
	if (rc)
		return rc;
	s->out[0]->data = hal_step_alloc(s, sizeof(int64_t));
	if (!s->out[0]->data)
		return AIDOS_E_NOMEM;
	s->out[0]->is_const = 1;
	return size_exec(s);
}

typedef struct const_p {
	const void *src;  /* the value's bytes: the model's tensor or our copy */
	size_t n;
} const_p;

static int constant_exec(hal_step *s)
{
	const const_p *p = s->params;
	if (s->out[0]->data != p->src && p->n)
		memcpy(s->out[0]->data, p->src, p->n);
	return 0;
}

/* Constant's value is the attribute's tensor in the model; it is used in place
 * (never copied). Scalar/list forms are materialised once here. */
static int constant_infer(hal_step *s)
{
	const ir_node *nd = s->node;
	const ir_attr *at;
	const_p *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	s->params = p;
	hal_tensor *o = s->out[0];
	int64_t t0[1] = { 0 };
	int rc;
	if ((at = ir_node_attr(nd, "value")) && at->t) {
		const ir_tensor *t = at->t;
		if (!hal_dtype_size(t->dtype))
			return hal_err(s, AIDOS_E_UNSUPPORTED, "Constant of dtype %s",
				       hal_dtype_name(t->dtype));
		if ((rc = set_out(s, o, t->dtype, t->rank, t->dims)))
			return rc;
		p->n = hal_nbytes(o);
		if (t->nbytes < p->n || (p->n && !t->data))
			return hal_err(s, AIDOS_E_TRUNCATED, "Constant value has %zu bytes, needs %zu",
				       t->nbytes, p->n);
		p->src = t->data;
		if (!p->src) {  /* empty tensor: any valid pointer will do */
			p->src = hal_step_alloc(s, 1);
			if (!p->src)
				return AIDOS_E_NOMEM;
		}
	} else if ((at = ir_node_attr(nd, "value_float"))) {
		float *v = hal_step_alloc(s, sizeof *v);
		if (!v)
			return AIDOS_E_NOMEM;
		*v = at->f;
		p->src = v;
		p->n = sizeof *v;
		if ((rc = set_out(s, o, HAL_DT_F32, 0, t0)))
			return rc;
	} else if ((at = ir_node_attr(nd, "value_int"))) {
		int64_t *v = hal_step_alloc(s, sizeof *v);
		if (!v)
			return AIDOS_E_NOMEM;
		*v = at->i;
		p->src = v;
		p->n = sizeof *v;
		if ((rc = set_out(s, o, HAL_DT_I64, 0, t0)))
			return rc;
	} else if ((at = ir_node_attr(nd, "value_floats")) || (at = ir_node_attr(nd, "value_ints"))) {
		bool fl = at->type == IR_ATTR_FLOATS;
		int64_t n = at->n;
		size_t es = fl ? sizeof(float) : sizeof(int64_t);
		void *v = hal_step_alloc(s, (size_t)(n ? n : 1) * es);
		if (!v)
			return AIDOS_E_NOMEM;
		if (n)
			memcpy(v, fl ? (const void *)at->floats : (const void *)at->ints,
			       (size_t)n * es);
		p->src = v;
		p->n = (size_t)n * es;
		if ((rc = set_out(s, o, fl ? HAL_DT_F32 : HAL_DT_I64, 1, &n)))
			return rc;
	} else {
		return hal_err(s, AIDOS_E_UNSUPPORTED,
			       "Constant needs value, value_float(s) or value_int(s)");
	}
	o->data = (void *)p->src;  /* model-owned, read-only: never written */
	o->is_const = 1;
	return 0;
}

typedef struct cos_p {
	size_t es;
	unsigned char v[16];
} cos_p;

static int cos_exec(hal_step *s)
{
	const cos_p *p = s->params;
	fill_el(s->out[0]->data, p->v, hal_numel(s->out[0]), p->es);
	return 0;
}

static int cos_infer(hal_step *s)
{
	int64_t d[HAL_MAX_RANK];
	int n = const_ints(s, s->in[0], "shape", d, HAL_MAX_RANK);
	if (n < 0)
		return n;
	cos_p *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	s->params = p;
	int dt = HAL_DT_F32;
	p->es = 4;
	const ir_attr *at = ir_node_attr(s->node, "value");
	if (at && at->t) {
		const ir_tensor *t = at->t;
		int64_t ne = 1;
		for (int i = 0; i < t->rank; i++)
			ne *= t->dims[i];
		dt = t->dtype;
		p->es = hal_dtype_size(dt);
		if (ne != 1 || !p->es || p->es > sizeof p->v || t->nbytes < p->es || !t->data)
			return hal_err(s, AIDOS_E_INVALID, "value must be a one-element tensor");
		memcpy(p->v, t->data, p->es);
	}
	return set_out(s, s->out[0], dt, n, d);
}

typedef struct range_p {
	double start, delta;
	int64_t istart, idelta;
} range_p;

static int range_exec(hal_step *s)
{
	const range_p *p = s->params;
	hal_tensor *o = s->out[0];
	int64_t n = hal_numel(o);
	switch (o->dtype) {
	case HAL_DT_F32: {
		float *y = o->data, a = (float)p->start, dl = (float)p->delta;
		for (int64_t i = 0; i < n; i++)
			y[i] = a + (float)i * dl;
		break;
	}
	case HAL_DT_F64: {
		double *y = o->data;
		for (int64_t i = 0; i < n; i++)
			y[i] = p->start + (double)i * p->delta;
		break;
	}
	case HAL_DT_I16: {
		int16_t *y = o->data;
		for (int64_t i = 0; i < n; i++)
			y[i] = (int16_t)(uint64_t)((uint64_t)p->istart + (uint64_t)i * (uint64_t)p->idelta);
		break;
	}
	case HAL_DT_I32: {
		int32_t *y = o->data;
		for (int64_t i = 0; i < n; i++)
			y[i] = (int32_t)(uint64_t)((uint64_t)p->istart + (uint64_t)i * (uint64_t)p->idelta);
		break;
	}
	default: {
		int64_t *y = o->data;
		for (int64_t i = 0; i < n; i++)
			y[i] = (int64_t)((uint64_t)p->istart + (uint64_t)i * (uint64_t)p->idelta);
		break;
	}
	}
	return 0;
}

static int range_infer(hal_step *s)
{
	const char *nm[3] = { "start", "limit", "delta" };
	int dt = s->in[0]->dtype;
	for (int i = 0; i < 3; i++) {
		const hal_tensor *t = s->in[i];
		int rc = need_const(s, t, nm[i]);
		if (rc)
			return rc;
		if (t->dtype != dt || hal_numel(t) != 1)
			return hal_err(s, AIDOS_E_INVALID, "%s must be a scalar of the start's dtype",
				       nm[i]);
	}
	if (dt != HAL_DT_F32 && dt != HAL_DT_F64 && dt != HAL_DT_I16 && dt != HAL_DT_I32 &&
	    dt != HAL_DT_I64)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "Range of %s", hal_dtype_name(dt));
	range_p *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	s->params = p;
	int64_t n;
	if (is_float_dt(dt)) {
		double a = hal_get_f64(s->in[0], 0), l = hal_get_f64(s->in[1], 0),
		       dl = hal_get_f64(s->in[2], 0);
		if (dl == 0 || a != a || l != l || dl != dl)
			return hal_err(s, AIDOS_E_INVALID, "Range with delta %g from %g to %g", dl, a, l);
		/* ceil((limit - start) / delta), in the input's precision as ORT does */
		double c = dt == HAL_DT_F32 ? ceil((double)(((float)l - (float)a) / (float)dl))
					    : ceil((l - a) / dl);
		if (c > (double)(INT64_C(1) << 40))
			return hal_err(s, AIDOS_E_RANGE, "Range of %g elements", c);
		n = c > 0 ? (int64_t)c : 0;
		p->start = a;
		p->delta = dl;
	} else {
		int64_t a = hal_get_i64(s->in[0], 0), l = hal_get_i64(s->in[1], 0),
			dl = hal_get_i64(s->in[2], 0);
		if (dl == 0)
			return hal_err(s, AIDOS_E_INVALID, "Range with delta 0");
		/* Differences of two int64 may overflow; use the __int128-free form. */
		/* ceil((limit - start) / delta) in unsigned arithmetic: the
		 * difference of two int64 can exceed INT64_MAX. */
		uint64_t span = dl > 0 ? (uint64_t)l - (uint64_t)a : (uint64_t)a - (uint64_t)l;
		uint64_t step = dl > 0 ? (uint64_t)dl : (uint64_t)0 - (uint64_t)dl;
		uint64_t c = (dl > 0 ? l > a : a > l) ? (span - 1) / step + 1 : 0;
		if (c > (UINT64_C(1) << 40))
			return hal_err(s, AIDOS_E_RANGE, "Range of %llu elements",
				       (unsigned long long)c);
		n = (int64_t)c;
		p->istart = a;
		p->idelta = dl;
	}
	return set_out(s, s->out[0], dt, 1, &n);
}

/* ------------------------------------------------------------------------ */
/* Gather, GatherElements, GatherND                                          */
/* ------------------------------------------------------------------------ */

typedef struct gather_p {
	int64_t outer, axis_dim, nidx;
	size_t blk;       /* bytes of one slice after axis */
} gather_p;

typedef struct gather_job {
	const gather_p *p;
	const char *src;
	const void *idx;
	int is64;
	char *dst;
} gather_job;

static void gather_rows(void *arg, int64_t u0, int64_t u1)
{
	const gather_job *j = arg;
	const gather_p *p = j->p;
	for (int64_t u = u0; u < u1; u++) {
		int64_t o = u / p->nidx, k = idx_at(j->idx, j->is64, u % p->nidx);
		if (k < 0)
			k += p->axis_dim;
		memcpy(j->dst + (size_t)u * p->blk, j->src + (size_t)(o * p->axis_dim + k) * p->blk,
		       p->blk);
	}
}

static int check_index_dtype(hal_step *s, const hal_tensor *t)
{
	if (t->dtype != HAL_DT_I64 && t->dtype != HAL_DT_I32)
		return hal_err(s, AIDOS_E_INVALID, "indices must be int32 or int64, not %s",
			       hal_dtype_name(t->dtype));
	return 0;
}

/* Every index in [-dim, dim); reports the first one that is not. */
static int check_indices(hal_step *s, const hal_tensor *t, int64_t dim)
{
	int64_t n = hal_numel(t);
	int is64 = t->dtype == HAL_DT_I64;
	for (int64_t i = 0; i < n; i++) {
		int64_t k = idx_at(t->data, is64, i);
		if (k < -dim || k >= dim)
			return hal_err(s, AIDOS_E_RANGE, "index %lld (at %lld) out of range [-%lld, %lld)",
				       (long long)k, (long long)i, (long long)dim, (long long)dim);
	}
	return 0;
}

static int gather_exec(hal_step *s)
{
	const gather_p *p = s->params;
	int rc = check_indices(s, s->in[1], p->axis_dim);
	if (rc)
		return rc;
	if (p->outer * p->nidx == 0 || p->blk == 0)
		return 0;
	gather_job j = { p, s->in[0]->data, s->in[1]->data, s->in[1]->dtype == HAL_DT_I64,
			 s->out[0]->data };
	hal_parallel_for(s, p->outer * p->nidx, grain_for(p->blk), gather_rows, &j);
	return 0;
}

static int gather_infer(hal_step *s)
{
	const hal_tensor *x = s->in[0], *ix = s->in[1];
	size_t es;
	int rc = elsize(s, x, &es);
	if (!rc)
		rc = check_index_dtype(s, ix);
	if (rc)
		return rc;
	int64_t ax = hal_attr_int(s->node, "axis", 0);
	int r = x->rank, a = hal_axis(ax, r);
	if (a < 0)
		return hal_err(s, AIDOS_E_INVALID, "axis %lld out of range for rank %d",
			       (long long)ax, r);
	int orank = r - 1 + ix->rank;
	if (orank > HAL_MAX_RANK)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "output rank %d exceeds %d", orank,
			       HAL_MAX_RANK);
	int64_t d[HAL_MAX_RANK];
	int k = 0;
	for (int i = 0; i < a; i++)
		d[k++] = x->dims[i];
	for (int i = 0; i < ix->rank; i++)
		d[k++] = ix->dims[i];
	for (int i = a + 1; i < r; i++)
		d[k++] = x->dims[i];
	gather_p *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	s->params = p;
	p->outer = 1;
	for (int i = 0; i < a; i++)
		p->outer *= x->dims[i];
	p->axis_dim = x->dims[a];
	p->nidx = hal_numel(ix);
	p->blk = es;
	for (int i = a + 1; i < r; i++)
		p->blk *= (size_t)x->dims[i];
	if (ix->data && (rc = check_indices(s, ix, p->axis_dim)))
		return rc;
	return set_out(s, s->out[0], x->dtype, orank, d);
}

enum { RED_NONE = 0, RED_ADD = 1, RED_MUL = 2, RED_MAX = 3, RED_MIN = 4 };

#define RED_CASE(DT, T)                                                              \
	case DT: {                                                                   \
		T a, b;                                                              \
		memcpy(&a, d, sizeof a);                                             \
		memcpy(&b, sv, sizeof b);                                            \
		a = red == RED_ADD ? (T)(a + b) : red == RED_MUL ? (T)(a * b)        \
		  : red == RED_MAX ? (a > b ? a : b) : (a < b ? a : b);             \
		memcpy(d, &a, sizeof a);                                             \
		break;                                                               \
	}

/* d = d (op) s for one element; the dtype was checked by infer(). Signed
 * integers wrap like two's complement instead of overflowing. */
static void reduce_el(void *d, const void *sv, int dtype, int red)
{
	switch (dtype) {
	RED_CASE(HAL_DT_F32, float)
	RED_CASE(HAL_DT_F64, double)
	RED_CASE(HAL_DT_I8, int8_t)
	RED_CASE(HAL_DT_U8, uint8_t)
	RED_CASE(HAL_DT_I16, int16_t)
	RED_CASE(HAL_DT_U16, uint16_t)
	RED_CASE(HAL_DT_U32, uint32_t)
	RED_CASE(HAL_DT_U64, uint64_t)
	case HAL_DT_I32: {
		int32_t a, b;
		memcpy(&a, d, 4);
		memcpy(&b, sv, 4);
		a = red == RED_ADD ? (int32_t)((uint32_t)a + (uint32_t)b)
		  : red == RED_MUL ? (int32_t)((uint32_t)a * (uint32_t)b)
		  : red == RED_MAX ? (a > b ? a : b) : (a < b ? a : b);
		memcpy(d, &a, 4);
		break;
	}
	case HAL_DT_I64: {
		int64_t a, b;
		memcpy(&a, d, 8);
		memcpy(&b, sv, 8);
		a = red == RED_ADD ? (int64_t)((uint64_t)a + (uint64_t)b)
		  : red == RED_MUL ? (int64_t)((uint64_t)a * (uint64_t)b)
		  : red == RED_MAX ? (a > b ? a : b) : (a < b ? a : b);
		memcpy(d, &a, 8);
		break;
	}
	case HAL_DT_F16: {
		uint16_t a, b;
		memcpy(&a, d, 2);
		memcpy(&b, sv, 2);
		float x = f16_to_f32(a), y = f16_to_f32(b);
		x = red == RED_ADD ? x + y : red == RED_MUL ? x * y
		  : red == RED_MAX ? (x > y ? x : y) : (x < y ? x : y);
		a = f32_to_f16(x);
		memcpy(d, &a, 2);
		break;
	}
	default: break;
	}
}

typedef struct gel_p {
	int axis;
	size_t es;
} gel_p;

/* GatherElements and ScatterElements share the walk: for every element of
 * the indices tensor, the data element at the same coordinates except along
 * axis, where the index value is used. */
static int elements_walk(hal_step *s, const hal_tensor *data, const hal_tensor *ix, int axis,
			 char *dst, const char *src, int scatter, int red)
{
	int r = ix->rank;
	int64_t n = hal_numel(ix), dstr[HAL_MAX_RANK], idx[HAL_MAX_RANK] = { 0 };
	int is64 = ix->dtype == HAL_DT_I64;
	size_t es = hal_dtype_size(data->dtype);
	int64_t adim = data->dims[axis];
	row_strides(r, data->dims, dstr);
	int64_t base = 0;  /* data offset of idx with idx[axis] taken as 0 */
	for (int64_t i = 0; i < n; i++) {
		int64_t k = idx_at(ix->data, is64, i);
		if (k < -adim || k >= adim)
			return hal_err(s, AIDOS_E_RANGE, "index %lld (at %lld) out of range [-%lld, %lld)",
				       (long long)k, (long long)i, (long long)adim, (long long)adim);
		if (k < 0)
			k += adim;
		int64_t off = base + k * dstr[axis];
		if (!scatter) {
			copy_el(dst + (size_t)i * es, (const char *)data->data + (size_t)off * es, es);
		} else if (red == 0) {
			copy_el(dst + (size_t)off * es, src + (size_t)i * es, es);
		} else {
			reduce_el(dst + (size_t)off * es, src + (size_t)i * es, data->dtype, red);
		}
		for (int d = r - 1; d >= 0; d--) {
			if (d != axis)
				base += dstr[d];
			if (++idx[d] < ix->dims[d])
				break;
			if (d != axis)
				base -= idx[d] * dstr[d];
			idx[d] = 0;
		}
	}
	return 0;
}

static int gel_exec(hal_step *s)
{
	const gel_p *p = s->params;
	return elements_walk(s, s->in[0], s->in[1], p->axis, s->out[0]->data, NULL, 0, 0);
}

static int gel_infer(hal_step *s)
{
	const hal_tensor *x = s->in[0], *ix = s->in[1];
	size_t es;
	int rc = elsize(s, x, &es);
	if (!rc)
		rc = check_index_dtype(s, ix);
	if (rc)
		return rc;
	int64_t ax = hal_attr_int(s->node, "axis", 0);
	int a = hal_axis(ax, x->rank);
	if (a < 0)
		return hal_err(s, AIDOS_E_INVALID, "axis %lld out of range for rank %d",
			       (long long)ax, x->rank);
	dimbuf b1, b2;
	bool ok = ix->rank == x->rank;
	for (int i = 0; ok && i < x->rank; i++)
		ok = i == a || ix->dims[i] <= x->dims[i];
	if (!ok)
		return hal_err(s, AIDOS_E_SHAPE, "indices %s do not fit data %s",
			       dims_str(&b1, ix->rank, ix->dims), dims_str(&b2, x->rank, x->dims));
	gel_p *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	p->axis = a;
	p->es = es;
	s->params = p;
	return set_out(s, s->out[0], x->dtype, ix->rank, ix->dims);
}

typedef struct gnd_p {
	int64_t nbatch, ntup, k;
	int64_t bstride;             /* data elements per batch */
	int64_t dims[HAL_MAX_RANK];  /* data dims indexed by a tuple */
	int64_t str[HAL_MAX_RANK];   /* their strides in elements */
	int64_t slice;               /* elements copied per tuple */
} gnd_p;

/* Offset of index tuple t (of batch b) in elements, or -1 when out of range. */
static int64_t gnd_offset(const gnd_p *p, const void *ix, int is64, int64_t t, int64_t *bad)
{
	int64_t off = 0;
	for (int64_t i = 0; i < p->k; i++) {
		int64_t v = idx_at(ix, is64, t * p->k + i);
		if (v < -p->dims[i] || v >= p->dims[i]) {
			*bad = v;
			return -1;
		}
		off += (v < 0 ? v + p->dims[i] : v) * p->str[i];
	}
	return off;
}

static int gnd_setup(hal_step *s, const hal_tensor *x, const hal_tensor *ix, int b, gnd_p *p)
{
	int r = x->rank, q = ix->rank;
	dimbuf b1, b2;
	if (q < 1 || r < 1)
		return hal_err(s, AIDOS_E_INVALID, "data and indices need rank >= 1");
	if (b < 0 || b >= q || b >= r)
		return hal_err(s, AIDOS_E_INVALID, "batch_dims %d too large", b);
	int64_t k = ix->dims[q - 1];
	if (k < 1 || k > r - b)
		return hal_err(s, AIDOS_E_SHAPE, "index tuples of %lld for data %s and batch_dims %d",
			       (long long)k, dims_str(&b1, r, x->dims), b);
	for (int i = 0; i < b; i++)
		if (ix->dims[i] != x->dims[i])
			return hal_err(s, AIDOS_E_SHAPE, "batch dims of indices %s and data %s differ",
				       dims_str(&b1, q, ix->dims), dims_str(&b2, r, x->dims));
	int64_t str[HAL_MAX_RANK];
	row_strides(r, x->dims, str);
	p->k = k;
	p->nbatch = 1;
	for (int i = 0; i < b; i++)
		p->nbatch *= x->dims[i];
	p->ntup = 1;
	for (int i = b; i < q - 1; i++)
		p->ntup *= ix->dims[i];
	p->bstride = b < r ? str[b] * x->dims[b] : 1;
	for (int i = 0; i < k; i++) {
		p->dims[i] = x->dims[b + i];
		p->str[i] = str[b + i];
	}
	p->slice = b + k < r ? str[b + k] * x->dims[b + k] : 1;
	return 0;
}

static int gnd_exec(hal_step *s)
{
	const gnd_p *p = s->params;
	const hal_tensor *x = s->in[0], *ix = s->in[1];
	size_t es = hal_dtype_size(x->dtype), blk = (size_t)p->slice * es;
	int is64 = ix->dtype == HAL_DT_I64;
	char *dst = s->out[0]->data;
	for (int64_t bt = 0; bt < p->nbatch; bt++) {
		for (int64_t t = 0; t < p->ntup; t++) {
			int64_t bad = 0, off = gnd_offset(p, ix->data, is64, bt * p->ntup + t, &bad);
			if (off < 0)
				return hal_err(s, AIDOS_E_RANGE, "index %lld out of range",
					       (long long)bad);
			memcpy(dst, (const char *)x->data + (size_t)(bt * p->bstride + off) * es, blk);
			dst += blk;
		}
	}
	return 0;
}

static int gnd_infer(hal_step *s)
{
	const hal_tensor *x = s->in[0], *ix = s->in[1];
	size_t es;
	int rc = elsize(s, x, &es);
	if (!rc)
		rc = check_index_dtype(s, ix);
	if (rc)
		return rc;
	int b = (int)hal_attr_int(s->node, "batch_dims", 0);
	gnd_p *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	s->params = p;
	if ((rc = gnd_setup(s, x, ix, b, p)))
		return rc;
	int64_t d[2 * HAL_MAX_RANK];
	int n = 0;
	for (int i = 0; i < ix->rank - 1; i++)
		d[n++] = ix->dims[i];
	for (int i = b + (int)p->k; i < x->rank; i++)
		d[n++] = x->dims[i];
	return set_out(s, s->out[0], x->dtype, n, d);
}

/* ------------------------------------------------------------------------ */
/* ScatterND, ScatterElements (and the deprecated Scatter)                   */
/* ------------------------------------------------------------------------ */

static int parse_reduction(hal_step *s, const hal_tensor *x, int *red)
{
	const char *m = hal_attr_str(s->node, "reduction", "none");
	*red = !strcmp(m, "none") ? RED_NONE : !strcmp(m, "add") ? RED_ADD
	     : !strcmp(m, "mul") ? RED_MUL : !strcmp(m, "max") ? RED_MAX
	     : !strcmp(m, "min") ? RED_MIN : -1;
	if (*red < 0)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "reduction '%s'", m);
	if (*red != RED_NONE) {
		switch (x->dtype) {
		case HAL_DT_F32: case HAL_DT_F64: case HAL_DT_I8: case HAL_DT_U8:
		case HAL_DT_I16: case HAL_DT_U16: case HAL_DT_I32: case HAL_DT_U32:
		case HAL_DT_I64: case HAL_DT_U64: case HAL_DT_F16:
			break;
		default:
			return hal_err(s, AIDOS_E_UNSUPPORTED, "reduction '%s' on %s", m,
				       hal_dtype_name(x->dtype));
		}
	}
	return 0;
}

typedef struct snd_p {
	gnd_p g;
	int red;
} snd_p;

static int snd_exec(hal_step *s)
{
	const snd_p *p = s->params;
	const hal_tensor *x = s->in[0], *ix = s->in[1], *up = s->in[2];
	hal_tensor *o = s->out[0];
	size_t es = hal_dtype_size(x->dtype), blk = (size_t)p->g.slice * es;
	int is64 = ix->dtype == HAL_DT_I64;
	if (o->data != x->data && hal_nbytes(o))
		memcpy(o->data, x->data, hal_nbytes(o));
	const char *u = up->data;
	for (int64_t t = 0; t < p->g.ntup; t++, u += blk) {
		int64_t bad = 0, off = gnd_offset(&p->g, ix->data, is64, t, &bad);
		if (off < 0)
			return hal_err(s, AIDOS_E_RANGE, "index %lld out of range", (long long)bad);
		char *dst = (char *)o->data + (size_t)off * es;
		if (p->red == RED_NONE) {
			memcpy(dst, u, blk);
			continue;
		}
		for (int64_t i = 0; i < p->g.slice; i++)
			reduce_el(dst + (size_t)i * es, u + (size_t)i * es, x->dtype, p->red);
	}
	return 0;
}

static int snd_infer(hal_step *s)
{
	const hal_tensor *x = s->in[0], *ix = s->in[1], *up = s->in[2];
	size_t es;
	int rc = elsize(s, x, &es);
	if (!rc)
		rc = check_index_dtype(s, ix);
	if (rc)
		return rc;
	snd_p *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	s->params = p;
	if ((rc = parse_reduction(s, x, &p->red)) || (rc = gnd_setup(s, x, ix, 0, &p->g)))
		return rc;
	/* updates: indices.shape[:-1] + data.shape[k:] */
	int64_t d[2 * HAL_MAX_RANK];
	int n = 0;
	for (int i = 0; i < ix->rank - 1; i++)
		d[n++] = ix->dims[i];
	for (int i = (int)p->g.k; i < x->rank; i++)
		d[n++] = x->dims[i];
	bool ok = up->dtype == x->dtype && up->rank == n;
	for (int i = 0; ok && i < n; i++)
		ok = up->dims[i] == d[i];
	dimbuf b1, b2;
	if (!ok)
		return hal_err(s, AIDOS_E_SHAPE, "updates %s %s, expected %s %s",
			       hal_dtype_name(up->dtype), dims_str(&b1, up->rank, up->dims),
			       hal_dtype_name(x->dtype), dims_str(&b2, n, d));
	return set_out(s, s->out[0], x->dtype, x->rank, x->dims);
}

typedef struct sel_p {
	int axis, red;
} sel_p;

static int sel_exec(hal_step *s)
{
	const sel_p *p = s->params;
	const hal_tensor *x = s->in[0];
	hal_tensor *o = s->out[0];
	if (o->data != x->data && hal_nbytes(o))
		memcpy(o->data, x->data, hal_nbytes(o));
	hal_tensor view = *x;  /* indices walk the output */
	view.data = o->data;
	return elements_walk(s, &view, s->in[1], p->axis, o->data, s->in[2]->data, 1, p->red);
}

static int sel_infer(hal_step *s)
{
	const hal_tensor *x = s->in[0], *ix = s->in[1], *up = s->in[2];
	size_t es;
	int rc = elsize(s, x, &es);
	if (!rc)
		rc = check_index_dtype(s, ix);
	if (rc)
		return rc;
	sel_p *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	s->params = p;
	if ((rc = parse_reduction(s, x, &p->red)))
		return rc;
	int64_t ax = hal_attr_int(s->node, "axis", 0);
	p->axis = hal_axis(ax, x->rank);
	if (p->axis < 0)
		return hal_err(s, AIDOS_E_INVALID, "axis %lld out of range for rank %d",
			       (long long)ax, x->rank);
	dimbuf b1, b2, b3;
	bool ok = ix->rank == x->rank && up->rank == ix->rank && up->dtype == x->dtype;
	for (int i = 0; ok && i < x->rank; i++)
		ok = up->dims[i] == ix->dims[i] && (i == p->axis || ix->dims[i] <= x->dims[i]);
	if (!ok)
		return hal_err(s, AIDOS_E_SHAPE, "indices %s / updates %s do not fit data %s",
			       dims_str(&b1, ix->rank, ix->dims), dims_str(&b2, up->rank, up->dims),
			       dims_str(&b3, x->rank, x->dims));
	return set_out(s, s->out[0], x->dtype, x->rank, x->dims);
}

/* ------------------------------------------------------------------------ */
/* Pad                                                                       */
/* ------------------------------------------------------------------------ */

enum { PAD_CONSTANT = 0, PAD_REFLECT = 1, PAD_EDGE = 2, PAD_WRAP = 3 };

typedef struct pad_p {
	int rank;
	size_t es;
	int64_t istr[HAL_MAX_RANK];
	int64_t *map[HAL_MAX_RANK];  /* [out dim]: source index, -1 = constant */
	int64_t lo, hi;              /* last dim: out [lo, hi) copies a contiguous run */
	int value_input;             /* constant from in[2] at exec time */
	unsigned char value[16];
} pad_p;

typedef struct pad_job {
	const pad_p *p;
	const hal_tensor *x;
	hal_tensor *o;
	const void *value;
} pad_job;

static void pad_rows(void *arg, int64_t r0, int64_t r1)
{
	const pad_job *j = arg;
	const pad_p *p = j->p;
	int last = p->rank - 1;
	int64_t w = j->o->dims[last];
	size_t es = p->es;
	const char *src = j->x->data;
	for (int64_t r = r0; r < r1; r++) {
		char *dst = (char *)j->o->data + (size_t)(r * w) * es;
		int64_t off = 0, rr = r;
		bool fill = false;
		for (int d = last - 1; d >= 0; d--) {
			int64_t m = p->map[d][rr % j->o->dims[d]];
			rr /= j->o->dims[d];
			if (m < 0)
				fill = true;
			off += m * p->istr[d];
		}
		if (fill) {
			fill_el(dst, j->value, w, es);
			continue;
		}
		const int64_t *ml = p->map[last];
		for (int64_t c = 0; c < p->lo; c++) {
			if (ml[c] < 0)
				copy_el(dst + c * (int64_t)es, j->value, es);
			else
				copy_el(dst + c * (int64_t)es, src + (off + ml[c]) * (int64_t)es, es);
		}
		if (p->hi > p->lo)
			memcpy(dst + p->lo * (int64_t)es, src + (off + ml[p->lo]) * (int64_t)es,
			       (size_t)(p->hi - p->lo) * es);
		for (int64_t c = p->hi > p->lo ? p->hi : p->lo; c < w; c++) {
			if (ml[c] < 0)
				copy_el(dst + c * (int64_t)es, j->value, es);
			else
				copy_el(dst + c * (int64_t)es, src + (off + ml[c]) * (int64_t)es, es);
		}
	}
}

static int pad_exec(hal_step *s)
{
	const pad_p *p = s->params;
	hal_tensor *o = s->out[0];
	if (hal_numel(o) == 0)
		return 0;
	pad_job j = { p, s->in[0], o, p->value };
	if (p->value_input)
		j.value = s->in[2]->data;
	int64_t w = o->dims[p->rank - 1];
	hal_parallel_for(s, hal_numel(o) / w, grain_for((size_t)w * p->es), pad_rows, &j);
	return 0;
}

static int pad_infer(hal_step *s)
{
	const hal_tensor *x = s->in[0];
	size_t es;
	int rc = elsize(s, x, &es);
	if (rc)
		return rc;
	int r = x->rank;
	int64_t pads[2 * HAL_MAX_RANK], axes[HAL_MAX_RANK];
	int np, na = -1;
	pad_p *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	s->params = p;
	p->es = es;
	if (s->opset >= 11) {
		if (!in_opt(s, 1))
			return hal_err(s, AIDOS_E_INVALID, "Pad needs pads");
		if ((np = const_ints(s, s->in[1], "pads", pads, 2 * HAL_MAX_RANK)) < 0)
			return np;
		if (s->opset >= 18 && in_opt(s, 3) &&
		    (na = const_ints(s, s->in[3], "axes", axes, HAL_MAX_RANK)) < 0)
			return na;
		const hal_tensor *cv = in_given(s, 2);
		if (cv) {
			if (cv->dtype != x->dtype || hal_numel(cv) != 1)
				return hal_err(s, AIDOS_E_INVALID,
					       "constant_value must be one %s", hal_dtype_name(x->dtype));
			p->value_input = 1;
		}
	} else {
		const int64_t *v;
		const char *nm = hal_attr_has(s->node, "pads") ? "pads" : "paddings";
		np = hal_attr_ints(s->node, nm, &v);
		if (!np)
			return hal_err(s, AIDOS_E_INVALID, "pads is required");
		if (np > 2 * HAL_MAX_RANK)
			return hal_err(s, AIDOS_E_INVALID, "pads has %d values", np);
		memcpy(pads, v, (size_t)np * sizeof *v);
		put_f64(p->value, x->dtype, hal_attr_float(s->node, "value", 0.0f), false);
	}
	const char *mode = hal_attr_str(s->node, "mode", "constant");
	int m = !strcmp(mode, "constant") ? PAD_CONSTANT : !strcmp(mode, "reflect") ? PAD_REFLECT
	      : !strcmp(mode, "edge") ? PAD_EDGE : !strcmp(mode, "wrap") ? PAD_WRAP : -1;
	if (m < 0)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "Pad mode '%s'", mode);
	/* begin[i], end[i] per dim of x */
	int64_t beg[HAL_MAX_RANK] = { 0 }, end[HAL_MAX_RANK] = { 0 };
	int n = na >= 0 ? na : r;
	if (np != 2 * n)
		return hal_err(s, AIDOS_E_INVALID, "pads has %d values for %d axes", np, n);
	for (int i = 0; i < n; i++) {
		int a = na >= 0 ? hal_axis(axes[i], r) : i;
		if (a < 0)
			return hal_err(s, AIDOS_E_INVALID, "axis %lld out of range for rank %d",
				       (long long)axes[i], r);
		beg[a] = pads[i];
		end[a] = pads[n + i];
	}
	int64_t d[HAL_MAX_RANK];
	for (int i = 0; i < r; i++) {
		if (__builtin_add_overflow(x->dims[i], beg[i], &d[i]) ||
		    __builtin_add_overflow(d[i], end[i], &d[i]) || d[i] < 0)
			return hal_err(s, AIDOS_E_SHAPE, "pads %lld, %lld on axis %d of size %lld",
				       (long long)beg[i], (long long)end[i], i, (long long)x->dims[i]);
		if (m != PAD_CONSTANT && x->dims[i] == 0 && d[i] > 0)
			return hal_err(s, AIDOS_E_SHAPE, "cannot %s-pad empty axis %d", mode, i);
	}
	if ((rc = set_out(s, s->out[0], x->dtype, r, d)))
		return rc;
	/* A scalar pads nothing: treat it as [1]. */
	int64_t xd[HAL_MAX_RANK] = { 0 }, od[HAL_MAX_RANK] = { 0 };
	int pr = r ? r : 1;
	for (int i = 0; i < pr; i++) {
		xd[i] = r ? x->dims[i] : 1;
		od[i] = r ? d[i] : 1;
	}
	p->rank = pr;
	row_strides(pr, xd, p->istr);
	for (int i = 0; i < pr; i++) {
		int64_t nin = xd[i], b = r ? beg[i] : 0;
		p->map[i] = hal_step_alloc(s, (size_t)(od[i] ? od[i] : 1) * sizeof(int64_t));
		if (!p->map[i])
			return AIDOS_E_NOMEM;
		for (int64_t c = 0; c < od[i]; c++) {
			int64_t k = c - b;
			if (k < 0 || k >= nin) {
				if (m == PAD_CONSTANT) {
					k = -1;
				} else if (m == PAD_EDGE) {
					k = k < 0 ? 0 : nin - 1;
				} else if (m == PAD_WRAP) {
					k = ((k % nin) + nin) % nin;
				} else if (nin == 1) {
					k = 0;
				} else {  /* reflect, repeatedly if the pad exceeds the axis */
					int64_t per = 2 * (nin - 1);
					k = ((k % per) + per) % per;
					if (k >= nin)
						k = per - k;
				}
			}
			p->map[i][c] = k;
		}
	}
	/* the run of the last dim that maps 1:1 onto the source */
	int64_t b = r ? beg[pr - 1] : 0, w = od[pr - 1];
	p->lo = b < 0 ? 0 : b > w ? w : b;
	p->hi = b + xd[pr - 1] < w ? b + xd[pr - 1] : w;
	if (p->hi < p->lo)
		p->hi = p->lo;
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Trilu, CumSum, TopK                                                       */
/* ------------------------------------------------------------------------ */

static int trilu_exec(hal_step *s)
{
	const hal_tensor *x = s->in[0];
	hal_tensor *o = s->out[0];
	int r = x->rank;
	int64_t k = 0, N = x->dims[r - 2], M = x->dims[r - 1];
	const hal_tensor *kt = in_given(s, 1);
	if (kt)
		k = hal_get_i64(kt, 0);
	/* beyond +-(N + M) every k means the same; clamp so i + k cannot overflow */
	k = k < -(N + M) ? -(N + M) : k > N + M ? N + M : k;
	int upper = hal_attr_int(s->node, "upper", 1) != 0;
	size_t es = hal_dtype_size(x->dtype);
	int64_t nmat = N > 0 && M > 0 ? hal_numel(x) / (N * M) : 0;
	for (int64_t b = 0; b < nmat; b++) {
		for (int64_t i = 0; i < N; i++) {
			size_t row = (size_t)((b * N + i) * M) * es;
			const char *src = (const char *)x->data + row;
			char *dst = (char *)o->data + row;
			/* keep j >= i + k (upper) or j <= i + k (lower); k may be huge */
			int64_t c = i + k;
			if (upper) {
				int64_t z = c < 0 ? 0 : c > M ? M : c;
				memset(dst, 0, (size_t)z * es);
				memcpy(dst + (size_t)z * es, src + (size_t)z * es, (size_t)(M - z) * es);
			} else {
				int64_t keep = c < 0 ? 0 : c >= M ? M : c + 1;
				memcpy(dst, src, (size_t)keep * es);
				memset(dst + (size_t)keep * es, 0, (size_t)(M - keep) * es);
			}
		}
	}
	return 0;
}

static int trilu_infer(hal_step *s)
{
	const hal_tensor *x = s->in[0];
	size_t es;
	int rc = elsize(s, x, &es);
	if (rc)
		return rc;
	if (x->rank < 2)
		return hal_err(s, AIDOS_E_INVALID, "Trilu needs rank >= 2, not %d", x->rank);
	const hal_tensor *kt = in_given(s, 1);
	if (kt && (kt->dtype != HAL_DT_I64 || hal_numel(kt) != 1))
		return hal_err(s, AIDOS_E_INVALID, "k must be one int64");
	return set_out(s, s->out[0], x->dtype, x->rank, x->dims);
}

typedef struct cum_p {
	int64_t outer, n, inner;
	int excl, rev;
} cum_p;

#define CUMSUM_FN(T, U)                                                              \
	static void cumsum_##T(const void *xv, void *yv, const cum_p *p)             \
	{                                                                            \
		const T *x = xv;                                                     \
		T *y = yv;                                                           \
		int64_t n = p->n, in = p->inner;                                     \
		for (int64_t o = 0; o < p->outer; o++) {                             \
			const T *xs = x + o * n * in;                                \
			T *ys = y + o * n * in;                                      \
			for (int64_t kk = 0; kk < n; kk++) {                         \
				int64_t k = p->rev ? n - 1 - kk : kk;                \
				int64_t pk = p->rev ? k + 1 : k - 1; /* previous */  \
				for (int64_t i = 0; i < in; i++) {                   \
					U acc = 0;                                   \
					if (kk > 0)                                  \
						acc = (U)ys[pk * in + i] +           \
						      (U)(p->excl ? xs[pk * in + i] : 0); \
					if (!p->excl)                                \
						acc += (U)xs[k * in + i];            \
					ys[k * in + i] = (T)acc;                     \
				}                                                    \
			}                                                            \
		}                                                                    \
	}

CUMSUM_FN(float, float)
CUMSUM_FN(double, double)
CUMSUM_FN(int32_t, uint32_t)
CUMSUM_FN(int64_t, uint64_t)
CUMSUM_FN(uint32_t, uint32_t)
CUMSUM_FN(uint64_t, uint64_t)

static int cumsum_axis(hal_step *s, const hal_tensor *x, const hal_tensor *at, int *a)
{
	if ((at->dtype != HAL_DT_I64 && at->dtype != HAL_DT_I32) || hal_numel(at) != 1)
		return hal_err(s, AIDOS_E_INVALID, "axis must be one int32/int64");
	int64_t v = hal_get_i64(at, 0);
	*a = hal_axis(v, x->rank);
	if (*a < 0)
		return hal_err(s, AIDOS_E_INVALID, "axis %lld out of range for rank %d",
			       (long long)v, x->rank);
	return 0;
}

static int cumsum_exec(hal_step *s)
{
	const hal_tensor *x = s->in[0];
	int a;
	int rc = cumsum_axis(s, x, s->in[1], &a);
	if (rc)
		return rc;
	cum_p p = { 1, x->rank ? x->dims[a] : 1, 1, 0, 0 };
	p.excl = hal_attr_int(s->node, "exclusive", 0) != 0;
	p.rev = hal_attr_int(s->node, "reverse", 0) != 0;
	for (int i = 0; i < a; i++)
		p.outer *= x->dims[i];
	for (int i = a + 1; i < x->rank; i++)
		p.inner *= x->dims[i];
	if (hal_numel(x) == 0)
		return 0;
	switch (x->dtype) {
	case HAL_DT_F32: cumsum_float(x->data, s->out[0]->data, &p); break;
	case HAL_DT_F64: cumsum_double(x->data, s->out[0]->data, &p); break;
	case HAL_DT_I32: cumsum_int32_t(x->data, s->out[0]->data, &p); break;
	case HAL_DT_I64: cumsum_int64_t(x->data, s->out[0]->data, &p); break;
	case HAL_DT_U32: cumsum_uint32_t(x->data, s->out[0]->data, &p); break;
	case HAL_DT_U64: cumsum_uint64_t(x->data, s->out[0]->data, &p); break;
	default: return hal_err(s, AIDOS_E_UNSUPPORTED, "CumSum of %s", hal_dtype_name(x->dtype));
	}
	return 0;
}

static int cumsum_infer(hal_step *s)
{
	const hal_tensor *x = s->in[0];
	switch (x->dtype) {
	case HAL_DT_F32: case HAL_DT_F64: case HAL_DT_I32: case HAL_DT_I64:
	case HAL_DT_U32: case HAL_DT_U64:
		break;
	default:
		return hal_err(s, AIDOS_E_UNSUPPORTED, "CumSum of %s", hal_dtype_name(x->dtype));
	}
	if (x->rank < 1)
		return hal_err(s, AIDOS_E_INVALID, "CumSum needs rank >= 1");
	int a, rc;
	if (s->in[1]->data && (rc = cumsum_axis(s, x, s->in[1], &a)))
		return rc;
	return set_out(s, s->out[0], x->dtype, x->rank, x->dims);
}

typedef struct topk_p {
	int64_t outer, n, inner, k;
	int largest;
} topk_p;

/* Stable bottom-up merge sort of indices ix[0..n) by key, descending when
 * largest (ties keep the lower index first, as the spec requires). tmp holds
 * n more indices. No allocation: the buffers are the step's scratch. */
#define TOPK_FN(T)                                                                   \
	static void topk_##T(const hal_step *s, const topk_p *p, int64_t *ix, int64_t *tmp, T *key) \
	{                                                                            \
		const T *x = s->in[0]->data;                                         \
		T *vo = s->out[0]->data;                                             \
		int64_t *io = s->out[1]->data;                                       \
		int64_t n = p->n, in = p->inner, k = p->k;                           \
		for (int64_t o = 0; o < p->outer; o++)                               \
			for (int64_t i = 0; i < in; i++) {                           \
				for (int64_t j = 0; j < n; j++) {                    \
					ix[j] = j;                                   \
					key[j] = x[(o * n + j) * in + i];            \
				}                                                    \
				int64_t *a = ix, *b = tmp;                           \
				for (int64_t w = 1; w < n; w *= 2) {                 \
					for (int64_t lo = 0; lo < n; lo += 2 * w) {  \
						int64_t mid = lo + w < n ? lo + w : n;   \
						int64_t hi = lo + 2 * w < n ? lo + 2 * w : n; \
						int64_t l = lo, r = mid, t = lo;         \
						while (l < mid && r < hi) {              \
							bool right = p->largest ? key[a[r]] > key[a[l]] \
									      : key[a[r]] < key[a[l]]; \
							b[t++] = right ? a[r++] : a[l++]; \
						}                                        \
						while (l < mid)                          \
							b[t++] = a[l++];                 \
						while (r < hi)                           \
							b[t++] = a[r++];                 \
					}                                            \
					int64_t *sw = a;                             \
					a = b;                                       \
					b = sw;                                      \
				}                                                    \
				for (int64_t j = 0; j < k; j++) {                    \
					vo[(o * k + j) * in + i] = key[a[j]];        \
					io[(o * k + j) * in + i] = a[j];             \
				}                                                    \
			}                                                            \
	}

TOPK_FN(float)
TOPK_FN(double)
TOPK_FN(int8_t)
TOPK_FN(uint8_t)
TOPK_FN(int16_t)
TOPK_FN(uint16_t)
TOPK_FN(int32_t)
TOPK_FN(uint32_t)
TOPK_FN(int64_t)
TOPK_FN(uint64_t)

static int topk_exec(hal_step *s)
{
	const topk_p *p = s->params;
	int64_t *ix = s->scratch, *tmp = ix + p->n;
	void *key = tmp + p->n;
	if (hal_numel(s->out[0]) == 0)
		return 0;
	switch (s->in[0]->dtype) {
	case HAL_DT_F32: topk_float(s, p, ix, tmp, key); break;
	case HAL_DT_F64: topk_double(s, p, ix, tmp, key); break;
	case HAL_DT_I8: topk_int8_t(s, p, ix, tmp, key); break;
	case HAL_DT_U8: topk_uint8_t(s, p, ix, tmp, key); break;
	case HAL_DT_I16: topk_int16_t(s, p, ix, tmp, key); break;
	case HAL_DT_U16: topk_uint16_t(s, p, ix, tmp, key); break;
	case HAL_DT_I32: topk_int32_t(s, p, ix, tmp, key); break;
	case HAL_DT_U32: topk_uint32_t(s, p, ix, tmp, key); break;
	case HAL_DT_I64: topk_int64_t(s, p, ix, tmp, key); break;
	case HAL_DT_U64: topk_uint64_t(s, p, ix, tmp, key); break;
	default: return hal_err(s, AIDOS_E_UNSUPPORTED, "TopK of %s", hal_dtype_name(s->in[0]->dtype));
	}
	return 0;
}

static int topk_infer(hal_step *s)
{
	const hal_tensor *x = s->in[0];
	switch (x->dtype) {
	case HAL_DT_F32: case HAL_DT_F64: case HAL_DT_I8: case HAL_DT_U8: case HAL_DT_I16:
	case HAL_DT_U16: case HAL_DT_I32: case HAL_DT_U32: case HAL_DT_I64: case HAL_DT_U64:
		break;
	default:
		return hal_err(s, AIDOS_E_UNSUPPORTED, "TopK of %s", hal_dtype_name(x->dtype));
	}
	if (s->n_out < 2 || !s->out[0] || !s->out[1])
		return hal_err(s, AIDOS_E_UNSUPPORTED, "TopK needs both outputs");
	int64_t ax = hal_attr_int(s->node, "axis", -1), k;
	int a = hal_axis(ax, x->rank);
	if (a < 0)
		return hal_err(s, AIDOS_E_INVALID, "axis %lld out of range for rank %d",
			       (long long)ax, x->rank);
	if (s->opset >= 10) {
		int64_t kv[1];
		int n = const_ints(s, s->in[1], "K", kv, 1);
		if (n < 0)
			return n;
		if (n != 1)
			return hal_err(s, AIDOS_E_INVALID, "K must have one value");
		k = kv[0];
	} else {
		k = hal_attr_int(s->node, "k", -1);
	}
	if (k < 0 || k > x->dims[a])
		return hal_err(s, AIDOS_E_INVALID, "k %lld out of range for axis of %lld",
			       (long long)k, (long long)x->dims[a]);
	topk_p *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	s->params = p;
	p->outer = 1;
	p->inner = 1;
	for (int i = 0; i < a; i++)
		p->outer *= x->dims[i];
	for (int i = a + 1; i < x->rank; i++)
		p->inner *= x->dims[i];
	p->n = x->dims[a];
	p->k = k;
	p->largest = hal_attr_int(s->node, "largest", 1) != 0;
	s->scratch_bytes = (size_t)p->n * (2 * sizeof(int64_t) + 8) + 64;
	int64_t d[HAL_MAX_RANK];
	memcpy(d, x->dims, sizeof d);
	d[a] = k;
	int rc = set_out(s, s->out[0], x->dtype, x->rank, d);
	return rc ? rc : set_out(s, s->out[1], HAL_DT_I64, x->rank, d);
}

/* ------------------------------------------------------------------------ */
/* Resize, Upsample                                                          */
/* ------------------------------------------------------------------------ */

enum { RZ_NEAREST = 0, RZ_LINEAR = 1, RZ_CUBIC = 2 };
enum {
	CT_HALF_PIXEL, CT_ASYMMETRIC, CT_PYTORCH_HALF_PIXEL, CT_TF_HALF_PIXEL_FOR_NN,
	CT_ALIGN_CORNERS, CT_TF_CROP_AND_RESIZE, CT_HALF_PIXEL_SYMMETRIC,
};
enum { NM_ROUND_PREFER_FLOOR, NM_ROUND_PREFER_CEIL, NM_FLOOR, NM_CEIL, NM_SIMPLE };

#define RZ_MAX_COMBOS 256   /* outer tap combinations per output row */

typedef struct rz_p {
	int rank, mode, dtype;
	size_t es;
	int64_t istr[HAL_MAX_RANK];
	int taps[HAL_MAX_RANK];
	int64_t *idx[HAL_MAX_RANK];     /* [out dim * taps] source index, clamped */
	float *w[HAL_MAX_RANK];         /* [out dim * taps] weights (NULL for 1 tap) */
	uint8_t *outside[HAL_MAX_RANK]; /* [out dim] tf_crop_and_resize: extrapolate */
	bool identity_last;             /* last dim copied as is */
	double extrap;
	unsigned char extrap_el[16];
} rz_p;

/* Source coordinate of output index x along one dim (ONNX Resize spec,
 * "coordinate_transformation_mode"). scale is output/input; out_f is the
 * output length before flooring (in * scale), which the ONNX reference
 * implementation (and so the conformance data) uses where the spec text says
 * length_resized: align_corners, tf_crop_and_resize and pytorch_half_pixel
 * differ from ONNX Runtime when scales give a fractional length. */
static double rz_coord(int ct, double x, double scale, int64_t in, int64_t out,
		       double out_f, double r0, double r1)
{
	switch (ct) {
	case CT_ASYMMETRIC:
		return x / scale;
	case CT_PYTORCH_HALF_PIXEL:
		return out_f != 1 ? (x + 0.5) / scale - 0.5 : -0.5;
	case CT_TF_HALF_PIXEL_FOR_NN:
		return (x + 0.5) / scale;
	case CT_ALIGN_CORNERS:
		return out_f == 1 ? 0.0 : x * (double)(in - 1) / (out_f - 1);
	case CT_TF_CROP_AND_RESIZE: {
		double v = out_f == 1 ? (r1 - r0) * (double)(in - 1) / 2
				      : x * (r1 - r0) * (double)(in - 1) / (out_f - 1);
		return v + r0 * (double)(in - 1);
	}
	case CT_HALF_PIXEL_SYMMETRIC: {
		double adj = (double)out / out_f, c = (double)in / 2;
		return c * (1 - adj) + (x + 0.5) / scale - 0.5;
	}
	default:
		return (x + 0.5) / scale - 0.5;
	}
}

static int64_t clamp_i(int64_t v, int64_t hi)
{
	return v < 0 ? 0 : v > hi ? hi : v;
}

/* Builds the taps of one dim. */
static int rz_dim(hal_step *s, rz_p *p, int d, int64_t in, int64_t out, double scale,
		  double out_f, int ct, int nm, double A, bool excl, double r0, double r1)
{
	int T = p->mode == RZ_NEAREST ? 1 : p->mode == RZ_LINEAR ? 2 : 4;
	size_t no = (size_t)(out ? out : 1);
	int64_t *ix = hal_step_alloc(s, no * (size_t)T * sizeof *ix);
	float *w = T > 1 ? hal_step_alloc(s, no * (size_t)T * sizeof *w) : NULL;
	if (!ix || (T > 1 && !w))
		return AIDOS_E_NOMEM;
	if (ct == CT_TF_CROP_AND_RESIZE) {
		p->outside[d] = hal_step_alloc(s, no);
		if (!p->outside[d])
			return AIDOS_E_NOMEM;
	}
	bool one_tap = true;  /* every output reads exactly one source with weight 1 */
	for (int64_t o = 0; o < out; o++) {
		double xo = rz_coord(ct, (double)o, scale, in, out, out_f, r0, r1);
		if (p->outside[d])
			p->outside[d][o] = xo < 0 || xo > (double)(in - 1);
		if (T == 1) {
			double fl = floor(xo), fr = xo - fl;
			int64_t v;
			switch (nm) {
			case NM_ROUND_PREFER_CEIL: v = (int64_t)(fr >= 0.5 ? fl + 1 : fl); break;
			case NM_FLOOR: v = (int64_t)fl; break;
			case NM_CEIL: v = (int64_t)ceil(xo); break;
			case NM_SIMPLE: v = (int64_t)(scale < 1 ? ceil(xo) : fl); break;
			default: v = (int64_t)(fr > 0.5 ? fl + 1 : fl); break;
			}
			ix[o] = clamp_i(v, in - 1);
			continue;
		}
		/* ratio in (0, 1]: an integer coordinate takes the left neighbour
		 * with ratio 1, exactly as the ONNX reference does. */
		double base = floor(xo), ratio = xo - base;
		if (ratio == 0) {
			base -= 1;
			ratio = 1;
		}
		double c[4];
		int64_t first;
		if (T == 2) {
			c[0] = 1 - ratio;
			c[1] = ratio;
			first = (int64_t)base;
		} else {
			double t = ratio + 1, u = 1 - ratio, v = 2 - ratio;
			c[0] = ((A * t - 5 * A) * t + 8 * A) * t - 4 * A;
			c[1] = ((A + 2) * ratio - (A + 3)) * ratio * ratio + 1;
			c[2] = ((A + 2) * u - (A + 3)) * u * u + 1;
			c[3] = ((A * v - 5 * A) * v + 8 * A) * v - 4 * A;
			first = (int64_t)base - 1;
		}
		if (excl) {
			double sum = 0;
			for (int t = 0; t < T; t++) {
				if (first + t < 0 || first + t >= in)
					c[t] = 0;
				sum += c[t];
			}
			for (int t = 0; t < T && sum != 0; t++)
				c[t] /= sum;
		}
		int nz = 0;
		for (int t = 0; t < T; t++) {
			ix[o * T + t] = clamp_i(first + t, in - 1);
			w[o * T + t] = (float)c[t];
			nz += c[t] != 0;
			if (c[t] != 0 && c[t] != 1)
				one_tap = false;
		}
		if (nz != 1)
			one_tap = false;
	}
	if (T > 1 && one_tap) {  /* e.g. an unscaled axis: a plain gather */
		for (int64_t o = 0; o < out; o++) {
			int t = 0;
			while (t < T - 1 && w[o * T + t] == 0)
				t++;
			ix[o] = ix[o * T + t];
		}
		T = 1;
		w = NULL;
	}
	p->taps[d] = T;
	p->idx[d] = ix;
	p->w[d] = w;
	return 0;
}

typedef struct rz_job {
	const rz_p *p;
	const hal_tensor *x;
	hal_tensor *o;
} rz_job;

static void rz_rows(void *arg, int64_t r0, int64_t r1)
{
	const rz_job *j = arg;
	const rz_p *p = j->p;
	int last = p->rank - 1;
	const int64_t *od = j->o->dims;
	int64_t W = od[last];
	size_t es = p->es;
	const char *src = j->x->data;
	int64_t coff[RZ_MAX_COMBOS];
	double cw[RZ_MAX_COMBOS];
	int64_t prev_src = -1;
	for (int64_t r = r0; r < r1; r++) {
		char *dst = (char *)j->o->data + (size_t)(r * W) * es;
		/* the outer dims' tap combinations for this row */
		int nc = 1;
		bool outside = false;
		coff[0] = 0;
		cw[0] = 1;
		int64_t rr = r;
		for (int d = last - 1; d >= 0; d--) {
			int64_t o = rr % od[d];
			rr /= od[d];
			if (p->outside[d] && p->outside[d][o])
				outside = true;
			int T = p->taps[d];
			if (T == 1) {
				for (int c = 0; c < nc; c++)
					coff[c] += p->idx[d][o] * p->istr[d];
				continue;
			}
			for (int t = T - 1; t >= 0; t--)
				for (int c = 0; c < nc; c++) {
					coff[t * nc + c] = coff[c] + p->idx[d][o * T + t] * p->istr[d];
					cw[t * nc + c] = cw[c] * p->w[d][o * T + t];
				}
			nc *= T;
		}
		if (outside) {
			fill_el(dst, p->extrap_el, W, es);
			prev_src = -1;
			continue;
		}
		if (p->mode == RZ_NEAREST || nc == 1) {
			if (p->taps[last] == 1 && (p->mode == RZ_NEAREST || cw[0] == 1)) {
				/* upsampling repeats source rows: copy the row just made */
				if (coff[0] == prev_src && r > r0) {
					memcpy(dst, dst - (size_t)W * es, (size_t)W * es);
					continue;
				}
				prev_src = coff[0];
				const char *sr = src + coff[0] * (int64_t)es;
				const uint8_t *ol = p->outside[last];
				if (p->identity_last && !ol) {
					memcpy(dst, sr, (size_t)W * es);
					continue;
				}
				for (int64_t c = 0; c < W; c++) {
					if (ol && ol[c])
						copy_el(dst + c * (int64_t)es, (const char *)p->extrap_el, es);
					else
						copy_el(dst + c * (int64_t)es,
							sr + p->idx[last][c] * (int64_t)es, es);
				}
				continue;
			}
		}
		prev_src = -1;
		int T = p->taps[last];
		for (int64_t c = 0; c < W; c++) {
			if (p->outside[last] && p->outside[last][c]) {
				copy_el(dst + c * (int64_t)es, (const char *)p->extrap_el, es);
				continue;
			}
			double acc = 0;
			for (int t = 0; t < T; t++) {
				int64_t si = p->idx[last][c * T + t];
				double wt = T > 1 ? p->w[last][c * T + t] : 1.0;
				if (wt == 0)
					continue;
				for (int k = 0; k < nc; k++) {
					int64_t at = coff[k] + si;
					double v;
					if (p->dtype == HAL_DT_F32)
						v = ((const float *)(const void *)src)[at];
					else
						v = hal_get_f64(j->x, at);
					acc += cw[k] * wt * v;
				}
			}
			if (p->dtype == HAL_DT_F32)
				((float *)(void *)dst)[c] = (float)acc;
			else
				put_f64(dst + c * (int64_t)es, p->dtype, acc, true);
		}
	}
}

static int rz_exec(hal_step *s)
{
	const rz_p *p = s->params;
	hal_tensor *o = s->out[0];
	if (hal_numel(o) == 0)
		return 0;
	rz_job j = { p, s->in[0], o };
	int64_t W = o->dims[p->rank - 1];
	hal_parallel_for(s, hal_numel(o) / W, grain_for((size_t)W * p->es * 4), rz_rows, &j);
	return 0;
}

/* Shared by Resize (opset 10+) and Upsample (7-9). scales/sizes already read:
 * scales[i] > 0 for every dim, sizes[i] >= 0 when have_sizes. */
static int rz_setup(hal_step *s, const double *scales_in, const int64_t *sizes, bool have_sizes,
		    const double *roi, int mode, int ct, int nm)
{
	const hal_tensor *x = s->in[0];
	int r = x->rank;
	size_t es;
	int rc = elsize(s, x, &es);
	if (rc)
		return rc;
	if (r < 1)
		return hal_err(s, AIDOS_E_INVALID, "%s needs rank >= 1", s->op->name);
	if (mode != RZ_NEAREST && x->dtype != HAL_DT_F32 && x->dtype != HAL_DT_F64 &&
	    x->dtype != HAL_DT_F16 && x->dtype != HAL_DT_U8 && x->dtype != HAL_DT_I8 &&
	    x->dtype != HAL_DT_I32 && x->dtype != HAL_DT_I64)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "%s linear/cubic of %s", s->op->name,
			       hal_dtype_name(x->dtype));
	rz_p *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	s->params = p;
	p->rank = r;
	p->mode = mode;
	p->dtype = x->dtype;
	p->es = es;
	p->extrap = hal_attr_float(s->node, "extrapolation_value", 0.0f);
	put_f64(p->extrap_el, x->dtype, p->extrap, true);
	double A = hal_attr_float(s->node, "cubic_coeff_a", -0.75f);
	bool excl = hal_attr_int(s->node, "exclude_outside", 0) != 0;
	row_strides(r, x->dims, p->istr);
	int64_t d[HAL_MAX_RANK];
	double sc[HAL_MAX_RANK], of[HAL_MAX_RANK];
	for (int i = 0; i < r; i++) {
		if (have_sizes) {
			d[i] = sizes[i];
			sc[i] = x->dims[i] ? (double)sizes[i] / (double)x->dims[i] : 1.0;
			of[i] = (double)sizes[i];
		} else {
			double v = (double)x->dims[i] * scales_in[i];
			if (!(v < 9.0e15))
				return hal_err(s, AIDOS_E_RANGE, "scale %g too large", scales_in[i]);
			d[i] = (int64_t)floor(v);
			sc[i] = scales_in[i];
			of[i] = v;
		}
	}
	if ((rc = set_out(s, s->out[0], x->dtype, r, d)))
		return rc;
	int combos = 1;
	for (int i = 0; i < r; i++) {
		rc = rz_dim(s, p, i, x->dims[i], d[i], sc[i], of[i], ct, nm, A, excl,
			    roi ? roi[i] : 0, roi ? roi[r + i] : 1);
		if (rc)
			return rc;
		if (i < r - 1)
			combos *= p->taps[i];
		if (combos > RZ_MAX_COMBOS)
			return hal_err(s, AIDOS_E_UNSUPPORTED, "%s interpolates too many axes",
				       s->op->name);
	}
	p->identity_last = p->taps[r - 1] == 1 && d[r - 1] == x->dims[r - 1];
	for (int64_t c = 0; p->identity_last && c < d[r - 1]; c++)
		p->identity_last = p->idx[r - 1][c] == c;
	return 0;
}

static int rz_mode(hal_step *s, int *mode)
{
	const char *m = hal_attr_str(s->node, "mode", "nearest");
	*mode = !strcmp(m, "nearest") ? RZ_NEAREST
	      : (!strcmp(m, "linear") || !strcmp(m, "bilinear")) ? RZ_LINEAR
	      : !strcmp(m, "cubic") ? RZ_CUBIC : -1;
	if (*mode < 0)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "mode '%s'", m);
	return 0;
}

static int resize_infer(hal_step *s)
{
	const hal_tensor *x = s->in[0];
	int r = x->rank, mode, ct, nm, rc;
	if ((rc = rz_mode(s, &mode)))
		return rc;
	double scales[HAL_MAX_RANK], roi[2 * HAL_MAX_RANK];
	int64_t sizes[HAL_MAX_RANK];
	const hal_tensor *tsc, *tsz = NULL, *troi = NULL;
	if (r < 1 || r > HAL_MAX_RANK)
		return hal_err(s, AIDOS_E_INVALID, "Resize needs rank >= 1");
	if (s->opset < 11) {
		/* Resize-10 behaves as ORT's: asymmetric, floor when upsampling */
		ct = CT_ASYMMETRIC;
		nm = NM_SIMPLE;
		tsc = in_given(s, 1);
	} else {
		const char *c = hal_attr_str(s->node, "coordinate_transformation_mode", "half_pixel");
		ct = !strcmp(c, "half_pixel") ? CT_HALF_PIXEL : !strcmp(c, "asymmetric") ? CT_ASYMMETRIC
		   : !strcmp(c, "pytorch_half_pixel") ? CT_PYTORCH_HALF_PIXEL
		   : !strcmp(c, "tf_half_pixel_for_nn") ? CT_TF_HALF_PIXEL_FOR_NN
		   : !strcmp(c, "align_corners") ? CT_ALIGN_CORNERS
		   : !strcmp(c, "tf_crop_and_resize") ? CT_TF_CROP_AND_RESIZE
		   : !strcmp(c, "half_pixel_symmetric") ? CT_HALF_PIXEL_SYMMETRIC : -1;
		if (ct < 0)
			return hal_err(s, AIDOS_E_UNSUPPORTED, "coordinate_transformation_mode '%s'", c);
		const char *n = hal_attr_str(s->node, "nearest_mode", "round_prefer_floor");
		nm = !strcmp(n, "round_prefer_floor") ? NM_ROUND_PREFER_FLOOR
		   : !strcmp(n, "round_prefer_ceil") ? NM_ROUND_PREFER_CEIL
		   : !strcmp(n, "floor") ? NM_FLOOR : !strcmp(n, "ceil") ? NM_CEIL : -1;
		if (nm < 0)
			return hal_err(s, AIDOS_E_UNSUPPORTED, "nearest_mode '%s'", n);
		troi = in_given(s, 1);
		tsc = in_given(s, 2);
		tsz = in_given(s, 3);
		if (hal_attr_int(s->node, "antialias", 0) && mode != RZ_NEAREST)
			return hal_err(s, AIDOS_E_UNSUPPORTED, "Resize antialias");
	}
	/* opset 18 axes: scales/sizes/roi name a subset of the dims */
	int64_t axes[HAL_MAX_RANK];
	int na = r;
	bool has_axes = s->opset >= 18 && hal_attr_has(s->node, "axes");
	if (has_axes) {
		const int64_t *v;
		na = hal_attr_ints(s->node, "axes", &v);
		if (na < 1 || na > r)
			return hal_err(s, AIDOS_E_INVALID, "axes has %d values for rank %d", na, r);
		for (int i = 0; i < na; i++) {
			int a = hal_axis(v[i], r);
			if (a < 0)
				return hal_err(s, AIDOS_E_INVALID, "axis %lld out of range",
					       (long long)v[i]);
			axes[i] = a;
		}
	} else {
		for (int i = 0; i < r; i++)
			axes[i] = i;
	}
	double vs[HAL_MAX_RANK], vr[2 * HAL_MAX_RANK];
	int64_t vz[HAL_MAX_RANK];
	for (int i = 0; i < r; i++) {
		scales[i] = 1;
		sizes[i] = x->dims[i];
		roi[i] = 0;
		roi[r + i] = 1;
	}
	if (troi && ct == CT_TF_CROP_AND_RESIZE) {
		int n = const_f64s(s, troi, "roi", vr, 2 * HAL_MAX_RANK);
		if (n < 0)
			return n;
		if (n != 2 * na)
			return hal_err(s, AIDOS_E_INVALID, "roi has %d values for %d axes", n, na);
		for (int i = 0; i < na; i++) {
			roi[axes[i]] = vr[i];
			roi[r + axes[i]] = vr[na + i];
		}
	}
	if (tsz) {
		if (tsc)
			return hal_err(s, AIDOS_E_INVALID, "only one of scales and sizes may be given");
		int n = const_ints(s, tsz, "sizes", vz, HAL_MAX_RANK);
		if (n < 0)
			return n;
		if (n != na)
			return hal_err(s, AIDOS_E_INVALID, "sizes has %d values for %d axes", n, na);
		const char *pol = hal_attr_str(s->node, "keep_aspect_ratio_policy", "stretch");
		bool nl = !strcmp(pol, "not_larger"), ns = !strcmp(pol, "not_smaller");
		if (s->opset >= 18 && !nl && !ns && strcmp(pol, "stretch"))
			return hal_err(s, AIDOS_E_UNSUPPORTED, "keep_aspect_ratio_policy '%s'", pol);
		if (s->opset >= 18 && (nl || ns)) {
			double sc = nl ? INFINITY : 0;
			for (int i = 0; i < na; i++) {
				double v = x->dims[axes[i]] ? (double)vz[i] / (double)x->dims[axes[i]] : 1;
				sc = nl ? fmin(sc, v) : fmax(sc, v);
			}
			for (int i = 0; i < na; i++)
				vz[i] = (int64_t)floor(sc * (double)x->dims[axes[i]] + 0.5);
		}
		for (int i = 0; i < na; i++) {
			if (vz[i] < 0)
				return hal_err(s, AIDOS_E_INVALID, "sizes[%d] is %lld", i, (long long)vz[i]);
			sizes[axes[i]] = vz[i];
		}
		return rz_setup(s, NULL, sizes, true, roi, mode, ct, nm);
	}
	if (!tsc)
		return hal_err(s, AIDOS_E_INVALID, "Resize needs scales or sizes");
	int n = const_f64s(s, tsc, "scales", vs, HAL_MAX_RANK);
	if (n < 0)
		return n;
	if (n != na)
		return hal_err(s, AIDOS_E_INVALID, "scales has %d values for %d axes", n, na);
	for (int i = 0; i < na; i++) {
		if (!(vs[i] > 0))
			return hal_err(s, AIDOS_E_INVALID, "scales[%d] is %g", i, vs[i]);
		scales[axes[i]] = vs[i];
	}
	return rz_setup(s, scales, NULL, false, roi, mode, ct, nm);
}

static int upsample_infer(hal_step *s)
{
	const hal_tensor *x = s->in[0];
	int mode, rc, n;
	if ((rc = rz_mode(s, &mode)))
		return rc;
	if (mode == RZ_CUBIC)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "Upsample mode cubic");
	double sc[HAL_MAX_RANK];
	if (s->opset >= 9) {
		if (!in_opt(s, 1))
			return hal_err(s, AIDOS_E_INVALID, "Upsample needs scales");
		if ((n = const_f64s(s, s->in[1], "scales", sc, HAL_MAX_RANK)) < 0)
			return n;
	} else {
		const float *v;
		n = hal_attr_floats(s->node, "scales", &v);
		if (n > HAL_MAX_RANK)
			return hal_err(s, AIDOS_E_INVALID, "scales has %d values", n);
		for (int i = 0; i < n; i++)
			sc[i] = v[i];
	}
	if (n != x->rank)
		return hal_err(s, AIDOS_E_INVALID, "scales has %d values for rank %d", n, x->rank);
	for (int i = 0; i < n; i++)
		if (!(sc[i] >= 1))
			return hal_err(s, AIDOS_E_INVALID, "scales[%d] is %g (must be >= 1)", i, sc[i]);
	return rz_setup(s, sc, NULL, false, NULL, mode, CT_ASYMMETRIC, NM_SIMPLE);
}

/* ------------------------------------------------------------------------ */
/* the table                                                                 */
/* ------------------------------------------------------------------------ */

#define PURE HAL_OP_PURE
#define ALIAS (HAL_OP_PURE | HAL_OP_ALIAS0)

static const hal_op op_identity = { "Identity", 1, ALIAS, identity_infer, alias_exec };
static const hal_op op_reshape = { "Reshape", 1, ALIAS, reshape_infer, alias_exec };
static const hal_op op_flatten = { "Flatten", 1, ALIAS, flatten_infer, alias_exec };
static const hal_op op_squeeze = { "Squeeze", 1, ALIAS, squeeze_infer, alias_exec };
static const hal_op op_unsqueeze = { "Unsqueeze", 1, ALIAS, unsqueeze_infer, alias_exec };
static const hal_op op_transpose = { "Transpose", 1, PURE, transpose_infer, strided_exec };
static const hal_op op_slice = { "Slice", 1, PURE, slice_infer, strided_exec };
static const hal_op op_expand = { "Expand", 8, PURE, expand_infer, strided_exec };
static const hal_op op_tile = { "Tile", 6, PURE, tile_infer, strided_exec };
static const hal_op op_concat = { "Concat", 1, PURE, concat_infer, cat_exec };
static const hal_op op_split = { "Split", 1, PURE, split_infer, split_exec };
static const hal_op op_shape = { "Shape", 1, PURE | HAL_OP_SHAPE_ONLY, shape_infer, shape_exec };
static const hal_op op_size = { "Size", 1, PURE | HAL_OP_SHAPE_ONLY, size_infer, size_exec };
static const hal_op op_constant = { "Constant", 1, PURE, constant_infer, constant_exec };
static const hal_op op_cos = { "ConstantOfShape", 9, PURE, cos_infer, cos_exec };
static const hal_op op_range = { "Range", 11, PURE, range_infer, range_exec };
static const hal_op op_gather = { "Gather", 1, PURE, gather_infer, gather_exec };
static const hal_op op_gel = { "GatherElements", 11, PURE, gel_infer, gel_exec };
static const hal_op op_gnd = { "GatherND", 11, PURE, gnd_infer, gnd_exec };
static const hal_op op_snd = { "ScatterND", 11, PURE, snd_infer, snd_exec };
static const hal_op op_sel = { "ScatterElements", 11, PURE, sel_infer, sel_exec };
static const hal_op op_scatter = { "Scatter", 9, PURE, sel_infer, sel_exec };
static const hal_op op_pad = { "Pad", 2, PURE, pad_infer, pad_exec };
static const hal_op op_trilu = { "Trilu", 14, PURE, trilu_infer, trilu_exec };
static const hal_op op_cumsum = { "CumSum", 11, PURE, cumsum_infer, cumsum_exec };
static const hal_op op_topk = { "TopK", 1, PURE, topk_infer, topk_exec };
static const hal_op op_resize = { "Resize", 10, PURE, resize_infer, rz_exec };
static const hal_op op_upsample = { "Upsample", 7, PURE, upsample_infer, rz_exec };

const hal_op *const hal_ops_shape[] = {
	&op_identity, &op_reshape, &op_flatten, &op_squeeze, &op_unsqueeze,
	&op_transpose, &op_slice, &op_expand, &op_tile, &op_concat, &op_split,
	&op_shape, &op_size, &op_constant, &op_cos, &op_range,
	&op_gather, &op_gel, &op_gnd, &op_snd, &op_sel, &op_scatter,
	&op_pad, &op_trilu, &op_cumsum, &op_topk, &op_resize, &op_upsample,
	NULL,
};
