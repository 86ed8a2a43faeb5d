"""Single-threaded CPU worker threads, so that independent batches run side by side, one per core.

On CPUs a batch's small GEMMs and per-sequence attention calls scale poorly across threads; a batch per core keeps
every core busy without that synchronization (W1 in ``benchmarks/engine_throughput.py``: about 15% faster on two
cores). torch's intra-op thread count is per thread, so the workers run one thread each while the caller keeps its
own setting.
"""

from __future__ import annotations

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


def cpu_worker_pool(workers: int) -> ThreadPoolExecutor:
    """The process-wide pool of ``workers`` threads that each run torch operations on a single thread."""
    with _pools_lock:
        pool = _pools.get(workers)
        if pool is None:
            pool = _pools[workers] = ThreadPoolExecutor(
                workers, thread_name_prefix="jina-local-rerank-cpu", initializer=_single_threaded
            )
        return pool


# A forked child has none of the parent's threads: it starts its own pools.
os.register_at_fork(after_in_child=_pools.clear)
