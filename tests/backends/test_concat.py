"""Channel concat in NHWC (SqueezeNet's fire modules, Inception, DenseNet): where the branches' results feed only
the concat, their kernels write its slices and no copy runs; otherwise it compiles to vector copies, for widths
whose gcd is below the vector tile and for three inputs. Both match onnxruntime (conftest's tolerances)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from onnx import helper

import ember
from tests.conftest import assert_close, make_model, ort_run, random_feeds


def branches_model(widths: list[int], channels: int = 16, size: int = 9, shared: bool = False):
    """Conv branches of `widths` output channels over one input, ReLU'd, concatenated along channels and
    mixed by a 1x1 conv; `shared`: the first branch is a model output too."""
    rng = np.random.default_rng(0)
    nodes, inits, names = [], {}, []
    for k, width in enumerate(widths):
        inits[f"w{k}"] = rng.standard_normal((width, channels, 1 + 2 * (k % 2), 1 + 2 * (k % 2))).astype("float32")
        nodes.append(helper.make_node("Conv", ["x", f"w{k}"], [f"c{k}"], pads=[k % 2] * 4))
        nodes.append(helper.make_node("Relu", [f"c{k}"], [f"r{k}"]))
        names.append(f"r{k}")
    nodes.append(helper.make_node("Concat", names, ["cat"], axis=1))
    inits["wf"] = rng.standard_normal((8, sum(widths), 1, 1)).astype("float32")
    nodes.append(helper.make_node("Conv", ["cat", "wf"], ["y"]))  # as in a fire module: nothing fuses with the concat
    outputs = [("y", None), ("r0", None)] if shared else [("y", None)]
    return make_model(nodes, [("x", [1, channels, size, size])], outputs, inits, opset=13)


def llvm_ir(artifact) -> str:
    return "\n".join(sub.inspect_source("ll") for sub in artifact.executable.mod.imports if sub.kind == "llvm")


def kernel_names(artifact) -> list[str]:
    return re.findall(r"(?m)^define [^@]*@(\w+)_compute_\(", llvm_ir(artifact))


def concat_kernel_ir(artifact) -> str:
    """The LLVM IR of the concat kernel and of the parallel tasks it launches."""
    functions = dict(re.findall(r"(?ms)^define [^@]*@([\w.]+)\((.*?^})", llvm_ir(artifact)))
    assert "concatenate_compute_" in functions, "no concatenate kernel was built"
    tasks = re.findall(r"@(__tvm_parallel_lambda[\w.]*)", functions["concatenate_compute_"])
    return "\n".join([functions["concatenate_compute_"], *(functions[t] for t in tasks)])


@pytest.mark.parametrize("widths", [[64, 64], [24, 40], [96, 32, 64]])
def test_branches_write_their_slices_of_the_concat(widths):
    model = branches_model(widths)
    art = ember.compile(model, "host", layout="NHWC")
    names = kernel_names(art)
    assert not [n for n in names if n.startswith("concatenate")], names
    starts = sorted(int(n.rsplit("_at_", 1)[1]) for n in names if "_into_" in n)
    assert starts == [sum(widths[:k]) for k in range(len(widths))], names
    feeds = random_feeds(model)
    assert_close(art.run(feeds), ort_run(model, feeds))


def test_concat_written_in_slices_can_be_the_model_output():
    model = branches_model([24, 40])
    model.graph.node.pop()  # the mixing conv: the concat is the output
    model.graph.output[0].name = "cat"
    art = ember.compile(model, "host", layout="NHWC")
    assert not [n for n in kernel_names(art) if n.startswith("concatenate")]
    feeds = random_feeds(model)
    assert_close(art.run(feeds), ort_run(model, feeds))


@pytest.mark.parametrize("widths", [[64, 64], [24, 40], [96, 32, 64]])
def test_channel_concat_copies_vectors_and_matches_onnxruntime(widths):
    model = branches_model(widths, shared=True)  # a branch used twice keeps the concat kernel
    art = ember.compile(model, "host", layout="NHWC")
    kernel = concat_kernel_ir(art)
    assert re.search(r"load <\d+ x float>", kernel)  # TOPI's concat loaded one float at a time
    assert not re.search(r"load float,", kernel)
    feeds = random_feeds(model)
    assert_close(art.run(feeds), ort_run(model, feeds))
