/*
 * hal/npy.c - NumPy .npy files (include/aidos/npy.h).
 *
 * Layout (numpy.lib.format, versions 1.0 / 2.0 / 3.0):
 *   "\x93NUMPY" major minor  header_len (u16 LE in 1.0, u32 LE in 2.0/3.0)
 *   header: a Python dict literal, e.g.
 *     {'descr': '<f4', 'fortran_order': False, 'shape': (1, 3), }
 *   padded with spaces and ended by '\n' (numpy aligns the data to 64 bytes)
 *   data: prod(shape) elements, C order.
 * 3.0 differs from 2.0 only in allowing UTF-8 in the header; the keys and
 * values aidos accepts are ASCII, so one parser serves all three.
 *
 * The parser trusts nothing: every length is checked before it is used and
 * every product is overflow-checked, so any byte string gives 0 or an error
 * code and a message, never a crash or a huge allocation (the header is
 * capped at AIDOS_NPY_MAX_HEADER, the data at what the file really holds).
 */
#include "hal/npy.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "hal/npy.c reads and writes little-endian data in place: port it for big-endian hosts"
#endif

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
#define NPY_ALIGN 64

static void npy_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void npy_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* ---- dtypes ---- */

static const struct {
	const char *descr;
	int32_t dtype;
	size_t size;
} npy_types[] = {
	{ "<f4", AIDOS_DT_FLOAT, 4 },
	{ "<f8", AIDOS_DT_DOUBLE, 8 },
	{ "<i8", AIDOS_DT_INT64, 8 },
	{ "<i4", AIDOS_DT_INT32, 4 },
	{ "|b1", AIDOS_DT_BOOL, 1 },
	{ "|u1", AIDOS_DT_UINT8, 1 },
	{ "|i1", AIDOS_DT_INT8, 1 },
};
#define NPY_NTYPES (sizeof npy_types / sizeof npy_types[0])

const char *aidos_npy_descr(int dtype)
{
	for (size_t i = 0; i < NPY_NTYPES; i++)
		if (npy_types[i].dtype == dtype)
			return npy_types[i].descr;
	return NULL;
}

static size_t npy_dtype_size(int dtype)
{
	for (size_t i = 0; i < NPY_NTYPES; i++)
		if (npy_types[i].dtype == dtype)
			return npy_types[i].size;
	return 0;
}

/* Maps a descr string to a dtype. One-byte types have no byte order, and
 * writers other than numpy spell them '<u1' or '=u1': accepted. */
static int npy_descr_lookup(const char *d, int32_t *dtype, char *err, size_t errlen)
{
	for (size_t i = 0; i < NPY_NTYPES; i++) {
		const char *c = npy_types[i].descr;

		if (!strcmp(d, c) ||
		    (npy_types[i].size == 1 && strchr("<>=|", d[0]) && d[0] &&
		     !strcmp(d + 1, c + 1))) {
			*dtype = npy_types[i].dtype;
			return 0;
		}
	}
	if (d[0] == '>' && strlen(d) == 3) {
		npy_err(err, errlen, "npy: big-endian dtype '%s' is not supported", d);
		return AIDOS_E_UNSUPPORTED;
	}
	npy_err(err, errlen, "npy: dtype '%s' is not supported "
		"(supported: <f4 <f8 <i8 <i4 |b1 |u1 |i1)", d);
	return AIDOS_E_UNSUPPORTED;
}

/* ---- header dict parser ---- */

struct npy_lex {
	const char *start, *p, *end;
	char *err;
	size_t errlen;
};

static void lex_ws(struct npy_lex *lx)
{
	while (lx->p < lx->end &&
	       (*lx->p == ' ' || *lx->p == '\t' || *lx->p == '\n' || *lx->p == '\r'))
		lx->p++;
}

static int lex_peek(struct npy_lex *lx)
{
	lex_ws(lx);
	return lx->p < lx->end ? (unsigned char)*lx->p : -1;
}

static int lex_expect(struct npy_lex *lx, char c, const char *what)
{
	if (lex_peek(lx) != (unsigned char)c) {
		npy_err(lx->err, lx->errlen, "npy: header: expected '%c' %s at offset %td",
			c, what, lx->p - lx->start);
		return AIDOS_E_INVALID;
	}
	lx->p++;
	return 0;
}

/* A quoted string without escapes into out[cap]. */
static int lex_string(struct npy_lex *lx, char *out, size_t cap, const char *what)
{
	int q = lex_peek(lx);
	size_t n = 0;

	if (q != '\'' && q != '"') {
		npy_err(lx->err, lx->errlen, "npy: header: expected a quoted %s", what);
		return AIDOS_E_INVALID;
	}
	lx->p++;
	while (lx->p < lx->end && *lx->p != q) {
		if (*lx->p == '\\' || *lx->p == '\n') {
			npy_err(lx->err, lx->errlen, "npy: header: bad character in %s", what);
			return AIDOS_E_INVALID;
		}
		if (n + 1 >= cap) {
			npy_err(lx->err, lx->errlen, "npy: header: %s too long", what);
			return AIDOS_E_INVALID;
		}
		out[n++] = *lx->p++;
	}
	if (lx->p >= lx->end) {
		npy_err(lx->err, lx->errlen, "npy: header: unterminated %s", what);
		return AIDOS_E_INVALID;
	}
	lx->p++;
	out[n] = '\0';
	return 0;
}

static int lex_word(struct npy_lex *lx, const char *w)
{
	size_t n = strlen(w);

	lex_ws(lx);
	if ((size_t)(lx->end - lx->p) >= n && !memcmp(lx->p, w, n)) {
		lx->p += n;
		return 1;
	}
	return 0;
}

/* A non-negative decimal integer (Python 2 numpy wrote a trailing 'L'). */
static int lex_dim(struct npy_lex *lx, int64_t *v)
{
	int64_t x = 0;
	int digits = 0;

	lex_ws(lx);
	if (lx->p < lx->end && *lx->p == '-') {
		npy_err(lx->err, lx->errlen, "npy: header: negative dimension in shape");
		return AIDOS_E_INVALID;
	}
	while (lx->p < lx->end && *lx->p >= '0' && *lx->p <= '9') {
		if (__builtin_mul_overflow(x, 10, &x) ||
		    __builtin_add_overflow(x, *lx->p - '0', &x)) {
			npy_err(lx->err, lx->errlen, "npy: header: dimension overflows int64");
			return AIDOS_E_RANGE;
		}
		lx->p++;
		digits++;
	}
	if (!digits) {
		npy_err(lx->err, lx->errlen, "npy: header: expected an integer in shape");
		return AIDOS_E_INVALID;
	}
	if (lx->p < lx->end && *lx->p == 'L')
		lx->p++;
	*v = x;
	return 0;
}

/* A Python tuple of ints: (), (3,), (3, 4), (3, 4,). "(3)" is an int, not a
 * tuple, and numpy refuses it: so does aidos. */
static int lex_shape(struct npy_lex *lx, hal_npy_header *h)
{
	int rc, n = 0, comma = 0;

	if ((rc = lex_expect(lx, '(', "to open shape")))
		return rc;
	for (;;) {
		int c = lex_peek(lx);

		if (c == ')') {
			lx->p++;
			break;
		}
		if (n && !comma) {
			npy_err(lx->err, lx->errlen, "npy: header: expected ',' or ')' in shape");
			return AIDOS_E_INVALID;
		}
		if (n == AIDOS_MAX_RANK) {
			npy_err(lx->err, lx->errlen, "npy: rank above %d is not supported",
				AIDOS_MAX_RANK);
			return AIDOS_E_UNSUPPORTED;
		}
		if ((rc = lex_dim(lx, &h->dims[n])))
			return rc;
		n++;
		comma = 0;
		if (lex_peek(lx) == ',') {
			lx->p++;
			comma = 1;
		}
	}
	if (n == 1 && !comma) {
		npy_err(lx->err, lx->errlen, "npy: header: shape (n) is not a tuple; want (n,)");
		return AIDOS_E_INVALID;
	}
	h->rank = n;
	return 0;
}

static int npy_parse_dict(const char *s, size_t n, hal_npy_header *h,
			  char *err, size_t errlen)
{
	struct npy_lex lx = { s, s, s + n, err, errlen };
	int have_descr = 0, have_fortran = 0, have_shape = 0, fortran = 0, rc;
	char key[32], descr[32];

	if ((rc = lex_expect(&lx, '{', "to open the header dict")))
		return rc;
	for (;;) {
		if (lex_peek(&lx) == '}') {
			lx.p++;
			break;
		}
		if ((rc = lex_string(&lx, key, sizeof key, "key")))
			return rc;
		if ((rc = lex_expect(&lx, ':', "after a key")))
			return rc;
		if (!strcmp(key, "descr")) {
			if (have_descr++)
				goto dup;
			if (lex_peek(&lx) == '[') {
				npy_err(err, errlen, "npy: structured dtypes are not supported");
				return AIDOS_E_UNSUPPORTED;
			}
			if ((rc = lex_string(&lx, descr, sizeof descr, "descr")))
				return rc;
		} else if (!strcmp(key, "fortran_order")) {
			if (have_fortran++)
				goto dup;
			if (lex_word(&lx, "True"))
				fortran = 1;
			else if (!lex_word(&lx, "False")) {
				npy_err(err, errlen, "npy: header: fortran_order is not True or False");
				return AIDOS_E_INVALID;
			}
		} else if (!strcmp(key, "shape")) {
			if (have_shape++)
				goto dup;
			if ((rc = lex_shape(&lx, h)))
				return rc;
		} else {
			npy_err(err, errlen, "npy: header: unexpected key '%s'", key);
			return AIDOS_E_INVALID;
		}
		if (lex_peek(&lx) == ',') {
			lx.p++;
			continue;
		}
		if ((rc = lex_expect(&lx, '}', "to close the header dict")))
			return rc;
		break;
	}
	if (lex_peek(&lx) != -1) {
		npy_err(err, errlen, "npy: header: unexpected bytes after the dict");
		return AIDOS_E_INVALID;
	}
	if (!have_descr || !have_fortran || !have_shape) {
		npy_err(err, errlen, "npy: header: missing key '%s'",
			!have_descr ? "descr" : !have_fortran ? "fortran_order" : "shape");
		return AIDOS_E_INVALID;
	}
	if ((rc = npy_descr_lookup(descr, &h->dtype, err, errlen)))
		return rc;
	if (fortran) {
		/* With at most one dimension above 1 both orders are the same bytes. */
		int big = 0;

		for (int i = 0; i < h->rank; i++)
			big += h->dims[i] > 1;
		if (big > 1) {
			npy_err(err, errlen, "npy: Fortran-order arrays are not supported");
			return AIDOS_E_UNSUPPORTED;
		}
	}
	return 0;
dup:
	npy_err(err, errlen, "npy: header: duplicate key '%s'", key);
	return AIDOS_E_INVALID;
}

static uint32_t rd_le(const unsigned char *p, int n)
{
	uint32_t v = 0;

	for (int i = n - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* Bytes of the fixed prefix (magic, version, length) of a version. */
static size_t npy_prefix_len(int major)
{
	return major == 1 ? 10 : 12;
}

int hal_npy_parse_header(const void *buf, size_t len, hal_npy_header *h,
			 char *err, size_t errlen)
{
	const unsigned char *b = buf;
	hal_npy_header x;
	size_t pre, hlen;
	uint64_t numel = 1, nbytes;
	int rc;

	memset(&x, 0, sizeof x);
	if (!b || len < 8) {
		npy_err(err, errlen, "npy: %zu bytes is too short for a .npy file", len);
		return len < NPY_MAGIC_LEN || memcmp(b, NPY_MAGIC, NPY_MAGIC_LEN) ?
			AIDOS_E_INVALID : AIDOS_E_TRUNCATED;
	}
	if (memcmp(b, NPY_MAGIC, NPY_MAGIC_LEN)) {
		npy_err(err, errlen, "npy: not a .npy file (bad magic)");
		return AIDOS_E_INVALID;
	}
	x.major = b[6];
	if (x.major < 1 || x.major > 3 || b[7] != 0) {
		npy_err(err, errlen, "npy: format version %d.%d is not supported (1.0, 2.0, 3.0)",
			b[6], b[7]);
		return AIDOS_E_UNSUPPORTED;
	}
	pre = npy_prefix_len(x.major);
	if (len < pre) {
		npy_err(err, errlen, "npy: file ends inside the header length");
		return AIDOS_E_TRUNCATED;
	}
	hlen = rd_le(b + 8, x.major == 1 ? 2 : 4);
	if (hlen == 0 || hlen > AIDOS_NPY_MAX_HEADER) {
		npy_err(err, errlen, "npy: header length %zu is outside 1..%d", hlen,
			AIDOS_NPY_MAX_HEADER);
		return AIDOS_E_INVALID;
	}
	if (len - pre < hlen) {
		npy_err(err, errlen, "npy: file ends inside the %zu-byte header", hlen);
		return AIDOS_E_TRUNCATED;
	}
	if ((rc = npy_parse_dict((const char *)b + pre, hlen, &x, err, errlen)))
		return rc;
	for (int i = 0; i < x.rank; i++) {
		if (__builtin_mul_overflow(numel, (uint64_t)x.dims[i], &numel)) {
			npy_err(err, errlen, "npy: element count overflows");
			return AIDOS_E_RANGE;
		}
	}
	if (__builtin_mul_overflow(numel, (uint64_t)npy_dtype_size(x.dtype), &nbytes) ||
	    nbytes > (uint64_t)(SIZE_MAX - pre - hlen) || numel > (uint64_t)INT64_MAX) {
		npy_err(err, errlen, "npy: data size overflows");
		return AIDOS_E_RANGE;
	}
	x.data_off = pre + hlen;
	x.nbytes = (size_t)nbytes;
	*h = x;
	return 0;
}

/* ---- loading ---- */

static int npy_check_bools(const hal_npy_header *h, const unsigned char *d,
			   char *err, size_t errlen)
{
	if (h->dtype != AIDOS_DT_BOOL)
		return 0;
	for (size_t i = 0; i < h->nbytes; i++) {
		if (d[i] > 1) {
			npy_err(err, errlen, "npy: bool element %zu is %u, not 0 or 1", i, d[i]);
			return AIDOS_E_INVALID;
		}
	}
	return 0;
}

static void *npy_alloc(size_t nbytes)
{
	size_t n = nbytes ? nbytes : 1;

	n = (n + NPY_ALIGN - 1) / NPY_ALIGN * NPY_ALIGN;  /* aligned_alloc's rule */
	return n < nbytes ? NULL : aligned_alloc(NPY_ALIGN, n);
}

static void npy_fill(aidos_tensor *t, const hal_npy_header *h, void *data)
{
	memset(t, 0, sizeof *t);
	t->name = NULL;
	t->dtype = h->dtype;
	t->rank = h->rank;
	memcpy(t->dims, h->dims, sizeof h->dims);
	t->data = data;
}

/* Checks the byte count of the whole input against the header's claim. */
static int npy_check_size(const hal_npy_header *h, size_t have, char *err, size_t errlen)
{
	size_t want = h->data_off + h->nbytes;  /* no overflow: parse bounded nbytes */

	if (have < want) {
		npy_err(err, errlen, "npy: data truncated: header declares %zu bytes, "
			"file holds %zu", h->nbytes, have - h->data_off);
		return AIDOS_E_TRUNCATED;
	}
	if (have > want) {
		npy_err(err, errlen, "npy: %zu trailing bytes after the data", have - want);
		return AIDOS_E_INVALID;
	}
	return 0;
}

int aidos_npy_load_buffer(const void *buf, size_t len, aidos_tensor *t,
			  void **owned, char *err, size_t errlen)
{
	hal_npy_header h;
	void *data;
	int rc;

	if (owned)
		*owned = NULL;
	if (!t || !owned) {
		npy_err(err, errlen, "npy: NULL argument");
		return AIDOS_E_INVALID;
	}
	if ((rc = hal_npy_parse_header(buf, len, &h, err, errlen)))
		return rc;
	if ((rc = npy_check_size(&h, len, err, errlen)))
		return rc;
	if ((rc = npy_check_bools(&h, (const unsigned char *)buf + h.data_off, err, errlen)))
		return rc;
	if (!(data = npy_alloc(h.nbytes))) {
		npy_err(err, errlen, "npy: out of memory for %zu bytes", h.nbytes);
		return AIDOS_E_NOMEM;
	}
	if (h.nbytes)
		memcpy(data, (const unsigned char *)buf + h.data_off, h.nbytes);
	npy_fill(t, &h, data);
	*owned = data;
	return 0;
}

/* Reads exactly n bytes at off; AIDOS_E_TRUNCATED at a premature end. */
static int npy_pread_all(int fd, void *buf, size_t n, off_t off)
{
	unsigned char *p = buf;

	while (n) {
		ssize_t r = pread(fd, p, n, off);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			return AIDOS_E_TRUNCATED;
		p += r;
		n -= (size_t)r;
		off += r;
	}
	return 0;
}

int aidos_npy_load(const char *path, aidos_tensor *t, void **owned,
		   char *err, size_t errlen)
{
	unsigned char pre[12], *hdr = NULL;
	hal_npy_header h;
	struct stat st;
	void *data = NULL;
	size_t size, need;
	int fd, rc;

	if (owned)
		*owned = NULL;
	if (!path || !t || !owned) {
		npy_err(err, errlen, "npy: NULL argument");
		return AIDOS_E_INVALID;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		npy_err(err, errlen, "npy: %s: %s", path, strerror(errno));
		return rc;
	}
	if (fstat(fd, &st)) {
		rc = -errno;
		npy_err(err, errlen, "npy: %s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		npy_err(err, errlen, "npy: %s: not a regular file", path);
		rc = AIDOS_E_INVALID;
		goto out;
	}
	size = (size_t)st.st_size;
	/* The prefix, to learn the header length, then the whole header. */
	need = size < sizeof pre ? size : sizeof pre;
	if ((rc = npy_pread_all(fd, pre, need, 0)))
		goto io;
	if ((rc = hal_npy_parse_header(pre, need, &h, err, errlen)) != AIDOS_E_TRUNCATED)
		goto parsed;
	if (need < sizeof pre)
		goto fail;
	need = npy_prefix_len(pre[6]) + rd_le(pre + 8, pre[6] == 1 ? 2 : 4);
	if (need > size) {
		npy_err(err, errlen, "npy: %s: file ends inside the header", path);
		rc = AIDOS_E_TRUNCATED;
		goto out;
	}
	if (!(hdr = malloc(need))) {
		rc = AIDOS_E_NOMEM;
		npy_err(err, errlen, "npy: out of memory");
		goto out;
	}
	if ((rc = npy_pread_all(fd, hdr, need, 0)))
		goto io;
	rc = hal_npy_parse_header(hdr, need, &h, err, errlen);
parsed:
	if (rc)
		goto fail;
	if ((rc = npy_check_size(&h, size, err, errlen)))
		goto fail;
	if (!(data = npy_alloc(h.nbytes))) {
		npy_err(err, errlen, "npy: %s: out of memory for %zu bytes", path, h.nbytes);
		rc = AIDOS_E_NOMEM;
		goto out;
	}
	if ((rc = npy_pread_all(fd, data, h.nbytes, (off_t)h.data_off)))
		goto io;
	if ((rc = npy_check_bools(&h, data, err, errlen)))
		goto fail;
	npy_fill(t, &h, data);
	*owned = data;
	data = NULL;
	goto out;
io:
	if (rc == AIDOS_E_TRUNCATED)
		npy_err(err, errlen, "npy: %s: file shrank while reading", path);
	else
		npy_err(err, errlen, "npy: %s: read: %s", path, strerror(-rc));
	goto out;
fail:
	/* Prefix the path to the parser's message. */
	if (err && errlen) {
		char tmp[256];

		snprintf(tmp, sizeof tmp, "%s", err);
		npy_err(err, errlen, "%s: %s", path, tmp);
	}
out:
	free(data);
	free(hdr);
	close(fd);
	return rc;
}

void aidos_npy_free(void *owned)
{
	free(owned);
}

/* ---- saving ---- */

static int npy_write_all(int fd, const void *buf, size_t n)
{
	const unsigned char *p = buf;

	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int aidos_npy_save(const char *path, const aidos_tensor *t)
{
	/* rank 8 of 19-digit dims, growth room and padding fit in 512 bytes */
	char hdr[512], tmp[4096];
	const char *descr;
	uint64_t numel = 1, nbytes;
	size_t n, pre = 10, total;
	int fd, rc;

	if (!path || !t || t->rank < 0 || t->rank > AIDOS_MAX_RANK)
		return AIDOS_E_INVALID;
	if (!(descr = aidos_npy_descr(t->dtype)))
		return AIDOS_E_UNSUPPORTED;
	for (int i = 0; i < t->rank; i++) {
		if (t->dims[i] < 0)
			return AIDOS_E_INVALID;
		if (__builtin_mul_overflow(numel, (uint64_t)t->dims[i], &numel))
			return AIDOS_E_RANGE;
	}
	if (__builtin_mul_overflow(numel, (uint64_t)npy_dtype_size(t->dtype), &nbytes) ||
	    nbytes > SIZE_MAX / 2)
		return AIDOS_E_RANGE;
	if (nbytes && !t->data)
		return AIDOS_E_INVALID;

	/* Byte for byte what numpy 1.24's np.save writes: the dict, spaces
	 * that leave room for the first axis to grow to 21 digits, then
	 * spaces and '\n' up to the next multiple of 64 (a whole extra 64 when
	 * already aligned, as numpy's _wrap_header does). */
	n = pre;
	n += (size_t)snprintf(hdr + n, sizeof hdr - n,
			      "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
	for (int i = 0; i < t->rank; i++)
		n += (size_t)snprintf(hdr + n, sizeof hdr - n, "%s%lld",
				      i ? ", " : "", (long long)t->dims[i]);
	n += (size_t)snprintf(hdr + n, sizeof hdr - n, "%s), }", t->rank == 1 ? "," : "");
	if (t->rank > 0) {
		int d0 = snprintf(NULL, 0, "%lld", (long long)t->dims[0]);

		memset(hdr + n, ' ', (size_t)(21 - d0));
		n += (size_t)(21 - d0);
	}
	total = n + 1 + (NPY_ALIGN - (n + 1) % NPY_ALIGN);
	memset(hdr + n, ' ', total - n);
	hdr[total - 1] = '\n';
	memcpy(hdr, NPY_MAGIC, NPY_MAGIC_LEN);
	hdr[6] = 1;
	hdr[7] = 0;
	hdr[8] = (char)((total - pre) & 0xff);
	hdr[9] = (char)((total - pre) >> 8);

	if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid()) >= sizeof tmp)
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	rc = npy_write_all(fd, hdr, total);
	if (!rc && nbytes)
		rc = npy_write_all(fd, t->data, (size_t)nbytes);
	if (close(fd) && !rc)
		rc = -errno;
	if (!rc && rename(tmp, path))
		rc = -errno;
	if (rc)
		unlink(tmp);
	return rc;
}
