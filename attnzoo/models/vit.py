"""Vision Transformer (Dosovitskiy et al. 2021): an image as a sequence of patches.

    z_0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos       # N = (H/P)(W/P) flattened P x P patches
    z_l = Block_l(z_{l-1})                                # bidirectional self-attention + FFN, pre-norm
    y   = W_head LayerNorm(z_L^0)                         # the class token's final state

Shape legend: B batch, C channels, H x W image, P patch size, N patches, ``dim`` width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import ConfigMixin
from ..core import validate as V
from ..core.dropout import Dropout
from ..mechanisms.transformer import BlockConfig, SelfAttentionBlock


@V.checked(positions=V.one_of(("learned", "rope", "alibi", "t5", "relative")))
@dataclass
class ViTConfig(ConfigMixin):
    image_size: int = 28  # square images
    channels: int = 1
    patch_size: int = 4  # P; image_size must be a multiple
    classes: int = 10
    dim: int = 128
    num_heads: int = 4
    num_kv_heads: int | None = None
    layers: int = 6
    ffn_dim: int | None = None
    dropout: float = 0.1
    positions: str = "learned"  # learned absolute (the paper) | rope | alibi | t5 | relative (1-D over patches)

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2




class ViT(nn.Module):
    def __init__(self, config: ViTConfig):
        super().__init__()
        c = self.config = config
        self.patch_embed = nn.Conv2d(c.channels, c.dim, kernel_size=c.patch_size, stride=c.patch_size)  # E
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim))
        learned = c.positions == "learned"
        self.pos = nn.Parameter(torch.randn(1, c.num_patches + 1, c.dim) * 0.02) if learned else None
        block = BlockConfig(dim=c.dim, num_heads=c.num_heads, num_kv_heads=c.num_kv_heads, ffn_dim=c.ffn_dim,
                            dropout=c.dropout, norm_first=True, positions=None if learned else c.positions)
        self.blocks = nn.ModuleList(SelfAttentionBlock(block) for _ in range(c.layers))
        self.norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.classes)
        self.drop = Dropout(c.dropout)

    def forward(self, images: Tensor, need_weights: bool = False) -> tuple[Tensor, list[Tensor]]:
        """images (B, C, H, W) -> logits (B, classes), per-layer (B, heads, N+1, N+1) weights if asked."""
        c = self.config
        V.check_tensor("images", images)
        if not torch.is_floating_point(images):
            raise TypeError(f"images must be a floating-point tensor in [0, 1], got dtype {images.dtype}; "
                            "pass images.float() / 255 for 8-bit pixels")
        if images.dim() != 4 or images.shape[1:] != (c.channels, c.image_size, c.image_size):
            raise ValueError(f"images must have shape (B, {c.channels}, {c.image_size}, {c.image_size}), "
                             f"got {V.fmt_shape(images.shape)}")
        x = self.patch_embed(images).flatten(2).transpose(1, 2)  # (B, N, dim)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, N+1, dim)
        if self.pos is not None:
            x = x + self.pos
        x = self.drop(x)
        weights = []
        for block in self.blocks:
            out = block(x, need_weights=need_weights)
            x = out.output
            if need_weights:
                weights.append(out.weights["self"])
        return self.head(self.norm(x[:, 0])), weights

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
