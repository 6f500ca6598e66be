/*
 * tests/fuzz_ipc.c - libFuzzer target for what a local client can send the
 * node (node/ipc.c): control messages (ipc_msg_check, ipc_payload_check)
 * and ring descriptors (ipc_sqe_check, then ipc_out_write into the output
 * area the descriptor names).
 *
 * Input: byte 0 picks the part (even: control message, odd: descriptor),
 * the rest is the message or the descriptor (zero-padded). The heap is a
 * malloc'd block of exactly its size, so ASan reports any access that a
 * descriptor accepted by the checks could lead outside it; every input an
 * accepted descriptor names is read end to end, and outputs are written.
 * Findings: crashes, sanitizer reports, an accepted descriptor whose
 * tensors disagree with their declared dims, an error without a message.
 *
 * Built and run by `FUZZ_TARGET=ipc tools/fuzz.sh [seconds]` (clang).
 */
#include <assert.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "node/ipc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define HEAP (64u * 1024u)

static ipc_handle H[3];
static uint8_t *heap;

static aidos_ipc_io IO[3][2 * AIDOS_RING_MAX_OUT];

static void init(void)
{
	heap = malloc(HEAP);
	memset(H, 0, sizeof H);
	for (int i = 0; i < 3; i++)
		H[i].io = IO[i];
	/* jarvis-like: one float input [1, 16, 96], one output */
	H[0].nin = 1;
	H[0].nout = 1;
	strcpy(H[0].io[0].name, "x");
	H[0].io[0].dtype = AIDOS_DT_FLOAT;
	H[0].io[0].rank = 3;
	H[0].io[0].dims[0] = 1, H[0].io[0].dims[1] = 16, H[0].io[0].dims[2] = 96;
	/* symbolic dims, and an input of unknown rank and dtype */
	H[1].nin = 2;
	H[1].nout = 2;
	strcpy(H[1].io[0].name, "a");
	H[1].io[0].dtype = AIDOS_DT_FLOAT;
	H[1].io[0].rank = 2;
	H[1].io[0].dims[0] = -1, H[1].io[0].dims[1] = -1;
	strcpy(H[1].io[1].name, "b");
	H[1].io[1].dtype = 0;
	H[1].io[1].rank = -1;
	H[2].nin = AIDOS_RING_MAX_TENSORS;
	for (int i = 0; i < AIDOS_RING_MAX_TENSORS; i++) {
		H[2].io[i].dtype = AIDOS_DT_UINT8;
		H[2].io[i].rank = -1;
	}
}

static void fuzz_control(const uint8_t *p, size_t n)
{
	aidos_ipc_msg m;
	char err[256];
	memset(&m, 0, sizeof m);
	memcpy(&m, p, n < sizeof m ? n : sizeof m);
	err[0] = 0;
	if (ipc_msg_check(&m, err, sizeof err)) {
		assert(err[0]);
		return;
	}
	assert(m.len <= AIDOS_IPC_MAX_PAYLOAD);
	size_t have = n > sizeof m ? n - sizeof m : 0;
	if (have < m.len)
		return;   /* the server waits for the rest */
	uint8_t *pl = malloc(m.len ? m.len : 1);   /* exactly len: ASan sees overreads */
	memcpy(pl, p + sizeof m, m.len);
	err[0] = 0;
	if (ipc_payload_check(&m, pl, err, sizeof err)) {
		assert(err[0]);
	} else if (m.type == AIDOS_IPC_OPEN || m.type == AIDOS_IPC_KILL) {
		assert(strnlen((const char *)pl, AIDOS_IPC_NAME) < AIDOS_IPC_NAME);
	} else if (m.type == AIDOS_IPC_SPAWN) {
		const aidos_ipc_spawn *sp = (const aidos_ipc_spawn *)pl;
		assert(strnlen(sp->name, sizeof sp->name) < sizeof sp->name);
		assert(strnlen(sp->model, sizeof sp->model) < sizeof sp->model);
	}
	free(pl);
}

static void fuzz_sqe(const uint8_t *p, size_t n)
{
	aidos_sqe s;
	ipc_exec x;
	void *agent;
	char err[AIDOS_RING_ERR_LEN];
	memset(&s, 0, sizeof s);
	memcpy(&s, p, n < sizeof s ? n : sizeof s);
	err[0] = 0;
	if (ipc_sqe_check(&s, heap, HEAP, H, 3, &x, &agent, err, sizeof err)) {
		assert(err[0]);
		return;
	}
	assert(x.out_off + x.out_len <= HEAP);
	volatile uint8_t sink = 0;
	for (int i = 0; i < x.nin; i++) {
		const aidos_tensor *t = &x.in[i];
		uint64_t b = aidos_ring_dtype_size(t->dtype);
		for (int d = 0; d < t->rank; d++)
			b *= (uint64_t)t->dims[d];
		assert((uint8_t *)t->data >= heap && (uint8_t *)t->data + b <= heap + HEAP);
		for (uint64_t k = 0; k < b; k += 61)
			sink ^= ((const uint8_t *)t->data)[k];
		if (b)
			sink ^= ((const uint8_t *)t->data)[b - 1];
	}
	(void)sink;
	/* outputs: as many as the handle has, sized from the descriptor's bytes */
	aidos_tensor o[2];
	static uint8_t src[8192];
	int no = ((const ipc_handle *)&H[s.agent])->nout;
	if (no > 2)
		no = 2;
	for (int i = 0; i < no; i++) {
		o[i] = (aidos_tensor){ .name = "y", .dtype = AIDOS_DT_FLOAT, .rank = 1,
				       .dims = { (int64_t)(s._pad[i] % 2048) }, .data = src };
	}
	err[0] = 0;
	int rc = ipc_out_write(&x, o, no, err, sizeof err);
	assert(rc == 0 || rc == -ENOBUFS);
	if (rc)
		assert(x.out_need > x.out_len && err[0]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!heap)
		init();
	if (size < 1)
		return 0;
	if (data[0] & 1)
		fuzz_sqe(data + 1, size - 1);
	else
		fuzz_control(data + 1, size - 1);
	return 0;
}
