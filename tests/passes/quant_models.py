"""A small CNN trained for a few hundred steps on a learnable synthetic task (which quadrant holds a bright
blob, plus a stripe orientation), written as an ONNX model, for the quantization tests."""

from __future__ import annotations

import functools

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CLASSES = 4


def images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """[n, 3, 16, 16] float32 images and their labels: the quadrant with the blob is the class."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)
    x = rng.normal(0, 0.3, (n, 3, 16, 16)).astype(np.float32)
    for i, c in enumerate(labels):
        r, q = divmod(int(c), 2)
        x[i, rng.integers(0, 3), r * 8 + 2 : r * 8 + 6, q * 8 + 2 : q * 8 + 6] += rng.uniform(1.0, 2.0)
    return x, labels


@functools.lru_cache(maxsize=1)
def trained_weights(steps: int = 300) -> dict[str, np.ndarray]:
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(1)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1),
        torch.nn.ReLU6(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(16 * 4 * 4, 32),
        torch.nn.ReLU(),
        torch.nn.Linear(32, CLASSES),
    )
    params = list(net.parameters())
    velocity = [torch.zeros_like(p) for p in params]
    x, y = images(2048, seed=1)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for step in range(steps):
        idx = torch.from_numpy(np.random.default_rng(step).integers(0, len(x), 64))
        loss = torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx])
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():  # SGD with momentum by hand: torch.optim's first step imports torch._dynamo (4 s)
            for p, v, g in zip(params, velocity, grads):
                v.mul_(0.9).add_(g)
                p.sub_(0.05 * v)
    names = {0: "conv1", 3: "conv2", 7: "fc1", 9: "fc2"}
    out = {}
    for i, name in names.items():
        out[f"{name}.weight"] = net[i].weight.detach().numpy().copy()
        out[f"{name}.bias"] = net[i].bias.detach().numpy().copy()
    return out


def cnn_onnx(batch: int = 1) -> onnx.ModelProto:
    """The trained CNN as an ONNX model: images [batch, 3, 16, 16] -> logits [batch, 4]."""
    w = trained_weights()
    inits = [numpy_helper.from_array(v, k) for k, v in w.items()]
    inits.append(numpy_helper.from_array(np.array([batch, -1], np.int64), "flat_shape"))
    nodes = [
        helper.make_node("Conv", ["images", "conv1.weight", "conv1.bias"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], "pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "conv2.weight", "conv2.bias"], ["c2"], "conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["c2", "", ""], ["r2"], "relu6"),
        helper.make_node("MaxPool", ["r2"], ["p2"], "pool2", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["p2", "flat_shape"], ["flat"], "flatten"),
        helper.make_node("Gemm", ["flat", "fc1.weight", "fc1.bias"], ["f1"], "fc1", transB=1),
        helper.make_node("Relu", ["f1"], ["r3"], "relu3"),
        helper.make_node("Gemm", ["r3", "fc2.weight", "fc2.bias"], ["logits"], "fc2", transB=1),
    ]
    nodes[4] = helper.make_node("Clip", ["c2", "zero", "six"], ["r2"], "relu6")
    inits += [numpy_helper.from_array(np.float32(0), "zero"), numpy_helper.from_array(np.float32(6), "six")]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, CLASSES])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def samples(n: int, seed: int) -> list[dict[str, np.ndarray]]:
    x, _ = images(n, seed)
    return [{"images": x[i : i + 1]} for i in range(n)]
