"""``tokenizer.json`` in the form every transformers.js release reads: BPE merges as ``"a b"`` strings.

``tokenizers`` 0.20 and later write each merge as a pair ``["a", "b"]``; transformers.js 2.x splits
``"a b"`` strings and fails on pairs (``x.split is not a function``), while ``tokenizers`` and transformers.js 3+
read both. A merge whose tokens hold a space has no string form; such a file is copied as it is.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..checkpoint.files import read_json, read_json_text


def write_portable_tokenizer(source: Path, destination: Path) -> None:
    """Copy ``source`` (a ``tokenizer.json``) to ``destination`` with pair merges written as ``"a b"`` strings."""
    text = read_json_text(source)
    tokenizer = read_json(source)
    model = tokenizer.get("model") or {}
    merges = model.get("merges") if model.get("type") == "BPE" else None
    pairs = isinstance(merges, list) and all(isinstance(merge, list) for merge in merges)
    if merges and pairs and not any(" " in part for merge in merges for part in merge):
        model["merges"] = [" ".join(merge) for merge in merges]
        text = json.dumps(tokenizer, ensure_ascii=False, indent=2) + "\n"
    destination.write_text(text, encoding="utf-8")
