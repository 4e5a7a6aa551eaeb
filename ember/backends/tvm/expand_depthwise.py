"""An inverted bottleneck's expand and depthwise convs in one CPU kernel (NHWC float32): MobileNetV2's 1x1 conv
to 6x the channels, then its 3x3 depthwise conv. The kernel computes the depthwise output a strip of rows at a
time, each from the strip of the expanded tensor it reads, computed first into a buffer that stays in cache, so
the expanded tensor (4.8 MB at MobileNetV2's 112x112, 1.8 MB at 56x56) is never written out and read back.
Strips overlap by the 3x3 window's halo: (rows - 1) x stride + 3 expanded rows for `rows` output rows.

Measured (Zen 4, 2 threads): MobileNetV2's features.2 (112x112, 16 -> 96, stride 2) alone took 0.29 ms fused
against 0.30 + 0.08 ms for its two kernels with their inputs in cache (time_evaluator); in the model, where they
are not, the two took 0.38 + 0.11 ms. The whole model, in-process in turns, 40 rounds: 0.91x the median time
(0.93x the min). Fusing the 28x28 blocks too (602 KB expanded) changed nothing (0.99x); down to 256 KB, 1.04x."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from tvm import relax, te, tirx

from ember.ir.graph import Graph, Node

if TYPE_CHECKING:
    from ember.backends.tvm.rules import Lowering

# An expanded tensor smaller than this stays in the caches between the two kernels anyway (MobileNetV2's 28x28
# and smaller blocks), and strips of its few rows would recompute a larger share of it.
MIN_EXPANDED_BYTES = 1 << 20
CHANNEL_MULTIPLE = 16  # expanded channels: whole vectors of any target's width
EXPAND_BLOCK, EXPAND_ACTIVATION = "expand", "expand_activation"
DEPTHWISE_BLOCK, DEPTHWISE_ACTIVATION = "expand_depthwise", "expand_depthwise_activation"


def activation(node: Node) -> Callable[[tirx.PrimExpr], tirx.PrimExpr] | None:
    """The fused layer's activation as an expression builder, for the activations the kernel applies: cheap ones,
    as the expand's is computed again on each strip's halo rows. EfficientNet-B0's two SiLU blocks fused took
    1.03x the whole model's median time (in-process A/B, 30 rounds), so a SiLU layer keeps its own kernel."""
    act, params = node.attrs["activation"], node.attrs["act_params"]
    zero = tirx.const(0.0, "float32")
    if act == "relu":
        return lambda v: tirx.max(v, zero)
    if act == "clip" and len(params) == 2:
        lo, hi = (tirx.const(float(p), "float32") for p in params)
        return lambda v: tirx.max(tirx.min(v, hi), lo)
    return None


def plain_epilogue(n: Node) -> bool:
    """Fused layer `n`'s epilogue is one a strip kernel computes itself: a constant bias or none, no residual, and
    an activation `activation` builds."""
    return (
        (len(n.inputs) < 3 or n.inputs[2] is None or n.inputs[2].is_const)
        and (len(n.inputs) < 4 or n.inputs[3] is None)
        and activation(n) is not None
    )


def layer_bias(n: Node) -> np.ndarray:
    """Fused layer `n`'s constant bias, or zeros, float32, one per output channel."""
    has_bias = len(n.inputs) > 2 and n.inputs[2] is not None
    return np.asarray(n.inputs[2].const if has_bias else np.zeros(n.output.shape[3]), np.float32)


def _plain_layer(n: Node, kernel: tuple[int, int]) -> bool:
    """A float32 NHWC fused_conv2d with a constant `kernel`-sized weight and a `plain_epilogue`, on static shapes."""
    at, w = n.attrs, n.inputs[1]
    return (
        n.op == "fused_conv2d"
        and at["layout"] == "NHWC"
        and n.output.dtype == "f32"
        and w.is_const
        and tuple(w.shape[:2]) == kernel
        and list(at["dilations"]) == [1, 1]
        and n.inputs[0].is_static
        and n.output.is_static
        and plain_epilogue(n)
    )


def _is_expand(n: Node) -> bool:
    at = n.attrs
    return (
        _plain_layer(n, (1, 1))
        and at["group"] == 1
        and list(at["strides"]) == [1, 1]
        and list(at["pads"]) == [0, 0, 0, 0]
    )


def _is_depthwise(n: Node) -> bool:
    at = n.attrs
    if not _plain_layer(n, (3, 3)) or list(at["pads"]) != [1, 1, 1, 1] or list(at["strides"]) not in ([1, 1], [2, 2]):
        return False
    channels = n.inputs[1].shape[3]
    return n.inputs[1].shape[2] == 1 and at["group"] == channels and channels % CHANNEL_MULTIPLE == 0


def absorbed_expand(graph: Graph, n: Node, device: str) -> list[Node]:
    """(rules.ABSORBS of fused_conv2d) The expand conv a CPU depthwise conv computes in its own kernel: the 1x1
    conv it reads, when nothing else reads its result and that result is large enough to leave the caches."""
    if device != "cpu" or not _is_depthwise(n):
        return []
    expanded = n.inputs[0]
    p = expanded.producer
    if p is None or not _is_expand(p) or expanded.users != [n] or graph.is_output(expanded):
        return []
    return [p] if int(np.prod(expanded.shape)) * 4 >= MIN_EXPANDED_BYTES else []


def compute(x: te.Tensor, w1: te.Tensor, b1: te.Tensor, w2: te.Tensor, b2: te.Tensor, stride: int, act1, act2):
    """act2(depthwise3x3(pad1(act1(x . w1 + b1)), w2, stride) + b2): x [N, H, W, C], w1 [C, E], w2 [3, 3, E]."""
    n, h, w, c = (int(d) for d in x.shape)
    e = int(w1.shape[1])
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    rc = te.reduce_axis((0, c), "rc")
    expand = te.compute((n, h, w, e), lambda b, y, z, k: te.sum(x[b, y, z, rc] * w1[rc, k], axis=rc), name=EXPAND_BLOCK)
    expanded = te.compute((n, h, w, e), lambda b, y, z, k: act1(expand[b, y, z, k] + b1[k]), name=EXPAND_ACTIVATION)

    def padded(b, y, z, k):
        inside = tirx.all(y >= 1, y <= h, z >= 1, z <= w)
        return tirx.if_then_else(inside, expanded[b, y - 1, z - 1, k], tirx.const(0.0, "float32"))

    kh, kw = te.reduce_axis((0, 3), "kh"), te.reduce_axis((0, 3), "kw")
    depthwise = te.compute(
        (n, ho, wo, e),
        lambda b, i, j, k: te.sum(padded(b, i * stride + kh, j * stride + kw, k) * w2[kh, kw, k], axis=[kh, kw]),
        name=DEPTHWISE_BLOCK,
    )
    return te.compute((n, ho, wo, e), lambda b, i, j, k: act2(depthwise[b, i, j, k] + b2[k]), name=DEPTHWISE_ACTIVATION)


def emit(L: Lowering, x: relax.Expr, expand: Node, depthwise: Node) -> relax.Expr:
    """The fused kernel's call for `expand` (absorbed) and `depthwise` on the expand's input `x`."""
    kernel = functools.partial(
        compute, stride=int(depthwise.attrs["strides"][0]), act1=activation(expand), act2=activation(depthwise)
    )
    return L.bb.emit_te(
        kernel,
        x,
        L.const(expand.inputs[1].const.reshape(expand.inputs[1].shape[2:])),
        L.const(layer_bias(expand), "f32"),
        L.const(depthwise.inputs[1].const.reshape(3, 3, -1)),
        L.const(layer_bias(depthwise), "f32"),
        primfunc_name_hint=DEPTHWISE_BLOCK,
    )
