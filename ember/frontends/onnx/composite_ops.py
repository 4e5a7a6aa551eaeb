"""ONNX ops Ember builds from several of its own: activations, reductions, normalizations and the
depth/space rearrangements. Each is the ONNX spec's formula, written with Ember ops that already lower and fuse."""

from __future__ import annotations

import numpy as np

from ember.errors import EmberError
from ember.frontends.onnx.ops import _outs, onnx_op, reduce_axes
from ember.ir.graph import Value
from ember.ir.ops.shapes import norm_axis


def _static(n, x: Value, min_rank: int = 0, max_rank: int | None = None) -> tuple[int, ...]:
    """x's shape, which the op needs known, of a rank it takes."""
    if x.rank < min_rank or (max_rank is not None and x.rank > max_rank):
        want = f"rank {min_rank}" if min_rank == max_rank else f"rank {min_rank} or more"
        raise EmberError(f"{n.op} takes an input of {want}, got rank {x.rank}")
    if not x.is_static:
        raise EmberError(f"{n.op} needs a static input shape, got {list(x.shape)}", hint="pass --input-shape")
    return tuple(x.shape)


@onnx_op("PRelu")
def _prelu(m, n):
    x, slope = m.ins(n)
    if m.opset < 7 and slope.rank == 1 and slope.shape[0] != 1:  # before broadcasting: one slope per channel
        slope = m.emit1("reshape", [slope, m.int_array([-1] + [1] * (x.rank - 2))])
    negative = m.emit1("less", [x, m.scalar(0.0, x)])
    return m.emit("where", [negative, m.emit1("mul", [x, slope]), x], {}, _outs(n))


@onnx_op("Selu")
def _selu(m, n):
    x = m.inp(n, 0)
    elu = m.emit1("elu", [x], {"alpha": n.attrs.get("alpha", 1.67326319217681884765625)})
    return m.emit("mul", [elu, m.scalar(n.attrs.get("gamma", 1.05070102214813232421875), x)], {}, _outs(n))


@onnx_op("Celu")
def _celu(m, n):
    """alpha * elu(x / alpha): max(0, x) + min(0, alpha * (e^(x/alpha) - 1))."""
    x, alpha = m.inp(n, 0), n.attrs.get("alpha", 1.0)
    elu = m.emit1("elu", [m.emit1("div", [x, m.scalar(alpha, x)])], {"alpha": 1.0})
    return m.emit("mul", [elu, m.scalar(alpha, x)], {}, _outs(n))


@onnx_op("Softsign")
def _softsign(m, n):
    x = m.inp(n, 0)
    return m.emit("div", [x, m.emit1("add", [m.emit1("abs", [x]), m.scalar(1.0, x)])], {}, _outs(n))


@onnx_op("ThresholdedRelu")
def _thresholded_relu(m, n):
    x = m.inp(n, 0)
    above = m.emit1("greater", [x, m.scalar(n.attrs.get("alpha", 1.0), x)])
    return m.emit("where", [above, x, m.scalar(0.0, x)], {}, _outs(n))


@onnx_op("Mish")
def _mish(m, n):
    x = m.inp(n, 0)
    return m.emit("mul", [x, m.emit1("tanh", [m.emit1("softplus", [x])])], {}, _outs(n))


@onnx_op("Swish")
def _swish(m, n):
    x, alpha = m.inp(n, 0), n.attrs.get("alpha", 1.0)
    if alpha == 1.0:
        return m.emit("silu", [x], {}, _outs(n))
    gate = m.emit1("sigmoid", [m.emit1("mul", [x, m.scalar(alpha, x)])])
    return m.emit("mul", [x, gate], {}, _outs(n))


@onnx_op("IsInf")
def _is_inf(m, n):
    x = m.inp(n, 0)
    signs = [s for s, key in ((np.inf, "detect_positive"), (-np.inf, "detect_negative")) if n.attrs.get(key, 1)]
    if not signs:
        return m.emit("less", [x, x], {}, _outs(n))  # all false, NaN too
    hits = [m.emit1("equal", [x, m.scalar(s, x)]) for s in signs]
    return m.emit("or", hits, {}, _outs(n)) if len(hits) == 2 else m.emit("identity", hits, {}, _outs(n))


@onnx_op("Size")
def _size(m, n):
    shape = _static(n, m.inp(n, 0))
    return [m.int_array(np.prod(shape, dtype=np.int64), m._cname(n.outputs[0].name))]


@onnx_op("ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp")
def _reduce_composite(m, n):
    x, axes = m.inp(n, 0), reduce_axes(m, n)
    if axes is None:
        return m.emit("identity", [x], {}, _outs(n))
    keep = n.attrs.get("keepdims", 1)
    if n.op == "ReduceLogSumExp":  # shifted by the max, so exp cannot overflow
        top = m.emit1("reduce_max", [x], {"axes": axes, "keepdims": 1})
        total = m.emit1("reduce_sum", [m.emit1("exp", [m.emit1("sub", [x, top])])], {"axes": axes, "keepdims": 1})
        if keep:
            return m.emit("add", [m.emit1("log", [total]), top], {}, _outs(n))
        y = m.emit1("add", [m.emit1("log", [total]), top])
        return m.emit("squeeze", [y], {"axes": sorted({a % x.rank for a in axes or range(x.rank)})}, _outs(n))
    if n.op == "ReduceLogSum":
        terms = x
    elif n.op == "ReduceL1":
        terms = m.emit1("abs", [x])
    else:  # ReduceL2, ReduceSumSquare
        terms = m.emit1("mul", [x, x])
    total = m.emit1("reduce_sum", [terms], {"axes": axes, "keepdims": keep})
    finish = {"ReduceL2": "sqrt", "ReduceLogSum": "log"}.get(n.op, "identity")
    return m.emit(finish, [total], {}, _outs(n))


@onnx_op("LpNormalization")
def _lp_normalization(m, n):
    x, p = m.inp(n, 0), n.attrs.get("p", 2)
    if p not in (1, 2):
        raise EmberError(f"LpNormalization p must be 1 or 2, got {p}")
    axis = n.attrs.get("axis", -1)
    terms = m.emit1("abs", [x]) if p == 1 else m.emit1("mul", [x, x])
    norm = m.emit1("reduce_sum", [terms], {"axes": [axis], "keepdims": 1})
    norm = norm if p == 1 else m.emit1("sqrt", [norm])
    zero = m.emit1("equal", [norm, m.scalar(0.0, x)])  # then x is 0 along the axis, and so is the result
    return m.emit("div", [x, m.emit1("where", [zero, m.scalar(1.0, x), norm])], {}, _outs(n))


def _normalized(m, x: Value, axes: list[int], epsilon: float, centred: bool = True) -> Value:
    """(x - mean) / sqrt(var + epsilon) over `axes`, or x / sqrt(mean(x^2) + epsilon) without `centred`."""
    d = m.emit1("sub", [x, m.emit1("reduce_mean", [x], {"axes": axes, "keepdims": 1})]) if centred else x
    var = m.emit1("reduce_mean", [m.emit1("mul", [d, d])], {"axes": axes, "keepdims": 1})
    return m.emit1("div", [d, m.emit1("sqrt", [m.emit1("add", [var, m.scalar(epsilon, x)])])])


@onnx_op("InstanceNormalization")
def _instance_norm(m, n):
    """The moments per sample and channel over the spatial axes, then scale and bias per channel."""
    x, scale, bias = m.ins(n)
    per_channel = m.int_array([-1] + [1] * (x.rank - 2))
    y = _normalized(m, x, list(range(2, x.rank)), n.attrs.get("epsilon", 1e-5))
    scaled = m.emit1("mul", [y, m.emit1("reshape", [scale, per_channel])])
    return m.emit("add", [scaled, m.emit1("reshape", [bias, per_channel])], {}, _outs(n))


@onnx_op("GroupNormalization")
def _group_norm(m, n):
    """The moments per sample over each group of channels; scale and bias per channel (opset 21) or per group
    (opset 18)."""
    x, scale, bias = m.ins(n)
    shape, groups = _static(n, x, 2), n.attrs["num_groups"]
    if shape[1] % groups:
        raise EmberError(f"{shape[1]} channels do not split into {groups} groups")
    grouped = m.emit1("reshape", [x, m.int_array([shape[0], groups, -1])])
    y = _normalized(m, grouped, [2], n.attrs.get("epsilon", 1e-5))
    if scale.shape[0] == groups and groups != shape[1]:  # opset 18's per-group scale and bias
        per_group = m.int_array([groups, 1])
        y = m.emit1("mul", [y, m.emit1("reshape", [scale, per_group])])
        y = m.emit1("add", [y, m.emit1("reshape", [bias, per_group])])
        return m.emit("reshape", [y, m.int_array(shape)], {}, _outs(n))
    per_channel = m.int_array([-1] + [1] * (x.rank - 2))
    y = m.emit1("mul", [m.emit1("reshape", [y, m.int_array(shape)]), m.emit1("reshape", [scale, per_channel])])
    return m.emit("add", [y, m.emit1("reshape", [bias, per_channel])], {}, _outs(n))


@onnx_op("RMSNormalization")
def _rms_norm(m, n):
    """x / sqrt(mean(x^2) + epsilon) over the axes from `axis` on, times scale."""
    x, scale = m.ins(n)[:2]
    axes = list(range(n.attrs.get("axis", -1) % x.rank, x.rank))
    y = _normalized(m, x, axes, n.attrs.get("epsilon", 1e-5), centred=False)
    return m.emit("mul", [y, scale], {}, _outs(n))


@onnx_op("DepthToSpace")
def _depth_to_space(m, n):
    """[N, C, H, W] -> [N, C/b^2, H*b, W*b] (PixelShuffle): DCR takes the block from the outer channel bits,
    CRD from the inner."""
    x, b = m.inp(n, 0), n.attrs["blocksize"]
    N, C, H, W = _static(n, x, 4, 4)
    if n.attrs.get("mode", "DCR") == "DCR":
        split, perm = [N, b, b, C // (b * b), H, W], [0, 3, 4, 1, 5, 2]
    else:
        split, perm = [N, C // (b * b), b, b, H, W], [0, 1, 4, 2, 5, 3]
    blocks = m.emit1("transpose", [m.emit1("reshape", [x, m.int_array(split)])], {"perm": perm})
    return m.emit("reshape", [blocks, m.int_array([N, C // (b * b), H * b, W * b])], {}, _outs(n))


@onnx_op("SpaceToDepth")
def _space_to_depth(m, n):
    """[N, C, H, W] -> [N, C*b^2, H/b, W/b], the inverse of DepthToSpace in the same mode."""
    x, b = m.inp(n, 0), n.attrs["blocksize"]
    N, C, H, W = _static(n, x, 4, 4)
    blocks = m.emit1("reshape", [x, m.int_array([N, C, H // b, b, W // b, b])])
    perm = [0, 3, 5, 1, 2, 4] if n.attrs.get("mode", "DCR") == "DCR" else [0, 1, 3, 5, 2, 4]
    moved = m.emit1("transpose", [blocks], {"perm": perm})
    return m.emit("reshape", [moved, m.int_array([N, C * b * b, H // b, W // b])], {}, _outs(n))


@onnx_op("Trilu")
def _trilu(m, n):
    """x where the (upper or lower) triangle above diagonal k holds, else 0: the mask is a constant."""
    x = m.inp(n, 0)
    rows, cols = _static(n, x, 2)[-2:]
    k = m.ints(n, 1, "Trilu k")
    tri = np.triu if n.attrs.get("upper", 1) else np.tril
    mask = m.graph.add_constant(tri(np.ones((rows, cols), bool), k[0] if k else 0), "mask")
    return m.emit("where", [mask, x, m.scalar(0, x)], {}, _outs(n))


@onnx_op("Hardmax")
def _hardmax(m, n):
    """1 at each row's first maximum along axis, else 0 (before opset 13 the input is flattened to 2-D there)."""
    x = m.inp(n, 0)
    _static(n, x, 1)  # the one-hot depth is a dim of x
    axis = norm_axis(n.attrs.get("axis", 1 if m.opset < 13 else -1), x.rank)
    flat = m.opset < 13 and axis != x.rank - 1
    y = m.emit1("flatten", [x], {"axis": axis}) if flat else x
    a = 1 if flat else axis
    top = m.emit1("argmax", [y], {"axis": a, "keepdims": 0})
    attrs = {"depth": y.shape[a], "axis": a, "on": 1.0, "off": 0.0, "dtype": x.dtype}
    if not flat:
        return m.emit("one_hot", [top], attrs, _outs(n))
    shape = m.int_array(x.shape)
    return m.emit("reshape", [m.emit1("one_hot", [top], attrs), shape], {}, _outs(n))
