"""The classify task: Fashion-MNIST clothing images into 10 classes.

* data: :mod:`attnzoo.data.fashion_mnist` (Debian's ``dataset-fashion-mnist``;
  60k training images less a seeded 5k dev slice, the official 10k test images);
* model: ``--model vit`` (:class:`~attnzoo.models.vit.ViT`, ``--attention mha|gqa|mqa``) or
  ``--model cnn`` (:class:`~attnzoo.models.cnn.CNN`, a small CNN with ``--attention
  none|se|cbam|nonlocal`` after each stage);
* metric: test accuracy.

The report shows, for a few test images, what the model attends to: the ViT's
class token over the patches (every layer and head); the CNN's spatial gates
(CBAM), channel gates (squeeze-excitation, CBAM) or non-local attention.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..core import validate as V
from ..data.fashion_mnist import CLASSES, load_split
from ..models.cnn import BLOCKS, CNN, CNNConfig, resolve_block
from ..models.vit import ViT, ViTConfig
from ..training.checkpoint import load_run
from ..training.run import (RunDirectory, TrainOptions, check_options, kv_heads_for, load_task_run, resolve_device,
                             run_metrics, trainer_options)
from ..training.trainer import Budget, Trainer, resolve_precision

log = logging.getLogger(__name__)

TASK = "classify"
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


def train(cfg: ClassifyConfig, out_dir: str | Path, attention: str | None = None,
          model_overrides: dict | None = None, progress: bool | None = None,
          resume: dict | None = None) -> dict:
    attention = attention or DEFAULT_ATTENTION[cfg.model]
    check_model(attention, model_overrides, cfg.model)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    data = load_split(seed=cfg.seed)
    model = build_model(attention, model_overrides, cfg.model).to(device)
    summary = {"train_images": len(data.train_labels), "dev_images": len(data.dev_labels),
               "test_images": len(data.test_labels)}
    run = RunDirectory(out_dir, {"task": TASK, "model": cfg.model, "attention": attention,
                                 "model_overrides": model_overrides or {}, "task_config": asdict(cfg),
                                 "model_config": model.config.to_dict(),
                                 "data": summary, "params": model.num_parameters()},
                       state=lambda: {"model": model.state_dict()}, resume=resume)

    n = len(data.train_labels)
    steps_per_epoch = max(1, n // cfg.batch_size)

    def batches(epoch):
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=g)
        for i in range(steps_per_epoch):
            idx = order[i * cfg.batch_size: (i + 1) * cfg.batch_size]
            x = data.train_images[idx]
            yield (augment(x, g) if cfg.augment else x), data.train_labels[idx]

    def loss_fn(m, batch):
        x, y = batch[0].to(device), batch[1].to(device)
        logits, _ = m(x)
        return F.cross_entropy(logits.float(), y, label_smoothing=0.1), len(y)

    trainer = Trainer(model, lr=cfg.lr, budget=Budget(cfg.minutes, cfg.epochs),
                      evaluate=lambda m: {"dev_accuracy": accuracy(m, data.dev_images, data.dev_labels, device)},
                      primary="dev_accuracy", higher_is_better=True, eval_every_minutes=cfg.eval_every_minutes,
                      on_record=run.on_record, progress=progress, unit="images", weight_decay=0.05,
                      autocast_dtype=resolve_precision(cfg.precision, device), **trainer_options(cfg, run))
    result = trainer.fit(batches, steps_per_epoch, loss_fn, resume=resume)
    run.save(result.best)
    dev = accuracy(model, data.dev_images, data.dev_labels, device)
    test = accuracy(model, data.test_images, data.test_labels, device)
    metrics = {"task": TASK, "model": cfg.model, "attention": attention, "params": model.num_parameters(),
               "train_seconds": round(result.train_seconds, 1),
               "primary": {"name": "accuracy", "value": test, "higher_is_better": True},
               "dev": {"accuracy": dev, "images": len(data.dev_labels)},
               "test": {"accuracy": test, "images": len(data.test_labels)},
               "steps": result.steps, "epochs": round(result.steps / steps_per_epoch, 2),
               **run_metrics(result)}
    run.write_metrics(metrics)
    write_classify_report(run.path, model, data, metrics, run.config, result.records, device)
    return metrics


def load(run_dir: str | Path, device: str = "cpu") -> nn.Module:
    def build(config, ckpt):
        kind = ckpt["config"].get("model", "vit")
        V.check_choice("model", kind, MODELS)
        cls = CNN if kind == "cnn" else ViT
        model = cls(CONFIGS[kind].from_dict(ckpt["config"]["model_config"]))
        model.load_state_dict(ckpt["model"])
        return model

    _, model = load_task_run(run_dir, TASK, build)
    return model.to(resolve_device(device)).eval()


def evaluate_run(run_dir: str | Path) -> dict:
    config, _ = load_run(run_dir)
    model = load(run_dir)
    data = load_split(seed=config["task_config"]["seed"])
    return {"dev": {"accuracy": accuracy(model, data.dev_images, data.dev_labels, "cpu"),
                    "images": len(data.dev_labels)},
            "test": {"accuracy": accuracy(model, data.test_images, data.test_labels, "cpu"),
                     "images": len(data.test_labels)}}


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
                        "caption": f"test image {i}: {CLASSES[int(labels[i])]}, predicted {pred}. "
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
                            "caption": f"test image {i}: {names[i]} (true -> predicted). "
                                       + _spatial_caption(maps, model.config.attention)})
    channel = [(s, m.channel) for s, m in zip(stages, maps) if m.channel is not None]
    if channel:
        figures.append({"png": channel_gates_png_bytes([c.float().cpu() for _, c in channel], names,
                                                       [f"stage {s} ({c.shape[1]} channels)" for s, c in channel]),
                        "caption": "Channel gates of each block (rows: the test images above, true -> predicted; "
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
