"""Loading and saving Keras models: zoo names, .keras, legacy .h5, SavedModel directories."""
from __future__ import annotations

import contextlib
import contextvars
import os
import zipfile
from pathlib import Path
from typing import Iterator

from edge_runtime.errors import first_line
from pipeline.core.errors import ModelError
from pipeline.core.fsutil import atomic_path

MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")


# Whether this invocation trusts code inside models (``--unsafe``). Set only by the command
# line or the API caller for the duration of one command; never read from a file.
_CODE_TRUSTED = contextvars.ContextVar("pipeline_model_code_trusted", default=False)


@contextlib.contextmanager
def trusting_model_code(trusted: bool) -> Iterator[None]:
    token = _CODE_TRUSTED.set(bool(trusted))
    try:
        yield
    finally:
        _CODE_TRUSTED.reset(token)


def model_code_trusted() -> bool:
    return _CODE_TRUSTED.get()


def is_model_path(value: str) -> bool:
    """A path to a model file or SavedModel, not a zoo name (a zoo name wins over a same-named
    directory in the working directory; write ./NAME for the directory)."""
    import models

    path = Path(value)
    if os.sep in value or path.suffix in MODEL_SUFFIXES:
        return True
    return path.is_dir() and value not in models.model_names()


def load_model(path: str | os.PathLike, *, unsafe: bool | None = None, compile: bool = False):
    """Load a user's model for inference or conversion, in Keras' safe mode unless ``unsafe``
    (default: what this invocation said with ``--unsafe``, see ``trusting_model_code``);
    ``compile`` restores its loss and optimizer state too (a training checkpoint).

    Safe mode refuses deserialized Python code (``Lambda`` layers and the like); a SavedModel
    is a program (its graph runs when called), so it is refused too.
    """
    unsafe = model_code_trusted() if unsafe is None else unsafe
    from pipeline.core.backend import import_keras

    keras = import_keras()
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model file {path} does not exist")
    if path.is_dir():
        if not unsafe:
            raise ModelError(f"{path} is a SavedModel: its graph is code that runs when the "
                             f"model does; pass --unsafe if you trust it")
        return _load_saved_model(path)
    if not path.is_file():
        raise ModelError(f"model file {path} is not a regular file (a FIFO, a device or a socket)")
    if not os.access(path, os.R_OK):
        raise ModelError(f"model file {path} is not readable")
    if path.suffix not in MODEL_SUFFIXES:
        raise ModelError(f"{path}: expected a .keras, .h5 or SavedModel directory")
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):
        raise ModelError(f"{path} is corrupt or truncated (not a valid .keras zip archive)")
    try:
        return keras.models.load_model(path, compile=compile, safe_mode=not unsafe)
    except ValueError as exc:
        message = str(exc)
        if "safe_mode" in message or "Lambda" in message or "unsafe" in message.lower():
            raise ModelError(f"{path} contains code (for example a Lambda layer) that only runs "
                             f"if you trust the file: pass --unsafe to load it") from None
        if "groups" in message and path.suffix in (".h5", ".hdf5"):
            return _load_legacy_h5(keras, path)
        raise ModelError(f"cannot load {path}: {first_line(message)}") from None
    except TypeError as exc:
        if "groups" in str(exc) and path.suffix in (".h5", ".hdf5"):
            return _load_legacy_h5(keras, path)
        raise ModelError(f"cannot load {path}: {first_line(str(exc))}") from None
    except Exception as exc:  # noqa: BLE001 - h5py/zip/json failures all mean a bad file
        raise ModelError(f"cannot load {path} (corrupt or truncated?): "
                         f"{first_line(str(exc)) or type(exc).__name__}") from None


def _load_legacy_h5(keras, path: Path):
    """A Keras 2 ``.h5`` whose config Keras 3 rejects (DepthwiseConv2D saved with ``groups``):
    load it through a tolerant stand-in class, then clone onto Keras' own layers."""

    class TolerantDepthwiseConv2D(keras.layers.DepthwiseConv2D):
        def __init__(self, *args, groups=1, **kwargs):
            if groups != 1:
                raise ModelError(f"{path}: DepthwiseConv2D with groups={groups} is not supported")
            super().__init__(*args, **kwargs)

    legacy = keras.models.load_model(path, compile=False,
                                     custom_objects={"DepthwiseConv2D": TolerantDepthwiseConv2D})

    def clone(layer):
        cls = keras.layers.DepthwiseConv2D if isinstance(layer, TolerantDepthwiseConv2D) else type(layer)
        return cls.from_config(layer.get_config())

    model = keras.models.clone_model(legacy, clone_function=clone)
    model.set_weights(legacy.get_weights())
    return model


def _load_saved_model(path: Path):
    from pipeline.core.backend import import_keras

    keras = import_keras()
    if not (path / "saved_model.pb").exists():
        raise ModelError(f"{path} is a directory but not a SavedModel (no saved_model.pb)")
    from pipeline.core.backend import require_tensorflow

    require_tensorflow("a SavedModel")
    try:
        layer = keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"cannot load SavedModel {path}: {first_line(str(exc))}") from None
    import tensorflow as tf

    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    (spec,) = signature.structured_input_signature[1].values()
    inputs = keras.Input(tuple(spec.shape[1:]), dtype=spec.dtype.name)
    outputs = layer(inputs)
    if isinstance(outputs, dict):
        outputs = next(iter(outputs.values()))
    return keras.Model(inputs, outputs, name=path.name)


def save_model(model, path: str | os.PathLike) -> Path:
    """Save atomically (an interrupted save never leaves a truncated ``.keras`` behind) and
    reproducibly: the same weights give the same bytes, so hashes identify models."""
    from pipeline.compat.keras import normalize_keras_archive

    with atomic_path(path) as tmp:
        model.save(tmp)
        if tmp.suffix == ".keras":
            normalize_keras_archive(tmp)
    return Path(path)


def check_input_shape(model, input_shape: tuple[int, ...], where: str) -> None:
    expected = tuple(model.input_shape[1:])
    got = tuple(input_shape)
    if len(expected) != len(got) or any(e is not None and e != g for e, g in zip(expected, got)):
        raise ModelError(f"{where} expects input shape {expected}, the data has {got}: pass "
                         f"--image-size or pick a data set of that shape")


def float32_copy(model):
    """A float32 twin of a mixed-precision model (TFLite cannot convert mixed_float16)."""
    import keras

    from pipeline.compat.keras import strip_dtype_policies

    policy = getattr(model, "dtype_policy", None)
    if policy is None or getattr(policy, "compute_dtype", "float32") == "float32":
        if all(getattr(layer.dtype_policy, "compute_dtype", "float32") == "float32"
               for layer in model.layers):
            return model
    config = model.get_config()
    strip_dtype_policies(config)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        twin = model.__class__.from_config(config)
    finally:
        keras.config.set_dtype_policy(previous)
    twin.set_weights(model.get_weights())
    return twin


def check_class_count(model, num_classes: int, where: str) -> None:
    """A classifier's outputs must match the data set's classes (``where`` names the model)."""
    from pipeline.core.errors import ModelError

    outputs = model.output_shape[-1]
    if outputs is not None and outputs != num_classes:
        raise ModelError(f"{where} has {outputs} outputs but the data set has {num_classes} "
                         f"classes: pick a matching data set or a zoo model")
