"""attnzoo: every attention mechanism behind one small PyTorch API.

    from attnzoo import attend, AttentionOutput
    out = attend(q, k, v, score="scaled_dot", mask=mask, need_weights=True)

    attn = attnzoo.create("additive", query_dim=256, key_dim=512, hidden_dim=256)
    state = attn.initial_state(keys, values, key_mask)
    context, weights, state = attn(query, keys, values, key_mask, state)

    run = attnzoo.train("g2p", minutes=1)  # the lab from Python: any task of attnzoo.tasks.TASKS
    run = attnzoo.load("runs/my-run")      # a trained run directory: run.model, run.predict(...), run.attention(...)
    board = attnzoo.compare("g2p", ["additive", "dot"], minutes=2)
"""

from .compare import Comparison, compare
from .core import AttentionOutput, attend
from .core.kv_cache import KVCache
from .lab import Run, load, train
from .mechanisms import AttentionState, MultiHeadAttention, SelfAttention, StepAttention
from .mechanisms.capture import Capture, capture
from .registry import MechanismInfo, create, mechanisms

__version__ = "0.1.0"
__all__ = ["attend", "AttentionOutput", "create", "mechanisms", "MechanismInfo", "AttentionState",
           "StepAttention", "MultiHeadAttention", "SelfAttention", "KVCache", "capture", "Capture", "load", "Run",
           "train",
           "compare", "Comparison",
           "__version__"]
