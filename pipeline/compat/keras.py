"""The one place that touches Keras internals: its private modules (``keras.src``) and the
layout of what it saves (the ``.keras`` archive, serialized configs). Each function says why
it is needed; ``tests/compat/test_compat.py`` checks every internal it relies on, so an upgrade
that moves one fails there, loudly, and nowhere else."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

# What a .keras archive holds (Keras 3.x saving_lib).
ARCHIVE_FILES = ("metadata.json", "config.json", "model.weights.h5")


def seed_keras_without_tensorflow(seed: int) -> None:
    """What ``keras.utils.set_random_seed`` does for Keras' own generators, without its side
    effect of importing TensorFlow (which a jax or torch training process keeps out)."""
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils import rng_utils

    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)


def _each_mapping(node):
    """Every dict inside a JSON-like tree (a serialized Keras config), outermost first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _each_mapping(value)
    elif isinstance(node, list):
        for value in node:
            yield from _each_mapping(value)


def normalize_keras_archive(path: Path) -> None:
    """Drop the save date, zip timestamps and ``id()``-based tags that make two saves of one
    model differ (no public option turns them off)."""
    with zipfile.ZipFile(path) as archive:
        entries = [(info.filename, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in entries:
            if name == "metadata.json":
                metadata = json.loads(data)
                metadata.pop("date_saved", None)
                data = json.dumps(metadata).encode()
            elif name == "config.json":
                config = json.loads(data)
                ids: dict = {}  # Keras tags shared objects with their id(): number them in order
                for mapping in _each_mapping(config):
                    if "shared_object_id" in mapping:
                        mapping["shared_object_id"] = ids.setdefault(mapping["shared_object_id"], len(ids) + 1)
                data = json.dumps(config).encode()
            archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)


def strip_dtype_policies(config) -> None:
    """Make every serialized layer float32: mixed-precision configs carry ``DTypePolicy``
    objects that ``from_config`` would honour over the global policy."""
    for mapping in _each_mapping(config):
        dtype = mapping.get("dtype")
        if isinstance(dtype, dict) and dtype.get("class_name") == "DTypePolicy":
            mapping["dtype"] = "float32"
