/*
 * node/ipc_abi.h - the shared-memory ABI between aidos-node and its local
 * clients (docs/architecture.md, "Local clients"). Private: only node/ipc.c
 * and node/client.c include it; applications use include/aidos/client.h.
 *
 * One memfd per client, made by the node and passed with SCM_RIGHTS, mapped
 * MAP_SHARED by both sides:
 *
 *   [0, 4096)                     aidos_ring_hdr (version first)
 *   [sq_off, + sq_entries * 1600) submission ring: aidos_sqe, client -> node
 *   [cq_off, + cq_entries * 128)  completion ring: aidos_cqe, node -> client
 *   [heap_off, + heap_bytes)      tensor heap: the client writes inputs here,
 *                                 the node writes outputs into the area the
 *                                 descriptor names
 *
 * The rings follow io_uring's single-producer/single-consumer scheme: the
 * producer owns the tail, the consumer the head; both are free-running
 * uint32 counters (index = counter & (entries - 1)). Each side keeps its own
 * counter privately and only publishes it, so the other side can corrupt
 * the shared copy but never the owner's view: the node never trusts a value
 * it reads from this memory (it copies a descriptor out before checking it).
 *
 * Wake-ups (liburing's IORING_SQ_NEED_WAKEUP): the node's poller spins a
 * bounded time on sq_tail, then sets AIDOS_RING_NEED_WAKEUP in node_flags
 * and sleeps on the futex word sq_wake; a client that publishes a tail
 * checks the flag after a full barrier and only then bumps sq_wake and
 * makes the FUTEX_WAKE call. Completions mirror it with client_flags
 * (AIDOS_RING_CQ_WAITING) and cq_wake. The futexes are shared (not
 * FUTEX_PRIVATE): the two sides are different processes.
 *
 * Every field is fixed-width, every hole is explicit padding, and the
 * offsets are pinned by _Static_assert: this layout is the contract.
 */
#ifndef AIDOS_IPC_ABI_H
#define AIDOS_IPC_ABI_H

#include <stddef.h>
#include <stdint.h>
#include "aidos/aidos.h"

#define AIDOS_RING_VERSION 1u
#define AIDOS_RING_MAGIC 0x41494452u   /* "AIDR" */
#define AIDOS_RING_HDR_BYTES 4096u
#define AIDOS_RING_MAX_TENSORS 16      /* inputs per request */
#define AIDOS_RING_MAX_OUT 64          /* outputs per request */
#define AIDOS_RING_ERR_LEN 96
#define AIDOS_RING_ALIGN 64u           /* tensors in the heap: offsets multiple of this */

/* node_flags bits */
#define AIDOS_RING_NEED_WAKEUP 1u      /* the node's poller sleeps on sq_wake */
#define AIDOS_RING_CROWDED 2u          /* more clients than cores to spare: a client
                                          should not spin long after a wake-up */
/* client_flags bits */
#define AIDOS_RING_CQ_WAITING 1u       /* the client sleeps on cq_wake */

/* Operations of a descriptor. */
enum aidos_ring_op {
	AIDOS_RING_OP_NOP = 0,         /* ping: completes at once with res 0 */
	AIDOS_RING_OP_INFER = 1,       /* run agent `agent` on the inputs */
};

/* One cache line per producer/consumer word so the two sides never share a
 * line they both write. */
typedef struct aidos_ring_line {
	uint32_t v;
	uint8_t _pad[60];
} aidos_ring_line;

typedef struct aidos_ring_hdr {
	uint32_t version;              /* AIDOS_RING_VERSION: first, always */
	uint32_t magic;                /* AIDOS_RING_MAGIC */
	uint32_t hdr_bytes;            /* AIDOS_RING_HDR_BYTES */
	uint32_t sq_entries;           /* power of two */
	uint32_t cq_entries;           /* power of two */
	uint32_t sqe_bytes;            /* sizeof(aidos_sqe) */
	uint32_t cqe_bytes;            /* sizeof(aidos_cqe) */
	uint32_t _pad0;
	uint64_t total_bytes;          /* size of the memfd */
	uint64_t sq_off, cq_off;       /* from the start of the mapping */
	uint64_t heap_off, heap_bytes;
	uint8_t _pad1[128 - 72];       /* to offset 128 */
	aidos_ring_line sq_head;       /* node writes (release), client reads */
	aidos_ring_line sq_tail;       /* client writes (release), node reads */
	aidos_ring_line cq_head;       /* client writes, node reads */
	aidos_ring_line cq_tail;       /* node writes, client reads */
	aidos_ring_line node_flags;    /* node writes: AIDOS_RING_NEED_WAKEUP */
	aidos_ring_line sq_wake;       /* futex: client bumps, node sleeps */
	aidos_ring_line client_flags;  /* client writes: AIDOS_RING_CQ_WAITING */
	aidos_ring_line cq_wake;       /* futex: node bumps, client sleeps */
} aidos_ring_hdr;

_Static_assert(offsetof(aidos_ring_hdr, version) == 0, "version first");
_Static_assert(offsetof(aidos_ring_hdr, total_bytes) == 32, "hdr layout");
_Static_assert(offsetof(aidos_ring_hdr, heap_bytes) == 64, "hdr layout");
_Static_assert(offsetof(aidos_ring_hdr, sq_head) == 128, "hdr layout");
_Static_assert(offsetof(aidos_ring_hdr, cq_wake) == 128 + 7 * 64, "hdr layout");
_Static_assert(sizeof(aidos_ring_hdr) == 128 + 8 * 64, "hdr size");
_Static_assert(sizeof(aidos_ring_hdr) <= AIDOS_RING_HDR_BYTES, "hdr fits");

/* A tensor in the heap: bytes [off, off + len) hold a dense row-major
 * tensor of dtype and dims[0..rank). `index` is the model input's index in
 * the list the node gave at open (inputs the node feeds itself excluded). */
typedef struct aidos_ring_tensor {
	uint64_t off, len;
	int32_t dtype, rank;
	int64_t dims[AIDOS_MAX_RANK];
	uint32_t index;
	uint32_t _pad;
} aidos_ring_tensor;
_Static_assert(sizeof(aidos_ring_tensor) == 96, "tensor size");
_Static_assert(offsetof(aidos_ring_tensor, dims) == 24, "tensor layout");
_Static_assert(offsetof(aidos_ring_tensor, index) == 88, "tensor layout");

/* A submission: one request. The node writes the outputs into the heap at
 * [out_off, out_off + out_len): first nout aidos_ring_out records, then the
 * tensors (each at a multiple of AIDOS_RING_ALIGN from the heap start). */
typedef struct aidos_sqe {
	uint64_t user_data;            /* request id, echoed in the completion */
	uint32_t op;                   /* aidos_ring_op */
	uint32_t agent;                /* handle from the control socket's OPEN */
	uint32_t nin;                  /* 0..AIDOS_RING_MAX_TENSORS */
	uint32_t flags;                /* 0 (reserved) */
	uint64_t deadline_ns;          /* CLOCK_MONOTONIC, absolute; 0: none */
	uint64_t out_off, out_len;     /* output area in the heap */
	uint8_t _pad[16];
	aidos_ring_tensor in[AIDOS_RING_MAX_TENSORS];
} aidos_sqe;
_Static_assert(offsetof(aidos_sqe, deadline_ns) == 24, "sqe layout");
_Static_assert(offsetof(aidos_sqe, in) == 64, "sqe layout");
_Static_assert(sizeof(aidos_sqe) == 64 + 96 * AIDOS_RING_MAX_TENSORS, "sqe size");

/* One output record at the start of the output area. */
typedef struct aidos_ring_out {
	uint64_t off, len;             /* in the heap */
	int32_t dtype, rank;
	int64_t dims[AIDOS_MAX_RANK];
} aidos_ring_out;
_Static_assert(sizeof(aidos_ring_out) == 88, "out size");

/* A completion. res: 0, AIDOS_E_* or -errno; msg: one line when res != 0.
 * On -ERANGE (output area too small) out_len holds the bytes needed. */
typedef struct aidos_cqe {
	uint64_t user_data;
	int32_t res;
	uint32_t nout;
	uint64_t out_len;
	uint64_t exec_ns;              /* time in the model */
	char msg[AIDOS_RING_ERR_LEN];
} aidos_cqe;
_Static_assert(offsetof(aidos_cqe, msg) == 32, "cqe layout");
_Static_assert(sizeof(aidos_cqe) == 128, "cqe size");

/* ---- the control protocol (unix stream socket) ----
 * Every message, both ways: an aidos_ipc_msg header then `len` payload
 * bytes (len <= AIDOS_IPC_MAX_PAYLOAD). A reply has the request's type and
 * seq and a status (0 or a negative code); an error reply's payload is one
 * line of text (not NUL-terminated). The HELLO reply carries the memfd
 * (SCM_RIGHTS) and an aidos_ipc_hello_rep. */
#define AIDOS_IPC_MAGIC 0xA1D0C0DEu
#define AIDOS_IPC_MAX_PAYLOAD 65536u
#define AIDOS_IPC_NAME 64
#define AIDOS_IPC_PATH 1024

enum aidos_ipc_type {
	AIDOS_IPC_HELLO = 1,   /* req: aidos_ipc_hello; rep: aidos_ipc_hello_rep + fd */
	AIDOS_IPC_OPEN = 2,    /* req: name[AIDOS_IPC_NAME]; rep: aidos_ipc_open_rep + io[] */
	AIDOS_IPC_SPAWN = 3,   /* req: aidos_ipc_spawn; rep: empty */
	AIDOS_IPC_KILL = 4,    /* req: name[AIDOS_IPC_NAME]; rep: empty */
	AIDOS_IPC_LIST = 5,    /* req: empty; rep: aidos_ipc_agent[n] */
	AIDOS_IPC_STATS = 6,   /* req: empty; rep: aidos_ipc_stats */
};

typedef struct aidos_ipc_msg {
	uint32_t magic;        /* AIDOS_IPC_MAGIC */
	uint16_t type;         /* aidos_ipc_type */
	uint16_t version;      /* AIDOS_RING_VERSION */
	uint32_t seq;
	int32_t status;        /* replies */
	uint32_t len;          /* payload bytes */
	uint32_t _pad;
} aidos_ipc_msg;
_Static_assert(sizeof(aidos_ipc_msg) == 24, "msg size");

typedef struct aidos_ipc_hello {
	uint64_t heap_bytes;   /* 0: the node's default */
	uint32_t sq_entries;   /* 0: default; power of two, 1..4096 */
	uint32_t cq_entries;
} aidos_ipc_hello;
_Static_assert(sizeof(aidos_ipc_hello) == 16, "hello size");

typedef struct aidos_ipc_hello_rep {
	uint64_t total_bytes;  /* map this much of the fd */
	uint32_t client_id;
	uint32_t _pad;
} aidos_ipc_hello_rep;
_Static_assert(sizeof(aidos_ipc_hello_rep) == 16, "hello_rep size");

/* A model input or output as the node describes it (dims < 0: symbolic). */
typedef struct aidos_ipc_io {
	char name[128];        /* NUL-terminated */
	int32_t dtype, rank;
	int64_t dims[AIDOS_MAX_RANK];
} aidos_ipc_io;
_Static_assert(sizeof(aidos_ipc_io) == 200, "io size");

typedef struct aidos_ipc_open_rep {
	uint32_t handle;       /* for aidos_sqe.agent */
	uint32_t nin, nout;    /* then nin + nout aidos_ipc_io */
	uint32_t _pad;
} aidos_ipc_open_rep;
_Static_assert(sizeof(aidos_ipc_open_rep) == 16, "open_rep size");

typedef struct aidos_ipc_spawn {
	char name[AIDOS_IPC_NAME];
	char model[AIDOS_IPC_PATH];
	int32_t priority;
	uint32_t _pad;
	uint64_t quota_bytes;  /* 0: none */
	uint64_t deadline_ms;  /* default request deadline; 0: none */
} aidos_ipc_spawn;
_Static_assert(sizeof(aidos_ipc_spawn) == AIDOS_IPC_NAME + AIDOS_IPC_PATH + 24, "spawn size");

typedef struct aidos_ipc_agent {
	char name[AIDOS_IPC_NAME];
	char model[256];
	char state[16];        /* "idle", "infer", ... */
	int32_t priority;
	uint32_t _pad;
	uint64_t quota_bytes, deadline_ms;
	uint64_t requests, errors;
	uint64_t mem_bytes;    /* arena of the current plan + context */
	uint64_t latency_ns;   /* moving average of the model's run time */
} aidos_ipc_agent;
_Static_assert(sizeof(aidos_ipc_agent) == 64 + 256 + 16 + 8 + 6 * 8, "agent size");

typedef struct aidos_ipc_stats {
	uint64_t agents, clients;
	uint64_t requests, errors;   /* through the rings, since start */
	uint64_t uptime_ms;
	uint64_t heap_bytes;         /* memfd bytes mapped for clients */
	uint64_t pool_bytes;         /* pools/alloc.c: bytes live */
	uint64_t _rsv[9];
} aidos_ipc_stats;
_Static_assert(sizeof(aidos_ipc_stats) == 128, "stats size");

/* Size in bytes of one element of dtype, 0 if aidos does not know it. */
static inline size_t aidos_ring_dtype_size(int32_t dt)
{
	switch (dt) {
	case AIDOS_DT_FLOAT: case AIDOS_DT_INT32: return 4;
	case AIDOS_DT_UINT8: case AIDOS_DT_INT8: case AIDOS_DT_BOOL: return 1;
	case AIDOS_DT_INT64: case AIDOS_DT_DOUBLE: return 8;
	default: return 0;
	}
}

#endif
