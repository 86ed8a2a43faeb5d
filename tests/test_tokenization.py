"""Tokenizing only as much of a long text as the window holds gives exactly the whole text's tokens."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from tokenizers import Tokenizer, normalizers

from jina_local_rerank import Reranker
from jina_local_rerank.engine.tokenization import SAFE_CUT, PairTokenizer, cuts_safely

# Texts that stress the pre-tokenizer at cut places: whitespace runs, contractions, digits, punctuation runs,
# several scripts, emoji, CJK with and without its punctuation, code.
SAMPLES = [
    "The llama's wool isn't  cheap;   it's\tsold\n\nat 1,234.56 USD (approx.) -- see e.g. https://x.org/a?b=c.",
    "Привет, мир!  Это   тест: 12345 слов...\n\tи ещё 'кавычки' — тире.",
    "中文文本，没有空格。这是第二句话！还有数字123和English混合、标点：结束？",
    "def f(x):\n    return x**2  # comment\n\n\nclass A(B):\n\tpass\r\n",
    "emoji 😀😀 and ZWJ 👨‍👩‍👧 mixed with café naïve résumé ½ ² ³",
    "   leading spaces and trailing spaces   ",
    "a'b'c's 're 've 'll 'd 'm 't ''' '' ' x",
]
ALPHABET = "ab Z9 \t\n.,'!-_é中，。😀\u00a0\u2003\u200b"


def _random_texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 300))) for _ in range(count)]


@pytest.fixture(params=["random-checkpoint", "v1-tiny"])
def tokenizer(request: pytest.FixtureRequest, checkpoint_dir: Path) -> PairTokenizer:
    """The test checkpoints' tokenizer, and the v1 models' own (from the parity folder: skipped where absent)."""
    directory = (
        checkpoint_dir if request.param == "random-checkpoint" else request.getfixturevalue("parity_dir") / "tiny"
    )
    return PairTokenizer.from_directory(directory, 10**9)


def test_both_parts_of_a_text_cut_at_any_safe_place_tokenize_as_the_whole_text(tokenizer: PairTokenizer) -> None:
    assert tokenizer.cuts_safely
    checked = 0
    for text in SAMPLES + _random_texts(300, seed=1):
        (whole,) = tokenizer.tokenize([text])
        for match in SAFE_CUT.finditer(text):
            head, tail = tokenizer.tokenize([text[: match.end()], text[match.end() :]])
            assert head + tail == whole, (text, match.end())
            checked += 1
    assert checked > 5000


@pytest.mark.parametrize("side", ["right", "left"])
def test_tokenize_ends_gives_the_whole_texts_first_or_last_tokens(tokenizer: PairTokenizer, side: str) -> None:
    rng = random.Random(2)
    for text in SAMPLES * 3 + _random_texts(100, seed=3):
        long_text = text * rng.randint(1, 40)
        (whole,) = tokenizer.tokenize([long_text])
        limit = rng.randint(1, 60)
        (ends,) = tokenizer.tokenize_ends([long_text], [limit], side)
        assert ends == (whole[-limit:] if side == "left" else whole[:limit])


def test_a_megabyte_document_is_tokenized_only_as_far_as_the_window_needs(checkpoint_dir: Path) -> None:
    reranker = Reranker(checkpoint_dir, device="cpu")
    tokenizer = reranker.engine.tokenizer
    document = " ".join(SAMPLES) * 2500
    assert len(document) > 1_000_000
    seen: list[int] = []
    tokenize = tokenizer.tokenize

    def recording(texts):  # the real tokenizer, recording how much text it was given
        seen.extend(len(text) for text in texts)
        return tokenize(texts)

    tokenizer.tokenize = recording
    try:
        for side in ("right", "left"):
            encoded = reranker.encode("query", [document], truncation_side=side)
            assert encoded.document_truncated == [True]
            (whole,) = tokenize([document])
            room = len(encoded.input_ids[0]) - len(tokenize(["query"])[0]) - 4
            expected = whole[-room:] if side == "left" else whole[:room]
            assert encoded.input_ids[0][-room - 1 : -1] == expected
    finally:
        del tokenizer.tokenize
    assert max(seen) < 20 * reranker.max_length  # characters: bounded by the window, not the 1 MB text


def test_a_tokenizer_the_cut_rule_does_not_cover_tokenizes_whole_texts(checkpoint_dir: Path) -> None:
    raw = Tokenizer.from_file(str(checkpoint_dir / "tokenizer.json"))
    raw.normalizer = normalizers.Lowercase()
    assert not cuts_safely(raw.to_str())
    tokenizer = PairTokenizer(raw, 0, 2, 1)
    assert not tokenizer.cuts_safely
    text = "Mixed Case Words " * 500
    (whole,) = tokenizer.tokenize([text])
    assert tokenizer.tokenize_ends([text], [10], "right") == [whole[:10]]
    assert tokenizer.tokenize_ends([text], [10], "left") == [whole[-10:]]


@pytest.mark.parametrize("side", ["right", "left"])
def test_a_cut_never_splits_a_special_token_written_in_the_text(tokenizer: PairTokenizer, side: str) -> None:
    # "<mask>" alone offers cut places only inside the token ("k" before ">"); "</s> " and " <mask>" beside spaces.
    for unit in ("<mask>", "a</s>", "x <mask> y", "</s> word", "<unk>\n<pad>."):
        text = unit * 3000
        (whole,) = tokenizer.tokenize([text])
        for limit in (7, 100, 1000):
            (ends,) = tokenizer.tokenize_ends([text], [limit], side)
            assert ends == (whole[-limit:] if side == "left" else whole[:limit]), (unit, limit)
