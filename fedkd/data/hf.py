"""``dataset=hf``: a Hugging Face dataset, saved locally with ``save_to_disk`` or named on the hub.

``dataset.root`` is a folder written by ``DatasetDict.save_to_disk``; ``dataset.hub`` a hub name
(``uoft-cs/cifar10``; needs the network the first time, then Hugging Face's own cache). The image
column is the first ``Image`` feature unless ``dataset.image_key`` names one (an array column also
works), the label column the first ``ClassLabel`` (its class count is used) or ``label``/``labels``
unless ``dataset.label_key`` names one. The splits are ``dataset.train_split``/``test_split``.

The ``datasets`` package (and flwr-datasets) is the optional extra ``fedkd[hf]``, imported here
only: a run that does not use it never pays for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fedkd.data.bundle import DEFAULT_ROOT, DataBundle, DataRequest
from fedkd.data.custom import check_split_sizes, finish, own_dataset, resize, to_nchw, to_unit_float
from fedkd.data.folders import decode_images
from fedkd.errors import ConfigError, DataError

INSTALL_HINT = "pip install 'fedkd[hf]'"


def require(module: str, feature: str) -> Any:
    """Import ``module`` of the ``[hf]`` extra; a one-line :class:`ConfigError` when it is missing."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"{feature} needs the '{module}' package, which is not installed; install it with {INSTALL_HINT}"
        ) from None


def _first_line(exc: Exception) -> str:
    """The start of ``exc``'s message for a one-line error (its type when it has none)."""
    return str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__


def _open(root: Path | None, hub: str | None):
    datasets = require("datasets", "dataset=hf")
    if (root is None) == (hub is None):
        raise ConfigError(
            "dataset=hf needs exactly one of dataset.root (a folder saved with save_to_disk) and dataset.hub "
            f"(a hub name); got root={root} hub={hub}: set one and leave the other null"
        )
    if root is not None:
        if not root.exists():
            raise DataError(f"dataset.root {root} does not exist; give the folder DatasetDict.save_to_disk wrote")
        try:
            return datasets.load_from_disk(str(root)), str(root), root.name
        except Exception as exc:  # FileNotFoundError for a folder save_to_disk did not write, bad JSON, ...
            raise DataError(
                f"{root} is not a saved Hugging Face dataset ({_first_line(exc)}); "
                "write it with DatasetDict({'train': ..., 'test': ...}).save_to_disk(folder)"
            ) from None
    try:
        return datasets.load_dataset(hub), f"hub dataset {hub}", hub
    except Exception as exc:  # no network, unknown name, gated dataset
        raise DataError(
            f"hub dataset {hub} cannot be loaded ({_first_line(exc)}); "
            "check the name and the network, or save it with save_to_disk and set dataset.root"
        ) from None


def _columns(ds, where: str, image_key: str | None, label_key: str | None) -> tuple[str, str, int | None]:
    """The image and label columns of split ``ds`` and the class count a ``ClassLabel`` gives."""
    from datasets import ClassLabel, Image

    features = ds.features
    for key, what, option in ((image_key, "image", "image_key"), (label_key, "label", "label_key")):
        if key is not None and key not in features:
            raise DataError(
                f"{where} has no {what} column '{key}' (columns: {', '.join(features)}); "
                f"set dataset.{option} to one of them"
            )
    image = image_key or next((k for k, f in features.items() if isinstance(f, Image)), None)
    if image is None:
        raise DataError(
            f"{where} has no Image column (columns: {', '.join(features)}); set dataset.image_key=<column of images>"
        )
    label = label_key or next((k for k, f in features.items() if isinstance(f, ClassLabel)), None)
    label = label or next((k for k in ("label", "labels") if k in features), None)
    if label is None:
        raise DataError(
            f"{where} has no label column (columns: {', '.join(features)}); "
            "set dataset.label_key=<column of class indices>"
        )
    classes = features[label].num_classes if isinstance(features[label], ClassLabel) else None
    return image, label, classes


def _images(ds, column: str, where: str, image_size: int | None, channels: int | None):
    from datasets import Image

    if isinstance(ds.features[column], Image):
        images = ds[column]  # decoded Pillow images
        names = [f"{where} row {i}" for i in range(len(images))]
        return decode_images(images, names, image_size, channels=channels)
    x = to_unit_float(to_nchw(np.asarray(ds.with_format("numpy")[column]), f"{where} column '{column}'"))
    return resize(x, image_size, f"{where} column '{column}'")


def load_hf(
    root: Path | None,
    hub: str | None,
    image_size: int | None,
    num_classes: int | None,
    image_key: str | None,
    label_key: str | None,
    train_split: str,
    test_split: str,
) -> DataBundle:
    """Load the train and test splits as a :class:`~fedkd.data.bundle.DataBundle`.

    The spec is cached in ``<root>/.fedkd_spec.json`` (a local dataset) or under
    ``$FEDKD_DATA/hf/`` (a hub dataset), keyed by the dataset's own fingerprint.
    """
    dd, where, short = _open(root, hub)
    if not hasattr(dd, "keys"):  # one Dataset, not a DatasetDict
        raise DataError(
            f"{where} holds a single split, not a DatasetDict; "
            f"save DatasetDict({{'{train_split}': ..., '{test_split}': ...}}) instead"
        )
    for split, option in ((train_split, "train_split"), (test_split, "test_split")):
        if split not in dd:
            raise DataError(
                f"{where} has no '{split}' split (it has: {', '.join(dd.keys())}); set dataset.{option} to one of them"
            )
    train, test = dd[train_split], dd[test_split]
    image, label, classes = _columns(train, f"{where} ({train_split})", image_key, label_key)
    _columns(test, f"{where} ({test_split})", image, label)
    if num_classes is None:
        num_classes = classes
    x_train = _images(train, image, f"{where} ({train_split})", image_size, None)
    x_test = _images(test, image, f"{where} ({test_split})", image_size, x_train.shape[1])
    y_train, y_test = np.asarray(train[label]), np.asarray(test[label])
    check_split_sizes(x_train, y_train, f"{where} ({train_split})")
    check_split_sizes(x_test, y_test, f"{where} ({test_split})")
    if x_test.shape[1:] != x_train.shape[1:]:
        raise DataError(
            f"{where}: the {test_split} images differ in shape from the {train_split} images; "
            "set dataset.image_size=<side>"
        )
    if root is not None:
        cache = root / ".fedkd_spec.json"
    else:
        cache = DEFAULT_ROOT / "hf" / (hub.replace("/", "__") + ".spec.json")
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass
    fingerprint = f"{getattr(train, '_fingerprint', '')}:{len(train)}:{getattr(test, '_fingerprint', '')}:{len(test)}"
    return finish(
        f"hf:{short}", x_train, y_train, x_test, y_test, num_classes, cache, fingerprint, image_size,
        (f"{where} ({train_split}, column '{label}')", f"{where} ({test_split}, column '{label}')"),
    )


@own_dataset
def hf_dataset(root: Path | None, request: DataRequest) -> DataBundle:
    """``dataset=hf``: :func:`load_hf` of ``dataset.root`` (a saved dataset) or ``dataset.hub``."""
    return load_hf(
        root, request.hub, request.image_size, request.num_classes, request.image_key, request.label_key,
        request.train_split, request.test_split,
    )
