"""What these 2 CPU cores can do in float32: the ceiling that the `mha-infer` and `weights-infer` targets meet.

    python benchmarks/cpu_peak.py      # alone on the machine; prints GFLOP/s (median of 10 after 2 warm-ups)

A 2048^3 matrix product, the two attention matmuls of 8 heads at N = 2048, d = 64 (no softmax), SDPA on the
same inputs, and the fused QKV projection of a 512-wide layer.
"""
import time, torch
torch.set_num_threads(2)
def bench(f, reps=10):
    f(); f()
    ts=[]
    for _ in range(reps):
        t=time.perf_counter(); f(); ts.append(time.perf_counter()-t)
    ts.sort(); return ts[len(ts)//2]
n=2048
a=torch.randn(n,n); b=torch.randn(n,n)
t=bench(lambda: a@b); print(f"matmul {n}^3 fp32: {2*n**3/t/1e9:.1f} GFLOP/s")
# attention-shaped: 8 heads, N=2048, d=64: QK^T and PV
q=torch.randn(1,8,2048,64); k=torch.randn(1,8,2048,64); v=torch.randn(1,8,2048,64)
t=bench(lambda: torch.matmul(torch.matmul(q,k.transpose(-1,-2)),v)); fl=4*2048*2048*64*8
print(f"QK^T then PV (no softmax), 8 heads N=2048 d=64: {t*1e3:.1f} ms, {fl/t/1e9:.1f} GFLOP/s")
t=bench(lambda: torch.nn.functional.scaled_dot_product_attention(q,k,v)); print(f"SDPA same: {t*1e3:.1f} ms, {fl/t/1e9:.1f} GFLOP/s")
x=torch.randn(1,2048,512); w=torch.randn(1536,512)
t=bench(lambda: x@w.T); print(f"QKV projection 2048x512x1536: {t*1e3:.1f} ms, {2*2048*512*1536/t/1e9:.1f} GFLOP/s")
