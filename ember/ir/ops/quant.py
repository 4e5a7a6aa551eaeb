"""Integer ops for int8 inference: quantize, dequantize, and conv2d/dense on int8 with fixed-point requantization.

The contract the TVM lowering implements bit-exactly (dtypes are Ember names: "i8", "u8", "i32", "f32"):

- quantize(x: f32) -> i8|u8, attrs scale, zero_point, dtype:
  q = clip(round_half_to_even(x / scale) + zero_point, qmin, qmax), the division in float32 (ONNX QuantizeLinear);
  NaN maps to zero_point (ONNX leaves it undefined).
- dequantize(q: i8|u8|i32) -> f32, attrs scale (floats), zero_point (ints), axis:
  x = (float32(q) - float32(zp)) * float32(scale), in float32; one scale/zero point is per tensor, otherwise one
  per slice along `axis` (zero_point may then be one, shared, or one per slice).
- qconv2d(x: i8|u8, w: i8 const, b: i32 const?) and qdense(x: i8|u8 [..., K], w: i8 const [N, K], b: i32 const [N]?):
  strides/pads/dilations/group/layout exactly as conv2d (OIHW weights for NCHW, HWIO for NHWC), and
    acc = sum((x - x_zero_point) * w) + b                                   exact; producers keep |acc| < 2^31
    out = clip(((int64(acc) * multiplier + (1 << (shift - 1))) >> shift) + out_zero_point, out_min, out_max)
  where padded input positions hold x_zero_point (they add nothing to acc), and the shift is arithmetic,
  multiplier in [2^30, 2^31) and shift in [1, 62], one of each per tensor or one
  per output channel (axis 1 for NCHW, the last axis for NHWC and dense). Weights are symmetric: no weight zero
  point. out_min/out_max are within out_dtype's range and also carry a fused relu/relu6.
  With out_dtype "i32" (ONNX ConvInteger/MatMulInteger) there is no requantization: multiplier and shift are
  empty, out_zero_point is 0 and out = clip(acc, out_min, out_max).
  With out_dtype "f32" (a layer whose result is dequantized, folded in) the scale is the real factor itself:
    out = float32(clip(acc, out_min, out_max)) * float32(multiplier * 2^-shift)        out_zero_point 0
  the clip bounds being int32 (0 carries a fused relu).
  qconv2d's max_pool = [k, k] (empty: none) takes the max over each k x k window of out, stride k, no padding:
  max_pool2d fused into the layer (fuse-qconv-pool); the height and width must be multiples of k. Requantization
  is monotonic (multiplier > 0), so a kernel may take the window's max of acc and requantize once per window.
- qadd(a: i8|u8, b: i8|u8) -> i8|u8, the same shape (a residual add, relu/relu6 in out_min/out_max):
    out = clip((((a - a_zero_point) * a_multiplier + (b - b_zero_point) * b_multiplier + (1 << (shift - 1)))
               >> shift) + out_zero_point, out_min, out_max)
  with both multipliers in [0, 2^21) and shift in [1, 31], so every step is exact in int32.
"""

from __future__ import annotations

import math

import numpy as np

from ember.errors import EmberError
from ember.ir.ops.nn import conv2d, dense, max_pool2d
from ember.ir.ops.registry import Attr, op, reference
from ember.ir.ops.shapes import fmt, norm_axis

QRANGE = {"i8": (-128, 127), "u8": (0, 255)}
QRANGE_NUMPY = {"i8": np.int8, "u8": np.uint8, "i32": np.int32}
I32_RANGE = (-(1 << 31), (1 << 31) - 1)
OUT_RANGE = {**QRANGE, "i32": I32_RANGE, "f32": I32_RANGE}  # qconv2d/qdense outputs; i32: no requantization
MULTIPLIER_RANGE = (1 << 30, 1 << 31)
SHIFT_RANGE = (1, 62)


def _qdtype(dtype: str, what: str) -> tuple[int, int]:
    if dtype not in QRANGE:
        raise EmberError(f"{what} must be i8 or u8, got {dtype}")
    return QRANGE[dtype]


def _in_range(value: int, dtype: str, what: str) -> None:
    lo, hi = _qdtype(dtype, what)
    if not lo <= value <= hi:
        raise EmberError(f"{what} {value} is outside {dtype}'s range [{lo}, {hi}]")


@op(
    "quantize",
    "x",
    "float32 to int8/uint8: clip(round_half_to_even(x / scale) + zero_point) (ONNX QuantizeLinear, per tensor)",
    tags=("quant",),
    scale=Attr("float"),
    zero_point=0,
    dtype=Attr("dtype", "i8"),
)
def quantize(ins, a):
    (x,) = ins
    if x.dtype != "f32":
        raise EmberError(f"input must be f32, got {x.dtype}")
    if not (np.isfinite(a["scale"]) and a["scale"] > 0):
        raise EmberError(f"scale must be positive and finite, got {a['scale']}")
    _in_range(a["zero_point"], a["dtype"], "zero_point")
    return x.shape, a["dtype"]


@reference(quantize)
def _quantize(x, a):
    lo, hi = QRANGE[a["dtype"]]
    q = np.nan_to_num(np.rint(x.astype(np.float32) / np.float32(a["scale"])).astype(np.float64))
    return np.clip(q + a["zero_point"], lo, hi).astype(QRANGE_NUMPY[a["dtype"]])


@op(
    "dequantize",
    "q",
    "int8/uint8/int32 to float32: (q - zero_point) * scale, per tensor or per slice along axis",
    tags=("quant",),
    scale=Attr("floats"),
    zero_point=Attr("ints", (0,)),
    axis=1,
)
def dequantize(ins, a):
    (q,) = ins
    if q.dtype not in ("i8", "u8", "i32"):
        raise EmberError(f"input must be i8, u8 or i32, got {q.dtype}")
    scale, zp = a["scale"], a["zero_point"]
    if not scale or not all(np.isfinite(s) and s > 0 for s in scale):
        raise EmberError(f"scale must be positive and finite, got {list(scale)}")
    if len(zp) not in (1, len(scale)):
        raise EmberError(f"zero_point has {len(zp)} values for {len(scale)} scales")
    if len(scale) > 1:
        axis = norm_axis(a["axis"], q.rank)
        if isinstance(q.shape[axis], int) and q.shape[axis] != len(scale):
            raise EmberError(f"{len(scale)} scales for axis {a['axis']} of {fmt(q.shape)}")
    if q.dtype in QRANGE:
        for z in zp:
            _in_range(z, q.dtype, "zero_point")
    return q.shape, "f32"


def _along(values: tuple, axis: int, ndim: int, dtype) -> np.ndarray:
    """Per-slice values shaped to broadcast along `axis` (a scalar when there is one)."""
    arr = np.asarray(values, dtype=dtype)
    if arr.size == 1:
        return arr.reshape(())
    shape = [1] * ndim
    shape[axis] = arr.size
    return arr.reshape(shape)


@reference(dequantize)
def _dequantize(q, a):
    axis = a["axis"] % max(q.ndim, 1)
    zp = _along(a["zero_point"], axis, q.ndim, np.float32)
    return ((q.astype(np.float32) - zp) * _along(a["scale"], axis, q.ndim, np.float32)).astype(np.float32)


_OUT_ATTRS = dict(out_zero_point=0, out_dtype=Attr("dtype", "i8"), out_min=Attr("int"), out_max=Attr("int"))
_REQUANT_ATTRS = dict(x_zero_point=0, multiplier=Attr("ints"), shift=Attr("ints"), **_OUT_ATTRS)


def _check_output(a: dict, ranges: dict[str, tuple[int, int]]) -> None:
    """out_dtype one of `ranges`; out_zero_point, out_min and out_max inside its range; out_min <= out_max."""
    out = a["out_dtype"]
    if out not in ranges:
        *first, last = ranges
        raise EmberError(f"out_dtype must be {', '.join(first)} or {last}, got {out}")
    lo, hi = ranges[out]
    for key in ("out_zero_point", "out_min", "out_max"):
        if not lo <= a[key] <= hi:
            raise EmberError(f"{key} {a[key]} is outside {out}'s range [{lo}, {hi}]")
    if a["out_min"] > a["out_max"]:
        raise EmberError(f"out_min {a['out_min']} exceeds out_max {a['out_max']}")


def _check_layer(x, w, b, a, channels) -> None:
    _qdtype(x.dtype, "input")
    if w.dtype != "i8":
        raise EmberError(f"weight must be i8, got {w.dtype}")
    if b is not None and b.dtype != "i32":
        raise EmberError(f"bias must be i32, got {b.dtype}")
    _in_range(a["x_zero_point"], x.dtype, "x_zero_point")
    _check_output(a, OUT_RANGE)
    if a["out_dtype"] == "i32":
        if a["multiplier"] or a["shift"] or a["out_zero_point"]:
            raise EmberError("an i32 output is not requantized: multiplier and shift must be empty, out_zero_point 0")
        return
    if a["out_dtype"] == "f32" and a["out_zero_point"]:
        raise EmberError(f"an f32 output has no zero point, got out_zero_point {a['out_zero_point']}")
    _check_requant(a["multiplier"], a["shift"], channels)


def _check_requant(mult, shift, channels: int) -> None:
    if len(mult) != len(shift) or len(mult) not in (1, channels):
        raise EmberError(f"multiplier and shift need 1 or {channels} values each, got {len(mult)} and {len(shift)}")
    lo, hi = MULTIPLIER_RANGE
    if not all(lo <= m < hi for m in mult):
        raise EmberError(f"multiplier values must lie in [2^30, 2^31), got {min(mult)}..{max(mult)}")
    if not all(SHIFT_RANGE[0] <= s <= SHIFT_RANGE[1] for s in shift):
        raise EmberError(f"shift values must lie in [1, 62], got {min(shift)}..{max(shift)}")


def out_scales(a: dict) -> tuple[float, ...]:
    """An f32 output's per-channel (or one) float32 factors, multiplier * 2^-shift."""
    return tuple(float(np.float32(m * 2.0**-s)) for m, s in zip(a["multiplier"], a["shift"]))


def _base_attrs(a: dict, base) -> dict:
    return {k: v for k, v in a.items() if k in base.attrs}


def requantize(acc: np.ndarray, a: dict, axis: int) -> np.ndarray:
    """The requantization step of qconv2d/qdense on an exact int64 accumulator, channels along `axis`."""
    if a["out_dtype"] in ("i32", "f32"):
        out = np.clip(acc.astype(np.int64), a["out_min"], a["out_max"]).astype(np.int32)
        if a["out_dtype"] == "i32":
            return out
        return out.astype(np.float32) * _along(out_scales(a), axis, acc.ndim, np.float32)
    mult = _along(a["multiplier"], axis, acc.ndim, np.int64)
    shift = _along(a["shift"], axis, acc.ndim, np.int64)
    y = ((acc.astype(np.int64) * mult + (np.int64(1) << (shift - 1))) >> shift) + a["out_zero_point"]
    return np.clip(y, a["out_min"], a["out_max"]).astype(QRANGE_NUMPY[a["out_dtype"]])


@op(
    "qconv2d",
    "x w b?",
    "int8 conv2d with int32 accumulation and fixed-point requantization to int8/uint8 (or the int32 sum)",
    tags=("conv", "quant"),
    **conv2d.attrs,
    **_REQUANT_ATTRS,
    max_pool=Attr("ints", ()),
)
def qconv2d(ins, a):
    x, w, b = (ins + [None])[:3]
    shape, _ = conv2d.infer([x, w, b], _base_attrs(a, conv2d))
    channels = w.shape[3] if a["layout"] == "NHWC" else w.shape[0]
    _check_layer(x, w, b, a, channels)
    if not a["max_pool"]:
        return shape, a["out_dtype"]
    hw = (1, 2) if a["layout"] == "NHWC" else (2, 3)
    pool = a["max_pool"]
    if len(pool) != 2 or pool[0] != pool[1] or pool[0] < 2:
        raise EmberError(f"max_pool must be [k, k] with k >= 2, got {list(pool)}")
    if any(not isinstance(shape[d], int) or shape[d] % pool[0] for d in hw):
        raise EmberError(f"max_pool {list(pool)} must divide the output's static height and width {fmt(shape)}")
    return tuple(d // pool[0] if i in hw else d for i, d in enumerate(shape)), a["out_dtype"]


@reference(qconv2d)
def _qconv2d(x, w, b, a):
    xs = x.astype(np.float64) - a["x_zero_point"]
    acc = conv2d.evaluate([xs, w.astype(np.float64), None], _base_attrs(a, conv2d))[0]
    acc = np.rint(acc).astype(np.int64)
    axis = 3 if a["layout"] == "NHWC" else 1
    if b is not None:
        acc = acc + _along(tuple(b.astype(np.int64).tolist()), axis, acc.ndim, np.int64)
    out = requantize(acc, a, axis)
    if not a.get("max_pool"):
        return out
    pool = dict(kernel=a["max_pool"], strides=a["max_pool"], pads=(0, 0, 0, 0), dilations=(1, 1), ceil_mode=0)
    return max_pool2d.evaluate([out], {**pool, "layout": a["layout"]})[0]


@op(
    "qdense",
    "x w b?",
    "int8 dense (x @ w^T, w [N, K]), int32 accumulation, fixed-point requantization to int8/uint8 (or the int32 sum)",
    tags=("matmul", "quant"),
    **_REQUANT_ATTRS,
)
def qdense(ins, a):
    x, w, b = (ins + [None])[:3]
    shape, _ = dense.infer([x, w, b], {})
    _check_layer(x, w, b, a, w.shape[0])
    return shape, a["out_dtype"]


@reference(qdense)
def _qdense(x, w, b, a):
    xs = x.astype(np.float64) - a["x_zero_point"]
    acc = np.rint(np.matmul(xs, w.astype(np.float64).T)).astype(np.int64)
    if b is not None:
        acc = acc + b.astype(np.int64).reshape(-1)
    return requantize(acc, a, acc.ndim - 1)


ADD_MULTIPLIER_BITS = 21  # |q - zp| <= 255 times a multiplier under 2^21, twice, plus rounding: within int32


@op(
    "qadd",
    "a b",
    "int8 elementwise add of two quantized tensors into a third scale, by int32 fixed-point multipliers",
    tags=("quant",),
    a_zero_point=0,
    b_zero_point=0,
    a_multiplier=Attr("int"),
    b_multiplier=Attr("int"),
    shift=Attr("int"),
    **_OUT_ATTRS,
)
def qadd(ins, a):
    x, y = ins
    if tuple(x.shape) != tuple(y.shape):
        raise EmberError(f"inputs {fmt(x.shape)} and {fmt(y.shape)} must have the same shape")
    _in_range(a["a_zero_point"], x.dtype, "a_zero_point")
    _in_range(a["b_zero_point"], y.dtype, "b_zero_point")
    _check_output(a, QRANGE)
    if not all(0 <= a[k] < 1 << ADD_MULTIPLIER_BITS for k in ("a_multiplier", "b_multiplier")):
        raise EmberError(
            f"multipliers must lie in [0, 2^{ADD_MULTIPLIER_BITS}), got {a['a_multiplier']}, {a['b_multiplier']}"
        )
    if not 1 <= a["shift"] <= 31:
        raise EmberError(f"shift must lie in [1, 31], got {a['shift']}")
    return x.shape, a["out_dtype"]


@reference(qadd)
def _qadd(x, y, a):
    acc = (x.astype(np.int32) - a["a_zero_point"]) * np.int32(a["a_multiplier"])
    acc += (y.astype(np.int32) - a["b_zero_point"]) * np.int32(a["b_multiplier"])
    out = ((acc + np.int32(1 << (a["shift"] - 1))) >> a["shift"]) + a["out_zero_point"]
    return np.clip(out, a["out_min"], a["out_max"]).astype(QRANGE_NUMPY[a["out_dtype"]])


def add_params(a_scale: float, b_scale: float, out_scale: float) -> tuple[int, int, int] | None:
    """(a_multiplier, b_multiplier, shift) for qadd: each multiplier * 2^-shift ~= its scale / out_scale, the
    larger with 20-21 significant bits; None when a ratio is too large for a shift of at least 1."""
    ratios = (float(a_scale) / float(out_scale), float(b_scale) / float(out_scale))
    if not all(math.isfinite(r) and r > 0 for r in ratios):
        return None
    shift = min(31, ADD_MULTIPLIER_BITS - math.frexp(max(ratios))[1])  # max ratio < 2^(21 - shift)
    while shift >= 1:
        mults = [round(r * (1 << shift)) for r in ratios]
        if max(mults) < 1 << ADD_MULTIPLIER_BITS:
            return mults[0], mults[1], shift
        shift -= 1
    return None


def fixed_point(real: float) -> tuple[int, int]:
    """(multiplier, shift) with multiplier * 2^-shift ~= real, multiplier in [2^30, 2^31), shift in [1, 62]."""
    if real <= 0 or not math.isfinite(real):
        return MULTIPLIER_RANGE[0], SHIFT_RANGE[1]
    mantissa, exponent = math.frexp(real)  # real = mantissa * 2^exponent, mantissa in [0.5, 1)
    multiplier = round(mantissa * (1 << 31))
    if multiplier == 1 << 31:
        multiplier, exponent = multiplier // 2, exponent + 1
    shift = 31 - exponent
    if shift > SHIFT_RANGE[1]:
        return MULTIPLIER_RANGE[0], SHIFT_RANGE[1]
    if shift < SHIFT_RANGE[0]:
        raise EmberError(f"requantization factor {real} needs a shift below 1", hint="the output range is too small")
    return multiplier, shift


def requant_params(x_scale: float, w_scales, out_scale: float) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """multiplier and shift attributes for x_scale * w_scale / out_scale, one pair per weight scale."""
    pairs = [fixed_point(float(x_scale) * float(ws) / float(out_scale)) for ws in w_scales]
    return tuple(m for m, _ in pairs), tuple(s for _, s in pairs)
