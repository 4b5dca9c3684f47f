"""Content fingerprints of the files a result is computed from (text, data, model weights).

Cache keys follow *content*, not names: a file edited in place, or new weights saved at the same
path, gives a new key.  The fingerprint of a file is the BLAKE2b hash of its whole content (the
honest key).  Hashing the 100 MB embedded models takes about 0.4 s, a 1.4 GB RoBERTa-large about
6 s, so each hash is done once and memoised by ``(real path, size, mtime_ns)``, the cheap first
check: in the process, and on disk in ``$PAPERLIB_CACHE/fingerprints.json`` (default
``~/.cache/paperlib``), so later processes only ``stat`` the file.  A file whose size or mtime
changed is hashed again; a file rewritten with the same size within the same mtime tick is the
one case the memo cannot see (``touch`` it, or delete the memo file).

A folder's fingerprint covers every regular file below it (names and contents; hidden files and
``__pycache__`` skipped).  A name that is no local path (a hub name such as ``gpt2-large``, a URL)
has no local content: its key is the name.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from paperlib.files import write_text_atomic

CHUNK = 1 << 20
_MEMO: dict[str, str] = {}
_DISK_LOADED: set[str] = set()


def memo_path() -> Path:
    """Where the on-disk memo of file hashes lives."""
    return Path(os.environ.get("PAPERLIB_CACHE", Path.home() / ".cache" / "paperlib")) / "fingerprints.json"


def _load_disk_memo(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # missing or damaged memo: hashes are simply recomputed


def file_fingerprint(path: str | Path) -> str:
    """BLAKE2b (128-bit) of the file's bytes, memoised by (real path, size, mtime_ns)."""
    real = os.path.realpath(path)
    st = os.stat(real)
    memo_key = f"{real}|{st.st_size}|{st.st_mtime_ns}"
    if memo_key in _MEMO:
        return _MEMO[memo_key]
    disk = memo_path()
    if str(disk) not in _DISK_LOADED:
        _MEMO.update(_load_disk_memo(disk))
        _DISK_LOADED.add(str(disk))
        if memo_key in _MEMO:
            return _MEMO[memo_key]
    h = hashlib.blake2b(digest_size=16)
    with open(real, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    digest = h.hexdigest()
    _MEMO[memo_key] = digest
    if st.st_size >= CHUNK:  # worth remembering across processes
        try:
            current = _load_disk_memo(disk)
            current[memo_key] = digest
            write_text_atomic(disk, json.dumps(current))
        except OSError:
            pass  # an unwritable cache folder costs time, never correctness
    return digest


def _files_below(folder: Path) -> list[Path]:
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
        out += [Path(root) / f for f in sorted(files) if not f.startswith(".") and not f.endswith(".pyc")]
    return out


def path_fingerprint(path: str | Path) -> str:
    """Fingerprint of a file, or of every file below a folder (relative names and contents)."""
    p = Path(path)
    if p.is_file():
        return file_fingerprint(p)
    h = hashlib.blake2b(digest_size=16)
    for f in _files_below(p):
        h.update(f"{f.relative_to(p)}\0{file_fingerprint(f)}\0".encode())
    return h.hexdigest()


def source_fingerprint(name: str | Path) -> str:
    """Fingerprint of a local file or folder, or ``name:<name>`` for names with no local content."""
    p = Path(name)
    if p.exists():
        return path_fingerprint(p)
    return f"name:{name}"


__all__ = ["file_fingerprint", "path_fingerprint", "source_fingerprint", "memo_path"]
