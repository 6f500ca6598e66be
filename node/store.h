/*
 * node/store.h - agent lines, the node's agent store and its config file
 * (node/store.c tells the formats).
 */
#ifndef AIDOS_NODE_STORE_H
#define AIDOS_NODE_STORE_H

#include "node/node.h"

#define NODE_CONFIG_MAX_AGENTS 65536

/* A parsed agent line: s points into the buffer's own storage. */
typedef struct node_spec_buf {
	node_spawn_spec s;
	char name[NODE_NAME_MAX];
	char device[16];
	char *model;                               /* pool */
	const char *ex_in[NODE_MAX_STATE], *ex_out[NODE_MAX_STATE];  /* pool strings */
} node_spec_buf;

/* Parses "[agent] NAME key=value ..." into b (node_spec_buf_fini it).
 * Errors: AIDOS_E_INVALID with err naming the word (b is then empty). */
int node_spec_parse(const char *line, node_spec_buf *b, char *err, size_t errlen);
void node_spec_buf_fini(node_spec_buf *b);
/* The agent line of s, '\n'-terminated, into buf. Returns its length, or
 * AIDOS_E_RANGE when buf is too small. */
int node_spec_format(const node_spawn_spec *s, char *buf, size_t len);
/* "123", "64K", "64M", "2G" (binary; "MiB"/"MB" accepted). Errors: AIDOS_E_INVALID. */
int node_parse_size(const char *s, uint64_t *out);

/* Records agent s in DIR/NAME.agent (temporary file + rename). Errors:
 * -errno, AIDOS_E_RANGE, with err. */
int node_store_put(const char *dir, const node_spawn_spec *s, char *err, size_t errlen);
/* Removes DIR/NAME.agent (absent: fine). Errors: -errno. */
int node_store_del(const char *dir, const char *name);
/* Calls cb for each DIR/ *.agent file: s parsed, or NULL when the file is
 * unreadable or malformed (err then has the last such message). Errors:
 * -errno (the directory). */
int node_store_load(const char *dir, int (*cb)(void *ctx, const node_spawn_spec *s, const char *file), void *ctx,
		    char *err, size_t errlen);

/* A config file: keys point into `text`; agents are parsed lines. */
typedef struct node_config {
	char *text;
	const char *name, *coord, *data_dir, *listen, *advertise, *socket, *transport;
	int workers, run_workers, pin;   /* 0 / -1: not set */
	uint64_t heartbeat_ms;
	node_spec_buf *agents;
	int n_agents, cap;
} node_config;

/* Loads path. Errors: -errno, AIDOS_E_INVALID (err: "path:line: why"). */
int node_config_load(const char *path, node_config *c, char *err, size_t errlen);
void node_config_fini(node_config *c);

#endif
