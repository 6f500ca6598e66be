#!/usr/bin/env bash
# tests/ipc_cli.sh BUILD_DIR - the `aidos` node commands against a real
# aidos-node serving local clients (--socket), on loopback with a
# coordinator (the node also runs standalone: tests/node_standalone.sh),
# which must see the agents spawned over the socket. The coordinator's lease is
# an hour: a node that re-registers (its heartbeat late on a loaded machine)
# drops the agents the coordinator does not know, and these are spawned
# locally.
#
# Checks (each prints "PASS|FAIL|SKIP <name>: <detail>"):
#   nonode   every node command with no node on the socket: exit 1 and a
#            message naming the socket
#   spawn    hey_jarvis and melspectrogram spawned; a second spawn of the
#            same name and a bad model path fail with a clear error
#   infer    `aidos infer` writes the same .npy files, byte for byte (cmp),
#            as `aidos run` on the golden inputs, for both agents
#   ps       `aidos ps` and `aidos ps --json` list both with their options
#   stats    `aidos stats --json` counts the agents and requests
#   ping     `aidos ping --count 2000 --json` gives {"rtt_ns": {"median", "p99"}}
#   kill     `aidos kill` removes an agent; infer on it then fails clearly
#   limits   --quota (64K: suffixes as in the node config): a breach fails only that agent's request (exit 1,
#            "quota"), the others answer; --deadline-ms 1 on a model of
#            milliseconds: refused once estimated; ps shows pool bytes, state
#   env      AIDOS_SOCKET is used when --socket is not given
#   help     every node command has --help
# Last line: `N passed, N failed, N skipped`.
set -uo pipefail

if [[ $# -ne 1 || ! -d $1 ]]; then
	echo "usage: tests/ipc_cli.sh BUILD_DIR" >&2
	exit 2
fi
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$(cd "$1" && pwd)
cd "$root" || exit 2
CACHE=${AIDOS_CACHE:-$HOME/.cache/aidos}
M=$CACHE/models/openwakeword
G=$CACHE/golden
A=$build/aidos
passed=0 failed=0 skipped=0
pass() { printf '    PASS %s: %s\n' "$1" "$2"; passed=$((passed + 1)); }
fail() { printf '    FAIL %s: %s\n' "$1" "$2"; failed=$((failed + 1)); }
skip() { printf '    SKIP %s: %s\n' "$1" "$2"; skipped=$((skipped + 1)); }

tmp=$(mktemp -d /tmp/aidos-ipc-cli-XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
	mkdir -p "$build/test-logs/ipc_cli" && cp "$tmp"/*.err "$build/test-logs/ipc_cli/" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
S=$tmp/node.sock

# waits for the ready line of $1 (a file), as long as the process $2 lives
wait_ready() {
	for _ in $(seq 1 1200); do
		grep -q ' ready ' "$1" 2>/dev/null && return 0
		kill -0 "$2" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

# nonode: before any node exists
bad=0
for c in "ps" "stats" "ping" "kill x" "infer x" "spawn --name x $M/hey_jarvis_v0.1.onnx"; do
	# shellcheck disable=SC2086
	out=$(timeout 30 "$A" $c --socket "$S" 2>&1); rc=$?
	[[ $rc == 1 && $out == *"$S"* && $out == *"no aidos node is listening"* ]] || { bad=1; echo "      $c: rc $rc: $out"; }
done
((bad)) && fail nonode "a command did not name the socket" || pass nonode "6 commands: exit 1, message names $S"

if [[ ! -f $M/hey_jarvis_v0.1.onnx || ! -f $G/oww_hey_jarvis/in/x.1.npy ]]; then
	skip all "models not cached (make models)"
	echo "$passed passed, $failed failed, $skipped skipped"
	exit 0
fi

timeout 600 "$build/aidos-coord" --listen 127.0.0.1:0 --data-dir "$tmp/coord" --lease-ms 3600000 --heartbeat-ms 1000 >"$tmp/coord.out" 2>"$tmp/coord.err" &
pids+=($!)
if ! wait_ready "$tmp/coord.out" "${pids[0]}"; then
	fail start "aidos-coord did not start: $(tail -3 "$tmp/coord.err")"
	echo "$passed passed, $failed failed, $skipped skipped"
	exit 1
fi
coord=$(sed -n 's/.* listen=\([^ ]*\).*/\1/p' "$tmp/coord.out")
timeout 600 "$build/aidos-node" --coord "$coord" --name n1 --data-dir "$tmp/node" --listen 127.0.0.1:0 \
	--socket "$S" >"$tmp/node.out" 2>"$tmp/node.err" &
pids+=($!)
if ! wait_ready "$tmp/node.out" "${pids[1]}"; then
	fail start "aidos-node did not start: $(tail -3 "$tmp/node.err")"
	echo "$passed passed, $failed failed, $skipped skipped"
	exit 1
fi
# the socket is up once the ready line is out
T="timeout 120"

# spawn
o1=$($T "$A" spawn --socket "$S" --name jarvis --priority 5 --quota 200000000 --deadline-ms 50 \
	"$M/hey_jarvis_v0.1.onnx" 2>&1); r1=$?
o2=$($T "$A" spawn --socket "$S" --name mel "$M/melspectrogram.onnx" 2>&1); r2=$?
o3=$($T "$A" spawn --socket "$S" --name jarvis "$M/hey_jarvis_v0.1.onnx" 2>&1); r3=$?
o4=$($T "$A" spawn --socket "$S" --name nope "$tmp/missing.onnx" 2>&1); r4=$?
if [[ $r1 == 0 && $r2 == 0 && $r3 == 1 && $o3 == *"already exists"* && $r4 == 1 && $o4 == *missing.onnx* ]]; then
	pass spawn "2 agents; duplicate: '$o3'; missing model: '${o4:0:100}'"
else
	fail spawn "rc $r1 $r2 $r3 $r4: $o1 | $o2 | $o3 | $o4"
fi

# infer vs aidos run
ok=1
for c in "jarvis hey_jarvis_v0.1 x.1 oww_hey_jarvis" "mel melspectrogram input mel_1280"; do
	read -r ag model in gold <<<"$c"
	mkdir -p "$tmp/run-$ag" "$tmp/node-$ag"
	$T "$A" run "$M/$model.onnx" --input "$in=$G/$gold/in/$in.npy" --output-dir "$tmp/run-$ag" >/dev/null 2>"$tmp/run.err" ||
		{ ok=0; echo "      aidos run $model: $(cat "$tmp/run.err")"; }
	$T "$A" infer "$ag" --socket "$S" --input "$in=$G/$gold/in/$in.npy" --output-dir "$tmp/node-$ag" >/dev/null \
		2>"$tmp/infer.err" || { ok=0; echo "      aidos infer $ag: $(cat "$tmp/infer.err")"; }
	n=0
	for f in "$tmp/run-$ag"/*.npy; do
		n=$((n + 1))
		cmp -s "$f" "$tmp/node-$ag/$(basename "$f")" || { ok=0; echo "      $ag: $(basename "$f") differs"; }
	done
	((n > 0)) || ok=0
done
js=$($T "$A" infer jarvis --socket "$S" --input "x.1=$G/oww_hey_jarvis/in/x.1.npy" --output-dir "$tmp" --json 2>&1)
[[ $js == *'"outputs": [{"name": "53"'* ]] || { ok=0; echo "      --json: $js"; }
((ok)) && pass infer "hey_jarvis and melspectrogram outputs byte-identical to aidos run (cmp)" || fail infer "see above"

# ps
ps=$($T "$A" ps --socket "$S" 2>&1)
pj=$($T "$A" ps --socket "$S" --json 2>&1)
if [[ $ps == *jarvis*idle* && $ps == *mel* ]] &&
	/usr/bin/python3 -c '
import json,sys
l={a["name"]:a for a in json.loads(sys.argv[1])}
j=l["jarvis"]
assert j["priority"]==5 and j["quota_bytes"]==200000000 and j["deadline_ms"]==50 and j["requests"]>=2, j
assert l["mel"]["requests"]>=1
' "$pj"; then
	pass ps "text and --json list both agents with priority, quota, deadline, requests"
else
	fail ps "$ps / $pj"
fi

# stats
sj=$($T "$A" stats --socket "$S" --json 2>&1)
if /usr/bin/python3 -c '
import json,sys
s=json.loads(sys.argv[1]); assert s["agents"]==2 and s["requests"]>=3 and s["clients"]>=1, s' "$sj"; then
	pass stats "$sj"
else
	fail stats "$sj"
fi

# ping
pj=$($T "$A" ping --socket "$S" --count 2000 --json 2>&1)
if /usr/bin/python3 -c '
import json,sys
p=json.loads(sys.argv[1]); r=p["rtt_ns"]; assert p["count"]==2000 and 0<r["median"]<=r["p99"], p' "$pj"; then
	pass ping "$pj"
else
	fail ping "$pj"
fi

# kill
k1=$($T "$A" kill mel --socket "$S" 2>&1); r1=$?
k2=$($T "$A" kill mel --socket "$S" 2>&1); r2=$?
k3=$($T "$A" infer mel --socket "$S" --input "input=$G/mel_1280/in/input.npy" --output-dir "$tmp" 2>&1); r3=$?
if [[ $r1 == 0 && $r2 == 1 && $k2 == *"no agent"* && $r3 == 1 && $k3 == *"no agent"* ]]; then
	pass kill "killed; again: '$k2'; infer: '$k3'"
else
	fail kill "rc $r1 $r2 $r3: $k1 | $k2 | $k3"
fi

# limits: the spawn options take effect through the dispatcher
G2=$CACHE/models/ocr-models/ch_PP-OCRv4_det_infer.onnx
if [[ -f $G2 && -f $G/ocr_det_320/in/x.npy ]]; then
	l1=$($T "$A" spawn --socket "$S" --name tiny --quota 64K "$M/hey_jarvis_v0.1.onnx" 2>&1); q1=$?
	l2=$($T "$A" infer tiny --socket "$S" --input "x.1=$G/oww_hey_jarvis/in/x.1.npy" --output-dir "$tmp" 2>&1); q2=$?
	l3=$($T "$A" infer jarvis --socket "$S" --input "x.1=$G/oww_hey_jarvis/in/x.1.npy" --output-dir "$tmp" 2>&1); q3=$?
	l4=$($T "$A" spawn --socket "$S" --name det --deadline-ms 1 "$G2" 2>&1); q4=$?
	# the first request is admitted (no estimate yet); once the dispatcher
	# knows the model takes milliseconds, a 1 ms deadline is refused
	$T "$A" infer det --socket "$S" --input "x=$G/ocr_det_320/in/x.npy" --output-dir "$tmp" >/dev/null 2>&1
	l5=$($T "$A" infer det --socket "$S" --input "x=$G/ocr_det_320/in/x.npy" --output-dir "$tmp" 2>&1); q5=$?
	pj=$($T "$A" ps --socket "$S" --json 2>&1)
	if [[ $q1 == 0 && $q2 == 1 && $l2 == *quota* && $q3 == 0 && $q4 == 0 && $q5 == 1 && $l5 == *deadline* ]] &&
		/usr/bin/python3 -c '
import json,sys
l={a["name"]:a for a in json.loads(sys.argv[1])}
t=l["tiny"]; j=l["jarvis"]
assert t["errors"]==1 and t["requests"]==0 and t["quota_bytes"]==65536 and t["state"]=="idle", t
assert j["mem_bytes"]>0 and j["mem_bytes"]<=j["quota_bytes"] and j["state"]=="idle", j
' "$pj"; then
		pass limits "quota breach fails only tiny ('${l2:0:90}'); 1 ms deadline refused ('${l5:0:90}'); ps: pool bytes, state"
	else
		fail limits "rc $q1 $q2 $q3 $q4 $q5: $l1 | $l2 | $l3 | $l4 | $l5 | $pj"
	fi
	$T "$A" kill tiny --socket "$S" >/dev/null 2>&1
	$T "$A" kill det --socket "$S" >/dev/null 2>&1
else
	skip limits "ocr det model or golden input not cached"
fi

# env
e=$(AIDOS_SOCKET=$S $T "$A" ps 2>&1)
[[ $e == *jarvis* ]] && pass env "AIDOS_SOCKET used" || fail env "$e"

# help
bad=0
for c in spawn infer ps kill stats ping; do
	h=$("$A" "$c" --help 2>&1) && [[ $h == *usage:*"$c"* ]] || { bad=1; echo "      $c --help: $h"; }
done
((bad)) && fail help "a command lacks --help" || pass help "6 commands"

echo "$passed passed, $failed failed, $skipped skipped"
((failed == 0))
