"""Frozen-teacher outputs on the training split, computed once and reused across epochs and methods.

The stage-2 teacher is fixed (eval mode, no dropout), so its outputs for a training example do not
depend on the epoch, the method or the seed.  Three parts are stored (in the split's order):

- ``logits`` ``[N, C]`` (all KD methods);
- ``lora``: the LoRA-A features of every layer, ``[tokens, n_t * 3 * r]`` per example (LoRAILD),
  kept for the real tokens only, or for all ``max_length`` positions when padding is not masked;
- ``pooled`` ``[N, n_t, H]``: mean-pooled layer outputs (RAIL-KD).

A batch may be padded to a different length than the caching pass: with key padding masked, the
outputs at the real tokens do not depend on how much padding follows, so the stored vectors are
the ones a live teacher would give.  Parts whose estimated size exceeds ``max_gb`` are not cached
and the teacher runs alongside the student instead (the paper's largest tasks at full size).
Parts are saved under the teacher's folder (``cache-<key>/<part>.safetensors``: data only, so
reading a received folder runs no code) and kept in memory, and on a GPU kept on the device for the
process's next run (:func:`on_device`); a damaged part file is named, moved aside and computed
again; one process computes a folder's parts at a time (a lock).  The processes of a data-parallel
run read a finished cache a share each and gather the rest (:func:`read_sharded`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from paperlib.files import read_or_none
from paperlib.locks import hold_lock
from paperlib.loraild.config import MethodSpec
from paperlib.loraild.encoding import batch_to
from paperlib.loraild.features import LoraFeatureRecorder
from paperlib.loraild.losses import pooled_layers
from paperlib.loraild.models import forward_kwargs

PARTS = ("logits", "lora", "pooled")
_MEMORY: dict[str, torch.Tensor | dict] = {}
#: (device, "folder/part") -> (the in-memory host value, its copy on that device)
_ON_DEVICE: dict[tuple[str, str], tuple[torch.Tensor | dict, torch.Tensor | dict]] = {}


def parts_for(method: MethodSpec) -> tuple[str, ...]:
    """The teacher outputs a method reads: logits (KD), LoRA features (LoRAILD), pooled layers (RAIL-KD)."""
    parts = ["logits"] if method.kd else []
    if method.inter == "lora_ild":
        parts.append("lora")
    if method.inter in ("rail_c", "rail_l"):
        parts.append("pooled")
    return tuple(parts)


@dataclass
class TeacherBatch:
    """Teacher outputs for one batch (``lora``: ``[B, T, n_t, 3, r]``; ``pooled``: ``[B, n_t, H]``)."""

    logits: torch.Tensor
    lora: torch.Tensor | None = None
    pooled: torch.Tensor | None = None


@torch.no_grad()
def teacher_forward(teacher: nn.Module, batch: dict[str, torch.Tensor], recorder: LoraFeatureRecorder | None,
                    need_pooled: bool, mask_padding: bool = True) -> TeacherBatch:
    """Run the frozen teacher on a batch and collect the requested outputs."""
    out = teacher(**forward_kwargs(teacher, batch), output_hidden_states=need_pooled)
    lora = recorder.stacked() if recorder is not None else None
    pooled = None
    if need_pooled:
        pooled = pooled_layers(out.hidden_states, batch["attention_mask"] if mask_padding else None)
    return TeacherBatch(out.logits.float(), lora, pooled)


def estimate_bytes(part: str, lengths: list[int], n_layers: int, rank: int, hidden: int, num_labels: int) -> int:
    """Bytes a cached part takes in float32."""
    n = len(lengths)
    if part == "logits":
        return 4 * n * num_labels
    if part == "lora":
        return 4 * sum(lengths) * n_layers * 3 * rank
    return 4 * n * n_layers * hidden


class TeacherCache:
    """Cached teacher outputs of one split, looked up by example index.

    The parts live on the CPU unless :meth:`to` moves them (a GPU run moves them to the GPU, so a
    lookup is one gather on the device instead of a host-side copy per example and a pageable
    host-to-device transfer per batch).
    """

    def __init__(self, parts: dict[str, torch.Tensor | dict]):
        self.parts = parts
        #: seq_len -> (flat row of every example's token t, 0 past its length ``[n, seq_len]``; past its length)
        self._rows: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def has(self, part: str) -> bool:
        return part in self.parts

    @property
    def device(self) -> torch.device:
        return self.parts["logits"].device  # type: ignore[union-attr]

    def nbytes(self) -> int:
        """Bytes the cached tensors take."""
        total = 0
        for v in self.parts.values():
            for t in (v.values() if isinstance(v, dict) else (v,)):
                if isinstance(t, torch.Tensor):
                    total += t.numel() * t.element_size()
        return total

    def to(self, device: torch.device | str) -> "TeacherCache":
        """A cache whose tensors live on ``device`` (the in-memory CPU copies are left alone)."""
        return TeacherCache({k: _moved(v, device) for k, v in self.parts.items()})

    def lookup(self, idx: torch.Tensor, seq_len: int, device: torch.device | str) -> TeacherBatch:
        """Outputs for examples ``idx``; LoRA features zero-padded (or cut) to ``seq_len`` tokens.

        Example ``i``'s features are rows ``offsets[i] .. offsets[i+1]`` of the flat store; token
        ``t`` of the batch row reads row ``offsets[i] + t`` when ``t`` is below the example's
        stored length, else zero.  Those rows are tabled once per ``seq_len`` (:meth:`_row_table`), so a
        lookup is four operations on the store's device (two gathers from the table, one from the store,
        one fill), not a dozen (the eager step at the paper's size is bound by the host launching them).
        """
        here = idx.detach().to(self.device)
        logits = self.parts["logits"][here].to(device)  # type: ignore[index]
        lora = pooled = None
        if "lora" in self.parts:
            store = self.parts["lora"]
            rows, past = self._row_table(seq_len)
            out = store["flat"][rows[here]].masked_fill_(past[here][..., None], 0)  # type: ignore[index]  # [B, T, D]
            lora = out.view(len(here), seq_len, *store["shape"]).to(device)  # type: ignore[index]
        if "pooled" in self.parts:
            pooled = self.parts["pooled"][here].to(device)  # type: ignore[index]
        return TeacherBatch(logits, lora, pooled)

    def _row_table(self, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rows, past)``, each ``[examples, seq_len]`` on the store's device: the flat row token ``t`` of
        example ``i`` reads (``offsets[i] + t``; 0 where ``past``) and whether ``t`` is past the example's
        stored length.  Made at the first lookup of a length (int32 rows where the store allows: 4 bytes per
        example and position, against the store's ``4 n_t 3 r`` per stored token)."""
        table = self._rows.get(seq_len)
        if table is None:
            store = self.parts["lora"]
            offsets = store["offsets"].to(store["flat"].device)  # type: ignore[index]
            pos = torch.arange(seq_len, device=offsets.device)
            past = pos[None, :] >= (offsets[1:] - offsets[:-1])[:, None]
            rows = (offsets[:-1, None] + pos[None, :]).masked_fill_(past, 0)
            if int(offsets[-1]) < 2**31:
                rows = rows.to(torch.int32)
            table = self._rows[seq_len] = (rows, past)
        return table


@torch.no_grad()
def compute_parts(teacher: nn.Module, loader: DataLoader, parts: tuple[str, ...], mask_padding: bool,
                  device: torch.device | str, progress: bool = False) -> dict[str, torch.Tensor | dict]:
    """One pass of the teacher over ``loader`` (in the split's order) collecting ``parts``."""
    recorder = LoraFeatureRecorder(teacher) if "lora" in parts else None
    logits, pooled, flat, lengths = [], [], [], []
    shape = None
    try:
        for batch in tqdm(loader, desc="teacher outputs", disable=not progress, leave=False):
            batch = batch_to(batch, device)
            tb = teacher_forward(teacher, batch, recorder, "pooled" in parts, mask_padding)
            logits.append(tb.logits.cpu())
            if tb.pooled is not None:
                pooled.append(tb.pooled.float().cpu())
            if tb.lora is not None:
                shape = tuple(tb.lora.shape[2:])
                feats = tb.lora.flatten(2)  # [B, T, D], on the teacher's device
                n_rows, n_tok = feats.shape[:2]
                if mask_padding:  # an example's first `keep` tokens (right padding), selected on the device
                    keep = batch["attention_mask"].sum(1)
                    real = torch.arange(n_tok, device=feats.device)[None, :] < keep[:, None]
                    rows = feats[real]
                    lengths.extend(keep.tolist())
                else:
                    rows = feats.reshape(n_rows * n_tok, -1)
                    lengths.extend([n_tok] * n_rows)
                flat.append(rows.float().cpu())  # one transfer per batch
    finally:
        if recorder is not None:
            recorder.remove()
    out: dict[str, torch.Tensor | dict] = {"logits": torch.cat(logits)}
    if "pooled" in parts:
        out["pooled"] = torch.cat(pooled)
    if "lora" in parts:
        offsets = torch.zeros(len(lengths) + 1, dtype=torch.long)
        offsets[1:] = torch.cumsum(torch.tensor(lengths, dtype=torch.long), 0)
        out["lora"] = {"flat": torch.cat(flat), "offsets": offsets, "shape": shape}
    return out


def _moved(value: torch.Tensor | dict, device: torch.device | str) -> torch.Tensor | dict:
    if isinstance(value, dict):
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in value.items()}
    return value.to(device)


def on_device(folder: Path, cache: TeacherCache, device: torch.device | str) -> TeacherCache:
    """``cache`` (read from ``folder``) on ``device``, reusing the copy an earlier run of this
    process moved there.

    A sweep's lane trains run after run from one cache: moving a LoRAILD cache of GBs to the GPU
    took 1.3-1.6 s of every 20 s run (bench/README.md section 7).  A copy is reused while its
    in-memory host value is the same object; parts on ``device`` that this run does not read (another
    task, another method's part) are dropped first, so a device holds at most one run's parts.
    """
    dev = _keep_only(device, folder, tuple(cache.parts))
    parts: dict[str, torch.Tensor | dict] = {}
    for part, value in cache.parts.items():
        key = (dev, f"{folder}/{part}")
        held = _ON_DEVICE.get(key)
        if held is None or held[0] is not value:
            held = _ON_DEVICE[key] = (value, _moved(value, device))
        parts[part] = held[1]
    return TeacherCache(parts)


def _keep_only(device: torch.device | str, folder: Path, parts: tuple[str, ...]) -> str:
    """Drop the device copies on ``device`` other than ``folder``'s ``parts`` (before new ones
    arrive: a device holds at most one run's parts); returns the device's name."""
    dev = str(torch.device(device))
    wanted = {(dev, f"{folder}/{part}") for part in parts}
    for key in [k for k in _ON_DEVICE if k[0] == dev and k not in wanted]:
        del _ON_DEVICE[key]
    return dev


def release_device() -> None:
    """Drop the device copies :func:`on_device` keeps (the host copies and the files stay)."""
    _ON_DEVICE.clear()


def part_path(folder: Path, part: str) -> Path:
    return Path(folder) / f"{part}.safetensors"


def save_part(path: Path, part: str, value: torch.Tensor | dict) -> None:
    """One part as a safetensors file (the LoRA store's ``shape`` goes into its metadata)."""
    from paperlib.loraild.run_files import save_tensors

    if isinstance(value, dict):
        save_tensors({"flat": value["flat"], "offsets": value["offsets"]}, path,
                     metadata={"shape": json.dumps(list(value["shape"]))})
    else:
        save_tensors({part: value}, path)


def read_part(path: Path, part: str, tensor: Callable | None = None) -> torch.Tensor | dict:
    """Inverse of :func:`save_part`; ``tensor(fh, name)`` reads one stored tensor (default: whole,
    to the host)."""
    from safetensors import safe_open

    tensor = tensor or (lambda fh, name: fh.get_tensor(name))
    with safe_open(str(path), framework="pt", device="cpu") as fh:
        if part == "lora":
            shape = tuple(json.loads(fh.metadata()["shape"]))
            return {"flat": tensor(fh, "flat"), "offsets": tensor(fh, "offsets"), "shape": shape}
        return tensor(fh, part)


def load_or_compute(folder: Path, teacher: nn.Module | Callable[[], nn.Module] | None, loader: DataLoader,
                    parts: tuple[str, ...], mask_padding: bool, device: torch.device | str, write: bool = True,
                    progress: bool = False) -> TeacherCache:
    """The cache for ``parts``: from memory, else from ``folder``, else computed (and saved if ``write``).

    ``teacher`` may be a function that loads it, called only when a part must be computed.  When
    every part is there it is read without the folder's lock (parts are written atomically, so one
    that exists is whole): the runs of a sweep read one cache at the same time; only computing
    takes the lock.
    """
    folder = Path(folder)
    have = _read_parts(folder, parts)
    if len(have) == len(parts):
        return TeacherCache(have)
    with hold_lock(folder) if write else contextlib.nullcontext():
        have = _read_parts(folder, parts)  # again: another process may have computed them meanwhile
        missing = tuple(p for p in parts if p not in have)
        if missing:
            model = teacher() if callable(teacher) and not isinstance(teacher, nn.Module) else teacher
            new = compute_parts(model, loader, tuple(set(missing) | {"logits"}), mask_padding, device, progress)
            for part in missing:
                have[part] = _MEMORY[f"{folder}/{part}"] = new[part]
                if write:
                    save_part(part_path(folder, part), part, new[part])
    return TeacherCache(have)


def _read_parts(folder: Path, parts: tuple[str, ...]) -> dict[str, torch.Tensor | dict]:
    """The parts found in this process's memory or in ``folder`` (a damaged file is moved aside)."""
    have: dict[str, torch.Tensor | dict] = {}
    for part in parts:
        key = f"{folder}/{part}"
        if key in _MEMORY:
            have[part] = _MEMORY[key]
        else:
            value = read_or_none(part_path(folder, part), lambda p, part=part: read_part(p, part))
            if value is not None:
                have[part] = _MEMORY[key] = value
    return have


def whole_file(path: Path) -> tuple[int, int] | None:
    """``(size, mtime_ns)`` of a safetensors file whose length matches its header (a complete
    write), else ``None``.  Every process of a data-parallel run decides alike from the same file,
    so none of them waits in a collective for one that failed to read its share."""
    try:
        stat = Path(path).stat()
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (stat.st_size, stat.st_mtime_ns) if stat.st_size == 8 + n + end else None


def read_sharded(folder: Path, parts: tuple[str, ...], device: torch.device | str) -> TeacherCache | None:
    """The finished parts in ``folder`` on ``device`` in every process of the running process group,
    each process reading ``1/N`` of every part's rows and gathering the others' over the group
    (NVLink between GPUs) instead of all N reading every row (``None`` if a file is incomplete).

    Measured on 2 x H100 (bench/README.md section 7, 3 GB of parts): 0.88 s in each of two
    processes, against 1.0-1.15 s when each read every row and 0.42 s for one process alone.  The
    parts stay on ``device`` for the process's next run (as :func:`on_device`).
    """
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    tokens = {part: whole_file(part_path(folder, part)) for part in parts}
    if any(t is None for t in tokens.values()):
        return None
    dev = _keep_only(device, folder, parts)

    def share(fh, name: str) -> torch.Tensor:  # the small per-example offsets are read whole
        if name == "offsets":
            return fh.get_tensor(name).to(device)
        return _gathered_rows(fh.get_slice(name), device, rank, world)

    out: dict[str, torch.Tensor | dict] = {}
    for part in parts:
        key = (dev, f"{folder}/{part}")
        held = _ON_DEVICE.get(key)
        if held is None or held[0] != tokens[part]:
            held = _ON_DEVICE[key] = (tokens[part], read_part(part_path(folder, part), part, share))
        out[part] = held[1]
    return TeacherCache(out)


def _gathered_rows(rows, device: torch.device | str, rank: int, world: int) -> torch.Tensor:
    """A safetensors slice's rows on ``device``: this process reads chunk ``rank`` of ``world``
    (equal chunks, the last padded) and all-gathers the others."""
    import torch.distributed as dist

    shape = rows.get_shape()
    n = shape[0]
    chunk = -(-n // world)
    a, b = min(n, rank * chunk), min(n, (rank + 1) * chunk)
    mine = rows[a:b]
    local = torch.zeros((chunk, *shape[1:]), dtype=mine.dtype, device=device)
    local[: b - a] = mine.to(device)
    full = torch.empty((chunk * world, *shape[1:]), dtype=mine.dtype, device=device)
    # all_gather_single is the name from torch 2.13 on (all_gather_into_tensor, the same call, warns there)
    gather = getattr(dist, "all_gather_single", dist.all_gather_into_tensor)
    gather(full, local)
    return full[:n]


def broadcast(cache: TeacherCache | None, device: torch.device | str, src: int = 0) -> TeacherCache:
    """The cache of process ``src`` on every process of the running process group, sent over the
    group's backend (NCCL between GPUs) instead of each process reading the files again.

    ``cache`` is the source's cache (already on ``device``), ``None`` on the other processes.
    """
    import torch.distributed as dist

    def describe(v):
        return (tuple(v.shape), v.dtype)

    desc: list = [None]
    if dist.get_rank() == src:
        assert cache is not None
        desc = [{k: ({kk: describe(vv) if isinstance(vv, torch.Tensor) else vv for kk, vv in v.items()}
                     if isinstance(v, dict) else describe(v)) for k, v in cache.parts.items()}]
    dist.broadcast_object_list(desc, src=src)

    def receive(mine, spec):
        t = mine if mine is not None else torch.empty(spec[0], dtype=spec[1], device=device)
        dist.broadcast(t, src=src)
        return t

    parts: dict[str, torch.Tensor | dict] = {}
    for k, spec in desc[0].items():
        mine = cache.parts[k] if cache is not None else None
        if isinstance(spec, dict):
            parts[k] = {kk: receive(mine[kk] if mine is not None else None, sv) if kk != "shape" else sv
                        for kk, sv in spec.items()}
        else:
            parts[k] = receive(mine, spec)
    return TeacherCache(parts)


def clear_memory() -> None:
    """Forget the in-process copies, in host memory and on devices (the files stay)."""
    _MEMORY.clear()
    release_device()


__all__ = ["part_path", "save_part", "read_part", "parts_for", "TeacherBatch", "TeacherCache", "teacher_forward", "compute_parts", "load_or_compute", "on_device", "release_device", "read_sharded", "whole_file",
           "estimate_bytes", "broadcast", "clear_memory", "PARTS"]
