"""The book builds with warnings as errors, a failing cell fails that build, and what it builds
reads offline: formulas from MathJax served by the build itself, no script or stylesheet from the
network, tables as HTML (never raw markdown), helper code collapsed."""

from __future__ import annotations

import re
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
        assert (book / f"{f}.ipynb").exists() or (book / f"{f}.md").exists(), \
            f"toc names {f} but neither book/{f}.ipynb nor book/{f}.md exists"


# ------------------------------------------------------------------ what a page may contain

_NETWORK_ASSET = re.compile(
    r"<script\b[^>]*\bsrc\s*=\s*[\"']?(?:https?:)?//"  # <script src="https://..."> or "//host/..."
    r"|<link\b[^>]*\bhref\s*=\s*[\"']?(?:https?:)?//[^>]*>"  # <link href="https://..."> (checked below)
    r"|@import\s+(?:url\()?[\"']?(?:https?:)?//"  # CSS @import from the network
    r"|<script\b[^>]*>[^<]*https?://[^<]*\.(?:js|css)\b",  # an inline script naming a remote .js / .css
    re.IGNORECASE,
)
_MD_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)+\|?\s*$", re.MULTILINE)


def network_assets(html: str) -> list[str]:
    """Every script or stylesheet that ``html`` would load from the network."""
    found = []
    for m in _NETWORK_ASSET.finditer(html):
        tag = m.group(0)
        if tag.lower().startswith("<link") and not re.search(r"rel\s*=\s*[\"']?(stylesheet|preload|modulepreload)",
                                                             tag, re.IGNORECASE):
            continue  # a plain hyperlink-style <link> (e.g. rel="index") fetches nothing
        found.append(tag[:200])
    return found


def raw_markdown_tables(html: str) -> list[str]:
    """Markdown table rules (``|---|---|``) left as text on a rendered page (code blocks excluded)."""
    text = re.sub(r"<pre\b.*?</pre>", "", html, flags=re.DOTALL | re.IGNORECASE)
    text = re.sub(r"<[^>]+>", "\n", text)
    return [m.group(0).strip() for m in _MD_TABLE_RULE.finditer(text)]


def check_pages(html_dir: Path) -> list[str]:
    """Problems of a built book: network assets, raw markdown tables, math with no local MathJax."""
    problems = []
    if not (html_dir / "_static" / "mathjax" / "tex-chtml.js").exists():
        problems.append("_static/mathjax/tex-chtml.js missing: formulas would not render offline")
    for page in sorted(html_dir.rglob("*.html")):
        if "_static" in page.parts or "_sources" in page.parts:
            continue
        html = page.read_text(encoding="utf-8")
        rel = page.relative_to(html_dir)
        problems += [f"{rel}: loads {a}" for a in network_assets(html)]
        problems += [f"{rel}: raw markdown table {t!r}" for t in raw_markdown_tables(html)]
        if 'class="math' in html and "_static/mathjax/tex-chtml.js" not in html:
            problems.append(f"{rel}: has formulas but does not load the build's own MathJax")
    return problems


def test_page_checks_catch_what_they_should():
    bad = ('<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>'
           '<link rel="stylesheet" href="//fonts.example.org/a.css">'
           '<script>const URL = "https://unpkg.com/thebe@0.8.2/lib/index.js";</script>')
    assert len(network_assets(bad)) == 3
    good = ('<script src="_static/mathjax/tex-chtml.js"></script><link rel="stylesheet" href="_static/a.css">'
            '<link rel="index" href="genindex.html"><a href="https://example.org">a link</a>')
    assert network_assets(good) == []
    assert raw_markdown_tables("<p>| a | b |\n|---|---|\n| 1 | 2 |</p>")
    assert raw_markdown_tables("<div>|:---|---:|</div>")
    assert not raw_markdown_tables("<table><tr><td>a</td></tr></table><pre>|---|---|</pre><p>a --- b</p>")


def test_markdown_page_renders_math_offline(tmp_path: Path):
    """A page with formulas and a table builds with MathJax copied into the build, and no page
    loads anything from the network (the root _config.yml, execution off)."""
    book = tmp_path / "book"
    book.mkdir()
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    cfg["execute"]["execute_notebooks"] = "off"
    (book / "_config.yml").write_text(yaml.safe_dump(cfg))
    (book / "_toc.yml").write_text(yaml.safe_dump({"format": "jb-book", "root": "intro"}))
    (book / "intro.md").write_text("# Math\n\nInline $r(i, i+1)$ and\n\n$$\\delta = \\mathbb{E}_t x_t$$\n\n"
                                   "| a | b |\n|---|---|\n| 1 | 2 |\n")
    result = _build(book)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    html_dir = book / "_build" / "html"
    assert check_pages(html_dir) == []
    page = (html_dir / "intro.html").read_text()
    assert "<table" in page and "_static/mathjax/tex-chtml.js" in page


def _tiny_book(tmp_path: Path, notebooks: dict[str, nbformat.NotebookNode], execute: str,
               pages: tuple[str, ...] = ()) -> Path:
    """A book of ``notebooks`` (stored as given) and the markdown ``pages`` of book/ after them."""
    book = tmp_path / "book"
    (book / "notebooks").mkdir(parents=True)
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    cfg["execute"]["execute_notebooks"] = execute
    if pages:  # markdown notebooks (the deviations page) run; the chapters keep their papermill outputs
        cfg["execute"]["exclude_patterns"] = ["*notebooks/*"]
    (book / "_config.yml").write_text(yaml.safe_dump(cfg))
    toc = {"format": "jb-book", "root": "intro",
           "chapters": [{"file": f"notebooks/{name}"} for name in notebooks] + [{"file": p} for p in pages]}
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
    pages = tuple(f for f in files_in_toc() if not f.startswith("notebooks/") and (ROOT / "book" / f"{f}.md").exists())
    book = _tiny_book(tmp_path, executed, execute="force" if pages else "off", pages=pages)
    for page in ("intro", *pages):
        shutil.copy(ROOT / "book" / f"{page}.md", book / f"{page}.md")
    result = _build(book)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    html_dir = book / "_build" / "html"
    for name in executed:
        page = (html_dir / "notebooks" / f"{name}.html").read_text()
        assert "tag_hide-input" in page, f"{name}: no collapsed helper cell"
    assert check_pages(html_dir) == [], "\n".join(check_pages(html_dir))
    intro = (html_dir / "intro.html").read_text()
    assert "Results at a glance" in intro and intro.count("<table") >= 3, "landing page lacks its glued tables"


def files_in_toc() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    return [c["file"] for part in toc["parts"] for c in part["chapters"]]
