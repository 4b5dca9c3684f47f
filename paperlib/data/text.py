"""Text for the swap analysis, split into a *metric* half (fits, eq. 12) and a *delta* half (eq. 2).

Paper configuration (section 4.2): OpenAI gpt-2-output-dataset webtext, ``webtext.train.jsonl``
for the metrics and ``webtext.valid.jsonl`` for ``delta``, read by URL or from a local folder.

Embedded configuration (offline): the ~100 real English Wikipedia articles that ``gensim``
ships as test data, cleaned with gensim's own ``filter_wiki``, split *by article* (even ->
metric, odd -> delta) so no article feeds both halves.  ``lee`` is gensim's 300 news articles.
A local ``.txt`` (blank-line separated documents) or ``.jsonl`` (field ``text``) file is split
the same way.
"""

from __future__ import annotations

import bz2
import importlib.util
import io
import json
import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

WEBTEXT_URL = "https://openaipublic.azureedge.net/gpt-2-output-dataset/data/{split}.jsonl"
WEBTEXT_FILES = {"metric": "webtext.train", "delta": "webtext.valid"}
EMBEDDED_SOURCES = ("wiki", "lee")


class TextSourceError(ValueError):
    """A text source that does not exist or cannot be reached."""


@dataclass(frozen=True)
class TextHalves:
    """Documents for the two roles, lazily produced."""

    name: str
    description: str
    metric: "DocStream"
    delta: "DocStream"


class DocStream:
    """A re-iterable stream of documents (a factory, so each pass starts afresh)."""

    def __init__(self, factory, label: str):
        self._factory = factory
        self.label = label

    def __iter__(self) -> Iterator[str]:
        return iter(self._factory())


def _gensim_test_file(name: str) -> Path:
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise TextSourceError("the embedded text needs the 'gensim' package: pip install gensim==4.4.0")
    path = Path(spec.submodule_search_locations[0]) / "test" / "test_data" / name
    if not path.exists():
        raise TextSourceError(f"gensim is installed but does not ship {name}; use gensim==4.4.0")
    return path


WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


def wiki_articles(min_words: int = 200) -> list[str]:
    """The real Wikipedia articles shipped in gensim, as clean text, redirects and stubs dropped."""
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    out = []
    with bz2.open(_gensim_test_file(WIKI_FILE), "rb") as fh:
        for title, text, _pageid in extract_pages(fh):
            if text.lstrip().lower().startswith("#redirect"):
                continue
            clean = filter_wiki(text)
            clean = re.sub(r"'{2,}", "", clean)  # bold / italic quote markup
            clean = re.sub(r"[ \t]+", " ", clean)
            clean = re.sub(r"\n\s*\n+", "\n\n", clean).strip()
            if len(clean.split()) >= min_words:
                out.append(f"{title}\n\n{clean}")
    return out


def lee_articles() -> list[str]:
    """gensim's Lee news corpus: 300 short news articles, one per line."""
    with open(_gensim_test_file("lee_background.cor"), encoding="utf-8", errors="replace") as fh:
        return [line.strip() for line in fh if line.strip()]


def _split_alternate(docs: list[str], name: str, description: str) -> TextHalves:
    if len(docs) < 2:
        raise TextSourceError(f"text source {name!r} has {len(docs)} document(s); need at least 2")
    return TextHalves(
        name,
        description,
        DocStream(lambda: docs[0::2], f"{name} (even documents)"),
        DocStream(lambda: docs[1::2], f"{name} (odd documents)"),
    )


def _read_jsonl_lines(stream: io.TextIOBase, where: str = "jsonl") -> Iterator[str]:
    """The ``text`` field of every non-blank line; a bad line is an error naming file and line."""
    fix = 'each line must be a JSON object with a "text" string, e.g. {"text": "..."}'
    try:
        for number, line in enumerate(stream, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except ValueError as err:
                raise TextSourceError(f"{where} line {number} is not JSON ({err.msg}); {fix}") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                keys = sorted(record) if isinstance(record, dict) else type(record).__name__
                raise TextSourceError(f"{where} line {number} has no \"text\" string (found {keys}); {fix}")
            yield record["text"]
    except UnicodeDecodeError as err:
        raise TextSourceError(_not_utf8(where, err)) from None


def _not_utf8(where: str, err: UnicodeDecodeError) -> str:
    return (f"{where} is not UTF-8 text (byte 0x{err.object[err.start]:02x}); convert it to UTF-8, "
            f"e.g. iconv -f latin1 -t utf-8")


def jsonl_documents(location: str) -> Iterator[str]:
    """Documents (field ``text``) of a jsonl file given by local path or http(s) URL, streamed."""
    if re.match(r"^https?://", location):
        try:
            resp = urllib.request.urlopen(location, timeout=30)
        except OSError as err:
            raise TextSourceError(
                f"cannot reach {location} ({err}); download the file and pass a local path"
            ) from err
        with resp:
            yield from _read_jsonl_lines(io.TextIOWrapper(resp, encoding="utf-8"), location)
    else:
        with open(location, encoding="utf-8") as fh:
            yield from _read_jsonl_lines(fh, location)


def webtext(location: str | None = None) -> TextHalves:
    """OpenAI webtext: train split for the metrics, valid split for delta (section 4.2).

    ``location`` is a folder holding ``webtext.train.jsonl`` / ``webtext.valid.jsonl`` or
    ``None`` for the public URLs.
    """
    def where(split: str) -> str:
        if location is None:
            return WEBTEXT_URL.format(split=split)
        path = Path(location) / f"{split}.jsonl"
        if not path.exists():
            raise TextSourceError(f"{path} not found (expected webtext.train.jsonl and webtext.valid.jsonl)")
        return str(path)

    m, d = where(WEBTEXT_FILES["metric"]), where(WEBTEXT_FILES["delta"])
    return TextHalves(
        "webtext",
        "OpenAI gpt-2-output-dataset webtext (train for metrics, valid for delta), as in the paper",
        DocStream(lambda: jsonl_documents(m), m),
        DocStream(lambda: jsonl_documents(d), d),
    )


def load_text(source: str) -> TextHalves:
    """Resolve a text source name: ``wiki``, ``lee``, ``webtext``, ``webtext:DIR``, or a file path."""
    if source == "wiki":
        return _split_alternate(
            wiki_articles(), "wiki",
            "English Wikipedia articles shipped with gensim 4.4 (embedded), split by article",
        )
    if source == "lee":
        return _split_alternate(lee_articles(), "lee", "Lee news corpus shipped with gensim (embedded)")
    if source == "webtext":
        return webtext(None)
    if source.startswith("webtext:"):
        return webtext(source.split(":", 1)[1])
    path = Path(source)
    if path.is_dir() and (path / "webtext.train.jsonl").exists():
        return webtext(str(path))
    if path.is_file():
        if path.suffix == ".jsonl":
            docs = list(jsonl_documents(str(path)))
        else:
            try:
                raw = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as err:
                raise TextSourceError(_not_utf8(str(path), err)) from None
            docs = [d.strip() for d in raw.split("\n\n") if d.strip()]
        return _split_alternate(docs, path.name, f"local file {path}, split by document")
    raise TextSourceError(
        f"unknown text source {source!r}: use one of {EMBEDDED_SOURCES} (offline), 'webtext' "
        "(the paper's, downloads), 'webtext:DIR', or a path to a .txt/.jsonl file"
    )


def text_files(source: str) -> list[Path]:
    """The local files a text source reads (for content-keyed caches); none for a URL."""
    if source == "wiki":
        return [_gensim_test_file(WIKI_FILE)]
    if source == "lee":
        return [_gensim_test_file("lee_background.cor")]
    if source == "webtext":
        return []
    folder = source.split(":", 1)[1] if source.startswith("webtext:") else source
    path = Path(folder)
    if path.is_dir():
        return [path / f"{WEBTEXT_FILES[r]}.jsonl" for r in ("metric", "delta")
                if (path / f"{WEBTEXT_FILES[r]}.jsonl").exists()]
    return [path] if path.is_file() else []


__all__ = ["TextHalves", "text_files", "TextSourceError", "load_text", "wiki_articles", "lee_articles", "webtext",
           "jsonl_documents"]
