"""Training data: the formats a run reads, checked row by row, as groups of documents per query.

A JSON Lines file holds one object per line, in any of three shapes (they may be mixed):

- a **triplet**: ``{"query", "positive", "negatives": [...]}`` (or one ``"negative"``); the positive has label 1,
  the negatives 0; ``"negatives"`` may be absent (they are mined);
- a **labelled pair**: ``{"query", "document", "label"}`` with a graded label (0, 1, 2, ... or 0..1); the rows
  of one query form its group;
- a **list**: ``{"query", "documents": [...], "labels": [...]}`` with one label per document, or without labels
  when a teacher scores them.

Teacher logits may come with the data (for example scores got from the hosted API): a ``"scores"`` list
aligned with ``[positive, *negatives]`` or ``documents``, or a ``"score"`` number on a labelled pair; another
column name can be given. A folder in BEIR layout (``corpus.jsonl``, ``queries.jsonl``, ``qrels/``) is read with
its ``train`` split if present, else ``test``: each judged query with a relevant document is a group, its
judged documents labelled with their grades, and the corpus is what negatives are mined from.

A bad row is a ``DatasetError`` naming the file, the line and the field. Rows are never dropped silently: what is
set aside (a negative equal to its positive, a document listed twice for one query) is counted in
:attr:`TrainingData.skipped`.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import DatasetError
from ..evaluation.beir import json_lines, load_beir

TRIPLET_TEACHER_COLUMN = "scores"
PAIR_TEACHER_COLUMN = "score"
# Labels and teacher logits must lie within +-this: every loss then stays finite in float32 (a label of 1e39 is
# infinite there, and makes the weights NaN). Real grades are 0..3 or so, rerankers' logits within +-20.
TARGET_LIMIT = 1e6


@dataclass(frozen=True)
class QueryGroup:
    """A query and the documents trained (or evaluated) against it together.

    ``labels`` are graded relevance per document (higher is more relevant; None when unknown, as for lists a
    teacher scores); ``teacher`` are the teacher's raw logits per document (None until scored). ``where`` names
    the group's first line in the source, for messages.
    """

    query: str
    documents: tuple[str, ...]
    labels: tuple[float, ...] | None
    teacher: tuple[float, ...] | None
    where: str

    @property
    def evaluable(self) -> bool:
        """Whether a held-out evaluation can judge a ranking of it: a document is labelled relevant, or it is
        unlabelled (a teacher's logits are then the reference)."""
        return self.labels is None or any(label > 0 for label in self.labels)

    @property
    def num_negatives(self) -> int:
        """Documents ranked below the best: labelled lower than the top label, or for unlabelled lists all but one."""
        if self.labels is None:
            return max(0, len(self.documents) - 1)
        top = max(self.labels, default=0.0)
        return sum(1 for label in self.labels if label < top)


@dataclass(frozen=True)
class TrainingData:
    """Groups of documents per query, the corpus negatives are mined from, and what was set aside.

    ``corpus`` is the BEIR corpus (``title + " " + text``), or for a JSON Lines file every distinct document in
    it. ``relevant[query]`` holds the documents judged relevant to ``query`` anywhere in the source: mining never
    picks them as negatives. ``skipped`` counts, by reason, whatever was set aside; ``mined`` how many negatives
    mining added.
    """

    source: str
    groups: tuple[QueryGroup, ...]
    corpus: tuple[str, ...]
    relevant: dict[str, frozenset[str]]
    rows: int
    skipped: dict[str, int] = field(default_factory=dict)
    mined: int = 0

    @property
    def num_documents(self) -> int:
        """Documents over all groups (a document in two groups counts twice)."""
        return sum(len(group.documents) for group in self.groups)

    def with_groups(self, groups: list[QueryGroup], skipped: Counter | None = None, mined: int = 0) -> TrainingData:
        """A copy with ``groups`` instead, ``skipped`` added to the counts and ``mined`` more negatives."""
        counts = Counter(self.skipped)
        counts.update(skipped or {})
        return replace(self, groups=tuple(groups), skipped=dict(counts), mined=self.mined + mined)

    def summary(self) -> dict[str, Any]:
        """Sizes for logs and the model card."""
        return {
            "source": self.source,
            "rows": self.rows,
            "queries": len(self.groups),
            "documents": self.num_documents,
            "corpus": len(self.corpus),
            "mined_negatives": self.mined,
            "skipped": dict(sorted(self.skipped.items())),
        }


def load_training_data(source: str | os.PathLike[str], *, teacher_column: str | None = None) -> TrainingData:
    """Read a JSON Lines file or a BEIR-layout folder (its ``train`` split if present, else ``test``)."""
    path = Path(source).expanduser()
    if path.is_dir():
        split = "train" if (path / "qrels" / "train.tsv").is_file() else "test"
        return read_beir(path, split)
    if not path.exists():  # a file, or a pipe or device read line by line (each line bounded)
        raise DatasetError(f"training data {path} not found (a JSON Lines file or a BEIR-layout folder)")
    return read_jsonl(path, teacher_column=teacher_column)


def read_beir(directory: str | os.PathLike[str], split: str = "train") -> TrainingData:
    """One group per judged query with a relevant document: its judged documents, labelled with their grades."""
    dataset = load_beir(directory, split)
    groups, relevant = [], {}
    skipped: Counter = Counter()
    qrels_file = dataset.directory / "qrels" / f"{split}.tsv"
    for query_id, judged in dataset.qrels.items():
        if query_id not in dataset.queries:
            skipped["judged queries missing from queries.jsonl"] += 1
            continue
        known = {doc_id: grade for doc_id, grade in judged.items() if doc_id in dataset.corpus}
        skipped["judged documents missing from corpus.jsonl"] += len(judged) - len(known)
        if not any(grade > 0 for grade in known.values()):
            skipped["judged queries without a relevant document"] += 1
            continue
        query = dataset.queries[query_id]
        documents = [dataset.corpus[doc_id].full_text for doc_id in known]
        relevant[query] = frozenset(text for text, grade in zip(documents, known.values()) if grade > 0)
        groups.append(
            QueryGroup(
                query,
                tuple(documents),
                tuple(float(g) for g in known.values()),
                None,
                f"{qrels_file} query {query_id!r}",
            )
        )
    corpus = tuple(document.full_text for document in dataset.corpus.values())
    return TrainingData(
        str(dataset.directory),
        tuple(groups),
        corpus,
        relevant,
        sum(map(len, dataset.qrels.values())),
        {reason: count for reason, count in skipped.items() if count},
    )


def _text(item: dict[str, Any], name: str, where: str) -> str:
    value = item.get(name)
    if value is None:
        raise DatasetError(f"{where}: field {name!r} is missing")
    if not isinstance(value, str):
        raise DatasetError(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise DatasetError(f"{where}: field {name!r} is empty")
    return value


def check_target(value: Any, name: str, where: str) -> float:
    """``value`` as a float if it is a usable label or teacher logit: a finite number within ``TARGET_LIMIT``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DatasetError(f"{where}: field {name} must be a number, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise DatasetError(f"{where}: field {name} must be a finite number, got {value}")
    if not -TARGET_LIMIT <= value <= TARGET_LIMIT:  # compared exactly: an int of 400 digits has no float
        shown = (
            f"{value:.3g}"
            if isinstance(value, float)
            else f"an integer of about {round(value.bit_length() * math.log10(2))} digits"
        )
        raise DatasetError(
            f"{where}: field {name} is {shown}, outside -{TARGET_LIMIT:g}..{TARGET_LIMIT:g} "
            "(labels are relevance grades, teacher scores raw logits)"
        )
    return float(value)


def _texts(item: dict[str, Any], name: str, where: str) -> list[str]:
    values = item[name]
    if not isinstance(values, list):
        raise DatasetError(f"{where}: field {name!r} must be a list of strings, got {type(values).__name__}")
    for index, value in enumerate(values):
        if not isinstance(value, str):
            raise DatasetError(f"{where}: field {name!r}[{index}] must be a string, got {type(value).__name__}")
        if not value.strip():
            raise DatasetError(f"{where}: field {name!r}[{index}] is empty")
    return values


def _numbers(item: dict[str, Any], name: str, count: int, what: str, where: str) -> list[float] | None:
    if name not in item:
        return None
    values = item[name]
    if not isinstance(values, list):
        raise DatasetError(f"{where}: field {name!r} must be a list of numbers, got {type(values).__name__}")
    if len(values) != count:
        raise DatasetError(f"{where}: field {name!r} has {len(values)} values for {count} {what}")
    return [check_target(value, f"{name!r}[{index}]", where) for index, value in enumerate(values)]


class _PairGroup:
    """The labelled-pair rows of one query, gathered in file order."""

    def __init__(self, query: str, where: str) -> None:
        self.query, self.where = query, where
        self.documents: list[str] = []
        self.labels: list[float | None] = []
        self.teacher: list[float | None] = []
        self.lines: list[str] = []


def read_jsonl(path: str | os.PathLike[str], *, teacher_column: str | None = None) -> TrainingData:
    """Read triplets, labelled pairs and lists from a JSON Lines file (see the module docstring)."""
    path = Path(path)
    list_teacher = teacher_column or TRIPLET_TEACHER_COLUMN
    pair_teacher = teacher_column or PAIR_TEACHER_COLUMN
    entries: list[QueryGroup | _PairGroup] = []
    pair_groups: dict[str, _PairGroup] = {}
    skipped: Counter = Counter()
    rows = 0
    for number, item in json_lines(path):
        rows += 1
        where = f"{path} line {number}"
        query = _text(item, "query", where)
        if "positive" in item:
            positive = _text(item, "positive", where)
            if "negatives" in item:
                negatives = _texts(item, "negatives", where)
            else:
                negatives = [_text(item, "negative", where)] if "negative" in item else []
            documents = [positive, *negatives]
            teacher = _numbers(item, list_teacher, len(documents), "documents (positive and negatives)", where)
            entries.append(
                QueryGroup(
                    query,
                    tuple(documents),
                    (1.0,) + (0.0,) * len(negatives),
                    None if teacher is None else tuple(teacher),
                    where,
                )
            )
        elif "documents" in item:
            documents = _texts(item, "documents", where)
            if not documents:
                raise DatasetError(f"{where}: field 'documents' is empty")
            labels = _numbers(item, "labels", len(documents), "documents", where)
            teacher = _numbers(item, list_teacher, len(documents), "documents", where)
            entries.append(
                QueryGroup(
                    query,
                    tuple(documents),
                    None if labels is None else tuple(labels),
                    None if teacher is None else tuple(teacher),
                    where,
                )
            )
        elif "document" in item:
            group = pair_groups.get(query)
            if group is None:
                group = pair_groups[query] = _PairGroup(query, where)
                entries.append(group)
            group.documents.append(_text(item, "document", where))
            group.labels.append(check_target(item["label"], "'label'", where) if "label" in item else None)
            group.teacher.append(
                check_target(item[pair_teacher], repr(pair_teacher), where) if pair_teacher in item else None
            )
            group.lines.append(where)
        else:
            raise DatasetError(
                f"{where}: no 'positive', 'document' or 'documents' field (a row is a triplet, a labelled pair "
                "or a list of documents)"
            )
    if rows == 0:
        raise DatasetError(f"{path}: no rows (expected one JSON object per line)")
    groups = [_pair_group(entry) if isinstance(entry, _PairGroup) else entry for entry in entries]
    groups = [_without_duplicates(group, skipped) for group in groups]
    return TrainingData(
        str(path), tuple(groups), _distinct_documents(groups), _relevant_documents(groups), rows, dict(skipped)
    )


def _pair_group(group: _PairGroup) -> QueryGroup:
    """A query's labelled-pair rows as one group; every row gives a label, or none does (same for the teacher)."""
    columns = {}
    for name, values in (("label", group.labels), ("teacher score", group.teacher)):
        present = [value is not None for value in values]
        if any(present) and not all(present):
            line = group.lines[present.index(False)]
            raise DatasetError(
                f"{line}: this row of query {group.query[:60]!r} has no {name} while others of the query do"
            )
        columns[name] = tuple(values) if all(present) else None
    return QueryGroup(group.query, tuple(group.documents), columns["label"], columns["teacher score"], group.where)


def _without_duplicates(group: QueryGroup, skipped: Counter) -> QueryGroup:
    """``group`` with each document once (its first occurrence); the others are counted."""
    seen: set[str] = set()
    keep = []
    for index, document in enumerate(group.documents):
        if document in seen:
            skipped["documents listed twice for one query"] += 1
        else:
            seen.add(document)
            keep.append(index)
    if len(keep) == len(group.documents):
        return group
    return QueryGroup(
        group.query,
        tuple(group.documents[i] for i in keep),
        None if group.labels is None else tuple(group.labels[i] for i in keep),
        None if group.teacher is None else tuple(group.teacher[i] for i in keep),
        group.where,
    )


def _distinct_documents(groups: list[QueryGroup]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(document for group in groups for document in group.documents))


def _relevant_documents(groups: list[QueryGroup]) -> dict[str, frozenset[str]]:
    relevant: dict[str, set[str]] = {}
    for group in groups:
        if group.labels is not None:
            judged = relevant.setdefault(group.query, set())
            judged.update(doc for doc, label in zip(group.documents, group.labels) if label > 0)
    return {query: frozenset(documents) for query, documents in relevant.items()}
