"""int8 linear layers for CPUs whose every output row depends on its input row alone (``dtype="int8"``).

Weights are quantized once, symmetrically, with one scale per output channel. Activations are quantized per
token: each row is divided by its own largest magnitude, so it spans the whole int8 range, multiplied in
integers, and the product is scaled back by that row's scale and the channel's. Unlike torch's dynamic
quantization (one activation scale per call, taken from the whole batch), a pair's logit therefore does not
depend on which pairs share its batch or its CPU row block.

The integer product runs in FBGEMM where torch has it (x86), else in ``torch._int_mm``.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .cpu_kernels import log_path_once, vnni

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
    if not _fbgemm_available():
        return "torch._int_mm (no FBGEMM in this torch build or on this CPU), 8-bit activations"
    if _activation_levels() == 256:
        return "FBGEMM with VNNI, 8-bit activations"
    return "FBGEMM without VNNI, 7-bit activations (8-bit products could overflow its 16-bit sums)"


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
        if _fbgemm_available():
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

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``[rows, in_features]`` -> ``[rows, out_features]`` (written into ``out`` if given)."""
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


def quantize_linear_layers(module: nn.Module) -> nn.Module:
    """Replace every ``nn.Linear`` inside ``module`` by an :class:`Int8Linear`, in place; returns ``module``.
    Logs (once per process) which kernels they run on."""
    log_path_once("int8", int8_path())
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, Int8Linear(child))
    return module
