"""Position information, each in one slot of the core:

| slot | what | class |
|---|---|---|
| added to inputs | sinusoidal, learned (Vaswani 2017) | SinusoidalPositions, LearnedPositions |
| transform of q and k | RoPE (Su 2021) | RotaryPositions, apply_rope |
| score_mod bias | ALiBi (Press 2022), T5 buckets (Raffel 2020) | ALiBi, T5RelativeBias |
| bias from q | relative keys (Shaw 2018) | RelativePositions |
"""

from .absolute import LearnedPositions, SinusoidalPositions, sinusoidal_table
from .alibi import ALiBi, alibi, alibi_slopes
from .relative import RelativePositions
from .rope import RotaryPositions, apply_rope
from .t5 import T5RelativeBias, t5_bucket

__all__ = ["SinusoidalPositions", "LearnedPositions", "sinusoidal_table", "RotaryPositions", "apply_rope",
           "ALiBi", "alibi", "alibi_slopes", "T5RelativeBias", "t5_bucket", "RelativePositions"]
