/*
 * node/wire.h - the data plane's framing, shared by the node (server side)
 * and aidosctl (client side): tag constants, client ids, and the codec
 * between aidos_tensor and the protobuf Tensor (docs/cluster.md, "Data
 * plane").
 *
 * Protocol. A request is ONE UCX tag message whose payload is exactly one
 * packed TransportRequest (no other framing), sent with tag
 * aidos_wire_req_tag(client_id) (high 16 bits 0xA1D0; the node receives with
 * AIDOS_TAG_KIND_MASK). The node answers ONE tag message, one packed
 * TransportReply, to tag aidos_wire_reply_tag(client_id) (high 16 bits
 * 0xA1D1) on an endpoint to TransportRequest.from.ucx_address (cached per
 * address). TransportReply.request_id echoes InferRequest.request_id so a
 * client can drop a stale reply. status is 0 or an AIDOS_E_* code with
 * `error` one line; an agent that is not (or no longer) on the node answers
 * status AIDOS_E_NOTFOUND or a reply whose redirect_node is set, and the
 * client resolves again. No message exceeds AIDOS_WIRE_MAX_MSG bytes: a
 * larger request is refused, a larger reply becomes an error reply.
 *
 *   uint64_t cid = aidos_wire_client_id();
 *   Aidos__Tensor pb = AIDOS__TENSOR__INIT;
 *   if (aidos_wire_tensor_to_pb(&t, &pb, err, sizeof err)) ...
 *   ... pack TransportRequest, xport_tag_send(x, ep, aidos_wire_req_tag(cid), ...)
 *   ... xport_tag_recv(x, aidos_wire_reply_tag(cid), ~0ull, buf, cap, ...)
 *   aidos_tensor out;
 *   if (aidos_wire_tensor_from_pb(reply->outputs[i], &out, err, sizeof err)) ...
 *
 * Everything here is static inline and thread-safe (no shared state).
 */
#ifndef AIDOS_NODE_WIRE_H
#define AIDOS_NODE_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>
#include "aidos/aidos.h"
#include "proto/aidos.pb-c.h"

#define AIDOS_TAG_KIND_MASK   0xFFFF000000000000ull  /* what a tag is */
#define AIDOS_TAG_CLIENT_MASK 0x0000FFFFFFFFFFFFull  /* whose it is: 48-bit client id */
#define AIDOS_TAG_REQ         0xA1D0000000000000ull  /* requests to a node */
#define AIDOS_TAG_REPLY       0xA1D1000000000000ull  /* replies, | client id */

/* Largest tag message either side accepts (a request's inputs or a reply's
 * outputs, packed). */
#define AIDOS_WIRE_MAX_MSG (64u << 20)
/* Largest checkpoint (sum of the state tensors' data) a node sends with a
 * heartbeat; the coordinator refuses larger ones. */
#define AIDOS_WIRE_MAX_CHECKPOINT (1u << 20)

static inline uint64_t aidos_wire_req_tag(uint64_t client_id)
{
	return AIDOS_TAG_REQ | (client_id & AIDOS_TAG_CLIENT_MASK);
}

static inline uint64_t aidos_wire_reply_tag(uint64_t client_id)
{
	return AIDOS_TAG_REPLY | (client_id & AIDOS_TAG_CLIENT_MASK);
}

/* A fresh, nonzero 48-bit client id: random (getrandom), or when the kernel
 * has none to give, pid and clock mixed (still unique per process). */
static inline uint64_t aidos_wire_client_id(void)
{
	uint64_t id = 0;
	if (getrandom(&id, sizeof id, GRND_NONBLOCK) != (ssize_t)sizeof id) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		id = ((uint64_t)getpid() << 32) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20);
		id *= 0x9E3779B97F4A7C15ull;  /* spread the bits (Fibonacci hashing) */
	}
	id &= AIDOS_TAG_CLIENT_MASK;
	return id ? id : 1;
}

/* Bytes per element of an aidos dtype; 0 for a dtype aidos does not carry. */
static inline size_t aidos_wire_dtype_size(int32_t dtype)
{
	switch (dtype) {
	case AIDOS_DT_FLOAT: return 4;
	case AIDOS_DT_UINT8: return 1;
	case AIDOS_DT_INT8: return 1;
	case AIDOS_DT_INT32: return 4;
	case AIDOS_DT_INT64: return 8;
	case AIDOS_DT_BOOL: return 1;
	case AIDOS_DT_DOUBLE: return 8;
	default: return 0;
	}
}

/* Bytes of data a tensor of this dtype and shape holds, into *bytes.
 * Errors: AIDOS_E_UNSUPPORTED (dtype), AIDOS_E_INVALID (rank outside
 * 0..AIDOS_MAX_RANK, negative dimension), AIDOS_E_RANGE (overflow). */
static inline int aidos_wire_tensor_bytes(int32_t dtype, size_t rank, const int64_t *dims,
					  size_t *bytes, char *err, size_t errlen)
{
	size_t esize = aidos_wire_dtype_size(dtype), n = esize;
	if (!esize) {
		snprintf(err, errlen, "unsupported dtype %d", (int)dtype);
		return AIDOS_E_UNSUPPORTED;
	}
	if (rank > AIDOS_MAX_RANK) {
		snprintf(err, errlen, "rank %zu exceeds %d", rank, AIDOS_MAX_RANK);
		return AIDOS_E_INVALID;
	}
	for (size_t i = 0; i < rank; i++) {
		if (dims[i] < 0) {
			snprintf(err, errlen, "dimension %zu is negative (%lld)", i, (long long)dims[i]);
			return AIDOS_E_INVALID;
		}
		if ((uint64_t)dims[i] > SIZE_MAX || __builtin_mul_overflow(n, (size_t)dims[i], &n)) {
			snprintf(err, errlen, "dimensions overflow the byte size");
			return AIDOS_E_RANGE;
		}
	}
	*bytes = n;
	return 0;
}

/* Views pb as an aidos_tensor, after checking it: a supported dtype, rank at
 * most AIDOS_MAX_RANK, no negative dimension, no overflow, and exactly
 * numel * element size bytes of data. t->name and t->data are borrowed from
 * pb (valid while pb lives; data is aligned as protobuf-c's allocator
 * returns it, 16 bytes with malloc: copy it if a kernel needs more).
 * Errors: AIDOS_E_INVALID, AIDOS_E_UNSUPPORTED, AIDOS_E_RANGE; err gets one
 * line naming the tensor. */
static inline int aidos_wire_tensor_from_pb(const Aidos__Tensor *pb, aidos_tensor *t, char *err,
					    size_t errlen)
{
	char why[128];
	size_t bytes;
	int rc;
	if (!pb) {
		snprintf(err, errlen, "missing tensor");
		return AIDOS_E_INVALID;
	}
	const char *name = pb->name && pb->name[0] ? pb->name : "(unnamed)";
	if ((rc = aidos_wire_tensor_bytes(pb->dtype, pb->n_dims, pb->dims, &bytes, why, sizeof why))) {
		snprintf(err, errlen, "tensor '%s': %s", name, why);
		return rc;
	}
	if (pb->data.len != bytes || (bytes && !pb->data.data)) {
		snprintf(err, errlen, "tensor '%s': %zu bytes of data, its dtype and shape need %zu", name,
			 pb->data.len, bytes);
		return AIDOS_E_INVALID;
	}
	memset(t, 0, sizeof *t);
	t->name = pb->name;
	t->dtype = pb->dtype;
	t->rank = (int32_t)pb->n_dims;
	for (size_t i = 0; i < pb->n_dims; i++)
		t->dims[i] = pb->dims[i];
	t->data = pb->data.data;
	return 0;
}

/* Fills pb (initialised with AIDOS__TENSOR__INIT) from t, after the same
 * checks; name, dims and data are borrowed from t (keep t alive and
 * unchanged until pb is packed). A NULL name becomes "". Errors as
 * aidos_wire_tensor_from_pb. */
static inline int aidos_wire_tensor_to_pb(const aidos_tensor *t, Aidos__Tensor *pb, char *err,
					  size_t errlen)
{
	char why[128];
	size_t bytes;
	int rc;
	const char *name = t->name && t->name[0] ? t->name : "(unnamed)";
	if (t->rank < 0) {
		snprintf(err, errlen, "tensor '%s': negative rank", name);
		return AIDOS_E_INVALID;
	}
	if ((rc = aidos_wire_tensor_bytes(t->dtype, (size_t)t->rank, t->dims, &bytes, why, sizeof why))) {
		snprintf(err, errlen, "tensor '%s': %s", name, why);
		return rc;
	}
	if (bytes && !t->data) {
		snprintf(err, errlen, "tensor '%s': no data", name);
		return AIDOS_E_INVALID;
	}
	pb->name = (char *)(t->name ? t->name : "");
	pb->dtype = t->dtype;
	pb->n_dims = (size_t)t->rank;
	pb->dims = (int64_t *)t->dims;
	pb->data.len = bytes;
	pb->data.data = (uint8_t *)t->data;
	return 0;
}

/* FNV-1a 64 (the checksum of contexts and checkpoints), continuing from h;
 * start with AIDOS_WIRE_FNV_INIT. Same function as xport_fnv1a. */
#define AIDOS_WIRE_FNV_INIT 0xcbf29ce484222325ull
static inline uint64_t aidos_wire_fnv1a(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

/* The checksum AgentContext.checksum carries: FNV-1a 64 over the tensors'
 * data, in order. */
static inline uint64_t aidos_wire_context_checksum(const Aidos__AgentContext *c)
{
	uint64_t h = AIDOS_WIRE_FNV_INIT;
	for (size_t i = 0; i < c->n_tensors; i++)
		if (c->tensors[i] && c->tensors[i]->data.len)
			h = aidos_wire_fnv1a(h, c->tensors[i]->data.data, c->tensors[i]->data.len);
	return h;
}

#endif
