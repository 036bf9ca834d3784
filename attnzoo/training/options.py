"""The options every task's run shares, defined once, and how an option tells the command line about itself.

``TrainOptions`` holds the options every task has (seed, budget, batch size,
learning rate, device, precision, threads, checkpoint period, weight
averaging) and checks them once; each task's config subclasses it with its own
fields. A field made with :func:`option` becomes a flag of ``attnzoo train
TASK`` (and ``attnzoo compare TASK``): its help text, flag name, example and
numeric bounds live beside its default, so the command line, its range checks
and its messages are derived from the config and never listed again.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from ..config import ConfigMixin
from ..core import validate as V
from .trainer import check_ema_decay

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class Flag:
    """How a config field shows on the command line: ``--flag`` (default: the field's name with dashes), its
    help, an example value for messages, and the range a number must lie in (``low``/``high``, each inclusive or
    not); ``hidden`` flags work but stay out of ``--help`` (tests)."""

    help: str
    flag: str | None = None
    example: str | None = None
    low: float | None = None
    low_inclusive: bool = True
    high: float | None = None
    high_inclusive: bool = True
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    hidden: bool = False

    def name_for(self, field_name: str) -> str:
        return self.flag or "--" + field_name.replace("_", "-")

    def check(self, flag: str, value: Any) -> None:
        """ValueError naming the flag unless a number lies in its range (and is finite)."""
        if not isinstance(value, (int, float)) or isinstance(value, bool) or (self.low is None and self.high is None):
            return
        if V.in_range(value, self.low, self.low_inclusive, self.high, self.high_inclusive):
            return
        if self.high is not None:
            what = (f"in {'[' if self.low_inclusive else '('}{self.low:g}, {self.high:g}"
                    f"{']' if self.high_inclusive else ')'}")
        else:
            what = "positive" if self.low > 0 or not self.low_inclusive else f">= {self.low:g}"
        finite = " and finite" if isinstance(value, float) else ""
        example = f"; e.g. {flag} {self.example}" if self.example else ""
        raise ValueError(f"{flag} must be {what}{finite}, got {value:g}{example}")


def option(default: Any = None, help: str = "", **flag: Any) -> Any:
    """A config field that is also a command-line flag (see :class:`Flag` for the keywords)."""
    meta = {"flag": Flag(help=help, **flag)}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def flags_of(config_cls: type) -> list[tuple[str, str, Flag]]:
    """(field name, --flag, Flag) of every field of a config class that is a command-line flag (a subclass
    that only changes a field's default keeps the flag its base class declared)."""
    out = []
    for f in fields(config_cls):
        declared = (getattr(c, "__dataclass_fields__", {}).get(f.name) for c in config_cls.__mro__)
        meta = next((d.metadata["flag"] for d in declared if d is not None and "flag" in d.metadata), None)
        if meta is not None:
            out.append((f.name, meta.name_for(f.name), meta))
    return out


def _positive(example: str, **kw: Any) -> dict:
    return dict(low=0, low_inclusive=False, example=example, **kw)


@dataclass
class TrainOptions(ConfigMixin):
    """What every task's run takes; a task's config subclasses it (and sets ``default_minutes``/``default_lr``)."""

    seed: int = option(0, "data order, held-out selection and initialisation", example="0")
    minutes: float | None = option(None, "training wall-clock budget (default: the task's, so the whole command "
                                   "ends within about 10 minutes on 2 CPU cores)", **_positive("8"))
    epochs: float | None = option(None, "fixed amount of training instead of a time budget", **_positive("2"))
    batch_size: int = option(64, "examples per step (default: the task's)", low=1, example="64")
    lr: float | None = option(None, "peak learning rate (AdamW, warm-up then cosine decay; default: the task's, "
                              "per architecture)", **_positive("1e-3"))
    eval_every_minutes: float = 1.0  # dev evaluation period during training
    device: str = option("auto", "auto | cpu | cuda", choices=DEVICES)
    precision: str = option("auto", "training matmuls: auto (bfloat16 where the CPU or GPU has it, else float32) "
                            "| bf16 | fp32", choices=PRECISIONS)
    threads: int | None = option(None, "torch CPU threads while training (default: torch's, one per core); "
                                 "fewer than the free cores when other jobs share the machine", low=1, example="2")
    checkpoint_every_minutes: float = option(
        5.0, "save the training state (DIR/train_state.pt, atomically) every MINUTES, and always on Ctrl-C, on "
        "SIGTERM (which then exits with status 143 once the run is saved and reported) and at the end",
        flag="--checkpoint-every", metavar="MINUTES", **_positive("5"))
    checkpoint_every_steps: int | None = option(None, "and every this many steps (tests: minutes are too coarse)",
                                                low=1, example="100", hidden=True)
    eval_every_steps: int | None = option(None, "and evaluations every this many steps (tests: a loss curve)",
                                          low=1, example="100", hidden=True)
    ema_decay: float = option(0.0, "weight averaging: evaluate and keep an exponential moving average of the "
                              "weights, DECAY per step, e.g. 0.999 (default 0: off); metrics.jsonl then also shows "
                              "the raw weights' score", flag="--ema", metavar="DECAY", low=0, high=1,
                              high_inclusive=False, example="0.999")

    default_minutes = 8.0  # class attributes a task overrides (not fields)
    default_lr = 1e-3

    def __post_init__(self):
        V.check_choice("device", self.device, DEVICES)
        V.check_choice("precision", self.precision, PRECISIONS)
        if self.minutes is not None and self.epochs is not None:
            raise ValueError("give --minutes or --epochs, not both")
        if self.minutes is None and self.epochs is None:
            self.minutes = self.default_minutes
        if self.lr is None:
            self.lr = self.default_lr
        check_ema_decay(self.ema_decay)
        for name in ("batch_size", "lr", "eval_every_minutes", "minutes", "epochs", "checkpoint_every_minutes",
                     "checkpoint_every_steps", "eval_every_steps", "threads"):
            if getattr(self, name) is not None:
                V.check_positive(name, getattr(self, name))


#: options added after runs were first saved, with the value that gives a run saved without them its behaviour
ADDED_OPTIONS = {"ema_decay": 0.0, "threads": None}

#: task options a resumed run may change: where it runs and how often it saves, never what it trains
RESUME_MAY_CHANGE = ("device", "threads", "checkpoint_every_minutes", "checkpoint_every_steps", "eval_every_steps")
