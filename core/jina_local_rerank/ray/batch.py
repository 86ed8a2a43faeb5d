"""Offline scoring of (query, document) pairs with Ray Data: an actor pool of engines, each loading the model once.

``score_pairs_dataset`` adds a score column to any Ray Dataset; ``score_pairs_file`` runs the whole job from a
JSONL or Parquet file to another, keeping the rows and their order.
"""

from __future__ import annotations

import os

import pyarrow as pa
import ray
import ray.data
from ray.data.expressions import col

from ..errors import DatasetError
from ..files.pairs import DEFAULT_BATCH_ROWS, PairColumns, TableWriter, add_scores, check_schema, file_format
from ..files.user_files import check_input_file, check_output_path
from ..options import RerankerOptions
from ..reranker import Reranker
from ..validation import check_positive_int


class PairScorer:
    """Ray Data callable class: one :class:`Reranker` per actor, built once; adds the score column to each batch."""

    def __init__(self, options: RerankerOptions, columns: PairColumns, raw: bool) -> None:
        self.reranker = Reranker(options)
        self.columns = columns
        self.raw = raw

    def __call__(self, batch: pa.Table) -> pa.Table:
        return add_scores(batch, self.reranker, self.columns, raw=self.raw)


def score_pairs_dataset(
    dataset: ray.data.Dataset,
    *,
    options: RerankerOptions = RerankerOptions(),
    num_actors: int = 1,
    batch_size: int = DEFAULT_BATCH_ROWS,
    columns: PairColumns = PairColumns(),
    raw: bool = False,
    num_cpus_per_actor: float = 1,
    num_gpus_per_actor: float = 0,
) -> ray.data.Dataset:
    """``dataset`` plus a float64 score column, computed by ``num_actors`` actors (lazy, like every Ray Dataset).

    Each actor holds ``num_cpus_per_actor`` CPUs and ``num_gpus_per_actor`` GPUs and builds one
    ``Reranker(options)`` (model, device, dtype, max_length, max_batch_tokens, ...); ``options.model`` must be a
    Hub id or a directory present on every node. Batches of ``batch_size`` rows go to one ``score_pairs``
    call each (which packs them into forward passes under the Reranker's ``max_batch_tokens``). Rows keep their
    input order when the dataset's ``context.execution_options.preserve_order`` is set, as
    :func:`score_pairs_file` does.
    """
    check_positive_int(num_actors, "num_actors")
    check_positive_int(batch_size, "batch_size")
    if not isinstance(options, RerankerOptions):
        raise TypeError(f"options must be a RerankerOptions, got {type(options).__name__}")
    schema = dataset.schema()
    check_schema(schema.names, schema.types, columns)
    return dataset.map_batches(
        PairScorer,
        fn_constructor_kwargs={
            "options": options,
            "columns": columns,
            "raw": raw,
        },
        batch_format="pyarrow",
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=num_actors),
        num_cpus=num_cpus_per_actor,
        num_gpus=num_gpus_per_actor,
    )


def read_pairs(path: str | os.PathLike[str], fmt: str) -> ray.data.Dataset:
    """A Ray Dataset of a JSONL or Parquet file (or folder of them).

    Read tasks reserve no CPU: when the scoring actors hold every CPU of a small cluster (2 actors on 2 CPUs),
    a read task waiting for one would never run and the job would hang.
    """
    if fmt == "parquet":
        return ray.data.read_parquet(os.fspath(path), num_cpus=0)
    # Arrow's JSON reader (not lines=True, which parses with pandas) reads JSON Lines with the same type
    # inference as the in-process path, so both write identical files.
    return ray.data.read_json(os.fspath(path), num_cpus=0)


def _check_no_nulls(dataset: ray.data.Dataset, columns: PairColumns) -> None:
    """Raise ``DatasetError`` if a row has no query or document.

    One read pass before scoring, so that a bad row fails the job in seconds, not when an actor reaches it.
    """
    if dataset.filter(expr=col(columns.query).is_null() | col(columns.document).is_null()).count():
        counts = {name: dataset.filter(expr=col(name).is_null()).count() for name in (columns.query, columns.document)}
        found = ", ".join(f"{name!r} in {count}" for name, count in counts.items() if count)
        raise DatasetError(f"null values in the input: {found} row(s); drop or fill them first")


def score_pairs_file(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    options: RerankerOptions = RerankerOptions(),
    num_actors: int = 1,
    batch_size: int = DEFAULT_BATCH_ROWS,
    columns: PairColumns = PairColumns(),
    raw: bool = False,
    input_format: str | None = None,
    output_format: str | None = None,
    num_cpus_per_actor: float = 1,
    num_gpus_per_actor: float = 0,
    show_progress: bool = False,
) -> int:
    """Score the pairs of ``input`` on Ray and write its rows plus the score column to ``output``; returns rows.

    Formats come from the suffixes (.jsonl/.ndjson/.json, .parquet/.pq) unless given. ``input`` is read by Ray
    tasks, so on a multi-node cluster it must be reachable from every node (shared or object storage); the
    scored rows stream back to this process in input order and are written to the one ``output`` file. Uses the
    running Ray instance, or starts a local one. Other arguments: :func:`score_pairs_dataset`.
    """
    check_input_file(input)
    check_output_path(output, input)
    in_format = file_format(input, input_format)
    out_format = file_format(output, output_format)
    dataset = read_pairs(input, in_format)
    # The dataset's own context (a copy taken at read time), so the caller's global DataContext is untouched.
    dataset.context.execution_options.preserve_order = True
    dataset.context.enable_progress_bars = show_progress
    scored = score_pairs_dataset(
        dataset,
        options=options,
        num_actors=num_actors,
        batch_size=batch_size,
        columns=columns,
        raw=raw,
        num_cpus_per_actor=num_cpus_per_actor,
        num_gpus_per_actor=num_gpus_per_actor,
    )  # checks the columns; lazy, like every Ray Dataset
    _check_no_nulls(dataset, columns)
    rows = 0
    with TableWriter(output, out_format) as writer:
        for table in scored.iter_batches(batch_size=None, batch_format="pyarrow"):
            writer.write(table)
            rows += table.num_rows
    return rows
