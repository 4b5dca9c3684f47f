"""find_blocks / ResidualStack: the residual block list of each family and exact block calls."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from paperlib.swap.blocks import ResidualStack, UnsupportedModelError, find_blocks

N_LAYERS = 4  # tests/swap/conftest.py builds 4-block models with d = 32


def padded_batch(tiny, lengths=(12, 7, 10), seed=0):
    seqs = tiny.sequences(lengths, seed=seed)
    width = max(lengths)
    ids = torch.full((len(seqs), width), 0, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = torch.tensor(s)
        mask[r, : len(s)] = 1
    return ids, mask


def expected_list(arch: str, model: nn.Module) -> nn.ModuleList:
    return {
        "gpt2": lambda: model.h,
        "llama": lambda: model.layers,
        "bert": lambda: model.encoder.layer,
        "roberta": lambda: model.encoder.layer,
        "mpnet": lambda: model.encoder.layer,
    }[arch]()


ALL = ["gpt2", "llama", "bert", "roberta", "mpnet"]


@pytest.mark.parametrize("arch", ALL)
def test_find_blocks_base_models(arch, tiny):
    model = tiny.model(arch)
    blocks = find_blocks(model)
    assert blocks is expected_list(arch, model)
    assert len(blocks) == N_LAYERS
    assert ResidualStack(model).n_layers == N_LAYERS


def test_find_blocks_models_with_heads(tiny):
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(tiny.config("gpt2"))
    assert find_blocks(lm) is lm.transformer.h
    llm = AutoModelForCausalLM.from_config(tiny.config("llama"))
    assert find_blocks(llm) is llm.model.layers
    mlm = AutoModelForMaskedLM.from_config(tiny.config("bert"))
    assert find_blocks(mlm) is mlm.bert.encoder.layer
    rmlm = AutoModelForMaskedLM.from_config(tiny.config("roberta"))
    assert find_blocks(rmlm) is rmlm.roberta.encoder.layer


def _t5():
    from transformers import T5Config, T5Model

    return T5Model(T5Config(vocab_size=100, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2))


class NoBlocks(nn.Module):
    """Attributes with the right names but no usable block list."""

    def __init__(self):
        super().__init__()
        self.h = nn.Linear(4, 4)  # not a ModuleList
        self.layers = nn.ModuleList()  # empty


@pytest.mark.parametrize(
    "make",
    [lambda: nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4)), _t5,
     lambda: type("Empty", (nn.Module,), {})(), NoBlocks],
    ids=["sequential", "t5", "empty-module", "no-block-list"],
)
def test_unsupported_model_raises_naming_families(make):
    model = make()
    with pytest.raises(UnsupportedModelError) as info:
        find_blocks(model)
    msg = str(info.value)
    for family in ("GPT-2", "Llama", "BERT", "RoBERTa", "MPNet"):
        assert family in msg
    assert type(model).__name__ in msg
    with pytest.raises(UnsupportedModelError):
        ResidualStack(model)


@pytest.mark.parametrize("arch", ALL)
def test_trace_returns_n_plus_one_states_and_block_calls_reproduce_them(arch, tiny):
    model = tiny.model(arch)
    stack = ResidualStack(model)
    ids, mask = padded_batch(tiny)
    if arch in ("roberta", "mpnet"):
        ids = torch.where(mask.bool(), ids, torch.ones_like(ids))  # their pad id is 1
    tr = stack.trace(ids, mask)
    assert len(tr.hidden) == N_LAYERS + 1
    for h in tr.hidden:
        assert h.shape == (3, ids.shape[1], 32)
    for i in range(N_LAYERS):
        out = tr.call(stack.blocks[i], tr.hidden[i])
        real = mask.bool()
        torch.testing.assert_close(out[real], tr.hidden[i + 1][real], rtol=1e-5, atol=1e-5)
        # the states change from block to block (the hook did not record one tensor twice)
        assert not torch.allclose(tr.hidden[i][real], tr.hidden[i + 1][real])
    assert tr.call.kwargs.get("use_cache", False) is False


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bert"])
def test_trace_matches_output_hidden_states(arch, tiny):
    model = tiny.model(arch)
    stack = ResidualStack(model)
    ids, mask = padded_batch(tiny, seed=1)
    tr = stack.trace(ids, mask)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    hs = out.hidden_states
    assert len(hs) == N_LAYERS + 1
    real = mask.bool()
    for i in range(N_LAYERS):
        torch.testing.assert_close(tr.hidden[i][real], hs[i][real], rtol=1e-5, atol=1e-5)
    last = tr.hidden[N_LAYERS][real]
    final = out.last_hidden_state[real]
    with torch.no_grad():
        if arch == "gpt2":
            # HF applies ln_f to its last hidden state; the trace keeps the raw block output
            torch.testing.assert_close(model.ln_f(last), final, rtol=1e-5, atol=1e-5)
            assert not torch.allclose(last, final, atol=1e-3)
        elif arch == "llama":
            torch.testing.assert_close(model.norm(last), final, rtol=1e-5, atol=1e-5)
            assert not torch.allclose(last, final, atol=1e-3)
        else:  # post-LN encoder: no final norm, the last block output is the model output
            torch.testing.assert_close(last, final, rtol=1e-5, atol=1e-5)


def test_trace_is_independent_of_batch_padding(tiny):
    """A sequence traced alone and inside a right-padded batch gives the same real-token states."""
    for arch in ("gpt2", "llama", "bert"):
        stack = ResidualStack(tiny.model(arch))
        ids, mask = padded_batch(tiny, lengths=(12, 7), seed=2)
        tr = stack.trace(ids, mask)
        alone = stack.trace(ids[1:, :7], mask[1:, :7])
        for i in range(N_LAYERS + 1):
            torch.testing.assert_close(tr.hidden[i][1, :7], alone.hidden[i][0], rtol=1e-4, atol=1e-5)


def test_trace_leaves_no_hooks_behind(tiny):
    model = tiny.model("gpt2")
    stack = ResidualStack(model)
    ids, mask = padded_batch(tiny)
    before = [(len(b._forward_pre_hooks), len(b._forward_hooks)) for b in stack.blocks]
    stack.trace(ids, mask)
    assert [(len(b._forward_pre_hooks), len(b._forward_hooks)) for b in stack.blocks] == before
