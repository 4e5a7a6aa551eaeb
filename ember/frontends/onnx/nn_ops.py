"""ONNX op -> Ember op table, neural-network layers: convolution (1-D, 2-D and 3-D, transposed), pooling,
normalization, softmax and Gemm (registered into ops.ONNX_OPS)."""

from __future__ import annotations

import numpy as np

from ember.errors import EmberError
from ember.frontends.onnx.ops import _outs, onnx_op
from ember.ir.graph import Value
from ember.ir.ops.shapes import norm_axis


def _auto_pads(at: dict, x, kernel, strides, dilations) -> list[int]:
    dims = len(kernel)
    pads = list(at.get("pads", [0] * 2 * dims))
    mode = at.get("auto_pad", "NOTSET")
    if isinstance(mode, bytes):
        mode = mode.decode()
    if mode in ("NOTSET", "VALID"):
        return pads if mode == "NOTSET" else [0] * 2 * dims
    begin, end = [], []
    for i in range(dims):
        size = x.shape[2 + i]
        if not isinstance(size, int):
            raise EmberError(f"auto_pad={mode} needs a static spatial size", hint="pass --input-shape")
        out = -(-size // strides[i])
        total = max((out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begin.append(small if mode == "SAME_UPPER" else large)
        end.append(large if mode == "SAME_UPPER" else small)
    return begin + end


# A 1-D layer's attributes gain the unit height's value in front
LIFTED = {"kernel_shape": 1, "strides": 1, "dilations": 1, "output_shape": 1, "output_padding": 0}


def _spatial(m, n, x, volumes: bool = False) -> tuple[dict, Value]:
    """The node's attributes and input as a 2-D (NCHW) layer takes them: a 1-D layer (rank-3 input) runs as
    a 2-D one over a unit height, so every conv/pool kernel, pass and quantization rule serves it. With
    `volumes`, a 3-D layer (rank-5 input) is taken as it is."""
    at = dict(n.attrs)
    if x.rank == 4 or (volumes and x.rank == 5):
        return at, x
    if x.rank != 3:
        dims = "1-D, 2-D and 3-D" if volumes else "1-D and 2-D"
        raise EmberError(f"only {dims} {n.op} is supported, got a rank-{x.rank} input")
    for key, unit in LIFTED.items():
        if key in at:
            at[key] = [unit, *at[key]]
    if "pads" in at:
        at["pads"] = [0, at["pads"][0], 0, at["pads"][1]]
    return at, _unit_height(m, x)


def _unit_height(m, x):
    return m.emit1("unsqueeze", [x], {"axes": [2]})


def _emit_spatial(m, n, op: str, inputs: list, attrs: dict, one_d: bool) -> list:
    """Emit the 2-D layer; a lifted 1-D one's result loses its unit height again."""
    if not one_d:
        return m.emit(op, inputs, attrs, _outs(n, 1))
    return m.emit("squeeze", [m.emit1(op, inputs, attrs)], {"axes": [2]}, _outs(n, 1))


@onnx_op("Conv", "ConvTranspose")
def _conv(m, n):
    x, w, b = (m.ins(n) + [None])[:3]
    at, x4 = _spatial(m, n, x, volumes=True)
    w = w if x4 is x else _unit_height(m, w)
    dims = x4.rank - 2
    strides = at.get("strides", [1] * dims)
    dil = at.get("dilations", [1] * dims)
    attrs = {"strides": strides, "dilations": dil, "group": at.get("group", 1)}
    if n.op == "Conv":
        attrs["pads"] = _auto_pads(at, x4, at.get("kernel_shape", list(w.shape[2:])), strides, dil)
    else:
        attrs["output_padding"] = list(at.get("output_padding", [0] * dims))
        attrs["pads"] = _transposed_pads(at, x4, w, attrs)
    op = f"conv{dims}d" + ("" if n.op == "Conv" else "_transpose")
    if n.op == "ConvTranspose" and any(p < 0 for p in attrs["pads"]):
        return _grown_transpose(m, n, op, [x4, w, b], attrs, x4 is not x)
    return _emit_spatial(m, n, op, [x4, w, b], attrs, x4 is not x)


def _grown_transpose(m, n, op: str, inputs: list, attrs: dict, one_d: bool) -> list:
    """A ConvTranspose whose output_shape exceeds its full output (negative pads): the full output, zeros
    where the pads are negative, then the bias."""
    x, w, b = inputs
    pads, dims = attrs["pads"], x.rank - 2
    y = m.emit1(op, [x, w, None], {**attrs, "pads": [max(p, 0) for p in pads]})
    grow = [-min(p, 0) for p in pads]
    y = m.emit1("pad", [y], {"pads": [0, 0, *grow[:dims], 0, 0, *grow[dims:]], "mode": "constant", "value": 0.0})
    if b is not None:
        y = m.emit1("add", [y, m.emit1("reshape", [b, m.int_array([-1] + [1] * dims)])])
    if one_d:
        return m.emit("squeeze", [y], {"axes": [2]}, _outs(n, 1))
    return m.emit("identity", [y], {}, _outs(n, 1))


def _transposed_pads(at: dict, x, w, attrs: dict) -> list[int]:
    """A ConvTranspose's pads: as given, or split from the output_shape (or auto_pad's input x stride) it asks for;
    an output larger than the full one has a negative end pad."""
    dims, mode = x.rank - 2, at.get("auto_pad", "NOTSET")
    if "output_shape" not in at and mode not in ("SAME_UPPER", "SAME_LOWER"):
        return list(at.get("pads", [0] * 2 * dims))
    strides, dil, out_pad = attrs["strides"], attrs["dilations"], attrs["output_padding"]
    want = list(at.get("output_shape") or [d * s for d, s in zip(x.shape[2:], strides)])[-dims:]
    pads = [0] * 2 * dims
    for i in range(dims):
        total = strides[i] * (x.shape[2 + i] - 1) + out_pad[i] + (w.shape[2 + i] - 1) * dil[i] + 1 - want[i]
        lo = total // 2 if mode == "SAME_UPPER" else total - total // 2
        pads[i], pads[i + dims] = (lo, total - lo) if total >= 0 else (0, total)  # grown at the end, as onnxruntime
    return pads


@onnx_op("MaxPool", "AveragePool")
def _pool(m, n):
    x = m.inp(n, 0)
    if n.op == "MaxPool" and len(n.outputs) > 1 and n.outputs[1].outputs:
        raise EmberError("the MaxPool indices output is not supported")
    at, x4 = _spatial(m, n, x, volumes=True)
    kernel = at["kernel_shape"]
    strides = at.get("strides", [1] * len(kernel))
    dil = at.get("dilations", [1] * len(kernel))
    attrs = {
        "kernel": kernel,
        "strides": strides,
        "dilations": dil,
        "ceil_mode": at.get("ceil_mode", 0),
        "pads": _auto_pads(at, x4, kernel, strides, dil),
    }
    if n.op == "AveragePool":
        attrs["count_include_pad"] = at.get("count_include_pad", 0)
    op = ("max_pool" if n.op == "MaxPool" else "avg_pool") + f"{x4.rank - 2}d"
    return _emit_spatial(m, n, op, [x4], attrs, x4 is not x)


@onnx_op("LpPool")
def _lp_pool(m, n):
    """Each window's (sum of |x|^p)^(1/p), its padding zeros: the sum an average pool over the whole kernel
    (padding counted) times the kernel's size."""
    x, p = m.inp(n, 0), n.attrs.get("p", 2)
    at, terms = _spatial(m, n, _powers(m, x, p), volumes=True)
    kernel = at["kernel_shape"]
    strides = at.get("strides", [1] * len(kernel))
    dil = at.get("dilations", [1] * len(kernel))
    pads = _auto_pads(at, terms, kernel, strides, dil)
    attrs = {"kernel": kernel, "strides": strides, "dilations": dil, "ceil_mode": at.get("ceil_mode", 0)}
    pooled = m.emit1(f"avg_pool{terms.rank - 2}d", [terms], {**attrs, "pads": pads, "count_include_pad": 1})
    if x.rank == 3:
        pooled = m.emit1("squeeze", [pooled], {"axes": [2]})
    return _root(m, n, m.emit1("mul", [pooled, m.scalar(float(np.prod(kernel)), x)]), p)


@onnx_op("GlobalLpPool")
def _global_lp_pool(m, n):
    x, p = m.inp(n, 0), n.attrs.get("p", 2)
    axes = list(range(2, x.rank))
    return _root(m, n, m.emit1("reduce_sum", [_powers(m, x, p)], {"axes": axes, "keepdims": 1}), p)


def _powers(m, x, p):
    """|x|^p, as x * x for p = 2."""
    if p == 2:
        return m.emit1("mul", [x, x])
    magnitude = m.emit1("abs", [x])
    return magnitude if p == 1 else m.emit1("pow", [magnitude, m.scalar(float(p), x)])


def _root(m, n, total, p):
    """total^(1/p) as the node's output."""
    if p == 1:
        return m.emit("identity", [total], {}, _outs(n))
    if p == 2:
        return m.emit("sqrt", [total], {}, _outs(n))
    return m.emit("pow", [total, m.scalar(1.0 / p, total)], {}, _outs(n))


@onnx_op("BatchNormalization")
def _batch_norm(m, n):
    if n.attrs.get("training_mode", 0):
        raise EmberError("training-mode BatchNormalization is not supported")
    return m.emit("batch_norm", m.ins(n)[:5], {"epsilon": n.attrs.get("epsilon", 1e-5)}, _outs(n, 1))


@onnx_op("Softmax", "LogSoftmax")
def _softmax(m, n):
    x = m.inp(n, 0)
    op = "softmax" if n.op == "Softmax" else "log_softmax"
    axis = norm_axis(n.attrs.get("axis", 1 if m.opset < 13 else -1), x.rank) if x.rank else 0
    if m.opset >= 13 or axis == x.rank - 1:
        return m.emit(op, [x], {"axis": axis}, _outs(n))
    trailing = [i for i in range(axis, x.rank) if x.shape[i] != 1]
    if len(trailing) == 1 and all(isinstance(x.shape[i], int) for i in range(axis, x.rank)):
        return m.emit(op, [x], {"axis": trailing[0]}, _outs(n))  # flattening would only drop 1s
    # Before opset 13 the op flattened to 2-D at `axis` first.
    flat = m.emit1("flatten", [x], {"axis": axis})
    y = m.emit1(op, [flat], {"axis": 1})
    shape = m.int_array(x.shape)
    return m.emit("reshape", [y, shape], {}, _outs(n))


@onnx_op("LayerNormalization")
def _layer_norm(m, n):
    attrs = {"axis": n.attrs.get("axis", -1), "epsilon": n.attrs.get("epsilon", 1e-5)}
    return m.emit("layer_norm", m.ins(n)[:3], attrs, _outs(n, 1))


@onnx_op("Gemm")
def _gemm(m, n):
    a, b, c = (m.ins(n) + [None])[:3]
    if n.attrs.get("transA", 0):
        a = m.emit1("transpose", [a], {"perm": [1, 0]})
    if not n.attrs.get("transB", 0):
        b = m.emit1("transpose", [b], {"perm": [1, 0]})
    alpha, beta = n.attrs.get("alpha", 1.0), n.attrs.get("beta", 1.0)
    if alpha != 1.0:
        b = m.emit1("mul", [b, m.scalar(alpha, b)])
    name = n.outputs[0].name
    bias_ok = c is not None and beta == 1.0 and c.rank >= 1 and c.shape[-1] == b.shape[0] and c.shape[:-1] in ((), (1,))
    if bias_ok:
        if c.rank == 2:
            c = m.emit1("reshape", [c, m.int_array([-1])])
        return [m.emit1("dense", [a, b, c], name=name)]
    y = m.emit1("dense", [a, b], name=None if c is not None else name)
    if c is None:
        return [y]
    if beta != 1.0:
        c = m.emit1("mul", [c, m.scalar(beta, c)])
    return [m.emit1("add", [y, c], name=name)]
