"""Where this reproduction differs from a paper's text or from its authors' code.

Each chapter's deviations live as data next to the code they describe
(:data:`paperlib.swap.deviations.DEVIATIONS`, :data:`paperlib.loraild.deviations.DEVIATIONS`);
the book renders them as one table per paper, so the page and the package cannot drift.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Deviation:
    """One difference between the reproduction and the paper or the authors' code.

    - ``topic``: short name of what differs (e.g. "eq. 12 objective");
    - ``original``: what the paper's text or the authors' code does (say which);
    - ``ours``: what paperlib does by default;
    - ``why``: the reason for the choice;
    - ``effect``: the measured effect where measured (say on what), else "not measured";
    - ``restore``: the parameter / option that restores the original, or "" if none.
    """

    topic: str
    original: str
    ours: str
    why: str
    effect: str
    restore: str = ""

    def as_row(self) -> dict[str, str]:
        return asdict(self)


def as_frame(deviations: list[Deviation]):
    """The deviations as a pandas DataFrame, one row each (columns as the dataclass fields)."""
    import pandas as pd

    return pd.DataFrame([d.as_row() for d in deviations])


def styler(deviations: list[Deviation]):
    """The deviations as a pandas ``Styler`` for the book: one row each, text wrapped, topic first."""
    frame = as_frame(deviations).set_index("topic")
    frame.columns = ["paper / authors' code", "this reproduction", "why", "effect", "restores the original"]
    return (frame.style
            .set_properties(**{"white-space": "normal", "text-align": "left", "vertical-align": "top",
                               "min-width": "7em", "padding": "0.3em 0.4em"})
            .set_table_styles([
                {"selector": "", "props": [("font-size", "0.8em"), ("border-collapse", "collapse")]},
                {"selector": "th", "props": [("text-align", "left"), ("vertical-align", "top")]},
                {"selector": "tbody tr", "props": [("border-top", "1px solid #ccc")]},
            ]))
