"""One run of a Hydra entry point with one composition of its config.

``hydra.main`` composes the config twice for a single run (once to learn the run mode, once to
run) and writes ``.hydra/*.yaml`` and ``<job>.log`` into the run folder right after composing, so
no check of fedkd's could see the composed config before Hydra writes. For a command line of
overrides only (:func:`single_run`), :func:`hydra_app`, :func:`compose` and :func:`launch_job` do
what ``hydra.main`` does for a single run -- the same config search path, job name, logging, run
folder and ``.hydra`` files, the same report of a failed job -- with one composition, and the
caller checks the composed config (:func:`fedkd.cli.guard.preflight`) between composing and
running: the checks see exactly the config the job gets. Command lines with Hydra's flags
(``--help``, ``--cfg``, ``-m``...) stay with ``hydra.main``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from hydra import version
from hydra._internal.callbacks import Callbacks
from hydra._internal.hydra import Hydra
from hydra._internal.utils import detect_calling_file_or_module_from_task_function, detect_task_name, run_and_report
from hydra.core.global_hydra import GlobalHydra
from hydra.core.utils import run_job
from hydra.types import HydraContext, RunMode
from omegaconf import DictConfig

#: The override ``hydra.main`` adds to a single run's command line when the config sets no mode.
RUN_MODE = "hydra.mode=RUN"


def single_run(argv: Sequence[str]) -> bool:
    """Whether ``argv`` is a single run these functions handle: overrides only, no Hydra flag
    (``--help``, ``--cfg``, ``-m``...) and no ``hydra.mode`` of its own."""
    return not any(arg.startswith("-") or arg.lstrip("+~").startswith("hydra.mode") for arg in argv)


@contextmanager
def hydra_app(config_dir: str, task_function: Callable[..., Any]) -> Iterator[Hydra]:
    """Hydra's app on ``config_dir``, as ``hydra.main`` makes it for ``task_function`` (whose module
    names the job: ``hydra.job.name``, the log file); cleared on exit."""
    version.setbase("1.3")
    calling_file, calling_module = detect_calling_file_or_module_from_task_function(task_function)
    if GlobalHydra.instance().is_initialized():  # left by an in-process compose (tests, fedkd-compare)
        GlobalHydra.instance().clear()
    app = run_and_report(lambda: Hydra.create_main_hydra_file_or_module(
        calling_file, calling_module, config_dir, detect_task_name(calling_file, calling_module)))
    try:
        yield app
    finally:
        GlobalHydra.instance().clear()


def compose(app: Hydra, config_name: str, overrides: Sequence[str]) -> DictConfig:
    """``conf/<config_name>.yaml`` with ``overrides`` and Hydra's own node, for a single run: the
    only composition of the command line. Raises Hydra's and OmegaConf's errors."""
    return app.compose_config(config_name, [*overrides, RUN_MODE], run_mode=RunMode.RUN, with_log_configuration=True)


def launch_job(app: Hydra, config_name: str, cfg: DictConfig, job: Callable[[DictConfig], Any]) -> Any:
    """Run ``job`` on the composed ``cfg`` as ``hydra.main`` does after composing: callbacks, the
    run folder, ``.hydra/``, logging, and a failed job reported as Hydra reports it (exit code 1)."""
    return run_and_report(lambda: _run(app, config_name, cfg, job))


def _run(app: Hydra, config_name: str, cfg: DictConfig, job: Callable[[DictConfig], Any]) -> Any:
    callbacks = Callbacks(cfg)
    callbacks.on_run_start(config=cfg, config_name=config_name)
    ret = run_job(
        hydra_context=HydraContext(config_loader=app.config_loader, callbacks=callbacks),
        task_function=job,
        config=cfg,
        job_dir_key="hydra.run.dir",
        job_subdir_key=None,
        configure_logging=True,
    )
    callbacks.on_run_end(config=cfg, config_name=config_name, job_return=ret)
    return ret.return_value  # raises the job's exception, as Hydra.run does
