/*
 * node/client.c - the local client library (include/aidos/client.h is the
 * contract, node/ipc_abi.h the shared layout).
 *
 * Hot path (ping, infer with inputs already in the heap, output area
 * already sized): write a descriptor into the submission ring, publish the
 * tail, spin on the completion tail; no system call unless the node's
 * poller sleeps (then one FUTEX_WAKE) or the request outlasts our spin
 * (then FUTEX_WAIT), and no allocation: the heap allocator below keeps its
 * block list in private memory, and each agent's output area is kept
 * between requests.
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "aidos/client.h"
#include "node/ipc.h"
#include "node/ipc_abi.h"
#include "pools/pools.h"
#include "node/util.h"

#define MAX_AGENTS 256
#define MAX_BLOCKS 4096
/* A request whose agent's round trips average more than this many client
 * spins is waited for asleep from the start (wait_cqe's `far`). */
#define FAR_SPINS 8

typedef struct blk {
	uint64_t off, len;
	int used;
} blk;

typedef struct agent_ent {
	char name[AIDOS_IPC_NAME];
	uint32_t handle;
	int nin, nout;
	aidos_ipc_io *io;         /* [nin + nout] */
	uint64_t out_off, out_cap; /* output area, 0: not yet */
	uint64_t rtt_ns;           /* moving average of this agent's round trips here, 0: none yet */
} agent_ent;

struct aidos_client {
	int fd;
	char path[108];
	uint32_t seq;
	uint8_t *map;
	size_t map_bytes;
	aidos_ring_hdr *hdr;
	aidos_sqe *sq;
	aidos_cqe *cq;
	uint8_t *heap;
	uint64_t heap_bytes;
	uint32_t sq_entries, cq_entries;
	uint32_t sq_tail, cq_head;  /* ours: never read back from the region */
	uint32_t sq_head_seen;      /* last sq_head read: reread only when the ring looks full */
	uint64_t next_ud;
	uint64_t spin_ns;
	uint64_t deadline_rel;
	uint64_t last_exec_ns;      /* model time of the last infer, as the node measured it */
	uint64_t far_waits;         /* waits that slept from the start (wait_cqe's far) */
	blk *b;                     /* [MAX_BLOCKS] sorted by off, covering the heap */
	int nb;
	agent_ent ag[MAX_AGENTS];
	int na;
	int dead;
};

const char *aidos_client_default_socket(char *buf, size_t len)
{
	const char *e = getenv("AIDOS_SOCKET");
	if (e && *e)
		snprintf(buf, len, "%s", e);
	else if ((e = getenv("XDG_RUNTIME_DIR")) && *e)
		snprintf(buf, len, "%s/aidos/node.sock", e);
	else if (geteuid() == 0)
		snprintf(buf, len, "/run/aidos/node.sock");
	else
		snprintf(buf, len, "/tmp/aidos-%u/node.sock", (unsigned)geteuid());
	return buf;
}

/* ---- the control socket ---- */

/* Reads exactly n bytes; with passed_fd, an fd sent by SCM_RIGHTS with the
 * first bytes lands there. Returns 0 or -EPIPE (EOF, error). */
static int recv_all(int fd, void *p, size_t n, int *passed_fd)
{
	uint8_t *q = p;
	while (n) {
		union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } u;
		struct iovec iov = { q, n };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
		if (passed_fd) {
			mh.msg_control = u.buf;
			mh.msg_controllen = sizeof u.buf;
		}
		ssize_t r = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -EPIPE;
		if (passed_fd) {
			for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
				if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS &&
				    cm->cmsg_len == CMSG_LEN(sizeof(int)))
					memcpy(passed_fd, CMSG_DATA(cm), sizeof(int));
			passed_fd = NULL;   /* only with the first bytes */
		}
		q += r;
		n -= (size_t)r;
	}
	return 0;
}

/* One request and its reply. *rep (pool memory, free it) gets the payload
 * of a successful reply; an error reply's text goes to err. */
static int call(aidos_client *c, uint16_t type, const void *p, uint32_t len, uint8_t **rep, uint32_t *rlen,
		int *passed_fd, char *err, size_t errlen)
{
	if (c->dead)
		return fail(err, errlen, -EPIPE, "the node at %s went away", c->path);
	aidos_ipc_msg m = { .magic = AIDOS_IPC_MAGIC, .type = type, .version = AIDOS_RING_VERSION, .seq = ++c->seq,
			    .len = len };
	struct iovec iov[2] = { { &m, sizeof m }, { (void *)p, len } };
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = len ? 2 : 1 };
	/* A send that fails may still have a reply waiting: a node that
	 * refuses a connection (uid, too many clients) says why at once and
	 * closes, with seq 0. */
	ssize_t n = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
	aidos_ipc_msg r;
	if (recv_all(c->fd, &r, sizeof r, passed_fd)) {
		c->dead = 1;
		return fail(err, errlen, -EPIPE, "the node at %s went away", c->path);
	}
	int refusal = r.seq == 0 && r.status < 0;
	if (r.magic != AIDOS_IPC_MAGIC || r.len > AIDOS_IPC_MAX_PAYLOAD || (!refusal && (r.seq != m.seq || r.type != type)) ||
	    (!refusal && n != (ssize_t)(sizeof m + len))) {
		c->dead = 1;
		return fail(err, errlen, AIDOS_E_INVALID, "the node at %s sent a malformed reply", c->path);
	}
	uint8_t *buf = pool_malloc(r.len + 1);
	if (!buf)
		return fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
	if (r.len && recv_all(c->fd, buf, r.len, NULL)) {
		pool_free(buf);
		c->dead = 1;
		return fail(err, errlen, -EPIPE, "the node at %s went away", c->path);
	}
	buf[r.len] = 0;
	if (r.status) {
		fail(err, errlen, r.status, "%s", (char *)buf);
		pool_free(buf);
		return r.status;
	}
	if (rep) {
		*rep = buf;
		*rlen = r.len;
	} else {
		pool_free(buf);
	}
	return 0;
}

int aidos_client_connect(const char *path, const aidos_client_opts *o, aidos_client **out, char *err,
			 size_t errlen)
{
	char def[256];
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int rc;

	*out = NULL;
	if (!path || !*path)
		path = aidos_client_default_socket(def, sizeof def);
	if (strlen(path) >= sizeof sa.sun_path)
		return fail(err, errlen, AIDOS_E_INVALID, "socket path too long: %s", path);
	strcpy(sa.sun_path, path);
	aidos_client *c = pool_calloc(1, sizeof *c);
	if (!c)
		return fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
	snprintf(c->path, sizeof c->path, "%s", path);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		rc = -errno;
		pool_free(c);
		return fail(err, errlen, rc, "socket: %s", strerror(-rc));
	}
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa)) {
		rc = -errno;
		close(c->fd);
		pool_free(c);
		if (rc == -ENOENT || rc == -ECONNREFUSED)
			return fail(err, errlen, rc,
				    "no aidos node is listening on %s (%s); start aidos-node with --socket %s, or set "
				    "AIDOS_SOCKET / --socket to where it listens", path, strerror(-rc), path);
		return fail(err, errlen, rc, "cannot connect to the aidos node at %s: %s", path, strerror(-rc));
	}
	uint64_t spin_us = o && o->spin_us ? o->spin_us : 50;
	const char *env = getenv("AIDOS_CLIENT_SPIN_US");
	if (env && *env)
		spin_us = strtoull(env, NULL, 10);
	c->spin_ns = spin_us * 1000;
	c->next_ud = 1;

	aidos_ipc_hello h = { .heap_bytes = o ? o->heap_bytes : 0 };
	aidos_ipc_hello_rep hr;
	uint8_t *rep = NULL;
	uint32_t rlen = 0;
	int mfd = -1;
	if ((rc = call(c, AIDOS_IPC_HELLO, &h, sizeof h, &rep, &rlen, &mfd, err, errlen)))
		goto bad;
	if (rlen != sizeof hr || mfd < 0) {
		rc = fail(err, errlen, AIDOS_E_INVALID, "the node at %s sent no shared region", path);
		goto bad;
	}
	memcpy(&hr, rep, sizeof hr);
	void *m = mmap(NULL, hr.total_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	close(mfd);
	mfd = -1;
	if (m == MAP_FAILED) {
		rc = fail(err, errlen, -errno, "mapping the node's shared region: %s", strerror(errno));
		goto bad;
	}
	c->map = m;
	c->map_bytes = hr.total_bytes;
	c->hdr = m;
	/* acquire: pairs with the node's release of version (written last). */
	uint32_t ver = __atomic_load_n(&c->hdr->version, __ATOMIC_ACQUIRE);
	aidos_ring_hdr *hd = c->hdr;
	if (ver != AIDOS_RING_VERSION || hd->magic != AIDOS_RING_MAGIC || hd->sqe_bytes != sizeof(aidos_sqe) ||
	    hd->cqe_bytes != sizeof(aidos_cqe) || hd->total_bytes != hr.total_bytes ||
	    hd->heap_off + hd->heap_bytes > hr.total_bytes || hd->sq_entries == 0 || hd->cq_entries == 0 ||
	    (hd->sq_entries & (hd->sq_entries - 1)) || (hd->cq_entries & (hd->cq_entries - 1))) {
		rc = fail(err, errlen, AIDOS_E_INVALID, "the node at %s speaks ring ABI version %u (this library: %u)",
			  path, ver, AIDOS_RING_VERSION);
		goto bad;
	}
	c->sq = (aidos_sqe *)(c->map + hd->sq_off);
	c->cq = (aidos_cqe *)(c->map + hd->cq_off);
	c->heap = c->map + hd->heap_off;
	c->heap_bytes = hd->heap_bytes;
	c->sq_entries = hd->sq_entries;
	c->cq_entries = hd->cq_entries;
	c->sq_tail = __atomic_load_n(&hd->sq_tail.v, __ATOMIC_RELAXED);
	c->sq_head_seen = __atomic_load_n(&hd->sq_head.v, __ATOMIC_RELAXED);
	c->cq_head = __atomic_load_n(&hd->cq_head.v, __ATOMIC_RELAXED);
	c->b = pool_calloc(MAX_BLOCKS, sizeof *c->b);
	if (!c->b) {
		rc = fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
		goto bad;
	}
	c->b[0] = (blk){ 0, c->heap_bytes, 0 };
	c->nb = 1;
	pool_free(rep);
	*out = c;
	return 0;
bad:
	if (mfd >= 0)
		close(mfd);
	pool_free(rep);
	aidos_client_close(c);
	return rc;
}

void aidos_client_close(aidos_client *c)
{
	if (!c)
		return;
	if (c->map)
		munmap(c->map, c->map_bytes);
	if (c->fd >= 0)
		close(c->fd);
	for (int i = 0; i < c->na; i++)
		pool_free(c->ag[i].io);
	pool_free(c->b);
	pool_free(c);
}

void *aidos_client_region(aidos_client *c, size_t *len)
{
	if (len)
		*len = c->map_bytes;
	return c->map;
}

uint64_t aidos_client_last_exec_ns(const aidos_client *c)
{
	return c->last_exec_ns;
}

void aidos_client_set_deadline(aidos_client *c, uint64_t rel_ns)
{
	c->deadline_rel = rel_ns;
}

/* ---- control calls ---- */

int aidos_client_spawn(aidos_client *c, const aidos_client_spawn_opts *o, char *err, size_t errlen)
{
	aidos_ipc_spawn sp;
	memset(&sp, 0, sizeof sp);
	if (!o || !o->name || !o->model)
		return fail(err, errlen, AIDOS_E_INVALID, "spawn: a name and a model are required");
	if (strlen(o->name) >= sizeof sp.name)
		return fail(err, errlen, AIDOS_E_INVALID, "spawn: agent name too long: %s", o->name);
	strcpy(sp.name, o->name);
	/* The node resolves relative paths against its own directory: send an
	 * absolute one. */
	char abs[PATH_MAX];
	const char *mp = o->model;
	if (mp[0] != '/' && realpath(mp, abs))
		mp = abs;
	if (strlen(mp) >= sizeof sp.model)
		return fail(err, errlen, AIDOS_E_INVALID, "spawn: model path too long: %s", mp);
	strcpy(sp.model, mp);
	sp.priority = o->priority;
	sp.quota_bytes = o->quota_bytes;
	sp.deadline_ms = o->deadline_ms;
	return call(c, AIDOS_IPC_SPAWN, &sp, sizeof sp, NULL, NULL, NULL, err, errlen);
}

static void forget_agent(aidos_client *c, const char *name);

int aidos_client_kill(aidos_client *c, const char *name, char *err, size_t errlen)
{
	char nm[AIDOS_IPC_NAME];
	memset(nm, 0, sizeof nm);
	if (!name || strlen(name) >= sizeof nm)
		return fail(err, errlen, AIDOS_E_INVALID, "kill: invalid agent name");
	strcpy(nm, name);
	int rc = call(c, AIDOS_IPC_KILL, nm, sizeof nm, NULL, NULL, NULL, err, errlen);
	if (!rc)
		forget_agent(c, name);
	return rc;
}

int aidos_client_list(aidos_client *c, aidos_agent_info **out, int *n, char *err, size_t errlen)
{
	_Static_assert(sizeof(aidos_agent_info) == sizeof(aidos_ipc_agent), "agent info mirrors the ABI");
	aidos_agent_info *l = NULL;
	int have = 0;
	uint32_t start = 0;
	*out = NULL;
	*n = 0;
	for (;;) {
		uint8_t *rep;
		uint32_t rlen, hdr[2];
		int rc = call(c, AIDOS_IPC_LIST, &start, 4, &rep, &rlen, NULL, err, errlen);
		if (rc) {
			pool_free(l);
			return rc;
		}
		if (rlen < 8 || (memcpy(hdr, rep, 8), (uint64_t)rlen != 8 + (uint64_t)hdr[0] * sizeof(*l))) {
			pool_free(rep);
			pool_free(l);
			return fail(err, errlen, AIDOS_E_INVALID, "malformed list reply");
		}
		aidos_agent_info *nl = pool_realloc(l, ((size_t)have + hdr[0] + 1) * sizeof *l);
		if (!nl) {
			pool_free(rep);
			pool_free(l);
			return fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
		}
		l = nl;
		memcpy(l + have, rep + 8, (size_t)hdr[0] * sizeof *l);
		have += (int)hdr[0];
		pool_free(rep);
		start += hdr[0];
		if (hdr[0] == 0 || start >= hdr[1])
			break;
	}
	for (int i = 0; i < have; i++) {   /* the node's strings, terminated whatever it sent */
		l[i].name[sizeof l[i].name - 1] = 0;
		l[i].model[sizeof l[i].model - 1] = 0;
		l[i].state[sizeof l[i].state - 1] = 0;
	}
	*out = l;
	*n = have;
	return 0;
}

void aidos_client_list_free(aidos_agent_info *l)
{
	pool_free(l);
}

int aidos_client_stats(aidos_client *c, aidos_node_stats *st, char *err, size_t errlen)
{
	uint8_t *rep;
	uint32_t rlen;
	int rc = call(c, AIDOS_IPC_STATS, NULL, 0, &rep, &rlen, NULL, err, errlen);
	if (rc)
		return rc;
	if (rlen != sizeof(aidos_ipc_stats)) {
		pool_free(rep);
		return fail(err, errlen, AIDOS_E_INVALID, "malformed stats reply");
	}
	aidos_ipc_stats s;
	memcpy(&s, rep, sizeof s);
	pool_free(rep);
	*st = (aidos_node_stats){ .agents = s.agents, .clients = s.clients, .requests = s.requests,
				  .errors = s.errors, .uptime_ms = s.uptime_ms, .heap_bytes = s.heap_bytes,
				  .pool_bytes = s.pool_bytes };
	return 0;
}

/* ---- the heap allocator (private block list, first fit, coalescing) ---- */

/* First fit of len bytes (rounded up to AIDOS_RING_ALIGN) in the heap;
 * *off gets the offset. Errors: AIDOS_E_NOMEM (no room, or the block list
 * is full). */
static int heap_alloc(aidos_client *c, uint64_t len, uint64_t *off)
{
	len = pool_align_up(len ? len : 1, AIDOS_RING_ALIGN);
	for (int i = 0; i < c->nb; i++) {
		blk *b = &c->b[i];
		if (b->used || b->len < len)
			continue;
		if (b->len > len) {
			if (c->nb == MAX_BLOCKS)
				return AIDOS_E_NOMEM;
			memmove(&c->b[i + 2], &c->b[i + 1], (size_t)(c->nb - i - 1) * sizeof *b);
			c->b[i + 1] = (blk){ b->off + len, b->len - len, 0 };
			c->nb++;
			b->len = len;
		}
		b->used = 1;
		*off = b->off;
		return 0;
	}
	return AIDOS_E_NOMEM;
}

/* Frees the block at off (coalescing with free neighbours); unknown
 * offsets are ignored. */
static void heap_free(aidos_client *c, uint64_t off)
{
	int lo = 0, hi = c->nb - 1, i = -1;
	while (lo <= hi) {
		int mid = (lo + hi) / 2;
		if (c->b[mid].off == off) {
			i = mid;
			break;
		}
		if (c->b[mid].off < off)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	if (i < 0 || !c->b[i].used)
		return;
	c->b[i].used = 0;
	if (i + 1 < c->nb && !c->b[i + 1].used) {
		c->b[i].len += c->b[i + 1].len;
		memmove(&c->b[i + 1], &c->b[i + 2], (size_t)(c->nb - i - 2) * sizeof *c->b);
		c->nb--;
	}
	if (i > 0 && !c->b[i - 1].used) {
		c->b[i - 1].len += c->b[i].len;
		memmove(&c->b[i], &c->b[i + 1], (size_t)(c->nb - i - 1) * sizeof *c->b);
		c->nb--;
	}
}

/* Bytes of a dense tensor of t's dtype and dims. Errors: AIDOS_E_INVALID. */
static int dense_bytes(const aidos_tensor *t, uint64_t *bytes)
{
	size_t es = aidos_ring_dtype_size(t->dtype);
	if (!es || t->rank < 0 || t->rank > AIDOS_MAX_RANK)
		return AIDOS_E_INVALID;
	uint64_t n = es;
	for (int d = 0; d < t->rank; d++) {
		if (t->dims[d] < 0 || (t->dims[d] && n > (UINT64_MAX >> 1) / (uint64_t)t->dims[d]))
			return AIDOS_E_INVALID;
		n *= (uint64_t)t->dims[d];
	}
	*bytes = n;
	return 0;
}

int aidos_client_tensor_alloc(aidos_client *c, aidos_tensor *t)
{
	uint64_t n, off;
	int rc;
	if ((rc = dense_bytes(t, &n)))
		return rc;
	if (n > c->heap_bytes)
		return AIDOS_E_NOMEM;
	if ((rc = heap_alloc(c, n, &off)))
		return rc;
	t->data = c->heap + off;
	return 0;
}

void aidos_client_tensor_free(aidos_client *c, aidos_tensor *t)
{
	if (!t || !t->data)
		return;
	uint8_t *p = t->data;
	if (p >= c->heap && p < c->heap + c->heap_bytes)
		heap_free(c, (uint64_t)(p - c->heap));
	t->data = NULL;
}

/* ---- the rings ---- */

/* 1 when the node closed the control socket (checked only while waiting). */
static int node_gone(aidos_client *c)
{
	char b;
	ssize_t r = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	return r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* Writes s into the next submission slot and publishes it, waking the
 * poller if it sleeps. Returns 0, 1 when the poller slept and was woken,
 * or -EPIPE (ring full and node gone). */
static int submit(aidos_client *c, const aidos_sqe *s)
{
	aidos_ring_hdr *h = c->hdr;
	/* The node's head is read only when our last view of it says the
	 * ring is full: one cache-line transfer less per request. acquire:
	 * the node has finished copying the slots below sq_head. */
	while (c->sq_tail - c->sq_head_seen >= c->sq_entries) {
		c->sq_head_seen = __atomic_load_n(&h->sq_head.v, __ATOMIC_ACQUIRE);
		if (c->sq_tail - c->sq_head_seen < c->sq_entries)
			break;
		if (node_gone(c))
			return -EPIPE;
		cpu_relax();
	}
	aidos_sqe *slot = &c->sq[c->sq_tail & (c->sq_entries - 1)];
	memcpy(slot, s, offsetof(aidos_sqe, in) + (s->nin <= AIDOS_RING_MAX_TENSORS ? s->nin : 0) * sizeof s->in[0]);
	c->sq_tail++;
	/* release: the descriptor's bytes (and the inputs written into the
	 * heap before it) are visible before the node sees the new tail. */
	__atomic_store_n(&h->sq_tail.v, c->sq_tail, __ATOMIC_RELEASE);
	/* Full barrier between publishing the tail and reading node_flags;
	 * pairs with the poller's barrier between setting NEED_WAKEUP and
	 * re-reading sq_tail, so a sleeping poller is always woken. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	uint32_t f = __atomic_load_n(&h->node_flags.v, __ATOMIC_RELAXED);
	if (f & AIDOS_RING_NEED_WAKEUP) {
		__atomic_fetch_add(&h->sq_wake.v, 1, __ATOMIC_RELEASE);
		syscall(SYS_futex, &h->sq_wake.v, FUTEX_WAKE, 1, NULL, NULL, 0);
		return !(f & AIDOS_RING_CROWDED);   /* spin long for the answer unless cores are scarce */
	}
	return 0;
}

/* Waits for the completion of request ud (older ones are skipped),
 * spinning, then sleeping. expect_ns: this agent's average round trip on
 * this client (0: unknown, as for a ping). The spin is c->spin_ns, plus
 * IPC_WAKE_SPIN_US when woke > 0 (submit had to wake the poller, which
 * needs ~50 us to come back: sleeping before it answers would make it
 * wake us in turn, on every request), and at least twice expect_ns up to
 * that same bound (whether or not the node says it is crowded): a model
 * that outlasts the plain spin would otherwise cost a wake-up (~50 us
 * here) on every request, more when the cores are busy; a longer spin
 * holds a core another thread of the request may need. An
 * answer expected beyond FAR_SPINS spins is waited for asleep from the
 * start: spinning for it would only take a core from the node's
 * higher-priority work; the node wakes us (one FUTEX_WAKE, paid by a
 * request that long anyway). */
static int wait_cqe(aidos_client *c, uint64_t ud, aidos_cqe *out, int woke, uint64_t expect_ns)
{
	const int far = expect_ns > FAR_SPINS * c->spin_ns;
	const uint64_t cap = c->spin_ns + IPC_WAKE_SPIN_US * 1000ull;
	uint64_t spin = woke > 0 ? cap : c->spin_ns;
	if (far)
		spin = 0;
	else if (2 * expect_ns > spin)
		spin = 2 * expect_ns < cap ? 2 * expect_ns : cap;
	c->far_waits += far != 0;
	aidos_ring_hdr *h = c->hdr;
	uint64_t t0 = 0, tp = 0;   /* spin start; when the node took the request */
	/* A poller we woke needs a wake-up (~50 us) to take the request; a
	 * spinning one takes it within a microsecond, so 20 us without it
	 * means it is not running. */
	const uint64_t pickup = woke > 0 ? IPC_PICKUP_NS : IPC_PICKUP_NS / 5;
	unsigned n = 0;
	for (;;) {
		/* acquire: pairs with the node's release of cq_tail, so the
		 * completion and the outputs it wrote are visible. */
		uint32_t tail = __atomic_load_n(&h->cq_tail.v, __ATOMIC_ACQUIRE);
		while (c->cq_head != tail) {
			const aidos_cqe *e = &c->cq[c->cq_head & (c->cq_entries - 1)];
			uint64_t eud = e->user_data;
			if (eud == ud)
				memcpy(out, e, e->res ? sizeof *e : offsetof(aidos_cqe, msg));
			c->cq_head++;
			/* release: our reads of the slot are done before the
			 * node may overwrite it. */
			__atomic_store_n(&h->cq_head.v, c->cq_head, __ATOMIC_RELEASE);
			if (eud == ud) {
				out->msg[sizeof out->msg - 1] = 0;
				return 0;
			}
		}
		if (spin) {
			cpu_relax();
			if ((++n & 63) != 0)
				continue;
			uint64_t now = mono_ns();
			if (!t0)
				t0 = now;
			/* Once the node has taken the request, the answer is due
			 * within the run's own time: the rest of a spin sized for
			 * a poller's wake-up is not spent on it (a poller
			 * preempted mid-run is not helped by our holding a core). */
			if (!tp && __atomic_load_n(&h->sq_head.v, __ATOMIC_ACQUIRE) == c->sq_tail) {
				tp = now;
				uint64_t run = 2 * expect_ns > c->spin_ns ? 2 * expect_ns : c->spin_ns;
				if (now - t0 + run < spin)
					spin = now - t0 + run;
			}
			/* The node has not taken our request after `pickup`: its
			 * poller is not running, perhaps waiting for this very
			 * core (woken beside us), and spinning on would hold the
			 * core until our time slice ends (tails of ~0.3-1.4 ms
			 * under load). Sleep instead; the node wakes us. (Not
			 * sched_yield: with SCHED_IDLE threads of lower classes
			 * here it hands them the core until the next tick.) */
			if (now - t0 < spin && (now - t0 < pickup || tp))
				continue;
		}
		/* Sleep until the node bumps cq_wake. */
		uint32_t w = __atomic_load_n(&h->cq_wake.v, __ATOMIC_ACQUIRE);
		__atomic_store_n(&h->client_flags.v, AIDOS_RING_CQ_WAITING, __ATOMIC_RELAXED);
		/* Full barrier between announcing the wait and re-reading
		 * cq_tail; pairs with the node's barrier after publishing it. */
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		if (__atomic_load_n(&h->cq_tail.v, __ATOMIC_ACQUIRE) == c->cq_head) {
			struct timespec ts = { 0, 100 * 1000000L };
			syscall(SYS_futex, &h->cq_wake.v, FUTEX_WAIT, w, &ts, NULL, 0);
			if (__atomic_load_n(&h->cq_tail.v, __ATOMIC_ACQUIRE) == c->cq_head && node_gone(c)) {
				__atomic_store_n(&h->client_flags.v, 0, __ATOMIC_RELAXED);
				c->dead = 1;
				return -EPIPE;
			}
		}
		__atomic_store_n(&h->client_flags.v, 0, __ATOMIC_RELAXED);
	}
}

int aidos_client_ping(aidos_client *c, uint64_t *rtt_ns)
{
	if (c->dead)
		return -EPIPE;
	aidos_sqe s;
	aidos_cqe e;
	memset(&s, 0, offsetof(aidos_sqe, in));
	s.op = AIDOS_RING_OP_NOP;
	s.user_data = c->next_ud++;
	uint64_t t0 = rtt_ns ? mono_ns() : 0;
	int rc = submit(c, &s);
	if (rc >= 0)
		rc = wait_cqe(c, s.user_data, &e, rc, 0);
	if (rtt_ns)
		*rtt_ns = mono_ns() - t0;
	return rc ? rc : e.res;
}

/* Test hooks (node/ipc.h): a raw descriptor, and a tail jump. */
int ipc_client_raw(aidos_client *c, aidos_sqe *s, aidos_cqe *e)
{
	s->user_data = c->next_ud++;
	int rc = submit(c, s);
	return rc < 0 ? rc : wait_cqe(c, s->user_data, e, rc, 0);
}

uint64_t ipc_client_far_waits(const aidos_client *c)
{
	return c->far_waits;
}

int ipc_client_jump(aidos_client *c, uint32_t by, aidos_cqe *e)
{
	c->sq_tail += by;
	c->sq_head_seen = c->sq_tail;   /* the node resynchronises at our tail */
	__atomic_store_n(&c->hdr->sq_tail.v, c->sq_tail, __ATOMIC_RELEASE);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	__atomic_fetch_add(&c->hdr->sq_wake.v, 1, __ATOMIC_RELEASE);
	syscall(SYS_futex, &c->hdr->sq_wake.v, FUTEX_WAKE, 1, NULL, NULL, 0);
	return wait_cqe(c, 0, e, 1, 0);
}

/* ---- infer ---- */

/* Drops the cached handle of agent name and frees its output area. */
static void forget_agent(aidos_client *c, const char *name)
{
	for (int i = 0; i < c->na; i++) {
		if (strcmp(c->ag[i].name, name))
			continue;
		if (c->ag[i].out_cap)
			heap_free(c, c->ag[i].out_off);
		pool_free(c->ag[i].io);
		c->ag[i] = c->ag[--c->na];
		return;
	}
}

/* The cached handle of agent name, opened on the control socket on first
 * use. Errors: the node's (AIDOS_E_NOTFOUND), AIDOS_E_RANGE, -EPIPE. */
static int open_agent(aidos_client *c, const char *name, agent_ent **out, char *err, size_t errlen)
{
	for (int i = 0; i < c->na; i++)
		if (!strcmp(c->ag[i].name, name)) {
			*out = &c->ag[i];
			return 0;
		}
	if (c->na == MAX_AGENTS)
		return fail(err, errlen, AIDOS_E_RANGE, "this client has %d agents open (the limit)", MAX_AGENTS);
	char nm[AIDOS_IPC_NAME];
	memset(nm, 0, sizeof nm);
	if (strlen(name) >= sizeof nm)
		return fail(err, errlen, AIDOS_E_INVALID, "invalid agent name '%.64s'", name);
	strcpy(nm, name);
	uint8_t *rep;
	uint32_t rlen;
	int rc = call(c, AIDOS_IPC_OPEN, nm, sizeof nm, &rep, &rlen, NULL, err, errlen);
	if (rc)
		return rc;
	aidos_ipc_open_rep r;
	if (rlen < sizeof r || (memcpy(&r, rep, sizeof r), r.nin > AIDOS_RING_MAX_TENSORS) ||
	    r.nout > AIDOS_RING_MAX_OUT || rlen != sizeof r + (r.nin + r.nout) * sizeof(aidos_ipc_io)) {
		pool_free(rep);
		return fail(err, errlen, AIDOS_E_INVALID, "malformed open reply");
	}
	agent_ent *a = &c->ag[c->na];
	memset(a, 0, sizeof *a);
	a->io = pool_malloc((r.nin + r.nout + 1) * sizeof(aidos_ipc_io));
	if (!a->io) {
		pool_free(rep);
		return fail(err, errlen, AIDOS_E_NOMEM, "out of memory");
	}
	memcpy(a->io, rep + sizeof r, (r.nin + r.nout) * sizeof(aidos_ipc_io));
	for (uint32_t i = 0; i < r.nin + r.nout; i++)
		a->io[i].name[sizeof a->io[i].name - 1] = 0;
	pool_free(rep);
	strcpy(a->name, nm);
	a->handle = r.handle;
	a->nin = (int)r.nin;
	a->nout = (int)r.nout;
	c->na++;
	*out = a;
	return 0;
}

/* A first guess of the output area: the fixed dims (symbolic ones as 1). */
static uint64_t out_guess(const agent_ent *a)
{
	uint64_t n = (uint64_t)a->nout * sizeof(aidos_ring_out);
	for (int i = 0; i < a->nout; i++) {
		const aidos_ipc_io *o = &a->io[a->nin + i];
		uint64_t b = aidos_ring_dtype_size(o->dtype) ? aidos_ring_dtype_size(o->dtype) : 8;
		for (int d = 0; d < o->rank && d < AIDOS_MAX_RANK; d++)
			if (o->dims[d] > 0 && b < (1ull << 40))
				b *= (uint64_t)o->dims[d];
		n += pool_align_up(b, AIDOS_RING_ALIGN) + AIDOS_RING_ALIGN;
	}
	return n < 4096 ? 4096 : n;
}

int aidos_client_infer(aidos_client *c, const char *agent, int nin, const aidos_tensor *in, int *nout,
		       aidos_tensor *out, int max_out, char *err, size_t errlen)
{
	agent_ent *a = NULL;
	aidos_sqe s;
	aidos_cqe e;
	uint64_t tmp[AIDOS_RING_MAX_TENSORS];
	int ntmp = 0, rc, reopened = 0;

	*nout = 0;
	if (nin < 0 || nin > AIDOS_RING_MAX_TENSORS)
		return fail(err, errlen, AIDOS_E_INVALID, "%d inputs (max %d)", nin, AIDOS_RING_MAX_TENSORS);
again:
	if ((rc = open_agent(c, agent, &a, err, errlen)))
		return rc;
	memset(&s, 0, offsetof(aidos_sqe, in));
	s.op = AIDOS_RING_OP_INFER;
	s.agent = a->handle;
	s.nin = (uint32_t)nin;
	for (int i = 0; i < nin; i++) {
		const aidos_tensor *t = &in[i];
		aidos_ring_tensor *rt = &s.in[i];
		int j;
		for (j = 0; j < a->nin; j++)
			if (t->name && !strcmp(a->io[j].name, t->name))
				break;
		if (j == a->nin) {
			rc = fail(err, errlen, AIDOS_E_INVALID, "agent %s has no input '%s'", agent,
				  t->name ? t->name : "(null)");
			goto out;
		}
		uint64_t bytes;
		if (dense_bytes(t, &bytes)) {
			rc = fail(err, errlen, AIDOS_E_INVALID, "input '%s': bad dtype, rank or dims", t->name);
			goto out;
		}
		memset(rt, 0, sizeof *rt);
		rt->index = (uint32_t)j;
		rt->dtype = t->dtype;
		rt->rank = t->rank;
		rt->len = bytes;
		for (int d = 0; d < t->rank; d++)
			rt->dims[d] = t->dims[d];
		const uint8_t *p = t->data;
		if (p >= c->heap && p + bytes <= c->heap + c->heap_bytes && (uint64_t)(p - c->heap) % AIDOS_RING_ALIGN == 0) {
			rt->off = (uint64_t)(p - c->heap);   /* in place: no copy */
		} else {
			if (heap_alloc(c, bytes, &tmp[ntmp])) {
				rc = fail(err, errlen, AIDOS_E_NOMEM, "input '%s': %llu bytes do not fit the shared heap",
					  t->name, (unsigned long long)bytes);
				goto out;
			}
			rt->off = tmp[ntmp++];
			if (bytes)
				memcpy(c->heap + rt->off, p, bytes);
		}
	}
	for (int tries = 0;; tries++) {
		if (!a->out_cap) {
			uint64_t want = out_guess(a);
			if (heap_alloc(c, want, &a->out_off)) {
				rc = fail(err, errlen, AIDOS_E_NOMEM, "agent %s: %llu bytes of outputs do not fit the heap",
					  agent, (unsigned long long)want);
				goto out;
			}
			a->out_cap = want;
		}
		s.out_off = a->out_off;
		s.out_len = a->out_cap;
		s.deadline_ns = c->deadline_rel ? mono_ns() + c->deadline_rel : 0;
		s.user_data = c->next_ud++;
		uint64_t t0 = mono_ns();
		if ((rc = submit(c, &s)) < 0 || (rc = wait_cqe(c, s.user_data, &e, rc, a->rtt_ns))) {
			fail(err, errlen, rc, "the node at %s went away", c->path);
			goto out;
		}
		if (!e.res) {
			uint64_t rtt = mono_ns() - t0;
			a->rtt_ns = a->rtt_ns ? a->rtt_ns - a->rtt_ns / 8 + rtt / 8 : rtt;
		}
		if (e.res == -ENOBUFS && tries < 2 && e.out_len > a->out_cap) {
			heap_free(c, a->out_off);
			uint64_t want = e.out_len;
			a->out_cap = 0;
			if (heap_alloc(c, want, &a->out_off)) {
				rc = fail(err, errlen, AIDOS_E_NOMEM, "agent %s: %llu bytes of outputs do not fit the heap",
					  agent, (unsigned long long)want);
				goto out;
			}
			a->out_cap = want;
			continue;
		}
		break;
	}
	if (e.res == AIDOS_E_NOTFOUND && !reopened) {
		/* The agent was killed (and maybe spawned again): open it anew. */
		forget_agent(c, agent);
		reopened = 1;
		for (int i = 0; i < ntmp; i++)
			heap_free(c, tmp[i]);
		ntmp = 0;
		goto again;
	}
	if (e.res) {
		rc = fail(err, errlen, e.res, "%s", e.msg);
		goto out;
	}
	if ((int)e.nout > max_out || e.nout != (uint32_t)a->nout) {
		rc = fail(err, errlen, AIDOS_E_RANGE, "agent %s gave %u outputs (room for %d)", agent, e.nout, max_out);
		goto out;
	}
	const aidos_ring_out *rec = (const aidos_ring_out *)(c->heap + a->out_off);
	for (uint32_t i = 0; i < e.nout; i++) {
		aidos_ring_out r;
		memcpy(&r, &rec[i], sizeof r);
		if (r.off < a->out_off || r.len > a->out_cap || r.off - a->out_off > a->out_cap - r.len ||
		    r.rank < 0 || r.rank > AIDOS_MAX_RANK) {
			rc = fail(err, errlen, AIDOS_E_INVALID, "agent %s: output record %u is malformed", agent, i);
			goto out;
		}
		aidos_tensor *o = &out[i];
		memset(o, 0, sizeof *o);
		o->name = a->io[a->nin + (int)i].name;
		o->dtype = r.dtype;
		o->rank = r.rank;
		for (int d = 0; d < r.rank; d++)
			o->dims[d] = r.dims[d];
		o->data = c->heap + r.off;
	}
	*nout = (int)e.nout;
	c->last_exec_ns = e.exec_ns;
	rc = 0;
out:
	for (int i = 0; i < ntmp; i++)
		heap_free(c, tmp[i]);
	return rc;
}
