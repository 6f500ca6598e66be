#!/usr/bin/env bash
# bench/plot.sh - charts (gnuplot PNG) from the latest benchmark JSON:
#   bench/results/cluster-migration.png  migration time and pull time vs context size
#   bench/results/ucx-put.png            UCX put bandwidth vs size, aidos next to ucx_perftest
#   bench/results/gemm-latest.png        hal_gemm vs oneDNN sgemm, GFLOP/s of the square shapes
# (cpu-latest.png, aidos vs ONNX Runtime per model, is drawn by bench/cpu_report.py)
# Reads the JSON with /usr/bin/python3 (tooling only); skips a chart whose data is missing.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root/bench/results"
command -v gnuplot >/dev/null 2>&1 || { echo "plot: gnuplot missing (make deps)"; exit 0; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
if [[ -f cluster-latest.json ]]; then
	/usr/bin/python3 -c '
import json
for m in json.load(open("cluster-latest.json"))["migration"]:
    print(m["context_bytes"] / 1024, m["total_median_ms"], m["pull_median_ms"])' >"$tmp/mig.dat"
	gnuplot <<GP
set terminal pngcairo size 800,480 font ",10" noenhanced
set output "cluster-migration.png"
set title "Live migration of a stateful agent vs its context size (3-node cluster, UCX over TCP, veth)"
set logscale xy
set xlabel "context (KiB)"
set ylabel "ms"
set grid
set key top left
plot "$tmp/mig.dat" using 1:2 with linespoints title "migration total (coordinator)", "" using 1:3 with linespoints title "one-sided pull (target)"
GP
	echo "wrote bench/results/cluster-migration.png"
fi
if [[ -f ucx-put-latest.json ]]; then
	/usr/bin/python3 -c '
import json
for r in json.load(open("ucx-put-latest.json"))["results"]:
    print(r["size"] / 1024, r["aidos"]["gbps"], r["ucx_perftest"]["gbps"])' >"$tmp/put.dat"
	gnuplot <<GP
set terminal pngcairo size 800,480 font ",10" noenhanced
set output "ucx-put.png"
set title "UCX put bandwidth between two namespaces (TCP over veth)"
set logscale x
set xlabel "message (KiB)"
set ylabel "GB/s"
set grid
set key top left
plot "$tmp/put.dat" using 1:2 with linespoints title "aidos xport_put (blocking)", "" using 1:3 with linespoints title "ucx_perftest ucp_put_bw"
GP
	echo "wrote bench/results/ucx-put.png"
fi
if [[ -f gemm-latest.json ]]; then
	/usr/bin/python3 -c '
import json
rs = json.load(open("gemm-latest.json"))["results"]
ts = sorted({r["threads"] for r in rs})
for t in ts:
    with open("'"$tmp"'/gemm%d.dat" % t, "w") as f:
        for r in rs:
            if r["threads"] == t and r["what"] == "square":
                f.write("%d %.2f %.2f %.2f\n" % (r["N"], r["aidos_gflops"], r["aidos_prepacked_a_gflops"], r["dnnl_gflops"]))
print(" ".join(map(str, ts)))' >"$tmp/gemm-threads"
	plots=""
	for t in $(cat "$tmp/gemm-threads"); do
		[[ -n $plots ]] && plots+=", "
		plots+="\"$tmp/gemm$t.dat\" using 1:2 with linespoints lw 2 title \"aidos hal_gemm, $t thread(s)\", \"\" using 1:3 with linespoints dt 3 title \"aidos, A pre-packed, $t\", \"\" using 1:4 with linespoints dt 2 lw 2 title \"oneDNN dnnl_sgemm, $t\""
	done
	gnuplot <<GP
set terminal pngcairo size 900,480 font ",10" noenhanced
set output "gemm-latest.png"
set title "SGEMM, square M = N = K: aidos hal_gemm vs oneDNN 2.6.3 dnnl_sgemm (median GFLOP/s)"
set logscale x 2
set xlabel "M = N = K"
set ylabel "GFLOP/s"
set yrange [0:*]
set grid
set key top left
plot $plots
GP
	echo "wrote bench/results/gemm-latest.png"
fi
