"""What to install for an optional feature: the one wording of every "this needs the X extra" message.

The pip command fits how this copy of jina-local-rerank was installed: run from a checkout (an editable install
or ``PYTHONPATH``), ``pip install -e "<checkout>[extra]"``; installed from a wheel file or a URL (PEP 610's
``direct_url.json``), that wheel or URL with the extra; from a package index, ``pip install
"jina-local-rerank[extra]"``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

from .errors import MissingExtraError

DISTRIBUTION = "jina-local-rerank"
OWN_PACKAGES = (
    "jina_local_rerank",
    "langchain_jina_local_rerank",
    "llama_index.postprocessor.jina_local_rerank",
    "haystack_integrations.components.rankers.jina_local_rerank",
)


def _direct_url() -> dict | None:
    """The installed distribution's ``direct_url.json`` (None: not installed, or installed from an index)."""
    try:
        text = metadata.distribution(DISTRIBUTION).read_text("direct_url.json")
        direct = json.loads(text) if text else None
    except (metadata.PackageNotFoundError, ValueError):
        return None
    return direct if isinstance(direct, dict) and isinstance(direct.get("url"), str) else None


def install_command(extra: str) -> str:
    """The pip command that adds ``extra`` to this installation of jina-local-rerank."""
    checkout = Path(__file__).resolve().parents[2]  # core/jina_local_rerank/install_hints.py
    in_checkout = (checkout / "pyproject.toml").is_file()  # a source tree: an editable install, or on the path
    return pip_command(extra, checkout if in_checkout else None, None if in_checkout else _direct_url())


def pip_command(extra: str, checkout: Path | None, direct: dict | None) -> str:
    """The pip command adding ``extra`` to a copy run from ``checkout``, else installed as PEP 610's
    ``direct_url.json`` says (``direct`` None: from a package index)."""
    if checkout is not None:
        return f'pip install -e "{checkout}[{extra}]"'
    if direct is None:
        return f'pip install "{DISTRIBUTION}[{extra}]"'
    url = direct["url"]
    if "vcs_info" in direct:
        vcs = direct["vcs_info"].get("vcs", "git") if isinstance(direct["vcs_info"], dict) else "git"
        return f'pip install "{DISTRIBUTION}[{extra}] @ {vcs}+{url}"'
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return f'pip install "{unquote(parsed.path)}[{extra}]"'
    return f'pip install "{DISTRIBUTION}[{extra}] @ {url}"'


def install_hint(extra: str) -> str:
    """``install the 'eval' extra: pip install ...``, with the command fitting this installation."""
    return f"install the '{extra}' extra: {install_command(extra)}"


def missing_extra(feature: str, extra: str, module: str | None = None) -> MissingExtraError:
    """The error for ``feature`` used without ``extra`` (``module`` being what failed to import):
    ``"{feature} needs {module}: install the '{extra}' extra: pip install ..."``."""
    needs = module or f"the '{extra}' extra"
    return MissingExtraError(f"{feature} needs {needs}: {install_hint(extra)}", name=module)


@contextlib.contextmanager
def extra_imports(feature: str, extra: str) -> Iterator[None]:
    """Around the imports of an optional ``feature``: a package that is not installed becomes the one-line
    :func:`missing_extra` error (a missing module of this project's own is a bug, raised as it is)."""
    try:
        yield
    except ImportError as exc:
        if isinstance(exc, MissingExtraError) or (exc.name or "").startswith(OWN_PACKAGES):
            raise
        raise missing_extra(feature, extra, exc.name) from None
