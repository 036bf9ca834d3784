"""Multi-head attention against torch.nn.MultiheadAttention, its cache, and its fused path."""

import pytest
import torch
from torch import nn

import attnzoo
from attnzoo import KVCache, MultiHeadAttention
from attnzoo.mechanisms.transformer import BlockConfig, DecoderBlock, EncoderBlock

POSITIONS = [None, "rope", "alibi", "t5", "relative"]


def copy_from_torch(ref: nn.MultiheadAttention, ours: MultiHeadAttention) -> None:
    d = ref.embed_dim
    with torch.no_grad():
        for i, proj in enumerate((ours.q_proj, ours.k_proj, ours.v_proj)):
            proj.weight.copy_(ref.in_proj_weight[i * d:(i + 1) * d])
            proj.bias.copy_(ref.in_proj_bias[i * d:(i + 1) * d])
        ours.o_proj.weight.copy_(ref.out_proj.weight)
        ours.o_proj.bias.copy_(ref.out_proj.bias)


@pytest.mark.parametrize("causal", [False, True])
def test_equals_torch_multihead_attention_outputs_and_per_head_weights(causal):
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(16, 4, batch_first=True).double()
    ours = MultiHeadAttention(16, 4).double()
    copy_from_torch(ref, ours)
    x = torch.randn(3, 6, 16, dtype=torch.float64)
    padding = torch.zeros(3, 6, dtype=torch.bool)  # torch: True = ignore
    padding[1, 4:] = True
    attn_mask = torch.triu(torch.ones(6, 6, dtype=torch.bool), 1) if causal else None  # torch: True = blocked
    want, want_w = ref(x, x, x, key_padding_mask=padding, attn_mask=attn_mask, average_attn_weights=False)
    got = ours(x, key_mask=~padding, is_causal=causal, need_weights=True)  # ours: True = may attend
    torch.testing.assert_close(got.output, want)
    torch.testing.assert_close(got.weights.to(want_w.dtype), want_w)


def test_cross_attention_equals_torch():
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(16, 2, batch_first=True).double()
    ours = MultiHeadAttention(16, 2).double()
    copy_from_torch(ref, ours)
    x, mem = torch.randn(2, 3, 16, dtype=torch.float64), torch.randn(2, 7, 16, dtype=torch.float64)
    want, _ = ref(x, mem, mem)
    torch.testing.assert_close(ours(x, key=mem, value=mem).output, want)


def test_gqa_with_as_many_kv_heads_as_heads_is_mha():
    torch.manual_seed(0)
    mha = attnzoo.create("mha", dim=16, num_heads=4)
    gqa = attnzoo.create("gqa", dim=16, num_heads=4, num_kv_heads=4)
    gqa.load_state_dict(mha.state_dict())
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(gqa(x).output, mha(x).output)
    mqa = attnzoo.create("mqa", dim=16, num_heads=4)
    assert mqa.k_proj.out_features == 4 and mqa.num_kv_heads == 1


@pytest.mark.parametrize("positions", POSITIONS)
@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_kv_cache_decoding_equals_the_full_pass_token_by_token(positions, kv_heads):
    torch.manual_seed(0)
    m = MultiHeadAttention(16, 4, kv_heads, positions=positions).eval()
    if positions == "t5":
        nn.init.normal_(m.t5.bias.weight)
    x = torch.randn(2, 7, 16)
    with torch.no_grad():
        full = m(x, is_causal=True).output
        cache = KVCache()
        steps = [m(x[:, :3], is_causal=True, cache=cache).output]  # a prompt, then one token at a time
        steps += [m(x[:, t:t + 1], is_causal=True, cache=cache).output for t in range(3, 7)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    assert len(cache) == 7


@pytest.mark.parametrize("positions", POSITIONS)
def test_fused_and_eager_paths_agree_with_gradients(positions):
    torch.manual_seed(0)
    fused = MultiHeadAttention(16, 4, 2, positions=positions, fused_attn=True)
    eager = MultiHeadAttention(16, 4, 2, positions=positions, fused_attn=False)
    eager.load_state_dict(fused.state_dict())
    x = torch.randn(2, 6, 16)
    key_mask = torch.ones(2, 6, dtype=torch.bool)
    key_mask[0, 4:] = False
    outs = []
    for m in (fused, eager):
        y = m(x, key_mask=key_mask, is_causal=True).output
        y.square().sum().backward()
        outs.append((y, [p.grad.clone() for p in m.parameters()]))
    torch.testing.assert_close(outs[0][0], outs[1][0], atol=1e-5, rtol=1e-4)
    for a, b in zip(outs[0][1], outs[1][1]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_self_attention_without_positions_is_permutation_equivariant():
    torch.manual_seed(0)
    m = attnzoo.create("self", dim=12, num_heads=3).double()
    x = torch.randn(2, 6, 12, dtype=torch.float64)
    perm = torch.randperm(6)
    torch.testing.assert_close(m(x[:, perm]).output, m(x).output[:, perm])
    rope = attnzoo.create("self", dim=12, num_heads=3, positions="rope").double()
    assert not torch.allclose(rope(x[:, perm]).output, rope(x).output[:, perm])


def test_decoder_block_with_caches_equals_full_pass():
    torch.manual_seed(0)
    for norm_first in (True, False):
        block = DecoderBlock(BlockConfig(dim=16, num_heads=4, positions="rope", norm_first=norm_first)).eval()
        x, mem = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
        mem_mask = torch.ones(2, 7, dtype=torch.bool)
        mem_mask[1, 5:] = False
        with torch.no_grad():
            full = block(x, mem, mem_mask).output
            sc, cc = KVCache(), KVCache()
            steps = [block(x[:, t:t + 1], mem if t == 0 else None, mem_mask, self_cache=sc, cross_cache=cc).output
                     for t in range(5)]
        torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_encoder_block_post_norm_matches_torch_transformer_encoder_layer():
    torch.manual_seed(0)
    ref = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, dropout=0.0, batch_first=True).double().eval()
    ours = EncoderBlock(BlockConfig(dim=16, num_heads=4, ffn_dim=32, dropout=0.0, norm_first=False,
                                    activation="relu")).double().eval()
    copy_from_torch(ref.self_attn, ours.self_attn)
    with torch.no_grad():
        ours.ffn.up.load_state_dict(ref.linear1.state_dict())
        ours.ffn.down.load_state_dict(ref.linear2.state_dict())
        ours.attn_sub.norm.load_state_dict(ref.norm1.state_dict())
        ours.ffn_sub.norm.load_state_dict(ref.norm2.state_dict())
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    pad = torch.zeros(2, 5, dtype=torch.bool)
    pad[1, 3:] = True
    torch.testing.assert_close(ours(x, key_mask=~pad).output, ref(x, src_key_padding_mask=pad))


def test_bad_multihead_input_is_named():
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        MultiHeadAttention(10, 4)
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        MultiHeadAttention(16, 4, 3)
    m = MultiHeadAttention(16, 4)
    with pytest.raises(ValueError, match=r"x must have shape \(B, L, 16\)"):
        m(torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match=r"key_mask must have shape \(B, S\) = \(2, 5\)"):
        m(torch.randn(2, 5, 16), key_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="~key_padding_mask"):
        m(torch.randn(2, 5, 16), key_mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match="unknown positions"):
        MultiHeadAttention(16, 4, positions="rotary")


def test_packed_qkv_projection_equals_three_projections_and_honours_hooks():
    """Self-attention projects q, k, v with one matmul; a hooked or wrapped projection is called as itself."""
    torch.manual_seed(0)
    for kv_heads in (4, 2, 1):
        mha = MultiHeadAttention(16, 4, num_kv_heads=kv_heads).double()
        x = torch.randn(2, 5, 16, dtype=torch.float64)
        q, k, v = mha._project_packed(x)
        torch.testing.assert_close(q, mha._heads(mha.q_proj(x), 4), rtol=0, atol=1e-12)
        torch.testing.assert_close(k, mha._heads(mha.k_proj(x), kv_heads), rtol=0, atol=1e-12)
        torch.testing.assert_close(v, mha._heads(mha.v_proj(x), kv_heads), rtol=0, atol=1e-12)
    calls = []
    handle = mha.k_proj.register_forward_hook(lambda m, args, out: calls.append(out.shape) or out * 0)
    out = mha(x).output
    handle.remove()
    assert calls == [(2, 5, 1 * 4)]  # the hook ran (one kv head of size 4)...
    k0 = mha._heads(mha.k_proj(x) * 0, 1)
    ref = mha.o_proj((torch.softmax(mha._heads(mha.q_proj(x), 4) @ k0.transpose(-1, -2) / 2, -1)
                      @ mha._heads(mha.v_proj(x), 1)).transpose(1, 2).reshape(2, 5, 16))
    torch.testing.assert_close(out, ref)  # ...and its zeroed keys were used
