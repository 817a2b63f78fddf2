"""Atomic file writes and hashing: no half-written file survives an interrupted command."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from edge_runtime.artifact import sha256_file  # noqa: F401 - one definition, shared with the device
from pipeline.errors import RunDirError


@contextlib.contextmanager
def atomic_path(final_path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final_path``; rename it into place on success.

    The temporary file lives in the same directory so the rename is atomic on POSIX.
    On failure the temporary file is removed and ``final_path`` is left untouched.
    """
    final_path = Path(final_path)
    try:
        final_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final_path.name}.", suffix=".tmp",
                                        dir=final_path.parent)
        os.close(fd)
    except OSError as exc:
        raise RunDirError(f"cannot write to {final_path.parent}: {exc.strerror}") from None
    tmp_path = Path(tmp_name)
    # Some writers (Keras) insist on the real suffix; give the temp file the same one.
    tmp_with_suffix = tmp_path.with_name(tmp_path.name + final_path.suffix)
    tmp_path.rename(tmp_with_suffix)
    os.chmod(tmp_with_suffix, 0o666 & ~_umask())
    try:
        yield tmp_with_suffix
        with open(tmp_with_suffix, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_with_suffix, final_path)
    except OSError as exc:
        tmp_with_suffix.unlink(missing_ok=True)
        raise RunDirError(f"cannot write {final_path}: {exc.strerror or exc}") from None
    except BaseException:
        tmp_with_suffix.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | os.PathLike, payload: Any) -> Path:
    text = json.dumps(payload, indent=2, sort_keys=False, default=_json_default) + "\n"
    return write_bytes(path, text.encode())


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays, Paths: the only non-JSON types our results carry.
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
