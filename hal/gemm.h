/*
 * hal/gemm.h - the CPU single-precision GEMM behind Conv, ConvTranspose,
 * Gemm, MatMul and LSTM.
 *
 *   C[M,N] = alpha * A[M,K] * B[K,N] + beta * C + bias[M] (per row)
 *
 * Structure (Goto/van de Geijn, "Anatomy of high-performance matrix
 * multiplication", TOMS 2008; the BLIS loop order): A and B are copied into
 * "packed panels" (A: MR rows at a time, k-major; B: NR columns at a time,
 * k-major, both zero-padded) so that an MR x NR register-blocked
 * micro-kernel streams both with unit stride. K is split into even blocks
 * of at most HAL_GEMM_KC (256 for NR > 16) so that a B micro-panel stays
 * in L1, and M into blocks of HAL_GEMM_MC rows so that a packed A block and
 * the next one (prefetched while the first computes) stay in L2; the B
 * block of a task (KC x NC) lives in L3. Sized for Zen 3's 32 KiB L1d and
 * 512 KiB L2 per core. The micro-kernel is plain C with GCC/clang vector extensions,
 * compiled once per ISA
 * (AVX-512F, AVX2+FMA, baseline) and chosen at load time with
 * __builtin_cpu_supports: MR x NR is 8x32, 6x16 and 4x8 respectively
 * (AVX2 runs the last row panel of an M that is not a multiple of 6 with a
 * 1-, 2- or 4-row kernel over the same packed layout).
 *
 * Packed layouts depend on the ISA chosen (MR, NR): a buffer packed with
 * hal_gemm_pack_a/b is only valid for the ISA active when it was packed
 * (hal_gemm_use_isa is for tests and benchmarks, before any packing).
 *
 * B may also be read in place (b_koff: row k at an arbitrary offset, unit
 * stride along N), which is how Conv avoids writing an im2col matrix.
 *
 * M = 1 with a pre-packed B (a fully connected layer at batch 1) skips the
 * blocking: each packed B row is read once, at memory speed.
 *
 * Threads: hal_gemm packs A once (in parallel), then splits C into tasks
 * of one N block (at most HAL_GEMM_NC columns) by a run of M blocks,
 * handed out through an atomic counter to at most HAL_GEMM_SLOTS workers
 * of hal_parallel_for (one task per N block on one thread, about four per
 * thread on several: narrower N blocks first, M split last). A task packs
 * its B columns once per K block into its worker's slot of the caller's
 * scratch and sweeps all its M blocks with them, so B is packed once per
 * GEMM unless M is split. No allocation, no locks, no system calls.
 */
#ifndef AIDOS_HAL_GEMM_H
#define AIDOS_HAL_GEMM_H

#include <stddef.h>
#include <stdint.h>
#include "hal/hal.h"
#include "hal/ir.h"

#define HAL_GEMM_KC 384    /* longest K block: a B micro-panel, kc*NR, fits L1 */
#define HAL_GEMM_NC 512    /* widest N block a task packs (KC x NC: L3) */
#define HAL_GEMM_MC 120    /* rows of an A block: two MC x KC blocks fit L2 */
#define HAL_GEMM_SLOTS 16  /* most workers one GEMM uses (one B buffer each) */

/* Writes the packed form of B's rows [k0, k0+kc) and columns [j0, j0+nc)
 * into dst: ceil(nc/nr) panels of kc*nr floats, panel p holding columns
 * j0+p*nr .. j0+p*nr+nr-1 as dst[p*kc*nr + k*nr + j] (k, j relative), with
 * columns past nc zero. Lets Conv produce im2col columns straight into the
 * packed layout. Called concurrently from several threads. */
typedef void (*hal_gemm_pack_fn)(const void *ctx, float *dst, int64_t k0, int64_t kc,
				 int64_t j0, int64_t nc, int nr);

typedef struct hal_gemm_args {
	int64_t M, N, K;
	/* A: a_packed (hal_gemm_pack_a) or a with element (i,k) at
	 * a[i*lda + k] (a[k*lda + i] when trans_a). */
	const float *a;
	int64_t lda;
	int trans_a;
	const float *a_packed;
	/* B: b_packed (hal_gemm_pack_b), else b_pack(b_ctx, ...), else b with
	 * element (k,j) at b[k*ldb + j] (b[j*ldb + k] when trans_b). */
	const float *b;
	int64_t ldb;
	int trans_b;
	const float *b_packed;
	hal_gemm_pack_fn b_pack;
	const void *b_ctx;
	/* B read in place, not packed: element (k,j) at b[b_koff[k] + j]
	 * (a 1x1 Conv's input planes; a stride-1 Conv over a padded input:
	 * one offset per (channel, tap)). Nothing past column N-1 is read. */
	const int64_t *b_koff;
	float *c;            /* [M, ldc] */
	int64_t ldc;
	float alpha, beta;   /* beta == 0: C is not read (may hold garbage) */
	const float *bias;   /* [M] added to row i, or NULL */
	/* Applied to every element of C once complete (after alpha, bias
	 * and beta), or NULL: a fused Conv's activation. */
	const ir_epilogue *epi;
	/* Called by the worker that completed C's rows [i0, i0+mc) x columns
	 * [j0, j0+nc) (all of K), or NULL: lets the caller consume a block
	 * while it is still in cache (Conv crops its padded columns).
	 * Called concurrently on disjoint blocks. */
	void (*done)(const void *ctx, int64_t i0, int64_t mc, int64_t j0, int64_t nc);
	const void *done_ctx;
} hal_gemm_args;

/* Copies one k row of a packed panel (nr floats): fixed sizes so that the
 * compiler emits a few vector moves instead of a libc call. */
static inline void hal_gemm_copy_nr(float *restrict d, const float *restrict s, int nr)
{
	switch (nr) {
	case 8: __builtin_memcpy(d, s, 8 * sizeof *d); return;
	case 16: __builtin_memcpy(d, s, 16 * sizeof *d); return;
	case 32: __builtin_memcpy(d, s, 32 * sizeof *d); return;
	default: __builtin_memcpy(d, s, (size_t)nr * sizeof *d);
	}
}

/* y[i] = e->post_s * act(y[i]) + e->post_b for i < n (see ir_epilogue):
 * the activation a fused Conv applies to each output row. */
void hal_epilogue_apply(const ir_epilogue *e, float *y, int64_t n);

/* Bytes of a packed A [M,K] / B [K,N] buffer. */
size_t hal_gemm_packed_a_bytes(int64_t M, int64_t K);
size_t hal_gemm_packed_b_bytes(int64_t K, int64_t N);
/* Packs A (element (i,k) at a[i*lda+k], or a[k*lda+i] when trans) / B
 * (element (k,j) at b[k*ldb+j], or b[j*ldb+k] when trans) into dst, which
 * holds hal_gemm_packed_*_bytes. Plan-time helpers for constant weights. */
void hal_gemm_pack_a(float *dst, const float *a, int64_t lda, int trans, int64_t M, int64_t K);
void hal_gemm_pack_b(float *dst, const float *b, int64_t ldb, int trans, int64_t K, int64_t N);

/* Scratch bytes hal_gemm needs for an M x N x K product. a_packed: A is
 * pre-packed (1) or not (0). b_mode: 0 B packed per task (b or b_pack),
 * 1 pre-packed (b_packed), 2 read in place (b_koff). */
size_t hal_gemm_scratch_bytes(int64_t M, int64_t N, int64_t K, int a_packed, int b_mode);

/* Computes g (see the top). scratch: hal_gemm_scratch_bytes for the same
 * sizes, 64-byte aligned. s provides the thread pool (hal_parallel_for); NULL
 * runs on the calling thread. Never fails: shapes are validated by the
 * caller's infer(). */
void hal_gemm(hal_step *s, const hal_gemm_args *g, void *scratch);

/* NR of the micro-kernel in use (B panel width; at most HAL_GEMM_NR_MAX). */
int hal_gemm_nr(void);
#define HAL_GEMM_NR_MAX 32

/* The micro-kernel in use: "avx512", "avx2" or "generic". */
const char *hal_gemm_isa(void);
/* Whether that kernel is a vector one (AVX2+FMA or AVX-512): the kernels
 * built once per ISA (hal/ops/conv_dw.c, hal/ops/conv_small.c) follow it,
 * so hal_gemm_use_isa("generic") sends them to their baseline build too. */
int hal_gemm_isa_vec(void);
/* F_AVX2 where hal_gemm_isa_vec(), else F_GENERIC; F_GENERIC on CPUs other
 * than x86 (where F_AVX2 is not built). */
#if defined(__x86_64__) || defined(__i386__)
#define HAL_GEMM_PICK(F_GENERIC, F_AVX2) (hal_gemm_isa_vec() ? (F_AVX2) : (F_GENERIC))
#else
#define HAL_GEMM_PICK(F_GENERIC, F_AVX2) (F_GENERIC)
#endif
/* Switches to the named kernel; -1 when this CPU lacks it. For tests and
 * benchmarks only: not thread-safe, invalidates packed buffers. */
int hal_gemm_use_isa(const char *name);

#endif
