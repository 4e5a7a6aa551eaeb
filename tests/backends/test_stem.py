"""A model's first conv over a few channels reads its NCHW input through the layout transpose in its own kernel
(stem.py): the stems of SqueezeNet 1.1, MobileNetV2 and ResNet-50 compile without a transpose kernel and match
onnxruntime (conftest's assert_close: rtol 1e-4, atol 1e-5 scaled by the output's magnitude), the transpose
inlined into the scheduled conv; convs over more channels and GPU builds keep the transpose. A max pool after
the stem conv computes it in the same kernel, in an even number of parallel strips of pooled rows, unless the
conv's result is read elsewhere or the build is for a GPU."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

import ember
from ember.backends.tvm import schedules, stem
from ember.backends.tvm.lower import lower_to_relax
from ember.backends.tvm.schedules.stem import even_strips
from ember.backends.tvm.targets import resolve
from ember.models.blocks import make_model
from tests.backends.test_winograd import kernel_names
from tests.conftest import assert_close, ort_run, random_feeds


def stem_model(c=3, k=64, size=64, kernel=3, stride=2, pad=0, batch=1):
    """x (NCHW) -> Conv(kernel, stride, pad, bias) -> Relu, float32."""
    rng = np.random.default_rng(0)
    inits = {
        "w": (rng.standard_normal((k, c, kernel, kernel)) / np.sqrt(c * kernel * kernel)).astype(np.float32),
        "b": rng.standard_normal(k).astype(np.float32),
    }
    conv = helper.make_node("Conv", ["x", "w", "b"], ["c"], strides=[stride] * 2, pads=[pad] * 4)
    nodes = [conv, helper.make_node("Relu", ["c"], ["y"])]
    return make_model(nodes, [("x", [batch, c, size, size])], [("y", None)], inits, opset=13)


@pytest.mark.parametrize(
    "kernel, pad, k, size, batch",
    [
        (3, 0, 64, 65, 1),  # SqueezeNet 1.1: 3x3 stride 2, no padding, the padding inlined into the conv
        (3, 1, 32, 64, 2),  # MobileNetV2: padded, two images
        (7, 3, 64, 64, 1),  # ResNet-50: 147 inputs per output, the padding a loop of its own
    ],
    ids=["squeezenet", "mobilenet", "resnet"],
)
def test_stem_conv_reads_the_nchw_input(kernel, pad, k, size, batch):
    model = stem_model(k=k, size=size, kernel=kernel, pad=pad, batch=batch)
    art = ember.compile(model)
    names = kernel_names(art.graph)
    assert sum("transpose" in n for n in names) == 1, names  # the result's, back to NCHW
    mod = schedules.schedule_module(lower_to_relax(art.graph), resolve("host").target)
    (text,) = [f.script() for gv, f in mod.functions_items() if "conv2d" in gv.name_hint]
    assert f"T.Buffer((T.int64({batch}), T.int64(3), T.int64({size}), T.int64({size}))" in text
    assert "T_transpose" not in text and "T.parallel(" in text and "T.vectorized(" in text
    feeds = random_feeds(model)
    assert_close(art.run(feeds), ort_run(model, feeds))


@pytest.mark.parametrize("c, device", [(16, "cpu"), (3, "cuda")], ids=["16-channels", "gpu"])
def test_other_convs_keep_the_transpose(c, device):
    names = kernel_names(ember.compile(stem_model(c=c)).graph, device)
    assert sum("transpose" in n for n in names) == 2, names


def stem_pool_model(kernel=3, pad=0, pool_pad=0, size=224, batch=1, second_reader=False):
    """x (NCHW, 3 channels) -> Conv(kernel, stride 2, pad, 64 outputs) -> Relu -> MaxPool(3x3, stride 2, pool_pad)
    [+ a second reader of the conv's result]."""
    model = stem_model(k=64, size=size, kernel=kernel, pad=pad, batch=batch)
    graph = model.graph
    graph.output.pop()
    graph.node.append(
        helper.make_node("MaxPool", ["y"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[pool_pad] * 4)
    )
    graph.output.append(helper.make_tensor_value_info("p", onnx.TensorProto.FLOAT, None))
    if second_reader:
        graph.node.append(helper.make_node("ReduceMean", ["y"], ["m"], keepdims=0))
        graph.output.append(helper.make_tensor_value_info("m", onnx.TensorProto.FLOAT, None))
    return model


@pytest.mark.parametrize(
    "kernel, pad, pool_pad, size, batch, strips",
    [
        (3, 0, 0, 224, 1, 8),  # SqueezeNet 1.1: 111x111 conv rows, 55 pooled rows in 8 strips of 7 (the last 6)
        (7, 3, 1, 224, 1, 8),  # ResNet-50: 112x112, 56 pooled rows, the pool padded
        (3, 1, 1, 40, 2, 4),  # two images of 10 pooled rows: two strips each, so both threads have one
    ],
    ids=["squeezenet", "resnet", "batch"],
)
def test_stem_conv_and_max_pool_run_as_one_kernel(kernel, pad, pool_pad, size, batch, strips):
    model = stem_pool_model(kernel, pad, pool_pad, size, batch)
    art = ember.compile(model)
    names = kernel_names(art.graph)
    assert stem.STEM_POOL in names and not any("max_pool" in n or "conv2d" in n for n in names), names
    mod = schedules.schedule_module(lower_to_relax(art.graph), resolve("host").target)
    (text,) = [f.script() for gv, f in mod.functions_items() if gv.name_hint == stem.STEM_POOL]
    assert f"T.parallel(T.int64({strips}))" in text and "T_transpose" not in text
    if pad:  # each strip pads the input rows it reads into a buffer of its own, inside the parallel loop
        assert text.index("T.parallel") < text.index('T.sblock("pad_temp")'), text
    else:
        assert "pad_temp" not in text
    feeds = random_feeds(model)
    assert_close(art.run(feeds), ort_run(model, feeds))


@pytest.mark.parametrize(
    "model, device",
    [(stem_pool_model(second_reader=True), "cpu"), (stem_pool_model(), "cuda")],
    ids=["read-twice", "gpu"],
)
def test_stem_and_pool_stay_apart(model, device):
    names = kernel_names(ember.compile(model).graph, device)
    assert stem.STEM_POOL not in names and any("max_pool" in n for n in names), names


@pytest.mark.parametrize(
    "out_rows, row_bytes, rows",
    [
        (55, 111 * 64 * 4, 7),  # SqueezeNet: 18 conv rows fit 512 KiB, 8 pooled rows a strip: 7 strips, made 8
        (56, 112 * 64 * 4, 7),  # ResNet-50
        (10, 20 * 64 * 4, 5),  # all would fit one strip: two, one a thread
        (3, 1 << 20, 1),  # a row too wide for the buffer: one row a strip
    ],
)
def test_strips_are_even_and_fit_the_buffer(out_rows, row_bytes, rows):
    assert even_strips(out_rows, 2, row_bytes) == rows
