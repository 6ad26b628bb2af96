"""Everything a run records: TensorBoard scalars and image grids, PNG sample grids, a JSON-lines metrics file.

The metrics file (``metrics.jsonl``, one JSON object per line) is what scripts and the comparison
report read; TensorBoard is for looking.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

from fedkd.errors import FedkdError

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
SAMPLES_DIR = "samples"  # PNG grids of generated images, one per logged step
MIN_TILE = 64  # pixels: a sample grid's smaller images are enlarged to at least this side
GRID_PADDING = 2  # pixels between a grid's tiles (torchvision's default)
RUN_CONFIG = "resolved_config.yaml"  # the resolved config a run ran with (fedkd.utils.run_context)


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


class RunLogger:
    """Writes the run's metrics to ``out_dir``: ``metrics.jsonl``, ``summary.json``, ``tb/``, ``samples/``."""

    def __init__(self, out_dir: str | Path, tensorboard: bool = True) -> None:
        self.out_dir = Path(out_dir)
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._metrics = open(self.out_dir / METRICS_FILE, "a", encoding="utf-8")
        except OSError as exc:
            raise FedkdError(
                f"cannot write to output folder {self.out_dir} ({exc.strerror}); "
                "choose a writable folder with hydra.run.dir=PATH"
            ) from None
        self.tb = SummaryWriter(str(self.out_dir / "tb")) if tensorboard else None

    def log(self, step: int, metrics: dict[str, Any], prefix: str = "") -> None:
        """Record ``metrics`` at ``step``: one JSON line, and one TensorBoard scalar per number."""
        row = {"step": step, **{f"{prefix}{k}": _plain(v) for k, v in metrics.items()}}
        self._metrics.write(json.dumps(row) + "\n")
        self._metrics.flush()
        if self.tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self.tb.add_scalar(key.replace(".", "/"), value, step)

    def images(
        self, tag: str, images: torch.Tensor, step: int, mean=None, std=None, nrow: int = 8,
        labels: Sequence[str] | None = None,
    ) -> Path:
        """Write a grid of (normalised) images, un-normalised with ``mean``/``std``.

        Images smaller than :data:`MIN_TILE` pixels are enlarged by a whole factor (nearest
        neighbour: every pixel stays a sharp square); ``labels`` (one per image: a conditional
        generator's class names) are written into the tiles' corners. The grid goes to
        ``samples/<tag>_<step>.png`` (``/`` in ``tag`` becomes ``_``), so a run's samples can be
        looked at without TensorBoard, and to TensorBoard when it is on. Returns the PNG's path.
        """
        from torchvision.utils import make_grid, save_image

        images = images.detach().float().cpu()
        if mean is not None and std is not None:
            images = images * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)
        scale = tile_scale(images.shape[-1])
        if scale > 1:
            images = torch.nn.functional.interpolate(images, scale_factor=scale, mode="nearest")
        grid = make_grid(images.clamp(0, 1), nrow=nrow, padding=GRID_PADDING)
        if labels is not None:
            grid = _labelled(grid, [str(label) for label in labels], images.shape[-1], nrow)
        path = self.out_dir / SAMPLES_DIR / f"{tag.replace('/', '_')}_{step}.png"
        path.parent.mkdir(exist_ok=True)
        save_image(grid, path)  # the grid already has its padding: saved as is
        if self.tb is not None:
            self.tb.add_image(tag, grid, step)
        return path

    def summary(self, values: dict[str, Any]) -> None:
        """Write the run's final figures to ``summary.json``."""
        path = self.out_dir / SUMMARY_FILE
        path.write_text(json.dumps({k: _plain(v) for k, v in values.items()}, indent=2) + "\n")

    def close(self) -> None:
        self._metrics.close()
        if self.tb is not None:
            self.tb.close()

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def tile_scale(side: int) -> int:
    """The whole factor that enlarges a ``side``-pixel image to at least :data:`MIN_TILE` pixels."""
    return max(1, -(-MIN_TILE // max(side, 1)))


def _labelled(grid: torch.Tensor, labels: list[str], side: int, nrow: int) -> torch.Tensor:
    """``grid`` (make_grid's, values in [0, 1]) with each tile's label in its top-left corner,
    white on a dark box so it reads on any image."""
    from PIL import Image, ImageDraw, ImageFont

    pixels = grid.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    image = Image.fromarray(pixels).convert("RGB")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=max(10, side // 6))
    step = side + GRID_PADDING
    for k, label in enumerate(labels):
        x, y = GRID_PADDING + (k % nrow) * step, GRID_PADDING + (k // nrow) * step
        while len(label) > 1 and draw.textlength(label, font=font) > side - 4:  # a long name: cut to the tile
            label = label[:-2] + "…"
        left, top, right, bottom = draw.textbbox((x + 2, y + 1), label, font=font)
        draw.rectangle((x, y, min(right + 2, x + side - 1), bottom + 2), fill=(0, 0, 0))
        draw.text((x + 2, y + 1), label, fill=(255, 255, 255), font=font)
    out = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float().div_(255)
    return out


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of a run's ``metrics.jsonl``."""
    path = Path(run_dir) / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
