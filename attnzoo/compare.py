"""``attnzoo compare``: attention mechanisms side by side on one task, under one budget.

    attnzoo compare g2p --attention additive,dot,location_aware --minutes 2 --seeds 2

Each mechanism is trained with each seed (``--seed``, ``--seed`` + 1, ...:
``--seeds`` of them) exactly as ``attnzoo train TASK --attention NAME --seed S``
trains it (the same code, called in this process, with the same budget, data
and options) into its own run directory ``OUT/NAME-seedS/``, one run after
another. Then:

* the terminal shows the leaderboard, best first (by the task's primary test
  metric, in its direction): rank, mechanism, that metric as mean ± sample
  standard deviation over the seeds, parameters, training throughput (items per
  second of training steps, evaluations excluded) and decoding speed (test
  items decoded per second, beam search included; for the tasks that decode),
  both the fastest seed's;
* ``OUT/compare.json`` holds the rows (every seed's value, mean, std, min, max);
* ``OUT/compare.html``, self-contained like a run's report, shows the table,
  the learning curves of every run on one plot (train loss and the dev metric
  against minutes; also saved as ``OUT/curves.png``) and the attention maps of
  the same test examples through each mechanism's trained model (its first
  seed), one column per mechanism.

Rerunning the same command continues an interrupted compare: a run whose
``metrics.json`` exists is skipped (the log says so), one stopped midway
(Ctrl-C, SIGTERM, ``kill -9``) resumes from its training state as ``attnzoo
train --resume`` would. A finished run trained with other flags than the
command's is refused, never mixed into the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from . import cli
from .training.checkpoint import TRAIN_STATE, write_json

log = logging.getLogger(__name__)

#: flags of `attnzoo compare` handed to every run as the `attnzoo train` flags of the same name
TRAIN_FLAGS = ("model", "minutes", "epochs", "device", "split", "beam", "batch_size", "lr", "set", "data", "units",
               "quiet", "debug")
#: tasks whose RNN or Transformer encoder-decoder decodes its test items (and has decode speeds and alignments)
SEQ2SEQ_TASKS = ("g2p", "translate", "seq2seq")
#: exit status of a compare stopped by a signal (128 + the signal's number), as a shell reports it
STOPPED = {"SIGINT": 128 + 2, "SIGTERM": 128 + 15}


@dataclass
class ComparePlan:
    """What one compare trains, and where."""

    task: str
    mechanisms: list[str]  # --attention, in the order given
    seeds: list[int]  # --seed, --seed + 1, ... (--seeds of them): every mechanism sees the same data and seeds
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


# ----------------------------------------------------------------------------- the command
def main(args) -> int:
    """`attnzoo compare`: train what is missing, then print the leaderboard and write the pages."""
    plan = make_plan(args)
    todo = [(a, s) for a in plan.mechanisms for s in plan.seeds]
    log.info("%d mechanisms x %d seeds = %d runs of %s, one after another, in %s", len(plan.mechanisms),
             len(plan.seeds), len(todo), plan.task, plan.out)
    try:
        for i, (attention, seed) in enumerate(todo, 1):
            code = train_one(args, plan, attention, seed, f"{i} of {len(todo)}")
            if code:
                return code
    except KeyboardInterrupt:  # between runs (loading data, writing a report): nothing half-trained to save
        print(f"compare stopped by SIGINT; rerun the same command to continue ({plan.out})", file=sys.stderr)
        return STOPPED["SIGINT"]
    rows = leaderboard(collect(plan))
    config = _read_json(plan.run_dir(plan.mechanisms[0], plan.seeds[0]) / "config.json")
    title = board_title(plan, rows, config)
    print("\n" + title)
    print(format_board(rows))
    write_pages(plan, rows, config, title, beam=args.beam, device=args.device)
    print(f"compare: {plan.out / 'compare.html'} (table, learning curves, attention maps), "
          f"{plan.out / 'compare.json'}")
    return 0


def make_plan(args) -> ComparePlan:
    """The command line checked before anything trains: the mechanism list, each mechanism's fit, --out."""
    mechanisms = parse_mechanisms(args.attention)
    check_slots(args.task, args.model, mechanisms, cli._overrides(args.set))
    model = f"-{args.model}" if args.model else ""
    out = Path(args.out or f"runs/compare-{args.task}{model}-{'-'.join(mechanisms)}")  # a rerun finds it again
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is an existing file; name a new or existing directory")
    return ComparePlan(args.task, mechanisms, list(range(args.seed, args.seed + args.seeds)), out, args.examples)


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


def check_slots(task: str, model: str | None, mechanisms: list[str], overrides: dict) -> None:
    """Every mechanism fits the task's attention slot, all checked before the first run trains."""
    for attention in mechanisms:
        if task in SEQ2SEQ_TASKS:
            from .models.factory import check_model

            check_model(model or "rnn", attention, overrides)
        elif task == "lm":
            from .tasks import lm

            lm.check_model(attention, overrides)
        elif task == "classify":
            from .tasks import classify

            classify.check_model(attention, overrides, model)  # no --model: the one the attention implies
        # any other task checks its slot when its first run starts, as `attnzoo train` does


def train_one(args, plan: ComparePlan, attention: str, seed: int, which: str) -> int:
    """Train (or resume, or skip) one run; nonzero when a signal stopped it (the compare stops too)."""
    run_dir = plan.run_dir(attention, seed)
    metrics = _read_metrics(run_dir)
    if metrics is not None and not metrics.get("interrupted"):
        check_same_run(args, run_dir, attention, seed)
        log.info("skipping run %s, %s seed %d: already trained (%s exists)", which, attention, seed,
                 run_dir / "metrics.json")
        return 0
    resume = (run_dir / TRAIN_STATE).is_file()
    log.info("run %s: %s seed %d -> %s%s", which, attention, seed, run_dir,
             " (resuming from its training state)" if resume else "")
    code = cli.cmd_train(train_args(args, attention, seed, run_dir, resume))
    metrics = _read_metrics(run_dir)
    if metrics is None or metrics.get("interrupted"):
        why = (metrics or {}).get("stopped_by", "SIGINT")
        print(f"compare stopped by {why} during {run_dir}; rerun the same command to continue (finished runs are "
              "skipped, this one resumes)", file=sys.stderr)
        return code or STOPPED.get(why, STOPPED["SIGINT"])
    return code


def train_args(args, attention: str, seed: int, run_dir: Path, resume: bool) -> argparse.Namespace:
    """The namespace `attnzoo train TASK --attention NAME --seed S --out DIR [--resume DIR]` would parse to."""
    ns = cli.build_parser().parse_args(["train", args.task])  # every flag of `attnzoo train` at its default
    for name in TRAIN_FLAGS:
        setattr(ns, name, getattr(args, name))
    ns.attention, ns.seed, ns.out = attention, seed, str(run_dir)
    ns.resume = str(run_dir) if resume else None
    return ns


def check_same_run(args, run_dir: Path, attention: str, seed: int) -> None:
    """A finished run counts only if the command would train it again as it is: same task, model, budget, ..."""
    config = _read_json(run_dir / "config.json")
    saved = config.get("task_config", {})
    data = str(Path(args.data).resolve()) if args.data else None
    checks = [  # flag, what the command asks (None: not given, any value fits), what the run was trained with
        ("task", args.task, config.get("task")), ("--attention", attention, config.get("attention")),
        ("--seed", seed, saved.get("seed")), ("--model", args.model, config.get("model")),
        ("--batch-size", args.batch_size, saved.get("batch_size")), ("--lr", args.lr, saved.get("lr")),
        ("--beam", args.beam, saved.get("beam_size", args.beam)),
        ("--split", args.split, saved.get("split", args.split)),
        ("--data", data, saved.get("data")),
        ("--units", (args.units or "char") if args.task == "seq2seq" else None, saved.get("units")),
        ("--set", cli._overrides(args.set), config.get("model_overrides", {}))]
    asked = ("--epochs", args.epochs) if args.epochs is not None else ("--minutes", args.minutes)
    if asked[1] is None:  # no budget given: the task's default minutes
        asked = ("--minutes", getattr(_task_config_class(args.task), "default_minutes", None))
    trained = ("--epochs", saved.get("epochs")) if saved.get("epochs") is not None else \
        ("--minutes", saved.get("minutes"))
    for flag, given, was in [("budget", asked if asked[1] is not None else None, trained)] + checks:
        if given is not None and given != was:
            said = (f"{was[0]} {_show(was[1])}", f"{given[0]} {_show(given[1])}") if flag == "budget" else \
                (f"{flag} {_show(was)}", f"{flag} {_show(given)}")
            raise ValueError(f"{run_dir} was trained with {said[0]} but this compare asks for {said[1]}; rerun it "
                             "with the flags it started with, or pass --out NEWDIR for a new comparison")


def _task_config_class(task: str):
    """The task's options class (its default budget), or None for a task this module does not know."""
    from importlib import import_module

    name = {"g2p": "G2PConfig", "translate": "TranslateConfig", "seq2seq": "PairsConfig", "lm": "LMTaskConfig",
            "classify": "ClassifyConfig"}.get(task)
    return None if name is None else getattr(import_module(f".tasks.{task}", __package__), name)


def _show(value) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={json.dumps(v)}" for k, v in value.items()) or "(none)"
    return f"{value:g}" if isinstance(value, float) else str(value)


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
    headers = ["rank", "attention", f"test {r0.primary}" + (" (mean ± std)" if seeds > 1 else ""), "params",
               f"train {r0.train_unit or 'items'}/s"] + ([f"decode {r0.decode_unit or 'items'}/s"] if decodes else [])
    cells = []
    for r in rows:
        value = format_value(r.primary, r.mean)
        if seeds > 1:
            value += f" ± {format_value(r.primary, r.std)}"
        cells.append([str(r.rank), r.attention, value, _params(r.params), _speed(r.train_items_per_second)]
                     + ([_speed(r.decode_items_per_second)] if decodes else []))
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


def _fastest(values: list) -> float | None:
    """The best of the seeds' speeds, as timings are usually reported: other work on the machine only slows a run."""
    known = [v for v in values if v is not None]
    return max(known) if known else None


# ----------------------------------------------------------------------------- compare.json, compare.html
def write_pages(plan: ComparePlan, rows: list[Row], config: dict, title: str, beam: int, device: str) -> None:
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
def attention_examples(task: str, runs: dict[str, Path], count: int, beam: int,
                       device: str) -> tuple[list[dict], str]:
    """The same test examples through each run's model: ``[{"caption", "cells": {attention: {"png",
    "caption"}}}]`` for :func:`~attnzoo.viz.comparison.write_comparison`, and a line saying what the maps show."""
    pick = EXAMPLES.get(task)
    if pick is None or not runs:
        return [], ""
    first = next(iter(runs.values()))
    return pick(runs, _read_json(first / "config.json"), count, beam, device)


@dataclass
class _Examples:
    """The test examples of a decoding task: what each model decodes, and what the page says of it."""

    inputs: list[str]
    captions: list[str]
    right: dict = field(default_factory=dict)  # input -> the outputs scored as right (for ✓/✗)


def _alignment_cells(runs: dict[str, Path], ex: _Examples, beam: int, device: str, align) -> list[dict]:
    """Decode ``ex.inputs`` with each run; ``align(output, input) -> (weights (T, S), source labels, target
    labels, text)`` turns an output into its heatmap."""
    from .runs import load
    from .viz.heatmap import alignment_png_bytes

    examples = [{"caption": c, "cells": {}} for c in ex.captions]
    for attention, run_dir in runs.items():
        run = load(run_dir, device)
        for item, source, output in zip(examples, ex.inputs, run.predict(ex.inputs, beam_size=beam)):
            weights, src, tgt, text = align(output, source)
            mark = "" if source not in ex.right else " ✓" if text in ex.right[source] else " ✗"
            item["cells"][attention] = {"png": alignment_png_bytes(weights, src, tgt), "caption": text + mark}
    return examples


def _g2p_examples(runs, config, count, beam, device):
    from .data.g2p import make_split

    saved = config["task_config"]
    test = make_split(saved.get("split", "standard"), seed=saved["seed"]).test
    words = sorted(random.Random(saved["seed"]).sample(sorted(test), min(count, len(test))))
    ex = _Examples(words, [f"{w}  (reference {' '.join(test[w][0])})" for w in words],
                   {w: {" ".join(p) for p in test[w]} for w in words})
    cells = _alignment_cells(runs, ex, beam, device, lambda r, w: (r.weights, list(w), r.labels, " ".join(r.phonemes)))
    return cells, ("The same test words through each mechanism's model (first seed): rows are the phonemes "
                   "emitted, columns the letters; colour: attention weight from 0 to 1.")


def _translate_examples(runs, config, count, beam, device):
    from .data.bible import load_verses, split_by_chapter

    saved = config["task_config"]
    test = split_by_chapter(load_verses(), seed=saved["seed"], dev_chapters=saved["dev_chapters"],
                            test_chapters=saved["test_chapters"]).test
    short = [v for v in test if len(v.es.split()) <= 30] or test
    verses = [short[i] for i in sorted(random.Random(saved["seed"]).sample(range(len(short)), min(count, len(short))))]
    ex = _Examples([v.es for v in verses], [f"{v.book} {v.chapter}:{v.verse}  {v.es}  (reference: {v.en})"
                                            for v in verses])
    cells = _alignment_cells(runs, ex, beam, device, lambda r, s: (*r.word_alignment(), r.text))
    return cells, ("The same test verses through each mechanism's model (first seed): rows are output words, "
                   "columns source words (a word's weight sums its subword pieces').")


def _seq2seq_examples(runs, config, count, beam, device):
    from .data.userdata import read_pairs, references

    first = next(iter(runs.values()))
    refs = references(read_pairs(first / "test.tsv", flag="test.tsv"))
    short = [s for s in refs if len(s.split()) <= 30] or list(refs)
    sources = sorted(random.Random(config["task_config"]["seed"]).sample(short, min(count, len(short))))
    ex = _Examples(sources, [f"{s}  (reference: {refs[s][0]})" for s in sources],
                   {s: set(refs[s]) for s in sources})
    cells = _alignment_cells(runs, ex, beam, device, lambda r, s: (*r.word_alignment(), r.text))
    return cells, ("The same test sources (the runs' test.tsv) through each mechanism's model (first seed): rows "
                   "are output tokens, columns source tokens; colour: attention weight from 0 to 1.")


def _lm_examples(runs, config, count, beam, device):
    from .runs import load
    from .tasks import lm
    from .viz.heatmap import alignment_png_bytes

    first = next(iter(runs.values()))
    text = lm.held_out_text(first, config)["test"]
    cells, sample = {}, text[:32]
    for attention, run_dir in runs.items():
        run = load(run_dir, device)
        sample = text[:min(32, run.model.config.context)]  # one window: the model sees at most `context`
        ids = torch.tensor([run.predictor.vocab.encode(sample)], dtype=torch.long, device=run.predictor.device)
        with torch.no_grad():
            _, weights = run.model(ids, need_weights=True)
        labels = [{" ": "␣", "\n": "⏎"}.get(c, c) for c in sample]
        grid = weights[-1][0].float().mean(0).cpu()  # (T, T): the last layer's heads averaged
        cells[attention] = {"png": alignment_png_bytes(grid, labels, labels), "caption": "last layer, heads averaged"}
    return [{"caption": f"the first test characters: {sample!r}", "cells": cells}], (
        "Causal self-attention of each mechanism's model (first seed) on the same test characters: rows are the "
        "positions predicting, columns those they attend to.")


def _classify_examples(runs, config, count, beam, device):
    from .data.fashion_mnist import CLASSES, load_split
    from .runs import load
    from .viz.heatmap import class_attention_png_bytes

    data = load_split(seed=config["task_config"]["seed"])
    images, labels = data.test_images[:count], data.test_labels[:count]
    examples = [{"caption": f"test image {i}: {CLASSES[int(labels[i])]}", "cells": {}} for i in range(len(images))]
    for attention, run_dir in runs.items():
        run = load(run_dir, device)
        with torch.no_grad():
            logits, weights = run.model(images.to(run.predictor.device), need_weights=True)
        side = run.model.config.image_size // run.model.config.patch_size
        maps = weights[-1][:, :, 0, 1:].float().mean(1).view(-1, side, side).cpu()  # (N, side, side)
        for i, item in enumerate(examples):
            pred = CLASSES[int(logits[i].argmax())]
            mark = "✓" if pred == CLASSES[int(labels[i])] else "✗"
            item["cells"][attention] = {"png": class_attention_png_bytes(images[i, 0], maps[i][None, None]),
                                        "caption": f"predicted {pred} {mark}"}
    return examples, ("The class token's attention over the patches in each mechanism's model (first seed), last "
                      "layer, heads averaged.")


#: task -> how its examples are picked and drawn (a task without an entry gets no maps)
EXAMPLES = {"g2p": _g2p_examples, "translate": _translate_examples, "seq2seq": _seq2seq_examples,
            "lm": _lm_examples, "classify": _classify_examples}
