"""attnzoo bench: one case end to end, and the memory probe measures what a step allocates."""

import json

from attnzoo import bench
from attnzoo.bench import catalog, harness
from attnzoo.cli import main


def test_quick_case_writes_times_ratios_and_memory(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--case", "decode", "--reps", "2", "--threads", "1", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["machine"]["threads"] == 1 and results["quick"] is True
    (row,) = results["cases"]
    ours, peer = row["contenders"]["attnzoo KV-cached decoding"], row["contenders"]["full recomputation per token"]
    assert len(ours["times_s"]) == 2 and ours["median_s"] > 0
    assert abs(peer["speed_ratio"] - peer["median_s"] / ours["median_s"]) < 1e-12
    assert ours["peak_bytes"] is not None and peer["peak_bytes"] is not None
    assert row["targets"] == []  # targets are checked on the full sizes only


def test_memory_probe_sees_a_known_allocation():
    """A step that holds 64 MiB at its peak and frees it: the fresh-process probe reports about that."""
    import torch

    def factory(size, device):
        def step():
            x = torch.ones(size["n"], dtype=torch.float32)  # 64 MiB, touched
            del x
        return step

    got = harness.peak_memory_here(factory, {"n": 16 * 2 ** 20}, "cpu")
    assert 60 * 2 ** 20 < got < 80 * 2 ** 20


def test_unknown_case_is_named():
    import pytest

    with pytest.raises(ValueError, match="unknown bench case 'mha'; expected one of mha-train"):
        bench.run(["mha"], quick=True)


def test_targets_are_checked_only_on_their_devices(monkeypatch):
    """A CPU-only target (a CPU kernel's speed-up) is reported on the CPU and left out elsewhere."""
    def factory(size, device):
        return lambda: None

    def case(targets_on):
        return bench.Case("toy", "a no-op", [{"n": 1}], [{"n": 1}], {"ours": factory, "peer": factory},
                          targets=[("peer", "speed", 1e-9)], targets_on=targets_on)

    monkeypatch.setattr(catalog, "cases", lambda: [case(("cpu",))])
    (row,) = bench.run(["toy"], reps=1, memory=False, log=lambda *_: None)["cases"]
    assert [(t["peer"], t["met"]) for t in row["targets"]] == [("peer", True)]
    monkeypatch.setattr(catalog, "cases", lambda: [case(("cuda",))])
    (row,) = bench.run(["toy"], reps=1, memory=False, log=lambda *_: None)["cases"]
    assert row["targets"] == []


def test_targets_at_one_size_and_a_contender_that_cannot_run_a_size(monkeypatch):
    """A scaling case states its bound at one size only; a factory refusing a size is skipped with its reason."""
    from attnzoo.bench.contenders import NotAtThisSize

    def factory(size, device):
        return lambda: None

    def too_big(size, device):
        if size["n"] > 1:
            raise NotAtThisSize("n > 1: too big for the materialised path")
        return lambda: None

    toy = bench.Case("toy", "a no-op", [{"n": 1}, {"n": 2}], [{"n": 1}],
                     {"ours": factory, "peer": factory, "eager": too_big},
                     targets=[("peer", "speed", 1e-9)], targets_at=lambda s: s["n"] == 2)
    monkeypatch.setattr(catalog, "cases", lambda: [toy])
    small, large = bench.run(["toy"], reps=1, memory=False, log=lambda *_: None)["cases"]
    assert small["targets"] == [] and [t["met"] for t in large["targets"]] == [True]
    assert "eager" in small["contenders"] and large["skipped"] == {"eager": "n > 1: too big for the materialised path"}
