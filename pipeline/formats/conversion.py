"""The helper every format's ``convert(job)`` shares (``pipeline convert`` calls each requested
format's, in ``kinds.FORMATS`` order): one conversion of a run, as a format sees it. The run and
its model, the options, the calibration samples when a format asked for them, the report being
built, and what the stage lends a format that needs a stage's help (int8 recovery), so a format
module stays below the stages."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass
class Conversion:
    context: Any                     # the run (data.context.RunContext)
    options: Any                     # config.stages.ConvertOptions
    model: Any                       # the Keras model, float32
    source: Path                     # its file in the run
    report: dict                     # convert.json as it is being built
    written: list[Path] = field(default_factory=list)
    calibration: tuple | None = None  # (source, indices, model-ready samples), when a format needs them
    # int8 recovery of a QDQ ONNX (optimizing's): (float_proto, full_int8_path, metadata) -> record
    recover_onnx: Callable | None = None

    def path(self, kind: str) -> Path:
        from pipeline.formats.kinds import artifact_file

        return self.context.run_dir / artifact_file(kind, self.options.pruned)

    def record(self, path: Path, sidecar: dict, started: float, **extra) -> None:
        """``path`` in ``convert.json`` (format, mode, size, sha256, seconds since ``started``)."""
        self.report["artifacts"][path.name] = {
            "format": sidecar["format"], "mode": sidecar["mode"], "size_bytes": sidecar["size_bytes"],
            "sha256": sidecar["sha256"], "convert_seconds": round(time.perf_counter() - started, 3),
            **extra}
        self.written.append(path)
