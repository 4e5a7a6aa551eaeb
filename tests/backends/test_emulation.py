"""Cross-compiled aarch64 bundles run under qemu-user through the C++ runner and the registry's aarch64
TVM runtime, and match onnxruntime (rtol 1e-4)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import ember
from ember.models import random_light_model
from ember.models.blocks import kws_rnn, transformer_block
from tests.backends.test_expand_depthwise import block_model
from tests.cli.test_cli import ember as ember_cli
from tests.conftest import assert_close, ort_run, random_feeds

pytestmark = pytest.mark.skipif(
    not (shutil.which("qemu-aarch64") and shutil.which("aarch64-linux-gnu-g++")),
    reason="qemu-aarch64 or aarch64-linux-gnu-g++ is not installed (make tools installs both)",
)


@pytest.mark.parametrize(
    "build",
    [transformer_block, lambda: random_light_model("squeezenet"), kws_rnn, block_model],
    ids=["bert", "squeeze", "kws-lstm", "inverted-bottleneck"],
)
def test_aarch64_bundle_matches_onnxruntime_under_qemu(build, tmp_path):
    """The transformer computes its Reshape shapes with Shape/Gather/Concat; SqueezeNet runs in NHWC; the
    keyword spotter's lstm kernel and the vector forms of its sigmoid and tanh run on NEON; the inverted
    bottleneck's expand and depthwise convs run as one kernel in tiles of 4-lane vectors."""
    model = build()
    art = ember.compile(model, "aarch64-linux-gnu")
    art.save(tmp_path / "bundle")
    feeds = random_feeds(model)
    got = ember.load(tmp_path / "bundle").run(feeds, emulate=True)
    assert_close(got, ort_run(model, feeds))


def test_cli_run_emulate(tmp_path):
    import onnx

    path = tmp_path / "t.onnx"
    onnx.save(transformer_block(), path)
    r = ember_cli("compile", str(path), "-t", "aarch64-linux-gnu", "-o", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    np.save(tmp_path / "x.npy", random_feeds(transformer_block())["x"])
    r = ember_cli(
        "run", str(tmp_path / "b"), "--input", f"x={tmp_path / 'x.npy'}", "--emulate", "-o", str(tmp_path / "o.npz")
    )
    assert r.returncode == 0, r.stderr
    assert "emulated" in r.stdout
    with np.load(tmp_path / "o.npz") as out:
        assert_close(list(out.values()), ort_run(transformer_block(), {"x": np.load(tmp_path / "x.npy")}))
    r = ember_cli("run", str(tmp_path / "b"), "--input", f"x={tmp_path / 'x.npy'}")
    assert r.returncode == 2 and "--emulate" in r.stderr
