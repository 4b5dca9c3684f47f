"""Tokenised splits, batches and a resumable shuffling order.

Texts are tokenised once (truncated to ``max_length``, sentence pairs as pairs).  A batch is
padded to its longest sequence, or to ``max_length`` when ``pad_to_max`` is set (the authors pad
everything to 128; the unmasked ILD variant needs it).  Every batch carries ``idx``, the example's
position in its split, so frozen teacher outputs can be looked up (:mod:`teacher_cache`), and
``padded``, a Python bool saying whether any token is padding (known on the host while collating, so
the model's forward need not ask the device: :func:`~paperlib.loraild.models.forward_kwargs`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from transformers import PreTrainedTokenizerBase


@dataclass
class EncodedSplit(Dataset):
    """Token ids (unpadded lists) and labels of one split."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict:
        item = {"idx": i, "input_ids": self.input_ids[i], "label": self.labels[i]}
        if self.token_type_ids is not None:
            item["token_type_ids"] = self.token_type_ids[i]
        return item

    def lengths(self) -> np.ndarray:
        return np.array([len(x) for x in self.input_ids])


def encode(df: pd.DataFrame, tokenizer: PreTrainedTokenizerBase, max_length: int,
           regression: bool = False) -> EncodedSplit:
    """Tokenise ``text_a`` (and ``text_b``) of a split."""
    a = df["text_a"].astype(str).tolist()
    b = df["text_b"].astype(str).tolist() if "text_b" in df.columns else None
    enc = tokenizer(a, b, truncation=True, max_length=max_length, padding=False)
    tt = enc.get("token_type_ids")
    labels = df["label"].to_numpy(dtype=np.float32 if regression else np.int64)
    return EncodedSplit(list(enc["input_ids"]), list(tt) if tt is not None else None, labels)


class Collator:
    """Pads a list of items into a batch of tensors (``idx``, ``input_ids``, ``attention_mask``, ...)
    and the host-side flag ``padded`` (some token of the batch is padding).

    ``multiple`` > 1 (for a compiled student, :func:`~paperlib.loraild.train.run`): a batch padded to
    its longest item is padded further, to the next multiple of ``multiple`` (at most ``max_length``),
    and always counts as ``padded``.  So the batches take at most ``max_length / multiple`` shapes and
    always carry their mask: one traced graph serves every length, and one CUDA graph is recorded per
    shape, where each length, and a batch with and one without a mask, would each be another.
    Padding is masked everywhere, so the results are those of the longest-item padding up to rounding.
    """

    def __init__(self, pad_id: int, max_length: int, pad_to_max: bool = False, multiple: int = 1):
        self.pad_id, self.max_length, self.pad_to_max, self.multiple = pad_id, max_length, pad_to_max, multiple

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        length = self.max_length if self.pad_to_max else max(len(it["input_ids"]) for it in items)
        if self.multiple > 1 and not self.pad_to_max:
            length = min(self.max_length, -(-length // self.multiple) * self.multiple)
        n = len(items)
        ids = torch.full((n, length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, length), dtype=torch.long)
        has_tt = "token_type_ids" in items[0]
        tt = torch.zeros((n, length), dtype=torch.long) if has_tt else None
        for i, it in enumerate(items):
            k = len(it["input_ids"])
            ids[i, :k] = torch.tensor(it["input_ids"], dtype=torch.long)
            mask[i, :k] = 1
            if tt is not None:
                tt[i, :k] = torch.tensor(it["token_type_ids"], dtype=torch.long)
        labels = np.array([it["label"] for it in items])
        batch: dict = {
            "idx": torch.tensor([it["idx"] for it in items], dtype=torch.long),
            "input_ids": ids,
            "attention_mask": mask,
            "labels": torch.from_numpy(labels),
            "padded": self.multiple > 1 or any(len(it["input_ids"]) < length for it in items),
        }
        if tt is not None:
            batch["token_type_ids"] = tt
        return batch


class EpochPermutation(Sampler[int]):
    """A fresh permutation per epoch, a function of ``(seed, epoch)`` only (resumable).

    With ``lengths`` and ``batch_size`` (length grouping, a CPU-time saver): the permutation is cut
    into chunks of ``group`` batches, each chunk sorted by length and cut into batches, and the
    batches are shuffled again, so a batch holds examples of similar length (little padding) while
    the batch order stays random.  The one short batch, if any, stays last.
    """

    def __init__(self, n: int, seed: int, lengths: np.ndarray | None = None, batch_size: int = 1,
                 group: int = 8):
        self.n, self.seed, self.epoch = n, seed, 0
        self.lengths, self.batch_size, self.group = lengths, batch_size, group

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        if self.lengths is None or self.batch_size <= 1:
            return iter(order)
        bs, chunk = self.batch_size, self.batch_size * self.group
        full = (self.n // bs) * bs
        batches = []
        for start in range(0, full, chunk):
            part = order[start:min(start + chunk, full)]
            part.sort(key=lambda i: -int(self.lengths[i]))
            batches += [part[k:k + bs] for k in range(0, len(part), bs)]
        shuffled = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        return iter([i for b in shuffled for i in b] + order[full:])

    def __len__(self) -> int:
        return self.n


class LengthOrder(Sampler[int]):
    """Evaluation order by decreasing length (less padding; metrics do not depend on order)."""

    def __init__(self, lengths: np.ndarray):
        self.order = np.argsort(-np.asarray(lengths), kind="stable").tolist()

    def __iter__(self):
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


def make_loader(split: EncodedSplit, batch_size: int, collator: Collator,
                sampler: Sampler | None = None, pin_memory: bool = False) -> DataLoader:
    """A loader in the split's order (``sampler=None``) or the sampler's.

    ``pin_memory`` (for a GPU run) collates into page-locked memory, so that a batch's copy to the
    device is asynchronous; copies from pageable memory took 0.155 ms each on the device, about nine
    per step, in a profile on an H100 (bench/README.md section 7).
    """
    return DataLoader(split, batch_size=batch_size, sampler=sampler, shuffle=False, collate_fn=collator,
                      pin_memory=pin_memory)


def batch_to(batch: dict, device: torch.device | str, non_blocking: bool = False) -> dict:
    """The batch with its tensors on ``device`` (host-side values such as ``padded`` kept as they are)."""
    return {k: v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()}


__all__ = ["EncodedSplit", "encode", "Collator", "EpochPermutation", "LengthOrder", "make_loader", "batch_to"]
