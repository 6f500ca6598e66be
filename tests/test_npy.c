/*
 * tests/test_npy.c - the .npy reader and writer (hal/npy.c).
 *
 * Files numpy wrote are read back exactly; files aidos writes are byte for
 * byte what numpy writes; every dtype and rank round-trips; and a table of
 * malformed files, plus every truncation and many byte flips of a valid one,
 * are refused with the right error code and a message (never a crash: run it
 * under `make san-test` too).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aidos/npy.h"
#include "hal/npy.h"
#include "tests/npy_numpy.h"

static char tmpdir[256];

static int setup_dir(void **state)
{
	const char *base = getenv("TMPDIR");

	snprintf(tmpdir, sizeof tmpdir, "%s/aidos-test-npy-XXXXXX", base && *base ? base : "/tmp");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
	char cmd[320];

	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static void path_of(char *buf, size_t n, const char *name)
{
	snprintf(buf, n, "%s/%s", tmpdir, name);
}

static void write_file(const char *path, const void *buf, size_t len)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(buf, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static unsigned char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	unsigned char *b;
	long n;

	assert_non_null(f);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	assert_true(n >= 0);
	rewind(f);
	b = malloc((size_t)n + 1);
	assert_non_null(b);
	assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return b;
}

/* ---- numpy's files read back ---- */

static void check_numpy(const unsigned char *file, size_t len, int dtype, int rank,
			const int64_t *dims, const void *data, size_t nbytes)
{
	aidos_tensor t, u;
	void *own = NULL, *own2 = NULL;
	char err[256] = "", path[300];

	assert_int_equal(aidos_npy_load_buffer(file, len, &t, &own, err, sizeof err), 0);
	assert_non_null(own);
	assert_ptr_equal(t.data, own);
	assert_null(t.name);
	assert_int_equal(t.dtype, dtype);
	assert_int_equal(t.rank, rank);
	for (int i = 0; i < rank; i++)
		assert_int_equal(t.dims[i], dims[i]);
	assert_int_equal((uintptr_t)t.data % 64, 0);
	if (nbytes)
		assert_memory_equal(t.data, data, nbytes);

	/* The same bytes through a file. */
	path_of(path, sizeof path, "numpy.npy");
	write_file(path, file, len);
	assert_int_equal(aidos_npy_load(path, &u, &own2, err, sizeof err), 0);
	assert_int_equal(u.dtype, dtype);
	assert_int_equal(u.rank, rank);
	assert_memory_equal(u.dims, t.dims, sizeof t.dims);
	if (nbytes)
		assert_memory_equal(u.data, data, nbytes);
	aidos_npy_free(own);
	aidos_npy_free(own2);
}

static void test_read_numpy_files(void **state)
{
	const float f4[6] = { -1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f };
	const int64_t i8 = -16000, i8p = 16000;
	const uint8_t u1[3] = { 0, 1, 255 }, b1[4] = { 1, 0, 0, 1 };
	const int32_t i4[5] = { 1, -2, 3, -4, 5 };
	const int8_t i1[4] = { -128, 127, 0, -1 };
	const double f8[2] = { 0.25, -3.0 };

	check_numpy(np_f4_2x3, sizeof np_f4_2x3, AIDOS_DT_FLOAT, 2, (int64_t[]){ 2, 3 }, f4, sizeof f4);
	check_numpy(np_i8_scalar_v2, sizeof np_i8_scalar_v2, AIDOS_DT_INT64, 0, NULL, &i8, 8);
	check_numpy(np_i8_scalar, sizeof np_i8_scalar, AIDOS_DT_INT64, 0, NULL, &i8p, 8);
	check_numpy(np_u1_v3, sizeof np_u1_v3, AIDOS_DT_UINT8, 1, (int64_t[]){ 3 }, u1, 3);
	check_numpy(np_b1, sizeof np_b1, AIDOS_DT_BOOL, 2, (int64_t[]){ 2, 2 }, b1, 4);
	check_numpy(np_f8_0x3, sizeof np_f8_0x3, AIDOS_DT_DOUBLE, 2, (int64_t[]){ 0, 3 }, NULL, 0);
	check_numpy(np_i4_5, sizeof np_i4_5, AIDOS_DT_INT32, 1, (int64_t[]){ 5 }, i4, sizeof i4);
	check_numpy(np_i1_2x1x2, sizeof np_i1_2x1x2, AIDOS_DT_INT8, 3, (int64_t[]){ 2, 1, 2 }, i1, 4);
	check_numpy(np_f8_2, sizeof np_f8_2, AIDOS_DT_DOUBLE, 1, (int64_t[]){ 2 }, f8, sizeof f8);
}

/* ---- aidos's files are numpy's files ---- */

static void check_same_as_numpy(const char *name, const aidos_tensor *t,
				const unsigned char *want, size_t wlen)
{
	char path[300];
	unsigned char *got;
	size_t glen;

	path_of(path, sizeof path, name);
	assert_int_equal(aidos_npy_save(path, t), 0);
	got = read_file(path, &glen);
	if (glen != wlen || memcmp(got, want, wlen))
		fail_msg("%s: aidos_npy_save wrote %zu bytes that differ from numpy's %zu",
			 name, glen, wlen);
	free(got);
}

static void test_save_matches_numpy(void **state)
{
	float f4[6] = { -1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f };
	uint8_t b1[4] = { 1, 0, 0, 1 };
	int32_t i4[5] = { 1, -2, 3, -4, 5 };
	int8_t i1[4] = { -128, 127, 0, -1 };
	int64_t i8 = 16000;
	double f8[2] = { 0.25, -3.0 };
	aidos_tensor t;

	t = (aidos_tensor){ .dtype = AIDOS_DT_FLOAT, .rank = 2, .dims = { 2, 3 }, .data = f4 };
	check_same_as_numpy("f4.npy", &t, np_f4_2x3, sizeof np_f4_2x3);
	t = (aidos_tensor){ .dtype = AIDOS_DT_BOOL, .rank = 2, .dims = { 2, 2 }, .data = b1 };
	check_same_as_numpy("b1.npy", &t, np_b1, sizeof np_b1);
	t = (aidos_tensor){ .dtype = AIDOS_DT_DOUBLE, .rank = 2, .dims = { 0, 3 }, .data = NULL };
	check_same_as_numpy("f8z.npy", &t, np_f8_0x3, sizeof np_f8_0x3);
	t = (aidos_tensor){ .dtype = AIDOS_DT_INT32, .rank = 1, .dims = { 5 }, .data = i4 };
	check_same_as_numpy("i4.npy", &t, np_i4_5, sizeof np_i4_5);
	t = (aidos_tensor){ .dtype = AIDOS_DT_INT8, .rank = 3, .dims = { 2, 1, 2 }, .data = i1 };
	check_same_as_numpy("i1.npy", &t, np_i1_2x1x2, sizeof np_i1_2x1x2);
	t = (aidos_tensor){ .dtype = AIDOS_DT_INT64, .rank = 0, .data = &i8 };
	check_same_as_numpy("i8.npy", &t, np_i8_scalar, sizeof np_i8_scalar);
	t = (aidos_tensor){ .dtype = AIDOS_DT_DOUBLE, .rank = 1, .dims = { 2 }, .data = f8 };
	check_same_as_numpy("f8.npy", &t, np_f8_2, sizeof np_f8_2);
}

/* ---- round trips ---- */

static void roundtrip(int dtype, size_t esize, int rank, const int64_t *dims)
{
	aidos_tensor t = { .dtype = dtype, .rank = rank }, u;
	size_t n = 1, nbytes;
	unsigned char *data;
	void *own = NULL;
	char err[256] = "", path[300];

	for (int i = 0; i < rank; i++) {
		t.dims[i] = dims[i];
		n *= (size_t)dims[i];
	}
	nbytes = n * esize;
	data = malloc(nbytes + 1);
	assert_non_null(data);
	for (size_t i = 0; i < nbytes; i++)
		data[i] = dtype == AIDOS_DT_BOOL ? (unsigned char)(i * 7 % 3 == 0)
						 : (unsigned char)(i * 131 + 17);
	t.data = data;
	path_of(path, sizeof path, "rt.npy");
	assert_int_equal(aidos_npy_save(path, &t), 0);
	if (aidos_npy_load(path, &u, &own, err, sizeof err))
		fail_msg("load after save: %s", err);
	assert_int_equal(u.dtype, dtype);
	assert_int_equal(u.rank, rank);
	for (int i = 0; i < rank; i++)
		assert_int_equal(u.dims[i], dims[i]);
	if (nbytes)
		assert_memory_equal(u.data, data, nbytes);
	aidos_npy_free(own);
	free(data);
}

static void test_roundtrip_all_dtypes(void **state)
{
	static const struct { int dtype; size_t size; } ty[] = {
		{ AIDOS_DT_FLOAT, 4 }, { AIDOS_DT_DOUBLE, 8 }, { AIDOS_DT_INT64, 8 },
		{ AIDOS_DT_INT32, 4 }, { AIDOS_DT_BOOL, 1 }, { AIDOS_DT_UINT8, 1 },
		{ AIDOS_DT_INT8, 1 },
	};
	const int64_t d1[] = { 7 }, d4[] = { 1, 3, 5, 4 }, d8[] = { 2, 1, 2, 1, 3, 1, 1, 2 },
		      dz[] = { 3, 0, 2 }, dbig[] = { 1, 3, 64, 64 };

	for (size_t i = 0; i < sizeof ty / sizeof ty[0]; i++) {
		roundtrip(ty[i].dtype, ty[i].size, 0, NULL);
		roundtrip(ty[i].dtype, ty[i].size, 1, d1);
		roundtrip(ty[i].dtype, ty[i].size, 4, d4);
		roundtrip(ty[i].dtype, ty[i].size, 8, d8);
		roundtrip(ty[i].dtype, ty[i].size, 3, dz);
		roundtrip(ty[i].dtype, ty[i].size, 4, dbig);
	}
	/* A first axis as long as numpy ever writes (its growth padding). */
	roundtrip(AIDOS_DT_UINT8, 1, 2, (int64_t[]){ 1000000000000000000LL, 0 });
}

static void test_descr_names(void **state)
{
	assert_string_equal(aidos_npy_descr(AIDOS_DT_FLOAT), "<f4");
	assert_string_equal(aidos_npy_descr(AIDOS_DT_BOOL), "|b1");
	assert_string_equal(aidos_npy_descr(AIDOS_DT_INT64), "<i8");
	assert_null(aidos_npy_descr(10));  /* float16 */
	assert_null(aidos_npy_descr(0));
}

/* ---- malformed files ---- */

/* Builds a .npy file: prefix of version major, the header text verbatim
 * (hlen_override >= 0 replaces the length field), then ndata data bytes. */
static size_t build(unsigned char *out, size_t cap, int major, const char *header,
		    long hlen_override, size_t ndata)
{
	size_t pre = major == 1 ? 10 : 12, hl = strlen(header), n;
	unsigned long hlv = hlen_override >= 0 ? (unsigned long)hlen_override : hl;

	n = pre + hl + ndata;
	assert_true(n <= cap);
	memcpy(out, "\x93NUMPY", 6);
	out[6] = (unsigned char)major;
	out[7] = 0;
	out[8] = (unsigned char)(hlv & 0xff);
	out[9] = (unsigned char)(hlv >> 8 & 0xff);
	if (major != 1) {
		out[10] = (unsigned char)(hlv >> 16 & 0xff);
		out[11] = (unsigned char)(hlv >> 24 & 0xff);
	}
	memcpy(out + pre, header, hl);
	for (size_t i = 0; i < ndata; i++)
		out[pre + hl + i] = (unsigned char)(i & 1);
	return n;
}

#define H(d, f, s) "{'descr': " d ", 'fortran_order': " f ", 'shape': " s ", }\n"

static const struct bad_case {
	const char *what;
	int major;
	const char *header;
	long hlen;        /* -1: the header's length */
	size_t ndata;
	int want;
} bad_cases[] = {
	{ "version 4.0", 4, H("'<f4'", "False", "(2,)"), -1, 8, AIDOS_E_UNSUPPORTED },
	{ "header length 0", 1, H("'<f4'", "False", "(2,)"), 0, 8, AIDOS_E_INVALID },
	{ "header length past the end", 1, H("'<f4'", "False", "(2,)"), 4000, 8, AIDOS_E_TRUNCATED },
	{ "header length over the cap", 2, H("'<f4'", "False", "(2,)"), 0x100000, 8, AIDOS_E_INVALID },
	{ "not a dict", 1, "['descr', '<f4']\n", -1, 0, AIDOS_E_INVALID },
	{ "missing descr", 1, "{'fortran_order': False, 'shape': (2,), }\n", -1, 8, AIDOS_E_INVALID },
	{ "missing shape", 1, "{'descr': '<f4', 'fortran_order': False}\n", -1, 8, AIDOS_E_INVALID },
	{ "missing fortran_order", 1, "{'descr': '<f4', 'shape': (2,)}\n", -1, 8, AIDOS_E_INVALID },
	{ "extra key", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}\n", -1, 8, AIDOS_E_INVALID },
	{ "duplicate key", 1, "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}\n", -1, 8, AIDOS_E_INVALID },
	{ "unquoted key", 1, "{descr: '<f4', 'fortran_order': False, 'shape': (2,)}\n", -1, 8, AIDOS_E_INVALID },
	{ "missing colon", 1, "{'descr' '<f4', 'fortran_order': False, 'shape': (2,)}\n", -1, 8, AIDOS_E_INVALID },
	{ "missing comma", 1, "{'descr': '<f4' 'fortran_order': False, 'shape': (2,)}\n", -1, 8, AIDOS_E_INVALID },
	{ "unterminated string", 1, "{'descr: '<f4', 'fortran_order': False, 'shape': (2,)}\n", -1, 8, AIDOS_E_INVALID },
	{ "unterminated dict", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)\n", -1, 8, AIDOS_E_INVALID },
	{ "bytes after the dict", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} x\n", -1, 8, AIDOS_E_INVALID },
	{ "escape in a string", 1, H("'<f\\4'", "False", "(2,)"), -1, 8, AIDOS_E_INVALID },
	{ "fortran_order not a bool", 1, H("'<f4'", "0", "(2,)"), -1, 8, AIDOS_E_INVALID },
	{ "big-endian", 1, H("'>f4'", "False", "(2,)"), -1, 8, AIDOS_E_UNSUPPORTED },
	{ "float16", 1, H("'<f2'", "False", "(2,)"), -1, 4, AIDOS_E_UNSUPPORTED },
	{ "unicode strings", 1, H("'<U3'", "False", "(2,)"), -1, 24, AIDOS_E_UNSUPPORTED },
	{ "object array", 1, H("'|O'", "False", "(2,)"), -1, 16, AIDOS_E_UNSUPPORTED },
	{ "structured dtype", 1, H("[('a', '<f4')]", "False", "(2,)"), -1, 8, AIDOS_E_UNSUPPORTED },
	{ "Fortran order", 1, H("'<f4'", "True", "(2, 3)"), -1, 24, AIDOS_E_UNSUPPORTED },
	{ "shape not a tuple", 1, H("'<f4'", "False", "(2)"), -1, 8, AIDOS_E_INVALID },
	{ "shape a list", 1, H("'<f4'", "False", "[2]"), -1, 8, AIDOS_E_INVALID },
	{ "negative dimension", 1, H("'<f4'", "False", "(-2,)"), -1, 8, AIDOS_E_INVALID },
	{ "dimension not a number", 1, H("'<f4'", "False", "(a,)"), -1, 8, AIDOS_E_INVALID },
	{ "double comma", 1, H("'<f4'", "False", "(2,,)"), -1, 8, AIDOS_E_INVALID },
	{ "no comma between dims", 1, H("'<f4'", "False", "(2 3)"), -1, 24, AIDOS_E_INVALID },
	{ "dimension over int64", 1, H("'<f4'", "False", "(99999999999999999999,)"), -1, 8, AIDOS_E_RANGE },
	{ "element count overflow", 1, H("'<f4'", "False", "(4294967296, 4294967296, 16)"), -1, 8, AIDOS_E_RANGE },
	{ "byte size overflow", 1, H("'<f8'", "False", "(4611686018427387904,)"), -1, 8, AIDOS_E_RANGE },
	{ "rank 9", 1, H("'<f4'", "False", "(1, 1, 1, 1, 1, 1, 1, 1, 2)"), -1, 8, AIDOS_E_UNSUPPORTED },
	{ "data truncated", 1, H("'<f4'", "False", "(2, 3)"), -1, 23, AIDOS_E_TRUNCATED },
	{ "no data at all", 1, H("'<i8'", "False", "()"), -1, 0, AIDOS_E_TRUNCATED },
	{ "trailing bytes", 1, H("'<f4'", "False", "(2, 3)"), -1, 25, AIDOS_E_INVALID },
	{ "bool that is 2", 1, H("'|b1'", "False", "(2,)"), -1, 0, AIDOS_E_INVALID },
};

static void test_malformed_rejected(void **state)
{
	unsigned char buf[512];
	char err[256], path[300];

	for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
		const struct bad_case *c = &bad_cases[i];
		size_t n = build(buf, sizeof buf, c->major, c->header, c->hlen, c->ndata);
		aidos_tensor t = { .rank = -7 };
		void *own = (void *)1;
		int rc;

		if (!strcmp(c->what, "bool that is 2")) {
			buf[n++] = 1;
			buf[n++] = 2;
		}
		for (int via_file = 0; via_file < 2; via_file++) {
			err[0] = '\0';
			own = (void *)1;
			if (via_file) {
				path_of(path, sizeof path, "bad.npy");
				write_file(path, buf, n);
				rc = aidos_npy_load(path, &t, &own, err, sizeof err);
			} else {
				rc = aidos_npy_load_buffer(buf, n, &t, &own, err, sizeof err);
			}
			if (rc != c->want)
				fail_msg("%s (%s): got %d (%s), want %d", c->what,
					 via_file ? "file" : "buffer", rc, err, c->want);
			assert_null(own);
			assert_int_equal(t.rank, -7);  /* untouched on error */
			if (!err[0])
				fail_msg("%s: no error message", c->what);
		}
	}
}

static void test_bad_magic_and_tiny(void **state)
{
	unsigned char buf[160];
	aidos_tensor t;
	void *own;
	char err[256], path[300];

	memcpy(buf, np_f4_2x3, sizeof np_f4_2x3);
	buf[1] = 'M';
	assert_int_equal(aidos_npy_load_buffer(buf, sizeof np_f4_2x3, &t, &own, err, sizeof err),
			 AIDOS_E_INVALID);
	assert_non_null(strstr(err, "magic"));
	assert_int_equal(aidos_npy_load_buffer(buf, 0, &t, &own, err, sizeof err), AIDOS_E_INVALID);
	assert_int_equal(aidos_npy_load_buffer(np_f4_2x3, 7, &t, &own, err, sizeof err),
			 AIDOS_E_TRUNCATED);
	memcpy(buf, np_f4_2x3, sizeof np_f4_2x3);
	buf[7] = 1;  /* version 1.1 */
	assert_int_equal(aidos_npy_load_buffer(buf, sizeof np_f4_2x3, &t, &own, err, sizeof err),
			 AIDOS_E_UNSUPPORTED);

	path_of(path, sizeof path, "empty.npy");
	write_file(path, "", 0);
	assert_int_equal(aidos_npy_load(path, &t, &own, err, sizeof err), AIDOS_E_INVALID);
	assert_non_null(strstr(err, "empty.npy"));
	path_of(path, sizeof path, "short.npy");
	write_file(path, np_f4_2x3, 11);
	assert_int_equal(aidos_npy_load(path, &t, &own, err, sizeof err), AIDOS_E_TRUNCATED);
	path_of(path, sizeof path, "no-such-file.npy");
	assert_int_equal(aidos_npy_load(path, &t, &own, err, sizeof err), -ENOENT);
	assert_non_null(strstr(err, "no-such-file.npy"));
	assert_int_equal(aidos_npy_load(tmpdir, &t, &own, err, sizeof err), AIDOS_E_INVALID);
	assert_int_equal(aidos_npy_load(NULL, &t, &own, err, sizeof err), AIDOS_E_INVALID);
	/* err may be NULL */
	assert_int_equal(aidos_npy_load_buffer(buf, 3, &t, &own, NULL, 0), AIDOS_E_INVALID);
}

static void test_fortran_order_vector_accepted(void **state)
{
	unsigned char buf[256];
	size_t n = build(buf, sizeof buf, 1, H("'<f4'", "True", "(1, 2, 1)"), -1, 8);
	aidos_tensor t;
	void *own;
	char err[256];

	assert_int_equal(aidos_npy_load_buffer(buf, n, &t, &own, err, sizeof err), 0);
	assert_int_equal(t.rank, 3);
	aidos_npy_free(own);
	/* Python 2 numpy wrote long integers with an L; one-byte types with '<'. */
	n = build(buf, sizeof buf, 1, "{'descr':'<u1','fortran_order':False,'shape':(2L, 3L)}", -1, 6);
	assert_int_equal(aidos_npy_load_buffer(buf, n, &t, &own, err, sizeof err), 0);
	assert_int_equal(t.dtype, AIDOS_DT_UINT8);
	assert_int_equal(t.dims[1], 3);
	aidos_npy_free(own);
	/* Double quotes and keys in any order. */
	n = build(buf, sizeof buf, 2, "{\"shape\": (), \"fortran_order\": False, \"descr\": \"<i4\"}  \n", -1, 4);
	assert_int_equal(aidos_npy_load_buffer(buf, n, &t, &own, err, sizeof err), 0);
	assert_int_equal(t.rank, 0);
	assert_int_equal(t.dtype, AIDOS_DT_INT32);
	aidos_npy_free(own);
}

/* Every proper prefix of a valid file is refused; no read goes past len
 * (the buffer is copied to an exact-size heap block so ASan would see it). */
static void test_every_truncation_rejected(void **state)
{
	for (size_t n = 0; n < sizeof np_f4_2x3; n++) {
		unsigned char *b = malloc(n ? n : 1);
		aidos_tensor t;
		void *own = NULL;
		char err[256];
		int rc;

		assert_non_null(b);
		memcpy(b, np_f4_2x3, n);
		rc = aidos_npy_load_buffer(b, n, &t, &own, err, sizeof err);
		if (rc == 0)
			fail_msg("prefix of %zu bytes accepted", n);
		assert_null(own);
		free(b);
	}
}

/* Random byte flips in the header: any outcome but a crash or an accepted
 * file that claims more data than there is. */
static void test_header_flips_do_not_crash(void **state)
{
	uint64_t x = 0x9e3779b97f4a7c15ull;
	size_t len = sizeof np_f4_2x3;
	int accepted = 0;

	for (int iter = 0; iter < 20000; iter++) {
		unsigned char *b = malloc(len);
		aidos_tensor t;
		void *own = NULL;
		char err[256];
		int flips;

		assert_non_null(b);
		memcpy(b, np_f4_2x3, len);
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		flips = 1 + (int)(x % 4);
		for (int f = 0; f < flips; f++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			b[(x >> 8) % 128] = (unsigned char)(x >> 32);
		}
		if (aidos_npy_load_buffer(b, len, &t, &own, err, sizeof err) == 0) {
			hal_npy_header h;

			accepted++;
			assert_int_equal(hal_npy_parse_header(b, len, &h, err, sizeof err), 0);
			assert_true(h.data_off + h.nbytes == len);
			aidos_npy_free(own);
		}
		free(b);
	}
	(void)accepted;
}

static void test_save_errors(void **state)
{
	float f[2] = { 1, 2 };
	char path[300];
	aidos_tensor t = { .dtype = AIDOS_DT_FLOAT, .rank = 1, .dims = { 2 }, .data = f };

	path_of(path, sizeof path, "e.npy");
	assert_int_equal(aidos_npy_save(NULL, &t), AIDOS_E_INVALID);
	assert_int_equal(aidos_npy_save(path, NULL), AIDOS_E_INVALID);
	t.dtype = 10;  /* float16 */
	assert_int_equal(aidos_npy_save(path, &t), AIDOS_E_UNSUPPORTED);
	t.dtype = AIDOS_DT_FLOAT;
	t.rank = AIDOS_MAX_RANK + 1;
	assert_int_equal(aidos_npy_save(path, &t), AIDOS_E_INVALID);
	t.rank = 1;
	t.dims[0] = -1;
	assert_int_equal(aidos_npy_save(path, &t), AIDOS_E_INVALID);
	t.dims[0] = 2;
	t.data = NULL;
	assert_int_equal(aidos_npy_save(path, &t), AIDOS_E_INVALID);
	t.data = f;
	t.rank = 3;
	t.dims[0] = INT64_MAX;
	t.dims[1] = 4;
	t.dims[2] = 1;
	assert_int_equal(aidos_npy_save(path, &t), AIDOS_E_RANGE);
	t.rank = 1;
	t.dims[0] = 2;
	path_of(path, sizeof path, "no-such-dir/e.npy");
	assert_int_equal(aidos_npy_save(path, &t), -ENOENT);
	/* Nothing left behind by the failures. */
	path_of(path, sizeof path, "e.npy");
	assert_int_equal(access(path, F_OK), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_read_numpy_files),
		cmocka_unit_test(test_save_matches_numpy),
		cmocka_unit_test(test_roundtrip_all_dtypes),
		cmocka_unit_test(test_descr_names),
		cmocka_unit_test(test_malformed_rejected),
		cmocka_unit_test(test_bad_magic_and_tiny),
		cmocka_unit_test(test_fortran_order_vector_accepted),
		cmocka_unit_test(test_every_truncation_rejected),
		cmocka_unit_test(test_header_flips_do_not_crash),
		cmocka_unit_test(test_save_errors),
	};

	return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
