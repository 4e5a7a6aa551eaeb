"""ONNX models built with onnx.helper the way exporters write them: small mobile and transformer blocks that
cover the op sets, a MobileNetV2-style network and a BERT-base-shaped encoder layer. Each builder draws its
weights from `rng`, a seed or a numpy Generator (a shared Generator gives each call fresh weights)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

H = helper.make_node
Seed = int | np.random.Generator


def make_model(nodes, inputs, outputs, initializers=(), opset: int = 17, name: str = "test") -> onnx.ModelProto:
    """A checked ONNX model; inputs/outputs are (name, shape) for f32 or (name, shape, TensorProto type)."""

    def info(spec):
        name, shape, *rest = spec
        return helper.make_tensor_value_info(name, rest[0] if rest else TensorProto.FLOAT, shape)

    graph = helper.make_graph(
        nodes,
        name,
        [info(i) for i in inputs],
        [info(o) for o in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(initializers).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 9)
    if all(spec[1] is not None for spec in list(inputs) + list(outputs)):
        onnx.checker.check_model(model)
    return model


def _normal(rng: Seed) -> Callable[..., np.ndarray]:
    gen = np.random.default_rng(rng)
    return lambda *shape, scale=0.3: (gen.standard_normal(shape) * scale).astype(np.float32)


def i64(*vals) -> np.ndarray:
    return np.array(vals, dtype=np.int64)


def mobile_block(rng: Seed = 42) -> onnx.ModelProto:
    """MobileNetV3-style: strided conv + ReLU6, depthwise + HardSwish, squeeze-excite with HardSigmoid,
    global pooling, nearest Resize and ConvTranspose."""
    w = _normal(rng)
    nodes = [
        H("Conv", ["x", "w1", "b1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),
        H("Clip", ["c1", "zero", "six"], ["r6"]),
        H("Conv", ["r6", "wd"], ["dw"], group=8, pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        H("HardSwish", ["dw"], ["hs"]),
        H("GlobalAveragePool", ["hs"], ["gp"]),
        H("Conv", ["gp", "wse"], ["se"]),
        H("HardSigmoid", ["se"], ["gate"], alpha=0.2, beta=0.5),
        H("Mul", ["hs", "gate"], ["scaled"]),
        H("Conv", ["scaled", "wg"], ["grouped"], group=2, kernel_shape=[1, 1]),
        H("Resize", ["grouped", "", "scales"], ["up"], mode="nearest"),
        H("ConvTranspose", ["up", "wt", "bt"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]),
        H("GlobalMaxPool", ["grouped"], ["pooled"]),
    ]
    inits = {
        "w1": w(8, 3, 3, 3),
        "b1": w(8),
        "zero": np.float32(0),
        "six": np.float32(6),
        "wd": w(8, 1, 3, 3),
        "wse": w(8, 8, 1, 1),
        "wg": w(16, 4, 1, 1),
        "scales": np.array([1, 1, 2, 2], np.float32),
        "wt": w(16, 4, 3, 3),
        "bt": w(4),
    }
    return make_model(nodes, [("x", [1, 3, 16, 16])], [("y", None), ("pooled", None)], inits, opset=14)


def transformer_block(rng: Seed = 42) -> onnx.ModelProto:
    """A BERT-style layer as exporters write it: LayerNormalization, Gemm through computed Reshape shapes
    (Shape/Gather/Unsqueeze/Concat), attention with Where masking, erf-GELU, and a hand-written LayerNorm
    (ReduceMean/Sub/Pow/Sqrt/Div), plus Cast, Slice and Squeeze."""
    w = _normal(rng)
    d, s, heads = 16, 8, 2
    mask = np.tril(np.ones((s, s), dtype=bool))
    nodes = [
        H("LayerNormalization", ["x", "ln_g", "ln_b"], ["ln"], axis=-1, epsilon=1e-5),
        H("Shape", ["ln"], ["shp"]),
        H("Gather", ["shp", "idx0"], ["batch"], axis=0),
        H("Gather", ["shp", "idx1"], ["seq"], axis=0),
        H("Unsqueeze", ["batch", "ax0"], ["batch1"]),
        H("Unsqueeze", ["seq", "ax0"], ["seq1"]),
        H("Reshape", ["ln", "flat_shape"], ["flat"]),
        H("Gemm", ["flat", "wqkv", "bqkv"], ["qkv_flat"], transB=1),
        H("Concat", ["batch1", "seq1", "three_heads"], ["qkv_shape"], axis=0),
        H("Reshape", ["qkv_flat", "qkv_shape"], ["qkv"]),
        H("Transpose", ["qkv"], ["qkv_t"], perm=[2, 0, 3, 1, 4]),
        H("Split", ["qkv_t", "split3"], ["q5", "k5", "v5"], axis=0),
        H("Squeeze", ["q5", "ax0"], ["q"]),
        H("Squeeze", ["k5", "ax0"], ["k"]),
        H("Squeeze", ["v5", "ax0"], ["v"]),
        H("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        H("MatMul", ["q", "kt"], ["scores_raw"]),
        H("Div", ["scores_raw", "sqrt_dk"], ["scores"]),
        H("Where", ["mask", "scores", "neg"], ["masked"]),
        H("Softmax", ["masked"], ["probs"], axis=-1),
        H("MatMul", ["probs", "v"], ["ctx"]),
        H("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3]),
        H("Concat", ["batch1", "seq1", "minus1"], ["out_shape"], axis=0),
        H("Reshape", ["ctx_t", "out_shape"], ["attn"]),
        H("Add", ["x", "attn"], ["res"]),
        H("MatMul", ["res", "w_ff1"], ["ff1"]),
        H("Div", ["ff1", "sqrt2"], ["ff1s"]),
        H("Erf", ["ff1s"], ["erf"]),
        H("Add", ["erf", "one"], ["erf1"]),
        H("Mul", ["ff1", "erf1"], ["g0"]),
        H("Mul", ["g0", "half"], ["gelu"]),
        H("MatMul", ["gelu", "w_ff2"], ["ff2"]),
        H("Add", ["res", "ff2"], ["res2"]),
        H("ReduceMean", ["res2"], ["mu"], axes=[-1]),
        H("Sub", ["res2", "mu"], ["dev"]),
        H("Pow", ["dev", "two"], ["sq"]),
        H("ReduceMean", ["sq"], ["var"], axes=[-1]),
        H("Add", ["var", "eps"], ["var_eps"]),
        H("Sqrt", ["var_eps"], ["std"]),
        H("Div", ["dev", "std"], ["normed"]),
        H("Cast", ["seq"], ["seq_f"], to=TensorProto.FLOAT),
        H("Div", ["normed", "seq_f"], ["y"]),
        H("Slice", ["y", "s_start", "s_end", "s_axes"], ["first_half"]),
    ]
    inits = {
        "ln_g": w(d) + 1,
        "ln_b": w(d),
        "idx0": np.int64(0),
        "idx1": np.int64(1),
        "ax0": i64(0),
        "flat_shape": i64(-1, d),
        "wqkv": w(3 * d, d),
        "bqkv": w(3 * d),
        "three_heads": i64(3, heads, d // heads),
        "split3": i64(1, 1, 1),
        "sqrt_dk": np.float32(np.sqrt(d // heads)),
        "mask": mask,
        "neg": np.float32(-1e9),
        "minus1": i64(-1),
        "w_ff1": w(d, 4 * d),
        "sqrt2": np.float32(np.sqrt(2)),
        "one": np.float32(1),
        "half": np.float32(0.5),
        "w_ff2": w(4 * d, d),
        "two": np.float32(2),
        "eps": np.float32(1e-5),
        "s_start": i64(0),
        "s_end": i64(s // 2),
        "s_axes": i64(1),
    }
    return make_model(nodes, [("x", [1, s, d])], [("y", None), ("first_half", None)], inits, opset=13)


class Exporter:
    """Appends nodes named the way torch.onnx names them ('/scope/Op' writing '/scope/Op_output_0'), weights
    as seeded random initializers and small literals as Constant nodes."""

    def __init__(self, rng: Seed) -> None:
        self.rng = np.random.default_rng(rng)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, np.ndarray] = {}
        self.taken: dict[str, int] = {}

    def op(self, op_type: str, inputs: list[str], scope: str, out: str | None = None, **attrs) -> str:
        return self.op_n(op_type, inputs, scope, [out] if out else 1, **attrs)[0]

    def op_n(self, op_type: str, inputs: list[str], scope: str, outs: list[str] | int, **attrs) -> list[str]:
        """A node with several outputs: the names `outs`, or that many named as torch.onnx names them."""
        name = f"/{scope}/{op_type}"
        self.taken[name] = self.taken.get(name, -1) + 1
        name = f"{name}_{self.taken[name]}" if self.taken[name] else name
        outs = outs if isinstance(outs, list) else [f"{name}_output_{i}" for i in range(outs)]
        self.nodes.append(H(op_type, inputs, outs, name=name, **attrs))
        return outs

    def literal(self, value, scope: str) -> str:
        return self.op("Constant", [], scope, value=numpy_helper.from_array(np.asarray(value)))

    def weight(self, name: str, *shape: int, fan_in: int) -> str:
        self.inits[name] = (self.rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        return name

    def vector(self, name: str, n: int, low: float = -0.1, high: float = 0.1) -> str:
        self.inits[name] = self.rng.uniform(low, high, n).astype(np.float32)
        return name


# (expansion t, output channels c, repeats n, first stride s) of MobileNetV2's inverted residual stages
MOBILENET_V2_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def conv_bn(
    e: Exporter, x: str, scope: str, cin: int, cout: int, k: int, stride: int, groups: int, act: str | None
) -> str:
    """Conv + BatchNormalization, then `act`: "relu6" (Clip, reading the model's relu6_min/relu6_max), "silu"
    (Sigmoid and Mul, as torch.onnx writes nn.SiLU) or None."""
    w = e.weight(f"{scope}.conv.weight", cout, cin // groups, k, k, fan_in=cin // groups * k * k)
    y = e.op(
        "Conv", [x, w], f"{scope}/conv", group=groups, kernel_shape=[k, k], pads=[k // 2] * 4, strides=[stride] * 2
    )
    scale, shift = e.vector(f"{scope}.bn.weight", cout, 0.5, 1.5), e.vector(f"{scope}.bn.bias", cout)
    mean, var = e.vector(f"{scope}.bn.running_mean", cout), e.vector(f"{scope}.bn.running_var", cout, 0.5, 1.5)
    y = e.op("BatchNormalization", [y, scale, shift, mean, var], f"{scope}/bn", epsilon=1e-5, momentum=0.9)
    if act == "relu6":
        return e.op("Clip", [y, "relu6_min", "relu6_max"], f"{scope}/relu6")
    return e.op("Mul", [y, e.op("Sigmoid", [y], f"{scope}/act")], f"{scope}/act") if act == "silu" else y


def mobilenet_v2(size: int = 224, classes: int = 1000, rng: Seed = 0) -> onnx.ModelProto:
    """MobileNetV2 (width 1.0) as torch.onnx writes it in eval mode without folding: Conv + BatchNormalization
    + Clip(0, 6) units, inverted residuals (expand 1x1, depthwise 3x3, linear project 1x1, Add when the shape
    holds), global average pooling, Flatten and a Gemm classifier."""
    e = Exporter(rng)
    e.inits |= {"relu6_min": np.float32(0), "relu6_max": np.float32(6)}
    x = conv_bn(e, "input", "features.0", 3, 32, 3, 2, 1, "relu6")
    cin, index = 32, 1
    for t, c, n, s in MOBILENET_V2_STAGES:
        for i in range(n):
            scope, hidden, block_in = f"features.{index}", cin * t, x
            if t != 1:
                x = conv_bn(e, x, f"{scope}.expand", cin, hidden, 1, 1, 1, "relu6")
            x = conv_bn(e, x, f"{scope}.dw", hidden, hidden, 3, s if i == 0 else 1, hidden, "relu6")
            x = conv_bn(e, x, f"{scope}.project", hidden, c, 1, 1, 1, None)
            if i > 0:
                x = e.op("Add", [block_in, x], scope)
            cin, index = c, index + 1
    x = conv_bn(e, x, f"features.{index}", cin, 1280, 1, 1, 1, "relu6")
    x = e.op("GlobalAveragePool", [x], "pool")
    x = e.op("Flatten", [x], "flatten", axis=1)
    w, b = e.weight("classifier.weight", classes, 1280, fan_in=1280), e.vector("classifier.bias", classes)
    e.op("Gemm", [x, w, b], "classifier", out="logits", transB=1)
    return make_model(e.nodes, [("input", [1, 3, size, size])], [("logits", [1, classes])], e.inits, 13, "mobilenet_v2")


def _conv1d_bn(e: Exporter, x: str, scope: str, cin: int, cout: int, k: int, stride: int, relu: bool) -> str:
    w = e.weight(f"{scope}.conv.weight", cout, cin, k, fan_in=cin * k)
    y = e.op("Conv", [x, w], f"{scope}/conv", kernel_shape=[k], pads=[k // 2] * 2, strides=[stride])
    scale, shift = e.vector(f"{scope}.bn.weight", cout, 0.5, 1.5), e.vector(f"{scope}.bn.bias", cout)
    mean, var = e.vector(f"{scope}.bn.running_mean", cout), e.vector(f"{scope}.bn.running_var", cout, 0.5, 1.5)
    y = e.op("BatchNormalization", [y, scale, shift, mean, var], f"{scope}/bn", epsilon=1e-5, momentum=0.9)
    return e.op("Relu", [y], f"{scope}/relu") if relu else y


def tc_resnet8(width: float = 1.5, mfcc: int = 40, frames: int = 101, classes: int = 12, rng: Seed = 0):
    """TC-ResNet8 (Choi et al., 2019), the keyword-spotting network for phones and MCUs: temporal 1-D convs over
    MFCC frames (the coefficients are the channels), three residual blocks of two 9-tap convs with stride 2
    and a 1x1 conv shortcut, global average pooling and a Gemm classifier; Conv + BatchNormalization + Relu
    as torch.onnx writes them."""
    e = Exporter(rng)
    channels = [int(c * width) for c in (16, 24, 32, 48)]
    x = _conv1d_bn(e, "mfcc", "conv0", mfcc, channels[0], 3, 1, True)
    for i, (cin, cout) in enumerate(zip(channels, channels[1:]), start=1):
        y = _conv1d_bn(e, x, f"block{i}.conv1", cin, cout, 9, 2, True)
        y = _conv1d_bn(e, y, f"block{i}.conv2", cout, cout, 9, 1, False)
        shortcut = _conv1d_bn(e, x, f"block{i}.shortcut", cin, cout, 1, 2, True)
        x = e.op("Relu", [e.op("Add", [y, shortcut], f"block{i}")], f"block{i}/relu")
    x = e.op("Flatten", [e.op("GlobalAveragePool", [x], "pool")], "flatten", axis=1)
    w, b = e.weight("fc.weight", classes, channels[-1], fan_in=channels[-1]), e.vector("fc.bias", classes)
    e.op("Gemm", [x, w, b], "fc", out="logits", transB=1)
    return make_model(e.nodes, [("mfcc", [1, mfcc, frames])], [("logits", [1, classes])], e.inits, 13, "tc_resnet8")


def kws_rnn(cell: str = "LSTM", frames: int = 49, mfcc: int = 10, hidden: int = 64, classes: int = 12, rng: Seed = 0):
    """A recurrent keyword spotter (the "Hello Edge" LSTM-S shape; `cell` "GRU" for its GRU variant, with the
    reset gate after the recurrent matmul, as torch.onnx exports nn.GRU): MFCC frames -> LSTM or GRU -> last
    hidden -> classes, time-major as exporters write it (onnxruntime has no batch-major LSTM)."""
    gen, gates = np.random.default_rng(rng), {"LSTM": 4, "GRU": 3}[cell]
    inits = {
        "W": gen.standard_normal((1, gates * hidden, mfcc)).astype(np.float32) * 0.2,
        "R": gen.standard_normal((1, gates * hidden, hidden)).astype(np.float32) * 0.2,
        "B": gen.standard_normal((1, 2 * gates * hidden)).astype(np.float32) * 0.1,
        "fc": gen.standard_normal((hidden, classes)).astype(np.float32) * 0.2,
        "shape": i64(1, hidden),
    }
    attrs = {"linear_before_reset": 1} if cell == "GRU" else {}
    nodes = [
        H("Transpose", ["mfcc"], ["frames"], perm=[1, 0, 2]),
        H(cell, ["frames", "W", "R", "B"], ["", "h"], hidden_size=hidden, **attrs),
        H("Reshape", ["h", "shape"], ["last"]),
        H("MatMul", ["last", "fc"], ["logits"]),
    ]
    name = f"kws_{cell.lower()}"
    return make_model(nodes, [("mfcc", [1, frames, mfcc])], [("logits", [1, classes])], inits, 14, name)


def _layer_norm(e: Exporter, x: str, scope: str, hidden: int, fused: bool, out: str | None = None) -> str:
    g, b = e.vector(f"{scope}.weight", hidden, 0.5, 1.5), e.vector(f"{scope}.bias", hidden)
    if fused:
        return e.op("LayerNormalization", [x, g, b], scope, out, axis=-1, epsilon=1e-12)
    dev = e.op("Sub", [x, e.op("ReduceMean", [x], scope, axes=[-1])], scope)
    var = e.op("ReduceMean", [e.op("Pow", [dev, e.literal(np.float32(2), scope)], scope)], scope, axes=[-1])
    std = e.op("Sqrt", [e.op("Add", [var, e.literal(np.float32(1e-12), scope)], scope)], scope)
    return e.op("Add", [e.op("Mul", [e.op("Div", [dev, std], scope), g], scope), b], scope, out)


def _linear(e: Exporter, x: str, scope: str, cin: int, cout: int) -> str:
    """torch.nn.Linear on a 3-d input: MatMul by the transposed weight, then Add(bias, product)."""
    w = e.weight(f"{scope}.weight_t", cin, cout, fan_in=cin)
    return e.op("Add", [e.vector(f"{scope}.bias", cout), e.op("MatMul", [x, w], scope)], scope)


def _reshape_keeping_batch_seq(e: Exporter, x: str, scope: str, tail: tuple[int, ...]) -> str:
    """x.view(x.size(0), x.size(1), *tail): the shape computed with Shape/Gather/Unsqueeze/Concat."""
    dims = []
    for axis in (0, 1):
        dim = e.op("Gather", [e.op("Shape", [x], scope), e.literal(np.int64(axis), scope)], scope, axis=0)
        dims.append(e.op("Unsqueeze", [dim, e.literal(i64(0), scope)], scope))
    dims += [e.literal(i64(d), scope) for d in tail]
    return e.op("Reshape", [x, e.op("Concat", dims, scope, axis=0)], scope)


def _heads(e: Exporter, x: str, scope: str, hidden: int, heads: int) -> str:
    """BertSelfAttention.transpose_for_scores: (b, s, hidden) -> (b, heads, s, hidden / heads)."""
    return e.op(
        "Transpose", [_reshape_keeping_batch_seq(e, x, scope, (heads, hidden // heads))], scope, perm=[0, 2, 1, 3]
    )


def _self_attention(e: Exporter, x: str, mask: str, scope: str, hidden: int, heads: int) -> str:
    q, k, v = (
        _heads(e, _linear(e, x, f"{scope}/{p}", hidden, hidden), f"{scope}/{p}", hidden, heads)
        for p in ("query", "key", "value")
    )
    scores = e.op("MatMul", [q, e.op("Transpose", [k], scope, perm=[0, 1, 3, 2])], scope)
    scores = e.op("Div", [scores, e.literal(np.float32(np.sqrt(hidden // heads)), scope)], scope)
    probs = e.op("Softmax", [e.op("Add", [scores, mask], scope)], scope, axis=-1)
    ctx = e.op("Transpose", [e.op("MatMul", [probs, v], scope)], scope, perm=[0, 2, 1, 3])
    return _reshape_keeping_batch_seq(e, ctx, scope, (hidden,))


def _gelu(e: Exporter, x: str, scope: str) -> str:
    """erf-GELU as torch.onnx writes F.gelu: x * (1 + erf(x / sqrt 2)) * 0.5."""
    erf = e.op("Erf", [e.op("Div", [x, e.literal(np.float32(np.sqrt(2)), scope)], scope)], scope)
    y = e.op("Mul", [x, e.op("Add", [erf, e.literal(np.float32(1), scope)], scope)], scope)
    return e.op("Mul", [y, e.literal(np.float32(0.5), scope)], scope)


def bert_layer(
    hidden: int = 768, heads: int = 12, seq: int = 128, fused_layer_norm: bool = True, rng: Seed = 0
) -> onnx.ModelProto:
    """One BERT-base encoder layer with its extended attention mask, as torch.onnx writes a Hugging Face
    BertLayer: opset 17 with LayerNormalization, or opset 13 with LayerNorm spelled out
    (ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add)."""
    e = Exporter(rng)
    mask = e.op("Unsqueeze", ["attention_mask", e.literal(i64(1), "mask")], "mask")
    mask = e.op("Cast", [e.op("Unsqueeze", [mask, e.literal(i64(2), "mask")], "mask")], "mask", to=TensorProto.FLOAT)
    mask = e.op("Sub", [e.literal(np.float32(1), "mask"), mask], "mask")
    mask = e.op("Mul", [mask, e.literal(np.float32(-10000), "mask")], "mask")
    attn = _self_attention(e, "hidden_states", mask, "attention/self", hidden, heads)
    attn = e.op(
        "Add", [_linear(e, attn, "attention/output/dense", hidden, hidden), "hidden_states"], "attention/output"
    )
    attn = _layer_norm(e, attn, "attention/output/LayerNorm", hidden, fused_layer_norm)
    inter = _gelu(e, _linear(e, attn, "intermediate/dense", hidden, 4 * hidden), "intermediate")
    out = e.op("Add", [_linear(e, inter, "output/dense", 4 * hidden, hidden), attn], "output")
    _layer_norm(e, out, "output/LayerNorm", hidden, fused_layer_norm, out="last_hidden_state")
    inputs = [("hidden_states", [1, seq, hidden]), ("attention_mask", [1, seq], TensorProto.INT64)]
    name = "bert_layer" if fused_layer_norm else "bert_layer_decomposed_ln"
    return make_model(
        e.nodes, inputs, [("last_hidden_state", [1, seq, hidden])], e.inits, 17 if fused_layer_norm else 13, name
    )
