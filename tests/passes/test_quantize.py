"""Post-training int8 quantization of a trained CNN through the interpreter: accuracy kept by each calibration
method, the int8 chain between layers, weight bytes, skipped layers, float epilogues, and the scheme arithmetic."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from ember import ir
from ember.frontends.onnx import load
from ember.ir.graph import Graph
from ember.passes import PassManager, parse_pipeline
from ember.passes.quantize import quantize_graph, scheme_for_target, target_features
from ember.passes.quantize.rewrite import fold_output_dequantize
from ember.passes.quantize.scheme import Scheme, activation_qparams, fixed_point
from tests.passes.quant_models import cnn_onnx, samples

CALIBRATION = samples(48, seed=2)
EVALUATION = samples(160, seed=3)


def optimized_cnn() -> Graph:
    """The trained CNN after Ember's -O2 pipeline in NHWC, as ember.compile quantizes it for a CPU."""
    graph = load(cnn_onnx())
    PassManager(parse_pipeline(2) + ["convert-to-nhwc", "canonicalize"]).run(graph)
    return graph


@pytest.mark.parametrize("method, min_db", [("minmax", 25.0), ("percentile", 25.0), ("entropy", 25.0)])
def test_trained_cnn_keeps_accuracy(method, min_db):
    graph = optimized_cnn()
    report = quantize_graph(graph, CALIBRATION, arch="x86_64", method=method, evaluation=EVALUATION, progress=False)
    assert report.outputs["logits"] >= min_db, report.outputs
    assert report.top1_agreement >= 0.99
    assert report.weight_bytes["int8"] <= 0.27 * report.weight_bytes["fp32"]
    assert [layer["name"] for layer in report.layers] == ["relu1", "relu6", "relu3", "fc2"]
    assert all(layer["sqnr_db"] >= 20 for layer in report.layers), report.layers
    ops = graph.op_counts()
    # one quantize at the input, none at the logits (the last dense writes them in float): pools, transpose and
    # flatten run on uint8
    assert (ops["qconv2d"], ops["qdense"], ops["quantize"], ops.get("dequantize", 0)) == (2, 2, 1, 0)
    assert graph.outputs[0].producer.op == "qdense" and graph.outputs[0].dtype == "f32"
    assert [n.output.dtype for n in graph.nodes if n.op in ("max_pool2d", "reshape")] == ["u8"] * 3
    assert [o["op"] for o in report.float_ops] == ["transpose"]  # the input's, to NHWC, before its quantize
    ir.verify(graph)


def test_weights_are_7_bit_on_x86_without_vnni_and_8_bit_on_aarch64():
    for arch, features, bound, act in [("x86_64", ["znver3"], 63, "u8"), ("aarch64", ["+neon"], 127, "i8")]:
        graph = optimized_cnn()
        quantize_graph(graph, CALIBRATION[:8], arch=arch, features=features, evaluation=EVALUATION[:4], progress=False)
        weights = [n.inputs[1].const for n in graph.nodes if n.op in ("qconv2d", "qdense")]
        assert max(int(np.abs(w.astype(np.int32)).max()) for w in weights) == bound
        assert {n.attrs["dtype"] for n in graph.nodes if n.op == "quantize"} == {act}


def test_per_tensor_weights_and_skip_ops():
    graph = optimized_cnn()
    report = quantize_graph(
        graph, CALIBRATION, arch="aarch64", per_channel=False, skip_ops=("fc2",), evaluation=EVALUATION, progress=False
    )
    assert report.outputs["logits"] >= 25 and report.top1_agreement >= 0.99
    assert all(len(n.attrs["multiplier"]) == 1 for n in graph.nodes if n.op in ("qconv2d", "qdense"))
    assert {"name": "fc2", "op": "dense", "reason": "skipped (--skip-ops)"} in report.float_ops
    assert [layer["name"] for layer in report.layers] == ["relu1", "relu6", "relu3"]


def residual_graph(activation: str = "silu") -> Graph:
    """conv -> conv + residual -> activation (silu: an epilogue that out_min/out_max cannot hold)."""
    rng = np.random.default_rng(0)
    g = Graph()
    x = g.add_input("x", (1, 8, 8, 4))
    w1 = g.add_constant(rng.normal(0, 0.3, (3, 3, 4, 4)).astype(np.float32), "w1")
    w2 = g.add_constant(rng.normal(0, 0.3, (1, 1, 4, 4)).astype(np.float32), "w2")
    b = g.add_constant(rng.normal(0, 0.1, 4).astype(np.float32), "b")
    a = g.emit("fused_conv2d", x, w1, b, name="c1", pads=(1, 1, 1, 1), layout="NHWC", activation="relu")
    y = g.emit("fused_conv2d", a, w2, b, x, name="c2", layout="NHWC", activation=activation)
    g.outputs = [y]
    return g


def test_residual_and_silu_stay_float_after_the_integer_layer():
    graph = residual_graph()
    feeds = [{"x": np.random.default_rng(i).normal(0, 1, (1, 8, 8, 4)).astype(np.float32)} for i in range(16)]
    report = quantize_graph(graph, feeds, arch="aarch64", method="minmax", progress=False)
    c2 = next(layer for layer in report.layers if layer["name"] == "c2")
    assert c2["float_epilogue"] == ["residual", "silu"]
    assert [n.op for n in graph.nodes] == ["quantize", "qconv2d", "qconv2d", "add", "silu"]
    assert graph.nodes[2].output.dtype == "f32"  # the dequantize before the float epilogue is folded in
    assert report.outputs[graph.outputs[0].name] >= 25


def test_residual_add_and_relu_run_on_integers():
    """The residual add after an integer layer is a qadd into the layer's output range (relu in its clamp), the
    residual quantized once (the input's quantize serves both), and the result stays int8 for the next layer."""
    graph = residual_graph("relu")
    w3 = graph.add_constant(np.random.default_rng(1).normal(0, 0.3, (3, 3, 4, 4)).astype(np.float32), "w3")
    y = graph.emit("fused_conv2d", graph.outputs[0], w3, name="c3", pads=(1, 1, 1, 1), layout="NHWC")
    graph.outputs = [y]
    feeds = [{"x": np.random.default_rng(i).normal(0, 1, (1, 8, 8, 4)).astype(np.float32)} for i in range(16)]
    report = quantize_graph(graph, feeds, arch="x86_64", method="minmax", progress=False)
    assert [n.op for n in graph.nodes] == ["quantize", "qconv2d", "qconv2d", "qadd", "qconv2d"]
    add = next(n for n in graph.nodes if n.op == "qadd")
    assert add.inputs[1] is graph.nodes[0].output and add.attrs["out_min"] == add.attrs["out_zero_point"]
    assert all(not layer["float_epilogue"] for layer in report.layers) and report.float_ops == []
    assert min(report.outputs.values()) >= 25 and report.layers[1]["sqnr_db"] >= 25, report


def test_low_sqnr_layer_is_named_with_the_skip_ops_fix(caplog):
    graph = residual_graph()
    calm = [{"x": np.random.default_rng(i).normal(0, 0.05, (1, 8, 8, 4)).astype(np.float32)} for i in range(4)]
    wild = [{"x": np.random.default_rng(i).normal(0, 5.0, (1, 8, 8, 4)).astype(np.float32)} for i in range(4)]
    with caplog.at_level(logging.WARNING, logger="ember.quantize"):
        report = quantize_graph(graph, calm, arch="aarch64", method="minmax", evaluation=wild, progress=False)
    assert report.warnings and "--skip-ops c1" in report.warnings[0]
    assert "layer 'c1' keeps only" in caplog.text


def test_scheme_for_target():
    assert scheme_for_target("x86_64", ["+avx2"]) == Scheme("u8", 63)
    assert scheme_for_target("x86_64", ["+avx512vnni"]) == Scheme("u8", 127)
    assert scheme_for_target("x86_64", "+avx_vnni") == Scheme("u8", 127)
    assert scheme_for_target("aarch64", ["+neon", "+dotprod"]) == Scheme("i8", 127)
    assert scheme_for_target("riscv64") == Scheme("u8", 127)


@pytest.mark.parametrize("mcpu, weight_max", [("cascadelake", 127), ("alderlake", 127), ("skylake-avx512", 63)])
def test_scheme_for_a_cpu_named_by_mcpu_alone(mcpu, weight_max):
    """A VNNI CPU named by mcpu, without mattr, gets the full weight range its vpdpbusd kernels compute exactly."""
    import tvm

    target = tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": mcpu})
    assert scheme_for_target("x86_64", target_features(target)) == Scheme("u8", weight_max)


@pytest.mark.parametrize("real", [1e-9, 3.7e-5, 0.0123, 0.5, 0.99999999, 1.0, 7.25, 1000.0])
def test_fixed_point_multiplier(real):
    m, s = fixed_point(real)
    assert 2**30 <= m < 2**31 and 1 <= s <= 62
    assert abs(m * 2.0**-s - real) <= real * 2**-30


def test_activation_qparams_cover_zero_exactly():
    p = activation_qparams(0.0, 6.0, "u8")
    assert p.zero_point == 0 and p.quantized(6.0) == 255
    p = activation_qparams(-1.0, 3.0, "i8")
    assert p.quantized(0.0) == p.zero_point and -128 <= p.zero_point <= 127


@pytest.mark.parametrize("clamp, folded", [((0, 255), True), ((20, 255), True), ((20, 140), False)])
def test_output_dequantize_folds_into_the_layer_unless_its_clamp_is_inside_the_range(clamp, folded):
    """No activation (0) or a relu (the zero point, 20) has an exact int32 clip; relu6's upper bound does not."""
    g = Graph()
    x = g.add_input("x", (2, 8), "u8")
    w = g.add_constant(np.ones((4, 8), np.int8), "w")
    rq = dict(multiplier=(1 << 30,) * 4, shift=(40, 41, 42, 43), out_zero_point=20, out_dtype="u8")
    q = g.emit("qdense", x, w, x_zero_point=3, out_min=clamp[0], out_max=clamp[1], **rq)
    g.outputs = [g.emit("dequantize", q, scale=[0.5], zero_point=[20])]
    feeds = {"x": np.random.default_rng(0).integers(0, 256, (2, 8)).astype(np.uint8)}
    before = ir.interpret(g, feeds)[g.outputs[0].name]
    assert fold_output_dequantize(g) == folded
    assert [n.op for n in g.nodes] == (["qdense"] if folded else ["qdense", "dequantize"])
    after = ir.interpret(g, feeds)[g.outputs[0].name]
    assert after.dtype == np.float32 and (not folded or g.nodes[0].attrs["out_min"] == (0 if clamp[0] else -(1 << 31)))
    np.testing.assert_allclose(after, before, atol=0.5 * 0.5)  # within half a step of the output's 8-bit grid
