"""fedkd.data.sanity: data that trains without an error but makes every number meaningless is refused
with one line; ordinary data, and one constant image among others, pass."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fedkd.data import DataBundle, Split
from fedkd.data.sanity import check_training_data
from fedkd.errors import DataError


def _copy(data: DataBundle, **splits: Split) -> DataBundle:
    """A bundle of fresh tensors (the check runs once per training tensor)."""
    train = splits.get("train", Split(data.train.x.clone(), data.train.y.clone()))
    test = splits.get("test", Split(data.test.x.clone(), data.test.y.clone()))
    return DataBundle(data.spec, train, test)


def test_digits_pass(digits):
    check_training_data(digits)


def test_one_constant_image_among_others_passes(digits):
    x = digits.train.x.clone()
    x[0] = 0.0
    check_training_data(_copy(digits, train=Split(x, digits.train.y.clone())))


def test_one_class_is_refused(digits):
    keep = digits.train.y == 3
    with pytest.raises(DataError, match=r"holds one class only \(label 3, \d+ images\)"):
        check_training_data(_copy(digits, train=Split(digits.train.x[keep].clone(), digits.train.y[keep].clone())))


@pytest.mark.parametrize("split", ["train", "test"])
def test_nan_or_inf_pixels_are_refused_in_either_split(digits, split):
    part = getattr(digits, split)
    x = part.x.clone()
    x[5, 0, 3, 3] = float("nan")
    x[7, 0, 0, 0] = float("inf")
    name = "training" if split == "train" else "test"
    message = rf"2 of {len(part)} {name} images hold NaN or infinite pixels \(the first: image 5\)"
    with pytest.raises(DataError, match=message):
        check_training_data(_copy(digits, **{split: Split(x, part.y.clone())}))


def test_a_nan_mean_in_the_spec_is_refused(digits):
    spec = dataclasses.replace(digits.spec, mean=(float("nan"),))
    with pytest.raises(DataError, match=r"mean/std per channel is \(nan,\)"):
        check_training_data(DataBundle(spec, Split(digits.train.x.clone(), digits.train.y), digits.test))


def test_every_image_the_same_is_refused(digits):
    n = len(digits.train)
    same = digits.train.x[:1].clone().expand(n, -1, -1, -1).clone()
    with pytest.raises(DataError, match=rf"all {n} training images are the same image"):
        check_training_data(_copy(digits, train=Split(same, digits.train.y.clone())))
    flat = torch.full_like(digits.train.x, 0.25)
    with pytest.raises(DataError, match=rf"all {n} training images are one constant image \(every pixel equal\)"):
        check_training_data(_copy(digits, train=Split(flat, digits.train.y.clone())))


def test_labels_outside_the_classes_are_refused(digits):
    y = digits.train.y.clone()
    y[0] = 10
    with pytest.raises(DataError, match=r"training split holds label 10, outside 0..9"):
        check_training_data(_copy(digits, train=Split(digits.train.x.clone(), y)))


def test_a_bundle_is_checked_once(digits):
    data = _copy(digits)
    check_training_data(data)
    data.train.x[:] = float("nan")  # changed in place after the check: not looked at again
    check_training_data(data)
