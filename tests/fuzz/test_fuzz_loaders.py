"""Fuzzing the ONNX loader (damaged bytes, and well-formed models with wrong attributes, dims and wires) and
the IR parser (damaged texts): each input either loads or raises EmberError.

CI runs EMBER_FUZZ_EXAMPLES examples per fuzzer (default 200); for a longer run:
`EMBER_FUZZ_EXAMPLES=5000 .venv/bin/pytest tests/fuzz`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from ember.errors import EmberError
from ember.frontends.onnx import load
from ember.ir.parser import parse_graph

EXAMPLES = int(os.environ.get("EMBER_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
FILECHECK = Path(__file__).resolve().parents[1] / "filecheck"
IR_TEXTS = [p.read_text() for p in sorted(FILECHECK.glob("*.ir"))]


def _conv_model() -> bytes:
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.random((4, 3, 3, 3), dtype=np.float32), "w"),
        numpy_helper.from_array(np.array([1, -1], np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Reshape", ["p", "shape"], ["f"], name="flat"),
        helper.make_node("Softmax", ["f"], ["y"], name="soft", axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "fuzz",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def _matmul_model() -> bytes:
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"), helper.make_node("Tanh", ["h"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8).SerializeToString()


SEEDS = [_conv_model(), _matmul_model()]


def _mutated(seed: bytes | str, draw) -> bytes | str:
    """One of: truncate, overwrite a few bytes, splice in a slice of another seed, delete or repeat a slice."""
    n = len(seed)
    kind = draw(st.sampled_from(["truncate", "flip", "splice", "delete", "repeat"]))
    i = draw(st.integers(0, n))
    j = draw(st.integers(i, min(n, i + 64)))
    if kind == "truncate":
        return seed[:i]
    if kind == "flip" and n:
        for k in draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=8)):
            if isinstance(seed, bytes):
                seed = seed[:k] + bytes([seed[k] ^ draw(st.integers(1, 255))]) + seed[k + 1 :]
            else:
                seed = seed[:k] + draw(st.sampled_from(list('%@()[]{}<>,:=?"-09azf\n '))) + seed[k + 1 :]
        return seed
    if kind == "splice":
        other = draw(st.sampled_from(SEEDS if isinstance(seed, bytes) else IR_TEXTS))
        k = draw(st.integers(0, len(other)))
        return seed[:i] + other[k : k + (j - i) + 1] + seed[j:]
    if kind == "delete":
        return seed[:i] + seed[j:]
    return seed[:j] + seed[i:j] + seed[j:]


@st.composite
def damaged_onnx(draw) -> bytes:
    data = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 3))):
        data = _mutated(data, draw)
    return data


_INTS = st.integers(-3, 9) | st.sampled_from([0, -1, 2**31, -(2**40)])


def _edit(model: onnx.ModelProto, draw) -> None:
    """One well-formed but wrong edit: an attribute, a declared dim, an initializer's dims, a wire or a node."""
    nodes = model.graph.node
    kind = draw(st.sampled_from(["attr", "dim", "init", "wire", "drop"]))
    node = nodes[draw(st.integers(0, len(nodes) - 1))] if len(nodes) else None
    if kind == "attr" and node is not None and node.attribute:
        attr = node.attribute[draw(st.integers(0, len(node.attribute) - 1))]
        if attr.ints:
            attr.ints[:] = draw(st.lists(_INTS, max_size=6))
        else:
            attr.i = draw(_INTS)
    elif kind == "dim":
        dims = model.graph.input[0].type.tensor_type.shape.dim
        if dims:
            dims[draw(st.integers(0, len(dims) - 1))].dim_value = draw(st.integers(0, 9))
    elif kind == "init" and model.graph.initializer:
        init = model.graph.initializer[draw(st.integers(0, len(model.graph.initializer) - 1))]
        init.dims[:] = draw(st.lists(st.integers(0, 6), max_size=4))
    elif kind == "wire" and node is not None and node.input:
        names = [n for other in nodes for n in other.output] + ["x", ""]
        node.input[draw(st.integers(0, len(node.input) - 1))] = draw(st.sampled_from(names))
    elif kind == "drop" and node is not None:
        nodes.remove(node)


@st.composite
def edited_onnx(draw) -> bytes:
    model = onnx.load_from_string(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 3))):
        _edit(model, draw)
    return model.SerializeToString()


@st.composite
def damaged_ir(draw) -> str:
    text = draw(st.sampled_from(IR_TEXTS))
    for _ in range(draw(st.integers(1, 3))):
        text = _mutated(text, draw)
    return text


def test_seeds_load():
    for data in SEEDS:
        assert load(onnx.load_from_string(data)).nodes
    assert all(parse_graph(t, "seed.ir", FILECHECK).nodes for t in IR_TEXTS if "weights" not in t)


@FUZZ
@given(damaged_onnx() | edited_onnx())
def test_onnx_loader_loads_or_raises_ember_error(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.onnx"
        path.write_bytes(data)
        try:
            load(path)
        except EmberError as e:
            assert "fuzz.onnx" in str(e) and "\n" not in str(e)


@FUZZ
@given(damaged_ir())
def test_ir_parser_parses_or_raises_ember_error(text):
    try:
        parse_graph(text, "fuzz.ir", FILECHECK)
    except EmberError as e:
        assert "fuzz.ir" in str(e) and "\n" not in str(e)
