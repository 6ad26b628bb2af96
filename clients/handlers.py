"""What a fedkd client does with each message: one Flower client per data partition.

The ``ClientApp`` that routes messages here is :mod:`fedkd.apps.client_app`. The client's
partition comes from its node config (``partition-id``, ``num-partitions``: set by the
simulation engine, or ``flower-supernode --node-config``). Handlers:

- ``train``: load the global model (or, when the server sends none that fits this client's
  architecture, the model kept in ``Context.state``), train ``local-epochs`` on the partition,
  reply weights plus metrics (``num-examples``, ``partition-id``, ``label-counts``, loss,
  accuracy, seconds); with a FedGen generator in the instruction, its regulariser joins the loss
  (and ``generator-loss`` the metrics);
- ``evaluate``: loss and accuracy of the received model on the local partition;
- ``query``: report ``partition-id`` and ``num-partitions`` (the server samples by partition id).

State that outlives a round lives in ``Context.state``: ``fedkd-client`` (rounds trained, last
round) and, with ``keep_local_model=true``, ``local-model`` (the client's trained weights).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from hydra.utils import instantiate
from omegaconf import DictConfig

from fedkd.clients.train import GeneratorRegularizer, local_train
from fedkd.datafree import generators as _generators  # noqa: F401  (FedGen's generator is built here)
from fedkd.errors import ConfigError
from fedkd.federated import faults
from fedkd.federated import records as R
from fedkd.federated.data import build_client_model, check_partition_id, client_model_config, client_split, load_data
from fedkd.models import build_from_config, model_config
from fedkd.training import evaluate
from fedkd.training.optimizers import optimizer_factory
from fedkd.utils.device import resolve_device

STATE_KEY = "fedkd-client"
LOCAL_MODEL_KEY = "local-model"


def partition_of(context: Context, cfg: DictConfig) -> int:
    """This client's partition id, checked against ``num_clients``."""
    node = context.node_config
    if R.PARTITION_ID not in node:
        raise ConfigError(
            "this SuperNode has no partition-id; start it with --node-config 'partition-id=<k> num-partitions=<n>'"
        )
    pid, parts = int(node[R.PARTITION_ID]), int(node.get(R.NUM_PARTITIONS, cfg.num_clients))
    if parts != cfg.num_clients:
        raise ConfigError(
            f"num-partitions={parts} on this SuperNode but num_clients={cfg.num_clients}; make them equal"
        )
    check_partition_id(cfg, pid)
    return pid


def _seed(cfg: DictConfig, partition_id: int, server_round: int) -> int:
    # Distinct, reproducible streams per (run seed, client, round).
    return (int(cfg.seed) * 1_000_003 + partition_id * 10_007 + server_round) % 2**63


def _config_value(config: ConfigRecord, key: str, default: Any) -> Any:
    return config[key] if key in config else default


def _start_model(cfg: DictConfig, pid: int, msg: Message, context: Context) -> tuple[torch.nn.Module, bool]:
    """The model to train: the global one if it fits, else the one kept in state, else a fresh one.

    Returns the model and whether it came from the server.
    """
    torch.manual_seed(_seed(cfg, pid, 0))  # a fresh model is the same in every run
    model = build_client_model(cfg, pid, load_data(cfg).spec)
    arrays = msg.content[R.ARRAYS] if R.ARRAYS in msg.content.array_records else None
    if arrays is not None and R.is_packed(arrays):  # mixed architectures: take this client's group
        arrays = R.unpack_group(arrays, R.group_key(model_config(client_model_config(cfg, pid))))
    if arrays is not None and R.fits(model, arrays):
        model.load_state_dict(R.state_dict(arrays))
        return model, True
    if LOCAL_MODEL_KEY in context.state.array_records:
        model.load_state_dict(R.state_dict(context.state[LOCAL_MODEL_KEY]))
    return model, False


def use_threads(cfg: DictConfig) -> None:
    """Let torch use the client's ``client_resources.num_cpus`` threads, no more.

    Ray sets this for simulated clients already; SuperNode processes sharing a machine need it
    too (more threads than cores make small CPU models many times slower).
    """
    threads = max(1, int(cfg.client_resources.num_cpus))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def handle_train(msg: Message, context: Context, cfg: DictConfig) -> Message:
    """Train on this client's partition and reply the new weights and metrics."""
    started = time.perf_counter()
    use_threads(cfg)
    pid = partition_of(context, cfg)
    fault = faults.fault_of(cfg, pid)  # fault injection (conf/sim.yaml: faults); None for healthy clients
    faults.before_training(fault, cfg, pid)
    split = client_split(cfg, pid)
    config = msg.content.config_records.get(R.CONFIG, ConfigRecord())
    server_round = int(_config_value(config, R.SERVER_ROUND, 0))
    device = resolve_device(cfg.device)
    model, _ = _start_model(cfg, pid, msg, context)
    start_arrays = R.to_arrays(model) if fault == "scaled" else None
    generator = torch.Generator().manual_seed(_seed(cfg, pid, server_round))
    regularizer = generator_regularizer(msg, config, cfg, pid, server_round, device)
    train_started = time.perf_counter()
    result = local_train(
        model,
        split,
        optimizer_factory(instantiate(cfg.optim), "optim"),
        lr=float(_config_value(config, R.LEARNING_RATE, cfg.optim.lr)),
        epochs=int(_config_value(config, R.LOCAL_EPOCHS, cfg.local_epochs)),
        batch_size=int(_config_value(config, R.BATCH_SIZE, cfg.local_batch_size)),
        device=device,
        generator=generator,
        proximal_mu=float(_config_value(config, R.PROXIMAL_MU, 0.0)),
        regularizer=regularizer,
    )
    train_seconds = time.perf_counter() - train_started
    model.cpu()
    arrays = faults.corrupt(fault, R.to_arrays(model), start_arrays, cfg)

    state = context.state.metric_records.get(STATE_KEY, MetricRecord({"rounds-trained": 0, "last-round": 0}))
    context.state[STATE_KEY] = MetricRecord(
        {"rounds-trained": int(state["rounds-trained"]) + 1, "last-round": server_round}
    )
    if cfg.keep_local_model:
        context.state[LOCAL_MODEL_KEY] = R.to_arrays(model)

    labels = torch.bincount(split.y, minlength=load_data(cfg).spec.num_classes)
    metrics = MetricRecord(
        {
            R.NUM_EXAMPLES: len(split),
            R.PARTITION_ID: pid,
            R.LABEL_COUNTS: [int(c) for c in labels.tolist()],
            R.TRAIN_LOSS: float(result["loss"]),
            R.TRAIN_ACCURACY: float(result["accuracy"]),
            R.TRAIN_SECONDS: train_seconds,
            R.CLIENT_SECONDS: time.perf_counter() - started,
            R.WORKER: os.getpid(),
        }
    )
    if regularizer is not None:
        metrics[R.GENERATOR_LOSS] = regularizer.mean_loss
    return Message(RecordDict({R.ARRAYS: arrays, R.METRICS: metrics}), reply_to=msg)


def generator_regularizer(
    msg: Message, config: ConfigRecord, cfg: DictConfig, pid: int, server_round: int, device: torch.device
) -> GeneratorRegularizer | None:
    """FedGen's regulariser when the train instruction carries a generator, else ``None``."""
    if R.GENERATOR not in msg.content.array_records:
        return None
    model_cfg = json.loads(str(config[R.GENERATOR_MODEL]))
    generator = build_from_config(model_cfg, load_data(cfg).spec)
    generator.load_state_dict(R.state_dict(msg.content[R.GENERATOR]))
    return GeneratorRegularizer(
        generator.to(device),
        label_prior=list(config[R.GENERATOR_LABEL_PRIOR]),
        weight=float(config[R.GENERATOR_WEIGHT]),
        kl_weight=float(_config_value(config, R.GENERATOR_KL_WEIGHT, 0.0)),
        batch_size=int(_config_value(config, R.GENERATOR_BATCH_SIZE, 0)) or None,
        seed=_seed(cfg, pid, server_round) ^ 0x5EED,  # its own stream: the data order stays as without it
    )


def handle_evaluate(msg: Message, context: Context, cfg: DictConfig) -> Message:
    """Loss and accuracy of the received model on this client's partition (it holds no test split)."""
    use_threads(cfg)
    pid = partition_of(context, cfg)
    split = client_split(cfg, pid)
    device = resolve_device(cfg.device)
    model, from_server = _start_model(cfg, pid, msg, context)
    if not from_server and R.ARRAYS in msg.content.array_records:
        raise ConfigError(f"client {pid}: the server's model does not fit this client's architecture")
    result = evaluate(model.to(device), split, device, batch_size=int(cfg.eval_batch_size))
    metrics = MetricRecord(
        {
            R.NUM_EXAMPLES: len(split),
            R.PARTITION_ID: pid,
            R.EVAL_LOSS: float(result["loss"]),
            R.EVAL_ACCURACY: float(result["accuracy"]),
        }
    )
    return Message(RecordDict({R.METRICS: metrics}), reply_to=msg)


def handle_query(msg: Message, context: Context, cfg: DictConfig) -> Message:
    """Report this node's partition id (how the server maps random node ids to clients)."""
    pid = partition_of(context, cfg)
    metrics = MetricRecord({R.PARTITION_ID: pid, R.NUM_PARTITIONS: int(cfg.num_clients)})
    return Message(RecordDict({R.METRICS: metrics}), reply_to=msg)
