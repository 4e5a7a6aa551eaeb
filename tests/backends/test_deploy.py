"""Bundles carry a C++ runner that builds from their own Makefile; --standalone bundles carry the target's TVM
runtime and run on a copy of the folder alone; verification against onnxruntime catches a wrong bundle."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import onnx
import pytest

import ember
from ember.backends.runtime import SYSROOT, cache_dir, fetch, runtime_versions
from ember.backends.threads import THREAD_VARIABLES, physical_cores
from ember.backends.verify import verify
from ember.doctor import diagnose
from ember.errors import EmberError
from ember.models.blocks import mobile_block
from tests.conftest import assert_close, ort_run, random_feeds

ARM_TOOLS = shutil.which("qemu-aarch64") and shutil.which("aarch64-linux-gnu-g++") and shutil.which("make")
needs_arm = pytest.mark.skipif(not ARM_TOOLS, reason="qemu-aarch64, aarch64-linux-gnu-g++ or make missing (make tools)")


@pytest.fixture(scope="module")
def model():
    return mobile_block()


def _run_runner(folder, feeds, prefix=(), threads: int | None = None) -> list[np.ndarray]:
    """Run `folder`'s runner on `feeds` from inside the folder, as a user on the board would, with TVM_NUM_THREADS
    set to `threads`, or with no thread count set (then the runner prints physical_cores())."""
    names = []
    for i, arr in enumerate(feeds.values()):
        np.save(folder / f"input{i}.npy", arr)
        names.append(f"input{i}.npy")
    cmd = [*prefix, "./runner", "model.so", "out", "2", *names]
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    if threads is not None:
        env["TVM_NUM_THREADS"] = str(threads)
    r = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("runs 2 median_ms ")
    assert r.stdout.split()[-2:] == ["threads", str(threads or physical_cores())]
    return [np.load(p) for p in sorted((folder / "out").glob("output*.npy"))]


def test_every_cpu_bundle_builds_its_runner_from_its_own_makefile(model, tmp_path):
    """The host bundle's Makefile builds against a runtime outside the bundle (TVM_RUNTIME_DIR), and the
    runner's outputs match onnxruntime; metadata lists the runner files and load still checks model.so."""
    out = ember.compile(model, "host").save(tmp_path / "b")
    assert {"runner.cc", "Makefile", "README.txt"} <= {p.name for p in out.iterdir()}
    assert not (out / "runtime").exists()
    meta = ember.load(out).metadata
    assert meta["runner"] == {"files": ["runner.cc", "Makefile", "README.txt"], "standalone": False}
    from ember.backends.runtime import runtime_dir

    rt = runtime_dir(meta["target"]["arch"])
    r = subprocess.run(["make", "-C", str(out), f"TVM_RUNTIME_DIR={rt}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    feeds = random_feeds(model)
    assert_close(_run_runner(out, feeds), ort_run(model, feeds))
    readme = (out / "README.txt").read_text()
    assert "./runner model.so out 10 input0.npy" in readme and "x: f32 [1, 3, 16, 16]" in readme


@needs_arm
def test_aarch64_runner_cross_builds_from_the_bundle_makefile(model, tmp_path):
    out = ember.compile(model, "aarch64-linux-gnu").save(tmp_path / "b")
    rt = fetch("aarch64")
    r = subprocess.run(
        ["make", "-C", str(out), "CXX=aarch64-linux-gnu-g++", f"TVM_RUNTIME_DIR={rt}"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    from ember.backends.artifact import elf_arch

    assert elf_arch(out / "runner") == "aarch64"


@needs_arm
def test_standalone_aarch64_bundle_runs_from_a_copy_under_qemu(model, tmp_path):
    """Only the copied folder: its runner, model.so and runtime/lib (qemu supplies the C library)."""
    out = ember.compile(model, "aarch64-linux-gnu").save(tmp_path / "b", standalone=True)
    meta = ember.load(out).metadata["runner"]
    assert meta["standalone"] and set(meta["runtime"]["sha256"]) == {
        "runtime/lib/libtvm_runtime.so",
        "runtime/lib/libtvm_ffi.so",
    }
    board = shutil.copytree(out, tmp_path / "board", symlinks=False)
    shutil.rmtree(out)
    feeds = random_feeds(model)
    got = _run_runner(board, feeds, prefix=("qemu-aarch64", "-L", SYSROOT["aarch64"]), threads=1)
    assert_close(got, ort_run(model, feeds))


def test_standalone_is_for_cpu_and_cuda_bundles(model, tmp_path):
    art = ember.load(ember.compile(model, "host").save(tmp_path / "b"))
    art.metadata["target"]["device"] = "opencl"
    with pytest.raises(EmberError, match="standalone bundles are for CPU and CUDA targets"):
        art.save(tmp_path / "c", standalone=True)
    assert not (tmp_path / "c").exists()


def test_verify_names_the_output_that_differs(model, tmp_path):
    """A bundle checked against a model with other weights fails on the output those weights change."""
    art = ember.compile(model, "host")
    art.save(tmp_path / "b")
    onnx.save(model, tmp_path / "same.onnx")
    result = verify(art, tmp_path / "same.onnx")
    assert result.how == "host" and set(result.max_abs_error) == {"y", "pooled"}
    assert max(result.max_abs_error.values()) < 1e-4
    onnx.save(mobile_block(rng=7), tmp_path / "other.onnx")
    with pytest.raises(EmberError, match=r"output '(y|pooled)' differs from onnxruntime by up to"):
        verify(art, tmp_path / "other.onnx")
    with pytest.raises(EmberError, match="needs an .onnx model"):
        verify(art, tmp_path / "same.ir")
    art.metadata["target"]["device"] = "cuda"
    with pytest.raises(EmberError, match="cannot run a cuda bundle here"):
        verify(art, tmp_path / "same.onnx")


def test_armv7_has_no_prebuilt_runtime_and_says_how_to_build_one(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBER_CACHE", str(tmp_path))
    with pytest.raises(EmberError, match="no prebuilt TVM runtime for armv7") as e:
        fetch("armv7")
    assert "-DCMAKE_CXX_COMPILER=arm-linux-gnueabihf-g++" in str(e.value) and str(cache_dir("armv7")) in str(e.value)
    (cache_dir("armv7") / "lib").mkdir(parents=True)
    for lib in ("libtvm_runtime.so", "libtvm_ffi.so"):
        (cache_dir("armv7") / "lib" / lib).write_bytes(b"")
    (cache_dir("armv7") / "include" / "tvm" / "ffi").mkdir(parents=True)
    assert fetch("armv7") == cache_dir("armv7")  # one built by hand, as the error says, is used


def test_doctor_gives_the_command_for_each_missing_piece(monkeypatch, tmp_path):
    monkeypatch.setenv("EMBER_CACHE", str(tmp_path))
    monkeypatch.setattr(shutil, "which", lambda exe, *a, **k: None if "qemu" in exe or "aarch64" in exe else "/bin/x")
    report = diagnose()
    rows = {c.component: c for checks in report.values() for c in checks}
    assert rows["aarch64 emulator"].fix == "apt-get install qemu-user"
    assert rows["aarch64 cross compiler"].fix == "apt-get install g++-aarch64-linux-gnu"
    assert rows["aarch64 TVM runtime"].fix == "ember runtime fetch --arch aarch64"
    assert rows["TVM"].ok and rows["onnxruntime"].ok
    assert rows["aarch64 TVM cuda runtime module (cuda bundles)"].fix == "ember runtime fetch --arch aarch64"
    assert all(c.ok or c.fix for c in rows.values())
    json.dumps({k: [c.to_json() for c in v] for k, v in report.items()})


def test_doctor_names_a_cached_runtime_without_the_cuda_module(monkeypatch, tmp_path):
    monkeypatch.setenv("EMBER_CACHE", str(tmp_path))
    rt = cache_dir("aarch64")  # cached before Ember kept the GPU runtime modules: complete for the CPU only
    (rt / "include" / "tvm" / "ffi").mkdir(parents=True)
    (rt / "lib").mkdir()
    for lib in ("libtvm_runtime.so", "libtvm_ffi.so"):
        (rt / "lib" / lib).write_bytes(b"")
    (rt / "manifest.json").write_text(json.dumps({"versions": runtime_versions()}))
    rows = {c.component: c for checks in diagnose().values() for c in checks}
    module = rows["aarch64 TVM cuda runtime module (cuda bundles)"]
    assert not module.ok and module.fix == "ember runtime fetch --arch aarch64 --refresh"
    assert "libtvm_runtime_cuda.so" in module.detail
    (rt / "lib" / "libtvm_runtime_cuda.so").write_bytes(b"")
    rows = {c.component: c for checks in diagnose().values() for c in checks}
    assert rows["aarch64 TVM cuda runtime module (cuda bundles)"].ok
