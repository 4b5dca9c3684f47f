"""Stage 1: the LoRA teacher (trained once per task and teacher setting), and its outputs for stage 2.

Stage 1 trains LoRA (q/k/v) and the classification head of the teacher with cross-entropy for
``teacher_epochs`` epochs and keeps the epoch with the best valid score (the authors picked the
checkpoint by hand).  One teacher per task and teacher setting is shared by every method and seed.
Its frozen outputs (logits, LoRA-A features, pooled states) are computed once and cached on disk
when they fit ``teacher_cache_max_gb``; otherwise the teacher runs alongside the student.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed
from transformers import AutoConfig

from paperlib.loraild import teacher_cache as tc
from paperlib.loraild.config import RunConfig, short_hash
from paperlib.loraild.encoding import Collator, make_loader
from paperlib.loraild.features import LoraFeatureRecorder
from paperlib.loraild.loop import adamw, fit
from paperlib.loraild.losses import ce_loss
from paperlib.loraild.models import (build_teacher, forward_kwargs, freeze, load_trainable_state, model_location,
                                     split_half, trainable_state)
from paperlib.loraild.prepare import loaders, prepare_data
from paperlib.files import read_json, read_or_none
from paperlib.locks import hold_lock
from paperlib.loraild.run_files import check_results_writable, load_tensors, save_tensors, teacher_dir, write_json
from paperlib.loraild.runtime import get_accelerator, search_unused_parameters

_TEACHERS: dict[str, torch.nn.Module] = {}
WEIGHTS = "teacher.safetensors"  # LoRA + head tensors (safetensors: reading it runs no code)
SUMMARY = "teacher.json"


def finished_summary(tdir: Path) -> dict | None:
    """The stage-1 summary if both its files read back (a damaged one is named, moved aside)."""
    summary = read_or_none(tdir / SUMMARY, read_json)
    if summary is None:
        return None
    if read_or_none(tdir / WEIGHTS, load_tensors) is None:
        (tdir / SUMMARY).unlink(missing_ok=True)  # the summary without its weights: train again
        return None
    return summary


def teacher_finished(cfg: RunConfig) -> bool:
    return finished_summary(teacher_dir(cfg)) is not None


def train_teacher(cfg: RunConfig, accelerator: Accelerator | None = None) -> dict:
    """Stage 1: LoRA + head of the teacher, best-valid epoch kept; returns the teacher summary.

    One process trains a teacher at a time (a lock in its folder); another one that needs the same
    teacher waits and reads the finished one.
    """
    cfg = cfg.resolved()
    tdir = teacher_dir(cfg)
    done = finished_summary(tdir)
    if done is not None:
        return done
    check_results_writable(cfg)
    acc = accelerator or get_accelerator(cfg.device)
    # under a launcher every process trains together (DDP), so a lock would split them
    lock = hold_lock(tdir / SUMMARY) if acc.num_processes == 1 else contextlib.nullcontext()
    with lock:
        done = finished_summary(tdir)  # trained by another process while this one waited
        if done is not None:
            return done
        return _train_teacher(cfg, acc, tdir)


def _train_teacher(cfg: RunConfig, acc: Accelerator, tdir: Path) -> dict:
    tc.release_device()  # an earlier run's teacher outputs held on the GPU: not while a teacher trains
    prep = prepare_data(cfg, keep=True)
    spec = prep.data.spec
    t0 = time.time()
    set_seed(cfg.teacher_seed)
    teacher = build_teacher(cfg.teacher, spec.num_labels, cfg.rank, cfg.lora_dropout)
    params = [p for p in teacher.parameters() if p.requires_grad]
    optimizer = adamw(params, cfg.teacher_lr, cfg.teacher_weight_decay)
    sampler, train, valid, test, _ = loaders(acc, prep, cfg, cfg.teacher_seed)
    search_unused_parameters(acc, False)  # LoRA and the head: in every step's graph
    model, optimizer, train, valid, test = acc.prepare(teacher, optimizer, train, valid, test)
    inner = acc.unwrap_model(model)
    try:
        def logits_fn(batch):
            return model(**forward_kwargs(inner, batch)).logits

        def step_fn(batch, epoch):
            loss = ce_loss(logits_fn(batch), batch["labels"], spec.regression)
            return loss, {"ce": loss.detach()}

        history, best, best_state = fit(
            acc, model=model, optimizer=optimizer, sampler=sampler, train_loader=train,
            valid_loader=valid, test_loader=test, test_every_epoch=cfg.test_every_epoch, logits_fn=logits_fn,
            step_fn=step_fn, spec=spec, epochs=cfg.teacher_epochs, ckpt_dir=tdir / "ckpt", get_state=lambda: trainable_state(inner),
            set_state=lambda st: load_trainable_state(inner, st), epoch_setup=lambda e: {"lr": cfg.teacher_lr},
            is_selectable=lambda e: True, desc=f"teacher {cfg.task}", progress=cfg.progress,
            checkpoint=cfg.checkpoint)
        summary = {
            "task": cfg.task, "teacher": cfg.teacher, "rank": cfg.rank, "lr": cfg.teacher_lr,
            "epochs": cfg.teacher_epochs, "seed": cfg.teacher_seed, "history": history,
            "best_epoch": best["epoch"], "best_valid": best["valid"], "best_test": best["test"],
            "data": prep.data.sizes(), "source": prep.data.source, "elapsed_s": time.time() - t0,
            "key": cfg.teacher_key(),
        }
        if acc.is_main_process:
            save_tensors(best_state, tdir / WEIGHTS)
            write_json(tdir / SUMMARY, summary)
            shutil.rmtree(tdir / "ckpt", ignore_errors=True)
        acc.wait_for_everyone()
    finally:
        acc.free_memory()
    return summary


def load_teacher(cfg: RunConfig, device: torch.device | str) -> torch.nn.Module:
    """The stage-1 teacher (trained if needed), frozen, in eval mode, on ``device``."""
    cfg = cfg.resolved()
    key = f"{teacher_dir(cfg)}@{device}"
    if key not in _TEACHERS:
        train_teacher(cfg)
        spec = cfg.task_spec
        teacher = build_teacher(cfg.teacher, spec.num_labels, cfg.rank, cfg.lora_dropout)
        state = read_or_none(teacher_dir(cfg) / WEIGHTS, load_tensors)
        if state is None:  # damaged between training and loading: train again
            train_teacher(cfg)
            state = load_tensors(teacher_dir(cfg) / WEIGHTS)
        load_trainable_state(teacher, state)
        _TEACHERS.clear()  # keep one teacher in memory at a time
        _TEACHERS[key] = freeze(teacher).to(device)
    return _TEACHERS[key]


def teacher_shape(cfg: RunConfig) -> tuple[int, int]:
    """(layers, hidden size) of the teacher, read from its config."""
    conf = AutoConfig.from_pretrained(model_location(cfg.teacher))
    layers = conf.num_hidden_layers
    if split_half(cfg.teacher)[1]:
        layers = (layers + 1) // 2
    return layers, conf.hidden_size


def needed_parts(cfg: RunConfig) -> tuple[str, ...]:
    """The teacher outputs the run's method reads (:func:`teacher_cache.parts_for`)."""
    return tc.parts_for(cfg.method_spec)


def cache_folder(cfg: RunConfig) -> Path:
    key = {"padding_to_max": cfg.padding_to_max, "mask": cfg.ild_mask_padding, "max_length": cfg.max_length}
    return teacher_dir(cfg) / f"cache-{short_hash(key)}"


def cached_lengths(cfg: RunConfig, lengths: np.ndarray) -> np.ndarray:
    """Tokens the cache stores per training example (``lengths``: the real ones): the real tokens when the
    ILD loss masks padding, whatever the batches are padded to (what
    :func:`~paperlib.loraild.teacher_cache.compute_parts` keeps), all ``max_length`` positions otherwise.

    The size estimate used to take ``max_length`` whenever batches were padded to it, so a masked run
    padded to ``max_length`` (``--pad-to-max-length``) could be sent to a live teacher for a cache that
    fits: 128 against about 26 tokens per example in the data-parallel bench (``bench/README.md`` section 7).
    """
    return lengths if cfg.ild_mask_padding else np.full_like(lengths, cfg.max_length)


def teacher_outputs(cfg: RunConfig, acc: Accelerator, parts: tuple[str, ...], n_t: int, h_t: int):
    """Frozen-teacher outputs for ``parts``: ``(cache, None, None)`` when they fit the cache limit
    (computed once, then read back), else ``(None, live_teacher, recorder)``."""
    if not parts:
        return None, None, None
    prep = prepare_data(cfg)
    lengths = cached_lengths(cfg, prep.encoded["train"].lengths())
    too_big = [p for p in parts if tc.estimate_bytes(p, list(lengths), n_t, cfg.rank, h_t, cfg.task_spec.num_labels)
               > cfg.teacher_cache_max_gb * 2**30]
    if too_big:
        if acc.is_main_process:
            print(f"teacher outputs {too_big} exceed teacher_cache_max_gb={cfg.teacher_cache_max_gb}: "
                  "the teacher runs alongside the student")
        live = load_teacher(cfg, acc.device)
        # the teacher stays eager under cfg.compile: it is shared between runs, and the LoRA
        # recorder a later run attaches would not be traced by an already compiled module
        return None, live, LoraFeatureRecorder(live) if "lora" in parts else None
    folder = cache_folder(cfg)
    if acc.num_processes > 1:
        # a finished cache (e.g. prepared by a sweep) is read a share per process and gathered over
        # the process group; one still to compute is computed by the main process and sent to the others
        ready = [acc.is_main_process and outputs_cached(cfg, parts)]
        broadcast_object_list(ready)
        if ready[0]:
            cache = tc.read_sharded(folder, parts, acc.device)
            if cache is not None:
                return cache, None, None
            # an incomplete file: every process found it so (the same file); read and repaired as below
            return tc.on_device(folder, _load_or_compute(cfg, acc, prep, folder, parts), acc.device), None, None
        cache = None
        if acc.is_main_process:
            cache = _load_or_compute(cfg, acc, prep, folder, parts).to(acc.device)
        return tc.broadcast(cache, acc.device), None, None
    cache = _load_or_compute(cfg, acc, prep, folder, parts)
    if acc.device.type != "cpu":  # lookups become one gather on the device (size bounded as above)
        cache = tc.on_device(folder, cache, acc.device)  # kept there for the process's next run
    return cache, None, None


def _load_or_compute(cfg: RunConfig, acc: Accelerator, prep, folder: Path, parts: tuple[str, ...]) -> tc.TeacherCache:
    """The cache from memory or ``folder``, else computed by the teacher (and saved by the main process)."""
    need_teacher = not all(tc.part_path(folder, p).exists() or f"{folder}/{p}" in tc._MEMORY for p in parts)
    teacher = load_teacher(cfg, acc.device) if need_teacher else (lambda: load_teacher(cfg, acc.device))
    loader = make_loader(prep.encoded["train"], cfg.eval_batch_size,
                         Collator(prep.tokenizer.pad_token_id, cfg.max_length, cfg.padding_to_max))
    return tc.load_or_compute(folder, teacher, loader, parts, cfg.ild_mask_padding, acc.device,
                              write=acc.is_main_process, progress=cfg.progress)


def outputs_cached(cfg: RunConfig, parts: tuple[str, ...]) -> bool:
    """Whether every output in ``parts`` is already in the cache folder (nothing left to compute)."""
    folder = cache_folder(cfg.resolved())
    return all(tc.part_path(folder, p).exists() for p in parts)


def precompute_teacher(cfg: RunConfig, parts: tuple[str, ...] = tc.PARTS,
                       accelerator: Accelerator | None = None) -> dict:
    """Stage 1 and the cached teacher outputs, ahead of runs that will read them (e.g. in workers)."""
    cfg = cfg.resolved()
    acc = accelerator or get_accelerator(cfg.device)
    summary = train_teacher(cfg, acc)
    n_t, h_t = teacher_shape(cfg)
    teacher_outputs(cfg, acc, parts, n_t, h_t)
    return summary
