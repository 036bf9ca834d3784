"""Build a sequence-to-sequence model by name: ``--model rnn|transformer|convs2s`` and ``--attention NAME``.

The attention slot differs by architecture: the RNN decoder takes any
step-wise mechanism (``additive``, ``general``, ...); the Transformer takes a
multi-head variant (``mha``, ``gqa``, ``mqa``), which sets its key/value heads,
or a lightweight or dynamic convolution (``lightweight``, ``dynamic``), which
replaces its self-attention; ConvS2S takes its multi-step attention (``multistep``).
"""

from __future__ import annotations

from torch import nn

from ..core import validate as V
from ..registry import get, get_step_wise, mechanisms
from .convs2s import ConvS2S, ConvS2SConfig
from .options import check_options, kv_heads_for
from .rnn_seq2seq import RNNSeq2Seq, Seq2SeqConfig
from .transformer_seq2seq import TransformerConfig, TransformerSeq2Seq

MODELS = {"rnn": (RNNSeq2Seq, Seq2SeqConfig), "transformer": (TransformerSeq2Seq, TransformerConfig),
          "convs2s": (ConvS2S, ConvS2SConfig)}
DEFAULT_ATTENTION = {"rnn": "additive", "transformer": "mha", "convs2s": "multistep"}
TRANSFORMER_CONVOLUTIONS = ("lightweight", "dynamic")  # they replace self-attention; cross-attention stays MHA
TRANSFORMER_ATTENTION = ("mha", "gqa", "mqa") + TRANSFORMER_CONVOLUTIONS
CONVS2S_ATTENTION = ("multistep",)
_FIXED = {"src_vocab", "tgt_vocab", "attention", "self_attention"}


def check_model(model: str, attention: str, options: dict | None) -> None:
    """Fail early (before any data loads) on an unknown model, attention or option."""
    V.check_choice("model", model, MODELS)
    if model == "rnn":
        get_step_wise(attention)
    else:
        get(attention)
        fits = TRANSFORMER_ATTENTION if model == "transformer" else CONVS2S_ATTENTION
        if attention not in fits:
            raise ValueError(f"attention {attention!r} does not fit the {model} model's slot; choose one of: "
                             f"{', '.join(fits)} (or --model rnn for step-wise mechanisms)")
    check_options(model, options, MODELS[model][1], _FIXED)


@V.checked(model=V.one_of(MODELS), attention=V.one_of(lambda: [i.name for i in mechanisms()]), pad_id=V.COUNT,
           bos_id=V.COUNT, eos_id=V.COUNT)
def build_seq2seq(model: str, src_vocab: int, tgt_vocab: int, attention: str, options: dict | None = None, *,
                  pad_id: int = 0, bos_id: int = 1, eos_id: int = 2) -> nn.Module:
    check_model(model, attention, options)
    cls, cfg_cls = MODELS[model]
    options = dict(options or {})
    if model == "rnn":
        cfg = cfg_cls(src_vocab=src_vocab, tgt_vocab=tgt_vocab, attention=attention, **options)
    elif model == "transformer":
        if attention in TRANSFORMER_CONVOLUTIONS:
            options["self_attention"] = attention
        else:
            options = kv_heads_for(attention, options, TransformerConfig.num_heads)
        cfg = cfg_cls(src_vocab=src_vocab, tgt_vocab=tgt_vocab, **options)
    else:
        cfg = cfg_cls(src_vocab=src_vocab, tgt_vocab=tgt_vocab, **options)
    return cls(cfg, pad_id=pad_id, bos_id=bos_id, eos_id=eos_id)


@V.checked(model=V.one_of(MODELS), pad_id=V.COUNT, bos_id=V.COUNT, eos_id=V.COUNT)
def rebuild_seq2seq(model: str, config: dict, *, pad_id: int, bos_id: int, eos_id: int) -> nn.Module:
    """The model a checkpoint's config describes."""
    V.check_choice("model", model, MODELS)
    cls, cfg_cls = MODELS[model]
    return cls(cfg_cls.from_dict(config), pad_id=pad_id, bos_id=bos_id, eos_id=eos_id)


def restore_seq2seq(run_config: dict, state_dict: dict, target_vocab) -> nn.Module:
    """A run's encoder-decoder with its trained weights: the architecture from the run's config.json,
    the special token ids from its target vocabulary (shared by g2p, translate and seq2seq runs)."""
    model = rebuild_seq2seq(run_config.get("model", "rnn"), run_config["model_config"], pad_id=target_vocab.pad_id,
                            bos_id=target_vocab.bos_id, eos_id=target_vocab.eos_id)
    model.load_state_dict(state_dict)
    return model
