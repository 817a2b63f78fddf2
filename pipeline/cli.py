"""The ``pipeline`` command line: thin Typer commands over the core stage functions."""
from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer

from pipeline.errors import PipelineError

app = typer.Typer(
    help="Take a Keras model from training to a device: train → prune → quantize → convert "
         "→ verify → bench → report.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

RunOption = Annotated[Optional[Path], typer.Option(
    "--run", help="Run directory to work on (default: runs/latest).")]


@contextlib.contextmanager
def _errors_to_exit_codes() -> Iterator[None]:
    """One clear line on stderr and a documented exit code instead of a traceback."""
    try:
        yield
    except PipelineError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None


def _setup_logging(quiet: bool = False) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(message)s", stream=sys.stderr, force=True)


@app.command()
def train(
    model: Annotated[str, typer.Option(help="Zoo model name (see `pipeline models`) or a "
                                            ".keras/.h5/SavedModel path to fine-tune.")] = "mnist_cnn",
    dataset: Annotated[str, typer.Option(help="digits, mnist, fashion_mnist, cifar10, "
                                              "npz:PATH, folder:DIR or idx:DIR.")] = "digits",
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 15,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 32,
    optimizer: Annotated[str, typer.Option(help="rmsprop, adam or sgd.")] = "rmsprop",
    learning_rate: Annotated[float, typer.Option(help="Initial learning rate.")] = 1e-3,
    lr_schedule: Annotated[str, typer.Option(
        help="constant, cosine, exponential or plateau.")] = "cosine",
    early_stopping: Annotated[int, typer.Option(
        help="Stop after this many epochs without val_loss improvement (0: off).")] = 0,
    class_weight: Annotated[Optional[str], typer.Option(
        help="'balanced' to weight classes by inverse frequency.")] = None,
    augment: Annotated[bool, typer.Option(help="Light image augmentation (random shifts).")] = False,
    seed: Annotated[int, typer.Option(help="Seed for splits, initialisation and shuffling.")] = 0,
    image_size: Annotated[Optional[int], typer.Option(help="Resize images to N x N.")] = None,
    mixed_precision: Annotated[bool, typer.Option(
        help="Train in mixed_float16 (for GPUs); the saved model is float32.")] = False,
    distribute: Annotated[str, typer.Option(
        help="none, mirrored (every visible GPU) or multiworker (TF_CONFIG).")] = "none",
    tensorboard: Annotated[bool, typer.Option(help="Write TensorBoard logs to RUN/logs.")] = False,
    unsafe: Annotated[bool, typer.Option(
        help="Allow code inside a user model file (Lambda layers) to run.")] = False,
    out: Annotated[Optional[Path], typer.Option(
        help="Run directory (default: runs/<model>-<dataset>-<time>).")] = None,
    resume: Annotated[bool, typer.Option(
        help="Resume the run in --out (or runs/latest) from its last checkpoint.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Train a model and start a run directory (model.keras, train.json, manifest.json)."""
    _setup_logging(quiet)
    with _errors_to_exit_codes():
        from pipeline.train import TrainConfig, train as run_training

        config = TrainConfig(
            model=model, dataset=dataset, epochs=epochs, batch_size=batch_size,
            optimizer=optimizer, learning_rate=learning_rate, lr_schedule=lr_schedule,
            early_stopping=early_stopping, class_weight=class_weight, augment=augment,
            seed=seed, image_size=image_size, mixed_precision=mixed_precision,
            distribute=distribute, tensorboard=tensorboard, unsafe=unsafe)
        result = run_training(config, out=out, resume=resume, verbose=0 if quiet else 2)
        accuracy = result.metrics["test_accuracy"]
        score = (f"test accuracy {accuracy:.4f}" if accuracy is not None
                 else f"test loss {result.metrics['test_loss']:.5f}")
        typer.echo(f"{score}, {result.metrics['epochs_run']} epochs in "
                   f"{result.metrics['train_seconds']:.1f}s → {result.run_dir}")


@app.command("models")
def list_models() -> None:
    """List the model zoo."""
    import models

    for name in models.model_names():
        spec = models.get_model_spec(name)
        typer.echo(f"{name:14s} {spec.task:12s} {spec.summary}")


@app.command("datasets")
def list_datasets() -> None:
    """List the data sets."""
    from pipeline.data import _LOADERS

    for name, loader in _LOADERS.items():
        label = f"{name}:PATH" if loader.takes_path else name
        typer.echo(f"{label:14s} {loader.help}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
