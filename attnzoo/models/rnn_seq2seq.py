"""RNN encoder-decoder with attention (Bahdanau 2015; Luong 2015).

Encoder: embeddings -> bidirectional LSTM/GRU -> memory (B, S, 2 * hidden).

Decoder, one step, in either order:

``bahdanau`` (attend, then update)::

    c_t, a_t = attn(s_{t-1}, memory)               # query: the previous state
    s_t      = RNN([E y_{t-1}; c_t], s_{t-1})
    o_t      = tanh(W_o [s_t; c_t; E y_{t-1}])      # deep output
    p_t      = softmax(W_y o_t)

``luong`` (update, then attend; input feeding optional)::

    s_t      = RNN([E y_{t-1}; o_{t-1}], s_{t-1})   # o_{t-1} only with input feeding
    c_t, a_t = attn(s_t, memory)
    o_t      = tanh(W_c [c_t; s_t])                 # the "attentional hidden state"
    p_t      = softmax(W_y o_t)

Luong order without input feeding has no dependence between steps except
through the RNN, so teacher-forced training runs the RNN over all T steps in
one fused call and attends for all steps at once (the same equations, checked
against the step loop by a test).

Any step-wise mechanism (``attnzoo list``) fills the attention slot.

Shape legend: B batch, S source length, T target length, V target vocabulary,
H encoder hidden size per direction, D decoder hidden size, M memory size (2H).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..config import ConfigMixin
from ..core import validate as V
from ..core.dropout import Dropout
from ..mechanisms.base import AttentionState
from ..registry import create as create_attention
from ..registry import mechanisms


@V.checked()
def check_source(src: Tensor, src_lengths: Tensor, vocab: int | None = None) -> None:
    """Once per batch, for every encoder-decoder: src (B, S) ids in [0, vocab), src_lengths (B,) in [1, S]."""
    V.check_tensor("src", src)
    if src.dim() != 2:
        raise ValueError(f"src must have shape (B, S) of token ids, got {V.fmt_shape(src.shape)}")
    if vocab is not None:
        V.check_token_ids("src", src, vocab)
    V.check_tensor("src_lengths", src_lengths)
    if src_lengths.shape != (src.shape[0],):
        raise ValueError(f"src_lengths must have shape (B,) = ({src.shape[0]},), "
                         f"got {V.fmt_shape(src_lengths.shape)}")
    if bool((src_lengths < 1).any()) or int(src_lengths.max()) > src.shape[1]:
        raise ValueError(f"src_lengths must be in [1, S={src.shape[1]}], got min {int(src_lengths.min())} "
                         f"max {int(src_lengths.max())}")


@V.checked(rnn=V.one_of(("lstm", "gru")), order=V.one_of(("luong", "bahdanau")),
           attention=V.one_of(lambda: [i.name for i in mechanisms()]))
@dataclass
class Seq2SeqConfig(ConfigMixin):
    src_vocab: int  # source token count (letters for g2p)
    tgt_vocab: int  # target token count (phonemes), specials included
    embed_dim: int = 128  # token embedding size, source and target
    hidden_dim: int = 256  # encoder LSTM size per direction; memory is 2x this
    decoder_dim: int = 512  # decoder RNN size (the attention query)
    enc_layers: int = 2  # stacked bidirectional encoder layers
    dec_layers: int = 1  # stacked decoder layers; the top one's state queries the attention
    rnn: str = "lstm"  # "lstm" or "gru"
    attention: str = "additive"  # any step-wise mechanism in the registry
    attention_hidden: int | None = None  # A for additive/concat scores (default: decoder_dim)
    attention_options: dict | None = None  # extra keyword options for the mechanism
    order: str = "luong"  # "luong": update then attend; "bahdanau": attend then update
    input_feeding: bool = False  # luong: feed o_{t-1} into the next step's RNN input
    dropout: float = 0.25  # on embeddings, between layers, and before the output layer





@dataclass
class Memory:
    """The encoder's output, fixed for the whole decode: (B, S, M) and its (B, S) mask."""

    states: Tensor
    mask: Tensor

    def index_select(self, index: Tensor) -> Memory:
        return Memory(self.states.index_select(0, index), self.mask.index_select(0, index))


@dataclass
class DecoderState:
    """What one decoder step hands the next. ``rnn``: (layers, B, D) h (and c for LSTM)."""

    rnn: tuple[Tensor, ...]
    attention: AttentionState
    feed: Tensor | None  # (B, D) the previous o_t (Luong input feeding)

    def index_select(self, index: Tensor) -> DecoderState:
        return DecoderState(
            rnn=tuple(x.index_select(1, index) for x in self.rnn),
            attention=self.attention.index_select(index),
            feed=None if self.feed is None else self.feed.index_select(0, index),
        )


class RNNSeq2Seq(nn.Module):
    """Bidirectional RNN encoder, attention decoder (Bahdanau or Luong order)."""

    @V.checked(pad_id=V.COUNT, bos_id=V.COUNT, eos_id=V.COUNT)
    def __init__(self, config: Seq2SeqConfig, pad_id: int = 0, bos_id: int = 1, eos_id: int = 2):
        super().__init__()
        c = self.config = config
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        rnn_cls = nn.LSTM if c.rnn == "lstm" else nn.GRU
        memory_dim = 2 * c.hidden_dim
        self.drop = Dropout(c.dropout)

        # encoder
        self.src_embed = nn.Embedding(c.src_vocab, c.embed_dim, padding_idx=pad_id)
        self.encoder = rnn_cls(c.embed_dim, c.hidden_dim, num_layers=c.enc_layers, bidirectional=True,
                               batch_first=True, dropout=c.dropout if c.enc_layers > 1 else 0.0)
        # bridge: final forward/backward states -> the decoder's initial state, per decoder layer
        self.bridge = nn.Linear(memory_dim, c.decoder_dim * c.dec_layers)

        # decoder
        self.tgt_embed = nn.Embedding(c.tgt_vocab, c.embed_dim, padding_idx=pad_id)
        feeds_context = c.order == "bahdanau"
        feeds_output = c.order == "luong" and c.input_feeding
        rnn_in = c.embed_dim + (memory_dim if feeds_context else 0) + (c.decoder_dim if feeds_output else 0)
        self.decoder = rnn_cls(rnn_in, c.decoder_dim, num_layers=c.dec_layers, batch_first=True,
                               dropout=c.dropout if c.dec_layers > 1 else 0.0)
        self.attention = create_attention(
            c.attention, query_dim=c.decoder_dim, key_dim=memory_dim, value_dim=memory_dim,
            hidden_dim=c.attention_hidden or c.decoder_dim, **(c.attention_options or {}))
        out_in = memory_dim + c.decoder_dim + (c.embed_dim if c.order == "bahdanau" else 0)
        self.combine = nn.Linear(out_in, c.decoder_dim)  # W_c (luong) / W_o (bahdanau)
        self.generator = nn.Linear(c.decoder_dim, c.tgt_vocab)  # W_y

    # ------------------------------------------------------------------ encoder
    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[Memory, DecoderState]:
        """src (B, S) token ids, src_lengths (B,) -> memory and the decoder's first state."""
        c = self.config
        check_source(src, src_lengths, c.src_vocab)
        B, S = src.shape
        emb = self.drop(self.src_embed(src))  # (B, S, E)
        packed = pack_padded_sequence(emb, src_lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, final = self.encoder(packed)
        states, _ = pad_packed_sequence(out, batch_first=True, total_length=S)  # (B, S, 2H)
        h_n = final[0] if c.rnn == "lstm" else final  # (layers * 2, B, H)
        last = h_n.view(c.enc_layers, 2, B, c.hidden_dim)[-1]  # (2, B, H) top layer, both directions
        last = torch.cat([last[0], last[1]], dim=-1)  # (B, 2H)
        h0 = torch.tanh(self.bridge(last)).view(B, c.dec_layers, c.decoder_dim).transpose(0, 1).contiguous()
        rnn_state = (h0, torch.zeros_like(h0)) if c.rnn == "lstm" else (h0,)  # (layers, B, D)
        mask = torch.arange(S, device=src.device)[None, :] < src_lengths[:, None].to(src.device)  # (B, S)
        memory = Memory(states, mask)
        attn_state = self.attention.initial_state(states, states, mask)
        feed = states.new_zeros(B, c.decoder_dim) if c.order == "luong" and c.input_feeding else None
        return memory, DecoderState(rnn_state, attn_state, feed)

    # ------------------------------------------------------------------ decoder
    def _rnn(self, x: Tensor, rnn_state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        """x (B, T, in) -> (B, T, D)."""
        if self.config.rnn == "lstm":
            out, (h, c) = self.decoder(x, rnn_state)
            return out, (h, c)
        out, h = self.decoder(x, rnn_state[0])
        return out, (h,)

    def step(self, prev_tokens: Tensor, state: DecoderState, memory: Memory) -> tuple[Tensor, Tensor, DecoderState]:
        """One decoder step: prev_tokens (B,) -> logits (B, V), weights (B, S), next state."""
        c = self.config
        emb = self.drop(self.tgt_embed(prev_tokens))  # (B, E)
        if c.order == "bahdanau":
            query = state.rnn[0][-1]  # (B, D) top layer's previous state
            context, weights, attn_state = self.attention(query, memory.states, memory.states, memory.mask,
                                                          state.attention)
            rnn_out, rnn_state = self._rnn(torch.cat([emb, context], -1).unsqueeze(1), state.rnn)
            top = rnn_out.squeeze(1)  # (B, D)
            output = torch.tanh(self.combine(torch.cat([top, context, emb], -1)))  # (B, D)
            return self.generator(self.drop(output)), weights, DecoderState(rnn_state, attn_state, None)
        rnn_in = emb if state.feed is None else torch.cat([emb, state.feed], -1)
        rnn_out, rnn_state = self._rnn(rnn_in.unsqueeze(1), state.rnn)
        top = rnn_out.squeeze(1)  # (B, D)
        context, weights, attn_state = self.attention(top, memory.states, memory.states, memory.mask,
                                                      state.attention)
        output = torch.tanh(self.combine(torch.cat([context, top], -1)))  # (B, D)
        feed = output if c.input_feeding else None
        return self.generator(self.drop(output)), weights, DecoderState(rnn_state, attn_state, feed)

    @property
    def parallel_teacher_forcing(self) -> bool:
        c = self.config
        return c.order == "luong" and not c.input_feeding and self.attention.stateless

    def decode_teacher_forced(self, tgt_in: Tensor, state: DecoderState, memory: Memory,
                              parallel: bool | None = None) -> tuple[Tensor, Tensor]:
        """tgt_in (B, T) = <s> y_1 .. y_{T-1} -> logits (B, T, V), weights (B, T, S)."""
        parallel = self.parallel_teacher_forcing if parallel is None else parallel
        if parallel:
            if not self.parallel_teacher_forcing:
                raise ValueError("parallel teacher forcing needs order='luong', input_feeding=False "
                                 "and a stateless attention")
            emb = self.drop(self.tgt_embed(tgt_in))  # (B, T, E)
            top, _ = self._rnn(emb, state.rnn)  # (B, T, D)
            context, weights, _ = self.attention(top, memory.states, memory.states, memory.mask,
                                                 state.attention)  # (B, T, M), (B, T, S)
            output = torch.tanh(self.combine(torch.cat([context, top], -1)))  # (B, T, D)
            return self.generator(self.drop(output)), weights
        logits, weights = [], []
        for t in range(tgt_in.shape[1]):
            step_logits, step_weights, state = self.step(tgt_in[:, t], state, memory)
            logits.append(step_logits)
            weights.append(step_weights)
        return torch.stack(logits, 1), torch.stack(weights, 1)  # (B, T, V), (B, T, S)

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher-forced pass: -> logits (B, T, V), attention weights (B, T, S)."""
        V.check_token_ids("tgt_in", tgt_in, self.config.tgt_vocab, "(B, T)")
        memory, state = self.encode(src, src_lengths)
        return self.decode_teacher_forced(tgt_in, state, memory)

    @V.checked()
    def loss(self, src: Tensor, src_lengths: Tensor, tgt: Tensor, label_smoothing: float = 0.0) -> Tensor:
        """tgt (B, T+1) = <s> y_1 .. y_T </s> padded with pad_id; mean token cross-entropy."""
        logits, _ = self(src, src_lengths, tgt[:, :-1])
        gold = tgt[:, 1:]  # (B, T)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), gold.reshape(-1),
                               ignore_index=self.pad_id, label_smoothing=label_smoothing)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
