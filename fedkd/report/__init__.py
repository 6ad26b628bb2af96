"""Comparison reports over finished federated runs (tables, plots)."""
