"""Chapter 04: the paired forms agree, unreachable GLUE and unknown tasks stop in the first cell after
the parameters with a clear message, and (slow) the whole page runs at tiny settings."""

from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import papermill as pm
import pytest

ROOT = Path(__file__).resolve().parents[2]
PY = ROOT / "notebooks" / "04_loraild.py"
IPYNB = PY.with_suffix(".ipynb")


def _execute(tmp_path: Path, **params):
    out = tmp_path / "out.ipynb"
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(str(IPYNB), str(out), parameters=params, cwd=str(ROOT / "notebooks"),
                            kernel_name="python3", progress_bar=False)
    nb = nbformat.read(out, as_version=4)
    params_at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    failed = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
              and any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    # papermill inserts an "injected-parameters" cell right after the parameters cell
    first_after = next(i for i in range(params_at + 1, len(nb.cells))
                       if nb.cells[i].cell_type == "code" and "injected-parameters" not in nb.cells[i].metadata.get("tags", []))
    return err.value, failed, first_after


def test_pair_in_sync_and_one_parameters_cell():
    py, ipynb = jupytext.read(PY), nbformat.read(IPYNB, as_version=4)
    assert [(c.cell_type, c.source.strip()) for c in py.cells] == [(c.cell_type, c.source.strip()) for c in ipynb.cells]
    assert sum("parameters" in c.metadata.get("tags", []) for c in ipynb.cells) == 1
    assert not any(c.get("outputs") for c in ipynb.cells if c.cell_type == "code")


def test_unreachable_glue_stops_right_after_parameters(tmp_path):
    err, failed, first_after = _execute(tmp_path, task="rte", glue_dir=str(tmp_path / "no_glue"))
    assert failed == [first_after]
    assert err.ename == "DataUnavailableError"
    assert "GLUE_DIR" in err.evalue and "rotten_tomatoes" in err.evalue and "offline" in err.evalue


def test_unknown_task_lists_valid_tasks():
    """The same first cell, run in this process (a kernel start is covered by the test above)."""
    from paperlib.loraild.config import UnknownTaskError

    cells = [c for c in jupytext.read(PY).cells if c.cell_type == "code"]
    at = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
    namespace: dict = {}
    exec(cells[at].source, namespace)
    namespace["task"] = "mnli"
    with pytest.raises(UnknownTaskError) as err:
        exec(cells[at + 1].source, namespace)
    assert all(t in str(err.value) for t in ("cola", "mrpc", "qnli", "rte", "sst2", "stsb", "rotten_tomatoes"))


@pytest.mark.slow
def test_page_runs_at_tiny_settings(tmp_path):
    out = tmp_path / "out.ipynb"
    pm.execute_notebook(str(IPYNB), str(out), cwd=str(ROOT / "notebooks"), kernel_name="python3",
                        progress_bar=False,
                        parameters=dict(methods=["wo_kd", "rail_kd_l", "loraild_fixed"], seeds=[0, 1], epochs=2,
                                        teacher_epochs=1, max_train=24, max_valid=8, max_test=16,
                                        max_length=32, results_dir=str(tmp_path / "results"), threads=1,
                                        workers=1))
    nb = nbformat.read(out, as_version=4)
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                if o.get("output_type") == "error"]
