"""Backends agree; masks mean what they say; normalizers keep their promises."""

import pytest
import torch

from attnzoo import attend
from attnzoo.core import masks as M
from attnzoo.core.attend import CPU_BF16_EAGER_KEYS, choose_backend
from attnzoo.core.normalize import sparsemax
from attnzoo.core.scores import AdditiveScore, CosineScore, DotScore, GeneralScore, ScaledDotScore

torch.manual_seed(0)


def qkv(B=2, H=3, L=5, S=7, D=8, E=6, dtype=torch.float64):
    return (torch.randn(B, H, L, D, dtype=dtype, requires_grad=True),
            torch.randn(B, H, S, D, dtype=dtype, requires_grad=True),
            torch.randn(B, H, S, E, dtype=dtype, requires_grad=True))


def alibi_like(score, b, h, q_idx, kv_idx):
    return score - (h + 1) * 0.25 * (q_idx - kv_idx).abs()


alibi_like.additive = True

DOT_SCORES = [DotScore(), ScaledDotScore(), GeneralScore(8, 8).double(), CosineScore().double()]


@pytest.mark.parametrize("score", DOT_SCORES, ids=lambda s: s.name)
@pytest.mark.parametrize("extra", ["none", "mask", "bias", "score_mod", "causal", "full_row"])
def test_eager_and_sdpa_agree_outputs_and_gradients(score, extra):
    q, k, v = qkv()
    kw = {}
    if extra in ("mask", "full_row"):
        mask = torch.rand(2, 1, 5, 7) > 0.4
        mask[..., 0] = True
        if extra == "full_row":
            mask[1, 0, 2] = False
        kw["mask"] = mask
    if extra == "bias":
        kw["bias"] = torch.randn(1, 3, 5, 7, dtype=torch.float64)
    if extra == "score_mod":
        kw["score_mod"] = alibi_like
    if extra == "causal":
        kw["is_causal"] = True
    outs, grads = [], []
    for backend in ("eager", "sdpa"):
        out = attend(q, k, v, score=score, backend=backend, **kw).output
        g = torch.autograd.grad(out.sum() + (out ** 2).sum(), [q, k, v] + list(score.parameters()))
        outs.append(out)
        grads.append(g)
    assert torch.isfinite(outs[0]).all()
    torch.testing.assert_close(outs[0], outs[1])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    if extra == "full_row":
        assert (outs[1][1, :, 2] == 0).all()


def test_auto_picks_sdpa_only_where_valid():
    dot, add = ScaledDotScore(), AdditiveScore(4, 4)
    assert choose_backend("auto", dot, "softmax", False, None) == "sdpa"
    assert choose_backend("auto", dot, "softmax", True, None) == "eager"
    assert choose_backend("auto", dot, "sparsemax", False, None) == "eager"
    assert choose_backend("auto", add, "softmax", False, None) == "eager"
    assert choose_backend("auto", dot, "softmax", False, lambda s, b, h, q, k: s * 2) == "eager"
    assert choose_backend("auto", dot, "softmax", False, alibi_like) == "sdpa"


def test_auto_runs_short_bfloat16_cpu_calls_eagerly():
    """PyTorch's bfloat16 CPU flash kernel is slower than materialised scores for short keys (CPU_BF16_EAGER_KEYS)."""
    dot, cpu = ScaledDotScore(), torch.device("cpu")
    short, long = (256, 4, 12, CPU_BF16_EAGER_KEYS), (2, 4, 12, CPU_BF16_EAGER_KEYS + 1)
    assert choose_backend("auto", dot, "softmax", False, None, grid=short, device=cpu, dtype=torch.bfloat16) == "eager"
    assert choose_backend("auto", dot, "softmax", False, None, grid=long, device=cpu, dtype=torch.bfloat16) == "sdpa"
    for dtype in (torch.float32, torch.float16):  # their CPU kernels are fast: SDPA stays
        assert choose_backend("auto", dot, "softmax", False, None, grid=short, device=cpu, dtype=dtype) == "sdpa"
    assert choose_backend("sdpa", dot, "softmax", False, None, grid=short, device=cpu, dtype=torch.bfloat16) == "sdpa"
    huge = (2 ** 20, 16, 128, 128)  # past the materialise budget: never eager
    assert choose_backend("auto", dot, "softmax", False, None, grid=huge, device=cpu, dtype=torch.bfloat16) == "sdpa"


@pytest.mark.parametrize("causal", [False, True])
def test_short_bfloat16_cpu_attention_is_the_eager_path_and_near_float64(causal):
    q, k, v = (t.detach().bfloat16().requires_grad_() for t in qkv(B=8, L=9, S=9))
    mask = torch.rand(8, 1, 1, 9) < 0.8
    mask[..., 0] = True
    kw = dict(mask=None if causal else mask, is_causal=causal)
    auto = attend(q, k, v, **kw).output
    eager = attend(q, k, v, backend="eager", **kw).output
    assert torch.equal(auto, eager)
    reference = attend(q.double(), k.double(), v.double(), backend="eager", **kw).output
    torch.testing.assert_close(auto.double(), reference, atol=3e-2, rtol=3e-2)
    sdpa = attend(q, k, v, backend="sdpa", **kw).output
    torch.testing.assert_close(auto, sdpa, atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("kw, words", [
    (dict(normalize="sparsemax"), "sparsemax"),
    (dict(need_weights=True), "need_weights"),
    (dict(score=AdditiveScore(8, 8).double()), "not a dot product"),
])
def test_invalid_sdpa_request_is_a_clear_error(kw, words):
    q, k, v = qkv()
    with pytest.raises(ValueError, match=words) as e:
        attend(q, k, v, backend="sdpa", **kw)
    assert "backend='eager'" in str(e.value)


@pytest.mark.parametrize("normalize, backend", [("softmax", "eager"), ("softmax", "sdpa"), ("sparsemax", "eager")])
def test_masked_keys_change_nothing(normalize, backend):
    q, k, v = qkv()
    mask = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    mask[..., 4:] = False
    out = attend(q, k, v, mask=mask, normalize=normalize, backend=backend).output
    k2, v2 = k.detach().clone(), v.detach().clone()
    k2[:, :, 4:] = 1e4 * torch.randn_like(k2[:, :, 4:])
    v2[:, :, 4:] = torch.randn_like(v2[:, :, 4:])
    out2 = attend(q, k2, v2, mask=mask, normalize=normalize, backend=backend).output
    torch.testing.assert_close(out, out2)


@pytest.mark.parametrize("normalize", ["softmax", "sparsemax"])
def test_fully_masked_row_gives_zeros_and_finite_gradients(normalize):
    q, k, v = qkv()
    mask = torch.ones(2, 3, 5, 7, dtype=torch.bool)
    mask[0, 1, 3] = False
    res = attend(q, k, v, mask=mask, normalize=normalize, need_weights=True)
    assert (res.weights[0, 1, 3] == 0).all() and (res.output[0, 1, 3] == 0).all()
    torch.testing.assert_close(res.weights.sum(-1)[mask.any(-1)],
                               torch.ones(int(mask.any(-1).sum()), dtype=torch.float64))
    grads = torch.autograd.grad(res.output.sum(), [q, k, v])
    assert all(torch.isfinite(g).all() for g in grads)


def test_sparsemax_matches_its_closed_form_and_is_sparse():
    z = torch.tensor([[1.0, 0.8, 0.1, -1.0], [3.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    # row 0: support {0,1}: tau = (1 + 0.8 - 1)/2 = 0.4 -> (0.6, 0.4, 0, 0); row 1: (1, 0, 0, 0)
    torch.testing.assert_close(sparsemax(z), torch.tensor([[0.6, 0.4, 0, 0], [1.0, 0, 0, 0]], dtype=torch.float64))
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: sparsemax(t), (x,))


def test_sparsemax_is_the_simplex_projection():
    torch.manual_seed(1)
    z = torch.randn(5, 6, dtype=torch.float64)
    p = sparsemax(z)
    assert (p >= 0).all()
    torch.testing.assert_close(p.sum(-1), torch.ones(5, dtype=torch.float64))
    # projection optimality: no random point of the simplex is closer to z
    for _ in range(200):
        r = torch.distributions.Dirichlet(torch.ones(6, dtype=torch.float64)).sample((5,))
        assert ((p - z).pow(2).sum(-1) <= (r - z).pow(2).sum(-1) + 1e-12).all()


def test_softmax_is_float32_for_low_precision_inputs():
    q, k, v = (t.detach().to(torch.bfloat16) for t in qkv())
    res = attend(q, k, v, need_weights=True)
    assert res.weights.dtype == torch.float32 and res.output.dtype == torch.bfloat16
    assert torch.isfinite(res.output).all()


def test_mask_builders_and_combinators():
    lengths = torch.tensor([2, 4])
    assert M.padding_mask(lengths, 5).tolist() == [[True, True, False, False, False], [True] * 4 + [False]]
    c = M.causal_mask(3)
    assert c.tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    w = M.sliding_window_mask(4, window=2)
    assert w.tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]
    mod = M.and_masks(M.causal, M.sliding_window(2), M.padding(lengths))
    grid = M.create_mask(mod, 2, 1, 4, 4)
    assert grid.shape == (2, 1, 4, 4)
    assert torch.equal(grid[1, 0], w.bool())
    assert torch.equal(grid[0, 0], w.bool() & (torch.arange(4) < 2))
    either = M.create_mask(M.or_masks(M.causal, M.not_mask(M.causal)), 1, 1, 3, 3)
    assert either.all()
    assert torch.equal(M.create_mask(M.causal, 1, 1, 3, 3)[0, 0], M.causal_mask(3))


def test_autocast_mixed_input_dtypes_are_accepted_and_close_to_float32():
    q, k, v = (t.detach().float() for t in qkv())
    ref = attend(q, k, v).output
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attend(q.bfloat16(), k, v).output  # an LSTM under autocast hands bf16 next to fp32
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=5e-2, rtol=5e-2)


def test_auto_materialises_on_cuda_while_the_gpu_has_room(monkeypatch):
    """On CUDA one materialised kernel beats Python-level blocks: auto takes eager/sdpa up to the budget."""
    import importlib

    attend_module = importlib.import_module("attnzoo.core.attend")  # the module, not the function
    budget_module = importlib.import_module("attnzoo.core.budget")
    from attnzoo.positions import ALiBi

    monkeypatch.setattr(budget_module, "_cuda_memory", lambda index: 80 * 2 ** 30)  # an 80 GiB card
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert budget_module.materialise_budget(cuda) == 5 * 2 ** 30
    assert budget_module.materialise_budget(cpu) == budget_module.CHUNKED_AUTO_BYTES
    dot, additive = ScaledDotScore(), AdditiveScore(8, 8)
    choose = attend_module.choose_backend
    mid, huge = (1, 8, 4096, 4096), (8, 16, 16384, 16384)  # 512 MiB and 128 GiB of float32 scores
    alibi = ALiBi(8)
    assert choose("auto", dot, "softmax", False, alibi, grid=mid, device=cpu) == "chunked"
    assert choose("auto", dot, "softmax", False, alibi, grid=mid, device=cuda) == "sdpa"
    assert choose("auto", dot, "softmax", False, alibi, grid=huge, device=cuda) == "chunked"
    assert choose("auto", dot, "softmax", True, None, grid=mid, device=cpu) == "tiled"
    assert choose("auto", dot, "softmax", True, None, grid=mid, device=cuda) == "eager"
    assert choose("auto", dot, "softmax", True, None, grid=huge, device=cuda) == "tiled"
    assert choose("auto", additive, "softmax", False, None, grid=mid, device=cpu) == "chunked"
    assert choose("auto", additive, "softmax", False, None, grid=mid, device=cuda) == "eager"
    assert choose("auto", additive, "softmax", False, None, grid=huge, device=cuda) == "chunked"
