"""ONNX RNN, GRU and LSTM, unrolled over their sequence: each against onnxruntime through the interpreter and a
host build, with the options the onnx package's own cases leave out (peepholes, initial states, clip,
linear_before_reset, parameterized activations), and a keyword-spotting LSTM as a whole model. (Batch-major
layouts and the plain forms are in the onnx package's cases: tests/frontends/test_onnx_node_cases.py.)"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import ember
from ember import ir
from ember.frontends.onnx import load
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


def keyword_lstm(rng: np.random.Generator, frames: int = 49, mfcc: int = 10, hidden: int = 64, classes: int = 12):
    """An LSTM keyword spotter (the "Hello Edge" LSTM-S shape): MFCC frames -> LSTM -> last hidden -> classes,
    time-major as exporters write it (onnxruntime has no batch-major LSTM)."""
    w = {
        "W": rng.standard_normal((1, 4 * hidden, mfcc)).astype(np.float32) * 0.2,
        "R": rng.standard_normal((1, 4 * hidden, hidden)).astype(np.float32) * 0.2,
        "B": rng.standard_normal((1, 8 * hidden)).astype(np.float32) * 0.1,
        "fc": rng.standard_normal((hidden, classes)).astype(np.float32) * 0.2,
        "shape": np.array([1, hidden], np.int64),
    }
    nodes = [
        H("Transpose", ["x"], ["frames"], perm=[1, 0, 2]),
        H("LSTM", ["frames", "W", "R", "B"], ["", "h"], hidden_size=hidden),
        H("Reshape", ["h", "shape"], ["last"]),
        H("MatMul", ["last", "fc"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "kws_lstm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, frames, mfcc])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])],
        [onnx.numpy_helper.from_array(v, k) for k, v in w.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def test_keyword_spotting_lstm_matches_onnxruntime():
    rng = np.random.default_rng(2)
    model = keyword_lstm(rng)
    _check(model, {"x": rng.standard_normal((1, 49, 10)).astype(np.float32)})


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
