"""A compiled student is evaluated (and its cluster features read) with its eager code: evaluation
mode, no gradients and a shorter last batch would each trace the model again.  So is an epoch's
shorter last training batch."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounter

import paperlib.loraild.loop as loop
import paperlib.loraild.train as train
from paperlib.loraild.models import eager_calls


class _Net(torch.nn.Module):  # defined here: dynamo traces user code, not torch's own modules
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)

    def forward(self, x):
        return torch.relu(self.lin(x))


def test_eager_calls_runs_compiled_modules_eagerly_and_restores_compiling():
    cnt = CompileCounter()
    net = _Net()
    net.compile(backend=cnt, dynamic=False)
    net(torch.randn(4, 8))
    assert cnt.frame_count == 1
    with eager_calls(True):
        net(torch.randn(3, 8))  # another shape: would be traced again when compiled
    assert cnt.frame_count == 1
    with eager_calls(False):
        net(torch.randn(3, 8))
    assert cnt.frame_count == 2  # compiling again outside (and after) the block


def _around_steps(monkeypatch, around) -> None:
    """Each training step of the next runs goes through ``around(batch, step)``, ``step()`` being the run's own."""
    real_fit = loop.fit

    def fit(*a, **k):
        step_fn = k["step_fn"]
        k["step_fn"] = lambda batch, epoch: around(batch, lambda: step_fn(batch, epoch))
        return real_fit(*a, **k)

    monkeypatch.setattr(train, "fit", fit)


def test_a_compiled_run_traces_only_its_training_steps(tiny, monkeypatch):
    cnt = CompileCounter()
    monkeypatch.setattr(train, "compile_model", lambda model, mode: model.compile(backend=cnt, dynamic=False) or model)
    during: list[tuple[str, int, int]] = []

    def counted(name, fn):
        def wrapper(*a, **k):
            before = cnt.frame_count
            out = fn(*a, **k)
            during.append((name, before, cnt.frame_count))
            return out
        return wrapper

    monkeypatch.setattr(loop, "predict", counted("evaluation", loop.predict))
    monkeypatch.setattr(train, "cluster_analysis", counted("clusters", train.cluster_analysis))
    cfg = tiny.config(method="loraild_fixed", compile="default", epochs=2, seed=3,
                      results_dir=str(tiny.root / "results_compiled_eval"))
    result = train.run(cfg)
    assert result["compile"] == "default"
    assert cnt.frame_count >= 1  # the training steps were compiled ...
    names = {n for n, _, _ in during}
    assert {"evaluation", "clusters"} <= names
    assert all(before == after for _, before, after in during), during  # ... evaluation never was


def test_a_shorter_last_training_batch_runs_eager(tiny, monkeypatch):
    """20 examples in batches of 8: two full batches and one of 4 per epoch.  The compiled student is
    traced once, for the full batches (the 4-row batch would trace it again), and the run's losses
    equal those of an eager run of the same seed."""
    cnt = CompileCounter()
    monkeypatch.setattr(train, "compile_model", lambda model, mode: model.compile(backend=cnt, dynamic=False) or model)
    shapes: list[tuple[int, bool]] = []
    base = tiny.config(method="vanilla_kd", epochs=2, seed=5, batch_size=8, max_train=20, lora_dropout=0.0,
                       pad_to_max_length=True)
    eager = train.run(base.replace(compile="off", results_dir=str(tiny.root / "results_ragged_eager")))

    def counted(batch, step):
        before = cnt.frame_count
        out = step()
        shapes.append((batch["input_ids"].shape[0], cnt.frame_count > before))
        return out

    _around_steps(monkeypatch, counted)
    compiled = train.run(base.replace(compile="default", results_dir=str(tiny.root / "results_ragged_compiled")))
    assert compiled["compile"] == "default"
    assert [n for n, _ in shapes] == [8, 8, 4] * 2
    assert cnt.frame_count == 1 and [traced for _, traced in shapes] == [True] + [False] * 5
    for e, c in zip(eager["history"], compiled["history"]):  # no dropout: the same computation
        assert c["train"]["loss"] == pytest.approx(e["train"]["loss"], rel=1e-4)


def test_a_compiled_student_gets_batches_padded_to_multiples_of_16(tiny, tmp_path, monkeypatch, writers):
    """Padding to the longest item: a compiled run pads each batch to the next multiple of 16 (at most
    max_length) and always passes the mask, an eager run pads to the longest item; with every dropout
    off the two train alike (padding is masked)."""
    from paperlib.loraild.config import COMPILE_PAD_MULTIPLE
    models = writers.write_models(tmp_path / "models", dropout=False)  # dropout draws depend on tensor sizes
    monkeypatch.setattr(train, "compile_model", lambda model, mode: model)  # the data path, not the compiler
    lengths: dict[str, list[int]] = {"off": [], "default": []}

    def run(mode):
        def seen(batch, step):
            lengths[mode].append(batch["input_ids"].shape[1])
            assert mode == "off" or batch["padded"] is True
            return step()

        _around_steps(monkeypatch, seen)
        cfg = tiny.config(method="loraild_fixed", epochs=1, seed=6, max_length=40, lora_dropout=0.0, compile=mode,
                          group_by_length=False, teacher=models["teacher"], student=models["student"],
                          results_dir=str(tmp_path / f"results_{mode}"))
        return train.run(cfg)

    eager, compiled = run("off"), run("default")
    assert any(n % COMPILE_PAD_MULTIPLE for n in lengths["off"])  # the data has lengths between multiples
    assert all(n % COMPILE_PAD_MULTIPLE == 0 or n == 40 for n in lengths["default"])
    assert [min(40, -(-n // 16) * 16) for n in lengths["off"]] == lengths["default"]
    assert compiled["history"][0]["train"]["loss"] == pytest.approx(eager["history"][0]["train"]["loss"], rel=1e-4)
