"""The seq2seq task: your own source -> target pairs (a lexicon, parallel text, ...).

* data: a TSV of ``source<TAB>target`` lines (:func:`attnzoo.data.userdata.read_pairs`),
  split by distinct source with a seed: about 5% dev, 5% test (at least one each);
  the dev and test pairs are copied into the run directory (``dev.tsv``, ``test.tsv``)
  so that ``attnzoo eval DIR`` scores the same pairs without the original file;
* tokens: ``--units char`` (default), ``word`` or ``bpe``, or ``SOURCE,TARGET``
  (``char,word`` for a lexicon whose targets are space-separated symbols);
* model: the encoder-decoders of g2p and translate (``--model rnn|transformer|convs2s``,
  ``--attention NAME``), their sizes: g2p's for characters, translate's otherwise;
* metrics: ``ser`` (share of outputs matching none of the source's targets;
  ``exact_match`` = 1 - ser), ``token_error`` (token error rate: edit distance to the closest
  target over its length, in characters for ``char`` targets, words otherwise),
  and for ``word``/``bpe`` targets BLEU and chrF (sacrebleu, first target as the
  reference). The primary metric is BLEU for ``bpe`` targets, ``ser`` otherwise.

:class:`Transduction` is the task (``TASKS["seq2seq"]``); ``train(...)`` writes the
same run directory and report as g2p and translate.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core import validate as V
from ..data.batching import sorted_batches
from ..data.userdata import Pair, PairSplit, Units, parse_units, read_pairs, references, split_pairs, write_pairs
from ..models.decoding import decode
from ..models.factory import build_seq2seq, restore_seq2seq
from ..training.metrics import g2p_scores
from ..training.options import option
from .base import Task
from .encdec import EncoderDecoderTask, Seq2SeqOptions, timed_decoding
from .g2p import G2P_MODEL_DEFAULTS
from .translate import TRANSLATE_COMMAND, TRANSLATE_MODEL_DEFAULTS, alignment_map, corpus_scores

log = logging.getLogger(__name__)

DEFAULT_MINUTES = 8.0
DEFAULT_LR = {"rnn": 2e-3, "transformer": 1e-3, "convs2s": 1e-3}
MAX_RATIO = 8.0  # decoding stops after MAX_RATIO x (source length) + 10 tokens at most


@dataclass
class PairsConfig(Seq2SeqOptions):
    """Task and training options (the model's own live in its config)."""

    data: str = option("", "your own data: a TSV of source<TAB>target lines (required)", metavar="FILE")
    units: str = option("char", "char (default) | word | bpe, or SOURCE,TARGET such as char,word")
    batch_size: int = 64  # pairs per step
    vocab_size: int = 4000  # bpe: pieces per side, learned from the training pairs
    max_train_tokens: int = 200  # longer training pairs are skipped (never dev or test ones)
    dev_share: float = 0.05  # of the distinct sources, held out for dev
    test_share: float = 0.05  # and for test
    dev_eval_pairs: int = 500  # dev sources decoded at each periodic evaluation
    report_pairs: int = 8  # test pairs whose alignments the report shows

    default_minutes = DEFAULT_MINUTES
    default_lrs = DEFAULT_LR

    def __post_init__(self):
        parse_units(self.units)
        super().__post_init__()
        for name in ("vocab_size", "max_train_tokens", "dev_eval_pairs", "dev_share", "test_share"):
            V.check_positive(name, getattr(self, name))
        if self.dev_share + self.test_share >= 1:
            raise ValueError(f"dev_share + test_share must be below 1, got {self.dev_share + self.test_share:g}")

    @property
    def primary(self) -> str:
        return "bleu" if parse_units(self.units)[1] == "bpe" else "ser"


# ----------------------------------------------------------------------------- a trained model
@dataclass
class Output:
    text: str  # the output, detokenised
    tokens: list[str]  # the output tokens (target units), specials removed
    source_tokens: list[str]  # the S source tokens
    labels: list[str]  # the T emitted tokens (then </s> if it ended)
    weights: torch.Tensor  # (T, S) attention over the source tokens at each output step
    source_units: Units = field(repr=False, default=None)
    target_units: Units = field(repr=False, default=None)

    def word_alignment(self) -> tuple[torch.Tensor, list[str], list[str]]:
        """Source against output, in display units: (T', S') weights and both label lists.

        Characters and words are shown one per row/column; bpe pieces are grouped into words
        (a word's column sums its pieces', its row is their mean, so rows still sum to one)."""
        src_groups, src_labels = self.source_units.groups(self.source_tokens)
        body = [t for t in self.labels if t != "</s>"]
        tgt_groups, tgt_labels = self.target_units.groups(body)
        if "</s>" in self.labels:
            tgt_groups.append([self.labels.index("</s>")])
            tgt_labels.append("</s>")
        w = self.weights.float()
        cols = torch.stack([w[:, g].sum(-1) for g in src_groups], -1)  # (T, S')
        rows = torch.stack([cols[g].mean(0) for g in tgt_groups])  # (T', S')
        return rows, src_labels, tgt_labels


@dataclass
class Transducer:
    """A trained model with its source and target units: ``translate(texts)``."""

    model: torch.nn.Module
    source: Units
    target: Units
    max_ratio: float = 2.0  # longest target / source length seen in training
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __post_init__(self):
        self.src_vocab, self.tgt_vocab = self.source.vocab(), self.target.vocab()

    def encode_source(self, text: str) -> tuple[list[str], list[int]]:
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"source text must be a non-empty string, got {text!r}")
        tokens = self.source.split(text.strip())
        return tokens, self.src_vocab.encode(tokens)

    def _max_len(self, source_len: int) -> int:
        n = int(self.max_ratio * source_len) + 10
        limit = getattr(self.model.config, "max_len", None)  # the Transformer's and ConvS2S's positions
        return min(n, limit - 1) if limit else n

    @torch.no_grad()
    def translate(self, texts: list[str], beam_size: int = 5, length_penalty: float = 1.0,
                  batch_size: int = 64) -> list[Output]:
        """Each source text -> its output, with the attention over the source tokens at every step."""
        if isinstance(texts, str):
            texts = [texts]
        self.model.eval()
        encoded = [self.encode_source(t) for t in texts]
        out: list = [None] * len(texts)
        for idx, src, lengths in sorted_batches([ids for _, ids in encoded], batch_size,
                                                pad_id=self.src_vocab.pad_id):
            hyps = decode(self.model, src.to(self.device), lengths.to(self.device),
                          max_len=self._max_len(int(lengths.max())), beam_size=beam_size,
                          length_penalty=length_penalty)
            for j, i in enumerate(idx):
                ids, weights = hyps.tokens[j], hyps.weights[j].cpu()
                tokens = self.tgt_vocab.decode(ids)
                labels = [self.tgt_vocab.tokens[t] for t in ids] + ["</s>"] * (weights.shape[0] - len(ids))
                out[i] = Output(self.target.join(tokens), tokens, encoded[i][0], labels, weights,
                                self.source, self.target)
        return out


def evaluate_pairs(transducer: Transducer, pairs: list[Pair], beam_size: int, length_penalty: float = 1.0) -> dict:
    """ser/exact_match/token_error against the closest of each source's targets; BLEU/chrF for word and bpe targets."""
    refs = references(pairs)
    sources = list(refs)
    outputs = transducer.translate(sources, beam_size=beam_size, length_penalty=length_penalty)
    tok = transducer.target.metric_tokens
    g = g2p_scores({s: tok(o.text) for s, o in zip(sources, outputs)},
                   {s: [tok(r) for r in rs] for s, rs in refs.items()})
    scores = {"ser": g["wer"], "exact_match": 1 - g["wer"], "token_error": g["per"], "sources": len(sources)}
    if transducer.target.kind != "char":
        bleu = corpus_scores([o.text for o in outputs], [refs[s][0] for s in sources])
        scores.update(bleu=bleu["bleu"], chrf=bleu["chrf"], bleu_signature=bleu["bleu_signature"])
    return scores


# ----------------------------------------------------------------------------- the data and the model
def model_defaults(model: str, units: str) -> dict:
    """g2p's sizes when both sides are characters, translate's otherwise."""
    return dict((G2P_MODEL_DEFAULTS if parse_units(units) == ("char", "char") else TRANSLATE_MODEL_DEFAULTS)[model])


def build_model(cfg: PairsConfig, source: Units, target: Units, attention: str, longest: int,
                overrides: dict | None = None):
    options = {**model_defaults(cfg.model, cfg.units), **(overrides or {})}
    if cfg.model in ("transformer", "convs2s") and "max_len" not in (overrides or {}):
        options["max_len"] = max(64, int(longest * 1.5) + 16)  # positions for the longest pair and some
    sv, tv = source.vocab(), target.vocab()
    return build_seq2seq(cfg.model, len(sv), len(tv), attention, options, pad_id=tv.pad_id, bos_id=tv.bos_id,
                         eos_id=tv.eos_id)


@dataclass
class PairsData:
    split: PairSplit
    source: Units
    target: Units
    encoded: list[tuple[list[int], list[int]]]  # the training pairs used: (source ids, <s> target ids </s>)
    max_ratio: float  # longest target / source length among them (at most MAX_RATIO)
    longest: int  # longest side among them, in tokens (+2 on the target side)
    summary: dict  # config.json's "data"

    @classmethod
    def make(cls, cfg: PairsConfig, pairs: list[Pair]) -> PairsData:
        """Split, units learned from the training pairs, training pairs encoded (too long ones skipped)."""
        name = cfg.data or "the pairs"
        split = split_pairs(pairs, seed=cfg.seed, dev_share=cfg.dev_share, test_share=cfg.test_share, name=name)
        if split.warning:
            log.warning("%s", split.warning)
        src_kind, tgt_kind = parse_units(cfg.units)
        source = Units.learn(src_kind, [p.source for p in split.train], cfg.vocab_size)
        target = Units.learn(tgt_kind, [p.target for p in split.train], cfg.vocab_size)
        sv, tv = source.vocab(), target.vocab()
        encoded, ratio, longest = [], 1.0, 1
        for p in split.train:
            s, t = source.split(p.source), target.split(p.target)
            if 0 < len(s) <= cfg.max_train_tokens and 0 < len(t) <= cfg.max_train_tokens:
                encoded.append((sv.encode(s), tv.encode(t, add_bos=True, add_eos=True)))
                ratio, longest = max(ratio, len(t) / len(s)), max(longest, len(s), len(t) + 2)
        if not encoded:
            raise ValueError(f"no training pair of {name} has at most max_train_tokens={cfg.max_train_tokens} "
                             f"tokens on both sides with --units {cfg.units}; try coarser units (word or bpe)")
        summary = {"path": str(cfg.data) if cfg.data else None, **split.summary(), "train_pairs_used": len(encoded),
                   "units": cfg.units, "source_vocab": len(sv), "target_vocab": len(tv)}
        return cls(split, source, target, encoded, min(MAX_RATIO, ratio), longest, summary)


# ----------------------------------------------------------------------------- the task
class Transduction(EncoderDecoderTask):
    """Your own source<TAB>target pairs, in characters, words or BPE pieces; wrong outputs, token errors, BLEU."""

    name = "seq2seq"
    description = ("your own source<TAB>target pairs (--data FILE, --units char|word|bpe); wrong outputs and "
                   "token errors, BLEU for bpe targets")
    Config = PairsConfig
    unit = "pairs"
    verb = "translate"
    commands = (TRANSLATE_COMMAND,)

    def check_data(self, cfg: PairsConfig) -> None:
        """ValueError without --data; the file read (a malformed one fails here, before anything is written)."""
        if not cfg.data:
            raise ValueError("train seq2seq needs --data FILE: a UTF-8 TSV with one source<TAB>target pair per line")
        read_pairs(cfg.data)

    def check_eval_data(self, config: dict) -> None:
        """Nothing to check: a run keeps its dev and test pairs (dev.tsv, test.tsv) in its directory."""

    def load_data(self, cfg: PairsConfig) -> PairsData:
        if not cfg.data:
            self.check_data(cfg)  # the ValueError naming --data
        return PairsData.make(cfg, read_pairs(cfg.data))

    def prepare(self, cfg: PairsConfig, given) -> PairsData:
        """Pairs handed to train() (a test's, or read already) in place of reading cfg.data."""
        return given if isinstance(given, PairsData) else PairsData.make(cfg, given)

    def describe(self, data: PairsData) -> dict:
        return data.summary

    def build(self, cfg, data: PairsData, attention, overrides):
        return build_model(cfg, data.source, data.target, attention, data.longest, overrides)

    def predictor(self, model, data: PairsData, device) -> Transducer:
        return Transducer(model, data.source, data.target, data.max_ratio, device)

    def saved(self, data: PairsData) -> dict:
        return {"units": {"source": data.source.to_state(), "target": data.target.to_state()},
                "max_ratio": data.max_ratio}

    def write_files(self, path: Path, data: PairsData) -> None:
        write_pairs(path / "dev.tsv", data.split.dev)
        write_pairs(path / "test.tsv", data.split.test)

    def training(self, cfg: PairsConfig, data: PairsData, transducer: Transducer):
        sampled = set(list(references(data.split.dev))[: cfg.dev_eval_pairs])
        dev_sample = [p for p in data.split.dev if p.source in sampled]
        primary = cfg.primary

        def evaluate(_model) -> dict:
            s = evaluate_pairs(transducer, dev_sample, beam_size=1)
            return {f"dev_{primary}": s[primary], "dev_token_error": s["token_error"]}

        return self.pairs_training(cfg, data.encoded, transducer.src_vocab.pad_id, transducer.device, evaluate,
                                   f"dev_{primary}", higher_is_better=primary == "bleu")

    def final(self, cfg: PairsConfig, data: PairsData, transducer: Transducer) -> dict:
        scores = timed_decoding(lambda pairs: evaluate_pairs(transducer, pairs, cfg.beam_size, cfg.length_penalty),
                                data.split.dev, data.split.test, "sources", "sources")
        primary = cfg.primary
        return {"primary": {"name": primary, "value": scores["test"][primary], "higher_is_better": primary == "bleu"},
                "dev": scores.pop("dev"), "test": scores.pop("test"), "units": cfg.units, "beam_size": cfg.beam_size,
                **scores}

    def report(self, path, cfg, data: PairsData, transducer: Transducer, metrics, config, records) -> None:
        write_seq2seq_report(path, transducer, data.split.test, metrics, config, records, cfg)

    # ------------------------------------------------------------------ a trained run
    def restore(self, config: dict, checkpoint: dict, device) -> Transducer:
        source = Units.from_state(checkpoint["units"]["source"])
        target = Units.from_state(checkpoint["units"]["target"])
        model = restore_seq2seq(config, checkpoint["model"], target.vocab())
        return Transducer(model.to(device), source, target, float(checkpoint.get("max_ratio", 2.0)), device)

    def evaluate(self, run_dir, config, transducer: Transducer, beam_size: int | None = None, **_: Any) -> dict:
        """The run's dev and test pairs (its dev.tsv and test.tsv) decoded again."""
        cfg = self.saved_config(config)
        beam = beam_size or cfg.beam_size
        out = {"beam_size": beam, "primary": cfg.primary}
        for part in ("dev", "test"):
            out[part] = evaluate_pairs(transducer, held_out(run_dir, part), beam, cfg.length_penalty)
        return out

    def attention(self, transducer: Transducer, text: str, beam_size: int = 5, **_: Any):
        """One map, "alignment": the output (rows) against the source (columns), in display units."""
        return alignment_map(transducer.translate([text], beam_size=beam_size)[0])

    def examples(self, runs, config, count, beam):
        from .encdec import alignment_examples

        refs = references(held_out(next(iter(runs.values())).path, "test"))
        short = [s for s in refs if len(s.split()) <= 30] or list(refs)
        sources = sorted(random.Random(config["task_config"]["seed"]).sample(short, min(count, len(short))))
        cells = alignment_examples(runs, sources, [f"{s}  (reference: {refs[s][0]})" for s in sources],
                                   {s: set(refs[s]) for s in sources}, beam,
                                   lambda r, s: (*r.word_alignment(), r.text))
        return cells, ("The same test sources (the runs' test.tsv) through each mechanism's model (first seed): rows "
                       "are output tokens, columns source tokens; colour: attention weight from 0 to 1.")

    # ------------------------------------------------------------------ what the commands print
    def summary(self, m: dict) -> list[str]:
        return [Task.title(self, m) + f", units {m['units']}, beam {m['beam_size']}",
                *(f"  {part:<5} {pairs_line(m[part])}" for part in ("dev", "test"))]

    def eval_lines(self, r: dict) -> list[str]:
        return [f"{part:<5} {pairs_line(r[part])[:-1]}, beam {r['beam_size']})" for part in ("dev", "test")]


def pairs_line(s: dict) -> str:
    """One split's scores: wrong outputs, token errors (and BLEU, chrF), the number of sources."""
    bleu = f"  BLEU {s['bleu']:.2f}  chrF {s['chrf']:.2f}" if "bleu" in s else ""
    return f"wrong outputs {s['ser']:.2%}  token errors {s['token_error']:.2%}{bleu}  ({s['sources']} sources)"


def held_out(run_dir: str | Path, part: str) -> list[Pair]:
    """A run's dev or test pairs, as its directory keeps them (``dev.tsv``, ``test.tsv``)."""
    path = Path(run_dir) / f"{part}.tsv"
    if not path.is_file():
        raise ValueError(f"{path} is missing: the run directory lost its {part} pairs; copy it again from "
                         "the original run directory")
    return read_pairs(path, flag=f"{part}.tsv")


TASK = Transduction()


# ----------------------------------------------------------------------------- the module's functions
def train(cfg: PairsConfig, out_dir: str | Path, attention: str | None = None,
          model_overrides: dict | None = None, progress: bool | None = None,
          pairs: list[Pair] | None = None, resume: dict | None = None) -> dict:
    """Train, evaluate on dev and test, write the run directory; returns metrics.json's content.

    ``pairs`` replaces reading ``cfg.data`` (already read by the command line, or a test's pairs);
    ``resume``: the training state of the run in ``out_dir`` to continue."""
    return TASK.train(cfg, out_dir, attention=attention, overrides=model_overrides, progress=progress,
                      resume=resume, data=pairs)


def load(run_dir: str | Path, device: str = "cpu") -> Transducer:
    return TASK.load(run_dir, device)[1]


def evaluate_run(run_dir: str | Path, beam_size: int | None = None) -> dict:
    """The run's dev and test pairs (its dev.tsv and test.tsv) decoded again."""
    config, transducer = TASK.load(run_dir)
    return TASK.evaluate(Path(run_dir), config, transducer, beam_size=beam_size)


def write_seq2seq_report(out: Path, transducer: Transducer, test: list[Pair], metrics: dict, config: dict,
                         records: list, cfg: PairsConfig) -> None:
    from ..viz.curves import learning_curves_png_bytes
    from ..viz.heatmap import head_grid_png_bytes
    from ..viz.report import write_report

    refs = references(test)
    short = [s for s in refs if len(transducer.source.split(s)) <= 30] or list(refs)
    chosen = sorted(random.Random(cfg.seed).sample(short, min(cfg.report_pairs, len(short))))
    results = transducer.translate(chosen, beam_size=cfg.beam_size, length_penalty=cfg.length_penalty)
    tok = transducer.target.metric_tokens
    alignments = []
    for s, r in zip(chosen, results):
        weights, src_labels, tgt_labels = r.word_alignment()
        right = tok(r.text) in [tok(t) for t in refs[s]]
        alignments.append({"source": src_labels, "target": tgt_labels, "weights": weights.numpy(),
                           "legend": f"{s}  ->  {r.text}   (reference: {refs[s][0]}) {'✓' if right else '✗'}"})
    figures = []
    if hasattr(transducer.model, "attention_maps") and chosen:  # Transformer, ConvS2S: every layer's weights
        s, r = chosen[0], results[0]
        dev = transducer.device
        src_tokens, src_ids = transducer.encode_source(s)
        src = torch.tensor([src_ids], device=dev)
        tgt_in = torch.tensor([[transducer.tgt_vocab.bos_id] + transducer.tgt_vocab.encode(r.tokens)], device=dev)
        maps = transducer.model.attention_maps(src, torch.tensor([src.shape[1]], device=dev), tgt_in)
        figures.append({"png": head_grid_png_bytes(maps["cross"][:, 0].cpu(), ["<s>"] + r.tokens, src_tokens),
                        "legend": f"{s}: cross-attention of every decoder layer (rows) and head (columns)"})
    primary = metrics["primary"]["name"]
    curves = (learning_curves_png_bytes(records, metrics=["train_loss", f"dev_{primary}", "dev_token_error"])
              if records else None)
    data = config["data"]
    notes = [f"Data: {data.get('path') or 'pairs given in Python'}, split by distinct source (seed {cfg.seed}): "
             f"{data['test_sources']} test and {data['dev_sources']} dev sources never seen in training. "
             f"Units {cfg.units}; test decoded with beam {cfg.beam_size}. ser: share of outputs matching none of "
             "the source's targets; token error: edit distance to the closest target over its length"
             + (" (words)." if transducer.target.kind != "char" else " (characters).")
             + (" BLEU and chrF by sacrebleu against the first target." if "bleu" in metrics["test"] else "")]
    if data.get("warning"):
        notes.append(data["warning"] + ".")
    write_report(out / "report.html", title=f"seq2seq · {metrics['model']} · {metrics['attention']}",
                 metrics=metrics, config=config, curves_png=curves, alignments=alignments, notes=notes,
                 figures=figures)
