/*
 * hal/ops/attention.c - scaled dot-product attention in one step (see
 * hal/ops/attention.h; Vaswani et al., "Attention is all you need", 2017,
 * eq. 1).
 *
 * Per (batch, head), on one thread: the S x T scores Q K^T * scale by
 * hal_gemm reading Q and K in place (rows H*D apart, K transposed through
 * trans_b), the mask added and softmax taken row by row while the scores
 * are in L1/L2, then P V by hal_gemm writing the head's D columns of the
 * output rows in place. The unfused graph writes [B,H,S,T] scores three
 * times and copies Q, K, V and the result through four Transposes, each
 * step a fork/join; here the heads are split across threads once, handed
 * out one at a time, and each worker reuses one head's scratch (so the
 * scratch grows with the workers, at most ATTN_SLOTS, not with B*H).
 */
#include <stdatomic.h>
#include <string.h>
#include "hal/gemm.h"
#include "hal/plan.h"
#include "hal/ops/attention.h"
#include "hal/ops/vmath.h"

/* Scratch for all workers' scores at most this many bytes (else no fusion). */
#define ATTN_SCRATCH_MAX ((size_t)16 << 20)
/* Most workers one step uses: each owns one head's scratch (scores and
 * hal_gemm's), which it reuses for every head it takes. */
#define ATTN_SLOTS 16

typedef struct attn_p {
	int64_t B, H, S, T, D;
	float scale;
	int64_t ms[4];          /* mask strides over (b, h, s, t); 0: broadcast */
	size_t head_bytes;      /* scratch per worker: scores, then hal_gemm's */
	size_t score_bytes;
	int64_t slots;          /* workers' scratch areas: min(B*H, ATTN_SLOTS) */
} attn_p;

static size_t al64(size_t n)
{
	return (n + 63) & ~(size_t)63;
}

static int attn_infer(hal_step *s)
{
	const hal_tensor *q = s->in[0], *k = s->in[1], *v = s->in[2];
	const hal_tensor *m = s->n_in > 3 ? s->in[3] : NULL;
	if (!q || !k || !v || q->dtype != HAL_DT_F32 || k->dtype != HAL_DT_F32 ||
	    v->dtype != HAL_DT_F32 || q->rank != 4 || k->rank != 4 || v->rank != 4)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "q, k, v must be float32 [B,S,H,D]");
	attn_p *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	p->B = q->dims[0], p->S = q->dims[1], p->H = q->dims[2], p->D = q->dims[3];
	p->T = k->dims[1];
	p->scale = hal_attr_float(s->node, "scale", 1.0f);
	for (int i = 0; i < 4; i++)
		if (k->dims[i] != v->dims[i] || (i != 1 && k->dims[i] != q->dims[i]))
			return hal_err(s, AIDOS_E_SHAPE, "q, k, v do not agree");
	if (m) {
		const int64_t want[4] = { p->B, p->H, p->S, p->T };
		if (m->dtype != HAL_DT_F32 || m->rank > 4)
			return hal_err(s, AIDOS_E_UNSUPPORTED, "mask must be float32 of rank <= 4");
		int64_t st = 1;
		for (int i = 3; i >= 0; i--) {
			int mi = i - (4 - m->rank);
			int64_t d = mi >= 0 ? m->dims[mi] : 1;
			if (d != 1 && d != want[i])
				return hal_err(s, AIDOS_E_SHAPE, "mask does not broadcast to the scores");
			p->ms[i] = d == 1 ? 0 : st;
			st *= d;
		}
	}
	size_t g1 = hal_gemm_scratch_bytes(p->S, p->T, p->D, 0, 0);
	size_t g2 = hal_gemm_scratch_bytes(p->S, p->D, p->T, 0, 0);
	p->score_bytes = al64((size_t)(p->S * p->T) * sizeof(float));
	p->head_bytes = p->score_bytes + al64(g1 > g2 ? g1 : g2);
	p->slots = p->B * p->H < ATTN_SLOTS ? p->B * p->H : ATTN_SLOTS;
	if (p->head_bytes * (size_t)p->slots > ATTN_SCRATCH_MAX)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "scores too large to keep per worker");
	int64_t od[4] = { p->B, p->S, p->H, p->D };
	hal_tensor_set_shape(s->out[0], HAL_DT_F32, 4, od);
	s->scratch_bytes = p->head_bytes * (size_t)p->slots;
	s->params = p;
	return 0;
}

struct attn_job {
	const attn_p *p;
	const float *q, *k, *v, *m;
	float *o;
	char *scratch;
	atomic_llong next;   /* next head; relaxed: the fork/join orders the data */
};

/* One worker with scratch area w0 (a worker handed several areas uses the
 * first): takes heads (index b*H + h) from the shared counter until none
 * is left, each on this thread. */
static void attn_heads(void *arg, int64_t w0, int64_t w1)
{
	struct attn_job *j = arg;
	const attn_p *p = j->p;
	const int64_t hd = p->H * p->D;
	float *sc = (float *)(j->scratch + (size_t)w0 * p->head_bytes);   /* [S, T] */
	void *gs = (char *)sc + p->score_bytes;
	int64_t x;
	(void)w1;
	while ((x = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) < p->B * p->H) {
		int64_t b = x / p->H, h = x % p->H;
		const float *q = j->q + b * p->S * hd + h * p->D;   /* row s at q + s*hd */
		const float *k = j->k + b * p->T * hd + h * p->D;
		const float *v = j->v + b * p->T * hd + h * p->D;
		hal_gemm_args g = {
			.M = p->S, .N = p->T, .K = p->D, .a = q, .lda = hd,
			.b = k, .ldb = hd, .trans_b = 1,
			.c = sc, .ldc = p->T, .alpha = p->scale, .beta = 0.0f,
		};
		hal_gemm(NULL, &g, gs);
		if (j->m)
			for (int64_t r = 0; r < p->S; r++) {
				const float *mr = j->m + b * p->ms[0] + h * p->ms[1] + r * p->ms[2];
				float *row = sc + r * p->T;
				if (p->ms[3])
					for (int64_t t = 0; t < p->T; t++)
						row[t] += mr[t];
				else
					for (int64_t t = 0; t < p->T; t++)
						row[t] += mr[0];
			}
		hal_vm_softmax_rows(sc, sc, p->S, p->T);
		hal_gemm_args g2 = {
			.M = p->S, .N = p->D, .K = p->T, .a = sc, .lda = p->T,
			.b = v, .ldb = hd, .c = j->o + b * p->S * hd + h * p->D, .ldc = hd,
			.alpha = 1.0f, .beta = 0.0f,
		};
		hal_gemm(NULL, &g2, gs);
	}
}

static int attn_exec(hal_step *s)
{
	const attn_p *p = s->params;
	const hal_tensor *m = s->n_in > 3 ? s->in[3] : NULL;
	struct attn_job j = {
		.p = p, .q = s->in[0]->data, .k = s->in[1]->data, .v = s->in[2]->data,
		.m = m ? m->data : NULL, .o = s->out[0]->data, .scratch = s->scratch,
	};
	int64_t w = s->plan && s->plan->tp ? hal_threadpool_size(s->plan->tp) : 1;
	atomic_init(&j.next, 0);
	hal_parallel_for(s, w < p->slots ? w : p->slots, 1, attn_heads, &j);
	return 0;
}

const hal_op hal_op_attention = { "FusedAttention", 1, 0, attn_infer, attn_exec };
