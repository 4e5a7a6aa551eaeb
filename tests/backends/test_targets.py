"""Targets: names resolve, cross builds produce the right binaries, GPU bundles hold their kernels."""

from __future__ import annotations

import shutil
import tarfile

import pytest

import ember
from ember import EmberError
from ember.backends.artifact import elf_arch
from ember.backends.tvm.targets import list_targets, resolve
from ember.models import random_light_model


@pytest.fixture(scope="module")
def squeezenet():
    return random_light_model("squeezenet", seed=0)


def test_named_targets_resolve():
    assert resolve("aarch64-linux-gnu").arch == "aarch64"
    assert resolve("raspberry-pi/4b-aarch64").arch == "aarch64"
    assert resolve("armv7a-linux-gnueabihf").arch == "armv7"
    jetson = resolve("nvidia/jetson-orin-nano")
    assert (jetson.device, jetson.arch) == ("cuda", "aarch64")
    assert resolve("mali").device == "opencl"
    names = [row[0] for row in list_targets()]
    assert {"host", "aarch64-linux-gnu", "mali", "vulkan", "nvidia/jetson-orin-nano"} <= set(names)


def test_unknown_target_suggests_close_names():
    with pytest.raises(EmberError, match="unknown target 'aarch64-linux'.*did you mean aarch64-linux-gnu"):
        resolve("aarch64-linux")


@pytest.mark.skipif(not shutil.which("aarch64-linux-gnu-g++"), reason="aarch64-linux-gnu-g++ is not installed")
def test_squeezenet_for_aarch64_is_an_aarch64_shared_object(squeezenet, tmp_path):
    artifact = ember.compile(squeezenet, "aarch64-linux-gnu")
    out = artifact.save(tmp_path / "bundle")
    lib = out / "model.so"
    assert elf_arch(lib) == "aarch64"
    assert lib.read_bytes()[16] == 3  # e_type ET_DYN: a shared object
    with pytest.raises(EmberError, match="cannot run on this"):
        ember.load(out).run({"data_0": None})


def test_armv7_without_cross_linker_gives_object_archive(squeezenet, tmp_path):
    artifact = ember.compile(squeezenet, "armv7a-linux-gnueabihf")
    out = artifact.save(tmp_path / "bundle")
    if artifact.metadata["target"]["linker"]:
        assert elf_arch(out / "model.so") == "armv7"
        return
    with tarfile.open(out / "model.tar") as tar:
        members = tar.getnames()
        assert members and all(m.endswith(".o") for m in members)
        obj = tar.extractfile(members[0]).read(20)
    assert obj[:4] == b"\x7fELF" and obj[18] == 0x28  # 32-bit ARM objects


def test_jetson_bundle_holds_cuda_kernels(squeezenet, tmp_path):
    artifact = ember.compile(squeezenet, "nvidia/jetson-orin-nano")
    out = artifact.save(tmp_path / "bundle")
    source = (out / "kernels.cu").read_text()
    assert "__global__" in source and "conv2d" in source
    lib = next(p for p in out.iterdir() if p.name.startswith("model."))
    assert b"__global__" in lib.read_bytes()  # the CUDA module travels inside the library
    assert artifact.metadata["target"]["device"] == "cuda"


def test_mali_bundle_holds_opencl_kernels(squeezenet, tmp_path):
    out = ember.compile(squeezenet, "mali").save(tmp_path / "bundle")
    assert "__kernel" in (out / "kernels.cl").read_text()


def test_vulkan_reports_missing_codegen(squeezenet):
    with pytest.raises(EmberError, match="vulkan code generator"):
        ember.compile(squeezenet, "vulkan")


@pytest.mark.skipif(not shutil.which("aarch64-linux-gnu-g++"), reason="aarch64-linux-gnu-g++ is not installed")
@pytest.mark.parametrize("fused_layer_norm", [True, False])
def test_computed_reshape_encoder_compiles_for_aarch64_and_host(fused_layer_norm, tmp_path):
    """A BERT layer whose Reshape shapes come from Shape/Gather/Concat chains: every computed shape folds,
    the attention and layer norms fuse, and both the aarch64 and the host builds come out (the host one
    checked against onnxruntime)."""
    from ember.models.blocks import bert_layer
    from tests.conftest import assert_close, ort_run, random_feeds

    model = bert_layer(hidden=64, heads=4, seq=16, fused_layer_norm=fused_layer_norm)
    arm = ember.compile(model, "aarch64-linux-gnu")
    counts = arm.graph.op_counts()
    assert not {"shape", "gather", "concat", "constant_of_shape"} & set(counts)
    assert counts["attention"] == 1 and counts["layer_norm"] == 2
    assert elf_arch(arm.save(tmp_path / "arm") / "model.so") == "aarch64"
    host = ember.compile(model, "host")
    feeds = random_feeds(model)
    assert_close(host.run(feeds), ort_run(model, feeds))
