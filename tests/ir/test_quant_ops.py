"""The integer op contract (ember/ir/ops/quant.py): type inference, verification, the numpy references
against independent formulas, and the IR text round trip."""

from __future__ import annotations

import numpy as np
import pytest

from ember import EmberError, ir
from ember.ir.graph import Graph
from ember.ir.ops import get_schema

QCONV_TEXT = """graph @main(%x: f32[1,8,8,3]) -> (%y) {
  @w = const dense<[1, 2, 3, -4, 5, 6, -7, 8, 9, 10, -11, 12, 13, 14, 15, 16, 17, -18, 19, 20, 21, 22, 23, 24]> : i8[2,2,3,2]
  @b = const dense<[100, -50]> : i32[2]
  %q = quantize(%x) {scale=0.05, zero_point=3, dtype="u8"} : u8[1,8,8,3]
  %c = qconv2d(%q, @w, @b) {strides=[1,1], pads=[0,0,1,1], dilations=[1,1], group=1, layout="NHWC", x_zero_point=3, multiplier=[1300000000,1500000000], shift=[38,39], out_zero_point=-5, out_dtype="i8", out_min=-5, out_max=127} : i8[1,8,8,2]
  %y = dequantize(%c) {scale=[0.1], zero_point=[-5], axis=1} : f32[1,8,8,2]
  return %y
}
"""  # noqa: E501


def test_quantize_rounds_half_to_even_and_saturates():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 1000.0, -1000.0, 0.26], np.float32)
    q = get_schema("quantize").evaluate([x], {"scale": 1.0, "zero_point": 0, "dtype": "i8"})[0]
    assert q.dtype == np.int8 and q.tolist() == [0, 2, 2, 0, -2, 127, -128, 0]
    u = get_schema("quantize").evaluate([x], {"scale": 0.5, "zero_point": 10, "dtype": "u8"})[0]
    assert u.dtype == np.uint8 and u.tolist() == [11, 13, 15, 9, 7, 255, 0, 11]


def test_dequantize_per_tensor_and_per_channel():
    q = np.array([[[-3, 4]], [[5, -128]]], np.int8)  # [2, 1, 2]
    d = get_schema("dequantize").evaluate([q], {"scale": (0.5, 2.0), "zero_point": (1, 0), "axis": 0})[0]
    np.testing.assert_array_equal(d, np.array([[[-2.0, 1.5]], [[10.0, -256.0]]], np.float32))
    d = get_schema("dequantize").evaluate([q], {"scale": (0.25,), "zero_point": (0,), "axis": 1})[0]
    np.testing.assert_array_equal(d, q.astype(np.float32) * 0.25)


def _requant_reference(acc, mult, shift, ozp, lo, hi):
    """The requantization written with Python integers, per element."""
    out = np.empty(acc.shape, np.int64)
    for idx in np.ndindex(acc.shape):
        c = idx[-1]
        m, s = mult[c % len(mult)], shift[c % len(shift)]
        out[idx] = min(max(((int(acc[idx]) * m + (1 << (s - 1))) >> s) + ozp, lo), hi)
    return out


def test_qdense_matches_integer_formula():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 16)).astype(np.uint8)
    w = rng.integers(-127, 128, (4, 16)).astype(np.int8)
    b = rng.integers(-5000, 5000, 4).astype(np.int32)
    attrs = dict(x_zero_point=128, multiplier=(1 << 30, 1500000000, 2000000000, 1234567890), shift=(40, 41, 39, 42))
    attrs.update(out_zero_point=0, out_dtype="i8", out_min=-128, out_max=127)
    got = get_schema("qdense").evaluate([x, w, b], attrs)[0]
    acc = (x.astype(np.int64) - 128) @ w.astype(np.int64).T + b
    want = _requant_reference(acc, attrs["multiplier"], attrs["shift"], 0, -128, 127)
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, want)


def test_qconv2d_nchw_equals_nhwc_and_integer_formula():
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, (1, 4, 6, 6)).astype(np.int8)
    w = rng.integers(-63, 64, (6, 2, 3, 3)).astype(np.int8)  # group 2
    b = rng.integers(-900, 900, 6).astype(np.int32)
    attrs = dict(strides=(2, 1), pads=(1, 1, 1, 0), dilations=(1, 1), group=2, layout="NCHW", x_zero_point=-3)
    attrs.update(multiplier=(1 << 30,), shift=(33,), out_zero_point=7, out_dtype="i8", out_min=7, out_max=127)
    got = get_schema("qconv2d").evaluate([x, w, b], attrs)[0]
    conv = {k: attrs[k] for k in ("strides", "pads", "dilations", "group", "layout")}
    acc = get_schema("conv2d").evaluate([x.astype(np.float64) + 3, w.astype(np.float64), b.astype(np.float64)], conv)
    acc = np.rint(acc[0]).astype(np.int64).transpose(0, 2, 3, 1)
    want = _requant_reference(acc, (1 << 30,), (33,), 7, 7, 127).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(got, want)
    nhwc = get_schema("qconv2d").evaluate(
        [x.transpose(0, 2, 3, 1), w.transpose(2, 3, 1, 0), b], {**attrs, "layout": "NHWC"}
    )[0]
    np.testing.assert_array_equal(nhwc.transpose(0, 3, 1, 2), got)


def test_text_round_trip_and_interpretation():
    g = ir.parse_graph(QCONV_TEXT)
    assert ir.print_graph(ir.parse_graph(ir.print_graph(g))) == ir.print_graph(g)
    x = np.random.default_rng(2).uniform(0, 6, (1, 8, 8, 3)).astype(np.float32)
    y = ir.interpret(g, {"x": x})["y"]
    assert y.dtype == np.float32 and y.shape == (1, 8, 8, 2) and y.min() >= 0.0


@pytest.mark.parametrize(
    "op, attrs, message",
    [
        ("qdense", {"multiplier": (5,), "shift": (3,)}, "multiplier values must lie in"),
        ("qdense", {"shift": (0,)}, "shift values must lie in"),
        ("qdense", {"multiplier": (1 << 30,) * 3, "shift": (3,) * 3}, "1 or 4 values"),
        ("qdense", {"out_min": 5, "out_max": 4}, "exceeds out_max"),
        ("qdense", {"out_max": 200}, "outside i8's range"),
        ("qdense", {"x_zero_point": -1}, "x_zero_point -1 is outside u8"),
        ("qdense", {"out_dtype": "i32", "out_min": -(1 << 31), "out_max": (1 << 31) - 1}, "must be empty"),
        ("qdense", {"out_dtype": "i16"}, "out_dtype must be i8, u8, i32 or f32"),
        ("qdense", {"out_dtype": "f32", "out_zero_point": 3}, "an f32 output has no zero point"),
    ],
)
def test_bad_requant_attributes(op, attrs, message):
    g = Graph()
    x = g.add_input("x", (2, 4), "u8")
    w = g.add_constant(np.ones((4, 4), np.int8), "w")
    base = dict(multiplier=(1 << 30,), shift=(31,), out_dtype="i8", out_min=-128, out_max=127)
    with pytest.raises(EmberError, match=message):
        g.add_node(op, [x, w], {**base, **attrs})


def test_f32_output_is_the_clipped_sum_scaled_per_channel():
    """qdense with out_dtype f32 (a folded dequantize) equals the i32 sum's clip, dequantized per channel by
    multiplier * 2^-shift, exactly."""
    rng = np.random.default_rng(4)
    g = Graph()
    x = g.add_input("x", (3, 16), "u8")
    w = g.add_constant(rng.integers(-60, 61, (5, 16)).astype(np.int8), "w")
    b = g.add_constant(rng.integers(-900, 900, 5).astype(np.int32), "b")
    rq = dict(multiplier=tuple(int(m) for m in rng.integers(1 << 30, 1 << 31, 5)), shift=(40, 41, 42, 43, 44))
    y = g.emit("qdense", x, w, b, x_zero_point=7, out_dtype="f32", out_min=0, out_max=(1 << 31) - 1, **rq)
    acc = g.emit(
        "qdense", x, w, b, x_zero_point=7, out_dtype="i32", out_min=0, out_max=(1 << 31) - 1, multiplier=(), shift=()
    )
    scales = [float(np.float32(m * 2.0**-s)) for m, s in zip(rq["multiplier"], rq["shift"])]
    ref = g.emit("dequantize", acc, scale=scales, zero_point=[0], axis=1)
    g.outputs = [y, ref]
    ir.verify(g)
    assert ir.print_graph(ir.parse_graph(ir.print_graph(g))) == ir.print_graph(g)
    got = ir.interpret(g, {"x": rng.integers(0, 256, (3, 16)).astype(np.uint8)})
    assert got[y.name].dtype == np.float32 and got[y.name].min() >= 0.0
    np.testing.assert_array_equal(got[y.name], got[ref.name])


def test_bad_operand_dtypes():
    g = Graph()
    x = g.add_input("x", (2, 4), "f32")
    with pytest.raises(EmberError, match="input must be i8 or u8"):
        g.add_node(
            "qdense",
            [x, g.add_constant(np.ones((4, 4), np.int8))],
            dict(multiplier=(1 << 30,), shift=(31,), out_min=-128, out_max=127),
        )
    q = g.add_input("q", (2, 4), "i8")
    with pytest.raises(EmberError, match="weight must be i8"):
        g.add_node(
            "qdense",
            [q, g.add_constant(np.ones((4, 4), np.float32))],
            dict(multiplier=(1 << 30,), shift=(31,), out_min=-128, out_max=127),
        )
    with pytest.raises(EmberError, match="input must be f32"):
        g.emit("quantize", q, scale=1.0)
    with pytest.raises(EmberError, match="scale must be positive"):
        g.emit("quantize", x, scale=0.0)
    with pytest.raises(EmberError, match="3 scales for axis 1"):
        g.emit("dequantize", q, scale=(1.0, 2.0, 3.0))


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_max_pool2d_runs_on_integers_padding_with_the_minimum(dtype):
    x = np.random.default_rng(3).integers(np.iinfo(dtype).min, np.iinfo(dtype).max, (1, 5, 5, 2)).astype(dtype)
    attrs = get_schema("max_pool2d").complete_attrs(
        {"kernel": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1), "layout": "NHWC"}
    )
    got = get_schema("max_pool2d").evaluate([x], attrs)[0]
    want = get_schema("max_pool2d").evaluate([x.astype(np.float32)], attrs)[0]
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, want.astype(dtype))


def test_int32_output_is_the_exact_sum():
    """out_dtype i32 (ConvInteger/MatMulInteger) skips requantization: out = sum((x - zp) * w) + b."""
    rng = np.random.default_rng(3)
    x, w = rng.integers(0, 256, (3, 40)).astype(np.uint8), rng.integers(-128, 128, (5, 40)).astype(np.int8)
    b = rng.integers(-1000, 1000, 5).astype(np.int32)
    attrs = dict(x_zero_point=17, multiplier=(), shift=(), out_dtype="i32", out_min=-(1 << 31), out_max=(1 << 31) - 1)
    y = get_schema("qdense").evaluate([x, w, b], attrs)[0]
    want = (x.astype(np.int64) - 17) @ w.astype(np.int64).T + b
    assert y.dtype == np.int32 and np.array_equal(y, want)


@pytest.mark.parametrize("scales", [(0.05, 0.02, 0.06), (0.3, 0.001, 0.02), (1e-4, 2e-4, 1e-5), (0.01, 0.01, 0.5)])
def test_qadd_is_the_real_add_within_half_a_step(scales):
    """a and b dequantized, added, requantized to the output's scale: qadd's integers land within half a step
    (plus the multipliers' 2^-20 relative error) of that, with Python integers agreeing bit for bit."""
    from ember.ir.ops.quant import add_params

    sa, sb, sy = scales
    ma, mb, shift = add_params(sa, sb, sy)
    assert max(ma, mb) >= 1 << 19 and abs(ma / (1 << shift) - sa / sy) <= sa / sy * 2**-19 + 2.0**-shift
    a = np.arange(256, dtype=np.uint8).repeat(256)
    b = np.tile(np.arange(-128, 128, dtype=np.int8), 256)
    attrs = dict(a_zero_point=100, b_zero_point=-3, a_multiplier=ma, b_multiplier=mb, shift=shift)
    attrs.update(out_zero_point=5, out_dtype="i8", out_min=-128, out_max=127)
    y = get_schema("qadd").evaluate([a, b], attrs)[0]
    real = ((a.astype(np.float64) - 100) * sa + (b.astype(np.float64) + 3) * sb) / sy + 5
    inside = (real > -128) & (real < 127)
    assert y.dtype == np.int8 and np.abs(y[inside] - real[inside]).max() <= 0.5 + 1e-3 * np.abs(real[inside]).max()
    assert (y[real >= 127] == 127).all() and (y[real <= -128] == -128).all()
    picks = np.random.default_rng(0).integers(0, a.size, 200)
    exact = [min(max((((int(a[i]) - 100) * ma + (int(b[i]) + 3) * mb + (1 << (shift - 1))) >> shift) + 5, -128), 127)
             for i in picks]  # fmt: skip
    assert y[picks].tolist() == exact


def test_qadd_ratio_too_large_for_a_shift_is_refused():
    from ember.ir.ops.quant import add_params

    assert add_params(1.0, 1.0, 1e-7) is None


@pytest.mark.parametrize(
    "attrs, message",
    [
        ({"a_multiplier": 1 << 21}, r"multipliers must lie in \[0, 2\^21\)"),
        ({"shift": 0}, r"shift must lie in \[1, 31\]"),
        ({"out_min": 10, "out_max": 9}, "exceeds out_max"),
        ({"b_zero_point": 200}, "b_zero_point 200 is outside i8"),
    ],
)
def test_bad_qadd_attributes(attrs, message):
    g = Graph()
    a, b = g.add_input("a", (2, 4), "u8"), g.add_input("b", (2, 4), "i8")
    base = dict(a_multiplier=1 << 20, b_multiplier=1 << 19, shift=20, out_dtype="u8", out_min=0, out_max=255)
    with pytest.raises(EmberError, match=message):
        g.add_node("qadd", [a, b], {**base, **attrs})
    with pytest.raises(EmberError, match="must have the same shape"):
        g.add_node("qadd", [a, g.add_input("c", (4,), "u8")], base)
