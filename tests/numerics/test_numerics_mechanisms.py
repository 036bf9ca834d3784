"""Numerics of every registered mechanism (``attnzoo.mechanisms()``): dtypes and edge cases.

For float32, float64 and bfloat16 on CPU (float16 on CUDA when there is one),
each mechanism's outputs, weights and every gradient (inputs and parameters)
are finite, weights come back in float32 (float64 stays float64), and the
defined result holds for:

* logits of about +-1e4 (queries scaled by 1e4; whole-sequence inputs by 1e2);
* all keys equal -> uniform weights where the equation is a content score;
* a single key -> weight exactly 1 where the weights are normalised;
* zero keys (S = 0) -> a zero context and (B, 0) weights (nothing to attend
  to is a fully masked row with no columns);
* a fully masked row -> all-zero weights, a zero context (for multi-head
  layers: the output projection of zero, i.e. its bias), finite gradients,
  and no gradient into that row's query.

Blocks over a feature map (se, cbam, nonlocal) keep the input's shape and
dtype, return maps in [0, 1] (non-local rows sum to 1), stay finite for inputs
of about 1e2 (scores of about 1e4), give uniform non-local weights over equal
positions and weight exactly 1 on a 1 x 1 map, and refuse an empty map.

A new mechanism is covered automatically: the parameter lists come from the
registry, and the first test fails until the mechanism is classified below.
Families whose inputs have their own shapes (``OWN_NUMERICS``: the
convolutional family) have their cases in ``test_numerics_convolutional.py``.
"""

import pytest
import torch
from numerics_cases import (
    CH,
    DIM,
    DV,
    GRID,
    NORMALISED,
    OWN_CASES,
    OWN_NUMERICS,
    SIGNED,
    UNIFORM_ON_EQUAL_KEYS,
    UNNORMALISED,
    B,
    assert_all_finite,
    build,
    dtype_cases,
    image_input,
    run_image,
    run_parallel,
    run_step_wise,
    tol,
    variants,
    weights_dtype,
)

import attnzoo

STEP = variants(step_wise=True)
PARALLEL = variants(step_wise=False)
IMAGE = variants(kind="image")
DTYPES = dtype_cases()
S = 6


def test_every_registered_mechanism_is_classified_and_covered():
    names = {info.name for info in attnzoo.mechanisms()}
    assert names, "the registry is empty"
    assert NORMALISED.isdisjoint(UNNORMALISED)
    missing = names - (NORMALISED | UNNORMALISED)
    assert not missing, f"classify {sorted(missing)} in tests/numerics/numerics_cases.py (NORMALISED or UNNORMALISED)"
    covered = {p.values[0].name for p in STEP + PARALLEL + IMAGE}
    own = {i.name for i in attnzoo.mechanisms() if i.family in OWN_NUMERICS}
    assert own == {name for name, _, _ in OWN_CASES}, "give every mechanism of an OWN_NUMERICS family a case"
    assert covered | own == names and not covered & own


def check_step_weights(run, name, dtype, S):
    """Weights: float32 (float64), shape (B, S), in [0, 1], zero on masked keys, rows sum to 1 if normalised."""
    for ctx, w in zip(run.outputs, run.weights):
        assert ctx.dtype == dtype and ctx.shape == (B, DV)
        assert w.dtype == weights_dtype(dtype), f"weights are {w.dtype}"
        assert w.shape == (B, S)
        assert (w >= 0).all()
        assert name == "gmm" or (w <= 1 + 1e-6).all()  # gmm's soft window is not bounded by 1
        assert (w[~run.mask] == 0).all(), "a masked key got weight"
        sums = w.sum(-1)
        has_key = run.mask.any(-1)
        if name in NORMALISED:
            torch.testing.assert_close(sums[has_key], torch.ones_like(sums[has_key]), atol=1e-5, rtol=0)
        else:
            assert name == "gmm" or (sums <= 1 + 1e-5).all()


# --------------------------------------------------------------------------- step-wise (content, location)
@pytest.mark.parametrize("device,dtype", DTYPES)
@pytest.mark.parametrize("info,options", STEP)
def test_step_wise_dtypes(info, options, device, dtype):
    run = run_step_wise(build(info, options, dtype, device), S, dtype, device)
    check_step_weights(run, info.name, dtype, S)
    assert_all_finite(run)


@pytest.mark.parametrize("device,dtype", DTYPES)
@pytest.mark.parametrize("info,options", STEP)
def test_step_wise_logits_of_1e4(info, options, device, dtype):
    scale = 1e3 if dtype == torch.float16 else 1e4  # float16 stops at 65504
    run = run_step_wise(build(info, options, dtype, device), S, dtype, device, query_scale=scale)
    check_step_weights(run, info.name, dtype, S)
    assert_all_finite(run)


@pytest.mark.parametrize("device,dtype", DTYPES)
@pytest.mark.parametrize("info,options", STEP)
def test_step_wise_equal_keys(info, options, device, dtype):
    run = run_step_wise(build(info, options, dtype, device), S, dtype, device, equal_keys=True)
    check_step_weights(run, info.name, dtype, S)
    if info.name in UNIFORM_ON_EQUAL_KEYS:
        for t, w in enumerate(run.weights):
            allowed = run.mask.clone()
            if info.name == "local_m":  # the window of step t: |s - t| <= D
                allowed &= (torch.arange(S, device=w.device) - t).abs() <= options["window"]
            want = allowed.to(w.dtype) / allowed.sum(-1, keepdim=True).to(w.dtype)
            torch.testing.assert_close(w, want, **tol(dtype))
    assert_all_finite(run)


@pytest.mark.parametrize("device,dtype", DTYPES)
@pytest.mark.parametrize("info,options", STEP)
def test_step_wise_single_key(info, options, device, dtype):
    run = run_step_wise(build(info, options, dtype, device), 1, dtype, device)
    check_step_weights(run, info.name, dtype, 1)
    if info.name in NORMALISED:
        for w in run.weights:
            assert torch.equal(w, torch.ones_like(w)), f"one key must get weight exactly 1, got {w}"
    assert_all_finite(run)


@pytest.mark.parametrize("device,dtype", DTYPES)
@pytest.mark.parametrize("info,options", STEP)
def test_step_wise_zero_keys_give_a_zero_context(info, options, device, dtype):
    mask = torch.ones(B, 0, dtype=torch.bool)
    run = run_step_wise(build(info, options, dtype, device), 0, dtype, device, mask=mask)
    for ctx, w in zip(run.outputs, run.weights):
        assert w.shape == (B, 0) and w.dtype == weights_dtype(dtype)
        assert ctx.shape == (B, DV) and torch.equal(ctx, torch.zeros_like(ctx))
    assert_all_finite(run)


@pytest.mark.parametrize("device,dtype", DTYPES)
@pytest.mark.parametrize("info,options", STEP)
def test_step_wise_fully_masked_row_is_zero_with_finite_gradients(info, options, device, dtype):
    mask = torch.ones(B, S, dtype=torch.bool)
    mask[0, 3:] = False
    mask[1] = False  # nothing to attend to
    run = run_step_wise(build(info, options, dtype, device), S, dtype, device, mask=mask)
    check_step_weights(run, info.name, dtype, S)
    for ctx, w in zip(run.outputs, run.weights):
        assert torch.equal(w[1], torch.zeros_like(w[1])), f"weights of a fully masked row: {w[1]}"
        assert torch.equal(ctx[1], torch.zeros_like(ctx[1])), f"context of a fully masked row: {ctx[1]}"
    assert_all_finite(run)
    q_grad = run.inputs["queries"].grad  # None: no gradient at all (monotonic's hard decisions)
    assert q_grad is None or torch.equal(q_grad[:, 1], torch.zeros_like(q_grad[:, 1])), \
        "gradient flowed into a fully masked row"


# --------------------------------------------------------------------------- whole-sequence (self, multi-head)
def check_parallel(run, dtype, L, S):
    out = run.outputs[0]
    assert out.dtype == dtype and out.shape == (B, L, DIM)
    for w in run.weights:
        assert w.dtype == weights_dtype(dtype) and w.shape == (B, run.module.num_heads, L, S)
        if run.module.registry_name in SIGNED:  # a difference of two distributions
            assert (w >= -1 - 1e-6).all() and (w <= 1 + 1e-6).all()
        else:
            assert (w >= 0).all() and (w <= 1 + 1e-6).all()


def parallel_runs(m, dtype, device, L=5, **kw):
    """Self-attention (when the module has key/value inputs, cross-attention too), weights on and off."""
    runs = []
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[1, L - 2:] = False
    for need_weights in (True, False):
        runs.append((L, run_parallel(m, L, dtype, device, key_mask=mask, need_weights=need_weights, **kw)))
        if info_is_cross_capable(m):
            cm = torch.ones(B, L + 1, dtype=torch.bool)
            cm[0, :2] = False
            runs.append((L + 1, run_parallel(m, L, dtype, device, key_mask=cm, cross_S=L + 1,
                                             need_weights=need_weights, **kw)))
    return runs


def info_is_cross_capable(m) -> bool:
    import inspect

    return "key" in inspect.signature(m.forward).parameters


@pytest.mark.parametrize("device,dtype", DTYPES)
@pytest.mark.parametrize("info,options", PARALLEL)
@pytest.mark.parametrize("x_scale", [1.0, 1e2], ids=["unit", "logits-1e4"])
def test_parallel_dtypes_and_large_logits(info, options, device, dtype, x_scale):
    m = build(info, options, dtype, device)
    for S_, run in parallel_runs(m, dtype, device, x_scale=x_scale):
        check_parallel(run, dtype, 5, S_)
        for w in run.weights:
            allowed = w.sum(-1) > 0
            if info.name in NORMALISED:
                torch.testing.assert_close(w.sum(-1)[allowed], torch.ones_like(w.sum(-1)[allowed]), atol=1e-5,
                                           rtol=0)
            elif info.name in SIGNED:  # differential: A1 - lambda A2, rows sum to 1 - lambda
                sums = w.sum(-1)[allowed]
                torch.testing.assert_close(sums, torch.full_like(sums, 1 - m.lambda_().item()), atol=2e-2, rtol=0)
            else:  # a sink keeps some weight back; sigmoid weighs each key on its own
                assert (w >= 0).all() and (w <= 1).all()
        m.zero_grad()
        assert_all_finite(run)


@pytest.mark.parametrize("device,dtype", DTYPES)
@pytest.mark.parametrize("info,options", [p for p in PARALLEL if p.values[0].name in UNIFORM_ON_EQUAL_KEYS])
def test_parallel_equal_keys_give_uniform_weights(info, options, device, dtype):
    m = build(info, options, dtype, device)
    run = run_parallel(m, 4, dtype, device, equal_keys=True)
    (w,) = run.weights
    expected = torch.full_like(w, 0.25) if info.name in NORMALISED else w[..., :1].expand_as(w)  # equal, not 1/S
    torch.testing.assert_close(w, expected, **tol(dtype))
    assert_all_finite(run)


@pytest.mark.parametrize("device,dtype", DTYPES)
@pytest.mark.parametrize("info,options", PARALLEL)
def test_parallel_single_key_gets_weight_exactly_one(info, options, device, dtype):
    m = build(info, options, dtype, device)
    runs = [run_parallel(m, 1, dtype, device)]
    if info_is_cross_capable(m):
        runs.append(run_parallel(m, 3, dtype, device, cross_S=1))
    for run in runs:
        (w,) = run.weights
        if info.name in NORMALISED:
            assert torch.equal(w, torch.ones_like(w)), w
        else:
            assert (w > 0).all() and (w < 1).all(), w
        m.zero_grad()
        assert_all_finite(run)


@pytest.mark.parametrize("device,dtype", DTYPES)
@pytest.mark.parametrize("info,options", PARALLEL)
@pytest.mark.parametrize("need_weights", [True, False])
def test_parallel_zero_length(info, options, device, dtype, need_weights):
    m = build(info, options, dtype, device)
    empty = run_parallel(m, 0, dtype, device, need_weights=need_weights)  # an empty sequence
    assert empty.outputs[0].shape == (B, 0, DIM)
    if info_is_cross_capable(m):  # a memory of zero keys: the attention output is zero -> o_proj(0) = bias
        run = run_parallel(m, 3, dtype, device, cross_S=0, need_weights=need_weights)
        out = run.outputs[0]
        assert torch.equal(out, m.o_proj.bias.expand_as(out)), out
        if need_weights:
            assert run.weights[0].shape == (B, m.num_heads, 3, 0)
        assert_all_finite(run)


@pytest.mark.parametrize("device,dtype", DTYPES)
@pytest.mark.parametrize("info,options", PARALLEL)
@pytest.mark.parametrize("need_weights", [True, False], ids=["eager", "fused"])
def test_parallel_fully_masked_row(info, options, device, dtype, need_weights):
    m = build(info, options, dtype, device)
    mask = torch.ones(B, 5, dtype=torch.bool)
    mask[1] = False
    runs = [run_parallel(m, 5, dtype, device, key_mask=mask, need_weights=need_weights)]
    if info_is_cross_capable(m):
        runs.append(run_parallel(m, 2, dtype, device, key_mask=mask, cross_S=5, need_weights=need_weights))
    for run in runs:
        out = run.outputs[0]
        assert torch.equal(out[1], m.o_proj.bias.expand_as(out[1])), "fully masked row: attention output must be 0"
        if need_weights:
            assert torch.equal(run.weights[0][1], torch.zeros_like(run.weights[0][1]))
        m.zero_grad()
        assert_all_finite(run)
        x_grad = run.inputs["x"].grad
        if "memory" in run.inputs:  # cross-attention: the masked row's queries get no gradient
            assert torch.equal(x_grad[1], torch.zeros_like(x_grad[1]))


# --------------------------------------------------------------------------- blocks over a feature map (visual)
def check_image(run, dtype, grid):
    out, maps = run.outputs[0], run.maps
    assert out.dtype == dtype and out.shape == (B, CH, *grid)
    for w in run.weights:
        assert w.dtype == weights_dtype(dtype), f"maps are {w.dtype}"
        assert (w >= 0).all() and (w <= 1).all()
    if maps.channel is not None:
        assert maps.channel.shape == (B, CH)
    if maps.spatial is not None:
        assert maps.spatial.shape == (B, *grid)
    if maps.positions is not None:
        assert maps.positions.shape[:2] == (B, grid[0] * grid[1])
        sums = maps.positions.sum(-1)
        torch.testing.assert_close(sums, torch.ones_like(sums), atol=1e-5, rtol=0)


@pytest.mark.parametrize("device,dtype", DTYPES)
@pytest.mark.parametrize("info,options", IMAGE)
@pytest.mark.parametrize("x_scale", [1.0, 1e2], ids=["unit", "scores-1e4"])
def test_image_dtypes_and_large_inputs(info, options, device, dtype, x_scale):
    scale = min(x_scale, 10.0) if dtype == torch.float16 else x_scale  # float16 stops at 65504
    run = run_image(build(info, options, dtype, device), dtype, device, x_scale=scale)
    check_image(run, dtype, GRID)
    assert_all_finite(run)


@pytest.mark.parametrize("device,dtype", DTYPES)
@pytest.mark.parametrize("info,options", IMAGE)
def test_image_equal_positions(info, options, device, dtype):
    run = run_image(build(info, options, dtype, device), dtype, device, equal_positions=True)
    check_image(run, dtype, GRID)
    w = run.maps.positions
    if w is not None:  # every position looks the same: uniform weights over the (pooled) positions
        torch.testing.assert_close(w, torch.full_like(w, 1 / w.shape[-1]), **tol(dtype))
    assert_all_finite(run)


@pytest.mark.parametrize("device,dtype", DTYPES)
@pytest.mark.parametrize("info,options", IMAGE)
def test_image_single_position(info, options, device, dtype):
    run = run_image(build(info, options, dtype, device), dtype, device, grid=(1, 1))
    check_image(run, dtype, (1, 1))
    w = run.maps.positions
    if w is not None:
        assert torch.equal(w, torch.ones_like(w)), f"one position must get weight exactly 1, got {w}"
    assert_all_finite(run)


@pytest.mark.parametrize("info,options", IMAGE)
def test_image_empty_map_is_refused(info, options):
    m = build(info, options)
    with pytest.raises(ValueError, match="at least one position"):
        m(image_input(torch.float32, grid=(0, 4)))
