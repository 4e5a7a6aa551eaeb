"""The integer scheme a target's kernels compute bit-exactly, and the arithmetic that maps float ranges onto it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ember.ir.ops.quant import QRANGE, add_params, fixed_point, requant_params  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class Scheme:
    """Activation dtype ("u8" or "i8") and the symmetric weight bound (weights lie in [-weight_max, weight_max])."""

    activation: str
    weight_max: int


def scheme_for_target(arch: str, features: str | tuple[str, ...] | list[str] = ()) -> Scheme:
    """x86: u8 activations and 7-bit weights, since AVX2's vpmaddubsw saturates u8 x s8 pairs in int16 (full
    [-127, 127] weights with AVX-512 VNNI / AVX-VNNI); aarch64: s8 activations for sdot; others u8 / 127."""
    text = (features if isinstance(features, str) else ",".join(features)).lower().replace("_", "")
    if arch in ("x86_64", "x86", "i686"):
        return Scheme("u8", 127 if ("avx512vnni" in text or "avxvnni" in text) else 63)
    if arch == "aarch64":
        return Scheme("i8", 127)
    return Scheme("u8", 127)


@dataclass(frozen=True)
class QParams:
    """Per-tensor affine quantization of an activation: real = (q - zero_point) * scale."""

    scale: float
    zero_point: int
    dtype: str

    @property
    def qmin(self) -> int:
        return QRANGE[self.dtype][0]

    @property
    def qmax(self) -> int:
        return QRANGE[self.dtype][1]

    def quantized(self, value: float) -> int:
        """The integer a real value maps to, clipped to the dtype."""
        return int(min(max(round(value / self.scale) + self.zero_point, self.qmin), self.qmax))


def qadd_attrs(a: QParams, b: QParams, out: QParams, clamp: tuple[int, int]) -> dict | None:
    """qadd's attributes for a + b requantized to `out` and clamped to (out_min, out_max); None when the scales'
    ratios do not fit its multipliers."""
    mults = add_params(a.scale, b.scale, out.scale)
    if mults is None:
        return None
    attrs = dict(a_zero_point=a.zero_point, b_zero_point=b.zero_point, a_multiplier=mults[0], b_multiplier=mults[1])
    attrs.update(shift=mults[2], out_zero_point=out.zero_point, out_dtype=out.dtype)
    return {**attrs, "out_min": clamp[0], "out_max": clamp[1]}


def activation_qparams(lo: float, hi: float, dtype: str) -> QParams:
    """Asymmetric per-tensor parameters covering [lo, hi] and zero (so padding and relu stay exact)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    qmin, qmax = QRANGE[dtype]
    if hi - lo <= 0 or not math.isfinite(hi - lo):
        return QParams(1.0, qmin if dtype == "u8" else 0, dtype)
    scale = float(np.float32((hi - lo) / (qmax - qmin)))
    zero_point = int(min(max(round(qmin - lo / scale), qmin), qmax))
    return QParams(scale, zero_point, dtype)


def weight_scales(w: np.ndarray, channel_axis: int, per_channel: bool, weight_max: int) -> np.ndarray:
    """Symmetric scales, one per output channel (or one): max |w| / weight_max; an all-zero channel gets 1."""
    absw = np.abs(w.astype(np.float64))
    if per_channel:
        amax = absw.max(axis=tuple(i for i in range(w.ndim) if i != channel_axis))
    else:
        amax = np.array([absw.max()])
    return np.where(amax > 0, amax / weight_max, 1.0).astype(np.float32)


def quantize_weights(w: np.ndarray, scales: np.ndarray, channel_axis: int, weight_max: int) -> np.ndarray:
    shape = [1] * w.ndim
    if scales.size > 1:
        shape[channel_axis] = scales.size
    q = np.rint(w.astype(np.float64) / scales.astype(np.float64).reshape(shape))
    return np.clip(q, -weight_max, weight_max).astype(np.int8)


def quantize_bias(b: np.ndarray, x_scale: float, w_scales: np.ndarray) -> np.ndarray:
    """int32 bias in units of x_scale * w_scale (per channel)."""
    q = np.rint(b.astype(np.float64).reshape(-1) / (x_scale * w_scales.astype(np.float64)))
    return np.clip(q, -(2**31) + 1, 2**31 - 1).astype(np.int32)
