"""fedkd: federated learning simulation with data-free knowledge distillation."""

__version__ = "0.1.0"
