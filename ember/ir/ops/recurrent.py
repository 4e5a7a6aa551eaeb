"""The LSTM and GRU layers' recurrences as ops: frontends project every step's input at once (a matmul) and hand
the sequence to `lstm` or `gru`, which backends run as one kernel looping over the steps; unrolled, a 49-step
keyword spotter was 145 kernels of about a microsecond each."""

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
    return _sequence_type(xw, r, 4, {"h0": h0, "c0": c0})


def _sequence_type(xw, r, gates: int, operands: dict) -> tuple:
    """y's type, [T, B, H], for projected inputs xw [T, B, G*H] and r [H, G*H]; `operands` (name: Value or None)
    must have their expected shapes: [B, H] for states, [G*H] for a bias."""
    if xw.rank != 3 or r.rank != 2 or xw.shape[-1] != r.shape[-1] or r.shape[-1] != gates * r.shape[0]:
        raise EmberError(f"xw {fmt(xw.shape)} and r {fmt(r.shape)} must be [T, B, {gates}H] and [H, {gates}H]")
    state = (xw.shape[1], r.shape[0])
    for name, v in operands.items():
        want = (r.shape[-1],) if name == "rb" else state
        if v is not None and tuple(v.shape) != want:
            raise EmberError(f"{name} {fmt(v.shape)} must be {fmt(want)}")
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


@op(
    "gru",
    "xw r rb? h0?",
    "hidden states y [T, B, H] of a GRU over the projected inputs xw [T, B, 3H] (x W^T plus W's bias) with "
    "recurrence weights r [H, 3H] (R^T) and R's bias rb [3H]; column blocks z, r, n (ONNX's order): "
    "z = sigmoid(xz + h Rz + bz), r = sigmoid(xr + h Rr + br), n = tanh(xn + (r h) Rn + bn), or with "
    "linear_before_reset=1 tanh(xn + r (h Rn + bn)) (torch's GRU); h = (1 - z) n + z h; h0 defaults to zeros",
    tags=("composite",),
    reverse=0,
    linear_before_reset=0,
)
def gru(ins, a):
    xw, r, rb, h0 = (ins + [None] * 2)[:4]
    return _sequence_type(xw, r, 3, {"rb": rb, "h0": h0})


@reference(gru)
def _gru(xw, r, rb, h0, a):
    steps, batch, hidden = xw.shape[0], xw.shape[1], r.shape[0]
    h = np.zeros((batch, hidden)) if h0 is None else h0.astype(np.float64)
    bz, br, bn = np.split(np.zeros(3 * hidden) if rb is None else rb.astype(np.float64), 3)
    rz, rr, rn = np.split(r.astype(np.float64), 3, axis=-1)
    y = np.empty((steps, batch, hidden))
    for t in reversed(range(steps)) if a["reverse"] else range(steps):
        xz, xr, xn = np.split(xw[t].astype(np.float64), 3, axis=-1)
        z, reset = _sigmoid(xz + h @ rz + bz), _sigmoid(xr + h @ rr + br)
        n = np.tanh(xn + (reset * (h @ rn + bn) if a["linear_before_reset"] else (reset * h) @ rn + bn))
        h = y[t] = (1 - z) * n + z * h
    return y.astype(xw.dtype)


def _gates_and_candidate(emit, v, hidden: int, axis: int) -> tuple:
    """v's z and r blocks together ([.., 2H]) and its n block ([.., H]) along `axis`."""
    return emit("slice", v, *_bounds(0, 2 * hidden, axis)), emit("slice", v, *_bounds(2 * hidden, hidden, axis))


@decomposition(gru)
def _decompose_gru(node: Node, emit) -> Value:
    xw, r, rb, h0 = (node.inputs + [None] * 2)[:4]
    steps, batch, hidden = xw.shape[0], xw.shape[1], r.shape[0]
    dtype = dtypes.to_numpy(xw.dtype)
    h = np.zeros((batch, hidden), dtype) if h0 is None else h0
    rz_r, rn = _gates_and_candidate(emit, r, hidden, 1)
    bzr, bn = _gates_and_candidate(emit, np.zeros(3 * hidden, dtype) if rb is None else rb, hidden, 0)
    outs: list = [None] * steps
    for t in reversed(range(steps)) if node.attrs["reverse"] else range(steps):
        xt = emit("squeeze", emit("slice", xw, *_bounds(t, 1, 0)), axes=[0])
        xzr, xn = _gates_and_candidate(emit, xt, hidden, 1)
        zr = emit("sigmoid", emit("add", xzr, emit("add", emit("matmul", h, rz_r), bzr)))
        z, reset = (emit("slice", zr, *_bounds(k * hidden, hidden, 1)) for k in range(2))
        if node.attrs["linear_before_reset"]:
            hn = emit("mul", reset, emit("add", emit("matmul", h, rn), bn))
        else:
            hn = emit("add", emit("matmul", emit("mul", reset, h), rn), bn)
        n = emit("tanh", emit("add", xn, hn))
        h = emit("add", emit("mul", emit("sub", np.ones((), dtype), z), n), emit("mul", z, h))
        outs[t] = emit("unsqueeze", h, axes=[0])
    return emit("concat", *outs, axis=0) if steps > 1 else emit("identity", outs[0])
