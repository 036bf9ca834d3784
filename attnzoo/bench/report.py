"""The reporting of ``attnzoo bench``: the machine a run was made on, and one row of results as text."""

from __future__ import annotations

import os
import platform

import torch


def machine(device: str, threads: int) -> dict:
    """What the figures were measured on: platform, versions, CPU (and GPU), threads."""
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "threads": threads, "device": device, "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    info["cores"] = os.cpu_count()
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _mib(b: int | None) -> str:
    return "—" if b is None else f"{b / 2 ** 20:,.0f} MiB"


def format_row(row: dict, ours_name: str) -> str:
    """One case at one size as a table: each contender, the skipped ones, and the targets' verdicts."""
    size = ", ".join(f"{k}={v}" for k, v in row["size"].items())
    lines = [f"\n{row['case']} ({size}): {row['what']}",
             f"  {'contender':<70} {'median':>10} {'GFLOP/s':>8} {'peak mem':>11} {'speed x':>8} {'mem x':>7}"]
    for name, e in row["contenders"].items():
        gf = f"{e['gflops']:.1f}" if "gflops" in e else "—"
        sp = "—" if name == ours_name else f"{e['speed_ratio']:.2f}"
        mem = "—" if name == ours_name or "memory_ratio" not in e else f"{e['memory_ratio']:.3f}"
        lines.append(f"  {name:<70} {e['median_s'] * 1e3:>8.1f}ms {gf:>8} {_mib(e.get('peak_bytes')):>11} "
                     f"{sp:>8} {mem:>7}")
    for name, why in row["skipped"].items():
        lines.append(f"  {name:<70} skipped: {why}")
    for t in row["targets"]:
        sign = ">=" if t["kind"] == "speed" else "<="
        value = "not measured" if t["value"] is None else f"{t['value']:.3f}"
        verdict = {True: "met", False: "NOT met", None: "—"}[t["met"]]
        lines.append(f"  target: {t['kind']} vs {t['peer']} {sign} {t['bound']:.3g}: {value} ({verdict})")
    return "\n".join(lines)
