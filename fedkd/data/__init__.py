"""Datasets as in-memory tensors, their specs, and federated partitions."""

from fedkd.data.bundle import DataBundle, Split, iterate_batches
from fedkd.data.datasets import load_dataset
from fedkd.data.partitions import label_counts
from fedkd.data.specs import SPECS, DatasetSpec, get_spec

__all__ = ["SPECS", "DataBundle", "DatasetSpec", "Split", "get_spec", "iterate_batches", "label_counts", "load_dataset"]
