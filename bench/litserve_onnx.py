"""LitServe serving an ONNX version, as a Lightning user would set it up: the benchmark's
comparison for the ONNX Bento (same model file, same ONNX Runtime settings, same JSON).

    python -m bench.litserve_onnx MLFLOW_MODEL_FOLDER PORT
"""

from __future__ import annotations

import sys

import litserve as ls
import numpy as np

from mlops.serving.onnx_model import load_onnx_probabilities

WORKERS = 2  # as the Bento's deploy.workers on 2 cores


class OnnxClassifier(ls.LitAPI):
    def __init__(self, folder: str) -> None:
        super().__init__()
        self.folder = folder

    def setup(self, device: str) -> None:
        self.probabilities = load_onnx_probabilities(self.folder, threads=1)

    def decode_request(self, request: dict) -> np.ndarray:
        return np.asarray(request["inputs"], dtype=np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.probabilities(x)

    def encode_response(self, probabilities: np.ndarray) -> list[dict]:
        labels = probabilities.argmax(axis=1).tolist()
        return [{"label": label, "probabilities": row}
                for label, row in zip(labels, probabilities.tolist(), strict=True)]  # fmt: skip


def main() -> None:
    folder, port = sys.argv[1], int(sys.argv[2])
    server = ls.LitServer(OnnxClassifier(folder), accelerator="cpu", workers_per_device=WORKERS)
    server.run(host="127.0.0.1", port=port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
