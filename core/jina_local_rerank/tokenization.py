"""Pair encoding ``<s> query </s></s> document </s>`` with the checkpoint's byte-level BPE tokenizer.

Queries and documents are tokenized separately (each query once, however many documents it is paired with) and
joined with the special tokens, which gives the same ids as the original tokenizer's pair encoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tokenizers import Tokenizer

from .checkpoint_files import read_json, read_json_text
from .errors import CheckpointError

SPECIAL_TOKENS_PER_PAIR = 4  # <s> q </s></s> d </s>


def replace_lone_surrogates(text: str) -> str:
    """Join valid surrogate pairs and replace lone surrogates (not encodable as UTF-8) with U+FFFD."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


@dataclass(frozen=True)
class EncodedPairs:
    """Token sequences to score (special tokens included) and how they map back to the input pairs.

    ``pair_of_sequence[k]`` is the pair that sequence ``k`` belongs to: one sequence per pair, or several overlapping
    windows of one long document when chunking. ``document_truncated[i]`` tells whether pair ``i`` lost document
    tokens; ``windows[i]`` how many sequences pair ``i`` was scored as.
    """

    input_ids: list[list[int]]
    pair_of_sequence: list[int]
    document_truncated: list[bool]
    query_truncated: list[bool]
    windows: list[int]


# With long_document="chunk", the most windows one document may be split into. Each window is a sequence of up to
# max_length tokens held in memory until scored: 256 full windows of the v1 models' 8,192 tokens are 2M tokens,
# a document of about 1M tokens (some 4 MB of English) at the default stride.
MAX_CHUNK_WINDOWS = 256


def window_starts(length: int, room: int, stride: int) -> list[int]:
    """Start offsets of windows of ``room`` tokens over ``length`` tokens, ``stride`` apart; the last ends at the end."""
    if length <= room:
        return [0]
    starts = list(range(0, length - room, stride))
    starts.append(length - room)
    return starts


def window_count(length: int, room: int, stride: int) -> int:
    """``len(window_starts(length, room, stride))``, without building the list."""
    return 1 if length <= room else -(-(length - room) // stride) + 1


def check_window_count(index: int, length: int, room: int, stride: int) -> None:
    """Raise ``ValueError`` if document ``index`` of ``length`` tokens needs more than ``MAX_CHUNK_WINDOWS`` windows."""
    count = window_count(length, room, stride)
    if count <= MAX_CHUNK_WINDOWS:
        return
    smallest_stride = -(-(length - room) // (MAX_CHUNK_WINDOWS - 1))
    fix = (
        f"raise chunk_stride to at least {smallest_stride}"
        if smallest_stride <= room
        else f"split the document (even chunk_stride {room}, a whole window, is not enough)"
    )
    raise ValueError(
        f"the document at index {index} ({length} tokens) needs {count} windows of {room} tokens at chunk_stride "
        f"{stride}, more than the {MAX_CHUNK_WINDOWS} allowed per document (MAX_CHUNK_WINDOWS): {fix}, or use "
        "long_document='truncate'"
    )


class PairTokenizer:
    """Encodes (query, document) pairs for the cross-encoder; lengths are in tokens."""

    def __init__(self, tokenizer: Tokenizer, cls_id: int, sep_id: int, pad_id: int) -> None:
        self.tokenizer = tokenizer
        self.cls_id = cls_id
        self.sep_id = sep_id
        self.pad_id = pad_id

    @classmethod
    def from_directory(cls, directory: Path, vocab_size: int) -> "PairTokenizer":
        """Load ``tokenizer.json``; special tokens are named by ``special_tokens_map.json``/``tokenizer_config.json``.

        ``vocab_size`` is the rows of the model's embedding table: every id the tokenizer can produce must be one.
        """
        path = directory / "tokenizer.json"
        text = read_json_text(path)
        try:
            tokenizer = Tokenizer.from_str(text)
        except Exception as exc:  # tokenizers raises a bare Exception for malformed files
            raise CheckpointError(f"{path}: cannot load the tokenizer ({exc})") from None
        tokenizer.no_truncation()
        tokenizer.no_padding()
        largest = max(tokenizer.get_vocab(with_added_tokens=True).values(), default=-1)
        if largest >= vocab_size:
            raise CheckpointError(
                f"{path}: the tokenizer has ids up to {largest}, but the model's embedding table has {vocab_size} "
                f"rows (vocab_size in config.json): the tokenizer does not belong to these weights"
            )
        names = {"cls_token": "<s>", "sep_token": "</s>", "pad_token": "<pad>"}
        for filename in ("tokenizer_config.json", "special_tokens_map.json"):
            names.update(_special_token_names(directory / filename))
        ids = {}
        for role, token in names.items():
            token_id = tokenizer.token_to_id(token)
            if token_id is None:
                raise CheckpointError(f"{path}: special token {role}={token!r} is not in the vocabulary")
            ids[role] = token_id
        return cls(tokenizer, ids["cls_token"], ids["sep_token"], ids["pad_token"])

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens."""
        try:
            encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        except TypeError:
            # Raised for strings with lone surrogates; types were checked by the caller.
            encodings = self.tokenizer.encode_batch(
                [replace_lone_surrogates(t) for t in texts], add_special_tokens=False
            )
        return [encoding.ids for encoding in encodings]

    def encode_pairs(
        self,
        queries: Sequence[str],
        pairs: Sequence[tuple[int, str]],
        *,
        max_length: int,
        max_query_length: int,
        long_document: str = "truncate",
        chunk_stride: int | None = None,
        truncation_side: str = "right",
        max_document_length: int | None = None,
    ) -> EncodedPairs:
        """Encode ``pairs`` of (index into ``queries``, document) within ``max_length`` tokens.

        Each query keeps at most ``max_query_length`` tokens. A document longer than what is left of the window
        (its room) is truncated, or with ``long_document="chunk"`` split into overlapping windows of the room,
        ``chunk_stride`` tokens apart (default half the room, at most the room), each encoded as its own sequence;
        a document that would need more than ``MAX_CHUNK_WINDOWS`` windows raises ``ValueError``.
        ``truncation_side="left"`` keeps a truncated document's end instead of its start; ``max_document_length``
        first cuts every document to that many tokens (counted as truncation).
        """
        if truncation_side not in ("right", "left"):
            raise ValueError(f"truncation_side must be 'right' or 'left', got {truncation_side!r}")
        query_ids = self.tokenize(queries)
        doc_ids = self.tokenize([doc for _, doc in pairs])
        input_ids: list[list[int]] = []
        pair_of_sequence: list[int] = []
        doc_truncated, query_truncated, windows = [], [], []
        for pair_index, ((query_index, _), doc) in enumerate(zip(pairs, doc_ids)):
            query = query_ids[query_index]
            query_truncated.append(len(query) > max_query_length)
            query = query[:max_query_length]
            room = max_length - SPECIAL_TOKENS_PER_PAIR - len(query)
            capped = max_document_length is not None and len(doc) > max_document_length
            if capped:
                doc = doc[-max_document_length:] if truncation_side == "left" else doc[:max_document_length]
            if long_document == "chunk":
                stride = max(1, min(chunk_stride or room // 2, room))
                check_window_count(pair_index, len(doc), room, stride)
                starts = window_starts(len(doc), room, stride)
                doc_truncated.append(capped)
            else:
                starts = [max(0, len(doc) - room) if truncation_side == "left" else 0]
                doc_truncated.append(capped or len(doc) > room)
            windows.append(len(starts))
            for start in starts:
                window = doc[start : start + room]
                input_ids.append([self.cls_id, *query, self.sep_id, self.sep_id, *window, self.sep_id])
                pair_of_sequence.append(pair_index)
        return EncodedPairs(input_ids, pair_of_sequence, doc_truncated, query_truncated, windows)


def _special_token_names(path: Path) -> dict[str, str]:
    """The special tokens ``path`` names (``cls_token`` etc. as strings or ``{"content": ...}``), if it exists."""
    if not path.exists():
        return {}
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: {path.name} must hold a JSON object, got {type(raw).__name__}")
    names = {}
    for role in ("cls_token", "sep_token", "pad_token"):
        value = raw.get(role)
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            names[role] = value
        elif value is not None:
            raise CheckpointError(
                f"{path}: {role} must be a string or an object with a string 'content', got {type(value).__name__}"
            )
    return names
