"""Tiny causal LMs (with their heads) and encoders for the rewiring tests, built from the swap
tests' configs (``tests/swap/conftest.py``); nothing touches the network."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.swap.conftest import N_LAYERS, make_docs, make_tokenizer, random_sequences, tiny_config, tiny_model

torch.set_num_threads(1)

_LMS: dict = {}


def tiny_lm(arch: str):
    """A tiny causal LM whose base model is the swap tests' scaled tiny model (a fresh copy each
    call, so a test may change it)."""
    if arch not in _LMS:
        from transformers import AutoModelForCausalLM

        torch.manual_seed(0)
        lm = AutoModelForCausalLM.from_config(tiny_config(arch)).eval()
        lm.base_model.load_state_dict(tiny_model(arch).state_dict())
        _LMS[arch] = lm
    return copy.deepcopy(_LMS[arch])


def padded(lengths=(12, 7, 10), seed=0):
    """(input_ids, attention_mask), right-padded with id 0."""
    seqs = random_sequences(lengths, seed=seed)
    ids = torch.zeros((len(seqs), max(lengths)), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = torch.tensor(s)
        mask[r, : len(s)] = 1
    return ids, mask


@pytest.fixture
def lm():
    return tiny_lm


@pytest.fixture
def encoder():
    return lambda arch="bert": copy.deepcopy(tiny_model(arch))


@pytest.fixture
def batch():
    return padded


@pytest.fixture(scope="session")
def lm_dir(tmp_path_factory):
    """A tiny GPT-2 LM (4 blocks, d = 32, with its head) and a tokenizer saved with save_pretrained."""
    folder = tmp_path_factory.mktemp("tiny-gpt2-lm")
    tiny_lm("gpt2").save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def rewire_text(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "tiny.txt"
    path.write_text("\n\n".join(make_docs(n_docs=16)) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def n_layers():
    return N_LAYERS
