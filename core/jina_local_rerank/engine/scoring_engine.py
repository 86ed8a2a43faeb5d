"""The loaded model and tokenizer for one (model, revision, device, dtype), and the process-wide cache of them."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..checkpoint.hub import resolve_model_dir
from ..checkpoint.loading import load_checkpoint
from ..model.attention import PackedAttention, default_attention
from ..model.jinabert import JinaBertForReranking
from ..progress import Progress, progress_bar
from ..validation import torch_name
from .batching import balanced_batches, pack_batches
from .cpu_workers import cpu_worker_count, cpu_worker_pool
from .devices import resolve_device, resolve_dtype
from .tokenization import PairTokenizer

# CPU workers take the input in about CPU_WORKER_BATCHES batches per thread, of equal work, each of about
# CPU_WORKER_BATCH_TOKENS padded tokens (fewer and larger batches run more efficiently).
CPU_WORKER_BATCHES = 4
CPU_WORKER_BATCH_TOKENS = (1024, 4096)


@dataclass(frozen=True)
class EngineKey:
    """What makes two engines the same: the model, its revision, the device and the dtype."""

    model: str
    revision: str | None
    device: str
    dtype: str


class ScoringEngine:
    """A JinaBERT cross-encoder ready to score: model weights on a device plus the pair tokenizer.

    Thread-safe: forward passes do not mutate state. Shared by every [`Reranker`][jina_local_rerank.Reranker]
    (and every framework adapter) that asks for the same
    [`EngineKey`][jina_local_rerank.engine.scoring_engine.EngineKey].
    """

    def __init__(
        self,
        key: EngineKey,
        directory: Path,
        model: JinaBertForReranking,
        tokenizer: PairTokenizer,
        dtype: torch.dtype,
    ) -> None:
        self.key = key
        self.directory = directory
        self.model = model
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.dtype = dtype  # torch.qint8 for int8 linear layers (model/quantization.py)
        # Exact-length attention on CPUs (the native kernel for bf16 and int8 where it runs), one fused flex call per
        # layer on CUDA (see ``default_attention``); assignable, e.g. to compare modes.
        self.attention: type[PackedAttention] = default_attention(self.device, dtype)

    @property
    def max_length(self) -> int:
        """The model's window in tokens (``max_position_embeddings``, 8192 for the v1 family)."""
        return self.model.config.max_position_embeddings

    def _schedule(
        self, lengths: list[int], max_batch_tokens: int, max_batch_size: int | None = None
    ) -> tuple[list[list[int]], Callable[..., Iterable[list[float]]]]:
        """Batches of sequence indices and the ``map`` that scores them: in this thread, or on CPU workers.

        With several CPU threads, batches are cut smaller (see ``CPU_WORKER_BATCHES``) and, if there are at least as
        many as threads, scored side by side by single-threaded workers: then in a multiple of the workers' count
        and of equal work (dense layers and attention, :func:`balanced_batches`), so that the workers finish
        together. The budgets count packed tokens where the attention mode's cost grows with them alone
        (``packed_budget``), else padded ones.
        """
        packed = self.attention.packed_budget
        workers = cpu_worker_count() if self.device.type == "cpu" else 1
        if workers > 1:
            smallest, largest = CPU_WORKER_BATCH_TOKENS
            budget = min(max_batch_tokens, max(smallest, min(largest, sum(lengths) // (CPU_WORKER_BATCHES * workers))))
            cut = pack_batches(lengths, budget, packed=packed, max_batch_size=max_batch_size)
            if len(cut) >= workers:
                parts = -(-len(cut) // workers) * workers
                config = self.model.config
                balanced = balanced_batches(lengths, parts, lambda length: length * config.layer_flops(length))
                # A batch of equal work that breaks the caller's limits (a long sequence among many short ones, in
                # padded tokens) is split within them.
                batches = [
                    [group[i] for i in piece]
                    for group in balanced
                    for piece in pack_batches(
                        [lengths[i] for i in group], max_batch_tokens, packed=packed, max_batch_size=max_batch_size
                    )
                ]
                return batches, cpu_worker_pool(workers).map
        return pack_batches(lengths, max_batch_tokens, packed=packed, max_batch_size=max_batch_size), map

    def _forward(self, sequences: list[Sequence[int]]) -> list[float]:
        """Raw logits of one batch: the sequences packed end to end through one forward pass."""
        tokens = sum(map(len, sequences))
        packed = np.fromiter(itertools.chain.from_iterable(sequences), dtype=np.int64, count=tokens)
        input_ids = torch.from_numpy(packed).to(self.device)
        attention = self.attention([len(seq) for seq in sequences], self.model.alibi_slopes)
        with torch.inference_mode():
            return self.model(input_ids, attention).tolist()

    def warm_up(self, max_batch_tokens: int) -> None:
        """Run the forward passes after which no batch within ``max_batch_tokens`` meets a first-use cost.

        With ``FlexAttention`` (CUDA) that compiles one kernel per bucket of packed tokens up to
        ``max_batch_tokens`` (seconds each), so the first request after load is fast.
        """
        for lengths in self.attention.warm_up_batches(max_batch_tokens, self.max_length):
            self._forward([[self.tokenizer.cls_id] * length for length in lengths])

    def logits(
        self,
        sequences: Sequence[Sequence[int]],
        max_batch_tokens: int,
        show_progress: Progress = False,
        max_batch_size: int | None = None,
    ) -> list[float]:
        """Raw logits for token sequences, in input order; batches hold at most ``max_batch_tokens`` tokens: padded
        (rows x longest), or packed (their sum) with an attention mode whose cost grows with them alone (flex);
        and at most ``max_batch_size`` sequences when given.

        Identical sequences are scored once, so duplicates get bit-identical logits (exact ties). With
        ``show_progress``, work that takes more than a few seconds shows a progress bar on stderr.
        """
        slots: dict[tuple[int, ...], int] = {}
        slot_of = [slots.setdefault(tuple(seq), len(slots)) for seq in sequences]
        distinct = list(slots)
        results: list[float] = [0.0] * len(distinct)
        progress = progress_bar("scoring", "sequence", show_progress, total=len(distinct))
        batches, mapper = self._schedule([len(seq) for seq in distinct], max_batch_tokens, max_batch_size)

        def batch_logits(batch: list[int]) -> list[float]:
            return self._forward([distinct[i] for i in batch])

        with progress:
            for batch, logits in zip(batches, mapper(batch_logits, batches)):
                for index, value in zip(batch, logits):
                    results[index] = value
                progress.update(len(batch))
        return [results[slot] for slot in slot_of]


_cache: dict[EngineKey, ScoringEngine] = {}
_cache_lock = threading.Lock()


def engine_key(
    model: str | os.PathLike[str], revision: str | None, device: torch.device, dtype: torch.dtype
) -> EngineKey:
    """The cache key of a model on a device in a dtype; a local directory is keyed by its absolute path."""
    path = Path(model).expanduser()
    name = str(path.resolve()) if path.is_dir() else os.fspath(model)
    return EngineKey(name, revision, str(device), torch_name(dtype))


def get_engine(
    model: str | os.PathLike[str],
    *,
    revision: str | None = None,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | bool | None = None,
) -> ScoringEngine:
    """Return the process-wide engine for (model, revision, device, dtype), loading it on first use."""
    resolved_device = resolve_device(device)
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    key = engine_key(model, revision, resolved_device, resolved_dtype)
    with _cache_lock:
        engine = _cache.get(key)
        if engine is None:
            directory = resolve_model_dir(model, revision=revision, cache_dir=cache_dir, token=token)
            weights = load_checkpoint(directory, resolved_dtype, resolved_device)
            tokenizer = PairTokenizer.from_directory(directory, weights.config.vocab_size)
            engine = _cache[key] = ScoringEngine(key, directory, weights, tokenizer, resolved_dtype)
        return engine


def release_engine(engine: ScoringEngine) -> bool:
    """Drop ``engine`` from the process-wide cache; its memory is freed once no object holds it. True if it was
    cached."""
    with _cache_lock:
        if _cache.get(engine.key) is engine:
            del _cache[engine.key]
            return True
        return False


def is_cached(engine: ScoringEngine) -> bool:
    """Whether ``engine`` is still the process-wide engine for its key (not released or cleared)."""
    with _cache_lock:
        return _cache.get(engine.key) is engine


def clear_engine_cache() -> None:
    """Drop every cached engine (objects that still hold one keep it alive)."""
    with _cache_lock:
        _cache.clear()


def cached_engines() -> list[EngineKey]:
    """Keys of the engines currently loaded in this process."""
    with _cache_lock:
        return list(_cache)
