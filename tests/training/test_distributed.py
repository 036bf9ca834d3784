"""Several processes: sharding a batch, and `torchrun -m attnzoo train` against one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from attnzoo.data.batching import Batch
from attnzoo.training import distributed
from attnzoo.training.distributed import Distributed, shard


def test_the_parts_of_a_batch_cover_it_once_in_order():
    for size in (7, 8, 9):
        x = torch.arange(size * 3).reshape(size, 3)
        for world in (1, 2, 3):
            parts = [shard(x, Distributed(r, world)) for r in range(world)]
            assert torch.equal(torch.cat(parts), x)
            assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1


def test_shard_splits_every_field_of_tuples_and_dataclasses_alike():
    b = Batch(src=torch.arange(10).reshape(5, 2), src_lengths=torch.tensor([2, 2, 1, 1, 1]),
              tgt=torch.arange(15).reshape(5, 3), index=[10, 11, 12, 13, 14])
    part = shard(b, Distributed(1, 2))
    assert part.index == [12, 13, 14] and torch.equal(part.src, b.src[2:]) and torch.equal(part.tgt, b.tgt[2:])
    x, y = shard((torch.zeros(4, 2), torch.arange(4)), Distributed(0, 2))
    assert x.shape == (2, 2) and y.tolist() == [0, 1]

    @dataclass
    class Odd:
        name: str

    with pytest.raises(TypeError, match="cannot split a batch of type Odd"):
        shard(Odd("x"), Distributed(0, 2))


def test_one_process_changes_nothing(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    place = distributed.setup("cpu")
    assert not place.enabled and place.is_main
    x = torch.arange(4)
    assert shard(x) is x
    loss_fn = lambda m, b: (b.sum(), 1)  # noqa: E731
    assert distributed.wrap(torch.nn.Linear(1, 1), loss_fn) is loss_fn
    assert distributed.agree(True, False) == [True, False]


def test_bad_torchrun_variables_are_named(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK=2 and WORLD_SIZE=2"):
        distributed.from_env()
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(ValueError, match="must be integers"):
        distributed.from_env()


def _train_lm(tmp_path: Path, corpus: Path, name: str, processes: int) -> list[dict]:
    out = tmp_path / name
    args = ["-m", "attnzoo", "-q", "train", "lm", "--data", str(corpus), "--epochs", "1", "--batch-size", "8",
            "--lr", "3e-3", "--eval-every-steps", "1", "--device", "cpu", "--out", str(out),
            "--set", "dim=32", "--set", "layers=1", "--set", "num_heads=2", "--set", "context=16"]
    if processes > 1:
        args = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] + args[1:]
        args.insert(args.index("attnzoo"), "-m")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "metrics.json").is_file() and (out / "report.html").is_file()
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_processes_under_torchrun_follow_one_process_with_the_same_global_batch(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"verse {i}: the quick brown fox jumps over the lazy dog, {i * 7 % 13} times.\n"
                              for i in range(120)))
    one = _train_lm(tmp_path, corpus, "one", 1)
    two = _train_lm(tmp_path, corpus, "two", 2)
    steps = [r["step"] for r in one]
    assert steps == [r["step"] for r in two] and len(steps) >= 10
    loss_one = torch.tensor([r["train_loss"] for r in one])
    loss_two = torch.tensor([r["train_loss"] for r in two])
    assert loss_one[-1] < loss_one[0] - 0.5  # it learns, so equal curves mean something
    # the same steps on the same global batches: equal up to the order of float sums (and rounding to 1e-4)
    assert torch.allclose(loss_one, loss_two, atol=2e-3), (loss_one, loss_two)
    dev_one = torch.tensor([r["dev_bpc"] for r in one])
    dev_two = torch.tensor([r["dev_bpc"] for r in two])
    assert torch.allclose(dev_one, dev_two, atol=5e-3)
    assert not any((tmp_path / "two").glob("*.rank*"))  # one set of files, written by rank 0
