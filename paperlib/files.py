"""Writing results so they are never half-written, and reading them so a damaged one is never used.

Every file is written to a temporary file with a unique name in the same folder (``<name>.<pid>.
<random>.tmp``: two processes never share one) and renamed over the target with ``os.replace``,
which is atomic: a reader sees the old file or the new one, never a part.  A file that cannot be
read back (truncated by a full disk, damaged by hand, written by another version) is reported by
name, moved aside to ``<name>.damaged`` and treated as missing, so the result is recomputed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ResultsNotWritableError(OSError):
    """A results folder that cannot be written (checked before any work is done)."""


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A unique temporary path next to ``path``; renamed onto ``path`` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(obj, indent=1, default=float))


class BackgroundWrite:
    """Runs ``write()`` (a file write) in a background thread while the caller goes on computing.

    :meth:`wait` joins the thread and re-raises what ``write`` raised.  A caller that fails itself
    joins with ``wait(raise_error=False)`` before re-raising its own error, so the file is finished
    (or cleanly absent: writes go through :func:`atomic_path`) when the process goes on or exits.
    The thread is not a daemon: an interpreter exiting normally finishes the write first.
    """

    def __init__(self, write: Callable[[], None], name: str = "paperlib-write"):
        self.error: BaseException | None = None

        def work() -> None:
            try:
                write()
            except BaseException as e:  # noqa: BLE001 - handed to the caller by wait()
                self.error = e

        self._thread = threading.Thread(target=work, name=name, daemon=False)
        self._thread.start()

    def wait(self, raise_error: bool = True) -> None:
        self._thread.join()
        if self.error is not None and raise_error:
            raise self.error


def discard_damaged(path: Path, err: BaseException) -> None:
    """Say which file is damaged and move it aside (``<name>.damaged``) so it is recomputed."""
    aside = path.with_name(path.name + ".damaged")
    with contextlib.suppress(OSError):
        os.replace(path, aside)
    print(f"warning: {path} is damaged ({err.__class__.__name__}: {str(err)[:120]}); moved to "
          f"{aside.name}, recomputing", file=sys.stderr)


def read_or_none(path: str | Path, reader: Callable[[Path], T]) -> T | None:
    """``reader(path)``, ``None`` if the file does not exist, and ``None`` (file moved aside, a
    warning naming it) if it cannot be read: a damaged result is never used."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return reader(path)
    except Exception as err:  # noqa: BLE001 - any failure to read means the file is unusable
        discard_damaged(path, err)
        return None


def read_json(path: Path) -> Any:
    """JSON of ``path``; an empty or truncated file is an error (``json`` raises ``ValueError``)."""
    return json.loads(path.read_text())


def check_writable(folder: str | Path, what: str, fix: str) -> None:
    """Fail now, not after the work, if ``folder`` (created if missing) cannot hold new files.

    The probe file's name is unique per check: the lanes of a sweep check their shared results folder at
    the same time, and one lane must not replace or remove another's probe."""
    folder = Path(folder)
    probe = folder / f".write-check.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(probe) as tmp:
            tmp.write_text("")
        probe.unlink()
    except OSError as err:
        raise ResultsNotWritableError(
            f"{what} {folder} is not writable ({err.__class__.__name__}: {err.strerror or err}); {fix}"
        ) from None


__all__ = ["atomic_path", "BackgroundWrite", "write_text_atomic", "write_json_atomic", "read_or_none", "read_json",
           "discard_damaged", "check_writable", "ResultsNotWritableError"]
