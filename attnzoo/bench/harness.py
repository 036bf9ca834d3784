"""The measuring of ``attnzoo bench``: interleaved timing, the peak-memory probes, and :func:`run`.

Timing interleaves the contenders repetition by repetition after one untimed
warm-up each. Peak memory is the allocator's own peak on CUDA; on the CPU it is
the peak resident memory of a fresh subprocess (``python -m attnzoo.bench
--probe ...``, answered by :func:`~attnzoo.bench.command.main`) that builds the
inputs, resets its high-water mark and runs one repetition.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import torch

from . import catalog
from .catalog import Case
from .contenders import Factory, NotAtThisSize, Step
from .report import format_row, machine


# --------------------------------------------------------------------------- timing
def _time(steps: dict[str, Step], reps: int, device: str) -> dict[str, list[float]]:
    """Seconds per repetition for each contender, interleaved; one untimed warm-up each."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for step in steps.values():
        step()
    sync()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(reps):
        for name, step in steps.items():
            sync()
            t0 = time.perf_counter()
            step()
            sync()
            times[name].append(time.perf_counter() - t0)
    return times


# --------------------------------------------------------------------------- peak memory
def _rss_peak_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _rss_now_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_memory_here(factory: Factory, size: dict, device: str) -> int:
    """Bytes one repetition adds at its peak, measured in this process (fresh: see _peak_memory)."""
    if device.startswith("cuda"):
        step = factory(size, device)
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    step = factory(size, device)
    base = _rss_now_bytes()
    with open("/proc/self/clear_refs", "w") as f:  # reset the high-water mark (Linux >= 4.0)
        f.write("5")
    step()
    return max(0, _rss_peak_bytes() - base)


def _peak_memory(case: str, contender: str, size: dict, device: str, threads: int) -> int | None:
    """Peak memory of one repetition in a fresh subprocess (None if the probe failed)."""
    if device.startswith("cuda"):
        return peak_memory_here(find_contender(case, contender), size, device)
    cmd = [sys.executable, "-m", "attnzoo.bench", "--probe", json.dumps([case, contender, size, device, threads])]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return None
    return int(r.stdout.strip().splitlines()[-1])


def find_contender(case: str, contender: str) -> Factory:
    """The factory of ``contender`` in the case named ``case``."""
    return {c.name: c for c in catalog.cases()}[case].contenders[contender]


# --------------------------------------------------------------------------- the run
def run(names: list[str] | None = None, quick: bool = False, device: str = "cpu", threads: int = 2,
        reps: int = 5, memory: bool = True, log=print) -> dict:
    """Run the cases ``names`` (all when None) at their sizes; log each row as it is done; the results."""
    torch.set_num_threads(threads)
    chosen = [c for c in catalog.cases() if not names or c.name in names]
    if names:
        unknown = set(names) - {c.name for c in catalog.cases()}
        if unknown:
            raise ValueError(f"unknown bench case {sorted(unknown)[0]!r}; expected one of "
                             f"{', '.join(c.name for c in catalog.cases())}")
    results = {"machine": machine(device, threads), "quick": quick, "reps": reps, "cases": []}
    for case in chosen:
        for size in case.quick_sizes if quick else case.sizes:
            row = _measure(case, size, device, threads, reps, memory)
            ours_name = next(iter(case.contenders))
            _add_ratios(row, ours_name)
            checked = not quick and device.split(":")[0] in case.targets_on and \
                (case.targets_at is None or case.targets_at(size))  # targets: full sizes, their devices
            row["targets"].extend(_check_targets(case.targets if checked else [], row))
            results["cases"].append(row)
            log(format_row(row, ours_name))
    return results


def _measure(case: Case, size: dict, device: str, threads: int, reps: int, memory: bool) -> dict:
    """One row: each contender's times, median, GFLOP/s and peak memory at ``size`` (a peer not installed is
    skipped with a note)."""
    steps, skipped = {}, {}
    for name, factory in case.contenders.items():
        try:
            steps[name] = factory(size, device)
        except ImportError as e:
            skipped[name] = f"not installed ({e.name})"
        except NotAtThisSize as e:
            skipped[name] = str(e)
    times = _time(steps, reps, device)
    row = {"case": case.name, "what": case.what, "size": size, "contenders": {}, "skipped": skipped,
           "targets": []}
    for name, ts in times.items():
        med = statistics.median(ts)
        entry = {"median_s": med, "times_s": ts}
        if case.flops is not None:
            entry["gflops"] = case.flops(size) / med / 1e9
        if memory:
            entry["peak_bytes"] = _peak_memory(case.name, name, size, device, threads)
        row["contenders"][name] = entry
    return row


def _add_ratios(row: dict, ours_name: str) -> None:
    """Each peer's speed ratio (its time / ours) and memory ratio (our peak / its peak), in place."""
    ours = row["contenders"][ours_name]
    for name, entry in row["contenders"].items():
        if name == ours_name:
            continue
        entry["speed_ratio"] = entry["median_s"] / ours["median_s"]
        if entry.get("peak_bytes") and ours.get("peak_bytes") is not None:
            entry["memory_ratio"] = ours["peak_bytes"] / entry["peak_bytes"]


def _check_targets(targets: list[tuple[str, str, float]], row: dict) -> list[dict]:
    """Each target with the measured ratio and whether it is met (None: not measured)."""
    checked = []
    for peer, kind, bound in targets:
        entry = row["contenders"].get(peer)
        value = None if entry is None else entry.get(f"{kind}_ratio")
        ok = None if value is None else (value >= bound if kind == "speed" else value <= bound)
        checked.append({"peer": peer, "kind": kind, "bound": bound, "value": value, "met": ok})
    return checked
