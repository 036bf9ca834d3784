"""ConvS2S (Gehring 2017): the model against a loop over its equations, cached step decoding equal to the
full pass, padding and causality, the shared decoders, the factory and a short training run."""

import json
import math
import random

import pytest
import torch

from attnzoo.cli import main
from attnzoo.models.convs2s import ConvS2S, ConvS2SConfig
from attnzoo.models.decoding import beam_search, greedy_decode
from attnzoo.models.factory import build_seq2seq, check_model

HALF = math.sqrt(0.5)


def tiny(**kw):
    torch.manual_seed(0)
    cfg = dict(src_vocab=12, tgt_vocab=10, embed_dim=6, hidden_dim=8, enc_layers=2, dec_layers=3, enc_kernel=3,
               dec_kernel=3, dropout=0.0)
    cfg.update(kw)
    return ConvS2S(ConvS2SConfig(**cfg)).eval()


def batch():
    torch.manual_seed(1)
    src = torch.randint(4, 12, (3, 6))
    lengths = torch.tensor([6, 3, 5])
    src[torch.arange(6)[None, :] >= lengths[:, None]] = 0
    return src, lengths


def reference(model, src, lengths, tgt):
    """The teacher-forced pass by loops over positions and taps: -> logits (B, T, V), every layer's weights."""
    c = model.config
    B, S = src.shape
    T = tgt.shape[1]
    lin = lambda layer, x: x @ layer.weight.t() + layer.bias  # noqa: E731

    def conv_at(conv, x, i, left, real):
        """GLU(sum_k W_k x_(i+k-left) + b) over the positions ``real`` allows (zeros elsewhere)."""
        W = conv.weight  # (2C, C, K) (weight-normalised when the model is)
        acc = conv.bias.clone()
        for k in range(W.shape[-1]):
            j = i + k - left
            if 0 <= j < x.shape[0] and real(j):
                acc = acc + W[:, :, k] @ x[j]
        C = acc.shape[0] // 2
        return acc[:C] * torch.sigmoid(acc[C:])

    logits = torch.zeros(B, T, c.tgt_vocab, dtype=torch.float64)
    weights = torch.zeros(c.dec_layers, B, T, S, dtype=torch.float64)
    for b in range(B):
        n = int(lengths[b])
        e = model.src_embed.weight[src[b, :n]] + model.src_pos.weight[:n]  # only the real positions
        x = lin(model.enc_in, e)
        for conv in model.encoder:
            x = torch.stack([conv_at(conv, x, i, (c.enc_kernel - 1) // 2, lambda j: True) for i in range(n)]) + x
            x = x * HALF
        z = lin(model.enc_out, x)
        v = z + e
        g = model.tgt_embed.weight[tgt[b]] + model.tgt_pos.weight[:T]
        h = lin(model.dec_in, g)
        for layer, (conv, attn) in enumerate(zip(model.decoder, model.attention)):
            new = []
            for i in range(T):
                hi = conv_at(conv, h, i, c.dec_kernel - 1, lambda j: True)
                d = HALF * (lin(attn.in_proj, hi) + g[i])
                a = torch.softmax(z @ d, 0)
                weights[layer, b, i, :n] = a
                ci = math.sqrt(n) * HALF * (a @ v)
                new.append(HALF * (lin(attn.o_proj, ci) + hi))
            h = (torch.stack(new) + h) * HALF
        logits[b] = lin(model.generator, lin(model.dec_out, h))
    return logits, weights


@pytest.mark.parametrize("weight_norm", [True, False])
@pytest.mark.parametrize("kernels", [(3, 3), (2, 4), (1, 1)])
def test_the_full_pass_equals_the_loop_over_the_paper_equations(weight_norm, kernels):
    model = tiny(weight_norm=weight_norm, enc_kernel=kernels[0], dec_kernel=kernels[1]).double()
    src, lengths = batch()
    tgt = torch.randint(3, 10, (3, 5))
    with torch.no_grad():
        logits, w = model(src, lengths, tgt, need_weights=True)
        maps = model.attention_maps(src, lengths, tgt)["cross"]
        want, want_w = reference(model, src, lengths, tgt)
    torch.testing.assert_close(logits, want, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(w, want_w[-1], atol=1e-10, rtol=1e-8)  # the step weights: the last layer's
    assert maps.shape == (3, 3, 1, 5, 6)  # (layers, B, heads=1, T, S)
    torch.testing.assert_close(maps[:, :, 0].double(), want_w, atol=1e-6, rtol=1e-5)


def test_weight_norm_splits_every_weight_into_a_direction_and_a_gain():
    model = tiny(weight_norm=True)
    conv = model.decoder[0]
    v, g = conv.parametrizations.weight.original1, conv.parametrizations.weight.original0
    torch.testing.assert_close(conv.weight, g * v / v.flatten(1).norm(dim=1)[:, None, None])
    weight_normed = sum(1 for n, _ in model.named_parameters() if n.endswith("original0"))
    assert weight_normed == 2 + 2 + 2 + 3 + 6 + 1  # every linear and conv
    assert not any("original" in n for n, _ in tiny(weight_norm=False).named_parameters())


@pytest.mark.parametrize("weight_norm", [True, False])
@pytest.mark.parametrize("dec_kernel", [1, 2, 3, 5])
def test_cached_step_decoding_equals_the_full_pass_token_by_token(weight_norm, dec_kernel):
    model = tiny(weight_norm=weight_norm, dec_kernel=dec_kernel)
    src, lengths = batch()
    tgt = torch.randint(3, 10, (3, 6))
    with torch.no_grad():
        full, full_w = model(src, lengths, tgt, need_weights=True)
        memory, state = model.encode(src, lengths)
        steps = []
        for t in range(6):
            logits, w, state = model.step(tgt[:, t], state, memory)
            steps.append((logits, w))
            assert state.step == t + 1 and all(x.shape == (3, dec_kernel - 1, 8) for x in state.windows)
    torch.testing.assert_close(torch.stack([s[0] for s in steps], 1), full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.stack([s[1] for s in steps], 1), full_w, atol=1e-5, rtol=1e-5)


def test_padding_changes_nothing_and_the_target_side_is_causal():
    model = tiny()
    src, lengths = batch()
    tgt = torch.randint(3, 10, (3, 5))
    with torch.no_grad():
        logits, w = model(src, lengths, tgt, need_weights=True)
        alone, _ = model(src[1:2, :3], lengths[1:2], tgt[1:2])
        noisy = src.clone()
        noisy[1, 3:] = 7  # other tokens where the mask says padding
        padded_noise, _ = model(noisy, lengths, tgt)
        changed = tgt.clone()
        changed[:, 3:] = 3
        prefix, _ = model(src, lengths, changed)
    torch.testing.assert_close(alone[0], logits[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded_noise, logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(prefix[:, :3], logits[:, :3], atol=1e-5, rtol=1e-5)  # no peeking ahead
    assert (w[1, :, 3:] == 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 5))


def test_the_encoder_gradient_is_scaled_by_one_over_twice_the_attention_layers():
    src, lengths = batch()
    tgt = torch.randint(3, 10, (3, 5))
    grads = {}
    for scale in (True, False):
        model = tiny(grad_scale=scale, weight_norm=False).double()
        model.loss(src, lengths, tgt).backward()
        grads[scale] = (model.encoder[0].weight.grad, model.decoder[0].weight.grad)
    torch.testing.assert_close(grads[True][0], grads[False][0] / (2 * 3))  # encoder layers: scaled
    torch.testing.assert_close(grads[True][1], grads[False][1])  # decoder: not


def test_gradcheck_through_the_model():
    """The logits' gradients with respect to the source embeddings and the decoder's input projection."""
    model = tiny(grad_scale=False, weight_norm=False, enc_layers=1, dec_layers=2).double()
    src, lengths = batch()
    tgt = torch.randint(3, 10, (3, 4))

    def logits(dec_in, emb):
        params = {"dec_in.weight": dec_in, "src_embed.weight": emb}
        return torch.func.functional_call(model, params, (src, lengths, tgt))[0]

    args = (model.dec_in.weight.detach().clone().requires_grad_(),
            model.src_embed.weight.detach().clone().requires_grad_())
    assert torch.autograd.gradcheck(logits, args)


def test_beam_one_equals_greedy_and_beams_decode():
    model = tiny()
    src, lengths = batch()
    g = greedy_decode(model, src, lengths, max_len=8)
    b = beam_search(model, src, lengths, max_len=8, beam_size=1)
    assert g.tokens == b.tokens
    b3 = beam_search(model, src, lengths, max_len=8, beam_size=3)
    assert len(b3.tokens) == 3 and all(w.shape[1] == int(n) for w, n in zip(b3.weights, lengths))


def test_positions_past_max_len_are_a_clear_error():
    model = tiny(max_len=6)
    src, lengths = batch()
    with pytest.raises(ValueError, match="longer than max_len=6"):
        model.encode(torch.ones(1, 7, dtype=torch.long) * 5, torch.tensor([7]))
    memory, state = model.encode(src, lengths)
    for _ in range(6):
        _, _, state = model.step(torch.full((3,), 4), state, memory)
    with pytest.raises(ValueError, match="decoding position 6 is past max_len=6"):
        model.step(torch.full((3,), 4), state, memory)


def test_factory_builds_convs2s_with_its_attention_only():
    m = build_seq2seq("convs2s", 12, 10, "multistep", dict(embed_dim=8, hidden_dim=8, enc_layers=1, dec_layers=1))
    assert isinstance(m, ConvS2S) and m.config.dec_layers == 1
    with pytest.raises(ValueError, match="does not fit the convs2s model's slot; choose one of: multistep"):
        check_model("convs2s", "additive", None)
    with pytest.raises(ValueError, match="did you mean 'hidden_dim'"):
        check_model("convs2s", "multistep", {"hiden_dim": 4})


def reversal_pairs(n=300):
    from attnzoo.data.userdata import Pair

    rng = random.Random(0)
    words = sorted({"".join(rng.choice("abcdef") for _ in range(rng.randint(2, 5))) for _ in range(n)})
    return [Pair(w, " ".join(reversed(w)), i + 1) for i, w in enumerate(words)]


TINY = dict(embed_dim=16, hidden_dim=16, enc_layers=2, dec_layers=2)


@pytest.mark.slow
def test_training_convs2s_for_a_few_steps_lowers_the_loss(tmp_path):
    from attnzoo.tasks import seq2seq

    cfg = seq2seq.PairsConfig(model="convs2s", epochs=8, batch_size=16, beam_size=2, lr=3e-3, device="cpu",
                              eval_every_minutes=0.004)  # an evaluation (and a train_loss record) every 0.24 s
    m = seq2seq.train(cfg, tmp_path / "run", model_overrides=TINY, progress=False, pairs=reversal_pairs())
    assert m["model"] == "convs2s" and m["attention"] == "multistep"
    losses = [json.loads(line)["train_loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) >= 2 and losses[-1] < losses[0] - 0.3, losses


@pytest.mark.slow
def test_train_seq2seq_cli_with_convs2s(tmp_path, capsys):
    data = tmp_path / "pairs.tsv"
    data.write_text("".join(f"{p.source}\t{p.target}\n" for p in reversal_pairs()), encoding="utf-8")
    out = tmp_path / "run"
    args = ["-q", "train", "seq2seq", "--data", str(data), "--model", "convs2s", "--epochs", "1", "--batch-size",
            "16", "--beam", "2", "--out", str(out)]
    for k, v in TINY.items():
        args += ["--set", f"{k}={v}"]
    assert main(args) == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert metrics["model"] == "convs2s" and config["model_config"]["dec_layers"] == 2
    assert config["model_config"]["max_len"] >= 64  # positions sized for the data, as the Transformer's
    html = (out / "report.html").read_text()
    assert "every decoder layer" in html and html.count("data:image/png;base64,") >= 3
    capsys.readouterr()
    assert main(["translate", str(out), "abc", "--beam", "1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
