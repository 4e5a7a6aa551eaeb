"""ATen core op -> Ember op table, neural-network layers: convolution, pooling, normalization, linear layers
and attention (registered into ops.ATEN_OPS)."""

from __future__ import annotations

import math

import numpy as np

from ember.errors import EmberError
from ember.frontends.torch.ops import aten
from ember.ir.graph import Value


def _pairs(v, what: str, dims: int = 2) -> list[int]:
    """A per-axis parameter of a `dims`-D layer (one value stands for all axes)."""
    vals = [v] if isinstance(v, int) else list(v)
    if len(vals) == 1:
        vals *= dims
    if len(vals) != dims:
        raise EmberError(f"a {dims}-D {what} takes {dims} values per parameter, got {vals}")
    return [int(x) for x in vals]


def _rank4(x: Value, what: str) -> None:
    if x.rank != 4:
        raise EmberError(f"only 2-D (NCHW) {what} is supported, got a rank-{x.rank} input")


def _as_1d(v, what: str) -> int:
    vals = [v] if isinstance(v, int) else list(v)
    if len(vals) != 1:
        raise EmberError(f"a 1-D {what} takes one value per parameter, got {vals}")
    return int(vals[0])


@aten("convolution.default")
def _convolution(m, a):
    """2-D and 3-D convolutions; a 1-D one (rank-3 input) runs as a 2-D one over a unit height, as the ONNX import
    runs it."""
    x, w = a["input"], a["weight"]
    keys = ("stride", "dilation", "padding", "output_padding")
    one_d = x.rank == 3
    if one_d:
        x, w = (m.emit1("unsqueeze", [v], {"axes": [2]}) for v in (x, w))
        per_axis = {k: [1 if k in ("stride", "dilation") else 0, _as_1d(a[k], "convolution")] for k in keys}
    elif x.rank in (4, 5):
        per_axis = {k: _pairs(a[k], "convolution", x.rank - 2) for k in keys}
    else:
        raise EmberError(f"only 1-D, 2-D and 3-D convolution is supported, got a rank-{x.rank} input")
    attrs = {"strides": per_axis["stride"], "dilations": per_axis["dilation"], "group": a["groups"]}
    attrs["pads"] = per_axis["padding"] * 2
    if a["transposed"]:
        attrs["output_padding"] = per_axis["output_padding"]
    op = f"conv{x.rank - 2}d" + ("_transpose" if a["transposed"] else "")
    y = m.emit1(op, [x, w, a["bias"]], attrs)
    return m.emit1("squeeze", [y], {"axes": [2]}) if one_d else y


def _ones_or(m, v: Value | None, n: int, fill: float) -> Value:
    return v if v is not None else m.graph.add_constant(np.full([n], fill, np.float32), "affine")


@aten("_native_batch_norm_legit_no_training.default")
def _batch_norm(m, a):
    x, mean, var = a["input"], a["running_mean"], a["running_var"]
    c = mean.shape[0]
    inputs = [x, _ones_or(m, a["weight"], c, 1.0), _ones_or(m, a["bias"], c, 0.0), mean, var]
    return [m.emit1("batch_norm", inputs, {"epsilon": a["eps"]}), None, None]


@aten("_native_batch_norm_legit.no_stats")
def _batch_norm_batch_stats(m, a):
    """Normalization by the input's own statistics per channel (axis 1): InstanceNorm decomposes to it."""
    x = a["input"]
    axes = [0, *range(2, x.rank)]
    centred = m.emit1("sub", [x, m.emit1("reduce_mean", [x], {"axes": axes, "keepdims": 1})])
    var = m.emit1("reduce_mean", [m.emit1("mul", [centred, centred])], {"axes": axes, "keepdims": 1})
    y = m.emit1("div", [centred, m.emit1("sqrt", [m.emit1("add", [var, m.tensor(float(a["eps"]))])])])
    per_channel = m.int_array([-1] + [1] * (x.rank - 2))
    for param, op in (("weight", "mul"), ("bias", "add")):
        if a[param] is not None:
            y = m.emit1(op, [y, m.emit1("reshape", [a[param], per_channel])])
    return [y, None, None]


@aten("native_layer_norm.default")
def _layer_norm(m, a):
    x, axes = a["input"], list(a["normalized_shape"])
    scale = a["weight"] if a["weight"] is not None else m.graph.add_constant(np.ones(axes, np.float32), "affine")
    y = m.emit1("layer_norm", [x, scale, a["bias"]], {"axis": -len(axes), "epsilon": a["eps"]})
    return [y, None, None]


@aten("linear.default")
def _linear(m, a):
    return m.emit1("dense", [a["input"], a["weight"], a["bias"]])


@aten("mm.default", "bmm.default", "matmul.default")
def _matmul(m, a):
    return m.emit1("matmul", [a["self"], a["mat2"] if "mat2" in a else a["other"]])


@aten("addmm.default")
def _addmm(m, a):
    y = m.emit1("matmul", [a["mat1"], a["mat2"]])
    if a["alpha"] != 1:
        y = m.emit1("mul", [y, m.tensor(a["alpha"])])
    bias = a["self"] if a["beta"] == 1 else m.emit1("mul", [a["self"], m.tensor(a["beta"])])
    return m.emit1("add", [y, bias])


def _pool_attrs(a, what: str) -> tuple[int, dict]:
    """A 2-D (NCHW) or 3-D (NCDHW) pool's dimensionality and the attributes max/avg pooling share."""
    x = a["self"]
    if x.rank not in (4, 5):
        raise EmberError(f"only 2-D (NCHW) and 3-D (NCDHW) {what} is supported, got a rank-{x.rank} input")
    dims = x.rank - 2
    kernel = _pairs(a["kernel_size"], "pooling", dims)
    attrs = {
        "kernel": kernel,
        "strides": _pairs(a["stride"], "pooling", dims) if a["stride"] else kernel,
        "pads": _pairs(a["padding"], "pooling", dims) * 2,
        "ceil_mode": int(a["ceil_mode"]),
    }
    return dims, attrs


@aten("max_pool2d_with_indices.default", "max_pool2d.default", "max_pool3d_with_indices.default", "max_pool3d.default")
def _max_pool(m, a):
    dims, attrs = _pool_attrs(a, "max pooling")
    attrs["dilations"] = _pairs(a["dilation"], "pooling", dims)
    return [m.emit1(f"max_pool{dims}d", [a["self"]], attrs), None]


@aten("avg_pool2d.default", "avg_pool3d.default")
def _avg_pool(m, a):
    dims, attrs = _pool_attrs(a, "average pooling")
    if a["divisor_override"] is not None:
        raise EmberError(f"avg_pool{dims}d with divisor_override is not supported")
    attrs["count_include_pad"] = int(a["count_include_pad"])
    return m.emit1(f"avg_pool{dims}d", [a["self"]], attrs)


@aten("_adaptive_avg_pool2d.default", "adaptive_avg_pool2d.default")
def _adaptive_avg_pool(m, a):
    x = a["self"]
    _rank4(x, "adaptive pooling")
    oh, ow = _pairs(a["output_size"], "pooling")
    if (oh, ow) == (1, 1):
        return m.emit1("global_avg_pool", [x])
    h, w = x.shape[2:]
    if not (isinstance(h, int) and isinstance(w, int) and h % oh == 0 and w % ow == 0):
        raise EmberError(
            f"adaptive pooling of {list(x.shape)} to {oh}x{ow} needs windows of equal size",
            hint="pick an output size that divides the input's",
        )
    kernel = [h // oh, w // ow]
    return m.emit1("avg_pool2d", [x], {"kernel": kernel, "strides": kernel})


@aten("scaled_dot_product_attention.default")
def _sdpa(m, a):
    q, k, v = a["query"], a["key"], a["value"]
    if a["dropout_p"]:
        raise EmberError("attention dropout is not supported", hint="export in eval mode with dropout_p=0")
    if a.get("enable_gqa"):
        raise EmberError("grouped-query attention (enable_gqa=True) is not supported")
    scale = a["scale"] if a["scale"] is not None else 1 / math.sqrt(_dim(q, -1))
    bias = _mask(m, a["attn_mask"], q)
    if a["is_causal"]:
        sq, sk = _dim(q, -2), _dim(k, -2)
        causal = np.triu(np.full((sq, sk), -np.inf, np.float32), 1)
        c = m.cast(m.graph.add_constant(causal, "causal_mask"), q.dtype)
        bias = c if bias is None else m.emit1("add", [bias, c])
    return m.emit1("attention", [q, k, v, bias], {"scale": scale})


def _dim(x: Value, axis: int) -> int:
    d = x.shape[axis]
    if not isinstance(d, int):
        raise EmberError(f"attention needs a static dim {axis} of {list(x.shape)}")
    return d


def _mask(m, mask: Value | None, q: Value) -> Value | None:
    """An attention mask as an additive bias: a bool mask keeps the True positions."""
    if mask is None or mask.dtype != "bool":
        return None if mask is None else m.cast(mask, q.dtype)
    zero = m.graph.add_constant(np.zeros((), np.float32), "zero")
    neg = m.graph.add_constant(np.full((), -np.inf, np.float32), "masked")
    return m.cast(m.emit1("where", [mask, zero, neg]), q.dtype)
