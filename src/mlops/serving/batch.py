"""`mlops predict`: a registered version's predictions for a whole file, with no server.

The version is loaded from the registry as any MLflow user would (`pyfunc`), so the file is
scored by exactly what `make deploy` serves. A CSV keeps its rows and columns (an id column,
say) and gains the predicted label and one probability column per class; the model's
feature columns are picked by name, in any order, when it was trained on a CSV.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow import MlflowClient

from mlops.data.validation import Label
from mlops.errors import DataError
from mlops.registry.loading import load_logged_model, pyfunc_probabilities
from mlops.registry.model_metadata import logged_classes, logged_features

PREDICTED = "predicted_label"
PROBABILITY_PREFIX = "probability_"
# samples per forward pass: a million rows at once would hold every layer's activations
# for all of them (8 GB for the digits CNN's first layer alone)
CHUNK = 4096
METRIC_UNSAFE = re.compile(r"[^/\w.\- ]")  # what MLflow refuses in a metric name


@dataclass(frozen=True)
class BatchResult:
    model_name: str
    version: str
    output: Path
    counts: dict[Label, int]  # samples per predicted label
    run_id: str  # the MLflow run that records it


def log_prediction_run(
    client: MlflowClient, model_name: str, version: str, source: Path, result_file: Path,
    counts: dict[Label, int],
) -> str:  # fmt: skip
    """One MLflow run per scored file, in the experiment of the version's training run:
    which version answered which file (by md5), where the answers went, the class mix."""
    from mlflow.entities import Metric, RunTag
    from mlflow.exceptions import MlflowException

    from mlops.tracking.lineage import file_md5

    training_run_id = client.get_model_version(model_name, version).run_id or ""
    try:
        experiment_id = client.get_run(training_run_id).info.experiment_id
    except MlflowException:  # the training run is gone: MLflow's default experiment
        experiment_id = "0"
    tags = {
        "mlops.run_type": "prediction",
        "model.name": model_name,
        "model.version": version,
        "model.uri": f"models:/{model_name}/{version}",
        "model.training_run_id": training_run_id,
        "data.file": str(source.resolve()),
        "data.file_md5": file_md5(source),
        "predictions.file": str(result_file.resolve()),
    }
    run = client.create_run(experiment_id, run_name=f"predict {model_name} v{version}")
    total = sum(counts.values())
    metrics = [Metric("predictions/samples", total, 0, 0)] + [
        Metric(f"predictions/share/{METRIC_UNSAFE.sub('_', str(label))}", count / total, 0, 0)
        for label, count in counts.items()
    ]
    client.log_batch(run.info.run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def default_output(source: Path) -> Path:
    """`predictions/<name>.csv` in the working folder: not beside the input, which is often
    in `data/`, where DVC would count the answers as a new data version."""
    return Path("predictions") / f"{source.stem}.csv"


def _csv_samples(
    frame: pd.DataFrame, source: Path, features: list[str] | None, width: int
) -> pd.DataFrame:
    """The feature columns of a CSV, by name where the model logged them."""
    if features is not None:
        missing = [f for f in features if f not in frame.columns]
        if missing:
            raise DataError(
                f"{source}: no column(s) {', '.join(missing[:10])}, which the model takes "
                f"(its features: {', '.join(features[:20])}{', ...' if len(features) > 20 else ''})"
            )
        return frame[features]
    numeric = frame.select_dtypes("number")
    if numeric.shape[1] != width:
        raise DataError(
            f"{source}: {numeric.shape[1]} numeric columns, but the model takes {width} "
            "features and logged no column names (it was not trained on a CSV): keep only "
            "its feature columns, in training order"
        )
    return numeric


def _npz_samples(source: Path) -> np.ndarray:
    """The `x` array of an .npz file; labels, if any, are not needed."""
    import zipfile

    try:
        with np.load(source, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files if key == "x"}
            found = ", ".join(archive.files) or "none"
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise DataError(f"{source}: not a readable .npz file ({error})") from error
    if "x" not in arrays:
        raise DataError(f"{source}: no array 'x' of samples; found: {found}")
    return arrays["x"]


def read_samples(
    source: Path, features: list[str] | None, input_shape: tuple[int, ...]
) -> tuple[np.ndarray, pd.DataFrame | None]:
    """Float32 samples shaped for the model, and the CSV's rows to write the answers beside
    (None for an .npz, whose `x` array is scored)."""
    if not source.is_file():
        raise DataError(f"{source} does not exist: pass a .csv or .npz file of samples")
    frame = None
    if source.suffix == ".csv":
        frame = pd.read_csv(source)
        x = _csv_samples(frame, source, features, int(np.prod(input_shape))).to_numpy()
    elif source.suffix == ".npz":
        x = _npz_samples(source)
    else:
        raise DataError(f"{source}: unsupported file type '{source.suffix}'; use .csv or .npz")
    if len(x) == 0:
        raise DataError(f"{source}: no samples to predict")
    if not np.issubdtype(x.dtype, np.number) and x.dtype != np.bool_:
        raise DataError(f"{source}: the features have dtype {x.dtype}; they must be numeric")
    if x.shape[1:] != input_shape:
        if x.ndim == 2 and x.shape[1] == int(np.prod(input_shape)):
            x = x.reshape(len(x), *input_shape)  # a CSV's flat row of an image, say
        else:
            raise DataError(
                f"{source}: samples shaped {x.shape[1:]}, but the model takes {input_shape}"
            )
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if bad.any():
        raise DataError(
            f"{source}: NaN or missing values in {int(bad.sum())} sample(s) (first: row "
            f"{int(np.flatnonzero(bad)[0])}); fill or drop them"
        )
    return x.astype(np.float32), frame


def predict_file(
    client: MlflowClient, model_name: str, version: str, source: Path, output: Path
) -> BatchResult:
    import mlflow

    mlflow.set_tracking_uri(client.tracking_uri)
    model = load_logged_model(mlflow.pyfunc.load_model, f"models:/{model_name}/{version}")
    metadata = model.metadata.metadata
    schema = model.metadata.get_input_schema()
    if schema is None or not schema.is_tensor_spec():
        raise DataError(
            f"{model_name} version {version} was logged without a tensor signature, which "
            "gives its input shape; score versions that `make train` registered"
        )
    input_shape = tuple(int(d) for d in schema.inputs[0].shape[1:])
    x, frame = read_samples(source, logged_features(metadata), input_shape)
    probabilities = np.concatenate(
        [pyfunc_probabilities(model, x[start : start + CHUNK]) for start in range(0, len(x), CHUNK)]
    )
    classes = logged_classes(metadata, probabilities.shape[1])
    predicted = [classes[i] for i in probabilities.argmax(axis=1)]
    answers = pd.DataFrame(
        {PREDICTED: predicted}
        | {f"{PROBABILITY_PREFIX}{c}": probabilities[:, i] for i, c in enumerate(classes)}
    )
    if frame is not None:
        answers = pd.concat([frame.drop(columns=answers.columns, errors="ignore"), answers], axis=1)
    output.parent.mkdir(parents=True, exist_ok=True)
    answers.to_csv(output, index=False)
    counts = {k: int(v) for k, v in pd.Series(predicted).value_counts().sort_index().items()}
    run_id = log_prediction_run(client, model_name, version, source, output, counts)
    return BatchResult(model_name, version, output, counts, run_id)
