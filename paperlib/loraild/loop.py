"""The epoch loop shared by stage 1 (teacher) and stage 2 (student): train, score, select, resume."""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from tqdm import tqdm

from paperlib.loraild.encoding import EpochPermutation
from paperlib.loraild.phases import PhaseTimer, maybe
from paperlib.files import BackgroundWrite, discard_damaged, read_or_none
from paperlib.loraild.run_files import load_torch, rng_state, save_torch, set_rng_state
from paperlib.loraild.tasks import compute_metrics


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
        progress: bool, checkpoint: bool = True,
        timer: PhaseTimer | None = None) -> tuple[list[dict], dict, dict | None]:
    """Train ``epochs`` epochs; returns the history, the best epoch (scores, metrics) and its state.

    The valid split is scored after every epoch, the test split too if ``test_every_epoch``, else
    once at the end with the best epoch's weights (which the model holds on return).
    With ``checkpoint``, every epoch but the last leaves ``ckpt_dir/last.pt`` (state, optimizer,
    history, RNG) and, when the best epoch is an older one, ``best.pt``; a call that finds
    ``last.pt`` resumes after that epoch.  A checkpoint is written in a background thread while the
    next epoch trains (:func:`_write_checkpoint`); it is finished before the next one is written,
    before this function returns, and before an error leaves it.  With ``timer``, the optimizer
    steps, the scoring and the checkpoint writes (what the loop waits for of them) are timed as the
    phases ``steps``, ``evaluation`` and ``saving``; every epoch's record also holds its optimizer
    steps (``steps``) and their wall seconds (``steps_s``).
    """
    timed = maybe(timer)
    history: list[dict] = []
    best: dict = {"epoch": None, "valid": -math.inf}
    best_state: dict | None = None
    start = 0
    last, best_file = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
    ck = read_or_none(last, _read_checkpoint)  # a damaged checkpoint is named, moved aside: start afresh
    if ck is not None and ck["best"]["epoch"] not in (None, ck["epoch"]):
        older = read_or_none(best_file, load_torch)
        if older is None:  # the best epoch's weights are lost: the run cannot resume exactly
            discard_damaged(last, FileNotFoundError(f"its best epoch's weights ({best_file.name}) are missing"))
            ck = None
        else:
            best_state = older["state"]
    if ck is not None:
        set_state(ck["state"])
        optimizer.load_state_dict(ck["optimizer"])
        history, best, start = ck["history"], ck["best"], ck["epoch"] + 1
        set_rng_state(ck["rng"])
        if best["epoch"] == ck["epoch"]:
            best_state = ck["state"]
        if acc.is_main_process and progress:
            print(f"{desc}: resuming after epoch {ck['epoch']}")
    writer: BackgroundWrite | None = None  # the checkpoint being written while the next epoch trains
    try:
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
            t_steps = time.perf_counter()
            with timed("steps"):
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
                sums = defaultdict(float, {k: float(v) for k, v in sums.items()})  # waits for the device
            steps_s, n_steps = time.perf_counter() - t_steps, n
            if acc.num_processes > 1:  # every process saw its own batches: report the mean over all
                keys = sorted(sums)
                local = torch.tensor([sums[k] / max(n, 1) for k in keys], dtype=torch.float64, device=acc.device)
                sums, n = dict(zip(keys, acc.reduce(local, reduction="mean").tolist())), 1
            with timed("evaluation"):
                scores = {"valid": compute_metrics(spec, *predict(acc, logits_fn, valid_loader, spec.regression)),
                          "test": None}
                if test_every_epoch:
                    scores["test"] = compute_metrics(spec, *predict(acc, logits_fn, test_loader, spec.regression))
            sel = is_selectable(epoch)
            rec = {"epoch": epoch, **info, "train": {k: v / max(n, 1) for k, v in sums.items()},
                   "steps": n_steps, "steps_s": round(steps_s, 4),
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
                with timed("saving"):
                    if checkpoint and epoch < epochs - 1:
                        writer = _finish(writer)  # the previous last.pt is whole before it is renamed or replaced
                        # the previous last.pt holds the best state: keep it as best.pt (a rename, no copy)
                        if previous_best is not None and previous_best == best["epoch"] and previous_best == epoch - 1 \
                                and last.exists():
                            last.replace(best_file)
                        state = best_state if best["epoch"] == epoch else get_state()
                        # history and best as plain JSON data: the checkpoint loads with weights_only=True
                        writer = _write_checkpoint(last, {
                            "epoch": epoch, "state": state, "optimizer": optimizer.state_dict(),
                            "history": _plain(history), "best": _plain(best), "rng": rng_state()})
            acc.wait_for_everyone()
        with timed("saving"):
            writer = _finish(writer)
    except BaseException:
        if writer is not None:  # the checkpoint being written is finished (or cleanly absent) before the error leaves
            writer.wait(raise_error=False)
        raise
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
        with timed("evaluation"):
            best["test_metrics"] = compute_metrics(spec, *predict(acc, logits_fn, test_loader, spec.regression))
        best["test"] = best["test_metrics"][spec.metric]
    return history, best, best_state


CHECKPOINT_KEYS = ("epoch", "state", "optimizer", "history", "best", "rng")


def _snapshot(obj):
    """``obj`` with every tensor cloned where it lies (on the GPU: a copy at memory speed).  The
    optimizer's moments and the weights change in place at the next step, while the checkpoint
    holding them is still being written."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_snapshot(v) for v in obj)
    return obj


def _write_checkpoint(path: Path, checkpoint: dict) -> BackgroundWrite:
    """Writes ``checkpoint`` to ``path`` (atomically, :func:`save_torch`) in a background thread.

    The tensors are snapshotted first (:func:`_snapshot`, device memory for a moment); the thread
    copies them to the host and writes them while the next epoch's steps run.  At DistilRoBERTa
    size a checkpoint (weights and AdamW's two moments) is about 1 GB and took 0.7-1.0 s per epoch
    written in line (bench/README.md section 7).
    """
    snap = _snapshot(checkpoint)
    return BackgroundWrite(lambda: save_torch(snap, path), name="paperlib-checkpoint")


def _finish(writer: BackgroundWrite | None) -> None:
    """Wait for a checkpoint write (re-raising its error); returns ``None`` for the caller's handle."""
    if writer is not None:
        writer.wait()
    return None


def _read_checkpoint(path: Path) -> dict:
    ck = load_torch(path)
    missing = [k for k in CHECKPOINT_KEYS if k not in ck] if isinstance(ck, dict) else list(CHECKPOINT_KEYS)
    if missing:
        raise ValueError(f"not a checkpoint: it lacks {missing}")
    return ck


def _plain(obj):
    """``obj`` with NumPy scalars turned into Python numbers (a JSON round trip)."""
    return json.loads(json.dumps(obj, default=float))


def adamw(params: list[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW, constant learning rate; the fused kernel where torch has one (9x faster on CPU here)."""
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
