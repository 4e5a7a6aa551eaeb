"""torch's LSTM (aten.lstm.input, kept whole by `decompose` when nothing reads its final cell state) as Ember
`lstm` ops: per layer and direction, one matmul projects every step's input, then one lstm op runs the steps;
torch's gates (i, f, g, o) are reordered to ONNX's (i, o, f, c), which the op takes."""

from __future__ import annotations

import operator

from torch import fx

from ember.errors import EmberError
from ember.frontends.torch.ops import aten
from ember.ir.graph import Value

TORCH_TO_ONNX_GATES = (0, 3, 1, 2)  # i, f, g, o -> i, o, f, g
PARAMS = 4  # w_ih, w_hh, b_ih, b_hh per layer and direction (with biases)


def keeps_lstm_whole(node: fx.Node) -> bool:
    """Whether an aten.lstm.input call maps onto `lstm` ops: its final cell state (output 2) has no reader and
    it has no projection (proj_size, a fifth parameter per layer and direction)."""
    args = node.args
    per_direction = len(args[2]) // (args[4] * (2 if args[7] else 1))
    reads_cell = any(u.target is operator.getitem and u.args[1] == 2 and u.users for u in node.users)
    return per_direction == (PARAMS if args[3] else PARAMS - 2) and not reads_cell


def _gate_rows(m, w: Value) -> Value:
    """w's four row blocks of H (torch's gate order) in ONNX's order."""
    hidden = w.shape[0] // 4
    rows = [g * hidden + j for g in TORCH_TO_ONNX_GATES for j in range(hidden)]
    return m.emit1("gather", [w, m.int_array(rows, "gate_rows")], {"axis": 0})


def _direction(m, x: Value, params: list, biased: bool, h0: Value, c0: Value, reverse: bool) -> Value:
    """One direction of one layer: y [T, B, H] for a time-major x."""
    w_ih, w_hh = (_gate_rows(m, w) for w in params[:2])
    xw = m.emit1("matmul", [x, m.emit1("transpose", [w_ih], {"perm": [1, 0]})])
    if biased:
        xw = m.emit1("add", [xw, _gate_rows(m, m.emit1("add", params[2:4]))])
    r = m.emit1("transpose", [w_hh], {"perm": [1, 0]})
    return m.emit1("lstm", [xw, r, h0, c0], {"reverse": int(reverse)})


@aten("lstm.input")
def _lstm(m, a):
    x, (h0, c0), params = a["input"], a["hx"], a["params"]
    layers, directions = a["num_layers"], 2 if a["bidirectional"] else 1
    if x.rank != 3:
        raise EmberError(f"LSTM needs a batched [B, T, I] or [T, B, I] input, got {list(x.shape)}")
    x = m.emit1("transpose", [x], {"perm": [1, 0, 2]}) if a["batch_first"] else x
    steps = x.shape[0]
    per = len(params) // (layers * directions)
    finals = []
    for layer in range(layers):
        outs = []
        for d in range(directions):
            k = layer * directions + d
            index = m.int_array(k, "state")
            state = [m.emit1("gather", [s, index], {"axis": 0}) for s in (h0, c0)]
            y = _direction(m, x, params[k * per : (k + 1) * per], a["has_biases"], *state, reverse=d == 1)
            starts, ends = ([0], [1]) if d == 1 else ([steps - 1], [steps])
            finals.append(m.emit1("slice", [y, m.int_array(starts), m.int_array(ends), m.int_array([0])]))
            outs.append(y)
        x = outs[0] if directions == 1 else m.emit1("concat", outs, {"axis": 2})
    y = m.emit1("transpose", [x], {"perm": [1, 0, 2]}) if a["batch_first"] else x
    h_n = finals[0] if len(finals) == 1 else m.emit1("concat", finals, {"axis": 0})
    return [y, h_n, None]
