/*
 * hal/gemm.c - packed-panel SGEMM (see hal/gemm.h for the structure).
 *
 * Cost model for the defaults: an MR x NR micro-kernel call does
 * 2*MR*NR*kc flops from kc*(MR+NR) loaded floats; with AVX2 (6x16, twelve
 * ymm accumulators, two FMA ports, latency 4) that is 12 FMAs per 2 loads +
 * 6 broadcasts per k, enough to keep both FMA pipes busy.
 */
#if defined(__GNUC__) && !defined(__clang__)
/* ISO C mode makes GCC default to -ffp-contract=off; the micro-kernel's
 * `acc += a * b` must become one FMA (clang contracts it by default). */
#pragma GCC optimize("fp-contract=fast")
#endif

#include <math.h>
#include <stdatomic.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
#include "hal/gemm.h"
#include "hal/plan.h"

#define KC HAL_GEMM_KC
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* ab = {alpha, beta}: passed in memory so that neither holds a vector
 * register through the k loop (AVX2 needs all 16 for 12 accumulators). */
typedef void (*kern_fn)(int64_t kc, const float *a, const float *b, const int64_t *koff,
			float *c, int64_t ldc, int mr, int nr, const float *ab, const float *bias,
			const ir_epilogue *epi);

/* One element of an epilogue (see ir_epilogue). */
static inline float epi_one(int act, float x, float a, float b)
{
	float v;
	switch (act) {
	case IR_ACT_RELU: return x < 0.0f ? 0.0f : x;
	case IR_ACT_CLIP: v = x < a ? a : x; return v > b ? b : v;
	case IR_ACT_HARDSIGMOID:
	case IR_ACT_HARDSWISH:
		v = a * x + b;
		v = v < 0.0f ? 0.0f : v;
		v = v > 1.0f ? 1.0f : v;
		return act == IR_ACT_HARDSWISH ? x * v : v;
	case IR_ACT_SIGMOID: return 1.0f / (1.0f + expf(-x));
	case IR_ACT_LEAKYRELU: v = x < 0.0f ? a * x : x; return v < b ? b : v;
	default: return x;
	}
}

/* Lane-wise max/min of vectors of type VT (VI: the same-width int vector)
 * through compare masks: GCC's C front end has no vector ?:. Macros, as
 * baseline-ISA functions returning vectors would change the ABI. */
#define VMAX_T(VT, VI, x, lo) ((VT)(((VI)(x) & ~((x) < (lo))) | ((VI)(lo) & ((x) < (lo)))))
#define VMIN_T(VT, VI, x, hi) ((VT)(((VI)(x) & ~((x) > (hi))) | ((VI)(hi) & ((x) > (hi)))))

/* x = post_s * act(x) + post_b on a VT vector; zero is a VT of zeros. */
#define EPI_VEC(VT, VI, x, e, zero) do {                                        \
		VT lo_, hi_, v_;                                                \
		switch ((e)->act) {                                             \
		case IR_ACT_RELU: x = VMAX_T(VT, VI, x, zero); break;           \
		case IR_ACT_CLIP:                                               \
			lo_ = (zero) + (e)->a;                                  \
			hi_ = (zero) + (e)->b;                                  \
			x = VMAX_T(VT, VI, x, lo_);                             \
			x = VMIN_T(VT, VI, x, hi_);                             \
			break;                                                  \
		case IR_ACT_HARDSIGMOID:                                        \
		case IR_ACT_HARDSWISH:                                          \
			hi_ = (zero) + 1.0f;                                    \
			v_ = x * (e)->a + (e)->b;                               \
			v_ = VMAX_T(VT, VI, v_, zero);                          \
			v_ = VMIN_T(VT, VI, v_, hi_);                           \
			x = (e)->act == IR_ACT_HARDSWISH ? x * v_ : v_;         \
			break;                                                  \
		case IR_ACT_SIGMOID:                                            \
			for (int l_ = 0; l_ < (int)(sizeof(VT) / sizeof(float)); l_++) \
				x[l_] = 1.0f / (1.0f + expf(-x[l_]));           \
			break;                                                  \
		case IR_ACT_LEAKYRELU:                                          \
			lo_ = (zero) + (e)->b;                                  \
			v_ = x * (e)->a;                                        \
			x = (VT)(((VI)x & ~(x < (zero))) | ((VI)v_ & (x < (zero)))); \
			x = VMAX_T(VT, VI, x, lo_);                             \
			break;                                                  \
		default: break;                                                 \
		}                                                               \
		x = x * (e)->post_s + (e)->post_b;                              \
	} while (0)

/* ---- micro-kernels ----
 * C[mr,nr] (tile at c, row stride ldc) = alpha * sum_k a[k*MR+i] * B(k,j)
 * + bias[i] + beta * C, for a full MR x NR register tile of which only the
 * top-left mr x nr part is stored. B(k,j) is b[k*NR+j] (a packed panel) or,
 * with koff, b[koff[k]+j] (rows read in place). Each row is two vectors
 * wide; every accumulator is a named variable so both compilers keep them
 * in registers. */
typedef float v4f __attribute__((vector_size(16)));
typedef float v8f __attribute__((vector_size(32)));
typedef float v16f __attribute__((vector_size(64)));


#define ROWS1(X) X(0)
#define ROWS2(X) X(0) X(1)
#define ROWS4(X) X(0) X(1) X(2) X(3)
#define ROWS6(X) ROWS4(X) X(4) X(5)
#define ROWS8(X) ROWS6(X) X(6) X(7)

#define K_DECL(i) VT c##i##0 = zero, c##i##1 = zero;
#define K_PREFC(i) __builtin_prefetch(c + (i) * ldc, 1, 3); \
	__builtin_prefetch(c + (i) * ldc + NR - 1, 1, 3);
#define K_FMA(i) { VT ai = a[i] - zero; c##i##0 += ai * b0; c##i##1 += ai * b1; }
#define K_STORE(i) {                                                        \
		float *ci = c + (i) * ldc;                                  \
		VT x0 = c##i##0 * alpha, x1 = c##i##1 * alpha;              \
		if (bias) {                                                 \
			x0 += bias[i];                                      \
			x1 += bias[i];                                      \
		}                                                           \
		if (beta != 0.0f) {                                         \
			VT o0, o1;                                          \
			memcpy(&o0, ci, sizeof o0);                         \
			memcpy(&o1, ci + VW, sizeof o1);                    \
			x0 += o0 * beta;                                    \
			x1 += o1 * beta;                                    \
		}                                                           \
		if (epi) {                                                  \
			EPI_VEC(VT, VI, x0, epi, zero);                     \
			EPI_VEC(VT, VI, x1, epi, zero);                     \
		}                                                           \
		memcpy(ci, &x0, sizeof x0);                                 \
		memcpy(ci + VW, &x1, sizeof x1);                            \
	}
#define K_STORE_IF(i) if ((i) < mr) K_STORE(i)
#define K_SPILL(i) memcpy(t + (i) * NR, &c##i##0, sizeof c##i##0); \
	memcpy(t + (i) * NR + VW, &c##i##1, sizeof c##i##1);

/* The k loops are unrolled 8 times. A k step of the AVX2 kernel is 20
 * instructions (2 B loads, 6 broadcasts, 12 FMAs) and 4 of loop control.
 * Alone on its core the loop is bound by the two FMA pipes and the
 * control is free; when the host runs another guest's thread on the SMT
 * sibling of the vCPU's core (this host's "slow phase", in which a plain
 * FMA loop drops from 97 to 66 GFLOP/s) the two threads share the
 * dispatch slots, and every instruction that is not an FMA costs FMA
 * time. Unrolled, 1024^3 and 2048^3 ran 1.09-1.16x faster in that phase
 * (1 and 2 threads, paired rounds in one process), 1.01-1.02x in the
 * fast one; against oneDNN, 0.89-0.93 -> 1.02-1.06 in the slow phase. */
#define GEMM_KERNEL(NAME, ATTR, VTYPE, MR_, ROWS)                                   \
	ATTR static void NAME(int64_t kc, const float *restrict a,                  \
			      const float *restrict b, const int64_t *restrict koff, \
			      float *restrict c, int64_t ldc, int mr, int nr,       \
			      const float *ab, const float *restrict bias,          \
			      const ir_epilogue *epi)                               \
	{                                                                           \
		typedef VTYPE VT;                                                   \
		typedef int32_t VI __attribute__((vector_size(sizeof(VT))));        \
		enum { MR = MR_, VW = (int)(sizeof(VT) / sizeof(float)), NR = 2 * VW }; \
		const VT zero = { 0 };                                              \
		ROWS(K_DECL)                                                        \
		/* the C tile, for writing after the k loop: its lines are    \
		 * usually not cached (C rows are ldc apart, too many streams  \
		 * for the hardware prefetcher) */                              \
		ROWS(K_PREFC)                                                       \
		if (koff) {                                                         \
			_Pragma("GCC unroll 8")                                     \
			for (int64_t k = 0; k < kc; k++) {                          \
				const float *bk = b + koff[k];                      \
				/* the next panel's row: rows read in place    \
				 * are too many streams for the hardware        \
				 * prefetcher */                                \
				__builtin_prefetch(bk + 2 * NR);                    \
				VT b0, b1;                                          \
				memcpy(&b0, bk, sizeof b0);                         \
				memcpy(&b1, bk + VW, sizeof b1);                    \
				ROWS(K_FMA)                                         \
				a += MR;                                            \
			}                                                           \
		} else {                                                            \
			_Pragma("GCC unroll 8")                                     \
			for (int64_t k = 0; k < kc; k++) {                          \
				VT b0, b1;                                          \
				memcpy(&b0, b, sizeof b0);                          \
				memcpy(&b1, b + VW, sizeof b1);                     \
				ROWS(K_FMA)                                         \
				a += MR;                                            \
				b += NR;                                            \
			}                                                           \
		}                                                                   \
		const float alpha = ab[0], beta = ab[1];                            \
		if (nr == NR) {  /* full-width rows: vector stores (rows < mr) */ \
			ROWS(K_STORE_IF)                                            \
			return;                                                     \
		}                                                                   \
		float t[MR * NR];                                                   \
		ROWS(K_SPILL)                                                       \
		for (int i = 0; i < mr; i++)                                        \
			for (int j = 0; j < nr; j++) {                              \
				float v = t[i * NR + j] * alpha;                    \
				if (bias)                                           \
					v += bias[i];                               \
				if (beta != 0.0f)                                   \
					v += beta * c[i * ldc + j];                 \
				if (epi)                                            \
					v = epi->post_s * epi_one(epi->act, v, epi->a, epi->b) + \
					    epi->post_b;                            \
				c[i * ldc + j] = v;                                 \
			}                                                           \
	}

GEMM_KERNEL(kern_generic, , v4f, 4, ROWS4)
#if defined(__x86_64__) || defined(__i386__)
GEMM_KERNEL(kern_avx2, __attribute__((target("avx2,fma"))), v8f, 6, ROWS6)
/* The last row panel of an M that is not a multiple of 6 (49 pixels in the
 * transposed 7x7 1x1 Conv: 8 x 6 + 1; 16, 32, 64, 160, 320 or 1280 output
 * channels: a 2- or 4-row panel) computes only the rows it has: the 6-row
 * kernel would spend 6 rows of FMAs on 1. Same packed A layout (a panel
 * holds 6 rows, the unused ones zero). */
GEMM_KERNEL(kern_avx2_r1, __attribute__((target("avx2,fma"))), v8f, 6, ROWS1)
GEMM_KERNEL(kern_avx2_r2, __attribute__((target("avx2,fma"))), v8f, 6, ROWS2)
GEMM_KERNEL(kern_avx2_r4, __attribute__((target("avx2,fma"))), v8f, 6, ROWS4)
GEMM_KERNEL(kern_avx512, __attribute__((target("avx512f,avx2,fma"))), v16f, 8, ROWS8)
#endif

struct gemm_isa {
	const char *name;
	int mr, nr;
	kern_fn kern;
	/* kern_rows[m]: the kernel for a panel of m < mr valid rows (NULL:
	 * kern); at most 8 = the largest mr. */
	kern_fn kern_rows[8];
};

static const struct gemm_isa isa_list[] = {
#if defined(__x86_64__) || defined(__i386__)
	{ "avx512", 8, 32, kern_avx512, { NULL } },
	{ "avx2", 6, 16, kern_avx2,
	  { NULL, kern_avx2_r1, kern_avx2_r2, kern_avx2_r4, kern_avx2_r4 } },
#endif
	{ "generic", 4, 8, kern_generic, { NULL } },
};
#define N_ISA ((int)(sizeof isa_list / sizeof isa_list[0]))

static int isa_supported(const struct gemm_isa *k)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_cpu_init();
	if (strcmp(k->name, "avx512") == 0)
		return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
	if (strcmp(k->name, "avx2") == 0)
		return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
	return strcmp(k->name, "generic") == 0;
}

/* Chosen once at load time, before any thread or plan exists. */
static const struct gemm_isa *isa = &isa_list[N_ISA - 1];

__attribute__((constructor)) static void gemm_select(void)
{
	for (int i = 0; i < N_ISA; i++)
		if (isa_supported(&isa_list[i])) {
			isa = &isa_list[i];
			return;
		}
}

const char *hal_gemm_isa(void)
{
	return isa->name;
}

int hal_gemm_isa_vec(void)
{
	return strcmp(isa->name, "generic") != 0;
}

int hal_gemm_nr(void)
{
	return isa->nr;
}

int hal_gemm_use_isa(const char *name)
{
	for (int i = 0; i < N_ISA; i++)
		if (strcmp(isa_list[i].name, name) == 0 && isa_supported(&isa_list[i])) {
			isa = &isa_list[i];
			return 0;
		}
	return -1;
}

static int64_t round_up(int64_t x, int64_t m)
{
	return (x + m - 1) / m * m;
}

/* ---- packing ---- */

#if defined(__x86_64__) || defined(__i386__)
/* One full 6-row AVX2 panel of row-major A (element (i,k) at src[i*rs+k]),
 * kc columns, into dst[k*6+i]: 8 columns at a time as an 8x8 transpose of
 * the 6 rows (two don't-care rows), each transposed row stored as 8 floats
 * at its 6-float slot in order, so the next one overwrites the 2 extra (the
 * last of the 8 stores exactly 6). Scalar copies cost a load and a store
 * per float: 6% of a 256^3 GEMM. */
__attribute__((target("avx2"))) static void pack_a6_rows(float *restrict dst, const float *restrict src,
							 int64_t rs, int64_t kc)
{
	int64_t k = 0;
	for (; k + 8 <= kc; k += 8) {
		const float *s = src + k;
		float *d = dst + k * 6;
		__m256 r0 = _mm256_loadu_ps(s), r1 = _mm256_loadu_ps(s + rs);
		__m256 r2 = _mm256_loadu_ps(s + 2 * rs), r3 = _mm256_loadu_ps(s + 3 * rs);
		__m256 r4 = _mm256_loadu_ps(s + 4 * rs), r5 = _mm256_loadu_ps(s + 5 * rs);
		__m256 z = _mm256_setzero_ps();
		__m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
		__m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
		__m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
		/* t6 = t7 = 0: rows 6 and 7 */
		__m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
		__m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
		__m256 u4 = _mm256_shuffle_ps(t4, z, 0x44), u5 = _mm256_shuffle_ps(t4, z, 0xee);
		__m256 u6 = _mm256_shuffle_ps(t5, z, 0x44), u7 = _mm256_shuffle_ps(t5, z, 0xee);
		/* column j of the 8: rows 0-3 in u(j%4)'s lane j/4, rows 4-5 in u(4+j%4)'s */
		_mm256_storeu_ps(d + 0, _mm256_permute2f128_ps(u0, u4, 0x20));
		_mm256_storeu_ps(d + 6, _mm256_permute2f128_ps(u1, u5, 0x20));
		_mm256_storeu_ps(d + 12, _mm256_permute2f128_ps(u2, u6, 0x20));
		_mm256_storeu_ps(d + 18, _mm256_permute2f128_ps(u3, u7, 0x20));
		_mm256_storeu_ps(d + 24, _mm256_permute2f128_ps(u0, u4, 0x31));
		_mm256_storeu_ps(d + 30, _mm256_permute2f128_ps(u1, u5, 0x31));
		_mm256_storeu_ps(d + 36, _mm256_permute2f128_ps(u2, u6, 0x31));
		__m256 c7 = _mm256_permute2f128_ps(u3, u7, 0x31);
		_mm_storeu_ps(d + 42, _mm256_castps256_ps128(c7));
		_mm_storel_pi((__m64 *)(void *)(d + 46), _mm256_extractf128_ps(c7, 1));
	}
	for (; k < kc; k++)
		for (int i = 0; i < 6; i++)
			dst[k * 6 + i] = src[i * rs + k];
}
#endif

/* Panels of A rows [i0, i0+mc), columns [k0, k0+kc): element (i,k) at
 * a[i*rs + k*cs]. */
static void pack_a_block(float *dst, const float *a, int64_t rs, int64_t cs, int64_t i0,
			 int64_t mc, int64_t k0, int64_t kc, int mr)
{
	for (int64_t p = 0; p < mc; p += mr, dst += kc * mr) {
		int m = (int)MIN(mr, mc - p);
		const float *src = a + (i0 + p) * rs + k0 * cs;
		if (m < mr)
			memset(dst, 0, (size_t)(kc * mr) * sizeof *dst);
		if (rs == 1 && m == 6) {
			/* A^T in memory, a full AVX2 panel: fixed-size copies
			 * (a variable-size memcpy is a libc call per k) */
			for (int64_t k = 0; k < kc; k++)
				__builtin_memcpy(dst + k * 6, src + k * cs, 6 * sizeof *dst);
		} else if (rs == 1) {  /* A^T in memory: each k holds mr contiguous rows */
			for (int64_t k = 0; k < kc; k++)
				memcpy(dst + k * mr, src + k * cs, (size_t)m * sizeof *dst);
#if defined(__x86_64__) || defined(__i386__)
		} else if (m == 6 && cs == 1 && mr == 6) {
			/* mr 6: the AVX2 kernel was chosen, so the CPU has AVX2 */
			pack_a6_rows(dst, src, rs, kc);
#endif
		} else if (m == 6 || m == 8) {
			/* a full AVX2 / AVX-512 panel: k outer, so the panel is
			 * written in order and the m source rows are read as m
			 * sequential streams; row by row (below) stored one float
			 * every mr and took 3.7% of a 2048^3 GEMM (perf) */
			for (int64_t k = 0; k < kc; k++) {
				const float *sk = src + k * cs;
				float *d = dst + k * mr;
				d[0] = sk[0];
				d[1] = sk[rs];
				d[2] = sk[2 * rs];
				d[3] = sk[3 * rs];
				d[4] = sk[4 * rs];
				d[5] = sk[5 * rs];
				if (m == 8) {
					d[6] = sk[6 * rs];
					d[7] = sk[7 * rs];
				}
			}
		} else {
			for (int i = 0; i < m; i++)
				for (int64_t k = 0; k < kc; k++)
					dst[k * mr + i] = src[i * rs + k * cs];
		}
	}
}

/* Panels of B rows [k0, k0+kc), columns [j0, j0+nc): element (k,j) at
 * b[k*rs + j*cs]. The layout of hal_gemm_pack_fn. */
static void pack_b_block(float *dst, const float *b, int64_t rs, int64_t cs, int64_t k0,
			 int64_t kc, int64_t j0, int64_t nc, int nr)
{
	if (cs == 1) {
		/* KB rows at a time, panel by panel: KB source streams move
		 * along their rows in order, and the destination is written in
		 * runs of KB*nr contiguous floats (one row at a time would
		 * store at a kc*nr*4-byte stride, which aliases in L1). */
		enum { KB = 8 };
		int64_t tail = nc % nr, full = nc - tail;
		if (tail)
			memset(dst + full * kc, 0, (size_t)(kc * nr) * sizeof *dst);
		for (int64_t k = 0; k < kc; k += KB) {
			int64_t g = MIN(KB, kc - k);
			const float *src = b + (k0 + k) * rs + j0;
			float *d = dst + k * nr;
			for (int64_t p = 0; p < full; p += nr)
				for (int64_t i = 0; i < g; i++)
					hal_gemm_copy_nr(d + p * kc + i * nr, src + i * rs + p, nr);
			if (tail)
				for (int64_t i = 0; i < g; i++)
					memcpy(d + full * kc + i * nr, src + i * rs + full,
					       (size_t)tail * sizeof *dst);
		}
		return;
	}
	for (int64_t p = 0; p < nc; p += nr, dst += kc * nr) {
		int n = (int)MIN(nr, nc - p);
		const float *src = b + k0 * rs + (j0 + p) * cs;
		if (n < nr)
			memset(dst, 0, (size_t)(kc * nr) * sizeof *dst);
		for (int j = 0; j < n; j++)
			for (int64_t k = 0; k < kc; k++)
				dst[k * nr + j] = src[j * cs + k * rs];
	}
}

size_t hal_gemm_packed_a_bytes(int64_t M, int64_t K)
{
	return (size_t)(round_up(M, isa->mr) * K) * sizeof(float);
}

size_t hal_gemm_packed_b_bytes(int64_t K, int64_t N)
{
	return (size_t)(round_up(N, isa->nr) * K) * sizeof(float);
}

/* The K block of a K-long product: K split into the fewest blocks of at
 * most KC (NR <= 16: a 384-long B micro-panel, 24 KiB, still fits L1 beside
 * the A one; 256 for NR = 32), all of one length (a multiple of 8) but the
 * last. Every K block re-reads and re-writes C, and a short last block
 * cost more than it saved: 49x1280x320 (MobileNetV2's last 1x1,
 * transposed) as one block instead of 256 + 64, 0.472 -> 0.457 ms. 1024
 * and 2048 split into blocks of 344 instead of 256 (with MC 120, NC 512
 * and the next A block prefetched): 1.01 -> 1.04-1.05x oneDNN, paired
 * samples on one CPU, 150 rounds at 1024^3 and 40 at 2048^3. Packed
 * layouts and the driver use it alike. */
static inline int64_t gemm_kc(int64_t K)
{
	int64_t kmax = isa->nr <= 16 ? KC : 256;
	if (K <= kmax)
		return K;
	int64_t n = (K + kmax - 1) / kmax;
	return round_up((K + n - 1) / n, 8);
}

/* Full packed A: the K block at k0 starts at k0*Mpad, its panel p at
 * p*kc*MR. */
void hal_gemm_pack_a(float *dst, const float *a, int64_t lda, int trans, int64_t M, int64_t K)
{
	int64_t mpad = round_up(M, isa->mr);
	for (int64_t k0 = 0, kb = gemm_kc(K); k0 < K; k0 += kb)
		pack_a_block(dst + k0 * mpad, a, trans ? 1 : lda, trans ? lda : 1, 0, M, k0,
			     MIN(kb, K - k0), isa->mr);
}

void hal_gemm_pack_b(float *dst, const float *b, int64_t ldb, int trans, int64_t K, int64_t N)
{
	int64_t npad = round_up(N, isa->nr);
	for (int64_t k0 = 0, kb = gemm_kc(K); k0 < K; k0 += kb)
		pack_b_block(dst + k0 * npad, b, trans ? 1 : ldb, trans ? ldb : 1, k0,
			     MIN(kb, K - k0), 0, N, isa->nr);
}

/* ---- epilogue ---- */

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define EPI_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define EPI_CLONES
#endif

typedef int32_t v8i __attribute__((vector_size(32)));
#define VMAX(x, lo) VMAX_T(v8f, v8i, x, lo)
#define VMIN(x, hi) VMIN_T(v8f, v8i, x, hi)
#define VSPLAT(x) ((v8f){ x, x, x, x, x, x, x, x })

/* One loop per activation (the switch hoisted by hand: GCC does not
 * unswitch it), 8 lanes at a time, then the scalar tail. */
#define EPI_LOOP(BODY) do {                                                     \
		for (; i + 8 <= n; i += 8) {                                    \
			v8f x, v;                                               \
			memcpy(&x, y + i, sizeof x);                            \
			BODY;                                                   \
			v = v * PS + PB;                                        \
			memcpy(y + i, &v, sizeof v);                            \
		}                                                               \
	} while (0)

EPI_CLONES
void hal_epilogue_apply(const ir_epilogue *e, float *restrict y, int64_t n)
{
	const float a = e->a, b = e->b, ps = e->post_s, pb = e->post_b;
	const int act = e->act;
	const v8f A = VSPLAT(a), B = VSPLAT(b), PS = VSPLAT(ps), PB = VSPLAT(pb);
	const v8f Z = VSPLAT(0.0f), O = VSPLAT(1.0f);
	int64_t i = 0;
	switch (act) {
	case IR_ACT_RELU: EPI_LOOP(v = VMAX(x, Z)); break;
	case IR_ACT_CLIP: EPI_LOOP(v = VMAX(x, A); v = VMIN(v, B)); break;
	case IR_ACT_HARDSIGMOID:
		EPI_LOOP(v = x * A + B; v = VMAX(v, Z); v = VMIN(v, O));
		break;
	case IR_ACT_HARDSWISH:
		EPI_LOOP(v = x * A + B; v = VMAX(v, Z); v = VMIN(v, O); v = x * v);
		break;
	case IR_ACT_SIGMOID: break;
	case IR_ACT_LEAKYRELU:
		EPI_LOOP(v = x * A; v = (v8f)(((v8i)x & ~(x < Z)) | ((v8i)v & (x < Z))); v = VMAX(v, B));
		break;
	default: EPI_LOOP(v = x); break;
	}
	for (; i < n; i++)
		y[i] = ps * epi_one(act, y[i], a, b) + pb;
}

/* ---- the driver ---- */

/* Task grid and scratch layout; a pure function of the sizes so that infer()
 * (hal_gemm_scratch_bytes) and exec() (hal_gemm) agree.
 *
 * A task is one N block (nc columns) times one M partition (a run of MC
 * blocks): it loops over K blocks, packs its kc x nc slice of B once per
 * K block and sweeps all its M blocks with it (the BLIS order jc, pc, ic,
 * jr, ir). B is therefore packed exactly once per GEMM when M is not
 * split (ms == 1), whatever M is; the first design (one task per MC x NC
 * block) re-packed B once per M block: 9 times at 2048^3, ~10% of the
 * time. A is packed once, up front, for all tasks. */
struct gemm_plan {
	int64_t mc, nc, mb, nb, ms, ntask;
	int64_t nfull, mt;   /* N blocks from nfull on: mt M partitions each */
	int nslots;
	size_t a_floats;     /* packed A in scratch (0 when pre-packed) */
	size_t slot_floats;  /* one worker's B block (0 when pre-packed) */
};

#define SERIAL_FLOPS (1 << 18)  /* below this a fork/join costs more than it saves */

/* The task grid for `threads` workers. One worker: one task per NC block.
 * Several want about four tasks each, so the atomic hand-out evens out
 * uneven progress (a core shared with other work): N blocks are narrowed
 * first (down to 2*NR columns: each worker packs a disjoint part of B,
 * nothing is packed twice), then M is split into partitions (each one
 * re-packs its N block of B), then MC shrinks. M blocks are balanced (256
 * rows: 2 x 128, not 240 + 16: a 16-row block runs 3 short micro-panels). */
static void gemm_plan(int64_t M, int64_t N, int64_t K, int a_packed, int b_mode, int threads,
		      struct gemm_plan *p)
{
	int mr = isa->mr, nr = isa->nr;
	double flops = 2.0 * (double)M * (double)N * (double)K;
	if (flops < SERIAL_FLOPS)
		threads = 1;
	int64_t want = threads > 1 ? 4 * (int64_t)threads : 1;
	int64_t mcmax = HAL_GEMM_MC / mr * mr, mb0 = (M + mcmax - 1) / mcmax;
	int64_t ncmax = MIN(round_up(N, nr), HAL_GEMM_NC / nr * nr);
	p->mc = round_up((M + mb0 - 1) / mb0, mr);
	p->nc = ncmax;
	p->ms = 1;
	for (;;) {
		p->mb = (M + p->mc - 1) / p->mc;
		p->nb = (N + p->nc - 1) / p->nc;
		p->ms = MIN(p->mb, MAX(p->ms, 1));
		p->ntask = p->nb * p->ms;
		if (p->ntask >= want)
			break;
		if (p->nc >= 4 * nr)
			p->nc = round_up(p->nc / 2, nr);
		else if (p->ms < p->mb)
			p->ms = MIN(p->mb, (want + p->nb - 1) / p->nb);
		else if (p->mc >= 8 * mr) {
			p->mc = round_up(p->mc / 2, mr);
			p->ms = p->mb * 2;  /* clamped to the new mb above */
		} else
			break;
	}
	/* The last round of N blocks, one per worker, is cut into M
	 * partitions four times finer, so that a worker done early takes
	 * part of a slower one's last block instead of waiting for it: the
	 * two vCPUs run at different speeds for seconds at a time (a busy
	 * SMT sibling on the host), and with four whole N blocks each, the
	 * faster one sat idle for 10-16% of a 2048^3 call. A partition reads
	 * its part of A only; it packs its own copy of the B block. */
	p->nfull = p->nb;
	p->mt = p->ms;
	if (threads > 1 && p->ntask >= 2 * threads && p->mb > p->ms) {
		int64_t tail = MIN(p->nb, threads);
		p->nfull = p->nb - tail;
		p->mt = MIN(p->mb, 4 * p->ms);
		p->ntask = p->nfull * p->ms + tail * p->mt;
	}
	p->nslots = (int)MIN(MIN(p->ntask, threads), HAL_GEMM_SLOTS);
	p->a_floats = a_packed ? 0 : (size_t)round_up(round_up(M, mr) * K, 16);
	/* b_mode 2 (read in place): a slot holds one packed tail panel. Sized
	 * for the widest nc any thread count gives, so that the scratch size
	 * does not depend on the pool. */
	p->slot_floats = b_mode == 1 ? 0
			 : (size_t)round_up(gemm_kc(K) * (b_mode == 2 ? nr : ncmax), 16);
}

size_t hal_gemm_scratch_bytes(int64_t M, int64_t N, int64_t K, int a_packed, int b_mode)
{
	if (M <= 0 || N <= 0 || K <= 0)
		return 0;
	struct gemm_plan p;
	/* the most tasks (and slots) any pool size gives */
	gemm_plan(M, N, K, a_packed, b_mode, HAL_GEMM_SLOTS, &p);
	return (p.a_floats + (size_t)p.nslots * p.slot_floats) * sizeof(float);
}

/* Workers of the pool that runs s (the caller included). */
static int step_threads(const hal_step *s)
{
	return s && s->plan && s->plan->tp ? hal_threadpool_size(s->plan->tp) : 1;
}

struct gemm_run {
	const hal_gemm_args *g;
	struct gemm_plan p;
	const struct gemm_isa *isa;
	const float *pa;      /* packed A */
	float *slots;         /* nslots * slot_floats */
	int64_t mpad, npad;
	atomic_llong next;    /* next task; relaxed: the fork/join orders the data */
};

/* The packed A block a task sweeps after the current one (the next M block
 * of its partition, else the first one of the next K block), pulled
 * towards L2 a few lines after each micro-kernel call so that it is there
 * when its first B micro-panel needs it, instead of streaming in from L3
 * or memory at the pace of the kernel. 1024^3 and 2048^3 on one thread
 * beside a memory-bound copy on the other core: 0.94-0.97 -> 0.99-1.04x
 * oneDNN; alone it costs nothing measurable. */
struct a_prefetch {
	const char *p, *end;
	int64_t step;  /* bytes per call */
};

static void a_prefetch_init(struct a_prefetch *pf, const struct gemm_run *r, int64_t ib, int64_t b0,
			    int64_t b1, int64_t k0, int64_t kc, int64_t kb, int64_t nc, int64_t mc)
{
	const hal_gemm_args *g = r->g;
	int64_t mr = r->isa->mr, nr = r->isa->nr, i1 = (ib + 1) * r->p.mc, next_kc = kc, next_mc;
	const float *next;
	pf->p = pf->end = NULL;
	pf->step = 0;
	if (ib + 1 < b1) {
		next = r->pa + k0 * r->mpad + i1 * kc;
		next_mc = MIN(r->p.mc, g->M - i1);
	} else if (k0 + kc < g->K) {
		next_kc = MIN(kb, g->K - k0 - kc);
		next = r->pa + (k0 + kc) * r->mpad + b0 * r->p.mc * next_kc;
		next_mc = MIN(r->p.mc, g->M - b0 * r->p.mc);
	} else
		return;
	int64_t calls = (nc + nr - 1) / nr * ((mc + mr - 1) / mr);
	int64_t lines = (round_up(next_mc, mr) * next_kc * (int64_t)sizeof(float) + 63) / 64;
	pf->p = (const char *)next;
	pf->end = pf->p + lines * 64;
	pf->step = (lines + calls - 1) / calls * 64;
}

static inline void a_prefetch_step(struct a_prefetch *pf)
{
	if (!pf->step)
		return;
	const char *e = pf->end - pf->p > pf->step ? pf->p + pf->step : pf->end;
	for (; pf->p < e; pf->p += 64)
		__builtin_prefetch(pf->p, 0, 2);  /* read, towards L2 (prefetcht1) */
}

/* Task t: N block t / ms, M partition t % ms (see struct gemm_plan); from
 * task nfull * ms on, the tail blocks, N block nfull + u / mt, partition
 * u % mt of mt (u = t - nfull * ms). */
static void gemm_task(struct gemm_run *r, int64_t t, float *slot)
{
	const hal_gemm_args *g = r->g;
	const int mr = r->isa->mr, nr = r->isa->nr;
	const kern_fn kern = r->isa->kern;
	int64_t ms = r->p.ms, u = t;
	if (t >= r->p.nfull * r->p.ms) {  /* a tail block's partition */
		ms = r->p.mt;
		u = r->p.nfull * ms + (t - r->p.nfull * r->p.ms);
	}
	int64_t jb = u / ms, is = u % ms;
	int64_t j0 = jb * r->p.nc, nc = MIN(r->p.nc, g->N - j0);
	/* this partition's M blocks: [b0, b1), balanced over ms */
	int64_t b0 = r->p.mb * is / ms, b1 = r->p.mb * (is + 1) / ms;
	/* a partial last panel read in place would read past column N-1:
	 * it is packed into the slot once per K block */
	int64_t jtail = g->b_koff && nc % nr ? nc - nc % nr : -1;
	for (int64_t k0 = 0, kb = gemm_kc(g->K); k0 < g->K; k0 += kb) {
		int64_t kc = MIN(kb, g->K - k0);
		int last = k0 + kc >= g->K;
		const float *bp = slot;
		const int64_t *koff = NULL;
		if (g->b_koff) {
			bp = g->b + j0;
			koff = g->b_koff + k0;
			if (jtail >= 0) {
				int64_t n = nc - jtail;
				for (int64_t k = 0; k < kc; k++) {
					memcpy(slot + k * nr, bp + jtail + koff[k], (size_t)n * sizeof *slot);
					memset(slot + k * nr + n, 0, (size_t)(nr - n) * sizeof *slot);
				}
			}
		} else if (g->b_packed)
			bp = g->b_packed + k0 * r->npad + j0 * kc;
		else if (g->b_pack)
			g->b_pack(g->b_ctx, slot, k0, kc, j0, nc, nr);
		else
			pack_b_block(slot, g->b, g->trans_b ? 1 : g->ldb, g->trans_b ? g->ldb : 1,
				     k0, kc, j0, nc, nr);
		const float ab[2] = { g->alpha, k0 == 0 ? g->beta : 1.0f };
		const float *bias = k0 == 0 ? g->bias : NULL;
		const ir_epilogue *epi = last ? g->epi : NULL;
		for (int64_t ib = b0; ib < b1; ib++) {
			int64_t i0 = ib * r->p.mc, mc = MIN(r->p.mc, g->M - i0);
			const float *ap = r->pa + k0 * r->mpad + i0 * kc;
			struct a_prefetch pf;
			a_prefetch_init(&pf, r, ib, b0, b1, k0, kc, kb, nc, mc);
			/* BLIS order: one B micro-panel (L1) against the whole
			 * A block (L2); the B block (KC x NC) is reread from L3
			 * for each M block. */
			for (int64_t j = 0; j < nc; j += nr) {
				float *cj = g->c + i0 * g->ldc + j0 + j;
				const float *bj = koff ? bp + j : bp + j * kc;
				const int64_t *kj = koff;
				if (j == jtail) {
					bj = slot;
					kj = NULL;
				}
				for (int64_t i = 0; i < mc; i += mr) {
					int m = (int)MIN(mr, mc - i);
					kern_fn kf = m < mr && r->isa->kern_rows[m] ? r->isa->kern_rows[m]
										     : kern;
					kf(kc, ap + i * kc, bj, kj, cj + i * g->ldc, g->ldc, m,
					   (int)MIN(nr, nc - j), ab, bias ? bias + i0 + i : NULL, epi);
					a_prefetch_step(&pf);
				}
			}
			/* all of K done for this block: hand it over while
			 * it is still in cache */
			if (last && g->done)
				g->done(g->done_ctx, i0, mc, j0, nc);
		}
	}
}

static void gemm_worker(void *arg, int64_t s0, int64_t s1)
{
	struct gemm_run *r = arg;
	/* A thread handed several slots runs them one after the other, so the
	 * first slot's buffer serves all the tasks it takes. */
	float *slot = r->slots + (size_t)s0 * r->p.slot_floats;
	int64_t t;
	(void)s1;
	while ((t = atomic_fetch_add_explicit(&r->next, 1, memory_order_relaxed)) < r->p.ntask)
		gemm_task(r, t, slot);
}

struct pack_a_job {
	const hal_gemm_args *g;
	float *dst;
	int64_t mpad;
	int mr;
};

static void pack_a_range(void *arg, int64_t p0, int64_t p1)
{
	const struct pack_a_job *j = arg;
	const hal_gemm_args *g = j->g;
	int64_t i0 = p0 * j->mr, i1 = MIN(p1 * j->mr, g->M);
	for (int64_t k0 = 0, kb = gemm_kc(g->K); k0 < g->K; k0 += kb) {
		int64_t kc = MIN(kb, g->K - k0);
		pack_a_block(j->dst + k0 * j->mpad + i0 * kc, g->a, g->trans_a ? 1 : g->lda,
			     g->trans_a ? g->lda : 1, i0, i1 - i0, k0, kc, j->mr);
	}
}

/* K == 0: the product is empty, C = beta*C + bias. */
static void gemm_k0(const hal_gemm_args *g)
{
	for (int64_t i = 0; i < g->M; i++)
		for (int64_t j = 0; j < g->N; j++) {
			float *c = g->c + i * g->ldc + j;
			*c = (g->beta != 0.0f ? g->beta * *c : 0.0f) + (g->bias ? g->bias[i] : 0.0f);
		}
	if (g->epi)
		for (int64_t i = 0; i < g->M; i++)
			hal_epilogue_apply(g->epi, g->c + i * g->ldc, g->N);
	if (g->done)
		g->done(g->done_ctx, 0, g->M, 0, g->N);
}

/* ---- M = 1 over a pre-packed B (a fully connected layer at batch 1) ----
 * The blocked path pads the one row to MR and sweeps A per B micro-panel;
 * this reads each packed B row once with one FMA per 8 floats, so it
 * streams B at memory speed; two chains per vector (k even, k odd), so
 * that with B in cache the FMA latency does not bound it either. */
struct gemv_run {
	const hal_gemm_args *g;
	int64_t npad;
	int nr;
};

typedef float v8u __attribute__((vector_size(32), aligned(4)));

/* Panels whose sums a task keeps while it walks the K blocks: the packed
 * rows of consecutive panels of one K block are contiguous, so GEMV_GROUP
 * panels read one long run (up to 64*256*16 floats) per K block instead
 * of a new 16 KB run per panel and K block, which the hardware prefetcher
 * restarted each time (weights not in cache: a classifier head runs once
 * per inference; a software prefetch 4 KB ahead on top made it slower). */
#define GEMV_GROUP 64

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
static void gemv_panels(void *arg, int64_t p0, int64_t p1)
{
	const struct gemv_run *r = arg;
	const hal_gemm_args *g = r->g;
	const int nr = r->nr, nv = nr / 8;
	int64_t as = g->trans_a ? g->lda : 1;  /* A(0, k) = a[k*as] */
	/* acc: the sums of GEMV_GROUP panels, kept across K blocks */
	float acc[GEMV_GROUP * HAL_GEMM_NR_MAX] __attribute__((aligned(32)));
	for (int64_t q0 = p0; q0 < p1; q0 += GEMV_GROUP) {
		int64_t q1 = MIN(p1, q0 + GEMV_GROUP);
		memset(acc, 0, (size_t)((q1 - q0) * nr) * sizeof *acc);
		for (int64_t k0 = 0, kb = gemm_kc(g->K); k0 < g->K; k0 += kb) {
			int64_t kc = MIN(kb, g->K - k0);
			const float *a = g->a + k0 * as;
			/* panels q0..q1-1 of this K block: one contiguous run */
			const float *b = g->b_packed + k0 * r->npad + q0 * kc * nr;
			for (int64_t p = q0; p < q1; p++) {
				float *ap = acc + (p - q0) * nr;
				if (nr == 16) {
					/* the AVX2 panel: four chains, k even and odd */
					v8f s0 = *(const v8u *)ap, s1 = *(const v8u *)(ap + 8);
					v8f t0 = { 0 }, t1 = { 0 };
					int64_t k = 0;
					for (; k + 2 <= kc; k += 2) {
						const float *bk = b + k * 16;
						float a0 = a[k * as], a1 = a[(k + 1) * as];
						s0 += a0 * *(const v8u *)bk;
						s1 += a0 * *(const v8u *)(bk + 8);
						t0 += a1 * *(const v8u *)(bk + 16);
						t1 += a1 * *(const v8u *)(bk + 24);
					}
					if (k < kc) {
						s0 += a[k * as] * *(const v8u *)(b + k * 16);
						s1 += a[k * as] * *(const v8u *)(b + k * 16 + 8);
					}
					*(v8u *)ap = s0 + t0;
					*(v8u *)(ap + 8) = s1 + t1;
				} else {
					v8f s8[HAL_GEMM_NR_MAX / 8];
					memcpy(s8, ap, (size_t)nr * sizeof *ap);
					for (int64_t k = 0; k < kc; k++) {
						float av = a[k * as];
						for (int v = 0; v < nv; v++)
							s8[v] += av * *(const v8u *)(b + k * nr + 8 * v);
					}
					memcpy(ap, s8, (size_t)nr * sizeof *ap);
				}
				b += kc * nr;
			}
		}
		for (int64_t p = q0; p < q1; p++) {
			int64_t j0 = p * nr, n = MIN(nr, g->N - j0);
			for (int64_t j = 0; j < n; j++) {
				float *c = g->c + j0 + j, v = g->alpha * acc[(p - q0) * nr + j];
				if (g->bias)
					v += g->bias[0];
				if (g->beta != 0.0f)
					v += g->beta * *c;
				*c = v;
			}
		}
	}
}

void hal_gemm(hal_step *s, const hal_gemm_args *g, void *scratch)
{
	if (g->M <= 0 || g->N <= 0)
		return;
	if (g->K <= 0) {
		gemm_k0(g);
		return;
	}
	if (g->M == 1 && g->b_packed && !g->a_packed && !g->epi && !g->done && isa->nr % 8 == 0) {
		struct gemv_run r = { g, round_up(g->N, isa->nr), isa->nr };
		int64_t npanel = r.npad / r.nr;
		hal_parallel_for(2.0 * (double)g->N * (double)g->K < SERIAL_FLOPS ? NULL : s, npanel,
				 MAX(1, 8192 / g->K), gemv_panels, &r);
		return;
	}
	struct gemm_run r = { .g = g, .isa = isa };
	gemm_plan(g->M, g->N, g->K, g->a_packed != NULL, g->b_koff ? 2 : g->b_packed != NULL,
		  step_threads(s), &r.p);
	r.mpad = round_up(g->M, r.isa->mr);
	r.npad = round_up(g->N, r.isa->nr);
	float *base = scratch;
	r.pa = g->a_packed;
	if (!r.pa) {
		struct pack_a_job j = { g, base, r.mpad, r.isa->mr };
		int64_t npanel = r.mpad / r.isa->mr;
		if (s && r.p.nslots > 1)
			hal_parallel_for(s, npanel, 8, pack_a_range, &j);
		else
			pack_a_range(&j, 0, npanel);
		r.pa = base;
		base += r.p.a_floats;
	}
	r.slots = base;
	atomic_init(&r.next, 0);
	if (!s || r.p.nslots == 1)
		gemm_worker(&r, 0, 1);
	else
		hal_parallel_for(s, r.p.nslots, 1, gemm_worker, &r);
}
