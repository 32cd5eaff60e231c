"""`mlops predict`: a registered version's answers for a file, as its pyfunc model gives them."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from mlops.data.arrays import save_npz_reproducibly
from mlops.errors import DataError
from mlops.serving.batch import default_output, predict_file
from pipelines.train import train
from tests.test_registry import run_cli

NAME = "kinds-batch"
FEATURES = ["a", "b", "c", "d"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits_file: Path, tracking_uri: str) -> pd.DataFrame:
    """A version trained on a CSV with named labels; returns that CSV's frame."""
    from tests.conftest import compose_config

    folder = tmp_path_factory.mktemp("batch")
    rng = np.random.default_rng(0)
    index = np.arange(120) % 3
    frame = pd.DataFrame(rng.normal(size=(120, 4)) + index[:, None] * 3, columns=FEATURES)
    frame["kind"] = np.array(["ant", "bee", "cat"])[index]
    frame.to_csv(folder / "kinds.csv", index=False)
    train(compose_config([
        "data=files", "data.name=kinds", f"data.path={folder / 'kinds.csv'}",
        "data.label_column=kind", "model=mlp", "trainer.max_epochs=20",
        f"logger.tracking_uri={tracking_uri}", f"registry.model_name={NAME}",
        f"paths.output_dir={folder / 'out'}", f"paths.mlflow_artifacts_dir={folder / 'art'}",
    ]))  # fmt: skip
    return frame


def pyfunc_labels(tracking_uri: str, x: np.ndarray) -> list[str]:
    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}/1")
    classes = model.metadata.metadata["classes"]
    return [classes[i] for i in np.asarray(model.predict(x.astype(np.float32))).argmax(axis=1)]


def test_a_csv_is_answered_row_by_row_with_its_own_columns_kept(
    trained: pd.DataFrame, tracking_uri: str, tmp_path: Path
) -> None:
    """Columns in another order, an id column and no label column: the model's features are
    picked by name, and every row keeps its id beside its answer."""
    new = trained[FEATURES[::-1]].assign(bottle=range(120))
    new.to_csv(source := tmp_path / "new.csv", index=False)
    result = predict_file(MlflowClient(tracking_uri), NAME, "1", source, tmp_path / "out.csv")

    answers = pd.read_csv(result.output)
    probability_columns = ["probability_ant", "probability_bee", "probability_cat"]
    assert list(answers.columns) == [*FEATURES[::-1], "bottle", "predicted_label",
                                     *probability_columns]  # fmt: skip
    assert answers["bottle"].tolist() == list(range(120))
    expected = pyfunc_labels(tracking_uri, trained[FEATURES].to_numpy())
    assert answers["predicted_label"].tolist() == expected
    probabilities = answers[probability_columns]
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert result.counts == {k: expected.count(k) for k in sorted(set(expected))}
    assert np.mean(np.array(expected) == trained["kind"].to_numpy()) > 0.9


def test_an_npz_is_answered_from_its_x_array_in_chunks(
    trained: pd.DataFrame, tracking_uri: str, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr("mlops.serving.batch.CHUNK", 50)  # 120 rows: 50 + 50 + 20
    x = trained[FEATURES].to_numpy()
    save_npz_reproducibly(source := tmp_path / "new.npz", {"x": x})
    result = predict_file(MlflowClient(tracking_uri), NAME, "1", source, tmp_path / "out.csv")
    answers = pd.read_csv(result.output)
    assert answers["predicted_label"].tolist() == pyfunc_labels(tracking_uri, x)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns=["c"]), "no column(s) c, which the model takes"),
        (
            lambda f: f.assign(b=[np.nan] + [0.0] * 119),
            "missing values in 1 sample(s) (first: row 0)",
        ),
        (lambda f: f.iloc[:0], "no samples to predict"),
    ],
)
def test_a_file_the_model_cannot_take_is_refused_with_the_reason(
    trained: pd.DataFrame, tracking_uri: str, tmp_path: Path, change, message: str
) -> None:
    change(trained).to_csv(source := tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        predict_file(MlflowClient(tracking_uri), NAME, "1", source, tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


def test_the_command_scores_the_champion_and_says_where_it_wrote(
    trained: pd.DataFrame, tracking_uri: str, tmp_path: Path
) -> None:
    trained.to_csv(source := tmp_path / "all.csv", index=False)  # the label column is ignored
    output = tmp_path / "answers.csv"
    done = run_cli("predict", NAME, str(source), "--output", str(output), tracking_uri=tracking_uri)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote 120 predictions of {NAME} version 1 to {output} (ant: ")
    assert len(pd.read_csv(output)) == 120
    run = MlflowClient(tracking_uri).get_run(done.stdout.split("recorded in run ")[1].strip())
    assert run.data.tags["mlops.run_type"] == "prediction"
    assert run.data.tags["model.uri"] == f"models:/{NAME}/1"
    assert run.data.tags["data.file"] == str(source) and len(run.data.tags["data.file_md5"]) == 32
    assert run.data.tags["predictions.file"] == str(output)
    assert run.data.metrics["predictions/samples"] == 120
    shares = [v for k, v in run.data.metrics.items() if k.startswith("predictions/share/")]
    assert len(shares) == 3 and sum(shares) == pytest.approx(1.0)
    assert default_output(Path("data/new.csv")) == Path("predictions/new.csv")  # not in data/


def test_an_npz_without_samples_is_named(
    trained: pd.DataFrame, tracking_uri: str, tmp_path: Path
) -> None:
    save_npz_reproducibly(source := tmp_path / "labels.npz", {"y": np.zeros(3)})
    with pytest.raises(DataError, match=r"labels.npz: no array 'x' of samples; found: y"):
        predict_file(MlflowClient(tracking_uri), NAME, "1", source, tmp_path / "out.csv")
