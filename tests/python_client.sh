#!/usr/bin/env bash
# tests/python_client.sh BUILD_DIR - the Python binding (node/python/aidos.py,
# ctypes over BUILD_DIR/libaidos.so) run by /usr/bin/python3 against an
# aidos-node --socket started here (with its coordinator, on loopback):
# spawn, infer with numpy arrays (copied in, and made in the heap by
# Client.tensor) and without numpy (AIDOS_PY_NO_NUMPY=1: Tensor of
# array.array), outputs equal to `aidos run`'s .npy files bit for bit; ps,
# stats, ping, kill; errors raise AidosError with the node's message; the
# example script runs. The coordinator's lease is an hour (see
# tests/ipc_cli.sh). Last line: `N passed, N failed, N skipped`.
set -uo pipefail
if [[ $# -ne 1 || ! -d $1 ]]; then
	echo "usage: tests/python_client.sh BUILD_DIR" >&2
	exit 2
fi
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$(cd "$1" && pwd)
cd "$root" || exit 2
CACHE=${AIDOS_CACHE:-$HOME/.cache/aidos}
M=$CACHE/models/openwakeword
G=$CACHE/golden
PY=/usr/bin/python3
passed=0 failed=0 skipped=0
if [[ ! -x $PY || ! -f $M/hey_jarvis_v0.1.onnx || ! -f $G/oww_hey_jarvis/in/x.1.npy ]]; then
	echo "python_client: /usr/bin/python3 or the cached models missing (make deps models)"
	exit 77
fi
tmp=$(mktemp -d /tmp/aidos-py-XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
	mkdir -p "$build/test-logs/python_client" && cp "$tmp"/*.err "$build/test-logs/python_client/" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
wait_ready() {
	for _ in $(seq 1 1200); do
		grep -q ' ready ' "$1" 2>/dev/null && return 0
		kill -0 "$2" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}
S=$tmp/node.sock
timeout 600 "$build/aidos-coord" --listen 127.0.0.1:0 --data-dir "$tmp/coord" --lease-ms 3600000 --heartbeat-ms 1000 >"$tmp/coord.out" 2>"$tmp/coord.err" &
pids+=($!)
wait_ready "$tmp/coord.out" "${pids[0]}" || { echo "FAIL: aidos-coord did not start"; echo "0 passed, 1 failed, 0 skipped"; exit 1; }
coord=$(sed -n 's/.* listen=\([^ ]*\).*/\1/p' "$tmp/coord.out")
timeout 600 "$build/aidos-node" --coord "$coord" --name py1 --data-dir "$tmp/node" --listen 127.0.0.1:0 \
	--socket "$S" >"$tmp/node.out" 2>"$tmp/node.err" &
pids+=($!)
wait_ready "$tmp/node.out" "${pids[1]}" || { echo "FAIL: aidos-node did not start"; echo "0 passed, 1 failed, 0 skipped"; exit 1; }

# references from `aidos run`
mkdir -p "$tmp/ref-jarvis" "$tmp/ref-mel"
timeout 120 "$build/aidos" run "$M/hey_jarvis_v0.1.onnx" --input "x.1=$G/oww_hey_jarvis/in/x.1.npy" \
	--output-dir "$tmp/ref-jarvis" >/dev/null
timeout 120 "$build/aidos" run "$M/melspectrogram.onnx" --input "input=$G/mel_1280/in/input.npy" \
	--output-dir "$tmp/ref-mel" >/dev/null

export AIDOS_SOCKET=$S AIDOS_LIB=$build/libaidos.so PYTHONPATH=$root/node/python
# ASan's runtime must come first when the library is instrumented
if [[ $(nm -D "$build/libaidos.so" 2>/dev/null | grep -c __asan_init) != 0 ]]; then
	export LD_PRELOAD="$(cc -print-file-name=libasan.so) $(cc -print-file-name=libubsan.so)"
	export ASAN_OPTIONS=${ASAN_OPTIONS:-}:detect_leaks=0   # python itself "leaks" at exit
fi

run_py() {  # NAME DESCRIPTION  (script on stdin)
	local name=$1 desc=$2 out
	if out=$(timeout 300 "$PY" - "$M" "$G" "$tmp" 2>&1); then
		printf '    PASS %s: %s\n' "$name" "$desc${out:+ ($out)}"; passed=$((passed + 1))
	else
		printf '    FAIL %s: %s\n%s\n' "$name" "$desc" "$(sed 's/^/      /' <<<"$out" | tail -20)"; failed=$((failed + 1))
	fi
}

run_py numpy "spawn, infer (copied and in-heap inputs) == aidos run, ps, stats, ping, kill, errors" <<'PY'
import sys, numpy as np, aidos
M, G, T = sys.argv[1:4]
c = aidos.Client()
c.spawn("jarvis", M + "/hey_jarvis_v0.1.onnx", priority=2, quota=1 << 30)
c.spawn("mel", M + "/melspectrogram.onnx")
try:
    c.spawn("jarvis", M + "/hey_jarvis_v0.1.onnx"); raise SystemExit("duplicate spawn accepted")
except aidos.AidosError as e:
    assert e.code == -17 and "already exists" in str(e), (e.code, str(e))
x = np.load(G + "/oww_hey_jarvis/in/x.1.npy")
out = c.infer("jarvis", {"x.1": x})
ref = np.load(T + "/ref-jarvis/53.npy")
assert out["53"].dtype == ref.dtype and out["53"].shape == ref.shape and out["53"].tobytes() == ref.tobytes(), (out, ref)
h = c.tensor(np.float32, x.shape)          # in the heap: read in place
h[:] = x
assert c.infer("jarvis", {"x.1": h})["53"].tobytes() == ref.tobytes()
m = c.infer("mel", {"input": np.load(G + "/mel_1280/in/input.npy")})
mref = np.load(T + "/ref-mel/output.npy")
assert m["output"].tobytes() == mref.tobytes()
names = {a["name"]: a for a in c.ps()}
assert names["jarvis"]["priority"] == 2 and names["jarvis"]["requests"] == 2 and names["mel"]["requests"] == 1, names
s = c.stats()
assert s["agents"] == 2 and s["requests"] >= 3, s
r = sorted(c.ping(500))
assert len(r) == 500 and r[0] > 0
for bad, what in (({"nope": x}, "no input"), ({"x.1": x.astype(np.float64)}, "dtype"),
                  ({"x.1": x[:, :8]}, "shape")):
    try:
        c.infer("jarvis", bad); raise SystemExit("bad input accepted: " + what)
    except aidos.AidosError as e:
        assert e.code == -1001, (what, e.code, str(e))
try:
    c.infer("ghost", {"x.1": x}); raise SystemExit("unknown agent accepted")
except aidos.AidosError as e:
    assert e.code == -1005 and "ghost" in str(e), str(e)
c.kill("mel")
assert [a["name"] for a in c.ps()] == ["jarvis"]
c.close()
print("median ping %d ns" % r[250])
PY

AIDOS_PY_NO_NUMPY=1 run_py stdlib "without numpy: Tensor(array.array) in, bytes out == aidos run" <<'PY'
import sys, array, aidos
M, G, T = sys.argv[1:4]
assert aidos._np is None
def npy(path):  # minimal .npy reader: little-endian float32, C order
    b = open(path, "rb").read()
    hl = int.from_bytes(b[8:10], "little"); hdr = b[10:10 + hl].decode()
    assert "'<f4'" in hdr and "False" in hdr, hdr
    shape = tuple(int(v) for v in hdr.split("(")[1].split(")")[0].split(",") if v.strip())
    return b[10 + hl:], shape
data, shape = npy(G + "/oww_hey_jarvis/in/x.1.npy")
with aidos.Client() as c:
    out = c.infer("jarvis", {"x.1": aidos.Tensor(array.array("f", data), "float32", shape)})
    rdata, rshape = npy(T + "/ref-jarvis/53.npy")
    o = out["53"]
    assert o.dtype == "float32" and o.shape == rshape and o.data == rdata, (o, rshape)
PY

if out=$(timeout 120 "$PY" node/python/example.py "$M/hey_jarvis_v0.1.onnx" 2>&1) && [[ $out == *"ping median"* ]]; then
	printf '    PASS example: node/python/example.py runs\n'; passed=$((passed + 1))
else
	printf '    FAIL example: %s\n' "$out"; failed=$((failed + 1))
fi
echo "$passed passed, $failed failed, $skipped skipped"
((failed == 0))
