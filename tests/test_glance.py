"""The landing page's summary of paper B's tables (paperlib.glance), on hand-made results."""

from __future__ import annotations

import pandas as pd

from paperlib.glance import table1_summary, table2_headline
from paperlib.loraild import tables


def _results(scores: dict[str, list[float]]) -> pd.DataFrame:
    rows = []
    for method, values in scores.items():
        for seed, v in enumerate(values):
            rows.append({"task": "rotten_tomatoes", "method": method, "seed": seed, "lr": 1e-4, "best_epoch": 1,
                         "best_valid": v, "best_test": v})
    return pd.DataFrame(rows)


def test_table1_summary_names_the_best_and_the_significantly_worse():
    frame = _results({"wo_kd": [0.60, 0.61, 0.62, 0.63], "vanilla_kd": [0.70, 0.71, 0.72, 0.73],
                      "loraild_fixed": [0.69, 0.72, 0.70, 0.735]})
    t1 = tables.table1(frame, methods=("wo_kd", "vanilla_kd", "loraild_fixed"), tasks=["rotten_tomatoes"])
    out = table1_summary(t1, "sst2")
    assert len(out) == 2  # valid and test columns of the one task
    row = out.iloc[1]
    assert row["best method (this build)"] == "Vanilla KD"
    # every run of w/o KD is below every run of Vanilla KD: p = 1/70 < 2.5%; LoRAILD overlaps it
    assert row["significantly worse (p < 2.5%)"] == "w/o KD"
    paper = tables.paper_table1()[("test", "SST-2")]
    assert row["paper's score"] == paper.max()


def test_table2_headline_takes_the_deepest_layer_beside_the_paper():
    idx = pd.MultiIndex.from_tuples([("RT", "LoRAILD", "hidden", "-"), ("RT", "RAIL-KD_l", "ild", "projection")],
                                    names=["task", "method", "kind", "module"])
    t2 = pd.DataFrame([[0.1, 0.2, 0.3], [0.0, 0.01, 0.02]], index=idx, columns=[0, 1, 2])
    out = table2_headline(t2)
    assert out.iloc[:, 0].tolist() == [0.3, 0.02]
    paper = tables.paper_table2().xs("SST-2", level="task")[5]
    assert out.iloc[0, 1] == paper[("LoRAILD", "hidden", "-")]
    assert table2_headline(pd.DataFrame()).empty
