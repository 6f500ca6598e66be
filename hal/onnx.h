/*
 * hal/onnx.h - ONNX protobuf wire-format decoding (hal/onnx.c).
 *
 * No protobuf library: the file is mmapped and walked in place, so weights
 * stay in the mapping. Every length, count and nesting level read from the
 * file is checked against the bytes that remain before it is used; counts
 * that size an allocation are first counted in the bytes themselves (a
 * repeated field cannot claim more elements than it has bytes).
 */
#ifndef AIDOS_HAL_ONNX_H
#define AIDOS_HAL_ONNX_H

#include <stddef.h>
#include <stdint.h>
#include "hal/ir.h"

struct hal_model;

/* Decodes one serialized TensorProto (the .pb files of ONNX test data) into t.
 * Data that cannot be used in place (varint lists, unaligned bytes) is copied
 * into *owned (malloc'd; the caller frees it, NULL when nothing was copied).
 * External data is rejected here. Errors: AIDOS_E_INVALID, AIDOS_E_TRUNCATED,
 * AIDOS_E_UNSUPPORTED (dtype), AIDOS_E_NOMEM; err gets one line. */
int onnx_tensor_decode(const void *buf, size_t len, ir_tensor *t, void **owned,
		       char *err, size_t errlen);

#endif
