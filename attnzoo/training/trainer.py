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
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import distributed

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


#: the training state's own version (inside the file's format_version): bumped when its keys change meaning
STATE_VERSION = 1
#: test-only fault injection: "STEP:SIGNAL" makes the process send itself SIGNAL (KILL, TERM, INT) once
#: step STEP is done, at a step boundary (after a checkpoint due there), so a test can kill a run at a known
#: point; "last:KILL" strikes once the last step's training state is saved, before the final evaluation
FAULT_ENV = "ATTNZOO_TEST_SIGNAL_AT_STEP"


def check_ema_decay(decay: float) -> None:
    """The averaging decay in [0, 1), or a ValueError naming it (one check for the options and the Trainer)."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1) (0 turns weight averaging off; 0.999 averages over about "
                         f"the last 1,000 steps), got {decay}")


def rng_state() -> dict:
    """Every random generator training draws from, as tensors and lists (weights_only=True loads them)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {"torch": torch.get_rng_state(),
            "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() and torch.cuda.is_initialized()
            else [],
            "python": [version, list(internal), gauss],
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


def _fault_injection() -> tuple[int | None, int] | None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return None
    step, name = spec.split(":")
    return None if step == "last" else int(step), getattr(signal, "SIG" + name.upper().removeprefix("SIG"))


class _StopSignals:
    """While training: the first SIGINT or a SIGTERM asks the loop to stop at the next step boundary."""

    def __init__(self):
        self.stop: str | None = None
        self.previous: dict = {}

    def _handle(self, signum, frame):
        if signum == signal.SIGINT and self.stop is not None:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.stop = signal.Signals(signum).name
        log.warning("%s: stopping at the end of this step, then saving and evaluating%s", self.stop,
                    " (Ctrl-C again to stop at once)" if signum == signal.SIGINT else "")

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


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
        result = TrainResult(unit=self.unit)
        best_state = None
        step, epoch, epoch_step = 0, 0, 0  # epoch_step: batches of `epoch` already trained
        elapsed0 = since_eval = 0.0
        loss_sum, loss_n, items = 0.0, 0, 0
        if resume is not None:
            if resume.get("state_version") != STATE_VERSION:
                raise ValueError(f"resume: a training state of version {resume.get('state_version')!r}, this "
                                 f"attnzoo continues version {STATE_VERSION}; start the run again")
            if resume["steps_per_epoch"] != steps_per_epoch:
                raise ValueError(f"resume: the run had {resume['steps_per_epoch']} steps per epoch, now "
                                 f"{steps_per_epoch}: its data or batch size changed, so its data order cannot "
                                 "be followed; start the run again")
            self.model.load_state_dict(resume["model"])
            if self.ema is not None:  # a state saved without averaging starts the average from its weights
                for k, v in (resume.get("ema") or self._live).items():
                    self.ema[k].copy_(v)
            # a copy: the optimizer would otherwise update the caller's tensors in place
            self.optimizer.load_state_dict(copy.deepcopy(resume["optimizer"]))
            step, epoch, epoch_step = resume["step"], resume["epoch"], resume["epoch_step"]
            elapsed0, since_eval = resume["elapsed"], resume["since_eval"]
            loss_sum, loss_n = resume["loss_sum"], resume["loss_n"]
            result.records = list(resume["records"])
            result.best = resume["best_record"]
            best_state = resume["best"]
            result.resumed_from = step
            set_rng_state(resume["rng"])
            if resume["finished"]:  # training had ended (killed while testing or reporting): nothing to train
                result.steps, result.train_seconds = step, elapsed0
                self.model.load_state_dict(best_state if best_state is not None else resume["model"])
                return result
            log.info("resuming at step %d (epoch %d, batch %d of it, %.0f s of the budget used)", step, epoch,
                     epoch_step, elapsed0)
        start = time.monotonic() - elapsed0
        last_eval, last_ckpt = time.monotonic() - since_eval, time.monotonic()
        last_ckpt_step = step
        eval_seconds = 0.0
        fault = _fault_injection()
        place = distributed.current()
        step_loss = distributed.wrap(self.model, loss_fn)  # loss_fn itself on one process
        bar = tqdm(total=total_steps or int(budget_s), initial=step if total_steps else int(elapsed0),
                   unit="step" if total_steps else "s", disable=True if not place.is_main else
                   self.progress is False if self.progress is not None else None, dynamic_ncols=True, leave=True)
        done = False
        consistent = True  # False inside a step: its update may be half applied

        def fraction() -> float:
            if total_steps is not None:
                return step / total_steps
            return (time.monotonic() - start) / budget_s

        def budget_spent() -> bool:
            return (total_steps is not None and step >= total_steps) or \
                (budget_s is not None and time.monotonic() - start >= budget_s)

        def state(finished: bool) -> dict:
            now = time.monotonic()
            return {"state_version": STATE_VERSION, "step": step, "epoch": epoch, "epoch_step": epoch_step,
                    "steps_per_epoch": steps_per_epoch, "elapsed": now - start, "since_eval": now - last_eval,
                    "loss_sum": loss_sum, "loss_n": loss_n, "model": self.model.state_dict(),
                    "optimizer": self.optimizer.state_dict(), "best": best_state, "best_record": result.best,
                    "records": list(result.records), "rng": rng_state(), "finished": finished,
                    "ema": None if self.ema is None else {k: v.clone() for k, v in self.ema.items()}}

        def checkpoint(finished: bool = False) -> None:
            nonlocal last_ckpt, last_ckpt_step
            if self.on_checkpoint is not None and place.is_main:
                self.on_checkpoint(state(finished))
            last_ckpt, last_ckpt_step = time.monotonic(), step

        def inject(signals) -> None:  # test-only (FAULT_ENV)
            os.kill(os.getpid(), fault[1])
            for _ in range(1000):  # let the handler run (the signal may wake another thread first)
                if signals.stop is not None:
                    break
                time.sleep(0.001)

        def run_eval(final: bool) -> None:
            nonlocal best_state, last_eval, loss_sum, loss_n, eval_seconds
            train_loss = loss_sum / max(loss_n, 1)
            if place.enabled:  # every process takes part: the loss of the whole batches
                mean_sum, mean_n = distributed.mean_over_processes(loss_sum, loss_n)
                train_loss = mean_sum / max(mean_n, 1)
                if not place.is_main:
                    loss_sum, loss_n, last_eval = 0.0, 0, time.monotonic()
                    return
            t0 = time.monotonic()
            self.model.eval()
            metrics = self.evaluate(self.model)
            # with averaging: the raw weights' score above, then the average's, which is kept and checkpointed
            with self._averaged():
                if self.ema is not None:
                    metrics = {**self.evaluate(self.model), f"raw_{self.primary}": metrics[self.primary]}
                self.model.train()
                eval_seconds += time.monotonic() - t0
                record = {"step": step, "epoch": round(step / steps_per_epoch, 3),
                          "seconds": round(time.monotonic() - start, 1),
                          "train_loss": round(train_loss, 4),
                          "lr": self.optimizer.param_groups[0]["lr"], **metrics}
                loss_sum, loss_n = 0.0, 0
                value = metrics[self.primary]
                is_best = result.best is None or (value > result.best[self.primary] if self.higher_is_better
                                                  else value < result.best[self.primary])
                if is_best:
                    result.best = record
                    best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                result.records.append(record)
                bar.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in record.items()))
                if self.on_record is not None:
                    self.on_record(record, is_best)
            last_eval = time.monotonic()

        self.model.train()
        tick = time.monotonic()
        with _StopSignals() as signals:
            try:
                done = budget_spent()  # a run resumed after its last step but before its final evaluation
                while not done:
                    # the same batches as an uninterrupted run: those of this epoch already trained are skipped
                    for batch in itertools.islice(batches(epoch), epoch_step, None):
                        if place.enabled:
                            if distributed.batch_size(batch) < place.world_size:
                                epoch_step += 1  # too small to give every process a part (all skip it)
                                continue
                            batch = distributed.shard(batch, place)  # this process's part
                        consistent = False
                        for g in self.optimizer.param_groups:
                            g["lr"] = self.lr_at(fraction())
                        with autocast(self.model, self.autocast_dtype):
                            loss, n_items = step_loss(self.model, batch)
                        if not torch.isfinite(loss):
                            raise FloatingPointError(f"training loss became {loss.item()} at step {step}; "
                                                     "lower --lr or check the data")
                        self.optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                        if self.grad_clip:
                            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
                        self.optimizer.step()
                        step += 1
                        if self.ema is not None:
                            self._ema_update(step)
                        epoch_step += 1
                        loss_sum += loss.item()
                        loss_n += 1
                        items += n_items * place.world_size
                        consistent = True
                        now = time.monotonic()
                        elapsed = now - start
                        if total_steps is not None:
                            bar.update(1)
                        elif int(elapsed) > bar.n:  # the bar counts budget seconds
                            bar.update(int(elapsed) - bar.n)
                        if step % 10 == 0:
                            rate = items / max(now - tick - 0.0, 1e-9)
                            bar.set_postfix(loss=f"{loss_sum / max(loss_n, 1):.3f}",
                                            rate=f"{rate:.0f} {self.unit}/s",
                                            epoch=f"{step / steps_per_epoch:.2f}", refresh=False)
                        spent, stopping = budget_spent(), signals.stop is not None
                        eval_due = now - last_eval >= self.eval_every or bool(
                            self.eval_every_steps and step % self.eval_every_steps == 0)
                        ckpt_due = bool(self.checkpoint_every_steps and step - last_ckpt_step >=
                                        self.checkpoint_every_steps) or now - last_ckpt >= self.checkpoint_every
                        if place.enabled:  # the clocks and signals of all processes: all act at the same step
                            spent, stopping, eval_due, ckpt_due = distributed.agree(spent, stopping, eval_due,
                                                                                    ckpt_due)
                            if stopping and signals.stop is None:
                                signals.stop = "SIGTERM"  # another process was stopped
                        if spent:
                            done = True
                            break
                        if stopping:
                            break
                        if eval_due:
                            run_eval(final=False)
                        if ckpt_due:
                            checkpoint()
                        if fault is not None and step == fault[0]:
                            inject(signals)
                        if signals.stop is not None and not place.enabled:  # (several: at the next step)
                            break
                    else:  # the epoch is over
                        epoch, epoch_step = epoch + 1, 0
                        continue
                    break  # stopped by a signal, or the budget is spent
            except KeyboardInterrupt:
                signals.stop = "SIGINT"
                log.warning("interrupted at step %d: evaluating and saving what was trained so far", step)
            if signals.stop is not None:
                result.interrupted, result.stopped_by = True, signals.stop
            bar.close()
            result.steps = step
            if consistent:
                checkpoint()  # at once: a kill during the final evaluation loses no training
            else:
                log.warning("interrupted inside step %d: the training state saved last is kept", step + 1)
            if fault is not None and done and fault[0] in (step, None) and fault[1] == signal.SIGKILL:
                inject(signals)  # the last step: killed once its state is saved, before the final evaluation
        # from here on Ctrl-C and SIGTERM act as usual: the state above is safe, a resumed run starts here
        result.train_seconds = time.monotonic() - start
        result.items = items
        if items:
            result.items_per_second = items / max(time.monotonic() - tick - eval_seconds, 1e-9)
        run_eval(final=True)
        if not place.is_main:
            raise distributed.WorkerFinished(f"rank {place.rank}: training done at step {step}")
        if consistent:
            checkpoint(finished=not result.interrupted)
        if best_state is not None:
            self.model.load_state_dict(best_state)
        return result
