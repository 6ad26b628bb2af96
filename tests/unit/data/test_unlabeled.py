"""A user's own unlabeled images for the server's proxy (``proxy_path``): a folder or an array file,
resized and normalised like the run's dataset; bad input in one line."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from fedkd.data.specs import get_spec
from fedkd.data.unlabeled import load_unlabeled
from fedkd.errors import DataError

from .own_data import digits_arrays, write_image_folder

SPEC = get_spec("digits")


def _unnormalised(x: torch.Tensor) -> torch.Tensor:
    return x * torch.tensor(SPEC.std).view(1, -1, 1, 1) + torch.tensor(SPEC.mean).view(1, -1, 1, 1)


def test_a_folder_and_an_array_file_give_the_same_normalised_images(tmp_path):
    side = SPEC.image_size  # images of the dataset's side: nothing to resize, so both paths are exact
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (12, side, side), dtype=np.uint8)
    labels = rng.integers(0, 3, 12)
    write_image_folder(tmp_path / "folder", {"x_train": x, "y_train": labels, "x_test": x[:1], "y_test": labels[:1]})
    from_folder = load_unlabeled(tmp_path / "folder" / "train", SPEC)  # class subfolders searched, never read
    expected = torch.from_numpy(x).float().div(255).unsqueeze(1)
    key = lambda t: sorted(map(tuple, t.flatten(1).mul(255).round().int().tolist()))  # noqa: E731 (folder order)
    assert from_folder.shape == (12, 1, side, side) and key(_unnormalised(from_folder)) == key(expected)
    np.save(tmp_path / "proxy.npy", x)
    np.savez(tmp_path / "proxy.npz", x=x, y=labels)
    from_npy = load_unlabeled(tmp_path / "proxy.npy", SPEC)
    torch.testing.assert_close(_unnormalised(from_npy), expected)
    torch.testing.assert_close(load_unlabeled(tmp_path / "proxy.npz", SPEC), from_npy)  # x, not y


def test_images_of_another_side_are_resized_to_the_datasets(tmp_path):
    np.save(tmp_path / "small.npy", digits_arrays(n_train=5)["x_train"])  # 8x8
    assert load_unlabeled(tmp_path / "small.npy", SPEC).shape == (5, 1, SPEC.image_size, SPEC.image_size)


@pytest.mark.parametrize("case, match", [
    ("missing", "neither a folder of images nor a .npy/.npz file"),
    ("empty", "holds no images"),
    ("rgb", "3-channel images but the dataset has 1"),
    ("nan", "non-finite"),
    ("text", "neither a folder"),
])
def test_bad_proxies_end_in_one_line(case, match, tmp_path):
    path = tmp_path / case
    if case == "empty":
        (path / "sub").mkdir(parents=True)
    elif case == "rgb":  # an array keeps its channels (a folder's images are converted to the dataset's)
        path = tmp_path / "rgb.npy"
        np.save(path, np.zeros((3, 8, 8, 3), dtype=np.uint8))
    elif case == "nan":
        path = tmp_path / "nan.npy"
        np.save(path, np.full((3, 8, 8), np.nan, dtype=np.float32))
    elif case == "text":
        path = tmp_path / "x.txt"
        path.write_text("not images")
    with pytest.raises(DataError) as raised:
        load_unlabeled(path, SPEC)
    assert match in str(raised.value) and "\n" not in str(raised.value)


def test_a_second_read_comes_from_the_cache_and_a_changed_file_is_read_again(tmp_path, monkeypatch):
    """A run reads the proxy twice (the check, then the server): the images are decoded once, each
    caller gets its own copy, and rewriting a file invalidates the cached images."""
    import fedkd.data.unlabeled as U

    calls = []
    decode = U.decode_images
    monkeypatch.setattr(U, "decode_images", lambda *a, **k: calls.append(1) or decode(*a, **k))
    side = SPEC.image_size
    x = np.random.default_rng(1).integers(0, 256, (6, side, side), dtype=np.uint8)
    write_image_folder(tmp_path / "f", {"x_train": x, "y_train": np.zeros(6, int), "x_test": x[:1], "y_test": [0]})
    first = load_unlabeled(tmp_path / "f" / "train", SPEC)
    first.zero_()  # a caller's copy: the cache keeps its own
    second = load_unlabeled(tmp_path / "f" / "train", SPEC)
    assert len(calls) == 1 and second.abs().sum() > 0
    np.save(tmp_path / "p.npy", x)
    before = load_unlabeled(tmp_path / "p.npy", SPEC)
    np.save(tmp_path / "p.npy", 255 - x)  # same size, new content: another modification time
    stat = os.stat(tmp_path / "p.npy")
    os.utime(tmp_path / "p.npy", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    after = load_unlabeled(tmp_path / "p.npy", SPEC)
    assert not torch.allclose(before, after)
