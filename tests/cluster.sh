#!/usr/bin/env bash
# tests/cluster.sh BUILD_DIR - integration tests of an aidos cluster on one
# machine (docs/cluster.md): a coordinator and 3 nodes brought up by
# deploy/local-cluster.sh, driven with aidosctl.
#
# Checks (each prints "PASS|FAIL|SKIP <name>: <measured figure>"):
#   1 up        3 nodes READY in `aidosctl nodes --json`, each on UCX over TCP
#               (over the veth links as root: never sysv/cma/posix)
#   2 infer     stateless agents on different nodes (PaddleOCR cls,
#               melspectrogram, hey_jarvis, Silero v5 fed its state) answer
#               `aidosctl infer` byte-identically (cmp of the .npy files) to
#               `aidos run` on the same golden inputs
#   3 migrate   stateful Silero v5 fed 20 chunks, migrated after chunk 10,
#               gives the same 20 outputs (and states) as an unmigrated agent,
#               and as `aidos run` carrying the state by hand
#   5 restart   a coordinator killed with -9 and started again on its data dir
#               lists the same nodes and agents (run before 4: all 3 nodes up)
#   4 failover  kill -9 of a node: declared DEAD within 2 s, its stateless
#               agents answer again from other nodes within 3 s of the kill
#   6 garbage   raw gRPC garbage to the coordinator and every node
#               (tests/tools/rpc_garbage.c), wrong but well-formed Node
#               requests, garbage UCX tag messages to each node's data plane,
#               unknown agents and nodes for every aidosctl command, and the
#               migration source killed mid-pull of an 8 MiB context (its veth
#               slowed with tc tbf so the pull lasts ~2 s): each a clear error,
#               and the cluster still serves afterwards
#
# As root where `ip netns` works, the cluster runs in network namespaces
# (local-cluster.sh's netns mode). Otherwise (not root, or no namespaces)
# local-cluster.sh runs the loopback fallback: the same checks run on
# 127.0.0.1 (the veth-specific parts are SKIPs), the summary counts them, and
# the script exits 77 ("namespace variant skipped") when nothing failed.
#
# Needs: BUILD_DIR/{aidos,aidosctl,aidos-node,aidos-coord,libaidos.a}, cc,
# the cached models (make models; AIDOS_CACHE, default ~/.cache/aidos), and
# /usr/bin/python3 with numpy and onnx (deps.sh installs them) for the chunk
# files and the synthetic stateful model; a check whose inputs are missing is
# a SKIP that says why. Every command runs under `timeout`; the cluster is
# always torn down (trap), and its logs are kept in BUILD_DIR/test-logs/cluster/.
# Env: AIDOS_CLUSTER_WAIT (s to wait for another local cluster to go away
# before failing, default 60). Last line: `N passed, N failed, N skipped`.
set -uo pipefail

if [[ $# -ne 1 || ! -d $1 ]]; then
	echo "usage: tests/cluster.sh BUILD_DIR" >&2
	exit 2
fi
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$(cd "$1" && pwd)
cd "$root" || exit 2

CACHE=${AIDOS_CACHE:-$HOME/.cache/aidos}
M=$CACHE/models
G=$CACHE/golden
PY=/usr/bin/python3
[[ -x $PY ]] || PY=$(command -v python3 || echo python3)
T_START=${EPOCHREALTIME/./}

passed=0 failed=0 skipped=0
pass() { printf '    PASS %s: %s\n' "$1" "$2"; passed=$((passed + 1)); }
fail() { printf '    FAIL %s: %s\n' "$1" "$2"; failed=$((failed + 1)); }
skip() { printf '    SKIP %s: %s\n' "$1" "$2"; skipped=$((skipped + 1)); }
note() { printf '      %s\n' "$*"; }
summary() {
	local us=$((${EPOCHREALTIME/./} - T_START))
	echo "cluster.sh: mode $MODE, $((us / 1000000)).$((us / 100000 % 10)) s"
	echo "$passed passed, $failed failed, $skipped skipped"
}

# Microseconds since the epoch; ms between two of them with one decimal.
now_us() { echo "${EPOCHREALTIME/./}"; }
ms_since() { local d=$(($2 - $1)); printf '%d.%d' $((d / 1000)) $((d / 100 % 10)); }

for b in aidos aidosctl aidos-node aidos-coord libaidos.a; do
	if [[ ! -e $build/$b ]]; then
		echo "cluster.sh: $build/$b missing: run make"
		echo "0 passed, 1 failed, 0 skipped"
		exit 1
	fi
done

# ---- mode: namespaces as root, else the loopback fallback ----
MODE=loopback
why_loopback=""
if [[ $(id -u) != 0 ]]; then
	why_loopback="not root"
elif ! command -v ip >/dev/null || ! command -v unshare >/dev/null; then
	why_loopback="ip or unshare not installed"
elif ! ip netns add "aidos-probe-t$$" 2>/dev/null; then
	why_loopback="cannot create network namespaces here"
else
	ip netns del "aidos-probe-t$$" 2>/dev/null
	MODE=netns
fi
if [[ $MODE == loopback ]]; then
	echo "cluster.sh: $why_loopback: the namespace variant is skipped; running the loopback fallback (local-cluster.sh on 127.0.0.1)"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/aidos-cluster-test.XXXXXX") || exit 1
export AIDOS_CLUSTER_DIR=$work/cluster AIDOS_BUILD=$build AIDOS_READY_TIMEOUT=20
COORD=""
cluster_owned=0

teardown() {
	local rc=$?
	trap - EXIT
	trap '' PIPE INT TERM HUP   # finish the tear-down whatever happens to our output
	# `down` removes every aidos-n* namespace and the bridge, whoever made
	# them: only when our own `up` got past its checks (it writes DIR/mode
	# then; DIR is private to this run).
	if ((cluster_owned)) && [[ -f $AIDOS_CLUSTER_DIR/mode ]]; then
		timeout 60 deploy/local-cluster.sh down >"$work/down.out" 2>&1 ||
			echo "cluster.sh: local-cluster.sh down failed: $(tail -n 3 "$work/down.out")"
	fi
	if [[ -d $work/cluster/logs ]]; then
		rm -rf "$build/test-logs/cluster"
		mkdir -p "$build/test-logs"
		cp -r "$work/cluster/logs" "$build/test-logs/cluster" 2>/dev/null
	fi
	rm -rf "$work"
	exit "$rc"
}
trap teardown EXIT
trap 'echo "cluster.sh: interrupted"; exit 130' INT TERM HUP
trap 'exit 141' PIPE

finish() {
	summary
	if ((failed)); then exit 1; fi
	[[ $MODE == loopback ]] && exit 77
	exit 0
}

ctl() { timeout "${CTL_T:-25}" "$build/aidosctl" --coord "$COORD" "$@"; }
# JSON on stdin -> python expression over `d`
pyj() { "$PY" -c "import json,sys; d=json.load(sys.stdin); $1"; }
agent_node() { ctl agents --json | pyj "print(next((a['node'] for a in d['agents'] if a['name']=='$1'), ''))"; }
pid_of() { local p; p=$(cat "$AIDOS_CLUSTER_DIR/pids/$1.pid" 2>/dev/null) && kill -0 "$p" 2>/dev/null && echo "$p"; }

# ---- inputs ----
have_np=0 have_onnx=0
"$PY" -c 'import numpy' 2>/dev/null && have_np=1
"$PY" -c 'import onnx, numpy' 2>/dev/null && have_onnx=1
CLS=$M/ocr-models/ch_ppocr_mobile_v2.0_cls_infer.onnx
MEL=$M/openwakeword/melspectrogram.onnx
JARVIS=$M/openwakeword/hey_jarvis_v0.1.onnx
VAD=$M/vad-web/silero_vad_v5.onnx
mkdir -p "$work/in"
if ((have_np)); then
	"$PY" "$root/tests/tools/vad_chunks.py" "$work/in"
fi

# ---- the protocol garbage tool (built by make with the library's flags) ----
GARBAGE=$build/tests/tools/rpc_garbage
if [[ ! -x $GARBAGE ]]; then
	echo "    | $GARBAGE is missing: run make (make test builds it)"
	GARBAGE=""
fi

# ---- 1. up ----
if [[ $MODE == netns ]]; then
	# Another local cluster (ours from a crashed run, or someone else's):
	# never tear down what we did not bring up; wait for it to go away.
	waited=0
	while ip link show aidosbr0 >/dev/null 2>&1 || ip netns list 2>/dev/null | grep -qE '^aidos-n[0-9]+'; do
		if ((waited >= ${AIDOS_CLUSTER_WAIT:-60})); then
			fail up "another local cluster is up (bridge aidosbr0 or namespaces aidos-n*) for ${waited} s; not touching it (deploy/local-cluster.sh down, with its AIDOS_CLUSTER_DIR, removes it)"
			finish
		fi
		((waited == 0)) && echo "cluster.sh: another local cluster is up; waiting up to ${AIDOS_CLUSTER_WAIT:-60} s for it to go away"
		sleep 2
		waited=$((waited + 2))
	done
fi
cluster_owned=1
t0=$(now_us)
timeout 90 deploy/local-cluster.sh up 3 >"$work/up.out" 2>&1
up_rc=$?
up_ms=$(ms_since "$t0" "$(now_us)")
COORD=$(sed -n 's/^AIDOS_COORD=//p' "$work/up.out" | tail -n 1)
if ((up_rc != 0)) || [[ -z $COORD ]]; then
	fail up "deploy/local-cluster.sh up 3 failed (exit $up_rc) after $up_ms ms"
	sed 's/^/    | /' "$work/up.out" | tail -n 25
	finish
fi
if [[ $MODE == netns && $(cat "$AIDOS_CLUSTER_DIR/mode" 2>/dev/null) != netns ]]; then
	fail up "local-cluster.sh did not use namespaces although this shell can create them"
fi
note "cluster up in $up_ms ms: $(grep -c 'ready' "$work/up.out") ready lines, coordinator $COORD"
if ctl nodes --json >"$work/nodes.json" 2>"$work/nodes.err"; then
	res=$(pyj "
import re
mode='$MODE'
ns=d['nodes']; ready=[n for n in ns if n['state']=='READY']
bad=[]
for n in ns:
    t=n['transport']; r=n['transport_reason']
    if not re.match(r'^ucx:tcp\b', t) or re.search(r'sysv|cma|posix|shm', t): bad.append('%s: %s'%(n['name'],t))
    elif mode=='netns' and 'veth' not in r: bad.append('%s: reason names no veth: %s'%(n['name'],r))
    elif mode=='netns' and not n['rpc_addr'].startswith('198.18.77.'): bad.append('%s: rpc %s'%(n['name'],n['rpc_addr']))
print('%d %d %s' % (len(ns), len(ready), '; '.join(bad) or '-'))
print(', '.join('%s %s %s rpc=%s boot=%.0fms' % (n['name'], n['state'], n['transport'], n['rpc_addr'], n['boot_ms']) for n in ns))
" <"$work/nodes.json")
	read -r n_nodes n_ready bad <<<"$(head -n 1 <<<"$res")"
	bad=$(head -n 1 <<<"$res" | cut -d' ' -f3-)
	if ((n_nodes == 3 && n_ready == 3)) && [[ $bad == - ]]; then
		pass up "3/3 nodes READY in $up_ms ms, transport ucx:tcp$([[ $MODE == netns ]] && echo ' over veth0 (198.18.77.0/24)' || echo ' on 127.0.0.1')"
	else
		fail up "$n_ready/$n_nodes nodes READY, transport problems: $bad"
	fi
	note "$(tail -n 1 <<<"$res")"
else
	fail up "aidosctl nodes --json: $(head -c 300 "$work/nodes.err")"
	finish
fi
[[ $MODE == netns ]] && note "transport reason (n1): $(pyj "print(d['nodes'][0]['transport_reason'])" <"$work/nodes.json")"

# ---- 2. remote inference equals local ----
# name model node inputs(k=file ...)
declare -A A_MODEL A_NODE A_IN
add_agent() { A_MODEL[$1]=$2; A_NODE[$1]=$3; A_IN[$1]=$4; }
[[ -f $CLS && -f $G/ocr_cls_192/in/x.npy ]] && add_agent cls "$CLS" n1 "x=$G/ocr_cls_192/in/x.npy"
[[ -f $MEL && -f $G/mel_1280/in/input.npy ]] && add_agent mel "$MEL" n2 "input=$G/mel_1280/in/input.npy"
[[ -f $JARVIS && -f $G/oww_hey_jarvis/in/x.1.npy ]] && add_agent jarvis "$JARVIS" n3 "x.1=$G/oww_hey_jarvis/in/x.1.npy"
if [[ -f $VAD && -f $G/vad_v5_16k/in/00_input.npy ]]; then
	add_agent vad5s "$VAD" n3 "input=$G/vad_v5_16k/in/03_input.npy state=$G/vad_v5_16k/in/03_state.npy sr=$G/vad_v5_16k/in/03_sr.npy"
fi
AGENTS=(cls mel jarvis vad5s)
placed=()
declare -A LAT
if ((${#A_MODEL[@]} == 0)); then
	skip infer "no cached models or golden inputs under $CACHE (run make models)"
else
	ok=1 detail=""
	for a in "${AGENTS[@]}"; do
		[[ -n ${A_MODEL[$a]:-} ]] || continue
		# Unpinned (a pinned agent is only ever placed on its node again,
		# and check 4 needs them to move); put on the wanted node by a
		# migration when the scheduler chose another.
		if ! ctl place "$a" "${A_MODEL[$a]}" >"$work/place.$a" 2>&1; then
			ok=0 detail+="place $a: $(tail -n 1 "$work/place.$a"); "
			continue
		fi
		placed+=("$a")
		got=$(agent_node "$a")
		if [[ $got != "${A_NODE[$a]}" ]] && ! ctl migrate "$a" --to "${A_NODE[$a]}" >"$work/mig.$a" 2>&1; then
			ok=0 detail+="migrate $a to ${A_NODE[$a]}: $(tail -n 1 "$work/mig.$a"); "
		fi
	done
	for a in "${placed[@]}"; do
		args=()
		for kv in ${A_IN[$a]}; do args+=(--input "$kv"); done
		mkdir -p "$work/local/$a" "$work/remote/$a"
		if ! timeout 60 "$build/aidos" run "${A_MODEL[$a]}" "${args[@]}" --output-dir "$work/local/$a" >"$work/local.$a" 2>&1; then
			ok=0 detail+="aidos run $a: $(tail -n 1 "$work/local.$a"); "
			continue
		fi
		if ! ctl infer "$a" "${args[@]}" --output-dir "$work/remote/$a" --json >"$work/remote.$a" 2>&1; then
			ok=0 detail+="infer $a: $(tail -n 1 "$work/remote.$a"); "
			continue
		fi
		info=$(pyj "print(d['node'], d['transport'], d['lanes'], '%.2f' % d['latency_ms'], '%.2f' % d['exec_ms'])" <"$work/remote.$a")
		read -r rnode rx rlanes rlat rexec <<<"$info"
		LAT[$a]=$rlat
		n_files=0 n_same=0
		for f in "$work/local/$a"/*.npy; do
			n_files=$((n_files + 1))
			if cmp -s "$f" "$work/remote/$a/$(basename "$f")"; then
				n_same=$((n_same + 1))
			else
				detail+="$a: $(basename "$f") differs ($(cmp "$f" "$work/remote/$a/$(basename "$f")" 2>&1 | head -c 120)); "
			fi
		done
		((n_files > 0 && n_same == n_files)) || ok=0
		[[ $rnode == "${A_NODE[$a]}" ]] || { ok=0; detail+="$a answered from $rnode, wanted ${A_NODE[$a]}; "; }
		[[ $MODE == netns && $rlanes != tcp/aidosbr0* ]] && { ok=0; detail+="$a: lanes $rlanes, not tcp over the bridge; "; }
		note "$a on $rnode: $n_same/$n_files outputs byte-identical to aidos run; latency $rlat ms (exec $rexec), $rx ($rlanes)"
	done
	nodes_used=$(for a in "${placed[@]}"; do agent_node "$a"; done | sort -u | wc -l)
	if ((ok)) && ((nodes_used >= 3)); then
		pass infer "${#placed[@]} agents on $nodes_used nodes, every output byte-identical to aidos run (cmp); latency ms: $(for a in "${placed[@]}"; do printf '%s=%s ' "$a" "${LAT[$a]:-?}"; done)"
	else
		fail infer "${detail:-agents on only $nodes_used nodes}"
	fi
	if [[ $MODE == netns && -n ${LAT[cls]:-} ]]; then
		# Evidence that tensors cross the veth: n1's link counters around
		# one cls request (110 KiB in, 8 B out).
		rx0=$(cat /sys/class/net/aidos-h1/statistics/tx_bytes) tx0=$(cat /sys/class/net/aidos-h1/statistics/rx_bytes)
		ctl infer cls --input "x=$G/ocr_cls_192/in/x.npy" --output-dir "$work/remote/cls2" >/dev/null 2>&1
		rx1=$(cat /sys/class/net/aidos-h1/statistics/tx_bytes) tx1=$(cat /sys/class/net/aidos-h1/statistics/rx_bytes)
		note "veth of n1 during one cls request: $((rx1 - rx0)) bytes in, $((tx1 - tx0)) bytes out (input tensor $(stat -c %s "$G/ocr_cls_192/in/x.npy") bytes as .npy)"
	fi
fi

# ---- 3. stateful migration mid-stream ----
if [[ ! -f $VAD ]] || ((!have_np)); then
	skip migrate "needs $VAD and numpy (python3-numpy)"
else
	ok=1 detail=""
	ctl place vadA "$VAD" --stateful >"$work/place.vadA" 2>&1 || { ok=0; detail+="place vadA: $(tail -n 1 "$work/place.vadA"); "; }
	ctl place vadB "$VAD" --stateful >"$work/place.vadB" 2>&1 || { ok=0; detail+="place vadB: $(tail -n 1 "$work/place.vadB"); "; }
	srcA=$(agent_node vadA)
	mig_line="" dstA=""
	if ((ok)); then
		for k in $(seq -w 0 19); do
			if [[ $k == 10 ]]; then
				for n in n1 n2 n3; do [[ $n != "$srcA" ]] && { dstA=$n; break; }; done
				if ctl migrate vadA --to "$dstA" >"$work/mig.vadA" 2>&1; then
					mig_line=$(head -n 1 "$work/mig.vadA")
				else
					ok=0 detail+="migrate vadA: $(tail -n 1 "$work/mig.vadA"); "
				fi
			fi
			for a in vadA vadB; do
				mkdir -p "$work/st/$a/$k"
				ctl infer "$a" --input "input=$work/in/vad_$k.npy" --input "sr=$work/in/sr.npy" \
					--output-dir "$work/st/$a/$k" >"$work/inf.$a.$k" 2>&1 ||
					{ ok=0; detail+="infer $a chunk $k: $(tail -n 1 "$work/inf.$a.$k"); "; }
			done
		done
		# the local reference: aidos run, the state carried by hand
		cp "$work/in/state0.npy" "$work/st_state.npy"
		for k in $(seq -w 0 19); do
			mkdir -p "$work/st/local/$k"
			timeout 30 "$build/aidos" run "$VAD" --input "input=$work/in/vad_$k.npy" --input "sr=$work/in/sr.npy" \
				--input "state=$work/st_state.npy" --output-dir "$work/st/local/$k" >/dev/null 2>&1 ||
				{ ok=0; detail+="aidos run chunk $k failed; "; break; }
			cp "$work/st/local/$k/stateN.npy" "$work/st_state.npy"
		done
		same_b=0 same_l=0
		for k in $(seq -w 0 19); do
			cmp -s "$work/st/vadA/$k/output.npy" "$work/st/vadB/$k/output.npy" &&
				cmp -s "$work/st/vadA/$k/stateN.npy" "$work/st/vadB/$k/stateN.npy" && same_b=$((same_b + 1))
			cmp -s "$work/st/vadA/$k/output.npy" "$work/st/local/$k/output.npy" &&
				cmp -s "$work/st/vadA/$k/stateN.npy" "$work/st/local/$k/stateN.npy" && same_l=$((same_l + 1))
		done
		probs=$("$PY" -c "
import numpy as np,sys
print(' '.join('%.3f' % float(np.load('$work/st/vadA/%02d/output.npy' % k).ravel()[0]) for k in range(20)))" 2>/dev/null)
		after=$(agent_node vadA)
		note "vadA $srcA -> $dstA after chunk 10: $mig_line"
		note "speech probabilities (vadA, 20 chunks): $probs"
		[[ $after == "$dstA" ]] || { ok=0; detail+="vadA is on '$after' after the migration, wanted $dstA; "; }
		((same_b == 20)) || { ok=0; detail+="only $same_b/20 chunks identical to the unmigrated agent; "; }
		((same_l == 20)) || { ok=0; detail+="only $same_l/20 chunks identical to aidos run with the state carried by hand; "; }
		ms=$(sed -n 's/.* in \([0-9.]*\) ms (context \([0-9]*\) bytes.*/\1 ms, \2 context bytes/p' <<<"$mig_line")
		if ((ok)); then
			pass migrate "20/20 outputs and states byte-identical to the unmigrated agent and to aidos run; migration $srcA -> $dstA after chunk 10 took $ms"
		else
			fail migrate "$detail"
		fi
	else
		fail migrate "$detail"
	fi
fi

# ---- 5. coordinator restart (before 4, while all 3 nodes live) ----
snapshot() {   # nodes and agents as sorted "name node" lines
	{ ctl nodes --json | pyj "print('\n'.join('node %s %s' % (n['name'], n['rpc_addr']) for n in d['nodes']))"
	  ctl agents --json | pyj "print('\n'.join('agent %s %s %s' % (a['name'], a['node'], a['model_path']) for a in d['agents']))"
	} 2>/dev/null | sort
}
cpid=$(pid_of coord)
if [[ -z $cpid ]]; then
	fail restart "no coordinator pid in $AIDOS_CLUSTER_DIR/pids/coord.pid"
else
	before=$(snapshot)
	mapfile -d '' cmdline <"/proc/$cpid/cmdline"
	kill -9 "$cpid"
	for ((i = 0; i < 100; i++)); do kill -0 "$cpid" 2>/dev/null || break; sleep 0.05; done
	t0=$(now_us)
	n_ready_lines=$(grep -c 'ready' "$AIDOS_CLUSTER_DIR/logs/coord.out")
	"${cmdline[@]}" >>"$AIDOS_CLUSTER_DIR/logs/coord.out" 2>>"$AIDOS_CLUSTER_DIR/logs/coord.log" </dev/null &
	echo $! >"$AIDOS_CLUSTER_DIR/pids/coord.pid"
	up=0
	for ((i = 0; i < 200; i++)); do
		(($(grep -c 'ready' "$AIDOS_CLUSTER_DIR/logs/coord.out") > n_ready_lines)) && { up=1; break; }
		sleep 0.05
	done
	t_ready=$(ms_since "$t0" "$(now_us)")
	after=$(snapshot)
	# then every node READY again (they heartbeat and hear known=true/false)
	all_ready="" t_nodes=""
	for ((i = 0; i < 100; i++)); do
		r=$(ctl nodes --json 2>/dev/null | pyj "print(sum(n['state']=='READY' for n in d['nodes']))" 2>/dev/null)
		[[ $r == 3 ]] && { all_ready=1; t_nodes=$(ms_since "$t0" "$(now_us)"); break; }
		sleep 0.05
	done
	n_agents=$(grep -c '^agent' <<<"$before")
	if ((up)) && [[ -n $before && $before == "$after" && -n $all_ready ]]; then
		pass restart "same 3 nodes and $n_agents agents after kill -9 + restart; ready in $t_ready ms, all nodes READY again at $t_nodes ms"
	else
		fail restart "ready=$up all_nodes_ready=${all_ready:-no}; listing before/after differ: $(diff <(echo "$before") <(echo "$after") | grep '^[<>]' | head -n 4 | tr '\n' ' ')"
	fi
	note "$(grep -E 'loaded .*cluster.pb' "$AIDOS_CLUSTER_DIR/logs/coord.log" | tail -n 1 | cut -c1-160)"
fi

# ---- 4. kill -9 of a node ----
victim=n3
vpid=$(pid_of "$victim")
stateless=()
for a in "${placed[@]}"; do [[ $(agent_node "$a") == "$victim" ]] && stateless+=("$a"); done
if [[ -z $vpid ]]; then
	fail failover "no pid for node $victim"
elif ((${#stateless[@]} == 0)); then
	skip failover "no stateless agent on $victim (check 2 placed none)"
else
	for a in "${stateless[@]}"; do rm -f "$work/fo.$a"; done
	t_kill=$(now_us)
	kill -9 "$vpid"
	# each stateless agent: infer until it answers (aidosctl itself resolves again)
	fo_pids=()
	for a in "${stateless[@]}"; do
		(
			args=()
			for kv in ${A_IN[$a]}; do args+=(--input "$kv"); done
			mkdir -p "$work/fo/$a"
			for ((i = 0; i < 40; i++)); do
				if timeout 10 "$build/aidosctl" --coord "$COORD" infer "$a" "${args[@]}" --output-dir "$work/fo/$a" \
					--json --timeout-ms 3000 >"$work/fo.$a.json" 2>"$work/fo.$a.err"; then
					echo "$(now_us) $(pyj "print(d['node'], d['attempts'])" <"$work/fo.$a.json")" >"$work/fo.$a"
					exit 0
				fi
				sleep 0.05
			done
		) &
		fo_pids+=($!)
	done
	t_dead="" dead_poll=""
	for ((i = 0; i < 100; i++)); do
		st=$(ctl nodes --json 2>/dev/null | pyj "print(next((n['state'] for n in d['nodes'] if n['name']=='$victim'), ''))" 2>/dev/null)
		[[ $st == DEAD ]] && { dead_poll=$(ms_since "$t_kill" "$(now_us)"); break; }
		sleep 0.05
	done
	wait "${fo_pids[@]}"   # (not a bare wait: the restarted coordinator is our child too)
	# the coordinator's own timestamp of the verdict
	line=$(grep -m 1 "node $victim declared DEAD" "$AIDOS_CLUSTER_DIR/logs/coord.log")
	if [[ -n $line ]]; then
		ts=$(date -d "${line%% *}" +%s%6N 2>/dev/null) && t_dead=$(ms_since "$t_kill" "$ts")
	fi
	ok=1 detail="" figs=""
	[[ -n $t_dead ]] || { ok=0; detail+="no 'declared DEAD' line for $victim in the coordinator's log; "; }
	[[ -n $t_dead ]] && (($(printf '%.0f' "$t_dead") > 2000)) && { ok=0; detail+="declared dead after $t_dead ms (limit 2000); "; }
	for a in "${stateless[@]}"; do
		if [[ -s $work/fo.$a ]]; then
			read -r t_ok rnode attempts <"$work/fo.$a"
			ms=$(ms_since "$t_kill" "$t_ok")
			figs+="$a answered from $rnode at $ms ms ($attempts attempts); "
			(($(printf '%.0f' "$ms") <= 3000)) || { ok=0; detail+="$a answered after $ms ms (limit 3000); "; }
			[[ $rnode != "$victim" ]] || { ok=0; detail+="$a answered from the dead node; "; }
			for f in "$work/local/$a"/*.npy; do
				cmp -s "$f" "$work/fo/$a/$(basename "$f")" || { ok=0; detail+="$a: $(basename "$f") differs after failover; "; }
			done
		else
			ok=0 detail+="$a never answered again: $(tail -n 1 "$work/fo.$a.err" 2>/dev/null); "
		fi
	done
	if ((ok)); then
		pass failover "$victim declared DEAD at $t_dead ms after kill -9 (coordinator log; aidosctl nodes saw it at ${dead_poll:-?} ms); $figs"
	else
		fail failover "$detail ${figs}"
	fi
fi

# ---- 6. malformed messages, unknown names, a source lost mid-transfer ----
live_nodes() { ctl nodes --json 2>/dev/null | pyj "print(' '.join(n['name'] for n in d['nodes'] if n['state']=='READY'))"; }
serve_check() {   # an infer on a stateless agent still succeeds (up to ~6 s: re-placement)
	local a kv args
	for a in cls mel jarvis vad5s; do
		[[ -n ${A_MODEL[$a]:-} ]] || continue
		args=()
		for kv in ${A_IN[$a]}; do args+=(--input "$kv"); done
		mkdir -p "$work/sc/$a"
		for ((i = 0; i < 6; i++)); do
			ctl infer "$a" "${args[@]}" --output-dir "$work/sc/$a" --json >"$work/sc.json" 2>"$work/sc.err" &&
				{ echo "$a on $(pyj "print(d['node'])" <"$work/sc.json")"; return 0; }
			sleep 0.5
		done
		echo "$a: $(tail -n 1 "$work/sc.err")"
		return 1
	done
	echo "no stateless agent to ask"
	return 1
}
# 6a: gRPC garbage
if [[ -z $GARBAGE ]]; then
	fail garbage-grpc "$build/tests/tools/rpc_garbage is missing (make builds it)"
else
	ok=1 detail="" total=0 bad=0
	targets=("$COORD coord")
	for n in $(live_nodes); do
		targets+=("$(ctl nodes --json | pyj "print(next(x['rpc_addr'] for x in d['nodes'] if x['name']=='$n'))") node")
	done
	for t in "${targets[@]}"; do
		read -r addr svc <<<"$t"
		timeout 60 "$GARBAGE" grpc "$addr" "$svc" >"$work/g.out" 2>&1
		rc=$?
		total=$((total + $(grep -cE '^(ok |BAD)' "$work/g.out")))
		bad=$((bad + $(grep -c '^BAD' "$work/g.out")))
		((rc == 0)) || { ok=0; detail+="$svc $addr: exit $rc: $(grep -m 2 '^BAD' "$work/g.out" | tr '\n' ' '); "; }
		[[ $svc == node ]] && sample=$(grep -m 1 'Spawn length past' "$work/g.out")
	done
	alive=1
	for f in "$AIDOS_CLUSTER_DIR"/pids/*.pid; do
		n=$(basename "$f" .pid)
		[[ $n == "$victim" ]] && continue
		pid_of "$n" >/dev/null || { alive=0; detail+="$n died; "; }
	done
	sc=$(serve_check) || { ok=0; detail+="no longer serves: $sc; "; }
	if ((ok && alive && bad == 0)); then
		pass garbage-grpc "$total malformed gRPC calls to the coordinator and $((${#targets[@]} - 1)) nodes, each answered with an error status and message; daemons alive; then infer $sc"
		note "e.g. ${sample:-}"
	else
		fail garbage-grpc "$bad/$total bad answers; $detail"
	fi
	# well-formed but wrong Node requests
	naddr=$(ctl nodes --json | pyj "print(next(x['rpc_addr'] for x in d['nodes'] if x['state']=='READY'))")
	timeout 60 "$GARBAGE" semantic "$naddr" "$COORD" "$VAD" >"$work/s.out" 2>&1
	rc=$?
	sc=$(serve_check)
	sc_rc=$?
	if ((rc == 0 && sc_rc == 0)); then
		pass garbage-semantic "$(grep -c '^ok' "$work/s.out") wrong Node requests (missing model, garbage import source and rkey, bad lengths, unknown agent) refused with a message; then infer $sc"
		grep -E 'garbage rkey|garbage address' "$work/s.out" | sed 's/^/      /'
	else
		fail garbage-semantic "exit $rc: $(grep '^BAD' "$work/s.out" | head -n 3 | tr '\n' ' ') serve: $sc"
	fi
	# UCX garbage to each node hosting an agent
	ok=1 detail="" total=0 nodes_hit=""
	for a in cls mel jarvis vad5s vadA; do
		n=$(agent_node "$a")
		[[ -n $n && " $nodes_hit " != *" $n "* ]] || continue
		nodes_hit+=" $n"
		timeout 60 "$GARBAGE" ucx "$COORD" "$a" >"$work/u.out" 2>&1
		rc=$?
		total=$((total + $(grep -cE '^(ok |BAD)' "$work/u.out")))
		((rc == 0)) || { ok=0; detail+="$n: exit $rc: $(grep -E '^BAD|rpc_garbage' "$work/u.out" | head -n 2 | tr '\n' ' '); "; }
	done
	drops=$(cat "$AIDOS_CLUSTER_DIR"/logs/n*.log 2>/dev/null | grep -c 'data plane: dropped')
	sc=$(serve_check) || { ok=0; detail+="no longer serves: $sc; "; }
	if ((ok)) && [[ -n $nodes_hit ]]; then
		pass garbage-ucx "$total garbage tag messages to the data plane of${nodes_hit} (random, empty, 64 MiB+1, bad reply address, wrong tag; unknown agent, data != shape, unknown input answered with errors); $drops drops logged; then infer $sc"
		grep -m 1 'data != shape' "$work/u.out" | sed 's/^/      /'
	else
		fail garbage-ucx "${detail:-no node with an agent to send to}"
	fi
fi

# 6b: unknown agents and nodes, for every aidosctl command
ok=1 detail="" n_cases=0
ctl_err() {   # expect: exit 1, nothing on stdout, one line on stderr naming $1
	local what=$1 want=$2
	shift 2
	n_cases=$((n_cases + 1))
	ctl "$@" >"$work/e.out" 2>"$work/e.err"
	local rc=$? lines
	lines=$(wc -l <"$work/e.err")
	if ((rc != 1)) || [[ -s $work/e.out ]] || ((lines != 1)) || ! grep -q -- "$want" "$work/e.err"; then
		ok=0 detail+="$what: exit $rc, $lines stderr lines: $(head -c 200 "$work/e.err" | tr '\n' ' '); "
	fi
	[[ $what == "infer unknown agent" ]] && ex_err=$(cat "$work/e.err")
}
some=${placed[0]:-cls}
ctl_err "infer unknown agent" nosuch-agent infer nosuch-agent --input "x=$work/in/one.npy" --output-dir "$work/e"
ctl_err "migrate unknown agent" nosuch-agent migrate nosuch-agent --to n1
ctl_err "migrate to unknown node" nosuch-node migrate "$some" --to nosuch-node
ctl_err "drain unknown node" nosuch-node drain nosuch-node
ctl_err "kill unknown agent" nosuch-agent kill nosuch-agent
ctl_err "place on unknown node" nosuch-node place newagent "$CLS" --node nosuch-node
ctl_err "place missing model" /nonexistent/m.onnx place newagent2 /nonexistent/m.onnx
ctl_err "place existing name" "$some" place "$some" "$CLS"
(
	COORD=127.0.0.1:1
	ctl nodes >/dev/null 2>"$work/e.err"
	rc=$?
	((rc == 1)) && [[ $(wc -l <"$work/e.err") == 1 ]] && grep -q UNAVAILABLE "$work/e.err"
) || { ok=0; detail+="nodes against a closed port: $(head -c 200 "$work/e.err"); "; }
n_cases=$((n_cases + 1))
sc=$(serve_check) || { ok=0; detail+="no longer serves: $sc; "; }
if ((ok)); then
	pass unknown-names "$n_cases aidosctl commands with unknown agents/nodes/models (or no coordinator) each exit 1 with one line; e.g. '${ex_err:-}'; then infer $sc"
else
	fail unknown-names "$detail"
fi

# 6c: the migration source vanishes while the target pulls a large context
if ((!have_onnx)); then
	skip midtransfer "needs python3 with onnx and numpy (python3-onnx) for the synthetic 8 MiB-state model"
else
	read -r src dst _ <<<"$(live_nodes)"
	big=$((8 << 20))
	"$PY" tests/tools/state_model.py "$work/state8m.onnx" "$big" 2>"$work/sm.err"
	if [[ -z ${dst:-} ]]; then
		fail midtransfer "needs two live nodes, have: $(live_nodes)"
	elif ! ctl place bigctx "$work/state8m.onnx" --stateful >"$work/place.big" 2>&1; then
		fail midtransfer "place bigctx: $(tail -n 1 "$work/place.big")"
	else
		cur=$(agent_node bigctx)
		[[ $cur == "$src" ]] || { tmp=$src; src=$cur; [[ $dst == "$cur" ]] && dst=$tmp; }
		spid=$(pid_of "$src")
		shaped=0
		if [[ $MODE == netns ]]; then
			# Slow the source's link so the 8 MiB pull lasts ~2 s (tbf: 32
			# Mbit/s, queue bounded to 50 ms so heartbeats still get through).
			ip netns exec "aidos-$src" tc qdisc add dev veth0 root tbf rate 32mbit burst 64kb latency 50ms 2>"$work/tc.err" && shaped=1
			[[ $shaped == 1 ]] || note "tc tbf failed ($(head -c 100 "$work/tc.err")): the kill may come after the pull"
		fi
		host_if=aidos-h${src#n}
		b0=$(cat "/sys/class/net/$host_if/statistics/rx_bytes" 2>/dev/null || echo 0)
		t0=$(now_us)
		(ctl migrate bigctx --to "$dst" >"$work/mig.big.out" 2>"$work/mig.big.err"; echo $? >"$work/mig.big.rc") &
		mpid=$!
		# kill when 1 MiB of the context has left the source (netns), or at
		# once after the export (loopback: no counter of its own)
		moved=0
		for ((i = 0; i < 400; i++)); do
			if ((shaped)); then
				b=$(cat "/sys/class/net/$host_if/statistics/rx_bytes")
				moved=$((b - b0))
				((moved > (1 << 20))) && break
			else
				grep -q 'bigctx: context exported' "$AIDOS_CLUSTER_DIR/logs/$src.log" 2>/dev/null && break
			fi
			[[ -s $work/mig.big.rc ]] && break
			sleep 0.01
		done
		t_kill=$(now_us)
		kill -9 "$spid"
		wait "$mpid"
		t_err=$(now_us)
		mrc=$(cat "$work/mig.big.rc" 2>/dev/null || echo '?')
		err=$(cat "$work/mig.big.err")
		if ((shaped)); then
			at="after $((moved >> 10)) KiB of $((big >> 10)) KiB had left it"
		else
			at="right after its export"
		fi
		note "source $src killed $(ms_since "$t0" "$t_kill") ms into the migration, $at; migrate exit $mrc after $(ms_since "$t_kill" "$t_err") ms: $err"
		grep -h 'ImportContext refused\|pulling' "$AIDOS_CLUSTER_DIR/logs/$dst.log" | tail -n 1 | cut -c1-220 | sed 's/^/      target: /'
		sc=$(serve_check)
		sc_rc=$?
		# where the agent went: it stays on its source until the source is
		# declared dead, then is placed again (from zeros: 8 MiB is over the
		# 1 MiB checkpoint limit)
		note "bigctx afterwards: $(ctl agents --json 2>/dev/null | pyj "print(next(('on %s, %s, context version %d' % (a['node'] or '-', a['state'], a['context_version']) for a in d['agents'] if a['name']=='bigctx'), 'gone'))" 2>/dev/null)"
		if [[ $mrc == 0 ]]; then
			if ((shaped)); then
				fail midtransfer "the migration succeeded although its source was killed mid-pull: $(cat "$work/mig.big.out")"
			else
				skip midtransfer "the pull finished before the kill (loopback: no way to slow the link); serve: $sc"
			fi
		elif [[ $(wc -l <<<"$err") == 1 && $err == aidosctl:* ]] && ((sc_rc == 0)); then
			pulled=$(grep -c 'bigctx: pulling .* failed' "$AIDOS_CLUSTER_DIR/logs/$dst.log")
			pass midtransfer "source killed $at$( ((pulled)) && echo ', during the pull (target log)'): migrate failed $(ms_since "$t_kill" "$t_err") ms after the kill with one line; then infer $sc"
		else
			fail midtransfer "migrate exit $mrc: '$err'; serve: $sc"
		fi
	fi
fi

finish
