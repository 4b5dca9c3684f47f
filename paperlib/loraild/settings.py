"""The authors' per-task x per-method settings of the r = 32 Table 1 runs, each value with its source.

Read from their public repository, TKC002/LoRAILD at commit 466114f (paths below are in it).  One
row per (task, method) of :data:`SETTINGS`: student learning rate, weight decay, curriculum start
epoch (0-based; epochs before it train with (0.5, 0.5, 0)), schedule ("sharp" / "smooth"), final
weights ("equal" = (1/3, 1/3, 1/3), "no_kd" = (0.5, 0, 0.5)), and the teacher's learning rate.
:meth:`paperlib.loraild.config.RunConfig.resolved` fills the paper configuration from here.

Where their files disagree, this table follows:

- **learning rates: the training scripts** (``runs/training/main/...``), which launched the runs.
  The analysis scripts of Random step and Random epoch (``runs/analyze/.../32/random*.sh``) repeat
  the Fixed learning rates; the method configurations they name do not exist in the repository,
  so those analysis scripts cannot have been run as written.
- **curriculum start, schedule and final weights: the analysis scripts**
  (``runs/analyze/roberta/CurriculumFullLoRAILD/32/<alignment>.sh``), the only files that record
  one choice per task; the training scripts sweep every start (5-10, or 2-4 for SST-2 and STS-B)
  with both schedules and, for RTE, both final states.
- Curriculum RAIL-KD_c has no analysis script: its start, schedule and RTE final state are not
  recorded (its training scripts sweep them); paperlib gives it LoRAILD Fixed's (marked so below).
- Weight decay is set in code, not in the scripts: the LoRA trainers (Vanilla KD, LoRAILD, the
  teacher) build ``torch.optim.AdamW(params, lr)`` and so get PyTorch's default 0.01 on every
  parameter; the RAIL-KD trainers use ``conf['wd']`` = 0 (``confs/all_Merged.yaml``); w/o KD reads
  ``confs/all.yaml``, which is missing from the repository: 0 is assumed (both ``all_*.yaml`` say 0).
- The teacher's learning rate is read from the checkpoint paths in ``confs/all_LoRA.yaml``
  (``.../LoRAteacher32/models/<task>/<lr>/<run>/<epoch>``); the epoch in that path is the
  hand-picked checkpoint (0-based, of 4), recorded in :data:`TEACHER_CHECKPOINT`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

REPOSITORY = "TKC002/LoRAILD@466114f"
TASK_ORDER: tuple[str, ...] = ("cola", "mrpc", "qnli", "rte", "sst2", "stsb")


def _per_task(*values) -> dict:
    assert len(values) == len(TASK_ORDER)
    return dict(zip(TASK_ORDER, values))


_LORAILD_TRAIN = "runs/training/main/CurriculumFullLoRAILD/32/{}/5-10.sh, 2-4.sh, rte.sh"
_LORAILD_ANALYZE = "runs/analyze/roberta/CurriculumFullLoRAILD/32/{}.sh"

#: student learning rate per method: (per-task values, source)
LR: dict[str, tuple[dict[str, float], str]] = {
    "wo_kd": (_per_task(2e-5, 1e-5, 1e-5, 1e-5, 1e-5, 5e-5), "runs/training/main/nokd_main.sh"),
    "vanilla_kd": (_per_task(5e-5, 2e-4, 1e-5, 1e-4, 5e-5, 5e-5),
                   "runs/training/main/LoRAKD/32/roberta/distilroberta.sh"),
    "rail_kd_c": (_per_task(5e-5, 5e-5, 2e-5, 5e-5, 2e-5, 5e-5), "runs/training/main/RAILKD_c/32.sh"),
    "rail_kd_l": (_per_task(2e-5, 1e-4, 5e-5, 5e-5, 1e-4, 1e-4),
                  "runs/training/main/RAILKD_l/32.sh (runs/analyze/roberta/RAILKD_l/32.sh agrees)"),
    "curriculum_rail_kd_c": (_per_task(5e-5, 5e-5, 2e-5, 5e-5, 5e-5, 5e-5),
                             "runs/training/main/CurriculumRAILKD/32/5-10.sh, 2-4.sh, rte.sh"),
    "loraild_fixed": (_per_task(5e-5, 2e-4, 1e-5, 1e-4, 5e-5, 5e-5),
                      _LORAILD_TRAIN.format("fixed") + " (analysis script agrees)"),
    "loraild_average": (_per_task(5e-5, 2e-4, 1e-5, 1e-4, 5e-5, 5e-5),
                        _LORAILD_TRAIN.format("average") + " (analysis script agrees)"),
    "loraild_random_step": (_per_task(5e-5, 5e-5, 2e-5, 5e-5, 5e-5, 5e-5),
                            _LORAILD_TRAIN.format("random") + " (analysis script: Fixed's rates)"),
    "loraild_random_epoch": (_per_task(5e-5, 5e-5, 2e-5, 5e-5, 5e-5, 5e-5),
                             _LORAILD_TRAIN.format("random_epoch") + " (analysis script: Fixed's rates)"),
}

_WD_LORA = "lib/glue_trainer.py LoRAKDTrainer.construct_optimizer: AdamW(student.parameters(), lr), PyTorch default 0.01"
_WD_RAIL = "lib/glue_trainer.py RAILKDTrainer / RAILKD_l_Trainer: conf['wd'] = 0 (confs/all_Merged.yaml)"
#: weight decay per method (the same for every task): (value, source)
WEIGHT_DECAY: dict[str, tuple[float, str]] = {
    "wo_kd": (0.0, "lib/glue_trainer.py NormalTrainer: conf['wd'] from confs/all.yaml, missing from the "
                   "repository; 0 assumed (confs/all_LoRA.yaml and all_Merged.yaml both set wd: 0)"),
    "vanilla_kd": (0.01, _WD_LORA),
    "rail_kd_c": (0.0, _WD_RAIL),
    "rail_kd_l": (0.0, _WD_RAIL),
    "curriculum_rail_kd_c": (0.0, _WD_RAIL),
    "loraild_fixed": (0.01, _WD_LORA),
    "loraild_average": (0.01, _WD_LORA),
    "loraild_random_step": (0.01, _WD_LORA),
    "loraild_random_epoch": (0.01, _WD_LORA),
}
TEACHER_WEIGHT_DECAY = (0.01, "lib/glue_trainer.py LoRANormalTrainer.construct_optimizer: AdamW(model.parameters(), "
                              "lr), PyTorch default 0.01")

#: curriculum per method: (start epochs, schedules, final states per task, source)
CURRICULUM: dict[str, tuple[dict[str, int], dict[str, str], dict[str, str], str]] = {
    "loraild_fixed": (_per_task(6, 10, 9, 10, 4, 2), _per_task(*["sharp"] * 6),
                      _per_task("equal", "equal", "equal", "no_kd", "equal", "equal"),
                      _LORAILD_ANALYZE.format("fixed")),
    "loraild_average": (_per_task(8, 6, 7, 9, 2, 4),
                        _per_task("sharp", "smooth", "smooth", "smooth", "sharp", "smooth"),
                        _per_task(*["equal"] * 6), _LORAILD_ANALYZE.format("average")),
    "loraild_random_step": (_per_task(8, 6, 7, 10, 4, 4),
                            _per_task("sharp", "smooth", "smooth", "sharp", "sharp", "sharp"),
                            _per_task("equal", "equal", "equal", "no_kd", "equal", "equal"),
                            _LORAILD_ANALYZE.format("random")),
    "loraild_random_epoch": (_per_task(10, 9, 6, 9, 2, 3),
                             _per_task("sharp", "smooth", "smooth", "smooth", "smooth", "smooth"),
                             _per_task(*["equal"] * 6), _LORAILD_ANALYZE.format("random_epoch")),
}
CURRICULUM["curriculum_rail_kd_c"] = CURRICULUM["loraild_fixed"][:3] + (
    "not recorded (runs/training/main/CurriculumRAILKD/32/*.sh sweep starts 5-10 / 2-4, sharp and smooth, "
    "RTE both finals); paperlib's choice: LoRAILD Fixed's (" + _LORAILD_ANALYZE.format("fixed") + ")",)

#: the r = 32 teacher's learning rate per task (shared by every method)
TEACHER_LR: tuple[dict[str, float], str] = (
    _per_task(1e-4, 5e-4, 2e-4, 5e-4, 1e-4, 5e-4),
    "confs/all_LoRA.yaml (teacher_peft: roberta32) and confs/all_Merged.yaml (teacher: roberta32), "
    "checkpoint paths .../<task>/<lr>/<run>/<epoch>")
#: the hand-picked teacher checkpoint per task: (run 1-5, epoch 0-3 of 4), from the same paths
TEACHER_CHECKPOINT: dict[str, tuple[int, int]] = _per_task((3, 2), (4, 3), (4, 2), (4, 3), (5, 3), (4, 3))


@dataclass(frozen=True)
class MethodSettings:
    """One (task, method) row: the authors' settings and where each value was read."""

    task: str
    method: str
    lr: float
    weight_decay: float
    ild_start: int | None  # None: the method has no curriculum
    curriculum: str | None
    curriculum_final: str | None
    teacher_lr: float
    lr_source: str
    weight_decay_source: str
    curriculum_source: str
    teacher_lr_source: str

    def as_row(self) -> dict:
        return asdict(self)


def _row(task: str, method: str) -> MethodSettings:
    lrs, lr_src = LR[method]
    wd, wd_src = WEIGHT_DECAY[method]
    if method in CURRICULUM:
        starts, modes, finals, cur_src = CURRICULUM[method]
        start, mode, final = starts[task], modes[task], finals[task]
    else:
        start = mode = final = None
        cur_src = "no curriculum: fixed weights (w/o KD (1, 0, 0), Vanilla KD (0.5, 0.5, 0), RAIL-KD 1/3 each)"
    return MethodSettings(task, method, lrs[task], wd, start, mode, final, TEACHER_LR[0][task], lr_src, wd_src,
                          cur_src, TEACHER_LR[1])


#: every (task, method) of Table 1 at r = 32
SETTINGS: dict[tuple[str, str], MethodSettings] = {(t, m): _row(t, m) for t in TASK_ORDER for m in LR}


def paper_settings(task: str, method: str) -> MethodSettings:
    """The authors' settings of ``method`` on GLUE ``task`` (one clear error for anything else)."""
    try:
        return SETTINGS[(task, method)]
    except KeyError:
        raise KeyError(f"no authors' settings for task {task!r}, method {method!r}; tasks: {', '.join(TASK_ORDER)}; "
                       f"methods: {', '.join(LR)}") from None


def settings_frame(tasks: tuple[str, ...] | list[str] = TASK_ORDER, methods: tuple[str, ...] | list[str] | None = None,
                   sources: bool = True):
    """The table as a pandas DataFrame (one row per task x method; ``sources=False`` drops the source columns)."""
    import pandas as pd

    methods = list(methods or LR)
    rows = [SETTINGS[(t, m)].as_row() for t in tasks for m in methods]
    frame = pd.DataFrame(rows)
    if not sources:
        frame = frame[[c for c in frame.columns if not c.endswith("_source")]]
    return frame


__all__ = ["MethodSettings", "SETTINGS", "LR", "WEIGHT_DECAY", "CURRICULUM", "TEACHER_LR", "TEACHER_CHECKPOINT",
           "TEACHER_WEIGHT_DECAY", "REPOSITORY", "TASK_ORDER", "paper_settings", "settings_frame"]
