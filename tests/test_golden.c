/*
 * tests/test_golden.c - aidos against ONNX Runtime on the real models.
 *
 * tools/fetch-models.sh (`make models`) fetches the pinned model packages and
 * has tools/ort_ref.js run ONNX Runtime on every case of
 * tests/golden/cases.json, writing inputs and outputs as .npy files and an
 * index, $AIDOS_CACHE/golden/manifest.txt (AIDOS_CACHE defaults to
 * ~/.cache/aidos). This test reads that index and, for each case and each
 * thread count the case names, loads the model with aidos, runs it on the
 * same inputs and checks every output: same dtype and shape, and
 *   max |aidos - ort| <= 1e-4 * max(1, max |ort|)      (integers: equal).
 * Sequence cases (Silero VAD) carry the recurrent state through aidos's own
 * outputs, not ORT's, so error that accumulates over the chunks shows; every
 * chunk is compared. Error cases (inputs ORT refuses) must make
 * aidos_session_run fail with a code and a message, and leave no output.
 *
 * One cmocka test per case and thread count, named <case>/t<threads>. Missing
 * or stale data is a failure that says to run `make models`, never a skip.
 * Run from the repository root (tests/run.sh does), or set
 * AIDOS_GOLDEN_CASES to the case file.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aidos/aidos.h"
#include "aidos/npy.h"

#define GOLDEN_REL_TOL 1e-4
#define GOLDEN_MAX_THREADS 4
#define GOLDEN_MAX_CARRY 4

/* ---- the manifest ---- */

struct g_io {
	char *name;  /* tensor name */
	char *file;  /* .npy path relative to the golden folder */
};

struct g_step {
	int n_in, n_out;
	struct g_io *in, *out;
	char *error;  /* ORT's message when ORT refused this step's inputs */
};

struct g_case {
	char *name;
	char *model;  /* relative to $AIDOS_CACHE/models */
	int threads[GOLDEN_MAX_THREADS], n_threads;
	int n_carry;
	char *carry_out[GOLDEN_MAX_CARRY], *carry_in[GOLDEN_MAX_CARRY];
	int steps, n_step;
	struct g_step *step;
};

struct g_run {
	const struct g_case *c;
	int threads;
	char test_name[128];
};

static char cache_dir[1024], golden_dir[1100], models_dir[1100];
static char load_error[1600];  /* why the data could not be used, if so */
static struct g_case *cases;
static int n_cases;

static char *xstrdup(const char *s)
{
	char *d = strdup(s);

	if (!d) {
		fprintf(stderr, "test_golden: out of memory\n");
		exit(2);
	}
	return d;
}

static void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n);

	if (!q) {
		fprintf(stderr, "test_golden: out of memory\n");
		exit(2);
	}
	return q;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes %XX escapes in place; -1 on a malformed escape. */
static int pct_decode(char *s)
{
	char *w = s;

	for (char *r = s; *r; r++) {
		if (*r == '%') {
			int hi = hexval((unsigned char)r[1]), lo = hi < 0 ? -1 : hexval((unsigned char)r[2]);

			if (hi < 0 || lo < 0)
				return -1;
			*w++ = (char)(hi << 4 | lo);
			r += 2;
		} else {
			*w++ = *r;
		}
	}
	*w = '\0';
	return 0;
}

static char *read_all(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *b = NULL;
	size_t n = 0, cap = 0;

	if (!f)
		return NULL;
	for (;;) {
		if (n + 4096 + 1 > cap) {
			cap = cap ? cap * 2 : 65536;
			b = xrealloc(b, cap);
		}
		size_t r = fread(b + n, 1, cap - n - 1, f);

		n += r;
		if (r == 0)
			break;
	}
	fclose(f);
	b[n] = '\0';
	if (len)
		*len = n;
	return b;
}

static uint64_t fnv1a64(const char *b, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)b[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

#define PARSE_FAIL(...) do { \
	snprintf(load_error, sizeof load_error, __VA_ARGS__); \
	goto out; \
} while (0)

/* Parses manifest.txt into cases[]; on failure fills load_error. */
static void load_manifest(const char *cases_json)
{
	char path[1200], *text = NULL, *save = NULL, *line, *cj = NULL;
	struct g_case *c = NULL;
	struct g_step *st = NULL;
	uint64_t want_fnv = 0;
	int lineno = 0, have_fnv = 0;
	size_t cj_len;

	snprintf(path, sizeof path, "%s/manifest.txt", golden_dir);
	if (!(text = read_all(path, NULL)))
		PARSE_FAIL("no golden data: %s: %s. Run `make models` (fetches the models and "
			   "generates ONNX Runtime's reference outputs).", path, strerror(errno));
	if (!(cj = read_all(cases_json, &cj_len)))
		PARSE_FAIL("cannot read the case file %s: %s (run from the repository root, or set "
			   "AIDOS_GOLDEN_CASES)", cases_json, strerror(errno));

	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *tok[8], *sp = NULL;
		int nt = 0;

		lineno++;
		if (line[0] == '#')
			continue;
		for (char *t = strtok_r(line, " ", &sp); t && nt < 8; t = strtok_r(NULL, " ", &sp)) {
			if (pct_decode(t))
				PARSE_FAIL("%s:%d: bad %%-escape", path, lineno);
			tok[nt++] = t;
		}
		if (!nt)
			continue;
#define NEED(k) do { if (nt != (k)) PARSE_FAIL("%s:%d: '%s' wants %d fields", path, lineno, tok[0], (k) - 1); } while (0)
#define IN_CASE() do { if (!c) PARSE_FAIL("%s:%d: '%s' outside a case", path, lineno, tok[0]); } while (0)
#define IN_STEP() do { IN_CASE(); if (!st) PARSE_FAIL("%s:%d: '%s' outside a step", path, lineno, tok[0]); } while (0)
		if (!strcmp(tok[0], "aidos-golden")) {
			NEED(2);
			if (strcmp(tok[1], "1"))
				PARSE_FAIL("%s: manifest version %s, this test reads 1: run `make models`",
					   path, tok[1]);
		} else if (!strcmp(tok[0], "cases_fnv1a64")) {
			NEED(2);
			want_fnv = strtoull(tok[1], NULL, 16);
			have_fnv = 1;
		} else if (!strcmp(tok[0], "ort")) {
			/* informative */
		} else if (!strcmp(tok[0], "case")) {
			NEED(2);
			if (c)
				PARSE_FAIL("%s:%d: case without end", path, lineno);
			cases = xrealloc(cases, (size_t)(n_cases + 1) * sizeof *cases);
			c = &cases[n_cases++];
			memset(c, 0, sizeof *c);
			c->name = xstrdup(tok[1]);
			c->steps = 1;
			st = NULL;
		} else if (!strcmp(tok[0], "model")) {
			IN_CASE();
			NEED(2);
			c->model = xstrdup(tok[1]);
		} else if (!strcmp(tok[0], "threads")) {
			IN_CASE();
			if (nt < 2 || nt - 1 > GOLDEN_MAX_THREADS)
				PARSE_FAIL("%s:%d: threads wants 1 to %d counts", path, lineno, GOLDEN_MAX_THREADS);
			for (int i = 1; i < nt; i++) {
				c->threads[c->n_threads] = atoi(tok[i]);
				if (c->threads[c->n_threads] < 1 || c->threads[c->n_threads] > 64)
					PARSE_FAIL("%s:%d: bad thread count '%s'", path, lineno, tok[i]);
				c->n_threads++;
			}
		} else if (!strcmp(tok[0], "steps")) {
			IN_CASE();
			NEED(2);
			c->steps = atoi(tok[1]);
			if (c->steps < 1 || c->steps > 10000)
				PARSE_FAIL("%s:%d: bad steps", path, lineno);
		} else if (!strcmp(tok[0], "carry")) {
			IN_CASE();
			NEED(3);
			if (c->n_carry == GOLDEN_MAX_CARRY)
				PARSE_FAIL("%s:%d: too many carries", path, lineno);
			c->carry_out[c->n_carry] = xstrdup(tok[1]);
			c->carry_in[c->n_carry++] = xstrdup(tok[2]);
		} else if (!strcmp(tok[0], "step")) {
			IN_CASE();
			NEED(2);
			if (atoi(tok[1]) != c->n_step)
				PARSE_FAIL("%s:%d: step %s out of order", path, lineno, tok[1]);
			c->step = xrealloc(c->step, (size_t)(c->n_step + 1) * sizeof *c->step);
			st = &c->step[c->n_step++];
			memset(st, 0, sizeof *st);
		} else if (!strcmp(tok[0], "in") || !strcmp(tok[0], "out")) {
			int is_in = tok[0][0] == 'i';
			struct g_io **v;
			int *n;

			IN_STEP();
			NEED(3);
			v = is_in ? &st->in : &st->out;
			n = is_in ? &st->n_in : &st->n_out;
			*v = xrealloc(*v, (size_t)(*n + 1) * sizeof **v);
			(*v)[*n].name = xstrdup(tok[1]);
			(*v)[*n].file = xstrdup(tok[2]);
			(*n)++;
		} else if (!strcmp(tok[0], "error")) {
			IN_STEP();
			NEED(2);
			st->error = xstrdup(tok[1]);
		} else if (!strcmp(tok[0], "end")) {
			IN_CASE();
			if (!c->model || !c->n_threads || c->n_step != c->steps)
				PARSE_FAIL("%s:%d: case %s is incomplete", path, lineno, c->name);
			c = NULL;
			st = NULL;
		} else {
			PARSE_FAIL("%s:%d: unknown key '%s'", path, lineno, tok[0]);
		}
	}
	if (c)
		PARSE_FAIL("%s: ends inside case %s", path, c->name);
	if (!n_cases)
		PARSE_FAIL("%s: no cases", path);
	if (!have_fnv || want_fnv != fnv1a64(cj, cj_len))
		PARSE_FAIL("golden data in %s is stale: %s changed since it was generated. "
			   "Run `make models`.", golden_dir, cases_json);
out:
	if (load_error[0])
		n_cases = 0;
	free(text);
	free(cj);
}

/* ---- comparing ---- */

static const char *dt_name(int dt)
{
	switch (dt) {
	case AIDOS_DT_FLOAT: return "float32";
	case AIDOS_DT_DOUBLE: return "float64";
	case AIDOS_DT_INT64: return "int64";
	case AIDOS_DT_INT32: return "int32";
	case AIDOS_DT_INT8: return "int8";
	case AIDOS_DT_UINT8: return "uint8";
	case AIDOS_DT_BOOL: return "bool";
	default: return "?";
	}
}

static size_t dt_size(int dt)
{
	switch (dt) {
	case AIDOS_DT_FLOAT: case AIDOS_DT_INT32: return 4;
	case AIDOS_DT_DOUBLE: case AIDOS_DT_INT64: return 8;
	case AIDOS_DT_INT8: case AIDOS_DT_UINT8: case AIDOS_DT_BOOL: return 1;
	default: return 0;
	}
}

static int64_t numel(const aidos_tensor *t)
{
	int64_t n = 1;

	for (int i = 0; i < t->rank; i++)
		n *= t->dims[i];
	return n;
}

static double get_f64(const aidos_tensor *t, int64_t i)
{
	switch (t->dtype) {
	case AIDOS_DT_FLOAT: return ((const float *)t->data)[i];
	case AIDOS_DT_DOUBLE: return ((const double *)t->data)[i];
	case AIDOS_DT_INT64: return (double)((const int64_t *)t->data)[i];
	case AIDOS_DT_INT32: return ((const int32_t *)t->data)[i];
	case AIDOS_DT_INT8: return ((const int8_t *)t->data)[i];
	case AIDOS_DT_UINT8: case AIDOS_DT_BOOL: return ((const uint8_t *)t->data)[i];
	default: return NAN;
	}
}

static void shape_str(const aidos_tensor *t, char *b, size_t n)
{
	size_t k = (size_t)snprintf(b, n, "[");

	for (int i = 0; i < t->rank && k < n; i++)
		k += (size_t)snprintf(b + k, n - k, "%s%lld", i ? "," : "", (long long)t->dims[i]);
	if (k < n)
		snprintf(b + k, n - k, "]");
}

/* Compares got with ref; returns 0 or fills msg. *err_out gets max|a-b|. */
static int compare(const aidos_tensor *got, const aidos_tensor *ref, double *err_out,
		   double *tol_out, char *msg, size_t msglen)
{
	char gs[128], rs[128];
	int64_t n = numel(ref), worst = -1;
	double refmax = 0, maxerr = 0, tol;
	int is_float = ref->dtype == AIDOS_DT_FLOAT || ref->dtype == AIDOS_DT_DOUBLE;

	shape_str(got, gs, sizeof gs);
	shape_str(ref, rs, sizeof rs);
	*err_out = 0;
	*tol_out = 0;
	if (got->dtype != ref->dtype) {
		snprintf(msg, msglen, "dtype %s, ONNX Runtime's is %s", dt_name(got->dtype),
			 dt_name(ref->dtype));
		return -1;
	}
	if (got->rank != ref->rank || memcmp(got->dims, ref->dims, (size_t)ref->rank * sizeof ref->dims[0])) {
		snprintf(msg, msglen, "shape %s, ONNX Runtime's is %s", gs, rs);
		return -1;
	}
	if (n && !got->data) {
		snprintf(msg, msglen, "no data");
		return -1;
	}
	for (int64_t i = 0; i < n; i++) {
		double r = get_f64(ref, i);

		if (isfinite(r) && fabs(r) > refmax)
			refmax = fabs(r);
	}
	tol = is_float ? GOLDEN_REL_TOL * (refmax > 1 ? refmax : 1) : 0;
	*tol_out = tol;
	for (int64_t i = 0; i < n; i++) {
		double a = get_f64(got, i), r = get_f64(ref, i), e;

		if (isnan(r) || isnan(a)) {
			e = isnan(r) && isnan(a) ? 0 : INFINITY;
		} else if (isinf(r) || isinf(a)) {
			e = a == r ? 0 : INFINITY;
		} else {
			e = fabs(a - r);
		}
		if (e > maxerr) {
			maxerr = e;
			worst = i;
		}
	}
	*err_out = maxerr;
	if (maxerr > tol) {
		int64_t coord[AIDOS_MAX_RANK], rest = worst;
		char at[200];
		size_t k = 0;

		/* the flat index as a C-order coordinate */
		for (int d = ref->rank - 1; d >= 0; d--) {
			coord[d] = ref->dims[d] ? rest % ref->dims[d] : 0;
			rest = ref->dims[d] ? rest / ref->dims[d] : 0;
		}
		at[0] = '\0';
		for (int d = 0; d < ref->rank && k < sizeof at; d++)
			k += (size_t)snprintf(at + k, sizeof at - k, "%s%lld", d ? "," : "",
					      (long long)coord[d]);
		snprintf(msg, msglen, "max |aidos - ort| = %.3g at [%s] (aidos %.9g, ort %.9g), "
			 "tolerance %.3g; shape %s", maxerr, at, get_f64(got, worst),
			 get_f64(ref, worst), tol, rs);
		return -1;
	}
	return 0;
}

/* ---- running a case ---- */

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int find_output(const aidos_model *m, const char *name)
{
	int n = aidos_model_n_outputs(m);

	for (int i = 0; i < n; i++) {
		aidos_tensor info;

		if (!aidos_model_output(m, i, &info) && info.name && !strcmp(info.name, name))
			return i;
	}
	return -1;
}

/* Everything a run owns, released in one place (cmocka's fail longjmps out
 * of the test, so the test keeps this in its state and teardown frees it). */
struct g_ctx {
	aidos_model *m;
	aidos_session *s;
	int n_in;
	aidos_tensor in[16];
	void *in_own[16];
	aidos_tensor ref;
	void *ref_own;
	void *carry_buf[GOLDEN_MAX_CARRY];
	aidos_tensor carry_t[GOLDEN_MAX_CARRY];
	int have_carry;
};

static void ctx_free_inputs(struct g_ctx *x)
{
	for (int i = 0; i < x->n_in; i++) {
		aidos_npy_free(x->in_own[i]);
		x->in_own[i] = NULL;
	}
	x->n_in = 0;
	aidos_npy_free(x->ref_own);
	x->ref_own = NULL;
}

static int teardown_run(void **state)
{
	struct g_ctx *x = *state;

	if (!x)
		return 0;
	ctx_free_inputs(x);
	for (int i = 0; i < GOLDEN_MAX_CARRY; i++)
		free(x->carry_buf[i]);
	if (x->s)
		aidos_session_destroy(x->s);
	if (x->m)
		aidos_model_free(x->m);
	free(x);
	*state = NULL;
	return 0;
}

/* The run a test is about: cmocka hands the test only the state its setup
 * made, so setup notes initial_state (the g_run) before replacing it. */
static const struct g_run *current_run;

static int setup_run(void **state)
{
	struct g_ctx *x = calloc(1, sizeof *x);

	if (!x)
		return -1;
	current_run = *state;
	*state = x;
	return 0;
}

static int carry_index(const struct g_case *c, const char *in_name)
{
	for (int i = 0; i < c->n_carry; i++)
		if (!strcmp(c->carry_in[i], in_name))
			return i;
	return -1;
}

static void run_case(void **state)
{
	struct g_ctx *x = *state;
	const struct g_run *r = current_run;
	const struct g_case *c = r->c;
	aidos_session_opts opts = { .threads = r->threads };
	char path[2400], err[512], msg[1024];
	double worst_err = 0, worst_rel = 0, t0 = now_ms(), t_run = 0;
	int rc, expect_error = 0, checked = 0;

	snprintf(path, sizeof path, "%s/%s", models_dir, c->model);
	rc = aidos_model_load(path, &x->m, err, sizeof err);
	if (rc)
		fail_msg("%s: aidos_model_load(%s): %s (%s)", c->name, c->model, err, aidos_strerror(rc));
	rc = aidos_session_create(x->m, &opts, &x->s, err, sizeof err);
	if (rc)
		fail_msg("%s: aidos_session_create(threads=%d): %s (%s)", c->name, r->threads, err,
			 aidos_strerror(rc));

	for (int k = 0; k < c->n_step; k++) {
		const struct g_step *st = &c->step[k];
		double t1;

		if (st->n_in > 16)
			fail_msg("%s: too many inputs", c->name);
		for (int i = 0; i < st->n_in; i++) {
			int ci = carry_index(c, st->in[i].name);

			if (k > 0 && ci >= 0) {
				/* aidos's own state from the previous chunk */
				x->in[i] = x->carry_t[ci];
			} else {
				snprintf(path, sizeof path, "%s/%s", golden_dir, st->in[i].file);
				rc = aidos_npy_load(path, &x->in[i], &x->in_own[i], err, sizeof err);
				if (rc)
					fail_msg("%s: input %s: %s (run `make models`)", c->name,
						 st->in[i].name, err);
			}
			x->in[i].name = st->in[i].name;
			x->n_in = i + 1;
		}
		t1 = now_ms();
		rc = aidos_session_run(x->s, st->n_in, x->in);
		t_run += now_ms() - t1;

		if (st->error) {
			aidos_tensor o;
			const char *em = aidos_session_errmsg(x->s);

			expect_error = 1;
			if (rc == 0)
				fail_msg("%s step %d: aidos_session_run succeeded on an input ONNX Runtime "
					 "rejects (\"%s\"); aidos must reject it too", c->name, k, st->error);
			if (!em || !em[0])
				fail_msg("%s step %d: aidos_session_run failed (%s) without a message",
					 c->name, k, aidos_strerror(rc));
			if (aidos_session_output(x->s, 0, &o) == 0)
				fail_msg("%s step %d: aidos_session_output gave an output after a failed run",
					 c->name, k);
			print_message("    %s/t%d: rejected as ORT does: %s: %s\n", c->name, r->threads,
				      aidos_strerror(rc), em);
			ctx_free_inputs(x);
			continue;
		}
		if (rc)
			fail_msg("%s step %d: aidos_session_run: %s (%s)", c->name, k,
				 aidos_session_errmsg(x->s), aidos_strerror(rc));
		if (aidos_model_n_outputs(x->m) != st->n_out)
			fail_msg("%s: aidos has %d outputs, ONNX Runtime %d", c->name,
				 aidos_model_n_outputs(x->m), st->n_out);

		for (int j = 0; j < st->n_out; j++) {
			aidos_tensor got;
			double e, tol;
			int oi = find_output(x->m, st->out[j].name);

			if (oi < 0)
				fail_msg("%s: aidos has no output named '%s'", c->name, st->out[j].name);
			rc = aidos_session_output(x->s, oi, &got);
			if (rc)
				fail_msg("%s step %d: aidos_session_output(%d): %s", c->name, k, oi,
					 aidos_strerror(rc));
			snprintf(path, sizeof path, "%s/%s", golden_dir, st->out[j].file);
			rc = aidos_npy_load(path, &x->ref, &x->ref_own, err, sizeof err);
			if (rc)
				fail_msg("%s: reference %s: %s (run `make models`)", c->name,
					 st->out[j].name, err);
			if (compare(&got, &x->ref, &e, &tol, msg, sizeof msg))
				fail_msg("%s/t%d step %d of %d, output '%s': %s", c->name, r->threads, k,
					 c->n_step, st->out[j].name, msg);
			if (e > worst_err)
				worst_err = e;
			if (tol > 0 && e / tol > worst_rel)
				worst_rel = e / tol;
			checked++;
			aidos_npy_free(x->ref_own);
			x->ref_own = NULL;

			/* Keep outputs that feed the next step: copied, since output
			 * memory is only valid until the next run. */
			for (int ci = 0; ci < c->n_carry; ci++) {
				size_t nb;

				if (strcmp(c->carry_out[ci], st->out[j].name))
					continue;
				nb = (size_t)numel(&got) * dt_size(got.dtype);
				x->carry_buf[ci] = xrealloc(x->carry_buf[ci], nb ? nb : 1);
				memcpy(x->carry_buf[ci], got.data, nb);
				x->carry_t[ci] = got;
				x->carry_t[ci].data = x->carry_buf[ci];
			}
		}
		ctx_free_inputs(x);
	}
	if (!expect_error)
		print_message("    %s/t%d: %d outputs over %d step(s) match, max |err| %.3g "
			      "(%.0f%% of tolerance); run %.1f ms, total %.0f ms\n", c->name, r->threads,
			      checked, c->n_step, worst_err, 100 * worst_rel, t_run, now_ms() - t0);
}

/* Fails with the reason the golden data is unusable. */
static void golden_data(void **state)
{
	if (load_error[0])
		fail_msg("%s", load_error);
}

/* Every .onnx file of the fetched packages is some case's model. */
static void every_model_covered(void **state)
{
	DIR *top = opendir(models_dir);
	struct dirent *d;
	int files = 0;

	if (!top)
		fail_msg("no models in %s: run `make models`", models_dir);
	while ((d = readdir(top))) {
		char sub[1400];
		DIR *dd;
		struct dirent *f;

		if (d->d_name[0] == '.')
			continue;
		snprintf(sub, sizeof sub, "%s/%s", models_dir, d->d_name);
		if (!(dd = opendir(sub)))
			continue;
		while ((f = readdir(dd))) {
			char rel[600];
			size_t l = strlen(f->d_name);
			int found = 0;

			if (l < 5 || strcmp(f->d_name + l - 5, ".onnx"))
				continue;
			files++;
			snprintf(rel, sizeof rel, "%s/%s", d->d_name, f->d_name);
			for (int i = 0; i < n_cases && !found; i++)
				found = !strcmp(cases[i].model, rel);
			if (!found) {
				closedir(dd);
				closedir(top);
				fail_msg("model %s has no golden case in tests/golden/cases.json", rel);
			}
		}
		closedir(dd);
	}
	closedir(top);
	if (!files)
		fail_msg("no .onnx files under %s: run `make models`", models_dir);
	print_message("    %d model files, each with a golden case\n", files);
}

int main(void)
{
	const char *cj = getenv("AIDOS_GOLDEN_CASES");
	const char *env = getenv("AIDOS_CACHE");
	const char *home = getenv("HOME");
	struct CMUnitTest *tests;
	struct g_run *runs;
	int n_tests = 0, n_runs = 0, rc;

	if (env && *env)
		snprintf(cache_dir, sizeof cache_dir, "%s", env);
	else
		snprintf(cache_dir, sizeof cache_dir, "%s/.cache/aidos", home && *home ? home : ".");
	snprintf(golden_dir, sizeof golden_dir, "%s/golden", cache_dir);
	snprintf(models_dir, sizeof models_dir, "%s/models", cache_dir);
	load_manifest(cj && *cj ? cj : "tests/golden/cases.json");

	for (int i = 0; i < n_cases; i++)
		n_runs += cases[i].n_threads;
	runs = calloc((size_t)n_runs + 1, sizeof *runs);
	tests = calloc((size_t)n_runs + 2, sizeof *tests);
	if (!runs || !tests)
		return 2;
	tests[n_tests++] = (struct CMUnitTest){ "golden_data", golden_data, NULL, NULL, NULL };
	if (n_cases)
		tests[n_tests++] = (struct CMUnitTest){ "every_model_covered", every_model_covered,
							NULL, NULL, NULL };
	n_runs = 0;
	for (int i = 0; i < n_cases; i++) {
		for (int t = 0; t < cases[i].n_threads; t++) {
			struct g_run *r = &runs[n_runs++];

			r->c = &cases[i];
			r->threads = cases[i].threads[t];
			snprintf(r->test_name, sizeof r->test_name, "%s/t%d", cases[i].name, r->threads);
			tests[n_tests++] = (struct CMUnitTest){ r->test_name, run_case, setup_run,
								teardown_run, r };
		}
	}
	rc = _cmocka_run_group_tests("golden", tests, (size_t)n_tests, NULL, NULL);
	free(tests);
	free(runs);
	return rc;
}
