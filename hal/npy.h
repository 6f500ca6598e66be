/*
 * hal/npy.h - private side of the .npy reader/writer (hal/npy.c). The public
 * API is include/aidos/npy.h; this adds the header parser on its own, for
 * tests and fuzzers that want to probe it without a file.
 */
#ifndef AIDOS_HAL_NPY_H
#define AIDOS_HAL_NPY_H

#include <stddef.h>
#include <stdint.h>
#include "aidos/npy.h"

/* What a .npy header declares. */
typedef struct hal_npy_header {
	int major;              /* format version: 1, 2 or 3 (minor is always 0) */
	int32_t dtype;          /* AIDOS_DT_* */
	int32_t rank;
	int64_t dims[AIDOS_MAX_RANK];
	size_t data_off;        /* bytes before the data: magic + length + header */
	size_t nbytes;          /* bytes of data the header declares */
} hal_npy_header;

/* Parses the magic, version, header length and header dict at the start of
 * buf (len bytes: at least the whole header; the data need not follow).
 * Errors: AIDOS_E_INVALID, AIDOS_E_TRUNCATED (len ends inside the header),
 * AIDOS_E_UNSUPPORTED, AIDOS_E_RANGE, each with one line in err. */
int hal_npy_parse_header(const void *buf, size_t len, hal_npy_header *h,
			 char *err, size_t errlen);

#endif
