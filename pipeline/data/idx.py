"""MNIST-style IDX files (optionally gzip-compressed), read with their header checked."""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

from pipeline.core.errors import DataError

MAX_IDX_BYTES = 8 << 30
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read(MAX_IDX_BYTES + 1)
        if len(data) > MAX_IDX_BYTES:
            raise DataError(f"{path} holds more than {MAX_IDX_BYTES:,} bytes: too large for an IDX data set here")
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if not 1 <= ndim <= 4 or len(data) < header:
        raise DataError(f"{path} is not an IDX file: a header of {ndim} dimensions does not fit its "
                        f"{len(data)} bytes")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(f"{path} is truncated: expected {expected} bytes of data, "
                        f"found {len(data) - header}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
