"""Every write the pipeline makes goes through here.

Two promises: no half-written file survives an interrupted command (a temporary file beside
the target, fsync, rename; an old file is replaced only once its successor is complete), and
no write follows a symbolic link planted inside a directory the command owns. A command owns
its run or search directory while it holds that directory's lock (``owning``); below such a
root every path component is opened with ``O_NOFOLLOW`` from the root's own descriptor, so a
link named ``report`` or ``trial_01`` is refused instead of written through. The root itself
is the user's: it was named on the command line, links above it included.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Any, Iterator

from edge_runtime.artifact import sha256_file  # noqa: F401 - one definition, shared with the device
from pipeline.core.errors import RunDirError

# Process-wide, not per thread: KerasTuner's oracle writes its state from a server thread.
_OWNED: list[str] = []
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


@contextlib.contextmanager
def owning(directory: str | os.PathLike) -> Iterator[None]:
    """Writes below ``directory`` may not pass through a symbolic link inside it."""
    root = os.path.abspath(directory)
    _OWNED.append(root)
    try:
        yield
    finally:
        _OWNED.remove(root)


def _root_for(path: str) -> str | None:
    """The innermost owned directory that holds ``path`` (both absolute)."""
    inside = [root for root in _OWNED if path != root and path.startswith(root.rstrip(os.sep) + os.sep)]
    return max(inside, key=len) if inside else None


def _refuse_link(link: str) -> RunDirError:
    return RunDirError(f"{link} is a symbolic link (or not a directory) inside a directory this command "
                       f"owns: refusing to write through it; remove it and run again")


def open_parent(path: str | os.PathLike, *, create: bool = True) -> int:
    """A descriptor of ``path``'s directory, reached without following any link below the
    owned root that holds it (created on the way when ``create``). The caller closes it."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    root = _root_for(path)
    if root is None:  # outside every owned directory: the user's own location
        if create:
            try:
                os.makedirs(parent, exist_ok=True)
            except OSError as exc:
                raise RunDirError(f"cannot create {parent}: {exc.strerror or exc}") from None
        return _open_dir(parent)
    fd = _open_dir(root)
    walked = root
    for part in Path(os.path.relpath(parent, root)).parts if parent != root else ():
        walked = os.path.join(walked, part)
        try:
            try:
                child = os.open(part, _DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o777, dir_fd=fd)
                child = os.open(part, _DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise _refuse_link(walked) from None
            raise RunDirError(f"cannot write to {walked}: {exc.strerror or exc}") from None
        os.close(fd)
        fd = child
    return fd


def _open_dir(directory: str) -> int:
    try:
        return os.open(directory, _DIRECTORY)
    except OSError as exc:
        raise RunDirError(f"cannot write to {directory}: {exc.strerror or exc}") from None


def make_dirs(directory: str | os.PathLike) -> Path:
    """``mkdir -p`` that does not pass through a link inside an owned directory."""
    os.close(open_parent(os.path.join(os.path.abspath(directory), "_"), create=True))
    return Path(directory)


@contextlib.contextmanager
def atomic_path(final_path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final_path``; rename it into place on success.

    The temporary file lives in the same (checked) directory, so the rename is atomic; it
    has ``final_path``'s suffix, since some writers (Keras) insist on it. On failure the
    temporary file is removed and ``final_path`` is left untouched.
    """
    final = os.path.abspath(final_path)
    dir_fd = open_parent(final)
    name = os.path.basename(final)
    tmp_name = f".{name[:60]}.{secrets.token_hex(6)}.tmp{Path(name).suffix[:16]}"
    try:
        try:
            os.close(os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                             0o666, dir_fd=dir_fd))
        except OSError as exc:
            raise RunDirError(f"cannot write to {os.path.dirname(final)}: {exc.strerror or exc}") from None
        try:
            yield Path(os.path.dirname(final)) / tmp_name
            fd = os.open(tmp_name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp_name, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            with contextlib.suppress(OSError):
                os.fsync(dir_fd)
        except OSError as exc:
            _unlink_quietly(tmp_name, dir_fd)
            raise RunDirError(f"cannot write {final}: {exc.strerror or exc}") from None
        except BaseException:
            _unlink_quietly(tmp_name, dir_fd)
            raise
    finally:
        os.close(dir_fd)


# What atomic_path names its temporary files: a killed command (SIGKILL, power loss) leaves
# them behind, hidden, never read; the next command to own the directory removes them.
TEMPORARY = re.compile(r"^\..{1,60}\.[0-9a-f]{12}\.tmp(\.[^/]{1,15})?$")


def is_temporary(name: str) -> bool:
    return bool(TEMPORARY.match(name))


def sweep_temporaries(directory: str | os.PathLike) -> int:
    """Remove the temporary files a killed command left in ``directory`` and below (no link
    followed; a folder with a lock of its own, such as a search inside a run, is another
    command's to sweep). Call it only while holding ``directory``'s lock."""
    removed = 0
    top = os.path.abspath(directory)
    for folder, subfolders, files in os.walk(top, followlinks=False):
        if folder != top and any(name == ".lock" or name.startswith(".lock-") for name in files):
            subfolders[:] = []
            continue
        for name in files:
            if is_temporary(name):
                remove_file(os.path.join(folder, name))
                removed += 1
    return removed


def _unlink_quietly(name: str, dir_fd: int) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name, dir_fd=dir_fd)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, payload: Any) -> Path:
    text = json.dumps(payload, indent=2, sort_keys=False, default=_json_default) + "\n"
    return write_bytes(path, text.encode())


def write_npy(path: str | os.PathLike, array) -> Path:
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return write_bytes(path, buffer.getvalue())


def copy_file(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """``target`` becomes a copy of the regular file ``source`` (never of a link's target)."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise RunDirError(f"cannot read {source}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise RunDirError(f"{source} is not a regular file")
        return write_bytes(target, fh.read())


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line to a log file (created if missing), never through a link."""
    path = os.path.abspath(path)
    dir_fd = open_parent(path)
    try:
        fd = os.open(os.path.basename(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                     | os.O_CLOEXEC | os.O_NONBLOCK, 0o666, dir_fd=dir_fd)
    except OSError as exc:
        raise _refuse_link(path) if exc.errno == errno.ELOOP else RunDirError(
            f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        os.close(dir_fd)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            raise RunDirError(f"{path} is not a file this pipeline made (a special file or a hard link): remove it")
        fh.write(line.rstrip("\n") + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def remove_file(path: str | os.PathLike) -> None:
    """Remove one file if it is there (a link is removed itself, its target left alone)."""
    path = os.path.abspath(path)
    try:
        dir_fd = open_parent(path, create=False)
    except RunDirError:
        if not os.path.lexists(os.path.dirname(path)):
            return
        raise
    try:
        os.unlink(os.path.basename(path), dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise RunDirError(f"cannot remove {path}: {exc.strerror or exc}") from None
    finally:
        os.close(dir_fd)


def move_into(path: str | os.PathLike, directory: str | os.PathLike) -> None:
    """Rename ``path`` (a file, folder or link, never followed) into ``directory``."""
    path = os.path.abspath(path)
    source_fd = open_parent(path, create=False)
    target_fd = open_parent(os.path.join(os.path.abspath(directory), "_"))
    try:
        os.replace(os.path.basename(path), os.path.basename(path), src_dir_fd=source_fd, dst_dir_fd=target_fd)
    except OSError as exc:
        raise RunDirError(f"cannot move {path} into {directory}: {exc.strerror or exc}") from None
    finally:
        os.close(source_fd)
        os.close(target_fd)


MAX_JSON_BYTES = 64 << 20  # a record or state file this pipeline wrote is far smaller


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file: a regular file of at most ``MAX_JSON_BYTES`` (a FIFO planted under a
    record's name would block its reader; OSError), parsed (ValueError if it is not JSON)."""
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise OSError(errno.EINVAL, "not a regular file", os.fspath(path))
    if info.st_size > MAX_JSON_BYTES:
        raise ValueError(f"{os.fspath(path)} is {info.st_size:,} bytes, more than a record may be ({MAX_JSON_BYTES:,})")
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays, Paths: the only non-JSON types our results carry.
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
