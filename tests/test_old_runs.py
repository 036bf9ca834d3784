"""Run directories written by an older attnzoo still load, evaluate and predict exactly as they did.

tests/fixtures/old_runs/ holds one tiny run per task (two for g2p), trained by the commit its README names,
and expected.json what that commit printed for `attnzoo eval DIR`, what the task's evaluate_run returned
and what `attnzoo.load(DIR).predict(...)` gave (PREDICTIONS below). Each test copies its fixture into
tmp_path first, so nothing is ever written into tests/.

The figures must match exactly on a CPU of the kind that recorded them (AVX-512 with BF16, as RECORDED_ON
says); on another kind (AVX2 only) float32 kernels round differently and a near-tie between two outputs of
these barely trained models may fall the other way, so there the metrics must agree within a few tenths of
a percent and the predictions in kind and length.

The data sets are needed as for training (`attnzoo eval` re-reads them): a missing package fails the test
with `attnzoo eval`'s install hint, as tests/test_cli.py's end-to-end tests do; nothing is skipped.
"""

import functools
import importlib
import json
import re
import shutil
from pathlib import Path

import pytest

import attnzoo
from attnzoo.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "old_runs"
#: the CPU features of the machine that recorded expected.json (its float32 kernels' rounding)
RECORDED_ON = {"avx512f", "avx512_bf16"}


@functools.cache
def same_cpu_kind() -> bool:
    try:
        flags = set(re.search(r"^flags\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.M).group(1).split())
    except (OSError, AttributeError):
        return False
    return RECORDED_ON <= flags


def numbers_close(actual: str, wanted: str, tol: float = 0.005) -> bool:
    """Two printed reports equal but for their numbers, which differ by at most ``tol`` (relative)."""
    pattern = r"-?\d+(?:\.\d+)?"
    a, w = re.findall(pattern, actual.replace(",", "")), re.findall(pattern, wanted.replace(",", ""))
    return re.sub(pattern, "#", actual) == re.sub(pattern, "#", wanted) and len(a) == len(w) and all(
        abs(float(x) - float(y)) <= tol * max(1.0, abs(float(y))) for x, y in zip(a, w))
RUNS = ["g2p", "g2p-transformer", "translate", "seq2seq", "lm", "classify", "qa", "caption"]


@functools.cache
def expected() -> dict:
    return json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))


def plain(value):
    """JSON's view of a value (tuples -> lists; floats keep every digit): what expected.json can hold."""
    return json.loads(json.dumps(value))


def copy_run(name: str, tmp_path: Path) -> Path:
    run_dir = tmp_path / name
    shutil.copytree(FIXTURES / name, run_dir)
    return run_dir


def task_of(run_dir: Path) -> str:
    return json.loads((run_dir / "config.json").read_text(encoding="utf-8"))["task"]


# ----------------------------------------------------------------------------- the recorded predictions
G2P_WORDS = ["attention", "zoo", "pytorch"]
SPANISH = ["En el principio crió Dios los cielos y la tierra.", "Y dijo Dios: Sea la luz."]
REVERSAL = ["abcd", "hgfe", "bad"]  # the seq2seq fixture reverses strings of a..h
STORY = ["Mary moved to the bathroom.", "John went to the hallway.", "Mary travelled to the garden."]


def _g2p(run, run_dir):
    return {f"beam{b}": [r.phonemes for r in run.predict(G2P_WORDS, beam_size=b)] for b in (1, 3)}


def _translate(run, run_dir):
    return {f"beam{b}": [r.text for r in run.predict(SPANISH, beam_size=b)] for b in (1, 3)}


def _seq2seq(run, run_dir):
    return {f"beam{b}": [r.text for r in run.predict(REVERSAL, beam_size=b)] for b in (1, 3)}


def _lm(run, run_dir):
    return run.predict("ROMEO:", max_chars=20, temperature=0)


def _classify(run, run_dir):
    from attnzoo.data.fashion_mnist import load_split

    return run.predict(load_split(seed=0).test_images[:8])


def _qa(run, run_dir):
    a = run.predict(STORY, question="Where is Mary?")
    return {"answer": a.answer, "weights": a.weights.tolist(), "sentences": list(a.sentences)}


def _caption(run, run_dir):
    from attnzoo.data.digits import make_data

    images = make_data(0, dev_strips=1, test_strips=4).test.images  # four fixed strips (seed 0)
    return {f"beam{b}": [c.words for c in run.predict(images, beam_size=b)] for b in (1, 3)}


#: task -> fn(attnzoo.load(dir), dir) -> a JSON value; deterministic (greedy or beam decoding, no sampling)
PREDICTIONS = {"g2p": _g2p, "translate": _translate, "seq2seq": _seq2seq, "lm": _lm, "classify": _classify,
               "qa": _qa, "caption": _caption}


def predict(run_dir: Path):
    return plain(PREDICTIONS[task_of(run_dir)](attnzoo.load(run_dir), run_dir))


def _same(actual, wanted, exact: bool = True):
    """Equal, floats (the qa weights) to within 1e-6; everything else exactly. ``exact=False`` (another kind of
    CPU): floats within 0.005, strings and lists of strings of the same kind (a near-tie may decode otherwise)."""
    if isinstance(wanted, float):
        return actual == (pytest.approx(wanted, rel=1e-6, abs=1e-7) if exact else pytest.approx(wanted, abs=5e-3))
    if isinstance(wanted, list):
        if not exact and all(isinstance(w, str) for w in wanted):
            return isinstance(actual, list) and all(isinstance(a, str) for a in actual)
        return isinstance(actual, list) and len(actual) == len(wanted) and all(
            _same(a, w, exact) for a, w in zip(actual, wanted))
    if isinstance(wanted, dict):
        return isinstance(actual, dict) and actual.keys() == wanted.keys() and all(
            _same(actual[k], wanted[k], exact) for k in wanted)
    if not exact and isinstance(wanted, str):
        return isinstance(actual, str)
    return actual == wanted


# ----------------------------------------------------------------------------- the tests
def test_every_fixture_has_its_expectations():
    assert sorted(expected()) == sorted(RUNS)
    assert sorted(p.name for p in FIXTURES.iterdir() if p.is_dir()) == sorted(RUNS)
    assert {task_of(FIXTURES / name) for name in RUNS} == set(PREDICTIONS)


@pytest.mark.parametrize("name", RUNS)
def test_old_run_evaluates_to_its_recorded_metrics(name, tmp_path, capsys, monkeypatch):
    run_dir = copy_run(name, tmp_path)
    want = expected()[name]
    module = importlib.import_module(f"attnzoo.tasks.{task_of(run_dir)}")
    evaluate_run, returned = module.evaluate_run, []

    def spy(*args, **kwargs):  # what `attnzoo eval` computed, so the metrics cost no second evaluation
        returned.append(evaluate_run(*args, **kwargs))
        return returned[-1]

    monkeypatch.setattr(module, "evaluate_run", spy)
    code = main(["eval", str(run_dir)])
    out, err = capsys.readouterr()
    assert code == 0, err  # a missing data package: its install hint
    metrics = returned[-1] if returned else evaluate_run(run_dir)  # the CLI may no longer go through it
    if same_cpu_kind():
        assert out == want["eval_stdout"]
        assert plain(metrics) == want["metrics"]
    else:
        assert numbers_close(out, want["eval_stdout"]), (out, want["eval_stdout"])
        assert _same(plain(metrics), want["metrics"], exact=False), (metrics, want["metrics"])


@pytest.mark.parametrize("name", RUNS)
def test_old_run_loads_and_predicts_as_it_did(name, tmp_path):
    run_dir = copy_run(name, tmp_path)
    got, want = predict(run_dir), expected()[name]["prediction"]
    assert _same(got, want, exact=same_cpu_kind()), (got, want)
