"""A small training loop: a budget in minutes or epochs, periodic evaluation,
the best weights kept, a progress bar, and no lost work on Ctrl-C, SIGTERM or kill -9.

The learning rate follows the budget: a short linear warm-up, then a cosine
decay to ``final_lr_fraction`` of the peak at the end of the budget (measured
in seconds for ``minutes``, in steps for ``epochs``), so a 5-minute and a
60-minute run both end annealed.

Runs that survive: every ``checkpoint_every_minutes``, when training stops and
at the end, ``on_checkpoint(state)`` receives the whole training state (weights,
optimizer, step, epoch and position in it, budget seconds used, evaluation
records, the best weights, the torch/CUDA/Python/NumPy random states), made of
tensors, numbers, strings, lists and dicts only so that
``torch.load(weights_only=True)`` reads it back. ``fit(..., resume=state)``
continues from it: ``batches(epoch)`` must give the same batches for the same
epoch (derive the order from a seed and the epoch, as every task does), and the
batches of the current epoch already trained are drawn and skipped, so the
data order, the learning-rate schedule (a function of the step or of the budget
seconds used) and the dropout draws are those of an uninterrupted run.

Weight averaging (``ema_decay`` > 0): after every step an exponential moving
average of the weights moves towards them, ``ema <- decay * ema + (1 - decay) * w``
(with ``decay_t = min(decay, (1 + t) / (10 + t))`` so early steps are not dominated
by the initialisation). Evaluations, the best weights kept and the returned model
are the average's; each record also carries the raw weights' primary metric as
``raw_<primary>``, so a run shows what the average gained.

Stopping: the first Ctrl-C (SIGINT) or a SIGTERM stops the loop at the next step
boundary; the state is saved at once, then the model is evaluated and the
caller reports as usual (``TrainResult.stopped_by`` names the signal). A second
Ctrl-C raises ``KeyboardInterrupt`` at once (an interrupt inside a step leaves
the last saved state as it was: that step may be half applied).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import math
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from . import distributed, memory
from .signals import FAULT_ENV, StopSignals, fault_injection  # noqa: F401  (tests import FAULT_ENV from here)
from .train_state import rng_state, set_rng_state

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
    train_seconds: float = 0.0  # budget seconds used, those of the runs it was resumed from included
    interrupted: bool = False
    stopped_by: str | None = None  # "SIGINT" or "SIGTERM" when a signal stopped training
    resumed_from: int | None = None  # the step a resumed run started from
    items: int = 0  # examples (words, verses, characters, images) trained on by this process
    items_per_second: float | None = None  # training throughput: items / seconds of training steps, evaluations
    #                                        excluded (None when this process trained no step)
    unit: str = "items"  # what an item is (the Trainer's unit)
    peak_bytes: int | None = None  # peak memory while this process trained (see training/memory.py)


#: the training state's own version (inside the file's format_version): bumped when its keys change meaning
STATE_VERSION = 1


@dataclass
class _Loop:
    """One ``fit``'s mutable state: where training is in the data, its clocks and sums, what it recorded."""
    steps_per_epoch: int
    budget_s: float | None  # a budget in minutes, as seconds
    total_steps: int | None  # a budget in epochs, as steps
    result: TrainResult
    step: int = 0
    epoch: int = 0
    epoch_step: int = 0  # batches of `epoch` already trained
    elapsed0: float = 0.0  # budget seconds used by the runs this one resumed
    since_eval: float = 0.0  # seconds from their last evaluation to their saved state
    loss_sum: float = 0.0  # the training loss since the last evaluation
    loss_n: int = 0
    items: int = 0  # trained on by this process
    best_state: dict | None = None  # the best weights
    start: float = 0.0  # time.monotonic() when the budget's clock started (earlier for a resumed run)
    last_eval: float = 0.0
    last_ckpt: float = 0.0
    last_ckpt_step: int = 0
    eval_seconds: float = 0.0  # spent evaluating by this process
    tick: float = 0.0  # when this process started training (the throughput's clock)
    done: bool = False  # the budget is spent
    consistent: bool = True  # False inside a step: its update may be half applied
    fault: tuple[int | None, int] | None = None  # FAULT_ENV's (step, signal)
    place: distributed.Distributed | None = None
    step_loss: Callable | None = None  # loss_fn, through DistributedDataParallel under torchrun
    bar: Any = None  # the progress bar
    signals: StopSignals | None = None

    def fraction(self) -> float:
        """The part of the budget used: in steps (epochs) or in seconds (minutes)."""
        if self.total_steps is not None:
            return self.step / self.total_steps
        return (time.monotonic() - self.start) / self.budget_s

    def budget_spent(self) -> bool:
        """Whether the budget's steps or seconds are used up."""
        return (self.total_steps is not None and self.step >= self.total_steps) or \
            (self.budget_s is not None and time.monotonic() - self.start >= self.budget_s)


def check_ema_decay(decay: float) -> None:
    """The averaging decay in [0, 1), or a ValueError naming it (one check for the options and the Trainer)."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1) (0 turns weight averaging off; 0.999 averages over about "
                         f"the last 1,000 steps), got {decay}")


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
    (to write metrics.jsonl and a checkpoint). ``on_checkpoint(state)`` is called
    with the training state every ``checkpoint_every_minutes`` (or
    ``checkpoint_every_steps``, for tests), when training stops and at the end.
    ``eval_every_steps`` adds evaluations every that many steps (tests: a loss curve).

    Under ``torchrun`` (see :mod:`attnzoo.training.distributed`) each process
    trains on its part of every batch through DistributedDataParallel; rank 0
    alone evaluates and checkpoints, and the other ranks raise
    :class:`~attnzoo.training.distributed.WorkerFinished` once training ends.
    """

    def __init__(self, model: nn.Module, *, lr: float, budget: Budget, evaluate: Callable[[nn.Module], dict],
                 primary: str, higher_is_better: bool = False, eval_every_minutes: float = 1.0,
                 grad_clip: float = 1.0, warmup_fraction: float = 0.03, final_lr_fraction: float = 0.05,
                 weight_decay: float = 0.0, on_record: Callable[[dict, bool], Any] | None = None,
                 progress: bool | None = None, unit: str = "items", autocast_dtype: torch.dtype | None = None,
                 on_checkpoint: Callable[[dict], Any] | None = None, checkpoint_every_minutes: float = 5.0,
                 checkpoint_every_steps: int | None = None, eval_every_steps: int | None = None,
                 ema_decay: float = 0.0):
        check_ema_decay(ema_decay)
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
        self.on_checkpoint = on_checkpoint
        self.checkpoint_every = checkpoint_every_minutes * 60
        self.checkpoint_every_steps = checkpoint_every_steps
        self.eval_every_steps = eval_every_steps
        self.ema_decay = ema_decay
        # the averaged weights: a float tensor per parameter and floating-point buffer (BatchNorm's statistics),
        # next to the live tensor it follows; tied weights once (named_* drop duplicates), or a swap would undo itself
        # (persistent buffers only: the others are constants a module may rebuild, such as RoPE's tables)
        self._live: dict[str, torch.Tensor] = {}
        self.ema: dict[str, torch.Tensor] | None = None
        if ema_decay:
            saved = model.state_dict().keys()
            live = itertools.chain(model.named_parameters(),
                                   ((k, b) for k, b in model.named_buffers() if k in saved))
            self._live = {k: v.detach() for k, v in live if v.is_floating_point()}
            self.ema = {k: v.clone() for k, v in self._live.items()}

    @torch.no_grad()
    def _ema_update(self, step: int) -> None:
        """ema <- d * ema + (1 - d) * w after optimizer step ``step`` (1-based)."""
        d = min(self.ema_decay, (1 + step) / (10 + step))
        for k, w in self._live.items():
            self.ema[k].lerp_(w.detach(), 1.0 - d)

    @torch.no_grad()
    def _swap_ema(self) -> None:
        """Exchange the live weights and the averaged ones (twice restores them)."""
        for k, w in self._live.items():
            held = w.detach().clone()
            w.copy_(self.ema[k])
            self.ema[k].copy_(held)

    @contextlib.contextmanager
    def _averaged(self):
        """Inside the block the model holds the averaged weights, and after it the live ones again, even when
        the block raises (a second Ctrl-C during an evaluation): the training state saved next is never swapped."""
        if self.ema is None:
            yield
            return
        self._swap_ema()
        try:
            yield
        finally:
            self._swap_ema()

    def lr_at(self, fraction: float) -> float:
        f = min(max(fraction, 0.0), 1.0)
        if f < self.warmup:
            return self.peak_lr * (f / self.warmup)
        cos = 0.5 * (1 + math.cos(math.pi * (f - self.warmup) / (1 - self.warmup)))
        return self.peak_lr * (self.final + (1 - self.final) * cos)

    def fit(self, batches: Callable[[int], Iterable], steps_per_epoch: int,
            loss_fn: Callable[[nn.Module, Any], tuple[torch.Tensor, int]], resume: dict | None = None) -> TrainResult:
        """Train within the budget; ``resume``: a state that ``on_checkpoint`` received, to continue from."""
        budget_s = None if self.budget.minutes is None else self.budget.minutes * 60
        total_steps = None if self.budget.epochs is None else max(1, int(self.budget.epochs * steps_per_epoch))
        loop = _Loop(steps_per_epoch, budget_s, total_steps, TrainResult(unit=self.unit))
        if resume is not None and self._resume(loop, resume):
            return loop.result  # training had ended: nothing to train
        self._start(loop, loss_fn)
        memory.reset(self._device())
        with StopSignals() as loop.signals:
            self._train(loop, batches)
            self._end_training(loop)
        # from here on Ctrl-C and SIGTERM act as usual: the state above is safe, a resumed run starts here
        return self._finish(loop)

    def _resume(self, loop: _Loop, resume: dict) -> bool:
        """Load a saved training state into the model, optimizer, average and ``loop``; True if it had finished."""
        if resume.get("state_version") != STATE_VERSION:
            raise ValueError(f"resume: a training state of version {resume.get('state_version')!r}, this "
                             f"attnzoo continues version {STATE_VERSION}; start the run again")
        if resume["steps_per_epoch"] != loop.steps_per_epoch:
            raise ValueError(f"resume: the run had {resume['steps_per_epoch']} steps per epoch, now "
                             f"{loop.steps_per_epoch}: its data or batch size changed, so its data order cannot "
                             "be followed; start the run again")
        self.model.load_state_dict(resume["model"])
        if self.ema is not None:  # a state saved without averaging starts the average from its weights
            for k, v in (resume.get("ema") or self._live).items():
                self.ema[k].copy_(v)
        # a copy: the optimizer would otherwise update the caller's tensors in place
        self.optimizer.load_state_dict(copy.deepcopy(resume["optimizer"]))
        loop.step, loop.epoch, loop.epoch_step = resume["step"], resume["epoch"], resume["epoch_step"]
        loop.elapsed0, loop.since_eval = resume["elapsed"], resume["since_eval"]
        loop.loss_sum, loop.loss_n = resume["loss_sum"], resume["loss_n"]
        loop.result.records = list(resume["records"])
        loop.result.best = resume["best_record"]
        loop.best_state = resume["best"]
        loop.result.resumed_from = loop.step
        set_rng_state(resume["rng"])
        if resume["finished"]:  # training had ended (killed while testing or reporting): nothing to train
            loop.result.steps, loop.result.train_seconds = loop.step, loop.elapsed0
            self.model.load_state_dict(loop.best_state if loop.best_state is not None else resume["model"])
            return True
        log.info("resuming at step %d (epoch %d, batch %d of it, %.0f s of the budget used)", loop.step, loop.epoch,
                 loop.epoch_step, loop.elapsed0)
        return False

    def _start(self, loop: _Loop, loss_fn: Callable) -> None:
        """Start the clocks (a resumed run's where they were), the processes' loss, the progress bar."""
        loop.start = time.monotonic() - loop.elapsed0
        loop.last_eval, loop.last_ckpt = time.monotonic() - loop.since_eval, time.monotonic()
        loop.last_ckpt_step = loop.step
        loop.fault = fault_injection()
        loop.place = place = distributed.current()
        loop.step_loss = distributed.wrap(self.model, loss_fn)  # loss_fn itself on one process
        steps = loop.total_steps
        loop.bar = tqdm(total=steps or int(loop.budget_s), initial=loop.step if steps else int(loop.elapsed0),
                        unit="step" if steps else "s", disable=True if not place.is_main else
                        self.progress is False if self.progress is not None else None, dynamic_ncols=True,
                        leave=True)
        self.model.train()
        loop.tick = time.monotonic()

    def _train(self, loop: _Loop, batches: Callable[[int], Iterable]) -> None:
        """Train epoch after epoch until the budget is spent or a signal stops it."""
        try:
            loop.done = loop.budget_spent()  # a run resumed after its last step but before its final evaluation
            while not loop.done and self._train_epoch(loop, batches):
                loop.epoch, loop.epoch_step = loop.epoch + 1, 0
        except KeyboardInterrupt:
            loop.signals.stop = "SIGINT"
            log.warning("interrupted at step %d: evaluating and saving what was trained so far", loop.step)

    def _train_epoch(self, loop: _Loop, batches: Callable[[int], Iterable]) -> bool:
        """Train on the rest of epoch ``loop.epoch``: True once it is over, False when training stops in it."""
        place = loop.place
        # the same batches as an uninterrupted run: those of this epoch already trained are skipped
        for batch in itertools.islice(batches(loop.epoch), loop.epoch_step, None):
            if place.enabled:
                if distributed.batch_size(batch) < place.world_size:
                    loop.epoch_step += 1  # too small to give every process a part (all skip it)
                    continue
                batch = distributed.shard(batch, place)  # this process's part
            self._step(loop, batch)
            if self._after_step(loop):
                return False  # stopped by a signal, or the budget is spent
        return True

    def _step(self, loop: _Loop, batch) -> None:
        """One optimizer step on ``batch`` (this process's part), the average and the counts following it."""
        loop.consistent = False
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr_at(loop.fraction())
        with autocast(self.model, self.autocast_dtype):
            loss, n_items = loop.step_loss(self.model, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss.item()} at step {loop.step}; "
                                     "lower --lr or check the data")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        loop.step += 1
        if self.ema is not None:
            self._ema_update(loop.step)
        loop.epoch_step += 1
        loop.loss_sum += loss.item()
        loop.loss_n += 1
        loop.items += n_items * loop.place.world_size
        loop.consistent = True

    def _after_step(self, loop: _Loop) -> bool:
        """At a step boundary: the progress bar, then the evaluation, checkpoint or fault due; True to stop."""
        now = time.monotonic()
        self._show_progress(loop, now)
        signals = loop.signals
        spent, stopping = loop.budget_spent(), signals.stop is not None
        eval_due = now - loop.last_eval >= self.eval_every or bool(
            self.eval_every_steps and loop.step % self.eval_every_steps == 0)
        ckpt_due = bool(self.checkpoint_every_steps and loop.step - loop.last_ckpt_step >=
                        self.checkpoint_every_steps) or now - loop.last_ckpt >= self.checkpoint_every
        if loop.place.enabled:  # the clocks and signals of all processes: all act at the same step
            spent, stopping, eval_due, ckpt_due = distributed.agree(spent, stopping, eval_due, ckpt_due)
            if stopping and signals.stop is None:
                signals.stop = "SIGTERM"  # another process was stopped
        if spent:
            loop.done = True
            return True
        if stopping:
            return True
        if eval_due:
            self._evaluate(loop)
        if ckpt_due:
            self._checkpoint(loop)
        if loop.fault is not None and loop.step == loop.fault[0]:
            signals.inject(loop.fault[1])
        return signals.stop is not None and not loop.place.enabled  # (several: at the next step)

    def _show_progress(self, loop: _Loop, now: float) -> None:
        """Move the progress bar (steps, or budget seconds) and every 10 steps show the loss and rate."""
        bar = loop.bar
        elapsed = now - loop.start
        if loop.total_steps is not None:
            bar.update(1)
        elif int(elapsed) > bar.n:  # the bar counts budget seconds
            bar.update(int(elapsed) - bar.n)
        if loop.step % 10 == 0:
            rate = loop.items / max(now - loop.tick - 0.0, 1e-9)
            bar.set_postfix(loss=f"{loop.loss_sum / max(loop.loss_n, 1):.3f}", rate=f"{rate:.0f} {self.unit}/s",
                            epoch=f"{loop.step / loop.steps_per_epoch:.2f}", refresh=False)

    def _evaluate(self, loop: _Loop) -> None:
        """Evaluate (rank 0; with averaging, the raw weights then the average) and record the result."""
        train_loss = loop.loss_sum / max(loop.loss_n, 1)
        if loop.place.enabled:  # every process takes part: the loss of the whole batches
            mean_sum, mean_n = distributed.mean_over_processes(loop.loss_sum, loop.loss_n)
            train_loss = mean_sum / max(mean_n, 1)
            if not loop.place.is_main:
                loop.loss_sum, loop.loss_n, loop.last_eval = 0.0, 0, time.monotonic()
                return
        t0 = time.monotonic()
        self.model.eval()
        metrics = self.evaluate(self.model)
        # with averaging: the raw weights' score above, then the average's, which is kept and checkpointed
        with self._averaged():
            if self.ema is not None:
                metrics = {**self.evaluate(self.model), f"raw_{self.primary}": metrics[self.primary]}
            self.model.train()
            loop.eval_seconds += time.monotonic() - t0
            self._record(loop, metrics, train_loss)
        loop.last_eval = time.monotonic()

    def _record(self, loop: _Loop, metrics: dict, train_loss: float) -> None:
        """Keep an evaluation's record (and the weights, when best), show it and pass it to ``on_record``."""
        result = loop.result
        record = {"step": loop.step, "epoch": round(loop.step / loop.steps_per_epoch, 3),
                  "seconds": round(time.monotonic() - loop.start, 1),
                  "train_loss": round(train_loss, 4),
                  "lr": self.optimizer.param_groups[0]["lr"], **metrics}
        loop.loss_sum, loop.loss_n = 0.0, 0
        value = metrics[self.primary]
        is_best = result.best is None or (value > result.best[self.primary] if self.higher_is_better
                                          else value < result.best[self.primary])
        if is_best:
            result.best = record
            loop.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        result.records.append(record)
        loop.bar.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
        if self.on_record is not None:
            self.on_record(record, is_best)

    def _state(self, loop: _Loop, finished: bool) -> dict:
        """The whole training state, for ``on_checkpoint`` and ``fit(resume=...)``."""
        now = time.monotonic()
        return {"state_version": STATE_VERSION, "step": loop.step, "epoch": loop.epoch, "epoch_step": loop.epoch_step,
                "steps_per_epoch": loop.steps_per_epoch, "elapsed": now - loop.start,
                "since_eval": now - loop.last_eval, "loss_sum": loop.loss_sum, "loss_n": loop.loss_n,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "best": loop.best_state,
                "best_record": loop.result.best, "records": list(loop.result.records), "rng": rng_state(),
                "finished": finished, "ema": None if self.ema is None else {k: v.clone() for k, v in self.ema.items()}}

    def _checkpoint(self, loop: _Loop, finished: bool = False) -> None:
        """Pass the training state to ``on_checkpoint`` (rank 0) and restart the checkpoint clocks."""
        if self.on_checkpoint is not None and loop.place.is_main:
            self.on_checkpoint(self._state(loop, finished))
        loop.last_ckpt, loop.last_ckpt_step = time.monotonic(), loop.step

    def _end_training(self, loop: _Loop) -> None:
        """Training over: note the signal that stopped it, close the bar, save the state at once."""
        result, signals, fault = loop.result, loop.signals, loop.fault
        if signals.stop is not None:
            result.interrupted, result.stopped_by = True, signals.stop
        loop.bar.close()
        result.steps = loop.step
        if loop.consistent:
            self._checkpoint(loop)  # at once: a kill during the final evaluation loses no training
        else:
            log.warning("interrupted inside step %d: the training state saved last is kept", loop.step + 1)
        if fault is not None and loop.done and fault[0] in (loop.step, None) and fault[1] == signal.SIGKILL:
            signals.inject(fault[1])  # the last step: killed once its state is saved, before the final evaluation

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _finish(self, loop: _Loop) -> TrainResult:
        """The final evaluation and training state, the best weights loaded, the result."""
        result = loop.result
        result.train_seconds = time.monotonic() - loop.start
        result.items = loop.items
        if loop.items:
            result.items_per_second = loop.items / max(time.monotonic() - loop.tick - loop.eval_seconds, 1e-9)
            result.peak_bytes = memory.peak_bytes(self._device())
        self._evaluate(loop)
        if not loop.place.is_main:
            raise distributed.WorkerFinished(f"rank {loop.place.rank}: training done at step {loop.step}")
        if loop.consistent:
            self._checkpoint(loop, finished=not result.interrupted)
        if loop.best_state is not None:
            self.model.load_state_dict(loop.best_state)
        return result
