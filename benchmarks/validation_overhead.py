"""What the argument checks cost: a default g2p training step and the bench's MHA forward+backward, two trees.

    python benchmarks/validation_overhead.py BEFORE_TREE [AFTER_TREE]

Each tree (a checkout of attnzoo) is imported in its own subprocess; the two alternate, round after round,
so drift of the machine falls on both; the figure is the ratio of the medians (after / before).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path


def worker_code() -> str:
    return r"""
import json, time, torch
import attnzoo
from attnzoo.tasks.g2p import G2P_MODEL_DEFAULTS
from attnzoo.models.factory import build_seq2seq
torch.manual_seed(0)
torch.set_num_threads(2)
model = build_seq2seq("rnn", 30, 45, "additive", G2P_MODEL_DEFAULTS["rnn"])  # the default g2p model
opt = torch.optim.AdamW(model.parameters(), 1e-3)
B, S, T = 64, 9, 8
src = torch.randint(3, 30, (B, S)); lengths = torch.full((B,), S); tgt = torch.randint(3, 45, (B, T))
tgt[:, 0] = 1

def g2p_step():
    loss = model.loss(src, lengths, tgt, 0.0)
    opt.zero_grad(); loss.backward(); opt.step()

mha = attnzoo.MultiHeadAttention(512, 8)
x = torch.randn(1, 256, 512, requires_grad=True)

def mha_step():
    mha(x).output.sum().backward()

out = {}
cases = (("g2p training step (rnn, B=64)", g2p_step, 20),
         ("MHA forward+backward (B=1, H=8, d=64, N=256)", mha_step, 40))
for name, fn, n in cases:
    for _ in range(3):
        fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    out[name] = (time.perf_counter() - t) / n
print(json.dumps(out))
"""


def run(tree: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run([sys.executable, "-c", worker_code()], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    before = Path(sys.argv[1]).resolve()
    after = Path(sys.argv[2] if len(sys.argv) > 2 else Path(__file__).parents[1]).resolve()
    rounds = int(os.environ.get("ROUNDS", "7"))
    times: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
    for _ in range(rounds):
        for label, tree in (("before", before), ("after", after)):
            for name, seconds in run(tree).items():
                times[label].setdefault(name, []).append(seconds)
    print("| case | before (ms) | after (ms) | after / before |\n|---|---|---|---|")
    for name in times["before"]:
        b, a = statistics.median(times["before"][name]), statistics.median(times["after"][name])
        print(f"| {name} | {b * 1e3:.2f} | {a * 1e3:.2f} | {a / b:.3f} |")


if __name__ == "__main__":
    main()
