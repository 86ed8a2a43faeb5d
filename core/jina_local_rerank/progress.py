"""Progress bars on stderr for long work: one policy for the engine, the file jobs and the evaluation.

By default a bar appears only once the work has run for ``PROGRESS_DELAY_SECONDS``, so quick calls print nothing
while a long one (a huge chunked document, a big pairs file) shows that it is alive and how far it got.
"""

from __future__ import annotations

from typing import Any, Literal

from tqdm.auto import tqdm

PROGRESS_DELAY_SECONDS = 2.0

# True or "auto": after the delay; "always": from the start; False or "never": no bar.
Progress = bool | Literal["auto", "always", "never"]


def progress_bar(desc: str, unit: str, show: Progress, total: int | None = None, **extra: Any) -> tqdm:
    """A tqdm bar (a context manager) counting ``unit``s of ``desc`` on stderr, shown as ``show`` says."""
    if show not in (True, False, "auto", "always", "never"):
        raise ValueError(f"show_progress must be True, False, 'auto', 'always' or 'never', got {show!r}")
    delay = 0.0 if show == "always" else PROGRESS_DELAY_SECONDS
    return tqdm(total=total, desc=desc, unit=unit, disable=show in (False, "never"), delay=delay, **extra)
