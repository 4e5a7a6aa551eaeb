"""The fold size cap in the library: sizes, fold_scope (per call, nested, recording skips once), load's and
compile's fold_limit, and the NaN/Inf warning naming the node."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import ember
from ember import EmberError, ir
from ember.frontends.onnx import load
from ember.ir.fold import DEFAULT_FOLD_LIMIT, current_limit, fold_scope, format_size, parse_size
from ember.passes import PassManager
from tests.cli.test_fold_limit import broadcast_model, nan_model
from tests.conftest import assert_close, ort_run, random_feeds

BIG = {"constant_of_shape", "tile", "expand"}


@pytest.mark.parametrize(
    "text, nbytes",
    [
        ("0", 0),
        (4096, 4096),
        (np.int64(7), 7),
        ("512", 512),
        ("512B", 512),
        ("512k", 512 << 10),
        ("512 KiB", 512 << 10),
        ("64MiB", 64 << 20),
        ("64M", 64 << 20),
        ("64MB", 64_000_000),
        ("1GiB", 1 << 30),
        ("1.5gib", 3 << 29),
        ("2T", 2 << 40),
    ],
)
def test_parse_size(text, nbytes):
    assert parse_size(text) == nbytes


@pytest.mark.parametrize("text", ["", "k", "-5", -5, "1e6", "5 MiBs", "12 bytes", "1.2.3"])
def test_parse_size_rejects(text):
    with pytest.raises(EmberError, match="bad fold limit"):
        parse_size(text)


def test_format_size():
    assert [format_size(n) for n in (12, 1024, 1536, 64 << 20, 3 << 29)] == [
        "12 B",
        "1 KiB",
        "1.5 KiB",
        "64 MiB",
        "1.5 GiB",
    ]


def test_scopes_nest_and_end():
    assert current_limit() == DEFAULT_FOLD_LIMIT
    with fold_scope("1MiB") as outer:
        with fold_scope() as inner:
            assert inner.limit == outer.limit == current_limit() == 1 << 20
            with fold_scope(0):
                assert current_limit() == 0
        assert current_limit() == 1 << 20
    assert current_limit() == DEFAULT_FOLD_LIMIT


def test_load_keeps_folds_over_its_limit_and_records_them_once():
    model = broadcast_model()
    assert not BIG & set(load(model).op_counts())
    with fold_scope() as scope:
        graph = load(model, fold_limit="1KiB")
        assert current_limit() == DEFAULT_FOLD_LIMIT  # load's limit ended with the import
        with fold_scope(1024):
            PassManager.from_spec("fold-constants,fold-constants", verify_each=True).run(graph)
    assert BIG <= set(graph.op_counts())
    assert [(s.stage, s.node, s.op, s.nbytes, s.limit) for s in scope.skipped] == [
        ("import", "ones", "constant_of_shape", 16384, 1024),
        ("import", "big", "tile", 16384, 1024),
        ("import", "wide", "expand", 16384, 1024),
    ]
    feeds = random_feeds(model)
    assert_close(ir.interpret(graph, feeds), ort_run(model, feeds))
    PassManager.from_spec("fold-constants").run(graph)  # the default cap folds them
    assert not BIG & set(graph.op_counts())
    assert_close(ir.interpret(graph, feeds), ort_run(model, feeds))


def test_zero_limit_folds_only_one_element_results():
    g = ir.parse_graph(
        "graph @g(%x: f32[2]) -> (%y) {\n"
        "  @a = const dense<2.0> : f32[]\n"
        "  @v = const dense<[1.0, 2.0]> : f32[2]\n"
        "  %s = mul(@a, @a) : f32[]\n"
        "  %w = mul(@v, @a) : f32[2]\n"
        "  %t = add(%x, %s) : f32[2]\n"
        "  %y = add(%t, %w) : f32[2]\n"
        "  return %y\n"
        "}\n"
    )
    with fold_scope(0) as scope:
        PassManager.from_spec("fold-constants").run(g)
    assert g.op_counts() == {"mul": 1, "add": 2}
    assert [(s.node, s.nbytes) for s in scope.skipped] == [("w", 8)]


def test_nan_made_by_folding_warns_with_the_node_but_a_given_inf_does_not(caplog):
    with caplog.at_level(logging.WARNING, logger="ember"):
        load(nan_model())
        g = ir.parse_graph(
            "graph @g(%x: f32[2]) -> (%y) {\n"
            "  @mask = const dense<[-inf, 0.0]> : f32[2]\n"
            "  @one = const dense<1.0> : f32[]\n"
            '  %m = add(@mask, @one) : f32[2] loc("shift_mask")\n'
            "  %y = add(%x, %m) : f32[2]\n"
            "  return %y\n"
            "}\n"
        )
        PassManager.from_spec("fold-constants").run(g)
    assert "add" in g.op_counts() and g.op_counts()["add"] == 1
    assert [r.getMessage() for r in caplog.records] == [
        "import: node 'root' (sqrt) folds to a tensor holding NaN or Inf"
    ]


def test_compile_takes_fold_limit():
    model = broadcast_model()
    artifact = ember.compile(model, "host", fold_limit="1KiB")
    assert BIG <= set(artifact.graph.op_counts())
    feeds = random_feeds(model)
    assert_close(artifact.run(feeds), ort_run(model, feeds))
    with pytest.raises(EmberError, match="bad fold limit 'big'"):
        ember.compile(model, "host", fold_limit="big")
