"""Datasets by name, loaded once into normalised in-memory tensors.

All datasets here fit in memory, and on a small CPU a per-sample ``Dataset``/``DataLoader``
pipeline costs more than the models we train; so each split is a pair of tensors
(``x``: float (N, C, H, W) normalised, ``y``: long (N,)) and batches are slices of them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fedkd.data.custom import OWN_DATASETS, load_own
from fedkd.data.idx import has_idx_files, read_idx_folder
from fedkd.data.specs import DatasetSpec, get_spec
from fedkd.errors import DataError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
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


# ---------------------------------------------------------------------------------------------
# Raw loaders: each returns uint8-or-float arrays (N, C, H, W) in [0, 1] scale and int labels.
# ---------------------------------------------------------------------------------------------

RawSplits = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _load_digits(root: Path | None, download: bool, seed: int, test_fraction: float) -> RawSplits:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(len(y) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def _load_fashion_mnist(root: Path | None, download: bool, seed: int, test_fraction: float) -> RawSplits:
    # Prefer a folder of raw idx .gz files (Debian's package, or the user's root holding them).
    for folder in ([root] if root is not None else [DEBIAN_FASHION_MNIST]):
        if folder is not None and has_idx_files(folder):
            arrays = read_idx_folder(folder)
            return (
                torch.from_numpy(arrays["train_images"].copy()).unsqueeze(1),
                torch.from_numpy(arrays["train_labels"].astype(np.int64)),
                torch.from_numpy(arrays["test_images"].copy()).unsqueeze(1),
                torch.from_numpy(arrays["test_labels"].astype(np.int64)),
            )
    return _load_torchvision("FashionMNIST", root, download)


def _torchvision_arrays(name: str, ds) -> tuple[torch.Tensor, torch.Tensor]:
    """Pull the whole uint8 image tensor (N, C, H, W) and labels out of a torchvision dataset."""
    if name in ("MNIST", "FashionMNIST"):
        return ds.data.unsqueeze(1), torch.as_tensor(ds.targets, dtype=torch.long)
    if name == "SVHN":  # already N, C, H, W
        return torch.from_numpy(ds.data), torch.as_tensor(ds.labels, dtype=torch.long)
    # CIFAR: N, H, W, C numpy
    return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.as_tensor(
        ds.targets, dtype=torch.long
    )


def _load_torchvision(name: str, root: Path | None, download: bool) -> RawSplits:
    import torchvision.datasets as tvd

    root = Path(root) if root is not None else DEFAULT_ROOT
    cls = getattr(tvd, name)
    split_kwargs = (
        ({"split": "train"}, {"split": "test"}) if name == "SVHN" else ({"train": True}, {"train": False})
    )
    try:
        train = cls(str(root), download=download, **split_kwargs[0])
        test = cls(str(root), download=download, **split_kwargs[1])
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted..."
        raise DataError(
            f"{name} files not found under {root} ({str(exc).splitlines()[0]}); "
            "set dataset.download=true when online, or dataset.root to a folder that holds them"
        ) from None
    except OSError as exc:  # network failure while downloading
        raise DataError(
            f"could not download {name} to {root} ({exc}); copy the files there and set dataset.download=false"
        ) from None
    return (*_torchvision_arrays(name, train), *_torchvision_arrays(name, test))


def _torchvision_loader(name: str) -> Callable[..., RawSplits]:
    return lambda root, download, seed, test_fraction: _load_torchvision(name, root, download)


LOADERS: dict[str, Callable[..., RawSplits]] = {
    "digits": _load_digits,
    "fashion_mnist": _load_fashion_mnist,
    "mnist": _torchvision_loader("MNIST"),
    "cifar10": _torchvision_loader("CIFAR10"),
    "cifar100": _torchvision_loader("CIFAR100"),
    "svhn": _torchvision_loader("SVHN"),
}


def _normalise(x: torch.Tensor, spec: DatasetSpec) -> torch.Tensor:
    x = x.float()
    if x.max() > 1.0:  # uint8 images
        x = x / 255.0
    if x.shape[-1] != spec.image_size:
        x = F.interpolate(x, size=(spec.image_size, spec.image_size), mode="bilinear", align_corners=False)
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    return ((x - mean) / std).contiguous()


def load_dataset(
    name: str,
    root: str | None = None,
    download: bool = False,
    image_size: int | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    max_train: int | None = None,
    max_test: int | None = None,
    hub: str | None = None,
    num_classes: int | None = None,
    image_key: str | None = None,
    label_key: str | None = None,
    train_split: str = "train",
    test_split: str = "test",
) -> DataBundle:
    """Load dataset ``name`` as normalised tensors.

    Args:
        name: one of :data:`fedkd.data.specs.SPECS`, or your own data: ``image_folder``,
            ``arrays`` or ``hf`` (:mod:`fedkd.data.custom`; their spec is read from the data).
        root: folder of the files; ``None`` uses Debian's Fashion-MNIST folder when present, else
            ``$FEDKD_DATA`` (default ``~/.cache/fedkd/data``). Your own data: the ImageFolder
            tree, the ``.npz`` file or the ``save_to_disk`` folder.
        download: let torchvision download missing files (needs internet).
        image_size: resize to this side length (default: the dataset's own).
        seed, test_fraction: the fixed train/test split of datasets that ship without one (digits).
        max_train, max_test: keep only the first samples (quick experiments).
        hub, num_classes, image_key, label_key, train_split, test_split: your own data only (a
            Hugging Face hub name, the class count when the labels do not show it, the columns
            and splits of a Hugging Face dataset).
    """
    if name in OWN_DATASETS:
        bundle = load_own(
            name, root, hub=hub, image_size=image_size, num_classes=num_classes, image_key=image_key,
            label_key=label_key, train_split=train_split, test_split=test_split,
        )
        train, test = bundle.train, bundle.test
        return DataBundle(bundle.spec, Split(train.x[:max_train], train.y[:max_train]), Split(test.x[:max_test], test.y[:max_test]))
    spec = get_spec(name)
    if image_size is not None:
        spec = spec.resized(int(image_size))
    root_path = Path(root).expanduser() if root else None
    if root_path is not None and not root_path.exists() and not download:
        raise DataError(
            f"dataset.root {root_path} does not exist; create it with the dataset's files, "
            "or set dataset.download=true when online"
        )
    x_train, y_train, x_test, y_test = LOADERS[name](root_path, download, seed, test_fraction)
    train = Split(_normalise(x_train[:max_train], spec), y_train[:max_train].clone())
    test = Split(_normalise(x_test[:max_test], spec), y_test[:max_test].clone())
    return DataBundle(spec=spec, train=train, test=test)
