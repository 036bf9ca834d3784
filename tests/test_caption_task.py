"""The caption task: its metrics by hand, a tiny end-to-end run, the command line and attnzoo.load."""

import json
import sys
from pathlib import Path

import pytest
import torch

import attnzoo
from attnzoo.cli import main
from attnzoo.data.digits import make_data
from attnzoo.tasks import caption
from attnzoo.training.metrics import box_attention_share, word_accuracy

sys.path.insert(0, str(Path(__file__).parent / "data"))
from test_digits import fake_digits  # noqa: E402

TINY = dict(widths=[4, 8], depths=[1, 1], embed_dim=8, decoder_dim=16, attention_hidden=8, dropout=0.0)


def test_localization_on_a_hand_made_map_equals_the_hand_computation():
    # a 2 x 4 grid over an 8 x 16 image: every cell is 4 x 4 pixels
    weights = torch.tensor([[0.1, 0.2, 0.3, 0.0],
                            [0.0, 0.4, 0.0, 0.0]])
    # box rows [0, 6), columns [2, 10): row 0 of cells wholly inside, row 1 half (rows 4..5 of 4..7);
    # cell columns 0 (cols 0..3): half inside (2..3), 1 (4..7): whole, 2 (8..11): half (8..9), 3: none
    box = torch.tensor([0.0, 2.0, 6.0, 10.0])
    by_hand = 0.1 * 1 * 0.5 + 0.2 * 1 * 1 + 0.3 * 1 * 0.5 + 0.4 * 0.5 * 1
    assert box_attention_share(weights, box, (8, 16)).item() == pytest.approx(by_hand / 1.0)
    # batched, unnormalised weights are divided by their total; a zero map gives 0
    w = torch.stack([weights * 2, torch.zeros(2, 4)])[None]  # (1, 2, 2, 4)
    boxes = torch.stack([box, box])[None]  # (1, 2, 4)
    assert box_attention_share(w, boxes, (8, 16))[0].tolist() == pytest.approx([by_hand, 0.0])
    # the whole image as the box: everything inside
    assert box_attention_share(weights, torch.tensor([0.0, 0.0, 8.0, 16.0]), (8, 16)).item() == pytest.approx(1)
    with pytest.raises(ValueError, match=r"boxes must have shape \(4,\)"):
        box_attention_share(weights, torch.zeros(2, 4), (8, 16))


def test_word_accuracy_is_one_minus_the_word_error_rate():
    refs = [["one", "two", "three"], ["four", "five"]]
    hyps = [["one", "three"], ["four", "five", "six"]]  # one deletion, one insertion: 2 errors over 5 words
    assert word_accuracy(hyps, refs) == pytest.approx(1 - 2 / 5)
    assert word_accuracy(refs, refs) == 1.0 and word_accuracy([["x"] * 9], [["one"]]) == 0.0


def tiny_data(seed=0):
    return make_data(seed, dev_strips=12, test_strips=10, digits=fake_digits())


def test_a_tiny_run_writes_the_run_directory_and_the_report(tmp_path):
    cfg = caption.CaptionConfig(epochs=0.01, batch_size=8, strips_per_epoch=800, dev_eval_strips=6, beam_size=2,
                                report_strips=2, device="cpu")
    m = caption.train(cfg, tmp_path / "run", model_overrides=TINY, progress=False, data=tiny_data())
    out = tmp_path / "run"
    assert {p.name for p in out.iterdir()} >= {"config.json", "checkpoint.pt", "metrics.json", "metrics.jsonl",
                                               "report.html"}
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["primary"] == {"name": "exact_match", "value": m["test"]["exact_match"], "higher_is_better": True}
    assert saved["task"] == "caption" and saved["attention"] == "soft_spatial" and saved["test"]["strips"] == 10
    for part in ("dev", "test"):
        for key in ("exact_match", "word_accuracy", "localization", "mean_gate"):
            assert 0 <= saved[part][key] <= 1, (part, key, saved[part][key])
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records and "dev_localization" in records[-1]
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and "test strip 0" in html and "localization" in html

    run = attnzoo.load(out)
    assert run.task == "caption" and not run.model.training
    images = tiny_data().test.images[:3]
    out1 = run.caption(images, beam_size=1)
    assert len(out1) == 3 and out1[0].weights.shape[1:] == run.model.grid
    assert [c.words for c in run.predict(images[:, 0], beam_size=1)] == [c.words for c in out1]


@pytest.mark.slow
def test_the_command_line_trains_and_evaluates_a_caption_run(tmp_path, capsys):
    out = tmp_path / "cli"
    sets = [a for k, v in TINY.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    assert main(["-q", "train", "caption", "--epochs", "0.002", "--beam", "1", "--batch-size", "16",
                 "--out", str(out), *sets]) == 0
    text = capsys.readouterr().out
    assert "test  exact match" in text and "localization" in text
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test"]["strips"] == 2000 and metrics["dev"]["strips"] == 1000
    assert main(["eval", str(out), "--beam", "1"]) == 0
    assert f"exact match {metrics['test']['exact_match']:.2%}" in capsys.readouterr().out


def test_caption_refuses_a_whole_sequence_mechanism_and_unknown_options():
    with pytest.raises(ValueError, match="does not fit a step-wise decoder's slot"):
        caption.check_model("se", {})
    with pytest.raises(ValueError, match="did you mean 'decoder_dim'"):
        caption.check_model("soft_spatial", {"decoder_dims": 8})
    with pytest.raises(ValueError, match="caption: rnn"):
        caption.check_model("soft_spatial", {}, model="transformer")


def test_any_step_wise_mechanism_fills_the_slot():
    data = tiny_data()
    for attention in ("additive", "location_aware"):
        model = caption.build_model(attention, TINY, data.strips)
        tgt = caption.caption_targets(data.test.captions()[:4], caption.words_vocab())
        loss = model.loss(data.test.images[:4], tgt)
        assert torch.isfinite(loss)
