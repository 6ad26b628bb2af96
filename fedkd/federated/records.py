"""The vocabulary of the messages between ServerApp and ClientApp.

Train instruction (server -> client), ``RecordDict``:
    ``"arrays"``: ArrayRecord, the global model's ``state_dict`` (may be absent: the client then
    continues from the model it keeps in ``Context.state``, or a fresh one);
    ``"config"``: ConfigRecord with ``server-round``, ``local-epochs``, ``batch-size``, ``lr`` and,
    for FedProx, ``proximal-mu``;
    FedGen adds ``"generator"`` (ArrayRecord, the feature generator) and the ``generator-*`` keys.

Train reply (client -> server): ``"arrays"`` (the trained ``state_dict``) and one MetricRecord
``"metrics"`` holding :data:`NUM_EXAMPLES` (the averaging weight), :data:`PARTITION_ID`,
:data:`LABEL_COUNTS` (the partition's label histogram), train loss/accuracy and timings.

Query (server -> client, once per node): the reply's MetricRecord holds the node's
``partition-id`` and ``num-partitions``, so the server samples clients by partition id.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"

# Node config keys (set by the simulation engine, or `flower-supernode --node-config`).
PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"

# Train-config keys (ConfigRecord sent with each train instruction).
SERVER_ROUND = "server-round"
LOCAL_EPOCHS = "local-epochs"
BATCH_SIZE = "batch-size"
LEARNING_RATE = "lr"
PROXIMAL_MU = "proximal-mu"

# FedGen (strategies/fedgen.py): the train instruction also carries the server's feature
# generator as the ArrayRecord GENERATOR, and these config keys for the client's regulariser.
GENERATOR = "generator"
GENERATOR_MODEL = "generator-model"  # JSON model config of the generator (registry name + kwargs)
GENERATOR_WEIGHT = "generator-weight"  # this round's weight of the generator cross-entropy term
GENERATOR_KL_WEIGHT = "generator-kl-weight"  # the authors' code's extra KL term (0: off, the paper)
GENERATOR_LABEL_PRIOR = "generator-label-prior"  # label distribution to sample generated features from
GENERATOR_BATCH_SIZE = "generator-batch-size"  # generated features per local step (0: the real batch size)

# Reply metric keys.
NUM_EXAMPLES = "num-examples"
LABEL_COUNTS = "label-counts"
TRAIN_LOSS = "train-loss"
TRAIN_ACCURACY = "train-accuracy"
EVAL_LOSS = "eval-loss"
EVAL_ACCURACY = "eval-accuracy"
TRAIN_SECONDS = "train-seconds"  # the local training loop alone
CLIENT_SECONDS = "client-seconds"  # the whole handler: config, data, model, training, reply
GENERATOR_LOSS = "generator-loss"  # FedGen clients: mean regulariser term over local steps
WORKER = "worker-pid"  # process that ran the handler (simulation: clients share Ray workers)


def to_arrays(model: torch.nn.Module) -> ArrayRecord:
    """The model's ``state_dict`` (parameters and buffers) as an ArrayRecord."""
    return ArrayRecord(model.state_dict())


def state_dict(arrays: ArrayRecord) -> OrderedDict[str, torch.Tensor]:
    """An ArrayRecord back as a ``state_dict`` of CPU tensors."""
    return arrays.to_torch_state_dict()


def fits(model: torch.nn.Module, arrays: ArrayRecord) -> bool:
    """Whether ``arrays`` has exactly the keys and shapes of ``model``'s ``state_dict``."""
    own = model.state_dict()
    return set(own) == set(arrays) and all(tuple(own[k].shape) == tuple(arrays[k].shape) for k in own)


def payload_bytes(content: RecordDict) -> int:
    """Bytes of the arrays a message carries (Flower's ``ArrayRecord.count_bytes``)."""
    return sum(record.count_bytes() for record in content.array_records.values())


def reply_metrics(message: Message) -> MetricRecord:
    """The one MetricRecord of a reply."""
    return next(iter(message.content.metric_records.values()))


def cast_like(arrays: ArrayRecord, reference: ArrayRecord) -> ArrayRecord:
    """``arrays`` with each entry cast to the dtype it has in ``reference``.

    Weighted averaging turns integer buffers (BatchNorm's ``num_batches_tracked``) into floats;
    clients and checkpoints expect the original dtypes.
    """
    out = ArrayRecord()
    for key, array in arrays.items():
        dtype = np.dtype(reference[key].dtype)
        value = array.numpy()
        out[key] = Array(value.astype(dtype) if value.dtype != dtype else value)
    return out


# Mixed architectures: one ArrayRecord carries every architecture group's model, each key
# prefixed with its group ("small_cnn-1a2b3c4d::conv.0.weight"); clients take their own group's.
GROUP_SEP = "::"


def group_key(model_cfg: dict) -> str:
    """A stable name for an architecture group: the model name (your model: its class name) plus a
    hash of its full config."""
    import hashlib
    import json

    digest = hashlib.sha1(json.dumps(model_cfg, sort_keys=True).encode()).hexdigest()[:8]
    name = model_cfg.get("name") or str(model_cfg.get("_target_", "model")).rsplit(".", 1)[-1]
    return f"{name}-{digest}"


def pack_groups(groups: dict[str, ArrayRecord]) -> ArrayRecord:
    """One ArrayRecord holding each group's arrays under ``<group>::<key>``."""
    out = ArrayRecord()
    for group, arrays in groups.items():
        for key, array in arrays.items():
            out[f"{group}{GROUP_SEP}{key}"] = array
    return out


def is_packed(arrays: ArrayRecord) -> bool:
    return any(GROUP_SEP in key for key in arrays)


def unpack_group(arrays: ArrayRecord, group: str) -> ArrayRecord | None:
    """The arrays of ``group`` from a packed record (``None`` when it holds none of that group)."""
    prefix = f"{group}{GROUP_SEP}"
    out = ArrayRecord()
    for key, array in arrays.items():
        if key.startswith(prefix):
            out[key[len(prefix):]] = array
    return out if len(out) else None
