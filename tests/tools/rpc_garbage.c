/*
 * tests/tools/rpc_garbage.c - malformed protocol messages for the cluster
 * integration test (tests/cluster.sh, check 6). Built by that script with
 * cc against BUILD/libaidos.a; not part of the library.
 *
 *   rpc_garbage grpc ADDR coord|node    raw gRPC garbage to every method
 *   rpc_garbage semantic NODE_ADDR [COORD [VAD_V5.onnx]]
 *                                       well-formed but wrong Node requests
 *   rpc_garbage ucx COORD AGENT         garbage tag messages to AGENT's node
 *
 * grpc: for every method of the service (and an unknown one) sends bytes
 * that cannot parse as any protobuf message (a length-delimited field that
 * runs past the end; an over-long varint; field number 0) and one seeded
 * random blob, as raw gRPC messages (grpc core directly, no protobuf-c on
 * our side). A malformed message must be answered with a non-OK status and
 * a non-empty message; the random blob must be answered at all (it may
 * happen to parse). A call the server never answers (UNAVAILABLE,
 * DEADLINE_EXCEEDED) fails the case: the daemon died or hung.
 *
 * semantic: Node.Spawn of a model that does not exist, Node.ImportContext
 * (of Silero v5's 1 KiB state, so the layout check passes) from a garbage
 * address, from another node's live worker with a garbage rkey (that node
 * found through COORD), with a wrong and a huge length, Node.Infer with a tensor whose data does
 * not match its shape, Node.ExportContext of an unknown agent: each must
 * fail with a message.
 *
 * ucx: resolves AGENT, connects to its node's UCX worker and sends tag
 * messages: random bytes, an empty message, a TransportRequest whose reply
 * address is garbage, one with a wrong tag kind, one over
 * AIDOS_WIRE_MAX_MSG (with AIDOS_GARBAGE_BIG=1 only: 64 MiB), then requests
 * that parse but are wrong (an unknown agent, a tensor whose data does not
 * match its shape, an unknown input): each of those must come back as an
 * error reply with a message. The first kind has no address to answer: the
 * node drops them (its log says so) and must keep serving, which the
 * script checks with a real request afterwards.
 *
 * Prints one line per case, "ok|BAD <case>: <what came back>", and exits 0
 * when every case is ok, 1 otherwise, 2 on a usage error.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/grpc.h>
#include <grpc/byte_buffer.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <ucs/config/global_opts.h>

#include "aidos/aidos.h"
#include "node/wire.h"
#include "proto/aidos.pb-c.h"
#include "proto/rpc.h"
#include "transport/transport.h"

static int bad_cases;

static void report(int ok, const char *what, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void report(int ok, const char *what, const char *fmt, ...)
{
	char msg[600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	for (char *p = msg; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	printf("%s %s: %s\n", ok ? "ok " : "BAD", what, msg);
	fflush(stdout);
	if (!ok)
		bad_cases++;
}

/* ---- raw gRPC ---- */

/* One unary call of `method` carrying `len` raw bytes. *status and details
 * (one line) on an answer; returns -1 when the core could not run the call. */
static int raw_call(grpc_channel *ch, const char *method, const void *buf, size_t len, int deadline_ms,
		    grpc_status_code *status, char *details, size_t dlen)
{
	grpc_slice sl = grpc_slice_from_copied_buffer(buf, len);
	grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&sl, 1), *recv = NULL;
	grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
	grpc_slice ms = grpc_slice_from_copied_string(method), det = grpc_empty_slice();
	gpr_timespec dl = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis(deadline_ms, GPR_TIMESPAN));
	grpc_call *call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, ms, NULL, dl, NULL);
	grpc_metadata_array mi, mt;
	grpc_op ops[6];
	int rc = -1;

	grpc_slice_unref(sl);
	grpc_slice_unref(ms);
	grpc_metadata_array_init(&mi);
	grpc_metadata_array_init(&mt);
	memset(ops, 0, sizeof ops);
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = send;
	ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[3].data.recv_initial_metadata.recv_initial_metadata = &mi;
	ops[4].op = GRPC_OP_RECV_MESSAGE;
	ops[4].data.recv_message.recv_message = &recv;
	ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[5].data.recv_status_on_client.trailing_metadata = &mt;
	ops[5].data.recv_status_on_client.status = status;
	ops[5].data.recv_status_on_client.status_details = &det;
	if (call && grpc_call_start_batch(call, ops, 6, call, NULL) == GRPC_CALL_OK) {
		grpc_event ev = grpc_completion_queue_pluck(cq, call, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
		if (ev.type == GRPC_OP_COMPLETE && ev.success) {
			snprintf(details, dlen, "%.*s", (int)GRPC_SLICE_LENGTH(det), (const char *)GRPC_SLICE_START_PTR(det));
			rc = 0;
		}
	}
	grpc_slice_unref(det);
	grpc_metadata_array_destroy(&mi);
	grpc_metadata_array_destroy(&mt);
	if (recv)
		grpc_byte_buffer_destroy(recv);
	grpc_byte_buffer_destroy(send);
	if (call)
		grpc_call_unref(call);
	grpc_completion_queue_shutdown(cq);
	grpc_completion_queue_destroy(cq);
	return rc;
}

static uint32_t rng = 0x9E3779B9u;
static uint32_t xorshift(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 17;
	rng ^= rng << 5;
	return rng;
}

static int cmd_grpc(const char *addr, const char *svc)
{
	static const char *const coord_m[] = { "RegisterNode", "Heartbeat", "Place", "Migrate", "Drain", "Kill",
					       "ListNodes", "ListAgents", "Resolve", "NoSuchMethod" };
	static const char *const node_m[] = { "Spawn", "Kill", "ExportContext", "ImportContext", "ReleaseContext",
					      "Infer", "Status", "NoSuchMethod" };
	/* Bytes no protobuf message parses. */
	static const uint8_t past_end[] = { 0x0a, 0xff, 0xff, 0xff, 0x0f, 'x' };   /* field 1, 4 GiB long */
	static const uint8_t long_varint[] = { 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
					       0xff, 0xff, 0xff, 0xff, 0xff, 0x01 };      /* 12-byte varint */
	static const uint8_t field_zero[] = { 0x00, 0x01 };                            /* field number 0 */
	static const struct { const char *name; const uint8_t *p; size_t n; } mal[] = {
		{ "length past the end", past_end, sizeof past_end },
		{ "over-long varint", long_varint, sizeof long_varint },
		{ "field number 0", field_zero, sizeof field_zero },
	};
	const char *const *ms;
	int nm;
	const char *service;
	if (!strcmp(svc, "coord")) {
		ms = coord_m, nm = (int)(sizeof coord_m / sizeof *coord_m), service = "aidos.Coordinator";
	} else if (!strcmp(svc, "node")) {
		ms = node_m, nm = (int)(sizeof node_m / sizeof *node_m), service = "aidos.Node";
	} else {
		fprintf(stderr, "rpc_garbage: grpc: service is coord or node, not '%s'\n", svc);
		return 2;
	}
	grpc_init();
	grpc_channel_credentials *cr = grpc_insecure_credentials_create();
	grpc_channel *ch = grpc_channel_create(addr, cr, NULL);
	grpc_channel_credentials_release(cr);
	uint8_t blob[4096];
	for (size_t i = 0; i < sizeof blob; i++)
		blob[i] = (uint8_t)xorshift();
	for (int m = 0; m < nm; m++) {
		char path[128], what[256], det[512];
		grpc_status_code st;
		snprintf(path, sizeof path, "/%s/%s", service, ms[m]);
		for (size_t k = 0; k < sizeof mal / sizeof *mal; k++) {
			snprintf(what, sizeof what, "%s %s", path, mal[k].name);
			if (raw_call(ch, path, mal[k].p, mal[k].n, 3000, &st, det, sizeof det))
				report(0, what, "the gRPC core could not complete the call");
			else
				report(st != GRPC_STATUS_OK && st != GRPC_STATUS_UNAVAILABLE &&
				       st != GRPC_STATUS_DEADLINE_EXCEEDED && det[0],
				       what, "%s: %s", rpc_status_name(st), det[0] ? det : "(no message)");
		}
		snprintf(what, sizeof what, "%s random 4 KiB", path);
		if (raw_call(ch, path, blob, sizeof blob, 3000, &st, det, sizeof det))
			report(0, what, "the gRPC core could not complete the call");
		else
			report(st != GRPC_STATUS_UNAVAILABLE && st != GRPC_STATUS_DEADLINE_EXCEEDED &&
			       (st == GRPC_STATUS_OK || det[0]),
			       what, "%s: %s", rpc_status_name(st), det[0] ? det : "(no message)");
	}
	grpc_channel_destroy(ch);
	grpc_shutdown();
	return bad_cases ? 1 : 0;
}

/* ---- well-formed but wrong Node requests ---- */

static void expect_fail(rpc_client *c, const char *what, const char *method, const ProtobufCMessage *req,
			const ProtobufCMessageDescriptor *rd)
{
	ProtobufCMessage *resp = NULL;
	char err[600];
	int rc = rpc_call(c, method, req, rd, &resp, 8000, err, sizeof err);
	if (!rc) {
		protobuf_c_message_free_unpacked(resp, NULL);
		report(0, what, "succeeded");
		return;
	}
	report(rc != -ECONNREFUSED && rc != -ETIMEDOUT && err[0], what, "%s (%s)", err, aidos_strerror(rc));
}

static int cmd_semantic(const char *addr, const char *coord, const char *vad_model)
{
	rpc_client *c, *cc = NULL;
	Aidos__ListNodesReply *nl = NULL;
	const void *peer_addr = NULL;
	size_t peer_len = 0;
	if (rpc_client_create(addr, &c)) {
		fprintf(stderr, "rpc_garbage: bad address '%s'\n", addr);
		return 2;
	}
	if (coord && !rpc_client_create(coord, &cc)) {   /* another node's worker address */
		Aidos__ListNodesRequest lq = AIDOS__LIST_NODES_REQUEST__INIT;
		char err[600];
		if (!rpc_call(cc, "/aidos.Coordinator/ListNodes", &lq.base, &aidos__list_nodes_reply__descriptor,
			      (ProtobufCMessage **)&nl, 3000, err, sizeof err))
			for (size_t i = 0; i < nl->n_nodes; i++)
				if (strcmp(nl->nodes[i]->rpc_addr, addr) && nl->nodes[i]->ucx_address.len &&
				    nl->nodes[i]->state == AIDOS__NODE_STATE__NODE_READY) {
					peer_addr = nl->nodes[i]->ucx_address.data;
					peer_len = nl->nodes[i]->ucx_address.len;
					break;
				}
	}
	{
		Aidos__SpawnRequest q = AIDOS__SPAWN_REQUEST__INIT;
		Aidos__AgentInfo ai = AIDOS__AGENT_INFO__INIT;
		ai.name = "garbage-spawn";
		ai.model_path = "/nonexistent/model.onnx";
		ai.device = "cpu";
		q.agent = &ai;
		expect_fail(c, "Node.Spawn missing model", "/aidos.Node/Spawn", &q.base, &aidos__spawn_reply__descriptor);
		ai.name = "../../etc";
		expect_fail(c, "Node.Spawn bad name", "/aidos.Node/Spawn", &q.base, &aidos__spawn_reply__descriptor);
	}
	{
		/* Silero v5's state: [2, 1, 128] float32, 1024 bytes, so the
		 * layout check passes and the node really tries the source. */
		Aidos__ImportContextRequest q = AIDOS__IMPORT_CONTEXT_REQUEST__INIT;
		Aidos__AgentInfo ai = AIDOS__AGENT_INFO__INIT;
		Aidos__ExportContextReply f = AIDOS__EXPORT_CONTEXT_REPLY__INIT;
		Aidos__Tensor lay = AIDOS__TENSOR__INIT, *layp = &lay;
		int64_t ldims[3] = { 2, 1, 128 };
		uint8_t junk[64];
		for (size_t i = 0; i < sizeof junk; i++)
			junk[i] = (uint8_t)xorshift();
		lay.name = "state";
		lay.dtype = AIDOS_DT_FLOAT;
		lay.n_dims = 3;
		lay.dims = ldims;
		ai.name = "garbage-import";
		ai.model_path = (char *)(vad_model ? vad_model : "/nonexistent/model.onnx");
		ai.device = "cpu";
		ai.stateful = 1;
		f.ucx_address.data = junk;
		f.ucx_address.len = sizeof junk;
		f.rkey.data = junk;
		f.rkey.len = 32;
		f.remote_addr = 0x1000;
		f.length = 1024;
		f.n_layout = 1;
		f.layout = &layp;
		q.agent = &ai;
		q.from = &f;
		expect_fail(c, "Node.ImportContext garbage address", "/aidos.Node/ImportContext", &q.base,
			    &aidos__import_context_reply__descriptor);
		if (peer_addr && peer_len) {   /* a live worker, a garbage key */
			f.ucx_address.data = (uint8_t *)peer_addr;
			f.ucx_address.len = peer_len;
			expect_fail(c, "Node.ImportContext garbage rkey", "/aidos.Node/ImportContext", &q.base,
				    &aidos__import_context_reply__descriptor);
		}
		f.length = 2048;
		expect_fail(c, "Node.ImportContext wrong length", "/aidos.Node/ImportContext", &q.base,
			    &aidos__import_context_reply__descriptor);
		f.length = (uint64_t)1 << 62;
		expect_fail(c, "Node.ImportContext huge length", "/aidos.Node/ImportContext", &q.base,
			    &aidos__import_context_reply__descriptor);
	}
	{
		Aidos__InferRequest q = AIDOS__INFER_REQUEST__INIT;
		Aidos__Tensor t = AIDOS__TENSOR__INIT, *tp = &t;
		int64_t dims[2] = { 1, 1000000 };
		uint8_t data[16] = { 0 };
		t.name = "x";
		t.dtype = AIDOS_DT_FLOAT;
		t.n_dims = 2;
		t.dims = dims;
		t.data.data = data;
		t.data.len = sizeof data;
		q.agent = "no-such-agent-xyz";
		q.n_inputs = 1;
		q.inputs = &tp;
		expect_fail(c, "Node.Infer unknown agent", "/aidos.Node/Infer", &q.base, &aidos__infer_reply__descriptor);
	}
	{
		Aidos__ExportContextRequest q = AIDOS__EXPORT_CONTEXT_REQUEST__INIT;
		q.agent = "no-such-agent-xyz";
		q.freeze = 1;
		expect_fail(c, "Node.ExportContext unknown agent", "/aidos.Node/ExportContext", &q.base,
			    &aidos__export_context_reply__descriptor);
	}
	rpc_client_destroy(c);
	if (nl)
		protobuf_c_message_free_unpacked(&nl->base, NULL);
	rpc_client_destroy(cc);
	return bad_cases ? 1 : 0;
}

/* ---- UCX tag garbage ---- */

static int cmd_ucx(const char *coord, const char *agent)
{
	rpc_client *c;
	Aidos__ResolveRequest rq = AIDOS__RESOLVE_REQUEST__INIT;
	Aidos__ResolveReply *rr = NULL;
	char err[600];
	xport *x = NULL;
	xport_ep *ep = NULL;
	int rc;

	if (rpc_client_create(coord, &c)) {
		fprintf(stderr, "rpc_garbage: bad address '%s'\n", coord);
		return 2;
	}
	rq.agent = (char *)agent;
	if ((rc = rpc_call(c, "/aidos.Coordinator/Resolve", &rq.base, &aidos__resolve_reply__descriptor,
			   (ProtobufCMessage **)&rr, 3000, err, sizeof err)) || !rr->node) {
		fprintf(stderr, "rpc_garbage: resolve %s: %s\n", agent, rc ? err : "no node");
		return 1;
	}
	if (!getenv("UCX_LOG_LEVEL"))
		ucs_global_opts_set_value("LOG_LEVEL", "fatal");
	xport_opts xo = { .tls = getenv("UCX_TLS") ? NULL : "tcp" };
	if ((rc = xport_create(&xo, &x, err, sizeof err))) {
		fprintf(stderr, "rpc_garbage: transport: %s\n", err);
		return 1;
	}
	if ((rc = xport_connect(x, rr->node->ucx_address.data, rr->node->ucx_address.len, &ep))) {
		fprintf(stderr, "rpc_garbage: connect to node %s: %s\n", rr->node->name, aidos_strerror(rc));
		return 1;
	}
	printf("node %s (%s)\n", rr->node->name, rr->node->transport);
	uint64_t cid = aidos_wire_client_id();
	const void *me;
	size_t melen;
	xport_address(x, &me, &melen);
	uint8_t junk[4096];
	for (size_t i = 0; i < sizeof junk; i++)
		junk[i] = (uint8_t)xorshift();

	/* No address to answer: dropped by the node, which goes on. */
	rc = xport_tag_send(x, ep, aidos_wire_req_tag(cid), junk, sizeof junk, 3000);
	report(rc == 0, "ucx random 4 KiB", "%s", rc ? aidos_strerror(rc) : "sent (no reply possible)");
	rc = xport_tag_send(x, ep, aidos_wire_req_tag(cid), junk, 0, 3000);
	report(rc == 0, "ucx empty message", "%s", rc ? aidos_strerror(rc) : "sent (no reply possible)");
	rc = xport_tag_send(x, ep, 0xDEAD000000000000ull | cid, junk, 64, 3000);
	report(rc == 0, "ucx wrong tag kind", "%s", rc ? aidos_strerror(rc) : "sent (never matched)");
	{
		Aidos__TransportHello h = AIDOS__TRANSPORT_HELLO__INIT;
		Aidos__InferRequest ir = AIDOS__INFER_REQUEST__INIT;
		Aidos__TransportRequest tr = AIDOS__TRANSPORT_REQUEST__INIT;
		uint8_t buf[512];
		h.ucx_address.data = junk;
		h.ucx_address.len = 200;
		h.client_id = cid;
		ir.agent = (char *)agent;
		tr.from = &h;
		tr.req = &ir;
		size_t n = protobuf_c_message_pack(&tr.base, buf);
		rc = xport_tag_send(x, ep, aidos_wire_req_tag(cid), buf, n, 3000);
		report(rc == 0, "ucx garbage reply address", "%s", rc ? aidos_strerror(rc) : "sent (no reply possible)");
	}
	if (getenv("AIDOS_GARBAGE_BIG")) {
		size_t big = (size_t)AIDOS_WIRE_MAX_MSG + 1;
		uint8_t *p = calloc(1, big);
		rc = p ? xport_tag_send(x, ep, aidos_wire_req_tag(cid), p, big, 20000) : AIDOS_E_NOMEM;
		report(rc == 0, "ucx oversized message", "%s", rc ? aidos_strerror(rc) : "sent (dropped by the node)");
		free(p);
	}

	/* Parsable but wrong: must come back as an error reply. */
	uint8_t *rbuf = malloc(AIDOS_WIRE_MAX_MSG);
	for (int k = 0; k < 3 && rbuf; k++) {
		static const char *const what[] = { "ucx request for an unknown agent", "ucx tensor data != shape",
						    "ucx unknown input name" };
		Aidos__TransportHello h = AIDOS__TRANSPORT_HELLO__INIT;
		Aidos__InferRequest ir = AIDOS__INFER_REQUEST__INIT;
		Aidos__TransportRequest tr = AIDOS__TRANSPORT_REQUEST__INIT;
		Aidos__Tensor t = AIDOS__TENSOR__INIT, *tp = &t;
		int64_t dims[2] = { 1, 4 };
		float data[4] = { 0 };
		uint8_t buf[1024];
		h.ucx_address.data = (uint8_t *)me;
		h.ucx_address.len = melen;
		h.client_id = cid;
		ir.agent = (char *)(k == 0 ? "no-such-agent-xyz" : agent);
		ir.request_id = 1000 + (uint64_t)k;
		t.name = (char *)(k == 2 ? "no_such_input" : rr->agent && rr->agent->n_state ? "input" : "x");
		t.dtype = AIDOS_DT_FLOAT;
		t.n_dims = 2;
		t.dims = dims;
		t.data.data = (uint8_t *)data;
		t.data.len = k == 1 ? 12 : 16;   /* 3 floats for 4 elements */
		ir.n_inputs = 1;
		ir.inputs = &tp;
		tr.from = &h;
		tr.req = &ir;
		size_t n = protobuf_c_message_pack(&tr.base, buf);
		if ((rc = xport_tag_send(x, ep, aidos_wire_req_tag(cid), buf, n, 3000))) {
			report(0, what[k], "send failed: %s", aidos_strerror(rc));
			continue;
		}
		for (;;) {
			size_t got = 0;
			rc = xport_tag_recv(x, aidos_wire_reply_tag(cid), ~0ull, rbuf, AIDOS_WIRE_MAX_MSG, &got, NULL, 5000);
			if (rc) {
				report(0, what[k], "no reply: %s", aidos_strerror(rc));
				break;
			}
			Aidos__TransportReply *rep = aidos__transport_reply__unpack(NULL, got, rbuf);
			if (!rep) {
				report(0, what[k], "malformed reply (%zu bytes)", got);
				break;
			}
			if (rep->request_id != ir.request_id) {
				protobuf_c_message_free_unpacked(&rep->base, NULL);
				continue;
			}
			report(rep->status != 0 && rep->error[0], what[k], "status %d (%s): %s", rep->status,
			       aidos_strerror(rep->status), rep->error[0] ? rep->error : "(no message)");
			protobuf_c_message_free_unpacked(&rep->base, NULL);
			break;
		}
	}
	free(rbuf);
	xport_disconnect(x, ep);
	xport_destroy(x);
	protobuf_c_message_free_unpacked(&rr->base, NULL);
	rpc_client_destroy(c);
	return bad_cases ? 1 : 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 4 && !strcmp(argv[1], "grpc"))
		return cmd_grpc(argv[2], argv[3]);
	if (argc >= 3 && argc <= 5 && !strcmp(argv[1], "semantic"))
		return cmd_semantic(argv[2], argc > 3 ? argv[3] : NULL, argc > 4 ? argv[4] : NULL);
	if (argc == 4 && !strcmp(argv[1], "ucx"))
		return cmd_ucx(argv[2], argv[3]);
	fprintf(stderr, "usage: rpc_garbage grpc ADDR coord|node | semantic NODE_ADDR [COORD [VAD.onnx]] | ucx COORD AGENT\n");
	return 2;
}
