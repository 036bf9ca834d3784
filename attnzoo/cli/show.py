"""``attnzoo show DIR TEXT``: the attention heatmap of one input, as a PNG."""

from __future__ import annotations

from pathlib import Path

from ..tasks.base import BEAM
from ..viz.heatmap import save_alignment
from .runs import open_run


def add_parsers(sub) -> dict:
    sh = sub.add_parser("show", help="save the attention heatmap of one input (a word, a sentence): output "
                        "tokens against input tokens")
    sh.add_argument("run_dir")
    sh.add_argument("word", metavar="TEXT")
    sh.add_argument("--out", help="PNG path (default: RUN_DIR/alignment[-TEXT].png)")
    sh.add_argument("--beam", type=int, default=5)
    return {"show": run}


def run(args) -> int:
    BEAM.check("--beam", args.beam)
    r = open_run(args.run_dir, "show")
    first = next(iter(r.attention(args.word, beam_size=args.beam).values()))
    out = Path(args.out or Path(args.run_dir) / r.spec.show_name(args.word))
    save_alignment(out, first.weights.float().numpy(), first.columns, first.rows, title=first.title)
    print(out)
    return 0
