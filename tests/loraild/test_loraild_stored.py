"""The stored GPU runs of chapter 04 are complete and consistent (nothing is retrained here)."""

from __future__ import annotations

import json

import pytest

from paperlib.loraild.config import METHOD_NAMES
from paperlib.loraild.stored import DEFAULT_FOLDER, StoredRunsError, check_consistent, load_stored


def test_stored_runs_are_complete_and_key_to_their_paths():
    stored = load_stored()
    assert len(stored.results) == len(METHOD_NAMES) * 5
    assert {(r["method"], r["seed"]) for r in stored.results} == {(m, s) for m in METHOD_NAMES for s in range(5)}
    for r in stored.results:
        assert r["config"]["profile"] == "embedded-gpu" and r["config"]["teacher"] == "mpnet-base"
        assert len(r["history"]) == r["config"]["epochs"] and all(h["test_score"] is not None for h in r["history"])
        assert 0.5 < r["best_test"] <= 1.0 and r["data"] == stored.results[0]["data"]
        if r["method"] in r["config"]["cluster_methods"]:
            assert r["clusters"], f"{r['method']}/seed{r['seed']} has no cluster scores"
    assert check_consistent(stored) == []
    assert stored.teacher["lr"] == stored.teacher_choice["chosen_teacher_lr"]
    assert {"command", "card", "date"} <= set(stored.provenance)


def test_a_missing_run_is_an_error_that_says_how_to_train(tmp_path):
    import shutil

    copy = tmp_path / "stored"
    shutil.copytree(DEFAULT_FOLDER, copy)
    next(copy.rglob("loraild_fixed/seed3-*.json")).unlink()
    with pytest.raises(StoredRunsError, match=r"1 stored run\(s\) missing \(loraild_fixed/seed3\).*train_stored_loraild"):
        load_stored(copy)
    with pytest.raises(StoredRunsError, match="no stored runs"):
        load_stored(tmp_path / "nowhere")


def test_a_run_stored_under_another_key_is_reported(tmp_path):
    import shutil

    copy = tmp_path / "stored"
    shutil.copytree(DEFAULT_FOLDER, copy)
    path = next(copy.rglob("wo_kd/seed0-*.json"))
    r = json.loads(path.read_text())
    r["config"]["max_length"] = 32  # as if another configuration had been written here
    path.write_text(json.dumps(r))
    problems = check_consistent(load_stored(copy))
    assert len(problems) == 1 and problems[0].startswith("wo_kd/seed0")
