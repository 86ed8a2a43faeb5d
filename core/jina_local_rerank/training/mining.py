"""Hard negatives mined with BM25, the first stage the ``eval`` command uses, with a guard against false negatives.

A group short of negatives gets the corpus documents BM25 ranks highest for its query, except likely false
negatives: documents judged relevant to the query anywhere in the data (the qrels), and, with a ``margin``,
documents BM25 scores above the group's best positive by more than ``margin`` times that positive's score (an
unjudged document that matches the query better than its answer is often another answer). Documents BM25 gives
no score rank last, in a seeded random order, so a group always fills up while the corpus lasts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import numpy as np

from ..evaluation.runs import BM25Index
from ..progress import Progress, progress_bar
from .config import DEFAULT_MARGIN
from .data import QueryGroup, TrainingData


def mine_hard_negatives(
    data: TrainingData,
    negatives: int,
    *,
    margin: float | None = DEFAULT_MARGIN,
    seed: int = 0,
    show_progress: Progress = False,
) -> TrainingData:
    """``data`` with every group topped up to ``negatives`` negatives (an unlabelled list to ``1 + negatives``
    documents) from its corpus; ``margin`` None turns the score guard off.

    Mined documents are labelled 0 in labelled groups. What mining skipped, and groups the corpus could not fill,
    are counted in the result's ``skipped``.
    """
    if margin is not None and margin < 0:
        raise ValueError(f"margin must be >= 0 or None, got {margin}")
    skipped: Counter = Counter()
    wanting = []
    for i, group in enumerate(data.groups):
        if _missing(group, negatives) == 0:
            continue
        if group.teacher is not None:  # the data's teacher logits cannot cover mined documents
            skipped["queries short of negatives (the data's teacher scores cover only its documents)"] += 1
        elif not data.corpus:
            skipped["queries short of negatives (no corpus to mine)"] += 1
        else:
            wanting.append(i)
    if not wanting:
        return data.with_groups(list(data.groups), skipped)
    corpus = data.corpus
    position = {text: index for index, text in enumerate(corpus)}
    index = BM25Index(corpus, show_progress=show_progress)
    rng = np.random.default_rng(seed)
    groups = list(data.groups)
    mined = 0
    queries = [groups[i].query for i in wanting]
    with progress_bar("mining negatives", "query", show_progress, total=len(wanting)) as progress:
        for group_index, scores in zip(wanting, index.scores(queries)):
            group = groups[group_index]
            chosen = _candidates(
                group,
                scores,
                position,
                data.relevant.get(group.query, frozenset()),
                corpus,
                margin,
                _missing(group, negatives),
                rng,
                skipped,
            )
            if len(chosen) < _missing(group, negatives):
                skipped["queries short of negatives (corpus exhausted)"] += 1
            mined += len(chosen)
            groups[group_index] = _extended(group, [corpus[i] for i in chosen])
            progress.update(1)
    return data.with_groups(groups, skipped, mined)


def _missing(group: QueryGroup, negatives: int) -> int:
    return max(0, negatives - group.num_negatives)


def _candidates(
    group: QueryGroup,
    scores: np.ndarray,
    position: dict[str, int],
    relevant: frozenset[str],
    corpus: tuple[str, ...],
    margin: float | None,
    wanted: int,
    rng: np.random.Generator,
    skipped: Counter,
) -> list[int]:
    """Corpus indices of up to ``wanted`` negatives for ``group``, best BM25 score first, past the guard."""
    ceiling = None
    if margin is not None and group.labels is not None:
        top = max(group.labels)
        positives = [
            position[doc] for doc, label in zip(group.documents, group.labels) if label == top and doc in position
        ]
        if positives:
            ceiling = float(scores[positives].max()) * (1 + margin)
    present = set(group.documents)
    chosen: list[int] = []
    for candidate in _ranked(scores, rng):
        if len(chosen) == wanted:
            break
        text = corpus[candidate]
        if text in present:
            continue
        if text in relevant:
            skipped["mined candidates judged relevant (qrels)"] += 1
        elif ceiling is not None and scores[candidate] > ceiling:
            skipped["mined candidates scored above the positive by more than the margin"] += 1
        else:
            chosen.append(candidate)
    return chosen


def _ranked(scores: np.ndarray, rng: np.random.Generator) -> Iterator[int]:
    """Corpus indices by BM25 score, best first (ties in random order), then the unscored ones in random order."""
    matched = np.flatnonzero(scores > 0)
    yield from matched[np.lexsort((rng.permutation(len(matched)), -scores[matched]))].tolist()
    yield from rng.permutation(np.flatnonzero(scores <= 0)).tolist()


def _extended(group: QueryGroup, documents: list[str]) -> QueryGroup:
    labels = None if group.labels is None else group.labels + (0.0,) * len(documents)
    return QueryGroup(group.query, group.documents + tuple(documents), labels, None, group.where)
