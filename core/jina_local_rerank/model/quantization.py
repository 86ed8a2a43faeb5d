"""int8 linear layers for CPUs whose every output row depends on its input row alone (``dtype="int8"``).

Weights are quantized once, symmetrically, with one scale per output channel. Activations are quantized per
token: each row is divided by its own largest magnitude, so it spans the whole int8 range, multiplied in
integers, and the product is scaled back by that row's scale and the channel's. Unlike torch's dynamic
quantization (one activation scale per call, taken from the whole batch), a pair's logit therefore does not
depend on which pairs share its batch or its CPU row block.

The integer product runs in ``torch._int_mm`` (oneDNN) with the native row kernels (``native_kernels.py``) where
they run, else in FBGEMM where torch has it (x86), else in ``torch._int_mm`` with torch's own elementwise ops.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from .cpu_kernels import log_path_once, vnni
from .native_kernels import attention_path, native_kernels_problem

WEIGHT_LEVELS = 127  # symmetric int8 weights: -127..127 times the channel's scale


def _fbgemm_available() -> bool:
    return "fbgemm" in torch.backends.quantized.supported_engines and torch.backends.quantized.engine in (
        "fbgemm",
        "x86",
    )


def _activation_levels() -> int:
    """Levels of FBGEMM's unsigned 8-bit activations: 256, or 128 where VNNI is missing.

    Without VNNI the x86 kernels add pairs of uint8 x int8 products in saturating int16, which full 8-bit
    activations can overflow; torch's own dynamic quantization reduces the range for the same reason.
    """
    return 256 if vnni() else 128


def int8_path() -> str:
    """The kernels ``dtype="int8"`` runs on this CPU, in words."""
    return f"{_linear_path()}; {attention_path()}"


def _linear_path() -> str:
    if native_kernels_problem() is None:
        return "torch._int_mm (oneDNN) with native per-token int8 rows, 8-bit activations"
    if not _fbgemm_available():
        return "torch._int_mm (no FBGEMM in this torch build or on this CPU), 8-bit activations"
    if _activation_levels() == 256:
        return "FBGEMM with VNNI, 8-bit activations"
    return "FBGEMM without VNNI, 7-bit activations (8-bit products could overflow its 16-bit sums)"


class QuantizedRows(NamedTuple):
    """int8 rows and one scale per row: ``values * scales[:, None]`` approximates the fp32 rows."""

    values: torch.Tensor
    scales: torch.Tensor

    @classmethod
    def of(cls, x: torch.Tensor) -> QuantizedRows:
        """``x``'s rows quantized, each spanning the int8 range with its own scale (the native kernel)."""
        return cls(*torch.ops.jina_local_rerank_cpu.quantize_rows(x))


class Int8Linear(nn.Module):
    """``nn.Linear`` in int8: weights per output channel, activations per row (token); fp32 in and out."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight_scale = weight.abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny) / WEIGHT_LEVELS
        self.bias = None if linear.bias is None else linear.bias.detach().float()
        self._packed = None
        self._weight_t = None
        self._native = native_kernels_problem() is None
        if not self._native and _fbgemm_available():
            levels = _activation_levels()
            # The activation grid for rows scaled to [-1, 1]: `levels` steps, zero in the middle.
            self._input_scale, self._input_zero_point = 2 / (levels - 1), levels // 2
            with warnings.catch_warnings():
                # Quantized tensors are deprecated in torch, but remain the only way into FBGEMM's kernels.
                warnings.simplefilter("ignore")
                quantized = torch.quantize_per_channel(
                    weight, self.weight_scale.double(), torch.zeros(len(weight), dtype=torch.long), 0, torch.qint8
                )
                self._packed = torch.ops.quantized.linear_prepack(quantized, None)
        else:
            self._weight_t = torch.round(weight / self.weight_scale[:, None]).to(torch.int8).t()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"

    @functools.cached_property
    def dequantized_weight(self) -> torch.Tensor:
        """The int8 weights times their scales, ``[out, in]`` fp32 (computed on first use, then kept), where the
        layer holds them for ``torch._int_mm`` (with the native kernels; FBGEMM's are packed)."""
        return self._weight_t.t().float() * self.weight_scale[:, None]

    @property
    def fuses_geglu(self) -> bool:
        """Whether :meth:`geglu` runs here: the native kernels, and an even split into multiples of 16 columns."""
        return self._native and self.out_features % 32 == 0

    @property
    def fuses_norm(self) -> bool:
        """Whether :meth:`add_norm` runs here: the native kernels, and rows a multiple of 16 wide."""
        return self._native and self.out_features % 16 == 0

    def _native_product(self, x: torch.Tensor | QuantizedRows) -> tuple[torch.Tensor, torch.Tensor]:
        """The int32 products of ``x``'s per-row int8 values and the weights, and the rows' scales."""
        rows = x if isinstance(x, QuantizedRows) else QuantizedRows.of(x)
        return torch._int_mm(rows.values, self._weight_t), rows.scales

    def geglu(self, x: torch.Tensor) -> QuantizedRows:
        """``gelu(first half) * second half`` of this layer's output (JinaBERT's feed-forward), quantized per row
        for the next int8 layer, in one pass over the products (where :attr:`fuses_geglu`)."""
        product, scales = self._native_product(x)
        return QuantizedRows(*torch.ops.jina_local_rerank_cpu.geglu_rows(product, scales, self.weight_scale))

    def add_norm(self, x: torch.Tensor, residual: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
        """``norm(self(x) + residual)`` (fp32), in one pass over the products (where :attr:`fuses_norm`)."""
        product, scales = self._native_product(x)
        return torch.ops.jina_local_rerank_cpu.dequantize_add_norm(
            product, scales, self.weight_scale, self.bias, residual, norm.weight, norm.bias, norm.eps
        )

    def forward(self, x: torch.Tensor | QuantizedRows, out: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``[rows, in_features]`` (or its :class:`QuantizedRows`, with the native kernels) ->
        ``[rows, out_features]`` fp32 (written into ``out`` if given)."""
        if self._native:
            product, scales = self._native_product(x)
            if out is None:
                out = product.new_empty(product.shape, dtype=torch.float32)
            torch.ops.jina_local_rerank_cpu.dequantize_rows(product, scales, self.weight_scale, self.bias, out)
            return out
        # max(|x|) per row from two reductions: no |x| temporary.
        magnitude = torch.maximum(x.amax(dim=-1, keepdim=True), x.amin(dim=-1, keepdim=True).neg_())
        magnitude.clamp_min_(torch.finfo(torch.float32).tiny)
        if self._packed is not None:
            product = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(
                x / magnitude, self._input_scale, self._input_zero_point, self._packed
            )
        else:
            rows = torch.round(x * (WEIGHT_LEVELS / magnitude)).to(torch.int8)
            product = torch._int_mm(rows, self._weight_t).float().mul_(self.weight_scale / WEIGHT_LEVELS)
        if out is None:
            out = product
        if self.bias is None:
            return torch.mul(product, magnitude, out=out)
        return torch.addcmul(self.bias, product, magnitude, out=out)


def float_weight(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A linear layer's weight ``[out, in]`` and bias as fp32: an :class:`Int8Linear`'s as it multiplies them
    (dequantized once), any other's converted."""
    if isinstance(layer, Int8Linear):
        return layer.dequantized_weight, layer.bias
    return layer.weight.float(), None if layer.bias is None else layer.bias.float()


def shared_input(layers: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor | QuantizedRows:
    """What to give each of ``layers`` for input ``x``: its per-row quantization, computed once, where every layer is
    an :class:`Int8Linear` on the native kernels (each would compute the same one), else ``x`` itself."""
    if layers and all(isinstance(layer, Int8Linear) and layer._native for layer in layers):
        return QuantizedRows.of(x)
    return x


def quantize_linear_layers(module: nn.Module) -> nn.Module:
    """Replace every ``nn.Linear`` inside ``module`` by an :class:`Int8Linear`, in place; returns ``module``.
    Logs (once per process) which kernels they run on."""
    log_path_once("int8", int8_path())
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, Int8Linear(child))
    return module
