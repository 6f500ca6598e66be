#!/usr/bin/env bash
# tests/ops_models.sh BUILD_DIR - operator forms the ONNX 1.12 node data does
# not reach, as small models built here with python3-onnx and checked
# against numpy (test tooling only):
#   scan_dirs: Scan (opset 11) with a state, two scan inputs read in opposite
#              directions and two scan outputs written in opposite directions.
# Skipped (exit 77) without python3-onnx.
set -uo pipefail
build=${1:-build}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 2
if ! /usr/bin/python3 -c 'import onnx, numpy' 2>/dev/null; then
	echo "ops_models: needs python3-onnx and python3-numpy (make deps)"
	exit 77
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0

/usr/bin/python3 - "$tmp" <<'PY' || { echo "ops_models: building the models failed"; echo "0 passed, 1 failed, 0 skipped"; exit 1; }
import os, sys, numpy as np, onnx
from onnx import helper, TensorProto as T
d = sys.argv[1]
body = helper.make_graph(
    [helper.make_node('Mul', ['s', 'a'], ['t']), helper.make_node('Add', ['t', 'b'], ['s2']),
     helper.make_node('Identity', ['s2'], ['o1']), helper.make_node('Sub', ['a', 'b'], ['o2'])],
    'body',
    [helper.make_tensor_value_info(n, T.FLOAT, [3]) for n in ('s', 'a', 'b')],
    [helper.make_tensor_value_info(n, T.FLOAT, [3]) for n in ('s2', 'o1', 'o2')])
node = helper.make_node('Scan', ['s0', 'A', 'B'], ['sf', 'O1', 'O2'], body=body, num_scan_inputs=2,
                        scan_input_directions=[1, 0], scan_output_directions=[0, 1])
g = helper.make_graph([node], 'g',
    [helper.make_tensor_value_info('s0', T.FLOAT, [3]), helper.make_tensor_value_info('A', T.FLOAT, [5, 3]),
     helper.make_tensor_value_info('B', T.FLOAT, [5, 3])],
    [helper.make_tensor_value_info(n, T.FLOAT, None) for n in ('sf', 'O1', 'O2')])
m = helper.make_model(g, opset_imports=[helper.make_opsetid('', 11)])
m.ir_version = 7
os.makedirs(os.path.join(d, 'scan_dirs'))
onnx.save(m, os.path.join(d, 'scan_dirs', 'model.onnx'))
rng = np.random.default_rng(3)
s0 = rng.standard_normal(3).astype(np.float32)
A = rng.standard_normal((5, 3)).astype(np.float32)
B = rng.standard_normal((5, 3)).astype(np.float32)
s, O1, O2 = s0.copy(), np.zeros((5, 3), np.float32), np.zeros((5, 3), np.float32)
for t in range(5):
    a, b = A[4 - t], B[t]
    s = s * a + b
    O1[t] = s
    O2[4 - t] = a - b
for n, v in (('s0', s0), ('A', A), ('B', B), ('want_sf', s), ('want_O1', O1), ('want_O2', O2)):
    np.save(os.path.join(d, 'scan_dirs', n + '.npy'), v)
PY

c=$tmp/scan_dirs
if ! msg=$("$build"/aidos run "$c/model.onnx" --input s0="$c/s0.npy" --input A="$c/A.npy" \
	--input B="$c/B.npy" --output-dir "$c/out" 2>&1); then
	echo "    FAIL scan_dirs: $msg"
	fail=$((fail + 1))
elif err=$(/usr/bin/python3 - "$c" <<'PY'
import sys, numpy as np
c = sys.argv[1]
e = max(float(np.abs(np.load(f'{c}/out/{n}.npy') - np.load(f'{c}/want_{n}.npy')).max()) for n in ('sf', 'O1', 'O2'))
print(e)
sys.exit(0 if e <= 1e-5 else 1)
PY
); then
	echo "    PASS scan_dirs: max |err| $err"
	pass=$((pass + 1))
else
	echo "    FAIL scan_dirs: max |err| $err"
	fail=$((fail + 1))
fi
echo "$pass passed, $fail failed, 0 skipped"
