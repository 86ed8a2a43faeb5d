"""Training objectives, one class per objective, over lists of documents per query.

Every loss takes the student's raw logits ``[lists, n]`` (one row per query, padded to the longest list), the
targets in the same layout (relevance labels, or the teacher's raw logits) and the mask of real entries, and
returns one loss per list; the trainer averages them over the lists of an optimizer step.

| name | targets | objective |
|---|---|---|
| ``bce`` | labels in 0..1 | pointwise binary cross-entropy on ``sigmoid(logit)``, averaged over the list |
| ``softmax`` | labels | cross-entropy between ``softmax(logits)`` and the labels normalised to sum 1 (one positive: the
  classic 1-positive, k-negative listwise loss) |
| ``lambda`` | graded labels | LambdaLoss (Wang et al., 2018) with the NDCG-Loss2++ weights: an NDCG surrogate |
| ``margin-mse`` | teacher logits | MSE between the student's and the teacher's logit margins, over every pair |
| ``kl`` | teacher logits | KL(teacher ‖ student) of the listwise softmax distributions at ``temperature`` |
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from .config import LOSS_NAMES

LABELS = "labels"
TEACHER = "teacher"


class ListLoss:
    """A training objective: ``(logits, targets, mask) -> loss per list``; ``needs`` says what the targets are."""

    name: ClassVar[str]
    needs: ClassVar[str]

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class BinaryCrossEntropyLoss(ListLoss):
    """Pointwise: ``BCE(sigmoid(logit), label)`` for every document, the mean over each list."""

    name: ClassVar[str] = "bce"
    needs: ClassVar[str] = LABELS

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        per_document = F.binary_cross_entropy_with_logits(logits, targets, reduction="none") * mask
        return per_document.sum(-1) / mask.sum(-1)


@dataclass(frozen=True)
class SoftmaxCrossEntropyLoss(ListLoss):
    """Listwise: ``-sum_i p_i log softmax(logits)_i`` with ``p = labels / sum(labels)`` (negative labels count 0)."""

    name: ClassVar[str] = "softmax"
    needs: ClassVar[str] = LABELS

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = targets.clamp(min=0) * mask
        target = weights / weights.sum(-1, keepdim=True)
        log_probabilities = logits.masked_fill(~mask, float("-inf")).log_softmax(-1)
        return -(target * log_probabilities.masked_fill(~mask, 0.0)).sum(-1)


@dataclass(frozen=True)
class LambdaLoss(ListLoss):
    """LambdaLoss with the NDCG-Loss2++ weighting scheme (as in allRank and sentence-transformers).

    In the order the logits rank the list, every pair ``(i, j)`` whose labels differ (``y_i > y_j``) costs
    ``-w_ij log2 sigmoid(sigma (s_i - s_j))``, summed over the list, with
    ``w_ij = mu * |1/D(|i-j|) - 1/D(|i-j|+1)| * |G_i - G_j| + |1/D(i) - 1/D(j)| * |G_i - G_j|``,
    ``D(r) = log2(1 + r)`` and ``G = label / maxDCG``: the gain of the project's NDCG (linear in the grade, as
    trec_eval), so the surrogate follows the metric the evaluation reports.
    """

    name: ClassVar[str] = "lambda"
    needs: ClassVar[str] = LABELS
    sigma: float = 1.0
    mu: float = 10.0

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n = logits.shape[-1]
        scores, order = logits.masked_fill(~mask, float("-inf")).sort(dim=-1, descending=True)
        labels = targets.masked_fill(~mask, 0.0).clamp(min=0).gather(-1, order)
        valid = mask.gather(-1, order)
        ranks = torch.arange(1, n + 1, device=logits.device, dtype=logits.dtype)
        discount = torch.log2(1 + ranks)  # D(r) for ranks 1..n
        ideal = torch.sort(labels, dim=-1, descending=True).values
        max_dcg = (ideal / discount).sum(-1, keepdim=True).clamp(min=1e-10)
        gain = labels / max_dcg
        gain_gap = (gain[:, :, None] - gain[:, None, :]).abs()
        distance = (ranks[:, None] - ranks[None, :]).abs().long()  # |i - j|, 0 on the diagonal
        inverse = torch.cat([discount.new_zeros(1), 1 / discount])  # 1/D(0) := 0 pads the diagonal
        loss2 = (inverse[distance] - inverse[(distance + 1).clamp(max=n)]).abs() * (distance > 0)
        rank_gap = (1 / discount[:, None] - 1 / discount[None, :]).abs()
        weights = (self.mu * loss2 + rank_gap) * gain_gap
        pairs = (labels[:, :, None] > labels[:, None, :]) & valid[:, :, None] & valid[:, None, :]
        margins = (scores[:, :, None] - scores[:, None, :]).masked_fill(~pairs, 0.0)
        costs = -weights.detach() * F.logsigmoid(self.sigma * margins) / math.log(2)
        return (costs * pairs).sum(dim=(-2, -1))


@dataclass(frozen=True)
class MarginMSELoss(ListLoss):
    """Distillation: ``mean over pairs i<j of ((s_i - s_j) - (t_i - t_j))^2`` (Hofstätter et al.'s MarginMSE,
    which is this for a positive and one negative)."""

    name: ClassVar[str] = "margin-mse"
    needs: ClassVar[str] = TEACHER

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        difference = (logits - targets).masked_fill(~mask, 0.0)
        gaps = (difference[:, :, None] - difference[:, None, :]) ** 2
        pairs = torch.triu(mask[:, :, None] & mask[:, None, :], diagonal=1)
        return (gaps * pairs).sum(dim=(-2, -1)) / pairs.sum(dim=(-2, -1)).clamp(min=1)


@dataclass(frozen=True)
class KLDivergenceLoss(ListLoss):
    """Distillation: ``T^2 KL(softmax(t / T) || softmax(s / T))`` over each list, ``T`` the temperature."""

    name: ClassVar[str] = "kl"
    needs: ClassVar[str] = TEACHER
    temperature: float = 1.0

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        student, teacher = (
            (x / t).masked_fill(~mask, float("-inf")).log_softmax(-1).masked_fill(~mask, 0.0) for x in (logits, targets)
        )
        return t * t * (teacher.exp() * (teacher - student) * mask).sum(-1)


LOSSES: dict[str, type[ListLoss]] = {
    loss.name: loss
    for loss in (SoftmaxCrossEntropyLoss, BinaryCrossEntropyLoss, LambdaLoss, MarginMSELoss, KLDivergenceLoss)
}
assert tuple(LOSSES) == LOSS_NAMES


def make_loss(name: str, *, temperature: float = 1.0) -> ListLoss:
    """The loss called ``name`` (see :data:`LOSSES`); ``temperature`` applies to ``kl``."""
    if name not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(map(repr, LOSSES))}, got {name!r}")
    if name == KLDivergenceLoss.name:
        return KLDivergenceLoss(temperature=temperature)
    return LOSSES[name]()
