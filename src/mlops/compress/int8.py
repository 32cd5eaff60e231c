"""ONNX Runtime int8 quantization of an exported graph, and a record of what it quantized.

Static QDQ (per-channel int8 weights, uint8 activations calibrated on training samples) for
graphs with convolutions: ORT's dynamic path turns a Conv into ConvInteger, several times
slower than fp32 on a CPU. Dynamic (weights int8, activations quantized on the fly) for
the rest, which needs no calibration. ORT quantizes no GRU or LSTM weights on either path:
the record says which layers stayed float32.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlops.compress.export import without_debug_info
from mlops.errors import CompressError

MODES = ("auto", "static", "dynamic")
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "GRU", "LSTM", "RNN")


@dataclass(frozen=True)
class Int8Model:
    model: object  # onnx.ModelProto
    mode: str  # static | dynamic
    layers: dict[str, str]  # "<node> (<op>)" -> int8 | float32
    int8_weight_share: float  # of the weighted layers' weights, by count

    def describe(self) -> str:
        return ", ".join(f"{layer}: {kind}" for layer, kind in self.layers.items())


def chosen_mode(model, mode: str) -> str:
    if mode not in MODES:
        raise CompressError(f"compress.int8.mode={mode!r}; use one of {', '.join(MODES)}")
    if mode != "auto":
        return mode
    return "static" if any(n.op_type == "Conv" for n in model.graph.node) else "dynamic"


def calibration_batches(samples: np.ndarray, batch_size: int = 32) -> Iterator[dict]:
    for start in range(0, len(samples), batch_size):
        yield {"x": np.ascontiguousarray(samples[start : start + batch_size], dtype=np.float32)}


def weights_by_layer(model) -> dict[str, list]:
    """Each weighted node's weight initializers (two or more dimensions: not its bias)."""
    from onnx import numpy_helper

    initializers = {i.name: i for i in model.graph.initializer}
    layers = {}
    for node in model.graph.node:
        if node.op_type not in WEIGHTED_OPS:
            continue
        weights = [
            numpy_helper.to_array(initializers[name])
            for name in node.input
            if name in initializers and len(initializers[name].dims) >= 2
        ]
        names = [n for n in node.input if n in initializers and len(initializers[n].dims) >= 2]
        if weights:
            layers[f"{node.name} ({node.op_type})"] = list(zip(names, weights, strict=True))
    return layers


def quantized_layers(fp32, int8) -> tuple[dict[str, str], float]:
    """Which layers of `fp32` have int8 weights in `int8` (ORT names a quantized weight
    `<weight>[_Transposed]_quantized`), and the share of weights that are int8."""
    from onnx import TensorProto

    int8_names = [
        i.name
        for i in int8.graph.initializer
        if i.data_type == TensorProto.INT8 and i.name.endswith("_quantized")
    ]
    layers, quantized, total = {}, 0, 0
    for layer, weights in weights_by_layer(fp32).items():
        count = sum(w.size for _, w in weights)
        is_int8 = all(any(n.startswith(f"{name}_") for n in int8_names) for name, _ in weights)
        layers[layer] = "int8" if is_int8 else "float32"
        quantized += count if is_int8 else 0
        total += count
    return layers, (quantized / total if total else 0.0)


def quantize_int8(fp32, mode: str, calibration: np.ndarray) -> Int8Model:
    """`fp32` (an onnx.ModelProto with input `x`) quantized to int8; `calibration`:
    training samples for the static path's activation ranges."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    mode = chosen_mode(fp32, mode)

    class Samples(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = calibration_batches(calibration)

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    with tempfile.TemporaryDirectory(prefix="mlops-int8-") as folder:
        source, prepared, target = (Path(folder) / f for f in ("fp32", "pre", "int8"))
        onnx.save(fp32, source)
        quant_pre_process(str(source), str(prepared))  # shapes and folded constants: ORT's advice
        # the probabilities stay float: a quantized softmax answers in 256 steps that do
        # not sum to one
        keep_float = [n.name for n in onnx.load(prepared).graph.node if n.op_type == "Softmax"]
        if mode == "static":
            quantize_static(
                str(prepared),
                str(target),
                Samples(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=keep_float,
            )
        else:
            quantize_dynamic(
                str(prepared), str(target), weight_type=QuantType.QInt8, nodes_to_exclude=keep_float
            )
        int8 = without_debug_info(onnx.load(target))
        layers, share = quantized_layers(onnx.load(prepared), int8)
    if share == 0:
        raise CompressError(
            f"ONNX Runtime's {mode} int8 quantization quantized none of this network's layers "
            f"({', '.join(layers) or 'it has no weighted layers'}): onnx-int8 cannot apply to "
            "it; compress it with compress.methods=[onnx]"
        )
    return Int8Model(int8, mode, layers, share)
