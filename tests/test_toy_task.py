"""A task defined in this file and registered with one line works with every command and from Python:
`attnzoo train toy`, `eval`, `show`, `compare toy --attention additive,dot`, `attnzoo.load(dir).predict(...)`."""

import json
import random
from dataclasses import dataclass

import pytest
import torch

import attnzoo
from attnzoo.cli import main
from attnzoo.data.vocab import Vocab
from attnzoo.models.decoding import decode
from attnzoo.models.factory import build_seq2seq, restore_seq2seq
from attnzoo.tasks import TASKS, Map, register
from attnzoo.tasks.encdec import EncoderDecoderTask, Seq2SeqOptions, alignment_examples

LETTERS = "abcdef"
TINY = dict(embed_dim=16, hidden_dim=32, decoder_dim=64, attention_hidden=16, enc_layers=1)


@dataclass
class ToyConfig(Seq2SeqOptions):
    strings: int = 600  # synthetic strings of 2-6 letters, 80% for training
    batch_size: int = 32
    beam_size: int = 1


class Reverser:
    def __init__(self, model, vocab, device):
        self.model, self.vocab, self.device = model, vocab, device

    @torch.no_grad()
    def reverse(self, words, beam_size=1):
        src = torch.tensor([self.vocab.encode(list(w)) for w in words])  # (B, S): equal lengths in these tests
        hyps = decode(self.model.eval(), src, torch.full((len(words),), src.shape[1]), 2 * src.shape[1] + 2,
                      beam_size=beam_size)
        return [("".join(self.vocab.decode(t)), w) for t, w in zip(hyps.tokens, hyps.weights)]


def labels(out, weights):
    """The letters emitted at each of the T steps, then </s> if it ended."""
    return list(out) + ["</s>"] * (weights.shape[0] - len(out))


def error(r, words):
    return sum(out != w[::-1] for w, (out, _) in zip(words, r.reverse(words))) / len(words)


class Toy(EncoderDecoderTask):
    name, description, Config, unit, verb = "toy", "reverse strings of letters (synthetic)", ToyConfig, "strings", \
        "reverse"

    def load_data(self, cfg):
        rng = random.Random(cfg.seed)
        words = ["".join(rng.choice(LETTERS) for _ in range(4)) for _ in range(cfg.strings)]
        n = len(words) // 10
        return {"vocab": Vocab(LETTERS), "train": words[2 * n:], "dev": words[:n], "test": words[n:2 * n]}

    def describe(self, d):
        return {part: len(d[part]) for part in ("train", "dev", "test")}

    def build(self, cfg, d, attention, overrides):
        v = d["vocab"]
        return build_seq2seq(cfg.model, len(v), len(v), attention, {**TINY, **(overrides or {})}, pad_id=v.pad_id,
                             bos_id=v.bos_id, eos_id=v.eos_id)

    def predictor(self, model, d, device):
        return Reverser(model, d["vocab"], device)

    def saved(self, d):
        return {"vocab": d["vocab"].to_list()}

    def training(self, cfg, d, r):
        v = d["vocab"]
        pairs = [(v.encode(list(w)), v.encode(list(w[::-1]), add_bos=True, add_eos=True)) for w in d["train"]]
        return self.pairs_training(cfg, pairs, v.pad_id, r.device, lambda m: {"dev_error": error(r, d["dev"])},
                                   "dev_error")

    def final(self, cfg, d, r):
        dev, test = error(r, d["dev"]), error(r, d["test"])
        return {"primary": {"name": "error", "value": test, "higher_is_better": False},
                "dev": {"error": dev}, "test": {"error": test}}

    def restore(self, config, checkpoint, device):
        v = Vocab.from_list(checkpoint["vocab"])
        return Reverser(restore_seq2seq(config, checkpoint["model"], v).to(device), v, device)

    def evaluate(self, run_dir, config, r, **_):
        d = self.load_data(self.saved_config(config))
        return {"dev": {"error": error(r, d["dev"])}, "test": {"error": error(r, d["test"])}}

    def attention(self, r, word, **_):
        out, weights = r.reverse([word])[0]
        return {"alignment": Map(weights, labels(out, weights), list(word), f"{word} -> {out}")}

    def examples(self, runs, config, count, beam):
        words = self.load_data(self.saved_config(config))["test"][:count]
        return alignment_examples(runs, words, words, {w: {w[::-1]} for w in words}, beam,
                                  lambda o, w: (o[1], list(w), labels(*o), o[0])), "letters"


@pytest.fixture
def toy():
    register(Toy())  # the one line that adds a task
    yield TASKS["toy"]
    TASKS._entries.pop("toy")


def test_a_task_of_a_few_dozen_lines_works_with_every_command(toy, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["-q", "train", "toy", "--epochs", "6", "--out", str(run_dir), "--seed", "1", "--lr", "1e-2"]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["task"] == "toy" and metrics["model"] == "rnn" and metrics["attention"] == "additive"
    assert f"toy rnn additive: {metrics['params']:,} parameters" in out and "report:" in out
    assert metrics["test"]["error"] < 0.7, metrics  # it learned something: random outputs are ~100% wrong
    assert json.loads((run_dir / "config.json").read_text())["task_config"]["seed"] == 1

    assert main(["eval", str(run_dir)]) == 0
    assert f"error {metrics['test']['error']:.4g}" in capsys.readouterr().out  # the same figure again

    png = tmp_path / "a.png"
    assert main(["show", str(run_dir), "abcd", "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    run = attnzoo.load(run_dir)
    (text, weights), = run.predict(["abcd"])
    assert run.task == "toy" and set(text) <= set(LETTERS) and weights.shape[1] == 4
    maps = run.attention("abcd")
    assert list(maps) == ["alignment"] and maps["alignment"].columns == list("abcd")
    assert run.evaluate("test") == {"error": metrics["test"]["error"]}

    cmp = tmp_path / "cmp"
    assert main(["-q", "compare", "toy", "--attention", "additive,dot", "--epochs", "1", "--out", str(cmp)]) == 0
    rows = json.loads((cmp / "compare.json").read_text())["rows"]
    assert sorted(r["attention"] for r in rows) == ["additive", "dot"] and rows[0]["primary"] == "error"
    assert (cmp / "compare.html").read_text().count("<img") == 1 + 2 * 4  # curves, 4 examples x 2 mechanisms


def test_a_registered_task_is_listed_and_refuses_flags_of_other_tasks(toy, capsys):
    assert main(["list", "--kind", "tasks"]) == 0
    assert any(line.startswith("toy ") for line in capsys.readouterr().out.splitlines())
    assert main(["train", "toy", "--story-task", "two"]) == 2
    assert "--story-task is for `train qa`" in capsys.readouterr().err
