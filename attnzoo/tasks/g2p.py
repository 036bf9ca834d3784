"""The g2p task: spell a word, say its phonemes (CMU Pronouncing Dictionary).

Data, model and metric wired together:

* data: :mod:`attnzoo.data.g2p` (the ``standard`` benchmark split by default);
* model: :class:`~attnzoo.models.rnn_seq2seq.RNNSeq2Seq` (``--model rnn``),
  :class:`~attnzoo.models.transformer_seq2seq.TransformerSeq2Seq` (``--model
  transformer``) or :class:`~attnzoo.models.convs2s.ConvS2S` (``--model convs2s``)
  over letters -> ARPAbet phonemes, with ``--attention`` in its attention slot;
* metric: PER and WER as in the published G2P papers
  (:func:`attnzoo.training.metrics.g2p_scores`), test words decoded with beam search.

``train(...)`` writes a run directory: ``config.json``, ``checkpoint.pt``,
``metrics.json``, ``metrics.jsonl`` and ``report.html``.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..core import validate as V
from ..data.batching import bucketed_batches, num_batches, sorted_batches
from ..data.g2p import SPLITS, make_split
from ..data.vocab import Vocab
from ..models.decoding import decode
from ..models.factory import DEFAULT_ATTENTION, build_seq2seq, check_model, restore_seq2seq
from ..training.checkpoint import load_run
from ..training.run import (RunDirectory, Seq2SeqOptions, decode_speed, load_task_run, resolve_device,
                             run_metrics, trainer_options)
from ..training.metrics import g2p_scores
from ..training.trainer import Budget, Trainer, resolve_precision

log = logging.getLogger(__name__)

TASK = "g2p"
#: with no --minutes/--epochs: training time that keeps the whole command
#: (training, decoding 12k test words, the report) within 10 minutes on 2 cores
DEFAULT_MINUTES = 8.0
#: model sizes for the default budget (measured: see README); --set KEY=VALUE overrides
G2P_MODEL_DEFAULTS = {
    "rnn": dict(embed_dim=96, hidden_dim=192, decoder_dim=384, enc_layers=2, dec_layers=1, attention_hidden=192,
                order="luong", input_feeding=False, dropout=0.2),
    # measured (benchmarks/README.md): per epoch dim 128 and 192 learn alike, and 128 runs 1.8x faster;
    # RoPE: 25.50% test WER in 56 minutes against 26.01% with sinusoidal positions
    "transformer": dict(dim=128, num_heads=4, enc_layers=3, dec_layers=3, ffn_dim=512, dropout=0.1,
                        positions="rope", max_len=64),
    "convs2s": dict(embed_dim=128, hidden_dim=256, enc_layers=4, dec_layers=3, enc_kernel=3, dec_kernel=3,
                    dropout=0.1, max_len=128),
}
DEFAULT_LR = {"rnn": 3e-3, "transformer": 2.5e-3, "convs2s": 2e-3}


@dataclass
class G2PConfig(Seq2SeqOptions):
    """Task and training options (the model's own live in its config)."""

    split: str = "standard"  # "standard" benchmark split or a seeded "random" one
    batch_size: int = 256  # pairs per step; large batches use both cores well
    dev_eval_words: int = 1000  # dev words decoded at each periodic evaluation
    report_words: int = 12  # test words whose alignments the report shows

    default_minutes = DEFAULT_MINUTES
    default_lrs = DEFAULT_LR

    def __post_init__(self):
        V.check_choice("split", self.split, SPLITS)
        super().__post_init__()
        V.check_positive("dev_eval_words", self.dev_eval_words)


# ----------------------------------------------------------------------------- a trained model
@dataclass
class G2PModel:
    """A trained model with its vocabularies: ``pronounce(words)``."""

    model: torch.nn.Module  # RNNSeq2Seq, TransformerSeq2Seq or ConvS2S: encode() and step()
    letters: Vocab
    phonemes: Vocab
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def encode_word(self, word: str) -> list[int]:
        if not isinstance(word, str) or not word.strip():
            raise ValueError(f"word must be a non-empty string, got {word!r}")
        w = word.strip().lower()
        unknown = sorted({ch for ch in w if ch not in self.letters})
        if unknown:
            known = "".join(t for t in self.letters.tokens if len(t) == 1)
            raise ValueError(f"word {word!r} has characters {''.join(unknown)!r} that the model never saw; "
                             f"it knows {known!r}")
        return self.letters.encode(list(w))

    @torch.no_grad()
    def pronounce(self, words: list[str], beam_size: int = 5, length_penalty: float = 1.0,
                  batch_size: int = 500) -> list["Pronunciation"]:
        """Each word -> its phonemes, and the attention over its letters at every output step."""
        self.model.eval()
        sources = [self.encode_word(w) for w in words]
        out: list = [None] * len(words)
        for idx, src, lengths in sorted_batches(sources, batch_size, pad_id=self.letters.pad_id):
            hyps = decode(self.model, src.to(self.device), lengths.to(self.device),
                          max_len=2 * int(lengths.max()) + 5, beam_size=beam_size, length_penalty=length_penalty)
            for j, i in enumerate(idx):
                ids, weights = hyps.tokens[j], hyps.weights[j]
                labels = [self.phonemes.tokens[t] for t in ids] + ["</s>"] * (weights.shape[0] - len(ids))
                out[i] = Pronunciation(self.phonemes.decode(ids), weights, labels)
        return out


@dataclass
class Pronunciation:
    phonemes: list[str]  # the output, specials removed
    weights: torch.Tensor  # (T, S): attention over the letters at each of the T output steps
    labels: list[str]  # the T tokens emitted at those steps (phonemes, then </s> if it ended)


def evaluate_words(g2p: G2PModel, refs: dict[str, list], beam_size: int, length_penalty: float = 1.0) -> dict:
    words = list(refs)
    results = g2p.pronounce(words, beam_size=beam_size, length_penalty=length_penalty)
    return g2p_scores({w: r.phonemes for w, r in zip(words, results)}, refs)


# ----------------------------------------------------------------------------- training
def build_model(model: str, letters: Vocab, phonemes: Vocab, attention: str, overrides: dict | None = None):
    options = {**G2P_MODEL_DEFAULTS[model], **(overrides or {})}
    return build_seq2seq(model, len(letters), len(phonemes), attention, options, pad_id=phonemes.pad_id,
                         bos_id=phonemes.bos_id, eos_id=phonemes.eos_id)


def train(cfg: G2PConfig, out_dir: str | Path, attention: str | None = None,
          model_overrides: dict | None = None, progress: bool | None = None, resume: dict | None = None) -> dict:
    """Train, evaluate on dev and test, write the run directory; returns metrics.json's content.

    ``resume``: the training state of the run in ``out_dir`` to continue
    (:func:`~attnzoo.training.checkpoint.load_train_state`); ``cfg`` and the model must be the run's."""
    attention = attention or DEFAULT_ATTENTION[cfg.model]
    check_model(cfg.model, attention, model_overrides)  # fail before loading data
    device = resolve_device(cfg.device)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    t0 = time.monotonic()
    split = make_split(cfg.split, seed=cfg.seed)
    letters, phonemes = split.vocabs()
    pairs = [(letters.encode(list(w)), phonemes.encode(p, add_bos=True, add_eos=True)) for w, p in split.train]
    log.info("data: %s (%.1fs)", split.summary(), time.monotonic() - t0)

    model = build_model(cfg.model, letters, phonemes, attention, model_overrides).to(device)
    g2p = G2PModel(model, letters, phonemes, device)
    dev_sample = dict(list(split.dev.items())[: cfg.dev_eval_words])
    run = RunDirectory(out_dir, {
        "task": TASK, "model": cfg.model, "attention": attention, "model_overrides": model_overrides or {},
        "task_config": asdict(cfg), "model_config": model.config.to_dict(), "data": split.summary(),
        "params": model.num_parameters(),
    }, state=lambda: {"model": model.state_dict(),
                      "vocabs": {"letters": letters.to_list(), "phonemes": phonemes.to_list()}},
        resume=resume)
    out = run.path

    def evaluate(_model) -> dict:
        s = evaluate_words(g2p, dev_sample, beam_size=1)
        return {"dev_wer": s["wer"], "dev_per": s["per"]}

    def loss_fn(m, batch):
        batch = batch.to(device)
        loss = m.loss(batch.src, batch.src_lengths, batch.tgt, label_smoothing=cfg.label_smoothing)
        return loss, batch.src.shape[0]

    trainer = Trainer(model, lr=cfg.lr, budget=Budget(cfg.minutes, cfg.epochs), evaluate=evaluate,
                      primary="dev_wer", eval_every_minutes=cfg.eval_every_minutes, grad_clip=cfg.grad_clip,
                      on_record=run.on_record, progress=progress, unit="words",
                      autocast_dtype=resolve_precision(cfg.precision, device), **trainer_options(cfg, run))
    steps_per_epoch = num_batches(len(pairs), cfg.batch_size)
    result = trainer.fit(
        lambda epoch: bucketed_batches(pairs, cfg.batch_size, seed=cfg.seed, epoch=epoch, pad_id=letters.pad_id),
        steps_per_epoch, loss_fn, resume=resume)
    run.save(result.best)  # the best weights (already loaded back into the model)

    t_dec = time.monotonic()
    dev = evaluate_words(g2p, split.dev, cfg.beam_size, cfg.length_penalty)
    t_test = time.monotonic()
    test = evaluate_words(g2p, split.test, cfg.beam_size, cfg.length_penalty)
    decode_seconds = time.monotonic() - t_dec
    metrics = {
        "task": TASK, "model": cfg.model, "attention": attention, "params": model.num_parameters(),
        "train_seconds": round(result.train_seconds, 1),
        "primary": {"name": "wer", "value": test["wer"], "higher_is_better": False},
        "dev": dev, "test": test,
        "split": cfg.split, "steps": result.steps, "epochs": round(result.steps / steps_per_epoch, 2),
        "beam_size": cfg.beam_size, "decode_seconds": round(decode_seconds, 1),
        **decode_speed(test["words"], time.monotonic() - t_test, "words"), **run_metrics(result),
    }
    run.write_metrics(metrics)
    write_g2p_report(out, g2p, split.test, metrics, run.config, result.records, cfg)
    return metrics


# ----------------------------------------------------------------------------- runs on disk
def load(run_dir: str | Path, device: str = "cpu") -> G2PModel:
    def build(config, ckpt):
        letters = Vocab.from_list(ckpt["vocabs"]["letters"])
        phonemes = Vocab.from_list(ckpt["vocabs"]["phonemes"])
        model = restore_seq2seq(ckpt["config"], ckpt["model"], phonemes)
        return model, letters, phonemes

    _, (model, letters, phonemes) = load_task_run(run_dir, TASK, build)
    dev = resolve_device(device)
    model.to(dev).eval()
    return G2PModel(model, letters, phonemes, dev)


def evaluate_run(run_dir: str | Path, beam_size: int | None = None, split: str | None = None) -> dict:
    config, _ = load_run(run_dir)
    g2p = load(run_dir)
    cfg = G2PConfig.from_dict(config["task_config"])
    s = make_split(split or cfg.split, seed=cfg.seed)
    beam = beam_size or cfg.beam_size
    return {"split": s.name, "beam_size": beam, "dev": evaluate_words(g2p, s.dev, beam, cfg.length_penalty),
            "test": evaluate_words(g2p, s.test, beam, cfg.length_penalty)}


def write_g2p_report(out: Path, g2p: G2PModel, test: dict, metrics: dict, config: dict, records: list,
                     cfg: G2PConfig) -> None:
    from ..viz.curves import learning_curves_png_bytes
    from ..viz.heatmap import head_grid_png_bytes
    from ..viz.report import write_report

    words = sorted(random.Random(cfg.seed).sample(sorted(test), min(cfg.report_words, len(test))))
    results = g2p.pronounce(words, beam_size=cfg.beam_size, length_penalty=cfg.length_penalty)
    alignments = []
    for w, r in zip(words, results):
        phones = r.phonemes
        right = tuple(phones) in {tuple(ref) for ref in test[w]}
        ref = " ".join(test[w][0])
        alignments.append({
            "source": list(w), "target": r.labels, "weights": r.weights.numpy(),
            "caption": f"{w}  ->  {' '.join(phones)}   (reference {ref}) {'✓' if right else '✗'}",
        })
    figures = []
    if hasattr(g2p.model, "attention_maps") and words:  # Transformer, ConvS2S: every layer's (and head's) attention
        w, r = words[0], results[0]
        src = torch.tensor([g2p.letters.encode(list(w))], device=g2p.device)
        tgt_in = torch.tensor([[g2p.phonemes.bos_id] + g2p.phonemes.encode(r.phonemes)], device=g2p.device)
        maps = g2p.model.attention_maps(src, torch.tensor([src.shape[1]], device=g2p.device), tgt_in)
        figures.append({"png": head_grid_png_bytes(maps["cross"][:, 0].cpu(), ["<s>"] + r.phonemes, list(w)),
                        "caption": f"{w}: cross-attention of every decoder layer (rows) and head (columns)"})
    curves = learning_curves_png_bytes(records, metrics=["train_loss", "dev_wer", "dev_per"]) if records else None
    notes = [f"Split '{cfg.split}': {config['data']['test_words']} test words never seen in training; "
             f"test decoded with beam {cfg.beam_size}, dev evaluations during training greedy on "
             f"{cfg.dev_eval_words} dev words."]
    write_report(out / "report.html", title=f"g2p · {metrics['model']} · {metrics['attention']}", metrics=metrics,
                 config=config, curves_png=curves, alignments=alignments, notes=notes, figures=figures)
