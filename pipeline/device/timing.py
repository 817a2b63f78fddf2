"""The one latency harness of ``pipeline bench``, ``pipeline run``, ``pipeline search`` and
the report: artifacts timed in interleaved rounds, each round in a fresh process (A B C, then
B C A, then C A B), so a slow stretch of the machine falls on every artifact instead of one.

Per artifact and thread count the figure is the median of the rounds' p50s; beside it the
rounds themselves, their spread (max − min) and a 95% bootstrap interval of the p50 over the
pooled per-call times. Two artifacts whose p50s differ by no more than the larger of their
spreads are a tie: rankings, speed-ups and the recommendation treat them as equally fast.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROUNDS = 3
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
BOOTSTRAP_MAX_TIMES = 4000  # pooled per-call times used for the interval (an even subsample)


def rotated(items: list, index: int) -> list:
    shift = index % len(items) if items else 0
    return items[shift:] + items[:shift]


def measure_rounds(artifacts: list[Path], sample, *, threads: list, warmup: int, runs: int,
                   min_seconds: float, xnnpack: bool = True, rounds: int = ROUNDS) -> dict[str, Any]:
    """Every artifact timed in ``rounds`` interleaved rounds here, each round a fresh process
    that loads only edge_runtime and the artifacts; ``min_seconds`` is split over the rounds."""
    from edge_runtime.artifact import check_artifact, read_sidecar

    for path in artifacts:  # a damaged or tampered artifact is the user's error, here, not a child's
        check_artifact(path, read_sidecar(path))
    window = min_seconds / rounds
    per_round, device = [], None
    with tempfile.TemporaryDirectory(prefix="pipeline-rounds-") as work:
        sample_path = Path(work) / "sample.npy"
        np.save(sample_path, np.asarray(sample, dtype=np.float32), allow_pickle=False)
        for index in range(rounds):
            order = rotated(list(range(len(artifacts))), index)
            spec = {"artifacts": [str(artifacts[i]) for i in order], "threads": list(threads),
                    "warmup": warmup, "runs": max(1, runs // rounds), "min_seconds": window,
                    "xnnpack": xnnpack, "sample": str(sample_path)}
            spec_path = Path(work) / f"round{index}.json"
            spec_path.write_text(json.dumps(spec), encoding="utf-8")
            result = _round_in_child(spec_path)
            device = result["device"]
            per_round.append(index_rows(result["results"], order))
    return {"device": device, "results": combine_rounds(per_round), "rounds": rounds,
            "method": round_method(rounds, window)}


def round_method(rounds: int, window_s: float | None) -> dict[str, Any]:
    return {"rounds": rounds, "order": "rotated each round (A B C, B C A, C A B, ...)",
            "process": "a fresh process per round", "window_seconds_per_round": window_s,
            "figure": "median of the rounds' p50", "spread": "max - min of the rounds' p50",
            "interval": f"95% bootstrap of the p50 over the pooled per-call times ({BOOTSTRAP_RESAMPLES} "
                        f"resamples, seed {BOOTSTRAP_SEED})",
            "tie": "p50s that differ by no more than the larger spread"}


def _round_in_child(spec_path: Path) -> dict:
    from pipeline.core.errors import PipelineError

    done = subprocess.run([sys.executable, "-m", "edge_runtime.rounds", str(spec_path)],
                          capture_output=True, text=True, timeout=3600)
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        reason = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        error = PipelineError(f"timing round failed: {reason.removeprefix('error: ')[:200]}")
        error.exit_code = done.returncode if 0 < done.returncode < 64 else 1  # the device side's code
        raise error from None


def index_rows(rows: list[dict], order: list[int]) -> list[dict]:
    """Tag a round's rows with the position of their artifact in the caller's list (two
    artifacts may share a file name, as a search's baseline and winner do)."""
    per_artifact = len(rows) // max(1, len(order))
    return [{**row, "_index": order[i // per_artifact]} for i, row in enumerate(rows)]


def combine_rounds(per_round: list[list[dict]]) -> list[dict]:
    """One row per (artifact, threads), in the caller's artifact order, from every round."""
    keyed: dict[tuple, list[dict]] = {}
    for rows in per_round:
        for row in rows:
            keyed.setdefault((row["_index"], row.get("threads") or 0), []).append(row)
    return [summarize(keyed[key]) for key in sorted(keyed)]


def summarize(rows: list[dict]) -> dict:
    """The rounds of one artifact and thread count as one row."""
    p50s = [float(r["p50_ms"]) for r in rows]
    times = np.concatenate([np.asarray(r.get("times_ms") or [], dtype=np.float64) for r in rows]) \
        if any(r.get("times_ms") for r in rows) else np.zeros(0)
    row = {k: v for k, v in rows[0].items() if k not in ("times_ms", "_index")}
    row.update(p50_ms=float(np.median(p50s)), p50_rounds_ms=p50s, p50_spread_ms=float(max(p50s) - min(p50s)),
               p50_ci95_ms=bootstrap_median(times))
    if times.size:
        row.update(min_ms=float(times.min()), runs_pooled=int(sum(r["method"]["runs"] for r in rows)))
    for key, q in (("p90_ms", 90), ("p99_ms", 99)):
        # Like the p50, the median of the rounds' own: the pooled times weigh a round by its
        # call count, so a fast round of many calls could put the pooled p90 below the rounds'
        # median p50 (seen on a loaded machine). Medians of ordered rounds keep p50 <= p90 <= p99.
        per_round = [float(r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        if len(per_round) == len(rows):
            row[key] = float(np.median(per_round))
        elif times.size:  # a round that did not say: the pooled times are all there is
            row[key] = float(np.percentile(times, q))
    return row


def bootstrap_median(times: np.ndarray) -> list[float] | None:
    if times.size < 2:
        return None
    stride = max(1, -(-times.size // BOOTSTRAP_MAX_TIMES))
    times = times[::stride]
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    medians = np.median(rng.choice(times, size=(BOOTSTRAP_RESAMPLES, times.size), replace=True), axis=1)
    low, high = np.percentile(medians, [2.5, 97.5])
    return [float(low), float(high)]


def tie_margin(a: dict, b: dict) -> float:
    """How far apart two timed rows' p50s must be to rank them: the larger spread (0 if a row
    has no rounds, as for a timing made before rounds existed)."""
    return max(float(a.get("p50_spread_ms") or 0.0), float(b.get("p50_spread_ms") or 0.0))


def faster(a: dict, b: dict) -> bool:
    """``a`` is faster than ``b`` beyond the noise of their rounds."""
    return a["p50_ms"] < b["p50_ms"] - tie_margin(a, b)
