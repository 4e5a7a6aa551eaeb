"""The LSTM layer's recurrence as one op: frontends project every step's input at once (a matmul) and hand the
sequence to `lstm`, which backends run as one kernel looping over the steps; unrolled, a 49-step keyword
spotter was 145 kernels of about a microsecond each."""

from __future__ import annotations

import numpy as np

from ember.errors import EmberError
from ember.ir import dtypes
from ember.ir.graph import Node, Value
from ember.ir.ops.registry import decomposition, op, reference
from ember.ir.ops.shapes import fmt


@op(
    "lstm",
    "xw r h0? c0?",
    "hidden states y [T, B, H] of an LSTM over the projected inputs xw [T, B, 4H] (x W^T plus both biases) with "
    "recurrence weights r [H, 4H] (R^T); each step's gates xw[t] + h r are column blocks i, o, f, c (ONNX's "
    "order): c = sigmoid(f) c + sigmoid(i) tanh(c~), h = sigmoid(o) tanh(c); h0, c0 [B, H] default to zeros; "
    "reverse=1 runs from the last step to the first",
    tags=("composite",),
    reverse=0,
)
def lstm(ins, a):
    xw, r, h0, c0 = (ins + [None] * 2)[:4]
    if xw.rank != 3 or r.rank != 2 or xw.shape[-1] != r.shape[-1] or r.shape[-1] != 4 * r.shape[0]:
        raise EmberError(f"xw {fmt(xw.shape)} and r {fmt(r.shape)} must be [T, B, 4H] and [H, 4H]")
    state = (xw.shape[1], r.shape[0])
    for name, v in (("h0", h0), ("c0", c0)):
        if v is not None and tuple(v.shape) != state:
            raise EmberError(f"{name} {fmt(v.shape)} must be [B, H] = {fmt(state)}")
    return (xw.shape[0], *state), xw.dtype


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


@reference(lstm)
def _lstm(xw, r, h0, c0, a):
    steps, batch, hidden = xw.shape[0], xw.shape[1], r.shape[0]
    h = np.zeros((batch, hidden)) if h0 is None else h0.astype(np.float64)
    c = np.zeros((batch, hidden)) if c0 is None else c0.astype(np.float64)
    y = np.empty((steps, batch, hidden))
    for t in reversed(range(steps)) if a["reverse"] else range(steps):
        i, o, f, g = np.split(xw[t] + h @ r.astype(np.float64), 4, axis=-1)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = y[t] = _sigmoid(o) * np.tanh(c)
    return y.astype(xw.dtype)


def _bounds(start: int, size: int, axis: int) -> list[np.ndarray]:
    return [np.array([v], np.int64) for v in (start, start + size, axis)]


@decomposition(lstm)
def _decompose_lstm(node: Node, emit) -> Value:
    xw, r, h0, c0 = (node.inputs + [None] * 2)[:4]
    steps, batch, hidden = xw.shape[0], xw.shape[1], r.shape[0]
    zeros = np.zeros((batch, hidden), dtypes.to_numpy(xw.dtype))
    h, c = (zeros if h0 is None else h0), (zeros if c0 is None else c0)
    order = reversed(range(steps)) if node.attrs["reverse"] else range(steps)
    outs: list = [None] * steps
    for t in order:
        xt = emit("squeeze", emit("slice", xw, *_bounds(t, 1, 0)), axes=[0])
        gates = emit("add", xt, emit("matmul", h, r))
        i, o, f, g = (emit("slice", gates, *_bounds(k * hidden, hidden, 1)) for k in range(4))
        c = emit("add", emit("mul", emit("sigmoid", f), c), emit("mul", emit("sigmoid", i), emit("tanh", g)))
        h = emit("mul", emit("sigmoid", o), emit("tanh", c))
        outs[t] = emit("unsqueeze", h, axes=[0])
    return emit("concat", *outs, axis=0) if steps > 1 else emit("identity", outs[0])
