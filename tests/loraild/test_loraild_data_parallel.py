"""Data-parallel training on two CPU processes (gloo), the CI stand-in for two GPUs.

The same run (seed, global batch, data order) is made once in one process with batch 8 and once
with ``torchrun --nproc_per_node 2`` and batch 4 per process (``--batch-size`` is the *global* batch,
split over the processes, so both runs pass 8).  With dropout off both see the same
global batches and average the same gradients, so their loss curves agree to float noise; the
results and checkpoints are written once, by the main process.

``--batch-size`` is the global batch (split over the processes).  The training split (72 of 80
examples) is a multiple of the global batch: otherwise accelerate fills the last, short batch
of each process with repeated examples (``even_batches``) and the last step differs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch


def _run(tmp: Path, models: dict, glue: Path, results: str, nproc: int, batch: int) -> dict:
    args = ["--task", "sst2", "--glue-dir", str(glue), "--teacher", models["teacher"],
            "--student", models["student"], "--method", "loraild_fixed", "--seed", "0", "--epochs", "2",
            "--teacher-epochs", "1", "--rank", "4", "--lr", "1e-3", "--teacher-lr", "1e-3",
            "--max-length", "16", "--ild-start", "0", "--lora-dropout", "0",
            "--no-progress", "--no-group-by-length", "--batch-size", str(batch), "--results-dir", str(tmp / results)]
    # the launched run leaves --device unset: on a machine without a GPU, get_accelerator must still
    # set up one data-parallel CPU run (accelerate alone would start N independent runs)
    if nproc == 1 or torch.cuda.is_available():
        args += ["--device", "cpu"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    if nproc == 1:
        cmd = [sys.executable, "-m", "paperlib", "loraild", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "paperlib", "loraild", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    files = sorted((tmp / results).rglob("seed0-*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


@pytest.mark.slow
def test_two_processes_match_one_at_the_same_global_batch(tmp_path: Path, writers):
    write_glue, write_models = writers.write_glue, writers.write_models

    models = write_models(tmp_path / "models", dropout=False)
    glue = write_glue(tmp_path / "glue", n_train=80, n_dev=32)
    one = _run(tmp_path, models, glue, "one", nproc=1, batch=8)
    two = _run(tmp_path, models, glue, "two", nproc=2, batch=8)  # --batch-size is the global batch
    assert one["num_processes"] == 1 and two["num_processes"] == 2
    for h1, h2 in zip(one["history"], two["history"]):
        for key in ("loss", "ce", "inter"):
            assert h2["train"][key] == pytest.approx(h1["train"][key], rel=2e-3, abs=1e-5), (key, h1, h2)
        assert h2["valid_score"] == pytest.approx(h1["valid_score"], abs=1e-6)
    # the communicators' set-up is a phase of its own, only where there is a group
    assert "process_group" in two["phases_s"] and "process_group" not in one["phases_s"]
    # the two processes shared the k-means fits: every set is scored, in one process's order
    assert [(c["kind"], c["module"], c["layer"]) for c in two["clusters"]] == \
        [(c["kind"], c["module"], c["layer"]) for c in one["clusters"]]
    assert len(one["clusters"]) == 2 * (1 + 3) and all("set" not in c for c in two["clusters"])
    # written once, by the main process: one result, no leftover per-rank checkpoints
    leftovers = [p for p in (tmp_path / "two").rglob("*") if "rank" in p.name.lower()]
    assert not leftovers
    # a teacher cache already on disk (as a sweep prepares it) is read by both processes, not sent
    # from one to the other: the same run again, from a copy of the finished teacher and its cache
    shutil.copytree(tmp_path / "two", tmp_path / "ready")
    for f in (tmp_path / "ready").rglob("seed0-*.json"):
        f.unlink()
    assert list((tmp_path / "ready").rglob("cache-*/lora.safetensors"))
    ready = _run(tmp_path, models, glue, "ready", nproc=2, batch=8)
    assert [h["train"] for h in ready["history"]] == [h["train"] for h in two["history"]]
    assert ready["best_test"] == two["best_test"]
