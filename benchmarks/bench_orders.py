"""Do back-to-back `pipeline bench` runs rank a run's artifacts the same way?

    python benchmarks/bench_orders.py --run RUN_DIR [--times 6]

Each `pipeline bench` times every artifact in interleaved rounds (pipeline/device/timing.py). For each
pair of artifacts, a bench *separates* them when their p50s differ by more than the larger of
their recorded spreads; the pair is consistent when every bench that separates it puts it in
the same order. Prints each bench's order (with its p50s) and the inconsistent pairs, if any.
"""
from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--times", type=int, default=6)
    parser.add_argument("--threads", default="1")
    args = parser.parse_args()
    benches = []
    for index in range(args.times):
        done = subprocess.run([sys.executable, "-m", "pipeline.launcher", "bench", "--run", str(args.run),
                               "--threads", args.threads, "--quiet"], capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr.strip()[-300:])
            return 1
        rows = json.loads((args.run / "bench.json").read_text())["results"]
        benches.append({r["artifact"]: r for r in rows})
        order = sorted(rows, key=lambda r: r["p50_ms"])
        print(f"bench {index + 1}: " + " < ".join(f"{r['artifact'].removeprefix('model_')} {r['p50_ms'] * 1000:.1f}"
                                                  f"±{r['p50_spread_ms'] * 1000:.1f}" for r in order)
              + "  (µs, p50 ± spread)")
    names = sorted(benches[0])
    inconsistent, separated = [], 0
    for a, b in itertools.combinations(names, 2):
        verdicts = set()
        for bench in benches:
            ra, rb = bench[a], bench[b]
            margin = max(ra["p50_spread_ms"], rb["p50_spread_ms"])
            if abs(ra["p50_ms"] - rb["p50_ms"]) > margin:
                verdicts.add(ra["p50_ms"] < rb["p50_ms"])
        separated += bool(verdicts)
        if len(verdicts) > 1:
            inconsistent.append(f"{a} vs {b}")
    pairs = len(names) * (len(names) - 1) // 2
    print(f"\n{pairs} pairs; {separated} separated by at least one bench; "
          f"inconsistent: {', '.join(inconsistent) if inconsistent else 'none'}")
    return 1 if inconsistent else 0


if __name__ == "__main__":
    sys.exit(main())
