"""Pre-quantized ONNX models: a QDQ model written by onnxruntime.quantization.quantize_static imports into the same
qconv2d/qdense/qadd that Ember's own quantization makes and agrees with onnxruntime's reference execution of it
within one quantization step; QLinearConv/QLinearMatMul/QLinearAdd/ConvInteger/MatMulInteger import and match
onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from ember import ir
from ember.frontends.onnx import load
from ember.models.blocks import tc_resnet8
from ember.passes import PassManager, parse_pipeline
from ember.passes.quantize import scheme_for_target
from ember.passes.quantize.qdq import fuse_qdq
from tests.passes.quant_models import cnn_onnx, samples


def qdq_model(tmp_path, per_channel: bool, model: onnx.ModelProto | None = None, feeds: list | None = None) -> str:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds or samples(32, seed=2))

        def get_next(self):
            return next(self.it, None)

    src, out = tmp_path / "cnn.onnx", tmp_path / f"cnn_qdq_{per_channel}.onnx"
    onnx.save(model or cnn_onnx(), str(src))
    quantize_static(
        str(src),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=per_channel,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return str(out)


def ort_reference(path: str, feeds: dict, optimized: bool = False) -> np.ndarray:
    """onnxruntime on the QDQ model; unoptimized, it runs the Q/DQ ops as written (the model's exact meaning)."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not optimized:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def output_step(graph) -> float:
    (dq,) = [n for n in graph.nodes if n.output is graph.outputs[0]]
    return dq.attrs["scale"][0]


@pytest.mark.parametrize("per_channel", [True, False])
def test_quantize_static_qdq_model_fuses_and_matches_onnxruntime(tmp_path, per_channel):
    path = qdq_model(tmp_path, per_channel)
    graph = load(path)
    assert fuse_qdq(graph, scheme_for_target("aarch64"))
    ops = graph.op_counts()
    assert (ops["qconv2d"], ops["qdense"]) == (2, 2) and not {"conv2d", "dense", "matmul"} & set(ops)
    assert (ops["quantize"], ops["dequantize"]) == (1, 1)  # pools and flatten run on uint8 between the layers
    PassManager(parse_pipeline(2) + ["convert-to-nhwc", "canonicalize"], verify_each=True).run(graph)
    step = output_step(graph)
    for feeds in samples(8, seed=9):
        got, want = ir.interpret(graph, feeds)["logits"], ort_reference(path, feeds)
        assert np.abs(got - want).max() <= step * 1.001, (got, want)


def test_qdq_weights_requantized_to_7_bits_for_x86_without_vnni(tmp_path):
    path = qdq_model(tmp_path, True)
    graph = load(path)
    fuse_qdq(graph, scheme_for_target("x86_64", ["+avx2"]))
    weights = [n.inputs[1].const for n in graph.nodes if n.op in ("qconv2d", "qdense")]
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in weights) == 63
    step = output_step(graph)
    for feeds in samples(8, seed=9):
        got, want = ir.interpret(graph, feeds)["logits"], ort_reference(path, feeds)
        assert np.abs(got - want).max() <= 8 * step  # 7-bit weights: a few output steps
        assert got.argmax() == want.argmax()


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "q", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _run_both(model: onnx.ModelProto, feeds: dict) -> tuple[np.ndarray, np.ndarray]:
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    return ir.interpret(load(model), feeds)[next(iter(o.name for o in model.graph.output))], want


def test_qlinear_conv_and_matmul():
    rng = np.random.default_rng(0)
    w = rng.integers(-40, 41, (4, 3, 3, 3)).astype(np.int8)
    wm = rng.integers(-40, 41, (4 * 4 * 4, 5)).astype(np.int8)
    c = [
        numpy_helper.from_array(np.float32(0.02), "xs"),
        numpy_helper.from_array(np.uint8(100), "xz"),
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(np.array([0.01, 0.02, 0.015, 0.03], np.float32), "ws"),
        numpy_helper.from_array(np.zeros(4, np.int8), "wz"),
        numpy_helper.from_array(np.float32(0.05), "ys"),
        numpy_helper.from_array(np.uint8(120), "yz"),
        numpy_helper.from_array(rng.integers(-500, 500, 4).astype(np.int32), "b"),
        numpy_helper.from_array(wm, "wm"),
        numpy_helper.from_array(np.float32(0.01), "wms"),
        numpy_helper.from_array(np.int8(0), "wmz"),
        numpy_helper.from_array(np.float32(0.3), "zs"),
        numpy_helper.from_array(np.uint8(128), "zz"),
        numpy_helper.from_array(np.array([1, -1], np.int64), "flat"),
    ]
    nodes = [
        helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"], pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["y", "flat"], ["yf"]),
        helper.make_node("QLinearMatMul", ["yf", "ys", "yz", "wm", "wms", "wmz", "zs", "zz"], ["z"]),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("z", TensorProto.UINT8, [1, 5])],
        c,
    )
    graph = load(model)
    assert graph.op_counts() == {"qconv2d": 1, "reshape": 1, "qdense": 1}
    assert {"y.weight", "y.bias", "z.weight"} <= {v.name for v in graph.constants}  # unnamed nodes: by output
    for seed in range(4):
        x = np.random.default_rng(seed).integers(0, 256, (1, 3, 4, 4)).astype(np.uint8)
        got, want = _run_both(model, {"x": x})
        assert np.abs(got.astype(np.int32) - want.astype(np.int32)).max() <= 1  # onnxruntime rounds in float


def test_conv_integer_and_matmul_integer_are_exact():
    rng = np.random.default_rng(1)
    w = rng.integers(-128, 128, (2, 3, 3, 3)).astype(np.int8)
    wm = rng.integers(0, 256, (4, 6)).astype(np.uint8)
    c = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(np.uint8(7), "xz"),
        numpy_helper.from_array(wm, "wm"),
        numpy_helper.from_array(np.uint8(3), "az"),
        numpy_helper.from_array(np.uint8(128), "wmz"),
    ]
    nodes = [
        helper.make_node("ConvInteger", ["x", "w", "xz"], ["y"], pads=[0, 0, 0, 0]),
        helper.make_node("MatMulInteger", ["a", "wm", "az", "wmz"], ["z"]),
    ]
    model = _model(
        nodes,
        [
            helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 3, 5, 5]),
            helper.make_tensor_value_info("a", TensorProto.UINT8, [2, 4]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.INT32, [1, 2, 3, 3]),
            helper.make_tensor_value_info("z", TensorProto.INT32, [2, 6]),
        ],
        c,
    )
    feeds = {
        "x": rng.integers(0, 256, (1, 3, 5, 5)).astype(np.uint8),
        "a": rng.integers(0, 256, (2, 4)).astype(np.uint8),
    }
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = ir.interpret(load(model), feeds)
    np.testing.assert_array_equal(got["y"], want[0])
    np.testing.assert_array_equal(got["z"], want[1])


def test_integer_ops_lower_to_int32_qconv2d_and_qdense_exactly():
    """ConvInteger/MatMulInteger whose centred weights fit int8 import as qconv2d/qdense with an i32 output and
    build into integer kernels, exact against onnxruntime at reductions (K = 3072) where float32 sums are not;
    a uint8 weight with zero point 3 leaves int8 and takes the float fallback."""
    import ember

    rng = np.random.default_rng(2)
    consts = {
        "w": rng.integers(-128, 128, (16, 64, 3, 3)).astype(np.int8),
        "xz": np.uint8(131),
        "wm": rng.integers(160, 256, (3072, 24)).astype(np.uint8),  # centred 32..127: large sums
        "az": np.uint8(9),
        "wmz": np.uint8(128),
        "wf": rng.integers(0, 256, (8, 5)).astype(np.uint8),
        "wfz": np.uint8(3),
    }
    nodes = [
        helper.make_node("ConvInteger", ["x", "w", "xz"], ["y"], pads=[1, 1, 1, 1]),
        helper.make_node("MatMulInteger", ["a", "wm", "az", "wmz"], ["z"]),
        helper.make_node("MatMulInteger", ["b", "wf", "", "wfz"], ["f"]),
    ]
    ins = {"x": [1, 64, 6, 6], "a": [3, 3072], "b": [2, 8]}
    outs = {"y": [1, 16, 6, 6], "z": [3, 24], "f": [2, 5]}
    model = _model(
        nodes,
        [helper.make_tensor_value_info(k, TensorProto.UINT8, v) for k, v in ins.items()],
        [helper.make_tensor_value_info(k, TensorProto.INT32, v) for k, v in outs.items()],
        [numpy_helper.from_array(v, k) for k, v in consts.items()],
    )
    graph = load(model)
    ops = graph.op_counts()
    assert (ops["qconv2d"], ops["qdense"], ops["matmul"]) == (1, 1, 1)
    feeds = {k: rng.integers(0, 256, v).astype(np.uint8) for k, v in ins.items()}
    feeds["a"] = rng.integers(200, 256, ins["a"]).astype(np.uint8)
    want = dict(
        zip(outs, ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds))
    )
    assert np.abs(want["z"]).max() > 1 << 24  # beyond float32's exact integers
    built = ember.compile(model, "host").run(feeds)
    for name in outs:
        np.testing.assert_array_equal(ir.interpret(graph, feeds)[name], want[name])
        np.testing.assert_array_equal(built[name], want[name])


def residual_cnn() -> onnx.ModelProto:
    """conv -> relu -> conv, plus the first conv's output (the residual), -> relu: [1, 3, 16, 16] -> [1, 8, 16, 16]."""
    rng = np.random.default_rng(3)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.normal(0, 0.15, (8, 8, 3, 3)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("Conv", ["images", "w1", "b1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], "conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["s"], "residual"),
        helper.make_node("Relu", ["s"], ["y"], "relu2"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])],
        inits,
    )


def test_quantize_static_residual_add_becomes_qadd_and_matches_onnxruntime(tmp_path):
    """The QDQ residual add (DequantizeLinear twice -> Add -> QuantizeLinear, the relu in the output range) imports
    as a qadd with no float add left, all integer from the input's quantize to the output's dequantize. Tolerance:
    one output step (the existing QDQ tests' bound); onnxruntime adds the dequantized floats and rounds once, qadd
    rounds a 20-bit fixed-point sum, so near a rounding tie the two land one step apart."""
    path = qdq_model(tmp_path, True, residual_cnn())
    graph = load(path)
    assert fuse_qdq(graph, scheme_for_target("aarch64"))
    ops = graph.op_counts()
    assert ops == {"quantize": 1, "qconv2d": 2, "qadd": 1, "dequantize": 1}, ops
    (add,) = [n for n in graph.nodes if n.op == "qadd"]
    assert add.attrs["out_min"] == add.attrs["out_zero_point"] == 0  # the relu, in uint8's range from 0
    PassManager(parse_pipeline(2) + ["convert-to-nhwc", "canonicalize"], verify_each=True).run(graph)
    assert graph.op_counts()["transpose"] == 2  # into the first conv and out of the qadd: none around the qadd
    step = output_step(graph)
    for feeds in samples(8, seed=9):
        got, want = ir.interpret(graph, feeds)["y"], ort_reference(path, feeds)
        assert np.abs(got - want).max() <= step * 1.001, np.abs(got - want).max() / step


def qlinear_add_model(broadcast: bool) -> onnx.ModelProto:
    """com.microsoft QLinearAdd of a uint8 [1, 4, 5, 5] and a uint8 [1, 4, 5, 5] (or [1, 4, 1, 1]) tensor."""
    c = [
        numpy_helper.from_array(np.float32(0.05), "as"),
        numpy_helper.from_array(np.uint8(120), "az"),
        numpy_helper.from_array(np.float32(0.03), "bs"),
        numpy_helper.from_array(np.uint8(7), "bz"),
        numpy_helper.from_array(np.float32(0.07), "cs"),
        numpy_helper.from_array(np.uint8(90), "cz"),
    ]
    node = helper.make_node(
        "QLinearAdd", ["a", "as", "az", "b", "bs", "bz", "cs", "cz"], ["c"], "qadd", domain="com.microsoft"
    )
    b_shape = [1, 4, 1, 1] if broadcast else [1, 4, 5, 5]
    graph = helper.make_graph(
        [node],
        "qlinearadd",
        [
            helper.make_tensor_value_info("a", TensorProto.UINT8, [1, 4, 5, 5]),
            helper.make_tensor_value_info("b", TensorProto.UINT8, b_shape),
        ],
        [helper.make_tensor_value_info("c", TensorProto.UINT8, [1, 4, 5, 5])],
        c,
    )
    opsets = [helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


@pytest.mark.parametrize("broadcast", [False, True])
def test_qlinear_add_matches_onnxruntime(broadcast):
    """QLinearAdd imports as dequantize, add, quantize; the QDQ fusion makes it a qadd when both operands have the
    output's shape and leaves the broadcasting one in float. Both within one uint8 step of onnxruntime's kernel."""
    model = qlinear_add_model(broadcast)
    graph = load(model)
    assert graph.op_counts() == {"dequantize": 2, "add": 1, "quantize": 1}
    assert fuse_qdq(graph, scheme_for_target("x86_64", ["+avx2"])) is not broadcast
    assert graph.op_counts() == ({"dequantize": 2, "add": 1, "quantize": 1} if broadcast else {"qadd": 1})
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(4)
    b_shape = (1, 4, 1, 1) if broadcast else (1, 4, 5, 5)
    for _ in range(8):
        feeds = {"a": rng.integers(0, 256, (1, 4, 5, 5)).astype(np.uint8)}
        feeds["b"] = rng.integers(0, 256, b_shape).astype(np.uint8)
        got, want = ir.interpret(graph, feeds)["c"], session.run(None, feeds)[0]
        assert got.dtype == np.uint8 and np.abs(got.astype(np.int32) - want.astype(np.int32)).max() <= 1


def test_qdq_residual_add_builds_bit_exact_with_the_interpreter(tmp_path):
    """ember.compile of the QDQ residual CNN on the host: its qadd kernel (after the NHWC layout pass) computes
    what the interpreter computes on the compiled graph, bit for bit."""
    import ember

    path = qdq_model(tmp_path, True, residual_cnn())
    artifact = ember.compile(path, "host")
    assert artifact.graph.op_counts()["qadd"] == 1 and "add" not in artifact.graph.op_counts()
    for feeds in samples(6, seed=5):
        np.testing.assert_array_equal(artifact.run(feeds)["y"], ir.interpret(artifact.graph, feeds)["y"])


def test_quantize_static_1d_convs_fuse_through_their_unit_height(tmp_path):
    """A QDQ TC-ResNet8 (1-D convs, lifted to 2-D over a unit height at import: the dequantize feeds an unsqueeze,
    the quantize follows a squeeze) fuses every conv into qconv2d and every residual add into qadd, runs NHWC from
    its input to its pooling, and matches onnxruntime within one output step, as the 2-D QDQ models do."""
    rng = np.random.default_rng(5)
    feeds = [{"mfcc": rng.standard_normal((1, 8, 32)).astype(np.float32)} for _ in range(24)]
    from onnxruntime.quantization.shape_inference import quant_pre_process

    onnx.save(tc_resnet8(width=0.5, mfcc=8, frames=32), str(tmp_path / "tc.onnx"))
    quant_pre_process(str(tmp_path / "tc.onnx"), str(tmp_path / "tc_pre.onnx"))  # folds the batch norms, as advised
    path = qdq_model(tmp_path, True, onnx.load(str(tmp_path / "tc_pre.onnx")), feeds)
    graph = load(path)
    assert fuse_qdq(graph, scheme_for_target("aarch64"))
    ops = graph.op_counts()
    assert (ops["qconv2d"], ops["qadd"]) == (10, 3) and not {"conv2d", "add"} & set(ops), ops
    PassManager(parse_pipeline(2) + ["convert-to-nhwc", "canonicalize"], verify_each=True).run(graph)
    assert graph.op_counts()["transpose"] == 2  # the squeezes sank through the qadds: NHWC from input to pooling
    step = output_step(graph)
    for x in feeds[:8]:
        got, want = ir.interpret(graph, x)["logits"], ort_reference(path, x)
        assert np.abs(got - want).max() <= step * 1.001, np.abs(got - want).max() / step
