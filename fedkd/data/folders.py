"""``dataset=image_folder``: a torchvision ``ImageFolder`` tree with ``train/`` and ``test/``.

Layout: ``<root>/train/<class>/<image>`` and ``<root>/test/<class>/<image>``. Classes are the
training split's folder names in sorted order (torchvision's rule), so label ``k`` is the
``k``-th name (the spec's ``class_names``: plot legends and sample grids show them); the test
split may lack classes but not add any. Images are decoded once with Pillow into one array; all
grey-scale images give one channel, any colour image makes them all RGB.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from fedkd.data.bundle import DataBundle, DataRequest
from fedkd.data.custom import files_fingerprint, finish, own_dataset, required_root
from fedkd.errors import DataError

#: The extensions torchvision's ImageFolder accepts.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


def _class_dirs(split_dir: Path) -> list[Path]:
    return sorted((d for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: d.name)


def _images_of(class_dir: Path) -> list[Path]:
    files = sorted(
        f for f in class_dir.iterdir()
        if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not files:
        raise DataError(
            f"class folder {class_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder"
        )
    return files


def scan(root: Path) -> tuple[list[str], dict[str, tuple[list[Path], np.ndarray]]]:
    """Class names and, per split, the image files and their labels; checks the layout."""
    if not root.is_dir():
        raise DataError(
            f"image folder {root} does not exist; set dataset.root to a folder with train/<class>/ and test/<class>/"
        )
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise DataError(
                f"image folder {root} has no {split}/ split; "
                f"put the images in {root}/train/<class>/ and {root}/test/<class>/"
            )
    classes = [d.name for d in _class_dirs(root / "train")]
    if not classes:
        raise DataError(
            f"{root / 'train'} holds no class folders; put each class's images in {root / 'train'}/<class name>/"
        )
    index = {c: i for i, c in enumerate(classes)}
    splits: dict[str, tuple[list[Path], np.ndarray]] = {}
    for split in ("train", "test"):
        files: list[Path] = []
        labels: list[int] = []
        class_dirs = _class_dirs(root / split)
        if not class_dirs:
            raise DataError(
                f"{root / split} holds no class folders; put each class's images in {root / split}/<class name>/"
            )
        for class_dir in class_dirs:
            if class_dir.name not in index:
                raise DataError(
                    f"class folder {class_dir} has no counterpart in {root / 'train'}; "
                    f"add {root / 'train' / class_dir.name}/ "
                    "with images, or remove it"
                )
            images = _images_of(class_dir)
            files += images
            labels += [index[class_dir.name]] * len(images)
        splits[split] = (files, np.asarray(labels, dtype=np.int64))
    return classes, splits


def _open(item, name: str):
    """A Pillow image of ``item`` (a file path, or an image already); a :class:`DataError` if unreadable."""
    from PIL import Image, UnidentifiedImageError

    if not isinstance(item, str | Path):
        return item
    try:
        return Image.open(item)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"image {name} cannot be read ({str(exc)[:120]}); replace or remove the file") from None


def decode_images(images: list, names: list[str], image_size: int | None, channels: int | None = None) -> torch.Tensor:
    """Pillow images (or image files) -> float ``(N, C, S, S)`` in [0, 1].

    ``channels``: 1 or 3; ``None`` decides from the images (1 when every image is grey-scale).
    Without ``image_size`` every image must have the size of the first, and be square. Files are
    opened twice: once for their headers (mode, size: cheap), once to decode into the array.
    """
    from PIL import Image

    headers = []
    for item, name in zip(images, names):
        img = _open(item, name)
        headers.append((img.mode, img.size))
        if img is not item:
            img.close()
    if channels is None:
        channels = 1 if all(mode in GREY_MODES for mode, _ in headers) else 3
    first = headers[0][1]
    if image_size is None:
        if first[0] != first[1]:
            raise DataError(
                f"image {names[0]} is {first[0]}x{first[1]}, not square; "
                "set dataset.image_size=<side> to resize the images"
            )
        for (_, size), name in zip(headers, names):
            if size != first:
                raise DataError(
                    f"image {name} is {size[0]}x{size[1]} but {names[0]} is {first[0]}x{first[1]}; "
                    "set dataset.image_size=<side> to resize every image to one size"
                )
    side = image_size or first[0]
    mode = "L" if channels == 1 else "RGB"
    out = np.empty((len(headers), side, side, channels), dtype=np.uint8)
    for i, (item, name) in enumerate(zip(images, names)):
        img = _open(item, name)
        try:
            if img.mode != mode:
                # Palette and 16-bit/float images convert through RGB, so 'L' gets proper luminance.
                img = (img.convert("RGB") if img.mode not in ("L", "RGB", "RGBA", "LA", "1") else img).convert(mode)
            if img.size != (side, side):
                img = img.resize((side, side), Image.BILINEAR)
            out[i] = np.asarray(img, dtype=np.uint8).reshape(side, side, channels)
        except OSError as exc:  # a header that parses but pixel data that does not (truncated file)
            raise DataError(f"image {name} cannot be read ({str(exc)[:120]}); replace or remove the file") from None
        finally:
            if isinstance(item, str | Path):
                img.close()
    return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def load_image_folder(root: Path, image_size: int | None, num_classes: int | None) -> DataBundle:
    """Decode both splits of ``root``; the spec is cached in ``root/.fedkd_spec.json``."""
    classes, splits = scan(root)
    if num_classes is not None and num_classes != len(classes):
        raise DataError(
            f"{root / 'train'} holds {len(classes)} class folders but dataset.num_classes={num_classes}; "
            "set dataset.num_classes=null (the folders define the classes) or add the missing class folders"
        )
    train_files, y_train = splits["train"]
    test_files, y_test = splits["test"]
    x_train = decode_images(train_files, [str(f) for f in train_files], image_size)
    # The test split takes the training split's channel count, whatever its own images are.
    x_test = decode_images(test_files, [str(f) for f in test_files], image_size, channels=x_train.shape[1])
    if x_test.shape[-1] != x_train.shape[-1]:
        side, test_side = x_train.shape[-1], x_test.shape[-1]
        raise DataError(
            f"image {test_files[0]} is {test_side}x{test_side} but the training images are {side}x{side}; "
            "set dataset.image_size=<side> to resize every image to one size"
        )
    bundle = finish(
        f"image_folder:{root.name}", x_train, y_train, x_test, y_test, len(classes),
        root / ".fedkd_spec.json", files_fingerprint(train_files + test_files), image_size,
        (str(root / "train"), str(root / "test")),
    )
    bundle.spec = replace(bundle.spec, class_names=tuple(classes))  # after the cache: cached specs stay as they were
    return bundle


@own_dataset
def image_folder_dataset(root: Path | None, request: DataRequest) -> DataBundle:
    """``dataset=image_folder``: :func:`load_image_folder` of the tree ``dataset.root``."""
    folder = required_root(root, request.name, "a folder with train/<class>/ and test/<class>/")
    return load_image_folder(folder, request.image_size, request.num_classes)
