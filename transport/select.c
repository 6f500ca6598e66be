/*
 * transport/select.c - the transport.h calls, dispatched to the handle's
 * backend (transport/ucx.c, transport/verbs.c), and the choice of backend.
 *
 * The choice is made once, when a node starts, and is always reported:
 * xport_open_auto() writes which backend it opened and why (which RDMA
 * device it found or why none qualified, what verbs said when it failed),
 * and the node publishes that text in NodeInfo.transport_reason. A fallback
 * from verbs to UCX is therefore visible in `aidosctl nodes`; UCX in turn
 * names the transports it uses (tcp, rc_verbs, ...) through xport_describe.
 */
#include <stdio.h>
#include <string.h>

#include "transport/transport.h"

int xport_create(const xport_opts *o, xport **out, char *err, size_t errlen)
{
	return xport_ucx->create(o, out, err, errlen);
}

void xport_destroy(xport *x)
{
	if (x)
		x->ops->destroy(x);
}

const char *xport_backend(const xport *x) { return x->ops->name; }

void xport_describe(const xport *x, const char **name, const char **reason)
{
	x->ops->describe(x, name, reason);
}

int xport_address(const xport *x, const void **addr, size_t *len) { return x->ops->address(x, addr, len); }

int xport_connect(xport *x, const void *addr, size_t len, xport_ep **out)
{
	return x->ops->connect(x, addr, len, out);
}

void xport_disconnect(xport *x, xport_ep *ep)
{
	if (ep)
		x->ops->disconnect(x, ep);
}

int xport_ep_status(const xport_ep *ep) { return ep->ops->ep_status(ep); }
const char *xport_ep_describe(const xport_ep *ep) { return ep->ops->ep_describe(ep); }

int xport_mem_register(xport *x, void *p, size_t len, xport_mem **out)
{
	return x->ops->mem_register(x, p, len, out);
}

int xport_mem_rkey(const xport_mem *m, const void **rkey, size_t *len) { return m->ops->mem_rkey(m, rkey, len); }

void xport_mem_release(xport *x, xport_mem *m)
{
	if (m)
		x->ops->mem_release(x, m);
}

int xport_get(xport *x, xport_ep *ep, void *local, size_t len, uint64_t remote_addr, const void *rkey,
	      size_t rkey_len, int timeout_ms)
{
	return x->ops->get(x, ep, local, len, remote_addr, rkey, rkey_len, timeout_ms);
}

int xport_put(xport *x, xport_ep *ep, const void *local, size_t len, uint64_t remote_addr, const void *rkey,
	      size_t rkey_len, int timeout_ms)
{
	return x->ops->put(x, ep, local, len, remote_addr, rkey, rkey_len, timeout_ms);
}

int xport_put_post(xport *x, xport_ep *ep, const void *local, size_t len, uint64_t remote_addr, const void *rkey,
		   size_t rkey_len, int timeout_ms, xport_op *op)
{
	return x->ops->put_post(x, ep, local, len, remote_addr, rkey, rkey_len, timeout_ms, op);
}

int xport_op_wait(xport *x, xport_op *op, int timeout_ms)
{
	return x->ops->op_wait(x, op, timeout_ms);
}

int xport_tag_send(xport *x, xport_ep *ep, uint64_t tag, const void *buf, size_t len, int timeout_ms)
{
	return x->ops->tag_send(x, ep, tag, buf, len, timeout_ms);
}

int xport_tag_recv(xport *x, uint64_t want, uint64_t mask, void *buf, size_t cap, size_t *len, uint64_t *got_tag,
		   int timeout_ms)
{
	return x->ops->tag_recv(x, want, mask, buf, cap, len, got_tag, timeout_ms);
}

int xport_open(const char *kind, const xport_opts *o, xport **out, char *err, size_t errlen)
{
	xport_opts t = { 0 };

	*out = NULL;
	if (o)
		t = *o;
	if (!kind || !strcmp(kind, "ucx"))
		return xport_ucx->create(o, out, err, errlen);
	if (!strcmp(kind, "tcp")) {
		t.tls = "tcp";
		return xport_ucx->create(&t, out, err, errlen);
	}
	if (!strcmp(kind, "verbs"))
		return xport_verbs->create(o, out, err, errlen);
	if (err && errlen)
		snprintf(err, errlen, "unknown transport '%s': want verbs, ucx or tcp", kind);
	return AIDOS_E_INVALID;
}

int xport_open_auto(const char *want, const xport_opts *o, xport **out, char *why, size_t whylen, char *err,
		    size_t errlen)
{
	char dev[256], verr[512] = "";
	int rc;

	*out = NULL;
	if (!want)
		want = "auto";
	if (strcmp(want, "auto")) {
		if ((rc = xport_open(want, o, out, err, errlen)))
			return rc;
		snprintf(why, whylen, "--transport %s (%s)", want,
			 !strcmp(want, "tcp") ? "UCX over TCP" : !strcmp(want, "ucx") ? "UCX required" : "raw verbs required");
		return 0;
	}
	/* auto: verbs when a device has an active port, then UCX. */
	if (xport_verbs_probe(dev, sizeof dev)) {
		if (!(rc = xport_verbs->create(o, out, verr, sizeof verr))) {
			snprintf(why, whylen, "--transport auto (RDMA device %s active: raw verbs)", dev);
			return 0;
		}
		snprintf(dev + strlen(dev), sizeof dev - strlen(dev), " is active but verbs failed: %.200s", verr);
	}
	if ((rc = xport_ucx->create(o, out, err, errlen)))
		return rc;
	snprintf(why, whylen, "--transport auto (verbs not used: %s; UCX's choice)", dev);
	return 0;
}
