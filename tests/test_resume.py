"""Runs that survive: `attnzoo train ... --resume DIR` after kill -9, SIGTERM and unreadable states.

The slow tests train a tiny character LM in a subprocess. ATTNZOO_TEST_SIGNAL_AT_STEP ("STEP:SIGNAL",
see attnzoo.training.trainer) makes that process send itself a signal at a known step boundary, so the
kill lands at the same point on every machine however slow it is.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from attnzoo import cli, lab
from attnzoo.cli import main
from attnzoo.cli.parser import given, parse_set
from attnzoo.training.checkpoint import TRAIN_STATE, RunDirError, load_train_state, save_checkpoint, write_json
from attnzoo.training.run import RunDirectory
from attnzoo.training.trainer import FAULT_ENV

TINY_LM = ["--epochs", "0.005", "--device", "cpu", "--set", "dim=16", "--set", "layers=1", "--set", "context=16",
           "--set", "dropout=0.1", "--checkpoint-every-steps", "5"]


def run(*args, fault=None):
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    if fault:
        env[FAULT_ENV] = fault
    return subprocess.run([sys.executable, "-m", "attnzoo", "-q", *args], capture_output=True, text=True,
                          timeout=1800, env=env)  # generous: a niced run on busy cores may crawl


def state_of(run_dir):
    return torch.load(run_dir / TRAIN_STATE, weights_only=True)["trainer"]


def assert_same_tensors(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ----------------------------------------------------------------------------- a run on disk, without training
def fake_run(path, task="lm", step=3, finished=False, **task_config):
    config = {"format_version": 1, "task": task, "model": "transformer", "attention": "mha",
              "model_overrides": {"dim": 16}, "task_config": {"seed": 0, "minutes": None, "epochs": 0.005,
                                                              "batch_size": 64, "lr": 0.002, **task_config}}
    write_json(path / "config.json", config)
    save_checkpoint(path / TRAIN_STATE, {"task": task, "trainer": {"step": step, "finished": finished,
                                                                   "records": [], "elapsed": 1.0,
                                                                   "model": {"w": torch.ones(3)}}})
    return config


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("attnzoo: error:") and "Traceback" not in err[0], err
    return err[0]


def test_a_truncated_training_state_is_a_clear_error_not_a_crash(tmp_path, capsys):
    fake_run(tmp_path)
    data = (tmp_path / TRAIN_STATE).read_bytes()
    (tmp_path / TRAIN_STATE).write_bytes(data[: len(data) // 2])
    assert main(["train", "lm", "--resume", str(tmp_path)]) == 2
    err = one_error_line(capsys)
    assert "train_state.pt cannot be read: it is truncated" in err and "start it again with" in err
    (tmp_path / TRAIN_STATE).write_bytes(b"")
    with pytest.raises(RunDirError, match="it is empty"):
        load_train_state(tmp_path)
    (tmp_path / TRAIN_STATE).unlink()
    with pytest.raises(RunDirError, match="train_state.pt is missing"):
        load_train_state(tmp_path)


def test_the_state_loads_with_weights_only_and_names_its_run(tmp_path):
    fake_run(tmp_path)
    config, state = load_train_state(tmp_path)
    assert config["task"] == "lm" and state["step"] == 3 and torch.equal(state["model"]["w"], torch.ones(3))
    save_checkpoint(tmp_path / TRAIN_STATE, {"task": "g2p", "trainer": {"step": 1}})
    with pytest.raises(RunDirError, match="mixes files of two runs"):
        load_train_state(tmp_path)
    torch.save({"format_version": 1, "task": "lm", "trainer": {"step": 1}, "x": RunDirError("code")},
               tmp_path / TRAIN_STATE)  # Python objects: refused by weights_only, never unpickled
    with pytest.raises(RunDirError, match="refuses to load"):
        load_train_state(tmp_path)


@pytest.mark.parametrize("args, words", [
    (["train", "g2p"], "is an lm run but the command line names g2p; resume it with `attnzoo train lm --resume"),
    (["train", "lm", "--epochs", "2"], "--epochs 2 contradicts the run being resumed"),
    (["train", "lm", "--minutes", "5"], "its learning-rate schedule ends with its budget"),
    (["train", "lm", "--set", "dim=32"], "--set dim=32 contradicts"),
    (["train", "lm", "--attention", "gqa"], "--attention gqa contradicts"),
    (["train", "lm", "--seed", "3"], "--seed 3 contradicts"),
    (["train", "lm", "--out", "elsewhere"], "--out elsewhere contradicts"),
])
def test_resume_refuses_what_contradicts_the_run(tmp_path, capsys, args, words):
    fake_run(tmp_path)
    assert main([*args, "--resume", str(tmp_path)]) == 2
    assert words in one_error_line(capsys)


def test_resume_takes_the_runs_options_and_may_change_the_device(tmp_path):
    config = fake_run(tmp_path, checkpoint_every_minutes=5.0)
    parser, _ = cli.build_parser()
    args = parser.parse_args(["train", "lm", "--resume", str(tmp_path), "--epochs", "0.005", "--set", "dim=16",
                              "--device", "cpu", "--checkpoint-every", "2"])
    p = lab.plan("lm", model=args.model, attention=args.attention, options=parse_set(args.set), resume=args.resume,
                 **given(args, args.config_flags))
    assert (p.model, p.attention, p.overrides, p.out) == ("transformer", "mha", {"dim": 16}, tmp_path)
    cfg = p.config
    assert (cfg.device, cfg.checkpoint_every_minutes, cfg.epochs, cfg.lr) == ("cpu", 2.0, 0.005, 0.002)
    assert config["task_config"]["batch_size"] == cfg.batch_size


def test_a_finished_run_has_nothing_to_resume(tmp_path, capsys):
    fake_run(tmp_path, finished=True)
    write_json(tmp_path / "metrics.json", {})
    assert main(["train", "lm", "--resume", str(tmp_path)]) == 2
    assert "is a finished run (trained 3 steps, metrics.json written): nothing to resume" in one_error_line(capsys)


def test_run_directory_refuses_another_run_and_drops_a_stale_state(tmp_path):
    config = {"task": "lm", "task_config": {"seed": 0, "device": "auto"}, "data": {"train_chars": 10}}
    RunDirectory(tmp_path, config, state=dict)
    state = {"records": [{"step": 5}]}
    (tmp_path / "metrics.jsonl").write_text('{"step": 5}\n{"step": 7}\n')  # 7: after the saved state
    RunDirectory(tmp_path, {**config, "task_config": {"seed": 0, "device": "cpu"}}, state=dict, resume=state)
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 5}\n'
    with pytest.raises(RunDirError, match=r"its data.train_chars was 10 and would now be 11"):
        RunDirectory(tmp_path, {**config, "data": {"train_chars": 11}}, state=dict, resume=state)
    with pytest.raises(RunDirError, match=r"its task_config.seed was 0 and would now be 1"):
        RunDirectory(tmp_path, {**config, "task_config": {"seed": 1}}, state=dict, resume=state)
    (tmp_path / TRAIN_STATE).write_bytes(b"old")
    RunDirectory(tmp_path, config, state=dict)  # a new run in the same directory
    assert not (tmp_path / TRAIN_STATE).exists()


# ----------------------------------------------------------------------------- real runs, killed and resumed
@pytest.mark.slow
def test_a_run_killed_with_sigkill_and_resumed_ends_like_an_uninterrupted_one(tmp_path):
    ref, run_dir = tmp_path / "uninterrupted", tmp_path / "killed"
    # the reference trains every step; it is killed once its last state is saved (its report is not needed)
    r = run("train", "lm", *TINY_LM, "--out", str(ref), fault="last:KILL")
    assert r.returncode == -9, r.stderr
    expected = state_of(ref)
    assert expected["step"] > 13 and not expected["finished"]

    r = run("train", "lm", *TINY_LM, "--out", str(run_dir), fault="13:KILL")  # kill -9 three steps after a save
    assert r.returncode == -9, r.stderr
    killed = state_of(run_dir)
    assert killed["step"] == 10 and not (run_dir / "metrics.json").exists()

    r = run("train", "lm", "--resume", str(run_dir), fault="last:KILL")
    assert r.returncode == -9, r.stderr
    got = state_of(run_dir)
    # CPU, same thread count, same seed: the same operations in the same order, so exactly equal
    assert got["step"] == expected["step"]
    assert_same_tensors(got["model"], expected["model"])
    for p in expected["optimizer"]["state"]:
        assert_same_tensors(got["optimizer"]["state"][p], expected["optimizer"]["state"][p])
    assert torch.equal(got["rng"]["torch"], expected["rng"]["torch"])

    r = run("train", "lm", "--resume", str(run_dir))  # killed after training: it evaluates and reports
    assert r.returncode == 0, r.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == expected["step"] and metrics["resumed_from_step"] == expected["step"]
    assert not metrics["interrupted"] and (run_dir / "report.html").is_file()
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)  # the best evaluation's weights
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert ckpt["format_version"] == 1 and ckpt["record"] in records and records[-1]["step"] == expected["step"]
    r = run("train", "lm", "--resume", str(run_dir))
    assert r.returncode == 2 and "nothing to resume" in r.stderr


@pytest.mark.slow
def test_sigterm_saves_evaluates_reports_and_exits_143(tmp_path):
    run_dir = tmp_path / "run"
    r = run("train", "lm", *TINY_LM, "--out", str(run_dir), fault="7:TERM")
    assert r.returncode == 128 + 15, r.stderr
    assert f"stopped by SIGTERM after 7 steps; continue with `attnzoo train lm --resume {run_dir}`" in r.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["interrupted"] and metrics["stopped_by"] == "SIGTERM" and metrics["steps"] == 7
    state = state_of(run_dir)
    assert state["step"] == 7 and not state["finished"] and [x["step"] for x in state["records"]] == [7]
    assert (run_dir / "report.html").is_file()
