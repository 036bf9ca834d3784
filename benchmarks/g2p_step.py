"""One training step of the default g2p Transformer on the CPU: attnzoo now against PyTorch's CPU kernels.

    python benchmarks/g2p_step.py      # alone on the machine; prints ms per step and words/s of each variant

The step is the trainer's: bfloat16 autocast forward, label-smoothed loss, backward, gradient clipping and
AdamW, on the first batches of the standard split's training words (256 words each, bucketed by length).
Variants, interleaved batch by batch so drift in the machine's speed hits all of them alike:

* ``attnzoo``: as the library runs now (its dropout, ``backend="auto"``);
* ``torch dropout``: every attnzoo ``Dropout`` swapped for ``nn.Dropout`` (``torch.bernoulli_``);
* ``torch dropout + bf16 SDPA``: also ``CPU_BF16_EAGER_KEYS = 0``, so ``auto`` hands every call to
  ``F.scaled_dot_product_attention`` (what the library did before both changes).
"""
import sys
import time

import torch
from torch import nn

from attnzoo.core.dropout import Dropout
from attnzoo.data.batching import bucketed_batches
from attnzoo.tasks.g2p import build_model, make_split

ATTEND = sys.modules["attnzoo.core.attend"]  # the module (attnzoo.core.attend is also the function's name)
WARMUP, STEPS = 5, 40


def torch_dropout(model: nn.Module) -> nn.Module:
    """The model with each attnzoo Dropout replaced by an nn.Dropout of the same rate."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, Dropout):
                setattr(module, name, nn.Dropout(child.p))
    return model


def main() -> None:
    torch.set_num_threads(2)
    split = make_split("standard", seed=0)
    letters, phonemes = split.vocabs()
    pairs = [(letters.encode(list(w)), phonemes.encode(p, add_bos=True, add_eos=True)) for w, p in split.train]
    batches = list(bucketed_batches(pairs, 256, seed=0, epoch=0, pad_id=letters.pad_id))[: WARMUP + STEPS]

    variants = {}
    for name in ("attnzoo", "torch dropout", "torch dropout + bf16 SDPA"):
        torch.manual_seed(0)
        model = build_model("transformer", letters, phonemes, "mha").train()
        if name != "attnzoo":
            torch_dropout(model)
        variants[name] = (model, torch.optim.AdamW(model.parameters(), lr=1e-3), name.endswith("SDPA"))

    seconds = {name: 0.0 for name in variants}
    words = 0
    eager_keys = ATTEND.CPU_BF16_EAGER_KEYS
    for i, batch in enumerate(batches):
        for name, (model, opt, sdpa) in variants.items():
            ATTEND.CPU_BF16_EAGER_KEYS = 0 if sdpa else eager_keys
            t = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model.loss(batch.src, batch.src_lengths, batch.tgt, label_smoothing=0.1)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i >= WARMUP:
                seconds[name] += time.perf_counter() - t
        words += batch.src.shape[0] if i >= WARMUP else 0  # batch.src: (B, S) letter ids
    ATTEND.CPU_BF16_EAGER_KEYS = eager_keys

    ours = seconds["attnzoo"]
    for name, s in seconds.items():
        print(f"{name:<28} {s / STEPS * 1e3:6.1f} ms/step  {words / s:6.0f} words/s  "
              f"attnzoo is {s / ours:.2f}x as fast")


if __name__ == "__main__":
    main()
