"""``attnzoo bench``: attnzoo against what a user would otherwise run, in one process, same machine.

    attnzoo bench [--quick] [--case NAME ...] [--threads 2] [--device cpu|cuda] [--reps 5] [--out FILE.json]

Each case runs attnzoo and its peers on the same inputs, interleaved
repetition by repetition (so drift in the machine's speed hits all of them
alike), and reports per contender:

* the median wall-clock time of a repetition (after one warm-up),
* GFLOP/s where the work has a standard count (attention matmuls and projections),
* the peak memory of one repetition: on CUDA the allocator's own peak; on the
  CPU the peak resident memory of a fresh subprocess that builds the inputs,
  resets its high-water mark (``/proc/self/clear_refs``) and runs the
  repetition once (so earlier cases' allocations cannot hide a peak),
* ratios to each peer: speed = peer time / attnzoo time (above 1: attnzoo is
  faster), memory = attnzoo peak / peer peak (below 1: attnzoo uses less),

and checks them against the targets of the performance issue (the ``target``
column). Peers: naive eager attention, ``F.scaled_dot_product_attention``,
``nn.MultiheadAttention`` with and without weights, x-transformers'
``Attention`` (``pip install x-transformers``; skipped with a note when it is
missing), the broadcast additive attention of Keras and OpenNMT, ``nn.Dropout``,
and full recomputation for decoding. ``--quick`` runs small sizes only (seconds, not
minutes); the figures the README quotes come from the full run.

Shape legend: B batch, H heads, N sequence length (L = S = N), d head size,
A the additive score's hidden size, dim an activation's feature size.
"""

from .catalog import Case, cases
from .command import cli, main, run_command
from .contenders import Factory, Step
from .harness import run
from .report import format_row, machine

__all__ = ["Case", "Factory", "Step", "cases", "cli", "format_row", "machine", "main", "run", "run_command"]
