"""Ember's CPU schedule rules: scheduled models still match onnxruntime (tolerances of conftest's
assert_close), conv and dense kernels come out parallel and vectorized at the target's SIMD width, the
rules decline what they do not fit, and an aarch64 (NEON, NHWC) build still compiles and links."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from onnx import helper, numpy_helper

import ember
from ember.backends.tvm import schedules, targets
from ember.backends.tvm.lower import lower_to_relax
from ember.backends.tvm.schedules.common import vector_factor
from ember.backends.tvm.schedules.contraction import (
    ACCUMULATOR_REGISTERS,
    HALF_WIDTH_ACCUMULATORS,
    lane_tile,
    register_width,
    row_factor,
)
from ember.backends.tvm.schedules.conv2d import Conv2D
from ember.backends.tvm.schedules.dense import Dense
from ember.backends.tvm.targets import resolve
from ember.models import random_light_model
from ember.models.blocks import bert_layer, mobilenet_v2, tc_resnet8
from tests.conftest import assert_close, make_model, ort_run, random_feeds


def scheduled_kernels(model, target: str = "host", layout: str | None = None) -> dict[str, str]:
    """Each kernel's scheduled TIR text, from the graph a real compile produced."""
    return kernel_texts(ember.compile(model, target, layout=layout).graph, target)


def kernel_texts(graph, target: str = "host", winograd=True) -> dict[str, str]:
    """Each kernel's scheduled TIR text for a compiled `graph`."""
    spec = resolve(target)
    mod = schedules.schedule_module(lower_to_relax(graph, spec.device, winograd), spec.target)
    return {gv.name_hint: f.script() for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}


@pytest.mark.parametrize(
    "name, build",
    [
        ("squeezenet", lambda: random_light_model("squeezenet")),
        ("mobilenet_v2_96", lambda: mobilenet_v2(96)),
        ("bert_layer", lambda: bert_layer(hidden=64, heads=4, seq=16)),
        ("bert_layer_seq20", lambda: bert_layer(hidden=64, heads=4, seq=20)),
        ("tc_resnet8", tc_resnet8),
    ],
)
def test_scheduled_model_matches_onnxruntime(name, build):
    model = build()
    feeds = random_feeds(model)
    assert_close(ember.compile(model, "host").run(feeds), ort_run(model, feeds))


def test_nhwc_scheduled_model_matches_onnxruntime():
    model = mobilenet_v2(96)
    feeds = random_feeds(model)
    assert_close(ember.compile(model, "host", layout="NHWC").run(feeds), ort_run(model, feeds))


def test_conv_kernel_is_parallel_vectorized_and_register_blocked():
    conv = helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1])
    relu = helper.make_node("Relu", ["c"], ["y"])
    rng = np.random.default_rng(0)
    inits = {"w": rng.standard_normal((32, 16, 3, 3)).astype("float32"), "b": rng.standard_normal(32).astype("float32")}
    model = make_model([conv, relu], [("x", [1, 16, 16, 16])], [("y", None)], inits, opset=13)
    art = ember.compile(model, "host", winograd=False)  # the direct kernel, not Winograd's
    kernels = kernel_texts(art.graph, winograd=False)
    (text,) = [t for name, t in kernels.items() if "conv2d" in name]
    assert "T.parallel(" in text
    lanes = schedules.vector_bits(resolve("host").target) // 32
    assert f"T.vectorized(T.int64({vector_factor(16, lanes)}))" in text  # along the 16 output columns
    assert "T.unroll(" in text  # rows of output channels accumulate in registers
    assert "_init" in text  # the accumulator is zeroed outside the reduction loops
    feeds = random_feeds(model)
    assert_close(art.run(feeds), ort_run(model, feeds))
    # The accumulator tile is a stack array: in "local" scope it was a TVMBackendAllocWorkspace call per
    # parallel iteration (depthwise convs ran 1.6-2x slower for it).
    ir_text = "\n".join(sub.inspect_source("ll") for sub in art.executable.mod.imports if sub.kind == "llvm")
    tasks = re.findall(r"(?ms)^define [^@]*@__tvm_parallel_lambda[\w.]*\(.*?^}", ir_text)
    assert tasks and not [body for body in tasks if "__TVMBackendAllocWorkspace" in body]


def test_pointwise_conv_tiles_channels_that_are_no_multiple_of_two_vectors():
    """40 output channels (1000 in SqueezeNet's classifier) are 5 AVX2 vectors per register row: each is
    vectorized alone in an unrolled loop, as LLVM shuffles a 40-float vector. A stride-2 1x1 conv merges its
    output pixels into one row axis all the same."""
    conv = helper.make_node("Conv", ["x", "w", "b"], ["y"], strides=[2, 2])
    rng = np.random.default_rng(0)
    inits = {"w": rng.standard_normal((40, 24, 1, 1)).astype("float32"), "b": rng.standard_normal(40).astype("float32")}
    model = make_model([conv], [("x", [1, 24, 14, 14])], [("y", None)], inits, opset=13)
    (text,) = [t for name, t in scheduled_kernels(model).items() if "conv2d" in name]
    lanes = schedules.vector_bits(resolve("host").target) // 32
    tile = lane_tile(40, lanes)
    width = register_width(tile, lanes)  # AVX2: whole registers; AVX-512: half ones
    assert f"T.vectorized(T.int64({width if tile // width in (3, 5) else tile}))" in text
    assert tile // width not in (3, 5) or f"T.unroll(T.int64({tile // width}))" in text
    feeds = random_feeds(model)
    assert_close(ember.compile(model, "host").run(feeds), ort_run(model, feeds))


@pytest.fixture
def avx512(monkeypatch) -> str:
    """A named AVX-512 target (compiled for, not run: the host may lack AVX-512)."""
    spec = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "cascadelake"}
    monkeypatch.setitem(targets.NAMED, "x86-avx512", (spec, "cpu", "an x86 CPU with AVX-512"))
    return "x86-avx512"


def test_avx512_lane_tiles_are_whole_or_half_registers(avx512):
    """1000 output channels (SqueezeNet's classifier) with AVX-512's 16 float lanes: no tile of two or one
    vectors divides 1000, and the lanes were 25 (a vector of 16, one of 8 and a scalar; the kernel ran 13x
    as long as with AVX2's 8 lanes). They are 5 half registers now, as AVX2 takes 5 whole ones."""
    assert (vector_factor(1000, 16), lane_tile(1000, 16)) == (8, 40)
    assert (vector_factor(1000, 8), lane_tile(1000, 8)) == (8, 40)
    assert vector_factor(36, 8) == vector_factor(36, 16) == 4  # one xmm, and tiles of 3 of them as before
    assert lane_tile(36, 8) == lane_tile(36, 16) == 12
    conv = helper.make_node("Conv", ["x", "w", "b"], ["y"])
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((1000, 32, 1, 1)), rng.standard_normal(1000)
    inits = {"w": w.astype("float32"), "b": b.astype("float32")}
    model = make_model([conv], [("x", [1, 32, 13, 13])], [("y", None)], inits, opset=13)
    (text,) = [t for name, t in scheduled_kernels(model, avx512).items() if "conv2d" in name]
    assert "T.vectorized(T.int64(25))" not in text
    assert "T.unroll(T.int64(5))" in text and "T.vectorized(T.int64(8))" in text
    # 5 half registers a row: 4 rows (HALF_WIDTH_ACCUMULATORS), where whole registers' budget of 16 gave 3
    update = text[: text.index('T.sblock("conv2d_nhwc_update")')].splitlines()[-6:]
    rows = row_factor(169, HALF_WIDTH_ACCUMULATORS[512] // 5)
    assert rows == 4 and any(f"T.unroll(T.int64({rows}))" in line for line in update)
    feeds = random_feeds(model)
    assert_close(ember.compile(model, "host").run(feeds), ort_run(model, feeds))


def test_avx512_register_tiles_are_stack_arrays(avx512):
    """An AVX-512 register tile reaches TVM's 1 KiB stack limit (16 accumulators of 64 bytes), over which
    LowerTVMBuiltin allocated it with TVMBackendAllocWorkspace once per parallel iteration; the stack_arrays pass
    keeps it on the stack (MobileNetV2 fp32 had 16 such kernels)."""
    conv = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])
    rng = np.random.default_rng(0)
    inits = {"w": rng.standard_normal((64, 64, 3, 3)).astype("float32"), "b": rng.standard_normal(64).astype("float32")}
    model = make_model([conv], [("x", [1, 64, 28, 28])], [("y", None)], inits, opset=13)
    art = ember.compile(model, avx512, winograd=False)
    ir_text = "\n".join(sub.inspect_source("ll") for sub in art.executable.mod.imports if sub.kind == "llvm")
    tasks = re.findall(r"(?ms)^define [^@]*@__tvm_parallel_lambda[\w.]*\(.*?^}", ir_text)
    assert tasks and not [body for body in tasks if "__TVMBackendAllocWorkspace" in body]


def test_conv_over_half_vectors_of_channels_unrolls_half_vector_registers():
    """36 output channels (TC-ResNet8-1.5's 1-D convs) take lane tiles of 12 floats: 1.5 AVX2 vectors, which LLVM
    pads to 16 and shuffles (5.7 GMAC/s). They run as 3 unrolled half-vector registers, and the register rows
    are counted in those registers."""
    conv = helper.make_node("Conv", ["x", "w"], ["y"], pads=[4, 4])
    w = np.random.default_rng(0).standard_normal((36, 36, 9)).astype("float32")
    model = make_model([conv], [("x", [1, 36, 51])], [("y", None)], {"w": w}, opset=13)
    (text,) = [t for name, t in scheduled_kernels(model).items() if "conv2d" in name]
    lanes = schedules.vector_bits(resolve("host").target) // 32
    if 36 % lanes:
        width = register_width(12, lanes)  # AVX2: half registers; AVX-512: quarter ones
        update = text[: text.index('T.sblock("conv2d_nhwc_update")')].splitlines()[-5:]
        assert "T.unroll(T.int64(3))" in update[-3] and f"T.vectorized(T.int64({width}))" in update[-2]
    feeds = random_feeds(model)
    assert_close(ember.compile(model, "host").run(feeds), ort_run(model, feeds))


def test_depthwise_conv_tiles_one_vector_of_channels_by_rows_dividing_the_width():
    """A depthwise NHWC conv's register tile is one vector of channels by 8 of the 56 output columns (a
    divisor of the width: no masked tail tile), where two vectors by 6 columns ran 1.1-1.9x slower."""
    conv = helper.make_node("Conv", ["x", "w", "b"], ["y"], group=32, pads=[1, 1, 1, 1])
    rng = np.random.default_rng(0)
    inits = {"w": rng.standard_normal((32, 1, 3, 3)).astype("float32"), "b": rng.standard_normal(32).astype("float32")}
    model = make_model([conv], [("x", [1, 32, 56, 56])], [("y", None)], inits, opset=13)
    (text,) = [t for name, t in scheduled_kernels(model).items() if "conv2d" in name]
    bits = schedules.vector_bits(resolve("host").target)
    rows = row_factor(56, ACCUMULATOR_REGISTERS[bits], exact=True)  # 8 with AVX2's 12 registers, 14 with 16
    assert "group_conv2d_nhwc" in text
    assert f"T.vectorized(T.int64({bits // 32}))" in text and f"T.unroll(T.int64({rows}))" in text
    assert "T.where" not in text
    feeds = random_feeds(model)
    assert_close(ember.compile(model, "host").run(feeds), ort_run(model, feeds))


def grouped_conv(per_group: int, groups: int = 4):
    c = groups * per_group
    conv = helper.make_node("Conv", ["x", "w", "b"], ["y"], group=groups)
    w = np.random.default_rng(0).standard_normal((c, per_group, 1, 1)).astype("float32")
    return make_model([conv], [("x", [1, c, 14, 14])], [("y", None)], {"w": w, "b": np.ones(c, "float32")}, 13)


@pytest.mark.parametrize("per_group", [40, 24])
def test_grouped_conv_lane_tiles_stay_inside_a_group(per_group):
    """A lane tile across two groups reads each lane's input from another address, a gather per lane
    (ShuffleNet's 1x1 convs over 4 groups of 68 channels ran at 2 GMAC/s in tiles of 16); tiles that divide
    the group read one broadcast input."""
    model = grouped_conv(per_group)
    art = ember.compile(model, "host")
    (text,) = [t for name, t in kernel_texts(art.graph).items() if "conv2d" in name]
    assert "group_conv2d_nhwc" in text
    assert per_group % int(re.findall(r"T\.vectorized\(T\.int64\((\d+)\)\)", text)[0]) == 0
    feeds = random_feeds(model)
    assert_close(art.run(feeds), ort_run(model, feeds))


def test_grouped_conv_pads_its_groups_to_whole_vectors():
    """ShuffleNet's groups of 34 outputs would take tiles of 2 lanes: the conv computes groups of 40 (zero
    weights) in 8-lane tiles, and a copy drops the padding."""
    model = grouped_conv(34)
    art = ember.compile(model, "host")
    kernels = kernel_texts(art.graph)
    (text,) = [t for name, t in kernels.items() if "conv2d" in name]
    assert "group_conv2d_nhwc: T.Buffer((T.int64(1), T.int64(14), T.int64(14), T.int64(160))" in text
    width = int(re.findall(r"T\.vectorized\(T\.int64\((\d+)\)\)", text)[0])
    assert width >= 8 and 40 % width == 0
    (copy,) = [t for name, t in kernels.items() if "strided_slice" in name]
    assert "T.vectorized(" in copy  # its vectors read runs of 34 channels: not an interleave (common.interleaves)
    feeds = random_feeds(model)
    assert_close(art.run(feeds), ort_run(model, feeds))


def shuffle_unit(then_depthwise: bool):
    """A grouped conv (4 groups of 34), ReLU and channel shuffle (reshape, transpose, reshape); with
    `then_depthwise`, the depthwise conv ShuffleNet runs next, which keeps the shuffle's output NHWC."""
    conv = grouped_conv(34)
    nodes = [
        *conv.graph.node,
        helper.make_node("Relu", ["y"], ["r"]),
        helper.make_node("Reshape", ["r", "split"], ["s"]),
        helper.make_node("Transpose", ["s"], ["t"], perm=[0, 2, 1, 3, 4]),
        helper.make_node("Reshape", ["t", "merged"], ["z"]),
    ]
    inits = {i.name: numpy_helper.to_array(i) for i in conv.graph.initializer}
    inits |= {"split": np.array([1, 4, 34, 14, 14], np.int64), "merged": np.array([1, 136, 14, 14], np.int64)}
    if then_depthwise:
        nodes.append(helper.make_node("Conv", ["z", "dw"], ["d"], group=136, pads=[1] * 4))
        inits["dw"] = np.random.default_rng(1).standard_normal((136, 1, 3, 3)).astype(np.float32)
    return make_model(nodes, [("x", [1, 136, 14, 14])], [("d" if then_depthwise else "z", None)], inits, 13)


def test_elementwise_chain_after_a_grouped_conv_is_one_loop_nest():
    """ShuffleNet's unit: a grouped conv's bias, ReLU and channel shuffle (reshape, transpose, reshape) fuse into
    one kernel, scheduled as one parallel nest with no buffer between the ops (ShuffleNet's three nests and two
    buffers took 1.2-1.4x the time)."""
    model = shuffle_unit(then_depthwise=False)
    art = ember.compile(model, "host")
    (text,) = [t for name, t in kernel_texts(art.graph).items() if "relu" in name]
    assert text.count("T.parallel(") == 1 and "sblock_alloc_buffer" not in text
    feeds = random_feeds(model)
    assert_close(art.run(feeds), ort_run(model, feeds))


def test_channel_shuffle_is_unrolled_for_llvm_to_vectorize_with_shuffles():
    """Inside ShuffleNet (NHWC) each 16-lane vector of the shuffle's output interleaves 4 groups: TVM vectorized it
    into one scalar load per lane; unrolled, LLVM's SLP vectorizer builds the vectors from short loads and
    shuffles (ShuffleNet 0.91-0.92x the time)."""
    model = shuffle_unit(then_depthwise=True)
    art = ember.compile(model, "host")
    (text,) = [t for name, t in kernel_texts(art.graph).items() if "relu" in name]
    assert "T.unroll(" in text and "T.vectorized(" not in text
    feeds = random_feeds(model)
    assert_close(art.run(feeds), ort_run(model, feeds))


@pytest.mark.parametrize(
    "shape, perm, tiled",
    [
        ([1, 56, 56, 256], [0, 3, 1, 2], True),  # an NHWC model's output back to NCHW
        ([1, 64, 28, 28], [0, 2, 3, 1], True),
        ([1, 16, 8, 8, 32], [0, 4, 1, 2, 3], True),  # 3-D
        ([1, 14, 14, 6], [0, 3, 1, 2], False),  # 6 channels: no tile of 4 or more divides them
        ([8, 12, 16, 64], [0, 2, 1, 3], False),  # the innermost axis stays innermost: a plain copy
    ],
)
def test_transpose_is_tiled_over_both_innermost_axes(shape, perm, tiled):
    """Each output vector of a transpose reads one element from each of its input rows; tiled, the rows are read
    whole from L1 across the tile, where untiled each came back from L2 once per element: NHWC [1, 56, 56, 256]
    to NCHW took 0.21 ms instead of 1.83 ms, one thread (onnxruntime 0.35 ms)."""
    model = make_model([helper.make_node("Transpose", ["x"], ["y"], perm=perm)], [("x", shape)], [("y", None)], [])
    art = ember.compile(model, "host")
    (text,) = kernel_texts(art.graph).values()
    tile = re.search(r"in range\(T\.int64\((16|8|4)\)\):\n\s*for \w+ in T\.vectorized\(", text)
    assert bool(tile) == tiled
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(art.run({"x": x})["y"], x.transpose(perm))  # tolerance: none, a copy


@pytest.mark.parametrize("cpu, flags", [("znver4", True), ("cascadelake", True), ("znver3", False)])
def test_avx512_host_builds_prefer_shuffles_to_gathers(cpu, flags, monkeypatch):
    """On an AVX-512 host LLVM is told to prefer shuffles to gathers and scatters: a Zen 4 build vectorized the
    channel shuffle with vgatherdps/vscatterqps, 3-5x the time of the AVX2 build's shuffles. Compiled only (the
    host CPU is stood in for), as a host build would be."""
    monkeypatch.setattr(tvm.target.codegen, "llvm_get_system_cpu", lambda: cpu)
    monkeypatch.setattr(targets, "host_arch", lambda: "x86_64")
    assert ("+prefer-no-gather" in list(resolve("host").target.attrs.get("mattr", []))) == flags
    if cpu != "znver4":
        return
    art = ember.compile(shuffle_unit(then_depthwise=True), "host")
    asm = "\n".join(sub.inspect_source("asm") for sub in art.executable.mod.imports if sub.kind == "llvm")
    assert not re.search(r"vgather|vscatter", asm)


def test_elementwise_op_before_a_stencil_keeps_its_own_nest():
    """A linear resize reads four neighbours per output: inlined into it, the exp before it would run four
    times per input."""
    nodes = [helper.make_node("Exp", ["x"], ["e"]), helper.make_node("Resize", ["e", "", "s"], ["y"], mode="linear")]
    model = make_model(nodes, [("x", [1, 8, 16, 16])], [("y", None)], {"s": np.array([1, 1, 2, 2], "float32")}, 13)
    art = ember.compile(model, "host")
    (text,) = [t for name, t in kernel_texts(art.graph).items() if "resize" in name]
    assert text.count("T.Let(") == 1  # exp's vector form (ember.backends.tvm.fast_math) binds its argument once
    feeds = random_feeds(model)
    assert_close(art.run(feeds), ort_run(model, feeds))


def test_pointwise_conv_with_few_input_channels_tiles_pixels_over_the_whole_reduction():
    """A 1x1 conv of 16 input channels (MobileNetV2's expand) is not cache blocked: its parallel tiles are
    pixels x lanes, rows dividing the 56x56 pixels (no masked tail), where lane tiles sweeping every pixel
    ran 1.5-1.8x slower."""
    conv = helper.make_node("Conv", ["x", "w", "b"], ["y"])
    rng = np.random.default_rng(0)
    inits = {"w": rng.standard_normal((96, 16, 1, 1)).astype("float32"), "b": rng.standard_normal(96).astype("float32")}
    model = make_model([conv], [("x", [1, 16, 56, 56])], [("y", None)], inits, opset=13)
    (text,) = [t for name, t in scheduled_kernels(model).items() if "conv2d" in name]
    bits = schedules.vector_bits(resolve("host").target)
    tile = lane_tile(96, bits // 32)
    rows = row_factor(56 * 56, ACCUMULATOR_REGISTERS[bits] // (tile // (bits // 32)), exact=True)
    assert f"T.parallel(T.int64({56 * 56 // rows * (96 // tile)}))" in text
    assert "T.where" not in text
    feeds = random_feeds(model)
    assert_close(ember.compile(model, "host").run(feeds), ort_run(model, feeds))


def test_pointwise_conv_with_few_inputs_but_large_weights_is_cache_blocked():
    """A 1x1 conv of 160 input channels to 960 over 7x7 pixels (MobileNetV2's last expand convs) has 600 KiB of
    weights, which each of its pixel tiles would read again: its parallel tiles are lane tiles alone, each
    sweeping all 49 pixels with a K chunk of its weights in L1."""
    conv = helper.make_node("Conv", ["x", "w", "b"], ["y"])
    rng = np.random.default_rng(0)
    inits = {"w": rng.standard_normal((960, 160, 1, 1)).astype("f4"), "b": rng.standard_normal(960).astype("f4")}
    model = make_model([conv], [("x", [1, 160, 7, 7])], [("y", None)], inits, opset=13)
    (text,) = [t for name, t in scheduled_kernels(model).items() if "conv2d" in name]
    assert f"T.parallel(T.int64({960 // lane_tile(960, schedules.vector_bits(resolve('host').target) // 32)}))" in text
    feeds = random_feeds(model)
    assert_close(ember.compile(model, "host").run(feeds), ort_run(model, feeds))


def test_cache_blocked_pointwise_conv_gives_each_thread_a_contiguous_half_of_the_pixels():
    """A 1x1 conv of 256 input channels (cache blocked) parallelizes over two halves of its 784 merged pixels
    times the lane tiles, halves outermost: with 2 threads each sweeps the pixels of its half over all lane
    tiles, reading only the half of the input its thread wrote before. A tile's epilogue stores exactly its
    half's 392 rows, unmasked: an epilogue over its 66 blocks of 6 register rows (396) stored 4 rows of the
    other half, racing the thread that computed them (ResNet-50 on aarch64 under qemu came out wrong)."""
    conv = helper.make_node("Conv", ["x", "w", "b"], ["y"])
    rng = np.random.default_rng(0)
    inits = {"w": rng.standard_normal((64, 256, 1, 1)).astype("float32"), "b": rng.standard_normal(64).astype("f4")}
    model = make_model([conv], [("x", [1, 256, 28, 28])], [("y", None)], inits, opset=13)
    (text,) = [t for name, t in scheduled_kernels(model).items() if "conv2d" in name]
    tiles = 64 // lane_tile(64, schedules.vector_bits(resolve("host").target) // 32)
    assert f"T.parallel(T.int64({2 * tiles}))" in text
    epilogue = text[text.rindex("T.sblock(") :]
    assert re.search(rf"v1 = T\.axis\.spatial\(T\.int64\(2\), \w+ // T\.int64\({tiles}\)", epilogue)
    assert re.search(r"v2 = T\.axis\.spatial\(T\.int64\(392\), ax\d+\)", epilogue)
    assert "T.where" not in epilogue
    feeds = random_feeds(model)
    assert_close(ember.compile(model, "host").run(feeds), ort_run(model, feeds))


def test_pointwise_conv_with_one_lane_tile_and_odd_pixels_is_not_cache_blocked(avx512):
    """A 1x1 conv of 256 input channels to 32 over 27x27 pixels (SqueezeNet's squeeze convs): one AVX-512 lane
    tile, and 729 pixels that do not halve, so a cache-blocked schedule had nothing to run in parallel (it took
    as long on 2 threads as on 1). It tiles pixels x lanes like a 3x3 conv, in parallel over pixel blocks."""
    conv = helper.make_node("Conv", ["x", "w", "b"], ["y"])
    rng = np.random.default_rng(0)
    inits = {"w": rng.standard_normal((32, 256, 1, 1)).astype("float32"), "b": rng.standard_normal(32).astype("f4")}
    model = make_model([conv], [("x", [1, 256, 27, 27])], [("y", None)], inits, opset=13)
    (text,) = [t for name, t in scheduled_kernels(model, avx512).items() if "conv2d" in name]
    rows = row_factor(729, ACCUMULATOR_REGISTERS[512] // 2)
    assert lane_tile(32, 16) == 32 and f"T.parallel(T.int64({-(-729 // rows)}))" in text
    feeds = random_feeds(model)
    assert_close(ember.compile(model, "host").run(feeds), ort_run(model, feeds))


@pytest.mark.parametrize("stride, size", [(1, 7), (2, 14)])
def test_spatial_conv_with_a_narrow_output_blocks_rows_of_merged_pixels(stride, size):
    """A 3x3 conv with a 7-wide output blocks its register rows over the 49 merged pixels (rows at the
    register limit, where rows of one output row were 4 and 3), stride 2 as well; it still matches."""
    conv = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], strides=[stride, stride])
    rng = np.random.default_rng(0)
    inits = {"w": rng.standard_normal((32, 24, 3, 3)).astype("float32"), "b": rng.standard_normal(32).astype("float32")}
    model = make_model([conv], [("x", [1, 24, size, size])], [("y", None)], inits, opset=13)
    (text,) = [t for name, t in scheduled_kernels(model).items() if "conv2d" in name]
    bits = schedules.vector_bits(resolve("host").target)
    rows = row_factor(49, ACCUMULATOR_REGISTERS[bits] // (lane_tile(32, bits // 32) // (bits // 32)))
    assert "T.sblock_alloc_buffer((T.int64(1), T.int64(49), T.int64(32)))" in text
    assert f"T.unroll(T.int64({rows}))" in text and rows > 4
    feeds = random_feeds(model)
    assert_close(ember.compile(model, "host").run(feeds), ort_run(model, feeds))


@pytest.mark.parametrize("residual", [True, False])
def test_conv_with_a_residual_prefetches_the_next_tiles_residual_and_output(residual):
    """A conv + bias + residual add + relu kernel prefetches, per parallel tile, the residual rows and output
    rows of the tile two on (in the epilogue they missed the cache after the reduction); without a residual
    nothing is prefetched. The result still matches onnxruntime."""
    conv = helper.make_node("Conv", ["x", "w", "b"], ["c"])
    nodes = [conv, helper.make_node("Add", ["c", "r"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    if not residual:
        nodes = [conv, helper.make_node("Relu", ["c"], ["y"])]
    rng = np.random.default_rng(0)
    inits = {"w": rng.standard_normal((64, 16, 1, 1)).astype("float32"), "b": rng.standard_normal(64).astype("float32")}
    inputs = [("x", [1, 16, 28, 28])] + ([("r", [1, 64, 28, 28])] if residual else [])
    model = make_model(nodes, inputs, [("y", None)], inits, opset=13)
    (text,) = [t for name, t in scheduled_kernels(model).items() if "conv2d" in name]
    prefetches = re.findall(r"llvm\.prefetch\", T\.address_of\((\w+)\[.*?\]\), (\d)", text)
    assert sorted({(buffer.endswith("_intermediate"), rw) for buffer, rw in prefetches}) == (
        [(False, "0"), (True, "1")] if residual else []
    )
    feeds = random_feeds(model)
    assert_close(ember.compile(model, "host").run(feeds), ort_run(model, feeds))


def kernel_named(kernels: dict[str, str], name: str) -> str:
    """The text of kernel `name`, which gets a `_prepacked` suffix where the rules packed its weights."""
    (text,) = [t for k, t in kernels.items() if re.fullmatch(rf"{name}(_prepacked)?", k)]
    return text


def test_dense_kernel_is_parallel_and_vectorized():
    kernels = scheduled_kernels(bert_layer(hidden=128, heads=4, seq=32))
    text = kernel_named(kernels, "fused_matmul_add")
    assert "T.parallel(" in text and "T.vectorized(" in text


def test_tiny_contractions_run_on_one_thread():
    """A 3x3 conv of 55K multiply-adds and a 16x128x32 dense take less time than a thread-pool launch: no
    parallel loop, still vectorized; their values are checked against onnxruntime."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Reshape", ["r", "shape"], ["f"]),
        helper.make_node("MatMul", ["f", "m"], ["y"]),
    ]
    inits = {
        "w": rng.standard_normal((8, 3, 3, 3)).astype("float32"),
        "shape": np.array([16, 128], np.int64),
        "m": rng.standard_normal((128, 32)).astype("float32"),
    }
    model = make_model(nodes, [("x", [1, 3, 16, 16])], [("y", None)], inits, opset=13)
    kernels = scheduled_kernels(model)
    contractions = [t for name, t in kernels.items() if "conv2d" in name or "matmul" in name]
    assert len(contractions) == 2
    for text in contractions:
        assert "T.parallel(" not in text and "T.vectorized(" in text
    feeds = random_feeds(model)
    assert_close(list(ember.compile(model, "host").run(feeds).values()), ort_run(model, feeds))


def test_attention_kernel_is_parallel_over_query_rows_and_vectorized():
    """Scores, softmax (its row max and sum as lane-wise partials) and P V each vectorize inside one parallel
    loop (the model's values are checked against onnxruntime above, at a sequence length the partials do
    not divide too). 32 keys: a row of several vectors with AVX-512 too."""
    text = kernel_named(scheduled_kernels(bert_layer(hidden=64, heads=4, seq=32)), "attention")
    assert "T.parallel(" in text
    stages = ("T_batch_matmul_NT_update", "T_softmax_maxelem_rf_update", "T_softmax_exp", "T_softmax_expsum_rf_update")
    for stage in (*stages, "T_batch_matmul_NN_update"):
        assert re.search(rf"T\.vectorized\([^\n]*\n[^\n]*{stage}", text), stage


def test_attention_softmax_evaluates_exp_as_a_polynomial():
    """The exp intrinsic is a scalar libm call per score; BERT's values still match onnxruntime above."""
    text = kernel_named(scheduled_kernels(bert_layer(hidden=64, heads=4, seq=16)), "attention")
    assert "T.exp(" not in text and "T.reinterpret(" in text


def test_tiny_pool_runs_on_one_thread():
    """512 outputs of a 2x2 max pool: a thread-pool launch costs more (SqueezeNet's pools stay parallel)."""
    pool = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
    model = make_model([pool], [("x", [1, 8, 16, 16])], [("y", None)], opset=13)
    (text,) = [t for name, t in scheduled_kernels(model).items() if "pool" in name]
    assert "T.parallel(" not in text
    feeds = random_feeds(model)
    assert_close(list(ember.compile(model, "host").run(feeds).values()), ort_run(model, feeds))


def test_nhwc_pool_vectorizes_channels_inside_its_window():
    text = scheduled_kernels(random_light_model("squeezenet"))["max_pool2d"]
    assert "T.parallel(" in text
    assert re.search(r"for rv0, rv1 in T\.grid\([^\n]*\n *for \w+ in T\.vectorized", text)


def test_padded_pool_reads_its_input_through_the_padding_condition():
    """ResNet-50's 3x3 stride-2 max pool with padding 1: no padded copy of the input is made first (that pass
    took longer than the pool); values match onnxruntime."""
    conv = helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1])
    pool = helper.make_node("MaxPool", ["c"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    w = np.random.default_rng(0).standard_normal((16, 8, 1, 1)).astype("float32")
    model = make_model([conv, pool], [("x", [1, 8, 30, 30])], [("y", None)], {"w": w}, opset=13)
    (text,) = [t for name, t in scheduled_kernels(model).items() if "pool" in name]
    assert "pad_temp" not in text and "T.if_then_else" in text
    feeds = random_feeds(model)
    assert_close(list(ember.compile(model, "host").run(feeds).values()), ort_run(model, feeds))


def test_exact_gelu_evaluates_erf_as_a_polynomial():
    """The erf intrinsic is a scalar libm call per element; BERT's values still match onnxruntime above."""
    text = kernel_named(scheduled_kernels(bert_layer(hidden=64, heads=4, seq=16)), "fused_matmul1_add2_gelu")
    assert "T.erf" not in text and "T.vectorized(" in text


def test_constant_weights_are_packed_at_compile_time():
    """A dense layer's [K, N] weight constant arrives packed [N / v, K, v] (v its vector length), so the
    reduction reads it contiguously; no packing is left to run with the model."""
    kernels = scheduled_kernels(bert_layer(hidden=64, heads=4, seq=16))
    v = vector_factor(64, schedules.vector_bits(resolve("host").target) // 32)
    assert f"T.Buffer((T.int64({64 // v}), T.int64(64), T.int64({v}))" in kernel_named(kernels, "fused_matmul_add")
    assert not any(name.endswith("weight_prepack") for name in kernels)


def test_rules_decline_kernels_they_do_not_fit():
    model = bert_layer(hidden=64, heads=4, seq=16)
    spec = resolve("host")
    mod = lower_to_relax(ember.compile(model, "host").graph)
    with spec.target:
        mod = tvm.transform.Sequential(schedules.cpu_generic.legalize_passes(spec.target))(mod)
    assert Conv2D().apply(mod["fused_matmul_add"], spec.target, False) is None
    assert Dense().apply(mod["layer_norm"], spec.target, False) is None


@pytest.mark.parametrize(
    "target, bits",
    [
        ({"kind": "llvm", "mcpu": "skylake-avx512"}, 512),
        ({"kind": "llvm", "mcpu": "znver3"}, 256),
        ({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}, 128),
        ({"kind": "llvm", "mtriple": "x86_64-linux-gnu"}, 128),
    ],
)
def test_vector_width_follows_target_features(target, bits):
    assert schedules.vector_bits(tvm.target.Target(target)) == bits


def test_aarch64_nhwc_build_is_scheduled_for_neon():
    """(tests/cli/test_deploy_models.py links this model for aarch64 and runs it under qemu.)"""
    kernels = scheduled_kernels(mobilenet_v2(96), "aarch64-linux-gnu")
    convs = [t for name, t in kernels.items() if "conv2d" in name]
    assert convs and all("T.parallel(" in t for t in convs)
    assert any("T.vectorized(T.int64(8))" in t or "T.vectorized(T.int64(4))" in t for t in convs)


def test_schedules_can_be_turned_off(monkeypatch):
    spec = resolve("host")
    monkeypatch.setenv("EMBER_SCHEDULES", "0")
    from ember.backends.tvm.build import relax_pipeline

    assert not schedules.enabled()
    assert relax_pipeline(spec).info.name != "EmberCPUPipeline"
    assert relax_pipeline(spec, schedule=True).info.name == "EmberCPUPipeline"
