#!/usr/bin/env bash
# bench/cluster.sh [BUILD_DIR] - benchmarks of an aidos cluster on one
# machine: a coordinator and 3 nodes from deploy/local-cluster.sh (network
# namespaces and UCX over TCP across veth links as root; the loopback
# fallback on 127.0.0.1 otherwise, said in the results).
#
#   placement   Coordinator.Place + Kill of a small model N times over one
#               gRPC channel (bench/remote_infer.c place), and the same with a
#               fresh `aidosctl place` / `aidosctl kill` process each time:
#               median and p99 of each
#   inference   hey_jarvis (0.04 ms) and PaddleOCR cls (~5 ms) locally
#               (`aidos run --repeat`, the peer, same machine, same run) vs
#               remotely: one `aidosctl infer` process per request (resolve +
#               UCX setup + request) and a persistent client
#               (bench/remote_infer.c infer: one endpoint, many requests);
#               the overhead is remote median - local median
#   migration   `aidosctl migrate` of a synthetic stateful model
#               (tests/tools/state_model.py: stateN = state + x over a
#               float32 state of 4 KiB .. 64 MiB) back and forth between two
#               nodes: total time (coordinator) and the target's pull time
#
# Writes bench/results/cluster-latest.json and docs/benchmarks-cluster.md
# and prints the table. Needs the cached models (make models) and
# /usr/bin/python3 with numpy and onnx. The cluster is always torn down.
# Env: AIDOS_BENCH_PLACE_N (50), AIDOS_BENCH_INFER_N (persistent client
# requests, 1000), AIDOS_BENCH_CLI_N (aidosctl runs, 20), AIDOS_BENCH_MIG_R
# (migrations per size, 4), AIDOS_BENCH_SIZES (bytes, default 4 KiB 64 KiB
# 1 MiB 16 MiB 64 MiB).
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-build}
cd "$root" || exit 2
[[ -d $build ]] || { echo "bench/cluster.sh: no build dir $build: run make"; exit 1; }
build=$(cd "$build" && pwd)
for b in aidos aidosctl aidos-node aidos-coord libaidos.a; do
	[[ -e $build/$b ]] || { echo "bench/cluster.sh: $build/$b missing: run make"; exit 1; }
done
CACHE=${AIDOS_CACHE:-$HOME/.cache/aidos}
M=$CACHE/models G=$CACHE/golden
PY=/usr/bin/python3
[[ -x $PY ]] || PY=$(command -v python3 || echo python3)
"$PY" -c 'import numpy, onnx' 2>/dev/null || { echo "bench/cluster.sh: needs python3 with numpy and onnx (make deps)"; exit 1; }
JARVIS=$M/openwakeword/hey_jarvis_v0.1.onnx
CLS=$M/ocr-models/ch_ppocr_mobile_v2.0_cls_infer.onnx
for f in "$JARVIS" "$CLS" "$G/oww_hey_jarvis/in/x.1.npy" "$G/ocr_cls_192/in/x.npy"; do
	[[ -f $f ]] || { echo "bench/cluster.sh: $f missing: run make models"; exit 1; }
done
PLACE_N=${AIDOS_BENCH_PLACE_N:-50}
INFER_N=${AIDOS_BENCH_INFER_N:-1000}
CLI_N=${AIDOS_BENCH_CLI_N:-20}
MIG_R=${AIDOS_BENCH_MIG_R:-4}
read -r -a SIZES <<<"${AIDOS_BENCH_SIZES:-4096 65536 1048576 16777216 67108864}"

work=$(mktemp -d "${TMPDIR:-/tmp}/aidos-cluster-bench.XXXXXX") || exit 1
export AIDOS_CLUSTER_DIR=$work/cluster AIDOS_BUILD=$build
owned=0
cleanup() {
	local rc=$?
	trap - EXIT
	trap '' PIPE INT TERM HUP   # finish the tear-down whatever happens to our output
	# only a cluster our own `up` started (it writes DIR/mode after its
	# checks): `down` removes every aidos-n* namespace, whoever made them
	((owned)) && [[ -f $AIDOS_CLUSTER_DIR/mode ]] && timeout 60 deploy/local-cluster.sh down >/dev/null 2>&1
	rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
trap 'exit 141' PIPE

ctl() { timeout 60 "$build/aidosctl" --coord "$COORD" "$@"; }
pyj() { "$PY" -c "import json,sys; d=json.load(sys.stdin); $1"; }
agent_node() { ctl agents --json | pyj "print(next((a['node'] for a in d['agents'] if a['name']=='$1'), ''))"; }
# median and p99 of numbers on stdin, as JSON
mstats() { "$PY" -c "
import sys, json
v = sorted(float(x) for x in sys.stdin.read().split())
q = lambda p: v[min(len(v) - 1, max(0, int(p * len(v) + 0.999999) - 1))]
print(json.dumps({'n': len(v), 'median_ms': q(0.5), 'p99_ms': q(0.99), 'mean_ms': sum(v) / len(v), 'min_ms': v[0], 'max_ms': v[-1]}))"; }

# ---- the client and the cluster ----
RI=$build/bench/remote_infer   # built by make
[[ -x $RI ]] || { echo "bench/cluster.sh: $RI is missing: run make"; exit 1; }

if [[ $(id -u) == 0 ]]; then
	for ((w = 0; w < 60; w += 2)); do
		ip link show aidosbr0 >/dev/null 2>&1 || ip netns list 2>/dev/null | grep -qE '^aidos-n[0-9]+' || break
		((w == 0)) && echo "bench/cluster.sh: another local cluster is up; waiting up to 60 s"
		sleep 2
	done
	if ip link show aidosbr0 >/dev/null 2>&1; then
		echo "bench/cluster.sh: another local cluster is still up (bridge aidosbr0); not touching it"
		exit 1
	fi
fi
owned=1
timeout 90 deploy/local-cluster.sh up 3 >"$work/up.out" 2>&1 || {
	echo "bench/cluster.sh: deploy/local-cluster.sh up 3 failed:"
	tail -n 20 "$work/up.out"
	exit 1
}
COORD=$(sed -n 's/^AIDOS_COORD=//p' "$work/up.out" | tail -n 1)
MODE=$(cat "$AIDOS_CLUSTER_DIR/mode")
TRANSPORT=$(ctl nodes --json | pyj "print(d['nodes'][0]['transport'])")
echo "bench/cluster.sh: cluster up ($MODE, $TRANSPORT), coordinator $COORD"

# ---- placement ----
echo "placement: $PLACE_N x Place+Kill of hey_jarvis"
"$RI" place "$COORD" "$JARVIS" "$PLACE_N" >"$work/place.json" || exit 1
for ((i = 0; i < CLI_N; i++)); do
	t0=${EPOCHREALTIME/./}
	ctl place "cli-place-$i" "$JARVIS" >/dev/null || exit 1
	t1=${EPOCHREALTIME/./}
	ctl kill "cli-place-$i" >/dev/null || exit 1
	t2=${EPOCHREALTIME/./}
	echo "$(((t1 - t0) / 1000)).$(((t1 - t0) % 1000 / 10))" >>"$work/cli_place"
	echo "$(((t2 - t1) / 1000)).$(((t2 - t1) % 1000 / 10))" >>"$work/cli_kill"
done
mstats <"$work/cli_place" >"$work/cli_place.json"
mstats <"$work/cli_kill" >"$work/cli_kill.json"

# ---- remote vs local inference ----
declare -A MODEL=([jarvis]=$JARVIS [cls]=$CLS) INPUT=([jarvis]="x.1=$G/oww_hey_jarvis/in/x.1.npy" [cls]="x=$G/ocr_cls_192/in/x.npy")
for a in jarvis cls; do
	echo "inference: $a"
	ctl place "$a" "${MODEL[$a]}" --node n2 >/dev/null || exit 1
	n=$INFER_N
	[[ $a == cls ]] && n=$((INFER_N / 5 > 0 ? INFER_N / 5 : 1))
	mkdir -p "$work/o"
	"$build/aidos" run "${MODEL[$a]}" --input "${INPUT[$a]}" --output-dir "$work/o" --repeat "$((n > 200 ? n : 200))" --json \
		>"$work/local.$a.json" || exit 1
	"$RI" infer "$COORD" "$a" "$n" "${INPUT[$a]}" >"$work/remote.$a.json" || exit 1
	: >"$work/cli.$a"
	for ((i = 0; i < CLI_N; i++)); do
		mkdir -p "$work/o"
		ctl infer "$a" --input "${INPUT[$a]}" --output-dir "$work/o" --json >"$work/cli1.json" || exit 1
		pyj "print(d['latency_ms'], d['request_ms'], d['exec_ms'])" <"$work/cli1.json" >>"$work/cli.$a"
	done
	awk '{print $1}' "$work/cli.$a" | mstats >"$work/cli.$a.lat.json"
	awk '{print $2}' "$work/cli.$a" | mstats >"$work/cli.$a.req.json"
done

# ---- migration vs context size ----
"$PY" -c "import numpy as np; np.save('$work/one.npy', np.ones([1], np.float32))" || exit 1
for s in "${SIZES[@]}"; do
	echo "migration: state of $s bytes"
	"$PY" tests/tools/state_model.py "$work/state_$s.onnx" "$s" || exit 1
	ctl place "mig$s" "$work/state_$s.onnx" --stateful >/dev/null || exit 1
	cur=$(agent_node "mig$s")
	# one request so the context is not all zeros (the reply carries the
	# state, so not for 64 MiB: over the 64 MiB message limit)
	if ((s < (32 << 20))); then
		ctl infer "mig$s" --input "x=$work/one.npy" --output-dir "$work/o" >/dev/null || exit 1
	fi
	: >"$work/mig.$s"
	for ((r = 0; r < MIG_R; r++)); do
		to=n1
		[[ $cur == n1 ]] && to=n3
		out=$(ctl migrate "mig$s" --to "$to") || exit 1
		ms=$(sed -n 's/.* in \([0-9.]*\) ms (context.*/\1/p' <<<"$out")
		cli=$(sed -n 's/.*; \([0-9.]*\) ms seen by aidosctl.*/\1/p' <<<"$out")
		pull=$(grep "agent mig$s: context pulled by $to in" "$AIDOS_CLUSTER_DIR/logs/coord.log" | tail -n 1 |
			sed -n 's/.* in \([0-9.]*\) ms.*/\1/p')
		echo "$ms ${pull:-0} ${cli:-0}" >>"$work/mig.$s"
		cur=$to
	done
	ctl kill "mig$s" >/dev/null
done

# ---- results ----
mkdir -p bench/results docs
"$PY" - "$work" "$MODE" "$TRANSPORT" "$PLACE_N" "$CLI_N" "${SIZES[*]}" <<'EOF'
import json, os, platform, subprocess, sys, time
work, mode, transport, place_n, cli_n, sizes = sys.argv[1:7]
sizes = [int(s) for s in sizes.split()]
L = lambda p: json.load(open(os.path.join(work, p)))
def q(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, max(0, int(p * len(v) + 0.999999) - 1))]
cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), '?')
res = {
    'format': 1,
    'when': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
    'machine': {'cpu': cpu, 'cores': os.cpu_count(), 'kernel': platform.release()},
    'cluster': {'mode': mode, 'nodes': 3, 'transport': transport,
                'about': 'deploy/local-cluster.sh up 3: ' + ('each node in its own network namespace and IPC namespace, UCX over TCP across veth links and the bridge aidosbr0' if mode == 'netns' else 'processes on 127.0.0.1 (loopback fallback), UCX over TCP on lo')},
    'placement': {'rpc': L('place.json'), 'cli_place': L('cli_place.json'), 'cli_kill': L('cli_kill.json')},
    'inference': {}, 'migration': [],
}
for a in ('jarvis', 'cls'):
    loc, rem = L('local.%s.json' % a), L('remote.%s.json' % a)
    res['inference'][a] = {
        'local_aidos_run': {'median_ms': loc['latency_ms']['median'], 'p90_ms': loc['latency_ms']['p90'], 'runs': loc['runs']},
        'remote_persistent': rem,
        'remote_aidosctl': {'latency': L('cli.%s.lat.json' % a), 'request': L('cli.%s.req.json' % a)},
        'overhead_persistent_ms': rem['round_trip']['median_ms'] - loc['latency_ms']['median'],
        'overhead_aidosctl_ms': L('cli.%s.lat.json' % a)['median_ms'] - loc['latency_ms']['median'],
    }
for s in sizes:
    rows = [list(map(float, l.split())) for l in open(os.path.join(work, 'mig.%d' % s)) if l.strip()]
    tot, pull, cli = [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]
    res['migration'].append({'context_bytes': s, 'n': len(rows),
                             'total_median_ms': q(tot, 0.5), 'total_max_ms': max(tot),
                             'pull_median_ms': q(pull, 0.5), 'aidosctl_median_ms': q(cli, 0.5),
                             'pull_gb_s': s / (q(pull, 0.5) * 1e6) if q(pull, 0.5) > 0 else None})
os.makedirs('bench/results', exist_ok=True)
json.dump(res, open('bench/results/cluster-latest.json', 'w'), indent=1)

def sz(b):
    return '%d MiB' % (b >> 20) if b >= 1 << 20 else '%d KiB' % (b >> 10)
md = []
md.append('# aidos cluster benchmarks\n')
md.append('Written by `bench/cluster.sh` (`make bench`) on %s: %s, %d cores, Linux %s. Cluster: %s, transport `%s`.'
          ' Numbers from one run on a small shared machine: compare rows of the same run, not across machines.'
          ' Raw data: `bench/results/cluster-latest.json`.\n' % (res['when'], cpu, os.cpu_count(), platform.release(),
          res['cluster']['about'], transport))
p = res['placement']
md.append('## Placement (coordinator)\n')
md.append('| what | n | median ms | p99 ms |')
md.append('|---|---|---|---|')
md.append('| Place (gRPC, one channel; includes the node loading the model) | %d | %.2f | %.2f |' % (p['rpc']['n'], p['rpc']['place']['median_ms'], p['rpc']['place']['p99_ms']))
md.append('| Kill (gRPC, one channel) | %d | %.2f | %.2f |' % (p['rpc']['n'], p['rpc']['kill']['median_ms'], p['rpc']['kill']['p99_ms']))
md.append('| `aidosctl place` (process start to exit) | %d | %.2f | %.2f |' % (p['cli_place']['n'], p['cli_place']['median_ms'], p['cli_place']['p99_ms']))
md.append('| `aidosctl kill` | %d | %.2f | %.2f |' % (p['cli_kill']['n'], p['cli_kill']['median_ms'], p['cli_kill']['p99_ms']))
md.append('\nModel: hey_jarvis_v0.1.onnx (1.3 MB), unpinned (the scheduler chooses).\n')
md.append('## Remote vs local inference\n')
md.append('| model | local `aidos run` median ms | remote, persistent client median / p99 ms | node exec median ms | overhead (persistent) ms | `aidosctl infer` end to end median ms | of which request ms | overhead (aidosctl) ms |')
md.append('|---|---|---|---|---|---|---|---|')
for a, name in (('jarvis', 'hey_jarvis [1,16,96]'), ('cls', 'PaddleOCR cls [1,3,48,192]')):
    i = res['inference'][a]
    r = i['remote_persistent']
    md.append('| %s | %.3f | %.3f / %.3f | %.3f | %.3f | %.2f | %.2f | %.2f |' % (
        name, i['local_aidos_run']['median_ms'], r['round_trip']['median_ms'], r['round_trip']['p99_ms'],
        r['exec']['median_ms'], i['overhead_persistent_ms'], i['remote_aidosctl']['latency']['median_ms'],
        i['remote_aidosctl']['request']['median_ms'], i['overhead_aidosctl_ms']))
md.append('\nPersistent client: `bench/remote_infer.c` (one UCX endpoint, %d requests after 5 warm-up, one in flight); `aidosctl infer`: a new process per request (%s runs: resolve + UCX worker and endpoint setup + request). Lanes: `%s`.\n'
          % (res['inference']['jarvis']['remote_persistent']['n'], cli_n, res['inference']['jarvis']['remote_persistent']['lanes']))
md.append('## Migration vs context size\n')
md.append('| context | migrations | total median ms (coordinator) | total max ms | target pull median ms | pull GB/s | `aidosctl migrate` median ms |')
md.append('|---|---|---|---|---|---|---|')
for m in res['migration']:
    md.append('| %s | %d | %.2f | %.2f | %.2f | %s | %.2f |' % (sz(m['context_bytes']), m['n'], m['total_median_ms'], m['total_max_ms'],
              m['pull_median_ms'], '%.3f' % m['pull_gb_s'] if m['pull_gb_s'] else '-', m['aidosctl_median_ms']))
md.append('\nSynthetic model `tests/tools/state_model.py` (stateN = state + x over one float32 state; `--stateful`), migrated back and forth between two nodes: freeze and export on the source (register the region, FNV-1a over it), the target loads the model, allocates a zeroed region and pulls it with one `xport_get` (software RMA over TCP), FNV-1a again, directory flip, release on the source. The pull column is the transfer alone; for large contexts most of the rest is the two byte-wise FNV-1a passes and the allocation and registration of the region (node logs: export and import each take about as long as the pull at 64 MiB).\n')
open('docs/benchmarks-cluster.md', 'w').write('\n'.join(md))
print('\n'.join(md))
EOF
echo "bench/cluster.sh: wrote bench/results/cluster-latest.json and docs/benchmarks-cluster.md"
