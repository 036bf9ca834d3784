"""Decoder-only Transformer language model (Radford et al. 2018; nanoGPT's shape) with cached generation.

    x_0   = E[tokens] (+ P)                         # absolute positions, or rope/alibi/t5/relative inside attention
    x_l   = Block_l(x_{l-1})                        # causal self-attention + FFN, pre-norm
    p(y)  = softmax(LayerNorm(x_L) E^T)             # output tied to the embeddings

``generate`` runs the prompt once, then one token per step, each layer
reading its earlier keys and values from a :class:`~attnzoo.core.kv_cache.KVCache`
(the prefix is never recomputed); sampling with temperature, top-k and top-p
(nucleus, Holtzman 2020), or greedy with ``temperature=0``.

Shape legend: B batch, T length, V vocabulary, ``dim`` width.
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
from ..core.masks import document
from ..mechanisms.transformer import SELF_ATTENTION, BlockConfig, SelfAttentionBlock, new_self_cache
from ..positions import LearnedPositions, SinusoidalPositions

POSITIONS = ("learned", "sinusoidal", "rope", "alibi", "t5", "relative")


@V.checked(positions=V.one_of(POSITIONS), attention=V.one_of(SELF_ATTENTION))
@dataclass
class LMConfig(ConfigMixin):
    vocab: int  # token count
    dim: int = 256  # model width
    num_heads: int = 4  # query heads
    num_kv_heads: int | None = None  # key/value heads (GQA/MQA when fewer)
    layers: int = 4  # blocks
    ffn_dim: int | None = None  # feed-forward size (None: 4 * dim)
    dropout: float = 0.1  # residual/FFN/embedding dropout
    context: int = 256  # longest context trained on (and covered by absolute positions)
    positions: str = "rope"  # learned | sinusoidal | rope | alibi | t5 | relative
    attention: str = "mha"  # the blocks' self-attention: mha, mla, linear, sliding, ... (BlockConfig.self_attention)
    attention_options: dict | None = None  # that mechanism's own options (window=, kv_latent_dim=, num_features=)





class DecoderLM(nn.Module):
    def __init__(self, config: LMConfig):
        super().__init__()
        c = self.config = config
        self.embed = nn.Embedding(c.vocab, c.dim)
        absolute = c.positions in ("learned", "sinusoidal")
        if c.positions == "learned":
            self.pos = LearnedPositions(c.dim, c.context)
        elif c.positions == "sinusoidal":
            self.pos = SinusoidalPositions(c.dim, c.context)
        else:
            self.pos = None
        block = BlockConfig(dim=c.dim, num_heads=c.num_heads, num_kv_heads=c.num_kv_heads, ffn_dim=c.ffn_dim,
                            dropout=c.dropout, norm_first=True, positions=None if absolute else c.positions,
                            self_attention=c.attention, attention_options=c.attention_options)
        self.blocks = nn.ModuleList(SelfAttentionBlock(block) for _ in range(c.layers))
        self.norm = nn.LayerNorm(c.dim)
        self.drop = Dropout(c.dropout)
        nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, tokens: Tensor, caches: list[KVCache] | None = None,
                need_weights: bool = False, doc_ids: Tensor | None = None) -> tuple[Tensor, list[Tensor]]:
        """tokens (B, T) -> logits (B, T, V) and, if asked, per-layer (B, H, T, S) weights; ``doc_ids`` (B, T):
        a packed batch's document of each position (no position attends across documents)."""
        V.check_tensor("tokens", tokens)
        if tokens.dim() != 2:
            raise ValueError(f"tokens must have shape (B, T), got {V.fmt_shape(tokens.shape)}")
        offset = 0 if caches is None else len(caches[0])
        context = self.config.context
        if offset + tokens.shape[1] > context:
            room = context - offset
            fix = (f"pass at most the last {room} (tokens[:, -{room}:])" if room > 0
                   else "start new KVCaches (the cached ones are full)")
            cached = f" after {offset} cached positions" if offset else ""
            raise ValueError(f"tokens of shape {V.fmt_shape(tokens.shape)}{cached} exceed the model's context of "
                             f"{context} positions; {fix}, or use generate(), which slides the window")
        if offset == 0:  # once per sequence: later cached steps feed back the model's own samples
            V.check_token_ids("tokens", tokens, self.config.vocab, "(B, T)")
        x = self.embed(tokens)  # (B, T, dim)
        if self.pos is not None:
            x = self.pos(x, offset)
        x = self.drop(x)
        weights = []
        mask_mod = None if doc_ids is None else document(_check_doc_ids(doc_ids, tokens, caches))
        for i, block in enumerate(self.blocks):
            out = block(x, need_weights=need_weights, is_causal=True, cache=None if caches is None else caches[i],
                        mask_mod=mask_mod)
            x = out.output
            if need_weights:
                weights.append(out.weights["self"])
        return self.norm(x) @ self.embed.weight.t(), weights  # (B, T, V)

    def loss(self, tokens: Tensor, doc_ids: Tensor | None = None) -> Tensor:
        """Next-character cross-entropy in nats over tokens (B, T+1); with ``doc_ids`` (B, T+1) a packed batch:
        no position attends across a document boundary, and the first character of a document, which nothing
        before it in its document predicts, is not scored."""
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        if doc_ids is not None:
            _check_doc_ids(doc_ids, tokens, None)
            targets = targets.masked_fill(doc_ids[:, 1:] != doc_ids[:, :-1], -100)  # ignore_index
            doc_ids = doc_ids[:, :-1]
        logits, _ = self(inputs, doc_ids=doc_ids)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))

    @torch.no_grad()
    @V.checked(max_new_tokens=V.COUNT, temperature=V.NONNEGATIVE, top_p=V.MASS)
    def generate(self, prompt: Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, generator: torch.Generator | None = None) -> Tensor:
        """prompt (B, T0) -> (B, T0 + max_new_tokens); temperature 0 is greedy."""
        if prompt.dim() != 2 or prompt.shape[1] < 1:
            raise ValueError(f"prompt must have shape (B, T0) with T0 >= 1, got {V.fmt_shape(prompt.shape)}")
        V.check_token_ids("prompt", prompt, self.config.vocab, "(B, T0)")
        was_training = self.training
        self.eval()
        caches = self.new_caches()
        context = prompt[:, -self.config.context:]
        out = [prompt]
        logits, _ = self(context, caches)
        for _ in range(max_new_tokens):
            nxt = sample_next(logits[:, -1].float(), temperature, top_k, top_p, generator)  # (B, 1)
            out.append(nxt)
            if len(caches[0]) >= self.config.context:  # window full: start again from the last tokens
                caches = self.new_caches()
                context = torch.cat(out, 1)[:, -self.config.context + 1:]
                logits, _ = self(context, caches)
            else:
                logits, _ = self(nxt, caches)
        self.train(was_training)
        return torch.cat(out, 1)

    def new_caches(self) -> list:
        """One decoding cache per block, of the kind its attention keeps (KVCache, LinearState, RollingKVCache)."""
        return [new_self_cache(block.self_attn) for block in self.blocks]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _check_doc_ids(doc_ids: Tensor, tokens: Tensor, caches) -> Tensor:
    V.check_tensor("doc_ids", doc_ids)
    if caches is not None:
        raise ValueError("doc_ids (a packed training batch) with caches: decode one document at a time instead")
    if tuple(doc_ids.shape) != tuple(tokens.shape) or torch.is_floating_point(doc_ids):
        raise ValueError(f"doc_ids must be integer document ids of the tokens' shape {V.fmt_shape(tokens.shape)}, "
                         f"got {doc_ids.dtype} {V.fmt_shape(doc_ids.shape)}")
    return doc_ids


@V.checked(temperature=V.NONNEGATIVE, top_p=V.MASS)
def sample_next(logits: Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                generator: torch.Generator | None = None) -> Tensor:
    """logits (B, V) -> next token ids (B, 1): greedy at temperature 0, else filtered sampling."""
    if temperature == 0:
        return logits.argmax(-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop a token when the tokens ranked above it already hold top_p of the mass
        drop = probs.cumsum(-1) - probs >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator)


@V.checked()
def bits_per_character(nats: float) -> float:
    return nats / math.log(2)
