"""CPU bf16 reads the first layer's queries, keys and values per token id from a table
(``model/first_layer_projections.py``): the scores of multiplying, three fewer products per row block, and a table
that follows the weights."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from op_counts import op_counts
from sorting_texts import QUERY, documents

from jina_local_rerank import Reranker
from jina_local_rerank.model.attention import ExactLengthAttention
from jina_local_rerank.model.first_layer_projections import FirstLayerProjections

# 40 texts of up to 180 words: four batches, so two CPU workers fill the table side by side.
DOCS = documents(40, seed=3, scale=3)


def addmm_calls(run: Callable[[], object]) -> int:
    """How many ``aten::addmm`` (a linear layer with its bias) ``run()`` calls."""
    return op_counts(run)["aten::addmm"]


def logits(reranker: Reranker) -> list[float]:
    return reranker.score(QUERY, DOCS, raw=True).logits


@pytest.fixture
def bf16(head32_checkpoint, fresh_engines) -> Reranker:
    return Reranker(head32_checkpoint, device="cpu", dtype="bfloat16")


@pytest.mark.parametrize("checkpoint", ["head32_checkpoint", "checkpoint_dir"], ids=["native-attention", "heads-of-16"])
def test_cpu_bf16_reads_the_first_layer_projections_from_the_table_and_scores_as_multiplying(
    checkpoint, request, fresh_engines, monkeypatch
):
    bf16 = Reranker(request.getfixturevalue(checkpoint), device="cpu", dtype="bfloat16")
    model = bf16.engine.model
    table = model.first_layer_projections
    assert isinstance(table, FirstLayerProjections) and table.known_ids == 0
    cold = logits(bf16)  # fills the table, from two CPU workers where torch runs two threads
    assert table.known_ids == len({token for pair in bf16.encode(QUERY, DOCS).input_ids for token in pair})
    sequences = bf16.encode(QUERY, DOCS[:3]).input_ids  # one row block
    read = addmm_calls(lambda: bf16.engine._forward(sequences))
    warm = logits(bf16)
    monkeypatch.setattr(model, "first_layer_projections", None)
    assert addmm_calls(lambda: bf16.engine._forward(sequences)) - read == 3  # the first layer's q, k and v
    multiplied = logits(bf16)
    assert cold == warm
    # The same products, on the batch's distinct ids instead of all its tokens: oneDNN may sum them in another order.
    assert warm == pytest.approx(multiplied, abs=1e-4)


def read_and_multiplied(reranker: Reranker) -> tuple[list[float], list[float]]:
    """The logits with the table, then without it."""
    model = reranker.engine.model
    table = model.first_layer_projections
    read = logits(reranker)
    model.first_layer_projections = None
    try:
        return read, logits(reranker)
    finally:
        model.first_layer_projections = table


def test_the_table_starts_over_when_a_weight_changes(bf16):
    model = bf16.engine.model
    before, _ = read_and_multiplied(bf16)
    with torch.no_grad():
        model.bert.embeddings.word_embeddings.weight.mul_(1.5)  # in place: a new version of the same tensor
    changed, multiplied = read_and_multiplied(bf16)
    assert changed != before and changed == pytest.approx(multiplied, abs=1e-4)
    attention = model.bert.encoder.layer[0].attention.self
    attention.key = torch.nn.Linear(attention.key.in_features, attention.key.out_features).bfloat16()  # a new module
    replaced, multiplied = read_and_multiplied(bf16)
    assert replaced != changed and replaced == pytest.approx(multiplied, abs=1e-4)


def test_training_and_the_other_modes_multiply(head32_checkpoint, bf16, fresh_engines):
    for dtype in ("float32", "int8"):
        assert Reranker(head32_checkpoint, device="cpu", dtype=dtype).engine.model.first_layer_projections is None
    model = bf16.engine.model
    input_ids = torch.tensor(bf16.encode(QUERY, DOCS[:2]).input_ids[0])
    with torch.enable_grad():
        model(input_ids, ExactLengthAttention([len(input_ids)], model.alibi_slopes))
    assert model.first_layer_projections.known_ids == 0
