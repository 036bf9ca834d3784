"""The Vision Transformer and the classify task's pieces."""

import gzip
import struct

import numpy as np
import pytest
import torch

from attnzoo.data import MissingDataError
from attnzoo.data.fashion_mnist import find_dir, read_idx
from attnzoo.models.vit import ViT, ViTConfig
from attnzoo.tasks.classify import augment, build_model


def tiny(**kw):
    torch.manual_seed(0)
    return ViT(ViTConfig(image_size=8, patch_size=2, classes=3, dim=16, num_heads=2, layers=2, dropout=0.0, **kw))


def test_shapes_and_class_token_attention():
    model = tiny().eval()
    logits, weights = model(torch.rand(5, 1, 8, 8), need_weights=True)
    assert logits.shape == (5, 3)
    assert len(weights) == 2 and weights[0].shape == (5, 2, 17, 17)  # 16 patches + the class token
    torch.testing.assert_close(weights[1].sum(-1), torch.ones(5, 2, 17))
    with pytest.raises(ValueError, match=r"images must have shape \(B, 1, 8, 8\)"):
        model(torch.rand(5, 8, 8))
    with pytest.raises(ValueError, match="multiple of patch_size"):
        ViTConfig(image_size=28, patch_size=5)


def test_fused_and_eager_agree():
    model = tiny().eval()
    x = torch.rand(3, 1, 8, 8)
    fused, _ = model(x)
    eager, _ = model(x, need_weights=True)  # weights force the eager path
    torch.testing.assert_close(fused, eager, atol=1e-5, rtol=1e-5)


def test_vit_learns_where_the_bright_half_is():
    torch.manual_seed(0)
    model = tiny(positions="learned")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x = torch.rand(256, 1, 8, 8) * 0.2
    y = torch.randint(0, 3, (256,))
    for i in range(256):  # class 0: left half bright; 1: right half; 2: none
        if y[i] == 0:
            x[i, :, :, :4] += 0.8
        elif y[i] == 1:
            x[i, :, :, 4:] += 0.8
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(model(x)[0], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (model(x)[0].argmax(-1) == y).float().mean() > 0.95


def test_augment_shifts_and_flips_without_changing_shape():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 10:18, 10:18] = 1.0
    out = augment(x, g)
    assert out.shape == x.shape
    assert torch.allclose(out.sum((1, 2, 3)), x.sum((1, 2, 3)))  # a shift of <= 2 px keeps this square whole
    assert not torch.equal(out, x)


def test_factory_sets_kv_heads():
    assert build_model("mqa", {"dim": 16, "num_heads": 4, "layers": 1}).blocks[0].self_attn.num_kv_heads == 1
    with pytest.raises(ValueError, match="vit's slot"):
        build_model("additive", {}, "vit")
    with pytest.raises(ValueError, match="unknown attention 'additive' for classify.*the vit's slot: mha, gqa, mqa"):
        build_model("additive", {})


def _write_idx(path, array, gz):
    header = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_reads_what_was_written(tmp_path, gz):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("x.idx.gz" if gz else "x.idx")
    _write_idx(path, arr, gz)
    assert np.array_equal(read_idx(path), arr)


def test_missing_dataset_names_the_apt_command(tmp_path):
    with pytest.raises(MissingDataError, match="apt-get install dataset-fashion-mnist"):
        find_dir((tmp_path / "nowhere",))


def test_the_debian_fashion_mnist_split():
    from attnzoo.data.fashion_mnist import load_split

    data = load_split(seed=0, dev_size=5000)
    assert data.train_images.shape == (55000, 1, 28, 28) and data.test_images.shape == (10000, 1, 28, 28)
    assert len(data.dev_labels) == 5000 and set(data.test_labels.tolist()) == set(range(10))
    assert 0.0 <= float(data.train_images.min()) and float(data.train_images.max()) <= 1.0
    again = load_split(seed=0, dev_size=5000)
    assert torch.equal(again.dev_labels, data.dev_labels)
