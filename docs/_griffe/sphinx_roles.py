"""Griffe extension for the API reference: Sphinx cross-reference roles in docstrings become Markdown code.

Docstrings in this project are read in editors and by ``help()`` as much as on the site, and some name other
objects the Sphinx way (``:class:`~jina_local_rerank.Reranker```); mkdocstrings renders Markdown, where the role
would show literally. ``~`` keeps the last component of the name, as in Sphinx.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|mod|exc|data|obj|const):`(~?)([^`]+)`")


def _as_code(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


class SphinxRolesAsCode(griffe.Extension):
    """Rewrite ``:role:`target``` to `` `target` `` in every docstring as it is loaded."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(_as_code, obj.docstring.value)
