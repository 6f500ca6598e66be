#!/usr/bin/python3
# tests/tools/const_inputs.py OUT_ROOT CASE=I[,J...] ... - test tooling only.
# Copies ONNX conformance cases (node/CASE of libonnx-testdata) into
# OUT_ROOT/node/CASE with graph inputs I, J, ... turned into initializers
# holding the values of test_data_set_0 (the remaining inputs renumbered),
# so that ops whose output shape depends on an input's value (OneHot depth,
# Compress condition, window sizes, STFT frame_step, ...) can be checked with
# the value known at plan time. Needs python3-onnx.
import glob, os, shutil, sys
import onnx

ROOT = os.environ.get('AIDOS_ONNX_TESTDATA', '/usr/share/libonnx-testdata/data')
out = sys.argv[1]
for sub in ('node', 'pytorch-converted', 'pytorch-operator', 'simple'):
    os.makedirs(os.path.join(out, sub), exist_ok=True)
for spec in sys.argv[2:]:
    case, idx = spec.split('=')
    idx = sorted(int(i) for i in idx.split(','))
    src = os.path.join(ROOT, 'node', case)
    m = onnx.load(os.path.join(src, 'model.onnx'))
    ds = sorted(glob.glob(os.path.join(src, 'test_data_set_*')))[0]
    ins = list(m.graph.input)
    for i in idx:
        t = onnx.TensorProto()
        with open(os.path.join(ds, 'input_%d.pb' % i), 'rb') as f:
            t.ParseFromString(f.read())
        t.name = ins[i].name
        m.graph.initializer.append(t)
    del m.graph.input[:]
    m.graph.input.extend(x for j, x in enumerate(ins) if j not in idx)
    dst = os.path.join(out, 'node', case)
    dds = os.path.join(dst, 'test_data_set_0')
    os.makedirs(dds, exist_ok=True)
    onnx.save(m, os.path.join(dst, 'model.onnx'))
    k = 0
    for j in range(len(ins)):
        if j not in idx:
            shutil.copy(os.path.join(ds, 'input_%d.pb' % j), os.path.join(dds, 'input_%d.pb' % k))
            k += 1
    for f in glob.glob(os.path.join(ds, 'output_*.pb')):
        shutil.copy(f, dds)
