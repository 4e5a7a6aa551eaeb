"""Reference models: the real topologies the `onnx` package ships, with seeded random weights."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

LIGHT_MODELS = (
    "bvlc_alexnet",
    "densenet121",
    "inception_v1",
    "inception_v2",
    "resnet50",
    "shufflenet",
    "squeezenet",
    "vgg19",
    "zfnet512",
)


def light_model_path(name: str) -> Path:
    """Path of `light_<name>.onnx` inside the installed onnx package."""
    return Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light" / f"light_{name}.onnx"


def with_random_weights(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """Replace weights built by ConstantOfShape (the light models fill them with 0.02) by seeded random
    initializers: He-scaled normals for rank >= 2, uniform(0.5, 1.5) for vectors (biases, BN stats)."""
    rng = np.random.default_rng(seed)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.ir_version = max(out.ir_version, 4)  # IR 3 requires every initializer to be a graph input too
    g = out.graph
    inits = {t.name: t for t in g.initializer}
    keep = []
    for node in g.node:
        shape_init = inits.get(node.input[0]) if node.op_type == "ConstantOfShape" and node.input else None
        if shape_init is None:
            keep.append(node)
            continue
        shape = [int(d) for d in numpy_helper.to_array(shape_init)]
        if len(shape) >= 2:
            fan_in = int(np.prod(shape[1:]))
            arr = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        else:
            arr = rng.uniform(0.5, 1.5, size=shape).astype(np.float32)
        g.initializer.append(numpy_helper.from_array(arr, node.output[0]))
    del g.node[:]
    g.node.extend(keep)
    used = {i for n in g.node for i in n.input}
    live = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(live)
    # Weights are initializers only: listed as graph inputs too (IR version 3 style), onnxruntime would treat
    # them as overridable and skip folding and fusing them.
    weights = {t.name for t in live}
    inputs = [i for i in g.input if i.name not in weights and (i.name in used or i.name in {o.name for o in g.output})]
    del g.input[:]
    g.input.extend(inputs)
    return out


def random_light_model(name: str, seed: int = 0) -> onnx.ModelProto:
    return with_random_weights(onnx.load(str(light_model_path(name))), seed)


def random_feeds(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded standard-normal inputs for every graph input that is not an initializer."""
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for i in model.graph.input:
        if i.name in inits:
            continue
        shape = [d.dim_value for d in i.type.tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)
        feeds[i.name] = rng.standard_normal(shape).astype(dtype)
    return feeds
