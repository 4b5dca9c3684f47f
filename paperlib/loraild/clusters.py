"""Cluster analysis of the student's layers (section 5, Table 2).

For every student layer, ``KMeans(n_clusters = n_classes, random_state=0, n_init=10)`` is fitted on

(a) ``hidden``: the layer output (LoRA added, as the model computes it), flattened over
    ``max_length`` positions x hidden size (sequences padded to ``max_length``, as the authors do);
(b) ``ild``: the vectors the intermediate loss uses: for LoRAILD the LoRA-A features ``h_x^S`` of
    each module (query / key / value; flattened ``max_length x r``), for RAIL-KD_l the per-layer
    32-dim projection of the mean-pooled layer output (pooled as in training: over the real tokens,
    or over every position when the run does not mask padding, as the authors do);

and scored with the adjusted Rand index against the gold labels (1 = the clusters are the
classes, about 0 = unrelated).  On a GPU the features stay on the device and k-means is
:func:`paperlib.loraild.kmeans.kmeans` (the same algorithm, all restarts at once); on the CPU it is
scikit-learn's, so CPU results stay identical to earlier ones.  The two agree: ARI 1 between
their partitions on separated data, equal best inertia where the optimum is clear, and gold-label
ARIs within 0.01 on real MiniLM features where near-equal optima exist
(``tests/loraild/test_loraild_kmeans.py``).  Scores are averaged over seeds by :func:`average_scores`.
Regression tasks (STS-B) have no classes and are skipped, as in the paper.

The LoRA-A features come in three modes (``features``, :data:`~paperlib.loraild.config.CLUSTER_FEATURES`):
``"l2"`` (default) each token's features divided by the norm of its whole layers x modules x r
vector (eq. 3's normalisation, as the authors' analyser), every dropout off; ``"l2_dropout"`` the
same with the student's LoRA dropout active, as in the authors' analyser (which never calls
``eval()``; seeded here, so repeatable); ``"raw"`` un-normalised features, dropout off.  The layer
outputs (a) and RAIL-KD_l's projections are the same in every mode, except that ``"l2_dropout"``
also lets LoRA dropout reach a LoRA student's layer outputs, as it did in their analyser.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd
import torch
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from torch.utils.data import DataLoader

from paperlib.loraild.config import CLUSTER_FEATURES
from paperlib.loraild.encoding import batch_to
from paperlib.loraild.features import lora_dropout_active, token_normalised
from paperlib.loraild.kmeans import kmeans_labels
from paperlib.loraild.losses import pooled_layers
from paperlib.loraild.models import LORA_TARGETS

DROPOUT_SEED = 0  # the random LoRA dropout masks of the "l2_dropout" mode


def ari_of_kmeans(features: np.ndarray | torch.Tensor, labels: np.ndarray, n_clusters: int | None = None) -> float:
    """ARI between gold ``labels`` and ``KMeans(k, random_state=0, n_init=10)`` clusters of ``features``.

    A tensor on a GPU is clustered there by :func:`~paperlib.loraild.kmeans.kmeans` (seed 0, 10
    restarts); anything else by scikit-learn on the CPU.
    """
    labels = np.asarray(labels)
    k = n_clusters or len(np.unique(labels))
    if isinstance(features, torch.Tensor) and features.device.type != "cpu":
        pred = kmeans_labels(features.reshape(len(labels), -1), k, n_init=10, seed=0).cpu().numpy()
    else:
        if isinstance(features, torch.Tensor):
            features = features.numpy()
        x = np.asarray(features, dtype=np.float64).reshape(len(labels), -1)
        pred = KMeans(n_clusters=k, random_state=0, n_init=10).fit_predict(x)
    return float(adjusted_rand_score(labels, pred))


@torch.no_grad()
def collect_features(model, loader: DataLoader, device: torch.device | str,
                     features: str = "l2") -> tuple[dict, np.ndarray]:
    """Per (kind, module) the list over layers of ``[N, D]`` arrays, and the gold labels.

    ``model`` is a :class:`~paperlib.loraild.distill.DistillModel` (student, recorder, rail head);
    ``features`` one of :data:`~paperlib.loraild.config.CLUSTER_FEATURES` (module docstring).
    On a GPU the features are float32 tensors left on the device (no host copy; k-means runs
    there), on the CPU numpy arrays.
    """
    if features not in CLUSTER_FEATURES:
        raise ValueError(f"cluster features must be one of {CLUSTER_FEATURES}, not {features!r}")
    model.eval()
    with contextlib.ExitStack() as stack:
        if features == "l2_dropout":
            stack.enter_context(torch.random.fork_rng(devices=[device] if torch.device(device).type == "cuda" else []))
            torch.manual_seed(DROPOUT_SEED)
            stack.enter_context(lora_dropout_active(model))
        return _collect(model, loader, device, normalise=features != "raw")


def _collect(model, loader: DataLoader, device: torch.device | str, normalise: bool) -> tuple[dict, np.ndarray]:
    on_device = torch.device(device).type != "cpu"
    feats: dict[tuple[str, str], list[list[np.ndarray | torch.Tensor]]] = {}
    labels = []

    def add(key: tuple[str, str], layer: int, arr: torch.Tensor) -> None:
        rows = feats.setdefault(key, [])
        while len(rows) <= layer:
            rows.append([])
        flat = arr.float().flatten(1)
        # a copy on the device: under compile="reduce-overhead" the outputs live in CUDA-graph memory
        # that the next batch's forward overwrites (seen on an H100: "accessing tensor output of
        # CUDAGraphs that has been overwritten by a subsequent run")
        rows[layer].append(flat.clone() if on_device else flat.cpu().numpy())

    for batch in loader:
        batch = batch_to(batch, device)
        out = model.student_forward(batch, hidden=True)
        hs = out.hidden_states[1:]
        for li, h in enumerate(hs):
            add(("hidden", "-"), li, h)
        if model.recorder is not None:
            stacked = model.recorder.stacked()  # [B, T, L, 3, r]
            if normalise:
                stacked = token_normalised(stacked)
            for li in range(stacked.shape[2]):
                for mi, name in enumerate(LORA_TARGETS):
                    add(("ild", name), li, stacked[:, :, li, mi])
            model.recorder.clear()
        if model.rail is not None and model.rail.mode == "l":
            mask = batch["attention_mask"] if model.mask_padding else None
            proj = model.rail.project_student(pooled_layers(out.hidden_states, mask))
            for li in range(proj.shape[1]):
                add(("ild", "projection"), li, proj[:, li])
        labels.append(batch["labels"].cpu().numpy())
    cat = torch.cat if on_device else np.concatenate
    merged = {k: [cat(chunks) for chunks in rows] for k, rows in feats.items()}
    return merged, np.concatenate(labels)


def share_fits(sizes: list[int], world: int) -> list[int]:
    """The process that fits each feature set when ``world`` processes share the k-means fits.

    Longest first (by ``sizes``, e.g. examples x dimensions; ties by position), each to the
    least-loaded process so far (ties to the lowest rank): the same answer in every process, and
    the six hidden-state sets (24x the LoRA-A sets' dimensions at the paper's sizes) are spread
    over the processes instead of all landing on one.
    """
    if world < 1:
        raise ValueError(f"world must be at least 1, not {world}")
    load = [0] * world
    owner = [0] * len(sizes)
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        rank = min(range(world), key=lambda r: (load[r], r))
        owner[i] = rank
        load[rank] += sizes[i]
    return owner


def cluster_scores(model, loader: DataLoader, device: torch.device | str, n_classes: int,
                   features: str = "l2", share: tuple[int, int] = (0, 1)) -> pd.DataFrame:
    """ARI per layer, kind and module (columns ``kind``, ``module``, ``layer``, ``ari``).

    ``share=(rank, world)``: only the fits :func:`share_fits` gives process ``rank`` of ``world``
    (each process collects every feature set, then fits its share); the rows of all shares,
    concatenated and sorted by their ``set`` column, are the rows of ``share=(0, 1)``.
    """
    rank, world = share
    if not 0 <= rank < world:
        raise ValueError(f"share must be (rank, world) with 0 <= rank < world, not {share}")
    feats, labels = collect_features(model, loader, device, features)
    sets = [(kind, module, li, x) for (kind, module), layers in feats.items() for li, x in enumerate(layers)]
    owner = share_fits([int(np.prod(x.shape)) for *_, x in sets], world)
    rows = [{"set": i, "kind": kind, "module": module, "layer": li, "ari": ari_of_kmeans(x, labels, n_classes)}
            for i, (kind, module, li, x) in enumerate(sets) if owner[i] == rank]
    return pd.DataFrame(rows, columns=["set", "kind", "module", "layer", "ari"])


def average_scores(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean ARI over seeds: rows (task, method, kind, module), one column per layer."""
    keys = [c for c in ("task", "method", "kind", "module") if c in frame.columns]
    return frame.groupby(keys + ["layer"])["ari"].mean().unstack("layer")


__all__ = ["ari_of_kmeans", "collect_features", "share_fits", "cluster_scores", "average_scores"]
