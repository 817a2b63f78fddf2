"""``pipeline export``: an artifact of a run as what a board's project builds in (C arrays for
TensorFlow Lite for Microcontrollers, ``formats.c_array``, with an example program), and raw
test samples with their labels and the answers this workstation got, for ``edge-runtime
predict``/``eval`` on the device."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.config.stages import ExportOptions
from pipeline.core import rundir
from pipeline.core.errors import UsageError


def export(run: str | Path | None, options: ExportOptions) -> dict:
    """Write ``model_data.h``, ``model_data.cc``, ``model_data.json`` and ``model_example.cc``
    for the artifact (``options.artifact``, else the report's pick for a board), and with
    ``options.samples`` the first N raw test samples (``samples.npz``: x, y) and what LiteRT
    answered on them here (``samples.json``), into ``options.out_dir`` (default RUN/c_array)."""
    from pipeline.formats.c_array import export_c_array

    options.validate()
    run_dir = rundir.resolve_run(run)
    path, why = resolve_artifact(run_dir, options.artifact)
    out_dir = Path(options.out_dir) if options.out_dir else run_dir / "c_array"
    facts: dict = {"artifact": str(path.relative_to(run_dir)) if path.is_relative_to(run_dir) else str(path),
                   "why": why, "files": []}
    if options.c_array:
        facts.update(export_c_array(run_dir, str(path), out_dir, symbol=options.symbol, metadata=options.metadata),
                     why=why)
    if options.samples:
        facts["samples"] = write_samples(run_dir, path, out_dir, options.samples)
        facts["files"] += facts["samples"]["files"]
    return facts


def resolve_artifact(run_dir: Path, artifact: str | None) -> tuple[Path, str]:
    """The artifact to export and why: a path, a name in the run or in one of its variants, or
    (None) the report's pick for a board, else the base int8 model. A name from report.json is
    a file like any other: it must lie inside the run."""
    from pipeline.core.fsutil import read_json

    if artifact is None:
        report = run_dir / "report.json"
        board = None
        if report.is_file():
            try:
                board = (read_json(report).get("board") or {}).get("artifact")
            except (OSError, ValueError, AttributeError):
                board = None
        if isinstance(board, str):
            path = (run_dir / board).resolve()
            if path.is_relative_to(run_dir.resolve()) and path.suffix == ".tflite" and path.is_file():
                return path, "the report's pick for a board (report.json)"
        artifact = "model_int8.tflite"
        why = "the base int8 model (no report names a board's pick: run pipeline report)"
    else:
        why = "as asked (--artifact)"
    given = Path(artifact)
    if given.is_file():
        return given, why
    found = [p for p in [run_dir / artifact, *sorted((run_dir / "variants").glob(f"*/{artifact}"))] if p.is_file()]
    if len(found) > 1:
        raise UsageError(f"{artifact} is in {len(found)} places of {run_dir}: pass one path, e.g. "
                         f"--artifact {found[1].relative_to(run_dir)}")
    if not found:
        raise UsageError(f"artifact {artifact} not found in {run_dir} or its variants: run `pipeline quantize "
                         f"--int8` first, or pass a path")
    return found[0], why


def write_samples(run_dir: Path, path: Path, out_dir: Path, count: int) -> dict:
    """The first ``count`` raw test samples as the data set stores them (what the device reads
    from its sensor or file), their labels, and the artifact's answers on them here through
    its sidecar (what ``edge-runtime predict --raw`` must print on the device)."""
    from edge_runtime import load
    from pipeline.core.fsutil import make_dirs, sha256_file, write_bytes, write_json
    from pipeline.data.context import RunContext

    context = RunContext.open(run_dir)
    x_raw, y = context.dataset.x_test, context.dataset.y_test
    count = min(count, len(x_raw))
    x, labels = np.asarray(x_raw[:count]), None if y is None else np.asarray(y[:count])
    outputs = load(path).predict(x, raw=True)
    make_dirs(out_dir)
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **({"x": x} if labels is None else {"x": x, "y": labels}))
    npz = write_bytes(out_dir / "samples.npz", buffer.getvalue())
    classifier = context.task == "classifier"
    record = {"artifact": path.name, "artifact_sha256": sha256_file(path), "split": "test", "first": count,
              "task": context.task, "raw_dtype": str(x.dtype), "shape": list(x.shape),
              "top1": outputs.reshape(len(outputs), -1).argmax(1).tolist() if classifier else None,
              "accuracy": float(np.mean(outputs.reshape(len(outputs), -1).argmax(1) == labels))
              if classifier and labels is not None else None,
              "commands": [f"edge-runtime predict {path.name} samples.npz --raw",
                           f"edge-runtime eval {path.name} samples.npz --raw"]}
    written = write_json(out_dir / "samples.json", record)
    return {**record, "files": [str(npz), str(written)]}
