"""Timing candidates where the trials run (a fresh process per timing, or the device), the
latency budget relative to the zoo model's own p50, and each architecture's pooled timings."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from pipeline.core.errors import PipelineError
from pipeline.core.fsutil import make_dirs, read_json, write_bytes, write_json, write_npy
from pipeline.search.space import SearchOptions, architecture

log = logging.getLogger("pipeline")


# A trial timed within this fraction of the latency budget is timed twice more (median of
# three): microsecond latencies drift by about that much between processes.
NEAR_BUDGET = 0.2


FINAL_ROUNDS = 3  # the baseline and the winner, timed alternately, median of each


BUDGET_FILE = "latency_budget.json"


REFERENCE_TIMINGS = 5  # the zoo model's untrained twin, timed this often (median)


def _relative_budget(options: SearchOptions, data, out: Path, timer: "Timer") -> dict:
    """``max_latency_ratio`` × the p50 of the zoo model as it comes (its architecture with its
    initial weights, int8: latency does not depend on the weights), timed where the trials are
    timed, at the start; kept in ``latency_budget.json`` so a resumed search keeps its budget
    (a file that does not hold one for this ratio is measured again)."""
    import hashlib

    from pipeline.core.backend import import_keras
    from pipeline.core.recipes import zoo_spec
    from pipeline.formats.tflite import to_tflite

    path = out / BUDGET_FILE
    try:
        recorded = read_json(path) if path.is_file() and not path.is_symlink() else None
    except (OSError, ValueError):
        recorded = None
    if isinstance(recorded, dict) and recorded.get("ratio") == options.max_latency_ratio:
        timings = _timings(recorded.get("timings_ms"))
        if len(timings) == REFERENCE_TIMINGS:
            reference = float(np.median(timings))
            return {"ratio": options.max_latency_ratio, "reference": recorded.get("reference"),
                    "timings_ms": timings, "reference_p50_ms": reference,
                    "max_latency_ms": options.max_latency_ratio * reference}
    keras = import_keras()
    keras.backend.clear_session()
    model = zoo_spec(options.model).build(tuple(data.input_shape), int(data.num_classes))
    name = hashlib.sha256(f"reference-{options.model}".encode()).hexdigest()[:16]
    artifact = out / "screen" / f"{name}.tflite"
    make_dirs(artifact.parent)
    write_bytes(artifact, to_tflite(model, "int8", calibration=data.split("train")[0][:100]))
    timings = [p50 for _ in range(REFERENCE_TIMINGS) for p50 in timer.p50([artifact])]
    reference = float(np.median(timings))
    record = {"ratio": options.max_latency_ratio, "reference": f"{options.model} as it comes, untrained, int8",
              "timings_ms": timings, "reference_p50_ms": reference,
              "max_latency_ms": options.max_latency_ratio * reference}
    write_json(path, record)
    log.info("latency budget: %.2f × %s's p50 %.4f ms = %.4f ms", options.max_latency_ratio, options.model,
             reference, record["max_latency_ms"])
    return record


class Timer:
    """Int8 p50 latency at batch 1 on one thread, measured as ``pipeline bench`` measures it,
    where the model will run: in a new process that loads only edge_runtime (this process's
    TensorFlow threads would share the cores), or on ``--device`` over SSH."""

    def __init__(self, options: SearchOptions, sample: np.ndarray, out: Path):
        self.options, self.sample = options, np.asarray(sample, dtype=np.float32)
        self.sample_path = out / "timing_sample.npy"
        self.device: dict | None = None

    def where(self) -> dict:
        if self.options.device:
            return {"location": self.options.device, **(self.device or {})}
        from edge_runtime.bench import device_description

        return {"location": "local, a fresh process per measurement", **device_description()}

    def p50(self, artifacts: list[Path]) -> list[float]:
        if self.options.device:
            from pipeline.config.stages import BenchOptions
            from pipeline.device.remote import bench_remote

            bench_options = BenchOptions(threads=[1], runs=50, warmup=20, min_seconds=self.options.bench_seconds,
                                         device=self.options.device, ssh_options=self.options.ssh_options)
            report = bench_remote(self.options.device, artifacts, self.sample, bench_options,
                                  self.options.remote_root)
            self.device = report["device"]
            return [row["p50_ms"] for row in report["results"]]
        if not self.sample_path.is_file() or self.sample_path.is_symlink():
            write_npy(self.sample_path, self.sample)
        return [self._fresh_process(path) for path in artifacts]

    def _fresh_process(self, artifact: Path) -> float:
        import subprocess
        import sys

        command = [sys.executable, "-m", "edge_runtime.cli", "bench", str(artifact), "--json", "--threads", "1",
                   "--warmup", "20", "--warmup-seconds", "0.1", "--runs", "50",
                   "--min-seconds", str(self.options.bench_seconds), "--sample", str(self.sample_path)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        try:
            return float(json.loads(done.stdout.strip().splitlines()[-1])["results"][0]["p50_ms"])
        except (IndexError, KeyError, ValueError):
            reason = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
            raise PipelineError(f"timing {artifact.name} failed: {reason[:200]}") from None

    def median_p50(self, artifacts: list[Path], rounds: int) -> tuple[list[float], list[list[float]]]:
        """Each artifact's median p50 over ``rounds`` interleaved rounds (pipeline.device.timing,
        as ``pipeline bench`` times; on ``--device``, the order alternating between rounds)."""
        if not self.options.device:
            from pipeline.device.timing import measure_rounds

            measured = measure_rounds(artifacts, self.sample, threads=[1], warmup=20, runs=50 * rounds,
                                      min_seconds=self.options.bench_seconds * rounds, rounds=rounds)["results"]
            return [row["p50_ms"] for row in measured], [row["p50_rounds_ms"] for row in measured]
        measured: list[list[float]] = [[] for _ in artifacts]
        for index in range(rounds):
            order = list(range(len(artifacts)))[::(-1 if index % 2 else 1)]
            for position, p50 in zip(order, self.p50([artifacts[i] for i in order])):
                measured[position].append(p50)
        return [float(np.median(m)) for m in measured], measured


def _budget_metrics(artifact: Path, options: SearchOptions, timer: Timer, expected_p50_ms: float | None = None) -> dict:
    """What the budgets are about: p50, size and, with an arena budget, TFLite Micro's
    measured arena. The p50 is the median of three timings when the first is near the latency
    budget or far from ``expected_p50_ms`` (its untrained twin's: a disturbed timing)."""
    p50s = timer.p50([artifact])
    near = options.max_latency_ms and abs(p50s[0] / options.max_latency_ms - 1.0) < NEAR_BUDGET
    if near or (expected_p50_ms and abs(p50s[0] / expected_p50_ms - 1.0) > NEAR_BUDGET):
        p50s += timer.p50([artifact]) + timer.p50([artifact])
    metrics = {"p50_ms": float(np.median(p50s)), "p50_ms_measured": p50s, "size_kb": artifact.stat().st_size / 1024}
    if options.max_ram_kb is not None:
        from pipeline.formats.micro import run_micro

        metrics["arena_kb"] = run_micro(artifact).arena_bytes / 1024
    return metrics


PLAUSIBLE_P50_MS = 60_000.0  # one inference of a model the search may choose: never a minute


def _timings(value) -> list[float]:
    """A recorded list of p50s, if it is one of plausible times (the files it comes from are
    untrusted: a budget of 1e300 ms would silently be no budget)."""
    if not isinstance(value, list) or not 0 < len(value) <= 1000:
        return []
    valid = all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
                and 0 < v <= PLAUSIBLE_P50_MS for v in value)
    return [float(v) for v in value] if valid else []


def _pool_timings(trials: list[dict], screen, options: SearchOptions) -> dict[str, dict]:  # screen: a Screen
    """Which trials fit the latency budget, decided per architecture on all its timings.

    Latency depends on the architecture, not on the weights, but one architecture timed near
    the budget lands on either side of it from one process to the next (measured on digits:
    0.0151 and 0.0158 ms for one architecture in two trials of a 0.0154 ms budget). So each
    finished trial's ``feasible`` is decided again on the median of every timing of its
    architecture: its untrained twin's and every trial's that has it. Its own p50 stays in
    ``p50_ms``; the pooled one is ``p50_ms_pooled``. Returns each architecture's pool."""
    timings: dict[str, list[float]] = {}
    for trial in trials:
        if not _timed(trial):
            continue
        key = architecture(options.model, trial["hyperparameters"])
        if key not in timings:
            timings[key] = screen.timings(trial["hyperparameters"])
        timings[key] += _trial_timings(trial)
    pools = {key: {"p50_ms": float(np.median(v)), "timings": len(v), "range_ms": [min(v), max(v)]}
             for key, v in timings.items() if v}
    for trial in trials:
        pool = pools.get(architecture(options.model, trial["hyperparameters"]))
        if pool is None or not _timed(trial):
            continue
        metrics = trial["metrics"]
        metrics["p50_ms_pooled"] = pool["p50_ms"]
        metrics["feasible"] = float(not _over_budget({**metrics, "p50_ms": pool["p50_ms"]}, options))
    return pools


def _timed(trial: dict) -> bool:
    return trial["status"] == "COMPLETED" and all(k in trial["metrics"] for k in ("p50_ms", "size_kb"))


def _trial_timings(trial: dict) -> list[float]:
    """The trial's own p50s, from its measurement (its median alone where that is unreadable)."""
    path = Path(trial["dir"]) / "measurement.json"
    try:
        recorded = read_json(path) if path.is_file() and not path.is_symlink() else {}
    except (OSError, ValueError):
        recorded = {}
    own = _timings(recorded.get("p50_ms_measured")) if isinstance(recorded, dict) else []
    if own and recorded.get("hyperparameters") == trial["hyperparameters"]:
        return own
    p50 = trial["metrics"]["p50_ms"]
    return [float(p50)] if isinstance(p50, (int, float)) and np.isfinite(p50) and p50 > 0 else []


def _over_budget(metrics: dict, options: SearchOptions) -> dict[str, float]:
    """Each exceeded budget and by how much (0.1: 10% over)."""
    over = {}
    for name, value, budget in (("latency", metrics["p50_ms"], options.max_latency_ms),
                                ("size", metrics["size_kb"], options.max_size_kb),
                                ("arena", metrics.get("arena_kb"), options.max_ram_kb)):
        if budget is not None and value > budget:
            over[name] = value / budget - 1.0
    return over
