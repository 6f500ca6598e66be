#!/usr/bin/env bash
# bench/rebalance.sh BUILD_DIR [OUT.json] - automatic rebalancing on the
# one-machine cluster (issue 6): two nodes in network namespaces, node K
# pinned to CPU K-1 (deploy/local-cluster.sh AIDOS_CPU_PIN=1) with one
# data-plane worker each. A high-priority agent `hi` (PaddleOCR cls, pinned
# to n1) is probed every 20 ms by bench/rebalance_load.c (itself pinned to
# n1's CPU, so its own scheduling is the same in every phase; n1 and the
# probe run SCHED_FIFO so other tenants of a small shared machine do not
# decide the percentiles):
#   unloaded  12 s, nothing else running;
# (every 60 ms with a sanitizer build, AIDOS_SAN=1, or AIDOS_REBALANCE_PERIOD_MS)
#   loaded    low-priority agents lo1, lo2 (same model, on n1) saturated by
#             4 back-to-back clients (pinned to the other CPU); the probe runs
#             from 0.5 s after the load starts until the first move;
#   after     once the coordinator has moved lo1 and lo2 to n2 by itself
#             (the load still running, now on n2), 12 s more.
# Prints the three p99s and writes OUT.json (default
# bench/results/rebalance-latest.json): {"unloaded_p99_ms", "loaded_p99_ms",
# "after_p99_ms", "after_over_unloaded", "p50s", "moves", "seconds_to_rebalance",
# "requests"}. Needs root and network namespaces: exits 77 otherwise.
set -uo pipefail
build=${1:-build}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 2
build=$(cd "$build" && pwd)
out=${2:-$root/bench/results/rebalance-latest.json}
PY=/usr/bin/python3
CACHE=${AIDOS_CACHE:-$HOME/.cache/aidos}
MODEL=$CACHE/models/ocr-models/ch_ppocr_mobile_v2.0_cls_infer.onnx
IN=$CACHE/golden/ocr_cls_192/in/x.npy
RL=$build/bench/rebalance_load

if [[ $(id -u) != 0 ]] || ! command -v taskset >/dev/null || ! ip netns add "aidos-probe-r$$" 2>/dev/null; then
	echo "rebalance: needs root, taskset and network namespaces: skipped"
	exit 77
fi
ip netns del "aidos-probe-r$$"
for f in "$MODEL" "$IN" "$RL" "$build/aidosctl"; do
	[[ -e $f ]] || { echo "rebalance: $f missing (make; make models): skipped"; exit 77; }
done
ncpu=$(nproc)
((ncpu >= 2)) || { echo "rebalance: needs 2 CPUs: skipped"; exit 77; }

waited=0
while ip link show aidosbr0 >/dev/null 2>&1 || ip netns list 2>/dev/null | grep -qE '^aidos-n[0-9]+'; do
	if ((waited >= ${AIDOS_CLUSTER_WAIT:-120})); then
		echo "rebalance: another local cluster is up for ${waited} s; not touching it"
		exit 1
	fi
	((waited == 0)) && echo "rebalance: another local cluster is up; waiting for it to go away"
	sleep 2
	waited=$((waited + 2))
done

work=$(mktemp -d "${TMPDIR:-/tmp}/aidos-rebalance.XXXXXX") || exit 1
export AIDOS_CLUSTER_DIR=$work/cluster AIDOS_BUILD=$build AIDOS_READY_TIMEOUT=20 AIDOS_CPU_PIN=1
export AIDOS_NODE_ARGS="--workers 1"
export AIDOS_COORD_ARGS="--rebalance on --rebalance-ms 1000 --lease-ms 3000"
loadpids=()
owned=0
cleanup() {
	local rc=$?
	trap - EXIT
	for p in "${loadpids[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${loadpids[@]}"; do wait "$p" 2>/dev/null; done
	[[ -n ${n2pid:-} ]] && kill -CONT "$n2pid" 2>/dev/null
	if ((owned)) && [[ -f $AIDOS_CLUSTER_DIR/mode ]]; then
		timeout 60 deploy/local-cluster.sh down >"$work/down.out" 2>&1
	fi
	if [[ -d $work/cluster/logs ]]; then
		rm -rf "$build/test-logs/rebalance"
		mkdir -p "$build/test-logs"
		cp -r "$work/cluster/logs" "$build/test-logs/rebalance" 2>/dev/null
		cp "$work"/*.tsv "$build/test-logs/rebalance/" 2>/dev/null
	fi
	rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

owned=1
timeout 90 deploy/local-cluster.sh up 2 >"$work/up.out" 2>&1 || { echo "rebalance: cluster did not come up:"; tail -n 5 "$work/up.out"; exit 1; }
COORD=$(sed -n 's/^AIDOS_COORD=//p' "$work/up.out" | tail -n 1)
ctl() { timeout 25 "$build/aidosctl" --coord "$COORD" "$@"; }
pyj() { "$PY" -c "import json,sys; d=json.load(sys.stdin); $1"; }
node_state() { ctl nodes --json | pyj "print(next((n['state'] for n in d['nodes'] if n['name']=='$1'), ''))"; }
agent_node() { ctl agents --json | pyj "print(next((a['node'] for a in d['agents'] if a['name']=='$1'), ''))"; }
wait_for() {   # wait_for SECONDS CMD...: until CMD succeeds
	local t=$1 i
	shift
	for ((i = 0; i < t * 10; i++)); do "$@" && return 0; sleep 0.1; done
	return 1
}

# n2 out of the way while the agents are placed (stopped: declared DEAD),
# so they all start on n1 unpinned, then back (it registers again).
n2pid=$(cat "$AIDOS_CLUSTER_DIR/pids/n2.pid")
kill -STOP "$n2pid"
wait_for 10 bash -c "[[ \$(\"$build/aidosctl\" --coord $COORD nodes --json | $PY -c \"import json,sys; print([n['state'] for n in json.load(sys.stdin)['nodes'] if n['name']=='n2'][0])\") == DEAD ]]" ||
	{ echo "rebalance: n2 not declared dead"; exit 1; }
ctl place hi "$MODEL" --priority 200 --node n1 >/dev/null || exit 1
ctl place lo1 "$MODEL" --priority 0 >/dev/null || exit 1
ctl place lo2 "$MODEL" --priority 0 >/dev/null || exit 1
kill -CONT "$n2pid"
n2pid=""
wait_for 15 bash -c "[[ \$(\"$build/aidosctl\" --coord $COORD nodes --json | $PY -c \"import json,sys; print([n['state'] for n in json.load(sys.stdin)['nodes'] if n['name']=='n2'][0])\") == READY ]]" ||
	{ echo "rebalance: n2 did not come back"; exit 1; }
for a in hi lo1 lo2; do
	[[ $(agent_node $a) == n1 ]] || { echo "rebalance: $a is not on n1"; exit 1; }
done

# n1 (every thread) and the probe run at nice -15 on CPU 0, so what other
# tenants of this small shared machine run does not decide the percentiles;
# the loaded phase runs under exactly the same settings. (Real-time classes
# starve gRPC's own threads: not used.)
n1pid=$(cat "$AIDOS_CLUSTER_DIR/pids/n1.pid")
for t in /proc/"$n1pid"/task/*; do renice -n -15 -p "${t##*/}" >/dev/null 2>&1; done
# n2 above its own clients (nice -10) so its heartbeats are never starved
for t in /proc/"$(cat "$AIDOS_CLUSTER_DIR/pids/n2.pid")"/task/*; do renice -n -10 -p "${t##*/}" >/dev/null 2>&1; done
RT=(nice -n -15)
# probe period: 20 ms (sanitizer builds run the model ~5x slower: 60 ms)
PERIOD=${AIDOS_REBALANCE_PERIOD_MS:-20}
[[ ${AIDOS_SAN:-0} == 1 && -z ${AIDOS_REBALANCE_PERIOD_MS:-} ]] && PERIOD=60
probe() { "${RT[@]}" taskset -c 0 "$RL" "$COORD" hi "$1" "$PERIOD" "$work/$2.tsv" "x=$IN" >"$work/$2.json" 2>"$work/$2.err" || { cat "$work/$2.err"; return 1; }; }

# 1. unloaded (a short warm-up first: the model's estimate and the client's endpoint)
probe 2 warm || exit 1
probe 12 unloaded || exit 1

# 2. loaded: 4 saturating low-priority clients on the other CPU
t_load=${EPOCHREALTIME/./}
for a in lo1 lo2 lo1 lo2; do
	taskset -c 1 "$RL" "$COORD" "$a" 120 0 "$work/load-$a-${#loadpids[@]}.tsv" "x=$IN" >/dev/null &
	loadpids+=($!)
done
sleep 0.5
# the probe runs until the first rebalancing move (or 20 s)
# (nice and taskset exec: $! is the probe itself, so the kill below stops it)
"${RT[@]}" taskset -c 0 "$RL" "$COORD" hi 20 "$PERIOD" "$work/loaded.tsv" "x=$IN" >"$work/loaded.json" 2>&1 &
ppid=$!
first=""
for ((i = 0; i < 200; i++)); do
	if ctl top --json | pyj "import sys; sys.exit(0 if any(e['kind']=='rebalance' for e in d['events']) else 1)"; then
		first=${EPOCHREALTIME/./}
		break
	fi
	sleep 0.1
done
kill "$ppid" 2>/dev/null
wait "$ppid" 2>/dev/null
[[ -n $first ]] || { echo "rebalance: no move within 20 s of the load"; ctl top --once; exit 1; }

# 3. after: both low-priority agents moved away by the coordinator (under
# sanitizers, where the model is ~5x slower and one saturated agent alone
# may stay under the overload threshold, at least one)
want=2
[[ ${AIDOS_SAN:-0} == 1 ]] && want=1
wait_for 40 bash -c "[[ \$(\"$build/aidosctl\" --coord $COORD agents --json | $PY -c \"import json,sys; print(sum(a['node']=='n2' for a in json.load(sys.stdin)['agents'] if a['name'] in ('lo1','lo2')))\") -ge $want ]]" ||
	{ echo "rebalance: fewer than $want of lo1, lo2 moved to n2"; ctl top --once; exit 1; }
done_us=${EPOCHREALTIME/./}
sleep 2
probe 12 after || exit 1
ctl top --json >"$work/top.json"
ctl explain lo1 >"$work/explain.txt" 2>&1
for p in "${loadpids[@]}"; do kill "$p" 2>/dev/null; done
for p in "${loadpids[@]}"; do wait "$p" 2>/dev/null; done
loadpids=()
mkdir -p "$(dirname "$out")"
PERIOD=$PERIOD "$PY" - "$work" "$out" "$(( (first - t_load) / 1000 ))" "$(( (done_us - t_load) / 1000 ))" <<'PY'
import json, sys
w, out, first_ms, done_ms = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def rtts(name):
    v = sorted(float(l.split('\t')[1]) for l in open('%s/%s.tsv' % (w, name)) if l.strip())
    return v
def q(v, p):
    return v[min(len(v) - 1, max(0, int(p * len(v) + 0.999999) - 1))] if v else 0.0
r = {k: rtts(k) for k in ('unloaded', 'loaded', 'after')}
top = json.load(open(w + '/top.json'))
moves = [{'agent': e['agent'], 'from': e['from'], 'to': e['to'], 'reason': e['reason']}
         for e in top['events'] if e['kind'] == 'rebalance']
res = {
    'unloaded_p99_ms': q(r['unloaded'], .99), 'loaded_p99_ms': q(r['loaded'], .99), 'after_p99_ms': q(r['after'], .99),
    'after_over_unloaded': q(r['after'], .99) / max(1e-9, q(r['unloaded'], .99)),
    'p50s': {k: q(v, .5) for k, v in r.items()},
    'requests': {k: len(v) for k, v in r.items()},
    'seconds_to_first_move': first_ms / 1000.0, 'seconds_to_rebalance': done_ms / 1000.0,
    'moves': moves,
    'setup': '2 nodes in netns, node K on CPU K-1, --workers 1, n1 and the probe at nice -15 on CPU 0; '
             'hi (priority 200) probed every %s ms; ' % __import__('os').environ.get('PERIOD', '20') +
             'lo1, lo2 (priority 0) saturated by 4 closed-loop clients; PaddleOCR cls 192',
}
json.dump(res, open(out, 'w'), indent=1)
print('rebalance: unloaded p99 %.2f ms, loaded p99 %.2f ms, after rebalancing p99 %.2f ms (x%.2f of unloaded); '
      'first move %.1f s after the load, both moved %.1f s' % (res['unloaded_p99_ms'], res['loaded_p99_ms'],
      res['after_p99_ms'], res['after_over_unloaded'], first_ms / 1000.0, done_ms / 1000.0))
print('rebalance: p50 unloaded %.2f, loaded %.2f, after %.2f ms; requests %s' % (res['p50s']['unloaded'],
      res['p50s']['loaded'], res['p50s']['after'], res['requests']))
for m in moves:
    print('rebalance: moved %s %s -> %s: %s' % (m['agent'], m['from'], m['to'], m['reason']))
PY
