"""Datasets by name: the one table of loaders, and :func:`load_dataset` that looks a name up in it.

Every dataset, built-in (:mod:`fedkd.data.builtin`, spec from :mod:`fedkd.data.specs`) or your
own (``image_folder``, ``arrays``, ``hf``: :mod:`fedkd.data.folders`, :mod:`fedkd.data.custom`,
:mod:`fedkd.data.hf`; spec read from the data), is one entry of :data:`LOADERS`: a function from
the :class:`DataRequest` to the normalised :class:`DataBundle`. A new dataset is a new entry;
nothing branches on the name.
"""

from __future__ import annotations

from fedkd.data.builtin import digits_raw, fashion_mnist_raw, standardised, torchvision_raw
from fedkd.data.bundle import DEFAULT_ROOT, DataBundle, DataRequest, Loader, Split, iterate_batches
from fedkd.data.custom import arrays_dataset
from fedkd.data.folders import image_folder_dataset
from fedkd.data.hf import hf_dataset
from fedkd.data.specs import unknown_dataset

# The types moved to fedkd.data.bundle; they stay importable from here as before.
__all__ = ["DEFAULT_ROOT", "LOADERS", "DataBundle", "DataRequest", "Split", "iterate_batches", "load_dataset"]

#: ``dataset.name`` -> its loader. The built-in names are those of :data:`fedkd.data.specs.SPECS`.
LOADERS: dict[str, Loader] = {
    "digits": standardised(digits_raw),
    "fashion_mnist": standardised(fashion_mnist_raw),
    "mnist": standardised(torchvision_raw("MNIST")),
    "cifar10": standardised(torchvision_raw("CIFAR10")),
    "cifar100": standardised(torchvision_raw("CIFAR100")),
    "svhn": standardised(torchvision_raw("SVHN")),
    "image_folder": image_folder_dataset,
    "arrays": arrays_dataset,
    "hf": hf_dataset,
}


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
    loader = LOADERS.get(name)
    if loader is None:
        raise unknown_dataset(name) from None  # as get_spec raises it: the message alone
    return loader(
        DataRequest(
            name=name, root=root, download=download, image_size=image_size, seed=seed, test_fraction=test_fraction,
            max_train=max_train, max_test=max_test, hub=hub, num_classes=num_classes, image_key=image_key,
            label_key=label_key, train_split=train_split, test_split=test_split,
        )
    )
