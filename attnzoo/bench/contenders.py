"""The contenders of ``attnzoo bench``: attnzoo's side and its peers, as factories of one repetition.

A factory takes a size (a dict of the shape legend's letters) and a device,
builds the layer and its inputs (seeded, so every contender sees the same
numbers) and returns a ``Step``: a function running one repetition. The peer
layers written here by hand (raw SDPA, textbook eager) are the baselines a
user would otherwise write.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.attend import attend
from ..core.dropout import Dropout
from ..core.kv_cache import KVCache
from ..core.scores import AdditiveScore
from ..mechanisms.multihead import MultiHeadAttention
from ..models import DecoderLM, LMConfig
from ..positions.alibi import ALiBi

Step = Callable[[], None]


class NotAtThisSize(Exception):
    """Raised by a factory for a size it cannot run (a materialised N x N path past memory): skipped, with why."""
#: a contender: (size, device) -> a function running one repetition
Factory = Callable[[dict, str], Step]


# --------------------------------------------------------------------------- helpers
def _train(fn: Callable[[], Tensor], params: list[Tensor], autocast: tuple[str, torch.dtype] | None = None) -> Step:
    """One forward+backward repetition of ``fn`` (its forward under ``autocast`` = (device type, dtype))."""
    def step():
        for p in params:
            p.grad = None
        with torch.autocast(*autocast) if autocast else contextlib.nullcontext():
            y = fn()
        y.float().sum().backward()
    return step


def _infer(fn: Callable[[], Tensor]) -> Step:
    def step():
        with torch.inference_mode():
            fn()
    return step


def _x(size: dict, device: str, grad: bool) -> Tensor:
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(size["B"], size["N"], size["H"] * size["d"], generator=g).to(device)
    return x.requires_grad_(grad)


def _ours(size: dict, device: str) -> MultiHeadAttention:
    torch.manual_seed(0)
    dim = size["H"] * size["d"]
    return MultiHeadAttention(dim, size["H"]).to(device)


def _torch_mha(size: dict, device: str) -> nn.MultiheadAttention:
    torch.manual_seed(0)
    return nn.MultiheadAttention(size["H"] * size["d"], size["H"], batch_first=True).to(device)


class _SDPALayer(nn.Module):
    """The same layer written by hand around F.scaled_dot_product_attention (what "raw SDPA" means here)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, N, dim = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)  # (B, H, N, d)
        o = F.scaled_dot_product_attention(q, k, v)
        return self.out(o.transpose(1, 2).reshape(B, N, dim))


class _EagerLayer(_SDPALayer):
    """The textbook layer: softmax(Q K^T / sqrt(d)) V with the full matrices."""

    def forward(self, x: Tensor, need_weights: bool = False):
        B, N, dim = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        w = torch.softmax((q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1]), dim=-1)  # (B, H, N, N)
        o = self.out((w @ v).transpose(1, 2).reshape(B, N, dim))
        return (o, w) if need_weights else o


def _x_transformers(size: dict, device: str):
    from x_transformers.x_transformers import Attention  # optional: pip install x-transformers

    torch.manual_seed(0)
    return Attention(dim=size["H"] * size["d"], heads=size["H"], dim_head=size["d"], flash=True).to(device)


# --------------------------------------------------------------------------- contenders, per case
def mha_train_contenders(bf16: bool = False) -> dict[str, Factory]:
    """Training steps of one self-attention layer; ``bf16``: under bfloat16 autocast, as ``attnzoo train`` runs
    where the hardware has it (against the two PyTorch layers only)."""
    def amp(device):
        return (device.split(":")[0], torch.bfloat16) if bf16 else None

    def ours(size, device):
        m, x = _ours(size, device), _x(size, device, True)
        return _train(lambda: m(x).output, [x, *m.parameters()], amp(device))

    def torch_mha(size, device):
        m, x = _torch_mha(size, device), _x(size, device, True)
        return _train(lambda: m(x, x, x, need_weights=False)[0], [x, *m.parameters()], amp(device))

    def sdpa(size, device):
        torch.manual_seed(0)
        m, x = _SDPALayer(size["H"] * size["d"], size["H"]).to(device), _x(size, device, True)
        return _train(lambda: m(x), [x, *m.parameters()], amp(device))

    def xt(size, device):
        m, x = _x_transformers(size, device), _x(size, device, True)
        return _train(lambda: m(x), [x, *m.parameters()])

    def eager(size, device):
        torch.manual_seed(0)
        m, x = _EagerLayer(size["H"] * size["d"], size["H"]).to(device), _x(size, device, True)
        return _train(lambda: m(x), [x, *m.parameters()])

    pytorch = {"attnzoo MultiHeadAttention": ours, "nn.MultiheadAttention(need_weights=False)": torch_mha,
               "raw SDPA layer": sdpa}
    return pytorch if bf16 else {**pytorch, "x-transformers Attention": xt, "naive eager": eager}


def mha_infer_contenders() -> dict[str, Factory]:
    """Inference (eval, no grad) of one self-attention layer."""
    def ours(size, device):
        m, x = _ours(size, device).eval(), _x(size, device, False)
        return _infer(lambda: m(x).output)

    def torch_mha(size, device):
        m, x = _torch_mha(size, device).eval(), _x(size, device, False)
        return _infer(lambda: m(x, x, x, need_weights=False)[0])

    def sdpa(size, device):
        torch.manual_seed(0)
        m, x = _SDPALayer(size["H"] * size["d"], size["H"]).to(device).eval(), _x(size, device, False)
        return _infer(lambda: m(x))

    def xt(size, device):
        m, x = _x_transformers(size, device).eval(), _x(size, device, False)
        return _infer(lambda: m(x))

    return {"attnzoo MultiHeadAttention": ours, "nn.MultiheadAttention(need_weights=False)": torch_mha,
            "raw SDPA layer": sdpa, "x-transformers Attention": xt}


def dropout_contenders() -> dict[str, Factory]:
    """Dropout's forward+backward on a bfloat16 activation."""
    def activation(size, device):
        g = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randn(size["B"], size["N"], size["dim"], generator=g).to(device, torch.bfloat16)
        return x.requires_grad_(True)

    def ours(size, device):
        m, x = Dropout(0.1), activation(size, device)
        return _train(lambda: m(x), [x])

    def torch_dropout(size, device):
        m, x = nn.Dropout(0.1), activation(size, device)
        return _train(lambda: m(x), [x])

    return {"attnzoo Dropout": ours, "nn.Dropout": torch_dropout}


def weights_contenders(train: bool) -> dict[str, Factory]:
    """Self-attention returning its per-head weights (in the graph when ``train``)."""
    wrap = (lambda fn, params: _train(fn, params)) if train else (lambda fn, params: _infer(fn))

    def ours(size, device):
        m, x = _ours(size, device), _x(size, device, train)
        m.train(train)

        def fn():
            out = m(x, need_weights=True)
            return out.output if not train else out.output + 0 * out.weights.sum()  # weights in the graph
        return wrap(fn, [x, *m.parameters()])

    def torch_mha(size, device):
        m, x = _torch_mha(size, device), _x(size, device, train)
        m.train(train)

        def fn():
            out, w = m(x, x, x, need_weights=True, average_attn_weights=False)
            return out if not train else out + 0 * w.sum()
        return wrap(fn, [x, *m.parameters()])

    def eager(size, device):
        torch.manual_seed(0)
        m, x = _EagerLayer(size["H"] * size["d"], size["H"]).to(device), _x(size, device, train)

        def fn():
            out, w = m(x, need_weights=True)
            return out if not train else out + 0 * w.sum()
        return wrap(fn, [x, *m.parameters()])

    return {"attnzoo MultiHeadAttention(need_weights=True)": ours,
            "nn.MultiheadAttention(need_weights=True, average_attn_weights=False)": torch_mha,
            "naive eager with weights": eager}


def additive_contenders() -> dict[str, Factory]:
    """Additive (Bahdanau) attention: attend's additive score against the broadcast (B, L, S, A) sum."""
    def inputs(size, device):
        g = torch.Generator(device="cpu").manual_seed(0)
        B, N, A = size["B"], size["N"], size["A"]
        q = torch.randn(B, N, A, generator=g).to(device).requires_grad_()
        k = torch.randn(B, N, A, generator=g).to(device).requires_grad_()
        v = torch.randn(B, N, A, generator=g).to(device).requires_grad_()
        torch.manual_seed(0)
        return q, k, v, AdditiveScore(A, A, A).to(device)

    def ours(size, device):
        q, k, v, score = inputs(size, device)
        return _train(lambda: attend(q, k, v, score=score).output, [q, k, v, *score.parameters()])

    def naive(size, device):
        """Keras AdditiveAttention / OpenNMT "mlp": tanh of a broadcast (B, L, S, A) sum."""
        q, k, v, score = inputs(size, device)

        def fn():
            e = score.energy(torch.tanh(score.query_proj(q)[:, :, None] + score.key_proj(k)[:, None])).squeeze(-1)
            return torch.softmax(e, dim=-1) @ v  # (B, L, A)
        return _train(fn, [q, k, v, *score.parameters()])

    return {"attnzoo attend(score=AdditiveScore)": ours, "naive broadcast additive (Keras, OpenNMT)": naive}


def alibi_contenders() -> dict[str, Factory]:
    """Causal attention with ALiBi: attend's score_mod against the eager reference and a materialised bias."""
    def inputs(size, device):
        g = torch.Generator(device="cpu").manual_seed(0)
        shape = (size["B"], size["H"], size["N"], size["d"])
        return [torch.randn(*shape, generator=g).to(device).requires_grad_() for _ in range(3)], ALiBi(size["H"])

    def ours(size, device):
        (q, k, v), alibi = inputs(size, device)
        return _train(lambda: attend(q, k, v, score_mod=alibi, is_causal=True).output, [q, k, v])

    def eager(size, device):
        (q, k, v), alibi = inputs(size, device)
        return _train(lambda: attend(q, k, v, score_mod=alibi, is_causal=True, backend="eager").output, [q, k, v])

    def sdpa_bias(size, device):
        """The usual way: materialise the (H, N, N) ALiBi bias with the causal mask and hand it to SDPA."""
        (q, k, v), alibi = inputs(size, device)
        N, H = size["N"], size["H"]
        i = torch.arange(N, device=device)
        bias = -alibi.slopes.to(device, torch.float32).view(H, 1, 1) * (i[:, None] - i[None, :]).abs()  # (H, N, N)
        bias = bias.masked_fill(i[None, :] > i[:, None], float("-inf"))
        return _train(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bias), [q, k, v])

    return {"attnzoo attend(score_mod=ALiBi)": ours, "attnzoo eager (the reference)": eager,
            "SDPA with a materialised ALiBi bias": sdpa_bias}


def decode_contenders() -> dict[str, Factory]:
    """Per generated token, with the prefix already read: the cache's step against recomputing it all."""
    def model(size, device):
        torch.manual_seed(0)
        cfg = LMConfig(vocab=96, dim=size["dim"], num_heads=size["H"], layers=size["layers"], dropout=0.0,
                       context=size["context"])
        m = DecoderLM(cfg).to(device).eval()
        g = torch.Generator(device="cpu").manual_seed(0)
        prefix = torch.randint(0, 96, (1, size["context"] - size["new"]), generator=g).to(device)
        return m, prefix

    def cached(size, device):
        m, prefix = model(size, device)
        with torch.inference_mode():
            caches = [KVCache() for _ in m.blocks]
            logits, _ = m(prefix, caches)  # the prompt, read once (not timed)
        filled = [(c.keys.clone(), c.values.clone()) for c in caches]

        def step():
            with torch.inference_mode():
                fresh = []
                for k, v in filled:  # the same prefilled state every repetition
                    c = KVCache()
                    c.append(k, v)
                    fresh.append(c)
                nxt = logits[:, -1:].argmax(-1)
                for _ in range(size["new"]):
                    nxt = m(nxt, fresh)[0][:, -1:].argmax(-1)  # (1, 1): one token through the cache
        return step

    def full(size, device):
        m, prefix = model(size, device)

        def step():
            with torch.inference_mode():
                seq = prefix
                for _ in range(size["new"]):  # every token recomputes the whole prefix
                    seq = torch.cat([seq, m(seq)[0][:, -1:].argmax(-1)], 1)
        return step

    return {"attnzoo KV-cached decoding": cached, "full recomputation per token": full}
