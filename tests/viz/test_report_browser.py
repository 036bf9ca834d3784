"""The reports render in a real browser: headless Chromium loads every picture of every kind of report.

`.ci/run` installs Debian's chromium; where no Chromium can be found the test is skipped and says so.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from attnzoo.cli import main

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

#: appended to a copy of the report: once the page has loaded, write what became of each picture into the DOM
CHECK = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const broken = images.filter(i => !(i.complete && i.naturalWidth > 0 && i.naturalHeight > 0)).map(i => i.alt);
  document.body.setAttribute("data-images", String(images.length));
  document.body.setAttribute("data-broken", JSON.stringify(broken));
});
</script>
"""


def browser() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    pytest.skip("no Chromium to render reports with: `apt-get install chromium` (.ci/run installs it)")


def rendered(report) -> tuple[int, list[str]]:
    """(pictures on the page, alt texts of those that did not load) as headless Chromium sees them."""
    html = report.read_text(encoding="utf-8")
    checked = report.with_name("report-check.html")
    checked.write_text(html.replace("</body>", CHECK + "</body>"), encoding="utf-8")
    done = subprocess.run([browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           f"--user-data-dir={report.parent / 'chromium-profile'}", "--virtual-time-budget=20000",
                           "--dump-dom", checked.as_uri()], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    body = re.search(r'<body[^>]*data-images="(\d+)"[^>]*data-broken="([^"]*)"', done.stdout)
    assert body, f"the page's load handler never ran: {done.stdout[:500]!r} {done.stderr[-1000:]!r}"
    return int(body.group(1)), json.loads(body.group(2).replace("&quot;", '"'))


def tiny_run(tmp_path, task: str, *args: str):
    out = tmp_path / task
    if task == "lm":
        data = tmp_path / "corpus.txt"
        data.write_text("".join(f"line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(60)))
        model = ["--set", "dim=16", "--set", "layers=1", "--set", "num_heads=2", "--set", "context=32"]
    else:
        data = tmp_path / "pairs.tsv"
        words = [w for w in ("abc bad cab dab fed bead face cafe deaf fade aced dace babe cede".split())]
        data.write_text("".join(f"{w}\t{' '.join(reversed(w))}\n" for w in words * 3))
        model = list(args)
    assert main(["-q", "train", task, "--data", str(data), "--epochs", "1", "--batch-size", "8", "--out", str(out),
                 *model]) == 0
    return out / "report.html"


@pytest.mark.slow
@pytest.mark.parametrize("task, args", [
    ("seq2seq", ("--set", "embed_dim=8", "--set", "hidden_dim=8", "--set", "decoder_dim=16",
                 "--set", "attention_hidden=8")),
    ("seq2seq", ("--model", "transformer", "--set", "dim=16", "--set", "num_heads=2", "--set", "enc_layers=1",
                 "--set", "dec_layers=1")),
    ("lm", ()),
], ids=["rnn-seq2seq", "transformer-seq2seq", "lm"])
def test_every_picture_of_the_report_loads_in_headless_chromium(tmp_path, task, args):
    browser()  # skip before training when there is no browser
    report = tiny_run(tmp_path, task, *args)
    in_source = report.read_text(encoding="utf-8").count("<img ")
    images, broken = rendered(report)
    assert images == in_source and images >= 2, (images, in_source)  # learning curves and attention maps at least
    assert broken == [], f"pictures that did not load: {broken}"
