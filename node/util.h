/*
 * node/util.h - the small helpers every file of the node uses, and the
 * coordinator (coordinator/coord.c) and the RPC layer (proto/rpc.c) with it:
 * the one-line error convention, the monotonic clock and the spin-wait hint.
 * Header-only (static inline), so each is inlined where it is called.
 */
#ifndef AIDOS_NODE_UTIL_H
#define AIDOS_NODE_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

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

/* CLOCK_MONOTONIC in ns (vDSO: no system call). */
static inline uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* A spin-wait hint to the core (x86 pause, arm yield). */
static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ volatile("yield");
#endif
}

#endif
