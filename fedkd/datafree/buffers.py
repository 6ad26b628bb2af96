"""A bounded first-in-first-out store of tensors on the device (CMI's data pool and memory bank).

CMI writes each round's best batch to disk as image files and reloads them through a data loader;
here the pool is a preallocated tensor ring buffer: no files, no decoding, bounded memory
(``capacity`` rows), and sampling is one index operation on the device.
"""

from __future__ import annotations

import torch


class RingBuffer:
    """Holds up to ``capacity`` rows; adding beyond that overwrites the oldest rows."""

    def __init__(self, capacity: int, device: torch.device | str = "cpu") -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1 (got {capacity})")
        self.capacity = int(capacity)
        self.device = torch.device(device)
        self._data: torch.Tensor | None = None
        self._next = 0
        self._size = 0
        self.added = 0  # rows ever added

    def __len__(self) -> int:
        return self._size

    def add(self, rows: torch.Tensor) -> None:
        rows = rows.detach().to(self.device)
        if rows.shape[0] > self.capacity:  # only the newest rows fit
            rows = rows[-self.capacity :]
        if self._data is None:
            self._data = torch.empty((self.capacity, *rows.shape[1:]), dtype=rows.dtype, device=self.device)
        n = rows.shape[0]
        idx = (torch.arange(n, device=self.device) + self._next) % self.capacity
        self._data[idx] = rows.to(self._data.dtype)
        self._next = (self._next + n) % self.capacity
        self._size = min(self._size + n, self.capacity)
        self.added += n

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` rows drawn uniformly (with replacement) from what the buffer holds."""
        if self._data is None or self._size == 0:
            raise RuntimeError("the buffer is empty; add rows before sampling")
        idx = torch.randint(0, self._size, (n,), device=self.device, generator=generator)
        return self._data[idx]

    def all(self) -> torch.Tensor | None:
        """Every stored row (oldest first is not guaranteed), or ``None`` when empty."""
        return None if self._data is None else self._data[: self._size]
