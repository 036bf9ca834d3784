"""The translate task: Spanish Bible verses into English (Reina-Valera 1909 -> King James).

* data: :mod:`attnzoo.data.bible` (Debian ``sword-text-sparv`` and
  ``sword-text-kjv``, read with ``pysword``), split by chapter;
* vocabulary: one byte-pair-encoding model per language, learned from the
  training verses only (:mod:`attnzoo.data.subword`);
* model: the same encoder-decoders as g2p (``--model rnn|transformer|convs2s``) with any
  step-wise mechanism in the RNN's attention slot (``--attention``);
* metric: corpus BLEU and chrF with ``sacrebleu`` on detokenised text, test
  verses decoded with beam search.

Verses are long (25 English words on average, up to 90), which is where
location-based and windowed mechanisms differ from content-based ones.
``train(...)`` writes the same run directory as g2p.
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
from ..data.bible import Verse, load_verses, split_by_chapter
from ..data.subword import Subword, word_text, words_of
from ..data.vocab import Vocab
from ..models.decoding import decode
from ..models.factory import DEFAULT_ATTENTION, build_seq2seq, check_model, restore_seq2seq
from ..training.checkpoint import load_run
from ..training.run import (RunDirectory, Seq2SeqOptions, decode_speed, load_task_run, resolve_device,
                             run_metrics, trainer_options)
from ..training.trainer import Budget, Trainer, resolve_precision

log = logging.getLogger(__name__)

TASK = "translate"
DEFAULT_MINUTES = 15.0
TRANSLATE_MODEL_DEFAULTS = {
    "rnn": dict(embed_dim=256, hidden_dim=256, decoder_dim=512, enc_layers=2, dec_layers=1, attention_hidden=256,
                order="luong", input_feeding=False, dropout=0.3),
    "transformer": dict(dim=256, num_heads=4, enc_layers=3, dec_layers=3, ffn_dim=1024, dropout=0.1,
                        positions="sinusoidal", max_len=512),
    "convs2s": dict(embed_dim=256, hidden_dim=256, enc_layers=6, dec_layers=4, enc_kernel=3, dec_kernel=3,
                    dropout=0.2, max_len=512),
}
DEFAULT_LR = {"rnn": 2e-3, "transformer": 7e-4, "convs2s": 1e-3}


@dataclass
class TranslateConfig(Seq2SeqOptions):
    """Task and training options (the model's own live in its config)."""

    batch_size: int = 64  # verse pairs per step
    vocab_size: int = 4000  # BPE pieces per language, learned from the training verses
    max_train_pieces: int = 100  # longer training pairs are skipped (never dev or test ones)
    dev_chapters: int = 30  # whole chapters held out for dev (seeded)
    test_chapters: int = 60  # and for test: about 1,600 verses
    dev_eval_sentences: int = 200  # dev verses translated at each periodic evaluation
    report_sentences: int = 6  # test verses whose alignments the report shows

    default_minutes = DEFAULT_MINUTES
    default_lrs = DEFAULT_LR

    def __post_init__(self):
        super().__post_init__()
        for name in ("vocab_size", "max_train_pieces", "dev_eval_sentences", "dev_chapters", "test_chapters"):
            V.check_positive(name, getattr(self, name))


# ----------------------------------------------------------------------------- a trained model
@dataclass
class Translation:
    text: str  # the English output, detokenised
    source_pieces: list[str]  # the S source pieces
    labels: list[str]  # the T emitted pieces (then </s> if it ended)
    weights: torch.Tensor  # (T, S) attention over the source pieces at each output step

    def word_alignment(self) -> tuple[torch.Tensor, list[str], list[str]]:
        """Source words against target words: (T_words, S_words) weights and both word lists.

        A target word's row is the mean of its pieces' rows; a source word's column
        is the sum of its pieces' columns (so each row still sums to one)."""
        src_groups = words_of(self.source_pieces)
        tgt_groups = words_of([p for p in self.labels if p != "</s>"])
        if "</s>" in self.labels:
            tgt_groups.append([self.labels.index("</s>")])
        w = self.weights.float()
        cols = torch.stack([w[:, g].sum(-1) for g in src_groups], -1)  # (T, S_words)
        rows = torch.stack([cols[g].mean(0) for g in tgt_groups])  # (T_words, S_words)
        tgt = [word_text(self.labels, g) if self.labels[g[0]] != "</s>" else "</s>" for g in tgt_groups]
        return rows, [word_text(self.source_pieces, g) for g in src_groups], tgt


@dataclass
class Translator:
    """A trained model with its subword models: ``translate(sentences)``."""

    model: torch.nn.Module
    source: Subword
    target: Subword
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __post_init__(self):
        self.src_vocab, self.tgt_vocab = self.source.vocab(), self.target.vocab()

    def encode_source(self, text: str) -> tuple[list[str], list[int]]:
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"sentence must be a non-empty string, got {text!r}")
        pieces = self.source.encode(text.strip())
        return pieces, self.src_vocab.encode(pieces)

    @torch.no_grad()
    def translate(self, sentences: list[str], beam_size: int = 5, length_penalty: float = 1.0,
                  batch_size: int = 64) -> list[Translation]:
        self.model.eval()
        encoded = [self.encode_source(s) for s in sentences]
        out: list = [None] * len(sentences)
        for idx, src, lengths in sorted_batches([ids for _, ids in encoded], batch_size,
                                                pad_id=self.src_vocab.pad_id):
            hyps = decode(self.model, src.to(self.device), lengths.to(self.device),
                          max_len=int(1.5 * int(lengths.max())) + 10, beam_size=beam_size,
                          length_penalty=length_penalty)
            for j, i in enumerate(idx):
                ids, weights = hyps.tokens[j], hyps.weights[j].cpu()
                pieces = self.tgt_vocab.decode(ids)
                labels = [self.tgt_vocab.tokens[t] for t in ids] + ["</s>"] * (weights.shape[0] - len(ids))
                out[i] = Translation(self.target.decode(pieces), encoded[i][0], labels, weights)
        return out


def corpus_scores(hypotheses: list[str], references: list[str]) -> dict:
    """Corpus BLEU (13a tokenisation) and chrF, as sacrebleu computes them."""
    from sacrebleu.metrics import BLEU, CHRF

    bleu, chrf = BLEU(), CHRF()
    return {"bleu": round(bleu.corpus_score(hypotheses, [references]).score, 2),
            "chrf": round(chrf.corpus_score(hypotheses, [references]).score, 2),
            "sentences": len(references), "bleu_signature": str(bleu.get_signature())}


def evaluate_verses(translator: Translator, verses: list[Verse], beam_size: int,
                    length_penalty: float = 1.0) -> dict:
    results = translator.translate([v.es for v in verses], beam_size=beam_size, length_penalty=length_penalty)
    return corpus_scores([r.text for r in results], [v.en for v in verses])


# ----------------------------------------------------------------------------- training
def learn_subwords(train: list[Verse], vocab_size: int) -> tuple[Subword, Subword]:
    """One BPE model per language, from the training verses only."""
    return (Subword.train((v.es for v in train), vocab_size),
            Subword.train((v.en for v in train), vocab_size))


def build_model(model: str, src_vocab: Vocab, tgt_vocab: Vocab, attention: str, overrides: dict | None = None):
    options = {**TRANSLATE_MODEL_DEFAULTS[model], **(overrides or {})}
    return build_seq2seq(model, len(src_vocab), len(tgt_vocab), attention, options, pad_id=tgt_vocab.pad_id,
                         bos_id=tgt_vocab.bos_id, eos_id=tgt_vocab.eos_id)


def encode_pairs(verses: list[Verse], source: Subword, target: Subword, max_pieces: int) -> list[tuple]:
    sv, tv = source.vocab(), target.vocab()
    pairs = []
    for v in verses:
        s, t = source.encode(v.es), target.encode(v.en)
        if 0 < len(s) <= max_pieces and 0 < len(t) <= max_pieces:
            pairs.append((sv.encode(s), tv.encode(t, add_bos=True, add_eos=True)))
    return pairs


def train(cfg: TranslateConfig, out_dir: str | Path, attention: str | None = None,
          model_overrides: dict | None = None, progress: bool | None = None,
          verses: list[Verse] | None = None, resume: dict | None = None) -> dict:
    """Train, evaluate on dev and test, write the run directory; returns metrics.json's content.

    ``verses`` replaces the Bible (tests pass a small corpus); ``resume``: the training state of the run
    in ``out_dir`` to continue (:func:`~attnzoo.training.checkpoint.load_train_state`)."""
    attention = attention or DEFAULT_ATTENTION[cfg.model]
    check_model(cfg.model, attention, model_overrides)  # fail before loading data
    device = resolve_device(cfg.device)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    t0 = time.monotonic()
    verses = load_verses() if verses is None else verses
    split = split_by_chapter(verses, seed=cfg.seed, dev_chapters=cfg.dev_chapters, test_chapters=cfg.test_chapters)
    source, target = learn_subwords(split.train, cfg.vocab_size)
    pairs = encode_pairs(split.train, source, target, cfg.max_train_pieces)
    summary = {**split.summary(), "train_pairs_used": len(pairs), "source_pieces": len(source.vocab()),
               "target_pieces": len(target.vocab())}
    log.info("data: %s (%.1fs)", summary, time.monotonic() - t0)

    model = build_model(cfg.model, source.vocab(), target.vocab(), attention, model_overrides).to(device)
    translator = Translator(model, source, target, device)
    dev_sample = split.dev[: cfg.dev_eval_sentences]
    run = RunDirectory(out_dir, {
        "task": TASK, "model": cfg.model, "attention": attention, "model_overrides": model_overrides or {},
        "task_config": asdict(cfg), "model_config": model.config.to_dict(), "data": summary,
        "params": model.num_parameters(),
    }, state=lambda: {"model": model.state_dict(),
                      "subwords": {"source": source.to_str(), "target": target.to_str()}},
        resume=resume)

    def evaluate(_model) -> dict:
        s = evaluate_verses(translator, dev_sample, beam_size=1)
        return {"dev_bleu": s["bleu"], "dev_chrf": s["chrf"]}

    def loss_fn(m, batch):
        batch = batch.to(device)
        return m.loss(batch.src, batch.src_lengths, batch.tgt, label_smoothing=cfg.label_smoothing), \
            batch.src.shape[0]

    trainer = Trainer(model, lr=cfg.lr, budget=Budget(cfg.minutes, cfg.epochs), evaluate=evaluate,
                      primary="dev_bleu", higher_is_better=True, eval_every_minutes=cfg.eval_every_minutes,
                      grad_clip=cfg.grad_clip, on_record=run.on_record, progress=progress, unit="verses",
                      autocast_dtype=resolve_precision(cfg.precision, device), **trainer_options(cfg, run))
    steps_per_epoch = num_batches(len(pairs), cfg.batch_size)
    result = trainer.fit(
        lambda epoch: bucketed_batches(pairs, cfg.batch_size, seed=cfg.seed, epoch=epoch,
                                       pad_id=translator.src_vocab.pad_id),
        steps_per_epoch, loss_fn, resume=resume)
    run.save(result.best)

    t_dec = time.monotonic()
    dev = evaluate_verses(translator, split.dev, cfg.beam_size, cfg.length_penalty)
    t_test = time.monotonic()
    test = evaluate_verses(translator, split.test, cfg.beam_size, cfg.length_penalty)
    metrics = {
        "task": TASK, "model": cfg.model, "attention": attention, "params": model.num_parameters(),
        "train_seconds": round(result.train_seconds, 1),
        "primary": {"name": "bleu", "value": test["bleu"], "higher_is_better": True},
        "dev": dev, "test": test, "steps": result.steps, "epochs": round(result.steps / steps_per_epoch, 2),
        "beam_size": cfg.beam_size, "decode_seconds": round(time.monotonic() - t_dec, 1),
        **decode_speed(test["sentences"], time.monotonic() - t_test, "verses"), **run_metrics(result),
    }
    run.write_metrics(metrics)
    write_translate_report(run.path, translator, split.test, metrics, run.config, result.records, cfg)
    return metrics


# ----------------------------------------------------------------------------- runs on disk
def load(run_dir: str | Path, device: str = "cpu") -> Translator:
    def build(config, ckpt):
        source = Subword.from_str(ckpt["subwords"]["source"])
        target = Subword.from_str(ckpt["subwords"]["target"])
        model = restore_seq2seq(config, ckpt["model"], target.vocab())
        return model, source, target

    _, (model, source, target) = load_task_run(run_dir, TASK, build)
    dev = resolve_device(device)
    model.to(dev).eval()
    return Translator(model, source, target, dev)


def evaluate_run(run_dir: str | Path, beam_size: int | None = None) -> dict:
    config, _ = load_run(run_dir)
    translator = load(run_dir)
    cfg = TranslateConfig.from_dict(config["task_config"])
    split = split_by_chapter(load_verses(), seed=cfg.seed, dev_chapters=cfg.dev_chapters,
                             test_chapters=cfg.test_chapters)
    beam = beam_size or cfg.beam_size
    return {"beam_size": beam, "dev": evaluate_verses(translator, split.dev, beam, cfg.length_penalty),
            "test": evaluate_verses(translator, split.test, beam, cfg.length_penalty)}


def write_translate_report(out: Path, translator: Translator, test: list[Verse], metrics: dict, config: dict,
                           records: list, cfg: TranslateConfig) -> None:
    from ..viz.curves import learning_curves_png_bytes
    from ..viz.report import write_report

    rng = random.Random(cfg.seed)
    short = [v for v in test if len(v.es.split()) <= 30] or test
    chosen = sorted(rng.sample(range(len(short)), min(cfg.report_sentences, len(short))))
    verses = [short[i] for i in chosen]
    results = translator.translate([v.es for v in verses], beam_size=cfg.beam_size,
                                   length_penalty=cfg.length_penalty)
    alignments = []
    for v, r in zip(verses, results):
        weights, src_words, tgt_words = r.word_alignment()
        alignments.append({"source": src_words, "target": tgt_words, "weights": weights.numpy(),
                           "caption": f"{v.book} {v.chapter}:{v.verse}  {v.es}  ->  {r.text}   "
                                      f"(reference: {v.en})"})
    curves = learning_curves_png_bytes(records, metrics=["train_loss", "dev_bleu", "dev_chrf"]) if records else None
    data = config["data"]
    notes = [f"Split by chapter: {data['test_chapters']} test chapters ({data['test_pairs']} verses) and "
             f"{data['dev_chapters']} dev chapters never seen in training. Test decoded with beam "
             f"{cfg.beam_size}; BLEU and chrF by sacrebleu on detokenised text. Alignments: source words "
             "(columns) against output words (rows); a word's weight sums its subword pieces'."]
    write_report(out / "report.html", title=f"translate · {metrics['model']} · {metrics['attention']}",
                 metrics=metrics, config=config, curves_png=curves, alignments=alignments, notes=notes)
