"""Model registry: classifiers (and, from the data-free pipeline, generators) built by name."""

from fedkd.models import lenet, resnet  # noqa: F401  (registers the models)
from fedkd.models.base import Classifier, batchnorm_layers, count_parameters
from fedkd.models.registry import build_from_config, build_model, list_models, model_config, model_label, register_model

__all__ = [
    "Classifier", "batchnorm_layers", "build_from_config", "build_model", "count_parameters", "list_models",
    "model_config", "model_label", "register_model",
]
