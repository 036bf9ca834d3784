"""The Task protocol: what a task of the lab is, and the one training skeleton every task runs through.

A task is one class in its own file under ``attnzoo/tasks/``, registered with
one line in :data:`attnzoo.tasks.TASKS`. It says, in small methods:

* its options: ``Config``, a dataclass subclassing
  :class:`~attnzoo.training.options.TrainOptions` (fields made with
  :func:`~attnzoo.training.options.option` become its command-line flags);
* which architectures it trains (``models``: name -> default attention) and how
  a ``--model``/``--attention``/``--set`` choice is checked before any data loads
  (:meth:`Task.check_model`), and the one-line install hint when its data is
  missing (:meth:`Task.check_data`);
* the parts of training: :meth:`Task.load_data`, :meth:`Task.build`,
  :meth:`Task.training` (batches, loss, the dev evaluation that picks the best
  weights), :meth:`Task.final` (the metrics.json figures) and :meth:`Task.report`;
* a trained run: :meth:`Task.restore` (the predictor a checkpoint makes,
  whose ``verb`` method predicts), :meth:`Task.evaluate`, :meth:`Task.attention`
  (named maps for an input, ready for plotting) and :meth:`Task.examples` (what
  ``compare`` shows side by side).

:meth:`Task.train` is the skeleton: seed, data, model, run directory, the
:class:`~attnzoo.training.trainer.Trainer`, the best weights, the final
evaluation, ``metrics.json`` and the report, the same for every task.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..core import validate as V
from ..data import MissingDataError
from ..training.checkpoint import RunDirError, load_run
from ..training.options import ADDED_OPTIONS, Flag, TrainOptions
from ..training.run import RunDirectory, resolve_device, run_metrics, trainer_options
from ..training.trainer import Budget, Trainer, resolve_precision

log = logging.getLogger(__name__)


@dataclass
class Map:
    """One attention map ready for plotting: ``weights`` (R, C) with the labels of its rows and columns."""

    weights: Tensor  # (R, C): row r's weights over the C columns
    rows: list[str]  # what attends (output tokens, queries)
    columns: list[str]  # what is attended to (input tokens, keys, image cells)
    title: str = ""


@dataclass
class Training:
    """What the shared training loop needs from a task: its batches, its loss and its dev evaluation."""

    batches: Callable[[int], Iterable]  # epoch -> its batches (the same for the same epoch, so runs resume)
    steps_per_epoch: int
    loss: Callable[[nn.Module, Any], tuple[Tensor, int]]  # (model, batch) -> (mean loss, items in the batch)
    evaluate: Callable[[nn.Module], dict]  # periodic dev metrics, keys "dev_<metric>"
    primary: str  # the key of evaluate()'s dict that picks the best weights
    higher_is_better: bool = False
    grad_clip: float = 1.0
    weight_decay: float = 0.0


#: the beam of a command that decodes: at least 1
BEAM = Flag("beam size (1 = greedy)", low=1, example="5")


@dataclass(frozen=True)
class Command:
    """A command of a task's own (``attnzoo pronounce DIR WORD...``): its arguments and what it prints.

    ``arguments(parser)`` adds its arguments after ``run_dir``; ``run(run, args)`` returns the lines to print;
    ``bounds`` gives the numeric arguments' ranges ({dest: Flag}), checked before the run is opened."""

    name: str
    help: str
    arguments: Callable[[Any], None]
    run: Callable[[Any, Any], list[str]]
    bounds: dict[str, Flag] = field(default_factory=dict)


class Task(ABC):
    """One task of the lab (see the module docstring); subclasses set the class attributes and the parts."""

    name: ClassVar[str]  # "g2p": the word in `attnzoo train NAME` and in config.json
    description: ClassVar[str]  # one line: the data and the metric (`attnzoo list --kind tasks`)
    Config: ClassVar[type[TrainOptions]]  # its options; fields made with option() are its flags
    models: ClassVar[dict[str, str]]  # architecture -> its default attention; the first is the default model
    unit: ClassVar[str] = "items"  # what one training item is: words, images, ... (progress bar, throughput)
    verb: ClassVar[str] = "predict"  # the predictor's method that Run.predict calls
    commands: ClassVar[tuple[Command, ...]] = ()  # commands of its own (`attnzoo pronounce`), beside eval
    shows: ClassVar[bool] = False  # whether `attnzoo show DIR TEXT` draws the attention of a text input

    # ------------------------------------------------------------------ choosing, before any data loads
    def choose(self, model: str | None, attention: str | None) -> tuple[str, str]:
        """The architecture and mechanism a run uses: the given ones, else the defaults."""
        model = model or next(iter(self.models))
        V.check_choice(f"model ({self.name}: {' | '.join(self.models)})" if len(self.models) > 1 else "model",
                       model, self.models)
        return model, attention or self.models[model]

    @abstractmethod
    def check_model(self, model: str, attention: str, overrides: dict | None) -> None:
        """ValueError (naming the fix) for an attention that does not fit the model's slot or an unknown --set key."""

    @abstractmethod
    def model_config(self, model: str) -> type:
        """The config dataclass of an architecture: the types --set values must have."""

    def check_data(self, cfg: TrainOptions) -> None:
        """MissingDataError with the one-line install command when the task's data is not installed."""

    def check_inputs(self, cfg: TrainOptions, overrides: dict | None) -> None:
        """Everything a run needs checked before anything is written (by default its data: check_data)."""
        self.check_data(cfg)

    def check_eval_data(self, config: dict) -> None:
        """Before a run is scored again (config.json given): its data is installed, or MissingDataError."""
        self.check_data(self.saved_config(config))

    def config(self, **options: Any) -> TrainOptions:
        """The task's options (every field checked), from keywords; unknown keys name the closest field."""
        known = {f for f in self.Config.__dataclass_fields__}
        for key in options:
            V.check_choice(f"{self.name} option", key, sorted(known))
        return self.Config(**options)

    # ------------------------------------------------------------------ the parts of training
    @abstractmethod
    def load_data(self, cfg: TrainOptions) -> Any:
        """The task's data: splits, vocabularies, whatever its other parts need."""

    @abstractmethod
    def describe(self, data: Any) -> dict:
        """config.json's "data": sizes and sources, in a few numbers."""

    @abstractmethod
    def build(self, cfg: TrainOptions, data: Any, attention: str, overrides: dict | None) -> nn.Module:
        """A fresh model of ``cfg.model`` with ``attention`` in its slot and ``overrides`` (--set) applied."""

    @abstractmethod
    def predictor(self, model: nn.Module, data: Any, device: torch.device) -> Any:
        """The model with what it needs to predict (vocabularies, device): the object a trained run offers."""

    def prepare(self, cfg: TrainOptions, given: Any) -> Any:
        """The task's data from what a caller handed to :meth:`train` (tests pass small corpora): by default
        that is the task's data already."""
        return given

    def saved(self, data: Any) -> dict:
        """What a checkpoint holds besides the weights (vocabularies), as tensors, numbers, strings and lists."""
        return {}

    def run_config(self, data: Any) -> dict:
        """Keys config.json adds for this task (beside task, model, attention, options, data and params)."""
        return {}

    def write_files(self, path: Path, data: Any) -> None:
        """Files a run keeps beside its checkpoint (a --data run's held-out parts)."""

    @abstractmethod
    def training(self, cfg: TrainOptions, data: Any, predictor: Any) -> Training:
        """Batches, loss and dev evaluation of a run."""

    @abstractmethod
    def final(self, cfg: TrainOptions, data: Any, predictor: Any) -> dict:
        """metrics.json's figures once trained: ``primary`` {name, value, higher_is_better}, ``dev``, ``test``,
        and the task's own keys (beam, decoding speed, ...)."""

    def report(self, path: Path, cfg: TrainOptions, data: Any, predictor: Any, metrics: dict, config: dict,
               records: list[dict]) -> None:
        """Write ``path / "report.html"``."""

    def epochs(self, cfg: TrainOptions, steps: int, steps_per_epoch: int) -> dict:
        """What metrics.json says of the amount of training."""
        return {"steps": steps, "epochs": round(steps / steps_per_epoch, 2)}

    # ------------------------------------------------------------------ a trained run
    @abstractmethod
    def restore(self, config: dict, checkpoint: dict, device: torch.device) -> Any:
        """The predictor of a trained run from its config.json and checkpoint.pt (KeyError etc. if foreign)."""

    @abstractmethod
    def evaluate(self, run_dir: Path, config: dict, predictor: Any, **options: Any) -> dict:
        """The run scored again on its dev and test data: ``{"dev": {...}, "test": {...}, ...}``."""

    def attention(self, predictor: Any, item: Any, **options: Any) -> dict[str, Map]:
        """Named attention maps of one input, the main one first (ValueError if the task draws none)."""
        raise ValueError(f"the {self.name} task draws no attention for a single input")

    def show_name(self, item: Any) -> str:
        """The file `attnzoo show` writes by default."""
        return "alignment.png"

    def examples(self, runs: dict[str, Any], config: dict, count: int, beam: int) -> tuple[list[dict], str]:
        """The same test examples through each run (``{name: Run}``), for compare.html: ``[{"legend", "cells":
        {name: {"png", "legend"}}}]`` and a line saying what the maps show; none by default."""
        return [], ""

    def title(self, m: dict) -> str:
        """The first line `attnzoo train` prints once a run ends: what was trained, how big, for how long."""
        return (f"{self.name} {m['model']} {m['attention']}: {m['params']:,} parameters, "
                f"{m['train_seconds']:.0f} s training ({m['epochs']} epochs)")

    def summary(self, metrics: dict) -> list[str]:
        """What `attnzoo train` prints once a run ends: the title line, then dev and test."""
        return [self.title(metrics), *(f"  {part:<5} {self.score_line(metrics[part])}" for part in ("dev", "test"))]

    def eval_lines(self, result: dict) -> list[str]:
        """What `attnzoo eval` prints."""
        return [f"{part:<5} {self.score_line(result[part])}" for part in ("dev", "test")]

    def score_line(self, scores: dict) -> str:
        """One split's figures on one line."""
        return "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in scores.items())

    # ------------------------------------------------------------------ the skeleton
    def train(self, cfg: TrainOptions, out: str | Path, *, attention: str | None = None,
              overrides: dict | None = None, progress: bool | None = None, resume: dict | None = None,
              data: Any = None) -> dict:
        """Train, evaluate on dev and test, write the run directory; returns metrics.json's content.

        ``resume``: the training state of the run in ``out`` to continue
        (:func:`~attnzoo.training.checkpoint.load_train_state`; ``cfg`` and the model must be the run's);
        ``data``: the task's data, or what :meth:`prepare` makes it from (tests pass small corpora)."""
        model_name, attention = self.choose(getattr(cfg, "model", None), attention)
        self.check_model(model_name, attention, overrides)  # fail before loading data
        device = resolve_device(cfg.device)
        with threads(cfg.threads):
            random.seed(cfg.seed)
            torch.manual_seed(cfg.seed)
            t0 = time.monotonic()
            data = self.load_data(cfg) if data is None else self.prepare(cfg, data)
            log.info("data: %s (%.1fs)", self.describe(data), time.monotonic() - t0)
            model = self.build(cfg, data, attention, overrides).to(device)
            predictor = self.predictor(model, data, device)
            run = self._run_directory(out, cfg, data, model, model_name, attention, overrides, resume)
            plan = self.training(cfg, data, predictor)
            result = self._fit(cfg, model, plan, run, device, progress, resume)
            run.save(result.best)  # the best weights (already loaded back into the model)
            final = self.final(cfg, data, predictor)
            metrics = {"task": self.name, "model": model_name, "attention": attention,
                       "params": model.num_parameters(), "train_seconds": round(result.train_seconds, 1), **final,
                       **self.epochs(cfg, result.steps, plan.steps_per_epoch), **run_metrics(result)}
            run.write_metrics(metrics)
            if run.writes:
                self.report(run.path, cfg, data, predictor, metrics, run.config, result.records)
        return metrics

    def _run_directory(self, out, cfg, data, model, model_name, attention, overrides, resume) -> RunDirectory:
        """config.json written (or a resumed run's checked), the checkpoint's contents named."""
        run = RunDirectory(out, {
            "task": self.name, "model": model_name, "attention": attention, "model_overrides": overrides or {},
            "task_config": asdict(cfg), "model_config": model.config.to_dict(), **self.run_config(data),
            "data": self.describe(data), "params": model.num_parameters(),
        }, state=lambda: {"model": model.state_dict(), **self.saved(data)}, resume=resume)
        if run.writes:  # (rank 0 under torchrun)
            self.write_files(run.path, data)
        return run

    def _fit(self, cfg, model, plan: Training, run: RunDirectory, device, progress, resume):
        trainer = Trainer(model, lr=cfg.lr, budget=Budget(cfg.minutes, cfg.epochs), evaluate=plan.evaluate,
                          primary=plan.primary, higher_is_better=plan.higher_is_better,
                          eval_every_minutes=cfg.eval_every_minutes, grad_clip=plan.grad_clip,
                          weight_decay=plan.weight_decay, on_record=run.on_record, progress=progress, unit=self.unit,
                          autocast_dtype=resolve_precision(cfg.precision, device), **trainer_options(cfg, run))
        return trainer.fit(plan.batches, plan.steps_per_epoch, plan.loss, resume=resume)

    # ------------------------------------------------------------------ reading a run back
    def load(self, run_dir: str | Path, device: str = "cpu",
             loaded: tuple[dict, dict] | None = None) -> tuple[dict, Any]:
        """(config.json, predictor in eval mode) of a run of this task; RunDirError if it is not one.
        ``loaded``: (config, checkpoint) already read by :func:`~attnzoo.training.checkpoint.load_run`."""
        config, checkpoint = loaded or load_run(run_dir)
        if config.get("task") != self.name:
            raise RunDirError(f"{run_dir} is a {config.get('task')!r} run, not a {self.name} run")
        try:
            predictor = self.restore(config, checkpoint, resolve_device(device))
        except (KeyError, TypeError, RuntimeError, ValueError) as e:
            raise RunDirError(f"{run_dir}/checkpoint.pt does not hold a {self.name} model "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
        predictor.model.eval()
        return config, predictor

    def saved_config(self, config: dict) -> TrainOptions:
        """The options a run was trained with (options added since take their old behaviour's value)."""
        return self.Config.from_dict({**ADDED_OPTIONS, **config.get("task_config", {})})

    def __repr__(self) -> str:
        return f"<task {self.name}: {self.description}>"


@contextlib.contextmanager
def threads(count: int | None) -> Iterator[None]:
    """torch's CPU threads set to ``count`` inside the block (None: unchanged), restored after it."""
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def require_module(module: str, hint: str) -> None:
    """MissingDataError(hint) unless ``module`` can be imported (a data package)."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingDataError(hint)
