"""The scoring API: usage styles, ordering, batching, lengths, sharing and bad input."""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path

import pytest
import torch

import jina_local_rerank.model.row_blocks as row_blocks_module
from jina_local_rerank import Reranker, cached_engines
from jina_local_rerank.engine.batching import pack_batches
from jina_local_rerank.engine.devices import resolve_dtype
from jina_local_rerank.ranking import best_first

QUERY = "How do I sort a list in Python?"
DOCS = [
    "Use sorted() to get a new sorted list, or list.sort() to sort in place.",
    "The weather in Paris is mild in spring.",
    "",
    "Dictionaries map keys to values.",
    "Sorting is stable: equal elements keep their relative order.",
]


def test_scores_are_python_floats_in_input_order(reranker: Reranker):
    result = reranker.score(QUERY, DOCS)
    assert len(result.scores) == len(DOCS)
    assert all(type(score) is float for score in result.scores)
    assert result.scores == pytest.approx(torch.sigmoid(torch.tensor(result.logits)).tolist(), abs=1e-7)
    singles = [reranker.score(QUERY, [doc]).scores[0] for doc in DOCS]
    assert result.scores == pytest.approx(singles, abs=1e-6)


def test_sigmoid_is_applied_to_raw_logits(reranker: Reranker):
    raw = reranker.score(QUERY, DOCS, raw=True)
    probabilities = reranker.score(QUERY, DOCS)
    assert raw.scores == raw.logits == probabilities.logits
    assert probabilities.scores == pytest.approx([1 / (1 + math.exp(-x)) for x in raw.logits], abs=1e-6)


def test_rank_has_cross_encoder_shape(reranker: Reranker):
    scores = reranker.score(QUERY, DOCS).scores
    ranked = reranker.rank(QUERY, DOCS, top_k=3, return_documents=True)
    order = sorted(range(len(DOCS)), key=lambda i: -scores[i])[:3]
    assert [r["corpus_id"] for r in ranked] == order
    assert [r["score"] for r in ranked] == [scores[i] for i in order]
    assert [r["text"] for r in ranked] == [DOCS[i] for i in order]
    assert "text" not in reranker.rank(QUERY, DOCS)[0]


def test_rerank_has_jina_api_shape(reranker: Reranker):
    results = reranker.rerank(QUERY, DOCS, top_n=2)
    scores = reranker.score(QUERY, DOCS).scores
    assert len(results) == 2 and set(results[0]) == {"index", "relevance_score", "document"}
    assert results[0]["relevance_score"] == max(scores)
    assert results[0]["document"] == {"text": DOCS[results[0]["index"]]}
    assert "document" not in reranker.rerank(QUERY, DOCS, return_documents=False)[0]


def test_compute_score_takes_pairs_and_a_single_pair(reranker: Reranker):
    pairs = [[QUERY, DOCS[0]], ["another query", DOCS[1]]]
    scores = reranker.compute_score(pairs)
    assert scores[0] == pytest.approx(reranker.score(QUERY, [DOCS[0]]).scores[0], abs=1e-6)
    assert scores[1] == pytest.approx(reranker.score("another query", [DOCS[1]]).scores[0], abs=1e-6)
    assert reranker.compute_score([QUERY, DOCS[0]]) == pytest.approx(scores[0], abs=1e-6)


def test_ties_keep_input_order(reranker: Reranker):
    ranked = reranker.rank(QUERY, ["same text", "other", "same text"])
    tied = [r["corpus_id"] for r in ranked if r["corpus_id"] != 1]
    assert tied == [0, 2]
    assert best_first([0.5, 0.9, 0.5, 0.9]) == [1, 3, 0, 2]


def test_empty_inputs(reranker: Reranker):
    assert reranker.score(QUERY, []).scores == []
    assert reranker.rank(QUERY, []) == [] and reranker.rerank(QUERY, []) == []
    empty = reranker.score("", [""])
    assert empty.num_tokens == 4  # <s> </s></s> </s>: the empty pair is still scored
    assert empty.logits == pytest.approx(reranker.score_pairs([("", "")], raw=True).logits)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda r: r.score(42, DOCS), TypeError, "query must be a string, got int"),
        (lambda r: r.score(QUERY, "a string"), TypeError, "documents must be a list of strings, got str"),
        (lambda r: r.score(QUERY, ["ok", None]), TypeError, r"documents\[1\] must be a string, got NoneType"),
        (lambda r: r.score(QUERY, ["ok", b"bytes"]), TypeError, r"documents\[1\] must be a string, got bytes"),
        (lambda r: r.rank(QUERY, DOCS, top_k=0), ValueError, "top_k must be >= 1, got 0"),
        (lambda r: r.rerank(QUERY, DOCS, top_n=-2), ValueError, "top_n must be >= 1, got -2"),
        (lambda r: r.rerank(QUERY, DOCS, top_n=1.5), TypeError, "top_n must be an integer"),
        (lambda r: r.compute_score([["q"]]), TypeError, r"pairs\[0\] must be a \[query, document\] pair"),
        (lambda r: r.compute_score([["q", 3]]), TypeError, r"pairs\[0\]\[1\] must be a string"),
    ],
)
def test_bad_input_names_the_argument(reranker: Reranker, call, error, message):
    with pytest.raises(error, match=message):
        call(reranker)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"device": "tpu"}, "device 'tpu'"),
        ({"device": "cuda:0"} if not torch.cuda.is_available() else {"device": "cuda:99"}, "device 'cuda"),
        ({"dtype": "int4"}, "dtype must be one of .*got 'int4'"),
        ({"max_batch_tokens": 100}, "max_batch_tokens 100 is smaller than one pair"),
        ({"max_length": 10_000}, "exceeds the model's window"),
        ({"max_length": 0}, "max_length must be >= 1"),
        ({"max_length": 64, "max_query_length": 60}, "leaves no room for the document"),
        ({"long_document": "split"}, "long_document must be one of"),
        ({"chunk_aggregation": "sum"}, "chunk_aggregation must be one of"),
    ],
)
def test_bad_settings_are_value_errors(checkpoint_dir: Path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Reranker(checkpoint_dir, **kwargs)


def test_lone_surrogates_are_scored_as_replacement_characters(reranker: Reranker):
    broken = reranker.score(QUERY, ["bad \ud800 text", "pair \ud83d\ude00 joined"]).scores
    clean = reranker.score(QUERY, ["bad \ufffd text", "pair \U0001f600 joined"]).scores
    assert broken == pytest.approx(clean, abs=1e-6)


def test_inputs_are_not_mutated(reranker: Reranker):
    docs = list(DOCS)
    pairs = [[QUERY, DOCS[0]]]
    reranker.rerank(QUERY, docs, top_n=2)
    reranker.compute_score(pairs)
    assert docs == DOCS and pairs == [[QUERY, DOCS[0]]]


def test_small_batch_budget_gives_the_same_scores(checkpoint_dir: Path, reranker: Reranker):
    docs = [("word " * n).strip() for n in (1, 50, 3, 200, 17, 90)]
    tight = Reranker(checkpoint_dir, device="cpu", max_length=1024, max_batch_tokens=1024)
    assert not any(tight.score(QUERY, docs).truncated)
    assert tight.score(QUERY, docs).scores == pytest.approx(reranker.score(QUERY, docs).scores, abs=1e-5)


def test_pack_batches_respects_budget_and_covers_every_index():
    lengths = [5, 300, 7, 120, 120, 64, 1, 300]
    batches = pack_batches(lengths, 400)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) * max(lengths[i] for i in batch) <= 400
        assert lengths[batch[0]] == max(lengths[i] for i in batch)


def test_long_documents_are_truncated_and_counted(small_window_checkpoint_dir: Path, caplog):
    reranker = Reranker(small_window_checkpoint_dir, device="cpu")
    long_doc = "lists " * 400
    with caplog.at_level(logging.WARNING, logger="jina_local_rerank"):
        result = reranker.score(QUERY, ["short", long_doc, long_doc + "tail that is cut"])
    assert result.truncated == [False, True, True] and result.num_truncated == 2
    assert result.scores[1] == result.scores[2]  # the difference lies beyond the window
    assert "2 of 3 documents truncated" in caplog.text
    assert result.num_tokens == sum(
        len(ids)
        for ids in reranker.engine.tokenizer.encode_pairs(
            [QUERY], [(0, "short"), (0, long_doc), (0, long_doc)], max_length=128, max_query_length=64
        ).input_ids
    )


def test_long_query_is_capped_at_max_query_length(small_window_checkpoint_dir: Path):
    """Through the public API: the query keeps exactly its first max_query_length tokens (default: half the
    window, here 64 of 128)."""
    words = " ".join(f"word{i}" for i in range(100))
    doc = "a short document"
    for given, kept in ((16, 16), (None, 64)):
        reranker = Reranker(small_window_checkpoint_dir, device="cpu", max_query_length=given)
        tokenizer = reranker.engine.tokenizer
        query_ids, doc_ids = tokenizer.tokenize([words, doc])
        assert len(query_ids) > kept
        result = reranker.score(words, [doc], raw=True)
        assert result.num_tokens == kept + len(doc_ids) + 4
        # The same logit as a query of exactly those tokens.
        exact = tokenizer.tokenizer.decode(query_ids[:kept])
        assert result.logits == pytest.approx(reranker.score(exact, [doc], raw=True).logits, abs=1e-5)


def test_engines_are_shared_per_key_and_released(checkpoint_dir: Path, reranker: Reranker):
    again = Reranker(str(checkpoint_dir), device="cpu", max_length=512, max_batch_tokens=4096)
    assert again.engine is reranker.engine
    assert reranker.engine.key in cached_engines()
    bf16 = Reranker(checkpoint_dir, device="cpu", dtype="bfloat16")
    assert bf16.engine is not reranker.engine and bf16.dtype == torch.bfloat16
    bf16.release()
    assert bf16.engine.key not in cached_engines()
    assert Reranker(checkpoint_dir, device="cpu", dtype="bfloat16").engine is not bf16.engine


def test_int8_quantizes_linear_layers_and_keeps_the_ranking_close(checkpoint_dir: Path, reranker: Reranker):
    int8 = Reranker(checkpoint_dir, device="cpu", dtype="int8")
    assert int8.dtype == torch.qint8 and int8.engine is not reranker.engine
    assert not any(isinstance(m, torch.nn.Linear) for m in int8.engine.model.bert.encoder.modules())
    assert int8.score(QUERY, DOCS, raw=True).logits == pytest.approx(
        reranker.score(QUERY, DOCS, raw=True).logits, abs=0.1
    )
    with pytest.raises(ValueError, match="runs on the CPU only"):
        resolve_dtype("int8", torch.device("cuda"))


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_row_blocks_leave_scores_unchanged(checkpoint_dir: Path, reranker: Reranker, monkeypatch, dtype):
    """Dense layers run CPU_BLOCK_ROWS rows at a time, partial last block included, for float and int8 layers."""
    scorer = Reranker(checkpoint_dir, device="cpu", dtype=dtype)
    docs = [("sorted list " * n).strip() for n in (3, 40, 11, 25)]
    whole = scorer.score(QUERY, docs, raw=True).logits
    monkeypatch.setattr(row_blocks_module, "CPU_BLOCK_ROWS", 16)
    blocked = scorer.score(QUERY, docs, raw=True).logits
    # int8 quantizes activations per token row, so row blocks do not change its scores either.
    assert blocked == pytest.approx(whole, abs=1e-5 if dtype == "float32" else 1e-3)
    fp32 = reranker.score(QUERY, docs, raw=True).logits
    assert blocked == pytest.approx(fp32, abs=1e-5 if dtype == "float32" else 0.1)


def test_half_precision_stays_close_to_fp32(checkpoint_dir: Path, reranker: Reranker):
    half = Reranker(checkpoint_dir, device="cpu", dtype="bfloat16")
    docs = DOCS + ["sorting " * 300]
    assert half.score(QUERY, docs, raw=True).logits == pytest.approx(
        reranker.score(QUERY, docs, raw=True).logits, abs=0.1
    )


def test_concurrent_threads_get_the_same_scores(reranker: Reranker):
    expected = reranker.score(QUERY, DOCS).scores
    results: list[list[float]] = []

    def work() -> None:
        results.append(reranker.score(QUERY, DOCS).scores)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and all(r == pytest.approx(expected, abs=1e-6) for r in results)


def test_concurrent_first_loads_share_one_engine(small_window_checkpoint_dir: Path):
    engines = []

    def load() -> None:
        engines.append(Reranker(small_window_checkpoint_dir, device="cpu", dtype="float16").engine)

    threads = [threading.Thread(target=load) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(engines) == 3 and all(engine is engines[0] for engine in engines)


def test_query_and_document_prefixes_and_suffixes_are_scored_as_part_of_the_texts(reranker, checkpoint_dir):
    affixed = Reranker(
        checkpoint_dir,
        device="cpu",
        query_prefix="query: ",
        query_suffix=" ?",
        document_prefix="passage: ",
        document_suffix=" .",
    )
    documents = ["a llama is a camelid", "paris is in france"]
    expected = reranker.score("query: llama ?", [f"passage: {doc} ." for doc in documents])
    assert affixed.score("llama", documents).logits == expected.logits
    assert affixed.score_pairs([("llama", documents[1])]).logits == pytest.approx([expected.logits[1]], abs=1e-5)


def test_max_batch_size_caps_the_sequences_of_each_forward_pass():
    assert [len(batch) for batch in pack_batches([10] * 10, 10_000, max_batch_size=3)] == [3, 3, 3, 1]
    assert [len(batch) for batch in pack_batches([10] * 10, 10_000)] == [10]
