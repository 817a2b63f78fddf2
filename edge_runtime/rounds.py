"""One timing round in a fresh process: each artifact of a list, in the order given, measured
as ``edge-runtime bench`` measures it, with every per-call time kept (for the caller's
interval). Run by ``pipeline bench``'s interleaved rounds (here, or on the device):

    python -m edge_runtime.rounds SPEC.json     # prints one JSON line

SPEC: ``{"artifacts": [paths], "threads": [1], "warmup": 20, "runs": 100, "min_seconds": 0.2,
"xnnpack": true, "sample": "sample.npy" | null}``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

MAX_KEPT_TIMES = 20_000  # per artifact and thread count: enough for a bootstrap of the median


def run_round(spec: dict) -> dict:
    import numpy as np

    from edge_runtime.bench import bench_file, device_description

    sample = np.load(spec["sample"], allow_pickle=False) if spec.get("sample") else None
    rows = []
    for artifact in spec["artifacts"]:
        rows += bench_file(artifact, threads=spec.get("threads") or [None], xnnpack=spec.get("xnnpack", True),
                           sample=sample, warmup=spec.get("warmup", 20), runs=spec.get("runs", 100),
                           min_seconds=spec.get("min_seconds", 0.2), keep_times=MAX_KEPT_TIMES)
    return {"device": device_description(), "results": rows}


def main(argv: list[str] | None = None) -> int:
    from edge_runtime.errors import EdgeRuntimeError

    argv = sys.argv[1:] if argv is None else argv
    try:
        spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
        result = run_round(spec)
    except EdgeRuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (IndexError, OSError, ValueError, KeyError, TypeError) as exc:
        print(f"error: timing round: {type(exc).__name__}: {str(exc)[:200]}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
