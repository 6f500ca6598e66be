/*
 * node/store.c - the node's own records in plain text: agent lines (the
 * store DATA_DIR/agents/NAME.agent that a restarted standalone node
 * restores, and the `agent` lines of a --config file) and the config file.
 *
 * One agent per line (agent lines), words separated by blanks:
 *   agent NAME model=PATH [priority=P] [quota=BYTES[K|M|G]] [deadline_ms=D]
 *         [device=cpu] [stateful=0|1] [state=IN:OUT,IN:OUT...] [batch=N]
 * Values are percent-encoded where they hold a blank, '%', ',', ':', '=' or
 * a control byte (%XX), so any path or tensor name round-trips. The config
 * file has `key = value` lines (name, coord, data_dir, listen, advertise,
 * transport, socket, workers, run_workers, heartbeat_ms, pin) and agent
 * lines; '#' starts a comment line. Errors name the line.
 *
 * The store is one file per agent, DATA_DIR/agents/NAME.agent, written on
 * a local spawn (temporary file + rename: a crash leaves it whole or
 * absent) and removed on a kill, so spawning or killing one of 4,096
 * agents costs one small file, not a rewrite of all. No fsync: a power
 * loss may forget the last spawns (the agents then simply are not
 * restored).
 */
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "node/node.h"
#include "node/store.h"
#include "pools/pools.h"

static int needs_escape(unsigned char c)
{
	return c <= 0x20 || c == 0x7f || c == '%' || c == ',' || c == ':' || c == '=' || c == '#';
}

/* Appends s percent-encoded; returns the new length (may exceed len). */
static size_t put_enc(char *buf, size_t len, size_t k, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (needs_escape(c)) {
			if (k + 3 < len) {
				buf[k] = '%';
				buf[k + 1] = hex[c >> 4];
				buf[k + 2] = hex[c & 15];
			}
			k += 3;
		} else {
			if (k + 1 < len)
				buf[k] = (char)c;
			k++;
		}
	}
	if (k < len)
		buf[k] = 0;
	return k;
}

static size_t put_raw(char *buf, size_t len, size_t k, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static size_t put_raw(char *buf, size_t len, size_t k, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int w = vsnprintf(k < len ? buf + k : NULL, k < len ? len - k : 0, fmt, ap);
	va_end(ap);
	return k + (size_t)(w > 0 ? w : 0);
}

int node_spec_format(const node_spawn_spec *s, char *buf, size_t len)
{
	size_t k = put_raw(buf, len, 0, "agent ");
	k = put_enc(buf, len, k, s->name);
	k = put_raw(buf, len, k, " model=");
	k = put_enc(buf, len, k, s->model_path);
	k = put_raw(buf, len, k, " priority=%d quota=%" PRIu64 " deadline_ms=%u device=", s->priority, s->quota,
		    s->deadline_ms);
	k = put_enc(buf, len, k, s->device && s->device[0] ? s->device : "cpu");
	k = put_raw(buf, len, k, " stateful=%d", s->stateful ? 1 : 0);
	if (s->batch_max > 1)
		k = put_raw(buf, len, k, " batch=%d", s->batch_max);
	for (int i = 0; i < s->n_ex; i++) {
		k = put_raw(buf, len, k, i ? "," : " state=");
		k = put_enc(buf, len, k, s->ex_in[i]);
		k = put_raw(buf, len, k, ":");
		k = put_enc(buf, len, k, s->ex_out[i]);
	}
	k = put_raw(buf, len, k, "\n");
	if (k >= len)
		return AIDOS_E_RANGE;
	return (int)k;
}

void node_spec_buf_fini(node_spec_buf *b)
{
	pool_free(b->model);
	for (int i = 0; i < b->s.n_ex; i++) {
		pool_free((char *)b->ex_in[i]);
		pool_free((char *)b->ex_out[i]);
	}
	memset(b, 0, sizeof *b);
}

static int hexv(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Decodes [s, e) into a pool string; NULL on a bad escape or no memory. */
static char *dec(const char *s, const char *e)
{
	char *d = pool_malloc((size_t)(e - s) + 1), *o = d;
	if (!d)
		return NULL;
	while (s < e) {
		if (*s == '%') {
			int h, l;
			if (e - s < 3 || (h = hexv(s[1])) < 0 || (l = hexv(s[2])) < 0 || (h == 0 && l == 0)) {
				pool_free(d);
				return NULL;
			}
			*o++ = (char)(h * 16 + l);
			s += 3;
		} else {
			*o++ = *s++;
		}
	}
	*o = 0;
	return d;
}

int node_parse_size(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	if (!s || !*s || *s == '-')
		return AIDOS_E_INVALID;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s)
		return AIDOS_E_INVALID;
	unsigned sh = 0;
	if (*end == 'K' || *end == 'k')
		sh = 10;
	else if (*end == 'M' || *end == 'm')
		sh = 20;
	else if (*end == 'G' || *end == 'g')
		sh = 30;
	if (sh)
		end++;
	if (*end == 'i' && sh)   /* KiB, MiB, GiB */
		end++;
	if ((*end == 'B' || *end == 'b') && sh)
		end++;
	if (*end || (sh && v > (UINT64_MAX >> sh)))
		return AIDOS_E_INVALID;
	*out = (uint64_t)v << sh;
	return 0;
}

static int parse_num(const char *v, long long lo, long long hi, long long *out)
{
	char *end;
	errno = 0;
	long long x = strtoll(v, &end, 10);
	if (errno || end == v || *end || x < lo || x > hi)
		return -1;
	*out = x;
	return 0;
}

int node_spec_parse(const char *line, node_spec_buf *b, char *err, size_t errlen)
{
	const char *p = line;
	long long x;
	memset(b, 0, sizeof *b);
	b->s.ex_in = b->ex_in;
	b->s.ex_out = b->ex_out;
	b->s.name = b->name;
	b->s.device = b->device;
	snprintf(b->device, sizeof b->device, "cpu");

	while (*p == ' ' || *p == '\t')
		p++;
	if (!strncmp(p, "agent", 5) && (p[5] == ' ' || p[5] == '\t'))
		p += 5;
	for (int word = 0;; word++) {
		while (*p == ' ' || *p == '\t')
			p++;
		if (!*p || *p == '\n' || *p == '\r')
			break;
		const char *s = p;
		while (*p && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
			p++;
		if (word == 0) {   /* the name */
			char *nm = dec(s, p);
			int ok = nm && node_name_valid(nm);
			if (ok)
				snprintf(b->name, sizeof b->name, "%s", nm);
			pool_free(nm);
			if (!ok) {
				snprintf(err, errlen, "invalid agent name '%.*s' (1-63 of [A-Za-z0-9._-])", (int)(p - s > 64 ? 64 : p - s), s);
				goto bad;
			}
			continue;
		}
		const char *eq = memchr(s, '=', (size_t)(p - s));
		if (!eq) {
			snprintf(err, errlen, "agent %s: '%.*s' is not key=value", b->name, (int)(p - s > 64 ? 64 : p - s), s);
			goto bad;
		}
		size_t kl = (size_t)(eq - s);
		char *v = dec(eq + 1, p);
		if (!v) {
			snprintf(err, errlen, "agent %s: bad %%-escape in '%.*s'", b->name, (int)(p - s > 64 ? 64 : p - s), s);
			goto bad;
		}
#define KEY(k) (kl == sizeof(k) - 1 && !memcmp(s, k, kl))
		int bad = 0;
		if (KEY("model")) {
			pool_free(b->model);
			b->model = v;
			v = NULL;
		} else if (KEY("priority")) {
			bad = parse_num(v, -1000000, 1000000, &x);
			b->s.priority = (int)x;
		} else if (KEY("quota")) {
			bad = node_parse_size(v, &b->s.quota) != 0;
		} else if (KEY("deadline_ms")) {
			bad = parse_num(v, 0, 86400000, &x);
			b->s.deadline_ms = (uint32_t)x;
		} else if (KEY("device")) {
			bad = strlen(v) >= sizeof b->device;
			if (!bad)
				snprintf(b->device, sizeof b->device, "%s", v);
		} else if (KEY("batch")) {
			bad = parse_num(v, 1, 8, &x);
			b->s.batch_max = (int)x;
		} else if (KEY("stateful")) {
			bad = parse_num(v, 0, 1, &x);
			b->s.stateful = (int)x;
		} else if (KEY("state")) {
			/* IN:OUT,IN:OUT in the raw (still escaped) text */
			const char *q = eq + 1;
			while (q < p && !bad) {
				const char *c = q, *colon = NULL;
				while (c < p && *c != ',') {
					if (*c == ':' && !colon)
						colon = c;
					c++;
				}
				if (!colon || colon == q || colon + 1 == c || b->s.n_ex >= NODE_MAX_STATE) {
					bad = 1;
					break;
				}
				b->ex_in[b->s.n_ex] = dec(q, colon);
				b->ex_out[b->s.n_ex] = dec(colon + 1, c);
				b->s.n_ex++;
				if (!b->ex_in[b->s.n_ex - 1] || !b->ex_out[b->s.n_ex - 1])
					bad = 1;
				q = c < p ? c + 1 : c;
			}
		} else {
			snprintf(err, errlen, "agent %s: unknown key '%.*s'", b->name, (int)(kl > 32 ? 32 : kl), s);
			pool_free(v);
			goto bad;
		}
#undef KEY
		if (bad) {
			snprintf(err, errlen, "agent %s: bad value for '%.*s'", b->name, (int)(kl > 32 ? 32 : kl), s);
			pool_free(v);
			goto bad;
		}
		pool_free(v);
	}
	if (!b->name[0]) {
		snprintf(err, errlen, "agent line without a name");
		goto bad;
	}
	if (!b->model || !b->model[0]) {
		snprintf(err, errlen, "agent %s: model=PATH is missing", b->name);
		goto bad;
	}
	b->s.model_path = b->model;
	return 0;
bad:
	node_spec_buf_fini(b);
	return AIDOS_E_INVALID;
}

static int slurp(const char *path, char **out, char *err, size_t errlen);

/* DIR/NAME.agent */
static int agent_file(const char *dir, const char *name, char *buf, size_t len)
{
	int k = snprintf(buf, len, "%s/%s.agent", dir, name);
	return k < 0 || (size_t)k >= len ? AIDOS_E_RANGE : 0;
}

int node_store_put(const char *dir, const node_spawn_spec *s, char *err, size_t errlen)
{
	char path[PATH_MAX], tmp[PATH_MAX + 8], line[PATH_MAX * 3 + 4096];
	int fd, rc = 0, k;
	if (agent_file(dir, s->name, path, sizeof path) || (k = node_spec_format(s, line, sizeof line)) < 0) {
		snprintf(err, errlen, "agent %s: its record does not fit", s->name);
		return AIDOS_E_RANGE;
	}
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
		return rc;
	}
	const char *q = line;
	while (k > 0) {
		ssize_t w = write(fd, q, (size_t)k);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			rc = w < 0 ? -errno : -EIO;
			break;
		}
		q += w;
		k -= (int)w;
	}
	if (close(fd) && !rc)
		rc = -errno;
	if (!rc && rename(tmp, path))
		rc = -errno;
	if (rc) {
		unlink(tmp);
		snprintf(err, errlen, "cannot write %s: %s", path, strerror(-rc));
	}
	return rc;
}

int node_store_del(const char *dir, const char *name)
{
	char path[PATH_MAX];
	if (agent_file(dir, name, path, sizeof path))
		return AIDOS_E_RANGE;
	return unlink(path) && errno != ENOENT ? -errno : 0;
}

/* Reads a whole small text file into pool memory. */
static int slurp(const char *path, char **out, char *err, size_t errlen)
{
	FILE *f = fopen(path, "re");
	char *buf = NULL;
	size_t len = 0, cap = 0;
	*out = NULL;
	if (!f) {
		int e = errno;
		snprintf(err, errlen, "cannot read %s: %s", path, strerror(e));
		return -e;
	}
	for (;;) {
		if (len + 4096 + 1 > cap) {
			size_t ncap = cap ? cap * 2 : 8192;
			char *nb = ncap <= (16u << 20) ? pool_realloc(buf, ncap) : NULL;
			if (!nb) {
				pool_free(buf);
				fclose(f);
				snprintf(err, errlen, "%s: too large (over 16 MiB) or out of memory", path);
				return AIDOS_E_RANGE;
			}
			buf = nb;
			cap = ncap;
		}
		size_t r = fread(buf + len, 1, cap - len - 1, f);
		len += r;
		if (!r)
			break;
	}
	fclose(f);
	buf[len] = 0;
	*out = buf;
	return 0;
}

int node_store_load(const char *dir, int (*cb)(void *ctx, const node_spawn_spec *s, const char *file), void *ctx,
		    char *err, size_t errlen)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[PATH_MAX], why[400];
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((e = readdir(d))) {
		size_t l = strlen(e->d_name);
		if (l < 7 || strcmp(e->d_name + l - 6, ".agent"))
			continue;
		snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
		char *text;
		if (slurp(path, &text, why, sizeof why)) {
			cb(ctx, NULL, path);
			continue;
		}
		node_spec_buf b;
		text[strcspn(text, "\n")] = 0;
		if (node_spec_parse(text, &b, why, sizeof why)) {
			snprintf(err, errlen, "%s: %s", path, why);
			cb(ctx, NULL, path);   /* reported, and the others still come back */
		} else {
			cb(ctx, &b.s, path);
			node_spec_buf_fini(&b);
		}
		pool_free(text);
	}
	closedir(d);
	return 0;
}

/* ---- the config file ---- */

void node_config_fini(node_config *c)
{
	for (int i = 0; i < c->n_agents; i++)
		node_spec_buf_fini(&c->agents[i]);
	pool_free(c->agents);
	pool_free(c->text);
	memset(c, 0, sizeof *c);
}

static int cfg_u64(const char *v, uint64_t lo, uint64_t hi, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long x = strtoull(v, &end, 10);
	if (errno || end == v || *end || v[0] == '-' || x < lo || x > hi)
		return -1;
	*out = x;
	return 0;
}

int node_config_load(const char *path, node_config *c, char *err, size_t errlen)
{
	char *p, why[400];
	int rc, ln = 0;
	memset(c, 0, sizeof *c);
	c->pin = -1;
	if ((rc = slurp(path, &c->text, err, errlen)))
		return rc;
	for (p = c->text; *p;) {
		char *e = strchr(p, '\n');
		if (e)
			*e = 0;
		ln++;
		char *q = p;
		while (*q == ' ' || *q == '\t')
			q++;
		size_t l = strlen(q);
		while (l && (q[l - 1] == ' ' || q[l - 1] == '\t' || q[l - 1] == '\r'))
			q[--l] = 0;
		if (*q && *q != '#') {
			if (!strncmp(q, "agent", 5) && (q[5] == ' ' || q[5] == '\t')) {
				if (c->n_agents == c->cap) {
					int ncap = c->cap ? c->cap * 2 : 16;
					node_spec_buf *nb = ncap <= NODE_CONFIG_MAX_AGENTS
						? pool_realloc(c->agents, (size_t)ncap * sizeof *nb) : NULL;
					if (!nb) {
						snprintf(err, errlen, "%s:%d: too many agents (at most %d)", path, ln,
							 NODE_CONFIG_MAX_AGENTS);
						goto bad;
					}
					c->agents = nb;
					c->cap = ncap;
				}
				if (node_spec_parse(q, &c->agents[c->n_agents], why, sizeof why)) {
					snprintf(err, errlen, "%s:%d: %s", path, ln, why);
					goto bad;
				}
				/* the spec points into its own buffer: fix after the move */
				c->n_agents++;
			} else {
				char *eq = strchr(q, '=');
				if (!eq) {
					snprintf(err, errlen, "%s:%d: expected 'key = value' or 'agent NAME ...'", path, ln);
					goto bad;
				}
				char *k = q, *v = eq + 1;
				char *ke = eq;
				while (ke > k && (ke[-1] == ' ' || ke[-1] == '\t'))
					ke--;
				*ke = 0;
				while (*v == ' ' || *v == '\t')
					v++;
				uint64_t x;
				int bad = 0;
				if (!strcmp(k, "name"))
					c->name = v;
				else if (!strcmp(k, "coord"))
					c->coord = v;
				else if (!strcmp(k, "data_dir"))
					c->data_dir = v;
				else if (!strcmp(k, "listen"))
					c->listen = v;
				else if (!strcmp(k, "advertise"))
					c->advertise = v;
				else if (!strcmp(k, "socket"))
					c->socket = v;
				else if (!strcmp(k, "transport")) {
					bad = strcmp(v, "auto") && strcmp(v, "ucx") && strcmp(v, "tcp") && strcmp(v, "none");
					c->transport = v;
				} else if (!strcmp(k, "workers")) {
					bad = cfg_u64(v, 1, 64, &x);
					c->workers = (int)x;
				} else if (!strcmp(k, "run_workers")) {
					bad = cfg_u64(v, 1, 64, &x);
					c->run_workers = (int)x;
				} else if (!strcmp(k, "heartbeat_ms")) {
					bad = cfg_u64(v, 10, 60000, &x);
					c->heartbeat_ms = x;
				} else if (!strcmp(k, "pin")) {
					bad = cfg_u64(v, 0, 1, &x);
					c->pin = (int)x;
				} else {
					snprintf(err, errlen, "%s:%d: unknown key '%.40s'", path, ln, k);
					goto bad;
				}
				if (bad || !*v) {
					snprintf(err, errlen, "%s:%d: bad value '%.80s' for %s", path, ln, v, k);
					goto bad;
				}
			}
		}
		if (!e)
			break;
		p = e + 1;
	}
	/* The specs point at their buffers' own fields: set them now that the
	 * array no longer moves. */
	for (int i = 0; i < c->n_agents; i++) {
		node_spec_buf *b = &c->agents[i];
		b->s.name = b->name;
		b->s.device = b->device;
		b->s.ex_in = b->ex_in;
		b->s.ex_out = b->ex_out;
		b->s.model_path = b->model;
	}
	return 0;
bad:
	node_config_fini(c);
	return AIDOS_E_INVALID;
}
