#!/usr/bin/env bash
# bench/cpu.sh BUILD_DIR - `make bench-cpu`: aidos next to ONNX Runtime 1.30
# (onnxruntime-node, CPU) on the same models, inputs and thread counts, in one
# run. Two long-lived drivers (bench/cpu_aidos.c, bench/cpu_ort.js) take
# commands on stdin; per model and thread count both load it, write their
# outputs once (compared by bench/cpu_report.py: max error printed, a
# mismatch flagged), warm up, then alternate blocks of BLOCK timed runs
# (aidos first in odd rounds, ORT first in even ones) until each side has
# RUNS (RUNS_BIG for PaddleOCR det 640). Fresh drivers per thread count; on
# 1 thread both are pinned to one CPU (PIN_CPU; see start_drivers). Then the
# executor's per-op dispatch
# cost (dispatch_1000.onnx) and node's own share of an ORT latency.
# Writes bench/results/cpu-latest.{json,md,png} (bench/cpu_report.py); then
# the GEMM micro-benchmark (bench/gemm.c: gemm-latest.{json,md}, SKIP_GEMM=1
# leaves it out) and the charts (bench/plot.sh).
#   RUNS=100 RUNS_BIG=16 BLOCK=10 WARMUP=5 PAUSE_MS=20 THREADS="1 2" PIN_CPU=0 ONLY="det320 rec dispatch" \
#   RESULTS=/tmp/mine bench/cpu.sh build
# A measurement, never a pass/fail test: the exit status says only whether it ran.
set -euo pipefail
build=${1:-build}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
cache=${AIDOS_CACHE:-$HOME/.cache/aidos}
# 100 runs a side (10 blocks each): the host switches between a fast and a
# slow phase every few seconds, and at any moment the two sides' finished
# blocks differ by at most one, so one block in the wrong phase can carry
# a side's median across the phases. With 5 blocks a side that is 20% of
# its runs: one run in fourteen (00:51 UTC 2026-11-27) printed MobileNetV2
# on 1 thread at 1.12 while its paired ratio was 1.00 and its CPU-time
# ratio 1.00. With 10 it is 10%.
runs=${RUNS:-100}
runs_big=${RUNS_BIG:-16}
block=${BLOCK:-10}
warmup=${WARMUP:-5}
pause_ms=${PAUSE_MS:-20}
results=${RESULTS:-bench/results}  # another folder keeps the committed results untouched
((pause_ms >= 0 && pause_ms < 1000)) || { echo "bench-cpu: PAUSE_MS must be 0-999" >&2; exit 2; }
threads=${THREADS:-1 2}
only=${ONLY:-}
g=$cache/golden
m=$cache/models
bm=$cache/bench
[[ -x $build/bench/cpu_aidos ]] || { echo "bench-cpu: $build/bench/cpu_aidos missing: run make" >&2; exit 1; }
[[ -f $g/manifest.txt ]] || { echo "bench-cpu: run 'make models' first" >&2; exit 1; }
[[ -d tools/npm/node_modules/onnxruntime-node ]] || { echo "bench-cpu: onnxruntime-node missing: make deps" >&2; exit 1; }
# The models aidos builds itself: regenerated when the generator changes.
stamp=$(sha256sum tools/gen_bench_models.py tools/gen_transformers.py | sha256sum | cut -c1-16)
if [[ "$(cat "$bm/stamp" 2>/dev/null)" != "$stamp" ]]; then
	rm -rf "$bm.new"
	/usr/bin/python3 tools/gen_bench_models.py "$bm.new" >/dev/null
	echo "$stamp" >"$bm.new/stamp"
	rm -rf "$bm" && mv "$bm.new" "$bm"
fi

# id | model | inputs (NAME=FILE) | description
models=(
	"det640|$m/ocr-models/ch_PP-OCRv4_det_infer.onnx|x=$g/ocr_det_640/in/x.npy|PaddleOCR v4 det 1x3x640x640"
	"det320|$m/ocr-models/ch_PP-OCRv4_det_infer.onnx|x=$g/ocr_det_320/in/x.npy|PaddleOCR v4 det 1x3x320x320"
	"rec|$m/ocr-models/ch_PP-OCRv4_rec_infer.onnx|x=$g/ocr_rec_320/in/x.npy|PaddleOCR v4 rec 1x3x48x320"
	"cls|$m/ocr-models/ch_ppocr_mobile_v2.0_cls_infer.onnx|x=$g/ocr_cls_192/in/x.npy|PaddleOCR cls 1x3x48x192"
	"vad|$m/vad-web/silero_vad_v5.onnx|input=$g/vad_v5_16k/in/00_input.npy state=$g/vad_v5_16k/in/00_state.npy sr=$g/vad_v5_16k/in/00_sr.npy|Silero VAD v5, 512 samples 16 kHz + state"
	"mel|$m/openwakeword/melspectrogram.onnx|input=$g/mel_1280/in/input.npy|openWakeWord melspectrogram, 1280 samples"
	"embedding|$m/openwakeword/embedding_model.onnx|input_1=$g/oww_embedding/in/input_1.npy|openWakeWord embedding 1x76x32x1"
	"hey_jarvis|$m/openwakeword/hey_jarvis_v0.1.onnx|x.1=$g/oww_hey_jarvis/in/x.1.npy|openWakeWord hey_jarvis 1x16x96"
	"mobilenetv2|$bm/mobilenetv2.onnx|input=$bm/mobilenetv2/in/input.npy|MobileNetV2 1.0 224x224 (generated)"
	"bert|$bm/bert_s64.onnx|input_ids=$bm/bert_s64/in/input_ids.npy attention_mask=$bm/bert_s64/in/attention_mask.npy|BERT encoder 4L H256, seq 64 (generated)"
	"gpt2|$bm/gpt2_s32.onnx|input_ids=$bm/gpt2_s32/in/input_ids.npy|GPT-2 decoder 4L H256 V8192, seq 32 (generated)"
)

tmp=$(mktemp -d)
apid= opid=
cleanup() {
	stop_drivers
	wait 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
trap '' PIPE  # a driver that died: its command fails, the bench goes on
mkfifo "$tmp/a.in" "$tmp/a.out" "$tmp/o.in" "$tmp/o.out"
# stop_drivers / start_drivers [CPU]: fresh drivers, both pinned to CPU when
# one is given. Each pass over the models (one per thread count) gets its
# own pair. On 1 thread both run on the same CPU: this host's vCPUs change
# speed independently (the same FMA loop took 34 ms on one CPU and 46 on
# the other at the same moment, and each moved by 30-70% within seconds),
# and the scheduler keeps each process on its own CPU, so two unpinned
# 1-thread drivers were often timed on CPUs of different speed however
# finely their blocks alternated. Pinned together, they alternate on one
# CPU and share its phases.
stop_drivers() {
	{ exec 3>&- 4<&- 5>&- 6<&-; } 2>/dev/null || true
	local p
	for p in $apid $opid; do
		kill "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	apid= opid=
}
start_drivers() {
	local pin=()
	[[ -n ${1:-} ]] && pin=(taskset -c "$1")
	"${pin[@]}" "$build/bench/cpu_aidos" <"$tmp/a.in" >"$tmp/a.out" & apid=$!
	"${pin[@]}" node bench/cpu_ort.js <"$tmp/o.in" >"$tmp/o.out" & opid=$!
	exec 3>"$tmp/a.in" 4<"$tmp/a.out" 5>"$tmp/o.in" 6<"$tmp/o.out"
}
# The CPU the 1-thread passes pin to: PIN_CPU, or the first of this
# shell's affinity mask; PIN_CPU=none leaves them to the scheduler.
pin_cpu=${PIN_CPU:-$(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' /proc/self/status)}
pin_cpu=${pin_cpu%%[-,]*}
[[ $pin_cpu == none ]] && pin_cpu=
[[ -z $pin_cpu || $pin_cpu =~ ^[0-9]+$ ]] || { echo "bench-cpu: PIN_CPU must be a CPU number or none" >&2; exit 2; }
# ask SIDE CMD: one command to a driver; its answer in $reply.
ask() {
	local fd=4
	if [[ $1 == a ]]; then echo "$2" >&3 || true; else echo "$2" >&5 || true; fd=6; fi
	IFS= read -r reply <&$fd || reply="err the driver exited"
}
# timed SIDE K FILE: K timed runs appended to FILE, one ns value a line;
# "K CPU_NS" (the process's CPU time over the K runs) appended to FILE.cpu.
timed() {
	ask "$1" "run $2"
	[[ $reply == lat*" cpu "* ]] || { echo "bench-cpu: $1: $reply" >&2; return 1; }
	local l=${reply#lat }
	tr ' ' '\n' <<<"${l% cpu *}" >>"$3"
	echo "$2 ${l##* cpu }" >>"$3.cpu"
}

machine="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, $(grep -qw avx512f /proc/cpuinfo && echo AVX-512 || echo 'AVX2, no AVX-512')"
echo "bench-cpu: $machine; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "load_start $(cut -d' ' -f1-3 /proc/loadavg)" >"$tmp/meta"
echo "machine $machine" >>"$tmp/meta"
first=${threads%% *}
echo "pin_cpu ${pin_cpu:-none}" >>"$tmp/meta"
for t in $threads; do
	stop_drivers
	start_drivers "$( ((t == 1)) && echo "$pin_cpu")"
	for spec in "${models[@]}"; do
		IFS='|' read -r id path ins desc <<<"$spec"
		[[ -n $only && " $only " != *" $id "* ]] && continue
		d=$tmp/r/$t/$id
		mkdir -p "$d/aidos" "$d/ort"
		echo "$desc" >"$d/desc"
		cut -d' ' -f1 /proc/loadavg >"$d/load"
		ask a "load $t $path $ins"
		[[ $reply == ok* ]] || { echo "bench-cpu: $id: aidos: $reply" >&2; echo "aidos: $reply" >"$d/error"; continue; }
		echo "${reply#ok }" >"$d/steps"
		ask o "load $t $path $ins"
		[[ $reply == ok* ]] || { echo "bench-cpu: $id: ORT: $reply" >&2; echo "ORT: $reply" >"$d/error"; continue; }
		if [[ $t == "$first" ]]; then
			ask a "out $d/aidos"
			ask o "out $d/ort"
		fi
		n=$runs
		[[ $id == det640 ]] && n=$runs_big
		w=$warmup
		((n < 20 && w > 2)) && w=2
		timed a "$w" "$d/warmup_aidos" && timed o "$w" "$d/warmup_ort" || { echo "run failed" >"$d/error"; continue; }
		left=$n round=0 sides=(a o)
		while ((left > 0)); do
			k=$((left < block ? left : block))
			((round % 2)) && sides=(o a) || sides=(a o)
			for s in "${sides[@]}"; do
				f=$d/aidos.ns
				[[ $s == o ]] && f=$d/ort.ns
				# A pause between blocks lets the other runtime's workers stop
				# spinning (both spin a bounded time after a parallel section);
				# it also makes each block start from idle, as a request that
				# comes every few tens of ms does (PAUSE_MS=0: back to back).
				((pause_ms > 0)) && sleep "$(printf '0.%03d' "$pause_ms")"
				timed "$s" "$k" "$f" || { echo "run failed" >"$d/error"; left=0; break; }
			done
			left=$((left - k)) round=$((round + 1))
		done
		/usr/bin/python3 bench/cpu_report.py line "$d" "$id" "$t"
	done
done
# Per-op dispatch: 1,000 tiny nodes, each side, on 1 thread; and what node
# itself adds to every ORT latency (an empty setImmediate round trip).
if [[ -z $only || " $only " == *" dispatch "* ]]; then
	d=$tmp/r/dispatch
	mkdir -p "$d"
	stop_drivers
	start_drivers "$pin_cpu"   # a 1-thread measurement, as above
	ask a "load 1 $bm/dispatch_1000.onnx x=$bm/dispatch_1000/in/x.npy" && echo "${reply#ok }" >"$d/steps"
	ask o "load 1 $bm/dispatch_1000.onnx x=$bm/dispatch_1000/in/x.npy"
	timed a 50 "$d/warmup" && timed o 50 "$d/warmup"
	for r in 1 2 3 4 5 6 7 8 9 10; do timed a 100 "$d/aidos.ns"; timed o 100 "$d/ort.ns"; done
	ask o "overhead 200"
	ask o "overhead 1000"
	tr ' ' '\n' <<<"${reply#lat }" >"$d/node_overhead.ns"
fi
# The GEMM micro-benchmark (bench/gemm.c): hal_gemm vs oneDNN's sgemm.
if [[ ${SKIP_GEMM:-0} != 1 && -x $build/bench/gemm ]]; then
	echo "== bench/gemm (hal_gemm vs dnnl_sgemm, GFLOP/s)"
	mkdir -p "$results"
	"$build/bench/gemm" --threads "$threads" --json "$results/gemm-latest.json" --md "$results/gemm-latest.md" ||
		echo "bench-cpu: bench/gemm failed" >&2
fi
echo "load_end $(cut -d' ' -f1-3 /proc/loadavg)" >>"$tmp/meta"
echo "date $(date -u +'%F %H:%M UTC')" >>"$tmp/meta"
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)" >>"$tmp/meta"
echo "runs $runs $runs_big $block $warmup" >>"$tmp/meta"
echo "pause_ms $pause_ms" >>"$tmp/meta"
/usr/bin/python3 bench/cpu_report.py report "$tmp" "$results"
[[ $results -ef bench/results ]] && { bench/plot.sh >/dev/null || true; }
