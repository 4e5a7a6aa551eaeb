"""Bundles: save/load round trip, atomic replacement, and refusing damaged bundles."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import ember
from ember import EmberError
from ember.models import random_light_model
from tests.conftest import assert_close, ort_run


@pytest.fixture(scope="module")
def built():
    model = random_light_model("squeezenet", seed=0)
    return model, ember.compile(model, "host")


def test_save_load_round_trip(built, tmp_path):
    model, artifact = built
    x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    out = artifact.save(tmp_path / "sq")
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["inputs"] == [{"name": "data_0", "shape": [1, 3, 224, 224], "dtype": "f32"}]
    assert meta["outputs"][0]["name"] == "softmaxout_1"
    assert meta["versions"]["tvm"].startswith("0.27") and meta["passes"]
    assert len(meta["model"]["sha256"]) == 64
    loaded = ember.load(out)
    assert loaded.input_names == ["data_0"] and loaded.output_names == ["softmaxout_1"]
    assert_close(loaded.run({"data_0": x}), ort_run(model, {"data_0": x}))
    np.testing.assert_array_equal(
        loaded.run({"data_0": x})["softmaxout_1"], artifact.run({"data_0": x})["softmaxout_1"]
    )


def test_save_replaces_existing_bundle_and_leaves_no_temporaries(built, tmp_path):
    _, artifact = built
    artifact.save(tmp_path / "b")
    (tmp_path / "b" / "stale.txt").write_text("old")
    artifact.save(tmp_path / "b")
    assert not (tmp_path / "b" / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_save_refuses_to_replace_a_non_bundle_directory(built, tmp_path):
    _, artifact = built
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("mine")
    with pytest.raises(EmberError, match="not an Ember bundle"):
        artifact.save(tmp_path / "docs")
    assert (tmp_path / "docs" / "notes.txt").read_text() == "mine"


def test_failed_save_keeps_the_existing_bundle(built, tmp_path, monkeypatch):
    _, artifact = built
    out = artifact.save(tmp_path / "b")
    before = (out / "metadata.json").read_text()

    def boom(self, tmp):
        (tmp / "model.so").write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(type(artifact), "_write", boom)
    with pytest.raises(EmberError, match="cannot write the bundle.*disk full"):
        artifact.save(out)
    assert (out / "metadata.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


@pytest.mark.parametrize("damage", ["delete", "garbage", "drop-inputs", "tamper-library"])
def test_damaged_bundles_are_refused(built, tmp_path, damage):
    _, artifact = built
    out = artifact.save(tmp_path / "b")
    meta_path = out / "metadata.json"
    meta = json.loads(meta_path.read_text())
    if damage == "delete":
        meta_path.unlink()
    elif damage == "garbage":
        meta_path.write_text("{not json")
    elif damage == "drop-inputs":
        del meta["inputs"]
        meta_path.write_text(json.dumps(meta))
    else:
        with open(out / "model.so", "ab") as f:
            f.write(b"\0")
    with pytest.raises(EmberError, match="metadata.json|sha256"):
        ember.load(out)


def test_run_checks_inputs(built):
    _, artifact = built
    with pytest.raises(EmberError, match="missing input 'data_0'"):
        artifact.run({})
    with pytest.raises(EmberError, match="must have shape"):
        artifact.run({"data_0": np.zeros((1, 3, 10, 10), np.float32)})
    with pytest.raises(EmberError, match="must be f32"):
        artifact.run({"data_0": np.zeros((1, 3, 224, 224), np.float64)})


def test_run_takes_any_array_layout_and_returns_owned_copies(built):
    """Artifact.run hands inputs to TVM through DLPack (shared when 64-byte aligned, else copied); a
    misaligned, read-only or strided input gives the same output, and outputs are the caller's own."""
    model, artifact = built
    base = np.random.default_rng(1).random(1 * 3 * 224 * 224 + 1, dtype=np.float32)
    misaligned = base[1:].reshape(1, 3, 224, 224)
    assert misaligned.__array_interface__["data"][0] % 64
    want = artifact.run({"data_0": np.array(misaligned)})["softmaxout_1"]
    read_only = np.array(misaligned)
    read_only.flags.writeable = False
    strided = np.asfortranarray(misaligned)
    for x in (misaligned, read_only, strided):
        got = artifact.run({"data_0": x})["softmaxout_1"]
        np.testing.assert_array_equal(got, want)
    assert_close({"y": want}, ort_run(model, {"data_0": np.array(misaligned)}))
    assert got.flags.owndata and got.flags.writeable  # not a view of TVM memory the VM may hand out again
    got[...] = 0
    np.testing.assert_array_equal(artifact.run({"data_0": misaligned})["softmaxout_1"], want)


def test_a_bundle_that_ran_saves_and_loads_without_tvm_scope_notes(built, tmp_path, capfd):
    """TVM 0.27 writes an empty "Scope Saving:" / "Scope Loaded:" warning per constant when it saves or loads an
    executable whose VM has run (SqueezeNet: 26 lines each way); Ember drops those lines and passes others on."""
    _, artifact = built
    x = {"data_0": np.random.default_rng(1).random((1, 3, 224, 224), dtype=np.float32)}
    artifact.run(x)
    ember.load(artifact.save(tmp_path / "sq")).run(x)
    assert "Scope" not in capfd.readouterr().err
    from ember.backends.tvm.quiet import scope_notes_dropped

    with scope_notes_dropped():
        os.write(2, b"[20:48:17] /project/src/runtime/vm/executable.cc:276: Warning: Scope Saving:\n")
        os.write(2, b"[20:48:17] /project/src/runtime/vm/executable.cc:99: Warning: something else\n")
    err = capfd.readouterr().err
    assert "Scope Saving" not in err and "something else" in err
