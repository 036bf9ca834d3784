"""The language model's attention slot: every mechanism of the lm's --attention list builds, trains a step and
decodes with its own cache (KVCache, RollingKVCache, LinearState) exactly as the full causal pass; --context
reaches the model; a mechanism without inner positions gets learned absolute ones, and is refused rope."""

import pytest
import torch

from attnzoo.core.kv_cache import KVCache, RollingKVCache
from attnzoo.mechanisms.linear import LinearState
from attnzoo.tasks.lm import ATTENTION, LMTaskConfig, build_model, with_context

SMALL = {"dim": 32, "num_heads": 2, "layers": 2, "context": 64}
CACHE = {"sliding": RollingKVCache, "linear": LinearState, "performer": LinearState}


@pytest.mark.parametrize("attention", ATTENTION)
def test_every_attention_decodes_with_its_cache_as_the_full_pass(attention):
    torch.manual_seed(0)
    options = dict(SMALL, attention_options={"window": 8}) if attention == "sliding" else SMALL
    lm = build_model(20, attention, options).double().eval()
    tokens = torch.randint(0, 20, (2, 30))
    full, _ = lm(tokens)
    caches = lm.new_caches()
    assert type(caches[0]) is CACHE.get(attention, KVCache)
    steps = [lm(tokens[:, i:i + 1], caches)[0] for i in range(30)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-10, rtol=1e-8)
    lm.train()
    loss = lm.loss(tokens)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in lm.parameters() if p.requires_grad)
    assert lm.generate(tokens[:, :4], 6).shape == (2, 10)


def test_the_slot_builds_the_named_mechanism_with_its_options():
    lm = build_model(20, "sliding", dict(SMALL, attention_options={"window": 16, "global_tokens": 2}))
    attn = lm.blocks[0].self_attn
    assert type(attn).__name__ == "SlidingWindowAttention" and (attn.window, attn.global_tokens) == (16, 2)
    assert type(build_model(20, "mla", SMALL).blocks[1].self_attn).__name__ == "MultiHeadLatentAttention"
    gqa = build_model(20, "gqa", dict(SMALL, num_heads=4)).blocks[0].self_attn
    assert gqa.num_kv_heads == 1


def test_linear_attention_takes_learned_positions_and_refuses_rope():
    assert build_model(20, "linear", SMALL).config.positions == "learned"
    with pytest.raises(ValueError, match="self_attention='linear' takes no positions inside attention"):
        build_model(20, "linear", dict(SMALL, positions="rope"))


def test_the_context_option_is_the_models_context():
    cfg = LMTaskConfig(context=512)
    assert with_context(cfg, {"dim": 32})["context"] == 512
    with pytest.raises(ValueError, match="--context 512 and --set context=256 disagree"):
        with_context(cfg, {"context": 256})
    with pytest.raises(ValueError, match="context must be a positive int"):
        LMTaskConfig(context=0)


def test_a_packed_batch_equals_each_document_alone():
    """With doc_ids, every position's logits are those of its document run alone (rope: relative positions), and
    the loss scores every character but each document's first."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    lm = build_model(20, "mha", SMALL).double().eval()
    tokens = torch.randint(0, 20, (1, 31))
    ids = torch.tensor([[0] * 12 + [1] * 19])
    packed, _ = lm(tokens[:, :30], doc_ids=ids[:, :30])
    first, _ = lm(tokens[:, :12])
    second, _ = lm(tokens[:, 12:30])
    torch.testing.assert_close(packed, torch.cat([first, second], 1), atol=1e-12, rtol=1e-10)
    logits_a, _ = lm(tokens[:, :11])
    logits_b, _ = lm(tokens[:, 12:30])
    per_doc = torch.cat([F.cross_entropy(logits_a[0], tokens[0, 1:12], reduction="none"),
                         F.cross_entropy(logits_b[0], tokens[0, 13:31], reduction="none")])
    torch.testing.assert_close(lm.loss(tokens, ids), per_doc.mean().float(), atol=1e-6, rtol=1e-6)


def test_packed_training_batches_and_documents():
    from attnzoo.tasks.lm import document_ids, paragraph_starts

    text = "a b\n\nc d\n \nef\n"
    starts = paragraph_starts(text)
    assert [text[s:s + 3] for s in starts] == ["a b", "c d", "ef\n"]
    assert document_ids(starts, len(text)).tolist() == [0] * 5 + [1] * 6 + [2] * 3
    lm = build_model(20, "linear", SMALL)
    with pytest.raises(ValueError, match="needs softmax attention over positions; LinearAttention"):
        lm.loss(torch.randint(0, 20, (1, 9)), torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="doc_ids must be integer document ids of the tokens' shape"):
        build_model(20, "mha", SMALL).loss(torch.randint(0, 20, (1, 9)), torch.zeros(1, 8, dtype=torch.long))
