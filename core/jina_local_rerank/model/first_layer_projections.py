"""The first layer's queries, keys and values per token id, computed once and kept (CPU bf16).

A token's input row to the first layer is ``LayerNorm(word[id] + token_type[0])`` (no positions: ALiBi), a function
of its id alone, and so are its query, key and value rows: each linear layer maps a row on its own. So the first
time an id appears its rows are computed as the layer computes them, and later passes read them instead of
multiplying: the same numbers, up to the order in which a matmul kernel sums a row's products (bit-identical on the
benchmarks' workloads). The table holds the ids met so far (its untouched pages take no memory: at most
``3 x hidden`` values per id of the vocabulary), and starts over if a weight changes.
"""

from __future__ import annotations

import threading

import torch
from torch import nn

from .row_blocks import blocked_linears


class FirstLayerProjections:
    """Layer 0's ``q, k, v`` rows (``[tokens, H]`` each) for packed ``input_ids``, read from a per-id table."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # worker threads share the table
        self._stamp: tuple = ()
        self._table = torch.empty(0)
        self._known = torch.zeros(0, dtype=torch.bool)

    @staticmethod
    def _weights_stamp(modules: tuple[nn.Module, ...]) -> tuple:
        """The modules and tensors the rows come from, with the tensors' in-place versions."""
        tensors = [t for m in modules for t in (*m.parameters(), *vars(m).values()) if isinstance(t, torch.Tensor)]
        return (*map(id, modules), *((id(t), t._version) for t in tensors))

    def _fill(self, ids: torch.Tensor, embeddings: nn.Module, projections: list[nn.Module], stamp: tuple) -> None:
        """Compute and keep the rows of the ``ids`` not in the table yet (a new table if a weight changed)."""
        with self._lock:
            if stamp != self._stamp:
                words = embeddings.word_embeddings
                width = sum(layer.out_features for layer in projections)
                # The projections return the embeddings' dtype. Untouched pages of an empty tensor take no memory.
                self._table = torch.empty((words.num_embeddings, width), dtype=words.weight.dtype)
                self._known = torch.zeros(words.num_embeddings, dtype=torch.bool)
                self._stamp = stamp
            missing = ids.unique()
            missing = missing[~self._known[missing]]
            if len(missing):
                self._table[missing] = torch.cat(blocked_linears(projections, embeddings(missing)), dim=1)
                self._known[missing] = True

    def __call__(
        self, input_ids: torch.Tensor, embeddings: nn.Module, projections: list[nn.Module]
    ) -> tuple[torch.Tensor, ...]:
        """The rows ``projections`` (query, key, value) give for ``embeddings(input_ids)``."""
        stamp = self._weights_stamp((embeddings, *projections))
        if stamp != self._stamp or not bool(self._known[input_ids].all()):
            self._fill(input_ids, embeddings, projections, stamp)
        # index_select, not table[input_ids]: 7x faster for 3,500 rows of 1,152 (aten::index copies element-wise).
        return self._table.index_select(0, input_ids).split([layer.out_features for layer in projections], dim=1)

    @property
    def known_ids(self) -> int:
        """How many token ids the table holds rows for."""
        return int(self._known.sum())
