"""Batched greedy and beam-search decoding for step-wise encoder-decoders.

A model decodes with two calls (as :class:`~attnzoo.models.rnn_seq2seq.RNNSeq2Seq`):

    memory, state = model.encode(src, src_lengths)
    logits, weights, state = model.step(prev_tokens, state, memory)   # (B, V), (B, S)

and ``memory``/``state`` offer ``index_select(index)`` over the batch, which
beam search uses to expand each sentence to K hypotheses and to follow back
pointers. The encoder runs once and each step feeds only the newest token:
the prefix is never recomputed.

Beam search keeps finished hypotheses in the beam (they may only extend with
</s> at no cost) and picks, per sentence, the hypothesis with the best
length-normalised score ``log p(y) / |y| ** length_penalty`` (|y| counts
</s>). With ``beam_size=1`` it is exactly greedy decoding.

Shape legend: B batch, K beam size, S source length, V vocabulary, T steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..core import validate as V


@dataclass
class Hypotheses:
    """Per sentence: token ids (without <s>/</s>), the attention (len+1, S) incl. the </s> step, score."""

    tokens: list[list[int]]
    weights: list[Tensor]
    scores: list[float]


def _trim(row: Tensor, eos_id: int) -> int:
    """Length of a token row up to and including its first </s> (or the whole row)."""
    hits = (row == eos_id).nonzero()
    return int(hits[0]) + 1 if len(hits) else len(row)


@torch.no_grad()
@V.checked()
def greedy_decode(model, src: Tensor, src_lengths: Tensor, max_len: int) -> Hypotheses:
    memory, state = model.encode(src, src_lengths)
    B = src.shape[0]
    prev = torch.full((B,), model.bos_id, dtype=torch.long, device=src.device)
    finished = torch.zeros(B, dtype=torch.bool, device=src.device)
    tokens, weights, score = [], [], torch.zeros(B, device=src.device)
    for _ in range(max_len):
        logits, w, state = model.step(prev, state, memory)
        logp = torch.log_softmax(logits.float(), -1)
        best = logp.argmax(-1)  # (B,)
        best = torch.where(finished, torch.full_like(best, model.eos_id), best)
        score = score + torch.where(finished, torch.zeros_like(score), logp.gather(1, best[:, None]).squeeze(1))
        tokens.append(best)
        weights.append(w)
        finished |= best == model.eos_id
        prev = best
        if bool(finished.all()):
            break
    toks = torch.stack(tokens, 1).cpu()  # (B, T)
    attn = torch.stack(weights, 1).float().cpu()  # (B, T, S)
    out = Hypotheses([], [], [])
    for b in range(B):
        n = _trim(toks[b], model.eos_id)
        ids = toks[b, :n].tolist()
        out.tokens.append(ids[:-1] if ids and ids[-1] == model.eos_id else ids)
        out.weights.append(attn[b, :n, : int(src_lengths[b])])
        out.scores.append(float(score[b]))
    return out


@torch.no_grad()
@V.checked(length_penalty=V.NONNEGATIVE)
def beam_search(model, src: Tensor, src_lengths: Tensor, max_len: int, beam_size: int = 5,
                length_penalty: float = 1.0) -> Hypotheses:
    B, K, device = src.shape[0], beam_size, src.device
    memory, state = model.encode(src, src_lengths)
    expand = torch.arange(B, device=device).repeat_interleave(K)  # (B*K,)
    memory, state = memory.index_select(expand), state.index_select(expand)
    # only the first beam of each sentence is alive at the start: no duplicate hypotheses
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0
    prev = torch.full((B * K,), model.bos_id, dtype=torch.long, device=device)
    finished = torch.zeros(B * K, dtype=torch.bool, device=device)
    lengths = torch.zeros(B * K, device=device)
    history = torch.empty(B * K, 0, dtype=torch.long, device=device)  # (B*K, t)
    attn_history = None  # (B*K, t, S)
    offsets = (torch.arange(B, device=device) * K)[:, None]  # (B, 1)
    for _ in range(max_len):
        logits, w, state = model.step(prev, state, memory)
        logp = torch.log_softmax(logits.float(), -1)  # (B*K, V)
        V = logp.shape[-1]
        # a finished hypothesis may only "extend" with </s>, at no cost
        eos_only = torch.full_like(logp, float("-inf"))
        eos_only[:, model.eos_id] = 0.0
        logp = torch.where(finished[:, None], eos_only, logp)
        cand = (scores.view(B * K, 1) + logp).view(B, K * V)  # (B, K*V)
        top_scores, top_idx = cand.topk(K, dim=-1)  # (B, K)
        beam_idx = top_idx // V
        token = top_idx % V
        back = (offsets + beam_idx).view(-1)  # (B*K,) rows to continue
        state = state.index_select(back)
        prev = token.view(-1)
        was_finished = finished.index_select(0, back)
        lengths = lengths.index_select(0, back) + (~was_finished).float()
        finished = was_finished | (prev == model.eos_id)
        history = torch.cat([history.index_select(0, back), prev[:, None]], 1)
        w = w.index_select(0, back)[:, None]
        attn_history = w if attn_history is None else torch.cat([attn_history.index_select(0, back), w], 1)
        scores = top_scores
        if bool(finished.all()):
            break
    norm = scores / lengths.view(B, K).clamp_min(1) ** length_penalty  # (B, K)
    best = norm.argmax(-1)  # (B,)
    rows = (offsets.squeeze(1) + best).cpu()
    hist, attn = history.cpu(), attn_history.float().cpu()
    out = Hypotheses([], [], [])
    for b in range(B):
        r = int(rows[b])
        n = _trim(hist[r], model.eos_id)
        ids = hist[r, :n].tolist()
        out.tokens.append(ids[:-1] if ids and ids[-1] == model.eos_id else ids)
        out.weights.append(attn[r, :n, : int(src_lengths[b])])
        out.scores.append(float(norm[b, best[b]]))
    return out


@V.checked(length_penalty=V.NONNEGATIVE)
def decode(model, src: Tensor, src_lengths: Tensor, max_len: int, beam_size: int = 1,
           length_penalty: float = 1.0) -> Hypotheses:
    """Greedy for beam_size 1, beam search otherwise."""
    if beam_size == 1:
        return greedy_decode(model, src, src_lengths, max_len)
    return beam_search(model, src, src_lengths, max_len, beam_size, length_penalty)
