"""Teacher logits for distillation: any local checkpoint scored through the engine, cached on disk.

The cache is keyed on the teacher's content (a hash of its ``config.json``, weights and tokenizer, so a changed
checkpoint is never read from a stale cache), the scoring settings that change logits (dtype, lengths,
long-document handling) and each (query, document) pair, so a rerun, or a run on more data, scores only the
pairs it has not seen. Pairs are scored in chunks and the cache is saved (atomically) whenever a tenth of it is
new: an interrupted scoring run keeps nearly all it finished.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..checkpoint.format import PYTORCH_BIN_FILE, SAFETENSORS_FILE
from ..files.user_files import atomic_output, cache_home
from ..options import RerankerOptions, logit_options
from ..progress import Progress, progress_bar
from .data import TARGET_LIMIT, QueryGroup

CHUNK_PAIRS = 4096
KEY_BYTES = 16

logger = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/jina-local-rerank/teacher-scores`` (``~/.cache/...`` when unset)."""
    return cache_home() / "teacher-scores"


def checkpoint_hash(directory: Path) -> str:
    """sha256 over the files that decide a checkpoint's logits: config, weights and tokenizer."""
    digest = hashlib.sha256()
    for name in ("config.json", SAFETENSORS_FILE, PYTORCH_BIN_FILE, "tokenizer.json"):
        path = directory / name
        if path.is_file():
            digest.update(name.encode() + b"\0")
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def pair_key(query: str, document: str) -> bytes:
    """The cache key of one pair."""
    return hashlib.blake2b(f"{query}\0{document}".encode("utf-8", "surrogatepass"), digest_size=KEY_BYTES).digest()


def _check_logits(logits: list[float], chunk: list[tuple[bytes, tuple[str, str]]], options: RerankerOptions) -> None:
    """``ValueError`` naming the first pair the teacher gave a non-finite (or absurd) logit, before it is cached."""
    for logit, (_, (query, _document)) in zip(logits, chunk):
        if not (math.isfinite(logit) and abs(logit) <= TARGET_LIMIT):
            raise ValueError(
                f"teacher {options.model} gave the logit {logit} for a pair of query {query[:60]!r} (dtype "
                f"{options.dtype}; float32 avoids overflow); nothing of this chunk was cached"
            )


@dataclass(frozen=True)
class TeacherReport:
    """What one :meth:`TeacherScorer.score_groups` call did: pairs scored by the model, pairs read from the cache."""

    scored: int
    cached: int
    cache_file: Path


class TeacherScorer:
    """Raw logits of a teacher checkpoint for (query, document) pairs, through :class:`~jina_local_rerank.Reranker`.

    ``options`` are the engine options of the teacher (its ``model``, device, dtype, lengths); ``cache_dir``
    holds one file per teacher and settings (default :func:`default_cache_dir`). The model is loaded only when
    some pair is not cached, and released afterwards.
    """

    def __init__(self, options: RerankerOptions, cache_dir: str | os.PathLike[str] | None = None) -> None:
        if options.model is None:
            raise ValueError("the teacher's options must name its model")
        self.options = options
        self.directory = options.checkpoint_dir()
        self.content_hash = checkpoint_hash(self.directory)
        settings = logit_options(options, checkpoint_name=False)  # the checkpoint is known by its content hash
        fingerprint = hashlib.sha256(repr(sorted(settings.items())).encode()).hexdigest()[:12]
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.cache_file = cache / f"{self.content_hash[:24]}-{fingerprint}.npz"

    def _read_cache(self) -> dict[bytes, float]:
        """The cached logits; a damaged file is set aside (every pair is rescored) and damaged entries dropped
        (those pairs are rescored), with a warning naming the file: a bad cache never reaches training."""
        if not self.cache_file.is_file():
            return {}
        try:
            with np.load(self.cache_file, allow_pickle=False) as saved:
                keys, logits = saved["keys"], saved["logits"]
            if keys.dtype != np.uint8 or keys.ndim != 2 or keys.shape[1] != KEY_BYTES:
                raise ValueError(f"its keys are {keys.dtype} {list(keys.shape)}, not uint8 [n, {KEY_BYTES}]")
            if logits.dtype.kind != "f" or logits.shape != (len(keys),):
                raise ValueError(f"its logits are {logits.dtype} {list(logits.shape)}, not float [{len(keys)}]")
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            logger.warning(
                "%s: teacher score cache cannot be read (%s); every pair is scored again and the file replaced",
                self.cache_file,
                str(exc)[:200] or type(exc).__name__,
            )
            return {}
        cache = {
            bytes(key): float(logit)
            for key, logit in zip(keys, logits)
            if math.isfinite(logit) and abs(logit) <= TARGET_LIMIT
        }
        if len(cache) < len(keys):
            logger.warning(
                "%s: %d damaged teacher scores (not finite, or beyond +-%g) dropped; those pairs are scored again",
                self.cache_file,
                len(keys) - len(cache),
                TARGET_LIMIT,
            )
        return cache

    def _write_cache(self, cache: dict[bytes, float]) -> None:
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        keys = np.frombuffer(b"".join(cache), dtype=np.uint8).reshape(-1, KEY_BYTES)
        with atomic_output(self.cache_file, "teacher score cache") as temporary:
            with temporary.open("wb") as handle:  # a file object: np.savez would append .npz to a path
                np.savez(handle, keys=keys, logits=np.array(list(cache.values()), dtype=np.float64))

    def score_pairs(
        self, pairs: list[tuple[str, str]], show_progress: Progress = False
    ) -> tuple[list[float], TeacherReport]:
        """The teacher's raw logit for every pair, in order, and how many were scored rather than read."""
        cache = self._read_cache()
        keys = [pair_key(query, document) for query, document in pairs]
        missing = list({key: pair for key, pair in zip(keys, pairs) if key not in cache}.items())
        if missing:
            from ..engine.devices import resolve_device, resolve_dtype
            from ..engine.scoring_engine import cached_engines, engine_key
            from ..reranker import Reranker

            device = resolve_device(self.options.device)
            key = engine_key(
                self.options.model, self.options.revision, device, resolve_dtype(self.options.dtype, device)
            )
            loaded_before = key in cached_engines()  # someone else's engine: leave it loaded
            reranker = Reranker(self.options)
            try:
                with progress_bar("teacher scoring", "pair", show_progress, total=len(missing)) as progress:
                    unsaved = 0
                    for start in range(0, len(missing), CHUNK_PAIRS):
                        chunk = missing[start : start + CHUNK_PAIRS]
                        logits = reranker.score_pairs([list(pair) for _, pair in chunk], raw=True).logits
                        _check_logits(logits, chunk, self.options)
                        cache.update((key, logit) for (key, _), logit in zip(chunk, logits))
                        unsaved += len(chunk)
                        # Saved when a tenth of the cache is new (and at the end): the rewrites add up to a few
                        # times the final file, not the square of it.
                        if unsaved >= len(cache) // 10 or start + CHUNK_PAIRS >= len(missing):
                            self._write_cache(cache)
                            unsaved = 0
                        progress.update(len(chunk))
            finally:
                if not loaded_before:
                    reranker.release()
        report = TeacherReport(scored=len(missing), cached=len(set(keys)) - len(missing), cache_file=self.cache_file)
        return [cache[key] for key in keys], report

    def score_lists(
        self, lists: Sequence[tuple[str, Sequence[str]]], show_progress: Progress = False
    ) -> tuple[list[tuple[float, ...]], TeacherReport]:
        """The teacher's raw logits for the documents of every ``(query, documents)`` list, list by list."""
        pairs = [(query, document) for query, documents in lists for document in documents]
        logits, report = self.score_pairs(pairs, show_progress)
        scored, start = [], 0
        for _, documents in lists:
            scored.append(tuple(logits[start : start + len(documents)]))
            start += len(documents)
        return scored, report

    def score_groups(
        self, groups: tuple[QueryGroup, ...] | list[QueryGroup], show_progress: Progress = False
    ) -> tuple[list[QueryGroup], TeacherReport]:
        """``groups`` with ``teacher`` set to this teacher's logits for every document."""
        logits, report = self.score_lists([(group.query, group.documents) for group in groups], show_progress)
        return [replace(group, teacher=scores) for group, scores in zip(groups, logits)], report
