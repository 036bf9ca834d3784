"""``attnzoo train TASK``: one parser per task, its flags from the task's config; the lab does the work."""

from __future__ import annotations

import argparse
import sys

from .. import lab
from ..tasks import TASKS, Task
from ..training import distributed
from .parser import Parser, add_config_flags, check_ranges, given, parse_set


def add_model_flags(parser: argparse.ArgumentParser, task: Task, what: str = "the model's attention slot") -> None:
    """--model, --attention and --set of a task (the choices it offers in the help)."""
    defaults = ", ".join(f"{a} for {m}" for m, a in task.models.items())
    parser.add_argument("--attention", help=f"mechanism in {what} (see `attnzoo list`; default: {defaults})")
    parser.add_argument("--model", help=f"architecture: {' | '.join(task.models)} (default: "
                        f"{next(iter(task.models))})")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="model option, e.g. --set dropout=0.3 (repeatable; see the model's config)")


def add_parsers(sub) -> dict:
    tr = sub.add_parser("train", help="train a model on a task and write a run directory")
    tasks = tr.add_subparsers(dest="task", required=True, metavar="TASK", parser_class=Parser)
    for name in TASKS:
        task = TASKS[name]
        p = tasks.add_parser(name, help=task.description, description=task.description)
        add_model_flags(p, task)
        p.add_argument("--out", help="run directory (default: runs/TASK-MODEL-ATTENTION-TIMESTAMP)")
        p.add_argument("--resume", metavar="DIR", help="continue the run in DIR (stopped by Ctrl-C or SIGTERM, or "
                       "killed, kill -9 included) from its last checkpoint, with its own model, options and budget, "
                       "the same data order, learning-rate schedule and random state; flags that contradict the "
                       "run's are refused (a budget cannot be extended: the schedule ends with it), --device may "
                       "change")
        p.set_defaults(config_flags=add_config_flags(p, task.Config, f"train {name}"))
    return {"train": run}


def spell_for(args) -> callable:
    """field -> the flag that sets it, for messages."""
    names = {name: flag for name, (flag, _) in args.config_flags.items()}
    names.update(model="--model", attention="--attention", options="--set", out="--out")
    return lambda field: names.get(field, field)


def run(args) -> int:
    check_ranges(args, args.config_flags)
    p = lab.plan(args.task, model=args.model, attention=args.attention,
                 options=parse_set(args.set) if args.set else None, out=args.out, resume=args.resume,
                 spell=spell_for(args), **given(args, args.config_flags))
    announce(p)
    metrics = lab.execute(p, progress=False if args.quiet else None)
    if metrics is None:  # a torchrun worker: rank 0 reports
        return 0
    print("\n" + "\n".join(p.task.summary(metrics)))
    print(f"report: {p.out / 'report.html'}")
    return stopped(p, metrics)


def announce(p: lab.TrainPlan) -> None:
    if not distributed.current().is_main:
        return
    if p.resume is not None:
        s = p.resume
        print(f"resuming {p.task.name} · {p.model} · {p.attention} ({p.budget}) at step {s['step']}, "
              f"{s['elapsed']:.0f} s in -> {p.out}", file=sys.stderr)
        return
    print(f"training {p.task.name} · {p.model} · {p.attention} for {p.budget} -> {p.out}", file=sys.stderr)


def stopped(p: lab.TrainPlan, metrics: dict) -> int:
    """0, or 143 (128 + SIGTERM) for a run that SIGTERM stopped: saved and reported, but not finished."""
    if not metrics.get("interrupted"):
        return 0
    print(f"stopped by {metrics.get('stopped_by', 'an interrupt')} after {metrics['steps']} steps; continue with "
          f"`attnzoo train {p.task.name} --resume {p.out}`", file=sys.stderr)
    return 128 + 15 if metrics.get("stopped_by") == "SIGTERM" else 0
