"""The run's decode cache: a data set given by path, decoded once into raw split arrays.

``pipeline train`` decodes an image folder (or reads an npz or IDX files) once and keeps the
raw uint8 splits as ``.npy`` files in ``RUN/data_cache/<key>/``; every later command on the
run memory-maps them instead of decoding again. The key is a hash of every source file's
relative name, size and modification time, and of the loading options (seed, fractions,
image size): a changed folder is another key and is decoded again. An entry is never
trusted blindly: its index must parse, every array must be a regular file with the shape
and dtype the index gives, and the arrays' hash must equal the index's (the same hash the
run's ``train.json`` records); a damaged entry is said, removed and decoded again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
import time
from pathlib import Path

import numpy as np

from pipeline.core.errors import DataError, RunDirError

log = logging.getLogger("pipeline")

CACHE_DIR = "data_cache"
INDEX = "index.json"
FORMAT = 1
ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
_KEY = re.compile(r"^[0-9a-f]{64}$")


def source_key(spec: str, path: str, options: dict) -> str:
    """The content address of a data set given by path: its files' names, sizes and mtimes
    (every regular file below a folder, or the one file) and the options it is loaded with."""
    root = Path(path)
    if root.is_dir():
        listing = []
        for folder, subfolders, files in os.walk(root):
            subfolders.sort()
            for name in sorted(files):
                info = os.stat(os.path.join(folder, name))
                if stat.S_ISREG(info.st_mode):
                    listing.append([os.path.relpath(os.path.join(folder, name), root), info.st_size,
                                    info.st_mtime_ns])
    elif root.is_file():
        info = root.stat()
        listing = [[root.name, info.st_size, info.st_mtime_ns]]
    else:
        raise DataError(f"{spec}: {root} is not a regular file or a folder" if root.exists()
                        else f"{spec}: {root} does not exist")
    payload = json.dumps([FORMAT, spec.partition(":")[0], listing, options], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def cached_load(cache_root: Path, spec: str, load, path: str, options: dict, *, writable: bool, check=None):
    """The data set from ``cache_root/<key>`` when a sound entry is there; otherwise decoded
    by ``load`` (into a new entry when ``writable``: the caller holds the run's lock)."""
    started = time.perf_counter()
    key = source_key(spec, path, options)
    entry = Path(cache_root) / key
    if (entry / INDEX).exists():
        try:
            dataset = read_entry(entry, key)
        except DataError as exc:
            log.warning("warning: the run's decode cache of %s is damaged (%s): decoding it again", spec, exc)
            if writable:
                _remove_entry(entry)
        else:
            log.info("data: %s from the run's decode cache (%s…, %.1f s, no decoding)", spec, key[:12],
                     time.perf_counter() - started)
            return dataset
    if not writable:
        log.info("data: decoding %s (the run's decode cache has no entry for it)", spec)
        return load(path, **options)
    from pipeline.core.fsutil import make_dirs

    for stale in _entries(cache_root):
        if stale.name != key:
            _remove_entry(stale)
    make_dirs(entry)
    try:
        _decode_into_entry(entry, key, load, path, options, check)
    except BaseException:
        _remove_entry(entry)  # a data set refused while decoding leaves no entry
        raise
    log.info("data: decoded %s into the run's decode cache in %.1f s (%s…)", spec,
             time.perf_counter() - started, key[:12])
    return read_entry(entry, key)


def _decode_into_entry(entry: Path, key: str, load, path: str, options: dict, check=None):
    """Decode with every image written straight into its split's ``.npy`` (no in-memory copy of
    the data set); the index is written last, so a killed decode leaves no entry."""
    import contextlib

    from pipeline.core.fsutil import atomic_path, write_json, write_npy

    with contextlib.ExitStack() as stack:
        opened = {}

        def alloc(name: str, shape: tuple[int, ...]):
            if not int(np.prod(shape)):  # nothing to map: written as a plain .npy below
                return np.empty(shape, dtype=np.uint8)
            tmp = stack.enter_context(atomic_path(entry / f"{name}.npy"))
            opened[name] = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            return opened[name]

        dataset = load(path, **options, alloc=alloc)
        if check is not None:
            check(dataset)
        for name in ARRAYS:
            array = getattr(dataset, name)
            if name in opened:
                opened[name].flush()
            else:
                write_npy(entry / f"{name}.npy", array)
        digest = dataset.sha256()
        meta = {"format": FORMAT, "key": key, "name": dataset.name, "class_names": dataset.class_names,
                "preprocessing": dataset.preprocessing, "sha256": digest,
                "arrays": {n: {"shape": list(getattr(dataset, n).shape), "dtype": str(getattr(dataset, n).dtype)}
                           for n in ARRAYS}}
        opened.clear()  # the memmaps closed before their files are renamed into place
        del dataset
    write_json(entry / INDEX, meta)
    return meta


def read_entry(entry: Path, key: str):
    """The memory-mapped data set of one cache entry, checked; ``DataError`` says what is wrong."""
    from edge_runtime.preprocessing import spec_problems
    from pipeline.data.dataset import Dataset

    try:
        meta = json.loads(_regular(entry / INDEX).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{INDEX} is unreadable ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("key") != key:
        raise DataError(f"{INDEX} is not this entry's index")
    arrays, problems = {}, spec_problems(meta.get("preprocessing"))
    shapes = meta.get("arrays") if isinstance(meta.get("arrays"), dict) else {}
    names = meta.get("class_names")
    if problems or not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise DataError(problems[0] if problems else "its class names are not a list of strings")
    for name in ARRAYS:
        try:
            array = _load_npy(_regular(entry / f"{name}.npy"))
        except (OSError, ValueError, EOFError) as exc:
            raise DataError(f"{name}.npy is unreadable ({exc})") from None
        expected = shapes.get(name) or {}
        if list(array.shape) != expected.get("shape") or str(array.dtype) != expected.get("dtype"):
            raise DataError(f"{name}.npy holds {array.dtype}{list(array.shape)}, its index says "
                            f"{expected.get('dtype')}{expected.get('shape')}")
        if (name[0] == "y" and (array.ndim != 1 or array.dtype != np.int64)) or (
                name[0] == "x" and array.dtype.kind not in "fiu"):
            raise DataError(f"{name}.npy holds {array.dtype}{list(array.shape)}: not a split of a data set")
        if isinstance(array, np.memmap) and os.path.getsize(entry / f"{name}.npy") != array.offset + array.nbytes:
            raise DataError(f"{name}.npy is not the size its header says")
        arrays[name] = array
    for split in ("train", "val", "test"):
        if len(arrays[f"x_{split}"]) != len(arrays[f"y_{split}"]):
            raise DataError(f"x_{split} and y_{split} differ in length")
    dataset = Dataset(str(meta.get("name")), *(arrays[n] for n in ARRAYS), meta["preprocessing"], names)
    if dataset.sha256() != meta.get("sha256"):
        raise DataError("its arrays do not hash to what its index records")
    return dataset


def _load_npy(path: Path) -> np.ndarray:
    """A memory map of an ``.npy`` file (an empty array, which cannot be mapped, is read)."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, _ = read_header(fh)
    if not int(np.prod(shape)):
        return np.load(path, allow_pickle=False)
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _regular(path: Path) -> Path:
    """``path`` if it is a regular file (a link planted in the cache is not read through)."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise DataError(f"{path.name} is missing ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise DataError(f"{path.name} is not a regular file")
    return path


def _entries(cache_root: Path) -> list[Path]:
    root = Path(cache_root)
    if not root.is_dir() or root.is_symlink():
        return []
    return [p for p in root.iterdir() if _KEY.match(p.name) and p.is_dir() and not p.is_symlink()]


def _remove_entry(entry: Path) -> None:
    """Remove one cache entry: its files (links removed, never followed), then the folder."""
    from pipeline.core.fsutil import remove_file

    if entry.is_symlink():
        remove_file(entry)
        return
    for child in entry.iterdir():
        if child.is_dir() and not child.is_symlink():
            raise RunDirError(f"{child} is a folder inside the run's decode cache, which holds only files: remove it")
        remove_file(child)
    try:
        entry.rmdir()
    except OSError as exc:
        raise RunDirError(f"cannot remove {entry}: {exc.strerror}") from None
