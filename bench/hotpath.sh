#!/usr/bin/env bash
# bench/hotpath.sh BUILD_DIR - system calls per request in steady state,
# measured with perf's raw_syscalls:sys_enter tracepoint: `aidos run` with
# --repeat 1 and --repeat 501 (no warm-up), the difference divided by 500.
# 1 and 2 threads, for each model below. Writes bench/results/hotpath-latest.{json,md}.
# (Allocations per request are asserted to be zero by tests/test_hotpath.c.)
set -euo pipefail
build=${1:-build}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
cache=${AIDOS_CACHE:-$HOME/.cache/aidos}
G=$cache/golden M=$cache/models
if ! perf stat -e raw_syscalls:sys_enter true >/dev/null 2>&1; then
	echo "hotpath: perf cannot read raw_syscalls:sys_enter here (not root, or no tracepoints): skipped"
	exit 0
fi
cases=("ocr-models/ch_ppocr_mobile_v2.0_cls_infer.onnx x=ocr_cls_192/in/x.npy"
       "ocr-models/ch_PP-OCRv4_det_infer.onnx x=ocr_det_320/in/x.npy"
       "openwakeword/hey_jarvis_v0.1.onnx x.1=oww_hey_jarvis/in/x.1.npy"
       "openwakeword/melspectrogram.onnx input=mel_1280/in/input.npy")
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
count() {  # MODEL INPUT THREADS REPEAT
	perf stat -e raw_syscalls:sys_enter -x, -o "$tmp/ps" "$build/aidos" run "$M/$1" --input "${2%%=*}=$G/${2#*=}" \
		--output-dir "$tmp/o" --threads "$3" --repeat "$4" --warmup 0 >/dev/null
	grep -v '^#' "$tmp/ps" | grep . | cut -d, -f1
}
rows=()
for c in "${cases[@]}"; do
	read -r model input <<<"$c"
	for t in 1 2; do
		a=$(count "$model" "$input" "$t" 1); b=$(count "$model" "$input" "$t" 501)
		per=$(awk -v a="$a" -v b="$b" 'BEGIN{printf "%.3f", (b - a) / 500}')
		rows+=("$model $t $per")
		printf '%-50s threads %d: %s system calls per request\n' "$model" "$t" "$per"
	done
done
{
	echo "{\"runs\": 500, \"syscalls_per_request\": ["
	for i in "${!rows[@]}"; do
		read -r m t p <<<"${rows[$i]}"
		printf '  {"model": "%s", "threads": %s, "per_request": %s}%s\n' "$m" "$t" "$p" "$([[ $i -lt $((${#rows[@]} - 1)) ]] && echo ,)"
	done
	echo "]}"
} >bench/results/hotpath-latest.json
{
	echo "| model | threads | system calls per request |"
	echo "|---|---:|---:|"
	for r in "${rows[@]}"; do read -r m t p <<<"$r"; echo "| $m | $t | $p |"; done
	echo
	echo "perf raw_syscalls:sys_enter, (calls with --repeat 501 - calls with --repeat 1) / 500, $(date -u +%F), $(nproc) cores."
} >bench/results/hotpath-latest.md
echo "wrote bench/results/hotpath-latest.json and .md"
