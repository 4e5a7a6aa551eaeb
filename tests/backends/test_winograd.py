"""Winograd F(4x4, 3x3) and F(2x2, 3x3) convs: the transform matrices compute a 3x3 correlation, eligible
convs lower to the transforms and batched matmuls and match onnxruntime (conftest's assert_close: rtol 1e-4,
atol 1e-5 scaled by the output's magnitude) with ragged tiles, batches, padding and fused epilogues, their
kernels are scheduled, and convs the transform does not fit, GPU targets and `winograd=False` keep the direct
kernel."""

from __future__ import annotations

import re
import shutil

import numpy as np
import onnx
import pytest
import tvm
from onnx import helper

import ember
from ember.backends.tvm import schedules
from ember.backends.tvm.lower import lower_to_relax
from ember.backends.tvm.targets import resolve
from ember.backends.tvm.winograd import F2, F4, fuses_product, padded_tiles, tile_for, transform_weight
from ember.models.blocks import make_model
from tests.cli.test_cli import ember as ember_cli
from tests.conftest import assert_close, ort_run, random_feeds


def conv_model(c, k, h, w, batch=1, pads=(1, 1, 1, 1), residual=False, **conv_attrs):
    """x -> Conv(3x3, bias) [-> + x] -> Relu, float32."""
    rng = np.random.default_rng(0)
    inits = {
        "w": (rng.standard_normal((k, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32),
        "b": rng.standard_normal(k).astype(np.float32),
    }
    group = conv_attrs.get("group", 1)
    if group > 1:
        inits["w"] = inits["w"][:, : c // group]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=list(pads), **conv_attrs)]
    if residual:
        nodes.append(helper.make_node("Add", ["c", "x"], ["s"]))
    nodes.append(helper.make_node("Relu", ["s" if residual else "c"], ["y"]))
    return make_model(nodes, [("x", [batch, c, h, w])], [("y", None)], inits, opset=13)


def kernel_names(graph, device: str = "cpu", winograd: bool = True) -> list[str]:
    """The kernels of a compiled `graph` lowered for a target of `device` kind (the host's, for a CPU: whether a
    Winograd conv's matmuls fuse depends on its register blocks)."""
    target = resolve("host").target if device == "cpu" else None
    mod = tvm.relax.transform.LegalizeOps()(lower_to_relax(graph, device, winograd, target))
    return [gv.name_hint for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]


@pytest.mark.parametrize("tile", [F4, F2], ids=["F4", "F2"])
def test_transform_matrices_compute_a_3x3_correlation(tile):
    bt, g, at = (np.asarray(x, dtype=np.float64) for x in (tile.b_t, tile.g, tile.a_t))
    rng = np.random.default_rng(0)
    d, w = rng.standard_normal((tile.alpha, tile.alpha)), rng.standard_normal((3, 3))
    got = at @ ((g @ w @ g.T) * (bt @ d @ bt.T)) @ at.T
    want = [[(d[i : i + 3, j : j + 3] * w).sum() for j in range(tile.m)] for i in range(tile.m)]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    w32 = w.astype(np.float32)
    u = transform_weight(w32.reshape(3, 3, 1, 1), tile)
    assert u.dtype == np.float32
    np.testing.assert_allclose(u.reshape(tile.alpha, tile.alpha), g @ w32 @ g.T, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "c, k, h, w, batch, pads, residual, fused",
    [
        (16, 32, 15, 20, 2, (1, 1, 1, 1), False, True),  # ragged tiles in both directions, two images
        (32, 16, 12, 12, 1, (0, 0, 0, 0), False, False),  # no padding: a 10x10 output, 3 rows of tiles
        (16, 16, 13, 11, 1, (2, 0, 0, 2), True, False),  # uneven padding, residual fused into the output transform
        (16, 16, 28, 20, 1, (1, 1, 1, 1), True, True),  # the same, its matmuls in the output transform's kernel
        (24, 48, 30, 20, 1, (1, 1, 1, 1), False, True),  # ragged rows of tiles, 48 channels: 3-vector lane tiles
        (16, 32, 52, 52, 1, (1, 1, 1, 1), False, False),  # 13 tiles a row: no register block divides it
        (256, 256, 7, 7, 1, (1, 1, 1, 1), True, False),  # 7x7: F(2x2, 3x3), ragged tiles, a residual
        (256, 272, 9, 8, 2, (1, 1, 1, 1), False, False),  # F(2x2, 3x3) on 72 pixels, two images
    ],
)
def test_winograd_conv_matches_onnxruntime(c, k, h, w, batch, pads, residual, fused):
    model = conv_model(c, k, h, w, batch, pads, residual)
    art = ember.compile(model)
    names = set(kernel_names(art.graph))
    assert {"winograd_input", "winograd_output"} <= names and ("winograd_matmul" in names) is not fused
    (conv,) = [n for n in art.graph.nodes if "conv2d" in n.op]
    assert tile_for(conv, "cpu") is (F4 if h * w >= 100 else F2)
    feeds = random_feeds(model)
    assert_close(art.run(feeds), ort_run(model, feeds))


AVX512 = tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "cascadelake"})


def scheduled_kernels(model, target=None) -> dict[str, tvm.tirx.PrimFunc]:
    """The scheduled Winograd kernels of `model` compiled for the host (or `target`), by name."""
    target = target or resolve("host").target
    mod = schedules.schedule_module(lower_to_relax(ember.compile(model).graph, target=target), target)
    return {gv.name_hint: f for gv, f in mod.functions_items() if "winograd" in gv.name_hint}


@pytest.mark.parametrize("c, size, alpha", [(128, 28, 6), (256, 7, 4)], ids=["F4", "F2"])
def test_winograd_kernels_are_scheduled(c, size, alpha):
    """Tiles in parallel, channels in vectors, the transforms' matrix loops unrolled (so their selects fold
    to constants), and the matmul's rows a whole number of register blocks (no masked tail)."""
    kernels = {name: f.script() for name, f in scheduled_kernels(conv_model(c, c, size, size)).items()}
    assert len(kernels) == 3, sorted(kernels)
    for name, text in kernels.items():
        assert "T.parallel(" in text and "T.vectorized(" in text, name
    transforms = [t for name, t in kernels.items() if "matmul" not in name]
    assert all(f"T.unroll(T.int64({alpha}))" in t for t in transforms)
    (matmul,) = [t for name, t in kernels.items() if "matmul" in name]
    assert "T.where" not in matmul


@pytest.mark.parametrize("target", [None, AVX512], ids=["host", "avx512"])
def test_winograd_matmul_prefetches_the_next_points_weights(target):
    """Each reduction step of the 14x14 F(4x4) matmul (16 tiles, 256 channels: 256 KiB of weights a point,
    from DRAM in ResNet-50) first requests, for each cache line of its lane tile's weights, the line the
    parallel iteration one point later reads: as many iterations ahead as the point has register blocks of
    tiles."""
    target = target or resolve("host").target
    kernels = scheduled_kernels(conv_model(256, 256, 14, 14), target)
    (text,) = [f.script() for name, f in kernels.items() if "matmul" in name]
    rows = int(re.search(r"T\.unroll\(T\.int64\((\d+)\)\)", text).group(1))
    lanes = int(re.search(r"B_global: T\.Buffer\(\((?:T\.int64\(\d+\), )*T\.int64\((\d+)\)\)", text).group(1))
    reduction = text[text.index("for rc in range(T.int64(256)):") :]
    prefetches = re.findall(r"llvm\.prefetch\", T\.address_of\(B_global\[(.*)\]\), 0, 3, 1\)", reduction)
    assert len(prefetches) == lanes // 16 and all(f"fused + T.int64({16 // rows})" in p for p in prefetches)


@pytest.mark.parametrize("batch, size, rows, tiles", [(1, 28, 7, 7), (2, 28, 14, 7), (1, 56, 14, 14)])
def test_fused_matmuls_run_a_row_of_tiles_per_parallel_iteration(batch, size, rows, tiles):
    """A conv of 32 channels (147 KB of transformed weights) for AVX-512: two kernels, the second's parallel loop
    over the rows of tiles of every image, each computing its tiles' 36 products in register blocks of 7 tiles x 32
    channels (a stack array of 7 x 32) before transforming them, into a buffer of one row's products, not the
    whole image's."""
    kernels = scheduled_kernels(conv_model(32, 32, size, size, batch), AVX512)
    assert len(kernels) == 2, sorted(kernels)
    (fused,) = [f for name, f in kernels.items() if "output" in name]
    text = fused.script()
    assert f"T.parallel(T.int64({rows}))" in text
    assert 'T.sblock("winograd_product_update")' in text and "T.unroll(T.int64(7))" in text
    steps = ("PlanAndUpdateBufferAllocationLocation", "ConvertBlocksToOpaque", "CompactBufferAllocation")
    compact = tvm.transform.Sequential([getattr(tvm.s_tir.transform, step)() for step in steps])
    compacted = compact(tvm.IRModule({"main": fused}))["main"].script()
    for shape in (f"T.int64(36), T.int64({tiles}), T.int64(32)", "T.int64(1), T.int64(7), T.int64(32)"):
        assert f"sblock_alloc_buffer(({shape}))" in compacted


@pytest.mark.parametrize(
    "c, k, h, limit, fused",
    [
        (32, 32, 28, 8, True),  # 147 KB of weights, 7 rows of 7 tiles: SqueezeNet's 27x27 convs (AVX-512)
        (32, 32, 28, 6, False),  # AVX2's and NEON's blocks of up to 6 tiles: none divides 7
        (64, 64, 56, 8, True),  # 590 KB, 14 tiles a row: ResNet-50's first stage
        (32, 32, 52, 8, False),  # 13 tiles a row: no block of 4 to 8 tiles divides it
        (32, 32, 36, 8, False),  # 9 tiles a row: blocks of 3
        (16, 16, 36, 16, True),  # the same with one-vector tiles of up to 16 rows: one block of 9
        (48, 192, 13, 8, False),  # 1.3 MB: SqueezeNet's 13x13 convs took 1.08-1.10x fused
        (128, 128, 28, 8, False),  # 2.4 MB
        (32, 32, 20, 8, False),  # 5 rows of tiles
    ],
)
def test_matmuls_fuse_into_the_output_transform_where_weights_fit_l2(c, k, h, limit, fused):
    (conv,) = [n for n in ember.compile(conv_model(c, k, h, h)).graph.nodes if "conv2d" in n.op]
    assert fuses_product(conv, F4, limit) is fused


@pytest.mark.parametrize(
    "count, limit, padded",
    [(16, 8, 16), (16, 6, 16), (49, 8, 49), (49, 6, 50), (196, 8, 196), (4, 8, 4), (9, 8, 10), (1, 6, 3)],
)
def test_tiles_pad_to_the_register_block_that_pads_least(count, limit, padded):
    """7x7 and 14x14 outputs' 16 tiles take blocks of 8 rows (AVX-512) or 4 (AVX2, NEON), not 18 rows of 6."""
    assert padded_tiles(count, limit) == padded


@pytest.mark.parametrize(
    "target, rows",
    [
        ({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "cascadelake"}, 49),
        ({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "haswell"}, 50),
        ("aarch64-linux-gnu", 50),
    ],
    ids=["avx512", "avx2", "neon"],
)
def test_matmul_rows_fit_the_targets_register_blocks(target, rows):
    """A 28x28 output is 49 tiles: AVX-512's tiles of up to 8 rows take them as 7 blocks of 7, AVX2's and NEON's
    of up to 6 pad one zero tile for 10 blocks of 5; scheduled for that target, the matmul has no masked tail."""
    target = resolve(target).target if isinstance(target, str) else tvm.target.Target(target)
    kernels = scheduled_kernels(conv_model(128, 128, 28, 28), target)
    (matmul,) = [f.script() for name, f in kernels.items() if "winograd_matmul" in name]
    assert f"T.Buffer((T.int64(36), T.int64({rows}), T.int64(128))" in matmul
    assert "T.where" not in matmul


@pytest.mark.parametrize(
    "model",
    [
        conv_model(16, 16, 14, 14, strides=[2, 2]),
        conv_model(16, 16, 14, 14, dilations=[2, 2], pads=(2, 2, 2, 2)),
        conv_model(16, 16, 14, 14, group=2),
        conv_model(8, 16, 14, 14),  # few input channels: the transforms would cost more than they save
        conv_model(16, 16, 8, 8),  # 64 output pixels, too few channels for F(2x2, 3x3)
        conv_model(256, 256, 6, 6),  # 36 output pixels
    ],
    ids=["stride2", "dilated", "grouped", "few-channels", "small", "smaller"],
)
def test_convs_winograd_does_not_fit_keep_the_direct_kernel(model):
    names = kernel_names(ember.compile(model).graph)
    assert not [n for n in names if "winograd" in n] and [n for n in names if "conv2d" in n]


def test_gpu_targets_keep_the_direct_conv():
    graph = ember.compile(conv_model(32, 32, 28, 28)).graph
    assert not [n for n in kernel_names(graph, "cuda") if "winograd" in n]
    assert [n for n in kernel_names(graph) if "winograd" in n]


def test_winograd_can_be_turned_off(tmp_path):
    model = conv_model(32, 32, 28, 28)
    art = ember.compile(model, winograd=False)
    assert not [n for n in kernel_names(art.graph, winograd=False) if "winograd" in n]
    feeds = random_feeds(model)
    assert_close(art.run(feeds), ort_run(model, feeds))
    onnx.save(model, tmp_path / "conv.onnx")
    sizes = {}
    for flags in ((), ("--no-winograd",)):
        out = tmp_path / f"b{len(flags)}"
        r = ember_cli("compile", str(tmp_path / "conv.onnx"), "-o", str(out), *flags)
        assert r.returncode == 0, r.stderr
        sizes[flags] = sum(f.stat().st_size for f in out.iterdir())
    # 36 transformed 32 x 32 matrices in place of 9: 110 KB more, and the three kernels' code
    assert 110_000 < sizes[()] - sizes[("--no-winograd",)] < 160_000


@pytest.mark.skipif(
    not (shutil.which("qemu-aarch64") and shutil.which("aarch64-linux-gnu-g++")),
    reason="qemu-aarch64 or aarch64-linux-gnu-g++ is not installed (make tools installs both)",
)
@pytest.mark.parametrize(
    "model, kernels",
    [(conv_model(16, 24, 15, 20, batch=2), 2), (conv_model(32, 16, 12, 12, pads=(0, 0, 0, 0)), 3)],
    ids=["fused", "matmul-kernel"],
)
def test_aarch64_winograd_bundle_matches_onnxruntime_under_qemu(tmp_path, model, kernels):
    """NEON's 4-lane vectors: other channel vectors and register blocks than the host's, with the matmuls in the
    output transform's kernel and in their own."""
    art = ember.compile(model, "aarch64-linux-gnu")
    mod = schedules.schedule_module(lower_to_relax(art.graph), resolve("aarch64-linux-gnu").target)
    assert len([gv for gv, _ in mod.functions_items() if "winograd" in gv.name_hint]) == kernels
    art.save(tmp_path / "bundle")
    feeds = random_feeds(model)
    assert_close(ember.load(tmp_path / "bundle").run(feeds, emulate=True), ort_run(model, feeds))
