/*
 * hal/spin.h - the monotonic clock and the spin-wait hint that bounded spins
 * are built from: hal/threadpool.c's workers, and above it the node's
 * rings and workers (node/util.h re-exports them). Header-only (static
 * inline), so each is inlined where it spins; neither makes a system call
 * (CLOCK_MONOTONIC is read from the vDSO).
 */
#ifndef AIDOS_HAL_SPIN_H
#define AIDOS_HAL_SPIN_H

#include <stdint.h>
#include <time.h>

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
