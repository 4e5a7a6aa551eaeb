"""--fold-limit on the command line: folds over the cap stay in the graph and are noted under --time-passes
and -v; bad sizes fail in one line; NaN or Inf made by folding is a one-line warning by default."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from ember import ir
from tests.cli.test_cli import assert_one_line_error, ember
from tests.conftest import assert_close, make_model, ort_run, random_feeds

N = 64  # each constant-only result is f32[64,64]: 16 KiB, over a 1 KiB cap and far under the default
BIG_OPS = ("constant_of_shape(", "tile(", "expand(")
NOTE = (
    "skipped 3 folds over the 1 KiB cap: node 'ones' (constant_of_shape) 16 KiB, node 'big' (tile) 16 KiB, "
    "node 'wide' (expand) 16 KiB (raise it with --fold-limit)"
)


def broadcast_model() -> onnx.ModelProto:
    """x * tile(row) + expand(col) + constant_of_shape(0.5): three 16 KiB tensors computed from constants."""
    rng = np.random.default_rng(0)
    half = helper.make_tensor("value", TensorProto.FLOAT, [1], [0.5])
    nodes = [
        helper.make_node("ConstantOfShape", ["shape"], ["ones"], name="ones", value=half),
        helper.make_node("Tile", ["row", "repeats"], ["tiled"], name="big"),
        helper.make_node("Expand", ["col", "shape"], ["wide"], name="wide"),
        helper.make_node("Mul", ["x", "tiled"], ["m"], name="mul"),
        helper.make_node("Add", ["m", "wide"], ["a"], name="add_wide"),
        helper.make_node("Add", ["a", "ones"], ["y"], name="add_ones"),
    ]
    inits = {
        "shape": np.array([N, N], np.int64),
        "row": rng.standard_normal((1, N)).astype(np.float32),
        "repeats": np.array([N, 1], np.int64),
        "col": rng.standard_normal((N, 1)).astype(np.float32),
    }
    return make_model(nodes, [("x", [N, N])], [("y", [N, N])], inits)


def nan_model() -> onnx.ModelProto:
    nodes = [helper.make_node("Sqrt", ["c"], ["s"], name="root"), helper.make_node("Add", ["x", "s"], ["y"])]
    return make_model(nodes, [("x", [2])], [("y", [2])], {"c": np.array([-1.0, 4.0], np.float32)})


@pytest.fixture
def model_file(tmp_path) -> Path:
    onnx.save(broadcast_model(), str(tmp_path / "m.onnx"))
    return tmp_path / "m.onnx"


def stderr_lines(r) -> list[str]:
    return [ln for ln in r.stderr.splitlines() if ln.strip()]


def test_small_limit_keeps_the_nodes_and_notes_them_after_the_timing_table(model_file, tmp_path):
    r = ember("opt", str(model_file), "-O1", "--fold-limit", "1KiB", "--time-passes")
    assert r.returncode == 0, r.stderr
    assert all(op in r.stdout for op in BIG_OPS), r.stdout
    lines = stderr_lines(r)
    assert lines[-1] == f"note: import {NOTE}", r.stderr
    assert any("total" in ln for ln in lines[:-1]) and "fold-constants" in r.stderr  # the table came first
    assert "info:" not in r.stderr  # each skip is logged only under -v

    model = broadcast_model()
    feeds = random_feeds(model)
    for out in ("o.onnx", "o.ir"):
        r = ember("opt", str(model_file), "-O1", "--fold-limit", "1k", "-o", str(tmp_path / out))
        assert r.returncode == 0 and r.stderr == "", r.stderr
    assert_close(ort_run(str(tmp_path / "o.onnx"), feeds), ort_run(model, feeds))
    graph = ir.read_ir(tmp_path / "o.ir")
    assert {"constant_of_shape", "tile", "expand"} <= set(graph.op_counts())
    assert_close(ir.interpret(graph, feeds), ort_run(model, feeds))


def test_verbose_logs_each_skipped_fold(model_file):
    r = ember("opt", str(model_file), "--fold-limit", "1024", "-v")
    assert r.returncode == 0, r.stderr
    assert stderr_lines(r) == [
        "info: import: not folding node 'ones' (constant_of_shape): its 16 KiB result is over the 1 KiB cap",
        "info: import: not folding node 'big' (tile): its 16 KiB result is over the 1 KiB cap",
        "info: import: not folding node 'wide' (expand): its 16 KiB result is over the 1 KiB cap",
    ]


def test_fold_constants_notes_its_own_skips_once(model_file, tmp_path):
    r = ember("opt", str(model_file), "--passes", "", "--fold-limit", "1KiB", "-o", str(tmp_path / "m.ir"))
    assert r.returncode == 0, r.stderr
    r = ember("opt", str(tmp_path / "m.ir"), "--passes", "fold-constants,fold-constants", "--fold-limit", "1KiB", "-v")
    assert r.returncode == 0, r.stderr
    assert all(op in r.stdout for op in BIG_OPS)
    assert sum("info: fold-constants: not folding" in ln for ln in stderr_lines(r)) == 3
    r = ember("opt", str(tmp_path / "m.ir"), "-O1", "--fold-limit", "1KiB", "--time-passes")
    assert stderr_lines(r)[-1] == f"note: fold-constants {NOTE}"
    r = ember("opt", str(tmp_path / "m.ir"), "-O1", "--time-passes")
    assert r.returncode == 0 and not any(op in r.stdout for op in BIG_OPS)
    assert "note:" not in r.stderr


def test_default_limit_folds_them(model_file):
    r = ember("opt", str(model_file), "--time-passes", "-v")
    assert r.returncode == 0, r.stderr
    assert not any(op in r.stdout for op in BIG_OPS)
    assert "note:" not in r.stderr and "info:" not in r.stderr


def test_compile_with_a_small_limit_runs_like_onnxruntime(model_file, tmp_path):
    out = tmp_path / "b"
    r = ember("compile", str(model_file), "--fold-limit", "1KiB", "--time-passes", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert f"note: import {NOTE}" in stderr_lines(r)
    model = broadcast_model()
    feeds = random_feeds(model)
    np.save(tmp_path / "x.npy", feeds["x"])
    r = ember("run", str(out), "--input", f"x={tmp_path / 'x.npy'}", "-o", str(tmp_path / "y.npz"))
    assert r.returncode == 0, r.stderr
    assert_close([np.load(tmp_path / "y.npz")["y"]], ort_run(model, feeds))


BAD_LIMITS = [("opt", size) for size in ("64 potatoes", "-1", "MiB", "1.2.3k", "64MiBs", "")]


@pytest.mark.parametrize("command, size", BAD_LIMITS + [("inspect", "1 GB RAM"), ("compile", "lots")])
def test_bad_fold_limit_is_one_line_and_exit_2(command, size, model_file, tmp_path):
    out = ["-o", str(tmp_path / "out")] if command == "compile" else []
    r = ember(command, str(model_file), "--fold-limit", size, *out)
    assert_one_line_error(r, f"bad --fold-limit '{size}'", "64MiB")
    assert not (tmp_path / "out").exists()


def test_nan_from_folding_is_a_one_line_warning(tmp_path):
    onnx.save(nan_model(), str(tmp_path / "nan.onnx"))
    r = ember("opt", str(tmp_path / "nan.onnx"), "--passes", "", "-o", str(tmp_path / "nan.ir"))
    assert r.returncode == 0
    assert stderr_lines(r) == ["warning: import: node 'root' (sqrt) folds to a tensor holding NaN or Inf"]
    (tmp_path / "root.ir").write_text(
        "graph @g(%x: f32[2]) -> (%y) {\n"
        "  @c = const dense<[-1.0, 4.0]> : f32[2]\n"
        '  %s = sqrt(@c) : f32[2] loc("root")\n'
        "  %y = add(%x, %s) : f32[2]\n"
        "  return %y\n"
        "}\n"
    )
    r = ember("opt", str(tmp_path / "root.ir"), "--passes", "fold-constants")
    assert r.returncode == 0 and "nan" in r.stdout
    assert stderr_lines(r) == ["warning: fold-constants: node 'root' (sqrt) folds to a tensor holding NaN or Inf"]
    r = ember("compile", str(tmp_path / "nan.onnx"), "-o", str(tmp_path / "b"))  # TVM's stderr is captured here
    assert r.returncode == 0
    assert stderr_lines(r) == ["warning: import: node 'root' (sqrt) folds to a tensor holding NaN or Inf"]
