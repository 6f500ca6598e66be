/*
 * bench/rebalance_load.c - a load generator that follows its agent: the
 * client of bench/rebalance.sh (and tests/rebalance.sh).
 *
 *   rebalance_load COORD AGENT SECONDS PERIOD_MS OUT.tsv K=F.npy ...
 *
 * Sends requests to AGENT over the data plane (UCX, as aidosctl infer does)
 * for SECONDS: one at a time, back to back when PERIOD_MS is 0 (saturating
 * load), else one every PERIOD_MS (a latency probe). When the agent moves
 * (NOT_FOUND, a redirect, a transport error) it resolves it again and
 * reconnects, as clients must (docs/cluster.md), and counts a re-route.
 * Writes one line per answered request to OUT.tsv: "t_ms<TAB>rtt_ms<TAB>node"
 * (t_ms since start), and prints {"agent","requests","reroutes","errors"}.
 * SIGTERM or SIGINT stops it early, cleanly (the file is complete).
 * Exit status 0, 1 when no request at all succeeded, 2 on usage.
 */
#include <errno.h>
#include <signal.h>
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


/* SIGTERM/SIGINT end the run cleanly: OUT.tsv is complete up to the stop. */
static volatile sig_atomic_t stop;
static void on_stop(int sig)
{
	(void)sig;
	stop = 1;
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void sleep_ms(double ms)
{
	if (ms <= 0)
		return;
	struct timespec ts = { (time_t)(ms / 1000), (long)((ms - (double)(time_t)(ms / 1000) * 1000) * 1e6) };
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

typedef struct conn {
	xport *x;
	xport_ep *ep;
	char node[64];
} conn;

static void conn_close(conn *c)
{
	if (c->ep)
		xport_disconnect(c->x, c->ep);
	c->ep = NULL;
}

/* Resolves agent and connects to its node. 0 or -1 (message in err). */
static int conn_open(conn *c, rpc_client *rc, const char *agent, char *err, size_t errlen)
{
	Aidos__ResolveRequest rq = AIDOS__RESOLVE_REQUEST__INIT;
	Aidos__ResolveReply *rr = NULL;
	rq.agent = (char *)agent;
	if (rpc_call(rc, "/aidos.Coordinator/Resolve", &rq.base, &aidos__resolve_reply__descriptor,
		     (ProtobufCMessage **)&rr, 3000, err, errlen))
		return -1;
	int r = -1;
	if (!rr->node || !rr->node->ucx_address.len) {
		snprintf(err, errlen, "no transport address");
	} else if (!c->x) {
		snprintf(err, errlen, "no transport");
	} else if (xport_connect(c->x, rr->node->ucx_address.data, rr->node->ucx_address.len, &c->ep)) {
		snprintf(err, errlen, "connect to %s failed", rr->node->name);
	} else {
		snprintf(c->node, sizeof c->node, "%s", rr->node->name);
		r = 0;
	}
	protobuf_c_message_free_unpacked(&rr->base, NULL);
	return r;
}

int main(int argc, char **argv)
{
	if (argc < 7 || !strcmp(argv[1], "--help")) {
		fprintf(argc < 7 ? stderr : stdout,
			"usage: rebalance_load COORD AGENT SECONDS PERIOD_MS OUT.tsv K=F.npy ...\n"
			"Sends requests to AGENT for SECONDS (back to back with PERIOD_MS 0), following it\n"
			"when it moves; writes t_ms, rtt_ms, node per request to OUT.tsv.\n");
		return argc < 7 ? 2 : 0;
	}
	const char *coord = argv[1], *agent = argv[2], *out = argv[5];
	double secs = atof(argv[3]), period = atof(argv[4]);
	int nin = argc - 6;
	char **kv = argv + 6;
	wire_inputs in;
	char err[1024];
	int bad = wire_inputs_load("rebalance_load", &in, nin, kv);
	if (bad) {
		wire_inputs_free(&in);
		return bad;
	}
	FILE *f = fopen(out, "w");
	if (!f)
		return fprintf(stderr, "rebalance_load: %s: %s\n", out, strerror(errno)), 1;
	rpc_client *rc;
	if (rpc_client_create(coord, &rc))
		return fprintf(stderr, "rebalance_load: bad coordinator address '%s'\n", coord), 2;
	if (!getenv("UCX_LOG_LEVEL"))
		ucs_global_opts_set_value("LOG_LEVEL", "fatal");
	conn c = { 0 };
	xport_opts xo = { 0 };
	if (!getenv("UCX_TLS"))
		xo.tls = "tcp";
	if (xport_create(&xo, &c.x, err, sizeof err))
		return fprintf(stderr, "rebalance_load: transport: %s\n", err), 1;
	const void *me;
	size_t melen;
	xport_address(c.x, &me, &melen);
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
	if (!sbuf || !rbuf)
		return fprintf(stderr, "rebalance_load: out of memory\n"), 1;
	long ok = 0, reroutes = 0, errors = 0;
	uint64_t id = 0;
	double t0 = now_ms(), next = t0;
	struct sigaction sa = { 0 };
	sa.sa_handler = on_stop;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	while (!stop && now_ms() - t0 < secs * 1000) {
		if (period > 0) {
			sleep_ms(next - now_ms());
			next += period;
		}
		if (!c.ep) {
			if (conn_open(&c, rc, agent, err, sizeof err)) {
				errors++;
				sleep_ms(50);
				continue;
			}
		}
		ir.request_id = ++id;
		size_t len = protobuf_c_message_pack(&tr.base, sbuf);
		double s = now_ms();
		int r = xport_tag_send(c.x, c.ep, aidos_wire_req_tag(cid), sbuf, len, 5000);
		Aidos__TransportReply *rep = NULL;
		while (!r) {
			size_t got = 0;
			r = xport_tag_recv(c.x, aidos_wire_reply_tag(cid), ~0ull, rbuf, AIDOS_WIRE_MAX_MSG, &got, NULL,
					   10000);
			if (r)
				break;
			rep = aidos__transport_reply__unpack(NULL, got, rbuf);
			if (!rep) {
				r = -1;
				break;
			}
			if (rep->request_id == ir.request_id)
				break;
			protobuf_c_message_free_unpacked(&rep->base, NULL);
			rep = NULL;
		}
		double dt = now_ms() - s;
		if (r || !rep || rep->status || !rep->reply || (rep->reply->redirect_node && rep->reply->redirect_node[0])) {
			/* moved (or going): find it again */
			if (rep)
				protobuf_c_message_free_unpacked(&rep->base, NULL);
			conn_close(&c);
			reroutes++;
			sleep_ms(20);
			continue;
		}
		protobuf_c_message_free_unpacked(&rep->base, NULL);
		fprintf(f, "%.3f\t%.4f\t%s\n", s - t0, dt, c.node);
		ok++;
	}
	fclose(f);
	printf("{\"agent\":\"%s\",\"requests\":%ld,\"reroutes\":%ld,\"errors\":%ld}\n", agent, ok, reroutes, errors);
	conn_close(&c);
	xport_destroy(c.x);
	free(sbuf);
	free(rbuf);
	rpc_client_destroy(rc);
	wire_inputs_free(&in);
	return ok ? 0 : 1;
}
