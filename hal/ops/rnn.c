/*
 * hal/ops/rnn.c - LSTM (ONNX opsets 1-14: forward, reverse, bidirectional,
 * layout 0 and 1, sequence_lens, initial states, peepholes, clip,
 * input_forget, the ONNX activation functions), and GRU and RNN (below).
 *
 * Per direction: the input projection X*W^T of every time step is one GEMM
 * ([seq*batch, I] x [I, 4H]) up front; then each step adds H_{t-1}*R^T (a
 * [batch, H] x [H, 4H] GEMM), the biases and peepholes, and applies
 *   i = f(.+P_i*C_{t-1}), f = f(.+P_f*C_{t-1}) (1-i with input_forget),
 *   c = g(.), C_t = f*C_{t-1} + i*c, o = f(.+P_o*C_t), H_t = o*h(C_t)
 * with clip applied to each gate's pre-activation (as ONNX Runtime does).
 * Gate order in W, R, B: i, o, f, c; in P: i, o, f. Batch entries whose
 * sequence_lens is shorter stop updating (Y is zero past the end; Y_h, Y_c
 * hold the last valid state); the reverse direction runs each entry from its
 * own last valid step. The fast path uses hal_gemm with W^T and R^T packed
 * at plan time when constant; the reference uses plain dot products.
 */
#include <ctype.h>
#include <math.h>
#include <string.h>
#include "hal/gemm.h"
#include "hal/hal.h"

#define MAXD 2
#define ALIGN64(n) (((n) + 63) & ~(size_t)63)

enum act_kind {
	ACT_SIGMOID, ACT_TANH, ACT_RELU, ACT_AFFINE, ACT_LEAKYRELU, ACT_THRELU,
	ACT_SCALEDTANH, ACT_HARDSIGMOID, ACT_ELU, ACT_SOFTSIGN, ACT_SOFTPLUS,
};

struct act {
	int kind;
	float a, b;
};

static const struct {
	const char *name;
	int kind, n_ab;   /* how many of alpha, beta it takes */
	float a, b;       /* defaults of the matching ONNX operators */
} act_names[] = {
	{ "sigmoid", ACT_SIGMOID, 0, 0, 0 },
	{ "tanh", ACT_TANH, 0, 0, 0 },
	{ "relu", ACT_RELU, 0, 0, 0 },
	{ "affine", ACT_AFFINE, 2, 1.0f, 0.0f },
	{ "leakyrelu", ACT_LEAKYRELU, 1, 0.01f, 0 },
	{ "thresholdedrelu", ACT_THRELU, 1, 1.0f, 0 },
	{ "scaledtanh", ACT_SCALEDTANH, 2, 1.0f, 1.0f },
	{ "hardsigmoid", ACT_HARDSIGMOID, 2, 0.2f, 0.5f },
	{ "elu", ACT_ELU, 1, 1.0f, 0 },
	{ "softsign", ACT_SOFTSIGN, 0, 0, 0 },
	{ "softplus", ACT_SOFTPLUS, 0, 0, 0 },
};

static float act_apply(const struct act *f, float x)
{
	switch (f->kind) {
	case ACT_SIGMOID: return 1.0f / (1.0f + expf(-x));
	case ACT_TANH: return tanhf(x);
	case ACT_RELU: return x > 0 ? x : 0.0f;
	case ACT_AFFINE: return f->a * x + f->b;
	case ACT_LEAKYRELU: return x >= 0 ? x : f->a * x;
	case ACT_THRELU: return x > f->a ? x : 0.0f;
	case ACT_SCALEDTANH: return f->a * tanhf(f->b * x);
	case ACT_HARDSIGMOID: return fmaxf(0.0f, fminf(1.0f, f->a * x + f->b));
	case ACT_ELU: return x >= 0 ? x : f->a * (expf(x) - 1.0f);
	case ACT_SOFTSIGN: return x / (1.0f + fabsf(x));
	default: return x > 0 ? x + log1pf(expf(-x)) : log1pf(expf(x));
	}
}

static int name_eq(const char *a, const char *b)
{
	for (; *a && *b; a++, b++)
		if (tolower((unsigned char)*a) != tolower((unsigned char)*b))
			return 0;
	return *a == *b;
}

struct lstm {
	int64_t seq, batch, in, hid, ndir;
	int layout, input_forget, reverse_only, fast;
	float clip;                       /* <= 0: none */
	struct act act[MAXD][3];          /* f, g, h per direction */
	const float *wp[MAXD], *rp[MAXD]; /* packed W^T [I,4H], R^T [H,4H], or NULL */
	size_t o_xw, o_hr, o_h, o_c, o_gemm;  /* scratch offsets (bytes) */
};

static const hal_tensor *in_opt(const hal_step *s, int i)
{
	return i < s->n_in ? s->in[i] : NULL;
}

static hal_tensor *out_opt(const hal_step *s, int i)
{
	return i < s->n_out ? s->out[i] : NULL;
}

static int check(hal_step *s, const hal_tensor *t, const char *name, int rank,
		 int64_t d0, int64_t d1, int64_t d2)
{
	int64_t d[3] = { d0, d1, d2 };
	if (!t)
		return 0;
	if (t->dtype != HAL_DT_F32)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "%s: only float32 is supported", name);
	if (t->rank != rank)
		return hal_err(s, AIDOS_E_SHAPE, "%s has rank %d, expected %d", name,
			       (int)t->rank, rank);
	for (int i = 0; i < rank; i++)
		if (t->dims[i] != d[i])
			return hal_err(s, AIDOS_E_SHAPE, "%s dim %d is %lld, expected %lld", name, i,
				       (long long)t->dims[i], (long long)d[i]);
	return 0;
}

/* The activations attribute: nact functions per direction (LSTM 3: f, g, h;
 * GRU 2: f, g; RNN 1: f), defaulting to defaults[]. */
static int parse_acts_n(hal_step *s, int64_t ndir, struct act (*out)[3], int nact,
			const char *const *defaults)
{
	int n = hal_attr_strings_n(s->node, "activations");
	const float *al = NULL, *be = NULL;
	int nal = hal_attr_floats(s->node, "activation_alpha", &al);
	int nbe = hal_attr_floats(s->node, "activation_beta", &be);
	if (n && n != nact && n != nact * ndir)
		return hal_err(s, AIDOS_E_INVALID, "activations has %d entries", n);
	int ia = 0, ib = 0;
	for (int d = 0; d < ndir; d++)
		for (int k = 0; k < nact; k++) {
			const char *nm = n ? hal_attr_strings_at(s->node, "activations",
								  (d * nact + k) % n) : defaults[k];
			size_t i;
			for (i = 0; i < sizeof act_names / sizeof act_names[0]; i++)
				if (nm && name_eq(nm, act_names[i].name))
					break;
			if (i == sizeof act_names / sizeof act_names[0])
				return hal_err(s, AIDOS_E_UNSUPPORTED, "activation '%s'",
					       nm ? nm : "?");
			struct act *a = &out[d][k];
			a->kind = act_names[i].kind;
			a->a = act_names[i].a;
			a->b = act_names[i].b;
			/* alpha/beta are consumed in order by the functions that
			 * take them (ONNX Runtime's reading of the spec). */
			if (act_names[i].n_ab >= 1 && ia < nal)
				a->a = al[ia++];
			if (act_names[i].n_ab >= 2 && ib < nbe)
				a->b = be[ib++];
		}
	return 0;
}

static int parse_acts(hal_step *s, struct lstm *p)
{
	static const char *const defaults[3] = { "Sigmoid", "Tanh", "Tanh" };
	return parse_acts_n(s, p->ndir, p->act, 3, defaults);
}

/* The direction and layout attributes of LSTM, GRU and RNN, and the
 * sizes they give X ([seq, batch, input], layout 1: [batch, seq, input]).
 * Errors: AIDOS_E_INVALID (attribute value). */
static int rnn_geometry(hal_step *s, const hal_tensor *x, int64_t *ndir, int *reverse_only, int *layout,
			int64_t *seq, int64_t *batch, int64_t *in)
{
	const char *dir = hal_attr_str(s->node, "direction", "forward");
	if (!strcmp(dir, "forward") || !dir[0])
		*ndir = 1;
	else if (!strcmp(dir, "reverse"))
		*ndir = 1, *reverse_only = 1;
	else if (!strcmp(dir, "bidirectional"))
		*ndir = 2;
	else
		return hal_err(s, AIDOS_E_INVALID, "direction '%s'", dir);
	*layout = (int)hal_attr_int(s->node, "layout", 0);
	if (*layout != 0 && *layout != 1)
		return hal_err(s, AIDOS_E_INVALID, "layout %d", *layout);
	*seq = x->dims[*layout ? 1 : 0];
	*batch = x->dims[*layout ? 0 : 1];
	*in = x->dims[2];
	return 0;
}

static int lstm_infer(hal_step *s)
{
	const hal_tensor *x = in_opt(s, 0), *w = in_opt(s, 1), *r = in_opt(s, 2);
	const hal_tensor *b = in_opt(s, 3), *sl = in_opt(s, 4), *h0 = in_opt(s, 5),
			 *c0 = in_opt(s, 6), *pp = in_opt(s, 7);
	if (!x || !w || !r)
		return hal_err(s, AIDOS_E_INVALID, "X, W and R are required");
	if (x->dtype != HAL_DT_F32 || x->rank != 3)
		return hal_err(s, x->dtype != HAL_DT_F32 ? AIDOS_E_UNSUPPORTED : AIDOS_E_SHAPE,
			       "X must be float32 [seq, batch, input]");
	struct lstm *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	int rc = rnn_geometry(s, x, &p->ndir, &p->reverse_only, &p->layout, &p->seq, &p->batch, &p->in);
	if (rc)
		return rc;
	p->hid = hal_attr_int(s->node, "hidden_size", w->rank == 3 ? w->dims[1] / 4 : 0);
	p->clip = hal_attr_has(s->node, "clip") ? hal_attr_float(s->node, "clip", 0) : 0;
	p->input_forget = hal_attr_int(s->node, "input_forget", 0) != 0;
	int64_t D = p->ndir, H = p->hid, B = p->batch;
	int64_t sb0 = p->layout ? B : D, sb1 = p->layout ? D : B;
	if (H <= 0)
		return hal_err(s, AIDOS_E_INVALID, "hidden_size must be > 0");
	if ((rc = check(s, w, "W", 3, D, 4 * H, p->in)) ||
	    (rc = check(s, r, "R", 3, D, 4 * H, H)) ||
	    (rc = check(s, b, "B", 2, D, 8 * H, 0)) ||
	    (rc = check(s, h0, "initial_h", 3, sb0, sb1, H)) ||
	    (rc = check(s, c0, "initial_c", 3, sb0, sb1, H)) ||
	    (rc = check(s, pp, "P", 2, D, 3 * H, 0)) || (rc = parse_acts(s, p)))
		return rc;
	if (sl && (sl->dtype != HAL_DT_I32 || hal_numel(sl) != B))
		return hal_err(s, AIDOS_E_SHAPE, "sequence_lens must be int32 [%lld]", (long long)B);
	hal_tensor *y = out_opt(s, 0), *yh = out_opt(s, 1), *yc = out_opt(s, 2);
	int64_t yd[4] = { p->seq, D, B, H };
	if (p->layout) {
		yd[0] = B;
		yd[1] = p->seq;
		yd[2] = D;
	}
	if (y)
		hal_tensor_set_shape(y, HAL_DT_F32, 4, yd);
	int64_t hd[3] = { sb0, sb1, H };
	if (yh)
		hal_tensor_set_shape(yh, HAL_DT_F32, 3, hd);
	if (yc)
		hal_tensor_set_shape(yc, HAL_DT_F32, 3, hd);

	p->fast = !hal_use_reference;
	int64_t rows = p->seq * B;
	size_t g = 0;
	if (p->fast) {
		for (int d = 0; d < D; d++) {
			if (w->is_const && w->data && p->in > 0) {
				float *wp = hal_step_alloc(s, hal_gemm_packed_b_bytes(p->in, 4 * H));
				if (!wp)
					return AIDOS_E_NOMEM;
				hal_gemm_pack_b(wp, (const float *)w->data + d * 4 * H * p->in, p->in, 1,
						p->in, 4 * H);
				p->wp[d] = wp;
			}
			if (r->is_const && r->data) {
				float *rp = hal_step_alloc(s, hal_gemm_packed_b_bytes(H, 4 * H));
				if (!rp)
					return AIDOS_E_NOMEM;
				hal_gemm_pack_b(rp, (const float *)r->data + d * 4 * H * H, H, 1, H,
						4 * H);
				p->rp[d] = rp;
			}
		}
		size_t g1 = hal_gemm_scratch_bytes(rows, 4 * H, p->in, 0, p->wp[0] != NULL);
		size_t g2 = hal_gemm_scratch_bytes(B, 4 * H, H, 0, p->rp[0] != NULL);
		g = g1 > g2 ? g1 : g2;
	}
	p->o_xw = 0;
	p->o_hr = p->o_xw + ALIGN64((size_t)(rows * 4 * H) * sizeof(float));
	p->o_h = p->o_hr + ALIGN64((size_t)(B * 4 * H) * sizeof(float));
	p->o_c = p->o_h + ALIGN64((size_t)(B * H) * sizeof(float));
	p->o_gemm = p->o_c + ALIGN64((size_t)(B * H) * sizeof(float));
	s->scratch_bytes = p->o_gemm + g;
	s->params = p;
	return 0;
}

/* out[r, j] = sum_k a[r*lda + k] * m[j*K + k]: rows x N, m is [N, K]. */
static void mul_bt(hal_step *s, const struct lstm *p, float *out, const float *a, int64_t rows,
		   int64_t K, int64_t N, const float *m, const float *mp, void *scratch)
{
	if (p->fast) {
		hal_gemm_args g = {
			.M = rows, .N = N, .K = K, .a = a, .lda = K,
			.b = m, .ldb = K, .trans_b = 1, .b_packed = mp,
			.c = out, .ldc = N, .alpha = 1.0f, .beta = 0.0f,
		};
		hal_gemm(s, &g, scratch);
		return;
	}
	for (int64_t r = 0; r < rows; r++)
		for (int64_t j = 0; j < N; j++) {
			float acc = 0;
			for (int64_t k = 0; k < K; k++)
				acc += a[r * K + k] * m[j * K + k];
			out[r * N + j] = acc;
		}
}

static float clipv(float v, float c)
{
	return c > 0 ? fminf(c, fmaxf(-c, v)) : v;
}

static int lstm_exec(hal_step *s)
{
	const struct lstm *p = s->params;
	const hal_tensor *bt = in_opt(s, 3), *slt = in_opt(s, 4), *h0t = in_opt(s, 5),
			 *c0t = in_opt(s, 6), *pt = in_opt(s, 7);
	hal_tensor *yt = out_opt(s, 0), *yht = out_opt(s, 1), *yct = out_opt(s, 2);
	const float *x = s->in[0]->data, *w = s->in[1]->data, *r = s->in[2]->data;
	const int32_t *sl = slt ? slt->data : NULL;
	int64_t H = p->hid, B = p->batch, T = p->seq, D = p->ndir, I = p->in;
	char *sc = s->scratch;
	float *xw = (float *)(sc + p->o_xw), *hr = (float *)(sc + p->o_hr);
	float *h = (float *)(sc + p->o_h), *c = (float *)(sc + p->o_c);
	void *gs = sc + p->o_gemm;
	float *y = yt ? yt->data : NULL;
	if (y && sl)
		memset(y, 0, (size_t)(T * D * B * H) * sizeof *y);

	for (int64_t d = 0; d < D; d++) {
		int rev = p->reverse_only || d == 1;
		const struct act *af = &p->act[d][0], *ag = &p->act[d][1], *ah = &p->act[d][2];
		const float *wb = bt ? (const float *)bt->data + d * 8 * H : NULL;
		const float *rb = wb ? wb + 4 * H : NULL;
		const float *pi = pt ? (const float *)pt->data + d * 3 * H : NULL;
		const float *po = pi ? pi + H : NULL, *pf = pi ? pi + 2 * H : NULL;
		/* rows of X in memory order: (t, b) for layout 0, (b, t) for 1 */
		mul_bt(s, p, xw, x, T * B, I, 4 * H, w + d * 4 * H * I, p->wp[d], gs);
		for (int64_t b = 0; b < B; b++)
			for (int64_t k = 0; k < H; k++) {
				int64_t si = p->layout ? (b * D + d) * H + k : (d * B + b) * H + k;
				h[b * H + k] = h0t ? ((const float *)h0t->data)[si] : 0.0f;
				c[b * H + k] = c0t ? ((const float *)c0t->data)[si] : 0.0f;
			}
		for (int64_t step = 0; step < T; step++) {
			mul_bt(s, p, hr, h, B, H, 4 * H, r + d * 4 * H * H, p->rp[d], gs);
			for (int64_t b = 0; b < B; b++) {
				int64_t len = sl ? sl[b] : T;
				len = len < 0 ? 0 : len > T ? T : len;
				if (step >= len)
					continue;
				int64_t t = rev ? len - 1 - step : step;
				const float *g = xw + (p->layout ? b * T + t : t * B + b) * 4 * H;
				const float *q = hr + b * 4 * H;
				float *hb = h + b * H, *cb = c + b * H;
				for (int64_t k = 0; k < H; k++) {
					float gi = g[k] + q[k], go = g[H + k] + q[H + k];
					float gf = g[2 * H + k] + q[2 * H + k];
					float gc = g[3 * H + k] + q[3 * H + k];
					if (wb) {
						gi += wb[k] + rb[k];
						go += wb[H + k] + rb[H + k];
						gf += wb[2 * H + k] + rb[2 * H + k];
						gc += wb[3 * H + k] + rb[3 * H + k];
					}
					float cp = cb[k];
					if (pi) {
						gi += pi[k] * cp;
						gf += pf[k] * cp;
					}
					float iv = act_apply(af, clipv(gi, p->clip));
					float fv = p->input_forget ? 1.0f - iv
								   : act_apply(af, clipv(gf, p->clip));
					float cv = act_apply(ag, clipv(gc, p->clip));
					float cn = fv * cp + iv * cv;
					if (po)
						go += po[k] * cn;
					float ov = act_apply(af, clipv(go, p->clip));
					cb[k] = cn;
					hb[k] = ov * act_apply(ah, cn);
				}
				if (y) {
					float *yo = y + (p->layout ? ((b * T + t) * D + d) * H
								   : ((t * D + d) * B + b) * H);
					memcpy(yo, hb, (size_t)H * sizeof *yo);
				}
			}
		}
		for (int64_t b = 0; b < B; b++) {
			int64_t o = p->layout ? (b * D + d) * H : (d * B + b) * H;
			if (yht)
				memcpy((float *)yht->data + o, h + b * H, (size_t)H * sizeof(float));
			if (yct)
				memcpy((float *)yct->data + o, c + b * H, (size_t)H * sizeof(float));
		}
	}
	return 0;
}

const hal_op hal_op_lstm = { "LSTM", 1, HAL_OP_PURE, lstm_infer, lstm_exec };

/* ---- GRU and RNN (opsets 7-14): scalar reference ----
 * GRU, gates z, r, h in W [D, 3H, I], R [D, 3H, H], B [D, 6H] (Wb then Rb):
 *   z = f(x W_z + h R_z + b), r = f(x W_r + h R_r + b),
 *   h~ = g(x W_h + (r * h) R_h + Rb_h + Wb_h), or with linear_before_reset
 *   h~ = g(x W_h + r * (h R_h + Rb_h) + Wb_h); H_t = (1 - z) * h~ + z * h.
 * RNN: H_t = f(x W + h R + Wb + Rb), W [D, H, I], R [D, H, H], B [D, 2H].
 * Direction, layout, sequence_lens, initial_h and clip as for LSTM above. */

struct rnn {
	int64_t seq, batch, in, hid, ndir, gates;
	int layout, reverse_only, lbr;
	float clip;
	struct act act[MAXD][3];
};

static int gru_rnn_infer(hal_step *s, int gates)
{
	const hal_tensor *x = in_opt(s, 0), *w = in_opt(s, 1), *r = in_opt(s, 2);
	const hal_tensor *b = in_opt(s, 3), *sl = in_opt(s, 4), *h0 = in_opt(s, 5);
	if (!x || !w || !r)
		return hal_err(s, AIDOS_E_INVALID, "X, W and R are required");
	if (x->dtype != HAL_DT_F32 || x->rank != 3)
		return hal_err(s, x->dtype != HAL_DT_F32 ? AIDOS_E_UNSUPPORTED : AIDOS_E_SHAPE,
			       "X must be float32 [seq, batch, input]");
	struct rnn *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	p->gates = gates;
	int rc = rnn_geometry(s, x, &p->ndir, &p->reverse_only, &p->layout, &p->seq, &p->batch, &p->in);
	if (rc)
		return rc;
	p->hid = hal_attr_int(s->node, "hidden_size", w->rank == 3 ? w->dims[1] / gates : 0);
	p->clip = hal_attr_has(s->node, "clip") ? hal_attr_float(s->node, "clip", 0) : 0;
	p->lbr = hal_attr_int(s->node, "linear_before_reset", 0) != 0;
	int64_t D = p->ndir, H = p->hid, B = p->batch, G = gates;
	int64_t sb0 = p->layout ? B : D, sb1 = p->layout ? D : B;
	static const char *const gru_def[2] = { "Sigmoid", "Tanh" }, *const rnn_def[1] = { "Tanh" };
	if (H <= 0 || H > (INT64_C(1) << 24))
		return hal_err(s, AIDOS_E_INVALID, "hidden_size must be in (0, 2^24]");
	if ((rc = check(s, w, "W", 3, D, G * H, p->in)) || (rc = check(s, r, "R", 3, D, G * H, H)) ||
	    (rc = check(s, b, "B", 2, D, 2 * G * H, 0)) ||
	    (rc = check(s, h0, "initial_h", 3, sb0, sb1, H)) ||
	    (rc = parse_acts_n(s, D, p->act, G == 3 ? 2 : 1, G == 3 ? gru_def : rnn_def)))
		return rc;
	if (sl && (sl->dtype != HAL_DT_I32 || hal_numel(sl) != B))
		return hal_err(s, AIDOS_E_SHAPE, "sequence_lens must be int32 [%lld]", (long long)B);
	hal_tensor *y = out_opt(s, 0), *yh = out_opt(s, 1);
	int64_t yd[4] = { p->seq, D, B, H };
	if (p->layout) {
		yd[0] = B;
		yd[1] = p->seq;
		yd[2] = D;
	}
	if (y)
		hal_tensor_set_shape(y, HAL_DT_F32, 4, yd);
	int64_t hd[3] = { sb0, sb1, H };
	if (yh)
		hal_tensor_set_shape(yh, HAL_DT_F32, 3, hd);
	/* scratch: h [B, H], gates [3H] */
	s->scratch_bytes = (size_t)(B * H + 3 * H) * sizeof(float);
	s->params = p;
	return 0;
}

static int gru_infer(hal_step *s) { return gru_rnn_infer(s, 3); }
static int rnn_infer(hal_step *s) { return gru_rnn_infer(s, 1); }

static float dotf(const float *a, const float *b, int64_t n)
{
	float acc = 0;
	for (int64_t i = 0; i < n; i++)
		acc += a[i] * b[i];
	return acc;
}

static int gru_rnn_exec(hal_step *s)
{
	const struct rnn *p = s->params;
	const hal_tensor *bt = in_opt(s, 3), *slt = in_opt(s, 4), *h0t = in_opt(s, 5);
	hal_tensor *yt = out_opt(s, 0), *yht = out_opt(s, 1);
	const float *x = s->in[0]->data, *w = s->in[1]->data, *r = s->in[2]->data;
	const int32_t *sl = slt ? slt->data : NULL;
	const int64_t H = p->hid, B = p->batch, T = p->seq, D = p->ndir, I = p->in, G = p->gates;
	float *h = s->scratch, *gv = h + B * H;   /* [B, H], [3H] */
	float *y = yt ? yt->data : NULL;
	if (y && sl)
		memset(y, 0, (size_t)(T * D * B * H) * sizeof *y);
	for (int64_t d = 0; d < D; d++) {
		const int rev = p->reverse_only || d == 1;
		const float *W = w + d * G * H * I, *R = r + d * G * H * H;
		const float *wb = bt ? (const float *)bt->data + d * 2 * G * H : NULL;
		const float *rb = wb ? wb + G * H : NULL;
		const struct act *af = &p->act[d][0], *ag = &p->act[d][1];
		for (int64_t b = 0; b < B; b++)
			for (int64_t k = 0; k < H; k++) {
				int64_t si = p->layout ? (b * D + d) * H + k : (d * B + b) * H + k;
				h[b * H + k] = h0t ? ((const float *)h0t->data)[si] : 0.0f;
			}
		for (int64_t b = 0; b < B; b++) {
			int64_t len = sl ? sl[b] : T;
			len = len < 0 ? 0 : len > T ? T : len;
			float *hb = h + b * H;
			for (int64_t step = 0; step < len; step++) {
				int64_t t = rev ? len - 1 - step : step;
				const float *xt = x + (p->layout ? b * T + t : t * B + b) * I;
				if (G == 1) {
					for (int64_t k = 0; k < H; k++)
						gv[k] = dotf(xt, W + k * I, I) + dotf(hb, R + k * H, H) +
							(wb ? wb[k] + rb[k] : 0.0f);
					for (int64_t k = 0; k < H; k++)
						hb[k] = act_apply(af, clipv(gv[k], p->clip));
				} else {
					float *z = gv, *rr = gv + H, *hh = gv + 2 * H;
					for (int64_t k = 0; k < 2 * H; k++)
						gv[k] = act_apply(af, clipv(dotf(xt, W + k * I, I) +
									    dotf(hb, R + k * H, H) +
									    (wb ? wb[k] + rb[k] : 0.0f), p->clip));
					for (int64_t k = 0; k < H; k++) {
						const float *rh = R + (2 * H + k) * H;
						float xpart = dotf(xt, W + (2 * H + k) * I, I) + (wb ? wb[2 * H + k] : 0.0f);
						float rbh = rb ? rb[2 * H + k] : 0.0f, hpart;
						if (p->lbr) {
							hpart = rr[k] * (dotf(hb, rh, H) + rbh);
						} else {
							hpart = rbh;
							for (int64_t q = 0; q < H; q++)
								hpart += rr[q] * hb[q] * rh[q];
						}
						hh[k] = act_apply(ag, clipv(xpart + hpart, p->clip));
					}
					for (int64_t k = 0; k < H; k++)
						hb[k] = (1 - z[k]) * hh[k] + z[k] * hb[k];
				}
				if (y) {
					float *yo = y + (p->layout ? ((b * T + t) * D + d) * H
								   : ((t * D + d) * B + b) * H);
					memcpy(yo, hb, (size_t)H * sizeof *yo);
				}
			}
		}
		for (int64_t b = 0; b < B; b++) {
			int64_t o = p->layout ? (b * D + d) * H : (d * B + b) * H;
			if (yht)
				memcpy((float *)yht->data + o, h + b * H, (size_t)H * sizeof(float));
		}
	}
	return 0;
}

const hal_op hal_op_gru = { "GRU", 7, HAL_OP_PURE, gru_infer, gru_rnn_exec };
const hal_op hal_op_rnn = { "RNN", 7, HAL_OP_PURE, rnn_infer, gru_rnn_exec };
