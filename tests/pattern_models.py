"""Small copies of common architecture patterns outside autocomp's zoo, for coverage tests.

Each factory returns a full tiny classifier (10 classes) whose channel counts are multiples
of 4 and at least 16, so that keep ratios of 0.25/0.5/0.75 give whole channel counts.
`PATTERN_INPUTS` holds the input shape (without batch) each one is built for.

* ``mobilenet_v3``: expand 1x1 -> depthwise -> squeeze-excitation -> project 1x1, hard-swish, residual add
* ``shufflenet_v2``: a stride-2 unit (two branches) and stride-1 units (chunk / split, cat, channel shuffle)
* ``densenet``: dense blocks (every layer's output concatenated to the running map) and a transition
* ``squeezenet``: fire modules (squeeze 1x1 -> expand 1x1 and 3x3, concatenated), conv classifier
* ``mlp``: Flatten -> Linear -> BatchNorm1d -> ReLU -> Linear -> ReLU -> Linear on 1x28x28 images
* ``lenet``: convolutions, then Flatten of a 4x4 map into Linear layers (each channel owns 16 features)
* ``vit_cls`` / ``vit_mean``: patch embedding, class token or mean pooling, position embedding,
  pre-norm blocks with a hand-written multi-head self-attention and an MLP
* ``swin``: torchvision's Swin in small, with copies of its ShiftedWindowAttention(V2) (q/k/v and output
  projections applied to their weights), shifted and padded windows, patch merging
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(
    in_channels: int,
    out_channels: int,
    kernel: int = 1,
    stride: int = 1,
    groups: int = 1,
    act: type[nn.Module] | None = nn.ReLU,
) -> nn.Sequential:
    layers = [
        nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


# --- 1. MobileNetV3 -------------------------------------------------------------------------------


class SqueezeExcitation(nn.Module):
    """avgpool -> 1x1 conv reduce -> ReLU -> 1x1 conv expand -> hard-sigmoid, multiplied into the map."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.relu = nn.ReLU()
        self.expand = nn.Conv2d(reduced, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.relu(self.reduce(self.pool(x)))))


class MobileNetV3Block(nn.Module):
    def __init__(self, in_channels: int, expanded: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.expand = conv_bn(in_channels, expanded, 1, act=nn.Hardswish)
        self.depthwise = conv_bn(expanded, expanded, 3, stride, groups=expanded, act=nn.Hardswish)
        self.se = SqueezeExcitation(expanded, expanded // 4)
        self.project = conv_bn(expanded, out_channels, 1, act=None)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.depthwise(self.expand(x))))
        return x + out if self.residual else out


class MobileNetV3(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16, 3, act=nn.Hardswish)
        self.blocks = nn.Sequential(
            MobileNetV3Block(16, 64, 16, 1), MobileNetV3Block(16, 64, 24, 2), MobileNetV3Block(24, 96, 24, 1)
        )
        self.last = conv_bn(24, 96, 1, act=nn.Hardswish)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(96, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.last(self.blocks(self.stem(x)))), 1))


# --- 2. ShuffleNetV2 ------------------------------------------------------------------------------


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleUnit(nn.Module):
    """Stride 1: split the channels in half, transform one half, concatenate, shuffle.
    Stride 2: two branches (depthwise + 1x1; 1x1 + depthwise + 1x1) on the whole input."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, use_chunk: bool = True) -> None:
        super().__init__()
        self.stride = stride
        self.use_chunk = use_chunk
        half = out_channels // 2
        branch_in = in_channels if stride == 2 else in_channels // 2
        if stride == 2:
            self.branch1 = nn.Sequential(
                conv_bn(in_channels, in_channels, 3, 2, groups=in_channels, act=None), conv_bn(in_channels, half, 1)
            )
        self.branch2 = nn.Sequential(
            conv_bn(branch_in, half, 1), conv_bn(half, half, 3, stride, groups=half, act=None), conv_bn(half, half, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2:
            out = torch.cat([self.branch1(x), self.branch2(x)], dim=1)
        else:
            if self.use_chunk:
                x1, x2 = x.chunk(2, dim=1)
            else:
                x1, x2 = torch.split(x, x.shape[1] // 2, dim=1)
            out = torch.cat([x1, self.branch2(x2)], dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, 24, 3)
        self.units = nn.Sequential(
            ShuffleUnit(24, 48, 2), ShuffleUnit(48, 48, 1, use_chunk=True), ShuffleUnit(48, 48, 1, use_chunk=False)
        )
        self.last = conv_bn(48, 64, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.last(self.units(self.stem(x)))).flatten(1))


# --- 3. DenseNet ----------------------------------------------------------------------------------


class DenseLayer(nn.Module):
    """BN-ReLU-conv1x1 (bottleneck) -> BN-ReLU-conv3x3 (growth), pre-activation as in DenseNet-BC."""

    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, 4 * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.norm2(self.conv1(F.relu(self.norm1(x))))))


class DenseBlock(nn.Module):
    def __init__(self, in_channels: int, growth: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(in_channels + i * growth, growth) for i in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.cat([x, layer(x)], dim=1)
        return x


class Transition(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(F.relu(self.norm(x))))


class DenseNet(nn.Module):
    def __init__(self, num_classes: int = 10, growth: int = 16) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1, bias=False)
        self.block1 = DenseBlock(32, growth, 3)  # 32 + 3 * 16 = 80
        self.transition = Transition(80, 48)
        self.block2 = DenseBlock(48, growth, 2)  # 48 + 2 * 16 = 80
        self.norm = nn.BatchNorm2d(80)
        self.fc = nn.Linear(80, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.transition(self.block1(self.stem(x))))
        return self.fc(F.adaptive_avg_pool2d(F.relu(self.norm(x)), 1).flatten(1))


# --- 4. SqueezeNet --------------------------------------------------------------------------------


class Fire(nn.Module):
    def __init__(self, in_channels: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(in_channels, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, expand, 1)
        self.expand3x3 = nn.Conv2d(squeeze, expand, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.squeeze(x))
        return torch.cat([self.relu(self.expand1x1(x)), self.relu(self.expand3x3(x))], dim=1)


class SqueezeNet(nn.Module):
    """Conv stem, fire modules, and SqueezeNet's classifier: a 1x1 conv to the classes, then global pooling."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            Fire(32, 16, 32),
            Fire(64, 16, 32),
            nn.MaxPool2d(2),
            Fire(64, 24, 48),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Conv2d(96, num_classes, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# --- ResNeXt: grouped convolutions ------------------------------------------------------------


class ResNeXtBlock(nn.Module):
    """1x1 reduce -> 3x3 grouped conv (4 groups) -> 1x1 expand, residual add."""

    def __init__(self, channels: int, width: int, groups: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn(channels, width), conv_bn(width, width, 3, groups=groups), conv_bn(width, channels, act=None)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


def resnext(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(
        conv_bn(3, 32, 3),
        ResNeXtBlock(32, 32),
        ResNeXtBlock(32, 32),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, num_classes),
    )


# --- 5. MLP ---------------------------------------------------------------------------------------


def mlp(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(28 * 28, 128),
        nn.BatchNorm1d(128),
        nn.ReLU(),
        nn.Linear(128, 64),
        nn.ReLU(),
        nn.Linear(64, num_classes),
    )


def lenet(num_classes: int = 10) -> nn.Module:
    """Convolutions, then Flatten of a 32 x 4 x 4 map into a Linear: each channel owns 16 input features."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, num_classes),
    )


# --- 6. Vision transformer ------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head self-attention written by hand: one qkv Linear, heads by reshape, softmax, proj."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, -1))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    def __init__(
        self,
        num_classes: int = 10,
        image: int = 32,
        patch: int = 4,
        dim: int = 32,
        depth: int = 2,
        num_heads: int = 4,
        hidden: int = 64,
        pool: str = "cls",
    ) -> None:
        super().__init__()
        self.pool = pool
        tokens = (image // patch) ** 2 + (1 if pool == "cls" else 0)
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        if pool == "cls":
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.blocks = nn.Sequential(*(TransformerBlock(dim, num_heads, hidden) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        if self.pool == "cls":
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.norm(self.blocks(x + self.pos_embed))
        return self.head(x[:, 0] if self.pool == "cls" else x.mean(dim=1))


# --- 7. ConvNeXt: channels-last LayerNorm and Linear between permutes, per-channel layer scale ---------


class Permute(nn.Module):
    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map, as torchvision's ConvNeXt writes it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """torchvision's CNBlock: depthwise 7x7, then LayerNorm and the MLP channels-last, scaled per channel."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, 7, padding=3, groups=dim),
            Permute([0, 2, 3, 1]),
            nn.LayerNorm(dim, eps=1e-6),
            nn.Linear(dim, 4 * dim),
            nn.GELU(),
            nn.Linear(4 * dim, dim),
            Permute([0, 3, 1, 2]),
        )
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layer_scale * self.block(x)


class ConvNeXt(nn.Module):
    def __init__(self, num_classes: int = 10, dims: tuple[int, int] = (16, 32)) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), LayerNorm2d(dims[0]))
        self.stage1 = nn.Sequential(ConvNeXtBlock(dims[0]), ConvNeXtBlock(dims[0]))
        self.downsample = nn.Sequential(LayerNorm2d(dims[0]), nn.Conv2d(dims[0], dims[1], 2, 2))
        self.stage2 = ConvNeXtBlock(dims[1])
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), LayerNorm2d(dims[1]), nn.Flatten(1), nn.Linear(dims[1], num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage2(self.downsample(self.stage1(self.stem(x)))))


# --- 8. BERT: separate q, k, v, heads by view(..., -1, head size), output dense in a sibling module -------


class BertSelfAttention(nn.Module):
    """Hugging Face's eager BertSelfAttention: the head count follows from the width (view with -1)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.num_attention_heads = heads
        self.attention_head_size = dim // heads
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (*x.shape[:-1], -1, self.attention_head_size)
        q, k, v = (layer(x).view(shape).transpose(1, 2) for layer in (self.query, self.key, self.value))
        scores = torch.matmul(q, k.transpose(-1, -2)) / self.attention_head_size**0.5
        context = torch.matmul(scores.softmax(dim=-1), v).transpose(1, 2)
        return context.reshape(*x.shape[:-1], -1)


class BertLayer(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.attention = BertSelfAttention(dim, heads)
        self.attention_output = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.intermediate = nn.Linear(dim, hidden)
        self.output = nn.Linear(hidden, dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.attention_output(self.attention(x)))
        return self.norm2(x + self.output(nn.functional.gelu(self.intermediate(x))))


class BertOnPatches(nn.Module):
    """A BERT encoder on 4x4 patches, mean-pooled (no position embedding: it runs at any resolution)."""

    def __init__(self, num_classes: int = 10, dim: int = 32, heads: int = 4, hidden: int = 64, depth: int = 2) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, 4)
        self.layers = nn.Sequential(*(BertLayer(dim, heads, hidden) for _ in range(depth)))
        self.classifier = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.layers(self.embed(x).flatten(2).transpose(1, 2)).mean(dim=1))


# --- 9. torchvision's ViT: nn.MultiheadAttention in each block, patches reshaped to hidden_dim -------------


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.self_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.self_attention(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class MultiheadViT(nn.Module):
    def __init__(self, num_classes: int = 10, dim: int = 32, heads: int = 4, hidden: int = 64, depth: int = 2) -> None:
        super().__init__()
        self.hidden_dim = dim  # read in forward, as torchvision's ViT does: pruning must lower it
        self.conv_proj = nn.Conv2d(3, dim, 4, 4)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, 65, dim) * 0.02)
        self.layers = nn.Sequential(*(EncoderBlock(dim, heads, hidden) for _ in range(depth)))
        self.ln = nn.LayerNorm(dim)
        self.heads = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_proj(x).reshape(x.shape[0], self.hidden_dim, -1).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embedding
        return self.heads(self.ln(self.layers(x))[:, 0])


# --- 10. torchvision's Swin: channels-last windows and a patch merging that slices height and width ----------


class WindowsAndPatchMerging(nn.Module):
    def __init__(self, num_classes: int = 10, dim: int = 24, window: int = 4) -> None:
        super().__init__()
        self.window = window
        self.embed = nn.Conv2d(3, dim, 4, 4)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.head = nn.Linear(2 * dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).permute(0, 2, 3, 1)  # (B, H, W, C)
        b, h, w, c = x.shape
        s = self.window
        windows = x.view(b, h // s, s, w // s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, s * s, c)
        windows = windows + self.mlp(windows)
        x = windows.view(b, h // s, w // s, s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        x = torch.cat([x[..., 0::2, 0::2, :], x[..., 1::2, 0::2, :], x[..., 0::2, 1::2, :], x[..., 1::2, 1::2, :]], -1)
        return self.head(self.reduction(x).mean(dim=(1, 2)))


# --- 11. torchvision's Swin blocks: ShiftedWindowAttention(V2) applies qkv and proj to their weights -------------


def shifted_window_attention(
    input: torch.Tensor,
    qkv_weight: torch.Tensor,
    proj_weight: torch.Tensor,
    relative_position_bias: torch.Tensor,
    window_size: list[int],
    num_heads: int,
    shift_size: list[int],
    attention_dropout: float = 0.0,
    dropout: float = 0.0,
    qkv_bias: torch.Tensor | None = None,
    proj_bias: torch.Tensor | None = None,
    logit_scale: torch.Tensor | None = None,
    training: bool = True,
) -> torch.Tensor:
    """torchvision 0.29's ``shifted_window_attention``, as it is (comments cut)."""
    B, H, W, C = input.shape
    pad_r = (window_size[1] - W % window_size[1]) % window_size[1]
    pad_b = (window_size[0] - H % window_size[0]) % window_size[0]
    x = F.pad(input, (0, 0, 0, pad_r, 0, pad_b))
    _, pad_H, pad_W, _ = x.shape
    shift_size = shift_size.copy()
    if window_size[0] >= pad_H:
        shift_size[0] = 0
    if window_size[1] >= pad_W:
        shift_size[1] = 0
    if sum(shift_size) > 0:
        x = torch.roll(x, shifts=(-shift_size[0], -shift_size[1]), dims=(1, 2))
    num_windows = (pad_H // window_size[0]) * (pad_W // window_size[1])
    x = x.view(B, pad_H // window_size[0], window_size[0], pad_W // window_size[1], window_size[1], C)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B * num_windows, window_size[0] * window_size[1], C)
    if logit_scale is not None and qkv_bias is not None:
        qkv_bias = qkv_bias.clone()
        length = qkv_bias.numel() // 3
        qkv_bias[length : 2 * length].zero_()
    qkv = F.linear(x, qkv_weight, qkv_bias)
    qkv = qkv.reshape(x.size(0), x.size(1), 3, num_heads, C // num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    if logit_scale is not None:
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        logit_scale = torch.clamp(logit_scale, max=math.log(100.0)).exp()
        attn = attn * logit_scale
    else:
        q = q * (C // num_heads) ** -0.5
        attn = q.matmul(k.transpose(-2, -1))
    attn = attn + relative_position_bias
    if sum(shift_size) > 0:
        attn_mask = x.new_zeros((pad_H, pad_W))
        h_slices = ((0, -window_size[0]), (-window_size[0], -shift_size[0]), (-shift_size[0], None))
        w_slices = ((0, -window_size[1]), (-window_size[1], -shift_size[1]), (-shift_size[1], None))
        count = 0
        for h in h_slices:
            for w in w_slices:
                attn_mask[h[0] : h[1], w[0] : w[1]] = count
                count += 1
        attn_mask = attn_mask.view(pad_H // window_size[0], window_size[0], pad_W // window_size[1], window_size[1])
        attn_mask = attn_mask.permute(0, 2, 1, 3).reshape(num_windows, window_size[0] * window_size[1])
        attn_mask = attn_mask.unsqueeze(1) - attn_mask.unsqueeze(2)
        attn_mask = attn_mask.masked_fill(attn_mask != 0, -100.0).masked_fill(attn_mask == 0, 0.0)
        attn = attn.view(x.size(0) // num_windows, num_windows, num_heads, x.size(1), x.size(1))
        attn = attn + attn_mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, num_heads, x.size(1), x.size(1))
    attn = F.softmax(attn, dim=-1)
    attn = F.dropout(attn, p=attention_dropout, training=training)
    x = attn.matmul(v).transpose(1, 2).reshape(x.size(0), x.size(1), C)
    x = F.linear(x, proj_weight, proj_bias)
    x = F.dropout(x, p=dropout, training=training)
    x = x.view(B, pad_H // window_size[0], pad_W // window_size[1], window_size[0], window_size[1], C)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B, pad_H, pad_W, C)
    if sum(shift_size) > 0:
        x = torch.roll(x, shifts=(shift_size[0], shift_size[1]), dims=(1, 2))
    return x[:, :H, :W, :].contiguous()


class ShiftedWindowAttention(nn.Module):
    """torchvision's ShiftedWindowAttention: the same attributes, buffers and forward."""

    def __init__(self, dim: int, window_size: list[int], shift_size: list[int], num_heads: int) -> None:
        super().__init__()
        self.window_size, self.shift_size, self.num_heads = window_size, shift_size, num_heads
        self.attention_dropout, self.dropout = 0.0, 0.0
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.define_relative_position_bias_table()
        self.define_relative_position_index()

    def define_relative_position_bias_table(self) -> None:
        size = (2 * self.window_size[0] - 1) * (2 * self.window_size[1] - 1)
        self.relative_position_bias_table = nn.Parameter(torch.randn(size, self.num_heads) * 0.02)

    def define_relative_position_index(self) -> None:
        coords = torch.stack(
            torch.meshgrid(torch.arange(self.window_size[0]), torch.arange(self.window_size[1]), indexing="ij")
        )
        coords_flatten = torch.flatten(coords, 1)
        relative_coords = (coords_flatten[:, :, None] - coords_flatten[:, None, :]).permute(1, 2, 0).contiguous()
        relative_coords[:, :, 0] += self.window_size[0] - 1
        relative_coords[:, :, 1] += self.window_size[1] - 1
        relative_coords[:, :, 0] *= 2 * self.window_size[1] - 1
        self.register_buffer("relative_position_index", relative_coords.sum(-1).flatten())

    def get_relative_position_bias(self) -> torch.Tensor:
        return _get_relative_position_bias(
            self.relative_position_bias_table, self.relative_position_index, self.window_size
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return shifted_window_attention(
            x,
            self.qkv.weight,
            self.proj.weight,
            self.get_relative_position_bias(),
            self.window_size,
            self.num_heads,
            shift_size=self.shift_size,
            attention_dropout=self.attention_dropout,
            dropout=self.dropout,
            qkv_bias=self.qkv.bias,
            proj_bias=self.proj.bias,
            training=self.training,
        )


class ShiftedWindowAttentionV2(ShiftedWindowAttention):
    """torchvision's ShiftedWindowAttentionV2: cosine attention, the bias from a small MLP."""

    def __init__(self, dim: int, window_size: list[int], shift_size: list[int], num_heads: int) -> None:
        super().__init__(dim, window_size, shift_size, num_heads)
        self.logit_scale = nn.Parameter(torch.log(10 * torch.ones((num_heads, 1, 1))))
        self.cpb_mlp = nn.Sequential(nn.Linear(2, 512), nn.ReLU(inplace=True), nn.Linear(512, num_heads, bias=False))
        length = self.qkv.bias.numel() // 3
        self.qkv.bias[length : 2 * length].data.zero_()

    def define_relative_position_bias_table(self) -> None:
        h = torch.arange(-(self.window_size[0] - 1), self.window_size[0], dtype=torch.float32)
        w = torch.arange(-(self.window_size[1] - 1), self.window_size[1], dtype=torch.float32)
        table = torch.stack(torch.meshgrid([h, w], indexing="ij")).permute(1, 2, 0).contiguous().unsqueeze(0)
        table[:, :, :, 0] /= self.window_size[0] - 1
        table[:, :, :, 1] /= self.window_size[1] - 1
        table *= 8
        self.register_buffer("relative_coords_table", torch.sign(table) * torch.log2(torch.abs(table) + 1.0) / 3.0)

    def get_relative_position_bias(self) -> torch.Tensor:
        table = self.cpb_mlp(self.relative_coords_table).view(-1, self.num_heads)
        return 16 * torch.sigmoid(_get_relative_position_bias(table, self.relative_position_index, self.window_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return shifted_window_attention(
            x,
            self.qkv.weight,
            self.proj.weight,
            self.get_relative_position_bias(),
            self.window_size,
            self.num_heads,
            shift_size=self.shift_size,
            attention_dropout=self.attention_dropout,
            dropout=self.dropout,
            qkv_bias=self.qkv.bias,
            proj_bias=self.proj.bias,
            logit_scale=self.logit_scale,
            training=self.training,
        )


def _get_relative_position_bias(table: torch.Tensor, index: torch.Tensor, window_size: list[int]) -> torch.Tensor:
    n = window_size[0] * window_size[1]
    return table[index].view(n, n, -1).permute(2, 0, 1).contiguous().unsqueeze(0)


class SwinBlock(nn.Module):
    def __init__(self, attention: ShiftedWindowAttention, dim: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), attention
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm, self.reduction = nn.LayerNorm(4 * dim), nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-3:-1]
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[..., 0::2, 0::2, :], x[..., 1::2, 0::2, :], x[..., 0::2, 1::2, :], x[..., 1::2, 1::2, :]], -1)
        return self.reduction(self.norm(x))


class TinySwin(nn.Module):
    """torchvision's Swin in small: 4x4 patches (8x8 of 24 channels), windows of 4, unshifted, then shifted by 2 in a V2
    block (cosine attention, a 3-d parameter before the patch merging's concatenation), patch merging to 4x4 of 48
    channels, a block in windows of 3: padded to 6x6, shifted by 1. Four heads in every block (whole heads at keeps
    of 1/4)."""

    def __init__(self, num_classes: int = 10, dim: int = 24) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, dim, 4, 4), Permute([0, 2, 3, 1]), nn.LayerNorm(dim)),
            nn.Sequential(
                SwinBlock(ShiftedWindowAttention(dim, [4, 4], [0, 0], 4), dim),
                SwinBlock(ShiftedWindowAttentionV2(dim, [4, 4], [2, 2], 4), dim),
            ),
            PatchMerging(dim),
            nn.Sequential(SwinBlock(ShiftedWindowAttention(2 * dim, [3, 3], [1, 1], 4), 2 * dim)),
        )
        self.norm = nn.LayerNorm(2 * dim)
        self.head = nn.Linear(2 * dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.features(x)).permute(0, 3, 1, 2).mean(dim=(2, 3)))


PATTERN_MODELS: dict[str, Callable[[], nn.Module]] = {
    "mobilenet_v3": MobileNetV3,
    "shufflenet_v2": ShuffleNetV2,
    "densenet": DenseNet,
    "squeezenet": SqueezeNet,
    "resnext": resnext,
    "mlp": mlp,
    "lenet": lenet,
    "vit_cls": lambda: VisionTransformer(pool="cls"),
    "vit_mean": lambda: VisionTransformer(pool="mean"),
    "convnext": ConvNeXt,
    "bert": BertOnPatches,
    "vit_multihead": MultiheadViT,
    "swin_windows": WindowsAndPatchMerging,
    "swin": TinySwin,
}

PATTERN_INPUTS: dict[str, tuple[int, ...]] = {
    name: (1, 28, 28) if name in ("mlp", "lenet") else (3, 32, 32) for name in PATTERN_MODELS
}


def example_input(name: str, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """A random input of the shape ``PATTERN_MODELS[name]`` expects."""
    return torch.randn(batch, *PATTERN_INPUTS[name], generator=torch.Generator().manual_seed(seed))


# --- Models autocomp must refuse ------------------------------------------------------------------


class DataDependentBranch(nn.Module):
    """Which layer runs depends on the input's values: one trace cannot describe the model."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.gate = Gate()
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.gate(self.conv(x)).mean(dim=(2, 3)))


class Gate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(16, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.mean() > 0:
            return self.a(x)
        return self.b(x)


class SharedConv(nn.Module):
    """One conv applied twice (weight sharing): its channels cannot be pruned for one call only."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.shared = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.shared(torch.relu(self.shared(torch.relu(x))))
        return self.fc(x.mean(dim=(2, 3)))


class SharedNorm(nn.Module):
    """One BatchNorm after two different convs: it would couple channels that are not coupled."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.norm = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.norm(self.conv1(x)))
        x = torch.relu(self.norm(self.conv2(x)))
        return self.fc(x.mean(dim=(2, 3)))


UNTRACEABLE_MODELS: dict[str, tuple[Callable[[], nn.Module], str]] = {
    "data_dependent_branch": (DataDependentBranch, "gate"),
    "shared_conv": (SharedConv, "shared"),
    "shared_norm": (SharedNorm, "norm"),
}
"""name -> (factory, the module the error must name); all take 3x32x32 inputs."""
