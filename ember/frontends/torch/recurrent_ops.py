"""torch's LSTM and GRU (aten.lstm.input, kept whole by `decompose` when nothing reads its final cell state, and
aten.gru.input) as Ember `lstm` and `gru` ops: per layer and direction, one matmul projects every step's input,
then one op runs the steps. torch's gates are reordered to ONNX's, which the ops take; torch's GRU applies the
reset gate after the recurrent matmul (ONNX's linear_before_reset=1)."""

from __future__ import annotations

import operator

from torch import fx

from ember.errors import EmberError
from ember.frontends.torch.importer import bind
from ember.frontends.torch.ops import aten
from ember.ir.graph import Value

ONNX_GATE_ORDER = {"lstm": (0, 3, 1, 2), "gru": (1, 0, 2)}  # torch's i, f, g, o and r, z, n blocks
PARAMS = 4  # w_ih, w_hh, b_ih, b_hh per layer and direction (with biases)


def keeps_lstm_whole(node: fx.Node) -> bool:
    """Whether an aten.lstm.input call maps onto `lstm` ops: its final cell state (output 2) has no reader and
    it has no projection (proj_size, a fifth parameter per layer and direction)."""
    a = bind(node)
    per_direction = len(a["params"]) // (a["num_layers"] * (2 if a["bidirectional"] else 1))
    reads_cell = any(u.target is operator.getitem and u.args[1] == 2 and u.users for u in node.users)
    return per_direction == (PARAMS if a["has_biases"] else PARAMS - 2) and not reads_cell


def _gate_rows(m, w: Value, op: str) -> Value:
    """w's row blocks of H (torch's gate order) in ONNX's order."""
    order = ONNX_GATE_ORDER[op]
    hidden = w.shape[0] // len(order)
    rows = [g * hidden + j for g in order for j in range(hidden)]
    return m.emit1("gather", [w, m.int_array(rows, "gate_rows")], {"axis": 0})


def _direction(m, op: str, x: Value, params: list, states: list[Value], reverse: bool) -> Value:
    """One direction of one layer: y [T, B, H] for a time-major x."""
    w_ih, w_hh, *biases = (_gate_rows(m, w, op) for w in params)
    xw = m.emit1("matmul", [x, m.emit1("transpose", [w_ih], {"perm": [1, 0]})])
    r = m.emit1("transpose", [w_hh], {"perm": [1, 0]})
    if op == "lstm":
        xw = m.emit1("add", [xw, m.emit1("add", biases)]) if biases else xw
        return m.emit1("lstm", [xw, r, *states], {"reverse": int(reverse)})
    xw = m.emit1("add", [xw, biases[0]]) if biases else xw
    attrs = {"reverse": int(reverse), "linear_before_reset": 1}
    return m.emit1("gru", [xw, r, biases[1] if biases else None, *states], attrs)


def _recurrent(m, a, op: str, states: list[Value]) -> list:
    """(y, h_n) of a torch LSTM or GRU call; `states` are its initial states, [layers * directions, B, H]."""
    x, params, layers, directions = a["input"], a["params"], a["num_layers"], 2 if a["bidirectional"] else 1
    if x.rank != 3:
        raise EmberError(f"{op.upper()} needs a batched [B, T, I] or [T, B, I] input, got {list(x.shape)}")
    x = m.emit1("transpose", [x], {"perm": [1, 0, 2]}) if a["batch_first"] else x
    steps, per = x.shape[0], len(params) // (layers * directions)
    finals = []
    for layer in range(layers):
        outs = []
        for d in range(directions):
            k = layer * directions + d
            picked = [m.emit1("gather", [s, m.int_array(k, "state")], {"axis": 0}) for s in states]
            y = _direction(m, op, x, params[k * per : (k + 1) * per], picked, reverse=d == 1)
            starts, ends = ([0], [1]) if d == 1 else ([steps - 1], [steps])
            finals.append(m.emit1("slice", [y, m.int_array(starts), m.int_array(ends), m.int_array([0])]))
            outs.append(y)
        x = outs[0] if directions == 1 else m.emit1("concat", outs, {"axis": 2})
    y = m.emit1("transpose", [x], {"perm": [1, 0, 2]}) if a["batch_first"] else x
    return [y, finals[0] if len(finals) == 1 else m.emit1("concat", finals, {"axis": 0})]


@aten("lstm.input")
def _lstm(m, a):
    return [*_recurrent(m, a, "lstm", list(a["hx"])), None]


@aten("gru.input")
def _gru(m, a):
    return _recurrent(m, a, "gru", [a["hx"]])
