/*
 * tests/fuzz_onnx.c - libFuzzer target for the ONNX loader and planner.
 *
 * Each input is an ONNX file: aidos_model_load_buffer(); when it loads, a
 * session planned for zeroed inputs of the model's declared shapes (symbolic
 * dims = 1) and, when those inputs are small, one run; then everything is
 * freed. Any crash, sanitizer report, leak, or a broken error contract (a
 * failure without a negative code and a message) is a finding.
 *
 * Not built by `make` (the Makefile builds tests/test_*.c only): use
 * `tools/fuzz.sh [seconds]`, which links every library source built by the
 * Makefile and seeds a corpus, or by hand from the repository root with the
 * lines below (the model stack needs hal/, hal/ops/ and pools/ only).
 */
// Build (one command, from the repository root):
//   mkdir -p build-fuzz/corpus && clang -g -O1 -std=c11 -D_GNU_SOURCE -Iinclude -I.
//     -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined tests/fuzz_onnx.c
//     hal/*.c hal/ops/*.c pools/*.c -lm -pthread -o build-fuzz/fuzz_onnx
// Run (copy some model.onnx files into build-fuzz/corpus first):
//   build-fuzz/fuzz_onnx -max_len=1048576 -timeout=10 build-fuzz/corpus
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aidos/aidos.h"
#include "hal/hal.h"

#define MAX_IN 16
#define RUN_LIMIT (1u << 20)  /* run only when all inputs together are this small */

/* Stops the fuzzer with a message: a broken contract is a finding. */
#define CHECK(cond, ...)                                                    \
	do {                                                                \
		if (!(cond)) {                                              \
			fprintf(stderr, "fuzz_onnx: " __VA_ARGS__);         \
			fprintf(stderr, " (%s)\n", #cond);                  \
			abort();                                            \
		}                                                           \
	} while (0)

/* Bytes of t's data, or SIZE_MAX when it does not fit the run limit. */
static size_t tensor_bytes(const aidos_tensor *t)
{
	size_t es = hal_dtype_size(t->dtype);
	if (!es || t->rank < 0 || t->rank > AIDOS_MAX_RANK)
		return SIZE_MAX;
	uint64_t n = 1;
	for (int i = 0; i < t->rank; i++) {
		if (t->dims[i] < 0 || (t->dims[i] && n > RUN_LIMIT / (uint64_t)t->dims[i]))
			return SIZE_MAX;
		n *= (uint64_t)t->dims[i];
	}
	return n * es > RUN_LIMIT ? SIZE_MAX : (size_t)(n * es);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	aidos_model *m = NULL;
	char err[512] = "";
	int rc = aidos_model_load_buffer(data, size, NULL, &m, err, sizeof err);
	if (rc) {
		CHECK(rc < 0 && err[0] && !m, "load returned %d with message '%s'", rc, err);
		return 0;
	}
	CHECK(m != NULL, "load succeeded without a model");

	int n_in = aidos_model_n_inputs(m), n_out = aidos_model_n_outputs(m);
	CHECK(n_in >= 0 && n_out >= 0, "n_inputs %d n_outputs %d", n_in, n_out);
	aidos_tensor in[MAX_IN];
	void *bufs[MAX_IN] = { 0 };
	int n = n_in <= MAX_IN ? n_in : 0, runnable = n_in <= MAX_IN;
	size_t total = 0;
	memset(in, 0, sizeof in);
	for (int i = 0; i < n; i++) {
		CHECK(aidos_model_input(m, i, &in[i]) == 0 && in[i].name, "input %d", i);
		if (!in[i].dtype)
			in[i].dtype = AIDOS_DT_FLOAT;
		if (in[i].rank < 0)
			in[i].rank = 0;
		for (int k = 0; k < in[i].rank && k < AIDOS_MAX_RANK; k++)
			if (in[i].dims[k] < 0)
				in[i].dims[k] = 1;
		size_t nb = tensor_bytes(&in[i]);
		if (nb == SIZE_MAX || (total += nb) > RUN_LIMIT) {
			runnable = 0;
			continue;
		}
		in[i].data = bufs[i] = calloc(1, nb ? nb : 1);
	}

	aidos_session *s = NULL;
	/* A hostile file may ask for any size: bound it well under libFuzzer's 2 GiB. */
	aidos_session_opts so = { .threads = 1, .max_tensor_bytes = 256u << 20 };
	rc = aidos_session_create(m, &so, &s, err, sizeof err);
	if (rc) {
		CHECK(rc < 0 && err[0], "session_create returned %d with message '%s'", rc, err);
	} else if (runnable) {
		rc = aidos_session_plan(s, n, in);
		CHECK(rc <= 0, "plan returned %d", rc);
		CHECK(rc == 0 || aidos_session_errmsg(s)[0], "plan failed (%d) without a message", rc);
		if (rc == 0) {
			rc = aidos_session_run(s, n, in);
			CHECK(rc <= 0, "run returned %d", rc);
			CHECK(rc == 0 || aidos_session_errmsg(s)[0], "run failed (%d) without a message", rc);
			for (int i = 0; rc == 0 && i < n_out; i++) {
				aidos_tensor o;
				if (aidos_session_output(s, i, &o) != 0 || !o.data)
					continue;
				size_t nb = tensor_bytes(&o);
				volatile uint8_t x = 0;
				for (size_t k = 0; nb != SIZE_MAX && k < nb; k++)
					x ^= ((const uint8_t *)o.data)[k];
				(void)x;
			}
		}
	}
	aidos_session_destroy(s);
	for (int i = 0; i < MAX_IN; i++)
		free(bufs[i]);
	aidos_model_free(m);
	return 0;
}
