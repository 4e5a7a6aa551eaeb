"""A CPU conv over a few input channels (a model's first conv) that reads its NCHW input through the layout
transpose before it (convert-layout's, for an NCHW model input) in its own kernel, where the transpose was a kernel
of its own: the schedule inlines the copy into the conv's padding (contraction.inline_prologue), so the conv reads
each input channel's plane directly, as the int8 stem does (quant_rules._absorbed_input). Whole model, in-process
A/B in turns, 2 threads, Zen 4: SqueezeNet 1.1 0.965-0.973x the median time (three runs of 400 rounds), whose
224x224x3 transpose had taken 0.04-0.07 ms; MobileNetV2 1.003x and 1.019x (means 0.999x, 1.005x), ResNet-50
0.998x, where the padded stem reads the planes as fast as the transposed copy (0.145 against 0.115 + 0.027 ms).

A max pool right after such a conv (SqueezeNet's, ResNet's) computes it in the same kernel, in strips of pooled
rows, each from the conv rows its windows read, computed first into a buffer that stays in cache (as
expand_depthwise.py does): the conv's result (3.2 MB at 111x111x64) is never written out and read back by the
other thread. This machine has phases of seconds in which data moving between its two cores is slow (a thread
reading the 1 MB the other just wrote: 3.5 against 22 GB/s); whole model, in-process A/B in turns, rounds split by
phase: SqueezeNet 0.996x in fast phases and 0.921x in slow ones (2341 rounds), ResNet-50 0.995x and 0.957x."""

from __future__ import annotations

import functools

from tvm import relax, te, tirx, topi

from ember.backends.tvm import expand_depthwise
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


STEM_ACTIVATION, STEM_POOL = "stem_activation", "stem_pool"
POOL_STRIDE = "pool_stride"  # the pool block's annotation: its vertical stride, for the schedule's strips


def absorbed_stem(graph: Graph, n: Node, device: str) -> list[Node]:
    """(rules.ABSORBS of max_pool2d) The stem conv before a CPU max pool, with the transpose it absorbs, that the
    pool computes in its own kernel a strip of rows at a time, when nothing else reads the conv's result."""
    at = n.attrs
    if device != "cpu" or at["layout"] != "NHWC" or at["ceil_mode"] or list(at["dilations"]) != [1, 1]:
        return []
    conv = n.inputs[0].producer
    if conv is None or conv.op != "fused_conv2d" or n.inputs[0].users != [n] or graph.is_output(n.inputs[0]):
        return []
    if not expand_depthwise.plain_epilogue(conv) or conv.output.shape[3] % expand_depthwise.CHANNEL_MULTIPLE:
        return []
    transpose = absorbed_transpose(graph, conv, device)
    return [*transpose, conv] if transpose and n.output.is_static else []


def conv_pool(bb: relax.BlockBuilder, x: relax.Expr, conv: Node, pool: Node) -> relax.Expr:
    """The stem kernel's call: max pool `pool` of stem conv `conv` (bias, activation) on its NCHW input `x`."""
    at, pat = conv.attrs, pool.attrs
    w = conv.inputs[1].const
    kernel = functools.partial(
        _conv_pool,
        strides=list(at["strides"]),
        pads=list(at["pads"]),
        dilations=list(at["dilations"]),
        act=expand_depthwise.activation(conv),
        pool=(list(pat["kernel"]), list(pat["strides"]), list(pat["pads"])),
    )
    bias = relax.const(expand_depthwise.layer_bias(conv))
    return bb.emit_te(kernel, x, relax.const(w), bias, primfunc_name_hint=STEM_POOL)


def _conv_pool(x, w, b, strides, pads, dilations, act, pool):
    """max_pool(act(conv(transpose(x), w) + b)): the conv as TOPI builds it, then the activation and the pool as
    blocks of their own (STEM_ACTIVATION, STEM_POOL) for the schedule to compute a strip at a time."""
    conv = _transposed_conv(x, w, strides, pads, dilations)
    n, h, wd, k = (int(d) for d in conv.shape)
    activated = te.compute((n, h, wd, k), lambda b_, y, z, c: act(conv[b_, y, z, c] + b[c]), name=STEM_ACTIVATION)
    (ph, pw), (sh, sw), (top, left, bottom, right) = pool
    oh, ow = (h + top + bottom - ph) // sh + 1, (wd + left + right - pw) // sw + 1
    ry, rx = te.reduce_axis((0, ph), "py"), te.reduce_axis((0, pw), "px")

    def window(b_, i, j, c):
        y, z = i * sh + ry - top, j * sw + rx - left
        inside = tirx.all(y >= 0, y < h, z >= 0, z < wd)
        return tirx.if_then_else(inside, activated[b_, y, z, c], tirx.min_value("float32"))

    def pooled(*i):
        return te.max(window(*i), axis=[ry, rx])

    return te.compute((n, oh, ow, k), pooled, name=STEM_POOL, attrs={POOL_STRIDE: sh})
