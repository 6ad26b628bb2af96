"""Shared fixtures: small real data (scikit-learn's digits) and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Two cores on CI: keep torch from oversubscribing them when pytest and a subprocess both run.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def digits():
    from fedkd.data import load_dataset

    return load_dataset("digits")


def run_cli(cmd: str, *overrides: str, cwd: Path = REPO, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run a console entry point (e.g. ``fedkd-train``) with Hydra overrides; capture output."""
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [str(BIN / cmd), *overrides], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def cli():
    return run_cli
