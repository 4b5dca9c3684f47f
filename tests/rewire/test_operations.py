"""Operations: what each constructor replaces, and clear errors for bad ones."""

from __future__ import annotations

import pytest

from paperlib.rewire.operations import KINDS, Parallel, RewiringError, delete, expand, parallel, repeat, swap


def test_constructors_replace_the_right_blocks():
    assert swap(2, 3, 6).steps == (2, 1) and (swap(2, 3, 6).start, swap(2, 3, 6).end) == (1, 3)
    op = swap(2, 5, 6)  # 1-based layers 2 and 5 exchange, 3 and 4 stay
    assert op.steps == (4, 2, 3, 1) and op.original == (1, 2, 3, 4)
    assert delete(3, 6).steps == () and delete(3, 6).original == (2,)
    assert delete(2, 6, j=4).original == (1, 2, 3) and delete(2, 6, j=4).steps == ()
    assert parallel(1, 6).steps == (Parallel((0, 1), False),) and parallel(1, 6).original == (0, 1)
    assert parallel(1, 6, mean=True).op == "parallel_mean"
    assert parallel(2, 6, j=4).steps == (Parallel((1, 2, 3), False),)
    assert repeat(6, 6).steps == (5, 5) and repeat(6, 6).original == (5,)
    assert swap(2, 5, 6).label == "swap(2, 5)" and delete(3, 6).label == "delete(3)"


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: swap(3, 3, 6), "i < j"),
        (lambda: swap(4, 2, 6), "i < j"),
        (lambda: swap(0, 2, 6), "out of range"),
        (lambda: swap(2, 7, 6), "out of range"),
        (lambda: delete(7, 6), "out of range"),
        (lambda: delete(0, 6), "out of range"),
        (lambda: delete(3, 6, j=3), "i < j"),
        (lambda: parallel(6, 6), "out of range"),
        (lambda: repeat(-1, 6), "out of range"),
        (lambda: expand(["swap", "shuffle"], 6), "unknown operation 'shuffle'"),
        (lambda: expand([], 6), "no operations"),
        (lambda: expand(["delete_span"], 6, max_span=1), "max_span"),
    ],
)
def test_bad_operations_are_clear_errors(make, words):
    with pytest.raises(RewiringError, match=words):
        make()


def test_expand_counts_and_order():
    n = 5
    counts = {"swap": n - 1, "swap_all": n * (n - 1) // 2, "delete": n, "delete_span": (n - 1) + (n - 2),
              "parallel": n - 1, "parallel_mean": n - 1, "repeat": n}
    assert set(counts) == set(KINDS)
    for kind, count in counts.items():
        assert len(expand([kind], n, max_span=3)) == count, kind
    both = expand(["swap", "swap_all"], n)  # adjacent swaps are in both families, measured once
    assert len(both) == n * (n - 1) // 2
    starts = [op.start for op in expand(list(KINDS), n)]
    assert starts == sorted(starts)
