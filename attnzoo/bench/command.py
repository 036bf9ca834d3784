"""The command line of ``attnzoo bench``: :func:`main` (``python -m attnzoo.bench``, also the memory probes),
:func:`cli` (``attnzoo bench``) and :func:`run_command`, the plain-keyword call both end in."""

from __future__ import annotations

import argparse
import json
import sys

import torch

from . import catalog
from .harness import find_contender, peak_memory_here, run


def main(argv: list[str] | None = None) -> int:
    """``python -m attnzoo.bench [...]``; with the hidden ``--probe``, one fresh-process memory probe."""
    summary = sys.modules[__package__].__doc__.split("\n\n")[0]  # the package docstring's first paragraph
    p = argparse.ArgumentParser(prog="attnzoo bench", description=summary)
    p.add_argument("--quick", action="store_true", help="small sizes only (seconds)")
    p.add_argument("--case", action="append", help="run only this case (repeatable): " +
                   ", ".join(c.name for c in catalog.cases()))
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--probe", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.probe:  # a fresh subprocess measuring one contender's peak memory
        case, contender, size, device, threads = json.loads(args.probe)
        torch.set_num_threads(threads)
        print(peak_memory_here(find_contender(case, contender), size, device))
        return 0
    return cli(args)


def cli(args) -> int:
    """Run from ``attnzoo bench`` (shared with :func:`main`): ``args`` is its argparse Namespace."""
    return run_command(quick=args.quick, cases=args.case, device=args.device, threads=args.threads,
                       reps=args.reps, memory=not args.no_memory, out=args.out)


def run_command(*, quick: bool = False, cases: list[str] | None = None, device: str = "cpu", threads: int = 2,
                reps: int = 5, memory: bool = True, out: str | None = None) -> int:
    """What ``attnzoo bench`` does, without a Namespace: check the options, :func:`run` the cases (all when
    ``cases`` is None), print each row and write the results as JSON to ``out`` if given; the exit status."""
    if threads < 1 or reps < 1:
        raise ValueError(f"--threads and --reps must be >= 1, got {threads} and {reps}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available here; use --device cpu")
    results = run(cases, quick=quick, device=device, threads=threads, reps=reps, memory=memory)
    results["command"] = "attnzoo bench " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["bench"] else sys.argv[1:])
    if out:
        with open(out, "w") as f:
            json.dump(results, f, indent=1)
        print(f"\nresults: {out}")
    return 0
