#!/usr/bin/env bash
# tools/demo.sh [BUILD_DIR] - `make demo`: aidos as a cluster, end to end.
#
# Brings up a coordinator and 3 nodes (deploy/local-cluster.sh: network
# namespaces and UCX over TCP across veth links as root; the loopback
# fallback on 127.0.0.1 otherwise, and it says so), places real pretrained
# models on different nodes
#   n1: PaddleOCR det (PP-OCRv4)          n2: PaddleOCR rec (PP-OCRv4)
#   n3: PaddleOCR cls, hey_jarvis wake word   n1: Silero VAD v5, stateful
# runs remote inference (`aidosctl infer`, tensors over UCX) on the golden
# inputs that `make models` cached, streams 20 chunks of audio through the
# stateful VAD and migrates it live to n2 after chunk 10 (its state moves
# with it), and prints the placements (`aidosctl agents`), each output
# (compared with ONNX Runtime's reference outputs when numpy is there), the
# latencies and the transport used. The cluster is torn down at the end,
# whatever happens. Logs stay in ${AIDOS_CLUSTER_DIR:-/tmp/aidos-demo-$USER}/logs.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-build}
cd "$root" || exit 2
[[ -d $build ]] || { echo "demo: no build dir $build: run make" >&2; exit 1; }
build=$(cd "$build" && pwd)
CACHE=${AIDOS_CACHE:-$HOME/.cache/aidos}
M=$CACHE/models G=$CACHE/golden
PY=/usr/bin/python3
[[ -x $PY ]] || PY=$(command -v python3 || echo python3)
have_np=0
"$PY" -c 'import numpy' 2>/dev/null && have_np=1

DET=$M/ocr-models/ch_PP-OCRv4_det_infer.onnx
REC=$M/ocr-models/ch_PP-OCRv4_rec_infer.onnx
CLS=$M/ocr-models/ch_ppocr_mobile_v2.0_cls_infer.onnx
VAD=$M/vad-web/silero_vad_v5.onnx
JARVIS=$M/openwakeword/hey_jarvis_v0.1.onnx
for f in "$DET" "$REC" "$CLS" "$VAD" "$JARVIS" "$G/ocr_det_320/in/x.npy" "$G/ocr_rec_320/in/x.npy" \
	"$G/ocr_cls_192/in/x.npy" "$G/oww_hey_jarvis/in/x.1.npy" "$G/vad_v5_16k/in/19_input.npy"; do
	[[ -f $f ]] || { echo "demo: $f missing: run 'make models'" >&2; exit 1; }
done
for b in aidosctl aidos-node aidos-coord; do
	[[ -x $build/$b ]] || { echo "demo: $build/$b missing: run make" >&2; exit 1; }
done

export AIDOS_CLUSTER_DIR=${AIDOS_CLUSTER_DIR:-/tmp/aidos-demo-$(id -un)} AIDOS_BUILD=$build
out=$(mktemp -d "${TMPDIR:-/tmp}/aidos-demo-out.XXXXXX") || exit 1
owned=0
cleanup() {
	local rc=$?
	trap - EXIT
	trap '' PIPE INT TERM HUP   # finish the tear-down whatever happens to our output
	# only a cluster our own `up` started (it writes DIR/mode after its
	# checks): `down` removes every aidos-n* namespace, whoever made them
	if ((owned)) && [[ -f $AIDOS_CLUSTER_DIR/mode ]]; then
		echo
		echo "== tear down"
		timeout 60 deploy/local-cluster.sh down
	fi
	rm -rf "$out"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
trap 'exit 141' PIPE   # output closed (| head): still tear down

hr() { printf '\n== %s\n' "$*"; }
ctl() { timeout 60 "$build/aidosctl" --coord "$COORD" "$@"; }
pyj() { "$PY" -c "import json,sys; d=json.load(sys.stdin); $1"; }

if [[ $(id -u) == 0 ]] && ip link show aidosbr0 >/dev/null 2>&1; then
	echo "demo: another local cluster is up (bridge aidosbr0); bring it down first (deploy/local-cluster.sh down with its AIDOS_CLUSTER_DIR)" >&2
	exit 1
fi
hr "bring up a coordinator and 3 nodes (deploy/local-cluster.sh up 3)"
rm -f "$AIDOS_CLUSTER_DIR/mode"   # a stale one from a crashed run would make us tear down another cluster
owned=1
if ! timeout 90 deploy/local-cluster.sh up 3 | tee "$out/up.out"; then
	echo "demo: the cluster did not come up; logs in $AIDOS_CLUSTER_DIR/logs" >&2
	exit 1
fi
COORD=$(sed -n 's/^AIDOS_COORD=//p' "$out/up.out" | tail -n 1)
[[ -n $COORD ]] || { echo "demo: no AIDOS_COORD line from local-cluster.sh" >&2; exit 1; }
ctl nodes

hr "place agents on different nodes"
place() {   # name model node [options]
	local name=$1 model=$2 node=$3
	shift 3
	ctl place "$name" "$model" "$@" | head -n 1
	if [[ $(ctl agents --json | pyj "print(next(a['node'] for a in d['agents'] if a['name']=='$name'))") != "$node" ]]; then
		ctl migrate "$name" --to "$node"   # unpinned: it may move again if its node dies
	fi
}
place det "$DET" n1 || exit 1
place rec "$REC" n2 || exit 1
place cls "$CLS" n3 || exit 1
place jarvis "$JARVIS" n3 || exit 1
place vad "$VAD" n1 --stateful || exit 1
ctl agents

hr "remote inference on golden inputs (tensors over the data plane)"
infer() {   # name case input-name output-name: prints one summary line
	local name=$1 case=$2 in=$3 o=$4
	mkdir -p "$out/$name"
	if ! ctl infer "$name" --input "$in=$G/$case/in/$in.npy" --output-dir "$out/$name" --json >"$out/$name.json"; then
		echo "demo: infer $name failed" >&2
		return 1
	fi
	local what
	what=$(pyj "print('node %s  end to end %7.2f ms (request %6.2f, node exec %6.2f)  %s (%s)' % (d['node'], d['latency_ms'], d['request_ms'], d['exec_ms'], d['transport'], d['lanes']))" <"$out/$name.json")
	printf '%-7s %s\n' "$name" "$what"
	if ((have_np)); then
		"$PY" - "$name" "$out/$name/$o.npy" "$G/$case/out/$o.npy" <<'EOF'
import sys, numpy as np
name, got, ref = sys.argv[1:4]
a, r = np.load(got), np.load(ref)
err = float(np.abs(a.astype(np.float64) - r).max())
if name == 'det':
    s = 'text probability map %s: %.1f%% of pixels > 0.3 (text regions)' % (list(a.shape), 100.0 * float((a > 0.3).mean()))
elif name == 'rec':
    idx = a.argmax(-1).ravel()
    s = 'CTC over %d steps x %d classes: non-blank classes %s' % (a.shape[1], a.shape[2], [int(i) for i in idx if i != 0])
elif name == 'cls':
    s = 'orientation 0 deg: %.3f, 180 deg: %.3f' % (a.ravel()[0], a.ravel()[1])
else:
    s = '"hey jarvis" score %.6f (synthetic embeddings: no wake word)' % a.ravel()[0]
print('        %s; max |aidos - ONNX Runtime| = %.2e' % (s, err))
EOF
	fi
}
infer det ocr_det_320 x sigmoid_0.tmp_0 || exit 1
infer rec ocr_rec_320 x softmax_11.tmp_0 || exit 1
infer cls ocr_cls_192 x softmax_0.tmp_0 || exit 1
infer jarvis oww_hey_jarvis x.1 53 || exit 1

hr "Silero VAD v5, stateful: 20 chunks of 32 ms audio, live migration after chunk 10"
echo "(the node feeds 'state' and keeps 'stateN' between requests; the client sends only input and sr)"
src=$(ctl agents --json | pyj "print(next(a['node'] for a in d['agents'] if a['name']=='vad'))")
dst=n2
[[ $src == n2 ]] && dst=n3
printf '%-6s %-5s %-9s %-10s %s\n' chunk node speech "ONNX Rt" "latency ms (request)"
for k in $(seq -w 0 19); do
	if [[ $k == 10 ]]; then
		printf -- '-- migrate: '
		ctl migrate vad --to "$dst" || exit 1
	fi
	mkdir -p "$out/vad/$k"
	ctl infer vad --input "input=$G/vad_v5_16k/in/${k}_input.npy" --input "sr=$G/vad_v5_16k/in/${k}_sr.npy" \
		--output-dir "$out/vad/$k" --json >"$out/vad.$k.json" || exit 1
	line=$(pyj "print(d['node'], '%.2f (%.2f)' % (d['latency_ms'], d['request_ms']))" <"$out/vad.$k.json")
	if ((have_np)); then
		p=$("$PY" -c "import numpy as np; print('%.4f %.4f' % (np.load('$out/vad/$k/output.npy').ravel()[0], np.load('$G/vad_v5_16k/out/${k}_output.npy').ravel()[0]))")
	else
		p="- -"
	fi
	read -r pa pr <<<"$p"
	read -r node lat <<<"$line"
	printf '%-6s %-5s %-9s %-10s %s\n' "$k" "$node" "$pa" "$pr" "$lat"
done
if ((have_np)); then
	"$PY" -c "
import numpy as np
e = max(float(np.abs(np.load('$out/vad/%02d/output.npy' % k).astype(np.float64) - np.load('$G/vad_v5_16k/out/%02d_output.npy' % k)).max()) for k in range(20))
print('max |aidos - ONNX Runtime| over the 20 chunks: %.2e (ONNX Runtime carried its own state, no migration)' % e)"
fi

hr "placements and statistics (aidosctl agents)"
ctl agents
hr "nodes (aidosctl nodes): the transport and why it was chosen"
ctl nodes
if [[ $(cat "$AIDOS_CLUSTER_DIR/mode" 2>/dev/null) == netns ]]; then
	echo
	echo "bytes through each node's veth (host side):"
	for k in 1 2 3; do
		printf '  n%d: %s bytes in, %s bytes out\n' "$k" "$(cat /sys/class/net/aidos-h$k/statistics/tx_bytes)" \
			"$(cat /sys/class/net/aidos-h$k/statistics/rx_bytes)"
	done
fi
hr "migration as the coordinator logged it"
grep -E 'agent vad (migrated|: context pulled)' "$AIDOS_CLUSTER_DIR/logs/coord.log" | sed 's/^/  /'
