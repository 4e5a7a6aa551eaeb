"""Output files are replaced whole or not at all: a writer failing midway leaves the earlier files intact."""

from __future__ import annotations

import errno

import numpy as np
import pytest

from ember.atomic import write_atomic
from ember.errors import EmberError


def _earlier(tmp_path):
    ir, npz = tmp_path / "out.ir", tmp_path / "out.npz"
    ir.write_text("earlier ir\n")
    np.savez(npz, w=np.zeros(3))
    return {p: p.read_bytes() for p in (ir, npz)}


def _disk_full(f):
    f.write(b"half of the text")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failing_second_file_leaves_both_files_as_they_were(tmp_path):
    before = _earlier(tmp_path)
    with pytest.raises(EmberError, match=r"cannot write '.*out\.ir': No space left on device"):
        write_atomic({tmp_path / "out.npz": lambda f: np.savez(f, w=np.ones(3)), tmp_path / "out.ir": _disk_full})
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.ir", "out.npz"]


def test_an_interrupted_write_leaves_no_temporary_file(tmp_path):
    before = _earlier(tmp_path)

    def interrupted(f):
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic({tmp_path / "out.ir": interrupted})
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.ir", "out.npz"]


def test_files_are_replaced_together(tmp_path):
    _earlier(tmp_path)
    write_atomic(
        {tmp_path / "out.npz": lambda f: np.savez(f, w=np.ones(3)), tmp_path / "out.ir": lambda f: f.write(b"new\n")}
    )
    assert (tmp_path / "out.ir").read_text() == "new\n"
    assert np.load(tmp_path / "out.npz")["w"].tolist() == [1.0, 1.0, 1.0]
