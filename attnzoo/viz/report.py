"""The run report: one self-contained HTML file per run.

``report.html`` opens in any browser, offline: CSS is inline, images are
embedded as base64 ``data:`` URIs, there is no JavaScript and no reference to
anything outside the file. It shows, top to bottom:

1. the title and the run's task, model and attention mechanism;
2. the headline (primary) metric and a table of ``metrics.json``;
3. the learning curves (PNG bytes, e.g. from
   :func:`attnzoo.viz.curves.learning_curves_png_bytes`);
4. a grid of attention alignments, each drawn by
   :func:`attnzoo.viz.heatmap.alignment_png_bytes` with its legend;
5. notes, and the run's configuration as pretty JSON in a collapsed
   ``<details>`` block.

Every piece of text is HTML-escaped. Fractions such as WER, PER and accuracy
are shown as percentages with two decimals (0.2531 -> ``25.31%``).

The ``metrics`` dict follows the run-directory schema::

    {"task", "model", "attention", "params", "train_seconds",
     "primary": {"name", "value", "higher_is_better"}, "dev": {...}, "test": {...}}
"""

from __future__ import annotations

import base64
import html
import json
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from attnzoo.fileio import atomic_write_bytes
from attnzoo.viz.heatmap import PNG_MAGIC, alignment_png_bytes, figure_png_bytes

__all__ = ["figure_png_bytes", "render_report", "write_report"]

#: A key whose last word is one of these holds a fraction shown as a percent.
FRACTION_WORDS = frozenset(
    {"wer", "per", "cer", "ser", "acc", "accuracy", "error", "err", "localization", "share"}
)
#: Whole keys that hold fractions although their last word is not above.
FRACTION_KEYS = frozenset({"exact_match", "error_rate", "sequence_accuracy"})
#: Alignment images wider than this (pixels) take a whole row of the grid.
_WIDE_FIGURE_PX = 560
#: Keys rendered in the header line rather than the metrics table.
_HEADER_KEYS = ("task", "model", "attention")

_CSS = """
:root { --fg: #1d2330; --muted: #5b6475; --line: #dde2ea; --accent: #2f5d9f;
        --bg: #ffffff; --soft: #f5f7fa; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1100px; padding: 24px 20px 48px;
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--fg); background: var(--bg); }
h1 { font-size: 1.7em; margin: 0 0 4px; }
h2 { font-size: 1.2em; margin: 32px 0 12px; padding-bottom: 4px;
     border-bottom: 1px solid var(--line); }
.subtitle { color: var(--muted); margin: 0 0 16px; }
.headline { display: inline-block; padding: 12px 18px; border-radius: 8px;
            background: var(--soft); border: 1px solid var(--line); }
.headline .value { font-size: 1.8em; font-weight: 600; color: var(--accent); }
.headline .name { color: var(--muted); margin-left: 8px; }
table { border-collapse: collapse; min-width: 360px; }
th, td { text-align: left; padding: 4px 14px 4px 0; border-bottom: 1px solid var(--line);
         vertical-align: top; }
td.value { font-variant-numeric: tabular-nums; }
tr.group th { padding-top: 12px; color: var(--accent); border-bottom: 2px solid var(--line); }
td.key.nested { padding-left: 16px; }
img { max-width: 100%; height: auto; }
.grid { display: grid; gap: 16px;
        grid-template-columns: repeat(auto-fill, minmax(280px, 1fr)); }
figure.wide { grid-column: 1 / -1; }
figure { margin: 0; padding: 10px; background: var(--soft); border: 1px solid var(--line);
         border-radius: 6px; text-align: center; }
figcaption { margin-top: 6px; font-size: 0.9em; text-align: left; white-space: pre-wrap;
             font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
details summary { cursor: pointer; color: var(--accent); }
pre { background: var(--soft); padding: 12px; border-radius: 6px; overflow-x: auto;
      font-size: 0.85em; }
.muted { color: var(--muted); }
"""


# --------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _is_fraction_key(key: str) -> bool:
    key = key.lower()
    words = [word for word in re.split(r"[^a-z0-9]+", key) if word]
    return key in FRACTION_KEYS or bool(words and words[-1] in FRACTION_WORDS)


def _format_seconds(seconds: float) -> str:
    text = f"{seconds:,.1f} s"
    if seconds >= 60:
        minutes, secs = divmod(int(round(seconds)), 60)
        hours, minutes = divmod(minutes, 60)
        text += f" ({hours}h {minutes:02d}m)" if hours else f" ({minutes}m {secs:02d}s)"
    return text


def format_value(key: str, value: Any) -> str:
    """Plain-text display of one metric value (not yet HTML-escaped).

    Fractions (WER, PER, accuracy, ... within [0, 1]) become percentages with
    two decimals; integers get thousands separators; durations (``*seconds``)
    get units; other floats four significant digits.
    """
    if value is None:
        return "\N{EM DASH}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real):
        value = float(value)
        if not math.isfinite(value):
            return str(value)
        if _is_fraction_key(key) and 0.0 <= value <= 1.0:
            return f"{100.0 * value:.2f}%"
        if key.lower().endswith("seconds"):
            return _format_seconds(value)
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(key, item) for item in value)
    return str(value)


# --------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _headline(primary: Any) -> str:
    """The primary metric as a large number, or nothing if it is malformed."""
    if not isinstance(primary, Mapping) or "name" not in primary or "value" not in primary:
        return ""
    name = str(primary["name"])
    better = primary.get("higher_is_better")
    direction = "" if better is None else (
        " (higher is better)" if better else " (lower is better)"
    )
    return (
        '<div class="headline"><span class="value">'
        f"{_esc(format_value(name, primary['value']))}</span>"
        f'<span class="name">{_esc(name)}{_esc(direction)}</span></div>'
    )


def _metric_rows(metrics: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Table rows for ``metrics``; each nested dict becomes a titled group."""
    rows: list[str] = []
    nested = bool(prefix)
    for key, value in metrics.items():
        key = str(key)
        if isinstance(value, Mapping):
            label = f"{prefix} / {key}" if prefix else key
            rows.append(f'<tr class="group"><th colspan="2">{_esc(label)}</th></tr>')
            rows.extend(_metric_rows(value, label))
            continue
        if key == "higher_is_better" and isinstance(value, bool):
            text = "higher" if value else "lower"
            key_label = "better"
        elif key == "value" and "name" in metrics:
            # {"name": "wer", "value": 0.25}: the name says how to show the value.
            text, key_label = format_value(str(metrics["name"]), value), key
        else:
            text, key_label = format_value(key, value), key
        key_class = "key nested" if nested else "key"
        rows.append(
            f'<tr><td class="{key_class}">{_esc(key_label)}</td>'
            f'<td class="value">{_esc(text)}</td></tr>'
        )
    return rows


def _metrics_section(metrics: Mapping[str, Any]) -> str:
    # Scalars first (params, train_seconds, ...), then groups (primary, dev, test).
    table = {k: v for k, v in metrics.items() if k not in _HEADER_KEYS}
    flat = {k: v for k, v in table.items() if not isinstance(v, Mapping)}
    groups = {k: v for k, v in table.items() if isinstance(v, Mapping)}
    rows = _metric_rows(flat) + _metric_rows(groups)
    if not rows:
        return '<h2>Metrics</h2>\n<p class="muted">No metrics recorded.</p>'
    body = "\n".join(rows)
    return (
        f"<h2>Metrics</h2>\n{_headline(metrics.get('primary'))}\n"
        f'<table class="metrics">\n<tr><th>metric</th><th>value</th></tr>\n{body}\n</table>'
    )


def _curves_section(curves_png: bytes | None) -> str:
    if curves_png is None:
        return '<h2>Learning curves</h2>\n<p class="muted">No learning curves recorded.</p>'
    if not bytes(curves_png[:8]) == PNG_MAGIC:
        raise ValueError("curves_png must be PNG bytes (starting with the PNG signature)")
    return (
        "<h2>Learning curves</h2>\n"
        f'<img src="{_data_uri(bytes(curves_png))}" alt="learning curves">'
    )


def _alignment_figure_html(index: int, item: Mapping[str, Any]) -> str:
    missing = [key for key in ("source", "target", "weights") if key not in item]
    if missing:
        raise ValueError(
            f"alignments[{index}] lacks {missing}; each item needs "
            "'source', 'target', 'weights' and optionally 'legend'"
        )
    try:
        png = alignment_png_bytes(item["weights"], item["source"], item["target"])
    except ValueError as error:
        raise ValueError(f"alignments[{index}]: {error}") from error
    legend = str(item.get("legend", ""))
    # A big matrix would be unreadable squeezed into one grid cell: give it the row.
    width_px = int.from_bytes(png[16:20], "big")  # PNG IHDR: width, then height
    wide = ' class="wide"' if width_px > _WIDE_FIGURE_PX else ""
    alt = legend or "attention alignment"
    return (
        f'<figure{wide}><img src="{_data_uri(png)}" alt="{_esc(alt)}">'
        f"<figcaption>{_esc(legend)}</figcaption></figure>"
    )


def _alignments_section(alignments: Sequence[Mapping[str, Any]]) -> str:
    if not alignments:
        return ""
    figures = "\n".join(
        _alignment_figure_html(i, item) for i, item in enumerate(alignments)
    )
    return (
        "<h2>Attention alignments</h2>\n"
        '<p class="muted">Rows: target tokens; columns: source tokens; '
        "colour: attention weight from 0 to 1.</p>\n"
        f'<div class="grid">\n{figures}\n</div>'
    )


def _figures_section(figures: Sequence[Mapping[str, Any]]) -> str:
    if not figures:
        return ""
    items = []
    for i, fig in enumerate(figures):
        png = fig.get("png", b"")
        if not bytes(png[:8]) == PNG_MAGIC:
            raise ValueError(f"figures[{i}]['png'] must be PNG bytes")
        legend = str(fig.get("legend", ""))
        items.append(f'<figure class="wide"><img src="{_data_uri(bytes(png))}" alt="{_esc(legend or "figure")}">'
                     f"<figcaption>{_esc(legend)}</figcaption></figure>")
    return "<h2>Attention maps</h2>\n" + '<div class="grid">\n' + "\n".join(items) + "\n</div>"


def _notes_section(notes: Sequence[str]) -> str:
    if not notes:
        return ""
    items = "\n".join(f"<li><pre>{_esc(note)}</pre></li>" if "\n" in note else f"<li>{_esc(note)}</li>"
                      for note in notes)
    return f"<h2>Notes</h2>\n<ul>\n{items}\n</ul>"


def _config_section(config: Mapping[str, Any]) -> str:
    text = json.dumps(config, indent=2, default=str, ensure_ascii=False)
    return (
        "<h2>Configuration</h2>\n<details><summary>config.json</summary>\n"
        f"<pre>{_esc(text)}</pre>\n</details>"
    )


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def render_report(
    *,
    title: str,
    metrics: Mapping[str, Any],
    config: Mapping[str, Any],
    curves_png: bytes | None = None,
    alignments: Sequence[Mapping[str, Any]] = (),
    notes: Sequence[str] = (),
    figures: Sequence[Mapping[str, Any]] = (),
) -> str:
    """The report as an HTML string; arguments as for :func:`write_report`."""
    subtitle = " \N{MIDDLE DOT} ".join(
        f"{key}: {metrics[key]}" for key in _HEADER_KEYS if metrics.get(key) is not None
    )
    sections = [
        f"<h1>{_esc(title)}</h1>",
        f'<p class="subtitle">{_esc(subtitle)}</p>' if subtitle else "",
        _metrics_section(metrics),
        _curves_section(curves_png),
        _alignments_section(alignments),
        _figures_section(figures),
        _notes_section(notes),
        _config_section(config),
    ]
    body = "\n".join(section for section in sections if section)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def write_report(
    path: str | Path,
    *,
    title: str,
    metrics: Mapping[str, Any],
    config: Mapping[str, Any],
    curves_png: bytes | None = None,
    alignments: Sequence[Mapping[str, Any]] = (),
    notes: Sequence[str] = (),
    figures: Sequence[Mapping[str, Any]] = (),
) -> Path:
    """Write the run report as one self-contained HTML file; return its path.

    Args:
        path: the HTML file to write (atomically; parents are created).
        title: the page title and heading.
        metrics: ``metrics.json`` content; ``task``/``model``/``attention``
            go in the header, ``primary`` becomes the headline, nested dicts
            (``dev``, ``test``) become groups of rows.
        config: the run configuration, shown as pretty JSON in a collapsed
            ``<details>`` block (non-JSON values are shown with ``str``).
        curves_png: PNG bytes of the learning curves, or ``None``.
        alignments: items ``{"source": [str], "target": [str],
            "weights": (T, S) array or tensor, "legend": str}``, each drawn
            with :func:`~attnzoo.viz.heatmap.alignment_png_bytes`.
        notes: free-text remarks, one list item each (multi-line ones preformatted).
        figures: extra pictures ``{"png": bytes, "legend": str}``, e.g. per-head attention grids.

    Raises:
        ValueError: an alignment lacks a key or its weights do not have shape
            (len(target), len(source)); ``curves_png`` is not a PNG.
    """
    text = render_report(
        title=title,
        metrics=metrics,
        config=config,
        curves_png=curves_png,
        alignments=alignments,
        notes=notes,
        figures=figures,
    )
    path = Path(path)
    atomic_write_bytes(path, lambda handle: handle.write(text.encode("utf-8")), mode=0o644)
    return path
