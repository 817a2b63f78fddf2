"""``pipeline export``: an artifact of a run as what a board's project builds in (C arrays for
TensorFlow Lite for Microcontrollers, ``formats.c_array``)."""
from __future__ import annotations

from pathlib import Path

from pipeline.config.stages import ExportOptions
from pipeline.core import rundir


def export(run: str | Path | None, options: ExportOptions) -> dict:
    """Write ``model_data.h``, ``model_data.cc`` and ``model_data.json`` for ``options.artifact``
    into ``options.out_dir`` (default: the run's ``c_array/``); return what they hold."""
    from pipeline.formats.c_array import export_c_array

    options.validate()
    run_dir = rundir.resolve_run(run)
    out_dir = Path(options.out_dir) if options.out_dir else run_dir / "c_array"
    return export_c_array(run_dir, options.artifact, out_dir, symbol=options.symbol, metadata=options.metadata)
