"""Benchmarks on a device over SSH: copy the artifacts and a sample, run ``edge-runtime bench
--json`` there (installing the package into a venv on the device when missing), merge."""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError, UsageError

_URL = re.compile(r"^ssh://(?:(?P<user>[^@/:]+)@)?(?P<host>[^:/]+)(?::(?P<port>\d+))?/?$")
DEFAULT_REMOTE_ROOT = "~/.edge-runtime"


class RemoteError(PipelineError):
    exit_code = 9


def parse_device(url: str) -> tuple[str | None, str, int]:
    match = _URL.match(url)
    if not match:
        raise UsageError(f"--device must look like ssh://user@host[:port], got '{url}'")
    return match["user"], match["host"], int(match["port"] or 22)


class Connection:
    def __init__(self, url: str, options: list[str]):
        user, host, self.port = parse_device(url)
        self.target = f"{user}@{host}" if user else host
        self.options = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=15", *options]

    def run(self, command: str, *, timeout: float = 600) -> str:
        argv = ["ssh", "-p", str(self.port), *self.options, self.target, command]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RemoteError(f"{self.target}: '{command[:60]}' timed out after {timeout:.0f}s") from None
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise RemoteError(f"{self.target}: '{command[:60]}' failed ({reason[:200]})")
        return done.stdout

    def copy(self, files: list[Path], remote_dir: str) -> None:
        argv = ["scp", "-q", "-P", str(self.port), *self.options, *map(str, files),
                f"{self.target}:{remote_dir}/"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RemoteError(f"copying to {self.target} failed: {done.stderr.strip()[:200]}")


def bench_remote(url: str, artifacts: list[Path], sample: np.ndarray, options,
                 remote_root: str = DEFAULT_REMOTE_ROOT) -> dict:
    from edge_runtime.artifact import sidecar_path

    connection = Connection(url, options.ssh_options)
    root = remote_root.rstrip("/")
    job = connection.run(f"mkdir -p {root} && mktemp -d {root}/job.XXXXXX").strip()
    try:
        edge_runtime = _ensure_runtime(connection, root)
        with tempfile.TemporaryDirectory() as tmp:
            sample_path = Path(tmp) / "sample.npy"
            np.save(sample_path, np.asarray(sample, dtype=np.float32))
            files = [sample_path, *artifacts]
            files += [sidecar_path(a) for a in artifacts if sidecar_path(a).exists()]
            connection.copy(files, job)
        rows, device = [], None
        threads = ",".join(str(t) for t in options.threads)
        for artifact in artifacts:
            command = (f"{edge_runtime} bench {shlex.quote(job + '/' + artifact.name)} --json "
                       f"--threads {threads} --warmup {options.warmup} --runs {options.runs} "
                       f"--min-seconds {options.min_seconds} --sample {job}/sample.npy"
                       + ("" if options.xnnpack else " --no-xnnpack"))
            result = json.loads(connection.run(command).strip().splitlines()[-1])
            device = result["device"]
            rows += result["results"]
    finally:
        connection.run(f"rm -rf {shlex.quote(job)}")
    return {"device": {"location": url, **(device or {})}, "results": rows}


def _ensure_runtime(connection: Connection, root: str) -> str:
    """The device's ``edge-runtime`` command, installed from this project's wheel if missing."""
    venv = f"{root}/venv"
    probe = connection.run(f"test -x {venv}/bin/edge-runtime && echo present || echo missing").strip()
    if probe == "present":
        return f"{venv}/bin/edge-runtime"
    with tempfile.TemporaryDirectory() as tmp:
        wheel = build_wheel(Path(tmp))
        connection.copy([wheel], root)
    connection.run(f"python3 -m venv {venv} && {venv}/bin/pip install -q "
                   f"'{root}/{wheel.name}[onnx]'", timeout=900)
    return f"{venv}/bin/edge-runtime"


def build_wheel(out_dir: Path) -> Path:
    """A wheel of this project (the base install is the light device runtime)."""
    import sys

    project = Path(__file__).resolve().parents[1]
    if not (project / "pyproject.toml").exists():
        raise RemoteError("cannot build a wheel to install on the device: the project source "
                          "is not available; install keras-edge-pipeline on the device by hand")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                           str(out_dir), str(project)], capture_output=True, text=True)
    wheels = list(out_dir.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        raise RemoteError(f"building the wheel failed: {done.stderr.strip()[-200:]}")
    return wheels[0]
