"""A task's token ids on disk, keyed by the data's content: a new process tokenises a task once.

Every process of a data-parallel run, every CLI call and every fresh sweep worker used to tokenise its
task again (:func:`~paperlib.loraild.encoding.encode`: about 5 s for 38,400 sentences on a 2-core CPU,
1.2-1.9 s per process on the two-GPU machine, ``bench/README.md`` section 7, round 9).  The ids are
saved once per data setting as ``<results>/<task>/encoded-<key>.safetensors``, where ``key`` hashes
:meth:`~paperlib.loraild.config.RunConfig.data_key` (task, sizes, ``max_length``, tokenizer, and the
content of the data and tokenizer files), so a changed file or setting is a new file, never a stale one.

Per split ``s``: ``s.ids`` (int32, every example's ids one after another), ``s.offsets`` (int64,
``[n + 1]``: example ``i`` is ``ids[offsets[i]:offsets[i + 1]]``), ``s.types`` (token type ids, same
layout, where the tokenizer gives them) and ``s.labels``.  Written atomically (a damaged or unreadable
file is moved aside and the task tokenised again); a folder that cannot be written is no error (the
ids are then just not kept).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from paperlib.files import read_or_none
from paperlib.loraild.config import RunConfig, short_hash
from paperlib.loraild.encoding import EncodedSplit

SPLITS = ("train", "valid", "test")


def data_id(cfg: RunConfig) -> str:
    """The data setting's short hash (``cfg`` resolved): :meth:`~paperlib.loraild.config.RunConfig.data_key`
    and the GLUE folder (what :func:`~paperlib.loraild.prepare.prepare_data` keeps in memory under)."""
    return short_hash(cfg.data_key() | {"glue_dir": cfg.glue_dir})


def encoded_path(cfg: RunConfig, key: str | None = None) -> Path:
    """Where the task's token ids for this data setting are kept (``key``: its :func:`data_id`, if known)."""
    cfg = cfg.resolved()
    return Path(cfg.results_dir) / cfg.task / f"encoded-{key or data_id(cfg)}.safetensors"


def _flat(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter((t for r in rows for t in r), dtype=np.int32, count=int(offsets[-1]))
    return torch.from_numpy(flat), torch.from_numpy(offsets)


def _rows(flat: torch.Tensor, offsets: torch.Tensor) -> list[list[int]]:
    values, ends = flat.tolist(), offsets.tolist()
    return [values[a:b] for a, b in zip(ends[:-1], ends[1:])]


def save_encoded(path: Path, encoded: dict[str, EncodedSplit]) -> bool:
    """Write the splits' ids (atomically); ``False`` where the folder cannot be written."""
    from paperlib.loraild.run_files import save_tensors

    tensors: dict[str, torch.Tensor] = {}
    for split, enc in encoded.items():
        tensors[f"{split}.ids"], tensors[f"{split}.offsets"] = _flat(enc.input_ids)
        if enc.token_type_ids is not None:
            tensors[f"{split}.types"], _ = _flat(enc.token_type_ids)
        tensors[f"{split}.labels"] = torch.tensor(enc.labels)
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_tensors(tensors, Path(path))
    except OSError:
        return False
    return True


def _read(path: Path) -> dict[str, EncodedSplit]:
    from paperlib.loraild.run_files import load_tensors

    t = load_tensors(path)
    out = {}
    for split in SPLITS:
        offsets = t[f"{split}.offsets"]
        labels = t[f"{split}.labels"].numpy()
        if len(offsets) != len(labels) + 1 or int(offsets[-1]) != len(t[f"{split}.ids"]):
            raise ValueError(f"split {split}: {len(labels)} labels, {len(offsets)} offsets, {len(t[f'{split}.ids'])} ids")
        types = _rows(t[f"{split}.types"], offsets) if f"{split}.types" in t else None
        out[split] = EncodedSplit(_rows(t[f"{split}.ids"], offsets), types, labels)
    return out


def load_encoded(path: Path) -> dict[str, EncodedSplit] | None:
    """The splits' ids from ``path``, or ``None`` if there is no such file (a damaged one is moved aside)."""
    return read_or_none(path, _read)


__all__ = ["SPLITS", "data_id", "encoded_path", "load_encoded", "save_encoded"]
