"""The authors' per-task x per-method settings table and how RunConfig.resolved() uses it."""

from __future__ import annotations

import pytest

from paperlib.loraild.config import METHOD_NAMES, METHODS, RunConfig
from paperlib.loraild.settings import SETTINGS, TASK_ORDER, paper_settings, settings_frame

# values read off the authors' scripts (TKC002/LoRAILD@466114f), written out here independently:
# runs/analyze/roberta/CurriculumFullLoRAILD/32/<alignment>.sh (start, schedule, final) and
# runs/training/main/... (learning rates); order CoLA, MRPC, QNLI, RTE, SST-2, STS-B
STARTS = {"loraild_fixed": (6, 10, 9, 10, 4, 2), "loraild_average": (8, 6, 7, 9, 2, 4),
          "loraild_random_step": (8, 6, 7, 10, 4, 4), "loraild_random_epoch": (10, 9, 6, 9, 2, 3)}
SMOOTH = {"loraild_fixed": (), "loraild_average": ("mrpc", "qnli", "rte", "stsb"),
          "loraild_random_step": ("mrpc", "qnli"), "loraild_random_epoch": ("mrpc", "qnli", "rte", "sst2", "stsb")}
RTE_NO_KD = {"loraild_fixed": True, "loraild_average": False, "loraild_random_step": True,
             "loraild_random_epoch": False}
LRS = {"wo_kd": (2e-5, 1e-5, 1e-5, 1e-5, 1e-5, 5e-5), "vanilla_kd": (5e-5, 2e-4, 1e-5, 1e-4, 5e-5, 5e-5),
       "rail_kd_c": (5e-5, 5e-5, 2e-5, 5e-5, 2e-5, 5e-5), "rail_kd_l": (2e-5, 1e-4, 5e-5, 5e-5, 1e-4, 1e-4),
       "curriculum_rail_kd_c": (5e-5, 5e-5, 2e-5, 5e-5, 5e-5, 5e-5),
       "loraild_fixed": (5e-5, 2e-4, 1e-5, 1e-4, 5e-5, 5e-5), "loraild_average": (5e-5, 2e-4, 1e-5, 1e-4, 5e-5, 5e-5),
       "loraild_random_step": (5e-5, 5e-5, 2e-5, 5e-5, 5e-5, 5e-5),
       "loraild_random_epoch": (5e-5, 5e-5, 2e-5, 5e-5, 5e-5, 5e-5)}
TEACHER_LR = (1e-4, 5e-4, 2e-4, 5e-4, 1e-4, 5e-4)  # confs/all_LoRA.yaml, roberta32 checkpoint paths


def test_table_has_every_task_and_method_with_sources():
    assert set(SETTINGS) == {(t, m) for t in TASK_ORDER for m in METHOD_NAMES}
    frame = settings_frame()
    assert len(frame) == 6 * 9
    for col in ("lr_source", "weight_decay_source", "curriculum_source", "teacher_lr_source"):
        assert frame[col].str.len().min() > 10
    assert "lr_source" not in settings_frame(sources=False).columns
    with pytest.raises(KeyError, match="tasks: cola"):
        paper_settings("rotten_tomatoes", "loraild_fixed")


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_values_are_the_authors(method):
    for i, task in enumerate(TASK_ORDER):
        row = paper_settings(task, method)
        assert row.lr == LRS[method][i], (task, method)
        assert row.teacher_lr == TEACHER_LR[i]
        assert row.weight_decay == (0.01 if method == "vanilla_kd" or method.startswith("loraild") else 0.0)
        if method in STARTS:
            assert row.ild_start == STARTS[method][i]
            assert row.curriculum == ("smooth" if task in SMOOTH[method] else "sharp")
            assert row.curriculum_final == ("no_kd" if task == "rte" and RTE_NO_KD[method] else "equal")
        elif method == "curriculum_rail_kd_c":  # not recorded by the authors: LoRAILD Fixed's
            assert (row.ild_start, row.curriculum) == (STARTS["loraild_fixed"][i], "sharp")
            assert "not recorded" in row.curriculum_source
        else:
            assert row.ild_start is None and row.curriculum is None


@pytest.mark.parametrize("task", TASK_ORDER)
def test_paper_configuration_resolves_from_the_table(task):
    base = RunConfig(task=task).resolved()
    teacher_keys = set()
    for method in METHOD_NAMES:
        row = paper_settings(task, method)
        cfg = RunConfig(task=task, method=method).resolved()
        assert (cfg.lr, cfg.weight_decay, cfg.teacher_lr) == (row.lr, row.weight_decay, row.teacher_lr)
        if METHODS[method].curriculum:
            assert (cfg.ild_start, cfg.curriculum, cfg.curriculum_final) == (
                row.ild_start, row.curriculum, row.curriculum_final)
        # a sweep replaces the method of a resolved base: the method's own settings must come back
        again = base.replace(method=method, seed=3).resolved()
        assert again.to_dict() | {"seed": 0} == cfg.to_dict() | {"filled": list(again.filled)}
        teacher_keys.add(str(sorted(cfg.teacher_key().items())))
    assert len(teacher_keys) == 1  # one teacher per task, whatever the method's weight decay
    # explicit values win over the table
    mine = RunConfig(task=task, method="loraild_average", lr=3e-5, weight_decay=0.1, ild_start=3,
                     curriculum="sharp", curriculum_final="equal").resolved()
    assert (mine.lr, mine.weight_decay, mine.ild_start, mine.curriculum, mine.curriculum_final) == (
        3e-5, 0.1, 3, "sharp", "equal")
    assert mine.replace(seed=1).resolved().lr == 3e-5


def test_embedded_configuration_weight_decay_per_method():
    base = RunConfig().resolved()
    for method in METHOD_NAMES:
        cfg = base.replace(method=method).resolved()
        assert cfg.lr == 2e-4 and cfg.ild_start == 1 and cfg.curriculum == "sharp"
        assert cfg.weight_decay == (0.01 if METHODS[method].kd and METHODS[method].inter in (None, "lora_ild") else 0.0)
    with pytest.raises(ValueError, match="cluster_features"):
        RunConfig(cluster_features="mean").resolved()
    with pytest.raises(ValueError, match="curriculum"):
        RunConfig(curriculum="steep").resolved()


def test_a_field_replaced_after_resolving_survives_a_new_method():
    """``resolved().replace(epochs=6)`` and then a sweep's ``replace(method=...)``: the 6 epochs stay (they
    were filled back from the profile before), while the new method's own settings are filled again."""
    base = RunConfig(task="rotten_tomatoes", method="vanilla_kd").resolved()
    assert "epochs" in base.filled and base.weight_decay == 0.01
    longer = base.replace(epochs=3 * base.epochs)
    assert "epochs" not in longer.filled
    rail = longer.replace(method="rail_kd_c", seed=1).resolved()
    assert rail.epochs == 3 * base.epochs and rail.weight_decay == 0.0  # RAIL-KD's own, filled again
    mine = base.replace(weight_decay=0.05).replace(method="rail_kd_c").resolved()
    assert mine.weight_decay == 0.05 and mine.epochs == base.epochs
    assert base.replace(method="rail_kd_c").resolved().weight_decay == 0.0  # nothing replaced: all refilled


def test_settings_from_another_task_win_over_the_embedded_profile():
    from paperlib.loraild.config import RunConfig
    from paperlib.loraild.settings import paper_settings

    for method in ("wo_kd", "rail_kd_c", "loraild_random_epoch"):
        row = paper_settings("sst2", method)
        cfg = RunConfig(task="rotten_tomatoes", method=method, settings_from="sst2", epochs=20).resolved()
        assert (cfg.lr, cfg.weight_decay, cfg.teacher_lr) == (row.lr, row.weight_decay, row.teacher_lr)
        if row.ild_start is not None:
            assert (cfg.ild_start, cfg.curriculum) == (row.ild_start, row.curriculum)
        plain = RunConfig(task="rotten_tomatoes", method=method, epochs=20).resolved()
        assert plain.lr != row.lr or plain.teacher_lr != row.teacher_lr  # the embedded profile's own
    with pytest.raises(ValueError, match="settings_from must be one of"):
        RunConfig(task="rotten_tomatoes", settings_from="imdb").resolved()


def test_embedded_gpu_profile_is_the_whole_task_with_sst2_settings():
    from paperlib.loraild.config import RunConfig
    from paperlib.loraild.settings import paper_settings

    cfg = RunConfig(task="rotten_tomatoes", method="rail_kd_c", profile="embedded-gpu").resolved()
    assert (cfg.teacher, cfg.student, cfg.rank, cfg.batch_size) == ("mpnet-base", "mpnet-base-half", 32, 128)
    assert cfg.max_train is None and cfg.max_valid is None and cfg.max_test is None  # no caps
    assert cfg.lr == paper_settings("sst2", "rail_kd_c").lr and cfg.settings_from == "sst2"
    again = cfg.replace(method="loraild_fixed").resolved()  # the chosen profile survives a new method
    assert again.profile == "embedded-gpu" and again.lr == paper_settings("sst2", "loraild_fixed").lr
    derived = RunConfig(task="rotten_tomatoes").resolved()
    assert derived.profile == "embedded" and derived.replace(task="sst2").resolved().profile == "paper"
    with pytest.raises(ValueError, match="profile must be one of"):
        RunConfig(profile="laptop").resolved()
