"""Checks that a dataset can teach a classifier anything, run before the first round or epoch.

A loader reads some data without complaint that still makes every reported number meaningless:
a training split of one class scores 1.0 on a test set of that class, NaN pixels give NaN logits
whose argmax is class 0 (1.0 again when the labels are 0), and a split whose every image is the
same image teaches nothing. Each check is one vectorised pass over a split's tensors, and a bundle
is checked once however many entry points or apps ask (:func:`check_training_data`).
"""

from __future__ import annotations

import math
import weakref

import torch

from fedkd.data.bundle import DataBundle, Split
from fedkd.errors import DataError

#: ``id(train.x) -> weakref(train.x)`` of the bundles already checked (a tensor is hashed by id; a
#: weak reference so a checked dataset is not kept alive by this module).
_CHECKED: dict[int, weakref.ref] = {}


def check_training_data(data: DataBundle) -> None:
    """Raise a one-line :class:`DataError` when ``data`` cannot give meaningful numbers.

    Refused: an empty training split; labels outside ``0..num_classes-1``; NaN or infinite pixels
    (in either split, or a NaN mean/std in the spec, which spreads NaN to every image); fewer than
    two classes among the training labels; a split whose every image is the same image (all its
    pixels equal included). One constant image among others is data, not a mistake.
    """
    x = data.train.x
    seen = _CHECKED.get(id(x))
    if seen is not None and seen() is x:
        return
    name = data.spec.name
    if len(data.train) == 0:
        raise DataError(f"{name}: the training split holds no images; give it images of at least two classes")
    _check_spec_stats(data)
    for split_name, split in (("training", data.train), ("test", data.test)):
        _check_labels(split, split_name, name, data.spec.num_classes)
        _check_finite(split, split_name, name)
    _check_classes(data.train, name)
    for split_name, split in (("training", data.train), ("test", data.test)):
        _check_not_constant(split, split_name, name)
    key = id(x)
    _CHECKED[key] = weakref.ref(x, lambda _: _CHECKED.pop(key, None))


def _check_spec_stats(data: DataBundle) -> None:
    stats = [*data.spec.mean, *data.spec.std]
    if not all(math.isfinite(v) for v in stats):
        raise DataError(
            f"{data.spec.name}: the training images' mean/std per channel is {data.spec.mean}/{data.spec.std} "
            "because some raw pixels are NaN or infinite, which makes every normalised image NaN; "
            "replace those pixels (e.g. np.nan_to_num) or drop those images"
        )


def _check_labels(split: Split, split_name: str, name: str, num_classes: int) -> None:
    if len(split) == 0:
        return
    low, high = int(split.y.min()), int(split.y.max())
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise DataError(
            f"{name}: the {split_name} split holds label {bad}, outside 0..{num_classes - 1} ({num_classes} classes); "
            "fix the labels, or set dataset.num_classes=<count>"
        )


def _check_finite(split: Split, split_name: str, name: str) -> None:
    if len(split) == 0:
        return
    finite = torch.isfinite(split.x).flatten(1).all(dim=1)
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten()
        raise DataError(
            f"{name}: {len(bad)} of {len(split)} {split_name} images hold NaN or infinite pixels (the first: image "
            f"{int(bad[0])}); replace those pixels (e.g. np.nan_to_num) or drop those images"
        )


def _check_classes(split: Split, name: str) -> None:
    labels, counts = torch.unique(split.y, return_counts=True)
    if len(labels) < 2:
        raise DataError(
            f"{name}: the training split holds one class only (label {int(labels[0])}, {int(counts[0])} images), "
            "so a model learns nothing and scores 1.0 on a test set of that class; add images of at least one "
            "other class (an image folder holds one sub-folder per class)"
        )


def _check_not_constant(split: Split, split_name: str, name: str) -> None:
    if len(split) < 2:
        return
    # Every pixel position takes one value across the split: the images are all the same image.
    if torch.equal(split.x.amax(dim=0), split.x.amin(dim=0)):
        flat = bool((split.x[0] == split.x[0].flatten()[0]).all())
        what = "one constant image (every pixel equal)" if flat else "the same image"
        raise DataError(
            f"{name}: all {len(split)} {split_name} images are {what}, so accuracy measures nothing; "
            "check how the images were written (e.g. uint8 pixels scaled to 0 by an integer division)"
        )
