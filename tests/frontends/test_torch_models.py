"""Real topologies through the PyTorch frontend: each model matches torch eager through the interpreter and the
host build (rtol 1e-4, atol 1e-5 scaled by the output's largest magnitude when above 1), and -O2 fuses the
torch import into no more TVM kernels than the ONNX import of the same model (torch.onnx.export, TorchScript
exporter: the dynamo one needs onnxscript)."""

from __future__ import annotations

import io
import warnings

import pytest

torch = pytest.importorskip("torch")

import onnx  # noqa: E402

import ember  # noqa: E402
from ember import ir  # noqa: E402
from ember.backends.tvm.build import count_kernels  # noqa: E402
from ember.frontends.torch import load  # noqa: E402
from tests.conftest import assert_close  # noqa: E402
from tests.frontends.torch_models import MODELS, randomize  # noqa: E402

HEAVY = {"mobilenet_v2", "resnet50", "efficientnet_b0", "vit_tiny"}
NAMES = [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in MODELS]
# Host builds (two compiles each) of the heavy models whose blocks a lighter one compiles too: resnet18's residual
# blocks, mobilenet_v3_small's and efficientnet_b0's inverted residuals. Their interpreter runs stay.
HOST_NAMES = [p for p, n in zip(NAMES, MODELS) if n not in {"resnet50", "mobilenet_v2"}]


class Case:
    def __init__(self, name: str):
        build, inputs = MODELS[name]
        self.name, self.model, self.inputs = name, randomize(build()), inputs()
        with torch.no_grad():
            out = self.model(*self.inputs)
        self.want = [t.numpy() for t in ([out] if isinstance(out, torch.Tensor) else out)]
        self.arrays = [x.numpy() for x in self.inputs]
        self.program = torch.export.export(self.model, self.inputs)  # once for both tests

    def onnx(self) -> onnx.ModelProto:
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(self.model, self.inputs, buf, dynamo=False, opset_version=17)
        return onnx.load_from_string(buf.getvalue())


@pytest.fixture(scope="module", params=NAMES)
def case(request) -> Case:
    return Case(request.param)


def test_interpreter_matches_eager(case):
    graph = load(case.program)
    ir.verify(graph)
    got = ir.interpret(graph, dict(zip([v.name for v in graph.inputs], case.arrays)))
    assert_close(got, case.want)


@pytest.mark.parametrize("case", HOST_NAMES, indirect=True)
def test_host_build_matches_eager_and_fuses_like_the_onnx_import(case):
    art = ember.compile(case.program, "host")
    assert_close(art.run(dict(zip(art.input_names, case.arrays))), case.want)
    via_onnx = ember.compile(case.onnx(), "host")
    assert count_kernels(art.executable) <= count_kernels(via_onnx.executable)
