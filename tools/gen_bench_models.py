#!/usr/bin/python3
"""tools/gen_bench_models.py - the models of `make bench-cpu` that aidos builds itself.

    /usr/bin/python3 tools/gen_bench_models.py OUTDIR

Benchmark tooling only (Debian's python3-onnx and python3-numpy; never run by
aidos itself). Deterministic: fixed seeds, so every clone measures the same
graphs and weights. Writes into OUTDIR:

  mobilenetv2.onnx  MobileNetV2 (Sandler et al. 2018, Table 2), width 1.0,
      224x224, 1000 classes, 3.5 M parameters, as torchvision's export
      looks (opset 17): BatchNorm folded into Conv biases, ReLU6 as Clip,
      residual Add, GlobalAveragePool -> Flatten -> Gemm. Input "input"
      float [1, 3, 224, 224].
  bert_s64.onnx     BERT-style encoder like bert-mini (4 layers, hidden 256,
      4 heads, FFN 1024, vocabulary 30522), opset 17: LayerNormalization,
      Gelu through Erf, additive attention mask. Inputs input_ids and
      attention_mask int64 [1, 64]; output last_hidden_state [1, 64, 256].
  gpt2_s32.onnx     GPT-2-style causal decoder (4 layers, hidden 256, 4
      heads, FFN 1024, vocabulary 8192, tied LM head), opset 17: Conv1D as
      Gemm between Reshapes, one fused QKV projection split in three, causal
      mask as a constant additive bias, tanh-approximated Gelu. Input
      input_ids int64 [1, 32]; output logits [1, 32, 8192].
  dispatch_1000.onnx  1,000 nodes cycling Add (a constant), Relu, Identity
      on a 1-element tensor: the executor's per-op dispatch cost.

and each model's inputs as <name>/in/<input>.npy. The graph builders reuse
tools/gen_transformers.py's G (names, constants, seeded weights) and
layer_norm.
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto as TP, helper as oh, numpy_helper as nh

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_transformers import G, layer_norm  # noqa: E402


def mobilenetv2():
    g = G(2018)
    rng = np.random.RandomState(2018)

    def conv(x, cin, cout, k, stride, groups, act):
        # He-style scale keeps activations in range through 52 layers; the
        # folded BatchNorm shows up as a bias.
        fan = cin // groups * k * k
        w = g.init(g.name("conv.weight"),
                   (rng.standard_normal((cout, cin // groups, k, k)) * np.sqrt(2.0 / fan)).astype(np.float32))
        b = g.init(g.name("conv.bias"), (rng.standard_normal(cout) * 0.05).astype(np.float32))
        p = k // 2
        y = g.op("Conv", [x, w, b], dilations=[1, 1], group=groups, kernel_shape=[k, k],
                 pads=[p, p, p, p], strides=[stride, stride])
        if act:
            y = g.op("Clip", [y, g.const(0.0), g.const(6.0)])
        return y

    x = conv("input", 3, 32, 3, 2, 1, True)
    cin = 32
    # (expansion t, channels c, repeats n, first stride s)
    for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
        for i in range(n):
            stride = s if i == 0 else 1
            hid = cin * t
            y = x
            if t != 1:
                y = conv(y, cin, hid, 1, 1, 1, True)
            y = conv(y, hid, hid, 3, stride, hid, True)
            y = conv(y, hid, c, 1, 1, 1, False)
            x = g.op("Add", [x, y]) if stride == 1 and cin == c else y
            cin = c
    x = conv(x, cin, 1280, 1, 1, 1, True)
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1)
    w = g.weight("classifier.1.weight", [1000, 1280], 1.0 / np.sqrt(1280))
    b = g.weight("classifier.1.bias", [1000], 0.05)
    g.nodes.append(oh.make_node("Gemm", [x, w, b], ["output"], alpha=1.0, beta=1.0, transB=1))
    graph = oh.make_graph(g.nodes, "mobilenetv2",
                          [oh.make_tensor_value_info("input", TP.FLOAT, [1, 3, 224, 224])],
                          [oh.make_tensor_value_info("output", TP.FLOAT, [1, 1000])], g.inits)
    inputs = {"input": np.random.RandomState(7).uniform(-2, 2, (1, 3, 224, 224)).astype(np.float32)}
    return graph, 17, inputs


def dense(g, x, name, n_in, n_out):
    """x @ W + b, W stored [n_in, n_out] as exporters write nn.Linear."""
    w = g.weight(name + ".weight.T", [n_in, n_out], 1.0 / np.sqrt(n_in))
    b = g.weight(name + ".bias", [n_out], 0.05)
    return g.op("Add", [b, g.op("MatMul", [x, w])])


def heads(g, t, S, NH, HD, perm):
    return g.op("Transpose", [g.op("Reshape", [t, g.const([1, S, NH, HD], np.int64)])], perm=perm)


def bert(S=64, L=4, H=256, NH=4, FF=1024, V=30522, P=512):
    HD = H // NH
    g = G(4096)
    word = g.weight("embeddings.word_embeddings.weight", [V, H], 0.5)
    pos = g.weight("embeddings.position_embeddings.weight", [P, H], 0.5)
    tok = g.weight("embeddings.token_type_embeddings.weight", [2, H], 0.5)
    g.init("position_ids", np.arange(S, dtype=np.int64).reshape(1, S))
    g.init("token_type_ids", np.zeros((1, S), dtype=np.int64))
    e = g.op("Add", [g.op("Gather", [word, "input_ids"], axis=0), g.op("Gather", [tok, "token_type_ids"], axis=0)])
    e = g.op("Add", [e, g.op("Gather", [pos, "position_ids"], axis=0)])
    x = layer_norm(g, e, "embeddings.LayerNorm", H, False, 17, 1e-12)
    # extended mask: (1 - mask[:, None, None, :]) * -10000
    m = g.op("Cast", [g.op("Unsqueeze", ["attention_mask", g.const([1, 2], np.int64)])], to=TP.FLOAT)
    m = g.op("Mul", [g.op("Sub", [g.const(1.0), m]), g.const(-10000.0)])
    for li in range(L):
        p = f"encoder.layer.{li}."
        q = heads(g, dense(g, x, p + "attention.self.query", H, H), S, NH, HD, [0, 2, 1, 3])
        k = heads(g, dense(g, x, p + "attention.self.key", H, H), S, NH, HD, [0, 2, 3, 1])
        v = heads(g, dense(g, x, p + "attention.self.value", H, H), S, NH, HD, [0, 2, 1, 3])
        sc = g.op("Div", [g.op("MatMul", [q, k]), g.const(float(np.sqrt(HD)))])
        pr = g.op("Softmax", [g.op("Add", [sc, m])], axis=-1)
        c = g.op("Transpose", [g.op("MatMul", [pr, v])], perm=[0, 2, 1, 3])
        c = g.op("Reshape", [c, g.const([1, S, H], np.int64)])
        a = dense(g, c, p + "attention.output.dense", H, H)
        x = layer_norm(g, g.op("Add", [a, x]), p + "attention.output.LayerNorm", H, False, 17, 1e-12)
        h = dense(g, x, p + "intermediate.dense", H, FF)
        er = g.op("Erf", [g.op("Div", [h, g.const(1.4142135381698608)])])
        h = g.op("Mul", [g.op("Mul", [h, g.op("Add", [er, g.const(1.0)])]), g.const(0.5)])
        o = dense(g, h, p + "output.dense", FF, H)
        x = layer_norm(g, g.op("Add", [o, x]), p + "output.LayerNorm", H, False, 17, 1e-12)
    g.nodes.append(oh.make_node("Identity", [x], ["last_hidden_state"]))
    ins = [oh.make_tensor_value_info(n, TP.INT64, [1, S]) for n in ("input_ids", "attention_mask")]
    outs = [oh.make_tensor_value_info("last_hidden_state", TP.FLOAT, [1, S, H])]
    graph = oh.make_graph(g.nodes, "bert_s64", ins, outs, g.inits)
    rng = np.random.RandomState(64)
    inputs = {"input_ids": rng.randint(0, V, (1, S)).astype(np.int64),
              "attention_mask": np.ones((1, S), dtype=np.int64)}
    return graph, 17, inputs


def gpt2(S=32, L=4, H=256, NH=4, V=8192, P=1024):
    HD = H // NH
    g = G(2019)
    wte = g.weight("transformer.wte.weight", [V, H], 0.5)
    wpe = g.weight("transformer.wpe.weight", [P, H], 0.2)
    g.init("position_ids", np.arange(S, dtype=np.int64).reshape(1, S))
    x = g.op("Add", [g.op("Gather", [wte, "input_ids"], axis=0), g.op("Gather", [wpe, "position_ids"], axis=0)])
    causal = np.where(np.tril(np.ones((S, S), dtype=bool)), 0.0, -10000.0).astype(np.float32)
    bias = g.init("attn.causal_bias", causal.reshape(1, 1, S, S))

    def conv1d(t, name, n_in, n_out):
        w = g.weight(name + ".weight", [n_in, n_out], 1.0 / np.sqrt(n_in))
        bb = g.weight(name + ".bias", [n_out], 0.05)
        y = g.op("Gemm", [g.op("Reshape", [t, g.const([-1, n_in], np.int64)]), w, bb])
        return g.op("Reshape", [y, g.const([1, S, n_out], np.int64)])

    for li in range(L):
        p = f"transformer.h.{li}."
        h = layer_norm(g, x, p + "ln_1", H, False, 17)
        qkv = conv1d(h, p + "attn.c_attn", H, 3 * H)
        q, k, v = g.op("Split", [qkv, g.const([H, H, H], np.int64)], n_out=3, axis=2)
        q, k, v = (heads(g, q, S, NH, HD, [0, 2, 1, 3]), heads(g, k, S, NH, HD, [0, 2, 3, 1]),
                   heads(g, v, S, NH, HD, [0, 2, 1, 3]))
        sc = g.op("Mul", [g.op("MatMul", [q, k]), g.const(float(1.0 / np.sqrt(HD)))])
        pr = g.op("Softmax", [g.op("Add", [sc, bias])], axis=-1)
        c = g.op("Transpose", [g.op("MatMul", [pr, v])], perm=[0, 2, 1, 3])
        c = g.op("Reshape", [c, g.const([1, S, H], np.int64)])
        x = g.op("Add", [x, conv1d(c, p + "attn.c_proj", H, H)])
        h = conv1d(layer_norm(g, x, p + "ln_2", H, False, 17), p + "mlp.c_fc", H, 4 * H)
        t = g.op("Add", [h, g.op("Mul", [g.op("Pow", [h, g.const(3.0)]), g.const(0.044715)])])
        t = g.op("Tanh", [g.op("Mul", [t, g.const(float(np.sqrt(2.0 / np.pi)))])])
        h = g.op("Mul", [g.op("Mul", [h, g.const(0.5)]), g.op("Add", [t, g.const(1.0)])])
        x = g.op("Add", [x, conv1d(h, p + "mlp.c_proj", 4 * H, H)])
    x = layer_norm(g, x, "transformer.ln_f", H, False, 17)
    g.nodes.append(oh.make_node("MatMul", [x, g.op("Transpose", [wte], perm=[1, 0])], ["logits"]))
    graph = oh.make_graph(g.nodes, "gpt2_s32", [oh.make_tensor_value_info("input_ids", TP.INT64, [1, S])],
                          [oh.make_tensor_value_info("logits", TP.FLOAT, [1, S, V])], g.inits)
    inputs = {"input_ids": np.random.RandomState(32).randint(0, V, (1, S)).astype(np.int64)}
    return graph, 17, inputs


def dispatch(n=1000):
    nodes, prev = [], "x"
    one = nh.from_array(np.array([0.5], dtype=np.float32), "c")
    for i in range(n):
        out = "y" if i == n - 1 else f"t{i}"
        op = ("Add", "Relu", "Identity")[i % 3]
        nodes.append(oh.make_node(op, [prev, "c"] if op == "Add" else [prev], [out], name=f"n{i}"))
        prev = out
    graph = oh.make_graph(nodes, "dispatch_1000", [oh.make_tensor_value_info("x", TP.FLOAT, [1])],
                          [oh.make_tensor_value_info("y", TP.FLOAT, [1])], [one])
    return graph, 17, {"x": np.array([-3.0], dtype=np.float32)}


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: gen_bench_models.py OUTDIR")
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    for name, build in (("mobilenetv2", mobilenetv2), ("bert_s64", bert), ("gpt2_s32", gpt2),
                        ("dispatch_1000", dispatch)):
        graph, opset, inputs = build()
        model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)], ir_version=8,
                              producer_name="aidos-bench")
        onnx.checker.check_model(model)
        d = os.path.join(outdir, name, "in")
        os.makedirs(d, exist_ok=True)
        for k, v in inputs.items():
            np.save(os.path.join(d, k + ".npy"), v)
        onnx.save(model, os.path.join(outdir, name + ".onnx"))
        print(f"gen_bench_models: {name}.onnx ({len(graph.node)} nodes)")


if __name__ == "__main__":
    main()
