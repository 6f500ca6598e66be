/*
 * hal/tensor.c - element types, shapes and numpy broadcasting.
 */
#include <string.h>
#include "hal/hal.h"

size_t hal_dtype_size(int dtype)
{
	switch (dtype) {
	case HAL_DT_F32: case HAL_DT_I32: case HAL_DT_U32: return 4;
	case HAL_DT_U8: case HAL_DT_I8: case HAL_DT_BOOL: return 1;
	case HAL_DT_U16: case HAL_DT_I16: case HAL_DT_F16: case HAL_DT_BF16: return 2;
	case HAL_DT_I64: case HAL_DT_F64: case HAL_DT_U64: return 8;
	default: return 0;
	}
}

const char *hal_dtype_name(int dtype)
{
	switch (dtype) {
	case HAL_DT_F32: return "float32";
	case HAL_DT_U8: return "uint8";
	case HAL_DT_I8: return "int8";
	case HAL_DT_U16: return "uint16";
	case HAL_DT_I16: return "int16";
	case HAL_DT_I32: return "int32";
	case HAL_DT_I64: return "int64";
	case HAL_DT_STRING: return "string";
	case HAL_DT_BOOL: return "bool";
	case HAL_DT_F16: return "float16";
	case HAL_DT_F64: return "float64";
	case HAL_DT_U32: return "uint32";
	case HAL_DT_U64: return "uint64";
	case HAL_DT_BF16: return "bfloat16";
	default: return "?";
	}
}

int64_t hal_numel(const hal_tensor *t)
{
	int64_t n = 1;
	for (int i = 0; i < t->rank; i++)
		n *= t->dims[i];
	return n;
}

int hal_dims_ok(int rank, const int64_t *dims)
{
	int64_t span = 1;
	for (int i = 0; i < rank; i++) {
		if (dims[i] < 0)
			return 0;
		if (dims[i] && span > HAL_MAX_SPAN / dims[i])
			return 0;
		span *= dims[i] ? dims[i] : 1;
	}
	return 1;
}

void hal_tensor_like(hal_tensor *dst, const hal_tensor *src)
{
	dst->dtype = src->dtype;
	dst->rank = src->rank;
	memcpy(dst->dims, src->dims, sizeof dst->dims);
}

void hal_tensor_set_shape(hal_tensor *dst, int dtype, int rank, const int64_t *dims)
{
	dst->dtype = dtype;
	dst->rank = rank;
	memset(dst->dims, 0, sizeof dst->dims);
	if (rank > 0)
		memcpy(dst->dims, dims, (size_t)rank * sizeof *dims);
}

int hal_broadcast_shape(const hal_tensor *a, const hal_tensor *b, int64_t *out)
{
	int r = a->rank > b->rank ? a->rank : b->rank;
	for (int i = 0; i < r; i++) {
		int ia = i - (r - a->rank), ib = i - (r - b->rank);
		int64_t da = ia >= 0 ? a->dims[ia] : 1;
		int64_t db = ib >= 0 ? b->dims[ib] : 1;
		if (da == db || db == 1)
			out[i] = da;
		else if (da == 1)
			out[i] = db;
		else
			return -1;
	}
	return r;
}

double hal_get_f64(const hal_tensor *t, int64_t i)
{
	switch (t->dtype) {
	case HAL_DT_F32: return ((const float *)t->data)[i];
	case HAL_DT_F64: return ((const double *)t->data)[i];
	case HAL_DT_I64: return (double)((const int64_t *)t->data)[i];
	case HAL_DT_I32: return ((const int32_t *)t->data)[i];
	case HAL_DT_U32: return ((const uint32_t *)t->data)[i];
	case HAL_DT_I16: return ((const int16_t *)t->data)[i];
	case HAL_DT_U16: return ((const uint16_t *)t->data)[i];
	case HAL_DT_I8: return ((const int8_t *)t->data)[i];
	case HAL_DT_U8: case HAL_DT_BOOL: return ((const uint8_t *)t->data)[i];
	case HAL_DT_U64: return (double)((const uint64_t *)t->data)[i];
	default: return 0;
	}
}

int64_t hal_get_i64(const hal_tensor *t, int64_t i)
{
	switch (t->dtype) {
	case HAL_DT_I64: return ((const int64_t *)t->data)[i];
	case HAL_DT_I32: return ((const int32_t *)t->data)[i];
	case HAL_DT_U32: return ((const uint32_t *)t->data)[i];
	case HAL_DT_I16: return ((const int16_t *)t->data)[i];
	case HAL_DT_U16: return ((const uint16_t *)t->data)[i];
	case HAL_DT_I8: return ((const int8_t *)t->data)[i];
	case HAL_DT_U8: case HAL_DT_BOOL: return ((const uint8_t *)t->data)[i];
	case HAL_DT_U64: return (int64_t)((const uint64_t *)t->data)[i];
	case HAL_DT_F32: {
		float v = ((const float *)t->data)[i];
		return v != v ? 0 : v >= 9.2e18f ? INT64_MAX : v <= -9.2e18f ? INT64_MIN : (int64_t)v;
	}
	case HAL_DT_F64: {
		double v = ((const double *)t->data)[i];
		return v != v ? 0 : v >= 9.2e18 ? INT64_MAX : v <= -9.2e18 ? INT64_MIN : (int64_t)v;
	}
	default: return 0;
	}
}
