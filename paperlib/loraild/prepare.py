"""A task's data as the training stages read it: splits, tokenizer, token ids and loaders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from accelerate import Accelerator

from paperlib.loraild.config import RunConfig, short_hash
from paperlib.loraild.encoded_cache import SPLITS, data_id, encoded_path, load_encoded, save_encoded
from paperlib.loraild.encoding import (Collator, EncodedSplit, EpochPermutation, LengthOrder, encode,
                                       make_loader)
from paperlib.loraild.models import check_tokenizer_fits, load_tokenizer
from paperlib.loraild.tasks import TaskData, load_task

_DATA: dict[str, "Prepared"] = {}
_CHECKED: set[str] = set()


@dataclass
class Prepared:
    """A task's splits, tokenizer and token ids (kept in memory per data setting)."""

    data: TaskData
    tokenizer: Any
    encoded: dict[str, EncodedSplit]


def prepare_data(cfg: RunConfig, keep: bool = False) -> Prepared:
    """Load, split and tokenise the task (cached in-process).

    ``keep``: read the token ids from the results folder, or write them there after tokenising
    (:mod:`~paperlib.loraild.encoded_cache`, keyed by the data's content); the training stages keep
    them, a reader of finished results (the book) does not write into their folder.
    """
    cfg = cfg.resolved()
    key = data_id(cfg)
    if key not in _DATA:
        data = load_task(cfg.task, cfg.glue_dir, cfg.max_train, cfg.max_valid, cfg.max_test)
        tok = load_tokenizer(cfg.tokenizer)
        reg = data.spec.regression
        path = encoded_path(cfg, key) if keep else None
        enc = load_encoded(path) if path is not None else None
        if enc is None or any(len(enc[s]) != len(data.split(s)) for s in SPLITS):
            enc = {s: encode(data.split(s), tok, cfg.max_length, reg) for s in SPLITS}
            if path is not None:
                save_encoded(path, enc)
        _DATA[key] = Prepared(data, tok, enc)
    models = {"teacher": cfg.teacher, "student": cfg.student}
    checked = short_hash({"data": key, **models})
    if checked not in _CHECKED:  # a student with another vocabulary would train on the wrong ids
        check_tokenizer_fits(_DATA[key].tokenizer, cfg.tokenizer, cfg.max_length, models)
        _CHECKED.add(checked)
    return _DATA[key]


def loaders(acc: Accelerator, prep: Prepared, cfg: RunConfig, seed: int):
    """Train (sharded over processes, ``batch_size`` global), valid and test loaders and the sampler.

    Train batches are padded to ``max_length`` where the run asks for it (:attr:`RunConfig.padding_to_max`,
    the authors' setting), valid and test batches to their longest sequence (same logits up to rounding).
    """
    pad_id = prep.tokenizer.pad_token_id
    collate = Collator(pad_id, cfg.max_length, cfg.padding_to_max)
    lengths = prep.encoded["train"].lengths() if cfg.group_by_length else None
    # batch_size is the global batch: each of the N processes takes batch_size / N examples
    if cfg.batch_size % acc.num_processes:
        raise ValueError(f"batch_size {cfg.batch_size} is not a multiple of {acc.num_processes} processes")
    per_process = cfg.batch_size // acc.num_processes
    sampler = EpochPermutation(len(prep.encoded["train"]), seed, lengths, per_process)
    pin = acc.device.type == "cuda"  # asynchronous copies to the GPU (runtime.get_accelerator: non_blocking)
    train = make_loader(prep.encoded["train"], per_process, collate, sampler, pin_memory=pin)
    # scoring pads each (length-sorted) batch to its longest sequence even where training pads to
    # max_length: the logits are the same up to rounding (padded keys are masked out of attention),
    # and sentences far shorter than max_length cost a fraction of the time
    score = Collator(pad_id, cfg.max_length, pad_to_max=False)
    valid = make_loader(prep.encoded["valid"], cfg.eval_batch_size, score,
                        LengthOrder(prep.encoded["valid"].lengths()), pin_memory=pin)
    test = make_loader(prep.encoded["test"], cfg.eval_batch_size, score,
                       LengthOrder(prep.encoded["test"].lengths()), pin_memory=pin)
    return sampler, train, valid, test, collate
