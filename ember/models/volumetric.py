"""3-D CNNs as torch.onnx writes them: R3D over video clips (Tran et al., 2018, "A Closer Look at Spatiotemporal
Convolutions": a ResNet whose convs are 3x3x3), narrowed for edge action recognition, and a 3-D U-Net over a
volume (Cicek et al., 2016) for segmentation on a scanner's embedded board."""

from __future__ import annotations

from ember.models.blocks import Exporter, Seed, make_model


def _conv3d_bn(e: Exporter, x: str, scope: str, cin: int, cout: int, k: tuple, stride: tuple, relu: bool) -> str:
    w = e.weight(f"{scope}.conv.weight", cout, cin, *k, fan_in=cin * k[0] * k[1] * k[2])
    pads = [d // 2 for d in k] * 2
    y = e.op("Conv", [x, w], f"{scope}/conv", kernel_shape=list(k), pads=pads, strides=list(stride))
    scale, shift = e.vector(f"{scope}.bn.weight", cout, 0.5, 1.5), e.vector(f"{scope}.bn.bias", cout)
    mean, var = e.vector(f"{scope}.bn.running_mean", cout), e.vector(f"{scope}.bn.running_var", cout, 0.5, 1.5)
    y = e.op("BatchNormalization", [y, scale, shift, mean, var], f"{scope}/bn", epsilon=1e-5, momentum=0.9)
    return e.op("Relu", [y], f"{scope}/relu") if relu else y


def r3d_small(frames: int = 8, size: int = 112, widths=(16, 32, 64), classes: int = 10, rng: Seed = 0):
    """R3D with one basic block per stage: a (3, 7, 7) stem with spatial stride 2, a (1, 3, 3) max pool, then
    per width a block of two 3x3x3 Conv + BatchNormalization units (the first of each later stage strided by 2
    in time and space, with a 1x1x1 projection shortcut), Add and Relu; global average pooling and a Gemm."""
    e = Exporter(rng)
    x = _conv3d_bn(e, "clip", "stem", 3, widths[0], (3, 7, 7), (1, 2, 2), True)
    x = e.op("MaxPool", [x], "pool0", kernel_shape=[1, 3, 3], pads=[0, 1, 1, 0, 1, 1], strides=[1, 2, 2])
    cin = widths[0]
    for i, cout in enumerate(widths, start=1):
        stride = (1, 1, 1) if i == 1 else (2, 2, 2)
        y = _conv3d_bn(e, x, f"layer{i}.conv1", cin, cout, (3, 3, 3), stride, True)
        y = _conv3d_bn(e, y, f"layer{i}.conv2", cout, cout, (3, 3, 3), (1, 1, 1), False)
        shortcut = x if i == 1 else _conv3d_bn(e, x, f"layer{i}.downsample", cin, cout, (1, 1, 1), stride, False)
        x = e.op("Relu", [e.op("Add", [y, shortcut], f"layer{i}")], f"layer{i}/relu")
        cin = cout
    x = e.op("Flatten", [e.op("GlobalAveragePool", [x], "pool")], "flatten", axis=1)
    w, b = e.weight("fc.weight", classes, cin, fan_in=cin), e.vector("fc.bias", classes)
    e.op("Gemm", [x, w, b], "fc", out="logits", transB=1)
    clip = ("clip", [1, 3, frames, size, size])
    return make_model(e.nodes, [clip], [("logits", [1, classes])], e.inits, 13, "r3d_small")


def unet3d_small(depth: int = 16, size: int = 64, widths=(8, 16, 32), classes: int = 2, rng: Seed = 0):
    """A 3-D U-Net: per level two 3x3x3 Conv + BatchNormalization + Relu units, 2x2x2 max pooling down,
    ConvTranspose (2x2x2, stride 2) up, Concat with the skip connection, and a 1x1x1 Conv to class scores."""
    e = Exporter(rng)

    def double(x: str, scope: str, cin: int, cout: int) -> str:
        x = _conv3d_bn(e, x, f"{scope}.0", cin, cout, (3, 3, 3), (1, 1, 1), True)
        return _conv3d_bn(e, x, f"{scope}.1", cout, cout, (3, 3, 3), (1, 1, 1), True)

    skips, x, cin = [], "volume", 1
    for i, width in enumerate(widths[:-1]):
        x = double(x, f"down{i}", cin, width)
        skips.append(x)
        x = e.op("MaxPool", [x], f"down{i}/pool", kernel_shape=[2, 2, 2], strides=[2, 2, 2])
        cin = width
    x = double(x, "bottom", cin, widths[-1])
    cin = widths[-1]
    for i, width in reversed(list(enumerate(widths[:-1]))):
        w = e.weight(f"up{i}.weight", cin, width, 2, 2, 2, fan_in=cin * 8)
        x = e.op("ConvTranspose", [x, w, e.vector(f"up{i}.bias", width)], f"up{i}", kernel_shape=[2, 2, 2],
                 strides=[2, 2, 2])  # fmt: skip
        x = double(e.op("Concat", [skips[i], x], f"up{i}/cat", axis=1), f"up{i}.conv", 2 * width, width)
        cin = width
    w = e.weight("head.weight", classes, cin, 1, 1, 1, fan_in=cin)
    e.op("Conv", [x, w, e.vector("head.bias", classes)], "head", out="scores", kernel_shape=[1, 1, 1])
    shape = [1, 1, depth, size, size]
    return make_model(e.nodes, [("volume", shape)], [("scores", [1, classes, *shape[2:]])], e.inits, 13, "unet3d")
