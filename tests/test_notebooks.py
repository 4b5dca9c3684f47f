"""Notebooks: paired text/ipynb forms stay in sync, and each runs through papermill at tiny
settings on the embedded models (no network)."""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import papermill as pm
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))

# tiny parameters per chapter: real embedded models and text, small token counts
TINY = {
    "01_proof_sketch": {},
    "02_swap_measurements": {"model": "minilm-l6", "metric_tokens": 1024, "delta_tokens": 256,
                             "seq_len": 64, "second_model": ""},
    "03_linear_validity": {"model": "minilm-l6", "metric_tokens": 1024, "delta_tokens": 256,
                           "seq_len": 64, "literal_tokens": 512, "literal_iters": 5},
    "04_loraild": {"methods": ["wo_kd", "rail_kd_l", "loraild_fixed"], "seeds": [0, 1], "epochs": 2,
                   "teacher_epochs": 1, "max_train": 24, "max_valid": 8, "max_test": 16,
                   "max_length": 32, "threads": 1},
    "05_rewiring": {"ops": ["swap", "delete", "parallel"], "tokens": 32, "pair_tokens": 0, "metric_tokens": 1024,
                    "delta_tokens": 64, "seq_len": 32, "second_tokens": 64, "n_resamples": 50},
}

#: parameters that name an output folder: tests point them at a temporary one
OUTPUT_FOLDERS = ("cache_dir", "results_dir")


def _sources(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


@pytest.mark.parametrize("py", NOTEBOOKS, ids=lambda p: p.stem)
def test_pair_in_sync(py: Path):
    ipynb = py.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} missing: run `jupytext --sync {py}`"
    assert _sources(jupytext.read(py)) == _sources(nbformat.read(ipynb, as_version=4)), (
        f"{py.name} and {ipynb.name} differ: run `jupytext --sync {py}`"
    )


@pytest.mark.parametrize("py", NOTEBOOKS, ids=lambda p: p.stem)
def test_has_parameters_cell(py: Path):
    nb = jupytext.read(py)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{py.name} needs exactly one cell tagged 'parameters' for papermill"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TINY))
def test_notebook_runs_at_tiny_settings(name: str, tmp_path: Path, monkeypatch):
    nb_path = ROOT / "notebooks" / f"{name}.ipynb"
    if not nb_path.exists():
        pytest.skip(f"{name} not written yet")
    params = tiny_parameters(name, nb_path, tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / f"{name}.out.ipynb"
    pm.execute_notebook(str(nb_path), str(out), parameters=params, cwd=str(ROOT / "notebooks"),
                        kernel_name="python3", progress_bar=False)
    nb = nbformat.read(out, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors


def tiny_parameters(name: str, nb_path: Path, tmp_path: Path) -> dict:
    """TINY[name], with every output folder the notebook has pointed into ``tmp_path``."""
    params = dict(TINY[name])
    for folder in OUTPUT_FOLDERS:
        if folder in _parameter_names(nb_path):
            params[folder] = str(tmp_path / folder)
    return params


def _parameter_names(nb_path: Path) -> set[str]:
    nb = nbformat.read(nb_path, as_version=4)
    for c in nb.cells:
        if "parameters" in c.metadata.get("tags", []):
            return {line.split("=")[0].strip() for line in c.source.splitlines() if "=" in line}
    return set()


def test_no_outputs_committed():
    """Notebooks are committed without outputs; the book executes them."""
    for py in NOTEBOOKS:
        nb = nbformat.read(py.with_suffix(".ipynb"), as_version=4)
        outs = [c for c in nb.cells if c.cell_type == "code" and c.get("outputs")]
        assert not outs, f"{py.with_suffix('.ipynb').name} has stored outputs; clear them"


