"""The ``attnzoo`` command: a thin layer over the lab (:mod:`attnzoo.lab`, :mod:`attnzoo.compare`).

    attnzoo list [--kind tasks|models|mechanisms|positions|normalizers|backends]   what the library holds
    attnzoo train TASK [--model M] [--attention A] [--minutes M | --epochs E] [--set KEY=VALUE] ...
    attnzoo train TASK --resume DIR                 continue a stopped or killed run from its last checkpoint
    attnzoo eval DIR                                re-score a run on its dev and test data
    attnzoo show DIR TEXT [--out PNG]               the attention heatmap of one input
    attnzoo predict DIR INPUT...                    a run's task's own verb on inputs (pronounce, translate, ...)
    attnzoo pronounce|translate|generate DIR ...    the commands the tasks add (see `attnzoo --help`)
    attnzoo compare TASK --attention a,b,c [--minutes M | --epochs E] [--seeds N]   mechanisms side by side
    attnzoo bench [--quick] [--case NAME]           attnzoo against its peers: time, GFLOP/s, peak memory

Each task (:data:`attnzoo.tasks.TASKS`) gets its own ``train TASK`` and
``compare TASK`` parser, whose flags come from its config, so a flag that does
not apply is refused by argparse. Errors in what was asked (an unknown command,
task, name or option, a bad value, an unreadable or foreign run directory, a
missing data package) print one line that says what is wrong and how to fix it,
and exit with status 2; ``--debug`` shows the whole traceback instead. Every
check that needs no data runs before any data loads.
"""

from __future__ import annotations

import logging
import sys

from ..data import MissingDataError
from ..training.checkpoint import RunDirError
from . import bench, compare, evaluate, listing, predict, show, train
from .parser import Parser, UsageError

USER_ERRORS = (ValueError, TypeError, RunDirError, MissingDataError, FileNotFoundError, PermissionError,
               IsADirectoryError, NotADirectoryError)

#: the command modules, in `attnzoo --help` order: each has add_parsers(subparsers) -> {command: handler}
MODULES = (listing, train, evaluate, show, predict, compare, bench)


def build_parser() -> tuple[Parser, dict]:
    """The parser and {command: handler(args) -> exit status}."""
    p = Parser(prog="attnzoo", description="Attention mechanisms: a library and a lab.")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or log lines")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    handlers: dict = {}
    for module in MODULES:
        handlers.update(module.add_parsers(sub))
    return p, handlers


def _fail(e: BaseException) -> int:
    msg = str(e).splitlines()[0] if str(e).strip() else type(e).__name__
    print(f"attnzoo: error: {msg}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Run one command; a user error prints one line `attnzoo: error: ...` and returns 2 (--debug: raises)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser, handlers = build_parser()
    Parser.command_words = " ".join([a for a in argv if not a.startswith("-")][:2])
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        if "--debug" in argv:
            raise
        return _fail(e)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return handlers[args.command](args)
    except USER_ERRORS as e:
        if args.debug:
            raise
        return _fail(e)


__all__ = ["main", "build_parser", "UsageError", "USER_ERRORS"]
