"""What to install for an optional feature: one wording for every "this needs the X extra" message."""

from __future__ import annotations


def install_hint(extra: str) -> str:
    """How to add the ``extra`` of jina-local-rerank (not on PyPI yet: from a checkout or a built wheel)."""
    return (
        f"install the '{extra}' extra: pip install \".[{extra}]\" in a checkout of jina-local-rerank, or "
        f"pip install \"<wheel>[{extra}]\" (see the Install section of the docs)"
    )
