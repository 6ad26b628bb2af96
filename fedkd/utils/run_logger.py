"""Everything a run records: TensorBoard scalars and image grids, PNG sample grids, a JSON-lines metrics file.

The metrics file (``metrics.jsonl``, one JSON object per line) is what scripts and the comparison
report read; TensorBoard is for looking.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch.utils.tensorboard import SummaryWriter

from fedkd.errors import FedkdError

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
SAMPLES_DIR = "samples"  # PNG grids of generated images, one per logged step


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
        self, tag: str, images: torch.Tensor, step: int, mean=None, std=None, nrow: int = 8
    ) -> Path:
        """Write a grid of (normalised) images, un-normalised with ``mean``/``std``.

        The grid goes to ``samples/<tag>_<step>.png`` (``/`` in ``tag`` becomes ``_``), so a run's
        samples can be looked at without TensorBoard, and to TensorBoard when it is on. Returns
        the PNG's path.
        """
        from torchvision.utils import make_grid, save_image

        images = images.detach().float().cpu()
        if mean is not None and std is not None:
            images = images * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)
        grid = make_grid(images.clamp(0, 1), nrow=nrow)
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


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of a run's ``metrics.jsonl``."""
    path = Path(run_dir) / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
