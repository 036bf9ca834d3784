"""A small training loop: a budget in minutes or epochs, periodic evaluation,
the best weights kept, a progress bar, and no lost work on Ctrl-C.

The learning rate follows the budget: a short linear warm-up, then a cosine
decay to ``final_lr_fraction`` of the peak at the end of the budget (measured
in seconds for ``minutes``, in steps for ``epochs``), so a 5-minute and a
60-minute run both end annealed.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

log = logging.getLogger(__name__)


@dataclass
class Budget:
    minutes: float | None = None  # wall-clock cap on training (evaluations included)
    epochs: float | None = None  # fixed work instead; fractional epochs allowed

    def __post_init__(self):
        if self.minutes is None and self.epochs is None:
            raise ValueError("a budget needs minutes or epochs")
        if self.minutes is not None and not self.minutes > 0:
            raise ValueError(f"minutes must be positive, got {self.minutes}")
        if self.epochs is not None and not self.epochs > 0:
            raise ValueError(f"epochs must be positive, got {self.epochs}")


@dataclass
class TrainResult:
    records: list[dict] = field(default_factory=list)  # one per evaluation (metrics.jsonl)
    best: dict | None = None  # the best evaluation record
    steps: int = 0
    train_seconds: float = 0.0
    interrupted: bool = False


def autocast(model: nn.Module, dtype: torch.dtype | None):
    """Mixed precision for the forward pass (None: full precision); float32 master weights."""
    device_type = next(model.parameters()).device.type
    return torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """'fp32' -> None; 'bf16' -> bfloat16 autocast; 'auto' -> bf16 where the hardware has it."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    # CPUs with AVX512-BF16 or AMX run bf16 matmuls and LSTMs natively (about 1.6x faster here);
    # elsewhere bf16 is emulated and slower, so stay in float32.
    check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return torch.bfloat16 if (check and check()) or (amx and amx()) else None


class Trainer:
    """Runs ``loss_fn(model, batch) -> (loss, items)`` over ``batches(epoch)`` within a budget.

    ``evaluate(model) -> dict`` runs every ``eval_every_minutes`` and at the end;
    ``primary`` names its key to select the best weights by (``lower_is_better``
    by default). ``on_record(record, is_best)`` is called after each evaluation
    (to write metrics.jsonl and a checkpoint).
    """

    def __init__(self, model: nn.Module, *, lr: float, budget: Budget, evaluate: Callable[[nn.Module], dict],
                 primary: str, higher_is_better: bool = False, eval_every_minutes: float = 1.0,
                 grad_clip: float = 1.0, warmup_fraction: float = 0.03, final_lr_fraction: float = 0.05,
                 weight_decay: float = 0.0, on_record: Callable[[dict, bool], Any] | None = None,
                 progress: bool | None = None, unit: str = "items", autocast_dtype: torch.dtype | None = None):
        self.model, self.budget, self.evaluate = model, budget, evaluate
        self.primary, self.higher_is_better = primary, higher_is_better
        self.eval_every = eval_every_minutes * 60
        self.grad_clip, self.warmup, self.final = grad_clip, warmup_fraction, final_lr_fraction
        self.peak_lr = lr
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        self.on_record = on_record
        self.progress = progress
        self.unit = unit
        self.autocast_dtype = autocast_dtype

    def lr_at(self, fraction: float) -> float:
        f = min(max(fraction, 0.0), 1.0)
        if f < self.warmup:
            return self.peak_lr * (f / self.warmup)
        cos = 0.5 * (1 + math.cos(math.pi * (f - self.warmup) / (1 - self.warmup)))
        return self.peak_lr * (self.final + (1 - self.final) * cos)

    def fit(self, batches: Callable[[int], Iterable], steps_per_epoch: int,
            loss_fn: Callable[[nn.Module, Any], tuple[torch.Tensor, int]]) -> TrainResult:
        budget_s = None if self.budget.minutes is None else self.budget.minutes * 60
        total_steps = None if self.budget.epochs is None else max(1, int(self.budget.epochs * steps_per_epoch))
        result = TrainResult()
        best_state = None
        start = last_eval = time.monotonic()
        eval_seconds = 0.0
        loss_sum, loss_n, items = 0.0, 0, 0
        bar = tqdm(total=total_steps or int(budget_s), unit="step" if total_steps else "s", disable=self.progress is False
                   if self.progress is not None else None, dynamic_ncols=True, leave=True)
        step, epoch, done = 0, 0, False

        def fraction() -> float:
            if total_steps is not None:
                return step / total_steps
            return (time.monotonic() - start) / budget_s

        def run_eval(final: bool) -> None:
            nonlocal best_state, last_eval, loss_sum, loss_n, eval_seconds
            t0 = time.monotonic()
            self.model.eval()
            metrics = self.evaluate(self.model)
            self.model.train()
            eval_seconds += time.monotonic() - t0
            record = {"step": step, "epoch": round(step / steps_per_epoch, 3),
                      "seconds": round(time.monotonic() - start, 1),
                      "train_loss": round(loss_sum / max(loss_n, 1), 4),
                      "lr": self.optimizer.param_groups[0]["lr"], **metrics}
            loss_sum, loss_n = 0.0, 0
            value = metrics[self.primary]
            is_best = result.best is None or (value > result.best[self.primary] if self.higher_is_better
                                              else value < result.best[self.primary])
            if is_best:
                result.best = record
                best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            result.records.append(record)
            bar.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
            if self.on_record is not None:
                self.on_record(record, is_best)
            last_eval = time.monotonic()

        self.model.train()
        tick = time.monotonic()
        try:
            while not done:
                for batch in batches(epoch):
                    for g in self.optimizer.param_groups:
                        g["lr"] = self.lr_at(fraction())
                    with autocast(self.model, self.autocast_dtype):
                        loss, n_items = loss_fn(self.model, batch)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"training loss became {loss.item()} at step {step}; "
                                                 "lower --lr or check the data")
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if self.grad_clip:
                        nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
                    self.optimizer.step()
                    step += 1
                    loss_sum += loss.item()
                    loss_n += 1
                    items += n_items
                    now = time.monotonic()
                    elapsed = now - start
                    if total_steps is not None:
                        bar.update(1)
                    elif int(elapsed) > bar.n:  # the bar counts budget seconds
                        bar.update(int(elapsed) - bar.n)
                    if step % 10 == 0:
                        rate = items / max(now - tick - 0.0, 1e-9)
                        bar.set_postfix(loss=f"{loss_sum / max(loss_n, 1):.3f}", rate=f"{rate:.0f} {self.unit}/s",
                                        epoch=f"{step / steps_per_epoch:.2f}", refresh=False)
                    if (total_steps is not None and step >= total_steps) or \
                            (budget_s is not None and elapsed >= budget_s):
                        done = True
                        break
                    if now - last_eval >= self.eval_every:
                        run_eval(final=False)
                epoch += 1
        except KeyboardInterrupt:
            result.interrupted = True
            log.warning("interrupted at step %d: evaluating and saving what was trained so far", step)
        bar.close()
        result.steps = step
        result.train_seconds = time.monotonic() - start
        run_eval(final=True)
        if best_state is not None:
            self.model.load_state_dict(best_state)
        return result
