"""Learning curves from a run's ``metrics.jsonl`` records.

Each record is one evaluation, for example::

    {"step": 100, "epoch": 0.5, "seconds": 12.3,
     "train_loss": 1.2, "dev_wer": 0.41, "dev_per": 0.1}

Every metric gets its own subplot, all sharing the x axis (``step`` by
default; ``epoch`` or ``seconds`` work too), with losses stacked above error
rates and other scores so differently scaled quantities never share a y axis.
Records may miss keys (a training-loss line without a dev evaluation, say):
each curve uses the records that have both its x value and its metric.
Non-numeric, boolean and non-finite values are skipped.

:func:`overlay_curves_png_bytes` draws several runs on the same axes (one
line per run, one colour per group of runs, e.g. a mechanism's seeds), which
is how ``attnzoo compare`` shows its runs' learning.

Figures use an Agg canvas directly; :mod:`matplotlib.pyplot` is never imported.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from attnzoo.viz.heatmap import figure_png_bytes, new_figure

__all__ = ["learning_curves_png_bytes", "overlay_curves_png_bytes", "plot_learning_curves"]

logger = logging.getLogger(__name__)

#: Keys that locate a record in time; never plotted as metrics by default.
AXIS_KEYS = ("step", "epoch", "seconds")

_WIDTH, _HEIGHT_PER_METRIC, _MAX_HEIGHT = 7.0, 1.8, 30.0


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` if it is not a real number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _default_metrics(records: Sequence[Mapping[str, Any]], x: str) -> list[str]:
    """Numeric keys in first-seen order, losses first, axis keys left out."""
    names: dict[str, None] = {}
    for record in records:
        for key, value in record.items():
            if key != x and key not in AXIS_KEYS and _number(value) is not None:
                names.setdefault(key, None)
    losses = [name for name in names if "loss" in name.lower()]
    others = [name for name in names if "loss" not in name.lower()]
    return losses + others


def _points(
    records: Sequence[Mapping[str, Any]], x: str, metric: str
) -> tuple[list[float], list[float]]:
    """(x, y) values of ``metric``, sorted by x, from records that have both."""
    pairs = []
    for record in records:
        x_value, y_value = _number(record.get(x)), _number(record.get(metric))
        if x_value is not None and y_value is not None:
            pairs.append((x_value, y_value))
    pairs.sort(key=lambda pair: pair[0])
    return [p[0] for p in pairs], [p[1] for p in pairs]


def learning_curves_png_bytes(
    records: Iterable[Mapping[str, Any]],
    x: str = "step",
    metrics: Sequence[str] | None = None,
) -> bytes:
    """Render learning curves to PNG bytes; see :func:`plot_learning_curves`."""
    records = [record for record in records if isinstance(record, Mapping)]
    names = list(metrics) if metrics is not None else _default_metrics(records, x)

    if not names:
        logger.warning("no numeric metrics to plot against %r", x)
        fig = new_figure((_WIDTH, _HEIGHT_PER_METRIC))
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no metrics recorded yet", ha="center", va="center")
        ax.set_axis_off()
        return figure_png_bytes(fig)

    height = min(_MAX_HEIGHT, 0.6 + _HEIGHT_PER_METRIC * len(names))
    fig = new_figure((_WIDTH, height))
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    for ax, name in zip(axes, names):
        xs, ys = _points(records, x, name)
        if xs:
            ax.plot(xs, ys, marker="o" if len(xs) <= 30 else None, markersize=3)
        else:
            logger.warning("metric %r has no values with %r in any record", name, x)
            ax.text(0.5, 0.5, "no values", ha="center", va="center",
                    transform=ax.transAxes, color="gray")
        ax.set_ylabel(name, parse_math=False)
        ax.grid(True, alpha=0.3)
    axes[-1].set_xlabel(x, parse_math=False)
    fig.align_ylabels(axes)
    return figure_png_bytes(fig)


def overlay_curves_png_bytes(
    series: Sequence[Mapping[str, Any]],
    metrics: Sequence[str],
    x: str = "step",
    x_label: str | None = None,
) -> bytes:
    """Several runs' learning curves on shared axes, to PNG bytes.

    Args:
        series: one item per run, ``{"label": str, "group": str, "records":
            [record, ...]}``; runs of one group (a mechanism's seeds) share a
            colour, and the legend names each group once.
        metrics: names to plot, one subplot each, stacked, sharing the x axis.
        x: the record key of the x axis (``step``, ``epoch``, ``seconds``, or
            any key the caller added, e.g. ``minutes``).
        x_label: the x axis's label (default ``x``).

    A metric no run recorded gets an empty subplot marked "no values".
    """
    names = list(metrics)
    if not names:
        raise ValueError("metrics must name at least one record key to plot, e.g. ['train_loss']")
    groups = list(dict.fromkeys(str(item.get("group", item.get("label", ""))) for item in series))
    colours = {group: f"C{i % 10}" for i, group in enumerate(groups)}
    height = min(_MAX_HEIGHT, 0.8 + 2.4 * len(names))
    fig = new_figure((_WIDTH + 1.5, height))
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    for ax, name in zip(axes, names):
        labelled: set[str] = set()
        for item in series:
            group = str(item.get("group", item.get("label", "")))
            xs, ys = _points([r for r in item.get("records", ()) if isinstance(r, Mapping)], x, name)
            if not xs:
                continue
            ax.plot(xs, ys, color=colours[group], marker="o" if len(xs) <= 30 else None, markersize=3,
                    alpha=0.85, label=None if group in labelled else group)
            labelled.add(group)
        if not labelled:
            ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes, color="gray")
        ax.set_ylabel(name, parse_math=False)
        ax.grid(True, alpha=0.3)
    if groups:
        axes[0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    axes[-1].set_xlabel(x_label or x, parse_math=False)
    fig.align_ylabels(axes)
    return figure_png_bytes(fig)


def plot_learning_curves(
    records: Iterable[Mapping[str, Any]],
    path: str | Path,
    x: str = "step",
    metrics: Sequence[str] | None = None,
) -> Path:
    """Plot each metric of ``records`` against ``x`` and save a PNG; return its path.

    Args:
        records: evaluation records as written to ``metrics.jsonl`` (dicts).
        path: where to write the PNG; parent directories are created.
        x: the record key for the shared x axis (``step``, ``epoch``,
            ``seconds``).
        metrics: names to plot, one subplot each, in this order; ``None``
            plots every numeric key except ``step``/``epoch``/``seconds`` and
            ``x``, losses first. A named metric without values gets an empty
            subplot marked "no values".

    With no metric at all a small placeholder figure is written, so a report
    can always embed the file.
    """
    data = learning_curves_png_bytes(records, x=x, metrics=metrics)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
