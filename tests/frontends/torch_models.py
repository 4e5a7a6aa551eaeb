"""Reference topologies as plain nn.Modules (no torchvision): MobileNetV2/V3, ResNet-18/50, EfficientNet-B0, a
ViT-tiny and a BERT-style encoder. Every block and stage of the originals is here; widths and input sizes are
scaled down so the tests compile them in seconds."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def _div8(c: float) -> int:
    return max(8, int(c + 4) // 8 * 8)


class ConvBN(nn.Sequential):
    """Conv2d, BatchNorm2d and an optional activation module, as torchvision's Conv2dNormActivation."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: type | None = nn.ReLU):
        layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        super().__init__(*layers, *([act()] if act else []))


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, squeeze: int, act: type = nn.ReLU, gate: type = nn.Hardsigmoid):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, squeeze, 1), nn.Conv2d(squeeze, c, 1)
        self.act, self.gate = act(), gate()

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class InvertedResidual(nn.Module):
    """MobileNetV2/V3 and EfficientNet block: 1x1 expand, depthwise kxk, optional squeeze-excite, 1x1 project."""

    def __init__(self, cin, cexp, cout, k, stride, act=nn.ReLU6, se: Callable[[int], nn.Module] | None = None):
        super().__init__()
        layers = [ConvBN(cin, cexp, 1, act=act)] if cexp != cin else []
        layers.append(ConvBN(cexp, cexp, k, stride, groups=cexp, act=act))
        if se is not None:
            layers.append(se(cexp))
        layers.append(ConvBN(cexp, cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


class MobileNetV2(nn.Module):
    CFG = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]

    def __init__(self, width: float = 0.25, classes: int = 10):
        super().__init__()
        cin = _div8(32 * width)
        layers: list[nn.Module] = [ConvBN(3, cin, 3, 2, act=nn.ReLU6)]
        for t, c, n, s in self.CFG:
            cout = _div8(c * width)
            for i in range(n):
                layers.append(InvertedResidual(cin, cin * t, cout, 3, s if i == 0 else 1))
                cin = cout
        layers.append(ConvBN(cin, 1280, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, classes))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


class MobileNetV3Small(nn.Module):
    # kernel, expanded, out, squeeze-excite, activation, stride
    CFG = [
        (3, 16, 16, True, "RE", 2),
        (3, 72, 24, False, "RE", 2),
        (3, 88, 24, False, "RE", 1),
        (5, 96, 40, True, "HS", 2),
        (5, 240, 40, True, "HS", 1),
        (5, 240, 40, True, "HS", 1),
        (5, 120, 48, True, "HS", 1),
        (5, 144, 48, True, "HS", 1),
        (5, 288, 96, True, "HS", 2),
        (5, 576, 96, True, "HS", 1),
        (5, 576, 96, True, "HS", 1),
    ]

    def __init__(self, width: float = 0.5, classes: int = 10):
        super().__init__()
        cin = _div8(16 * width)
        layers: list[nn.Module] = [ConvBN(3, cin, 3, 2, act=nn.Hardswish)]
        for k, exp, out, se, act, s in self.CFG:
            cexp, cout = _div8(exp * width), _div8(out * width)
            squeeze = (lambda c: SqueezeExcite(c, _div8(c / 4))) if se else None
            layers.append(InvertedResidual(cin, cexp, cout, k, s, nn.Hardswish if act == "HS" else nn.ReLU, squeeze))
            cin = cout
        layers.append(ConvBN(cin, 6 * cin, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        head = [nn.Linear(6 * cin, 128), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(128, classes)]
        self.classifier = nn.Sequential(*head)

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3)))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, c: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, c, 3, stride, 1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(cin, c, stride)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, c: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, c, 1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, stride, 1, bias=False), nn.BatchNorm2d(c)
        self.conv3, self.bn3 = nn.Conv2d(c, c * 4, 1, bias=False), nn.BatchNorm2d(c * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(cin, c * 4, stride)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


def _downsample(cin: int, cout: int, stride: int) -> nn.Module | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class ResNet(nn.Module):
    def __init__(self, block: type, layers: list[int], base: int = 16, classes: int = 10):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, base, 7, 2, 3, bias=False), nn.BatchNorm2d(base)
        self.relu, self.maxpool = nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        cin, stages = base, []
        for i, n in enumerate(layers):
            c = base * 2**i
            blocks = [block(cin if j == 0 else c * block.expansion, c, 2 if i and j == 0 else 1) for j in range(n)]
            stages.append(nn.Sequential(*blocks))
            cin = c * block.expansion
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool, self.fc = nn.AdaptiveAvgPool2d((1, 1)), nn.Linear(cin, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(base: int = 16) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], base)


def resnet50(base: int = 16) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], base)


class EfficientNetB0(nn.Module):
    # expand ratio, kernel, stride, out channels, repeats
    CFG = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3)]
    CFG += [(6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]

    def __init__(self, width: float = 0.25, classes: int = 10):
        super().__init__()
        cin = _div8(32 * width)
        layers: list[nn.Module] = [ConvBN(3, cin, 3, 2, act=nn.SiLU)]
        for t, k, s, c, n in self.CFG:
            cout = _div8(c * width)
            for i in range(n):
                squeeze = max(1, cin // 4)
                se = lambda ce, sq=squeeze: SqueezeExcite(ce, sq, nn.SiLU, nn.Sigmoid)  # noqa: E731
                layers.append(InvertedResidual(cin, cin * t, cout, k, s if i == 0 else 1, nn.SiLU, se))
                cin = cout
        layers.append(ConvBN(cin, 1280, 1, act=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class Attention(nn.Module):
    """timm-style self-attention: one qkv projection, heads split by reshape, SDPA, output projection."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(dim, dim * 3), nn.Linear(dim, dim)

    def forward(self, x, mask=None):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(b, n, c))


class EncoderLayer(nn.Module):
    """A transformer encoder layer, pre-norm (ViT) or post-norm (BERT)."""

    def __init__(self, dim: int, heads: int, pre_norm: bool):
        super().__init__()
        self.pre_norm = pre_norm
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6 if pre_norm else 1e-12), Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6 if pre_norm else 1e-12)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x, mask=None):
        if self.pre_norm:
            x = x + self.attn(self.norm1(x), mask)
            return x + self.mlp(self.norm2(x))
        x = self.norm1(x + self.attn(x, mask))
        return self.norm2(x + self.mlp(x))


class ViT(nn.Module):
    """ViT-tiny's layout (12 pre-norm layers, 3 heads, class token, learned positions) at a smaller width."""

    def __init__(self, image: int = 32, patch: int = 8, dim: int = 48, depth: int = 12, heads: int = 3, classes=10):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[EncoderLayer(dim, heads, pre_norm=True) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


class BertEncoder(nn.Module):
    """BERT's embeddings (word, position, token type; LayerNorm), post-norm layers with an additive padding
    mask, and the tanh pooler."""

    def __init__(self, vocab: int = 100, dim: int = 64, depth: int = 2, heads: int = 2, max_len: int = 32):
        super().__init__()
        self.word, self.position = nn.Embedding(vocab, dim), nn.Embedding(max_len, dim)
        self.token_type, self.norm = nn.Embedding(2, dim), nn.LayerNorm(dim, eps=1e-12)
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, pre_norm=False) for _ in range(depth))
        self.pooler = nn.Linear(dim, dim)

    def forward(self, input_ids, attention_mask):
        positions = torch.arange(input_ids.shape[1]).unsqueeze(0)
        x = self.word(input_ids) + self.position(positions) + self.token_type(torch.zeros_like(input_ids))
        x = self.norm(x)
        mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
        for layer in self.layers:
            x = layer(x, mask)
        return x, torch.tanh(self.pooler(x[:, 0]))


def image(size: int = 32, batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def bert_inputs(batch: int = 2, seq: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 100, (batch, seq), generator=gen)
    mask = torch.ones(batch, seq, dtype=torch.int64)
    mask[0, seq - 3 :] = 0  # padding at the end of the first sequence
    return ids, mask


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Seeded weights, with BatchNorm statistics away from their (identity) defaults so folding them matters."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
        elif isinstance(m, (nn.Conv1d, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        elif isinstance(m, nn.PReLU):
            nn.init.uniform_(m.weight, -0.3, 0.5)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=1 / math.sqrt(m.in_features))
    return model.eval()


# name -> (builder, example inputs)
MODELS: dict[str, tuple[Callable[[], nn.Module], Callable[[], tuple]]] = {
    "mobilenet_v2": (MobileNetV2, lambda: (image(),)),
    "mobilenet_v3_small": (MobileNetV3Small, lambda: (image(),)),
    "resnet18": (resnet18, lambda: (image(),)),
    "resnet50": (resnet50, lambda: (image(),)),
    "efficientnet_b0": (EfficientNetB0, lambda: (image(),)),
    "vit_tiny": (ViT, lambda: (image(),)),
    "bert_encoder": (BertEncoder, bert_inputs),
}
