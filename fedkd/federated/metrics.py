"""Per-round metrics of a federated run: one row per round, a progress line, the final summary.

The strategy hands the recorder one dict per round (test accuracy/loss from the server's
central evaluation, client train loss/accuracy, timings, bytes); the recorder writes it to the
run's ``metrics.jsonl`` and TensorBoard (through :class:`~fedkd.utils.run_logger.RunLogger`),
prints one line, and keeps what the summary needs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from fedkd.utils.run_logger import RunLogger

log = logging.getLogger("fedkd.sim")


class RoundRecorder:
    """Writes each round's row and builds the run summary.

    ``record(round, row)`` expects at least ``test_accuracy`` and ``test_loss`` (``holdout_*``
    with ``eval_name="holdout"``); other keys (``train_loss``, ``round_seconds``, ``bytes_sent``...)
    are written as given.
    """

    def __init__(self, logger: RunLogger, rounds: int, echo: Callable[[str], None] | None = None,
                 eval_name: str = "test") -> None:
        self.logger = logger
        self.rounds = rounds
        self.eval_name = eval_name
        self.rows: list[dict[str, Any]] = []
        self._echo = echo or log.info
        self._started = time.perf_counter()

    def record(self, server_round: int, row: dict[str, Any]) -> None:
        """Write the row for ``server_round`` (metrics file + TensorBoard) and print its progress line."""
        self.logger.log(server_round, row)
        self.rows.append({"round": server_round, **row})
        self._echo(self.progress_line(server_round, row))

    def progress_line(self, server_round: int, row: dict[str, Any]) -> str:
        parts = [f"round {server_round:>{len(str(self.rounds))}}/{self.rounds}"]
        acc, loss = f"{self.eval_name}_accuracy", f"{self.eval_name}_loss"
        if acc in row:
            parts.append(f"{self.eval_name}_acc {row[acc]:.4f}  {self.eval_name}_loss {row[loss]:.4f}")
        if "train_loss" in row:
            parts.append(f"client_loss {row['train_loss']:.4f}")
        if "clients" in row:
            parts.append(f"clients {row['clients']}")
        if "round_seconds" in row:
            parts.append(f"{row['round_seconds']:.1f}s")
        return "  ".join(parts)

    def summary(self, **extra: Any) -> dict[str, Any]:
        """Final and best test accuracy (with its round), total time; written to ``summary.json``.

        ``final_test_accuracy`` is the last round's global model, the one the checkpoint holds
        (``final_holdout_accuracy`` etc. when the run evaluates on a holdout).
        """
        acc, loss = f"{self.eval_name}_accuracy", f"{self.eval_name}_loss"
        summary: dict[str, Any] = {"rounds_completed": len(self.rows)}
        if self.rows:
            rounds_s = [r["round_seconds"] for r in self.rows if "round_seconds" in r]
            summary.update(
                {
                    "mean_round_seconds": sum(rounds_s) / len(rounds_s) if rounds_s else None,
                    "bytes_sent": sum(r.get("bytes_sent", 0) for r in self.rows),
                    "bytes_received": sum(r.get("bytes_received", 0) for r in self.rows),
                }
            )
        evaluated = [r for r in self.rows if acc in r]
        if evaluated:
            final = self.rows[-1]
            best = max(evaluated, key=lambda r: r[acc])
            summary.update(
                {
                    f"final_{acc}": final.get(acc),
                    f"final_{loss}": final.get(loss),
                    f"best_{acc}": best[acc],
                    "best_round": best["round"],
                }
            )
        summary["total_seconds"] = time.perf_counter() - self._started
        summary.update(extra)
        self.logger.summary(summary)
        return summary
