"""``attnzoo.load(DIR)``: a trained run directory back as a model you can call from Python.

    run = attnzoo.load("runs/g2p")            # any task's run directory
    run.model                                 # the nn.Module, in eval mode
    run.task, run.config, run.metrics         # "g2p", config.json, metrics.json
    run.pronounce(["attention"])              # g2p          -> [Pronunciation(phonemes, weights, labels)]
    run.translate(["Y dijo Dios"])            # translate    -> [Translation(text, ..., weights)]
    run.translate(["hello"])                  # seq2seq      -> [Output(text, tokens, ..., weights)]
    run.generate("ROMEO:", max_chars=200)     # lm           -> str
    run.classify(images)                      # classify     -> ["Sneaker", ...]
    run.answer(["Mary went to the office."], "Where is Mary?")   # qa -> Answer(answer, weights (K, S), sentences)
    run.caption(strips)                       # caption      -> [Caption(words, weights (T, h, w), labels)]
    run.predict(inputs)                       # the task's own verb, whichever it is

The files are read as ``attnzoo eval`` reads them (``torch.load(weights_only=True)``,
every check of :func:`~attnzoo.training.checkpoint.load_run`), so a missing,
foreign or corrupted directory raises :class:`~attnzoo.training.checkpoint.RunDirError`
with a one-line reason.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .training.checkpoint import TASK_COMMANDS, RunDirError, load_run

#: each task's predictor method (what ``Run.predict`` calls)
VERBS = {"g2p": "pronounce", "translate": "translate", "seq2seq": "translate", "lm": "generate",
         "classify": "classify", "qa": "answer", "caption": "caption"}


@dataclass
class ImageClassifier:
    """A trained image classifier (CNN or ViT) with its class names: ``classify(images)``."""

    model: nn.Module
    classes: tuple[str, ...]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) or (N, H, W) images, floats in [0, 1] -> (N, classes) probabilities."""
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a tensor of shape (N, 1, H, W), got {type(images).__name__}")
        if images.dim() == 3:
            images = images.unsqueeze(1)  # (N, 1, H, W)
        logits, _ = self.model.eval()(images.float().to(self.device))
        return logits.float().softmax(-1).cpu()

    def classify(self, images: torch.Tensor) -> list[str]:
        return [self.classes[int(i)] for i in self.probabilities(images).argmax(-1)]


@dataclass
class Run:
    """A trained run: ``model`` (eval mode), ``task``, ``config``, ``metrics`` and the task's predictor."""

    task: str
    model: nn.Module
    config: dict
    predictor: Any  # G2PModel, Translator, Transducer, LanguageModel, ImageClassifier, StoryReader or CaptionModel
    path: Path

    @property
    def metrics(self) -> dict | None:
        """metrics.json (None if training was interrupted before writing it)."""
        p = self.path / "metrics.json"
        return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None

    def predict(self, inputs, **options):
        """The task's own verb: pronounce, translate, generate, classify, answer or caption."""
        return getattr(self.predictor, VERBS[self.task])(inputs, **options)

    def __getattr__(self, name: str):
        # pronounce / translate / generate / classify and the predictor's vocabularies
        if name.startswith("_") or name == "predictor":
            raise AttributeError(name)
        try:
            return getattr(self.predictor, name)
        except AttributeError:
            raise AttributeError(f"{self.task} run has no {name!r}; it offers "
                                 f"{VERBS[self.task]}() (and .model, .config, .metrics)") from None

    def __repr__(self) -> str:
        return (f"Run(task={self.task!r}, model={self.config.get('model')!r}, "
                f"attention={self.config.get('attention')!r}, path={str(self.path)!r})")


def load(run_dir: str | os.PathLike, device: str = "cpu") -> Run:
    """The trained model of a run directory that ``attnzoo train`` wrote, ready to use (eval mode)."""
    config, _ = load_run(run_dir)
    task = config.get("task")
    if task not in TASK_COMMANDS:
        raise RunDirError(f"{run_dir}/config.json names task {task!r}, which this attnzoo does not know "
                          f"(it knows {', '.join(TASK_COMMANDS)})")
    if task == "g2p":
        from .tasks import g2p

        predictor = g2p.load(run_dir, device)
    elif task == "translate":
        from .tasks import translate

        predictor = translate.load(run_dir, device)
    elif task == "seq2seq":
        from .tasks import seq2seq

        predictor = seq2seq.load(run_dir, device)
    elif task == "lm":
        from .tasks import lm
        from .training.run import resolve_device

        model, vocab = lm.load(run_dir, device)
        predictor = lm.LanguageModel(model, vocab, resolve_device(device))
    elif task == "qa":
        from .tasks import qa
        from .training.run import resolve_device

        model, vocab, _ = qa.load(run_dir, device)
        predictor = qa.StoryReader(model, vocab, resolve_device(device))
    elif task == "caption":
        from .tasks import caption

        predictor = caption.load(run_dir, device)
    else:
        from .data.fashion_mnist import CLASSES
        from .tasks import classify
        from .training.run import resolve_device

        model = classify.load(run_dir, device)
        predictor = ImageClassifier(model, tuple(CLASSES), resolve_device(device))
    return Run(task, predictor.model.eval(), config, predictor, Path(run_dir))


__all__ = ["ImageClassifier", "Run", "load"]
