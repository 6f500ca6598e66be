/*
 * hal/ops/signal.c - the signal-processing ops of opset 17: DFT, STFT,
 * HannWindow, HammingWindow, BlackmanWindow, MelWeightMatrix.
 *
 * Semantics: the ONNX operator docs. Complex tensors carry a last dim of 2
 * (real, imaginary); real input has a last dim of 1. DFT transforms along
 * `axis` (a signal dim, not the last one), inverse scales by 1/n, onesided
 * keeps bins [0, n/2]; dft_length pads with zeros or truncates. STFT frames
 * a [batch, length, 1|2] signal every frame_step samples, multiplies by the
 * window and transforms each frame. Windows: generalised cosine windows of
 * `size` points, periodic (N = size) or symmetric (N = size - 1):
 *   Hann 0.5 - 0.5 cos(2 pi n / N), Hamming 25/46 - 21/46 cos(2 pi n / N),
 *   Blackman 0.42 - 0.5 cos(2 pi n / N) + 0.08 cos(4 pi n / N).
 * MelWeightMatrix builds the triangular filter bank exactly as the ONNX
 * reference does (integer bin edges from (dft_length + 1) * f / rate).
 * Output shapes depend on the values of size, frame_step, frame_length,
 * dft_length and num_mel_bins, so those are asked for with hal_need_value()
 * (graph inputs become value-keyed).
 * The transforms are direct O(n^2) sums in double (the reference), so
 * lengths stop at DFT_MAX; windows at WINDOW_MAX points.
 */
#include <math.h>
#include <string.h>
#include "hal/ops/ops_util.h"

#define PI 3.14159265358979323846
#define DFT_MAX 65536          /* direct transforms cost n^2 per signal */
#define WINDOW_MAX (1 << 24)

/* One DFT of n points: in[j * is] (complex when cplx, else real) for
 * j < len (zero beyond), out[k] for k < nout as (re, im) pairs at stride os. */
static void dft1(const float *in, int64_t is, int64_t len, int cplx, int64_t n, int inverse,
		 float *out, int64_t os, int64_t nout)
{
	const double sg = inverse ? 1.0 : -1.0;
	for (int64_t k = 0; k < nout; k++) {
		double re = 0, im = 0;
		for (int64_t j = 0; j < len && j < n; j++) {
			double a = sg * 2 * PI * (double)((j * k) % n) / (double)n;
			double c = cos(a), s = sin(a);
			double xr = in[j * is], xi = cplx ? in[j * is + 1] : 0;
			re += xr * c - xi * s;
			im += xr * s + xi * c;
		}
		if (inverse)
			re /= (double)n, im /= (double)n;
		out[k * os] = (float)re;
		out[k * os + 1] = (float)im;
	}
}

/* ---- DFT ---- */

typedef struct dft_params {
	int64_t outer, len, inner, n, nout;   /* input [outer, len, inner, c] */
	int cplx, inverse;
} dft_params;

static int dft_infer(hal_step *s)
{
	const hal_tensor *x = ou_in(s, 0), *dl = ou_in(s, 1);
	int rc = ou_need_float(s, x, "input", 0);
	if (rc)
		return rc;
	const int r = x->rank;
	if (r < 3 || (x->dims[r - 1] != 1 && x->dims[r - 1] != 2))
		return hal_err(s, AIDOS_E_SHAPE, "input must be [batch, ..., 1 or 2]");
	int64_t ax = hal_attr_int(s->node, "axis", 1);
	int a = (int)(ax < 0 ? ax + r : ax);
	if (ax < -r || a < 1 || a > r - 2)
		return hal_err(s, AIDOS_E_INVALID, "attribute axis %lld is not a signal dim of rank %d",
			       (long long)ax, r);
	dft_params *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	p->outer = ou_span(x->dims, 0, a);
	p->len = x->dims[a];
	p->inner = ou_span(x->dims, a + 1, r - 1);
	p->cplx = x->dims[r - 1] == 2;
	p->inverse = hal_attr_int(s->node, "inverse", 0) != 0;
	p->n = p->len;
	if (dl && hal_numel(dl) > 0) {
		if ((rc = ou_const_int(s, dl, "dft_length", &p->n)))
			return rc;
		if (p->n < 1)
			return hal_err(s, AIDOS_E_INVALID, "dft_length %lld must be positive", (long long)p->n);
	}
	if (p->n > DFT_MAX)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "a transform of %lld points (the direct DFT stops at %d)",
			       (long long)p->n, DFT_MAX);
	int onesided = hal_attr_int(s->node, "onesided", 0) != 0;
	p->nout = onesided ? p->n / 2 + 1 : p->n;
	int64_t od[HAL_MAX_RANK];
	memcpy(od, x->dims, sizeof od);
	od[a] = p->nout;
	od[r - 1] = 2;
	s->params = p;
	return ou_set(s, s->out[0], HAL_DT_F32, r, od);
}

static int dft_exec(hal_step *s)
{
	const dft_params *p = s->params;
	const float *x = s->in[0]->data;
	float *y = s->out[0]->data;
	const int64_t c = p->cplx ? 2 : 1;
	for (int64_t o = 0; o < p->outer; o++)
		for (int64_t i = 0; i < p->inner; i++)
			dft1(x + (o * p->len * p->inner + i) * c, p->inner * c, p->len, p->cplx, p->n,
			     p->inverse, y + (o * p->nout * p->inner + i) * 2, p->inner * 2, p->nout);
	return 0;
}

/* ---- STFT ---- */

typedef struct stft_params {
	int64_t batch, len, step, flen, frames, nout;
	int cplx, has_window;
} stft_params;

static int stft_infer(hal_step *s)
{
	const hal_tensor *x = ou_in(s, 0), *st = ou_in(s, 1), *w = ou_in(s, 2), *fl = ou_in(s, 3);
	int rc = ou_need_float(s, x, "signal", 0);
	if (rc)
		return rc;
	if (x->rank != 3 || (x->dims[2] != 1 && x->dims[2] != 2))
		return hal_err(s, AIDOS_E_SHAPE, "signal must be [batch, length, 1 or 2]");
	if (!st)
		return hal_err(s, AIDOS_E_INVALID, "frame_step is required");
	stft_params *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	if ((rc = ou_const_int(s, st, "frame_step", &p->step)))
		return rc;
	p->flen = -1;
	if (fl && hal_numel(fl) > 0 && (rc = ou_const_int(s, fl, "frame_length", &p->flen)))
		return rc;
	if (w && hal_numel(w) > 0) {
		if ((rc = ou_need_float(s, w, "window", 0)))
			return rc;
		if (w->rank != 1 || (p->flen >= 0 && w->dims[0] != p->flen))
			return hal_err(s, AIDOS_E_SHAPE, "window must be 1-D of frame_length values");
		p->flen = w->dims[0];
		p->has_window = 1;
	}
	if (p->flen > DFT_MAX)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "frames of %lld points (the direct DFT stops at %d)",
			       (long long)p->flen, DFT_MAX);
	if (p->flen < 1 || p->flen > x->dims[1] || p->step < 1)
		return hal_err(s, AIDOS_E_INVALID, "frame_length %lld and frame_step %lld must be positive and fit the signal",
			       (long long)p->flen, (long long)p->step);
	p->batch = x->dims[0];
	p->len = x->dims[1];
	p->cplx = x->dims[2] == 2;
	p->frames = (p->len - p->flen) / p->step + 1;
	int onesided = hal_attr_int(s->node, "onesided", 1) != 0;
	p->nout = onesided ? p->flen / 2 + 1 : p->flen;
	s->params = p;
	s->scratch_bytes = (size_t)p->flen * 2 * sizeof(float);
	int64_t od[4] = { p->batch, p->frames, p->nout, 2 };
	return ou_set(s, s->out[0], HAL_DT_F32, 4, od);
}

static int stft_exec(hal_step *s)
{
	const stft_params *p = s->params;
	const float *x = s->in[0]->data, *w = p->has_window ? s->in[2]->data : NULL;
	float *y = s->out[0]->data, *fr = s->scratch;   /* one windowed frame [flen, 2] */
	const int64_t c = p->cplx ? 2 : 1;
	for (int64_t b = 0; b < p->batch; b++)
		for (int64_t f = 0; f < p->frames; f++) {
			const float *src = x + (b * p->len + f * p->step) * c;
			for (int64_t j = 0; j < p->flen; j++) {
				float wv = w ? w[j] : 1.0f;
				fr[j * 2] = src[j * c] * wv;
				fr[j * 2 + 1] = p->cplx ? src[j * c + 1] * wv : 0.0f;
			}
			dft1(fr, 2, p->flen, 1, p->flen, 0, y + (b * p->frames + f) * p->nout * 2, 2, p->nout);
		}
	return 0;
}

/* ---- window functions ---- */

typedef struct win_params {
	double a0, a1, a2;
	int periodic;
} win_params;

static int window_infer(hal_step *s, double a0, double a1, double a2)
{
	const hal_tensor *sz = ou_in(s, 0);
	if (!sz)
		return hal_err(s, AIDOS_E_INVALID, "size is required");
	int64_t n;
	int rc = ou_const_int(s, sz, "size", &n);
	if (rc)
		return rc;
	if (n < 0)
		return hal_err(s, AIDOS_E_INVALID, "size %lld is negative", (long long)n);
	if (n > WINDOW_MAX)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "a window of %lld points (at most %d)", (long long)n, WINDOW_MAX);
	int64_t dt = hal_attr_int(s->node, "output_datatype", HAL_DT_F32);
	if (dt != HAL_DT_F32 && dt != HAL_DT_F64)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "output_datatype %lld (float or double)", (long long)dt);
	win_params *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	p->a0 = a0, p->a1 = a1, p->a2 = a2;
	p->periodic = hal_attr_int(s->node, "periodic", 1) != 0;
	s->params = p;
	return ou_set(s, s->out[0], (int)dt, 1, &n);
}

static int hann_infer(hal_step *s) { return window_infer(s, 0.5, 0.5, 0); }
static int hamming_infer(hal_step *s) { return window_infer(s, 25.0 / 46, 21.0 / 46, 0); }
static int blackman_infer(hal_step *s) { return window_infer(s, 0.42, 0.5, 0.08); }

static int window_exec(hal_step *s)
{
	const win_params *p = s->params;
	hal_tensor *y = s->out[0];
	const int64_t n = y->dims[0];
	const double N = (double)(p->periodic ? n : n - 1);
	for (int64_t i = 0; i < n; i++) {
		double v = N > 0 ? p->a0 - p->a1 * cos(2 * PI * (double)i / N) + p->a2 * cos(4 * PI * (double)i / N)
				 : p->a0 - p->a1 + p->a2;
		if (y->dtype == HAL_DT_F64)
			((double *)y->data)[i] = v;
		else
			((float *)y->data)[i] = (float)v;
	}
	return 0;
}

/* ---- MelWeightMatrix ---- */

typedef struct mel_params {
	int64_t bins, dft, rate;
	double lo, hi;
} mel_params;

static int mel_infer(hal_step *s)
{
	mel_params *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	for (int i = 0; i < 5; i++)
		if (!ou_in(s, i))
			return hal_err(s, AIDOS_E_INVALID, "all five inputs are required");
	int rc;
	if ((rc = ou_const_int(s, s->in[0], "num_mel_bins", &p->bins)) ||
	    (rc = ou_const_int(s, s->in[1], "dft_length", &p->dft)) ||
	    (rc = ou_const_int(s, s->in[2], "sample_rate", &p->rate)) ||
	    (rc = ou_need_const(s, s->in[3], "lower_edge_hertz")) ||
	    (rc = ou_need_const(s, s->in[4], "upper_edge_hertz")))
		return rc;
	if (hal_numel(s->in[3]) != 1 || hal_numel(s->in[4]) != 1)
		return hal_err(s, AIDOS_E_INVALID, "edge frequencies must be one value each");
	p->lo = hal_get_f64(s->in[3], 0);
	p->hi = hal_get_f64(s->in[4], 0);
	if (p->bins < 1 || p->bins > 65536 || p->dft < 1 || p->dft > (INT64_C(1) << 24) || p->rate < 1 ||
	    !(p->lo >= 0 && p->hi >= p->lo && p->hi < 1e12))
		return hal_err(s, AIDOS_E_INVALID, "num_mel_bins, dft_length, sample_rate or edges out of range");
	int64_t dt = hal_attr_int(s->node, "output_datatype", HAL_DT_F32);
	if (dt != HAL_DT_F32 && dt != HAL_DT_F64)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "output_datatype %lld (float or double)", (long long)dt);
	s->params = p;
	s->scratch_bytes = (size_t)(p->bins + 2) * sizeof(int64_t);
	int64_t od[2] = { p->dft / 2 + 1, p->bins };
	return ou_set(s, s->out[0], (int)dt, 2, od);
}

static void mel_put(hal_tensor *y, int64_t i, double v)
{
	if (y->dtype == HAL_DT_F64)
		((double *)y->data)[i] = v;
	else
		((float *)y->data)[i] = (float)v;
}

static int mel_exec(hal_step *s)
{
	const mel_params *p = s->params;
	hal_tensor *y = s->out[0];
	int64_t *edge = s->scratch;   /* [bins + 2] spectrogram bin of each mel point */
	const int64_t nspec = p->dft / 2 + 1, nb = p->bins + 2;
	double lm = 2595 * log10(1 + p->lo / 700), hm = 2595 * log10(1 + p->hi / 700);
	double step = (hm - lm) / (double)nb;
	for (int64_t i = 0; i < nb; i++) {
		double hz = 700 * (pow(10, ((double)i * step + lm) / 2595) - 1);
		edge[i] = (int64_t)floor((double)(p->dft + 1) * hz / (double)p->rate);
	}
	memset(y->data, 0, hal_nbytes(y));
	for (int64_t i = 0; i < p->bins; i++) {
		int64_t l = edge[i], c = edge[i + 1], h = edge[i + 2];
		if (l < 0)
			continue;   /* cannot happen for lower_edge_hertz >= 0 */
		if (c == l) {
			if (c < nspec)
				mel_put(y, c * p->bins + i, 1);
		} else {
			for (int64_t j = l; j <= c && j < nspec; j++)
				mel_put(y, j * p->bins + i, (double)(j - l) / (double)(c - l));
		}
		for (int64_t j = c; j < h && j < nspec; j++)
			mel_put(y, j * p->bins + i, (double)(h - j) / (double)(h - c));
	}
	return 0;
}

static const hal_op op_dft = { "DFT", 17, HAL_OP_PURE, dft_infer, dft_exec };
static const hal_op op_stft = { "STFT", 17, HAL_OP_PURE, stft_infer, stft_exec };
static const hal_op op_hann = { "HannWindow", 17, HAL_OP_PURE, hann_infer, window_exec };
static const hal_op op_hamming = { "HammingWindow", 17, HAL_OP_PURE, hamming_infer, window_exec };
static const hal_op op_blackman = { "BlackmanWindow", 17, HAL_OP_PURE, blackman_infer, window_exec };
static const hal_op op_mel = { "MelWeightMatrix", 17, HAL_OP_PURE, mel_infer, mel_exec };

const hal_op *const hal_ops_signal[] = {
	&op_dft, &op_stft, &op_hann, &op_hamming, &op_blackman, &op_mel, NULL,
};
