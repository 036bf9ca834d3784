"""The README's Python examples run, and its commands are the ones CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks
    namespace: dict = {}
    for block in blocks:  # in order, sharing one namespace, as a reader would paste them
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["context"].shape == (2, 64)


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    test_command = next(c.strip() for c in commands if "pytest" in c)
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci


def test_the_lab_example_trains_from_python(monkeypatch, tmp_path):
    """The README's `attnzoo.train("g2p", minutes=1)` block, run as written but with a budget of seconds and a
    tiny model (the call's own arguments pass through)."""
    import attnzoo

    block = re.search(r"```python train\n(.*?)```", README, flags=re.S).group(1)
    real = attnzoo.train
    calls = []

    def tiny(task, minutes=None, **kw):
        calls.append((task, minutes))
        return real(task, epochs=0.01, out=tmp_path / "run", beam_size=1, progress=False,
                    options={"embed_dim": 8, "hidden_dim": 8, "decoder_dim": 16, "attention_hidden": 8,
                             "enc_layers": 1}, **kw)

    monkeypatch.setattr(attnzoo, "train", tiny)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    run, maps = namespace["run"], namespace["maps"]
    assert calls == [("g2p", 1)] and run.task == "g2p" and (tmp_path / "run" / "report.html").is_file()
    alignment = maps["alignment"]
    assert alignment.columns == list("zoo") and alignment.weights.shape == (len(alignment.rows), 3)
    assert torch_allclose_rows(alignment.weights)


def torch_allclose_rows(weights) -> bool:
    """Every row of an alignment is a distribution over the letters."""
    import torch

    return bool(torch.allclose(weights.float().sum(-1), torch.ones(weights.shape[0]), atol=1e-4))
