/*
 * bench/wire_inputs.h - the NAME=FILE.npy arguments of the gRPC load
 * generators (remote_infer, rebalance_load), loaded and turned into the
 * protobuf tensors an Infer request carries. Header-only: every bench/NAME.c
 * is its own program (Makefile TOOL_BINS).
 */
#ifndef AIDOS_BENCH_WIRE_INPUTS_H
#define AIDOS_BENCH_WIRE_INPUTS_H

#include <stdio.h>
#include <string.h>

#include "aidos/aidos.h"
#include "aidos/npy.h"
#include "node/wire.h"
#include "proto/aidos.pb-c.h"

#define WIRE_MAX_IN 16

/* The request's inputs: t[i] (named keys[i], data owned[i]) and its
 * protobuf form pb[i], pointed to by pbp[i]. */
typedef struct wire_inputs {
	int n;
	aidos_tensor t[WIRE_MAX_IN];
	void *owned[WIRE_MAX_IN];
	Aidos__Tensor pb[WIRE_MAX_IN], *pbp[WIRE_MAX_IN];
	char keys[WIRE_MAX_IN][256];
} wire_inputs;

/* Releases what wire_inputs_load loaded (also after it failed halfway). */
static inline void wire_inputs_free(wire_inputs *w)
{
	for (int i = 0; i < WIRE_MAX_IN; i++)
		if (w->owned[i])
			aidos_npy_free(w->owned[i]);
	memset(w->owned, 0, sizeof w->owned);
}

/* Loads kv[0..nin) ("NAME=FILE.npy") into w. Returns 0; or prints
 * "TOOL: ..." on stderr and returns 2 for a usage error, 1 for a data
 * error (w is then to be freed with wire_inputs_free). */
static inline int wire_inputs_load(const char *tool, wire_inputs *w, int nin, char **kv)
{
	char err[1024];
	memset(w, 0, sizeof *w);
	if (nin > WIRE_MAX_IN)
		return fprintf(stderr, "%s: at most %d inputs\n", tool, WIRE_MAX_IN), 2;
	for (int i = 0; i < nin; i++) {
		const char *eq = strchr(kv[i], '=');
		if (!eq || eq == kv[i] || (size_t)(eq - kv[i]) >= sizeof w->keys[i])
			return fprintf(stderr, "%s: bad input '%s' (want NAME=FILE.npy)\n", tool, kv[i]), 2;
		memcpy(w->keys[i], kv[i], (size_t)(eq - kv[i]));
		w->keys[i][eq - kv[i]] = 0;
		if (aidos_npy_load(eq + 1, &w->t[i], &w->owned[i], err, sizeof err))
			return fprintf(stderr, "%s: %s: %s\n", tool, eq + 1, err), 1;
		w->t[i].name = w->keys[i];
		aidos__tensor__init(&w->pb[i]);
		if (aidos_wire_tensor_to_pb(&w->t[i], &w->pb[i], err, sizeof err))
			return fprintf(stderr, "%s: %s\n", tool, err), 1;
		w->pbp[i] = &w->pb[i];
		w->n = i + 1;
	}
	return 0;
}

#endif
