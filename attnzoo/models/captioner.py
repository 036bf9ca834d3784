"""An image captioner: a small CNN encoder and an LSTM decoder with soft visual attention (Xu 2015).

Encoder: stages of conv3x3-BatchNorm-ReLU (2x2 max-pool after each but the
last) turn an image (B, C_in, H, W) into a feature grid (B, D, h, w), read
row by row as L = h*w annotation vectors a_i (B, L, D) (:func:`flatten_grid`),
plus a learned embedding of each grid cell (``positions=True``; not in the
paper, whose VGG features carry where they are: a decoder reading left to
right must know where it read last).

Decoder, one step (Show, Attend and Tell: attend with the previous state, then update)::

    h_0, c_0 = tanh(f_init_h(mean_i a_i)), tanh(f_init_c(mean_i a_i))
    z_t, alpha_t = attn(h_{t-1}, a)          # soft_spatial: z_t = beta_t sum_i alpha_ti a_i
    h_t, c_t     = LSTM([E y_{t-1}; z_t], (h_{t-1}, c_{t-1}))
    p_t          = softmax(L_o(E y_{t-1} + L_h h_t + L_z z_t))   # the paper's deep output (eq. 7)

Loss: cross-entropy of the words plus Xu's doubly stochastic penalty
lambda sum_i (tau - sum_t alpha_ti)^2 (eq. 14), summed over the captions and
divided by the number of words (``penalty_weight`` = lambda; 0 drops it).
The paper's tau is 1; here tau = T_b / L, an even spread of the caption's T_b
steps over the L cells: the gradient is the same (each step's weights sum to
1, so the constant cancels through the softmax), and the loss reads as
cross-entropy plus how unevenly the caption covered the grid instead of
carrying a constant of about L.

Any step-wise mechanism fills the attention slot (``attention``; the
default ``soft_spatial`` is the paper's, with its gate beta); the keys and
values are the annotation vectors. ``encode``/``step`` follow
:mod:`attnzoo.models.decoding`'s contract, so greedy and beam search run
unchanged: ``src`` is the images, ``src_lengths`` L for every image.

Shape legend: B batch, C_in image channels, H x W image, h x w feature grid,
L = h*w annotation vectors, D annotation size (the last stage's width), T
caption steps, V words (specials included), E word embedding size, Dh
decoder state size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ConfigMixin
from ..core import validate as V
from ..core.dropout import Dropout
from ..mechanisms.base import AttentionState
from ..mechanisms.visual import doubly_stochastic_penalty, flatten_grid
from ..registry import create as create_attention
from ..registry import get_step_wise, mechanisms
from .cnn import check_stages, conv_bn_relu
from .rnn_seq2seq import Memory

__all__ = ["Captioner", "CaptionerConfig", "CaptionerOutput", "CaptionState"]


@V.checked(penalty_weight=V.NONNEGATIVE, attention=V.one_of(lambda: [i.name for i in mechanisms()]))
@dataclass
class CaptionerConfig(ConfigMixin):
    vocab: int  # output words, specials included
    image_height: int = 32  # the images' size: the grid's position embeddings are learned for it
    image_width: int = 160
    channels: int = 1  # image channels (1: grey)
    widths: list[int] = field(default_factory=lambda: [32, 64, 128])  # channels of each encoder stage; D = the last
    depths: list[int] = field(default_factory=lambda: [1, 1, 2])  # conv layers per stage (one at full size: cheap)
    positions: bool = True  # learned embedding of each grid cell added to a_i, so the decoder knows where it reads
    embed_dim: int = 64  # word embedding E (the deep output's size too, as in the paper)
    decoder_dim: int = 256  # LSTM state Dh: the attention's query
    attention: str = "soft_spatial"  # any step-wise mechanism in the registry
    attention_hidden: int | None = 128  # A, the additive score's hidden size (None: the mechanism's default)
    attention_options: dict | None = None  # extra keyword options for the mechanism (e.g. {"gate": false})
    dropout: float = 0.1  # on word embeddings and before the output layer
    penalty_weight: float = 1.0  # lambda of the doubly stochastic penalty (Xu eq. 14); 0: plain cross-entropy
    channels_last: bool = True  # NHWC convolution weights: oneDNN runs them ~1.4x faster on a CPU

    def __post_init__(self):
        check_stages(self.widths, self.depths)
        get_step_wise(self.attention)
        h, w = self.grid_size()
        if h < 1 or w < 1:
            raise ValueError(f"a {self.image_height} x {self.image_width} image leaves no feature grid after "
                             f"{len(self.widths) - 1} 2x2 poolings; use fewer stages or larger images")

    def grid_size(self) -> tuple[int, int]:
        """(h, w) of the feature grid: halved (floor) after every stage but the last."""
        h, w = self.image_height, self.image_width
        for _ in range(len(self.widths) - 1):
            h, w = h // 2, w // 2
        return h, w


@dataclass
class CaptionState:
    """What one decoder step hands the next: the LSTM's h and c (B, Dh) and the attention's state."""

    h: Tensor
    c: Tensor
    attention: AttentionState

    def index_select(self, index: Tensor) -> CaptionState:
        return CaptionState(self.h.index_select(0, index), self.c.index_select(0, index),
                            self.attention.index_select(index))


@dataclass
class CaptionerOutput:
    """A teacher-forced pass: ``logits`` (B, T, V), ``weights`` alpha (B, T, L), ``gates`` beta (B, T) or None."""

    logits: Tensor
    weights: Tensor
    gates: Tensor | None


class Captioner(nn.Module):
    """CNN encoder, LSTM decoder with soft attention over the feature grid (Xu et al. 2015, Show, Attend and Tell).

    See the module docstring for the equations. ``forward(images, tgt_in)`` is
    the teacher-forced pass; ``encode(images)`` and ``step(prev_tokens, state,
    memory)`` decode one word at a time (greedy and beam search in
    :mod:`attnzoo.models.decoding`); ``loss(images, tgt)`` adds the doubly
    stochastic penalty to the cross-entropy.
    """

    @V.checked(pad_id=V.COUNT, bos_id=V.COUNT, eos_id=V.COUNT)
    def __init__(self, config: CaptionerConfig, pad_id: int = 0, bos_id: int = 1, eos_id: int = 2):
        super().__init__()
        c = self.config = config
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        stages, cin = [], c.channels
        for s, (width, depth) in enumerate(zip(c.widths, c.depths)):
            stages += conv_bn_relu(cin, width, depth)
            cin = width
            if s < len(c.widths) - 1:
                stages.append(nn.MaxPool2d(2))
        self.encoder = nn.Sequential(*stages)
        D = self.annotation_dim = cin
        h, w = c.grid_size()
        # (L, D); std 0.3, of the order of the ReLU features it is added to, so positions tell apart from the start
        self.grid_positions = nn.Parameter(torch.randn(h * w, D) * 0.3) if c.positions else None
        self.init_h = nn.Linear(D, c.decoder_dim)  # f_init_h
        self.init_c = nn.Linear(D, c.decoder_dim)  # f_init_c
        self.embed = nn.Embedding(c.vocab, c.embed_dim, padding_idx=pad_id)  # E
        self.attention = create_attention(c.attention, query_dim=c.decoder_dim, key_dim=D, value_dim=D,
                                          **({} if c.attention_hidden is None else {"hidden_dim": c.attention_hidden}),
                                          **(c.attention_options or {}))
        self.cell = nn.LSTMCell(c.embed_dim + D, c.decoder_dim)
        self.out_h = nn.Linear(c.decoder_dim, c.embed_dim)  # L_h
        self.out_z = nn.Linear(D, c.embed_dim)  # L_z
        self.generator = nn.Linear(c.embed_dim, c.vocab)  # L_o
        self.drop = Dropout(c.dropout)
        if c.channels_last:
            self.encoder.to(memory_format=torch.channels_last)

    # ------------------------------------------------------------------ encoder
    def check_images(self, images: Tensor) -> None:
        c = self.config
        V.check_tensor("images", images)
        if not torch.is_floating_point(images):
            raise TypeError(f"images must be a floating-point tensor in [0, 1], got dtype {images.dtype}; "
                            "pass images.float() / 255 for 8-bit pixels")
        want = (c.channels, c.image_height, c.image_width)
        if images.dim() != 4 or tuple(images.shape[1:]) != want:
            raise ValueError(f"images must have shape (B, {c.channels}, {c.image_height}, {c.image_width}) "
                             f"(B, C_in, H, W) as configured, got {V.fmt_shape(images.shape)}")

    def annotations(self, images: Tensor) -> Tensor:
        """images (B, C_in, H, W) -> the annotation vectors a_i (B, L, D), position embeddings added."""
        self.check_images(images)
        features = self.encoder(images)  # (B, D, h, w)
        a = flatten_grid(features).contiguous()  # (B, L, D), row by row
        if self.grid_positions is not None:
            a = a + self.grid_positions.to(a.dtype)
        return a

    def encode(self, images: Tensor, src_lengths: Tensor | None = None) -> tuple[Memory, CaptionState]:
        """images (B, C_in, H, W) -> memory (the L annotation vectors, all real) and the decoder's first state.

        ``src_lengths`` is what :mod:`attnzoo.models.decoding` passes: L for every image (or None)."""
        a = self.annotations(images)  # (B, L, D)
        B, L, _ = a.shape
        if src_lengths is not None:
            V.check_tensor("src_lengths", src_lengths)
            if tuple(src_lengths.shape) != (B,) or bool((src_lengths != L).any()):
                raise ValueError(f"src_lengths must be ({B},) all equal to L = {L} (every grid cell is real), "
                                 f"got shape {V.fmt_shape(src_lengths.shape)} with values {src_lengths.tolist()[:8]}")
        mask = torch.ones(B, L, dtype=torch.bool, device=a.device)  # (B, L)
        mean = a.mean(1)  # (B, D)
        h, c = torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean))  # (B, Dh) each
        return Memory(a, mask), CaptionState(h, c, self.attention.initial_state(a, a, mask))

    @property
    def grid(self) -> tuple[int, int]:
        """(h, w): reshape a step's weights (B, L) to (B, h, w) to see them over the image."""
        return self.config.grid_size()

    # ------------------------------------------------------------------ decoder
    def step(self, prev_tokens: Tensor, state: CaptionState, memory: Memory) -> tuple[Tensor, Tensor, CaptionState]:
        """One word: prev_tokens (B,) -> logits (B, V), weights alpha_t (B, L), the next state (its
        ``attention.extra["gate"]`` holds beta_t (B, 1) for soft_spatial)."""
        emb = self.drop(self.embed(prev_tokens))  # (B, E)
        z, alpha, attn_state = self.attention(state.h, memory.states, memory.states, memory.mask,
                                              state.attention)  # (B, D), (B, L)
        h, c = self.cell(torch.cat([emb, z.to(emb.dtype)], -1), (state.h, state.c))  # (B, Dh) each
        logits = self.generator(self.drop(emb + self.out_h(h) + self.out_z(z)))  # (B, V)
        return logits, alpha, CaptionState(h, c, attn_state)

    def forward(self, images: Tensor, tgt_in: Tensor) -> CaptionerOutput:
        """Teacher-forced pass: tgt_in (B, T) = <s> y_1 .. y_{T-1} -> logits, weights and gates of every step."""
        V.check_token_ids("tgt_in", tgt_in, self.config.vocab, "(B, T)")
        if tgt_in.dim() != 2 or tgt_in.shape[0] != images.shape[0]:
            raise ValueError(f"tgt_in must have shape (B, T) = ({images.shape[0]}, T) to match images "
                             f"{V.fmt_shape(images.shape)}, got {V.fmt_shape(tgt_in.shape)}")
        memory, state = self.encode(images)
        logits, weights, gates = [], [], []
        for t in range(tgt_in.shape[1]):
            step_logits, alpha, state = self.step(tgt_in[:, t], state, memory)
            logits.append(step_logits)
            weights.append(alpha)
            gates.append(state.attention.extra.get("gate"))
        beta = torch.cat(gates, 1) if gates and gates[0] is not None else None  # (B, T)
        return CaptionerOutput(torch.stack(logits, 1), torch.stack(weights, 1), beta)  # (B, T, V), (B, T, L)

    def loss(self, images: Tensor, tgt: Tensor) -> Tensor:
        """tgt (B, T+1) = <s> y_1 .. y_T </s> padded with pad_id -> (cross-entropy + lambda penalty) per word."""
        out = self(images, tgt[:, :-1])
        gold = tgt[:, 1:]  # (B, T)
        real = gold != self.pad_id  # (B, T)
        words = real.sum().clamp_min(1)
        ce = F.cross_entropy(out.logits.float().reshape(-1, out.logits.shape[-1]), gold.reshape(-1),
                             ignore_index=self.pad_id, reduction="sum")
        if self.config.penalty_weight == 0:
            return ce / words
        # target T_b / L (an even spread of the caption's steps) rather than the paper's 1: the same gradient
        # (each step's weights sum to 1), but the loss stays readable (with target 1 it carries a constant ~L)
        target = real.sum(1).to(out.weights.dtype) / out.weights.shape[-1]  # (B,)
        penalty = doubly_stochastic_penalty(out.weights, step_mask=real, lam=self.config.penalty_weight,
                                            target=target, reduction="sum")
        return (ce + penalty) / words

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
