"""Where training runs: the backend's devices, one machine's data-parallel strategy or a
cluster of workers (TF_CONFIG under TensorFlow, KERAS_DISTRIBUTION_* under JAX), which
process is the chief, and each process's shard of the data."""
from __future__ import annotations

import json
import os

import numpy as np

from pipeline.core.errors import UsageError


def import_keras_for(config):
    from pipeline.core.backend import import_keras

    keras = import_keras(config.backend)  # with TensorFlow, also turns on deterministic kernels
    if config.distribute == "multiworker" and keras.backend.backend() == "jax":
        _join_jax_cluster(keras)
    return keras


_joined_jax_cluster = False


def _join_jax_cluster(keras) -> None:
    """``jax.distributed.initialize`` through Keras, once per process and before any JAX call."""
    global _joined_jax_cluster
    if _joined_jax_cluster:
        return
    import jax

    jax_cluster()  # the environment must describe the cluster
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # for CPU-only clusters
    keras.distribution.initialize()  # reads KERAS_DISTRIBUTION_* (README)
    _joined_jax_cluster = True


def is_chief(config) -> bool:
    """False on a worker of a ``--distribute multiworker`` cluster other than the chief
    (the ``chief`` task, or worker 0 when the cluster names none): only the chief writes the run."""
    if config.distribute != "multiworker":
        return True
    if (config.backend or os.environ.get("KERAS_BACKEND")) == "jax":
        return jax_cluster()[1] == 0
    try:
        tf_config = json.loads(os.environ.get("TF_CONFIG", "{}"))
        task, cluster = tf_config.get("task", {}), tf_config.get("cluster", {})
        kind, index = task.get("type", "worker"), int(task.get("index", 0))
    except (ValueError, AttributeError, TypeError):
        raise UsageError("TF_CONFIG is not valid JSON with a 'cluster' and a 'task'") from None
    if kind == "chief":
        return True
    return kind == "worker" and index == 0 and "chief" not in cluster


def strategy_for(distribute: str, keras):
    """A tf.distribute strategy (TensorFlow), or None after setting Keras' own distribution (JAX)."""
    if distribute == "none":
        return None
    if keras.backend.backend() == "jax":
        # Data parallel over every visible accelerator (or the CPU) with Keras' distribution API;
        # over several processes, each feeds its own shard of every batch (see shard).
        keras.distribution.set_distribution(keras.distribution.DataParallel(
            devices=keras.distribution.list_devices(), auto_shard_dataset=False))
        return None
    if keras.backend.backend() == "torch":
        raise UsageError("--distribute with the torch backend is not supported: use jax or tensorflow")
    import tensorflow as tf

    if distribute == "mirrored":
        return tf.distribute.MirroredStrategy()
    if "TF_CONFIG" not in os.environ:
        raise UsageError("--distribute multiworker needs TF_CONFIG describing the cluster "
                         "(see the TensorFlow multi-worker guide)")
    try:
        json.loads(os.environ["TF_CONFIG"])
    except ValueError:
        raise UsageError("TF_CONFIG is not valid JSON") from None
    return _keras3_multiworker_reduce(tf.distribute.MultiWorkerMirroredStrategy())


JAX_CLUSTER_VARIABLES = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES",
                         "KERAS_DISTRIBUTION_PROCESS_ID")


def jax_cluster() -> tuple[int, int]:
    """(process count, this process's id) from Keras' distribution variables."""
    missing = [name for name in JAX_CLUSTER_VARIABLES if not os.environ.get(name)]
    if missing:
        raise UsageError(f"--distribute multiworker under jax needs {', '.join(missing)} "
                         f"(see the README section 'Training on several machines')")
    try:
        count = int(os.environ["KERAS_DISTRIBUTION_NUM_PROCESSES"])
        index = int(os.environ["KERAS_DISTRIBUTION_PROCESS_ID"])
    except ValueError:
        raise UsageError("KERAS_DISTRIBUTION_NUM_PROCESSES and _PROCESS_ID must be integers") from None
    addresses = os.environ["KERAS_DISTRIBUTION_JOB_ADDRESSES"].split(",")
    if not (count >= 1 and 0 <= index < count and len(addresses) in (1, count)):
        raise UsageError(f"inconsistent KERAS_DISTRIBUTION_*: process {index} of {count}, "
                         f"{len(addresses)} job addresses")
    return count, index


def process_local_copy(keras, model, task: str):
    """After multi-process jax training the weights are global arrays (replicated over every
    process); evaluating, checking and saving run on a copy in this process alone."""
    weights = model.get_weights()  # fully replicated: each process can read them
    keras.distribution.set_distribution(None)
    local = keras.models.clone_model(model)
    local.set_weights(weights)
    from pipeline.core.recipes import compile_for_task

    compile_for_task(local, task)
    return local


def shard(config, keras, *splits):
    """Under jax multi-process training every process feeds its own slice of each global
    batch: this process's share of the samples and of the batch size."""
    if config.distribute != "multiworker" or keras.backend.backend() != "jax":
        return splits, config.batch_size
    count, index = jax_cluster()
    if config.batch_size % count:
        raise UsageError(f"--batch-size {config.batch_size} must be a multiple of the "
                         f"{count} processes")
    # every process takes the same number of samples, so all run the same number of steps
    sharded = []
    for x, y in splits:
        usable = len(x) - len(x) % count
        sharded.append((x[index:usable:count], y[index:usable:count]))
    return sharded, config.batch_size // count


def shard_indices(config, keras, dataset) -> tuple[dict, int]:
    """The sample indices of train and val this process feeds (``shard`` by index)."""
    splits = [(np.arange(dataset.size(s)), np.arange(dataset.size(s))) for s in ("train", "val")]
    ((train, _), (val, _)), batch_size = shard(config, keras, *splits)
    return {"train": train, "val": val}, batch_size


def _keras3_multiworker_reduce(strategy):
    """Work around Keras 3's two calls of ``strategy.reduce`` that MultiWorkerMirroredStrategy
    rejects (keras-team/keras#20585; Keras 3.15): ``fit`` reduces a whole (x, y) batch to
    build the model, and reduces scalar metrics "along axis 0". The batch only lends its
    shapes, so this worker's own copy serves; scalars are reduced without an axis."""
    import tensorflow as tf

    reduce = strategy.reduce

    def patched(reduce_op, value, axis=None):
        if isinstance(value, (tuple, list, dict)):
            return tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], value)
        if axis is not None and strategy.experimental_local_results(value)[0].shape.rank == 0:
            axis = None
        return reduce(reduce_op, value, axis=axis)

    strategy.reduce = patched
    return strategy


def devices(keras) -> list[str]:
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return [d.name for d in gpus] or ["/physical_device:CPU:0"]
    if keras.backend.backend() == "jax":
        import jax

        return [str(d) for d in jax.devices()]
    import torch

    return [f"cuda:{i}" for i in range(torch.cuda.device_count())] or ["cpu"]
