"""The classify task's CNN with an attention block after each stage, and its report."""

import pytest
import torch

import attnzoo
from attnzoo.data.fashion_mnist import ImageSplit
from attnzoo.mechanisms import ConvBlockAttention, NonLocalAttention, SqueezeExcitationAttention
from attnzoo.mechanisms.convolutional import AugmentedConv2d
from attnzoo.models.cnn import CNN, AugmentedConvUnit, CNNConfig, resolve_block
from attnzoo.tasks import classify


def tiny(attention="none", **kw):
    torch.manual_seed(0)
    options = {"reduction": 2} if attention in ("se", "cbam") else {}
    return CNN(CNNConfig(image_size=8, classes=3, widths=[4, 8, 8], depths=[1, 1, 1], attention=attention,
                         attention_options=options, dropout=0.0, **kw))


@pytest.mark.parametrize("attention,cls,stages", [("none", None, []), ("se", SqueezeExcitationAttention, [0, 1, 2]),
                                                  ("cbam", ConvBlockAttention, [0, 1, 2]),
                                                  ("nonlocal", NonLocalAttention, [1, 2]),
                                                  ("aaconv", AugmentedConvUnit, [1, 2])])
def test_blocks_go_after_the_stages_and_give_their_maps(attention, cls, stages):
    model = tiny(attention).eval()
    assert model.block_stages() == stages
    assert all(isinstance(b, cls) for b in model.blocks.values())
    logits, maps = model(torch.rand(5, 1, 8, 8), need_weights=True)
    assert logits.shape == (5, 3) and len(maps) == len(stages)
    sides = {0: 8, 1: 4, 2: 2}  # each stage but the last halves the grid
    for s, m in zip(stages, maps):
        if m.spatial is not None:
            assert m.spatial.shape == (5, sides[s], sides[s])
        if m.positions is not None:
            assert m.positions.shape == (5, sides[s] ** 2, sides[s] ** 2)
        if m.channel is not None:
            assert m.channel.shape == (5, model.config.widths[s])
    same, _ = model(torch.rand(5, 1, 8, 8))
    assert same.shape == (5, 3)


def test_aaconv_takes_the_place_of_the_stages_last_convolution():
    plain, aug = tiny("none"), tiny("aaconv")
    convs = [[sum(isinstance(m, torch.nn.Conv2d) for m in stage) for stage in model.stages] for model in (plain, aug)]
    assert convs == [[1, 1, 1], [1, 0, 0]]  # depths [1, 1, 1]: stages 1 and 2 keep no plain conv
    units = [aug.blocks["1"].conv, aug.blocks["2"].conv]
    assert all(isinstance(u, AugmentedConv2d) for u in units)
    assert [(u.in_channels, u.out_channels, u.max_size) for u in units] == [(4, 8, (4, 4)), (8, 8, (2, 2))]
    deeper = CNN(CNNConfig(image_size=8, classes=3, widths=[4, 8], depths=[1, 2], attention="aaconv"))
    assert sum(isinstance(m, torch.nn.Conv2d) for m in deeper.stages[1]) == 1  # conv 4 -> 8, then aaconv 8 -> 8
    assert deeper.blocks["1"].conv.in_channels == 8
    x = torch.rand(3, 1, 8, 8)
    logits, maps = aug.eval()(x, need_weights=True)
    assert torch.allclose(aug(x)[0], logits)  # the maps do not change the output
    rows = maps[0].positions.sum(-1)  # (B, P): each position's weights, averaged over heads, sum to one
    assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)


def test_attention_stages_and_a_layer_class_passed_in():
    model = tiny("se", attention_stages=[2])
    assert model.block_stages() == [2]
    seen = []

    def layer(channels, **options):  # any (B, C, H, W) -> (B, C, H, W) layer, as timm's attn_layer
        seen.append(channels)
        return torch.nn.Identity()

    custom = CNN(CNNConfig(widths=[4, 8], depths=[1, 1], attention="se"), block=layer)
    assert seen == [4, 8] and custom(torch.rand(2, 1, 28, 28))[0].shape == (2, 10)
    with pytest.raises(ValueError, match=r"attention_stages holds 3, but the network has stages 0..2"):
        tiny("se", attention_stages=[3])


def test_default_sizes_of_the_classify_cnn():
    sizes = {a: classify.build_model(a, {}, "cnn").num_parameters()
             for a in ("none", "se", "cbam", "nonlocal", "aaconv")}
    assert 100_000 <= sizes["none"] <= 300_000, sizes
    assert sizes["none"] < sizes["se"] < sizes["cbam"] < sizes["nonlocal"] < 350_000, sizes
    # the augmented convolutions give a quarter of their channels to attention, whose 1x1 projections cost less
    assert 0.85 * sizes["none"] < sizes["aaconv"] < sizes["none"], sizes


def test_unknown_blocks_and_options_fail_with_a_clear_error():
    with pytest.raises(ValueError, match="expected one of 'none', 'se', 'cbam', 'nonlocal', 'aaconv'"):
        classify.check_model("lightweight", {}, "cnn")  # a sequence convolution, not an image block
    with pytest.raises(ValueError, match="unknown attention \\(the cnn's block\\) 'sse'; .*did you mean 'se'"):
        resolve_block("sse")
    with pytest.raises(ValueError, match="unknown cnn model option"):
        classify.check_model("se", {"widht": [8]}, "cnn")
    with pytest.raises(ValueError, match="attention \\(the vit's slot\\)"):
        classify.check_model("se", {}, "vit")


def test_the_cnn_learns_where_the_bright_half_is():
    model = tiny("cbam")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(128, 1, 8, 8, generator=g) * 0.2
    y = torch.randint(0, 3, (128,), generator=g)
    x[y == 0, :, :, :4] += 0.8
    x[y == 1, :, :, 4:] += 0.8
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(model(x)[0], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (model.eval()(x)[0].argmax(-1) == y).float().mean() > 0.95


def fake_split(seed=0, **kw):
    g = torch.Generator().manual_seed(seed)

    def part(n):
        return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)

    (tx, ty), (dx, dy), (ex, ey) = part(48), part(8), part(8)
    return ImageSplit(train_images=tx, train_labels=ty, dev_images=dx, dev_labels=dy, test_images=ex, test_labels=ey)


@pytest.mark.parametrize("attention", ["se", "cbam", "nonlocal", "aaconv"])
def test_a_cnn_run_reports_its_maps_and_loads_back(tmp_path, monkeypatch, attention):
    monkeypatch.setattr(classify, "load_split", fake_split)
    cfg = classify.ClassifyConfig(model="cnn", epochs=1, batch_size=16, device="cpu", precision="fp32")
    assert cfg.lr == classify.CNN_LR
    overrides = {"widths": [8, 16, 16], "depths": [1, 1, 1]}
    metrics = classify.train(cfg, tmp_path, attention=attention, model_overrides=overrides, progress=False)
    assert metrics["model"] == "cnn" and metrics["attention"] == attention and metrics["steps"] == 3
    html = (tmp_path / "report.html").read_text()
    assert "classify · cnn · " + attention in html
    assert html.count("data:image/png;base64,") >= 2  # the learning curves and the maps
    assert ("Channel gates" in html) == (attention in ("se", "cbam"))
    assert ("Non-local attention" in html) == (attention == "nonlocal")
    assert ("augmented convolution" in html) == (attention == "aaconv")
    run = attnzoo.load(tmp_path)
    assert isinstance(run.model, CNN) and run.model.config.attention == attention
    assert len(run.classify(torch.rand(3, 28, 28))) == 3


def test_the_model_follows_from_the_attention_name_and_cnn_is_the_default():
    assert classify.DEFAULT_MODEL == "cnn" and classify.ClassifyConfig().model == "cnn"
    assert classify.model_for(None) == "cnn" and classify.model_for("se") == "cnn"
    assert classify.model_for("gqa") == "vit" and classify.model_for("none") == "cnn"
    assert isinstance(classify.build_model("cbam", {}), CNN)
    assert classify.ClassifyConfig(model="vit").lr == 1e-3 and classify.ClassifyConfig().lr == classify.CNN_LR
