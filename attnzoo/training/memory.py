"""Peak memory of training: what a run's metrics.json reports as ``train_peak_mib``.

On CUDA, the allocator's own peak (``torch.cuda.max_memory_allocated``) since training started. On the CPU
(Linux), the process's resident-set high-water mark (``VmHWM``) after resetting it when training starts
(``/proc/self/clear_refs``), so a compare that trains its runs one after another in one process reports each
run's own peak; None where the platform has no such counter. Evaluation steps are included (they run inside
the training loop).
"""

from __future__ import annotations

import torch


def reset(device: torch.device) -> None:
    """Start counting the peak from now."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident set (Linux >= 4.0)
    except OSError:
        pass


def peak_bytes(device: torch.device) -> int | None:
    """The peak since :func:`reset` (CUDA: bytes allocated by tensors; CPU: resident bytes of the process)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
