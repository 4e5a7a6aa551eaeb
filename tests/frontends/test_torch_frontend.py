"""The PyTorch frontend on good and bad input: module-path names, weights as constants, dynamic batch as a
named dim, attention kept whole or decomposed, one-line errors from the library and the CLI (exit 2).
Numerical checks: rtol 1e-4, atol 1e-5 scaled by the output's largest magnitude when above 1."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import ember  # noqa: E402
from ember import EmberError, ir  # noqa: E402
from ember.frontends.torch import load  # noqa: E402
from tests.cli.test_cli import assert_one_line_error  # noqa: E402
from tests.cli.test_cli import ember as run_cli  # noqa: E402
from tests.conftest import assert_close  # noqa: E402
from tests.frontends.torch_models import ViT, image, randomize, resnet18  # noqa: E402


def eager(model: nn.Module, *inputs: torch.Tensor) -> list[np.ndarray]:
    with torch.no_grad():
        out = model(*inputs)
    return [t.numpy() for t in ([out] if isinstance(out, torch.Tensor) else out)]


def interpret(graph, *inputs: torch.Tensor) -> dict[str, np.ndarray]:
    return ir.interpret(graph, {v.name: x.numpy() for v, x in zip(graph.inputs, inputs)})


def test_names_keep_module_paths_and_weights_are_constants():
    graph = load(randomize(resnet18()), (image(),))
    names = {n.name: n.op for n in graph.nodes}
    assert names["conv1"] == "conv2d" and names["layer1.0.conv1"] == "conv2d"
    assert names["layer1.0.bn1"] == "batch_norm" and names["layer2.0.downsample.0"] == "conv2d"
    assert names["layer1.0.add"] == "add" and names["fc"] == "dense"
    consts = {v.name for v in graph.constants}
    assert {"layer1.0.conv1.weight", "layer1.0.bn1.running_var", "fc.bias"} <= consts
    assert [v.name for v in graph.inputs] == ["x"] and [v.name for v in graph.outputs] == ["output"]


def test_dynamic_batch_is_a_named_dim():
    model = randomize(ViT(depth=2))
    batch = torch.export.Dim("batch", min=1, max=64)
    graph = load(model, (image(batch=2),), ({0: batch},))
    assert graph.inputs[0].shape == ("batch", 3, 32, 32)
    assert graph.outputs[0].shape[0] == "batch"
    for n in (1, 3):
        x = image(batch=n, seed=n)
        assert_close(interpret(graph, x), eager(model, x))


def test_dynamic_batch_fixed_by_input_shapes_compiles():
    model = randomize(resnet18())
    dims = ({0: torch.export.Dim("batch")},)
    art = ember.compile(model, "host", {"x": [3, 3, 32, 32]}, example_inputs=(image(batch=2),), dynamic_shapes=dims)
    x = image(batch=3, seed=5)
    assert art.metadata["inputs"][0]["shape"] == [3, 3, 32, 32]
    assert_close(art.run({"x": x.numpy()}), eager(model, x))


class Assorted(nn.Module):
    """Ops the reference models leave out: transposed convolution, padding, strided slices, select, where,
    clamp, reductions, rsqrt, log_softmax, LayerNorm without affine parameters."""

    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, output_padding=1)
        self.norm = nn.LayerNorm(8, elementwise_affine=False)

    def forward(self, x):
        y = F.avg_pool2d(F.pad(x, (1, 2, 0, 1), value=0.5), 3, 1, 1)
        y = F.leaky_relu(self.up(y), 0.1)[:, 1:3, ::2]
        z = torch.where(y > 0, y.clamp(max=0.7), torch.exp(y) - 1)
        s = z.sum(dim=(2, 3)) * z.amax(dim=-1).abs().mean(-1) + torch.rsqrt(z.pow(2).mean((2, 3)) + 1e-3)
        t = self.norm(z.flatten(2)[..., :8]).select(1, 0)
        return s, t, F.log_softmax(z, dim=1), torch.maximum(z, z * 0.5)


def test_assorted_ops_match_eager():
    model, x = Assorted().eval(), torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(4))
    graph = load(model, (x,))
    assert {"conv2d_transpose", "pad", "slice", "gather", "where", "clip", "log_softmax"} <= set(graph.op_counts())
    assert_close(interpret(graph, x), eager(model, x))


class PickAndBend(nn.Module):
    """torch.gather (ONNX GatherElements: top-scoring boxes picked per row), topk, cumsum, isnan, and the inverse
    and hyperbolic functions (angle and range features)."""

    def forward(self, x, idx):
        p = torch.gather(x, 2, idx)
        t = torch.tanh(p)
        inverse = torch.atan(p) + torch.asin(t * 0.9) + torch.acos(t * 0.5) + torch.atanh(t * 0.5) + torch.asinh(p)
        top = torch.topk(x, 3, dim=1, largest=False)
        bent = torch.tan(t) + torch.sinh(t) * torch.cosh(t)
        return inverse, bent, torch.isnan(torch.log(p)), torch.cumsum(p, dim=-1), top.values, top.indices


def test_gather_and_inverse_trig_match_eager():
    gen = torch.Generator().manual_seed(8)
    x, idx = torch.randn(2, 3, 10, generator=gen), torch.randint(0, 10, (2, 3, 4), generator=gen)
    model = PickAndBend()
    graph = load(model, (x, idx))
    assert {
        "gather_elements",
        "cumsum",
        "topk",
        "atan",
        "asin",
        "acos",
        "asinh",
        "cosh",
        "sinh",
        "atanh",
        "tan",
    } <= set(graph.op_counts())
    assert_close(interpret(graph, x, idx), eager(model, x, idx))
    art = ember.compile(model, "host", example_inputs=(x, idx))
    names = [i["name"] for i in art.metadata["inputs"]]
    assert_close(art.run(dict(zip(names, (x.numpy(), idx.numpy())))), eager(model, x, idx))


class Recurrent(nn.Module):
    """A batch-first LSTM into a bidirectional GRU, and a two-layer bidirectional LSTM whose final cell state is
    read when `cell` (Ember's lstm op has no cell-state output: then torch decomposes the LSTMs, unrolled)."""

    def __init__(self, cell: bool = False):
        super().__init__()
        self.lstm, self.gru = nn.LSTM(10, 16, batch_first=True), nn.GRU(16, 8, bidirectional=True)
        self.deep, self.cell = nn.LSTM(16, 6, num_layers=2, bidirectional=True), cell

    def forward(self, x):
        y, _ = self.lstm(x)
        z, h = self.gru(y.transpose(0, 1))
        w, (hn, cn) = self.deep(y.transpose(0, 1))
        return z, h, w, cn if self.cell else hn


@pytest.mark.parametrize("cell", [False, True], ids=["lstm-op", "cell-state-read"])
def test_lstm_and_gru_match_eager(cell):
    model, x = Recurrent(cell).eval(), torch.randn(2, 6, 10, generator=torch.Generator().manual_seed(9))
    graph = load(model, (x,))
    assert graph.op_counts().get("lstm", 0) == (0 if cell else 5)  # 1 + 2 layers x 2 directions
    assert graph.op_counts()["gru"] == 2
    assert_close(interpret(graph, x), eager(model, x))
    art = ember.compile(model, "host", example_inputs=(x,))
    assert_close(art.run({art.metadata["inputs"][0]["name"]: x.numpy()}), eager(model, x))


class SignalNet(nn.Module):
    """1-D layers (a keyword-spotting or IMU model's) and the padding modes: Conv1d (plain, depthwise dilated
    strided, transposed), BatchNorm1d, PReLU, 1-D pools, reflect/replicate/circular pads, SELU, InstanceNorm1d."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.act = nn.Conv1d(8, 16, 3, padding=1), nn.BatchNorm1d(16), nn.PReLU(16)
        self.dw = nn.Conv1d(16, 16, 5, groups=16, dilation=2, padding=4, stride=2)
        self.up = nn.ConvTranspose1d(16, 8, 3, stride=2, padding=1, output_padding=1)
        self.norm = nn.InstanceNorm1d(16, affine=True)

    def forward(self, x):
        y = F.max_pool1d(self.act(self.bn(self.conv(x))), 2)
        y = self.norm(F.selu(F.avg_pool1d(F.pad(y, (1, 1), mode="reflect"), 2)))
        y = self.dw(y)
        return self.up(y), F.pad(y[:, None], (1, 2, 2, 1), mode="replicate"), F.pad(y, (2, 3), mode="circular")


def test_1d_layers_and_padding_modes_match_eager():
    model = randomize(SignalNet())
    x = torch.randn(2, 8, 64, generator=torch.Generator().manual_seed(6))
    graph = load(model, (x,))
    assert {"conv2d", "conv2d_transpose", "max_pool2d", "avg_pool2d", "pad", "elu"} <= set(graph.op_counts())
    assert_close(interpret(graph, x), eager(model, x))
    art = ember.compile(model, "host", example_inputs=(x,))
    assert_close(art.run({art.metadata["inputs"][0]["name"]: x.numpy()}), eager(model, x))


class TwoAttentions(nn.Module):
    """Causal self-attention and attention with a bool padding mask, each through SDPA."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(16, 48)

    def forward(self, x, keep):
        q, k, v = self.proj(x).view(x.shape[0], x.shape[1], 3, 2, 8).permute(2, 0, 3, 1, 4).unbind(0)
        causal = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        padded = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :], scale=0.3)
        return causal + padded


def attention_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(2, 6, 16, generator=torch.Generator().manual_seed(3))
    keep = torch.ones(2, 6, dtype=torch.bool)
    keep[1, 4:] = False
    return x, keep


def test_attention_kept_whole_or_decomposed_matches_eager():
    model, inputs = randomize(TwoAttentions()), attention_inputs()
    whole = load(model, inputs)
    assert whole.op_counts()["attention"] == 2
    decomposed = load(torch.export.export(model, inputs).run_decompositions(), inputs)
    assert "attention" not in decomposed.op_counts() and "softmax" in decomposed.op_counts()
    for graph in (whole, decomposed):
        assert_close(interpret(graph, *inputs), eager(model, *inputs))


class Unsupported(nn.Module):
    class Flipper(nn.Module):
        def forward(self, x):
            return torch.sort(x, 1).values + torch.sort(x, 0).values

    class Summer(nn.Module):
        def forward(self, x):
            return torch.cummax(x, 1).values

    def __init__(self):
        super().__init__()
        self.head, self.tail = self.Flipper(), self.Summer()

    def forward(self, x):
        return self.tail(torch.relu(self.head(x)))


def test_unsupported_ops_are_one_error_with_module_paths():
    with pytest.raises(EmberError) as err:
        load(Unsupported(), (torch.randn(2, 3),))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("<Unsupported>: unsupported ATen ops:")
    assert msg.count("aten.sort.default") == 1 and "aten.sort.default (in 'head')" in msg
    assert "aten.cummax.default (in 'tail')" in msg and "relu" not in msg


class Branchy(nn.Module):
    def forward(self, x):
        return x + 1 if x.sum() > 0 else x - 1


@pytest.mark.parametrize("strict, hint", [(False, "pass strict=True"), (True, "pass strict=False")])
def test_export_rejection_is_one_line_with_a_hint(strict, hint):
    model = Branchy().train()
    with pytest.raises(EmberError) as err:
        load(model, (torch.randn(3),), strict=strict)
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < 400
    assert msg.startswith("<Branchy>: torch.export rejected the module: ") and hint in msg
    assert model.training  # exported in eval mode, left as it was


@pytest.fixture(scope="module")
def pt2_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pt2")
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Hardswish(), nn.AdaptiveAvgPool2d(1))
    torch.export.save(torch.export.export(randomize(model), (image(16),)), folder / "small.pt2")
    torch.export.save(torch.export.export(Unsupported(), (torch.randn(2, 3),)), folder / "unsupported.pt2")
    (folder / "garbage.pt2").write_bytes(b"not a zip archive")
    with zipfile.ZipFile(folder / "other.pt2", "w") as z:
        z.writestr("notes.txt", "a zip archive, but no exported program")
    return folder


def test_cli_reads_pt2_files(pt2_files, tmp_path):
    r = run_cli("inspect", str(pt2_files / "small.pt2"))
    assert r.returncode == 0, r.stderr
    assert "%0 = conv2d" in r.stdout and "hard_swish" in r.stdout and "@0.weight" in r.stdout
    r = run_cli("compile", str(pt2_files / "small.pt2"), "-o", str(tmp_path / "bundle"))
    assert r.returncode == 0, r.stderr
    x = image(16, seed=2)
    model = torch.export.load(str(pt2_files / "small.pt2")).module()
    assert_close(ember.load(tmp_path / "bundle").run({"input": x.numpy()}), eager(model, x))


def test_cli_errors_on_pt2_files(pt2_files, tmp_path):
    r = run_cli("compile", str(pt2_files / "unsupported.pt2"), "-o", str(tmp_path / "out"))
    assert_one_line_error(r, "unsupported.pt2", "aten.sort.default (in 'head')", "aten.cummax.default (in 'tail')")
    assert not (tmp_path / "out").exists()
    assert_one_line_error(run_cli("opt", str(pt2_files / "garbage.pt2")), "garbage.pt2", "not a torch.export archive")
    assert_one_line_error(run_cli("inspect", str(pt2_files / "other.pt2")), "other.pt2", "not a readable torch.export")
    assert_one_line_error(run_cli("inspect", str(tmp_path / "missing.pt2")), "missing.pt2", "no such file")
