"""``attnzoo predict DIR INPUT...`` and the commands each task adds (``pronounce``, ``translate``, ``generate``):
a trained run on new inputs."""

from __future__ import annotations

from ..tasks import TASKS
from .runs import open_run


def add_parsers(sub) -> dict:
    pr = sub.add_parser("predict", help="a trained run on new inputs: its task's own verb (each output on a line)")
    pr.add_argument("run_dir")
    pr.add_argument("inputs", nargs="+", metavar="INPUT")
    handlers = {"predict": run}
    seen = set()
    for name in TASKS:
        for command in TASKS[name].commands:
            if command.name in seen:  # one command shared by several tasks (translate: translate and seq2seq)
                continue
            seen.add(command.name)
            p = sub.add_parser(command.name, help=command.help)
            p.add_argument("run_dir")
            command.arguments(p)
            handlers[command.name] = _handler(command)
    return handlers


def _handler(command):
    def handle(args) -> int:
        for dest, bound in command.bounds.items():
            if getattr(args, dest, None) is not None:
                bound.check("--" + dest.replace("_", "-"), getattr(args, dest))
        r = open_run(args.run_dir, command.name)
        own = next(c for c in r.spec.commands if c.name == command.name)  # the run's task's version of it
        print("\n".join(own.run(r, args)))
        return 0

    return handle


def run(args) -> int:
    r = open_run(args.run_dir, "predict")
    for item, output in zip(args.inputs, r.predict(args.inputs)):
        print(f"{item}\t{output}")
    return 0
