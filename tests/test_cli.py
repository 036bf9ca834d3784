"""The command line, end to end on the real dictionary with a tiny model."""

import json
import subprocess
import sys

import pytest

from attnzoo.cli import main

TINY = ["--set", "embed_dim=8", "--set", "hidden_dim=8", "--set", "decoder_dim=16", "--set", "attention_hidden=8",
        "--set", "enc_layers=1"]


def run(*args):
    return subprocess.run([sys.executable, "-m", "attnzoo", *args], capture_output=True, text=True, timeout=600)


def test_list_prints_every_content_mechanism(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("dot", "scaled_dot", "general", "additive", "cosine"):
        assert any(line.split()[:2] == [name, "content"] for line in out.splitlines())
    assert "Bahdanau" in out and "Neural Turing Machines" in out


@pytest.mark.parametrize("args, words", [
    (["train", "g2p", "--attention", "additiv"], "did you mean 'additive'"),
    (["train", "g2p", "--attention", "mha"], "does not fit a step-wise decoder"),
    (["train", "g2p", "--minutes", "-1"], "minutes must be positive"),
    (["train", "g2p", "--batch-size", "0"], "--batch-size must be positive"),
    (["train", "g2p", "--set", "decoder_dims=3"], "did you mean 'decoder_dim'"),
    (["train", "g2p", "--split", "rand"], "unknown split"),
    (["train", "g2p", "--ema", "1"], "--ema must be in [0, 1)"),
    (["eval", "/nonexistent/run"], "does not exist"),
    (["train", "lm", "--attention", "additive"], "unknown attention (the lm's slot)"),
    (["train", "lm", "--set", "position=alibi"], "did you mean 'positions'"),
    (["train", "g2p", "--model", "transformer", "--attention", "additive"], "does not fit the transformer"),
])
def test_bad_requests_get_one_line_and_exit_2(args, words, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("attnzoo: error:") and words in err[0], err


def test_unreadable_run_directory(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"format_version": 1, "task": "g2p"}))
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert main(["pronounce", str(tmp_path), "hello"]) == 2
    err = capsys.readouterr().err
    assert "cannot be read: it is not a PyTorch checkpoint" in err and "Traceback" not in err
    (tmp_path / "config.json").write_text(json.dumps({"format_version": 99, "task": "g2p"}))
    assert main(["eval", str(tmp_path)]) == 2


@pytest.mark.slow
def test_train_eval_pronounce_show_end_to_end(tmp_path):
    out = tmp_path / "run"
    r = run("-q", "train", "g2p", "--epochs", "0.03", "--beam", "2", "--out", str(out), *TINY)
    assert r.returncode == 0, r.stderr
    assert "test  WER" in r.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"task", "model", "attention", "params", "train_seconds", "primary", "dev", "test"}
    assert metrics["primary"] == {"name": "wer", "value": metrics["test"]["wer"], "higher_is_better": False}
    assert metrics["test"]["words"] == 11994 and 0 < metrics["test"]["per"] < 1.5
    assert json.loads((out / "config.json").read_text())["format_version"] == 1
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert lines and "dev_wer" in json.loads(lines[-1])
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 12 and "WER" in html.upper()

    r = run("eval", str(out), "--beam", "2")
    assert r.returncode == 0 and f"{metrics['test']['wer']:.2%}" in r.stdout, r.stdout + r.stderr
    r = run("pronounce", str(out), "hello", "World")
    assert r.returncode == 0 and r.stdout.splitlines()[0].startswith("hello\t")
    r = run("pronounce", str(out), "héllo")
    assert r.returncode == 2 and "'é'" in r.stderr and "Traceback" not in r.stderr
    png = tmp_path / "a.png"
    r = run("show", str(out), "attention", "--out", str(png))
    assert r.returncode == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_lm_train_generate_eval_end_to_end(tmp_path):
    out = tmp_path / "lm"
    r = run("-q", "train", "lm", "--epochs", "0.01", "--out", str(out), "--set", "dim=32", "--set", "layers=1",
            "--set", "context=32")
    assert r.returncode == 0, r.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["primary"]["name"] == "bpc" and 0 < metrics["test"]["bpc"] < 8
    html = (out / "report.html").read_text()
    assert "Attention maps" in html and html.count("data:image/png;base64,") >= 2
    r = run("generate", str(out), "--prompt", "ROMEO:", "--chars", "40", "--temperature", "0")
    assert r.returncode == 0 and r.stdout.startswith("ROMEO:") and len(r.stdout.rstrip("\n")) == 46
    r = run("eval", str(out))
    assert r.returncode == 0 and f"{metrics['test']['bpc']:.3f} bits/char" in r.stdout


@pytest.mark.slow
def test_translate_train_translate_show_eval_end_to_end(tmp_path):
    out = tmp_path / "tr"
    r = run("-q", "train", "translate", "--attention", "location_aware", "--epochs", "0.01", "--beam", "2",
            "--out", str(out), *TINY, "--set", "attention_options={\"channels\": 4, \"kernel_size\": 5}")
    assert r.returncode == 0, r.stderr
    assert "test  BLEU" in r.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["primary"] == {"name": "bleu", "value": metrics["test"]["bleu"], "higher_is_better": True}
    assert metrics["test"]["sentences"] > 1000 and 0 <= metrics["test"]["chrf"] <= 100
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["test_chapters"] == 60 and config["attention"] == "location_aware"
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 6 and "BLEU" in html.upper()
    r = run("translate", str(out), "En el principio crió Dios los cielos y la tierra.", "--beam", "1")
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
    png = tmp_path / "s.png"
    r = run("show", str(out), "Y dijo Dios: Sea la luz.", "--out", str(png))
    assert r.returncode == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", r.stderr
    r = run("eval", str(out), "--beam", "2")
    assert r.returncode == 0 and f"BLEU {metrics['test']['bleu']:.2f}" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("command", ["train", "compare"])
def test_every_tasks_help_prints(command, capsys):
    """--help of every task's train and compare (argparse %-formats help text: a bare "90%" once crashed it)."""
    from attnzoo.tasks import TASKS

    for task in TASKS:
        with pytest.raises(SystemExit) as stop:
            main([command, task, "--help"])
        assert stop.value.code == 0, task
        assert "--minutes" in capsys.readouterr().out, task
