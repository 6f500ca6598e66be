/*
 * hal/ops/vision.c - sampling ops of detection and spatial-transformer
 * models: GridSample (opset 16, 2-D) and RoiAlign (opsets 10 and 16).
 *
 * GridSample follows PyTorch's grid_sampler_2d, which the ONNX op mirrors
 * and the ONNX test data were computed with: a grid point (x, y) in [-1, 1]
 * is unnormalised to pixel coordinates (align_corners: -1 and 1 are the
 * centres of the corner pixels; otherwise their outer edges). For bilinear
 * and nearest the coordinate is then clipped (border) or reflected about
 * the image edges (reflection) before sampling with zeros outside; bicubic
 * (Keys, A = -0.75) applies the padding rule to each of its 16 taps.
 * Nearest rounds half to even.
 * RoiAlign follows the ONNX reference (He et al., Mask R-CNN): each output
 * bin averages (or takes the max of) sampling_ratio^2 bilinear samples
 * (adaptive: ceil(roi size / bins)); samples more than one pixel outside the
 * image are 0, samples near the edge are clamped into it.
 * float32 only; scalar reference loops.
 */
#include <math.h>
#include <string.h>
#include "hal/ops/ops_util.h"

/* ---- GridSample ---- */

enum { GS_BILINEAR, GS_NEAREST, GS_BICUBIC };
enum { GS_ZEROS, GS_BORDER, GS_REFLECTION };

typedef struct gs_params {
	int mode, pad, align;
	int64_t n, c, h, w, oh, ow;
} gs_params;

static int gs_infer(hal_step *s)
{
	const hal_tensor *x = ou_in(s, 0), *g = ou_in(s, 1);
	int rc = ou_need_float(s, x, "X", 0);
	if (rc || (rc = ou_need_float(s, g, "grid", 0)))
		return rc;
	if (x->rank != 4 || g->rank != 4 || g->dims[0] != x->dims[0] || g->dims[3] != 2)
		return hal_err(s, AIDOS_E_UNSUPPORTED, "X must be [N,C,H,W] and grid [N,Ho,Wo,2] (2-D only)");
	gs_params *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	const char *m = hal_attr_str(s->node, "mode", "bilinear");
	const char *pm = hal_attr_str(s->node, "padding_mode", "zeros");
	if (!strcmp(m, "bilinear"))
		p->mode = GS_BILINEAR;
	else if (!strcmp(m, "nearest"))
		p->mode = GS_NEAREST;
	else if (!strcmp(m, "bicubic"))
		p->mode = GS_BICUBIC;
	else
		return hal_err(s, AIDOS_E_INVALID, "attribute mode '%s' (bilinear, nearest, bicubic)", m);
	if (!strcmp(pm, "zeros"))
		p->pad = GS_ZEROS;
	else if (!strcmp(pm, "border"))
		p->pad = GS_BORDER;
	else if (!strcmp(pm, "reflection"))
		p->pad = GS_REFLECTION;
	else
		return hal_err(s, AIDOS_E_INVALID, "attribute padding_mode '%s' (zeros, border, reflection)", pm);
	p->align = hal_attr_int(s->node, "align_corners", 0) != 0;
	p->n = x->dims[0], p->c = x->dims[1], p->h = x->dims[2], p->w = x->dims[3];
	p->oh = g->dims[1], p->ow = g->dims[2];
	s->params = p;
	int64_t od[4] = { p->n, p->c, p->oh, p->ow };
	return ou_set(s, s->out[0], x->dtype, 4, od);
}

/* Reflects x into [lo2/2, hi2/2] (bounds given doubled, as PyTorch does). */
static double gs_reflect(double x, double lo2, double hi2)
{
	if (lo2 == hi2)
		return 0;
	double mn = lo2 / 2, span = (hi2 - lo2) / 2;
	x = fabs(x - mn);
	double extra = fmod(x, span);
	int64_t flips = (int64_t)floor(x / span);
	return flips % 2 == 0 ? extra + mn : span - extra + mn;
}

static double gs_clip(double x, int64_t size)
{
	return x < 0 ? 0 : x > (double)(size - 1) ? (double)(size - 1) : x;
}

/* The padding rule applied to a coordinate along a dim of `size`. */
static double gs_coord(const gs_params *p, double x, int64_t size)
{
	if (p->pad == GS_BORDER)
		return gs_clip(x, size);
	if (p->pad == GS_REFLECTION) {
		x = p->align ? gs_reflect(x, 0, 2.0 * (double)(size - 1))
			     : gs_reflect(x, -1, 2.0 * (double)size - 1);
		return gs_clip(x, size);
	}
	return x;
}

static double gs_unnorm(const gs_params *p, double g, int64_t size)
{
	return p->align ? (g + 1) / 2 * (double)(size - 1) : ((g + 1) * (double)size - 1) / 2;
}

static double gs_px(const float *img, const gs_params *p, int64_t y, int64_t x)
{
	return (y >= 0 && y < p->h && x >= 0 && x < p->w) ? img[y * p->w + x] : 0.0;
}

static void gs_cubic_coeffs(double t, double c[4])
{
	const double A = -0.75;
	double x = t + 1;
	c[0] = ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
	x = t;
	c[1] = ((A + 2) * x - (A + 3)) * x * x + 1;
	x = 1 - t;
	c[2] = ((A + 2) * x - (A + 3)) * x * x + 1;
	x = 2 - t;
	c[3] = ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
}

static int gs_exec(hal_step *s)
{
	const gs_params *p = s->params;
	const float *x = s->in[0]->data, *grid = s->in[1]->data;
	float *y = s->out[0]->data;
	for (int64_t n = 0; n < p->n; n++)
		for (int64_t i = 0; i < p->oh * p->ow; i++) {
			const float *g = grid + (n * p->oh * p->ow + i) * 2;
			double gx = gs_unnorm(p, g[0], p->w), gy = gs_unnorm(p, g[1], p->h);
			for (int64_t c = 0; c < p->c; c++) {
				const float *img = x + (n * p->c + c) * p->h * p->w;
				double v = 0;
				if (!isfinite(gx) || !isfinite(gy) || fabs(gx) > 1e15 || fabs(gy) > 1e15) {
					v = 0;  /* a NaN or absurd grid point samples nothing */
				} else if (p->mode == GS_BICUBIC) {
					double fx = floor(gx), fy = floor(gy), cx[4], cy[4];
					gs_cubic_coeffs(gx - fx, cx);
					gs_cubic_coeffs(gy - fy, cy);
					for (int a = 0; a < 4; a++) {
						double row = 0;
						for (int b = 0; b < 4; b++) {
							double tx = gs_coord(p, fx - 1 + b, p->w);
							double ty = gs_coord(p, fy - 1 + a, p->h);
							row += cx[b] * gs_px(img, p, (int64_t)ty, (int64_t)tx);
						}
						v += cy[a] * row;
					}
				} else {
					double cxv = gs_coord(p, gx, p->w), cyv = gs_coord(p, gy, p->h);
					if (p->mode == GS_NEAREST) {
						v = gs_px(img, p, (int64_t)nearbyint(cyv), (int64_t)nearbyint(cxv));
					} else {
						double x0 = floor(cxv), y0 = floor(cyv);
						double lx = cxv - x0, ly = cyv - y0;
						int64_t ix = (int64_t)x0, iy = (int64_t)y0;
						v = (1 - ly) * ((1 - lx) * gs_px(img, p, iy, ix) + lx * gs_px(img, p, iy, ix + 1)) +
						    ly * ((1 - lx) * gs_px(img, p, iy + 1, ix) + lx * gs_px(img, p, iy + 1, ix + 1));
					}
				}
				y[(n * p->c + c) * p->oh * p->ow + i] = (float)v;
			}
		}
	return 0;
}

/* ---- RoiAlign ---- */

typedef struct roi_params {
	int64_t n, c, h, w, nroi, oh, ow, sampling;
	float scale;
	int half_pixel, max_mode;
} roi_params;

static int roi_infer(hal_step *s)
{
	const hal_tensor *x = ou_in(s, 0), *r = ou_in(s, 1), *b = ou_in(s, 2);
	int rc = ou_need_float(s, x, "X", 0);
	if (rc || (rc = ou_need_float(s, r, "rois", 0)))
		return rc;
	if (x->rank != 4 || r->rank != 2 || r->dims[1] != 4)
		return hal_err(s, AIDOS_E_SHAPE, "X must be [N,C,H,W] and rois [num_rois, 4]");
	if (!b || (b->dtype != HAL_DT_I64 && b->dtype != HAL_DT_I32) || b->rank != 1 ||
	    b->dims[0] != r->dims[0])
		return hal_err(s, AIDOS_E_INVALID, "batch_indices must be int64 [num_rois]");
	roi_params *p = hal_step_alloc(s, sizeof *p);
	if (!p)
		return AIDOS_E_NOMEM;
	p->n = x->dims[0], p->c = x->dims[1], p->h = x->dims[2], p->w = x->dims[3], p->nroi = r->dims[0];
	p->oh = hal_attr_int(s->node, "output_height", 1);
	p->ow = hal_attr_int(s->node, "output_width", 1);
	p->sampling = hal_attr_int(s->node, "sampling_ratio", 0);
	p->scale = hal_attr_float(s->node, "spatial_scale", 1.0f);
	const char *m = hal_attr_str(s->node, "mode", "avg");
	const char *ct = hal_attr_str(s->node, "coordinate_transformation_mode",
				      s->opset >= 16 ? "half_pixel" : "output_half_pixel");
	if (strcmp(m, "avg") && strcmp(m, "max"))
		return hal_err(s, AIDOS_E_INVALID, "attribute mode '%s' (avg or max)", m);
	if (strcmp(ct, "half_pixel") && strcmp(ct, "output_half_pixel"))
		return hal_err(s, AIDOS_E_INVALID, "attribute coordinate_transformation_mode '%s'", ct);
	if (p->oh < 1 || p->ow < 1 || p->oh > 65536 || p->ow > 65536 || p->sampling < 0 || p->sampling > 1024)
		return hal_err(s, AIDOS_E_INVALID, "output_height/output_width/sampling_ratio out of range");
	p->max_mode = !strcmp(m, "max");
	p->half_pixel = !strcmp(ct, "half_pixel");
	s->params = p;
	int64_t od[4] = { p->nroi, p->c, p->oh, p->ow };
	return ou_set(s, s->out[0], x->dtype, 4, od);
}

/* One bilinear sample of plane img at (y, x) as the four weighted corner
 * values; all 0 when the point is more than a pixel outside. */
static void roi_sample(const roi_params *p, const float *img, double y, double x, double v[4])
{
	v[0] = v[1] = v[2] = v[3] = 0;
	if (y < -1.0 || y > (double)p->h || x < -1.0 || x > (double)p->w)
		return;
	if (y <= 0)
		y = 0;
	if (x <= 0)
		x = 0;
	int64_t y0 = (int64_t)y, x0 = (int64_t)x, y1, x1;
	if (y0 >= p->h - 1)
		y1 = y0 = p->h - 1, y = (double)y0;
	else
		y1 = y0 + 1;
	if (x0 >= p->w - 1)
		x1 = x0 = p->w - 1, x = (double)x0;
	else
		x1 = x0 + 1;
	double ly = y - (double)y0, lx = x - (double)x0, hy = 1 - ly, hx = 1 - lx;
	v[0] = hy * hx * img[y0 * p->w + x0];
	v[1] = hy * lx * img[y0 * p->w + x1];
	v[2] = ly * hx * img[y1 * p->w + x0];
	v[3] = ly * lx * img[y1 * p->w + x1];
}

static int roi_exec(hal_step *s)
{
	const roi_params *p = s->params;
	const float *x = s->in[0]->data, *rois = s->in[1]->data;
	float *y = s->out[0]->data;
	const double off = p->half_pixel ? 0.5 : 0.0;
	for (int64_t r = 0; r < p->nroi; r++) {
		int64_t b = hal_get_i64(s->in[2], r);
		if (b < 0 || b >= p->n)
			return hal_err(s, AIDOS_E_RANGE, "batch_indices[%lld] = %lld is outside [0, %lld)",
				       (long long)r, (long long)b, (long long)p->n);
		const float *ro = rois + r * 4;
		double x0 = ro[0] * p->scale - off, y0 = ro[1] * p->scale - off;
		double rw = ro[2] * p->scale - off - x0, rh = ro[3] * p->scale - off - y0;
		if (!p->half_pixel) {
			rw = rw > 1 ? rw : 1;
			rh = rh > 1 ? rh : 1;
		}
		if (!isfinite(rw) || !isfinite(rh) || !isfinite(x0) || !isfinite(y0) ||
		    fabs(rw) > 1e9 || fabs(rh) > 1e9)
			return hal_err(s, AIDOS_E_RANGE, "roi %lld is not finite or too large", (long long)r);
		double bh = rh / (double)p->oh, bw = rw / (double)p->ow;
		int64_t gh = p->sampling ? p->sampling : (int64_t)ceil(rh / (double)p->oh);
		int64_t gw = p->sampling ? p->sampling : (int64_t)ceil(rw / (double)p->ow);
		gh = gh < 0 ? 0 : gh, gw = gw < 0 ? 0 : gw;
		if (gh > 65536 || gw > 65536)
			return hal_err(s, AIDOS_E_RANGE, "roi %lld needs %lldx%lld samples per bin (at most 65536 each)",
				       (long long)r, (long long)gh, (long long)gw);
		double cnt = (double)(gh * gw > 1 ? gh * gw : 1);
		for (int64_t c = 0; c < p->c; c++) {
			const float *img = x + (b * p->c + c) * p->h * p->w;
			for (int64_t ph = 0; ph < p->oh; ph++)
				for (int64_t pw = 0; pw < p->ow; pw++) {
					double acc = 0, mx = -INFINITY;
					for (int64_t iy = 0; iy < gh; iy++) {
						double yy = y0 + (double)ph * bh + ((double)iy + 0.5) * bh / (double)gh;
						for (int64_t ix = 0; ix < gw; ix++) {
							double xx = x0 + (double)pw * bw + ((double)ix + 0.5) * bw / (double)gw;
							double v[4];
							roi_sample(p, img, yy, xx, v);
							if (p->max_mode) {
								for (int k = 0; k < 4; k++)
									mx = v[k] > mx ? v[k] : mx;
							} else {
								acc += v[0] + v[1] + v[2] + v[3];
							}
						}
					}
					y[((r * p->c + c) * p->oh + ph) * p->ow + pw] =
						(float)(p->max_mode ? (gh > 0 && gw > 0 ? mx : 0) : acc / cnt);
				}
		}
	}
	return 0;
}

static const hal_op op_gridsample = { "GridSample", 16, HAL_OP_PURE, gs_infer, gs_exec };
static const hal_op op_roialign = { "RoiAlign", 10, HAL_OP_PURE, roi_infer, roi_exec };

const hal_op *const hal_ops_vision[] = { &op_gridsample, &op_roialign, NULL };
