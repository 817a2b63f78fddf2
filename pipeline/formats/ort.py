"""ONNX Runtime Mobile's ``.ort`` format, made by ONNX Runtime's own converter
(``python -m onnxruntime.tools.convert_onnx_models_to_ort``), one model at a time in a
directory of its own, in a child process (the tool prints, and may fail, in ways of its own).

"Fixed" optimization style (the converter's default, and its advice for the CPU execution
provider): the graph is optimized once, here, and saved; a phone loads it without optimizing
again. ``--target_platform arm`` is what phones run, and ``.ort`` files made for it load on
x86-64 too, so the same file is verified here and shipped.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from pipeline.core.errors import ConversionError

TARGET_PLATFORM = "arm"
OPTIMIZATION_STYLE = "Fixed"


def onnx_to_ort(onnx_path: Path) -> bytes:
    """The ``.ort`` bytes of ``onnx_path``."""
    with tempfile.TemporaryDirectory(prefix="pipeline-ort-") as tmp:
        source = Path(tmp) / "model.onnx"
        source.write_bytes(Path(onnx_path).read_bytes())
        out = Path(tmp) / "out"
        command = [sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", str(source),
                   "--output_dir", str(out), "--optimization_style", OPTIMIZATION_STYLE,
                   "--target_platform", TARGET_PLATFORM]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            raise ConversionError(f"ONNX Runtime's .ort converter took over 10 minutes on "
                                  f"{Path(onnx_path).name}") from None
        made = sorted(out.glob("*.ort"))
        if done.returncode != 0 or len(made) != 1:
            lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
            reason = next((line for line in reversed(lines) if "error" in line.lower()), lines[-1] if lines else "")
            raise ConversionError(f".ort conversion of {Path(onnx_path).name} failed: {reason.strip()[:300]}")
        return made[0].read_bytes()


def ort_name(onnx_name: str) -> str:
    return onnx_name[: -len(".onnx")] + ".ort"


def convert(job) -> None:
    """``pipeline convert --to ort``: each ONNX artifact of the run (from the current model) in
    ONNX Runtime Mobile's format, with its sidecar: the same tensors, so the device feeds it as
    it feeds the ``.onnx``."""
    import time

    from edge_runtime.artifact import read_sidecar
    from pipeline.core.errors import UsageError
    from pipeline.formats.kinds import ORT_SOURCES
    from pipeline.formats.sidecar import check_fresh, write_artifact

    context, source = job.context, job.source
    onnx_files = [p for p in (job.path(kind) for kind in ORT_SOURCES)
                  if p.is_file() and not p.is_symlink()]
    if not onnx_files:
        raise UsageError(f"{context.run_dir} has no ONNX artifacts to convert to .ort: add onnx to --to "
                         f"(--to onnx,ort) or run `pipeline convert --to onnx` first")
    check_fresh(context.run_dir, onnx_files)
    for onnx_path in onnx_files:
        from edge_runtime import load

        runner = load(onnx_path)  # checked against its sidecar's sha256 before it is converted
        onnx_sidecar = read_sidecar(onnx_path) or {}
        _check_tensors(onnx_path, onnx_sidecar, runner)
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
        job.record(path, sidecar, started, method="onnxruntime.tools.convert_onnx_models_to_ort")
        job.report["artifacts"][path.name]["onnx"] = onnx_path.name


def _check_tensors(onnx_path: Path, sidecar: dict, runner) -> None:
    """The ``.ort`` takes its ONNX source's tensor description (their quantization): it must name
    the tensors the ONNX model really has (the sidecar's sha256 covers the model, not itself)."""
    for kind, actual in (("inputs", runner.inputs), ("outputs", runner.outputs)):
        given = sidecar.get(kind)
        if given is None:
            continue
        described = [(t.get("name"), t.get("shape"), t.get("dtype")) if isinstance(t, dict) else t
                     for t in (given if isinstance(given, list) else [given])]
        if described != [(t.name, list(t.shape), t.dtype) for t in actual]:
            raise ConversionError(f"{onnx_path.name}.json describes {kind} that {onnx_path.name} does not have: "
                                  f"the sidecar was edited, convert the ONNX model again")
