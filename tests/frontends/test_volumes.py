"""3-D convolution and pooling (ember.ir.ops.volume): ONNX layers through the interpreter (the numpy references),
the interpreter on their decompositions (expand-volumes), host builds at -O2 (expanded before layout conversion)
and, for one case of each op, at -O0 (expanded during lowering), and ONNX export, each against onnxruntime; an
R3D video network end to end."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import ember
from ember import ir
from ember.backends.onnx_export import export_onnx
from ember.frontends.onnx import load
from ember.models.volumetric import r3d_small
from ember.passes import PassManager
from tests.conftest import assert_close, make_model, ort_run

H = helper.make_node
SHAPE = [2, 4, 7, 9, 8]  # N, C, D, H, W: odd and unequal extents; the ceil-mode cases' last depth window overhangs

CONVS = {
    "plain": {},
    "padded": {"pads": [1, 1, 1, 1, 1, 1]},
    "strided": {"strides": [2, 2, 1], "pads": [1, 0, 1, 0, 1, 1]},
    "dilated": {"dilations": [2, 1, 2], "pads": [2, 1, 0, 1, 1, 2]},
    "grouped": {"group": 2, "pads": [1, 1, 1, 1, 1, 1]},
    "same_upper": {"auto_pad": "SAME_UPPER", "strides": [2, 2, 2]},
}
TRANSPOSED = {
    "plain": {},
    "strided": {"strides": [2, 2, 1], "output_padding": [1, 0, 0]},
    "padded_dilated": {"strides": [3, 1, 2], "dilations": [2, 1, 1], "pads": [2, 1, 0, 1, 0, 1]},
    "grouped": {"group": 2, "strides": [2, 1, 1], "pads": [1, 1, 1, 0, 1, 1]},
}
POOLS = {
    "max": ("MaxPool", {"kernel_shape": [3, 3, 3], "strides": [2, 2, 2]}),
    "max_padded_ceil": ("MaxPool", {"kernel_shape": [2, 3, 3], "strides": [2, 2, 2], "pads": [0, 1, 0, 0, 1, 1],
                                    "ceil_mode": 1}),  # fmt: skip
    "max_dilated": ("MaxPool", {"kernel_shape": [2, 2, 2], "dilations": [2, 1, 2]}),
    "avg": ("AveragePool", {"kernel_shape": [3, 3, 3], "strides": [2, 2, 2]}),
    "avg_excluding_pads": ("AveragePool", {"kernel_shape": [3, 3, 3], "pads": [1, 1, 1, 1, 1, 1]}),
    "avg_including_pads_ceil": ("AveragePool", {"kernel_shape": [3, 2, 3], "strides": [2, 2, 2],
                                                "pads": [1, 0, 1, 0, 1, 0], "count_include_pad": 1, "ceil_mode": 1}),
}  # fmt: skip


def _conv_model(attrs: dict, bias: bool = True, op: str = "Conv"):
    gen = np.random.default_rng(1)
    group = attrs.get("group", 1)
    shape = (6, SHAPE[1] // group) if op == "Conv" else (SHAPE[1], 6 // group)
    inits = {"w": gen.standard_normal((*shape, 3, 2, 3)).astype(np.float32)}
    if bias:
        inits["b"] = gen.standard_normal(6).astype(np.float32)
    node = H(op, ["x", *inits], ["y"], **attrs)
    return make_model([node], [("x", SHAPE)], [("y", None)], inits, 13)


def _pool_model(op: str, attrs: dict):
    return make_model([H(op, ["x"], ["y"], **attrs)], [("x", SHAPE)], [("y", None)], {}, 19)


def _feeds():
    return {"x": np.random.default_rng(2).standard_normal(SHAPE).astype(np.float32)}


def _expanded(graph):
    PassManager(["expand-volumes"], verify_each=True).run(graph)
    assert not {n.op for n in graph.nodes} & {"conv3d", "conv3d_transpose", "max_pool3d", "avg_pool3d"}
    return graph


# The case of each op also built at -O0
LOWERED_WHOLE = {"conv3d": "strided", "conv3d_transpose": "strided", "max_pool3d": "max_padded_ceil",
                 "avg_pool3d": "avg_including_pads_ceil"}  # fmt: skip


def _check_everywhere(model, op: str, case: str) -> None:
    feeds = _feeds()
    want = ort_run(model, feeds)
    graph = load(model)
    assert [n.op for n in graph.nodes] == [op]
    assert_close(ir.interpret(graph, feeds), want)
    exported = export_onnx(graph)
    assert [n.op_type for n in exported.graph.node] == [model.graph.node[0].op_type]  # whole, not decomposed
    assert_close(ort_run(exported, feeds), want)
    assert_close(ir.interpret(_expanded(load(model)), feeds), want)
    for passes in (2, 0) if LOWERED_WHOLE[op] == case else (2,):
        assert_close(ember.compile(model, "host", passes=passes).run(feeds), want)


@pytest.mark.parametrize("case", sorted(CONVS))
def test_conv3d_matches_onnxruntime(case):
    _check_everywhere(_conv_model(CONVS[case], bias=case != "plain"), "conv3d", case)


@pytest.mark.parametrize("case", sorted(TRANSPOSED))
def test_conv3d_transpose_matches_onnxruntime(case):
    _check_everywhere(_conv_model(TRANSPOSED[case], case != "plain", "ConvTranspose"), "conv3d_transpose", case)


@pytest.mark.parametrize("case", sorted(POOLS))
def test_pool3d_matches_onnxruntime(case):
    op, attrs = POOLS[case]
    _check_everywhere(_pool_model(op, attrs), "max_pool3d" if op == "MaxPool" else "avg_pool3d", case)


def test_r3d_runs_as_2d_kernels_with_batch_norms_folded():
    model = r3d_small(frames=4, size=32)
    feeds = {"clip": np.random.default_rng(3).standard_normal((1, 3, 4, 32, 32)).astype(np.float32)}
    want = ort_run(model, feeds)
    art = ember.compile(model, "host")
    ops = {n.op for n in art.graph.nodes}
    assert "batch_norm" not in ops and not ops & {"conv3d", "max_pool3d"}, ops
    assert_close(art.run(feeds), want)
    assert_close(ir.interpret(load(model), feeds), want)


def test_a_volume_needs_static_extents():
    model = make_model([H("MaxPool", ["x"], ["y"], kernel_shape=[2, 2, 2])], [("x", [1, 4, "d", 8, 8])], [("y", None)])
    with pytest.raises(ember.EmberError, match="static channel and spatial sizes") as error:
        load(model)
    assert "\n" not in str(error.value) and "MaxPool" in str(error.value)


def test_torch_3d_layers_match_eager():
    torch = pytest.importorskip("torch")

    class Clip(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv3d(3, 8, 3, stride=(1, 2, 2), padding=1)
            self.bn = torch.nn.BatchNorm3d(8)
            self.temporal = torch.nn.Conv3d(8, 8, (3, 1, 1), padding=(2, 0, 0), dilation=(2, 1, 1), groups=4)
            self.max = torch.nn.MaxPool3d(2, ceil_mode=True)
            self.avg = torch.nn.AvgPool3d(3, stride=2, padding=1, count_include_pad=False)

        def forward(self, x):
            return self.avg(self.max(self.temporal(torch.relu(self.bn(self.conv(x))))))

    torch.manual_seed(0)
    module = Clip().eval()
    with torch.no_grad():
        module.bn.running_mean.uniform_(-0.5, 0.5), module.bn.running_var.uniform_(0.5, 1.5)
    x = torch.randn(1, 3, 9, 33, 33)
    want = [module(x).detach().numpy()]
    art = ember.compile(module, "host", example_inputs=(x,))
    assert_close(art.run({art.input_names[0]: x.numpy()}), want)
