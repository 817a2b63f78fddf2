"""The run directory: one folder per training run, shared by every later stage.

Contract: ``model.keras``, ``train.json``, ``manifest.json`` (versions, seed, data-set hash,
command lines, artifact hashes), and ``runs/latest`` pointing at the newest run.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from pipeline import __version__
from pipeline.errors import RunDirError
from pipeline.fsutil import read_json, sha256_file, write_json

RUN_FORMAT = 1
DEFAULT_RUNS_ROOT = Path("runs")
MANIFEST = "manifest.json"
_VERSIONED_PACKAGES = ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert",
                       "numpy", "scikit-learn")


def safe_name(text: str) -> str:
    """``text`` (a data set spec such as ``npz:/data/x.npz``) as part of a directory name."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:40]


def new_run_dir(model: str, dataset: str, out: str | os.PathLike | None = None,
                runs_root: str | os.PathLike = DEFAULT_RUNS_ROOT) -> Path:
    """Create the directory for a new training run (``--out`` or a timestamped default)."""
    if out is None:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path(runs_root) / f"{model}-{safe_name(dataset)}-{stamp}"
    run_dir = Path(out)
    if run_dir.is_dir() and any(run_dir.iterdir()) and not (run_dir / MANIFEST).exists():
        raise RunDirError(f"{run_dir} is not empty and is not a pipeline run: choose a new or "
                          f"empty --out directory (nothing was written)")
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"--out {run_dir} is a file, not a directory")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot create run directory {run_dir}: {exc.strerror}") from None
    if not os.access(run_dir, os.W_OK):
        raise RunDirError(f"run directory {run_dir} is not writable")
    if not (run_dir / MANIFEST).exists():  # from now on the directory is a pipeline run
        write_json(run_dir / MANIFEST, {"run_format": RUN_FORMAT, "pipeline_version": __version__,
                                        "stages": {}, "artifacts": {}})
    return run_dir


# What a run's own bookkeeping and a new training keep; everything else in a run directory was
# made from the old model and is moved aside when the model is replaced.
_KEPT_ON_RETRAIN = {MANIFEST, ".lock", "config.json", "pipeline_state.json", "superseded"}


def supersede(run_dir: Path) -> Path | None:
    """Before a new model replaces the run's, move everything made from the old one (models,
    artifacts, sidecars, verify/bench results, reports, variants, checkpoints) into
    ``superseded/<time>/`` and forget it in the manifest. Returns that folder, if any."""
    stale = sorted(p for p in run_dir.iterdir() if p.name not in _KEPT_ON_RETRAIN)
    if not stale:
        return None
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    aside = run_dir / "superseded" / stamp
    aside.mkdir(parents=True)
    for path in stale:
        os.replace(path, aside / path.name)
    manifest = load_manifest(run_dir)
    if manifest:
        manifest["artifacts"] = {}
        manifest["stages"] = {}
        manifest.setdefault("superseded", []).append(os.path.relpath(aside, run_dir))
        write_json(run_dir / MANIFEST, manifest)
    return aside


def point_latest(run_dir: Path, runs_root: str | os.PathLike = DEFAULT_RUNS_ROOT) -> None:
    """Atomically point ``runs/latest`` at ``run_dir``."""
    runs_root = Path(runs_root)
    runs_root.mkdir(parents=True, exist_ok=True)
    link = runs_root / "latest"
    target = os.path.relpath(run_dir.resolve(), runs_root.resolve())
    tmp_link = runs_root / f".latest.{os.getpid()}.tmp"
    tmp_link.unlink(missing_ok=True)
    os.symlink(target, tmp_link)
    os.replace(tmp_link, link)


def resolve_run(run: str | os.PathLike | None,
                runs_root: str | os.PathLike = DEFAULT_RUNS_ROOT) -> Path:
    """The run directory a command works on: ``--run`` or ``runs/latest``; checked."""
    run_dir = Path(run) if run is not None else Path(runs_root) / "latest"
    if not run_dir.exists():
        if run is None:
            raise RunDirError(f"no run found at {run_dir}: run `pipeline train` first or pass --run DIR")
        raise RunDirError(f"run directory {run_dir} does not exist")
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is a file, not a run directory")
    run_dir = run_dir.resolve()
    manifest_path = run_dir / MANIFEST
    if manifest_path.exists():
        check_format(load_manifest(run_dir), run_dir)
    return run_dir


def check_format(manifest: dict, run_dir: Path) -> None:
    found = manifest.get("run_format")
    if found != RUN_FORMAT:
        made_by = manifest.get("pipeline_version", "unknown")
        newer_or_older = "newer" if isinstance(found, int) and found > RUN_FORMAT else "older"
        raise RunDirError(
            f"run directory {run_dir} was written by a {newer_or_older} pipeline "
            f"(version {made_by}, run format {found}); this is {__version__} (run format "
            f"{RUN_FORMAT}): retrain with this version or use the matching pipeline")


def load_manifest(run_dir: Path) -> dict:
    try:
        return read_json(run_dir / MANIFEST)
    except FileNotFoundError:
        return {}
    except (ValueError, OSError) as exc:
        raise RunDirError(f"{run_dir / MANIFEST} is unreadable: {exc}") from None


def environment() -> dict[str, Any]:
    versions = {"python": platform.python_version(), "pipeline": __version__}
    for package in _VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"versions": versions, "platform": platform.platform(), "machine": platform.machine()}


def update_manifest(run_dir: Path, stage: str, *, stage_info: dict[str, Any] | None = None,
                    artifacts: list[Path] | tuple[Path, ...] = (), **top_level: Any) -> dict:
    """Record a finished stage, its command line and the hashes of the files it wrote."""
    manifest = load_manifest(run_dir)
    if manifest:
        check_format(manifest, run_dir)
    manifest.setdefault("run_format", RUN_FORMAT)
    manifest.setdefault("pipeline_version", __version__)
    manifest.update(environment())
    manifest.update(top_level)
    stages = manifest.setdefault("stages", {})
    stages[stage] = {
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        **(stage_info or {}),
    }
    hashes = manifest.setdefault("artifacts", {})
    for path in artifacts:
        hashes[os.path.relpath(path, run_dir)] = sha256_file(path)
    write_json(run_dir / MANIFEST, manifest)
    return manifest


@contextlib.contextmanager
def locked(run_dir: Path, name: str = ".lock") -> Iterator[None]:
    """Hold an exclusive lock on the run directory for the length of one command."""
    lock_path = run_dir / name
    try:
        fh = open(lock_path, "a+")
    except OSError as exc:
        raise RunDirError(f"cannot write to run directory {run_dir}: {exc.strerror}") from None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                fh.seek(0)
                holder = fh.read().strip() or "unknown"
                raise RunDirError(
                    f"run directory {run_dir} is in use by another pipeline command "
                    f"(pid {holder}); wait for it to finish") from None
            raise
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)
