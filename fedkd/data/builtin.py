"""The datasets fedkd knows by name: scikit-learn's digits, and torchvision's or Debian's files.

Each raw loader returns uint8-or-float arrays (N, C, H, W) on the 0..255 or [0, 1] scale and
integer labels; :func:`standardised` turns one into a registry entry that resizes and
normalises them with the dataset's :class:`DatasetSpec` from :mod:`fedkd.data.specs`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fedkd.data.bundle import DEFAULT_ROOT, DataBundle, DataRequest, Loader, Split
from fedkd.data.idx import has_idx_files, read_idx_folder
from fedkd.data.specs import DatasetSpec, get_spec
from fedkd.errors import DataError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

RawSplits = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
#: ``(root, download, seed, test_fraction) -> (x_train, y_train, x_test, y_test)``.
RawLoader = Callable[[Path | None, bool, int, float], RawSplits]


def digits_raw(root: Path | None, download: bool, seed: int, test_fraction: float) -> RawSplits:
    """scikit-learn's 8x8 digits (bundled with it), split once by ``seed`` and ``test_fraction``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(len(y) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def fashion_mnist_raw(root: Path | None, download: bool, seed: int, test_fraction: float) -> RawSplits:
    """Fashion-MNIST from a folder of idx files when there is one, else through torchvision."""
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


def torchvision_raw(name: str) -> RawLoader:
    """The raw loader of torchvision's dataset class ``name`` (``MNIST``, ``CIFAR10``, ...)."""
    return lambda root, download, seed, test_fraction: _load_torchvision(name, root, download)


def _normalise(x: torch.Tensor, spec: DatasetSpec) -> torch.Tensor:
    x = x.float()
    if x.max() > 1.0:  # uint8 images
        x = x / 255.0
    if x.shape[-1] != spec.image_size:
        x = F.interpolate(x, size=(spec.image_size, spec.image_size), mode="bilinear", align_corners=False)
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    return ((x - mean) / std).contiguous()


def standardised(raw: RawLoader) -> Loader:
    """The registry entry of a built-in dataset: its spec from :data:`SPECS`, ``raw``'s arrays normalised.

    ``max_train``/``max_test`` cut the raw arrays before normalising, so a quick run pays only
    for the samples it keeps.
    """

    def load(request: DataRequest) -> DataBundle:
        spec = get_spec(request.name)
        if request.image_size is not None:
            spec = spec.resized(int(request.image_size))
        root_path = Path(request.root).expanduser() if request.root else None
        if root_path is not None and not root_path.exists() and not request.download:
            raise DataError(
                f"dataset.root {root_path} does not exist; create it with the dataset's files, "
                "or set dataset.download=true when online"
            )
        x_train, y_train, x_test, y_test = raw(root_path, request.download, request.seed, request.test_fraction)
        max_train, max_test = request.max_train, request.max_test
        train = Split(_normalise(x_train[:max_train], spec), y_train[:max_train].clone())
        test = Split(_normalise(x_test[:max_test], spec), y_test[:max_test].clone())
        return DataBundle(spec=spec, train=train, test=test)

    return load
