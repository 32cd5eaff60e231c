"""Networks: output shapes for every input rank they accept, clear errors for the rest."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mlops.errors import ModelConfigError
from mlops.models.classifier import Classifier
from mlops.models.cnn import CNN
from mlops.models.inference import inference_model
from mlops.models.mlp import MLP
from mlops.models.rnn import RNN
from mlops.models.standardize import Standardized
from mlops.quiet import silence_unactionable_messages


@pytest.mark.parametrize(
    ("net_class", "kwargs", "input_shape"),
    [
        (MLP, {}, (1, 8, 8)),
        (MLP, {}, (13,)),
        (CNN, {}, (1, 8, 8)),
        (CNN, {}, (3, 16)),
        (CNN, {"channels": [8]}, (2, 5, 7)),
        (RNN, {}, (1, 8, 8)),
        (RNN, {"cell": "lstm", "bidirectional": True}, (1, 8, 8)),
        (RNN, {"cell": "lstm", "num_layers": 2, "dropout": 0.1}, (12, 3)),
        (RNN, {}, (20,)),
    ],
)
def test_output_is_batch_by_classes(net_class, kwargs, input_shape) -> None:
    net = net_class(input_shape=input_shape, num_classes=5, **kwargs)
    logits = net(torch.randn(7, *input_shape))
    assert logits.shape == (7, 5)


def test_cnn_picks_1d_or_2d_by_rank() -> None:
    assert isinstance(CNN((1, 8, 8), 3).features[0], torch.nn.Conv2d)
    assert isinstance(CNN((1, 16), 3).features[0], torch.nn.Conv1d)


def test_rnn_reads_images_row_by_row() -> None:
    net = RNN((2, 6, 5), num_classes=3)
    assert net.encoder.input_size == 2 * 5  # one row of both channels per step


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (lambda: CNN((64,), 10), "cnn takes samples shaped"),
        (lambda: CNN((1, 2, 2, 2), 10), "got (1, 2, 2, 2)"),
        (lambda: CNN((1, 3, 3), 10, channels=[8, 16]), "needs spatial size >= 4"),
        (lambda: RNN((1, 2, 3, 4), 10), "rnn takes samples shaped"),
        (lambda: RNN((1, 8, 8), 10, cell="lstn"), "model.cell='lstn'"),
        (lambda: MLP((), 10), "mlp needs at least one feature"),
    ],
)
def test_shapes_a_model_cannot_take(build, fragment: str) -> None:
    with pytest.raises(ModelConfigError, match=None) as caught:
        build()
    assert fragment in str(caught.value)


def test_inference_model_returns_probabilities_and_leaves_training_net_alone() -> None:
    net = MLP((4,), 3)
    net.train()
    model = inference_model(net)
    probabilities = model(torch.randn(6, 4))
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(6))
    assert net.training and not model.training
    assert model.net is not net


@pytest.mark.parametrize("input_shape", [(1, 8, 8), (3, 16)])  # 2-D and 1-D convolutions
def test_inference_model_folds_batch_norms_into_the_convolutions(input_shape) -> None:
    net = CNN(input_shape, 10)
    with torch.no_grad():  # running statistics far from the initial 0 and 1
        for _ in range(5):
            net(torch.randn(32, *input_shape) * 3 + 1)
    x = torch.randn(64, *input_shape)
    with torch.no_grad():
        unfolded = torch.softmax(net.eval()(x), dim=-1)
        folded = inference_model(net)
        assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
        torch.testing.assert_close(folded(x), unfolded, atol=1e-6, rtol=1e-5)
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())  # untouched


@pytest.mark.parametrize(
    ("net_class", "input_shape"),
    [(MLP, (1, 8, 8)), (CNN, (1, 8, 8)), (CNN, (3, 16)), (RNN, (1, 8, 8))],
)
def test_the_exported_inference_graph_leaves_out_eval_no_ops(net_class, input_shape) -> None:
    """Dropout and global pooling + flatten are operations of the exported graph, run on
    every request, unless the inference model drops them; its answers stay the network's."""
    torch.manual_seed(0)
    net = net_class(input_shape=input_shape, num_classes=10, dropout=0.5)
    x = torch.randn(9, *input_shape)
    with torch.no_grad():
        expected = torch.softmax(net.eval()(x), dim=-1)
    dropouts = [m for m in net.modules() if isinstance(m, nn.Dropout)]
    silence_unactionable_messages()  # as registration does: the RNN's flat weights
    program = torch.export.export(inference_model(net), (x,))
    operations = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert not {op for op in operations if "dropout" in op or "adaptive_avg_pool" in op}
    if net_class is CNN:
        assert "aten.mean.dim" in operations
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), expected, atol=1e-6, rtol=1e-5)
    assert [m for m in net.modules() if isinstance(m, nn.Dropout)] == dropouts  # untouched


def test_classifier_builds_optimizer_and_scheduler_from_factories() -> None:
    from functools import partial

    module = Classifier(
        MLP((4,), 3),
        num_classes=3,
        optimizer=partial(torch.optim.SGD, lr=0.1),
        scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=1),
    )
    configured = module.configure_optimizers()
    assert isinstance(configured["optimizer"], torch.optim.SGD)
    assert configured["lr_scheduler"]["interval"] == "epoch"


def test_cnn_2d_runs_channels_last_with_the_same_outputs_as_nchw() -> None:
    import copy

    torch.manual_seed(0)
    net = CNN((2, 8, 8), 4).eval()
    assert net.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    nchw = copy.deepcopy(net).to(memory_format=torch.contiguous_format)
    x = torch.randn(6, 2, 8, 8)
    with torch.no_grad():
        expected = nchw.head(nchw.features(x))  # the plain NCHW computation
        assert torch.allclose(net(x), expected, atol=1e-5)


def test_standardized_network_uses_the_training_split_statistics() -> None:
    """Per input element: mean and std of the training samples, std 1 for a constant one."""
    x_train = np.array([[1.0, 100.0, 5.0], [3.0, 300.0, 5.0]], dtype=np.float32)
    net = MLP([3], 2).eval()
    standardized = Standardized.from_training_split(net, x_train)
    assert standardized.family == "mlp"
    torch.testing.assert_close(standardized.mean, torch.tensor([2.0, 200.0, 5.0]))
    torch.testing.assert_close(standardized.std, torch.tensor([1.0, 100.0, 1.0]))
    x = torch.tensor([[3.0, 100.0, 7.0]])
    torch.testing.assert_close(standardized(x), net(torch.tensor([[1.0, -1.0, 2.0]])))
    assert set(standardized.state_dict()) >= {"mean", "std"}  # saved in checkpoints
