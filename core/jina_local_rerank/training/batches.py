"""From groups to packed batches: tokenized once, one list per query per epoch, steps under a token budget.

Each epoch every group contributes one list: one positive and up to ``negatives`` documents labelled below it (an
unlabelled list: ``1 + negatives`` documents at random). Lists are shuffled and packed into optimizer steps of
at most ``step_tokens`` tokens, the sequences laid end to end with no padding (a list longer than the budget is a
step of its own); a step runs as forward passes of at most ``batch_tokens`` tokens whose gradients add up.
A list never straddles two passes: listwise losses need all of its logits. Everything is drawn from
``(seed, epoch)``, so the same settings give the same batches, which is what makes resuming exact.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from ..engine.tokenization import PairTokenizer
from ..progress import Progress, progress_bar
from .data import QueryGroup
from .losses import LABELS

ENCODE_CHUNK_PAIRS = 8192


@dataclass(frozen=True)
class EncodedGroup:
    """A group's token sequences (``<s> q </s></s> d </s>``, one per document) and its targets."""

    sequences: tuple[np.ndarray, ...]
    labels: tuple[float, ...] | None
    teacher: tuple[float, ...] | None


@dataclass(frozen=True)
class TrainingList:
    """One query's list for one step: the group and the indices of its documents in the list, positive first."""

    group: int
    documents: tuple[int, ...]


def encode_groups(
    groups: tuple[QueryGroup, ...] | list[QueryGroup],
    tokenizer: PairTokenizer,
    *,
    max_length: int,
    max_query_length: int,
    show_progress: Progress = False,
) -> tuple[list[EncodedGroup], int]:
    """Tokenize every (query, document) pair, truncated to ``max_length`` tokens; returns the encoded groups and
    how many documents were truncated."""
    pairs = [(index, document) for index, group in enumerate(groups) for document in group.documents]
    sequences: list[np.ndarray] = []
    truncated = 0
    queries = [group.query for group in groups]
    with progress_bar("tokenizing", "pair", show_progress, total=len(pairs)) as progress:
        for start in range(0, len(pairs), ENCODE_CHUNK_PAIRS):
            chunk = pairs[start : start + ENCODE_CHUNK_PAIRS]
            encoded = tokenizer.encode_pairs(queries, chunk, max_length=max_length, max_query_length=max_query_length)
            sequences += [np.asarray(ids, dtype=np.int32) for ids in encoded.input_ids]
            truncated += sum(encoded.document_truncated)
            progress.update(len(chunk))
    result, start = [], 0
    for group in groups:
        end = start + len(group.documents)
        result.append(EncodedGroup(tuple(sequences[start:end]), group.labels, group.teacher))
        start = end
    return result, truncated


def sample_list(group: EncodedGroup, index: int, negatives: int, rng: random.Random) -> TrainingList:
    """One positive (a document with a label above 0) and up to ``negatives`` documents labelled below it; for a
    group without one (unlabelled, for a teacher's loss), ``1 + negatives`` documents."""
    count = len(group.sequences)
    positives = [i for i, label in enumerate(group.labels or ()) if label > 0]
    if not positives:  # unlabelled, or (for a teacher's loss) nothing judged relevant: any documents
        return TrainingList(index, tuple(rng.sample(range(count), min(count, 1 + negatives))))
    positive = rng.choice(positives)
    below = [i for i, label in enumerate(group.labels) if label < group.labels[positive]]
    return TrainingList(index, (positive, *rng.sample(below, min(len(below), negatives))))


def list_tokens(groups: list[EncodedGroup], item: TrainingList) -> int:
    """Tokens of a list's sequences."""
    sequences = groups[item.group].sequences
    return sum(len(sequences[i]) for i in item.documents)


def plan_epoch(
    groups: list[EncodedGroup], *, negatives: int, step_tokens: int, seed: int, epoch: int
) -> list[list[TrainingList]]:
    """The steps of one epoch: every group's list, shuffled, packed into steps of at most ``step_tokens`` tokens."""
    rng = random.Random(f"{seed}:{epoch}")  # a string seed is hashed with sha512: the same in every process
    lists = [sample_list(group, index, negatives, rng) for index, group in enumerate(groups)]
    rng.shuffle(lists)
    return _packed(lists, [list_tokens(groups, item) for item in lists], step_tokens)


def micro_batches(groups: list[EncodedGroup], step: list[TrainingList], batch_tokens: int) -> list[list[TrainingList]]:
    """A step's lists as forward passes of at most ``batch_tokens`` tokens (a longer list alone)."""
    return _packed(step, [list_tokens(groups, item) for item in step], batch_tokens)


def _packed(items: list[TrainingList], tokens: list[int], budget: int) -> list[list[TrainingList]]:
    batches: list[list[TrainingList]] = []
    used = budget + 1
    for item, count in zip(items, tokens):
        if used + count > budget:
            batches.append([])
            used = 0
        batches[-1].append(item)
        used += count
    return batches


@dataclass(frozen=True)
class Batch:
    """One forward pass: packed ``input_ids`` ``[tokens]`` with their ``lengths``, and targets ``[lists, n]``."""

    input_ids: torch.Tensor
    lengths: list[int]
    list_sizes: list[int]
    targets: torch.Tensor
    mask: torch.Tensor

    @property
    def num_tokens(self) -> int:
        """Real tokens in the pass (there is no padding)."""
        return sum(self.lengths)

    def as_lists(self, logits: torch.Tensor) -> torch.Tensor:
        """The pass's logits ``[sequences]`` laid out like ``targets`` (padding entries 0, masked)."""
        padded = logits.new_zeros(self.mask.shape)
        return padded.masked_scatter(self.mask, logits)


def collate(groups: list[EncodedGroup], lists: list[TrainingList], needs: str, device: torch.device) -> Batch:
    """The tensors of one forward pass over ``lists``; targets are labels or teacher logits as the loss ``needs``."""
    sequences = [groups[item.group].sequences[i] for item in lists for i in item.documents]
    sizes = [len(item.documents) for item in lists]
    width = max(sizes)
    targets = torch.zeros((len(lists), width), dtype=torch.float32)
    mask = torch.zeros((len(lists), width), dtype=torch.bool)
    for row, item in enumerate(lists):
        values = groups[item.group].labels if needs == LABELS else groups[item.group].teacher
        targets[row, : len(item.documents)] = torch.tensor([values[i] for i in item.documents], dtype=torch.float32)
        mask[row, : len(item.documents)] = True
    input_ids = torch.from_numpy(np.concatenate(sequences).astype(np.int64))
    return Batch(
        input_ids.to(device),
        [len(sequence) for sequence in sequences],
        sizes,
        targets.to(device),
        mask.to(device),
    )
