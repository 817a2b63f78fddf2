"""Making a model smaller or faster: ``prune`` (magnitude pruning and fine-tuning, with
``structured`` shrinking), ``quantize`` (post-training quantization to TFLite with its
calibration), ``mixed_precision`` (raising the fewest layers' precision where int8 fails its
gates: ``--recover``) and ``convert`` (float TFLite, ONNX and ``.ort``)."""
