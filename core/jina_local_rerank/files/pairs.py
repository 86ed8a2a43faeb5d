"""Files of (query, document) pairs: their formats, adding a score column, and scoring one in this process.

A pairs file is JSON Lines (one object per line) or Parquet with a query column and a document column (names
configurable); the scored copy holds the same rows, in the same order, with every input column kept and a score
column added. Tables are Apache Arrow's (``pyarrow``), in this process and in the Ray Data job alike, so both
write identical files.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import DatasetError, FileProblem
from ..install_hints import extra_imports
from ..progress import progress_bar
from .user_files import atomic_output, check_input_file, check_output_path

if TYPE_CHECKING:
    import pyarrow as pa


class PairScorer(Protocol):
    """What scores the pairs of a file: :class:`~jina_local_rerank.Reranker` (files know nothing of the engine)."""

    def score_pairs(self, pairs: Sequence[Sequence[str]], *, raw: bool = False) -> Any: ...


FORMATS = ("jsonl", "parquet")
_SUFFIX_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
DEFAULT_BATCH_ROWS = 256


@dataclass(frozen=True)
class PairColumns:
    """Column names: ``query`` and ``document`` are read, ``score`` is added (and must not exist yet)."""

    query: str = "query"
    document: str = "document"
    score: str = "score"

    def __post_init__(self) -> None:
        names = (self.query, self.document, self.score)
        for name in names:
            if not isinstance(name, str) or not name:
                raise ValueError(f"column names must be non-empty strings, got {name!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"query, document and score columns must differ, got {names}")


def _pyarrow():
    with extra_imports("Parquet and Arrow pairs files", "ray"):
        import pyarrow
    return pyarrow


def file_format(path: str | os.PathLike[str], given: str | None = None) -> str:
    """``given`` if set, else the format named by ``path``'s suffix (.jsonl/.ndjson/.json or .parquet/.pq)."""
    if given is not None:
        if given not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {given!r}")
        return given
    fmt = _SUFFIX_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise FileProblem(
            f"cannot tell the format of {os.fspath(path)!r} from its suffix; name a .jsonl or .parquet file or "
            f"pass the format ({', '.join(FORMATS)})"
        )
    return fmt


def check_schema(names: Sequence[str], types: Sequence[pa.DataType], columns: PairColumns) -> None:
    """Raise ``DatasetError`` unless the query and document columns exist as strings and the score column does not.

    ``names`` and ``types`` are the input's column names and Arrow types, in the same order.
    """
    pa = _pyarrow()
    names = list(names)
    for role, name in (("query", columns.query), ("document", columns.document)):
        if name not in names:
            raise DatasetError(f"no {role} column {name!r} in the input; its columns are {names}")
        column_type = types[names.index(name)]
        if not (pa.types.is_string(column_type) or pa.types.is_large_string(column_type)):
            raise DatasetError(f"{role} column {name!r} must hold strings, got {column_type}")
    if columns.score in names:
        raise DatasetError(f"the input already has a {columns.score!r} column; choose another score column name")


def add_scores(
    table: pa.Table, reranker: PairScorer, columns: PairColumns, *, raw: bool = False, first_row: int | None = None
) -> pa.Table:
    """``table`` with a float64 score column appended: sigmoid scores (logits if ``raw``) of its pairs.

    ``first_row`` is the file row of the table's first row, to name a bad row in errors (None: unknown).
    """
    pa = _pyarrow()
    check_schema(table.schema.names, table.schema.types, columns)
    queries = table.column(columns.query).to_pylist()
    documents = table.column(columns.document).to_pylist()
    for offset, (query, document) in enumerate(zip(queries, documents)):
        if query is None or document is None:
            where = f"row {first_row + offset} (0-based)" if first_row is not None else "a row"
            missing = columns.query if query is None else columns.document
            raise DatasetError(f"{where} has no {missing!r} value (null)")
    scores = reranker.score_pairs(list(zip(queries, documents)), raw=raw).scores
    return table.append_column(pa.field(columns.score, pa.float64()), pa.array(scores, pa.float64()))


def read_tables(path: str | os.PathLike[str], fmt: str, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[pa.Table]:
    """The file's rows as consecutive tables of at most ``batch_rows`` rows, read as they are needed.

    A file Arrow cannot parse (bad JSON, not UTF-8, not Parquet) raises ``FileProblem`` naming it.
    """
    pa = _pyarrow()
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
                yield pa.Table.from_batches([batch])
            return
        import pyarrow.json as pj

        with pj.open_json(path) as reader:
            for block in reader:  # blocks are sized in bytes, not rows
                for start in range(0, block.num_rows, batch_rows):
                    yield pa.Table.from_batches([block.slice(start, batch_rows)])
    except pa.ArrowException as exc:
        raise FileProblem(f"{os.fspath(path)} cannot be read as {fmt}: {exc}") from None


class TableWriter:
    """Writes tables to one JSONL or Parquet file in the order given (a context manager).

    Rows go to a temporary file that replaces ``path`` only when the ``with`` block ends without an error (see
    :func:`~jina_local_rerank.files.user_files.atomic_output`): a failed run leaves an existing file untouched.
    """

    def __init__(self, path: str | os.PathLike[str], fmt: str) -> None:
        self.path = Path(path)
        self.format = fmt
        self._parquet = None
        self._jsonl = None
        self._temporary: Path | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> TableWriter:
        self._temporary = self._stack.enter_context(atomic_output(self.path))
        if self.format == "jsonl":
            self._jsonl = self._stack.enter_context(open(self._temporary, "w", encoding="utf-8"))
        return self

    def write(self, table: pa.Table) -> None:
        """Append ``table``'s rows to the output file."""
        if self._temporary is None:
            raise RuntimeError("TableWriter must be used in a with block")
        if self._jsonl is not None:
            for row in table.to_pylist():
                # default=str: dates and decimals read from Parquet have no JSON type of their own.
                self._jsonl.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            return
        if self._parquet is None:
            import pyarrow.parquet as pq

            self._parquet = pq.ParquetWriter(self._temporary, table.schema)
        self._parquet.write_table(table)

    def __exit__(self, *exc_info: object) -> bool | None:
        if exc_info[0] is None and self.format == "parquet":
            if self._parquet is not None:
                self._parquet.close()
            else:  # no rows at all: still leave a valid (empty) Parquet file
                import pyarrow.parquet as pq

                pq.write_table(_pyarrow().table({}), self._temporary)
        elif self._parquet is not None:
            self._parquet.close()
        return self._stack.__exit__(*exc_info)


def score_pairs_file_local(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    reranker: PairScorer,
    columns: PairColumns = PairColumns(),
    raw: bool = False,
    input_format: str | None = None,
    output_format: str | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    show_progress: bool = False,
) -> int:
    """Score every pair of ``input`` in this process and write the rows plus scores to ``output``; returns rows.

    ``output`` must differ from ``input``; it is replaced only once every row was scored and written. With
    ``show_progress``, a progress bar of rows shows on stderr when the work takes more than a few seconds.
    """
    check_input_file(input)
    check_output_path(output, input)
    in_format = file_format(input, input_format)
    out_format = file_format(output, output_format)
    rows = 0
    with TableWriter(output, out_format) as writer, progress_bar("scoring", "row", show_progress) as progress:
        for table in read_tables(input, in_format, batch_rows):
            writer.write(add_scores(table, reranker, columns, raw=raw, first_row=rows))
            rows += table.num_rows
            progress.update(table.num_rows)
    return rows
