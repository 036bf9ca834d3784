"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) from Debian's ``dataset-fashion-mnist``.

70,000 28x28 grey images of 10 clothing classes: the official 60,000 training
and 10,000 test images, read from the IDX files the Debian package installs
(``apt-get install dataset-fashion-mnist``); nothing is downloaded. A seeded
``dev_size`` slice of the training images is held out for model selection.
"""

from __future__ import annotations

import gzip
import random
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from . import MissingDataError

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
SEARCH_DIRS = (Path("/usr/share/datasets/fashion-mnist"),  # where Debian's package puts them
               Path("/usr/share/dataset-fashion-mnist"), Path("/usr/share/fashion-mnist"))
INSTALL_HINT = ("the classify task needs Fashion-MNIST: apt-get install dataset-fashion-mnist "
                "(Debian/Ubuntu; run apt-get update first)")
FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
         "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}


def find_dir(dirs=SEARCH_DIRS) -> Path:
    for d in dirs:
        if d.is_dir() and all(_file(d, name) is not None for name in FILES.values()):
            return d
    raise MissingDataError(INSTALL_HINT)


def _file(d: Path, stem: str) -> Path | None:
    for candidate in (d / stem, d / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped) -> numpy array of its shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = data[0:2], data[2], data[3]
    if zero != b"\x00\x00" or dtype_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    shape = struct.unpack(f">{ndim}I", data[4: 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


@dataclass
class ImageSplit:
    train_images: Tensor  # (N, 1, 28, 28) float in [0, 1]
    train_labels: Tensor  # (N,)
    dev_images: Tensor
    dev_labels: Tensor
    test_images: Tensor
    test_labels: Tensor


def load_split(seed: int = 0, dev_size: int = 5000, data_dir: Path | None = None) -> ImageSplit:
    d = find_dir() if data_dir is None else data_dir
    arrays = {}
    for key, stem in FILES.items():
        path = _file(d, stem)
        if path is None:
            raise MissingDataError(INSTALL_HINT)
        arrays[key] = read_idx(path)

    def images(a):
        return torch.from_numpy(a.astype(np.float32) / 255.0).unsqueeze(1)  # (N, 1, 28, 28)

    order = list(range(len(arrays["train_labels"])))
    random.Random(seed).shuffle(order)
    dev_idx, train_idx = torch.tensor(order[:dev_size]), torch.tensor(order[dev_size:])
    train_x, train_y = images(arrays["train_images"]), torch.from_numpy(arrays["train_labels"].astype(np.int64))
    return ImageSplit(train_x[train_idx], train_y[train_idx], train_x[dev_idx], train_y[dev_idx],
                      images(arrays["test_images"]), torch.from_numpy(arrays["test_labels"].astype(np.int64)))
