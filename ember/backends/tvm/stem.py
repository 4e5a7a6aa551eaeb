"""A CPU conv over a few input channels (a model's first conv) that reads its NCHW input through the layout
transpose before it (convert-layout's, for an NCHW model input) in its own kernel, where the transpose was a kernel
of its own: the schedule inlines the copy into the conv's padding (contraction.inline_prologue), so the conv reads
each input channel's plane directly, as the int8 stem does (quant_rules._absorbed_input). Whole model, in-process
A/B in turns, 2 threads, Zen 4: SqueezeNet 1.1 0.965-0.973x the median time (three runs of 400 rounds), whose
224x224x3 transpose had taken 0.04-0.07 ms; MobileNetV2 1.003x and 1.019x (means 0.999x, 1.005x), ResNet-50
0.998x, where the padded stem reads the planes as fast as the transposed copy (0.145 against 0.115 + 0.027 ms)."""

from __future__ import annotations

import functools

from tvm import relax, topi

from ember.ir.graph import Graph, Node

MAX_CHANNELS = 4  # input channels (RGB, RGBA): a register tile's broadcasts read a row of each plane


def absorbed_transpose(graph: Graph, n: Node, device: str) -> list[Node]:
    """(rules.ABSORBS of fused_conv2d) The NCHW -> NHWC transpose a CPU float32 NHWC conv over at most MAX_CHANNELS
    input channels computes in its own kernel, when nothing else reads its result."""
    at, w = n.attrs, n.inputs[1]
    if device != "cpu" or at["layout"] != "NHWC" or at["group"] != 1:
        return []
    if not w.is_const or w.shape[2] > MAX_CHANNELS or n.output.dtype != "f32" or not n.inputs[0].is_static:
        return []
    t = n.inputs[0].producer
    if t is None or t.op != "transpose" or list(t.attrs["perm"]) != [0, 2, 3, 1]:
        return []
    return [t] if n.inputs[0].users == [n] and not graph.is_output(n.inputs[0]) else []


def conv2d(bb: relax.BlockBuilder, x: relax.Expr, weight: relax.Expr, node: Node) -> relax.Expr:
    """Conv2d `node` (NHWC, HWIO weight, before its bias) on the NCHW input `x` it reads through the transpose."""
    at = node.attrs
    kernel = functools.partial(
        _transposed_conv, strides=list(at["strides"]), pads=list(at["pads"]), dilations=list(at["dilations"])
    )
    return bb.emit_te(kernel, x, weight, primfunc_name_hint="conv2d")


def _transposed_conv(x, w, strides, pads, dilations):
    """TOPI's NHWC conv (what Relax's conv2d legalizes to, so the conv schedules match it) of transpose(x)."""
    return topi.nn.conv(topi.transpose(x, [0, 2, 3, 1]), w, strides, pads, dilations, 1, "NHWC", "HWIO")
