#!/usr/bin/python3
"""tools/gen_transformers.py - transformer test models aidos builds itself.

    /usr/bin/python3 tools/gen_transformers.py OUTDIR [BERT_TINY.onnx]

Test tooling only (Debian's python3-onnx and python3-numpy; never run by
aidos itself). Writes, with random weights from fixed seeds:

  bert_ln.onnx, bert_dec.onnx   BERT-style encoder as PyTorch's TorchScript
      exporter writes it (opset 17): inputs input_ids, attention_mask
      int64 [batch, seq] (symbolic); Gather embeddings, position ids by Slice
      of a buffer, token types by Expand, the exporters' shape chains
      (Shape -> Gather -> Unsqueeze -> Concat -> Reshape), attention with
      MatMul/Transpose/Softmax and the mask via Unsqueeze/Cast/Sub/Mul, Gelu
      expanded through Erf, a Gemm+Tanh pooler. _ln uses LayerNormalization,
      _dec its decomposed ReduceMean/Sub/Pow/Sqrt/Div form.
  gpt2_ln.onnx, gpt2_dec.onnx   GPT-2-style causal decoder as the dynamo
      exporter writes it (opset 18): position ids by CumSum of the mask,
      Conv1D as Reshape -> Gemm -> Reshape, Split with num_outputs, a causal
      mask from Trilu, Expand'ed to the batch and combined with the padding
      mask through And/Where, tanh-approximated Gelu, tied LM head, and the
      last real token's hidden state picked by GatherND with Range indices.
  dyn_reshape.onnx   x float [n], shape int64 [k] -> Reshape(x, shape):
      "shape" must be value-keyed (two requests in cases/dyn_reshape/{a,b}/in).
  dyn_mask.onnx      x float [2, 3], m int64 [2, 3] -> x * Cast(m) +
      ReduceSum(x, axes): "axes" (an input) is value-keyed, "m" is not.
  dyn_big.onnx       x float [6], t int64 [n] -> Reshape(x, Unsqueeze(
      ReduceMax(t))): t would have to be value-keyed; over 64 elements
      aidos refuses it.

  bert_tiny.onnx     with a second argument: that file (PyTorch's own
      TorchScript export, the shared development corpus), with its stored
      input and three more (batch, seq) cases.

and, for every transformer model and each (batch, seq) case below,
cases/<model>/<case>/in/<input>.npy plus a line "<model> <case>" in
cases.txt; tools/ort_run.js adds ONNX Runtime's outputs (out/<output>.npy).
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto as TP, helper as oh, numpy_helper as nh

F32_MIN = float(np.finfo(np.float32).min)

# (batch, seq) cases, run in this order through one session each: repeats
# come back to a cached plan.
SHAPES = [(1, 8), (2, 5), (3, 16), (1, 1), (2, 5), (4, 3), (1, 8)]


class G:
    """A graph under construction, named like an exporter names things."""

    def __init__(self, seed):
        self.nodes, self.inits, self.k = [], [], 0
        self.rng = np.random.RandomState(seed)

    def name(self, base):
        self.k += 1
        return f"/{base}_{self.k}"

    def op(self, op, ins, n_out=1, **attrs):
        outs = [self.name(op) + (f"_{i}" if n_out > 1 else "") for i in range(n_out)]
        self.nodes.append(oh.make_node(op, ins, outs, name=self.name(op + "_node"), **attrs))
        return outs if n_out > 1 else outs[0]

    def const(self, value, dtype=np.float32):
        # TorchScript exports small constants as Constant nodes.
        arr = np.array(value, dtype=dtype)
        out = self.name("Constant")
        self.nodes.append(oh.make_node("Constant", [], [out], value=nh.from_array(arr)))
        return out

    def weight(self, name, shape, scale=0.1, offset=0.0):
        arr = (self.rng.standard_normal(shape) * scale + offset).astype(np.float32)
        self.inits.append(nh.from_array(arr, name))
        return name

    def init(self, name, arr):
        self.inits.append(nh.from_array(arr, name))
        return name


def layer_norm(g, x, prefix, H, decomposed, opset, eps=1e-5):
    gamma = g.weight(prefix + ".weight", [H], 0.1, 1.0)
    beta = g.weight(prefix + ".bias", [H], 0.1)
    if not decomposed:
        return g.op("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=eps)
    if opset >= 18:
        axes = g.const([-1], np.int64)
        mean = g.op("ReduceMean", [x, axes], keepdims=1)
    else:
        mean = g.op("ReduceMean", [x], axes=[-1], keepdims=1)
    d = g.op("Sub", [x, mean])
    sq = g.op("Pow", [d, g.const(2.0)])
    if opset >= 18:
        var = g.op("ReduceMean", [sq, g.const([-1], np.int64)], keepdims=1)
    else:
        var = g.op("ReduceMean", [sq], axes=[-1], keepdims=1)
    std = g.op("Sqrt", [g.op("Add", [var, g.const(eps)])])
    return g.op("Add", [g.op("Mul", [g.op("Div", [d, std]), gamma]), beta])


def dim(g, x, i):
    """Shape(x)[i] as a 1-element int64 tensor (Shape -> Gather -> Unsqueeze)."""
    d = g.op("Gather", [g.op("Shape", [x]), g.const(i, np.int64)], axis=0)
    return g.op("Unsqueeze", [d, g.const([0], np.int64)])


def bert(decomposed):
    V, H, NH, FF, L, P = 96, 32, 4, 64, 2, 64
    HD = H // NH
    g = G(1234)
    ids, mask = "input_ids", "attention_mask"
    word = g.weight("embeddings.word_embeddings.weight", [V, H], 0.5)
    pos = g.weight("embeddings.position_embeddings.weight", [P, H], 0.5)
    tok = g.weight("embeddings.token_type_embeddings.weight", [2, H], 0.5)
    g.init("embeddings.position_ids", np.arange(P, dtype=np.int64).reshape(1, P))
    g.init("embeddings.token_type_ids", np.zeros((1, P), dtype=np.int64))
    seq = dim(g, ids, 1)
    # position_ids = self.position_ids[:, 0:seq]
    pids = g.op("Slice", ["embeddings.position_ids", g.const([0], np.int64), seq, g.const([1], np.int64)])
    # token_type_ids = self.token_type_ids[:, :seq].expand(batch, seq)
    tt = g.op("Slice", ["embeddings.token_type_ids", g.const([0], np.int64), seq, g.const([1], np.int64)])
    tt = g.op("Expand", [tt, g.op("Shape", [ids])])
    e = g.op("Add", [g.op("Gather", [word, ids], axis=0), g.op("Gather", [tok, tt], axis=0)])
    e = g.op("Add", [e, g.op("Gather", [pos, pids], axis=0)])
    x = layer_norm(g, e, "embeddings.LayerNorm", H, decomposed, 17, 1e-12)
    # extended mask: (1 - mask[:, None, None, :].float()) * finfo.min
    m = g.op("Unsqueeze", [mask, g.const([1], np.int64)])
    m = g.op("Unsqueeze", [m, g.const([2], np.int64)])
    m = g.op("Cast", [m], to=TP.FLOAT)
    m = g.op("Mul", [g.op("Sub", [g.const(1.0), m]), g.const(F32_MIN)])
    for li in range(L):
        p = f"encoder.layer.{li}."

        def heads(t, perm):
            b, s = dim(g, t, 0), dim(g, t, 1)
            shp = g.op("Concat", [b, s, g.const([NH], np.int64), g.const([HD], np.int64)], axis=0)
            return g.op("Transpose", [g.op("Reshape", [t, shp])], perm=perm)

        def dense(t, name, n_in, n_out):
            w = g.weight(p + name + ".weight.T", [n_in, n_out], 1.0 / np.sqrt(n_in))
            b = g.weight(p + name + ".bias", [n_out], 0.05)
            return g.op("Add", [b, g.op("MatMul", [t, w])])

        q = heads(dense(x, "attention.self.query", H, H), [0, 2, 1, 3])
        k = heads(dense(x, "attention.self.key", H, H), [0, 2, 3, 1])
        v = heads(dense(x, "attention.self.value", H, H), [0, 2, 1, 3])
        sc = g.op("Div", [g.op("MatMul", [q, k]), g.const(float(np.sqrt(HD)))])
        pr = g.op("Softmax", [g.op("Add", [sc, m])], axis=-1)
        c = g.op("Transpose", [g.op("MatMul", [pr, v])], perm=[0, 2, 1, 3])
        shp = g.op("Concat", [dim(g, c, 0), dim(g, c, 1), g.const([H], np.int64)], axis=0)
        c = g.op("Reshape", [c, shp])
        a = dense(c, "attention.output.dense", H, H)
        x = layer_norm(g, g.op("Add", [a, x]), p + "attention.output.LayerNorm", H, decomposed, 17, 1e-12)
        h = dense(x, "intermediate.dense", H, FF)
        # gelu(x) = x * 0.5 * (1 + erf(x / sqrt(2)))
        er = g.op("Erf", [g.op("Div", [h, g.const(1.4142135381698608)])])
        h = g.op("Mul", [g.op("Mul", [h, g.op("Add", [er, g.const(1.0)])]), g.const(0.5)])
        o = dense(h, "output.dense", FF, H)
        x = layer_norm(g, g.op("Add", [o, x]), p + "output.LayerNorm", H, decomposed, 17, 1e-12)
    g.nodes.append(oh.make_node("Identity", [x], ["last_hidden_state"]))
    first = g.op("Gather", [x, g.const(0, np.int64)], axis=1)
    pw = g.weight("pooler.dense.weight", [H, H], 1.0 / np.sqrt(H))
    pb = g.weight("pooler.dense.bias", [H], 0.05)
    g.nodes.append(oh.make_node("Tanh", [g.op("Gemm", [first, pw, pb], transB=1)], ["pooler_output"]))
    ins = [oh.make_tensor_value_info(n, TP.INT64, ["batch", "sequence"]) for n in (ids, mask)]
    outs = [oh.make_tensor_value_info("last_hidden_state", TP.FLOAT, ["batch", "sequence", H]),
            oh.make_tensor_value_info("pooler_output", TP.FLOAT, ["batch", H])]
    graph = oh.make_graph(g.nodes, "bert", ins, outs, g.inits)
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8,
                         producer_name="pytorch", producer_version="2.1.0"), V


def gpt2(decomposed):
    V, H, NH, L, P, NL = 80, 32, 4, 2, 64, 3
    HD = H // NH
    g = G(4321)
    ids, mask = "input_ids", "attention_mask"
    wte = g.weight("transformer.wte.weight", [V, H], 0.5)
    wpe = g.weight("transformer.wpe.weight", [P, H], 0.2)
    # position_ids = attention_mask.cumsum(-1) - 1, masked_fill(mask == 0, 1)
    cs = g.op("CumSum", [mask, g.const(1, np.int64)])
    pid = g.op("Sub", [cs, g.const(1, np.int64)])
    pad = g.op("Equal", [mask, g.const(0, np.int64)])
    pid = g.op("Where", [pad, g.const(1, np.int64), pid])
    x = g.op("Add", [g.op("Gather", [wte, ids], axis=0), g.op("Gather", [wpe, pid], axis=0)])
    b, s = dim(g, ids, 0), dim(g, ids, 1)
    # causal = tril(ones(s, s)).bool(), expanded to [b, 1, s, s], and-ed with
    # the padding mask [b, 1, 1, s]; bias = where(allowed, 0, finfo.min)
    ones = g.op("ConstantOfShape", [g.op("Concat", [s, s], axis=0)],
                value=nh.from_array(np.array([1.0], dtype=np.float32)))
    causal = g.op("Cast", [g.op("Trilu", [ones], upper=0)], to=TP.BOOL)
    causal = g.op("Expand", [causal, g.op("Concat", [b, g.const([1], np.int64), s, s], axis=0)])
    pm = g.op("Cast", [g.op("Unsqueeze", [mask, g.const([1, 2], np.int64)])], to=TP.BOOL)
    allowed = g.op("And", [causal, pm])
    bias = g.op("Where", [allowed, g.const(0.0), g.const(F32_MIN)])

    def conv1d(t, name, n_in, n_out):
        # transformers' Conv1D: addmm(bias, x.view(-1, n_in), weight).view(b, s, n_out)
        w = g.weight(name + ".weight", [n_in, n_out], 1.0 / np.sqrt(n_in))
        bb = g.weight(name + ".bias", [n_out], 0.05)
        t2 = g.op("Reshape", [t, g.const([-1, n_in], np.int64)])
        y = g.op("Gemm", [t2, w, bb])
        return g.op("Reshape", [y, g.op("Concat", [dim(g, t, 0), dim(g, t, 1), g.const([n_out], np.int64)], axis=0)])

    for li in range(L):
        p = f"transformer.h.{li}."
        h = layer_norm(g, x, p + "ln_1", H, decomposed, 18)
        qkv = conv1d(h, p + "attn.c_attn", H, 3 * H)
        q, k, v = g.op("Split", [qkv], n_out=3, axis=2, num_outputs=3)

        def heads(t, perm):
            shp = g.op("Concat", [b, s, g.const([NH, HD], np.int64)], axis=0)
            return g.op("Transpose", [g.op("Reshape", [t, shp])], perm=perm)

        q, k, v = heads(q, [0, 2, 1, 3]), heads(k, [0, 2, 3, 1]), heads(v, [0, 2, 1, 3])
        sc = g.op("Mul", [g.op("MatMul", [q, k]), g.const(float(1.0 / np.sqrt(HD)))])
        pr = g.op("Softmax", [g.op("Add", [sc, bias])], axis=-1)
        c = g.op("Transpose", [g.op("MatMul", [pr, v])], perm=[0, 2, 1, 3])
        c = g.op("Reshape", [c, g.op("Concat", [b, s, g.const([H], np.int64)], axis=0)])
        x = g.op("Add", [x, conv1d(c, p + "attn.c_proj", H, H)])
        h = layer_norm(g, x, p + "ln_2", H, decomposed, 18)
        h = conv1d(h, p + "mlp.c_fc", H, 4 * H)
        # gelu_new: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        t = g.op("Add", [h, g.op("Mul", [g.op("Pow", [h, g.const(3.0)]), g.const(0.044715)])])
        t = g.op("Tanh", [g.op("Mul", [t, g.const(float(np.sqrt(2.0 / np.pi)))])])
        h = g.op("Mul", [g.op("Mul", [h, g.const(0.5)]), g.op("Add", [t, g.const(1.0)])])
        x = g.op("Add", [x, conv1d(h, p + "mlp.c_proj", 4 * H, H)])
    x = layer_norm(g, x, "transformer.ln_f", H, decomposed, 18)
    # tied LM head: logits = x @ wte^T
    g.nodes.append(oh.make_node("MatMul", [x, g.op("Transpose", [wte], perm=[1, 0])], ["logits"]))
    # last real token: hidden[arange(b), mask.sum(-1) - 1] (GatherND)
    last = g.op("Sub", [g.op("ReduceSum", [mask, g.const([1], np.int64)], keepdims=0), g.const(1, np.int64)])
    bi = g.op("Range", [g.const(0, np.int64), g.op("Squeeze", [b, g.const([0], np.int64)]), g.const(1, np.int64)])
    idx = g.op("Concat", [g.op("Unsqueeze", [bi, g.const([1], np.int64)]),
                          g.op("Unsqueeze", [last, g.const([1], np.int64)])], axis=1)
    pooled = g.op("GatherND", [x, idx])
    sw = g.weight("score.weight", [NL, H], 1.0 / np.sqrt(H))
    g.nodes.append(oh.make_node("Gemm", [pooled, sw], ["scores"], transB=1))
    ins = [oh.make_tensor_value_info(n, TP.INT64, ["batch", "sequence"]) for n in (ids, mask)]
    outs = [oh.make_tensor_value_info("logits", TP.FLOAT, ["batch", "sequence", V]),
            oh.make_tensor_value_info("scores", TP.FLOAT, ["batch", NL])]
    graph = oh.make_graph(g.nodes, "gpt2", ins, outs, g.inits)
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 18)], ir_version=8,
                         producer_name="pytorch", producer_version="2.1.0"), V


def dyn_models():
    out = {}
    n = oh.make_node
    vi = oh.make_tensor_value_info
    g = oh.make_graph([n("Reshape", ["x", "shape"], ["y"])], "dyn_reshape",
                      [vi("x", TP.FLOAT, ["n"]), vi("shape", TP.INT64, ["k"])], [vi("y", TP.FLOAT, None)])
    out["dyn_reshape"] = g
    g = oh.make_graph([n("Cast", ["m"], ["mf"], to=TP.FLOAT), n("Mul", ["x", "mf"], ["xm"]),
                       n("ReduceSum", ["x", "axes"], ["r"], keepdims=1), n("Add", ["xm", "r"], ["y"])],
                      "dyn_mask", [vi("x", TP.FLOAT, [2, 3]), vi("m", TP.INT64, [2, 3]), vi("axes", TP.INT64, [1])],
                      [vi("y", TP.FLOAT, [2, 3])])
    out["dyn_mask"] = g
    g = oh.make_graph([n("ReduceMax", ["t"], ["mx"], keepdims=0),
                       n("Unsqueeze", ["mx", "zero"], ["shp"]), n("Reshape", ["x", "shp"], ["y"])],
                      "dyn_big", [vi("x", TP.FLOAT, [6]), vi("t", TP.INT64, ["n"])], [vi("y", TP.FLOAT, None)],
                      [nh.from_array(np.array([0], dtype=np.int64), "zero")])
    out["dyn_big"] = g
    return {k: oh.make_model(v, opset_imports=[oh.make_opsetid("", 18)], ir_version=8) for k, v in out.items()}


def inputs(vocab, b, s, seed):
    rng = np.random.RandomState(seed)
    ids = rng.randint(0, vocab, size=(b, s)).astype(np.int64)
    mask = np.ones((b, s), dtype=np.int64)
    for r in range(b):  # right padding: row r keeps s - r tokens (at least 1)
        mask[r, max(1, s - r):] = 0
    return {"input_ids": ids, "attention_mask": mask}


def bert_tiny(src, outdir, lines):
    """PyTorch's own export (shared corpus): its stored input, then more shapes."""
    import shutil
    shutil.copyfile(src, os.path.join(outdir, "bert_tiny.onnx"))
    stored = os.path.join(os.path.dirname(src), "bert_tiny", "in")
    cases = [("00_stored", {k: np.load(os.path.join(stored, k + ".npy")) for k in ("input_ids", "attention_mask")})]
    for ci, (b, s) in enumerate([(2, 16), (1, 7), (2, 16)]):
        cases.append((f"{ci + 1:02d}_b{b}_s{s}", inputs(4096, b, s, 77 + ci)))
    for case, feeds in cases:
        d = os.path.join(outdir, "cases", "bert_tiny", case, "in")
        os.makedirs(d, exist_ok=True)
        for k, v in feeds.items():
            np.save(os.path.join(d, k + ".npy"), v)
        lines.append(f"bert_tiny {case}\n")


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: gen_transformers.py OUTDIR [BERT_TINY.onnx]")
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    lines = []
    if len(sys.argv) == 3:
        bert_tiny(sys.argv[2], outdir, lines)
    for name, (model, vocab) in (("bert_ln", bert(False)), ("bert_dec", bert(True)),
                                 ("gpt2_ln", gpt2(False)), ("gpt2_dec", gpt2(True))):
        onnx.save(model, os.path.join(outdir, name + ".onnx"))
        for ci, (b, s) in enumerate(SHAPES):
            case = f"{ci:02d}_b{b}_s{s}"
            d = os.path.join(outdir, "cases", name, case, "in")
            os.makedirs(d, exist_ok=True)
            for k, v in inputs(vocab, b, s, 1000 * b + 10 * s + ci).items():
                np.save(os.path.join(d, k + ".npy"), v)
            lines.append(f"{name} {case}\n")
    for name, model in dyn_models().items():
        onnx.save(model, os.path.join(outdir, name + ".onnx"))
    # Two requests of dyn_reshape (same x, two shape values) for tests/test_hotpath.c.
    for case, shape in (("a", [2, 3]), ("b", [3, 2])):
        d = os.path.join(outdir, "cases", "dyn_reshape", case, "in")
        os.makedirs(d, exist_ok=True)
        np.save(os.path.join(d, "x.npy"), np.arange(6, dtype=np.float32))
        np.save(os.path.join(d, "shape.npy"), np.array(shape, dtype=np.int64))
    with open(os.path.join(outdir, "cases.txt"), "w") as f:
        f.writelines(lines)


if __name__ == "__main__":
    main()
