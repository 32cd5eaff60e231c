"""One datamodule for any dataset stored as a file, configured only by YAML."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, Sampler

from mlops.data.arrays import csv_columns, load_arrays
from mlops.data.validation import Label, Splits, validate_and_split
from mlops.errors import DataError


class ArrayDataset(Dataset):
    """In-memory arrays served a batch at a time: the DataLoader's fetcher calls
    `__getitems__` with a batch of indices, so a batch costs one index instead of one per
    sample plus a stack (a quarter of a small model's step, measured). numpy takes the
    sampler's list of ints about 4x faster than `torch.as_tensor` does."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.x[index]), torch.as_tensor(self.y[index])

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.x[indices]), torch.from_numpy(self.y[indices])


def already_batched(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """`collate_fn` for `ArrayDataset`: its batches need no collation."""
    return batch


class FilesDataModule(L.LightningDataModule):
    """Serves an `.npz` (x, y, optional x_val/y_val/x_test/y_test) or `.csv` dataset.

    The file is read and validated on first use of `splits`, so input shape and class count
    are known before the model is built and bad data fails before any run is created.
    """

    def __init__(
        self,
        name: str,
        path: str | Path,
        label_column: str = "label",
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        split_seed: int = 0,
        batch_size: int = 64,
        num_workers: int = 0,
        standardize: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise DataError(f"data.batch_size={batch_size}: use a whole number of samples >= 1")
        self.name = name
        self.path = Path(path)
        self.label_column = label_column
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.standardize = standardize  # read by the pipeline: the model standardizes

    @cached_property
    def splits(self) -> Splits:
        arrays = load_arrays(self.path, self.label_column)
        return validate_and_split(
            self.path, arrays, self.val_fraction, self.test_fraction, self.split_seed
        )

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.splits.input_shape

    @property
    def num_classes(self) -> int:
        return self.splits.num_classes

    @cached_property
    def feature_names(self) -> list[str] | None:
        """A CSV's feature columns, in the order the model takes them; None for .npz."""
        if self.path.suffix != ".csv":
            return None
        return [c for c in csv_columns(self.path) if c != self.label_column]

    @property
    def classes(self) -> tuple[Label, ...]:
        """The label values the model's outputs stand for, in output order."""
        return self.splits.classes

    def _loader(self, x, y, shuffle: bool, sampler: Sampler | None = None) -> DataLoader:
        return DataLoader(
            ArrayDataset(x, y),
            batch_size=self.batch_size,
            collate_fn=already_batched,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _evaluation_sampler(self, num_samples: int) -> Sampler | None:
        """Under DDP, each sample on exactly one rank. Lightning's default sampler pads the
        last rank with repeated samples, which would count them twice in val/test metrics."""
        trainer = self.trainer
        if trainer is None or trainer.world_size <= 1:
            return None  # Lightning's own sampler handling applies
        return UnrepeatedDistributedSampler(
            range(num_samples),
            num_replicas=trainer.world_size,
            rank=trainer.global_rank,
            shuffle=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.splits.x_train, self.splits.y_train, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        x, y = self.splits.x_val, self.splits.y_val
        return self._loader(x, y, shuffle=False, sampler=self._evaluation_sampler(len(y)))

    def test_dataloader(self) -> DataLoader:
        x, y = self.splits.x_test, self.splits.y_test
        return self._loader(x, y, shuffle=False, sampler=self._evaluation_sampler(len(y)))
