"""dataset=image_folder|arrays|hf on small real data the tests write: the spec read from the data
(and its cache), resizing, and one clear DataError per kind of inconsistent data."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from fedkd.data import load_dataset
from fedkd.errors import ConfigError, DataError

from .own_data import digits_arrays, write_hf, write_image_folder


def _raw(bundle, split: str = "train") -> torch.Tensor:
    """Undo the standardisation: pixels in [0, 1]."""
    s = bundle.spec
    x = getattr(bundle, split).x
    return x * torch.tensor(s.std).view(1, -1, 1, 1) + torch.tensor(s.mean).view(1, -1, 1, 1)


def test_image_folder_reads_spec_labels_and_pixels(tmp_path):
    arrays = digits_arrays()
    root = write_image_folder(tmp_path / "digits", arrays)
    data = load_dataset("image_folder", root=str(root))
    spec = data.spec
    assert (spec.channels, spec.image_size, spec.num_classes) == (1, 8, 10)
    assert spec.name == "image_folder:digits"
    # The folders are read class by class: compare as sorted (label, pixel sum) pairs.
    want = sorted(zip(arrays["y_train"].tolist(),
                      arrays["x_train"].reshape(len(arrays["x_train"]), -1).sum(1).tolist()))
    have = sorted(zip(data.train.y.tolist(),
                      (_raw(data) * 255).round().reshape(len(data.train), -1).sum(1).long().tolist()))
    assert want == have
    assert abs(spec.mean[0] - arrays["x_train"].mean() / 255) < 1e-4  # mean and std of the training pixels
    assert abs(float(data.train.x.mean())) < 1e-4 and abs(float(data.train.x.std()) - 1) < 1e-2
    assert len(data.test) == len(arrays["y_test"])


def test_spec_is_cached_beside_the_data_and_reused(tmp_path):
    root = write_image_folder(tmp_path / "d")
    first = load_dataset("image_folder", root=str(root)).spec
    cache = root / ".fedkd_spec.json"
    stored = json.loads(cache.read_text())
    (entry,) = stored["specs"].values()
    assert entry["mean"] == list(first.mean)
    entry["mean"] = [0.5]  # a later load takes the cached numbers instead of recomputing them
    cache.write_text(json.dumps(stored))
    assert load_dataset("image_folder", root=str(root)).spec.mean == (0.5,)
    shutil.copy(root / "train" / "digit_0" / "0000.png", root / "train" / "digit_0" / "extra.png")
    assert load_dataset("image_folder", root=str(root)).spec.mean != (0.5,)  # new files: recomputed


def test_image_size_resizes_and_rgb_gives_three_channels(tmp_path):
    root = write_image_folder(tmp_path / "rgb", rgb=True)
    data = load_dataset("image_folder", root=str(root), image_size=16, max_train=10)
    assert data.spec.shape == (3, 16, 16) and data.train.x.shape == (10, 3, 16, 16)


@pytest.mark.parametrize("layout", ["nhw", "nhwc", "nchw_float"])
def test_arrays_layouts(tmp_path, layout):
    a = digits_arrays()
    x = {k: v for k, v in a.items() if k.startswith("x_")}
    if layout == "nhwc":
        x = {k: np.stack([v] * 3, -1) for k, v in x.items()}
    elif layout == "nchw_float":
        x = {k: (v[:, None] / 255.0).astype(np.float32) for k, v in x.items()}
    path = tmp_path / "mine.npz"
    np.savez(path, **x, y_train=a["y_train"], y_test=a["y_test"])
    data = load_dataset("arrays", root=str(path), image_size=12)
    assert data.spec.shape == ((3, 12, 12) if layout == "nhwc" else (1, 12, 12))
    assert torch.equal(data.train.y, torch.as_tensor(a["y_train"]))
    assert (tmp_path / "mine.npz.fedkd_spec.json").is_file()


def test_arrays_num_classes_beyond_the_labels(tmp_path):
    a = digits_arrays(classes=3)
    np.savez(tmp_path / "a.npz", **a)
    assert load_dataset("arrays", root=str(tmp_path / "a.npz")).spec.num_classes == 3
    assert load_dataset("arrays", root=str(tmp_path / "a.npz"), num_classes=5).spec.num_classes == 5


def test_hugging_face_saved_dataset(tmp_path):
    pytest.importorskip("datasets")
    a = digits_arrays()
    data = load_dataset("hf", root=str(write_hf(tmp_path / "hfds", a)), image_size=10)
    assert data.spec.shape == (1, 10, 10) and data.spec.num_classes == 10 and data.spec.name == "hf:hfds"
    assert torch.equal(data.test.y, torch.as_tensor(a["y_test"]))  # rows keep their order
    with pytest.raises(DataError, match="no 'validation' split.*dataset.test_split"):
        load_dataset("hf", root=str(tmp_path / "hfds"), test_split="validation")


# --- inconsistent data: (writer of the bad data, text the one-line message must contain)
def _mixed_sizes(root):
    from PIL import Image

    write_image_folder(root)
    Image.new("L", (9, 9)).save(root / "train" / "digit_3" / "big.png")
    return root, {}, ["big.png is 9x9", "dataset.image_size"]


def _no_test(root):
    write_image_folder(root)
    shutil.rmtree(root / "test")
    return root, {}, ["has no test/ split", str(root)]


def _empty_class(root):
    write_image_folder(root)
    (root / "train" / "digit_10").mkdir()
    return root, {}, ["digit_10 holds no images", "add images or remove the folder"]


def _unreadable(root):
    write_image_folder(root)
    (root / "test" / "digit_1" / "broken.png").write_bytes(b"not a png")
    return root, {}, ["broken.png cannot be read", "replace or remove"]


def _test_class_not_in_train(root):
    write_image_folder(root)
    (root / "test" / "digit_1").rename(root / "test" / "digit_x")
    return root, {}, ["digit_x has no counterpart", "train"]


def _labels_out_of_range(root):
    a = digits_arrays()
    a["y_test"][5] = 12
    np.savez(root.with_suffix(".npz"), **a)
    return root.with_suffix(".npz"), {}, ["(y_test) holds label 12", "dataset.num_classes"]


def _label_above_num_classes(root):
    np.savez(root.with_suffix(".npz"), **digits_arrays())
    return root.with_suffix(".npz"), {"num_classes": 5}, ["outside 0..4", "dataset.num_classes"]


def _missing_array(root):
    a = digits_arrays()
    del a["y_test"]
    np.savez(root.with_suffix(".npz"), **a)
    return root.with_suffix(".npz"), {}, ["has no y_test", "np.savez"]


def _negative_label(root):
    a = digits_arrays()
    a["y_train"] = a["y_train"] - 1
    np.savez(root.with_suffix(".npz"), **a)
    return root.with_suffix(".npz"), {}, ["holds label -1 < 0"]


BAD = {
    "mixed sizes": ("image_folder", _mixed_sizes),
    "no test split": ("image_folder", _no_test),
    "empty class folder": ("image_folder", _empty_class),
    "unreadable image": ("image_folder", _unreadable),
    "test class not in train": ("image_folder", _test_class_not_in_train),
    "label outside the training classes": ("arrays", _labels_out_of_range),
    "label above num_classes": ("arrays", _label_above_num_classes),
    "missing array": ("arrays", _missing_array),
    "negative label": ("arrays", _negative_label),
}


@pytest.mark.parametrize("case", BAD)
def test_inconsistent_data_is_one_line_naming_file_and_remedy(tmp_path, case):
    name, write = BAD[case]
    path, options, needles = write(tmp_path / "data")
    with pytest.raises(DataError) as info:
        load_dataset(name, root=str(path), **options)
    message = str(info.value)
    assert "\n" not in message and "; " in message
    for needle in needles:
        assert needle in message
    assert not list(tmp_path.rglob("*fedkd_spec*")), "no spec cache is written for bad data"


def test_missing_root_is_a_config_error():
    with pytest.raises(ConfigError, match="dataset=image_folder needs dataset.root"):
        load_dataset("image_folder")
