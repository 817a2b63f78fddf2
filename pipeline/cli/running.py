"""``pipeline run`` and ``report`` (the whole pipeline from a config), ``models`` and ``datasets``."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.cli.common import QuietOption, RunOption, UnsafeOption, VerboseOption, _items, _listed, command
from pipeline.core.fsutil import read_json

TargetOption = Annotated[Optional[str], typer.Option(
    help="What the recommendation is for: any, mcu (integer TFLite that TFLite Micro ran and passed), "
         "npu (fully int8 TFLite), phone (TFLite, .ort) or pi (default: the config's constraints.target, any).")]


@command("run")
def run_all(
    config: Annotated[Optional[Path], typer.Argument(help="YAML or TOML config (default: built-in defaults).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Override any config field: SECTION.FIELD=VALUE, e.g. train.epochs=5, or a "
                      "nested one, e.g. verify.gates.quantized.metric_drop=0.02. Repeatable; "
                      "commas also separate values.", show_default=False)] = None,
    force: Annotated[Optional[list[str]], _listed("Rerun this stage even if cached.")] = None,
    out: Annotated[Optional[Path], typer.Option(
        help="Run directory (default: runs/pipeline-<model>-<dataset>).")] = None,
    target: TargetOption = None,
    unsafe: UnsafeOption = False,
    quiet: QuietOption = False, verbose: VerboseOption = False,
) -> None:
    """The whole pipeline from one config: train → prune → quantize → convert → verify → bench → report."""
    logging.getLogger("pipeline").setLevel(logging.WARNING)  # the stage lines say what happens
    from pipeline.config.load import load_config
    from pipeline.running.orchestrator import run as run_pipeline

    overrides = _items(set_, "--set", keyed=True) + ([f"constraints.target={target}"] if target else [])
    resolved = load_config(config, overrides)
    result = run_pipeline(resolved, out=out, force=_items(force, "--force"),
                          progress=None if quiet else _progress)
    _recommendation(read_json(result.run_dir / "report.json"))
    typer.echo(f"report: {result.report}")


def _recommendation(summary: dict) -> None:
    from pipeline.running.report import recommendation_lines

    for key, (_, name, why) in zip(("recommended", "exported"), recommendation_lines(summary)):
        typer.echo(f"{key}: {name}")
        typer.echo(f"  {why}")


def _progress(stage: str, status: str, seconds: float) -> None:
    if status == "start":
        typer.echo(f"▶ {stage} …", err=True)
    else:
        mark = "✓" if status == "ran" else "•"
        typer.echo(f"{mark} {stage:9s} {seconds:6.1f}s{'' if status == 'ran' else '  (cached)'}", err=True)


@command()
def report(
    run_dir: Annotated[Optional[Path], typer.Argument(hidden=True)] = None,  # older scripts: same as --run
    run: RunOption = None,
    target: TargetOption = None,
    quiet: QuietOption = False, verbose: VerboseOption = False,
) -> None:
    """Rebuild report.md / report.html of a run from its JSON files."""
    from pipeline.core.errors import UsageError
    from pipeline.core.rundir import resolve_run
    from pipeline.running.report import build_report

    if run_dir is not None and run is not None and run_dir != run:
        raise UsageError(f"two run directories given ({run_dir} and --run {run}): pass one")
    run_path = resolve_run(run or run_dir)
    summary = build_report(run_path, target=target)
    _recommendation(summary)
    typer.echo(f"report: {run_path / 'report.html'}")


@command("models")
def list_models(quiet: QuietOption = False, verbose: VerboseOption = False) -> None:
    """List the model zoo, each with its default training recipe."""
    import models

    for name in models.model_names():
        spec = models.get_model_spec(name)
        recipe = spec.full_recipe()
        typer.echo(f"{name:14s} {spec.task:12s} {spec.summary}")
        typer.echo(f"{'':27s} recipe: {recipe['epochs']} epochs, batch {recipe['batch_size']}, "
                   f"{recipe['optimizer']} {recipe['learning_rate']:g}, {recipe['lr_schedule']} schedule")


@command("datasets")
def list_datasets(quiet: QuietOption = False, verbose: VerboseOption = False) -> None:
    """List the data sets."""
    from pipeline.data.loaders import loaders

    for loader in loaders():
        label = f"{loader.name}:{loader.argument.upper()}" if loader.takes_path else loader.name
        typer.echo(f"{label:14s} {loader.help}")
