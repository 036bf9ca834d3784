"""The classify task: Fashion-MNIST clothing images into 10 classes.

* data: :mod:`attnzoo.data.fashion_mnist` (Debian's ``dataset-fashion-mnist``;
  60k training images less a seeded 5k dev slice, the official 10k test images);
* model: ``--model vit`` (:class:`~attnzoo.models.vit.ViT`, ``--attention mha|gqa|mqa``) or
  ``--model cnn`` (:class:`~attnzoo.models.cnn.CNN`, a small CNN with ``--attention
  none|se|cbam|nonlocal`` after each stage);
* metric: test accuracy.

:class:`Classification` is the task (``TASKS["classify"]``); a trained run's
:class:`ImageClassifier` classifies images. The report shows, for a few test
images, what the model attends to: the ViT's class token over the patches
(every layer and head); the CNN's spatial gates (CBAM), channel gates
(squeeze-excitation, CBAM) or non-local attention.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..core import validate as V
from ..data import fashion_mnist
from ..data.fashion_mnist import CLASSES, ImageSplit, load_split
from ..models.cnn import BLOCKS, CNN, CNNConfig, resolve_block
from ..models.options import check_options, kv_heads_for
from ..models.vit import ViT, ViTConfig
from ..training.options import TrainOptions
from .base import Map, Task, Training

MODELS = ("vit", "cnn")
# the cnn: 92.4-92.8% test accuracy in 5 minutes on 2 CPU cores, the vit 79.6% (benchmarks/results/classify-5min)
DEFAULT_MODEL = "cnn"
ATTENTION = ("mha", "gqa", "mqa")  # the vit's slot
CNN_ATTENTION = tuple(BLOCKS)  # the cnn's block after each stage
# se: within 0.4 points of no block at 5 minutes (92.39% vs 92.80%), and its report shows what it attends to
DEFAULT_ATTENTION = {"vit": "mha", "cnn": "se"}
CONFIGS = {"vit": ViTConfig, "cnn": CNNConfig}
DEFAULT_MINUTES = 8.0
# patch 7 (16 patches): 3x the steps of patch 4 per minute on a CPU, and the better model within 30 minutes
VIT_DEFAULTS = dict(patch_size=7, dim=128, num_heads=4, layers=6, dropout=0.1)
CNN_LR = 2e-3  # the cnn's peak learning rate (BatchNorm lets it train faster than the vit's 1e-3)


@dataclass
class ClassifyConfig(TrainOptions):
    batch_size: int = 128  # images per step
    model: str = DEFAULT_MODEL  # vit | cnn
    augment: bool = True  # random shifts of up to 2 pixels and horizontal flips

    default_minutes = DEFAULT_MINUTES

    def __post_init__(self):
        V.check_choice("model", self.model, MODELS)
        if self.lr is None and self.model == "cnn":
            self.lr = CNN_LR
        super().__post_init__()


def model_for(attention: str | None) -> str:
    """The model whose slot takes ``attention`` (the two slots share no name); the default model for None."""
    if attention is None:
        return DEFAULT_MODEL
    if attention in ATTENTION:
        return "vit"
    if attention in CNN_ATTENTION:
        return "cnn"
    close = difflib.get_close_matches(str(attention), CNN_ATTENTION + ATTENTION, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown attention {attention!r} for classify{hint} (the cnn's block after each stage: "
                     f"{', '.join(CNN_ATTENTION)}; the vit's slot: {', '.join(ATTENTION)})")


def check_model(attention: str, options: dict | None, model: str | None = None) -> None:
    """Fail early (before any data loads) on an unknown model, attention or --set option."""
    model = model or model_for(attention)
    V.check_choice("model", model, MODELS)
    if model == "vit":
        V.check_choice("attention (the vit's slot)", attention, ATTENTION)
        check_options("vit", options, ViTConfig, {"image_size", "channels", "classes"})
    else:
        resolve_block(attention)  # an unknown name fails here
        check_options("cnn", options, CNNConfig, {"image_size", "channels", "classes", "attention"})


def build_model(attention: str, overrides: dict | None, model: str | None = None) -> nn.Module:
    """``model`` None: the one whose slot takes ``attention`` (mha/gqa/mqa: vit; none/se/cbam/...: cnn)."""
    model = model or model_for(attention)
    check_model(attention, overrides, model)
    if model == "cnn":
        return CNN(CNNConfig(image_size=28, channels=1, classes=len(CLASSES), attention=attention,
                             **(overrides or {})))
    options = kv_heads_for(attention, {**VIT_DEFAULTS, **(overrides or {})}, VIT_DEFAULTS["num_heads"])
    return ViT(ViTConfig(image_size=28, channels=1, classes=len(CLASSES), **options))


# ----------------------------------------------------------------------------- a trained model
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


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random shifts of up to 2 pixels (zero padding) and horizontal flips, per image."""
    B = x.shape[0]
    padded = F.pad(x, (2, 2, 2, 2))  # (B, 1, 32, 32)
    dx, dy = torch.randint(0, 5, (2, B), generator=g)
    rows = torch.arange(28)[None, :] + dy[:, None]  # (B, 28)
    cols = torch.arange(28)[None, :] + dx[:, None]  # (B, 28)
    out = padded[:, 0][torch.arange(B)[:, None, None], rows[:, :, None], cols[:, None, :]].unsqueeze(1)  # (B,1,28,28)
    flip = torch.rand(B, generator=g) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, device, batch_size: int = 500) -> float:
    model.eval()
    right = 0
    for i in range(0, len(images), batch_size):
        logits, _ = model(images[i: i + batch_size].to(device))
        right += int((logits.argmax(-1).cpu() == labels[i: i + batch_size]).sum())
    return right / max(len(images), 1)


# ----------------------------------------------------------------------------- the task
class Classification(Task):
    """Fashion-MNIST: a small CNN with an attention block, or a ViT; test accuracy."""

    name = "classify"
    description = ("Fashion-MNIST clothing images (Debian dataset-fashion-mnist): a small CNN with an attention block "
                   "(default) or a ViT; accuracy")
    Config = ClassifyConfig
    models: ClassVar[dict[str, str]] = {"cnn": DEFAULT_ATTENTION["cnn"], "vit": DEFAULT_ATTENTION["vit"]}
    unit = "images"
    verb = "classify"

    # ------------------------------------------------------------------ choosing, before any data loads
    def choose(self, model: str | None, attention: str | None) -> tuple[str, str]:
        """No --model: the one whose slot takes --attention (mha: the vit; se, cbam, ...: the cnn)."""
        model = model or model_for(attention)
        V.check_choice("model (classify: vit | cnn)", model, MODELS)
        return model, attention or DEFAULT_ATTENTION[model]

    def check_model(self, model: str, attention: str, overrides: dict | None) -> None:
        check_model(attention, overrides, model)

    def model_config(self, model: str) -> type:
        return CONFIGS[model]

    def check_data(self, cfg: ClassifyConfig) -> None:
        fashion_mnist.find_dir()  # MissingDataError: apt-get install dataset-fashion-mnist

    # ------------------------------------------------------------------ the parts of training
    def load_data(self, cfg: ClassifyConfig) -> ImageSplit:
        return load_split(seed=cfg.seed)

    def describe(self, data: ImageSplit) -> dict:
        return {"train_images": len(data.train_labels), "dev_images": len(data.dev_labels),
                "test_images": len(data.test_labels)}

    def build(self, cfg: ClassifyConfig, data: ImageSplit, attention, overrides) -> nn.Module:
        return build_model(attention, overrides, cfg.model)

    def predictor(self, model, data: ImageSplit, device) -> ImageClassifier:
        return ImageClassifier(model, tuple(CLASSES), device)

    def training(self, cfg: ClassifyConfig, data: ImageSplit, clf: ImageClassifier) -> Training:
        n, device = len(data.train_labels), clf.device
        steps_per_epoch = max(1, n // cfg.batch_size)

        def batches(epoch):
            g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
            order = torch.randperm(n, generator=g)
            for i in range(steps_per_epoch):
                idx = order[i * cfg.batch_size: (i + 1) * cfg.batch_size]
                x = data.train_images[idx]
                yield (augment(x, g) if cfg.augment else x), data.train_labels[idx]

        def loss(m, batch):
            x, y = batch[0].to(device), batch[1].to(device)
            logits, _ = m(x)
            return F.cross_entropy(logits.float(), y, label_smoothing=0.1), len(y)

        return Training(batches=batches, steps_per_epoch=steps_per_epoch, loss=loss, evaluate=lambda m: {
            "dev_accuracy": accuracy(m, data.dev_images, data.dev_labels, device)}, primary="dev_accuracy",
            higher_is_better=True, weight_decay=0.05)

    def final(self, cfg: ClassifyConfig, data: ImageSplit, clf: ImageClassifier) -> dict:
        dev = accuracy(clf.model, data.dev_images, data.dev_labels, clf.device)
        test = accuracy(clf.model, data.test_images, data.test_labels, clf.device)
        return {"primary": {"name": "accuracy", "value": test, "higher_is_better": True},
                "dev": {"accuracy": dev, "images": len(data.dev_labels)},
                "test": {"accuracy": test, "images": len(data.test_labels)}}

    def report(self, path, cfg, data: ImageSplit, clf: ImageClassifier, metrics, config, records) -> None:
        write_classify_report(path, clf.model, data, metrics, config, records, clf.device)

    # ------------------------------------------------------------------ a trained run
    def restore(self, config: dict, checkpoint: dict, device) -> ImageClassifier:
        kind = checkpoint["config"].get("model", "vit")
        V.check_choice("model", kind, MODELS)
        model = (CNN if kind == "cnn" else ViT)(CONFIGS[kind].from_dict(checkpoint["config"]["model_config"]))
        model.load_state_dict(checkpoint["model"])
        return ImageClassifier(model.to(device), tuple(CLASSES), device)

    def evaluate(self, run_dir, config, clf: ImageClassifier, **_: Any) -> dict:
        data = load_split(seed=config["task_config"]["seed"])
        return {part: {"accuracy": accuracy(clf.model, getattr(data, f"{part}_images"),
                                            getattr(data, f"{part}_labels"), clf.device),
                       "images": len(getattr(data, f"{part}_labels"))} for part in ("dev", "test")}

    def attention(self, clf: ImageClassifier, image: torch.Tensor, **_: Any) -> dict[str, Map]:
        """The maps of one (1, H, W) or (H, W) image in [0, 1]: the vit's class token over the patches (the last
        layer's heads averaged, then each layer's); the cnn's spatial maps (last stage first), then its channel
        gates."""
        if not isinstance(image, torch.Tensor) or image.dim() not in (2, 3) or (image.dim() == 3 and len(image) != 1):
            raise ValueError("classify draws the attention of one image: a tensor of shape (1, H, W) or (H, W), got "
                             + (str(tuple(image.shape)) if isinstance(image, torch.Tensor) else type(image).__name__))
        with torch.no_grad():
            logits, weights = clf.model.eval()(image.reshape(1, 1, *image.shape[-2:]).float().to(clf.device),
                                               need_weights=True)
        predicted = f"predicted {clf.classes[int(logits[0].argmax())]}"
        if isinstance(clf.model, CNN):
            return cnn_maps(clf.model, weights, predicted)
        grids = vit_class_maps(clf.model, weights)[:, 0]  # (layers, side, side)
        labels = [str(i) for i in range(grids.shape[-1])]
        return {"class token": Map(grids[-1], labels, labels, f"last layer, heads averaged ({predicted})"),
                **{f"layer {i}": Map(g, labels, labels, f"layer {i}, heads averaged") for i, g in enumerate(grids)}}

    def show_name(self, image: Any) -> str:
        return "attention.png"

    def examples(self, runs, config, count, beam):
        from ..viz.heatmap import class_attention_png_bytes
        from ..viz.maps import image_maps_png_bytes

        data = load_split(seed=config["task_config"]["seed"])
        images, labels = data.test_images[:count], data.test_labels[:count]
        examples = [{"legend": f"test image {i}: {CLASSES[int(labels[i])]}", "cells": {}} for i in range(len(images))]
        for name, run in runs.items():
            with torch.no_grad():
                logits, weights = run.model(images.to(run.predictor.device), need_weights=True)
            grids, title = example_maps(run.model, weights)
            for i, item in enumerate(examples):
                pred = CLASSES[int(logits[i].argmax())]
                mark = "✓" if pred == CLASSES[int(labels[i])] else "✗"
                if grids is not None:  # (a cnn whose blocks have channel gates only draws none)
                    png = (image_maps_png_bytes(images[i, 0], [grids[i]], [title]) if title else
                           class_attention_png_bytes(images[i, 0], grids[i][None, None]))
                    item["cells"][name] = {"png": png, "legend": f"predicted {pred} {mark}"}
        kinds = {type(run.model) for run in runs.values()}
        note = " ".join(
            ([] if ViT not in kinds else ["The class token's attention over the patches in each mechanism's model "
                                          "(first seed), last layer, heads averaged."])
            + ([] if CNN not in kinds else ["A cnn's map (first seed): its last block's spatial gate (CBAM) or the "
                                            "weight each position receives (non-local attention), stretched over the "
                                            "image; a block with channel gates only draws none."]))
        return examples, note

    # ------------------------------------------------------------------ what the commands print
    def summary(self, m: dict) -> list[str]:
        return [self.title(m), *self.eval_lines(m, "  ")]

    def eval_lines(self, r: dict, indent: str = "") -> list[str]:
        return [f"{indent}{part:<5} accuracy {r[part]['accuracy']:.2%} ({r[part]['images']:,} images)"
                for part in ("dev", "test")]


TASK = Classification()


# ----------------------------------------------------------------------------- the module's functions
def train(cfg: ClassifyConfig, out_dir: str | Path, attention: str | None = None,
          model_overrides: dict | None = None, progress: bool | None = None,
          resume: dict | None = None) -> dict:
    """Train, evaluate on dev and test, write the run directory; returns metrics.json's content."""
    return TASK.train(cfg, out_dir, attention=attention, overrides=model_overrides, progress=progress, resume=resume)


def load(run_dir: str | Path, device: str = "cpu") -> nn.Module:
    """The trained model of a classify run (eval mode); :class:`ImageClassifier` is ``TASK.load(run_dir)[1]``."""
    return TASK.load(run_dir, device)[1].model


def evaluate_run(run_dir: str | Path) -> dict:
    config, clf = TASK.load(run_dir)
    return TASK.evaluate(Path(run_dir), config, clf)


def vit_class_maps(model: ViT, weights: list[torch.Tensor]) -> torch.Tensor:
    """(layers, N, side, side): the class token's attention over the patches, heads averaged."""
    side = model.config.image_size // model.config.patch_size
    return torch.stack([w[:, :, 0, 1:].float().mean(1).view(-1, side, side).cpu() for w in weights])


def example_maps(model: nn.Module, weights) -> tuple[torch.Tensor | None, str]:
    """The (N, h, w) map of each image that compare.html draws, and its title (none for the vit): the vit's class
    token over the patches (last layer, heads averaged); the cnn's last spatial gate or non-local "received" map
    (None if its blocks have channel gates only)."""
    if isinstance(model, ViT):
        return vit_class_maps(model, weights[-1:])[0], ""
    spatial = [(s, m) for s, m in zip(model.block_stages(), weights)
               if m.spatial is not None or m.positions is not None]
    if not spatial:
        return None, ""
    s, m = spatial[-1]
    if m.spatial is not None:
        return m.spatial.float().cpu(), f"stage {s}: spatial gate"
    return _received(m.positions).cpu(), f"stage {s}: received"


def _received(positions: torch.Tensor) -> torch.Tensor:
    """(B, N, M) attention of each position -> (B, side, side): the weight each key position receives."""
    keys = _grid_side(positions.shape[2])
    return positions.float().mean(1).view(-1, keys, keys)


def cnn_maps(model: CNN, maps, predicted: str) -> dict[str, Map]:
    """One image's maps of each cnn block: spatial ones (last stage first), then channel gates."""
    spatial, channel = {}, {}
    for s, m in reversed(list(zip(model.block_stages(), maps))):
        if m.spatial is not None:
            grid = m.spatial[0].float().cpu()
            spatial[f"stage {s}: spatial gate"] = Map(grid, _ticks(grid.shape[0]), _ticks(grid.shape[1]))
        if m.positions is not None:
            grid = _received(m.positions)[0].cpu()
            spatial[f"stage {s}: received"] = Map(grid, _ticks(grid.shape[0]), _ticks(grid.shape[1]))
        if m.channel is not None:
            channel[f"stage {s}: channel gates"] = Map(m.channel[0].float().cpu()[None], [f"stage {s}"],
                                                       _ticks(m.channel.shape[1]))
    out = {**spatial, **channel}
    if not out:
        raise ValueError(f"the cnn with --attention {model.config.attention} has no attention maps to draw")
    for name, item in out.items():
        item.title = f"{name} ({predicted})"
    return out


def _ticks(n: int) -> list[str]:
    return [str(i) for i in range(n)]


def write_classify_report(out: Path, model: nn.Module, data, metrics: dict, config: dict, records: list,
                          device) -> None:
    from ..viz.curves import learning_curves_png_bytes
    from ..viz.report import write_report

    model.eval()
    images, labels = data.test_images[:4], data.test_labels[:4]
    with torch.no_grad():
        logits, weights = model(images.to(device), need_weights=True)
    figures = (cnn_figures if isinstance(model, CNN) else vit_figures)(model, images, labels, logits, weights)
    curves = learning_curves_png_bytes(records, metrics=["train_loss", "dev_accuracy"]) if records else None
    kind = "cnn" if isinstance(model, CNN) else "vit"
    write_report(out / "report.html", title=f"classify · {kind} · {metrics['attention']}", metrics=metrics,
                 config=config, curves_png=curves, figures=figures,
                 notes=["Fashion-MNIST from Debian's dataset-fashion-mnist; dev is a seeded 5,000-image slice of "
                        "the official training set, test the official 10,000 images."])


def vit_figures(model: ViT, images, labels, logits, weights) -> list[dict]:
    """The class token's attention over the patches, every layer and head, for each image."""
    from ..viz.heatmap import class_attention_png_bytes

    side = model.config.image_size // model.config.patch_size
    figures = []
    for i in range(len(images)):
        cls_maps = torch.stack([w[i, :, 0, 1:].float().cpu() for w in weights])  # (layers, H, N)
        cls_maps = cls_maps.view(*cls_maps.shape[:2], side, side)  # (layers, H, side, side)
        pred = CLASSES[int(logits[i].argmax())]
        figures.append({"png": class_attention_png_bytes(images[i, 0], cls_maps),
                        "legend": f"test image {i}: {CLASSES[int(labels[i])]}, predicted {pred}. "
                                   "Class token's attention over the patches (rows: layers; columns: heads)"})
    return figures


def cnn_figures(model: CNN, images, labels, logits, maps) -> list[dict]:
    """Each block's maps: spatial gates and non-local attention drawn over each image; channel gates per stage."""
    from ..viz.maps import channel_gates_png_bytes, image_maps_png_bytes

    stages = model.block_stages()
    names = [f"{CLASSES[int(labels[i])]} -> {CLASSES[int(logits[i].argmax())]}" for i in range(len(images))]
    figures = []
    if any(m.spatial is not None or m.positions is not None for m in maps):
        for i in range(len(images)):
            grids, titles = [], []
            for s, m in zip(stages, maps):
                if m.spatial is not None:
                    grids.append(m.spatial[i].float().cpu())  # (H_s, W_s)
                    titles.append(f"stage {s}: spatial gate")
                if m.positions is not None:
                    side = _grid_side(m.positions.shape[1])
                    keys = _grid_side(m.positions.shape[2])
                    w = m.positions[i].float().cpu()  # (N, M)
                    grids.append(w.mean(0).view(keys, keys))  # (h', w'): weight received, averaged over queries
                    titles.append(f"stage {s}: received")
                    centre = (side // 2) * side + side // 2
                    grids.append(w[centre].view(keys, keys))  # (h', w'): what the centre position attends to
                    titles.append(f"stage {s}: from centre")
            figures.append({"png": image_maps_png_bytes(images[i, 0], grids, titles),
                            "legend": f"test image {i}: {names[i]} (true -> predicted). "
                                       + _spatial_caption(maps, model.config.attention)})
    channel = [(s, m.channel) for s, m in zip(stages, maps) if m.channel is not None]
    if channel:
        figures.append({"png": channel_gates_png_bytes([c.float().cpu() for _, c in channel], names,
                                                       [f"stage {s} ({c.shape[1]} channels)" for s, c in channel]),
                        "legend": "Channel gates of each block (rows: the test images above, true -> predicted; "
                                   "columns: channels; 0 switches a channel off, 1 lets it through)"})
    return figures


def _grid_side(n: int) -> int:
    side = int(round(n ** 0.5))
    if side * side != n:
        raise ValueError(f"expected a square grid of positions, got {n}")
    return side


def _spatial_caption(maps, attention: str) -> str:
    if any(m.positions is not None for m in maps):
        what = ("The self-attention of each augmented convolution (averaged over its heads)" if attention == "aaconv"
                else "Non-local attention of each block")
        return (f"{what}, stretched over the image: the weight each position receives "
                "(averaged over all query positions), and the weights of the centre position; brighter = more.")
    return "CBAM's spatial gate after each stage, stretched over the image (scaled to its maximum)."
