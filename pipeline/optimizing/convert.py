"""``pipeline convert``: every requested format's artifacts of the run's model (float32 TFLite,
ONNX with its int8 QDQ, ``.ort``): each format's own ``convert(job)`` (``formats.kinds.FORMATS``),
over one ``formats.conversion.Conversion``, with calibration and int8 recovery lent by this
stage."""
from __future__ import annotations

from pathlib import Path

from pipeline.config.stages import ConvertOptions
from pipeline.core import rundir
from pipeline.core.fsutil import read_json, write_json
from pipeline.data.context import RunContext
from pipeline.formats.conversion import Conversion
from pipeline.formats.kinds import FORMATS, converter
from pipeline.formats.sidecar import write_artifact


def convert(run: str | Path | None, options: ConvertOptions) -> dict:
    return RunContext.run_stage(run, options, _convert_locked)


def _convert_locked(context: RunContext, options: ConvertOptions) -> dict:
    report_path = context.run_dir / "convert.json"
    job = Conversion(context, options, model=context.load_model(options.pruned),  # Keras set up as every stage needs
                     source=context.model_path(options.pruned),
                     report=read_json(report_path) if report_path.exists() else {"artifacts": {}})
    targets = [name for name in FORMATS if name in options.targets]
    if options.int8_onnx and any(FORMATS[name].calibrates for name in targets):  # before anything is written
        from pipeline.optimizing.quantize import calibration_set

        job.calibration = calibration_set(context, options.calibration_samples, options.calibration_data)
    job.recover_onnx = lambda float_proto, full_int8, metadata: _recover_onnx(job, float_proto, full_int8, metadata)
    for name in targets:
        converter(name)(job)
    job.report["opset"] = options.opset
    write_json(report_path, job.report)
    rundir.update_manifest(context.run_dir, "convert", artifacts=[*job.written, report_path])
    return job.report


def _recover_onnx(job: Conversion, float_proto, full_int8: Path, metadata: dict) -> dict:
    """Keep a passing QDQ int8 ONNX as it is; otherwise write ``model_int8_mixed.onnx`` with the
    fewest nodes left float (ONNX Runtime's ``nodes_to_exclude``), as quantize's recovery."""
    import onnx

    from pipeline.formats import onnx as onnx_format
    from pipeline.optimizing.mixed_precision import recover_onnx_int8
    from pipeline.optimizing.quantize import recovery_stage

    context, options = job.context, job.options
    calibration_source, indices, samples = job.calibration
    mixed = job.path("int8_mixed.onnx")
    if options.integer_only:  # a mix leaves nodes float: never for an integer-only target (a stale one goes)
        return {"status": "integer only: no node left float", "integer_only": True}
    full = full_int8.read_bytes()

    def write(content: bytes, recovery: dict) -> dict:
        proto = onnx.load_from_string(content)
        return write_artifact(
            mixed, onnx_format.with_metadata(proto, {**metadata, "mode": "int8_mixed"}), fmt="onnx",
            mode="int8_mixed", context=context, source=job.source, calibration_indices=indices,
            calibration_source=calibration_source,
            options={"opset": options.opset, "method": "onnxruntime-qdq-nodes-excluded", "recovery": recovery})

    return recovery_stage(context, options.recover, options.gates, mixed, job.written, write,
                          lambda x_val, y_val, rules, valid: recover_onnx_int8(
                              job.model, float_proto, full, samples, x_val, y_val, context.task, rules, valid))
