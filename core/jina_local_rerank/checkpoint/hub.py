"""Where a checkpoint comes from: a local directory, or a Hugging Face Hub id fetched through its cache.

Only configuration, tokenizer and weight files are downloaded: remote code in a repository never is.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import ModelNotFoundError
from .format import PYTORCH_BIN_FILE, SAFETENSORS_FILE, TOKENIZER_FILES

DEFAULT_MODEL = "jinaai/jina-reranker-v1-tiny-en"
MODEL_ENV_VAR = "JINA_LOCAL_RERANK_MODEL"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$|^[A-Za-z0-9][\w.-]*$")


def default_model() -> str:
    """The model used when none is given: ``$JINA_LOCAL_RERANK_MODEL`` if set, else the tiny reranker's Hub id."""
    return os.environ.get(MODEL_ENV_VAR) or DEFAULT_MODEL


def public_model_name(model: str | os.PathLike[str]) -> str:
    """What to call ``model`` where others read it (a model card): a Hub id as given; a local directory's Hub id
    when it is a snapshot in a Hugging Face cache (``models--org--name/snapshots/REV``), else the folder's name.
    Never a filesystem path."""
    name = os.fspath(model)
    path = Path(name).expanduser()
    if not path.is_dir() and _HUB_ID.match(name):
        return name
    path = path.resolve()
    if path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--"):
        return path.parent.parent.name.removeprefix("models--").replace("--", "/")
    return path.name or name


def resolve_model_dir(
    model: str | os.PathLike[str],
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | bool | None = None,
) -> Path:
    """Return a local directory holding the checkpoint ``model`` (a directory or a Hub id).

    Hub ids are fetched through ``huggingface_hub`` (its cache, ``revision``, ``token`` and ``HF_HUB_OFFLINE``
    apply), downloading only configuration, tokenizer and weight files.
    """
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a Hub id or a directory path, got {type(model).__name__}")
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    name = os.fspath(model)
    if path.exists():
        raise ModelNotFoundError(f"model {name!r} is a file; pass the checkpoint's directory")
    if not _HUB_ID.match(name) or name.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"model directory {name!r} does not exist (relative to {Path.cwd()})")
    return _download_from_hub(name, revision=revision, cache_dir=cache_dir, token=token)


def _download_from_hub(
    repo_id: str, *, revision: str | None, cache_dir: str | os.PathLike[str] | None, token: str | bool | None
) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    patterns = ["config.json", *TOKENIZER_FILES, SAFETENSORS_FILE]
    try:
        folder = Path(
            snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, token=token, allow_patterns=patterns)
        )
        if not (folder / SAFETENSORS_FILE).is_file():
            # Older repositories (and turbo's .bin copy) may only have the pickle; it is read weights-only.
            folder = Path(
                snapshot_download(
                    repo_id,
                    revision=revision,
                    cache_dir=cache_dir,
                    token=token,
                    allow_patterns=[PYTORCH_BIN_FILE],
                )
            )
    except (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError) as exc:
        raise ModelNotFoundError(
            f"{repo_id!r} (revision {revision or 'main'}) on the Hugging Face Hub: {exc}"
        ) from None
    except LocalEntryNotFoundError:
        cache = cache_dir or constants.HF_HUB_CACHE
        offline = " (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else ""
        # "org/name" may also have been meant as a relative directory: say that none exists.
        not_a_folder = f"; no directory {repo_id} exists under {Path.cwd()} either" if "/" in repo_id else ""
        raise ModelNotFoundError(
            f"{repo_id!r} (revision {revision or 'main'}) is not in the Hugging Face cache at {cache} and the Hub "
            f"cannot be reached{offline}{not_a_folder}. Download it on a connected machine (`hf download "
            f"{repo_id}`) and copy the cache, or use a local checkpoint directory: --model /path/to/dir on the "
            f"command line, model='/path/to/dir' in Python, or ${MODEL_ENV_VAR}=/path/to/dir for both."
        ) from None
    return folder
