#!/usr/bin/env bash
# tests/model_files.sh BUILD_DIR - model files the loader must handle beyond
# the golden set, built here with python3-onnx (test tooling only):
#   external data (several tensors in one file at offsets, and a file per
#   tensor) runs and matches numpy; the weights are used in place from the
#   mapping when aligned (aidos info reports it); external locations that
#   leave the model's folder, point past the end of the file, or do not
#   exist are refused with one line naming the problem.
set -uo pipefail
build=${1:-build}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 2
aidos=$build/aidos
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { echo "    PASS $*"; pass=$((pass + 1)); }
bad() { echo "    FAIL $*"; fail=$((fail + 1)); }

/usr/bin/python3 - "$tmp" <<'PY' || { echo "model_files: python3-onnx failed"; echo "0 passed, 1 failed, 0 skipped"; exit 1; }
import os, sys, numpy as np, onnx
from onnx import helper, TensorProto, numpy_helper
d = sys.argv[1]
rng = np.random.default_rng(7)
w1 = rng.standard_normal((64, 32)).astype(np.float32)
b1 = rng.standard_normal((32,)).astype(np.float32)
x = rng.standard_normal((4, 64)).astype(np.float32)
np.save(os.path.join(d, 'x.npy'), x)
np.save(os.path.join(d, 'want.npy'), np.maximum(x @ w1 + b1, 0))

def model(loc_w, off_w, loc_b, off_b, name):
    # Initializers whose bytes live outside the model, as ONNX's external
    # data spec describes: location, offset, length (data_location EXTERNAL).
    def ext(n, arr, loc, off):
        t = TensorProto(); t.name = n; t.data_type = TensorProto.FLOAT; t.dims.extend(arr.shape)
        t.data_location = TensorProto.EXTERNAL
        for k, v in (('location', loc), ('offset', str(off)), ('length', str(arr.nbytes))):
            e = t.external_data.add(); e.key = k; e.value = v
        return t
    g = helper.make_graph([helper.make_node('MatMul', ['x', 'w'], ['h']), helper.make_node('Add', ['h', 'b'], ['a']),
                           helper.make_node('Relu', ['a'], ['y'])], 'ext',
                          [helper.make_tensor_value_info('x', TensorProto.FLOAT, [4, 64])],
                          [helper.make_tensor_value_info('y', TensorProto.FLOAT, [4, 32])],
                          [ext('w', w1, loc_w, off_w), ext('b', b1, loc_b, off_b)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid('', 17)]); m.ir_version = 8
    onnx.save(m, os.path.join(d, name))

# one file, two tensors at 64-aligned offsets
with open(os.path.join(d, 'weights.bin'), 'wb') as f:
    f.write(b'\0' * 64); f.write(w1.tobytes()); f.write(b'\0' * (64 - (w1.nbytes % 64)) if w1.nbytes % 64 else b''); 
    off_b = f.tell(); f.write(b1.tobytes())
model('weights.bin', 64, 'weights.bin', off_b, 'shared.onnx')
# a file per tensor, in a subfolder
os.makedirs(os.path.join(d, 'data'), exist_ok=True)
w1.tofile(os.path.join(d, 'data', 'w.bin')); b1.tofile(os.path.join(d, 'data', 'b.bin'))
model('data/w.bin', 0, 'data/b.bin', 0, 'perfile.onnx')
# hostile locations
model('../outside.bin', 0, 'data/b.bin', 0, 'escape.onnx')
model('/etc/passwd', 0, 'data/b.bin', 0, 'absolute.onnx')
model('data/w.bin', 4096, 'data/b.bin', 0, 'pastend.onnx')
model('data/missing.bin', 0, 'data/b.bin', 0, 'missing.onnx')
PY

for m in shared perfile; do
	if "$aidos" run "$tmp/$m.onnx" --input x="$tmp/x.npy" --output-dir "$tmp/out-$m" >/dev/null 2>"$tmp/err" &&
		/usr/bin/python3 -c "import numpy as np,sys; a=np.load(sys.argv[1]); b=np.load(sys.argv[2]); e=float(abs(a-b).max()); sys.exit(0 if e <= 1e-4*max(1,float(abs(b).max())) else 1)" \
			"$tmp/out-$m/y.npy" "$tmp/want.npy"; then
		ok "external data ($m): runs and matches numpy"
	else
		bad "external data ($m): $(cat "$tmp/err")"
	fi
done
mapped=$("$aidos" info --json "$tmp/shared.onnx" | sed -n 's/.*"weight_bytes_mapped": \([0-9]*\).*/\1/p')
if [[ $mapped == $((64 * 32 * 4 + 32 * 4)) ]]; then
	ok "external data at aligned offsets used in place: $mapped bytes mapped, none copied"
else
	bad "external data: weight_bytes_mapped is '$mapped', want $((64 * 32 * 4 + 32 * 4))"
fi
check_refused() {  # MODEL KEYWORD
	local out rc
	out=$("$aidos" run "$tmp/$1.onnx" --input x="$tmp/x.npy" --output-dir "$tmp/o" 2>&1); rc=$?
	if ((rc != 0)) && [[ $(wc -l <<<"$out") == 1 && $out == *"$2"* ]]; then
		ok "$1: refused in one line: $out"
	else
		bad "$1: exit $rc, want an error with '$2': $out"
	fi
}
check_refused escape "escapes the model's folder"
check_refused absolute "escapes the model's folder"
check_refused pastend "past the end"
check_refused missing "No such file"
echo "$pass passed, $fail failed, 0 skipped"
((fail == 0))
