"""``attnzoo eval DIR``: a run scored again on its dev and test data."""

from __future__ import annotations

from ..tasks.base import BEAM
from .runs import open_run


def add_parsers(sub) -> dict:
    ev = sub.add_parser("eval", help="score a trained run on its dev and test data")
    ev.add_argument("run_dir")
    ev.add_argument("--beam", type=int, help="beam size (default: the run's)")
    ev.add_argument("--split", help="the split to score, for a task that has several (e.g. standard | random; "
                    "default: the run's)")
    return {"eval": run}


def run(args) -> int:
    if args.beam is not None:
        BEAM.check("--beam", args.beam)
    r = open_run(args.run_dir, "eval")
    options = {k: v for k, v in (("beam_size", args.beam), ("split", args.split)) if v is not None}
    result = r.evaluate(**options)
    print("\n".join(r.spec.eval_lines(result)))
    return 0
