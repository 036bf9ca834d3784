"""Numerics of the convolutional family (``OWN_CASES`` in numerics_cases.py): dtypes and edge cases.

Its mechanisms take inputs of their own shapes, so they have their own cases (the first test of
test_numerics_mechanisms.py checks that every one of them has one). For float32, float64 and
bfloat16 on CPU (float16 on CUDA when there is one), outputs, weights and every gradient are finite,
weights come back float32 (float64 stays float64), and the defined result holds for:

* inputs scaled by 1e2 (kernel and attention logits far from 0);
* lightweight/dynamic: weights in [0, 1] that are zero on padding and off the window, rows that sum
  to one where the whole window is real, one tap -> weight exactly 1 on the diagonal, an empty
  sequence, a fully masked row -> the output projection of zero (its bias) with no gradient into
  that row's input;
* aaconv: rows that sum to one, a 1 x 1 image -> weight exactly 1, a constant image without relative
  logits -> uniform weights;
* multistep: rows that sum to one over the real sources, a single source -> weight exactly 1, no
  source (S = 0) or a fully masked row -> c = 0, so the output is sqrt(.5) (b_o + h).
"""

import math

import pytest
import torch
from numerics_cases import (
    CONV_IMAGE,
    CONV_MULTISTEP,
    CONV_SEQUENCE,
    DIM,
    HEADS,
    IMAGE_OUT,
    B,
    assert_all_finite,
    build_own,
    dtype_cases,
    own_params,
    run_conv_image,
    run_multistep,
    run_sequence,
    tol,
    weights_dtype,
)

DTYPES = dtype_cases()
SCALES = pytest.mark.parametrize("x_scale", [1.0, 1e2], ids=["unit", "x1e2"])


def padding_mask(L=6):
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[1, L - 2:] = False
    return mask


# --------------------------------------------------------------------------- lightweight / dynamic
@pytest.mark.parametrize("device,dtype", DTYPES)
@pytest.mark.parametrize("name,options", own_params(CONV_SEQUENCE))
@SCALES
def test_convolution_dtypes_weights_and_gradients(name, options, device, dtype, x_scale):
    m = build_own(name, options, dtype, device)
    causal, K = options.get("causal", False), options["kernel_size"]
    mask = padding_mask()
    for need_weights in (True, False):
        m.zero_grad()
        run = run_sequence(m, 6, dtype, device, causal, x_scale, mask, need_weights)
        out = run.outputs[0]
        assert out.dtype == dtype and out.shape == (B, 6, DIM)
        for w in run.weights:
            assert w.dtype == weights_dtype(dtype) and w.shape == (B, HEADS, 6, 6)
            assert (w >= 0).all() and (w <= 1 + 1e-6).all()
            assert (w[1, :, :, 4:] == 0).all(), "padding got weight"
            left = K - 1 if causal else (K - 1) // 2
            i, j = torch.arange(6)[:, None], torch.arange(6)[None, :]
            assert (w[:, :, (j < i - left) | (j > i - left + K - 1)] == 0).all(), "weight off the window"
            inside = [r for r in range(6) if r - left >= 0 and r - left + K - 1 < 6]  # the whole window is real
            sums = w[0, :, inside].sum(-1).float()
            torch.testing.assert_close(sums, torch.ones_like(sums), atol=1e-5, rtol=0)
        assert_all_finite(run)


@pytest.mark.parametrize("device,dtype", DTYPES)
@pytest.mark.parametrize("name", ["lightweight", "dynamic"])
def test_one_tap_gets_weight_exactly_one(name, device, dtype):
    m = build_own(name, dict(kernel_size=1), dtype, device)
    for causal in (False, True):
        run = run_sequence(m, 4, dtype, device, causal)
        (w,) = run.weights
        assert torch.equal(w, torch.eye(4, dtype=w.dtype, device=w.device).expand_as(w)), w
        assert_all_finite(run)


@pytest.mark.parametrize("device,dtype", DTYPES)
@pytest.mark.parametrize("name,options", own_params(CONV_SEQUENCE))
@pytest.mark.parametrize("need_weights", [True, False])
def test_convolution_of_an_empty_sequence(name, options, device, dtype, need_weights):
    m = build_own(name, options, dtype, device)
    run = run_sequence(m, 0, dtype, device, options.get("causal", False), need_weights=need_weights)
    assert run.outputs[0].shape == (B, 0, DIM)
    if need_weights:
        assert run.weights[0].shape == (B, HEADS, 0, 0)


@pytest.mark.parametrize("device,dtype", DTYPES)
@pytest.mark.parametrize("name,options", own_params(CONV_SEQUENCE))
def test_convolution_fully_masked_row(name, options, device, dtype):
    m = build_own(name, options, dtype, device)
    mask = torch.ones(B, 5, dtype=torch.bool)
    mask[1] = False
    run = run_sequence(m, 5, dtype, device, options.get("causal", False), key_mask=mask)
    out = run.outputs[0]
    assert torch.equal(out[1], m.o_proj.bias.expand_as(out[1])), "fully masked row: the convolution must give 0"
    assert torch.equal(run.weights[0][1], torch.zeros_like(run.weights[0][1]))
    assert_all_finite(run)
    x_grad = run.inputs["x"].grad
    assert torch.equal(x_grad[1], torch.zeros_like(x_grad[1])), "gradient flowed into masked positions"


# --------------------------------------------------------------------------- attention-augmented convolution
@pytest.mark.parametrize("device,dtype", DTYPES)
@pytest.mark.parametrize("name,options", own_params(CONV_IMAGE))
@SCALES
def test_aaconv_dtypes_weights_and_gradients(name, options, device, dtype, x_scale):
    m = build_own(name, options, dtype, device)
    for need_weights in (True, False):
        m.zero_grad()
        run = run_conv_image(m, 3, 4, dtype, device, x_scale, need_weights=need_weights)
        out = run.outputs[0]
        assert out.dtype == dtype and out.shape == (B, IMAGE_OUT, 3, 4)
        for w in run.weights:
            assert w.dtype == weights_dtype(dtype) and w.shape == (B, HEADS, 12, 12)
            assert (w >= 0).all()
            torch.testing.assert_close(w.sum(-1), torch.ones_like(w.sum(-1)), atol=1e-5, rtol=0)
        assert_all_finite(run)


@pytest.mark.parametrize("device,dtype", DTYPES)
@pytest.mark.parametrize("name,options", own_params(CONV_IMAGE))
def test_aaconv_single_position_and_constant_images(name, options, device, dtype):
    m = build_own(name, options, dtype, device)
    run = run_conv_image(m, 1, 1, dtype, device)
    (w,) = run.weights
    assert torch.equal(w, torch.ones_like(w)), w
    assert_all_finite(run)
    if not m.relative:  # equal keys everywhere: uniform weights (relative logits break the tie on purpose)
        (w,) = run_conv_image(m, 2, 3, dtype, device, constant=True).weights
        torch.testing.assert_close(w, torch.full_like(w, 1 / 6), **tol(dtype))


# --------------------------------------------------------------------------- ConvS2S multi-step attention
@pytest.mark.parametrize("device,dtype", DTYPES)
@pytest.mark.parametrize("name,options", own_params(CONV_MULTISTEP))
@SCALES
def test_multistep_dtypes_weights_and_gradients(name, options, device, dtype, x_scale):
    m = build_own(name, options, dtype, device)
    for need_weights in (True, False):
        m.zero_grad()
        run = run_multistep(m, 3, 6, dtype, device, x_scale, padding_mask(), need_weights)
        out = run.outputs[0]
        assert out.dtype == dtype and out.shape == (B, 3, DIM)
        for w in run.weights:
            assert w.dtype == weights_dtype(dtype) and w.shape == (B, 3, 6)
            assert (w >= 0).all() and (w[1, :, 4:] == 0).all()
            torch.testing.assert_close(w.sum(-1), torch.ones_like(w.sum(-1)), atol=1e-5, rtol=0)
        assert_all_finite(run)


@pytest.mark.parametrize("device,dtype", DTYPES)
@pytest.mark.parametrize("name,options", own_params(CONV_MULTISTEP))
def test_multistep_single_source_no_source_and_a_fully_masked_row(name, options, device, dtype):
    m = build_own(name, options, dtype, device)
    run = run_multistep(m, 3, 1, dtype, device)
    assert torch.equal(run.weights[0], torch.ones_like(run.weights[0]))
    assert_all_finite(run)
    mask = padding_mask()
    mask[1] = False
    for S, km in ((0, None), (6, mask)):
        run = run_multistep(m, 3, S, dtype, device, key_mask=km)
        row = slice(None) if S == 0 else 1
        h, out = run.inputs["h"], run.outputs[0]
        want = ((m.o_proj.bias + h[row]) * math.sqrt(0.5)).to(dtype)
        torch.testing.assert_close(out[row], want, **tol(dtype))
        assert torch.equal(run.weights[0][row], torch.zeros_like(run.weights[0][row]))
        m.zero_grad()
        assert_all_finite(run)
