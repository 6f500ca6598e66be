#!/usr/bin/python3
"""tests/tools/state_model.py OUT.onnx NBYTES - a synthetic stateful model for
the cluster tests and benchmarks (tests/cluster.sh, bench/cluster.sh).

Inputs  x [1] float32, state [NBYTES/4] float32.
Outputs stateN = state + x (the carried state, paired by `--stateful`),
        y = stateN[0:1] (so after k requests with x = 1, y = k: the state
        really travelled when y keeps counting across a migration).
Needs the onnx package (python3-onnx); opset 13, IR 8.
"""
import sys

import onnx
from onnx import TensorProto, helper


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: state_model.py OUT.onnx NBYTES")
    out, nbytes = sys.argv[1], int(sys.argv[2])
    if nbytes < 4 or nbytes % 4:
        sys.exit("state_model.py: NBYTES must be a positive multiple of 4")
    n = nbytes // 4
    starts = helper.make_tensor("starts", TensorProto.INT64, [1], [0])
    ends = helper.make_tensor("ends", TensorProto.INT64, [1], [1])
    g = helper.make_graph(
        [helper.make_node("Add", ["state", "x"], ["stateN"]),
         helper.make_node("Slice", ["stateN", "starts", "ends"], ["y"])],
        "state_%d" % nbytes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [n])],
        initializer=[starts, ends])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)],
                          producer_name="aidos-tests")
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, out)


if __name__ == "__main__":
    main()
