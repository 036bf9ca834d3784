"""The qa task end to end on tiny synthetic story sets: run directory, report, eval, load, resume, bad flags."""

import json

import pytest
import torch

import attnzoo
from attnzoo.cli import main
from attnzoo.tasks import qa
from attnzoo.training.checkpoint import TRAIN_STATE
from attnzoo.training.trainer import FAULT_ENV

TINY = ["--stories", "60", "--set", "dim=16", "--device", "cpu"]


def tiny_config(**kw):
    return qa.QAConfig(**{**dict(stories=100, dev_stories=20, test_stories=20, epochs=30, lr=2e-2, device="cpu"),
                          **kw})


def test_a_tiny_memnet_run_beats_chance_and_writes_its_run_directory(tmp_path):
    m = qa.train(tiny_config(), tmp_path, model_overrides={"dim": 20}, progress=False)
    assert m["primary"] == {"name": "accuracy", "value": m["test"]["accuracy"], "higher_is_better": True}
    assert m["test"]["accuracy"] > m["test"]["majority_answer_accuracy"] + 0.2, m["test"]
    assert m["story_task"] == "single" and m["synthetic"] and m["test"]["questions"] == 100
    assert len(m["test"]["hop_support_share"]) == 3
    assert 0 <= m["test"]["last_hop_support_share"] <= m["test"]["support_share"] <= 1
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert set(saved) >= {"task", "model", "attention", "params", "train_seconds", "primary", "dev", "test"}
    assert saved["task"] == "qa" and saved["model"] == "memnet" and saved["attention"] == "dot"
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["format_version"] == 1 and config["data"]["synthetic"] and config["data"]["train_questions"] == 500
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert lines and "dev_accuracy" in json.loads(lines[-1]) and "dev_support_share" in json.loads(lines[-1])
    html = (tmp_path / "report.html").read_text()
    assert "Synthetic data" in html and "Weight on the supporting facts" in html
    assert html.count("data:image/png;base64,") >= 4  # the curves and at least three stories

    run = attnzoo.load(tmp_path)
    assert run.task == "qa" and not run.model.training
    out = run.answer(["Mary moved to the bathroom.", "John went to the hallway."], "Where is Mary?")
    assert out.weights.shape == (3, 2) and out.answer in run.vocab.tokens
    torch.testing.assert_close(out.weights.sum(-1), torch.ones(3))
    out = run.predict("Sandra went to the garden. Daniel moved to the office.", question="Where is Sandra?")
    assert out.sentences == ["Sandra went to the garden.", "Daniel moved to the office."]
    with pytest.raises(ValueError, match="words the model never saw: 'zebra'"):
        run.answer(["Mary moved to the zebra."], "Where is Mary?")
    again = qa.evaluate_run(tmp_path)
    assert again["test"]["accuracy"] == pytest.approx(m["test"]["accuracy"])


def test_the_reader_trains_with_a_content_mechanism_of_the_registry(tmp_path):
    m = qa.train(tiny_config(epochs=2, story_task="yesno", model="reader"), tmp_path, attention="general",
                 progress=False, model_overrides={"embed_dim": 8, "hidden_dim": 8})
    assert m["model"] == "reader" and m["attention"] == "general"
    assert len(m["test"]["hop_support_share"]) == 1  # one attention: K = 1
    assert (tmp_path / "report.html").is_file()


def test_the_command_line_trains_evaluates_and_resumes(tmp_path, monkeypatch, capsys):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    args = ["-q", "train", "qa", "--model", "reader", "--story-task", "two", "--epochs", "2", *TINY[:2],
            "--set", "embed_dim=8", "--set", "hidden_dim=8", "--device", "cpu"]
    assert main([*args, "--out", str(whole)]) == 0
    out = capsys.readouterr().out
    assert "qa reader additive two (synthetic bAbI-style stories)" in out and "test  accuracy" in out
    monkeypatch.setenv(FAULT_ENV, "7:INT")  # Ctrl-C at step 7: saved, evaluated, reported, then resumed
    assert main([*args, "--out", str(cut)]) == 0
    assert json.loads((cut / "metrics.json").read_text())["interrupted"]
    monkeypatch.delenv(FAULT_ENV)
    assert main(["-q", "train", "qa", "--resume", str(cut)]) == 0
    a = torch.load(whole / TRAIN_STATE, weights_only=True)["trainer"]
    b = torch.load(cut / TRAIN_STATE, weights_only=True)["trainer"]
    assert a["step"] == b["step"] and a["finished"] and b["finished"]
    for k in a["model"]:  # the same weights as the uninterrupted run, dropout draws included
        assert torch.equal(a["model"][k], b["model"][k]), k
    capsys.readouterr()
    assert main(["eval", str(whole)]) == 0
    assert "test  accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("args, words", [
    (["train", "qa", "--story-task", "too"], "unknown story task 'too'; expected one of 'single', 'two', 'yesno'"),
    (["train", "qa", "--model", "memnett"], "did you mean 'memnet'"),
    (["train", "qa", "--attention", "additive"], "unknown attention (the memnet's slot) 'additive'"),
    (["train", "qa", "--model", "reader", "--attention", "mha"], "unknown attention (the reader's slot) 'mha'"),
    (["train", "qa", "--set", "hop=2"], "did you mean 'hops'"),
    (["train", "qa", "--set", "hops=two"], "memnet model option hops takes int"),
    (["train", "qa", "--stories", "0"], "--stories must be positive"),
    (["train", "g2p", "--story-task", "two"], "--story-task is for `train qa`"),
])
def test_bad_requests_get_one_line_and_exit_2(args, words, capsys, tmp_path):
    assert main([*args, "--out", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("attnzoo: error:") and words in err[0], err
    assert not (tmp_path / "never").exists()
