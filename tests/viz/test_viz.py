"""Tests for attnzoo.viz: heatmaps, learning curves and the HTML report."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.axes import Axes

from attnzoo.viz import (
    alignment_png_bytes,
    figure_png_bytes,
    learning_curves_png_bytes,
    overlay_curves_png_bytes,
    plot_alignment,
    plot_learning_curves,
    save_alignment,
    write_comparison,
    write_report,
)
from attnzoo.viz.heatmap import new_figure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DATA_URI = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR chunk."""
    assert data[:8] == PNG_MAGIC
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def random_alignment(num_targets: int, num_sources: int, seed: int = 0) -> np.ndarray:
    """Rows that sum to 1, like a softmax over source tokens."""
    return np.random.default_rng(seed).dirichlet(np.ones(num_sources), size=num_targets)


# --------------------------------------------------------------------------
# heatmap
# --------------------------------------------------------------------------


def test_save_alignment_writes_png(tmp_path):
    path = tmp_path / "sub" / "abbey.png"
    returned = save_alignment(path, random_alignment(3, 5), list("abbey"), ["AE", "B", "IY"],
                              title="abbey")
    assert returned == path
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_png_grows_with_more_tokens(tmp_path):
    small = save_alignment(tmp_path / "small.png", random_alignment(2, 3), list("abc"),
                           ["x", "y"])
    # One-letter tokens: the figure, not overflowing labels, has to make room.
    big = save_alignment(tmp_path / "big.png", random_alignment(15, 20),
                         list("abcdefghijklmnopqrst"), list("ABCDEFGHIJKLMNO"))
    small_w, small_h = png_size(small.read_bytes())
    big_w, big_h = png_size(big.read_bytes())
    assert big_w > small_w
    assert big_h > small_h


def test_plot_alignment_draws_tokens_and_fixed_scale():
    weights = torch.tensor(random_alignment(3, 5), dtype=torch.float32)  # a tensor works too
    ax = plot_alignment(weights, list("abbey"), ["AE", "B", "IY"], title="$abbey$")
    assert isinstance(ax, Axes)
    image = ax.images[0]
    assert image.get_clim() == (0.0, 1.0)
    np.testing.assert_allclose(np.asarray(image.get_array()), weights.numpy(), rtol=1e-6)
    assert [t.get_text() for t in ax.get_xticklabels()] == list("abbey")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["AE", "B", "IY"]
    assert ax.get_title() == "$abbey$"
    assert figure_png_bytes(ax.figure)[:8] == PNG_MAGIC  # "$" renders literally


def test_plot_alignment_into_given_axes():
    fig = new_figure((4, 3))
    ax = fig.add_subplot()
    assert plot_alignment(random_alignment(2, 2), ["a", "b"], ["c", "d"], ax=ax) is ax
    assert len(fig.axes) == 1


@pytest.mark.parametrize("shape", [(3, 4), (5, 2)])
def test_plot_alignment_shape_mismatch_names_both_shapes(shape):
    with pytest.raises(ValueError) as info:
        plot_alignment(np.zeros(shape), list("abcde"), ["x", "y"])
    message = str(info.value)
    assert "weights" in message
    assert str(shape) in message  # what it got
    assert "(2, 5)" in message  # what (target, source) tokens need


def test_plot_alignment_rejects_batched_weights():
    with pytest.raises(ValueError, match=r"weights.*2-D.*\(1, 2, 3\)"):
        plot_alignment(np.zeros((1, 2, 3)), list("abc"), ["x", "y"])


# --------------------------------------------------------------------------
# learning curves
# --------------------------------------------------------------------------


RECORDS = [
    {"step": 100, "epoch": 0.5, "seconds": 12.3, "train_loss": 1.2},
    {"step": 200, "epoch": 1.0, "seconds": 24.0, "train_loss": 0.9, "dev_wer": 0.41,
     "dev_per": 0.1},
    {"epoch": 1.5, "train_loss": 0.8},  # no step: left out of step-based curves
    {"step": 300, "train_loss": float("nan"), "dev_wer": 0.35, "note": "text"},
]


def test_learning_curves_with_missing_keys_write_png(tmp_path):
    path = plot_learning_curves(RECORDS, tmp_path / "curves.png")
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_learning_curves_one_subplot_per_metric():
    three = png_size(learning_curves_png_bytes(RECORDS))  # train_loss, dev_wer, dev_per
    one = png_size(learning_curves_png_bytes(RECORDS, metrics=["dev_wer"]))
    assert three[1] > one[1]


def test_learning_curves_other_axis_absent_metric_and_no_records(tmp_path):
    by_epoch = plot_learning_curves(RECORDS, tmp_path / "epoch.png", x="epoch",
                                    metrics=["train_loss", "missing_metric"])
    empty = plot_learning_curves([], tmp_path / "empty.png")
    assert by_epoch.read_bytes()[:8] == PNG_MAGIC
    assert empty.read_bytes()[:8] == PNG_MAGIC


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------


METRICS = {
    "task": "g2p",
    "model": "rnn",
    "attention": "additive",
    "params": 1234567,
    "train_seconds": 754.2,
    "primary": {"name": "wer", "value": 0.2531, "higher_is_better": False},
    "dev": {"wer": 0.2417, "per": 0.0612},
    "test": {"wer": 0.2531, "per": 0.0634},
}


def make_alignments():
    return [
        {"source": list("abbey"), "target": ["AE", "B", "IY"],
         "weights": random_alignment(3, 5, seed=1),
         "legend": "word: abbey  ->  AE B IY  (reference AE B IY) \u2713"},
        {"source": list("cat"), "target": ["K", "AE", "T"],
         "weights": torch.tensor(random_alignment(3, 3, seed=2)),
         "legend": "word: <b>cat</b>  ->  K AE T"},
    ]


def test_report_is_self_contained_and_escaped(tmp_path):
    alignments = make_alignments()
    path = write_report(
        tmp_path / "run" / "report.html",
        title="G2P run <1> & friends",
        metrics=METRICS,
        config={"lr": 0.001, "attention": "additive", "hidden_dim": 256},
        curves_png=learning_curves_png_bytes(RECORDS),
        alignments=alignments,
        notes=["synthetic check: 1 < 2"],
    )
    text = path.read_text(encoding="utf-8")

    assert "G2P run &lt;1&gt; &amp; friends" in text
    assert "G2P run <1>" not in text
    for item in alignments:
        assert item["legend"].replace("<", "&lt;").replace(">", "&gt;") in text
    assert "&lt;b&gt;cat&lt;/b&gt;" in text
    assert "<b>cat" not in text
    assert "25.31%" in text  # test WER 0.2531
    assert "6.12%" in text  # dev PER 0.0612
    assert "1,234,567" in text
    assert "1 &lt; 2" in text
    assert "<details" in text and "&quot;hidden_dim&quot;: 256" in text

    payloads = DATA_URI.findall(text)
    assert len(payloads) == len(alignments) + 1
    assert text.count("data:image/png;base64,") == len(alignments) + 1
    for payload in payloads:
        assert base64.b64decode(payload)[:8] == PNG_MAGIC
    assert "http://" not in text and "https://" not in text
    assert "<script" not in text.lower()


def test_report_without_curves_has_one_image_per_alignment(tmp_path):
    alignments = make_alignments()
    path = write_report(tmp_path / "report.html", title="t", metrics={}, config={},
                        curves_png=None, alignments=alignments)
    assert path.read_text(encoding="utf-8").count("data:image/png;base64,") == len(alignments)


def test_report_names_the_bad_alignment(tmp_path):
    alignments = make_alignments()
    alignments[1]["weights"] = np.zeros((2, 2))
    with pytest.raises(ValueError, match=r"alignments\[1\].*weights"):
        write_report(tmp_path / "report.html", title="t", metrics=METRICS, config={},
                     curves_png=None, alignments=alignments)
    assert not (tmp_path / "report.html").exists()


def test_alignment_png_bytes_is_png():
    assert alignment_png_bytes(random_alignment(2, 3), list("abc"), ["x", "y"])[:8] == PNG_MAGIC


def test_import_does_not_load_pyplot():
    code = "import sys, attnzoo.viz; sys.exit('matplotlib.pyplot' in sys.modules)"
    repo_root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=repo_root, timeout=120)
    assert result.returncode == 0


# --------------------------------------------------------------------------- runs side by side
def test_overlay_curves_draw_every_run_on_shared_axes():
    records = [{"seconds": 60.0 * i, "minutes": i, "train_loss": 2.0 / (i + 1), "dev_wer": 0.5 - 0.1 * i}
               for i in range(4)]
    series = [{"label": f"{g} seed {s}", "group": g, "records": records} for g in ("additive", "dot") for s in (0, 1)]
    png = overlay_curves_png_bytes(series, ["train_loss", "dev_wer"], x="minutes")
    assert png[:8] == PNG_MAGIC and png_size(png)[1] > png_size(png)[0] / 3  # two stacked subplots
    assert overlay_curves_png_bytes([], ["dev_wer"])[:8] == PNG_MAGIC  # nothing recorded: an empty subplot
    with pytest.raises(ValueError, match="metrics must name"):
        overlay_curves_png_bytes(series, [])


def test_comparison_page_is_self_contained_and_escaped(tmp_path):
    cell = {"png": alignment_png_bytes(random_alignment(2, 3), list("abc"), ["x", "y"]), "legend": "x y <✓>"}
    path = write_comparison(
        tmp_path / "compare.html", title="Comparison <g2p>", subtitle="1 minute per run",
        headers=["rank", "attention", "test wer"], rows=[["1", "dot", "20.00%"], ["2", "additive", "21.00%"]],
        links=["dot-seed0/report.html", None], numeric=[True, False, True],
        curves_png=figure_png_bytes(new_figure((2, 2))), columns=["dot", "additive"],
        examples=[{"legend": "abc", "cells": {"dot": cell}}], notes=["std over seeds"])
    html = path.read_text()
    assert "Comparison &lt;g2p&gt;" in html and "x y &lt;✓&gt;" in html and "<script" not in html
    assert 'href="dot-seed0/report.html"' in html and html.count("<img") == 2  # curves + the one cell given
    assert all(base64.b64decode(m)[:8] == PNG_MAGIC for m in DATA_URI.findall(html))
    assert '<td class="muted">—</td>' in html  # additive has no map for this example
    with pytest.raises(ValueError, match=r"rows\[0\] has 2 cells but there are 3 headers"):
        write_comparison(tmp_path / "x.html", title="t", headers=["a", "b", "c"], rows=[["1", "2"]])
def test_word_maps_draw_one_panel_per_word_under_the_image():
    from attnzoo.viz.maps import word_maps_png_bytes

    rng = np.random.default_rng(0)
    image, maps = rng.random((32, 160)), [rng.random((8, 40)) for _ in range(3)]
    one = word_maps_png_bytes(image, maps[:1], ["three"], boxes=[(4, 10, 24, 30)], title="three")
    three = word_maps_png_bytes(image, maps, ["three", "one", "</s>"], boxes=[(4, 10, 24, 30), (5, 40, 25, 55), None])
    assert one[:8] == three[:8] == b"\x89PNG\r\n\x1a\n" and len(three) > len(one)
    with pytest.raises(ValueError, match="3 maps need as many words and boxes, got 2 words"):
        word_maps_png_bytes(image, maps, ["a", "b"])
    with pytest.raises(ValueError, match=r"image must be \(H, W\)"):
        word_maps_png_bytes(image[None], maps, ["a", "b", "c"])
