"""``pipeline convert``: float32 TFLite and ONNX, and int8 ONNX two ways."""
from __future__ import annotations

import time
from pathlib import Path

from edge_runtime.artifact import read_sidecar
from pipeline import __version__
from pipeline.config.stages import ConvertOptions
from pipeline.core import rundir
from pipeline.core.errors import UsageError
from pipeline.core.fsutil import read_json, remove_file, write_json
from pipeline.data.context import RunContext
from pipeline.formats.kinds import ORT_SOURCES, artifact_file
from pipeline.formats.sidecar import write_artifact


def convert(run: str | Path | None, options: ConvertOptions) -> dict:
    return RunContext.run_stage(run, options, _convert_locked)


def _convert_locked(context: RunContext, options: ConvertOptions) -> dict:
    source = context.model_path(options.pruned)
    model = context.load_model(options.pruned)  # Keras set up as every stage needs it
    report_path = context.run_dir / "convert.json"
    report = read_json(report_path) if report_path.exists() else {"artifacts": {}}
    written: list[Path] = []
    calibration = None
    if "onnx" in options.targets and options.int8_onnx:  # checked before anything is written
        from pipeline.optimizing.quantize import calibration_set

        calibration = calibration_set(context, options.calibration_samples, options.calibration_data)

    def record(path: Path, sidecar: dict, started: float, **extra) -> None:
        report["artifacts"][path.name] = {
            "format": sidecar["format"], "mode": sidecar["mode"], "size_bytes": sidecar["size_bytes"],
            "sha256": sidecar["sha256"], "convert_seconds": round(time.perf_counter() - started, 3),
            **extra}
        written.append(path)

    if "tflite" in options.targets:
        from pipeline.formats.tflite import to_tflite

        started = time.perf_counter()
        path = context.run_dir / artifact_file("float32.tflite", options.pruned)
        sidecar = write_artifact(path, to_tflite(model, "float32"), fmt="tflite", mode="float32",
                                 context=context, source=source)
        record(path, sidecar, started)
    if "onnx" in options.targets:
        recovery = _convert_onnx(context, options, model, source, record, calibration, written)
        mixed = artifact_file("int8_mixed.onnx", options.pruned)
        report["artifacts"].pop(mixed, None)
        report.pop("recovery", None)
        if not (recovery or {}).get("artifact"):  # a mix from before no longer matches the int8 ONNX
            from edge_runtime.artifact import sidecar_path

            for stale in (context.run_dir / mixed, sidecar_path(context.run_dir / mixed)):
                remove_file(stale)
        if recovery is not None:
            report["recovery"] = recovery
            if recovery.get("artifact"):
                report["artifacts"][mixed] = {"format": "onnx", "mode": "int8_mixed",
                                              "size_bytes": recovery["size_bytes"],
                                              "sha256": recovery["sha256"], "method": "onnxruntime-qdq-nodes-excluded"}
    if "ort" in options.targets:
        _convert_ort(context, options, source, record, report)
    report["opset"] = options.opset
    write_json(report_path, report)
    rundir.update_manifest(context.run_dir, "convert", artifacts=[*written, report_path])
    return report


def _convert_ort(context, options, source, record, report) -> None:
    """Each ONNX artifact of the run (from the current model) in ONNX Runtime Mobile's format,
    with its sidecar: the same tensors, so the device feeds it as it feeds the ``.onnx``."""
    from pipeline.formats.ort import onnx_to_ort, ort_name
    from pipeline.formats.sidecar import check_fresh

    onnx_files = [p for p in (context.run_dir / artifact_file(kind, options.pruned) for kind in ORT_SOURCES)
                  if p.is_file() and not p.is_symlink()]
    if not onnx_files:
        raise UsageError(f"{context.run_dir} has no ONNX artifacts to convert to .ort: add onnx to --to "
                         f"(--to onnx,ort) or run `pipeline convert --to onnx` first")
    check_fresh(context.run_dir, onnx_files)
    for onnx_path in onnx_files:
        from edge_runtime import load

        load(onnx_path)  # checked against its sidecar's sha256 before it is converted
        onnx_sidecar = read_sidecar(onnx_path) or {}
        started = time.perf_counter()
        path = context.run_dir / ort_name(onnx_path.name)
        calibration = onnx_sidecar.get("calibration") or {}
        sidecar = write_artifact(
            path, onnx_to_ort(onnx_path), fmt="ort", mode=onnx_sidecar.get("mode", "float32"), context=context,
            source=source, calibration_indices=calibration.get("indices"),
            calibration_source={k: v for k, v in calibration.items() if k not in ("count", "indices")} or None,
            io_overrides={"inputs": onnx_sidecar["inputs"], "outputs": onnx_sidecar["outputs"]}
            if onnx_sidecar.get("inputs") else None,
            options={"onnx": onnx_path.name, "onnx_sha256": onnx_sidecar.get("sha256"),
                     "method": "onnxruntime.tools.convert_onnx_models_to_ort",
                     "optimization_style": "Fixed", "target_platform": "arm"})
        record(path, sidecar, started, method="onnxruntime.tools.convert_onnx_models_to_ort")
        report["artifacts"][path.name]["onnx"] = onnx_path.name


def _convert_onnx(context, options, model, source, record, calibration, written) -> dict | None:
    """The ONNX artifacts; the int8 recovery's record when it ran."""
    pruned = options.pruned
    from pipeline.formats import onnx as onnx_export

    metadata = {"version": __version__, "preprocessing": context.preprocessing,
                "class_names": context.preprocessing.get("class_names", []),
                "source_sha256": read_json(context.run_dir / "manifest.json")
                .get("artifacts", {}).get(source.name, "")}
    started = time.perf_counter()
    float_proto = onnx_export.keras_to_onnx(model, opset=options.opset)
    path = context.run_dir / artifact_file("float32.onnx", pruned)
    sidecar = write_artifact(path, onnx_export.with_metadata(float_proto, {**metadata, "mode": "float32"}),
                             fmt="onnx", mode="float32", context=context, source=source,
                             options={"opset": options.opset})
    record(path, sidecar, started)
    if not options.int8_onnx:
        return None
    started = time.perf_counter()
    calibration_source, indices, samples = calibration
    qdq = onnx_export.quantize_qdq(float_proto, samples)
    path = context.run_dir / artifact_file("int8.onnx", pruned)
    int8_metadata = {**metadata, "mode": "int8", "calibration_indices": [int(i) for i in indices]}
    sidecar = write_artifact(
        path, onnx_export.with_metadata(qdq, int8_metadata),
        fmt="onnx", mode="int8", context=context, source=source, calibration_indices=indices,
        calibration_source=calibration_source,
        options={"opset": options.opset, "method": "onnxruntime-qdq-per-channel"})
    record(path, sidecar, started, method="onnxruntime-qdq-per-channel")
    recovery = None
    if options.recover is not False:
        recovery = _recover_onnx(context, options, model, source, float_proto, path, calibration,
                                 int8_metadata, written)
    int8_tflite = context.run_dir / artifact_file("int8.tflite", pruned)
    if not int8_tflite.exists():
        return recovery  # `pipeline quantize --int8` makes it; its ONNX twin follows on the next convert
    started = time.perf_counter()
    tflite_sidecar = read_sidecar(int8_tflite) or {}
    proto = onnx_export.tflite_to_onnx(int8_tflite, opset=options.opset)
    path = context.run_dir / artifact_file("int8_tflite.onnx", pruned)
    calibration = (tflite_sidecar.get("calibration") or {}).get("indices")
    content = onnx_export.with_metadata(proto, {**metadata, "mode": "int8",
                                                "calibration_indices": calibration or []})
    io = _renamed_io(tflite_sidecar, proto)
    sidecar = write_artifact(path, content, fmt="onnx", mode="int8", context=context, source=source,
                             calibration_indices=calibration, io_overrides=io,
                             options={"opset": options.opset, "method": "tf2onnx-from-tflite",
                                      "tflite": int8_tflite.name})
    record(path, sidecar, started, method="tf2onnx-from-tflite")
    return recovery


def _recover_onnx(context, options, model, source, float_proto, full_int8: Path, calibration, metadata: dict,
                  written: list[Path]) -> dict:
    """Keep a passing QDQ int8 ONNX as it is; otherwise write ``model_int8_mixed.onnx`` with the
    fewest nodes left float (ONNX Runtime's ``nodes_to_exclude``), as quantize's recovery."""
    import onnx

    from pipeline.formats import onnx as onnx_export
    from pipeline.optimizing.mixed_precision import recover_onnx_int8
    from pipeline.optimizing.quantize import recovery_stage

    calibration_source, indices, samples = calibration
    mixed = context.run_dir / artifact_file("int8_mixed.onnx", options.pruned)
    full = full_int8.read_bytes()

    def write(content: bytes, recovery: dict) -> dict:
        proto = onnx.load_from_string(content)
        return write_artifact(
            mixed, onnx_export.with_metadata(proto, {**metadata, "mode": "int8_mixed"}), fmt="onnx",
            mode="int8_mixed", context=context, source=source, calibration_indices=indices,
            calibration_source=calibration_source,
            options={"opset": options.opset, "method": "onnxruntime-qdq-nodes-excluded", "recovery": recovery})

    return recovery_stage(context, options.recover, options.gates, mixed, written, write,
                          lambda x_val, y_val, rules, valid: recover_onnx_int8(
                              model, float_proto, full, samples, x_val, y_val, context.task, rules, valid))


def _renamed_io(tflite_sidecar: dict, proto) -> dict | None:
    """The int8 TFLite's I/O quantization, under the ONNX graph's tensor names."""
    if not tflite_sidecar:
        return None
    io = {}
    for key, tensors in (("inputs", proto.graph.input), ("outputs", proto.graph.output)):
        io[key] = [{**recorded, "name": tensor.name}
                   for recorded, tensor in zip(tflite_sidecar.get(key, []), tensors)]
    return io
