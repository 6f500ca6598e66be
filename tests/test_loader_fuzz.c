/*
 * tests/test_loader_fuzz.c - the ONNX loader against broken and hostile
 * files (in the spirit of SQLite's fuzzcheck): every input must load or fail
 * with a negative code and a non-empty message; nothing may crash, read out
 * of bounds or leak (`make SAN=1 test` runs this under ASan+LSan+UBSan).
 *
 * Inputs:
 *   - seeds: real model files. The golden models cached by
 *     tools/fetch-models.sh (${AIDOS_CACHE:-$HOME/.cache/aidos}/models/) when
 *     present, and always a fixed set of libonnx-testdata models with
 *     initializers and subgraphs (Conv, Gemm, BatchNorm, If, Loop, ...);
 *   - every seed truncated at each prefix length on a grid plus random ones;
 *   - every seed mutated by a seeded PRNG (bit flips, bytes set to
 *     0x00/0xff/0x80/0x7f, varints overwritten with huge values, short
 *     ranges duplicated or deleted);
 *   - hand-written hostile files (deep nesting, huge dims, short raw_data,
 *     lengths past the end, overlong varints, negative dims, external data
 *     escaping the model's folder, huge repeated-field claims), each of which
 *     must fail with a specific code and a message naming the problem.
 * Every input is copied into a heap block of exactly its size, so ASan sees
 * any read past its end. A model that loads is planned and run with zeroed
 * inputs of its declared shape (symbolic dims = 1), and its outputs are read.
 *
 * Environment: AIDOS_FUZZ_SEED (PRNG seed, default 1), AIDOS_FUZZ_SCALE
 * (multiplies the number of truncations and mutations, default 1),
 * AIDOS_FUZZ_VERBOSE=1 (print every rejected input's message).
 * On a crash the input is written to /tmp/aidos-crashes/ with a .txt line
 * saying what it was (signal handler, or ASan's death callback).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "aidos/aidos.h"
#include "hal/hal.h"
#include "hal/ir.h"
#include "hal/onnx.h"
#include "tests/pb_write.h"

#define TESTDATA "/usr/share/libonnx-testdata/data"
#define CRASH_DIR "/tmp/aidos-crashes"
#define MAX_SEEDS 32
#define MAX_INPUT_BYTES (16u << 20)  /* per run input; larger shapes are planned, not run */

/* snprintf that may truncate on purpose (descriptions). */
static void strf(char *dst, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void strf(char *dst, size_t n, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(dst, n, fmt, ap);
	va_end(ap);
}

/* ---- PRNG (splitmix64: fixed seed, reproducible) ---- */
static uint64_t rng_state = 1;

static uint64_t rnd(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static size_t rnd_below(size_t n)
{
	return n ? (size_t)(rnd() % n) : 0;
}

/* ---- crash capture: the input being tried goes to CRASH_DIR on death ---- */
static const uint8_t *cur_buf;
static size_t cur_len;
static char cur_desc[256];

static void save_current(const char *why)
{
	if (!cur_buf)
		return;
	static int n_saved;
	char path[512];
	int k = n_saved++;
	mkdir(CRASH_DIR, 0777);
	snprintf(path, sizeof path, CRASH_DIR "/loader_fuzz-%d-%d.onnx", (int)getpid(), k);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd >= 0) {
		ssize_t w = write(fd, cur_buf, cur_len);
		close(fd);
		(void)w;
	}
	snprintf(path, sizeof path, CRASH_DIR "/loader_fuzz-%d-%d.txt", (int)getpid(), k);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd >= 0) {
		char line[512];
		int n = snprintf(line, sizeof line, "%s: %s (%zu bytes; tests/test_loader_fuzz.c)\n", why,
				 cur_desc, cur_len);
		ssize_t w = write(fd, line, n > 0 ? (size_t)n : 0);
		close(fd);
		(void)w;
	}
	fprintf(stderr, "test_loader_fuzz: %s while trying %s; input saved under " CRASH_DIR "/\n", why,
		cur_desc);
}

static const int crash_sigs[] = { SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGSYS, SIGABRT };
#define N_CRASH_SIGS (sizeof crash_sigs / sizeof crash_sigs[0])
static void (*prev_handler[N_CRASH_SIGS])(int);

/* Saves the input, then hands the signal on: to cmocka's handler (which
 * fails the test and goes on) or to the default action. */
static void on_signal(int sig)
{
	save_current(strsignal(sig));
	for (size_t i = 0; i < N_CRASH_SIGS; i++)
		if (crash_sigs[i] == sig) {
			void (*h)(int) = prev_handler[i];
			signal(sig, h);
			if (h != SIG_DFL && h != SIG_IGN && h != SIG_ERR) {
				h(sig);
				return;
			}
		}
	signal(sig, SIG_DFL);
	raise(sig);
}

static void on_asan_death(void)
{
	save_current("sanitizer report");
}

/* Weak: present only when linked with a sanitizer runtime. */
extern void __sanitizer_set_death_callback(void (*cb)(void)) __attribute__((weak));
extern void __asan_poison_memory_region(void const volatile *p, size_t n) __attribute__((weak));
extern void __asan_unpoison_memory_region(void const volatile *p, size_t n) __attribute__((weak));

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* gcc links UBSan as its own runtime, which does not call ASan's death
 * callback: make a UBSan report abort() so on_signal() saves the input
 * (UBSAN_OPTIONS from the environment still overrides this). */
const char *__ubsan_default_options(void);
__attribute__((used)) const char *__ubsan_default_options(void)
{
	return "abort_on_error=1";
}

/* Called at the start of each test: cmocka installs its own handlers per test. */
static void install_crash_capture(void)
{
	for (size_t i = 0; i < N_CRASH_SIGS; i++) {
		void (*h)(int) = signal(crash_sigs[i], on_signal);
		if (h != on_signal)
			prev_handler[i] = h;
	}
	if (__sanitizer_set_death_callback)
		__sanitizer_set_death_callback(on_asan_death);
}

/* ---- files ---- */
static uint8_t *read_file(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	if (!fp)
		return NULL;
	uint8_t *buf = NULL;
	if (fseek(fp, 0, SEEK_END) == 0) {
		long n = ftell(fp);
		if (n > 0 && fseek(fp, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n))) {
			if (fread(buf, 1, (size_t)n, fp) != (size_t)n) {
				free(buf);
				buf = NULL;
			} else {
				*len = (size_t)n;
			}
		}
	}
	fclose(fp);
	return buf;
}

typedef struct seed {
	char path[512];
	uint8_t *buf;
	size_t len;
} seed;

static seed seeds[MAX_SEEDS];
static int verbose;  /* AIDOS_FUZZ_VERBOSE=1: every rejection's message */
static int n_seeds, n_golden;

static void add_seed(const char *path)
{
	if (n_seeds == MAX_SEEDS)
		return;
	seed *s = &seeds[n_seeds];
	s->buf = read_file(path, &s->len);
	if (!s->buf)
		return;
	snprintf(s->path, sizeof s->path, "%s", path);
	n_seeds++;
}

/* Golden models: *.onnx up to two levels under the cache's models/ folder. */
static void add_golden(const char *dir, int depth)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *e;
	char **names = NULL;
	int n = 0;
	while ((e = readdir(d)) && n < 256) {
		if (e->d_name[0] == '.')
			continue;
		names = realloc(names, (size_t)(n + 1) * sizeof *names);
		names[n++] = strdup(e->d_name);
	}
	closedir(d);
	for (int i = 0; i < n; i++) {
		for (int j = i + 1; j < n; j++)
			if (strcmp(names[j], names[i]) < 0) {
				char *t = names[i];
				names[i] = names[j];
				names[j] = t;
			}
		char p[1024];
		snprintf(p, sizeof p, "%s/%s", dir, names[i]);
		size_t l = strlen(names[i]);
		struct stat st;
		if (l > 5 && strcmp(names[i] + l - 5, ".onnx") == 0 && stat(p, &st) == 0 &&
		    S_ISREG(st.st_mode) && st.st_size <= (64 << 20) && n_seeds < MAX_SEEDS - 12) {
			add_seed(p);
			n_golden++;
		} else if (depth > 0 && stat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
			add_golden(p, depth - 1);
		}
		free(names[i]);
	}
	free(names);
}

/* libonnx-testdata models with initializers, subgraphs and attributes. */
static const char *const testdata_seeds[] = {
	"pytorch-converted/test_Conv2d/model.onnx",
	"pytorch-converted/test_Conv2d_groups/model.onnx",
	"pytorch-converted/test_Conv3d_groups/model.onnx",
	"pytorch-converted/test_ConvTranspose2d/model.onnx",
	"pytorch-converted/test_BatchNorm2d_eval/model.onnx",
	"pytorch-converted/test_Linear/model.onnx",
	"pytorch-operator/test_operator_conv/model.onnx",
	"pytorch-operator/test_operator_mm/model.onnx",
	"node/test_if/model.onnx",
	"node/test_loop11/model.onnx",
	"node/test_range_float_type_positive_delta_expanded/model.onnx",
	"node/test_resize_downsample_scales_linear/model.onnx",
};

static int setup_seeds(void **state)
{
	const char *e;
	if ((e = getenv("AIDOS_FUZZ_SEED")) && *e)
		rng_state = strtoull(e, NULL, 0);
	verbose = (e = getenv("AIDOS_FUZZ_VERBOSE")) && *e == '1';
	if (n_seeds)
		return 0;
	char dir[1024];
	const char *cache = getenv("AIDOS_CACHE");
	const char *home = getenv("HOME");
	if (cache && *cache)
		snprintf(dir, sizeof dir, "%s/models", cache);
	else
		snprintf(dir, sizeof dir, "%s/.cache/aidos/models", home ? home : ".");
	add_golden(dir, 2);
	for (size_t i = 0; i < sizeof testdata_seeds / sizeof testdata_seeds[0]; i++) {
		char p[512];
		snprintf(p, sizeof p, "%s/%s", TESTDATA, testdata_seeds[i]);
		add_seed(p);
	}
	print_message("  seeds: %d models (%d golden from %s, %d from libonnx-testdata)\n", n_seeds,
		      n_golden, dir, n_seeds - n_golden);
	return 0;
}

static int teardown_seeds(void **state)
{
	for (int i = 0; i < n_seeds; i++)
		free(seeds[i].buf);
	n_seeds = 0;
	return 0;
}

static int scale(void)
{
	const char *e = getenv("AIDOS_FUZZ_SCALE");
	int s = e ? atoi(e) : 1;
	return s > 0 ? s : 1;
}

/* ---- one input through load -> session -> plan -> run ---- */
typedef struct counts {
	double t0;
	int tried, loaded, rejected, planned, plan_failed, ran, run_failed, not_run;
	int by_code[10];  /* AIDOS_E_* by -(code + 1000), [0]: -errno */
} counts;

static void count_code(counts *c, int rc)
{
	int k = rc <= -1001 && rc >= -1009 ? -(rc + 1000) : 0;
	c->by_code[k]++;
}

/* 0 when the size fits the run budget; sets *bytes. */
static int input_bytes(const aidos_tensor *t, size_t *bytes)
{
	size_t es = hal_dtype_size(t->dtype);
	if (!es || t->rank < 0 || t->rank > AIDOS_MAX_RANK)
		return -1;
	uint64_t n = 1;
	for (int i = 0; i < t->rank; i++) {
		if (t->dims[i] < 0 || (t->dims[i] && n > MAX_INPUT_BYTES / (uint64_t)t->dims[i]))
			return -1;
		n *= (uint64_t)t->dims[i];
	}
	if (n * es > MAX_INPUT_BYTES)
		return -1;
	*bytes = (size_t)(n * es);
	return 0;
}

/* Reads every byte of every output so ASan checks the sizes it claims. */
static void touch_outputs(aidos_session *s, int n_out)
{
	for (int i = 0; i < n_out; i++) {
		aidos_tensor o;
		memset(&o, 0, sizeof o);
		int rc = aidos_session_output(s, i, &o);
		assert_true(rc <= 0);
		if (rc)
			continue;
		size_t nb;
		if (input_bytes(&o, &nb) || !o.data)
			continue;
		volatile uint8_t sum = 0;
		for (size_t k = 0; k < nb; k++)
			sum ^= ((const uint8_t *)o.data)[k];
		(void)sum;
	}
}

static void plan_and_run(aidos_model *m, counts *c)
{
	int n_in = aidos_model_n_inputs(m), n_out = aidos_model_n_outputs(m);
	assert_true(n_in >= 0 && n_out >= 0);
	aidos_tensor in[16];
	void *data[16] = { 0 };
	int runnable = n_in <= 16;
	int n = runnable ? n_in : 0;
	memset(in, 0, sizeof in);
	for (int i = 0; i < n; i++) {
		assert_int_equal(aidos_model_input(m, i, &in[i]), 0);
		assert_non_null(in[i].name);
		if (in[i].dtype == 0)
			in[i].dtype = AIDOS_DT_FLOAT;
		if (in[i].rank < 0)
			in[i].rank = 0;
		for (int k = 0; k < in[i].rank && k < AIDOS_MAX_RANK; k++)
			if (in[i].dims[k] < 0)
				in[i].dims[k] = 1;
		size_t nb;
		if (input_bytes(&in[i], &nb) || !(data[i] = calloc(1, nb ? nb : 1))) {
			runnable = 0;
			continue;
		}
		in[i].data = data[i];
	}
	for (int i = 0; i < n_out; i++) {
		aidos_tensor o;
		assert_int_equal(aidos_model_output(m, i, &o), 0);
	}
	aidos_session *s = NULL;
	char err[512] = "";
	aidos_session_opts so = { .threads = 1, .max_tensor_bytes = 256u << 20 };  /* hostile sizes stay small */
	int rc = aidos_session_create(m, &so, &s, err, sizeof err);
	if (rc) {
		assert_true(rc < 0);
		assert_true(err[0] != 0);
		goto out;
	}
	if (!runnable) {
		c->not_run++;
		goto out;
	}
	rc = aidos_session_plan(s, n, in);
	if (rc) {
		assert_true(rc < 0);
		assert_true(aidos_session_errmsg(s)[0] != 0);
		c->plan_failed++;
		goto out;
	}
	c->planned++;
	rc = aidos_session_run(s, n, in);
	if (rc) {
		assert_true(rc < 0);
		assert_true(aidos_session_errmsg(s)[0] != 0);
		c->run_failed++;
		goto out;
	}
	c->ran++;
	touch_outputs(s, n_out);
out:
	aidos_session_destroy(s);
	for (int i = 0; i < 16; i++)
		free(data[i]);
}

/* Loads buf[0..len) (which stays valid until the model is freed) and, when
 * it loads, plans and runs it. */
static int try_buffer(const uint8_t *buf, size_t len, counts *c)
{
	cur_buf = buf;
	cur_len = len;
	c->tried++;
	aidos_model *m = (aidos_model *)&m;  /* must be overwritten */
	char err[512];
	memset(err, 0, sizeof err);
	int rc = aidos_model_load_buffer(buf, len, NULL, &m, err, sizeof err);
	if (rc) {
		if (rc > 0 || !err[0] || m != NULL)
			fail_msg("%s: load returned %d, model %p, message '%s'", cur_desc, rc, (void *)m, err);
		assert_non_null(aidos_strerror(rc));
		if (verbose)
			print_message("      %s: %s\n", cur_desc, err);
		c->rejected++;
		count_code(c, rc);
	} else {
		assert_non_null(m);
		c->loaded++;
		plan_and_run(m, c);
		aidos_model_free(m);
	}
	cur_buf = NULL;
	return rc;
}

/* Tries one input, copied into an exact-size heap block (ASan sees any read
 * past its end). */
static int try_input(const uint8_t *bytes, size_t len, counts *c, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int try_input(const uint8_t *bytes, size_t len, counts *c, const char *fmt, ...)
{
	uint8_t *buf = malloc(len ? len : 1);
	assert_non_null(buf);
	if (len)
		memcpy(buf, bytes, len);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cur_desc, sizeof cur_desc, fmt, ap);
	va_end(ap);
	int rc = try_buffer(buf, len, c);
	free(buf);
	return rc;
}

/* Tries the first len bytes of a seed in place: under ASan the rest of the
 * seed's heap block is poisoned meanwhile, as good as an exact-size copy and
 * without copying a 10 MB model for each of hundreds of prefixes (short tails
 * are copied: ASan cannot poison less than its 8-byte granule reliably). */
static void try_prefix(const seed *s, size_t len, counts *c)
{
	if (__asan_poison_memory_region && s->len - len < 4096) {
		try_input(s->buf, len, c, "%s truncated to %zu bytes", s->path, len);
		return;
	}
	strf(cur_desc, sizeof cur_desc, "%s truncated to %zu bytes", s->path, len);
	if (__asan_poison_memory_region)
		__asan_poison_memory_region(s->buf + len, s->len - len);
	try_buffer(s->buf, len, c);
	if (__asan_unpoison_memory_region)
		__asan_unpoison_memory_region(s->buf + len, s->len - len);
}

static void print_counts(const char *what, const counts *c)
{
	print_message("    %s: %.1f s, %d inputs: %d loaded (%d planned, %d ran, %d plan errors, %d run errors, "
		      "%d not run: input too large), %d rejected [invalid %d, unsupported %d, "
		      "nomem %d, shape %d, notfound %d, truncated %d, range %d, -errno %d]\n",
		      what, now_s() - c->t0, c->tried, c->loaded, c->planned, c->ran, c->plan_failed, c->run_failed,
		      c->not_run, c->rejected, c->by_code[1], c->by_code[2], c->by_code[3],
		      c->by_code[4], c->by_code[5], c->by_code[6], c->by_code[7], c->by_code[0]);
}

/* ---- seeds load ---- */
/* Every input libFuzzer (tools/fuzz.sh) ever crashed, hung or exhausted
 * memory with, kept in tests/fuzz-regress/: each must now load, plan and run
 * or be refused with an error. */
static void test_fuzz_regressions(void **state)
{
	(void)state;
	DIR *d = opendir("tests/fuzz-regress");
	if (!d)
		fail_msg("tests/fuzz-regress: cannot open (run from the repository root)");
	counts c = { .t0 = now_s() };
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char path[512];
		strf(path, sizeof path, "tests/fuzz-regress/%s", e->d_name);
		size_t len;
		uint8_t *buf = read_file(path, &len);
		if (!buf)
			continue;
		try_input(buf, len, &c, "%s", path);
		free(buf);
		n++;
	}
	closedir(d);
	print_counts("fuzz regressions", &c);
	assert_true(n > 0);
}

static void test_seeds_load(void **state)
{
	install_crash_capture();
	if (!n_seeds)
		skip();
	counts c = { .t0 = now_s() };
	for (int i = 0; i < n_seeds; i++) {
		int rc = try_input(seeds[i].buf, seeds[i].len, &c, "seed %s", seeds[i].path);
		if (rc)
			fail_msg("seed %s does not load: %s", seeds[i].path, aidos_strerror(rc));
	}
	print_counts("seeds", &c);
}

/* ---- truncation: each prefix on a grid, plus random lengths ---- */
static void test_truncated(void **state)
{
	install_crash_capture();
	if (!n_seeds)
		skip();
	counts c = { .t0 = now_s() };
	int per_seed = 400 * scale(), n_rand = 40 * scale();
	for (int i = 0; i < n_seeds; i++) {
		const seed *s = &seeds[i];
		/* every prefix of a small file, a grid of per_seed over a large one */
		size_t step = s->len <= 4096 * (size_t)scale() ? 1 : s->len / (size_t)per_seed + 1;
		for (size_t l = 0; l < s->len; l += step)
			try_prefix(s, l, &c);
		for (int k = 0; k < n_rand; k++)
			try_prefix(s, rnd_below(s->len), &c);
		/* the last few bytes matter most: the graph's outputs usually end a file */
		for (size_t l = s->len > 16 ? s->len - 16 : 0; l < s->len; l++)
			try_prefix(s, l, &c);
	}
	print_counts("truncated", &c);
	assert_true(c.tried >= 1000);
	assert_int_equal(c.loaded + c.rejected, c.tried);
}

/* ---- mutation ---- */
typedef struct mbuf {
	uint8_t *b;
	size_t n, cap;
} mbuf;

static void mb_reserve(mbuf *m, size_t extra)
{
	if (m->n + extra <= m->cap)
		return;
	m->cap = (m->n + extra) * 2 + 64;
	m->b = realloc(m->b, m->cap);
	assert_non_null(m->b);
}

/* Replaces [at, at + del) with ins[0..nins). */
static void mb_splice(mbuf *m, size_t at, size_t del, const uint8_t *ins, size_t nins)
{
	if (at > m->n)
		at = m->n;
	if (del > m->n - at)
		del = m->n - at;
	mb_reserve(m, nins);
	memmove(m->b + at + nins, m->b + at + del, m->n - at - del);
	if (nins)
		memcpy(m->b + at, ins, nins);
	m->n = m->n - del + nins;
}

static size_t enc_varint(uint8_t *p, uint64_t v)
{
	size_t n = 0;
	do {
		p[n] = (uint8_t)(v & 0x7f);
		v >>= 7;
		if (v)
			p[n] |= 0x80;
		n++;
	} while (v);
	return n;
}

static const uint64_t huge[] = {
	UINT64_MAX, INT64_MAX, (uint64_t)1 << 62, (uint64_t)1 << 40, (uint64_t)1 << 32,
	0xffffffffu, 0x80000000u, 0x7fffffffu, 1000000000u, 0x10000, (uint64_t)-1 << 1,
};

static void mutate_once(mbuf *m, char *what, size_t wlen)
{
	size_t pos = rnd_below(m->n);
	uint8_t tmp[24];
	switch (rnd_below(7)) {
	case 0: {
		int bit = (int)rnd_below(8);
		m->b[pos] ^= (uint8_t)(1u << bit);
		snprintf(what, wlen, "flip bit %d at %zu", bit, pos);
		break;
	}
	case 1: {
		static const uint8_t vals[] = { 0x00, 0xff, 0x80, 0x7f, 0x01 };
		uint8_t v = vals[rnd_below(sizeof vals)];
		m->b[pos] = v;
		snprintf(what, wlen, "byte %zu = 0x%02x", pos, v);
		break;
	}
	case 2:
	case 3: {
		/* a varint (the bytes up to one without the high bit) replaced by a huge value */
		size_t end = pos;
		while (end < m->n && (m->b[end] & 0x80) && end - pos < 10)
			end++;
		if (end < m->n)
			end++;
		uint64_t v = huge[rnd_below(sizeof huge / sizeof huge[0])];
		size_t k = enc_varint(tmp, v);
		mb_splice(m, pos, end - pos, tmp, k);
		snprintf(what, wlen, "varint at %zu = %llu", pos, (unsigned long long)v);
		break;
	}
	case 4: {
		size_t k = 1 + rnd_below(16), to = rnd_below(m->n + 1);
		if (pos + k > m->n)
			k = m->n - pos;
		uint8_t *copy = malloc(k ? k : 1);
		memcpy(copy, m->b + pos, k);
		mb_splice(m, to, 0, copy, k);
		free(copy);
		snprintf(what, wlen, "duplicate %zu bytes from %zu at %zu", k, pos, to);
		break;
	}
	case 5: {
		size_t k = 1 + rnd_below(16);
		mb_splice(m, pos, k, NULL, 0);
		snprintf(what, wlen, "delete %zu bytes at %zu", k, pos);
		break;
	}
	default: {
		/* an overlong (11-byte) or 10-byte overflowing varint */
		memset(tmp, 0xff, 10);
		tmp[10] = 0x01;
		size_t k = rnd_below(2) ? 11 : 10;
		if (k == 10)
			tmp[9] = 0x7f;
		mb_splice(m, pos, 1, tmp, k);
		snprintf(what, wlen, "%zu-byte varint at %zu", k, pos);
		break;
	}
	}
}

static void test_mutated(void **state)
{
	install_crash_capture();
	if (!n_seeds)
		skip();
	counts c = { .t0 = now_s() };
	/* 1500 mutations: 30 per seed over 1 MiB (each costs a copy and a
	 * real model's plan), the rest shared by the small seeds */
	int n_big = 0;
	for (int i = 0; i < n_seeds; i++)
		n_big += seeds[i].len > (1u << 20);
	int big = 30 * scale(), small = (1500 * scale() - n_big * big) / (n_seeds - n_big ? n_seeds - n_big : 1);
	if (small < 50 * scale())
		small = 50 * scale();
	mbuf m = { 0 };
	for (int i = 0; i < n_seeds; i++) {
		const seed *s = &seeds[i];
		int per_seed = s->len > (1u << 20) ? big : small;
		for (int k = 0; k < per_seed; k++) {
			m.n = 0;
			mb_reserve(&m, s->len);
			memcpy(m.b, s->buf, s->len);
			m.n = s->len;
			char what[256] = "";
			int nmut = 1 + (int)rnd_below(4);
			size_t o = 0;
			for (int j = 0; j < nmut && m.n; j++) {
				char one[96];
				mutate_once(&m, one, sizeof one);
				o += (size_t)snprintf(what + o, o < sizeof what ? sizeof what - o : 0, "%s%s",
						      j ? ", " : "", one);
				if (o >= sizeof what)
					o = sizeof what - 1;
			}
			try_input(m.b, m.n, &c, "%s mutated #%d: %s", s->path, k, what);
		}
	}
	free(m.b);
	print_counts("mutated", &c);
	assert_true(c.tried >= 1000);
}

/* ---- TensorProto decoding: truncated and mutated .pb files ---- */
static void test_tensor_decode(void **state)
{
	install_crash_capture();
	static const char *const pbs[] = {
		"node/test_conv_with_strides_padding/test_data_set_0/input_0.pb",
		"node/test_cast_FLOAT_to_STRING/test_data_set_0/output_0.pb",
		"node/test_argmax_default_axis_example/test_data_set_0/output_0.pb",
		"pytorch-converted/test_Embedding/test_data_set_0/input_0.pb",
		"node/test_and2d/test_data_set_0/input_0.pb",
	};
	int tried = 0, ok = 0;
	for (size_t i = 0; i < sizeof pbs / sizeof pbs[0]; i++) {
		char p[512];
		size_t len = 0;
		snprintf(p, sizeof p, "%s/%s", TESTDATA, pbs[i]);
		uint8_t *file = read_file(p, &len);
		if (!file)
			continue;
		for (size_t l = 0; l <= len; l += len / 97 + 1) {
			for (int mut = 0; mut < 3; mut++) {
				uint8_t *b = malloc(l ? l : 1);
				memcpy(b, file, l);
				if (mut && l)
					b[rnd_below(l)] ^= (uint8_t)(1u << rnd_below(8));
				snprintf(cur_desc, sizeof cur_desc, "%s: %zu bytes, mutation %d", pbs[i], l, mut);
				cur_buf = b;
				cur_len = l;
				ir_tensor t;
				void *owned = (void *)&owned;
				char err[256] = "";
				int rc = onnx_tensor_decode(b, l, &t, &owned, err, sizeof err);
				tried++;
				if (rc) {
					assert_true(rc < 0);
					assert_true(err[0] != 0);
					assert_null(owned);
				} else {
					ok++;
					size_t es = hal_dtype_size(t.dtype);
					if (es && t.data) {
						volatile uint8_t x = 0;
						for (size_t k = 0; k < t.nbytes; k++)
							x ^= ((const uint8_t *)t.data)[k];
						(void)x;
					}
				}
				free(owned);
				cur_buf = NULL;
				free(b);
			}
		}
		free(file);
	}
	if (!tried)
		skip();
	print_message("    tensor .pb: %d inputs, %d decoded, %d rejected\n", tried, ok, tried - ok);
}

/* ---- hand-written hostile files (writer: tests/pb_write.h) ---- */

/* ValueInfoProto name: float tensor of the given dims. */
static void w_value(pbw *w, uint32_t field, const char *name, int rank, const int64_t *dims)
{
	pbw v = { 0 }, type = { 0 }, tt = { 0 }, shape = { 0 };
	for (int i = 0; i < rank; i++) {
		pbw dim = { 0 };
		pbw_int(&dim, 1, (uint64_t)dims[i]);
		pbw_take(&shape, 1, &dim);
	}
	pbw_int(&tt, 1, AIDOS_DT_FLOAT);
	pbw_take(&tt, 2, &shape);
	pbw_take(&type, 1, &tt);
	pbw_str(&v, 1, name);
	pbw_take(&v, 2, &type);
	pbw_take(w, field, &v);
}

/* NodeProto op(in...) -> out. */
static void w_node(pbw *w, const char *op, const char *in0, const char *in1, const char *out,
		   pbw *attr)
{
	pbw n = { 0 };
	if (in0)
		pbw_str(&n, 1, in0);
	if (in1)
		pbw_str(&n, 1, in1);
	pbw_str(&n, 2, out);
	pbw_str(&n, 4, op);
	if (attr)
		pbw_take(&n, 5, attr);
	pbw_take(w, 1, &n);
}

/* ModelProto around graph (consumed). */
static void w_model(pbw *w, pbw *graph)
{
	pbw ops = { 0 };
	pbw_int(w, 1, 8);  /* ir_version */
	pbw_str(&ops, 1, "");
	pbw_int(&ops, 2, 17);
	pbw_take(w, 8, &ops);
	pbw_take(w, 7, graph);
}

/* The graph every hostile file starts from: y = Add(x, W), x,y float[1,4];
 * extra (consumed, may be NULL) is appended inside the graph. */
static void w_graph_with_init(pbw *g, pbw *init)
{
	static const int64_t d[2] = { 1, 4 };
	w_node(g, "Add", "x", "W", "y", NULL);
	pbw_str(g, 2, "g");
	if (init)
		pbw_take(g, 5, init);
	w_value(g, 11, "x", 2, d);
	w_value(g, 12, "y", 2, d);
}

/* A TensorProto "W" with the given dims and dtype; data added by the caller. */
static void w_tensor_head(pbw *t, int rank, const int64_t *dims, int dtype)
{
	for (int i = 0; i < rank; i++)
		pbw_int(t, 1, (uint64_t)dims[i]);
	pbw_int(t, 2, (uint64_t)dtype);
	pbw_str(t, 8, "W");
}

static int contains_ci(const char *hay, const char *needle)
{
	size_t n = strlen(needle);
	for (; *hay; hay++)
		if (strncasecmp(hay, needle, n) == 0)
			return 1;
	return 0;
}

/* Loads the model in w (consumed) and checks the code and a key word. */
static void expect_reject(pbw *w, const char *base_dir, const char *what, int code1, int code2,
			  const char *word1, const char *word2)
{
	aidos_model *m = NULL;
	char err[512] = "";
	uint8_t *buf = malloc(w->n);
	memcpy(buf, w->b, w->n);
	snprintf(cur_desc, sizeof cur_desc, "hostile file: %s", what);
	cur_buf = buf;
	cur_len = w->n;
	int rc = aidos_model_load_buffer(buf, w->n, base_dir, &m, err, sizeof err);
	print_message("  %-44s -> %s: %s\n", what, aidos_strerror(rc), err);
	if (rc == 0) {
		aidos_model_free(m);
		fail_msg("%s: loaded", what);
	}
	assert_null(m);
	if (rc != code1 && rc != code2)
		fail_msg("%s: got %s (%d), want %s%s%s", what, aidos_strerror(rc), rc, aidos_strerror(code1),
			 code2 != code1 ? " or " : "", code2 != code1 ? aidos_strerror(code2) : "");
	if (!contains_ci(err, word1) && !(word2 && contains_ci(err, word2)))
		fail_msg("%s: message '%s' does not mention '%s'%s%s", what, err, word1,
			 word2 ? " or " : "", word2 ? word2 : "");
	cur_buf = NULL;
	free(buf);
	free(w->b);
	memset(w, 0, sizeof *w);
}

/* The builder itself is right: the plain model loads (and plans when aidos has Add). */
static void test_hostile_control(void **state)
{
	install_crash_capture();
	pbw w = { 0 }, g = { 0 }, t = { 0 };
	static const int64_t d[2] = { 1, 4 };
	static const float vals[4] = { 1, 2, 3, 4 };
	w_tensor_head(&t, 2, d, AIDOS_DT_FLOAT);
	pbw_bytes(&t, 9, vals, sizeof vals);
	w_graph_with_init(&g, &t);
	w_model(&w, &g);
	aidos_model *m = NULL;
	char err[512] = "";
	int rc = aidos_model_load_buffer(w.b, w.n, NULL, &m, err, sizeof err);
	if (rc)
		fail_msg("control model does not load: %s: %s", aidos_strerror(rc), err);
	assert_int_equal(aidos_model_n_inputs(m), 1);
	counts c = { 0 };
	plan_and_run(m, &c);
	aidos_model_free(m);
	free(w.b);
}

static void nest_if(pbw *out, int depth)
{
	/* innermost: an empty-but-valid branch (Identity) */
	static const int64_t d[1] = { 1 };
	pbw g = { 0 };
	w_node(&g, "Identity", "x", NULL, "y0", NULL);
	w_value(&g, 12, "y0", 1, d);
	for (int i = 1; i < depth; i++) {
		pbw attr = { 0 }, outer = { 0 };
		pbw_str(&attr, 1, "then_branch");
		pbw_int(&attr, 20, IR_ATTR_GRAPH);
		pbw_take(&attr, 6, &g);
		w_node(&outer, "If", "c", NULL, "y0", &attr);
		w_value(&outer, 12, "y0", 1, d);
		g = outer;
	}
	w_model(out, &g);
}

static void test_hostile_deep_nesting(void **state)
{
	install_crash_capture();
	pbw w = { 0 };
	nest_if(&w, 1000);
	expect_reject(&w, NULL, "subgraphs nested 1000 deep", AIDOS_E_UNSUPPORTED, AIDOS_E_INVALID,
		      "nested", "depth");
	nest_if(&w, IR_MAX_DEPTH + 2);
	expect_reject(&w, NULL, "subgraphs nested IR_MAX_DEPTH + 2 deep", AIDOS_E_UNSUPPORTED,
		      AIDOS_E_INVALID, "nested", "depth");
	/* and a shallow one is not rejected for its depth */
	nest_if(&w, 3);
	aidos_model *m = NULL;
	char err[512] = "";
	int rc = aidos_model_load_buffer(w.b, w.n, NULL, &m, err, sizeof err);
	if (rc && (contains_ci(err, "nested") || contains_ci(err, "depth")))
		fail_msg("3 levels rejected for depth: %s", err);
	aidos_model_free(m);
	free(w.b);
}

static void test_hostile_huge_dims(void **state)
{
	install_crash_capture();
	static const int64_t d62[2] = { (int64_t)1 << 31, (int64_t)1 << 31 };  /* 2^62 elements */
	static const uint8_t few[16] = { 0 };
	pbw w = { 0 }, g = { 0 }, t = { 0 };
	w_tensor_head(&t, 2, d62, AIDOS_DT_UINT8);
	pbw_bytes(&t, 9, few, sizeof few);
	w_graph_with_init(&g, &t);
	w_model(&w, &g);
	expect_reject(&w, NULL, "dims of 2^62 uint8 elements, 16 raw bytes", AIDOS_E_INVALID,
		      AIDOS_E_RANGE, "overflow", "raw_data");
	/* the same count with no data at all, and as float (2^64 bytes) */
	w_tensor_head(&t, 2, d62, AIDOS_DT_FLOAT);
	w_graph_with_init(&g, &t);
	w_model(&w, &g);
	expect_reject(&w, NULL, "dims of 2^62 float elements, no data", AIDOS_E_INVALID, AIDOS_E_RANGE,
		      "overflow", "elements");
	static const int64_t d63[3] = { INT64_MAX, 2, 2 };
	w_tensor_head(&t, 3, d63, AIDOS_DT_FLOAT);
	pbw_bytes(&t, 9, few, sizeof few);
	w_graph_with_init(&g, &t);
	w_model(&w, &g);
	expect_reject(&w, NULL, "dims [INT64_MAX,2,2]", AIDOS_E_INVALID, AIDOS_E_RANGE, "overflow",
		      "raw_data");
}

static void test_hostile_short_raw_data(void **state)
{
	install_crash_capture();
	static const int64_t d[2] = { 4, 4 };
	static const float vals[2] = { 1, 2 };
	pbw w = { 0 }, g = { 0 }, t = { 0 };
	w_tensor_head(&t, 2, d, AIDOS_DT_FLOAT);
	pbw_bytes(&t, 9, vals, sizeof vals);
	w_graph_with_init(&g, &t);
	w_model(&w, &g);
	expect_reject(&w, NULL, "raw_data of 8 bytes for float[4,4]", AIDOS_E_INVALID, AIDOS_E_TRUNCATED,
		      "raw_data", NULL);
	/* float_data with fewer values than dims */
	w_tensor_head(&t, 2, d, AIDOS_DT_FLOAT);
	pbw_bytes(&t, 4, vals, sizeof vals);
	w_graph_with_init(&g, &t);
	w_model(&w, &g);
	expect_reject(&w, NULL, "float_data of 2 values for float[4,4]", AIDOS_E_INVALID,
		      AIDOS_E_TRUNCATED, "values", "elements");
}

static void test_hostile_length_past_end(void **state)
{
	install_crash_capture();
	pbw w = { 0 };
	pbw_int(&w, 1, 8);
	pbw_tag(&w, 7, 2);
	pbw_varint(&w, 1000);  /* graph of 1000 bytes ... */
	pbw_raw(&w, "\x0a\x02\x00\x00", 4);  /* ... of which 4 follow */
	expect_reject(&w, NULL, "graph length 1000 with 4 bytes left", AIDOS_E_TRUNCATED, AIDOS_E_INVALID,
		      "past the end", "truncated");
	/* a string inside a node claiming 2^40 bytes */
	pbw g = { 0 }, n = { 0 };
	pbw_tag(&n, 4, 2);
	pbw_varint(&n, (uint64_t)1 << 40);
	pbw_raw(&n, "Add", 3);
	pbw_take(&g, 1, &n);
	w_model(&w, &g);
	expect_reject(&w, NULL, "op_type length 2^40", AIDOS_E_TRUNCATED, AIDOS_E_INVALID, "past the end",
		      "truncated");
}

static void test_hostile_varint_overflow(void **state)
{
	install_crash_capture();
	pbw w = { 0 };
	/* ir_version: 10 bytes whose last carries more than bit 63 */
	pbw_tag(&w, 1, 0);
	pbw_raw(&w, "\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f", 10);
	expect_reject(&w, NULL, "10-byte varint overflowing 64 bits", AIDOS_E_INVALID, AIDOS_E_RANGE,
		      "varint", "overlong");
	/* an 11-byte varint */
	pbw_tag(&w, 1, 0);
	pbw_raw(&w, "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 11);
	expect_reject(&w, NULL, "11-byte varint", AIDOS_E_INVALID, AIDOS_E_RANGE, "varint", "overlong");
	/* an overlong length prefix */
	pbw_int(&w, 1, 8);
	pbw_tag(&w, 7, 2);
	pbw_raw(&w, "\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x00", 11);
	expect_reject(&w, NULL, "11-byte length prefix", AIDOS_E_INVALID, AIDOS_E_TRUNCATED, "length",
		      "varint");
	/* a field key varint that ends the file */
	pbw_int(&w, 1, 8);
	pbw_raw(&w, "\xba", 1);
	expect_reject(&w, NULL, "field key cut in the middle", AIDOS_E_TRUNCATED, AIDOS_E_INVALID,
		      "truncated", "key");
}

static void test_hostile_negative_dims(void **state)
{
	install_crash_capture();
	static const int64_t d[2] = { -5, 4 };
	static const float vals[4] = { 0 };
	pbw w = { 0 }, g = { 0 }, t = { 0 };
	w_tensor_head(&t, 2, d, AIDOS_DT_FLOAT);
	pbw_bytes(&t, 9, vals, sizeof vals);
	w_graph_with_init(&g, &t);
	w_model(&w, &g);
	expect_reject(&w, NULL, "initializer dims [-5,4]", AIDOS_E_INVALID, AIDOS_E_SHAPE, "negative", NULL);
	/* a negative dim_value on a graph input: load may accept it, nothing may crash */
	static const int64_t nd[2] = { -3, 4 };
	pbw g2 = { 0 };
	w_node(&g2, "Relu", "x", NULL, "y", NULL);
	w_value(&g2, 11, "x", 2, nd);
	w_value(&g2, 12, "y", 2, nd);
	w_model(&w, &g2);
	counts c = { 0 };
	try_input(w.b, w.n, &c, "graph input with dim_value -3");
	print_message("  %-44s -> %s\n", "graph input dim_value -3", c.loaded ? "loaded" : "rejected");
	free(w.b);
}

/* external_data with location loc (and the usual keys). */
static void w_external_model(pbw *w, const char *loc)
{
	static const int64_t d[2] = { 1, 4 };
	pbw g = { 0 }, t = { 0 }, e = { 0 };
	w_tensor_head(&t, 2, d, AIDOS_DT_FLOAT);
	pbw_str(&e, 1, "location");
	pbw_str(&e, 2, loc);
	pbw_take(&t, 13, &e);
	pbw_int(&t, 14, 1);  /* data_location = EXTERNAL */
	w_graph_with_init(&g, &t);
	w_model(w, &g);
}

static void test_hostile_external_data(void **state)
{
	install_crash_capture();
	char dir[] = "/tmp/aidos-loader-fuzz-XXXXXX";
	assert_non_null(mkdtemp(dir));
	static const char *const bad[] = { "../../etc/passwd", "/etc/passwd", "a/../../etc/passwd", "..",
					   "sub/.." };
	pbw w = { 0 };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char what[128];
		w_external_model(&w, bad[i]);
		snprintf(what, sizeof what, "external data at '%s'", bad[i]);
		expect_reject(&w, dir, what, AIDOS_E_INVALID, AIDOS_E_NOTFOUND, "escapes", "location");
	}
	/* the same through a file on disk (the loader's own base_dir) */
	char mpath[256];
	snprintf(mpath, sizeof mpath, "%s/model.onnx", dir);
	w_external_model(&w, "../../etc/passwd");
	FILE *fp = fopen(mpath, "wb");
	assert_non_null(fp);
	assert_int_equal(fwrite(w.b, 1, w.n, fp), w.n);
	fclose(fp);
	free(w.b);
	memset(&w, 0, sizeof w);
	aidos_model *m = NULL;
	char err[512] = "";
	int rc = aidos_model_load(mpath, &m, err, sizeof err);
	print_message("  %-44s -> %s: %s\n", "file with external '../../etc/passwd'", aidos_strerror(rc), err);
	assert_int_equal(rc, AIDOS_E_INVALID);
	assert_true(contains_ci(err, "escapes"));
	/* control: a file inside the folder is used */
	static const float vals[4] = { 1, 2, 3, 4 };
	char wpath[256];
	snprintf(wpath, sizeof wpath, "%s/w.bin", dir);
	fp = fopen(wpath, "wb");
	assert_non_null(fp);
	assert_int_equal(fwrite(vals, 1, sizeof vals, fp), sizeof vals);
	fclose(fp);
	w_external_model(&w, "w.bin");
	fp = fopen(mpath, "wb");
	assert_non_null(fp);
	assert_int_equal(fwrite(w.b, 1, w.n, fp), w.n);
	fclose(fp);
	free(w.b);
	memset(&w, 0, sizeof w);
	rc = aidos_model_load(mpath, &m, err, sizeof err);
	if (rc)
		fail_msg("external data inside the model folder: %s: %s", aidos_strerror(rc), err);
	aidos_model_free(m);
	unlink(wpath);
	unlink(mpath);
	rmdir(dir);
}

static void test_hostile_repeated_count(void **state)
{
	install_crash_capture();
	static const int64_t d[1] = { 1000000000 };
	pbw w = { 0 }, g = { 0 }, t = { 0 };
	/* int64_data packed, the length claims 8e9 bytes (1e9 values) */
	w_tensor_head(&t, 1, d, AIDOS_DT_INT64);
	pbw_tag(&t, 7, 2);
	pbw_varint(&t, 8000000000ull);
	pbw_raw(&t, "\x01\x02\x03", 3);
	w_graph_with_init(&g, &t);
	w_model(&w, &g);
	expect_reject(&w, NULL, "int64_data claiming 1e9 values", AIDOS_E_TRUNCATED, AIDOS_E_INVALID,
		      "past the end", "truncated");
	/* dims claim 1e9 elements, float_data holds 3 */
	static const float three[3] = { 1, 2, 3 };
	w_tensor_head(&t, 1, d, AIDOS_DT_FLOAT);
	pbw_bytes(&t, 4, three, sizeof three);
	w_graph_with_init(&g, &t);
	w_model(&w, &g);
	expect_reject(&w, NULL, "dims [1e9] with 3 float_data values", AIDOS_E_INVALID, AIDOS_E_TRUNCATED,
		      "values", "elements");
	/* an INTS attribute whose packed length claims 1e9 values */
	pbw attr = { 0 }, g2 = { 0 };
	static const int64_t vd[2] = { 1, 4 };
	pbw_str(&attr, 1, "perm");
	pbw_int(&attr, 20, IR_ATTR_INTS);
	pbw_tag(&attr, 8, 2);
	pbw_varint(&attr, 1000000000ull);
	pbw_raw(&attr, "\x01\x00", 2);
	w_node(&g2, "Transpose", "x", NULL, "y", &attr);
	w_value(&g2, 11, "x", 2, vd);
	w_value(&g2, 12, "y", 2, vd);
	w_model(&w, &g2);
	expect_reject(&w, NULL, "INTS attribute claiming 1e9 values", AIDOS_E_TRUNCATED, AIDOS_E_INVALID,
		      "past the end", "truncated");
	/* 1e6 one-byte dims entries: rank far over the limit */
	pbw t2 = { 0 }, g3 = { 0 };
	for (int i = 0; i < 100000; i++)
		pbw_int(&t2, 1, 1);
	pbw_int(&t2, 2, AIDOS_DT_FLOAT);
	pbw_str(&t2, 8, "W");
	w_graph_with_init(&g3, &t2);
	w_model(&w, &g3);
	expect_reject(&w, NULL, "100000 dims entries", AIDOS_E_UNSUPPORTED, AIDOS_E_INVALID, "rank", NULL);
}

/* ---- nested truncation: the file ends inside an inner message ----
 * A plain prefix is rejected by the outermost length check, so the inner
 * decoders never see it. Here the file is cut at offset `cut` and every
 * enclosing length prefix is rewritten to match: each message that spans the
 * cut ends there, so TensorProto, NodeProto, AttributeProto... meet bytes
 * that stop mid-field, mid-packed-list or mid-raw_data. A field counts as a
 * message when its bytes parse as one (a heuristic: what a string or raw
 * bytes happen to parse as is cut at a field boundary, equally hostile). */
typedef struct pfield {
	uint32_t num, wt;
	const uint8_t *start, *payload, *end;  /* whole field; payload of LEN */
} pfield;

static int p_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	uint64_t r = 0;
	for (int i = 0; i < 10 && *p < end; i++) {
		uint8_t c = *(*p)++;
		r |= (uint64_t)(c & 0x7f) << (7 * i);
		if (!(c & 0x80)) {
			*v = r;
			return 0;
		}
	}
	return -1;
}

/* 1: a field read; 0: end; -1: not a valid field. */
static int p_next(const uint8_t **p, const uint8_t *end, pfield *f)
{
	uint64_t key, v;
	if (*p >= end)
		return 0;
	f->start = *p;
	if (p_varint(p, end, &key) || (key >> 3) == 0 || (key >> 3) > 0x1fffffff)
		return -1;
	f->num = (uint32_t)(key >> 3);
	f->wt = (uint32_t)(key & 7);
	f->payload = NULL;
	switch (f->wt) {
	case 0:
		if (p_varint(p, end, &v))
			return -1;
		break;
	case 1:
	case 5: {
		size_t k = f->wt == 1 ? 8 : 4;
		if ((size_t)(end - *p) < k)
			return -1;
		*p += k;
		break;
	}
	case 2:
		if (p_varint(p, end, &v) || v > (uint64_t)(end - *p))
			return -1;
		f->payload = *p;
		*p += v;
		break;
	default:
		return -1;
	}
	f->end = *p;
	return 1;
}

static int looks_like_message(const uint8_t *b, size_t n)
{
	const uint8_t *p = b;
	pfield f;
	int rc, k = 0;
	while ((rc = p_next(&p, b + n, &f)) == 1)
		k++;
	return rc == 0 && k > 0;
}

/* Field start offsets at depth >= 1 (candidate cut points), up to cap. */
static void collect_cuts(const uint8_t *base, const uint8_t *b, size_t n, int depth, size_t *cuts,
			 size_t *nc, size_t cap)
{
	const uint8_t *p = b;
	pfield f;
	while (p_next(&p, b + n, &f) == 1) {
		if (depth > 0 && *nc < cap)
			cuts[(*nc)++] = (size_t)(f.start - base);
		if (f.wt == 2 && depth < 24 && f.end - f.payload > 1 &&
		    looks_like_message(f.payload, (size_t)(f.end - f.payload)))
			collect_cuts(base, f.payload, (size_t)(f.end - f.payload), depth + 1, cuts, nc, cap);
	}
}

/* Writes msg cut at offset cut (relative to msg) with lengths rewritten.
 * keep_after: the fields after the cut stay (only the innermost spanning
 * field is short: everything else is intact); else each message spanning the
 * cut ends there, except the top level (opset_import follows the graph). */
static void write_cut(pbw *w, const uint8_t *msg, size_t n, size_t cut, int depth, int keep_after)
{
	const uint8_t *p = msg;
	pfield f;
	while (p_next(&p, msg + n, &f) == 1) {
		size_t fs = (size_t)(f.start - msg), fe = (size_t)(f.end - msg);
		if (fe <= cut || fs >= cut) {
			if (fe <= cut || keep_after || depth == 0)
				pbw_raw(w, f.start, fe - fs);
			continue;
		}
		/* f spans the cut; a cut key or varint: the field is dropped */
		if (f.wt != 2 || (size_t)(f.payload - msg) > cut)
			continue;
		size_t ps = (size_t)(f.payload - msg), plen = (size_t)(f.end - f.payload);
		pbw sub = { 0 };
		if (depth < 24 && looks_like_message(f.payload, plen))
			write_cut(&sub, f.payload, plen, cut - ps, depth + 1, keep_after);
		else
			pbw_raw(&sub, f.payload, cut - ps);
		pbw_tag(w, f.num, 2);
		pbw_varint(w, sub.n);
		pbw_raw(w, sub.b, sub.n);
		free(sub.b);
	}
}

static void test_truncated_nested(void **state)
{
	if (!n_seeds)
		skip();
	counts c = { .t0 = now_s() };
	size_t cap = 1u << 20;
	size_t *cuts = malloc(cap * sizeof *cuts);
	assert_non_null(cuts);
	for (int i = 0; i < n_seeds; i++) {
		const seed *s = &seeds[i];
		size_t nc = 0;
		collect_cuts(s->buf, s->buf, s->len, 0, cuts, &nc, cap);
		if (!nc)
			continue;
		/* every field boundary (+0..3 bytes) of a small seed; 40 of a large one */
		size_t want = s->len > (1u << 20) ? 40 * (size_t)scale() : 200 * (size_t)scale();
		size_t step = nc / want + 1;
		for (size_t k = 0; k < nc; k += step) {
			size_t cut = cuts[k] + rnd_below(4);
			if (cut >= s->len)
				continue;
			pbw w = { 0 };
			int keep = (int)(k / step) & 1;
			write_cut(&w, s->buf, s->len, cut, 0, keep);
			try_input(w.b, w.n, &c, "%s cut at offset %zu (lengths rewritten, %s, %zu bytes)",
				  s->path, cut, keep ? "rest kept" : "rest dropped", w.n);
			free(w.b);
		}
	}
	free(cuts);
	print_counts("nested truncation", &c);
	assert_true(c.tried >= 1000 || n_seeds < 8);
}

/* ---- every kernel against nodes of the wrong arity and odd shapes ----
 * A node with no inputs, too many, absent ("") required ones, a scalar or an
 * empty tensor must be refused with an error at plan time (or run), never
 * crash: kernels may not assume the arity or rank the spec gives them. Each
 * try runs in a forked child so one crash does not hide the others. */
/* Each node shape: how many inputs (-1: absent first, -2: absent second),
 * and the shape of x. */
static const struct arity {
	const char *name;
	int n_in;
	int rank;
	int64_t d0;
} arity[] = {
	{ "no inputs", 0, 2, 1 },
	{ "x[1,4]", 1, 2, 1 },
	{ "x[1,4] twice", 2, 2, 1 },
	{ "x[1,4] three times", 3, 2, 1 },
	{ "x[1,4] six times", 6, 2, 1 },
	{ "absent first input", -1, 2, 1 },
	{ "absent second input", -2, 2, 1 },
	{ "scalar x", 1, 0, 1 },
	{ "scalar x twice", 2, 0, 1 },
	{ "scalar x three times", 3, 0, 1 },
	{ "x[0,4]", 1, 2, 0 },
	{ "x[0,4] twice", 2, 2, 0 },
	{ "x[0,4] three times", 3, 2, 0 },
};
#define N_ARITY ((int)(sizeof arity / sizeof arity[0]))

static void w_arity_model(pbw *w, const char *op, int v)
{
	static const int64_t d14[2] = { 1, 4 };
	const struct arity *a = &arity[v];
	int64_t dx[2] = { a->d0, 4 };
	pbw g = { 0 }, n = { 0 };
	if (a->n_in == -1) {
		pbw_str(&n, 1, "");
		pbw_str(&n, 1, "x");
	} else if (a->n_in == -2) {
		pbw_str(&n, 1, "x");
		pbw_str(&n, 1, "");
	}
	for (int i = 0; i < a->n_in; i++)
		pbw_str(&n, 1, "x");
	pbw_str(&n, 2, "y");
	pbw_str(&n, 4, op);
	pbw_take(&g, 1, &n);
	pbw_str(&g, 2, "g");
	w_value(&g, 11, "x", a->rank, dx);
	w_value(&g, 12, "y", 2, d14);
	w_model(w, &g);
}

static void save_crash_file(const char *name, const pbw *w, const char *line)
{
	char path[512];
	mkdir(CRASH_DIR, 0777);
	snprintf(path, sizeof path, CRASH_DIR "/%s.onnx", name);
	FILE *fp = fopen(path, "wb");
	if (fp) {
		fwrite(w->b, 1, w->n, fp);
		fclose(fp);
	}
	snprintf(path, sizeof path, CRASH_DIR "/%s.txt", name);
	if ((fp = fopen(path, "w"))) {
		fprintf(fp, "%s\n", line);
		fclose(fp);
	}
}

/* Child side: tries node shapes first.. of op; before each it writes the
 * shape's index to fd, after it the outcome (0x80 refused, 0x81 ran). */
static void arity_child(const char *op, int first, int fd)
{
	for (size_t k = 0; k < N_CRASH_SIGS; k++)
		signal(crash_sigs[k], SIG_DFL);
	alarm(60);
	for (int v = first; v < N_ARITY; v++) {
		uint8_t b = (uint8_t)v;
		if (write(fd, &b, 1) != 1)
			exit(2);
		pbw w = { 0 };
		w_arity_model(&w, op, v);
		aidos_model *m = NULL;
		char err[512] = "";
		b = 0x80;
		if (aidos_model_load_buffer(w.b, w.n, NULL, &m, err, sizeof err) == 0) {
			counts c = { 0 };
			plan_and_run(m, &c);
			b = c.ran ? 0x81 : 0x80;
			aidos_model_free(m);
		}
		free(w.b);
		if (write(fd, &b, 1) != 1)
			exit(2);
	}
	close(fd);
	exit(0);  /* exit(): LeakSanitizer checks the child */
}

static void test_hostile_op_arity(void **state)
{
	int n_ops = hal_op_count(), refused = 0, planned = 0, crashed = 0, bad_ops = 0;
	char bad[1024] = "";
	size_t o = 0;
	for (int i = 0; i < n_ops; i++) {
		const char *op = hal_op_at(i)->name;
		char shapes[1024] = "";
		size_t so = 0;
		int crashed0 = crashed;
		/* one child per op; after a crash, a new one from the next shape */
		for (int first = 0; first < N_ARITY;) {
			int fd[2];
			assert_int_equal(pipe(fd), 0);
			fflush(NULL);
			pid_t pid = fork();
			assert_true(pid >= 0);
			if (pid == 0) {
				close(fd[0]);
				arity_child(op, first, fd[1]);
			}
			close(fd[1]);
			int cur = -1, done = first;
			uint8_t b;
			ssize_t r;
			while ((r = read(fd[0], &b, 1)) != 0) {
				if (r < 0) {
					if (errno == EINTR)
						continue;
					break;
				}
				if (b < 0x80) {
					cur = b;
				} else {
					refused += b == 0x80;
					planned += b == 0x81;
					done = cur + 1;
					cur = -1;
				}
			}
			close(fd[0]);
			int ws = 0;
			while (waitpid(pid, &ws, 0) < 0 && errno == EINTR)
				;
			if (WIFEXITED(ws) && WEXITSTATUS(ws) == 0 && cur < 0)
				break;
			/* crashed in shape cur, or (cur < 0) failed at exit: a leak */
			char line[256], name[128];
			const char *shape = cur >= 0 ? arity[cur].name : "every shape (at exit)";
			crashed++;
			if (WIFSIGNALED(ws))
				snprintf(line, sizeof line, "%s node with %s: killed by signal %d (%s)", op, shape,
					 WTERMSIG(ws), strsignal(WTERMSIG(ws)));
			else
				snprintf(line, sizeof line, "%s node with %s: exit %d (sanitizer report above)", op,
					 shape, WEXITSTATUS(ws));
			pbw w = { 0 };
			w_arity_model(&w, op, cur >= 0 ? cur : 0);
			snprintf(name, sizeof name, "arity-%s-%d", op, cur);
			save_crash_file(name, &w, line);
			free(w.b);
			print_message("  crash: %s\n", line);
			so += (size_t)snprintf(shapes + so, so < sizeof shapes ? sizeof shapes - so : 0, "%s%s",
					       so ? "; " : "", shape);
			if (so >= sizeof shapes)
				so = sizeof shapes - 1;
			if (cur < 0)
				break;
			first = cur + 1;
			(void)done;
		}
		if (crashed > crashed0) {
			bad_ops++;
			print_message("    CRASH %s: %s\n", op, shapes);
			o += (size_t)snprintf(bad + o, o < sizeof bad ? sizeof bad - o : 0, "%s%s", o ? ", " : "", op);
			if (o >= sizeof bad)
				o = sizeof bad - 1;
		}
	}
	print_message("    op arity: %d kernels x %d node shapes: %d refused cleanly, %d ran, %d crashed\n",
		      n_ops, N_ARITY, refused, planned, crashed);
	if (crashed)
		fail_msg("%d crashes in %d kernels (inputs in " CRASH_DIR "/arity-*): %s", crashed, bad_ops, bad);
}

int main(void)
{
	/* hostile files first, the random ones later: under SAN=1 a sanitizer
	 * report ends the program, and the fixed checks should have run by then */
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hostile_control),
		cmocka_unit_test(test_hostile_deep_nesting),
		cmocka_unit_test(test_hostile_huge_dims),
		cmocka_unit_test(test_hostile_short_raw_data),
		cmocka_unit_test(test_hostile_length_past_end),
		cmocka_unit_test(test_hostile_varint_overflow),
		cmocka_unit_test(test_hostile_negative_dims),
		cmocka_unit_test(test_hostile_external_data),
		cmocka_unit_test(test_hostile_repeated_count),
		cmocka_unit_test(test_fuzz_regressions),
		cmocka_unit_test(test_seeds_load),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_tensor_decode),
		cmocka_unit_test(test_mutated),
		cmocka_unit_test(test_truncated_nested),
		cmocka_unit_test(test_hostile_op_arity),
	};
	return cmocka_run_group_tests(tests, setup_seeds, teardown_seeds);
}
