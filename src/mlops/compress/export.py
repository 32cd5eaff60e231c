"""A registered version's network as an ONNX graph (fp32), checked against the torch graph
before anything else is done with it."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from mlops.errors import CompressError, first_line
from mlops.messages import LOG

EXPORTER = "torch.onnx (dynamo)"
# torch.export fixes an RNN's sequence length, though asked to leave it free, once a graph
# of the same network class was exported in the process (registration does): torch 2.13,
# seen on GRU. The TorchScript exporter leaves it free; the parity check covers both.
LEGACY_EXPORTER = "torch.onnx (TorchScript)"


@dataclass(frozen=True)
class OnnxExport:
    model: object  # onnx.ModelProto
    exporter: str  # e.g. "torch.onnx (dynamo) 2.13.0"
    opset: int


def traced_program(mlflow_model_dir: str | Path, example: np.ndarray):
    """The version's graph as torch.export traced it at registration (a `pt2` model, with
    its free batch dimension), or a `pickle` model traced now with a free batch."""
    import mlflow.pytorch
    import torch

    from mlops.models.inference import exported_program

    program = exported_program(mlflow_model_dir)
    if program is not None:
        return program
    module = mlflow.pytorch.load_model(str(mlflow_model_dir)).eval()
    batch = torch.export.Dim("batch")
    return torch.export.export(module, (torch.from_numpy(example),), dynamic_shapes=({0: batch},))


def export_onnx(
    source: str | Path | nn.Module, example: np.ndarray, steps_axis: int | None = None
) -> OnnxExport:
    """Export with torch's dynamo exporter (the default since torch 2.9), input `x` and
    output `p` (probabilities), the batch dimension left free. `source`: a logged model's
    folder (its registered graph), or a network in eval mode, whose `steps_axis` (an RNN's
    sequence length) is left free too. Its progress lines go to the job log."""
    import torch

    from mlops.quiet import silence_unactionable_messages

    silence_unactionable_messages()
    if isinstance(source, nn.Module):
        free = {0: torch.export.Dim("batch")}
        if steps_axis is not None:
            free[steps_axis] = torch.export.Dim("steps")
        program, dynamic_shapes = source, (free,)
    else:
        program, dynamic_shapes = traced_program(source, example), None
    said = io.StringIO()
    try:
        with contextlib.redirect_stdout(said):
            exported = torch.onnx.export(
                program,
                (torch.from_numpy(example),),
                input_names=["x"],
                output_names=["p"],
                dynamic_shapes=dynamic_shapes,
                dynamo=True,
            )
    except Exception as error:  # the exporter raises many types, all for this network
        raise CompressError(
            f"torch.onnx cannot export this network ({first_line(error)}); compress methods "
            "other than onnx need its export too"
        ) from None
    finally:
        for line in said.getvalue().splitlines():
            LOG.info(line)
    model, exporter = without_debug_info(exported.model_proto), EXPORTER
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if steps_axis is not None and not is_free(model, steps_axis):
        model, exporter = legacy_export(source, example, steps_axis, opset), LEGACY_EXPORTER
    return OnnxExport(model, f"{exporter} {torch.__version__.split('+')[0]}", opset)


def is_free(model, axis: int) -> bool:
    """Whether the graph's input leaves `axis` to the caller (a named dimension)."""
    (graph_input,) = model.graph.input
    return bool(graph_input.type.tensor_type.shape.dim[axis].dim_param)


def legacy_export(network: nn.Module, example: np.ndarray, steps_axis: int, opset: int):
    """The TorchScript exporter, at the opset the dynamo exporter chose."""
    import warnings

    import onnx
    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # its deprecation notice: the parity check decides
        torch.onnx.export(
            network, (torch.from_numpy(example),), buffer, input_names=["x"],
            output_names=["p"], dynamo=False, opset_version=opset,
            dynamic_axes={"x": {0: "batch", steps_axis: "steps"}, "p": {0: "batch"}},
        )  # fmt: skip
    return without_debug_info(onnx.load_from_string(buffer.getvalue()))


def without_debug_info(model):
    """The graph without what the exporter records for debugging (each node's module path,
    FX node and stack) and the inferred shapes of its intermediate values: a seventh of the
    digits CNN's file, and far more of its int8 variant, which ONNX Runtime never reads."""
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del model.graph.value_info[:]
    return model


def parity_batches(samples: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """A batch of each size from `samples`, repeated when there are fewer."""
    repeats = -(-max(sizes) // len(samples))
    pool = np.concatenate([samples] * repeats) if repeats > 1 else samples
    return [np.ascontiguousarray(pool[:size], dtype=np.float32) for size in sizes]


def parity_problem(
    reference: Callable[[np.ndarray], np.ndarray],
    candidate: Callable[[np.ndarray], np.ndarray],
    batches: Sequence[np.ndarray],
    atol: float,
) -> str | None:
    """Why the candidate does not give the reference's probabilities within `atol` at each
    batch, or None when it does."""
    for batch in batches:
        expected = reference(batch)
        try:
            got = candidate(batch)
        except Exception as error:  # ONNX Runtime's own exception types
            return f"refuses a batch of {len(batch)} ({first_line(error)})"
        if got.shape != expected.shape:
            return f"answers shape {got.shape} for a batch of {len(batch)}, not {expected.shape}"
        gap = float(np.abs(got - expected).max())
        if not gap <= atol:
            return f"is off by up to {gap:.2g} (more than {atol:g}) at a batch of {len(batch)}"
    return None
