/*
 * node/node_main.c - `aidos-node`: the node daemon (docs/cluster.md).
 *
 *   aidos-node --coord ADDR --name NAME --data-dir DIR [--listen ADDR]
 *              [--advertise ADDR] [--transport auto|verbs|ucx|tcp] [--heartbeat-ms N]
 *
 * Prints exactly one line on stdout, `aidos-node ready boot_ms=<x> name=<n>
 * rpc=<addr> transport=<name>`, once it serves (registered, agents
 * restored, heartbeat running); logs go to stderr with timestamps. boot_ms
 * counts from the top of main. SIGTERM or SIGINT: stop the data plane and
 * the RPC server, free everything, exit 0.
 */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aidos/aidos.h"
#include "node/node.h"

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: aidos-node --coord ADDR --name NAME --data-dir DIR [options]\n"
		"\n"
		"The aidos node daemon: registers with the coordinator, hosts agents (ONNX models run\n"
		"by the aidos executor), serves requests over UCX (the data plane) and gRPC (the\n"
		"aidos.Node service), exports and imports agent context for migration.\n"
		"\n"
		"  --coord ADDR         the coordinator's host:port (required)\n"
		"  --name NAME          this node's name, 1-63 of [A-Za-z0-9._-] (required)\n"
		"  --data-dir DIR       local state: DIR/agents/<agent>.ctx checkpoints (required)\n"
		"  --listen ADDR        host:port for the aidos.Node service (default 0.0.0.0:0, any port)\n"
		"  --advertise ADDR     host:port others use to reach it (default: the address this\n"
		"                       host uses towards the coordinator, with the bound port)\n"
		"  --transport T        auto: raw verbs when an RDMA device has an active port, else\n"
		"                       UCX's own choice, and without either no data plane (said so);\n"
		"                       verbs: raw verbs must start (AIDOS_RDMA_DEV/PORT/GID/MTU/IP);\n"
		"                       ucx: UCX must start; tcp: UCX restricted to TCP. Default auto.\n"
		"  --heartbeat-ms N     heartbeat period (default: what the coordinator asks, 250)\n"
		"  --workers N          data-plane worker threads (default min(4, cores))\n"
		"  --help               this text\n"
		"\n"
		"Prints 'aidos-node ready boot_ms=<x> name=<n> rpc=<addr> transport=<name>' on stdout\n"
		"when serving; logs to stderr. SIGTERM stops it cleanly. Exit status: 0 after SIGTERM,\n"
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
	node_opts o = { .t0_ms = t0 };
	char err[1024];
	uint64_t v;

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
		if (!strcmp(a, "--coord"))
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
			if (strcmp(val, "auto") && strcmp(val, "verbs") && strcmp(val, "ucx") && strcmp(val, "tcp"))
				return usage_err("--transport takes auto, verbs, ucx or tcp, not", val);
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
	if (!o.coord)
		return usage_err("--coord ADDR is required", NULL);
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

	int rc = node_start(n, err, sizeof err);
	if (rc == -ECANCELED) {
		node_destroy(n);
		return 0;
	}
	if (rc) {
		fprintf(stderr, "aidos-node: %s\n", err);
		node_destroy(n);
		return 1;
	}
	const char *tname;
	node_transport(n, &tname, NULL);
	printf("aidos-node ready boot_ms=%.1f name=%s rpc=%s transport=%s\n", now_ms() - t0, o.name,
	       node_rpc_addr(n), tname);
	fflush(stdout);

	while (sem_wait(&stop_sem) && errno == EINTR)
		;
	double t1 = now_ms();
	node_destroy(n);
	fprintf(stderr, "aidos-node: stopped in %.1f ms\n", now_ms() - t1);
	return 0;
}
