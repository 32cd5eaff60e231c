"""Class labels logged with a model, and data labels matched to them by value."""

from __future__ import annotations

import numpy as np
import pytest

from mlops.errors import DataError
from mlops.registry.model_metadata import labels_for_model, logged_classes


def test_a_model_logged_without_classes_predicts_0_to_c_minus_1() -> None:
    assert logged_classes(None, 3) == [0, 1, 2]
    assert logged_classes({"classes": ["a", "b"]}, 3) == [0, 1, 2]  # not this model's outputs
    assert logged_classes({"classes": ["a", "b", "c"]}, 3) == ["a", "b", "c"]


def test_data_labels_are_matched_to_the_models_outputs_by_value() -> None:
    model = ["cat", "dog", "fox"]
    labels = np.array([0, 1, 1, 0])
    np.testing.assert_array_equal(labels_for_model(labels, model, model, "m"), labels)
    # a file without any "dog" numbers "fox" 1: it must score as the model's output 2
    np.testing.assert_array_equal(
        labels_for_model(labels, ["cat", "fox"], model, "m"), np.array([0, 2, 2, 0])
    )


def test_a_label_the_model_does_not_predict_is_refused_by_name() -> None:
    with pytest.raises(DataError, match=r"label\(s\) 'owl' that m v1 does not predict"):
        labels_for_model(np.array([0, 1]), ["cat", "owl"], ["cat", "dog"], "m v1")


def test_scores_on_data_that_lacks_a_class_leave_that_class_out() -> None:
    """Macro F1 over the classes that occur, as in training (scikit-learn would count the
    absent class as an F1 of 0), and no recall for a class with no sample: the gate's
    per-class floor would otherwise refuse every model on such data."""
    from mlops.registry.evaluate import classification_metrics

    probabilities = np.array([[0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.1, 0.7, 0.2]])
    metrics = classification_metrics(probabilities, np.array([1, 2, 2]))  # no class 0
    assert metrics["test/acc"] == pytest.approx(2 / 3)
    assert metrics["test/f1"] == pytest.approx(2 / 3)  # 2/3 for class 1 and for class 2
    assert "test/recall/0" not in metrics
    assert (metrics["test/recall/1"], metrics["test/recall/2"]) == (1.0, 0.5)
