"""The server's Prometheus metrics, rendered in the text exposition format (no client library needed).

Requests by route and status, request latency, requests in flight, scoring calls by how many requests they merged,
and tokens scored. The scoring counts come from the scorer's
:class:`~jina_local_rerank.server.merging.BatchCounters`; this module only adds what the HTTP layer sees.
"""

from __future__ import annotations

import bisect
from collections import Counter

from .merging import BatchCounters

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
PREFIX = "jina_local_rerank"


class Histogram:
    """Cumulative counts of observations at or below each bucket's upper bound, their sum and their count."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float, times: int = 1) -> None:
        index = bisect.bisect_left(self.buckets, value)
        if index < len(self.counts):
            self.counts[index] += times
        self.sum += value * times
        self.count += times

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        lines, running = [], 0
        for bound, count in zip(self.buckets, self.counts):
            running += count
            lines.append(f'{name}_bucket{{{labels}{sep}le="{bound:g}"}} {running}')
        lines.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        suffix = f"{{{labels}}}" if labels else ""
        lines += [f"{name}_sum{suffix} {self.sum:.6f}", f"{name}_count{suffix} {self.count}"]
        return lines


class ServerMetrics:
    """What the HTTP layer counts: answers by (route, status) and latency by route."""

    def __init__(self) -> None:
        self.responses: Counter[tuple[str, int]] = Counter()
        self.latency: dict[str, Histogram] = {}

    def observe(self, route: str, status: int, seconds: float) -> None:
        """Count one answer of ``route`` with ``status`` after ``seconds``."""
        self.responses[(route, status)] += 1
        self.latency.setdefault(route, Histogram(LATENCY_BUCKETS_S)).observe(seconds)

    def render(self, counters: BatchCounters) -> str:
        """Every metric in Prometheus' text format, scoring counts from ``counters``."""
        name = f"{PREFIX}_requests_total"
        lines = [f"# HELP {name} HTTP requests answered, by route and status.", f"# TYPE {name} counter"]
        for (route, status), count in sorted(self.responses.items()):
            lines.append(f'{name}{{route="{route}",status="{status}"}} {count}')
        name = f"{PREFIX}_request_duration_seconds"
        lines += [f"# HELP {name} Time from request to answer, by route.", f"# TYPE {name} histogram"]
        for route, histogram in sorted(self.latency.items()):
            lines += histogram.lines(name, f'route="{route}"')
        name = f"{PREFIX}_requests_in_flight"
        lines += [
            f"# HELP {name} Scoring requests admitted and not answered yet (the queue depth).",
            f"# TYPE {name} gauge",
            f"{name} {counters.in_flight}",
        ]
        name = f"{PREFIX}_batch_requests"
        sizes = Histogram(BATCH_SIZE_BUCKETS)
        for size, count in counters.batch_sizes.items():
            sizes.observe(size, count)
        lines += [f"# HELP {name} Requests served by each scoring call.", f"# TYPE {name} histogram"]
        lines += sizes.lines(name)
        for metric, value, text in (
            ("scored_requests_total", counters.requests, "Requests whose scores are complete."),
            ("scoring_calls_total", counters.batches, "Scoring calls (merged batches and slices)."),
            ("scored_pairs_total", counters.pairs, "(query, document) pairs scored."),
            ("scored_tokens_total", counters.tokens, "Tokens of the sequences scored, special tokens included."),
        ):
            lines += [
                f"# HELP {PREFIX}_{metric} {text}",
                f"# TYPE {PREFIX}_{metric} counter",
                f"{PREFIX}_{metric} {value}",
            ]
        return "\n".join(lines) + "\n"
