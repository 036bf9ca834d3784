"""``attnzoo compare``: attention mechanisms side by side on one task, under one budget.

    attnzoo compare g2p --attention additive,dot,location_aware --minutes 2 --seeds 2
    board = attnzoo.compare("g2p", ["additive", "dot"], minutes=2, seeds=2)    # the same from Python
    board.rows, board.to_json(), board.to_html()

Each mechanism is trained with each seed (``seed``, ``seed`` + 1, ...:
``seeds`` of them) exactly as ``attnzoo train TASK --attention NAME --seed S``
trains it (:func:`attnzoo.lab.plan` and :func:`attnzoo.lab.execute`, in this
process, with the same budget, data and options) into its own run directory
``OUT/NAME-seedS/``, one run after another. Then:

* the leaderboard, best first (by the task's primary test metric, in its
  direction): rank, mechanism, that metric as mean ± sample standard deviation
  over the seeds, parameters, training throughput (items per second of training
  steps, evaluations excluded) and decoding speed (test items decoded per
  second, beam search included; for the tasks that decode), both the fastest
  seed's;
* ``OUT/compare.json`` holds the rows (every seed's value, mean, std, min, max);
* ``OUT/compare.html``, self-contained like a run's report, shows the table,
  the learning curves of every run on one plot (train loss and the dev metric
  against minutes; also saved as ``OUT/curves.png``) and the attention maps of
  the same test examples through each mechanism's trained model (its first
  seed, drawn by the task's ``examples``), one column per mechanism.

Calling it again continues an interrupted compare: a run whose
``metrics.json`` exists is skipped (the log says so), one stopped midway
(Ctrl-C, SIGTERM, ``kill -9``) resumes from its training state as ``attnzoo
train --resume`` would. A finished run trained with other options than asked
is refused, never mixed into the table.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import lab
from .core import validate as V
from .tasks import TASKS, Task
from .training.checkpoint import TRAIN_STATE, write_json
from .training.options import ADDED_OPTIONS, RESUME_MAY_CHANGE

log = logging.getLogger(__name__)

#: exit status of a compare stopped by a signal (128 + the signal's number), as a shell reports it
STOPPED = {"SIGINT": 128 + 2, "SIGTERM": 128 + 15}


class Stopped(Exception):
    """A signal stopped a run of the compare (its state is saved; calling compare again continues)."""

    def __init__(self, signal: str, where: Path):
        super().__init__(f"compare stopped by {signal} during {where}; rerun the same command to continue "
                         "(finished runs are skipped, this one resumes)")
        self.signal, self.where = signal, where

    @property
    def status(self) -> int:
        return STOPPED.get(self.signal, STOPPED["SIGINT"])


@dataclass
class ComparePlan:
    """What one compare trains, and where."""

    task: str
    mechanisms: list[str]  # the attention names, in the order given
    seeds: list[int]  # seed, seed + 1, ... (seeds of them): every mechanism sees the same data and seeds
    out: Path  # the compare directory: a run directory per mechanism and seed, then compare.{json,html}
    examples: int = 4  # test examples whose attention maps compare.html shows, one row each

    def run_dir(self, attention: str, seed: int) -> Path:
        return self.out / f"{attention}-seed{seed}"


@dataclass
class Row:
    """One mechanism's line of the leaderboard: its runs' test metric over the seeds, size and speeds."""

    attention: str
    primary: str  # the task's primary metric, on the test set
    higher_is_better: bool
    values: list[float]  # one per seed, in seed order
    params: int
    train_items_per_second: float | None  # the fastest seed's: other load only slows a run (None: not recorded)
    train_unit: str | None
    decode_items_per_second: float | None  # test items decoded per second, the fastest seed's; None: no decoding
    decode_unit: str | None
    runs: list[str]  # run directories, relative to the compare directory
    rank: int = 0  # 1 = best; equal means share a rank
    train_peak_mib: float | None = None  # the largest peak memory of its seeds while training (None: not recorded)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        """Sample standard deviation over the seeds (0 for one seed)."""
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "mean": self.mean, "std": self.std, "min": min(self.values),
                "max": max(self.values)}


@dataclass
class Comparison:
    """A finished compare: its rows best first, its title and where its pages are."""

    plan: ComparePlan
    rows: list[Row]
    title: str

    def to_json(self) -> dict:
        """compare.json's content."""
        return json.loads((self.plan.out / "compare.json").read_text(encoding="utf-8"))

    def to_html(self) -> str:
        """compare.html's content (self-contained)."""
        return (self.plan.out / "compare.html").read_text(encoding="utf-8")

    def table(self) -> str:
        """The leaderboard as aligned text, under its title."""
        return self.title + "\n" + format_board(self.rows)


# ----------------------------------------------------------------------------- the comparison
def compare(task: str, attention: str | list[str], *, seeds: int = 1, seed: int = 0,
            out: str | Path | None = None, examples: int = 4, model: str | None = None,
            options: dict | None = None, progress: bool | None = None, beam: int | None = None,
            spell: Callable[[str], str] | None = None, **config: Any) -> Comparison:
    """Train every mechanism in ``attention`` (a list, or "a,b,c") with each seed under one budget, then rank
    them and write compare.json, compare.html and curves.png into ``out``.

    ``model``, ``options`` (the model's, what --set sets) and ``**config`` (the task's options: ``minutes``,
    ``epochs``, ``batch_size``, ...) are every run's; ``spell(field)`` names an option in messages."""
    spec = TASKS.get_task(task)
    mechanisms = parse_mechanisms(attention) if isinstance(attention, str) else list(attention)
    V.check_positive("seeds", seeds)
    base = dict(config, seed=seed)
    for name in mechanisms:  # every mechanism checked before the first run trains
        lab.plan(task, model=model, attention=name, options=options, out=None, spell=spell, **base)
    tag = f"-{model}" if model else ""
    out = Path(out or f"runs/compare-{task}{tag}-{'-'.join(mechanisms)}")  # a rerun finds it again
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is an existing file; name a new or existing directory")
    plan = ComparePlan(task, mechanisms, list(range(seed, seed + seeds)), out, examples)
    todo = [(a, s) for a in plan.mechanisms for s in plan.seeds]
    log.info("%d mechanisms x %d seeds = %d runs of %s, one after another, in %s", len(plan.mechanisms),
             len(plan.seeds), len(todo), plan.task, plan.out)
    for i, (name, s) in enumerate(todo, 1):
        _train_one(spec, plan, name, s, f"{i} of {len(todo)}", model, options, progress, spell,
                   {**config, "seed": s})
    rows = leaderboard(collect(plan))
    first = _read_json(plan.run_dir(plan.mechanisms[0], plan.seeds[0]) / "config.json")
    title = board_title(plan, rows, first)
    write_pages(plan, rows, first, title, beam=beam, device=config.get("device", "auto"))
    return Comparison(plan, rows, title)


def _train_one(spec: Task, plan: ComparePlan, attention: str, seed: int, which: str, model, options, progress,
               spell, config: dict) -> None:
    """Train (or resume, or skip) one run; Stopped when a signal stopped it (the compare stops too)."""
    run_dir = plan.run_dir(attention, seed)
    metrics = _read_metrics(run_dir)
    if metrics is not None and not metrics.get("interrupted"):
        check_same_run(spec, run_dir, attention, model, options, config, spell)
        log.info("skipping run %s, %s seed %d: already trained (%s exists)", which, attention, seed,
                 run_dir / "metrics.json")
        return
    resume = (run_dir / TRAIN_STATE).is_file()
    log.info("run %s: %s seed %d -> %s%s", which, attention, seed, run_dir,
             " (resuming from its training state)" if resume else "")
    if resume:
        given = {k: v for k, v in config.items() if v is not None}
        p = lab.plan(spec.name, model=model, attention=attention, options=options, resume=run_dir, spell=spell,
                     **given)
    else:
        p = lab.plan(spec.name, model=model, attention=attention, options=options, out=run_dir, spell=spell,
                     **config)
    lab.execute(p, progress)
    metrics = _read_metrics(run_dir)
    if metrics is None or metrics.get("interrupted"):
        raise Stopped((metrics or {}).get("stopped_by", "SIGINT"), run_dir)


def parse_mechanisms(text: str | None) -> list[str]:
    """--attention a,b,c -> ["a", "b", "c"]; ValueError for an empty list or a name given twice."""
    names = [n.strip() for n in (text or "").split(",")]
    if not any(names):
        raise ValueError(f"--attention needs a comma-separated list of mechanisms, e.g. --attention additive,dot; "
                         f"got {text!r}")
    if not all(names):
        raise ValueError(f"--attention {text!r} has an empty name between commas; e.g. --attention additive,dot")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"--attention names {', '.join(map(repr, twice))} more than once; list each mechanism "
                         f"once (--seeds N repeats runs), e.g. --attention {','.join(dict.fromkeys(names))}")
    return names


def check_same_run(spec: Task, run_dir: Path, attention: str, model: str | None, options: dict | None,
                   config: dict, spell: Callable[[str], str] | None) -> None:
    """A finished run counts only if the compare would train it again as it is: same task, model, budget, ..."""
    saved_config = _read_json(run_dir / "config.json")
    saved = {**ADDED_OPTIONS, **saved_config.get("task_config", {})}
    name = spell or (lambda field: f"{field}=")
    asked = ("epochs", config["epochs"]) if config.get("epochs") is not None else ("minutes", config.get("minutes"))
    if asked[1] is None:  # no budget given: the task's default minutes
        asked = ("minutes", spec.Config.default_minutes)
    trained = ("epochs", saved.get("epochs")) if saved.get("epochs") is not None else ("minutes", saved.get("minutes"))
    checks = [("budget", asked, trained), ("task", spec.name, saved_config.get("task")),
              ("attention", attention, saved_config.get("attention")), ("model", model, saved_config.get("model")),
              ("options", options or {}, saved_config.get("model_overrides", {}))]
    skip = set(RESUME_MAY_CHANGE) | {"minutes", "epochs"}
    checks += [(k, v, saved.get(k)) for k, v in config.items() if k not in skip and v is not None and k in saved]
    for key, given, was in checks:
        if given is None or given == was:
            continue
        if key == "budget":
            said = (f"{name(was[0])} {lab.show_value(was[1])}", f"{name(given[0])} {lab.show_value(given[1])}")
        else:
            said = (f"{name(key)} {lab.show_value(was)}", f"{name(key)} {lab.show_value(given)}")
        raise ValueError(f"{run_dir} was trained with {said[0]} but this compare asks for {said[1]}; rerun it "
                         "with the flags it started with, or pass --out NEWDIR for a new comparison")


# ----------------------------------------------------------------------------- the leaderboard
def collect(plan: ComparePlan) -> list[Row]:
    """One row per mechanism from its runs' metrics.json, in the order given."""
    rows = []
    for attention in plan.mechanisms:
        dirs = [plan.run_dir(attention, s) for s in plan.seeds]
        ms = [_read_metrics(d) for d in dirs]
        first = ms[0]
        rows.append(Row(attention=attention, primary=first["primary"]["name"],
                        higher_is_better=bool(first["primary"]["higher_is_better"]),
                        values=[float(m["primary"]["value"]) for m in ms], params=int(first["params"]),
                        train_items_per_second=_fastest([m.get("train_items_per_second") for m in ms]),
                        train_peak_mib=_largest([m.get("train_peak_mib") for m in ms]),
                        train_unit=first.get("train_unit"),
                        decode_items_per_second=_fastest([m.get("decode_items_per_second") for m in ms]),
                        decode_unit=first.get("decode_unit"), runs=[d.name for d in dirs]))
    return rows


def leaderboard(rows: list[Row]) -> list[Row]:
    """The rows best first by mean, in the metric's direction; equal means share a rank."""
    sign = -1 if rows and rows[0].higher_is_better else 1

    def key(r: Row) -> float:
        return sign * round(r.mean, 12)  # means equal but for rounding share a rank

    ordered = sorted(rows, key=key)
    for r in ordered:
        r.rank = 1 + sum(key(o) < key(r) for o in ordered)
    return ordered


def board_title(plan: ComparePlan, rows: list[Row], config: dict) -> str:
    saved = config.get("task_config", {})
    amount, unit = (saved["epochs"], "epoch") if saved.get("epochs") is not None else (saved.get("minutes"), "minute")
    budget = f"{amount:g} {unit}{'' if amount == 1 else 's'}"
    n = len(plan.seeds)
    spread = f"mean ± std over {n} seeds ({', '.join(map(str, plan.seeds))})" if n > 1 else f"seed {plan.seeds[0]}"
    direction = "higher" if rows[0].higher_is_better else "lower"
    return (f"{plan.task} · {config.get('model')} · {budget} per run: test {rows[0].primary}, {spread}; "
            f"{direction} is better")


def board_cells(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    """The leaderboard's headers and text cells (the terminal's and compare.html's)."""
    from .viz.report import format_value

    r0 = rows[0]
    seeds = len(r0.values)
    decodes = _decodes(rows)
    peaks = any(r.train_peak_mib is not None for r in rows)
    headers = ["rank", "attention", f"test {r0.primary}" + (" (mean ± std)" if seeds > 1 else ""), "params",
               f"train {r0.train_unit or 'items'}/s"] + ([f"decode {r0.decode_unit or 'items'}/s"] if decodes else []) \
        + (["train peak MiB"] if peaks else [])
    cells = []
    for r in rows:
        value = format_value(r.primary, r.mean)
        if seeds > 1:
            value += f" ± {format_value(r.primary, r.std)}"
        cells.append([str(r.rank), r.attention, value, _params(r.params), _speed(r.train_items_per_second)]
                     + ([_speed(r.decode_items_per_second)] if decodes else [])
                     + ([_speed(r.train_peak_mib)] if peaks else []))
    return headers, cells


def _decodes(rows: list[Row]) -> bool:
    """Whether the task decodes (its runs record a decoding speed): the leaderboard then has that column."""
    return any(r.decode_items_per_second is not None for r in rows)


def format_board(rows: list[Row]) -> str:
    """The leaderboard as aligned text: names left, numbers right."""
    headers, cells = board_cells(rows)
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]

    def line(items):
        return "  ".join(s.ljust(w) if i == 1 else s.rjust(w) for i, (s, w) in enumerate(zip(items, widths)))

    return "\n".join([line(headers)] + [line(c) for c in cells])


def _params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e4 else f"{n:,}"


def _speed(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _largest(values: list) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _fastest(values: list) -> float | None:
    """The best of the seeds' speeds, as timings are usually reported: other work on the machine only slows a run."""
    known = [v for v in values if v is not None]
    return max(known) if known else None


# ----------------------------------------------------------------------------- compare.json, compare.html
def write_pages(plan: ComparePlan, rows: list[Row], config: dict, title: str, beam: int | None, device: str) -> None:
    """compare.json, curves.png and compare.html in the compare directory."""
    from .viz.comparison import write_comparison
    from .viz.curves import overlay_curves_png_bytes

    saved = config.get("task_config", {})
    write_json(plan.out / "compare.json", {
        "task": plan.task, "model": config.get("model"), "title": title,
        "budget": {"minutes": saved.get("minutes"), "epochs": saved.get("epochs")}, "seeds": plan.seeds,
        "spread": "std: sample standard deviation over the seeds (0 for one seed); min and max too",
        "rows": [r.to_dict() for r in rows]})

    series, keys = [], set()
    for attention in plan.mechanisms:
        for seed in plan.seeds:
            records = [{**r, "minutes": r["seconds"] / 60} for r in _read_records(plan.run_dir(attention, seed))
                       if isinstance(r.get("seconds"), (int, float))]
            keys.update(k for r in records for k in r)
            series.append({"label": f"{attention} seed {seed}", "group": attention, "records": records})
    dev = f"dev_{rows[0].primary}"
    if dev not in keys:  # a task whose dev metric is not the test metric's name
        dev = next((k for k in sorted(keys) if k.startswith("dev_")), dev)
    curves = overlay_curves_png_bytes(series, ["train_loss", dev], x="minutes",
                                      x_label="minutes of training (evaluations included)")
    (plan.out / "curves.png").write_bytes(curves)

    order = [r.attention for r in rows]
    first = {a: plan.run_dir(a, plan.seeds[0]) for a in order}
    examples, maps_note = attention_examples(plan.task, first, plan.examples, beam, device)
    headers, cells = board_cells(rows)
    n = len(plan.seeds)
    notes = [f"Every run trained as `attnzoo train {plan.task} --attention NAME --seed S` with the same budget, "
             f"data and options, one after another on the same machine; each mechanism's name links to its "
             f"first seed's report.",
             ("The metric is the mean over the seeds ± the sample standard deviation (compare.json has every "
              "seed's value, the min and the max)." if n > 1 else "One seed per mechanism: no spread."),
             f"Training speed: {rows[0].train_unit or 'items'} per second of training steps (evaluations "
             "excluded)." + (" Decoding speed: test items decoded per second with the run's beam, scoring "
                             "included." if _decodes(rows) else "") + " Speeds are the fastest seed's: other work on "
             "the machine can only slow a run down."]
    write_comparison(plan.out / "compare.html", title=f"Comparison: {plan.task} · {config.get('model')}",
                     subtitle=title, headers=headers, rows=cells, links=[f"{r.runs[0]}/report.html" for r in rows],
                     numeric=[i != 1 for i in range(len(headers))], curves_png=curves, columns=order,
                     examples=examples, maps_note=maps_note, notes=notes)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _read_metrics(run_dir: Path) -> dict | None:
    path = run_dir / "metrics.json"
    return _read_json(path) if path.is_file() else None


def _read_records(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]




# ----------------------------------------------------------------------------- the same examples, each mechanism
def attention_examples(task: str, runs: dict[str, Path], count: int, beam: int | None,
                       device: str) -> tuple[list[dict], str]:
    """The same test examples through each run's model (``{name: run directory}``), drawn by the task's
    ``examples``: ``[{"legend", "cells": {name: {"png", "legend"}}}]`` for
    :func:`~attnzoo.viz.comparison.write_comparison`, and a line saying what the maps show."""
    if not runs:
        return [], ""
    loaded = {name: lab.load(path, device) for name, path in runs.items()}
    config = next(iter(loaded.values())).config
    beam = beam or config.get("task_config", {}).get("beam_size", 5)
    return TASKS.get_task(task).examples(loaded, config, count, beam)
