"""ONNX RNN, GRU and LSTM: each against onnxruntime through the interpreter and a host build, with the options
the onnx package's own cases leave out (peepholes, initial states, clip, linear_before_reset, parameterized
activations), and a keyword-spotting LSTM as a whole model. Plain LSTMs and GRUs become Ember's `lstm` and `gru`
ops (one kernel each); the rest unroll over their sequence. (Batch-major layouts and the plain forms are in the
onnx package's cases: tests/frontends/test_onnx_node_cases.py.)"""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import ember
from ember import ir
from ember.backends.tvm.build import count_kernels
from ember.frontends.onnx import load
from ember.models.blocks import kws_rnn
from tests.conftest import assert_close, ort_run

H = helper.make_node


def _model(node, inputs: dict[str, list[int]], weights: dict[str, np.ndarray], outputs: list[str]):
    graph = helper.make_graph(
        [node],
        "rnn",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, s) for k, s in inputs.items()],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [onnx.numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def _check(model, feeds):
    want = ort_run(model, feeds)
    graph = load(model)
    ir.verify(graph)
    assert_close(ir.interpret(graph, feeds), want)
    assert_close(ember.compile(model, "host").run(feeds), want)


def test_bidirectional_lstm_with_peepholes_initial_states_and_clip():
    rng = np.random.default_rng(0)
    d, hid, inp, batch, steps = 2, 4, 5, 2, 7
    w = {
        "W": rng.standard_normal((d, 4 * hid, inp)).astype(np.float32) * 0.5,
        "R": rng.standard_normal((d, 4 * hid, hid)).astype(np.float32) * 0.5,
        "B": rng.standard_normal((d, 8 * hid)).astype(np.float32) * 0.3,
        "P": rng.standard_normal((d, 3 * hid)).astype(np.float32) * 0.3,
    }
    node = H(
        "LSTM",
        ["X", "W", "R", "B", "", "h0", "c0", "P"],
        ["Y", "Y_h", "Y_c"],
        hidden_size=hid,
        direction="bidirectional",
        clip=1.5,  # c0 ~ N(0, 1) passes it: onnxruntime clips the gates' inputs only, not the cell state
    )
    model = _model(
        node, {"X": [steps, batch, inp], "h0": [d, batch, hid], "c0": [d, batch, hid]}, w, ["Y", "Y_h", "Y_c"]
    )
    feeds = {
        "X": rng.standard_normal((steps, batch, inp)).astype(np.float32),
        "h0": rng.standard_normal((d, batch, hid)).astype(np.float32),
        "c0": rng.standard_normal((d, batch, hid)).astype(np.float32),
    }
    _check(model, feeds)


@pytest.mark.parametrize("linear_before_reset", [0, 1])
def test_gru_with_hard_sigmoid_gates_and_clip(linear_before_reset):
    rng = np.random.default_rng(1)
    hid, inp, batch, steps = 6, 3, 2, 5
    w = {
        "W": rng.standard_normal((1, 3 * hid, inp)).astype(np.float32) * 0.5,
        "R": rng.standard_normal((1, 3 * hid, hid)).astype(np.float32) * 0.5,
        "B": rng.standard_normal((1, 6 * hid)).astype(np.float32) * 0.3,
    }
    node = H(
        "GRU",
        ["X", "W", "R", "B"],
        ["Y", "Y_h"],
        hidden_size=hid,
        clip=1.0,
        linear_before_reset=linear_before_reset,
        activations=["HardSigmoid", "Tanh"],
        activation_alpha=[0.25],
        activation_beta=[0.4],
    )
    model = _model(node, {"X": [steps, batch, inp]}, w, ["Y", "Y_h"])
    _check(model, {"X": rng.standard_normal((steps, batch, inp)).astype(np.float32)})


def test_keyword_spotting_lstm_matches_onnxruntime_as_one_lstm_kernel():
    """Unrolled, its 49 steps were 145 kernels of about a microsecond each (1.9x onnxruntime's time)."""
    rng = np.random.default_rng(2)
    model = kws_rnn(rng=rng)
    _check(model, {"mfcc": rng.standard_normal((1, 49, 10)).astype(np.float32)})
    art = ember.compile(model, "host")
    assert [n.op for n in art.graph.nodes].count("lstm") == 1
    assert count_kernels(art.executable) <= 4  # projection, lstm, the last step, classifier


def _plain_layer(op: str, direction: str, outputs: list[str], **attrs):
    """An ONNX LSTM or GRU node with biases and initial states, and feeds for it."""
    rng = np.random.default_rng(4)
    d, hid, inp, batch, steps = 2 if direction == "bidirectional" else 1, 8, 5, 3, 6
    gates = {"LSTM": 4, "GRU": 3}[op]
    w = {
        "W": rng.standard_normal((d, gates * hid, inp)).astype(np.float32) * 0.5,
        "R": rng.standard_normal((d, gates * hid, hid)).astype(np.float32) * 0.5,
        "B": rng.standard_normal((d, 2 * gates * hid)).astype(np.float32) * 0.3,
    }
    states = ["h0", "c0"] if op == "LSTM" else ["h0"]
    node = H(op, ["X", "W", "R", "B", "", *states], outputs, hidden_size=hid, direction=direction, **attrs)
    shapes = {"X": [steps, batch, inp]} | {s: [d, batch, hid] for s in states}
    feeds = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    return _model(node, shapes, w, [o for o in outputs if o]), feeds


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_plain_lstm_runs_as_the_lstm_op_in_each_direction(direction):
    model, feeds = _plain_layer("LSTM", direction, ["Y", "Y_h"])
    _check(model, feeds)
    assert [n.op for n in load(model).nodes].count("lstm") == (2 if direction == "bidirectional" else 1)


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("linear_before_reset", [0, 1])
def test_plain_gru_runs_as_the_gru_op(direction, linear_before_reset):
    model, feeds = _plain_layer("GRU", direction, ["Y", "Y_h"], linear_before_reset=linear_before_reset)
    _check(model, feeds)
    assert [n.op for n in load(model).nodes].count("gru") == (2 if direction == "bidirectional" else 1)


@pytest.mark.parametrize(
    "outputs, attrs",
    [(["Y", "Y_h", "Y_c"], {}), (["Y", ""], {"clip": 2.0}), (["Y"], {"activations": ["Sigmoid", "Tanh", "Relu"]})],
    ids=["cell-state-read", "clip", "relu-output"],
)
def test_lstm_the_op_does_not_cover_unrolls(outputs, attrs):
    model, feeds = _plain_layer("LSTM", "forward", outputs, **attrs)
    _check(model, feeds)
    assert "lstm" not in [n.op for n in load(model).nodes]


RECURRENT_OPS = """graph @g(%xw: {t}[5,2,12], %r: {t}[3,12], %h: {t}[2,3], %gx: {t}[4,2,9], %gr: {t}[3,9],
    %gb: {t}[9]) -> (%y, %g) {{
  %y = lstm(%xw, %r, %h) {{reverse=1}} : {t}[5,2,3]
  %g = gru(%gx, %gr, %gb, %h) : {t}[4,2,3]
  return %y, %g
}}"""


def test_fp16_lstm_and_gru_build_from_the_ops_decompositions():
    """The kernels are float32; other dtypes (and GPU targets) lower the ops' unrolled decompositions."""
    graph = ir.parse_graph(RECURRENT_OPS.format(t="f16"))
    rng = np.random.default_rng(6)
    feeds = {v.name: rng.standard_normal(v.shape).astype(np.float16) for v in graph.inputs}
    got = ember.compile(graph, "host").run(feeds)
    for name, want in ir.interpret(graph, feeds).items():
        np.testing.assert_allclose(got[name].astype(np.float32), want.astype(np.float32), rtol=5e-3, atol=5e-3)


def test_sequence_lengths_shorter_than_the_input_are_refused_at_the_node():
    rng = np.random.default_rng(3)
    w = {
        "W": rng.standard_normal((1, 4, 3)).astype(np.float32),
        "R": rng.standard_normal((1, 4, 4)).astype(np.float32),
        "lens": np.array([5, 3], np.int32),
    }
    node = H("RNN", ["X", "W", "R", "", "lens"], ["Y"], hidden_size=4, name="rnn0")
    model = _model(node, {"X": [5, 2, 3]}, w, ["Y"])
    with pytest.raises(ember.EmberError, match=r"node 'rnn0' \(RNN\): RNN sequence_lens other than the full length 5"):
        load(model)


@pytest.mark.skipif(not shutil.which("nvcc"), reason="nvcc missing")
def test_lstm_and_gru_build_for_a_cuda_target_from_their_decompositions():
    art = ember.compile(ir.parse_graph(RECURRENT_OPS.format(t="f32")), "nvidia/jetson-orin-nano")
    assert count_kernels(art.executable) > 9  # step by step


def test_a_kernel_that_fails_to_parse_is_reported_by_its_error_line(monkeypatch):
    """TVMScript's diagnostics end with the quoted source and a caret line, which the error used to show."""
    from ember.backends.tvm import recurrent_rules

    def broken(*args):
        source = " --> rules.py:38:17\n |\n 38 | T.reads()\n | ^^^^"
        raise ValueError(f"error: ValueError: Duplicate read region declaration\n{source}")

    monkeypatch.setattr(recurrent_rules, "lstm_kernel", broken)
    model, _ = _plain_layer("LSTM", "forward", ["Y"])
    with pytest.raises(ember.EmberError, match=r"lowering: ValueError: Duplicate read region declaration$"):
        ember.compile(model, "host")
