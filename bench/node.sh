#!/usr/bin/env bash
# bench/node.sh BUILD_DIR - the node kernel (docs/benchmarks.md, "node"):
#   boot      aidos-node standalone with 16 agents configured (12 distinct
#             models + 4 sharing one) and its local-client socket
#             (--socket), boot_ms from its ready line, 5 boots
#   idle      CPU the booted node uses in 10 s of idleness (/proc/PID/stat
#             utime + stime), as % of one core, with one local client
#             connected (`aidos ping` then idle: its poller must sleep)
#   priority  high-priority p50/p99 through the dispatcher, unloaded and under
#             a saturating low-priority load (bench/node_prio, in process)
# Writes bench/results/node-latest.json and .md. A measurement, not a test.
set -uo pipefail
build=${1:-build}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 2
cache=${AIDOS_CACHE:-$HOME/.cache/aidos}
models=$cache/models
out=bench/results
mkdir -p "$out"
node=$build/aidos-node
if [[ ! -x $node || ! -d $models/openwakeword ]]; then
	echo "node bench: $node or $models missing (make, make models)"
	exit 0
fi
tmp=$(mktemp -d /tmp/aidos-bench-node.XXXXXX)
pid=
cleanup() {
	[[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

# 16 agents: every model of the openWakeWord and VAD packages, then copies.
{
	echo "name = bench"
	echo "data_dir = $tmp/data"
	i=0
	for f in "$models"/openwakeword/*.onnx "$models"/vad-web/*.onnx; do
		((i < 16)) || break
		echo "agent a$i model=$f priority=$((i % 3)) quota=256M deadline_ms=50"
		i=$((i + 1))
	done
	while ((i < 16)); do
		echo "agent a$i model=$models/openwakeword/hey_jarvis_v0.1.onnx"
		i=$((i + 1))
	done
} >"$tmp/node.conf"
nmodels=$(grep -o 'model=[^ ]*' "$tmp/node.conf" | sort -u | wc -l)

# Starts the node in the background; sets pid and boot (ms).
start_node() {
	rm -rf "$tmp/data"
	: >"$tmp/ready"
	"$node" --config "$tmp/node.conf" --socket "$tmp/node.sock" >"$tmp/ready" 2>"$tmp/log" &
	pid=$!
	for _ in $(seq 1 500); do
		grep -q '^aidos-node ready' "$tmp/ready" && break
		sleep 0.01
	done
	boot=$(sed -n 's/^aidos-node ready boot_ms=\([0-9.]*\).*/\1/p' "$tmp/ready")
}
stop_node() {
	kill -TERM "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	pid=
}

boots=()
for _ in 1 2 3 4 5; do
	start_node
	[[ -n $boot ]] || { echo "node bench: no ready line"; cat "$tmp/log"; exit 1; }
	boots+=("$boot")
	stop_node
done
sorted=$(printf '%s\n' "${boots[@]}" | sort -g)
boot_med=$(echo "$sorted" | sed -n 3p)
boot_max=$(echo "$sorted" | tail -n1)
echo "boot with 16 agents ($nmodels models): median ${boot_med} ms, max ${boot_max} ms (${boots[*]})"

# Idle CPU over 10 s, one local client connected and idle (the Python
# binding: it pings once, then sleeps holding its connection).
start_node
AIDOS_LIB=$build/libaidos.so PYTHONPATH=$root/node/python timeout 20 /usr/bin/python3 -c '
import sys, time, aidos
c = aidos.Client(sys.argv[1]); c.ping(); time.sleep(12)' "$tmp/node.sock" &
cpid=$!
sleep 1
hz=$(getconf CLK_TCK)
t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
sleep 10
t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
idle=$(awk -v a="$t0" -v b="$t1" -v hz="$hz" 'BEGIN { printf "%.2f", (b - a) / hz / 10 * 100 }')
threads=$(ls "/proc/$pid/task" | wc -l)
kill "$cpid" 2>/dev/null; wait "$cpid" 2>/dev/null
stop_node
echo "idle: ${idle}% of one core over 10 s ($threads threads)"

prio=$("$build/bench/node_prio" "$models" --n 2000 2>/dev/null | tail -n1)
echo "priority: $prio"
# The same with the top-class worker and the client SCHED_FIFO (root), so
# the figure is the dispatcher's, not other processes' on a shared machine.
prio_rt=$("$build/bench/node_prio" "$models" --n 2000 --rt 10 2>/dev/null | tail -n1)
echo "priority (rt): $prio_rt"

cat >"$out/node-latest.json" <<EOF
{"bench":"node","boot_ms":{"median":$boot_med,"max":$boot_max,"agents":16,"models":$nmodels},
 "idle_cpu_percent":$idle,"idle_threads":$threads,
 "priority":$prio,
 "priority_rt":$prio_rt}
EOF
p() { python3 -c "import json,sys; d=json.loads(sys.argv[1]); print($2)" "$prio"; }
prt() { python3 -c "import json,sys; d=json.loads(sys.argv[1]); print($2)" "$prio_rt"; }
load=$(cut -d' ' -f1 /proc/loadavg)
{
	echo "| measure | aidos-node | note |"
	echo "|---|---|---|"
	echo "| boot to ready, 16 agents ($nmodels models) | ${boot_med} ms median, ${boot_max} ms max | target <= 100 ms |"
	echo "| idle CPU, 10 s | ${idle}% of a core | target < 1% |"
	if [[ $prio == *hp_loaded_us* ]]; then
		echo "| high-priority p50 / p99, unloaded | $(p d "'%.0f / %.0f us' % (d['hp_unloaded_us']['p50'], d['hp_unloaded_us']['p99'])") | in process, node_run |"
		echo "| high-priority p50 / p99, saturating low-priority load | $(p d "'%.0f / %.0f us' % (d['hp_loaded_us']['p50'], d['hp_loaded_us']['p99'])") | p99 ratio $(p d "'%.2f' % d['p99_ratio']") (target <= 1.5) |"
	fi
	if [[ $prio_rt == *hp_loaded_us* && $prio_rt != *'"rt_prio":-'* ]]; then
		echo "| same, top-class worker + client SCHED_FIFO: unloaded | $(prt d "'%.0f / %.0f us' % (d['hp_unloaded_us']['p50'], d['hp_unloaded_us']['p99'])") | --rt-prio 10 |"
		echo "| same, SCHED_FIFO: saturating low-priority load | $(prt d "'%.0f / %.0f us' % (d['hp_loaded_us']['p50'], d['hp_loaded_us']['p99'])") | p99 ratio $(prt d "'%.2f' % d['p99_ratio']") (target <= 1.5) |"
	fi
	echo
	echo "Machine: $(nproc) cores, load average $load when measured (shared with other work)."
} >"$out/node-latest.md"
cat "$out/node-latest.md"
