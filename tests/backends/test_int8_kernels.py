"""The integer ops' TVM kernels (ember/backends/tvm/quant_rules.py, schedules/int8.py) against the numpy
references, exactly: every op on the host, the dot-product paths tensorized (vpmaddubsw on AVX2, sdot on an
aarch64 +dotprod build run under qemu)."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm import relax, s_tir, tirx
from tvm.target.codegen import llvm_cpu_has_features

import ember
from ember import ir
from ember.backends.tvm import build as build_module
from ember.backends.tvm import quant_rules, schedules, targets
from ember.backends.tvm import requantize as requant
from ember.backends.tvm.build import build, count_kernels, kernel_names
from ember.backends.tvm.lower import lower_to_relax
from ember.backends.tvm.schedules import contraction
from ember.backends.tvm.schedules import int8 as int8_schedules
from ember.backends.tvm.targets import resolve
from ember.ir.graph import Graph

QMIN = {"u8": 0, "i8": -128}
I32_MAX = (1 << 31) - 1
rng = np.random.default_rng(3)


def _requant(channels: int, per_channel: bool, acc_bits: int) -> dict:
    """Multipliers and shifts that map an accumulator of about 2^acc_bits onto the int8 range."""
    n = channels if per_channel else 1
    mult = [int(m) for m in rng.integers(1 << 30, 1 << 31, n)]
    shift = [int(s) for s in rng.integers(acc_bits + 23, acc_bits + 26, n)]
    return dict(multiplier=mult, shift=shift)


def qconv(
    g, x, cin, cout, k=3, stride=1, group=1, wmax=63, per_channel=True, relu=False, layout="NHWC", pads=None,
    dilations=(1, 1), **over,
):  # fmt: skip
    cg = cin // group
    shape = (k, k, cg, cout) if layout == "NHWC" else (cout, cg, k, k)
    w = g.add_constant(rng.integers(-wmax, wmax + 1, shape).astype(np.int8), "w")
    b = g.add_constant(rng.integers(-3000, 3000, cout).astype(np.int32), "b")
    zp = 9 if x.dtype == "u8" else -4
    bits = int(np.log2(k * k * cg * wmax * 64 + 1))
    attrs = dict(out_zero_point=zp, out_dtype=x.dtype, out_min=zp if relu else QMIN[x.dtype])
    attrs.update(out_max=QMIN[x.dtype] + 255, **_requant(cout, per_channel, bits))
    attrs.update(over)
    return g.emit(
        "qconv2d", x, w, b, strides=[stride] * 2, pads=pads or [k // 2] * 4, dilations=list(dilations),
        group=group, layout=layout, x_zero_point=zp, **attrs,
    )  # fmt: skip


def qdense(g, x, k, n, wmax=63, **over):
    w = g.add_constant(rng.integers(-wmax, wmax + 1, (n, k)).astype(np.int8), "fc")
    zp = 3 if x.dtype == "u8" else -2
    attrs = dict(out_zero_point=-1, out_dtype="i8", out_min=-128, out_max=127)
    attrs.update(_requant(n, True, int(np.log2(k * wmax * 64))))
    attrs.update(over)
    return g.emit("qdense", x, w, None, x_zero_point=zp, **attrs)


def max_pool(g, x, k: int = 2):
    return g.emit("max_pool2d", x, kernel=[k, k], strides=[k, k], pads=[0] * 4, layout="NHWC")


def network(act: str, hw: int = 10) -> Graph:
    """quantize -> 3x3 conv -> 2x2 max pool (fused into it) -> depthwise -> strided 1x1 (per tensor) ->
    wide-weight conv -> flatten -> dense -> dequantize: every integer kernel form in one graph."""
    g = Graph("int8")
    x = g.add_input("x", [1, hw, hw, 3])
    q = g.emit("quantize", x, scale=0.02, zero_point=9 if act == "u8" else -4, dtype=act)
    y = max_pool(g, qconv(g, q, 3, 16, relu=True))
    y = qconv(g, y, 16, 16, group=16)
    y = qconv(g, y, 16, 24, k=1, stride=2, per_channel=False)
    y = qconv(g, y, 24, 20, wmax=127)
    y = g.emit("reshape", y, g.add_constant(np.array([1, -1], np.int64)))
    y = qdense(g, y, 20 * (-(-hw // 4)) ** 2, 10)
    g.outputs.append(g.emit("dequantize", y, scale=[0.05], zero_point=[-1]))
    return g


def _check_exact(g: Graph, got: np.ndarray, feeds: dict) -> None:
    want = ir.interpret(g, feeds)[g.outputs[0].name]
    np.testing.assert_array_equal(got, want)  # tolerance: none, integer kernels are exact


def _asm(artifact) -> str:
    mod = artifact.executable.mod
    texts = []
    for sub in [mod, *mod.imports]:
        try:
            texts.append(sub.inspect_source("asm"))
        except Exception:  # modules without assembly (the VM's own)
            continue
    return "\n".join(texts)


def _kernels(asm: str) -> dict[str, str]:
    """Each kernel's assembly by its name (not the compiled VM main's)."""
    found = re.findall(r"^(\w+_compute_\w*):\n(.*?)(?=^[A-Za-z_]\w*:\n|\Z)", asm, flags=re.M | re.S)
    return {name: body for name, body in found if not name.startswith("__vmtir__")}


@pytest.mark.parametrize("act", ["u8", "i8"])
def test_network_matches_reference_on_host(act):
    g = network(act)
    feeds = {"x": rng.standard_normal((1, 10, 10, 3)).astype(np.float32)}
    art = ember.compile(g, "host", passes="")
    assert "max_pool2d" not in art.graph.op_counts()
    _check_exact(g, art.run(feeds)[g.outputs[0].name], feeds)


@pytest.mark.parametrize("act, k, parallel", [("u8", 2, True), ("i8", 3, False)])
def test_fused_max_pool_matches_requantize_then_pool_exactly(act, k, parallel, monkeypatch):
    """A k x k, stride k max pool fuses into the conv before it (fuse-qconv-pool): one kernel takes each window's
    max of the int32 sums and requantizes it once, giving exactly what requantizing every pixel and pooling gives.
    In parallel each half of the pooled rows holds whole windows. The trained CNN's two convs with pools: 0.80x
    the time of conv and pool apart, the whole model 0.83x (5.37 against 6.45 us, 2 threads, in turns)."""
    if parallel:
        monkeypatch.setattr(int8_schedules, "MIN_PARALLEL_MACS", 0)
    hw, channels = 4 * k * k, 24 if parallel else 8
    g = Graph("pooled")
    x = g.add_input("x", [1, hw, hw, 3])
    q = g.emit("quantize", x, scale=0.02, zero_point=9 if act == "u8" else -4, dtype=act)
    y = max_pool(g, qconv(g, q, 3, channels, relu=True), k)
    g.outputs.append(g.emit("dequantize", max_pool(g, qconv(g, y, channels, 16), k), scale=[0.05], zero_point=[1]))
    feeds = {"x": rng.standard_normal((1, hw, hw, 3)).astype(np.float32)}
    want = ir.interpret(g, feeds)[g.outputs[0].name]
    art = ember.compile(g, "host", passes="")
    assert "max_pool2d" not in art.graph.op_counts()
    assert [n.attrs["max_pool"] for n in art.graph.nodes if n.op == "qconv2d"] == [(k, k)] * 2
    assert len(_parallel_tasks(art)) >= 2 or not parallel  # both convs, when forced
    np.testing.assert_array_equal(art.run(feeds)[g.outputs[0].name], want)


@pytest.mark.parametrize(
    "case",
    ["nchw", "nchw_pool", "dense3d", "odd", "rows", "low_shift", "f32_conv", "f32_dense"],
)
def test_layer_forms_match_reference(case):
    """NCHW lowers through NHWC; dense over [B, S, K] with K not a multiple of 4; O not a multiple of 8; input
    channels not a multiple of 4 (6; 1 with stride 2, uneven pads and a vertical dilation, from NCHW), which
    reduce over flattened rows; shifts under 33, which requantize in int64 rather than on the product's high
    word; f32 outputs (a folded dequantize), per channel with a relu's clip at 0 and per tensor."""
    g = Graph(case)
    if case == "nchw":
        x = g.add_input("x", [1, 8, 7, 7], "u8")
        y = qconv(g, x, 8, 12, stride=2, layout="NCHW")
    elif case == "nchw_pool":  # fused by fuse-qconv-pool, pooled in the NHWC kernel
        x = g.add_input("x", [1, 8, 8, 6], "u8")
        y = qconv(g, x, 8, 12, layout="NCHW")
        y = g.emit("max_pool2d", y, kernel=[2, 2], strides=[2, 2], pads=[0] * 4, layout="NCHW")
    elif case == "rows":
        x = g.add_input("x", [1, 1, 11, 9], "u8")
        y = qconv(g, x, 1, 8, stride=2, layout="NCHW", pads=[1, 0, 2, 1], dilations=(2, 1))
    elif case == "dense3d":
        x = g.add_input("x", [2, 3, 13], "u8")
        y = qdense(g, x, 13, 16)
    elif case == "odd":
        x = g.add_input("x", [2, 9, 5, 6], "i8")
        y = qconv(g, x, 6, 13, k=3)
    elif case == "f32_conv":
        x = g.add_input("x", [1, 6, 6, 8], "u8")
        y = qconv(g, x, 8, 12, out_dtype="f32", out_zero_point=0, out_min=0, out_max=I32_MAX, **_requant(12, True, 9))
    elif case == "f32_dense":
        x = g.add_input("x", [2, 40], "u8")
        y = qdense(g, x, 40, 10, out_dtype="f32", out_zero_point=0, out_min=-I32_MAX - 1, out_max=I32_MAX)
    else:
        x = g.add_input("x", [3, 4], "u8")
        w = g.add_constant(rng.integers(-2, 3, (8, 4)).astype(np.int8))
        rq = dict(multiplier=[1 << 30, 3 << 29] * 4, shift=[30, 31, 32, 33] * 2, out_min=-128, out_max=127)
        y = g.emit("qdense", x, w, None, x_zero_point=128, out_zero_point=0, out_dtype="i8", **rq)
    g.outputs.append(y)
    lo = QMIN[x.dtype]
    feeds = {"x": rng.integers(lo, lo + 256, x.shape).astype(np.uint8 if lo == 0 else np.int8)}
    want = ir.interpret(g, feeds)[y.name]
    art = ember.compile(g, "host", passes="")
    assert "max_pool2d" not in art.graph.op_counts()
    np.testing.assert_array_equal(art.run(feeds)[art.graph.outputs[0].name], want)


@pytest.mark.parametrize(
    "case, kept",
    [
        ("transposed_3x3", []),
        ("nchw_7x7_stride2", ["transpose"]),  # its NHWC kernel's output back to NCHW
        ("nhwc_rows", []),
        ("transposed_1x1", ["transpose"]),
        ("quantized_also_output", ["transpose", "quantize"]),
    ],
)
def test_first_conv_quantizes_its_float_input_in_its_own_kernel(case, kept):
    """A conv over a few channels (a model's first) takes the quantize before it into its kernel, and
    convert-layout's transpose to NHWC before that where it reads the channels first as cheaply (3x3 and 7x7 taps
    blocked by 4 per channel: as many blocks as the flattened rows'), exactly. A 1x1 conv over 3 channels keeps
    the transpose (channels first, its 1 tap each would be padded to 4); a quantize something else reads stays a
    kernel. The trained CNN's int8 run: 5 kernels to 4, 3.45 to 3.23 us (2 threads)."""
    g = Graph(case)
    if case == "nchw_7x7_stride2":
        x = g.add_input("x", [1, 3, 20, 18])
        q = g.emit("quantize", x, scale=0.02, zero_point=-4, dtype="i8")
        y = qconv(g, q, 3, 16, k=7, stride=2, layout="NCHW", pads=[3, 3, 2, 3])
    elif case == "nhwc_rows":
        x = g.add_input("x", [1, 10, 10, 3])
        y = qconv(g, g.emit("quantize", x, scale=0.02, zero_point=9, dtype="u8"), 3, 16)
    else:
        x = g.add_input("x", [1, 3, 12, 12])
        q = g.emit("quantize", g.emit("transpose", x, perm=[0, 2, 3, 1]), scale=0.02, zero_point=9, dtype="u8")
        k = 1 if case == "transposed_1x1" else 3
        y = max_pool(g, qconv(g, q, 3, 16, k=k, relu=True))
        if case == "quantized_also_output":
            g.outputs.append(q)
    g.outputs.insert(0, g.emit("dequantize", y, scale=[0.05], zero_point=[1]))
    feeds = {"x": (rng.standard_normal(x.shape) * 2).astype(np.float32)}
    feeds["x"].flat[::17] = np.nan  # quantized to the zero point, in the padding copy as in the quantize kernel
    want = ir.interpret(g, feeds)
    art = ember.compile(g, "host", passes="")
    got = art.run(feeds)
    for v in g.outputs:
        np.testing.assert_array_equal(got[v.name], want[v.name])  # tolerance: none, integer kernels are exact
    ops = {op for name in kernel_names(art.executable) for op in name.split("_")}  # fused_transpose_quantize, ...
    assert [op for op in ("transpose", "quantize") if op in ops] == kept


def test_quantize_rounds_half_to_even_saturates_and_maps_nan_to_zero_point():
    g = Graph("q")
    x = g.add_input("x", [12])
    q = g.emit("quantize", x, scale=0.5, zero_point=10, dtype="u8")
    d = g.emit("dequantize", g.emit("quantize", x, scale=0.1, zero_point=-3, dtype="i8"), scale=[0.1], zero_point=[-3])
    g.outputs.extend([q, d])
    values = [0.25, 0.75, 1.25, -0.25, -0.75, 1e6, -1e6, np.nan, 0.3, 3.7, -12.9, 126.0]
    feeds = {"x": np.array(values, np.float32)}
    out = ember.compile(g, "host", passes="").run(feeds)
    want = ir.interpret(g, feeds)
    for v in (q, d):
        np.testing.assert_array_equal(out[v.name], want[v.name])
    assert out[q.name].tolist()[:8] == [10, 12, 12, 10, 8, 255, 0, 10]


def test_per_axis_dequantize():
    g = Graph("dq")
    x = g.add_input("x", [2, 3, 4], "i8")
    g.outputs.append(g.emit("dequantize", x, scale=[0.5, 0.25, 2.0], zero_point=[1, 0, -2], axis=1))
    feeds = {"x": rng.integers(-128, 128, (2, 3, 4)).astype(np.int8)}
    _check_exact(g, ember.compile(g, "host", passes="").run(feeds)[g.outputs[0].name], feeds)


def test_per_tensor_dequantize_has_immediate_scale_and_fuses_into_residual_add():
    """A ResNet residual (dequantize both branches, add, ReLU) is one kernel whose scales and zero points
    are immediates: as 0-d Relax constants (buffers the kernel loads) it took 0.50-0.67 ms at 56x56x256, 2 threads,
    vs 0.32-0.34 ms."""
    g = Graph("residual")
    a, b = g.add_input("a", [1, 6, 6, 16], "u8"), g.add_input("b", [1, 6, 6, 16], "u8")
    da = g.emit("dequantize", a, scale=[0.05], zero_point=[120])
    g.outputs.append(g.emit("relu", g.emit("add", da, g.emit("dequantize", b, scale=[0.03], zero_point=[3]))))
    assert "R.const" not in lower_to_relax(g).script()
    art = ember.compile(g, "host", passes="")
    assert count_kernels(art.executable) == 1
    feeds = {k: rng.integers(0, 256, (1, 6, 6, 16)).astype(np.uint8) for k in "ab"}
    want = ir.interpret(g, feeds)[g.outputs[0].name]
    # tolerance: one ulp of the larger term (|a - 120| * 0.05 < 16): LLVM contracts a scale and the add into one
    # FMA, rounded once, where the kernel's vectors stay in registers
    np.testing.assert_allclose(art.run(feeds)[g.outputs[0].name], want, rtol=0, atol=2**-20)


def test_residual_qadd_runs_in_the_int8_conv_epilogue_and_dequantize_does_not():
    """MobileNetV2's inverted residual: the project conv's qadd with the block input is the conv kernel's epilogue
    (10 fewer kernels in MobileNetV2, 16 in ResNet-50), exactly; the dequantize after it stays a kernel of its own,
    because float ops fused into the epilogue could be contracted into FMAs and leave the interpreter's results."""
    g = Graph("inverted_residual")
    x = g.add_input("x", [1, 8, 8, 16], "u8")
    y = qconv(g, qconv(g, x, 16, 32, k=1, relu=True), 32, 16, k=1)
    add = dict(a_zero_point=9, b_zero_point=9, a_multiplier=1 << 20, b_multiplier=3 << 18, shift=20)
    z = g.emit("qadd", y, x, out_zero_point=5, out_dtype="u8", out_min=0, out_max=255, **add)
    g.outputs.append(g.emit("dequantize", z, scale=[0.05], zero_point=[5]))
    art = ember.compile(g, "host", passes="")
    assert count_kernels(art.executable) == 3  # the expand conv, the project conv with the qadd, the dequantize
    feeds = {"x": rng.integers(0, 256, (1, 8, 8, 16)).astype(np.uint8)}
    _check_exact(g, art.run(feeds)[g.outputs[0].name], feeds)


@pytest.mark.skipif(not llvm_cpu_has_features("avx2", resolve("host").target), reason="host has no AVX2")
def test_u8_layers_use_vpmaddubsw_and_wide_weights_do_not(monkeypatch):
    """On AVX2 without VNNI (compiled for, whatever the host has) the u8 conv and dense kernels are tensorized;
    the conv whose weights exceed the int16 pair limit is not."""
    spec = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "haswell"}
    monkeypatch.setitem(targets.NAMED, "x86-avx2", (spec, "cpu", "an x86 CPU with AVX2"))
    art = ember.compile(network("u8"), "x86-avx2", passes="")
    asm = _asm(art)
    kernels = _kernels(asm)
    with_dot = [name for name, body in kernels.items() if "vpmaddubsw" in body]
    assert len(with_dot) == 3, sorted(kernels)  # 3x3 conv, strided 1x1 conv, dense
    assert asm.count("vpmaddwd") >= 3


def _parallel_tasks(artifact) -> list[str]:
    """The LLVM IR of each parallel task body in the artifact's kernels."""
    ir_text = "\n".join(sub.inspect_source("ll") for sub in artifact.executable.mod.imports if sub.kind == "llvm")
    return re.findall(r"(?ms)^define [^@]*@__tvm_parallel_lambda[\w.]*\(.*?^}", ir_text)


def test_accumulator_tiles_are_not_allocated_per_parallel_iteration(monkeypatch):
    """The conv, depthwise and dense int32 accumulator tiles are stack arrays LLVM keeps in registers: in
    "local" scope each was a TVMBackendAllocWorkspace call per parallel iteration (4,704 in MobileNetV2's
    24->144 1x1 conv, which ran 1.2-1.6x slower for it)."""
    monkeypatch.setattr(int8_schedules, "MIN_PARALLEL_MACS", 0)  # these small convs in parallel too
    monkeypatch.setattr(contraction, "MIN_PARALLEL_WORK", 0)  # the depthwise conv takes fp32's blocking
    tasks = _parallel_tasks(ember.compile(network("u8", hw=16), "host", passes=""))
    assert len(tasks) >= 4  # the 3x3, depthwise, strided 1x1 and wide convs at least run in parallel
    assert not [body for body in tasks if "__TVMBackendAllocWorkspace" in body]


def test_tiny_packed_kernels_run_on_one_thread():
    """Packed convs and dense layers under MIN_PARALLEL_MACS are serial: the trained CNN's 74K-MAC 3x3 convs took
    4.2-5.5 us in parallel on 2 threads, 2.0-2.3 us on one (a thread-pool launch costs more than the sum)."""
    g = Graph("tiny")
    x = g.add_input("x", [1, 8, 8, 3])
    y = qconv(g, g.emit("quantize", x, scale=0.02, zero_point=9, dtype="u8"), 3, 16)
    g.outputs.append(g.emit("dequantize", qconv(g, y, 16, 16), scale=[0.05], zero_point=[9]))
    art = ember.compile(g, "host", passes="")
    assert _parallel_tasks(art) == []
    feeds = {"x": rng.standard_normal((1, 8, 8, 3)).astype(np.float32)}
    _check_exact(g, art.run(feeds)[g.outputs[0].name], feeds)


def test_packed_conv_gives_each_thread_a_contiguous_half_of_the_image_rows(monkeypatch):
    """The packed conv's parallel loop runs two contiguous halves of the image rows outermost, channel blocks
    inside: with 2 threads each reads the rows its thread wrote in the previous kernel, where channel blocks
    outermost had each read every row, half of them from the other core's cache (MobileNetV2 int8, in-process
    A/B at 2 threads: 0.77-0.79x the time)."""
    monkeypatch.setattr(int8_schedules, "MIN_PARALLEL_MACS", 0)
    g = Graph("pointwise")
    x = g.add_input("x", [1, 16, 16, 64], "u8")
    g.outputs.append(qconv(g, x, 64, 64, k=1))
    mod = schedules.schedule_module(lower_to_relax(g), resolve("host").target)
    (kernel,) = [f.script() for gv, f in mod.functions.items() if gv.name_hint.startswith("qconv2d")]
    tiles = int(re.search(r"T\.parallel\(T\.int64\((\d+)\)\)", kernel).group(1))
    first_half = rf"v_i = T\.axis\.spatial\(T\.int64\(16\), \w+ // T\.int64\({tiles // 2}\) \* T\.int64\(8\)"
    assert re.search(first_half, kernel)
    feeds = {"x": rng.integers(0, 256, (1, 16, 16, 64)).astype(np.uint8)}
    _check_exact(g, ember.compile(g, "host", passes="").run(feeds)[g.outputs[0].name], feeds)


@pytest.mark.parametrize("mcpu", ["cascadelake", "alderlake"])
def test_vnni_targets_use_vpdpbusd_in_every_packed_kernel(mcpu, monkeypatch):
    """AVX-512 VNNI (Cascade Lake) and AVX-VNNI (Alder Lake) builds, compiled only (this machine runs neither):
    vpdpbusd sums in int32 without vpmaddubsw's int16 pairs, so the wide-weight conv takes it too."""
    spec = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": mcpu}
    monkeypatch.setitem(targets.NAMED, "x86-vnni", (spec, "cpu", "an x86 CPU with VNNI"))
    art = ember.compile(network("u8", hw=8), "x86-vnni", passes="")
    asm = _asm(art)
    with_dot = sorted(name for name, body in _kernels(asm).items() if "vpdpbusd" in body)
    assert len(with_dot) == 4, with_dot  # 3x3 conv, strided 1x1 conv, wide-weight conv, dense
    assert "vpmaddubsw" not in asm
    assert count_kernels(art.executable) == 6  # 4 convs (the first quantizes), dense, dequantize; the flatten a view
    assert tuple(art.graph.outputs[0].shape) == (1, 10)


def mlp(act: str) -> Graph:
    """quantize -> dense 64->32->48->16 (also an output) -> 16->512 -> 512->1024 (too large for one thread) ->
    1024->8 -> dequantize."""
    g = Graph("mlp")
    h = g.emit("quantize", g.add_input("x", [1, 64]), scale=0.02, zero_point=9 if act == "u8" else -4, dtype=act)
    out = dict(out_dtype=act, out_zero_point=QMIN[act] + 5, out_min=QMIN[act], out_max=QMIN[act] + 255)
    for k, n in [(64, 32), (32, 48), (48, 16)]:
        h = qdense(g, h, k, n, **out)
    g.outputs.append(h)
    for k, n in [(16, 512), (512, 1024), (1024, 8)]:
        h = qdense(g, h, k, n, **out)
    g.outputs.append(g.emit("dequantize", h, scale=[0.05], zero_point=[QMIN[act] + 5]))
    return g


@pytest.mark.parametrize("act, mcpu", [("u8", None), ("i8", None), ("u8", "haswell")])
def test_small_dense_layers_in_a_row_run_as_one_kernel(act, mcpu, monkeypatch):
    """Small int8 dense layers at batch 1, each read by the next only, are computed in the last one's kernel, each
    requantized output a stack array for the next: MLPerf Tiny's anomaly detector (640-128-128-128-128-8-128-128-
    128-128-640) took 3.84 us a run in 2 kernels, 4.29 us in 6 (time_evaluator); the trained CNN's two dense layers
    2.10 against 2.18 us. A layer that is also a graph output ends a chain, and so does one too large for one
    thread (512 x 1024). Bit-exact, with VNNI and with AVX2 (vpmaddubsw, a layer's block name then "_sN")."""
    target = "host"
    if mcpu:
        spec = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": mcpu}
        monkeypatch.setitem(targets.NAMED, "x86-avx2", (spec, "cpu", "an x86 CPU with AVX2"))
        target = "x86-avx2"
    g = mlp(act)
    art = ember.compile(g, target, passes="")
    dense = [name for name in kernel_names(art.executable) if name.startswith("qdense")]
    assert len(dense) == 4, dense  # 64-32-48-16, 16->512, 512->1024, 1024->8
    if mcpu:
        assert "vpmaddubsw" in _kernels(_asm(art))["qdense_compute_"]  # the first kernel: 3 layers, all tensorized
    feeds = {"x": rng.standard_normal((1, 64)).astype(np.float32)}
    got, want = art.run(feeds), ir.interpret(g, feeds)
    for v in g.outputs:
        np.testing.assert_array_equal(got[v.name], want[v.name])  # tolerance: none, integer kernels are exact


def test_avx512_requantization_vectors_divide_the_channel_tile(monkeypatch):
    """On AVX-512 (16 int32 lanes) a packed conv's tile of 3 channel blocks (24 outputs, MobileNetV2's 1x1
    expansions to 384, 576 and 960 channels) requantizes 8 lanes at a time: as one 24-lane vector its int64
    products were scalarized into vpinsrd/vpextrd, and those kernels ran 4.5x as long as on AVX2."""
    spec = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "cascadelake"}
    monkeypatch.setitem(targets.NAMED, "x86-avx512", (spec, "cpu", "an x86 CPU with AVX-512"))
    g = Graph("expand")
    x = g.add_input("x", [1, 14, 14, 64], "u8")
    g.outputs.append(qconv(g, x, 64, 384, k=1))
    mod = schedules.schedule_module(lower_to_relax(g), resolve("x86-avx512").target)
    (kernel,) = [f.script() for gv, f in mod.functions.items() if gv.name_hint.startswith("qconv2d")]
    assert "T.unroll(T.int64(3))" in kernel  # the register tile has 3 channel blocks
    (body,) = [b for name, b in _kernels(_asm(ember.compile(g, "x86-avx512", passes=""))).items()]
    assert "vpdpbusd" in body and "vpextrd" not in body and "vpinsrd" not in body
    feeds = {"x": rng.integers(0, 256, (1, 14, 14, 64)).astype(np.uint8)}
    _check_exact(g, ember.compile(g, "host", passes="").run(feeds)[g.outputs[0].name], feeds)


def gpu_network() -> Graph:
    """quantize -> 3x3 conv -> depthwise -> flatten -> dense with an f32 output (a folded dequantize)."""
    g = Graph("gpu")
    x = g.add_input("x", [1, 6, 6, 3])
    y = qconv(g, g.emit("quantize", x, scale=0.02, zero_point=9, dtype="u8"), 3, 16, relu=True)
    y = g.emit("reshape", qconv(g, y, 16, 16, group=16), g.add_constant(np.array([1, -1], np.int64)))
    f32 = dict(out_dtype="f32", out_zero_point=0, out_min=-I32_MAX - 1, out_max=I32_MAX)
    g.outputs.append(qdense(g, y, 16 * 36, 10, **f32))
    return g


def _sums_from_zero(mod) -> dict[str, bool]:
    """Whether each reduction block of `mod` starts its sum from 0 (rather than from a bias buffer)."""
    found = {}

    def visit(block):
        if block.init is not None:
            found[block.name_hint] = isinstance(block.init.value, tirx.IntImm) and block.init.value.value == 0
        return block

    for f in mod.functions.values():
        if isinstance(f, tirx.PrimFunc):
            tvm_ffi.structural_map(f, (s_tir.SBlock, visit))
    return found


def test_gpu_lowering_sums_from_zero_exactly_and_builds_for_cuda():
    """For GPU targets no int8 sum starts from the bias: TVM's GPU rules (dlight) take only reductions that start
    from 0, and the dense and depthwise kernels failed in rfactor. The int32 form of the requantization gives way
    to the int64 one, and an f32 output adds the bias after the sum. That lowering, built for the host, is exact;
    built for CUDA it compiles (no GPU here to run it)."""
    g = gpu_network()
    feeds = {"x": rng.standard_normal((1, 6, 6, 3)).astype(np.float32)}
    want = ir.interpret(g, feeds)[g.outputs[0].name]
    mod = lower_to_relax(g, "cuda")
    blocks = ("qconv2d_packed", quant_rules.GROUPED, "qdense_packed")
    assert _sums_from_zero(mod) == dict.fromkeys(blocks, True)
    assert _sums_from_zero(lower_to_relax(g)) == dict.fromkeys(blocks, False)  # CPU: each starts from its bias
    vm = relax.VirtualMachine(build(g, resolve("host"), mod), tvm.cpu())
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(feeds["x"]))[0].numpy(), want)
    art = ember.compile(g, "cuda", passes="")
    assert "qconv2d" in art.sources.get("cuda", "") and "qdense" in art.sources["cuda"]


def test_gpu_build_of_int8_graph_that_tvm_cannot_schedule_says_why(monkeypatch):
    """int8 kernels have CPU schedules only; where TVM's GPU rules still fail (here forced: the bias-initialized
    sums of CPU lowering, which dlight's rfactor rejects), the error says so and what to do instead."""
    monkeypatch.setattr(build_module, "lower_to_relax", lambda graph, device, target: lower_to_relax(graph))
    g = Graph("fc")
    x = g.add_input("x", [1, 64])
    y = qdense(g, g.emit("quantize", x, scale=0.02, zero_point=9, dtype="u8"), 64, 10)
    g.outputs.append(g.emit("dequantize", y, scale=[0.05], zero_point=[-1]))
    with pytest.raises(ember.EmberError, match="TVM failed to compile for 'cuda'") as err:
        build_module.build(g, resolve("cuda"))
    assert "int8 kernels for CPUs only" in err.value.hint and "without --quantize" in err.value.hint


def test_mali_build_of_int8_dense_fails_with_one_line_not_an_assertion():
    """dlight's GEMV rule asserts on the int8 dense for Mali (an empty AssertionError): one line with the hint."""
    g = Graph("fc")
    x = g.add_input("x", [1, 32])
    y = qdense(g, g.emit("quantize", x, scale=0.02, zero_point=9, dtype="u8"), 32, 4)  # the trained CNN's last
    g.outputs.append(g.emit("dequantize", y, scale=[0.05], zero_point=[-1]))
    with pytest.raises(ember.EmberError, match="AssertionError in TVM's schedule rules") as err:
        ember.compile(g, "mali", passes="")
    assert "int8 kernels for CPUs only" in err.value.hint


@pytest.mark.skipif(
    not (shutil.which("qemu-aarch64") and shutil.which("aarch64-linux-gnu-g++")),
    reason="qemu-aarch64 or aarch64-linux-gnu-g++ is not installed (make tools installs both)",
)
@pytest.mark.parametrize("dotprod", [True, False])
def test_aarch64_build_is_exact_under_qemu(dotprod, tmp_path, monkeypatch):
    """sdot with +dotprod; without it, the packed kernels' int32 NEON fallback (fused pool included)."""
    mattr = ["+neon", "+dotprod"] if dotprod else ["+neon"]
    spec = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": mattr}
    _, device, doc = targets.NAMED["aarch64-linux-gnu"]
    monkeypatch.setitem(targets.NAMED, "aarch64-linux-gnu", (spec, device, doc))
    g = network("i8", hw=6)
    art = ember.compile(g, "aarch64-linux-gnu", passes="")
    assert ("sdot" in _asm(art)) == dotprod
    art.save(tmp_path / "bundle")
    feeds = {"x": rng.standard_normal((1, 6, 6, 3)).astype(np.float32)}
    got = ember.load(tmp_path / "bundle").run(feeds, emulate=True)
    _check_exact(g, got[g.outputs[0].name], feeds)


def test_depthwise_unrolls_its_taps_and_requantization_over_the_register_tile():
    """The depthwise kernel's requantization loops over its register tile are unrolled (vectorized innermost), so it
    reads the int32 accumulators in registers; as a serial loop over the tile's pixels it reloaded them from the
    stack (MobileNetV2's depthwise kernels took 1.03-1.30x the time). Its taps are unrolled too, so each input
    pixel is widened once per tile row rather than once per tap (0.65-0.80x the time)."""
    g = Graph("depthwise")
    x = g.add_input("x", [1, 12, 12, 32], "u8")
    g.outputs.append(qconv(g, x, 32, 32, group=32))
    mod = schedules.schedule_module(lower_to_relax(g), resolve("host").target)
    (kernel,) = [f for gv, f in mod.functions.items() if gv.name_hint.startswith("qconv2d")]
    sch = s_tir.Schedule(kernel)
    for block in ("requantize", "group_qconv2d_nhwc_update"):
        kinds = {sch.get(loop).kind for loop in sch.get_loops(sch.get_sblock(block))[1:]}
        assert kinds <= {tirx.ForKind.UNROLLED, tirx.ForKind.VECTORIZED}, (block, kinds)
    feeds = {"x": rng.integers(0, 256, (1, 12, 12, 32)).astype(np.uint8)}
    _check_exact(g, ember.compile(g, "host", passes="").run(feeds)[g.outputs[0].name], feeds)


@pytest.mark.parametrize("out, relu", [("u8", True), ("i8", False)])
def test_qadd_matches_reference(out, relu):
    """The residual add kernel, int32 all through: extreme multipliers and shifts, both input dtypes, the clamp."""
    g = Graph("qadd")
    a, b = g.add_input("a", [2, 7, 5, 24], "u8"), g.add_input("b", [2, 7, 5, 24], "i8")
    lo = QMIN[out]
    attrs = dict(a_zero_point=131, b_zero_point=-7, a_multiplier=(1 << 21) - 1, b_multiplier=3, shift=31)
    attrs.update(out_zero_point=lo + 100, out_dtype=out, out_min=lo + 100 if relu else lo, out_max=lo + 255)
    y = g.emit("qadd", a, b, **attrs)
    z = g.emit("qadd", y, b, **{**attrs, "a_zero_point": lo + 100, "a_multiplier": 700_000, "shift": 20})
    g.outputs.append(z)
    feeds = {"a": rng.integers(0, 256, a.shape).astype(np.uint8), "b": rng.integers(-128, 128, b.shape).astype(np.int8)}
    art = ember.compile(g, "host", passes="")
    _check_exact(g, art.run(feeds)[z.name], feeds)


def test_requantization_is_int32_where_the_weights_bound_every_value():
    """Packed and depthwise kernels start their accumulator from the bias and requantize on int32 lanes (a 32 x 32 ->
    high word multiply, no int64 adds) when the weights prove every value fits; a bias that could overflow keeps
    int64."""
    w = rng.integers(-63, 64, (144, 24)).astype(np.int8)
    attrs = dict(x_zero_point=9, out_zero_point=9, out_dtype="u8", **_requant(24, True, 20))
    added, rq = requant.requant_terms(None, w, "u8", attrs)
    assert added.dtype == np.int32 and len(rq) == 3
    huge = type("Const", (), {"const": np.full(24, (1 << 31) - 1000, np.int32)})
    added, rq = requant.requant_terms(huge, w, "u8", attrs)
    assert added.dtype == np.int64 and len(rq) == 2
    g = Graph("wide_bias")
    x = g.add_input("x", [1, 6, 6, 16], "u8")
    y = qconv(g, x, 16, 24, k=1)
    y.producer.inputs[2].const[:] = (1 << 31) - 1  # acc + bias may leave int32: requantized in int64
    g.outputs.append(y)
    g.outputs.append(qconv(g, x, 16, 16, k=1))
    g.outputs.append(qconv(g, x, 16, 16, group=16))  # depthwise: the same int32 form
    kernels = [f for gv, f in lower_to_relax(g).functions.items() if gv.name_hint.startswith("qconv2d")]
    assert sorted(str(f.params[2].ty.dtype) for f in kernels) == ["int32", "int32", "int64"]  # per-channel terms
    feeds = {"x": rng.integers(0, 256, (1, 6, 6, 16)).astype(np.uint8)}
    art = ember.compile(g, "host", passes="")
    for out in g.outputs:
        np.testing.assert_array_equal(art.run(feeds)[out.name], ir.interpret(g, feeds)[out.name])


def test_input_transpose_is_computed_as_it_is_quantized():
    """NCHW floats -> NHWC bytes in one nest: materialized, the transposed floats went through a workspace buffer
    (MobileNetV2's 224 x 224 input took 2.2x the time)."""
    g = Graph("nhwc_input")
    x = g.add_input("x", [1, 3, 16, 16])
    t = g.emit("transpose", x, perm=[0, 2, 3, 1])
    g.outputs.append(g.emit("quantize", t, scale=0.02, zero_point=120, dtype="u8"))
    art = ember.compile(g, "host", passes="")
    (body,) = [b for name, b in _kernels(_asm(art)).items() if "transpose" in name]
    assert "TVMBackendAllocWorkspace" not in body
    feeds = {"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)}
    _check_exact(g, art.run(feeds)[g.outputs[0].name], feeds)


def test_few_channel_conv_reduces_over_flattened_rows():
    """A first conv's 3 input channels are not padded to 4: its kernel reads the input as [N, H, W * C] rows and
    reduces over each window's KW * C contiguous bytes (MobileNetV2's int8 model took 0.98x the time; padded to
    4 channels, the input copy was a byte-at-a-time loop)."""
    g = Graph("stem")
    x = g.add_input("x", [1, 16, 16, 3])
    q = g.emit("quantize", x, scale=0.02, zero_point=120, dtype="u8")
    g.outputs.append(g.emit("dequantize", qconv(g, q, 3, 16, stride=2, relu=True), scale=[0.05], zero_point=[9]))
    mod = lower_to_relax(g, "cpu")
    (conv,) = [f for gv, f in mod.functions.items() if gv.name_hint.startswith("qconv2d")]
    assert 'T.Buffer((T.int64(1), T.int64(16), T.int64(48)), "uint8")' in conv.script()
    feeds = {"x": rng.standard_normal((1, 16, 16, 3)).astype(np.float32)}
    _check_exact(g, ember.compile(g, "host", passes="").run(feeds)[g.outputs[0].name], feeds)


def test_padded_input_copy_over_48_channels_is_vector_code():
    """An int8 conv's padded input copy over 48 channels is vectorized 16 bytes wide: 48 wide, LLVM moved it one
    byte at a time (270 vpextrb/vpinsrb in the kernel)."""
    g = Graph("c48")
    x = g.add_input("x", [1, 8, 8, 48], "u8")
    g.outputs.append(qconv(g, x, 48, 16))
    art = ember.compile(g, "host", passes="")
    (body,) = [b for name, b in _kernels(_asm(art)).items() if name.startswith("qconv2d")]
    assert not re.search(r"vpextrb|vpinsrb", body)
    feeds = {"x": rng.integers(0, 256, (1, 8, 8, 48)).astype(np.uint8)}
    _check_exact(g, art.run(feeds)[g.outputs[0].name], feeds)
