"""``pipeline bench`` and ``export``: latency where the model runs, C arrays for a microcontroller."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.cli.common import (
    DEFAULTS,
    QuietOption,
    RemoteDirOption,
    RunOption,
    SshOption,
    VerboseOption,
    _items,
    _listed,
    _ssh_options,
    command,
)
from pipeline.config.devices import DEFAULT_REMOTE_ROOT


@command()
def bench(
    run: RunOption = None,
    threads: Annotated[Optional[list[str]], _listed(
        "Thread counts to sweep, e.g. 1,2,4.", ",".join(map(str, DEFAULTS.bench.threads)))] = None,
    runs: Annotated[int, typer.Option(help="At least this many timed runs per artifact.")] = DEFAULTS.bench.runs,
    warmup: Annotated[int, typer.Option(help="Warm-up runs before timing.")] = DEFAULTS.bench.warmup,
    min_seconds: Annotated[float, typer.Option(
        help="Keep timing for at least this long.")] = DEFAULTS.bench.min_seconds,
    xnnpack: Annotated[bool, typer.Option(help="Use LiteRT's XNNPACK delegate.")] = True,
    artifact: Annotated[Optional[list[str]], _listed(
        "Artifacts to time (names in the run).", "every artifact in the run")] = None,
    device: Annotated[Optional[str], typer.Option(help="ssh://user@host[:port] to benchmark on a device.")] = None,
    ssh_option: SshOption = None, remote_dir: RemoteDirOption = DEFAULT_REMOTE_ROOT,
    quiet: QuietOption = False, verbose: VerboseOption = False,
) -> None:
    """Latency of every artifact (p50/p90/p99 per backend and thread count) → bench.json."""
    from pipeline.config.stages import BenchOptions
    from pipeline.core.errors import UsageError
    from pipeline.device.bench import bench as run_bench

    try:
        thread_counts = [int(t) for t in _items(threads, "--threads")] or list(DEFAULTS.bench.threads)
    except ValueError:
        raise UsageError(f"--threads takes integers, got '{','.join(threads or [])}'") from None
    report = run_bench(run, BenchOptions(
        threads=thread_counts, runs=runs, warmup=warmup, min_seconds=min_seconds, xnnpack=xnnpack,
        artifacts=_items(artifact, "--artifact") or None, device=device,
        ssh_options=_ssh_options(_items(ssh_option, "--ssh-option", keyed=True)), remote_root=remote_dir))
    where = report["device"].get("cpu_model") or report["device"].get("machine")
    typer.echo(f"device: {report['device']['location']} ({where})")
    for row in report["results"]:
        typer.echo(f"{row['artifact']:32s} {row['backend']:12s} threads {row['threads']}: "
                   f"p50 {row['p50_ms']:.3f} ms  p90 {row['p90_ms']:.3f} ms  p99 {row['p99_ms']:.3f} ms")


@command()
def export(
    run: RunOption = None,
    c_array: Annotated[bool, typer.Option(
        "--c-array/--no-c-array", help="Write model_data.h / model_data.cc (C and C++): the model as an "
                                       "aligned C array with its length, the measured TFLite Micro arena, input "
                                       "and output shapes and quantization, the raw-to-input formula, the op "
                                       "list for the resolver and class names; and model_example.cc.")] = True,
    artifact: Annotated[Optional[str], typer.Option(
        help="The integer TFLite model to export: a name in the run or in one of its variants, or a path "
             "(default: the report's pick for a board, else model_int8.tflite).", show_default=False)] = None,
    samples: Annotated[int, typer.Option(
        help="Also write the first N raw test samples and labels (samples.npz) and the answers the "
             "artifact gave on them here (samples.json), for edge-runtime predict/eval on the device.")] = 0,
    out: Annotated[Optional[Path], typer.Option(help="Where to write (default: RUN/c_array).")] = None,
    symbol: Annotated[str, typer.Option(help="The array's C name.")] = DEFAULTS.export.symbol,
    metadata: Annotated[bool, typer.Option(
        "--metadata/--no-metadata", help="Keep the TFLite Metadata and packed labels in the array "
                                         "(default: left out, TFLite Micro does not read them).")] = False,
    quiet: QuietOption = False, verbose: VerboseOption = False,
) -> None:
    """Export an artifact for a board: C arrays for a TensorFlow Lite for Microcontrollers project,
    and raw test samples for edge-runtime on a Pi or a phone."""
    from pipeline.config.stages import ExportOptions
    from pipeline.device.export import export as run_export

    facts = run_export(run, ExportOptions(c_array=c_array, symbol=symbol, artifact=artifact, samples=samples,
                                          out_dir=str(out) if out else None, metadata=metadata))
    if c_array:
        left_out = (f" ({facts['metadata_bytes_left_out']:,} bytes of metadata left out)"
                    if facts["metadata_bytes_left_out"] else "")
        typer.echo(f"{facts['artifact']}: {facts['length']:,} bytes{left_out}, tensor arena "
                   f"{facts['arena_bytes']:,} bytes → {', '.join(facts['files'][:2])}")
    else:
        typer.echo(f"{facts['artifact']}:")
    typer.echo(f"  {facts['why']}")
    if samples:
        record = facts["samples"]
        accuracy = f", accuracy here {record['accuracy']:.2%}" if record.get("accuracy") is not None else ""
        typer.echo(f"{record['first']} raw test samples{accuracy} → {record['files'][0]}; on the device: "
                   f"{record['commands'][0]}")
