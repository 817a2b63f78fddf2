"""Keras model definitions and nothing else. Importing this package fills the registry."""
from models import autoencoder, convnets, mlperf_tiny, recurrent  # noqa: F401  (registration)
from models.registry import ModelSpec, UnknownModelError, build_model, get_model_spec, model_names, register_model

__all__ = ["ModelSpec", "UnknownModelError", "build_model", "get_model_spec", "model_names", "register_model"]
