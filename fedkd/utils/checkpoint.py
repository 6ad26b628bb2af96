"""Safe, atomic model checkpoints.

A checkpoint is a dict of tensors and plain values (``state_dict`` plus ``meta`` describing the
architecture), loaded with ``torch.load(weights_only=True)``: no arbitrary pickles from disk.
Writes go to a temporary file renamed into place, so a crash mid-write keeps the old file.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fedkd.errors import CheckpointError


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex): identifies a checkpoint beyond its path."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_model(path: str | Path, model: nn.Module, **meta: Any) -> None:
    """Save ``model``'s weights with ``meta`` (e.g. ``model="lenet5", dataset="mnist"``)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_save({"format": "fedkd-model-v1", "meta": meta, "state_dict": state}, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a fedkd checkpoint safely; a :class:`CheckpointError` says what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; give the path of a .pt file a fedkd run saved")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, random bytes, pickled objects refused by weights_only
        # An empty file gives an exception without text (EOFError): name its type instead. A
        # refused pickle says why on its "WeightsUnpickler error:" line, not on the first.
        text = str(exc).strip()
        refused = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
        if refused:
            # Keep what was refused, not torch's advice to allow it ("add_safe_globals").
            what = refused.group(1).split(" was not an allowed", 1)[0].split(". ", 1)[0].strip()
            reason = f"weights-only loading refused it: {what}"[:160]
        else:
            reason = (text.splitlines() or [type(exc).__name__])[0][:120]
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({reason}); it is truncated, corrupted or not a fedkd "
            "checkpoint: re-create it with fedkd-train"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != "fedkd-model-v1":
        raise CheckpointError(f"checkpoint {path} is not a fedkd model checkpoint; re-create it with fedkd-train")
    return ckpt


def check_meta(path: Path, meta: dict[str, Any], expect: dict[str, Any]) -> None:
    for key, want in expect.items():
        have = meta.get(key)
        if have is not None and have != want:
            raise CheckpointError(
                f"checkpoint {path} has {key}={have} but this run needs {key}={want}; "
                f"use a checkpoint trained with {key}={want} or change the config to match"
            )


def load_state(path: Path, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = " ".join(line.strip() for line in str(exc).splitlines()[:2])[:200]  # "Error(s) ... for X:" + which keys
        raise CheckpointError(
            f"checkpoint {path} does not fit the model ({first}); use a checkpoint of the same architecture"
        ) from None


def load_model(path: str | Path, model: nn.Module, expect: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load weights from ``path`` into ``model``; return the checkpoint's ``meta``.

    ``expect`` (e.g. ``{"num_classes": 10}``) is compared with the checkpoint's meta first, so a
    checkpoint of another architecture or class count gets a clear message.
    """
    ckpt = load_checkpoint(path)
    check_meta(Path(path), ckpt["meta"], expect or {})
    load_state(Path(path), model, ckpt["state_dict"])
    return ckpt["meta"]
