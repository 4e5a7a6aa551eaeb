"""`ember compile --sparsity ...`: the report, the bundle, and bad input as one error line, exit 2, nothing written."""

from __future__ import annotations

import json

import onnx
import pytest
from click.testing import CliRunner

from benchmarks.sparse import ffn
from ember.cli.main import cli
from tests.cli.test_cli import ember


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "ffn.onnx"
    onnx.save(ffn(1, d=64, h=256), str(path))
    return path


def test_compile_prints_the_report_and_stores_it(model_file, tmp_path):
    out = tmp_path / "b"
    r = ember("compile", str(model_file), "--sparsity", "0.9", "--sparsity-pattern", "block:4x4", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "bsr   4x4" in r.stdout and "weights: 131072 B dense ->" in r.stdout
    rows = json.loads((out / "sparsity_report.json").read_text())
    assert [row["format"] for row in rows] == ["bsr", "bsr"] and all(row["block"] == "4x4" for row in rows)
    assert json.loads((out / "metadata.json").read_text())["sparsity"]["layers_bsr"] == 2


def test_skip_and_no_sparse_lowering(model_file, tmp_path):
    r = ember(
        "compile",
        str(model_file),
        "--sparsity",
        "0.9",
        "--sparsity-skip",
        "h2",
        "--no-sparse-lowering",
        "-o",
        str(tmp_path / "b"),
    )
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "b" / "sparsity_report.json").read_text())
    assert all(row["format"] == "dense" for row in rows)
    assert rows[0]["note"] == "skipped; sparse lowering off" and rows[1]["density"] < 0.11


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--sparsity", "1.5"], "sparsity 1.5 is outside (0, 1)"),
        (["--sparsity", "0.5", "--sparsity-pattern", "zigzag"], "unknown sparsity pattern 'zigzag'"),
        (["--sparsity-pattern", "3:5"], "M=5 to divide the reduction axis K=64"),
    ],
    ids=["range", "pattern", "n-of-m"],
)
def test_bad_input_exits_2_and_writes_nothing(model_file, tmp_path, args, needle):
    out = tmp_path / "b"
    r = CliRunner().invoke(cli, ["compile", str(model_file), *args, "-o", str(out)], catch_exceptions=False)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("ember: error: ") and needle in lines[0], (
        r.output
    )
    assert not out.exists()
