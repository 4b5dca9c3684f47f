"""Turn documents into padded batches of token ids with a fixed budget of real tokens.

Each document is tokenised on its own and cut into pieces of at most ``seq_len`` tokens
(counting the model's special tokens, which are added to every piece exactly as the tokenizer
adds them to a text); pieces never cross documents.  Batches are right-padded and carry an
attention mask; every expectation in the analysis runs over mask == 1 only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from paperlib.data.models import quiet_transformers


@dataclass
class TokenBatch:
    input_ids: torch.Tensor  # (batch, seq)
    attention_mask: torch.Tensor  # (batch, seq), 1 = real token

    @property
    def n_tokens(self) -> int:
        return int(self.attention_mask.sum())


def special_tokens(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after the text of any input."""
    probe = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(probe) + 1):
        if full[start : start + len(probe)] == probe:
            return list(full[:start]), list(full[start + len(probe) :])
    return [], []


def sequences(
    tokenizer: PreTrainedTokenizerBase, docs: Iterable[str], n_tokens: int, seq_len: int,
    min_len: int = 8,
) -> list[list[int]]:
    """Token-id sequences holding ``n_tokens`` real tokens in all (the last one cut to fit)."""
    if n_tokens <= 0:
        raise ValueError(f"n_tokens must be positive, got {n_tokens}")
    pre, post = special_tokens(tokenizer)
    body = seq_len - len(pre) - len(post)
    if body < 1:
        raise ValueError(f"seq_len={seq_len} leaves no room next to {len(pre) + len(post)} special tokens")
    out: list[list[int]] = []
    total = 0
    for doc in docs:
        with quiet_transformers():  # whole documents exceed model_max_length before cutting
            ids = tokenizer(doc, add_special_tokens=False)["input_ids"]
        for start in range(0, len(ids), body):
            piece = pre + ids[start : start + body] + post
            if len(piece) < min_len:
                continue
            piece = piece[: n_tokens - total]
            out.append(piece)
            total += len(piece)
            if total >= n_tokens:
                return out
    raise ValueError(
        f"the text holds only {total} tokens in pieces of >= {min_len}; {n_tokens} were asked for"
    )


def batches(seqs: list[list[int]], batch_size: int, pad_id: int) -> list[TokenBatch]:
    """Right-padded batches of ``batch_size`` sequences."""
    out = []
    for i in range(0, len(seqs), batch_size):
        chunk = seqs[i : i + batch_size]
        width = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, s in enumerate(chunk):
            ids[row, : len(s)] = torch.tensor(s)
            mask[row, : len(s)] = 1
        out.append(TokenBatch(ids, mask))
    return out
