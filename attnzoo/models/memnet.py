"""Story question answering: the end-to-end memory network (Sukhbaatar et al. 2015) and an attention reader.

Both read a story as sentences of word ids and a question, and return answer
logits over the vocabulary and their attention over the story's sentences,
one row per hop: ``model(story, question) -> (logits (B, V), weights (B, K, S))``.
Word id 0 pads; a sentence whose words are all 0 is padding and gets zero
weight (the mask handed to the attention is True = may attend, the opposite of
``nn.MultiheadAttention``'s convention).

Shape legend: B batch, S sentences (memories), W words per sentence, Wq
question words, N story words (the reader's sequence), V vocabulary, d
embedding size, K hops (1 for the reader), H the reader's GRU size per
direction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..config import ConfigMixin
from ..core import validate as V
from ..core.attend import attend
from ..core.dropout import Dropout
from ..registry import create as create_attention
from ..registry import mechanisms

#: the reader's attention slot: the content family (weights from how well the question matches each word)
READER_ATTENTION = tuple(i.name for i in mechanisms("content"))


@V.checked()
def check_story(story: Tensor, question: Tensor, vocab: int, memory_size: int) -> None:
    """Word ids (B, S, W) and (B, Wq) in [0, vocab), the same B, at most ``memory_size`` sentences."""
    V.check_tensor("story", story)
    V.check_tensor("question", question)
    if story.dim() != 3:
        raise ValueError(f"story must have shape (B, S, W) (sentences of word ids, 0 = padding), "
                         f"got {V.fmt_shape(story.shape)}")
    if question.dim() != 2:
        raise ValueError(f"question must have shape (B, Wq) (word ids, 0 = padding), got {V.fmt_shape(question.shape)}")
    if question.shape[0] != story.shape[0]:
        raise ValueError(f"story {V.fmt_shape(story.shape)} and question {V.fmt_shape(question.shape)} must have the "
                         "same batch size B (dim 0)")
    if story.shape[1] > memory_size:
        raise ValueError(f"story of shape {V.fmt_shape(story.shape)} has {story.shape[1]} sentences, more than the "
                         f"model's memory_size={memory_size}; keep the last {memory_size} (story[:, -{memory_size}:])")
    V.check_token_ids("story", story, vocab, "(B, S, W)")
    V.check_token_ids("question", question, vocab, "(B, Wq)")


@V.checked()
def position_encoding(ids: Tensor, dim: int, dtype: torch.dtype) -> Tensor:
    """MemN2N's PE weights l_kj = (1 - j/J) - (k/d)(1 - 2j/J) for word j of J (1-based) and dimension k of d.

    ids (..., W) word ids, 0 = padding (the J real words come first) -> (..., W, d), 0 at padding."""
    real = ids != 0  # (..., W)
    J = real.sum(-1, keepdim=True).clamp(min=1).to(dtype)  # (..., 1)
    j = torch.arange(1, ids.shape[-1] + 1, device=ids.device, dtype=dtype)  # (W,)
    k = torch.arange(1, dim + 1, device=ids.device, dtype=dtype) / dim  # (d,)
    jJ = (j / J)[..., None]  # (..., W, 1)
    return ((1 - jJ) - k * (1 - 2 * jJ)) * real[..., None].to(dtype)  # (..., W, d)


@V.checked(init_std=V.POSITIVE)
@dataclass
class MemNetConfig(ConfigMixin):
    vocab: int  # words, 0 = padding; the answer is one of them
    dim: int = 32  # d, the embedding size (the paper: 20 on bAbI 1k, 50 when training all tasks jointly)
    hops: int = 3  # K memory lookups (the paper's 3)
    memory_size: int = 50  # most sentences a story may have: rows of the temporal encoding (the paper's 50)
    position_encoding: bool = True  # PE: word order inside a sentence counts (False: bag of words)
    temporal_encoding: bool = True  # TE: a learned vector per sentence age, so "latest" is learnable
    init_std: float = 0.1  # embeddings drawn from N(0, init_std), as in the paper



class MemN2N(nn.Module):
    """End-to-end memory network, K hops, adjacent weight tying (Sukhbaatar, Szlam, Weston & Fergus 2015).

    With embeddings E_0 .. E_K (V x d) and temporal matrices T_0 .. T_K (memory_size x d),
    hop k (1..K) reads keys A^k = E_{k-1} and values C^k = E_k (adjacent tying: A^{k+1} = C^k),
    the question is embedded with B = A^1 = E_0 and the answer read with W^T = C^K = E_K::

        m_i^k   = sum_j l_j * A^k x_ij + T_{k-1}(i)        # l_j: position encoding; i: sentence age
        c_i^k   = sum_j l_j * C^k x_ij + T_k(i)
        u^1     = sum_j l_j * B q_j
        p^k     = softmax_i(u^k . m_i^k)                    # attnzoo.attend(score="dot"), padding masked
        o^k     = sum_i p_i^k c_i^k
        u^{k+1} = u^k + o^k
        a       = softmax(W u^{K+1})                        # over the vocabulary

    The temporal index i counts from the question back (0 = the most recent
    sentence), as in the paper, where memories are stored in reverse order.

    ``forward(..., linear=True)`` is the paper's linear start (LS), for the
    first epochs of training: the hops' softmax is removed, p_i^k = u^k . m_i^k
    (0 at padding), which keeps the hops from settling early on one sentence.
    """

    def __init__(self, config: MemNetConfig):
        super().__init__()
        c = self.config = config
        self.embed = nn.ModuleList(nn.Embedding(c.vocab, c.dim, padding_idx=0) for _ in range(c.hops + 1))
        self.temporal = nn.Parameter(torch.zeros(c.hops + 1, c.memory_size, c.dim)) if c.temporal_encoding else None
        for e in self.embed:
            nn.init.normal_(e.weight, std=c.init_std)
            with torch.no_grad():
                e.weight[0].zero_()
        if self.temporal is not None:
            nn.init.normal_(self.temporal, std=c.init_std)

    def encode(self, ids: Tensor, embedding: nn.Embedding) -> Tensor:
        """Sentences (..., W) -> (..., d): sum_j l_j * E x_j (or the bag of words)."""
        x = embedding(ids)  # (..., W, d)
        if self.config.position_encoding:
            x = x * position_encoding(ids, self.config.dim, x.dtype)
        else:
            x = x * (ids != 0)[..., None].to(x.dtype)
        return x.sum(-2)  # (..., d)

    def forward(self, story: Tensor, question: Tensor, linear: bool = False) -> tuple[Tensor, Tensor]:
        """story (B, S, W), question (B, Wq) word ids -> logits (B, V), weights (B, K, S).

        ``linear``: linear start, the hops without their softmax (the weights are then the raw scores)."""
        c = self.config
        check_story(story, question, c.vocab, c.memory_size)
        B, S, _ = story.shape
        mask = (story != 0).any(-1)  # (B, S) True = a real sentence, may attend
        age = (mask.sum(-1, keepdim=True) - 1 - torch.arange(S, device=story.device)).clamp(min=0)  # (B, S)
        memories = []  # E_j sentences (+ T_j), j = 0..K: keys of hop j + 1 and values of hop j
        for j, embedding in enumerate(self.embed):
            m = self.encode(story, embedding)  # (B, S, d)
            if self.temporal is not None:
                m = m + self.temporal[j][age]  # (B, S, d)
            memories.append(m)
        u = self.encode(question, self.embed[0])  # (B, d)
        weights = []
        for k in range(c.hops):
            if linear:
                p = (memories[k] @ u[:, :, None])[..., 0] * mask.to(u.dtype)  # (B, S) scores, no softmax
                u = u + (p[:, None, :] @ memories[k + 1])[:, 0]  # (B, d)
                weights.append(p)
                continue
            out = attend(u[:, None, :], memories[k], memories[k + 1], score="dot", mask=mask[:, None, :],
                         need_weights=True)  # output (B, 1, d), weights (B, 1, S)
            u = u + out.output[:, 0]  # (B, d)
            weights.append(out.weights[:, 0])  # (B, S)
        logits = u @ self.embed[-1].weight.t()  # (B, V): W = (C^K)^T
        return logits, torch.stack(weights, 1)  # (B, V), (B, K, S)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


@V.checked(attention=V.one_of(READER_ATTENTION))
@dataclass
class ReaderConfig(ConfigMixin):
    vocab: int  # words, 0 = padding; the answer is one of them
    embed_dim: int = 32  # word embedding size
    hidden_dim: int = 64  # H, per direction of the story's and the question's bidirectional GRUs
    attention: str = "additive"  # the slot: a content mechanism (dot, scaled_dot, general, additive, cosine)
    attention_hidden: int | None = None  # additive score's hidden size (None: 2 H)
    dropout: float = 0.1  # on the embeddings and before the answer layer
    memory_size: int = 50  # most sentences a story may have (the same limit as MemN2N's)



class AttentiveReader(nn.Module):
    """One attention of the question over the story's words (in the style of Hermann et al. 2015's reader).

    The story's words, in order across its sentences, go through a bidirectional
    GRU; the question through another, whose two final states make the query::

        h_1..h_N = BiGRU(E x)                 q = [GRU_fwd(E q)_last; GRU_bwd(E q)_first]
        a        = attention(q, h)            # any content mechanism: attnzoo.create(name, ...)
        r        = sum_n a_n h_n
        logits   = W [r; q] + b               # over the vocabulary

    The weights over the sentences are the word weights summed per sentence,
    so they compare with MemN2N's hops (here K = 1).
    """

    def __init__(self, config: ReaderConfig):
        super().__init__()
        c = self.config = config
        H2 = 2 * c.hidden_dim
        self.embed = nn.Embedding(c.vocab, c.embed_dim, padding_idx=0)
        self.story_rnn = nn.GRU(c.embed_dim, c.hidden_dim, batch_first=True, bidirectional=True)
        self.question_rnn = nn.GRU(c.embed_dim, c.hidden_dim, batch_first=True, bidirectional=True)
        self.attention = create_attention(c.attention, query_dim=H2, key_dim=H2,
                                          hidden_dim=c.attention_hidden or H2)
        self.drop = Dropout(c.dropout)
        self.out = nn.Linear(2 * H2, c.vocab)

    @staticmethod
    def flatten(story: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The story's words in order, padding squeezed out: ids (B, N), their sentence (B, N), lengths (B,)."""
        B, S, W = story.shape
        flat = story.reshape(B, S * W)  # (B, S W)
        order = torch.sort((flat == 0).to(torch.int8), dim=1, stable=True).indices  # real words first, in order
        lengths = (flat != 0).sum(1)  # (B,)
        N = max(int(lengths.max()), 1) if B else 1
        order = order[:, :N]  # (B, N)
        return flat.gather(1, order), order // W, lengths

    def _run(self, rnn: nn.GRU, ids: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        packed = pack_padded_sequence(self.drop(self.embed(ids)), lengths.clamp(min=1).cpu(), batch_first=True,
                                      enforce_sorted=False)
        states, last = rnn(packed)
        states, _ = pad_packed_sequence(states, batch_first=True, total_length=ids.shape[1])  # (B, N, 2H)
        return states, torch.cat([last[0], last[1]], -1)  # (B, N, 2H), (B, 2H)

    def forward(self, story: Tensor, question: Tensor) -> tuple[Tensor, Tensor]:
        """story (B, S, W), question (B, Wq) word ids -> logits (B, V), weights (B, 1, S)."""
        c = self.config
        check_story(story, question, c.vocab, c.memory_size)
        B, S, _ = story.shape
        words, sentence, lengths = self.flatten(story)  # (B, N) each, (B,)
        states, _ = self._run(self.story_rnn, words, lengths)  # (B, N, 2H)
        _, q = self._run(self.question_rnn, question, (question != 0).sum(1))  # (B, 2H)
        word_mask = words != 0  # (B, N) True = a real word, may attend
        context, w, _ = self.attention(q, states, states, word_mask)  # (B, 2H), (B, N)
        logits = self.out(self.drop(torch.cat([context, q], -1)))  # (B, V)
        per_sentence = w.new_zeros(B, S).scatter_add(1, sentence, w * word_mask.to(w.dtype))  # (B, S)
        return logits, per_sentence[:, None, :]  # (B, V), (B, 1, S)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


__all__ = ["MemNetConfig", "MemN2N", "ReaderConfig", "AttentiveReader", "position_encoding", "check_story",
           "READER_ATTENTION"]
