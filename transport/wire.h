/*
 * transport/wire.h - what every transport backend (ucx.c, verbs.c) needs
 * alike: little-endian field access for the envelopes they exchange, the
 * monotonic clock and deadlines in nanoseconds, and one-line errors.
 * Private to transport/.
 */
#ifndef AIDOS_TRANSPORT_WIRE_H
#define AIDOS_TRANSPORT_WIRE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#define NO_DEADLINE UINT64_MAX

static inline void wr16(unsigned char *p, uint16_t v) { p[0] = v; p[1] = v >> 8; }
static inline void wr32(unsigned char *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = v >> (8 * i); }
static inline void wr64(unsigned char *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = v >> (8 * i); }
static inline uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t rd32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t rd64(const unsigned char *p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }

static inline uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* CLOCK_MONOTONIC_COARSE: the same time base as now_ns(), up to one tick
 * behind, and always read from the vDSO without touching the clocksource
 * (with a clocksource the vDSO cannot read, e.g. the HPET some VMs fall back
 * to, CLOCK_MONOTONIC is a system call). */
static inline uint64_t now_coarse_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The absolute deadline timeout_ms from now (coarse: at most one tick
 * early, nothing for millisecond timeouts, and no system call on an
 * operation's path); NO_DEADLINE when it is < 0. */
static inline uint64_t deadline_of(int timeout_ms)
{
	return timeout_ms < 0 ? NO_DEADLINE : now_coarse_ns() + (uint64_t)timeout_ms * 1000000ull;
}

/* One line into err (NULL or errlen 0: nothing). */
__attribute__((format(printf, 3, 4)))
static inline void seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

#endif
