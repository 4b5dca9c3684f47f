"""Stage 1 (LoRA teacher) and stage 2 (student) training, resumable, with ``accelerate``.

Stage 1 trains LoRA (q/k/v) and the classification head of the teacher with cross-entropy for
``teacher_epochs`` epochs and keeps the epoch with the best valid score (the authors picked the
checkpoint by hand).  One teacher per task and teacher setting is shared by every method and seed.

Stage 2 trains a student with eq. (4) of the method (:mod:`distill`); AdamW with a constant
learning rate, no warm-up.  Each epoch records the valid and test scores; the reported score is
the test score at the epoch with the best valid score (curriculum runs: only epochs from
``ild_start`` on are eligible).  The seed is set *before* any model is built (the authors' code
set it afterwards, leaving LoRA and head initialisation unseeded).

Files (only the main process writes)::

    results_dir/<task>/teacher-<hash>/teacher.pt, teacher.json, cache-<hash>/{logits,lora,pooled}.pt
    results_dir/<task>/exp-<hash>/<method>/seed<k>-lr<lr>.json       (the finished run)
    results_dir/<task>/exp-<hash>/<method>/seed<k>-lr<lr>.ckpt/      (last / best epoch, resumable)

A run whose JSON exists is not repeated; an interrupted run resumes after its last finished epoch.
Under ``accelerate launch --num_processes N`` every process trains on its shard of each batch.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from tqdm import tqdm
from transformers import AutoConfig

from paperlib.loraild import teacher_cache as tc
from paperlib.loraild.alignment import LayerAligner, rail_layers
from paperlib.loraild.clusters import cluster_scores
from paperlib.loraild.config import RunConfig, short_hash
from paperlib.loraild.curriculum import method_weights, selectable
from paperlib.loraild.distill import DistillModel
from paperlib.loraild.encoding import (Collator, EncodedSplit, EpochPermutation, LengthOrder, encode,
                                       make_loader)
from paperlib.loraild.features import LoraFeatureRecorder
from paperlib.loraild.losses import ce_loss
from paperlib.loraild.models import (build_student, build_teacher, compile_model, forward_kwargs, freeze,
                                     load_tokenizer,
                                     load_trainable_state, model_location, split_half, trainable_state)
from paperlib.loraild.tasks import TaskData, compute_metrics, load_task

_ACC: Accelerator | None = None
_DATA: dict[str, "Prepared"] = {}
_TEACHERS: dict[str, torch.nn.Module] = {}


# --------------------------------------------------------------------------------------------
# accelerator, data, paths
# --------------------------------------------------------------------------------------------
def get_accelerator(device: str | None = None) -> Accelerator:
    """One process-wide ``Accelerator`` (``device="cpu"`` forces the CPU).

    Under a launcher (``WORLD_SIZE`` > 1) on a machine without a GPU the CPU is chosen even when
    ``device`` is not given: accelerate would otherwise start every process as a separate
    single-process run, all writing the same files.
    """
    global _ACC
    world = int(os.environ.get("WORLD_SIZE", "1"))
    want_cpu = device == "cpu" or (device is None and world > 1 and not torch.cuda.is_available())
    if _ACC is not None and (device is None or (_ACC.device.type == "cpu") == want_cpu):
        return _ACC
    if _ACC is not None:
        AcceleratorState._reset_state(True)
    _ACC = Accelerator(cpu=want_cpu, kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    if world > 1 and _ACC.num_processes != world:
        raise RuntimeError(f"launched as {world} processes but accelerate set up {_ACC.num_processes} "
                           f"(device={device!r}); each would train alone and overwrite the others' files")
    return _ACC


def busy_cores(interval: float = 0.5) -> float:
    """Cores kept busy by other processes right now (from ``/proc/stat``; load average elsewhere)."""
    def sample():
        with open("/proc/stat") as fh:
            vals = [int(v) for v in fh.readline().split()[1:]]
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
        return sum(vals), idle

    try:
        t0, i0 = sample()
        time.sleep(interval)
        t1, i1 = sample()
        return (os.cpu_count() or 1) * (1.0 - (i1 - i0) / max(t1 - t0, 1))
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except OSError:
            return 0.0


def auto_threads(requested: int | None = None) -> int:
    """Set torch's CPU threads: ``requested``, or 1 when other processes already keep a core busy.

    On a small shared CPU, two OpenMP threads competing with another busy process wait on each
    other at every barrier (a 4x slowdown measured here); one thread then runs faster.
    """
    if requested:
        torch.set_num_threads(int(requested))
    elif (os.cpu_count() or 1) <= 4 and busy_cores() >= 0.5:
        torch.set_num_threads(1)
    return torch.get_num_threads()


@dataclass
class Prepared:
    """A task's splits, tokenizer and token ids (kept in memory per data setting)."""

    data: TaskData
    tokenizer: Any
    encoded: dict[str, EncodedSplit]


def prepare_data(cfg: RunConfig) -> Prepared:
    """Load, split and tokenise the task (cached in-process)."""
    cfg = cfg.resolved()
    key = short_hash(cfg.data_key() | {"glue_dir": cfg.glue_dir})
    if key not in _DATA:
        data = load_task(cfg.task, cfg.glue_dir, cfg.max_train, cfg.max_valid, cfg.max_test)
        tok = load_tokenizer(cfg.tokenizer)
        reg = data.spec.regression
        enc = {s: encode(data.split(s), tok, cfg.max_length, reg) for s in ("train", "valid", "test")}
        _DATA[key] = Prepared(data, tok, enc)
    return _DATA[key]


def task_dir(cfg: RunConfig) -> Path:
    return Path(cfg.results_dir) / cfg.task


def teacher_dir(cfg: RunConfig) -> Path:
    cfg = cfg.resolved()
    return task_dir(cfg) / f"teacher-{short_hash(cfg.teacher_key())}"


def experiment_dir(cfg: RunConfig) -> Path:
    cfg = cfg.resolved()
    return task_dir(cfg) / f"exp-{short_hash(cfg.experiment_key())}"


def result_path(cfg: RunConfig) -> Path:
    """Where the finished run's JSON lives."""
    cfg = cfg.resolved()
    return experiment_dir(cfg) / cfg.method / f"seed{cfg.seed}-lr{cfg.lr:g}.json"


def checkpoint_dir(cfg: RunConfig) -> Path:
    p = result_path(cfg)
    return p.with_name(p.stem + ".ckpt")


def is_finished(cfg: RunConfig) -> bool:
    return result_path(cfg).exists()


def load_result(cfg: RunConfig) -> dict | None:
    p = result_path(cfg)
    return json.loads(p.read_text()) if p.exists() else None


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=float))
    tmp.replace(path)


def _save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def _rng_state() -> dict:
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


# --------------------------------------------------------------------------------------------
# the epoch loop shared by both stages
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def predict(acc: Accelerator, logits_fn: Callable, loader, regression: bool) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and labels over a (prepared) loader, gathered from every process."""
    preds, labels = [], []
    for batch in loader:
        logits = logits_fn(batch)
        p = logits.squeeze(-1).float() if regression else logits.argmax(-1)
        p, y = acc.gather_for_metrics((p, batch["labels"]))
        preds.append(p.cpu().numpy())
        labels.append(y.cpu().numpy())
    return np.concatenate(preds), np.concatenate(labels)


def fit(acc: Accelerator, *, model: torch.nn.Module, optimizer, sampler: EpochPermutation, train_loader,
        valid_loader, test_loader, test_every_epoch: bool, logits_fn: Callable, step_fn: Callable, spec,
        epochs: int, ckpt_dir: Path,
        get_state: Callable[[], dict], set_state: Callable[[dict], None],
        epoch_setup: Callable[[int], dict], is_selectable: Callable[[int], bool], desc: str,
        progress: bool, checkpoint: bool = True) -> tuple[list[dict], dict, dict | None]:
    """Train ``epochs`` epochs; returns the history, the best epoch (scores, metrics) and its state.

    The valid split is scored after every epoch, the test split too if ``test_every_epoch``, else
    once at the end with the best epoch's weights (which the model holds on return).
    With ``checkpoint``, every epoch but the last leaves ``ckpt_dir/last.pt`` (state, optimizer,
    history, RNG) and, when the best epoch is an older one, ``best.pt``; a call that finds
    ``last.pt`` resumes after that epoch.
    """
    history: list[dict] = []
    best: dict = {"epoch": None, "valid": -math.inf}
    best_state: dict | None = None
    start = 0
    last, best_file = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
    if last.exists():
        ck = torch.load(last, map_location="cpu", weights_only=False)
        set_state(ck["state"])
        optimizer.load_state_dict(ck["optimizer"])
        history, best, start = ck["history"], ck["best"], ck["epoch"] + 1
        _set_rng_state(ck["rng"])
        if best["epoch"] == ck["epoch"]:
            best_state = ck["state"]
        elif best["epoch"] is not None:
            best_state = torch.load(best_file, map_location="cpu", weights_only=False)["state"]
        if acc.is_main_process and progress:
            print(f"{desc}: resuming after epoch {ck['epoch']}")
    for epoch in range(start, epochs):
        sampler.set_epoch(epoch)
        if hasattr(train_loader, "set_epoch"):  # accelerate's loader re-sets the sampler's epoch from its own count
            train_loader.set_epoch(epoch)
        info = epoch_setup(epoch)
        model.train()
        sums: dict[str, float] = defaultdict(float)
        n = 0
        bar = tqdm(train_loader, desc=f"{desc} epoch {epoch}", leave=False,
                   disable=not (progress and acc.is_main_process))
        for batch in bar:
            loss, parts = step_fn(batch, epoch)
            acc.backward(loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            n += 1
            # summed as device tensors: reading a float here would wait for the GPU at every step
            sums["loss"] += loss.detach()
            for k, v in parts.items():
                sums[k] += v
        model.eval()
        sums = defaultdict(float, {k: float(v) for k, v in sums.items()})
        if acc.num_processes > 1:  # every process saw its own batches: report the mean over all
            keys = sorted(sums)
            local = torch.tensor([sums[k] / max(n, 1) for k in keys], dtype=torch.float64, device=acc.device)
            sums, n = dict(zip(keys, acc.reduce(local, reduction="mean").tolist())), 1
        scores = {"valid": compute_metrics(spec, *predict(acc, logits_fn, valid_loader, spec.regression)),
                  "test": None}
        if test_every_epoch:
            scores["test"] = compute_metrics(spec, *predict(acc, logits_fn, test_loader, spec.regression))
        sel = is_selectable(epoch)
        rec = {"epoch": epoch, **info, "train": {k: v / max(n, 1) for k, v in sums.items()},
               "valid": scores["valid"], "test": scores["test"],
               "valid_score": scores["valid"][spec.metric],
               "test_score": None if scores["test"] is None else scores["test"][spec.metric],
               "selectable": sel}
        history.append(rec)
        previous_best = best["epoch"]
        if sel and rec["valid_score"] > best["valid"]:
            best = {"epoch": epoch, "valid": rec["valid_score"], "test": rec["test_score"]}
            best_state = get_state()
        if acc.is_main_process:
            if progress:
                test = "" if rec["test_score"] is None else f"  test {rec['test_score']:.4f}"
                print(f"{desc} epoch {epoch}: train loss {rec['train']['loss']:.4f}  "
                      f"valid {rec['valid_score']:.4f}{test}")
            if checkpoint and epoch < epochs - 1:
                # the previous last.pt holds the best state: keep it as best.pt (a rename, no copy)
                if previous_best is not None and previous_best == best["epoch"] and previous_best == epoch - 1 \
                        and last.exists():
                    last.replace(best_file)
                state = best_state if best["epoch"] == epoch else get_state()
                _save({"epoch": epoch, "state": state, "optimizer": optimizer.state_dict(),
                       "history": history, "best": best, "rng": _rng_state()}, last)
        acc.wait_for_everyone()
    if best_state is None:  # no eligible epoch improved (e.g. NaN scores): keep the last one
        last_rec = history[-1]
        best = {"epoch": last_rec["epoch"], "valid": last_rec["valid_score"], "test": last_rec["test_score"]}
        best_state = get_state()
    else:
        set_state(best_state)
    best_rec = next(h for h in history if h["epoch"] == best["epoch"])
    best["valid_metrics"] = best_rec["valid"]
    if best_rec["test"] is not None:
        best["test_metrics"] = best_rec["test"]
    else:
        model.eval()
        best["test_metrics"] = compute_metrics(spec, *predict(acc, logits_fn, test_loader, spec.regression))
        best["test"] = best["test_metrics"][spec.metric]
    return history, best, best_state


def adamw(params: list[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW, constant learning rate; the fused kernel where torch has one (9x faster on CPU here)."""
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def _loaders(acc: Accelerator, prep: Prepared, cfg: RunConfig, seed: int):
    pad_id = prep.tokenizer.pad_token_id
    collate = Collator(pad_id, cfg.max_length, cfg.padding_to_max)
    lengths = prep.encoded["train"].lengths() if cfg.group_by_length else None
    # batch_size is the global batch: each of the N processes takes batch_size / N examples
    if cfg.batch_size % acc.num_processes:
        raise ValueError(f"batch_size {cfg.batch_size} is not a multiple of {acc.num_processes} processes")
    per_process = cfg.batch_size // acc.num_processes
    sampler = EpochPermutation(len(prep.encoded["train"]), seed, lengths, per_process)
    train = make_loader(prep.encoded["train"], per_process, collate, sampler)
    valid = make_loader(prep.encoded["valid"], cfg.eval_batch_size, collate,
                        LengthOrder(prep.encoded["valid"].lengths()))
    test = make_loader(prep.encoded["test"], cfg.eval_batch_size, collate,
                       LengthOrder(prep.encoded["test"].lengths()))
    return sampler, train, valid, test, collate


# --------------------------------------------------------------------------------------------
# stage 1: teacher
# --------------------------------------------------------------------------------------------
def teacher_finished(cfg: RunConfig) -> bool:
    return (teacher_dir(cfg) / "teacher.json").exists()


def train_teacher(cfg: RunConfig, accelerator: Accelerator | None = None) -> dict:
    """Stage 1: LoRA + head of the teacher, best-valid epoch kept; returns the teacher summary."""
    cfg = cfg.resolved()
    tdir = teacher_dir(cfg)
    if teacher_finished(cfg):
        return json.loads((tdir / "teacher.json").read_text())
    acc = accelerator or get_accelerator(cfg.device)
    prep = prepare_data(cfg)
    spec = prep.data.spec
    t0 = time.time()
    set_seed(cfg.teacher_seed)
    teacher = build_teacher(cfg.teacher, spec.num_labels, cfg.rank, cfg.lora_dropout)
    params = [p for p in teacher.parameters() if p.requires_grad]
    optimizer = adamw(params, cfg.teacher_lr, cfg.weight_decay)
    sampler, train, valid, test, _ = _loaders(acc, prep, cfg, cfg.teacher_seed)
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
            _save(best_state, tdir / "teacher.pt")
            _write_json(tdir / "teacher.json", summary)
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
        state = torch.load(teacher_dir(cfg) / "teacher.pt", map_location="cpu", weights_only=False)
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


# --------------------------------------------------------------------------------------------
# stage 2: student
# --------------------------------------------------------------------------------------------
def needed_parts(cfg: RunConfig) -> tuple[str, ...]:
    """The teacher outputs the run's method reads (:func:`teacher_cache.parts_for`)."""
    return tc.parts_for(cfg.method_spec)


def cache_folder(cfg: RunConfig) -> Path:
    key = {"padding_to_max": cfg.padding_to_max, "mask": cfg.ild_mask_padding, "max_length": cfg.max_length}
    return teacher_dir(cfg) / f"cache-{short_hash(key)}"


def teacher_outputs(cfg: RunConfig, acc: Accelerator, parts: tuple[str, ...], n_t: int, h_t: int):
    """Frozen-teacher outputs for ``parts``: ``(cache, None, None)`` when they fit the cache limit
    (computed once, then read back), else ``(None, live_teacher, recorder)``."""
    if not parts:
        return None, None, None
    prep = prepare_data(cfg)
    lengths = prep.encoded["train"].lengths()
    if cfg.padding_to_max:
        lengths = np.full_like(lengths, cfg.max_length)
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
    with acc.main_process_first():
        need_teacher = not all((folder / f"{p}.pt").exists() or f"{folder}/{p}" in tc._MEMORY for p in parts)
        teacher = load_teacher(cfg, acc.device) if need_teacher else None
        loader = make_loader(prep.encoded["train"], cfg.eval_batch_size,
                             Collator(prep.tokenizer.pad_token_id, cfg.max_length, cfg.padding_to_max))
        cache = tc.load_or_compute(folder, teacher, loader, parts, cfg.ild_mask_padding, acc.device,
                                   write=acc.is_main_process, progress=cfg.progress)
    if acc.device.type != "cpu":  # lookups become one gather on the device (size bounded as above)
        cache = cache.to(acc.device)
    return cache, None, None


def precompute_teacher(cfg: RunConfig, parts: tuple[str, ...] = tc.PARTS,
                       accelerator: Accelerator | None = None) -> dict:
    """Stage 1 and the cached teacher outputs, ahead of runs that will read them (e.g. in workers)."""
    cfg = cfg.resolved()
    acc = accelerator or get_accelerator(cfg.device)
    summary = train_teacher(cfg, acc)
    n_t, h_t = teacher_shape(cfg)
    teacher_outputs(cfg, acc, parts, n_t, h_t)
    return summary


def run(cfg: RunConfig, accelerator: Accelerator | None = None) -> dict:
    """Stage 2 for one (task, method, seed): trains (or resumes, or skips) and returns the result."""
    cfg = cfg.resolved()
    done = load_result(cfg)
    if done is not None:
        return done
    acc = accelerator or get_accelerator(cfg.device)
    method, spec = cfg.method_spec, cfg.task_spec
    prep = prepare_data(cfg)
    t0 = time.time()
    teacher_summary = None
    if method.kd:  # every process takes part (DDP); only the main one writes
        teacher_summary = train_teacher(cfg, acc)
    n_t, h_t = teacher_shape(cfg) if method.kd else (0, 0)
    parts = needed_parts(cfg)

    cache, live_teacher, t_recorder = teacher_outputs(cfg, acc, parts, n_t, h_t)

    # seed first, then build every trainable module
    set_seed(cfg.seed)
    student = build_student(cfg.student, spec.num_labels, cfg.rank if method.student_lora else None,
                            cfg.lora_dropout)
    model = DistillModel(student, method, spec, n_t, h_t, cfg.rail_dim, cfg.temperature, cfg.ild_mask_padding)
    if cfg.compile:  # after DistillModel attached its LoRA feature hooks
        compile_model(student, cfg.compile)
    n_s = model.n_student_layers
    aligner = LayerAligner(method.alignment, n_t, n_s, cfg.seed) if method.alignment else None
    optimizer = adamw([p for p in model.parameters() if p.requires_grad], cfg.lr, cfg.weight_decay)
    sampler, train, valid, test, _ = _loaders(acc, prep, cfg, cfg.seed)
    wrapped, optimizer, train, valid, test = acc.prepare(model, optimizer, train, valid, test)
    inner: DistillModel = acc.unwrap_model(wrapped)
    state = {"weights": (1.0, 0.0, 0.0), "rail": None}

    def epoch_setup(epoch: int) -> dict:
        w = method_weights(method, epoch, cfg.ild_start, cfg.epochs, cfg.curriculum_final, cfg.curriculum)
        state["weights"] = w
        if cfg.curriculum_lr is not None and method.curriculum and epoch >= cfg.ild_start:
            for g in optimizer.param_groups:
                g["lr"] = cfg.curriculum_lr
        info: dict = {"weights": list(w), "lr": optimizer.param_groups[0]["lr"]}
        if aligner is not None:
            drawn = aligner.start_epoch(epoch)
            if drawn is not None:
                info["teacher_layers"] = [g[0] for g in drawn]
        if inner.rail is not None:
            state["rail"] = rail_layers(n_t, n_s, cfg.seed, epoch)
            info["teacher_layers"] = state["rail"]
        return info

    def teacher_batch(batch):
        if not method.kd:
            return None
        if cache is not None:
            return cache.lookup(batch["idx"], batch["input_ids"].shape[1], acc.device)
        return tc.teacher_forward(live_teacher, batch, t_recorder, "pooled" in parts, cfg.ild_mask_padding)

    def step_fn(batch, epoch):
        groups = aligner.groups() if aligner is not None else None
        loss, parts_, _ = wrapped(batch, teacher_batch(batch), state["weights"], groups, state["rail"])
        return loss, parts_

    def logits_fn(batch):
        return inner.student_forward(batch).logits

    ckpt = checkpoint_dir(cfg)
    try:
        history, best, best_state = fit(
            acc, model=wrapped, optimizer=optimizer, sampler=sampler, train_loader=train,
            valid_loader=valid, test_loader=test, test_every_epoch=cfg.test_every_epoch, logits_fn=logits_fn,
            step_fn=step_fn, spec=spec, epochs=cfg.epochs, ckpt_dir=ckpt,
            get_state=lambda: {k: v.detach().cpu().clone() for k, v in inner.state_dict().items()},
            set_state=lambda st: inner.load_state_dict(st), epoch_setup=epoch_setup,
            is_selectable=lambda e: selectable(method, e, cfg.ild_start),
            desc=f"{cfg.task}/{cfg.method}/seed{cfg.seed}", progress=cfg.progress, checkpoint=cfg.checkpoint)
        clusters: list[dict] = []
        if cfg.method in cfg.cluster_methods and not spec.regression and acc.is_main_process:
            n = min(cfg.cluster_max_examples or len(prep.encoded["test"]), len(prep.encoded["test"]))
            subset = EncodedSplit(prep.encoded["test"].input_ids[:n],
                                  None if prep.encoded["test"].token_type_ids is None
                                  else prep.encoded["test"].token_type_ids[:n],
                                  prep.encoded["test"].labels[:n])
            loader = make_loader(subset, cfg.eval_batch_size,
                                 Collator(prep.tokenizer.pad_token_id, cfg.max_length, pad_to_max=True))
            clusters = cluster_scores(inner, loader, acc.device, spec.num_labels).to_dict("records")
        result = {
            "task": cfg.task, "method": cfg.method, "method_label": method.label, "seed": cfg.seed,
            "lr": cfg.lr, "metric": spec.metric, "history": history, "best_epoch": best["epoch"],
            "best_valid": best["valid"], "best_test": best["test"],
            "best_valid_metrics": best["valid_metrics"], "best_test_metrics": best["test_metrics"],
            "clusters": clusters, "teacher": None if teacher_summary is None else {
                k: teacher_summary[k] for k in ("best_epoch", "best_valid", "best_test")},
            "data": prep.data.sizes(), "source": prep.data.source, "elapsed_s": time.time() - t0,
            "device": str(acc.device), "num_processes": acc.num_processes, "config": cfg.to_dict(),
        }
        if acc.is_main_process:
            _write_json(result_path(cfg), result)
            shutil.rmtree(ckpt, ignore_errors=True)
            if cfg.keep_checkpoints:
                _save({k: v.detach().cpu() for k, v in inner.state_dict().items()}, ckpt / "best_model.pt")
        acc.wait_for_everyone()
    finally:
        if inner.recorder is not None:
            inner.recorder.remove()
        acc.free_memory()
    return result


__all__ = ["auto_threads", "busy_cores", "run", "train_teacher", "precompute_teacher", "teacher_outputs", "load_teacher", "prepare_data", "result_path", "checkpoint_dir",
           "teacher_dir", "experiment_dir", "is_finished", "load_result", "get_accelerator", "fit"]
