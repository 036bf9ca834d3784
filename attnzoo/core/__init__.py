"""The core every mechanism shares: score -> mask/bias -> normalize -> aggregate."""

from .attend import BACKENDS, AttentionOutput, attend, choose_backend
from .dropout import Dropout, dropout, keep_mask
from .kv_cache import KVCache, RollingKVCache
from .masks import (
                    and_masks,
                    causal,
                    causal_mask,
                    create_mask,
                    document,
                    global_tokens,
                    key_spans_of,
                    not_mask,
                    or_masks,
                    padding,
                    padding_mask,
                    sliding_window,
                    sliding_window_mask,
)
from .normalize import NORMALIZERS, sigmoid, softmax, sparsemax
from .scores import (
                     AdditiveScore,
                     CosineScore,
                     DotScore,
                     GeneralScore,
                     ScaledDotScore,
                     Score,
                     compose_score_mods,
                     softcap,
)

__all__ = [
    "attend", "AttentionOutput", "KVCache", "RollingKVCache", "BACKENDS", "choose_backend",
    "Dropout", "dropout", "keep_mask",
    "padding_mask", "causal_mask", "sliding_window_mask", "causal", "sliding_window", "padding",
    "and_masks", "or_masks", "not_mask", "create_mask", "document", "global_tokens", "key_spans_of",
    "softmax", "sparsemax", "sigmoid", "NORMALIZERS", "softcap", "compose_score_mods",
    "Score", "DotScore", "ScaledDotScore", "GeneralScore", "AdditiveScore", "CosineScore",
]
