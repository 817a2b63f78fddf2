"""The run directory: one folder per training run, shared by every later stage.

Contract: ``model.keras``, ``train.json``, ``manifest.json`` (versions, seed, data-set hash,
command lines, artifact hashes), and ``runs/latest`` pointing at the newest run.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import os
import platform
import stat
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from pipeline import __version__
from pipeline.core.errors import RunDirError
from pipeline.core.fsutil import make_dirs, move_into, read_json, sha256_file, write_json

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
_KEPT_ON_RETRAIN = {MANIFEST, ".lock", "config.json", "pipeline_state.json", "superseded",
                    "data_cache"}  # content-addressed and checked: still right for a new model


def supersede(run_dir: Path) -> Path | None:
    """Before a new model replaces the run's, move everything made from the old one (models,
    artifacts, sidecars, verify/bench results, reports, variants, checkpoints) into
    ``superseded/<time>/`` and forget it in the manifest. Returns that folder, if any."""
    stale = sorted(p for p in run_dir.iterdir() if p.name not in _KEPT_ON_RETRAIN)
    if not stale:
        return None
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    aside = run_dir / "superseded" / stamp
    make_dirs(aside)
    for path in stale:
        move_into(path, aside)
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
    try:
        tmp_link.unlink(missing_ok=True)
        os.symlink(target, tmp_link)
        os.replace(tmp_link, link)
    except OSError as exc:
        raise RunDirError(f"cannot point {link} at {run_dir}: {exc.strerror or exc}") from None


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


# A lock this process holds (reentrant: `pipeline run` holds its run's lock while its stages
# take it again), and the one a parent pipeline process handed to its child (training under
# another backend runs in a child process of the command that holds the run).
_HELD: set[str] = set()
HELD_LOCK_ENV = "PIPELINE_HELD_LOCK"


def handed_lock_env(directory: Path) -> dict[str, str]:
    """Environment for a child process that works in ``directory`` under this process's lock."""
    return {HELD_LOCK_ENV: json.dumps({"directory": os.path.realpath(directory), "pid": os.getpid()})}


def holds_lock(directory: Path) -> bool:
    """Whether this process holds ``directory``'s lock now (its own, or one handed to it)."""
    key = os.path.realpath(directory)
    return key in _HELD or _handed_to_us(key)


def _handed_to_us(key: str) -> bool:
    try:
        handed = json.loads(os.environ.get(HELD_LOCK_ENV) or "{}")
    except ValueError:
        return False
    return isinstance(handed, dict) and handed.get("directory") == key and handed.get("pid") == os.getppid()


@contextlib.contextmanager
def locked(directory: Path, name: str = ".lock", what: str = "run directory") -> Iterator[None]:
    """Hold ``directory``'s lock for the length of one command; writes inside it go through
    no link (``fsutil.owning``). The lock file is opened without following a link and never
    truncated unless it is a plain file of its own; a second command is refused with the
    holder's pid, command and start time. A dead holder's lock is free (``flock``)."""
    from pipeline.core.fsutil import owning

    key = os.path.realpath(directory)
    if key in _HELD or _handed_to_us(key):
        with owning(directory):
            yield
        return
    lock_path = Path(directory) / name
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RunDirError(f"{lock_path} is a symbolic link, not this pipeline's lock file: remove it") from None
        raise RunDirError(f"cannot write to {what} {directory}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            raise RunDirError(f"{lock_path} is not this pipeline's lock file (a special file or a hard "
                              f"link to another file): remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise RunDirError(f"{what} {directory} is in use by {_holder(fd)}: wait for it to "
                                  f"finish") from None
            raise RunDirError(f"cannot lock {lock_path}: {exc.strerror}") from None
        holder = {"pid": os.getpid(), "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300],
                  "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        _HELD.add(key)
        try:
            with owning(directory):
                if what == "run directory":  # (a search's workers write beside its chief: not there)
                    from pipeline.core.fsutil import sweep_temporaries

                    sweep_temporaries(directory)
                yield
        finally:
            _HELD.discard(key)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    """Who holds a lock, from what its holder wrote (checked: the file is not ours to trust)."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
    except ValueError:
        holder = None
    if not (isinstance(holder, dict) and isinstance(holder.get("pid"), int) and not isinstance(holder["pid"], bool)
            and isinstance(holder.get("command"), str) and isinstance(holder.get("since"), str)):
        return "another pipeline command"
    command = "".join(c if c.isprintable() else "?" for c in holder["command"])[:200]
    since = "".join(c if c.isprintable() else "?" for c in holder["since"])[:40]
    return f"`{command}` (pid {holder['pid']}, since {since})"
