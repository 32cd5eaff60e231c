"""One metric state per stage: the confusion matrix and the summed loss.

Accuracy, macro F1, mean loss and the confusion plot all derive from these two states at
epoch end, so a training step pays for one `argmax` and one `bincount` instead of a
separate torchmetrics update per score (180 -> 25 us a step on this machine, a tenth of a
small model's step). The states are sums, so torchmetrics reduces them over DDP ranks.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric


class ClassificationScores(Metric):
    """`compute()` -> {"loss", "acc" (micro), "f1" (macro over the classes that occur in
    labels or predictions, as torchmetrics' `MulticlassF1Score`), "confusion" (rows: true
    class, columns: predicted)}."""

    full_state_update = False
    is_differentiable = False

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.add_state(
            "confusion",
            default=torch.zeros(num_classes, num_classes, dtype=torch.long),
            dist_reduce_fx="sum",
        )
        self.add_state("loss_sum", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, target: torch.Tensor, loss: torch.Tensor) -> None:
        """`loss` is the batch's mean loss; it is weighted by the batch size."""
        predicted = logits.detach().argmax(dim=1)
        # bincount without weights is deterministic on CUDA too (trainer.deterministic)
        pairs = torch.bincount(target * self.num_classes + predicted, minlength=self.num_classes**2)
        # in place: `+=` would re-assign through nn.Module.__setattr__, twice a step
        self.confusion.add_(pairs.view(self.num_classes, self.num_classes))
        self.loss_sum.add_(loss.detach() * len(target))

    def compute(self) -> dict[str, torch.Tensor]:
        confusion = self.confusion
        total = confusion.sum()
        true_positives = confusion.diagonal()
        support = confusion.sum(dim=1)  # times each class is the label
        predicted = confusion.sum(dim=0)  # times each class is predicted
        present = (support + predicted) > 0
        f1 = 2 * true_positives / (support + predicted).clamp(min=1)
        return {
            "loss": self.loss_sum / total.clamp(min=1),
            "acc": true_positives.sum() / total.clamp(min=1),
            "f1": f1[present].mean() if present.any() else f1.new_zeros(()),
            "confusion": confusion.clone(),
        }
