"""Benchmarks on a device over SSH: copy the artifacts and a sample, run ``edge-runtime bench
--json`` there (installing the package into a venv on the device when missing), merge."""
from __future__ import annotations

import json
import shlex
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from pipeline.config.devices import DEFAULT_REMOTE_ROOT, check_remote_dir, parse_device
from pipeline.core.errors import PipelineError


class RemoteError(PipelineError, exit_code=9):
    """The device cannot be reached, or its edge-runtime failed."""


class Connection:
    def __init__(self, url: str, options: list[str]):
        user, host, self.port = parse_device(url)
        self.target = f"{user}@{host}" if user else host
        self.options = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=15", *options]

    def run(self, command: str, *, timeout: float = 600) -> str:
        argv = ["ssh", "-p", str(self.port), *self.options, "--", self.target, command]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RemoteError(f"{self.target}: '{command[:60]}' timed out after {timeout:.0f}s") from None
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise RemoteError(f"{self.target}: '{command[:60]}' failed ({reason[:200]})")
        return done.stdout

    def copy(self, files: list[Path], remote_dir: str) -> None:
        argv = ["scp", "-q", "-P", str(self.port), *self.options, "--", *map(str, files),
                f"{self.target}:{remote_dir}/"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RemoteError(f"copying to {self.target} failed: {done.stderr.strip()[:200]}")


def bench_remote(url: str, artifacts: list[Path], sample: np.ndarray, options,
                 remote_root: str = DEFAULT_REMOTE_ROOT) -> dict:
    from edge_runtime.artifact import sidecar_path

    root = check_remote_dir(remote_root)
    connection = Connection(url, options.ssh_options)
    if root == "~" or root.startswith("~/"):  # every later path is absolute, quoted once
        home = connection.run('printf "%s" "$HOME"').strip()
        root = home.rstrip("/") + root[1:]
    quoted = shlex.quote(root)
    job = connection.run(f"mkdir -p {quoted} && mktemp -d {quoted}/job.XXXXXX").strip()
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
                       f"--min-seconds {options.min_seconds} --sample {shlex.quote(job + '/sample.npy')}"
                       + ("" if options.xnnpack else " --no-xnnpack"))
            result = _device_answer(connection.run(command), url, artifact.name)
            device = result["device"]
            rows += result["results"]
    finally:
        connection.run(f"rm -rf {shlex.quote(job)}")
    return {"device": {"location": url, **(device or {})}, "results": rows}


def _device_answer(stdout: str, url: str, artifact: str) -> dict:
    """The device's ``edge-runtime bench --json`` line, checked field by field: a device is
    another machine, and what it prints is not trusted."""
    def bad(why: str) -> RemoteError:
        return RemoteError(f"{url}: the device's answer for {artifact} is not a bench report ({why})")

    lines = stdout.strip().splitlines()
    if not lines:
        raise bad("no output")
    try:
        answer = json.loads(lines[-1])
    except ValueError:
        raise bad("not JSON") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("device"), dict):
        raise bad("no device description")
    results = answer.get("results")
    if not isinstance(results, list) or not results:
        raise bad("no results")
    for row in results:
        if not isinstance(row, dict):
            raise bad("a result that is not an object")
        for key in ("p50_ms", "p90_ms", "p99_ms"):
            value = row.get(key)
            if key in row or key == "p50_ms":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
                        or value != value or value == float("inf"):
                    raise bad(f"{key} {value!r} is not a positive latency")
        if "threads" in row and (isinstance(row["threads"], bool) or not isinstance(row["threads"], int)):
            raise bad("threads is not an integer")
    device = {k: v for k, v in answer["device"].items()
              if v is None or (isinstance(v, (str, int, float)) and not isinstance(v, bool))}
    return {"device": device, "results": results}


def _ensure_runtime(connection: Connection, root: str) -> str:
    """The device's ``edge-runtime`` command, installed from this project's wheel if missing."""
    venv = f"{root}/venv"
    command = shlex.quote(f"{venv}/bin/edge-runtime")
    probe = connection.run(f"test -x {command} && echo present || echo missing").strip()
    if probe == "present":
        return command
    with tempfile.TemporaryDirectory() as tmp:
        wheel = build_wheel(Path(tmp))
        connection.copy([wheel], root)
    connection.run(f"python3 -m venv {shlex.quote(venv)} && {shlex.quote(venv + '/bin/pip')} "
                   f"install -q {shlex.quote(f'{root}/{wheel.name}[onnx]')}", timeout=900)
    return command


def build_wheel(out_dir: Path) -> Path:
    """A wheel of this project (the base install is the light device runtime)."""
    import sys

    project = Path(__file__).resolve().parents[2]  # pipeline/device/remote.py
    if not (project / "pyproject.toml").exists():
        raise RemoteError("cannot build a wheel to install on the device: the project source "
                          "is not available; install keras-edge-pipeline on the device by hand")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                           str(out_dir), str(project)], capture_output=True, text=True)
    wheels = list(out_dir.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        raise RemoteError(f"building the wheel failed: {done.stderr.strip()[-200:]}")
    return wheels[0]
