"""Reading the user's input files and writing output files without ever losing one.

Every command that writes a file goes through :func:`atomic_output`: results go to a temporary file beside the
target, which replaces it only when the whole output was written, so a failed run (bad input, full disk,
Ctrl-C) leaves an existing file as it was and creates none; :func:`atomic_directory` does the same for a folder
of files (a checkpoint, an export), and :func:`check_output_folder` says whether a folder may be replaced.
:func:`check_output_path` refuses an output that is the input itself (also through links), before anything is
read or written. Errors are ``FileProblem``, one line naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from ..errors import FileProblem

# The most bytes a command reads from one input file or standard input (a device such as /dev/zero never ends).
MAX_INPUT_BYTES = 256 * 2**20

# The longest line a line-oriented input (JSON Lines, a run file) may hold, in characters: a file without line
# breaks, or a device such as /dev/zero, is refused at this length rather than read without end.
MAX_LINE_CHARS = 64 * 2**20

# Errors of writing itself (not of reading the input inside the same ``with`` block).
_WRITE_FAILURES = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


def cache_home() -> Path:
    """``$XDG_CACHE_HOME/jina-local-rerank`` (``~/.cache/jina-local-rerank`` when unset): the project's caches."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jina-local-rerank"


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    return exc.strerror or str(exc)


def _permissions_of_new(path: Path, mode: int) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


def _permissions_of_new_tree(folder: Path) -> None:
    """Give ``folder`` and everything in it the permissions the umask gives new files and folders (mkdtemp makes
    the folder 0700, and some writers, safetensors among them, make their files 0600)."""
    _permissions_of_new(folder, 0o777)
    for root, folders, files in os.walk(folder):
        for name in folders:
            _permissions_of_new(Path(root) / name, 0o777)
        for name in files:
            if not os.path.islink(Path(root) / name):
                _permissions_of_new(Path(root) / name, 0o666)


def read_bounded(stream: BinaryIO, what: str, max_bytes: int | None = None) -> bytes:
    """All of ``stream``'s bytes, or ``FileProblem`` naming ``what`` and the limit once there are more than
    ``max_bytes`` (default ``MAX_INPUT_BYTES``; read in blocks, so a pipe, a FIFO or a device is read as far as
    the limit and no further)."""
    max_bytes = MAX_INPUT_BYTES if max_bytes is None else max_bytes
    blocks, size = [], 0
    while block := stream.read(min(1 << 20, max_bytes + 1 - size)):
        blocks.append(block)
        size += len(block)
        if size > max_bytes:
            raise FileProblem(f"{what} is larger than {max_bytes:,} bytes, the limit for one input; split it")
    return b"".join(blocks)


def text_lines(path: Path, what: str = "") -> Iterator[tuple[int, str]]:
    """``(line number, line)`` for each line of the UTF-8 file ``path`` (also a pipe or a device), read one at a
    time; ``FileProblem`` naming the file and line for one longer than ``MAX_LINE_CHARS`` or not UTF-8."""
    name = f"{what} {path}".strip()
    number = 0
    try:
        with path.open(encoding="utf-8") as lines:
            while line := lines.readline(MAX_LINE_CHARS + 1):
                number += 1
                if len(line) > MAX_LINE_CHARS:
                    raise FileProblem(
                        f"{name} line {number}: longer than {MAX_LINE_CHARS:,} characters, the limit for one line"
                    )
                yield number, line
    except UnicodeDecodeError as exc:
        raise FileProblem(f"{name} line {number + 1}: not UTF-8 ({exc.reason})") from None


def read_text_file(path: str | os.PathLike[str], what: str, max_bytes: int | None = None) -> str:
    """The UTF-8 text of ``path`` (at most ``max_bytes``, default ``MAX_INPUT_BYTES``); ``what`` names the file's
    role in errors (``--input``, ``RUN_FILE``...)."""
    path = Path(path)
    if path.is_dir():
        raise FileProblem(f"{what} {path} is a directory, not a file")
    try:
        with path.open("rb") as stream:
            data = read_bounded(stream, f"{what} {path}", max_bytes)
    except FileNotFoundError:
        raise FileProblem(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise FileProblem(f"cannot read {what} {path}: {_reason(exc)}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileProblem(f"{what} {path} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None


def check_input_file(path: str | os.PathLike[str], what: str = "input") -> Path:
    """``path`` if it is an existing file, else ``FileProblem`` saying what it is instead."""
    path = Path(path)
    if path.is_dir():
        raise FileProblem(f"{what} {path} is a directory, not a file")
    if not path.exists():
        raise FileProblem(f"{what} {path} does not exist")
    return path


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)  # follows links; hard links share the inode too
    except OSError:
        return False


def check_output_path(output: str | os.PathLike[str], *inputs: str | os.PathLike[str], what: str = "output") -> Path:
    """``output`` as a path, if it can be written and is none of ``inputs``; else ``FileProblem`` saying why."""
    path = Path(output)
    for source in inputs:
        if _same_file(path, Path(source)) or path.resolve() == Path(source).resolve():
            raise FileProblem(f"{what} {path} is the input file {source}; choose another output file")
    if path.is_dir():
        raise FileProblem(f"{what} {path} is a directory; name a file to write")
    if path.exists() and not path.is_file():
        # A device or pipe would be replaced by a regular file: refuse rather than destroy it.
        raise FileProblem(f"{what} {path} is not a regular file; name a file to write")
    folder = path.parent
    if not folder.is_dir():
        raise FileProblem(f"cannot write {what} {path}: the folder {folder} does not exist")
    return path


@contextlib.contextmanager
def atomic_output(output: str | os.PathLike[str], what: str = "output") -> Iterator[Path]:
    """Yield a temporary path beside ``output``; on success it replaces ``output``, on any error it is removed."""
    path = check_output_path(output, what=what)
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    except OSError as exc:
        raise FileProblem(f"cannot write {what} {path}: {_reason(exc)}") from None
    os.close(handle)
    temporary_path = Path(temporary)
    try:
        yield temporary_path
    except OSError as exc:
        temporary_path.unlink(missing_ok=True)
        if exc.errno in _WRITE_FAILURES:  # the disk, not the input: name the output
            raise FileProblem(f"cannot write {what} {path}: {_reason(exc)}") from None
        raise
    except BaseException:
        temporary_path.unlink(missing_ok=True)
        raise
    try:
        if path.exists():
            # mkstemp creates the file 0600; the result keeps the permissions of the file it replaces.
            os.chmod(temporary_path, path.stat().st_mode & 0o7777)
        else:
            _permissions_of_new(temporary_path, 0o666)
        os.replace(temporary_path, path)
    except OSError as exc:
        temporary_path.unlink(missing_ok=True)
        raise FileProblem(f"cannot write {what} {path}: {_reason(exc)}") from None


def write_text_atomically(output: str | os.PathLike[str], text: str, what: str = "output") -> None:
    """Write ``text`` (UTF-8) to ``output`` through :func:`atomic_output`."""
    with atomic_output(output, what) as temporary:
        temporary.write_text(text, encoding="utf-8")


def _is_within(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def check_output_folder(
    output: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    keep: Sequence[str | os.PathLike[str]] = (),
    marker: str | None = None,
    what: str = "output folder",
) -> Path:
    """``output`` as a path, if a folder can be written there; else ``FileProblem`` saying why.

    A missing or empty folder is fine; a non-empty one only with ``overwrite`` and, given a ``marker``, only if it
    holds that file (a folder the command wrote before, not one of the user's). Never one that holds any of
    ``keep`` (the inputs a command reads, which replacing the folder would delete) or lies inside one of them.
    """
    if not os.fspath(output):
        raise FileProblem(f"the {what} is an empty path; name a folder to write")
    path = Path(output)
    for source in keep:
        if _is_within(Path(source), path):
            raise FileProblem(f"{what} {path} holds the input {source}; choose another folder")
        if _is_within(path, Path(source)):
            raise FileProblem(f"{what} {path} is inside the input {source}; choose a folder outside it")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise FileProblem(f"cannot write {what} {path}: {parent} is a file, not a folder")
            break
    if path.exists() and not path.is_dir():
        raise FileProblem(f"{what} {path} is a file; name a folder to write")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise FileProblem(
                f"{what} {path} exists and is not empty; choose another folder or overwrite it (--overwrite)"
            )
        if marker is not None and not (path / marker).is_file():
            raise FileProblem(
                f"{what} {path} is not empty and has no {marker}: not a folder this command wrote; "
                "choose another (overwrite replaces only those)"
            )
    return path


@contextlib.contextmanager
def atomic_directory(output: str | os.PathLike[str], what: str = "output folder") -> Iterator[Path]:
    """Yield a temporary folder beside ``output``; on success it replaces ``output``, on any error it is removed.

    Missing parent folders are created. An existing ``output`` is moved aside, the new folder renamed into place,
    and the old one deleted, so at any moment ``output`` is either the old folder or the complete new one. The
    caller decides whether an existing folder may be replaced (:func:`check_output_folder`).
    """
    path = Path(output)
    if path.exists() and not path.is_dir():
        raise FileProblem(f"{what} {path} is a file; name a folder to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    except OSError as exc:
        raise FileProblem(f"cannot write {what} {path}: {_reason(exc)}") from None
    try:
        yield temporary
    except OSError as exc:
        shutil.rmtree(temporary, ignore_errors=True)
        if exc.errno in _WRITE_FAILURES:
            raise FileProblem(f"cannot write {what} {path}: {_reason(exc)}") from None
        raise
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    _permissions_of_new_tree(temporary)
    old = path.parent / f"{temporary.name.removesuffix('.partial')}.old"
    try:
        if path.exists():
            os.rename(path, old)
        try:
            os.rename(temporary, path)
        except OSError:
            if old.exists():
                os.rename(old, path)
            raise
    except OSError as exc:
        shutil.rmtree(temporary, ignore_errors=True)
        raise FileProblem(f"cannot write {what} {path}: {_reason(exc)}") from None
    shutil.rmtree(old, ignore_errors=True)
