"""The classify task: Fashion-MNIST clothing images into 10 classes.

* data: :mod:`attnzoo.data.fashion_mnist` (Debian's ``dataset-fashion-mnist``;
  60k training images less a seeded 5k dev slice, the official 10k test images);
* model: ``--model vit`` (:class:`~attnzoo.models.vit.ViT`, ``--attention mha|gqa|mqa``);
* metric: test accuracy.

The report shows, for a few test images, the class token's attention over the
patches for every layer and head.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..core import validate as V
from ..data.fashion_mnist import CLASSES, load_split
from ..models.vit import ViT, ViTConfig
from ..training.checkpoint import load_run
from ..training.run import (RunDirectory, TrainOptions, check_options, kv_heads_for, load_task_run, resolve_device,
                             run_metrics, trainer_options)
from ..training.trainer import Budget, Trainer, resolve_precision

log = logging.getLogger(__name__)

TASK = "classify"
ATTENTION = ("mha", "gqa", "mqa")
DEFAULT_MINUTES = 8.0
# patch 7 (16 patches): 3x the steps of patch 4 per minute on a CPU, and the better model within 30 minutes
VIT_DEFAULTS = dict(patch_size=7, dim=128, num_heads=4, layers=6, dropout=0.1)


@dataclass
class ClassifyConfig(TrainOptions):
    batch_size: int = 128  # images per step
    model: str = "vit"
    augment: bool = True  # random shifts of up to 2 pixels and horizontal flips

    default_minutes = DEFAULT_MINUTES

    def __post_init__(self):
        V.check_choice("model", self.model, ("vit",))
        super().__post_init__()


def check_model(attention: str, options: dict | None) -> None:
    V.check_choice("attention (the vit's slot)", attention, ATTENTION)
    check_options("vit", options, ViTConfig, {"image_size", "channels", "classes"})


def build_model(attention: str, overrides: dict | None) -> ViT:
    check_model(attention, overrides)
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
def accuracy(model: ViT, images: torch.Tensor, labels: torch.Tensor, device, batch_size: int = 500) -> float:
    model.eval()
    right = 0
    for i in range(0, len(images), batch_size):
        logits, _ = model(images[i: i + batch_size].to(device))
        right += int((logits.argmax(-1).cpu() == labels[i: i + batch_size]).sum())
    return right / max(len(images), 1)


def train(cfg: ClassifyConfig, out_dir: str | Path, attention: str | None = None,
          model_overrides: dict | None = None, progress: bool | None = None,
          resume: dict | None = None) -> dict:
    attention = attention or "mha"
    check_model(attention, model_overrides)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    data = load_split(seed=cfg.seed)
    model = build_model(attention, model_overrides).to(device)
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


def load(run_dir: str | Path, device: str = "cpu") -> ViT:
    def build(config, ckpt):
        model = ViT(ViTConfig.from_dict(ckpt["config"]["model_config"]))
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


def write_classify_report(out: Path, model: ViT, data, metrics: dict, config: dict, records: list, device) -> None:
    from ..viz.curves import learning_curves_png_bytes
    from ..viz.heatmap import class_attention_png_bytes
    from ..viz.report import write_report

    model.eval()
    images, labels = data.test_images[:4], data.test_labels[:4]
    with torch.no_grad():
        logits, weights = model(images.to(device), need_weights=True)
    side = model.config.image_size // model.config.patch_size
    figures = []
    for i in range(len(images)):
        cls_maps = torch.stack([w[i, :, 0, 1:].float().cpu() for w in weights])  # (layers, H, N)
        cls_maps = cls_maps.view(*cls_maps.shape[:2], side, side)  # (layers, H, side, side)
        pred = CLASSES[int(logits[i].argmax())]
        figures.append({"png": class_attention_png_bytes(images[i, 0], cls_maps),
                        "caption": f"test image {i}: {CLASSES[int(labels[i])]}, predicted {pred}. "
                                   "Class token's attention over the patches (rows: layers; columns: heads)"})
    curves = learning_curves_png_bytes(records, metrics=["train_loss", "dev_accuracy"]) if records else None
    write_report(out / "report.html", title=f"classify · vit · {metrics['attention']}", metrics=metrics,
                 config=config, curves_png=curves, figures=figures,
                 notes=["Fashion-MNIST from Debian's dataset-fashion-mnist; dev is a seeded 5,000-image slice of "
                        "the official training set, test the official 10,000 images."])
