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
:class:`Translate` is the task (``TASKS["translate"]``); ``train(...)`` writes
the same run directory as g2p.
"""

from __future__ import annotations

import importlib.util
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core import validate as V
from ..data import MissingDataError
from ..data.batching import sorted_batches
from ..data.bible import BibleSplit, Verse, load_verses, split_by_chapter
from ..data.subword import Subword, word_text, words_of
from ..data.vocab import Vocab
from ..models.decoding import decode
from ..models.factory import build_seq2seq, restore_seq2seq
from .base import BEAM, Command, Map
from .encdec import EncoderDecoderTask, Seq2SeqOptions, timed_decoding

log = logging.getLogger(__name__)

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


# ----------------------------------------------------------------------------- the data
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


def verse_split(cfg: TranslateConfig, verses: list[Verse] | None = None) -> BibleSplit:
    """The seeded split by chapter of ``verses`` (default: the Bibles)."""
    return split_by_chapter(load_verses() if verses is None else verses, seed=cfg.seed,
                            dev_chapters=cfg.dev_chapters, test_chapters=cfg.test_chapters)


@dataclass
class TranslateData:
    split: BibleSplit  # train, dev and test verses, split by chapter
    source: Subword
    target: Subword
    pairs: list[tuple[list[int], list[int]]]  # the training verses used, encoded: (source, <s> target </s>)

    @classmethod
    def make(cls, cfg: TranslateConfig, verses: list[Verse] | None = None) -> TranslateData:
        split = verse_split(cfg, verses)
        source, target = learn_subwords(split.train, cfg.vocab_size)
        return cls(split, source, target, encode_pairs(split.train, source, target, cfg.max_train_pieces))


def short_verses(test: list[Verse], count: int, seed: int) -> list[Verse]:
    """``count`` test verses of at most 30 Spanish words, drawn with ``seed`` (the report's and compare's)."""
    short = [v for v in test if len(v.es.split()) <= 30] or test
    return [short[i] for i in sorted(random.Random(seed).sample(range(len(short)), min(count, len(short))))]


# ----------------------------------------------------------------------------- what translate and seq2seq share
def alignment_map(output: Any) -> dict[str, Map]:
    """A decoded output (:class:`Translation`, seq2seq's ``Output``) as its one named map: output words (rows)
    against source words (columns), titled with the output text."""
    weights, source, target = output.word_alignment()
    return {"alignment": Map(weights, target, source, output.text)}


def _translate_arguments(parser) -> None:
    parser.add_argument("sentences", nargs="+")
    parser.add_argument("--beam", type=int, default=5)


def _translate(run, args) -> list[str]:
    return [r.text for r in run.translate(args.sentences, beam_size=args.beam)]


#: `attnzoo translate DIR SENTENCE... [--beam 5]`: one output per line (translate and seq2seq runs)
TRANSLATE_COMMAND = Command("translate", "translate Spanish sentences with a trained translate run, or any source "
                            "text with a seq2seq run", _translate_arguments, _translate, {"beam": BEAM})


# ----------------------------------------------------------------------------- the task
class Translate(EncoderDecoderTask):
    """Spanish -> English Bible verses: subword pieces in and out; BLEU and chrF."""

    name = "translate"
    description = "Spanish -> English Bible verses (Debian sword-text-sparv, sword-text-kjv); BLEU and chrF"
    Config = TranslateConfig
    unit = "verses"
    verb = "translate"
    commands = (TRANSLATE_COMMAND,)

    def check_data(self, cfg) -> None:
        from ..data import bible

        if not (bible.cache_dir() / bible.CACHE_NAME).is_file():
            if importlib.util.find_spec("pysword") is None:
                raise MissingDataError(f"the translate task reads the Bibles with pysword: pip install pysword "
                                       f"(and {bible.INSTALL_HINT})")
            if not (bible.sword_path() / "mods.d").is_dir():
                raise MissingDataError(f"no SWORD modules in {bible.sword_path()}: {bible.INSTALL_HINT}")

    def load_data(self, cfg: TranslateConfig) -> TranslateData:
        return TranslateData.make(cfg)

    def prepare(self, cfg: TranslateConfig, given) -> TranslateData:
        """Verses handed to train() (tests pass a small corpus) in place of the Bible."""
        return given if isinstance(given, TranslateData) else TranslateData.make(cfg, given)

    def describe(self, data: TranslateData) -> dict:
        return {**data.split.summary(), "train_pairs_used": len(data.pairs),
                "source_pieces": len(data.source.vocab()), "target_pieces": len(data.target.vocab())}

    def build(self, cfg, data: TranslateData, attention, overrides):
        return build_model(cfg.model, data.source.vocab(), data.target.vocab(), attention, overrides)

    def predictor(self, model, data: TranslateData, device) -> Translator:
        return Translator(model, data.source, data.target, device)

    def saved(self, data: TranslateData) -> dict:
        return {"subwords": {"source": data.source.to_str(), "target": data.target.to_str()}}

    def training(self, cfg: TranslateConfig, data: TranslateData, translator: Translator):
        dev_sample = data.split.dev[: cfg.dev_eval_sentences]

        def evaluate(_model) -> dict:
            s = evaluate_verses(translator, dev_sample, beam_size=1)
            return {"dev_bleu": s["bleu"], "dev_chrf": s["chrf"]}

        return self.pairs_training(cfg, data.pairs, translator.src_vocab.pad_id, translator.device, evaluate,
                                   "dev_bleu", higher_is_better=True)

    def final(self, cfg: TranslateConfig, data: TranslateData, translator: Translator) -> dict:
        scores = timed_decoding(lambda verses: evaluate_verses(translator, verses, cfg.beam_size, cfg.length_penalty),
                                data.split.dev, data.split.test, "sentences", "verses")
        return {"primary": {"name": "bleu", "value": scores["test"]["bleu"], "higher_is_better": True},
                "dev": scores.pop("dev"), "test": scores.pop("test"), "beam_size": cfg.beam_size, **scores}

    def report(self, path, cfg, data: TranslateData, translator: Translator, metrics, config, records) -> None:
        write_translate_report(path, translator, data.split.test, metrics, config, records, cfg)

    # ------------------------------------------------------------------ a trained run
    def restore(self, config: dict, checkpoint: dict, device) -> Translator:
        source = Subword.from_str(checkpoint["subwords"]["source"])
        target = Subword.from_str(checkpoint["subwords"]["target"])
        model = restore_seq2seq(config, checkpoint["model"], target.vocab())
        return Translator(model.to(device), source, target, device)

    def evaluate(self, run_dir, config, translator: Translator, beam_size: int | None = None, **_: Any) -> dict:
        cfg = self.saved_config(config)
        split = verse_split(cfg)
        beam = beam_size or cfg.beam_size
        return {"beam_size": beam, "dev": evaluate_verses(translator, split.dev, beam, cfg.length_penalty),
                "test": evaluate_verses(translator, split.test, beam, cfg.length_penalty)}

    def attention(self, translator: Translator, sentence: str, beam_size: int = 5, **_: Any):
        """One map, "alignment": the output words (rows) against the source words (columns)."""
        return alignment_map(translator.translate([sentence], beam_size=beam_size)[0])

    def examples(self, runs, config, count, beam):
        from .encdec import alignment_examples

        saved = config["task_config"]
        verses = short_verses(verse_split(self.saved_config(config)).test, count, saved["seed"])
        cells = alignment_examples(runs, [v.es for v in verses],
                                   [f"{v.book} {v.chapter}:{v.verse}  {v.es}  (reference: {v.en})" for v in verses],
                                   {}, beam, lambda r, s: (*r.word_alignment(), r.text))
        return cells, ("The same test verses through each mechanism's model (first seed): rows are output words, "
                       "columns source words (a word's weight sums its subword pieces').")

    # ------------------------------------------------------------------ what the commands print
    def summary(self, m: dict) -> list[str]:
        t, d = m["test"], m["dev"]
        return [self.title(m),
                f"  dev   BLEU {d['bleu']:.2f}  chrF {d['chrf']:.2f}  ({d['sentences']} verses)",
                f"  test  BLEU {t['bleu']:.2f}  chrF {t['chrf']:.2f}  ({t['sentences']} verses)"]

    def eval_lines(self, r: dict) -> list[str]:
        return [f"{part:<5} BLEU {r[part]['bleu']:.2f}  chrF {r[part]['chrf']:.2f}  "
                f"({r[part]['sentences']} verses, beam {r['beam_size']})" for part in ("dev", "test")]


TASK = Translate()


# ----------------------------------------------------------------------------- the module's functions
def train(cfg: TranslateConfig, out_dir: str | Path, attention: str | None = None,
          model_overrides: dict | None = None, progress: bool | None = None,
          verses: list[Verse] | None = None, resume: dict | None = None) -> dict:
    """Train, evaluate on dev and test, write the run directory; returns metrics.json's content.

    ``verses`` replaces the Bible (tests pass a small corpus); ``resume``: the training state of the run
    in ``out_dir`` to continue (:func:`~attnzoo.training.checkpoint.load_train_state`)."""
    return TASK.train(cfg, out_dir, attention=attention, overrides=model_overrides, progress=progress,
                      resume=resume, data=verses)


def load(run_dir: str | Path, device: str = "cpu") -> Translator:
    return TASK.load(run_dir, device)[1]


def evaluate_run(run_dir: str | Path, beam_size: int | None = None) -> dict:
    config, translator = TASK.load(run_dir)
    return TASK.evaluate(Path(run_dir), config, translator, beam_size=beam_size)


def write_translate_report(out: Path, translator: Translator, test: list[Verse], metrics: dict, config: dict,
                           records: list, cfg: TranslateConfig) -> None:
    from ..viz.curves import learning_curves_png_bytes
    from ..viz.report import write_report

    verses = short_verses(test, cfg.report_sentences, cfg.seed)
    results = translator.translate([v.es for v in verses], beam_size=cfg.beam_size,
                                   length_penalty=cfg.length_penalty)
    alignments = []
    for v, r in zip(verses, results):
        weights, src_words, tgt_words = r.word_alignment()
        alignments.append({"source": src_words, "target": tgt_words, "weights": weights.numpy(),
                           "legend": f"{v.book} {v.chapter}:{v.verse}  {v.es}  ->  {r.text}   "
                                      f"(reference: {v.en})"})
    curves = learning_curves_png_bytes(records, metrics=["train_loss", "dev_bleu", "dev_chrf"]) if records else None
    data = config["data"]
    notes = [f"Split by chapter: {data['test_chapters']} test chapters ({data['test_pairs']} verses) and "
             f"{data['dev_chapters']} dev chapters never seen in training. Test decoded with beam "
             f"{cfg.beam_size}; BLEU and chrF by sacrebleu on detokenised text. Alignments: source words "
             "(columns) against output words (rows); a word's weight sums its subword pieces'."]
    write_report(out / "report.html", title=f"translate · {metrics['model']} · {metrics['attention']}",
                 metrics=metrics, config=config, curves_png=curves, alignments=alignments, notes=notes)
