"""Writing an artifact and its sidecar: what the device needs to feed it and to trust it."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edge_runtime.artifact import sidecar_path
from pipeline import __version__
from pipeline.core.fsutil import sha256_file, write_bytes, write_json
from pipeline.core.rundir import environment
from pipeline.formats.kinds import MODEL, PRUNED_MODEL


def check_fresh(run_dir: Path, paths: list[Path]) -> None:
    """Refuse artifacts made from another model than the run's current one (its sidecar's
    ``source_model`` sha256), naming every stale one and the command that rebuilds it."""
    from edge_runtime.artifact import read_sidecar
    from pipeline.core.errors import RunDirError

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
    if fmt == "tflite":
        content = _mobile_ready(content, mode=mode, context=context)
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
    extra = _task_output(context, source, path)  # run as the device runs it: through its sidecar
    if extra:
        sidecar = {**sidecar, **extra}
        write_json(sidecar_path(path), sidecar)
    return sidecar


def _task_output(context, source: Path, path: Path) -> dict[str, Any]:
    """An autoencoder artifact's anomaly threshold, chosen by the same rule as its Keras
    source's but on this artifact's own scores of the validation split: quantization shifts
    the scores, and the device must flag the chosen share of normal samples with the
    artifact it runs. The source's threshold is kept beside it."""
    found = context.task_output(source)
    if "anomaly" not in found:
        return found
    from edge_runtime.runner import load
    from pipeline.core.tasks import threshold_for

    x_val, _ = context.dataset.split("val")
    own = threshold_for(load(path).predict(x_val), x_val)
    return {"anomaly": {**own, "chosen_with": "this artifact's scores",
                        "keras_threshold": found["anomaly"]["threshold"]}}


def _mobile_ready(content: bytes, *, mode: str, context) -> bytes:
    """The TFLite artifact as phone tooling reads it: a ``serving_default`` signature (kept
    if the converter path gave one) and TFLite Metadata made from what the sidecar says:
    name, description, version, normalization of the raw input, the input quantization of
    an integer model, and the class names as a packed ``labels.txt``."""
    from pipeline.formats import tflite_meta
    from pipeline.formats.kinds import mode_spec

    if not tflite_meta.signatures(content):
        content = tflite_meta.with_signature(content)
    model_name = str(context.train_info.get("model") or "model")
    spec = mode_spec(mode)
    description = (f"{model_name} {context.task}, {mode}" + (f" ({spec.description})" if spec else "")
                   + f"; made by edge-pipeline {__version__}")
    tensor = tflite_meta.input_tensor(content)
    fields = tflite_meta.metadata_fields(
        name=f"{model_name}_{mode}", description=description, version=__version__,
        spec=context.preprocessing, inputs=[tensor], quantized=tensor.get("quantization") is not None)
    ready = tflite_meta.with_metadata(content, fields)
    _check_labels(ready, fields.get("labels") or [])
    return ready


def _check_labels(content: bytes, labels: list[str]) -> None:
    """The packed ``labels.txt`` read back before the artifact is written: one line per class
    name, as many as the model has outputs (a name with a line break would add lines)."""
    from pipeline.core.errors import ConversionError
    from pipeline.formats import tflite_meta

    if not labels:
        return
    packed = tflite_meta.packed_files(content).get(tflite_meta.LABELS_FILE, b"").decode("utf-8", "replace")
    model = tflite_meta.read_model(tflite_meta.flatbuffer_part(content))
    graph = model.subgraphs[0]
    shape = list(graph.tensors[graph.outputs[0]].shape)
    if packed.split("\n")[:-1] != list(labels) or (len(shape) == 2 and shape[-1] != len(labels)):
        raise ConversionError(f"the class names packed as {tflite_meta.LABELS_FILE} read back as "
                              f"{packed.count(chr(10))} lines for {len(labels)} names and a model with "
                              f"{shape[-1] if shape else '?'} outputs: the artifact would say other classes than "
                              f"the model has")
