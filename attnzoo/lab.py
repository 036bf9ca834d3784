"""The lab from Python: ``train()`` a task into a run directory, ``load()`` one back as a :class:`Run`.

    run = attnzoo.train("g2p", minutes=1)                 # any task of attnzoo.tasks.TASKS
    run.predict(["attention"])                            # the task's own verb (here: pronounce)
    run.attention("zoo")                                  # {"alignment": Map(weights, rows, columns, title)}
    run.evaluate("test"), run.metrics, run.config, run.report()
    run = attnzoo.load("runs/g2p-rnn-additive-...")       # a run directory written earlier, any task

``attnzoo train`` is this module with flags: :func:`plan` checks every choice
(task, model, attention, options, data) before anything is written,
:func:`execute` trains; the command line prints what they return. A progress
bar (``tqdm.auto``) shows in a notebook as in a terminal; ``progress=False``
hides it.

A run's files are read as ``attnzoo eval`` reads them
(``torch.load(weights_only=True)``, every check of
:func:`~attnzoo.training.checkpoint.load_run`), so a missing, foreign or
corrupted directory raises :class:`~attnzoo.training.checkpoint.RunDirError`
with a one-line reason.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .core import validate as V
from .tasks import TASKS, Map, Task
from .training import distributed
from .training.checkpoint import RunDirError, article, load_run, load_train_state
from .training.options import ADDED_OPTIONS, RESUME_MAY_CHANGE


@dataclass
class Run:
    """A trained run: ``model`` (eval mode), ``task`` (its name), ``config``, ``metrics`` and the task's predictor."""

    task: str
    predictor: Any  # the task's trained model with its vocabularies: G2PModel, Translator, LanguageModel, ...
    config: dict
    path: Path

    @property
    def spec(self) -> Task:
        """The task object (its methods: evaluate, attention, examples, ...)."""
        return TASKS[self.task]

    @property
    def model(self):
        return self.predictor.model

    @property
    def metrics(self) -> dict | None:
        """metrics.json (None if training was interrupted before writing it)."""
        p = self.path / "metrics.json"
        return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None

    def predict(self, inputs, **options):
        """The task's own verb: pronounce, translate, generate, classify, answer, caption, ..."""
        return getattr(self.predictor, self.spec.verb)(inputs, **options)

    def attention(self, item, **options) -> dict[str, Map]:
        """Named attention maps of one input (``Map(weights (R, C), rows, columns, title)``), main one first."""
        return self.spec.attention(self.predictor, item, **options)

    def evaluate(self, split: str | None = None, **options) -> dict:
        """The run scored again: both parts (``{"dev": ..., "test": ...}``), or one when ``split`` names it."""
        if split is not None:
            V.check_choice("split", split, ("dev", "test"))
        self.spec.check_eval_data(self.config)
        result = self.spec.evaluate(self.path, self.config, self.predictor, **options)
        return result if split is None else result[split]

    def report(self) -> Path:
        """The path of the run's report.html."""
        path = self.path / "report.html"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: the run was stopped before its report was written")
        return path

    def __getattr__(self, name: str):
        # pronounce / translate / generate / classify and the predictor's vocabularies
        if name.startswith("_") or name in ("predictor", "task"):
            raise AttributeError(name)
        try:
            return getattr(self.predictor, name)
        except AttributeError:
            raise AttributeError(f"{self.task} run has no {name!r}; it offers {self.spec.verb}() (and .model, "
                                 ".config, .metrics, .predict(), .attention(), .evaluate())") from None

    def __repr__(self) -> str:
        return (f"Run(task={self.task!r}, model={self.config.get('model')!r}, "
                f"attention={self.config.get('attention')!r}, path={str(self.path)!r})")


def task_of(config: dict, run_dir: str | os.PathLike) -> Task:
    """The task a run's config.json names, or a RunDirError for one this attnzoo does not know."""
    name = config.get("task")
    if name not in TASKS:
        raise RunDirError(f"{run_dir}/config.json names task {name!r}, which this attnzoo does not know "
                          f"(it knows {', '.join(TASKS)}); was it written by another program?")
    return TASKS[name]


def load(run_dir: str | os.PathLike, device: str = "cpu") -> Run:
    """The trained model of a run directory that ``attnzoo train`` wrote, ready to use (eval mode)."""
    loaded = load_run(run_dir)
    task = task_of(loaded[0], run_dir)
    config, predictor = task.load(run_dir, device, loaded)
    return Run(task.name, predictor, config, Path(run_dir))


# ----------------------------------------------------------------------------- training
@dataclass
class TrainPlan:
    """One run, every choice checked: what :func:`execute` trains and where."""

    task: Task
    config: Any  # the task's Config
    model: str
    attention: str
    overrides: dict  # the model's options (--set)
    out: Path
    resume: dict | None = None  # the training state of the run in ``out`` to continue

    @property
    def budget(self) -> str:
        c = self.config
        return f"{c.minutes:g} minutes" if c.minutes is not None else f"{c.epochs:g} epochs"


def plan(task: str, *, model: str | None = None, attention: str | None = None, options: dict | None = None,
         out: str | os.PathLike | None = None, resume: str | os.PathLike | None = None,
         spell: Callable[[str], str] | None = None, **config: Any) -> TrainPlan:
    """Every choice of a run checked before any data loads (see :func:`train` for the arguments).

    ``spell(field)`` names an option in messages (the command line passes its flags)."""
    spec = TASKS.get_task(task)
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise ValueError(f"{_spell(spell, 'out')} {str(out)!r} is an existing file; name a new or existing "
                         "directory")
    if resume is not None:
        return _resume_plan(spec, Path(resume), model, attention, options, out, spell, config)
    model, attention = spec.choose(model, attention)
    overrides = dict(options or {})
    spec.check_model(model, attention, overrides)
    V.check_option_types(f"{model} model option", overrides, spec.model_config(model))
    if "model" in spec.Config.__dataclass_fields__:
        config["model"] = model
    cfg = spec.config(**config)
    spec.check_inputs(cfg, overrides)
    out = Path(out or f"runs/{spec.name}-{model}-{attention}-{time.strftime('%Y%m%d-%H%M%S')}")
    return TrainPlan(spec, cfg, model, attention, overrides, out)


def _spell(spell: Callable[[str], str] | None, name: str) -> str:
    return spell(name) if spell else f"{name}="


def _resume_plan(spec: Task, run: Path, model, attention, options, out, spell, given: dict) -> TrainPlan:
    """--resume DIR: the saved run's model, attention, options and budget; given values that contradict them are
    refused (where it runs and how often it saves may change)."""
    saved_config, state = load_train_state(run)
    if saved_config.get("task") != spec.name:
        task = saved_config.get("task")
        raise RunDirError(f"{run} is {article(task)} {task} run but the command line names {spec.name}; resume it "
                          f"with `attnzoo train {task} --resume {run}`")
    if state["finished"] and (run / "metrics.json").is_file():
        raise RunDirError(f"{run} is a finished run (trained {state['step']} steps, metrics.json written): nothing "
                          f"to resume; `attnzoo eval {run}` re-scores it, `--out NEWDIR` trains a new one")
    saved = {**ADDED_OPTIONS, **saved_config.get("task_config", {})}
    was = {"model": saved_config.get("model"), "attention": saved_config.get("attention"),
           "options": saved_config.get("model_overrides", {}), "out": str(run)}
    same_out = out is None or Path(out).resolve() == run.resolve()
    asked = {"model": model, "attention": attention, "options": options, "out": None if same_out else str(out),
             **given}
    may_change = set(RESUME_MAY_CHANGE)
    for key, value in asked.items():
        if value is None or key in may_change:
            continue
        before = was[key] if key in was else saved.get(key)
        if value != before:
            raise ValueError(_contradiction(key, value, before, run, spell))
    changed = {k: v for k, v in given.items() if k in may_change and v is not None and v != "auto"}
    cfg = spec.Config.from_dict({**saved, **changed})
    return TrainPlan(spec, cfg, was["model"], was["attention"], dict(was["options"]), run, state)


def show_value(value: Any) -> str:
    """An option's value as its flag takes it: 0.001, 8, dim=16 layers=2 (a --set dict), (none)."""
    if isinstance(value, dict):
        return " ".join(f"{k}={json.dumps(x)}" for k, x in value.items()) or "(none)"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _contradiction(key: str, given, was, run: Path, spell) -> str:
    name = _spell(spell, key)
    why = ("its learning-rate schedule ends with its budget: start a new run with --out NEWDIR to train longer"
           if key in ("minutes", "epochs") else "drop the flag, or start a new run with --out NEWDIR")
    return (f"{name} {show_value(given)} contradicts the run being resumed ({run} has {name} "
            f"{show_value(was) if was is not None else '(not set)'}); a resumed run keeps its own; {why}")


def execute(p: TrainPlan, progress: bool | None = None) -> dict | None:
    """Train what ``p`` describes (under torchrun: this process's part); metrics.json's content, or None on
    a torchrun worker other than rank 0 (rank 0 tests and reports)."""
    distributed.setup(p.config.device)  # several processes under torchrun; else nothing to do
    try:
        return p.task.train(p.config, p.out, attention=p.attention, overrides=p.overrides, progress=progress,
                            resume=p.resume)
    except distributed.WorkerFinished:
        return None
    finally:
        distributed.teardown()


def train(task: str, *, model: str | None = None, attention: str | None = None, minutes: float | None = None,
          epochs: float | None = None, out: str | os.PathLike | None = None, seed: int = 0, device: str = "auto",
          options: dict | None = None, resume: str | os.PathLike | None = None, progress: bool | None = None,
          **config: Any) -> Run | None:
    """Train ``task`` (a name in :data:`attnzoo.tasks.TASKS`) and return the trained :class:`Run`.

    Args:
        model: the architecture (the task's default if None); ``attention`` the mechanism in its slot.
        minutes / epochs: the budget (one of them; None: the task's default minutes).
        out: the run directory (default ``runs/TASK-MODEL-ATTENTION-TIMESTAMP``).
        options: the model's options (what ``--set KEY=VALUE`` sets), e.g. ``{"hidden_dim": 256}``.
        resume: a stopped run's directory to continue (its own options; contradicting ones are refused).
        progress: the progress bar (None: when attached to a terminal or notebook).
        **config: any other field of the task's Config (``batch_size``, ``lr``, ``beam_size``, ``threads``, ...).
    """
    given = {k: v for k, v in dict(config, minutes=minutes, epochs=epochs).items() if v is not None}
    if device != "auto":
        given["device"] = device
    if seed != 0 or resume is None:  # a resumed run keeps its seed unless another is asked for (and refused)
        given["seed"] = seed
    p = plan(task, model=model, attention=attention, options=options, out=out, resume=resume, **given)
    metrics = execute(p, progress)
    return None if metrics is None else load(p.out)


__all__ = ["Run", "TrainPlan", "load", "plan", "execute", "train", "task_of", "show_value"]
