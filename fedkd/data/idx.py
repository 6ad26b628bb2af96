"""Reader for the idx format of (Fashion-)MNIST, plain or gzip-compressed.

Debian's ``dataset-fashion-mnist`` ships the four original ``*-idx?-ubyte.gz`` files; torchvision
only reads them from its own folder layout, so we read them directly.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from fedkd.errors import DataError

# The third byte of the magic number encodes the element type; we only need unsigned bytes.
_UBYTE = 0x08
FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one idx file (``.gz`` or raw) into a uint8 array of the shape its header states."""
    path = Path(path)
    remedy = ("re-install the data (e.g. 'apt-get install --reinstall dataset-fashion-mnist') "
              "or point dataset.root at a complete copy")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"idx file {path} does not exist; {remedy}") from None
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(f"idx file {path} is corrupted or truncated ({exc}); {remedy}") from None
    if len(raw) < 4:
        raise DataError(f"idx file {path} is truncated (no header); {remedy}")
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != _UBYTE or ndim == 0:
        raise DataError(f"idx file {path} has no valid unsigned-byte idx header; {remedy}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"idx file {path} is truncated (incomplete header); {remedy}")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DataError(
            f"idx file {path} holds {len(raw) - header} data bytes but its header says {expected}; {remedy}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def has_idx_files(folder: str | Path) -> bool:
    """True when ``folder`` holds the four Fashion-MNIST idx ``.gz`` files."""
    folder = Path(folder)
    return all((folder / name).is_file() for name in FASHION_FILES.values())


def read_idx_folder(folder: str | Path) -> dict[str, np.ndarray]:
    """Read the four idx files of a (Fashion-)MNIST folder; keys as in :data:`FASHION_FILES`."""
    folder = Path(folder)
    return {key: read_idx(folder / name) for key, name in FASHION_FILES.items()}
