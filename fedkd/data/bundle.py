"""What every dataset loader takes and gives: the request, the splits as tensors, the data root.

All datasets here fit in memory, and on a small CPU a per-sample ``Dataset``/``DataLoader``
pipeline costs more than the models we train; so each split is a pair of tensors
(``x``: float (N, C, H, W) normalised, ``y``: long (N,)) and batches are slices of them.

This module is the leaf of :mod:`fedkd.data` (it imports only :mod:`fedkd.data.specs`): the
built-in loaders, the loaders of your own data and the registry that names them all read their
types from here, so none of them needs another.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedkd.data.specs import DatasetSpec

#: Where downloads and caches go unless ``dataset.root`` says otherwise.
DEFAULT_ROOT = Path(os.environ.get("FEDKD_DATA", Path.home() / ".cache" / "fedkd" / "data"))


@dataclass
class Split:
    """One split of a dataset as tensors: ``x`` normalised images, ``y`` integer labels."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, indices: np.ndarray | torch.Tensor) -> Split:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return Split(self.x[idx], self.y[idx])

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))


@dataclass
class DataBundle:
    """A dataset's train and test splits and its :class:`DatasetSpec`."""

    spec: DatasetSpec
    train: Split
    test: Split

    def truncated(self, max_train: int | None, max_test: int | None) -> DataBundle:
        """The first ``max_train`` training and ``max_test`` test samples (``None``: all of them)."""
        train, test = self.train, self.test
        return DataBundle(
            self.spec, Split(train.x[:max_train], train.y[:max_train]), Split(test.x[:max_test], test.y[:max_test])
        )


@dataclass(frozen=True)
class DataRequest:
    """The ``dataset.*`` options :func:`fedkd.data.load_dataset` was called with.

    Every loader gets all of them and reads its part: the built-in datasets ``root``,
    ``download``, ``seed`` and ``test_fraction``; your own data ``hub``, ``num_classes`` and the
    Hugging Face columns and splits; all of them ``image_size``, ``max_train`` and ``max_test``.
    """

    name: str
    root: str | None = None
    download: bool = False
    image_size: int | None = None
    seed: int = 0
    test_fraction: float = 0.2
    max_train: int | None = None
    max_test: int | None = None
    hub: str | None = None
    num_classes: int | None = None
    image_key: str | None = None
    label_key: str | None = None
    train_split: str = "train"
    test_split: str = "test"


#: A registry entry: the request in, the normalised splits and their spec out.
Loader = Callable[[DataRequest], DataBundle]


def iterate_batches(
    split: Split,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` batches of ``split``; shuffled with ``generator`` when asked."""
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else None
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        if order is None:
            yield split.x[start : start + batch_size], split.y[start : start + batch_size]
        else:
            idx = order[start : start + batch_size]
            yield split.x[idx], split.y[idx]
