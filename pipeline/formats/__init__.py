"""Artifact formats, one module each, over one table of what an artifact kind is
(``kinds``: suffix, runtime, parity partner, ``.ort`` source, microcontroller or not,
quantization mode): TFLite (``tflite``, with its metadata in ``tflite_meta``), ONNX
(``onnx``), ONNX Runtime's ``.ort`` (``ort``), C arrays for TFLite Micro (``c_array``) and the
TFLite Micro interpreter itself (``micro``); ``sidecar`` writes an artifact with the JSON the
device reads beside it. Adding a format touches this package and its tests only."""
