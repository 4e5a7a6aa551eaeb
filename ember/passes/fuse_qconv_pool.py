"""Fuse a max_pool2d whose windows tile its input (kernel = stride, no padding) into the int8 conv before it.

qconv2d's requantization is monotonic (its multipliers are positive), so the max over a window of requantized
values is the requantized max of the window's int32 sums: the fused kernel requantizes once per window (a 2 x 2
pool: a quarter of the requantizations) and never writes the int8 tensor between the two ops. The LeNet-style
conv -> relu -> pool blocks of small embedded CNNs are where this pays."""

from __future__ import annotations

from ember.ir.graph import Graph, Node
from ember.ir.ops.quant import QRANGE
from ember.passes.manager import register
from ember.passes.pattern import P, Rule, rewrite


def _unfused(node: Node) -> bool:
    a = node.attrs
    return a["group"] == 1 and not a["max_pool"] and a["out_dtype"] in QRANGE


def _tiles(node: Node) -> bool:
    """Whether the pool's windows tile its input: square, stride = kernel, no padding or dilation."""
    a = node.attrs
    k = tuple(a["kernel"])
    return k[0] == k[1] >= 2 and tuple(a["strides"]) == k and not any(a["pads"]) and tuple(a["dilations"]) == (1, 1)


CONV = P.op("qconv2d", P.any("x"), P.const("w"), P.opt(P.const("b")), name="conv", where=_unfused)


def _fuse(m, b):
    conv, pool = m["conv"], m["pool"]
    k = pool.attrs["kernel"][0]
    layout = conv.attrs["layout"]
    hw = conv.output.shape[1:3] if layout == "NHWC" else conv.output.shape[2:4]
    if pool.attrs["layout"] != layout or any(not isinstance(d, int) or d % k for d in hw):
        return None
    operands = [m["x"], m["w"]] + ([m["b"]] if m["b"] is not None else [])
    return b.emit("qconv2d", *operands, **{**conv.attrs, "max_pool": (k, k)})


RULES = [Rule(P.op("max_pool2d", CONV, name="pool", where=_tiles), _fuse)]


@register("fuse-qconv-pool", "fuse a max_pool2d with kernel = stride and no padding into the qconv2d before it")
def fuse_qconv_pool(graph: Graph) -> bool:
    return rewrite(graph, RULES)
