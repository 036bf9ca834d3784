"""``attnzoo bench``: attnzoo against what a user would otherwise run, in one process, same machine.

    attnzoo bench [--quick] [--case NAME ...] [--threads 2] [--device cpu|cuda] [--reps 5] [--out FILE.json]

Each case runs attnzoo and its peers on the same inputs, interleaved
repetition by repetition (so drift in the machine's speed hits all of them
alike), and reports per contender:

* the median wall-clock time of a repetition (after one warm-up),
* GFLOP/s where the work has a standard count (attention matmuls and projections),
* the peak memory of one repetition: on CUDA the allocator's own peak; on the
  CPU the peak resident memory of a fresh subprocess that builds the inputs,
  resets its high-water mark (``/proc/self/clear_refs``) and runs the
  repetition once (so earlier cases' allocations cannot hide a peak),
* ratios to each peer: speed = peer time / attnzoo time (above 1: attnzoo is
  faster), memory = attnzoo peak / peer peak (below 1: attnzoo uses less),

and checks them against the targets of the performance issue (the ``target``
column). Peers: naive eager attention, ``F.scaled_dot_product_attention``,
``nn.MultiheadAttention`` with and without weights, x-transformers'
``Attention`` (``pip install x-transformers``; skipped with a note when it is
missing), the broadcast additive attention of Keras and OpenNMT, ``nn.Dropout``,
and full recomputation for decoding. ``--quick`` runs small sizes only (seconds, not
minutes); the figures the README quotes come from the full run.

Shape legend: B batch, H heads, N sequence length (L = S = N), d head size,
A the additive score's hidden size, dim an activation's feature size.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .core.attend import attend
from .core.dropout import Dropout
from .core.kv_cache import KVCache
from .core.scores import AdditiveScore
from .mechanisms.multihead import MultiHeadAttention
from .models.lm import DecoderLM, LMConfig
from .positions.alibi import ALiBi

Step = Callable[[], None]
#: a contender: (size, device) -> a function running one repetition
Factory = Callable[[dict, str], Step]


@dataclass
class Case:
    """One comparison: attnzoo (the first contender) against its peers, at each size."""

    name: str
    what: str
    sizes: list[dict]
    quick_sizes: list[dict]
    contenders: dict[str, Factory]
    flops: Callable[[dict], float] | None = None
    #: (peer, "speed" | "memory", bound): speed ratio >= bound, or memory ratio <= bound
    targets: list[tuple[str, str, float]] = field(default_factory=list)
    #: device types the targets are for (a CPU-only speed-up has none on CUDA, where both sides run one kernel)
    targets_on: tuple[str, ...] = ("cpu", "cuda")


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


def _mha_flops(size: dict, train: bool = True) -> float:
    B, N, H, d = size["B"], size["N"], size["H"], size["d"]
    dim = H * d
    fwd = 4 * B * H * N * N * d + 2 * B * N * dim * dim * 4  # QK^T and AV; q, k, v and out projections
    return 3 * fwd if train else fwd


# --------------------------------------------------------------------------- cases
def _mha_train_contenders(bf16: bool = False) -> dict[str, Factory]:
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


def _mha_infer_contenders() -> dict[str, Factory]:
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


def _dropout_contenders() -> dict[str, Factory]:
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


def _weights_contenders(train: bool) -> dict[str, Factory]:
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


def _additive_contenders() -> dict[str, Factory]:
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


def _alibi_contenders() -> dict[str, Factory]:
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
        bias = -alibi.slopes.to(device).view(H, 1, 1) * (i[:, None] - i[None, :]).abs()  # (H, N, N)
        bias = bias.masked_fill(i[None, :] > i[:, None], float("-inf"))
        return _train(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bias), [q, k, v])

    return {"attnzoo attend(score_mod=ALiBi)": ours, "attnzoo eager (the reference)": eager,
            "SDPA with a materialised ALiBi bias": sdpa_bias}


def _decode_contenders() -> dict[str, Factory]:
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


def cases() -> list[Case]:
    mha = dict(B=1, H=8, d=64)
    return [
        Case("mha-train", "multi-head self-attention, forward+backward, float32",
             [dict(mha, N=n) for n in (1024, 2048, 4096)], [dict(mha, N=256)], _mha_train_contenders(),
             flops=_mha_flops,
             targets=[("nn.MultiheadAttention(need_weights=False)", "speed", 1.0), ("raw SDPA layer", "speed", 0.95)]),
        Case("mha-infer", "multi-head self-attention, inference (eval, no grad)",
             [dict(mha, N=2048)], [dict(mha, N=256)], _mha_infer_contenders(),
             flops=lambda s: _mha_flops(s, train=False),
             targets=[("nn.MultiheadAttention(need_weights=False)", "speed", 2.0)]),
        Case("weights-infer", "multi-head self-attention returning per-head weights, inference",
             [dict(mha, N=2048)], [dict(mha, N=256)], _weights_contenders(train=False),
             flops=lambda s: _mha_flops(s, train=False),
             targets=[("nn.MultiheadAttention(need_weights=True, average_attn_weights=False)", "speed", 1.25)]),
        Case("weights-train", "multi-head self-attention returning per-head weights, forward+backward",
             [dict(mha, N=2048)], [dict(mha, N=256)], _weights_contenders(train=True),
             flops=_mha_flops,
             targets=[("nn.MultiheadAttention(need_weights=True, average_attn_weights=False)", "speed", 1.25)]),
        Case("additive", "additive (Bahdanau) attention, forward+backward, L = S = N",
             [dict(B=4, N=512, A=256)], [dict(B=2, N=128, A=64)], _additive_contenders(),
             targets=[("naive broadcast additive (Keras, OpenNMT)", "memory", 1 / 8),
                      ("naive broadcast additive (Keras, OpenNMT)", "speed", 2.0)]),
        Case("alibi", "causal dot-product attention with an ALiBi score_mod, forward+backward",
             [dict(B=1, H=8, d=64, N=4096)], [dict(B=1, H=8, d=64, N=512)], _alibi_contenders(),
             flops=lambda s: 3 * 4 * s["B"] * s["H"] * s["N"] * s["N"] * s["d"] / 2,
             targets=[("attnzoo eager (the reference)", "memory", 1 / 10),
                      ("attnzoo eager (the reference)", "speed", 1.0)]),
        Case("mha-train-bf16-short", "multi-head self-attention, forward+backward under bfloat16 autocast, "
             "g2p-sized sequences", [dict(B=256, H=4, d=32, N=16)], [dict(B=16, H=4, d=32, N=16)],
             _mha_train_contenders(bf16=True), flops=_mha_flops,
             targets=[("nn.MultiheadAttention(need_weights=False)", "speed", 1.5)], targets_on=("cpu",)),
        Case("dropout", "dropout (p = 0.1) on a bfloat16 (B, N, dim) activation, forward+backward",
             [dict(B=256, N=16, dim=512)], [dict(B=16, N=16, dim=64)], _dropout_contenders(),
             targets=[("nn.Dropout", "speed", 2.0)], targets_on=("cpu",)),
        Case("decode", "greedy decoding of an LM up to its full context: the last `new` tokens, prefix already read",
             [dict(dim=256, H=4, layers=4, context=1024, new=16)], [dict(dim=64, H=4, layers=2, context=128, new=8)],
             _decode_contenders(), targets=[("full recomputation per token", "speed", 5.0)]),
    ]


# --------------------------------------------------------------------------- measuring
def _time(steps: dict[str, Step], reps: int, device: str) -> dict[str, list[float]]:
    """Seconds per repetition for each contender, interleaved; one untimed warm-up each."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for step in steps.values():
        step()
    sync()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(reps):
        for name, step in steps.items():
            sync()
            t0 = time.perf_counter()
            step()
            sync()
            times[name].append(time.perf_counter() - t0)
    return times


def _rss_peak_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _rss_now_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_memory_here(factory: Factory, size: dict, device: str) -> int:
    """Bytes one repetition adds at its peak, measured in this process (fresh: see _peak_memory)."""
    if device.startswith("cuda"):
        step = factory(size, device)
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    step = factory(size, device)
    base = _rss_now_bytes()
    with open("/proc/self/clear_refs", "w") as f:  # reset the high-water mark (Linux >= 4.0)
        f.write("5")
    step()
    return max(0, _rss_peak_bytes() - base)


def _peak_memory(case: str, contender: str, size: dict, device: str, threads: int) -> int | None:
    """Peak memory of one repetition in a fresh subprocess (None if the probe failed)."""
    if device.startswith("cuda"):
        return _peak_memory_here(_find(case, contender), size, device)
    cmd = [sys.executable, "-m", "attnzoo.bench", "--probe", json.dumps([case, contender, size, device, threads])]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return None
    return int(r.stdout.strip().splitlines()[-1])


def _find(case: str, contender: str) -> Factory:
    return {c.name: c for c in cases()}[case].contenders[contender]


# --------------------------------------------------------------------------- the run
def run(names: list[str] | None = None, quick: bool = False, device: str = "cpu", threads: int = 2,
        reps: int = 5, memory: bool = True, log=print) -> dict:
    torch.set_num_threads(threads)
    chosen = [c for c in cases() if not names or c.name in names]
    if names:
        unknown = set(names) - {c.name for c in cases()}
        if unknown:
            raise ValueError(f"unknown bench case {sorted(unknown)[0]!r}; expected one of "
                             f"{', '.join(c.name for c in cases())}")
    results = {"machine": machine(device, threads), "quick": quick, "reps": reps, "cases": []}
    for case in chosen:
        for size in case.quick_sizes if quick else case.sizes:
            steps, skipped = {}, {}
            for name, factory in case.contenders.items():
                try:
                    steps[name] = factory(size, device)
                except ImportError as e:
                    skipped[name] = f"not installed ({e.name})"
            times = _time(steps, reps, device)
            row = {"case": case.name, "what": case.what, "size": size, "contenders": {}, "skipped": skipped,
                   "targets": []}
            for name, ts in times.items():
                med = statistics.median(ts)
                entry = {"median_s": med, "times_s": ts}
                if case.flops is not None:
                    entry["gflops"] = case.flops(size) / med / 1e9
                if memory:
                    entry["peak_bytes"] = _peak_memory(case.name, name, size, device, threads)
                row["contenders"][name] = entry
            ours_name = next(iter(case.contenders))
            ours = row["contenders"][ours_name]
            for name, entry in row["contenders"].items():
                if name == ours_name:
                    continue
                entry["speed_ratio"] = entry["median_s"] / ours["median_s"]
                if entry.get("peak_bytes") and ours.get("peak_bytes") is not None:
                    entry["memory_ratio"] = ours["peak_bytes"] / entry["peak_bytes"]
            checked = not quick and device.split(":")[0] in case.targets_on  # targets: full sizes, their devices
            for peer, kind, bound in (case.targets if checked else []):
                entry = row["contenders"].get(peer)
                value = None if entry is None else entry.get(f"{kind}_ratio")
                ok = None if value is None else (value >= bound if kind == "speed" else value <= bound)
                row["targets"].append({"peer": peer, "kind": kind, "bound": bound, "value": value, "met": ok})
            results["cases"].append(row)
            log(format_row(row, ours_name))
    return results


def machine(device: str, threads: int) -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "threads": threads, "device": device, "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    info["cores"] = os.cpu_count()
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _mib(b: int | None) -> str:
    return "—" if b is None else f"{b / 2 ** 20:,.0f} MiB"


def format_row(row: dict, ours_name: str) -> str:
    size = ", ".join(f"{k}={v}" for k, v in row["size"].items())
    lines = [f"\n{row['case']} ({size}): {row['what']}",
             f"  {'contender':<70} {'median':>10} {'GFLOP/s':>8} {'peak mem':>11} {'speed x':>8} {'mem x':>7}"]
    for name, e in row["contenders"].items():
        gf = f"{e['gflops']:.1f}" if "gflops" in e else "—"
        sp = "—" if name == ours_name else f"{e['speed_ratio']:.2f}"
        mem = "—" if name == ours_name or "memory_ratio" not in e else f"{e['memory_ratio']:.3f}"
        lines.append(f"  {name:<70} {e['median_s'] * 1e3:>8.1f}ms {gf:>8} {_mib(e.get('peak_bytes')):>11} "
                     f"{sp:>8} {mem:>7}")
    for name, why in row["skipped"].items():
        lines.append(f"  {name:<70} skipped: {why}")
    for t in row["targets"]:
        sign = ">=" if t["kind"] == "speed" else "<="
        value = "not measured" if t["value"] is None else f"{t['value']:.3f}"
        verdict = {True: "met", False: "NOT met", None: "—"}[t["met"]]
        lines.append(f"  target: {t['kind']} vs {t['peer']} {sign} {t['bound']:.3g}: {value} ({verdict})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="attnzoo bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes only (seconds)")
    p.add_argument("--case", action="append", help="run only this case (repeatable): " +
                   ", ".join(c.name for c in cases()))
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--probe", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.probe:  # a fresh subprocess measuring one contender's peak memory
        case, contender, size, device, threads = json.loads(args.probe)
        torch.set_num_threads(threads)
        print(_peak_memory_here(_find(case, contender), size, device))
        return 0
    return cli(args)


def cli(args) -> int:
    """Run from ``attnzoo bench`` (shared with :func:`main`)."""
    if args.threads < 1 or args.reps < 1:
        raise ValueError(f"--threads and --reps must be >= 1, got {args.threads} and {args.reps}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available here; use --device cpu")
    results = run(args.case, quick=args.quick, device=args.device, threads=args.threads, reps=args.reps,
                  memory=not args.no_memory)
    results["command"] = "attnzoo bench " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["bench"] else sys.argv[1:])
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
        print(f"\nresults: {args.out}")
    return 0


if __name__ == "__main__":  # python -m attnzoo.bench, also the memory probes
    sys.exit(main())
