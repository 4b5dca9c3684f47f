"""Paper B runs trained elsewhere (on a GPU machine) and committed to the repository, read back.

A stored folder holds what ``scripts/train_stored_loraild.py`` wrote (results JSON per run, the
stage-1 teacher summaries and ``teacher_choice.json``) plus ``provenance.json`` (command, card,
date).  The book reads it with :func:`load_stored` and never retrains: a missing or incomplete
folder is an error that says how to train it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

from paperlib.loraild.config import METHOD_NAMES, RunConfig
from paperlib.loraild.run_files import result_path, teacher_dir
from paperlib.loraild.sweep import collect

#: the stored GPU configuration of chapter 04, relative to the repository root
DEFAULT_FOLDER = Path(__file__).resolve().parents[2] / "stored" / "loraild_mpnet"
TRAIN_COMMAND = "python scripts/train_stored_loraild.py --results-dir stored/loraild_mpnet"


class StoredRunsError(FileNotFoundError):
    """A stored folder that is missing, incomplete or inconsistent."""


@dataclass
class StoredRuns:
    """Finished runs of one stored configuration and where they came from."""

    folder: Path
    base: RunConfig  # task, profile and chosen teacher lr (results_dir = folder)
    results: list[dict]
    teacher: dict  # the chosen teacher's stage-1 summary
    teacher_choice: dict
    provenance: dict


def base_config(folder: Path, choice: dict, profile: str = "embedded-gpu") -> RunConfig:
    return RunConfig(task="rotten_tomatoes", profile=profile, results_dir=str(folder),
                     teacher_lr=float(choice["chosen_teacher_lr"]), progress=False)


def config_from_result(result: dict, folder: Path) -> RunConfig:
    """The run's configuration as stored, re-rooted at ``folder`` (wherever it was trained)."""
    names = {f.name for f in fields(RunConfig)}
    stored = {k: (tuple(v) if isinstance(v, list) else v) for k, v in result["config"].items() if k in names}
    return RunConfig(**(stored | {"results_dir": str(folder)}))


def load_stored(folder: str | Path = DEFAULT_FOLDER, methods=METHOD_NAMES, seeds=range(5)) -> StoredRuns:
    """Every stored run of ``methods`` x ``seeds``; :class:`StoredRunsError` if any is missing."""
    folder = Path(folder)
    choice_file = folder / "teacher_choice.json"
    if not choice_file.is_file():
        raise StoredRunsError(f"no stored runs in {folder} (no teacher_choice.json); train them on a GPU "
                              f"machine with: {TRAIN_COMMAND}")
    choice = json.loads(choice_file.read_text())
    base = base_config(folder, choice)
    results = collect(base, ["rotten_tomatoes"], list(methods), list(seeds))
    have = {(r["method"], r["seed"]) for r in results}
    missing = [f"{m}/seed{s}" for m in methods for s in seeds if (m, s) not in have]
    if missing:
        raise StoredRunsError(f"{folder}: {len(missing)} stored run(s) missing ({', '.join(missing[:6])}"
                              f"{', ...' if len(missing) > 6 else ''}); train them with: {TRAIN_COMMAND}")
    teacher = json.loads((teacher_dir(base.resolved()) / "teacher.json").read_text())
    prov_file = folder / "provenance.json"
    provenance = json.loads(prov_file.read_text()) if prov_file.is_file() else {}
    return StoredRuns(folder, base, results, teacher, choice, provenance)


def check_consistent(stored: StoredRuns) -> list[str]:
    """Problems with the stored runs: each result's configuration must key to the file it is in."""
    problems = []
    for r in stored.results:
        cfg = config_from_result(r, stored.folder)
        expected = result_path(cfg)
        if not expected.is_file():
            problems.append(f"{r['method']}/seed{r['seed']}: its configuration keys to {expected}, which is missing")
        elif json.loads(expected.read_text()) != r:
            problems.append(f"{r['method']}/seed{r['seed']}: {expected} holds another run")
    return problems


__all__ = ["StoredRuns", "StoredRunsError", "load_stored", "check_consistent", "config_from_result",
           "DEFAULT_FOLDER", "TRAIN_COMMAND"]
