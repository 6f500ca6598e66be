#!/usr/bin/env bash
# tests/rejoin.sh BUILD_DIR - a node declared dead while it was only stalled
# (SIGSTOP past its lease, the host case of `make test-rxe`'s flake: a
# heartbeat late under the VM's load) comes back, registers again, and the
# agents it still runs survive: the coordinator reconciles from the node's
# own agent list instead of dropping them (docs/cluster.md "Failure").
# Loopback only (127.0.0.1, UCX over TCP): no root, no namespaces, no VM.
#
# Checks (each prints "PASS|FAIL|SKIP <name>: <measured figure>"):
#   1 rejoin    stateful Silero VAD vadA placed on n1, 6 chunks, migrated to
#               n2 (the same path test-rxe takes over RDMA READ), 1 chunk on
#               n2, then BOTH nodes stopped past the lease (declared DEAD,
#               nowhere to place their agents), n2 continued first: it
#               registers again, the coordinator keeps vadA (and the
#               stateless vs2) on n2, n2 drops neither, and chunks 7..11
#               answer from n2: all 12 outputs and states byte-identical to
#               `aidos run` carrying the state by hand, vadA's request counter
#               on n2 continues (no fresh copy)
#   2 replaced  stateful vadC on n2, only n2 stopped past the lease: the
#               coordinator places vadC again on n1 from its checkpoint; n2
#               comes back, registers again and drops its stale copy (the
#               directory's placement wins, logged); vadC answers from n1
#               with outputs identical to `aidos run`
#   3 coord-stall the coordinator itself stopped for 3 leases: its reaper,
#               first to run after the stop, does not declare the nodes dead
#               for beats that waited unread in its sockets
#
# Needs BUILD_DIR/{aidos,aidosctl,aidos-node,aidos-coord}, the cached Silero
# VAD v5 (make models) and /usr/bin/python3 with numpy for the chunk files; a
# check whose inputs are missing is a SKIP. Every command runs under timeout,
# every process started here is stopped (trap), logs are kept in
# BUILD_DIR/test-logs/rejoin/. No timed assertion: every wait polls the logs
# with a generous bound. Last line: `N passed, N failed, N skipped`.
set -uo pipefail

if [[ $# -ne 1 || ! -d $1 ]]; then
	echo "usage: tests/rejoin.sh BUILD_DIR" >&2
	exit 2
fi
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$(cd "$1" && pwd)
cd "$root" || exit 2
CACHE=${AIDOS_CACHE:-$HOME/.cache/aidos}
VAD=$CACHE/models/vad-web/silero_vad_v5.onnx
PY=/usr/bin/python3
[[ -x $PY ]] || PY=$(command -v python3 || echo python3)

passed=0 failed=0 skipped=0
pass() { printf '    PASS %s: %s\n' "$1" "$2"; passed=$((passed + 1)); }
fail() { printf '    FAIL %s: %s\n' "$1" "$2"; failed=$((failed + 1)); }
skip() { printf '    SKIP %s: %s\n' "$1" "$2"; skipped=$((skipped + 1)); }
note() { printf '      %s\n' "$*"; }
finish() {
	echo "$passed passed, $failed failed, $skipped skipped"
	((failed)) && exit 1
	((passed)) || exit 77
	exit 0
}

for b in aidos aidosctl aidos-node aidos-coord; do
	if [[ ! -x $build/$b ]]; then
		echo "rejoin.sh: $build/$b missing: run make"
		echo "0 passed, 1 failed, 0 skipped"
		exit 1
	fi
done
if [[ ! -f $VAD ]] || ! "$PY" -c 'import numpy' 2>/dev/null; then
	skip rejoin "needs $VAD (make models) and python3-numpy"
	skip replaced "needs $VAD (make models) and python3-numpy"
	finish
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/aidos-rejoin.XXXXXX") || exit 1
declare -A PID
teardown() {
	local rc=$?
	trap - EXIT
	for p in "${PID[@]}"; do
		kill -CONT "$p" 2>/dev/null
		kill -TERM "$p" 2>/dev/null
	done
	for p in "${PID[@]}"; do
		for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	rm -rf "$build/test-logs/rejoin"
	mkdir -p "$build/test-logs/rejoin"
	cp "$work"/*.log "$build/test-logs/rejoin/" 2>/dev/null
	rm -rf "$work"
	exit "$rc"
}
trap teardown EXIT
trap 'echo "rejoin.sh: interrupted"; exit 130' INT TERM HUP

# Ports: a base from our pid, so that parallel runs (other worktrees) differ.
base=$((21000 + ($$ % 400) * 10))
COORD=127.0.0.1:$base
ctl() { timeout 30 "$build/aidosctl" --coord "$COORD" "$@"; }
pyj() { "$PY" -c "import json,sys; d=json.load(sys.stdin); $1"; }
agent_field() { ctl agents --json | pyj "print(next((a.get('$2', '') for a in d['agents'] if a['name']=='$1'), ''))"; }
# wait_for FILE PATTERN [tenths]: poll a log until a line matches
wait_for() {
	local i
	for ((i = 0; i < ${3:-300}; i++)); do
		grep -qE "$2" "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}
# wait_more FILE PATTERN N: until more than N lines of FILE match PATTERN
# (up to 30 s); 1 when they never do.
wait_more() {
	for _ in $(seq 300); do
		(($(grep -c "$2" "$1") > $3)) && return 0
		sleep 0.1
	done
	return 1
}

mkdir -p "$work/in"
"$PY" "$root/tests/tools/vad_chunks.py" "$work/in" 12 20261126 0.05

# The reference: `aidos run` with the state carried by hand.
cp "$work/in/state0.npy" "$work/st.npy"
for k in $(seq -w 0 11); do
	mkdir -p "$work/ref/$k"
	timeout 60 "$build/aidos" run "$VAD" --input "input=$work/in/vad_$k.npy" --input "sr=$work/in/sr.npy" \
		--input "state=$work/st.npy" --output-dir "$work/ref/$k" >/dev/null 2>&1 || {
		fail rejoin "aidos run chunk $k failed"
		finish
	}
	cp "$work/ref/$k/stateN.npy" "$work/st.npy"
done

# ---- the cluster: coordinator (lease 1 s, no rebalancing) + n1, n2 ----
"$build/aidos-coord" --listen "$COORD" --data-dir "$work/coord" --lease-ms 1000 --heartbeat-ms 250 \
	--rebalance off >"$work/coord.out" 2>"$work/coord.log" </dev/null &
PID[coord]=$!
wait_for "$work/coord.out" ready 200 || { fail rejoin "coordinator not ready: $(tail -n 2 "$work/coord.log")"; finish; }
for k in 1 2; do
	UCX_TLS=tcp "$build/aidos-node" --coord "$COORD" --name "n$k" --data-dir "$work/n$k" \
		--listen "127.0.0.1:$((base + k))" --transport tcp >"$work/n$k.out" 2>"$work/n$k.log" </dev/null &
	PID[n$k]=$!
done
for k in 1 2; do
	wait_for "$work/n$k.out" ready 300 || { fail rejoin "n$k not ready: $(tail -n 2 "$work/n$k.log")"; finish; }
done

# infer AGENT K: chunk K into $work/out/AGENT/K; 0 or the error in $work/err
infer() {
	mkdir -p "$work/out/$1/$2"
	ctl infer "$1" --input "input=$work/in/vad_$2.npy" --input "sr=$work/in/sr.npy" \
		--output-dir "$work/out/$1/$2" >"$work/inf.$1.$2" 2>&1
}
same_as_ref() {   # AGENT K
	cmp -s "$work/out/$1/$2/output.npy" "$work/ref/$2/output.npy" &&
		cmp -s "$work/out/$1/$2/stateN.npy" "$work/ref/$2/stateN.npy"
}
# A node's heartbeat carries its checkpoints: wait until the coordinator
# holds version V of AGENT (so a re-placement would start from it).
wait_version() {
	local i
	for ((i = 0; i < 100; i++)); do
		[[ $(agent_field "$1" context_version) == "$2" ]] && return 0
		sleep 0.1
	done
	return 1
}
# stall NODE...: SIGSTOP them until the coordinator declares each DEAD
stall() {
	local n
	for n in "$@"; do kill -STOP "${PID[$n]}"; done
	for n in "$@"; do
		wait_for "$work/coord.log" "node $n declared DEAD" 300 || return 1
	done
}

# ---- 1. rejoin: both nodes stalled, the agents survive on n2 ----
ok=1 detail=""
ctl place vadA "$VAD" --stateful --node n1 >"$work/place.vadA" 2>&1 || { ok=0; detail+="place vadA: $(tail -n 1 "$work/place.vadA"); "; }
ctl place vs2 "$VAD" --node n2 >"$work/place.vs2" 2>&1 || { ok=0; detail+="place vs2: $(tail -n 1 "$work/place.vs2"); "; }
for k in 00 01 02 03 04 05; do
	((ok)) || break
	infer vadA "$k" || { ok=0; detail+="infer vadA chunk $k: $(tail -n 1 "$work/inf.vadA.$k"); "; }
done
if ((ok)); then
	ctl migrate vadA --to n2 >"$work/mig.vadA" 2>&1 || { ok=0; detail+="migrate vadA: $(tail -n 1 "$work/mig.vadA"); "; }
	infer vadA 06 || { ok=0; detail+="infer vadA chunk 06: $(tail -n 1 "$work/inf.vadA.06"); "; }
fi
if ((ok)); then
	wait_version vadA 7 || note "the coordinator has not seen vadA at version 7"
	before=$(agent_field vadA requests)
	note "vadA after chunk 06: $(head -n 1 "$work/mig.vadA"); on $(agent_field vadA node), $before requests there"
	if ! stall n1 n2; then
		ok=0 detail+="the coordinator did not declare n1 and n2 DEAD: $(grep -c DEAD "$work/coord.log") DEAD lines; "
	fi
	kill -CONT "${PID[n2]}"
	wait_for "$work/coord.log" "node n2 registered again" 300 || { ok=0; detail+="n2 did not register again; "; }
	kill -CONT "${PID[n1]}"
	wait_for "$work/coord.log" "node n1 registered again" 300 || { ok=0; detail+="n1 did not register again; "; }
	note "coordinator: $(grep -E 'n2 declared DEAD|n2 registered again|agent (vadA|vs2):' "$work/coord.log" | sed 's/^[^ ]* //' | tr '\n' ';' | head -c 900)"
	for k in 07 08 09 10 11; do
		infer vadA "$k" || { ok=0; detail+="infer vadA chunk $k: $(tail -n 1 "$work/inf.vadA.$k"); "; }
	done
	mkdir -p "$work/out/vs2"
	ctl infer vs2 --input "input=$work/in/vad_03.npy" --input "sr=$work/in/sr.npy" --input "state=$work/in/state0.npy" \
		--output-dir "$work/out/vs2" >"$work/inf.vs2" 2>&1 || { ok=0; detail+="infer vs2: $(tail -n 1 "$work/inf.vs2"); "; }
	same=0
	for k in $(seq -w 0 11); do same_as_ref vadA "$k" && same=$((same + 1)); done
	((same == 12)) || { ok=0; detail+="$same/12 chunks of vadA identical to aidos run; "; }
	wait_version vadA 12 || note "the coordinator has not seen vadA at version 12"
	where=$(agent_field vadA node) after=$(agent_field vadA requests)
	[[ $where == n2 ]] || { ok=0; detail+="vadA is on '$where', wanted n2; "; }
	[[ -n $before && -n $after ]] && ((after == before + 5)) ||
		{ ok=0; detail+="vadA's request counter on n2 went $before -> $after over 5 requests (a fresh copy restarts it); "; }
	if grep -E "agent (vadA|vs2) dropped" "$work/n2.log" >"$work/dropped" 2>/dev/null; then
		ok=0 detail+="n2 dropped live agents when it registered again: $(tr '\n' ';' <"$work/dropped" | head -c 300); "
	fi
fi
if ((ok)); then
	pass rejoin "n1 and n2 declared DEAD while stopped, n2 registered again and kept vadA (requests $before -> $after) and vs2; 12/12 chunks identical to aidos run"
else
	fail rejoin "$detail"
	tail -n 8 "$work/coord.log" "$work/n2.log" | sed 's/^/      | /'
fi

# ---- 2. replaced: n2 alone stalled, vadC placed again on n1 ----
ok=1 detail=""
ctl place vadC "$VAD" --stateful >"$work/place.vadC" 2>&1 || { ok=0; detail+="place vadC: $(tail -n 1 "$work/place.vadC"); "; }
src=$(agent_field vadC node)
if ((ok)) && [[ $src != n2 ]]; then
	ctl migrate vadC --to n2 >"$work/mig.vadC" 2>&1 || { ok=0; detail+="migrate vadC: $(tail -n 1 "$work/mig.vadC"); "; }
fi
for k in 00 01 02 03 04 05; do
	((ok)) || break
	infer vadC "$k" || { ok=0; detail+="infer vadC chunk $k: $(tail -n 1 "$work/inf.vadC.$k"); "; }
done
if ((ok)); then
	wait_version vadC 6 || note "the coordinator's checkpoint of vadC is not at version 6 yet"
	ndead=$(grep -c "node n2 declared DEAD" "$work/coord.log")
	kill -STOP "${PID[n2]}"
	wait_more "$work/coord.log" "node n2 declared DEAD" "$ndead" || true
	wait_for "$work/coord.log" "agent vadC placed again" 300 || { ok=0; detail+="vadC was not placed again; "; }
	nreg=$(grep -c "node n2 registered again" "$work/coord.log")
	kill -CONT "${PID[n2]}"
	wait_more "$work/coord.log" "node n2 registered again" "$nreg" || true
	wait_for "$work/n2.log" "agent vadC dropped" 300 || { ok=0; detail+="n2 kept its stale copy of vadC; "; }
	for k in 06 07 08 09 10 11; do
		infer vadC "$k" || { ok=0; detail+="infer vadC chunk $k: $(tail -n 1 "$work/inf.vadC.$k"); "; }
	done
	same=0
	for k in $(seq -w 0 11); do same_as_ref vadC "$k" && same=$((same + 1)); done
	((same == 12)) || { ok=0; detail+="$same/12 chunks of vadC identical to aidos run; "; }
	where=$(agent_field vadC node)
	[[ $where == n1 ]] || { ok=0; detail+="vadC is on '$where', wanted n1; "; }
	note "coordinator: $(grep -E 'agent vadC' "$work/coord.log" | tail -n 3 | sed 's/^[^ ]* //' | tr '\n' ';' | head -c 600)"
	from=$(sed -n 's/.*agent vadC: placing again from checkpoint version \([0-9]*\).*/\1/p' "$work/coord.log" | tail -n 1)
fi
if ((ok)); then
	pass replaced "n2 stopped past its lease: vadC placed again on n1 from checkpoint version ${from:-?}, n2 dropped its copy when it registered again; 12/12 chunks identical to aidos run"
else
	fail replaced "$detail"
	tail -n 8 "$work/coord.log" "$work/n2.log" | sed 's/^/      | /'
fi
# ---- 3. coordinator stalled: nobody is declared dead for its own stall ----
ndead=$(grep -c "declared DEAD" "$work/coord.log")
nlate=$(grep -c "reaper ran .* ms late" "$work/coord.log")
kill -STOP "${PID[coord]}"
sleep 3   # three leases: every node looks silent to a reaper that just woke
kill -CONT "${PID[coord]}"
for _ in $(seq 100); do
	(($(grep -c "reaper ran .* ms late" "$work/coord.log") > nlate)) && break
	sleep 0.1
done
sleep 1   # four more beats of each node
ready=$(ctl nodes --json | pyj "print(sum(1 for n in d['nodes'] if n['state']=='READY'))")
late=$(grep "reaper ran .* ms late" "$work/coord.log" | tail -n 1 | sed 's/^[^ ]* //')
if (($(grep -c "declared DEAD" "$work/coord.log") == ndead)) && [[ $ready == 2 && -n $late ]]; then
	pass coord-stall "coordinator stopped 3 s (3 leases): no node declared dead, $ready nodes READY ($late)"
else
	fail coord-stall "after the coordinator's 3 s stop: $(($(grep -c "declared DEAD" "$work/coord.log") - ndead)) nodes declared DEAD, ${ready:-?} READY, ${late:-no late-reaper line}"
	tail -n 6 "$work/coord.log" | sed 's/^/      | /'
fi
finish
