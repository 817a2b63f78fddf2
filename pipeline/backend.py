"""Importing Keras and TensorFlow the right way: quietly, lazily, with the chosen backend."""
from __future__ import annotations

import os

BACKENDS = ("tensorflow", "jax", "torch")


def quiet_tensorflow_logs() -> None:
    # TensorFlow's C++ banner lines (oneDNN, CUDA probing) are noise for a CLI user.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def import_keras(backend: str | None = None):
    """Import Keras with ``backend`` (default: $KERAS_BACKEND or tensorflow).

    The backend is fixed at Keras' first import, so this must run before anything imports it.
    """
    import sys

    from pipeline.errors import UsageError, unknown_name

    wanted = backend or os.environ.get("KERAS_BACKEND") or "tensorflow"
    if wanted not in BACKENDS:
        raise unknown_name("backend", wanted, BACKENDS)
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != wanted:
            raise UsageError(f"Keras was already imported with the {keras.backend.backend()} "
                             f"backend; cannot switch to {wanted} in the same process")
        return keras
    os.environ["KERAS_BACKEND"] = wanted
    quiet_tensorflow_logs()
    import keras

    if wanted == "tensorflow":
        import tensorflow as tf

        # Same seed and inputs, same weights and artifacts, in every process of a run.
        tf.config.experimental.enable_op_determinism()
    return keras
