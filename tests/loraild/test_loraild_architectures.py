"""LoRA targets and LoRA-A hook points per architecture: BERT / RoBERTa (query, key, value under
attention.self) and MPNet (q, k, v under attention.attn) record the same thing, x @ A^T."""

from __future__ import annotations

import pytest
import torch
from transformers import (BertConfig, BertForSequenceClassification, GPT2Config, GPT2ForSequenceClassification,
                          MPNetConfig, MPNetForSequenceClassification, RobertaConfig,
                          RobertaForSequenceClassification)

from paperlib.loraild.features import LoraFeatureRecorder, lora_a_modules
from paperlib.loraild.models import encoder_layers, lora_targets, student_lora, teacher_lora

SIZE = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=80, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
ARCHITECTURES = {
    "bert": (lambda: BertForSequenceClassification(BertConfig(**SIZE)), ("attention.self", ("query", "key", "value"))),
    "roberta": (lambda: RobertaForSequenceClassification(RobertaConfig(pad_token_id=1, **SIZE)),
                ("attention.self", ("query", "key", "value"))),
    "mpnet": (lambda: MPNetForSequenceClassification(MPNetConfig(pad_token_id=1, **SIZE)),
              ("attention.attn", ("q", "k", "v"))),
}


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
@pytest.mark.parametrize("wrap", ["teacher", "student"])
def test_hooks_record_x_times_A_transpose(arch, wrap):
    build, (where, names) = ARCHITECTURES[arch]
    torch.manual_seed(0)
    model = teacher_lora(build(), 4) if wrap == "teacher" else student_lora(build(), 4)
    model.eval()
    assert lora_targets(model) == names
    inputs, handles = {}, []
    for li, layer in enumerate(encoder_layers(model)):
        parent = layer.get_submodule(where)
        for role, name in zip(("query", "key", "value"), names):
            proj = getattr(parent, name)
            assert "default" in proj.lora_A  # LoRA sits on the named projection
            handles.append(proj.register_forward_hook(
                lambda m, i, o, key=(li, role): inputs.__setitem__(key, i[0].detach())))
    ids = torch.randint(3, 100, (3, 7))
    with LoraFeatureRecorder(model) as rec:
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
        mods = lora_a_modules(model)
        assert rec.stacked().shape == (3, 7, 2, 3, 4)
        assert len(inputs) == 2 * 3
        for (li, role), x in inputs.items():
            expected = x @ mods[li][role].weight.T
            assert expected.abs().max() > 0
            assert torch.allclose(rec.get(li, role), expected, atol=1e-6)
    for h in handles:
        h.remove()


def test_unknown_architecture_is_one_clear_line():
    gpt2 = GPT2ForSequenceClassification(GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=2, n_positions=40))
    for call in (lambda: student_lora(gpt2, 4), lambda: teacher_lora(gpt2, 4), lambda: lora_a_modules(gpt2)):
        with pytest.raises(ValueError) as err:
            call()
        msg = str(err.value)
        assert "'gpt2'" in msg and "mpnet" in msg and "PROJECTIONS" in msg and "\n" not in msg
