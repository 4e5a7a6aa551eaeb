"""The IR text format: print/parse round trips (every test model, >= 1000 random graphs), and errors
that point at file:line:column."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ember import EmberError, ir
from ember.frontends.onnx import load
from ember.ir.graph import Graph
from ember.models import LIGHT_MODELS, random_light_model
from ember.models.blocks import mobile_block, transformer_block
from tests.frontends.test_onnx_ops import OPSET_CASES, opset_variant, rng


def graphs_equal(a: Graph, b: Graph) -> bool:
    def sig(v):
        return None if v is None else (v.name, v.shape, v.dtype, v.is_const)

    if (a.name, [sig(v) for v in a.inputs], [sig(v) for v in a.outputs]) != (
        b.name,
        [sig(v) for v in b.inputs],
        [sig(v) for v in b.outputs],
    ):
        return False
    if len(a.nodes) != len(b.nodes):
        return False
    for n, m in zip(a.nodes, b.nodes):
        if (n.op, n.name, n.attrs, [sig(v) for v in n.inputs], [sig(v) for v in n.outputs]) != (
            m.op,
            m.name,
            m.attrs,
            [sig(v) for v in m.inputs],
            [sig(v) for v in m.outputs],
        ):
            return False
    ca, cb = {c.name: c.const for c in a.constants}, {c.name: c.const for c in b.constants}
    return ca.keys() == cb.keys() and all(
        ca[k].dtype == cb[k].dtype and ca[k].shape == cb[k].shape and ca[k].tobytes() == cb[k].tobytes() for k in ca
    )


def round_trip(graph: Graph, tmp_path) -> Graph:
    sidecar: dict = {}
    text = ir.print_graph(graph, sidecar, "w.npz")
    if sidecar:
        np.savez(tmp_path / "w.npz", **sidecar)
    back = ir.parse_graph(text, "g.ir", tmp_path)
    ir.verify(back)
    assert ir.print_graph(back, {}, "w.npz") == text
    return back


# vgg19's and zfnet512's 548 and 333 MB of weights take the sidecar path alexnet's 244 MB do, 28 s longer
MODELS = {f"light-{n}": (lambda n=n: random_light_model(n)) for n in LIGHT_MODELS if n not in {"vgg19", "zfnet512"}}
MODELS |= {"mobile": lambda: mobile_block(rng), "transformer": lambda: transformer_block(rng)}
MODELS |= {f"opset-{c}": (lambda c=c: opset_variant(c)) for c in OPSET_CASES}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_round_trip_on_test_models(name, tmp_path):
    graph = load(MODELS[name]())
    assert graphs_equal(round_trip(graph, tmp_path), graph)


# ---- random graphs -------------------------------------------------------------------------
UNARY = ["relu", "sigmoid", "tanh", "neg", "abs", "exp", "hard_swish", "silu", "identity"]
BINARY = ["add", "sub", "mul", "max", "min"]
NAMES = st.text(alphabet="abcxyz_019./-:", min_size=1, max_size=6)


@st.composite
def random_graphs(draw) -> Graph:
    g = Graph(draw(st.sampled_from(["main", "net", "g-1", "weird name"])))
    rank = draw(st.integers(1, 3))
    dims = tuple(draw(st.sampled_from([1, 2, 3, "N", "batch"])) for _ in range(rank))
    pool = [g.add_input(draw(NAMES) + "in", dims, draw(st.sampled_from(["f32", "f16"])))]
    dtype = pool[0].dtype
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["unary", "binary", "const", "softmax", "clip", "transpose", "reduce"]))
        x = draw(st.sampled_from(pool))
        name = draw(NAMES)
        if kind == "unary":
            v = g.emit(draw(st.sampled_from(UNARY)), x, name=name)
        elif kind == "binary":
            same = [p for p in pool if p.shape == x.shape]
            v = g.emit(draw(st.sampled_from(BINARY)), x, draw(st.sampled_from(same)), name=name)
        elif kind == "const":
            size = draw(st.integers(1, 12))
            vals = draw(
                st.lists(
                    st.floats(-1e3, 1e3, width=16) | st.sampled_from([np.inf, -np.inf, -0.0]),
                    min_size=size,
                    max_size=size,
                )
            )
            npd = np.float16 if dtype == "f16" else np.float32
            c = g.add_constant(
                np.array(vals, dtype=npd).reshape(1, size)
                if rank > 1 and x.shape[-1] == size
                else np.array(vals[:1], dtype=npd),
                name,
            )
            v = g.emit("mul", x, c, name=name)
        elif kind == "softmax":
            v = g.emit("softmax", x, axis=draw(st.integers(-x.rank, x.rank - 1)), name=name)
        elif kind == "clip":
            lo = draw(st.floats(-10, 0))
            v = g.emit("clip", x, min=lo, max=draw(st.floats(0, 10) | st.just(float("inf"))), name=name)
        elif kind == "transpose":
            v = g.emit("transpose", x, perm=draw(st.permutations(range(x.rank))), name=name)
        else:
            v = g.emit("reduce_mean", x, axes=[draw(st.integers(0, x.rank - 1))], keepdims=1, name=name)
        pool.append(v)
    g.outputs = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3, unique_by=id))
    return g


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(random_graphs())
def test_round_trip_on_random_graphs(graph):
    text = ir.print_graph(graph)
    back = ir.parse_graph(text)
    assert graphs_equal(back, graph)
    assert ir.print_graph(back) == text


# ---- errors --------------------------------------------------------------------------------
GOOD = """graph @g(%x: f32[2,3]) -> (%y) {
  @c = const dense<[1.0, 2.0, 3.0]> : f32[3]
  %m = mul(%x, @c) : f32[2,3]
  %y = relu(%m) : f32[2,3]
  return %y
}
"""


@pytest.mark.parametrize(
    "broken, where, message",
    [
        (GOOD.replace("%m = mul", "%m = mull"), "3:8", "unknown op 'mull'"),
        (GOOD.replace("relu(%m)", "relu(%q)"), "4:13", "use of undefined value %q"),
        (GOOD.replace(": f32[2,3]\n  %y", ": f32[2,4]\n  %y"), "3:8", "infers f32[2, 3]"),
        (GOOD.replace("[1.0, 2.0, 3.0]", "[1.0, 2.0]"), "2:3", "has 2 values"),
        (GOOD.replace("f32[2,3]) ->", "f99[2,3]) ->"), "1:14", "unknown element type"),
        (GOOD.replace("return %y", "return"), "6:1", "expected a %value"),
        (GOOD.replace("(%x, @c)", "(%x @c)"), "3:15", "expected ',' or ')'"),
        (GOOD.replace("relu(%m)", "relu(%m) {alpha=1}"), "4:8", "unknown attribute 'alpha'"),
        (GOOD + "junk", "7:1", "expected end of input"),
        (GOOD.replace("@c = const dense<[1.0, 2.0, 3.0]>", "@c = const"), "2:3", "no inline data"),
        (GOOD.replace("%y = relu", "%m = relu"), "4:3", "defined twice"),
        ("graph @g(%x: f32[2]) -> (%x) {\n  return %x\n} $", "3:3", "unexpected character"),
    ],
)
def test_parse_errors_point_at_line_and_column(broken, where, message):
    with pytest.raises(EmberError) as err:
        ir.parse_graph(broken, "model.ir")
    text = str(err.value)
    assert text.startswith(f"model.ir:{where}: "), text
    assert message in text, text


def test_weights_outside_the_folder_are_refused(tmp_path):
    text = GOOD.replace("{\n", '{\n  weights "../w.npz"\n', 1)
    with pytest.raises(EmberError, match="outside the IR file's folder"):
        ir.parse_graph(text, "g.ir", tmp_path)
