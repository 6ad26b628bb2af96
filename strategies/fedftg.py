"""Generator-based aggregation: distil the global model from the ensemble of client models.

FedFTG (Zhang et al., CVPR 2022) fine-tunes the FedAvg model on the server with samples from a
conditional generator trained, without data, against the ensemble of the clients' models;
DENSE (Zhang et al., NeurIPS 2022) does the same in one round (``conf/experiment/one_shot.yaml``).

Each round, after the clients reply (:meth:`FedFTG.aggregate`):

1. every client's model is kept, with its label histogram (for ``teacher_memory_rounds`` rounds);
2. the teacher is the ensemble of the kept client models, each class weighted by the clients' shares
   of that class (``class_weighting: label_counts``) or uniformly, optionally with the round's
   FedAvg average as one more member (``global_teacher_weight``, FedDF-style);
3. the synthesizer (a persistent conditional generator by default; DFAD or CMI from
   ``conf/synthesizer/``) learns from that teacher, with labels drawn in proportion to the clients'
   label counts; FedDF (``conf/strategy/feddf.yaml``) serves the run's unlabeled proxy images instead;
4. each architecture group's student starts from that group's FedAvg average (or from its previous
   round's student) and is distilled on generated samples by the one distillation loop
   (:func:`fedkd.datafree.distill`, :func:`fedkd.strategies.group_student.distil_group`); it becomes
   the group's global model -- unless the ``safeguard`` finds, on generated samples, that the
   average already predicts the teacher, or (``keep_best_on_validation``, FedDF's early stopping)
   an earlier state does better on the server's labelled validation split.

Every ``diagnostics_every`` rounds the server also reports how good the teacher is as the student
uses it and whether distilling helped (:mod:`fedkd.datafree.teacher_metrics`,
:mod:`fedkd.strategies.server_checks`); its seconds are split by job in every round.

Clients may train different architectures (``client_models`` in the sim config): the global
ArrayRecord then holds every group's model under its group key (:mod:`fedkd.federated.records`)
and each client takes back the model of its own architecture.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal

import numpy as np
import torch
from flwr.app import ArrayRecord, MetricRecord

from fedkd.datafree import EnsembleTeacher, Synthesizer
from fedkd.datafree.student_terms import StudentTerm, check_student_terms
from fedkd.datafree.synthesizers.real import real_images_for
from fedkd.datafree.teacher import WEIGHTINGS
from fedkd.datafree.teacher_metrics import boosted_accuracy, teacher_accuracies
from fedkd.errors import ConfigError
from fedkd.federated import records as R
from fedkd.federated.data import PROXY_REMEDY, VALIDATION_REMEDY
from fedkd.report.samples import by_class
from fedkd.strategies.client_memory import ClientMemory, RememberedUpdate
from fedkd.strategies.fedavg import ClientUpdate, FedAvg, ServerRun
from fedkd.strategies.group_student import distil_group
from fedkd.strategies.server_checks import probe_split
from fedkd.strategies.server_teacher import CLASS_WEIGHTINGS, ensemble_teacher
from fedkd.training.optimizers import optimizer_factory
from fedkd.utils.option_schema import checked
from fedkd.utils.option_types import Forward, NonNegativeInt, PositiveInt, UnitFloat
from fedkd.utils.timing import Laps

log = logging.getLogger("fedkd.sim")

STUDENT_INITS = ("average", "previous", "scratch")


class FedFTG(FedAvg):
    """FedAvg per architecture group, then server-side data-free distillation from all clients.

    Parameters beyond :class:`fedkd.strategies.fedavg.FedAvg`:
        synthesizer: ``synthesizer(spec, device) -> Synthesizer`` (a Hydra partial from
            ``conf/synthesizer/``); built once, so its generator persists across rounds. Its
            ``student`` node is its :attr:`~fedkd.datafree.Synthesizer.recipe`: the recipe the
            server's student is distilled with.
        optimizer: ``optimizer(params) -> Optimizer`` for the student (fresh each round).
        iterations_per_round: distillation iterations per round (each: the synthesizer's generator step(s)
            then ``strategy.synthesizer.student.steps`` student steps) -- the server's budget.
        student_batch_size: samples per student step.
        class_weighting: ``"label_counts"`` (FedFTG's class-level weights) or ``"uniform"``.
        ensemble_weighting: how the class-level weights combine the clients' logits
            (:class:`~fedkd.datafree.EnsembleTeacher`): ``"label"`` weights each client's whole
            prediction by its share of the label the sample was generated for (FedFTG's
            class-level ensemble); ``"logit"`` takes each class's logit from the clients holding
            that class.
        student_init: ``"average"`` (fine-tune the round's FedAvg model), ``"previous"``
            (continue from the previous round's student; the average in round 1) or ``"scratch"``
            (the run's initial model, as DENSE trains its one-shot student).
        batched_ensemble: ``"auto"`` evaluates same-architecture clients in one vmapped call on
            CUDA and loops over them on the CPU (faster there); ``True``/``False`` force either.
        image_every: log a grid of generated samples every this many rounds (0: never).
        freeze_bn_stats: keep the student's BatchNorm statistics (from the clients' real data)
            while it is fine-tuned on synthetic samples.
        warmup_rounds: rounds in which only the generator learns (``distill(train_student=False)``;
            the global model is the plain average): a freshly initialised generator's samples pull
            a student away from the data, a trained one helps
            (see docs/design_notes.md#fedftg-warmup-rounds).
        global_teacher_weight: share of every class the round's FedAvg average (per group) takes in
            the teacher (FedDF-style); 0 leaves the teacher to the clients.
        teacher_memory_rounds: the teacher holds each client's latest model from this many rounds
            (:class:`~fedkd.strategies.client_memory.ClientMemory`): with partial participation,
            more than the round's sample; 1 (the paper's FedFTG): only the round's clients. With
            every client in every round both are the same.
        teacher_members_per_class: ``None`` (every remembered client), or k: for each class only the
            k remembered clients with the most samples of it join the teacher, weighted for that
            class only (:func:`~fedkd.strategies.server_teacher.select_members`); clients chosen
            for no class are not loaded. The label-sparse teacher then runs at most k members per
            sample, however many clients the memory holds, and loads at most k x classes models
            (measured: benchmarks/server_teacher_cost.py and docs/federated.md#the-servers-cost).
        diagnostics_every: compute the teacher and student figures
            (:mod:`fedkd.datafree.teacher_metrics`) in round 1 and every this many rounds (0: never);
            they only report, on a fixed subsample of the evaluation split.
        diagnostics_samples: that subsample's size (0: the whole split).
        safeguard: ``None`` (off), or a share in [0, 1]: after distilling, keep the round's average
            instead of the student when, on a fresh batch of generated samples (never real data),
            the average already predicts the teacher's label on at least this share -- the
            teacher has little left to teach it, and fine-tuning towards it measured as a loss
            (docs/federated.md#when-distillation-helps).
        keep_best_on_validation: evaluate the student on the server's labelled validation split
            (``validation_size``) after every iteration and keep the best, the starting model included
            (:mod:`~fedkd.strategies.best_on_validation`: FedDF's early stopping; reads labels).
    """

    #: Clients may train different architectures: weights are averaged within groups only.
    averages_weights = False

    @checked("strategy")  # types and ranges from this signature, before anything is built
    def __init__(
        self,
        *,
        synthesizer: Callable[..., Synthesizer],
        optimizer: Callable[..., torch.optim.Optimizer],
        iterations_per_round: PositiveInt = 5,
        student_batch_size: PositiveInt = 64,
        class_weighting: Literal[CLASS_WEIGHTINGS] = "label_counts",
        ensemble_weighting: Literal[WEIGHTINGS] = "label",
        student_init: Literal[STUDENT_INITS] = "average",
        batched_ensemble: bool | Literal["auto"] = "auto",
        image_every: NonNegativeInt = 5,
        freeze_bn_stats: bool = True,
        warmup_rounds: NonNegativeInt = 1,
        global_teacher_weight: UnitFloat = 0.0,
        diagnostics_every: NonNegativeInt = 5,
        diagnostics_samples: NonNegativeInt = 1000,
        safeguard: UnitFloat | None = None,
        teacher_memory_rounds: PositiveInt | None = 10,
        teacher_members_per_class: PositiveInt | None = None,
        student_terms: Mapping[str, StudentTerm] | None = None,
        keep_best_on_validation: bool = False,
        **fedavg: Annotated[Any, Forward()],
    ) -> None:
        super().__init__(**fedavg)
        self.make_synthesizer = synthesizer
        self.make_optimizer = optimizer_factory(optimizer, "strategy.optimizer")
        self.iterations_per_round = iterations_per_round
        self.student_batch_size = student_batch_size
        self.class_weighting = class_weighting
        self.ensemble_weighting = ensemble_weighting
        self.student_init = student_init
        self.batched_ensemble = batched_ensemble
        self.image_every = image_every
        self.freeze_bn_stats = freeze_bn_stats
        self.warmup_rounds = warmup_rounds
        self.global_teacher_weight = global_teacher_weight
        self.diagnostics_every = diagnostics_every
        self.diagnostics_samples = diagnostics_samples
        self.safeguard = safeguard
        self.memory = ClientMemory(teacher_memory_rounds)
        self.teacher_members_per_class = teacher_members_per_class
        self.student_terms = check_student_terms(student_terms, "strategy.student_terms")
        self.keep_best_on_validation = keep_best_on_validation
        self.synthesizer: Synthesizer | None = None
        self.students: dict[str, ArrayRecord] = {}  # group key -> last distilled model

    def bind(self, run: ServerRun) -> None:
        """Build the persistent synthesizer for the run's data spec and device (and, for one that
        distils on real images, FedDF's ``real_kd``, the run's unlabeled proxy images)."""
        super().bind(run)
        real = real_images_for(self.make_synthesizer, run.proxy, "strategy.synthesizer", PROXY_REMEDY)
        self.synthesizer = self.make_synthesizer(spec=run.spec, device=run.device, **real)
        if not self.synthesizer.keeps_learning():
            raise ConfigError(
                "strategy.synthesizer stops learning after round 1 while the server's teacher changes every round; "
                f"set {self.synthesizer.keep_learning_override('strategy.synthesizer')}"
            )
        if self.keep_best_on_validation and run.validation is None:
            raise ConfigError(f"strategy.keep_best_on_validation=true and the server has no validation split; "
                              f"{VALIDATION_REMEDY} or strategy.keep_best_on_validation=false")
        self.probe = probe_split(run.test, self.diagnostics_samples, self.seed)  # the same images every round

    @property
    def uses_validation(self) -> bool:
        return self.keep_best_on_validation

    # ------------------------------------------------------------------ one round
    def aggregate(self, server_round: int, updates: list[ClientUpdate]) -> tuple[ArrayRecord, MetricRecord]:
        """FedAvg within each architecture group, then distil every group's model from all clients.

        The server's seconds go to the metrics file split by job (``server_seconds_<part>``, parts
        summing to ``server_seconds``): ``average``, ``ensemble`` (loading the clients' models),
        ``diagnostics`` (the teacher and student figures), ``synthesis`` (the synthesizer's steps),
        ``distillation`` (the student's steps), ``images`` and ``other``.
        """
        run = self._require_run()
        laps = Laps()
        contents = [u.content for u in updates]
        client_metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key)

        groups: dict[str, list[ClientUpdate]] = {}
        for update in updates:
            groups.setdefault(run.group_of(update.partition_id), []).append(update)
        with laps("average"):  # FedAvg within each group, with the robust options
            averages = {key: self.average(members) for key, members in groups.items()}
        with laps("ensemble"):
            members = self.memory.remember(server_round, updates)
            teacher = self.ensemble(members, averages)
            self.synthesizer.set_label_prior(np.stack([u.label_counts for u in members]).sum(0))

        probe = self.probe if self._diagnose(server_round) else None
        # remembered clients, and the models the teacher runs (fewer under teacher_members_per_class)
        server: dict[str, float] = {"teacher_members": float(len(members)),
                                    "teacher_models": float(teacher.num_members)}
        if probe is not None:
            with laps("diagnostics"):
                server.update(teacher_accuracies(teacher, probe, run.device))

        global_models: dict[str, ArrayRecord] = {}
        for key in groups:
            prefix = "" if len(groups) == 1 else f"{key}/"
            global_models[key] = self.students[key] = distil_group(
                self, server_round, key, averages[key], teacher, probe, laps, server, prefix
            )

        if probe is not None and teacher.member_weights is not None:  # Co-Boosting re-weighted the members
            with laps("diagnostics"):
                server["teacher_boosted_accuracy"] = boosted_accuracy(teacher, probe, run.device)
        if self.image_every and (server_round == 1 or server_round % self.image_every == 0):
            with laps("images"):
                samples, names = by_class(*self.synthesizer.labelled_preview(64), run.spec)  # rows by class
                run.logger.images("server/samples", samples, server_round, run.spec.mean, run.spec.std, labels=names)
        parts = laps.split()
        server.update({f"server_seconds_{name}": seconds for name, seconds in parts.items() if name != "total"})
        server["server_seconds"] = parts["total"]
        self.record_server_metrics(server)
        if len(run.model_configs) == 1:
            return next(iter(global_models.values())), client_metrics
        # Groups no sampled client trained this round keep their previous global model.
        for key in run.model_configs:
            global_models.setdefault(key, self.students.get(key) or run.initial_group_arrays(key))
        return R.pack_groups(global_models), client_metrics

    def _diagnose(self, server_round: int) -> bool:
        return bool(self.diagnostics_every) and (server_round == 1 or server_round % self.diagnostics_every == 0)

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """FedAvg's state plus the persistent synthesizer's (generator, its optimiser, and a pool
        or memory bank when it keeps one) and the last students."""
        self._require_run()
        return {
            **super().state_dict(),
            "synthesizer": self.synthesizer.state_dict(),
            "student_terms": {name: term.state_dict() for name, term in self.student_terms.items()},
            "students": {key: R.state_dict(arrays) for key, arrays in self.students.items()},
            "client_memory": self.memory.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (after :meth:`bind`, before the first resumed round)."""
        super().load_state_dict(state)
        self._require_run()
        self.synthesizer.load_state_dict(state["synthesizer"])
        for name, term in self.student_terms.items():
            term.load_state_dict(state.get("student_terms", {}).get(name, {}))
        self.students = {key: ArrayRecord(sd) for key, sd in state.get("students", {}).items()}
        self.memory.load_state_dict(state.get("client_memory", {}))

    # ------------------------------------------------------------------ pieces
    def ensemble(
        self, updates: Sequence[ClientUpdate | RememberedUpdate], averages: Mapping[str, ArrayRecord] | None = None
    ) -> EnsembleTeacher:
        """The round's teacher (:func:`fedkd.strategies.server_teacher.ensemble_teacher`) under this
        strategy's weighting options."""
        return ensemble_teacher(
            self._require_run(), updates, averages, class_weighting=self.class_weighting,
            global_teacher_weight=self.global_teacher_weight, batched=self.batched_ensemble,
            weighting=self.ensemble_weighting, members_per_class=self.teacher_members_per_class,
        )

    def _require_run(self) -> ServerRun:
        if self.server_run is None or self.synthesizer is None:
            raise RuntimeError("FedFTG.bind(run) must be called before the first round (run_server does this)")
        return self.server_run
