"""conv-transpose-to-conv: ConvTranspose layers (kernel sizes that tile, overlap and fall short of the stride,
pads, output_padding, groups, unequal strides) as one conv2d over their stride phases, against onnxruntime
through the interpreter after the pass and through host builds."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import ember
from ember import ir
from ember.frontends.onnx import load
from ember.passes import PassManager
from ember.passes.conv_transpose_to_conv import phase_weights
from tests.conftest import assert_close, make_model, ort_run

CASES = {  # (kernel, strides, pads, output_padding, group)
    "k2s2": ((2, 2), (2, 2), (0, 0, 0, 0), (0, 0), 1),
    "k2s2_outpad": ((2, 2), (2, 2), (0, 0, 0, 0), (1, 1), 1),  # the padding row and column past every phase
    "k4s2p1": ((4, 4), (2, 2), (1, 1, 1, 1), (0, 0), 1),
    "k3s2p1_outpad": ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1),
    "k1s2": ((1, 1), (2, 2), (0, 0, 0, 0), (1, 0), 1),
    "k3s1p1": ((3, 3), (1, 1), (1, 1, 1, 1), (0, 0), 1),
    "k5x3_s3x2_grouped": ((5, 3), (3, 2), (2, 0, 1, 1), (2, 1), 2),
    "k3s3_depthwise": ((3, 3), (3, 3), (0, 1, 2, 0), (0, 0), 4),
}


def _model(kernel, strides, pads, out_pad, group):
    gen = np.random.default_rng(4)
    inits = {
        "w": gen.standard_normal((4, 6 // group if group < 4 else 1, *kernel)).astype(np.float32),
        "b": gen.standard_normal(6 if group < 4 else 4).astype(np.float32),
    }
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=strides, pads=pads,
                            output_padding=out_pad, group=group)  # fmt: skip
    return make_model([node], [("x", [2, 4, 5, 7])], [("y", None)], inits, 13)


@pytest.mark.parametrize("case", sorted(CASES))
def test_transposed_conv_as_conv2d_matches_onnxruntime(case):
    model = _model(*CASES[case])
    feeds = {"x": np.random.default_rng(5).standard_normal((2, 4, 5, 7)).astype(np.float32)}
    want = ort_run(model, feeds)
    graph = load(model)
    PassManager(["conv-transpose-to-conv"], verify_each=True).run(graph)
    assert "conv2d_transpose" not in {n.op for n in graph.nodes}
    assert_close(ir.interpret(graph, feeds), want)
    art = ember.compile(model, "host")
    assert "conv2d_transpose" not in {n.op for n in art.graph.nodes}
    assert_close(art.run(feeds), want)


def test_phase_weights_interleave_every_stride_th_tap():
    """Phase (rh, rw) of output channel o reads taps rh + j * sh, reversed along j (a correlation)."""
    w = np.arange(2 * 3 * 4 * 3, dtype=np.float32).reshape(2, 3, 4, 3)
    got = phase_weights(w, (2, 2), 1)  # J = (2, 2): kw = 3 pads to 4 with a zero tap
    assert got.shape == (3 * 2 * 2, 2, 2, 2)
    o, rh, rw = 1, 1, 0
    channel = (o * 2 + rh) * 2 + rw
    np.testing.assert_array_equal(got[channel, :, :, 0], w[:, o, [3, 1], 2])
    np.testing.assert_array_equal(got[channel, :, :, 1], w[:, o, [3, 1], 0])
    assert not got[(o * 2 + rh) * 2 + 1, :, :, 0].any()  # rw = 1, j = 1: tap 3 is past the kernel
