"""Sidecar metadata: ``model_int8.tflite`` is described by ``model_int8.tflite.json``."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from edge_runtime.errors import ArtifactError

SIDECAR_SUFFIX = ".json"


def sidecar_path(artifact: str | os.PathLike) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + SIDECAR_SUFFIX)


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


MAX_SIDECAR_BYTES = 16 << 20  # the largest sidecar holds a few thousand calibration indices


def read_sidecar(artifact: str | os.PathLike) -> dict[str, Any] | None:
    """The artifact's metadata, or None for a model that came without one."""
    path = sidecar_path(artifact)
    if not path.exists():
        return None
    if not path.is_file():  # a FIFO would block the reader
        raise ArtifactError(f"sidecar {path} is not a regular file")
    if path.stat().st_size > MAX_SIDECAR_BYTES:
        raise ArtifactError(f"sidecar {path} is {path.stat().st_size:,} bytes: not a sidecar (at most "
                            f"{MAX_SIDECAR_BYTES:,})")
    try:
        with open(path, encoding="utf-8") as fh:
            sidecar = json.load(fh)
    except (ValueError, OSError) as exc:
        raise ArtifactError(f"sidecar {path} is unreadable: {exc}") from None
    if not isinstance(sidecar, dict):
        raise ArtifactError(f"sidecar {path} is not a JSON object: the file is damaged or not "
                            f"a sidecar; copy it again")
    problems = sidecar_problems(sidecar)
    if problems:
        raise ArtifactError(f"sidecar {path} is damaged ({'; '.join(problems[:3])}): copy it again "
                            f"or rebuild the artifact")
    return sidecar


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _tensor_problems(where: str, tensors) -> list[str]:
    if not isinstance(tensors, list) or not all(isinstance(t, dict) for t in tensors):
        return [f"{where} must be a list of objects"]
    problems = []
    for i, tensor in enumerate(tensors):
        if not isinstance(tensor.get("name", ""), str) or not isinstance(tensor.get("dtype", "float32"), str):
            problems.append(f"{where}[{i}].name and .dtype must be strings")
        shape = tensor.get("shape", [])
        if not isinstance(shape, list) or not all(d is None or _is_int(d) for d in shape):
            problems.append(f"{where}[{i}].shape must be a list of integers")
        scale, zero_point = tensor.get("scale", 0.0), tensor.get("zero_point", 0)
        if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not _is_int(zero_point):
            problems.append(f"{where}[{i}].scale must be a number and .zero_point an integer")
    return problems


def sidecar_problems(sidecar: dict[str, Any]) -> list[str]:
    """Fields of the wrong type in a sidecar (a file anyone may have edited): empty if none."""
    from edge_runtime.preprocessing import spec_problems

    problems = []
    sha = sidecar.get("sha256")
    if sha is not None and not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
        problems.append("sha256 must be 64 hexadecimal digits")
    for key in ("artifact", "format", "mode", "task"):
        if sidecar.get(key) is not None and not isinstance(sidecar[key], str):
            problems.append(f"{key} must be a string")
    for key in ("inputs", "outputs"):
        if key in sidecar:
            problems += _tensor_problems(key, sidecar[key])
    if sidecar.get("preprocessing") is not None:
        problems += spec_problems(sidecar["preprocessing"])
    names = sidecar.get("class_names")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        problems.append("class_names must be a list of strings")
    for key in ("options", "source_model", "calibration", "versions"):
        if sidecar.get(key) is not None and not isinstance(sidecar[key], dict):
            problems.append(f"{key} must be an object")
    anomaly = sidecar.get("anomaly")
    if anomaly is not None:
        threshold = anomaly.get("threshold") if isinstance(anomaly, dict) else None
        if not (isinstance(threshold, (int, float)) and not isinstance(threshold, bool)
                and threshold >= 0 and threshold < float("inf")):
            problems.append("anomaly.threshold must be a finite number >= 0")
    return problems


def check_artifact(artifact: str | os.PathLike, sidecar: dict[str, Any] | None) -> None:
    """Refuse a file whose sha256 differs from the one its sidecar recorded.

    LiteRT runs many corrupted models without a word, so the hash is the only reliable check.
    """
    if not sidecar or "sha256" not in sidecar:
        return
    actual = sha256_file(artifact)
    if actual != sidecar["sha256"]:
        raise ArtifactError(
            f"{artifact} does not match its sidecar (sha256 {actual[:12]}…, expected "
            f"{sidecar['sha256'][:12]}…): the file is corrupt or was changed; copy it again")
