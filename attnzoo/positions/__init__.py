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

#: every position encoding by the name models take (``positions=``): (slot, paper, class)
POSITIONS = {
    "sinusoidal": ("added to inputs", "Vaswani et al. 2017, Attention Is All You Need", SinusoidalPositions),
    "learned": ("added to inputs", "Vaswani et al. 2017; Gehring et al. 2017", LearnedPositions),
    "rope": ("transform of q and k", "Su et al. 2021, RoFormer", RotaryPositions),
    "alibi": ("score_mod bias", "Press et al. 2022, Train Short, Test Long", ALiBi),
    "t5": ("score_mod bias", "Raffel et al. 2020, T5", T5RelativeBias),
    "relative": ("bias from q", "Shaw et al. 2018, Self-Attention with Relative Position Representations",
                 RelativePositions),
}

__all__ = ["POSITIONS", "SinusoidalPositions", "LearnedPositions", "sinusoidal_table", "RotaryPositions", "apply_rope",
           "ALiBi", "alibi", "alibi_slopes", "T5RelativeBias", "t5_bucket", "RelativePositions"]
