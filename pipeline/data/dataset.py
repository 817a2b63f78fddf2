"""The data set a run trains on: raw splits and the preprocessing that turns them into model
input. At the bottom of the house: ``pipeline.data.loaders`` (the loaders) and ``pipeline.data.cache``
(the run's decode cache) both build it."""
from __future__ import annotations

import hashlib
import mmap as _mmap_module
from dataclasses import dataclass, field

import numpy as np

from edge_runtime.preprocessing import apply_preprocessing
from pipeline.core.errors import DataError


@dataclass
class Dataset:
    """Raw train/validation/test splits and the preprocessing that turns them into model input."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    preprocessing: dict
    class_names: list[str] = field(default_factory=list)
    # classifier, reconstruction (an autoencoder: labels 0 normal / 1 anomalous, or -1 where
    # none are given) or regression (float targets); the groups of the test samples
    # (samples of one recording share a group: it is scored as their mean)
    task: str = "classifier"
    groups_test: np.ndarray | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, which: str) -> tuple[np.ndarray, np.ndarray]:
        """Model-ready ``(x, y)`` for ``train``, ``val`` or ``test`` (the whole split, as float32)."""
        x, y = getattr(self, f"x_{which}"), getattr(self, f"y_{which}")
        return apply_preprocessing(x, self.preprocessing), y

    def size(self, which: str) -> int:
        return len(getattr(self, f"y_{which}"))

    def take(self, which: str, indices) -> tuple[np.ndarray, np.ndarray]:
        """Model-ready ``(x, y)`` of the samples at ``indices`` of a split, and nothing more
        (the raw split may be a memory map of a file larger than memory)."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        x, y = getattr(self, f"x_{which}"), getattr(self, f"y_{which}")
        if indices.size and (indices.min() < 0 or indices.max() >= len(y)):
            raise DataError(f"sample index {int(indices.max() if indices.max() >= len(y) else indices.min())} "
                            f"is outside the {which} split's {len(y)} samples")
        return apply_preprocessing(np.asarray(x[indices]), self.preprocessing), np.asarray(y[indices])

    def chunks(self, which: str, size: int = 1024):
        """Model-ready ``(x, y)`` of a split in consecutive chunks of ``size`` samples."""
        x, y = getattr(self, f"x_{which}"), getattr(self, f"y_{which}")
        for start in range(0, len(y), size):
            yield (apply_preprocessing(np.asarray(x[start:start + size]), self.preprocessing),
                   np.asarray(y[start:start + size]))

    def sample_indices(self, which: str, count: int, seed: int) -> np.ndarray:
        """``count`` sample indices of a split drawn with ``seed``, sorted (all when it has fewer)."""
        total = self.size(which)
        if count >= total:
            return np.arange(total, dtype=np.int64)
        return np.sort(np.random.default_rng(seed).choice(total, size=count, replace=False))

    def raw_bytes(self) -> int:
        return sum(int(getattr(self, f"x_{w}").nbytes) for w in ("train", "val", "test"))

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for array in (self.x_train, self.y_train, self.x_val, self.y_val, self.x_test, self.y_test):
            digest.update(str(array.shape).encode() + str(array.dtype).encode())
            _hash_array(digest, array)
        if self.task != "classifier":  # a classifier's hash is what it always was
            digest.update(self.task.encode())
        if self.groups_test is not None:
            digest.update(b"groups" + str(self.groups_test.dtype).encode())
            _hash_array(digest, np.ascontiguousarray(self.groups_test))
        return digest.hexdigest()

    def describe(self) -> dict:
        """What later stages and the report need to know about the data."""
        return {
            "name": self.name,
            "sha256": self.sha256(),
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "sizes": {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)},
            "preprocessing": self.preprocessing,
            **({"task": self.task, "groups_test": self.groups_test is not None} if self.task != "classifier" else {}),
        }


HASH_CHUNK = 8 << 20


def _hash_array(digest, array: np.ndarray) -> None:
    """Feed an array's C-order bytes to ``digest`` in chunks, without copying it; a memory-mapped
    split's pages are released as it goes, so hashing a large file does not hold it in memory."""
    flat = (array if array.flags.c_contiguous else np.ascontiguousarray(array)).reshape(-1)
    flat = flat.view(np.uint8) if flat.size else np.zeros(0, np.uint8)
    for start in range(0, len(flat), HASH_CHUNK):
        digest.update(flat[start:start + HASH_CHUNK].data)
        release(array)


def release(array: np.ndarray) -> None:
    """Drop the pages of a memory-mapped split from this process (the file stays in the page
    cache; the next access maps them again): its resident size stays bounded by what a stage
    touches between two calls, not by the file's size."""
    mapped = getattr(array, "_mmap", None)
    if mapped is not None and hasattr(mapped, "madvise"):
        mapped.madvise(_mmap_module.MADV_DONTNEED)


def split_for_task(dataset, split: str, task: str):
    """``(x, y)`` of a split, where an autoencoder's target is its input."""
    x, y = dataset.split(split)
    return (x, x) if task in ("reconstruction", "autoencoder") else (x, y)


MAX_CLASS_NAME = 200


def check_class_names(name: str, names: list) -> None:
    """Class names as they enter a data set: each becomes one line of the model's packed
    ``labels.txt`` and the device's answer, so printable, 1-200 characters, distinct."""
    for class_name in names:
        if not isinstance(class_name, str) or not class_name.strip() or not class_name.isprintable() \
                or len(class_name) > MAX_CLASS_NAME:
            raise DataError(f"data set '{name}' has the class name {str(class_name)[:80]!r}: a class name is "
                            f"printable text of 1 to {MAX_CLASS_NAME} characters, with no line break or "
                            f"control character")
    if len(set(names)) != len(names):
        raise DataError(f"data set '{name}' names two classes alike: class names must be distinct")
