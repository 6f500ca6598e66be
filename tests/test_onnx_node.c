/*
 * tests/test_onnx_node.c - the ONNX conformance cases (libonnx-testdata) run
 * through the public API.
 *
 * A case is a folder with model.onnx and test_data_set_N/{input,output}_K.pb
 * (serialized TensorProto). For each data set the inputs are decoded with
 * onnx_tensor_decode, bound to the model's inputs (by the name stored in the
 * .pb when it names an input, else in order: aidos_model_input(m, K)), the
 * model is run and every output is compared with output_K.pb:
 *   - same dtype and shape;
 *   - float/double: |got - want| <= ATOL + RTOL * |want| with ATOL = 1e-4,
 *     RTOL = 1e-3; NaN matches NaN, an infinity matches the same infinity;
 *   - integers and bools: exactly;
 *   - bfloat16 (stored as uint16 bits by ONNX 1.12, bound as bfloat16 where
 *     the model says so): within one bfloat16 ulp, since that data was made
 *     by truncation and the spec rounds to nearest even.
 * A case whose input rank contradicts the model's declared rank is skipped
 * as inconsistent test data.
 *
 * Skips. A case is skipped, with its reason, when its model uses an op aidos
 * has no kernel for (hal_op_find() is NULL, or a non-default domain), a
 * graph input/output that is not a tensor (sequence, map, optional), or a
 * dtype aidos does not hold (hal_dtype_size() == 0: string, complex, ...).
 * These are read from the model bytes by a small protobuf walker below (the
 * test does not trust the loader it tests to classify its own input); any
 * AIDOS_E_UNSUPPORTED from load, decode, plan or run is a skip too, with the
 * library's message as the reason. Skips count as not passed.
 *
 * Isolation. Each case runs in a forked child under alarm(): a crash is a
 * failure naming the signal, a hang is a failure after --timeout seconds,
 * and the suite goes on. Under `make SAN=1` the child exits through exit() so
 * LeakSanitizer checks it; a non-zero exit is a failure.
 *
 * Modes (see usage()):
 *   (no arguments)  cmocka suite, how `make test` runs it: one test per op
 *                   that has a kernel (hal_op_at), running the node/ cases
 *                   whose op under test it is and whose ops are all
 *                   supported; plus one "<Op> (expanded)" test per ONNX
 *                   function whose expanded cases aidos can run.
 *   --all           every case of node/, pytorch-converted/,
 *                   pytorch-operator/ and simple/ (`make conformance`):
 *                   one line per failure, a skip-reason summary,
 *                   docs/conformance.md, and last `N passed, N failed,
 *                   N skipped`. In the per-op table, skipped cases of an
 *                   op with a kernel that need a feature aidos does not
 *                   claim (features[]) get their own "<Op> (<feature>)"
 *                   row, so an op's own row is its claimed scope.
 *   --filter SUBSTR the cases whose folder/name contains SUBSTR, verbosely.
 *
 * The op under test of a case is found from the model, not only the name:
 * among the op types of the model's nodes (subgraphs included), the one whose
 * lowercased name is the longest prefix of the case name (test_ and
 * operator_ stripped, underscores dropped); else the model's only op type;
 * else the longest such prefix among every op type seen in the corpus (an
 * expanded ONNX function: test_layer_normalization_..._expanded); else the
 * first node's op type.
 */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "aidos/aidos.h"
#include "hal/hal.h"
#include "hal/ir.h"
#include "hal/onnx.h"

#define ATOL 1e-4
#define RTOL 1e-3

#define DEFAULT_DATA "/usr/share/libonnx-testdata/data"
#define MAX_OPS 64
#define OPLEN 64
#define MSGLEN 512

static const char *const folders[] = { "node", "pytorch-converted", "pytorch-operator", "simple" };
#define N_FOLDERS ((int)(sizeof folders / sizeof folders[0]))

/* ---- options ---- */
static const char *opt_data = DEFAULT_DATA;
static const char *opt_out = "docs/conformance.md";
static const char *opt_filter;
static int opt_timeout = 20;
static int opt_nofork;
static int opt_verbose;
static int opt_reference;

/* ---- one case ---- */
enum { ST_PASS = 0, ST_FAIL = 1, ST_SKIP = 2 };

typedef struct tcase {
	char dir[512];
	char name[160];          /* folder/test_... */
	const char *folder;
	char ops[MAX_OPS][OPLEN]; /* distinct op keys: "Op" or "domain:Op" */
	int n_ops;
	char first_op[OPLEN];
	char group[OPLEN + 16];  /* op under test; "<Op> (expanded)" for functions */
	char skip[MSGLEN];       /* static skip reason, "" if runnable */
	int expanded;            /* op under test is not among the model's ops */
	/* result */
	int status;
	char msg[MSGLEN];
} tcase;

static tcase *cases;
static int n_cases, cap_cases;

/* The result a forked child sends back through its pipe. */
typedef struct case_result {
	int status;
	char msg[MSGLEN];
} case_result;

/* snprintf that may truncate (paths and messages are bounded on purpose). */
static void strf(char *dst, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void strf(char *dst, size_t n, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(dst, n, fmt, ap);
	va_end(ap);
}

static void msgf(char *dst, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void msgf(char *dst, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(dst, MSGLEN, fmt, ap);
	va_end(ap);
}

/* ---- a minimal protobuf walker (trusted test data, still bounds-checked) ---- */
typedef struct pbf {
	uint32_t field, wire;
	uint64_t v;              /* varint / fixed value */
	const uint8_t *p;        /* length-delimited payload */
	size_t len;
} pbf;

static int pb_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	uint64_t r = 0;
	for (int s = 0; s < 70 && *p < end; s += 7) {
		uint8_t b = *(*p)++;
		r |= (uint64_t)(b & 0x7f) << s;
		if (!(b & 0x80)) {
			*v = r;
			return 0;
		}
	}
	return -1;
}

/* A cursor over the fields of one message. */
typedef struct pbit {
	const uint8_t *p, *end;
} pbit;

static pbit pb_iter(const uint8_t *buf, size_t len)
{
	pbit it = { buf, buf + len };
	return it;
}

/* Reads the next field; 1 when one was read, 0 at the end, -1 if malformed. */
static int pb_next(pbit *it, pbf *f)
{
	uint64_t tag;
	const uint8_t **p = &it->p, *end = it->end;
	if (*p >= end)
		return 0;
	if (pb_varint(p, end, &tag))
		return -1;
	f->field = (uint32_t)(tag >> 3);
	f->wire = (uint32_t)(tag & 7);
	f->p = NULL;
	f->len = 0;
	f->v = 0;
	switch (f->wire) {
	case 0:
		return pb_varint(p, end, &f->v) ? -1 : 1;
	case 1:
		if (end - *p < 8)
			return -1;
		memcpy(&f->v, *p, 8);
		*p += 8;
		return 1;
	case 5:
		if (end - *p < 4)
			return -1;
		memcpy(&f->v, *p, 4);
		*p += 4;
		return 1;
	case 2:
		if (pb_varint(p, end, &f->v) || f->v > (uint64_t)(end - *p))
			return -1;
		f->p = *p;
		f->len = (size_t)f->v;
		*p += f->len;
		return 1;
	default:
		return -1;
	}
}

static void case_add_op(tcase *c, const uint8_t *dom, size_t dlen, const uint8_t *op, size_t olen)
{
	char key[OPLEN];
	if (dlen && !(dlen == 7 && memcmp(dom, "ai.onnx", 7) == 0))
		strf(key, sizeof key, "%.*s:%.*s", (int)dlen, (const char *)dom, (int)olen,
			 (const char *)op);
	else
		strf(key, sizeof key, "%.*s", (int)olen, (const char *)op);
	if (!c->first_op[0])
		strf(c->first_op, sizeof c->first_op, "%s", key);
	for (int i = 0; i < c->n_ops; i++)
		if (strcmp(c->ops[i], key) == 0)
			return;
	if (c->n_ops < MAX_OPS)
		strf(c->ops[c->n_ops++], OPLEN, "%s", key);
}

/* ONNX names of the types hal_dtype_name does not know. */
static const char *dtype_name(int dt)
{
	switch (dt) {
	case 14: return "complex64";
	case 15: return "complex128";
	case 16: return "bfloat16";
	default: return hal_dtype_name(dt);
	}
}

static void note_dtype(tcase *c, uint64_t dt, const char *where)
{
	if (c->skip[0] || dt == 0 || hal_dtype_size((int)dt) != 0)
		return;
	msgf(c->skip, "dtype %s in %s", dtype_name((int)dt), where);
}

/* TypeProto of a top-level input/output: tensor elem type, or not a tensor. */
static void walk_type(tcase *c, const uint8_t *b, size_t n, const char *where)
{
	pbf f, g;
	for (pbit it1 = pb_iter(b, n); pb_next(&it1, &f) == 1;) {
		if (f.wire != 2)
			continue;
		if (f.field == 1) {          /* tensor_type */
			for (pbit it2 = pb_iter(f.p, f.len); pb_next(&it2, &g) == 1;)
				if (g.field == 1 && g.wire == 0)
					note_dtype(c, g.v, where);
		} else if (!c->skip[0] && (f.field == 4 || f.field == 5 || f.field == 9 || f.field == 8)) {
			msgf(c->skip, "%s of type %s (not a dense tensor)", where,
			     f.field == 4 ? "sequence" : f.field == 5 ? "map" :
			     f.field == 9 ? "optional" : "sparse tensor");
		}
	}
}

static void walk_graph(tcase *c, const uint8_t *b, size_t n, int depth);

static void walk_tensor_dtype(tcase *c, const uint8_t *b, size_t n, const char *where)
{
	pbf f;
	for (pbit it3 = pb_iter(b, n); pb_next(&it3, &f) == 1;)
		if (f.field == 2 && f.wire == 0)
			note_dtype(c, f.v, where);
}

static void walk_node(tcase *c, const uint8_t *b, size_t n, int depth)
{
	pbf f, a;
	const uint8_t *op = NULL, *dom = NULL;
	size_t olen = 0, dlen = 0;
	for (pbit it4 = pb_iter(b, n); pb_next(&it4, &f) == 1;) {
		if (f.wire != 2)
			continue;
		if (f.field == 4) {
			op = f.p;
			olen = f.len;
		} else if (f.field == 7) {
			dom = f.p;
			dlen = f.len;
		}
	}
	if (op)
		case_add_op(c, dom, dlen, op, olen);
	for (pbit it5 = pb_iter(b, n); pb_next(&it5, &f) == 1;) {
		if (f.field != 5 || f.wire != 2)
			continue;
		/* AttributeProto: name 1, i 3, t 5, g 6, graphs 11 */
		const uint8_t *an = NULL;
		size_t anl = 0;
		uint64_t iv = 0;
		int has_i = 0;
		for (pbit it6 = pb_iter(f.p, f.len); pb_next(&it6, &a) == 1;) {
			if (a.field == 1 && a.wire == 2) {
				an = a.p;
				anl = a.len;
			} else if (a.field == 3 && a.wire == 0) {
				iv = a.v;
				has_i = 1;
			} else if (a.field == 5 && a.wire == 2) {
				walk_tensor_dtype(c, a.p, a.len, "a tensor attribute");
			} else if ((a.field == 6 || a.field == 11) && a.wire == 2 && depth < 32) {
				walk_graph(c, a.p, a.len, depth + 1);
			}
		}
		if (has_i && an && anl == 2 && memcmp(an, "to", 2) == 0)
			note_dtype(c, iv, "a Cast target");
	}
}

static void walk_graph(tcase *c, const uint8_t *b, size_t n, int depth)
{
	pbf f, v;
	for (pbit it7 = pb_iter(b, n); pb_next(&it7, &f) == 1;) {
		if (f.wire != 2)
			continue;
		if (f.field == 1) {
			walk_node(c, f.p, f.len, depth);
		} else if (f.field == 5) {
			walk_tensor_dtype(c, f.p, f.len, "an initializer");
		} else if ((f.field == 11 || f.field == 12) && depth == 0) {
			for (pbit it8 = pb_iter(f.p, f.len); pb_next(&it8, &v) == 1;)
				if (v.field == 2 && v.wire == 2)
					walk_type(c, v.p, v.len, f.field == 11 ? "a graph input" : "a graph output");
		}
	}
}

static void *read_file(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	if (!fp)
		return NULL;
	void *buf = NULL;
	if (fseek(fp, 0, SEEK_END) == 0) {
		long n = ftell(fp);
		if (n >= 0 && fseek(fp, 0, SEEK_SET) == 0) {
			buf = malloc((size_t)n + 1);
			if (buf && fread(buf, 1, (size_t)n, fp) != (size_t)n) {
				free(buf);
				buf = NULL;
			}
			*len = (size_t)n;
		}
	}
	fclose(fp);
	return buf;
}

static int op_supported(const char *key)
{
	return strchr(key, ':') == NULL && hal_op_find(key) != NULL;
}

/* Lowercase, no underscores; drops "test_" and "operator_" prefixes. */
static void norm_name(char *dst, size_t n, const char *s)
{
	if (strncmp(s, "test_", 5) == 0)
		s += 5;
	if (strncmp(s, "operator_", 9) == 0)
		s += 9;
	size_t j = 0;
	for (; *s && j + 1 < n; s++)
		if (*s != '_' && *s != '-')
			dst[j++] = (char)(*s >= 'A' && *s <= 'Z' ? *s - 'A' + 'a' : *s);
	dst[j] = 0;
}

/* Length of op's normalized name when it prefixes the normalized case name. */
static size_t prefix_len(const char *ncase, const char *op)
{
	char nop[OPLEN];
	const char *colon = strchr(op, ':');
	norm_name(nop, sizeof nop, colon ? colon + 1 : op);
	size_t l = strlen(nop);
	return l && strncmp(ncase, nop, l) == 0 ? l : 0;
}

/* ---- the corpus ---- */
static tcase *case_new(void)
{
	if (n_cases == cap_cases) {
		cap_cases = cap_cases ? cap_cases * 2 : 1024;
		cases = realloc(cases, (size_t)cap_cases * sizeof *cases);
		if (!cases) {
			perror("realloc");
			exit(2);
		}
	}
	tcase *c = &cases[n_cases++];
	memset(c, 0, sizeof *c);
	return c;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Adds every case of folder (sorted by name); returns how many. */
static int scan_folder(const char *folder)
{
	char path[600];
	strf(path, sizeof path, "%s/%s", opt_data, folder);
	DIR *d = opendir(path);
	if (!d)
		return 0;
	char **names = NULL;
	int n = 0, cap = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 256;
			names = realloc(names, (size_t)cap * sizeof *names);
		}
		names[n++] = strdup(e->d_name);
	}
	closedir(d);
	if (n)
		qsort(names, (size_t)n, sizeof *names, cmp_str);
	int added = 0;
	for (int i = 0; i < n; i++) {
		char full[160];
		strf(full, sizeof full, "%s/%s", folder, names[i]);
		char ts0[800];
		strf(ts0, sizeof ts0, "%s/%s/test_data_set_0", path, names[i]);
		struct stat st;
		if (stat(ts0, &st) != 0 || (opt_filter && !strstr(full, opt_filter))) {
			free(names[i]);
			continue;
		}
		tcase *c = case_new();
		strf(c->dir, sizeof c->dir, "%s/%s", path, names[i]);
		strf(c->name, sizeof c->name, "%s", full);
		c->folder = folder;
		char mp[600];
		strf(mp, sizeof mp, "%s/model.onnx", c->dir);
		size_t len = 0;
		uint8_t *buf = read_file(mp, &len);
		if (!buf) {
			msgf(c->skip, "cannot read model.onnx");
		} else {
			pbf f;
			for (pbit it9 = pb_iter(buf, len); pb_next(&it9, &f) == 1;)
				if (f.field == 7 && f.wire == 2)
					walk_graph(c, f.p, f.len, 0);
			free(buf);
		}
		free(names[i]);
		added++;
	}
	free(names);
	return added;
}

/* The op type of c's first node that computes something (not a Constant,
 * Identity or layout op), else its first non-Constant one. */
static const char *main_op(const tcase *c)
{
	static const char *const layout[] = { "Constant", "Identity", "Unsqueeze", "Squeeze",
					      "Reshape", "Transpose", "Flatten", NULL };
	for (int pass = 0; pass < 2; pass++)
		for (int k = 0; k < c->n_ops; k++) {
			int skip = 0;
			for (int j = 0; layout[j] && (pass == 0 || j == 0); j++)
				skip |= strcmp(c->ops[k], layout[j]) == 0;
			if (!skip)
				return c->ops[k];
		}
	return c->first_op[0] ? c->first_op : "(no node)";
}

/* Op under test (see the header comment), then static skip by op. */
static void classify(void)
{
	for (int pass = 0; pass < 2; pass++)
		for (int i = 0; i < n_cases; i++) {
			tcase *c = &cases[i];
			const char *base = strchr(c->name, '/') + 1;
			size_t bl = strlen(base);
			int exp_name = bl > 9 && strcmp(base + bl - 9, "_expanded") == 0;
			if (exp_name != pass)
				continue;
			if (exp_name) {
				/* test_X_expanded: the op under test of its sibling test_X */
				char sib[160];
				strf(sib, sizeof sib, "%s/%.*s", c->folder, (int)(bl - 9), base);
				for (int j = 0; j < n_cases; j++)
					if (strcmp(cases[j].name, sib) == 0) {
						strf(c->group, sizeof c->group, "%s (expanded)", cases[j].group);
						c->expanded = 1;
					}
				if (c->expanded)
					continue;
			}
			char nc[160];
			norm_name(nc, sizeof nc, base);
			const char *best = NULL;
			size_t len = 0;
			for (int k = 0; k < c->n_ops; k++) {
				size_t l = prefix_len(nc, c->ops[k]);
				if (l > len) {
					len = l;
					best = c->ops[k];
				}
			}
			if (!best && c->n_ops == 1)
				best = c->ops[0];
			if (!best) {
				for (int j = 0; j < n_cases; j++)
					for (int k = 0; k < cases[j].n_ops; k++) {
						size_t l = prefix_len(nc, cases[j].ops[k]);
						if (l > len) {
							len = l;
							best = cases[j].ops[k];
						}
					}
				if (best)
					c->expanded = 1;
			}
			if (!best)
				best = main_op(c);
			strf(c->group, sizeof c->group, "%s%s", best, c->expanded ? " (expanded)" : "");
		}
	for (int i = 0; i < n_cases; i++) {
		tcase *c = &cases[i];
		if (!c->skip[0])
			for (int k = 0; k < c->n_ops; k++)
				if (!op_supported(c->ops[k])) {
					msgf(c->skip, "unsupported op %s", c->ops[k]);
					break;
				}
	}
}

/* ---- running one case ---- */
typedef struct loaded {
	void *file;
	size_t len;
	ir_tensor t;
	void *owned;
} loaded;

static void loaded_free(loaded *l)
{
	free(l->file);
	free(l->owned);
	memset(l, 0, sizeof *l);
}

/* 1 if loaded, 0 if the file does not exist, else an AIDOS_E_* code. */
static int load_pb(const char *path, loaded *l, char *err, size_t errlen)
{
	memset(l, 0, sizeof *l);
	if (access(path, F_OK) != 0)
		return 0;
	l->file = read_file(path, &l->len);
	if (!l->file) {
		strf(err, errlen, "cannot read %s", path);
		return AIDOS_E_NOTFOUND;
	}
	err[0] = 0;
	int rc = onnx_tensor_decode(l->file, l->len, &l->t, &l->owned, err, errlen);
	if (rc) {
		free(l->file);
		free(l->owned);
		l->file = l->owned = NULL;
		return rc;
	}
	return 1;
}

static int is_float(int dt)
{
	return dt == HAL_DT_F32 || dt == HAL_DT_F64 || dt == HAL_DT_F16 || dt == HAL_DT_BF16;
}

/* bfloat16 (the top half of a float32) to double: exact. */
static double bf16_to_f64(uint16_t h)
{
	uint32_t bits = (uint32_t)h << 16;
	float f;
	memcpy(&f, &bits, 4);
	return f;
}

/* IEEE 754 binary16 to double. */
static double half_to_f64(uint16_t h)
{
	int e = (h >> 10) & 0x1f, m = h & 0x3ff;
	double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(m | 0x400, e - 25);
	return h & 0x8000 ? -v : v;
}

static double get_f(const void *data, int dt, int64_t i)
{
	switch (dt) {
	case HAL_DT_F32: return ((const float *)data)[i];
	case HAL_DT_F16: return half_to_f64(((const uint16_t *)data)[i]);
	case HAL_DT_BF16: return bf16_to_f64(((const uint16_t *)data)[i]);
	default: return ((const double *)data)[i];
	}
}

static int64_t get_i(const void *data, int dt, int64_t i, int *ok)
{
	*ok = 1;
	switch (dt) {
	case HAL_DT_U8:
	case HAL_DT_BOOL:
		return ((const uint8_t *)data)[i];
	case HAL_DT_I8:
		return ((const int8_t *)data)[i];
	case HAL_DT_U16:
		return ((const uint16_t *)data)[i];
	case HAL_DT_I16:
		return ((const int16_t *)data)[i];
	case HAL_DT_I32:
		return ((const int32_t *)data)[i];
	case HAL_DT_U32:
		return ((const uint32_t *)data)[i];
	case HAL_DT_I64:
	case HAL_DT_U64:
		return ((const int64_t *)data)[i];
	default:
		*ok = 0;
		return 0;
	}
}

static void dims_str(char *b, size_t n, int rank, const int64_t *dims)
{
	size_t o = (size_t)snprintf(b, n, "[");
	for (int i = 0; i < rank && o < n; i++)
		o += (size_t)snprintf(b + o, n - o, "%s%lld", i ? "," : "", (long long)dims[i]);
	if (o < n)
		snprintf(b + o, n - o, "]");
}

/* Compares got with want; 0 if equal within tolerance, else fills msg. */
static int compare(const aidos_tensor *got, const ir_tensor *want, const char *what,
		   char *msg, double *max_err_out)
{
	char g[128], w[128];
	dims_str(g, sizeof g, got->rank, got->dims);
	dims_str(w, sizeof w, want->rank, want->dims);
	*max_err_out = 0;
	int dt = want->dtype;
	/* numpy has no bfloat16: ONNX 1.12 stores bfloat16 data as uint16 bits */
	if (dt == HAL_DT_U16 && got->dtype == HAL_DT_BF16)
		dt = HAL_DT_BF16;
	if (got->dtype != dt) {
		msgf(msg, "%s: dtype %s, want %s", what, dtype_name(got->dtype),
		     dtype_name(want->dtype));
		return -1;
	}
	if (got->rank != want->rank || memcmp(got->dims, want->dims, (size_t)want->rank * sizeof(int64_t))) {
		msgf(msg, "%s: shape %s, want %s", what, g, w);
		return -1;
	}
	int64_t n = 1;
	for (int i = 0; i < want->rank; i++)
		n *= want->dims[i];
	if (n > 0 && (!got->data || !want->data)) {
		msgf(msg, "%s: %s data is NULL", what, got->data ? "expected" : "output");
		return -1;
	}
	if (is_float(dt)) {
		double max_err = 0, worst_want = 0, worst_got = 0;
		int64_t bad = -1, n_bad = 0;
		for (int64_t i = 0; i < n; i++) {
			double a = get_f(got->data, dt, i), b = get_f(want->data, dt, i);
			if (dt == HAL_DT_BF16 && !isnan(a) && !isnan(b)) {
				/* One bfloat16 ulp (adjacent bit patterns of one sign): ONNX
				 * 1.12 made its expected values by truncating float32, the
				 * spec and ONNX Runtime round to nearest even (aidos too;
				 * tests/test_ops.c checks that exactly). */
				int32_t ga = ((const uint16_t *)got->data)[i], wb = ((const uint16_t *)want->data)[i];
				if (abs(ga - wb) <= 1 && (ga & 0x8000) == (wb & 0x8000) &&
				    !isinf(a) == !isinf(b)) {
					if (fabs(a - b) > max_err)
						max_err = fabs(a - b);
					continue;
				}
			}
			if (isnan(b) || isnan(a)) {
				if (isnan(a) && isnan(b))
					continue;
			} else if (isinf(b) || isinf(a)) {
				if (a == b)
					continue;
			} else {
				double e = fabs(a - b);
				if (e > max_err)
					max_err = e;
				if (e <= ATOL + RTOL * fabs(b))
					continue;
			}
			if (bad < 0) {
				bad = i;
				worst_want = b;
				worst_got = a;
			}
			n_bad++;
		}
		*max_err_out = max_err;
		if (n_bad) {
			msgf(msg, "%s %s: %lld of %lld values off, max err %.3g; first at %lld: got %.9g want %.9g",
			     what, w, (long long)n_bad, (long long)n, max_err, (long long)bad,
			     worst_got, worst_want);
			return -1;
		}
		return 0;
	}
	int ok = 1;
	int64_t n_bad = 0, bad = -1, gv = 0, wv = 0;
	for (int64_t i = 0; i < n; i++) {
		int64_t a = get_i(got->data, dt, i, &ok), b = get_i(want->data, dt, i, &ok);
		if (!ok) {
			msgf(msg, "%s: cannot compare dtype %s", what, hal_dtype_name(dt));
			return -1;
		}
		if (a != b) {
			if (bad < 0) {
				bad = i;
				gv = a;
				wv = b;
			}
			n_bad++;
		}
	}
	if (n_bad) {
		*max_err_out = fabs((double)gv - (double)wv);
		msgf(msg, "%s %s: %lld of %lld values differ; first at %lld: got %lld want %lld", what, w,
		     (long long)n_bad, (long long)n, (long long)bad, (long long)gv, (long long)wv);
		return -1;
	}
	return 0;
}

#define MAX_IO 32

/* Runs every data set of c in this process; the verdict goes to r. */
static void run_case(const tcase *c, case_result *r)
{
	char path[700], err[MSGLEN];
	aidos_model *m = NULL;
	aidos_session *s = NULL;
	loaded in[MAX_IO], want[MAX_IO];
	memset(in, 0, sizeof in);
	memset(want, 0, sizeof want);
	r->status = ST_PASS;
	r->msg[0] = 0;

	strf(path, sizeof path, "%s/model.onnx", c->dir);
	err[0] = 0;
	int rc = aidos_model_load(path, &m, err, sizeof err);
	if (rc) {
		r->status = rc == AIDOS_E_UNSUPPORTED ? ST_SKIP : ST_FAIL;
		msgf(r->msg, "load: %s: %s", aidos_strerror(rc), err[0] ? err : "(empty message)");
		return;
	}
	int n_in = aidos_model_n_inputs(m), n_out = aidos_model_n_outputs(m);
	rc = aidos_session_create(m, NULL, &s, err, sizeof err);
	if (rc) {
		r->status = ST_FAIL;
		msgf(r->msg, "session_create: %s: %s", aidos_strerror(rc), err);
		goto out;
	}
	for (int set = 0;; set++) {
		char sd[600];
		strf(sd, sizeof sd, "%s/test_data_set_%d", c->dir, set);
		if (access(sd, F_OK) != 0)
			break;
		aidos_tensor bind[MAX_IO];
		int n_bind = 0;
		memset(bind, 0, sizeof bind);
		for (int k = 0; k < MAX_IO; k++) {
			strf(path, sizeof path, "%s/input_%d.pb", sd, k);
			rc = load_pb(path, &in[k], err, sizeof err);
			if (rc == 0)
				break;
			if (rc < 0) {
				r->status = rc == AIDOS_E_UNSUPPORTED ? ST_SKIP : ST_FAIL;
				msgf(r->msg, "set %d input_%d.pb: %s: %s", set, k, aidos_strerror(rc), err);
				goto out;
			}
			aidos_tensor info;
			int idx = k;
			const char *pbname = in[k].t.name;
			if (pbname && pbname[0])
				for (int i = 0; i < n_in; i++)
					if (aidos_model_input(m, i, &info) == 0 && info.name &&
					    strcmp(info.name, pbname) == 0)
						idx = i;
			if (idx >= n_in || aidos_model_input(m, idx, &info) != 0) {
				r->status = ST_FAIL;
				msgf(r->msg, "set %d: input_%d.pb (%s) has no model input (model has %d)", set,
				     k, pbname ? pbname : "", n_in);
				goto out;
			}
			if (info.rank >= 0 && info.rank != in[k].t.rank) {
				/* The case contradicts its own model (ONNX 1.12's CastLike
				 * bfloat16 cases); ONNX Runtime refuses such input too. */
				r->status = ST_SKIP;
				msgf(r->msg, "test data: input '%s' has rank %d, the model declares rank %d",
				     info.name, in[k].t.rank, info.rank);
				goto out;
			}
			aidos_tensor *t = &bind[n_bind++];
			t->name = info.name;
			t->dtype = in[k].t.dtype;
			/* numpy has no bfloat16: ONNX 1.12 stores bfloat16 inputs as uint16 bits */
			if (t->dtype == HAL_DT_U16 && info.dtype == HAL_DT_BF16)
				t->dtype = HAL_DT_BF16;
			t->rank = in[k].t.rank;
			memcpy(t->dims, in[k].t.dims, sizeof t->dims);
			t->data = (void *)in[k].t.data;
		}
		rc = aidos_session_run(s, n_bind, bind);
		if (rc) {
			r->status = rc == AIDOS_E_UNSUPPORTED ? ST_SKIP : ST_FAIL;
			msgf(r->msg, "set %d: run: %s: %s", set, aidos_strerror(rc), aidos_session_errmsg(s));
			goto out;
		}
		int k = 0;
		for (; k < MAX_IO; k++) {
			strf(path, sizeof path, "%s/output_%d.pb", sd, k);
			rc = load_pb(path, &want[k], err, sizeof err);
			if (rc == 0)
				break;
			if (rc < 0) {
				r->status = rc == AIDOS_E_UNSUPPORTED ? ST_SKIP : ST_FAIL;
				msgf(r->msg, "set %d output_%d.pb: %s: %s", set, k, aidos_strerror(rc), err);
				goto out;
			}
			aidos_tensor got;
			memset(&got, 0, sizeof got);
			if (k >= n_out || (rc = aidos_session_output(s, k, &got)) != 0) {
				r->status = ST_FAIL;
				msgf(r->msg, "set %d: output %d missing (model has %d outputs, rc %d)", set, k,
				     n_out, rc);
				goto out;
			}
			char what[200];
			aidos_tensor oi;
			const char *oname = aidos_model_output(m, k, &oi) == 0 && oi.name ? oi.name : "?";
			strf(what, sizeof what, "set %d output %d '%s'", set, k, oname);
			double me;
			if (compare(&got, &want[k].t, what, r->msg, &me)) {
				r->status = ST_FAIL;
				goto out;
			}
			if (opt_verbose)
				printf("    %s ok (max err %.3g)\n", what, me);
		}
		if (k == 0) {
			r->status = ST_FAIL;
			msgf(r->msg, "set %d: no output_K.pb", set);
			goto out;
		}
		for (int i = 0; i < MAX_IO; i++) {
			loaded_free(&in[i]);
			loaded_free(&want[i]);
		}
	}
out:
	for (int i = 0; i < MAX_IO; i++) {
		loaded_free(&in[i]);
		loaded_free(&want[i]);
	}
	aidos_session_destroy(s);
	aidos_model_free(m);
}

/* Runs c in a forked child (unless --no-fork) and stores the verdict in c. */
static void exec_case(tcase *c)
{
	case_result r;
	memset(&r, 0, sizeof r);
	if (c->skip[0]) {
		c->status = ST_SKIP;
		strf(c->msg, sizeof c->msg, "%s", c->skip);
		return;
	}
	if (opt_nofork) {
		alarm((unsigned)opt_timeout);
		run_case(c, &r);
		alarm(0);
		c->status = r.status;
		memcpy(c->msg, r.msg, sizeof c->msg);
		return;
	}
	int fd[2];
	if (pipe(fd) != 0) {
		c->status = ST_FAIL;
		msgf(c->msg, "pipe: %s", strerror(errno));
		return;
	}
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		close(fd[0]);
		close(fd[1]);
		c->status = ST_FAIL;
		msgf(c->msg, "fork: %s", strerror(errno));
		return;
	}
	if (pid == 0) {
		close(fd[0]);
		/* cmocka's handlers would longjmp into the parent's copy of the
		 * test loop: a crash here must kill this child and nothing else */
		static const int sigs[] = { SIGALRM, SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGSYS, SIGABRT };
		for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
			signal(sigs[i], SIG_DFL);
		alarm((unsigned)opt_timeout);
		run_case(c, &r);
		ssize_t w = write(fd[1], &r, sizeof r);
		close(fd[1]);
		fflush(NULL);
		/* exit(), not _exit(): LeakSanitizer checks the child at exit. */
		exit(w == (ssize_t)sizeof r ? 0 : 3);
	}
	close(fd[1]);
	size_t got = 0;
	while (got < sizeof r) {
		ssize_t n = read(fd[0], (char *)&r + got, sizeof r - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd[0]);
	int ws = 0;
	while (waitpid(pid, &ws, 0) < 0 && errno == EINTR)
		;
	if (WIFSIGNALED(ws)) {
		c->status = ST_FAIL;
		if (WTERMSIG(ws) == SIGALRM)
			msgf(c->msg, "timeout: still running after %d s", opt_timeout);
		else
			msgf(c->msg, "crashed: signal %d (%s)%s%s", WTERMSIG(ws), strsignal(WTERMSIG(ws)),
			     got == sizeof r ? " after: " : "", got == sizeof r ? r.msg : "");
		return;
	}
	if (got != sizeof r) {
		c->status = ST_FAIL;
		msgf(c->msg, "child exited %d without a verdict (sanitizer report above?)",
		     WIFEXITED(ws) ? WEXITSTATUS(ws) : -1);
		return;
	}
	c->status = r.status;
	memcpy(c->msg, r.msg, sizeof c->msg);
	if (WIFEXITED(ws) && WEXITSTATUS(ws) != 0) {
		c->status = ST_FAIL;
		msgf(c->msg, "child exited %d after its verdict (leak or sanitizer report above)%s%s",
		     WEXITSTATUS(ws), r.msg[0] ? "; " : "", r.msg);
	}
}

/* ---- cmocka mode: one test per supported op (node/ cases) ---- */
typedef struct group {
	char name[OPLEN + 16];
	int *idx;
	int n;
} group;

static group *groups;
static int n_groups;

static group *group_get(const char *name, int create)
{
	for (int i = 0; i < n_groups; i++)
		if (strcmp(groups[i].name, name) == 0)
			return &groups[i];
	if (!create)
		return NULL;
	groups = realloc(groups, (size_t)(n_groups + 1) * sizeof *groups);
	group *g = &groups[n_groups++];
	memset(g, 0, sizeof *g);
	strf(g->name, sizeof g->name, "%s", name);
	return g;
}

static void group_add(group *g, int i)
{
	g->idx = realloc(g->idx, (size_t)(g->n + 1) * sizeof *g->idx);
	g->idx[g->n++] = i;
}

static void test_op(void **state)
{
	group *g = *state;
	int ran = 0, failed = 0, skipped = 0;
	char first[MSGLEN + 200] = "";
	for (int j = 0; j < g->n; j++) {
		tcase *c = &cases[g->idx[j]];
		exec_case(c);
		if (c->status == ST_SKIP) {
			skipped++;
			print_message("  skip %s: %s\n", c->name, c->msg);
			continue;
		}
		ran++;
		if (c->status == ST_FAIL) {
			if (!failed)
				strf(first, sizeof first, "%s: %s", c->name, c->msg);
			failed++;
			print_message("    FAIL %s: %s\n", c->name, c->msg);
		}
	}
	if (failed)
		fail_msg("%s: %d of %d cases failed; first: %s", g->name, failed, ran, first);
	if (!ran) {
		if (skipped)
			print_message("  %s: all %d node/ cases skipped\n", g->name, skipped);
		else
			print_message("  %s: no node/ case in %s exercises it\n", g->name, opt_data);
		skip();
	}
}

static void test_no_data(void **state)
{
	print_message("  no conformance data under %s (apt install libonnx-testdata)\n", opt_data);
	skip();
}

static int run_cmocka(void)
{
	scan_folder("node");
	classify();
	/* one group per kernel, in registry order */
	for (int i = 0; i < hal_op_count(); i++)
		group_get(hal_op_at(i)->name, 1);
	for (int i = 0; i < n_cases; i++) {
		tcase *c = &cases[i];
		if (c->skip[0])
			continue;  /* an op or dtype aidos lacks: not a test of a kernel */
		group_add(group_get(c->group, 1), i);
	}
	struct CMUnitTest *t = calloc((size_t)n_groups + 1, sizeof *t);
	int n = 0;
	if (!n_cases) {
		t[n].name = "conformance data";
		t[n++].test_func = test_no_data;
	}
	for (int i = 0; i < n_groups; i++) {
		t[n].name = groups[i].name;
		t[n].test_func = test_op;
		t[n].initial_state = &groups[i];
		n++;
	}
	int rc = _cmocka_run_group_tests("onnx_node", t, (size_t)n, NULL, NULL);
	free(t);
	return rc;
}

/* ---- --all / --filter ---- */
typedef struct tally {
	char key[MSGLEN];
	int cases, pass, fail, skip;
	const char *feature;     /* per-op rows: the unsupported feature, or NULL */
	int kernel;              /* per-op rows: aidos has a kernel for the op */
} tally;

/* Features aidos does not claim, recognised in a skipped case's reason (the
 * static one from the model, or the library's AIDOS_E_UNSUPPORTED message).
 * A skipped case of an op with a kernel goes to the row "<Op> (<feature>)",
 * so the op's own row holds its claimed scope; a skip matching none of these
 * stays in the op's row (and shows there as not 100%). Never a pass. */
static const struct feature {
	const char *needle, *label, *why;
} features[] = {
	{ "dtype string", "string", "string tensors: aidos holds numeric tensors only" },
	{ "of type sequence", "sequence/optional types", "sequence/optional/map values: aidos plans dense tensors only" },
	{ "of type optional", "sequence/optional types", NULL },
	{ "of type map", "sequence/optional types", NULL },
	{ "random draws", "training_mode, random mask",
	  "Dropout in training mode with a non-zero ratio draws a random mask no other runtime reproduces" },
	{ "test data:", "inconsistent test data",
	  "the case's data contradicts its own model: ONNX 1.12's CastLike bfloat16 cases give 'like' with rank 1 where the model declares rank 2, and aidos checks inputs against the declared rank" },
};
#define N_FEATURES ((int)(sizeof features / sizeof features[0]))

static const struct feature *feature_of(const tcase *c)
{
	if (c->status != ST_SKIP)
		return NULL;
	for (int i = 0; i < N_FEATURES; i++)
		if (strstr(c->msg, features[i].needle))
			return &features[i];
	return NULL;
}

/* The per-op row of c: its op under test, with the feature it skips for
 * when aidos has a kernel for that op (ops without one are unclaimed whole). */
static void op_row(const tcase *c, char *key, size_t n, const char **feature)
{
	char base[OPLEN + 16];
	strf(base, sizeof base, "%.*s", (int)(strlen(c->group) - (c->expanded ? 11 : 0)), c->group);
	const struct feature *f = op_supported(base) ? feature_of(c) : NULL;
	*feature = f ? f->label : NULL;
	if (!f)
		strf(key, n, "%s", c->group);
	else if (c->expanded)
		strf(key, n, "%s (expanded, %s)", base, f->label);
	else
		strf(key, n, "%s (%s)", c->group, f->label);
}

static tally *tally_get(tally **v, int *n, const char *key)
{
	for (int i = 0; i < *n; i++)
		if (strcmp((*v)[i].key, key) == 0)
			return &(*v)[i];
	*v = realloc(*v, (size_t)(*n + 1) * sizeof **v);
	tally *t = &(*v)[(*n)++];
	memset(t, 0, sizeof *t);
	strf(t->key, sizeof t->key, "%s", key);
	return t;
}

static void tally_count(tally *t, int st)
{
	t->cases++;
	if (st == ST_PASS)
		t->pass++;
	else if (st == ST_FAIL)
		t->fail++;
	else
		t->skip++;
}

static int cmp_tally_key(const void *a, const void *b)
{
	return strcmp(((const tally *)a)->key, ((const tally *)b)->key);
}

static int cmp_tally_count(const void *a, const void *b)
{
	const tally *x = a, *y = b;
	return x->cases != y->cases ? y->cases - x->cases : strcmp(x->key, y->key);
}

/* A skip reason shortened for the summary: the library's messages name the
 * node, so runtime skips are summarized by their op under test. */
static void skip_key(const tcase *c, char *key, size_t n)
{
	if (c->skip[0])
		strf(key, n, "%s", c->skip);
	else
		strf(key, n, "aidos reports unsupported (op under test %s)", c->group);
}

static int write_report(tally *ops, int n_ops, tally *fold, int n_fold, tally *reasons, int n_reasons,
			int pass, int fail, int skip)
{
	FILE *fp = fopen(opt_out, "w");
	if (!fp) {
		fprintf(stderr, "cannot write %s: %s\n", opt_out, strerror(errno));
		return -1;
	}
	char date[32];
	time_t now = time(NULL);
	strftime(date, sizeof date, "%Y-%m-%d", gmtime(&now));
	fprintf(fp, "# ONNX conformance\n\n");
	fprintf(fp, "Generated by `make conformance` (`build/tests/test_onnx_node --all`) on %s, "
		    "aidos %s, %d kernels.\n\n", date, AIDOS_VERSION, hal_op_count());
	fprintf(fp, "Data: Debian's libonnx-testdata (ONNX 1.12) in `%s`, folders node,\n"
		    "pytorch-converted, pytorch-operator and simple. A case passes when every output of every\n"
		    "data set has the expected dtype and shape and its values match: floats within\n"
		    "|got - want| <= %g + %g * |want| (NaN matches NaN), integers and bools exactly. A case is\n"
		    "skipped when it needs an op aidos has no kernel for, a non-tensor input/output (sequence,\n"
		    "map, optional), a dtype aidos does not hold (string, complex, ...), or when aidos reports\n"
		    "AIDOS_E_UNSUPPORTED for it. Skips count as not passed. bfloat16 values (stored as uint16\n"
		    "bits in this data) match within one bfloat16 ulp: ONNX 1.12 made its expected values by\n"
		    "truncating float32, while the spec and aidos round to nearest even (tests/test_ops.c\n"
		    "checks aidos's rounding exactly).\n\n", opt_data, ATOL, RTOL);
	fprintf(fp, "Ops whose output shape depends on an input's value (OneHot's depth, Compress, NonZero,\n"
		    "Unique, NonMaxSuppression, the window functions, STFT, MelWeightMatrix, ...) ask for it\n"
		    "through hal_need_value(): where it is a graph input, the session plans again with that\n"
		    "input value-keyed (folded as a constant, its value part of the plan's key), for inputs of\n"
		    "at most 64 elements, beyond which the run fails with a message saying so. Dropout in\n"
		    "training mode with a non-zero ratio draws random numbers no other runtime reproduces and\n"
		    "is refused.\n\n");
	fprintf(fp, "## Totals\n\n| folder | cases | passed | failed | skipped |\n|---|---:|---:|---:|---:|\n");
	for (int i = 0; i < n_fold; i++)
		fprintf(fp, "| %s | %d | %d | %d | %d |\n", fold[i].key, fold[i].cases, fold[i].pass,
			fold[i].fail, fold[i].skip);
	fprintf(fp, "| **all** | **%d** | **%d** | **%d** | **%d** |\n\n", pass + fail + skip, pass, fail, skip);
	fprintf(fp, "## By operator under test\n\n"
		    "The op under test is read from the model's nodes (see tests/test_onnx_node.c); "
		    "\"(expanded)\" rows are ONNX functions given as their expansion. "
		    "\"kernel\" says whether aidos has one; \"feature\" rows hold the cases of an op with a "
		    "kernel that need a feature aidos does not claim (listed below with the reason), so an op's "
		    "own row is its claimed scope.\n\n");
	int cl_cases = 0, cl_pass = 0, cl_ops = 0, cl_full = 0;
	for (int i = 0; i < n_ops; i++)
		if (ops[i].kernel && !ops[i].feature) {
			cl_ops++;
			cl_cases += ops[i].cases;
			cl_pass += ops[i].pass;
			cl_full += ops[i].pass == ops[i].cases;
		}
	fprintf(fp, "Claimed scope (rows with kernel \"yes\"): %d ops, %d of them at 100%%; %d cases, %d passed.\n\n"
		    "| op | kernel | cases | passed | failed | skipped |\n|---|---|---:|---:|---:|---:|\n",
		cl_ops, cl_full, cl_cases, cl_pass);
	for (int i = 0; i < n_ops; i++)
		fprintf(fp, "| %s | %s | %d | %d | %d | %d |\n", ops[i].key,
			ops[i].feature ? "feature" : ops[i].kernel ? "yes" : "no", ops[i].cases, ops[i].pass,
			ops[i].fail, ops[i].skip);
	fprintf(fp, "\n## Features not claimed\n\n| feature | reason |\n|---|---|\n");
	for (int i = 0; i < N_FEATURES; i++)
		if (features[i].why)
			fprintf(fp, "| %s | %s |\n", features[i].label, features[i].why);
	fprintf(fp, "\n## Skip reasons\n\n| cases | reason |\n|---:|---|\n");
	for (int i = 0; i < n_reasons; i++)
		fprintf(fp, "| %d | %s |\n", reasons[i].cases, reasons[i].key);
	fprintf(fp, "\n## Failures\n\n");
	int any = 0;
	for (int i = 0; i < n_cases; i++)
		if (cases[i].status == ST_FAIL) {
			fprintf(fp, "- `%s` (%s): %s\n", cases[i].name, cases[i].group, cases[i].msg);
			any = 1;
		}
	if (!any)
		fprintf(fp, "None.\n");
	fclose(fp);
	return 0;
}

static int run_all(void)
{
	for (int f = 0; f < N_FOLDERS; f++)
		scan_folder(folders[f]);
	classify();
	if (!n_cases) {
		fprintf(stderr, "no cases under %s%s%s\n", opt_data, opt_filter ? " matching " : "",
			opt_filter ? opt_filter : "");
		printf("0 passed, 0 failed, 0 skipped\n");
		return opt_filter ? 1 : 0;
	}
	int pass = 0, fail = 0, skip = 0;
	tally *ops = NULL, *fold = NULL, *reasons = NULL;
	int n_ops = 0, n_fold = 0, n_reasons = 0;
	for (int f = 0; f < N_FOLDERS; f++)
		tally_get(&fold, &n_fold, folders[f]);
	for (int i = 0; i < n_cases; i++) {
		tcase *c = &cases[i];
		if (opt_verbose) {
			printf("%s: op under test %s; ops:", c->name, c->group);
			for (int k = 0; k < c->n_ops; k++)
				printf(" %s%s", c->ops[k], op_supported(c->ops[k]) ? "" : "(no kernel)");
			printf("\n");
			fflush(stdout);
		}
		exec_case(c);
		char row[MSGLEN];
		const char *feat;
		op_row(c, row, sizeof row, &feat);
		tally *ot = tally_get(&ops, &n_ops, row);
		ot->feature = feat;
		ot->kernel = !c->expanded && op_supported(c->group);
		tally_count(ot, c->status);
		tally_count(tally_get(&fold, &n_fold, c->folder), c->status);
		if (c->status == ST_PASS) {
			pass++;
			if (opt_verbose)
				printf("  PASS %s\n", c->name);
		} else if (c->status == ST_FAIL) {
			fail++;
			printf("FAIL %s [%s]: %s\n", c->name, c->group, c->msg);
		} else {
			skip++;
			char key[MSGLEN];
			skip_key(c, key, sizeof key);
			tally_get(&reasons, &n_reasons, key)->cases++;
			if (opt_verbose || !c->skip[0])
				printf("SKIP %s [%s]: %s\n", c->name, c->group, c->msg);
		}
		fflush(stdout);
	}
	if (n_reasons)
		qsort(reasons, (size_t)n_reasons, sizeof *reasons, cmp_tally_count);
	printf("\nskip reasons (cases):\n");
	for (int i = 0; i < n_reasons; i++)
		printf("%5d  %s\n", reasons[i].cases, reasons[i].key);
	printf("\nby folder:\n");
	for (int i = 0; i < n_fold; i++)
		printf("  %-18s %4d cases: %4d passed, %4d failed, %4d skipped\n", fold[i].key,
		       fold[i].cases, fold[i].pass, fold[i].fail, fold[i].skip);
	if (n_ops)
		qsort(ops, (size_t)n_ops, sizeof *ops, cmp_tally_key);
	if (!opt_filter && write_report(ops, n_ops, fold, n_fold, reasons, n_reasons, pass, fail, skip) == 0)
		printf("wrote %s\n", opt_out);
	printf("%d passed, %d failed, %d skipped\n", pass, fail, skip);
	free(ops);
	free(fold);
	free(reasons);
	return fail ? 1 : 0;
}

static void list_cases(void)
{
	for (int f = 0; f < N_FOLDERS; f++)
		scan_folder(folders[f]);
	classify();
	for (int i = 0; i < n_cases; i++) {
		printf("%s\t%s\t", cases[i].name, cases[i].group);
		for (int k = 0; k < cases[i].n_ops; k++)
			printf("%s%s", k ? "," : "", cases[i].ops[k]);
		printf("\t%s\n", cases[i].skip[0] ? cases[i].skip : "runnable");
	}
}

static void usage(const char *argv0)
{
	printf("usage: %s [--all | --filter SUBSTR | --list] [options]\n"
	       "ONNX conformance cases (libonnx-testdata) through aidos_model_load / aidos_session_run.\n"
	       "  (no mode)        cmocka suite (make test): one test per op aidos has a kernel for,\n"
	       "                   running the node/ cases of that op whose ops are all supported\n"
	       "  --all            every case of node, pytorch-converted, pytorch-operator, simple\n"
	       "                   (make conformance): failure lines, skip-reason summary, writes the\n"
	       "                   report, ends with 'N passed, N failed, N skipped'; exit 1 on failures\n"
	       "  --filter SUBSTR  only cases whose folder/name contains SUBSTR, verbosely (no report)\n"
	       "  --list           print case, op under test, ops and static skip reason; run nothing\n"
	       "options:\n"
	       "  --data DIR       test data root (default %s; env AIDOS_ONNX_TESTDATA)\n"
	       "  --out FILE       report written by --all (default docs/conformance.md)\n"
	       "  --timeout S      per-case time limit in seconds (default 20; env AIDOS_CASE_TIMEOUT)\n"
	       "  --reference      use the scalar reference kernels (hal_use_reference = 1)\n"
	       "  --no-fork        run cases in this process (for a debugger; a hang or crash ends the run)\n"
	       "  -v, --verbose    print every case and output\n"
	       "  --help           this text\n"
	       "Tolerance: floats |got - want| <= %g + %g * |want|, NaN == NaN; ints and bools exact.\n",
	       argv0, DEFAULT_DATA, ATOL, RTOL);
}

int main(int argc, char **argv)
{
	int all = 0, list = 0;
	const char *e;
	if ((e = getenv("AIDOS_ONNX_TESTDATA")) && *e)
		opt_data = e;
	if ((e = getenv("AIDOS_CASE_TIMEOUT")) && atoi(e) > 0)
		opt_timeout = atoi(e);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--all") == 0) {
			all = 1;
		} else if (strcmp(a, "--list") == 0) {
			list = 1;
		} else if (strcmp(a, "--filter") == 0 && i + 1 < argc) {
			opt_filter = argv[++i];
			opt_verbose = 1;
		} else if (strcmp(a, "--data") == 0 && i + 1 < argc) {
			opt_data = argv[++i];
		} else if (strcmp(a, "--out") == 0 && i + 1 < argc) {
			opt_out = argv[++i];
		} else if (strcmp(a, "--timeout") == 0 && i + 1 < argc) {
			opt_timeout = atoi(argv[++i]);
			if (opt_timeout <= 0)
				opt_timeout = 20;
		} else if (strcmp(a, "--reference") == 0) {
			opt_reference = 1;
		} else if (strcmp(a, "--no-fork") == 0) {
			opt_nofork = 1;
		} else if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
			opt_verbose = 1;
		} else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(argv[0]);
			return 0;
		} else {
			fprintf(stderr, "unknown argument '%s' (try --help)\n", a);
			return 2;
		}
	}
	hal_use_reference = opt_reference;
	int rc;
	if (list) {
		list_cases();
		rc = 0;
	} else if (all || opt_filter) {
		rc = run_all();
	} else {
		rc = run_cmocka();
	}
	for (int i = 0; i < n_groups; i++)
		free(groups[i].idx);
	free(groups);
	free(cases);
	return rc;
}
