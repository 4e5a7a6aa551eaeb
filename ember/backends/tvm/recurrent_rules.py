"""Lowering of the lstm and gru ops. On CPUs, for float32, one hand-written kernel runs every step: per step, the
gates accumulate h r over the hidden units, GATE_TILE columns at a time in registers, then one vector pass
updates the state (the activations take their vector forms, fast_math). It runs on one thread: a step is about
a microsecond of work, less than two threads' hand-off costs. Other devices and dtypes lower the op's
decomposition, step by step."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.script import tirx as T

from ember.backends.tvm.calls import OPAQUE
from ember.backends.tvm.rules import _shape_of, rule

GATE_TILE = 32  # gate columns accumulated at once: four AVX2 or eight NEON registers


@T.macro
def _gate_sums(g, acc, r, vec, b, first, cols, tile, hidden):
    """g[first : first + cols] = vec[b] r[:, first : first + cols], `tile` columns at a time in registers."""
    for jo in range(cols // tile):
        for ji in T.vectorized(tile):
            acc[ji] = T.float32(0)
        for k in range(hidden):
            for ji in T.vectorized(tile):
                acc[ji] = acc[ji] + r[k, first + jo * tile + ji] * vec[b, k]
        for ji in T.vectorized(tile):
            g[first + jo * tile + ji] = acc[ji]


def lstm_kernel(steps: int, batch: int, hidden: int, reverse: bool) -> tvm.tirx.PrimFunc:
    """y [T, B, H] from xw [T, B, 4H], r [H, 4H], h0 and c0 [B, H] (float32), as the lstm op defines them."""
    gates, tile = 4 * hidden, GATE_TILE if (4 * hidden) % GATE_TILE == 0 else hidden
    last = steps - 1

    @T.prim_func(private=True, s_tir=True)
    def lstm(
        xw: T.Buffer((steps, batch, gates), "float32"),
        r: T.Buffer((hidden, gates), "float32"),
        h0: T.Buffer((batch, hidden), "float32"),
        c0: T.Buffer((batch, hidden), "float32"),
        y: T.Buffer((steps, batch, hidden), "float32"),
    ):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, "op_pattern": OPAQUE})
        with T.sblock("root"):
            with T.sblock("lstm"):
                T.reads(
                    xw[0:steps, 0:batch, 0:gates], r[0:hidden, 0:gates], h0[0:batch, 0:hidden], c0[0:batch, 0:hidden]
                )
                T.writes(y[0:steps, 0:batch, 0:hidden])
                h = T.decl_buffer((batch, hidden), "float32", scope="global")
                c = T.decl_buffer((batch, hidden), "float32", scope="global")
                g = T.decl_buffer((gates,), "float32", scope="global")
                acc = T.decl_buffer((tile,), "float32", scope="global")
                for b in range(batch):
                    for j in T.vectorized(hidden):
                        h[b, j] = h0[b, j]
                        c[b, j] = c0[b, j]
                for s in range(steps):
                    t = T.if_then_else(reverse, last - s, s)
                    for b in range(batch):
                        _gate_sums(g, acc, r, h, b, 0, gates, tile, hidden)
                        for j in T.vectorized(hidden):  # no let-bound names in here: TVM vectorized them wrongly
                            c[b, j] = T.sigmoid(xw[t, b, 2 * hidden + j] + g[2 * hidden + j]) * c[b, j] + T.sigmoid(
                                xw[t, b, j] + g[j]
                            ) * T.tanh(xw[t, b, 3 * hidden + j] + g[3 * hidden + j])
                            h[b, j] = T.sigmoid(xw[t, b, hidden + j] + g[hidden + j]) * T.tanh(c[b, j])
                            y[t, b, j] = h[b, j]

    return lstm


def gru_kernel(steps: int, batch: int, hidden: int, reverse: bool, linear_before_reset: bool) -> tvm.tirx.PrimFunc:
    """y [T, B, H] from xw [T, B, 3H], r [H, 3H], rb [3H] and h0 [B, H] (float32), as the gru op defines them:
    the z and r columns (and n's, when linear before reset) in one pass over r, else n's after r h."""
    gates, tile = 3 * hidden, GATE_TILE if hidden % GATE_TILE == 0 else hidden
    first = gates if linear_before_reset else 2 * hidden  # columns summed before the reset gate is known
    last = steps - 1

    @T.prim_func(private=True, s_tir=True)
    def gru(
        xw: T.Buffer((steps, batch, gates), "float32"),
        r: T.Buffer((hidden, gates), "float32"),
        rb: T.Buffer((gates,), "float32"),
        h0: T.Buffer((batch, hidden), "float32"),
        y: T.Buffer((steps, batch, hidden), "float32"),
    ):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, "op_pattern": OPAQUE})
        with T.sblock("root"):
            with T.sblock("gru"):
                T.reads(xw[0:steps, 0:batch, 0:gates], r[0:hidden, 0:gates], rb[0:gates], h0[0:batch, 0:hidden])
                T.writes(y[0:steps, 0:batch, 0:hidden])
                h = T.decl_buffer((batch, hidden), "float32", scope="global")
                rh = T.decl_buffer((batch, hidden), "float32", scope="global")
                g = T.decl_buffer((gates,), "float32", scope="global")
                acc = T.decl_buffer((tile,), "float32", scope="global")
                for b in range(batch):
                    for j in T.vectorized(hidden):
                        h[b, j] = h0[b, j]
                for s in range(steps):
                    t = T.if_then_else(reverse, last - s, s)
                    for b in range(batch):
                        _gate_sums(g, acc, r, h, b, 0, first, tile, hidden)
                        if not linear_before_reset:  # n's sum is (r h) Rn
                            for j in T.vectorized(hidden):
                                rh[b, j] = T.sigmoid(xw[t, b, hidden + j] + g[hidden + j] + rb[hidden + j]) * h[b, j]
                            _gate_sums(g, acc, r, rh, b, 2 * hidden, hidden, tile, hidden)
                        for j in T.vectorized(hidden):  # n = tanh(xn + r (h Rn + bn)) when linear before reset
                            h[b, j] = (T.float32(1) - T.sigmoid(xw[t, b, j] + g[j] + rb[j])) * T.tanh(
                                xw[t, b, 2 * hidden + j]
                                + T.if_then_else(
                                    linear_before_reset,
                                    T.sigmoid(xw[t, b, hidden + j] + g[hidden + j] + rb[hidden + j])
                                    * (g[2 * hidden + j] + rb[2 * hidden + j]),
                                    g[2 * hidden + j] + rb[2 * hidden + j],
                                )
                            ) + T.sigmoid(xw[t, b, j] + g[j] + rb[j]) * h[b, j]
                            y[t, b, j] = h[b, j]

    return gru


@rule("lstm", "gru")
def _recurrent(L, n, a):
    if L.device != "cpu" or n.output.dtype != "f32":
        return L.decomposed(n, a)
    steps, batch, hidden = _shape_of(n.output, n)
    state = np.zeros((batch, hidden), np.float32)
    defaults = [state, state] if n.op == "lstm" else [np.zeros(3 * hidden, np.float32), state]  # h0, c0 / rb, h0
    operands = [x if x is not None else L.const(d) for x, d in zip((a + [None] * 2)[2:4], defaults)]
    reverse = bool(n.attrs["reverse"])
    if n.op == "lstm":
        kernel = lstm_kernel(steps, batch, hidden, reverse)
    else:
        kernel = gru_kernel(steps, batch, hidden, reverse, bool(n.attrs["linear_before_reset"]))
    gv = L.bb.add_func(kernel, n.op)
    return relax.call_tir(gv, [a[0], a[1], *operands], relax.TensorType((steps, batch, hidden), "float32"))
