"""Writing an artifact and its sidecar: what the device needs to feed it and to trust it."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edge_runtime.artifact import sidecar_path
from pipeline import __version__
from pipeline.formats import MODEL, PRUNED_MODEL
from pipeline.fsutil import sha256_file, write_bytes, write_json
from pipeline.rundir import environment


def check_fresh(run_dir: Path, paths: list[Path]) -> None:
    """Refuse artifacts made from another model than the run's current one (its sidecar's
    ``source_model`` sha256), naming every stale one and the command that rebuilds it."""
    from edge_runtime.artifact import read_sidecar
    from pipeline.errors import RunDirError

    stale = []
    for path in paths:
        source = (read_sidecar(path) or {}).get("source_model")
        if not isinstance(source, dict) or source.get("path") not in (MODEL, PRUNED_MODEL):
            continue
        current = run_dir / source["path"]
        if not current.exists() or sha256_file(current) != source.get("sha256"):
            stale.append(f"{path.name} (from an earlier {source['path']})")
    if stale:
        raise RunDirError(f"stale artifact(s): {', '.join(stale)}; rerun `pipeline quantize` / "
                          f"`pipeline convert` to rebuild them from the current model")


def write_artifact(path: Path, content: bytes, *, fmt: str, mode: str, context,
                   source: Path, calibration_indices=None, calibration_source: dict | None = None,
                   options: dict[str, Any] | None = None,
                   io_overrides: dict[str, list[dict]] | None = None) -> dict[str, Any]:
    """Write ``content`` atomically, then its sidecar JSON; return the sidecar.

    Each replaces its predecessor only once complete (a full disk leaves both old files). In
    between, the old sidecar's sha256 no longer matches the new artifact, so nothing loads the
    pair as if it belonged together.
    """
    write_bytes(path, content)
    from edge_runtime.runner import load

    runner = load(path, sidecar=False)  # the tensors as the device will see them
    sidecar = {
        "artifact": path.name,
        "format": fmt,
        "mode": mode,
        "task": context.task,
        "size_bytes": path.stat().st_size,
        "sha256": sha256_file(path),
        "inputs": io_overrides.get("inputs") if io_overrides else [t.as_dict() for t in runner.inputs],
        "outputs": io_overrides.get("outputs") if io_overrides else [t.as_dict() for t in runner.outputs],
        "preprocessing": context.preprocessing,
        "class_names": context.preprocessing.get("class_names", []),
        "pipeline_version": __version__,
        "versions": environment()["versions"],
        "source_model": {"path": os.path.relpath(source, context.run_dir),
                         "sha256": sha256_file(source)},
        "calibration": None if calibration_indices is None else {
            **(calibration_source or {"split": "train", "seed": context.seed}),
            "count": len(calibration_indices), "indices": [int(i) for i in calibration_indices]},
        "options": options or {},
    }
    write_json(sidecar_path(path), sidecar)
    return sidecar
