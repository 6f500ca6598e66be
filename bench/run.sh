#!/usr/bin/env bash
# bench/run.sh BUILD_DIR - `make bench`: every benchmark, each running aidos
# and its peer side by side in one run and writing bench/results/*.json and
# a Markdown table. Benchmarks are measurements, never pass/fail tests.
#   bench/load.sh      model load + plan time next to ONNX Runtime's session creation
#   bench/hotpath.sh   system calls per request in steady state (perf)
#   bench/cluster.sh   placement latency, remote vs local inference, migration vs context size
#   bench/ucx_put.sh   UCX put bandwidth between two namespaces, next to ucx_perftest
#   bench/node.sh      node boot with 16 agents, idle CPU, high-priority latency under load
#   bench/ipc.sh       local clients: ping round trip, a model through the node vs in process, 1-8 clients
#   bench/cpu.sh       the FP engine vs ONNX Runtime on 11 models, 1 and 2 threads (`make bench-cpu`)
set -uo pipefail
build=${1:-build}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 2
status=0
for b in bench/cpu.sh bench/load.sh bench/hotpath.sh bench/cluster.sh bench/ucx_put.sh bench/node.sh bench/ipc.sh; do
	echo "== $b"
	"$b" "$build" || { echo "bench: $b failed (exit $?)" >&2; status=1; }
done
# Scheduling (issue 6): high-priority p99 unloaded / loaded / after automatic
# rebalancing (bench/rebalance.sh), and the coordinator's placement decision
# at 1,000 nodes x 100,000 agents (bench/coord_place.c). The simulator is
# `make sim` (bench/sim.sh).
echo "== bench/rebalance.sh"
bench/rebalance.sh "$build" || { echo "bench: bench/rebalance.sh failed (exit $?)" >&2; status=1; }
echo "== bench/coord_place"
"$build/bench/coord_place" --json bench/results/coord-place-latest.json || { echo "bench: coord_place failed" >&2; status=1; }
"$root/bench/plot.sh" || status=1
exit $status
