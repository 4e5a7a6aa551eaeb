"""A model's first conv over a few channels reads its NCHW input through the layout transpose in its own kernel
(stem.py): the stems of SqueezeNet 1.1, MobileNetV2 and ResNet-50 compile without a transpose kernel and match
onnxruntime (conftest's assert_close: rtol 1e-4, atol 1e-5 scaled by the output's magnitude), the transpose
inlined into the scheduled conv; convs over more channels and GPU builds keep the transpose."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import ember
from ember.backends.tvm import schedules
from ember.backends.tvm.lower import lower_to_relax
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
