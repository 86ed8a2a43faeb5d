"""Pair encoding ``<s> query </s></s> document </s>`` with the checkpoint's byte-level BPE tokenizer.

Queries and documents are tokenized separately (each query once, however many documents it is paired with) and
joined with the special tokens, which gives the same ids as the original tokenizer's pair encoding.

Only as much of a long text is tokenized as the window can hold: the text is cut where the byte-level BPE
pre-tokenizer (GPT-2's pattern, no normalizer) always ends a pre-token (see :data:`SAFE_CUT`), so the tokens of
the part are exactly the whole text's first (or last) tokens. The work on a document is then bounded by the window,
not by the text's length (a text with no such place, one "word" of megabytes, is tokenized whole).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from ..checkpoint.files import read_json, read_json_text
from ..errors import CheckpointError

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


# Places a text can be cut so that tokenizing either part gives exactly the whole text's tokens of that part, with
# the byte-level BPE tokenizer of the v1 models (``ByteLevel`` pre-tokenizer with GPT-2's pattern, no normalizer).
# The pattern's pre-tokens are `` ?\p{L}+``, `` ?\p{N}+``, `` ?[^\s\p{L}\p{N}]+``, whitespace runs and contractions
# (``'s``...); none reaches from a non-space character over ASCII whitespace, nor from a letter or digit over
# punctuation. So a pre-token always ends (a) before ASCII whitespace that follows a character that is not
# whitespace under any Unicode version (a word character or printable ASCII), and (b) before ASCII or CJK
# punctuation that follows an ASCII letter or digit or a CJK ideograph (letters in every Unicode version). Matching
# never looks behind, and the part before such a place ends in a character that no whitespace lookahead reads, so
# both parts pre-tokenize as the whole text does there; BPE runs within each pre-token. The cut is at ``end()``.
SAFE_CUT = re.compile(
    r"[\w!-~](?=[ \t\n\r\x0b\x0c])"
    r"|[0-9A-Za-z\u4e00-\u9fff](?=[!-/:-@\[-`{-~\u3001\u3002\uff01\uff0c\uff1a\uff1b\uff1f])"
)
WHITESPACE_RUN = re.compile(r"[ \t\n\r\x0b\x0c]*")
# Characters per token guessed for the first cut (English averages about 4.5); each later try doubles it.
CHARS_PER_TOKEN_GUESS = 6


def cuts_safely(tokenizer_json: str) -> bool:
    """Whether the tokenizer described by ``tokenizer_json`` is one :data:`SAFE_CUT` holds for: a BPE model without
    dropout, no normalizer, and a lone ``ByteLevel`` pre-tokenizer using its pattern and no prefix space."""
    try:
        spec = json.loads(tokenizer_json)
        pre, model = spec.get("pre_tokenizer") or {}, spec.get("model") or {}
        return (
            spec.get("normalizer") is None
            and pre.get("type") == "ByteLevel"
            and pre.get("use_regex", True) is True
            and pre.get("add_prefix_space", False) is False
            and model.get("type") == "BPE"
            and model.get("dropout") is None
        )
    except (ValueError, AttributeError):
        return False


def touches_added_token(text: str, cut: int, added: Sequence[str]) -> bool:
    """Whether a cut of ``text`` at ``cut`` falls inside, or at either edge of, one of the ``added`` tokens written
    in the text (``</s>``, ``<mask>``...), possibly across whitespace after the cut. The tokenizer matches those
    before pre-tokenizing, and ``lstrip``/``rstrip`` ones take the whitespace beside them, so :data:`SAFE_CUT`'s
    reasoning does not hold there."""
    after = WHITESPACE_RUN.match(text, cut).end()
    for content in added:
        width = len(content)
        start = text.find(content, max(0, cut - width), cut + width)
        while start != -1 and start <= cut:
            if cut <= start + width:
                return True
            start = text.find(content, start + 1, cut + width)
        if text.startswith(content, after):
            return True
    return False


def last_cut(text: str, start: int, end: int, added: Sequence[str] = ()) -> int | None:
    """The last :data:`SAFE_CUT` position in ``text`` between ``start`` and ``end`` (inclusive) that touches none
    of the ``added`` tokens, or None."""
    cuts = [match.end() for match in SAFE_CUT.finditer(text, max(0, start - 1), min(len(text), end + 1))]
    for cut in reversed(cuts):
        if cut <= end and not touches_added_token(text, cut, added):
            return cut
    return None


def first_cut(text: str, start: int, added: Sequence[str] = ()) -> int | None:
    """The first :data:`SAFE_CUT` position in ``text`` at or after ``start`` that touches none of the ``added``
    tokens, or None."""
    for match in SAFE_CUT.finditer(text, max(0, start - 1)):
        if not touches_added_token(text, match.end(), added):
            return match.end()
    return None


def window_starts(length: int, room: int, stride: int) -> list[int]:
    """Start offsets of windows of ``room`` tokens over ``length`` tokens, ``stride`` apart; the last ends at the
    end."""
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
        # Whether long texts may be tokenized in part (see SAFE_CUT); otherwise they are tokenized whole.
        self.cuts_safely = cuts_safely(tokenizer.to_str())
        # Tokens the tokenizer finds in a text before pre-tokenizing it; no cut may touch one.
        self.added_tokens = tuple(token.content for token in tokenizer.get_added_tokens_decoder().values())

    @classmethod
    def from_directory(cls, directory: Path, vocab_size: int) -> PairTokenizer:
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

    def tokenize_ends(self, texts: Sequence[str], limits: Sequence[int], side: str = "right") -> list[list[int]]:
        """Up to ``limits[i]`` token ids of each text: its first ones (``side="right"``, what cutting the right end
        keeps) or its last ones (``"left"``), exactly as in the whole text's tokens.

        A text of more characters than its limit could need is tokenized in part, cut at a :data:`SAFE_CUT` place,
        growing the part until it holds enough tokens: the work is bounded by the limit, not the text's length.
        """
        ids: list[list[int] | None] = [None] * len(texts)
        short = [
            i for i, text in enumerate(texts) if not self.cuts_safely or len(text) <= limits[i] * CHARS_PER_TOKEN_GUESS
        ]
        for index, tokens in zip(short, self.tokenize([texts[i] for i in short])):
            ids[index] = tokens
        for index, tokens in enumerate(ids):
            if tokens is None:
                ids[index] = self._end_ids(texts[index], limits[index], side)
        return [tokens[-limit:] if side == "left" else tokens[:limit] for tokens, limit in zip(ids, limits)]  # type: ignore[misc]

    def _end_ids(self, text: str, limit: int, side: str) -> list[int]:
        """At least ``limit`` ids at the ``side`` end of ``text`` (all of its ids when it has fewer)."""
        chars = limit * CHARS_PER_TOKEN_GUESS
        while chars < len(text):
            if side == "left":
                cut = first_cut(text, len(text) - chars, self.added_tokens)
                part = None if cut is None or cut < len(text) - 2 * chars else text[cut:]
            else:
                cut = last_cut(text, chars // 2, chars, self.added_tokens)
                part = None if cut is None else text[:cut]
            if part:
                (tokens,) = self.tokenize([part])
                if len(tokens) >= limit:
                    return tokens
            chars *= 2
        return self.tokenize([text])[0]

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
        # One token over each limit tells a text that was cut from one that just fits.
        query_ids = self.tokenize_ends(queries, [max_query_length + 1] * len(queries))
        rooms = [max_length - SPECIAL_TOKENS_PER_PAIR - min(len(query_ids[q]), max_query_length) for q, _ in pairs]
        cap = max_document_length
        if long_document == "chunk":  # the document's tokens up to the most that MAX_CHUNK_WINDOWS windows hold
            strides = [max(1, min(chunk_stride or room // 2, room)) for room in rooms]
            most = [room + (MAX_CHUNK_WINDOWS - 1) * stride for room, stride in zip(rooms, strides)]
            limits = [min(cap, m) if cap is not None else m for m in most]
        else:
            limits = [min(cap, room) if cap is not None else room for room in rooms]
        side = truncation_side if long_document != "chunk" or cap is not None else "right"
        doc_ids = self.tokenize_ends([doc for _, doc in pairs], [limit + 1 for limit in limits], side)
        input_ids: list[list[int]] = []
        pair_of_sequence: list[int] = []
        doc_truncated, query_truncated, windows = [], [], []
        for pair_index, ((query_index, text), doc) in enumerate(zip(pairs, doc_ids)):
            query = query_ids[query_index]
            query_truncated.append(len(query) > max_query_length)
            query = query[:max_query_length]
            room = rooms[pair_index]
            capped = cap is not None and len(doc) > cap
            if capped:
                doc = doc[-cap:] if truncation_side == "left" else doc[:cap]
            if long_document == "chunk":
                stride = strides[pair_index]
                if len(doc) > most[pair_index]:  # too many windows: the whole length, for the message
                    length = len(self.tokenize([text])[0])
                    check_window_count(pair_index, length if cap is None else min(length, cap), room, stride)
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
