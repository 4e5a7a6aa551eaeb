"""Requantization of an int8 kernel's int32 sums (the gemmlowp/TFLite fixed-point scheme), bit-exact with the
reference (ember.ir.ops.quant): the per-channel terms computed at compile time and the TE expression a kernel's
epilogue evaluates per output."""

from __future__ import annotations

import numpy as np
from tvm import tirx

from ember.ir.ops.quant import I32_RANGE, QRANGE, out_scales

HIGH_WORD_SHIFT = 33  # shifts from here on requantize on the product's high 32 bits (see requantize)


def requant_terms(b, w: np.ndarray, x_dtype: str, attrs: dict, bias_init: bool = True) -> tuple[np.ndarray, list]:
    """What requantize takes per output channel for weights `w` [K, O] and an `x_dtype` ("u8"/"i8") input: `added`
    (int32 c = b - x_zp * sum(w) in the int32 form, where the weights prove it exact, or for an i32 output, else
    int64) and the per-channel arrays it reads (none per tensor: requantize makes them immediates). Without
    `bias_init` no sum starts from c (an int32 `added` other than an i32 output's): TVM's GPU rules only take
    reductions that start from 0."""
    bias = np.zeros(w.shape[1], np.int64) if b is None else b.const.astype(np.int64).reshape(-1)
    c = bias - attrs["x_zero_point"] * w.astype(np.int64).sum(axis=0)
    if not attrs["multiplier"]:  # an i32 output: the exact sum, not requantized
        return c.astype(np.int32), []
    if attrs["out_dtype"] == "f32":  # the sum and c, clipped and scaled in float32
        scales = out_scales(attrs)
        return c.astype(np.int32) if bias_init else c, [np.asarray(scales, np.float32)] if len(scales) > 1 else []
    mult = np.broadcast_to(np.asarray(attrs["multiplier"], np.int64), c.shape)
    shift = np.broadcast_to(np.asarray(attrs["shift"], np.int64), c.shape)
    per_channel = len(attrs["multiplier"]) > 1
    rounding = _int32_rounding(c, w, x_dtype, mult, shift, attrs["out_zero_point"]) if bias_init else None
    if rounding is not None:
        args = [mult, shift - 32, rounding] if per_channel else []
        return c.astype(np.int32), [a.astype(np.int32) for a in args]
    high = shift.min() >= HIGH_WORD_SHIFT
    with np.errstate(over="ignore"):
        added = c * mult + np.left_shift(np.int64(1), shift - 1)
    return added, [mult.astype(np.int32), (shift - 32 if high else shift).astype(np.int32)] if per_channel else []


def _int32_rounding(c, w, x_dtype: str, mult, shift, zp: int) -> np.ndarray | None:
    """2^(shift - 33) + zp * 2^(shift - 32), requantize's int32 form's rounding and zero point, when every value
    that form computes provably fits int32 (for every input, from the weights); else None."""
    if shift.min() < HIGH_WORD_SHIFT:
        return None
    lo, hi = QRANGE[x_dtype]
    wide = w.astype(np.int64)
    v_lo = np.minimum(wide * lo, wide * hi).sum(axis=0) + c
    v_hi = np.maximum(wide * lo, wide * hi).sum(axis=0) + c
    if v_lo.min() < I32_RANGE[0] or v_hi.max() > I32_RANGE[1]:
        return None
    rounding = (1 << (shift - 33)) + zp * (1 << (shift - 32))
    h_lo, h_hi = (v_lo * mult) >> 32, (v_hi * mult) >> 32
    if (h_lo + rounding).min() < I32_RANGE[0] or (h_hi + rounding).max() > I32_RANGE[1]:
        return None
    return rounding


def starts_from_added(added, out_dtype: str) -> bool:
    """Whether the accumulator must start from `added` (requantize's int32 form), not from 0."""
    return added.dtype == "int32" and out_dtype != "int32"


def requantize(acc, o, added, rq: tuple, attrs: dict, out_dtype: str):
    """The requantization of one int32 accumulator value for output channel `o` (a TE expression), `added` and `rq`
    from requant_terms: the reference's clip(((acc + c) * mult + 2^(shift - 1)) >> shift) + zp), bit-exactly. acc is
    sum(x * w) (zero point and bias not included), except in the int32 form (starts_from_added): v = sum(x * w) + c.

    int32 form: (v * mult + 2^(shift - 1)) >> shift = (hi32(v * mult) + 2^(shift - 33)) >> (shift - 32), the rounding
    term being a multiple of 2^32, and zp added before the shift adds zp * 2^(shift - 32): a high-word multiply
    (vpmuldq on even and odd lanes, blended), an add and a per-lane shift (vpsravd), all int32. c is in the
    accumulator because LLVM widens an add before the multiply into int64 adds and a 64 x 64 multiply.
    int64 forms: added = c * mult + 2^(shift - 1); acc and mult are both sign-extended int32, so the product is
    one vpmuldq per 4 lanes; with every shift >= 33 the high word is shifted in int32 lanes, else all in int64."""
    lo, hi = (tirx.const(attrs[k], "int32") for k in ("out_min", "out_max"))
    if out_dtype == "int32":
        return tirx.max(tirx.min(acc + added[o], hi), lo)
    if out_dtype == "float32":
        scale = rq[0][o] if rq else tirx.const(out_scales(attrs)[0], "float32")
        v = acc if starts_from_added(added, out_dtype) else acc + added[o].astype("int32")
        return tirx.max(tirx.min(v, hi), lo).astype("float32") * scale
    if starts_from_added(added, out_dtype):
        mult, shift, rounding = (a[o] for a in rq) if rq else _int32_immediates(attrs)
        h = (acc.astype("int64") * mult.astype("int64") >> tirx.const(32, "int64")).astype("int32")
        return tirx.max(tirx.min((h + rounding) >> shift, hi), lo).astype(out_dtype)
    high = min(attrs["shift"]) >= HIGH_WORD_SHIFT
    if rq:
        mult, shift = rq[0][o].astype("int64"), rq[1][o]
    else:
        mult, shift = tirx.const(attrs["multiplier"][0], "int64"), attrs["shift"][0]
        shift = tirx.const(shift - 32 if high else shift, "int32")
    p = acc.astype("int64") * mult + added[o]
    if high:
        y = (p >> tirx.const(32, "int64")).astype("int32") >> shift
        zp = tirx.const(attrs["out_zero_point"], "int32")
    else:
        y = p >> shift.astype("int64")
        lo, hi, zp = (tirx.const(attrs[k], "int64") for k in ("out_min", "out_max", "out_zero_point"))
    return tirx.max(tirx.min(y + zp, hi), lo).astype(out_dtype)


def _int32_immediates(attrs: dict) -> tuple:
    """Per-tensor multiplier, shift - 32 and rounding (with the zero point) of requantize's int32 form."""
    s = attrs["shift"][0]
    rounding = (1 << (s - 33)) + attrs["out_zero_point"] * (1 << (s - 32))
    return tuple(tirx.const(v, "int32") for v in (attrs["multiplier"][0], s - 32, rounding))
