"""Command-line flags built from settings objects: each setting's help and ``argparse`` settings live in its
dataclass field's metadata (:func:`setting`), and :func:`add_field_arguments` turns the fields into flags.

``RerankerOptions``, ``ServerSettings`` and ``TrainingConfig`` are all declared this way, so a setting's flag,
default and help are written once, beside the field. The value types here parse a flag's text and judge it
with the rules of :mod:`~jina_local_rerank.validation`, so a value is checked the same way from every entry
point. No torch: ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable, Collection, Mapping
from dataclasses import MISSING, Field, field, fields
from typing import Any, TypeVar

from .validation import check_number, check_positive_int

T = TypeVar("T")

NO_FLAG = "no flag"  # a field's ``flag`` for settings only set in Python


def setting(
    default: Any, help: str, *, flag: str | None = None, group: str | None = None, secret: bool = False, **cli: Any
) -> Any:
    """A dataclass field with its documentation and its command-line flag.

    ``flag``: the flag's name (default ``--field-name``; :data:`NO_FLAG` for none); ``group``: the title of the
    help section it is listed under; ``cli``: further ``add_argument`` settings (``type``, ``choices``,
    ``action``, ``metavar``...). ``help`` says "(default: ...)" itself where the default needs words. A
    ``secret`` (a token, a key) is left out of the object's ``repr`` and of what it serializes.
    """
    metadata = {"help": help, "flag": flag, "group": group, "secret": secret, "cli": cli}
    return field(default=default, repr=not secret, metadata=metadata)


def flag_fields(settings: type) -> list[Field]:
    """The fields of the dataclass ``settings`` that have a command-line flag."""
    return [f for f in fields(settings) if "help" in f.metadata and f.metadata.get("flag") != NO_FLAG]


def _shown_default(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_field_arguments(
    parser: argparse.ArgumentParser,
    settings: type,
    *,
    title: str | None = None,
    only: Collection[str] | None = None,
    help: Mapping[str, str] | None = None,
    defaults: Mapping[str, Any] | None = None,
    sections: Mapping[str | None, Any] | None = None,
) -> dict[str | None, Any]:
    """Register one flag per field of ``settings`` (``--max-batch-tokens`` for ``max_batch_tokens``), each in
    the help section its field names (else ``title``), with the field's name as its destination.

    ``only`` limits the flags to those fields; ``help`` and ``defaults`` replace a field's help or default where
    a command gives it another meaning; ``sections`` are help sections (argument groups) by title that the
    command made already, for flags it lists first. Returns the help sections by title, for flags a command adds
    beside.
    """
    sections = dict(sections or {})
    for option in flag_fields(settings):
        if only is not None and option.name not in only:
            continue
        meta = option.metadata
        section_title = meta.get("group") or title
        if section_title not in sections:
            sections[section_title] = parser.add_argument_group(section_title) if section_title else parser
        default = (defaults or {}).get(option.name, None if option.default is MISSING else option.default)
        text = (help or {}).get(option.name, meta["help"])
        boolean = meta["cli"].get("action") in ("store_true", "store_false", argparse.BooleanOptionalAction)
        if default is not None and not boolean and "default:" not in text:
            text += f" (default: {_shown_default(default)})"
        flag = meta.get("flag") or "--" + option.name.replace("_", "-")
        sections[section_title].add_argument(flag, dest=option.name, default=default, help=text, **meta["cli"])
    return sections


def values_from_args(settings: type, args: argparse.Namespace) -> dict[str, Any]:
    """The values of ``settings``' fields that ``args`` holds (flags registered by :func:`add_field_arguments`);
    a field the command has no flag for is left out, so it keeps its default."""
    return {option.name: getattr(args, option.name) for option in flag_fields(settings) if hasattr(args, option.name)}


def _number_text(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None


def _integer_text(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected an integer, got {text!r}") from None


def _unnamed(message: str) -> str:
    return message.removeprefix("value ")


def _flag_type(parse_text: Callable[[str], Any], check: Callable[[Any, str], T]) -> Callable[[str], T]:
    """An ``argparse`` type: ``parse_text`` the flag's text, then ``check(value, name)`` it; either's
    ``TypeError``/``ValueError`` becomes the usage error that says what was wrong."""

    def parse(text: str) -> T:
        try:
            return check(parse_text(text), "value")
        except (TypeError, ValueError) as exc:
            raise argparse.ArgumentTypeError(_unnamed(str(exc))) from None

    return parse


def number(low: float = 0.0, high: float = float("inf"), *, open_low: bool = False) -> Callable[[str], float]:
    """An ``argparse`` type for a finite number in ``[low, high]`` (``(low, high]`` with ``open_low``), judged
    by :func:`~jina_local_rerank.validation.check_number`."""
    return _flag_type(_number_text, functools.partial(check_number, low=low, high=high, open_low=open_low))


def checked_int(check: Callable[[int, str], int]) -> Callable[[str], int]:
    """An ``argparse`` type for an integer judged by ``check(value, name)``, a rule that raises ``TypeError`` or
    ``ValueError`` naming the value (a settings class's own range, such as a seed's)."""
    return _flag_type(_integer_text, check)


positive_int = checked_int(check_positive_int)  # an integer >= 1
non_negative_float = number(0.0)


def none_or(parse: Callable[[str], T]) -> Callable[[str], T | None]:
    """An ``argparse`` type: the text ``none`` (any case) for None, else what ``parse`` makes of the text."""

    def parse_or_none(text: str) -> T | None:
        return None if text.lower() == "none" else parse(text)

    return parse_or_none
