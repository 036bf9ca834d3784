"""``attnzoo compare TASK --attention a,b,c``: mechanisms side by side (:mod:`attnzoo.compare` does the work)."""

from __future__ import annotations

import sys

from ..compare import STOPPED, Stopped, compare
from ..tasks import TASKS
from ..training.options import Flag
from .parser import Parser, add_config_flags, check_ranges, given, parse_set
from .train import add_model_flags, spell_for

SEEDS = Flag("runs per mechanism", low=1, example="3")
EXAMPLES = Flag("test examples shown", low=1, example="4")
#: options every compared run must share; what saves and where it runs (not what it trains) is left to train
SKIP = ("checkpoint_every_minutes", "checkpoint_every_steps", "eval_every_steps")


def add_parsers(sub) -> dict:
    co = sub.add_parser("compare", help="train several mechanisms on one task under one budget, the same data "
                        "and seeds, then print a leaderboard and write compare.html (table, learning curves, "
                        "attention maps side by side) and compare.json")
    tasks = co.add_subparsers(dest="task", required=True, metavar="TASK", parser_class=Parser)
    for name in TASKS:
        task = TASKS[name]
        p = tasks.add_parser(name, help=task.description)
        add_model_flags(p, task, "the model's attention slot, for every run")
        for action in p._actions:
            if action.dest == "attention":
                action.required, action.metavar = True, "A,B,..."
                action.help = ("the mechanisms, comma-separated, e.g. additive,dot,location_aware (see "
                               "`attnzoo list`)")
        p.add_argument("--seeds", type=int, default=1, help="runs per mechanism, with seeds --seed, --seed + 1, "
                       "... (the leaderboard shows mean ± std over them)")
        p.add_argument("--out", help="compare directory: one run directory per mechanism and seed (NAME-seedS/), "
                       "compare.html, compare.json, curves.png (default: runs/compare-TASK[-MODEL]-A-B-...); "
                       "rerunning the same command skips the runs that finished and resumes a stopped one")
        p.add_argument("--examples", type=int, default=4, help="test examples whose attention maps compare.html "
                       "shows")
        p.set_defaults(config_flags=add_config_flags(p, task.Config, f"compare {name}", skip=SKIP))
    return {"compare": run}


def run(args) -> int:
    SEEDS.check("--seeds", args.seeds)
    EXAMPLES.check("--examples", args.examples)
    check_ranges(args, args.config_flags)
    config = given(args, args.config_flags)
    seed = config.pop("seed", 0)
    try:
        board = compare(args.task, args.attention, seeds=args.seeds, seed=seed, out=args.out,
                        examples=args.examples, model=args.model, options=parse_set(args.set) if args.set else None,
                        progress=False if args.quiet else None, beam=config.get("beam_size"), spell=spell_for(args),
                        **config)
    except Stopped as e:
        print(str(e), file=sys.stderr)
        return e.status
    except KeyboardInterrupt:  # between runs (loading data, writing a report): nothing half-trained to save
        print(f"compare stopped by SIGINT; rerun the same command to continue ({args.out or 'runs/compare-...'})",
              file=sys.stderr)
        return STOPPED["SIGINT"]
    print("\n" + board.table())
    print(f"compare: {board.plan.out / 'compare.html'} (table, learning curves, attention maps), "
          f"{board.plan.out / 'compare.json'}")
    return 0
