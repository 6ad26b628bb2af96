"""Dataset loading: digits, Fashion-MNIST from a folder of idx .gz files the test writes, errors."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from fedkd.data import SPECS, DataBundle, Split, get_spec, load_dataset
from fedkd.data.bundle import DataRequest
from fedkd.data.datasets import LOADERS
from fedkd.data.idx import FASHION_FILES, read_idx
from fedkd.errors import ConfigError, DataError


def _write_idx(path: Path, array: np.ndarray, truncate: int = 0) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload[: len(payload) - truncate] if truncate else payload))


def make_fashion_folder(folder: Path, n_train: int = 50, n_test: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28)),
        "train_labels": rng.integers(0, 10, n_train),
        "test_images": rng.integers(0, 256, (n_test, 28, 28)),
        "test_labels": rng.integers(0, 10, n_test),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for key, name in FASHION_FILES.items():
        _write_idx(folder / name, arrays[key])
    return arrays


def test_fashion_mnist_loads_from_idx_folder(tmp_path):
    arrays = make_fashion_folder(tmp_path)
    data = load_dataset("fashion_mnist", root=str(tmp_path))
    spec = get_spec("fashion_mnist")
    assert data.train.x.shape == (50, 1, 28, 28) and data.test.x.shape == (20, 1, 28, 28)
    assert torch.equal(data.train.y, torch.as_tensor(arrays["train_labels"]))
    # Normalisation comes from the spec: undo it and get the raw pixels back.
    raw = data.train.x * spec.std[0] + spec.mean[0]
    assert torch.allclose(raw[3, 0] * 255, torch.as_tensor(arrays["train_images"][3], dtype=torch.float32), atol=1e-3)


def test_truncated_idx_file_is_a_clear_error(tmp_path):
    arrays = make_fashion_folder(tmp_path)
    _write_idx(tmp_path / FASHION_FILES["train_images"], arrays["train_images"], truncate=100)
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        load_dataset("fashion_mnist", root=str(tmp_path))


def test_corrupted_gzip_is_a_clear_error(tmp_path):
    make_fashion_folder(tmp_path)
    path = tmp_path / FASHION_FILES["test_labels"]
    path.write_bytes(path.read_bytes()[:15])
    with pytest.raises(DataError, match="corrupted or truncated"):
        read_idx(path)


def test_missing_files_name_path_and_remedy(tmp_path):
    with pytest.raises(DataError) as exc:
        load_dataset("mnist", root=str(tmp_path))
    message = str(exc.value)
    assert str(tmp_path) in message and "dataset.download=true" in message and "\n" not in message


def test_missing_root_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("cifar10", root=str(tmp_path / "nowhere"))


def test_unknown_dataset_names_the_choices():
    with pytest.raises(ConfigError, match="fashion_mnist"):
        load_dataset("imagenet")


def test_digits_split_is_fixed_and_normalised(digits):
    again = load_dataset("digits")
    assert len(digits.train) + len(digits.test) == 1797
    assert len(digits.test) == 359
    assert torch.equal(digits.test.y, again.test.y)
    assert digits.train.x.shape[1:] == (1, 28, 28)
    assert abs(digits.train.x.mean().item()) < 0.1 and abs(digits.train.x.std().item() - 1) < 0.1
    assert set(digits.train.y.unique().tolist()) == set(range(10))


def test_resize_follows_requested_image_size():
    data = load_dataset("digits", image_size=32, max_train=10, max_test=5)
    assert data.spec.image_size == 32 and data.train.x.shape == (10, 1, 32, 32) and len(data.test) == 5


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="Debian's dataset-fashion-mnist not installed"
)
def test_real_fashion_mnist_from_debian_folder():
    data = load_dataset("fashion_mnist", max_train=1000, max_test=1000)
    assert data.train.x.shape == (1000, 1, 28, 28) and data.test.y.max() == 9


def test_one_registry_names_every_dataset():
    """Built-in and your own datasets are entries of one table; load_dataset only looks names up."""
    assert set(LOADERS) == set(SPECS) | {"image_folder", "arrays", "hf"}


def test_load_dataset_hands_every_option_to_the_registered_loader(monkeypatch):
    seen: list[DataRequest] = []

    def toy(request: DataRequest) -> DataBundle:
        seen.append(request)
        split = Split(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long))
        return DataBundle(get_spec("digits"), split, split)

    monkeypatch.setitem(LOADERS, "toy", toy)
    load_dataset("toy", root="/r", image_size=4, max_train=2, hub="h", num_classes=3, test_split="val")
    assert seen == [
        DataRequest(name="toy", root="/r", image_size=4, max_train=2, hub="h", num_classes=3, test_split="val")
    ]
