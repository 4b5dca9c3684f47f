"""Layer alignments (section 3.2, appendix A table 3) and the curriculum weights (section 3.3)."""

from __future__ import annotations

import random

import pytest

from paperlib.loraild.alignment import (LayerAligner, average_alignment, fixed_alignment, rail_layers,
                                        random_alignment)
from paperlib.loraild.config import METHODS
from paperlib.loraild.curriculum import curriculum_weights, method_weights, selectable


def test_paper_alignment_24_to_6():
    assert fixed_alignment(24, 6) == {0: 3, 1: 7, 2: 11, 3: 15, 4: 19, 5: 23}
    assert average_alignment(24, 6) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15],
                                        [16, 17, 18, 19], [20, 21, 22, 23]]


def test_alignment_12_to_6_and_6_to_3():
    assert fixed_alignment(12, 6) == {0: 1, 1: 3, 2: 5, 3: 7, 4: 9, 5: 11}
    assert average_alignment(12, 6) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11]]
    assert fixed_alignment(6, 3) == {0: 1, 1: 3, 2: 5}
    assert average_alignment(6, 3) == [[0, 1], [2, 3], [4, 5]]
    assert fixed_alignment(4, 2) == {0: 1, 1: 3}


@pytest.mark.parametrize("n_t,n_s", [(24, 6), (12, 6), (6, 3), (7, 3), (10, 4), (5, 5)])
def test_general_rule_covers_every_teacher_layer_once(n_t, n_s):
    groups = average_alignment(n_t, n_s)
    assert [t for g in groups for t in g] == list(range(n_t))
    assert all(groups)
    fixed = fixed_alignment(n_t, n_s)
    assert [fixed[i] for i in range(n_s)] == [g[-1] for g in groups]
    assert fixed[n_s - 1] == n_t - 1


def test_bad_depths_raise():
    with pytest.raises(ValueError):
        fixed_alignment(3, 6)
    with pytest.raises(ValueError):
        LayerAligner("diagonal", 6, 3)


def test_random_alignments_are_sorted_distinct_and_reproducible():
    draws = [random_alignment(24, 6, random.Random(s)) for s in range(50)]
    for d in draws:
        assert d == sorted(d) and len(set(d)) == 6 and all(0 <= t < 24 for t in d)
    assert len({tuple(d) for d in draws}) > 40

    step = LayerAligner("random_step", 24, 6, seed=3)
    step.start_epoch(0)
    a = [tuple(g[0] for g in step.groups()) for _ in range(5)]
    assert len(set(a)) > 1  # a new draw at every step
    step.start_epoch(0)
    assert [tuple(g[0] for g in step.groups()) for _ in range(5)] == a  # resumable

    epoch = LayerAligner("random_epoch", 24, 6, seed=3)
    e0 = epoch.start_epoch(0)
    assert all(epoch.groups() == e0 for _ in range(4))  # fixed within the epoch
    per_epoch = {tuple(g[0] for g in epoch.start_epoch(e)) for e in range(10)}
    assert len(per_epoch) > 1  # redrawn per epoch
    assert rail_layers(24, 6, 0, 1) == rail_layers(24, 6, 0, 1) != rail_layers(24, 6, 0, 2)


def test_fixed_and_average_aligners_give_the_tables():
    assert LayerAligner("fixed", 24, 6).groups() == [[3], [7], [11], [15], [19], [23]]
    assert LayerAligner("average", 24, 6).groups() == average_alignment(24, 6)


def test_curriculum_weights_sharp_and_smooth():
    assert [curriculum_weights(e, 3, 6) for e in range(6)] == [(0.5, 0.5, 0.0)] * 3 + [(1 / 3, 1 / 3, 1 / 3)] * 3
    assert curriculum_weights(5, 3, 6, final="no_kd") == (0.5, 0.0, 0.5)
    smooth = [curriculum_weights(e, 2, 6, mode="smooth") for e in range(6)]
    assert smooth[:2] == [(0.5, 0.5, 0.0)] * 2
    for e, k in zip(range(2, 6), (0.25, 0.5, 0.75, 1.0)):
        assert smooth[e] == pytest.approx(tuple((1 - k) * a + k * b for a, b in zip((0.5, 0.5, 0), (1 / 3,) * 3)))
    with pytest.raises(ValueError):
        curriculum_weights(0, 1, 3, mode="steep")


def test_method_weights_and_selection():
    w = {m: method_weights(METHODS[m], 0, 1, 3) for m in METHODS}
    assert w["wo_kd"] == (1.0, 0.0, 0.0)
    assert w["vanilla_kd"] == (0.5, 0.5, 0.0)
    assert w["rail_kd_c"] == w["rail_kd_l"] == (1 / 3, 1 / 3, 1 / 3)
    for m in ("curriculum_rail_kd_c", "loraild_fixed", "loraild_random_epoch"):
        assert w[m] == (0.5, 0.5, 0.0)
        assert method_weights(METHODS[m], 1, 1, 3) == (1 / 3, 1 / 3, 1 / 3)
        assert not selectable(METHODS[m], 0, 1) and selectable(METHODS[m], 1, 1)
    assert selectable(METHODS["rail_kd_c"], 0, 1)
