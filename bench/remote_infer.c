/*
 * bench/remote_infer.c - a persistent cluster client for bench/cluster.sh:
 * what `aidosctl infer` costs once the connection exists, and what the
 * coordinator's placement costs without a CLI process around it.
 *
 *   remote_infer infer COORD AGENT N K=F.npy ...   N requests on one endpoint
 *   remote_infer place COORD MODEL N [NODE]        N x (Place + Kill)
 *
 * infer: resolves AGENT once, opens one UCX worker and one endpoint to its
 * node (UCX over TCP unless UCX_TLS says otherwise, as aidosctl does for a
 * ucx:tcp node), sends 5 warm-up requests, then N timed requests, each one
 * TransportRequest tag message and its TransportReply (node/wire.h), one at
 * a time. Prints one JSON object: round-trip median / p90 / p99 / mean /
 * min / max in ms, the node's own execution time (median), the transport.
 *
 * place: N times Coordinator.Place of agent "bench-place-<i>" (MODEL,
 * pinned to NODE when given) then Coordinator.Kill of it, over one gRPC
 * channel; prints the medians and p99 of both calls in ms.
 *
 * Exit status 0, 1 on any failed request (its error on stderr), 2 on usage.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ucs/config/global_opts.h>

#include "aidos/aidos.h"
#include "node/wire.h"
#include "proto/aidos.pb-c.h"
#include "proto/rpc.h"
#include "transport/transport.h"
#include "bench/wire_inputs.h"

#define WARMUP 5

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Sorts v and returns the q-quantile (nearest rank). */
static double quant(double *v, int n, double q)
{
	int k = (int)(q * n + 0.999999) - 1;
	if (k < 0)
		k = 0;
	if (k >= n)
		k = n - 1;
	return v[k];
}

static void stats(const char *key, double *v, int n)
{
	double sum = 0;
	qsort(v, (size_t)n, sizeof *v, cmp_d);
	for (int i = 0; i < n; i++)
		sum += v[i];
	printf("\"%s\":{\"median_ms\":%.4f,\"p90_ms\":%.4f,\"p99_ms\":%.4f,\"mean_ms\":%.4f,\"min_ms\":%.4f,"
	       "\"max_ms\":%.4f}",
	       key, quant(v, n, 0.5), quant(v, n, 0.9), quant(v, n, 0.99), sum / n, v[0], v[n - 1]);
}

static int cmd_infer(const char *coord, const char *agent, int n, int nin, char **kv)
{
	wire_inputs in;
	char err[1024];
	rpc_client *c;
	Aidos__ResolveRequest rq = AIDOS__RESOLVE_REQUEST__INIT;
	Aidos__ResolveReply *rr = NULL;
	xport *x = NULL;
	xport_ep *ep = NULL;
	int rc;

	if ((rc = wire_inputs_load("remote_infer", &in, nin, kv))) {
		wire_inputs_free(&in);
		return rc;
	}
	if (rpc_client_create(coord, &c))
		return fprintf(stderr, "remote_infer: bad coordinator address '%s'\n", coord), 2;
	rq.agent = (char *)agent;
	if ((rc = rpc_call(c, "/aidos.Coordinator/Resolve", &rq.base, &aidos__resolve_reply__descriptor,
			   (ProtobufCMessage **)&rr, 3000, err, sizeof err)))
		return fprintf(stderr, "remote_infer: resolve %s: %s\n", agent, err), 1;
	if (!rr->node || !rr->node->ucx_address.len)
		return fprintf(stderr, "remote_infer: agent %s: its node publishes no transport address\n", agent), 1;
	if (!getenv("UCX_LOG_LEVEL"))
		ucs_global_opts_set_value("LOG_LEVEL", "fatal");
	xport_opts xo = { 0 };
	if (!getenv("UCX_TLS") && !strcmp(rr->node->transport, "ucx:tcp"))
		xo.tls = "tcp";
	if ((rc = xport_create(&xo, &x, err, sizeof err)))
		return fprintf(stderr, "remote_infer: transport: %s\n", err), 1;
	double t_setup = now_ms();
	if ((rc = xport_connect(x, rr->node->ucx_address.data, rr->node->ucx_address.len, &ep)))
		return fprintf(stderr, "remote_infer: connect to %s: %s\n", rr->node->name, aidos_strerror(rc)), 1;

	const void *me;
	size_t melen;
	xport_address(x, &me, &melen);
	uint64_t cid = aidos_wire_client_id();
	Aidos__TransportHello h = AIDOS__TRANSPORT_HELLO__INIT;
	Aidos__InferRequest ir = AIDOS__INFER_REQUEST__INIT;
	Aidos__TransportRequest tr = AIDOS__TRANSPORT_REQUEST__INIT;
	h.ucx_address.data = (uint8_t *)me;
	h.ucx_address.len = melen;
	h.client_id = cid;
	ir.agent = (char *)agent;
	ir.n_inputs = (size_t)nin;
	ir.inputs = in.pbp;
	tr.from = &h;
	tr.req = &ir;
	size_t cap = protobuf_c_message_get_packed_size(&tr.base) + 16;
	uint8_t *sbuf = malloc(cap), *rbuf = malloc(AIDOS_WIRE_MAX_MSG);
	double *rt = calloc((size_t)n, sizeof *rt), *ex = calloc((size_t)n, sizeof *ex);
	double first_ms = 0;
	if (!sbuf || !rbuf || !rt || !ex)
		return fprintf(stderr, "remote_infer: out of memory\n"), 1;
	for (int i = -WARMUP; i < n; i++) {
		ir.request_id = (uint64_t)(i + WARMUP + 1);
		size_t len = protobuf_c_message_pack(&tr.base, sbuf);
		double t0 = now_ms();
		if ((rc = xport_tag_send(x, ep, aidos_wire_req_tag(cid), sbuf, len, 10000)))
			return fprintf(stderr, "remote_infer: send: %s\n", aidos_strerror(rc)), 1;
		Aidos__TransportReply *rep = NULL;
		for (;;) {
			size_t got = 0;
			if ((rc = xport_tag_recv(x, aidos_wire_reply_tag(cid), ~0ull, rbuf, AIDOS_WIRE_MAX_MSG, &got, NULL,
						 30000)))
				return fprintf(stderr, "remote_infer: reply: %s\n", aidos_strerror(rc)), 1;
			rep = aidos__transport_reply__unpack(NULL, got, rbuf);
			if (!rep)
				return fprintf(stderr, "remote_infer: malformed reply (%zu bytes)\n", got), 1;
			if (rep->request_id == ir.request_id)
				break;
			protobuf_c_message_free_unpacked(&rep->base, NULL);
		}
		double dt = now_ms() - t0;
		if (rep->status || !rep->reply)
			return fprintf(stderr, "remote_infer: %s: %s\n", agent, rep->error[0] ? rep->error : "failed"), 1;
		if (i == -WARMUP)
			first_ms = now_ms() - t_setup;
		if (i >= 0) {
			rt[i] = dt;
			ex[i] = rep->reply->exec_ms;
		}
		protobuf_c_message_free_unpacked(&rep->base, NULL);
	}
	const char *xname = "?";
	xport_describe(x, &xname, NULL);
	printf("{\"agent\":\"%s\",\"node\":\"%s\",\"transport\":\"%s\",\"lanes\":\"%s\",\"n\":%d,"
	       "\"first_request_ms\":%.4f,",
	       agent, rr->node->name, xname, xport_ep_describe(ep), n, first_ms);
	stats("round_trip", rt, n);
	putchar(',');
	stats("exec", ex, n);
	printf("}\n");
	free(sbuf);
	free(rbuf);
	free(rt);
	free(ex);
	xport_disconnect(x, ep);
	xport_destroy(x);
	protobuf_c_message_free_unpacked(&rr->base, NULL);
	rpc_client_destroy(c);
	wire_inputs_free(&in);
	return 0;
}

static int cmd_place(const char *coord, const char *model, int n, const char *node)
{
	rpc_client *c;
	char err[1024], path[PATH_MAX], name[64];
	double *pl = calloc((size_t)n, sizeof *pl), *kl = calloc((size_t)n, sizeof *kl);
	if (!pl || !kl)
		return fprintf(stderr, "remote_infer: out of memory\n"), 1;
	if (!realpath(model, path))
		return fprintf(stderr, "remote_infer: %s: %s\n", model, strerror(errno)), 1;
	if (rpc_client_create(coord, &c))
		return fprintf(stderr, "remote_infer: bad coordinator address '%s'\n", coord), 2;
	for (int i = 0; i < n; i++) {
		Aidos__PlaceRequest pq = AIDOS__PLACE_REQUEST__INIT;
		Aidos__AgentInfo ai = AIDOS__AGENT_INFO__INIT;
		Aidos__KillRequest kq = AIDOS__KILL_REQUEST__INIT;
		ProtobufCMessage *r = NULL;
		snprintf(name, sizeof name, "bench-place-%d", i);
		ai.name = name;
		ai.model_path = path;
		ai.priority = 1;
		ai.device = "cpu";
		ai.pinned_node = (char *)(node ? node : "");
		ai.mem_bytes = 64ull << 20;
		pq.agent = &ai;
		double t0 = now_ms();
		if (rpc_call(c, "/aidos.Coordinator/Place", &pq.base, &aidos__place_reply__descriptor, &r, 20000, err,
			     sizeof err))
			return fprintf(stderr, "remote_infer: place %s: %s\n", name, err), 1;
		pl[i] = now_ms() - t0;
		protobuf_c_message_free_unpacked(r, NULL);
		kq.agent = name;
		t0 = now_ms();
		if (rpc_call(c, "/aidos.Coordinator/Kill", &kq.base, &aidos__kill_reply__descriptor, &r, 10000, err,
			     sizeof err))
			return fprintf(stderr, "remote_infer: kill %s: %s\n", name, err), 1;
		kl[i] = now_ms() - t0;
		protobuf_c_message_free_unpacked(r, NULL);
	}
	printf("{\"n\":%d,\"model\":\"%s\",\"node\":\"%s\",", n, path, node ? node : "");
	stats("place", pl, n);
	putchar(',');
	stats("kill", kl, n);
	printf("}\n");
	rpc_client_destroy(c);
	free(pl);
	free(kl);
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 5 && !strcmp(argv[1], "infer")) {
		int n = atoi(argv[4]);
		if (n < 1 || n > 10000000)
			return fprintf(stderr, "remote_infer: N must be 1..10000000\n"), 2;
		return cmd_infer(argv[2], argv[3], n, argc - 5, argv + 5);
	}
	if ((argc == 5 || argc == 6) && !strcmp(argv[1], "place")) {
		int n = atoi(argv[4]);
		if (n < 1 || n > 100000)
			return fprintf(stderr, "remote_infer: N must be 1..100000\n"), 2;
		return cmd_place(argv[2], argv[3], n, argc == 6 ? argv[5] : NULL);
	}
	fprintf(stderr, "usage: remote_infer infer COORD AGENT N K=F.npy ... | place COORD MODEL N [NODE]\n");
	return 2;
}
