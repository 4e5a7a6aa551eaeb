"""An inverted bottleneck's expand 1x1 conv and 3x3 depthwise conv run as one CPU kernel where the expanded
tensor is large (expand_depthwise.py): the fused kernel matches onnxruntime (conftest's assert_close: rtol 1e-4,
atol 1e-5 scaled by the output's magnitude) for both strides, ragged strips, a batch and each activation it
applies; it is scheduled in parallel strips, its register tiles sized to the target; and where the expanded
tensor is read twice, is small, or is activated by SiLU, or the build is for a GPU, the two convs stay apart."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from onnx import helper

import ember
from ember.backends.tvm import expand_depthwise, schedules
from ember.backends.tvm.lower import lower_to_relax
from ember.backends.tvm.schedules.expand_depthwise import STRIP_BYTES, register_tile, strip_rows
from ember.backends.tvm.targets import resolve
from ember.models.blocks import make_model, mobilenet_v2
from tests.backends.test_winograd import kernel_names
from tests.conftest import assert_close, ort_run, random_feeds


def block_model(c=16, e=96, size=64, stride=2, batch=1, act="clip", second_reader=False):
    """x -> Conv 1x1 (c -> e) -> act -> depthwise Conv 3x3 (stride) -> act -> Conv 1x1 (e -> c) [+ a second
    reader of the expanded tensor]; act: clip (ReLU6), relu or silu; float32 NCHW as exported (Ember converts
    to NHWC)."""
    rng = np.random.default_rng(0)
    inits = {
        "w1": (rng.standard_normal((e, c, 1, 1)) / np.sqrt(c)).astype(np.float32),
        "b1": rng.standard_normal(e).astype(np.float32),
        "w2": (rng.standard_normal((e, 1, 3, 3)) / 3).astype(np.float32),
        "b2": rng.standard_normal(e).astype(np.float32),
        "w3": (rng.standard_normal((c, e, 1, 1)) / np.sqrt(e)).astype(np.float32),
        "lo": np.float32(0),
        "hi": np.float32(6),
    }

    def activation(x, y):
        if act == "clip":
            return [helper.make_node("Clip", [x, "lo", "hi"], [y])]
        if act == "silu":  # as torch.onnx writes nn.SiLU
            return [helper.make_node("Sigmoid", [x], [f"{y}.gate"]), helper.make_node("Mul", [x, f"{y}.gate"], [y])]
        return [helper.make_node("Relu", [x], [y])]

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["e0"]),
        *activation("e0", "e1"),
        helper.make_node("Conv", ["e1", "w2", "b2"], ["d0"], group=e, pads=[1] * 4, strides=[stride] * 2),
        *activation("d0", "d1"),
        helper.make_node("Conv", ["d1", "w3"], ["y"]),
    ]
    outputs = [("y", None)]
    if second_reader:
        nodes.append(helper.make_node("ReduceMean", ["e1"], ["m"], keepdims=0))
        outputs.append(("m", None))
    return make_model(nodes, [("x", [batch, c, size, size])], outputs, inits, opset=13)


@pytest.mark.parametrize(
    "e, stride, size, batch, act",
    [
        (96, 2, 64, 1, "clip"),  # MobileNetV2's downsampling block: 4 strips of 8 output rows
        (96, 1, 56, 1, "relu"),  # stride 1: strips overlap by two expanded rows
        (144, 2, 45, 2, "clip"),  # 23 output rows (a prime): one-row strips, ragged pixel tiles, two images
    ],
)
def test_fused_block_matches_onnxruntime(e, stride, size, batch, act):
    model = block_model(e=e, size=size, stride=stride, batch=batch, act=act)
    art = ember.compile(model)
    names = kernel_names(art.graph)
    assert expand_depthwise.DEPTHWISE_BLOCK in names
    assert sum("conv2d" in n for n in names) == 1  # only the project conv is left on its own
    feeds = random_feeds(model)
    assert_close(art.run(feeds), ort_run(model, feeds))


def test_mobilenet_v2_fuses_its_large_blocks():
    """224x224: features.2 (112x112x96), features.3 and .4 (56x56x144) expand 1 MiB or more; the 28x28 ones
    (602 KB) and smaller do not. The whole model still matches onnxruntime."""
    model = mobilenet_v2(rng=1)
    art = ember.compile(model)
    assert sum(n.startswith(expand_depthwise.DEPTHWISE_BLOCK) for n in kernel_names(art.graph)) == 3
    feeds = random_feeds(model)
    assert_close(art.run(feeds), ort_run(model, feeds))


def test_fused_kernel_runs_in_parallel_strips():
    graph = ember.compile(block_model()).graph
    mod = schedules.schedule_module(lower_to_relax(graph), resolve("host").target)
    (text,) = [f.script() for gv, f in mod.functions_items() if gv.name_hint == expand_depthwise.DEPTHWISE_BLOCK]
    assert "T.parallel(" in text and "T.vectorized(" in text and "T.unroll(" in text
    assert "T.parallel(T.int64(4))" in text  # 32 output rows in strips of 8: 17 expanded rows, 418 KB


@pytest.mark.parametrize(
    "target, tile",
    [
        ({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "skylake-avx512"}, ("8", "3", "16")),
        ({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "haswell"}, ("4", "3", "8")),  # 16 ymm registers
        ({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}, ("8", "3", "4")),
    ],
    ids=["avx512", "avx2", "neon"],
)
def test_expand_tiles_fit_the_target_registers(target, tile):
    """The expand's register tile (pixels x vectors of lanes over 96 channels) stays within the target's
    registers: 24 accumulators of 32 with AVX-512 and NEON, 12 of 16 with AVX2 (4 pixels x 3 vectors, 7 loads
    for 12 FMAs, where 8 x 1 took 9 for 8)."""
    graph = ember.compile(block_model()).graph
    mod = schedules.schedule_module(lower_to_relax(graph), tvm.target.Target(target))
    (text,) = [f.script() for gv, f in mod.functions_items() if gv.name_hint == expand_depthwise.DEPTHWISE_BLOCK]
    unrolled = re.findall(r"T\.unroll\(T\.int64\((\d+)\)\)", text)
    vectorized = re.findall(r"T\.vectorized\(T\.int64\((\d+)\)\)", text)
    assert (unrolled[0], unrolled[1], vectorized[0]) == tile  # the expand tile's init: pixels, vectors, lanes


@pytest.mark.parametrize(
    "columns, vectors, accumulators, tile",
    [
        (112, 8, 12, (4, 2)),  # ResNet-50's stem with AVX2: 64 channels, 8 x 1 would load 9 times for 8 FMAs
        (112, 4, 24, (8, 2)),  # the same with AVX-512
        (111, 8, 12, (3, 2)),  # SqueezeNet's stem with AVX2: 3 divides 111
        (111, 4, 24, (8, 2)),  # ... with AVX-512: 8 pixels, the last tile masked
        (7, 12, 24, (7, 3)),  # MobileNetV2's 7x7 rows with AVX-512 or NEON
        (7, 120, 12, (4, 3)),  # ... with AVX2: two tiles of 4, the second masked, load less than 7 x 1
        (9, 3, 24, (3, 3)),  # 8 x 3 loads least per FMA, but its second tile would compute 1 pixel of 8
    ],
)
def test_register_tile_loads_least_per_fma(columns, vectors, accumulators, tile):
    assert register_tile(columns, vectors, accumulators) == tile


@pytest.mark.parametrize(
    "model, device",
    [
        (block_model(second_reader=True), "cpu"),  # the expanded tensor is read by another node too
        (block_model(size=32), "cpu"),  # 32x32x96 floats: 384 KiB stay in cache between two kernels
        (block_model(act="silu"), "cpu"),  # a sigmoid per expanded element costs more again on the halo rows
        (block_model(), "cuda"),
    ],
    ids=["read-twice", "small", "silu", "gpu"],
)
def test_blocks_that_do_not_fit_keep_two_kernels(model, device):
    names = kernel_names(ember.compile(model).graph, device)
    assert expand_depthwise.DEPTHWISE_BLOCK not in names
    assert sum("conv2d" in n for n in names) == 3


@pytest.mark.parametrize(
    "out_rows, stride, row_bytes, rows",
    [
        (56, 2, 112 * 96 * 4, 4),  # MobileNetV2 features.2: 9 expanded rows (387 KB), 14 strips
        (56, 1, 56 * 144 * 4, 14),  # features.3: 16 expanded rows, 516 KB, 4 strips
        (28, 2, 56 * 144 * 4, 7),  # features.4: 15 rows, 484 KB, 4 strips
        (23, 2, 45 * 96 * 4, 1),  # a prime row count too tall for one strip
    ],
)
def test_strips_fit_the_buffer_and_split_evenly(out_rows, stride, row_bytes, rows):
    assert strip_rows(out_rows, stride, row_bytes) == rows
    assert ((rows - 1) * stride + 3) * row_bytes <= STRIP_BYTES
