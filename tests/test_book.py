"""The book builds with warnings as errors, and a failing cell fails that build."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _jupyter_book() -> list[str]:
    exe = Path(sys.executable).with_name("jupyter-book")
    return [str(exe)] if exe.exists() else ["jupyter-book"]


def _build(book: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*_jupyter_book(), "build", str(book), "-W", "-n", "--keep-going"],
                          capture_output=True, text=True, timeout=900)


def test_book_layout_links_to_root_files():
    book = ROOT / "book"
    for name, target in {"_config.yml": "../_config.yml", "_toc.yml": "../_toc.yml",
                         "notebooks": "../notebooks"}.items():
        assert (book / name).is_symlink(), f"book/{name} must be a symlink to {target}"
        assert (book / name).resolve() == (book / target).resolve()
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    for f in files:
        assert (book / f"{f}.ipynb").exists(), f"toc names {f} but book/{f}.ipynb is missing"


def _tiny_book(tmp_path: Path, notebooks: dict[str, nbformat.NotebookNode], execute: str) -> Path:
    book = tmp_path / "book"
    (book / "notebooks").mkdir(parents=True)
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    cfg["execute"]["execute_notebooks"] = execute
    (book / "_config.yml").write_text(yaml.safe_dump(cfg))
    toc = {"format": "jb-book", "root": "intro",
           "chapters": [{"file": f"notebooks/{name}"} for name in notebooks]}
    (book / "_toc.yml").write_text(yaml.safe_dump(toc))
    (book / "intro.md").write_text("# Test book\n")
    for name, nb in notebooks.items():
        nbformat.write(nb, book / "notebooks" / f"{name}.ipynb")
    return book


@pytest.mark.slow
def test_failing_cell_fails_the_strict_build(tmp_path: Path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# Broken"), nbformat.v4.new_code_cell("raise ValueError('boom')")]
    result = _build(_tiny_book(tmp_path, {"broken": nb}, execute="force"))
    assert result.returncode != 0, result.stdout[-2000:]


@pytest.mark.slow
def test_real_chapters_build_strictly_from_tiny_executions(tmp_path: Path):
    """Every chapter, executed at tiny settings by papermill, renders with no Sphinx warning."""
    import papermill as pm

    from tests.test_notebooks import TINY, tiny_parameters

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    names = [c["file"].split("/")[-1] for part in toc["parts"] for c in part["chapters"]]
    executed = {}
    for name in names:
        src = ROOT / "notebooks" / f"{name}.ipynb"
        if name not in TINY or not src.exists():
            continue
        out = tmp_path / f"{name}.ipynb"
        params = tiny_parameters(name, src, tmp_path / "outputs")
        pm.execute_notebook(str(src), str(out), parameters=params, cwd=str(ROOT / "notebooks"),
                            kernel_name="python3", progress_bar=False)
        executed[name] = nbformat.read(out, as_version=4)
    book = _tiny_book(tmp_path, executed, execute="off")
    shutil.copy(ROOT / "book" / "intro.md", book / "intro.md")
    result = _build(book)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in executed:
        assert (book / "_build" / "html" / "notebooks" / f"{name}.html").exists()
