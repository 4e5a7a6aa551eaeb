"""CUDA bundles: --standalone carries TVM's CUDA runtime module (and, for this machine's arch, libcudart)
with a runner that takes --device cuda; where the driver or libcudart is missing, a run fails in one line."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from onnx import helper

import ember
from ember.backends.runtime import SYSROOT, cuda_driver_present
from ember.errors import EmberError
from tests.conftest import make_model, random_feeds

pytestmark = pytest.mark.skipif(not (shutil.which("nvcc") and shutil.which("make")), reason="nvcc or make missing")
no_driver = pytest.mark.skipif(cuda_driver_present(), reason="this machine has a CUDA driver")
ARM_TOOLS = shutil.which("qemu-aarch64") and shutil.which("aarch64-linux-gnu-g++")


def conv_model():
    w = np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])]
    return make_model(nodes, [("x", [1, 3, 8, 8])], [("y", None)], {"w": w})


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    model = conv_model()
    out = ember.compile(model, "nvidia/nvidia-h100").save(tmp_path_factory.mktemp("cuda") / "b", standalone=True)
    return out, model


def test_standalone_cuda_bundle_carries_the_cuda_runtime(bundle):
    out, _ = bundle
    libs = {p.name for p in (out / "runtime" / "lib").iterdir()}
    assert {"libtvm_runtime.so", "libtvm_ffi.so", "libtvm_runtime_cuda.so"} <= libs
    assert any(name.startswith("libcudart.so") for name in libs)
    meta = ember.load(out).metadata
    assert meta["target"]["device"] == "cuda" and '"arch":"sm_90a"' in meta["target"]["tvm"]
    assert set(meta["runner"]["runtime"]["sha256"]) == {f"runtime/lib/{name}" for name in libs}
    assert "./runner --device cuda model.so out 10 input0.npy" in (out / "README.txt").read_text()
    assert "__global__" in (out / "kernels.cu").read_text()


@no_driver
def test_runner_without_a_cuda_driver_says_what_is_missing(bundle):
    out, model = bundle
    np.save(out / "input0.npy", next(iter(random_feeds(model).values())))
    r = subprocess.run(
        ["./runner", "--device", "cuda", "model.so", "o", "1", "input0.npy"], cwd=out, capture_output=True, text=True
    )
    assert r.returncode == 1 and r.stderr.strip() == (
        "runner: cannot load the TVM CUDA runtime: libcuda.so.1: cannot open shared object file: "
        "No such file or directory"
    )
    r = subprocess.run(
        ["./runner", "--device", "opencl", "model.so", "o", "1"], cwd=out, capture_output=True, text=True
    )
    assert r.returncode == 1 and "unknown --device opencl (cpu or cuda)" in r.stderr


@no_driver
def test_artifact_run_of_a_cuda_bundle_names_the_missing_driver(bundle):
    out, model = bundle
    with pytest.raises(EmberError, match=r"no CUDA driver \(libcuda.so\) on this machine") as e:
        ember.load(out).run(random_feeds(model))
    assert "./runner --device cuda" in str(e.value)
    with pytest.raises(EmberError, match="save the artifact before a cuda run"):
        ember.compile(model, "nvidia/nvidia-h100").run(random_feeds(model))


@pytest.mark.skipif(not ARM_TOOLS, reason="qemu-aarch64 or aarch64-linux-gnu-g++ missing (make tools)")
def test_standalone_jetson_bundle_carries_the_aarch64_cuda_runtime(tmp_path):
    """The aarch64 wheel's CUDA module goes in; libcudart is the board's (JetPack), and under qemu, with
    no CUDA, the aarch64 runner names it."""
    model = conv_model()
    out = ember.compile(model, "nvidia/jetson-orin-nano").save(tmp_path / "jetson", standalone=True)
    libs = {p.name for p in (out / "runtime" / "lib").iterdir()}
    assert libs == {"libtvm_runtime.so", "libtvm_ffi.so", "libtvm_runtime_cuda.so"}
    assert (out / "runtime" / "lib" / "libtvm_runtime_cuda.so").read_bytes()[18] == 0xB7  # e_machine: AArch64
    assert "libcudart.so.13: CUDA toolkit or JetPack" in (out / "README.txt").read_text()
    np.save(out / "input0.npy", random_feeds(model)["x"])
    cmd = ["qemu-aarch64", "-L", SYSROOT["aarch64"], "./runner", "--device", "cuda", "model.so", "o", "1", "input0.npy"]
    r = subprocess.run(cmd, cwd=out, capture_output=True, text=True)
    assert r.returncode == 1 and "cannot load the TVM CUDA runtime: libcudart.so.13" in r.stderr
