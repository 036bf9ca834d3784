"""What the encoder-decoder tasks share (g2p, translate, seq2seq): their options (label smoothing, clipping, the
beam), the architecture choice of ``--model rnn|transformer|convs2s`` (:mod:`attnzoo.models.factory`), the loss
over padded pairs and timed decoding."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..core import validate as V
from ..data.batching import Batch, bucketed_batches, num_batches
from ..models.factory import DEFAULT_ATTENTION, MODELS, check_model
from ..training.options import TrainOptions, option
from ..training.run import decode_speed
from .base import Task, Training


@dataclass
class Seq2SeqOptions(TrainOptions):
    """What every encoder-decoder task shares (g2p, translate, seq2seq)."""

    label_smoothing: float = 0.1  # regularises the output softmax
    grad_clip: float = 1.0  # max gradient norm
    beam_size: int = option(5, "beam size for the test items (1 = greedy)", flag="--beam", low=1, example="5")
    length_penalty: float = 1.0  # beam: score / length ** penalty
    model: str = "rnn"  # architecture: rnn | transformer | convs2s

    default_lrs = {"rnn": 1e-3, "transformer": 1e-3, "convs2s": 1e-3}  # peak lr per architecture (a task overrides)

    def __post_init__(self):
        V.check_choice("model", self.model, MODELS)
        if self.lr is None:
            self.lr = self.default_lrs[self.model]
        super().__post_init__()
        V.check_positive("beam_size", self.beam_size)


def seq2seq_loss(label_smoothing: float, device: torch.device) -> Callable[[nn.Module, Batch], tuple[Tensor, int]]:
    """(model, padded batch) -> (label-smoothed cross-entropy of the targets, pairs in the batch)."""
    def loss(model: nn.Module, batch: Batch) -> tuple[Tensor, int]:
        batch = batch.to(device)
        return model.loss(batch.src, batch.src_lengths, batch.tgt, label_smoothing=label_smoothing), batch.src.shape[0]

    return loss


class EncoderDecoderTask(Task):
    """A task whose model is an encoder-decoder of :mod:`attnzoo.models.factory` (``--model rnn | transformer |
    convs2s``) trained on (source ids, target ids) pairs; its runs decode, show alignments and compare them."""

    models: ClassVar[dict[str, str]] = dict(DEFAULT_ATTENTION)
    shows = True

    def check_model(self, model: str, attention: str, overrides: dict | None) -> None:
        check_model(model, attention, overrides)

    def title(self, m: dict) -> str:
        beam = f", beam {m['beam_size']}" if "beam_size" in m else ""  # a run's final figures name its beam
        return super().title(m) + beam

    def model_config(self, model: str) -> type:
        return MODELS[model][1]

    def pairs_training(self, cfg: Seq2SeqOptions, pairs: list[tuple], pad_id: int, device: torch.device,
                       evaluate: Callable[[nn.Module], dict], primary: str, higher_is_better: bool = False) -> Training:
        """Training on encoded pairs in length buckets, reshuffled each epoch from the seed."""
        return Training(
            batches=lambda epoch: bucketed_batches(pairs, cfg.batch_size, seed=cfg.seed, epoch=epoch, pad_id=pad_id),
            steps_per_epoch=num_batches(len(pairs), cfg.batch_size), loss=seq2seq_loss(cfg.label_smoothing, device),
            evaluate=evaluate, primary=primary, higher_is_better=higher_is_better, grad_clip=cfg.grad_clip)


def timed_decoding(score: Callable[[Any], dict], dev: Any, test: Any, count: str, unit: str) -> dict:
    """dev and test scored by ``score`` (which decodes), with metrics.json's decoding time and speed
    (``count``: the key of the test scores that counts the items decoded)."""
    t_dev = time.monotonic()
    dev_scores = score(dev)
    t_test = time.monotonic()
    test_scores = score(test)
    done = time.monotonic()
    return {"dev": dev_scores, "test": test_scores, "decode_seconds": round(done - t_dev, 1),
            **decode_speed(test_scores[count], done - t_test, unit)}


def alignment_examples(runs: dict[str, Any], inputs: list[str], captions: list[str], right: dict[str, set],
                       beam: int, align: Callable[[Any, str], tuple]) -> list[dict]:
    """The same inputs decoded by each run (``{name: Run}``), as compare.html's cells: ``align(output, input) ->
    (weights (T, S), source labels, target labels, text)`` turns an output into its heatmap; ``right[input]``
    holds the outputs scored as right (✓/✗; inputs not in it get no mark)."""
    from ..viz.heatmap import alignment_png_bytes

    examples = [{"legend": c, "cells": {}} for c in captions]
    for name, run in runs.items():
        for item, source, output in zip(examples, inputs, run.predict(inputs, beam_size=beam)):
            weights, src, tgt, text = align(output, source)
            mark = "" if source not in right else " ✓" if text in right[source] else " ✗"
            item["cells"][name] = {"png": alignment_png_bytes(weights, src, tgt), "legend": text + mark}
    return examples
