"""The NHWC layout: chosen per target, applied at -O2, transposes cancelled, results unchanged."""

from __future__ import annotations

import pytest

import ember
from ember.backends.tvm.targets import resolve
from ember.driver import layout_passes
from ember.models import random_light_model
from ember.models.blocks import mobile_block, tc_resnet8
from tests.conftest import assert_close, ort_run, random_feeds


def test_cpu_targets_pick_nhwc_gpus_nchw():
    assert resolve("aarch64-linux-gnu").layout == "NHWC"
    assert resolve("armv7a-linux-gnueabihf").layout == "NHWC"
    assert resolve("x86_64-linux-gnu").layout == "NHWC"
    assert resolve("cuda").layout == "NCHW"
    assert resolve("mali").layout == "NCHW"


def test_layout_only_joins_opt_levels_unless_asked():
    assert layout_passes("NHWC", 2, None) == ["convert-to-nhwc", "canonicalize"]
    assert layout_passes("NHWC", "-O2", None) == ["convert-to-nhwc", "canonicalize"]
    assert layout_passes("NHWC", "canonicalize", None) == []
    assert layout_passes("NHWC", 1, None) == []
    assert layout_passes("NHWC", "canonicalize", "NHWC") == ["convert-to-nhwc", "canonicalize"]
    assert layout_passes("NCHW", 2, "NCHW") == []
    with pytest.raises(ember.EmberError, match="unknown layout"):
        layout_passes("NCWH", 2, "NCWH")


@pytest.mark.parametrize("name", ["squeezenet"])
def test_nhwc_leaves_one_transpose_and_matches_onnxruntime(name):
    model = random_light_model(name)
    art = ember.compile(model, "host", layout="NHWC")
    assert art.metadata["layout"] == "NHWC"
    counts = art.graph.op_counts()
    assert counts.get("transpose", 0) == 1  # the model input's; every other one cancelled
    assert all(n.attrs["layout"] == "NHWC" for n in art.graph.nodes if "layout" in n.attrs)
    feeds = random_feeds(model)
    assert_close(art.run(feeds), ort_run(model, feeds))


def test_1d_convs_fold_their_batch_norms_and_stay_nhwc_between_layers():
    """TC-ResNet8's 1-D convs run as 2-D ones over a unit height: the squeeze after each sinks below its batch
    norm, ReLU and residual add to meet the next layer's unsqueeze, so every batch norm folds into its conv, each
    ReLU and residual add joins it, and transposes are left at the input and before the pooling only."""
    model = tc_resnet8()
    art = ember.compile(model, "host")
    counts = art.graph.op_counts()
    assert counts["fused_conv2d"] == 10 and "batch_norm" not in counts and "relu" not in counts
    assert counts["transpose"] == 2 and counts["squeeze"] == counts["unsqueeze"] == 1
    feeds = random_feeds(model)
    assert_close(art.run(feeds), ort_run(model, feeds))


def test_nhwc_mobile_block_matches_onnxruntime():
    model = mobile_block()
    art = ember.compile(model, "host", layout="NHWC")
    feeds = random_feeds(model)
    assert_close(art.run(feeds), ort_run(model, feeds))


def test_cpu_targets_compile_nhwc_by_default_and_nchw_on_request():
    art = ember.compile(random_light_model("squeezenet"), "aarch64-linux-gnu")
    assert art.metadata["layout"] == "NHWC" and "convert-to-nhwc" in art.metadata["passes"]
    assert ember.compile(random_light_model("squeezenet"), "host").metadata["layout"] == "NHWC"
    nchw = ember.compile(random_light_model("squeezenet"), "host", layout="NCHW")
    assert nchw.metadata["layout"] == "NCHW" and "transpose" not in nchw.graph.op_counts()


def test_nhwc_keeps_names_that_existed_before():
    """Renaming what the rewrite called `base_N` back to `base` must not touch the model's own names
    (DenseNet-121's output is called fc6_1 while fc6 is free)."""
    import numpy as np

    from ember.ir.graph import Graph
    from ember.passes import PassManager

    g = Graph("g")
    x = g.add_input("x", (1, 3, 4, 4))
    w = g.add_constant(np.ones((2, 3, 1, 1), np.float32), "w")
    mid = g.add_node("conv2d", [x, w], name="conv_1", output_names=["mid_1"]).output
    out = g.add_node("relu", [mid], name="act_2", output_names=["out_1"]).output
    g.outputs = [out]
    PassManager.from_spec("convert-to-nhwc", verify_each=True).run(g)
    assert [v.name for v in g.outputs] == ["out_1"]
