"""The evaluation split: the test set, or the last training images as a holdout."""

import pytest
import torch

from fedkd.data import DataBundle, Split, get_spec
from fedkd.data.evaluation import evaluation_split, holdout_count
from fedkd.errors import ConfigError


def _bundle(n_train: int = 10, n_test: int = 4) -> DataBundle:
    train = Split(torch.arange(n_train, dtype=torch.float32).view(-1, 1, 1, 1), torch.arange(n_train))
    test = Split(torch.zeros(n_test, 1, 1, 1), torch.zeros(n_test, dtype=torch.long))
    return DataBundle(get_spec("digits"), train, test)


def test_test_split_is_the_test_set_and_sets_nothing_aside():
    data = _bundle()
    name, split = evaluation_split(data, "test", 3)
    assert name == "test" and split is data.test
    assert holdout_count("test", 3, 10) == 0


def test_holdout_is_the_last_training_images():
    name, split = evaluation_split(_bundle(), "holdout", 3)
    assert name == "holdout"
    assert split.y.tolist() == [7, 8, 9]


@pytest.mark.parametrize("size", [0, 10, 11])
def test_a_holdout_must_keep_and_leave_images(size):
    with pytest.raises(ConfigError, match=r"holdout_size=.*between 1 and 9"):
        evaluation_split(_bundle(), "holdout", size)


def test_unknown_evaluation_target():
    with pytest.raises(ConfigError, match="evaluate_on 'val' is unknown"):
        holdout_count("val", 3, 10)
