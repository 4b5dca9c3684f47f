"""Batches: padding, resumable shuffling, length grouping."""

from __future__ import annotations

import numpy as np
import torch

from paperlib.loraild.encoding import Collator, EpochPermutation, LengthOrder, batch_to


def test_collator_pads_and_masks():
    items = [{"idx": 0, "input_ids": [5, 6, 7], "token_type_ids": [0, 0, 1], "label": 1},
             {"idx": 3, "input_ids": [5], "token_type_ids": [0], "label": 0}]
    b = Collator(pad_id=9, max_length=6)(items)
    assert b["input_ids"].tolist() == [[5, 6, 7], [5, 9, 9]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert b["token_type_ids"].tolist() == [[0, 0, 1], [0, 0, 0]]
    assert b["idx"].tolist() == [0, 3] and b["labels"].tolist() == [1, 0]
    assert Collator(9, 6, pad_to_max=True)(items)["input_ids"].shape == (2, 6)


def test_collator_says_on_the_host_whether_a_batch_has_padding():
    short = {"idx": 1, "input_ids": [5], "label": 0}
    full = {"idx": 0, "input_ids": [5, 6, 7], "label": 1}
    assert Collator(9, 6)([full, short])["padded"] is True
    assert Collator(9, 6)([full, full])["padded"] is False  # padded to its longest: no pad token
    assert Collator(9, 6, pad_to_max=True)([full, full])["padded"] is True  # 3 tokens padded to 6
    b = Collator(9, 3, pad_to_max=True)([full, full])
    assert b["padded"] is False and bool(b["attention_mask"].all())
    moved = batch_to(b, "cpu")
    assert moved["padded"] is False and torch.equal(moved["input_ids"], b["input_ids"])


def test_collator_pads_to_a_multiple_for_a_compiled_student():
    """``multiple``: the longest item's length rounded up to a multiple (at most max_length), the mask
    always carried; padding to max_length is unchanged by it."""
    def items(*lengths):
        return [{"idx": i, "input_ids": [5] * n, "label": 0} for i, n in enumerate(lengths)]

    c = Collator(9, 40, multiple=16)
    assert [c(items(k, 1))["input_ids"].shape[1] for k in (1, 15, 16, 17, 32, 33, 40)] == [16, 16, 16, 32, 32, 40, 40]
    b = c(items(16, 16))  # fills its 16 tokens: still says padded, so a compiled student sees one input layout
    assert b["padded"] is True and bool(b["attention_mask"].all())
    b = c(items(17, 3))
    assert b["attention_mask"].sum(1).tolist() == [17, 3] and b["input_ids"][0, 17:].eq(9).all()
    assert Collator(9, 40, pad_to_max=True, multiple=16)(items(3))["input_ids"].shape == (1, 40)
    assert Collator(9, 40)(items(17, 3))["input_ids"].shape == (2, 17)  # multiple=1: the longest item


def test_epoch_permutation_depends_on_seed_and_epoch_only():
    s = EpochPermutation(50, seed=1)
    s.set_epoch(3)
    a = list(s)
    assert sorted(a) == list(range(50))
    s.set_epoch(4)
    assert list(s) != a
    t = EpochPermutation(50, seed=1)
    t.set_epoch(3)
    assert list(t) == a


def test_length_grouping_keeps_a_permutation_of_similar_length_batches():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, size=203)
    s = EpochPermutation(203, seed=0, lengths=lengths, batch_size=8, group=4)
    order = list(s)
    assert sorted(order) == list(range(203))
    batches = [order[i:i + 8] for i in range(0, 200, 8)]
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    plain = list(EpochPermutation(203, seed=0))
    spread_plain = np.mean([np.ptp(lengths[plain[i:i + 8]]) for i in range(0, 200, 8)])
    assert spread < 0.5 * spread_plain
    assert set(order[200:]) == set(plain[200:])  # the short last batch stays last
    firsts = [lengths[b].max() for b in batches]
    assert firsts != sorted(firsts, reverse=True)  # batch order is shuffled, not longest-first


def test_length_order_sorts_for_evaluation():
    assert list(LengthOrder(np.array([3, 9, 1, 9]))) == [1, 3, 0, 2]


def test_tiny_tokenizer_knows_its_words(tiny):
    """The fixtures' words are real tokens, not [UNK] (a tokenizer that maps every word to [UNK]
    would let every data test pass on sequences that carry no input)."""
    from paperlib.loraild.models import load_tokenizer

    tok = load_tokenizer(tiny.teacher)
    ids = tok("the movie was good")["input_ids"]
    assert tok.unk_token_id not in ids and len(ids) == 6
