"""Paper B runs trained elsewhere (on a GPU machine) and committed to the repository, read back.

A stored folder holds what ``scripts/train_stored_loraild.py`` wrote (results JSON per run, the
stage-1 teacher summaries and ``teacher_choice.json``) plus ``provenance.json`` (command, card,
date).  The book reads it with :func:`load_stored` and never retrains: a missing or incomplete
folder is an error that says how to train it.

Runs are found by their files, not by recomputing their keys: a key covers the content of the
model files a run read, which a reader of stored results need not have.  Each result records the
experiment key it was filed under (``experiment_key``); :func:`check_consistent` checks that the
key hashes to the folder it is in and agrees with the run's configuration.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

from paperlib.loraild.config import METHOD_NAMES, RunConfig, short_hash

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


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise StoredRunsError(f"{path}: not a readable result ({err}); restore it with git checkout") from err


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
    choice = _read(choice_file)
    base = base_config(folder, choice)
    by_run: dict[tuple[str, int], list[dict]] = {}
    for path in sorted(folder.glob("*/exp-*/*/seed*.json")):
        r = _read(path)
        if r.get("config", {}).get("teacher_lr") == choice["chosen_teacher_lr"]:
            by_run.setdefault((r["method"], r["seed"]), []).append(r)
    twice = [f"{m}/seed{s}" for (m, s), rs in by_run.items() if len(rs) > 1]
    if twice:
        raise StoredRunsError(f"{folder}: more than one stored result for {', '.join(twice)}")
    missing = [f"{m}/seed{s}" for m in methods for s in seeds if (m, s) not in by_run]
    if missing:
        raise StoredRunsError(f"{folder}: {len(missing)} stored run(s) missing ({', '.join(missing[:6])}"
                              f"{', ...' if len(missing) > 6 else ''}); train them with: {TRAIN_COMMAND}")
    results = [by_run[(m, s)][0] for m in methods for s in seeds]
    teachers = [t for t in (_read(p) for p in folder.glob("*/teacher-*/teacher.json"))
                if t.get("lr") == choice["chosen_teacher_lr"]]
    if len(teachers) != 1:
        raise StoredRunsError(f"{folder}: {len(teachers)} teacher summaries with the chosen lr "
                              f"{choice['chosen_teacher_lr']}, expected 1")
    teacher = teachers[0]
    prov_file = folder / "provenance.json"
    provenance = json.loads(prov_file.read_text()) if prov_file.is_file() else {}
    return StoredRuns(folder, base, results, teacher, choice, provenance)


def check_consistent(stored: StoredRuns) -> list[str]:
    """Problems with the stored runs: each result's recorded experiment key must hash to the folder
    it is stored in, agree with its configuration, and its file name with its seed and lr."""
    problems = []
    for path in sorted(stored.folder.glob("*/exp-*/*/seed*.json")):
        r = _read(path)
        name = f"{r.get('method')}/seed{r.get('seed')}"
        key = r.get("experiment_key")
        if key is None:
            problems.append(f"{name}: no experiment_key recorded ({path})")
            continue
        if path.parent.parent.name != f"exp-{short_hash(key)}":
            problems.append(f"{name}: its key hashes to exp-{short_hash(key)}, but it is in {path.parent.parent.name}")
        config = r["config"]
        differ = [k for k, v in key.items() if k in config and config[k] != v]
        if differ:
            problems.append(f"{name}: configuration and key differ in {', '.join(differ)}")
        if path.parent.name != r["method"] or path.name != f"seed{r['seed']}-lr{config['lr']:g}.json":
            problems.append(f"{name}: stored as {path.parent.name}/{path.name}")
    return problems


__all__ = ["StoredRuns", "StoredRunsError", "load_stored", "check_consistent", "config_from_result",
           "DEFAULT_FOLDER", "TRAIN_COMMAND"]
