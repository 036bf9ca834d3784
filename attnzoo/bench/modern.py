"""Contenders for the modern mechanisms in ``attnzoo bench``: linear attention against SDPA's flash kernel,
sliding windows against a materialised mask, MLA's latent cache against MHA's and GQA's when decoding, and
the stage variants (sinks, soft-capping, MLA, gates) against x-transformers' versions of them.

The attention-core cases (linear, sliding) time the op on (B, H, N, d) heads that every contender shares;
the decoding and layer cases time whole layers of width H d.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.attend import attend
from ..core.kv_cache import KVCache
from ..core.masks import sliding_window, sliding_window_mask
from ..mechanisms.linear import LinearState, causal_linear_attention
from ..mechanisms.multihead import MultiHeadAttention, MultiHeadLatentAttention
from ..registry import create
from .contenders import Factory, NotAtThisSize, Step, _train, _x

#: the eager reference materialises (B, H, N, N) scores, probabilities and their gradients: only up to this N
EAGER_MAX_N = 4096


def _heads(size: dict, device: str) -> list[Tensor]:
    g = torch.Generator(device="cpu").manual_seed(0)
    shape = (size["B"], size["H"], size["N"], size["d"])
    return [torch.randn(*shape, generator=g).to(device).requires_grad_() for _ in range(3)]


# --------------------------------------------------------------------------- linear attention
def linear_contenders() -> dict[str, Factory]:
    """Causal attention on shared heads, forward+backward: linear attention's chunked prefix sums against the
    exact softmax of SDPA's flash kernel."""
    def ours(size, device):
        q, k, v = _heads(size, device)

        return _train(lambda: causal_linear_attention(F.elu(q) + 1, F.elu(k) + 1, v), [q, k, v])

    def sdpa(size, device):
        q, k, v = _heads(size, device)
        return _train(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), [q, k, v])

    return {"attnzoo causal linear attention (chunked prefix sums)": ours, "SDPA flash (causal softmax)": sdpa}


def _decode(layer, size: dict, device: str, cache_of) -> Step:
    """Decode ``new`` tokens, one at a time, after a prefix of ``context`` tokens already in the cache."""
    g = torch.Generator(device="cpu").manual_seed(0)
    dim = size["H"] * size["d"]
    prefix = torch.randn(1, size["context"], dim, generator=g).to(device)
    tokens = torch.randn(1, size["new"], dim, generator=g).to(device)
    with torch.inference_mode():
        filled = cache_of(layer)
        layer(prefix, is_causal=True, cache=filled)  # read once, not timed

    def step():
        with torch.inference_mode():
            cache = _copy(filled)  # the same prefilled state every repetition
            for t in range(size["new"]):
                layer(tokens[:, t:t + 1], is_causal=True, cache=cache)
    return step


def _copy(cache):
    """A fresh cache holding what ``cache`` holds (a KVCache's keys and values, a LinearState's sums)."""
    if isinstance(cache, LinearState):
        return LinearState(cache.kv.clone(), cache.z.clone(), cache.position)
    fresh = KVCache()
    fresh.append(cache.keys.clone(), cache.values.clone())
    return fresh


def linear_decode_contenders() -> dict[str, Factory]:
    """Decoding after a long prefix: linear attention's constant-size state against MHA's growing KV cache."""
    def build(name):
        def factory(size, device):
            torch.manual_seed(0)
            layer = create(name, dim=size["H"] * size["d"], num_heads=size["H"]).to(device).eval()
            return _decode(layer, size, device, lambda m: m.new_cache() if hasattr(m, "new_cache") else KVCache())
        return factory

    return {"attnzoo linear attention (LinearState)": build("linear"), "attnzoo MHA (KVCache)": build("mha")}


# --------------------------------------------------------------------------- sliding windows
def sliding_contenders() -> dict[str, Factory]:
    """Causal sliding-window attention (window w), forward+backward on shared heads: the chunked backend that
    skips blocks outside the band, against SDPA given the window as a materialised mask, and the eager path."""
    def ours(size, device):
        q, k, v = _heads(size, device)
        band = sliding_window(size["w"])
        return _train(lambda: attend(q, k, v, mask_mod=band).output, [q, k, v])

    def sdpa_mask(size, device):
        q, k, v = _heads(size, device)
        mask = sliding_window_mask(size["N"], window=size["w"], device=device)  # (N, N) boolean
        return _train(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask), [q, k, v])

    def eager(size, device):
        if size["N"] > EAGER_MAX_N:
            raise NotAtThisSize(f"N > {EAGER_MAX_N}: its (B, H, N, N) matrices would take "
                                f"{3 * 4 * size['B'] * size['H'] * size['N'] ** 2 / 2 ** 30:.0f} GiB")
        q, k, v = _heads(size, device)
        mask = sliding_window_mask(size["N"], window=size["w"], device=device)
        return _train(lambda: attend(q, k, v, mask=mask, backend="eager").output, [q, k, v])

    return {"attnzoo sliding window (chunked, skips blocks)": ours,
            "SDPA with a materialised window mask": sdpa_mask, "attnzoo eager (the reference)": eager}


# --------------------------------------------------------------------------- MLA's cache
def mla_decode_contenders() -> dict[str, Factory]:
    """Decoding after a long prefix at one model width: MLA's latent cache (absorbed form) against MHA's and
    GQA's KV caches (peak memory: a copy of the filled cache, i.e. its bytes)."""
    def mla(size, device):
        torch.manual_seed(0)
        layer = MultiHeadLatentAttention(size["H"] * size["d"], size["H"]).to(device).eval()
        return _decode(layer, size, device, lambda m: KVCache())

    def mha(kv_heads):
        def factory(size, device):
            torch.manual_seed(0)
            layer = MultiHeadAttention(size["H"] * size["d"], size["H"], kv_heads).to(device).eval()
            return _decode(layer, size, device, lambda m: KVCache())
        return factory

    return {"attnzoo MLA (latent cache, absorbed)": mla, "attnzoo MHA (KVCache)": mha(None),
            "attnzoo GQA, 2 key/value heads (KVCache)": mha(2)}


# --------------------------------------------------------------------------- against x-transformers
def _xt_attention(size: dict, device: str, **options):
    from x_transformers.x_transformers import Attention  # optional: pip install x-transformers

    torch.manual_seed(0)
    return Attention(dim=size["H"] * size["d"], heads=size["H"], dim_head=size["d"], causal=True,
                     **options).to(device)


def stage_contenders(name: str, ours_options: dict, xt_options: dict) -> dict[str, Factory]:
    """One causal self-attention layer, forward+backward: attnzoo's ``name`` against x-transformers' Attention
    with the matching options, and attnzoo's plain MHA (what the stage costs)."""
    def ours(size, device):
        torch.manual_seed(0)
        m = create(name, dim=size["H"] * size["d"], num_heads=size["H"], **ours_options).to(device)
        x = _x(size, device, True)
        return _train(lambda: m(x, is_causal=True).output, [x, *m.parameters()])

    def xt(size, device):
        m, x = _xt_attention(size, device, **xt_options), _x(size, device, True)
        return _train(lambda: m(x), [x, *m.parameters()])

    def mha(size, device):
        torch.manual_seed(0)
        m, x = MultiHeadAttention(size["H"] * size["d"], size["H"]).to(device), _x(size, device, True)
        return _train(lambda: m(x, is_causal=True).output, [x, *m.parameters()])

    return {f"attnzoo {name}": ours, f"x-transformers Attention({', '.join(xt_options)})": xt,
            "attnzoo MHA (no stage)": mha}
