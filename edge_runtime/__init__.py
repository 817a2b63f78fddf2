"""Run pipeline artifacts on a device with numpy and LiteRT or ONNX Runtime; never TensorFlow."""
from edge_runtime.errors import ArtifactError, EdgeRuntimeError, InputError
from edge_runtime.preprocessing import apply_preprocessing
from edge_runtime.runner import Runner, info, load

__version__ = "0.1.0"
__all__ = ["ArtifactError", "EdgeRuntimeError", "InputError", "Runner", "apply_preprocessing",
           "info", "load", "__version__"]
