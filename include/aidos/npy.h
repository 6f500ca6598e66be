/*
 * npy.h - read and write NumPy .npy files (the format of numpy.save).
 *
 * aidos uses .npy for tensors that cross its boundary as files: the CLI's
 * inputs and outputs, and the golden reference data of the tests (written by
 * tools/ort_ref.js from ONNX Runtime's outputs). Format:
 * https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html
 *
 *   aidos_tensor t;
 *   void *owned;
 *   char err[256];
 *   if (aidos_npy_load("x.npy", &t, &owned, err, sizeof err)) { puts(err); ... }
 *   ... t.dtype, t.rank, t.dims, t.data ...
 *   aidos_npy_free(owned);
 *
 *   if (aidos_npy_save("y.npy", &t)) ...
 *
 * Supported: format versions 1.0, 2.0 and 3.0; little-endian, C order;
 * dtypes <f4 <f8 <i8 <i4 |b1 |u1 |i1 (float32, float64, int64, int32, bool,
 * uint8, int8); rank 0 (scalars) to AIDOS_MAX_RANK; zero-size arrays.
 * Everything else (big-endian, Fortran order, other dtypes, object arrays) is
 * refused with AIDOS_E_UNSUPPORTED. The whole file is validated: magic,
 * version, header length, the header dict (exactly the keys descr,
 * fortran_order and shape, each once), dimension and byte-size overflow, and
 * that the file holds exactly the data the header declares.
 *
 * All functions are thread-safe (no shared state).
 */
#ifndef AIDOS_NPY_H
#define AIDOS_NPY_H

#include <stddef.h>
#include "aidos/aidos.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest header aidos accepts (numpy itself refuses more than 10000 bytes
 * by default since 1.24): a guard against absurd allocations. */
#define AIDOS_NPY_MAX_HEADER 65536

/* Loads the .npy file at path into t. t->name is set to NULL, t->dtype,
 * t->rank and t->dims from the header, and t->data to a 64-byte aligned
 * buffer holding the elements (non-NULL even for a zero-size array), which
 * is also stored in *owned: the caller owns it and releases it with
 * aidos_npy_free() (t is then no longer usable).
 * Errors: -errno (open/read), AIDOS_E_INVALID (not a .npy file, malformed
 * header, trailing bytes), AIDOS_E_TRUNCATED (file shorter than its header
 * or data), AIDOS_E_UNSUPPORTED (dtype, byte order, Fortran order, rank),
 * AIDOS_E_RANGE (a dimension or the byte size overflows), AIDOS_E_NOMEM.
 * On error *owned is NULL, t is untouched and err (may be NULL) receives one
 * line naming the problem. */
int aidos_npy_load(const char *path, aidos_tensor *t, void **owned,
		   char *err, size_t errlen);

/* Same, from the len bytes at buf (a whole .npy file; borrowed for the call
 * only: the data is copied into *owned). For fuzzers and embedded data.
 * Errors as aidos_npy_load, without -errno. */
int aidos_npy_load_buffer(const void *buf, size_t len, aidos_tensor *t,
			  void **owned, char *err, size_t errlen);

/* Releases a buffer returned through owned by the loaders; NULL is a no-op. */
void aidos_npy_free(void *owned);

/* Writes t (dtype, rank, dims, data; name ignored) to path as a format 1.0
 * file, header padded so the data starts on a 64-byte boundary as numpy
 * does (numpy.load reads it back unchanged). The file is written to a
 * temporary name beside path and renamed, so a reader never sees half a file.
 * Errors: AIDOS_E_INVALID (NULL t or path, rank outside 0..AIDOS_MAX_RANK,
 * negative dimension, NULL data with elements), AIDOS_E_UNSUPPORTED (dtype
 * not in the list above), AIDOS_E_RANGE (byte size overflows), -errno. */
int aidos_npy_save(const char *path, const aidos_tensor *t);

/* The .npy descr of an aidos dtype ("<f4", "|b1"...), or NULL if .npy
 * support does not cover it. */
const char *aidos_npy_descr(int dtype);

#ifdef __cplusplus
}
#endif
#endif
