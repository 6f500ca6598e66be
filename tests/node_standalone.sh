#!/usr/bin/env bash
# tests/node_standalone.sh BUILD_DIR - aidos-node without a coordinator:
# boots from a --config file with agents (one ready line naming them), takes
# --socket / AIDOS_SOCKET, stops cleanly on SIGTERM (exit 0) and boots again
# from the same data directory; bad configs and options are usage errors
# (exit 2) that name the line. No timing is asserted.
set -uo pipefail
build=${1:-build}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 2
node=$build/aidos-node
models=${AIDOS_CACHE:-$HOME/.cache/aidos}/models
jarvis=$models/openwakeword/hey_jarvis_v0.1.onnx
vad=$models/vad-web/silero_vad_v5.onnx
if [[ ! -f $jarvis || ! -f $vad ]]; then
	echo "skipped: $jarvis or $vad missing (make models)"
	exit 77
fi
tmp=$(mktemp -d /tmp/aidos-test-standalone.XXXXXX)
pid=
trap '[[ -n $pid ]] && kill -9 $pid 2>/dev/null; rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { echo "ok: $*"; pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }

cat >"$tmp/n.conf" <<EOF
# a standalone node
name = solo1
data_dir = $tmp/data
agent j1 model=$jarvis priority=5 quota=64M deadline_ms=20
agent j2 model=$jarvis
agent v model=$vad stateful=1
EOF

# Boots; waits (bounded, not timed) for the ready line.
boot() {
	: >"$tmp/out"
	"$@" >"$tmp/out" 2>"$tmp/err" &
	pid=$!
	for _ in $(seq 1 3000); do
		grep -q '^aidos-node ready' "$tmp/out" && return 0
		kill -0 $pid 2>/dev/null || return 1
		sleep 0.01
	done
	return 1
}
stop() {
	kill -TERM $pid
	wait $pid
	local rc=$?
	pid=
	return $rc
}

if boot env AIDOS_SOCKET="$tmp/s.sock" "$node" --config "$tmp/n.conf"; then
	line=$(head -n1 "$tmp/out")
	[[ $(wc -l <"$tmp/out") -eq 1 ]] && ok "one line on stdout" || bad "stdout: $(cat "$tmp/out")"
	[[ $line =~ ^aidos-node\ ready\ boot_ms=[0-9.]+\ name=solo1\ agents=3\ rpc=none\ transport=none\ socket=$tmp/s.sock$ ]] &&
		ok "ready line: $line" || bad "ready line: $line"
	stop && ok "SIGTERM: exit 0" || bad "SIGTERM: exit $?"
	grep -q 'stopped in' "$tmp/err" && ok "stopped cleanly" || bad "no 'stopped' in the log"
else
	bad "no ready line"; cat "$tmp/err"
fi

# Again on the same data directory, --socket overriding the environment.
if boot env AIDOS_SOCKET=/nope "$node" --config "$tmp/n.conf" --socket "$tmp/t.sock" --name solo2; then
	line=$(head -n1 "$tmp/out")
	[[ $line == *"name=solo2 agents=3 "*"socket=$tmp/t.sock" ]] && ok "restart: $line" || bad "restart: $line"
	stop && ok "second SIGTERM: exit 0" || bad "second SIGTERM: exit $?"
else
	bad "no ready line on restart"; cat "$tmp/err"
fi

# A config agent whose model is missing: logged, the node still boots.
printf 'name = solo3\ndata_dir = %s/d3\nagent gone model=/nonexistent.onnx\nagent j model=%s\n' "$tmp" "$jarvis" >"$tmp/m.conf"
if boot "$node" --config "$tmp/m.conf"; then
	[[ $(head -n1 "$tmp/out") == *"agents=1 "* ]] && ok "missing model: skipped, node up" || bad "missing model: $(cat "$tmp/out")"
	grep -q "gone" "$tmp/err" && ok "missing model: logged" || bad "missing model: not logged"
	stop || bad "stop after missing model"
else
	bad "missing model: no ready line"; cat "$tmp/err"
fi

# Usage errors: exit 2, one line naming the problem.
printf 'name = x\ndata_dir = /tmp/x\nagent a model=/m.onnx quota=lots\n' >"$tmp/bad.conf"
"$node" --config "$tmp/bad.conf" >/dev/null 2>"$tmp/e1"
rc=$?
[[ $rc -eq 2 ]] && grep -q "bad.conf:3: agent a: bad value for 'quota'" "$tmp/e1" && ok "bad config: exit 2, line named" ||
	bad "bad config: rc $rc, $(cat "$tmp/e1")"
"$node" --name x --data-dir "$tmp/x" --transport bogus >/dev/null 2>"$tmp/e2"
rc=$?
[[ $rc -eq 2 ]] && ok "bad --transport: exit 2" || bad "bad --transport: rc $rc"
"$node" --data-dir "$tmp/x" >/dev/null 2>"$tmp/e3"
rc=$?
[[ $rc -eq 2 ]] && grep -q -- "--name" "$tmp/e3" && ok "no --name: exit 2" || bad "no --name: rc $rc"
"$node" --config "$tmp/none.conf" >/dev/null 2>"$tmp/e4"
rc=$?
[[ $rc -eq 2 ]] && grep -q "none.conf" "$tmp/e4" && ok "missing config: exit 2" || bad "missing config: rc $rc"

echo "$pass passed, $fail failed"
((fail == 0))
