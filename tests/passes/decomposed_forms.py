"""Random GELU, HardSwish, SiLU, LayerNorm and attention written out elementwise, in the operand orders
exporters produce, plus near misses a recognizer must leave alone. Each builder takes a GraphGen."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from hypothesis import strategies as st

from ember.ir.graph import Value

if TYPE_CHECKING:
    from tests.passes.random_graphs import GraphGen


def clip(gen: GraphGen, x: Value) -> Value:
    lo, hi = gen.pick([(0.0, 6.0), (-1.0, 1.0), (0.0, math.inf), (-math.inf, 0.5)])
    return gen.emit("clip", x, min=lo, max=hi)


def gelu_erf(gen: GraphGen, x: Value) -> Value:
    """0.5 * x * (1 + erf(x / sqrt(2)))."""
    if gen.chance():
        inner = gen.emit("div", x, gen.scalar(math.sqrt(2.0)))
    else:
        inner = gen.comm("mul", x, gen.scalar(1 / math.sqrt(2.0)))
    one_plus = gen.comm("add", gen.emit("erf", inner), gen.scalar(1.0))
    order = gen.pick(["(0.5x)(1+e)", "x(0.5(1+e))", "(x(1+e))0.5", "(x(1+e))/2"])
    if order == "(0.5x)(1+e)":
        return gen.comm("mul", gen.comm("mul", x, gen.scalar(0.5)), one_plus)
    if order == "x(0.5(1+e))":
        return gen.comm("mul", x, gen.comm("mul", one_plus, gen.scalar(0.5)))
    prod = gen.comm("mul", x, one_plus)
    return gen.comm("mul", prod, gen.scalar(0.5)) if order.endswith("0.5") else gen.emit("div", prod, gen.scalar(2.0))


def gelu_tanh(gen: GraphGen, x: Value) -> Value:
    """0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))."""
    cube = gen.emit("pow", x, gen.scalar(3.0)) if gen.chance() else gen.emit("mul", gen.emit("mul", x, x), x)
    inner = gen.comm("add", x, gen.comm("mul", cube, gen.scalar(0.044715)))
    t = gen.emit("tanh", gen.comm("mul", inner, gen.scalar(math.sqrt(2 / math.pi))))
    return gen.comm("mul", gen.comm("mul", x, gen.scalar(0.5)), gen.comm("add", t, gen.scalar(1.0)))


def hard_swish_clip(gen: GraphGen, x: Value) -> Value:
    """x * clip(x + 3, 0, 6) / 6."""
    relu6 = gen.emit("clip", gen.comm("add", x, gen.scalar(3.0)), min=0.0, max=6.0)
    form = gen.pick(["(x*r)/6", "(x*r)*(1/6)", "x*(r/6)"])
    if form == "x*(r/6)":
        return gen.comm("mul", x, gen.emit("div", relu6, gen.scalar(6.0)))
    prod = gen.comm("mul", x, relu6)
    return gen.emit("div", prod, gen.scalar(6.0)) if form == "(x*r)/6" else gen.comm("mul", prod, gen.scalar(1 / 6))


ACTIVATIONS: dict[str, Callable[[GraphGen, Value], Value]] = {
    "relu": lambda gen, x: gen.emit("relu", x),
    "clip": clip,
    "sigmoid": lambda gen, x: gen.emit("sigmoid", x),
    "tanh": lambda gen, x: gen.emit("tanh", x),
    "leaky_relu": lambda gen, x: gen.emit("leaky_relu", x, alpha=0.1),
    "hard_swish": lambda gen, x: gen.emit("hard_swish", x),
    "silu": lambda gen, x: gen.emit("silu", x),
    "gelu": lambda gen, x: gen.emit("gelu", x, approximate=gen.pick(["none", "tanh"])),
    "gelu-erf": gelu_erf,
    "gelu-tanh": gelu_tanh,
    "hard-swish-clip": hard_swish_clip,
    "hard-swish-hsig": lambda gen, x: gen.comm("mul", x, gen.emit("hard_sigmoid", x, alpha=1 / 6, beta=0.5)),
    "silu-mul": lambda gen, x: gen.comm("mul", x, gen.emit("sigmoid", x)),
}


def activation(gen: GraphGen, x: Value | None = None) -> Value:
    x = x if x is not None else gen.input_of(lambda s: True, gen.features)
    y = ACTIVATIONS[gen.pick(list(ACTIVATIONS))](gen, x)
    gen.pool.append(y)
    return y


def layer_norm(gen: GraphGen) -> None:
    """layer_norm, or (x - mean(x)) / sqrt(mean((x - mean)^2) + eps) over the last axis (sometimes over
    another axis, which a recognizer must leave alone); then the affine ops models put after it."""
    x = gen.input_of(lambda s: len(s) >= 2 and s[-1] <= 64, gen.features)
    s = gen.shape(x)
    axis = gen.pick([-1, -2 if len(s) > 2 else -1])
    known = all(isinstance(d, int) for d in x.shape[axis:]) or "layer-norm-unknown-dims" not in gen.avoid
    if known and gen.chance():
        scale = gen.const(gen.signed(s[axis:], 0.5, 1.5))
        bias = [gen.randn(s[axis:], 0.5)] if gen.chance() else []
        y = gen.emit("layer_norm", x, scale, *bias, axis=axis, epsilon=gen.pick([1e-5, 1e-12]))
    else:
        axis = gen.pick([-1, len(s) - 1, -1, 1 if len(s) > 2 else -1])
        mean = gen.emit("reduce_mean", x, axes=[axis], keepdims=1)
        d = gen.emit("sub", x, mean)
        sq = gen.emit("mul", d, d) if gen.chance() else gen.emit("pow", d, gen.scalar(2.0))
        var = gen.emit("reduce_mean", sq, axes=[axis], keepdims=1)
        den = gen.emit("sqrt", gen.comm("add", var, gen.scalar(gen.pick([1e-5, 1e-6, 1e-12]))))
        y = gen.emit("div", d, den) if gen.chance() else gen.comm("mul", d, gen.emit("reciprocal", den))
    gen.pool.append(y)
    gen.tail(y, -1)


def attention(gen: GraphGen) -> None:
    """softmax(q @ k^T * scale [+ mask]) @ v on [B, H, S, D], from inputs or from projections of [B, S, E];
    the scale on the scores, on q, or split over q and k as torch exports it; the mask added or selected."""
    h, s, d = gen.draw(st.integers(1, 2)), gen.draw(st.integers(1, 4)), gen.draw(st.integers(1, 4))
    if gen.chance():
        x = gen.g.add_input(f"seq{len(gen.g.inputs)}", (gen.batch, s, h * d))
        gen.pool.append(x)
        q, k, v = (project(gen, x, h, d) for _ in range(3))
    else:
        q, k, v = (gen.g.add_input(f"{t}{len(gen.g.inputs)}", (gen.batch, h, s, d)) for t in "qkv")
    scale = gen.pick(["mul", "div", "q", "q-and-k"])
    root = 1 / math.sqrt(math.sqrt(d))
    if scale.startswith("q"):
        q = gen.comm("mul", q, gen.scalar(1 / math.sqrt(d) if scale == "q" else root))
    kt = gen.emit("transpose", k, perm=[0, 1, 3, 2])
    if scale == "q-and-k":
        kt = gen.comm("mul", kt, gen.scalar(root))
    scores = gen.emit("matmul", q, kt)
    if scale == "mul":
        scores = gen.comm("mul", scores, gen.scalar(1 / math.sqrt(d)))
    elif scale == "div":
        scores = gen.emit("div", scores, gen.scalar(math.sqrt(d)))
    scores = mask(gen, scores, s)
    out = gen.emit("matmul", gen.emit("softmax", scores, axis=gen.pick([-1, 3])), v)
    if gen.chance():
        out = gen.emit("transpose", out, perm=[0, 2, 1, 3])
        out = gen.emit("reshape", out, gen.const([0, 0, h * d], np.int64))
    gen.pool.append(out)


def mask(gen: GraphGen, scores: Value, s: int) -> Value:
    """scores + a causal or input mask, or where(causal, scores, fill) with a fill that may not mask at all."""
    form = gen.pick(["none", "causal", "input", "where"])
    if form == "causal":
        fill = np.triu(np.full((s, s), gen.pick([-1e4, -1e9, -math.inf])), 1)
        return gen.comm("add", scores, gen.const(fill if gen.chance() else fill[None, None]))
    if form == "input":
        m = gen.g.add_input(f"mask{len(gen.g.inputs)}", (gen.pick([1, gen.batch]), 1, s, s))
        return gen.comm("add", scores, m)
    if form == "where":
        keep = gen.g.add_constant(np.tril(np.ones((s, s), dtype=bool)), "causal")
        fills = [-math.inf, -1e9] + ([] if "where-fill-not-mask" in gen.avoid else [0.0, -1.0])
        return gen.emit("where", keep, scores, gen.scalar(gen.pick(fills)))
    return scores


def project(gen: GraphGen, x: Value, h: int, d: int) -> Value:
    """[B, S, E] @ W (+ b) -> [B, S, H, D] -> [B, H, S, D]."""
    y = gen.emit("matmul", x, gen.randn((h * d, h * d), 1 / math.sqrt(h * d)))
    if gen.chance():
        y = gen.comm("add", y, gen.randn((h * d,), 0.5))
    y = gen.emit("reshape", y, gen.const([0, 0, h, d], np.int64))
    return gen.emit("transpose", y, perm=[0, 2, 1, 3])
