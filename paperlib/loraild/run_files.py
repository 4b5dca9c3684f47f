"""Where a run's files live and how they are written (atomically: temporary file, then rename).

Layout (only the main process writes)::

    results_dir/<task>/teacher-<hash>/teacher.pt, teacher.json, cache-<hash>/{logits,lora,pooled}.pt
    results_dir/<task>/exp-<hash>/<method>/seed<k>-lr<lr>.json       (the finished run)
    results_dir/<task>/exp-<hash>/<method>/seed<k>-lr<lr>.ckpt/      (last / best epoch, resumable)
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

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


def is_finished(cfg: RunConfig) -> bool:
    return result_path(cfg).exists()


def load_result(cfg: RunConfig) -> dict | None:
    p = result_path(cfg)
    return json.loads(p.read_text()) if p.exists() else None



def write_json(path: Path, obj: dict) -> None:
    """Write ``obj`` as JSON through a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=float))
    tmp.replace(path)


def save_torch(obj: Any, path: Path) -> None:
    """``torch.save`` through a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def rng_state() -> dict:
    """The Python, NumPy, torch (and CUDA) random states, for a checkpoint."""
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    """Restore :func:`rng_state`'s output."""
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])
