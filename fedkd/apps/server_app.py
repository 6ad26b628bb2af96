"""The fedkd ``ServerApp``: global model, strategy from the config, central evaluation, summary.

``app`` (what ``flwr run`` loads) composes the ``fedkd-sim`` config from the run config
(``overrides``) and writes to the run config's ``out-dir``; :func:`make_server_app` builds the
same app around a config already composed (``fedkd-sim``, in-process simulation).
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from hydra.utils import instantiate
from omegaconf import DictConfig

from fedkd.apps.federation import federation_config
from fedkd.config import check_sim
from fedkd.errors import ConfigError
from fedkd.federated import records as R
from fedkd.federated.config import RUN_CONFIG_OUT_DIR
from fedkd.federated.data import (
    client_model_configs,
    evaluation_split,
    load_data,
    partition_label_counts,
    server_proxy,
    server_validation,
)
from fedkd.federated.metrics import RoundRecorder
from fedkd.federated.resume import ResumeState, ServerCheckpointer
from fedkd.federated.sanity import check_run_inputs
from fedkd.federated.server_run import ServerRun
from fedkd.federated.stoppable_grid import SERVER_RUNNING, StoppableGrid
from fedkd.models import build_from_config, count_parameters, model_config
from fedkd.models.checkpoint import model_meta
from fedkd.report.plots import write_partition_plot
from fedkd.training import evaluate
from fedkd.utils.checkpoint import save_model
from fedkd.utils.interrupt import Interrupted
from fedkd.utils.run_context import RunContext, quiet_libraries

log = logging.getLogger("fedkd.sim")

CHECKPOINT = "model.pt"

# Ray's notice (at ray.init, in the process that runs this ServerApp) about a future default for
# CPU-only workers; the current behaviour (no GPU for num_gpus=0 clients) is the one we want.
warnings.filterwarnings("ignore", message=".*RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO.*")


class CentralEvaluator:
    """``evaluate_fn`` for strategies: loads the global arrays into a model, evaluates on the test set.

    Returns a MetricRecord with ``test_accuracy`` and ``test_loss`` (``holdout_*`` when the run
    evaluates on a holdout, ``evaluate_on=holdout``). With mixed architectures (a packed record)
    every group's model is evaluated: ``test_accuracy`` is their mean and ``<group>/test_accuracy``
    each one's.
    """

    def __init__(self, run: ServerRun, batch_size: int) -> None:
        self.server_run = run
        self.models = {key: build_from_config(c, run.spec).to(run.device) for key, c in run.model_configs.items()}
        self.batch_size = batch_size

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        results = {}
        for key, model in self.models.items():
            own = R.unpack_group(arrays, key) if self.server_run.mixed else arrays
            model.load_state_dict(R.state_dict(own))
            results[key] = evaluate(model, self.server_run.test, self.server_run.device, self.batch_size)
        name = self.server_run.eval_name
        out = MetricRecord({
            f"{name}_accuracy": sum(r["accuracy"] for r in results.values()) / len(results),
            f"{name}_loss": sum(r["loss"] for r in results.values()) / len(results),
        })
        if self.server_run.mixed:
            for key, r in results.items():
                out[f"{key}/{name}_accuracy"] = r["accuracy"]
        return out


def train_config(cfg: DictConfig) -> ConfigRecord:
    """What every train instruction tells clients (strategies may change it per round)."""
    return ConfigRecord(
        {
            R.LOCAL_EPOCHS: int(cfg.local_epochs),
            R.BATCH_SIZE: int(cfg.local_batch_size),
            R.LEARNING_RATE: float(cfg.optim.lr),
        }
    )


def check_models(cfg: DictConfig, strategy: Any) -> None:
    """Weight-averaging strategies need every client to train ``cfg.model``'s architecture."""
    if not getattr(strategy, "averages_weights", True):  # see fedkd.strategies.fedavg.FedAvg.averages_weights
        return
    want = model_config(cfg.model)
    for pid, have in enumerate(client_model_configs(cfg)):
        if have != want:
            raise ConfigError(
                f"{strategy.method} averages weights, but client {pid} trains {have} instead of {want}; "
                "set client_models=null or use a strategy that supports mixed architectures"
            )


def run_server(grid: Grid, cfg: DictConfig, out_dir: str | Path) -> dict[str, Any]:
    """Run ``cfg.rounds`` federated rounds with ``cfg.strategy``; return (and write) the summary.

    Writes to ``out_dir``: ``partition.png``, ``metrics.jsonl`` (one row per round), ``tb/``, ``model.pt`` (the
    final global model), ``summary.json``, ``resolved_config.yaml``.
    """
    started = time.perf_counter()
    quiet_flower()
    _ensure_console()
    check_sim(cfg)
    resume = ResumeState.load(cfg) if cfg.get("resume") else None
    if resume is not None:  # continue in the run's own folder, its metrics as at the checkpoint
        out_dir = resume.folder
        resume.rewrite_metrics()
    check_run_inputs(cfg)  # before the run folder is written: data that cannot teach, a model that does not fit it
    ctx = RunContext.create(cfg, out_dir)
    with ctx.logger:
        data = load_data(cfg)
        # partition.png: label counts per client, before round 1
        write_partition_plot(partition_label_counts(cfg), cfg, ctx.out_dir, data.spec.class_names)
        # Initial models are built first, with the RNG seeded by RunContext: same start every run.
        eval_name, eval_split = evaluation_split(cfg)
        validation = server_validation(cfg)  # labelled: for a strategy that selects its student on it
        server_run = ServerRun.create(
            data.spec, eval_split.to(ctx.device), ctx.device, ctx.logger, client_model_configs(cfg), eval_name,
            proxy=server_proxy(cfg),  # images only, unless the reference's synthesizer asks for labels
            validation=None if validation is None else validation.to(ctx.device),
        )
        evaluator = CentralEvaluator(server_run, int(cfg.eval_batch_size))
        recorder = RoundRecorder(ctx.logger, int(cfg.rounds), eval_name=eval_name)
        strategy = instantiate(
            cfg.strategy,
            num_clients=int(cfg.num_clients),
            seed=int(cfg.seed),
            evaluate_fn=evaluator,
            recorder=recorder,
            node_timeout=float(cfg.node_timeout),
        )
        check_models(cfg, strategy)
        strategy.bind(server_run)
        strategy.checkpointer = ServerCheckpointer(ctx.out_dir, cfg, strategy, recorder)
        initial, first_round = server_run.initial_arrays(), 1
        if resume is not None:
            resume.restore(strategy, recorder)  # last: the RNG states as they were after that round
            initial, first_round = resume.arrays, resume.round + 1
            log.info("resuming %s after round %d of %d", ctx.out_dir, resume.round, cfg.rounds)
        log.info(
            "%s: %d clients, %d rounds, %s (%d parameters) on %s; output %s",
            strategy.method, cfg.num_clients, cfg.rounds,
            " + ".join(str(c.get("name") or c.get("_target_")) for c in server_run.model_configs.values()),
            sum(count_parameters(m) for m in evaluator.models.values()),
            data.spec.name, ctx.out_dir,
        )
        result = strategy.start(
            grid, initial, num_rounds=int(cfg.rounds), timeout=float(cfg.round_timeout),
            train_config=train_config(cfg), first_round=first_round,
        )
        checkpoint = save_global_models(server_run, result.arrays, ctx.out_dir, rounds=int(cfg.rounds),
                                        strategy=strategy.method)
        summary = recorder.summary(
            total_seconds=time.perf_counter() - started, checkpoint=str(checkpoint),
            strategy=strategy.method, num_clients=int(cfg.num_clients),
        )
    log.info(summary_line(summary))
    return summary


def save_global_models(run: ServerRun, arrays: ArrayRecord, out_dir: Path, **meta: Any) -> Path:
    """Save the final global model to ``model.pt``. With mixed architectures every group's model
    also goes to ``model-<group>.pt`` (``model.pt`` is then the first group's)."""
    for index, (key, model_cfg) in enumerate(run.model_configs.items()):
        model = build_from_config(model_cfg, run.spec)
        model.load_state_dict(R.state_dict(R.unpack_group(arrays, key) if run.mixed else arrays))
        names = ([CHECKPOINT] if index == 0 else []) + ([f"model-{key}.pt"] if run.mixed else [])
        for name in names:
            save_model(out_dir / name, model, **model_meta(model_cfg, run.spec), **meta)
    return out_dir / CHECKPOINT


def summary_line(summary: Mapping[str, Any]) -> str:
    name = "holdout" if "final_holdout_accuracy" in summary else "test"
    if summary.get(f"final_{name}_accuracy") is None:
        return (
            f"{summary.get('rounds_completed', 0)} rounds completed, no central evaluation; "
            f"checkpoint {summary.get('checkpoint')}"
        )
    return (
        f"final {name} accuracy {summary[f'final_{name}_accuracy']:.4f} after {summary['rounds_completed']} rounds; "
        f"best {summary[f'best_{name}_accuracy']:.4f} at round {summary['best_round']}; "
        f"total {summary['total_seconds']:.1f}s ({summary['mean_round_seconds']:.1f}s per round); "
        f"checkpoint {summary['checkpoint']}"
    )


def out_dir_from_run_config(run_config: Mapping[str, Any]) -> Path:
    """``out-dir`` from the run config, else ``outputs/sim/<time>`` under the server's working folder."""
    out = str(run_config.get(RUN_CONFIG_OUT_DIR, "") or "")
    if not out:
        out = f"outputs/sim/{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    return Path(out).expanduser().resolve()


def quiet_flower() -> None:
    """Flower, Ray and the SQL migrations of Flower's link state log at WARNING and above only."""
    quiet_libraries()
    for name in ("alembic", "sqlalchemy", "httpx", "uvicorn"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _ensure_console() -> None:
    """Give fedkd's progress lines a console when no handler is set up (``flwr run`` processes)."""
    fedkd = logging.getLogger("fedkd")
    if not logging.getLogger().handlers and not fedkd.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("[fedkd] %(message)s"))
        fedkd.addHandler(handler)
        fedkd.setLevel(logging.INFO)


def make_server_app(
    cfg: DictConfig | None = None, out_dir: str | Path | None = None, result: dict[str, Any] | None = None
) -> ServerApp:
    """The ServerApp; with ``cfg``/``out_dir`` it uses those, else the run config's ``overrides``/``out-dir``.

    ``result``, when given, receives the run summary (in-process simulation reads it there).
    """
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        SERVER_RUNNING.set()
        try:
            grid = StoppableGrid(grid)  # Ctrl-C reaches this thread through it (fedkd.utils.interrupt)
            run_cfg = cfg if cfg is not None else federation_config(grid, context.run_config)
            out = Path(out_dir) if out_dir is not None else out_dir_from_run_config(context.run_config)
            summary = run_server(grid, run_cfg, out)
            if result is not None:
                result.update(summary)
        except Interrupted:
            return  # Ctrl-C: the last complete round's checkpoint stands; the entry point says so
        finally:
            SERVER_RUNNING.clear()

    return server


app = make_server_app()
