"""Issue 6's models, compiled for aarch64-linux-gnu and run under qemu-user through the command line
(`ember compile -t aarch64-linux-gnu`, then `ember run --emulate`), match onnxruntime at rtol 1e-4; the light
models are compared on their logits."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest

from ember.models import random_feeds, random_light_model
from ember.models.blocks import mobile_block, mobilenet_v2
from tests.cli.test_cli import ember
from tests.conftest import assert_close, ort_run

pytestmark = pytest.mark.skipif(
    not (shutil.which("qemu-aarch64") and shutil.which("aarch64-linux-gnu-g++") and shutil.which("make")),
    reason="qemu-aarch64, aarch64-linux-gnu-g++ or make missing (make tools installs them)",
)


def logits(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model without its final Softmax: with random weights ResNet-50's softmax is one-hot, and matching a
    one-hot output would not show that the emulated bundle computes what onnxruntime does."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    last = g.node[-1]
    assert last.op_type == "Softmax" and last.output[0] == g.output[0].name
    elem = g.output[0].type.tensor_type.elem_type
    del g.node[-1]
    del g.output[:]
    g.output.append(onnx.helper.make_tensor_value_info(last.input[0], elem, None))
    return out


MODELS = {
    "squeezenet": lambda: logits(random_light_model("squeezenet")),
    "resnet50": lambda: logits(random_light_model("resnet50")),
    "mobilenet_v2_96": lambda: mobilenet_v2(size=96),
}


def _compile_and_emulate(model: onnx.ModelProto, tmp_path) -> dict[str, np.ndarray]:
    onnx.save(model, tmp_path / "model.onnx")
    out = tmp_path / "bundle"
    r = ember("compile", str(tmp_path / "model.onnx"), "-t", "aarch64-linux-gnu", "-o", str(out))
    assert r.returncode == 0, r.stderr
    args = []
    for i, (name, arr) in enumerate(random_feeds(model).items()):  # ResNet-50's input is 'gpu_0/data_0'
        np.save(tmp_path / f"input{i}.npy", arr)
        args += ["--input", f"{name}={tmp_path / f'input{i}.npy'}"]
    r = ember("run", str(out), *args, "--emulate", "-o", str(tmp_path / "out.npz"))
    assert r.returncode == 0, r.stderr
    assert "emulated" in r.stdout
    with np.load(tmp_path / "out.npz") as got:
        return dict(got)


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_model_runs_emulated_through_the_cli(name, tmp_path):
    model = MODELS[name]()
    got = _compile_and_emulate(model, tmp_path)
    want = ort_run(model, random_feeds(model))
    assert_close(got, want)


def test_compile_verify_emulated_standalone(tmp_path):
    """--standalone and --verify together for aarch64: the check runs under qemu and reports its error."""
    onnx.save(mobile_block(), tmp_path / "m.onnx")
    out = tmp_path / "b"
    flags = ("-t", "aarch64-linux-gnu", "-o", str(out), "--standalone", "--verify")
    r = ember("compile", str(tmp_path / "m.onnx"), *flags)
    assert r.returncode == 0, r.stderr
    assert "standalone: runner and runtime/ for aarch64" in r.stdout
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("verified against onnxruntime"))
    assert "emulated under qemu-aarch64" in line and float(line.split("max abs error ")[1].split()[0]) < 1e-4
    assert (out / "runner").exists() and (out / "runtime" / "lib" / "libtvm_runtime.so").exists()
