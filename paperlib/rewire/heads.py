"""The model's output head, to read a rewiring's cost at the next-token distribution.

For a causal LM the logits are ``lm_head(norm(X_n))``: the base model's final norm (``norm`` in
Llama-style decoders, ``ln_f`` in GPT-2, ...) and the output embedding
(``model.get_output_embeddings()``).  Encoders (BERT, RoBERTa, MPNet) have no next-token head:
their rewirings are measured by hidden-state costs only.

:func:`load_model_with_head` loads ``AutoModelForCausalLM`` when the checkpoint is a causal LM
(its ``architectures`` name a ``...ForCausalLM`` / ``...LMHeadModel`` class, or, for GGUF files
that name none, its ``model_type`` is a decoder) and ``AutoModel`` otherwise, reusing
:mod:`paperlib.data.models` for the embedded names and the error messages.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel,
                          PreTrainedTokenizerBase)

from paperlib.data.models import (EMBEDDED_MODELS, embedded_location, load_error, quiet_transformers,
                                  resolve_dtype)

#: attribute of the base model that holds the final norm, per family
FINAL_NORMS: dict[str, str] = {
    "Llama-style decoders (model.norm)": "norm",
    "GPT-2 family (transformer.ln_f)": "ln_f",
    "Phi / Falcon-style (final_layernorm)": "final_layernorm",
    "OPT / T5-style (final_layer_norm)": "final_layer_norm",
}

#: model types whose checkpoints are encoders even though transformers maps them to a causal LM class
ENCODER_TYPES = frozenset({"bert", "roberta", "mpnet", "xlm-roberta", "distilbert", "electra", "deberta", "deberta-v2"})

CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


@dataclass
class OutputHead:
    """``logits = lm_head(norm(h))`` for a causal LM."""

    norm: nn.Module | None
    lm_head: nn.Module

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        if self.norm is not None:
            h = self.norm(h)
        return self.lm_head(h).float()


def find_output_head(model: nn.Module) -> OutputHead | None:
    """The final norm and LM head of a causal LM, or ``None`` for a model without a next-token head
    (a base model loaded by ``AutoModel``, or an encoder)."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) in ENCODER_TYPES or not type(model).__name__.endswith(CAUSAL_SUFFIXES):
        return None
    lm_head = model.get_output_embeddings()
    if lm_head is None:
        return None
    base = model.base_model
    for attr in FINAL_NORMS.values():
        norm = getattr(base, attr, None)
        if isinstance(norm, nn.Module):
            return OutputHead(norm, lm_head)
    families = "; ".join(FINAL_NORMS)
    raise TypeError(f"{type(model).__name__} has an LM head but no final norm paperlib knows ({families})")


def is_causal_checkpoint(config) -> bool:
    """Whether a checkpoint's config describes a causal LM with a next-token head."""
    archs = getattr(config, "architectures", None) or []
    if archs:
        return any(a.endswith(CAUSAL_SUFFIXES) for a in archs)
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and config.model_type not in ENCODER_TYPES


def load_model_with_head(
    name: str, device: str = "cpu", dtype: str | torch.dtype = "float32"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model (eval mode) with its LM head where it is a causal LM, and its tokenizer.

    Same names and errors as :func:`paperlib.data.models.load_model`.
    """
    torch_dtype = resolve_dtype(dtype)
    where, extra = embedded_location(name) if name in EMBEDDED_MODELS else (name, {})
    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(where, **extra)
            auto = AutoModelForCausalLM if is_causal_checkpoint(config) else AutoModel
            tokenizer = AutoTokenizer.from_pretrained(where, **extra)
            model = auto.from_pretrained(where, dtype=torch_dtype, **extra)
    except (OSError, ValueError) as err:
        raise load_error(name, err) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    model.to(device).eval()
    return model, tokenizer

