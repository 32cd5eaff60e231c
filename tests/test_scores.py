"""The one metric state per stage gives the same scores as torchmetrics' own metrics."""

from __future__ import annotations

import pytest
import torch
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
)

from mlops.models.scores import ClassificationScores


@pytest.mark.parametrize("absent_class", [False, True])
def test_scores_equal_torchmetrics_over_several_batches(absent_class: bool) -> None:
    torch.manual_seed(0)
    num_classes = 5
    scores = ClassificationScores(num_classes)
    accuracy = MulticlassAccuracy(num_classes, average="micro")
    f1 = MulticlassF1Score(num_classes, average="macro")
    confusion = MulticlassConfusionMatrix(num_classes)
    losses, sizes = [], []
    for size in (7, 16, 3):  # unequal batches: the loss mean must weight by size
        logits = torch.randn(size, num_classes)
        target = torch.randint(0, num_classes, (size,))
        if absent_class:  # class 4 never a label and never predicted
            logits[:, 4] = -1e9
            target = target % 4
        loss = torch.nn.functional.cross_entropy(logits, target)
        scores.update(logits, target, loss)
        for metric in (accuracy, f1, confusion):
            metric.update(logits, target)
        losses.append(loss * size)
        sizes.append(size)
    values = scores.compute()
    assert torch.allclose(values["acc"], accuracy.compute())
    assert torch.allclose(values["f1"], f1.compute())
    assert torch.equal(values["confusion"], confusion.compute())
    assert torch.allclose(values["loss"], torch.stack(losses).sum() / sum(sizes))


def test_reset_forgets_the_epoch() -> None:
    scores = ClassificationScores(3)
    scores.update(torch.eye(3), torch.tensor([0, 1, 1]), torch.tensor(0.5))
    scores.reset()
    scores.update(torch.eye(3)[:1], torch.tensor([0]), torch.tensor(0.25))
    values = scores.compute()
    assert values["confusion"].sum() == 1
    assert values["acc"] == 1.0 and values["loss"] == 0.25
