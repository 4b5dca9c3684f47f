"""Results at a glance: the headline numbers of paper B's chapter for the book's landing page.

Chapter 04 calls :func:`glue_loraild` once at its end; the landing page pastes the glued values
(myst-nb cross-document glue), so every number there is the one the chapter computed in this
build, shown beside the paper's and with the configuration that produced it.
"""

from __future__ import annotations

import pandas as pd

from paperlib.loraild import tables


def table1_summary(t1: "tables.Table1", paper_task: str) -> pd.DataFrame:
    """One row per measured column of Table 1: the best method (bold), the methods significantly
    worse than it (underlined), and the paper's best method in the matching column."""
    paper = tables.paper_table1()
    label = tables.TASK_LABELS.get(paper_task, paper_task)
    rows = []
    for col in t1.means.columns:
        split = col[0]
        means = t1.means[col].dropna()
        if means.empty:
            continue
        best = means.idxmax()
        worse = [m[1] for m in t1.underline.index[t1.underline[col].to_numpy(dtype=bool)]]
        p_col = paper[(split, label)]
        p_best = p_col.idxmax()
        rows.append({"column": f"{split} {col[1]}", "best method (this build)": best[1],
                     "its score": means[best],
                     "significantly worse (p < 2.5%)": ", ".join(worse) if worse else "none",
                     "paper's column": f"{split} {label}", "paper's best": p_best[1],
                     "paper's score": p_col[p_best]})
    return pd.DataFrame(rows).set_index("column")


def table2_headline(t2: pd.DataFrame) -> pd.DataFrame:
    """Table 2's headline: the ARI of the deepest student layer for each (method, kind, module),
    measured here and in the paper (SST-2, the paper's closest task to the embedded data)."""
    if t2.empty:
        return pd.DataFrame()
    deepest = t2.columns.max()
    measured = t2[deepest].droplevel("task") if "task" in t2.index.names else t2[deepest]
    paper = tables.paper_table2().xs(tables.TASK_LABELS["sst2"], level="task")[5]
    out = pd.DataFrame({f"measured: ARI at the last student layer ({deepest})": measured})
    out["paper (SST-2): ARI at layer 5"] = [paper.get(idx, float("nan")) for idx in out.index]
    return out


def glue_loraild(t1: "tables.Table1", t2: pd.DataFrame, task: str, configuration: str, prefix: str = "") -> None:
    """Glue Table 1's summary, Table 2's headline and the configuration for the landing page
    (keys ``<prefix>glance_table1``, ``<prefix>glance_table2``, ``<prefix>glance_loraild_run``)."""
    from myst_nb import glue

    from paperlib.swap.report import show_table

    paper_task = task if task in tables.PAPER_TASKS else "sst2"
    glue(f"{prefix}glance_table1", show_table(table1_summary(t1, paper_task)), display=False)
    head = table2_headline(t2)
    glue(f"{prefix}glance_table2", show_table(head) if not head.empty else "no cluster analysis in this run",
         display=False)
    glue(f"{prefix}glance_loraild_run", configuration, display=False)
