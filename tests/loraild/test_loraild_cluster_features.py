"""What the cluster analysis clusters: per-token L2-normalised LoRA-A features, with or without LoRA dropout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from paperlib.loraild.clusters import cluster_scores, collect_features
from paperlib.loraild.config import METHODS, TASKS
from paperlib.loraild.distill import DistillModel
from paperlib.loraild.encoding import Collator, encode, make_loader
from paperlib.loraild.features import LoraFeatureRecorder, lora_dropout_active, token_normalised
from paperlib.loraild.models import build_student, load_classifier, load_tokenizer, student_lora
from paperlib.loraild.tasks import load_task


def _loader(tiny, n=12, max_length=16):
    tok = load_tokenizer(tiny.teacher)
    enc = encode(load_task("sst2", str(tiny.glue)).train.iloc[:n], tok, max_length)
    return make_loader(enc, 5, Collator(tok.pad_token_id, max_length, pad_to_max=True))


def _model(tiny, dropout=0.3):
    torch.manual_seed(0)
    student = build_student(tiny.student, 2, rank=4, dropout=dropout)
    with torch.no_grad():  # LoRA B starts at zero: give it weights so that LoRA reaches the layer outputs
        for name, p in student.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return DistillModel(student, METHODS["loraild_fixed"], TASKS["sst2"], 4, 32)


def test_token_normalised_divides_by_the_whole_token_vector():
    f = torch.randn(2, 3, 4, 3, 5)
    out = token_normalised(f)
    for b in range(2):
        for t in range(3):
            v = f[b, t].reshape(-1)  # layers x modules x r of one token
            assert torch.allclose(out[b, t].reshape(-1), v / v.norm(), atol=1e-6)
    assert torch.allclose(out.flatten(2).norm(dim=-1), torch.ones(2, 3))
    assert torch.equal(token_normalised(torch.zeros(1, 1, 2, 3, 4)), torch.zeros(1, 1, 2, 3, 4))


def test_l2_mode_is_the_raw_features_normalised_per_token(tiny):
    model, loader = _model(tiny), _loader(tiny)
    raw, labels = collect_features(model, loader, "cpu", "raw")
    l2, labels2 = collect_features(model, loader, "cpu", "l2")
    assert np.array_equal(labels, labels2) and len(labels) == 12
    n_layers, r, t = 2, 4, 16
    # rebuild each token's whole vector from the raw per-(layer, module) rows: [N, T, layers * 3 * r]
    per = [raw[("ild", m)][li].reshape(12, t, r) for li in range(n_layers) for m in ("query", "key", "value")]
    whole = np.concatenate(per, axis=-1)
    norm = np.linalg.norm(whole, axis=-1, keepdims=True)
    for li in range(n_layers):
        for m in ("query", "key", "value"):
            assert np.allclose(l2[("ild", m)][li], (raw[("ild", m)][li].reshape(12, t, r) / norm).reshape(12, -1),
                               atol=1e-6)
    for li in range(n_layers):  # the layer outputs do not depend on the mode (dropout off)
        assert np.array_equal(raw[("hidden", "-")][li], l2[("hidden", "-")][li])


def test_dropout_mode_is_the_authors_analyser_state_and_repeatable(tiny):
    model, loader = _model(tiny), _loader(tiny)
    l2, _ = collect_features(model, loader, "cpu", "l2")
    drop, _ = collect_features(model, loader, "cpu", "l2_dropout")
    again, _ = collect_features(model, loader, "cpu", "l2_dropout")
    assert all(np.array_equal(a, b) for k in drop for a, b in zip(drop[k], again[k]))  # seeded
    assert not np.allclose(drop[("ild", "query")][0], l2[("ild", "query")][0])
    assert not np.allclose(drop[("hidden", "-")][1], l2[("hidden", "-")][1])  # LoRA dropout reaches the layers
    assert not any(m.training for m in model.modules())  # every dropout off again afterwards
    # the authors' analyser: from_pretrained (eval) + get_peft_model (fresh LoRA dropout in training
    # mode), never eval(); same weights and the same random stream give the same features
    theirs = student_lora(load_classifier(tiny.student, 2), 4, 0.3)
    theirs.load_state_dict(model.student.state_dict())
    states = {n: m.training for n, m in theirs.named_modules() if n.endswith("lora_dropout.default")}
    assert states and all(states.values())
    assert not theirs.base_model.model.roberta.encoder.layer[0].output.dropout.training
    feats = []
    torch.manual_seed(0)
    with torch.no_grad(), LoraFeatureRecorder(theirs) as rec:
        for batch in loader:
            theirs(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            feats.append(token_normalised(rec.stacked())[:, :, 0, 0].flatten(1))
    assert np.allclose(torch.cat(feats).numpy(), drop[("ild", "query")][0], atol=1e-5)


def test_dropout_context_restores_the_modes(tiny):
    model = _model(tiny)
    model.eval()
    with lora_dropout_active(model) as n:
        assert n == 2 * 3
        assert all(m.training for name, m in model.named_modules() if name.endswith("lora_dropout.default"))
    assert not any(m.training for m in model.modules())
    model.train()
    with lora_dropout_active(model):
        pass
    assert all(m.training for m in model.modules())


def test_scores_in_every_mode_and_bad_mode(tiny):
    model, loader = _model(tiny), _loader(tiny)
    for mode in ("l2", "l2_dropout", "raw"):
        frame = cluster_scores(model, loader, "cpu", 2, mode)
        assert set(frame["kind"]) == {"hidden", "ild"} and frame["ari"].between(-1, 1).all()
    with pytest.raises(ValueError, match="cluster features must be one of"):
        collect_features(model, loader, "cpu", "mean")


def test_share_fits_spreads_the_largest_sets_and_is_complete():
    from paperlib.loraild.clusters import share_fits

    # six hidden-state sets 24x the size of eighteen LoRA-A sets, as at the paper's sizes (128 x 768
    # against 128 x 32 per example): one process alone would fit all six hidden sets
    sizes = [24] * 6 + [1] * 18
    owner = share_fits(sizes, 2)
    loads = [sum(s for s, o in zip(sizes, owner) if o == r) for r in range(2)]
    assert sorted(owner[:6]) == [0, 0, 0, 1, 1, 1] and loads == [81, 81]
    assert share_fits(sizes, 1) == [0] * 24
    assert share_fits([5, 5, 5], 4) == [0, 1, 2]  # more processes than sets: some fit none
    assert share_fits(sizes, 3) == share_fits(list(sizes), 3)  # the same in every process
    with pytest.raises(ValueError, match="at least 1"):
        share_fits(sizes, 0)


def test_shares_together_are_the_whole_analysis(tiny):
    model, loader = _model(tiny), _loader(tiny)
    whole = cluster_scores(model, loader, "cpu", 2)
    assert list(whole["set"]) == list(range(len(whole)))
    parts = [cluster_scores(model, loader, "cpu", 2, share=(r, 3)) for r in range(3)]
    assert all(len(p) for p in parts)
    merged = pd.concat(parts).sort_values("set").reset_index(drop=True)
    pd.testing.assert_frame_equal(merged, whole)
    with pytest.raises(ValueError, match="0 <= rank < world"):
        cluster_scores(model, loader, "cpu", 2, share=(2, 2))
