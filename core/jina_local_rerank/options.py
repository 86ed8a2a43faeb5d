"""The engine options: which checkpoint to load and how to score with it, as one frozen, validated object.

:class:`RerankerOptions` is the one home of these options: their defaults, their checks (one rule per option,
whatever the entry point), their conversion to and from plain dicts (for the adapters' serialization), and their
command-line flags (:func:`add_option_arguments`, :func:`options_from_args`). ``Reranker``, every framework
adapter, every subcommand, the server and the Ray jobs take their options here, so adding an option is a change
in this file. No torch is imported: ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Collection, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from .flags import add_field_arguments, positive_int, setting, values_from_args
from .validation import (
    DEVICE_HELP,
    DTYPE_ALIASES,
    DTYPES,
    check_choice,
    check_optional_positive_int,
    check_optional_text,
    check_positive_int,
    dtype_name,
    torch_name,
)

DEFAULT_MAX_BATCH_TOKENS = 16384
DEFAULT_MAX_QUERY_LENGTH = 512
LONG_DOCUMENT_MODES = ("truncate", "chunk")
CHUNK_AGGREGATIONS = ("max", "mean_top2")
# The options that add text around every query and document before scoring.
TEXT_AFFIXES = ("query_prefix", "query_suffix", "document_prefix", "document_suffix")


@dataclass(frozen=True)
class RerankerOptions:
    """Everything that decides a :class:`~jina_local_rerank.Reranker`'s scores; lengths are in tokens.

    Frozen and hashable: equal options mean the same reranker (see
    :func:`~jina_local_rerank.reranker_for`). Invalid values raise ``TypeError``/``ValueError`` naming
    the option at construction.
    """

    model: str | None = setting(
        None,
        "Hub id or local directory of the checkpoint (default: $JINA_LOCAL_RERANK_MODEL, else "
        "jinaai/jina-reranker-v1-tiny-en). A relative path that exists is a directory, never a Hub id.",
    )
    revision: str | None = setting(None, "Hub revision of the model: branch, tag or commit")
    device: str = setting("auto", f"where to run: {DEVICE_HELP}")
    dtype: str = setting(
        "auto",
        "weights and activations: 'auto' (bf16 on CUDA where supported, else fp16; fp32 elsewhere), 'float32', "
        "'bfloat16', 'float16', or 'int8' (CPU: linear layers quantized; logits move by tenths, see docs/concepts.md)",
        choices=DTYPES + tuple(DTYPE_ALIASES),
    )
    max_length: int | None = setting(None, "pair window in tokens (default: the model's, 8192)", type=positive_int)
    max_query_length: int | None = setting(
        None, f"query cap in tokens (default: min({DEFAULT_MAX_QUERY_LENGTH}, max_length // 2))", type=positive_int
    )
    max_batch_tokens: int = setting(
        DEFAULT_MAX_BATCH_TOKENS,
        "tokens per forward pass, which bounds memory: padded tokens (rows x longest), or with the fused GPU "
        "attention the packed tokens",
        type=positive_int,
    )
    max_batch_size: int | None = setting(
        None, "sequences per forward pass at most (default: only max_batch_tokens bounds a batch)", type=positive_int
    )
    query_prefix: str = setting("", "text put before every query before scoring (an instruction some models want)")
    query_suffix: str = setting("", "text put after every query before scoring")
    document_prefix: str = setting("", "text put before every document before scoring (then truncated as one text)")
    document_suffix: str = setting(
        "", "text put after every document before scoring (cut away with the end of a document that does not fit)"
    )
    long_document: str = setting(
        "truncate",
        "a document longer than the window: 'truncate' it, or 'chunk' it into overlapping windows",
        choices=LONG_DOCUMENT_MODES,
    )
    chunk_stride: int | None = setting(None, "tokens between chunk windows (default: half a window)", type=positive_int)
    chunk_aggregation: str = setting(
        "max", "how chunk logits combine: 'max', or 'mean_top2' (the mean of the best two)", choices=CHUNK_AGGREGATIONS
    )
    cache_dir: str | None = setting(None, "Hugging Face cache folder (default: the hub's, $HF_HUB_CACHE)")
    token: str | bool | None = setting(
        None, "Hugging Face token for private or gated models (default: $HF_TOKEN or the saved login)", secret=True
    )

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "model", check_optional_text(self.model, "model"))
        set_(self, "revision", check_optional_text(self.revision, "revision"))
        set_(self, "cache_dir", check_optional_text(self.cache_dir, "cache_dir"))
        device = torch_name(self.device)
        if device is None:
            device = "auto"
        if not isinstance(device, str) or not device:
            raise TypeError(f"device must be a string such as {DEVICE_HELP}, got {type(self.device).__name__}")
        set_(self, "device", device)
        set_(self, "dtype", dtype_name(self.dtype))
        for name in ("max_length", "max_query_length", "chunk_stride", "max_batch_size"):
            check_optional_positive_int(getattr(self, name), name)
        for name in TEXT_AFFIXES:
            value = getattr(self, name)
            if value is None:
                set_(self, name, "")
            elif not isinstance(value, str):
                raise TypeError(f"{name} must be a string, got {type(value).__name__}")
        if self.max_batch_tokens is None:
            set_(self, "max_batch_tokens", DEFAULT_MAX_BATCH_TOKENS)
        check_positive_int(self.max_batch_tokens, "max_batch_tokens")
        check_choice(self.long_document, LONG_DOCUMENT_MODES, "long_document")
        check_choice(self.chunk_aggregation, CHUNK_AGGREGATIONS, "chunk_aggregation")
        if self.token is not None and not isinstance(self.token, (str, bool)):
            raise TypeError(f"token must be a string, a bool or None, got {type(self.token).__name__}")

    def replace(self, **changes: Any) -> RerankerOptions:
        """A copy with ``changes`` applied (and checked)."""
        return replace(self, **changes)

    def with_default_model(self) -> RerankerOptions:
        """These options with ``model`` set: as given, else :func:`~jina_local_rerank.checkpoint.default_model`."""
        from .checkpoint.hub import default_model

        return self if self.model is not None else self.replace(model=default_model())

    def checkpoint_dir(self) -> Path:
        """The local folder of the checkpoint (the default model when none is set): the directory itself, or
        the Hub id's snapshot fetched with this ``revision``, ``cache_dir`` and ``token``."""
        from .checkpoint.hub import resolve_model_dir

        model = self.with_default_model().model
        return resolve_model_dir(model, revision=self.revision, cache_dir=self.cache_dir, token=self.token)

    def to_dict(self, *, secrets: bool = False) -> dict[str, Any]:
        """Every option by name, as plain JSON values; the token only with ``secrets`` (never serialize it)."""
        return {
            option.name: getattr(self, option.name)
            for option in fields(self)
            if secrets or not option.metadata.get("secret")
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RerankerOptions:
        """Options from :meth:`to_dict` output (or any subset of the names); an unknown name is a ``TypeError``."""
        if not isinstance(data, Mapping):
            raise TypeError(f"options must be a mapping of option names to values, got {type(data).__name__}")
        unknown = sorted(set(data) - set(OPTION_NAMES))
        if unknown:
            raise TypeError(f"unknown option(s) {', '.join(map(repr, unknown))}; known: {', '.join(OPTION_NAMES)}")
        return cls(**data)


OPTION_NAMES: tuple[str, ...] = tuple(option.name for option in fields(RerankerOptions))


def add_option_arguments(
    parser: argparse.ArgumentParser,
    title: str = "model and scoring",
    *,
    only: Collection[str] | None = None,
    help: Mapping[str, str] | None = None,
) -> None:
    """Register one ``--flag`` per option (``--max-batch-tokens`` for ``max_batch_tokens``...) in a group.

    ``only`` limits the flags to those options (a command that refuses the others does not list them); ``help``
    replaces an option's help where the command gives it another meaning or default.
    """
    add_field_arguments(parser, RerankerOptions, title=title, only=only, help=help)


def options_from_args(args: argparse.Namespace) -> RerankerOptions:
    """The options a subcommand's flags (registered by :func:`add_option_arguments`) describe; an option the
    command has no flag for keeps its default."""
    return RerankerOptions(**values_from_args(RerankerOptions, args))


# The options that name the checkpoint: its weights decide the logits.
CHECKPOINT_NAME_OPTIONS = ("model", "revision")
# The options that say where a checkpoint's files come from and where it runs: the same checkpoint gives the same
# logits whatever they are.
LOGIT_NEUTRAL_OPTIONS = ("cache_dir", "token", "device")


def logit_options(options: RerankerOptions, *, checkpoint_name: bool = True) -> dict[str, Any]:
    """The options that decide the logits of scoring with ``options``, by name (JSON values): all but the
    :data:`LOGIT_NEUTRAL_OPTIONS`, and without the :data:`CHECKPOINT_NAME_OPTIONS` unless ``checkpoint_name``
    (for a caller that knows the checkpoint otherwise: by its content, or as the folder it exports)."""
    left_out = LOGIT_NEUTRAL_OPTIONS + (() if checkpoint_name else CHECKPOINT_NAME_OPTIONS)
    return {name: value for name, value in options.to_dict().items() if name not in left_out}


def pair_lengths(options: RerankerOptions, window: int, default_max_length: int | None = None) -> tuple[int, int]:
    """``(max_length, max_query_length)`` in tokens of scoring with ``options`` on a model of a ``window``-token
    window: ``max_length`` as set (at most the window), else ``default_max_length`` (default: the window) capped
    at the window; ``max_query_length`` as set, else ``min(DEFAULT_MAX_QUERY_LENGTH, max_length // 2)``.

    ``ValueError`` naming them where ``max_length`` exceeds the window or the query cap leaves the document no
    token of the pair.
    """
    from .engine.tokenization import SPECIAL_TOKENS_PER_PAIR  # loads the tokenizer library: not for --help

    if options.max_length is not None and options.max_length > window:
        raise ValueError(f"max_length {options.max_length} exceeds the model's window of {window} tokens")
    max_length = options.max_length or min(default_max_length or window, window)
    max_query_length = options.max_query_length or min(DEFAULT_MAX_QUERY_LENGTH, max_length // 2)
    if max_query_length > max_length - SPECIAL_TOKENS_PER_PAIR - 1:
        raise ValueError(
            f"max_query_length {max_query_length} leaves no room for the document within max_length {max_length}"
        )
    return max_length, max_query_length
