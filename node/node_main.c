/*
 * node/node_main.c - `aidos-node`: the node daemon (docs/cluster.md,
 * docs/architecture.md "The node").
 *
 *   aidos-node --name NAME --data-dir DIR [--coord ADDR] [--config FILE]
 *              [--socket PATH] [--listen ADDR] [--advertise ADDR]
 *              [--transport auto|verbs|ucx|tcp|none] [--heartbeat-ms N] ...
 *
 * Boot (DESIGN.md): config -> HAL probe -> transport -> pools and
 * dispatcher workers -> store and configured agents (standalone) ->
 * endpoints -> registration and the agents the coordinator lists (with
 * --coord) -> ready. Prints exactly one line on stdout, `aidos-node ready
 * boot_ms=<x> name=<n> agents=<k> rpc=<addr> transport=<name>
 * socket=<path>`, once it serves; logs go to stderr with timestamps.
 * boot_ms counts from the top of main. SIGTERM or SIGINT: stop the
 * endpoints and the workers, save stateful agents' checkpoints
 * (standalone), free everything, exit 0.
 */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "aidos/aidos.h"
#include "node/node.h"
#include "node/store.h"
#include "aidos/client.h"  /* --socket: local clients */
#include "node/ipc.h"

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: aidos-node --name NAME --data-dir DIR [--coord ADDR] [options]\n"
		"\n"
		"The aidos node daemon: hosts agents (ONNX models run by the aidos executor) in\n"
		"per-agent memory pools, runs their requests through a priority/deadline dispatcher,\n"
		"serves local clients on a unix socket, and with a coordinator registers, serves\n"
		"requests over UCX (the data plane) and gRPC (the aidos.Node service) and exports and\n"
		"imports agent context for migration. Without --coord it runs standalone.\n"
		"\n"
		"  --config FILE        key = value lines (name, coord, data_dir, listen, advertise,\n"
		"                       transport, socket, workers, run_workers, heartbeat_ms, pin) and\n"
		"                       'agent NAME model=PATH [priority=P] [quota=BYTES[K|M|G]]\n"
		"                       [deadline_ms=D] [device=cpu] [stateful=1] [state=IN:OUT,...]\n"
		"                       [batch=N]' lines to spawn at boot (batch: fuse up to N queued\n"
		"                       requests along dim 0; standalone only: a coordinator places\n"
		"                       agents itself); options given here override the file\n"
		"  --coord ADDR         the coordinator's host:port (default: none, standalone)\n"
		"  --name NAME          this node's name, 1-63 of [A-Za-z0-9._-] (required)\n"
		"  --data-dir DIR       local state: DIR/agents/<agent>.agent (agents spawned here,\n"
		"                       restored by a standalone node), DIR/agents/<agent>.ctx\n"
		"                       checkpoints (required)\n"
		"  --socket PATH        unix socket for local clients (default: $AIDOS_SOCKET)\n"
		"  --listen ADDR        host:port for the aidos.Node service (default 0.0.0.0:0, any port;\n"
		"                       standalone: no Node service unless given)\n"
		"  --advertise ADDR     host:port others use to reach it (default: the address this\n"
		"                       host uses towards the coordinator, with the bound port)\n"
		"  --transport T        auto: raw verbs when an RDMA device has an active port, else\n"
		"                       UCX's own choice, and without either no data plane (said so);\n"
		"                       verbs: raw verbs must start (AIDOS_RDMA_DEV/PORT/GID/MTU/IP);\n"
		"                       ucx: UCX must start; tcp: UCX restricted to TCP; none: no data plane. Default\n"
		"                       auto with --coord, none standalone.\n"
		"  --heartbeat-ms N     heartbeat period (default: what the coordinator asks, 250)\n"
		"  --workers N          data-plane worker threads (default min(4, cores))\n"
		"  --run-workers N      dispatcher workers that run agents (default: cores)\n"
		"  --pin 0|1            pin dispatcher workers to cores (default 1)\n"
		"  --rt-prio N          run the worker kept for the top priority class SCHED_FIFO at N\n"
		"                       (1..99; needs CAP_SYS_NICE; default 0: a normal thread)\n"
		"  --help               this text\n"
		"\n"
		"Prints 'aidos-node ready boot_ms=<x> name=<n> agents=<k> rpc=<addr> transport=<name>\n"
		"socket=<path>' on stdout when serving; logs to stderr. SIGTERM stops it cleanly. Exit status: 0 after SIGTERM,\n"
		"1 on a start failure, 2 on a usage error.\n");
}

static int usage_err(const char *msg, const char *arg)
{
	fprintf(stderr, "aidos-node: %s%s%s (see 'aidos-node --help')\n", msg, arg ? " " : "", arg ? arg : "");
	return 2;
}

static int parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

/* systemd's readiness protocol (sd_notify(3)), without libsystemd: one
 * datagram to $NOTIFY_SOCKET ('@' = abstract namespace). No-op outside
 * systemd. */
static void notify(const char *msg)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t len = path ? strlen(path) : 0;
	if (!len || len >= sizeof sa.sun_path || (path[0] != '/' && path[0] != '@'))
		return;
	memcpy(sa.sun_path, path, len);
	if (sa.sun_path[0] == '@')
		sa.sun_path[0] = 0;
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa,
		   (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) < 0)
		fprintf(stderr, "aidos-node: cannot notify systemd: %s\n", strerror(errno));
	close(fd);
}

static sem_t stop_sem;
static node *the_node;

/* Waits for SIGTERM/SIGINT (blocked in every other thread), then stops. */
static void *signal_main(void *arg)
{
	sigset_t *set = arg;
	int sig = 0;
	while (sigwait(set, &sig) == EINTR)
		;
	fprintf(stderr, "aidos-node: %s received, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
	node_stop(__atomic_load_n(&the_node, __ATOMIC_ACQUIRE));
	sem_post(&stop_sem);
	return NULL;
}

int main(int argc, char **argv)
{
	double t0 = now_ms();   /* boot_ms counts from here */
	node_opts o = { .t0_ms = t0, .pin = -1 };
	node_config cfg = { 0 };
	const char *config = NULL;
	const char *sock;   /* local clients (node/ipc.h): o.socket */
	char err[1024];
	uint64_t v;
	int rc;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		}
		if (!strcmp(a, "--version")) {
			printf("aidos-node %s\n", AIDOS_VERSION);
			return 0;
		}
		if (i + 1 >= argc)
			return usage_err(a[0] == '-' ? "missing value for" : "unexpected argument", a);
		const char *val = argv[++i];
		if (!strcmp(a, "--config"))
			config = val;
		else if (!strcmp(a, "--socket"))
			o.socket = val;
		else if (!strcmp(a, "--run-workers")) {
			if (parse_u64(val, 1, 64, &v))
				return usage_err("--run-workers takes 1..64, not", val);
			o.run_workers = (int)v;
		} else if (!strcmp(a, "--rt-prio")) {
			if (parse_u64(val, 0, 99, &v))
				return usage_err("--rt-prio takes 0..99, not", val);
			o.rt_prio = (int)v;
		} else if (!strcmp(a, "--pin")) {
			if (parse_u64(val, 0, 1, &v))
				return usage_err("--pin takes 0 or 1, not", val);
			o.pin = (int)v;
		} else if (!strcmp(a, "--coord"))
			o.coord = val;
		else if (!strcmp(a, "--name"))
			o.name = val;
		else if (!strcmp(a, "--data-dir"))
			o.data_dir = val;
		else if (!strcmp(a, "--listen"))
			o.listen = val;
		else if (!strcmp(a, "--advertise"))
			o.advertise = val;
		else if (!strcmp(a, "--transport")) {
			if (strcmp(val, "auto") && strcmp(val, "verbs") && strcmp(val, "ucx") && strcmp(val, "tcp") &&
			    strcmp(val, "none"))
				return usage_err("--transport takes auto, verbs, ucx, tcp or none, not", val);
			o.transport = val;
		} else if (!strcmp(a, "--heartbeat-ms")) {
			if (parse_u64(val, 10, 60000, &v))
				return usage_err("--heartbeat-ms takes 10..60000, not", val);
			o.heartbeat_ms = v;
		} else if (!strcmp(a, "--workers")) {
			if (parse_u64(val, 1, 64, &v))
				return usage_err("--workers takes 1..64, not", val);
			o.workers = (int)v;
		} else {
			return usage_err("unknown option", a);
		}
	}
	/* The config file fills what the command line left out. */
	if (config) {
		if ((rc = node_config_load(config, &cfg, err, sizeof err))) {
			fprintf(stderr, "aidos-node: %s\n", err);
			return 2;
		}
#define CFG(f) if (!o.f) o.f = cfg.f
		CFG(name);
		CFG(coord);
		CFG(data_dir);
		CFG(listen);
		CFG(advertise);
		CFG(socket);
		CFG(transport);
		CFG(workers);
		CFG(run_workers);
		CFG(heartbeat_ms);
#undef CFG
		if (o.pin < 0)
			o.pin = cfg.pin;
		o.n_boot_agents = cfg.n_agents;
		if (cfg.n_agents) {
			static node_spawn_spec *specs;
			specs = calloc((size_t)cfg.n_agents, sizeof *specs);
			if (!specs) {
				fprintf(stderr, "aidos-node: out of memory\n");
				return 1;
			}
			for (int i = 0; i < cfg.n_agents; i++)
				specs[i] = cfg.agents[i].s;
			o.boot_agents = specs;
		}
	}
	if (!o.socket) {
		const char *env = getenv("AIDOS_SOCKET");
		if (env && *env)
			o.socket = env;
	}
	sock = o.socket;
	if (o.pin < 0)
		o.pin = 1;
	if (!o.name)
		return usage_err("--name NAME is required", NULL);
	if (!o.data_dir)
		return usage_err("--data-dir DIR is required", NULL);

	/* Every thread started from here on inherits the blocked set; only
	 * signal_main takes these signals. */
	static sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	sem_init(&stop_sem, 0, 0);

	node *n;
	if (node_create(&o, &n, err, sizeof err)) {
		fprintf(stderr, "aidos-node: %s\n", err);
		node_config_fini(&cfg);
		return 1;
	}
	__atomic_store_n(&the_node, n, __ATOMIC_RELEASE);
	pthread_t sig_thread;
	if (pthread_create(&sig_thread, NULL, signal_main, &set)) {
		fprintf(stderr, "aidos-node: cannot start the signal thread\n");
		node_destroy(n);
		return 1;
	}
	pthread_detach(sig_thread);

	rc = node_start(n, err, sizeof err);
	free((void *)o.boot_agents);
	node_config_fini(&cfg);   /* the agents are spawned: the specs are no longer needed */
	if (rc == -ECANCELED) {
		node_destroy(n);
		return 0;
	}
	if (rc) {
		fprintf(stderr, "aidos-node: %s\n", err);
		node_destroy(n);
		return 1;
	}
	/* ---- local clients (node/ipc.h) ---- */
	ipc_node *ipcn = NULL;
	ipc_server *ipcs = NULL;
	if (sock && *sock) {
		char def[256];
		ipc_ops ops;
		ipc_opts io = { .path = strcmp(sock, "default") ? sock : aidos_client_default_socket(def, sizeof def) };
		if (ipc_node_create(n, &ipcn, err, sizeof err) ||
		    (ipc_node_ops(ipcn, &ops), ipc_server_create(&io, &ops, &ipcs, err, sizeof err)) ||
		    ipc_server_start(ipcs, err, sizeof err)) {
			fprintf(stderr, "aidos-node: local clients: %s\n", err);
			ipc_server_destroy(ipcs);
			ipc_node_destroy(ipcn);
			node_destroy(n);
			return 1;
		}
		fprintf(stderr, "aidos-node: local clients on %s\n", ipc_server_path(ipcs));
	}
	/* ---- */
	const char *tname;
	node_transport(n, &tname, NULL);
	node_stat st;
	node_stats(n, &st);
	printf("aidos-node ready boot_ms=%.1f name=%s agents=%d rpc=%s transport=%s socket=%s\n", now_ms() - t0,
	       node_name(n), st.agents, node_rpc_addr(n), tname, node_socket(n) ? node_socket(n) : "none");
	fflush(stdout);
	notify("READY=1");

	while (sem_wait(&stop_sem) && errno == EINTR)
		;
	notify("STOPPING=1");
	double t1 = now_ms();
	ipc_server_destroy(ipcs);   /* local clients first: they hold agents */
	ipc_node_destroy(ipcn);
	node_destroy(n);
	fprintf(stderr, "aidos-node: stopped in %.1f ms\n", now_ms() - t1);
	return 0;
}
