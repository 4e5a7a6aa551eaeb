"""Run a transposed conv as a conv2d: its output splits into stride x stride phases, and each phase is a
plain correlation of the input with every stride-th kernel tap (the sub-pixel convolution, Shi et al., 2016).
All phases become the output channels of one conv2d with ceil(k / s) taps per axis, a depth-to-space puts
them in place and a slice crops the pads; that conv2d then takes the layout pass and the conv schedules."""

from __future__ import annotations

import numpy as np

from ember.ir.graph import Graph
from ember.passes.affine import nchw
from ember.passes.manager import register
from ember.passes.pattern import P, Rule, rewrite


def _plain(node) -> bool:
    return (
        nchw(node)
        and tuple(node.attrs["dilations"]) == (1, 1)
        and all(isinstance(d, int) for d in node.output.shape[1:])
    )


TRANSPOSED = P.op("conv2d_transpose", P.any("x"), P.const("w"), P.opt(P.const("b")), name="t", where=_plain)


def phase_weights(w: np.ndarray, strides, group: int) -> np.ndarray:
    """The conv2d weights [O * sh * sw, C / group, Jh, Jw] (J = ceil(k / s)) whose output channel (o, rh, rw)
    computes phase (rh, rw) of output channel o, from transposed-conv weights `w` [C, O / group, kh, kw]:
    tap t of phase r is w's tap r + (J - 1 - t) * s, zero past the kernel."""
    c, og, kh, kw = w.shape
    (sh, sw), (jh, jw) = strides, (-(-kh // strides[0]), -(-kw // strides[1]))
    full = np.zeros((c, og, jh * sh, jw * sw), w.dtype)
    full[:, :, :kh, :kw] = w
    # [C, Og, Jh, sh, Jw, sw]: tap index j * s + r; reverse j (a correlation), then order (g, Og, sh, sw | C/g, Jh, Jw)
    taps = full.reshape(c, og, jh, sh, jw, sw)[:, :, ::-1, :, ::-1, :]
    grouped = taps.reshape(group, c // group, og, jh, sh, jw, sw).transpose(0, 2, 4, 6, 1, 3, 5)
    return np.ascontiguousarray(grouped.reshape(group * og * sh * sw, c // group, jh, jw))


def _as_conv(m, b):
    node, w = m["t"], m["w"].const
    a, x = node.attrs, m["x"]
    (sh, sw), (kh, kw) = a["strides"], w.shape[2:]
    jh, jw = -(-kh // sh), -(-kw // sw)
    o, (ih, iw) = node.output.shape[1], x.shape[2:]
    pt, pl, pb, pr = a["pads"]
    end_h, end_w = node.output.shape[2] + pt, node.output.shape[3] + pl  # the crop's end, in uncropped coordinates
    extra_h, extra_w = max(0, -(-end_h // sh) - (ih + jh - 1)), max(0, -(-end_w // sw) - (iw + jw - 1))
    mh, mw = ih + jh - 1 + extra_h, iw + jw - 1 + extra_w
    args = [x, b.const(phase_weights(w, (sh, sw), a["group"]))]
    if m["b"] is not None:
        args.append(b.const(np.repeat(m["b"].const, sh * sw)))
    pads = (jh - 1, jw - 1, jh - 1 + extra_h, jw - 1 + extra_w)
    y = b.emit("conv2d", *args, strides=(1, 1), pads=pads, dilations=(1, 1), group=a["group"])
    if (sh, sw) != (1, 1):  # depth-to-space: channel (o, rh, rw) at row m is output row m * sh + rh
        split = b.emit("reshape", y, b.const(np.array([-1, o, sh, sw, mh, mw], np.int64)))
        placed = b.emit("transpose", split, perm=[0, 1, 4, 2, 5, 3])
        y = b.emit("reshape", placed, b.const(np.array([-1, o, mh * sh, mw * sw], np.int64)))
    if (pt, pl, end_h, end_w) == (0, 0, mh * sh, mw * sw):
        return y
    bounds = [np.array(v, np.int64) for v in ([pt, pl], [end_h, end_w], [2, 3])]
    return b.emit("slice", y, *(b.const(v) for v in bounds))


@register("conv-transpose-to-conv", "run a conv2d_transpose as one conv2d over its stride phases")
def conv_transpose_to_conv(graph: Graph) -> bool:
    return rewrite(graph, [Rule(TRANSPOSED, _as_conv)])
