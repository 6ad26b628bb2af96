"""Server-side defences: screen each client reply, clip update norms, robust ways to combine weights.

:func:`screen_reply` says whether a train reply can be aggregated at all (``"malformed"``: not
the message the server asked for, keys, shapes or dtypes unlike the global model;
``"nonfinite"``: NaN or Inf in its weights). :func:`clip_update_norms` bounds how far one client can
move the global model. :func:`combine` aggregates the survivors with one of

- ``mean``: the example-weighted mean (FedAvg; Flower's ``aggregate_arrayrecords``);
- ``median``: the coordinate-wise median (what Flower's ``FedMedian`` computes);
- ``trimmed_mean``: the coordinate-wise mean without the ``trim_fraction`` largest and smallest
  values (Flower's ``trim_mean``, the core of ``FedTrimmedAvg``);
- ``krum``/``multikrum``: the mean of the replies closest to their neighbours (Flower's
  ``select_multikrum``, the core of ``Krum``/``MultiKrum``), given ``num_malicious``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from flwr.app import Array, ArrayRecord, RecordDict
from flwr.serverapp.strategy.fedtrimmedavg import trim_mean
from flwr.serverapp.strategy.multikrum import select_multikrum
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from fedkd.errors import ConfigError, check_choice
from fedkd.federated import records as R

AGGREGATIONS = ("mean", "median", "trimmed_mean", "krum", "multikrum")
MALFORMED, NONFINITE = "malformed", "nonfinite"


def check_options(aggregation: str, trim_fraction: float, num_malicious: int, clip_norm: float | None) -> None:
    """One-line errors for robust-aggregation settings (``strategy.*`` keys)."""
    check_choice("strategy.aggregation", aggregation, AGGREGATIONS)
    if not 0.0 <= trim_fraction < 0.5:
        raise ConfigError(f"strategy.trim_fraction must be in [0, 0.5) (got {trim_fraction}); use e.g. 0.2")
    if num_malicious < 0:
        raise ConfigError(
            f"strategy.num_malicious must be >= 0 (got {num_malicious}); use the number of clients you distrust"
        )
    if clip_norm is not None and not clip_norm > 0:
        raise ConfigError(
            f"strategy.clip_norm must be > 0 or null (got {clip_norm}); use e.g. 5.0, or null for no clipping"
        )


def _is_float(array: Array) -> bool:
    return np.issubdtype(np.dtype(array.dtype), np.floating)


def screen_reply(content: RecordDict, reference: ArrayRecord | None, weighted_by_key: str) -> str | None:
    """``None`` when the reply can be aggregated, else why not (:data:`MALFORMED` or :data:`NONFINITE`).

    ``reference``: the global weights the client was sent (keys, shapes and dtypes to match);
    ``None`` checks the reply on its own.
    """
    if len(content.array_records) != 1 or len(content.metric_records) != 1:
        return MALFORMED
    metrics = next(iter(content.metric_records.values()))
    weight = metrics.get(weighted_by_key)
    if not isinstance(weight, int | float) or not math.isfinite(weight) or weight <= 0:
        return MALFORMED
    if not isinstance(metrics.get(R.PARTITION_ID), int):
        return MALFORMED
    arrays = next(iter(content.array_records.values()))
    if reference is not None:
        if set(arrays) != set(reference):
            return MALFORMED
        for key, ref in reference.items():
            have = arrays[key]
            if tuple(have.shape) != tuple(ref.shape) or np.dtype(have.dtype) != np.dtype(ref.dtype):
                return MALFORMED
    for array in arrays.values():
        try:
            value = array.numpy()
        except Exception:  # bytes that do not decode as the array they claim to be
            return MALFORMED
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            return NONFINITE
    return None


def all_finite(arrays: ArrayRecord) -> bool:
    return all(np.isfinite(a.numpy()).all() for a in arrays.values() if _is_float(a))


def update_norm(arrays: ArrayRecord, reference: ArrayRecord) -> float:
    """L2 norm of ``arrays - reference`` over the floating-point entries (weights, BN statistics)."""
    total = 0.0
    for key, ref in reference.items():
        if _is_float(ref):
            delta = arrays[key].numpy().astype(np.float64) - ref.numpy().astype(np.float64)
            total += float(np.square(delta).sum())
    return math.sqrt(total)


def clip_update_norms(
    contents: Sequence[RecordDict], reference: ArrayRecord, max_norm: float
) -> tuple[list[RecordDict], int]:
    """Each reply with its update ``w - reference`` scaled to norm ``<= max_norm``; and how many were clipped."""
    out: list[RecordDict] = []
    clipped = 0
    for content in contents:
        key = next(iter(content.array_records))
        arrays = content[key]
        norm = update_norm(arrays, reference)
        if norm <= max_norm:
            out.append(content)
            continue
        clipped += 1
        factor = max_norm / norm
        scaled = ArrayRecord()
        for name, ref in reference.items():
            value = arrays[name].numpy()
            if _is_float(ref):
                base = ref.numpy()
                value = (base + (value - base) * factor).astype(value.dtype)
            scaled[name] = Array(np.array(value, order="C"))
        record = RecordDict({key: scaled})
        for mkey, metrics in content.metric_records.items():
            record[mkey] = metrics
        out.append(record)
    return out, clipped


def _per_key(contents: Sequence[RecordDict], reduce) -> ArrayRecord:
    first = next(iter(contents[0].array_records.values()))
    out = ArrayRecord()
    for key in first:
        stacked = np.stack([next(iter(c.array_records.values()))[key].numpy() for c in contents])
        out[key] = Array(np.array(reduce(stacked), order="C"))
    return out


def combine(
    contents: Sequence[RecordDict],
    weighted_by_key: str,
    aggregation: str = "mean",
    trim_fraction: float = 0.2,
    num_malicious: int = 1,
) -> ArrayRecord:
    """Aggregate the (screened) replies' weights with ``aggregation``; dtypes as the first reply's."""
    check_choice("strategy.aggregation", aggregation, AGGREGATIONS)
    contents = list(contents)
    reference = next(iter(contents[0].array_records.values()))
    if aggregation == "mean" or len(contents) == 1:
        arrays = aggregate_arrayrecords(contents, weighted_by_key)
    elif aggregation == "median":
        arrays = _per_key(contents, lambda x: np.median(x, axis=0))
    elif aggregation == "trimmed_mean":
        arrays = _per_key(contents, lambda x: trim_mean(x, trim_fraction))
    else:  # krum or multikrum: MultiKrum keeps the n - f most central replies, Krum the single most central one
        keep = 1 if aggregation == "krum" else max(1, len(contents) - num_malicious)
        arrays = aggregate_arrayrecords(select_multikrum(contents, num_malicious, keep), weighted_by_key)
    return R.cast_like(arrays, reference)
