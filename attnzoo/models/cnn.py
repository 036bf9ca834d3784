"""A small CNN for image classification, with an attention block after each stage.

    stage_s(x) = pool(block_s([conv3x3 -> BatchNorm -> ReLU]^depth_s (x)))   # pool: 2x2 max, not after the last
    y          = W_head dropout(GAP(stage_S(... stage_1(images))))

The block is any layer over a feature map, (B, C, H, W) -> (B, C, H, W),
looked up by name (:data:`BLOCKS`; a layer class passed in, as timm's
``attn_layer``): ``none``, ``se`` (Hu 2018), ``cbam`` (Woo 2018), ``nonlocal``
(Wang 2018; after the later stages only by default, where the grid is small
enough for attention over all its positions). ``aaconv`` (Bello 2019) is a
convolution, not a block after one, so it takes the place of the stage's
last 3x3 convolution, as the paper augments a ResNet's convolutions:

    stage_s(x) = pool(ReLU(BN(AAConv([conv3x3 -> BN -> ReLU]^(depth_s - 1) (x)))))

(later stages only by default, like ``nonlocal``). The same network with
``none`` is the baseline that measures what each block adds.

Shape legend: B batch, C channels, H x W grid (28 x 28 for Fashion-MNIST,
halved after each stage but the last), ``classes`` outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..config import ConfigMixin
from ..core import validate as V
from ..core.dropout import Dropout
from ..mechanisms.base import VisualOutput

#: --attention name -> registry name of the block (None: no block)
BLOCKS: dict[str, str | None] = {"none": None, "se": "se", "cbam": "cbam", "nonlocal": "nonlocal",
                                 "aaconv": "aaconv"}
#: blocks that replace the stage's last convolution instead of following it
REPLACES_CONV = {"aaconv"}
#: stages that get a block when ``attention_stages`` is None: attention over all positions costs N^2, so the
#: non-local block and the augmented convolution skip the first, full-resolution stage (as Wang 2018 puts its
#: blocks in the later stages; 784 positions would cost 28^4 weights per head and image)
DEFAULT_STAGES: dict[str, Callable[[int], list[int]]] = {"nonlocal": lambda n: list(range(1, n)),
                                                         "aaconv": lambda n: list(range(1, n))}


def check_stages(widths: list[int], depths: list[int]) -> None:
    """One positive width and depth per stage, or a ValueError naming both lists."""
    if not widths or len(widths) != len(depths):
        raise ValueError(f"widths and depths must list one value per stage, got widths {widths} and depths {depths}")
    for name, values in (("widths", widths), ("depths", depths)):
        for v in values:
            V.check_positive(name, v)


@V.checked(depth=V.COUNT)
def conv_bn_relu(in_channels: int, width: int, depth: int) -> list[nn.Module]:
    """``depth`` x [conv3x3 (no bias: BatchNorm follows) -> BatchNorm -> ReLU], (B, C_in, H, W) -> (B, width, H, W)."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Conv2d(in_channels if i == 0 else width, width, 3, padding=1, bias=False),
                   nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
    return layers


def resolve_block(name: str) -> Callable[..., nn.Module] | None:
    """The layer class (or factory) ``channels, **options -> nn.Module`` of ``--attention name``; None for none.

    For ``aaconv``: :class:`AugmentedConvUnit`, ``(in_channels, channels, size, **options)``."""
    V.check_choice("attention (the cnn's block)", name, BLOCKS)
    registry_name = BLOCKS[name]
    if registry_name is None:
        return None
    if name in REPLACES_CONV:
        return AugmentedConvUnit
    from ..registry import get

    return get(registry_name).cls


class AugmentedConvUnit(nn.Module):
    """ReLU(BN(AAConv(x))): an attention-augmented 3x3 convolution (Bello 2019) in a conv-BN-ReLU's place.

    x (B, C_in, H, W) -> (B, C, H, W); with ``need_weights`` a :class:`VisualOutput` whose ``positions``
    (B, H*W, H*W) are the self-attention weights averaged over the heads. ``size`` is the stage's grid side,
    which the 2-D relative embeddings must cover; ``options`` go to
    :class:`~attnzoo.mechanisms.convolutional.AugmentedConv2d` (``num_heads``, ``dk``, ``dv``, ``relative``).
    """

    @V.checked()
    def __init__(self, in_channels: int, channels: int, size: int, **options):
        super().__init__()
        from ..registry import get

        options = {"max_size": (size, size), **options}
        self.conv = get("aaconv").cls(in_channels, channels, 3, bias=False, **options)
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor, need_weights: bool = False) -> Tensor | VisualOutput:
        out = self.conv(x, need_weights=need_weights)  # AttentionOutput((B, C, H, W), (B, N, P, P) or None)
        y = torch.relu(self.norm(out.output))
        if not need_weights:
            return y
        return VisualOutput(y, positions=out.weights.mean(1))  # (B, P, P): averaged over the N heads


@V.checked(attention=V.one_of(BLOCKS))
@dataclass
class CNNConfig(ConfigMixin):
    image_size: int = 28  # square images; any size works (global average pooling at the end)
    channels: int = 1  # input channels (1: grey)
    classes: int = 10
    widths: list[int] = field(default_factory=lambda: [32, 64, 128])  # channels of each stage
    depths: list[int] = field(default_factory=lambda: [1, 2, 2])  # conv layers of each stage (one at 28x28: cheap)
    attention: str = "none"  # the block after each stage's convolutions: none | se | cbam | nonlocal | aaconv
    # stages (0-based) that get a block; None: all (nonlocal, aaconv: all but 0)
    attention_stages: list[int] | None = None
    attention_options: dict = field(default_factory=dict)  # the block's own options, e.g. {"reduction": 8}
    dropout: float = 0.1  # before the classifier
    channels_last: bool = True  # NHWC weights: oneDNN's convolutions run ~1.4x faster on a CPU (the same on a GPU)

    def __post_init__(self):
        check_stages(self.widths, self.depths)
        for s in self.stages_with_block():
            if not 0 <= s < len(self.widths):
                raise ValueError(f"attention_stages holds {s}, but the network has stages 0..{len(self.widths) - 1}")

    def stages_with_block(self) -> list[int]:
        if self.attention == "none":
            return []
        if self.attention_stages is not None:
            return list(self.attention_stages)
        return DEFAULT_STAGES.get(self.attention, lambda n: list(range(n)))(len(self.widths))


class CNN(nn.Module):
    """Stages of conv3x3-BatchNorm-ReLU, an attention block after each (see the module docstring), GAP, linear.

    ``block`` overrides the layer class that ``config.attention`` names: any ``block(channels, **options)``
    whose forward maps (B, C, H, W) to (B, C, H, W) (and, to be drawn, takes ``need_weights``).
    """

    def __init__(self, config: CNNConfig, block: Callable[..., nn.Module] | None = None):
        super().__init__()
        c = self.config = config
        replaces_conv = block is None and c.attention in REPLACES_CONV
        block = block if block is not None else resolve_block(c.attention)
        with_block = set(c.stages_with_block()) if block is not None else set()
        self.stages = nn.ModuleList()
        self.blocks = nn.ModuleDict()  # stage index (str) -> block
        cin, size = c.channels, c.image_size
        for s, (width, depth) in enumerate(zip(c.widths, c.depths)):
            swap = replaces_conv and s in with_block  # aaconv: the block is the stage's last convolution
            layers = conv_bn_relu(cin, width, depth - 1 if swap else depth)
            self.stages.append(nn.Sequential(*layers))  # empty (the identity) for a 1-conv stage that swaps
            if swap:
                self.blocks[str(s)] = block(cin if depth == 1 else width, width, size, **c.attention_options)
            elif s in with_block:
                self.blocks[str(s)] = block(width, **c.attention_options)
            cin = width
            size = size // 2 if s < len(c.widths) - 1 else size  # the grid side of the next stage
        self.pool = nn.MaxPool2d(2)
        self.drop = Dropout(c.dropout)
        self.head = nn.Linear(cin, c.classes)
        if c.channels_last:
            self.to(memory_format=torch.channels_last)  # the convolutions' outputs follow their weights' format

    def forward(self, images: Tensor, need_weights: bool = False) -> tuple[Tensor, list[VisualOutput]]:
        """images (B, C, H, W) -> logits (B, classes), and each block's maps (in stage order) if asked."""
        c = self.config
        V.check_tensor("images", images)
        if not torch.is_floating_point(images):
            raise TypeError(f"images must be a floating-point tensor in [0, 1], got dtype {images.dtype}; "
                            "pass images.float() / 255 for 8-bit pixels")
        if images.dim() != 4 or images.shape[1] != c.channels:
            raise ValueError(f"images must have shape (B, {c.channels}, H, W), got {V.fmt_shape(images.shape)}")
        x = images
        maps: list[VisualOutput] = []
        last = len(self.stages) - 1
        for s, stage in enumerate(self.stages):
            x = stage(x)  # (B, C_s, H_s, W_s)
            if str(s) in self.blocks:
                if need_weights:
                    out = self.blocks[str(s)](x, need_weights=True)
                    x = out.output
                    maps.append(out)
                else:
                    x = self.blocks[str(s)](x)
            if s < last:
                x = self.pool(x)  # (B, C_s, H_s / 2, W_s / 2)
        features = x.mean((2, 3))  # (B, C): global average pooling
        return self.head(self.drop(features)), maps

    def block_stages(self) -> list[int]:
        """The stages whose output goes through a block, in order (one entry per returned map)."""
        return sorted(int(s) for s in self.blocks)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
