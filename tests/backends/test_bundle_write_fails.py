"""A bundle whose writing fails midway (disk full) is one EmberError line; the earlier bundle at -o stays as it
was and no temporary folder is left."""

from __future__ import annotations

import errno
import shutil

import pytest

from ember.backends.artifact import Artifact
from ember.errors import EmberError


def test_a_disk_full_save_keeps_the_earlier_bundle(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.so").write_bytes(b"\x7fELF new library")
    metadata = {"library": "model.so", "target": {"name": "cuda", "device": "cuda", "arch": "x86_64"}}
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "metadata.json").write_text('{"format": 1}\n')
    (out / "model.so").write_bytes(b"\x7fELF earlier library")
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copy2", disk_full)
    with pytest.raises(EmberError, match=r"cannot write the bundle '.*bundle': No space left on device"):
        Artifact(metadata, path=src).save(out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "src"]
