"""What these 2 CPU cores can do in float32: the ceiling that the `mha-infer` and `weights-infer` targets meet.

    python benchmarks/cpu_peak.py      # alone on the machine; prints GFLOP/s (median of 10 after 2 warm-ups)

A 2048^3 matrix product, the two attention matmuls of 8 heads at N = 2048, d = 64 (no softmax), SDPA on the
same inputs, and the fused QKV projection of a 512-wide layer.
"""
import time

import torch


def median_seconds(fn, reps: int = 10) -> float:
    """Median wall time of ``fn()`` over ``reps`` calls, after two warm-up calls."""
    fn()
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def main() -> None:
    torch.set_num_threads(2)
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    t = median_seconds(lambda: a @ b)
    print(f"matmul {n}^3 fp32: {2 * n ** 3 / t / 1e9:.1f} GFLOP/s")

    # attention-shaped: 8 heads, N = 2048, d = 64: Q K^T, then P V
    q, k, v = (torch.randn(1, 8, 2048, 64) for _ in range(3))  # (B, H, N, d)
    flops = 4 * 2048 * 2048 * 64 * 8
    t = median_seconds(lambda: torch.matmul(torch.matmul(q, k.transpose(-1, -2)), v))
    print(f"QK^T then PV (no softmax), 8 heads N=2048 d=64: {t * 1e3:.1f} ms, {flops / t / 1e9:.1f} GFLOP/s")
    t = median_seconds(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))
    print(f"SDPA same: {t * 1e3:.1f} ms, {flops / t / 1e9:.1f} GFLOP/s")

    x, w = torch.randn(1, 2048, 512), torch.randn(1536, 512)  # (B, N, E), the stacked (3E, E) QKV weights
    t = median_seconds(lambda: x @ w.T)
    print(f"QKV projection 2048x512x1536: {t * 1e3:.1f} ms, {2 * 2048 * 512 * 1536 / t / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
