"""Tiny offline fixtures for the LoRAILD tests: random RoBERTa teacher (4 layers) / student (2 layers)
saved to folders with a word-level tokenizer, and small GLUE TSV folders written here.

Nothing touches the network.  The helpers reach the tests through fixtures (this folder has no
``__init__.py``).
"""

from __future__ import annotations

import importlib.util
import os
import random
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

# thousands of tiny matrix products: one thread avoids OpenMP barrier waits on a busy 2-core box
torch.set_num_threads(1)

# Without CUDA, test_loraild_lora_a_kernel.py runs the Triton op in Triton's CPU interpreter, which
# is chosen when triton and each kernel are imported: before transformers imports triton, so here.
# It changes nothing that does not run triton kernels (and nothing where triton is not installed).
if "triton" not in sys.modules and importlib.util.find_spec("triton") is not None and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

@pytest.fixture(scope="module")
def triton_device() -> str:
    """Where the Triton LoRA-A op's tests run: CUDA, else Triton's CPU interpreter (skipped where neither
    can: triton missing, or imported before ``TRITON_INTERPRET=1`` could be set)."""
    pytest.importorskip("triton")
    from paperlib.loraild import lora_a_kernel

    if torch.cuda.is_available():
        if lora_a_kernel.interpreted():
            pytest.skip("the op's kernels were defined in the interpreter (TRITON_INTERPRET=1) on a CUDA box")
        return "cuda"
    if not lora_a_kernel.interpreted():
        pytest.skip("no CUDA, and triton was imported before TRITON_INTERPRET=1 could be set")
    return "cpu"


POS = ["good", "great", "love", "fun", "fine", "superb"]
NEG = ["bad", "awful", "hate", "boring", "dull", "weak"]
FILL = ["the", "a", "movie", "film", "plot", "actor", "is", "was", "very", "this"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _sentence(rng: random.Random, label: int) -> str:
    words = [rng.choice(FILL) for _ in range(rng.randint(2, 5))]
    words += [rng.choice(POS if label else NEG) for _ in range(rng.randint(1, 4))]
    rng.shuffle(words)
    return " ".join(words)


def write_glue(root: Path, n_train: int = 60, n_dev: int = 30) -> Path:
    """Small files in the original GLUE layouts (headers, label encodings, column orders)."""
    rng = random.Random(0)

    def rows(n):
        return [(rng.randint(0, 1),) for _ in range(n)]

    def write(folder: str, name: str, lines: list[str]) -> None:
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")

    for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
        labs = rows(n)
        write("SST-2", name, ["sentence\tlabel"] + [f"{_sentence(rng, y)}\t{y}" for (y,) in labs])
        write("CoLA", name, [f"gj04\t{y}\t\t{_sentence(rng, y)}" for (y,) in labs])
        write("RTE", name, ["index\tsentence1\tsentence2\tlabel"] + [
            f"{i}\t{_sentence(rng, y)}\t{_sentence(rng, y)}\t{'not_entailment' if y else 'entailment'}"
            for i, (y,) in enumerate(labs)])
        write("QNLI", name, ["index\tquestion\tsentence\tlabel"] + [
            f"{i}\t{_sentence(rng, y)} ?\t{_sentence(rng, y)}\t{'not_entailment' if y else 'entailment'}"
            for i, (y,) in enumerate(labs)])
        write("MRPC", name, ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"] + [
            f"{y}\t{i}\t{i + 1}\t{_sentence(rng, y)}\t{_sentence(rng, y)}" for i, (y,) in enumerate(labs)])
        write("STS-B", name, ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"] + [
            f"{i}\tmain-captions\tMSRvid\t2012test\t{i}\tnone\tnone\t{_sentence(rng, y)}\t{_sentence(rng, 1 - y)}\t"
            f"{rng.uniform(0, 5):.3f}" for i, (y,) in enumerate(labs)])
    return root


def write_models(root: Path, dropout: bool = True) -> dict[str, str]:
    """Tiny random RoBERTa classifiers (teacher 4 layers, student 2) + a BERT word-piece tokenizer.

    ``dropout=False`` turns every dropout of the models off (runs that must agree to float noise).
    """
    from transformers import BertTokenizerFast, RobertaConfig, RobertaForSequenceClassification

    root.mkdir(parents=True, exist_ok=True)
    (root / "vocab.txt").write_text("\n".join(SPECIAL + FILL + POS + NEG + ["?"]) + "\n")
    # a vocab dict: transformers 5 reads only the special tokens from vocab_file here, so every
    # word would become [UNK]
    words = (root / "vocab.txt").read_text().split()
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)})
    out = {}
    for name, layers in (("teacher", 4), ("student", 2)):
        torch.manual_seed(0)
        off = {} if dropout else dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                      classifier_dropout=0.0)
        cfg = RobertaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=80, pad_token_id=0,
                            type_vocab_size=2, **off)
        RobertaForSequenceClassification(cfg).save_pretrained(root / name)
        tok.save_pretrained(root / name)
        out[name] = str(root / name)
    return out


@pytest.fixture(scope="session")
def writers() -> SimpleNamespace:
    """This folder's writers, for tests that need models or GLUE folders of their own
    (``write_models(root, dropout=False)``: every dropout off)."""
    return SimpleNamespace(write_glue=write_glue, write_models=write_models)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """Paths of the tiny models and GLUE folder, and a ``config(**changes)`` helper."""
    root = tmp_path_factory.mktemp("loraild_tiny")
    models = write_models(root / "models")
    glue = write_glue(root / "glue")

    def config(**changes):
        from paperlib.loraild.config import RunConfig

        base = dict(task="sst2", glue_dir=str(glue), teacher=models["teacher"], student=models["student"],
                    epochs=1, teacher_epochs=1, rank=4, lr=1e-3, teacher_lr=1e-3, batch_size=8,
                    eval_batch_size=32, max_length=16, ild_start=0, device="cpu", progress=False,
                    results_dir=str(root / "results"), cluster_max_examples=30)
        base.update(changes)
        return RunConfig(**base)

    return SimpleNamespace(root=root, glue=glue, teacher=models["teacher"], student=models["student"],
                           config=config)
