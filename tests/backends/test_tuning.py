"""`ember tune` and `ember compile --tuning-db`: records apply to the kernels Ember's pipeline builds, and a
database that is unusable or tuned for another target falls back to the default schedules."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import onnx
import pytest
import tvm_ffi
from click.testing import CliRunner
from onnx import helper

import ember
from ember.cli.main import cli

pytest.importorskip("xgboost")


def small_conv() -> onnx.ModelProto:
    """A 3x3 conv + ReLU on a 1x8x12x12 input: one fused kernel worth tuning, plus layout transposes."""
    rng = np.random.default_rng(0)
    w = onnx.numpy_helper.from_array((rng.standard_normal((8, 8, 3, 3)) * 0.2).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "small_conv",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 8, 12, 12])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def tuned_db(tmp_path_factory):
    """A database from 2 replay-trace trials (cheap: no evolutionary search on a shared 2-core machine)."""
    from ember.backends.tvm.tuned import tune_model

    root = tmp_path_factory.mktemp("tune")
    model = root / "conv.onnx"
    onnx.save(small_conv(), model)
    reports = []
    progress = lambda name, done, total, best_ms: reports.append((name, done, total, best_ms))  # noqa: E731
    found = tune_model(str(model), "host", 2, root / "db", strategy="replay-trace", progress=progress)
    assert sum(t.trials for t in found.values()) == 2
    name, done, total, best_ms = reports[-1]  # what the progress bar shows last: all trials, a best latency
    assert (done, total) == (found[name].trials, found[name].trials) and best_ms is not None and best_ms > 0
    assert all(t.baseline_s > 0 and t.best_s > 0 for t in found.values())  # Ember's rules measured too
    return model, root / "db"


def with_baselines(db, tmp_path, seconds: float):
    """A copy of `db` whose baselines file says Ember's rules take `seconds` on every tuned kernel."""
    from ember.backends.tvm.tuning import BASELINES_FILE

    copy = tmp_path / f"db-{seconds}"
    shutil.copytree(db, copy)
    stored = json.loads((db / BASELINES_FILE).read_text())
    assert stored and all(stored.values())
    for per_target in stored.values():
        per_target.update(dict.fromkeys(per_target, seconds))
    (copy / BASELINES_FILE).write_text(json.dumps(stored))
    return copy


def test_compile_with_tuning_db_matches_onnxruntime_and_counts_kernels(tuned_db, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model, db = tuned_db
    out = tmp_path / "bundle"
    result = CliRunner().invoke(cli, ["compile", str(model), "--tuning-db", str(db), "-o", str(out)])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["tuning"]["kernels_from_db"] + meta["tuning"]["kernels_kept_on_rules"] >= 1
    x = np.random.default_rng(1).standard_normal((1, 8, 12, 12)).astype(np.float32)
    got = ember.load(out).run({"x": x})["y"]
    want = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_corrupt_or_missing_db_warns_and_uses_default_schedules(tuned_db, tmp_path, caplog):
    model, db = tuned_db
    broken = tmp_path / "broken"
    shutil.copytree(db, broken)
    (broken / "database_tuning_record.json").write_text("{not json\n")
    for bad in (broken, tmp_path / "absent"):
        artifact = ember.compile(str(model), tuning_db=bad)
        assert artifact.metadata["tuning"]["kernels_from_db"] == 0
    assert sum("unusable" in r.getMessage() for r in caplog.records) == 2


def test_db_for_another_target_is_not_applied(tuned_db, caplog):
    model, db = tuned_db
    artifact = ember.compile(str(model), "aarch64-linux-gnu", tuning_db=db)
    assert artifact.metadata["tuning"]["kernels_from_db"] == 0
    assert any("none for llvm" in r.getMessage() for r in caplog.records)


def test_records_slower_than_ember_rules_are_not_applied(tuned_db, tmp_path):
    model, db = tuned_db
    artifact = ember.compile(str(model), tuning_db=with_baselines(db, tmp_path, 1e-9))
    assert artifact.metadata["tuning"]["kernels_from_db"] == 0
    assert artifact.metadata["tuning"]["kernels_kept_on_rules"] >= 1


def test_records_faster_than_ember_rules_are_applied(tuned_db, tmp_path):
    model, db = tuned_db
    artifact = ember.compile(str(model), tuning_db=with_baselines(db, tmp_path, 1e3))
    assert artifact.metadata["tuning"]["kernels_from_db"] >= 1
    assert artifact.metadata["tuning"]["kernels_kept_on_rules"] == 0


def test_db_tuned_under_other_schedule_rules_warns_and_uses_default_schedules(tuned_db, tmp_path, caplog):
    """Records that beat Ember's rules as they were (a variant's trace replays without what the rules add since)
    are not applied once the rules change, nor from a database tuned before its rules were stamped."""
    from ember.backends.tvm.tuning import RULES_FILE

    model, db = tuned_db
    older = with_baselines(db, tmp_path, 1e3)
    assert ember.compile(str(model), tuning_db=older).metadata["tuning"]["kernels_from_db"] >= 1
    (older / RULES_FILE).write_text(json.dumps({"rules": "0123456789abcdef"}))
    assert ember.compile(str(model), tuning_db=older).metadata["tuning"]["kernels_from_db"] == 0
    (older / RULES_FILE).unlink()
    assert ember.compile(str(model), tuning_db=older).metadata["tuning"]["kernels_from_db"] == 0
    assert sum("another version of Ember's schedule rules" in r.getMessage() for r in caplog.records) == 2


def test_tuning_again_retires_a_database_tuned_under_other_rules(tuned_db, tmp_path):
    """Tuning into a database stamped with other rules moves all of it aside (every model's stale records, which
    a fresh stamp would otherwise vouch for); one stamped with today's rules, or a new folder, stays as it is."""
    from ember.backends.tvm.tuning import BASELINES_FILE, DB_FILES, RULES_FILE, retire_stale_database

    _, db = tuned_db
    assert retire_stale_database(db) is None and retire_stale_database(tmp_path / "new") is None
    older = with_baselines(db, tmp_path, 1e3)
    (older / RULES_FILE).write_text(json.dumps({"rules": "0123456789abcdef"}))
    stale = retire_stale_database(older)
    assert stale == older / "stale-0123456789abcdef"
    assert sorted(p.name for p in stale.iterdir()) == sorted([*DB_FILES, BASELINES_FILE, RULES_FILE])
    assert not any((older / name).exists() for name in (*DB_FILES, BASELINES_FILE, RULES_FILE))
    shutil.copytree(stale, tmp_path / "again")
    (tmp_path / "again" / RULES_FILE).unlink()
    assert retire_stale_database(tmp_path / "again") == tmp_path / "again" / "stale-unstamped"


def test_tune_prints_ember_baseline_and_best_tuned_per_kernel(tmp_path):
    model = tmp_path / "conv.onnx"
    onnx.save(small_conv(), model)
    result = CliRunner().invoke(cli, ["tune", str(model), "--trials", "1", "--db", str(tmp_path / "db")])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if " ember " in line and " tuned " in line]
    use = rows[0].rstrip().rsplit(" -> ", 1)[-1] if rows else ""
    assert len(rows) == 1 and " ms " in rows[0] and use.startswith(("metaschedule", "ember rules", "rule variant "))


def test_rule_variants_are_distinct_schedules_that_replay_from_their_traces():
    """`ember tune` first varies Ember's own rules per kernel (register-tile budget, reduction chunk, cache
    blocking); a variant is stored as its schedule trace, so each must replay to the kernel it measured."""
    from tvm import s_tir

    from ember.backends.tvm import tuning, variants
    from ember.backends.tvm.lower import lower_to_relax
    from ember.backends.tvm.schedules.common import Knobs
    from ember.backends.tvm.targets import resolve

    spec = resolve("host")
    artifact = ember.compile(small_conv(), "host")
    tasks = [t for t in tuning.extract_tasks(lower_to_relax(artifact.graph, "cpu"), spec) if "conv2d" in t.name]
    found = variants.candidates(tasks[0].workload, spec.target)
    assert len(found) >= 2 and found[0].knobs == Knobs()
    for c in found[1:]:
        replayed = s_tir.Schedule(tasks[0].workload)
        c.schedule.trace.apply_to_schedule(replayed, remove_postproc=False)
        assert not any(tvm_ffi.structural_equal(c.schedule.mod, o.schedule.mod) for o in found if o is not c)
        assert tvm_ffi.structural_equal(replayed.mod, c.schedule.mod)


def test_a_faster_rule_variant_is_recorded_and_compiles_from_the_database(tmp_path, monkeypatch):
    """A variant measured faster than the default by the margin becomes a tuning record that `--tuning-db`
    replays (timings made up here: which variant wins on a shared machine is noise for a kernel this small)."""
    ort = pytest.importorskip("onnxruntime")
    from ember.backends.tvm import tuned, variants

    def measure(found, *_):
        for i, c in enumerate(found):
            c.seconds = [1.0 if i == 0 else 0.5 + 0.01 * i]

    monkeypatch.setattr(variants, "measure", measure)
    model = tmp_path / "conv.onnx"
    onnx.save(small_conv(), model)
    found = tuned.tune_model(str(model), "host", 0, tmp_path / "db")
    chosen = [t for t in found.values() if t.variant is not None]
    assert chosen and all(t.best_s == 0.51 and t.baseline_s == 1.0 and t.db_wins for t in chosen)
    artifact = ember.compile(str(model), tuning_db=tmp_path / "db")
    assert artifact.metadata["tuning"]["kernels_from_db"] == len(chosen)
    x = np.random.default_rng(2).standard_normal((1, 8, 12, 12)).astype(np.float32)
    want = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(artifact.run({"x": x})["y"], want, rtol=1e-4, atol=1e-4)


def test_metaschedule_records_are_reported_for_a_kernel_with_constant_weights(tmp_path, monkeypatch):
    """MetaSchedule keys a kernel without its layout-free weights' marks (tuning.search_workload), and the tuned
    time `ember tune` reported was looked up by the rules' key only: a kernel with constant weights and no
    faster rule variant showed no tuned time though MetaSchedule had measured it (the variants' timings are
    made up here, the default fastest)."""
    from ember.backends.tvm import tuned, tuning, variants

    def measure(found, *_):
        for i, c in enumerate(found):
            c.seconds = [1.0 + i]

    monkeypatch.setattr(variants, "measure", measure)
    model = tmp_path / "conv.onnx"
    onnx.save(small_conv(), model)
    (task,) = tuned.tune_model(str(model), "host", 2, tmp_path / "db", strategy="replay-trace").values()
    records = tuning.open_json_database(tmp_path / "db", create=False).get_all_tuning_records()
    measured = [sum(float(s) for s in r.run_secs) / len(r.run_secs) for r in records if r.run_secs]
    assert task.variant is None and task.baseline_s == 1.0 and task.best_s == min(measured)


def test_candidates_are_measured_on_every_physical_core(tmp_path, monkeypatch):
    """The runner's worker processes inherit the thread count in force when candidates are measured: with none
    set they ran TVM's x86 default, half the logical CPUs, so a 2-core machine judged 2-thread schedules on 1."""
    from ember.backends.threads import THREAD_VARIABLES, physical_cores
    from ember.backends.tvm import tuned, variants

    seen = []

    def measure(found, *_):
        seen.append(os.environ.get("TVM_NUM_THREADS"))
        for i, c in enumerate(found):
            c.seconds = [1.0 + i]

    monkeypatch.setattr(variants, "measure", measure)
    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    model = tmp_path / "conv.onnx"
    onnx.save(small_conv(), model)
    tuned.tune_model(str(model), "host", 0, tmp_path / "db")
    assert seen and set(seen) == {str(physical_cores())}
