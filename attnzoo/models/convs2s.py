"""ConvS2S: the convolutional encoder-decoder of Gehring et al. (2017), with the step-wise decoding interface.

    e_j   = E_src x_j + p_j                                    # token + learned position embeddings
    z     = Encoder(e)                                          # GLU convolutions, centred windows
    g_i   = E_tgt y_i + p_i
    h^l_i = sqrt(.5) (Attn^l(GLU(Conv^l(h^(l-1)_(i-K+1..i))), g_i, z, z + e) + h^(l-1)_i)   # causal windows
    p(y_(i+1)) = softmax(W_out Drop(W_e h^L_i))

Every block (Section 3.2) is a 1-D convolution to 2C channels, a gated linear unit
GLU([A; B]) = A * sigmoid(B) back to C channels and a residual connection, the sum scaled by
sqrt(0.5) to keep its variance (Section 3.4). Encoder windows are centred (zero padding on both
sides; padded source positions are zeroed before every convolution, so they influence nothing);
decoder windows end at the current position (left padding of K-1 zeros). Every decoder layer has its
own :class:`~attnzoo.mechanisms.convolutional.MultiStepAttention` over the encoder output z (keys)
and z + e (values). As in the authors' code (fairseq's ``fconv``), linear maps embed -> hidden ->
embed around each stack, the encoder's gradient is scaled by 1 / (2 x attention layers)
(``grad_scale``; Section 3.4 scales it "by the number of attention mechanisms"), and weights are
initialised for the dropout rate and weight-normalised (``weight_norm``, Salimans & Kingma 2016).

Training runs all target positions at once; decoding calls ``step`` with one new token, and each
decoder layer reads the K-1 inputs before it from the state (``ConvS2SState.windows``), so the
prefix is never recomputed. ``encode``/``step``/``loss`` match
:class:`~attnzoo.models.rnn_seq2seq.RNNSeq2Seq` and the Transformer, so
:mod:`attnzoo.models.decoding`'s greedy and beam search run all three. The step weights (for the
alignment heatmaps) are the last decoder layer's attention; ``attention_maps`` returns every layer's.

Shape legend: B batch, S source length, T target length, V target vocabulary, E embedding size,
C hidden channels, K kernel width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrizations

from ..config import ConfigMixin
from ..core import validate as V
from ..core.dropout import Dropout
from ..mechanisms.convolutional import MultiStepAttention
from .rnn_seq2seq import check_source

HALF = math.sqrt(0.5)


@V.checked()
@dataclass
class ConvS2SConfig(ConfigMixin):
    src_vocab: int  # source token count
    tgt_vocab: int  # target token count, specials included
    embed_dim: int = 256  # token and position embeddings; the attention compares vectors of this size
    hidden_dim: int = 256  # channels of every convolutional block
    enc_layers: int = 6  # encoder blocks
    dec_layers: int = 4  # decoder blocks, each with its own attention
    enc_kernel: int = 3  # encoder kernel width (a centred window)
    dec_kernel: int = 3  # decoder kernel width (the current and K-1 previous tokens)
    dropout: float = 0.1  # on embeddings, before every convolution and before the output layer
    weight_norm: bool = True  # weight-normalised linear and convolution layers (the paper's setup)
    grad_scale: bool = True  # scale the encoder's gradient by 1 / (2 x attention layers), as the paper's code
    max_len: int = 256  # longest source or output the learned positions cover



@dataclass
class ConvMemory:
    """The encoder's output, fixed for the whole decode: keys z, values z + e (B, S, E) and the (B, S) mask."""

    keys: Tensor
    values: Tensor
    mask: Tensor

    def index_select(self, index: Tensor) -> ConvMemory:
        return ConvMemory(self.keys.index_select(0, index), self.values.index_select(0, index),
                          self.mask.index_select(0, index))


@dataclass
class ConvS2SState:
    """Per decoder layer, the K-1 inputs before the next position (B, K-1, C) (zeros before the first
    token: the full pass's left padding); ``step`` = tokens decoded so far (the next position)."""

    windows: list[Tensor]
    step: int = 0

    def index_select(self, index: Tensor) -> ConvS2SState:
        return ConvS2SState([w.index_select(0, index) for w in self.windows], self.step)


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the gradient times ``scale`` backward (fairseq's GradMultiply)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad * ctx.scale, None


def _linear(n_in: int, n_out: int, dropout: float) -> nn.Linear:
    """A linear layer initialised so that its output keeps the variance of its (dropped-out) input."""
    m = nn.Linear(n_in, n_out)
    nn.init.normal_(m.weight, std=math.sqrt((1 - dropout) / n_in))
    nn.init.zeros_(m.bias)
    return m


def _conv(channels: int, kernel: int, dropout: float) -> nn.Conv1d:
    """C -> 2C channels for a GLU, initialised as in the paper's code (std sqrt(4 (1 - p) / (K C)))."""
    m = nn.Conv1d(channels, 2 * channels, kernel)
    nn.init.normal_(m.weight, std=math.sqrt(4 * (1 - dropout) / (kernel * channels)))
    nn.init.zeros_(m.bias)
    return m


class ConvS2S(nn.Module):
    """Convolutional encoder-decoder with one multi-step attention per decoder layer (Gehring et al. 2017)."""

    @V.checked(pad_id=V.COUNT, bos_id=V.COUNT, eos_id=V.COUNT)
    def __init__(self, config: ConvS2SConfig, pad_id: int = 0, bos_id: int = 1, eos_id: int = 2):
        super().__init__()
        c = self.config = config
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        E, C, p = c.embed_dim, c.hidden_dim, c.dropout
        self.src_embed = nn.Embedding(c.src_vocab, E, padding_idx=pad_id)
        self.tgt_embed = nn.Embedding(c.tgt_vocab, E, padding_idx=pad_id)
        self.src_pos = nn.Embedding(c.max_len, E)
        self.tgt_pos = nn.Embedding(c.max_len, E)
        for emb in (self.src_embed, self.tgt_embed, self.src_pos, self.tgt_pos):
            nn.init.normal_(emb.weight, std=0.1)
        for emb in (self.src_embed, self.tgt_embed):
            with torch.no_grad():
                emb.weight[pad_id].zero_()
        self.drop = Dropout(p)
        self.enc_in, self.enc_out = _linear(E, C, p), _linear(C, E, 0.0)
        self.encoder = nn.ModuleList(_conv(C, c.enc_kernel, p) for _ in range(c.enc_layers))
        self.dec_in, self.dec_out = _linear(E, C, p), _linear(C, E, 0.0)
        self.decoder = nn.ModuleList(_conv(C, c.dec_kernel, p) for _ in range(c.dec_layers))
        self.attention = nn.ModuleList(MultiStepAttention(C, E) for _ in range(c.dec_layers))
        for attn in self.attention:
            for lin in (attn.in_proj, attn.o_proj):
                nn.init.normal_(lin.weight, std=math.sqrt(1 / lin.in_features))
                nn.init.zeros_(lin.bias)
        self.generator = _linear(E, c.tgt_vocab, p)
        if c.weight_norm:
            for m in list(self.modules()):
                if isinstance(m, (nn.Linear, nn.Conv1d)):
                    parametrizations.weight_norm(m, dim=0)  # per output unit / channel

    # ------------------------------------------------------------------ encoder
    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[ConvMemory, ConvS2SState]:
        """src (B, S) ids, src_lengths (B,) -> the memory and the decoder's first state."""
        c = self.config
        check_source(src, src_lengths, c.src_vocab)
        B, S = src.shape
        if S > c.max_len:
            raise ValueError(f"src of shape {V.fmt_shape(src.shape)} is longer than max_len={c.max_len}, the "
                             f"positions this model was built with; shorten the input to {c.max_len} tokens or "
                             f"build the model with max_len >= {S}")
        mask = torch.arange(S, device=src.device)[None, :] < src_lengths[:, None].to(src.device)  # (B, S)
        e = self.drop(self.src_embed(src) + self.src_pos.weight[:S])  # (B, S, E)
        x = self.enc_in(e)  # (B, S, C)
        pad = ~mask[..., None]  # (B, S, 1)
        K = c.enc_kernel
        for conv in self.encoder:
            residual = x
            x = self.drop(x).masked_fill(pad, 0.0)  # padding contributes nothing to real positions
            x = F.pad(x.transpose(1, 2), ((K - 1) // 2, K // 2))  # (B, C, S + K-1) a centred window
            x = F.glu(conv(x), dim=1).transpose(1, 2)  # (B, S, C)
            x = (x + residual) * HALF
        z = self.enc_out(x).masked_fill(pad, 0.0)  # (B, S, E)
        if c.grad_scale and torch.is_grad_enabled():
            z = _ScaleGrad.apply(z, 1.0 / (2.0 * c.dec_layers))
        memory = ConvMemory(z, z + e, mask)
        windows = [z.new_zeros(B, c.dec_kernel - 1, c.hidden_dim) for _ in self.decoder]
        return memory, ConvS2SState(windows)

    # ------------------------------------------------------------------ decoder
    def _decode(self, y: Tensor, memory: ConvMemory, state: ConvS2SState | None,
                need_weights: str | None) -> tuple[Tensor, Tensor | None, ConvS2SState | None]:
        """y (B, T) -> logits (B, T, V), weights ("last": (B, T, S); "all": (layers, B, T, S)), next state."""
        c = self.config
        B, T = y.shape
        offset = 0 if state is None else state.step
        if offset + T > c.max_len:
            raise ValueError(f"decoding position {offset + T - 1} is past max_len={c.max_len}, the positions this "
                             f"model was built with; decode at most {c.max_len} tokens (or build it with a larger "
                             "max_len)")
        g = self.drop(self.tgt_embed(y) + self.tgt_pos.weight[offset: offset + T])  # (B, T, E)
        x = self.dec_in(g)  # (B, T, C)
        K = c.dec_kernel
        windows, weights = [], []
        for i, (conv, attn) in enumerate(zip(self.decoder, self.attention)):
            residual = x
            x = self.drop(x)
            if state is None:
                padded = F.pad(x, (0, 0, K - 1, 0))  # (B, K-1 + T, C) zeros before the first token
            else:
                padded = torch.cat([state.windows[i], x], 1)  # (B, K-1 + T, C) the cached inputs first
                windows.append(padded[:, padded.shape[1] - (K - 1):])  # (B, K-1, C)
            x = F.glu(conv(padded.transpose(1, 2)), dim=1).transpose(1, 2)  # (B, T, C) causal
            last = i == len(self.decoder) - 1
            want = need_weights == "all" or (need_weights == "last" and last)
            out = attn(x, g, memory.keys, memory.values, memory.mask, need_weights=want)
            if want:
                weights.append(out.weights)
            x = (out.output + residual) * HALF
        logits = self.generator(self.drop(self.dec_out(x)))  # (B, T, V)
        w = None
        if need_weights == "last":
            w = weights[-1]
        elif need_weights == "all":
            w = torch.stack(weights)  # (layers, B, T, S)
        new_state = None if state is None else ConvS2SState(windows, offset + T)
        return logits, w, new_state

    def step(self, prev_tokens: Tensor, state: ConvS2SState, memory: ConvMemory
             ) -> tuple[Tensor, Tensor, ConvS2SState]:
        """prev_tokens (B,) -> logits (B, V), the last layer's attention (B, S), the next state."""
        logits, weights, state = self._decode(prev_tokens[:, None], memory, state, "last")
        return logits[:, 0], weights[:, 0], state

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor,
                need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """Teacher-forced pass: -> logits (B, T, V), the last layer's attention (B, T, S) or None."""
        V.check_token_ids("tgt_in", tgt_in, self.config.tgt_vocab, "(B, T)")
        memory, _ = self.encode(src, src_lengths)
        logits, weights, _ = self._decode(tgt_in, memory, None, "last" if need_weights else None)
        return logits, weights

    @torch.no_grad()
    def attention_maps(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> dict[str, Tensor]:
        """Every decoder layer's attention of a teacher-forced pass: {"cross": (layers, B, 1, T, S)}
        (one head per layer, for the reports' layer x head grids)."""
        V.check_token_ids("tgt_in", tgt_in, self.config.tgt_vocab, "(B, T)")
        memory, _ = self.encode(src, src_lengths)
        _, weights, _ = self._decode(tgt_in, memory, None, "all")
        return {"cross": weights.float()[:, :, None]}

    @V.checked()
    def loss(self, src: Tensor, src_lengths: Tensor, tgt: Tensor, label_smoothing: float = 0.0) -> Tensor:
        """tgt (B, T+1) = <s> y_1 .. y_T </s> padded with pad_id; mean token cross-entropy."""
        logits, _ = self(src, src_lengths, tgt[:, :-1])
        gold = tgt[:, 1:]  # (B, T)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), gold.reshape(-1),
                               ignore_index=self.pad_id, label_smoothing=label_smoothing)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
