"""Where a run's files live and how they are written (atomically: temporary file, then rename).

Layout (only the main process writes)::

    results_dir/<task>/teacher-<hash>/teacher.safetensors, teacher.json,
                                      cache-<hash>/{logits,lora,pooled}.safetensors
    results_dir/<task>/exp-<hash>/<method>/seed<k>-lr<lr>.json       (the finished run)
    results_dir/<task>/exp-<hash>/<method>/seed<k>-lr<lr>.ckpt/      (last / best epoch, resumable)

Reading a results folder someone sent never runs code: tensors are safetensors files, JSON is
JSON, and checkpoints (optimizer state, history, RNG state: tensors, numbers, strings, lists) are
read with ``torch.load(weights_only=True)``.  A file that cannot be read is named, moved aside
and recomputed (:func:`paperlib.files.read_or_none`).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from paperlib.files import atomic_path, read_json, read_or_none, write_json_atomic
from paperlib.loraild.config import RunConfig, short_hash


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


RESULT_KEYS = ("task", "method", "seed", "best_epoch", "best_valid", "best_test", "history")


def _read_result(path: Path) -> dict:
    result = read_json(path)
    missing = [k for k in RESULT_KEYS if not isinstance(result, dict) or k not in result]
    if missing:
        raise ValueError(f"no {', '.join(missing)} in it")
    return result


def load_result(cfg: RunConfig) -> dict | None:
    """The finished run's result; ``None`` if there is none, or if its file is damaged (moved aside,
    with a warning naming it, so the run is recomputed)."""
    return read_or_none(result_path(cfg), _read_result)


def is_finished(cfg: RunConfig) -> bool:
    return load_result(cfg) is not None


def write_json(path: Path, obj: dict) -> None:
    """Write ``obj`` as JSON through a uniquely named temporary file and an atomic rename."""
    write_json_atomic(path, obj)


def save_torch(obj: Any, path: Path) -> None:
    """``torch.save`` of tensors, numbers, strings and containers (readable with ``weights_only=True``)
    through a uniquely named temporary file and an atomic rename."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_torch(path: Path) -> Any:
    """Inverse of :func:`save_torch`; never unpickles code (``weights_only=True``)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """A flat dict of tensors as a safetensors file, atomically (tensors copied: shared storage is refused)."""
    flat = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata=metadata)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Inverse of :func:`save_tensors` (safetensors: data only, no code)."""
    return load_file(str(path), device="cpu")


def rng_state() -> dict:
    """The Python, NumPy, torch (and CUDA) random states, for a checkpoint, as plain data and tensors
    (so that the checkpoint loads with ``weights_only=True``)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    st = {"python": random.getstate(),
          "numpy": [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(gauss)],
          "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    """Restore :func:`rng_state`'s output."""
    random.setstate(st["python"])
    name, keys, pos, has_gauss, gauss = st["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def check_results_writable(cfg: RunConfig) -> None:
    """Fail before training, not after it, when the results folder cannot be written."""
    from paperlib.files import check_writable

    check_writable(Path(cfg.resolved().results_dir), "results folder",
                   "choose a writable one with --results-dir or $PAPERLIB_RESULTS")
