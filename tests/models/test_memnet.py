"""MemN2N against its paper's equations (float64, a plain loop), gradients, masking; the attention reader."""

import pytest
import torch
from torch.func import functional_call

import attnzoo
from attnzoo.models.memnet import (
    READER_ATTENTION,
    AttentiveReader,
    MemN2N,
    MemNetConfig,
    ReaderConfig,
    position_encoding,
)

V = 9


def batch():
    """Two stories: 3 sentences, and 2 sentences then a padded one; words left-aligned, 0 pads."""
    story = torch.tensor([[[4, 5, 6, 0], [7, 5, 8, 4], [6, 6, 0, 0]],
                          [[8, 4, 0, 0], [5, 7, 6, 0], [0, 0, 0, 0]]])  # (B=2, S=3, W=4)
    question = torch.tensor([[7, 4, 0], [5, 8, 6]])  # (B, Wq)
    return story, question


def memnet(dtype=torch.float64, **kw):
    torch.manual_seed(0)
    options = {**dict(vocab=V, dim=5, hops=3, memory_size=4, init_std=0.5), **kw}
    return MemN2N(MemNetConfig(**options)).to(dtype)


def reference(model, story, question):
    """The paper's equations, one story, one sentence, one word and one dimension at a time."""
    c = model.config
    E = [e.weight.detach() for e in model.embed]
    T = model.temporal.detach() if model.temporal is not None else None
    d = c.dim

    def enc(ids, emb):  # sum_j l_j * E x_j
        words = [int(w) for w in ids if int(w) != 0]
        J = len(words)
        out = torch.zeros(d, dtype=emb.dtype)
        for j, w in enumerate(words, start=1):
            for k in range(1, d + 1):
                l_kj = (1 - j / J) - (k / d) * (1 - 2 * j / J) if c.position_encoding else 1.0
                out[k - 1] += l_kj * emb[w, k - 1]
        return out

    all_logits, all_weights = [], []
    for b in range(story.shape[0]):
        real = [i for i in range(story.shape[1]) if bool((story[b, i] != 0).any())]
        n = len(real)
        mem = [[enc(story[b, i], E[h]) + (T[h][n - 1 - i] if T is not None else 0) for i in real]
               for h in range(c.hops + 1)]
        u = enc(question[b], E[0])
        hops = []
        for k in range(c.hops):
            scores = torch.stack([u @ m for m in mem[k]])
            p = torch.exp(scores - scores.max())
            p = p / p.sum()
            o = sum(p[i] * mem[k + 1][i] for i in range(n))
            u = u + o
            row = torch.zeros(story.shape[1], dtype=u.dtype)
            row[real] = p
            hops.append(row)
        all_logits.append(E[-1] @ u)
        all_weights.append(torch.stack(hops))
    return torch.stack(all_logits), torch.stack(all_weights)


@pytest.mark.parametrize("options", [{}, dict(position_encoding=False), dict(temporal_encoding=False)])
def test_memn2n_matches_the_papers_equations_in_float64(options):
    model = memnet(**options)
    story, question = batch()
    logits, weights = model(story, question)
    ref_logits, ref_weights = reference(model, story, question)
    assert logits.shape == (2, V) and weights.shape == (2, 3, 3) and weights.dtype == torch.float64
    torch.testing.assert_close(weights, ref_weights, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-12, atol=1e-12)


def test_linear_start_drops_the_hops_softmax():
    model = memnet()
    story, question = batch()
    logits, weights = model(story, question, linear=True)
    ref = model.encode(story, model.embed[0]) + model.temporal[0][torch.tensor([[2, 1, 0], [1, 0, 0]])]
    u = model.encode(question, model.embed[0])
    first = torch.einsum("bsd,bd->bs", ref, u) * torch.tensor([[1.0, 1, 1], [1, 1, 0]], dtype=torch.float64)
    torch.testing.assert_close(weights[:, 0], first)  # raw scores, 0 at padding, no normalisation
    assert weights[1, :, 2].eq(0).all() and not torch.allclose(weights.sum(-1), torch.ones(2, 3, dtype=torch.float64))
    assert torch.isfinite(logits).all()


def test_position_encoding_is_the_papers_l_kj():
    ids = torch.tensor([[3, 5, 2, 0, 0]])  # J = 3 words, then padding
    pe = position_encoding(ids, 4, torch.float64)  # (1, 5, 4)
    for j in range(1, 4):
        for k in range(1, 5):
            assert pe[0, j - 1, k - 1].item() == pytest.approx((1 - j / 3) - (k / 4) * (1 - 2 * j / 3))
    assert torch.equal(pe[0, 3:], torch.zeros(2, 4, dtype=torch.float64))


def test_adjacent_weight_tying_shares_embeddings_between_hops():
    model = memnet()
    assert len(model.embed) == model.config.hops + 1  # E_0..E_K, not 2K + 2 matrices
    params = dict(model.named_parameters())
    assert set(params) == {f"embed.{i}.weight" for i in range(4)} | {"temporal"}
    story, question = batch()
    logits, _ = model(story, question)
    # the answer is read with W = (C^K)^T = E_K^T: nudging E_K's row of a word moves that word's logit
    grads = torch.autograd.grad(logits[0, 6], [params["embed.3.weight"], params["embed.0.weight"]])
    assert grads[0][6].abs().sum() > 0 and grads[1].abs().sum() > 0


def test_gradcheck():
    model = memnet(dim=3, hops=2)
    story, question = batch()
    names = [n for n, _ in model.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in model.parameters())

    def f(*ps):
        logits, weights = functional_call(model, dict(zip(names, ps)), (story, question))
        return logits, weights

    assert torch.autograd.gradcheck(f, params, eps=1e-6, atol=1e-6, fast_mode=True)


def test_padded_sentences_get_zero_weight_and_an_empty_story_zero_attention():
    model = memnet(torch.float32)
    story, question = batch()
    _, weights = model(story, question)
    assert torch.equal(weights[1, :, 2], torch.zeros(3))  # the padded third sentence of story 1
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3))
    with pytest.warns(UserWarning, match="False everywhere"):  # attend's warning: nothing to attend to
        logits, weights = model(torch.zeros(1, 2, 4, dtype=torch.long), question[:1])
    assert torch.equal(weights, torch.zeros(1, 3, 2)) and torch.isfinite(logits).all()


def test_the_hops_run_through_attnzoo_attend():
    model = memnet(torch.float32)
    story, question = batch()
    with attnzoo.capture(model) as maps:
        _, weights = model(story, question)
    assert list(maps) == ["MemN2N"] and len(maps["MemN2N"]) == 3
    for k, w in enumerate(maps["MemN2N"]):
        torch.testing.assert_close(w[:, 0], weights[:, k])  # (B, 1, S): one query per story


@pytest.mark.parametrize("attention", READER_ATTENTION)
def test_the_reader_with_every_content_mechanism(attention):
    torch.manual_seed(0)
    model = AttentiveReader(ReaderConfig(vocab=V, embed_dim=6, hidden_dim=4, attention=attention, dropout=0.0,
                                         memory_size=4)).eval()
    story, question = batch()
    logits, weights = model(story, question)
    assert logits.shape == (2, V) and weights.shape == (2, 1, 3)
    assert weights[1, 0, 2] == 0  # the padded sentence
    total = weights.sum(-1)
    if attention != "sparsemax":
        torch.testing.assert_close(total, torch.ones(2, 1))  # word weights summed per sentence
    logits.sum().backward()
    assert all(p.grad is not None for p in model.attention.parameters())


def test_the_reader_reads_the_words_in_order():
    story, _ = batch()
    words, sentence, lengths = AttentiveReader.flatten(story)
    assert lengths.tolist() == [9, 5] and words.shape == (2, 9)
    assert words[0].tolist() == [4, 5, 6, 7, 5, 8, 4, 6, 6] and sentence[0].tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert words[1, :5].tolist() == [8, 4, 5, 7, 6] and sentence[1, :5].tolist() == [0, 0, 1, 1, 1]
    assert words[1, 5:].tolist() == [0] * 4


def test_bad_input_is_named():
    model = memnet(torch.float32)
    story, question = batch()
    with pytest.raises(ValueError, match=r"story must have shape \(B, S, W\).*got \(2, 3\)"):
        model(story[:, :, 0], question)
    with pytest.raises(ValueError, match=r"same batch size B"):
        model(story, question[:1])
    with pytest.raises(ValueError, match=r"has 5 sentences, more than the model's memory_size=4"):
        model(torch.ones(1, 5, 2, dtype=torch.long), question[:1])
    with pytest.raises(ValueError, match=r"story holds token id 13, outside the model's vocabulary \[0, 9\)"):
        model(story + 5, question)
    with pytest.raises(TypeError, match=r"question must hold integer token ids"):
        model(story, question.float())
    with pytest.raises(ValueError, match=r"ReaderConfig: unknown attention 'mha'"):
        ReaderConfig(vocab=V, attention="mha")
    with pytest.raises(ValueError, match="hops must be a positive int"):
        MemNetConfig(vocab=V, hops=0)
