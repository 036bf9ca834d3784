"""Attention heatmaps: one alignment matrix drawn with its tokens.

An alignment is the attention one decoder (target) sequence paid to one
encoder (source) sequence: row ``t`` holds the weights that target token ``t``
put on each source token, so each row of a softmax attention sums to 1.

Shape legend:
    T  number of target tokens (rows, the queries)
    S  number of source tokens (columns, the keys)

Figures are built with :class:`matplotlib.figure.Figure` and rendered by
:class:`~matplotlib.backends.backend_agg.FigureCanvasAgg` directly, so nothing
here imports :mod:`matplotlib.pyplot` or touches matplotlib's global backend;
it works the same on a headless server, in a notebook and inside a GUI app.

Token labels are drawn literally: ``$`` in a token never switches on
matplotlib's mathtext.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "alignment_png_bytes",
    "figure_png_bytes",
    "plot_alignment",
    "save_alignment",
]

#: Colormap of every heatmap; its scale is fixed to [0, 1] so figures compare.
CMAP = "viridis"
#: Resolution of saved figures (dots per inch).
DPI = 100
#: Inches per token along each axis of a saved heatmap, and the size limits.
_INCHES_PER_TOKEN = 0.3
_MIN_WIDTH, _MIN_HEIGHT, _MAX_INCHES = 2.5, 2.0, 30.0
#: More labels than this on one axis are thinned to every k-th token.
_MAX_LABELS = 80
#: Cell separators are drawn only while cells are big enough to see them.
_MAX_GRID_TOKENS = 40

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------
# Figure helpers shared by the viz package
# --------------------------------------------------------------------------


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A figure of ``figsize`` inches bound to an Agg canvas (no pyplot)."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def figure_png_bytes(fig: Figure, *, dpi: int = DPI) -> bytes:
    """Render ``fig`` to PNG bytes (tight bounding box) without touching disk.

    Works for any figure, including ones made by pyplot; the figure is left
    as it was.
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


# --------------------------------------------------------------------------
# Alignment heatmaps
# --------------------------------------------------------------------------


def _as_matrix(weights: Any) -> np.ndarray:
    """``weights`` (numpy array, torch tensor or nested lists) as float64 array."""
    if hasattr(weights, "detach"):  # a torch tensor; torch is not imported here
        weights = weights.detach().cpu().float().numpy()
    return np.asarray(weights, dtype=np.float64)


def _check_alignment(
    weights: Any, source_tokens: Sequence[Any], target_tokens: Sequence[Any]
) -> tuple[np.ndarray, list[str], list[str]]:
    """Validate an alignment; return it as an array plus string token labels."""
    matrix = _as_matrix(weights)
    sources = [str(token) for token in source_tokens]
    targets = [str(token) for token in target_tokens]
    expected = (len(targets), len(sources))
    if matrix.ndim != 2:
        raise ValueError(
            f"weights must be 2-D (T, S) = {expected} for {len(targets)} target "
            f"tokens x {len(sources)} source tokens; got shape {tuple(matrix.shape)} "
            "(select one batch item and one head first)"
        )
    if matrix.shape != expected:
        raise ValueError(
            f"weights has shape {tuple(matrix.shape)} but {len(targets)} target "
            f"tokens x {len(sources)} source tokens need (T, S) = {expected}"
        )
    if 0 in expected:
        raise ValueError(
            f"an alignment needs at least one source and one target token; got "
            f"{len(targets)} target tokens x {len(sources)} source tokens"
        )
    return matrix, sources, targets


def _label_axis(axis: Any, labels: list[str], *, rotation: float) -> None:
    """Put ``labels`` on the cell centres of ``axis``, thinned when crowded."""
    step = max(1, math.ceil(len(labels) / _MAX_LABELS))
    positions = list(range(0, len(labels), step))
    axis.set_ticks(positions)
    axis.set_ticklabels(
        [labels[i] for i in positions], rotation=rotation, parse_math=False
    )


def plot_alignment(
    weights: Any,
    source_tokens: Sequence[Any],
    target_tokens: Sequence[Any],
    ax: Axes | None = None,
    title: str | None = None,
) -> Axes:
    """Draw an attention matrix with its tokens; return the Axes.

    Args:
        weights: (T, S) attention weights in [0, 1], a numpy array, a torch
            tensor (any device or dtype) or nested lists. Row ``t`` is what
            target token ``t`` attended to.
        source_tokens: the S source (key) tokens, labelled along the top.
        target_tokens: the T target (query) tokens, labelled down the side.
        ax: Axes to draw into; ``None`` makes a new Agg-backed figure sized to
            the token counts (``ax.figure`` holds it).
        title: optional title above the matrix.

    The colour scale is fixed to [0, 1] (``viridis``) so that heatmaps can be
    compared by eye. Token labels are drawn literally (no mathtext).

    Raises:
        ValueError: ``weights`` is not 2-D, its shape is not
            ``(len(target_tokens), len(source_tokens))``, or a side is empty.
    """
    matrix, sources, targets = _check_alignment(weights, source_tokens, target_tokens)
    num_targets, num_sources = matrix.shape  # (T, S)
    if ax is None:
        ax = new_figure(_alignment_figsize(num_targets, num_sources)).add_subplot()

    ax.imshow(
        matrix, cmap=CMAP, vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest"
    )
    # Source tokens along the top, read left to right like the input sentence.
    ax.xaxis.tick_top()
    ax.xaxis.set_label_position("top")
    long_labels = any(len(token) > 2 for token in sources)
    _label_axis(ax.xaxis, sources, rotation=90 if long_labels else 0)
    _label_axis(ax.yaxis, targets, rotation=0)
    ax.set_xlabel("source")
    ax.set_ylabel("target")
    ax.tick_params(axis="both", which="major", length=0, labelsize=9)

    if max(num_targets, num_sources) <= _MAX_GRID_TOKENS:
        ax.set_xticks(np.arange(num_sources + 1) - 0.5, minor=True)
        ax.set_yticks(np.arange(num_targets + 1) - 0.5, minor=True)
        ax.grid(which="minor", color="white", linewidth=0.5)
        ax.tick_params(which="minor", length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)

    if title:
        ax.set_title(title, fontsize=10, parse_math=False, pad=8)
    return ax


def _alignment_figsize(num_targets: int, num_sources: int) -> tuple[float, float]:
    """Figure size in inches for a T x S heatmap: cells of ~0.3 inch."""
    width = _clamp(1.0 + _INCHES_PER_TOKEN * num_sources, _MIN_WIDTH, _MAX_INCHES)
    height = _clamp(0.8 + _INCHES_PER_TOKEN * num_targets, _MIN_HEIGHT, _MAX_INCHES)
    return width, height


def _alignment_figure(
    weights: Any,
    source_tokens: Sequence[Any],
    target_tokens: Sequence[Any],
    title: str | None,
) -> Figure:
    """A standalone figure: the heatmap plus a colorbar."""
    matrix, sources, targets = _check_alignment(weights, source_tokens, target_tokens)
    width, height = _alignment_figsize(*matrix.shape)
    fig = new_figure((width + 0.8, height))  # room for the colorbar
    ax = plot_alignment(matrix, sources, targets, ax=fig.add_subplot(), title=title)
    colorbar = fig.colorbar(ax.images[0], ax=ax, fraction=0.05, pad=0.03)
    colorbar.ax.tick_params(labelsize=8)
    return fig


def alignment_png_bytes(
    weights: Any,
    source_tokens: Sequence[Any],
    target_tokens: Sequence[Any],
    title: str | None = None,
    *,
    dpi: int = DPI,
) -> bytes:
    """Render an alignment heatmap (with colorbar) to PNG bytes in memory.

    Arguments as for :func:`plot_alignment`; the figure is sized to the token
    counts and discarded afterwards.
    """
    fig = _alignment_figure(weights, source_tokens, target_tokens, title)
    try:
        return figure_png_bytes(fig, dpi=dpi)
    finally:
        fig.clear()


def save_alignment(
    path: str | Path,
    weights: Any,
    source_tokens: Sequence[Any],
    target_tokens: Sequence[Any],
    title: str | None = None,
) -> Path:
    """Save an alignment heatmap as a PNG file; return its path.

    The figure (100 dpi, tight bounding box, sized to the token counts) is
    released after writing. Parent directories are created as needed.
    """
    data = alignment_png_bytes(weights, source_tokens, target_tokens, title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def head_grid_png_bytes(weights: Any, tokens: Sequence[Any], key_tokens: Sequence[Any] | None = None, *,
                        dpi: int = DPI) -> bytes:
    """Per-head attention maps as a layers x heads grid of heatmaps, to PNG bytes.

    Args:
        weights: (layers, H, T, S) weights in [0, 1] (numpy, torch or nested lists).
        tokens: the T query tokens (labels down the first column).
        key_tokens: the S key tokens (labels along the top row); default ``tokens``.
    """
    grid = _as_matrix(weights)
    if grid.ndim != 4:
        raise ValueError(f"weights must have shape (layers, H, T, S), got {tuple(grid.shape)}")
    layers, heads, T, S = grid.shape
    key_tokens = list(tokens if key_tokens is None else key_tokens)
    if (T, S) != (len(tokens), len(key_tokens)):
        raise ValueError(f"weights has maps of shape ({T}, {S}) but there are {len(tokens)} query and "
                         f"{len(key_tokens)} key tokens")
    cell = _clamp(0.06 * max(T, S), 1.2, 3.5)
    fig = new_figure((0.6 + cell * heads, 0.4 + cell * layers))
    axes = fig.subplots(layers, heads, squeeze=False)
    for layer in range(layers):
        for head in range(heads):
            ax = axes[layer][head]
            ax.imshow(grid[layer, head], cmap=CMAP, vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if layer == 0:
                ax.set_title(f"head {head}", fontsize=8)
            if head == 0:
                ax.set_ylabel(f"layer {layer}", fontsize=8)
    try:
        return figure_png_bytes(fig, dpi=dpi)
    finally:
        fig.clear()


def class_attention_png_bytes(image: Any, maps: Any, *, dpi: int = DPI) -> bytes:
    """An image beside a layers x heads grid of attention maps over its patches, to PNG bytes.

    Args:
        image: (H, W) grey image in [0, 1].
        maps: (layers, heads, h, w) attention of the class token over the h x w patches.
    """
    img, grid = _as_matrix(image), _as_matrix(maps)
    if img.ndim != 2 or grid.ndim != 4:
        raise ValueError(f"image must be (H, W) and maps (layers, heads, h, w); got {img.shape} and {grid.shape}")
    layers, heads = grid.shape[:2]
    fig = new_figure((1.2 * (heads + 1), 1.2 * layers + 0.3))
    axes = fig.subplots(layers, heads + 1, squeeze=False)
    for layer in range(layers):
        for col in range(heads + 1):
            ax = axes[layer][col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.imshow(img, cmap="gray", vmin=0, vmax=1)
                ax.set_ylabel(f"layer {layer}", fontsize=7)
            else:
                m = grid[layer, col - 1]
                ax.imshow(m / max(m.max(), 1e-12), cmap=CMAP, vmin=0, vmax=1, interpolation="nearest")
                if layer == 0:
                    ax.set_title(f"head {col - 1}", fontsize=7)
    try:
        return figure_png_bytes(fig, dpi=dpi)
    finally:
        fig.clear()
