"""Lowering of the lstm op. On CPUs, for float32, one hand-written kernel runs every step: per step, the gates
start from the projected input and accumulate h r over the hidden units, GATE_TILE columns at a time in
registers, then one vector pass updates c and h (the activations take their vector forms, fast_math). It
runs on one thread: a step is about a microsecond of work, less than two threads' hand-off costs. Other
devices and dtypes lower the op's decomposition, step by step."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.script import tirx as T

from ember.backends.tvm.calls import OPAQUE
from ember.backends.tvm.rules import RULES, _shape_of, rule
from ember.ir.decompose import decompose

GATE_TILE = 32  # gate columns accumulated at once: four AVX2 or eight NEON registers


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
                    for b in range(batch):
                        for jo in range(gates // tile):
                            for ji in T.vectorized(tile):
                                acc[ji] = xw[T.if_then_else(reverse, last - s, s), b, jo * tile + ji]
                            for k in range(hidden):
                                for ji in T.vectorized(tile):
                                    acc[ji] = acc[ji] + r[k, jo * tile + ji] * h[b, k]
                            for ji in T.vectorized(tile):
                                g[jo * tile + ji] = acc[ji]
                        for j in T.vectorized(hidden):
                            c[b, j] = T.sigmoid(g[2 * hidden + j]) * c[b, j] + T.sigmoid(g[j]) * T.tanh(
                                g[3 * hidden + j]
                            )
                            h[b, j] = T.sigmoid(g[hidden + j]) * T.tanh(c[b, j])
                            y[T.if_then_else(reverse, last - s, s), b, j] = h[b, j]

    return lstm


@rule("lstm")
def _lstm(L, n, a):
    if L.device != "cpu" or n.output.dtype != "f32":
        return lower_decomposed(L, n, a)
    steps, batch, hidden = _shape_of(n.output, n)
    zeros = L.const(np.zeros((batch, hidden), np.float32))
    h0, c0 = (x if x is not None else zeros for x in (a + [None] * 2)[2:4])
    gv = L.bb.add_func(lstm_kernel(steps, batch, hidden, bool(n.attrs["reverse"])), "lstm")
    return relax.call_tir(gv, [a[0], a[1], h0, c0], relax.TensorType((steps, batch, hidden), "float32"))


def lower_decomposed(L, n, args: list) -> relax.Expr:
    """`n` lowered as the primitive ops of its decomposition, each by its own rule; the last one unbound."""
    env = {id(v): x for v, x in zip(n.inputs, args) if v is not None}
    subs = decompose(n)
    for sub in subs[:-1]:
        env[id(sub.output)] = L.bb.emit(RULES[sub.op](L, sub, [_arg(L, env, v) for v in sub.inputs]))
    return RULES[subs[-1].op](L, subs[-1], [_arg(L, env, v) for v in subs[-1].inputs])


def _arg(L, env: dict, v):
    if v is None:
        return None
    if id(v) not in env:
        env[id(v)] = L.const(v.const)
    return env[id(v)]
