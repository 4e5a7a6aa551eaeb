"""A custom Ember pass in one file: fold a multiplication by a per-channel constant into the conv2d
that feeds it (y = conv(x, w, b) * s  ->  conv(x, w * s, b * s)).

    ember compile model.onnx --pass-plugin examples/fold_mul_into_conv.py \
        --passes "canonicalize,fold-mul-into-conv"
"""

import numpy as np

import ember.passes
from ember.passes.pattern import P, Rule, rewrite


def per_channel(scale: np.ndarray) -> bool:
    """A scalar, or one value per output channel shaped [C, 1, 1] or [1, C, 1, 1]."""
    return scale.size == 1 or (scale.ndim in (3, 4) and scale.shape[-2:] == (1, 1) and scale.squeeze().ndim == 1)


CONV_TIMES_CONST = P.op(
    "mul",
    P.op("conv2d", P.any("x"), P.const("w"), P.opt(P.const("b")), name="conv", layout="NCHW"),
    P.const("s", where=per_channel),
)


def fold(m, b):
    w, s = m["w"].const, m["s"].const.reshape(-1)
    if s.size not in (1, w.shape[0]):
        return None  # broadcasts across something other than output channels: leave it
    s = np.broadcast_to(s, (w.shape[0],))
    bias = m["b"].const if m["b"] is not None else np.zeros(w.shape[0], w.dtype)
    new_w = b.const(w * s.reshape(-1, 1, 1, 1), like=m["w"])
    new_b = b.const(bias * s, like=m["w"])
    return b.emit("conv2d", m["x"], new_w, new_b, **m["conv"].attrs)


@ember.passes.register("fold-mul-into-conv", description="fold a constant per-channel Mul into the preceding conv2d")
def fold_mul_into_conv(graph) -> bool:
    return rewrite(graph, [Rule(CONV_TIMES_CONST, fold)])
