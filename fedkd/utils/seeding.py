"""Seeding in one place: Python, NumPy and torch (CPU and CUDA) from one integer."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed every RNG a run touches and return a CPU ``torch.Generator`` seeded the same way.

    On CPU the same seed gives the same metrics. On CUDA, cuDNN keeps its fast non-deterministic
    kernels (we do not force determinism), so GPU runs match only statistically.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
