"""Pictures of attention over images: maps drawn over the image, and channel gates.

- :func:`image_maps_png_bytes`: one image beside attention maps of any grid
  size (a CNN stage's 14 x 14 spatial gate, a non-local block's 7 x 7 map),
  each stretched over the image and drawn on top of it.
- :func:`channel_gates_png_bytes`: per-channel gates (squeeze-excitation,
  CBAM's channel attention), one panel per stage: rows are images, columns
  channels.
- :func:`word_maps_png_bytes`: a captioner's attention at each word, one
  small panel per word stacked under the image (suits wide images such as
  digit strips), with the box of what the word names outlined.

Maps are scaled to [0, 1] per panel (each map divided by its maximum) unless
``normalize=False``; gates are drawn on the fixed [0, 1] scale. Rendering goes
through matplotlib's Agg canvas (no pyplot), as the rest of :mod:`attnzoo.viz`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .heatmap import CMAP, DPI, _as_matrix, figure_png_bytes, new_figure

__all__ = ["channel_gates_png_bytes", "image_maps_png_bytes", "word_maps_png_bytes"]


def _image_and_maps(image, maps):
    """(H, W) image and (h, w) maps as matrices, or a ValueError naming the shape that is not 2-D."""
    img = _as_matrix(image)
    grids = [_as_matrix(m) for m in maps]
    if img.ndim != 2:
        raise ValueError(f"image must be (H, W), got shape {img.shape}")
    if any(g.ndim != 2 for g in grids):
        raise ValueError(f"maps must be (h, w) each, got shapes {[g.shape for g in grids]}")
    return img, grids


def image_maps_png_bytes(image: Any, maps: Sequence[Any], titles: Sequence[str], *, normalize: bool = True,
                         alpha: float = 0.6, dpi: int = DPI) -> bytes:
    """An image and, beside it, each map stretched over it.

    Args:
        image: (H, W) grey image in [0, 1].
        maps: (h, w) maps, any sizes (each is stretched over the whole image).
        titles: one title per map.
        normalize: divide each map by its maximum (shows where, not how much).
        alpha: opacity of a map over the image.
    """
    img, grids = _image_and_maps(image, maps)
    if len(titles) != len(grids):
        raise ValueError(f"{len(grids)} maps but {len(titles)} titles")
    H, W = img.shape
    extent = (0, W, H, 0)
    fig = new_figure((1.5 * (len(grids) + 1), 1.75))
    axes = fig.subplots(1, len(grids) + 1, squeeze=False)[0]
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].imshow(img, cmap="gray", vmin=0, vmax=1, extent=extent)
    axes[0].set_title("image", fontsize=7)
    for ax, grid, title in zip(axes[1:], grids, titles):
        shown = grid / max(float(grid.max()), 1e-12) if normalize else grid
        ax.imshow(img, cmap="gray", vmin=0, vmax=1, extent=extent)
        ax.imshow(shown, cmap=CMAP, vmin=0, vmax=1, alpha=alpha, extent=extent, interpolation="bilinear")
        ax.set_title(title, fontsize=7)
    try:
        return figure_png_bytes(fig, dpi=dpi)
    finally:
        fig.clear()


def channel_gates_png_bytes(gates: Sequence[Any], row_labels: Sequence[str], titles: Sequence[str], *,
                            dpi: int = DPI) -> bytes:
    """Channel gates in [0, 1], one panel per stage: rows are images, columns channels.

    Args:
        gates: one (N, C_s) array per panel (N images, C_s channels of that stage).
        row_labels: the N image labels.
        titles: one title per panel.
    """
    panels = [_as_matrix(g) for g in gates]
    if any(p.ndim != 2 or p.shape[0] != len(row_labels) for p in panels):
        raise ValueError(f"gates must be (N, C) each with N = {len(row_labels)} rows (one per label), "
                         f"got shapes {[p.shape for p in panels]}")
    if len(titles) != len(panels):
        raise ValueError(f"{len(panels)} panels but {len(titles)} titles")
    widths = [max(1.5, 0.03 * p.shape[1]) for p in panels]
    fig = new_figure((1.2 + sum(widths), 0.5 + 0.3 * len(row_labels)))
    axes = fig.subplots(1, len(panels), squeeze=False, gridspec_kw={"width_ratios": widths})[0]
    image = None
    for i, (ax, panel, title) in enumerate(zip(axes, panels, titles)):
        image = ax.imshow(panel, cmap=CMAP, vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        ax.set_title(title, fontsize=7)
        ax.set_xlabel("channel", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.set_yticks(range(len(row_labels)))
        ax.set_yticklabels(list(row_labels) if i == 0 else [""] * len(row_labels))
    if image is not None:
        fig.colorbar(image, ax=list(axes), fraction=0.03, pad=0.02)
    try:
        return figure_png_bytes(fig, dpi=dpi)
    finally:
        fig.clear()


def word_maps_png_bytes(image: Any, maps: Sequence[Any], words: Sequence[str], *,
                        boxes: Sequence[Any] | None = None, title: str = "", normalize: bool = True,
                        alpha: float = 0.6, width: float = 4.0, dpi: int = DPI) -> bytes:
    """The image, then one panel per word: that step's attention map stretched over the image.

    Args:
        image: (H, W) grey image in [0, 1].
        maps: one (h, w) map per word.
        words: the panel titles (the word, and whatever else should be said of it).
        boxes: per word, (top, left, bottom, right) pixels of what it should look at (outlined), or None.
        title: over the image (e.g. the caption).
        normalize: divide each map by its maximum (shows where, not how much).
        width: figure width in inches; each panel keeps the image's aspect ratio.
    """
    from matplotlib.patches import Rectangle

    img, grids = _image_and_maps(image, maps)
    if len(words) != len(grids) or (boxes is not None and len(boxes) != len(grids)):
        raise ValueError(f"{len(grids)} maps need as many words and boxes, got {len(words)} words and "
                         f"{'no' if boxes is None else len(boxes)} boxes")
    H, W = img.shape
    extent = (0, W, H, 0)
    panel = width * H / W + 0.28  # inches per panel: the image's aspect ratio, plus its title
    fig = new_figure((width, panel * (len(grids) + 1)))
    axes = fig.subplots(len(grids) + 1, 1, squeeze=False)[:, 0]
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].imshow(img, cmap="gray", vmin=0, vmax=1, extent=extent)
    axes[0].set_title(title or "image", fontsize=7)
    for i, (ax, grid, word) in enumerate(zip(axes[1:], grids, words)):
        shown = grid / max(float(grid.max()), 1e-12) if normalize else grid
        ax.imshow(img, cmap="gray", vmin=0, vmax=1, extent=extent)
        ax.imshow(shown, cmap=CMAP, vmin=0, vmax=1, alpha=alpha, extent=extent, interpolation="nearest")
        if boxes is not None and boxes[i] is not None:
            top, left, bottom, right = (float(v) for v in boxes[i])
            ax.add_patch(Rectangle((left, top), right - left, bottom - top, fill=False, edgecolor="#00e5ff",
                                   linewidth=1.0))
        ax.set_title(str(word), fontsize=7)
    fig.subplots_adjust(left=0.02, right=0.98, top=1 - 0.2 / fig.get_figheight(), bottom=0.01,
                        hspace=0.28 / panel * 2)
    try:
        return figure_png_bytes(fig, dpi=dpi)
    finally:
        fig.clear()
