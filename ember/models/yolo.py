"""YOLOv8n's backbone (Ultralytics' nano detector, the common choice for detection on edge boards) as torch.onnx
writes it in eval mode without folding: Conv + BatchNormalization + SiLU units (Sigmoid and Mul), C2f blocks
(a 1x1 conv split in two halves, residual bottlenecks on the second, everything concatenated into a 1x1 conv)
and SPPF (three chained 5x5 max pools, concatenated)."""

from __future__ import annotations

import onnx

from ember.models.blocks import Exporter, Seed, conv_bn, i64, make_model

# (output channels, bottlenecks of the C2f after the stride-2 conv) per stage, at width 0.25 and depth 0.33
YOLOV8N_STAGES = ((32, 1), (64, 2), (128, 2), (256, 1))


def _conv(e: Exporter, x: str, scope: str, cin: int, cout: int, k: int, stride: int = 1) -> str:
    return conv_bn(e, x, scope, cin, cout, k, stride, 1, "silu")


def _c2f(e: Exporter, x: str, scope: str, c: int, n: int) -> str:
    half = c // 2
    y = _conv(e, x, f"{scope}.cv1", c, c, 1)
    parts = list(e.op_n("Split", [y, e.literal(i64(half, half), scope)], scope, 2, axis=1))
    for i in range(n):
        z = _conv(e, parts[-1], f"{scope}.m.{i}.cv1", half, half, 3)
        z = _conv(e, z, f"{scope}.m.{i}.cv2", half, half, 3)
        parts.append(e.op("Add", [parts[-1], z], f"{scope}.m.{i}"))
    y = e.op("Concat", parts, scope, axis=1)
    return _conv(e, y, f"{scope}.cv2", (2 + n) * half, c, 1)


def _sppf(e: Exporter, x: str, scope: str, c: int) -> str:
    y = _conv(e, x, f"{scope}.cv1", c, c // 2, 1)
    pools = [y]
    for _ in range(3):
        pools.append(e.op("MaxPool", [pools[-1]], f"{scope}/m", kernel_shape=[5, 5], pads=[2] * 4, strides=[1, 1]))
    return _conv(e, e.op("Concat", pools, scope, axis=1), f"{scope}.cv2", 2 * c, c, 1)


def yolov8n_backbone(size: int = 320, rng: Seed = 0) -> onnx.ModelProto:
    """The backbone's P3, P4 and P5 feature maps (strides 8, 16, 32) for a [1, 3, size, size] image."""
    e = Exporter(rng)
    x = _conv(e, "images", "model.0", 3, 16, 3, 2)
    cin, features = 16, []
    for i, (c, n) in enumerate(YOLOV8N_STAGES):
        x = _conv(e, x, f"model.{2 * i + 1}", cin, c, 3, 2)
        x = _c2f(e, x, f"model.{2 * i + 2}", c, n)
        features.append(x)
        cin = c
    p5 = _sppf(e, x, "model.9", cin)
    outputs = {"p3": features[1], "p4": features[2], "p5": p5}
    e.nodes += [onnx.helper.make_node("Identity", [v], [k], name=f"/{k}") for k, v in outputs.items()]
    shapes = [("p3", [1, 64, size // 8, size // 8]), ("p4", [1, 128, size // 16, size // 16])]
    shapes.append(("p5", [1, 256, size // 32, size // 32]))
    return make_model(e.nodes, [("images", [1, 3, size, size])], shapes, e.inits, 13, "yolov8n_backbone")
