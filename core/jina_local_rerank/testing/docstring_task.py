"""A retrieval task every machine has offline, and the trained JinaBERT built on it.

The standard library's docstrings: a docstring's summary line is the query, that whole docstring its one relevant
document, every other docstring a candidate. :func:`write_docstring_dataset` writes it in BEIR layout (a
``train`` and a ``test`` dataset), so it exercises the same paths as a user's data, and
:func:`train_docstring_reranker` trains a small JinaBERT on it from random weights: a reranker whose rankings
mean something (held-out NDCG@10 far above an untrained model's), for tests and benchmarks that need one
(quantization agreement, long-document strategies).

The document keeps its summary line on purpose. Matching a summary to the rest of its docstring alone is a
semantic task that a transformer trained from random weights does not learn in minutes (measured: held-out
NDCG@10 stays within noise of the untrained model's after 1.5M training tokens), while finding the document
that states the query, among BM25's best candidates, it learns in one or two.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import random
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

from ..evaluation.metrics import ndcg_at
from ..options import RerankerOptions
from ..training.config import TrainingConfig
from ..training.evaluator import EvalQuery, RerankingEvaluator
from ..training.trainer import Trainer, TrainingResult
from .random_checkpoint import CheckpointShape, write_random_checkpoint

# Standard-library modules that import without side effects on every platform; their docstrings are the corpus.
# Not sys: its hooks are process state that test runners and debuggers replace (with other docstrings).
MODULES = (
    "abc argparse array ast asyncio.base_events asyncio.events asyncio.locks asyncio.protocols asyncio.queues "
    "asyncio.streams asyncio.subprocess asyncio.tasks asyncio.transports base64 bdb binascii bisect builtins bz2 "
    "calendar cmath cmd code codecs collections collections.abc concurrent.futures._base concurrent.futures.process "
    "concurrent.futures.thread configparser contextlib contextvars copy copyreg csv ctypes dataclasses datetime "
    "decimal difflib dis doctest email.generator email.header email.headerregistry email.message email.mime.text "
    "email.parser email.policy email.utils enum filecmp fileinput fnmatch fractions ftplib functools getopt getpass "
    "gettext glob graphlib gzip hashlib heapq hmac html html.parser http.client http.cookiejar http.server imaplib "
    "importlib.abc importlib.metadata importlib.resources importlib.util inspect io ipaddress itertools json "
    "json.decoder json.encoder linecache locale logging logging.config logging.handlers lzma mailbox math mimetypes "
    "multiprocessing.context multiprocessing.pool multiprocessing.queues netrc numbers operator optparse os pathlib "
    "pickle pickletools pkgutil platform plistlib poplib pprint queue quopri random re reprlib runpy sched secrets "
    "select selectors shlex shutil signal smtplib socket socketserver sqlite3 ssl stat statistics string struct "
    "subprocess symtable sysconfig tabnanny tarfile tempfile textwrap threading time timeit tokenize trace "
    "traceback tracemalloc unicodedata unittest.case unittest.mock urllib.error urllib.parse urllib.request "
    "urllib.robotparser uuid warnings wave weakref wsgiref.handlers wsgiref.simple_server xml.dom.minidom "
    "xml.etree.ElementTree xml.sax.handler xml.sax.saxutils zipfile zipimport zlib zoneinfo"
).split()
MIN_SUMMARY_WORDS = 4
MIN_DOCUMENT_WORDS = 15

# The trained reranker: small enough to train in under a minute on two CPU cores, deep enough to distill. No mining
# margin: each query has exactly one answer by construction, so BM25's best candidates are the hard negatives to
# learn from.
DOCSTRING_SHAPE = CheckpointShape(num_hidden_layers=4, hidden_size=64, num_attention_heads=4, intermediate_size=128)
DOCSTRING_MAX_LENGTH = 64
DOCSTRING_TEST_QUERIES = 100
DOCSTRING_CONFIG = TrainingConfig(
    epochs=2,
    learning_rate=1e-3,
    warmup_ratio=0.1,
    negatives=7,
    mining_margin=None,
    step_tokens=4096,
    eval_top_k=20,
    save_every=None,
    seed=0,
    show_progress="never",
)


def _documented(module_name: str) -> list[tuple[str, object]]:
    """The module, its public functions and classes, and the classes' public methods (C ones included)."""
    try:
        module = importlib.import_module(module_name)
    except ImportError:  # a module this build lacks (ssl, sqlite3, lzma can be left out)
        return []
    found: list[tuple[str, object]] = [(module_name, module)]
    for name, value in sorted(vars(module).items()):
        if name.startswith("_") or getattr(value, "__module__", module.__name__) not in (module.__name__, None):
            continue
        if inspect.isroutine(value):
            found.append((f"{module_name}.{name}", value))
        elif inspect.isclass(value):
            found.append((f"{module_name}.{name}", value))
            found += [
                (f"{module_name}.{name}.{attr}", member)
                for attr, member in sorted(vars(value).items())
                if not attr.startswith("_") and inspect.isroutine(member)
            ]
    return found


def docstring_pairs() -> list[tuple[str, str, str]]:
    """``(qualified name, summary line, rest of the docstring)`` of the documented standard-library objects.

    Summaries of at least four words with a rest of at least fifteen; a summary shared by two objects is dropped
    (it would have two answers). Sorted by name, so the same Python gives the same list.
    """
    pairs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated aliases warn when their docstrings are read
        for module_name in MODULES:
            for name, value in _documented(module_name):
                doc = value.__doc__ if isinstance(value.__doc__, str) else None
                if doc is None:
                    continue
                summary, _, rest = inspect.cleandoc(doc).partition("\n\n")
                summary, rest = " ".join(summary.split()), rest.strip()
                if len(summary.split()) >= MIN_SUMMARY_WORDS and len(rest.split()) >= MIN_DOCUMENT_WORDS:
                    pairs.append((name, summary, rest))
    counts: dict[str, int] = {}
    for _, summary, _ in pairs:
        counts[summary] = counts.get(summary, 0) + 1
    return sorted(pair for pair in pairs if counts[pair[1]] == 1)


def write_docstring_dataset(
    directory: str | os.PathLike[str], *, test_queries: int = DOCSTRING_TEST_QUERIES, seed: int = 0
) -> tuple[Path, Path]:
    """Write the docstring task as two BEIR-layout datasets, ``train/`` and ``test/``; returns their folders.

    ``test_queries`` summaries (drawn with ``seed``) and their documents form ``test`` (split ``test``), the
    others ``train`` (split ``train``). The corpora are disjoint: with one document per query, a document the
    training data only ever shows as a negative would teach the model that very document, not the task.
    """
    pairs = docstring_pairs()
    test = set(random.Random(seed).sample(range(len(pairs)), test_queries))
    folders = []
    for split, members in (("train", [i for i in range(len(pairs)) if i not in test]), ("test", sorted(test))):
        root = Path(directory) / split
        (root / "qrels").mkdir(parents=True, exist_ok=True)
        with (
            (root / "corpus.jsonl").open("w", encoding="utf-8") as corpus,
            (root / "queries.jsonl").open("w", encoding="utf-8") as queries,
        ):
            for index in members:
                name, summary, rest = pairs[index]
                document = {"_id": f"d{index}", "title": "", "text": f"{summary}\n\n{rest}"}
                corpus.write(json.dumps(document) + "\n")
                queries.write(json.dumps({"_id": f"q{index}", "text": summary, "name": name}) + "\n")
        rows = "".join(f"q{index}\td{index}\t1\n" for index in members)
        (root / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows, encoding="utf-8")
        folders.append(root)
    return folders[0], folders[1]


def train_docstring_reranker(
    directory: str | os.PathLike[str],
    *,
    config: TrainingConfig = DOCSTRING_CONFIG,
    dataset: str | os.PathLike[str] | None = None,
    device: str = "cpu",
) -> TrainingResult:
    """Train a small JinaBERT (``DOCSTRING_SHAPE``, the test tokenizer) from random weights on the docstring task
    and write it to ``directory``; evaluated on the held-out queries (BM25 top ``config.eval_top_k``).

    ``dataset`` is where the task is written (default: a temporary folder). The same ``config`` on the same
    Python and torch gives the same model.
    """
    with tempfile.TemporaryDirectory(prefix="docstring-task-") as scratch:
        train, test = write_docstring_dataset(
            Path(dataset) if dataset is not None else Path(scratch) / "dataset", seed=config.seed
        )
        start = write_random_checkpoint(Path(scratch) / "random-init", DOCSTRING_SHAPE, seed=config.seed)
        options = RerankerOptions(model=str(start), device=device, max_length=DOCSTRING_MAX_LENGTH)
        trainer = Trainer(
            options,
            train=train,
            eval=test,
            output=directory,
            config=config,
            state_dir=Path(scratch) / "state",
            overwrite=True,
        )
        return trainer.fit()


def held_out_queries(test: str | os.PathLike[str], top_k: int = DOCSTRING_CONFIG.eval_top_k) -> list[EvalQuery]:
    """The queries of the ``test`` dataset (from :func:`write_docstring_dataset`) with the BM25 top ``top_k`` the
    training evaluation reranks: the evaluator's own queries."""
    return RerankingEvaluator.from_beir(test, top_k=top_k).queries


def held_out_ndcg(queries: Sequence[EvalQuery], orders: Sequence[Sequence[int]]) -> float:
    """Mean NDCG@10 of ``queries`` with their candidates in ``orders`` (document indices, best first)."""
    scores = [ndcg_at([str(i) for i in order], query.qrels) for query, order in zip(queries, orders, strict=True)]
    return sum(scores) / len(scores)
