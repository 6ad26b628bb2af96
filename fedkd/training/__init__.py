"""Supervised training and evaluation loops (clients, teachers, baselines)."""

from fedkd.training.supervised import evaluate, fit, train_epoch

__all__ = ["evaluate", "fit", "train_epoch"]
