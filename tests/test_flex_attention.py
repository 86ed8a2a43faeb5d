"""FlexAttention, the GPU mode, run on CPU: torch's eager reference of the kernel, and once its compiled CPU kernel.

The eager reference evaluates the masks and scores element by element but ignores the BlockMask's tiles, so the
tiles are checked against torch's own ``create_block_mask`` here, and the compiled kernel (which skips tiles) is
checked against the float64 reference. Parity with the golden logits through the compiled kernel is in
test_parity.py.
"""

from __future__ import annotations

import pytest
import torch
from attention_reference import CompiledFlexAttention, needs_flex, packed_qkv, reference_attention

from jina_local_rerank import Reranker
from jina_local_rerank.engine.batching import pack_batches
from jina_local_rerank.model import attention
from jina_local_rerank.model.attention import (
    FLEX_BLOCK,
    ExactLengthAttention,
    FlexAttention,
    PaddedAttention,
    alibi_slopes,
    default_attention,
    document_block_mask,
    flex_bucket,
)

pytestmark = [needs_flex, pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")]

# Sequences of 1 token, exactly one tile, across tile boundaries, and longer than the windowed threshold.
LENGTHS = [300, 1, 128, 129, 5, 1100]


@pytest.mark.parametrize("num_heads", [8, 12])
def test_flex_matches_the_float64_reference_and_cls_only_its_first_rows(num_heads):
    q, k, v = packed_qkv(LENGTHS, num_heads, seed=num_heads)
    batch = FlexAttention(LENGTHS, alibi_slopes(num_heads))
    assert batch.bucket == 2048 > sum(LENGTHS)  # padded: the padding is part of what is checked
    full = batch(q, k, v, cls_only=False)
    assert full.shape == q.shape and full.dtype == q.dtype
    assert (full.double() - reference_attention(q, k, v, batch)).abs().max() < 1e-5
    first = batch(q[batch.cls_rows], k, v, cls_only=True)
    assert first.shape == (len(LENGTHS), num_heads, q.shape[-1])
    assert (first - full[batch.cls_rows]).abs().max() < 1e-6


def test_bucket_padding_does_not_change_results(monkeypatch):
    lengths = LENGTHS[:-1]
    q, k, v = packed_qkv(lengths, 4, seed=5)
    slopes = alibi_slopes(4)
    snug = FlexAttention(lengths, slopes)
    monkeypatch.setattr(attention, "FLEX_MIN_TOKENS", 2048)
    padded = FlexAttention(lengths, slopes)
    assert (snug.bucket, padded.bucket) == (1024, 2048)
    for queries, cls_only in ((q, False), (q[snug.cls_rows], True)):
        assert (snug(queries, k, v, cls_only) - padded(queries, k, v, cls_only)).abs().max() < 1e-6


def test_bf16_inputs_give_bf16_context_close_to_the_fp32_one():
    q, k, v = packed_qkv(LENGTHS, 12, seed=6)
    batch = FlexAttention(LENGTHS, alibi_slopes(12))
    low = batch(q.bfloat16(), k.bfloat16(), v.bfloat16(), cls_only=False)
    assert low.dtype == torch.bfloat16
    exact = ExactLengthAttention(LENGTHS, alibi_slopes(12))(q.bfloat16(), k.bfloat16(), v.bfloat16(), cls_only=False)
    # Both compute fp32 scores from the same bf16 inputs and round the context to bf16: a unit in the last place.
    assert (low.float() - exact.float()).abs().max() < 2e-2


def _tiles(num_blocks: torch.Tensor, indices: torch.Tensor) -> set[tuple[int, int]]:
    counts = num_blocks[0, 0].tolist()
    return {(row, int(col)) for row, count in enumerate(counts) for col in indices[0, 0, row, :count]}


@pytest.mark.parametrize("cls_only", [False, True], ids=["all-queries", "cls-only"])
def test_block_mask_tiles_are_those_of_the_element_mask(cls_only):
    from torch.nn.attention.flex_attention import create_block_mask

    batch = FlexAttention(LENGTHS, alibi_slopes(4))
    ours = batch._masks[cls_only][0]
    theirs = create_block_mask(ours.mask_mod, 1, 1, batch.bucket, batch.bucket, device="cpu", BLOCK_SIZE=FLEX_BLOCK)
    assert _tiles(ours.full_kv_num_blocks, ours.full_kv_indices) == _tiles(
        theirs.full_kv_num_blocks, theirs.full_kv_indices
    )
    assert _tiles(ours.kv_num_blocks, ours.kv_indices) == _tiles(theirs.kv_num_blocks, theirs.kv_indices)
    # Padding queries match nothing: their tiles are empty (cls_only: every row after the sequences' <s>).
    first_padding_tile = -(-(len(LENGTHS) if cls_only else sum(LENGTHS)) // FLEX_BLOCK)
    assert not any(row >= first_padding_tile for row, _ in _tiles(ours.kv_num_blocks, ours.kv_indices))


def test_document_block_mask_of_one_document_is_all_full_tiles():
    document = torch.zeros(4 * FLEX_BLOCK, dtype=torch.int32)
    mask = document_block_mask(document, document, lambda b, h, q, k: document[q] == document[k])
    assert mask.kv_num_blocks.sum() == 0 and mask.full_kv_num_blocks.tolist() == [[[4, 4, 4, 4]]]


def _tensors(obj: object, seen: set[int]) -> list[torch.Tensor]:
    """Every tensor reachable from ``obj`` through attributes, containers and closures."""
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        children = list(obj.values())
    elif isinstance(obj, (list, tuple, set)):
        children = list(obj)
    elif callable(obj) and hasattr(obj, "__closure__"):
        children = [cell.cell_contents for cell in obj.__closure__ or ()]
    elif hasattr(obj, "__dict__"):
        children = list(vars(obj).values())
    else:
        return []
    return [t for child in children for t in _tensors(child, seen)]


def test_flex_mode_holds_no_tensor_that_grows_with_length_squared():
    length = 8192
    batch = FlexAttention([length], alibi_slopes(12))
    held = _tensors(batch, set())
    assert len(held) > 10  # the ids, positions, slopes and tile tables were found
    # [heads, L, L] would be 805M elements; the mode holds ids and positions per token and (L / 128)^2 tile tables.
    assert sum(t.numel() for t in held) < 16 * length
    assert max(t.numel() for t in held) <= length


def test_buckets_are_powers_of_two_from_the_minimum():
    assert [flex_bucket(n) for n in (1, 1024, 1025, 5000, 16384)] == [1024, 1024, 2048, 8192, 16384]
    batches = FlexAttention.warm_up_batches(16384, 8192)
    assert [sum(b) for b in batches] == [1024, 2048, 4096, 8192, 16384]
    assert batches[-1] == [8192, 8192]  # no warm-up sequence exceeds the window
    assert ExactLengthAttention.warm_up_batches(16384, 8192) == [[8]]


def test_packed_budgets_count_tokens_and_padded_ones_rows_times_longest():
    lengths = [6, 2, 2, 2]
    assert pack_batches(lengths, 10) == [[0], [1, 2, 3]]
    assert pack_batches(lengths, 10, packed=True) == [[0, 1, 2], [3]]
    assert pack_batches([12, 3], 10, packed=True) == [[0], [1]]  # longer than the budget: alone
    assert FlexAttention.packed_budget and not PaddedAttention.packed_budget
    assert not ExactLengthAttention.packed_budget


def test_cpu_engines_keep_exact_length_attention():
    assert default_attention(torch.device("cpu")) is ExactLengthAttention


def test_engine_scores_through_flex_like_exact_length_and_warms_up_each_bucket(reranker, monkeypatch):
    engine = reranker.engine
    sequences = [[0, *range(5, 5 + n), 2] for n in (40, 3, 700, 90)]
    exact = engine.logits(sequences, max_batch_tokens=800)
    monkeypatch.setattr(engine, "attention", FlexAttention)
    passes: list[int] = []
    hook = engine.model.register_forward_pre_hook(lambda module, args: passes.append(len(args[0])))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # in this thread, as on a GPU (CPU workers cut batches of equal work instead)
    try:
        flex = engine.logits(sequences, max_batch_tokens=800)
        # Packed budget: 702 + 92 and 42 + 5 tokens (padded, 702 would pass alone).
        assert passes == [794, 47]
        passes.clear()
        engine.warm_up(2000)
    finally:
        hook.remove()
        torch.set_num_threads(threads)
    assert max(abs(a - b) for a, b in zip(exact, flex)) < 1e-5
    assert passes == [1024, 2048]


def test_bf16_models_give_fp32_logits_to_all_their_digits(checkpoint_dir):
    """The pooler and classifier run in fp32: a bf16 logit would be rounded to 8 bits of mantissa."""
    reranker = Reranker(checkpoint_dir, device="cpu", dtype="bfloat16")
    logits = reranker.score("closures", [f"document {i} about closures and scopes" for i in range(8)], raw=True).logits
    assert any(value != torch.tensor(value).bfloat16().item() for value in logits)


@pytest.mark.slow
def test_compiled_cpu_kernel_skips_only_masked_tiles():
    """The fused kernel (inductor's CPU flex template) reads the tile tables: wrong tiles would change results."""
    q, k, v = packed_qkv(LENGTHS, 12, seed=7)
    batch = CompiledFlexAttention(LENGTHS, alibi_slopes(12))
    reference = reference_attention(q, k, v, batch)
    assert (batch(q, k, v, cls_only=False).double() - reference).abs().max() < 1e-5
    first = batch(q[batch.cls_rows], k, v, cls_only=True)
    assert (first.double() - reference[batch.cls_rows]).abs().max() < 1e-5
    assert (batch.bucket, 12, q.shape[-1], torch.float32, q.device) in attention._compiled_shapes
