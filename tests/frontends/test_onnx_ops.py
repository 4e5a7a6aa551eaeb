"""Mobile and transformer op sets, and opset variants: small ONNX models through the interpreter and a
host build, each compared with onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import ember
from ember import ir
from ember.frontends.onnx import load
from ember.models.blocks import i64, mobile_block, transformer_block
from tests.conftest import assert_close, make_model, ort_run, random_feeds

H = helper.make_node
rng = np.random.default_rng(42)  # the blocks' weights: one stream shared by every test, as before the move


def opset_variant(op_case: str):
    """One op written the way a given opset spells it (attributes vs inputs)."""
    cases = {
        "clip-6": ([H("Clip", ["x"], ["y"], min=-0.5, max=0.5)], {}, 6),
        "clip-13-no-max": ([H("Clip", ["x", "lo"], ["y"])], {"lo": np.float32(-0.2)}, 13),
        "squeeze-11": ([H("Unsqueeze", ["x"], ["u"], axes=[0]), H("Squeeze", ["u"], ["y"], axes=[0])], {}, 11),
        "squeeze-13": ([H("Unsqueeze", ["x", "a"], ["u"]), H("Squeeze", ["u", "a"], ["y"])], {"a": i64(0)}, 13),
        "slice-9": ([H("Slice", ["x"], ["y"], starts=[1, 0], ends=[3, 100], axes=[1, 2])], {}, 9),
        "slice-13-steps": (
            [H("Slice", ["x", "st", "en", "ax", "sp"], ["y"])],
            {"st": i64(-1, 0), "en": i64(-100, 8), "ax": i64(1, 2), "sp": i64(-2, 3)},
            13,
        ),
        "reducemean-13": ([H("ReduceMean", ["x"], ["y"], axes=[1], keepdims=0)], {}, 13),
        "reducemean-18": ([H("ReduceMean", ["x", "a"], ["y"], keepdims=1)], {"a": i64(-1)}, 18),
        "split-11": ([H("Split", ["x"], ["y", "z"], axis=2, split=[3, 5])], {}, 11),
        "split-13": ([H("Split", ["x", "s"], ["y", "z"], axis=2)], {"s": i64(6, 2)}, 13),
        "split-18": ([H("Split", ["x"], ["y", "z"], axis=2, num_outputs=2)], {}, 18),
        "pad-2": ([H("Pad", ["x"], ["y"], pads=[0, 1, 2, 0, 0, 1], value=0.5)], {}, 2),
        "pad-13-reflect": ([H("Pad", ["x", "p"], ["y"], mode="reflect")], {"p": i64(0, 1, 2, 0, 1, 2)}, 13),
        "pad-13-edge": ([H("Pad", ["x", "p"], ["y"], mode="edge")], {"p": i64(0, 3, 1, 0, 2, 4)}, 13),
        "pad-19-wrap": ([H("Pad", ["x", "p"], ["y"], mode="wrap")], {"p": i64(1, 0, 8, 0, 4, 3)}, 19),
        "pad-18-axes": (
            [H("Pad", ["x", "p", "v", "a"], ["y"])],
            {"p": i64(1, 0, 0, 2), "v": np.float32(3), "a": i64(1, 2)},
            18,
        ),
        "conv1d-same-strided": (
            [H("Conv", ["x", "w1", "b1"], ["y"], auto_pad="SAME_UPPER", strides=[2])],
            {"w1": rng.standard_normal((6, 4, 3)).astype(np.float32), "b1": np.arange(6, dtype=np.float32)},
            13,
        ),
        "conv1d-depthwise-relu": (
            [H("Conv", ["x", "w1"], ["c"], pads=[2, 1], group=4, dilations=[2]), H("Relu", ["c"], ["y"])],
            {"w1": rng.standard_normal((4, 1, 4)).astype(np.float32)},
            13,
        ),
        "convtranspose1d": (
            [H("ConvTranspose", ["x", "w1"], ["y"], strides=[2], output_padding=[1], pads=[1, 0])],
            {"w1": rng.standard_normal((4, 3, 3)).astype(np.float32)},
            13,
        ),
        "convtranspose1d-output-shape": (  # one more output than the full 17: zeros (then the bias) at the end
            [H("ConvTranspose", ["x", "w1", "b1"], ["y"], strides=[2], output_shape=[18])],
            {"w1": rng.standard_normal((4, 3, 3)).astype(np.float32), "b1": np.arange(1, 4, dtype=np.float32)},
            13,
        ),
        "pool1d": (
            [
                H("MaxPool", ["x"], ["p"], kernel_shape=[3], strides=[2], pads=[1, 1]),
                H("AveragePool", ["p"], ["y"], kernel_shape=[2], count_include_pad=1, pads=[0, 1]),
            ],
            {},
            13,
        ),
        "lppool1d-global": (
            [
                H("LpPool", ["x"], ["l"], kernel_shape=[3], pads=[1, 1], strides=[2], p=3),
                H("LpPool", ["l"], ["q"], kernel_shape=[2], pads=[0, 1]),
                H("GlobalLpPool", ["q"], ["y"], p=1),
            ],
            {},
            18,
        ),
        "prelu-selu": (
            [H("PRelu", ["x", "s"], ["p"]), H("Selu", ["p"], ["y"], alpha=1.5)],
            {"s": np.array([[0.1], [0.2], [-0.3], [0.4]], np.float32)},
            13,
        ),
        "instancenorm": (
            [H("InstanceNormalization", ["x", "sc", "bi"], ["y"], epsilon=1e-3)],
            {"sc": np.array([1, 2, 0.5, -1], np.float32), "bi": np.array([0, 1, -1, 0.5], np.float32)},
            13,
        ),
        "resize-10": (
            [H("Unsqueeze", ["x"], ["u"], axes=[0]), H("Resize", ["u", "s"], ["y"], mode="nearest")],
            {"s": np.array([1, 1, 2, 3], np.float32)},
            10,
        ),
        "resize-13-linear": (
            [H("Unsqueeze", ["x", "a"], ["u"]), H("Resize", ["u", "", "", "sz"], ["y"], mode="linear")],
            {"a": i64(0), "sz": i64(1, 3, 5, 11)},
            13,
        ),
        "resize-19-align": (
            [
                H("Unsqueeze", ["x", "a"], ["u"]),
                H("Resize", ["u", "", "s"], ["y"], mode="linear", coordinate_transformation_mode="align_corners"),
            ],
            {"a": i64(0), "s": np.array([1, 1, 1.5, 2], np.float32)},
            19,
        ),
        "softmax-11-axis1": ([H("Softmax", ["x"], ["y"], axis=1)], {}, 11),
        "gelu-20": ([H("Gelu", ["x"], ["y"], approximate="tanh")], {}, 20),
        "leaky-elu": ([H("LeakyRelu", ["x"], ["l"], alpha=0.1), H("Elu", ["l"], ["y"])], {}, 13),
        "expand-tile": (
            [H("Expand", ["x", "e"], ["u"]), H("Tile", ["u", "t"], ["y"])],
            {"e": i64(2, 1, 1, 1), "t": i64(1, 1, 2, 1)},
            13,
        ),
        "argmax-sum": ([H("ArgMax", ["x"], ["y"], axis=2, keepdims=0), H("Sum", ["x", "x", "x"], ["z"])], {}, 13),
        "cumsum-11": (
            [
                H("CumSum", ["x", "a0"], ["c"], reverse=1, exclusive=1),
                H("CumSum", ["c", "a1"], ["y"]),
            ],
            {"a0": np.int64(-1), "a1": np.int32(1)},
            11,
        ),
        "topk-11": (
            [H("TopK", ["x", "k"], ["v", "i"], axis=1, largest=0), H("Cast", ["i"], ["ic"], to=1)],
            {"k": i64(3)},
            11,
        ),
        "onehot-11": (
            [
                H("ArgMax", ["x"], ["am"], axis=2, keepdims=0),
                H("Sub", ["am", "four"], ["idx"]),
                H("OneHot", ["idx", "depth", "vals"], ["y"], axis=1),
            ],
            {"four": np.int64(4), "depth": np.int64(3), "vals": np.array([-1.0, 2.5], np.float32)},
            11,
        ),
        "einsum-12": (
            [
                H("Einsum", ["x", "x"], ["g"], equation="bij,bkj->bik"),
                H("Einsum", ["g", "x"], ["y"], equation="...ij,...jk"),
            ],
            {},
            12,
        ),
        "constantofshape-range": (
            [
                H("ConstantOfShape", ["sh"], ["c"], value=helper.make_tensor("v", 1, [1], [2.5])),
                H("Range", ["r0", "r1", "r2"], ["r"]),
                H("Cast", ["r"], ["rf"], to=1),
                H("Add", ["c", "rf"], ["cr"]),
                H("Add", ["x", "cr"], ["y"]),
            ],
            {"sh": i64(4, 8), "r0": np.int64(0), "r1": np.int64(16), "r2": np.int64(2)},
            13,
        ),
    }
    nodes, inits, opset = cases[op_case]
    outputs = [(o, None) for n in nodes[-1:] for o in n.output]
    if op_case == "argmax-sum":
        outputs = [("y", None, TensorProto.INT64), ("z", None)]
    if op_case == "topk-11":
        outputs = [("v", None), ("ic", None)]
    return make_model(nodes, [("x", [3, 4, 8])], outputs, inits, opset=opset)


OPSET_CASES = [
    "clip-6",
    "clip-13-no-max",
    "squeeze-11",
    "squeeze-13",
    "slice-9",
    "slice-13-steps",
    "reducemean-13",
    "reducemean-18",
    "split-11",
    "split-13",
    "split-18",
    "pad-2",
    "pad-13-reflect",
    "pad-13-edge",
    "pad-19-wrap",
    "pad-18-axes",
    "conv1d-same-strided",
    "conv1d-depthwise-relu",
    "convtranspose1d",
    "convtranspose1d-output-shape",
    "pool1d",
    "lppool1d-global",
    "prelu-selu",
    "instancenorm",
    "resize-10",
    "resize-13-linear",
    "resize-19-align",
    "softmax-11-axis1",
    "gelu-20",
    "leaky-elu",
    "expand-tile",
    "argmax-sum",
    "cumsum-11",
    "topk-11",
    "onehot-11",
    "einsum-12",
    "constantofshape-range",
]


def check(model):
    feeds = random_feeds(model, seed=3)
    want = ort_run(model, feeds)
    graph = load(model)
    ir.verify(graph)
    assert_close(ir.interpret(graph, feeds), want)
    assert_close(ember.compile(model, "host").run(feeds), want)
    return graph


def test_mobile_ops():
    graph = check(mobile_block(rng))
    ops = graph.op_counts()
    assert {"conv2d", "clip", "hard_swish", "hard_sigmoid", "resize2d", "conv2d_transpose"} <= set(ops)


def test_transformer_ops():
    graph = check(transformer_block(rng))
    # Shape arithmetic is resolved at import: the computed Reshape shapes became constants.
    assert "shape" not in graph.op_counts() and "concat" not in graph.op_counts()
    assert {"layer_norm", "dense", "softmax", "where", "erf", "reduce_mean", "pow", "sqrt"} <= set(graph.op_counts())


@pytest.mark.parametrize("case", OPSET_CASES)
def test_opset_variants(case):
    check(opset_variant(case))


def save_with_external_data(model, path):
    """Save a copy of `model` with every tensor in `m.data` beside it (onnx.save moves the tensors of
    what it saves out to the data file, so the original stays intact)."""
    import onnx

    saved = onnx.ModelProto()
    saved.CopyFrom(model)
    onnx.save(
        saved, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="m.data", size_threshold=0
    )


def test_external_data_loads_from_the_model_folder(tmp_path):
    model = mobile_block(rng)
    save_with_external_data(model, tmp_path / "m.onnx")
    assert (tmp_path / "m.data").stat().st_size > 1000
    feeds = random_feeds(model, seed=3)
    assert_close(ir.interpret(load(tmp_path / "m.onnx"), feeds), ort_run(model, feeds))


@pytest.mark.parametrize(
    "location, message",
    [("../../etc/passwd", "outside the model's folder"), ("missing.bin", "is missing"), ("m.data", "declares")],
)
def test_bad_external_data_is_refused(tmp_path, location, message):
    import onnx

    save_with_external_data(mobile_block(rng), tmp_path / "m.onnx")
    m = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    t = next(t for t in m.graph.initializer if t.external_data)
    for e in t.external_data:
        if e.key == "location":
            e.value = location
        if e.key == "length" and location == "m.data":
            e.value = str(10**9)
    onnx.save(m, str(tmp_path / "m.onnx"))
    with pytest.raises(ember.EmberError, match=message):
        load(tmp_path / "m.onnx")


@pytest.mark.parametrize(
    "op_type, attrs", [("Softmax", {"axis": 9}), ("Split", {"axis": -5}), ("Flatten", {"axis": 6})]
)
def test_out_of_range_axis_names_the_node(op_type, attrs):
    """An axis outside the input's rank is an error at the node, not silently taken modulo the rank."""
    from onnx import TensorProto, helper

    outs = ["y0", "y1"] if op_type == "Split" else ["y0"]
    node = helper.make_node(op_type, ["x"], outs, name="bad_axis", **attrs)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])
    ys = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs]
    model = helper.make_model(helper.make_graph([node], "g", [x], ys), opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ember.EmberError, match=rf"bad_axis.*{op_type}.*out of range"):
        load(model)


@pytest.mark.parametrize("mode, pad", [("reflect", 8), ("wrap", 9)])
def test_pads_reaching_past_the_input_are_refused_at_the_node(mode, pad):
    """Reflect pads up to size - 1 and wrap pads up to size are what TVM's index formulas compute right;
    wider ones are an error naming the node, not a wrong result."""
    node = H("Pad", ["x", "p"], ["y"], mode=mode, name="wide_pad")
    model = make_model([node], [("x", [3, 4, 8])], [("y", None)], {"p": i64(0, 0, pad, 0, 0, 0)}, opset=19)
    with pytest.raises(ember.EmberError, match=rf"wide_pad.*pad.*{mode} pads .* reach past the input"):
        ember.compile(model, "host")


@pytest.mark.parametrize("pads", [[], [-1, -1, -1, -1]], ids=["empty", "negative"])
def test_conv_with_malformed_pads_is_refused_at_the_node(pads):
    """Only a ConvTranspose's negative pads mean a grown output: a Conv's empty or negative pads are an error
    naming the node (a fuzzed model's empty pads once reached min() of an empty list)."""
    node = H("Conv", ["x", "w"], ["y"], name="odd_conv")
    node.attribute.append(helper.make_attribute("pads", pads, attr_type=onnx.AttributeProto.INTS))
    w = np.ones((4, 3, 3, 3), np.float32)
    model = make_model([node], [("x", [1, 3, 8, 8])], [("y", None)], {"w": w}, opset=17)
    with pytest.raises(ember.EmberError, match=r"odd_conv.*Conv.*'pads' must be four non-negative ints"):
        ember.compile(model, "host")


def test_reflect_pad_on_a_named_dim_compiles():
    """The pad width check reads static dims only: a reflect pad of a model with a named batch dim builds, as it did
    before the check, and matches numpy's reflect pad."""
    node = H("Pad", ["x", "p"], ["y"], mode="reflect")
    model = make_model([node], [("x", ["batch", 4, 8])], [("y", None)], {"p": i64(0, 0, 2, 0, 0, 3)}, opset=13)
    x = np.arange(3 * 4 * 8, dtype=np.float32).reshape(3, 4, 8)
    got = ember.compile(model, "host").run({"x": x})["y"]
    np.testing.assert_array_equal(got, np.pad(x, [(0, 0), (0, 0), (2, 3)], mode="reflect"))
