"""Your own data: `train seq2seq --data pairs.tsv` and `train lm --data corpus.txt`, tiny models."""

import json
import random
import subprocess
import sys

import pytest
import torch

import attnzoo
from attnzoo.cli import main
from attnzoo.data.userdata import Pair, references, split_pairs

TINY = dict(embed_dim=8, hidden_dim=8, decoder_dim=16, attention_hidden=8, enc_layers=1)
TINY_ARGS = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]


def reversal_pairs(n=40, seed=0):
    """Words of a few letters and their letters backwards, space-separated: a small lexicon."""
    rng = random.Random(seed)
    words = sorted({"".join(rng.choice("abcdef") for _ in range(rng.randint(2, 5))) for _ in range(n)})
    return [Pair(w, " ".join(reversed(w)), i + 1) for i, w in enumerate(words)]


def write_tsv(path, pairs):
    path.write_text("# source\ttarget\n" + "".join(f"{p.source}\t{p.target}\n" for p in pairs), encoding="utf-8")
    return path


def run(*args):
    return subprocess.run([sys.executable, "-m", "attnzoo", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("lines, args, words", [
    ("a\tb\nc\td\ne f\n", [], "pairs.tsv:3: expected two tab-separated columns (source<TAB>target), got no tab"),
    ("# nothing\n", [], "pairs.tsv has no pairs"),
    (None, [], "no such file"),
    ("a\tb\n", ["--units", "chars"], "unknown units 'chars'"),
    ("a\tb\n", ["--model", "transformer", "--attention", "additive"], "does not fit the transformer"),
])
def test_seq2seq_bad_data_gets_one_line_and_exit_2(tmp_path, capsys, lines, args, words):
    path = tmp_path / "pairs.tsv"
    if lines is not None:
        path.write_text(lines)
    assert main(["train", "seq2seq", "--data", str(path), "--out", str(tmp_path / "run"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("attnzoo: error:") and words in err[0], err
    assert not (tmp_path / "run").exists()  # nothing written


@pytest.mark.parametrize("args, words", [
    (["train", "seq2seq"], "train seq2seq needs --data FILE"),
    (["train", "g2p", "--data", "x.tsv"], "--data is for `train lm` and `train seq2seq`"),
    (["train", "lm", "--units", "word"], "--units is for `train seq2seq`"),
])
def test_data_options_only_where_they_fit(capsys, args, words):
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err


def test_lm_data_too_short_for_a_window(tmp_path, capsys):
    (tmp_path / "c.txt").write_text("to be or not to be " * 20)
    assert main(["train", "lm", "--data", str(tmp_path / "c.txt"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "c.txt has 380 characters: too short" in err and "--set context=N" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_seq2seq_train_load_and_eval_in_python(tmp_path):
    from attnzoo.tasks import seq2seq

    pairs = reversal_pairs()
    cfg = seq2seq.PairsConfig(units="char,word", epochs=1, batch_size=8, beam_size=2, device="cpu")
    m = seq2seq.train(cfg, tmp_path / "run", model_overrides=TINY, progress=False, pairs=pairs)
    assert m["primary"] == {"name": "ser", "value": m["test"]["ser"], "higher_is_better": False}
    assert set(m["test"]) >= {"ser", "exact_match", "token_error", "bleu", "chrf", "sources"}
    assert m["test"]["sources"] == 2 and m["units"] == "char,word"
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["task"] == "seq2seq" and "tiny" in config["data"]["warning"]
    test_sources = {line.split("\t")[0] for line in (tmp_path / "run" / "test.tsv").read_text().splitlines()}
    assert test_sources == set(references(split_pairs(pairs, seed=0).test))  # the seeded split, kept in the run
    html = (tmp_path / "run" / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and "tiny" in html

    again = seq2seq.evaluate_run(tmp_path / "run", beam_size=2)
    assert again["test"]["ser"] == m["test"]["ser"] and again["test"]["token_error"] == m["test"]["token_error"]
    run = attnzoo.load(tmp_path / "run")
    out = run.translate(["abc"], beam_size=1)[0]
    assert out.source_tokens == ["a", "b", "c"] and out.weights.shape[1] == 3
    assert torch.allclose(out.weights.sum(-1), torch.ones(out.weights.shape[0]), atol=1e-5)


@pytest.mark.slow
def test_seq2seq_cli_end_to_end_bpe_transformer(tmp_path):
    text = ["the cat sat on the mat", "a dog ran to the cat", "the mat is red", "a red dog sat"]
    pairs = [Pair(f"{a} {i}", f"{a.upper()} {i}", i) for i, a in enumerate(text * 6)]
    data = write_tsv(tmp_path / "pairs.tsv", pairs)
    out = tmp_path / "run"
    r = run("-q", "train", "seq2seq", "--data", str(data), "--units", "bpe", "--model", "transformer", "--epochs",
            "0.5", "--beam", "2", "--out", str(out), "--set", "dim=16", "--set", "num_heads=2", "--set", "ffn_dim=16",
            "--set", "enc_layers=1", "--set", "dec_layers=1")
    assert r.returncode == 0, r.stderr
    assert "test  wrong outputs" in r.stdout and "BLEU" in r.stdout, r.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["primary"]["name"] == "bleu" and metrics["primary"]["higher_is_better"]
    r = run("translate", str(out), "the cat 3", "a dog", "--beam", "1")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 2, r.stderr
    png = tmp_path / "a.png"
    r = run("show", str(out), "the red cat", "--out", str(png))
    assert r.returncode == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", r.stderr
    r = run("eval", str(out), "--beam", "2")
    assert r.returncode == 0 and f"BLEU {metrics['test']['bleu']:.2f}" in r.stdout, r.stdout + r.stderr
    r = run("pronounce", str(out), "cat")
    assert r.returncode == 2 and "is a seq2seq run" in r.stderr and "`attnzoo translate DIR`" in r.stderr


@pytest.mark.slow
def test_lm_on_your_own_text_trains_evaluates_and_generates_without_the_plays(tmp_path, capsys, monkeypatch):
    from attnzoo.data import MissingDataError, shakespeare

    def no_plays():
        raise MissingDataError(shakespeare.INSTALL_HINT)

    monkeypatch.setattr(shakespeare, "plays_dir", no_plays)  # the Shakespeare package is not needed
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(60)))
    out = tmp_path / "lm"
    assert main(["-q", "train", "lm", "--data", str(corpus), "--epochs", "0.3", "--batch-size", "8", "--out", str(out),
                 "--set", "dim=16", "--set", "layers=1", "--set", "num_heads=2", "--set", "context=32"]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["path"] == str(corpus.resolve()) and "test_plays" not in config["data"]
    assert (out / "test.txt").read_text() == corpus.read_text()[-metrics["test"]["chars"]:]
    assert f"{metrics['test']['bpc']:.3f} bits/char" in printed and "Text: " in (out / "report.html").read_text()
    assert main(["eval", str(out)]) == 0
    assert f"test  {metrics['test']['bpc']:.3f} bits/char" in capsys.readouterr().out
    assert main(["generate", str(out), "--prompt", "line", "--chars", "10", "--temperature", "0"]) == 0
    assert capsys.readouterr().out.startswith("line")
