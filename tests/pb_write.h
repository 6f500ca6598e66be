/*
 * tests/pb_write.h - a minimal protobuf writer for tests that build ONNX
 * models byte by byte (field numbers from onnx.proto): a growable buffer,
 * varints, tags, length-delimited fields and sub-messages. Include after
 * <cmocka.h> (allocation failures fail the test).
 */
#ifndef AIDOS_TESTS_PB_WRITE_H
#define AIDOS_TESTS_PB_WRITE_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* A message under construction; { 0 } is empty. */
typedef struct pbw {
	uint8_t *b;
	size_t n, cap;
} pbw;

static inline void pbw_raw(pbw *w, const void *d, size_t n)
{
	if (w->n + n > w->cap) {
		w->cap = (w->n + n) * 2 + 64;
		w->b = realloc(w->b, w->cap);
		assert_non_null(w->b);
	}
	if (n)
		memcpy(w->b + w->n, d, n);
	w->n += n;
}

static inline void pbw_varint(pbw *w, uint64_t v)
{
	do {
		uint8_t c = (uint8_t)(v & 0x7f);
		v >>= 7;
		if (v)
			c |= 0x80;
		pbw_raw(w, &c, 1);
	} while (v);
}

/* Key of field with wire type wt (0 varint, 2 length-delimited). */
static inline void pbw_tag(pbw *w, uint32_t field, uint32_t wt)
{
	pbw_varint(w, (uint64_t)field << 3 | wt);
}

static inline void pbw_int(pbw *w, uint32_t field, int64_t v)
{
	pbw_tag(w, field, 0);
	pbw_varint(w, (uint64_t)v);
}

static inline void pbw_bytes(pbw *w, uint32_t field, const void *d, size_t n)
{
	pbw_tag(w, field, 2);
	pbw_varint(w, n);
	pbw_raw(w, d, n);
}

static inline void pbw_str(pbw *w, uint32_t field, const char *s)
{
	pbw_bytes(w, field, s, strlen(s));
}

/* Appends m as a length-delimited field; m stays as it is. */
static inline void pbw_put(pbw *w, uint32_t field, const pbw *m)
{
	pbw_bytes(w, field, m->b, m->n);
}

/* Appends m as a length-delimited field, then frees and empties it. */
static inline void pbw_take(pbw *w, uint32_t field, pbw *m)
{
	pbw_put(w, field, m);
	free(m->b);
	memset(m, 0, sizeof *m);
}

#endif
