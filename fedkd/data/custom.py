"""Your own data: an ImageFolder tree, an ``.npz`` of arrays, or a Hugging Face dataset.

The three loaders (``dataset=image_folder`` in :mod:`fedkd.data.folders`, ``dataset=arrays``
here, ``dataset=hf`` in :mod:`fedkd.data.hf`) each produce image arrays ``(N, C, H, W)`` and
integer labels for a train and a test split; this module checks them, works out the
:class:`DatasetSpec` (channels, image size, class count, per-channel mean and std) from the
training split and standardises both splits with it, as the built-in datasets are.
:func:`own_dataset` makes each of them a registry entry of :mod:`fedkd.data.datasets`.

The spec is computed once and cached as JSON beside the data (``<folder>/.fedkd_spec.json`` or
``<file>.fedkd_spec.json``), keyed by a fingerprint of the files and the ``image_size`` option, so
later runs (and every simulated client process) reuse the same numbers. A data folder that cannot
be written just goes without the cache.

Every inconsistency ends with a :class:`DataError` naming the file and the remedy.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fedkd.data.bundle import DataBundle, DataRequest, Loader, Split
from fedkd.data.specs import DatasetSpec
from fedkd.errors import ConfigError, DataError

log = logging.getLogger(__name__)

ARRAY_KEYS = ("x_train", "y_train", "x_test", "y_test")
SPEC_CACHE_VERSION = 1


# --------------------------------------------------------------------------------------------- checks
def check_labels(y: np.ndarray, where: str, num_classes: int | None) -> np.ndarray:
    """``y`` as int64 labels in ``0..num_classes-1`` (any non-negative int when ``num_classes`` is None)."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(
            f"{where} has shape {y.shape}, not one label per sample; store the labels as a 1-D array of class indices"
        )
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        y = y.astype(np.int64)  # 3.0 is label 3; 2.5 is not a label
    if y.dtype.kind not in "iu":
        raise DataError(
            f"{where} holds {y.dtype} values, not integer class indices; map the classes to 0..K-1 integers"
        )
    y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        raise DataError(f"{where} holds label {int(y.min())} < 0; map the classes to 0..K-1")
    if num_classes is not None and len(y) and y.max() >= num_classes:
        raise DataError(
            f"{where} holds label {int(y.max())}, outside 0..{num_classes - 1}; fix the labels or set "
            f"dataset.num_classes to the true class count"
        )
    return y


def check_split_sizes(x: np.ndarray | torch.Tensor, y: np.ndarray, where: str) -> None:
    if len(x) != len(y):
        raise DataError(f"{where} has {len(x)} images but {len(y)} labels; store one label per image")
    if len(y) == 0:
        raise DataError(f"{where} holds no samples; add samples to the split")


def to_nchw(x: np.ndarray, where: str) -> np.ndarray:
    """Image array as ``(N, C, H, W)``: accepts (N, H, W), (N, H, W, C) and (N, C, H, W), C in 1 or 3."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        if x.shape[1] in (1, 3) and x.shape[3] not in (1, 3):
            return x
        if x.shape[3] in (1, 3):
            return np.moveaxis(x, 3, 1)
    raise DataError(
        f"{where} has shape {x.shape}; store images as (N, H, W), (N, H, W, C) or (N, C, H, W) with C = 1 or 3"
    )


def to_unit_float(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 0..255 (or float on that scale) -> float32 in [0, 1]; float data in [0, 1] stays."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.dtype == torch.uint8:
        return t.float() / 255.0
    t = t.float()
    return t / 255.0 if t.numel() and t.max() > 1.0 else t


def resize(x: torch.Tensor, image_size: int | None, where: str) -> torch.Tensor:
    """Resize ``(N, C, H, W)`` to ``image_size`` squares; without it the images must be square."""
    h, w = x.shape[-2:]
    if image_size is None:
        if h != w:
            raise DataError(f"{where} holds {w}x{h} images, not square; set dataset.image_size=<side> to resize them")
        return x
    if (h, w) == (image_size, image_size):
        return x
    return F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)


# --------------------------------------------------------------------------------------------- spec
def compute_spec(name: str, x_train: torch.Tensor, num_classes: int) -> DatasetSpec:
    """Channels, side, classes and per-channel mean/std (population std; 1 for a constant channel)."""
    dims = (0, 2, 3)
    sums = torch.zeros(x_train.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(sums)
    for chunk in torch.split(x_train, 4096):  # float64 sums in chunks: exact enough, bounded memory
        c = chunk.double()
        sums += c.sum(dims)
        squares += (c * c).sum(dims)
    count = x_train.shape[0] * x_train.shape[2] * x_train.shape[3]
    mean = sums / count
    std = (squares / count - mean * mean).clamp_min(0).sqrt()
    std = torch.where(std < 1e-6, torch.ones_like(std), std)
    return DatasetSpec(
        name, int(x_train.shape[1]), int(x_train.shape[-1]), int(num_classes),
        tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std),
    )


def _read_cached_spec(cache: Path, fingerprint: str, key: str) -> DatasetSpec | None:
    try:
        stored = json.loads(cache.read_text())
    except (OSError, ValueError):
        return None
    if stored.get("version") != SPEC_CACHE_VERSION or stored.get("fingerprint") != fingerprint:
        return None
    entry = stored.get("specs", {}).get(key)
    if not isinstance(entry, dict):
        return None
    try:
        return DatasetSpec(**{**entry, "mean": tuple(entry["mean"]), "std": tuple(entry["std"])})
    except (TypeError, KeyError):
        return None


def _write_cached_spec(cache: Path, fingerprint: str, key: str, spec: DatasetSpec) -> None:
    try:
        stored = json.loads(cache.read_text()) if cache.is_file() else {}
    except (OSError, ValueError):
        stored = {}
    if stored.get("fingerprint") != fingerprint or stored.get("version") != SPEC_CACHE_VERSION:
        stored = {"version": SPEC_CACHE_VERSION, "fingerprint": fingerprint, "specs": {}}
    stored["specs"][key] = asdict(spec)
    tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
    try:  # write-then-rename: concurrent client processes never read half a file
        tmp.write_text(json.dumps(stored, indent=1) + "\n")
        os.replace(tmp, cache)
    except OSError as exc:  # read-only data folder: go without the cache
        tmp.unlink(missing_ok=True)
        log.debug("could not cache the dataset spec at %s (%s)", cache, exc)


def files_fingerprint(paths: list[Path]) -> str:
    """Cheap identity of a set of files: count, total size, newest modification time."""
    stats = [p.stat() for p in paths]
    return f"{len(stats)}:{sum(s.st_size for s in stats)}:{max((s.st_mtime_ns for s in stats), default=0)}"


def finish(
    name: str,
    x_train: torch.Tensor,
    y_train: np.ndarray,
    x_test: torch.Tensor,
    y_test: np.ndarray,
    num_classes: int | None,
    cache: Path | None,
    fingerprint: str,
    image_size: int | None,
    where: tuple[str, str],
) -> DataBundle:
    """Check labels, find (or read the cached) spec, standardise: the :class:`DataBundle`.

    ``x_*`` are float ``(N, C, S, S)`` in [0, 1] already resized; ``where`` names the train and
    test label sources for messages.
    """
    y_train = check_labels(y_train, where[0], num_classes)
    classes = num_classes if num_classes is not None else int(y_train.max()) + 1
    y_test = check_labels(y_test, where[1], num_classes)
    if num_classes is None and y_test.max() >= classes:
        raise DataError(
            f"{where[1]} holds label {int(y_test.max())} but the training labels span 0..{classes - 1}; "
            "fix the labels, or set dataset.num_classes=<count> if the training split lacks classes"
        )
    key = f"image_size={image_size},num_classes={classes}"
    spec = _read_cached_spec(cache, fingerprint, key) if cache is not None else None
    if spec is None or spec.name != name or spec.channels != x_train.shape[1]:
        spec = compute_spec(name, x_train, classes)
        if cache is not None:
            _write_cached_spec(cache, fingerprint, key, spec)
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    return DataBundle(
        spec=spec,
        train=Split(((x_train - mean) / std).contiguous(), torch.from_numpy(y_train)),
        test=Split(((x_test - mean) / std).contiguous(), torch.from_numpy(y_test)),
    )


# --------------------------------------------------------------------------------------------- arrays
def load_arrays(path: Path, image_size: int | None, num_classes: int | None) -> DataBundle:
    """``dataset=arrays``: an ``.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test``."""
    if not path.is_file():
        raise DataError(
            f"arrays file {path} does not exist; set dataset.root to an .npz saved with "
            "np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in ARRAY_KEYS if k not in npz.files]
            if missing:
                raise DataError(
                    f"arrays file {path} has no {', '.join(missing)} (it has: {', '.join(npz.files) or 'nothing'}); "
                    "save it with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"
                )
            arrays = {k: npz[k] for k in ARRAY_KEYS}
    except DataError:
        raise
    except Exception as exc:  # not a zip, truncated, pickled objects refused
        raise DataError(
            f"arrays file {path} cannot be read ({(str(exc).splitlines() or [type(exc).__name__])[0][:120]}); "
            "re-save it with np.savez"
        ) from None
    splits = []
    for split in ("train", "test"):
        where = f"{path} (x_{split})"
        check_split_sizes(arrays[f"x_{split}"], arrays[f"y_{split}"], f"{path} (x_{split}, y_{split})")
        x = to_unit_float(to_nchw(arrays[f"x_{split}"], where))
        splits.append(resize(x, image_size, where))
    if splits[0].shape[1:] != splits[1].shape[1:]:
        raise DataError(
            f"{path}: x_train images are {tuple(splits[0].shape[1:])} "
            f"but x_test images are {tuple(splits[1].shape[1:])}; "
            "store both splits at one size and channel count, or set dataset.image_size=<side> to resize"
        )
    return finish(
        f"arrays:{path.stem}", splits[0], arrays["y_train"], splits[1], arrays["y_test"], num_classes,
        path.with_name(path.name + ".fedkd_spec.json"), files_fingerprint([path]), image_size,
        (f"{path} (y_train)", f"{path} (y_test)"),
    )


# --------------------------------------------------------------------------------------------- entries
def own_dataset(load: Callable[[Path | None, DataRequest], DataBundle]) -> Loader:
    """The registry entry of a loader of your own data.

    The options every kind shares are checked first, then ``load(root, request)`` reads the data
    and works out the spec from all of it; ``max_train``/``max_test`` cut the result afterwards,
    so a quick run keeps the spec (and its cache) of the full data.
    """

    def entry(request: DataRequest) -> DataBundle:
        if request.num_classes is not None and request.num_classes < 1:
            raise ConfigError(
                f"dataset.num_classes must be >= 1 (got {request.num_classes}); "
                "set it to the class count or null to infer it"
            )
        if request.image_size is not None and request.image_size < 1:
            raise ConfigError(
                f"dataset.image_size must be >= 1 (got {request.image_size}); set a side length or null"
            )
        root = Path(request.root).expanduser() if request.root else None
        return load(root, request).truncated(request.max_train, request.max_test)

    return entry


def required_root(root: Path | None, name: str, what: str) -> Path:
    """``root``, or a :class:`ConfigError` telling ``dataset={name}`` to set it to ``what``."""
    if root is None:
        raise ConfigError(f"dataset={name} needs dataset.root; set dataset.root=<{what}>")
    return root


@own_dataset
def arrays_dataset(root: Path | None, request: DataRequest) -> DataBundle:
    """``dataset=arrays``: :func:`load_arrays` of the ``.npz`` file ``dataset.root``."""
    return load_arrays(required_root(root, request.name, "an .npz file"), request.image_size, request.num_classes)
