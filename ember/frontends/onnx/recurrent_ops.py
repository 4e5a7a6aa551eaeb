"""ONNX's recurrent layers (RNN, GRU, LSTM) unrolled over their static sequence length: one matmul projects
every step's input at once, then each step is a matmul of the hidden state and the gates' elementwise math.
Keyword-spotting and sensor models are where these run on small devices, with short, fixed sequences."""

from __future__ import annotations

import numpy as np

from ember.errors import EmberError
from ember.frontends.onnx.importer import Importer
from ember.frontends.onnx.ops import onnx_op
from ember.ir import dtypes
from ember.ir.graph import Value

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
ACTIVATIONS = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}
# ONNX name: (Ember op, its parameters in the order activation_alpha/activation_beta give them, their defaults)
ACTIVATION_OPS = {
    "Sigmoid": ("sigmoid", (), ()),
    "Tanh": ("tanh", (), ()),
    "Relu": ("relu", (), ()),
    "HardSigmoid": ("hard_sigmoid", ("alpha", "beta"), (0.2, 0.5)),
    "LeakyRelu": ("leaky_relu", ("alpha",), (0.01,)),
}


class _Layer:
    """One recurrent node's operands and attributes, checked, in time-major form."""

    def __init__(self, m: Importer, n):
        self.m, self.n, self.op = m, n, n.op
        x, self.w, self.r = m.ins(n)[:3]
        if not x.is_static or x.rank != 3:
            raise EmberError(f"{n.op} needs a static rank-3 input, got {list(x.shape)}", hint="pass --input-shape")
        self.batch_major = n.attrs.get("layout", 0) == 1
        self.x = m.emit1("transpose", [x], {"perm": [1, 0, 2]}) if self.batch_major else x
        self.steps, self.batch = self.x.shape[:2]
        self.hidden = n.attrs["hidden_size"]
        direction = n.attrs.get("direction", "forward")
        direction = direction.decode() if isinstance(direction, bytes) else direction
        self.directions = {"forward": [False], "reverse": [True], "bidirectional": [False, True]}[direction]
        self.clip = n.attrs.get("clip")
        if n.attrs.get("input_forget", 0):
            raise EmberError("LSTM input_forget=1 is not supported")
        lens = m.const(n, 4, f"{n.op} sequence_lens")
        if lens is not None and np.any(np.asarray(lens) != self.steps):
            raise EmberError(f"{n.op} sequence_lens other than the full length {self.steps} are not supported")
        self.activations = _activations(n, len(self.directions))

    def pick(self, v: Value | None, d: int) -> Value | None:
        """Direction d's slice of a per-direction operand (W, R, B, initial states, peepholes)."""
        if v is None:
            return None
        return self.m.emit1("gather", [v, self.m.int_array(d, "direction")])

    def initial(self, i: int, d: int) -> Value:
        """Direction d's initial hidden (i=5) or cell (i=6) state: the operand, or zeros."""
        given = self.pick(self.m.inp(self.n, i), d)
        zeros = np.zeros((self.batch, self.hidden), dtypes.to_numpy(self.x.dtype))
        return given if given is not None else self.m.graph.add_constant(zeros, "zeros")

    def act(self, which: int, d: int, v: Value, clipped: bool = True) -> Value:
        """Direction d's activation `which` of v, v clipped first when the layer has a clip (onnxruntime clips the
        gates' inputs, not the LSTM cell state that the output activation reads)."""
        if self.clip is not None and clipped:
            v = self.m.emit1("clip", [v], {"min": -self.clip, "max": self.clip})
        op, attrs = self.activations[d][which]
        return self.m.emit1(op, [v], attrs)


def _activations(n, directions: int) -> list[list[tuple[str, dict]]]:
    """Per direction, each activation as an Ember op and its attributes."""
    names = [a.decode() if isinstance(a, bytes) else a for a in n.attrs.get("activations", [])]
    names = names or ACTIVATIONS[n.op] * directions
    alphas, betas = list(n.attrs.get("activation_alpha", [])), list(n.attrs.get("activation_beta", []))
    out = []
    for name in names:
        if name not in ACTIVATION_OPS:
            raise EmberError(
                f"{n.op} activation {name} is not supported", hint=f"supported: {', '.join(ACTIVATION_OPS)}"
            )
        op, params, defaults = ACTIVATION_OPS[name]
        given = {"alpha": alphas.pop(0) if "alpha" in params and alphas else None}
        given["beta"] = betas.pop(0) if "beta" in params and betas else None
        out.append((op, {p: given[p] if given[p] is not None else dflt for p, dflt in zip(params, defaults)}))
    per = len(ACTIVATIONS[n.op])
    return [out[i * per : (i + 1) * per] for i in range(directions)]


def _projected(layer: _Layer, d: int) -> tuple[Value, Value, Value | None]:
    """For direction d: every step's input times W^T plus the biases, [T, B, G*H], R^T [H, G*H], and for a GRU
    R's bias [G*H] (or None), kept apart since a GRU adds it inside the reset gate."""
    m, gates = layer.m, GATES[layer.op] * layer.hidden
    w_t = m.emit1("transpose", [layer.pick(layer.w, d)], {"perm": [1, 0]})
    r_t = m.emit1("transpose", [layer.pick(layer.r, d)], {"perm": [1, 0]})
    xw = m.emit1("matmul", [layer.x, w_t])
    b = m.inp(layer.n, 3)
    if b is None:
        return xw, r_t, None
    wb, rb = m.emit("split", [layer.pick(b, d)], {"axis": 0, "sizes": [gates] * 2})
    if layer.op == "GRU":
        return _plus(m, xw, wb), r_t, rb
    return _plus(m, xw, m.emit1("add", [wb, rb])), r_t, None


def _gru_recurrence(m: Importer, r_t: Value, rb: Value | None, hid: int) -> list:
    """What an unrolled GRU step reads: R^T split at its candidate gate, and R's bias in thirds (or None)."""
    rz_t, rh_t = m.emit("split", [r_t], {"axis": 1, "sizes": [2 * hid, hid]})
    return [rz_t, rh_t, None if rb is None else m.emit("split", [rb], {"axis": 0, "sizes": [hid] * 3})]


def _plus(m: Importer, v: Value, bias: Value | None) -> Value:
    return v if bias is None else m.emit1("add", [v, bias])


def _step(layer: _Layer, d: int, xw_t: Value, rec: list, h: Value, c: Value | None, peep) -> tuple[Value, Value]:
    """One step's hidden state (and LSTM cell state) from the projected input xw_t, [B, G*H]."""
    m, hid = layer.m, layer.hidden
    if layer.op == "GRU":
        return _gru_step(layer, d, xw_t, *rec, h), None
    gates = m.emit1("add", [xw_t, m.emit1("matmul", [h, rec[0]])])
    if layer.op == "RNN":
        return layer.act(0, d, gates), None
    i, o, f, g = _columns(m, gates, hid, 4)
    if peep is not None:
        pi, po, pf = peep
        i, f = m.emit1("add", [i, m.emit1("mul", [pi, c])]), m.emit1("add", [f, m.emit1("mul", [pf, c])])
    i, f, g = layer.act(0, d, i), layer.act(0, d, f), layer.act(1, d, g)
    c = m.emit1("add", [m.emit1("mul", [f, c]), m.emit1("mul", [i, g])])
    if peep is not None:
        o = m.emit1("add", [o, m.emit1("mul", [po, c])])
    return m.emit1("mul", [layer.act(0, d, o), layer.act(2, d, c, clipped=False)]), c


def _gru_step(layer: _Layer, d: int, xw_t: Value, rz_t: Value, rh_t: Value, rb: list | None, h: Value) -> Value:
    """GRU's step: xw_t holds W's bias only; R's bias (rb, in thirds) is added here, inside the reset gate when
    linear_before_reset."""
    m, hid = layer.m, layer.hidden
    xz, xr, xh = _columns(m, xw_t, hid, 3)
    hz, hr = _columns(m, m.emit1("matmul", [h, rz_t]), hid, 2)
    if rb is not None:
        hz, hr = m.emit1("add", [hz, rb[0]]), m.emit1("add", [hr, rb[1]])
    z = layer.act(0, d, m.emit1("add", [xz, hz]))
    r = layer.act(0, d, m.emit1("add", [xr, hr]))
    if layer.n.attrs.get("linear_before_reset", 0):
        hh = m.emit1("matmul", [h, rh_t])
        hh = m.emit1("mul", [r, hh if rb is None else m.emit1("add", [hh, rb[2]])])
    else:
        hh = m.emit1("matmul", [m.emit1("mul", [r, h]), rh_t])
        hh = hh if rb is None else m.emit1("add", [hh, rb[2]])
    cand = layer.act(1, d, m.emit1("add", [xh, hh]))
    one = m.scalar(1.0, h)
    return m.emit1("add", [m.emit1("mul", [m.emit1("sub", [one, z]), cand]), m.emit1("mul", [z, h])])


def _columns(m: Importer, v: Value, width: int, count: int) -> list[Value]:
    """v's `count` column blocks of `width`, [B, width] each, as slices: each fuses into the step's elementwise
    kernel that reads it, where a split would be a kernel of its own every step."""
    bounds = [[m.int_array([k * width], "starts"), m.int_array([(k + 1) * width], "ends")] for k in range(count)]
    return [m.emit1("slice", [v, *b, m.int_array([1], "axes")]) for b in bounds]


DEFAULT_ACTIVATIONS = {"LSTM": [("sigmoid", {}), ("tanh", {}), ("tanh", {})], "GRU": [("sigmoid", {}), ("tanh", {})]}


def _one_op(layer: _Layer, n) -> bool:
    """Whether the layer runs as Ember's `lstm` or `gru` op: the default activations, no clip, no peepholes,
    and no reader of an LSTM's final cell state (the ops' only output is the hidden states)."""
    plain = n.op in DEFAULT_ACTIVATIONS and layer.clip is None and (n.op == "GRU" or layer.m.inp(n, 7) is None)
    cell_read = n.op == "LSTM" and len(n.outputs) > 2 and n.outputs[2].name in layer.m.read
    return plain and not cell_read and all(a == DEFAULT_ACTIVATIONS[n.op] for a in layer.activations)


def _step_bounds(m: Importer, t: int) -> list[Value]:
    return [m.int_array([t], "starts"), m.int_array([t + 1], "ends"), m.int_array([0], "axes")]


@onnx_op("RNN", "GRU", "LSTM")
def _recurrent(m, n):
    layer = _Layer(m, n)
    ys, hs, cs = [], [], []
    for d, reverse in enumerate(layer.directions):
        xw, r_t, rb = _projected(layer, d)
        h = layer.initial(5, d)
        c = layer.initial(6, d) if n.op == "LSTM" else None
        if _one_op(layer, n):
            if n.op == "LSTM":
                y = m.emit1("lstm", [xw, r_t, h, c], {"reverse": int(reverse)})
            else:
                lbr = n.attrs.get("linear_before_reset", 0)
                y = m.emit1("gru", [xw, r_t, rb, h], {"reverse": int(reverse), "linear_before_reset": lbr})
            last = m.emit1("slice", [y, *_step_bounds(m, 0 if reverse else layer.steps - 1)])
            ys.append(y)
            hs.append(last)
            continue
        p = layer.pick(m.inp(n, 7), d) if n.op == "LSTM" else None
        peep = m.emit("split", [p], {"axis": 0, "sizes": [layer.hidden] * 3}) if p is not None else None
        outs = [None] * layer.steps
        per_step = m.emit("split", [xw], {"axis": 0, "sizes": [1] * layer.steps})  # one kernel, not one a step
        rec = _gru_recurrence(m, r_t, rb, layer.hidden) if n.op == "GRU" else [r_t]
        for t in reversed(range(layer.steps)) if reverse else range(layer.steps):
            xw_t = m.emit1("squeeze", [per_step[t]], {"axes": [0]})
            h, c = _step(layer, d, xw_t, rec, h, c, peep)
            outs[t] = m.emit1("unsqueeze", [h], {"axes": [0]})
        ys.append(m.emit1("concat", outs, {"axis": 0}) if len(outs) > 1 else outs[0])
        hs.append(m.emit1("unsqueeze", [h], {"axes": [0]}))
        cs.append(m.emit1("unsqueeze", [c], {"axes": [0]}) if c is not None else None)
    y = _stacked(m, [m.emit1("unsqueeze", [v], {"axes": [1]}) for v in ys], 1)  # [T, D, B, H]
    y_h, y_c = _stacked(m, hs, 0), _stacked(m, cs, 0) if n.op == "LSTM" and cs else None  # [D, B, H]
    if layer.batch_major:
        y = m.emit1("transpose", [y], {"perm": [2, 0, 1, 3]})
        y_h = m.emit1("transpose", [y_h], {"perm": [1, 0, 2]})
        y_c = m.emit1("transpose", [y_c], {"perm": [1, 0, 2]}) if y_c is not None else None
    results = [v for v in (y, y_h, y_c) if v is not None][: len(n.outputs)]  # the lstm op has no cell state
    return [m.emit1("identity", [v], name=t.name or None) for v, t in zip(results, n.outputs)]


def _stacked(m: Importer, parts: list[Value], axis: int) -> Value:
    return parts[0] if len(parts) == 1 else m.emit1("concat", parts, {"axis": axis})
