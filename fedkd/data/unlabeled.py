"""Unlabeled images a user brings for the federated server's proxy (FedDF: ``proxy_path``).

A folder of image files (searched recursively; the names of any subfolders are never read, so a
labelled ImageFolder works too and its labels stay unread), or a ``.npy``/``.npz`` file of images (an
``.npz`` file's ``x`` array, or its first one). The images are resized to the run's dataset side and
normalised with that dataset's statistics, so the server's models see them as they see the clients'
images; their channel count must be the dataset's.

A run reads them twice in one process (the check before the simulation starts, then the server), so
the last few decodings are kept, keyed by every file's path, size and modification time: a changed
file is read again.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from fedkd.data.custom import resize, to_nchw, to_unit_float
from fedkd.data.folders import IMAGE_EXTENSIONS, decode_images
from fedkd.data.specs import DatasetSpec
from fedkd.errors import DataError


def load_unlabeled(path: str | Path, spec: DatasetSpec) -> torch.Tensor:
    """The images at ``path`` as float ``(N, C, S, S)``, normalised like the dataset of ``spec``.

    Raises a one-line :class:`~fedkd.errors.DataError` for a missing path, a folder or file without
    images, another channel count than the dataset's, or non-finite pixels.
    """
    path = Path(path).expanduser()
    where = f"proxy_path {path}"
    if path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.is_file() and not f.name.startswith(".")
                       and f.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise DataError(f"{where} holds no images ({', '.join(IMAGE_EXTENSIONS)}); point it at a folder of images")
    elif path.is_file() and path.suffix in (".npy", ".npz"):
        files = [path]
    else:
        raise DataError(f"{where} is neither a folder of images nor a .npy/.npz file; fix proxy_path")
    stamps = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _decoded(str(path), stamps, spec).clone()  # a copy: nobody can change what the cache holds


@functools.lru_cache(maxsize=2)
def _decoded(folder_or_file: str, stamps: tuple[tuple[str, int, int], ...], spec: DatasetSpec) -> torch.Tensor:
    """:func:`load_unlabeled`'s work; ``stamps`` (path, size, mtime of every file) only key the cache."""
    path, where = Path(folder_or_file), f"proxy_path {folder_or_file}"
    if path.is_dir():
        files = [Path(f) for f, _, _ in stamps]
        x = decode_images(files, [str(f.relative_to(path)) for f in files], spec.image_size, spec.channels)
    else:
        x = resize(to_unit_float(to_nchw(_array_of(path), where)), spec.image_size, where)
    if len(x) == 0:
        raise DataError(f"{where} holds no images; give the server at least one")
    if x.shape[1] != spec.channels:
        raise DataError(f"{where} has {x.shape[1]}-channel images but the dataset has {spec.channels}; convert them")
    if not torch.isfinite(x).all():
        raise DataError(f"{where} holds non-finite pixels (NaN or inf); fix or drop those images")
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    return ((x - mean) / std).contiguous()


def _array_of(path: Path) -> np.ndarray:
    """The image array of a ``.npy`` file, or an ``.npz`` file's ``x`` (else its first array)."""
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        with np.load(path, allow_pickle=False) as arrays:
            if not arrays.files:
                raise DataError(f"proxy_path {path} holds no arrays; save the images as x")
            return arrays["x" if "x" in arrays.files else arrays.files[0]]
    except (OSError, ValueError) as exc:
        raise DataError(f"proxy_path {path} cannot be read ({str(exc)[:120]}); save it with numpy.save") from None
