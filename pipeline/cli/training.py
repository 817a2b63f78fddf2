"""``pipeline train`` and ``import``: the commands that start a run with its Keras model."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.cli.common import DEFAULTS, QuietOption, RunOption, UnsafeOption, VerboseOption, command


@command()
def train(
    model: Annotated[Optional[str], typer.Option(
        help="Zoo model name (see `pipeline models`) or a .keras/.h5/SavedModel path to "
             f"fine-tune (default: {DEFAULTS.train.model}).", show_default=False)] = None,
    dataset: Annotated[Optional[str], typer.Option(
        help="digits, mnist, fashion_mnist, cifar10, npz:PATH, folder:DIR, idx:DIR or digits-anomaly:N "
             f"(default: {DEFAULTS.data.dataset}).", show_default=False)] = None,
    task: Annotated[Optional[str], typer.Option(
        help="classifier, reconstruction or regression (default: the zoo model's own; a model "
             "file: classifier).", show_default=False)] = None,
    epochs: Annotated[Optional[int], typer.Option(
        help="Training epochs (default: the model's recipe, see `pipeline models`).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Batch size (default: the recipe's).")] = None,
    optimizer: Annotated[Optional[str], typer.Option(
        help="rmsprop, adam or sgd (default: the recipe's).")] = None,
    learning_rate: Annotated[Optional[float], typer.Option(
        help="Initial learning rate (default: the recipe's).")] = None,
    lr_schedule: Annotated[Optional[str], typer.Option(
        help="constant, cosine, exponential or plateau (default: the recipe's).")] = None,
    early_stopping: Annotated[Optional[int], typer.Option(
        help="Stop after this many epochs without val_loss improvement (default: off).")] = None,
    class_weight: Annotated[Optional[str], typer.Option(
        help="'balanced' to weight classes by inverse frequency.")] = None,
    augment: Annotated[bool, typer.Option(help="Light image augmentation (random shifts).")] = DEFAULTS.train.augment,
    stream: Annotated[Optional[str], typer.Option(
        help="auto, always or never: feed batches preprocessed from the raw split as they are drawn "
             "(auto: when the training split is over 16 MiB as float32).")] = None,
    seed: Annotated[Optional[int], typer.Option(
        help=f"Seed for splits, initialisation and shuffling (default: {DEFAULTS.data.seed}).")] = None,
    image_size: Annotated[Optional[int], typer.Option(help="Resize images to N x N.")] = None,
    mixed_precision: Annotated[bool, typer.Option(
        help="Train in mixed_float16 (for GPUs); the saved model is float32.")] = DEFAULTS.train.mixed_precision,
    distribute: Annotated[Optional[str], typer.Option(
        help="none, mirrored (every visible GPU) or multiworker (TF_CONFIG) "
             f"(default: {DEFAULTS.train.distribute}).")] = None,
    tensorboard: Annotated[bool, typer.Option(help="Write TensorBoard logs to RUN/logs.")] = False,
    backend: Annotated[Optional[str], typer.Option(
        help="Keras backend: tensorflow, jax or torch (default: $KERAS_BACKEND or tensorflow).")] = None,
    out: Annotated[Optional[Path], typer.Option(
        help="Run directory (default: runs/<model>-<dataset>-<time>).")] = None,
    resume: Annotated[bool, typer.Option(
        help="Continue the run in --run (or runs/latest) from its last checkpoint, with its own "
             "model, data and recipe, up to --epochs.")] = False,
    run: RunOption = None,
    unsafe: UnsafeOption = False,
    quiet: QuietOption = False, verbose: VerboseOption = False,
) -> None:
    """Train a model and start a run directory (model.keras, train.json, manifest.json)."""
    from pipeline.config.stages import TrainOptions
    from pipeline.core.errors import UsageError
    from pipeline.training.train import train as run_training

    if run is not None and not resume:
        raise UsageError("--run names the run to --resume; a new run goes to --out DIR")
    options = dict(
        model=model, task=task, dataset=dataset, epochs=epochs, batch_size=batch_size,
        optimizer=optimizer, learning_rate=learning_rate, lr_schedule=lr_schedule,
        early_stopping=early_stopping, class_weight=class_weight, augment=augment, stream=stream,
        seed=seed, image_size=image_size, mixed_precision=mixed_precision,
        distribute=distribute, tensorboard=tensorboard, unsafe=unsafe, backend=backend)
    given = {name: value for name, value in options.items()
             if value is not None and value is not False}
    result = run_training(run or out, TrainOptions(**given), resume=resume, given=set(given),
                          verbose=0 if quiet else 2)
    accuracy = result.metrics["test_accuracy"]
    score = (task_score(result.metrics) if accuracy is not None or "test_metric" in result.metrics
             else f"test loss {result.metrics['test_loss']:.5f}")
    first, steady = result.metrics["first_epoch_seconds"], result.metrics["samples_per_second"]
    speed = f" (first epoch {first:.1f}s, then {steady:,.0f} samples/s)" if steady else ""
    where = result.run_dir if result.chief else "the chief's run (this worker wrote nothing)"
    typer.echo(f"{score}, {result.metrics['epochs_run']} epochs in "
               f"{result.metrics['train_seconds']:.1f}s{speed} → {where}")


@command("import")
def import_command(
    model: Annotated[Path, typer.Argument(help="Your model: .keras, Keras 2 .h5 or a SavedModel directory.")],
    dataset: Annotated[str, typer.Option(
        help="The data set it was trained for (see `pipeline datasets`).")] = DEFAULTS.data.dataset,
    seed: Annotated[int, typer.Option(help="Seed for the splits.")] = DEFAULTS.data.seed,
    image_size: Annotated[Optional[int], typer.Option(help="Resize images to N x N.")] = None,
    val_fraction: Annotated[float, typer.Option(
        help="Share of the training split kept for validation (int8 recovery scores on it)."),
    ] = DEFAULTS.data.val_fraction,
    out: Annotated[Optional[Path], typer.Option(
        help="Run directory to create (default: runs/<model>-<dataset>-<time>).")] = None,
    task: Annotated[Optional[str], typer.Option(
        help="classifier, reconstruction (an autoencoder) or regression (default: detected from the "
             "model's output shape and the data set's labels).", show_default=False)] = None,
    input_scale: Annotated[Optional[float], typer.Option(
        help="What the model takes is raw * SCALE + OFFSET: 1 for a model with its own Rescaling layer "
             "(default: the data set's preprocessing, e.g. 1/255 for uint8 pixels).", show_default=False)] = None,
    input_offset: Annotated[Optional[float], typer.Option(
        help="The OFFSET above (default 0 when --input-scale is given).", show_default=False)] = None,
    unsafe: UnsafeOption = False,
    quiet: QuietOption = False, verbose: VerboseOption = False,
) -> None:
    """Start a run from a model you already have; later stages then work on it."""
    from pipeline.training.import_model import import_model

    run_dir, metrics = import_model(model, dataset=dataset, seed=seed, image_size=image_size,
                                    val_fraction=val_fraction, unsafe=unsafe, out=out, task=task,
                                    input_scale=input_scale, input_offset=input_offset)
    typer.echo(f"{metrics['task']}: {task_score(metrics)} → {run_dir}")


def task_score(metrics: dict) -> str:
    """A run's test figure as one phrase: accuracy, or the task's metric with its interval."""
    scored = metrics.get("test_metric")
    if isinstance(scored, dict):
        low, high = scored["ci95"]
        return f"test {scored['metric']} {scored['value']:.4f} (95% interval {low:.4f} to {high:.4f})"
    return f"test accuracy {metrics['test_accuracy']:.4f}"
