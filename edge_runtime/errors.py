"""The device package's exceptions; its CLI maps each to one line and an exit code."""
from __future__ import annotations


def first_line(problem: BaseException | str) -> str:
    """The first line of an exception's message (or its type), at most 200 characters: what
    a one-line error can quote of a library's multi-line message."""
    text = str(problem).strip()
    if not text:
        return type(problem).__name__ if isinstance(problem, BaseException) else ""
    return text.splitlines()[0][:200]


class CodedError(Exception):
    """A problem the user can fix; ``exit_code`` is what a command exits with. Subclasses set
    it in their header: ``class InputError(EdgeRuntimeError, exit_code=3)``."""

    exit_code = 1

    def __init_subclass__(cls, exit_code: int | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if exit_code is not None:
            cls.exit_code = exit_code


class EdgeRuntimeError(CodedError):
    """The device package's base class."""


class ArtifactError(EdgeRuntimeError, exit_code=4):
    """A model file that is missing, corrupt, tampered with or unsupported."""


class InputError(EdgeRuntimeError, exit_code=3):
    """Inputs of the wrong shape, dtype or values for the model."""


class BackendMissingError(EdgeRuntimeError, exit_code=8):
    """The runtime a model needs (LiteRT, ONNX Runtime) is not installed."""


class Terminated(BaseException):
    """SIGTERM arrived (a BaseException, like KeyboardInterrupt: no ``except Exception`` in a
    library swallows it). The command unwinds, removing its temporary files, and exits 143."""

    exit_code = 143


TERMINATE_GRACE_S = 3.0


def _exit_terminated() -> None:
    import os
    import sys

    sys.stderr.write("terminated (SIGTERM)\n")
    sys.stderr.flush()
    os._exit(Terminated.exit_code)


def exit_on_sigterm() -> None:
    """Turn SIGTERM into ``Terminated`` in the main thread, so a command stopped by a service
    manager or ``kill`` unwinds like one interrupted with Ctrl-C."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def terminate(signum, frame):
        # A library may swallow the exception (an exception in a gc callback is only
        # printed): then a watchdog ends the process with the same line and code.
        watchdog = threading.Timer(TERMINATE_GRACE_S, _exit_terminated)
        watchdog.daemon = True
        watchdog.start()
        raise Terminated()

    signal.signal(signal.SIGTERM, terminate)


# What a file system says that a user can fix: the path, the space, the permissions.
_FILESYSTEM_ERRNOS = {"ENAMETOOLONG": 2, "ENOSPC": 7, "EDQUOT": 7, "EACCES": 7, "EPERM": 7, "EROFS": 7,
                      "ELOOP": 7, "EMFILE": 1, "ENFILE": 1, "EFBIG": 7, "EISDIR": 2, "ENOTDIR": 2,
                      "ENOENT": 2, "EEXIST": 7, "EXDEV": 7, "EIO": 7}


def filesystem_error(exc: OSError) -> tuple[str, int] | None:
    """One line and an exit code for an ``OSError`` the user can fix; None for any other."""
    import errno
    import os

    name = errno.errorcode.get(exc.errno or 0)
    if name not in _FILESYSTEM_ERRNOS:
        return None
    where = f" {exc.filename}" if exc.filename else ""
    if name == "ENAMETOOLONG":
        part = max((p for p in os.fsdecode(exc.filename or "").split(os.sep)), key=len, default="")
        detail = (f": a path component of {len(os.fsencode(part))} bytes; file systems allow 255"
                  if len(os.fsencode(part)) > 255 else ": the path is too long for this file system")
        return f"file name too long{detail} ({os.fsdecode(exc.filename or '')[:80]}…)", _FILESYSTEM_ERRNOS[name]
    return f"{exc.strerror or name}:{where}"[:300], _FILESYSTEM_ERRNOS[name]
