"""ember.compile(quantize="int8") end to end on the host: the built library computes exactly what the interpreter
computes on the quantized graph (conv, padded max pooling, flatten and dense all on uint8; the integer kernels are
bit-exact, so the float outputs are equal too), and the bundle carries quant_report.json."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from rich.console import Console

import ember
from ember import ir
from ember.passes.quantize import print_report


def conv_dense_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.4, (4, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, 4).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.normal(0, 0.2, (5, 4 * 3 * 3)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.normal(0, 0.1, 5).astype(np.float32), "b2"),
        numpy_helper.from_array(np.array([1, -1], np.int64), "flat"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c"], "conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], "relu"),
        helper.make_node("MaxPool", ["r"], ["p"], "pool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["p", "flat"], ["f"], "flatten"),
        helper.make_node("Gemm", ["f", "w2", "b2"], ["y"], "fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "convdense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_host_build_matches_the_interpreter_bit_for_bit(tmp_path):
    feeds = [{"x": np.random.default_rng(i).normal(0, 1, (1, 3, 6, 6)).astype(np.float32)} for i in range(12)]
    artifact = ember.compile(conv_dense_model(), "host", quantize="int8", calibration=feeds[:8], evaluation=feeds)
    ops = artifact.graph.op_counts()
    assert (ops["qconv2d"], ops["qdense"], ops["quantize"], ops.get("dequantize", 0)) == (1, 1, 1, 0)  # pool on u8
    for sample in feeds:
        np.testing.assert_array_equal(artifact.run(sample)["y"], ir.interpret(artifact.graph, sample)["y"])
    out = artifact.save(tmp_path / "bundle")
    report = json.loads((out / "quant_report.json").read_text())
    assert report["samples"] == 12  # the evaluation set, not the 8 calibration samples
    assert report["outputs"]["y"] >= 25 and report["weight_bytes"]["ratio"] <= 0.3
    assert [layer["op"] for layer in report["layers"]] == ["fused_conv2d", "dense"]
    assert json.loads((out / "metadata.json").read_text())["quantization"]["report"] == "quant_report.json"
    again = ember.load(out).save(tmp_path / "copy")  # a loaded bundle saved again keeps its report
    assert (again / "quant_report.json").read_text() == (out / "quant_report.json").read_text()
    console = Console(record=True, width=100)
    print_report(artifact.quant_report, console)
    text = console.export_text()
    assert "top-1 agreement" in text and "fused_conv2d" in text


def test_dump_ir_shows_the_sparsity_and_quantization_stages(tmp_path):
    """--dump-ir writes the graph after pruning/sparse lowering and after quantization, which run after
    the pass pipeline; each dump parses and verifies, and the last Ember IR dump holds the integer ops."""
    feeds = [{"x": np.random.default_rng(i).normal(0, 1, (1, 3, 6, 6)).astype(np.float32)} for i in range(4)]
    dump = tmp_path / "dump"
    ember.compile(
        conv_dense_model(),
        "host",
        dump_ir=dump,
        sparsity=0.5,
        sparsity_options={"threshold": 1.0},
        quantize="int8",
        calibration=feeds,
    )
    files = sorted(p.name for p in dump.glob("*.ir"))
    assert files[0] == "00-input.ir"
    assert files[-2].endswith("-after-sparsity.ir") and files[-1].endswith("-after-quantize.ir")
    assert "sparse_dense(" in (dump / files[-2]).read_text() and "qconv2d(" not in (dump / files[-2]).read_text()
    assert "qconv2d(" in (dump / files[-1]).read_text()
    for f in files:
        ir.verify(ir.read_ir(dump / f))
