"""The NHWC layout: chosen per target, applied at -O2, transposes cancelled, results unchanged."""

from __future__ import annotations

import pytest

import ember
from ember.backends.tvm.targets import resolve
from ember.driver import layout_passes
from ember.models import random_light_model
from ember.models.blocks import mobile_block
from tests.conftest import assert_close, ort_run, random_feeds


def test_arm_targets_pick_nhwc():
    assert resolve("aarch64-linux-gnu").layout == "NHWC"
    assert resolve("armv7a-linux-gnueabihf").layout == "NHWC"
    assert resolve("x86_64-linux-gnu").layout == "NCHW"
    assert resolve("cuda").layout == "NCHW"


def test_layout_only_joins_opt_levels_unless_asked():
    assert layout_passes("NHWC", 2, None) == ["convert-to-nhwc", "canonicalize"]
    assert layout_passes("NHWC", "-O2", None) == ["convert-to-nhwc", "canonicalize"]
    assert layout_passes("NHWC", "canonicalize", None) == []
    assert layout_passes("NHWC", 1, None) == []
    assert layout_passes("NHWC", "canonicalize", "NHWC") == ["convert-to-nhwc", "canonicalize"]
    assert layout_passes("NCHW", 2, "NCHW") == []
    with pytest.raises(ember.EmberError, match="unknown layout"):
        layout_passes("NCWH", 2, "NCWH")


@pytest.mark.parametrize("name", ["squeezenet", "resnet50"])
def test_nhwc_leaves_one_transpose_and_matches_onnxruntime(name):
    model = random_light_model(name)
    art = ember.compile(model, "host", layout="NHWC")
    assert art.metadata["layout"] == "NHWC"
    counts = art.graph.op_counts()
    assert counts.get("transpose", 0) == 1  # the model input's; every other one cancelled
    assert all(n.attrs["layout"] == "NHWC" for n in art.graph.nodes if "layout" in n.attrs)
    feeds = random_feeds(model)
    assert_close(art.run(feeds), ort_run(model, feeds))


def test_nhwc_mobile_block_matches_onnxruntime():
    model = mobile_block()
    art = ember.compile(model, "host", layout="NHWC")
    feeds = random_feeds(model)
    assert_close(art.run(feeds), ort_run(model, feeds))


def test_aarch64_compiles_nhwc_by_default(tmp_path):
    art = ember.compile(random_light_model("squeezenet"), "aarch64-linux-gnu")
    assert art.metadata["layout"] == "NHWC" and "convert-to-nhwc" in art.metadata["passes"]
    assert ember.compile(random_light_model("squeezenet"), "host").metadata["layout"] == "NCHW"
