"""Where a block of work spends its seconds: named laps that add up to the total."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator


class Laps:
    """Accumulates seconds per name; :meth:`split` adds the unaccounted rest as ``other`` so that
    the parts sum exactly to the time since construction.

        laps = Laps()
        with laps("ensemble"):
            ...
        laps.add("synthesis", 1.2)       # a duration measured elsewhere, inside a timed block
        parts = laps.split()             # {"ensemble": ..., "synthesis": ..., "other": ..., "total": ...}
    """

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        tick = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - tick)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def move(self, source: str, target: str, seconds: float) -> None:
        """Re-attribute ``seconds`` of ``source``'s time to ``target`` (a sub-part measured inside it)."""
        seconds = min(seconds, self.seconds.get(source, 0.0))
        self.add(source, -seconds)
        self.add(target, seconds)

    def split(self) -> dict[str, float]:
        total = time.perf_counter() - self.started
        parts = dict(self.seconds)
        parts["other"] = total - sum(parts.values())
        parts["total"] = total
        return parts
