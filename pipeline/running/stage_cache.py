"""The cache of ``pipeline run``'s stages: each stage's inputs (its config section, the hashes
of what it reads, the code version) hashed and recorded with its outputs' hashes in
``pipeline_state.json``, so a stage whose inputs and outputs are unchanged is skipped and a
killed run resumes from its last finished stage."""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pipeline.core.fsutil import read_json, sha256_file, write_json

STATE = "pipeline_state.json"
Progress = Callable[[str, str, float], None]


@dataclass
class StageRecord:
    name: str
    status: str      # "ran" or "cached"
    seconds: float


PROJECT_ROOT = Path(__file__).resolve().parents[2]  # pipeline/running/stage_cache.py


def source_files() -> list[Path]:
    """The project's own source: every module of ``pipeline``, ``models`` and ``edge_runtime``."""
    return [path for package in ("pipeline", "models", "edge_runtime")
            for path in sorted((PROJECT_ROOT / package).rglob("*.py"))]


def code_version() -> str:
    """A hash of the project's own source: a code change invalidates cached stages."""
    digest = hashlib.sha256()
    for path in source_files():
        digest.update(path.relative_to(PROJECT_ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


class Stages:
    """Runs or skips stages, and keeps ``pipeline_state.json`` in step."""

    def __init__(self, run_dir: Path, force: set[str], progress: Progress | None):
        self.run_dir, self.force, self.progress = run_dir, force, progress
        self.path = run_dir / STATE
        self.state = {"stages": valid_stages(self.path)}
        self.code = code_version()
        self.records: dict[str, StageRecord] = {}
        self.started: set[str] = set()

    def run(self, stage: str, key: str, inputs: dict[str, Any], work: Callable[[], list[Path]],
            result: Callable[[], Any] | None = None) -> bool:
        """Run ``work`` unless its inputs are unchanged and its outputs intact; True if it ran."""
        digest = hashlib.sha256(json.dumps({"inputs": inputs, "code": self.code},
                                           sort_keys=True, default=str).encode()).hexdigest()
        recorded = self.state["stages"].get(key)
        started = time.perf_counter()
        if stage not in self.force and recorded and recorded["inputs"] == digest and all(
                (self.run_dir / rel).is_file() and sha256_file(self.run_dir / rel) == sha
                for rel, sha in recorded["outputs"].items()):
            self._record(stage, "cached", started)
            return False
        if self.progress and stage not in self.started:
            self.started.add(stage)
            self.progress(stage, "start", 0.0)
        outputs = work()
        self.state["stages"][key] = {
            "inputs": digest,
            # every output, missing ones too: a state that names a missing file reruns its stage
            "outputs": {str(p.relative_to(self.run_dir)): sha256_file(p) if p.is_file() else None for p in outputs},
            "finished": time.time(),
        }
        write_json(self.path, self.state)
        self._record(stage, "ran", started)
        return True

    def _record(self, stage: str, status: str, started: float) -> None:
        seconds = time.perf_counter() - started
        previous = self.records.get(stage)
        if previous:  # several variants: one line per stage, summed
            previous.seconds += seconds
            previous.status = "ran" if "ran" in (previous.status, status) else "cached"
        else:
            self.records[stage] = StageRecord(stage, status, seconds)

    def finish(self, stage: str) -> None:
        if self.progress and stage in self.records:
            record = self.records[stage]
            self.progress(stage, record.status, record.seconds)


def valid_stages(path: Path) -> dict[str, dict]:
    """The stages ``pipeline_state.json`` records, keeping only entries that are well formed:
    the file is the run directory's, so anyone may have written it. A dropped entry reruns."""
    try:
        state = read_json(path) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    stages = state.get("stages") if isinstance(state, dict) else None
    if not isinstance(stages, dict):
        return {}

    def well_formed(entry) -> bool:
        outputs = entry.get("outputs") if isinstance(entry, dict) else None
        return (isinstance(outputs, dict) and isinstance(entry.get("inputs"), str) and bool(outputs)
                and all(isinstance(rel, str) and not os.path.isabs(rel) and ".." not in Path(rel).parts
                        and isinstance(sha, str) and len(sha) == 64 for rel, sha in outputs.items()))

    return {key: entry for key, entry in stages.items() if isinstance(key, str) and well_formed(entry)}


def hashes(paths: list[Path]) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in paths if p.exists()}


def data_fingerprint(dataset: str) -> str | None:
    """The content hash of a data set given by path (the name alone says nothing of it)."""
    _, _, path = dataset.partition(":")
    if not path:
        return None
    target = Path(path)
    files = sorted(target.rglob("*")) if target.is_dir() else [target]
    digest = hashlib.sha256()
    for file in files:
        if file.is_file():
            digest.update(file.name.encode() + sha256_file(file).encode())
    return digest.hexdigest()


def file_fingerprint(path: str | None) -> str | None:
    return sha256_file(Path(path)) if path and Path(path).is_file() else None
