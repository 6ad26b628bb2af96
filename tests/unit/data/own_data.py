"""Writers of small real datasets (scikit-learn's digits) in the formats users bring: an ImageFolder
tree of PNGs, an ``.npz`` of arrays, a Hugging Face ``save_to_disk`` folder. Shared by the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def digits_arrays(n_train: int = 120, n_test: int = 40, classes: int = 10) -> dict[str, np.ndarray]:
    """uint8 8x8 digit images (0..255) and labels, only the first ``classes`` classes."""
    from sklearn.datasets import load_digits

    d = load_digits()
    keep = d.target < classes
    x = (d.images[keep] * 16).clip(0, 255).astype(np.uint8)
    y = d.target[keep].astype(np.int64)
    return {"x_train": x[:n_train], "y_train": y[:n_train],
            "x_test": x[n_train : n_train + n_test], "y_test": y[n_train : n_train + n_test]}


def write_image_folder(root: Path, arrays: dict[str, np.ndarray] | None = None, rgb: bool = False) -> Path:
    """``root/{train,test}/digit_<k>/<i>.png``; class folders named so sorted order is label order."""
    from PIL import Image

    arrays = arrays or digits_arrays()
    for split in ("train", "test"):
        for i, (img, label) in enumerate(zip(arrays[f"x_{split}"], arrays[f"y_{split}"])):
            path = root / split / f"digit_{label}" / f"{i:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.stack([img] * 3, -1) if rgb else img).save(path)
    return root


def write_hf(root: Path, arrays: dict[str, np.ndarray] | None = None) -> Path:
    """A ``DatasetDict`` of PIL images and ``ClassLabel`` labels saved with ``save_to_disk``."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features
    from datasets import Image as HFImage
    from PIL import Image

    arrays = arrays or digits_arrays()
    features = Features({"image": HFImage(), "label": ClassLabel(num_classes=10)})
    DatasetDict({
        split: Dataset.from_dict(
            {"image": [Image.fromarray(x) for x in arrays[f"x_{split}"]], "label": arrays[f"y_{split}"].tolist()},
            features=features,
        )
        for split in ("train", "test")
    }).save_to_disk(str(root))
    return root
