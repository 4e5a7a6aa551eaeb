"""Lowering rules for the integer ops (quantize, dequantize, qconv2d, qadd; qdense in quant_dense.py).

qconv2d (group 1) and qdense lower to one kernel whose int32 accumulator is laid out [..., O / 8, 8] and whose
weights are packed at compile time as [O / 8, (KH, KW,) C / 4, 8, 4]: 8 output channels by 4 input channels,
the block one dot-product instruction consumes (x86 vpmaddubsw + vpmaddwd, ARM sdot on half of it). The input
zero point is folded into the bias (sum((x - zp) * w) = sum(x * w) - zp * sum(w)); padding is filled with zp so
it contributes nothing. A conv over a few input channels (not a multiple of 4: a model's first conv) blocks its
flattened rows instead of its channels (_row_conv), and quantizes its float input as it pads it where nothing else
reads the quantize (ABSORBS), reading channels first rather than after convert-layout's transpose where that costs no
more blocks (_channel_rows_conv): a kernel and a pass over the image fewer. Grouped and depthwise convolutions use a
plain int32 contraction that the Conv2D-style blocking vectorizes along channels. Requantization runs in the same kernel
(ember.backends.tvm.requantize): every conv/dense accumulator starts from the bias where the weights prove the
int32 form exact, else the bias is added premultiplied, in int64, after the multiply."""

from __future__ import annotations

import functools

import numpy as np
import tvm_ffi
from tvm import relax, s_tir, te, tirx, topi
from tvm.relax import op as R
from tvm.relax.utils import gen_call_tir_inputs

from ember.backends.tvm.calls import INJECTIVE, OPAQUE, OUT_ELEMWISE_FUSABLE
from ember.backends.tvm.requantize import requant_terms, requantize, starts_from_added
from ember.backends.tvm.rules import absorbs, rule
from ember.ir import dtypes
from ember.ir.graph import Graph, Node

LANES, DEPTH = 8, 4  # output channels x input channels per packed weight block
PAIR_LIMIT = 128  # |w0| + |w1| up to this keeps u8 x s8 pairs inside vpmaddubsw's int16: 255 * 128 < 2^15
PACKED = "qconv2d_packed"  # block names the int8 schedule rule looks for; "_wide" marks weights over PAIR_LIMIT
PACKED_DENSE = "qdense_packed"
GROUPED = "group_qconv2d_nhwc"
DEQUANTIZE = "dequantize"  # the dequantize block; a kernel holding one keeps its nests apart (elementwise.py)
ROW_ALIGN = 32  # bytes: a flattened input row (_row_conv) padded to whole vectors, so its copy is vectorized


@rule("quantize")
def _quantize(L, n, a):
    """round(x / scale) + zp, clipped, NaN to zp; in TE so the 0.0 NaN maps to is an immediate (as a Relax
    constant it became a 0-d buffer, whose load TVM's vectorizer scalarized, with every fused op around it)."""
    quantized = _quantizer(n.attrs)

    def quantize(x):
        return te.compute(x.shape, lambda *i: quantized(x[i]), name="quantize")

    return L.bb.emit_te(quantize, _bound(L, a[0]), primfunc_name_hint="quantize")


def _quantizer(attrs):
    """The quantize op's element function (attrs: its scale, zero_point, dtype): float32 expression -> integer."""
    info = np.iinfo(dtypes.to_numpy(attrs["dtype"]))
    scale, zp, lo, hi = (
        tirx.const(float(np.float32(v)), "float32") for v in (attrs["scale"], attrs["zero_point"], info.min, info.max)
    )
    out_dtype = dtypes.to_tvm(attrs["dtype"])

    def quantized(x):
        v = tirx.Select(tirx.isnan(x), tirx.const(0.0, "float32"), x)
        return tirx.max(tirx.min(tirx.nearbyint(v / scale) + zp, hi), lo).astype(out_dtype)

    return quantized


def _along(values, axis: int, ndim: int, dtype) -> np.ndarray:
    arr = np.asarray(values, dtype=dtype)
    if arr.size == 1:
        return arr.reshape(())
    shape = [1] * ndim
    shape[axis % ndim] = arr.size
    return arr.reshape(shape)


@rule("dequantize")
def _dequantize(L, n, a):
    """(x - zp) * scale, left unbound so it fuses with its float consumers; per tensor both are immediates (as 0-d
    Relax constants, buffers the kernel loads, a fused residual add + ReLU had 2.3x the code and took 1.5-2x the
    time). Marked injective so an int8 kernel's epilogue never takes it (see _emit_int8_kernel)."""
    x = _bound(L, a[0])
    if np.size(n.attrs["scale"]) == 1 and np.size(n.attrs["zero_point"]) == 1:
        zp, scale = (tirx.const(float(np.float32(np.ravel(n.attrs[k])[0])), "float32") for k in ("zero_point", "scale"))

        def dequantize(x):
            return te.compute(x.shape, lambda *i: (x[i].astype("float32") - zp) * scale, name=DEQUANTIZE)

        return _with_pattern(L, L.bb.call_te(dequantize, x, primfunc_name_hint="dequantize"), INJECTIVE)
    zp, scale = (_along(n.attrs[k], n.attrs["axis"], n.inputs[0].rank, np.float32) for k in ("zero_point", "scale"))

    def dequantize_along(x, zp, scale):
        def element(*i):
            j = [0 if d == 1 else v for v, d in zip(i, zp.shape)]
            return (x(*i).astype("float32") - zp(*j)) * scale(*j)

        return te.compute(x.shape, element, name=DEQUANTIZE)

    call = L.bb.call_te(dequantize_along, x, L.const(zp), L.const(scale), primfunc_name_hint="dequantize")
    return _with_pattern(L, call, INJECTIVE)


def _with_pattern(L, call: relax.Call, pattern: int) -> relax.Call:
    """`call` (a call_tir) with its kernel's op_pattern set to `pattern`, which steers Relax FuseOps."""
    gv = call.args[0]
    L.bb.update_func(gv, L.bb.get()[gv].with_attr("op_pattern", pattern))
    return call


def pack_weight(w: np.ndarray) -> np.ndarray:
    """[..., C, O] int8 (HWIO, or [K, N] for dense) -> [O/8, ..., C/4, 8, 4], zero-padded to whole blocks."""
    *lead, c, o = w.shape
    cp, op = -(-c // DEPTH) * DEPTH, -(-o // LANES) * LANES
    padded = np.zeros((*lead, cp, op), np.int8)
    padded[..., :c, :o] = w
    blocks = padded.reshape(*lead, cp // DEPTH, DEPTH, op // LANES, LANES)
    nl = len(lead)
    order = (nl + 2, *range(nl), nl, nl + 3, nl + 1)
    return np.ascontiguousarray(blocks.transpose(order))


def pairs_fit_int16(packed: np.ndarray) -> bool:
    """Whether every pair of weights vpmaddubsw adds in int16 keeps |w0| + |w1| <= PAIR_LIMIT."""
    pairs = np.abs(packed.astype(np.int32)).reshape(*packed.shape[:-1], DEPTH // 2, 2).sum(-1)
    return bool(pairs.max(initial=0) <= PAIR_LIMIT)


def _whole_blocks(a: np.ndarray) -> np.ndarray:
    """Per-channel values zero-padded to whole LANES blocks, as a packed accumulator's channels are."""
    return np.pad(a, (0, -a.size % LANES))


def _pad_input(x, pads, channels_to: int, value: int):
    """Spatially pad NHWC `x` and round its channels up to `channels_to`, filling with the zero point."""
    pt, pl, pb, pr = pads
    extra = channels_to - int(x.shape[3])
    if not any(pads) and not extra:
        return x
    return topi.nn.pad(x, [0, pt, pl, 0], [0, pb, pr, extra], pad_value=tirx.const(value, x.dtype), name="qpad")


def _out_size(size: int, k: int, stride: int, dil: int, p0: int, p1: int) -> int:
    return (size + p0 + p1 - dil * (k - 1) - 1) // stride + 1


def _packed_conv(x, wp, bias, rq, geom, attrs, out_dtype, name):
    """NHWC conv with packed weights: acc [N, OH, OW, O/8, 8] over (kh, kw, C/4, 4), requantized per channel."""
    (kh_, kw_, c_, o_), (sh, sw), (dh, dw), pads = geom
    n_, h_, w_ = (int(d) for d in x.shape[:3])
    oh, ow = _out_size(h_, kh_, sh, dh, pads[0], pads[2]), _out_size(w_, kw_, sw, dw, pads[1], pads[3])
    cb, ob = int(wp.shape[3]), int(wp.shape[0])
    xp = _pad_input(x, pads, cb * DEPTH, attrs["x_zero_point"])
    rkh, rkw = te.reduce_axis((0, kh_), "kh"), te.reduce_axis((0, kw_), "kw")
    rc, ri = te.reduce_axis((0, cb), "cb"), te.reduce_axis((0, DEPTH), "ci")
    acc = te.compute(
        (n_, oh, ow, ob, LANES),
        lambda b, i, j, oo, oi: te.sum(
            xp[b, i * sh + rkh * dh, j * sw + rkw * dw, rc * DEPTH + ri].astype("int32")
            * wp[oo, rkh, rkw, rc, oi, ri].astype("int32"),
            axis=[rkh, rkw, rc, ri],
        ),
        name=name,
    )
    return _requantized(
        lambda b, i, j, o: acc[b, i, j, o // LANES, o % LANES], (n_, oh, ow, o_), bias, rq, attrs, out_dtype
    )


def _row_conv(x, wp, bias, rq, geom, attrs, out_dtype, name, quantize=None):
    """NHWC conv over a few input channels, x given as [N, H, W * C] (its rows flattened): output pixel j's
    windows, kw and c together, are the KW * C contiguous bytes from j * SW * C, so the reduction runs over
    them in blocks of 4, zero weights past KW * C, and no channel is padded (C = 3 padded to 4 made the input
    copy a byte-at-a-time loop). Only the spatial padding is copied, a contiguous run per row; with `quantize`
    (an absorbed quantize op's element function) x is float and the copy quantizes it."""
    (kh_, kw_, c_, o_), (sh, sw), (dh, _), pads = geom
    n_, h_, row = (int(d) for d in x.shape)
    w_ = row // c_
    oh, ow = _out_size(h_, kh_, sh, dh, pads[0], pads[2]), _out_size(w_, kw_, sw, 1, pads[1], pads[3])
    rb, ob = int(wp.shape[3]), int(wp.shape[0])
    pt, left = pads[0], pads[1] * c_
    quantize = quantize or (lambda v: v)
    zp = quantize(tirx.const(0.0, "float32")) if x.dtype == "float32" else tirx.const(attrs["x_zero_point"], x.dtype)

    def padded(b, i, r):
        inside = tirx.all(i >= pt, i < pt + h_, r >= left, r < left + row)
        return tirx.if_then_else(inside, quantize(x[b, i - pt, r - left]), zp)

    width = -(-((ow - 1) * sw * c_ + rb * DEPTH) // ROW_ALIGN) * ROW_ALIGN
    xp = te.compute((n_, h_ + pt + pads[2], width), padded, name="qpad")
    rkh, rc, ri = te.reduce_axis((0, kh_), "kh"), te.reduce_axis((0, rb), "rb"), te.reduce_axis((0, DEPTH), "ri")
    acc = te.compute(
        (n_, oh, ow, ob, LANES),
        lambda b, i, j, oo, oi: te.sum(
            xp[b, i * sh + rkh * dh, j * sw * c_ + rc * DEPTH + ri].astype("int32")
            * wp[oo, rkh, 0, rc, oi, ri].astype("int32"),
            axis=[rkh, rc, ri],
        ),
        name=name,
    )
    return _requantized(
        lambda b, i, j, o: acc[b, i, j, o // LANES, o % LANES], (n_, oh, ow, o_), bias, rq, attrs, out_dtype
    )


def _channel_rows_conv(x, wp, bias, rq, geom, attrs, out_dtype, name, quantize):
    """NHWC conv of a float NCHW input over a few channels, quantized as it is padded (a model's first conv: the
    transpose and quantize before it were a kernel of their own). A channel's image row is contiguous, so the
    reduction runs over (kh, c, kw in blocks of 4), zero weights past KW; _channel_rows says when that is no
    more work than _row_conv's blocks."""
    (kh_, kw_, c_, o_), (sh, sw), (dh, _), pads = geom
    n_, _, h_, w_ = (int(d) for d in x.shape)
    oh, ow = _out_size(h_, kh_, sh, dh, pads[0], pads[2]), _out_size(w_, kw_, sw, 1, pads[1], pads[3])
    kb, ob = int(wp.shape[3]), int(wp.shape[0])
    pt, pl = pads[0], pads[1]
    zp = quantize(tirx.const(0.0, "float32"))

    def padded(b, c, i, j):
        inside = tirx.all(i >= pt, i < pt + h_, j >= pl, j < pl + w_)
        return tirx.if_then_else(inside, quantize(x[b, c, i - pt, j - pl]), zp)

    width = -(-((ow - 1) * sw + kb * DEPTH) // ROW_ALIGN) * ROW_ALIGN
    xp = te.compute((n_, c_, h_ + pt + pads[2], width), padded, name="qpad")
    rkh, rc = te.reduce_axis((0, kh_), "kh"), te.reduce_axis((0, c_), "c")
    rk, ri = te.reduce_axis((0, kb), "kb"), te.reduce_axis((0, DEPTH), "ki")
    acc = te.compute(
        (n_, oh, ow, ob, LANES),
        lambda b, i, j, oo, oi: te.sum(
            xp[b, rc, i * sh + rkh * dh, j * sw + rk * DEPTH + ri].astype("int32")
            * wp[oo, rkh, rc, rk, oi, ri].astype("int32"),
            axis=[rkh, rc, rk, ri],
        ),
        name=name,
    )
    return _requantized(
        lambda b, i, j, o: acc[b, i, j, o // LANES, o % LANES], (n_, oh, ow, o_), bias, rq, attrs, out_dtype
    )


def _channel_rows(kw: int, c: int) -> bool:
    """Whether a conv over `c` input channels (not a multiple of 4) blocks its reduction as _channel_rows_conv
    does, (c, kw rounded up to 4), with no more blocks than _row_conv's kw * c rounded up: kw 3 or 7 with 3
    channels (12 and 24 either way), not a 1x1 conv (12 against 4)."""
    return c % DEPTH != 0 and c * -(-kw // DEPTH) == -(-kw * c // DEPTH)


def _requantized(acc, shape, bias, rq, attrs, out_dtype):
    """The requantize stage over an NHWC accumulator read by `acc(b, i, j, o)`; with attrs' max_pool [k, k], over
    the max of each k x k window's sums (requantization is monotonic, ember.ir.ops.quant)."""
    k = attrs["max_pool"][0] if attrs.get("max_pool") else 1
    n_, oh, ow, o_ = shape

    def window_max(b, i, j, o):
        sums = [acc(b, i * k + di, j * k + dj, o) for di in range(k) for dj in range(k)]
        return functools.reduce(tirx.max, sums)

    return te.compute(
        (n_, oh // k, ow // k, o_),
        lambda b, i, j, o: requantize(window_max(b, i, j, o), o, bias, rq, attrs, out_dtype),
        name="requantize",
    )


def _grouped_conv(x, w, bias, rq, geom, attrs, out_dtype, group):
    """NHWC grouped/depthwise conv, HWIO weights [KH, KW, C/group, O], plain int32 contraction."""
    (kh_, kw_, cg, o_), (sh, sw), (dh, dw), pads = geom
    n_, h_, w_ = (int(d) for d in x.shape[:3])
    oh, ow = _out_size(h_, kh_, sh, dh, pads[0], pads[2]), _out_size(w_, kw_, sw, dw, pads[1], pads[3])
    xp = _pad_input(x, pads, int(x.shape[3]), attrs["x_zero_point"])
    og = o_ // group
    rkh, rkw, rc = te.reduce_axis((0, kh_), "kh"), te.reduce_axis((0, kw_), "kw"), te.reduce_axis((0, cg), "c")
    acc = te.compute(
        (n_, oh, ow, o_),
        lambda b, i, j, o: te.sum(
            xp[b, i * sh + rkh * dh, j * sw + rkw * dw, o // og * cg + rc].astype("int32")
            * w[rkh, rkw, rc, o].astype("int32"),
            axis=[rkh, rkw, rc],
        ),
        name=GROUPED,
    )
    return _requantized(lambda b, i, j, o: acc[b, i, j, o], (n_, oh, ow, o_), bias, rq, attrs, out_dtype)


def _nhwc_qconv(L, n, x, w: np.ndarray, quantize=None, channels_first: bool = False):
    """Emit the NHWC kernel for `x` (a Relax NHWC value) and HWIO weights `w`; with `quantize` (the element function
    of an absorbed quantize op, _quantizer), `x` is the float input, NCHW with `channels_first`."""
    at = n.attrs
    kh, kw, cg, o = w.shape
    out_dtype = dtypes.to_tvm(n.output.dtype)
    b = n.inputs[2] if len(n.inputs) > 2 else None
    packed = at["group"] == 1
    added, rq = requant_terms(b, w.reshape(-1, o), n.inputs[0].dtype, at, L.device == "cpu")
    bias, rq_args = L.const(_whole_blocks(added) if packed else added), [L.const(a) for a in rq]
    start = starts_from_added(added, out_dtype)
    geom = ((kh, kw, cg, o), tuple(at["strides"]), tuple(at["dilations"]), tuple(at["pads"]))
    kwargs = dict(geom=geom, attrs=at, out_dtype=out_dtype)
    if not packed:
        fn = lambda *t: _grouped_conv(*t[:3], t[3:], group=at["group"], **kwargs)  # noqa: E731
        return _emit_int8_kernel(L, fn, [x, L.const(w), bias, *rq_args], "qconv2d", start, channel=_plain_channel)
    rows = cg % DEPTH != 0 and at["dilations"][1] == 1
    if channels_first:
        wp = pack_weight(np.ascontiguousarray(w.transpose(0, 2, 1, 3)))  # [KH, C, KW, O]: KW blocked by 4
        conv = functools.partial(_channel_rows_conv, quantize=quantize)
    elif rows:
        wp = pack_weight(w.reshape(kh, 1, kw * cg, o))
        conv = functools.partial(_row_conv, quantize=quantize)
        n_, h_ = n.inputs[0].shape[0], n.inputs[0].shape[1 if at["layout"] == "NHWC" else 2]
        x = L.bb.emit(R.reshape(x, [n_, h_, -1]))
    else:
        wp, conv = pack_weight(w), _packed_conv
    name = PACKED if pairs_fit_int16(wp) else PACKED + "_wide"
    fn = lambda *t: conv(*t[:3], t[3:], name=name, **kwargs)  # noqa: E731
    return _emit_int8_kernel(L, fn, [x, L.const(wp), bias, *rq_args], "qconv2d", start)


@absorbs("qconv2d")
def _absorbed_input(graph: Graph, n: Node, device: str) -> list[Node]:
    """What a CPU conv over a few channels (a model's first conv) computes as it pads its input, when nothing else
    reads it: the quantize before it, and the transpose to NHWC before that (convert-layout's) where the conv reads
    channels first as cheaply (_channel_rows_conv). Otherwise nothing."""
    at, w = n.attrs, n.inputs[1].const
    kw, c = w.shape[1:3] if at["layout"] == "NHWC" else (w.shape[3], w.shape[1])
    q = n.inputs[0].producer
    if device != "cpu" or at["group"] != 1 or at["dilations"][1] != 1 or c % DEPTH == 0:
        return []
    if q is None or q.op != "quantize" or q.attrs["zero_point"] != at["x_zero_point"] or not _only_feeds(graph, q, n):
        return []
    if at["layout"] == "NCHW":
        return [q] if _channel_rows(kw, c) else []
    t = q.inputs[0].producer
    if t is not None and t.op == "transpose" and list(t.attrs["perm"]) == [0, 2, 3, 1] and _only_feeds(graph, t, q):
        return [t, q] if _channel_rows(kw, c) else [q]
    return [q]


def _only_feeds(graph: Graph, producer: Node, consumer: Node) -> bool:
    return producer.output.users == [consumer] and all(v is not producer.output for v in graph.outputs)


@rule("qconv2d")
def _qconv2d(L, n, a):
    """NHWC kernels; an NCHW conv is transposed around one (its weights at compile time), unless it reads an absorbed
    float input channels first (_absorbed_input)."""
    w, nhwc = n.inputs[1].const, n.attrs["layout"] == "NHWC"
    quantize, channels_first = None, False
    if absorbed := L.absorbed.get(id(n)):
        x, quantize = L.values[id(absorbed[0].inputs[0])], _quantizer(absorbed[-1].attrs)
        channels_first = absorbed[0].op == "transpose" or not nhwc
    else:
        x = _bound(L, a[0]) if nhwc else L.bb.emit(R.permute_dims(a[0], [0, 2, 3, 1]))
    if nhwc:
        return _nhwc_qconv(L, n, x, w, quantize, channels_first)
    y = _nhwc_qconv(L, n, x, np.ascontiguousarray(w.transpose(2, 3, 1, 0)), quantize, channels_first)
    return R.permute_dims(y, [0, 3, 1, 2])


def _packed_channel(idx):
    """The output channel of a packed accumulator's [..., block, lane] element."""
    return idx[-2] * LANES + idx[-1]


def _plain_channel(idx):
    return idx[-1]


def _emit_int8_kernel(L, fn, args: list, name: str, start: bool | dict, channel=_packed_channel):
    """The call_tir of an int8 conv/dense kernel; with `start` its accumulator starts from args[2] (per channel) rather
    than 0: te.sum's init argument is dropped by create_prim_func, so the block's T.init() is rewritten. A kernel of
    several accumulators (a dense chain) passes `start` as {accumulator block name: index of its args}.

    A kernel with an integer output may take the elementwise ops after it into its epilogue (Relax FuseOps, as a
    float conv takes its bias and ReLU): a residual qadd then costs no kernel launch and no pass over memory. Float
    ops never join it (dequantize is injective; a float output is opaque): LLVM would contract a dequantize's
    multiply and a following add into an FMA, and the result would no longer be the interpreter's exactly."""
    func, call_args, out = gen_call_tir_inputs(fn, *args)
    if start:
        starts = start if isinstance(start, dict) else None

        def visit(block):
            if starts is not None and block.name_hint not in starts:
                return block
            index = 2 if starts is None else starts[block.name_hint]
            return _start_from(func.params[index], channel, block)

        func = tvm_ffi.structural_map(func, (s_tir.SBlock, visit))
    pattern = OPAQUE if out[0].dtype == "float32" else OUT_ELEMWISE_FUSABLE
    return relax.call_tir(L.bb.add_func(func.with_attr("op_pattern", pattern), name), call_args, out)


def _start_from(start, channel, block):
    """`block` with its reduction init (acc[...] = 0) reading start[channel(indices)] instead."""
    if block.init is None:
        return block
    idx = block.init.indices
    init = tirx.BufferStore(block.init.buffer, tirx.BufferLoad(start, [channel(idx)]), idx)
    return s_tir.SBlock(
        block.iter_vars, block.reads, block.writes, block.name_hint, block.body, init,
        block.alloc_buffers, block.match_buffers, block.annotations,
    )  # fmt: skip


def _bound(L, x):
    """`x` as a bound variable (emit_te takes bound values only)."""
    return x if isinstance(x, relax.Var) else L.bb.emit(x)


@rule("qadd")
def _qadd(L, n, a):
    """The residual add on integers (ember.ir.ops.quant's contract), all in int32: one elementwise kernel."""
    at = n.attrs
    i32 = lambda v: tirx.const(v, "int32")  # noqa: E731
    out_dtype = dtypes.to_tvm(at["out_dtype"])

    def fn(x, y):
        def element(*i):
            acc = (x(*i).astype("int32") - i32(at["a_zero_point"])) * i32(at["a_multiplier"])
            acc = acc + (y(*i).astype("int32") - i32(at["b_zero_point"])) * i32(at["b_multiplier"])
            out = ((acc + i32(1 << (at["shift"] - 1))) >> i32(at["shift"])) + i32(at["out_zero_point"])
            return tirx.max(tirx.min(out, i32(at["out_max"])), i32(at["out_min"])).astype(out_dtype)

        return te.compute(x.shape, element, name="qadd")

    return L.bb.emit_te(fn, _bound(L, a[0]), _bound(L, a[1]), primfunc_name_hint="qadd")
