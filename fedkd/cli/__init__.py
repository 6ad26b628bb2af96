"""Command-line entry points (Hydra apps) declared in pyproject."""
