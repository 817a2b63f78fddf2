"""A newcomer's first commands, timed as a user runs them: the default ``pipeline run`` from
nothing (a fresh run directory each round) and ``pipeline bench`` of one artifact, each a fresh
process, wall time by ``time.perf_counter_ns`` around the whole command.

With ``--baseline PIPELINE`` (another checkout's ``pipeline`` script, e.g. ``old/.venv/bin/pipeline``)
the same commands run through both, alternating within each round, and the ratios are printed
side by side; goals: ``pipeline run`` at most 30 s and a one-artifact bench at most 5 s on a
2-core host.

    python benchmarks/first_day.py [--rounds 3] [--baseline OLD/.venv/bin/pipeline]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path


def timed(command: list[str], cwd: Path) -> float:
    started = time.perf_counter_ns()
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter_ns() - started) / 1e9


def one_round(pipeline: str, work: Path) -> dict[str, float]:
    out = work / "run"
    shutil.rmtree(out, ignore_errors=True)
    run_s = timed([pipeline, "run", "--out", str(out), "--quiet"], work)
    bench_s = timed([pipeline, "bench", "--run", str(out), "--artifact", "model_int8.tflite"], work)
    return {"run_s": run_s, "bench_one_s": bench_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pipeline", default=shutil.which("pipeline") or "pipeline")
    parser.add_argument("--baseline", help="another checkout's pipeline script, timed alternately")
    args = parser.parse_args()
    tools = {"this": args.pipeline, **({"baseline": args.baseline} if args.baseline else {})}
    found: dict[str, list[dict[str, float]]] = {name: [] for name in tools}
    with tempfile.TemporaryDirectory() as scratch:
        for index in range(args.rounds):
            order = list(tools) if index % 2 == 0 else list(reversed(tools))  # alternate who goes first
            for name in order:
                work = Path(scratch) / name
                work.mkdir(exist_ok=True)
                found[name].append(one_round(tools[name], work))
    print(f"median of {args.rounds} rounds, each command a fresh process (wall seconds)")
    for metric, goal in (("run_s", 30.0), ("bench_one_s", 5.0)):
        medians = {name: statistics.median(r[metric] for r in rounds) for name, rounds in found.items()}
        line = "  ".join(f"{name} {value:.1f} s" for name, value in medians.items())
        ratio = f"  this/baseline {medians['this'] / medians['baseline']:.2f}" if "baseline" in medians else ""
        print(f"{metric:12s} {line}{ratio}  (goal <= {goal:g} s: {'met' if medians['this'] <= goal else 'missed'})")


if __name__ == "__main__":
    main()
