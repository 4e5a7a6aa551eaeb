"""ONNX's quantization ops: QuantizeLinear/DequantizeLinear (QDQ models), QLinearConv/QLinearMatMul (onto
qconv2d/qdense), com.microsoft QLinearAdd (as dequantize, add, quantize: the QDQ fusion makes it qadd),
ConvInteger/MatMulInteger (onto qconv2d/qdense with an int32 output; weights whose centred values leave int8,
e.g. uint8 with a zero point other than 128, run as a float contraction cast to int32)."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ember.errors import EmberError
from ember.frontends.onnx.importer import Importer
from ember.frontends.onnx.nn_ops import _auto_pads
from ember.frontends.onnx.ops import _outs, onnx_op
from ember.ir.ops.quant import OUT_RANGE, requant_params


def _label(n: gs.Node) -> str:
    """The node's name, or for an unnamed node its first output's: what its constants are named after."""
    return n.name or n.outputs[0].name


def _scalar_or_vector(m: Importer, n: gs.Node, i: int, what: str) -> np.ndarray | None:
    arr = m.const(n, i, what)
    return None if arr is None else np.asarray(arr).reshape(-1)


def _zero_point(m: Importer, n: gs.Node, i: int) -> tuple[np.ndarray, str]:
    """The zero point values and the integer dtype they name (uint8 when absent, as ONNX says)."""
    v = m.inp(n, i) if i < len(n.inputs) else None
    if v is None:
        return np.zeros(1, np.int64), "u8"
    zp = _scalar_or_vector(m, n, i, f"{n.op} zero point")
    if v.dtype not in ("i8", "u8", "i32"):
        raise EmberError(f"{n.op} zero point of type {v.dtype} is not supported", hint="use int8 or uint8")
    return zp.astype(np.int64), v.dtype


@onnx_op("QuantizeLinear")
def _quantize_linear(m, n):
    scale = _scalar_or_vector(m, n, 1, "QuantizeLinear scale")
    zp, dtype = _zero_point(m, n, 2)
    if scale.size != 1 or zp.size != 1:
        raise EmberError("per-axis QuantizeLinear is not supported; Ember quantizes activations per tensor")
    if dtype == "i32":
        raise EmberError("QuantizeLinear to int32 is not supported", hint="use int8 or uint8")
    attrs = {"scale": float(scale[0]), "zero_point": int(zp[0]), "dtype": dtype}
    return m.emit("quantize", [m.inp(n, 0)], attrs, _outs(n))


@onnx_op("DequantizeLinear")
def _dequantize_linear(m, n):
    x = m.inp(n, 0)
    scale = _scalar_or_vector(m, n, 1, "DequantizeLinear scale")
    zp, _ = _zero_point(m, n, 2)
    attrs = {"scale": scale.tolist(), "zero_point": zp.tolist(), "axis": n.attrs.get("axis", 1)}
    if x.is_const:  # kept as a node, so the QDQ fusion still sees the integer weights
        return m.graph.add_node("dequantize", [x], attrs, name=n.name or None, output_names=_outs(n)).outputs
    return m.emit("dequantize", [x], attrs, _outs(n))


def _symmetric_weight(m: Importer, n: gs.Node, i: int, zp_index: int) -> np.ndarray:
    w = m.const(n, i, f"{n.op} weight")
    if w is None:
        raise EmberError(f"{n.op} with a non-constant weight is not supported")
    zp, _ = _zero_point(m, n, zp_index)
    if (
        np.any(zp != zp.flat[0])
        or (w.dtype == np.int8 and zp.flat[0] != 0)
        or (w.dtype == np.uint8 and zp.flat[0] != 128)
    ):
        raise EmberError(f"{n.op} weights must be symmetric (zero point 0 for int8, 128 for uint8)")
    return (w.astype(np.int16) - int(zp.flat[0])).clip(-127, 127).astype(np.int8)


def _requant_attrs(m: Importer, n: gs.Node, x_idx: int, w_scale_idx: int, y_idx: int, channels: int) -> dict:
    x_scale = float(_scalar_or_vector(m, n, x_idx, f"{n.op} scale")[0])
    x_zp, x_dtype = _zero_point(m, n, x_idx + 1)
    w_scales = np.broadcast_to(_scalar_or_vector(m, n, w_scale_idx, f"{n.op} weight scale"), (channels,))
    y_scale = float(_scalar_or_vector(m, n, y_idx, f"{n.op} output scale")[0])
    y_zp, y_dtype = _zero_point(m, n, y_idx + 1)
    if x_dtype != m.inp(n, 0).dtype:
        raise EmberError(f"{n.op} input is {m.inp(n, 0).dtype} but its zero point is {x_dtype}")
    if np.unique(w_scales).size == 1:
        w_scales = w_scales[:1]
    multiplier, shift = requant_params(x_scale, w_scales.astype(np.float32), y_scale)
    lo, hi = (-128, 127) if y_dtype == "i8" else (0, 255)
    return dict(
        x_zero_point=int(x_zp[0]),
        multiplier=multiplier,
        shift=shift,
        out_zero_point=int(y_zp[0]),
        out_dtype=y_dtype,
        out_min=lo,
        out_max=hi,
    )


def _only_2d(n, x) -> None:
    if x.rank != 4:
        raise EmberError(f"only 2-D (NCHW) {n.op} is supported, got a rank-{x.rank} input")


@onnx_op("QLinearConv")
def _qlinear_conv(m, n):
    x = m.inp(n, 0)
    _only_2d(n, x)
    w = _symmetric_weight(m, n, 3, 5)
    strides, dil = n.attrs.get("strides", [1, 1]), n.attrs.get("dilations", [1, 1])
    attrs = {"strides": strides, "dilations": dil, "group": n.attrs.get("group", 1)}
    attrs["pads"] = _auto_pads(n.attrs, x, n.attrs.get("kernel_shape", list(w.shape[2:])), strides, dil)
    attrs.update(_requant_attrs(m, n, 1, 4, 6, w.shape[0]))
    ins = [x, m.graph.add_constant(w, m._cname(f"{_label(n)}.weight"))]
    if len(n.inputs) > 8 and m.inp(n, 8) is not None:
        b = m.const(n, 8, "QLinearConv bias")
        ins.append(m.graph.add_constant(np.asarray(b, np.int32), m._cname(f"{_label(n)}.bias")))
    return m.emit("qconv2d", ins, attrs, _outs(n))


@onnx_op("QLinearMatMul")
def _qlinear_matmul(m, n):
    w = _symmetric_weight(m, n, 3, 5)
    if w.ndim != 2:
        raise EmberError("QLinearMatMul needs a 2-D constant right operand")
    attrs = _requant_attrs(m, n, 1, 4, 6, w.shape[1])
    wt = m.graph.add_constant(np.ascontiguousarray(w.T), m._cname(f"{_label(n)}.weight"))
    return m.emit("qdense", [m.inp(n, 0), wt], attrs, _outs(n))


@onnx_op("com.microsoft.QLinearAdd")
def _qlinear_add(m, n):
    dtype = m.inp(n, 0).dtype
    if dtype not in ("i8", "u8") or m.inp(n, 3).dtype != dtype:
        raise EmberError(f"QLinearAdd on {dtype} and {m.inp(n, 3).dtype} is not supported", hint="use int8 or uint8")
    terms = [_dequantized(m, n, i) for i in (0, 3)]
    scale = _scalar_or_vector(m, n, 6, "QLinearAdd C_scale")
    zp, _ = _zero_point(m, n, 7)
    if scale.size != 1 or zp.size != 1:
        raise EmberError("QLinearAdd with a per-axis output scale is not supported")
    attrs = {"scale": float(scale[0]), "zero_point": int(zp[0]), "dtype": dtype}
    return m.emit("quantize", [m.emit1("add", terms)], attrs, _outs(n))


def _dequantized(m: Importer, n: gs.Node, i: int):
    """QLinearAdd's operand i as float: dequantize by its scale (i + 1) and zero point (i + 2, 0 when absent)."""
    scale = _scalar_or_vector(m, n, i + 1, f"{n.op} scale")
    zp, _ = _zero_point(m, n, i + 2)
    if scale.size != 1 or zp.size != 1:
        raise EmberError(f"{n.op} with a per-axis scale is not supported; its operands are quantized per tensor")
    attrs = {"scale": [float(scale[0])], "zero_point": [int(zp[0])], "axis": 1}
    return m.emit1("dequantize", [m.inp(n, i)], attrs)


def _integer_weight(m: Importer, n: gs.Node, channel_axis: int) -> np.ndarray:
    """ConvInteger/MatMulInteger's constant weight minus its zero point (per tensor or per output channel)."""
    w = m.const(n, 1, f"{n.op} weight")
    if w is None:
        raise EmberError(f"{n.op} with a non-constant weight is not supported")
    w_zp = _scalar_or_vector(m, n, 3, f"{n.op} weight zero point") if len(n.inputs) > 3 and m.inp(n, 3) else None
    centred = w.astype(np.int32)
    if w_zp is not None and w_zp.size > 1:
        shape = [1] * w.ndim
        shape[channel_axis] = -1
        return centred - w_zp.astype(np.int32).reshape(shape)
    return centred - (0 if w_zp is None else int(w_zp[0]))


def _integer_attrs(m: Importer, n: gs.Node) -> dict:
    """qconv2d/qdense attributes for an unrequantized int32 output with ConvInteger's input zero point."""
    x_zp = _scalar_or_vector(m, n, 2, f"{n.op} zero point") if len(n.inputs) > 2 and m.inp(n, 2) else np.zeros(1)
    if x_zp.size != 1:
        raise EmberError(f"{n.op} with a per-row input zero point is not supported")
    lo, hi = OUT_RANGE["i32"]
    return dict(x_zero_point=int(x_zp[0]), multiplier=[], shift=[], out_dtype="i32", out_min=lo, out_max=hi)


def _as_float(m: Importer, n: gs.Node, x, w: np.ndarray, attrs: dict) -> tuple:
    """x - x_zero_point as float and the centred weight as float: the fallback for weights outside int8
    (exact while each sum stays under 2^24)."""
    xf = m.emit1("dequantize", [x], {"scale": [1.0], "zero_point": [attrs["x_zero_point"]]})
    return xf, m.graph.add_constant(w.astype(np.float32), m._cname(f"{_label(n)}.weight"))


def _fits_int8(w: np.ndarray) -> bool:
    return bool(w.size) and -128 <= int(w.min()) and int(w.max()) <= 127


@onnx_op("ConvInteger")
def _conv_integer(m, n):
    x, w = m.inp(n, 0), _integer_weight(m, n, 0)
    _only_2d(n, x)
    strides, dil = n.attrs.get("strides", [1, 1]), n.attrs.get("dilations", [1, 1])
    attrs = {"strides": strides, "dilations": dil, "group": n.attrs.get("group", 1)}
    attrs["pads"] = _auto_pads(n.attrs, x, n.attrs.get("kernel_shape", list(w.shape[2:])), strides, dil)
    integer = _integer_attrs(m, n)
    if _fits_int8(w):
        wq = m.graph.add_constant(w.astype(np.int8), m._cname(f"{_label(n)}.weight"))
        return m.emit("qconv2d", [x, wq], attrs | integer, _outs(n))
    xf, wf = _as_float(m, n, x, w, integer)
    return m.emit("cast", [m.emit1("conv2d", [xf, wf], attrs)], {"to": "i32"}, _outs(n))


@onnx_op("MatMulInteger")
def _matmul_integer(m, n):
    x, w = m.inp(n, 0), _integer_weight(m, n, 1)
    integer = _integer_attrs(m, n)
    if w.ndim == 2 and _fits_int8(w):
        wt = m.graph.add_constant(np.ascontiguousarray(w.T.astype(np.int8)), m._cname(f"{_label(n)}.weight"))
        return m.emit("qdense", [x, wt], integer, _outs(n))
    xf, wf = _as_float(m, n, x, w, integer)
    return m.emit("cast", [m.emit1("matmul", [xf, wf])], {"to": "i32"}, _outs(n))
