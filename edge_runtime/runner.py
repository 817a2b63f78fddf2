"""``load(path)`` → a runner whose ``predict`` takes float (or raw) batches and returns floats.

The runner quantizes inputs and dequantizes outputs with each tensor's own scale and zero
point, loops (or resizes) for batches larger than the model's, and resets the variables of
stateful models between samples. ``use_batch(n)`` has ``predict`` invoke on up to ``n``
samples at once where the graph allows it (a dynamic batch, or a fixed one LiteRT can resize).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.artifact import check_artifact, read_sidecar
from edge_runtime.errors import ArtifactError, BackendMissingError, InputError, first_line
from edge_runtime.preprocessing import apply_preprocessing, check_model_input, check_raw_input
from edge_runtime.quiet import quiet_native


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float
    zero_point: int

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and np.issubdtype(np.dtype(self.dtype), np.integer)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                "scale": self.scale, "zero_point": self.zero_point}


def quantize(x: np.ndarray, info: TensorInfo) -> np.ndarray:
    if not info.quantized:
        return x.astype(info.dtype, copy=False)
    limits = np.iinfo(np.dtype(info.dtype))
    q = np.round(x / np.float32(info.scale)) + info.zero_point
    return np.clip(q, limits.min, limits.max).astype(info.dtype)


def dequantize(q: np.ndarray, info: TensorInfo) -> np.ndarray:
    if not info.quantized:
        return q.astype(np.float32, copy=False)
    return (q.astype(np.float32) - info.zero_point) * np.float32(info.scale)


class Runner:
    """Common behaviour of the LiteRT and ONNX Runtime runners."""

    backend = ""
    signature: dict[str, Any] | None = None  # LiteRT: the serving_default SignatureDef's names
    stateful = False  # LiteRT sets it for models whose state persists between invokes
    # Samples per invoke in ``predict`` (``use_batch``); None: a dynamic model takes the whole
    # input at once, a fixed one a sample at a time.
    max_batch: int | None = None

    def __init__(self, path: Path, sidecar: dict[str, Any] | None):
        self.path = path
        self.sidecar = sidecar or {}
        self.load_ms = 0.0
        self.inputs: list[TensorInfo] = []
        self.outputs: list[TensorInfo] = []

    @property
    def preprocessing(self) -> dict[str, Any] | None:
        return self.sidecar.get("preprocessing")

    @property
    def input(self) -> TensorInfo:
        return self.inputs[0]

    def predict(self, batch: np.ndarray, *, raw: bool = False) -> np.ndarray:
        """Float outputs for a batch of samples (float model input, or raw with ``raw=True``)."""
        x = np.asarray(batch)
        spec = self.preprocessing
        if raw:
            if not spec:
                raise InputError(f"raw input needs the preprocessing spec of {self.path.name}'s "
                                 f"sidecar, and it has none: pass model-ready float input instead")
            check_raw_input(x, spec)
            x = apply_preprocessing(x, spec)
        elif spec:
            check_model_input(x, spec)
        x = self._check_batch(x)
        return self._predict_float(x)

    def _check_batch(self, x: np.ndarray) -> np.ndarray:
        expected = self.input.shape[1:]
        if x.shape[1:] != tuple(expected):
            if x.shape == tuple(expected):  # one sample without its batch axis
                x = x[None]
            else:
                raise InputError(f"expected input shape (N, {', '.join(map(str, expected))}), "
                                 f"got {x.shape}")
        if x.dtype.kind not in "fiub":
            raise InputError(f"expected numeric input, got dtype {x.dtype}")
        if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
            raise InputError(f"input holds {int(np.count_nonzero(~np.isfinite(x)))} NaN or inf values")
        return x.astype(np.float32, copy=False)

    def _predict_float(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def use_batch(self, size: int) -> int:
        """Have ``predict`` invoke on up to ``size`` samples at a time; returns the batch size in
        use, 1 where the model cannot take more (a fixed batch, state kept between samples)."""
        self.max_batch = size if size > 1 and self.dynamic_batch and not self.stateful else 1
        return self.max_batch

    def _chunks(self, x: np.ndarray):
        size = self.max_batch or len(x) or 1
        return (x[start:start + size] for start in range(0, len(x), size))

    def invoke_quantized(self, feed: np.ndarray) -> np.ndarray:
        """One call on an already-quantized, correctly-shaped input (the timing loop uses this)."""
        raise NotImplementedError


class TFLiteRunner(Runner):
    backend = "litert"

    def __init__(self, path: Path, sidecar, *, threads: int | None, xnnpack: bool,
                 stateful: bool | None):
        super().__init__(path, sidecar)
        interpreter_cls, resolver = _litert()
        started = time.perf_counter_ns()
        options = {}
        if not xnnpack:
            options["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            with quiet_native():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
                self.interpreter = interpreter_cls(model_path=str(path), num_threads=threads, **options)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ArtifactError(f"LiteRT cannot load {path}: {first_line(exc)}") from None
        self.load_ms = (time.perf_counter_ns() - started) / 1e6
        self.threads, self.xnnpack, self._options = threads, xnnpack, options
        self._batched = None  # (interpreter, input index, output index) resized by use_batch
        self.signature = _serving_signature(self.interpreter)
        if self.signature:  # the tensors the signature names, in its order
            self._input_details, self._output_details = self.signature.pop("details")
        else:
            self._input_details = self.interpreter.get_input_details()
            self._output_details = self.interpreter.get_output_details()
        self.inputs = [_tflite_info(d) for d in self._input_details]
        self.outputs = [_tflite_info(d) for d in self._output_details]
        self.dynamic_batch = int(self._input_details[0]["shape_signature"][0]) == -1
        self.stateful = self._has_variables() if stateful is None else stateful

    def op_names(self) -> list[str]:
        from edge_runtime.litert_compat import op_names

        return op_names(self.interpreter)

    def _has_variables(self) -> bool:
        # Resource variables, or sequence ops whose state tensors persist between invokes.
        return any(name in _STATEFUL_OPS for name in self.op_names())

    def use_batch(self, size: int) -> int:
        """As ``Runner.use_batch``; a model converted for a batch of one is resized in a second
        interpreter, kept only where LiteRT and its delegate accept the shape and the output
        keeps one row per sample (a Reshape to a batch of one refuses it)."""
        self._batched = None
        if self.dynamic_batch or self.stateful or size <= 1:
            return super().use_batch(size)
        self.max_batch = 1
        interpreter_cls, _ = _litert()
        input_index, output_index = self._input_details[0]["index"], self._output_details[0]["index"]
        try:
            with quiet_native():
                batched = interpreter_cls(model_path=str(self.path), num_threads=self.threads, **self._options)
                batched.resize_tensor_input(input_index, [size, *self.input.shape[1:]], strict=False)
                batched.allocate_tensors()
        except (ValueError, RuntimeError):  # "failed to reshape", "cannot reshape array of size"
            return 1
        output = {d["index"]: d for d in batched.get_output_details()}.get(output_index)
        if output is None or int(output["shape"][0]) != size:
            return 1
        self._batched, self.max_batch = (batched, input_index, output_index), size
        return size

    def _predict_float(self, x: np.ndarray) -> np.ndarray:
        info = self.input
        if self._batched is not None:
            return dequantize(np.concatenate([self._invoke_batched(quantize(chunk, info))
                                              for chunk in self._chunks(x)]), self.outputs[0])
        if self.dynamic_batch and not self.stateful:
            return dequantize(np.concatenate([self._invoke_resized(quantize(chunk, info))
                                              for chunk in self._chunks(x)]), self.outputs[0])
        results = []
        for sample in x:
            if self.stateful:
                self.interpreter.reset_all_variables()
            results.append(self.invoke_quantized(quantize(sample[None], info)))
        return dequantize(np.concatenate(results), self.outputs[0])

    def _invoke_resized(self, feed: np.ndarray) -> np.ndarray:
        """A dynamic-batch model on ``len(feed)`` samples, resizing when the count changes."""
        if self._input_details[0]["shape"][0] != len(feed):
            self.interpreter.resize_tensor_input(self._input_details[0]["index"], [len(feed), *feed.shape[1:]])
            self.interpreter.allocate_tensors()
            resized = {d["index"]: d for d in self.interpreter.get_output_details()}
            self._output_details = [resized[d["index"]] for d in self._output_details]
            self._input_details = [{**self._input_details[0], "shape": np.array([len(feed), *feed.shape[1:]])},
                                   *self._input_details[1:]]
        return self.invoke_quantized(feed)

    def _invoke_batched(self, feed: np.ndarray) -> np.ndarray:
        """Up to ``max_batch`` samples through the resized interpreter: a short last chunk is
        padded with its last sample (every row is computed on its own) and cut back."""
        interpreter, input_index, output_index = self._batched
        count = len(feed)
        if count < self.max_batch:
            feed = np.concatenate([feed, np.repeat(feed[-1:], self.max_batch - count, axis=0)])
        interpreter.set_tensor(input_index, feed)
        interpreter.invoke()
        return interpreter.get_tensor(output_index)[:count].copy()

    def invoke_quantized(self, feed: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self._input_details[0]["index"], feed)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._output_details[0]["index"])


SIGNATURE_KEY = "serving_default"


def _serving_signature(interpreter) -> dict[str, Any] | None:
    """The ``serving_default`` SignatureDef's input and output names and their tensors.

    The runner addresses the model through it: the signature's named tensors on its
    subgraph, set, invoked and read as LiteRT's SignatureRunner does, but without that
    runner's resize and allocation on every call (measured: 1.08× a bare invoke on the seed
    CNN's int8 model; ``signature_outputs`` runs the SignatureRunner itself, for parity).
    A SignatureRunner kept alive holds the interpreter, so it is dropped once read."""
    listed = interpreter.get_signature_list()
    if SIGNATURE_KEY not in listed:
        return None
    runner = interpreter.get_signature_runner(SIGNATURE_KEY)
    inputs, outputs = runner.get_input_details(), runner.get_output_details()
    names = listed[SIGNATURE_KEY]
    if getattr(runner, "_subgraph_index", 0) != 0 or sorted(inputs) != sorted(names["inputs"]):
        return None  # a signature over another subgraph: run the model's own inputs instead
    details = ([inputs[n] for n in names["inputs"]], [outputs[n] for n in names["outputs"]])
    del runner
    return {"key": SIGNATURE_KEY, "inputs": list(names["inputs"]), "outputs": list(names["outputs"]),
            "details": details}


def signature_outputs(path: str | os.PathLike, feed: np.ndarray, *, threads: int | None = 1) -> dict[str, np.ndarray]:
    """``feed`` (quantized, batch 1) through LiteRT's own SignatureRunner, in an interpreter
    of its own: each output by its signature name (empty without a signature)."""
    interpreter_cls, _ = _litert()
    with quiet_native():
        interpreter = interpreter_cls(model_path=str(path), num_threads=threads)
    listed = interpreter.get_signature_list().get(SIGNATURE_KEY)
    if not listed:
        return {}
    runner = interpreter.get_signature_runner(SIGNATURE_KEY)
    results = []
    for sample in feed:
        found = runner(**{listed["inputs"][0]: sample[None]})
        results.append({name: np.array(value) for name, value in found.items()})
    return {name: np.concatenate([r[name] for r in results]) for name in listed["outputs"]}


_STATEFUL_OPS = {"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "UNIDIRECTIONAL_SEQUENCE_LSTM",
                 "UNIDIRECTIONAL_SEQUENCE_RNN", "BIDIRECTIONAL_SEQUENCE_LSTM",
                 "BIDIRECTIONAL_SEQUENCE_RNN"}


class OnnxRunner(Runner):
    backend = "onnxruntime"

    def __init__(self, path: Path, sidecar, *, threads: int | None):
        super().__init__(path, sidecar)
        ort = _onnxruntime()
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3
        started = time.perf_counter_ns()
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises its own untyped Fail/InvalidGraph
            raise ArtifactError(f"ONNX Runtime cannot load {path}: {first_line(exc)}") from None
        self.load_ms = (time.perf_counter_ns() - started) / 1e6
        self.threads = threads
        quantization = {q["name"]: q for q in self.sidecar.get("inputs", []) + self.sidecar.get("outputs", [])}
        self.inputs = [_onnx_info(t, quantization) for t in self.session.get_inputs()]
        self.outputs = [_onnx_info(t, quantization) for t in self.session.get_outputs()]
        self.dynamic_batch = not isinstance(self.session.get_inputs()[0].shape[0], int)

    def _check_batch(self, x):
        if self.dynamic_batch:  # ONNX shapes may carry symbolic batch names
            self.inputs[0].shape = (len(np.asarray(x)), *self.inputs[0].shape[1:])
        return super()._check_batch(x)

    def _predict_float(self, x: np.ndarray) -> np.ndarray:
        info = self.input
        if self.dynamic_batch:
            return dequantize(np.concatenate([self.invoke_quantized(quantize(chunk, info))
                                              for chunk in self._chunks(x)]), self.outputs[0])
        outputs = [self.invoke_quantized(quantize(s[None], info)) for s in x]
        return dequantize(np.concatenate(outputs), self.outputs[0])

    def invoke_quantized(self, feed: np.ndarray) -> np.ndarray:
        return self.session.run([self.outputs[0].name], {self.input.name: feed})[0]


def load(path: str | os.PathLike, *, threads: int | None = None, xnnpack: bool = True,
         stateful: bool | None = None, isolate: bool = False, sidecar: bool = True) -> Runner:
    """Load a ``.tflite`` (LiteRT), ``.onnx`` or ``.ort`` (ONNX Runtime) artifact, checked against its sidecar.

    ``isolate=True`` first loads and runs the model once in a child process, so a file that
    crashes the native runtime raises ``ArtifactError`` here instead of killing this process.
    ``sidecar=False`` reads the model alone (the writer of a new sidecar, whose old one no
    longer matches).
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"model file {path} is not a regular file" if path.exists()
                            else f"model file {path} does not exist")
    if not os.access(path, os.R_OK):
        raise ArtifactError(f"model file {path} is not readable")
    if path.stat().st_size == 0:
        raise ArtifactError(f"model file {path} is empty")
    use_sidecar, sidecar = sidecar, None
    if use_sidecar:
        sidecar = read_sidecar(path)
        check_artifact(path, sidecar)
    if path.suffix not in (".tflite", ".onnx", ".ort"):
        raise ArtifactError(f"{path}: expected a .tflite, .onnx or .ort file")
    if isolate:
        probe_in_child(path, xnnpack=xnnpack)
    if path.suffix == ".tflite":
        return TFLiteRunner(path, sidecar, threads=threads, xnnpack=xnnpack, stateful=stateful)
    if path.suffix in (".onnx", ".ort"):
        return OnnxRunner(path, sidecar, threads=threads)
    raise ArtifactError(f"{path}: expected a .tflite, .onnx or .ort file")


def info(path: str | os.PathLike, *, isolate: bool = False) -> dict[str, Any]:
    """What a device needs to know about an artifact: tensors and their quantization, ops,
    whether XNNPACK took the graph, statefulness, size and the sidecar's metadata."""
    runner = load(path, isolate=isolate)
    path = Path(path)
    result: dict[str, Any] = {
        "model": str(path), "backend": runner.backend, "size_bytes": path.stat().st_size,
        "inputs": [t.as_dict() for t in runner.inputs],
        "outputs": [t.as_dict() for t in runner.outputs],
        "sidecar": bool(runner.sidecar),
        "mode": runner.sidecar.get("mode"),
        "preprocessing": runner.preprocessing,
    }
    if isinstance(runner, TFLiteRunner):
        ops = runner.op_names()
        result["ops"] = {op: ops.count(op) for op in dict.fromkeys(ops) if op != "DELEGATE"}
        # XNNPACK replaces the nodes it takes with DELEGATE nodes in the execution plan.
        result["xnnpack_delegated"] = "DELEGATE" in ops
        result["stateful"] = runner.stateful
        result["signature"] = runner.signature
    else:
        result["ops"] = {}
    return result


def probe_in_child(path: Path, *, xnnpack: bool = True) -> None:
    """Load and invoke ``path`` once in a forked child; turn a native crash into an error."""
    import signal

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns
        import faulthandler

        faulthandler.disable()  # a crash here is expected and reported by the parent
        os.close(read_end)
        code, message = 0, b""
        try:
            runner = load(path, xnnpack=xnnpack)
            runner.invoke_quantized(quantize(np.zeros(runner.input.shape, np.float32), runner.input))
        except Exception as exc:  # noqa: BLE001 - reported to the parent as text
            code, message = 3, str(exc).encode()[:2000]
        os.write(write_end, message)
        os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        raise ArtifactError(f"{path}: the runtime crashed loading it ({signal.Signals(number).name}): "
                            f"the file is corrupt or not a model")
    if os.WEXITSTATUS(status) != 0:
        raise ArtifactError(message or f"{path}: the model failed to load in a child process")


# -- helpers ------------------------------------------------------------------------------

def _litert():
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
        return Interpreter, OpResolverType
    except ImportError:
        pass
    try:  # old devices: the last tflite-runtime (2.14, numpy < 2)
        from tflite_runtime.interpreter import Interpreter, OpResolverType
        return Interpreter, OpResolverType
    except ImportError:
        raise BackendMissingError("no TFLite runtime: pip install ai-edge-litert "
                                  "(or tflite-runtime on old devices)") from None


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise BackendMissingError("ONNX Runtime is not installed: pip install onnxruntime") from None
    return onnxruntime


def _tflite_info(detail: dict) -> TensorInfo:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorInfo(detail["name"], tuple(int(d) for d in detail["shape"]),
                      np.dtype(detail["dtype"]).name, float(scale), int(zero_point))


_ONNX_DTYPES = {"tensor(float)": "float32", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
                "tensor(int16)": "int16", "tensor(float16)": "float16", "tensor(int32)": "int32",
                "tensor(int64)": "int64"}


def _onnx_info(tensor, quantization: dict) -> TensorInfo:
    recorded = quantization.get(tensor.name, {})
    shape = tuple(d if isinstance(d, int) else 1 for d in tensor.shape)
    return TensorInfo(tensor.name, shape, _ONNX_DTYPES.get(tensor.type, "float32"),
                      float(recorded.get("scale", 0.0)), int(recorded.get("zero_point", 0)))
