"""Data validation: each bad input fails before training with a message naming the problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlops.data.arrays import load_npz, save_npz_reproducibly
from mlops.data.builtin import write_digits
from mlops.data.files import FilesDataModule
from mlops.errors import DataError


def datamodule(path: Path, **kwargs) -> FilesDataModule:
    return FilesDataModule(name="t", path=path, **kwargs)


def write_npz(tmp_path: Path, **arrays: np.ndarray) -> Path:
    path = tmp_path / "d.npz"
    save_npz_reproducibly(path, arrays)
    return path


def blobs(n: int = 60, features: int = 4, classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, features)).astype(np.float32) + y[:, None]
    return x, y


def test_digits_are_written_byte_for_byte_reproducibly(tmp_path: Path) -> None:
    first = write_digits(tmp_path / "a").read_bytes()
    second = write_digits(tmp_path / "b").read_bytes()
    assert first == second


def test_digits_splits_are_fixed_stratified_and_complete(digits_file: Path) -> None:
    splits = datamodule(digits_file).splits
    sizes = [len(splits.y_train), len(splits.y_val), len(splits.y_test)]
    assert sum(sizes) == 1797
    assert sizes == [1257, 270, 270]
    assert splits.input_shape == (1, 8, 8)
    assert splits.num_classes == 10
    assert set(np.bincount(splits.y_test)) <= {26, 27, 28}  # stratified: ~27 per digit
    assert (
        splits.x_train.dtype == np.float32
        and 0.0 <= splits.x_train.min() <= splits.x_train.max() <= 1.0
    )


def test_npz_without_val_and_test_is_split_stratified(tmp_path: Path) -> None:
    x, y = blobs(100)
    splits = datamodule(write_npz(tmp_path, x=x, y=y), val_fraction=0.2, test_fraction=0.2).splits
    assert (len(splits.y_train), len(splits.y_val), len(splits.y_test)) == (64, 16, 20)
    assert splits.input_shape == (4,) and splits.num_classes == 3


def write_csv(path: Path, x: np.ndarray, labels: list) -> Path:
    header = ",".join([f"f{i}" for i in range(x.shape[1])] + ["target"])
    rows = [",".join(map(str, [*row, label])) for row, label in zip(x, labels, strict=True)]
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_csv_infers_shape_and_classes(tmp_path: Path) -> None:
    x, y = blobs(90, features=5)
    splits = datamodule(write_csv(tmp_path / "d.csv", x, y), label_column="target").splits
    assert splits.input_shape == (5,) and splits.num_classes == 3
    assert splits.classes == (0, 1, 2)
    assert len(splits.y_train) + len(splits.y_val) + len(splits.y_test) == 90


NAMES = np.array(["setosa", "versicolor", "virginica"])


@pytest.mark.parametrize(
    ("labels", "classes"),
    [
        (NAMES, ("setosa", "versicolor", "virginica")),  # names, sorted
        (np.array([1, 2, 3]), (1, 2, 3)),  # 1..C
        (np.array([-1, 1, 7]), (-1, 1, 7)),  # any integers
        (np.array([0.0, 1.0, 2.0]), (0, 1, 2)),  # integral floats are integers
    ],
)
def test_any_class_labels_are_numbered_in_sorted_order_and_kept(
    tmp_path: Path, labels: np.ndarray, classes: tuple
) -> None:
    x, index = blobs(90)
    for path in (write_npz(tmp_path, x=x, y=labels[index]),
                 write_csv(tmp_path / "d.csv", x, labels[index].tolist())):  # fmt: skip
        splits = datamodule(path, label_column="target", split_seed=1).splits
        assert splits.classes == classes and splits.num_classes == 3
        assert all(isinstance(c, type(classes[0])) for c in splits.classes)
        for split in ("train", "val", "test"):  # each sample keeps its class
            x_split, y_split = getattr(splits, f"x_{split}"), getattr(splits, f"y_{split}")
            rows = [int(np.abs(x - row).max(axis=1).argmin()) for row in x_split]  # CSV: ~1 ulp
            np.testing.assert_array_equal(y_split, index[rows])


def test_a_class_unseen_in_training_names_the_label(tmp_path: Path) -> None:
    x, index = blobs()
    y_test = NAMES[index].copy()
    y_test[4] = "iris"
    path = write_npz(tmp_path, x=x, y=NAMES[index], x_test=x, y_test=y_test)
    expect_data_error(path, "y_test has label 'iris'", "setosa, versicolor, virginica")
    numbers = write_npz(tmp_path, x=x, y=NAMES[index], x_test=x, y_test=index)
    expect_data_error(numbers, "y_test holds numbers but y holds names")


def test_round_trip_keeps_arrays(tmp_path: Path) -> None:
    x, y = blobs()
    loaded = load_npz(write_npz(tmp_path, x=x, y=y))
    np.testing.assert_array_equal(loaded["x"], x)
    np.testing.assert_array_equal(loaded["y"], y)


def expect_data_error(path: Path, *fragments: str, **kwargs) -> None:
    with pytest.raises(DataError) as caught:
        datamodule(path, **kwargs).splits  # noqa: B018
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message


def test_missing_file(tmp_path: Path) -> None:
    expect_data_error(tmp_path / "nope.npz", "nope.npz", "does not exist", "make data")


def test_unsupported_suffix(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    path.write_bytes(b"x")
    expect_data_error(path, "d.parquet", "unsupported file type")


def test_missing_keys(tmp_path: Path) -> None:
    x, _ = blobs()
    expect_data_error(
        write_npz(tmp_path, x=x, labels=np.zeros(len(x))), "missing array(s) y", "labels"
    )


def test_half_a_split_pair(tmp_path: Path) -> None:
    x, y = blobs()
    expect_data_error(write_npz(tmp_path, x=x, y=y, x_test=x), "x_test", "y_test")


def test_missing_label_column(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,2\n3,4\n")
    expect_data_error(path, "no label column 'label'", "a, b", "data.label_column")


def test_non_numeric_csv_feature(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("colour,label\nred,0\nblue,1\n")
    expect_data_error(path, "colour", "not numeric")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_inputs(tmp_path: Path, bad: float) -> None:
    x, y = blobs()
    x[7, 2] = bad
    expect_data_error(write_npz(tmp_path, x=x, y=y), "d.npz", "x has NaN or inf", "sample 7")


def test_nan_in_test_split_named(tmp_path: Path) -> None:
    x, y = blobs()
    x_test = x.copy()
    x_test[3, 0] = np.nan
    expect_data_error(write_npz(tmp_path, x=x, y=y, x_test=x_test, y_test=y), "x_test has NaN")


@pytest.mark.parametrize(
    ("labels", "fragment"),
    [
        (np.array([0.5, 1.0, 2.0] * 20), "non-integer labels"),
        (np.array([0.0, np.nan, 2.0] * 20), "no label (NaN) in 20 sample(s) (first: sample 1)"),
        (np.array([3] * 60), "only one class (3)"),
    ],
)
def test_bad_labels(tmp_path: Path, labels: np.ndarray, fragment: str) -> None:
    x, _ = blobs(60)
    expect_data_error(write_npz(tmp_path, x=x, y=labels), fragment)


def test_a_csv_row_without_its_label_is_named(tmp_path: Path) -> None:
    x, index = blobs()
    labels = NAMES[index].tolist()
    labels[5] = ""
    path = write_csv(tmp_path / "d.csv", x, labels)
    expect_data_error(
        path, "y has no label in 1 sample(s) (first: sample 5)", label_column="target"
    )


def test_label_count_mismatch(tmp_path: Path) -> None:
    x, y = blobs()
    expect_data_error(write_npz(tmp_path, x=x, y=y[:-1]), "59 labels", "60 samples")


def test_test_label_unseen_in_training(tmp_path: Path) -> None:
    x, y = blobs()
    y_test = y.copy()
    y_test[0] = 7
    expect_data_error(
        write_npz(tmp_path, x=x, y=y, x_test=x, y_test=y_test), "y_test has label 7", "0, 1, 2"
    )


def test_train_and_test_shapes_disagree(tmp_path: Path) -> None:
    x, y = blobs()
    path = write_npz(tmp_path, x=x, y=y, x_test=x[:, :3], y_test=y)
    expect_data_error(path, "x_test has per-sample shape (3,)", "x has (4,)")


def test_too_few_samples_to_split(tmp_path: Path) -> None:
    x, y = blobs(3)
    expect_data_error(write_npz(tmp_path, x=x, y=y), "no training sample is left")


def test_loaders_serve_whole_batches_equal_to_per_sample_collation(digits_file: Path) -> None:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    datamodule = FilesDataModule(name="digits", path=digits_file, batch_size=64)
    splits = datamodule.splits
    plain = DataLoader(
        TensorDataset(torch.from_numpy(splits.x_train), torch.from_numpy(splits.y_train)),
        batch_size=64,
        shuffle=True,
    )
    torch.manual_seed(3)
    ours = list(datamodule.train_dataloader())
    torch.manual_seed(3)
    reference = list(plain)
    assert [len(y) for _, y in ours] == [len(y) for _, y in reference]
    assert len(ours) == -(-len(splits.y_train) // 64)  # the last, partial batch is kept
    for (x, y), (x_ref, y_ref) in zip(ours, reference, strict=True):
        assert torch.equal(x, x_ref) and torch.equal(y, y_ref)
    x, _ = next(iter(datamodule.test_dataloader()))
    assert torch.equal(x, torch.from_numpy(splits.x_test[:64]))  # in order, unshuffled
