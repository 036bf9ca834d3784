"""Pictures of attention at work: heatmaps, learning curves, the HTML report.

- :func:`plot_alignment`, :func:`save_alignment`, :func:`alignment_png_bytes`:
  one attention matrix (target rows x source columns) with its tokens.
- :func:`plot_learning_curves`, :func:`learning_curves_png_bytes`: each metric
  of a run's ``metrics.jsonl`` records against step, epoch or seconds.
- :func:`write_report`, :func:`render_report`: the self-contained
  ``report.html`` of a run (images embedded, no external resources).
- :func:`overlay_curves_png_bytes`: several runs' curves on shared axes.
- :func:`write_comparison`, :func:`render_comparison`: ``compare.html``, runs
  side by side (leaderboard, learning curves, attention maps per mechanism).
- :func:`figure_png_bytes`: any matplotlib figure as PNG bytes.

Everything renders through matplotlib's Agg canvas directly; importing this
package never imports :mod:`matplotlib.pyplot` nor changes the global backend.
"""

from attnzoo.viz.comparison import render_comparison, write_comparison
from attnzoo.viz.curves import learning_curves_png_bytes, overlay_curves_png_bytes, plot_learning_curves
from attnzoo.viz.heatmap import (
    alignment_png_bytes,
    figure_png_bytes,
    plot_alignment,
    save_alignment,
)
from attnzoo.viz.report import render_report, write_report

__all__ = [
    "alignment_png_bytes",
    "figure_png_bytes",
    "learning_curves_png_bytes",
    "overlay_curves_png_bytes",
    "plot_alignment",
    "plot_learning_curves",
    "render_comparison",
    "render_report",
    "save_alignment",
    "write_comparison",
    "write_report",
]
