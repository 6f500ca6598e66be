/*
 * tests/fuzz_npy.c - libFuzzer target for the .npy reader (hal/npy.c).
 *
 * Each input is a whole .npy file for aidos_npy_load_buffer(). Findings: any
 * crash or sanitizer report, a leak, an error without a message or a
 * non-NULL owned buffer, and an accepted file whose data the header does not
 * account for exactly. An accepted file is also written back with
 * aidos_npy_save() (to $TMPDIR) and read again, which must give the same
 * tensor.
 *
 * Not built by `make`. From the repository root:
 *   mkdir -p build-fuzz/npy-corpus && clang -g -O1 -std=c11 -D_GNU_SOURCE \
 *     -Iinclude -I. -fsanitize=fuzzer,address,undefined \
 *     -fno-sanitize-recover=undefined tests/fuzz_npy.c hal/npy.c \
 *     -o build-fuzz/fuzz_npy
 *   build-fuzz/fuzz_npy -max_len=4096 build-fuzz/npy-corpus \
 *     $AIDOS_CACHE/golden/mel_1280/in
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aidos/npy.h"
#include "hal/npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	aidos_tensor t, u;
	void *own = (void *)1, *own2 = NULL;
	char err[256] = "", path[256];
	hal_npy_header h;
	size_t n = 1, es;

	if (aidos_npy_load_buffer(data, size, &t, &own, err, sizeof err)) {
		if (own || !err[0])
			abort();
		return 0;
	}
	if (!own || hal_npy_parse_header(data, size, &h, err, sizeof err) ||
	    h.data_off + h.nbytes != size)
		abort();
	for (int i = 0; i < t.rank; i++)
		n *= (size_t)t.dims[i];
	es = n ? h.nbytes / n : 0;
	/* Round trip: what aidos writes, aidos reads back unchanged. */
	snprintf(path, sizeof path, "%s/aidos-fuzz-npy-%ld.npy",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (long)getpid());
	if (aidos_npy_save(path, &t) == 0) {
		if (aidos_npy_load(path, &u, &own2, err, sizeof err) || u.dtype != t.dtype ||
		    u.rank != t.rank || memcmp(u.dims, t.dims, sizeof t.dims) ||
		    (n && memcmp(u.data, t.data, n * es)))
			abort();
		aidos_npy_free(own2);
		unlink(path);
	}
	aidos_npy_free(own);
	return 0;
}
