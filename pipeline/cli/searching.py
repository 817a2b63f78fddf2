"""``pipeline search``: its options, its --space items and its summary."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.cli.common import (
    DEFAULTS,
    QuietOption,
    RemoteDirOption,
    SshOption,
    VerboseOption,
    _items,
    _listed,
    _ssh_options,
    command,
)
from pipeline.config.devices import DEFAULT_REMOTE_ROOT


@command()
def search(
    model: Annotated[str, typer.Option(
        help="Zoo model whose variants to search (mnist_cnn, mlp, resnet8, ds_cnn, mobilenet_v1).")] = "mnist_cnn",
    dataset: Annotated[str, typer.Option(help="The data set (see `pipeline datasets`).")] = DEFAULTS.data.dataset,
    trials: Annotated[int, typer.Option(
        help="Trials in all (a resumed search counts its finished ones).")] = DEFAULTS.search.trials,
    time_limit: Annotated[Optional[float], typer.Option(
        help="Start no trial after this many seconds (default: no limit).")] = DEFAULTS.search.time_limit_s,
    epochs: Annotated[int, typer.Option(help="Training epochs per trial.")] = DEFAULTS.search.epochs,
    space: Annotated[Optional[list[str]], _listed(
        "Values to try for a hyperparameter, replacing the model's: NAME=V1,V2, e.g. filters=8,16-32 or "
        "learning_rate=0.001,0.003. Names: filters, dense, stem_pool (mnist_cnn), hidden (mlp), filters "
        "(resnet8), width, blocks (ds_cnn), alpha (mobilenet_v1), and for all: learning_rate, optimizer, "
        "batch_size, sparsity, quantization.")] = None,
    max_latency_ms: Annotated[Optional[float], typer.Option(
        help="Budget: int8 p50 latency where the trials are timed (default: none)."),
    ] = DEFAULTS.constraints.max_latency_ms,
    max_latency_ratio: Annotated[Optional[float], typer.Option(
        help="Budget: int8 p50 as a fraction of the model as it comes, both timed here at the start, "
             "e.g. 0.33 (instead of --max-latency-ms).")] = DEFAULTS.search.max_latency_ratio,
    max_size_kb: Annotated[Optional[float], typer.Option(
        help="Budget: artifact size (default: none).")] = DEFAULTS.constraints.max_size_kb,
    max_ram_kb: Annotated[Optional[float], typer.Option(
        help="Budget: TFLite Micro tensor arena, measured (default: none).")] = DEFAULTS.constraints.max_ram_kb,
    bench_seconds: Annotated[float, typer.Option(
        help="Timing per latency measurement.")] = DEFAULTS.search.bench_seconds,
    rescore: Annotated[int, typer.Option(
        help="Up to this many fitting trials within the validation noise of the best are re-scored by "
             "3-fold cross-validation over train+validation before the winner is chosen (0: rank on "
             "validation alone).")] = DEFAULTS.search.rescore,
    device: Annotated[Optional[str], typer.Option(
        help="ssh://user@host[:port]: time every trial on this device (default: this machine)."),
    ] = DEFAULTS.search.device,
    ssh_option: SshOption = None, remote_dir: RemoteDirOption = DEFAULT_REMOTE_ROOT,
    seed: Annotated[int, typer.Option(help="Seed for splits and initialisation.")] = DEFAULTS.data.seed,
    out: Annotated[Optional[Path], typer.Option(
        help="Search directory; an existing one resumes (default: runs/search-<model>-<dataset>).")] = None,
    quiet: QuietOption = False, verbose: VerboseOption = False,
) -> None:
    """Hardware-aware search: the most accurate model variant whose int8 artifact fits the
    budgets, measured where it will run → search.json, search_report.md and a run directory."""
    from pipeline.core.rundir import DEFAULT_RUNS_ROOT, safe_name
    from pipeline.search import SearchOptions
    from pipeline.search import search as run_search

    options = SearchOptions(model=model, dataset=dataset, trials=trials, time_limit_s=time_limit,
                            epochs=epochs, space=parse_space(_items(space, "--space", keyed=True)),
                            max_latency_ms=max_latency_ms, max_size_kb=max_size_kb, max_ram_kb=max_ram_kb,
                            max_latency_ratio=max_latency_ratio, bench_seconds=bench_seconds, rescore=rescore,
                            device=device, seed=seed,
                            ssh_options=_ssh_options(_items(ssh_option, "--ssh-option", keyed=True)),
                            remote_root=remote_dir)
    summary = run_search(options, out or DEFAULT_RUNS_ROOT / f"search-{model}-{safe_name(dataset)}")
    if summary.get("worker"):
        typer.echo("worker: trials done")
        return
    _print_search(summary)


def parse_space(items: list[str]) -> dict[str, list]:
    """``NAME=V1,V2`` items as {name: [values]}: numbers where they parse, else strings."""
    from pipeline.config.schema import parse_value
    from pipeline.core.errors import UsageError

    space: dict[str, list] = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--space takes NAME=V1,V2, got '{item}'")
        values = [parse_value(v.strip()) for v in values.split(",") if v.strip()]
        if name.strip() in space:  # --space lr=1e-3 --space lr=3e-3: both, in order, once each
            values = [*space[name.strip()], *(v for v in values if v not in space[name.strip()])]
        space[name.strip()] = values
    return space


def _print_search(summary: dict) -> None:
    done = [t for t in summary["trials"] if t["status"] == "COMPLETED"]
    baseline = summary["baseline"]
    from pipeline.search import test_figure

    typer.echo(f"{len(done)} trials in {summary['search_seconds']:.0f}s; baseline "
               f"{summary['options']['model']} int8: {test_figure(baseline)}, "
               f"p50 {baseline['p50_ms']:.4f} ms")
    relative = summary.get("relative_budget")
    if relative:
        typer.echo(f"latency budget: {relative['ratio']:g} × {summary['options']['model']}'s untrained p50 "
                   f"{relative['reference_p50_ms']:.4f} ms = {relative['max_latency_ms']:.4f} ms")
    best = summary.get("best")
    if best:
        from pipeline.search import choice_text

        typer.echo(f"best: trial {best['trial']}, {test_figure(best)}, p50 "
                   f"{best['p50_ms']:.4f} ms (×{summary['comparison']['p50_ratio']:.2f}) → {best['run_dir']}")
        test = summary["comparison"]["int8_test"]
        if "metric" in test:
            typer.echo(f"chosen: {choice_text(summary)}; int8 test {test['metric']} {test['best']['value']:.4f} vs "
                       f"the baseline's {test['baseline']['value']:.4f}: {test['difference']:+.4f} "
                       f"[{test['difference_ci95'][0]:+.4f}, {test['difference_ci95'][1]:+.4f}]")
            return
        typer.echo(f"chosen: {choice_text(summary)}; int8 test accuracy {test['best']['accuracy']:.2%} vs the "
                   f"baseline's {test['baseline']['accuracy']:.2%}: {100 * test['difference']:+.2f} points "
                   f"[{100 * test['difference_ci95'][0]:+.2f}, {100 * test['difference_ci95'][1]:+.2f}]")
    else:
        fastest = summary["screened"].get("fastest_p50_ms")
        typer.echo("best: no trial fits the budgets" + (
            f" (the fastest architecture of the space: p50 {fastest:.4f} ms untrained)" if fastest else ""))
