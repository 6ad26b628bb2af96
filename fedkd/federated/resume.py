"""Checkpoint and resume of a federated run: the server's whole state after every round.

After each round the ServerApp writes ``server_state.pt`` into the run folder, atomically
(:func:`fedkd.utils.checkpoint.atomic_save`: a temporary file renamed over the old one, so a crash
while writing leaves the previous round's state intact). It holds

- the global model (every architecture group's, packed as the clients receive it), the round;
- the metrics rows so far (``metrics.jsonl`` is rewritten from them on resume, so a row written
  after the last checkpoint is not duplicated);
- the RNG states (torch, CUDA, numpy, Python) at the end of that round;
- the strategy's own state (``strategy.state_dict()``, e.g. FedAvg's label histograms; a
  generator strategy adds its generator and optimiser);
- the config that matters for the results, to refuse resuming with a different one.

``fedkd-sim resume=<run folder>`` (same overrides as the run) continues at the round after the
last complete one, in that folder. Everything is read with ``torch.load(weights_only=True)``:
tensors and plain values only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord
from omegaconf import DictConfig

from fedkd.errors import ConfigError
from fedkd.federated import records as R
from fedkd.utils import run_state
from fedkd.utils.checkpoint import atomic_save
from fedkd.utils.run_state import read_state_file
from fedkd.utils.seeding import rng_state as _rng_state
from fedkd.utils.seeding import set_rng_state as _set_rng_state

STATE_FILE = "server_state.pt"
FORMAT = "fedkd-server-state-v1"

#: Config keys that do not change a run's results: they may differ between a run and its resume.
NOT_IDENTITY = ("resume", "rounds", "hydra", "debug", "tensorboard", "backend", "client_resources",
                "node_timeout", "round_timeout", "device", "eval_batch_size")


def config_identity(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config without the keys that may change on resume (:data:`NOT_IDENTITY`)."""
    return run_state.config_identity(cfg, NOT_IDENTITY)


class ServerCheckpointer:
    """Called by the strategy after each round's row is recorded: writes ``server_state.pt``."""

    def __init__(self, out_dir: Path, cfg: DictConfig, strategy: Any, recorder: Any) -> None:
        self.path = Path(out_dir) / STATE_FILE
        self.identity = config_identity(cfg)
        self.strategy = strategy
        self.recorder = recorder

    def __call__(self, server_round: int, arrays: ArrayRecord) -> None:
        state = {
            "format": FORMAT,
            "round": int(server_round),
            "arrays": R.state_dict(arrays),
            "rows": json.loads(json.dumps(self.recorder.rows)),  # plain numbers and strings only
            "rng": _rng_state(),
            "strategy": self.strategy.state_dict(),
            "strategy_class": type(self.strategy).__name__,
            "config": json.dumps(self.identity, sort_keys=True),
        }
        atomic_save(state, self.path)


@dataclass
class ResumeState:
    """A run's ``server_state.pt``, checked against the config that resumes it."""

    folder: Path
    round: int
    arrays: ArrayRecord
    rows: list[dict[str, Any]]
    rng: dict[str, Any]
    strategy: dict[str, Any]
    strategy_class: str

    @classmethod
    def load(cls, cfg: DictConfig) -> ResumeState:
        """Read ``<cfg.resume>/server_state.pt``; one-line errors for every way it can be unusable."""
        folder, state = read_state_file(cfg, STATE_FILE, FORMAT, command="fedkd-sim", unit="round",
                                        kind="server state", identity=config_identity)
        if state["round"] > int(cfg.rounds):
            raise ConfigError(
                f"resume={folder} already completed {state['round']} rounds but rounds={cfg.rounds}; "
                f"set rounds>={state['round']}"
            )
        return cls(folder, int(state["round"]), ArrayRecord(state["arrays"]), list(state["rows"]), state["rng"],
                   state["strategy"], str(state["strategy_class"]))

    def rewrite_metrics(self) -> None:
        """``metrics.jsonl`` as it was at the checkpoint: rows of later, unfinished rounds dropped."""
        lines = [json.dumps({"step": row["round"], **{k: v for k, v in row.items() if k != "round"}})
                 for row in self.rows]
        run_state.rewrite_metrics(self.folder, lines)

    def restore(self, strategy: Any, recorder: Any) -> None:
        """Put the strategy's state, the recorder's rows and the RNG states back as they were."""
        if type(strategy).__name__ != self.strategy_class:
            raise ConfigError(
                f"resume: the run used {self.strategy_class}, this config {type(strategy).__name__}; "
                "use the run's strategy"
            )
        strategy.load_state_dict(self.strategy)
        recorder.rows = [dict(row) for row in self.rows]
        _set_rng_state(self.rng)
