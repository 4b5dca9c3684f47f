"""Tiny random models, a tiny offline tokenizer and tiny texts for the swap tests.

Everything is built from configs with fixed seeds; nothing touches the network.  The helpers
reach the tests through the ``tiny`` fixture (``tests/swap/`` has no ``__init__.py``, so test
modules cannot import this file reliably).
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch
from torch import nn

# The tiny models run thousands of small matrix products: with several OpenMP threads on a
# small, busy machine each one waits on thread barriers (10+ ms for a 32 x 32 product).
torch.set_num_threads(1)

# --------------------------------------------------------------------------- tiny models

VOCAB = 100
D = 32
N_LAYERS = 4


def tiny_config(arch: str):
    from transformers import BertConfig, GPT2Config, LlamaConfig, MPNetConfig, RobertaConfig

    if arch == "gpt2":
        return GPT2Config(n_layer=N_LAYERS, n_embd=D, n_head=2, n_positions=64, vocab_size=VOCAB,
                          bos_token_id=0, eos_token_id=0)
    if arch == "llama":
        return LlamaConfig(num_hidden_layers=N_LAYERS, hidden_size=D, intermediate_size=64,
                           num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB,
                           max_position_embeddings=64, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    common = dict(num_hidden_layers=N_LAYERS, hidden_size=D, intermediate_size=64, num_attention_heads=2,
                  vocab_size=VOCAB, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    if arch == "bert":
        return BertConfig(max_position_embeddings=64, **common)
    if arch == "roberta":
        return RobertaConfig(max_position_embeddings=70, pad_token_id=1, bos_token_id=0, eos_token_id=2, **common)
    if arch == "mpnet":
        return MPNetConfig(max_position_embeddings=70, pad_token_id=1, bos_token_id=0, eos_token_id=2, **common)
    raise KeyError(arch)


_MODELS: dict[str, nn.Module] = {}


def tiny_model(arch: str) -> nn.Module:
    """A tiny random base model (``AutoModel.from_config``) in eval mode, built once per session.

    Tests that change a model (e.g. reorder its blocks) must restore it.
    """
    if arch not in _MODELS:
        from transformers import AutoModel

        torch.manual_seed(0)
        model = AutoModel.from_config(tiny_config(arch)).eval()
        # random init gives small residual updates; scale them up a little so that swapping
        # layers changes the output measurably (delta well above float error).  Norm layers get
        # random gains and biases as in trained models: at init (gain 1, bias 0) a LayerNorm output
        # sums to 0 over features, so post-LN states span only d - 1 dimensions and the least
        # squares maps of eq. 12 are not identifiable.
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.dim() == 2 and "embed" not in name and "wte" not in name and "wpe" not in name:
                    p.mul_(5.0)
                elif p.dim() == 1 and ("norm" in name.lower() or "ln_" in name):
                    if name.endswith("weight"):
                        p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
                    else:
                        p.copy_(0.2 * torch.randn(p.shape, generator=g))
        _MODELS[arch] = model
    return _MODELS[arch]


def random_sequences(lengths, seed: int = 0, low: int = 3, high: int = VOCAB) -> list[list[int]]:
    """Random token ids (never 0..2: pad / special ids of the tiny configs)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(low, high, (n,), generator=g).tolist() for n in lengths]


# --------------------------------------------------------------------------- tiny texts

WORDS = (
    "the cat dog bird fish tree house river stone cloud sun moon star road city field ran sat flew "
    "swam grew stood fell rose went saw big small old new red green blue dark bright quiet loud on "
    "in over under near far and but then so a of to"
).split()


def make_docs(n_docs: int = 8, n_sentences: int = 12, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        sents = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 12))) + " ." for _ in range(n_sentences)]
        docs.append(" ".join(sents))
    return docs


def make_tokenizer(bert_style: bool = False):
    """A WordLevel tokenizer over WORDS (vocab < 100), wrapped for transformers, with a pad token.

    ``bert_style`` adds a post-processor that puts [CLS] ... [SEP] around every input.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([" ".join(WORDS) + " ."], trainers.WordLevelTrainer(special_tokens=specials))
    if bert_style:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
        )
    assert tok.get_vocab_size() <= VOCAB
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]", model_max_length=10**6)


@pytest.fixture(scope="session")
def tiny():
    """The helpers of this file: ``tiny.model(arch)``, ``tiny.config(arch)``, ``tiny.sequences(lengths)``,
    ``tiny.docs()``, ``tiny.tokenizer(bert_style)`` and the sizes ``N_LAYERS``, ``D``, ``VOCAB``."""
    return SimpleNamespace(model=tiny_model, config=tiny_config, sequences=random_sequences, docs=make_docs,
                           tokenizer=make_tokenizer, N_LAYERS=N_LAYERS, D=D, VOCAB=VOCAB, WORDS=WORDS)


@pytest.fixture(scope="session")
def tokenizer():
    return make_tokenizer(bert_style=False)


@pytest.fixture(scope="session")
def bert_tokenizer():
    return make_tokenizer(bert_style=True)


@pytest.fixture(scope="session")
def text_file(tmp_path_factory):
    """A .txt of 8 blank-line separated documents (~100 words each)."""
    path = tmp_path_factory.mktemp("text") / "tiny.txt"
    path.write_text("\n\n".join(make_docs()) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory, tokenizer):
    """A tiny GPT-2 (4 blocks, d = 32) and its tokenizer saved with save_pretrained."""
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    tiny_model("gpt2").save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
