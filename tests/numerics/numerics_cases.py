"""Shared builders for the numerics tests: every registered mechanism, tiny shapes, any dtype/device.

Step-wise mechanisms (content, location, soft_spatial) are run for a few
decoder steps with the explicit state; whole-sequence mechanisms
(self-attention, multi-head) as self- and cross-attention; blocks over a
feature map (se, cbam, nonlocal) on a (B, CH, H, W) map. Every input is a leaf
with ``requires_grad`` so the tests can check every gradient.

Shape legend: B batch, S source length, T decoder steps, L sequence length,
CH channels of a feature map, H x W its grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch

import attnzoo
from attnzoo.registry import MechanismInfo

B, DQ, DK, DV, HIDDEN = 2, 6, 5, 4, 7
DIM, HEADS = 8, 2
CH, GRID = 6, (3, 4)

#: constructor options that keep the tiny shapes meaningful (a window or filter smaller than S)
OPTIONS = {
    "location": dict(max_length=16),
    "location_aware": dict(channels=3, kernel_size=3, cumulative=True),
    "local_m": dict(window=2),
    "local_p": dict(window=2),
    "monotonic": dict(noise_std=0.0),  # train() mode: the differentiable expected alignment
    "se": dict(reduction=2), "cbam": dict(reduction=2, kernel_size=3),
}
#: extra variants worth running through the same checks
VARIANTS = {
    "additive": [dict(normalize="sparsemax")],
    "location_aware": [dict(cumulative=False)],
    "monotonic": [dict(hard=True)],  # the decoding path (one-hot stops)
    "soft_spatial": [dict(gate=False)],
    "se": [dict(residual_scale=True)],
    "cbam": [dict(residual_scale=True)],
    "nonlocal": [dict(subsample=True, residual="batchnorm")],
}

#: mechanisms whose weights are a distribution over the allowed keys (sum to one; one key -> weight 1).
#: The others follow an unnormalised equation: gmm (a soft window), local_p (window softmax times a
#: Gaussian), monotonic (the probability of stopping at each key, which may sum to less than one),
#: lightweight and dynamic (a kernel normalised over its K taps, whose taps outside the sequence or on
#: padding are lost: rows sum to one only where the whole window is real).
NORMALISED = {"dot", "scaled_dot", "general", "additive", "cosine", "location", "location_aware", "local_m",
              "self", "mha", "gqa", "mqa", "soft_spatial", "nonlocal", "aaconv", "multistep", "gated", "softcap",
              "sliding", "linear", "performer", "mla"}
#: (se and cbam: sigmoid gates in (0, 1), one per channel or position, not a distribution)
#: (sink: a softmax with one more zero-valued key, rows sum below one; sigmoid: each weight on its own)
UNNORMALISED = {"gmm", "local_p", "monotonic", "se", "cbam", "lightweight", "dynamic", "sink", "sigmoid",
                "differential"}
#: weights that may be negative: a difference of two softmax maps, rows summing to 1 - lambda
SIGNED = {"differential"}
#: mechanisms whose weights depend on the keys only through a content score, so equal keys give
#: uniform weights over the allowed keys (local_m: over the allowed keys inside its window)
UNIFORM_ON_EQUAL_KEYS = {"dot", "scaled_dot", "general", "additive", "cosine", "self", "mha", "gqa", "mqa",
                         "local_m", "soft_spatial", "nonlocal", "gated", "softcap", "sliding", "sink", "sigmoid",
                         "linear", "performer", "differential"}
#: (mla: its decoupled RoPE key always carries positions, so equal inputs still give position-dependent scores)

#: families whose mechanisms take inputs of their own shapes (convolutions over time with banded weights,
#: images, a ConvS2S decoder's (h, g) pair): variants() leaves them out, and their numerics are in
#: test_numerics_convolutional.py (builders below: OWN_CASES)
OWN_NUMERICS = {"convolutional"}

CPU_DTYPES = [torch.float32, torch.float64, torch.bfloat16]


def dtype_cases() -> list:
    """(device, dtype) pairs: float32/float64/bfloat16 on CPU, float16 (and bfloat16) on CUDA if present."""
    cases = [pytest.param("cpu", d, id=f"cpu-{str(d)[6:]}") for d in CPU_DTYPES]
    if torch.cuda.is_available():
        cases += [pytest.param("cuda", d, id=f"cuda-{str(d)[6:]}") for d in (torch.float16, torch.float32)]
    return cases


def weights_dtype(dtype: torch.dtype) -> torch.dtype:
    """Weights are returned in float32 (float64 inputs keep float64)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def variants(step_wise: bool | None = None, kind: str | None = None) -> list:
    """pytest params (info, options) for every registered mechanism and its extra variants.

    ``step_wise=True``: the step-wise ones; ``step_wise=False``: the whole-sequence ones (blocks over a feature
    map have their own ``kind="image"``); ``kind``: "step", "sequence" or "image"."""
    if step_wise is not None:
        kind = "step" if step_wise else "sequence"
    out = []
    for info in attnzoo.mechanisms():
        if info.family in OWN_NUMERICS:
            continue
        if kind is not None and info.kind != kind:
            continue
        base = OPTIONS.get(info.name, {})
        out.append(pytest.param(info, base, id=info.name))
        for extra in VARIANTS.get(info.name, []):
            tag = "-".join(f"{k}={v}" for k, v in extra.items())
            out.append(pytest.param(info, {**base, **extra}, id=f"{info.name}-{tag}"))
    return out


def build(info: MechanismInfo, options: dict, dtype=torch.float32, device="cpu"):
    torch.manual_seed(0)
    if info.step_wise:
        try:
            m = attnzoo.create(info.name, query_dim=DQ, key_dim=DK, value_dim=DV, hidden_dim=HIDDEN, **options)
        except ValueError as e:  # dot, scaled_dot, cosine compare query and key directly
            if "must equal key_dim" not in str(e):
                raise
            m = attnzoo.create(info.name, query_dim=DK, key_dim=DK, value_dim=DV, hidden_dim=HIDDEN, **options)
        m.train(info.name == "monotonic")  # monotonic: expected alignment in train(); others: eval
    elif info.kind == "image":
        m = attnzoo.create(info.name, channels=CH, **options).eval()
        for p in m.parameters():  # a learned scale starts at 0 (the identity): move it, so the block acts
            if p.dim() == 0:
                p.data.fill_(0.5)
        if getattr(m, "norm", None) is not None:
            m.norm.weight.data.fill_(0.5)
    else:
        m = attnzoo.create(info.name, dim=DIM, num_heads=HEADS, **options).eval()
    return m.to(device=device, dtype=dtype)


def leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clone().requires_grad_(x.is_floating_point())


@dataclass
class Run:
    """What one run produced: outputs (contexts), weights, inputs (leaves) and the module."""

    outputs: list[torch.Tensor]
    weights: list[torch.Tensor]
    inputs: dict[str, torch.Tensor]
    module: torch.nn.Module
    states: list = field(default_factory=list)

    def backward(self) -> None:
        g = torch.Generator().manual_seed(7)
        loss = 0
        for o in self.outputs + self.weights:
            if o.numel():
                loss = loss + (o.float() * torch.randn(o.shape, generator=g).to(o.device)).sum()
        if torch.is_tensor(loss) and loss.requires_grad:
            loss.backward()

    def grads(self) -> dict[str, torch.Tensor]:
        out = {f"input {k}": v.grad for k, v in self.inputs.items() if v.grad is not None}
        out.update({f"param {k}": p.grad for k, p in self.module.named_parameters() if p.grad is not None})
        return out


def step_memory(S: int, dtype, device="cpu", key_scale=1.0, equal_keys=False, mask=None, seed=1):
    g = torch.Generator().manual_seed(seed)
    keys = torch.randn(B, S, DK, generator=g, dtype=torch.float64)
    if equal_keys:
        keys = keys[:, :1].expand(B, S, DK).clone()
    values = torch.randn(B, S, DV, generator=g, dtype=torch.float64)
    if mask is None:
        mask = torch.ones(B, S, dtype=torch.bool)
        if S > 2:
            mask[1, S - 2:] = False  # the second sequence is 2 shorter
    keys = (keys * key_scale).to(device=device, dtype=dtype)
    return keys, values.to(device=device, dtype=dtype), mask.to(device)


def run_step_wise(m, S: int, dtype, device="cpu", T=3, query_scale=1.0, key_scale=1.0, equal_keys=False,
                  mask=None) -> Run:
    keys, values, mask = step_memory(S, dtype, device, key_scale, equal_keys, mask)
    g = torch.Generator().manual_seed(2)
    qs = (torch.randn(T, B, m.query_dim, generator=g, dtype=torch.float64) * query_scale).to(device=device, dtype=dtype)
    inputs = {"keys": leaf(keys), "values": leaf(values), "queries": leaf(qs)}
    state = m.initial_state(inputs["keys"], inputs["values"], mask)
    outs, ws, states = [], [], [state]
    for t in range(T):
        ctx, w, state = m(inputs["queries"][t], inputs["keys"], inputs["values"], mask, state)
        outs.append(ctx)
        ws.append(w)
        states.append(state)
    run = Run(outs, ws, inputs, m, states)
    run.mask = mask
    return run


def run_parallel(m, L: int, dtype, device="cpu", x_scale=1.0, equal_keys=False, key_mask=None, cross_S=None,
                 need_weights=True) -> Run:
    """Self-attention over x (B, L, DIM), or cross-attention onto a (B, cross_S, DIM) memory."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(B, L, DIM, generator=g, dtype=torch.float64)
    S = L if cross_S is None else cross_S
    mem = torch.randn(B, S, DIM, generator=g, dtype=torch.float64)
    if equal_keys:
        x = x[:, :1].expand(B, L, DIM).clone() if cross_S is None else x
        mem = mem[:, :1].expand(B, S, DIM).clone()
    inputs = {"x": leaf((x * x_scale).to(device=device, dtype=dtype))}
    kw = dict(key_mask=None if key_mask is None else key_mask.to(device), need_weights=need_weights)
    if cross_S is not None:
        inputs["memory"] = leaf((mem * x_scale).to(device=device, dtype=dtype))
        out = m(inputs["x"], key=inputs["memory"], value=inputs["memory"], **kw)
    else:
        out = m(inputs["x"], **kw)
    return Run([out.output], [] if out.weights is None else [out.weights], inputs, m)


def image_input(dtype, device="cpu", x_scale=1.0, grid=GRID, equal_positions=False, seed=4) -> torch.Tensor:
    """A (B, CH, H, W) feature map, a leaf with requires_grad."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, CH, *grid, generator=g, dtype=torch.float64)
    if equal_positions:
        x = x[:, :, :1, :1].expand(B, CH, *grid).clone()
    return leaf((x * x_scale).to(device=device, dtype=dtype))


def run_image(m, dtype, device="cpu", x_scale=1.0, grid=GRID, equal_positions=False) -> Run:
    """One block over a feature map, with its maps (channel, spatial, positions) as the weights."""
    x = image_input(dtype, device, x_scale, grid, equal_positions)
    out = m(x, need_weights=True)
    maps = [w for w in (out.channel, out.spatial, out.positions) if w is not None]
    run = Run([out.output], maps, {"x": x}, m)
    run.maps = out
    return run


def assert_finite(named: dict[str, torch.Tensor], what: str) -> None:
    for name, t in named.items():
        assert torch.isfinite(t).all(), f"{what}: {name} has NaN/Inf: {t}"


def assert_all_finite(run: Run) -> None:
    assert_finite({f"output {i}": o for i, o in enumerate(run.outputs)}, "forward")
    assert_finite({f"weights {i}": w for i, w in enumerate(run.weights)}, "forward")
    run.backward()
    grads = run.grads()
    assert grads, "no gradient reached any input or parameter"
    assert_finite(grads, "backward")


def tol(dtype) -> dict:
    return {torch.float64: dict(atol=1e-12, rtol=1e-10), torch.float32: dict(atol=1e-6, rtol=1e-5),
            torch.bfloat16: dict(atol=2e-2, rtol=2e-2), torch.float16: dict(atol=2e-3, rtol=2e-3)}[dtype]


# --------------------------------------------------------------------------- the convolutional family
#: (name, options, id) of every convolutional case: lightweight/dynamic causal and centred, aaconv with and
#: without relative logits, ConvS2S multi-step attention
CONV_SEQUENCE = [("lightweight", dict(kernel_size=3), "lightweight"),
                 ("lightweight", dict(kernel_size=4, causal=True), "lightweight-causal"),
                 ("dynamic", dict(kernel_size=3), "dynamic"),
                 ("dynamic", dict(kernel_size=4, causal=True), "dynamic-causal")]
CONV_IMAGE = [("aaconv", dict(), "aaconv"), ("aaconv", dict(relative=False), "aaconv-absolute")]
CONV_MULTISTEP = [("multistep", dict(), "multistep")]
OWN_CASES = CONV_SEQUENCE + CONV_IMAGE + CONV_MULTISTEP
IMAGE_CHANNELS, IMAGE_OUT, EMBED = 3, 8, 5


def own_params(cases) -> list:
    return [pytest.param(name, options, id=tag) for name, options, tag in cases]


def build_own(name: str, options: dict, dtype=torch.float32, device="cpu"):
    """A convolutional mechanism at tiny sizes; ``causal`` is a call option, not a constructor one."""
    torch.manual_seed(0)
    options = {k: v for k, v in options.items() if k != "causal"}
    if name in ("lightweight", "dynamic"):
        m = attnzoo.create(name, dim=DIM, num_heads=HEADS, **options)
    elif name == "aaconv":
        m = attnzoo.create(name, IMAGE_CHANNELS, IMAGE_OUT, 3, dk=4, dv=4, num_heads=HEADS, max_size=6, **options)
        if m.relative:
            with torch.no_grad():
                m.rel_h.normal_()
                m.rel_w.normal_()
    else:
        m = attnzoo.create(name, DIM, EMBED, **options)
    return m.eval().to(device=device, dtype=dtype)


def run_sequence(m, L: int, dtype, device="cpu", causal=False, x_scale=1.0, key_mask=None, need_weights=True) -> Run:
    g = torch.Generator().manual_seed(3)
    x = leaf((torch.randn(B, L, DIM, generator=g, dtype=torch.float64) * x_scale).to(device=device, dtype=dtype))
    km = None if key_mask is None else key_mask.to(device)
    out = m(x, key_mask=km, is_causal=causal, need_weights=need_weights)
    return Run([out.output], [] if out.weights is None else [out.weights], {"x": x}, m)


def run_conv_image(m, Y: int, X: int, dtype, device="cpu", x_scale=1.0, constant=False, need_weights=True) -> Run:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(B, IMAGE_CHANNELS, Y, X, generator=g, dtype=torch.float64) * x_scale
    if constant:
        x = x[:, :, :1, :1].expand_as(x).clone()
    x = leaf(x.to(device=device, dtype=dtype))
    out = m(x, need_weights=need_weights)
    return Run([out.output], [] if out.weights is None else [out.weights], {"x": x}, m)


def run_multistep(m, T: int, S: int, dtype, device="cpu", x_scale=1.0, key_mask=None, need_weights=True) -> Run:
    g = torch.Generator().manual_seed(5)
    sizes = {"h": (B, T, DIM), "target_embed": (B, T, EMBED), "keys": (B, S, EMBED), "values": (B, S, EMBED)}
    inputs = {k: leaf((torch.randn(*v, generator=g, dtype=torch.float64) * x_scale).to(device=device, dtype=dtype))
              for k, v in sizes.items()}
    km = None if key_mask is None else key_mask.to(device)
    out = m(inputs["h"], inputs["target_embed"], inputs["keys"], inputs["values"], km, need_weights=need_weights)
    return Run([out.output], [] if out.weights is None else [out.weights], inputs, m)
