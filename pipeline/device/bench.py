"""``pipeline bench``: latency of every artifact in the run, here or on a device over SSH."""
from __future__ import annotations

import os
from pathlib import Path

from pipeline.config.stages import BenchOptions
from pipeline.core import rundir
from pipeline.core.errors import UsageError
from pipeline.core.fsutil import write_json
from pipeline.data.context import RunContext
from pipeline.formats.kinds import run_artifacts


def bench(run: str | Path | None, options: BenchOptions) -> dict:
    options.validate()
    context = RunContext.open(run)
    artifacts = run_artifacts(context.run_dir, options.artifacts)
    if not artifacts:
        raise UsageError(f"{context.run_dir} has no .tflite, .onnx or .ort artifacts: run "
                         f"`pipeline quantize` or `pipeline convert` first")
    from pipeline.formats.sidecar import check_fresh

    check_fresh(context.run_dir, artifacts)
    sample = context.dataset.take("test", [0])[0][0]
    with rundir.locked(context.run_dir):
        if options.device:

            report = _bench_remote_rounds(artifacts, sample, options)
        else:
            report = _bench_here(artifacts, sample, options)
        report["microcontroller"] = microcontroller_memory(artifacts)
        path = write_json(context.run_dir / options.output, report)
        rundir.update_manifest(context.run_dir, "bench", artifacts=[path])
    return report


def _bench_remote_rounds(artifacts: list[Path], sample, options: BenchOptions) -> dict:
    """The device's timings in interleaved rounds too: one bench over SSH per round, the
    artifacts' order rotated."""
    from dataclasses import replace

    from pipeline.device.remote import bench_remote
    from pipeline.device.timing import ROUNDS, combine_rounds, index_rows, rotated, round_method

    window = options.min_seconds / ROUNDS
    per_round, device = [], None
    for index in range(ROUNDS):
        order = rotated(list(range(len(artifacts))), index)
        report = bench_remote(options.device, [artifacts[i] for i in order],
                              sample, replace(options, min_seconds=window, runs=max(1, options.runs // ROUNDS)),
                              options.remote_root)
        device = report["device"]
        per_round.append(index_rows(report["results"], order))
    return {"device": device, "results": combine_rounds(per_round), "timing": round_method(ROUNDS, window)}


def microcontroller_memory(artifacts: list[Path]) -> dict:
    """Per integer TFLite artifact: the TFLite Micro tensor arena it needs (measured) and its
    flash bytes; or why they could not be measured. The same on every device: a property of
    the model and TFLM, measured on this machine."""
    from edge_runtime.artifact import read_sidecar
    from pipeline.formats.kinds import MICRO_MODES
    from pipeline.formats.micro import MicroError, run_micro, unavailable

    candidates = [p for p in artifacts if p.suffix == ".tflite"
                  and (read_sidecar(p) or {}).get("mode") in MICRO_MODES]
    if not candidates:
        return {}
    reason = unavailable()
    memory = {}
    for path in candidates:
        if reason:
            memory[path.name] = {"skipped": reason}
            continue
        try:
            result = run_micro(path)
        except MicroError as exc:
            memory[path.name] = {"error": str(exc)}
            continue
        memory[path.name] = {"arena_bytes": result.arena_bytes, "flash_bytes": result.flash_bytes}
    return memory


def _bench_here(artifacts: list[Path], sample, options: BenchOptions) -> dict:
    """Interleaved rounds (pipeline.device.timing), then each artifact's peak memory in a fresh
    process that loads only the runtime and that artifact."""
    from edge_runtime.bench import fresh_process_peak_rss_mb
    from pipeline.device.timing import measure_rounds

    measured = measure_rounds(artifacts, sample, threads=options.threads, warmup=options.warmup,
                              runs=options.runs, min_seconds=options.min_seconds, xnnpack=options.xnnpack)
    by_name = {p.name: p for p in artifacts}
    for row in measured["results"]:
        row["peak_rss_mb"] = fresh_process_peak_rss_mb(by_name[row["artifact"]], row.get("threads"))
        row["peak_rss_scope"] = "fresh process: python + edge_runtime + this artifact, one inference"
    return {"device": {"location": "local", **measured["device"]}, "results": measured["results"],
            "timing": measured["method"], "pid": os.getpid()}
