"""attnzoo.load(DIR): every task's run directory back as a usable model (run directories built without training)."""

import json

import pytest
import torch

import attnzoo
from attnzoo.data.charvocab import CharVocab
from attnzoo.data.subword import Subword
from attnzoo.data.userdata import Units
from attnzoo.data.vocab import Vocab
from attnzoo.training.checkpoint import RunDirError
from attnzoo.training.run import RunDirectory

RNN = dict(embed_dim=8, hidden_dim=8, decoder_dim=16, attention_hidden=8, enc_layers=1)


def fabricate(path, task, model, state, model_name="rnn", attention="additive"):
    """A run directory as `attnzoo train` writes it, around an untrained model."""
    run = RunDirectory(path, {"task": task, "model": model_name, "attention": attention, "task_config": {},
                              "model_config": model.config.to_dict(), "data": {}, "params": 0},
                       state=lambda: {"model": model.state_dict(), **state})
    run.save()
    run.write_metrics({"task": task, "primary": {"name": "x", "value": 0.5, "higher_is_better": False}})
    return path


def test_g2p_translate_seq2seq_lm_and_classify_runs_load(tmp_path):
    from attnzoo.tasks import classify, g2p, lm, seq2seq, translate

    letters, phonemes = Vocab("abc"), Vocab(["AH", "B", "K"])
    m = g2p.build_model("rnn", letters, phonemes, "additive", RNN)
    fabricate(tmp_path / "g2p", "g2p", m, {"vocabs": {"letters": letters.to_list(), "phonemes": phonemes.to_list()}})
    run = attnzoo.load(tmp_path / "g2p")
    assert run.task == "g2p" and isinstance(run.model, torch.nn.Module) and not run.model.training
    assert run.metrics["primary"]["value"] == 0.5 and run.config["attention"] == "additive"
    assert len(run.pronounce(["cab"], beam_size=1)) == 1 and len(run.predict(["ab"], beam_size=2)) == 1
    assert run.letters == letters  # the predictor's own attributes come through
    with pytest.raises(AttributeError, match="g2p run has no 'generate'; it offers pronounce()"):
        run.generate  # noqa: B018  (the attribute lookup is what raises)

    texts = ["the cat sat on the mat", "a dog ran"] * 10
    src, tgt = Subword.train(texts, 40), Subword.train(texts, 40)
    m = translate.build_model("rnn", src.vocab(), tgt.vocab(), "dot", RNN)
    fabricate(tmp_path / "tr", "translate", m, {"subwords": {"source": src.to_str(), "target": tgt.to_str()}})
    assert isinstance(attnzoo.load(tmp_path / "tr").translate(["the cat"], beam_size=1)[0].text, str)

    source, target = Units.learn("char", ["abc"]), Units.learn("word", ["x y"])
    cfg = seq2seq.PairsConfig(units="char,word", model="transformer")
    m = seq2seq.build_model(cfg, source, target, "gqa", 8, dict(dim=16, num_heads=4, enc_layers=1, dec_layers=1,
                                                                 ffn_dim=16))
    fabricate(tmp_path / "s2s", "seq2seq", m, {"units": {"source": source.to_state(), "target": target.to_state()},
                                                "max_ratio": 1.0}, "transformer", "gqa")
    run = attnzoo.load(tmp_path / "s2s")
    out = run.translate(["cab"], beam_size=2)[0]
    assert out.weights.shape[1] == 3 and run.model.config.max_len == 64
    weights, src_labels, tgt_labels = out.word_alignment()
    assert src_labels == ["c", "a", "b"] and torch.allclose(weights.sum(-1), torch.ones(len(tgt_labels)))

    vocab = CharVocab("abc ")
    m = lm.build_model(len(vocab), "mha", dict(dim=16, num_heads=2, layers=1, context=16))
    fabricate(tmp_path / "lm", "lm", m, {"vocab": vocab.to_list()}, "transformer", "mha")
    run = attnzoo.load(tmp_path / "lm")
    text = run.generate("ab", max_chars=5, temperature=0)
    assert text.startswith("ab") and len(text) == 7 and run.predict("c", max_chars=3, temperature=0)[0] == "c"

    m = classify.build_model("mha", dict(dim=16, num_heads=2, layers=1))
    fabricate(tmp_path / "vit", "classify", m, {}, "vit", "mha")
    run = attnzoo.load(tmp_path / "vit")
    labels = run.classify(torch.rand(3, 28, 28))
    assert len(labels) == 3 and set(labels) <= set(run.classes)
    assert torch.allclose(run.probabilities(torch.rand(2, 1, 28, 28)).sum(-1), torch.ones(2))


def test_load_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(RunDirError, match="does not exist"):
        attnzoo.load(tmp_path / "nope")
    (tmp_path / "config.json").write_text(json.dumps({"format_version": 1, "task": "dance"}))
    torch.save({"format_version": 1, "task": "dance"}, tmp_path / "checkpoint.pt")
    with pytest.raises(RunDirError, match="names task 'dance', which this attnzoo does not know"):
        attnzoo.load(tmp_path)


def test_the_old_module_name_still_works_with_a_deprecation_warning():
    import importlib
    import sys

    sys.modules.pop("attnzoo.runs", None)
    with pytest.warns(DeprecationWarning, match="attnzoo.runs is deprecated: use attnzoo.load"):
        runs = importlib.import_module("attnzoo.runs")
    from attnzoo.tasks.classify import ImageClassifier

    assert runs.load is attnzoo.load and runs.Run is attnzoo.Run and runs.ImageClassifier is ImageClassifier
