"""The one place that says what each dataset looks like.

Models, generators and loaders read channel count, image size, class count and normalisation
from a :class:`DatasetSpec`; nothing else hard-codes them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from fedkd.errors import ConfigError


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    channels: int
    image_size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # The name of each label (an image folder's class folders); None: the labels are their indices.
    class_names: tuple[str, ...] | None = None

    def class_name(self, label: int) -> str:
        """The name of ``label`` (its index when the dataset names none)."""
        names = self.class_names
        return str(names[label]) if names is not None and 0 <= label < len(names) else str(label)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of one normalised sample, (C, H, W)."""
        return (self.channels, self.image_size, self.image_size)

    def resized(self, image_size: int) -> DatasetSpec:
        return replace(self, image_size=image_size)


SPECS: dict[str, DatasetSpec] = {
    # digits: scikit-learn's 8x8 images (values 0..16) scaled to [0, 1] and resized to 28x28.
    "digits": DatasetSpec("digits", 1, 28, 10, (0.3053,), (0.3247,)),
    "mnist": DatasetSpec("mnist", 1, 28, 10, (0.1307,), (0.3081,)),
    "fashion_mnist": DatasetSpec(
        "fashion_mnist", 1, 28, 10, (0.2860,), (0.3530,),
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    ),
    "cifar10": DatasetSpec(
        "cifar10", 3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
        ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    ),
    "cifar100": DatasetSpec(
        "cifar100", 3, 32, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
    ),
    "svhn": DatasetSpec("svhn", 3, 32, 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
}


def unknown_dataset(name: str) -> ConfigError:
    """The error for a ``dataset.name`` no loader knows: it names the built-in ones and your own kinds."""
    known = ", ".join(sorted(SPECS))
    return ConfigError(
        f"dataset.name: unknown dataset '{name}'; choose one of: {known}, "
        "or your own data with dataset=image_folder, arrays or hf"
    )


def get_spec(name: str) -> DatasetSpec:
    """Return the spec of dataset ``name``; a :class:`ConfigError` names the known ones."""
    try:
        return SPECS[name]
    except KeyError:
        raise unknown_dataset(name) from None
