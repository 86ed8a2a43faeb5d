"""Opening a checkpoint's files: regular files only, and JSON files of bounded size.

A checkpoint folder may come from anywhere: a name can be a symbolic link to ``/dev/zero`` or a FIFO, which
would read until memory runs out or block forever. Every file is opened without blocking and checked to be a
regular file (links are followed only to regular files) before anything is read, and JSON files are read up to
``MAX_JSON_BYTES``.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..model.config import JinaBertConfig, shown_value

MAX_JSON_BYTES = 64 * 2**20  # per JSON file; the real tokenizer.json is about 2 MB, config.json about 1 kB


def check_regular_file(path: Path) -> None:
    """Raise ``CheckpointError`` unless ``path`` (after symbolic links) is a regular file."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise CheckpointError(f"{path}: {path.name} is missing from the checkpoint") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read {path.name} ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        raise CheckpointError(f"{path}: {path.name} is not a regular file (a {_kind(mode)})")


def read_json_text(path: Path) -> str:
    """The text of the JSON file ``path``: a regular file of at most ``MAX_JSON_BYTES`` in UTF-8."""
    check_regular_file(path)
    try:
        # O_NONBLOCK: a file swapped for a FIFO after the check above still cannot block the open.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read {path.name} ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as file:
        status = os.fstat(file.fileno())
        if not stat.S_ISREG(status.st_mode):
            raise CheckpointError(f"{path}: {path.name} is not a regular file (a {_kind(status.st_mode)})")
        size = status.st_size
        # One byte more than the size (capped) tells a file that grew past the limit since it was measured.
        data = file.read(min(size, MAX_JSON_BYTES) + 1)
    if len(data) > MAX_JSON_BYTES:
        raise CheckpointError(
            f"{path}: {path.name} is larger than {MAX_JSON_BYTES // 2**20} MiB, the limit for a checkpoint's JSON files"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{path}: {path.name} is not UTF-8 text ({exc})") from None


def read_json(path: Path) -> Any:
    """The parsed JSON file ``path`` (see :func:`read_json_text`), else ``CheckpointError``."""
    text = read_json_text(path)
    try:
        return json.loads(text)
    except RecursionError:
        raise CheckpointError(f"{path}: {path.name} is nested too deeply to be read as JSON") from None
    except ValueError as exc:
        raise CheckpointError(f"{path}: {path.name} is not valid JSON ({exc})") from None


def read_config(path: Path) -> JinaBertConfig:
    """Read a checkpoint's ``config.json``; ``UnsupportedModelError`` if it is not a JinaBERT reranker."""
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: config.json must hold a JSON object, got {shown_value(raw)}")
    return JinaBertConfig.from_dict(raw, source=str(path))


def _kind(mode: int) -> str:
    kinds = {
        stat.S_ISDIR: "directory",
        stat.S_ISFIFO: "FIFO",
        stat.S_ISCHR: "character device",
        stat.S_ISBLK: "block device",
        stat.S_ISSOCK: "socket",
    }
    return next((name for test, name in kinds.items() if test(mode)), "special file")
