"""SIGKILL `pipeline search` (or `pipeline run`) at seeded random instants and resume each
time: what finished before a kill must still be there, unchanged, and nothing may run twice
(search); the resumed run's artifacts are byte-identical to an uninterrupted run's (run).

    python benchmarks/kill_resume.py search --kills 20 --seed 0
    python benchmarks/kill_resume.py run --kills 20 --seed 0

Each kill lands at a uniform random delay (0.5 s to ``--max-delay``) after the command
started; each resume makes a few seconds of progress, so 20 kills spread over the trials.
After each kill: every JSON file parses, every trial measured before the kill has the same
``measurement.json``, and ``trials.log`` names no trial twice. At the end, the last resume
finishes and the totals are printed.
"""
from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PIPELINE = [sys.executable, "-m", "pipeline.launcher"]
SEARCH = ["search", "--model", "mlp", "--epochs", "3", "--bench-seconds", "0.1", "--trials", "12",
          "--max-latency-ms", "1000", "--quiet"]
RUN = ["run", "--set", "train.model=mlp", "--set", "train.epochs=2", "--set", "prune.sparsity=[0, 0.5]",
       "--set", 'quantize.modes=["int8"]', "--set", "bench.runs=10", "--set", "bench.min_seconds=0", "--quiet"]


def _json_files_parse(out: Path) -> list[str]:
    broken = []
    for path in out.rglob("*.json"):
        if path.name.startswith("."):  # a temporary file the kill left (never read)
            continue
        try:
            json.loads(path.read_text())
        except ValueError:
            broken.append(str(path.relative_to(out)))
    return broken


def _measured(out: Path) -> dict[str, bytes]:
    return {p.parent.name: p.read_bytes() for p in out.glob("tuner/trial_*/measurement.json")}


def _log(out: Path) -> list[str]:
    log = out / "tuner" / "trials.log"
    return log.read_text().split()[0::2] if log.exists() else []


def _artifact_hashes(out: Path) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and p.suffix in (".keras", ".tflite", ".onnx")
            and "superseded" not in p.parts and not p.name.startswith(".")}


def kill_runs(args, rng) -> int:
    """`pipeline run`: one uninterrupted run for reference, then per kill a fresh directory,
    a SIGKILL at a uniform instant of the reference's duration, and a resume; the resumed
    run's models and artifacts must equal the reference's byte for byte (training is
    deterministic), and every JSON must parse after the kill."""
    root = Path(tempfile.mkdtemp(prefix="kill-run-"))
    started = time.perf_counter()
    reference = subprocess.run([*PIPELINE, *RUN, "--out", str(root / "reference")], capture_output=True, text=True)
    duration = time.perf_counter() - started
    if reference.returncode != 0:
        print(f"reference run failed: {reference.stderr[-300:]}")
        return 1
    expected = _artifact_hashes(root / "reference")
    problems = []
    for kill in range(args.kills):
        out = root / f"kill{kill:02d}"
        delay = rng.uniform(0.5, duration)
        process = subprocess.Popen([*PIPELINE, *RUN, "--out", str(out)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        try:
            process.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
        broken = _json_files_parse(out) if out.exists() else []
        stages = sorted(json.loads((out / "pipeline_state.json").read_text())["stages"]) \
            if (out / "pipeline_state.json").exists() else []
        done = subprocess.run([*PIPELINE, *RUN, "--out", str(out)], capture_output=True, text=True)
        same = _artifact_hashes(out) == expected if done.returncode == 0 else False
        if broken or not same:
            problems.append(f"kill {kill} at {delay:.1f} s: unparsable {broken}, resume exit {done.returncode}, "
                            f"artifacts identical: {same}")
        print(f"kill {kill:2d} at {delay:5.1f} s of {duration:.0f}: stages done before the kill: "
              f"{len(stages)}; resume exit {done.returncode}; artifacts identical to the reference: {same}")
    print(f"\n{args.kills} kills of `pipeline run`, each resumed: {time.perf_counter() - started:.0f} s in all")
    print("problems: " + ("; ".join(problems) if problems else "none"))
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("search", "run"))
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-delay", type=float, default=15.0, help="seconds after the start")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    if args.command == "run":
        return kill_runs(args, rng)
    out = Path(tempfile.mkdtemp(prefix=f"kill-{args.command}-")) / "out"
    command = [*PIPELINE, *(SEARCH if args.command == "search" else RUN), "--out", str(out)]
    problems, finished_early, started = [], 0, time.perf_counter()
    for kill in range(args.kills):
        before = _measured(out)
        delay = rng.uniform(0.5, args.max_delay)
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            process.wait(timeout=delay)
            finished_early += 1
            if process.returncode != 0:
                problems.append(f"kill {kill}: exit {process.returncode}: {process.stderr.read()[-300:]}")
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
        after = _measured(out)
        changed = [name for name, data in before.items() if after.get(name) != data]
        log = _log(out)
        twice = sorted({name for name in log if log.count(name) > 1})
        broken = _json_files_parse(out)
        problems += [f"kill {kill} at {delay:.1f} s: {what}" for what, bad in
                     (("measurements changed", changed), ("ran twice", twice), ("unparsable", broken)) if bad]
        print(f"kill {kill:2d} at {delay:5.1f} s: {len(after)} trials measured, log {len(log)} entries"
              + (" (the command had finished)" if process.returncode is not None and process.returncode >= 0 else ""))
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        problems.append(f"final resume: exit {done.returncode}: {done.stderr[-300:]}")
    log = _log(out)
    print(f"\n{args.kills} kills ({finished_early} after the command had finished), then one resume: "
          f"exit {done.returncode}, {time.perf_counter() - started:.0f} s in all")
    if args.command == "search":
        summary = json.loads((out / "search.json").read_text()) if (out / "search.json").exists() else {}
        print(f"trials completed: {sum(t['status'] == 'COMPLETED' for t in summary.get('trials', []))}; "
              f"trial runs in trials.log: {len(log)} ({len(set(log))} distinct)")
    else:
        print(f"report: {(out / 'report.md').exists()}")
    print("problems: " + ("; ".join(problems) if problems else "none"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
