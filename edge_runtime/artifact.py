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


def read_sidecar(artifact: str | os.PathLike) -> dict[str, Any] | None:
    """The artifact's metadata, or None for a model that came without one."""
    path = sidecar_path(artifact)
    if not path.exists():
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            sidecar = json.load(fh)
    except (ValueError, OSError) as exc:
        raise ArtifactError(f"sidecar {path} is unreadable: {exc}") from None
    if not isinstance(sidecar, dict):
        raise ArtifactError(f"sidecar {path} is not a JSON object: the file is damaged or not "
                            f"a sidecar; copy it again")
    return sidecar


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
