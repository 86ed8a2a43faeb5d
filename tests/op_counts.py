"""Test helper: how often a piece of work calls each torch operator, as torch's profiler records it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import torch


def op_counts(run: Callable[[], object], prefix: str = "") -> Counter[str]:
    """Calls per operator whose name starts with ``prefix`` (removed from the keys) while ``run()`` runs on one
    thread, this one (CPU workers then stay out of it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
            run()
    finally:
        torch.set_num_threads(threads)
    events = [event for event in profile.key_averages() if event.key.startswith(prefix)]
    return Counter({event.key.removeprefix(prefix): event.count for event in events})
