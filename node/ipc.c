/*
 * node/ipc.c - the local client server (node/ipc.h tells the contracts,
 * node/ipc_abi.h the shared layout, docs/architecture.md the design).
 *
 * Control thread: poll() over the listening socket, an eventfd (stop) and
 * every client's socket. Sockets are non-blocking; a client's bytes
 * accumulate in its own buffer until a whole message is there, so a client
 * that sends half a header stalls nobody. Replies are sent with
 * MSG_DONTWAIT: a client that does not read its replies is dropped.
 *
 * Poller thread (one per client): spins on sq_tail for spin_us, then sleeps
 * on the futex word sq_wake after announcing it in node_flags (the client
 * wakes it only then). Each descriptor is copied out of the ring before it
 * is checked (the client may rewrite the slot), checked field by field
 * against the heap and the client's handles, run through ops->exec (inputs
 * read in place from the heap; outputs written into the heap), and
 * answered with a completion. A descriptor that fails its checks is
 * answered with an error completion; the ring goes on.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/futex.h>
#include <poll.h>
#include <sched.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "aidos/client.h"
#include "node/ipc.h"
#include "pools/pools.h"
#include "node/util.h"

#define RX_CAP (sizeof(aidos_ipc_msg) + AIDOS_IPC_MAX_PAYLOAD)

/* Shared (not private) futexes: the word lives in a MAP_SHARED memfd that
 * another process maps too. */
static void futex_wait(uint32_t *w, uint32_t val, long timeout_ms)
{
	struct timespec ts = { timeout_ms / 1000, (timeout_ms % 1000) * 1000000L };
	syscall(SYS_futex, w, FUTEX_WAIT, val, &ts, NULL, 0);
}

static void futex_wake(uint32_t *w)
{
	syscall(SYS_futex, w, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

/* ---- pure checks ---- */

/* 1 if s is NUL-terminated inside its field of `field` bytes and an agent
 * name (1..63 of [A-Za-z0-9._-]). */
static int name_ok(const char *s, size_t field)
{
	size_t n = strnlen(s, field);
	if (n == 0 || n >= field || n > 63)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
		      c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

int ipc_msg_check(const aidos_ipc_msg *m, char *err, size_t errlen)
{
	if (m->magic != AIDOS_IPC_MAGIC)
		return fail(err, errlen, AIDOS_E_INVALID, "control message: bad magic 0x%08x", m->magic);
	if (m->version != AIDOS_RING_VERSION)
		return fail(err, errlen, AIDOS_E_INVALID, "control message: version %u, the node speaks %u",
			    m->version, AIDOS_RING_VERSION);
	if (m->type < AIDOS_IPC_HELLO || m->type > AIDOS_IPC_STATS)
		return fail(err, errlen, AIDOS_E_INVALID, "control message: unknown type %u", m->type);
	if (m->len > AIDOS_IPC_MAX_PAYLOAD)
		return fail(err, errlen, AIDOS_E_INVALID, "control message: payload %u bytes (max %u)", m->len,
			    AIDOS_IPC_MAX_PAYLOAD);
	if (m->status || m->_pad)
		return fail(err, errlen, AIDOS_E_INVALID, "control message: status/padding must be 0 in a request");
	return 0;
}

/* 1 for 0 (the default) or a power of two up to IPC_MAX_ENTRIES. */
static int pow2_ok(uint32_t v)
{
	return v == 0 || (v <= IPC_MAX_ENTRIES && (v & (v - 1)) == 0);
}

int ipc_payload_check(const aidos_ipc_msg *m, const void *p, char *err, size_t errlen)
{
	size_t want;
	switch (m->type) {
	case AIDOS_IPC_HELLO: want = sizeof(aidos_ipc_hello); break;
	case AIDOS_IPC_OPEN: case AIDOS_IPC_KILL: want = AIDOS_IPC_NAME; break;
	case AIDOS_IPC_SPAWN: want = sizeof(aidos_ipc_spawn); break;
	case AIDOS_IPC_LIST: want = 4; break;
	case AIDOS_IPC_STATS: want = 0; break;
	default: return fail(err, errlen, AIDOS_E_INVALID, "control message: unknown type %u", m->type);
	}
	if (m->len != want)
		return fail(err, errlen, AIDOS_E_INVALID, "control message type %u: payload %u bytes, expected %zu",
			    m->type, m->len, want);
	if (m->type == AIDOS_IPC_HELLO) {
		aidos_ipc_hello h;
		memcpy(&h, p, sizeof h);
		if (h.heap_bytes && (h.heap_bytes < 4096 || h.heap_bytes > IPC_MAX_HEAP || h.heap_bytes % 4096))
			return fail(err, errlen, AIDOS_E_INVALID,
				    "hello: heap_bytes %llu (a multiple of 4096 in 4096..%llu)",
				    (unsigned long long)h.heap_bytes, (unsigned long long)IPC_MAX_HEAP);
		if (!pow2_ok(h.sq_entries) || !pow2_ok(h.cq_entries))
			return fail(err, errlen, AIDOS_E_INVALID, "hello: ring entries %u/%u (powers of two up to %d)",
				    h.sq_entries, h.cq_entries, IPC_MAX_ENTRIES);
	} else if (m->type == AIDOS_IPC_OPEN || m->type == AIDOS_IPC_KILL) {
		if (!name_ok(p, AIDOS_IPC_NAME))
			return fail(err, errlen, AIDOS_E_INVALID,
				    "agent name: 1-63 of [A-Za-z0-9._-], NUL-terminated in %d bytes", AIDOS_IPC_NAME);
	} else if (m->type == AIDOS_IPC_SPAWN) {
		const aidos_ipc_spawn *sp = p;
		if (!name_ok(sp->name, sizeof sp->name))
			return fail(err, errlen, AIDOS_E_INVALID, "spawn: agent name: 1-63 of [A-Za-z0-9._-]");
		size_t n = strnlen(sp->model, sizeof sp->model);
		if (n == 0 || n == sizeof sp->model)
			return fail(err, errlen, AIDOS_E_INVALID, "spawn: model path empty or not NUL-terminated");
		if (sp->_pad)
			return fail(err, errlen, AIDOS_E_INVALID, "spawn: padding must be 0");
		if (sp->priority < -1000 || sp->priority > 1000)
			return fail(err, errlen, AIDOS_E_INVALID, "spawn: priority %d (-1000..1000)", sp->priority);
		if (sp->deadline_ms > 86400000ull)
			return fail(err, errlen, AIDOS_E_INVALID, "spawn: deadline_ms %llu (max one day)",
				    (unsigned long long)sp->deadline_ms);
	}
	return 0;
}

int ipc_sqe_check(const aidos_sqe *s, uint8_t *heap, uint64_t heap_bytes, const ipc_handle *h, uint32_t nh,
		  ipc_exec *x, void **agent, char *err, size_t errlen)
{
	if (s->op != AIDOS_RING_OP_INFER)
		return fail(err, errlen, AIDOS_E_INVALID, "descriptor: op %u (0 nop, 1 infer)", s->op);
	if (s->flags)
		return fail(err, errlen, AIDOS_E_INVALID, "descriptor: flags 0x%x (must be 0)", s->flags);
	if (s->agent >= nh)
		return fail(err, errlen, AIDOS_E_NOTFOUND, "descriptor: agent handle %u not opened", s->agent);
	const ipc_handle *a = &h[s->agent];
	if (s->nin > AIDOS_RING_MAX_TENSORS)
		return fail(err, errlen, AIDOS_E_INVALID, "descriptor: nin %u (max %d)", s->nin, AIDOS_RING_MAX_TENSORS);
	/* The output area: aligned, inside the heap, room for the records. */
	uint64_t oo = s->out_off, ol = s->out_len;
	if (oo % AIDOS_RING_ALIGN)
		return fail(err, errlen, AIDOS_E_INVALID, "descriptor: out_off %llu not a multiple of %u",
			    (unsigned long long)oo, AIDOS_RING_ALIGN);
	if (oo > heap_bytes || ol > heap_bytes - oo)
		return fail(err, errlen, AIDOS_E_RANGE, "descriptor: output area [%llu, +%llu) outside the %llu-byte heap",
			    (unsigned long long)oo, (unsigned long long)ol, (unsigned long long)heap_bytes);
	if (ol < (uint64_t)a->nout * sizeof(aidos_ring_out))
		return fail(err, errlen, AIDOS_E_RANGE, "descriptor: output area %llu bytes, its %d records need %zu",
			    (unsigned long long)ol, a->nout, (size_t)a->nout * sizeof(aidos_ring_out));
	uint32_t seen = 0;   /* input indices, AIDOS_RING_MAX_TENSORS <= 32 */
	for (uint32_t i = 0; i < s->nin; i++) {
		const aidos_ring_tensor *t = &s->in[i];
		if (t->index >= (uint32_t)a->nin)
			return fail(err, errlen, AIDOS_E_INVALID, "input #%u: index %u (the agent takes %d inputs)", i,
				    t->index, a->nin);
		if (seen & (1u << t->index))
			return fail(err, errlen, AIDOS_E_INVALID, "input #%u: index %u given twice", i, t->index);
		seen |= 1u << t->index;
		const aidos_ipc_io *mi = &a->io[t->index];
		size_t es = aidos_ring_dtype_size(t->dtype);
		if (!es)
			return fail(err, errlen, AIDOS_E_INVALID, "input '%s': unknown dtype %d", mi->name, t->dtype);
		if (mi->dtype && mi->dtype != t->dtype)
			return fail(err, errlen, AIDOS_E_INVALID, "input '%s': dtype %d, the model takes %d", mi->name,
				    t->dtype, mi->dtype);
		if (t->rank < 0 || t->rank > AIDOS_MAX_RANK)
			return fail(err, errlen, AIDOS_E_INVALID, "input '%s': rank %d (0..%d)", mi->name, t->rank,
				    AIDOS_MAX_RANK);
		if (mi->rank >= 0 && t->rank != mi->rank)
			return fail(err, errlen, AIDOS_E_INVALID, "input '%s': rank %d, the model takes %d", mi->name,
				    t->rank, mi->rank);
		if (t->_pad)
			return fail(err, errlen, AIDOS_E_INVALID, "input '%s': padding must be 0", mi->name);
		uint64_t count = 1;
		for (int d = 0; d < t->rank; d++) {
			if (t->dims[d] < 0)
				return fail(err, errlen, AIDOS_E_INVALID, "input '%s': dim %d is %lld", mi->name, d,
					    (long long)t->dims[d]);
			if (mi->rank >= 0 && mi->dims[d] >= 0 && mi->dims[d] != t->dims[d])
				return fail(err, errlen, AIDOS_E_INVALID, "input '%s': dim %d is %lld, the model takes %lld",
					    mi->name, d, (long long)t->dims[d], (long long)mi->dims[d]);
			if (t->dims[d] && count > heap_bytes / (uint64_t)t->dims[d])
				return fail(err, errlen, AIDOS_E_RANGE, "input '%s': dims overflow the heap", mi->name);
			count *= (uint64_t)t->dims[d];
		}
		if (count > heap_bytes / es)
			return fail(err, errlen, AIDOS_E_RANGE, "input '%s': %llu elements overflow the heap", mi->name,
				    (unsigned long long)count);
		if (t->len != count * es)
			return fail(err, errlen, AIDOS_E_INVALID, "input '%s': len %llu, its dims need %llu", mi->name,
				    (unsigned long long)t->len, (unsigned long long)(count * es));
		if (t->off % AIDOS_RING_ALIGN)
			return fail(err, errlen, AIDOS_E_INVALID, "input '%s': off %llu not a multiple of %u", mi->name,
				    (unsigned long long)t->off, AIDOS_RING_ALIGN);
		if (t->off > heap_bytes || t->len > heap_bytes - t->off)
			return fail(err, errlen, AIDOS_E_RANGE, "input '%s': [%llu, +%llu) outside the %llu-byte heap",
				    mi->name, (unsigned long long)t->off, (unsigned long long)t->len,
				    (unsigned long long)heap_bytes);
		if (t->len && ol && t->off < oo + ol && oo < t->off + t->len)
			return fail(err, errlen, AIDOS_E_INVALID, "input '%s': overlaps the output area", mi->name);
		aidos_tensor *xt = &x->in[i];
		xt->name = mi->name;
		xt->dtype = t->dtype;
		xt->rank = t->rank;
		for (int d = 0; d < AIDOS_MAX_RANK; d++)
			xt->dims[d] = d < t->rank ? t->dims[d] : 0;
		xt->data = heap + t->off;
	}
	x->nin = (int)s->nin;
	x->heap = heap;
	x->heap_bytes = heap_bytes;
	x->out_off = oo;
	x->out_len = ol;
	x->deadline_ns = s->deadline_ns;
	x->nout = 0;
	x->out_need = 0;
	x->exec_ns = 0;
	x->top_class = 0;
	*agent = a->agent;
	return 0;
}

int ipc_out_write(ipc_exec *x, const aidos_tensor *o, int n, char *err, size_t errlen)
{
	uint64_t sz[AIDOS_RING_MAX_OUT];
	if (n < 0 || n > AIDOS_RING_MAX_OUT)
		return fail(err, errlen, AIDOS_E_RANGE, "%d outputs (max %d)", n, AIDOS_RING_MAX_OUT);
	uint64_t end = x->out_off + (uint64_t)n * sizeof(aidos_ring_out);
	for (int i = 0; i < n; i++) {
		size_t es = aidos_ring_dtype_size(o[i].dtype);
		if (!es)
			return fail(err, errlen, AIDOS_E_UNSUPPORTED, "output '%s': dtype %d", o[i].name, o[i].dtype);
		uint64_t c = es;
		for (int d = 0; d < o[i].rank; d++)
			c *= (uint64_t)o[i].dims[d];
		sz[i] = c;
		end = pool_align_up(end, AIDOS_RING_ALIGN) + c;
	}
	if (end - x->out_off > x->out_len) {
		x->out_need = end - x->out_off;
		return fail(err, errlen, -ENOBUFS, "outputs need %llu bytes, the output area has %llu",
			    (unsigned long long)x->out_need, (unsigned long long)x->out_len);
	}
	aidos_ring_out *rec = (aidos_ring_out *)(x->heap + x->out_off);
	uint64_t at = x->out_off + (uint64_t)n * sizeof(aidos_ring_out);
	for (int i = 0; i < n; i++) {
		at = pool_align_up(at, AIDOS_RING_ALIGN);
		aidos_ring_out r = { .off = at, .len = sz[i], .dtype = o[i].dtype, .rank = o[i].rank };
		for (int d = 0; d < o[i].rank && d < AIDOS_MAX_RANK; d++)
			r.dims[d] = o[i].dims[d];
		memcpy(&rec[i], &r, sizeof r);
		if (sz[i])
			memcpy(x->heap + at, o[i].data, sz[i]);
		at += sz[i];
	}
	x->nout = (uint32_t)n;
	return 0;
}

/* ---- the server ---- */

typedef struct ipc_client {
	struct ipc_server *s;
	int fd, memfd;
	pid_t pid;
	uint32_t id;
	uint8_t *map;
	size_t map_bytes;
	aidos_ring_hdr *hdr;
	aidos_sqe *sq;
	aidos_cqe *cq;
	uint8_t *heap;
	uint64_t heap_bytes;
	uint32_t sq_entries, cq_entries;
	uint32_t sq_head;      /* the poller's own counters: never read back */
	uint32_t cq_tail;
	uint32_t cq_head_seen; /* last cq_head read: reread only when the ring looks full */
	ipc_handle *h;         /* [IPC_MAX_HANDLES] */
	uint32_t nh;           /* atomic: control thread appends (release) */
	pthread_t th;
	int started;
	int stop;              /* atomic */
	uint8_t *rx;           /* [RX_CAP] */
	size_t rx_len;
} ipc_client;

struct ipc_server {
	ipc_opts o;
	ipc_ops ops;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int lfd, efd;
	pthread_t th;
	int started;
	int stop;
	uid_t uid;
	uint32_t spin_us;
	int cpu;               /* pollers pinned here (AIDOS_IPC_CPU), -1: not */
	long ncpu;             /* cores this process may run on */
	uint32_t next_id;
	aidos_ipc_io *io_scratch; /* [2 * AIDOS_RING_MAX_OUT]: OPEN's answer, control thread */
	ipc_client **c;        /* [max_clients] */
	int nc;                /* atomic reads by ipc_server_clients */
	uint64_t requests, errors; /* atomic */
	uint64_t t0;
};

int ipc_server_create(const ipc_opts *o, const ipc_ops *ops, ipc_server **out, char *err, size_t errlen)
{
	*out = NULL;
	if (!ops || !ops->open || !ops->exec || !ops->close || !ops->spawn || !ops->kill || !ops->list || !ops->stats)
		return fail(err, errlen, AIDOS_E_INVALID, "ipc server: every ipc_ops function is required");
	ipc_server *s = pool_calloc(1, sizeof *s);
	if (!s)
		return fail(err, errlen, AIDOS_E_NOMEM, "ipc server: out of memory");
	s->o = *o;
	s->ops = *ops;
	s->lfd = s->efd = -1;
	const char *p = o->path;
	char def[256];
	if (!p || !*p)
		p = aidos_client_default_socket(def, sizeof def);
	if (strlen(p) >= sizeof s->path) {
		pool_free(s);
		return fail(err, errlen, AIDOS_E_INVALID, "socket path too long (max %zu bytes): %s", sizeof s->path - 1, p);
	}
	strcpy(s->path, p);
	if (!s->o.heap_bytes)
		s->o.heap_bytes = IPC_DEFAULT_HEAP;
	if (!s->o.sq_entries)
		s->o.sq_entries = IPC_DEFAULT_ENTRIES;
	if (!s->o.cq_entries)
		s->o.cq_entries = IPC_DEFAULT_ENTRIES;
	if (!pow2_ok(s->o.sq_entries) || !pow2_ok(s->o.cq_entries) || s->o.heap_bytes % 4096 ||
	    s->o.heap_bytes > IPC_MAX_HEAP) {
		pool_free(s);
		return fail(err, errlen, AIDOS_E_INVALID, "ipc server: bad ring entries or heap size");
	}
	if (s->o.max_clients <= 0)
		s->o.max_clients = 256;
	s->spin_us = o->spin_us ? o->spin_us : 50;
	const char *env = getenv("AIDOS_IPC_SPIN_US");
	if (!o->spin_us && env && *env)
		s->spin_us = (uint32_t)strtoul(env, NULL, 10);
	s->uid = geteuid();
	env = getenv("AIDOS_IPC_CPU");   /* benchmarks: pin every poller to one core */
	s->cpu = env && *env ? atoi(env) : -1;
	/* The cores this process may use (a cpuset or taskset), not those
	 * online: crowded() compares clients with them. */
	cpu_set_t aff;
	s->ncpu = !sched_getaffinity(0, sizeof aff, &aff) ? CPU_COUNT(&aff) : sysconf(_SC_NPROCESSORS_ONLN);
	if (s->ncpu < 1)
		s->ncpu = 1;
	/* A group allowed besides the node's uid and root: the option, else
	 * AIDOS_SOCKET_GROUP (a name or a number). */
	const char *genv = getenv("AIDOS_SOCKET_GROUP");
	if (!s->o.gid_set && genv && *genv) {
		char *end;
		long g = strtol(genv, &end, 10);
		struct group *gr = *end ? getgrnam(genv) : NULL;
		if (*end && !gr) {
			pool_free(s);
			return fail(err, errlen, AIDOS_E_INVALID, "AIDOS_SOCKET_GROUP: no group '%s'", genv);
		}
		s->o.gid = gr ? (long)gr->gr_gid : g;
		s->o.gid_set = 1;
	}
	s->c = pool_calloc((size_t)s->o.max_clients, sizeof *s->c);
	s->io_scratch = pool_malloc(2 * AIDOS_RING_MAX_OUT * sizeof *s->io_scratch);
	if (!s->c || !s->io_scratch) {
		pool_free(s->c);
		pool_free(s->io_scratch);
		pool_free(s);
		return fail(err, errlen, AIDOS_E_NOMEM, "ipc server: out of memory");
	}
	*out = s;
	return 0;
}

const char *ipc_server_path(const ipc_server *s)
{
	return s->path;
}

int ipc_server_clients(ipc_server *s)
{
	return __atomic_load_n(&s->nc, __ATOMIC_RELAXED);
}

/* mkdir -p of the socket's directory; a directory made here is 0700. */
static int make_dirs(const char *path)
{
	char d[sizeof(((struct sockaddr_un *)0)->sun_path)];
	snprintf(d, sizeof d, "%s", path);
	char *slash = strrchr(d, '/');
	if (!slash || slash == d)
		return 0;
	*slash = 0;
	for (char *p = d + 1; ; p++) {
		if (*p == '/' || !*p) {
			char c = *p;
			*p = 0;
			if (mkdir(d, 0700) && errno != EEXIST)
				return -errno;
			*p = c;
			if (!c)
				break;
		}
	}
	return 0;
}

/* The control thread: poll() over the stop eventfd, the listening socket
 * and every client's socket until ipc_server_destroy. */
static void *control_main(void *arg);

int ipc_server_start(ipc_server *s, char *err, size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int rc;
	strcpy(sa.sun_path, s->path);
	if ((rc = make_dirs(s->path)))
		return fail(err, errlen, rc, "cannot create the directory of %s: %s", s->path, strerror(-rc));
	/* A socket file left by a node that died: remove it, unless a live
	 * node answers there. */
	int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (probe >= 0) {
		if (!connect(probe, (struct sockaddr *)&sa, sizeof sa)) {
			close(probe);
			return fail(err, errlen, -EADDRINUSE, "another node already serves on %s", s->path);
		}
		close(probe);
		struct stat st;
		if (!lstat(s->path, &st) && S_ISSOCK(st.st_mode))
			unlink(s->path);
	}
	s->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (s->lfd < 0)
		return fail(err, errlen, -errno, "socket: %s", strerror(errno));
	if (bind(s->lfd, (struct sockaddr *)&sa, sizeof sa) || listen(s->lfd, 64)) {
		rc = -errno;
		close(s->lfd);
		s->lfd = -1;
		return fail(err, errlen, rc, "cannot listen on %s: %s", s->path, strerror(-rc));
	}
	/* Same uid and root always; a group when configured: the socket's mode
	 * lets them connect, SO_PEERCRED decides. */
	chmod(s->path, s->o.gid_set ? 0660 : 0600);
	if (s->o.gid_set && chown(s->path, (uid_t)-1, (gid_t)s->o.gid)) {
		rc = -errno;
		close(s->lfd);
		s->lfd = -1;
		unlink(s->path);
		return fail(err, errlen, rc, "chown %s to group %ld: %s", s->path, s->o.gid, strerror(-rc));
	}
	s->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->efd < 0 || (rc = pthread_create(&s->th, NULL, control_main, s))) {
		rc = s->efd < 0 ? -errno : -rc;
		if (s->efd >= 0)
			close(s->efd);
		close(s->lfd);
		s->lfd = s->efd = -1;
		unlink(s->path);
		return fail(err, errlen, rc, "ipc server: cannot start: %s", strerror(-rc));
	}
	s->t0 = mono_ns();
	s->started = 1;
	return 0;
}

/* ---- the poller ---- */

/* Pushes one completion, waiting while the ring is full (the client is not
 * reading: only this client's poller waits). Returns -1 when stopped, 1
 * when the client slept and was woken, 0 otherwise. */
static int cq_push(ipc_client *c, const aidos_cqe *e, int msg)
{
	aidos_ring_hdr *h = c->hdr;
	unsigned spins = 0;
	/* The client's head is read only when our last view of it says the
	 * ring is full (one cache-line transfer less per request). acquire:
	 * the client's reads of the entries below cq_head are done before we
	 * overwrite them. A head the client set past our tail reads as "full"
	 * until it is sane again: only this client waits. */
	while (c->cq_tail - c->cq_head_seen >= c->cq_entries) {
		c->cq_head_seen = __atomic_load_n(&h->cq_head.v, __ATOMIC_ACQUIRE);
		if (c->cq_tail - c->cq_head_seen < c->cq_entries)
			break;
		if (__atomic_load_n(&c->stop, __ATOMIC_RELAXED))
			return -1;
		if (++spins < 4096) {
			cpu_relax();
		} else {
			struct timespec ts = { 0, 100000 };
			nanosleep(&ts, NULL);
		}
	}
	aidos_cqe *slot = &c->cq[c->cq_tail & (c->cq_entries - 1)];
	memcpy(slot, e, msg ? sizeof *e : offsetof(aidos_cqe, msg));
	if (!msg)
		slot->msg[0] = 0;
	c->cq_tail++;
	/* release: the completion's bytes (and the outputs written into the
	 * heap before it) are visible before the client sees the new tail. */
	__atomic_store_n(&h->cq_tail.v, c->cq_tail, __ATOMIC_RELEASE);
	/* Full barrier between publishing the tail and reading the client's
	 * waiting flag; pairs with the client's barrier between setting the
	 * flag and re-reading cq_tail (Dekker: one of us sees the other). */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (__atomic_load_n(&h->client_flags.v, __ATOMIC_RELAXED) & AIDOS_RING_CQ_WAITING) {
		__atomic_fetch_add(&h->cq_wake.v, 1, __ATOMIC_RELEASE);
		futex_wake(&h->cq_wake.v);
		return 1;
	}
	return 0;
}

/* Checks and runs one INFER descriptor (a private copy) of client c,
 * filling the completion e (result, outputs, bytes needed, message).
 * Returns 1 when it was of the node's top priority class. */
static int run_one(ipc_client *c, const aidos_sqe *s, aidos_cqe *e)
{
	ipc_server *srv = c->s;
	ipc_exec x;
	void *agent;
	int rc, top = 0;
	uint32_t nh = __atomic_load_n(&c->nh, __ATOMIC_ACQUIRE);   /* handles published before nh */

	rc = ipc_sqe_check(s, c->heap, c->heap_bytes, c->h, nh, &x, &agent, e->msg, sizeof e->msg);
	if (!rc && s->deadline_ns && mono_ns() > s->deadline_ns)
		rc = fail(e->msg, sizeof e->msg, -ETIME, "deadline passed before the request started");
	if (!rc) {
		rc = srv->ops.exec(srv->ops.ctx, agent, &x, e->msg, sizeof e->msg);
		e->nout = x.nout;
		e->out_len = rc == -ENOBUFS ? x.out_need : x.out_len;
		e->exec_ns = x.exec_ns;
		top = x.top_class;
	}
	e->res = rc;
	if (rc)
		__atomic_fetch_add(&srv->errors, 1, __ATOMIC_RELAXED);
	return top;
}

/* 1 when the clients outnumber half the cores: long spins would then take
 * cores from models (a hint, read racily). */
static int crowded(ipc_server *s)
{
	return (long)__atomic_load_n(&s->nc, __ATOMIC_RELAXED) * 2 > s->ncpu;
}

/* A client's poller: takes descriptors until the client is stopped. */
static void *poller_main(void *arg)
{
	ipc_client *c = arg;
	ipc_server *s = c->s;
	aidos_ring_hdr *h = c->hdr;
	const uint64_t spin_ns = (uint64_t)s->spin_us * 1000;
	/* After waking a sleeping client, spin long enough for it to come
	 * back (a futex wake-up takes ~50 us here): otherwise both sides can
	 * settle into sleeping on every request, each waiting out the
	 * other's wake-up. */
	uint64_t extra_ns = 0;
	/* We woke the client for our last completion and it has not taken it
	 * yet. If it still has not after IPC_PICKUP_NS it is not running,
	 * perhaps waiting for this very core (the scheduler tends to wake it
	 * beside its waker), and our spin would hold the core until our time
	 * slice ends (1.2-1.4 ms tails under load, ~1% of requests): we sleep
	 * at once instead. (Not sched_yield: with SCHED_IDLE threads of lower
	 * classes here it hands them the core until the next tick.) */
	int woke_client = 0;
	aidos_sqe sqe;
	aidos_cqe e;

	if (s->cpu >= 0 && s->cpu < CPU_SETSIZE) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(s->cpu, &set);
		pthread_setaffinity_np(pthread_self(), sizeof set, &set);
	}
	while (!__atomic_load_n(&c->stop, __ATOMIC_RELAXED)) {
		/* acquire: pairs with the client's release of sq_tail, so the
		 * descriptor bytes written before it are visible here. */
		uint32_t tail = __atomic_load_n(&h->sq_tail.v, __ATOMIC_ACQUIRE);
		if (tail == c->sq_head) {
			/* Idle: spin, then sleep until the client wakes us. */
			uint64_t t0 = 0;
			unsigned n = 0;
			for (;;) {
				if (__atomic_load_n(&h->sq_tail.v, __ATOMIC_ACQUIRE) != c->sq_head ||
				    __atomic_load_n(&c->stop, __ATOMIC_RELAXED))
					break;
				cpu_relax();
				if ((++n & 63) == 0) {
					uint64_t now = mono_ns();
					if (!t0)
						t0 = now;
					else if (now - t0 >= spin_ns + extra_ns)
						break;
					if (woke_client) {
						if (__atomic_load_n(&h->cq_head.v, __ATOMIC_ACQUIRE) == c->cq_tail)
							woke_client = 0;
						else if (now - t0 >= IPC_PICKUP_NS)
							break;
					}
				}
			}
			if (__atomic_load_n(&h->sq_tail.v, __ATOMIC_ACQUIRE) != c->sq_head)
				continue;
			extra_ns = 0;
			uint32_t w = __atomic_load_n(&h->sq_wake.v, __ATOMIC_ACQUIRE);
			uint32_t cr = crowded(s) ? AIDOS_RING_CROWDED : 0;
			__atomic_store_n(&h->node_flags.v, AIDOS_RING_NEED_WAKEUP | cr, __ATOMIC_RELAXED);
			/* Full barrier between announcing the sleep and re-reading
			 * the tail; pairs with the client's barrier between
			 * publishing a tail and reading node_flags. */
			__atomic_thread_fence(__ATOMIC_SEQ_CST);
			if (__atomic_load_n(&h->sq_tail.v, __ATOMIC_ACQUIRE) == c->sq_head &&
			    !__atomic_load_n(&c->stop, __ATOMIC_RELAXED))
				futex_wait(&h->sq_wake.v, w, 1000);
			__atomic_store_n(&h->node_flags.v, cr, __ATOMIC_RELAXED);
			continue;
		}
		memset(&e, 0, offsetof(aidos_cqe, msg));
		e.msg[0] = 0;
		if (tail - c->sq_head > c->sq_entries) {
			/* The client's tail jumped past what the ring holds:
			 * answer once and resynchronise at its tail. */
			e.user_data = 0;
			e.res = AIDOS_E_INVALID;
			snprintf(e.msg, sizeof e.msg, "submission tail jumped by %u (ring has %u entries)",
				 tail - c->sq_head, c->sq_entries);
			__atomic_fetch_add(&s->errors, 1, __ATOMIC_RELAXED);
			c->sq_head = tail;
			/* release: we are done reading the slots before head */
			__atomic_store_n(&h->sq_head.v, c->sq_head, __ATOMIC_RELEASE);
			if (cq_push(c, &e, 1) < 0)
				break;
			continue;
		}
		/* Copy the descriptor out before checking it: the client may be
		 * rewriting the slot. Only the inputs it declares are copied. */
		const aidos_sqe *slot = &c->sq[c->sq_head & (c->sq_entries - 1)];
		memcpy(&sqe, slot, offsetof(aidos_sqe, in));
		__atomic_signal_fence(__ATOMIC_SEQ_CST);   /* nin read once, from the copy */
		uint32_t nin = sqe.nin <= AIDOS_RING_MAX_TENSORS ? sqe.nin : 0;
		if (nin)
			memcpy(sqe.in, slot->in, nin * sizeof sqe.in[0]);
		c->sq_head++;
		/* release: the slot's bytes were read before the client may
		 * reuse it. */
		__atomic_store_n(&h->sq_head.v, c->sq_head, __ATOMIC_RELEASE);
		e.user_data = sqe.user_data;
		__atomic_fetch_add(&s->requests, 1, __ATOMIC_RELAXED);
		int msg = 0, top = 0;
		if (sqe.op == AIDOS_RING_OP_NOP && !sqe.flags) {
			e.res = 0;
		} else {
			top = run_one(c, &sqe, &e);
			msg = e.res != 0;
		}
		int pushed = cq_push(c, &e, msg);
		if (pushed < 0)
			break;
		woke_client = pushed;
		/* Only while there are cores to spare: with more busy clients
		 * than cores, that spin would take a core from another model. */
		if (pushed && !crowded(s))
			extra_ns = IPC_WAKE_SPIN_US * 1000ull;
		/* The top class's poller keeps watching its ring for a while
		 * whatever the crowd: its next request then needs no wake-up
		 * (~50 us here, and a core to wake on). Lower classes' pollers
		 * spin at SCHED_IDLE, so this costs them nothing they need; an
		 * idle node still sleeps 1 ms after its last request. */
		if (top)
			extra_ns = IPC_TOP_SPIN_US * 1000ull;
	}
	return NULL;
}

/* ---- clients ---- */

/* Stops the client's poller (after the request it runs), closes its
 * handles, unmaps and closes its memfd and socket, frees it. */
static void client_free(ipc_server *s, ipc_client *c)
{
	if (c->started) {
		__atomic_store_n(&c->stop, 1, __ATOMIC_RELAXED);
		__atomic_fetch_add(&c->hdr->sq_wake.v, 1, __ATOMIC_RELEASE);
		futex_wake(&c->hdr->sq_wake.v);
		pthread_join(c->th, NULL);   /* finishes the request it runs */
	}
	uint32_t nh = __atomic_load_n(&c->nh, __ATOMIC_ACQUIRE);
	for (uint32_t i = 0; i < nh; i++) {
		if (c->h[i].agent)
			s->ops.close(s->ops.ctx, c->h[i].agent);
		pool_free(c->h[i].io);
	}
	if (c->map)
		munmap(c->map, c->map_bytes);
	if (c->memfd >= 0)
		close(c->memfd);
	if (c->fd >= 0)
		close(c->fd);
	pool_free(c->h);
	pool_free(c->rx);
	pool_free(c);
}

/* Sends one message (header, payload, optionally an fd by SCM_RIGHTS)
 * without blocking. Returns 0, or -1 when it could not go whole. */
static int send_msg(int fd, uint16_t type, uint32_t seq, int32_t status, const void *p, size_t len, int pass_fd)
{
	aidos_ipc_msg m = { .magic = AIDOS_IPC_MAGIC, .type = type, .version = AIDOS_RING_VERSION, .seq = seq,
			    .status = status, .len = (uint32_t)len };
	struct iovec iov[2] = { { &m, sizeof m }, { (void *)p, len } };
	union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } u;
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = len ? 2 : 1 };
	if (pass_fd >= 0) {
		memset(&u, 0, sizeof u);
		mh.msg_control = u.buf;
		mh.msg_controllen = sizeof u.buf;
		struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &pass_fd, sizeof(int));
	}
	ssize_t n = sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
	return n == (ssize_t)(sizeof m + len) ? 0 : -1;   /* short or blocked: drop the client */
}

/* An error reply to q: status rc (AIDOS_E_INVALID if 0), the message as
 * payload. */
static int send_err(int fd, const aidos_ipc_msg *q, int32_t rc, const char *msg)
{
	return send_msg(fd, q->type, q->seq, rc ? rc : AIDOS_E_INVALID, msg, strlen(msg), -1);
}

/* The memfd: header, rings, heap; mapped here, fd passed to the client. */
/* Creates, sizes, seals and maps the client's memfd, writes the header
 * and starts the poller. Errors: -errno with one line in err. */
static int client_map(ipc_server *s, ipc_client *c, const aidos_ipc_hello *hq, char *err, size_t errlen)
{
	if (c->memfd >= 0) {   /* an earlier HELLO that failed half way */
		close(c->memfd);
		c->memfd = -1;
	}
	c->sq_entries = hq->sq_entries ? hq->sq_entries : s->o.sq_entries;
	c->cq_entries = hq->cq_entries ? hq->cq_entries : s->o.cq_entries;
	c->heap_bytes = hq->heap_bytes ? hq->heap_bytes : s->o.heap_bytes;
	uint64_t sq_off = AIDOS_RING_HDR_BYTES;
	uint64_t cq_off = pool_align_up(sq_off + (uint64_t)c->sq_entries * sizeof(aidos_sqe), 4096);
	uint64_t heap_off = pool_align_up(cq_off + (uint64_t)c->cq_entries * sizeof(aidos_cqe), 4096);
	uint64_t total = heap_off + c->heap_bytes;
	char nm[32];
	snprintf(nm, sizeof nm, "aidos-client-%u", c->id);
	c->memfd = memfd_create(nm, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (c->memfd < 0)
		return fail(err, errlen, -errno, "memfd_create: %s", strerror(errno));
	if (ftruncate(c->memfd, (off_t)total))
		return fail(err, errlen, -errno, "memfd of %llu bytes: %s", (unsigned long long)total, strerror(errno));
	/* The client must not shrink it under us (a SIGBUS in the poller). */
	fcntl(c->memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
	void *m = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, c->memfd, 0);
	if (m == MAP_FAILED)
		return fail(err, errlen, -errno, "mmap of the client memfd: %s", strerror(errno));
	c->map = m;
	c->map_bytes = total;
	c->hdr = m;
	c->sq = (aidos_sqe *)(c->map + sq_off);
	c->cq = (aidos_cqe *)(c->map + cq_off);
	c->heap = c->map + heap_off;
	aidos_ring_hdr *h = c->hdr;
	h->magic = AIDOS_RING_MAGIC;
	h->hdr_bytes = AIDOS_RING_HDR_BYTES;
	h->sq_entries = c->sq_entries;
	h->cq_entries = c->cq_entries;
	h->sqe_bytes = sizeof(aidos_sqe);
	h->cqe_bytes = sizeof(aidos_cqe);
	h->total_bytes = total;
	h->sq_off = sq_off;
	h->cq_off = cq_off;
	h->heap_off = heap_off;
	h->heap_bytes = c->heap_bytes;
	/* release: the whole header is written before the version the client
	 * checks first (it maps after our reply, so this is belt and braces). */
	__atomic_store_n(&h->version, AIDOS_RING_VERSION, __ATOMIC_RELEASE);
	int rc = pthread_create(&c->th, NULL, poller_main, c);
	if (rc)
		return fail(err, errlen, -rc, "cannot start the client's poller: %s", strerror(rc));
	c->started = 1;
	return 0;
}

/* Handles one whole message from client c. Returns -1 to drop it. */
/* Answers one whole control message of client c (payload p). Returns 0,
 * or -1 when the client must be dropped (framing error, reply not sent). */
static int handle(ipc_server *s, ipc_client *c, const aidos_ipc_msg *q, const uint8_t *p)
{
	char err[512];
	int rc;
	if ((rc = ipc_msg_check(q, err, sizeof err))) {
		send_err(c->fd, q, rc, err);
		return -1;   /* garbage framing: nothing after it can be trusted */
	}
	if ((rc = ipc_payload_check(q, p, err, sizeof err)))
		return send_err(c->fd, q, rc, err);
	if (q->type == AIDOS_IPC_OPEN && !c->map)
		return send_err(c->fd, q, AIDOS_E_INVALID, "OPEN before HELLO: no rings yet");
	switch (q->type) {
	case AIDOS_IPC_HELLO: {
		if (c->map)
			return send_err(c->fd, q, AIDOS_E_INVALID, "HELLO twice");
		aidos_ipc_hello hq;
		memcpy(&hq, p, sizeof hq);
		if ((rc = client_map(s, c, &hq, err, sizeof err)))
			return send_err(c->fd, q, rc, err);
		aidos_ipc_hello_rep r = { .total_bytes = c->map_bytes, .client_id = c->id };
		return send_msg(c->fd, q->type, q->seq, 0, &r, sizeof r, c->memfd);
	}
	case AIDOS_IPC_OPEN: {
		uint32_t nh = c->nh;
		if (nh >= IPC_MAX_HANDLES)
			return send_err(c->fd, q, AIDOS_E_RANGE, "this client has opened 256 agents (the limit)");
		ipc_handle *hd = &c->h[nh];
		int nin = 0, nout = 0;
		if ((rc = s->ops.open(s->ops.ctx, (const char *)p, &hd->agent, s->io_scratch, 2 * AIDOS_RING_MAX_OUT,
				      &nin, &nout, err, sizeof err)))
			return send_err(c->fd, q, rc, err);
		if (nin > AIDOS_RING_MAX_TENSORS || nout > AIDOS_RING_MAX_OUT || nin < 0 || nout < 0 ||
		    !(hd->io = pool_malloc((size_t)(nin + nout + 1) * sizeof *hd->io))) {
			s->ops.close(s->ops.ctx, hd->agent);
			hd->agent = NULL;
			if (nin >= 0 && nout >= 0 && nin <= AIDOS_RING_MAX_TENSORS && nout <= AIDOS_RING_MAX_OUT)
				return send_err(c->fd, q, AIDOS_E_NOMEM, "out of memory");
			snprintf(err, sizeof err, "agent '%s' has %d inputs and %d outputs (the rings take %d and %d)",
				 (const char *)p, nin, nout, AIDOS_RING_MAX_TENSORS, AIDOS_RING_MAX_OUT);
			return send_err(c->fd, q, AIDOS_E_UNSUPPORTED, err);
		}
		memcpy(hd->io, s->io_scratch, (size_t)(nin + nout) * sizeof *hd->io);
		hd->nin = nin;
		hd->nout = nout;
		/* release: the handle's fields are written before a poller that
		 * reads nh (acquire) may use them. */
		__atomic_store_n(&c->nh, nh + 1, __ATOMIC_RELEASE);
		aidos_ipc_open_rep r = { .handle = nh, .nin = (uint32_t)nin, .nout = (uint32_t)nout };
		size_t len = sizeof r + (size_t)(nin + nout) * sizeof(aidos_ipc_io);
		uint8_t *out = pool_malloc(len);
		if (!out)
			return send_err(c->fd, q, AIDOS_E_NOMEM, "out of memory");
		memcpy(out, &r, sizeof r);
		memcpy(out + sizeof r, hd->io, (size_t)(nin + nout) * sizeof(aidos_ipc_io));
		rc = send_msg(c->fd, q->type, q->seq, 0, out, len, -1);
		pool_free(out);
		return rc;
	}
	case AIDOS_IPC_SPAWN:
		if ((rc = s->ops.spawn(s->ops.ctx, (const aidos_ipc_spawn *)p, err, sizeof err)))
			return send_err(c->fd, q, rc, err);
		return send_msg(c->fd, q->type, q->seq, 0, NULL, 0, -1);
	case AIDOS_IPC_KILL:
		if ((rc = s->ops.kill(s->ops.ctx, (const char *)p, err, sizeof err)))
			return send_err(c->fd, q, rc, err);
		return send_msg(c->fd, q->type, q->seq, 0, NULL, 0, -1);
	case AIDOS_IPC_LIST: {
		enum { CAP = (AIDOS_IPC_MAX_PAYLOAD - 8) / sizeof(aidos_ipc_agent) };
		uint32_t start, total = 0;
		int n = 0;
		memcpy(&start, p, 4);
		uint8_t *out = pool_malloc(8 + CAP * sizeof(aidos_ipc_agent));
		if (!out)
			return send_err(c->fd, q, AIDOS_E_NOMEM, "out of memory");
		if ((rc = s->ops.list(s->ops.ctx, start, (aidos_ipc_agent *)(out + 8), CAP, &n, &total, err, sizeof err))) {
			pool_free(out);
			return send_err(c->fd, q, rc, err);
		}
		uint32_t hdr2[2] = { (uint32_t)n, total };   /* then n records */
		memcpy(out, hdr2, 8);
		rc = send_msg(c->fd, q->type, q->seq, 0, out, 8 + (size_t)n * sizeof(aidos_ipc_agent), -1);
		pool_free(out);
		return rc;
	}
	case AIDOS_IPC_STATS: {
		aidos_ipc_stats st;
		memset(&st, 0, sizeof st);
		s->ops.stats(s->ops.ctx, &st);
		st.clients = (uint64_t)__atomic_load_n(&s->nc, __ATOMIC_RELAXED);
		st.requests = __atomic_load_n(&s->requests, __ATOMIC_RELAXED);
		st.errors = __atomic_load_n(&s->errors, __ATOMIC_RELAXED);
		st.uptime_ms = (mono_ns() - s->t0) / 1000000;
		for (int i = 0; i < s->nc; i++)
			st.heap_bytes += s->c[i]->map_bytes;
		return send_msg(c->fd, q->type, q->seq, 0, &st, sizeof st, -1);
	}
	}
	return -1;
}

/* Reads what client i sent; handles every whole message. Returns -1 when
 * the client is gone (EOF, error, or a protocol violation). */
static int client_readable(ipc_server *s, ipc_client *c)
{
	for (;;) {
		ssize_t n = recv(c->fd, c->rx + c->rx_len, RX_CAP - c->rx_len, MSG_DONTWAIT);
		if (n == 0)
			return -1;   /* EOF: the client closed or died */
		if (n < 0)
			return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
		c->rx_len += (size_t)n;
		while (c->rx_len >= sizeof(aidos_ipc_msg)) {
			aidos_ipc_msg q;
			memcpy(&q, c->rx, sizeof q);
			char err[256];
			int rc;
			if ((rc = ipc_msg_check(&q, err, sizeof err))) {
				send_err(c->fd, &q, rc, err);
				return -1;
			}
			size_t whole = sizeof q + q.len;
			if (c->rx_len < whole)
				break;
			if (handle(s, c, &q, c->rx + sizeof q))
				return -1;
			memmove(c->rx, c->rx + whole, c->rx_len - whole);
			c->rx_len -= whole;
		}
	}
}

/* Accepts a connection: SO_PEERCRED decides (same uid, root, or the
 * allowed group); a refused peer gets one error reply (seq 0). */
static void accept_one(ipc_server *s)
{
	int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0)
		return;
	struct ucred cr;
	socklen_t cl = sizeof cr;
	aidos_ipc_msg q = { .type = AIDOS_IPC_HELLO };
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl)) {
		close(fd);
		return;
	}
	if (!(cr.uid == s->uid || cr.uid == 0 || (s->o.gid_set && cr.gid == (gid_t)s->o.gid))) {
		char m[128];
		snprintf(m, sizeof m, "permission denied: uid %u may not use this node (it runs as uid %u)",
			 (unsigned)cr.uid, (unsigned)s->uid);
		send_err(fd, &q, -EACCES, m);
		close(fd);
		return;
	}
	if (s->nc >= s->o.max_clients) {
		send_err(fd, &q, -EMFILE, "too many clients");
		close(fd);
		return;
	}
	ipc_client *c = pool_calloc(1, sizeof *c);
	if (c) {
		c->h = pool_calloc(IPC_MAX_HANDLES, sizeof *c->h);
		c->rx = pool_malloc(RX_CAP);
	}
	if (!c || !c->h || !c->rx) {
		if (c) {
			pool_free(c->h);
			pool_free(c->rx);
		}
		pool_free(c);
		close(fd);
		return;
	}
	c->s = s;
	c->fd = fd;
	c->memfd = -1;
	c->pid = cr.pid;
	c->id = ++s->next_id;
	s->c[s->nc] = c;
	__atomic_store_n(&s->nc, s->nc + 1, __ATOMIC_RELAXED);
}

/* Removes client i from the list (the last takes its place), frees it. */
static void drop_client(ipc_server *s, int i)
{
	ipc_client *c = s->c[i];
	s->c[i] = s->c[s->nc - 1];
	__atomic_store_n(&s->nc, s->nc - 1, __ATOMIC_RELAXED);
	client_free(s, c);
}

static void *control_main(void *arg)
{
	ipc_server *s = arg;
	struct pollfd *pf = pool_calloc((size_t)s->o.max_clients + 2, sizeof *pf);
	if (!pf)
		return NULL;
	while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
		int n = s->nc;
		pf[0] = (struct pollfd){ .fd = s->efd, .events = POLLIN };
		pf[1] = (struct pollfd){ .fd = s->lfd, .events = POLLIN };
		for (int i = 0; i < n; i++)
			pf[2 + i] = (struct pollfd){ .fd = s->c[i]->fd, .events = POLLIN };
		if (poll(pf, (nfds_t)n + 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pf[0].revents)
			break;
		/* Clients first, from the last so drop_client's swap keeps
		 * indices below i valid. */
		for (int i = n - 1; i >= 0; i--) {
			if (!pf[2 + i].revents)
				continue;
			if (client_readable(s, s->c[i]))
				drop_client(s, i);
		}
		if (pf[1].revents & POLLIN)
			accept_one(s);
	}
	pool_free(pf);
	return NULL;
}

void ipc_server_destroy(ipc_server *s)
{
	if (!s)
		return;
	if (s->started) {
		__atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE);
		uint64_t one = 1;
		if (write(s->efd, &one, sizeof one) < 0) {
			/* the eventfd cannot be full with one write */
		}
		pthread_join(s->th, NULL);
	}
	while (s->nc > 0)
		drop_client(s, s->nc - 1);
	if (s->lfd >= 0) {
		close(s->lfd);
		unlink(s->path);
	}
	if (s->efd >= 0)
		close(s->efd);
	pool_free(s->c);
	pool_free(s->io_scratch);
	pool_free(s);
}
