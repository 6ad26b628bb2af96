"""A bounded first-in-first-out store of tensors on the device (CMI's data pool and memory bank).

A pool may keep each row's label beside it (the class a sample was synthesised for): a federated
ensemble teacher weights its members by that label, so a pool that forgot it would fall back to a
weaker teacher.

CMI writes each round's best batch to disk as image files and reloads them through a data loader;
here the pool is a preallocated tensor ring buffer: no files, no decoding, bounded memory
(``capacity`` rows), and sampling is one index operation on the device.
"""

from __future__ import annotations

from typing import Any

import torch


class RingBuffer:
    """Holds up to ``capacity`` rows; adding beyond that overwrites the oldest rows."""

    def __init__(self, capacity: int, device: torch.device | str = "cpu") -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1 (got {capacity})")
        self.capacity = int(capacity)
        self.device = torch.device(device)
        self._data: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None  # (capacity,) long, when every add gave labels
        self._next = 0
        self._size = 0
        self.added = 0  # rows ever added

    def __len__(self) -> int:
        return self._size

    def add(self, rows: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Store ``rows`` and, if given, one label per row. A buffer is labelled when its first rows
        came with labels; then every add needs them. One that holds unlabelled rows (e.g. restored
        from a checkpoint written before pools kept labels) stays unlabelled and ignores labels."""
        rows = rows.detach().to(self.device)
        if self._data is not None and self._labels is None:  # holds unlabelled rows already
            labels = None
        if labels is None and self._labels is not None:
            raise ValueError("a labelled buffer needs labels with every batch; pass one label per row")
        if labels is not None:
            labels = labels.detach().to(self.device, torch.long)
            if labels.shape != rows.shape[:1]:
                raise ValueError(f"one label per row: got {tuple(labels.shape)} labels for {rows.shape[0]} rows")
        if rows.shape[0] > self.capacity:  # only the newest rows fit
            rows = rows[-self.capacity :]
            labels = None if labels is None else labels[-self.capacity :]
        if self._data is None:
            self._data = torch.empty((self.capacity, *rows.shape[1:]), dtype=rows.dtype, device=self.device)
            if labels is not None:
                self._labels = torch.empty(self.capacity, dtype=torch.long, device=self.device)
        n = rows.shape[0]
        idx = (torch.arange(n, device=self.device) + self._next) % self.capacity
        self._data[idx] = rows.to(self._data.dtype)
        if labels is not None:
            self._labels[idx] = labels
        self._next = (self._next + n) % self.capacity
        self._size = min(self._size + n, self.capacity)
        self.added += n

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` rows drawn uniformly (with replacement) from what the buffer holds."""
        return self.sample_labelled(n, generator)[0]

    def sample_labelled(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``n`` rows drawn uniformly (with replacement) and their labels (``None`` if unlabelled)."""
        if self._data is None or self._size == 0:
            raise RuntimeError("the buffer is empty; add rows before sampling")
        idx = torch.randint(0, self._size, (n,), device=self.device, generator=generator)
        return self._data[idx], None if self._labels is None else self._labels[idx]

    def state_dict(self) -> dict[str, Any]:
        """The stored rows and the write position (a run's checkpoint; tensors and plain values)."""
        data = None if self._data is None else self._data[: self._size].detach().cpu()
        labels = None if self._labels is None else self._labels[: self._size].detach().cpu()
        return {"capacity": self.capacity, "data": data, "labels": labels, "next": self._next, "size": self._size,
                "added": self.added}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`state_dict` returned; the capacity must be the same."""
        if int(state["capacity"]) != self.capacity:
            raise ValueError(f"buffer state of capacity {state['capacity']} does not fit capacity {self.capacity}")
        data, labels = state["data"], state.get("labels")  # no labels: a state saved before pools kept them
        self._data, self._labels = None, None
        if data is not None:
            # Rows [size, capacity) were never written (the buffer fills from 0 and wraps only
            # when full), so the stored prefix is the whole content.
            self._data = torch.empty((self.capacity, *data.shape[1:]), dtype=data.dtype, device=self.device)
            self._data[: data.shape[0]] = data.to(self.device)
        if labels is not None:
            self._labels = torch.empty(self.capacity, dtype=torch.long, device=self.device)
            self._labels[: labels.shape[0]] = labels.to(self.device)
        self._next, self._size, self.added = int(state["next"]), int(state["size"]), int(state["added"])

    def all(self) -> torch.Tensor | None:
        """Every stored row (oldest first is not guaranteed), or ``None`` when empty."""
        return None if self._data is None else self._data[: self._size]
