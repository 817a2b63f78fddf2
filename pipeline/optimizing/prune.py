"""``pipeline prune``: Keras-3-native magnitude pruning, unstructured or structured.

Unstructured: kernels are masked to ``sparsity`` along a polynomial-decay schedule during
fine-tuning, masks re-applied after every batch; the result is a plain Keras model with
zeros in its kernels (small once compressed). Structured: whole Conv filters and Dense
units with the lowest L1 norm are removed and a genuinely smaller model is rebuilt
(``pipeline.optimizing.structured``), then fine-tuned. That is the kind that lowers latency.
"""
from __future__ import annotations

import gzip
import logging
import time
from pathlib import Path

import numpy as np

from pipeline.config.stages import PruneOptions
from pipeline.core import rundir
from pipeline.core.errors import UsageError
from pipeline.core.fsutil import write_json
from pipeline.data.context import RunContext
from pipeline.formats.kinds import PRUNED_MODEL
from pipeline.optimizing.splits import StreamedSplits, fine_tuning_splits

log = logging.getLogger("pipeline")
PRUNABLE_WEIGHTS = ("kernel", "depthwise_kernel", "recurrent_kernel")


def polynomial_sparsity(step: int, end_step: int, final: float, initial: float = 0.0,
                        power: int = 3) -> float:
    """Sparsity at ``step``: from ``initial`` to ``final`` by ``end_step``, fast at first."""
    progress = min(max(step, 0), end_step) / max(end_step, 1)
    return final + (initial - final) * (1.0 - progress) ** power


def magnitude_mask(weights: np.ndarray, sparsity: float) -> np.ndarray:
    """A 0/1 mask zeroing exactly ``floor(sparsity * size)`` of the smallest-magnitude weights."""
    count = int(sparsity * weights.size)
    mask = np.ones(weights.size, dtype=weights.dtype)
    if count:
        mask[np.argsort(np.abs(weights), axis=None, kind="stable")[:count]] = 0
    return mask.reshape(weights.shape)


def prune(run: str | Path | None, options: PruneOptions) -> dict:
    return RunContext.run_stage(run, options, _prune_locked)


def _prune_locked(context: RunContext, options: PruneOptions) -> dict:
    from pipeline.core.backend import import_keras
    from pipeline.core.batchnorm import recalibrate_batchnorm
    from pipeline.core.modelio import save_model

    keras = import_keras()
    keras.utils.set_random_seed(context.seed)
    model = context.load_model()
    splits = fine_tuning_splits(keras, context)
    unknown = sorted(set(options.skip_layers) - {layer.name for layer in model.layers})
    if unknown:
        from pipeline.core.errors import unknown_name

        raise unknown_name("layer", unknown[0], [layer.name for layer in model.layers])
    before = _summary(model, splits, context.task)
    started = time.perf_counter()
    prune_fn = _prune_structured if options.structured else _prune_unstructured
    pruned = prune_fn(keras, model, context, options, splits)
    recalibrate_batchnorm(pruned, splits.recalibration, seed=context.seed)
    seconds = time.perf_counter() - started
    after = _summary(pruned, splits, context.task)
    pruned_path = save_model(pruned, context.run_dir / PRUNED_MODEL)
    report = {
        "method": "structured-l1" if options.structured else "unstructured-magnitude",
        "schedule": None if options.structured else "polynomial-decay (power 3, 0 → target by 70% of steps)",
        "target_sparsity": options.target_sparsity,
        "fine_tune_epochs": options.fine_tune_epochs,
        "skip_layers": options.skip_layers,
        "seconds": round(seconds, 2),
        **({"streamed": True} if isinstance(splits, StreamedSplits) else {}),
        "before": before,
        "after": after,
        "accuracy_drop": (None if before["accuracy"] is None
                          else round(before["accuracy"] - after["accuracy"], 6)),
        "gzip_ratio": round(before["float32_tflite_gzip_bytes"] / after["float32_tflite_gzip_bytes"], 3),
    }
    report_path = write_json(context.run_dir / "prune.json", report)
    rundir.update_manifest(context.run_dir, "prune", artifacts=[pruned_path, report_path])
    return report


def _prune_structured(keras, model, context: RunContext, options: PruneOptions, splits):
    """A smaller model without the least important filters/units, fine-tuned."""
    from pipeline.core.batchnorm import recalibrate_batchnorm
    from pipeline.optimizing.structured import shrink

    pruned = shrink(model, options.target_sparsity, skip=options.skip_layers)
    # Removing filters changes what every later BatchNorm sees: re-estimate before
    # fine-tuning (and after it), or the shrunk model starts from chance.
    recalibrate_batchnorm(pruned, splits.recalibration, seed=context.seed)
    _fine_tune(keras, pruned, context, options, splits, callbacks=[])
    return pruned


def _prune_unstructured(keras, model, context: RunContext, options: PruneOptions, splits):
    """The same model with the smallest weights zeroed, ramped up while fine-tuning."""
    targets = _prunable(model, options.skip_layers)
    if not targets:
        raise UsageError("no prunable kernels left (every layer is skipped)")
    steps = -(-splits.num_train // options.batch_size) * max(options.fine_tune_epochs, 1)
    callback = _masking_callback(keras, targets, options.target_sparsity, end_step=int(steps * 0.7))
    _fine_tune(keras, model, context, options, splits, callbacks=[callback])
    callback.apply(final=True)
    return model


def _fine_tune(keras, model, context: RunContext, options: PruneOptions, splits, callbacks) -> None:
    _compile(keras, model, context.task, options, splits.num_train)
    if options.fine_tune_epochs:
        splits.fit(model, options.batch_size, options.fine_tune_epochs, callbacks)


def _compile(keras, model, task: str, options: PruneOptions, num_train: int) -> None:
    from pipeline.core.recipes import compile_for_task

    steps = -(-num_train // options.batch_size) * max(options.fine_tune_epochs, 1)
    rate = keras.optimizers.schedules.CosineDecay(options.learning_rate, steps)
    compile_for_task(model, task, keras.optimizers.RMSprop(rate, name="rmsprop"))  # named: see make_optimizer


def _prunable(model, skip: list[str]):
    return [variable for layer in model.layers if layer.name not in skip
            for variable in layer.trainable_weights if variable.name in PRUNABLE_WEIGHTS]


def _masking_callback(keras, variables, final_sparsity: float, end_step: int):
    frequency = max(1, end_step // 20)

    class Masking(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.step = 0
            self.masks = [np.ones(v.shape, dtype="float32") for v in variables]

        def on_train_batch_end(self, batch, logs=None):
            self.step += 1
            self.apply(update=self.step % frequency == 0 or self.step == end_step)

        def apply(self, update: bool = False, final: bool = False) -> None:
            if update or final:
                sparsity = final_sparsity if final else polynomial_sparsity(
                    self.step, end_step, final_sparsity)
                self.masks = [magnitude_mask(np.asarray(v.numpy()), sparsity) for v in variables]
            for variable, mask in zip(variables, self.masks):
                variable.assign(variable * mask)

    return Masking()


def _summary(model, splits, task: str) -> dict:
    from pipeline.formats.tflite import to_tflite

    flatbuffer = to_tflite(model, "float32")
    layers = {}
    zeros = total = 0
    for layer in model.layers:
        for variable in layer.trainable_weights:
            if variable.name in PRUNABLE_WEIGHTS:
                values = np.asarray(variable.numpy())
                layer_zeros = int(np.count_nonzero(values == 0))
                layers[f"{layer.name}/{variable.name}"] = round(layer_zeros / values.size, 4)
                zeros, total = zeros + layer_zeros, total + values.size
    all_params = sum(int(np.prod(w.shape)) for w in model.weights)
    nonzero = sum(int(np.count_nonzero(np.asarray(w.numpy()))) for w in model.weights)
    accuracy, loss = splits.test_metric(model, task)
    scored = {}
    if task != "classifier":  # the task's own metric with its interval (an autoencoder's AUC)
        from pipeline.core.tasks import test_metric_of

        scored = {"test_metric": test_metric_of(model, splits.dataset, task)}
    return {
        "accuracy": accuracy, "reconstruction_mse": loss if task == "reconstruction" else None, **scored,
        "params": all_params, "nonzero_params": nonzero,
        "sparsity": round(zeros / total, 4) if total else 0.0, "layer_sparsity": layers,
        "float32_tflite_bytes": len(flatbuffer),
        "float32_tflite_gzip_bytes": len(gzip.compress(flatbuffer, compresslevel=9, mtime=0)),
    }
