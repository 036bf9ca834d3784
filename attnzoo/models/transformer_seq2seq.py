"""Transformer encoder-decoder (Vaswani et al. 2017) with the step-wise decoding interface.

    memory = Encoder(E_src x + P)                       # N encoder blocks, then LayerNorm (pre-norm)
    h      = Decoder(E_tgt y_<t + P, memory)            # N decoder blocks: causal self-, cross-attention
    p(y_t) = softmax(h W_E^T)                           # output layer tied to the target embeddings

Training runs all target positions at once (teacher forcing with a causal
mask); decoding calls ``step`` with one new token, and every self-attention
layer reads its earlier keys and values from a :class:`~attnzoo.core.kv_cache.KVCache`
while every cross-attention layer reuses the memory it projected at the first
step, so the prefix is never recomputed. ``encode``/``step`` match
:class:`~attnzoo.models.rnn_seq2seq.RNNSeq2Seq`, so the same greedy and beam
search decoders run both.

Positions: ``sinusoidal`` or ``learned`` are added to the embeddings; ``rope``,
``alibi``, ``t5`` and ``relative`` go into every self-attention layer.

``self_attention="lightweight"|"dynamic"`` puts Wu et al.'s (2019) convolutions
in every self-attention slot (encoder: centred windows, decoder: causal ones
that decode with a cache of their last K-1 inputs); cross-attention stays
multi-head. ``--model transformer --attention dynamic`` picks it.

Shape legend: B batch, S source length, T target length, V target vocabulary, ``dim`` width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ConfigMixin
from ..core import validate as V
from ..core.dropout import Dropout
from ..core.kv_cache import KVCache
from ..mechanisms.convolutional import ConvCache
from ..mechanisms.transformer import (
    ACTIVATIONS,
    SELF_ATTENTION,
    BlockConfig,
    DecoderBlock,
    EncoderBlock,
    new_self_cache,
)
from ..positions import LearnedPositions, SinusoidalPositions
from .rnn_seq2seq import Memory, check_source

ABSOLUTE = ("sinusoidal", "learned")
POSITIONS = ABSOLUTE + ("rope", "alibi", "t5", "relative")


@V.checked(positions=V.one_of(POSITIONS), self_attention=V.one_of(SELF_ATTENTION),
           activation=V.one_of(ACTIVATIONS))
@dataclass
class TransformerConfig(ConfigMixin):
    src_vocab: int  # source token count
    tgt_vocab: int  # target token count, specials included
    dim: int = 256  # model width
    num_heads: int = 4  # attention heads per layer
    num_kv_heads: int | None = None  # key/value heads (GQA/MQA when fewer than num_heads)
    enc_layers: int = 3  # encoder blocks
    dec_layers: int = 3  # decoder blocks
    ffn_dim: int | None = None  # feed-forward size (None: 4 * dim)
    dropout: float = 0.1  # residual, FFN and embedding dropout
    attn_dropout: float = 0.0  # dropout on attention weights
    norm_first: bool = True  # pre-norm blocks (stable without long warm-up)
    positions: str = "sinusoidal"  # sinusoidal | learned | rope | alibi | t5 | relative
    max_len: int = 512  # longest sequence the absolute positions cover
    activation: str = "gelu"
    self_attention: str = "mha"  # mha | lightweight | dynamic (a convolution over time, Wu 2019)
    kernel_size: int = 7  # taps of the lightweight/dynamic convolutions

    def __post_init__(self):
        if self.self_attention != "mha" and self.positions not in ABSOLUTE:
            raise ValueError(f"positions={self.positions!r} go into multi-head self-attention; with "
                             f"self_attention={self.self_attention!r} use 'sinusoidal' or 'learned'")
        if self.dim % self.num_heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by num_heads ({self.num_heads})")

    def block(self) -> BlockConfig:
        return BlockConfig(dim=self.dim, num_heads=self.num_heads, num_kv_heads=self.num_kv_heads,
                           ffn_dim=self.ffn_dim, dropout=self.dropout, attn_dropout=self.attn_dropout,
                           norm_first=self.norm_first, activation=self.activation,
                           positions=None if self.positions in ABSOLUTE else self.positions,
                           self_attention=self.self_attention, kernel_size=self.kernel_size)




@dataclass
class TransformerState:
    """Per decoder layer: a self-attention cache (a ConvCache for convolutions) and a cross-attention cache;
    ``step`` = tokens so far."""

    self_caches: list[KVCache | ConvCache]
    cross_caches: list[KVCache]
    step: int = 0

    def index_select(self, index: Tensor) -> TransformerState:
        for c in self.self_caches + self.cross_caches:
            c.index_select_(index)
        return self


class TransformerSeq2Seq(nn.Module):
    @V.checked(pad_id=V.COUNT, bos_id=V.COUNT, eos_id=V.COUNT)
    def __init__(self, config: TransformerConfig, pad_id: int = 0, bos_id: int = 1, eos_id: int = 2):
        super().__init__()
        c = self.config = config
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.src_embed = nn.Embedding(c.src_vocab, c.dim, padding_idx=pad_id)
        self.tgt_embed = nn.Embedding(c.tgt_vocab, c.dim, padding_idx=pad_id)
        if c.positions == "sinusoidal":
            self.pos = SinusoidalPositions(c.dim, c.max_len)
        elif c.positions == "learned":
            self.pos = LearnedPositions(c.dim, c.max_len)
        else:
            self.pos = None
        self.drop = Dropout(c.dropout)
        block = c.block()
        self.encoder = nn.ModuleList(EncoderBlock(block) for _ in range(c.enc_layers))
        self.decoder = nn.ModuleList(DecoderBlock(block) for _ in range(c.dec_layers))
        self.enc_norm = nn.LayerNorm(c.dim) if c.norm_first else nn.Identity()
        self.dec_norm = nn.LayerNorm(c.dim) if c.norm_first else nn.Identity()
        self.scale = math.sqrt(c.dim)
        nn.init.normal_(self.src_embed.weight, std=c.dim ** -0.5)
        nn.init.normal_(self.tgt_embed.weight, std=c.dim ** -0.5)

    def _embed(self, table: nn.Embedding, ids: Tensor, offset: int = 0) -> Tensor:
        x = table(ids) * self.scale  # (B, L, dim)
        if self.pos is not None:
            x = self.pos(x, offset)
        return self.drop(x)

    # ------------------------------------------------------------------ encoder
    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[Memory, TransformerState]:
        c = self.config
        check_source(src, src_lengths, c.src_vocab)
        S = src.shape[1]
        if self.pos is not None and S > c.max_len:
            raise ValueError(f"src of shape {V.fmt_shape(src.shape)} is longer than max_len={c.max_len}, the "
                             f"positions this model was built with; shorten the input to {c.max_len} tokens "
                             f"or build the model with max_len >= {S}")
        mask = torch.arange(S, device=src.device)[None, :] < src_lengths[:, None].to(src.device)  # (B, S)
        x = self._embed(self.src_embed, src)
        for block in self.encoder:
            x = block(x, key_mask=mask).output
        memory = Memory(self.enc_norm(x), mask)
        n = len(self.decoder)
        return memory, TransformerState([new_self_cache(b.self_attn) for b in self.decoder],
                                        [KVCache() for _ in range(n)])

    # ------------------------------------------------------------------ decoder
    def _decode(self, y: Tensor, memory: Memory, state: TransformerState | None, need_weights: bool):
        offset = state.step if state is not None else 0
        x = self._embed(self.tgt_embed, y, offset)  # (B, T, dim)
        weights = None
        for i, block in enumerate(self.decoder):
            last = i == len(self.decoder) - 1
            first_step = state is None or not state.cross_caches[i].static
            out = block(x, memory.states if first_step else None, memory.mask,
                        need_weights=need_weights and last,
                        self_cache=None if state is None else state.self_caches[i],
                        cross_cache=None if state is None else state.cross_caches[i])
            x = out.output
            if need_weights and last:
                weights = out.weights["cross"].float().mean(1)  # (B, T, S) averaged over heads
        logits = self.dec_norm(x) @ self.tgt_embed.weight.t()  # (B, T, V) tied output layer
        return logits, weights

    @torch.no_grad()
    def attention_maps(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> dict[str, Tensor]:
        """Per-layer, per-head weights of a teacher-forced pass: {"self": (layers, B, H, T, T),
        "cross": (layers, B, H, T, S)} (for reports: layer x head grids)."""
        memory, _ = self.encode(src, src_lengths)
        x = self._embed(self.tgt_embed, tgt_in)
        maps: dict[str, list[Tensor]] = {"self": [], "cross": []}
        for block in self.decoder:
            out = block(x, memory.states, memory.mask, need_weights=True)
            x = out.output
            for kind in maps:
                maps[kind].append(out.weights[kind].float())
        return {kind: torch.stack(ws) for kind, ws in maps.items()}

    def step(self, prev_tokens: Tensor, state: TransformerState,
             memory: Memory) -> tuple[Tensor, Tensor, TransformerState]:
        """prev_tokens (B,) -> logits (B, V), last layer's cross-attention (B, S) averaged over heads."""
        logits, weights = self._decode(prev_tokens[:, None], memory, state, need_weights=True)
        state.step += 1
        return logits[:, 0], weights[:, 0], state

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor,
                need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        V.check_token_ids("tgt_in", tgt_in, self.config.tgt_vocab, "(B, T)")
        memory, _ = self.encode(src, src_lengths)
        return self._decode(tgt_in, memory, None, need_weights)

    @V.checked()
    def loss(self, src: Tensor, src_lengths: Tensor, tgt: Tensor, label_smoothing: float = 0.0) -> Tensor:
        logits, _ = self(src, src_lengths, tgt[:, :-1])
        gold = tgt[:, 1:]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), gold.reshape(-1),
                               ignore_index=self.pad_id, label_smoothing=label_smoothing)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
