"""`ember compile --quantize int8` on bad calibration data and options: one line on stderr naming the sample and
input, exit status 2, and no bundle written."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from ember.cli.main import cli


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).normal(0, 1, (4, 8)).astype(np.float32), "w")
    node = helper.make_node("Gemm", ["images", "w"], ["y"], "fc", transB=1)
    graph = helper.make_graph(
        [node],
        "fc",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [w],
    )
    path = tmp_path_factory.mktemp("m") / "fc.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return str(path)


def compile_(*args: str):
    return CliRunner().invoke(cli, ["compile", *args], catch_exceptions=False)


def assert_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("ember: error:")]
    assert len(lines) == 1, result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    "arrays, needles",
    [
        ({"images": np.full((3, 1, 8), np.nan, np.float32)}, ["sample 0 of 'calib.npz'", "input 'images' holds NaN"]),
        ({"images": np.zeros((3, 1, 9), np.float32)}, ["sample 0 of 'calib.npz'", "input 'images': shape [1, 9]"]),
        ({"images": np.zeros((3, 1, 8), np.float64)}, ["input 'images': dtype float64"]),
        ({"pixels": np.zeros((3, 1, 8), np.float32)}, ["lacks input 'images'"]),
        ({"images": np.zeros((0, 1, 8), np.float32)}, ["the calibration set is empty"]),
    ],
)
def test_bad_calibration_data_is_one_line_and_exit_2(model, tmp_path, arrays, needles):
    np.savez(tmp_path / "calib.npz", **arrays)
    out = tmp_path / "bundle"
    r = compile_(model, "--quantize", "int8", "--calibration", str(tmp_path / "calib.npz"), "-o", str(out))
    assert_error(r, *needles)
    assert not out.exists()


def test_bad_quantization_options(model, tmp_path):
    np.savez(tmp_path / "calib.npz", images=np.zeros((2, 1, 8), np.float32))
    calib = str(tmp_path / "calib.npz")
    assert_error(compile_(model, "--quantize", "int8"), "--quantize int8 needs --calibration DATA")
    assert_error(compile_(model, "--calibration", calib), "apply with --quantize int8")
    assert_error(compile_(model, "--evaluation", calib), "apply with --quantize int8")
    r = compile_(model, "--quantize", "int8", "--calibration", calib, "--skip-ops", "fc,conv9")
    assert_error(r, "--skip-ops names 'conv9'")
    (tmp_path / "empty").mkdir()
    r = compile_(model, "--quantize", "int8", "--calibration", str(tmp_path / "empty"))
    assert_error(r, "calibration set is empty")
    r = compile_(model, "--quantize", "int4", "--calibration", calib)
    assert r.exit_code == 2 and "'int4' is not 'int8'" in r.output
