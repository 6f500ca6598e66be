#!/usr/bin/env bash
# tools/fuzz.sh [seconds] [libFuzzer args...] - build the libFuzzer target
# tests/fuzz_onnx.c into build-fuzz/ (clang, -fsanitize=fuzzer,address,undefined,
# linked against every library source, built by `make BUILD=build-fuzz`) and
# run it for `seconds` (default 60). FUZZ_CC picks the compiler (clang).
#
# Corpus: build-fuzz/corpus/, kept between runs (libFuzzer adds what it finds)
# and seeded with every libonnx-testdata model.onnx and the golden models
# cached by tools/fetch-models.sh (${AIDOS_CACHE:-$HOME/.cache/aidos}/models),
# each up to the 1 MiB input limit. Crashes, leaks, timeouts and OOMs go to
# /tmp/aidos-crashes/ (override with AIDOS_CRASH_DIR); FUZZ_TARGET=ipc fuzzes
# tests/fuzz_ipc.c instead (control messages and ring descriptors; corpus
# build-fuzz/corpus-ipc/, no seeds needed). Replay one with
#   build-fuzz/fuzz_onnx /tmp/aidos-crashes/crash-<sha1>
# Extra arguments after the seconds go to libFuzzer, e.g. to go on after a
# finding: tools/fuzz.sh 600 -fork=2 -ignore_crashes=1 -ignore_ooms=1
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
secs=${1:-60}
shift || true
[[ $secs =~ ^[0-9]+$ ]] || { echo "usage: tools/fuzz.sh [seconds] [libFuzzer args...]" >&2; exit 2; }

CC=${FUZZ_CC:-clang}
out=build-fuzz
crashes=${AIDOS_CRASH_DIR:-/tmp/aidos-crashes}
max_len=1048576
mkdir -p "$out/corpus" "$crashes"

# The library, every source the Makefile builds (generated protocol code
# included), compiled by the Makefile itself into build-fuzz/ with the fuzzer's
# instrumentation; the target links only what it uses from the archive.
san="-g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined"
make --no-print-directory -s -j"$(nproc)" BUILD=$out CC="$CC" \
	OPT="$san -fsanitize=fuzzer-no-link" "$out/libaidos.a"
ldlibs=$(sed -n 's/^LDLIBS *:= *//p' Makefile)
# shellcheck disable=SC2086
target=${FUZZ_TARGET:-onnx}
"$CC" $san -fsanitize=fuzzer -std=c11 -D_GNU_SOURCE -Iinclude -I. -I$out/gen -Wall -Wextra \
	-Wno-unused-parameter "tests/fuzz_$target.c" "$out/libaidos.a" ${ldlibs:--lm -pthread} -o "$out/fuzz_$target"
if [[ $target != onnx ]]; then   # a protocol target: no model seeds
	mkdir -p "$out/corpus-$target"
	set +e
	ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} "$out/fuzz_$target" -max_total_time="$secs" -max_len=4096 \
		-timeout=10 -artifact_prefix="$crashes/" -print_final_stats=1 "$@" "$out/corpus-$target" 2>&1 |
		tee "$out/fuzz-$target.log" | grep -vE '^#[0-9]+.*(NEW|REDUCE|pulse)'
	rc=${PIPESTATUS[0]}
	echo "fuzz: fuzz_$target exited $rc (log: $out/fuzz-$target.log)"
	exit "$rc"
fi

# Seed corpus (names by folder and case, so reseeding overwrites, not adds).
seeded=0
data=${AIDOS_ONNX_TESTDATA:-/usr/share/libonnx-testdata/data}
for m in "$data"/*/*/model.onnx; do
	[[ -e $m ]] || continue
	(( $(stat -c %s "$m") <= max_len )) || continue
	rel=${m#"$data"/}
	cp -f "$m" "$out/corpus/seed-${rel//\//_}"
	seeded=$((seeded + 1))
done
cache=${AIDOS_CACHE:-$HOME/.cache/aidos}
if [[ -d $cache/models ]]; then
	while IFS= read -r -d '' m; do
		(( $(stat -c %s "$m") <= max_len )) || continue
		cp -f "$m" "$out/corpus/golden-$(basename "$m")"
		seeded=$((seeded + 1))
	done < <(find "$cache/models" -name '*.onnx' -print0)
fi
echo "fuzz: $seeded seed models, corpus $(ls "$out/corpus" | wc -l) files; running ${secs}s; crashes -> $crashes/"

set +e
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1} \
UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} \
"$out/fuzz_onnx" -max_total_time="$secs" -max_len=$max_len -timeout=10 -rss_limit_mb=4096 \
	-malloc_limit_mb=4096 -artifact_prefix="$crashes/" -print_final_stats=1 "$@" "$out/corpus" \
	2>&1 | tee "$out/fuzz.log" | grep -vE '^#[0-9]+.*(NEW|REDUCE|pulse)' 
rc=${PIPESTATUS[0]}
set -e
if ((rc)); then
	echo "fuzz: libFuzzer exited $rc: finding saved under $crashes/ (log: $out/fuzz.log)" >&2
else
	echo "fuzz: no finding in ${secs}s (log: $out/fuzz.log)"
fi
exit "$rc"
