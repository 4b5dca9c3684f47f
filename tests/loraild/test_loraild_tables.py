"""Table 1 marks (bold best, underline significantly worse), Table 2 layout, the paper's numbers."""

from __future__ import annotations

import numpy as np
import pytest

from paperlib.loraild.config import METHOD_NAMES
from paperlib.loraild.tables import (clusters_frame, history_frame, paper_table1, paper_table2, results_frame,
                                     table1, table2)


def _results(n_seeds=5):
    rng = np.random.default_rng(0)
    out = []
    for m, mu in (("wo_kd", 0.70), ("vanilla_kd", 0.80), ("loraild_fixed", 0.805), ("rail_kd_l", 0.60)):
        for s in range(n_seeds):
            v = mu + 0.002 * rng.normal()
            out.append({"task": "rte", "method": m, "seed": s, "lr": 1e-4, "best_epoch": 1, "best_valid": v,
                        "best_test": v - 0.01, "metric": "accuracy",
                        "history": [{"epoch": 0, "train": {"loss": 1.0, "ce": 0.7}, "valid_score": v, "test_score": v,
                                     "selectable": True}],
                        "clusters": [{"kind": "hidden", "module": "-", "layer": 0, "ari": 0.1 * s}]
                        if m == "loraild_fixed" else []})
    return out


def test_table1_marks():
    t = table1(results_frame(_results()))
    col = ("test", "RTE")
    labels = dict(zip([i[1] for i in t.means.index], t.means.index))
    assert t.bold.loc[labels["Fixed"], col] and t.bold[col].sum() == 1
    assert t.underline.loc[labels["w/o KD"], col] and t.underline.loc[labels["RAIL-KD_l"], col]
    assert t.pvalues.loc[labels["w/o KD"], col] == pytest.approx(1 / 252)
    # 0.805 vs 0.800 with sd 0.002 over 5 seeds: may or may not pass, but never both bold and underlined
    assert not (t.bold & t.underline).any().any()
    md = t.to_markdown()
    assert "**" in md and "<u>" in md and "| LoRAILD | Fixed |" in md
    html = t.to_html()
    assert "font-weight: bold" in html and "text-decoration: underline" in html
    # three seeds can never reach 2.5%: nothing is underlined
    assert not table1(results_frame(_results(3))).underline.any().any()


def test_history_and_cluster_frames():
    res = _results(2)
    h = history_frame(res)
    assert set(h.columns) >= {"method", "label", "seed", "epoch", "train_loss", "valid", "test"}
    c = clusters_frame(res)
    t2 = table2(c)
    assert t2.loc[("RTE", "LoRAILD", "hidden", "-"), 0] == pytest.approx(0.05)


def test_paper_tables():
    p1 = paper_table1()
    assert p1.shape == (9, 12)
    assert [i[1] for i in p1.index] == ["w/o KD", "Vanilla KD", "RAIL-KD_c", "RAIL-KD_l", "Curriculum", "Fixed",
                                        "Average", "Random step", "Random epoch"]
    assert p1.loc[("", "w/o KD"), ("valid", "CoLA")] == 0.615
    assert p1.loc[("LoRAILD", "Random epoch"), ("test", "STS-B")] == 0.882
    assert p1.loc[("RAIL-KD", "Curriculum"), ("valid", "RTE")] == 0.748
    p2 = paper_table2()
    assert p2.shape == (30, 6)
    assert p2.loc[("SST-2", "LoRAILD", "hidden", "-"), 5] == 0.707
    assert p2.loc[("QNLI", "LoRAILD", "ild", "key"), 4] == 0.412
    assert len(METHOD_NAMES) == 9
