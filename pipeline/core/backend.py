"""Importing Keras and TensorFlow the right way: quietly, lazily, with the chosen backend."""
from __future__ import annotations

import os

BACKENDS = ("tensorflow", "jax", "torch")


def quiet_tensorflow_logs() -> None:
    # TensorFlow's C++ banner lines (oneDNN, CUDA probing) are noise for a CLI user.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def default_backend() -> str:
    """$KERAS_BACKEND, else tensorflow where it is installed, else torch, else jax (an
    environment without TensorFlow: ``keras-edge-pipeline[deploy]``)."""
    import importlib.util

    chosen = os.environ.get("KERAS_BACKEND")
    if chosen:
        return chosen
    for name, module in (("tensorflow", "tensorflow"), ("torch", "torch"), ("jax", "jax")):
        try:
            if importlib.util.find_spec(module) is not None:
                return name
        except (ImportError, ValueError):  # a module set to None (kept out of this process)
            continue
    return "tensorflow"


def tensorflow_available() -> bool:
    """Whether this process may use TensorFlow (installed, and not kept out of a jax or torch
    process)."""
    import importlib.util
    import sys

    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"] is not None
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):
        return False


def require_tensorflow(what: str) -> None:
    """One line (``UsageError``) where ``what`` needs TensorFlow and this process has none."""
    if not tensorflow_available():
        from pipeline.core.errors import UsageError

        raise UsageError(f"{what} needs TensorFlow, which this environment lacks (or this process keeps "
                         f"out): install keras-edge-pipeline[train]")


def import_keras(backend: str | None = None):
    """Import Keras with ``backend`` (default: ``default_backend()``).

    The backend is fixed at Keras' first import, so this must run before anything imports it.
    """
    import sys

    from pipeline.core.errors import UsageError, unknown_name

    wanted = backend or default_backend()
    if wanted not in BACKENDS:
        raise unknown_name("backend", wanted, BACKENDS)
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != wanted:
            raise UsageError(f"Keras was already imported with the {keras.backend.backend()} "
                             f"backend; cannot switch to {wanted} in the same process")
        return keras
    import importlib.util

    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[wanted]
    if not (tensorflow_available() if wanted == "tensorflow" else importlib.util.find_spec(module)):
        source = "$KERAS_BACKEND" if not backend and os.environ.get("KERAS_BACKEND") else "the backend"
        raise UsageError(f"{source} is {wanted}, which is not installed here: install it, or choose one "
                         f"that is (--backend / KERAS_BACKEND)")
    os.environ["KERAS_BACKEND"] = wanted
    quiet_tensorflow_logs()
    if wanted != "tensorflow":
        _keep_tensorflow_out()
    from edge_runtime.quiet import quiet_native

    with quiet_native():  # absl's and CUDA probing's lines on fd 2
        import keras

        if wanted == "tensorflow":
            import tensorflow as tf

            # Same seed and inputs, same weights and artifacts, in every process of a run.
            tf.config.experimental.enable_op_determinism()
    return keras


def _keep_tensorflow_out() -> None:
    """Make TensorFlow unimportable in this (jax or torch) training process.

    Keras imports TensorFlow whenever it is installed (to seed it, to recognise its tensors
    when saving); nothing here needs it, and a GPU box's TensorFlow may not match its CUDA.
    A ``None`` in ``sys.modules`` makes ``import`` raise ImportError (Keras then treats
    TensorFlow as absent) and ``importlib.util.find_spec`` answer None (torch's probe).
    """
    import sys

    for name in ("tensorflow", "tf_keras", "tensorboard"):
        if name not in sys.modules:  # already imported: too late, Keras uses what is there
            sys.modules[name] = None


def seed_everything(seed: int) -> None:
    """``keras.utils.set_random_seed`` without its side effect of importing TensorFlow.

    Keras seeds TensorFlow whenever it is installed, which under jax or torch would pull
    TensorFlow into a training process that does not need it.
    """
    import keras

    if keras.backend.backend() == "tensorflow":
        keras.utils.set_random_seed(seed)
        return
    import random

    import numpy as np

    from pipeline.compat.keras import seed_keras_without_tensorflow

    seed_keras_without_tensorflow(seed)
    random.seed(seed)
    np.random.seed(seed)
    if keras.backend.backend() == "torch":
        import torch

        torch.manual_seed(seed)


def run_under_backend(backend: str, module: str, args: list[str], run_dir, what: str) -> str:
    """``python -m module *args`` in a child process under ``backend``, working in ``run_dir``
    under this process's lock; its stdout, or one PipelineError naming ``what`` with the child's
    last error line and exit code."""
    import subprocess
    import sys

    from pipeline.core import rundir
    from pipeline.core.errors import PipelineError

    env = {**os.environ, "KERAS_BACKEND": backend, **rundir.handed_lock_env(run_dir)}
    done = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        message = lines[-1].removeprefix("error: ") if lines else f"exit code {done.returncode}"
        error = PipelineError(f"{what} under {backend} failed: {message}")
        error.exit_code = done.returncode if 0 < done.returncode < 64 else 1
        raise error
    return done.stdout
