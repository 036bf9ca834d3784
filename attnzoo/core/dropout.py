"""Dropout whose CPU mask costs a quarter of the random numbers.

    keep_i  ~ Bernoulli(1 - p)            # one mask entry per element
    out_i   = x_i * keep_i / (1 - p)      # E[out] = x

On CUDA ``F.dropout`` is one fused kernel and is used as it is. On the CPU,
``torch.bernoulli_`` draws one random number per element from the Mersenne
Twister, serially: in a g2p Transformer step it took 28% of the time
(``benchmarks/README.md``). Here each 64-bit draw gives four 15-bit uniforms
``u`` in [0, 32768), and an element is kept when ``u >= round(32768 p)``.
The drop rate is therefore p rounded to a multiple of 1/32768 (0.1 ->
0.100006), and the scale is the exact inverse of that keep rate, so the
output stays unbiased. The draws come from the default CPU generator:
``torch.manual_seed`` makes the masks reproducible and the trainer's saved RNG
state resumes them.

Shape legend: any shape; the mask has the input's shape.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import validate as V

#: bits of each uniform draw: the drop rate is p rounded to a multiple of 2**-LEVEL_BITS
LEVEL_BITS = 15
_LEVELS = 1 << LEVEL_BITS
_PER_WORD = 4  # 15-bit uniforms per 64-bit draw (one per 16-bit lane; the top lane's sign bit is always 0)


#: a drop rate: 1 drops everything (as nn.Dropout allows); NaN, strings and bools are refused
RATE = V.Kind("a probability in [0, 1]", (numbers.Real,), low=0, high=1)


def _check_p(p: float) -> None:
    RATE.check("p", p, "dropout")


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu"
              ) -> tuple[Tensor, float]:
    """A boolean mask of ``shape`` (True = kept) and its exact keep rate, ``1 - round(p * 32768) / 32768``."""
    _check_p(p)
    return _draw_keep(shape, p, device)


def _draw_keep(shape, p: float, device) -> tuple[Tensor, float]:
    threshold = round(p * _LEVELS)
    n = math.prod(shape)
    words = torch.empty((n + _PER_WORD - 1) // _PER_WORD, dtype=torch.int64, device=device).random_()
    # random_() fills int64 with 63 uniform bits, so every 16-bit lane's low 15 bits are uniform
    lanes = words.view(torch.int16)[:n].view(shape)  # (*shape,) four lanes per word
    return (lanes & (_LEVELS - 1)) >= threshold, 1.0 - threshold / _LEVELS


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """``F.dropout(x, p, training)``, with the CPU mask drawn four elements per random number."""
    _check_p(p)
    if not training or p == 0:
        return x
    if x.device.type != "cpu" or p == 1:
        return F.dropout(x, p, training=True)
    keep, rate = _draw_keep(x.shape, p, x.device)  # p checked above
    return x * (keep.to(x.dtype) * (1.0 / rate))  # autograd keeps the scaled mask for the backward


class Dropout(nn.Dropout):
    """``nn.Dropout`` with :func:`dropout`'s cheaper CPU mask (``inplace`` is not offered)."""

    @V.checked(p=RATE)  # nn.Dropout lets NaN through
    def __init__(self, p: float = 0.5):
        super().__init__(p)

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)
