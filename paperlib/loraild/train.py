"""Stage 2: one student run (task, method, seed), resumable, with ``accelerate``.

The student trains with eq. (4) of the method (:mod:`distill`); AdamW with a constant learning
rate, no warm-up.  Each epoch records the valid and test scores; the reported score is the test
score at the epoch with the best valid score (curriculum runs: only epochs from ``ild_start`` on
are eligible).  The seed is set *before* any model is built (the authors' code set it afterwards,
leaving LoRA and head initialisation unseeded).  Stage 1 (the teacher) is :mod:`teacher`; the epoch
loop is :mod:`loop`; file layout :mod:`run_files`; data :mod:`prepare`; process set-up :mod:`runtime`.

A run whose JSON exists (and reads back) is not repeated.  With ``checkpoint`` (the paper
profile's default) an interrupted run resumes after its last finished epoch; without it (the
embedded profile: runs of seconds) it starts again at epoch 0, reusing the finished teacher and its
cached outputs.  One process owns a run at a time (a lock file next to its JSON; a second one waits
and then reads the result).  Under ``accelerate launch --num_processes N`` every process trains on
its shard of each batch.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import time

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object, set_seed

from paperlib.loraild import teacher_cache as tc
from paperlib.loraild.alignment import LayerAligner, rail_layers
from paperlib.loraild.clusters import cluster_scores
from paperlib.loraild.config import COMPILE_PAD_MULTIPLE, RunConfig
from paperlib.loraild.curriculum import method_weights, selectable
from paperlib.loraild.distill import DistillModel
from paperlib.loraild.encoding import Collator, EncodedSplit, make_loader
from paperlib.loraild.loop import adamw, fit, predict
from paperlib.loraild.models import build_student, compile_model, eager_calls, gpu_compiles, release_compiled
from paperlib.loraild.phases import PhaseTimer
from paperlib.loraild.prepare import Prepared, loaders, prepare_data
from paperlib.devices import check_device
from paperlib.locks import hold_lock
from paperlib.loraild.run_files import (check_results_writable, checkpoint_dir, experiment_dir, is_finished,
                                        load_result, result_path, save_tensors, task_dir, teacher_dir, write_json)
from paperlib.loraild.runtime import auto_threads, busy_cores, get_accelerator, search_unused_parameters
from paperlib.loraild.teacher import (cache_folder, load_teacher, needed_parts, precompute_teacher, teacher_finished,
                                      teacher_outputs, teacher_shape, train_teacher)


def build_run_model(cfg: RunConfig, n_t: int, h_t: int, compile_mode: str | None = None
                    ) -> tuple[DistillModel, LayerAligner | None]:
    """The student wrapped with its distillation losses (seeded first), and its layer aligner;
    the student compiled with ``compile_mode`` (:meth:`RunConfig.compile_mode`) unless ``None``."""
    method, spec = cfg.method_spec, cfg.task_spec
    set_seed(cfg.seed)  # seed first, then build every trainable module
    student = build_student(cfg.student, spec.num_labels, cfg.rank if method.student_lora else None,
                            cfg.lora_dropout)
    model = DistillModel(student, method, spec, n_t, h_t, cfg.rail_dim, cfg.temperature, cfg.ild_mask_padding,
                         lora_kernel=cfg.lora_kernel)
    if compile_mode:  # after DistillModel attached its LoRA feature hooks
        compile_model(student, compile_mode)
    aligner = LayerAligner(method.alignment, n_t, model.n_student_layers, cfg.seed) if method.alignment else None
    return model, aligner


def best_copy(model: DistillModel) -> dict:
    """A copy of the model's state, left on its device: the best epoch's weights are kept at every
    improving epoch, and a host copy each time (the whole student, ~330 MB at DistilRoBERTa size)
    cost a device-to-host transfer and a wait for the device; a checkpoint write copies to the host
    when it saves anyway.  The student is small next to the teacher cache, so memory allows it."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def cluster_analysis(cfg: RunConfig, model: DistillModel, prep: Prepared, device,
                     acc: Accelerator | None = None) -> list[dict]:
    """Table 2's cluster scores of the trained student on (at most ``cluster_max_examples``) test examples.

    Under a launcher (``acc`` with N processes) every process calls it: each fits its share of the
    k-means sets (:func:`~paperlib.loraild.clusters.share_fits`) and all get every row, in the
    order one process gives.
    """
    share = (acc.process_index, acc.num_processes) if acc is not None else (0, 1)
    test = prep.encoded["test"]
    n = min(cfg.cluster_max_examples or len(test), len(test))
    subset = EncodedSplit(test.input_ids[:n], None if test.token_type_ids is None else test.token_type_ids[:n],
                          test.labels[:n])
    loader = make_loader(subset, cfg.eval_batch_size,
                         Collator(prep.tokenizer.pad_token_id, cfg.max_length, pad_to_max=True))
    rows = cluster_scores(model, loader, device, cfg.task_spec.num_labels, cfg.cluster_features,
                          share).to_dict("records")
    if share[1] > 1:
        rows = gather_object(rows)
    return [{k: v for k, v in row.items() if k != "set"} for row in sorted(rows, key=lambda r: r["set"])]


def worker_info(device: torch.device | None = None) -> dict:
    """Where this process trains: its pid, host and GPU (a sweep's timeline groups runs by them).

    ``gpu`` is the GPU ``device`` is (its ``CUDA_VISIBLE_DEVICES`` entry, or its index when that is
    unset); on the CPU the variable itself (``None`` when unset).  A sweep's lane 0 sees every GPU
    and trains on the first.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpu = visible
    if device is not None and device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else [str(i) for i in range(index + 1)]
        if index < len(ids):
            gpu = ids[index]
    return {"pid": os.getpid(), "host": socket.gethostname(), "gpu": gpu}


def run(cfg: RunConfig, accelerator: Accelerator | None = None) -> dict:
    """Stage 2 for one (task, method, seed): trains (or resumes, or skips) and returns the result.

    The result records the wall seconds of each phase (``phases_s``: data, teacher,
    teacher_outputs, setup, steps, evaluation, saving, clusters; process_group under a launcher),
    when it started (``started_unix``) and where (``worker``: pid, host, GPU; :func:`worker_info`).
    """
    cfg = cfg.resolved()
    done = load_result(cfg)
    if done is not None:
        return done
    check_device(cfg.device)  # before any work: never a quiet fall-back to the CPU
    check_results_writable(cfg)
    acc = accelerator or get_accelerator(cfg.device)
    # one owner per run; under a launcher the N processes are one run (only the main one writes)
    lock = hold_lock(result_path(cfg)) if acc.num_processes == 1 else contextlib.nullcontext()
    with lock:
        done = load_result(cfg)  # finished by another process while this one waited
        if done is not None:
            return done
        return _run(cfg, acc)


def _run(cfg: RunConfig, acc: Accelerator) -> dict:
    method, spec = cfg.method_spec, cfg.task_spec
    t0 = time.time()
    timer = PhaseTimer(acc.device)
    if acc.num_processes > 1:
        # the group's first collective sets up its communicators (NCCL: about a second), timed here
        # instead of in whichever phase first talks to the other processes
        with timer("process_group"):
            acc.wait_for_everyone()
    with timer("data"):
        prep = prepare_data(cfg, keep=True)
    teacher_summary = None
    with timer("teacher"):
        if method.kd:  # every process takes part (DDP); only the main one writes
            teacher_summary = train_teacher(cfg, acc)
        n_t, h_t = teacher_shape(cfg) if method.kd else (0, 0)
    parts = needed_parts(cfg)
    with timer("teacher_outputs"):
        cache, live_teacher, t_recorder = teacher_outputs(cfg, acc, parts, n_t, h_t)
    with timer("setup"):
        sampler, train, valid, test, train_collate = loaders(acc, prep, cfg, cfg.seed)
        compile_mode = cfg.compile_mode(acc.device.type, acc.num_processes, acc.mixed_precision,
                                        steps=len(train) * cfg.epochs, compiler_ready=gpu_compiles(acc.device))
        if compile_mode is not None:  # batches padded to their longest item: a few shapes, not one per length
            train_collate.multiple = COMPILE_PAD_MULTIPLE
        model, aligner = build_run_model(cfg, n_t, h_t, compile_mode)
        n_s = model.n_student_layers
        optimizer = adamw([p for p in model.parameters() if p.requires_grad], cfg.lr, cfg.weight_decay)
        search_unused_parameters(acc, model.skips_parameters)  # DDP: the graph search only where needed
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
        # a compiled student runs an epoch's shorter last batch eager: a second shape would trace (and
        # record CUDA graphs) again, about as long as the first compile, for one step per epoch
        rows = batch["input_ids"].shape[0]
        with eager_calls(compile_mode is not None and rows < state.setdefault("rows", rows)):
            loss, parts_, _ = wrapped(batch, teacher_batch(batch), state["weights"], groups, state["rail"])
        return loss, parts_

    def logits_fn(batch):
        with eager_calls(compile_mode is not None):  # evaluation: no retracing of a compiled student
            return inner.student_forward(batch).logits

    ckpt = checkpoint_dir(cfg)
    try:
        history, best, best_state = fit(
            acc, model=wrapped, optimizer=optimizer, sampler=sampler, train_loader=train,
            valid_loader=valid, test_loader=test, test_every_epoch=cfg.test_every_epoch, logits_fn=logits_fn,
            step_fn=step_fn, spec=spec, epochs=cfg.epochs, ckpt_dir=ckpt,
            get_state=lambda: best_copy(inner),
            set_state=lambda st: inner.load_state_dict(st), epoch_setup=epoch_setup,
            is_selectable=lambda e: selectable(method, e, cfg.ild_start),
            desc=f"{cfg.task}/{cfg.method}/seed{cfg.seed}", progress=cfg.progress, checkpoint=cfg.checkpoint,
            timer=timer)
        clusters: list[dict] = []
        if cfg.method in cfg.cluster_methods and not spec.regression:  # every process fits a share
            with timer("clusters"), eager_calls(compile_mode is not None):
                clusters = cluster_analysis(cfg, inner, prep, acc.device, acc)
        result = {
            "task": cfg.task, "method": cfg.method, "method_label": method.label, "seed": cfg.seed,
            "lr": cfg.lr, "metric": spec.metric, "history": history, "best_epoch": best["epoch"],
            "best_valid": best["valid"], "best_test": best["test"],
            "best_valid_metrics": best["valid_metrics"], "best_test_metrics": best["test_metrics"],
            "clusters": clusters, "teacher": None if teacher_summary is None else {
                k: teacher_summary[k] for k in ("best_epoch", "best_valid", "best_test")},
            "data": prep.data.sizes(), "source": prep.data.source, "elapsed_s": time.time() - t0,
            "started_unix": t0, "worker": worker_info(acc.device),
            "device": str(acc.device), "num_processes": acc.num_processes, "mixed_precision": acc.mixed_precision,
            "compile": compile_mode,
            "config": cfg.to_dict(), "experiment_key": cfg.experiment_key(),
            "phases_s": timer.as_dict(),
        }
        if acc.is_main_process:
            write_json(result_path(cfg), result)
            shutil.rmtree(ckpt, ignore_errors=True)
            if cfg.keep_checkpoints:
                save_tensors(inner.state_dict(), ckpt / "best_model.safetensors")
        acc.wait_for_everyone()
    finally:
        if inner.recorder is not None:
            inner.recorder.remove()
        if compile_mode is not None:  # the next run in this process (a sweep lane) starts uncompiled
            release_compiled()
        acc.free_memory()
    return result


# the names callers import from here (this module was the whole training code before it was split)
__all__ = ["auto_threads", "busy_cores", "build_run_model", "cache_folder", "checkpoint_dir", "cluster_analysis",
           "experiment_dir", "fit", "get_accelerator", "is_finished", "load_result", "load_teacher", "needed_parts",
           "precompute_teacher", "predict", "prepare_data", "result_path", "run", "task_dir", "teacher_dir",
           "teacher_finished", "teacher_outputs", "teacher_shape", "train_teacher"]
