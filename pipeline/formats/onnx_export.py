"""A float32 ONNX without TensorFlow: Keras's own ONNX export, through torch.onnx under the
torch backend (``keras-edge-pipeline[deploy]``); ``pipeline.formats.onnx`` uses it where
TensorFlow (and so tf2onnx) is absent."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_runtime.errors import first_line
from pipeline.core.errors import ConversionError


def onnx_by_keras_export(model, opset: int, dynamic_batch: bool):
    """Keras's ``export(format="onnx")`` (torch.onnx under the torch backend): no TensorFlow.
    ``opset``: checked by the caller."""
    import contextlib
    import io
    import tempfile
    import warnings

    import keras
    import onnx

    from edge_runtime.quiet import quiet_native
    from pipeline.core.errors import UsageError
    if keras.backend.backend() != "torch":
        raise UsageError(f"ONNX without TensorFlow needs the torch backend; this process runs Keras on "
                         f"{keras.backend.backend()}: set KERAS_BACKEND=torch, or install keras-edge-pipeline[train]")
    inputs = keras.Input(shape=model.input_shape[1:], batch_size=None if dynamic_batch else 1, name="input")
    wrapped = keras.Model(inputs, model(inputs), name="serving")
    wrapped(np.zeros((1, *model.input_shape[1:]), dtype=np.float32))  # the exporter needs a built call
    try:
        with tempfile.TemporaryDirectory(prefix="onnx-export-") as tmp, quiet_native(), warnings.catch_warnings(), \
                contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            path = Path(tmp) / "float32.onnx"
            wrapped.export(str(path), format="onnx", verbose=False, opset_version=opset)
            return onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - the exporter raises many unrelated types
        raise ConversionError(f"Keras's ONNX export could not convert the model: {first_line(exc)}") from None
