"""`attnzoo compare`: several mechanisms under one budget, a leaderboard, compare.html and compare.json.

The runs are tiny seq2seq models on a tiny TSV (seconds of CPU each); the
checks that need no training (bad input, a finished run trained with other
flags, the ranking) use no model at all.
"""

import base64
import json
import logging
import re
import sys
from pathlib import Path

import pytest

from attnzoo.cli import main
from attnzoo.compare import Row, attention_examples, format_board, leaderboard, parse_mechanisms

sys.path.insert(0, str(Path(__file__).parent))
from test_cli_errors import edit_json, tiny_g2p_run  # noqa: E402
from test_seq2seq_task import TINY_ARGS, reversal_pairs, write_tsv  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def compare_args(tmp_path, *extra):
    data = write_tsv(tmp_path / "pairs.tsv", reversal_pairs())
    return ["compare", "seq2seq", "--data", str(data), "--units", "char,word", "--epochs", "1", "--batch-size", "8",
            "--beam", "2", "--examples", "2", "--out", str(tmp_path / "cmp"), *TINY_ARGS, *extra]


@pytest.mark.parametrize("argv, words", [
    (["--attention", "additive,dott"], "unknown attention 'dott'; did you mean 'dot'?"),
    (["--attention", ""], "--attention needs a comma-separated list of mechanisms, e.g. --attention additive,dot"),
    (["--attention", " , "], "--attention needs a comma-separated list"),
    (["--attention", "additive,,dot"], "has an empty name between commas"),
    (["--attention", "dot,additive,dot"], "--attention names 'dot' more than once; list each mechanism once"),
    (["--attention", "additive,dot", "--seeds", "0"], "--seeds must be positive, got 0; e.g. --seeds 3"),
    (["--attention", "additive,dot", "--examples", "0"], "--examples must be positive"),
    (["--attention", "mha,additive", "--model", "transformer"], "attention 'additive' does not fit the transformer"),
    (["--attention", "additive", "--minutes", "1", "--epochs", "1"], "not allowed with argument"),
    ([], "the following arguments are required: --attention"),
])
def test_bad_compare_requests_get_one_line_exit_2_and_write_nothing(tmp_path, capsys, argv, words):
    out = tmp_path / "cmp"
    assert main(["compare", "g2p", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("attnzoo: error:") and words in err[0], err
    assert not out.exists()


def test_tasks_whose_slot_is_multi_head_refuse_step_wise_mechanisms(capsys):
    for task in ("lm", "classify"):
        assert main(["compare", task, "--attention", "mha,additive"]) == 2
        err = capsys.readouterr().err
        want = "unknown attention (the lm's slot) 'additive'" if task == "lm" else \
            "unknown attention 'additive' for classify (the cnn's block after each stage: none, se, cbam, nonlocal, " \
            "aaconv; the vit's slot: mha, gqa, mqa)"
        assert want in err, err


def test_parse_mechanisms_keeps_the_order_given():
    assert parse_mechanisms(" dot, additive ,location_aware") == ["dot", "additive", "location_aware"]


def test_leaderboard_ranks_in_the_metrics_direction_with_mean_and_std():
    def row(name, values, higher, decode=None):
        return Row(name, "bleu" if higher else "wer", higher, values, 1000, 10.0, "words", decode, "words",
                   [f"{name}-seed0"])

    lower = leaderboard([row("a", [0.30, 0.32], False), row("b", [0.20, 0.22], False),
                         row("c", [0.305, 0.305], False, decode=1234.5)])
    assert [r.attention for r in lower] == ["b", "c", "a"] and [r.rank for r in lower] == [1, 2, 3]
    assert lower[0].std == pytest.approx(0.0141421, rel=1e-4) and lower[1].std == 0
    higher = leaderboard([row("a", [10.0], True), row("b", [20.0], True), row("c", [10.0], True)])
    assert [r.attention for r in higher] == ["b", "a", "c"] and [r.rank for r in higher] == [1, 2, 2]
    text = format_board(lower).splitlines()
    assert len(text) == 4 and "test wer (mean ± std)" in text[0] and "train words/s  decode words/s" in text[0]
    assert re.search(r"1\s+b\s+21\.00% ± 1\.41%\s+1,000\s+10\s+—$", text[1]), text[1]  # b records no decoding
    assert text[2].endswith(" 1,234") and "30.50% ± 0.00%" in text[2]
    assert "decode" not in format_board(higher).splitlines()[0]  # no run decodes: no such column


def test_a_finished_run_trained_with_another_budget_is_refused_not_mixed_in(tmp_path, capsys):
    run = tmp_path / "cmp" / "additive-seed0"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"task": "seq2seq", "model": "rnn", "attention": "additive",
                                                 "task_config": {"seed": 0, "epochs": 1.0, "minutes": None}}))
    (run / "metrics.json").write_text(json.dumps({"interrupted": False}))
    argv = compare_args(tmp_path, "--attention", "additive,dot")
    argv[argv.index("--epochs") + 1] = "2"
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was trained with --epochs 1 but this compare asks for --epochs 2" in err[0], err
    assert "--out NEWDIR" in err[0] and not (tmp_path / "cmp" / "dot-seed0").exists()


def image_sources(html: str, base: Path) -> list[bytes]:
    """Every <img>'s bytes: a base64 data URI decoded, or the file it names (which must exist)."""
    out = []
    for src in re.findall(r'<img[^>]*\ssrc="([^"]+)"', html):
        if src.startswith("data:image/png;base64,"):
            out.append(base64.b64decode(src.split(",", 1)[1], validate=True))
        else:
            assert (base / src).is_file(), f"<img src={src!r}> names no file"
            out.append((base / src).read_bytes())
    return out


@pytest.mark.slow
def test_compare_trains_each_mechanism_then_skips_or_resumes_on_rerun(tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, logger="attnzoo")
    argv = compare_args(tmp_path, "--attention", "additive,dot")
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    out = tmp_path / "cmp"

    summary = json.loads((out / "compare.json").read_text())
    rows = summary["rows"]
    assert sorted(r["attention"] for r in rows) == ["additive", "dot"]  # exactly one row per mechanism
    assert [r["rank"] for r in rows] == sorted(r["rank"] for r in rows) and summary["seeds"] == [0]
    for r in rows:
        assert r["runs"] == [f"{r['attention']}-seed0"] and len(r["values"]) == 1 and r["params"] > 0
        assert r["train_unit"] == "pairs" and r["train_items_per_second"] > 0
        assert r["decode_unit"] == "sources" and r["decode_items_per_second"] > 0
        metrics = json.loads((out / r["runs"][0] / "metrics.json").read_text())
        assert metrics["attention"] == r["attention"] and metrics["primary"]["value"] == r["values"][0]
        assert json.loads((out / r["runs"][0] / "config.json").read_text())["task_config"]["epochs"] == 1.0

    board = stdout[stdout.index("seq2seq · rnn · 1 epoch per run: test ser, seed 0; lower is better"):]
    lines = board.splitlines()
    assert lines[1].split()[:3] == ["rank", "attention", "test"] and "decode sources/s" in lines[1]
    assert {lines[2].split()[1], lines[3].split()[1]} == {"additive", "dot"} and lines[4].startswith("compare: ")

    html = (out / "compare.html").read_text()
    images = image_sources(html, out)
    assert len(images) == 1 + 2 * 2  # the learning curves, then 2 examples x 2 mechanisms
    assert all(img[:8] == PNG for img in images)
    assert (out / "curves.png").read_bytes()[:8] == PNG and images[0] == (out / "curves.png").read_bytes()
    assert "<th>additive</th>" in html and "<th>dot</th>" in html and 'href="dot-seed0/report.html"' in html

    # rerun: both finished runs are skipped, nothing retrained
    stamps = {r: (out / f"{r}-seed0" / "metrics.json").stat().st_mtime_ns for r in ("additive", "dot")}
    caplog.clear()
    assert main(argv) == 0
    skipped = [m for m in caplog.messages if m.startswith("skipping")]
    assert len(skipped) == 2 and "already trained" in skipped[0]
    assert stamps == {r: (out / f"{r}-seed0" / "metrics.json").stat().st_mtime_ns for r in ("additive", "dot")}

    # a run killed after training, before metrics.json: resumed from its training state, the other skipped
    (out / "dot-seed0" / "metrics.json").unlink()
    caplog.clear()
    assert main(argv) == 0
    assert any("dot seed 0" in m and "resuming" in m for m in caplog.messages), caplog.messages
    assert (out / "dot-seed0" / "metrics.json").is_file()
    assert (out / "additive-seed0" / "metrics.json").stat().st_mtime_ns == stamps["additive"]


@pytest.mark.slow
def test_compare_lm_on_a_text_file_with_the_multi_head_variants(tmp_path, capsys):
    (tmp_path / "c.txt").write_text("to be or not to be, that is the question. " * 60)
    out = tmp_path / "lm"
    assert main(["compare", "lm", "--data", str(tmp_path / "c.txt"), "--attention", "mha,mqa", "--epochs", "1",
                 "--batch-size", "8", "--out", str(out), "--set", "dim=16", "--set", "layers=1",
                 "--set", "context=16"]) == 0
    rows = json.loads((out / "compare.json").read_text())["rows"]
    assert sorted(r["attention"] for r in rows) == ["mha", "mqa"] and rows[0]["primary"] == "bpc"
    assert all(r["train_unit"] == "chars" and r["decode_items_per_second"] is None for r in rows)
    html = (out / "compare.html").read_text()
    assert all(img[:8] == PNG for img in image_sources(html, out)) and html.count("<img") == 1 + 2
    header = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("rank"))
    assert "train chars/s" in header and "decode" not in header  # a language model decodes no test items


def tiny_classify_run(path: Path) -> Path:
    """An untrained 1-layer ViT's run directory, written as `attnzoo train classify` writes it."""
    import torch

    from attnzoo.tasks import classify
    from attnzoo.training.run import RunDirectory

    torch.manual_seed(0)
    model = classify.build_model("mha", {"dim": 16, "num_heads": 2, "layers": 1})
    run = RunDirectory(path, {"task": "classify", "model": "vit", "attention": "mha", "task_config": {"seed": 0},
                              "model_config": model.config.to_dict()}, state=lambda: {"model": model.state_dict()})
    run.save({})
    return path


@pytest.mark.slow
def test_the_same_test_examples_go_through_every_run_g2p_and_classify(tmp_path):
    """The example pickers of the tasks the seq2seq runs above do not reach, on untrained tiny runs."""
    runs = {}
    for name in ("a", "b"):
        runs[name] = tiny_g2p_run(tmp_path / f"g2p-{name}")
        edit_json(runs[name] / "config.json", task_config={"seed": 0, "split": "standard"})
    examples, note = attention_examples("g2p", runs, 3, 1, "cpu")
    assert len(examples) == 3 and "letters" in note
    assert all(set(e["cells"]) == {"a", "b"} and e["cells"]["a"]["png"][:8] == PNG for e in examples)
    assert all("(reference " in e["legend"] for e in examples)

    runs = {name: tiny_classify_run(tmp_path / f"vit-{name}") for name in ("mha", "mqa")}
    examples, note = attention_examples("classify", runs, 2, 1, "cpu")
    assert len(examples) == 2 and examples[0]["legend"].startswith("test image 0: ") and "class token" in note
    assert all(c["png"][:8] == PNG and c["legend"].startswith("predicted ") for e in examples
               for c in e["cells"].values())
