"""Where a benchmark runs: the ``ssh://user@host[:port]`` of a device and the directory its
edge-runtime lives in, checked to be what ssh and scp read as a user, a host and a path and
nothing else (``bench.devices``, ``search.device``, ``--device``, ``--remote-dir``)."""
from __future__ import annotations

import re

from pipeline.core.errors import UsageError

_URL = re.compile(r"^ssh://(?:(?P<user>[^@/:]+)@)?(?P<host>[^:/]+)(?::(?P<port>\d+))?/?$")
# What ssh and scp will read as a user and a host name and nothing else: a leading "-"
# would make the destination an option (ssh -oProxyCommand=... runs a command).
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,31}$")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
# A remote directory: absolute or under the home directory, plain path characters only.
_REMOTE_DIR = re.compile(r"^(?:~|~/[A-Za-z0-9_./-]*|/[A-Za-z0-9_./-]*)$")
DEFAULT_REMOTE_ROOT = "~/.edge-runtime"


def parse_device(url: str) -> tuple[str | None, str, int]:
    match = _URL.match(url)
    if not match:
        raise UsageError(f"--device must look like ssh://user@host[:port], got '{url}'")
    user, host, port = match["user"], match["host"], int(match["port"] or 22)
    if user is not None and not _USER.match(user):
        raise UsageError(f"--device: '{user}' is not a valid user name (letters, digits, . _ -; "
                         f"not starting with -)")
    if not _HOST.match(host) or len(host) > 253:
        raise UsageError(f"--device: '{host}' is not a host name or IPv4 address")
    if not 0 < port < 65536:
        raise UsageError(f"--device: port {port} is outside 1..65535")
    return user, host, port


def check_remote_dir(path: str) -> str:
    """``path`` if it is a plain absolute or ``~/`` directory, else a UsageError."""
    if not _REMOTE_DIR.match(path) or "/../" in f"{path}/" or "/-" in path:
        raise UsageError(f"--remote-dir must be an absolute or ~/ path of letters, digits and "
                         f"_ . - /, got '{path}'")
    return path.rstrip("/") or "/"
