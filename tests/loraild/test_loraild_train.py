"""End-to-end stage 1 + stage 2 on tiny random RoBERTa models: every method, resume, sweep, CLI."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path

import pytest
import torch

from paperlib.loraild import sweep as sweep_mod
from paperlib.loraild import train as train_mod
from paperlib.loraild.config import METHOD_NAMES, METHODS, short_hash
from paperlib.loraild.sweep import run_sweep
from paperlib.loraild.train import checkpoint_dir, load_teacher, result_path, run, teacher_dir


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_every_method_runs_one_epoch(tiny, method):
    cfg = tiny.config(method=method)
    result = run(cfg)
    path = result_path(cfg)
    assert path.exists() and json.loads(path.read_text())["best_test"] == result["best_test"]
    assert len(result["history"]) == 1 and result["best_epoch"] == 0
    h = result["history"][0]
    assert set(h["valid"]) == {"accuracy"} and 0 <= h["test_score"] <= 1
    assert result["best_valid"] == h["valid_score"] and result["best_test"] == h["test_score"]
    assert result["data"] == {"train": 54, "valid": 6, "test": 30}
    spec = METHODS[method]
    assert ("kd" in h["train"]) == spec.kd
    assert ("inter" in h["train"]) == (spec.inter is not None)
    if spec.inter:
        assert h["train"]["inter"] > 0
    if method in ("rail_kd_l", "loraild_fixed"):
        kinds = {(c["kind"], c["module"]) for c in result["clusters"]}
        assert ("hidden", "-") in kinds
        assert kinds >= ({("ild", "projection")} if method == "rail_kd_l" else {("ild", "query"), ("ild", "value")})
        assert all(-1 <= c["ari"] <= 1 for c in result["clusters"])
    else:
        assert result["clusters"] == []
    assert not checkpoint_dir(cfg).exists()
    assert run(cfg)["elapsed_s"] == result["elapsed_s"]  # finished: read back, not retrained
    # the key the run was filed under is recorded, so stored results can be checked without the models
    assert result_path(cfg).parent.parent.name == f"exp-{short_hash(result['experiment_key'])}"
    assert set(result["phases_s"]) >= {"data", "setup", "steps", "evaluation"}


@pytest.mark.parametrize("task,method", [("stsb", "loraild_average"), ("rte", "rail_kd_l"), ("cola", "vanilla_kd")])
def test_other_task_kinds(tiny, task, method):
    result = run(tiny.config(task=task, method=method))
    metric = {"stsb": "pearson", "rte": "accuracy", "cola": "matthews"}[task]
    assert result["metric"] == metric and set(result["history"][0]["test"]) >= {metric}
    # RAIL-KD_l is analysed by default; regression tasks never (no classes)
    assert bool(result["clusters"]) == (task == "rte")
    if task == "rte":
        again = run(tiny.config(task=task, method=method, results_dir=str(tiny.root / "rte_clusters"),
                                cluster_methods=()))
        assert again["clusters"] == []


def test_teacher_is_frozen_and_unchanged_in_stage2(tiny):
    cfg = tiny.config(method="loraild_random_step", teacher_cache_max_gb=0.0,  # live teacher in the loop
                      results_dir=str(tiny.root / "live"))
    train_mod.train_teacher(cfg)
    digest = hashlib.sha256((teacher_dir(cfg) / "teacher.safetensors").read_bytes()).hexdigest()
    teacher = load_teacher(cfg, "cpu")
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    run(cfg)
    assert load_teacher(cfg, "cpu") is teacher
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert hashlib.sha256((teacher_dir(cfg) / "teacher.safetensors").read_bytes()).hexdigest() == digest
    # the live-teacher run and the cached-teacher run are the same computation
    cached = run(cfg.replace(teacher_cache_max_gb=2.0, results_dir=str(tiny.root / "cached")))
    live = json.loads(result_path(cfg).read_text())
    assert cached["history"][0]["train"]["inter"] == pytest.approx(live["history"][0]["train"]["inter"], rel=1e-4)


def test_curriculum_weights_and_best_epoch_selection(tiny):
    r = run(tiny.config(method="loraild_fixed", epochs=2, ild_start=1, results_dir=str(tiny.root / "cur")))
    h0, h1 = r["history"]
    assert h0["weights"] == [0.5, 0.5, 0.0] and not h0["selectable"] and "inter" not in h0["train"]
    assert h1["weights"] == pytest.approx([1 / 3] * 3) and h1["selectable"] and "inter" in h1["train"]
    assert r["best_epoch"] == 1  # epochs before ild_start never count
    rail = run(tiny.config(method="rail_kd_c", epochs=2, results_dir=str(tiny.root / "cur")))
    assert all(len(h["teacher_layers"]) == 2 for h in rail["history"])


def test_unmasked_ild_reproduces_the_authors_padding(tiny):
    masked = run(tiny.config(method="loraild_fixed", results_dir=str(tiny.root / "mask")))
    cfg = tiny.config(method="loraild_fixed", ild_mask_padding=False, results_dir=str(tiny.root / "nomask"))
    assert cfg.resolved().padding_to_max  # every sequence padded to max_length, as the authors do
    unmasked = run(cfg)
    assert unmasked["history"][0]["train"]["inter"] != pytest.approx(masked["history"][0]["train"]["inter"], rel=1e-3)


def test_test_split_scored_once_at_the_best_epoch(tiny):
    per_epoch = run(tiny.config(method="vanilla_kd", epochs=2, results_dir=str(tiny.root / "tee")))
    once = run(tiny.config(method="vanilla_kd", epochs=2, test_every_epoch=False, results_dir=str(tiny.root / "teo")))
    assert all(h["test_score"] is None for h in once["history"])
    assert once["best_epoch"] == per_epoch["best_epoch"]
    assert once["best_test"] == pytest.approx(per_epoch["best_test"])  # the best epoch's weights were restored
    assert once["best_test_metrics"] == pytest.approx(per_epoch["best_test_metrics"])


class Interrupt(RuntimeError):
    pass


def test_interrupted_run_resumes_to_the_same_result(tiny, monkeypatch):
    base = dict(method="loraild_random_step", epochs=3, ild_start=1)
    straight = run(tiny.config(results_dir=str(tiny.root / "straight"), **base))
    cfg = tiny.config(results_dir=str(tiny.root / "resumed"), **base)
    real = train_mod.method_weights

    def failing(method, epoch, *a, **k):
        if epoch == 2:
            raise Interrupt("simulated crash in epoch 2")
        return real(method, epoch, *a, **k)

    monkeypatch.setattr(train_mod, "method_weights", failing)
    with pytest.raises(Interrupt):
        run(cfg)
    assert (checkpoint_dir(cfg) / "last.pt").exists() and not result_path(cfg).exists()
    monkeypatch.setattr(train_mod, "method_weights", real)
    resumed = run(cfg)
    assert [h["epoch"] for h in resumed["history"]] == [0, 1, 2]
    for a, b in zip(straight["history"], resumed["history"]):
        assert a["train"]["loss"] == pytest.approx(b["train"]["loss"], rel=1e-5)
        assert a["valid_score"] == b["valid_score"] and a["test_score"] == b["test_score"]
    assert resumed["best_epoch"] == straight["best_epoch"]


def test_background_checkpoint_holds_the_epoch_it_names(tiny, monkeypatch):
    """A checkpoint is written while the next epoch trains: what it holds must be the state at the
    end of its own epoch (weights and AdamW moments are changed in place by the next steps), equal
    to what an in-line write of the same seeded run holds."""
    import time

    from paperlib.loraild import loop

    real_save = loop.save_torch
    written: dict[str, list] = {"background": [], "in line": []}

    def plain(obj):
        if isinstance(obj, torch.Tensor):
            return obj.detach().cpu().clone()
        if isinstance(obj, dict):
            return {k: plain(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [plain(v) for v in obj]
        return obj

    def slow_save(obj, path):  # the next epoch's steps run before this thread reads the tensors
        time.sleep(0.5)
        written["background"].append(plain(obj))
        real_save(obj, path)

    def inline_write(path, checkpoint):
        written["in line"].append(plain(checkpoint))
        real_save(checkpoint, path)

    base = dict(method="loraild_fixed", epochs=3, checkpoint=True)
    monkeypatch.setattr(loop, "save_torch", slow_save)
    run(tiny.config(results_dir=str(tiny.root / "background"), **base))
    monkeypatch.setattr(loop, "_write_checkpoint", inline_write)
    run(tiny.config(results_dir=str(tiny.root / "inline"), **base))
    bg, il = written["background"], written["in line"]
    assert [c["epoch"] for c in bg] == [c["epoch"] for c in il] == [0, 1]
    for a, b in zip(bg, il):
        for key in a["state"]:
            assert torch.equal(a["state"][key], b["state"][key]), key
        moments = [(k, name) for k, st in a["optimizer"]["state"].items() for name in st]
        assert moments
        for k, name in moments:
            assert torch.equal(a["optimizer"]["state"][k][name], b["optimizer"]["state"][k][name]), (k, name)


def test_scoring_pads_to_the_longest_sentence_with_the_logits_of_padding_to_max(tiny):
    """Where training pads to max_length (the authors' setting), valid and test batches are padded
    only to their longest sentence; the logits equal those of the same batch padded to max_length."""
    from paperlib.loraild.encoding import Collator
    from paperlib.loraild.prepare import loaders, prepare_data
    from paperlib.loraild.runtime import get_accelerator
    from paperlib.loraild.train import build_run_model

    cfg = tiny.config(method="wo_kd", pad_to_max_length=True).resolved()
    prep = prepare_data(cfg)
    _, train, valid, test, _ = loaders(get_accelerator("cpu"), prep, cfg, 0)
    assert next(iter(train))["input_ids"].shape[1] == cfg.max_length
    model, _ = build_run_model(cfg, 0, 0)
    model.eval()
    for loader, split in ((valid, "valid"), (test, "test")):
        batch = next(iter(loader))
        assert batch["input_ids"].shape[1] < cfg.max_length
        items = [prep.encoded[split][int(i)] for i in batch["idx"]]
        padded = Collator(prep.tokenizer.pad_token_id, cfg.max_length, pad_to_max=True)(items)
        with torch.no_grad():
            short, full = model.student_forward(batch).logits, model.student_forward(padded).logits
        torch.testing.assert_close(short, full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_only_methods_that_skip_parameters_need_ddps_search_for_them(tiny, monkeypatch, method):
    """Brute force for ``DistillModel.skips_parameters`` (data-parallel runs search for unused
    parameters only where it is true): at every step of every epoch, before and after ``ild_start``,
    a method that says it skips none gives every trainable parameter a gradient."""
    from paperlib.loraild.distill import DistillModel

    seen = {"steps": 0, "skipped": set(), "claims": set()}
    real_adamw, real_init = train_mod.adamw, DistillModel.__init__

    def init(self, *a, **k):
        real_init(self, *a, **k)
        seen["claims"].add(self.skips_parameters)
        seen["names"] = {id(p): n for n, p in self.named_parameters()}

    class Checked:
        def __init__(self, params, *a, **k):
            self.params, self.inner = params, real_adamw(params, *a, **k)

        def step(self):
            seen["steps"] += 1
            seen["skipped"] |= {seen["names"][id(p)] for p in self.params if p.grad is None}
            return self.inner.step()

        def __getattr__(self, name):
            return getattr(self.inner, name)

    monkeypatch.setattr(DistillModel, "__init__", init)
    monkeypatch.setattr(train_mod, "adamw", lambda params, *a, **k: Checked(params, *a, **k))
    run(tiny.config(method=method, epochs=2, ild_start=1, results_dir=str(tiny.root / f"unused-{method}")))
    assert seen["steps"] > 0 and len(seen["claims"]) == 1
    if seen["claims"] == {False}:
        assert not seen["skipped"]
    else:  # claimed (conservatively) by the methods with RAIL-KD heads only
        assert str(METHODS[method].inter).startswith("rail")


def test_seed_controls_every_initialisation(tiny):
    a = run(tiny.config(method="wo_kd", results_dir=str(tiny.root / "s1")))
    b = run(tiny.config(method="wo_kd", results_dir=str(tiny.root / "s2")))
    c = run(tiny.config(method="wo_kd", seed=1, results_dir=str(tiny.root / "s2")))
    assert a["history"][0]["train"]["loss"] == b["history"][0]["train"]["loss"]
    assert a["history"][0]["train"]["loss"] != c["history"][0]["train"]["loss"]


def test_interrupted_sweep_resumes_without_repeating_runs(tiny, monkeypatch):
    base = tiny.config(results_dir=str(tiny.root / "sweep"))
    calls = []
    real = sweep_mod.run

    def flaky(cfg, *a, **k):
        calls.append((cfg.method, cfg.seed))
        if len(calls) == 3:
            raise Interrupt("killed")
        return real(cfg, *a, **k)

    monkeypatch.setattr(sweep_mod, "run", flaky)
    methods, seeds = ["wo_kd", "vanilla_kd"], [0, 1]
    with pytest.raises(Interrupt):
        run_sweep(base, ["sst2"], methods, seeds, progress=False)
    assert calls == [("wo_kd", 0), ("wo_kd", 1), ("vanilla_kd", 0)]
    calls.clear()
    res = run_sweep(base, ["sst2"], methods, seeds, progress=False)
    assert calls == [("vanilla_kd", 0), ("vanilla_kd", 1)]
    assert res.skipped == [("sst2", "wo_kd", 0), ("sst2", "wo_kd", 1)]
    assert len(res.results) == 4 and "sst2" in res.teachers
    calls.clear()
    assert run_sweep(base, ["sst2"], methods, seeds, progress=False).ran == [] and calls == []


def run_when_both_lanes_started(cfg):
    """``run``, once a run has started in two processes (``PAPERLIB_TEST_MARKS`` holds one file per
    process): each of two lanes then trains one of two runs, however long the spawned one takes to start."""
    marks = Path(os.environ["PAPERLIB_TEST_MARKS"])
    (marks / str(os.getpid())).touch()
    end = time.monotonic() + 300
    while len(list(marks.iterdir())) < 2 and time.monotonic() < end:
        time.sleep(0.1)
    return run(cfg)


def test_parallel_workers_give_the_same_results(tiny, monkeypatch, tmp_path):
    """Two lanes (this process and a spawned one) train what one process trains; the sweep returns
    its lane line, and every result records when and in which process it ran."""
    methods, seeds = ["wo_kd", "loraild_random_epoch"], [0]
    one = run_sweep(tiny.config(results_dir=str(tiny.root / "w1")), ["sst2"], methods, seeds, progress=False)
    assert one.lanes is None  # one lane: no timeline line
    monkeypatch.setenv("PAPERLIB_TEST_MARKS", str(tmp_path))
    monkeypatch.setattr(sweep_mod, "run", run_when_both_lanes_started)
    began = time.time()
    two = run_sweep(tiny.config(results_dir=str(tiny.root / "w2")), ["sst2"], methods, seeds, progress=False,
                    workers=2)
    assert two.ran == one.ran == [("sst2", m, 0) for m in methods]
    for a, b in zip(one.results, two.results):
        assert (a["method"], a["seed"]) == (b["method"], b["seed"])
        assert b["history"][0]["train"]["loss"] == pytest.approx(a["history"][0]["train"]["loss"], rel=1e-4)
        assert b["best_valid"] == pytest.approx(a["best_valid"])
    pids = {r["worker"]["pid"] for r in two.results}
    assert len(pids) == 2 and os.getpid() in pids  # this process is lane 0
    for r in two.results:
        saved = json.loads(result_path(tiny.config(results_dir=str(tiny.root / "w2"), method=r["method"])).read_text())
        assert saved["worker"] == r["worker"] and saved["worker"]["host"] == socket.gethostname()
        assert saved["worker"]["gpu"] == os.environ.get("CUDA_VISIBLE_DEVICES")  # no GPU plan: nothing set
        assert began <= saved["started_unix"] <= time.time()
    assert two.lanes is not None and two.lanes.startswith("2 lanes: runs busy ")
    assert "after the sweep began" in two.lanes and "(per lane)" in two.lanes


def test_cli(tiny, capsys, tmp_path, monkeypatch):
    from paperlib.__main__ import main

    common = ["--glue-dir", str(tiny.glue), "--teacher", tiny.teacher, "--student", tiny.student,
              "--epochs", "1", "--teacher-epochs", "1", "--rank", "4", "--lr", "1e-3", "--batch-size", "8",
              "--max-length", "16", "--ild-start", "0", "--device", "cpu", "--no-progress",
              "--results-dir", str(tmp_path / "cli")]
    assert main(["loraild", "--task", "sst2", "--method", "loraild_average", "--seed", "0", *common]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "loraild_average" and out["best_epoch"] == 0
    assert main(["sweep", "--tasks", "sst2", "--methods", "wo_kd", "loraild_average", "--seeds", "0", *common]) == 0
    text = capsys.readouterr().out
    assert "1 run(s), 1 already finished" in text and "| LoRAILD | Average |" in text
    assert " lanes: " not in text  # one lane: no timeline line
    stub = sweep_mod.SweepResult([], {}, [("sst2", "wo_kd", 0)] * 2, [], lanes="2 lanes: runs busy (stub)")
    monkeypatch.setattr(sweep_mod, "run_sweep", lambda *a, **k: stub)
    assert main(["sweep", "--tasks", "sst2", "--seeds", "0", *common]) == 0
    assert capsys.readouterr().out.splitlines()[:2] == ["ran 2 run(s), 0 already finished", "2 lanes: runs busy (stub)"]
    monkeypatch.undo()
    assert main(["loraild", "--task", "rte", "--glue-dir", str(tmp_path / "nothing"), "--no-progress"]) == 2
    assert "GLUE_DIR" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["loraild", "--task", "mnli"])


def test_compiled_student_trains_like_the_eager_one(tiny, monkeypatch):
    """``compile=`` runs the student through torch.compile; its LoRA hooks must still record.

    Dynamo's tracing (where hooks are kept or lost) and AOT autograd are exercised with the
    ``aot_eager`` backend; inductor's code generation would add two minutes of C++ compiling.
    """
    compiled_modes = []

    def compile_cheaply(model, mode):
        compiled_modes.append(mode)
        model.compile(backend="aot_eager")
        return model

    monkeypatch.setattr(train_mod, "compile_model", compile_cheaply)
    eager_cfg = tiny.config(method="loraild_fixed", lora_dropout=0.0, pad_to_max_length=True,  # one shape: one trace
                            results_dir=str(tiny.root / "eager"))
    eager = run(eager_cfg)
    assert compiled_modes == []
    compiled = run(eager_cfg.replace(compile="default", results_dir=str(tiny.root / "compiled")))
    assert compiled_modes == ["default"]
    e, c = eager["history"][0]["train"], compiled["history"][0]["train"]
    assert c["inter"] > 0  # the recorder saw the compiled student's LoRA-A outputs
    # same seed and data; only dropout's random stream differs between eager and compiled kernels
    assert c["ce"] == pytest.approx(e["ce"], rel=0.1) and c["inter"] == pytest.approx(e["inter"], rel=0.1)
    assert compiled["config"]["compile"] == "default"
    # a compiled run leaves no compiled code behind for the next run of a sweep lane (dynamo reset)
    from torch._dynamo import convert_frame
    assert convert_frame.FRAME_COUNTER == 0
    with pytest.raises(ValueError, match="compile must be one of"):
        tiny.config(compile="fastest").resolved()


def test_auto_compile_uses_cuda_graphs_only_where_they_were_measured_to_pay(tiny):
    """``compile="auto"`` (the default) picks CUDA graphs for a long bf16 run of one fixed-shape process
    on a GPU, and eager wherever one of these conditions fails; a mode asked for by name is always used."""
    from paperlib.loraild.config import COMPILE_AUTO_MIN_STEPS as N, COMPILE_AUTO_MIN_STEPS_LONGEST as M
    cfg = tiny.config()
    assert cfg.compile == "auto"
    fixed = cfg.replace(pad_to_max_length=True)
    pays = ("cuda", 1, "bf16", N)
    assert fixed.compile_mode(*pays) == "reduce-overhead"
    assert fixed.compile_mode("cuda", 1, "bf16", 10 * N) == "reduce-overhead"
    assert cfg.replace(ild_mask_padding=False).compile_mode(*pays) == "reduce-overhead"  # pads to max too
    assert N < M
    assert cfg.compile_mode(*pays) is None  # padded to the longest item: a graph per length, paid back later
    assert cfg.compile_mode("cuda", 1, "bf16", M - 1) is None
    assert cfg.compile_mode("cuda", 1, "bf16", M) == "reduce-overhead"
    assert fixed.compile_mode("cpu", 1, "bf16", N) is None
    assert fixed.compile_mode("cuda", 2, "bf16", N) is None  # data-parallel runs stay eager
    assert fixed.compile_mode("cuda", 1, "no", N) is None  # fp32: a compiled step is only 3.5% faster
    assert fixed.compile_mode("cuda", 1, "fp16", N) is None  # not measured
    assert fixed.compile_mode("cuda", 1, "bf16", N - 1) is None  # compiling would not pay back
    assert fixed.compile_mode("cuda", 1, "bf16") is None  # length unknown
    assert fixed.replace(lora_kernel="triton").compile_mode(*pays) is None  # the op cannot be compiled
    assert fixed.compile_mode(*pays, compiler_ready=False) is None  # no inductor code for this GPU: eager
    assert fixed.replace(compile="off").compile_mode(*pays) is None
    assert fixed.replace(compile=None).compile_mode(*pays) is None
    assert cfg.replace(compile="default").compile_mode("cpu", 1) == "default"  # asked for: always
    assert tiny.config(compile="off").resolved().compile_mode(*pays) is None


def test_auto_compile_counts_the_runs_optimizer_steps(tiny, monkeypatch):
    """The run hands ``compile_mode`` its real step count (batches per epoch x epochs) and precision, and
    compiles with what it returns."""
    import paperlib.loraild.config as config_mod
    import paperlib.loraild.train as train_mod
    seen, compiled = [], []
    real = config_mod.RunConfig.compile_mode

    def spy(self, device_type, num_processes, mixed_precision="no", steps=None, compiler_ready=True):
        seen.append((device_type, num_processes, mixed_precision, steps, compiler_ready))
        return "default" if steps == 2 * 3 else real(self, device_type, num_processes, mixed_precision, steps)

    monkeypatch.setattr(config_mod.RunConfig, "compile_mode", spy)
    monkeypatch.setattr(train_mod, "compile_model", lambda model, mode: compiled.append(mode))
    cfg = tiny.config(method="vanilla_kd", epochs=2, batch_size=8, max_train=24, seed=11,
                      results_dir=str(tiny.root / "results_auto_steps"))
    result = train_mod.run(cfg)
    assert seen == [("cpu", 1, "no", 6, False)]  # 24 examples in batches of 8, two epochs; no GPU to compile for
    assert compiled == ["default"] and result["compile"] == "default"


def test_gpu_compiles_needs_a_cuda_device_that_inductor_supports(monkeypatch):
    """``compile="auto"`` compiles only for a CUDA GPU of compute capability 7.0 or later with Triton."""
    import torch.utils._triton as triton_utils

    from paperlib.loraild.models import gpu_compiles
    assert not gpu_compiles(torch.device("cpu"))
    monkeypatch.setattr(triton_utils, "has_triton_package", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert gpu_compiles(torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (6, 1))  # Pascal: no Triton
    assert not gpu_compiles(torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(triton_utils, "has_triton_package", lambda: False)
    assert not gpu_compiles(torch.device("cuda", 0))


def test_cache_size_follows_what_is_stored_not_the_batch_padding(tiny):
    """A masked run padded to max_length stores real tokens only, so its cache estimate uses them: a limit
    between the real-token size and the max_length size keeps the cache (the estimate used max_length and
    sent such runs to a live teacher); the authors' unmasked ILD stores every position."""
    import numpy as np
    from accelerate import Accelerator

    from paperlib.loraild import teacher_cache as tc
    from paperlib.loraild.prepare import prepare_data
    from paperlib.loraild.teacher import cached_lengths, teacher_outputs, teacher_shape

    cfg = tiny.config(method="loraild_fixed", pad_to_max_length=True, results_dir=str(tiny.root / "capped"))
    real = prepare_data(cfg).encoded["train"].lengths()
    assert real.max() < cfg.max_length  # the fixture's sentences are shorter than max_length
    np.testing.assert_array_equal(cached_lengths(cfg, real), real)
    unmasked = cfg.replace(ild_mask_padding=False)
    assert (cached_lengths(unmasked, real) == cfg.max_length).all()

    train_mod.train_teacher(cfg)
    n_t, h_t = teacher_shape(cfg)
    parts = tc.parts_for(cfg.method_spec)
    need = max(tc.estimate_bytes(p, list(real), n_t, cfg.rank, h_t, 2) for p in parts)
    padded = tc.estimate_bytes("lora", [cfg.max_length] * len(real), n_t, cfg.rank, h_t, 2)
    assert padded > 1.2 * need
    cache, live, _ = teacher_outputs(cfg.replace(teacher_cache_max_gb=1.2 * need / 2**30), Accelerator(cpu=True),
                                     parts, n_t, h_t)
    assert cache is not None and live is None
    stored = cache.parts["lora"]["offsets"].diff()
    np.testing.assert_array_equal(stored.numpy(), real)  # what compute_parts kept: the real tokens


def test_lora_kernel_reaches_the_student_and_is_not_part_of_the_key(tiny):
    """``lora_kernel`` is the fused LoRA's ``kernel``; like ``compile`` it is an execution choice, so finished
    results are found whatever it is set to."""
    from paperlib.loraild.teacher import teacher_shape

    cfg = tiny.config(method="loraild_fixed", lora_kernel="torch").resolved()
    model, _ = train_mod.build_run_model(cfg, *teacher_shape(cfg))
    assert model.recorder.kernel == "torch"
    assert tiny.config(method="loraild_fixed").resolved().lora_kernel == "auto"
    assert cfg.experiment_key() == cfg.replace(lora_kernel="triton").experiment_key()
    model.recorder.remove()
