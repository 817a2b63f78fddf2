"""Seconds and peak memory of train, quantize and verify as the data set grows.

The CIFAR-10 JPEG folder (``../shared/data/cifar10/cifar10_jpeg.tar.gz``: train/<class>/
50,000 images, test/<class>/ 10,000) is unpacked once; for each fraction a folder of the
first images of every class (hard links, same layout) is made, and on it, each stage in a
fresh process (as a user runs them):

    pipeline train --model resnet8 --dataset folder:DIR --epochs 1 --out RUN
    pipeline quantize --run RUN --int8 --no-recover
    pipeline verify --run RUN

Printed per fraction and stage: wall seconds, peak resident memory (the child's
``ru_maxrss``, from ``os.wait4``), whether the data came from the run's decode cache, and the
training throughput; then each stage's peak at the largest fraction over the smallest.

    python benchmarks/scale.py [--fractions 0.1,0.3,1.0] [--work DIR] [--archive PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10" / "cifar10_jpeg.tar.gz"


def unpack(archive: Path, into: Path) -> Path:
    """The archive's folder with train/ and test/ (unpacked once into ``into``)."""
    marker = into / ".unpacked"
    if not marker.exists():
        into.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter="data")
        marker.write_text("ok\n")
    found = [p.parent for p in into.rglob("train") if p.is_dir() and (p.parent / "test").is_dir()]
    if not found:
        raise SystemExit(f"{archive} holds no folder with train/ and test/")
    return found[0]


def subset(full: Path, fraction: float, into: Path) -> tuple[Path, int]:
    """``into``: the first ``fraction`` of every class of every split of ``full`` (hard links)."""
    count = 0
    if into.exists():
        shutil.rmtree(into)
    for split in ("train", "test"):
        for class_dir in sorted(p for p in (full / split).iterdir() if p.is_dir()):
            images = sorted(class_dir.iterdir())
            keep = images[:max(1, round(len(images) * fraction))]
            target = into / split / class_dir.name
            target.mkdir(parents=True)
            for image in keep:
                os.link(image, target / image.name)
            count += len(keep)
    return into, count


def stage(args: list[str], allowed=(0,)) -> dict:
    """One pipeline command in a child process: its seconds, peak RSS and output (an exit code
    outside ``allowed`` stops the benchmark)."""
    with tempfile.TemporaryFile("w+") as log:
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "pipeline.launcher", *args], cwd=ROOT,
                                 stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        log.seek(0)
        output = log.read()
    code = os.waitstatus_to_exitcode(status)
    if code not in allowed:
        print(output[-3000:], file=sys.stderr)
        raise SystemExit(f"`pipeline {' '.join(args)}` exited {code}")
    return {"seconds": seconds, "peak_mb": usage.ru_maxrss / 1024, "output": output, "code": code,
            "cache": "hit" if "from the run's decode cache" in output else (
                "decoded" if "decoded" in output and "decode cache" in output else "-")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=ARCHIVE)
    parser.add_argument("--fractions", default="0.1,0.3,1.0")
    parser.add_argument("--work", type=Path, default=None, help="where to unpack (default: a temporary folder)")
    parser.add_argument("--model", default="resnet8")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    if not args.archive.is_file():
        print(f"skipped: {args.archive} is not here (../shared/data/cifar10)")
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="pipeline-scale-"))
    full = unpack(args.archive, work / "full")
    fractions = [float(f) for f in args.fractions.split(",")]
    rows = []
    print(f"{'images':>7} {'stage':<9} {'seconds':>8} {'peak RSS':>9} {'data':>8}  notes")
    for fraction in fractions:
        folder, images = subset(full, fraction, work / f"part-{fraction:g}")
        run = work / f"run-{fraction:g}"
        shutil.rmtree(run, ignore_errors=True)
        commands = {
            "train": ["train", "--model", args.model, "--dataset", f"folder:{folder}",
                      "--epochs", str(args.epochs), "--out", str(run)],
            "quantize": ["quantize", "--run", str(run), "--int8", "--no-recover"],
            "verify": ["verify", "--run", str(run)],
        }
        for name, command in commands.items():
            # verify exits 6 when a gate fails (a one-epoch model may): that is a result here
            result = stage(command, allowed=(0, 6) if name == "verify" else (0,))
            note = ""
            if name == "train":
                info = json.loads((run / "train.json").read_text())
                trained = info["data"]["sizes"]["train"] * info["epochs_run"]
                note = (f"test accuracy {info['test_accuracy']:.4f}, {trained / info['train_seconds']:,.0f} "
                        f"samples/s over {info['train_seconds']:.0f} s of fit, "
                        f"splits {info['data']['sizes']}")
            if name == "verify":
                row = re.search(r"^model_int8\.tflite\s+int8\s+([\d.]+)", result["output"], re.M)
                note = (f"int8 accuracy {row.group(1) if row else '?'}, gates "
                        f"{'passed' if result['code'] == 0 else 'failed (exit 6)'}")
            rows.append((fraction, name, result))
            print(f"{images:>7} {name:<9} {result['seconds']:>8.1f} {result['peak_mb']:>7.0f}MiB "
                  f"{result['cache']:>8}  {note}", flush=True)
    if len(fractions) > 1:
        small, large = min(fractions), max(fractions)
        for name in ("train", "quantize", "verify"):
            peak = {f: r["peak_mb"] for f, n, r in rows if n == name}
            print(f"{name}: peak RSS at {large:g} / at {small:g} = {peak[large] / peak[small]:.3f}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
