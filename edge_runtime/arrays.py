"""Arrays a user hands the device runtime (``predict``'s inputs, ``eval``'s samples and
labels, ``bench``'s sample), read and checked before anything is allocated or run: a regular
file (a FIFO or a device is never opened), a header whose declared size the file can hold,
no more than ``MAX_ARRAY_BYTES`` decoded, numeric and finite samples, integer labels."""
from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import numpy as np

from edge_runtime.errors import InputError

MAX_ARRAY_BYTES = 4 << 30  # one array decoded on a device: a larger one is refused before allocation


def read_array(path: Path, key: str | None = None) -> np.ndarray:
    """The array in an ``.npy``, or the member ``key`` (default: the first) of an ``.npz``."""
    path = Path(path)
    try:
        info = os.stat(path)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{path} is not a regular file")
    try:
        if zipfile.is_zipfile(path):
            return _npz_member(path, key)
        if key is not None:
            raise InputError(f"{path} is a single .npy array; this needs an .npz with '{key}'")
        with open(path, "rb") as fh:
            _check_header(fh, info.st_size, path.name)
            fh.seek(0)
            return np.load(fh, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"cannot read {path}: {' '.join(str(exc).split())[:200] or type(exc).__name__}") from None


def _npz_member(path: Path, key: str | None) -> np.ndarray:
    with zipfile.ZipFile(path) as archive:
        members = {name[:-4]: name for name in archive.namelist() if name.endswith(".npy")}
        if not members:
            raise InputError(f"{path} holds no arrays")
        if key is not None and key not in members:
            raise InputError(f"{path} has no '{key}' array (found: {', '.join(members)})")
        name = members[key if key is not None else next(iter(members))]
        member = archive.getinfo(name)
        with archive.open(member) as fh:  # reads at most the member's declared size
            _check_header(fh, member.file_size, f"{path.name}:{name}")
        with archive.open(member) as fh:
            return np.load(fh, allow_pickle=False)


def _check_header(fh, available: int, what: str) -> None:
    """Refuse an array whose header declares more bytes than its file holds, or than a device
    should allocate for one input, before any allocation."""
    version = np.lib.format.read_magic(fh)
    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                   else np.lib.format.read_array_header_2_0)
    shape, _, dtype = read_header(fh, max_header_size=10_000)
    if dtype.hasobject:
        raise InputError(f"{what} holds Python objects, which are never unpickled here")
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if declared > MAX_ARRAY_BYTES:
        raise InputError(f"{what} declares {declared:,} bytes of {dtype}{list(shape)}, more than the "
                         f"{MAX_ARRAY_BYTES:,} one input may take")
    if declared > available:
        raise InputError(f"{what} declares {declared:,} bytes of {dtype}{list(shape)} but holds {available:,}")


def check_samples(x: np.ndarray, what: str) -> np.ndarray:
    """A batch of numeric, finite samples: at least one, each with a shape."""
    if x.dtype.kind not in "fiub":
        raise InputError(f"{what} holds {x.dtype} values; samples are numbers")
    if x.ndim == 0:
        raise InputError(f"{what} is a single number (0-d); samples are a batch with one row each")
    if len(x) == 0:
        raise InputError(f"{what} holds no samples")
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise InputError(f"{what} holds {int(np.count_nonzero(~np.isfinite(x)))} NaN or inf values")
    return x


def check_labels(y: np.ndarray, classes: int | None, what: str) -> np.ndarray:
    """Class indices in [0, ``classes``) (None: the model's outputs are not known ahead):
    integers, or floats with integer values."""
    if y.ndim == 0:
        raise InputError(f"{what} is a single number (0-d); labels are one per sample")
    y = y.reshape(-1)
    whole = y.dtype.kind in "iu" or (y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)))
    if not whole:
        raise InputError(f"{what} holds {y.dtype} values that are not class indices (whole numbers)")
    if y.size and y.min() < 0:
        raise InputError(f"{what} holds the label {y.min():g}; class indices start at 0")
    if y.size and classes is not None and y.max() >= classes:
        raise InputError(f"{what} holds the label {y.max():g}; the model has {classes} classes (0 to {classes - 1})")
    return y.astype(np.int64)
