#!/usr/bin/env bash
# bench/load.sh BUILD_DIR - model load time, aidos next to ONNX Runtime, in one
# run: aidos's load (mmap + decode, `aidos info --json`), load + plan for the
# golden input shapes (`aidos run --json`: load_ms + plan_ms), each a fresh
# process, median of RUNS (default 7); and ONNX Runtime's
# InferenceSession.create: the first in a fresh process (what a process
# that serves one model pays) and the median of RUNS more in that process
# (warm: ORT's own start-up already paid). Writes bench/results/load-latest.json and .md.
set -euo pipefail
build=${1:-build}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
cache=${AIDOS_CACHE:-$HOME/.cache/aidos}
runs=${RUNS:-7}
out=bench/results
mkdir -p "$out"
[[ -f $cache/golden/manifest.txt ]] || { echo "load: run 'make models' first" >&2; exit 1; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# One golden case per model: the inputs of its first step give the shapes.
declare -A seen
rows=()
while IFS=$'\t' read -r model inputs; do
	[[ -n ${seen[$model]:-} ]] && continue
	seen[$model]=1
	args=()
	for kv in $inputs; do args+=(--input "${kv%%=*}=$cache/golden/${kv#*=}"); done
	m=$cache/models/$model
	for i in $(seq "$runs"); do
		"$build/aidos" info --json "$m" | sed -n 's/.*"load_ms": \([0-9.]*\).*/\1/p' >>"$tmp/load"
		"$build/aidos" run "$m" "${args[@]}" --output-dir "$tmp/o" --json 2>/dev/null |
			sed -n 's/.*"load_ms": \([0-9.]*\), "plan_ms": \([0-9.]*\).*/\1 \2/p' | awk '{print $1 + $2}' >>"$tmp/lp"
	done
	RUNS=$((runs + 1)) node bench/load_ort.js "$m" | sed -n 's/.*"create_ms": *\[\(.*\)\].*/\1/p' | tr ',' '\n' >"$tmp/ort"
	a=$(median <"$tmp/load"); b=$(median <"$tmp/lp"); o1=$(head -n 1 "$tmp/ort"); o=$(tail -n +2 "$tmp/ort" | median)
	rm -f "$tmp/load" "$tmp/lp"
	rows+=("$model $a $b $o1 $o")
	printf '%-50s aidos load %6.2f ms, load+plan %6.2f ms | ORT create first %7.2f ms, warm %6.2f ms\n' "$model" "$a" "$b" "$o1" "$o"
done < <(awk '/^case /{m=""; st=-1; ins=""} /^model /{m=$2} /^step /{st=$2} /^in /{if (st==0) ins=ins" "$2"="$3}
	/^end/{if (m!="") print m "\t" ins}' "$cache/golden/manifest.txt")
{
	echo "{\"runs\": $runs, \"threads\": 1, \"models\": {"
	for i in "${!rows[@]}"; do
		read -r m a b o1 o <<<"${rows[$i]}"
		printf '  "%s": {"aidos_load_ms": %s, "aidos_load_plan_ms": %s, "ort_create_first_ms": %s, "ort_create_warm_ms": %s}%s\n' "$m" "$a" "$b" "$o1" "$o" \
			"$([[ $i -lt $((${#rows[@]} - 1)) ]] && echo ,)"
	done
	echo "}}"
} >"$out/load-latest.json"
{
	echo "| model | aidos load (ms) | aidos load + plan (ms) | ORT create, first in process (ms) | ORT create, warm (ms) |"
	echo "|---|---:|---:|---:|---:|"
	for r in "${rows[@]}"; do
		read -r m a b o1 o <<<"$r"
		printf '| %s | %.2f | %.2f | %.2f | %.2f |\n' "$m" "$a" "$b" "$o1" "$o"
	done
	echo
	echo "Median of $runs runs each, 1 thread, $(date -u +%F), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores."
} >"$out/load-latest.md"
echo "wrote $out/load-latest.json and $out/load-latest.md"
# The chart: load + plan next to ORT's session creation, per model (log scale).
if command -v gnuplot >/dev/null 2>&1; then
	for r in "${rows[@]}"; do
		read -r m a b o1 o <<<"$r"
		echo "$(basename "$m" .onnx) $b $o1 $o"
	done >"$tmp/plot.dat"
	gnuplot <<GP || echo "load: gnuplot failed (chart not written)" >&2
set terminal pngcairo size 1100,520 font ",10" noenhanced
set output "$out/load-latest.png"
set title "Model load: aidos (mmap + decode + plan) vs ONNX Runtime 1.30 session create, 1 thread"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set logscale y
set ylabel "ms (log scale)"
set xtics rotate by -35 scale 0
set key top left
set grid ytics
plot "$tmp/plot.dat" using 2:xtic(1) title "aidos load + plan", '' using 3 title "ORT create (first in process)", '' using 4 title "ORT create (warm)"
GP
	echo "wrote $out/load-latest.png"
fi
