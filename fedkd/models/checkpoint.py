"""Model checkpoints that know their architecture: save a model with the config that builds it,
rebuild it later from the file alone (``fedkd-train``'s ``model.pt``, a distilled ``student.pt``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from fedkd.data.specs import DatasetSpec
from fedkd.errors import CheckpointError
from fedkd.models.registry import build_from_config, model_config
from fedkd.utils.checkpoint import check_meta, load_checkpoint, load_state


def model_from_checkpoint(
    path: str | Path, spec: DatasetSpec, expect: dict[str, Any] | None = None
) -> tuple[nn.Module, dict]:
    """Rebuild the model a checkpoint describes (``meta["model_config"]``) for ``spec``, load it.

    The checkpoint's class count and input channels must match ``spec``.
    """
    path = Path(path)
    ckpt = load_checkpoint(path)
    meta = ckpt["meta"]
    check_meta(path, meta, {"num_classes": spec.num_classes, "channels": spec.channels, **(expect or {})})
    if "model_config" not in meta:
        raise CheckpointError(f"checkpoint {path} does not record its architecture; re-create it with fedkd-train")
    model = build_from_config(meta["model_config"], spec)
    load_state(path, model, ckpt["state_dict"])
    return model, meta


def model_meta(model_cfg: Any, spec: DatasetSpec) -> dict[str, Any]:
    """The ``meta`` a model checkpoint carries so it can be rebuilt and checked later."""
    return {
        "model_config": model_config(model_cfg),
        "dataset": spec.name,
        "num_classes": spec.num_classes,
        "channels": spec.channels,
        "image_size": spec.image_size,
    }
