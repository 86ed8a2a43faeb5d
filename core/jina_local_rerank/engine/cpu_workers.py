"""Single-threaded CPU worker threads, so that independent batches run side by side, one per core.

On CPUs a batch's small GEMMs and per-sequence attention calls scale poorly across threads; a batch per core keeps
every core busy without that synchronization (W1 in ``benchmarks/engine_throughput.py``: 10-15% faster on two
cores). torch's intra-op thread count is per thread, so the workers run one thread each while the caller keeps its
own setting.
"""

from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()
_setup_lock = threading.Lock()


def _single_threaded() -> None:
    """Worker set-up: one intra-op thread here, and the process default for later threads left as it was."""
    with _setup_lock:
        # A thread's first query reads the process default, which setting this thread's count also overwrites.
        default = torch.get_num_threads()
        torch.set_num_threads(1)
        restore = threading.Thread(target=torch.set_num_threads, args=(default,))
        restore.start()
        restore.join()


@functools.cache
def _per_thread_counts() -> bool:
    """Whether torch's intra-op thread count is per thread: its OpenMP backend (the standard builds)."""
    return "ATen parallel backend: OpenMP" in torch.__config__.parallel_info()


def cpu_worker_count() -> int:
    """How many workers the calling thread's torch thread count asks for (1 where counts are not per thread)."""
    return torch.get_num_threads() if _per_thread_counts() else 1


def cpu_worker_pool(workers: int) -> ThreadPoolExecutor:
    """The process-wide pool of ``workers`` threads that each run torch operations on a single thread."""
    with _pools_lock:
        pool = _pools.get(workers)
        if pool is None:
            pool = _pools[workers] = ThreadPoolExecutor(
                workers, thread_name_prefix="jina-local-rerank-cpu", initializer=_single_threaded
            )
        return pool


# A forked child has none of its parent's threads: it starts its own pools (fork is POSIX only).
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_pools.clear)
