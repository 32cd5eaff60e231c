"""`mlops predict`: a registered version's predictions for a whole file, with no server.

The version is loaded from the registry as any MLflow user would (`pyfunc`), so the file is
scored by exactly what `make deploy` serves. A CSV keeps its rows and columns (an id column,
say) and gains the predicted label and one probability column per class; the model's
feature columns are picked by name, in any order, when it was trained on a CSV.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow import MlflowClient

from mlops.data.validation import Label
from mlops.errors import DataError
from mlops.registry.model_metadata import logged_classes, logged_features

PREDICTED = "predicted_label"
PROBABILITY_PREFIX = "probability_"
# samples per forward pass: a million rows at once would hold every layer's activations
# for all of them (8 GB for the digits CNN's first layer alone)
CHUNK = 4096


@dataclass(frozen=True)
class BatchResult:
    model_name: str
    version: str
    output: Path
    counts: dict[Label, int]  # samples per predicted label


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
    model = mlflow.pyfunc.load_model(f"models:/{model_name}/{version}")
    metadata = model.metadata.metadata
    schema = model.metadata.get_input_schema()
    input_shape = tuple(int(d) for d in schema.inputs[0].shape[1:])
    x, frame = read_samples(source, logged_features(metadata), input_shape)
    probabilities = np.concatenate(
        [np.asarray(model.predict(x[start : start + CHUNK])) for start in range(0, len(x), CHUNK)]
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
    counts = pd.Series(predicted).value_counts().sort_index()
    return BatchResult(model_name, version, output, {k: int(v) for k, v in counts.items()})
