/*
 * hal/ops/conv_small.c - 2-D Conv over small output planes, with the GEMM's
 * operands swapped.
 *
 * Conv's general path (hal/ops/nn.c, CONV_PHASE) is a GEMM whose rows are
 * output channels and whose columns are output pixels of a zero-padded
 * input plane: it computes the padding columns too (a 1x3 kernel with pad
 * 1 on a 4-wide plane computes 6 columns per row for 4) and fills its
 * 16-wide column tiles badly when a plane has a few dozen pixels. Those are
 * the shapes of openWakeWord's embedding model (24-96 channels, planes from
 * 74x32 down to 3x1, 1x3 and 3x1 kernels).
 *
 * Here the register tile is CS_MR output pixels (rows: one broadcast input
 * value each) by CS_NR output channels (vector lanes: one row of the
 * weights, packed at plan time as panels [K][CS_NR], K = cin*kh*kw, zero
 * past cout):
 *   t[i][o] = bias[o] + sum_k xp[pix[i] + koff[k]] * wpk[k][o]
 * where xp is the input, zero-padded only when the Conv pads, pix[i] the
 * padded-plane offset of output pixel i's first tap and koff[k] that of
 * tap k = (ci, ky, kx) relative to it. The pixels of a tile are any 4
 * consecutive real output pixels (a tile may span rows): no padding column
 * is ever computed, and only the last tile of a plane has unused rows. The
 * accumulated tile goes through the fused epilogue, then to Y's rows
 * [o][pixels], 4 floats each (a 4x4 transpose in registers per 4 channels).
 *
 * Tasks are (panel, run of pixel tiles): a panel of K*CS_NR floats stays in
 * L1 (K <= 288 for the 3-tap kernels here) while its tiles stream; a
 * padded 1-row kernel (1x3 pad (0, 1)) runs in bands of rows instead, each
 * task padding its own rows (band mode, struct csm). A step too small to
 * pay a fork/join runs on the calling thread; on two threads the tasks
 * are claimed from both ends of the plane (cs_two_ended).
 */
#include <stdatomic.h>
#include <string.h>
#include "hal/gemm.h"
#include "hal/plan.h"
#include "hal/ops/conv_small.h"
#include "hal/ops/vec.h"

/* ISO C mode makes GCC default to -ffp-contract=off; the tile's
 * `acc += x * w` must be one FMA (clang contracts by default). */
#pragma GCC optimize("fp-contract=fast")

#define CS_MR 4      /* output pixels per tile */
#define CS_NR 24     /* output channels per tile: three 8-lane vectors */
#define CS_MAX_K 576      /* a panel [K][24] (54 KiB) within L2 reach; larger K
                           * (PaddleOCR det, 864) stays with the GEMM path */
#define CS_MAX_OHW 4096   /* larger planes: the GEMM path's blocking */
#define CS_PAR_FLOPS 600000  /* below: one thread (a fork/join costs more) */
#define CS_BAND_MIN_OHW 128  /* smaller planes pad serially and split by panel */
#define CS_PANEL_ONLY_OHW 64 /* below: a task is a whole panel (see cs_exec) */
#define CS_TASKS 16          /* tasks of a parallel step: the thread that
                              * finishes first waits on average half a task
                              * (a sixteenth of the work) for the other */



struct cs_job {
	const struct csm *c;
	const float *x;      /* [cin, h, w]: the input (band mode pads from it) */
	const float *xp;     /* [cin, hp, wp] */
	float *y;            /* [cout, oh, ow] */
	int64_t tiles_per_task; /* panel mode */
	int64_t rows_per_task;  /* band mode: output rows, a multiple of unit_rows */
	/* two threads (cs_run): task t is run(job, t, t + 1) */
	hal_range_fn run;
	int64_t ntask;
	_Atomic int64_t claimed;  /* tasks claimed by either side (hal_meet_next) */
};

/* One CS_MR x CS_NR tile: t[i*CS_NR + o] = bias[o] + sum_k
 * x[pix[i] + koff[k]] * w[k*CS_NR + o]. All 12 accumulators and the three
 * weight vectors stay in registers (16 on AVX2). Compiled for AVX2+FMA and
 * for the baseline, chosen at plan time with the GEMM's kernel (so that
 * hal_gemm_use_isa("generic") tests the baseline one too). A LeakyRelu
 * epilogue (openWakeWord's) is applied here in registers; the caller
 * applies any other (hal_epilogue_apply). */
typedef void (*cs_tile_fn)(int64_t K, const float *x, const int64_t *pix, const int64_t *koff,
			   const float *w, const float *bias, const ir_epilogue *epi, float *t);

/* x = ps * max(x < 0 ? a*x : x, lo) + pb: IR_ACT_LEAKYRELU as
 * hal_epilogue_apply computes it, on the accumulators */
#define CS_LEAKY(x) do {                                                        \
		v8f v_ = (x) * A;                                               \
		(x) = (v8f)(((v8i)(x) & ~((x) < z)) | ((v8i)v_ & ((x) < z)));   \
		(x) = (v8f)(((v8i)(x) & ~((x) < LO)) | ((v8i)LO & ((x) < LO))); \
		(x) = (x) * PS + PB;                                            \
	} while (0)
#define CS_ST(i) c##i##0 += b0; c##i##1 += b1; c##i##2 += b2;                  \
	if (leaky) {                                                           \
		CS_LEAKY(c##i##0);                                             \
		CS_LEAKY(c##i##1);                                             \
		CS_LEAKY(c##i##2);                                             \
	}                                                                      \
	memcpy(t + (i) * CS_NR, &c##i##0, sizeof b0);                          \
	memcpy(t + (i) * CS_NR + 8, &c##i##1, sizeof b0);                      \
	memcpy(t + (i) * CS_NR + 16, &c##i##2, sizeof b0);

#define CS_TILE(NAME, ATTR)                                                         \
	ATTR static void NAME(int64_t K, const float *x, const int64_t *restrict pix, \
			      const int64_t *restrict koff, const float *restrict w,   \
			      const float *restrict bias, const ir_epilogue *epi,      \
			      float *restrict t)                                       \
	{                                                                           \
		const float *x0 = x + pix[0], *x1 = x + pix[1];                     \
		const float *x2 = x + pix[2], *x3 = x + pix[3];                     \
		const v8f z = { 0 };                                                \
		v8f c00 = z, c01 = z, c02 = z, c10 = z, c11 = z, c12 = z;           \
		v8f c20 = z, c21 = z, c22 = z, c30 = z, c31 = z, c32 = z;           \
		for (int64_t k = 0; k < K; k++, w += CS_NR) {                       \
			int64_t o = koff[k];                                        \
			v8f w0, w1, w2, a;                                          \
			memcpy(&w0, w, sizeof w0);                                  \
			memcpy(&w1, w + 8, sizeof w1);                              \
			memcpy(&w2, w + 16, sizeof w2);                             \
			/* x - 0 is x (-0 included): a broadcast load */            \
			a = x0[o] - z; c00 += a * w0; c01 += a * w1; c02 += a * w2; \
			a = x1[o] - z; c10 += a * w0; c11 += a * w1; c12 += a * w2; \
			a = x2[o] - z; c20 += a * w0; c21 += a * w1; c22 += a * w2; \
			a = x3[o] - z; c30 += a * w0; c31 += a * w1; c32 += a * w2; \
		}                                                                   \
		v8f b0, b1, b2;                                                     \
		memcpy(&b0, bias, sizeof b0);                                       \
		memcpy(&b1, bias + 8, sizeof b1);                                   \
		memcpy(&b2, bias + 16, sizeof b2);                                  \
		int leaky = epi && epi->act == IR_ACT_LEAKYRELU;                    \
		const v8f A = z + (leaky ? epi->a : 0.0f), LO = z + (leaky ? epi->b : 0.0f); \
		const v8f PS = z + (leaky ? epi->post_s : 0.0f);                    \
		const v8f PB = z + (leaky ? epi->post_b : 0.0f);                    \
		CS_ST(0) CS_ST(1) CS_ST(2) CS_ST(3)                                 \
	}

CS_TILE(cs_tile_generic, )
#if defined(__x86_64__) || defined(__i386__)
CS_TILE(cs_tile_avx2, __attribute__((target("avx2,fma"))))
#endif

struct csm {
	hal_conv2d_geom g;
	int64_t K, hp, wp, ohw, npan, ntile;
	int padded;          /* the input is copied into a zero-padded plane */
	/* Band mode (a padded 1-row kernel, kh = 1, with no top or bottom
	 * padding: openWakeWord's 1x3 pad (0, 1)): output row oy reads input
	 * row oy*sh only, so a task owning output rows [r0, r1) pads input
	 * rows [r0*sh, r1*sh) itself and then runs every panel over them;
	 * no serial copy of the whole input before the fork. Tasks are whole
	 * units of unit_rows output rows, lcm(ow, CS_MR) pixels, so no tile
	 * straddles two tasks' rows. Planes under CS_BAND_MIN_OHW pixels
	 * (inputs of a few KiB, weights of up to 110 KiB) keep the panel
	 * split: a band task would read every panel on both threads. */
	int band;
	int64_t unit_rows;
	const float *wpk;    /* [npan][K][CS_NR] */
	const float *bias;   /* [npan*CS_NR], zero past cout (and when no B) */
	const int64_t *koff; /* [K] */
	const int64_t *pix;  /* [ntile*CS_MR]: tile rows past ohw repeat the last pixel */
	cs_tile_fn tile;
	size_t xp_floats;    /* padded input [cin, hp, wp] at the start of scratch */
};


/* Writes a full tile t [CS_MR = 4 pixels][CS_NR] (pixel-major) to Y's rows:
 * y[o*ohw + i] = t[i*CS_NR + o] for i < 4 and o below the largest multiple
 * of 4 <= no, 4x4 blocks transposed in registers (unpack, then move
 * halves: SSE shuffles on every x86-64), one 16-byte store per channel.
 * Returns the channels done. */
static int64_t cs_store4(float *y, int64_t ohw, const float *t, int64_t no)
{
	int64_t o = 0;
	for (; o + 4 <= no; o += 4)
		vec_tr4_store(y + o * ohw, ohw, t + o, CS_NR);
	return o;
}

/* Tiles [t0, t1) of panel p: the register tile, the epilogue, the store
 * into Y's rows. */
static void cs_tiles(const struct csm *c, const float *xp, float *yn, int64_t p, int64_t t0,
		     int64_t t1)
{
	float t[CS_MR * CS_NR] __attribute__((aligned(32)));
	int64_t o0 = p * CS_NR, no = c->g.cout - o0 < CS_NR ? c->g.cout - o0 : CS_NR;
	const float *w = c->wpk + p * c->K * CS_NR;
	for (int64_t tile = t0; tile < t1; tile++) {
		int64_t p0 = tile * CS_MR, mr = c->ohw - p0 < CS_MR ? c->ohw - p0 : CS_MR;
		c->tile(c->K, xp, c->pix + p0, c->koff, w, c->bias + o0, c->g.epi, t);
		if (c->g.epi && c->g.epi->act != IR_ACT_LEAKYRELU)
			hal_epilogue_apply(c->g.epi, t, CS_MR * CS_NR);
		float *y = yn + o0 * c->ohw + p0;
		if (mr == CS_MR) {
			int64_t o = cs_store4(y, c->ohw, t, no);
			for (y += o * c->ohw; o < no; o++, y += c->ohw)
				for (int i = 0; i < CS_MR; i++)
					y[i] = t[i * CS_NR + o];
		} else {
			for (int64_t o = 0; o < no; o++, y += c->ohw)
				for (int64_t i = 0; i < mr; i++)
					y[i] = t[i * CS_NR + o];
		}
	}
}

/* Panel mode, tasks [t0, t1): task t is panel t % npan, tiles
 * [q*tiles_per_task, (q+1)*tiles_per_task) with q = t / npan (the tasks
 * of a run of pixels are consecutive: see cs_run). */
static void cs_range(void *arg, int64_t t0, int64_t t1)
{
	const struct cs_job *j = arg;
	const struct csm *c = j->c;
	for (int64_t task = t0; task < t1; task++) {
		int64_t p = task % c->npan, q = task / c->npan, e = (q + 1) * j->tiles_per_task;
		cs_tiles(c, j->xp, j->y, p, q * j->tiles_per_task, e < c->ntile ? e : c->ntile);
	}
}

/* Copies `rows` rows of w floats from x (row stride w) into d (row stride
 * pl + w + right) between pl and right zeros. Rows here are 2-32 floats,
 * so inline moves: GCC made a libc memcpy of each row and a memset of
 * each one-float pad (4.6% of a 1-thread embedding run, perf), hence no
 * loop-to-call distribution in this function. */
__attribute__((optimize("no-tree-loop-distribute-patterns")))
static void cs_pad_rows(float *restrict d, const float *restrict x, int64_t rows, int64_t w,
			int64_t pl, int64_t right)
{
	for (int64_t r = 0; r < rows; r++, x += w) {
		for (int64_t i = 0; i < pl; i++)
			*d++ = 0.0f;
		int64_t i = 0;
		for (; i + 8 <= w; i += 8) {
			v8f v;
			memcpy(&v, x + i, sizeof v);
			memcpy(d + i, &v, sizeof v);
		}
		for (; i < w; i++)
			d[i] = x[i];
		d += w;
		for (i = 0; i < right; i++)
			*d++ = 0.0f;
	}
}

/* Band mode, tasks [t0, t1): output rows [t0, t1) * rows_per_task. Pads
 * the input rows they read (each input row belongs to one task: kh = 1,
 * no vertical padding), then runs every panel's tiles over them. */
static void cs_band_range(void *arg, int64_t t0, int64_t t1)
{
	const struct cs_job *j = arg;
	const struct csm *c = j->c;
	const hal_conv2d_geom *g = &c->g;
	int64_t oy0 = t0 * j->rows_per_task, oy1 = t1 * j->rows_per_task;
	oy1 = oy1 < g->oh ? oy1 : g->oh;
	int64_t r0 = oy0 * g->sh, r1 = oy1 * g->sh, right = c->wp - g->pl - g->w;
	r1 = r1 < g->h ? r1 : g->h;
	for (int64_t ci = 0; ci < g->cin; ci++)
		cs_pad_rows((float *)j->xp + (ci * c->hp + r0) * c->wp, j->x + (ci * g->h + r0) * g->w,
			    r1 - r0, g->w, g->pl, right);
	/* oy0*ow is a multiple of CS_MR (whole units); the plane's last tile
	 * may be partial */
	int64_t tile0 = oy0 * g->ow / CS_MR, tile1 = (oy1 * g->ow + CS_MR - 1) / CS_MR;
	for (int64_t p = 0; p < c->npan; p++)
		cs_tiles(c, j->xp, j->y, p, tile0, tile1);
}

/* Copies X's planes [cin, h, w] into the zero-padded [cin, hp, wp]. */
static void cs_pad(const struct csm *c, const float *x, float *xp)
{
	const hal_conv2d_geom *g = &c->g;
	memset(xp, 0, c->xp_floats * sizeof *xp);
	for (int64_t ci = 0; ci < g->cin; ci++)
		for (int64_t r = 0; r < g->h; r++)
			memcpy(xp + (ci * c->hp + r + g->pt) * c->wp + g->pl,
			       x + (ci * g->h + r) * g->w, (size_t)g->w * sizeof *xp);
}

/* Side 0 claims tasks from the front, side 1 from the back, until they
 * meet: a dynamic split (a thread the host deschedules holds up at most
 * the one task it runs) that leaves each thread on the same end of every
 * plane, so the rows a thread writes are mostly the rows it reads in the
 * next Conv, from its own L2. The pool's own chunks would hand the tasks
 * out in the order threads arrive, and half of each step's input would
 * come from the other core. The caller, which claims the pool's first
 * chunk as it publishes the job, is side 0 in practice; a side that finds
 * nothing left returns (one thread alone runs both sides). */
static void cs_two_ended(void *arg, int64_t s0, int64_t s1)
{
	struct cs_job *j = arg;
	for (int64_t side = s0; side < s1; side++) {
		int64_t mine = 0, t;
		/* relaxed claims: the tasks' writes reach the caller through the
		 * pool's join */
		while ((t = hal_meet_next(&j->claimed, j->ntask, (int)side, &mine)) >= 0)
			j->run(j, t, t + 1);
	}
}

/* Runs tasks [0, ntask) of j through fn: two-ended on a pool of two
 * threads, the pool's chunks on a larger one, inline when !par. */
static void cs_run(hal_step *s, int par, struct cs_job *j, int64_t ntask, hal_range_fn fn)
{
	hal_threadpool *tp = s->plan ? s->plan->tp : NULL;
	if (!par || ntask < 2 || !tp || hal_threadpool_size(tp) != 2) {
		hal_parallel_for(par ? s : NULL, ntask, 1, fn, j);
		return;
	}
	j->run = fn;
	j->ntask = ntask;
	atomic_init(&j->claimed, 0);
	hal_parallel_for(s, 2, 1, cs_two_ended, j);
}

static int cs_exec(hal_step *s)
{
	const struct csm *c = s->params;
	const hal_conv2d_geom *g = &c->g;
	const float *x = s->in[0]->data;
	float *y = s->out[0]->data;
	int64_t flops = 2 * c->K * g->cout * c->ohw;
	/* one thread: one band, or panel by panel (each panel's weights stay
	 * in L1 over all its tiles) */
	int par = flops >= CS_PAR_FLOPS && s->plan && s->plan->tp &&
		  hal_threadpool_size(s->plan->tp) > 1;
	for (int64_t n = 0; n < g->n; n++) {
		const float *xn = x + n * g->cin * g->h * g->w;
		struct cs_job j = { c, xn, xn, y + n * g->cout * c->ohw, c->ntile, g->oh, NULL, 0, 0 };
		if (c->band) {
			/* two threads: about CS_TASKS tasks; one: a single band */
			int64_t units = (g->oh + c->unit_rows - 1) / c->unit_rows;
			int64_t per = par ? (units + CS_TASKS - 1) / CS_TASKS : units;
			j.xp = s->scratch;
			j.rows_per_task = per * c->unit_rows;
			cs_run(s, par, &j, (units + per - 1) / per, cs_band_range);
			continue;
		}
		/* two threads: about CS_TASKS tasks; one: one task per panel. A
		 * plane of a few dozen pixels (openWakeWord's 96-channel tail:
		 * 110 KiB of weights for 12-20 pixels) is bound by streaming its
		 * weights from L3: tasks of whole panels, so that each panel is
		 * read by one thread only. */
		int64_t per = par && c->ohw >= CS_PANEL_ONLY_OHW
				      ? (c->ntile * c->npan + CS_TASKS - 1) / CS_TASKS : c->ntile;
		per = per < 1 ? 1 : per;
		j.tiles_per_task = per;
		if (c->padded) {
			cs_pad(c, xn, s->scratch);
			j.xp = s->scratch;
		}
		cs_run(s, par, &j, c->npan * ((c->ntile + per - 1) / per), cs_range);
	}
	return 0;
}

static const hal_op op_conv_small = { "Conv", 1, HAL_OP_PURE, NULL, cs_exec };

int hal_conv_small_plan(hal_step *s, const hal_conv2d_geom *g)
{
	const hal_tensor *x = s->in[0], *w = s->in[1];
	const hal_tensor *b = s->n_in > 2 ? s->in[2] : NULL;
	int64_t K = g->cin * g->kh * g->kw, ohw = g->oh * g->ow;
	int64_t npan = (g->cout + CS_NR - 1) / CS_NR;
	/* Constant weights (packed here); a variable input (a constant one is
	 * folded by the planner through the op it looked up, not this one);
	 * output channels that fill the 24 lanes to at least 5/6; planes
	 * small enough that padding columns or tile tails cost. */
	if (x->is_const || !w->is_const || !w->data || (b && (!b->is_const || !b->data)) ||
	    K < 1 || K > CS_MAX_K || ohw < 1 || ohw > CS_MAX_OHW || g->cout < 1 ||
	    npan * CS_NR * 5 > g->cout * 6)
		return 0;
	struct csm *c = hal_step_alloc(s, sizeof *c);
	float *wpk = hal_step_alloc(s, (size_t)(npan * K * CS_NR) * sizeof *wpk + 64);
	float *bias = hal_step_alloc(s, (size_t)(npan * CS_NR) * sizeof *bias + 64);
	int64_t ntile = (ohw + CS_MR - 1) / CS_MR;
	int64_t *koff = hal_step_alloc(s, (size_t)K * sizeof *koff);
	int64_t *pix = hal_step_alloc(s, (size_t)(ntile * CS_MR) * sizeof *pix);
	if (!c || !wpk || !bias || !koff || !pix)
		return AIDOS_E_NOMEM;
	c->g = *g;
	c->K = K;
	c->ohw = ohw;
	c->npan = npan;
	c->ntile = ntile;
	/* the padded extent: every tap of every output inside it */
	int64_t hp = (g->oh - 1) * g->sh + (g->kh - 1) * g->dh + 1;
	int64_t wp = (g->ow - 1) * g->sw + (g->kw - 1) * g->dw + 1;
	hp = hp > g->pt + g->h ? hp : g->pt + g->h;
	wp = wp > g->pl + g->w ? wp : g->pl + g->w;
	c->padded = g->pt || g->pl || hp != g->h || wp != g->w;
	c->hp = c->padded ? hp : g->h;
	c->wp = c->padded ? wp : g->w;
	c->xp_floats = c->padded ? (size_t)(g->cin * c->hp * c->wp) : 0;
	c->band = c->padded && g->kh == 1 && g->pt == 0 && c->hp == g->h && ohw >= CS_BAND_MIN_OHW;
	int64_t unit = g->ow;     /* lcm(ow, CS_MR) pixels */
	while (unit % CS_MR)
		unit += g->ow;
	c->unit_rows = unit / g->ow;
	/* hal_step_alloc gives zeroed bytes: pad lanes stay 0 */
	wpk = (float *)(((uintptr_t)wpk + 63) & ~(uintptr_t)63);
	bias = (float *)(((uintptr_t)bias + 63) & ~(uintptr_t)63);
	const float *wd = w->data; /* [cout][K] */
	for (int64_t o = 0; o < g->cout; o++)
		for (int64_t k = 0; k < K; k++)
			wpk[((o / CS_NR) * K + k) * CS_NR + o % CS_NR] = wd[o * K + k];
	if (b)
		memcpy(bias, b->data, (size_t)g->cout * sizeof *bias);
	for (int64_t ci = 0, k = 0; ci < g->cin; ci++)
		for (int64_t ky = 0; ky < g->kh; ky++)
			for (int64_t kx = 0; kx < g->kw; kx++)
				koff[k++] = (ci * c->hp + ky * g->dh) * c->wp + kx * g->dw;
	for (int64_t i = 0; i < ntile * CS_MR; i++) {
		int64_t p = i < ohw ? i : ohw - 1, oy = p / g->ow, ox = p % g->ow;
		pix[i] = oy * g->sh * c->wp + ox * g->sw;
	}
	c->tile = HAL_GEMM_PICK(cs_tile_generic, cs_tile_avx2);
	c->wpk = wpk;
	c->bias = bias;
	c->koff = koff;
	c->pix = pix;
	s->params = c;
	s->scratch_bytes = c->xp_floats * sizeof(float);
	s->op = &op_conv_small;
	return 1;
}
