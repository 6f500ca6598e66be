/*
 * node/util.h - the small helpers every file of the node uses, and the
 * coordinator (coordinator/coord.c) and the RPC layer (proto/rpc.c) with it:
 * the one-line error convention, and (from hal/spin.h) the monotonic clock
 * and the spin-wait hint.
 * Header-only (static inline), so each is inlined where it is called.
 */
#ifndef AIDOS_NODE_UTIL_H
#define AIDOS_NODE_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "hal/spin.h"   /* mono_ns(), cpu_relax() */

/* Writes one line into err (when given) and returns code. */
__attribute__((format(printf, 4, 5)))
static inline int fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
	if (err && errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return code;
}

#endif
