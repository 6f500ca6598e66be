/*
 * hal/onnx.c - ONNX loading: protobuf wire format decoded in place.
 *
 * Spec: onnx/onnx.proto (IR versions 3-10; field numbers below) and the
 * protobuf encoding guide (varints, wire types 0/1/2/5, packed repeated
 * fields). Every read is bounds-checked against the enclosing message; every
 * array is sized by counting its elements in the bytes first, so no
 * allocation is ever larger than the file justifies. Errors name the message,
 * the field and the byte offset.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "hal/model.h"
#include "hal/onnx.h"
#include "pools/pools.h"

/* ---- bump allocator ---- */

static void *mem_alloc(ir_mem *m, size_t n, int zero);

void *ir_mem_alloc(ir_mem *m, size_t n)
{
	return mem_alloc(m, n, 1);
}

/* A chunk for an allocation of 1 MiB or more (a plan's large packed
 * weights: MobileNetV2's classifier is 5 MB) is whole 2 MiB pages, 2 MiB
 * aligned, with MADV_HUGEPAGE: read once per inference by a GEMV, its
 * stream ran 0.38-0.42 ms on huge pages against 0.53-0.61 on 4 KiB ones
 * (one L2 TLB miss per 4 KiB). What the allocation leaves of its last page
 * serves the allocations after it. */
#define MEM_HUGE ((size_t)2 << 20)

static ir_mem_chunk *mem_chunk_new(size_t sz)
{
	ir_mem_chunk *c;
	if (sz >= MEM_HUGE / 2) {
		size_t len = pool_align_up(sizeof *c + sz, MEM_HUGE);
		unsigned char *q = mmap(NULL, len + MEM_HUGE, PROT_READ | PROT_WRITE,
					MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (q != MAP_FAILED) {
			unsigned char *a = (unsigned char *)pool_align_up((uintptr_t)q, MEM_HUGE);
			if (a > q)
				munmap(q, (size_t)(a - q));
			munmap(a + len, (size_t)(q + MEM_HUGE - a));  /* > 0: a < q + MEM_HUGE */
			madvise(a, len, MADV_HUGEPAGE);  /* advice only */
			c = (ir_mem_chunk *)(void *)a;
			c->size = len - sizeof *c;
			c->map_len = len;
			return c;
		}
	}
	c = pool_malloc(sizeof *c + sz);
	if (c) {
		c->size = sz;
		c->map_len = 0;
	}
	return c;
}

static void *mem_alloc(ir_mem *m, size_t n, int zero)
{
	n = pool_align_up(n ? n : 1, 16);
	ir_mem_chunk *c = m->head;
	if (!c || c->size - c->used < n) {
		/* Room for n after aligning data[] (up to 15 bytes of padding). */
		size_t sz = (n > 60000 ? n : 60000) + 16;
		c = mem_chunk_new(sz);
		if (!c)
			return NULL;
		c->next = m->head;
		/* data[] starts 16-aligned relative to the header; align used. */
		c->used = (size_t)(pool_align_up((uintptr_t)c->data, 16) - (uintptr_t)c->data);
		m->head = c;
		m->total += c->size;
	}
	void *p = c->data + c->used;
	c->used += n;
	if (zero)
		memset(p, 0, n);
	return p;
}

void ir_mem_free(ir_mem *m)
{
	ir_mem_chunk *c = m->head;
	while (c) {
		ir_mem_chunk *n = c->next;
		if (c->map_len)
			munmap(c, c->map_len);
		else
			pool_free(c);
		c = n;
	}
	m->head = NULL;
	m->total = 0;
}

/* ---- shared file mappings ---- */

struct hal_mapping {
	struct hal_mapping *next;
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
	void *addr;
	size_t len;
	int refs;
};

static pthread_mutex_t map_lock = PTHREAD_MUTEX_INITIALIZER;
static hal_mapping *maps;

int hal_mapping_acquire(const char *path, hal_mapping **out, const void **addr, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int e = -errno;
		close(fd);
		return e;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return -EISDIR;
	}
	pthread_mutex_lock(&map_lock);
	hal_mapping *mp;
	for (mp = maps; mp; mp = mp->next)
		if (mp->dev == st.st_dev && mp->ino == st.st_ino && mp->size == st.st_size &&
		    mp->mtime.tv_sec == st.st_mtim.tv_sec && mp->mtime.tv_nsec == st.st_mtim.tv_nsec)
			break;
	if (mp) {
		mp->refs++;
	} else {
		mp = pool_calloc(1, sizeof *mp);
		void *a = NULL;
		size_t l = (size_t)st.st_size;
		if (mp && l) {
			a = mmap(NULL, l, PROT_READ, MAP_PRIVATE, fd, 0);
			if (a == MAP_FAILED) {
				int e = -errno;
				pool_free(mp);
				pthread_mutex_unlock(&map_lock);
				close(fd);
				return e;
			}
		}
		if (!mp) {
			pthread_mutex_unlock(&map_lock);
			close(fd);
			return AIDOS_E_NOMEM;
		}
		mp->dev = st.st_dev;
		mp->ino = st.st_ino;
		mp->size = st.st_size;
		mp->mtime = st.st_mtim;
		mp->addr = a;
		mp->len = l;
		mp->refs = 1;
		mp->next = maps;
		maps = mp;
	}
	pthread_mutex_unlock(&map_lock);
	close(fd);
	*out = mp;
	*addr = mp->addr;
	*len = mp->len;
	return 0;
}

void hal_mapping_release(hal_mapping *mp)
{
	if (!mp)
		return;
	pthread_mutex_lock(&map_lock);
	if (--mp->refs == 0) {
		for (hal_mapping **pp = &maps; *pp; pp = &(*pp)->next)
			if (*pp == mp) {
				*pp = mp->next;
				break;
			}
		if (mp->addr)
			munmap(mp->addr, mp->len);
		pool_free(mp);
	}
	pthread_mutex_unlock(&map_lock);
}

int hal_mapping_count(void)
{
	int n = 0;
	pthread_mutex_lock(&map_lock);
	for (hal_mapping *mp = maps; mp; mp = mp->next)
		n++;
	pthread_mutex_unlock(&map_lock);
	return n;
}

/* ---- wire format ---- */

typedef struct pb {
	const uint8_t *p, *end;
} pb;

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };

typedef struct dec {
	struct aidos_model *m;     /* NULL: decoding a lone TensorProto */
	ir_mem *mem;
	const uint8_t *base;       /* start of the buffer, for offsets */
	char *err;
	size_t errlen;
	int depth;
	void **owned;              /* lone tensor: where its copy goes */
} dec;

__attribute__((format(printf, 4, 5)))
static int derr(dec *d, int code, const uint8_t *at, const char *fmt, ...)
{
	if (d->err && d->errlen && !d->err[0]) {
		int n = 0;
		if (at)
			n = snprintf(d->err, d->errlen, "offset %zu: ", (size_t)(at - d->base));
		if (n < 0 || (size_t)n >= d->errlen)
			n = 0;
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(d->err + n, d->errlen - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return code;
}

/* A varint of at most 10 bytes; the 10th may only carry bit 63. */
static int pb_varint(pb *b, uint64_t *v)
{
	uint64_t r = 0;
	for (int i = 0; i < 10; i++) {
		if (b->p >= b->end)
			return AIDOS_E_TRUNCATED;
		uint8_t c = *b->p++;
		if (i == 9 && c > 1)
			return AIDOS_E_INVALID;
		r |= (uint64_t)(c & 0x7f) << (7 * i);
		if (!(c & 0x80)) {
			*v = r;
			return 0;
		}
	}
	return AIDOS_E_INVALID;
}

/* One field: its number, wire type, and value (varint/fixed in *v, or the
 * bytes of a length-delimited field in *sub). */
typedef struct pb_field {
	uint32_t num;
	uint32_t wt;
	uint64_t v;
	pb sub;
	const uint8_t *at;
} pb_field;

static int pb_next(dec *d, pb *b, pb_field *f, const char *msg)
{
	f->at = b->p;
	uint64_t key;
	int rc = pb_varint(b, &key);
	if (rc)
		return derr(d, rc, f->at, "%s: %s field key", msg,
			    rc == AIDOS_E_TRUNCATED ? "truncated" : "overlong");
	f->num = (uint32_t)(key >> 3);
	f->wt = (uint32_t)(key & 7);
	if (key >> 3 > 0x1fffffff || f->num == 0)
		return derr(d, AIDOS_E_INVALID, f->at, "%s: invalid field number %llu", msg,
			    (unsigned long long)(key >> 3));
	switch (f->wt) {
	case WT_VARINT:
		rc = pb_varint(b, &f->v);
		if (rc)
			return derr(d, rc, f->at, "%s: field %u: bad varint", msg, f->num);
		return 0;
	case WT_I64:
		if (b->end - b->p < 8)
			return derr(d, AIDOS_E_TRUNCATED, f->at, "%s: field %u: truncated fixed64", msg, f->num);
		memcpy(&f->v, b->p, 8);
		b->p += 8;
		return 0;
	case WT_I32: {
		if (b->end - b->p < 4)
			return derr(d, AIDOS_E_TRUNCATED, f->at, "%s: field %u: truncated fixed32", msg, f->num);
		uint32_t x;
		memcpy(&x, b->p, 4);
		f->v = x;
		b->p += 4;
		return 0;
	}
	case WT_LEN: {
		uint64_t len;
		rc = pb_varint(b, &len);
		if (rc)
			return derr(d, rc, f->at, "%s: field %u: bad length", msg, f->num);
		if (len > (uint64_t)(b->end - b->p))
			return derr(d, AIDOS_E_TRUNCATED, f->at,
				    "%s: field %u: length %llu runs past the end of the message (%zu bytes left)",
				    msg, f->num, (unsigned long long)len, (size_t)(b->end - b->p));
		f->sub.p = b->p;
		f->sub.end = b->p + len;
		b->p += len;
		return 0;
	}
	default:
		return derr(d, AIDOS_E_INVALID, f->at, "%s: field %u: unsupported wire type %u",
			    msg, f->num, f->wt);
	}
}

/* Counts occurrences of field `num` in a message (bounded by its bytes). */
static int pb_count(dec *d, pb b, uint32_t num, const char *msg, int *count)
{
	pb_field f;
	int n = 0;
	while (b.p < b.end) {
		int rc = pb_next(d, &b, &f, msg);
		if (rc)
			return rc;
		if (f.num == num)
			n++;
	}
	*count = n;
	return 0;
}

static char *dup_str(dec *d, const pb *s)
{
	size_t n = (size_t)(s->end - s->p);
	char *r = ir_mem_alloc(d->mem, n + 1);
	if (r)
		memcpy(r, s->p, n);
	return r;
}

static int want_wt(dec *d, const pb_field *f, uint32_t wt, const char *msg, const char *field)
{
	if (f->wt != wt)
		return derr(d, AIDOS_E_INVALID, f->at, "%s.%s: wire type %u, expected %u", msg, field, f->wt, wt);
	return 0;
}

/* Number of varints in a packed field (bytes without the continuation bit). */
static int64_t packed_varints(const pb *s)
{
	int64_t n = 0;
	for (const uint8_t *q = s->p; q < s->end; q++)
		n += !(*q & 0x80);
	return n;
}

/* Appends the varints of a packed or unpacked repeated int field to out
 * (capacity cap). */
static int read_ints(dec *d, const pb_field *f, int64_t *out, int64_t *n, int64_t cap, const char *what)
{
	if (f->wt == WT_VARINT) {
		if (*n >= cap)
			return derr(d, AIDOS_E_INVALID, f->at, "%s: more values than counted", what);
		out[(*n)++] = (int64_t)f->v;
		return 0;
	}
	if (f->wt != WT_LEN)
		return derr(d, AIDOS_E_INVALID, f->at, "%s: wire type %u for an integer list", what, f->wt);
	pb s = f->sub;
	while (s.p < s.end) {
		uint64_t v;
		int rc = pb_varint(&s, &v);
		if (rc)
			return derr(d, rc, f->at, "%s: bad packed varint", what);
		if (*n >= cap)
			return derr(d, AIDOS_E_INVALID, f->at, "%s: more values than counted", what);
		out[(*n)++] = (int64_t)v;
	}
	return 0;
}

/* Element count of a repeated numeric field across all its occurrences. */
static int count_elems(dec *d, pb msg, uint32_t num, int fixed, const char *what, int64_t *count)
{
	pb_field f;
	int64_t n = 0;
	while (msg.p < msg.end) {
		int rc = pb_next(d, &msg, &f, what);
		if (rc)
			return rc;
		if (f.num != num)
			continue;
		if (f.wt == WT_LEN) {
			size_t bytes = (size_t)(f.sub.end - f.sub.p);
			if (fixed) {
				if (bytes % (size_t)fixed)
					return derr(d, AIDOS_E_INVALID, f.at, "%s: packed length %zu not a multiple of %d",
						    what, bytes, fixed);
				n += (int64_t)(bytes / (size_t)fixed);
			} else {
				n += packed_varints(&f.sub);
			}
		} else {
			n++;
		}
	}
	*count = n;
	return 0;
}

/* ---- TensorProto ---- */

static void *copy_bytes(dec *d, size_t n)
{
	if (d->m) {
		d->m->bytes_copied += n;
		return mem_alloc(d->mem, n, 0);  /* filled by the caller */
	}
	/* A lone tensor: one malloc'd block the caller frees. */
	if (*d->owned)
		return NULL;
	*d->owned = malloc(n ? n : 1);
	return *d->owned;
}

static int ext_data(dec *d, ir_tensor *t, pb msg, const uint8_t *at, size_t want);

static int decode_tensor(dec *d, pb msg, ir_tensor *t, const uint8_t *at)
{
	static const char M[] = "TensorProto";
	pb b = msg;
	pb_field f;
	int64_t ndims = 0;
	pb raw = {0}, fdata = {0};
	int have_raw = 0, have_fdata = 0, external = 0;
	int64_t dims_buf[HAL_MAX_RANK + 1];
	memset(t, 0, sizeof *t);
	t->name = "";
	while (b.p < b.end) {
		int rc = pb_next(d, &b, &f, M);
		if (rc)
			return rc;
		switch (f.num) {
		case 1: { /* dims */
			int64_t before = ndims;
			int64_t k = f.wt == WT_LEN ? packed_varints(&f.sub) : 1;
			if (ndims + k > HAL_MAX_RANK)
				return derr(d, AIDOS_E_UNSUPPORTED, f.at, "%s.dims: rank over %d", M, HAL_MAX_RANK);
			rc = read_ints(d, &f, dims_buf, &ndims, HAL_MAX_RANK, "TensorProto.dims");
			if (rc)
				return rc;
			(void)before;
			break;
		}
		case 2:
			if ((rc = want_wt(d, &f, WT_VARINT, M, "data_type")))
				return rc;
			if (f.v > 64)
				return derr(d, AIDOS_E_INVALID, f.at, "%s.data_type: %llu is not a type", M,
					    (unsigned long long)f.v);
			t->dtype = (int32_t)f.v;
			break;
		case 3:
			return derr(d, AIDOS_E_UNSUPPORTED, f.at, "%s.segment: segmented tensors are not supported", M);
		case 4:
			have_fdata = 1;
			fdata = f.sub;
			break;
		case 8:
			if ((rc = want_wt(d, &f, WT_LEN, M, "name")))
				return rc;
			if (!(t->name = dup_str(d, &f.sub)))
				return AIDOS_E_NOMEM;
			break;
		case 9:
			if ((rc = want_wt(d, &f, WT_LEN, M, "raw_data")))
				return rc;
			raw = f.sub;
			have_raw = 1;
			break;
		case 14:
			if ((rc = want_wt(d, &f, WT_VARINT, M, "data_location")))
				return rc;
			external = f.v == 1;
			break;
		default:
			break; /* int32_data, int64_data, ... handled below; doc_string, etc. ignored */
		}
	}
	(void)fdata;
	t->rank = (int32_t)ndims;
	int64_t numel = 1;
	for (int i = 0; i < t->rank; i++) {
		if (dims_buf[i] < 0)
			return derr(d, AIDOS_E_INVALID, at, "tensor '%s': negative dimension %lld", t->name,
				    (long long)dims_buf[i]);
		t->dims[i] = dims_buf[i];
	}
	if (!hal_dims_ok(t->rank, t->dims))
		return derr(d, AIDOS_E_INVALID, at, "tensor '%s': element count overflows", t->name);
	for (int i = 0; i < t->rank; i++)
		numel *= t->dims[i];
	size_t es = hal_dtype_size(t->dtype);
	if (t->dtype == HAL_DT_STRING || es == 0) {
		if (t->dtype == HAL_DT_UNDEF)
			return derr(d, AIDOS_E_INVALID, at, "tensor '%s': no data_type", t->name);
		/* Kept without data; planning rejects it if it is used. */
		t->dtype = t->dtype ? t->dtype : HAL_DT_UNDEF;
		t->data = NULL;
		t->nbytes = 0;
		return 0;
	}
	size_t want = (size_t)numel * es;
	t->nbytes = want;
	if (external) {
		if (!d->m)
			return derr(d, AIDOS_E_UNSUPPORTED, at, "tensor '%s': external data in a lone tensor", t->name);
		return ext_data(d, t, msg, at, want);
	}
	if (have_raw) {
		size_t got = (size_t)(raw.end - raw.p);
		if (got != want)
			return derr(d, AIDOS_E_INVALID, at, "tensor '%s': raw_data has %zu bytes, dims [%s%lld...] of %s need %zu",
				    t->name, got, "", (long long)(t->rank ? t->dims[0] : 1), hal_dtype_name(t->dtype), want);
		if (((uintptr_t)raw.p % es) == 0) {
			t->data = raw.p;
			if (d->m)
				d->m->bytes_mapped += want;
		} else {
			void *c = copy_bytes(d, want);
			if (!c)
				return AIDOS_E_NOMEM;
			memcpy(c, raw.p, want);
			t->data = c;
		}
		return 0;
	}
	/* Typed fields: which one holds this dtype's values. */
	uint32_t num;
	int fixed = 0;
	switch (t->dtype) {
	case HAL_DT_F32: num = 4; fixed = 4; break;
	case HAL_DT_F64: num = 10; fixed = 8; break;
	case HAL_DT_I64: num = 7; break;
	case HAL_DT_U32: case HAL_DT_U64: num = 11; break;
	default: num = 5; break; /* int32_data: int32, int16, int8, uint16, uint8, bool, float16 */
	}
	int64_t cnt;
	int rc = count_elems(d, msg, num, fixed, M, &cnt);
	if (rc)
		return rc;
	if (cnt != numel)
		return derr(d, AIDOS_E_INVALID, at, "tensor '%s': %lld values for %lld elements", t->name,
			    (long long)cnt, (long long)numel);
	if (numel == 0) {
		t->data = NULL;
		return 0;
	}
	/* Packed little-endian floats in one field can be used in place. */
	if (fixed && have_fdata && t->dtype == HAL_DT_F32 && (size_t)(fdata.end - fdata.p) == want &&
	    ((uintptr_t)fdata.p % 4) == 0) {
		t->data = fdata.p;
		if (d->m)
			d->m->bytes_mapped += want;
		return 0;
	}
	unsigned char *out = copy_bytes(d, want);
	if (!out)
		return AIDOS_E_NOMEM;
	int64_t k = 0;
	b = msg;
	while (b.p < b.end) {
		if ((rc = pb_next(d, &b, &f, M)))
			return rc;
		if (f.num != num)
			continue;
		if (fixed) {
			const uint8_t *q = f.wt == WT_LEN ? f.sub.p : NULL;
			size_t bytes = f.wt == WT_LEN ? (size_t)(f.sub.end - f.sub.p) : (size_t)fixed;
			if (!q) {
				if ((fixed == 4 && f.wt != WT_I32) || (fixed == 8 && f.wt != WT_I64))
					return derr(d, AIDOS_E_INVALID, f.at, "%s: wrong wire type for typed data", M);
				memcpy(out + (size_t)k * es, &f.v, es);
				k++;
			} else {
				memcpy(out + (size_t)k * es, q, bytes);
				k += (int64_t)(bytes / es);
			}
			continue;
		}
		pb s;
		if (f.wt == WT_VARINT) {
			s.p = NULL;
			s.end = NULL;
		} else if (f.wt == WT_LEN) {
			s = f.sub;
		} else {
			return derr(d, AIDOS_E_INVALID, f.at, "%s: wrong wire type for typed data", M);
		}
		for (;;) {
			uint64_t v;
			if (f.wt == WT_VARINT) {
				v = f.v;
			} else {
				if (s.p >= s.end)
					break;
				if ((rc = pb_varint(&s, &v)))
					return derr(d, rc, f.at, "%s: bad packed varint", M);
			}
			if (k >= numel)
				return derr(d, AIDOS_E_INVALID, f.at, "%s: more values than elements", M);
			switch (t->dtype) {
			case HAL_DT_I64: case HAL_DT_U64: { int64_t x = (int64_t)v; memcpy(out + k * 8, &x, 8); break; }
			case HAL_DT_I32: case HAL_DT_U32: { int32_t x = (int32_t)v; memcpy(out + k * 4, &x, 4); break; }
			case HAL_DT_I16: case HAL_DT_U16: case HAL_DT_F16: case HAL_DT_BF16: { uint16_t x = (uint16_t)v; memcpy(out + k * 2, &x, 2); break; }
			default: out[k] = (uint8_t)v; break;
			}
			k++;
			if (f.wt == WT_VARINT)
				break;
		}
	}
	t->data = out;
	return 0;
}

/* TensorProto.external_data (13): StringStringEntryProto {key 1, value 2}. */
static int ext_data(dec *d, ir_tensor *t, pb msg, const uint8_t *at, size_t want)
{
	pb b = msg;
	pb_field f;
	char loc[512] = "";
	uint64_t off = 0, len = UINT64_MAX;
	while (b.p < b.end) {
		int rc = pb_next(d, &b, &f, "TensorProto");
		if (rc)
			return rc;
		if (f.num != 13 || f.wt != WT_LEN)
			continue;
		pb e = f.sub, key = {0}, val = {0};
		pb_field g;
		while (e.p < e.end) {
			if ((rc = pb_next(d, &e, &g, "StringStringEntryProto")))
				return rc;
			if (g.wt != WT_LEN)
				continue;
			if (g.num == 1)
				key = g.sub;
			else if (g.num == 2)
				val = g.sub;
		}
		size_t kl = (size_t)(key.end - key.p), vl = (size_t)(val.end - val.p);
		char v[64];
		if (kl == 8 && !memcmp(key.p, "location", 8)) {
			if (vl == 0 || vl >= sizeof loc)
				return derr(d, AIDOS_E_INVALID, f.at, "tensor '%s': external location of %zu bytes", t->name, vl);
			memcpy(loc, val.p, vl);
			loc[vl] = 0;
			if (strlen(loc) != vl)
				return derr(d, AIDOS_E_INVALID, f.at, "tensor '%s': NUL in external location", t->name);
		} else if ((kl == 6 && !memcmp(key.p, "offset", 6)) || (kl == 6 && !memcmp(key.p, "length", 6))) {
			if (vl == 0 || vl >= sizeof v)
				return derr(d, AIDOS_E_INVALID, f.at, "tensor '%s': bad external %.*s", t->name, (int)kl, key.p);
			memcpy(v, val.p, vl);
			v[vl] = 0;
			char *endp;
			errno = 0;
			unsigned long long x = strtoull(v, &endp, 10);
			if (errno || *endp || v[0] == '-')
				return derr(d, AIDOS_E_INVALID, f.at, "tensor '%s': external %.*s '%s' is not a number",
					    t->name, (int)kl, key.p, v);
			if (key.p[0] == 'o')
				off = x;
			else
				len = x;
		}
	}
	if (!loc[0])
		return derr(d, AIDOS_E_INVALID, at, "tensor '%s': external data without a location", t->name);
	/* The location is relative to the model's folder and may not leave it. */
	if (loc[0] == '/' || !strcmp(loc, "..") || !strncmp(loc, "../", 3) || strstr(loc, "/../") ||
	    (strlen(loc) >= 3 && !strcmp(loc + strlen(loc) - 3, "/..")))
		return derr(d, AIDOS_E_INVALID, at, "tensor '%s': external data location '%s' escapes the model's folder",
			    t->name, loc);
	struct aidos_model *m = d->m;
	if (!m->base_dir || !m->base_dir[0])
		return derr(d, AIDOS_E_UNSUPPORTED, at, "tensor '%s': external data '%s' needs a model path", t->name, loc);
	if (m->n_maps >= HAL_MODEL_MAX_MAPS)
		return derr(d, AIDOS_E_UNSUPPORTED, at, "tensor '%s': more than %d external files", t->name,
			    HAL_MODEL_MAX_MAPS);
	char path[4096];
	if ((size_t)snprintf(path, sizeof path, "%s/%s", m->base_dir, loc) >= sizeof path)
		return derr(d, AIDOS_E_INVALID, at, "tensor '%s': external path too long", t->name);
	hal_mapping *mp;
	const void *addr;
	size_t flen;
	int rc = hal_mapping_acquire(path, &mp, &addr, &flen);
	if (rc)
		return derr(d, rc, at, "tensor '%s': external data %s: %s", t->name, path, strerror(-rc));
	m->maps[m->n_maps++] = mp;
	if (len == UINT64_MAX)
		len = off <= flen ? flen - off : 0;
	if (off > flen || len > flen - off)
		return derr(d, AIDOS_E_TRUNCATED, at, "tensor '%s': external range %llu+%llu past the end of %s (%zu bytes)",
			    t->name, (unsigned long long)off, (unsigned long long)len, path, flen);
	if (len != want)
		return derr(d, AIDOS_E_INVALID, at, "tensor '%s': external length %llu, shape needs %zu",
			    t->name, (unsigned long long)len, want);
	const uint8_t *p = (const uint8_t *)addr + off;
	size_t es = hal_dtype_size(t->dtype);
	if (((uintptr_t)p % es) == 0) {
		t->data = p;
		m->bytes_mapped += want;
	} else {
		void *c = copy_bytes(d, want);
		if (!c)
			return AIDOS_E_NOMEM;
		memcpy(c, p, want);
		t->data = c;
	}
	return 0;
}

/* ---- TypeProto / ValueInfoProto ---- */

static int decode_shape(dec *d, pb msg, ir_value *v)
{
	pb_field f;
	v->rank = 0;
	while (msg.p < msg.end) {
		int rc = pb_next(d, &msg, &f, "TensorShapeProto");
		if (rc)
			return rc;
		if (f.num != 1)
			continue;
		if ((rc = want_wt(d, &f, WT_LEN, "TensorShapeProto", "dim")))
			return rc;
		if (v->rank >= HAL_MAX_RANK)
			return derr(d, AIDOS_E_UNSUPPORTED, f.at, "value '%s': rank over %d", v->name, HAL_MAX_RANK);
		int i = v->rank++;
		v->dims[i] = -1;
		pb dm = f.sub;
		pb_field g;
		while (dm.p < dm.end) {
			if ((rc = pb_next(d, &dm, &g, "Dimension")))
				return rc;
			if (g.num == 1 && g.wt == WT_VARINT) {
				int64_t x = (int64_t)g.v;
				v->dims[i] = x >= 0 ? x : -1;
			} else if (g.num == 2 && g.wt == WT_LEN) {
				if (!(v->dim_param[i] = dup_str(d, &g.sub)))
					return AIDOS_E_NOMEM;
			}
		}
	}
	return 0;
}

static int decode_value(dec *d, pb msg, ir_value *v)
{
	pb_field f;
	v->rank = -1;
	v->name = "";
	while (msg.p < msg.end) {
		int rc = pb_next(d, &msg, &f, "ValueInfoProto");
		if (rc)
			return rc;
		if (f.num == 1) {
			if ((rc = want_wt(d, &f, WT_LEN, "ValueInfoProto", "name")))
				return rc;
			if (!(v->name = dup_str(d, &f.sub)))
				return AIDOS_E_NOMEM;
		} else if (f.num == 2 && f.wt == WT_LEN) {
			pb tp = f.sub;
			pb_field g;
			while (tp.p < tp.end) {
				if ((rc = pb_next(d, &tp, &g, "TypeProto")))
					return rc;
				if (g.num != 1 || g.wt != WT_LEN)
					continue; /* sequence/map/optional: dtype stays 0 */
				pb tt = g.sub;
				pb_field h;
				while (tt.p < tt.end) {
					if ((rc = pb_next(d, &tt, &h, "TypeProto.Tensor")))
						return rc;
					if (h.num == 1 && h.wt == WT_VARINT)
						v->dtype = h.v <= 64 ? (int32_t)h.v : 0;
					else if (h.num == 2 && h.wt == WT_LEN && (rc = decode_shape(d, h.sub, v)))
						return rc;
				}
			}
		}
	}
	return 0;
}

/* ---- NodeProto / AttributeProto / GraphProto ---- */

static int decode_graph(dec *d, pb msg, ir_graph *g, ir_graph *parent, const uint8_t *at);

static int decode_attr(dec *d, pb msg, ir_attr *a)
{
	static const char M[] = "AttributeProto";
	pb_field f;
	int rc;
	int64_t nf = 0, ni = 0, ns = 0, nt = 0, ng = 0;
	a->name = "";
	/* Sizes of the list fields, counted in the bytes. */
	if ((rc = count_elems(d, msg, 7, 4, M, &nf)) || (rc = count_elems(d, msg, 8, 0, M, &ni)))
		return rc;
	int c;
	if ((rc = pb_count(d, msg, 9, M, &c)))
		return rc;
	ns = c;
	if ((rc = pb_count(d, msg, 10, M, &c)))
		return rc;
	nt = c;
	if ((rc = pb_count(d, msg, 11, M, &c)))
		return rc;
	ng = c;
	if (nf && !(a->floats = ir_mem_alloc(d->mem, (size_t)nf * sizeof(float))))
		return AIDOS_E_NOMEM;
	if (ni && !(a->ints = ir_mem_alloc(d->mem, (size_t)ni * sizeof(int64_t))))
		return AIDOS_E_NOMEM;
	if (ns && !(a->strings = ir_mem_alloc(d->mem, (size_t)ns * sizeof(char *))))
		return AIDOS_E_NOMEM;
	if (nt && !(a->tensors = ir_mem_alloc(d->mem, (size_t)nt * sizeof(ir_tensor))))
		return AIDOS_E_NOMEM;
	if (ng && !(a->graphs = ir_mem_alloc(d->mem, (size_t)ng * sizeof(ir_graph *))))
		return AIDOS_E_NOMEM;
	int64_t kf = 0, ki = 0;
	int ks = 0, kt = 0, kg = 0;
	int seen = 0; /* which single-value field was present, for IR < 3 files without type */
	pb b = msg;
	while (b.p < b.end) {
		if ((rc = pb_next(d, &b, &f, M)))
			return rc;
		switch (f.num) {
		case 1:
			if ((rc = want_wt(d, &f, WT_LEN, M, "name")))
				return rc;
			if (!(a->name = dup_str(d, &f.sub)))
				return AIDOS_E_NOMEM;
			break;
		case 2: {
			if ((rc = want_wt(d, &f, WT_I32, M, "f")))
				return rc;
			uint32_t x = (uint32_t)f.v;
			memcpy(&a->f, &x, 4);
			seen = IR_ATTR_FLOAT;
			break;
		}
		case 3:
			if ((rc = want_wt(d, &f, WT_VARINT, M, "i")))
				return rc;
			a->i = (int64_t)f.v;
			seen = IR_ATTR_INT;
			break;
		case 4:
			if ((rc = want_wt(d, &f, WT_LEN, M, "s")))
				return rc;
			if (!(a->s = dup_str(d, &f.sub)))
				return AIDOS_E_NOMEM;
			a->slen = (size_t)(f.sub.end - f.sub.p);
			seen = IR_ATTR_STRING;
			break;
		case 5:
			if ((rc = want_wt(d, &f, WT_LEN, M, "t")))
				return rc;
			if (!(a->t = ir_mem_alloc(d->mem, sizeof *a->t)))
				return AIDOS_E_NOMEM;
			if ((rc = decode_tensor(d, f.sub, a->t, f.at)))
				return rc;
			seen = IR_ATTR_TENSOR;
			break;
		case 6:
			if ((rc = want_wt(d, &f, WT_LEN, M, "g")))
				return rc;
			if (!(a->g = ir_mem_alloc(d->mem, sizeof *a->g)))
				return AIDOS_E_NOMEM;
			if ((rc = decode_graph(d, f.sub, a->g, NULL, f.at)))
				return rc;
			seen = IR_ATTR_GRAPH;
			break;
		case 7:
			if (f.wt == WT_LEN) {
				size_t bytes = (size_t)(f.sub.end - f.sub.p);
				if (bytes)  /* an empty packed list leaves floats NULL */
					memcpy(a->floats + kf, f.sub.p, bytes);
				kf += (int64_t)(bytes / 4);
			} else if (f.wt == WT_I32) {
				uint32_t x = (uint32_t)f.v;
				memcpy(&a->floats[kf++], &x, 4);
			} else {
				return derr(d, AIDOS_E_INVALID, f.at, "%s.floats: wire type %u", M, f.wt);
			}
			break;
		case 8:
			if ((rc = read_ints(d, &f, a->ints, &ki, ni, "AttributeProto.ints")))
				return rc;
			break;
		case 9:
			if ((rc = want_wt(d, &f, WT_LEN, M, "strings")))
				return rc;
			if (!(a->strings[ks++] = dup_str(d, &f.sub)))
				return AIDOS_E_NOMEM;
			break;
		case 10:
			if ((rc = want_wt(d, &f, WT_LEN, M, "tensors")))
				return rc;
			if ((rc = decode_tensor(d, f.sub, &a->tensors[kt++], f.at)))
				return rc;
			break;
		case 11:
			if ((rc = want_wt(d, &f, WT_LEN, M, "graphs")))
				return rc;
			if (!(a->graphs[kg] = ir_mem_alloc(d->mem, sizeof(ir_graph))))
				return AIDOS_E_NOMEM;
			if ((rc = decode_graph(d, f.sub, a->graphs[kg++], NULL, f.at)))
				return rc;
			break;
		case 20:
			if ((rc = want_wt(d, &f, WT_VARINT, M, "type")))
				return rc;
			if (f.v > IR_ATTR_TYPE_PROTOS)
				return derr(d, AIDOS_E_INVALID, f.at, "attribute '%s': type %llu", a->name,
					    (unsigned long long)f.v);
			a->type = (int32_t)f.v;
			break;
		case 21:
			return derr(d, AIDOS_E_UNSUPPORTED, f.at, "attribute '%s': ref_attr_name (function attributes) is not supported",
				    a->name);
		default:
			break;
		}
	}
	if (!a->type) {
		/* IR < 3 files may omit the type: take it from the field present. */
		a->type = seen ? seen : nf ? IR_ATTR_FLOATS : ni ? IR_ATTR_INTS : ns ? IR_ATTR_STRINGS :
			  nt ? IR_ATTR_TENSORS : ng ? IR_ATTR_GRAPHS : IR_ATTR_UNDEF;
	}
	switch (a->type) {
	case IR_ATTR_FLOATS: a->n = (int32_t)nf; break;
	case IR_ATTR_INTS: a->n = (int32_t)ni; break;
	case IR_ATTR_STRINGS: a->n = ns; break;
	case IR_ATTR_TENSORS: a->n = nt; break;
	case IR_ATTR_GRAPHS: a->n = ng; break;
	case IR_ATTR_TENSOR:
		if (!a->t)
			return derr(d, AIDOS_E_INVALID, NULL, "attribute '%s': TENSOR without a tensor", a->name);
		break;
	case IR_ATTR_GRAPH:
		if (!a->g)
			return derr(d, AIDOS_E_INVALID, NULL, "attribute '%s': GRAPH without a graph", a->name);
		break;
	case IR_ATTR_STRING:
		if (!a->s)
			a->s = "";
		break;
	default:
		break;
	}
	if (nf > INT32_MAX || ni > INT32_MAX)
		return derr(d, AIDOS_E_INVALID, NULL, "attribute '%s': list too long", a->name);
	return 0;
}

static int decode_node(dec *d, pb msg, ir_node *n)
{
	static const char M[] = "NodeProto";
	int rc, ni, no, na;
	if ((rc = pb_count(d, msg, 1, M, &ni)) || (rc = pb_count(d, msg, 2, M, &no)) ||
	    (rc = pb_count(d, msg, 5, M, &na)))
		return rc;
	n->name = n->op_type = n->domain = "";
	if ((ni && !(n->in = ir_mem_alloc(d->mem, (size_t)ni * sizeof(char *)))) ||
	    (no && !(n->out = ir_mem_alloc(d->mem, (size_t)no * sizeof(char *)))) ||
	    (na && !(n->attr = ir_mem_alloc(d->mem, (size_t)na * sizeof(ir_attr)))))
		return AIDOS_E_NOMEM;
	pb b = msg;
	pb_field f;
	while (b.p < b.end) {
		if ((rc = pb_next(d, &b, &f, M)))
			return rc;
		const char **dst = NULL;
		switch (f.num) {
		case 1: dst = &n->in[n->n_in++]; break;
		case 2: dst = &n->out[n->n_out++]; break;
		case 3: dst = &n->name; break;
		case 4: dst = &n->op_type; break;
		case 7: dst = &n->domain; break;
		case 5:
			if ((rc = want_wt(d, &f, WT_LEN, M, "attribute")))
				return rc;
			if ((rc = decode_attr(d, f.sub, &n->attr[n->n_attr++])))
				return rc;
			break;
		default:
			break;
		}
		if (dst) {
			if ((rc = want_wt(d, &f, WT_LEN, M, "string field")))
				return rc;
			if (!(*dst = dup_str(d, &f.sub)))
				return AIDOS_E_NOMEM;
		}
	}
	if (!n->op_type[0])
		return derr(d, AIDOS_E_INVALID, msg.p, "node '%s' has no op_type", n->name);
	if (!strcmp(n->domain, "ai.onnx"))
		n->domain = "";
	return 0;
}

static int decode_graph(dec *d, pb msg, ir_graph *g, ir_graph *parent, const uint8_t *at)
{
	static const char M[] = "GraphProto";
	int rc;
	if (++d->depth > IR_MAX_DEPTH)
		return derr(d, AIDOS_E_UNSUPPORTED, at, "subgraphs nested deeper than %d", IR_MAX_DEPTH);
	int nn, nini, nin, nout, nvi, nsp;
	if ((rc = pb_count(d, msg, 1, M, &nn)) || (rc = pb_count(d, msg, 5, M, &nini)) ||
	    (rc = pb_count(d, msg, 11, M, &nin)) || (rc = pb_count(d, msg, 12, M, &nout)) ||
	    (rc = pb_count(d, msg, 13, M, &nvi)) || (rc = pb_count(d, msg, 15, M, &nsp)))
		return rc;
	if (nsp)
		return derr(d, AIDOS_E_UNSUPPORTED, at, "sparse initializers are not supported");
	g->parent = parent;
	g->name = "";
	if ((nn && !(g->node = ir_mem_alloc(d->mem, (size_t)nn * sizeof(ir_node)))) ||
	    (nini && !(g->init = ir_mem_alloc(d->mem, (size_t)nini * sizeof(ir_tensor)))) ||
	    (nin && !(g->input = ir_mem_alloc(d->mem, (size_t)nin * sizeof(ir_value)))) ||
	    (nout && !(g->output = ir_mem_alloc(d->mem, (size_t)nout * sizeof(ir_value)))) ||
	    (nvi && !(g->value_info = ir_mem_alloc(d->mem, (size_t)nvi * sizeof(ir_value)))))
		return AIDOS_E_NOMEM;
	pb b = msg;
	pb_field f;
	while (b.p < b.end) {
		if ((rc = pb_next(d, &b, &f, M)))
			return rc;
		if (f.num == 2 && f.wt == WT_LEN) {
			if (!(g->name = dup_str(d, &f.sub)))
				return AIDOS_E_NOMEM;
			continue;
		}
		if (f.num != 1 && f.num != 5 && f.num != 11 && f.num != 12 && f.num != 13)
			continue;
		if ((rc = want_wt(d, &f, WT_LEN, M, "repeated message")))
			return rc;
		switch (f.num) {
		case 1: rc = decode_node(d, f.sub, &g->node[g->n_node++]); break;
		case 5: rc = decode_tensor(d, f.sub, &g->init[g->n_init++], f.at); break;
		case 11: rc = decode_value(d, f.sub, &g->input[g->n_input++]); break;
		case 12: rc = decode_value(d, f.sub, &g->output[g->n_output++]); break;
		case 13: rc = decode_value(d, f.sub, &g->value_info[g->n_value_info++]); break;
		}
		if (rc)
			return rc;
	}
	/* Subgraphs decoded inside attributes learn their parent now. */
	for (int i = 0; i < g->n_node; i++)
		for (int k = 0; k < g->node[i].n_attr; k++) {
			ir_attr *a = &g->node[i].attr[k];
			if (a->g)
				a->g->parent = g;
			for (int j = 0; j < a->n && a->graphs && a->type == IR_ATTR_GRAPHS; j++)
				a->graphs[j]->parent = g;
		}
	for (int i = 0; i < g->n_init; i++)
		if (!g->init[i].name[0])
			return derr(d, AIDOS_E_INVALID, at, "graph '%s': initializer %d has no name", g->name, i);
	d->depth--;
	return 0;
}

static int decode_model(dec *d, pb msg)
{
	static const char M[] = "ModelProto";
	struct aidos_model *m = d->m;
	int rc, nop;
	if ((rc = pb_count(d, msg, 8, M, &nop)))
		return rc;
	if (nop && !(m->opset = ir_mem_alloc(d->mem, (size_t)nop * sizeof(ir_opset))))
		return AIDOS_E_NOMEM;
	pb b = msg, graph = {0};
	pb_field f;
	int have_graph = 0, have_ir = 0;
	const uint8_t *graph_at = NULL;
	while (b.p < b.end) {
		if ((rc = pb_next(d, &b, &f, M)))
			return rc;
		if (f.num == 1) {
			if ((rc = want_wt(d, &f, WT_VARINT, M, "ir_version")))
				return rc;
			m->ir_version = (int64_t)f.v;
			have_ir = 1;
		} else if (f.num == 7) {
			if ((rc = want_wt(d, &f, WT_LEN, M, "graph")))
				return rc;
			graph = f.sub;
			graph_at = f.at;
			have_graph = 1;
		} else if (f.num == 8) {
			if ((rc = want_wt(d, &f, WT_LEN, M, "opset_import")))
				return rc;
			ir_opset *o = &m->opset[m->n_opset++];
			o->domain = "";
			pb s = f.sub;
			pb_field g;
			while (s.p < s.end) {
				if ((rc = pb_next(d, &s, &g, "OperatorSetIdProto")))
					return rc;
				if (g.num == 1 && g.wt == WT_LEN) {
					if (!(o->domain = dup_str(d, &g.sub)))
						return AIDOS_E_NOMEM;
				} else if (g.num == 2 && g.wt == WT_VARINT) {
					o->version = (int64_t)g.v;
				}
			}
		}
	}
	if (!have_ir)
		return derr(d, AIDOS_E_INVALID, NULL, "not an ONNX model: no ir_version");
	if (m->ir_version < 3 || m->ir_version > 10)
		return derr(d, AIDOS_E_UNSUPPORTED, NULL, "IR version %lld (aidos reads 3-10)", (long long)m->ir_version);
	if (!have_graph)
		return derr(d, AIDOS_E_INVALID, NULL, "not an ONNX model: no graph");
	m->opset_default = -1;
	for (int i = 0; i < m->n_opset; i++)
		if (!m->opset[i].domain[0] || !strcmp(m->opset[i].domain, "ai.onnx")) {
			if (m->opset[i].version < 1 || m->opset[i].version > 21)
				return derr(d, AIDOS_E_UNSUPPORTED, NULL, "default-domain opset %lld (aidos runs 1-21)",
					    (long long)m->opset[i].version);
			m->opset_default = (int)m->opset[i].version;
		}
	if (m->opset_default < 0)
		return derr(d, AIDOS_E_INVALID, NULL, "no opset_import for the default domain");
	if (!(m->graph = ir_mem_alloc(d->mem, sizeof *m->graph)))
		return AIDOS_E_NOMEM;
	if ((rc = decode_graph(d, graph, m->graph, NULL, graph_at)))
		return rc;
	ir_graph *g = m->graph;
	/* Inputs the caller feeds: graph inputs that no initializer provides. */
	if (g->n_input && !(m->in = ir_mem_alloc(d->mem, (size_t)g->n_input * sizeof(ir_value *))))
		return AIDOS_E_NOMEM;
	for (int i = 0; i < g->n_input; i++) {
		int init = 0;
		for (int k = 0; k < g->n_init && !init; k++)
			init = !strcmp(g->init[k].name, g->input[i].name);
		if (!init)
			m->in[m->n_in++] = &g->input[i];
	}
	if (!g->n_output)
		return derr(d, AIDOS_E_INVALID, NULL, "graph '%s' has no outputs", g->name);
	return 0;
}

static void model_free(struct aidos_model *m)
{
	if (!m)
		return;
	for (int i = 0; i < m->n_maps; i++)
		hal_mapping_release(m->maps[i]);
	ir_mem_free(&m->mem);
	pool_free(m->base_dir);
	pool_free(m);
}

void aidos_model_free(aidos_model *m)
{
	model_free(m);
}

static int load(const void *buf, size_t len, const char *base_dir, const char *path,
		hal_mapping *mp, aidos_model **out, char *err, size_t errlen)
{
	*out = NULL;
	if (err && errlen)
		err[0] = 0;
	struct aidos_model *m = pool_calloc(1, sizeof *m);
	if (!m) {
		hal_mapping_release(mp);
		return AIDOS_E_NOMEM;
	}
	if (mp)
		m->maps[m->n_maps++] = mp;
	m->base_dir = pool_strndup(base_dir ? base_dir : "", base_dir ? strlen(base_dir) : 0);
	m->path = path;
	dec d = { .m = m, .mem = &m->mem, .base = buf, .err = err, .errlen = errlen };
	int rc = m->base_dir ? 0 : AIDOS_E_NOMEM;
	if (!rc)
		rc = decode_model(&d, (pb){ buf, (const uint8_t *)buf + len });
	if (!rc && (rc = hal_fuse_conv(m)) && err && errlen)
		snprintf(err, errlen, "out of memory fusing Conv chains");
	if (rc) {
		if (err && errlen && !err[0])
			snprintf(err, errlen, "%s", aidos_strerror(rc));
		model_free(m);
		return rc;
	}
	m->path = NULL;
	*out = m;
	return 0;
}

int aidos_model_load_buffer(const void *buf, size_t len, const char *base_dir,
			    aidos_model **out, char *err, size_t errlen)
{
	if (!buf && len)
		return AIDOS_E_INVALID;
	return load(buf ? buf : "", len, base_dir, NULL, NULL, out, err, errlen);
}

int aidos_model_load(const char *path, aidos_model **out, char *err, size_t errlen)
{
	hal_mapping *mp;
	const void *addr;
	size_t len;
	*out = NULL;
	int rc = hal_mapping_acquire(path, &mp, &addr, &len);
	if (rc) {
		if (err && errlen)
			snprintf(err, errlen, "%s: %s", path, rc == -EISDIR ? "not a regular file" : strerror(-rc));
		return rc;
	}
	char dir[4096];
	const char *slash = strrchr(path, '/');
	if (!slash)
		snprintf(dir, sizeof dir, ".");
	else
		snprintf(dir, sizeof dir, "%.*s", (int)(slash - path) ? (int)(slash - path) : 1, path);
	char msg[512] = "";
	rc = load(addr ? addr : "", len, dir, path, mp, out, msg, sizeof msg);
	if (rc && err && errlen)
		snprintf(err, errlen, "%s: %s", path, msg);
	return rc;
}

int onnx_tensor_decode(const void *buf, size_t len, ir_tensor *t, void **owned, char *err, size_t errlen)
{
	ir_mem mem = {0};
	*owned = NULL;
	if (err && errlen)
		err[0] = 0;
	dec d = { .m = NULL, .mem = &mem, .base = buf, .err = err, .errlen = errlen, .owned = owned };
	int rc = decode_tensor(&d, (pb){ buf, (const uint8_t *)buf + len }, t, buf);
	/* The name lives in `mem`: drop it (callers bind by position). */
	t->name = "";
	ir_mem_free(&mem);
	if (rc) {
		free(*owned);
		*owned = NULL;
		if (err && errlen && !err[0])
			snprintf(err, errlen, "%s", aidos_strerror(rc));
	}
	return rc;
}
