"""LoRA targets and LoRA-A hooks per architecture: MPNet's q/k/v record ``x @ A^T`` like BERT's."""

from __future__ import annotations

import pytest
import torch

from paperlib.loraild.features import LoraFeatureRecorder, lora_a_modules
from paperlib.loraild.models import (ModelLoadError, build_student, build_teacher, encoder_layers, lora_targets)


def _tiny_model(root, tiny, config_cls, model_cls, layers: int) -> str:
    """A tiny random classifier of ``model_cls`` saved with the tiny fixture's tokenizer."""
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    cfg = config_cls(vocab_size=100, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=80, pad_token_id=0)
    model_cls(cfg).save_pretrained(root)
    AutoTokenizer.from_pretrained(tiny.teacher).save_pretrained(root)
    return str(root)


@pytest.fixture(scope="module")
def tiny_mpnet(tmp_path_factory, tiny):
    from transformers import MPNetConfig, MPNetForSequenceClassification

    return _tiny_model(tmp_path_factory.mktemp("mpnet"), tiny, MPNetConfig, MPNetForSequenceClassification, 4)


def test_mpnet_hooks_record_x_times_A_transpose(tiny_mpnet):
    torch.manual_seed(0)
    teacher = build_teacher(tiny_mpnet, 2, rank=4).eval()
    assert lora_targets(teacher) == ("q", "k", "v")
    inputs = {}
    handles = []
    for li, layer in enumerate(encoder_layers(teacher)):
        for role, name in zip(("query", "key", "value"), ("q", "k", "v")):
            mod = getattr(layer.attention.attn, name)
            handles.append(mod.register_forward_hook(
                lambda m, i, o, key=(li, role): inputs.__setitem__(key, i[0].detach())))
    ids = torch.randint(5, 100, (3, 7))
    with LoraFeatureRecorder(teacher) as rec:
        teacher(input_ids=ids, attention_mask=torch.ones_like(ids))
        mods = lora_a_modules(teacher)
        assert len(inputs) == 4 * 3
        for (li, role), x in inputs.items():
            expected = x @ mods[li][role].weight.T
            assert expected.abs().max() > 0
            assert torch.allclose(rec.get(li, role), expected, atol=1e-6)
        assert rec.stacked().shape == (3, 7, 4, 3, 4)
    for h in handles:
        h.remove()


def test_mpnet_half_student_has_lora_on_every_kept_layer(tiny_mpnet):
    student = build_student(f"half:{tiny_mpnet}", 2, rank=4)
    assert len(lora_a_modules(student)) == 2
    assert all(p.requires_grad for p in student.parameters())


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(ModelLoadError, match="LoRA targets of model type 'gpt2' are not known; supported: .*bert"):
        lora_targets("gpt2")


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory, tiny):
    from transformers import BertConfig, BertForSequenceClassification

    return _tiny_model(tmp_path_factory.mktemp("bert"), tiny, BertConfig, BertForSequenceClassification, 2)


@pytest.mark.parametrize("arch", ["roberta", "bert", "mpnet"])
@pytest.mark.parametrize("rank", [None, 4])
def test_every_trainable_parameter_gets_a_gradient_from_the_ce_loss(tiny, tiny_bert, tiny_mpnet, arch, rank):
    """Data-parallel runs skip DDP's search for unused parameters unless a method has some
    (``DistillModel.skips_parameters``: RAIL-KD's heads only); that holds if the CE loss alone
    reaches every trainable parameter of the student (full or with LoRA) and of the teacher."""
    path = {"roberta": tiny.student, "bert": tiny_bert, "mpnet": tiny_mpnet}[arch]
    torch.manual_seed(0)
    ids = torch.randint(5, 100, (3, 7))
    models = [build_student(path, 2, rank, 0.1)] + ([build_teacher(path, 2, rank=4)] if rank else [])
    for model in models:
        model.train()
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids))
        torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 1, 0])).backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, missing
