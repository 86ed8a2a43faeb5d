"""Parsing the user's JSON (input files, standard input, dataset lines): one set of refusals, one wording.

Python's parser fails on more than malformed text: nesting deep enough to exhaust the stack raises
``RecursionError``, and an integer of more digits than Python converts a bare ``ValueError``. Both become the
caller's error type naming where the text came from, so a hostile input is one line, never a traceback.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import JinaLocalRerankError


def decode_json(text: str, where: str, error: type[JinaLocalRerankError]) -> Any:
    """The JSON value of ``text``; malformed JSON raises ``json.JSONDecodeError`` as it is (for a caller that then
    reads the text another way), JSON nested too deeply or holding an integer Python does not convert raises
    ``error`` naming ``where``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise error(f"{where}: JSON nested too deeply") from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise error(f"{where}: not JSON we accept ({exc})") from None


def parse_json(text: str, where: str, error: type[JinaLocalRerankError]) -> Any:
    """:func:`decode_json`, with malformed JSON an ``error`` too: ``"{where}: not JSON ({reason})"``."""
    try:
        return decode_json(text, where, error)
    except json.JSONDecodeError as exc:
        raise error(f"{where}: not JSON ({exc.msg})") from None
