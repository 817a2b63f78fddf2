"""Trusting an artifact: ``verify`` (parity of every artifact against the Keras model on
the test split), ``gates`` (thresholds, intervals and verdicts), ``runtime_checks`` (signature
runner, ``.ort`` twin, GPU delegate, TFLite Micro, sidecar, cross-runtime), ``gpu_delegate``
and ``explain`` (which layers lose the accuracy)."""
