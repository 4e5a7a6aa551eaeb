"""`ember opt -o OUT.ir` writes the IR and its weights file as a pair: a failure writing either leaves both
as they were."""

from __future__ import annotations

import errno
import shutil
import tempfile
from pathlib import Path

from click.testing import CliRunner

from ember.cli.main import cli

SMALL = Path(__file__).resolve().parents[1] / "corpus" / "bad" / "small.onnx"


def test_opt_leaves_the_ir_and_its_weights_matched_when_writing_the_ir_fails(tmp_path, monkeypatch):
    shutil.copy(SMALL, tmp_path)
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(cli, ["opt", "small.onnx", "-O0", "-o", "out.ir"]).exit_code == 0
    before = {p: p.read_bytes() for p in (tmp_path / "out.ir", tmp_path / "out.npz")}
    real = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        if kwargs.get("prefix", "").startswith(".out.ir."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    r = CliRunner().invoke(cli, ["opt", "small.onnx", "-O2", "-o", "out.ir"])  # other weights: dense's layout
    assert r.exit_code == 2 and r.stderr == "ember: error: cannot write 'out.ir': No space left on device\n"
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.ir", "out.npz", "small.onnx"]
