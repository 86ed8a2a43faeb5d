"""Load run of the rerank server: requests/s and p50/p99 latency at 1, 8 and 32 concurrent clients.

    python benchmarks/server_load.py --model ../shared/parity/tiny --device cpu

First scores the same requests with the engine called directly in this process, one request at a time
(``Reranker.score``: no HTTP, no JSON, no merging), the baseline every server row is divided by. Then starts
``jina-local-rerank serve`` on a free loopback port twice, with and without micro-batching, sends Jina-shaped
requests (``--documents`` documents of about ``--words`` words each) from that many concurrent clients, and
prints one Markdown table. Each level is bounded by ``--requests`` and ``--max-seconds``; traffic never leaves
127.0.0.1. Without ``--model`` the server uses ``$JINA_LOCAL_RERANK_MODEL``, else the Hub id.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

WORDS = (
    "organic skincare sensitive skin natural cleanser kitchen garden compost river city museum python module "
    "function returns value llama camelid andes wool the a of to and in is that for it with as on by this"
).split()


@dataclass
class LevelResult:
    mode: str
    clients: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    requests_per_batch: float
    cpu_ms: float | None  # CPU time the scoring process spent per request (all its threads); None without /proc


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, round(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def make_requests(count: int, documents: int, words: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)

    def text(length: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(length))

    return [
        {"query": text(6), "documents": [text(rng.randint(words // 2, words * 3 // 2)) for _ in range(documents)]}
        for _ in range(count)
    ]


def start_server(args: argparse.Namespace, batching: bool, log_dir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "jina_local_rerank.cli",
        "serve",
        "--port",
        str(port),
        "--device",
        args.device,
        "--log-level",
        "warning",
        "--batch-wait-ms",
        str(args.batch_wait_ms),
        "--batch-concurrency",
        str(args.batch_concurrency),
    ]
    if args.model:
        command += ["--model", args.model]
    if not batching:
        command.append("--no-batching")
    environment = {key: value for key, value in os.environ.items() if key != "JINA_LOCAL_RERANK_API_KEY"}
    log = (log_dir / f"server-{'batching' if batching else 'direct'}.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}; see {log.name} in {log_dir}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit("server did not start within 300 s")


async def run_level(
    url: str, payloads: list[dict], clients: int, max_requests: int, max_seconds: float
) -> tuple[int, float, list[float]]:
    """Send up to ``max_requests`` requests from ``clients`` concurrent clients, stopping after ``max_seconds``."""
    latencies: list[float] = []
    sent = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as http:
        started = time.perf_counter()
        stop_at = started + max_seconds

        async def client() -> None:
            nonlocal sent
            while sent < max_requests and time.perf_counter() < stop_at:
                payload = payloads[sent % len(payloads)]
                sent += 1
                began = time.perf_counter()
                response = await http.post("/v1/rerank", json=payload)
                response.raise_for_status()
                latencies.append(time.perf_counter() - began)

        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return len(latencies), elapsed, latencies


def engine_direct(args: argparse.Namespace, payloads: list[dict]) -> LevelResult:
    """The same requests scored by ``Reranker.score`` in this process, one after another."""
    from jina_local_rerank import Reranker

    reranker = Reranker(args.model, device=args.device)
    for payload in payloads[: args.warmup]:
        reranker.score(payload["query"], payload["documents"])
    latencies: list[float] = []
    cpu_before = time.process_time()
    started = time.perf_counter()
    while len(latencies) < args.requests and time.perf_counter() - started < args.max_seconds:
        payload = payloads[len(latencies) % len(payloads)]
        began = time.perf_counter()
        reranker.score(payload["query"], payload["documents"])
        latencies.append(time.perf_counter() - began)
    seconds = time.perf_counter() - started
    cpu_ms = 1000 * (time.process_time() - cpu_before) / len(latencies)
    latencies.sort()
    reranker.release()
    print(f"  engine direct: {len(latencies)} requests in {seconds:.1f} s", file=sys.stderr, flush=True)
    return LevelResult(
        "engine direct, one request at a time",
        1,
        len(latencies),
        seconds,
        1000 * percentile(latencies, 0.5),
        1000 * percentile(latencies, 0.99),
        1.0,
        cpu_ms,
    )


def batching_counters(url: str) -> tuple[int, int]:
    stats = httpx.get(f"{url}/health", timeout=30).json()["batching"]
    return stats["requests"], stats["batches"]


def benchmark_mode(args: argparse.Namespace, batching: bool, payloads: list[dict], log_dir: Path) -> list[LevelResult]:
    process, url = start_server(args, batching, log_dir)
    mode = "micro-batching" if batching else "no batching"
    results = []
    try:
        asyncio.run(run_level(url, payloads, 1, args.warmup, args.max_seconds))
        for clients in args.clients:
            before = batching_counters(url)
            cpu_before = process_cpu_seconds(process.pid)
            done, seconds, latencies = asyncio.run(run_level(url, payloads, clients, args.requests, args.max_seconds))
            cpu_after = process_cpu_seconds(process.pid)
            after = batching_counters(url)
            cpu_ms = None if cpu_before is None or cpu_after is None else 1000 * (cpu_after - cpu_before) / done
            latencies.sort()
            batches = max(1, after[1] - before[1])
            results.append(
                LevelResult(
                    mode,
                    clients,
                    done,
                    seconds,
                    1000 * percentile(latencies, 0.5),
                    1000 * percentile(latencies, 0.99),
                    (after[0] - before[0]) / batches,
                    cpu_ms,
                )
            )
            print(f"  {mode}, {clients} clients: {done} requests in {seconds:.1f} s", file=sys.stderr, flush=True)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        default=None,
        help="local directory or Hub id (default: $JINA_LOCAL_RERANK_MODEL, else jinaai/jina-reranker-v1-tiny-en)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument(
        "--clients", type=int, nargs="+", default=[1, 8, 32], help="concurrency levels (default: 1 8 32)"
    )
    parser.add_argument("--requests", type=int, default=300, help="requests per level at most (default: 300)")
    parser.add_argument("--max-seconds", type=float, default=30, help="seconds per level at most (default: 30)")
    parser.add_argument("--warmup", type=int, default=10, help="requests sent before measuring (default: 10)")
    parser.add_argument("--documents", type=int, default=10, help="documents per request (default: 10)")
    parser.add_argument("--words", type=int, default=40, help="mean words per document (default: 40)")
    parser.add_argument("--batch-wait-ms", type=float, default=2.0, help="the server's --batch-wait-ms (default: 2)")
    parser.add_argument(
        "--batch-concurrency", type=int, default=1, help="the server's --batch-concurrency (default: 1)"
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=("batching", "direct"),
        default=["batching", "direct"],
        help="servers to measure: micro-batching, no batching (default: both)",
    )
    args = parser.parse_args()

    payloads = make_requests(64, args.documents, args.words)
    direct = engine_direct(args, payloads)  # before any server runs, so nothing else competes for the CPUs
    with tempfile.TemporaryDirectory(prefix="server-load-") as log_dir:
        results = [
            row for mode in args.modes for row in benchmark_mode(args, mode == "batching", payloads, Path(log_dir))
        ]

    print(
        f"\nmodel {args.model or '(default)'}, device {args.device}, {args.documents} documents of ~{args.words} "
        f"words per request, {os.cpu_count()} CPUs\n"
    )
    print(
        "| server | clients | requests | requests/s | vs engine direct | p50 ms | p99 ms | requests per scoring call "
        "| CPU ms per request |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    direct_rate = direct.requests / direct.seconds
    for row in [direct, *results]:
        rate = row.requests / row.seconds
        cpu = "n/a" if row.cpu_ms is None else f"{row.cpu_ms:.0f}"
        print(
            f"| {row.mode} | {row.clients} | {row.requests} | {rate:.1f} | {rate / direct_rate:.2f} | "
            f"{row.p50_ms:.0f} | {row.p99_ms:.0f} | {row.requests_per_batch:.1f} | {cpu} |"
        )


if __name__ == "__main__":
    main()
