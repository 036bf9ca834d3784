"""``attnzoo bench``: attnzoo against its peers (:mod:`attnzoo.bench` does the work)."""

from __future__ import annotations


def add_parsers(sub) -> dict:
    from ..bench.catalog import cases

    be = sub.add_parser("bench", help="time and measure attnzoo against its peers (nn.MultiheadAttention, SDPA, "
                        "x-transformers, naive additive, full recomputation)")
    be.add_argument("--quick", action="store_true", help="small sizes only (seconds)")
    be.add_argument("--case", action="append", help="run only this case (repeatable): "
                    + ", ".join(c.name for c in cases()))
    be.add_argument("--device", default="cpu", help="cpu | cuda")
    be.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    be.add_argument("--reps", type=int, default=5, help="timed repetitions per contender (median reported)")
    be.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    be.add_argument("--out", help="write the results as JSON here")
    return {"bench": run}


def run(args) -> int:
    from .. import bench

    return bench.run_command(quick=args.quick, cases=args.case, device=args.device, threads=args.threads,
                             reps=args.reps, memory=not args.no_memory, out=args.out)
