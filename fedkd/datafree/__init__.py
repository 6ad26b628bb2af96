"""Data-free knowledge distillation: generators, losses, BN hooks, teachers, synthesizers, distiller.

The same pipeline serves the centralized mode (one teacher, ``fedkd-distill``) and the federated
server (an ensemble of client models as the teacher)::

    from fedkd.datafree import DFADSynthesizer, EnsembleTeacher, StudentRecipe, distill
    teacher = EnsembleTeacher(client_models, class_weights_from_counts(label_counts))
    synth = DFADSynthesizer(spec, device, student=StudentRecipe(steps=5, loss="l1"))
    distill(student, teacher, synth, optimizer, iterations_per_epoch=50, recipe=synth.recipe)
"""

from fedkd.datafree import generators  # noqa: F401  (registers the generators in the model registry)
from fedkd.datafree.bn_hooks import BNStatHooks
from fedkd.datafree.class_weights import class_weights_from_counts, uniform_class_weights
from fedkd.datafree.distiller import distill
from fedkd.datafree.generators import ConditionalGenerator, FeatureGenerator, ImageGenerator, NoisyLayerGenerator
from fedkd.datafree.recipe import StudentRecipe
from fedkd.datafree.student_terms import ActivationRegularizer, AttentionTransfer, VirtualInterpolation
from fedkd.datafree.synthesizers import (
    CMISynthesizer,
    ConditionalSynthesizer,
    DAFLSynthesizer,
    DeepInversionSynthesizer,
    DFADSynthesizer,
    DFRDSynthesizer,
    EnsembleBoosting,
    FastMetaSynthesizer,
    NoisyLayerSynthesizer,
    PseudoReplaySynthesizer,
    RDSKDSynthesizer,
    RealDataSource,
    Synthesizer,
    ZSKTSynthesizer,
    build_generator,
)
from fedkd.datafree.teacher import EnsembleTeacher, Teacher, as_teacher

__all__ = [
    "ActivationRegularizer",
    "AttentionTransfer",
    "BNStatHooks",
    "CMISynthesizer",
    "ConditionalGenerator",
    "ConditionalSynthesizer",
    "DAFLSynthesizer",
    "DeepInversionSynthesizer",
    "DFADSynthesizer",
    "DFRDSynthesizer",
    "EnsembleBoosting",
    "FastMetaSynthesizer",
    "EnsembleTeacher",
    "FeatureGenerator",
    "ImageGenerator",
    "NoisyLayerGenerator",
    "NoisyLayerSynthesizer",
    "PseudoReplaySynthesizer",
    "RDSKDSynthesizer",
    "RealDataSource",
    "StudentRecipe",
    "Synthesizer",
    "Teacher",
    "VirtualInterpolation",
    "ZSKTSynthesizer",
    "as_teacher",
    "build_generator",
    "class_weights_from_counts",
    "distill",
    "uniform_class_weights",
]
