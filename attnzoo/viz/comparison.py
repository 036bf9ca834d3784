"""The comparison page: several runs of one task side by side, in one self-contained HTML file.

``compare.html`` (written by ``attnzoo compare``) is built like a run's
``report.html``: inline CSS, images embedded as base64 ``data:`` URIs, no
JavaScript, nothing outside the file but links to each run's own report. It
shows, top to bottom:

1. the title and a subtitle (task, model, budget, seeds);
2. the leaderboard: a table whose cells the caller has already formatted;
3. the learning curves of every run on shared axes (PNG bytes, e.g. from
   :func:`attnzoo.viz.curves.overlay_curves_png_bytes`);
4. the attention maps of the same examples, one row per example and one
   column per mechanism, each a PNG with a short legend (the model's output);
5. notes (how the spread is computed, what the speeds count).

Every piece of text is HTML-escaped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from attnzoo.fileio import atomic_write_bytes
from attnzoo.viz.heatmap import PNG_MAGIC
from attnzoo.viz.report import _CSS, _data_uri, _esc

__all__ = ["render_comparison", "write_comparison"]

_EXTRA_CSS = """
table.board td, table.board th { padding-right: 18px; }
table.board td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.maps { border-collapse: collapse; }
table.maps th, table.maps td { border: 1px solid var(--line); padding: 6px; vertical-align: top;
                               text-align: center; }
table.maps td.example { text-align: left; max-width: 220px; font-size: 0.9em; }
table.maps img { max-width: 360px; }
.cell { font-size: 0.85em; margin-top: 4px; white-space: pre-wrap; text-align: left;
        font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.scroll { overflow-x: auto; }
"""


def _png(value: Any, where: str) -> bytes:
    data = bytes(value or b"")
    if data[:8] != PNG_MAGIC:
        raise ValueError(f"{where} must be PNG bytes (starting with the PNG signature)")
    return data


def _board_section(headers: Sequence[str], rows: Sequence[Sequence[Any]], links: Sequence[str | None],
                   numeric: Sequence[bool]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = []
    for row, link in zip(rows, list(links) + [None] * (len(rows) - len(links))):
        cells = []
        for i, cell in enumerate(row):
            text = _esc(cell)
            if i == 1 and link:  # the mechanism's name links to its first run's report
                text = f'<a href="{_esc(link)}">{text}</a>'
            cls = ' class="num"' if i < len(numeric) and numeric[i] else ""
            cells.append(f"<td{cls}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return ("<h2>Leaderboard</h2>\n" f'<table class="board">\n<tr>{head}</tr>\n' + "\n".join(body) + "\n</table>")


def _curves_section(curves_png: bytes | None) -> str:
    if curves_png is None:
        return '<h2>Learning curves</h2>\n<p class="muted">No learning curves recorded.</p>'
    png = _png(curves_png, "curves_png")
    return f'<h2>Learning curves</h2>\n<img src="{_data_uri(png)}" alt="learning curves of every run">'


def _maps_section(columns: Sequence[str], examples: Sequence[Mapping[str, Any]], note: str) -> str:
    if not examples:
        return ""
    head = "<th>example</th>" + "".join(f"<th>{_esc(c)}</th>" for c in columns)
    rows = []
    for i, example in enumerate(examples):
        cells = [f'<td class="example">{_esc(example.get("legend", ""))}</td>']
        got = example.get("cells", {})
        for column in columns:
            cell = got.get(column)
            if cell is None:
                cells.append('<td class="muted">—</td>')
                continue
            png = _png(cell.get("png"), f"examples[{i}]['cells'][{column!r}]['png']")
            text = str(cell.get("legend", ""))
            cells.append(f'<td><img src="{_data_uri(png)}" alt="{_esc(column)}: {_esc(text or "attention")}">'
                         f'<div class="cell">{_esc(text)}</div></td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    intro = f'<p class="muted">{_esc(note)}</p>\n' if note else ""
    return ("<h2>Attention maps</h2>\n" + intro + '<div class="scroll"><table class="maps">\n'
            f"<tr>{head}</tr>\n" + "\n".join(rows) + "\n</table></div>")


def _notes_section(notes: Sequence[str]) -> str:
    if not notes:
        return ""
    return "<h2>Notes</h2>\n<ul>\n" + "\n".join(f"<li>{_esc(n)}</li>" for n in notes) + "\n</ul>"


def render_comparison(
    *,
    title: str,
    subtitle: str = "",
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    links: Sequence[str | None] = (),
    numeric: Sequence[bool] = (),
    curves_png: bytes | None = None,
    columns: Sequence[str] = (),
    examples: Sequence[Mapping[str, Any]] = (),
    maps_note: str = "",
    notes: Sequence[str] = (),
) -> str:
    """The comparison page as an HTML string; arguments as for :func:`write_comparison`."""
    for i, row in enumerate(rows):
        if len(row) != len(headers):
            raise ValueError(f"rows[{i}] has {len(row)} cells but there are {len(headers)} headers")
    sections = [
        f"<h1>{_esc(title)}</h1>",
        f'<p class="subtitle">{_esc(subtitle)}</p>' if subtitle else "",
        _board_section(headers, rows, links, numeric),
        _curves_section(curves_png),
        _maps_section(columns, examples, maps_note),
        _notes_section(notes),
    ]
    body = "\n".join(s for s in sections if s)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}{_EXTRA_CSS}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def write_comparison(path: str | Path, **page: Any) -> Path:
    """Write the comparison page as one self-contained HTML file (atomically); return its path.

    Keyword arguments:
        title, subtitle: the heading and the line under it.
        headers, rows: the leaderboard, its cells already formatted as text, best row first.
        links: per row, a link (relative to the page) to that row's run report, or None.
        numeric: per column, whether its cells are right-aligned numbers.
        curves_png: PNG bytes of every run's learning curves, or None.
        columns: the mechanisms, in the leaderboard's order: one column of maps each.
        examples: one item per example, ``{"legend": str, "cells": {column: {"png": bytes, "legend": str}}}``;
            a column missing from ``cells`` shows a dash.
        maps_note: one line above the maps (what rows, columns and colours mean).
        notes: free-text remarks, one list item each.

    Raises:
        ValueError: a row's length differs from the headers', or an image is not PNG bytes.
    """
    text = render_comparison(**page)
    path = Path(path)
    atomic_write_bytes(path, lambda handle: handle.write(text.encode("utf-8")), mode=0o644)
    return path
