/*
 * coordinator/coord_main.c - `aidos-coord`: the cluster coordinator (node
 * registry with leases, placement, migration, agent directory, persisted
 * cluster state). The logic is coordinator/coord.c; this file parses
 * options, waits for SIGTERM/SIGINT and shuts down cleanly.
 *
 *   aidos-coord --listen ADDR --data-dir DIR [--heartbeat-ms 250]
 *               [--lease-ms 1000] [--json-log]
 *
 * Prints exactly one line on stdout, `aidos-coord ready boot_ms=<x>
 * listen=<host:port>`, once it serves; everything else goes to stderr.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "aidos/aidos.h"
#include "coordinator/coord.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: aidos-coord --listen ADDR --data-dir DIR [options]\n"
		"\n"
		"The aidos cluster coordinator: node registry and failure detection, agent\n"
		"placement, migration and directory; state persisted in DIR/cluster.pb.\n"
		"\n"
		"  --listen ADDR        host:port to serve the Coordinator service on (port 0: any)\n"
		"  --data-dir DIR       where cluster.pb lives (created if missing)\n"
		"  --heartbeat-ms N     heartbeat period asked of nodes (default 250)\n"
		"  --lease-ms N         a node silent this long is declared dead (default 1000)\n"
		"  --rebalance on|off   move load off overloaded nodes automatically (default on;\n"
		"                       docs/scheduling.md)\n"
		"  --rebalance-ms N     period of the rebalancer's checks (default 1000)\n"
		"  --json-log           log lines on stderr as JSON objects\n"
		"  --help               this text\n"
		"\n"
		"Prints 'aidos-coord ready boot_ms=<x> listen=<host:port>' on stdout when serving;\n"
		"SIGTERM or SIGINT shuts down cleanly. Exit status: 0 after a clean shutdown,\n"
		"1 on a start failure, 2 on a usage error.\n");
}

static int usage_err(const char *fmt, const char *arg)
{
	fprintf(stderr, "aidos-coord: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, " (see 'aidos-coord --help')\n");
	return 2;
}

static int parse_ms(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || end == s || *s == '-' || v < 1 || v > 3600000ull)
		return -1;
	*out = v;
	return 0;
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
	double t0 = now_ms();
	const char *listen = NULL, *dir = NULL;
	coord_opts o = { 0 };
	char err[512], host[256];
	coord *c;
	int port = 0, rc, sig;
	sigset_t set;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(a, "--version")) {
			printf("aidos-coord %s\n", AIDOS_VERSION);
			return 0;
		} else if (!strcmp(a, "--json-log")) {
			o.json_log = 1;
		} else if (!strcmp(a, "--listen") || !strcmp(a, "--data-dir") || !strcmp(a, "--heartbeat-ms") ||
			   !strcmp(a, "--lease-ms") || !strcmp(a, "--rebalance") || !strcmp(a, "--rebalance-ms")) {
			if (!v)
				return usage_err("%s needs a value", a);
			i++;
			if (!strcmp(a, "--listen"))
				listen = v;
			else if (!strcmp(a, "--data-dir"))
				dir = v;
			else if (!strcmp(a, "--rebalance")) {
				if (strcmp(v, "on") && strcmp(v, "off"))
					return usage_err("--rebalance takes on or off, not '%s'", v);
				o.rebalance = !strcmp(v, "off") ? COORD_REBALANCE_OFF : COORD_REBALANCE_ON;
			} else if (!strcmp(a, "--rebalance-ms")) {
				if (parse_ms(v, &o.rebalance_ms))
					return usage_err("bad value '%s': milliseconds in 1..3600000", v);
			}
			else if (parse_ms(v, !strcmp(a, "--lease-ms") ? &o.lease_ms : &o.heartbeat_ms))
				return usage_err("bad value '%s': milliseconds in 1..3600000", v);
		} else {
			return usage_err("unknown option '%s'", a);
		}
	}
	if (!listen)
		return usage_err("%s is required", "--listen ADDR");
	if (!dir)
		return usage_err("%s is required", "--data-dir DIR");
	o.data_dir = dir;

	/* Signals go to one thread (this one, in sigwait); every thread made
	 * from here on inherits the mask. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	if ((rc = coord_create(&o, &c, err, sizeof err))) {
		coord_log(NULL, COORD_LOG_ERROR, "%s", err);
		return 1;
	}
	if ((rc = coord_listen(c, listen, 8, &port, err, sizeof err))) {
		coord_log(c, COORD_LOG_ERROR, "%s", err);
		coord_destroy(c);
		return 1;
	}
	if ((rc = coord_start(c))) {
		coord_log(c, COORD_LOG_ERROR, "cannot start threads: %s", aidos_strerror(rc));
		coord_destroy(c);
		return 1;
	}
	/* host part of ADDR, port as bound (ADDR may say :0) */
	snprintf(host, sizeof host, "%s", listen);
	char *colon = strrchr(host, ':');
	if (colon)
		*colon = 0;
	if (!strncmp(listen, "unix:", 5))
		printf("aidos-coord ready boot_ms=%.1f listen=%s\n", now_ms() - t0, listen);
	else
		printf("aidos-coord ready boot_ms=%.1f listen=%s:%d\n", now_ms() - t0, host, port);
	fflush(stdout);
	coord_log(c, COORD_LOG_INFO,
		  "serving on %s (heartbeat %" PRIu64 " ms, lease %" PRIu64 " ms, rebalance %s, data %s)", listen,
		  o.heartbeat_ms ? o.heartbeat_ms : 250, o.lease_ms ? o.lease_ms : 1000,
		  o.rebalance == COORD_REBALANCE_OFF ? "off" : "on", dir);

	do {
		rc = sigwait(&set, &sig);
	} while (rc == EINTR);
	coord_log(c, COORD_LOG_INFO, "%s received, shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
	coord_destroy(c);
	return 0;
}
