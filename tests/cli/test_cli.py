"""The command line on good and bad input: one-line errors, exit status 2, nothing half-written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from ember.models import random_light_model
from tests.conftest import make_model

EMBER = str(Path(sys.executable).parent / "ember")


def ember(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([EMBER, *args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("m") / "squeezenet.onnx"
    onnx.save(random_light_model("squeezenet"), str(path))
    return path


@pytest.fixture(scope="module")
def bundle(model_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("b") / "sq"
    r = ember("compile", str(model_file), "--target", "host", "-o", str(out))
    assert r.returncode == 0, r.stderr
    return out


def assert_one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("ember: error: ") and "Traceback" not in r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_compile_and_run(bundle, tmp_path):
    meta = json.loads((bundle / "metadata.json").read_text())
    assert meta["target"]["name"] == "host" and (bundle / "model.so").exists()
    x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    r = ember("run", str(bundle), "--input", f"data_0={tmp_path / 'x.npy'}", "-o", str(tmp_path / "y.npz"))
    assert r.returncode == 0, r.stderr
    assert "softmaxout_1: float32 [1, 1000, 1, 1]" in r.stdout
    assert np.load(tmp_path / "y.npz")["softmaxout_1"].shape == (1, 1000, 1, 1)


def test_targets_lists_names_and_tvm_targets():
    r = ember("targets")
    assert r.returncode == 0
    for name in ("host", "aarch64-linux-gnu", "armv7a-linux-gnueabihf", "nvidia/jetson-orin-nano", "mali", "vulkan"):
        assert name in r.stdout
    assert "mtriple=aarch64-linux-gnu" in r.stdout


def unsupported_model() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="ok"),
        helper.make_node("Det", ["r"], ["d"], name="det_1"),
        helper.make_node("Det", ["r"], ["d2"], name="det_2"),
        helper.make_node("FancyOp", ["r"], ["f"], name="fancy", domain="com.acme"),
        helper.make_node("Add", ["d", "d2"], ["y"], name="sum"),
    ]
    m = make_model(nodes, [("x", [2, 3, 3])], [("y", None), ("f", None)], opset=17)
    m.opset_import.append(helper.make_opsetid("com.acme", 1))
    return m


def bad_inputs(tmp: Path, model_file: Path) -> dict[str, tuple[list[str], list[str]]]:
    truncated = tmp / "truncated.onnx"
    truncated.write_bytes(model_file.read_bytes()[:5000])
    garbage = tmp / "garbage.onnx"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    text = tmp / "notes.onnx"
    text.write_text("this is not a model\n")
    unsupported = tmp / "unsupported.onnx"
    onnx.save(unsupported_model(), str(unsupported))
    m = str(model_file)
    return {
        "missing": ([str(tmp / "nope.onnx")], ["nope.onnx", "no such file"]),
        "truncated": ([str(truncated)], ["truncated.onnx", "not a readable ONNX model"]),
        "random-bytes": ([str(garbage)], ["garbage.onnx"]),
        "text": ([str(text)], ["notes.onnx"]),
        "unknown-target": ([m, "--target", "pdp11"], ["unknown target 'pdp11'"]),
        "shape-not-input": (
            [m, "--input-shape", "image:1,3,224,224"],
            ["squeezenet.onnx", "'image'", "not a graph input"],
        ),
        "shape-wrong-rank": ([m, "--input-shape", "data_0:1,3,224"], ["squeezenet.onnx", "rank 4"]),
        "shape-malformed": ([m, "--input-shape", "data_0"], ["bad --input-shape"]),
        "unsupported-ops": (
            [str(unsupported)],
            ["unsupported.onnx", "Det (node 'det_1')", "com.acme.FancyOp (node 'fancy')"],
        ),
    }


CASES = [
    "missing",
    "truncated",
    "random-bytes",
    "text",
    "unknown-target",
    "shape-not-input",
    "shape-wrong-rank",
    "shape-malformed",
    "unsupported-ops",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_fails_cleanly_and_writes_nothing(case, model_file, tmp_path):
    args, needles = bad_inputs(tmp_path, model_file)[case]
    out = tmp_path / "out"
    r = ember("compile", *args, "-o", str(out))
    assert_one_line_error(r, *needles)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


@pytest.mark.parametrize("case", ["truncated", "unsupported-ops", "unknown-target"])
def test_bad_input_leaves_existing_bundle_intact(case, model_file, bundle, tmp_path):
    args, _ = bad_inputs(tmp_path, model_file)[case]
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}
    r = ember("compile", *args, "-o", str(bundle))
    assert r.returncode == 2
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before


def test_debug_shows_the_traceback(tmp_path):
    r = ember("--debug", "compile", str(tmp_path / "nope.onnx"))
    assert r.returncode == 2 and "Traceback" in r.stderr and "no such file" in r.stderr


def test_unsupported_ops_listed_once_each():
    from ember import EmberError
    from ember.frontends.onnx import load

    with pytest.raises(EmberError) as err:
        load(unsupported_model())
    msg = str(err.value)
    assert msg.count("Det") == 1 and "Relu" not in msg


def test_run_rejects_missing_bundle_and_bad_inputs(bundle, tmp_path):
    assert_one_line_error(ember("run", str(tmp_path / "none")), "no such bundle")
    np.save(tmp_path / "small.npy", np.zeros((1, 3, 8, 8), np.float32))
    assert_one_line_error(ember("run", str(bundle), "--input", f"data_0={tmp_path / 'small.npy'}"), "must have shape")
    assert_one_line_error(ember("run", str(bundle), "--input", f"data_0={tmp_path / 'nope.npy'}"), "cannot read")


def test_a_lowering_error_names_the_file_and_prints_nothing_else(tmp_path):
    """An error past import (here a shape computed from an input's values, which no static build takes) names
    the model file like an import error, and TVM's native warning about the abandoned builder is not printed."""
    from onnx import TensorProto, helper

    node = helper.make_node("Expand", ["x", "shape"], ["y"], name="grow")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 1]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "grow.onnx"))
    r = ember("compile", str(tmp_path / "grow.onnx"), "-o", str(tmp_path / "out"))
    assert_one_line_error(r, "grow.onnx", "node 'grow' (expand)", "is not static", "input values")
    assert not (tmp_path / "out").exists()
