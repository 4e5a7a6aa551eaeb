"""CUDA bundles: --standalone carries TVM's CUDA runtime module and libcudart with a runner that takes
--device cuda; on a machine without the CUDA driver, running one fails with a one-line reason."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

import ember
from ember.backends.runtime import cuda_driver_present
from ember.errors import EmberError
from ember.models.blocks import mobile_block
from tests.conftest import random_feeds

pytestmark = pytest.mark.skipif(not (shutil.which("nvcc") and shutil.which("make")), reason="nvcc or make missing")
no_driver = pytest.mark.skipif(cuda_driver_present(), reason="this machine has a CUDA driver")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    model = mobile_block()
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
    assert (out / "kernels.cu").read_text().count("__global__") >= 3


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
